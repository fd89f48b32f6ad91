//! One apply at a time per CA: a lease object created only if absent (the Terraform S3-backend
//! model). A lease past its expiry may be taken over by compare-and-swap.

use crate::adapters::state_store::{StateStore, StoreError};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::OffsetDateTime;

pub const LEASE_KEY: &str = "lease.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseBody {
    pub holder: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

#[derive(Debug)]
pub struct Lease {
    version: String,
    pub body: LeaseBody,
}

pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    format!(
        "{}:{}:{}",
        host.trim(),
        std::process::id(),
        base16ct::lower::encode_string(&r)
    )
}

/// Takes the lease, waiting up to `wait` for a live holder to finish.
pub async fn acquire(
    store: &dyn StateStore,
    ttl: Duration,
    wait: Duration,
) -> Result<Lease, String> {
    let deadline = std::time::Instant::now() + wait;
    let holder = holder_id();
    let mut delay = Duration::from_millis(100);
    loop {
        let body = LeaseBody {
            holder: holder.clone(),
            expires: OffsetDateTime::now_utc() + ttl,
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        match store.put_new(LEASE_KEY, &bytes).await {
            Ok(version) => return Ok(Lease { version, body }),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        let current = store.get(LEASE_KEY).await.map_err(|e| e.to_string())?;
        let mut held_by = String::from("another apply");
        if let Some(cur) = current {
            let old: Option<LeaseBody> = serde_json::from_slice(&cur.bytes).ok();
            // An unreadable lease is treated as expired: it cannot be held by anyone alive.
            let expired = old
                .as_ref()
                .is_none_or(|o| o.expires <= OffsetDateTime::now_utc());
            if let Some(o) = &old {
                held_by = format!("{} (expires {})", o.holder, o.expires);
            }
            if expired {
                match store.put_if(LEASE_KEY, &bytes, &cur.version).await {
                    Ok(version) => {
                        tracing::warn!(previous = %held_by, "took over an expired apply lease");
                        return Ok(Lease { version, body });
                    }
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "another apply holds the lease on {}: {held_by}; try again later",
                store.describe()
            ));
        }
        tracing::info!(holder = %held_by, "waiting for another apply to finish");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

pub async fn release(store: &dyn StateStore, lease: Lease) {
    if let Err(e) = store.delete_if(LEASE_KEY, &lease.version).await {
        tracing::warn!(error = %e, "could not release the apply lease; it expires at {}", lease.body.expires);
    }
}
