//! PKCS#10 checks that come before any policy: decoding, proof of possession, key strength,
//! and refusing CSRs that ask to be a CA.

use super::finding::Code;
use super::fixed_key::{FixedKey, Verdict};
use super::names::Sans;
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5280, rfc5912};
use der::{Decode, Encode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, ExtensionReq};

/// CSRs bigger than this are refused before parsing.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// PKCS#9 emailAddress, a subject attribute gitca never certifies (the serverless CA copies it).
pub const EMAIL_ADDRESS_OID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");

impl CheckedCsr {
    /// The CSR's subject holds an emailAddress, which gitca leaves out of the certificate.
    pub fn has_subject_email(&self) -> bool {
        self.subject.iter().any(|a| a.oid == EMAIL_ADDRESS_OID)
    }
}

const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Rsa { bits: usize },
    P256,
    P384,
    P521,
    Ed25519,
}

impl KeyKind {
    /// The policy name of the key type (`rsa`, `p256`, ...).
    pub fn policy_name(self) -> &'static str {
        match self {
            KeyKind::Rsa { .. } => "rsa",
            KeyKind::P256 => "p256",
            KeyKind::P384 => "p384",
            KeyKind::P521 => "p521",
            KeyKind::Ed25519 => "ed25519",
        }
    }

    pub fn describe(self) -> String {
        match self {
            KeyKind::Rsa { bits } => format!("RSA-{bits}"),
            k => k.policy_name().to_uppercase(),
        }
    }

    /// Reads the algorithm (and RSA size) of a public key.
    pub fn of(spki: &SubjectPublicKeyInfoOwned) -> Result<KeyKind, String> {
        let oid = spki.algorithm.oid;
        if oid == rfc5912::RSA_ENCRYPTION {
            let der = spki.to_der().map_err(|e| e.to_string())?;
            use rsa::pkcs8::DecodePublicKey;
            use rsa::traits::PublicKeyParts;
            let k = rsa::PublicKey::from_public_key_der(&der)
                .map_err(|e| format!("invalid RSA key: {e}"))?;
            // The modulus's own length: `size()` rounds up to whole bytes, which made a
            // 3,065-bit key pass a 3,072-bit minimum.
            Ok(KeyKind::Rsa {
                bits: k.n().bit_width() as usize,
            })
        } else if oid == rfc5912::ID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or("EC key without a named curve")?;
            let (kind, coordinate) = match curve {
                c if c == rfc5912::SECP_256_R_1 => (KeyKind::P256, 32),
                c if c == rfc5912::SECP_384_R_1 => (KeyKind::P384, 48),
                c if c == rfc5912::SECP_521_R_1 => (KeyKind::P521, 66),
                c => {
                    return Err(format!(
                        "EC curve {c} is not supported (P-256, P-384, P-521 are)"
                    ));
                }
            };
            // One key, one encoding: a key is known by its SubjectPublicKeyInfo's hash (key
            // reuse, key compromise), so the compressed twin of a revoked key would pass as
            // another. RFC 5480 2.2 has every party support the uncompressed form.
            let point = spki.subject_public_key.raw_bytes();
            if point.len() != 1 + 2 * coordinate || point[0] != 0x04 {
                return Err(
                    "EC point is not in uncompressed form (0x04, x, y); gitca accepts only that \
                     form (RFC 5480 2.2)"
                        .into(),
                );
            }
            Ok(kind)
        } else if oid == ED25519 {
            // RFC 8410 3: the parameters MUST be absent.
            if spki.algorithm.parameters.is_some()
                || spki.subject_public_key.raw_bytes().len() != 32
            {
                return Err(
                    "Ed25519 key with algorithm parameters or not 32 bytes (RFC 8410 3)".into(),
                );
            }
            Ok(KeyKind::Ed25519)
        } else {
            Err(format!(
                "key algorithm {oid} is not supported (RSA, P-256, P-384, P-521, Ed25519 are)"
            ))
        }
    }
}

