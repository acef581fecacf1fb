//! `state.toml` as the page last read it, read again only when it changed.
//!
//! Every writer replaces the file by an atomic rename, so a new state is a new inode. The cache
//! keeps the file it read open: that inode cannot be freed and handed to a later save, so a
//! file with the cached inode (and device, length, mtime and ctime, for an edit in place) is
//! the cached one. A request costs one `stat`; a change costs one read, a line at a time
//! ([`state::read_compact`]), without the lock, and kept as an [`Index`]: every string in one
//! buffer, one 72-byte row per ref, so 10,000 refs hold about 1.3 MB in two allocations. The
//! parsed `State` held 3.5 MB in three strings per ref and the map's nodes, with the parse's
//! freed allocations between them that glibc cannot give back (`malloc_stats`: 5.3 MB of
//! heap). The old index's memory is given back before the next read.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use crate::error::StateError;
use crate::model::{Outcome, Stage};
use crate::state::{self, RefState, StageRecord, State};

/// A string in [`Index::text`].
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

/// One ref, its strings in the index's text.
#[derive(Debug, Clone)]
pub(super) struct Row {
    refname: Span,
    head: Span,
    since: Timestamp,
    last: Option<(Stage, Outcome, Span, Timestamp)>,
    pending: bool,
    closed: bool,
}

impl Row {
    /// The last stage's outcome; `None` while no stage ran.
    pub(super) fn outcome(&self) -> Option<Outcome> {
        self.last.as_ref().map(|&(_, outcome, _, _)| outcome)
    }

    /// As [`crate::report::last_result`]: the word the page's filter and JSON use.
    pub(super) fn result(&self) -> &'static str {
        match &self.last {
            Some((_, result, _, _)) => result.as_str(),
            None if self.pending => "pending",
            None => "seen",
        }
    }
}

/// `state.toml` as the page reads it: projects and refs in the state's order.
#[derive(Debug, Default)]
pub(super) struct Index {
    text: String,
    /// Name and the range of its rows.
    projects: Vec<(Span, std::ops::Range<usize>)>,
    rows: Vec<Row>,
}

impl Index {
    /// Moves a state into the index (sized in a first pass, so nothing grows).
    fn new(state: State) -> Index {
        let refs: usize = state.project.values().map(|p| p.refs.len()).sum();
        let text: usize = state
            .project
            .iter()
            .map(|(name, p)| {
                name.len()
                    + p.refs
                        .iter()
                        .map(|(refname, r)| {
                            let commit = r.last.as_ref().filter(|l| l.commit != r.head).map_or(0, |l| l.commit.len());
                            refname.len() + r.head.len() + commit
                        })
                        .sum::<usize>()
            })
            .sum();
        let mut index =
            Index { text: String::with_capacity(text), projects: Vec::new(), rows: Vec::with_capacity(refs) };
        for (name, project) in state.project {
            let name = index.push(&name);
            let first = index.rows.len();
            for (refname, r) in project.refs {
                let (refname, head) = (index.push(&refname), index.push(&r.head));
                let last = r.last.map(|l| {
                    // Usually the head itself: kept once.
                    let commit = if l.commit == r.head { head } else { index.push(&l.commit) };
                    (l.stage, l.result, commit, l.at)
                });
                index.rows.push(Row { refname, head, since: r.since, last, pending: r.pending, closed: r.closed });
            }
            index.projects.push((name, first..index.rows.len()));
        }
        index
    }

    fn push(&mut self, text: &str) -> Span {
        let span = Span { start: self.text.len() as u32, len: text.len() as u32 };
        self.text.push_str(text);
        span
    }

    fn str(&self, span: Span) -> &str {
        &self.text[span.start as usize..(span.start + span.len) as usize]
    }

    /// Every project with its refs, by name.
    pub(super) fn projects(&self) -> impl Iterator<Item = (&str, &[Row])> {
        self.projects.iter().map(|(name, rows)| (self.str(*name), &self.rows[rows.clone()]))
    }

    pub(super) fn refs(&self, project: &str) -> Option<&[Row]> {
        let at = self.projects.binary_search_by(|(name, _)| self.str(*name).cmp(project)).ok()?;
        Some(&self.rows[self.projects[at].1.clone()])
    }

    pub(super) fn find(&self, project: &str, refname: &str) -> Option<&Row> {
        let rows = self.refs(project)?;
        rows.binary_search_by(|r| self.str(r.refname).cmp(refname)).ok().map(|at| &rows[at])
    }

    pub(super) fn refname(&self, row: &Row) -> &str {
        self.str(row.refname)
    }

