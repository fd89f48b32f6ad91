//! Certificate profiles: plain parameters in, an unsigned TBSCertificate out. Signing happens
//! elsewhere (the signer may be remote and async); `assemble` joins the two.

use super::csr::KeyKind;
use super::plan::IssueSpec;
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280;
use der::asn1::{Ia5String, OctetString};
use der::{Decode, Encode};
use sha1::{Digest, Sha1};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::certificate::{Certificate, TbsCertificate};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

/// The issuing side of a certificate or CRL.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub name: Name,
    pub public_key: SubjectPublicKeyInfoOwned,
    pub key_identifier: Vec<u8>,
    pub algorithm: AlgorithmIdentifierOwned,
    pub not_after: OffsetDateTime,
}

/// URLs placed in every issued certificate when configured.
#[derive(Debug, Clone, Default)]
pub struct Urls {
    pub crl_distribution_point: Option<String>,
    pub ca_issuers: Option<String>,
}

/// RFC 5280 method 1: SHA-1 of the subjectPublicKey bits.
pub fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec()
}

pub fn to_time(t: OffsetDateTime) -> Result<Time, String> {
    let st = SystemTime::UNIX_EPOCH + Duration::from_secs(t.unix_timestamp().max(0) as u64);
    Time::try_from(st).map_err(|e| format!("time {t} cannot be encoded: {e}"))
}

pub fn from_time(t: &Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.to_unix_duration().as_secs() as i64)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Subject and issuer for the x509-cert builder; extensions are added explicitly.
struct Names {
    subject: Name,
    issuer: Name,
}

impl Profile for Names {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(vec![])
    }
}

/// Stands in for the signer while the builder fills in the TBS: it knows the issuer's public
/// key and algorithm, not its private key.
#[derive(Clone)]
struct IssuerKey(SubjectPublicKeyInfoOwned, AlgorithmIdentifierOwned);

impl spki::EncodePublicKey for IssuerKey {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::encode_msg(&self.0)?)
    }
}

impl signature::Keypair for IssuerKey {
    type VerifyingKey = IssuerKey;
    fn verifying_key(&self) -> IssuerKey {
        self.clone()
    }
}

impl spki::DynSignatureAlgorithmIdentifier for IssuerKey {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(self.1.clone())
    }
}

/// A TBSCertificate ready for signing: its DER encoding, and what the certificate around it
/// needs.
pub struct Unsigned {
    pub tbs_der: Vec<u8>,
    algorithm: AlgorithmIdentifierOwned,
    pub validity: Validity,
}

impl Unsigned {
    /// The certificate's DER around the TBS exactly as it was signed.
    pub fn assemble(&self, signature: &[u8]) -> Result<Vec<u8>, String> {
        super::signed::der(&self.tbs_der, &self.algorithm, signature)
    }
}

/// A recorded TBS (an intent being completed) and its signature, joined as
/// [`Unsigned::assemble`] joins them; the result must decode as a certificate.
pub fn assemble_from_tbs(
    tbs_der: &[u8],
    alg: &AlgorithmIdentifierOwned,
    signature: &[u8],
) -> Result<Vec<u8>, String> {
    let der = super::signed::der(tbs_der, alg, signature)?;
    Certificate::from_der(&der).map_err(|e| e.to_string())?;
    Ok(der)
}

fn start(
    subject: Name,
    issuer: &Issuer,
    serial: &[u8],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    public_key: SubjectPublicKeyInfoOwned,
) -> Result<(CertificateBuilder<Names>, IssuerKey, Validity), String> {
    let validity = Validity::new(to_time(not_before)?, to_time(not_after)?);
    let serial = SerialNumber::new(serial).map_err(|e| e.to_string())?;
    let b = CertificateBuilder::new(
        Names {
            subject,
            issuer: issuer.name.clone(),
        },
        serial,
        validity,
        public_key,
    )
    .map_err(|e| e.to_string())?;
    Ok((
        b,
        IssuerKey(issuer.public_key.clone(), issuer.algorithm.clone()),
        validity,
    ))
}

fn add<E: x509_cert::ext::ToExtension>(
    b: &mut CertificateBuilder<Names>,
    e: E,
) -> Result<(), String>
where
    E::Error: std::fmt::Display,
{
    b.add_extension(e).map_err(|e| e.to_string())
}

fn finish(
    mut b: CertificateBuilder<Names>,
    key: IssuerKey,
    validity: Validity,
) -> Result<Unsigned, String> {
    let tbs_der = b.finalize(&key).map_err(|e| e.to_string())?;
    Ok(Unsigned {
        tbs_der,
        algorithm: key.1,
        validity,
    })
}

