//! Where the issued state lives. The API has the semantics S3 gives with conditional requests:
//! create-only writes (`If-None-Match: *`) and compare-and-swap (`If-Match: <etag>`). A lost
//! race is a `Conflict`, handled by re-reading, never by overwriting.

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object exists (create-only) or moved on (compare-and-swap): re-read and re-plan.
    #[error("conflict on {0}: another writer changed it")]
    Conflict(String),
    #[error("state store temporarily unavailable: {0}")]
    Retryable(String),
    #[error("state store error: {0}")]
    Fatal(String),
}

#[derive(Debug, Clone)]
pub struct Versioned {
    pub bytes: Vec<u8>,
    /// An opaque version (an ETag) for compare-and-swap.
    pub version: String,
}

#[async_trait]
pub trait StateStore: Send + Sync {
    fn describe(&self) -> String;
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// The bytes of `key` without its version, for an object never replaced in place (an index
    /// base): the local store then does not hash it (20 ms for a 34 MB base).
    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(key).await?.map(|v| v.bytes))
    }
    /// The version of `key` alone (S3 answers it with a HEAD request).
    async fn version(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get(key).await?.map(|v| v.version))
    }
    /// Creates `key`; `Conflict` if it exists.
    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<String, StoreError>;
    /// Creates `key` like `put_new`, for a caller with no use for the version: the local store
    /// then does not hash it (a round's 6 MB of records).
    async fn create(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_new(key, bytes).await.map(drop)
    }
    /// Replaces `key` only if its version is still `expected`; `Conflict` otherwise.
    async fn put_if(&self, key: &str, bytes: &[u8], expected: &str) -> Result<String, StoreError>;
    /// Deletes `key` only if its version is still `expected` (absent is fine).
    async fn delete_if(&self, key: &str, expected: &str) -> Result<(), StoreError>;
    /// Keys under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Reads many objects, each like `get`; results in input order.
    async fn get_many(&self, keys: &[String]) -> Vec<Result<Option<Versioned>, StoreError>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await);
        }
        out
    }
    /// Deletes many objects, each like `delete_if`; results in input order.
    async fn delete_many(&self, items: &[(String, String)]) -> Vec<Result<(), StoreError>> {
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items {
            out.push(self.delete_if(k, v).await);
        }
        out
    }
}

/// The embedded default: a local directory. Writes are atomic (temp file, fsync, link/rename,
/// fsync of the directory); compare-and-swap holds an exclusive file lock for its check+write.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
}

fn version_of(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(&Sha256::digest(bytes))
}

