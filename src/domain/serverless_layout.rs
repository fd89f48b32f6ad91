//! The serverless CA's GitOps layout, read in place by `plan` and `apply`: each entry of
//! `certs/<env>/tls.json` is a request (id `certs/<env>/<slug>`), each entry of
//! `certs/<env>/revoked.json` a revocation. The meaning is the serverless CA's (its defaults,
//! subject overrides, SAN shapes), via the same conversion `gitca import` uses. What it fixed
//! silently (a dropped SAN or usage, a clamped lifetime) is a rejection in `mode: strict` and a
//! warning in `mode: compatible`, which keeps the old behaviour. Pure: reads the snapshot only.

use super::config::{ServerlessConfig, ServerlessMode};
use super::duration::Span;
use super::finding::{Code, Finding};
use super::plan::{Snapshot, TreeEntry};
use super::policy::{CommonNameRule, Policy};
use super::request::RequestFile;
use super::revocation::{Entry, ParsedEntry, Reason, Target};
use super::serverless::{
    self, CsrSource, ImportOptions, ImportedRequest, RevokedEntry, code, parse_list,
};
use std::collections::BTreeSet;

/// `certs/<env>/tls.json`, `revoked.json` or `revoked-root-ca.json`.
pub fn is_list_file(path: &str) -> bool {
    list_file(path).is_some()
}

/// (env, file name) of a list file.
fn list_file(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("certs/")?;
    let (env, name) = rest.split_once('/')?;
    matches!(name, "tls.json" | "revoked.json" | "revoked-root-ca.json").then_some((env, name))
}

/// Where a request's CSR is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Csr {
    /// A path in the snapshot (`certs/<env>/csrs/<csr_file>`).
    Path(String),
    /// `base64_csr_data`, decoded.
    Inline(Vec<u8>),
}

/// One tls.json entry, as a gitca request.
#[derive(Debug, Clone)]
pub struct LayoutRequest {
    /// `certs/<env>/<slug>`: the request id, which also names its output files.
    pub id: String,
    /// `certs/<env>/tls.json`
    pub file: String,
    pub index: usize,
    pub common_name: String,
    /// The request with the serverless CA's meaning; `None` when the entry is unusable.
    pub request: Option<RequestFile>,
    pub csr: Option<Csr>,
    /// Why the request must not be issued, before gitca's own checks.
    pub rejections: Vec<Finding>,
    /// What `mode: compatible` changed from the entry as written.
    pub warnings: Vec<Finding>,
}

