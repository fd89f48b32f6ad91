//! The git index, updated by gitca itself for an outputs commit of many files (see
//! `GitRepo::own_index`): gitca has just written each file and knows its blob id, so it
//! records the file's stat from the open file instead of having git read back and hash every
//! file (`git update-index`), or check them all out again (`git read-tree -u`).
//!
//! git's own format, lock and checksum come from gitoxide's gix-index and gix-lock. gitca takes
//! this way only with an index it can keep whole; otherwise [`LockedIndex::open`] says why, and
//! git updates the index as before.

use git2::{ObjectType, Oid};
use gix_index::entry::{Flags, Mode, Stage, Stat};
use gix_index::hash::{Kind, ObjectId};
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The index, read under git's lock (`index.lock`), so no git command changes it meanwhile.
pub struct LockedIndex {
    lock: gix_lock::File,
    index: gix_index::File,
}

/// The blob ids git gives the work-tree files at these paths when it adds them.
pub type HashAsGit<'a> = dyn Fn(&[String]) -> Result<Vec<Oid>, String> + 'a;

impl LockedIndex {
    /// Locks and reads the index at `path` (an absent index is an empty one). Err names why git
    /// should update it instead: locked by another git command; unreadable or corrupt (its
    /// checksum is checked: a corrupt index is never written back under a valid one); a sparse
    /// index (folders as entries); unmerged entries (git decides how outputs resolve them); or
    /// a part gix-index would not write back as it was: resolve-undo data, version 4, a split
    /// index (`sharedindex.*` files beside it), the untracked-files or file-system-monitor
    /// cache.
    pub fn open(path: &Path) -> Result<LockedIndex, String> {
        remove_locks_on_termination();
        let lock = gix_lock::File::acquire_to_update_resource(
            path,
            gix_lock::acquire::Fail::Immediately,
            None,
            0,
        )
        .map_err(|e| format!("cannot lock the git index: {e}"))?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let split = std::fs::read_dir(folder)
            .map_err(|e| format!("{}: {e}", folder.display()))?
            .flatten()
            .any(|e| e.file_name().as_bytes().starts_with(b"sharedindex."));
        if split {
            return Err("the git index is split (sharedindex files)".into());
        }
        let index = gix_index::File::at_or_default(path, Kind::Sha1, false, Default::default())
            .map_err(|e| format!("cannot read the git index: {e}"))?;
        let refused = if index.is_sparse() {
            Some("is sparse")
        } else if (index.entries().iter()).any(|e| e.stage() != Stage::Unconflicted) {
            Some("has unmerged entries")
        } else if index.resolve_undo().is_some() {
            Some("keeps resolve-undo data")
        } else if index.version() == gix_index::Version::V4 {
            Some("is version 4")
        } else if index.untracked().is_some() || index.fs_monitor().is_some() {
            Some("keeps an untracked-files or file-system-monitor cache")
        } else {
            None
        };
        match refused {
            Some(why) => Err(format!("the git index {why}")),
            None => Ok(LockedIndex { lock, index }),
        }
    }

    /// The first of `paths` (files to write or delete) that an entry of the index stands in the
    /// way of: a folder on its way is a file in the index, or it is a folder there. git would
    /// refuse or resolve such a change itself.
    pub fn blocked<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        let mut folders_seen = HashSet::new();
        paths.into_iter().find(|path| {
            let folders: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
            let file_on_the_way = folders.into_iter().any(|folder| {
                folders_seen.insert(folder) && self.index.entry_by_path(folder.into()).is_some()
            });
            file_on_the_way
                || self
                    .index
                    .prefixed_entries(format!("{path}/").as_str().into())
                    .is_some()
        })
    }

    /// Replaces the entries of `rels` (work-tree paths in git's order, as sorted strings are)
    /// with the files gitca wrote: for each, its blob in `ids` (None: deleted) and, for those
    /// written, in order, its stat in `stats`. Each is a regular file (0644) without flags, so
    /// a sparse checkout's skip-worktree bit is cleared for them as git's checkout would. Then
    /// writes the new index beside the old one, with the old one's permissions, to take its
    /// place on [`WrittenIndex::commit`] (dropped instead, it is removed).
    ///
    /// Other entries keep what they hold, but for what git changes too when it writes the index:
    /// an entry whose file may have changed unseen loses its recorded size (see
    /// `smudge_racily_clean`; `hash_as_git` hashes files as `git hash-object` would), and the
    /// cached trees on the way to a replaced path are marked for git to recompute.
    pub fn update(
        mut self,
        workdir: &Path,
        rels: &[String],
        ids: &[Option<Oid>],
        stats: Vec<Stat>,
        hash_as_git: &HashAsGit<'_>,
    ) -> Result<WrittenIndex, String> {
        debug_assert!(rels.windows(2).all(|w| w[0] < w[1]), "in git's order");
        let state = &mut *self.index;
        // Both in git's order: one walk, no lookup per entry.
        let mut replaced = rels.iter().map(|rel| rel.as_bytes()).peekable();
        state.remove_entries(|_, path, _| {
            while replaced
                .next_if(|rel| *rel < path.as_ref() as &[u8])
                .is_some()
            {}
            replaced
                .peek()
                .is_some_and(|rel| *rel == path.as_ref() as &[u8])
        });
        smudge_racily_clean(state, workdir, hash_as_git);
        let mut stats = stats.into_iter();
        for (rel, id) in rels.iter().zip(ids) {
            let Some(id) = id else { continue };
            let id = ObjectId::try_from(id.as_bytes()).map_err(|e| e.to_string())?;
            let stat = stats.next().ok_or("fewer stats than files written")?;
            state.dangerously_push_entry(stat, id, Flags::empty(), Mode::FILE, rel.as_str().into());
        }
        state.sort_entries();
        if let Some(tree) = state.tree_mut() {
            invalidate_trees(tree, rels.iter().map(String::as_str));
        }
        let old_mode = std::fs::metadata(self.lock.resource_path()).map(|m| m.permissions());
        if let Ok(mode) = old_mode {
            std::fs::set_permissions(self.lock.lock_path(), mode)
                .map_err(|e| format!("{}: {e}", self.lock.lock_path().display()))?;
        }
        // git's format from gix-index; the trailing checksum (all of it, hashed) from
        // `Hashed`, as `gix_index::File::write_to` would append it.
        let fail = |e: &dyn std::fmt::Display| format!("cannot write the git index: {e}");
        let mut out =
            super::git_pack::Hashed::new(std::io::BufWriter::with_capacity(1 << 16, self.lock));
        gix_index::State::write_to(&self.index, &mut out, Default::default())
            .map_err(|e| fail(&e))?;
        let (mut out, sum) = out.finish();
        std::io::Write::write_all(&mut out, &sum).map_err(|e| fail(&e))?;
        let lock = out.into_inner().map_err(|e| fail(e.error()))?;
        Ok(WrittenIndex(lock))
    }
}