/// The end-entity profile: nothing from the CSR but its key, subject (as decided) and SANs.
pub fn leaf(
    spec: &IssueSpec,
    issuer: &Issuer,
    serial: &[u8],
    not_before: OffsetDateTime,
    urls: &Urls,
) -> Result<Unsigned, String> {
    let not_after = not_before + spec.lifetime.as_time();
    if not_after > issuer.not_after {
        return Err(format!(
            "notAfter {not_after} is beyond the CA certificate's notAfter"
        ));
    }
    let (mut b, key, validity) = start(
        spec.subject.clone(),
        issuer,
        serial,
        not_before,
        not_after,
        spec.public_key.clone(),
    )?;
    add(
        &mut b,
        &BasicConstraints {
            ca: false,
            path_len_constraint: None,
        },
    )?;
    let mut ku = KeyUsages::DigitalSignature.into();
    if matches!(spec.key, KeyKind::Rsa { .. }) {
        ku |= KeyUsages::KeyEncipherment;
    }
    add(&mut b, &KeyUsage(ku))?;
    if !spec.usages.is_empty() {
        add(&mut b, &ExtendedKeyUsage(spec.usages.clone()))?;
    }
    if !spec.sans.is_empty() {
        let san = SubjectAltName(spec.sans.to_general_names()?);
        // RFC 5280 4.2.1.6: critical when the subject is empty.
        add(&mut b, (spec.subject.is_empty(), &san))?;
    }
    add(
        &mut b,
        &SubjectKeyIdentifier(
            OctetString::new(key_identifier(&spec.public_key)).map_err(|e| e.to_string())?,
        ),
    )?;
    add(&mut b, &aki(issuer)?)?;
    add_urls(&mut b, urls)?;
    for e in &spec.extensions {
        add(&mut b, e.clone())?;
    }
    finish(b, key, validity)
}

/// What a CA certificate needs besides its issuer.
#[derive(Debug, Clone)]
pub struct CaParams {
    pub subject: Name,
    pub public_key: SubjectPublicKeyInfoOwned,
    /// The algorithm the CA's own key signs with (used when self-signed).
    pub self_algorithm: AlgorithmIdentifierOwned,
    pub serial: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub path_len: Option<u8>,
}

/// A CA certificate: self-signed root (issuer = None) or one signed by `issuer`.
pub fn ca(p: &CaParams, issuer: Option<&Issuer>, urls: &Urls) -> Result<Unsigned, String> {
    let self_issuer;
    let issuer = match issuer {
        Some(i) => i,
        None => {
            self_issuer = Issuer {
                name: p.subject.clone(),
                key_identifier: key_identifier(&p.public_key),
                public_key: p.public_key.clone(),
                algorithm: p.self_algorithm.clone(),
                not_after: p.not_after,
            };
            &self_issuer
        }
    };
    if p.not_after > issuer.not_after {
        return Err("the CA certificate would outlive its issuer".into());
    }
    let (mut b, key, validity) = start(
        p.subject.clone(),
        issuer,
        &p.serial,
        p.not_before,
        p.not_after,
        p.public_key.clone(),
    )?;
    add(
        &mut b,
        &BasicConstraints {
            ca: true,
            path_len_constraint: p.path_len,
        },
    )?;
    add(
        &mut b,
        &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
    )?;
    add(
        &mut b,
        &SubjectKeyIdentifier(
            OctetString::new(key_identifier(&p.public_key)).map_err(|e| e.to_string())?,
        ),
    )?;
    add(&mut b, &aki(issuer)?)?;
    add_urls(&mut b, urls)?;
    finish(b, key, validity)
}

fn aki(issuer: &Issuer) -> Result<AuthorityKeyIdentifier, String> {
    Ok(AuthorityKeyIdentifier {
        key_identifier: Some(
            OctetString::new(issuer.key_identifier.clone()).map_err(|e| e.to_string())?,
        ),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    })
}

fn uri(u: &str) -> Result<GeneralName, String> {
    Ok(GeneralName::UniformResourceIdentifier(
        Ia5String::new(u).map_err(|_| format!("URL {u:?} is not ASCII"))?,
    ))
}

/// The CRL distribution point and CA issuers extensions of the configured URLs, if set.
type UrlExtensions = (
    Option<CrlDistributionPoints>,
    Option<AuthorityInfoAccessSyntax>,
);

