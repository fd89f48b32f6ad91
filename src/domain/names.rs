//! Names: repository paths, subject alternative names, distinguished names.

use const_oid::ObjectIdentifier;
use const_oid::db::rfc4519;
use der::asn1::{Ia5String, PrintableString, Utf8StringRef};
use der::{Any, Decode, Encode, Tag};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

/// A path inside the repository: relative, '/'-separated, no `..` or empty parts.
pub fn check_repo_path(p: &str) -> Result<(), String> {
    if p.is_empty()
        || p.starts_with('/')
        || p.contains('\\')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "path {p:?} must be relative to the CA repository, without '..', '.' or empty parts"
        ));
    }
    // Git's own folder is no part of the tree: gitca would write into it (on some file
    // systems in any case) and then fail to commit, after signing.
    if p.split('/').any(|c| c.eq_ignore_ascii_case(".git")) {
        return Err(format!("path {p:?} must not be in a `.git` folder"));
    }
    Ok(())
}

/// Joins a path relative to a file's folder, refusing to climb out of the repository.
pub fn join_relative(base_file: &str, rel: &str) -> Result<String, String> {
    let mut parts: Vec<&str> = base_file.split('/').collect();
    parts.pop();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("path {rel:?} leaves the CA repository"));
                }
            }
            c => parts.push(c),
        }
    }
    if rel.starts_with('/') {
        return Err(format!("path {rel:?} must be relative"));
    }
    Ok(parts.join("/"))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sans {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uri: Vec<String>,
}

impl Sans {
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ip.is_empty() && self.email.is_empty() && self.uri.is_empty()
    }

    /// Every value as text, for CN matching and display.
    pub fn values(&self) -> Vec<String> {
        let mut v: Vec<String> = self.dns.clone();
        v.extend(self.ip.iter().map(|i| i.to_string()));
        v.extend(self.email.iter().cloned());
        v.extend(self.uri.iter().cloned());
        v
    }

    /// Reads the SANs of a SubjectAltName extension; other name forms are reported as unsupported.
    pub fn from_general_names(names: &[GeneralName]) -> Result<Sans, String> {
        let mut s = Sans::default();
        for n in names {
            match n {
                GeneralName::DnsName(d) => s.dns.push(d.to_string()),
                GeneralName::Rfc822Name(e) => s.email.push(e.to_string()),
                GeneralName::UniformResourceIdentifier(u) => s.uri.push(u.to_string()),
                GeneralName::IpAddress(o) => {
                    let b = o.as_bytes();
                    let ip = match b.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(b).unwrap()),
                        16 => IpAddr::from(<[u8; 16]>::try_from(b).unwrap()),
                        _ => return Err("IP address SAN of invalid length".into()),
                    };
                    s.ip.push(ip);
                }
                other => {
                    let form = match other {
                        GeneralName::OtherName(o) => format!("otherName {}", o.type_id),
                        GeneralName::DirectoryName(_) => "directoryName".into(),
                        GeneralName::RegisteredId(id) => format!("registeredID {id}"),
                        GeneralName::EdiPartyName(_) => "ediPartyName".into(),
                        _ => "of another form".into(),
                    };
                    return Err(format!(
                        "SAN {form} is not one gitca issues (DNS, IP, email, URI)"
                    ));
                }
            }
        }
        Ok(s)
    }

    pub fn to_general_names(&self) -> Result<Vec<GeneralName>, String> {
        let ia5 = |v: &str| Ia5String::new(v).map_err(|_| format!("SAN {v:?} is not ASCII"));
        let mut out = Vec::new();
        for d in &self.dns {
            out.push(GeneralName::DnsName(ia5(d)?));
        }
        for i in &self.ip {
            out.push(GeneralName::from(*i));
        }
        for e in &self.email {
            out.push(GeneralName::Rfc822Name(ia5(e)?));
        }
        for u in &self.uri {
            out.push(GeneralName::UniformResourceIdentifier(ia5(u)?));
        }
        Ok(out)
    }
}

