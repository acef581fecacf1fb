//! An append-only file whose records are on stable storage before `append` returns, with one
//! sync for many (group commit). The thread that finds no write in flight leads: it writes every
//! record appended since the last write and syncs once (`fdatasync`, which covers the file's
//! new length) for all of them, while the next group gathers behind it. Alone, a request pays
//! one sync; under load, one sync serves every request that arrived during the previous one.
//! The file is created with a directory sync, and replaced whole between two groups (temporary
//! file, sync, rename, directory sync) to drop what is no longer needed.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use anyhow::Context as _;

pub(crate) struct CommitLog {
    path: PathBuf,
    state: Mutex<State>,
    /// Signalled when the file is put back, for a rewrite waiting for it.
    turn: Condvar,
}

struct State {
    /// `None` while a leader writes or the file is being replaced.
    file: Option<File>,
    /// The file's length after the last complete write: a failed write is cut back to it.
    len: u64,
    /// Records appended since the last write, and the outcome they will share.
    pending: Vec<u8>,
    group: Arc<Group>,
}

/// The records written by one leader: its members wait on `done` (not on one condition for
/// all, so finishing a group wakes its members and one thread to lead the next, not everyone).
#[derive(Default)]
struct Group {
    outcome: OnceLock<Result<(), String>>,
    done: Condvar,
}

impl CommitLog {
    /// Opens (or creates) the file and returns its complete records: a record cut short by a
    /// crash (no final newline) is dropped from the file.
    pub(crate) fn open(path: PathBuf) -> anyhow::Result<(CommitLog, Vec<u8>)> {
        let mut text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("failed to read `{}`", path.display())),
        };
        let created = !path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("failed to open `{}`", path.display()))?;
        if created {
            sync_dir(&path)?;
        }
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            text.truncate(whole);
            file.set_len(whole as u64).with_context(|| format!("failed to truncate `{}`", path.display()))?;
        }
        let state = State { file: Some(file), len: whole as u64, pending: Vec::new(), group: Arc::default() };
        Ok((CommitLog { path, state: Mutex::new(state), turn: Condvar::new() }, text))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts the file back and wakes who waits for it: one member of the group gathering now
    /// (to lead it) and a rewrite.
    fn put_back<'a>(&self, mut state: MutexGuard<'a, State>, file: File) -> MutexGuard<'a, State> {
        state.file = Some(file);
        state.group.done.notify_one();
        self.turn.notify_all();
        state
    }

    /// Appends `record` (whole lines) and returns once it is on stable storage.
    pub(crate) fn append(&self, record: &[u8]) -> anyhow::Result<()> {
        let mut state = self.lock();
        state.pending.extend_from_slice(record);
        let group = state.group.clone();
        loop {
            if let Some(outcome) = group.outcome.get() {
                return outcome.clone().map_err(anyhow::Error::msg);
            }
            let Some(mut file) = state.file.take() else {
                state = group.done.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            // Lead: this group holds our record and every one appended since the last write.
            let bytes = std::mem::take(&mut state.pending);
            let leading = std::mem::take(&mut state.group);
            let len = state.len;
            drop(state);
            let written = file.write_all(&bytes).and_then(|()| file.sync_data());
            if written.is_err() {
                // No half record may stay for the next group to follow.
                let _ = file.set_len(len);
            }
            state = self.lock();
            if written.is_ok() {
                state.len = len + bytes.len() as u64;
            }
            let _ = leading
                .outcome
                .set(written.map_err(|e| format!("failed to write and sync `{}`: {e}", self.path.display())));
            leading.done.notify_all();
            state = self.put_back(state, file);
        }
    }

    /// Replaces the file's records by `keep(records)` between two groups: written to a
    /// temporary file, synced, renamed over the file, the directory synced.
    pub(crate) fn rewrite(&self, keep: impl FnOnce(&[u8]) -> Vec<u8>) -> anyhow::Result<()> {
        let mut state = self.lock();
        let file = loop {
            match state.file.take() {
                Some(file) => break file,
                None => state = self.turn.wait(state).unwrap_or_else(|e| e.into_inner()),
            }
        };
        drop(state);
        let replaced = self.replace(keep);
        let mut state = self.lock();
        let (file, outcome) = match replaced {
            Ok((new, len)) => {
                state.len = len;
                (new, Ok(()))
            }
            // The rename may have happened: appends go to whatever the path names now.
            Err(e) => match OpenOptions::new().append(true).open(&self.path) {
                Ok(now) => {
                    state.len = now.metadata().map_or(state.len, |m| m.len());
                    (now, Err(e))
                }
                Err(_) => (file, Err(e)),
            },
        };
        drop(self.put_back(state, file));
        outcome
    }

    fn replace(&self, keep: impl FnOnce(&[u8]) -> Vec<u8>) -> anyhow::Result<(File, u64)> {
        let failed = || format!("failed to rewrite `{}`", self.path.display());
        let text = keep(&std::fs::read(&self.path).with_context(failed)?);
        let tmp = self.path.with_extension("tmp");
        let mut out = File::create(&tmp).with_context(failed)?;
        out.write_all(&text).and_then(|()| out.sync_all()).with_context(failed)?;
        std::fs::rename(&tmp, &self.path).with_context(failed)?;
        let file = OpenOptions::new().append(true).open(&self.path).with_context(failed)?;
        sync_dir(&self.path)?;
        Ok((file, text.len() as u64))
    }
}

/// Syncs the directory holding `path`, so its entry (a creation, a rename) is on stable storage.
fn sync_dir(path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("failed to sync the directory `{}`", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_appended_from_many_threads_are_all_there_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (log, text) = CommitLog::open(path.clone()).unwrap();
        assert!(text.is_empty());
        let log = Arc::new(log);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        log.append(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let threes = |text: &[u8]| {
            let text = String::from_utf8_lossy(text);
            text.lines().filter(|l| l.starts_with("3 ")).map(|l| format!("{l}\n")).collect::<String>().into_bytes()
        };
        log.rewrite(threes).unwrap();
        log.append(b"9 9\n").unwrap();
        drop(log);
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"torn").unwrap();
        let (_, text) = CommitLog::open(path.clone()).unwrap();
        let text = String::from_utf8(text).unwrap();
        let expected: String = (0..50).map(|i| format!("3 {i}\n")).chain(["9 9\n".to_string()]).collect();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_by_key(|l| l.split(' ').map(|n| n.parse::<u32>().unwrap()).collect::<Vec<_>>());
        assert_eq!(lines.join("\n") + "\n", expected, "every record once, the torn one dropped");
        assert_eq!(std::fs::read(&path).unwrap(), text.as_bytes(), "the torn record is cut from the file");
    }
}
