//! Git: reads the desired state from a commit (never the work tree, except for
//! `plan --worktree`), commits the outputs, and pushes.

use super::git_index;
use crate::domain::plan::{Snapshot, TreeEntry, not_utf8};
use git2::{ObjectType, Oid, Repository};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use time::OffsetDateTime;

/// Blobs above this size are never read (requests and CSRs are far smaller).
pub const MAX_BLOB_BYTES: u64 = 1024 * 1024;

/// The serverless CA keeps every request of an environment in one `tls.json`: a large
/// organisation's is several megabytes.
const MAX_LIST_BYTES: u64 = 64 * 1024 * 1024;

fn blob_limit(path: &str) -> u64 {
    if crate::domain::serverless_layout::is_list_file(path) {
        MAX_LIST_BYTES
    } else {
        MAX_BLOB_BYTES
    }
}

pub struct GitRepo {
    repo: Repository,
    /// The CA repository's folder inside the git repository ("" for the root).
    prefix: String,
    /// Paths written from which an outputs commit updates the index itself, or else has git
    /// read its tree into the index before `git update-index` (see `own_index`); tests
    /// lower it.
    read_tree_from: usize,
    /// Whether gitca may update the index itself (see `own_index`); tests turn it off to
    /// try git's way.
    writes_index: bool,
}

/// From this many paths written, gitca updates the index itself (see `own_index`), or
/// else has git read the trees into the index before `git update-index`, which alone inserts
/// each new path into its sorted index by moving every entry after it (at 16,384 both git ways
/// cost about the same with 40,000 entries and with 400,000; 200,000 new paths into 200,000
/// entries took 9.2 s alone, 2.3 s after `git read-tree`). Below it, git updates the index on
/// another core while the run goes on, where gitca would rewrite the whole index on its way.
/// It counts every path written, as whether a path is new is known only once the work tree is
/// checked.
const READ_TREE_FROM: usize = 16_384;

/// Work-tree paths handed to `git update-index` at a time, at most.
const DONE_BATCH: usize = 256;

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GitRepo({:?}, dir {:?})", self.repo.path(), self.prefix)
    }
}

