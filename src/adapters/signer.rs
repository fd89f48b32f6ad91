//! The CA key behind a small async trait: it signs to-be-signed bytes and tells its public key.
//! The local signer holds a software key on disk (embedded defaults); KMS plugs in here too.

use crate::domain::csr::{KeyKind, SignatureVerifier, VerifyError};
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
    let verifier = verifier_of(s, 1).map_err(SignError::Fatal)?;
    sign_checked(s, &verifier, tbs).await
}

/// From this many signatures on, the key's tables (about 1.5 ms to make) save more than they
/// cost: each check saves about 24 microseconds.
const TABLES_FROM: usize = 64;

/// Checks the signer's signatures: its key is parsed once, however many it signs. A run that
/// signs in rounds makes it once for all of them ([`sign_all_with`]).
pub fn verifier_of(s: &dyn Signer, signatures: usize) -> Result<SignatureVerifier, String> {
    let (key, alg) = (s.public_key(), &s.algorithm());
    if signatures >= TABLES_FROM {
        SignatureVerifier::for_many(key, alg)
    } else {
        SignatureVerifier::new(key, alg)
    }
    .map_err(|e| format!("the signer's public key: {e}"))
}

async fn sign_checked(
    s: &dyn Signer,
    verifier: &SignatureVerifier,
    tbs: &[u8],
) -> Result<Vec<u8>, SignError> {
    let sig = s.sign(tbs).await?;
    check(verifier, tbs, &sig)?;
    Ok(sig)
}

fn check(verifier: &SignatureVerifier, tbs: &[u8], sig: &[u8]) -> Result<(), SignError> {
    trusted(verifier.verify(tbs, sig))
}

/// A signature that does not verify, or a check that cannot be trusted, stops the run.
fn trusted(checked: Result<(), VerifyError>) -> Result<(), SignError> {
    checked.map_err(|e| {
        SignError::Fatal(match e {
            VerifyError::DoesNotVerify => {
                format!("the signer returned a signature that does not verify: {e}")
            }
            VerifyError::Untrusted(why) => why,
        })
    })
}

/// Signatures of a local key checked by tables together, a rayon job: their `s` are inverted
/// at once ([`SignatureVerifier::verify_many`]), one inversion for 32 instead of one each.
const CHECKED_TOGETHER: usize = 32;

/// Signatures per rayon job of an in-process key. Without tables each check stands alone: a
/// job a signature. With them, up to [`CHECKED_TOGETHER`], and no fewer jobs than cores.
fn job_size(verifier: &SignatureVerifier, signatures: usize) -> usize {
    if !verifier.has_tables() {
        return 1;
    }
    let per_core = signatures.div_ceil(rayon::current_num_threads());
    CHECKED_TOGETHER.min(per_core).max(1)
}

/// Signs a job's TBS in process, then checks its signatures together; results in order, a
/// tick for each signature made and checked.
fn sign_job(
    local: &dyn InProcessSigner,
    verifier: &SignatureVerifier,
    job: &[&[u8]],
    tick: &(dyn Fn() + Sync),
) -> Vec<Result<Vec<u8>, SignError>> {
    let sigs: Vec<Result<Vec<u8>, SignError>> = job.iter().map(|t| local.sign_now(t)).collect();
    let signed: Vec<(&[u8], &[u8])> = (job.iter().zip(&sigs))
        .filter_map(|(t, sig)| Some((*t, sig.as_deref().ok()?)))
        .collect();
    let mut checks = verifier.verify_many(&signed).into_iter();
    (sigs.into_iter())
        .map(|sig| {
            let sig = sig?;
            trusted(checks.next().expect("a check for each signature"))?;
            tick();
            Ok(sig)
        })
        .collect()
}

/// Signs every TBS, each checked like [`sign_verified`], results in input order. An in-process
/// key signs on all cores (rayon); a remote signer gets every request at once and bounds how
/// many are in flight itself. `tick` is called once per signature made and checked (progress).
pub async fn sign_all(
    s: &dyn Signer,
    tbs: &[&[u8]],
    tick: &(dyn Fn() + Sync),
) -> Vec<Result<Vec<u8>, SignError>> {
    sign_all_with(s, &verifier_of(s, tbs.len()), tbs, tick).await
}

