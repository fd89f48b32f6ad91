//! Revocation entries as committed in `revocations.yaml` or `revocations/*.yaml`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationFile {
    #[serde(default)]
    pub revocations: Vec<serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    serial: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    request: Option<String>,
    reason: String,
    #[serde(default)]
    date: Option<String>,
}

/// RFC 5280 CRLReason values gitca writes (removeFromCRL is not a revocation reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl Reason {
    pub fn parse(s: &str) -> Result<Reason, String> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '_' && *c != '-' && *c != ' ')
            .collect::<String>()
            .to_ascii_lowercase();
        Ok(match norm.as_str() {
            "unspecified" => Reason::Unspecified,
            "keycompromise" => Reason::KeyCompromise,
            "cacompromise" => Reason::CaCompromise,
            "affiliationchanged" => Reason::AffiliationChanged,
            "superseded" => Reason::Superseded,
            "cessationofoperation" => Reason::CessationOfOperation,
            "certificatehold" => Reason::CertificateHold,
            "privilegewithdrawn" => Reason::PrivilegeWithdrawn,
            "aacompromise" => Reason::AaCompromise,
            _ => {
                return Err(format!(
                    "unknown revocation reason {s:?} (RFC 5280 names, e.g. key_compromise, superseded)"
                ));
            }
        })
    }

    /// The CRLReason enumeration value.
    pub fn code(self) -> u8 {
        match self {
            Reason::Unspecified => 0,
            Reason::KeyCompromise => 1,
            Reason::CaCompromise => 2,
            Reason::AffiliationChanged => 3,
            Reason::Superseded => 4,
            Reason::CessationOfOperation => 5,
            Reason::CertificateHold => 6,
            Reason::PrivilegeWithdrawn => 9,
            Reason::AaCompromise => 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Candidate canonical hex readings (see `serial::parse_serial`).
    Serial(Vec<String>),
    Request(String),
}

/// One parsed entry; `key` identifies it for the append-only check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub file: String,
    pub index: usize,
    /// The entry as written (serial or request), its identity across commits.
    pub key: String,
    pub target: Target,
    pub reason: Reason,
    #[serde(with = "time::serde::rfc3339::option")]
    pub date: Option<OffsetDateTime>,
}

/// Parses one revocation file: every entry is either an `Entry` or an error message for it.
/// A file that does not parse at all is one error for the whole file.
/// One entry of a revocation file: parsed, or (its index, why it does not parse).
pub type ParsedEntry = Result<Entry, (usize, String)>;

pub fn parse_file(file: &str, text: &str) -> Result<Vec<ParsedEntry>, String> {
    let f: RevocationFile = serde_yaml_ng::from_str(text)
        .map_err(|e| format!("{file}: invalid revocations file: {e}"))?;
    Ok(f.revocations
        .into_iter()
        .enumerate()
        .map(|(i, v)| parse_entry(file, i, v).map_err(|e| (i, e)))
        .collect())
}

fn parse_entry(file: &str, index: usize, v: serde_yaml_ng::Value) -> Result<Entry, String> {
    let raw: RawEntry = serde_yaml_ng::from_value(v).map_err(|e| e.to_string())?;
    let reason = Reason::parse(&raw.reason)?;
    let date = raw
        .date
        .map(|d| {
            OffsetDateTime::parse(&d, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("date {d:?} is not RFC 3339 (e.g. 2026-11-01T00:00:00Z): {e}"))
        })
        .transpose()?;

    let (key, target) = match (raw.serial, raw.request) {
        (Some(s), None) => {
            let text = match s {
                serde_yaml_ng::Value::String(s) => s,
                // A large unquoted number would already have lost digits as a float.
                serde_yaml_ng::Value::Number(n) if n.is_u64() => n.to_string(),
                serde_yaml_ng::Value::Number(_) => {
                    return Err("write a long serial as a quoted string".into());
                }
                other => return Err(format!("serial must be a string, not {other:?}")),
            };
            let c = super::serial::parse_serial(&text)?;
            (format!("serial:{}", c.join("|")), Target::Serial(c))
        }
        (None, Some(r)) => {
            super::names::check_repo_path(&r)?;
            (format!("request:{r}"), Target::Request(r))
        }
        _ => return Err("give exactly one of `serial` or `request`".into()),
    };
    Ok(Entry {
        file: file.to_string(),
        index,
        key,
        target,
        reason,
        date,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_or_explain_themselves() {
        let text = r#"
revocations:
  - {serial: "4F:1A", reason: keyCompromise}
  - {request: requests/a.yaml, reason: superseded, date: "2026-11-01T00:00:00Z"}
  - {serial: "01", request: requests/a.yaml, reason: superseded}
  - {serial: "zz", reason: superseded}
  - {serial: "01", reason: remove_from_crl}
  - {serial: "01", reason: superseded, date: yesterday}
  - {serial: "01", reason: superseded, colour: red}
"#;
        let r = parse_file("revocations.yaml", text).unwrap();
        assert_eq!(r[0].as_ref().unwrap().reason, Reason::KeyCompromise);
        assert_eq!(
            r[0].as_ref().unwrap().target,
            Target::Serial(vec!["4f1a".into()])
        );
        assert!(r[1].as_ref().unwrap().date.is_some());
        for (i, want) in [
            (2, "exactly one"),
            (3, "neither hex"),
            (4, "unknown revocation reason"),
            (5, "RFC 3339"),
            (6, "colour"),
        ] {
            let e = r[i].as_ref().unwrap_err();
            assert!(e.1.contains(want), "entry {i}: {}", e.1);
        }
        assert!(
            parse_file("revocations.yaml", "revocations: {a: 1}")
                .unwrap_err()
                .contains("revocations.yaml")
        );
    }
}