/// A git command's failure, with what it printed.
fn succeeded(what: &str, out: &std::process::Output) -> Result<(), String> {
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn ge(e: git2::Error) -> String {
    e.message().to_string()
}

/// The content of a file to commit, the concatenation of shared parts: a certificate's chain
/// file shares its leaf and the CA certificates instead of holding copies (at 100,000
/// certificates the copies took 150 MB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(Vec<std::sync::Arc<[u8]>>);

impl Content {
    pub fn join(parts: &[&std::sync::Arc<[u8]>]) -> Content {
        Content(parts.iter().map(|p| std::sync::Arc::clone(p)).collect())
    }

    pub fn bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match self.0.as_slice() {
            [one] => std::borrow::Cow::Borrowed(one),
            parts => std::borrow::Cow::Owned(parts.concat()),
        }
    }

    /// The one part of content that is not assembled.
    fn only_part(&self) -> Option<&[u8]> {
        match self.0.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The first part of content assembled from more than one.
    fn first_of_many(&self) -> Option<&[u8]> {
        match self.0.as_slice() {
            [first, _, ..] => Some(first),
            _ => None,
        }
    }
}

impl From<Vec<u8>> for Content {
    fn from(bytes: Vec<u8>) -> Content {
        Content(vec![bytes.into()])
    }
}

impl GitRepo {
    pub fn open(path: &Path, dir: Option<&str>) -> Result<GitRepo, String> {
        // libgit2 caches trees only up to 4 KiB; a folder of a thousand requests is a tree of
        // ~100 KiB, re-read and inflated on every path lookup without this.
        static CACHE: std::sync::Once = std::sync::Once::new();
        CACHE.call_once(|| {
            // SAFETY: called once, before any repository is opened in this process.
            let _ = unsafe { git2::opts::set_cache_object_limit(ObjectType::Tree, 64 << 20) };
            // libgit2 maps pack files in windows of up to 1 GiB and keeps up to 8 GiB mapped;
            // every page it touches stays in the process's resident memory, and the pack of a
            // first issuance of 100,000 is 160 MB. Windows of 4 MiB, at most 16 MiB mapped
            // (least recently used unmapped first), bound that; reads here are mostly in order.
            // SAFETY: as above.
            let _ = unsafe { git2::opts::set_mwindow_size(4 << 20) };
            let _ = unsafe { git2::opts::set_mwindow_mapped_limit(16 << 20) };
        });
        let repo = Repository::open(path).map_err(|e| {
            // Not guessed: a CA may live in a folder of a larger repository (`--dir`), so the
            // repository above is named, not taken.
            match Repository::discover(path)
                .ok()
                .and_then(|r| r.workdir().map(Path::to_path_buf))
            {
                Some(root) => format!(
                    "{}: not the top of a git repository; it is inside {}: run gitca there, or \
                     pass --repo {} (with --dir for a CA in a folder of it)",
                    path.display(),
                    root.display(),
                    root.display()
                ),
                None => format!("{}: not a git repository: {}", path.display(), ge(e)),
            }
        })?;
        let prefix = match dir {
            None | Some("") | Some(".") => String::new(),
            Some(d) => {
                let d = d.trim_matches('/');
                crate::domain::names::check_repo_path(d)?;
                format!("{d}/")
            }
        };
        Ok(GitRepo {
            repo,
            prefix,
            read_tree_from: READ_TREE_FROM,
            writes_index: true,
        })
    }

    pub fn workdir(&self) -> Option<PathBuf> {
        self.repo.workdir().map(|p| p.join(&self.prefix))
    }

    /// Every folder whose files Git keeps or can be asked to keep: the whole work tree (not only
    /// the CA's folder), the git directory and the one it shares with linked worktrees, the main
    /// work tree above that, and every linked worktree.
    pub fn git_places(&self) -> Vec<PathBuf> {
        let common = self.repo.commondir();
        let mut places = vec![self.repo.path().to_path_buf(), common.to_path_buf()];
        places.extend(self.repo.workdir().map(Path::to_path_buf));
        if common.file_name().is_some_and(|n| n == ".git") {
            places.extend(common.parent().map(Path::to_path_buf));
        }
        if let Ok(names) = self.repo.worktrees() {
            for name in names.iter().flatten().flatten() {
                if let Ok(w) = self.repo.find_worktree(name) {
                    places.push(w.path().to_path_buf());
                }
            }
        }
        // Outside a linked worktree the git and common directories are one, and the work tree
        // is the main one.
        places.sort();
        places.dedup();
        places
    }

    pub fn resolve(&self, rev: &str) -> Result<String, String> {
        let c = self
            .repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| format!("cannot resolve {rev:?} to a commit: {}", ge(e)))?;
        Ok(c.id().to_string())
    }

    /// The current branch's full ref name, refusing a detached HEAD (apply commits to a branch).
    pub fn current_branch(&self) -> Result<String, String> {
        let head = self
            .repo
            .head()
            .map_err(|e| format!("no HEAD: {}", ge(e)))?;
        if !head.is_branch() {
            return Err("HEAD is detached; apply commits to a branch, check one out".into());
        }
        Ok(head.name().unwrap_or_default().to_string())
    }

    /// Reads every file under the CA folder from `commit`, skipping `skip` prefixes (outputs).
    pub fn snapshot(&self, commit: &str, skip: &[String]) -> Result<Snapshot, String> {
        let c = self
            .repo
            .find_commit(Oid::from_str(commit).map_err(ge)?)
            .map_err(ge)?;
        let tree = self.ca_tree(commit)?;
        let mut found = Vec::new();
        let mut unnamed = Vec::new();
        let skip_under: Vec<String> = skip.iter().map(|s| format!("{s}/")).collect();
        walk(&tree, |dir, entry| {
            // Not read, and a folder not entered: no path names it (the plan decides).
            let Ok(name) = entry.name() else {
                unnamed.push(lossy_path(dir, entry));
                return Ok(git2::TreeWalkResult::Skip);
            };
            let path = format!("{dir}{name}");
            if skip.contains(&path) || skip_under.iter().any(|s| path.starts_with(s.as_str())) {
                return Ok(git2::TreeWalkResult::Skip);
            }
            found.push(Found::of(path, entry));
            Ok(git2::TreeWalkResult::Ok)
        })?;
        let files = self.read_found(found)?;
        let t = c.time();
        Ok(Snapshot {
            commit: commit.to_string(),
            commit_time: OffsetDateTime::from_unix_timestamp(t.seconds())
                .map_err(|e| e.to_string())?,
            files,
            carried: Default::default(),
            unnamed,
        })
    }

    /// The commit without `requests/`, plus the request files in `load` and the CSRs they name
    /// (an incremental reconcile reads only what it plans in full).
    pub fn snapshot_partial(
        &self,
        commit: &str,
        skip: &[String],
        load: &std::collections::BTreeSet<String>,
        csr_of: impl Fn(&str, &TreeEntry) -> Option<String>,
    ) -> Result<Snapshot, String> {
        let mut without_requests = skip.to_vec();
        without_requests.push("requests".into());
        let mut snap = self.snapshot(commit, &without_requests)?;
        let tree = self.ca_tree(commit)?;
        for id in load {
            let Some(entry) = self.entry_at(&tree, id)? else {
                continue;
            };
            if let Some(csr) = csr_of(id, &entry)
                && !snap.files.contains_key(&csr)
                // A full scan never reads the outputs either.
                && !skip
                    .iter()
                    .any(|s| csr == *s || csr.starts_with(&format!("{s}/")))
                && let Some(e) = self.entry_at(&tree, &csr)?
            {
                snap.files.insert(csr, e);
            }
            snap.files.insert(id.clone(), entry);
        }
        Ok(snap)
    }

    /// The root tree of `commit`.
    fn commit_tree(&self, commit: &str) -> Result<git2::Tree<'_>, String> {
        let c = self
            .repo
            .find_commit(Oid::from_str(commit).map_err(ge)?)
            .map_err(ge)?;
        c.tree().map_err(ge)
    }

    /// The CA folder's tree at `commit`.
    fn ca_tree(&self, commit: &str) -> Result<git2::Tree<'_>, String> {
        let root = self.commit_tree(commit)?;
        if self.prefix.is_empty() {
            return Ok(root);
        }
        let e = root
            .get_path(Path::new(self.prefix.trim_end_matches('/')))
            .map_err(|_| format!("commit {commit} has no folder {}", self.prefix))?;
        self.repo
            .find_tree(e.id())
            .map_err(|_| format!("{} is not a folder", self.prefix))
    }

    /// One file of a tree, as the snapshot holds it; None if absent or a folder.
    fn entry_at(&self, tree: &git2::Tree, path: &str) -> Result<Option<TreeEntry>, String> {
        match tree.get_path(Path::new(path)) {
            Ok(e) => read_entry(&self.repo.odb().map_err(ge)?, &Found::of(path.into(), &e)),
            Err(_) => Ok(None),
        }
    }

    /// The files among `found`, read, by path. Many blobs are read on all cores, each rayon job
    /// with a handle of its own on the repository (libgit2's object database is safe to share,
    /// git2's handle is not): 20,000 request files took 60 ms on one core, inflating and
    /// hashing each object, while the other stood idle.
    fn read_found(&self, found: Vec<Found>) -> Result<BTreeMap<String, TreeEntry>, String> {
        use rayon::prelude::*;
        let read: Vec<Option<TreeEntry>> =
            if found.len() < PARALLEL_READ_FROM || rayon::current_num_threads() == 1 {
                let odb = self.repo.odb().map_err(ge)?;
                found
                    .iter()
                    .map(|f| read_entry(&odb, f))
                    .collect::<Result<_, _>>()?
            } else {
                let git_dir = self.repo.path();
                found
                    .par_iter()
                    .map_init(
                        || Repository::open(git_dir),
                        |repo, f| match repo {
                            Ok(repo) => read_entry(&repo.odb().map_err(ge)?, f),
                            Err(e) => Err(format!("{}: {}", git_dir.display(), e.message())),
                        },
                    )
                    .collect::<Result<_, _>>()?
            };
        Ok((found.into_iter().zip(read))
            .filter_map(|(f, entry)| Some((f.path, entry?)))
            .collect())
    }

    /// Paths of the CA folder that differ between two commits (outside `skip`).
    pub fn changed_paths(
        &self,
        from: &str,
        to: &str,
        skip: &[String],
    ) -> Result<Vec<crate::domain::incremental::Change>, String> {
        // An error makes the caller plan every request, as when the trees cannot be compared.
        self.changes_between(&self.ca_tree(from)?, &self.ca_tree(to)?, skip)
    }

    /// Paths that differ between two trees of the CA folder, named by their ids (see
    /// [`GitRepo::tree_id`]); every path counts, outputs too.
    pub fn changed_between_trees(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<crate::domain::incremental::Change>, String> {
        let tree = |id: &str| {
            let oid = Oid::from_str(id).map_err(ge)?;
            self.repo
                .find_tree(oid)
                .map_err(|e| format!("tree {id}: {}", ge(e)))
        };
        self.changes_between(&tree(from)?, &tree(to)?, &[])
    }

    /// The files that differ between two trees of the CA folder (outside `skip`); Err if a
    /// changed entry's name is not UTF-8, which no path can name.
    fn changes_between(
        &self,
        old: &git2::Tree,
        new: &git2::Tree,
        skip: &[String],
    ) -> Result<Vec<crate::domain::incremental::Change>, String> {
        let mut out = TreeDiff::default();
        self.diff_trees(Some(old), Some(new), "", skip, &mut out)?;
        out.named()
    }

    /// Files that differ between two trees. Subtrees with the same id are not entered, so the
    /// cost follows the change, not the repository (libgit2's tree diff walks every entry).
    fn diff_trees(
        &self,
        old: Option<&git2::Tree>,
        new: Option<&git2::Tree>,
        prefix: &str,
        skip: &[String],
        out: &mut TreeDiff,
    ) -> Result<(), String> {
        use crate::domain::incremental::Change;
        let entries = |t: Option<&git2::Tree>| -> BTreeMap<Vec<u8>, (Oid, i32)> {
            t.into_iter()
                .flat_map(|t| t.iter())
                .map(|e| (e.name_bytes().to_vec(), (e.id(), e.filemode())))
                .collect()
        };
        let (a, b) = (entries(old), entries(new));
        let names: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
        let is_tree = |mode: i32| mode == i32::from(git2::FileMode::Tree);
        for name in names {
            let (x, y) = (a.get(name), b.get(name));
            if x == y {
                continue;
            }
            refuse_bad_entry_name(prefix, name)?;
            // A changed entry whose name is not UTF-8 has no path the plan could name: left
            // out, and flagged for callers that must not miss a change.
            let Ok(name_str) = std::str::from_utf8(name) else {
                let shown = String::from_utf8_lossy(name);
                out.unnamed
                    .get_or_insert_with(|| format!("{prefix}{shown}"));
                continue;
            };
            let path = format!("{prefix}{name_str}");
            if skip
                .iter()
                .any(|s| path == *s || path.starts_with(&format!("{s}/")))
            {
                continue;
            }
            let tree_of = |e: Option<&(Oid, i32)>| -> Result<Option<git2::Tree>, String> {
                match e {
                    Some((id, mode)) if is_tree(*mode) => {
                        self.repo.find_tree(*id).map(Some).map_err(ge)
                    }
                    _ => Ok(None),
                }
            };
            let (tx, ty) = (tree_of(x)?, tree_of(y)?);
            if tx.is_some() || ty.is_some() {
                self.diff_trees(tx.as_ref(), ty.as_ref(), &format!("{path}/"), skip, out)?;
            }
            // A file on either side (a file replaced by a folder is a deletion plus additions).
            let file_x = x.is_some_and(|(_, m)| !is_tree(*m));
            let file_y = y.is_some_and(|(_, m)| !is_tree(*m));
            if file_y {
                out.changes.push(Change {
                    path: path.clone(),
                    deleted: false,
                });
            } else if file_x {
                out.changes.push(Change {
                    path,
                    deleted: true,
                });
            }
        }
        Ok(())
    }

    /// The CA folder's tree id at `commit`: equal ids, equal content.
    pub fn tree_id(&self, commit: &str) -> Result<String, String> {
        Ok(self.ca_tree(commit)?.id().to_string())
    }

    /// The tree id of a folder of the CA repository at `commit`, if it exists.
    pub fn folder_id(&self, commit: &str, folder: &str) -> Result<Option<String>, String> {
        let tree = self.ca_tree(commit)?;
        Ok(tree
            .get_path(Path::new(folder))
            .ok()
            .map(|e| e.id().to_string()))
    }

    /// Reads the work tree instead of a commit (`plan --worktree` only; never signed from).
    pub fn worktree_snapshot(&self, skip: &[String]) -> Result<Snapshot, String> {
        let root = self.workdir().ok_or("bare repository has no work tree")?;
        let mut files = BTreeMap::new();
        let mut unnamed = Vec::new();
        let mut walk = walkdir::WalkDir::new(&root).follow_links(false).into_iter();
        while let Some(e) = walk.next() {
            let e = e.map_err(|e| e.to_string())?;
            let within = e.path().strip_prefix(&root).unwrap_or(e.path());
            let rel = within.to_string_lossy().replace('\\', "/");
            if rel.is_empty() {
                continue;
            }
            // Not read, and a folder not entered: git's own, the outputs, and a name that is
            // not UTF-8, which no path names (the plan decides about it, as for a commit).
            let odd = within.to_str().is_none();
            if odd {
                unnamed.push(rel.clone());
            }
            if odd || rel == ".git" || skip.contains(&rel) {
                if e.file_type().is_dir() {
                    walk.skip_current_dir();
                }
                continue;
            }
            let ft = e.file_type();
            let item = if ft.is_symlink() {
                TreeEntry::Symlink
            } else if ft.is_file() {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                if len > blob_limit(&rel) {
                    TreeEntry::TooLarge(len)
                } else {
                    TreeEntry::Blob(std::fs::read(e.path()).map_err(|err| format!("{rel}: {err}"))?)
                }
            } else {
                continue;
            };
            files.insert(rel, item);
        }
        Ok(Snapshot {
            commit: "worktree".into(),
            commit_time: OffsetDateTime::now_utc(),
            files,
            carried: Default::default(),
            unnamed,
        })
    }

    /// Is `descendant` the same as, or a descendant of, `ancestor`?
    pub fn descends_from(&self, descendant: &str, ancestor: &str) -> Result<bool, String> {
        let d = Oid::from_str(descendant).map_err(ge)?;
        let a = match Oid::from_str(ancestor) {
            Ok(a) => a,
            Err(_) => return Ok(false),
        };
        if d == a {
            return Ok(true);
        }
        if self.repo.find_commit(a).is_err() {
            return Ok(false);
        }
        self.repo.graph_descendant_of(d, a).map_err(ge)
    }

    pub fn commit_message(&self, commit: &str) -> Result<String, String> {
        let c = self
            .repo
            .find_commit(Oid::from_str(commit).map_err(ge)?)
            .map_err(ge)?;
        Ok(c.message().unwrap_or_default().to_string())
    }

    /// The blob at `path` (CA-relative) in `commit`, if any; an error if something else is
    /// there.
    pub fn read_file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, String> {
        let tree = self.commit_tree(commit)?;
        match tree.get_path(Path::new(&format!("{}{path}", self.prefix))) {
            Ok(e) if e.kind() != Some(ObjectType::Blob) => Err(format!(
                "{}{path} is not a file in commit {commit}",
                self.prefix
            )),
            Ok(e) => Ok(Some(
                self.repo.find_blob(e.id()).map_err(ge)?.content().to_vec(),
            )),
            Err(_) => Ok(None),
        }
    }

    /// [`GitRepo::read_file`] of an input gitca must read as committed: a symbolic link there
    /// is an error naming it (read as a blob, it held the link's target as text).
    pub fn read_regular_file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, String> {
        let tree = self.commit_tree(commit)?;
        let full = format!("{}{path}", self.prefix);
        if let Ok(e) = tree.get_path(Path::new(&full))
            && e.filemode() == 0o120000
        {
            return Err(format!(
                "{full} is a symbolic link in commit {commit}; gitca reads it only as a regular file"
            ));
        }
        self.read_file(commit, path)
    }

    /// Commits `files` (CA-relative path -> content; None deletes) on top of `parent` on the
    /// current branch. Returns None when the tree would not change. Fails if the branch moved.
    pub fn commit_outputs(
        &self,
        parent: &str,
        files: &BTreeMap<String, Option<Content>>,
        message: &str,
    ) -> Result<Option<String>, String> {
        self.start_outputs_commit(parent, files, message)?
            .map(|pending| self.finish_outputs_commit(pending))
            .transpose()
    }

    /// The first part of [`GitRepo::commit_outputs`]: writes the commit and the work tree, and
    /// starts git updating the index, which at 400,000 entries takes a quarter of a second on
    /// another core. The branch does not move until [`GitRepo::finish_outputs_commit`].
    pub fn start_outputs_commit(
        &self,
        parent: &str,
        files: &BTreeMap<String, Option<Content>>,
        message: &str,
    ) -> Result<Option<PendingCommit>, String> {
        // The branch the commit is for: the one checked out now, not at the end.
        let branch = self.current_branch()?;
        let parent = self
            .repo
            .find_commit(Oid::from_str(parent).map_err(ge)?)
            .map_err(ge)?;
        let base = parent.tree().map_err(ge)?;
        let started = std::time::Instant::now();
        let workdir = self.repo.workdir().map(Path::to_path_buf);
        let rels = self.rels(files);
        // Where gitca may write the index, git answers about attributes, and the index is read
        // (and its checksum checked) on another thread, while the tree and the work tree are
        // checked here.
        let may_own_index = workdir.is_some() && self.may_own_index(files);
        let attributes = may_own_index.then(|| self.ask_attributes(&rels));
        let index_path = self.repo.path().join("index");
        let (checked, opened) = std::thread::scope(|scope| {
            let opening =
                may_own_index.then(|| scope.spawn(|| index_to_update(&index_path, &rels)));
            let checked = self.no_file_in_the_way(&base, files).and_then(|replaced| {
                if let (Some(workdir), true) = (&workdir, may_own_index) {
                    self.make_way(workdir, &base, (&rels, files), &replaced)?;
                }
                Ok(replaced)
            });
            let opened = opening.map(|o| o.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            (checked, opened)
        });
        let replaced = checked?;
        let outputs = Outputs {
            files,
            rels: &rels,
            replaced: &replaced,
        };
        let commit = CommitOf {
            parent: &parent,
            base: &base,
            message,
            started,
        };
        let pending = match (workdir, own_index(opened, attributes)) {
            (Some(workdir), Some(index)) => {
                self.commit_indexed_by_gitca(commit, outputs, &workdir, index)
            }
            (workdir, _) => self.commit_indexed_by_git(commit, outputs, workdir),
        };
        let parent = parent.id();
        Ok(pending?.map(|(id, index_update)| PendingCommit {
            id,
            parent,
            index_update,
            branch,
            rels,
        }))
    }

    /// [`GitRepo::start_outputs_commit`] where git updates the index: it must see the commit's
    /// tree (`git read-tree`), so the work tree is written after the commit.
    fn commit_indexed_by_git(
        &self,
        commit: CommitOf<'_, '_>,
        outputs: Outputs<'_>,
        workdir: Option<PathBuf>,
    ) -> Result<Option<Built>, String> {
        let CommitOf { base, started, .. } = commit;
        let blobs = NewBlobs::of(outputs.files)?;
        let (built, ()) = self.outputs_commit(commit, outputs, blobs, |_| {})?;
        let Some(OutputsCommit { id, tree }) = built else {
            return Ok(None);
        };
        // Update the work tree and the index while HEAD still names the parent; the branch
        // moves in `finish_outputs_commit`, only if it still points at the parent.
        let index_update = match workdir {
            Some(workdir) => Some(self.write_worktree(&workdir, (base, &tree), outputs)?),
            None => None,
        };
        tracing::debug!(elapsed = ?started.elapsed(), "work tree written");
        Ok(Some((id, index_update)))
    }

    /// [`GitRepo::start_outputs_commit`] where gitca updates the index itself: the files are
    /// written on all cores while the blobs, the trees and the commit are (`outputs_commit`),
    /// and the new index is written while the pack is. Each of these steps leaves a core idle
    /// for part of its time, which the others now fill. Should the commit fail, the files
    /// written hold what gitca writes, which the next run's check accepts; the index and the
    /// branch stay as they were.
    fn commit_indexed_by_gitca(
        &self,
        commit: CommitOf<'_, '_>,
        outputs: Outputs<'_>,
        workdir: &Path,
        index: git_index::LockedIndex,
    ) -> Result<Option<Built>, String> {
        let CommitOf { started, .. } = commit;
        let Outputs {
            files,
            rels,
            replaced,
        } = outputs;
        // The ids first: when they were computed on the cores that write the files, they
        // waited for every file to be written.
        let blobs = NewBlobs::of(files)?;
        let (built, index) = std::thread::scope(|scope| {
            let writing = scope.spawn(|| {
                let write = |mut file: std::fs::File, bytes: &[u8]| {
                    use std::io::Write;
                    file.write_all(bytes)?;
                    git_index::stat_of_written(&file)
                };
                write_files(workdir, (rels, files), replaced, &|_| {}, write)
            });
            let index_with = |blobs: &[Option<Oid>]| {
                let stats = writing
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                index.update(workdir, rels, blobs, stats, &|rels| self.hash_as_git(rels))
            };
            self.outputs_commit(commit, outputs, blobs, index_with)
        })?;
        index?.commit()?;
        tracing::debug!(elapsed = ?started.elapsed(), "work tree and index written");
        Ok(built.map(|built| (built.id, None)))
    }

    /// Writes the blobs of `files` (`blobs`: see [`NewBlobs`]), the tree of `base` changed by
    /// them and a commit of it on `parent`; None where the tree does not change. Runs
    /// `meanwhile` on this thread with the blob ids once the commit is written, while the pack
    /// may still be, and returns what it returned.
    ///
    /// Many blobs go into one pack, written on another thread while the trees and the commit
    /// name its blobs by the ids [`NewBlobs::of`] computed from their bytes (the 20,000 files of
    /// a 10,000 issuance: the trees took 20 ms on one core after the pack's 35). The commit is
    /// returned only once libgit2 finds the pack. A few blobs are written loose, one object
    /// each.
    fn outputs_commit<T>(
        &self,
        CommitOf {
            parent,
            base,
            message,
            started,
        }: CommitOf<'_, '_>,
        Outputs {
            files, replaced, ..
        }: Outputs<'_>,
        blobs: NewBlobs<'_>,
        meanwhile: impl FnOnce(&[Option<Oid>]) -> T,
    ) -> Result<(Option<OutputsCommit<'_>>, T), String> {
        let NewBlobs { contents, new, ids } = blobs;
        let Some(ids) = ids else {
            let blobs: Vec<Option<Oid>> = (contents.iter())
                .map(|c| {
                    c.map(|c| self.repo.blob(&c.bytes()).map_err(ge))
                        .transpose()
                })
                .collect::<Result<_, _>>()?;
            tracing::debug!(elapsed = ?started.elapsed(), n = files.len(), "blobs written");
            let committed = self.commit_of(parent, base, (files, &blobs), replaced, message)?;
            return Ok((committed, meanwhile(&blobs)));
        };
        let objects = self.repo.commondir().join("objects");
        // A chain file begins with its leaf, the same part: a delta on the leaf's blob.
        let single: std::collections::HashMap<usize, usize> = new
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((c.only_part()?.as_ptr().addr(), i)))
            .collect();
        let prefix = |i: usize| {
            single
                .get(&new[i].first_of_many()?.as_ptr().addr())
                .copied()
        };
        let mut next = ids.iter().copied();
        let blobs: Vec<Option<Oid>> = contents
            .iter()
            .map(|c| c.and_then(|_| next.next()))
            .collect();
        let (committed, after, packed) = std::thread::scope(|scope| {
            let packing = scope
                .spawn(|| super::git_pack::write_pack(&objects, &new, &ids, content_bytes, prefix));
            // The blobs are not in the object database yet: the trees name them unchecked.
            let committed = {
                let _unchecked = EntriesUnchecked::start();
                self.commit_of(parent, base, (files, &blobs), replaced, message)
            };
            let after = meanwhile(&blobs);
            let packed = packing
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (committed, after, packed)
        });
        packed?;
        tracing::debug!(elapsed = ?started.elapsed(), n = files.len(), "blobs written");
        // libgit2 looks for new packs only when it misses an object: tell it now, and see that
        // it finds the pack the trees name.
        let odb = self.repo.odb().map_err(ge)?;
        odb.refresh().map_err(ge)?;
        if let Some(last) = ids.last()
            && !odb.exists(*last)
        {
            return Err(format!(
                "{}: the pack gitca wrote is not found there",
                objects.display()
            ));
        }
        Ok((committed?, after))
    }

    /// The tree of `base` with `files` at their `blobs` (None deletes), and a commit of it on
    /// `parent`; None where the tree does not change.
    fn commit_of(
        &self,
        parent: &git2::Commit,
        base: &git2::Tree,
        (files, blobs): (&BTreeMap<String, Option<Content>>, &[Option<Oid>]),
        replaced: &Replaced,
        message: &str,
    ) -> Result<Option<OutputsCommit<'_>>, String> {
        // Where a file and a folder swap places, libgit2 fails with "D/F conflict" unless the
        // deletions are made first, in a tree of their own.
        let two_steps = !replaced.is_empty();
        let mut b = git2::build::TreeUpdateBuilder::new();
        let mut after_deletions = git2::build::TreeUpdateBuilder::new();
        for (path, blob) in files.keys().zip(blobs) {
            let full = format!("{}{path}", self.prefix);
            match blob {
                Some(oid) if two_steps => {
                    after_deletions.upsert(full, *oid, git2::FileMode::Blob);
                }
                Some(oid) => {
                    b.upsert(full, *oid, git2::FileMode::Blob);
                }
                None => {
                    b.remove(full);
                }
            }
        }
        let mut tree_id = b.create_updated(&self.repo, base).map_err(ge)?;
        if two_steps {
            let deleted = self.repo.find_tree(tree_id).map_err(ge)?;
            tree_id = (after_deletions.create_updated(&self.repo, &deleted)).map_err(ge)?;
        }
        if tree_id == base.id() {
            return Ok(None);
        }
        let tree = self.repo.find_tree(tree_id).map_err(ge)?;
        let sig = self
            .repo
            .signature()
            .or_else(|_| git2::Signature::now("gitca", "gitca@localhost"))
            .map_err(ge)?;
        let id = self
            .repo
            .commit(None, &sig, &sig, message, &tree, &[parent])
            .map_err(|e| format!("cannot commit the outputs: {}", ge(e)))?;
        Ok(Some(OutputsCommit { id, tree }))
    }

    /// Refuses, naming it, an output that git could not put in the tree: one whose folder, or a
    /// folder above it, the parent commit holds as something else (a file, a link, a submodule)
    /// or this commit writes as a file (two requests whose outputs collide, as `a.yaml` and
    /// `a.pem/x.yaml` would), or one the parent commit holds as a folder or a submodule.
    /// libgit2 would fail with a bare "D/F conflict when updating tree", or "cannot replace".
    /// Each folder is looked up once, and each file in its folder's tree.
    ///
    /// A file this run deletes is out of the way of a folder (`a.pem` becoming `a.pem/x.pem`),
    /// and a folder whose every file this run deletes is out of the way of a file (the other
    /// way round): such paths are returned, as the work tree and the tree must be changed in
    /// two steps there (see [`Replaced`]).
    fn no_file_in_the_way(
        &self,
        base: &git2::Tree,
        files: &BTreeMap<String, Option<Content>>,
    ) -> Result<Replaced, String> {
        let p = &self.prefix;
        let in_base = |rel: &str| base.get_path(Path::new(&format!("{p}{rel}"))).ok();
        let mut replaced = Replaced::default();
        let mut seen = std::collections::HashSet::new();
        // The folder of the files before, and its tree in the parent commit, if one.
        let mut last: Option<(&str, Option<git2::Tree>)> = None;
        for (path, _) in files.iter().filter(|(_, content)| content.is_some()) {
            let folder = folder_of(path);
            if last
                .as_ref()
                .is_none_or(|(seen_folder, _)| *seen_folder != folder)
            {
                let mut up = folder;
                while !up.is_empty() && seen.insert(up) {
                    if matches!(files.get(up), Some(Some(_))) {
                        return Err(format!(
                            "{p}{up} is an output of this run too, where gitca writes {p}{path} \
                             under it: the outputs of two requests collide; rename one of them"
                        ));
                    }
                    if let Some(e) = in_base(up)
                        && e.kind() != Some(ObjectType::Tree)
                    {
                        if matches!(files.get(up), Some(None)) && e.kind() == Some(ObjectType::Blob)
                        {
                            replaced.files.push(format!("{p}{up}"));
                        } else {
                            return Err(format!(
                                "{p}{up} is a file in the commit, where gitca writes {p}{path} \
                                 under it: move or remove it, or rename the request whose output \
                                 it is"
                            ));
                        }
                    }
                    up = folder_of(up);
                }
                let tree = match format!("{p}{folder}").trim_end_matches('/') {
                    "" => Some(base.clone()),
                    at => (base.get_path(Path::new(at)).ok())
                        .and_then(|e| self.repo.find_tree(e.id()).ok()),
                };
                last = Some((folder, tree));
            }
            if let Some((_, Some(tree))) = &last
                && let Some(e) = tree.get_name(name_of(path))
                && e.kind() != Some(ObjectType::Blob)
            {
                if self.all_deleted_under(&e, path, files)? {
                    replaced.folders.push(format!("{p}{path}"));
                } else {
                    return Err(format!(
                        "{p}{path} is a folder or a submodule in the commit, where gitca writes \
                         that file: move or remove it"
                    ));
                }
            }
        }
        Ok(replaced)
    }

    /// Whether `e`, at `path`, is a folder whose every file `files` deletes.
    fn all_deleted_under(
        &self,
        e: &git2::TreeEntry,
        path: &str,
        files: &BTreeMap<String, Option<Content>>,
    ) -> Result<bool, String> {
        if e.kind() != Some(ObjectType::Tree) {
            return Ok(false);
        }
        let tree = self.repo.find_tree(e.id()).map_err(ge)?;
        let mut all = true;
        // Walked to the end: a folder of outputs is small, and an aborted walk is an error.
        walk(&tree, |dir, entry| {
            all &= match (entry.kind(), entry.name()) {
                (Some(ObjectType::Tree), Ok(_)) => true,
                (Some(ObjectType::Blob), Ok(name)) => {
                    matches!(files.get(&format!("{path}/{dir}{name}")), Some(None))
                }
                _ => false,
            };
            Ok(git2::TreeWalkResult::Ok)
        })?;
        Ok(all)
    }

    /// Waits for git to update the index, then moves the branch to the commit if it still
    /// points at the parent. Returns the commit id.
    pub fn finish_outputs_commit(&self, mut pending: PendingCommit) -> Result<String, String> {
        if let Some(update) = pending.index_update.take() {
            update.run.wait()?;
            tracing::debug!(trees_read = update.trees_read, "git index updated");
        }
        // The branch the run started on: another checked out meanwhile must not get the commit.
        let now_on = self.current_branch()?;
        let moved = if now_on != pending.branch {
            Err(format!(
                "{} was checked out while gitca committed its outputs for {}; the outputs \
                 commit is not placed, run again on {}",
                now_on, pending.branch, pending.branch
            ))
        } else {
            (self.repo)
                .reference_matching(
                    &pending.branch,
                    pending.id,
                    true,
                    pending.parent,
                    "gitca: commit outputs",
                )
                .map(|_| ())
                .map_err(|e| {
                    format!(
                        "the branch moved while gitca was committing; run again: {}",
                        ge(e)
                    )
                })
        };
        if let Err(e) = moved {
            // The outputs staged for the commit would go into the next `git commit` made here:
            // unstaged, the work tree's files left (gitca's, which the rerun commits).
            if let Ok(base) = self.repo.find_commit(pending.parent).and_then(|c| c.tree()) {
                self.reset_index(&base, &pending.rels);
            }
            return Err(format!(
                "{e} (the files gitca wrote into the work tree are its outputs, not staged; the \
                 rerun commits them)"
            ));
        }
        Ok(pending.id.to_string())
    }

    /// Whether so many paths are written that gitca may update the index itself (`own_index`).
    fn may_own_index(&self, files: &BTreeMap<String, Option<Content>>) -> bool {
        let to_write = files.values().filter(|c| c.is_some()).count();
        to_write >= self.read_tree_from && self.writes_index
    }

    /// Writes the changed outputs into the work tree and the index, as a checkout of only those
    /// paths would (libgit2's checkout costs about a hundred system calls per file: attribute
    /// files, path resolution). Like a safe checkout, it refuses to overwrite or delete a file
    /// with uncommitted changes. Returns git updating the index; where gitca updates the index
    /// itself, `start_outputs_commit` writes the files instead.
    fn write_worktree(
        &self,
        workdir: &Path,
        (base, tree): (&git2::Tree, &git2::Tree),
        Outputs {
            files,
            rels,
            replaced,
        }: Outputs<'_>,
    ) -> Result<IndexUpdate, String> {
        let started = std::time::Instant::now();
        let to_write = files.values().filter(|c| c.is_some()).count();
        let many = to_write >= self.read_tree_from;
        let (from, to) = (base.id().to_string(), tree.id().to_string());
        // Many paths: git first reads both trees into the index (see below), while the paths
        // are checked here.
        let read_tree = many.then(|| self.spawn_with_input(&["read-tree", "-m", &from, &to], None));
        // Checked already if gitca might have updated the index (`own_index`).
        let checked = match self.may_own_index(files) {
            true => Ok(()),
            false => self.make_way(workdir, base, (rels, files), replaced),
        };
        let trees_read = match read_tree.map(|read| read.and_then(GitRun::wait)) {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::debug!("{e}; git update-index adds every path");
                false
            }
            None => false,
        };
        if let Err(e) = checked {
            if trees_read {
                self.reset_index(base, rels);
            }
            return Err(e);
        }
        tracing::debug!(elapsed = ?started.elapsed(), "work tree checked, trees read");
        // The index is updated by `git update-index` for the paths written: libgit2 reads and
        // rewrites the whole index three times slower than git (0.8 s against 0.25 s for
        // 400,000 entries), whatever the number of paths changed. git stats and hashes the files
        // just written, so the entries carry their stat and plumbing such as `git diff-index`
        // sees a clean tree; the ids are the committed ones unless the repository configures a
        // clean filter for the output folder, which then shows as a change, not silently.
        //
        // With many paths, `git read-tree -m` has read the parent's and the commit's trees into
        // the index (a two-tree merge, linear; the entries of other paths and anything staged
        // for them are kept), so that `git update-index` only replaces entries: alone, it
        // inserts each new path by moving every entry after it. It runs before any file is
        // written: it refuses to move a path whose file no longer matches the index, as a
        // replaced certificate's or CRL's would. Should it refuse anyway (an index with
        // conflicts, say), `git update-index` does the whole job.
        //
        // git hashes each file as soon as it is written, on another core, while the next
        // are written.
        //
        // A file deleted where a folder goes is taken out of the index first, by path alone:
        // `update-index` given its path would find the folder, and refuse it ("is a directory")
        // where the index already has files below it (read from the trees, or left by a run
        // whose branch moved after git had updated the index).
        if !trees_read && !replaced.files.is_empty() {
            let input = all_sent(replaced.files.iter().map(|rel| nul_terminated(rel)));
            let args = ["update-index", "-z", "--force-remove", "--stdin"];
            self.spawn_with_input(&args, Some(input))?.wait()?;
        }
        let (written, paths) = std::sync::mpsc::channel();
        let update = self.spawn_with_input(
            &["update-index", "-z", "--add", "--remove", "--stdin"],
            Some(paths),
        )?;
        // Without the trees read, the paths git was sent, to take back should a write fail.
        let sent = (!trees_read).then(|| std::sync::Mutex::new(replaced.files.clone()));
        let done = |rels: &[&String]| {
            // Copied only in the rare run that replaces a file by a folder.
            let kept: Vec<&String>;
            let rels = match replaced.files.is_empty() {
                true => rels,
                false => {
                    kept = (rels.iter().copied())
                        .filter(|rel| !replaced.files.contains(rel))
                        .collect();
                    &kept
                }
            };
            if rels.is_empty() {
                return;
            }
            if let Some(sent) = &sent {
                let mut sent = sent.lock().expect("not poisoned");
                sent.extend(rels.iter().map(|rel| rel.to_string()));
            }
            // The receiver lives as long as git reads: a send fails only once it has stopped.
            let _ = written.send(rels.iter().flat_map(|rel| nul_terminated(rel)).collect());
        };
        let wrote = write_files(
            workdir,
            (rels, files),
            replaced,
            &done,
            |mut file, bytes| {
                use std::io::Write;
                file.write_all(bytes)?;
                // Left executable (by hand): git would index the output as such.
                git_index::clear_executable(&file)
            },
        );
        drop(written);
        match wrote {
            Ok(_) => {
                tracing::debug!(elapsed = ?started.elapsed(), "work tree files written");
                Ok(IndexUpdate {
                    run: update,
                    trees_read,
                })
            }
            Err(e) => {
                // Back to the parent's entries for the paths git changed: every output's after
                // `git read-tree`, else those sent to `git update-index`.
                if let Err(e) = update.wait() {
                    tracing::warn!("{e}");
                }
                match sent {
                    Some(sent) => self.reset_index(base, &sent.into_inner().expect("not poisoned")),
                    None => self.reset_index(base, rels),
                }
                Err(e)
            }
        }
    }

    /// [`GitRepo::check_worktree`], then a file with other names where an output goes is
    /// removed, so that writing it makes a file of its own: written in place, the other names
    /// would change too.
    fn make_way(
        &self,
        workdir: &Path,
        base: &git2::Tree,
        outputs: (&[String], &BTreeMap<String, Option<Content>>),
        replaced: &Replaced,
    ) -> Result<(), String> {
        for rel in self.check_worktree(workdir, base, outputs, replaced)? {
            std::fs::remove_file(workdir.join(&rel)).map_err(|e| format!("{rel}: {e}"))?;
        }
        Ok(())
    }

    /// Checks every path before any is written, so a refusal leaves the work tree untouched:
    /// no folder on the way is a symbolic link or other non-folder, and a file there already
    /// is a regular file holding what is committed, or what gitca writes or the start of it.
    /// Returns the files to write that have other names (hard links).
    fn check_worktree(
        &self,
        workdir: &Path,
        base: &git2::Tree,
        (rels, files): (&[String], &BTreeMap<String, Option<Content>>),
        replaced: &Replaced,
    ) -> Result<Vec<String>, String> {
        use std::os::unix::fs::MetadataExt;
        // Each folder on the way: present (a plain folder) or absent. Below an absent one
        // nothing exists, which spares a first issuance a failed `lstat` per file.
        let mut folders = std::collections::HashMap::new();
        // A file where a folder goes is absent once deleted: its bytes are checked below, as
        // any file this run deletes. So is a file already written where a folder goes (by a
        // run that failed after its work tree): nothing of the folder is below it.
        for path in replaced.files.iter().chain(&replaced.folders) {
            let abs = workdir.join(path);
            if std::fs::symlink_metadata(&abs).is_ok_and(|m| m.is_file()) {
                folders.insert(abs, false);
            }
        }
        // Files whose bytes are neither the committed blob nor gitca's, with those two ids.
        let mut differing: Vec<(String, [Option<Oid>; 2])> = Vec::new();
        // Files to write that have other names.
        let mut linked = Vec::new();
        // The paths are in git's order, so a folder's files come together: its answer is
        // taken once per run of them, not found again per file (a path built, its components
        // compared and hashed: 5 ms of a 10,000 issuance).
        let mut last: Option<(&str, bool)> = None;
        for (rel, content) in rels.iter().zip(files.values()) {
            let folder = folder_of(rel);
            let present = match last {
                Some((seen, present)) if seen == folder => present,
                _ => {
                    let present = folder_present(&mut folders, workdir, &workdir.join(folder))?;
                    last = Some((folder, present));
                    present
                }
            };
            if !present {
                continue;
            }
            let abs = workdir.join(rel);
            match std::fs::symlink_metadata(&abs) {
                // A folder where a file goes: gone once this run's deletions are made, if it
                // holds nothing else (they are checked as any file this run deletes).
                Ok(m) if m.is_dir() && replaced.folders.contains(rel) => {
                    only_deleted_files(workdir, rel, (rels, files))?;
                }
                // A file deleted where a folder goes, which a run that failed after its work
                // tree made already: the files in it are checked as any others.
                Ok(m) if m.is_dir() && replaced.files.contains(rel) => {}
                Ok(m) if !m.is_file() => {
                    return Err(format!(
                        "{rel} is not a regular file in the work tree; gitca will not replace it"
                    ));
                }
                Ok(m) => {
                    // A file with other names (a hard link, as `cp -al` makes): gitca writes in
                    // place, so it gets a new file of its own instead, as git's checkout does;
                    // the other names keep the old bytes.
                    if content.is_some() && m.nlink() > 1 {
                        linked.push(rel.clone());
                    }
                    let current = std::fs::read(&abs).map_err(|e| format!("{rel}: {e}"))?;
                    // What gitca would write, or the start of it: a run that stopped between
                    // the work tree and the index (git missing, say) left it, or one killed
                    // while it wrote this file left it cut short. Its rerun writes it whole,
                    // which loses nothing the file holds.
                    let ours = content.as_ref().map(Content::bytes);
                    if (ours.as_deref()).is_some_and(|ours| ours.starts_with(&current)) {
                        continue;
                    }
                    let committed = base.get_path(Path::new(rel)).ok().map(|e| e.id());
                    let id = Oid::hash_object(ObjectType::Blob, &current).map_err(ge)?;
                    if Some(id) != committed {
                        let ours = ours
                            .map(|c| Oid::hash_object(ObjectType::Blob, &c))
                            .transpose()
                            .map_err(ge)?;
                        differing.push((rel.clone(), [ours, committed]));
                    }
                }
                Err(_) => {}
            }
        }
        // The bytes differ, but git may see no change: a checkout that converted line endings
        // (`core.autocrlf`) or ran a filter writes other bytes than the blob's. git hashes the
        // files as it would add them, each by its path's attributes.
        if differing.is_empty() {
            return Ok(linked);
        }
        let asked: Vec<String> = differing.iter().map(|(rel, _)| rel.clone()).collect();
        let ids = self.hash_as_git(&asked)?;
        for ((rel, allowed), id) in differing.iter().zip(ids) {
            if !allowed.contains(&Some(id)) {
                return Err(format!(
                    "{rel} has uncommitted changes in the work tree; gitca will not overwrite it"
                ));
            }
        }
        Ok(linked)
    }

    /// The blob ids git would give the work-tree files `rels` if it added them: by each path's
    /// attributes and `core.autocrlf` (`git hash-object --stdin-paths`), one per path.
    fn hash_as_git(&self, rels: &[String]) -> Result<Vec<Oid>, String> {
        // git reads each line as a path, C-unquoted if it starts with a quote, and drops a
        // carriage return at its end: such a path would name another file.
        let unsafe_line = |rel: &&String| rel.starts_with('"') || rel.contains(['\n', '\r']);
        if let Some(rel) = rels.iter().find(unsafe_line) {
            return Err(format!("{rel:?}: a path git hash-object cannot be given"));
        }
        let input = all_sent(rels.iter().map(|rel| [rel.as_bytes(), b"\n"].concat()));
        let out = self
            .spawn_git(&["hash-object", "--stdin-paths"], Some(input), true)?
            .wait_output()?;
        let said = String::from_utf8_lossy(&out);
        let ids: Vec<&str> = said.lines().collect();
        if ids.len() != rels.len() {
            return Err(format!(
                "git hash-object gave {} ids for {} files",
                ids.len(),
                rels.len()
            ));
        }
        (rels.iter().zip(ids))
            .map(|(rel, id)| {
                Oid::from_str(id).map_err(|e| format!("git hash-object for {rel}: {}", ge(e)))
            })
            .collect()
    }

    /// Asks git whether any attribute is set on one of `rels` (`text`, `eol`, a filter, `ident`,
    /// an encoding, or another): git would add such a file through its conversions, so an index
    /// entry gitca writes could hide a difference that `git update-index` would show. git
    /// answers as it reads attributes when it adds a file: the work tree's `.gitattributes`
    /// (the index's where the work tree has none), `info/attributes`, the global and system
    /// files. `core.autocrlf` alone leaves the blob of a file with LF line endings, which every
    /// output is, as it is. Should git fail to answer, the answer is yes.
    fn ask_attributes(&self, rels: &[String]) -> AttributesAsked {
        let input = all_sent(rels.iter().map(|rel| nul_terminated(rel)));
        let args = ["check-attr", "-a", "-z", "--stdin"];
        AttributesAsked(Some(self.spawn_git(&args, Some(input), true)))
    }

    /// The work-tree paths of `files`.
    fn rels(&self, files: &BTreeMap<String, Option<Content>>) -> Vec<String> {
        let rel = |path: &String| format!("{}{path}", self.prefix);
        files.keys().map(rel).collect()
    }

    /// Sets the index entries of `rels` back to the parent's (`git reset` with paths leaves the
    /// work tree alone); a failure is logged, as the run is failing already.
    fn reset_index(&self, base: &git2::Tree, rels: &[String]) {
        let input = all_sent(rels.iter().map(|rel| nul_terminated(rel)));
        let base = base.id().to_string();
        let args = [
            "reset",
            "-q",
            &base,
            "--pathspec-from-file=-",
            "--pathspec-file-nul",
        ];
        if let Err(e) = self
            .spawn_with_input(&args, Some(input))
            .and_then(GitRun::wait)
        {
            tracing::warn!("the git index keeps some of the outputs staged: {e}");
        }
    }

    /// Starts the git CLI in the work tree with what `input` receives on its standard input,
    /// as it arrives, until every sender is dropped.
    fn spawn_with_input(
        &self,
        args: &[&str],
        input: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
    ) -> Result<GitRun, String> {
        self.spawn_git(args, input, false)
    }

    /// [`GitRepo::spawn_with_input`], keeping what git prints on its standard output if
    /// `capture` (see [`GitRun::wait_output`]).
    fn spawn_git(
        &self,
        args: &[&str],
        input: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
        capture: bool,
    ) -> Result<GitRun, String> {
        use std::io::Write;
        let what = format!("git {}", args[0]);
        // This repository and its own index, whatever GIT_DIR or GIT_INDEX_FILE the caller's
        // environment sets (a hook's, say): libgit2 ignores them too.
        let mut child = self
            .git()
            // gitca's outputs are LF, stored as written: with `core.autocrlf`, `core.safecrlf`
            // would refuse them after they were signed, on every run.
            .args(["-c", "core.safecrlf=false"])
            .args(args)
            // Paths are paths, not patterns.
            .env("GIT_LITERAL_PATHSPECS", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(match capture {
                true => std::process::Stdio::piped(),
                false => std::process::Stdio::null(),
            })
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {what} (gitca needs the git command): {e}"))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // The input is written from another thread while standard error is read: git may warn
        // once per path (line-ending conversion, say), and with both pipes full each side would
        // wait on the other for ever. What arrived meanwhile goes in one write.
        let writing = move || -> std::io::Result<()> {
            let Some(input) = input else {
                return Ok(());
            };
            let mut batch = Vec::new();
            while let Ok(first) = input.recv() {
                batch.extend_from_slice(&first);
                while batch.len() < 1 << 16 {
                    match input.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                stdin.write_all(&batch)?;
                batch.clear();
            }
            Ok(())
        };
        let writer = match std::thread::Builder::new().spawn(writing) {
            Ok(writer) => writer,
            Err(e) => {
                // Not left running unattended (update-index would take the index lock).
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: cannot start a thread: {e}"));
            }
        };
        Ok(GitRun {
            what,
            child,
            writer,
        })
    }
}

/// Writes the outputs into the work tree on all cores (creating a file is most of the
/// cost: inode allocation) with `write`, and calls `done` with each batch of paths once their
/// files are in place or gone: a message per path woke git's input writer per file (two
/// futex calls and a pipe write each). Deletions go first, so a file removed where a new
/// folder goes (`a.pem` becoming `a.pem/b.pem`) is gone before the folder is made. Returns
/// what `write` returned for each file written, in order.
fn write_files<R: Send>(
    workdir: &Path,
    (rels, files): (&[String], &BTreeMap<String, Option<Content>>),
    replaced: &Replaced,
    done: &(dyn Fn(&[&String]) + Sync),
    write: impl Fn(std::fs::File, &[u8]) -> std::io::Result<R> + Sync,
) -> Result<Vec<R>, String> {
    let deleted: Vec<&String> = rels
        .iter()
        .zip(files.values())
        .filter_map(|(rel, content)| content.is_none().then_some(rel))
        .collect();
    let written: Vec<(&String, &Content)> = rels
        .iter()
        .zip(files.values())
        .filter_map(|(rel, content)| Some((rel, content.as_ref()?)))
        .collect();
    each_reported(
        &deleted,
        |rel| rel,
        |rel| match std::fs::remove_file(workdir.join(rel)) {
            // Gone, or cannot be there: a folder on its path is a file (one this run
            // writes where a folder was, left by a run that failed after its work tree).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(()),
            // The folder this run makes in place of the file, made by such a run.
            Err(e)
                if e.kind() == std::io::ErrorKind::IsADirectory && replaced.files.contains(rel) =>
            {
                Ok(())
            }
            gone => gone,
        },
        done,
    )?;
    // A folder where a file goes is empty now, but for its own folders.
    for folder in &replaced.folders {
        remove_empty_folders(&workdir.join(folder)).map_err(|e| format!("{folder}: {e}"))?;
    }
    // Each folder made and opened once; each file is then created by its name in its
    // folder, so the kernel resolves one path component per file, not the whole path (about
    // a tenth of the cost of creating 20,000 files on tmpfs).
    // Folders and names split as strings: a `Path`'s parent, file name and order are found
    // by parsing its components, once per file otherwise.
    let dirs: std::collections::BTreeSet<&str> =
        written.iter().map(|(rel, _)| folder_of(rel)).collect();
    let mut opened = BTreeMap::new();
    for dir in dirs {
        let at = |e: std::io::Error| format!("{dir}: {e}");
        std::fs::create_dir_all(workdir.join(dir)).map_err(at)?;
        opened.insert(dir, open_folder(&workdir.join(dir)).map_err(at)?);
    }
    each_reported(
        &written,
        |(rel, _)| rel,
        |(rel, content)| {
            let name = name_of(rel);
            if name.is_empty() {
                return Err(std::io::Error::other("not a file path"));
            }
            let dir = &opened[folder_of(rel)];
            write(
                create_in(dir, std::ffi::OsStr::new(name))?,
                &content.bytes(),
            )
        },
        done,
    )
}

/// libgit2 looks up each entry's object as it builds a tree, to refuse one naming an object
/// the repository lacks: a pack lookup per entry, 11 ms of the trees of a 10,000 issuance's
/// 20,000 outputs. The blobs gitca packs need no such lookup (and are not in the pack yet
/// while the trees are built): their ids are the ones it computed from the bytes it writes, and
/// the commit is used only once libgit2 finds the pack (`outputs_commit`). So the check is off
/// while a tree takes them, and on again after. libgit2's switch is one
/// for the process: a lock keeps two such trees from turning it on under each other.
struct EntriesUnchecked {
    _held: std::sync::MutexGuard<'static, ()>,
}

static ENTRIES_UNCHECKED: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl EntriesUnchecked {
    fn start() -> EntriesUnchecked {
        let held = ENTRIES_UNCHECKED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        git2::opts::strict_object_creation(false);
        EntriesUnchecked { _held: held }
    }
}

impl Drop for EntriesUnchecked {
    fn drop(&mut self) {
        git2::opts::strict_object_creation(true);
    }
}

/// An outputs commit written, and git updating the index for it (where git does).
type Built = (Oid, Option<IndexUpdate>);

/// An outputs commit written, its work tree in place and git updating the index: pass it to
/// [`GitRepo::finish_outputs_commit`], which waits for git and moves the branch. Dropped instead
/// (an error between the start and the finish), it waits for git and leaves the branch where it
/// was; the next run converges.
#[must_use = "finish_outputs_commit moves the branch"]
pub struct PendingCommit {
    id: Oid,
    parent: Oid,
    index_update: Option<IndexUpdate>,
    /// The branch it is for (its full name), the one checked out when it was started.
    branch: String,
    /// The paths it writes (repository-relative), staged in the index until the branch moves.
    rels: Vec<String>,
}

/// git updating the index for an outputs commit.
struct IndexUpdate {
    run: GitRun,
    /// Whether `git read-tree` read both trees into the index first.
    trees_read: bool,
}

impl PendingCommit {
    pub fn id(&self) -> String {
        self.id.to_string()
    }

    /// How the index got the outputs (see `own_index`): gitca wrote it, or
    /// `git update-index` added them after `git read-tree` read both trees, or alone.
    #[cfg(test)]
    fn indexed_by(&self) -> &'static str {
        match &self.index_update {
            None => "gitca",
            Some(u) if u.trees_read => "read-tree, update-index",
            Some(_) => "update-index",
        }
    }
}

