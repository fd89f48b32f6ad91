//! Request files: one YAML per certificate, naming its CSR.

use super::duration::Span;
use super::names::{Sans, Subject};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280;
use serde::{Deserialize, Serialize};

/// Request YAML files bigger than this are refused before parsing.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    pub csr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usages: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sans: Option<Sans>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<CustomExtension>,
    /// Revoke (reason superseded) the previous certificate once its replacement is issued,
    /// instead of letting it run until it expires.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoke_superseded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomExtension {
    pub oid: String,
    #[serde(default)]
    pub critical: bool,
    /// Base64 of the DER extension value.
    pub value: String,
}

impl RequestFile {
    pub fn parse(text: &str) -> Result<RequestFile, String> {
        let req: RequestFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        // A certificate without extended key usage is good for every purpose: an empty list
        // would pass every policy's usage rule and grant them all.
        if req.usages.as_ref().is_some_and(Vec::is_empty) {
            return Err(
                "usages: the list is empty; name at least one usage, or leave `usages` out for \
                 server_auth"
                    .into(),
            );
        }
        // RFC 5280 4.2: an extension appears at most once; a repeated EKU says nothing more.
        // Each is compared as an OID, and written as one (`2.5.29.017` would otherwise pass a
        // string comparison with the CA-managed `2.5.29.17`).
        let mut ext_oids = std::collections::BTreeSet::new();
        for x in &req.extensions {
            let oid = canonical_oid(&x.oid).map_err(|e| format!("extensions: {e}"))?;
            if !ext_oids.insert(oid) {
                return Err(format!("extensions: {} appears twice", x.oid));
            }
        }
        let mut usage_oids = std::collections::BTreeSet::new();
        for u in req.usages.iter().flatten() {
            let oid = usage_oid(u).map_err(|e| format!("usages: {e}"))?;
            if !usage_oids.insert(oid) {
                return Err(format!("usages: {u} names a usage listed already"));
            }
        }
        Ok(req)
    }

    pub fn usages(&self) -> Vec<String> {
        self.usages
            .clone()
            .unwrap_or_else(|| vec!["server_auth".to_string()])
    }
}

/// A dotted OID as its canonical text gives it: no leading zeros, no empty arc.
pub fn canonical_oid(text: &str) -> Result<ObjectIdentifier, String> {
    match ObjectIdentifier::new(text) {
        Ok(oid) if oid.to_string() == text => Ok(oid),
        Ok(oid) => Err(format!("{text:?} is not written canonically (as {oid})")),
        Err(_) => Err(format!("{text:?} is not a dotted OID")),
    }
}

/// A usage name or dotted OID -> EKU OID.
pub fn usage_oid(name: &str) -> Result<ObjectIdentifier, String> {
    Ok(match name {
        "server_auth" => rfc5280::ID_KP_SERVER_AUTH,
        "client_auth" => rfc5280::ID_KP_CLIENT_AUTH,
        "code_signing" => rfc5280::ID_KP_CODE_SIGNING,
        "email_protection" => rfc5280::ID_KP_EMAIL_PROTECTION,
        "time_stamping" => rfc5280::ID_KP_TIME_STAMPING,
        "ocsp_signing" => rfc5280::ID_KP_OCSP_SIGNING,
        other if other.contains('.') => canonical_oid(other).map_err(|e| format!("usage {e}"))?,
        other => {
            return Err(format!(
                "unknown usage {other:?} (server_auth, client_auth, code_signing, email_protection, time_stamping, ocsp_signing, or a dotted OID)"
            ));
        }
    })
}
