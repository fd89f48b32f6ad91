//! The index's base: from `BASE_MIN` certificates on, the index object names a base object that
//! holds them, and a write stores only what changed since, until an eighth of all has. Checked
//! on a local directory and on S3 (moto), through the real stores.

mod common;
use common::moto;
use gitca::adapters::state_store::{DirStore, StateStore};
use gitca::app::index::{BASE_PREFIX, IndexHandle, read};
use gitca::domain::state::{BASE_MIN, CertSummary, INDEX_KEY};
use std::collections::BTreeSet;
use std::sync::Arc;

fn serial(k: usize) -> String {
    format!("{k:040x}")
}

fn cert(k: usize) -> CertSummary {
    let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000 + (k % 300) as i64);
    CertSummary {
        request_id: format!("requests/r{k}.yaml"),
        request_hash: format!("{k:064x}"),
        key_id: format!("{k:064x}"),
        not_before: t,
        not_after: t + time::Duration::days(30),
        revoked: None,
        round: None,
    }
}

/// (the base the stored index object names, the serials it stores itself)
async fn stored(store: &dyn StateStore) -> (String, BTreeSet<String>) {
    let bytes = store.get(INDEX_KEY).await.unwrap().unwrap().bytes;
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let own = v["certs"].as_object().unwrap().keys().cloned().collect();
    (v["base"].as_str().unwrap_or_default().to_string(), own)
}

async fn bases(store: &dyn StateStore) -> Vec<String> {
    store.list(BASE_PREFIX).await.unwrap()
}

async fn reads_back(store: &dyn StateStore, h: &IndexHandle) {
    let (back, version) = read(store, "ca").await.unwrap();
    assert_eq!(version.as_deref(), Some(h.version()));
    assert!(
        back.certs.iter().eq(h.index.certs.iter()),
        "read back whole"
    );
}

async fn an_index_past_base_min_writes_only_what_changed(store: Arc<dyn StateStore>) {
    let n = BASE_MIN + 100;
    let mut h = IndexHandle::open(store.clone(), "ca".into()).await.unwrap();
    h.update(|i| {
        for k in 0..BASE_MIN - 1 {
            i.certs.insert(serial(k), cert(k));
        }
    })
    .await
    .unwrap();
    let (base, own) = stored(store.as_ref()).await;
    assert!(
        base.is_empty() && own.len() == BASE_MIN - 1,
        "below BASE_MIN: one object"
    );
    assert!(bases(store.as_ref()).await.is_empty());

    h.update(|i| {
        for k in 0..n {
            i.certs.insert(serial(k), cert(k));
        }
    })
    .await
    .unwrap();
    let (first, own) = stored(store.as_ref()).await;
    assert!(first.starts_with(BASE_PREFIX), "{first}");
    assert!(own.is_empty(), "every certificate went to the base");
    assert_eq!(bases(store.as_ref()).await, vec![first.clone()]);
    reads_back(store.as_ref(), &h).await;

    // Another handle reads the index whole, and its change is written alone beside the base.
    let mut h2 = IndexHandle::open(store.clone(), "ca".into()).await.unwrap();
    assert_eq!(h2.index.certs.len(), n);
    h2.update(|i| {
        i.certs.insert(serial(n), cert(n));
        i.certs.get_mut(&serial(3)).unwrap().not_after += time::Duration::days(1);
    })
    .await
    .unwrap();
    let (base, own) = stored(store.as_ref()).await;
    assert_eq!(base, first);
    assert_eq!(own, BTreeSet::from([serial(3), serial(n)]));
    reads_back(store.as_ref(), &h2).await;
    let changed = &read(store.as_ref(), "ca").await.unwrap().0.certs[&serial(3)];
    assert_eq!(
        changed.not_after,
        cert(3).not_after + time::Duration::days(1)
    );

    // Past an eighth of all: a new base, and the old one deleted.
    h2.update(|i| {
        for k in n + 1..=n + BASE_MIN {
            i.certs.insert(serial(k), cert(k));
        }
    })
    .await
    .unwrap();
    let (second, own) = stored(store.as_ref()).await;
    assert!(second != first && own.is_empty(), "{second}");
    assert_eq!(bases(store.as_ref()).await, vec![second.clone()]);
    reads_back(store.as_ref(), &h2).await;

    // A writer that loses its race deletes the base it wrote, then writes on the winner's index.
    let mut late = IndexHandle::open(store.clone(), "ca".into()).await.unwrap();
    h2.update(|i| {
        i.certs.insert(serial(1 << 30), cert(1));
    })
    .await
    .unwrap();
    let from = 1 << 20;
    late.update(|i| {
        for k in from..from + 2 * BASE_MIN {
            i.certs.insert(serial(k), cert(k));
        }
    })
    .await
    .unwrap();
    assert_eq!(late.conflicts, 1);
    let (third, _) = stored(store.as_ref()).await;
    assert_eq!(bases(store.as_ref()).await, vec![third.clone()]);
    let (back, _) = read(store.as_ref(), "ca").await.unwrap();
    assert!(
        back.certs.contains_key(&serial(1 << 30)),
        "the winner's change is kept"
    );
    assert_eq!(back.certs.len(), n + 1 + BASE_MIN + 1 + 2 * BASE_MIN);

    // A base gone missing is an error that names it, not an index without certificates.
    let version = store.version(&third).await.unwrap().unwrap();
    store.delete_if(&third, &version).await.unwrap();
    let err = read(store.as_ref(), "ca").await.err().unwrap();
    assert!(err.contains(&third) && err.contains("missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(DirStore::open(dir.path()).unwrap());
    an_index_past_base_min_writes_only_what_changed(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_s3() {
    let Some(endpoint) = moto::endpoint() else {
        return;
    };
    let s3 = moto::s3(&endpoint).await;
    let store = moto::state_store(&s3, "gitca-base", "state/ca").await;
    an_index_past_base_min_writes_only_what_changed(store).await;
}
