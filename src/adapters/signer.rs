//! The CA key behind a small async trait: it signs to-be-signed bytes and tells its public key.
//! The local signer holds a software key on disk (embedded defaults); KMS plugs in here too.

use crate::domain::csr::{KeyKind, SignatureVerifier, verify_signature};
use async_trait::async_trait;
use const_oid::db::rfc5912;
use der::{Any, Encode};
use spki::{AlgorithmIdentifierOwned, EncodePublicKey, SubjectPublicKeyInfoOwned};
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, thiserror::Error)]
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
    /// A signer that computes in-process can sign synchronously, so a batch uses every core;
    /// a remote one returns `None` and is driven concurrently instead.
    fn in_process(&self) -> Option<&dyn InProcessSigner> {
        None
    }
}

/// Signing without I/O: CPU work that may run on any thread.
pub trait InProcessSigner: Sync {
    fn sign_now(&self, tbs: &[u8]) -> Result<Vec<u8>, SignError>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SignerStats {
    pub calls: u64,
    pub retries: u64,
}

/// Seeds aws-lc's random generator on another thread. Its first use gathers CPU-jitter entropy
/// (about 40 ms of CPU here), which would otherwise delay the first signature of a run; started
/// when a run plans, it overlaps the loading of the state. `main` waits for it before the
/// process exits (see `background`).
pub fn warm_up_random() {
    crate::background::spawn(|| {
        let _ = aws_lc_rs::rand::fill(&mut [0u8; 1]);
    });
}

/// Signs and then verifies the signature locally against the signer's public key, so a
/// faulty signer can never put a bad signature into a certificate.
pub async fn sign_verified(s: &dyn Signer, tbs: &[u8]) -> Result<Vec<u8>, SignError> {
    let sig = s.sign(tbs).await?;
    check_signature(s.public_key(), &s.algorithm(), tbs, &sig)?;
    Ok(sig)
}

fn check_signature(
    public_key: &SubjectPublicKeyInfoOwned,
    algorithm: &AlgorithmIdentifierOwned,
    tbs: &[u8],
    sig: &[u8],
) -> Result<(), SignError> {
    verify_signature(public_key, algorithm, tbs, sig).map_err(returned_bad_signature)
}

fn returned_bad_signature(e: String) -> SignError {
    SignError::Fatal(format!(
        "the signer returned a signature that does not verify: {e}"
    ))
}

/// Signs every TBS, each checked like [`sign_verified`], results in input order. An in-process
/// key signs on all cores (rayon); a remote signer gets every request at once and bounds how
/// many are in flight itself. `tick` is called once per signature (progress).
pub async fn sign_all(
    s: &dyn Signer,
    tbs: &[&[u8]],
    tick: &(dyn Fn() + Sync),
) -> Vec<Result<Vec<u8>, SignError>> {
    use rayon::prelude::*;
    match s.in_process() {
        Some(local) => {
            let verifier = match SignatureVerifier::new(s.public_key(), &s.algorithm()) {
                Ok(v) => v,
                Err(e) => {
                    let e = SignError::Fatal(format!("the signer's public key: {e}"));
                    return tbs.iter().map(|_| Err(e.clone())).collect();
                }
            };
            tbs.par_iter()
                .map(|t| {
                    let sig = local.sign_now(t)?;
                    verifier.verify(t, &sig).map_err(returned_bad_signature)?;
                    tick();
                    Ok(sig)
                })
                .collect()
        }
        None => {
            futures::future::join_all(tbs.iter().map(|t| async move {
                let r = sign_verified(s, t).await;
                tick();
                r
            }))
            .await
        }
    }
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

/// The key as AWS-LC holds it (freed and cleansed by AWS-LC on drop).
enum LocalKey {
    Ecdsa(aws_lc_rs::signature::EcdsaKeyPair),
    Rsa(aws_lc_rs::signature::RsaKeyPair),
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
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
            RsaKeyPair,
        };
        use pkcs8::DecodePrivateKey;
        let not_a_key = || "not a PKCS#8 P-256, P-384 or RSA private key".to_string();
        let (label, der) = der::pem::decode_vec(pem.trim().as_bytes()).map_err(|_| not_a_key())?;
        let der = zeroize::Zeroizing::new(der);
        if label != "PRIVATE KEY" {
            return Err(not_a_key());
        }
        // The public key as RustCrypto encodes it (the same SPKI `init` wrote into the CA
        // certificate); AWS-LC signs.
        let (key, public_key) = if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der)
                .map_err(|e| e.to_string())?;
            (LocalKey::Ecdsa(kp), spki_of(k.verifying_key())?)
        } else if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &der)
                .map_err(|e| e.to_string())?;
            (LocalKey::Ecdsa(kp), spki_of(k.verifying_key())?)
        } else if let Ok(k) = rsa::PrivateKey::from_pkcs8_pem(pem) {
            let kp = RsaKeyPair::from_pkcs8(&der).map_err(|e| e.to_string())?;
            (LocalKey::Rsa(kp), spki_of(&k.to_public_key())?)
        } else {
            return Err(not_a_key());
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
        self.sign_now(tbs)
    }

    fn in_process(&self) -> Option<&dyn InProcessSigner> {
        Some(self)
    }
}

impl InProcessSigner for LocalSigner {
    fn sign_now(&self, tbs: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let failed = |_| SignError::Fatal("the local key could not sign".into());
        match &self.key {
            // ASN.1 (DER) ECDSA signatures, with the curve's hash: what X.509 carries.
            LocalKey::Ecdsa(k) => Ok(k.sign(&rng, tbs).map_err(failed)?.as_ref().to_vec()),
            LocalKey::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, tbs, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
        }
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