impl Drop for PendingCommit {
    fn drop(&mut self) {
        // Never leave git writing the index unattended: the run may be about to exit.
        if let Some(update) = self.index_update.take()
            && let Err(e) = update.run.wait()
        {
            tracing::warn!("{e}");
        }
    }
}

/// What an outputs commit goes on: its parent, the parent's tree, its message, and when the
/// run's commit started (for the debug log's times).
#[derive(Clone, Copy)]
struct CommitOf<'c, 'r> {
    parent: &'c git2::Commit<'r>,
    base: &'c git2::Tree<'r>,
    message: &'c str,
    started: std::time::Instant,
}

/// The changes of an outputs commit: each file's new content (None deletes it), at its
/// work-tree path in `rels` (in the same order), and where a file and a folder swap places.
#[derive(Clone, Copy)]
struct Outputs<'a> {
    files: &'a BTreeMap<String, Option<Content>>,
    rels: &'a [String],
    replaced: &'a Replaced,
}

/// The blobs of an outputs commit's files. Where they are many, their ids are computed from
/// their bytes first, on all cores: the pack that holds them is then written on a thread of its
/// own while the trees name them (`GitRepo::outputs_commit`), and nothing else is queued ahead
/// of the ids on the cores (the work-tree files, `GitRepo::commit_indexed_by_gitca`).
struct NewBlobs<'a> {
    /// Each file's content; None deletes it.
    contents: Vec<Option<&'a Content>>,
    /// The contents written.
    new: Vec<&'a Content>,
    /// The ids of `new`, where they go into a pack; None where they are written loose, by
    /// libgit2, as the commit is.
    ids: Option<Vec<Oid>>,
}

