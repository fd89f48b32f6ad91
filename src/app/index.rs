//! Reading and updating the state index by compare-and-swap: a lost race re-reads the index and
//! re-applies the change to the fresh state, never overwriting another writer's work.

use super::RunError;
use crate::adapters::state_store::{StateStore, StoreError};
use crate::domain::state::{INDEX_KEY, Index};
use std::sync::Arc;

/// The index, or a fresh one for a new CA. A state of another CA key is refused.
pub async fn read(
    store: &dyn StateStore,
    ca_key_id: &str,
) -> Result<(Index, Option<String>), String> {
    match store.get(INDEX_KEY).await.map_err(|e| e.to_string())? {
        None => Ok((Index::new(ca_key_id.to_string()), None)),
        Some(v) => {
            let idx: Index = serde_json::from_slice(&v.bytes)
                .map_err(|e| format!("{}: {INDEX_KEY} is corrupt: {e}", store.describe()))?;
            if idx.ca_key_id != ca_key_id {
                return Err(format!(
                    "the state at {} belongs to another CA key; refusing to mix states",
                    store.describe()
                ));
            }
            Ok((idx, Some(v.version)))
        }
    }
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
            let bytes = next.to_json().map_err(|e| e.to_string())?;
            match self.store.put_if(INDEX_KEY, &bytes, &self.version).await {
                Ok(v) => {
                    super::free_in_background(std::mem::replace(&mut self.index, next));
                    self.version = v;
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => self.reread().await?,
                Err(e) => return Err(e.into()),
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
    /// re-applies `change` (the staged one), and says so: what was taken from the staged index
    /// meanwhile may be stale. After an error the index in memory is not the stored one.
    pub async fn write_staged(&mut self, change: &impl Fn(&mut Index)) -> Result<Staged, RunError> {
        let mut outcome = Staged::Written;
        for _ in 0..MAX_RACES {
            let bytes = self.index.to_json().map_err(|e| e.to_string())?;
            match self.store.put_if(INDEX_KEY, &bytes, &self.version).await {
                Ok(v) => {
                    self.version = v;
                    return Ok(outcome);
                }
                Err(StoreError::Conflict(_)) => {
                    self.reread().await?;
                    change(&mut self.index);
                    outcome = Staged::Reapplied;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(kept_changing())
    }

    /// After a lost race: the index as another writer left it.
    async fn reread(&mut self) -> Result<(), RunError> {
        tracing::info!("the state index moved; re-reading it");
        let conflicts = self.conflicts + 1;
        *self = IndexHandle::open(self.store.clone(), self.ca_key_id.clone()).await?;
        self.conflicts = conflicts;
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