/// A new index written beside the old one ([`LockedIndex::update`]), still locked.
#[must_use = "commit puts the new index in place; dropped, it is removed"]
pub struct WrittenIndex(gix_lock::File);

impl WrittenIndex {
    /// Puts the new index in place of the old one.
    pub fn commit(self) -> Result<(), String> {
        self.0
            .commit()
            .map_err(|e| format!("cannot replace the git index: {e}"))?;
        Ok(())
    }
}

/// Like git, the index lock goes should gitca be interrupted (Ctrl-C, a CI job cancelled),
/// terminated or hung up on (a dropped SSH session): only `SIGKILL` leaves it behind. Each
/// handler removes the locks, then ends the run by the signal. A signal the process ignores
/// (SIGINT and SIGQUIT in a script's background job) gets none and stays ignored; the others
/// still get theirs (gix-tempfile's own setup takes all or, as gitca did, none). Idempotent.
pub fn remove_locks_on_termination() {
    static SIGNALS: std::sync::Once = std::sync::Once::new();
    SIGNALS.call_once(|| {
        // The registry of locks exists before any handler can run: made in a handler, it
        // would allocate. `Mode::None`: gix-tempfile installs no handler of its own.
        gix_tempfile::signal::setup(gix_tempfile::signal::handler::Mode::None);
        for signal in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGQUIT] {
            if ignored(signal) {
                continue;
            }
            let remove_then_end = |info: &libc::siginfo_t| {
                gix_tempfile::registry::cleanup_tempfiles_signal_safe();
                end_by(info.si_signo);
            };
            // SAFETY: the handler only does what is safe in one: gix-tempfile's removal is
            // written for it (no lock, no allocation), and `end_by` makes system calls only.
            let set = unsafe { signal_hook_registry::register_sigaction(signal, remove_then_end) };
            // Said on standard error: this runs before logging is set up.
            if let Err(e) = set {
                eprintln!("gitca: cannot handle signal {signal}: a lock may stay behind: {e}");
            }
        }
    });
}

/// Ends the process by `signal`'s default action, from its handler: the shell sees the signal
/// (exit status 128 + its number). As PID 1 (a container without an init) the kernel drops
/// such a signal, and the process exits with that status itself (signal-hook's emulation then
/// called `abort`, which PID 1 cannot take either: a segmentation fault).
fn end_by(signal: libc::c_int) {
    // SAFETY: async-signal-safe calls only (signal, pthread_sigmask, raise, _exit), on a valid
    // signal number and a set initialised by sigemptyset.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
        libc::_exit(128 + signal);
    }
}