/// Verifies `sig` over `msg` by `spki` with the X.509 signature algorithm `alg`.
/// Shared by CSR proof-of-possession and the after-signing check of certificates and CRLs.
pub fn verify_signature(
    spki: &SubjectPublicKeyInfoOwned,
    alg: &spki::AlgorithmIdentifierOwned,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    Ok(SignatureVerifier::new(spki, alg)?.verify(msg, sig)?)
}

/// Why [`SignatureVerifier::verify`] did not accept a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature does not verify")]
    DoesNotVerify,
    /// The check itself cannot be trusted: the key's tables and AWS-LC's general verify
    /// disagree.
    #[error("{0}")]
    Untrusted(String),
}

impl From<VerifyError> for String {
    fn from(e: VerifyError) -> String {
        e.to_string()
    }
}

/// Checks signatures by one key under one X.509 signature algorithm. The key is parsed, and
/// an EC point checked to lie on its curve, once: the signer's key checks every signature of
/// a run.
pub struct SignatureVerifier {
    key: aws_lc_rs::signature::ParsedPublicKey,
    /// For a key that checks many signatures, a P-256 key with ECDSA SHA-256 (the CA's): the
    /// tables of [`FixedKey`], about three times faster per signature than the general verify.
    table: Option<FixedKeyCheck>,
}

/// [`FixedKey`] with AWS-LC's general verify beside it: it confirms the first signature the
/// tables accept and every one they refuse, and decides where they cannot. A fault that made the
/// tables accept everything, or refuse a good signature, stops the run; later acceptances rest
/// on the tables alone, whose arithmetic is AWS-LC's and is tested against its verify.
struct FixedKeyCheck {
    tables: FixedKey,
    confirmed: std::sync::atomic::AtomicBool,
}

impl SignatureVerifier {
    pub fn new(
        spki: &SubjectPublicKeyInfoOwned,
        alg: &spki::AlgorithmIdentifierOwned,
    ) -> Result<SignatureVerifier, String> {
        SignatureVerifier::for_key(spki, KeyKind::of(spki)?, alg)
    }