fn url_extensions(urls: &Urls) -> Result<UrlExtensions, String> {
    let cdp = (urls.crl_distribution_point.as_deref())
        .map(|u| {
            Ok::<_, String>(CrlDistributionPoints(vec![DistributionPoint {
                distribution_point: Some(DistributionPointName::FullName(vec![uri(u)?])),
                reasons: None,
                crl_issuer: None,
            }]))
        })
        .transpose()?;
    let aia = (urls.ca_issuers.as_deref())
        .map(|u| {
            Ok::<_, String>(AuthorityInfoAccessSyntax(vec![AccessDescription {
                access_method: rfc5280::ID_AD_CA_ISSUERS,
                access_location: uri(u)?,
            }]))
        })
        .transpose()?;
    Ok((cdp, aia))
}

fn add_urls(b: &mut CertificateBuilder<Names>, urls: &Urls) -> Result<(), String> {
    let (cdp, aia) = url_extensions(urls)?;
    if let Some(cdp) = &cdp {
        add(b, cdp)?;
    }
    if let Some(aia) = &aia {
        add(b, aia)?;
    }
    Ok(())
}

/// Whether a recorded intent's TBS is still one to sign (crash recovery): it passes
/// [`lint_leaf`], carries the CRL distribution point and CA issuers URL configured now (as
/// [`add_urls`] writes them; gitca.yaml may have changed since), and is not yet due for renewal
/// at `now` (signed, it would be renewed by the same run: two certificates).
pub fn recheck_intent(
    tbs_der: &[u8],
    (issuer, expected_serial, spec): (&Issuer, &[u8], &IssueSpec),
    urls: &Urls,
    renew_before: time::Duration,
    now: OffsetDateTime,
) -> Result<(), String> {
    let tbs = decode_tbs(tbs_der)?;
    lint_tbs(&tbs, issuer, expected_serial, spec)?;
    let has = |oid: ObjectIdentifier| {
        (tbs.extensions().into_iter().flatten())
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes().to_vec())
    };
    let der_of = |e: Result<Vec<u8>, der::Error>| e.map_err(|e| e.to_string());
    let (cdp, aia) = url_extensions(urls)?;
    if has(rfc5280::ID_CE_CRL_DISTRIBUTION_POINTS) != cdp.map(|c| der_of(c.to_der())).transpose()? {
        return Err("its CRL distribution point is not the one configured now".into());
    }
    if has(rfc5280::ID_PE_AUTHORITY_INFO_ACCESS) != aia.map(|a| der_of(a.to_der())).transpose()? {
        return Err("its CA issuers URL is not the one configured now".into());
    }
    let v = tbs.validity();
    let (not_before, not_after) = (from_time(&v.not_before), from_time(&v.not_after));
    if super::state::renewal_at(not_before, not_after, renew_before) <= now {
        return Err(format!(
            "valid {not_before} to {not_after}, due for renewal by now"
        ));
    }
    Ok(())
}

fn decode_tbs(tbs_der: &[u8]) -> Result<TbsCertificate, String> {
    TbsCertificate::from_der(tbs_der).map_err(|e| format!("TBS does not decode: {e}"))
}

/// Checks a TBS against the profile before it is signed (lint before signing): v3, serial of
/// 20 bytes or fewer and positive, validity inside the CA's, the CA's AKI, no CA flag on a leaf.
pub fn lint_leaf(
    tbs_der: &[u8],
    issuer: &Issuer,
    expected_serial: &[u8],
    spec: &IssueSpec,
) -> Result<(), String> {
    lint_tbs(&decode_tbs(tbs_der)?, issuer, expected_serial, spec)
}