/// Whether `signal` is ignored by this process (inherited, as `nohup` or a shell's background
/// job without job control leave SIGINT and SIGQUIT).
fn ignored(signal: libc::c_int) -> bool {
    // SAFETY: with a null new action, sigaction only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Marks the cached tree of each folder on the way to `paths` as out of date, as git does for
/// the paths it changes; the others stay valid, so git's next commit reuses them.
fn invalidate_trees<'a>(
    root: &mut gix_index::extension::Tree,
    paths: impl Iterator<Item = &'a str>,
) {
    let mut folders_done = HashSet::new();
    for path in paths {
        let folder = path.rsplit_once('/').map_or("", |(folder, _)| folder);
        if !folders_done.insert(folder) {
            continue;
        }
        root.num_entries = None;
        let mut tree = &mut *root;
        for name in folder.split('/').filter(|name| !name.is_empty()) {
            tree = match (tree.children.iter_mut()).find(|t| t.name.as_slice() == name.as_bytes()) {
                Some(child) => child,
                None => break,
            };
            tree.num_entries = None;
        }
    }
}

/// An entry whose file changed no earlier than the index was last written ("racily clean")
/// has a stat that cannot tell a later change within the same timestamp. Before the index is
/// written anew, which dates it later, git checks such an entry's file and clears the
/// recorded size of one whose content changed, so that its next look compares content
/// instead of trusting the stat; a file it cannot find it leaves to that next look. This does
/// the same, by content alone (git's stat comparison follows settings such as
/// `core.trustctime`): a file whose bytes are its blob keeps its entry; a regular file whose
/// bytes are not is hashed as git adds it (`hash_as_git`, given paths in the work tree: line
/// endings, filters), and loses its size unless that is the blob. A symbolic link is compared
/// by its target.
fn smudge_racily_clean(state: &mut gix_index::State, workdir: &Path, hash_as_git: &HashAsGit) {
    let written_at = state.timestamp();
    let compare = gix_index::entry::stat::Options::default();
    let (entries, paths) = state.entries_mut_and_pathbacking();
    // Entries to check further, with their path if a regular file git may hash.
    let mut suspects: Vec<(usize, Option<String>)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        // git leaves submodules out of the check.
        if entry.mode == Mode::COMMIT || !entry.stat.is_racy(written_at, compare) {
            continue;
        }
        let rel = entry.path_in(paths);
        let path = workdir.join(std::ffi::OsStr::from_bytes(rel));
        let Ok(now) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let id = if now.file_type().is_symlink() {
            let to = std::fs::read_link(&path).ok();
            to.and_then(|to| Oid::hash_object(ObjectType::Blob, to.as_os_str().as_bytes()).ok())
        } else {
            Oid::hash_file(ObjectType::Blob, &path).ok()
        };
        if id.is_some_and(|id| id.as_bytes() == entry.id.as_bytes()) {
            continue;
        }
        let file = now.is_file() && entry.mode != Mode::SYMLINK;
        let rel = (file.then(|| std::str::from_utf8(rel).ok().map(str::to_string))).flatten();
        suspects.push((i, rel));
    }
    let rels: Vec<String> = suspects.iter().filter_map(|(_, rel)| rel.clone()).collect();
    let mut as_git = match rels.is_empty() {
        true => None,
        false => hash_as_git(&rels)
            .ok()
            .filter(|ids| ids.len() == rels.len())
            .map(Vec::into_iter),
    };
    for (i, rel) in suspects {
        let entry = &mut entries[i];
        let id = rel.and_then(|_| as_git.as_mut()?.next());
        if id.is_none_or(|id| id.as_bytes() != entry.id.as_bytes()) {
            entry.stat.size = 0;
        }
    }
}

/// The stat git records for a file gitca has just written, from the open file. A file
/// replaced keeps its mode: one left executable is made not to be, as git's checkout of a
/// 0644 entry would leave it.
pub fn stat_of_written(file: &std::fs::File) -> std::io::Result<Stat> {
    let mut meta = gix_index::fs::Metadata::from_file(file)?;
    if meta.is_executable() {
        clear_executable(file)?;
        meta = gix_index::fs::Metadata::from_file(file)?;
    }
    Stat::from_fs(&meta).map_err(std::io::Error::other)
}

/// Takes the executable bits off an output file gitca wrote in place of one that had them (by
/// hand): outputs are plain files, as committed.
pub fn clear_executable(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o111 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & !0o111))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::git::tests::git;

    /// An index entry in the way of a path: a file where a folder of the path goes, or a
    /// folder (entries below it) where the path goes. Only the path's own folders count.
    #[test]
    fn an_entry_in_the_way_of_a_path_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q"]);
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        for file in ["a/b/c.pem", "d", "e.pem"] {
            std::fs::write(root.join(file), "x\n").unwrap();
        }
        git(root, &["add", "."]);
        let index = LockedIndex::open(&root.join(".git/index")).unwrap();
        assert_eq!(index.blocked(["x/y.pem", "d/e.pem"]), Some("d/e.pem"));
        assert_eq!(index.blocked(["a/b"]), Some("a/b"));
        assert_eq!(index.blocked(["a"]), Some("a"));
        assert_eq!(
            index.blocked(["a/b/c.pem", "a/b/d.pem", "e.pem", "dd/e"]),
            None
        );
        assert!(root.join(".git/index.lock").exists(), "held while open");
        drop(index);
        assert!(!root.join(".git/index.lock").exists(), "let go unchanged");
    }
}
