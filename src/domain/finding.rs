//! Coded findings: why a request or revocation is rejected. Codes are stable and documented in
//! docs/findings.md; tests match on them.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    RequestInvalid,
    RequestNotRegularFile,
    RequestTooLarge,
    CsrMissing,
    CsrMalformed,
    CsrBadSignature,
    CsrKeyUnsupported,
    CsrKeyWeak,
    CsrRequestsCa,
    CsrKeyIsCaKey,
    KeyReuse,
    KeyCompromised,
    NoPolicy,
    PolicyUnknown,
    PolicyNotApplicable,
    PolicyAmbiguous,
    SanRequired,
    DnsNotAllowed,
    WildcardNotAllowed,
    IpNotAllowed,
    EmailNotAllowed,
    UriNotAllowed,
    CnNotInSans,
    SubjectNotAllowed,
    KeyTypeNotAllowed,
    LifetimeTooLong,
    LifetimeTooShort,
    LifetimeBeyondCa,
    UsageNotAllowed,
    ExtensionNotAllowed,
    ExtensionCaManaged,
    RevocationInvalid,
    RevocationUnknownSerial,
    RevocationUnknownRequest,
    ServerlessEntryInvalid,
    ServerlessSanDropped,
    ServerlessUsageDropped,
    ServerlessNotSupported,
    OutputPathConflict,
}

impl Code {
    /// Every code, for documentation checks.
    pub const ALL: [Code; 39] = [
        Code::RequestInvalid,
        Code::RequestNotRegularFile,
        Code::RequestTooLarge,
        Code::CsrMissing,
        Code::CsrMalformed,
        Code::CsrBadSignature,
        Code::CsrKeyUnsupported,
        Code::CsrKeyWeak,
        Code::CsrRequestsCa,
        Code::CsrKeyIsCaKey,
        Code::KeyReuse,
        Code::KeyCompromised,
        Code::NoPolicy,
        Code::PolicyUnknown,
        Code::PolicyNotApplicable,
        Code::PolicyAmbiguous,
        Code::SanRequired,
        Code::DnsNotAllowed,
        Code::WildcardNotAllowed,
        Code::IpNotAllowed,
        Code::EmailNotAllowed,
        Code::UriNotAllowed,
        Code::CnNotInSans,
        Code::SubjectNotAllowed,
        Code::KeyTypeNotAllowed,
        Code::LifetimeTooLong,
        Code::LifetimeTooShort,
        Code::LifetimeBeyondCa,
        Code::UsageNotAllowed,
        Code::ExtensionNotAllowed,
        Code::ExtensionCaManaged,
        Code::RevocationInvalid,
        Code::RevocationUnknownSerial,
        Code::RevocationUnknownRequest,
        Code::ServerlessEntryInvalid,
        Code::ServerlessSanDropped,
        Code::ServerlessUsageDropped,
        Code::ServerlessNotSupported,
        Code::OutputPathConflict,
    ];

    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            RequestInvalid => "request-invalid",
            RequestNotRegularFile => "request-not-regular-file",
            RequestTooLarge => "request-too-large",
            CsrMissing => "csr-missing",
            CsrMalformed => "csr-malformed",
            CsrBadSignature => "csr-bad-signature",
            CsrKeyUnsupported => "csr-key-unsupported",
            CsrKeyWeak => "csr-key-weak",
            CsrRequestsCa => "csr-requests-ca",
            CsrKeyIsCaKey => "csr-key-is-ca-key",
            KeyReuse => "key-reuse",
            KeyCompromised => "key-compromised",
            NoPolicy => "no-policy",
            PolicyUnknown => "policy-unknown",
            PolicyNotApplicable => "policy-not-applicable",
            PolicyAmbiguous => "policy-ambiguous",
            SanRequired => "san-required",
            DnsNotAllowed => "dns-not-allowed",
            WildcardNotAllowed => "wildcard-not-allowed",
            IpNotAllowed => "ip-not-allowed",
            EmailNotAllowed => "email-not-allowed",
            UriNotAllowed => "uri-not-allowed",
            CnNotInSans => "cn-not-in-sans",
            SubjectNotAllowed => "subject-not-allowed",
            KeyTypeNotAllowed => "key-type-not-allowed",
            LifetimeTooLong => "lifetime-too-long",
            LifetimeTooShort => "lifetime-too-short",
            LifetimeBeyondCa => "lifetime-beyond-ca",
            UsageNotAllowed => "usage-not-allowed",
            ExtensionNotAllowed => "extension-not-allowed",
            ExtensionCaManaged => "extension-ca-managed",
            RevocationInvalid => "revocation-invalid",
            RevocationUnknownSerial => "revocation-unknown-serial",
            RevocationUnknownRequest => "revocation-unknown-request",
            ServerlessEntryInvalid => "serverless-entry-invalid",
            ServerlessSanDropped => "serverless-san-dropped",
            ServerlessUsageDropped => "serverless-usage-dropped",
            ServerlessNotSupported => "serverless-not-supported",
            OutputPathConflict => "output-path-conflict",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason for rejecting a request or a revocation entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: Code,
    /// The file the finding is about (repository-relative).
    pub file: String,
    pub message: String,
}

impl Finding {
    pub fn new(code: Code, file: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            code,
            file: file.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: [{}] {}", self.file, self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code is documented in docs/findings.md, and the doc lists no code that does not exist.
    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../../docs/findings.md");
        let (rejections, audit) = doc.split_once("## Audit findings").expect("two tables");
        let documented: Vec<&str> = rejections
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        for c in Code::ALL {
            assert!(documented.contains(&c.as_str()), "{c} is not documented");
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        assert_eq!(documented.len(), Code::ALL.len(), "{documented:?}");

        // Every audit code `gitca verify` emits is in the audit table.
        let verify = include_str!("../app/verify.rs");
        let codes: Vec<&str> = verify
            .split("f(")
            .skip(1)
            .filter_map(|r| r.trim_start().strip_prefix('"'))
            .filter_map(|r| r.split('"').next())
            .filter(|c| c.contains('-'))
            .collect();
        assert!(codes.len() >= 15, "{codes:?}");
        for code in codes {
            assert!(
                audit.contains(&format!("`{code}`")),
                "audit code {code} is not documented"
            );
        }
    }
}