impl<'a> NewBlobs<'a> {
    fn of(files: &'a BTreeMap<String, Option<Content>>) -> Result<NewBlobs<'a>, String> {
        let contents: Vec<Option<&Content>> = files.values().map(Option::as_ref).collect();
        let new: Vec<&Content> = contents.iter().flatten().copied().collect();
        let ids = (new.len() >= super::git_pack::PACK_FROM)
            .then(|| super::git_pack::blob_ids(&new, content_bytes))
            .transpose()?;
        Ok(NewBlobs { contents, new, ids })
    }
}

fn content_bytes<'a>(c: &'a &Content) -> std::borrow::Cow<'a, [u8]> {
    c.bytes()
}

/// An outputs commit written (`GitRepo::outputs_commit`), its branch not moved yet.
struct OutputsCommit<'r> {
    id: Oid,
    tree: git2::Tree<'r>,
}

/// The index gitca writes itself, where it may (many paths written, `GitRepo::may_own_index`):
/// `opened` by [`index_to_update`], and no attribute on the outputs (`attributes`). Otherwise
/// None, and git updates the index (`GitRepo::write_worktree`), the work tree checked already
/// where gitca might have updated the index.
///
/// gitca writes the files and the index entries itself, with each file's stat taken from
/// the open file, so no file is read back and hashed (`git update-index` costs about as
/// much CPU again as writing the files, and git's checkout 100 ms more than gitca's writes:
/// a 10,000 issuance is 70-95 ms faster this way on one core than with git's checkout, and
/// 115 ms faster with two cores than with update-index). Only where the index then says
/// what git would: no attribute on an output path (git would add such a file through its
/// filters, and a clean filter's change must show), and an index gitca can keep whole
/// (`LockedIndex::open`) with nothing in the way of a path.
fn own_index(
    opened: Option<Result<git_index::LockedIndex, String>>,
    attributes: Option<AttributesAsked>,
) -> Option<git_index::LockedIndex> {
    let has_attributes = attributes.map(AttributesAsked::answer);
    match (opened?, has_attributes?) {
        (Ok(index), false) => Some(index),
        (Ok(_), true) => {
            tracing::debug!("git attributes on the outputs: git updates the index");
            None
        }
        (Err(why), _) => {
            tracing::debug!("{why}: git updates the index");
            None
        }
    }
}

/// The git index at `path`, locked, for gitca to update the entries of the work-tree paths
/// `rels` itself (see [`own_index`]), or why git should.
fn index_to_update(path: &Path, rels: &[String]) -> Result<git_index::LockedIndex, String> {
    let index = git_index::LockedIndex::open(path)?;
    if let Some(path) = index.blocked(rels.iter().map(String::as_str)) {
        return Err(format!(
            "the git index has a file or folder in the way of {path}"
        ));
    }
    Ok(index)
}

/// `git check-attr` asked about the outputs' paths (`GitRepo::ask_attributes`); waited for
/// when answered, or when dropped unanswered (a check failed meanwhile).
struct AttributesAsked(Option<Result<GitRun, String>>);

impl AttributesAsked {
    /// Whether git named any attribute; should it fail to answer, the answer is yes.
    fn answer(mut self) -> bool {
        let asked = self.0.take().expect("answered once");
        match asked.and_then(GitRun::wait_output) {
            Ok(out) if out.is_empty() => false,
            Ok(out) => {
                let first: Vec<String> = (out.split(|b| *b == 0).take(3))
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                tracing::debug!("git attributes on the outputs ({})", first.join(" "));
                true
            }
            Err(e) => {
                tracing::warn!("{e}; taken as attributes on the outputs");
                true
            }
        }
    }
}

impl Drop for AttributesAsked {
    fn drop(&mut self) {
        if let Some(Ok(run)) = self.0.take() {
            let _ = run.wait_output();
        }
    }
}

/// A git command running with its input being written.
struct GitRun {
    what: String,
    child: std::process::Child,
    writer: std::thread::JoinHandle<std::io::Result<()>>,
}

impl GitRun {
    /// Waits for the command (reading what it prints) and for its input to be written.
    fn wait(self) -> Result<(), String> {
        self.wait_output().map(drop)
    }

    /// [`GitRun::wait`], returning what the command printed on its standard output if it was
    /// captured (empty otherwise).
    fn wait_output(self) -> Result<Vec<u8>, String> {
        let what = self.what;
        let out = self.child.wait_with_output();
        let written = self
            .writer
            .join()
            .map_err(|_| format!("{what}: writing its input panicked"))?;
        let out = out.map_err(|e| format!("{what}: {e}"))?;
        succeeded(&what, &out)?;
        let said = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
        if !lines.is_empty() {
            // git may warn once per file: the first few, and how many more.
            const SHOWN: usize = 5;
            let more = lines.len().saturating_sub(SHOWN);
            let more = (more > 0).then(|| format!(" (and {more} more lines)"));
            tracing::warn!(
                "{what}: {}{}",
                lines[..lines.len().min(SHOWN)].join("; "),
                more.unwrap_or_default()
            );
        }
        written.map_err(|e| format!("{what}: {e}"))?;
        Ok(out.stdout)
    }
}

/// A path as `git update-index -z` and `--pathspec-file-nul` read it.
fn nul_terminated(rel: &str) -> Vec<u8> {
    [rel.as_bytes(), b"\0"].concat()
}

/// Runs `op` on each item (a work-tree path, `rel` of it) on all cores, in batches small
/// enough that a few hundred files still spread over every thread and reach git while the rest
/// are done, and reports each batch's paths to `done`; what was done before a failure is
/// reported too (the caller takes it back). Returns what `op` returned, in order.
fn each_reported<'a, T: Sync, R: Send>(
    items: &[T],
    rel: impl Fn(&T) -> &'a String + Sync,
    op: impl Fn(&T) -> std::io::Result<R> + Sync,
    done: &(dyn Fn(&[&String]) + Sync),
) -> Result<Vec<R>, String> {
    use rayon::prelude::*;
    let size = (items.len() / (4 * rayon::current_num_threads())).clamp(1, DONE_BATCH);
    let batches: Vec<Vec<R>> = items
        .par_chunks(size)
        .map(|batch| {
            let mut failure = None;
            let results: Vec<R> = batch
                .iter()
                .map_while(|item| match op(item) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        failure = Some(format!("{}: {e}", rel(item)));
                        None
                    }
                })
                .collect();
            let paths: Vec<&String> = batch[..results.len()].iter().map(&rel).collect();
            done(&paths);
            failure.map_or(Ok(results), Err)
        })
        .collect::<Result<_, _>>()?;
    Ok(batches.into_iter().flatten().collect())
}

/// From this many entries, a snapshot's blobs are read on all cores (`GitRepo::read_found`).
const PARALLEL_READ_FROM: usize = 256;

/// A tree entry met in a walk: what reading it needs, without the tree it borrows.
struct Found {
    path: String,
    kind: Option<ObjectType>,
    filemode: i32,
    id: Oid,
}

impl Found {
    fn of(path: String, e: &git2::TreeEntry) -> Found {
        Found {
            path,
            kind: e.kind(),
            filemode: e.filemode(),
            id: e.id(),
        }
    }
}

/// A tree entry as the snapshot holds it: folders are None, an oversized blob is not read.
fn read_entry(odb: &git2::Odb, f: &Found) -> Result<Option<TreeEntry>, String> {
    let path = &f.path;
    let fail = |err: git2::Error| format!("{path}: {}", ge(err));
    Ok(match f.kind {
        Some(ObjectType::Commit) => Some(TreeEntry::Submodule),
        Some(ObjectType::Blob) if f.filemode == 0o120000 => Some(TreeEntry::Symlink),
        Some(ObjectType::Blob) => {
            let (size, _) = odb.read_header(f.id).map_err(fail)?;
            Some(if size as u64 > blob_limit(path) {
                TreeEntry::TooLarge(size as u64)
            } else {
                // From the object database: libgit2's object cache, which keeps no
                // blobs, would only add a lookup and a lock per blob.
                let object = odb.read(f.id).map_err(fail)?;
                if object.kind() != ObjectType::Blob {
                    return Err(format!(
                        "{path}: the tree names a {} as a file",
                        object.kind()
                    ));
                }
                TreeEntry::Blob(object.data().to_vec())
            })
        }
        _ => None,
    })
}

/// Walks `tree` in pre-order, `visit` deciding at each entry; its first error is returned as
/// it is (libgit2 reports an aborted walk only as a bare error code).
fn walk(
    tree: &git2::Tree,
    mut visit: impl FnMut(&str, &git2::TreeEntry) -> Result<git2::TreeWalkResult, String>,
) -> Result<(), String> {
    let mut err = None;
    let walked = tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        refuse_bad_entry_name(dir, entry.name_bytes())
            .and_then(|()| visit(dir, entry))
            .unwrap_or_else(|e| {
                err = Some(e);
                git2::TreeWalkResult::Abort
            })
    });
    match err {
        Some(e) => Err(e),
        None => walked.map_err(ge),
    }
}

/// Refuses a tree entry git itself would refuse to check out: an empty name, `.`, `..`, `.git`
/// (in any case) or one holding a `/` or a NUL. Such trees come only from plumbing (`git
/// mktree`); a request path through `..` would name outputs outside the output folder.
fn refuse_bad_entry_name(dir: &str, name: &[u8]) -> Result<(), String> {
    let bad = name.is_empty()
        || name == b"."
        || name == b".."
        || name.eq_ignore_ascii_case(b".git")
        || name.iter().any(|&b| b == b'/' || b == 0);
    match bad {
        false => Ok(()),
        true => Err(format!(
            "{dir}{}: a tree entry git would refuse to check out; gitca reads and writes no \
             path through it (rewrite that commit)",
            String::from_utf8_lossy(name)
        )),
    }
}

/// The path of an entry met in a tree walk under `dir`, its name's odd bytes replaced: for an
/// entry whose name is not UTF-8, which gitca never reads under a stand-in name two such
/// entries could share.
fn lossy_path(dir: &str, entry: &git2::TreeEntry) -> String {
    format!("{dir}{}", String::from_utf8_lossy(entry.name_bytes()))
}

/// What [`GitRepo::diff_trees`] found: the changed paths, and the first changed entry whose
/// name is not UTF-8 (left out of `changes`), shown with its odd bytes replaced.
#[derive(Default)]
struct TreeDiff {
    changes: Vec<crate::domain::incremental::Change>,
    unnamed: Option<String>,
}

impl TreeDiff {
    /// The changes, or why they cannot be named.
    fn named(self) -> Result<Vec<crate::domain::incremental::Change>, String> {
        match self.unnamed {
            Some(path) => Err(format!(
                "{path}: a file or folder whose name is not UTF-8 changed"
            )),
            None => Ok(self.changes),
        }
    }
}

/// A work-tree folder to create files in; a symbolic link in its place is refused.
fn open_folder(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

/// Creates or truncates the file `name` in `dir` for writing, as `File::create` would, except
/// that a symbolic link in its place is refused rather than followed.
fn create_in(dir: &std::os::fd::OwnedFd, name: &std::ffi::OsStr) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let flags =
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(0o666);
    Ok(rustix::fs::openat(dir, name, flags, mode)?.into())
}

/// Input for [`GitRepo::spawn_with_input`] that is all known already.
fn all_sent(chunks: impl IntoIterator<Item = Vec<u8>>) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (send, input) = std::sync::mpsc::channel();
    for chunk in chunks {
        send.send(chunk).expect("the receiver is held here");
    }
    input
}

