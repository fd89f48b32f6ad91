//! The git index, updated by gitca itself for an outputs commit of many files (see
//! `GitRepo::write_worktree`): gitca has just written each file and knows its blob id, so it
//! records the file's stat from the open file instead of having git read back and hash every
//! file (`git update-index`), or check them all out again (`git read-tree -u`).
//!
//! git's own format, lock and checksum come from gitoxide's gix-index and gix-lock. gitca takes
//! this way only with an index it can keep whole; otherwise [`LockedIndex::open`] says why, and
//! git updates the index as before.

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

/// A file gitca wrote into the work tree: its path, its stat taken from the open file, and the
/// blob it holds.
pub struct Written<'a> {
    pub rel: &'a str,
    pub stat: Stat,
    pub id: git2::Oid,
}

impl LockedIndex {
    /// Locks and reads the index at `path` (an absent index is an empty one). Err names why git
    /// should update it instead: locked by another git command, unreadable or corrupt (its
    /// checksum is checked: a corrupt index is never written back under a valid one), a sparse
    /// index (folders as entries), unmerged entries (git decides how outputs resolve them), or
    /// resolve-undo data (which gix-index would not write back).
    pub fn open(path: &Path) -> Result<LockedIndex, String> {
        let lock = gix_lock::File::acquire_to_update_resource(
            path,
            gix_lock::acquire::Fail::Immediately,
            None,
            0,
        )
        .map_err(|e| format!("cannot lock the git index: {e}"))?;
        let index = gix_index::File::at_or_default(path, Kind::Sha1, false, Default::default())
            .map_err(|e| format!("cannot read the git index: {e}"))?;
        if index.is_sparse() {
            return Err("the git index is sparse".into());
        }
        if index
            .entries()
            .iter()
            .any(|e| e.stage() != Stage::Unconflicted)
        {
            return Err("the git index has unmerged entries".into());
        }
        if index.resolve_undo().is_some() {
            return Err("the git index keeps resolve-undo data".into());
        }
        Ok(LockedIndex { lock, index })
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

    /// Replaces the entries of `removed` and `written` (file mode 0644, no flags, so a sparse
    /// checkout's skip-worktree bit is cleared for them as git's checkout would) and writes the
    /// index in place of the old one.
    ///
    /// Other entries keep what they hold, with one exception that git makes too (see
    /// `smudge_racily_clean`). The cached trees are dropped (git recomputes them at the next
    /// commit); the untracked-files and file-system-monitor caches are not written back (git
    /// rebuilds them).
    pub fn update(
        mut self,
        workdir: &Path,
        removed: &[&str],
        written: &[Written],
    ) -> Result<(), String> {
        let replaced: HashSet<&[u8]> = (removed.iter().copied())
            .chain(written.iter().map(|w| w.rel))
            .map(str::as_bytes)
            .collect();
        let state = &mut *self.index;
        state.remove_entries(|_, path, _| replaced.contains(path.as_ref() as &[u8]));
        smudge_racily_clean(state, workdir);
        for w in written {
            let id = ObjectId::try_from(w.id.as_bytes()).map_err(|e| e.to_string())?;
            state.dangerously_push_entry(w.stat, id, Flags::empty(), Mode::FILE, w.rel.into());
        }
        state.sort_entries();
        state.remove_tree();
        let mut out = std::io::BufWriter::with_capacity(1 << 16, self.lock);
        self.index
            .write_to(&mut out, Default::default())
            .map_err(|e| format!("cannot write the git index: {e}"))?;
        let lock = out
            .into_inner()
            .map_err(|e| format!("cannot write the git index: {}", e.error()))?;
        lock.commit()
            .map_err(|e| format!("cannot replace the git index: {e}"))?;
        Ok(())
    }
}

/// An entry whose file changed no earlier than the index was last written ("racily clean")
/// has a stat that cannot tell a later change within the same timestamp. Before the index is
/// written anew, which dates it later, git checks such an entry's file and clears the
/// recorded size of one whose content changed, so that its next look compares content
/// instead of trusting the stat. This does the same: the file is read only if its stat still
/// matches; its bytes as the blob leave the entry as it is; other bytes (a change, or a
/// conversion git would apply) clear the size, which at worst costs git one more look.
fn smudge_racily_clean(state: &mut gix_index::State, workdir: &Path) {
    let written_at = state.timestamp();
    let compare = gix_index::entry::stat::Options::default();
    let (entries, paths) = state.entries_mut_and_pathbacking();
    for entry in entries {
        // git leaves submodules out of the check.
        if entry.mode == Mode::COMMIT || !entry.stat.is_racy(written_at, compare) {
            continue;
        }
        let path = workdir.join(std::ffi::OsStr::from_bytes(entry.path_in(paths)));
        let unchanged = || -> Option<bool> {
            let now = gix_index::fs::Metadata::from_path_no_follow(&path).ok()?;
            let now = Stat::from_fs(&now).ok()?;
            if !entry.stat.matches(&now, compare) {
                // git sees this one as changed anyway.
                return Some(true);
            }
            let bytes = match entry.mode {
                Mode::FILE | Mode::FILE_EXECUTABLE => std::fs::read(&path).ok()?,
                _ => return Some(false),
            };
            let id = git2::Oid::hash_object(git2::ObjectType::Blob, &bytes).ok()?;
            Some(id.as_bytes() == entry.id.as_bytes())
        };
        if unchanged() != Some(true) {
            entry.stat.size = 0;
        }
    }
}

/// The stat git records for a file gitca has just written, from the open file.
pub fn stat_of(file: &std::fs::File) -> std::io::Result<Stat> {
    let meta = gix_index::fs::Metadata::from_file(file)?;
    Stat::from_fs(&meta).map_err(std::io::Error::other)
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