/// A DNS name as allowed in a certificate: LDH labels, lowercase, optional leading `*.` label.
pub fn valid_dns_name(name: &str) -> bool {
    let body = name.strip_prefix("*.").unwrap_or(name);
    if body.is_empty() || body.len() > 253 || name != name.to_ascii_lowercase() {
        return false;
    }
    body.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && idna_label_valid(l)
    }) && body.contains('.')
}

/// RFC 5890 2.3.1: a label with `--` in its third and fourth places is reserved unless it is
/// an A-label (`xn--`), which must decode to Unicode and encode back to itself (RFC 5891 5.4):
/// otherwise verifiers that map names to Unicode see another name than the policy checked.
fn idna_label_valid(label: &str) -> bool {
    if label.get(2..4) != Some("--") {
        return true;
    }
    if !label.starts_with("xn--") {
        return false;
    }
    let (unicode, decoded) = idna::domain_to_unicode(label);
    decoded.is_ok()
        && unicode != label
        && idna::domain_to_ascii_strict(&unicode).is_ok_and(|ascii| ascii == label)
}

/// One mailbox, as RFC 5280 (4.2.1.6) wants an rfc822Name: `local@domain`, a single `@`, the
/// local part a dot-atom (RFC 5321: letters, digits and ``!#$%&'*+/=?^_`{|}~-``, dots between
/// them) and the domain a DNS name, in any case. So no part can hide another address
/// (`bob@example.org@example.com`) from the policy's domain check.
pub fn valid_mailbox(addr: &str) -> bool {
    let Some((local, domain)) = addr.split_once('@') else {
        return false;
    };
    is_dot_atom(local) && !domain.starts_with("*.") && valid_dns_name(&domain.to_ascii_lowercase())
}

/// A mailbox's local part as RFC 5321 writes it unquoted: at most 64 characters, atoms of
/// letters, digits and ``!#$%&'*+/=?^_`{|}~-`` joined by single dots.
pub fn is_dot_atom(local: &str) -> bool {
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b);
    local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(atext))
}

/// Only the characters RFC 3986 lets a URI hold (unreserved, reserved, and `%` starting a
/// two-digit escape): no control character, space, or non-ASCII letter.
pub fn is_uri_text(u: &str) -> bool {
    let b = u.as_bytes();
    !u.is_empty()
        && b.iter().enumerate().all(|(i, &c)| {
            c.is_ascii_alphanumeric()
                || b"-._~:/?#[]@!$&'()*+,;=".contains(&c)
                || (c == b'%'
                    && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        })
}

/// `scheme://rest` in the characters [`is_uri_text`] allows, neither part empty.
pub fn is_absolute_uri(u: &str) -> bool {
    is_uri_text(u)
        && u.split_once("://")
            .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty())
}

/// Whether a URI's path has a `.` or `..` segment, plain or percent-encoded (`%2e`): the policy
/// matches URIs as written, by prefix, and `spiffe://a/ns/x/../admin` begins with
/// `spiffe://a/ns/x/` yet resolves outside it (SPIFFE forbids such segments too).
pub fn has_dot_segment(uri: &str) -> bool {
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let Some((_, path)) = after_scheme.split_once('/') else {
        return false;
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.split('/').any(|segment| {
        let dots = segment.to_ascii_lowercase().replace("%2e", ".");
        dots == "." || dots == ".."
    })
}

/// Subject attributes gitca puts in certificates. Everything else in a CSR subject is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizational_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
}

impl Subject {
    /// No attribute at all: an empty subject name.
    pub fn is_empty(&self) -> bool {
        *self == Subject::default()
    }