impl GitRepo {
    /// Pushes the current branch to its upstream with the git CLI, so credential helpers and the
    /// auth headers CI systems configure apply. Returns Ok(false) when the remote moved.
    pub fn push(&self) -> Result<bool, String> {
        let (remote, branch) = self.upstream()?;
        let out = self
            .git()
            .args([
                "push",
                "--porcelain",
                &remote,
                &format!("HEAD:refs/heads/{branch}"),
            ])
            .output()
            .map_err(|e| format!("cannot run git push: {e}"))?;
        if out.status.success() {
            return Ok(true);
        }
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("[rejected]")
            || text.contains("non-fast-forward")
            || text.contains("fetch first")
        {
            return Ok(false);
        }
        Err(format!("git push failed: {}", text.trim()))
    }

    /// Fetches the upstream and moves the current branch to it, dropping only `ours` (the
    /// outputs commit gitca made, which is reproducible from the state). Returns the new head.
    pub fn reset_to_upstream(&self, ours: &str, source: &str) -> Result<String, String> {
        let (remote, branch) = self.upstream()?;
        let out = self
            .git()
            .args(["fetch", "--quiet", &remote, &format!("refs/heads/{branch}")])
            .output()
            .map_err(|e| format!("cannot run git fetch: {e}"))?;
        succeeded("git fetch", &out)?;
        let fetched = self.resolve("FETCH_HEAD")?;
        let head = self.resolve("HEAD")?;
        if head != ours && head != source {
            return Err("the branch has commits gitca did not make; refusing to reset it".into());
        }
        // The reviewed commit was on the remote when the run began; a remote that no longer
        // holds it was rewritten, and the reset would drop what was just signed for it.
        if !self.descends_from(&fetched, source)? {
            return Err(format!(
                "the remote's {branch} no longer holds the commit this run signed for ({source}): \
                 its history was rewritten; the state is saved, check the remote, then run apply again"
            ));
        }
        // git moves the branch, its index and the work tree to the remote's commit, keeping
        // uncommitted edits and refusing where one would be overwritten (`reset --keep`). It
        // respects a sparse checkout, where libgit2's status reports every file left out as
        // deleted. (A forced checkout used to overwrite edits anywhere in the work tree.)
        let out = self
            .git()
            .args(["reset", "--quiet", "--keep", &fetched])
            .output()
            .map_err(|e| format!("cannot run git reset: {e}"))?;
        succeeded(
            "git reset --keep (uncommitted changes where the remote's branch differs? the \
             state is saved: commit or stash them, then run apply again)",
            &out,
        )?;
        Ok(fetched)
    }

    /// Commits of HEAD that its upstream's remote-tracking branch does not hold, newest first:
    /// what was not pushed, so not merged by review there. Refused when there is no such branch.
    pub fn unpushed_commits(&self) -> Result<Vec<String>, String> {
        let (remote, branch) = self.upstream()?;
        let tracking = format!("refs/remotes/{remote}/{branch}");
        let theirs = self.repo.refname_to_id(&tracking).map_err(|_| {
            format!("no remote-tracking branch {tracking} to push to: fetch it (git fetch {remote}) first")
        })?;
        let head = self
            .repo
            .head()
            .map_err(ge)?
            .peel_to_commit()
            .map_err(ge)?
            .id();
        let mut walk = self.repo.revwalk().map_err(ge)?;
        walk.push(head).map_err(ge)?;
        walk.hide(theirs).map_err(ge)?;
        walk.map(|c| c.map(|c| c.to_string()).map_err(ge)).collect()
    }

    /// Whether `commit` has one parent and changes nothing but paths of the CA folder that
    /// `outputs` holds (gitca's outputs commit does so): nothing in the whole repository that a
    /// plan reads, or that a push of it would publish unreviewed.
    pub fn changes_only(
        &self,
        commit: &str,
        outputs: impl Fn(&str) -> bool,
    ) -> Result<bool, String> {
        let c = (self.repo)
            .find_commit(Oid::from_str(commit).map_err(ge)?)
            .map_err(ge)?;
        if c.parent_count() != 1 {
            return Ok(false);
        }
        let parent = c.parent(0).map_err(ge)?.tree().map_err(ge)?;
        let tree = c.tree().map_err(ge)?;
        let diff = (self.repo)
            .diff_tree_to_tree(Some(&parent), Some(&tree), None)
            .map_err(ge)?;
        Ok(diff.deltas().all(|d| {
            [d.old_file().path(), d.new_file().path()]
                .into_iter()
                .flatten()
                .all(|p| {
                    let p = p.to_string_lossy();
                    p.strip_prefix(&self.prefix).is_some_and(&outputs)
                })
        }))
    }

    fn upstream(&self) -> Result<(String, String), String> {
        let name = self.current_branch()?;
        let short = name.trim_start_matches("refs/heads/").to_string();
        let cfg = self.repo.config().map_err(ge)?;
        let remote = cfg
            .get_string(&format!("branch.{short}.remote"))
            .unwrap_or_else(|_| "origin".to_string());
        let merge = cfg
            .get_string(&format!("branch.{short}.merge"))
            .map(|m| m.trim_start_matches("refs/heads/").to_string())
            .unwrap_or(short);
        Ok((remote, merge))
    }

    /// A git command on this repository and its own index, whatever GIT_DIR, GIT_WORK_TREE
    /// or GIT_INDEX_FILE the caller's environment sets (a hook's, say): libgit2 ignores them
    /// too, and a push under another GIT_DIR pushed another repository.
    fn git(&self) -> Command {
        let mut c = Command::new("git");
        let dir = self.repo.workdir().unwrap_or_else(|| self.repo.path());
        c.current_dir(dir).env("GIT_DIR", self.repo.path());
        // Every variable that points git at another repository's parts (a hook's, a CI
        // wrapper's): blobs were written into the object store GIT_OBJECT_DIRECTORY named.
        for var in [
            "GIT_INDEX_FILE",
            "GIT_WORK_TREE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_COMMON_DIR",
            "GIT_NAMESPACE",
        ] {
            c.env_remove(var);
        }
        c
    }
}

impl GitRepo {
    /// Every blob under `folder` (CA-relative) in `commit`, by CA-relative path.
    pub fn files_under(
        &self,
        commit: &str,
        folder: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, String> {
        self.blobs_under(commit, folder)?
            .into_iter()
            .map(|(path, id)| {
                let bytes = self.blob(&id).map_err(|e| format!("{path}: {e}"))?;
                Ok((path, bytes))
            })
            .collect()
    }

    /// Every blob id under `folder` (CA-relative) in `commit`, by CA-relative path: what a
    /// full check of the outputs walks, reading each file only when it needs it.
    pub fn blobs_under(
        &self,
        commit: &str,
        folder: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let root = self.commit_tree(commit)?;
        let mut out = BTreeMap::new();
        let Ok(e) = root.get_path(Path::new(&format!("{}{folder}", self.prefix))) else {
            return Ok(out);
        };
        let Ok(tree) = self.repo.find_tree(e.id()) else {
            return Ok(out);
        };
        walk(&tree, |dir, entry| {
            // gitca could not name such a file to remove it, as it removes what it did not
            // write.
            let name = (entry.name())
                .map_err(|_| not_utf8(&lossy_path(&format!("{folder}/{dir}"), entry)))?;
            if entry.kind() == Some(ObjectType::Blob) {
                out.insert(format!("{folder}/{dir}{name}"), entry.id().to_string());
            }
            Ok(git2::TreeWalkResult::Ok)
        })?;
        Ok(out)
    }

    /// The blob id at `path` (CA-relative) in `commit`, if a blob is there.
    pub fn blob_at(&self, commit: &str, path: &str) -> Result<Option<String>, String> {
        Ok(self
            .commit_tree(commit)?
            .get_path(Path::new(&format!("{}{path}", self.prefix)))
            .ok()
            .filter(|e| e.kind() == Some(ObjectType::Blob))
            .map(|e| e.id().to_string()))
    }

    /// The content of a blob.
    /// The id git gives a blob of these bytes.
    pub fn blob_id(&self, bytes: &[u8]) -> String {
        Oid::hash_object(git2::ObjectType::Blob, bytes)
            .map(|o| o.to_string())
            .unwrap_or_default()
    }

    pub fn blob(&self, id: &str) -> Result<Vec<u8>, String> {
        let id = Oid::from_str(id).map_err(ge)?;
        Ok(self.repo.find_blob(id).map_err(ge)?.content().to_vec())
    }
}

/// The folder of the work-tree path `rel` ("" at the top), as `Path::parent` gives it for
/// the normalised paths of a git tree.
fn folder_of(rel: &str) -> &str {
    rel.rfind('/').map_or("", |slash| &rel[..slash])
}

/// The file name of the work-tree path `rel`, as `Path::file_name` gives it for the normalised
/// paths of a git tree.
fn name_of(rel: &str) -> &str {
    rel.rfind('/').map_or(rel, |slash| &rel[slash + 1..])
}

/// Work-tree paths where an outputs commit puts a folder in place of a file it deletes
/// (`files`), or a file in place of a folder it empties (`folders`): the deletions go first,
/// in the tree and in the work tree.
#[derive(Debug, Default)]
struct Replaced {
    files: Vec<String>,
    folders: Vec<String>,
}

impl Replaced {
    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.folders.is_empty()
    }
}

