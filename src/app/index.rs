//! Reading and updating the state index by compare-and-swap: a lost race re-reads the index and
//! re-applies the change to the fresh state, never overwriting another writer's work.

use super::RunError;
use crate::adapters::state_store::{StateStore, StoreError};
use crate::domain::state::{INDEX_KEY, Index};
use std::sync::Arc;

/// The index, or a fresh one for a new CA, with its certificates from its base if it names
/// one. A state of another CA key is refused.
pub async fn read(
    store: &dyn StateStore,
    ca_key_id: &str,
) -> Result<(Index, Option<String>), String> {
    let mut attempts = 0;
    loop {
        let Some(v) = store.get(INDEX_KEY).await.map_err(|e| e.to_string())? else {
            return Ok((Index::new(ca_key_id.to_string()), None));
        };
        let mut idx = parse(store, INDEX_KEY, &v.bytes, ca_key_id)?;
        let Some(key) = idx.base.clone() else {
            return Ok((idx, Some(v.version)));
        };
        if !is_base_key(&key) {
            return Err(format!(
                "{}: {INDEX_KEY} names {key:?} as its base, which is not a base's key",
                store.describe()
            ));
        }
        match store.get_bytes(&key).await.map_err(|e| e.to_string())? {
            Some(bytes) => {
                idx.merge_base(parse(store, &key, &bytes, ca_key_id)?)
                    .map_err(|e| format!("{}: {key}: {e}", store.describe()))?;
                return Ok((idx, Some(v.version)));
            }
            // A writer replaced the base since the index was read, and deleted the old one.
            None if attempts < MAX_RACES => {
                attempts += 1;
                tracing::info!("the index's base {key} was replaced; reading the index again");
            }
            None => {
                return Err(format!(
                    "{}: {INDEX_KEY} names its base {key}, which is missing",
                    store.describe()
                ));
            }
        }
    }
}

fn parse(
    store: &dyn StateStore,
    key: &str,
    bytes: &[u8],
    ca_key_id: &str,
) -> Result<Index, String> {
    let idx: Index = serde_json::from_slice(bytes)
        .map_err(|e| format!("{}: {key} is corrupt: {e}", store.describe()))?;
    if idx.ca_key_id != ca_key_id {
        return Err(format!(
            "the state at {} belongs to another CA key; refusing to mix states",
            store.describe()
        ));
    }
    Ok(idx)
}

/// How a compare-and-swap write of the index ended.
enum Put {
    Written(String),
    /// Another writer moved the index first, or so the store says (see
    /// [`IndexHandle::after_lost_race`]).
    Lost(Lost),
}

/// A write reported lost.
#[derive(Default)]
struct Lost {
    /// The base the write had written first (key, version), if it wrote one.
    new_base: Option<(String, String)>,
    /// The base the index named before the write.
    old_base: Option<String>,
}

/// Writes `index` by compare-and-swap on `version`, first moving its certificates to a new base
/// when it stores too many itself.
async fn put_index(
    store: &dyn StateStore,
    version: &str,
    index: &mut Index,
) -> Result<Put, RunError> {
    let old_base = index.base.clone();
    let mut new_base = None;
    if index.wants_base() {
        let bytes = index.base_json().map_err(|e| e.to_string())?;
        // Named at random, never by content: no later index can name a base deleted as old.
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| format!("OS random source failed: {e}"))?;
        let key = format!("{BASE_PREFIX}{}.json", base16ct::lower::encode_string(&id));
        let base_version = match store.put_new(&key, &bytes).await {
            Ok(v) => v,
            // Under a random name, only this write's own earlier attempt (a retried PUT).
            Err(StoreError::Conflict(_)) => store.version(&key).await?.unwrap_or_default(),
            Err(e) => return Err(e.into()),
        };
        index.rebased(key.clone());
        new_base = Some((key, base_version));
    }
    let bytes = index.to_json().map_err(|e| e.to_string())?;
    match store.put_if(INDEX_KEY, &bytes, version).await {
        Ok(v) => {
            // Named by no index any more: a writer that read the one naming it loses its race.
            if let (Some(_), Some(old)) = (new_base, old_base) {
                delete_base(store, &old, None).await;
            }
            Ok(Put::Written(v))
        }
        Err(StoreError::Conflict(_)) => Ok(Put::Lost(Lost { new_base, old_base })),
        // Perhaps written even so (a timeout): the new base stays, as the index may name it.
        Err(e) => Err(e.into()),
    }
}

