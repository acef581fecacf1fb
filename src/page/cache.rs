//! `state.toml` as the page last read it, read again only when it changed.
//!
//! Every writer replaces the file by an atomic rename, so a new state is a new inode. The cache
//! keeps the file it read open: that inode cannot be freed and handed to a later save, so a
//! file with the cached inode (and device, length, mtime and ctime, for an edit in place) is
//! the cached one. A request costs one `stat`; a change costs one read, a line at a time
//! ([`state::read_compact`]), without the lock, and the memory of the old state is given back
//! before the new one is read.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::StateError;
use crate::state::{self, State};

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(meta: &fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

struct Snapshot {
    key: FileKey,
    /// Holds the inode, so no later save can carry this key.
    _pinned: File,
    state: Arc<State>,
}

/// The parsed `state.toml`, shared by every request until the file changes.
pub(super) struct StateCache {
    path: PathBuf,
    last: Mutex<Option<Snapshot>>,
    /// Times the file was read (for tests and the benchmark's log line).
    reads: AtomicU64,
}

impl StateCache {
    pub(super) fn new(path: PathBuf) -> StateCache {
        StateCache { path, last: Mutex::new(None), reads: AtomicU64::new(0) }
    }

    /// The state as the file holds it now. One caller reads at a time; the others wait for
    /// its result rather than reading the same file beside it.
    pub(super) fn get(&self) -> anyhow::Result<Arc<State>> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let error = |e: std::io::Error| StateError { path: self.path.clone(), message: format!("cannot be read: {e}") };
        let meta = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *last = None;
                return Ok(Arc::new(State::default()));
            }
            Err(e) => return Err(error(e).into()),
        };
        if let Some(snapshot) = last.as_ref()
            && snapshot.key == FileKey::of(&meta)
        {
            return Ok(snapshot.state.clone());
        }
        // The old state goes first: two states are never held for this cache at once.
        *last = None;
        super::give_back_memory();
        let file = File::open(&self.path).map_err(error)?;
        let key = FileKey::of(&file.metadata().map_err(error)?);
        let pinned = file.try_clone().map_err(error)?;
        let state = Arc::new(state::read_compact(&self.path, file)?);
        self.reads.fetch_add(1, Ordering::Relaxed);
        *last = Some(Snapshot { key, _pinned: pinned, state: state.clone() });
        super::give_back_memory();
        Ok(state)
    }

    #[cfg(test)]
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_read_once_per_version_and_again_after_each_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        let cache = StateCache::new(path.clone());
        assert!(cache.get().unwrap().project.is_empty(), "no file: an empty state");

        let mut st = State::default();
        st.project.entry("a".into()).or_default().indexed = true;
        state::save(&path, &st).unwrap();
        let first = cache.get().unwrap();
        assert!(first.project["a"].indexed);
        assert!(Arc::ptr_eq(&first, &cache.get().unwrap()), "unchanged: the same parsed state");
        assert_eq!(cache.reads(), 1);

        // Saves in a row, as fast as they come: each one is seen.
        for indexed in [false, true, false, true] {
            st.project.get_mut("a").unwrap().indexed = indexed;
            state::save(&path, &st).unwrap();
            assert_eq!(cache.get().unwrap().project["a"].indexed, indexed);
        }
        assert_eq!(cache.reads(), 5);

        std::fs::write(&path, "schema = 1\n[project.a]\nindexed = oops\n").unwrap();
        let err = format!("{:#}", cache.get().unwrap_err());
        assert!(err.contains("state.toml") && err.contains("line 3"), "{err}");
    }
}