/// Refuses a work-tree folder `rel` that holds anything but folders and files this run deletes
/// (`rels` with no content in `files`): gitca would have to remove it to write its file there.
fn only_deleted_files(
    workdir: &Path,
    rel: &str,
    (rels, files): (&[String], &BTreeMap<String, Option<Content>>),
) -> Result<(), String> {
    let deleted: std::collections::HashSet<&str> = (rels.iter().zip(files.values()))
        .filter(|(_, content)| content.is_none())
        .map(|(rel, _)| rel.as_str())
        .collect();
    let mut folders = vec![rel.to_string()];
    while let Some(folder) = folders.pop() {
        let entries =
            std::fs::read_dir(workdir.join(&folder)).map_err(|e| format!("{folder}: {e}"))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{folder}: {e}"))?;
            let name = entry.file_name();
            let kind = entry.file_type().map_err(|e| format!("{folder}: {e}"))?;
            let path = format!("{folder}/{}", name.to_string_lossy());
            match name.to_str() {
                Some(_) if kind.is_dir() => folders.push(path),
                Some(_) if kind.is_file() && deleted.contains(path.as_str()) => {}
                _ => {
                    return Err(format!(
                        "{path} is in the work tree where gitca writes the file {rel}: move or \
                         remove it"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Removes `dir` and the folders below it, all empty; absent, or a file already (the one
/// gitca writes there, by a run that failed after its work tree), is fine.
fn remove_empty_folders(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(()),
        entries => entries?,
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_empty_folders(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Whether `dir` (inside `workdir`) is a plain folder, `false` if it or a folder above it is
/// absent; an error if one is a symbolic link or other non-folder, which gitca never writes
/// through (it could point outside the work tree). Answers are kept in `known`.
fn folder_present(
    known: &mut std::collections::HashMap<PathBuf, bool>,
    workdir: &Path,
    dir: &Path,
) -> Result<bool, String> {
    if dir == workdir || !dir.starts_with(workdir) {
        return Ok(true);
    }
    if let Some(&present) = known.get(dir) {
        return Ok(present);
    }
    let present = folder_present(known, workdir, dir.parent().unwrap_or(workdir))?
        && match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => true,
            Ok(_) => {
                return Err(format!(
                    "{}: not a plain folder in the work tree; gitca will not write through it",
                    dir.display()
                ));
            }
            Err(_) => false,
        };
    known.insert(dir.to_path_buf(), present);
    Ok(present)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Runs git in `dir`, asserting it succeeds; its standard output.
    pub(in crate::adapters) fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A repository at `root` with one commit (a README), opened, and its HEAD.
    fn repo_with_a_commit(root: &Path) -> (GitRepo, String) {
        git(root, &["init", "-q", "-b", "main"]);
        git(root, &["config", "user.name", "test"]);
        git(root, &["config", "user.email", "test@example.com"]);
        std::fs::write(root.join("README"), "x\n").unwrap();
        git(root, &["add", "README"]);
        git(root, &["commit", "-q", "-m", "init"]);
        let repo = GitRepo::open(root, None).unwrap();
        let head = repo.resolve("HEAD").unwrap();
        (repo, head)
    }

    /// The ways an outputs commit updates the git index, as (`read_tree_from`,
    /// `writes_index`): git reads both trees, then `update-index`; `update-index` alone; gitca
    /// writes the index itself (giving way to git where it cannot).
    const INDEX_WAYS: [(usize, bool); 3] = [(1, false), (usize::MAX, false), (1, true)];

    /// [`repo_with_a_commit`], its outputs commits updating the index the way `way` says (see
    /// [`INDEX_WAYS`]).
    fn repo_indexed_by(root: &Path, way: (usize, bool)) -> (GitRepo, String) {
        let (mut repo, head) = repo_with_a_commit(root);
        (repo.read_tree_from, repo.writes_index) = way;
        (repo, head)
    }

    /// Names one of [`INDEX_WAYS`] in an assertion's message.
    fn index_way((read_tree_from, writes_index): (usize, bool)) -> String {
        format!("read-tree from {read_tree_from}, gitca writes the index: {writes_index}")
    }

    /// Commits a file at `path` (in a new folder) holding its name.
    fn commit_a_file(root: &Path, path: &str) {
        std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        std::fs::write(root.join(path), format!("{path}\n")).unwrap();
        git(root, &["add", path]);
        git(root, &["commit", "-q", "-m", path]);
    }

    /// The branch moves (another commit lands) while gitca's outputs commit is under way: the
    /// finish refuses to move the branch over it and leaves it where the other writer put it.
    #[test]
    fn an_outputs_commit_does_not_move_a_branch_that_moved_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (repo, head) = repo_with_a_commit(root);
        let files: BTreeMap<String, Option<Content>> = [(
            "issued/a.pem".to_string(),
            Some(Content::from(b"cert\n".to_vec())),
        )]
        .into_iter()
        .collect();
        let pending = repo
            .start_outputs_commit(&head, &files, "outputs")
            .unwrap()
            .expect("the tree changes");
        // Plumbing that leaves the index alone (gitca's `git update-index` may hold its lock).
        let tree = format!("{head}^{{tree}}");
        let theirs = git(
            root,
            &["commit-tree", &tree, "-p", &head, "-m", "someone else"],
        );
        let theirs = theirs.trim();
        git(root, &["update-ref", "refs/heads/main", theirs]);
        let err = repo.finish_outputs_commit(pending).unwrap_err();
        assert!(err.contains("the branch moved"), "{err}");
        assert_eq!(git(root, &["rev-parse", "HEAD"]).trim(), theirs);
    }

    /// An outputs commit of many files writes their blobs as one pack, each chain file a delta
    /// on its leaf: git finds the repository whole, the work tree and index match the commit,
    /// and every file reads back.
    #[test]
    fn an_outputs_commit_of_many_files_is_one_pack_git_reads() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (repo, head) = repo_with_a_commit(root);
        let n = super::super::git_pack::PACK_FROM / 2 + 25;
        let ca: std::sync::Arc<[u8]> = b"the CA certificate\n".repeat(9).into();
        let mut files = BTreeMap::new();
        for i in 0..n {
            let leaf: std::sync::Arc<[u8]> = format!("certificate {i}\n")
                .repeat(i % 7 + 1)
                .into_bytes()
                .into();
            let chain = Content::join(&[&leaf, &ca]);
            files.insert(format!("issued/{i:04}.chain.pem"), Some(chain));
            files.insert(format!("issued/{i:04}.pem"), Some(Content::join(&[&leaf])));
        }
        assert!(
            repo.commit_outputs(&head, &files, "outputs")
                .unwrap()
                .is_some()
        );
        let packs: Vec<_> = std::fs::read_dir(root.join(".git/objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension() == Some("pack".as_ref()))
            .collect();
        assert_eq!(packs.len(), 1);
        git(root, &["fsck", "--strict", "--no-dangling"]);
        let listed = git(root, &["verify-pack", "-v", packs[0].to_str().unwrap()]);
        assert!(
            listed.contains(&format!("chain length = 1: {n} objects")),
            "a delta per chain file: {listed}"
        );
        assert_eq!(git(root, &["status", "--porcelain"]), "");
        for (path, content) in &files {
            let shown = git(root, &["show", &format!("HEAD:{path}")]);
            assert_eq!(
                shown.as_bytes(),
                &*content.as_ref().unwrap().bytes(),
                "{path}"
            );
        }
    }

    /// A packed outputs commit builds its trees without libgit2's lookup per entry
    /// (`EntriesUnchecked`); the lookup is on again after it, for every other tree written.
    #[test]
    fn tree_entries_are_checked_again_after_a_packed_outputs_commit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (repo, head) = repo_with_a_commit(root);
        let files = numbered_outputs(super::super::git_pack::PACK_FROM);
        repo.commit_outputs(&head, &files, "outputs")
            .unwrap()
            .unwrap();
        git(root, &["fsck", "--strict", "--no-dangling"]);
        // Held, so that no other test's outputs commit has the lookup off meanwhile.
        let _held = ENTRIES_UNCHECKED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let missing = Oid::hash_object(ObjectType::Blob, b"never written").unwrap();
        let mut tree = repo.repo.treebuilder(None).unwrap();
        let refused = tree.insert("missing.pem", missing, 0o100644);
        assert!(refused.is_err(), "a missing blob was taken into a tree");
    }

    /// An output folder, or a folder above an output, committed as a file, two outputs where one
    /// would be the other's folder, and an output committed as a folder are each named in the
    /// error: libgit2 alone said "D/F conflict when updating tree" or "cannot replace". Nothing
    /// is written.
    #[test]
    fn an_output_under_a_committed_file_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (repo, _) = repo_with_a_commit(root);
        std::fs::create_dir_all(root.join("issued")).unwrap();
        std::fs::write(root.join("issued/b000"), "a file\n").unwrap();
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "a file where a folder goes"]);
        let head = git(root, &["rev-parse", "HEAD"]).trim().to_string();
        let mut files = numbered_outputs(3);
        files.insert(
            "issued/b000/r1.pem".into(),
            Some(Content::from(b"r1\n".to_vec())),
        );
        let err = repo.commit_outputs(&head, &files, "outputs").unwrap_err();
        assert!(
            err.starts_with(
                "issued/b000 is a file in the commit, where gitca writes issued/b000/r1.pem"
            ),
            "{err}"
        );
        assert!(!root.join("issued/0000.pem").exists());
        assert_eq!(git(root, &["rev-parse", "HEAD"]).trim(), head);
        // The output folder itself, as a file.
        git(root, &["rm", "-q", "-r", "issued"]);
        std::fs::write(root.join("issued"), "a file\n").unwrap();
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "the output folder as a file"]);
        let head = git(root, &["rev-parse", "HEAD"]).trim().to_string();
        let err = repo.commit_outputs(&head, &files, "outputs").unwrap_err();
        assert!(err.starts_with("issued is a file in the commit"), "{err}");
        // Two outputs of the same commit, one where the other's folder goes.
        git(root, &["rm", "-q", "issued"]);
        std::fs::create_dir_all(root.join("issued/y.pem")).unwrap();
        std::fs::write(root.join("issued/y.pem/foo"), "a file\n").unwrap();
        git(root, &["add", "-A"]);
        git(
            root,
            &["commit", "-q", "-m", "a folder where an output goes"],
        );
        let head = git(root, &["rev-parse", "HEAD"]).trim().to_string();
        let colliding: BTreeMap<String, Option<Content>> = ["issued/a.pem", "issued/a.pem/x.pem"]
            .into_iter()
            .map(|path| (path.to_string(), Some(Content::from(b"c\n".to_vec()))))
            .collect();
        let err = repo
            .commit_outputs(&head, &colliding, "outputs")
            .unwrap_err();
        assert!(
            err.starts_with(
                "issued/a.pem is an output of this run too, where gitca writes issued/a.pem/x.pem"
            ),
            "{err}"
        );
        // An output the commit holds as a folder; reading it as a file names it too.
        let mut files = numbered_outputs(2);
        files.insert("issued/y.pem".into(), Some(Content::from(b"y\n".to_vec())));
        let err = repo.commit_outputs(&head, &files, "outputs").unwrap_err();
        assert!(
            err.starts_with("issued/y.pem is a folder or a submodule in the commit"),
            "{err}"
        );
        let err = repo.read_file(&head, "issued/y.pem").unwrap_err();
        assert!(
            err.starts_with("issued/y.pem is not a file in commit"),
            "{err}"
        );
        assert_eq!(git(root, &["rev-parse", "HEAD"]).trim(), head);
    }

    /// One outputs commit that deletes a file and writes a folder of the same name (a request
    /// `a.yaml` removed as `a.pem/x.yaml` arrives), then the other way round: the commit, the
    /// work tree and the index follow, on each way of updating the index (gitca's own gives way
    /// to git's for such paths), also after a run that failed once its work tree was written.
    /// Before, gitca signed and then refused every run ("issued/a.pem is a file in the
    /// commit"). A folder that holds a file gitca does not delete is refused, naming it, before
    /// anything is written.
    #[test]
    fn a_file_and_a_folder_swap_places_in_one_outputs_commit() {
        for way in INDEX_WAYS {
            let how = index_way(way);
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let (repo, _) = repo_indexed_by(root, way);
            commit_a_file(root, "issued/a.pem");
            commit_a_file(root, "issued/a.chain.pem");
            let head = repo.resolve("HEAD").unwrap();
            let mut files = numbered_outputs(2);
            files.insert("issued/a.pem".into(), None);
            files.insert("issued/a.chain.pem".into(), None);
            files.insert(
                "issued/a.pem/x.pem".into(),
                Some(Content::from(b"x\n".to_vec())),
            );
            files.insert(
                "issued/a.pem/sub/y.pem".into(),
                Some(Content::from(b"y\n".to_vec())),
            );
            // A run that fails after its work tree (git's index locked), then one that does not.
            let lock = root.join(".git/index.lock");
            std::fs::write(&lock, "").unwrap();
            repo.commit_outputs(&head, &files, "file to folder")
                .unwrap_err();
            std::fs::remove_file(&lock).unwrap();
            let head = repo
                .commit_outputs(&head, &files, "file to folder")
                .unwrap()
                .unwrap();
            assert_eq!(
                git(root, &["ls-files", "issued"]),
                "issued/0000.pem\nissued/0001.pem\nissued/a.pem/sub/y.pem\nissued/a.pem/x.pem\n",
                "{how}"
            );
            assert_eq!(
                std::fs::read(root.join("issued/a.pem/x.pem")).unwrap(),
                b"x\n"
            );
            assert_eq!(git(root, &["status", "--porcelain"]), "", "{how}");
            // A file gitca did not write, in the folder where a file goes: refused, as it was.
            std::fs::write(root.join("issued/a.pem/sub/notes"), "mine\n").unwrap();
            let mut back = BTreeMap::new();
            back.insert(
                "issued/a.pem".to_string(),
                Some(Content::from(b"a\n".to_vec())),
            );
            back.insert("issued/a.pem/x.pem".to_string(), None);
            back.insert("issued/a.pem/sub/y.pem".to_string(), None);
            let err = repo
                .commit_outputs(&head, &back, "folder to file")
                .unwrap_err();
            assert!(
                err.starts_with(
                    "issued/a.pem/sub/notes is in the work tree where gitca writes the file \
                     issued/a.pem"
                ),
                "{how}: {err}"
            );
            assert!(root.join("issued/a.pem/x.pem").exists(), "{how}");
            assert_eq!(git(root, &["rev-parse", "HEAD"]).trim(), head);
            // Without it, the folder gives way to the file, again after a run that failed.
            std::fs::remove_file(root.join("issued/a.pem/sub/notes")).unwrap();
            std::fs::write(&lock, "").unwrap();
            repo.commit_outputs(&head, &back, "folder to file")
                .unwrap_err();
            std::fs::remove_file(&lock).unwrap();
            repo.commit_outputs(&head, &back, "folder to file")
                .unwrap()
                .unwrap();
            assert_eq!(
                git(root, &["ls-files", "issued"]),
                "issued/0000.pem\nissued/0001.pem\nissued/a.pem\n",
                "{how}"
            );
            assert_eq!(std::fs::read(root.join("issued/a.pem")).unwrap(), b"a\n");
            assert_eq!(git(root, &["status", "--porcelain"]), "", "{how}");
            // A committed file left in the folder keeps it in the way, in the commit too.
            commit_a_file(root, "issued/b.pem/kept");
            commit_a_file(root, "issued/b.pem/gone.pem");
            let head = repo.resolve("HEAD").unwrap();
            let mut partly = BTreeMap::new();
            partly.insert(
                "issued/b.pem".to_string(),
                Some(Content::from(b"b\n".to_vec())),
            );
            partly.insert("issued/b.pem/gone.pem".to_string(), None);
            let err = repo.commit_outputs(&head, &partly, "partly").unwrap_err();
            assert!(
                err.starts_with("issued/b.pem is a folder or a submodule in the commit"),
                "{how}: {err}"
            );
        }
    }

    /// A file and folder swap whose branch moved once git had updated the index (another
    /// commit on the parent landed meanwhile): the index holds the outputs commit's entries,
    /// the work tree its files. The run on the new branch head commits the same outputs, both
    /// ways and on each way of updating the index; `git update-index` given the deleted
    /// file's path, a folder now, had refused every such run ("is a directory").
    #[test]
    fn a_swap_converges_after_the_branch_moved() {
        for folder_to_file in [false, true] {
            for way in INDEX_WAYS {
                let how = format!("folder to file: {folder_to_file}, {}", index_way(way));
                let dir = tempfile::tempdir().unwrap();
                let root = dir.path();
                let (repo, _) = repo_indexed_by(root, way);
                let mut files = numbered_outputs(2);
                let (gone, new) = match folder_to_file {
                    true => ("issued/a.pem/x.pem", "issued/a.pem"),
                    false => ("issued/a.pem", "issued/a.pem/x.pem"),
                };
                commit_a_file(root, gone);
                files.insert(gone.into(), None);
                files.insert(new.into(), Some(Content::from(b"new\n".to_vec())));
                let head = repo.resolve("HEAD").unwrap();
                let pending = (repo.start_outputs_commit(&head, &files, "swap"))
                    .unwrap()
                    .unwrap();
                let tree = format!("{head}^{{tree}}");
                let other = git(root, &["commit-tree", &tree, "-p", &head, "-m", "other"]);
                git(root, &["update-ref", "refs/heads/main", other.trim()]);
                let err = repo.finish_outputs_commit(pending).unwrap_err();
                assert!(err.contains("the branch moved"), "{how}: {err}");
                repo.commit_outputs(other.trim(), &files, "swap")
                    .unwrap_or_else(|e| panic!("{how}: {e}"))
                    .unwrap();
                assert_eq!(git(root, &["status", "--porcelain"]), "", "{how}");
                assert_eq!(std::fs::read(root.join(new)).unwrap(), b"new\n", "{how}");
            }
        }
    }

    /// `issued/0000.pem`, `issued/0001.pem`, ..., each holding its number.
    fn numbered_outputs(n: usize) -> BTreeMap<String, Option<Content>> {
        (0..n)
            .map(|i| {
                let body = format!("{i}\n").into_bytes();
                (format!("issued/{i:04}.pem"), Some(Content::from(body)))
            })
            .collect()
    }

    /// Commits `files` on `head` and says how the index got them (see `indexed_by`).
    fn commit_outputs_indexed_by(
        repo: &GitRepo,
        head: &str,
        files: &BTreeMap<String, Option<Content>>,
    ) -> &'static str {
        let pending = repo
            .start_outputs_commit(head, files, "outputs")
            .unwrap()
            .expect("the tree changes");
        let by = pending.indexed_by();
        repo.finish_outputs_commit(pending).unwrap();
        by
    }

    /// `index.skipHash` (git 2.40), which the README suggests for large repositories: git
    /// writes its index with a null checksum. Each way of updating the index reads such an index
    /// and leaves one git takes as matching the commit, twice in a row.
    #[test]
    fn outputs_are_committed_into_an_index_without_its_checksum() {
        for way in INDEX_WAYS {
            let how = index_way(way);
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let (repo, mut head) = repo_indexed_by(root, way);
            git(root, &["config", "index.skipHash", "true"]);
            git(root, &["update-index", "--force-write-index"]);
            let index = std::fs::read(root.join(".git/index")).unwrap();
            assert!(index.ends_with(&[0; 20]), "git wrote no checksum ({how})");
            for n in [3, 5] {
                head = repo
                    .commit_outputs(&head, &numbered_outputs(n), "outputs")
                    .unwrap()
                    .unwrap();
                assert_eq!(git(root, &["status", "--porcelain"]), "", "{how}");
                assert_eq!(
                    git(root, &["ls-files", "issued"]).lines().count(),
                    n,
                    "{how}"
                );
            }
            git(root, &["fsck", "--strict", "--no-dangling"]);
        }
    }

    /// An outputs commit of fewer than `PACK_FROM` new blobs writes them loose, as git keeps a
    /// small fetch: many tiny packs would slow every lookup.
    #[test]
    fn an_outputs_commit_of_few_files_stays_loose() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (repo, head) = repo_with_a_commit(root);
        let before = git(root, &["count-objects", "-v"]);
        let n = super::super::git_pack::PACK_FROM - 1;
        let files = numbered_outputs(n);
        repo.commit_outputs(&head, &files, "outputs")
            .unwrap()
            .unwrap();
        let count = |out: &str, key: &str| -> usize {
            let line = out.lines().find(|l| l.starts_with(key)).unwrap();
            line[key.len()..].trim().parse().unwrap()
        };
        let after = git(root, &["count-objects", "-v"]);
        assert_eq!(count(&after, "packs:"), 0, "{after}");
        // The blobs, one tree per folder touched (the root and issued/) and the commit.
        assert_eq!(
            count(&after, "count:") - count(&before, "count:"),
            n + 3,
            "{after}"
        );
        git(root, &["fsck", "--strict", "--no-dangling"]);
    }

    /// An outputs commit of many new paths updates the index itself, or has git read both trees
    /// into the index first. Either way the index then matches the commit for the outputs, with
    /// each file's stat (plumbing sees no change), and keeps the other paths' entries as they
    /// were: their stat, and a change staged for another file.
    #[test]
    fn an_outputs_commit_read_into_the_index_keeps_what_is_staged_elsewhere() {
        for writes_index in [false, true] {
            outputs_read_into_the_index_keep_what_is_staged_elsewhere(writes_index);
        }
    }

    fn outputs_read_into_the_index_keep_what_is_staged_elsewhere(writes_index: bool) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (mut repo, _) = repo_with_a_commit(root);
        std::fs::create_dir(root.join("issued")).unwrap();
        for (path, body) in [("issued/old.pem", "old\n"), ("issued/gone.pem", "gone\n")] {
            std::fs::write(root.join(path), body).unwrap();
        }
        git(root, &["add", "issued"]);
        git(root, &["commit", "-q", "-m", "outputs"]);
        std::fs::write(root.join("README"), "staged\n").unwrap();
        git(root, &["add", "README"]);
        let head = repo.resolve("HEAD").unwrap();
        repo.read_tree_from = 3;
        repo.writes_index = writes_index;
        let mut files: BTreeMap<String, Option<Content>> = (0..3)
            .map(|i| {
                (
                    format!("issued/new{i}.pem"),
                    Some(Content::from(vec![b'n'; i + 1])),
                )
            })
            .collect();
        files.insert(
            "issued/old.pem".into(),
            Some(Content::from(b"new\n".to_vec())),
        );
        files.insert("issued/gone.pem".into(), None);
        let pending = repo
            .start_outputs_commit(&head, &files, "outputs")
            .unwrap()
            .unwrap();
        // git reads the trees before the replaced file is written, which it would refuse after.
        let by = if writes_index {
            "gitca"
        } else {
            "read-tree, update-index"
        };
        assert_eq!(pending.indexed_by(), by);
        let id = repo.finish_outputs_commit(pending).unwrap();
        assert_eq!(git(root, &["rev-parse", "HEAD"]).trim(), id);
        // Stat only (no refresh): every entry's stat matches its file.
        assert_eq!(git(root, &["diff-files", "--name-status"]), "");
        assert_eq!(
            git(root, &["diff-index", "--cached", "--name-status", "HEAD"]),
            "M\tREADME\n"
        );
        assert_eq!(git(root, &["status", "--porcelain"]), "M  README\n");
        assert_eq!(
            git(root, &["ls-files", "issued"]),
            "issued/new0.pem\nissued/new1.pem\nissued/new2.pem\nissued/old.pem\n"
        );
    }

    /// A file that cannot be written (a name longer than the file system takes), after git read
    /// the trees into the index or without it, or with gitca to update the index: the error
    /// names the file, the branch stays, and the index has the parent's entries, with nothing
    /// of the outputs staged.
    #[test]
    fn an_outputs_commit_that_cannot_write_a_file_leaves_the_index_as_it_was() {
        for way in INDEX_WAYS {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let (repo, head) = repo_indexed_by(root, way);
            let mut files = numbered_outputs(3);
            let long = format!("issued/{}.pem", "x".repeat(300));
            files.insert(long.clone(), Some(Content::from(b"long\n".to_vec())));
            let err = repo.commit_outputs(&head, &files, "outputs").unwrap_err();
            assert!(err.starts_with(&format!("{long}: ")), "{err}");
            assert_eq!(git(root, &["rev-parse", "HEAD"]).trim(), head);
            assert_eq!(git(root, &["ls-files", "--stage"]).lines().count(), 1);
            assert_eq!(
                git(root, &["diff-index", "--cached", "--name-only", "HEAD"]),
                "",
                "{}",
                index_way(way)
            );
        }
    }

    /// A file with uncommitted changes among many outputs of a CA in a folder: the refusal
    /// comes after git read the trees into the index, which is set back; no file is written.
    /// Where gitca may update the index, its check refuses before git runs at all.
    #[test]
    fn an_outputs_commit_refused_leaves_the_work_tree_and_the_index_as_they_were() {
        for writes_index in [false, true] {
            outputs_refused_leave_the_work_tree_and_the_index_as_they_were(writes_index);
        }
    }

    fn outputs_refused_leave_the_work_tree_and_the_index_as_they_were(writes_index: bool) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        repo_with_a_commit(root);
        std::fs::create_dir_all(root.join("ca/issued")).unwrap();
        // Committed as "one", edited, and to be replaced by "1".
        std::fs::write(root.join("ca/issued/0001.pem"), "one\n").unwrap();
        git(root, &["add", "ca"]);
        git(root, &["commit", "-q", "-m", "outputs"]);
        std::fs::write(root.join("ca/issued/0001.pem"), "edited\n").unwrap();
        let before = git(root, &["ls-files", "--stage"]);
        let mut repo = GitRepo::open(root, Some("ca")).unwrap();
        repo.read_tree_from = 1;
        repo.writes_index = writes_index;
        let head = repo.resolve("HEAD").unwrap();
        let files = numbered_outputs(3);
        let err = repo.commit_outputs(&head, &files, "outputs").unwrap_err();
        assert!(
            err.starts_with("ca/issued/0001.pem has uncommitted changes"),
            "{err}"
        );
        assert_eq!(git(root, &["rev-parse", "HEAD"]).trim(), head);
        assert_eq!(git(root, &["ls-files", "--stage"]), before);
        assert_eq!(
            git(root, &["status", "--porcelain"]),
            " M ca/issued/0001.pem\n"
        );
    }

    /// A run killed while it wrote an output leaves the file cut short, with neither the index
    /// nor the branch updated: the next run writes it whole, a new output or a replaced one,
    /// whoever updates the index. A file that is not the start of gitca's bytes is still refused
    /// and kept.
    #[test]
    fn an_output_cut_short_by_a_killed_run_is_written_whole() {
        let body =
            |tag: &str| format!("-----BEGIN CERTIFICATE-----\n{tag}\n-----END CERTIFICATE-----\n");
        let files = |tag: &str| -> BTreeMap<String, Option<Content>> {
            (["issued/kept.pem", "issued/new.pem"].into_iter())
                .map(|path| {
                    (
                        path.to_string(),
                        Some(Content::from(body(tag).into_bytes())),
                    )
                })
                .collect()
        };
        for way in INDEX_WAYS {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let (repo, _) = repo_indexed_by(root, way);
            std::fs::create_dir(root.join("issued")).unwrap();
            std::fs::write(root.join("issued/kept.pem"), body("old")).unwrap();
            git(root, &["add", "issued"]);
            git(root, &["commit", "-q", "-m", "outputs"]);
            let head = repo.resolve("HEAD").unwrap();
            // The killed run's state: both files begun, one of them empty.
            let whole = body("renewed");
            std::fs::write(root.join("issued/kept.pem"), &whole[..whole.len() / 2]).unwrap();
            std::fs::write(root.join("issued/new.pem"), "").unwrap();
            repo.commit_outputs(&head, &files("renewed"), "renewal")
                .unwrap()
                .expect("the tree changes");
            for path in ["issued/kept.pem", "issued/new.pem"] {
                let written = std::fs::read_to_string(root.join(path)).unwrap();
                assert_eq!(written, whole, "{path}: {}", index_way(way));
            }
            assert_eq!(
                git(root, &["status", "--porcelain"]),
                "",
                "{}",
                index_way(way)
            );
            // Not the start of gitca's bytes: someone else's.
            let head = repo.resolve("HEAD").unwrap();
            std::fs::write(root.join("issued/new.pem"), "-----BEGIN MINE").unwrap();
            let err = repo
                .commit_outputs(&head, &files("again"), "renewal")
                .unwrap_err();
            assert!(
                err.starts_with("issued/new.pem has uncommitted changes"),
                "{}: {err}",
                index_way(way)
            );
            let kept = std::fs::read_to_string(root.join("issued/new.pem")).unwrap();
            assert_eq!(kept, "-----BEGIN MINE", "{}", index_way(way));
        }
    }

    /// Where an output goes, a file with another name outside the work tree (a hard link, as
    /// `cp -al` copies make): empty (the start of gitca's bytes), already gitca's bytes, or the
    /// committed output. gitca writes in place, so it once wrote the file outside too; now the
    /// output gets a file of its own, as git's checkout does, and the other name keeps its
    /// bytes, whoever updates the index.
    #[test]
    fn an_output_over_a_hard_link_gets_a_file_of_its_own() {
        use std::os::unix::fs::MetadataExt;
        for way in INDEX_WAYS {
            for bytes in ["", "1\n", "committed\n"] {
                let dir = tempfile::tempdir().unwrap();
                let root = &dir.path().join("repo");
                std::fs::create_dir(root).unwrap();
                let (repo, head) = repo_indexed_by(root, way);
                std::fs::create_dir(root.join("issued")).unwrap();
                let output = root.join("issued/0001.pem");
                let head = match bytes {
                    "committed\n" => {
                        std::fs::write(&output, bytes).unwrap();
                        git(root, &["add", "issued"]);
                        git(root, &["commit", "-q", "-m", "outputs"]);
                        repo.resolve("HEAD").unwrap()
                    }
                    _ => head,
                };
                let outside = dir.path().join("outside");
                match bytes {
                    "committed\n" => std::fs::hard_link(&output, &outside).unwrap(),
                    _ => {
                        std::fs::write(&outside, bytes).unwrap();
                        std::fs::hard_link(&outside, &output).unwrap();
                    }
                }
                let at = format!("{bytes:?}, {}", index_way(way));
                repo.commit_outputs(&head, &numbered_outputs(3), "outputs")
                    .unwrap()
                    .expect("the tree changes");
                assert_eq!(std::fs::read_to_string(&outside).unwrap(), bytes, "{at}");
                assert_eq!(std::fs::read_to_string(&output).unwrap(), "1\n", "{at}");
                assert_eq!(std::fs::metadata(&output).unwrap().nlink(), 1, "{at}");
                assert_eq!(git(root, &["status", "--porcelain"]), "", "{at}");
            }
        }
    }

    /// An ignored file where a new output goes, and an ignored folder where another goes: gitca
    /// refuses and leaves both as they were, whoever updates the index.
    #[test]
    fn an_outputs_commit_over_ignored_files_is_refused() {
        for writes_index in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let (mut repo, head) = repo_with_a_commit(root);
            std::fs::write(root.join(".git/info/exclude"), "*.pem\n").unwrap();
            std::fs::create_dir_all(root.join("issued/0001.pem")).unwrap();
            std::fs::write(root.join("issued/0001.pem/notes"), "mine\n").unwrap();
            std::fs::write(root.join("issued/0002.pem"), "my own key\n").unwrap();
            repo.read_tree_from = 1;
            repo.writes_index = writes_index;
            let staged = git(root, &["ls-files", "--stage"]);
            for only in ["issued/0001.pem", "issued/0002.pem"] {
                let files: BTreeMap<String, Option<Content>> = numbered_outputs(3)
                    .into_iter()
                    .filter(|(path, _)| path == "issued/0000.pem" || path == only)
                    .collect();
                let err = repo.commit_outputs(&head, &files, "outputs").unwrap_err();
                let why = match only {
                    "issued/0001.pem" => "is not a regular file",
                    _ => "has uncommitted changes",
                };
                assert!(err.starts_with(&format!("{only} {why}")), "{err}");
            }
            assert_eq!(git(root, &["rev-parse", "HEAD"]).trim(), head);
            assert_eq!(git(root, &["ls-files", "--stage"]), staged);
            let notes = std::fs::read_to_string(root.join("issued/0001.pem/notes")).unwrap();
            assert_eq!(notes, "mine\n", "gitca writes the index: {writes_index}");
            let key = std::fs::read_to_string(root.join("issued/0002.pem")).unwrap();
            assert_eq!(
                key, "my own key\n",
                "gitca writes the index: {writes_index}"
            );
            assert!(!root.join("issued/0000.pem").exists(), "nothing written");
        }
    }

    /// gitca writes each output as its blob is, and updates the index itself only where git
    /// would add the file as it is. With any attribute on an output path as git reads them to
    /// add a file (here `text eol=crlf`: committed, or only in the work tree), git's
    /// `update-index` adds the files; `core.autocrlf` alone leaves LF files as they are, and so
    /// does an index's `.gitattributes` under an empty one in the work tree (git adds by the
    /// work tree's). Either way plumbing sees no change, and the next run replaces a file.
    #[test]
    fn an_outputs_commit_leaves_the_index_to_git_where_attributes_apply() {
        for case in ["core.autocrlf", "committed", "work tree only", "index only"] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let (mut repo, _) = repo_with_a_commit(root);
            let attributes = root.join(".gitattributes");
            if case == "core.autocrlf" {
                git(root, &["config", "core.autocrlf", "true"]);
            } else {
                std::fs::write(&attributes, "*.pem text eol=crlf\n").unwrap();
                if case != "work tree only" {
                    git(root, &["add", ".gitattributes"]);
                }
                if case == "committed" {
                    git(root, &["commit", "-q", "-m", "attributes"]);
                }
                if case == "index only" {
                    // The work tree's file says nothing; a checkout would read the index's.
                    std::fs::write(&attributes, "").unwrap();
                }
            }
            let head = repo.resolve("HEAD").unwrap();
            repo.read_tree_from = 1;
            let by = commit_outputs_indexed_by(&repo, &head, &numbered_outputs(3));
            let by_gitca = matches!(case, "core.autocrlf" | "index only");
            assert_eq!(by == "gitca", by_gitca, "{case}: {by}");
            let written = std::fs::read(root.join("issued/0001.pem")).unwrap();
            assert_eq!(written, b"1\n", "{case}: the blob as it is");
            assert_eq!(
                git(root, &["diff-files", "--name-only", "issued"]),
                "",
                "{case}"
            );
            let head = repo.resolve("HEAD").unwrap();
            let mut next = BTreeMap::new();
            next.insert(
                "issued/0001.pem".to_string(),
                Some(Content::from(b"renewed\n".to_vec())),
            );
            repo.commit_outputs(&head, &next, "renewal")
                .unwrap()
                .unwrap();
        }
    }

    /// A clone with `core.autocrlf` checks the outputs out with CRLF line endings: gitca
    /// replaces such a file, which git sees unchanged, and still refuses one edited since.
    #[test]
    fn an_outputs_commit_replaces_files_a_crlf_checkout_wrote() {
        for writes_index in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let (mut repo, _) = repo_with_a_commit(root);
            std::fs::create_dir(root.join("issued")).unwrap();
            for (i, body) in ["zero\n", "one\n", "two\n"].iter().enumerate() {
                std::fs::write(root.join(format!("issued/{i:04}.pem")), body).unwrap();
            }
            git(root, &["add", "issued"]);
            git(root, &["commit", "-q", "-m", "outputs"]);
            git(root, &["config", "core.autocrlf", "true"]);
            std::fs::remove_dir_all(root.join("issued")).unwrap();
            git(root, &["checkout", "--", "issued"]);
            let crlf = std::fs::read(root.join("issued/0001.pem")).unwrap();
            assert_eq!(crlf, b"one\r\n", "checked out with CRLF");
            std::fs::write(root.join("issued/0002.pem"), "edited\r\n").unwrap();
            repo.read_tree_from = 1;
            repo.writes_index = writes_index;
            let head = repo.resolve("HEAD").unwrap();
            let files = numbered_outputs(2);
            repo.commit_outputs(&head, &files, "renewal")
                .unwrap()
                .expect("the tree changes");
            assert_eq!(std::fs::read(root.join("issued/0001.pem")).unwrap(), b"1\n");
            let head = repo.resolve("HEAD").unwrap();
            let err = repo
                .commit_outputs(&head, &numbered_outputs(3), "renewal")
                .unwrap_err();
            assert!(
                err.starts_with("issued/0002.pem has uncommitted changes"),
                "gitca writes the index: {writes_index}: {err}"
            );
            let edited = std::fs::read(root.join("issued/0002.pem")).unwrap();
            assert_eq!(edited, b"edited\r\n");
        }
    }

    /// With a sparse checkout that leaves the output folder out, gitca still writes every
    /// output, and indexes them as checked out (no skip-worktree bit), and leaves the other
    /// paths as the sparse checkout has them.
    #[test]
    fn an_outputs_commit_writes_outputs_a_sparse_checkout_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (mut repo, _) = repo_with_a_commit(root);
        commit_a_file(root, "other/b");
        git(root, &["config", "core.sparseCheckout", "true"]);
        std::fs::write(root.join(".git/info/sparse-checkout"), "/README\n").unwrap();
        git(root, &["read-tree", "-m", "-u", "HEAD"]);
        assert!(
            !root.join("other/b").exists(),
            "left out by the sparse checkout"
        );
        let head = repo.resolve("HEAD").unwrap();
        repo.read_tree_from = 1;
        let by = commit_outputs_indexed_by(&repo, &head, &numbered_outputs(3));
        assert_eq!(by, "gitca");
        for i in 0..3 {
            let written = std::fs::read(root.join(format!("issued/{i:04}.pem"))).unwrap();
            assert_eq!(written, format!("{i}\n").into_bytes());
        }
        assert!(!root.join("other/b").exists(), "still left out");
        assert_eq!(git(root, &["ls-files", "-t", "other"]), "S other/b\n");
        assert_eq!(
            git(root, &["ls-files", "-t", "issued"]),
            "H issued/0000.pem\nH issued/0001.pem\nH issued/0002.pem\n"
        );
        assert_eq!(git(root, &["diff-files", "--name-only", "issued"]), "");
    }

    /// gitca leaves an index with a conflict to git, and `git read-tree` refuses it:
    /// `git update-index` then adds the outputs alone, and the conflict stays for its owner to
    /// resolve.
    #[test]
    fn an_outputs_commit_into_an_index_with_a_conflict_is_indexed_without_read_tree() {
        for writes_index in [false, true] {
            outputs_into_an_index_with_a_conflict_are_indexed_without_read_tree(writes_index);
        }
    }

    fn outputs_into_an_index_with_a_conflict_are_indexed_without_read_tree(writes_index: bool) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (mut repo, head) = repo_with_a_commit(root);
        let run = |args: &[&str], input: String| {
            let input = all_sent([input.into_bytes()]);
            repo.spawn_with_input(args, Some(input))
                .and_then(GitRun::wait)
        };
        let blob = git(root, &["hash-object", "-w", "README"]);
        let blob = blob.trim();
        let unmerged = format!("100644 {blob} 1\tother\n100644 {blob} 2\tother\n");
        run(&["update-index", "--index-info"], unmerged).unwrap();
        assert!(
            run(&["read-tree", "-m", "HEAD", "HEAD"], String::new()).is_err(),
            "read-tree must refuse this index"
        );
        repo.read_tree_from = 1;
        repo.writes_index = writes_index;
        let by = commit_outputs_indexed_by(&repo, &head, &numbered_outputs(3));
        assert_eq!(by, "update-index");
        assert_eq!(
            git(root, &["ls-files", "issued"]),
            "issued/0000.pem\nissued/0001.pem\nissued/0002.pem\n"
        );
        assert_eq!(git(root, &["diff-files", "--name-only", "issued"]), "");
        assert_eq!(
            git(
                root,
                &["diff-index", "--cached", "--name-only", "HEAD", "issued"]
            ),
            ""
        );
        assert_eq!(git(root, &["ls-files", "--unmerged"]).lines().count(), 2);
    }

    /// The index gitca writes is one git takes as its own: its checksum holds (`git fsck`), each
    /// output's entry is its committed blob with its file's stat (no change without a refresh),
    /// its cached trees are those of the commit (`git write-tree`), and it keeps the old index's
    /// permissions. Entries whose files may have changed within the old index's timestamp
    /// ("racily clean": the index is dated back an hour) are checked by content as git checks
    /// them: a file that is its blob as it is, or as git adds it (a CRLF checkout), keeps its
    /// entry; an edited one loses its recorded size, so git compares its content next time; an
    /// entry older than the index keeps its stat, edited or not.
    #[test]
    fn the_index_gitca_writes_is_one_git_takes_as_its_own() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (mut repo, _) = repo_with_a_commit(root);
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        let date = |file: &str, when: std::time::SystemTime| {
            let f = std::fs::File::options().write(true).open(root.join(file));
            f.unwrap().set_modified(when).unwrap();
        };
        std::fs::create_dir(root.join("issued")).unwrap();
        for (file, body) in [
            ("crlf.txt", "one\n"),
            ("edited.txt", "two\n"),
            ("old.txt", "three\n"),
            ("issued/0000.pem", "zero\n"),
        ] {
            std::fs::write(root.join(file), body).unwrap();
        }
        date("old.txt", two_hours_ago);
        git(root, &["add", "."]);
        git(root, &["commit", "-q", "-m", "files"]);
        git(root, &["config", "core.autocrlf", "true"]);
        std::fs::remove_file(root.join("crlf.txt")).unwrap();
        git(root, &["checkout", "--", "crlf.txt"]);
        assert_eq!(std::fs::read(root.join("crlf.txt")).unwrap(), b"one\r\n");
        for file in ["edited.txt", "old.txt"] {
            std::fs::write(root.join(file), "edited\n").unwrap();
        }
        let size_of = |path: &str| {
            let debug = git(root, &["ls-files", "--debug", path]);
            let line = debug
                .lines()
                .find(|l| l.trim().starts_with("size:"))
                .unwrap();
            line.split_whitespace().nth(1).unwrap().to_string()
        };
        let sizes = |files: &[&str]| files.iter().map(|f| size_of(f)).collect::<Vec<_>>();
        let files = ["README", "crlf.txt", "edited.txt", "old.txt"];
        assert_eq!(sizes(&files), ["2", "5", "4", "6"]);
        let index = root.join(".git/index");
        assert!(
            std::fs::read(&index)
                .unwrap()
                .windows(4)
                .any(|w| w == b"TREE")
        );
        std::fs::set_permissions(&index, std::fs::Permissions::from_mode(0o640)).unwrap();
        date(
            ".git/index",
            std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
        );
        repo.read_tree_from = 1;
        let head = repo.resolve("HEAD").unwrap();
        let by = commit_outputs_indexed_by(&repo, &head, &numbered_outputs(3));
        assert_eq!(by, "gitca");
        git(root, &["fsck", "--strict", "--no-dangling"]);
        assert_eq!(
            sizes(&files),
            ["2", "5", "0", "6"],
            "only the racy edit smudged"
        );
        assert_eq!(size_of("issued/0001.pem"), "2");
        let mode = std::fs::metadata(&index).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(git(root, &["diff-files", "--name-only", "issued"]), "");
        let staged = git(root, &["ls-files", "--stage", "issued"]);
        let committed = git(root, &["ls-tree", "-r", "HEAD", "issued"]);
        let ids = |listing: &str| -> Vec<String> {
            (listing.lines())
                .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(&staged).len(), 3);
        assert_eq!(ids(&staged), ids(&committed.replace(" blob ", " ")));
        // Cached trees kept where nothing changed, and recomputed to the commit's tree.
        assert!(
            std::fs::read(&index)
                .unwrap()
                .windows(4)
                .any(|w| w == b"TREE")
        );
        git(root, &["add", "edited.txt", "old.txt"]);
        git(
            root,
            &["reset", "-q", "HEAD", "--", "edited.txt", "old.txt"],
        );
        assert_eq!(
            git(root, &["write-tree"]).trim(),
            git(root, &["rev-parse", "HEAD^{tree}"]).trim()
        );
        assert_eq!(
            git(root, &["status", "--porcelain"]),
            " M edited.txt\n M old.txt\n"
        );
    }

    /// An index gitca would not write back as git had it, or one with an entry in the way of
    /// an output's path, is left to git.
    #[test]
    fn an_index_gitca_would_change_otherwise_is_left_to_git() {
        for setup in [
            "version 4",
            "split",
            "untracked cache",
            "sparse",
            "resolve-undo",
            "an entry in the way",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let (mut repo, _) = repo_with_a_commit(root);
            commit_a_file(root, "dir/x");
            let blob = git(root, &["rev-parse", "HEAD:README"]);
            match setup {
                "version 4" => drop(git(root, &["update-index", "--index-version", "4"])),
                "split" => drop(git(root, &["update-index", "--split-index"])),
                "untracked cache" => {
                    git(root, &["update-index", "--untracked-cache"]);
                    git(root, &["status", "--porcelain"]);
                }
                "sparse" => {
                    git(
                        root,
                        &["sparse-checkout", "init", "--cone", "--sparse-index"],
                    );
                    git(root, &["sparse-checkout", "set", "other"]);
                }
                "resolve-undo" => {
                    // README unmerged (its entry taken out, two stages put in), then resolved.
                    let unmerged = format!(
                        "0 {}\tREADME\n100644 {} 1\tREADME\n100644 {} 2\tREADME\n",
                        "0".repeat(40),
                        blob.trim(),
                        blob.trim()
                    );
                    let input = all_sent([unmerged.into_bytes()]);
                    (repo.spawn_with_input(&["update-index", "--index-info"], Some(input)))
                        .and_then(GitRun::wait)
                        .unwrap();
                    git(root, &["add", "README"]);
                }
                _ => {
                    let entry = format!("100644,{},issued/0001.pem/x", blob.trim());
                    git(root, &["update-index", "--add", "--cacheinfo", &entry]);
                }
            }
            repo.read_tree_from = 1;
            let head = repo.resolve("HEAD").unwrap();
            let pending = repo.start_outputs_commit(&head, &numbered_outputs(3), "outputs");
            let by = pending.map(|p| p.expect("the tree changes").indexed_by());
            assert!(matches!(by, Ok(by) if by != "gitca"), "{setup}: {by:?}");
        }
    }

    /// An output file left executable, holding gitca's bytes or the start of them (empty), is
    /// replaced by one that is not, whoever updates the index: the index entry is 0644, as
    /// committed, and git sees no mode change.
    #[test]
    fn an_output_file_left_executable_is_written_as_committed() {
        use std::os::unix::fs::PermissionsExt;
        for way in INDEX_WAYS {
            for bytes in ["1\n", ""] {
                let dir = tempfile::tempdir().unwrap();
                let root = dir.path();
                let (repo, head) = repo_indexed_by(root, way);
                std::fs::create_dir(root.join("issued")).unwrap();
                let mine = root.join("issued/0001.pem");
                std::fs::write(&mine, bytes).unwrap();
                std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o755)).unwrap();
                let by = commit_outputs_indexed_by(&repo, &head, &numbered_outputs(3));
                let at = format!("{bytes:?}, {}, indexed by {by}", index_way(way));
                let mode = std::fs::metadata(&mine).unwrap().permissions().mode();
                assert_eq!(mode & 0o111, 0, "{at}");
                assert_eq!(git(root, &["diff-files"]), "", "{at}");
                assert_eq!(git(root, &["status", "--porcelain"]), "", "{at}");
            }
        }
    }

    /// The snapshot reads each blob and libgit2 checks it hashes to its id: a damaged or swapped
    /// object is refused, and so is a missing one, each naming the path (the tree walk's own
    /// error, a bare code, hid which); the blobs of an intact commit are read whole, packed or
    /// loose.
    #[test]
    fn a_damaged_or_missing_blob_is_refused_naming_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (repo, _) = repo_with_a_commit(root);
        commit_a_file(root, "requests/a.yaml");
        git(root, &["gc", "-q"]);
        commit_a_file(root, "requests/b/c.yaml");
        let head = repo.resolve("HEAD").unwrap();
        let snap = repo.snapshot(&head, &[]).unwrap();
        let held: Vec<(&str, &[u8])> = (snap.files.iter())
            .map(|(path, e)| match e {
                TreeEntry::Blob(bytes) => (path.as_str(), bytes.as_slice()),
                other => panic!("{path}: {other:?}"),
            })
            .collect();
        let wanted: [(&str, &[u8]); 3] = [
            ("README", b"x\n"),
            ("requests/a.yaml", b"requests/a.yaml\n"),
            ("requests/b/c.yaml", b"requests/b/c.yaml\n"),
        ];
        assert_eq!(held, wanted);
        // The loose blob of c.yaml swapped for another blob's.
        let (loose, other) = swap_loose_blob(root, "requests/b/c.yaml");
        let err = repo.snapshot(&head, &[]).unwrap_err();
        assert!(err.starts_with("requests/b/c.yaml: "), "{err}");
        assert!(err.contains("hash mismatch"), "{err}");
        assert!(err.contains(&format!("got {other}")), "{err}");
        std::fs::remove_file(loose).unwrap();
        let err = repo.snapshot(&head, &[]).unwrap_err();
        assert!(err.starts_with("requests/b/c.yaml: "), "{err}");
        assert!(err.contains("not found"), "{err}");
    }

    /// A snapshot of many files reads them on all cores (`read_found`), each rayon job with its
    /// own handle on the repository: every file is read whole under its own path, a link stays
    /// a link, and a damaged blob among them is refused naming its path.
    #[test]
    fn a_snapshot_of_many_files_is_read_on_all_cores() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (_, _) = repo_with_a_commit(root);
        let n = 2 * PARALLEL_READ_FROM;
        for i in 0..n {
            let path = root.join(format!("requests/{}/r{i}.yaml", i % 7));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, format!("request {i}\n").repeat(1 + i % 5)).unwrap();
        }
        std::os::unix::fs::symlink("r1.yaml", root.join("requests/1/link.yaml")).unwrap();
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "many"]);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let snapshot = || {
            pool.install(|| {
                let repo = GitRepo::open(root, None).unwrap();
                let head = repo.resolve("HEAD").unwrap();
                repo.snapshot(&head, &[])
            })
        };
        let snap = snapshot().unwrap();
        assert_eq!(
            snap.files.len(),
            n + 2,
            "every request, the link and README"
        );
        for i in 0..n {
            let path = format!("requests/{}/r{i}.yaml", i % 7);
            let want = format!("request {i}\n").repeat(1 + i % 5).into_bytes();
            assert_eq!(snap.files[&path], TreeEntry::Blob(want), "{path}");
        }
        assert_eq!(snap.files["requests/1/link.yaml"], TreeEntry::Symlink);
        // A loose blob swapped for another's bytes, deep among the others.
        let damaged = format!("requests/{}/r{}.yaml", 300 % 7, 300);
        swap_loose_blob(root, &damaged);
        let err = snapshot().unwrap_err();
        assert!(err.starts_with(&format!("{damaged}: ")), "{err}");
        assert!(err.contains("hash mismatch"), "{err}");
    }

    /// Defect (38525e6, found by a review): the blob ids of a packed outputs commit were
    /// handed out to its deletions too, so each file after the first deletion was committed
    /// (and indexed) with the next file's blob, and the last one deleted. Every way the index
    /// is updated: each file keeps its own bytes in the commit, and the work tree is clean.
    #[test]
    fn a_deletion_among_packed_outputs_keeps_each_blob_at_its_path() {
        for way in INDEX_WAYS {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let (repo, head) = repo_indexed_by(root, way);
            let n = 2 * super::super::git_pack::PACK_FROM;
            let first = repo
                .commit_outputs(&head, &numbered_outputs(n), "outputs")
                .unwrap()
                .unwrap();
            let mut files: BTreeMap<String, Option<Content>> = (1..n)
                .map(|i| {
                    let body = format!("new {i}\n").into_bytes();
                    (format!("issued/{i:04}.pem"), Some(Content::from(body)))
                })
                .collect();
            files.insert("issued/0000.pem".into(), None);
            let second = repo
                .commit_outputs(&first, &files, "outputs")
                .unwrap()
                .unwrap();
            for i in 1..n {
                let shown = git(root, &["show", &format!("{second}:issued/{i:04}.pem")]);
                assert_eq!(shown, format!("new {i}\n"), "{}", index_way(way));
            }
            let listed = git(root, &["ls-tree", "--name-only", &second, "issued/"]);
            assert_eq!(listed.lines().count(), n - 1, "{}", index_way(way));
            assert_eq!(
                git(root, &["status", "--porcelain"]),
                "",
                "{}",
                index_way(way)
            );
        }
    }

    /// Where gitca writes the index, the files are written while the pack and the commit are:
    /// should the pack fail, the error says so, the branch and the index stay as they were, and
    /// the files written hold what gitca writes, which the next run accepts and completes.
    #[test]
    fn an_outputs_commit_whose_pack_fails_leaves_the_branch_and_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (repo, head) = repo_indexed_by(root, (1, true));
        let files = numbered_outputs(2 * super::super::git_pack::PACK_FROM);
        let packs = root.join(".git/objects/pack");
        std::fs::remove_dir_all(&packs).unwrap();
        std::fs::write(&packs, "in the way\n").unwrap();
        let err = repo.commit_outputs(&head, &files, "outputs").unwrap_err();
        assert!(err.contains("cannot write a pack"), "{err}");
        assert_eq!(git(root, &["rev-parse", "HEAD"]).trim(), head);
        assert_eq!(git(root, &["ls-files"]), "README\n");
        assert_eq!(
            std::fs::read(root.join("issued/0007.pem")).unwrap(),
            b"7\n",
            "the files were written beside the pack"
        );
        std::fs::remove_file(&packs).unwrap();
        let commit = repo.commit_outputs(&head, &files, "outputs").unwrap();
        assert_eq!(git(root, &["rev-parse", "HEAD"]).trim(), commit.unwrap());
        assert_eq!(git(root, &["status", "--porcelain"]), "");
        git(root, &["fsck", "--strict"]);
    }

    /// Swaps the loose object of the blob at `path` in HEAD for another blob's bytes; returns
    /// the loose object's file and the other blob's id.
    fn swap_loose_blob(root: &Path, path: &str) -> (PathBuf, String) {
        let loose = |id: &str| {
            root.join(".git/objects")
                .join(&id[..2])
                .join(id[2..].trim())
        };
        let id = git(root, &["rev-parse", &format!("HEAD:{path}")]);
        std::fs::write(root.join("other"), "other\n").unwrap();
        let other = git(root, &["hash-object", "-w", "other"]);
        let _ = std::fs::remove_file(loose(&id));
        std::fs::copy(loose(&other), loose(&id)).unwrap();
        (loose(&id), other.trim().to_string())
    }

    /// A changed file or folder whose name is not UTF-8 has no path a plan could name: both
    /// comparisons fail rather than leave the change out, and say why (the quiet path then
    /// plans; the incremental one plans every request, as a full plan reads such names).
    #[test]
    fn a_changed_name_that_is_not_utf8_fails_the_quiet_comparison() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (repo, _) = repo_with_a_commit(root);
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
        let odd_file = std::ffi::OsStr::from_bytes(b"k\xe9y");
        std::fs::create_dir_all(root.join("requests").join(odd)).unwrap();
        std::fs::write(root.join("requests").join(odd).join("n.md"), "1\n").unwrap();
        std::fs::write(root.join("requests").join(odd_file), "1\n").unwrap();
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "odd names"]);
        let before = repo.tree_id(&repo.resolve("HEAD").unwrap()).unwrap();
        std::fs::write(root.join("requests").join(odd).join("n.md"), "2\n").unwrap();
        std::fs::write(root.join("requests").join(odd_file), "2\n").unwrap();
        git(root, &["commit", "-q", "-am", "both changed"]);
        let after = repo.tree_id(&repo.resolve("HEAD").unwrap()).unwrap();
        let err = repo.changed_between_trees(&before, &after).unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
        assert!(err.starts_with("requests/caf\u{fffd}: "), "{err}");
        let (parent, head) = (
            git(root, &["rev-parse", "HEAD~1"]),
            git(root, &["rev-parse", "HEAD"]),
        );
        let err = repo
            .changed_paths(parent.trim(), head.trim(), &[])
            .unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
        // Unchanged, such names are no change.
        std::fs::write(root.join("NOTES.md"), "n\n").unwrap();
        git(root, &["add", "NOTES.md"]);
        git(root, &["commit", "-q", "-m", "notes"]);
        let last = repo.tree_id(&repo.resolve("HEAD").unwrap()).unwrap();
        let changed = repo.changed_between_trees(&after, &last).unwrap();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].path, "NOTES.md");
    }

    /// Outputs are created by name in their opened folder: a file there is truncated and
    /// rewritten, but a symbolic link in place of the file or of the folder is refused, not
    /// followed (the work-tree check refuses both before; this holds should one appear since).
    #[test]
    fn an_output_is_not_written_through_a_symbolic_link() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("issued")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        std::fs::write(root.join("issued/a.pem"), "old and longer\n").unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere/t.pem"), root.join("issued/l.pem"))
            .unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("linked")).unwrap();
        let issued = open_folder(&root.join("issued")).unwrap();
        let mut file = create_in(&issued, "a.pem".as_ref()).unwrap();
        file.write_all(b"new\n").unwrap();
        assert_eq!(std::fs::read(root.join("issued/a.pem")).unwrap(), b"new\n");
        let mut fresh = create_in(&issued, "b.pem".as_ref()).unwrap();
        fresh.write_all(b"b\n").unwrap();
        assert_eq!(std::fs::read(root.join("issued/b.pem")).unwrap(), b"b\n");
        assert!(create_in(&issued, "l.pem".as_ref()).is_err());
        assert!(!root.join("elsewhere/t.pem").exists());
        assert!(open_folder(&root.join("linked")).is_err());
    }

    /// `git hash-object --stdin-paths` reads a line that starts with a quote as a C-quoted path
    /// and drops a carriage return at its end, so it would hash another file than the one
    /// named: gitca refuses to give it such a path (the callers then count the file changed).
    #[test]
    fn paths_git_hash_object_would_misread_are_not_given_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (repo, _) = repo_with_a_commit(root);
        for (name, body) in [("q", "same\n"), ("\"q\"", "other\n"), ("r\r", "other\n")] {
            std::fs::write(root.join(name), body).unwrap();
        }
        let ids = repo.hash_as_git(&["q".to_string()]).unwrap();
        assert_eq!(ids[0].to_string(), git(root, &["hash-object", "q"]).trim());
        for odd in ["\"q\"", "r\r"] {
            let err = repo.hash_as_git(&[odd.to_string()]).unwrap_err();
            assert!(err.contains("cannot be given"), "{err}");
        }
    }

    /// With another git command holding the index's lock, gitca leaves the index to git, which
    /// fails and says why: the branch stays where it was.
    #[test]
    fn an_outputs_commit_with_the_index_locked_fails_and_leaves_the_branch() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (mut repo, head) = repo_with_a_commit(root);
        std::fs::write(root.join(".git/index.lock"), "").unwrap();
        repo.read_tree_from = 1;
        let pending = repo.start_outputs_commit(&head, &numbered_outputs(3), "outputs");
        let err = match pending {
            Ok(Some(pending)) => {
                assert_ne!(pending.indexed_by(), "gitca");
                repo.finish_outputs_commit(pending).unwrap_err()
            }
            Ok(None) => panic!("the tree changes"),
            Err(e) => e,
        };
        assert!(err.contains("index.lock"), "{err}");
        assert_eq!(git(root, &["rev-parse", "HEAD"]).trim(), head);
        std::fs::remove_file(root.join(".git/index.lock")).unwrap();
        assert_eq!(git(root, &["ls-files"]), "README\n");
    }

    /// With `core.autocrlf`, `git update-index` warns once per file on standard error. The
    /// 4,000 paths here are about 250 KB of input and the warnings about 400 KB: each fills
    /// its pipe, so gitca must read the warnings while it writes the paths.
    #[test]
    fn an_outputs_commit_that_git_warns_about_per_file_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q", "-b", "main"]);
        for (k, v) in [
            ("core.autocrlf", "true"),
            ("core.safecrlf", "warn"),
            ("user.name", "test"),
            ("user.email", "test@example.com"),
        ] {
            git(root, &["config", k, v]);
        }
        std::fs::write(root.join("README"), "x\n").unwrap();
        git(root, &["add", "README"]);
        git(root, &["commit", "-q", "-m", "init"]);
        let repo = GitRepo::open(root, None).unwrap();
        let head = repo.resolve("HEAD").unwrap();
        let files: BTreeMap<String, Option<Content>> = (0..4000)
            .map(|i| {
                let path = format!("issued/requests/team-{:02}/svc-{i:05}/cert.pem", i / 100);
                (path, Some(Content::from(b"one\ntwo\n".to_vec())))
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(repo.commit_outputs(&head, &files, "outputs"));
        });
        let committed = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the commit finished instead of gitca and git waiting on each other");
        assert!(committed.unwrap().is_some(), "a commit was made");
        assert_eq!(git(root, &["ls-files", "issued"]).lines().count(), 4000);
        assert_eq!(
            git(root, &["status", "--porcelain"]),
            "",
            "index and work tree agree"
        );
    }
}