    /// As `new`, for a key whose kind is known already (a CSR's, checked before).
    pub fn for_key(
        spki: &SubjectPublicKeyInfoOwned,
        kind: KeyKind,
        alg: &spki::AlgorithmIdentifierOwned,
    ) -> Result<SignatureVerifier, String> {
        use aws_lc_rs::signature as s;
        let a = alg.oid;
        // (ECDSA?, hash bits); anything else is refused below for every kind of key.
        let (is_ecdsa, hash) = match a {
            x if x == rfc5912::ECDSA_WITH_SHA_256 => (true, 256),
            x if x == rfc5912::ECDSA_WITH_SHA_384 => (true, 384),
            x if x == rfc5912::ECDSA_WITH_SHA_512 => (true, 512),
            x if x == rfc5912::SHA_256_WITH_RSA_ENCRYPTION => (false, 256),
            x if x == rfc5912::SHA_384_WITH_RSA_ENCRYPTION => (false, 384),
            x if x == rfc5912::SHA_512_WITH_RSA_ENCRYPTION => (false, 512),
            _ => (false, 0),
        };
        let not_for =
            |what: &str| format!("signature algorithm {a} is not accepted for {what} keys");
        let algorithm: &'static dyn s::VerificationAlgorithm = match kind {
            KeyKind::Rsa { bits } => {
                if bits > 8192 {
                    return Err(format!("RSA keys over 8192 bits are not accepted ({bits})"));
                }
                match (is_ecdsa, hash) {
                    (false, 256) => &s::RSA_PKCS1_2048_8192_SHA256,
                    (false, 384) => &s::RSA_PKCS1_2048_8192_SHA384,
                    (false, 512) => &s::RSA_PKCS1_2048_8192_SHA512,
                    _ => return Err(not_for("RSA")),
                }
            }
            KeyKind::P256 | KeyKind::P384 | KeyKind::P521 => {
                if alg.parameters.is_some() {
                    return Err("ECDSA signature algorithm must have absent parameters".into());
                }
                match (kind, is_ecdsa, hash) {
                    (KeyKind::P256, true, 256) => &s::ECDSA_P256_SHA256_ASN1,
                    (KeyKind::P256, true, 384) => &s::ECDSA_P256_SHA384_ASN1,
                    (KeyKind::P256, true, 512) => &s::ECDSA_P256_SHA512_ASN1,
                    (KeyKind::P384, true, 256) => &s::ECDSA_P384_SHA256_ASN1,
                    (KeyKind::P384, true, 384) => &s::ECDSA_P384_SHA384_ASN1,
                    (KeyKind::P384, true, 512) => &s::ECDSA_P384_SHA512_ASN1,
                    (KeyKind::P521, true, 256) => &s::ECDSA_P521_SHA256_ASN1,
                    (KeyKind::P521, true, 384) => &s::ECDSA_P521_SHA384_ASN1,
                    (KeyKind::P521, true, 512) => &s::ECDSA_P521_SHA512_ASN1,
                    _ => return Err(not_for("EC")),
                }
            }
            KeyKind::Ed25519 => {
                if a != ED25519 {
                    return Err(not_for("Ed25519"));
                }
                &s::ED25519
            }
        };
        // The BIT STRING's contents: an EC point, a PKCS#1 RSAPublicKey, or the Ed25519 key.
        let key = spki
            .subject_public_key
            .as_bytes()
            .ok_or("public key has unused bits")?;
        s::ParsedPublicKey::new(algorithm, key)
            .map(|key| SignatureVerifier { key, table: None })
            .map_err(|e| {
                format!(
                    "the {} public key is not valid (aws-lc: {e})",
                    kind.describe()
                )
            })
    }

    /// As `new`, for a key about to check many signatures (a CA key checking a batch): a
    /// P-256 key under ECDSA SHA-256 gets tables of its multiples (about 1.5 ms to make;
    /// [`FixedKey`]). Other keys, and machines the tables do not support, check as `new` does.
    pub fn for_many(
        spki: &SubjectPublicKeyInfoOwned,
        alg: &spki::AlgorithmIdentifierOwned,
    ) -> Result<SignatureVerifier, String> {
        let mut v = SignatureVerifier::new(spki, alg)?;
        if KeyKind::of(spki)? == KeyKind::P256 && alg.oid == rfc5912::ECDSA_WITH_SHA_256 {
            // `new` has parsed the point and checked that it lies on the curve.
            v.table = spki
                .subject_public_key
                .as_bytes()
                .and_then(FixedKey::new)
                .map(|tables| FixedKeyCheck {
                    tables,
                    confirmed: Default::default(),
                });
        }
        Ok(v)
    }

    /// Whether the checks go by tables of the key's multiples (see `for_many`).
    pub fn has_tables(&self) -> bool {
        self.table.is_some()
    }

    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        let verdict = self.table.as_ref().map(|t| t.tables.verify(msg, sig));
        self.settle(verdict, msg, sig)
    }

    /// [`SignatureVerifier::verify`] of each `(msg, sig)`, in order. By tables, the signatures'
    /// `s` are inverted together (see [`FixedKey::verify_many`]).
    pub fn verify_many(&self, items: &[(&[u8], &[u8])]) -> Vec<Result<(), VerifyError>> {
        let verdicts = match &self.table {
            Some(t) => t.tables.verify_many(items).into_iter().map(Some).collect(),
            None => vec![None; items.len()],
        };
        (verdicts.into_iter().zip(items))
            .map(|(verdict, (msg, sig))| self.settle(verdict, msg, sig))
            .collect()
    }

    /// The answer for a signature the tables gave `by_tables` for (None: no tables).
    fn settle(
        &self,
        by_tables: Option<Verdict>,
        msg: &[u8],
        sig: &[u8],
    ) -> Result<(), VerifyError> {
        use std::sync::atomic::Ordering::Relaxed;
        let general = || self.key.verify_sig(msg, sig).is_ok();
        let valid = match (&self.table, by_tables) {
            (Some(t), Some(Verdict::Valid)) if t.confirmed.load(Relaxed) => true,
            // The first acceptance, or a refusal: the general verify must agree.
            (Some(t), Some(verdict @ (Verdict::Valid | Verdict::Invalid))) => {
                let by_tables = verdict == Verdict::Valid;
                if general() != by_tables {
                    return Err(VerifyError::Untrusted(format!(
                        "the check by the key's tables {} a signature that AWS-LC's general \
                         verify {}; gitca does not go on with a signature check it cannot \
                         trust (please report this)",
                        if by_tables { "accepted" } else { "refused" },
                        if by_tables { "refuses" } else { "accepts" },
                    )));
                }
                if by_tables {
                    t.confirmed.store(true, Relaxed);
                }
                by_tables
            }
            // No tables, or they could not decide.
            _ => general(),
        };
        if valid {
            Ok(())
        } else {
            Err(VerifyError::DoesNotVerify)
        }
    }
}

