//! One apply at a time per CA: a lease object created only if absent (the Terraform S3-backend
//! model). A lease past its expiry may be taken over by compare-and-swap, so the holder renews
//! it while it runs ([`Held`]) and checks it before each write that assumes no other apply
//! runs ([`LeaseGuard::check`]): a run longer than the lease's time to live keeps it, and a run
//! that lost it stops instead of issuing beside the apply that took it over.

use super::RunError;
use crate::adapters::state_store::{StateStore, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

pub const LEASE_KEY: &str = "lease.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseBody {
    pub holder: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

#[derive(Debug, Clone)]
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
        let mut held_by = String::from("another apply");
        if let Some((version, old)) = stored(store).await.map_err(|e| e.to_string())? {
            // A retried create whose first attempt landed reads back as taken: it is ours.
            if let Some(o) = old.as_ref().filter(|o| o.holder == holder) {
                return Ok(Lease {
                    version,
                    body: o.clone(),
                });
            }
            // An unreadable lease is treated as expired: it cannot be held by anyone alive.
            let expired = old
                .as_ref()
                .is_none_or(|o| o.expires <= OffsetDateTime::now_utc());
            if let Some(o) = &old {
                held_by = format!("{} (expires {})", o.holder, o.expires);
            }
            if expired {
                match store.put_if(LEASE_KEY, &bytes, &version).await {
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

/// A lease being held: renewed every third of its time to live until released.
pub struct Held {
    guard: LeaseGuard,
    /// Ends the renewals between two of them, never during one (see [`Held::release`]).
    stop: Arc<tokio::sync::Notify>,
    renewing: Option<tokio::task::JoinHandle<()>>,
}

/// What the writes of a run check: whether its lease is still its own, with time left.
#[derive(Clone)]
pub struct LeaseGuard(Arc<Mutex<Holding>>);

struct Holding {
    lease: Lease,
    ttl: Duration,
    /// Why the lease is no longer this run's, once a renewal found another holder.
    lost: Option<String>,
}

impl Held {
    /// Keeps `lease` (taken with time to live `ttl`) renewed on the runtime until released.
    pub fn keep(store: Arc<dyn StateStore>, lease: Lease, ttl: Duration) -> Held {
        let guard = LeaseGuard(Arc::new(Mutex::new(Holding {
            lease,
            ttl,
            lost: None,
        })));
        let stop = Arc::new(tokio::sync::Notify::new());
        let renewing = tokio::spawn(renew(store, guard.clone(), stop.clone()));
        Held {
            guard,
            stop,
            renewing: Some(renewing),
        }
    }

    pub fn guard(&self) -> &LeaseGuard {
        &self.guard
    }

    /// Stops renewing and deletes the lease, unless another apply holds it now. A renewal
    /// under way ends first: cut off, its write could still land after the delete was tried
    /// with the version before it, and leave the lease behind for a whole time to live.
    pub async fn release(mut self, store: &dyn StateStore) {
        self.stop.notify_one();
        if let Some(renewing) = self.renewing.take() {
            let _ = renewing.await;
        }
        let (version, expires) = {
            let holding = self.guard.0.lock().expect("not poisoned");
            if holding.lost.is_some() {
                return;
            }
            (holding.lease.version.clone(), holding.lease.body.expires)
        };
        if let Err(e) = store.delete_if(LEASE_KEY, &version).await {
            tracing::warn!(error = %e, "could not release the apply lease; it expires at {expires}");
        }
    }
}

impl Drop for Held {
    /// Dropped unreleased (the run's future dropped), the lease is no longer renewed: it
    /// expires instead of being held for ever.
    fn drop(&mut self) {
        if let Some(renewing) = &self.renewing {
            renewing.abort();
        }
    }
}

impl LeaseGuard {
    /// Ok while the lease is this run's with at least a third of its time to live left (a
    /// renewal is due every third: less left means renewals are failing, and another apply
    /// could take it over before the write ends). `before` names the write, for the error,
    /// which is retryable: the next apply takes the lease and completes what this one began.
    pub fn check(&self, before: &str) -> Result<(), RunError> {
        let holding = self.0.lock().expect("not poisoned");
        if let Some(why) = &holding.lost {
            return Err(RunError::Retryable(format!(
                "the apply lease was lost ({why}); stopped before {before}"
            )));
        }
        let left = holding.lease.body.expires - OffsetDateTime::now_utc();
        if left < holding.ttl / 3 {
            return Err(RunError::Retryable(format!(
                "the apply lease could not be renewed and expires at {}; stopped before {before}",
                holding.lease.body.expires
            )));
        }
        Ok(())
    }
}

/// The lease stored now, if any: its version, and its body (None if unreadable).
async fn stored(store: &dyn StateStore) -> Result<Option<(String, Option<LeaseBody>)>, StoreError> {
    let current = store.get(LEASE_KEY).await?;
    Ok(current.map(|v| (v.version, serde_json::from_slice(&v.bytes).ok())))
}

/// What one renewal came to.
enum Renewal {
    Renewed(Lease),
    /// Another holder has it, or nobody: why.
    Lost(String),
    /// The store failed; to be tried again.
    Failed(String),
}

/// Renews `lease` for another `ttl`, by compare-and-swap. A write whose answer was lost may
/// have landed, this one or one before it: the lease read back is still ours if it names this
/// run as its holder.
async fn renew_once(store: &dyn StateStore, lease: &Lease, ttl: Duration) -> Renewal {
    let body = LeaseBody {
        holder: lease.body.holder.clone(),
        expires: OffsetDateTime::now_utc() + ttl,
    };
    let bytes = match serde_json::to_vec(&body) {
        Ok(bytes) => bytes,
        Err(e) => return Renewal::Failed(e.to_string()),
    };
    match store.put_if(LEASE_KEY, &bytes, &lease.version).await {
        Ok(version) => Renewal::Renewed(Lease { version, body }),
        Err(StoreError::Conflict(_)) => match stored(store).await {
            Ok(Some((version, Some(b)))) if b.holder == body.holder => {
                Renewal::Renewed(Lease { version, body: b })
            }
            Ok(Some((_, Some(b)))) => Renewal::Lost(format!("now held by {}", b.holder)),
            Ok(_) => Renewal::Lost("deleted or unreadable".into()),
            Err(e) => Renewal::Failed(e.to_string()),
        },
        Err(e) => Renewal::Failed(e.to_string()),
    }
}

/// Renews the lease every third of its time to live until `stop`. A renewal that finds another
/// holder marks it lost and ends. One that fails otherwise is tried again soon (a twelfth of
/// the time to live, at most 10 s), so a single failed request does not run the lease down to
/// the third the checks refuse below.
async fn renew(store: Arc<dyn StateStore>, guard: LeaseGuard, stop: Arc<tokio::sync::Notify>) {
    let ttl = guard.0.lock().expect("not poisoned").ttl;
    let (every, soon) = (ttl / 3, (ttl / 12).min(Duration::from_secs(10)));
    let mut wait = every;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.notified() => return,
        }
        let lease = guard.0.lock().expect("not poisoned").lease.clone();
        match renew_once(store.as_ref(), &lease, ttl).await {
            Renewal::Renewed(lease) => {
                guard.0.lock().expect("not poisoned").lease = lease;
                wait = every;
            }
            Renewal::Failed(e) => {
                tracing::warn!(error = %e, "could not renew the apply lease");
                wait = soon;
            }
            Renewal::Lost(why) => {
                tracing::warn!("the apply lease was lost: {why}");
                guard.0.lock().expect("not poisoned").lost = Some(why);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::state_store::DirStore;

    /// Defect `lease-outlived`: the lease was taken for its time to live and never renewed, so
    /// an apply running longer (a large issuance on a throttled KMS) lost it to the next one,
    /// which then issued the same requests. Held now, it is renewed; lost, the writes stop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_lease_is_renewed_and_a_lost_one_stops_the_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(DirStore::open(dir.path()).unwrap());
        let ttl = Duration::from_secs(3);
        let taken = acquire(store.as_ref(), ttl, Duration::ZERO).await.unwrap();
        let held = Held::keep(store.clone(), taken, ttl);
        // Two lifetimes on, it is still this run's: renewed, and nobody else can take it.
        tokio::time::sleep(ttl * 2).await;
        held.guard().check("a write").unwrap();
        let other = acquire(store.as_ref(), ttl, Duration::ZERO).await;
        assert!(
            other.unwrap_err().contains("another apply holds the lease"),
            "a renewed lease is not taken over"
        );
        // Taken over behind its back, as after renewals failed for a whole lifetime: the next
        // renewal finds another holder, and every write from then on is refused.
        let thief = LeaseBody {
            holder: "thief".into(),
            expires: OffsetDateTime::now_utc() + ttl * 10,
        };
        let thief = serde_json::to_vec(&thief).unwrap();
        loop {
            let cur = store.get(LEASE_KEY).await.unwrap().unwrap();
            match store.put_if(LEASE_KEY, &thief, &cur.version).await {
                Ok(_) => break,
                // A renewal came between the read and the write.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => panic!("{e}"),
            }
        }
        tokio::time::sleep(ttl).await;
        let err = held.guard().check("the intents").unwrap_err().to_string();
        assert!(
            err.contains("lost")
                && err.contains("thief")
                && err.contains("the intents")
                && err.ends_with("(retryable)"),
            "{err}"
        );
        // Released, it leaves the new holder's lease alone.
        held.release(store.as_ref()).await;
        assert_eq!(store.get(LEASE_KEY).await.unwrap().unwrap().bytes, thief);
    }

    /// A lease whose renewals fail is refused to the writes once less than a third of its
    /// time to live is left: another apply may take it over as it ends.
    #[tokio::test]
    async fn a_lease_near_its_end_is_refused_to_the_writes() {
        let guard = LeaseGuard(Arc::new(Mutex::new(Holding {
            lease: Lease {
                version: "v".into(),
                body: LeaseBody {
                    holder: "me".into(),
                    expires: OffsetDateTime::now_utc() + Duration::from_secs(100),
                },
            },
            ttl: Duration::from_secs(600),
            lost: None,
        })));
        let err = guard
            .check("the state index write")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("could not be renewed") && err.contains("the state index write"),
            "{err}"
        );
        guard.0.lock().unwrap().lease.body.expires =
            OffsetDateTime::now_utc() + Duration::from_secs(300);
        guard.check("the state index write").unwrap();
    }
}
