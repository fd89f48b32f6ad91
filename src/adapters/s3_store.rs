//! The issued state in S3. Create-only writes use `If-None-Match: *`, compare-and-swap uses
//! `If-Match: <etag>`; S3 answers 412 when another writer won, which is a `Conflict`.

use super::aws::{ErrorClass, classify, describe};
use super::state_store::{StateStore, StoreError, Versioned};
use crate::domain::config::S3Location;
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;

pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    sse_kms_key_id: Option<String>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Store(s3://{}/{})", self.bucket, self.prefix)
    }
}

pub async fn client(loc: &S3Location) -> aws_sdk_s3::Client {
    let conf = super::aws::sdk_config(loc.region.as_deref()).await;
    let mut b = aws_sdk_s3::config::Builder::from(&conf).force_path_style(loc.force_path_style);
    if let Some(e) = &loc.endpoint {
        b = b.endpoint_url(e);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

/// Normalises a prefix to "" or "a/b/".
pub fn normalise_prefix(p: &str) -> String {
    let t = p.trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("{t}/")
    }
}

impl S3Store {
    pub async fn open(loc: &S3Location) -> Result<S3Store, String> {
        S3Store::with_client(client(loc).await, loc).await
    }

    /// Opens the store with a given client (checking the bucket is reachable first).
    pub async fn with_client(
        client: aws_sdk_s3::Client,
        loc: &S3Location,
    ) -> Result<S3Store, String> {
        let s = S3Store {
            client,
            bucket: loc.bucket.clone(),
            prefix: normalise_prefix(&loc.prefix),
            sse_kms_key_id: loc.sse_kms_key_id.clone(),
        };
        // Fail early and clearly on a missing bucket or denied access, before any work.
        s.client
            .list_objects_v2()
            .bucket(&s.bucket)
            .prefix(&s.prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| format!("state store {}: {}", s.describe(), s.explain(&describe(&e))))?;
        Ok(s)
    }

    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }

    fn explain(&self, msg: &str) -> String {
        if msg.starts_with("NoSuchBucket") {
            format!("bucket {} does not exist ({msg})", self.bucket)
        } else if msg.starts_with("AccessDenied")
            || msg.starts_with("InvalidAccessKeyId")
            || msg.starts_with("SignatureDoesNotMatch")
        {
            format!(
                "access denied to s3://{}/{} ({msg})",
                self.bucket, self.prefix
            )
        } else {
            msg.to_string()
        }
    }

    fn err<E, R>(
        &self,
        key: &str,
        e: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
    ) -> StoreError
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::fmt::Debug,
        R: super::aws::HasStatus,
    {
        let msg = format!(
            "s3://{}/{}: {}",
            self.bucket,
            self.key(key),
            self.explain(&describe(e))
        );
        match classify(e) {
            ErrorClass::Conflict => StoreError::Conflict(key.to_string()),
            ErrorClass::Retryable => StoreError::Retryable(msg),
            _ => StoreError::Fatal(msg),
        }
    }

    fn put(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        let mut p = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .content_type(if key.ends_with(".json") {
                "application/json"
            } else {
                "application/octet-stream"
            })
            .body(ByteStream::from(bytes.to_vec()));
        if let Some(k) = &self.sse_kms_key_id {
            p = p
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(k);
        }
        p
    }
}

/// The object's version for conditional writes. A store that answers without an ETag cannot
/// do them (an empty `If-Match` guards nothing): refused, not taken as an empty version.
fn etag(key: &str, e: Option<&str>) -> Result<String, StoreError> {
    match e {
        Some(e) if !e.is_empty() => Ok(e.to_string()),
        _ => Err(StoreError::Fatal(format!(
            "{key}: the store answered without an ETag; gitca's compare-and-swap writes need one \
             (an S3-compatible store without ETags or conditional writes cannot hold gitca's state)"
        ))),
    }
}

/// Requests in flight for batches of small objects (intents, records).
const S3_CONCURRENCY: usize = 32;

/// Runs `call` on every item, `S3_CONCURRENCY` requests at a time; results in input order.
async fn in_flight<'a, T, R, F>(items: &'a [T], call: impl Fn(&'a T) -> F) -> Vec<R>
where
    F: std::future::Future<Output = R>,
{
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(S3_CONCURRENCY) {
        out.extend(futures::future::join_all(chunk.iter().map(&call)).await);
    }
    out
}

#[async_trait]
impl StateStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(out) => {
                let version = etag(key, out.e_tag())?;
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| {
                        StoreError::Retryable(format!("{key}: reading the body failed: {e}"))
                    })?
                    .into_bytes()
                    .to_vec();
                Ok(Some(Versioned { bytes, version }))
            }
            Err(e) if classify(&e) == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(self.err(key, &e)),
        }
    }

    async fn version(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(etag(key, out.e_tag())?)),
            Err(e) if classify(&e) == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(self.err(key, &e)),
        }
    }

    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<String, StoreError> {
        match self.put(key, bytes).if_none_match("*").send().await {
            Ok(out) => etag(key, out.e_tag()),
            Err(e) => Err(self.err(key, &e)),
        }
    }

    async fn get_many(&self, keys: &[String]) -> Vec<Result<Option<Versioned>, StoreError>> {
        in_flight(keys, |k| self.get(k)).await
    }

    async fn delete_many(&self, items: &[(String, String)]) -> Vec<Result<(), StoreError>> {
        in_flight(items, |(k, v)| self.delete_if(k, v)).await
    }

    async fn put_if(&self, key: &str, bytes: &[u8], expected: &str) -> Result<String, StoreError> {
        match self.put(key, bytes).if_match(expected).send().await {
            Ok(out) => etag(key, out.e_tag()),
            // If-Match on a missing object: the expected version is gone, another writer won.
            Err(e) if classify(&e) == ErrorClass::NotFound => {
                Err(StoreError::Conflict(key.to_string()))
            }
            Err(e) => Err(self.err(key, &e)),
        }
    }

    async fn delete_if(&self, key: &str, expected: &str) -> Result<(), StoreError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .if_match(expected)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if classify(&e) == ErrorClass::NotFound => Ok(()),
            Err(e) => Err(self.err(key, &e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full = format!("{}{}/", self.prefix, prefix.trim_end_matches('/'));
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err(prefix, &e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    // Once: a key may begin with the prefix twice (a state prefix `intents/`).
                    out.push(
                        k.strip_prefix(self.prefix.as_str())
                            .unwrap_or(k)
                            .to_string(),
                    );
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by review: a response without an ETag was taken as the version "", and an
    /// `If-Match` on it guards nothing.
    #[test]
    fn a_response_without_an_etag_is_refused() {
        assert_eq!(etag("index.json", Some("\"abc\"")).unwrap(), "\"abc\"");
        for missing in [None, Some("")] {
            match etag("index.json", missing) {
                Err(StoreError::Fatal(m)) => assert!(m.contains("index.json"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
