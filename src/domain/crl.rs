//! CRL profile: the TBSCertList is built here (not by x509-cert's CrlBuilder, which copies the
//! issuer certificate's AKI instead of its SKI and so breaks CRLs of intermediate CAs).

use super::profile::{Issuer, to_time};
use super::revocation::Reason;
use const_oid::db::rfc5280;
use der::Encode;
use der::asn1::{OctetString, Uint};
use spki::AlgorithmIdentifierOwned;
use time::OffsetDateTime;
use x509_cert::Version;
use x509_cert::crl::{RevokedCert, TbsCertList};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber, CrlReason};
use x509_cert::serial_number::SerialNumber;

#[derive(Debug, Clone)]
pub struct CrlEntry {
    pub serial_hex: String,
    pub date: OffsetDateTime,
    pub reason: Reason,
}

fn crl_reason(r: Reason) -> CrlReason {
    match r {
        Reason::Unspecified => CrlReason::Unspecified,
        Reason::KeyCompromise => CrlReason::KeyCompromise,
        Reason::CaCompromise => CrlReason::CaCompromise,
        Reason::AffiliationChanged => CrlReason::AffiliationChanged,
        Reason::Superseded => CrlReason::Superseded,
        Reason::CessationOfOperation => CrlReason::CessationOfOperation,
        Reason::CertificateHold => CrlReason::CertificateHold,
        Reason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
        Reason::AaCompromise => CrlReason::AaCompromise,
    }
}

fn ext<T: Encode>(
    oid: const_oid::ObjectIdentifier,
    critical: bool,
    v: &T,
) -> Result<Extension, String> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(v.to_der().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?,
    })
}

/// A CRL entry's serial from its hex: a positive DER INTEGER of at most 20 bytes (RFC 5280
/// 4.1.2.2). The plan refuses a revocation whose serial does not fit, before anything is
/// written: found only here, it stopped every CRL from then on.
pub fn serial_number(hex: &str) -> Result<SerialNumber, String> {
    let even = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_string()
    };
    let bytes = hex::decode(even).map_err(|e| format!("serial {hex}: {e}"))?;
    SerialNumber::new(&bytes).map_err(|e| {
        format!(
            "serial {hex} does not fit a CRL entry (a positive INTEGER of at most 20 bytes): {e}"
        )
    })
}

/// The CRL's thisUpdate: `backdate` before `now`, as a certificate's notBefore, so a relying
/// party whose clock is a little behind does not refuse a new CRL as not yet valid; never
/// before the newest revocation it lists, which it would predate.
pub fn this_update(
    now: OffsetDateTime,
    backdate: time::Duration,
    entries: &[CrlEntry],
) -> OffsetDateTime {
    let newest = entries.iter().map(|e| e.date).max();
    (now - backdate)
        .max(newest.unwrap_or(now - backdate))
        .min(now)
}

/// Builds the DER TBSCertList. `number` must be higher than any number used before.
pub fn tbs(
    issuer: &Issuer,
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    entries: &[CrlEntry],
) -> Result<Vec<u8>, String> {
    let mut revoked: Vec<RevokedCert> = Vec::with_capacity(entries.len());
    for e in entries {
        // RFC 5280 5.3.1: omit the reason code rather than write `unspecified`.
        let crl_entry_extensions = match e.reason {
            Reason::Unspecified => None,
            r => Some(vec![ext(
                rfc5280::ID_CE_CRL_REASONS,
                false,
                &crl_reason(r),
            )?]),
        };
        revoked.push(RevokedCert {
            serial_number: serial_number(&e.serial_hex)?,
            revocation_date: to_time(e.date)?,
            crl_entry_extensions,
        });
    }
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(
            OctetString::new(issuer.key_identifier.clone()).map_err(|e| e.to_string())?,
        ),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let number = CrlNumber(Uint::new(&number.to_be_bytes()).map_err(|e| e.to_string())?);
    let tbs: TbsCertList = TbsCertList {
        version: Version::V2,
        signature: issuer.algorithm.clone(),
        issuer: issuer.name.clone(),
        this_update: to_time(this_update)?,
        next_update: Some(to_time(next_update)?),
        revoked_certificates: if revoked.is_empty() {
            None
        } else {
            Some(revoked)
        },
        crl_extensions: Some(vec![
            ext(rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER, false, &aki)?,
            ext(rfc5280::ID_CE_CRL_NUMBER, false, &number)?,
        ]),
    };
    tbs.to_der().map_err(|e| e.to_string())
}

/// Joins a signed TBSCertList, exactly as signed, into the CertificateList DER.
pub fn assemble(
    tbs_der: &[u8],
    alg: &AlgorithmIdentifierOwned,
    signature: &[u8],
) -> Result<Vec<u8>, String> {
    super::signed::der(tbs_der, alg, signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// Found by review: a CRL's thisUpdate was the moment it was signed, so a relying party
    /// with a clock seconds behind refused each new CRL ("CRL is not yet valid").
    #[test]
    fn this_update_is_backdated_but_not_before_a_revocation_it_lists() {
        let now = datetime!(2026-12-03 12:00 UTC);
        let five = time::Duration::minutes(5);
        let entry = |date| CrlEntry {
            serial_hex: "0a".into(),
            date,
            reason: Reason::Superseded,
        };
        assert_eq!(this_update(now, five, &[]), now - five);
        let old = entry(now - time::Duration::days(3));
        assert_eq!(this_update(now, five, &[old]), now - five);
        let recent = entry(now - time::Duration::minutes(2));
        assert_eq!(
            this_update(now, five, &[recent]),
            now - time::Duration::minutes(2)
        );
        assert_eq!(this_update(now, time::Duration::ZERO, &[]), now);
    }
}
