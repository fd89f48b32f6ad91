//! The CA key behind a small async trait: it signs to-be-signed bytes and tells its public key.
//! The local signer holds a software key on disk (embedded defaults); KMS plugs in here too.

use crate::domain::csr::{KeyKind, verify_signature};
use async_trait::async_trait;
use const_oid::db::rfc5912;
use der::{Any, Encode};
use spki::{AlgorithmIdentifierOwned, EncodePublicKey, SubjectPublicKeyInfoOwned};
use std::fmt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Worth retrying (throttling, a 5xx, a timeout).
    #[error("signer temporarily unavailable: {0}")]
    Retryable(String),
    /// Needs a human (wrong key, access denied, disabled key).
    #[error("signer failed: {0}")]
    Fatal(String),
}

#[async_trait]
pub trait Signer: Send + Sync {
    fn public_key(&self) -> &SubjectPublicKeyInfoOwned;
    /// The AlgorithmIdentifier written into certificates and CRLs this signer signs.
    fn algorithm(&self) -> AlgorithmIdentifierOwned;
    /// Signs `tbs` (the DER of a TBSCertificate or TBSCertList) and returns the raw signature
    /// as it goes into the BIT STRING.
    async fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, SignError>;
    /// Remote calls made and retried, for the run summary.
    fn stats(&self) -> SignerStats {
        SignerStats::default()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SignerStats {
    pub calls: u64,
    pub retries: u64,
}

/// Signs and then verifies the signature locally against the signer's public key, so a
/// faulty signer can never put a bad signature into a certificate.
pub async fn sign_verified(s: &dyn Signer, tbs: &[u8]) -> Result<Vec<u8>, SignError> {
    let sig = s.sign(tbs).await?;
    verify_signature(s.public_key(), &s.algorithm(), tbs, &sig).map_err(|e| {
        SignError::Fatal(format!(
            "the signer returned a signature that does not verify: {e}"
        ))
    })?;
    Ok(sig)
}

/// The signature algorithm for a CA key: ECDSA with the curve's hash, RSA PKCS#1 v1.5 SHA-256.
pub fn algorithm_for(kind: KeyKind) -> Result<AlgorithmIdentifierOwned, String> {
    let (oid, parameters) = match kind {
        KeyKind::P256 => (rfc5912::ECDSA_WITH_SHA_256, None),
        KeyKind::P384 => (rfc5912::ECDSA_WITH_SHA_384, None),
        KeyKind::P521 => (rfc5912::ECDSA_WITH_SHA_512, None),
        // PKCS#1 v1.5 AlgorithmIdentifiers carry explicit NULL parameters (RFC 4055).
        KeyKind::Rsa { .. } => (rfc5912::SHA_256_WITH_RSA_ENCRYPTION, Some(Any::null())),
        KeyKind::Ed25519 => return Err("Ed25519 CA keys are not supported".into()),
    };
    Ok(AlgorithmIdentifierOwned { oid, parameters })
}

enum LocalKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>),
}

/// A software CA key (PKCS#8 PEM) for the embedded defaults.
pub struct LocalSigner {
    key: LocalKey,
    public_key: SubjectPublicKeyInfoOwned,
    kind: KeyKind,
}

impl fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("LocalSigner")
            .field("kind", &self.kind)
            .field("key", &"<elided>")
            .finish()
    }
}

/// CA key algorithms `gitca init` can create locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    P256,
    P384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

fn spki_of<K: EncodePublicKey>(k: &K) -> Result<SubjectPublicKeyInfoOwned, String> {
    let der = k.to_public_key_der().map_err(|e| e.to_string())?;
    der.decode_msg::<SubjectPublicKeyInfoOwned>()
        .map_err(|e| e.to_string())
}

impl LocalSigner {
    /// Generates a key and returns the signer with its PKCS#8 PEM (to be written mode 0600).
    pub fn generate(
        alg: KeyAlgorithm,
    ) -> Result<(LocalSigner, zeroize::Zeroizing<String>), String> {
        use getrandom::rand_core::UnwrapErr;
        use p256::elliptic_curve::Generate;
        use pkcs8::EncodePrivateKey;
        let mut rng = UnwrapErr(getrandom::SysRng);
        let pem = match alg {
            KeyAlgorithm::P256 => {
                p256::SecretKey::generate_from_rng(&mut rng).to_pkcs8_pem(Default::default())
            }
            KeyAlgorithm::P384 => {
                p384::SecretKey::generate_from_rng(&mut rng).to_pkcs8_pem(Default::default())
            }
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let bits = match alg {
                    KeyAlgorithm::Rsa2048 => 2048,
                    KeyAlgorithm::Rsa3072 => 3072,
                    _ => 4096,
                };
                rsa::PrivateKey::new(&mut rng, bits)
                    .map_err(|e| e.to_string())?
                    .to_pkcs8_pem(Default::default())
            }
        }
        .map_err(|e| e.to_string())?;
        let s = LocalSigner::from_pem(&pem)?;
        Ok((s, pem))
    }

    pub fn load(path: &Path) -> Result<LocalSigner, String> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read CA key {}: {e}", path.display()))?,
        );
        LocalSigner::from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_pem(pem: &str) -> Result<LocalSigner, String> {
        use pkcs8::DecodePrivateKey;
        let key = if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            LocalKey::P256(k)
        } else if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            LocalKey::P384(k)
        } else if let Ok(k) = rsa::PrivateKey::from_pkcs8_pem(pem) {
            LocalKey::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(k)))
        } else {
            return Err("not a PKCS#8 P-256, P-384 or RSA private key".into());
        };
        let public_key = match &key {
            LocalKey::P256(k) => spki_of(k.verifying_key())?,
            LocalKey::P384(k) => spki_of(k.verifying_key())?,
            LocalKey::Rsa(k) => spki_of(&signature::Keypair::verifying_key(k.as_ref()))?,
        };
        let kind = KeyKind::of(&public_key)?;
        if let KeyKind::Rsa { bits } = kind
            && bits < 2048
        {
            return Err(format!("RSA-{bits} CA keys are too weak"));
        }
        Ok(LocalSigner {
            key,
            public_key,
            kind,
        })
    }
}

#[async_trait]
impl Signer for LocalSigner {
    fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.public_key
    }

    fn algorithm(&self) -> AlgorithmIdentifierOwned {
        algorithm_for(self.kind).expect("local keys are P-256, P-384 or RSA")
    }

    async fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, SignError> {
        use signature::{SignatureEncoding, Signer as _};
        let fatal = |e: signature::Error| SignError::Fatal(e.to_string());
        Ok(match &self.key {
            LocalKey::P256(k) => {
                let s: p256::ecdsa::Signature = k.try_sign(tbs).map_err(fatal)?;
                s.to_der().to_vec()
            }
            LocalKey::P384(k) => {
                let s: p384::ecdsa::Signature = k.try_sign(tbs).map_err(fatal)?;
                s.to_der().to_vec()
            }
            LocalKey::Rsa(k) => k.try_sign(tbs).map_err(fatal)?.to_vec(),
        })
    }
}

/// Refuses to run when the signer's key is not the CA certificate's key.
pub fn check_matches(
    s: &dyn Signer,
    ca_spki: &SubjectPublicKeyInfoOwned,
    what: &str,
) -> Result<(), String> {
    let a = s.public_key().to_der().map_err(|e| e.to_string())?;
    let b = ca_spki.to_der().map_err(|e| e.to_string())?;
    if a != b {
        return Err(format!(
            "the signer's public key does not match the CA certificate {what}; refusing to sign"
        ));
    }
    Ok(())
}