    /// The row as the state's type, for the few rows a page shows.
    pub(super) fn ref_state(&self, row: &Row) -> RefState {
        RefState {
            head: self.str(row.head).to_string(),
            since: row.since,
            pending: row.pending,
            last: row.last.map(|(stage, result, commit, at)| StageRecord {
                stage,
                result,
                commit: self.str(commit).to_string(),
                at,
            }),
            closed: row.closed,
        }
    }
}

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
    index: Arc<Index>,
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
    pub(super) fn get(&self) -> anyhow::Result<Arc<Index>> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let error = |e: std::io::Error| StateError { path: self.path.clone(), message: format!("cannot be read: {e}") };
        let meta = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *last = None;
                return Ok(Arc::new(Index::default()));
            }
            Err(e) => return Err(error(e).into()),
        };
        if let Some(snapshot) = last.as_ref()
            && snapshot.key == FileKey::of(&meta)
        {
            return Ok(snapshot.index.clone());
        }
        // The old state goes first: two states are never held for this cache at once.
        *last = None;
        give_back_memory();
        let file = File::open(&self.path).map_err(error)?;
        let key = FileKey::of(&file.metadata().map_err(error)?);
        let pinned = file.try_clone().map_err(error)?;
        let index = Arc::new(Index::new(state::read_compact(&self.path, file)?));
        self.reads.fetch_add(1, Ordering::Relaxed);
        *last = Some(Snapshot { key, _pinned: pinned, index: index.clone() });
        give_back_memory();
        Ok(index)
    }

    #[cfg(test)]
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// Gives memory freed by a large read back to the system (glibc keeps freed heap otherwise,
/// so one re-read of a 10,000-ref state would stay in the process's RSS).
pub(crate) fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's heaps to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_gives_back_every_ref_as_the_state_holds_it() {
        let mut st = State::default();
        for (project, n) in [("web", 30), ("api", 5), ("empty", 0)] {
            let p = st.project.entry(project.into()).or_default();
            p.indexed = true;
            for i in 0..n {
                let last = (i % 3 != 0).then(|| StageRecord {
                    stage: Stage::Test,
                    result: if i % 2 == 0 { Outcome::Failed } else { Outcome::Passed },
                    // Every fourth ref's last stage ran on an older commit than its head.
                    commit: if i % 4 == 0 { format!("{i:040}") } else { format!("{i:040x}") },
                    at: Timestamp::from_second(1_790_000_000 + i).unwrap(),
                });
                let r = RefState {
                    head: format!("{i:040x}"),
                    since: Timestamp::from_second(1_789_000_000 + i).unwrap(),
                    pending: i % 5 == 0,
                    last,
                    closed: i % 7 == 0,
                };
                p.refs.insert(format!("refs/heads/b-{i}-é"), r);
            }
        }
        let index = Index::new(st.clone());
        let names: Vec<&str> = index.projects().map(|(n, _)| n).collect();
        assert_eq!(names, ["api", "empty", "web"]);
        for (project, p) in &st.project {
            assert_eq!(index.refs(project).unwrap().len(), p.refs.len());
            for (refname, r) in &p.refs {
                let row = index.find(project, refname).unwrap();
                assert_eq!(index.refname(row), refname);
                assert_eq!(&index.ref_state(row), r);
                assert_eq!(row.result(), crate::report::last_result(r));
            }
        }
        assert!(index.find("web", "refs/heads/none").is_none() && index.refs("nope").is_none());
        assert_eq!(index.text.capacity(), index.text.len(), "sized once");
        assert_eq!(std::mem::size_of::<Row>(), 72, "a row per ref, its strings in the text");
    }

    #[test]
    fn the_state_is_read_once_per_version_and_again_after_each_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        let cache = StateCache::new(path.clone());
        assert_eq!(cache.get().unwrap().projects().count(), 0, "no file: an empty state");

        let mut st = State::default();
        let record = |pending| RefState {
            head: "a".repeat(40),
            since: Timestamp::UNIX_EPOCH,
            pending,
            last: None,
            closed: false,
        };
        st.project.entry("a".into()).or_default().refs.insert("refs/heads/x".into(), record(true));
        state::save(&path, &st).unwrap();
        let first = cache.get().unwrap();
        assert_eq!(first.find("a", "refs/heads/x").unwrap().result(), "pending");
        assert!(Arc::ptr_eq(&first, &cache.get().unwrap()), "unchanged: the same parsed state");
        assert_eq!(cache.reads(), 1);

        // Saves in a row, as fast as they come: each one is seen.
        for pending in [false, true, false, true] {
            st.project.get_mut("a").unwrap().refs.insert("refs/heads/x".into(), record(pending));
            state::save(&path, &st).unwrap();
            assert_eq!(cache.get().unwrap().find("a", "refs/heads/x").unwrap().pending, pending);
        }
        assert_eq!(cache.reads(), 5);

        std::fs::write(&path, "schema = 1\n[project.a]\nindexed = oops\n").unwrap();
        drop(first);
        let err = format!("{:#}", cache.get().unwrap_err());
        assert!(err.contains("state.toml") && err.contains("line 3"), "{err}");
    }
}