/// [`sign_all`], each signature checked by `verifier` (from [`verifier_of`] for this signer).
pub async fn sign_all_with(
    s: &dyn Signer,
    verifier: &Result<SignatureVerifier, String>,
    tbs: &[&[u8]],
    tick: &(dyn Fn() + Sync),
) -> Vec<Result<Vec<u8>, SignError>> {
    use rayon::prelude::*;
    let verifier = match verifier {
        Ok(v) => v,
        // Nothing is signed that could not be checked.
        Err(e) => {
            return tbs
                .iter()
                .map(|_| Err(SignError::Fatal(e.clone())))
                .collect();
        }
    };
    if verifier.has_tables() {
        tracing::debug!("the signatures are checked by tables of the CA key's multiples");
    }
    match s.in_process() {
        Some(local) => tbs
            .par_chunks(job_size(verifier, tbs.len()))
            .flat_map_iter(|job| sign_job(local, verifier, job, tick))
            .collect(),
        None => {
            futures::future::join_all(tbs.iter().map(|t| async move {
                let r = sign_checked(s, verifier, t).await;
                // As in process: progress counts signatures made and checked.
                if r.is_ok() {
                    tick();
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A real local key whose signatures of a TBS starting with `bad` come back with a bit
    /// flipped, as from a faulty signer, and which fails to sign one starting with `busy`;
    /// remote (driven concurrently) or in-process.
    struct Faulty {
        key: LocalSigner,
        public_key: SubjectPublicKeyInfoOwned,
        in_process: bool,
        signed: AtomicUsize,
    }

    impl Faulty {
        fn new(in_process: bool) -> Faulty {
            let (key, _) = LocalSigner::generate(KeyAlgorithm::P256).unwrap();
            let public_key = key.public_key().clone();
            Faulty {
                key,
                public_key,
                in_process,
                signed: AtomicUsize::new(0),
            }
        }
    }

    impl InProcessSigner for Faulty {
        fn sign_now(&self, tbs: &[u8]) -> Result<Vec<u8>, SignError> {
            self.signed.fetch_add(1, Ordering::SeqCst);
            if tbs.starts_with(b"busy") {
                return Err(SignError::Retryable("busy".into()));
            }
            let mut sig = self.key.sign_now(tbs)?;
            if tbs.starts_with(b"bad") {
                *sig.last_mut().unwrap() ^= 1;
            }
            Ok(sig)
        }
    }

    #[async_trait]
    impl Signer for Faulty {
        fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
            &self.public_key
        }
        fn algorithm(&self) -> AlgorithmIdentifierOwned {
            self.key.algorithm()
        }
        async fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, SignError> {
            self.sign_now(tbs)
        }
        fn in_process(&self) -> Option<&dyn InProcessSigner> {
            self.in_process.then_some(self as &dyn InProcessSigner)
        }
    }

    fn refused_as_bad(r: &Result<Vec<u8>, SignError>) -> bool {
        matches!(r, Err(SignError::Fatal(e)) if e.contains("does not verify"))
    }

    #[tokio::test]
    async fn a_signature_that_does_not_verify_is_refused_in_process_and_remote() {
        for in_process in [true, false] {
            let s = Faulty::new(in_process);
            let tbs: [&[u8]; 3] = [b"good 1", b"bad", b"good 2"];
            let ticks = AtomicUsize::new(0);
            let out = sign_all(&s, &tbs, &|| {
                ticks.fetch_add(1, Ordering::SeqCst);
            })
            .await;
            assert!(out[0].is_ok() && out[2].is_ok(), "{in_process}: {out:?}");
            assert!(refused_as_bad(&out[1]), "{in_process}: {out:?}");
            assert!(refused_as_bad(&sign_verified(&s, b"bad").await));
            assert!(sign_verified(&s, b"good").await.is_ok());
        }
    }

    /// Enough signatures for the CA key's tables, so that in process they are checked in jobs
    /// whose `s` are inverted together: bad signatures and failures to sign at the edges of
    /// jobs answer for their own TBS only, in order.
    #[tokio::test]
    async fn many_signatures_each_answer_for_their_own_tbs_however_they_are_grouped() {
        for in_process in [true, false] {
            let s = Faulty::new(in_process);
            let texts: Vec<Vec<u8>> = (0..100)
                .map(|i| match i {
                    0 | 31 | 32 | 63 | 64 | 99 => format!("bad {i}"),
                    1 | 30 | 33 | 62 | 65 | 98 => format!("busy {i}"),
                    _ => format!("good {i}"),
                })
                .map(String::into_bytes)
                .collect();
            let tbs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
            let verifier = verifier_of(&s, tbs.len());
            assert!(verifier.as_ref().unwrap().has_tables());
            let ticks = AtomicUsize::new(0);
            let out = sign_all_with(&s, &verifier, &tbs, &|| {
                ticks.fetch_add(1, Ordering::SeqCst);
            })
            .await;
            assert_eq!(out.len(), tbs.len());
            let alone = SignatureVerifier::new(s.public_key(), &s.algorithm()).unwrap();
            for (t, r) in tbs.iter().zip(&out) {
                match r {
                    Ok(sig) => {
                        assert!(t.starts_with(b"good"), "{in_process}: {r:?}");
                        assert!(alone.verify(t, sig).is_ok(), "a signature of its own TBS");
                    }
                    Err(SignError::Retryable(e)) => assert!(t.starts_with(b"busy"), "{e}"),
                    Err(SignError::Fatal(_)) => {
                        assert!(t.starts_with(b"bad") && refused_as_bad(r), "{r:?}")
                    }
                }
            }
            // A tick per signature made and checked, in process and remote.
            assert_eq!(ticks.load(Ordering::SeqCst), 88, "{in_process}");
        }
    }

    #[tokio::test]
    async fn a_signer_whose_key_does_not_parse_signs_nothing() {
        for in_process in [true, false] {
            let mut s = Faulty::new(in_process);
            // The uncompressed point's last byte of Y: off the curve.
            let mut point = s.public_key.subject_public_key.raw_bytes().to_vec();
            *point.last_mut().unwrap() ^= 1;
            s.public_key.subject_public_key = der::asn1::BitString::from_bytes(&point).unwrap();
            let out = sign_all(&s, &[b"a", b"b"], &|| {}).await;
            assert!(
                out.iter().all(
                    |r| matches!(r, Err(SignError::Fatal(e)) if e.contains("signer's public key"))
                ),
                "{in_process}: {out:?}"
            );
            assert!(sign_verified(&s, b"a").await.is_err());
            assert_eq!(s.signed.load(Ordering::SeqCst), 0, "nothing signed");
        }
    }
}