    /// The attributes gitca keeps of a CSR's subject. One it cannot read (a CN as an
    /// IA5String, say) is an error naming it: left out, the certificate would silently name
    /// another subject than the CSR asked for.
    /// An attribute `overrides` sets is not read (the request decides it).
    pub fn from_name(name: &Name, overrides: &Subject) -> Result<Subject, String> {
        type Read = der::Result<Option<x509_cert::ext::pkix::name::DirectoryString>>;
        let s = |what: &str, set: &Option<String>, read: &dyn Fn() -> Read| {
            if set.is_some() {
                return Ok(None);
            }
            read()
                .map(|v| v.map(|d| d.value().into_owned()))
                .map_err(|e| format!("the subject's {what} is not a directory string ({e})"))
        };
        let o = overrides;
        Ok(Subject {
            common_name: s("CN", &o.common_name, &|| name.common_name())?,
            organization: s("O", &o.organization, &|| name.organization())?,
            organizational_unit: s("OU", &o.organizational_unit, &|| name.organization_unit())?,
            country: match o.country {
                Some(_) => None,
                None => (name.country())
                    .map_err(|e| format!("the subject's C is not a printable string ({e})"))?
                    .map(|c| c.to_string()),
            },
            state: s("ST", &o.state, &|| name.state_or_province())?,
            locality: s("L", &o.locality, &|| name.locality())?,
        })
    }

    /// Overrides take precedence field by field.
    pub fn merged(&self, overrides: &Subject) -> Subject {
        Subject {
            common_name: overrides.common_name.clone().or(self.common_name.clone()),
            organization: overrides.organization.clone().or(self.organization.clone()),
            organizational_unit: overrides
                .organizational_unit
                .clone()
                .or(self.organizational_unit.clone()),
            country: overrides.country.clone().or(self.country.clone()),
            state: overrides.state.clone().or(self.state.clone()),
            locality: overrides.locality.clone().or(self.locality.clone()),
        }
    }