/// Deletes a base no index names; a failure only leaves the object behind.
async fn delete_base(store: &dyn StateStore, key: &str, version: Option<String>) {
    let version = match version {
        Some(v) => Ok(Some(v)),
        None => store.version(key).await,
    };
    let deleted = match version {
        Ok(Some(v)) => store.delete_if(key, &v).await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = deleted {
        tracing::warn!("the index base {key}, named by no index, was not deleted: {e}");
    }
}

/// Where bases are stored (see [`Index::base`]).
pub const BASE_PREFIX: &str = "index-base/";

/// Bases are named `index-base/<32 hex digits>.json`: an index naming another object (a
/// hand-edited one) is refused, as gitca deletes a base once it is replaced.
fn is_base_key(key: &str) -> bool {
    key.strip_prefix(BASE_PREFIX)
        .and_then(|k| k.strip_suffix(".json"))
        .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The index with the version it was read at.
pub struct IndexHandle {
    pub index: Index,
    version: String,
    store: Arc<dyn StateStore>,
    ca_key_id: String,
    /// How many compare-and-swap writes lost a race and were redone.
    pub conflicts: usize,
}

impl IndexHandle {
    /// Reads the index, creating it (create-only) for a new CA.
    pub async fn open(
        store: Arc<dyn StateStore>,
        ca_key_id: String,
    ) -> Result<IndexHandle, RunError> {
        IndexHandle::open_from(store, ca_key_id, None).await
    }

    /// Like `open`, starting from an index already read (with its version).
    pub async fn open_from(
        store: Arc<dyn StateStore>,
        ca_key_id: String,
        mut read_already: Option<(Index, Option<String>)>,
    ) -> Result<IndexHandle, RunError> {
        loop {
            let (index, version) = match read_already.take() {
                Some(r) if r.0.ca_key_id == ca_key_id => r,
                _ => read(store.as_ref(), &ca_key_id).await?,
            };
            let version = match version {
                Some(v) => v,
                None => {
                    let bytes = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
                    match store.put_new(INDEX_KEY, &bytes).await {
                        Ok(v) => v,
                        // Another run created it first: read theirs.
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            return Ok(IndexHandle {
                index,
                version,
                store,
                ca_key_id,
                conflicts: 0,
            });
        }
    }

    /// The version of the index as this run last read or wrote it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Applies `change` by compare-and-swap; on a lost race re-reads and re-applies it. The
    /// index in memory changes only once the change is stored, and a change that changes
    /// nothing writes nothing.
    pub async fn update(&mut self, change: impl Fn(&mut Index)) -> Result<(), RunError> {
        for _ in 0..MAX_RACES {
            let mut next = self.index.clone();
            change(&mut next);
            if next == self.index {
                return Ok(());
            }
            match put_index(self.store.as_ref(), &self.version, &mut next).await? {
                Put::Written(v) => {
                    super::free_in_background(std::mem::replace(&mut self.index, next));
                    self.version = v;
                    return Ok(());
                }
                Put::Lost(lost) => self.after_lost_race(lost).await?,
            }
        }
        Err(kept_changing())
    }

    /// Applies `change` to the index in memory only, without the copy and comparison of
    /// `update` (a tenth of a second at 100,000 certificates), for a change that is known to
    /// change the index. The store keeps the index as it was until [`IndexHandle::write_staged`].
    pub fn stage(&mut self, change: &impl Fn(&mut Index)) {
        change(&mut self.index);
    }

    /// Stores the staged index by compare-and-swap. On a lost race it re-reads the index and
    /// re-applies `change` (the staged one), writing only if that changes it, and says so: what
    /// was taken from the staged index meanwhile may be stale. After an error the index in
    /// memory is not the stored one.
    pub async fn write_staged(&mut self, change: &impl Fn(&mut Index)) -> Result<Staged, RunError> {
        let mut outcome = Staged::Written;
        for _ in 0..MAX_RACES {
            match put_index(self.store.as_ref(), &self.version, &mut self.index).await? {
                Put::Written(v) => {
                    self.version = v;
                    return Ok(outcome);
                }
                Put::Lost(lost) => {
                    let staged = std::mem::take(&mut self.index);
                    if let Err(e) = self.after_lost_race(lost).await {
                        // The handle keeps the index it staged, not an empty one.
                        self.index = staged;
                        return Err(e);
                    }
                    // The index is the one staged: this write landed after all (a PUT retried
                    // after a lost response finds its own first attempt).
                    if self.index == staged {
                        return Ok(outcome);
                    }
                    outcome = Staged::Reapplied;
                    // Another writer may have made the change already (a newer CRL recorded,
                    // say): then there is nothing left to write. Compared on this rare path
                    // only, where `stage` skipped the copy.
                    let before = self.index.clone();
                    change(&mut self.index);
                    if self.index == before {
                        return Ok(outcome);
                    }
                }
            }
        }
        Err(kept_changing())
    }

    /// After a lost race: the index as another writer left it. A retried PUT can find its own
    /// first attempt's write and report it lost, so the base the write had written is deleted
    /// only if that index does not name it; if it does, the write landed and the old base goes.
    async fn after_lost_race(&mut self, lost: Lost) -> Result<(), RunError> {
        tracing::info!("the state index moved; re-reading it");
        let conflicts = self.conflicts + 1;
        *self = IndexHandle::open(self.store.clone(), self.ca_key_id.clone()).await?;
        self.conflicts = conflicts;
        if let Some((key, version)) = lost.new_base {
            if self.index.base.as_deref() != Some(key.as_str()) {
                delete_base(self.store.as_ref(), &key, Some(version)).await;
            } else if let Some(old) = lost.old_base {
                delete_base(self.store.as_ref(), &old, None).await;
            }
        }
        Ok(())
    }
}

/// How a staged index was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staged {
    /// As staged.
    Written,
    /// Another writer changed the index first: the change was re-applied to theirs.
    Reapplied,
}

/// Lost races before a write gives up.
const MAX_RACES: usize = 20;

fn kept_changing() -> RunError {
    RunError::Retryable("the state index kept changing under this run".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::state_store::{DirStore, Versioned};
    use crate::domain::state::{BASE_MIN, CertSummary};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A real local store whose `n`-th index write (from 1) lands but reports a lost race, as
    /// a PUT retried after a lost response finds its own first attempt.
    struct LandsButReportsLost {
        inner: DirStore,
        n: usize,
        writes: AtomicUsize,
    }

    impl LandsButReportsLost {
        fn at(n: usize) -> (tempfile::TempDir, Arc<LandsButReportsLost>) {
            let dir = tempfile::tempdir().unwrap();
            let inner = DirStore::open(dir.path()).unwrap();
            let writes = AtomicUsize::new(0);
            (dir, Arc::new(LandsButReportsLost { inner, n, writes }))
        }
    }

    #[async_trait::async_trait]
    impl StateStore for LandsButReportsLost {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
            self.inner.get(key).await
        }
        async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<String, StoreError> {
            self.inner.put_new(key, bytes).await
        }
        async fn put_if(
            &self,
            key: &str,
            bytes: &[u8],
            expected: &str,
        ) -> Result<String, StoreError> {
            let v = self.inner.put_if(key, bytes, expected).await?;
            match self.writes.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
                true => Err(StoreError::Conflict(key.into())),
                false => Ok(v),
            }
        }
        async fn delete_if(&self, key: &str, expected: &str) -> Result<(), StoreError> {
            self.inner.delete_if(key, expected).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.inner.list(prefix).await
        }
    }

    /// As apply indexes certificates: only those not there yet, so the change re-applied to a
    /// write that landed is none.
    fn index_certs(i: &mut Index, serials: std::ops::Range<usize>) {
        let t = time::OffsetDateTime::UNIX_EPOCH;
        for k in serials {
            if i.certs.contains_key(&format!("{k:040x}")) {
                continue;
            }
            let c = CertSummary {
                request_id: format!("r{k}"),
                request_hash: "h".into(),
                key_id: format!("k{k}"),
                not_before: t,
                not_after: t,
                revoked: None,
                round: None,
            };
            i.certs.insert(format!("{k:040x}"), c);
        }
    }

    /// A write reported lost although it landed keeps the base its index names, and deletes
    /// the base it replaced.
    #[tokio::test]
    async fn a_write_reported_lost_that_landed_keeps_its_base() {
        let (_dir, store) = LandsButReportsLost::at(2);
        let mut h = IndexHandle::open(store.clone(), "ca".into()).await.unwrap();
        h.update(|i| index_certs(i, 0..BASE_MIN)).await.unwrap();
        let first = h.index.base.clone().unwrap();
        h.update(|i| index_certs(i, BASE_MIN..2 * BASE_MIN))
            .await
            .unwrap();
        assert_eq!(h.conflicts, 1, "the landed write was reported lost");
        let second = h.index.base.clone().unwrap();
        assert_ne!(second, first);
        assert_eq!(store.list(BASE_PREFIX).await.unwrap(), vec![second]);
        let (back, _) = read(store.as_ref(), "ca").await.unwrap();
        assert_eq!(back.certs.len(), 2 * BASE_MIN);
    }

    /// A staged write reported lost although it landed is reported written: nothing was
    /// re-applied on another writer's index.
    #[tokio::test]
    async fn a_staged_write_reported_lost_that_landed_is_written() {
        let (_dir, store) = LandsButReportsLost::at(1);
        let mut h = IndexHandle::open(store.clone(), "ca".into()).await.unwrap();
        let change = |i: &mut Index| index_certs(i, 0..BASE_MIN);
        h.stage(&change);
        assert_eq!(h.write_staged(&change).await.unwrap(), Staged::Written);
        assert_eq!(h.conflicts, 1);
        assert_eq!(read(store.as_ref(), "ca").await.unwrap().0, h.index);
    }

    /// A staged write that lost its race to a writer that made the same change writes nothing
    /// more: the index stays at that writer's version, and the caller hears it was re-applied.
    #[tokio::test]
    async fn a_staged_change_another_writer_made_first_is_not_written_again() {
        // Never reports a loss; counts the index writes that land.
        let (_dir, store) = LandsButReportsLost::at(0);
        let mut ours = IndexHandle::open(store.clone(), "ca".into()).await.unwrap();
        let mut theirs = IndexHandle::open(store.clone(), "ca".into()).await.unwrap();
        // Theirs makes our change and one more, so the index differs from ours staged.
        let change = |i: &mut Index| index_certs(i, 0..3);
        theirs.update(|i| index_certs(i, 0..4)).await.unwrap();
        let written = read(store.as_ref(), "ca").await.unwrap().1.unwrap();
        ours.stage(&change);
        assert_eq!(ours.write_staged(&change).await.unwrap(), Staged::Reapplied);
        assert_eq!(ours.conflicts, 1);
        assert_eq!(store.writes.load(Ordering::SeqCst), 1, "theirs only");
        assert_eq!(ours.version(), written);
        let (back, version) = read(store.as_ref(), "ca").await.unwrap();
        assert_eq!(back.certs.len(), 4);
        assert_eq!((back, version), (ours.index.clone(), Some(written)));
    }

    /// An index naming another object as its base is refused, not merged (gitca would delete
    /// it once replaced).
    #[tokio::test]
    async fn an_index_naming_a_base_outside_the_base_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let index = br#"{"ca_key_id":"ca","base":"index-backup.json"}"#;
        store.put_new(INDEX_KEY, index).await.unwrap();
        store
            .put_new("index-backup.json", br#"{"ca_key_id":"ca"}"#)
            .await
            .unwrap();
        let err = read(&store, "ca").await.err().unwrap();
        assert!(
            err.contains("\"index-backup.json\"") && err.contains("not a base"),
            "{err}"
        );
        assert!(is_base_key(
            "index-base/0123456789abcdef0123456789abcdef.json"
        ));
        assert!(!is_base_key("index-base/../index.json"));
        assert!(!is_base_key(
            "index-base/0123456789abcdef0123456789abcdef.json.bak"
        ));
    }
}