/// The version of the file at `path`, read in pieces: a compare-and-swap only needs the
/// digest, not the 33 MB of a 100,000-certificate index in memory.
fn version_of_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 18];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(base16ct::lower::encode_string(&hasher.finalize())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn io(key: &str, e: std::io::Error) -> StoreError {
    StoreError::Fatal(format!("{key}: {e}"))
}

impl DirStore {
    /// Opens the store at `root`, created by the first write: a command that only reads
    /// (`status`, `verify`, `plan`) leaves no folder behind, at a mistyped path say.
    pub fn open(root: &Path) -> Result<DirStore, String> {
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => private(root),
            Ok(_) => {
                return Err(format!(
                    "state directory {} is not a directory",
                    root.display()
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(format!("state directory {}: {e}", root.display())),
        }
        Ok(DirStore {
            root: root.to_path_buf(),
        })
    }

    /// Creates the store's folder before its first write.
    fn ensure_root(&self) -> Result<(), StoreError> {
        if !self.root.is_dir() {
            let e = |e| {
                StoreError::Fatal(format!(
                    "cannot create state directory {}: {e}",
                    self.root.display()
                ))
            };
            create_dirs_durably(&self.root).map_err(e)?;
            private(&self.root);
        }
        Ok(())
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        if key
            .split('/')
            .any(|c| c.is_empty() || c == ".." || c == ".")
            || key.starts_with('/')
        {
            return Err(StoreError::Fatal(format!("invalid state key {key:?}")));
        }
        Ok(self
            .root
            .join(sharded(key).unwrap_or_else(|| key.to_string())))
    }

    /// Where an unsharded store (before sharding) kept a sharded key.
    fn legacy(&self, key: &str) -> Option<PathBuf> {
        sharded(key).map(|_| self.root.join(key))
    }

    /// Reads a key, falling back to its unsharded place.
    fn read(&self, key: &str) -> Result<Option<(PathBuf, Vec<u8>)>, StoreError> {
        let path = self.path(key)?;
        for p in std::iter::once(path).chain(self.legacy(key)) {
            match fs::read(&p) {
                Ok(b) => return Ok(Some((p, b))),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(key, e)),
            }
        }
        Ok(None)
    }

    /// Writes `bytes` to a synced temp file in `dir`, creating the folder if needed (made
    /// durable in its parent).
    fn temp(
        &self,
        dir: &Path,
        key: &str,
        bytes: &[u8],
    ) -> Result<tempfile::NamedTempFile, StoreError> {
        self.ensure_root()?;
        create_dirs_durably(dir).map_err(|e| io(key, e))?;
        let mut t = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(|e| io(key, e))?;
        t.write_all(bytes).map_err(|e| io(key, e))?;
        t.as_file().sync_all().map_err(|e| io(key, e))?;
        Ok(t)
    }

    /// Where `key` is (its path, or where an older layout put it) and its version.
    fn locate(&self, key: &str) -> Result<Option<(PathBuf, String)>, StoreError> {
        let path = self.path(key)?;
        for p in std::iter::once(path).chain(self.legacy(key)) {
            match version_of_file(&p) {
                Ok(v) => return Ok(Some((p, v))),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(key, e)),
            }
        }
        Ok(None)
    }

    /// Deletes `key` if its version is `expected`; the caller holds the lock.
    fn delete_locked(&self, key: &str, expected: &str) -> Result<(), StoreError> {
        match self.locate(key)? {
            Some((_, v)) if v != expected => Err(StoreError::Conflict(key.to_string())),
            Some((path, _)) => {
                fs::remove_file(&path).map_err(|e| io(key, e))?;
                // Durable, as writes are: a released lease that came back after a power loss
                // would hold off every apply until it expires.
                sync_dir(path.parent().unwrap_or(&self.root)).map_err(|e| io(key, e))
            }
            None => Ok(()),
        }
    }

    /// Creates `key`'s file; `Conflict` if it exists, in this layout or the older one.
    fn create_file(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if self.legacy(key).is_some_and(|p| p.exists()) {
            return Err(StoreError::Conflict(key.to_string()));
        }
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let t = self.temp(&dir, key, bytes)?;
        // link(2) fails if the target exists: an atomic create-only write.
        match fs::hard_link(t.path(), &path) {
            Ok(()) => sync_dir(&dir).map_err(|e| io(key, e)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                Err(StoreError::Conflict(key.to_string()))
            }
            Err(e) => Err(io(key, e)),
        }
    }

    fn lock(&self) -> Result<File, StoreError> {
        self.ensure_root()?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(".lock"))
            .map_err(|e| io(".lock", e))?;
        f.lock().map_err(|e| io(".lock", e))?;
        Ok(f)
    }
}

/// The state's folder readable by its owner only (best effort: the CA's records are not
/// secret, but nobody else needs them).
fn private(root: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(root, fs::Permissions::from_mode(0o700));
    }
    #[cfg(not(unix))]
    let _ = root;
}

/// Folders holding one object per certificate are split by the first two characters of the
/// name: a folder of 100,000 files makes every create and lookup slow on file systems without
/// directory indexes.
const SHARDED: [&str; 2] = ["certs", "intents"];
const SHARD: usize = 2;

/// `certs/ab12….json` -> `certs/ab/ab12….json`.
fn sharded(key: &str) -> Option<String> {
    let (dir, name) = key.split_once('/')?;
    (SHARDED.contains(&dir)
        && !name.contains('/')
        && name.len() > SHARD
        && name.is_char_boundary(SHARD))
    .then(|| format!("{dir}/{}/{name}", &name[..SHARD]))
}

fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(k) => StoreError::Conflict(k.clone()),
        StoreError::Retryable(m) => StoreError::Retryable(m.clone()),
        StoreError::Fatal(m) => StoreError::Fatal(m.clone()),
    }
}

/// Makes the entries of `dir` (new links, renames, folders) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    return File::open(dir)?.sync_all();
    // Elsewhere a folder cannot be opened to sync it; its entries go with the file system's
    // own ordering.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Creates `dir` and its missing parents, syncing the parent of each folder it creates: a new