impl LayoutRequest {
    /// The bytes hashed into the request hash: the request as gitca reads it, so a change of
    /// meaning (an edited entry, or a mode change) reissues.
    pub fn canonical(&self) -> Vec<u8> {
        let r = self.request.as_ref().map(serde_yaml_ng::to_string);
        format!("{}\n{:?}", self.id, r.map(|r| r.unwrap_or_default())).into_bytes()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub requests: Vec<LayoutRequest>,
    /// `revoked.json` entries: revocations by serial, reason unspecified, dated at the commit.
    pub revocations: Vec<(String, ParsedEntry)>,
    /// One built-in policy per environment (`serverless-<env>`): the serverless CA's rules.
    pub policies: Vec<Policy>,
    /// About the repository rather than one request.
    pub warnings: Vec<Finding>,
}

/// Reads the layout from the snapshot. A list file that is not a JSON list stops the run: every
/// request (or revocation) of that environment would otherwise look removed.
pub fn read(snapshot: &Snapshot, cfg: &ServerlessConfig) -> Result<Layout, String> {
    let mut envs: BTreeSet<&str> = BTreeSet::new();
    for path in snapshot.files.keys() {
        if let Some((env, _)) = list_file(path) {
            envs.insert(env);
        }
    }
    if let Some(only) = &cfg.env {
        if !snapshot
            .files
            .contains_key(&format!("certs/{only}/tls.json"))
        {
            return Err(format!(
                "certs/{only}/tls.json is not in the commit (gitca.yaml serverless.env is {only:?})"
            ));
        }
        envs.retain(|e| e == only);
    }
    let options = ImportOptions {
        max_lifetime_days: cfg.max_lifetime_days,
        clamp_lifetime: cfg.mode == ServerlessMode::Compatible,
        only_env: None,
    };
    let mut out = Layout::default();
    let mut seen = BTreeSet::new();
    for env in envs {
        if !serverless::valid_env_name(env) {
            return Err(format!(
                "certs/{env}: gitca cannot use this environment name in request ids (letters, digits, '-', '_' and '.' only)"
            ));
        }
        let tls_path = format!("certs/{env}/tls.json");
        let entries = read_list(snapshot, &tls_path)?;
        let conversion = serverless::convert(env, &entries, &options);
        let mut kept: Vec<&ImportedRequest> = Vec::new();
        for e in &conversion.entries {
            let r = request_of(env, &tls_path, e, cfg.mode, &mut seen);
            out.requests.push(r);
            kept.extend(e.request.as_ref());
        }
        if let Some(p) = builtin_policy(env, &kept, cfg)? {
            out.policies.push(p);
        }

        let revoked_path = format!("certs/{env}/revoked.json");
        for (index, raw) in read_list(snapshot, &revoked_path)?.iter().enumerate() {
            out.revocations
                .push((revoked_path.clone(), revocation(&revoked_path, index, raw)));
        }
        let root_path = format!("certs/{env}/revoked-root-ca.json");
        for n in serverless::root_ca_revocation_notes(env, &read_list(snapshot, &root_path)?) {
            out.warnings.push(Finding::new(
                Code::ServerlessNotSupported,
                &root_path,
                format!(
                    "{}; keep publishing the serverless root CA's CRL",
                    n.message
                ),
            ));
        }
    }
    Ok(out)
}

/// A list file's entries; an absent file is an empty list.
fn read_list(snapshot: &Snapshot, path: &str) -> Result<Vec<serde_json::Value>, String> {
    match snapshot.files.get(path) {
        None => Ok(vec![]),
        // Not lossily: a replaced byte would be certified as U+FFFD in a subject or SAN.
        Some(TreeEntry::Blob(b)) => match std::str::from_utf8(b) {
            Ok(text) => parse_list(path, text),
            Err(e) => Err(format!("{path}: not UTF-8 ({e}); JSON must be")),
        },
        Some(TreeEntry::TooLarge(n)) => Err(format!("{path}: {n} bytes is too large to read")),
        Some(_) => Err(format!(
            "{path}: must be a regular file in the commit (not a symbolic link or submodule)"
        )),
    }
}

fn request_of(
    env: &str,
    tls_path: &str,
    e: &serverless::ConvertedEntry,
    mode: ServerlessMode,
    seen: &mut BTreeSet<String>,
) -> LayoutRequest {
    let id = match &e.request {
        Some(r) => format!(
            "certs/{}",
            r.id.trim_start_matches("requests/")
                .trim_end_matches(".yaml")
        ),
        // Unusable entries keep the id they would have, so an earlier certificate of the same
        // entry is not taken for an orphan.
        None if !e.common_name.is_empty() => {
            format!("certs/{env}/{}", serverless::slug(&e.common_name))
        }
        None => format!("certs/{env}/tls.json[{}]", e.index),
    };
    // Ids are unique (an unusable entry may share a usable one's slug).
    let id = if seen.insert(id.clone()) {
        id
    } else {
        let alt = format!("certs/{env}/tls.json[{}]", e.index);
        seen.insert(alt.clone());
        alt
    };
    let at = format!("{tls_path} entry {} ({:?})", e.index, e.common_name);
    let mut rejections = Vec::new();
    let mut warnings = Vec::new();
    for n in &e.notes {
        let mapped = match n.code {
            code::ENTRY_INVALID
            | code::LIFETIME_INVALID
            | code::EXTENSION_INVALID
            | code::CSR_FILE_INVALID => Some((Code::ServerlessEntryInvalid, true)),
            code::SAN_INVALID | code::SAN_TYPE_UNKNOWN | code::SANS_SHAPE_INVALID => {
                Some((Code::ServerlessSanDropped, false))
            }
            code::PURPOSE_UNKNOWN | code::EKU_UNKNOWN => {
                Some((Code::ServerlessUsageDropped, false))
            }
            code::SAN_TYPE_UNSUPPORTED | code::SUBJECT_EMAIL_DROPPED => {
                Some((Code::ServerlessNotSupported, false))
            }
            // Strict: the policy's maximum rejects it (lifetime-too-long); compatible: clamped.
            code::LIFETIME_CLAMPED if mode == ServerlessMode::Compatible => {
                Some((Code::LifetimeTooLong, false))
            }
            // The rest are gitca's own checks (which run anyway) or information.
            _ => None,
        };
        if let Some((c, always)) = mapped {
            let f = Finding::new(c, &id, format!("{at}: {}", n.message));
            if always || mode == ServerlessMode::Strict {
                rejections.push(f);
            } else {
                warnings.push(f);
            }
        }
    }
    let csr = e.request.as_ref().map(|r| match &r.csr_from {
        CsrSource::File(p) => Csr::Path(p.clone()),
        CsrSource::Inline(b) => Csr::Inline(b.clone()),
    });
    if e.request.is_none() && rejections.is_empty() {
        rejections.push(Finding::new(
            Code::ServerlessEntryInvalid,
            &id,
            format!("{at}: the entry cannot be read"),
        ));
    }
    LayoutRequest {
        id,
        file: tls_path.to_string(),
        index: e.index,
        common_name: e.common_name.clone(),
        // The import names its generated policy; in place, the policy is chosen by path.
        request: e.request.as_ref().map(|r| RequestFile {
            policy: None,
            ..r.file.clone()
        }),
        csr,
        rejections,
        warnings,
    }
}

/// The serverless CA's rules for one environment: every name it accepts, the usages asked for,
/// its `max_cert_lifetime`, the extension allowlist, and the CN kept as written. A gitca policy
/// whose paths select `certs/<env>/...` takes precedence over it.
fn builtin_policy(
    env: &str,
    requests: &[&ImportedRequest],
    cfg: &ServerlessConfig,
) -> Result<Option<Policy>, String> {
    let Some(mut spec) = serverless::policy_for(env, requests, &[]) else {
        return Ok(None);
    };
    let name = format!("serverless-{env}");
    spec.description = Some(format!(
        "built in: the serverless CA's rules for certs/{env}/tls.json"
    ));
    spec.select.paths = vec![format!("certs/{env}/**")];
    spec.rules.max_lifetime = Span::days(cfg.max_lifetime_days);
    spec.rules.extension_oids = cfg.extension_allowlist.clone();
    spec.rules.common_name = CommonNameRule::Keep;
    Policy::from_spec(name, &format!("certs/{env}/tls.json"), spec).map(Some)
}

fn revocation(file: &str, index: usize, raw: &serde_json::Value) -> ParsedEntry {
    let serial = serverless::object::<RevokedEntry>(raw)
        .map_err(|e| (index, e))
        .and_then(|e| {
            serverless::decimal_serial(e.serial_number.as_ref()).map_err(|m| (index, m))
        })?;
    let hex = super::serial::decimal_to_hex(&serial);
    Ok(Entry {
        file: file.to_string(),
        index,
        key: format!("serial:{hex}"),
        target: Target::Serial(vec![hex]),
        reason: Reason::Unspecified,
        date: None,
    })
}

/// Is this revocation entry from a `revoked.json` (a serial perhaps issued by the previous CA)?
pub fn is_revoked_json(file: &str) -> bool {
    list_file(file).is_some_and(|(_, n)| n == "revoked.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use time::OffsetDateTime;

    fn snap(files: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            commit: "c".into(),
            commit_time: OffsetDateTime::UNIX_EPOCH,
            files: files
                .iter()
                .map(|(p, t)| (p.to_string(), TreeEntry::Blob(t.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
            carried: Default::default(),
            unnamed: Vec::new(),
        }
    }

    fn cfg(mode: ServerlessMode) -> ServerlessConfig {
        ServerlessConfig {
            env: None,
            mode,
            max_lifetime_days: 365,
            extension_allowlist: vec![],
            revoke_previous_serials: false,
        }
    }

    const TLS: &str = r#"[
        {"common_name": "a.example.com", "csr_file": "a.csr", "lifetime": 3650,
         "sans": ["a.example.com", "bad name"]},
        {"csr_file": "b.csr"}
    ]"#;

    /// Found by review: a tls.json in Latin-1 was read lossily, and its O certified with
    /// U+FFFD in place of each accented letter.
    #[test]
    fn a_tls_json_that_is_not_utf8_is_refused_naming_it() {
        let mut s = snap(&[]);
        s.files.insert(
            "certs/dev/tls.json".into(),
            TreeEntry::Blob(
                b"[{\"common_name\": \"a.example.com\", \"organization\": \"Soci\xe9t\xe9\"}]"
                    .to_vec(),
            ),
        );
        let e = read(&s, &cfg(ServerlessMode::Strict)).err().unwrap();
        assert!(
            e.contains("certs/dev/tls.json") && e.contains("not UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn strict_rejects_what_the_serverless_ca_fixed_silently() {
        let l = read(
            &snap(&[("certs/dev/tls.json", TLS)]),
            &cfg(ServerlessMode::Strict),
        )
        .unwrap();
        let a = &l.requests[0];
        assert_eq!(a.id, "certs/dev/a.example.com");
        let codes: Vec<Code> = a.rejections.iter().map(|f| f.code).collect();
        assert_eq!(codes, vec![Code::ServerlessSanDropped]);
        // The lifetime is kept as written: the policy's maximum rejects it.
        assert_eq!(a.request.as_ref().unwrap().lifetime, Some(Span::days(3650)));
        assert_eq!(l.policies[0].spec.rules.max_lifetime, Span::days(365));
        let b = &l.requests[1];
        assert_eq!(b.id, "certs/dev/tls.json[1]");
        assert_eq!(b.rejections[0].code, Code::ServerlessEntryInvalid);
    }

    #[test]
    fn compatible_keeps_the_old_behaviour_as_warnings() {
        let l = read(
            &snap(&[("certs/dev/tls.json", TLS)]),
            &cfg(ServerlessMode::Compatible),
        )
        .unwrap();
        let a = &l.requests[0];
        assert!(a.rejections.is_empty(), "{:?}", a.rejections);
        let codes: BTreeSet<Code> = a.warnings.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            BTreeSet::from([Code::ServerlessSanDropped, Code::LifetimeTooLong])
        );
        assert_eq!(a.request.as_ref().unwrap().lifetime, Some(Span::days(365)));
        // An unusable entry is refused in every mode.
        assert!(!l.requests[1].rejections.is_empty());
    }

    #[test]
    fn unreadable_list_files_stop_the_run_and_name_the_file() {
        let e = read(
            &snap(&[("certs/dev/tls.json", "{\"a\": 1}")]),
            &cfg(ServerlessMode::Strict),
        )
        .unwrap_err();
        assert!(e.contains("certs/dev/tls.json"), "{e}");
        let e = read(
            &snap(&[
                ("certs/dev/tls.json", "[]"),
                ("certs/dev/revoked.json", "["),
            ]),
            &cfg(ServerlessMode::Strict),
        )
        .unwrap_err();
        assert!(e.contains("certs/dev/revoked.json"), "{e}");
    }

    #[test]
    fn revoked_json_serials_are_decimal() {
        let l = read(
            &snap(&[
                ("certs/dev/tls.json", "[]"),
                (
                    "certs/dev/revoked.json",
                    r#"[{"common_name": "x", "serial_number": "255"}, {"common_name": "y"}]"#,
                ),
            ]),
            &cfg(ServerlessMode::Strict),
        )
        .unwrap();
        let e = l.revocations[0].1.as_ref().unwrap();
        assert_eq!(e.target, Target::Serial(vec!["ff".into()]));
        assert!(l.revocations[1].1.is_err());
    }

    #[test]
    fn only_the_configured_environment_is_read() {
        let mut c = cfg(ServerlessMode::Strict);
        c.env = Some("prd".into());
        let s = snap(&[("certs/dev/tls.json", TLS), ("certs/prd/tls.json", "[]")]);
        assert!(read(&s, &c).unwrap().requests.is_empty());
        c.env = Some("stg".into());
        assert!(read(&s, &c).unwrap_err().contains("certs/stg/tls.json"));
    }
}
