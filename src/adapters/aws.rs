//! Shared AWS plumbing: SDK configuration from the default chain (environment, profile, web
//! identity for GitHub OIDC) and classifying errors as retryable or needing a human.

use aws_config::BehaviorVersion;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::time::Duration;

/// How long a KMS call (a few kilobytes each way) may go without an answer: the SDK's defaults
/// wait forever once connected, and a stalled connection would hold the run (and, renewed
/// meanwhile, its lease) for good. The SDK counts sending the request in it, so S3, whose
/// state objects reach tens of megabytes, gets only the attempt's bound. A timeout is retryable.
pub const KMS_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Any one attempt of any call, as a backstop: generous enough for the state's largest object
/// (the index's base, 36 MB at 100,000 certificates) on a slow link.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(600);

/// Loads the SDK config (region, credentials, endpoint from AWS_ENDPOINT_URL*).
pub async fn sdk_config(region: Option<&str>) -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build();
    let mut l = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(r) = region {
        l = l.region(aws_config::Region::new(r.to_string()));
    }
    l.load().await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, dropped connections.
    Retryable,
    /// 412 / 409 on a conditional request: another writer won.
    Conflict,
    /// Missing resource (404 / NoSuchKey / NotFound).
    NotFound,
    /// Anything else: access denied, validation, disabled key... needs a human.
    Fatal,
}

pub fn classify<E: ProvideErrorMetadata + std::fmt::Debug, R>(e: &SdkError<E, R>) -> ErrorClass
where
    R: HasStatus,
{
    match e {
        // A dispatch failure may be a transient one the SDK cannot name (a keep-alive
        // connection closed under the request, a credentials provider's timeout): retried,
        // up to the caller's bound.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorClass::Retryable
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status_code();
            let code = se.err().code().unwrap_or_default();
            if matches!(status, 412 | 409)
                || code == "PreconditionFailed"
                || code == "ConditionalRequestConflict"
            {
                ErrorClass::Conflict
            } else if is_throttling(e) || status >= 500 || code == "KMSInternalException" {
                ErrorClass::Retryable
            } else if status == 404
                || code == "NoSuchKey"
                || code == "NotFound"
                || code == "NotFoundException"
            {
                ErrorClass::NotFound
            } else {
                ErrorClass::Fatal
            }
        }
        _ => ErrorClass::Fatal,
    }
}

/// The service asked the client to slow down (as opposed to failing).
pub fn is_throttling<E: ProvideErrorMetadata + std::fmt::Debug, R>(e: &SdkError<E, R>) -> bool
where
    R: HasStatus,
{
    match e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or_default();
            se.raw().status_code() == 429
                || code.contains("Throttl")
                || code == "SlowDown"
                || code == "RequestLimitExceeded"
        }
        _ => false,
    }
}

/// A short, human message for an SDK error: code and message, not the whole debug dump.
pub fn describe<E: ProvideErrorMetadata + std::fmt::Debug, R>(e: &SdkError<E, R>) -> String {
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("error"),
                err.message().unwrap_or("no message")
            )
        }
        SdkError::DispatchFailure(d) if d.is_timeout() => format!("timed out: {d:?}"),
        SdkError::DispatchFailure(d) if d.is_io() => format!("cannot reach the endpoint: {d:?}"),
        SdkError::DispatchFailure(d) => format!("the request could not be sent: {d:?}"),
        SdkError::TimeoutError(_) => "request timed out".to_string(),
        SdkError::ConstructionFailure(_) => "the request could not be built".to_string(),
        _ => "unexpected response".to_string(),
    }
}

/// The raw response's status code, for classification.
pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^attempt)].
pub fn backoff(attempt: u32) -> std::time::Duration {
    let base_ms: u64 = 50;
    let cap_ms: u64 = 5_000;
    let ceiling = base_ms.saturating_mul(1u64 << attempt.min(16)).min(cap_ms);
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    std::time::Duration::from_millis(u64::from_le_bytes(b) % (ceiling + 1))
}