/// folder's own entry lives in its parent, which syncing the new folder does not cover.
fn create_dirs_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return fs::create_dir_all(dir);
    };
    create_dirs_durably(parent)?;
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Made by another writer of the same batch: its entry is synced below all the same.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    sync_dir(parent)
}

#[async_trait]
impl StateStore for DirStore {
    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    async fn version(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.locate(key)?.map(|(_, v)| v))
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.read(key)?.map(|(_, bytes)| Versioned {
            version: version_of(&bytes),
            bytes,
        }))
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read(key)?.map(|(_, bytes)| bytes))
    }

    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<String, StoreError> {
        // The digest while the file is written: a round's 6 MB of intents took 4 ms each.
        let (created, version) = rayon::join(|| self.create_file(key, bytes), || version_of(bytes));
        created?;
        Ok(version)
    }

    async fn create(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.create_file(key, bytes)
    }

    async fn put_if(&self, key: &str, bytes: &[u8], expected: &str) -> Result<String, StoreError> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let _guard = self.lock()?;
        // The two digests at once, on two cores: 20 ms each for a 33 MB index.
        let (current, new_version) = rayon::join(|| version_of_file(&path), || version_of(bytes));
        let current = match current {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StoreError::Conflict(key.to_string()));
            }
            Err(e) => return Err(io(key, e)),
        };
        if current != expected {
            return Err(StoreError::Conflict(key.to_string()));
        }
        let t = self.temp(&dir, key, bytes)?;
        t.persist(&path).map_err(|e| io(key, e.error))?;
        sync_dir(&dir).map_err(|e| io(key, e))?;
        Ok(new_version)
    }

    async fn delete_if(&self, key: &str, expected: &str) -> Result<(), StoreError> {
        let _guard = self.lock()?;
        self.delete_locked(key, expected)
    }

    async fn delete_many(&self, items: &[(String, String)]) -> Vec<Result<(), StoreError>> {
        let _guard = match self.lock() {
            Ok(g) => g,
            Err(e) => return items.iter().map(|_| Err(clone_err(&e))).collect(),
        };
        // Each file read and hashed to compare its version: on all cores (a round's intents
        // are 6 MB each).
        use rayon::prelude::*;
        items
            .par_iter()
            .map(|(key, expected)| self.delete_locked(key, expected))
            .collect()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(prefix, e)),
        };
        let prefix = prefix.trim_end_matches('/');
        for e in rd {
            let e = e.map_err(|e| io(prefix, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir && SHARDED.contains(&prefix) && name.len() == SHARD {
                // A shard folder: its files are keys of `prefix`.
                for f in fs::read_dir(e.path()).map_err(|e| io(prefix, e))? {
                    let f = f.map_err(|e| io(prefix, e))?;
                    let n = f.file_name().to_string_lossy().into_owned();
                    if !n.starts_with(".tmp-") && f.file_type().is_ok_and(|t| t.is_file()) {
                        out.push(format!("{prefix}/{n}"));
                    }
                }
            } else if !name.starts_with(".tmp-") && e.file_type().is_ok_and(|t| t.is_file()) {
                out.push(format!("{prefix}/{name}"));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// No state at all (`plan --no-state`): reads find nothing, writes are refused. For pull-request
/// plans without access to the real state: CSRs and policies are still checked.
#[derive(Debug)]
pub struct EmptyStore;

#[async_trait]
impl StateStore for EmptyStore {
    fn describe(&self) -> String {
        "no state (--no-state)".into()
    }
    async fn get(&self, _key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(None)
    }
    async fn put_new(&self, key: &str, _bytes: &[u8]) -> Result<String, StoreError> {
        Err(StoreError::Fatal(format!("{key}: --no-state is read-only")))
    }
    async fn put_if(
        &self,
        key: &str,
        _bytes: &[u8],
        _expected: &str,
    ) -> Result<String, StoreError> {
        Err(StoreError::Fatal(format!("{key}: --no-state is read-only")))
    }
    async fn delete_if(&self, key: &str, _expected: &str) -> Result<(), StoreError> {
        Err(StoreError::Fatal(format!("{key}: --no-state is read-only")))
    }
    async fn list(&self, _prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by review: `status` on a mistyped state path created the folder it then found
    /// empty. Reads leave no trace; the first write creates it, owner-only.
    #[tokio::test]
    async fn the_folder_is_made_by_the_first_write_not_by_reads() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ca/state");
        let s = DirStore::open(&root).unwrap();
        assert!(s.get("index.json").await.unwrap().is_none());
        assert!(s.list("certs").await.unwrap().is_empty());
        assert!(s.version("index.json").await.unwrap().is_none());
        assert!(!root.exists(), "reads created the state folder");
        s.put_new("index.json", b"{}").await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&root).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let file = d.path().join("file");
        fs::write(&file, "").unwrap();
        let e = DirStore::open(&file).unwrap_err();
        assert!(e.contains("not a directory"), "{e}");
    }

    #[tokio::test]
    async fn create_only_and_compare_and_swap() {
        let d = tempfile::tempdir().unwrap();
        let s = DirStore::open(d.path()).unwrap();
        let v1 = s.put_new("a/b.json", b"1").await.unwrap();
        assert!(matches!(
            s.put_new("a/b.json", b"2").await,
            Err(StoreError::Conflict(_))
        ));
        let v2 = s.put_if("a/b.json", b"2", &v1).await.unwrap();
        assert!(matches!(
            s.put_if("a/b.json", b"3", &v1).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.get("a/b.json").await.unwrap().unwrap().bytes, b"2");
        assert_eq!(s.list("a").await.unwrap(), vec!["a/b.json"]);
        assert!(matches!(
            s.delete_if("a/b.json", &v1).await,
            Err(StoreError::Conflict(_))
        ));
        s.delete_if("a/b.json", &v2).await.unwrap();
        assert!(s.get("a/b.json").await.unwrap().is_none());
        assert!(s.get("../x").await.is_err());

        // `create` is `put_new` without the version: create-only all the same.
        s.create("a/c.json", b"1").await.unwrap();
        assert!(matches!(
            s.create("a/c.json", b"2").await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.put_new("a/c.json", b"2").await,
            Err(StoreError::Conflict(_))
        ));
        let c = s.get("a/c.json").await.unwrap().unwrap();
        assert_eq!(c.bytes, b"1");
        assert_eq!(Some(c.version), s.version("a/c.json").await.unwrap());
    }

    /// Per-certificate folders are sharded; a store written before sharding still reads,
    /// lists, refuses to overwrite and deletes its objects; deletions in a batch behave like
    /// single calls.
    #[tokio::test]
    async fn sharded_folders_and_batched_deletions() {
        let d = tempfile::tempdir().unwrap();
        let s = DirStore::open(d.path()).unwrap();
        std::fs::create_dir_all(d.path().join("certs")).unwrap();
        std::fs::write(d.path().join("certs/0aold.json"), b"old").unwrap();
        let mut r = Vec::new();
        for key in ["certs/1a.json", "certs/2b.json", "certs/0aold.json"] {
            r.push(s.put_new(key, b"new").await);
        }
        assert!(r[0].is_ok() && r[1].is_ok());
        assert!(
            matches!(r[2], Err(StoreError::Conflict(_))),
            "legacy object kept"
        );
        assert!(
            matches!(
                s.create("certs/0aold.json", b"new").await,
                Err(StoreError::Conflict(_))
            ),
            "legacy object kept by create too"
        );
        assert!(d.path().join("certs/1a/1a.json").exists());
        assert_eq!(
            s.list("certs").await.unwrap(),
            vec!["certs/0aold.json", "certs/1a.json", "certs/2b.json"]
        );
        let old = s.get("certs/0aold.json").await.unwrap().unwrap();
        assert_eq!(old.bytes, b"old");
        let v = s.get("certs/1a.json").await.unwrap().unwrap().version;
        let r = s
            .delete_many(&[
                ("certs/1a.json".into(), v),
                ("certs/0aold.json".into(), old.version),
                ("certs/2b.json".into(), "stale".into()),
            ])
            .await;
        assert!(r[0].is_ok() && r[1].is_ok());
        assert!(matches!(r[2], Err(StoreError::Conflict(_))));
        assert_eq!(s.list("certs").await.unwrap(), vec!["certs/2b.json"]);
    }
}