    /// Encodes in the conventional order C, ST, L, O, OU, CN; UTF8String except C (PrintableString).
    pub fn to_name(&self) -> Result<Name, String> {
        let mut seq = RdnSequence::default();
        let mut push = |oid: ObjectIdentifier, value: Any| -> Result<(), String> {
            let mut rdn = RelativeDistinguishedName::default();
            rdn.insert(AttributeTypeAndValue { oid, value })
                .map_err(|e| e.to_string())?;
            seq.push(rdn);
            Ok(())
        };
        if let Some(c) = &self.country {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!("country {c:?} must be two upper-case letters"));
            }
            let p = PrintableString::new(c).map_err(|e| e.to_string())?;
            push(rfc4519::C, Any::encode_from(&p).map_err(|e| e.to_string())?)?;
        }
        let utf8 = |v: &str| -> Result<Any, String> {
            // RFC 5280's upper bounds count characters, not UTF-8 bytes.
            if v.is_empty() || v.chars().count() > 64 {
                return Err(format!("subject value {v:?} must be 1 to 64 characters"));
            }
            let s = Utf8StringRef::new(v).map_err(|e| e.to_string())?;
            Any::new(Tag::Utf8String, s.as_bytes()).map_err(|e| e.to_string())
        };
        for (oid, v) in [
            (rfc4519::ST, &self.state),
            (rfc4519::L, &self.locality),
            (rfc4519::O, &self.organization),
            (rfc4519::OU, &self.organizational_unit),
            (rfc4519::CN, &self.common_name),
        ] {
            if let Some(v) = v {
                push(oid, utf8(v)?)?;
            }
        }
        let der = seq.to_der().map_err(|e| e.to_string())?;
        Name::from_der(&der).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(valid_dns_name("a.example.com"));
        assert!(valid_dns_name("*.example.com"));
        assert!(!valid_dns_name("a.*.example.com"));
        assert!(!valid_dns_name("A.example.com"));
        assert!(!valid_dns_name("-a.example.com"));
        assert!(!valid_dns_name("localhost"));
        // Found by review: reserved `??--` labels and A-labels that are not IDNA.
        assert!(!valid_dns_name("ab--cd.example.com"));
        assert!(!valid_dns_name("xn--a.example.com"), "U+0080");
        assert!(!valid_dns_name("xn--9999.example.com"), "not punycode");
        assert!(valid_dns_name("xn--bcher-kva.example.com"), "bücher");
        assert!(valid_dns_name("a--b.example.com"));
        assert!(!valid_dns_name("a..b"));
    }

    /// Found by review: the 64 of RFC 5280's bounds counted UTF-8 bytes, so 22 CJK characters
    /// (66 bytes) were refused as "must be 1 to 64 characters".
    #[test]
    fn subject_values_are_bounded_in_characters() {
        let with_o = |o: String| Subject {
            organization: Some(o),
            ..Default::default()
        };
        assert!(
            with_o("株式会社".repeat(16)).to_name().is_ok(),
            "64 characters"
        );
        let err = with_o("株式会社".repeat(16) + "x").to_name().unwrap_err();
        assert!(err.contains("1 to 64 characters"), "{err}");
        assert!(with_o("a".repeat(64)).to_name().is_ok());
        assert!(with_o("a".repeat(65)).to_name().is_err());
    }

    /// Defect `email-two-at-signs`: the domain check split at the last `@`, so
    /// `bob@example.org@example.com` passed as a mailbox of example.com.
    #[test]
    fn a_mailbox_is_one_dot_atom_at_one_dns_name() {
        for good in [
            "alice@example.com",
            "a.b+tag@Mail.Example.com",
            "o'neil_1@x.example.org",
        ] {
            assert!(valid_mailbox(good), "{good}");
        }
        for bad in [
            "bob@example.org@example.com",
            "@example.com",
            "alice@",
            "alice",
            ".alice@example.com",
            "al..ice@example.com",
            "alice.@example.com",
            "al ice@example.com",
            "\"al ice\"@example.com",
            "alice@*.example.com",
            "alice@localhost",
            "alice@exa_mple.com",
            "ålice@example.com",
        ] {
            assert!(!valid_mailbox(bad), "{bad}");
        }
    }

    /// Defect `uri-dot-segment`: a URI that resolves outside the prefix it begins with.
    #[test]
    fn dot_segments_are_found_plain_or_percent_encoded() {
        for dotted in [
            "spiffe://example.org/ns/payments/../admin",
            "spiffe://example.org/ns/payments/%2e%2E/admin",
            "spiffe://example.org/ns/payments/./sa",
            "spiffe://example.org/ns/payments/..",
            "https://example.org/a/..?q=1",
        ] {
            assert!(has_dot_segment(dotted), "{dotted}");
        }
        for plain in [
            "spiffe://example.org/ns/payments/sa/web",
            "spiffe://example.org/ns/payments/..hidden/x",
            "spiffe://example.org",
            "https://example.org/a?next=../b",
            "urn:uuid:1234",
        ] {
            assert!(!has_dot_segment(plain), "{plain}");
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            join_relative("requests/a/b.yaml", "b.csr").unwrap(),
            "requests/a/b.csr"
        );
        assert_eq!(
            join_relative("requests/a/b.yaml", "../c.csr").unwrap(),
            "requests/c.csr"
        );
        assert!(join_relative("requests/b.yaml", "../../x").is_err());
        assert!(check_repo_path("../x").is_err());
        assert!(check_repo_path("/etc/x").is_err());
    }

    #[test]
    fn subject_round_trip() {
        let s = Subject {
            common_name: Some("web".into()),
            country: Some("DE".into()),
            ..Default::default()
        };
        let n = s.to_name().unwrap();
        assert_eq!(Subject::from_name(&n, &Subject::default()), Ok(s));
    }

    /// Defect `csr-subject-cn-ia5`: a CN gitca cannot read was left out silently. It is an
    /// error naming it, unless the request sets the CN itself.
    #[test]
    fn a_subject_attribute_gitca_cannot_read_is_an_error_unless_the_request_sets_it() {
        let mut rdn = RelativeDistinguishedName::default();
        let cn = Ia5String::new("web.example.com").unwrap();
        rdn.insert(AttributeTypeAndValue {
            oid: rfc4519::CN,
            value: Any::encode_from(&cn).unwrap(),
        })
        .unwrap();
        let mut seq = RdnSequence::default();
        seq.push(rdn);
        let n = Name::from_der(&seq.to_der().unwrap()).unwrap();
        let err = Subject::from_name(&n, &Subject::default()).unwrap_err();
        assert!(err.contains("CN"), "{err}");
        let set = Subject {
            common_name: Some("web.example.com".into()),
            ..Default::default()
        };
        assert_eq!(Subject::from_name(&n, &set), Ok(Subject::default()));
        assert!(
            Subject {
                country: Some("Germany".into()),
                ..Default::default()
            }
            .to_name()
            .is_err()
        );
    }
}