fn lint_tbs(
    tbs: &TbsCertificate,
    issuer: &Issuer,
    expected_serial: &[u8],
    spec: &IssueSpec,
) -> Result<(), String> {
    if tbs.serial_number().as_bytes() != expected_serial
        || expected_serial.len() > 20
        || expected_serial[0] & 0x80 != 0
    {
        return Err("serial is not the recorded positive 20-byte serial".into());
    }
    if tbs.issuer() != &issuer.name {
        return Err("issuer name is not the CA's subject".into());
    }
    // RFC 5280 4.1.1.2: the TBS names the algorithm the outer signature uses (a recorded
    // intent is completed with the signer's).
    if tbs.signature() != &issuer.algorithm {
        return Err("the TBS's signature algorithm is not the signer's".into());
    }
    if from_time(&tbs.validity().not_after) > issuer.not_after {
        return Err("validity extends beyond the CA certificate".into());
    }
    let exts = tbs.extensions().ok_or("no extensions")?;
    let find = |oid: ObjectIdentifier| exts.iter().find(|e| e.extn_id == oid);
    let bc = find(rfc5280::ID_CE_BASIC_CONSTRAINTS).ok_or("no basicConstraints")?;
    if BasicConstraints::from_der(bc.extn_value.as_bytes())
        .map_err(|e| e.to_string())?
        .ca
    {
        return Err("a leaf certificate may not be a CA".into());
    }
    let ku = find(rfc5280::ID_CE_KEY_USAGE).ok_or("no keyUsage")?;
    let k = KeyUsage::from_der(ku.extn_value.as_bytes()).map_err(|e| e.to_string())?;
    if !ku.critical || k.key_cert_sign() || k.crl_sign() {
        return Err("keyUsage must be critical and may not include keyCertSign or cRLSign".into());
    }
    let a = find(rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER).ok_or("no authorityKeyIdentifier")?;
    let a = AuthorityKeyIdentifier::from_der(a.extn_value.as_bytes()).map_err(|e| e.to_string())?;
    if a.key_identifier.as_ref().map(|k| k.as_bytes()) != Some(&issuer.key_identifier[..]) {
        return Err("authorityKeyIdentifier is not the CA's subjectKeyIdentifier".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in exts {
        if !seen.insert(e.extn_id) {
            return Err(format!("extension {} appears twice", e.extn_id));
        }
    }
    recheck_against_policy(tbs, spec)?;
    Ok(())
}

/// The certificate must say exactly what the policy approved: subject, key, SANs, EKUs and
/// lifetime are read back from the TBS and compared with the approved spec.
fn recheck_against_policy(tbs: &TbsCertificate, spec: &IssueSpec) -> Result<(), String> {
    if tbs.subject() != &spec.subject {
        return Err("subject differs from the approved request".into());
    }
    if tbs.subject_public_key_info() != &spec.public_key {
        return Err("public key differs from the CSR's".into());
    }
    let sans = tbs
        .get_extension::<SubjectAltName>()
        .map_err(|e| e.to_string())?
        .map(|(_, s)| s.0)
        .unwrap_or_default();
    if sans != spec.sans.to_general_names()? {
        return Err("subjectAltName differs from the approved SANs".into());
    }
    // Without the extension a leaf is good for every purpose, whatever the policy allowed.
    let ekus = tbs
        .get_extension::<ExtendedKeyUsage>()
        .map_err(|e| e.to_string())?
        .map(|(_, e)| e.0)
        .ok_or("no extendedKeyUsage: the certificate would be good for every purpose")?;
    if ekus != spec.usages {
        return Err("extendedKeyUsage differs from the approved usages".into());
    }
    let v = tbs.validity();
    let life = from_time(&v.not_after) - from_time(&v.not_before);
    if life != spec.lifetime.as_time() {
        return Err(format!(
            "lifetime {life} differs from the approved {}",
            spec.lifetime
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64ct::{Base64, Encoding};
    use der::Encode;
    use std::str::FromStr;

    /// A P-256 public key (any key will do: assembling does not look at the signature).
    const SPKI: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAECktostLT13u258kcMuFcb2PSFpDf\
                        TzpbDrpzv7tyHmHEGPIs21O1npzYaW2ff2OuA+o++VmwtI+f/KJGr5+zxw==";

    #[test]
    fn a_certificate_holds_the_tbs_bytes_that_were_signed() {
        let public_key =
            SubjectPublicKeyInfoOwned::from_der(&Base64::decode_vec(SPKI).unwrap()).unwrap();
        let not_before = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let unsigned = ca(
            &CaParams {
                subject: Name::from_str("CN=Assembly Test CA").unwrap(),
                public_key,
                self_algorithm: AlgorithmIdentifierOwned {
                    oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
                    parameters: None,
                },
                serial: vec![0x42; 16],
                not_before,
                not_after: not_before + time::Duration::days(30),
                path_len: Some(0),
            },
            None,
            &Urls::default(),
        )
        .unwrap();
        let signature = [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02];
        let der = unsigned.assemble(&signature).unwrap();

        let cert = Certificate::from_der(&der).unwrap();
        // The TBS bytes themselves, not a re-encoding of what they decode to.
        #[derive(der::Sequence)]
        struct Raw<'a> {
            tbs: der::asn1::AnyRef<'a>,
            alg: der::asn1::AnyRef<'a>,
            sig: der::asn1::AnyRef<'a>,
        }
        let raw = Raw::from_der(&der).unwrap();
        assert_eq!(raw.tbs.to_der().unwrap(), unsigned.tbs_der);
        assert_eq!(cert.signature().raw_bytes(), signature);
        assert_eq!(cert.signature_algorithm(), &unsigned.algorithm);
        assert_eq!(cert.tbs_certificate().signature(), &unsigned.algorithm);
        assert_eq!(cert.tbs_certificate().validity(), &unsigned.validity);
        assert_eq!(from_time(&unsigned.validity.not_before), not_before);
        // The same bytes as the certificate encoded whole.
        assert_eq!(cert.to_der().unwrap(), der);
    }
}
