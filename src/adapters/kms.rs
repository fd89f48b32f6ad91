//! The CA key in AWS KMS. gitca sends to-be-signed bytes (or their digest) and gets a signature;
//! the private key never leaves KMS. Every signature is verified locally before use
//! (`signer::sign_verified`).

use super::aws::{ErrorClass, backoff, classify, describe, is_throttling};
use super::pace::Pace;
use super::signer::{SignError, Signer, SignerStats, algorithm_for};
use crate::domain::csr::KeyKind;
use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use der::Decode;
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;

/// KMS accepts RAW messages up to this size; larger ones (big CRLs) are sent as a digest.
pub const MAX_RAW_MESSAGE: usize = 4096;

pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key: String,
    public_key: SubjectPublicKeyInfoOwned,
    kind: KeyKind,
    in_flight: Semaphore,
    /// The send rate all signatures in flight share once KMS throttles.
    pace: Pace,
    max_retries: u32,
    calls: AtomicU64,
    retries: AtomicU64,
}

impl std::fmt::Debug for KmsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSigner")
            .field("key", &self.key)
            .field("kind", &self.kind)
            .finish()
    }
}

fn spec_for(kind: KeyKind) -> Result<SigningAlgorithmSpec, String> {
    Ok(match kind {
        KeyKind::P256 => SigningAlgorithmSpec::EcdsaSha256,
        KeyKind::P384 => SigningAlgorithmSpec::EcdsaSha384,
        KeyKind::P521 => SigningAlgorithmSpec::EcdsaSha512,
        KeyKind::Rsa { .. } => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
        KeyKind::Ed25519 => return Err("Ed25519 KMS keys are not supported as CA keys".into()),
    })
}

impl KmsSigner {
    /// Fetches the key's public key. The algorithm comes from the SPKI, not from KeySpec (some
    /// KMS implementations only return the deprecated CustomerMasterKeySpec).
    pub async fn open(
        client: aws_sdk_kms::Client,
        key: &str,
        max_in_flight: usize,
        max_retries: u32,
    ) -> Result<KmsSigner, String> {
        // Retried as a signature is (throttling, 5xx, a timeout): AWS counts GetPublicKey in
        // the key's request quota, which another apply's signing may be using up.
        let mut attempt = 0;
        let out = loop {
            match client.get_public_key().key_id(key).send().await {
                Ok(out) => break out,
                Err(e) if classify(&e) == ErrorClass::Retryable && attempt < max_retries => {
                    tracing::info!(key, attempt, "GetPublicKey: {}; retrying", describe(&e));
                    tokio::time::sleep(super::aws::backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    let what = match classify(&e) {
                        ErrorClass::NotFound => "does not exist".to_string(),
                        _ => describe(&e),
                    };
                    return Err(format!("KMS key {key}: {what}"));
                }
            }
        };
        let der = out
            .public_key()
            .ok_or_else(|| format!("KMS key {key}: no public key returned"))?;
        let public_key = SubjectPublicKeyInfoOwned::from_der(der.as_ref())
            .map_err(|e| format!("KMS key {key}: public key does not decode: {e}"))?;
        let kind = KeyKind::of(&public_key).map_err(|e| format!("KMS key {key}: {e}"))?;
        if let KeyKind::Rsa { bits } = kind
            && bits < 2048
        {
            return Err(format!("KMS key {key}: RSA-{bits} is too weak for a CA"));
        }
        spec_for(kind)?;
        Ok(KmsSigner {
            client,
            key: key.to_string(),
            public_key,
            kind,
            in_flight: Semaphore::new(max_in_flight.max(1)),
            pace: Pace::default(),
            max_retries,
            calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    fn digest(&self, msg: &[u8]) -> Vec<u8> {
        match self.kind {
            KeyKind::P384 => Sha384::digest(msg).to_vec(),
            KeyKind::P521 => Sha512::digest(msg).to_vec(),
            _ => Sha256::digest(msg).to_vec(),
        }
    }
}

#[async_trait]
impl Signer for KmsSigner {
    fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.public_key
    }

    fn algorithm(&self) -> AlgorithmIdentifierOwned {
        algorithm_for(self.kind).expect("checked in open")
    }

    async fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, SignError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|e| SignError::Fatal(e.to_string()))?;
        let (message, message_type) = if tbs.len() <= MAX_RAW_MESSAGE {
            (tbs.to_vec(), MessageType::Raw)
        } else {
            (self.digest(tbs), MessageType::Digest)
        };
        let spec = spec_for(self.kind).map_err(SignError::Fatal)?;
        let mut attempt = 0;
        loop {
            while let Err(wait) = self.pace.try_send(std::time::Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            let r = self
                .client
                .sign()
                .key_id(&self.key)
                .message(Blob::new(message.clone()))
                .message_type(message_type.clone())
                .signing_algorithm(spec.clone())
                .send()
                .await;
            match r {
                Ok(out) => {
                    self.pace.success(std::time::Instant::now());
                    return out.signature().map(|b| b.as_ref().to_vec()).ok_or_else(|| {
                        SignError::Fatal(format!("KMS key {}: no signature returned", self.key))
                    });
                }
                Err(e) if classify(&e) == ErrorClass::Retryable && attempt < self.max_retries => {
                    attempt += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    if is_throttling(&e) {
                        // The shared pace slows down; the loop above waits for it.
                        self.pace.throttled(std::time::Instant::now());
                        tracing::debug!(key = %self.key, attempt, rate = ?self.pace.rate(), "KMS Sign throttled; pacing");
                    } else {
                        tracing::debug!(key = %self.key, attempt, error = %describe(&e), "KMS Sign failed; backing off");
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                }
                Err(e) if classify(&e) == ErrorClass::Retryable => {
                    return Err(SignError::Retryable(format!(
                        "KMS key {}: {} (after {attempt} retries)",
                        self.key,
                        describe(&e)
                    )));
                }
                Err(e) => {
                    return Err(SignError::Fatal(format!(
                        "KMS key {}: {}",
                        self.key,
                        describe(&e)
                    )));
                }
            }
        }
    }

    fn stats(&self) -> SignerStats {
        SignerStats {
            calls: self.calls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// A KMS client with the SDK's own retries off: gitca retries Sign itself and counts it.
pub async fn client(region: Option<&str>) -> aws_sdk_kms::Client {
    let conf = super::aws::sdk_config(region).await;
    // The shared timeouts, and one for the answer (see KMS_READ_TIMEOUT).
    let timeouts = (conf.timeout_config().map(|t| t.to_builder()))
        .unwrap_or_else(aws_config::timeout::TimeoutConfig::builder)
        .read_timeout(super::aws::KMS_READ_TIMEOUT)
        .build();
    let kms = aws_sdk_kms::config::Builder::from(&conf)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(timeouts)
        .build();
    aws_sdk_kms::Client::from_conf(kms)
}