/// A CSR that decoded, whose self-signature verified and whose key is acceptable.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    pub subject: Name,
    pub public_key: SubjectPublicKeyInfoOwned,
    pub key: KeyKind,
    /// SANs the CSR asks for (used when the request YAML gives none), or why gitca cannot
    /// issue them: that matters only then, so a request listing its own SANs still plans.
    pub sans: Result<Sans, String>,
    /// SHA-256 of the DER SubjectPublicKeyInfo: the key's identity for reuse checks.
    pub key_id: String,
}

/// Decodes PEM or DER, verifies proof of possession and refuses weak keys and CA requests.
pub fn check_csr(bytes: &[u8]) -> Result<CheckedCsr, (Code, String)> {
    if bytes.len() > MAX_CSR_BYTES {
        return Err((
            Code::RequestTooLarge,
            format!("CSR is {} bytes, the limit is {MAX_CSR_BYTES}", bytes.len()),
        ));
    }
    let der = decode_pem_or_der(bytes).map_err(|e| (Code::CsrMalformed, e))?;
    let req = CertReq::from_der(&der)
        .map_err(|e| (Code::CsrMalformed, format!("not a PKCS#10 request: {e}")))?;
    // The rsa crate refuses moduli outside 1,024..=8,192 bits as malformed: a CSR's key is
    // named for its size (csr-key-weak, or over 8,192 bits) rather than as malformed. Only
    // here: a CA or signer key of such a size stays an error of its own.
    let key = KeyKind::of(&req.info.public_key)
        .or_else(|e| match modulus_bits(&req.info.public_key) {
            Some(bits)
                if req.info.public_key.algorithm.oid == rfc5912::RSA_ENCRYPTION
                    && !(1024..=8192).contains(&bits) =>
            {
                Ok(KeyKind::Rsa { bits })
            }
            _ => Err(e),
        })
        .map_err(|e| (Code::CsrKeyUnsupported, e))?;
    if let KeyKind::Rsa { bits } = key
        && bits < 2048
    {
        return Err((
            Code::CsrKeyWeak,
            format!("RSA key of {bits} bits; at least 2048 are required"),
        ));
    }
    if let KeyKind::Rsa { bits } = key
        && bits > 8192
    {
        return Err((
            Code::CsrKeyUnsupported,
            format!("RSA key of {bits} bits; gitca accepts at most 8192"),
        ));
    }
    let info = req
        .info
        .to_der()
        .map_err(|e| (Code::CsrMalformed, e.to_string()))?;
    let sig = req
        .signature
        .as_bytes()
        .ok_or((Code::CsrMalformed, "signature has unused bits".to_string()))?;
    let bad_signature = |e: String| {
        (
            Code::CsrBadSignature,
            format!("proof of possession failed: {e}"),
        )
    };
    let verifier = SignatureVerifier::for_key(&req.info.public_key, key, &req.algorithm)
        .map_err(bad_signature)?;
    verifier.verify(&info, sig).map_err(|e| {
        // The signature is checked over the info as gitca decodes and re-encodes it, so a
        // signature over a non-DER form (BER's unsorted SET OF, which the decoder sorts) fails
        // here. When it holds over the bytes as received, say so rather than blame the key;
        // any other failure keeps its own message.
        let signed_as_received = super::signed::signed_part(&der)
            .is_some_and(|raw| raw != info.as_slice() && verifier.verify(raw, sig).is_ok());
        if signed_as_received {
            (
                Code::CsrMalformed,
                "the CertificationRequestInfo is not DER (a SET OF out of order, say: a \
                 multi-valued name or the attributes); its signature covers bytes that are not \
                 the DER encoding gitca checks. Create the CSR with a DER encoder (openssl req \
                 does)"
                    .to_string(),
            )
        } else {
            bad_signature(e.into())
        }
    })?;

    let mut sans = Ok(Sans::default());
    // Tools show the first of repeated extensions and gitca would have used the last: a
    // reviewer reading the CSR must see what is signed, so repeats are refused (RFC 5280 4.2).
    let mut requests = 0;
    let mut seen = std::collections::BTreeSet::new();
    for attr in req.info.attributes.iter() {
        if attr.oid != rfc5912::ID_EXTENSION_REQ {
            continue;
        }
        for v in attr.values.iter() {
            requests += 1;
            if requests > 1 {
                return Err((
                    Code::CsrMalformed,
                    "the CSR has more than one extensionRequest; tools show the first".into(),
                ));
            }
            let exts: ExtensionReq = v.decode_as().map_err(|e| {
                (
                    Code::CsrMalformed,
                    format!("invalid extension request: {e}"),
                )
            })?;
            for ext in exts.0 {
                if !seen.insert(ext.extn_id) {
                    return Err((
                        Code::CsrMalformed,
                        format!(
                            "the CSR requests extension {} more than once; tools show the first",
                            ext.extn_id
                        ),
                    ));
                }
                let val = ext.extn_value.as_bytes();
                if ext.extn_id == rfc5280::ID_CE_BASIC_CONSTRAINTS {
                    let bc = BasicConstraints::from_der(val)
                        .map_err(|e| (Code::CsrMalformed, e.to_string()))?;
                    if bc.ca {
                        return Err((Code::CsrRequestsCa, "CSR asks for CA:TRUE".into()));
                    }
                } else if ext.extn_id == rfc5280::ID_CE_KEY_USAGE {
                    let ku =
                        KeyUsage::from_der(val).map_err(|e| (Code::CsrMalformed, e.to_string()))?;
                    if ku.key_cert_sign() || ku.crl_sign() {
                        return Err((
                            Code::CsrRequestsCa,
                            "CSR asks for keyCertSign or cRLSign".into(),
                        ));
                    }
                } else if ext.extn_id == rfc5280::ID_CE_SUBJECT_ALT_NAME {
                    // Not fatal here: a request listing its own SANs leaves these aside.
                    sans = SubjectAltName::from_der(val)
                        .map_err(|e| format!("subjectAltName does not decode: {e}"))
                        .and_then(|s| Sans::from_general_names(&s.0))
                        .map_err(|e| {
                            format!(
                                "the CSR's {e}; list the SANs in the request's `sans:` to leave \
                                 the CSR's aside"
                            )
                        });
                }
            }
        }
    }
    Ok(CheckedCsr {
        subject: req.info.subject.clone(),
        key_id: key_id(&req.info.public_key),
        public_key: req.info.public_key,
        key,
        sans,
    })
}

/// The bit length of an RSA key's modulus, from its PKCS#1 structure alone.
fn modulus_bits(spki: &SubjectPublicKeyInfoOwned) -> Option<usize> {
    use rsa::pkcs1::der::Decode;
    let key = rsa::pkcs1::RsaPublicKeyRef::from_der(spki.subject_public_key.as_bytes()?).ok()?;
    let n = key.modulus.as_bytes();
    let first = *n.first()?;
    Some(n.len() * 8 - first.leading_zeros() as usize)
}

pub fn key_id(spki: &SubjectPublicKeyInfoOwned) -> String {
    base16ct::lower::encode_string(&Sha256::digest(spki.to_der().unwrap_or_default()))
}

/// PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) or raw DER.
pub fn decode_pem_or_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "neither DER nor PEM text".to_string())?;
    let (label, der) =
        der::pem::decode_vec(text.trim().as_bytes()).map_err(|e| format!("invalid PEM: {e}"))?;
    if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
        return Err(format!("PEM label {label:?} is not CERTIFICATE REQUEST"));
    }
    Ok(der)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    fn key() -> (EcdsaKeyPair, SubjectPublicKeyInfoOwned) {
        let k = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let spki = SubjectPublicKeyInfoOwned::from_key(
            &p256::PublicKey::from_sec1_bytes(k.public_key().as_ref()).unwrap(),
        )
        .unwrap();
        (k, spki)
    }

    fn alg(oid: ObjectIdentifier) -> spki::AlgorithmIdentifierOwned {
        spki::AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        }
    }

    #[test]
    fn a_p256_key_checking_many_signatures_gets_tables_and_checks_as_before() {
        let rng = SystemRandom::new();
        let (k, spki) = key();
        let sha256 = alg(rfc5912::ECDSA_WITH_SHA_256);
        let v = SignatureVerifier::for_many(&spki, &sha256).unwrap();
        assert!(v.has_tables());
        assert!(!SignatureVerifier::new(&spki, &sha256).unwrap().has_tables());
        // Another hash: the general verify.
        let sha384 = alg(rfc5912::ECDSA_WITH_SHA_384);
        assert!(
            !SignatureVerifier::for_many(&spki, &sha384)
                .unwrap()
                .has_tables()
        );
        let confirmed = || {
            v.table
                .as_ref()
                .unwrap()
                .confirmed
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert!(!confirmed());
        for i in 0..20u8 {
            let msg = [i; 100];
            let sig = k.sign(&rng, &msg).unwrap();
            v.verify(&msg, sig.as_ref()).unwrap();
            // The first acceptance is confirmed once; later ones rest on the tables.
            assert!(confirmed());
            let err = v.verify(&[i; 99], sig.as_ref()).unwrap_err();
            assert_eq!(err, VerifyError::DoesNotVerify);
        }
    }

    #[test]
    fn signatures_checked_together_get_the_answers_each_gets_alone() {
        let rng = SystemRandom::new();
        let (k, spki) = key();
        let sha256 = alg(rfc5912::ECDSA_WITH_SHA_256);
        let msgs: Vec<[u8; 50]> = (0..12u8).map(|i| [i; 50]).collect();
        let mut sigs: Vec<Vec<u8>> = (msgs.iter())
            .map(|m| k.sign(&rng, m).unwrap().as_ref().to_vec())
            .collect();
        sigs[4][7] ^= 2;
        sigs[9] = sigs[10].clone();
        let items: Vec<(&[u8], &[u8])> = (msgs.iter().zip(&sigs))
            .map(|(m, s)| (m.as_slice(), s.as_slice()))
            .collect();
        for v in [
            SignatureVerifier::for_many(&spki, &sha256).unwrap(),
            SignatureVerifier::new(&spki, &sha256).unwrap(),
        ] {
            let together = v.verify_many(&items);
            let alone: Vec<_> = items.iter().map(|(m, s)| v.verify(m, s)).collect();
            assert_eq!(together, alone, "tables: {}", v.has_tables());
            let refused: Vec<usize> = (together.iter().enumerate())
                .filter(|(_, r)| r.is_err())
                .map(|(i, _)| i)
                .collect();
            assert_eq!(refused, [4, 9]);
        }
    }

    #[test]
    fn tables_that_disagree_with_the_general_verify_stop_the_check() {
        // Tables of another key stand in for faulty ones.
        let rng = SystemRandom::new();
        let (k, spki) = key();
        let (other, _) = key();
        let with_wrong_tables = || SignatureVerifier {
            table: Some(FixedKeyCheck {
                tables: FixedKey::new(other.public_key().as_ref()).unwrap(),
                confirmed: Default::default(),
            }),
            ..SignatureVerifier::new(&spki, &alg(rfc5912::ECDSA_WITH_SHA_256)).unwrap()
        };
        let msg = b"tbs";
        let refusal = |sig: &[u8]| {
            with_wrong_tables()
                .verify(msg, sig)
                .unwrap_err()
                .to_string()
        };
        // A good signature the tables refuse.
        let err = refusal(k.sign(&rng, msg).unwrap().as_ref());
        assert!(
            err.contains("tables refused a signature that AWS-LC's general verify accepts"),
            "{err}"
        );
        // A bad signature the tables accept, the first of a run.
        let err = refusal(other.sign(&rng, msg).unwrap().as_ref());
        assert!(
            err.contains("tables accepted a signature that AWS-LC's general verify refuses"),
            "{err}"
        );
        // The same, checked together with others.
        let good = k.sign(&rng, msg).unwrap();
        let bad = other.sign(&rng, msg).unwrap();
        let together =
            with_wrong_tables().verify_many(&[(msg, good.as_ref()), (msg, bad.as_ref())]);
        for (r, what) in together.iter().zip(["refused", "accepted"]) {
            let err = r.as_ref().unwrap_err().to_string();
            assert!(err.contains(&format!("tables {what} a signature")), "{err}");
        }
    }
}

#[cfg(test)]
mod encoding_tests {
    use super::*;
    use der::asn1::BitString;
    use spki::AlgorithmIdentifierOwned;

    fn spki(
        oid: ObjectIdentifier,
        parameters: Option<der::Any>,
        key: &[u8],
    ) -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned { oid, parameters },
            subject_public_key: BitString::from_bytes(key).unwrap(),
        }
    }

    /// Defect `csr-ec-point-compressed`: a key is known by the hash of its encoding, so another
    /// encoding of one key (compressed, hybrid; or Ed25519 with NULL parameters) passed as
    /// another key, past key reuse and key compromise. Only the one encoding is accepted.
    #[test]
    fn a_key_is_accepted_in_its_one_encoding_only() {
        let p256 = Some(der::Any::encode_from(&rfc5912::SECP_256_R_1).unwrap());
        let ec = |point: &[u8]| KeyKind::of(&spki(rfc5912::ID_EC_PUBLIC_KEY, p256.clone(), point));
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        assert_eq!(ec(&point), Ok(KeyKind::P256));
        for (first, len) in [(0x02, 33), (0x03, 33), (0x06, 65), (0x07, 65), (0x04, 64)] {
            let mut other = point[..len].to_vec();
            other[0] = first;
            assert!(
                ec(&other).unwrap_err().contains("uncompressed"),
                "{first:#x} {len}"
            );
        }
        let ed = |params: Option<der::Any>, len: usize| {
            KeyKind::of(&spki(ED25519, params, &vec![9; len]))
        };
        assert_eq!(ed(None, 32), Ok(KeyKind::Ed25519));
        assert!(
            ed(Some(der::Any::from(der::asn1::Null)), 32)
                .unwrap_err()
                .contains("RFC 8410")
        );
        assert!(ed(None, 33).is_err());
    }
}
