//! An append-only file of records (whole lines, without a NUL byte) that are on stable storage
//! before `append` returns, with one write for many (group commit).
//!
//! The file is written ahead with zeros (synced; it grows by its own size, 64 KiB to 1 MiB at a
//! time), so that a group's write only overwrites blocks the file already has: nothing but the
//! data goes to the disk, and a synchronous direct write (`O_DIRECT | O_DSYNC`: one write and
//! one cache flush, no page cache, no length or block map to record) puts it on stable storage.
//! Records are packed into 4 KiB blocks; a group writes the blocks it fills, the last one
//! partly, whole.
//!
//! Up to [`WRITING`] groups are written at once: the thread that finds its records gathered and
//! a place free leads their group, while the next group gathers behind it. Two groups never
//! write the same block: a group that starts while the block the last one ends in is still
//! being written starts at the next block, and the zeros between are skipped when the file is
//! read. Alone, a request pays one write; under load, one write serves every request that
//! arrived during the previous ones. Where the file system refuses direct writes (at open, or
//! a block it will not align to), the same blocks are written through the page cache and
//! synced with `fdatasync`, one group at a time.
//!
//! What a crash can leave: a group's records whole, or a record cut short, which is followed by
//! zeros (a record ends with its newline, so it is dropped), or, where the disk wrote a later
//! sector of a group and not an earlier one, the end of a record after zeros, which callers
//! check as they check any line (a run's line must name its hook twice and parse whole; a
//! delivery's end rarely parses, and then as an entry no request has). A group sharing a
//! block writes the block's earlier records again, the same bytes: a disk that can tear a
//! sector on a power cut (no power-loss protection) could damage them there. A record whose
//! write failed is written over with zeros where the disk takes it; where it does not, a
//! later open reads it. The file is rewritten whole (temporary file, sync, rename, directory
//! sync) when it is opened, with what its owner still needs of it, and when its owner asks,
//! between two groups, to drop what is no longer needed and the gaps; `append` says once, on
//! success, when the gaps are more than 1 MiB larger than the records.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use anyhow::Context as _;

/// The unit a group writes: a page, ext4's usual block, and a multiple of every sector size.
const BLOCK: usize = 4096;
/// Zeros written ahead when the file is written whole; as it fills, it grows by its own size,
/// within `AHEAD..=GROWTH`.
const AHEAD: u64 = 64 << 10;
const GROWTH: u64 = 1 << 20;
/// Gaps the file may hold beyond its records' size before a rewrite is advised.
const SLACK: u64 = 1 << 20;
/// Groups written at once.
const WRITING: usize = 2;

pub(crate) struct CommitLog {
    path: PathBuf,
    state: Mutex<State>,
    /// Signalled when no group is being written, and when a rewrite ends, for a rewrite
    /// waiting for either.
    idle: Condvar,
}

struct State {
    /// The open file; `None` while it is being replaced.
    file: Option<Arc<Log>>,
    /// Groups being written.
    writing: usize,
    /// Rewrites waiting on `idle`.
    rewrites: usize,
    /// Where the last group placed ends, and the bytes of its block before that.
    end: u64,
    tail: Vec<u8>,
    /// The group writing the block `end` is in, while it does.
    tail_writer: Option<u64>,
    /// Bytes of the file written (records and zeros ahead).
    size: u64,
    /// Bytes of records in the file, gaps not counted.
    records: u64,
    /// Whether `append` said the file is worth rewriting since it last was.
    advised: bool,
    /// Records appended since the last group was placed, and the outcome they will share.
    pending: Vec<u8>,
    group: Arc<Group>,
    /// The number of the last group placed (`tail_writer` names groups by it).
    groups: u64,
}

/// The records written by one leader: its members wait on `done` (not on one condition for
/// all, so finishing a group wakes its members and one thread to lead the next, not everyone).
/// Only threads that wait are woken: a wake-up is a system call, paid before an answer.
#[derive(Default)]
struct Group {
    outcome: OnceLock<Result<(), String>>,
    done: Condvar,
    /// Members waiting on `done` (changed under the state's lock).
    waiting: AtomicUsize,
}

impl Group {
    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        state
    }

    /// Wakes its members, when it has any waiting.
    fn wake_all(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.done.notify_all();
        }
    }

    /// Wakes one member, to lead it.
    fn wake_one(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.done.notify_one();
        }
    }
}

/// The file, opened for synchronous direct writes where the file system takes them, and
/// through the page cache (then synced) where it does not.
struct Log {
    direct: Option<File>,
    /// Set when a direct write was refused for its alignment: the page cache from then on.
    refused: AtomicBool,
    cached: File,
    /// One write and sync through the page cache at a time: a failed write-back is reported
    /// to one `fdatasync` only, which must be the one of the group whose pages failed.
    syncing: Mutex<()>,
}

impl Log {
    fn open(path: &Path) -> std::io::Result<Log> {
        let direct = OpenOptions::new().write(true).custom_flags(libc::O_DIRECT | libc::O_DSYNC).open(path).ok();
        let cached = OpenOptions::new().write(true).open(path)?;
        Ok(Log { direct, refused: AtomicBool::new(false), cached, syncing: Mutex::new(()) })
    }

    /// Writes `bytes` (a whole number of blocks) at `at` (a block's start), on stable storage
    /// when this returns.
    fn write(&self, at: u64, bytes: &Blocks) -> std::io::Result<()> {
        if let Some(direct) = self.direct.as_ref().filter(|_| !self.refused.load(Ordering::Relaxed)) {
            match direct.write_all_at(bytes.as_slice(), at) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.refused.store(true, Ordering::Relaxed),
                written => return written,
            }
        }
        let _one = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        self.cached.write_all_at(bytes.as_slice(), at)?;
        self.cached.sync_data()
    }
}

/// Zeroed memory aligned to a block, as direct writes need.
struct Blocks {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: `Blocks` owns its allocation, as a `Vec<u8>` does.
unsafe impl Send for Blocks {}

impl Blocks {
    /// `bytes` followed by zeros to the end of their last block (one block when empty).
    fn of(bytes: &[u8]) -> Blocks {
        let blocks = Blocks::zeroed(bytes.len());
        // SAFETY: the allocation holds at least `bytes.len()` bytes and does not overlap `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), blocks.ptr.as_ptr(), bytes.len()) };
        blocks
    }

    fn zeroed(len: usize) -> Blocks {
        let layout = std::alloc::Layout::from_size_align(round_up(len.max(1) as u64) as usize, BLOCK)
            .expect("a block-aligned layout");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Blocks { ptr, layout }
    }

    /// Zeros from `from` to the end.
    fn zero_from(&mut self, from: usize) {
        // SAFETY: `ptr` points to `layout.size()` bytes owned by `self`, borrowed mutably.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) };
        let from = from.min(all.len());
        all[from..].fill(0);
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size()` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        // SAFETY: allocated in `of` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

fn round_up(at: u64) -> u64 {
    at.div_ceil(BLOCK as u64) * BLOCK as u64
}

fn round_down(at: u64) -> u64 {
    at / BLOCK as u64 * BLOCK as u64
}

/// The complete records of a file's bytes: the lines between its zeros; a line a crash cut
/// short (zeros or the end of the file before its newline) is dropped.
fn records(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for run in bytes.split(|&b| b == 0) {
        let whole = run.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        out.extend_from_slice(&run[..whole]);
    }
    out
}

impl CommitLog {
    /// Opens (or creates) the file, rewritten with the records `keep` returns from its
    /// complete records (what the owner still needs), and returns those.
    pub(crate) fn open(path: PathBuf, keep: impl FnOnce(&[u8]) -> Vec<u8>) -> anyhow::Result<(CommitLog, Vec<u8>)> {
        let text = match std::fs::read(&path) {
            Ok(bytes) => keep(&records(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => keep(&[]),
            Err(e) => return Err(e).with_context(|| format!("failed to read `{}`", path.display())),
        };
        let state = State {
            file: None,
            writing: 0,
            rewrites: 0,
            end: 0,
            tail: Vec::new(),
            tail_writer: None,
            size: 0,
            records: 0,
            advised: false,
            pending: Vec::new(),
            group: Arc::default(),
            groups: 0,
        };
        let log = CommitLog { path, state: Mutex::new(state), idle: Condvar::new() };
        let file = log.replace(&text)?;
        sync_dir(&log.path)?;
        log.lock().place(file, &text);
        Ok((log, text))
    }

    /// The complete records of the file at `path`, as `open` reads them.
    #[cfg(test)]
    pub(crate) fn read(path: &Path) -> Vec<u8> {
        records(&std::fs::read(path).unwrap())
    }

    /// Makes every write fail (a descriptor open for reading only) until called with `false`.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self, fail: bool) {
        let log = if fail {
            let cached = File::open(&self.path).unwrap();
            Log { direct: None, refused: AtomicBool::new(false), cached, syncing: Mutex::new(()) }
        } else {
            Log::open(&self.path).unwrap()
        };
        self.lock().file = Some(Arc::new(log));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `record` (whole lines) and returns once it is on stable storage, with whether
    /// the file's gaps are now more than 1 MiB larger than its records (once, until it is
    /// rewritten): a rewrite would be worth its cost.
    pub(crate) fn append(&self, record: &[u8]) -> anyhow::Result<bool> {
        debug_assert!(record.ends_with(b"\n") && !record.contains(&0), "whole lines without a NUL byte");
        let mut state = self.lock();
        state.pending.extend_from_slice(record);
        let group = state.group.clone();
        loop {
            if let Some(outcome) = group.outcome.get() {
                let sparse = outcome.is_ok() && !state.advised && state.end > 2 * state.records + SLACK;
                state.advised |= sparse;
                return outcome.clone().map(|()| sparse).map_err(anyhow::Error::msg);
            }
            // Lead when our records still wait for a leader and a place is free.
            let free = state.writing < WRITING && Arc::ptr_eq(&group, &state.group);
            let file = state.file.clone().filter(|_| free);
            let Some(file) = file else {
                state = group.wait(state);
                continue;
            };
            let leading = std::mem::take(&mut state.group);
            let placed = match state.place_group(&file) {
                Ok(placed) => placed,
                Err(e) => {
                    state.pending.clear();
                    let _ = leading.outcome.set(Err(format!("failed to extend `{}`: {e}", self.path.display())));
                    leading.wake_all();
                    continue;
                }
            };
            state.writing += 1;
            drop(state);
            let written = file.write(placed.at, &placed.blocks);
            if written.is_err() {
                // Records whose writers hear of a failure must not be read back as written:
                // zeros over them where the disk takes it, and the blocks are not used again.
                let mut blocks = placed.blocks;
                blocks.zero_from(placed.earlier);
                let _ = file.write(placed.at, &blocks);
            }
            state = self.lock();
            state.writing -= 1;
            if state.tail_writer == Some(placed.group) {
                state.tail_writer = None;
            }
            match &written {
                Ok(()) => state.records += placed.records,
                Err(_) => state.skip_past(placed.at + placed.len),
            }
            let _ = leading
                .outcome
                .set(written.map_err(|e| format!("failed to write and sync `{}`: {e}", self.path.display())));
            leading.wake_all();
            // One waiting thread leads the group gathering now; a rewrite may go on.
            state.group.wake_one();
            if state.writing == 0 && state.rewrites > 0 {
                self.idle.notify_all();
            }
        }
    }

    /// Replaces the file's records by `keep(records)` between two groups: written to a
    /// temporary file with zeros ahead, synced, renamed over the file, the directory synced.
    pub(crate) fn rewrite(&self, keep: impl FnOnce(&[u8]) -> Vec<u8>) -> anyhow::Result<()> {
        let mut state = self.lock();
        // Taken at once, so that no group starts; then the groups being written end.
        state.rewrites += 1;
        let file = loop {
            match state.file.take() {
                Some(file) => break file,
                None => state = self.idle.wait(state).unwrap_or_else(|e| e.into_inner()),
            }
        };
        while state.writing > 0 {
            state = self.idle.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.rewrites -= 1;
        drop(state);
        let read = std::fs::read(&self.path).with_context(|| format!("failed to rewrite `{}`", self.path.display()));
        let replaced = read.and_then(|bytes| {
            let text = keep(&records(&bytes));
            self.replace(&text).map(|log| (log, text))
        });
        // Renamed: appends go to the new file (a directory sync that fails is reported, and
        // the new file is the one the path names). Not renamed: the path names the old file
        // still, which appends go on with as before.
        let outcome = replaced.map(|new| (new, sync_dir(&self.path)));
        let mut state = self.lock();
        let outcome = match outcome {
            Ok(((new, text), synced)) => {
                state.place(new, &text);
                synced
            }
            Err(e) => {
                state.file = Some(file);
                Err(e)
            }
        };
        state.group.wake_one();
        if state.rewrites > 0 {
            self.idle.notify_all();
        }
        outcome
    }

    /// Writes `text` and zeros ahead to a temporary file, syncs it, opens it for appends and
    /// renames it over the file (the directory is synced by the caller); returns it. On an
    /// error, the file at the path is the one it was.
    fn replace(&self, text: &[u8]) -> anyhow::Result<Log> {
        let failed = || format!("failed to rewrite `{}`", self.path.display());
        let tmp = self.path.with_extension("tmp");
        let mut out = File::create(&tmp).with_context(failed)?;
        let zeros = vec![0; (round_up(text.len() as u64) - text.len() as u64 + AHEAD) as usize];
        out.write_all(text).and_then(|()| out.write_all(&zeros)).and_then(|()| out.sync_all()).with_context(failed)?;
        // Opened before the rename, so that the descriptors follow the file renamed.
        let log = Log::open(&tmp).with_context(failed)?;
        std::fs::rename(&tmp, &self.path).with_context(failed)?;
        Ok(log)
    }
}

impl State {
    /// Takes `file`, freshly written with `text` and zeros ahead, as the file appends go to.
    fn place(&mut self, file: Log, text: &[u8]) {
        let len = text.len() as u64;
        self.size = round_up(len) + AHEAD;
        self.end = len;
        self.records = len;
        self.advised = false;
        self.tail = text[round_down(len) as usize..].to_vec();
        self.tail_writer = None;
        self.file = Some(Arc::new(file));
    }

    /// Places the records gathered so far. The file is extended first when they would pass
    /// its end.
    fn place_group(&mut self, file: &Log) -> std::io::Result<Placed> {
        let shared = !self.end.is_multiple_of(BLOCK as u64) && self.tail_writer.is_none();
        let at = if shared { round_down(self.end) } else { round_up(self.end) };
        let needed = round_up(at + (if shared { self.tail.len() } else { 0 } + self.pending.len()) as u64);
        if needed > self.size {
            let more = needed - self.size + self.size.clamp(AHEAD, GROWTH);
            file.write(self.size, &Blocks::zeroed(more as usize))?;
            self.size += more;
        }
        let mut bytes = if shared { std::mem::take(&mut self.tail) } else { Vec::new() };
        let (earlier, records) = (bytes.len(), self.pending.len() as u64);
        bytes.append(&mut self.pending);
        self.groups += 1;
        self.end = at + bytes.len() as u64;
        self.tail = bytes[(round_down(self.end) - at) as usize..].to_vec();
        self.tail_writer = (!self.end.is_multiple_of(BLOCK as u64)).then_some(self.groups);
        let blocks = Blocks::of(&bytes);
        Ok(Placed { at, len: blocks.as_slice().len() as u64, blocks, earlier, records, group: self.groups })
    }

    /// Places the next group at or after `at`, a block's start or the end of the file.
    fn skip_past(&mut self, at: u64) {
        if self.end <= at {
            self.end = round_up(at);
            self.tail.clear();
            self.tail_writer = None;
        }
    }
}

/// A group placed: its blocks, written at `at`; the bytes of earlier groups they begin with;
/// its bytes of records; its number.
struct Placed {
    at: u64,
    len: u64,
    blocks: Blocks,
    earlier: usize,
    records: u64,
    group: u64,
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
        let (log, text) = CommitLog::open(path.clone(), <[u8]>::to_vec).unwrap();
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
        let (_, text) = CommitLog::open(path.clone(), <[u8]>::to_vec).unwrap();
        let text = String::from_utf8(text).unwrap();
        let expected: String = (0..50).map(|i| format!("3 {i}\n")).chain(["9 9\n".to_string()]).collect();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_by_key(|l| l.split(' ').map(|n| n.parse::<u32>().unwrap()).collect::<Vec<_>>());
        assert_eq!(lines.join("\n") + "\n", expected, "every record once, the torn one dropped");
        assert_eq!(CommitLog::read(&path), text.as_bytes(), "the torn record is cut from the file");
        assert!(std::fs::read(&path).unwrap().starts_with(text.as_bytes()), "rewritten at open: its records first");
    }

    #[test]
    fn a_record_cut_short_before_zeros_is_dropped_and_the_records_after_them_are_read() {
        assert_eq!(records(b"a 1\nb 2\0\0\0c 3\nd"), b"a 1\nc 3\n");
        assert_eq!(records(b"\0\0"), b"");
        assert_eq!(records(b"a 1\n"), b"a 1\n", "a file an earlier version wrote: lines alone");
    }

    #[test]
    fn a_group_placed_while_the_last_block_is_written_starts_at_the_next_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (log, _) = CommitLog::open(path.clone(), <[u8]>::to_vec).unwrap();
        let file = log.lock().file.clone().unwrap();
        let mut state = log.lock();
        state.pending.extend_from_slice(b"one\n");
        let first = state.place_group(&file).unwrap();
        assert_eq!((first.at, first.earlier, state.end), (0, 0, 4));
        // The first group's block is being written: the second may not write it too.
        state.pending.extend_from_slice(b"two\n");
        let second = state.place_group(&file).unwrap();
        assert_eq!((second.at, second.earlier, state.end), (4096, 0, 4100));
        assert_eq!(state.tail_writer, Some(second.group));
        // Once written, the next group shares the block, writing its earlier records again.
        state.tail_writer = None;
        state.pending.extend_from_slice(b"three\n");
        let third = state.place_group(&file).unwrap();
        assert_eq!((third.at, third.earlier, state.end), (4096, 4, 4106));
        assert_eq!(&third.blocks.as_slice()[..10], b"two\nthree\n");
        // Past the zeros written ahead, the file grows first.
        state.tail_writer = None;
        state.pending.extend_from_slice(&vec![b'x'; 70_000]);
        let size = state.size;
        let big = state.place_group(&file).unwrap();
        assert!(state.size >= big.at + big.len && state.size > size);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), state.size, "the zeros are written");
    }

    #[test]
    fn gaps_beyond_the_records_are_reported_once_until_the_file_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path().join("log"), <[u8]>::to_vec).unwrap();
        // Each group alone in its block, as when every group starts while another is written.
        let mut said = 0;
        for i in 0..600 {
            let mut state = log.lock();
            let end = state.end;
            state.skip_past(end + 1);
            drop(state);
            said += usize::from(log.append(format!("{i}\n").as_bytes()).unwrap());
        }
        assert_eq!(said, 1, "the file passed its records by more than the slack once");
        log.rewrite(|text| text.to_vec()).unwrap();
        assert!(log.lock().end < 4096, "rewritten dense");
        assert_eq!(String::from_utf8(CommitLog::read(&dir.path().join("log"))).unwrap().lines().count(), 600);
    }

    #[test]
    fn an_open_rewrites_the_file_with_what_its_owner_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (log, _) = CommitLog::open(path.clone(), <[u8]>::to_vec).unwrap();
        for record in [&b"a 1\n"[..], b"b 1\n", b"a 2\n"] {
            log.append(record).unwrap();
        }
        drop(log);
        let (_, kept) = CommitLog::open(path.clone(), |text| {
            text.split_inclusive(|&b| b == b'\n').filter(|l| l.starts_with(b"a")).flatten().copied().collect()
        })
        .unwrap();
        assert_eq!(kept, b"a 1\na 2\n");
        assert_eq!(CommitLog::read(&path), b"a 1\na 2\n", "the file holds what was kept");
    }

    #[test]
    fn where_direct_writes_are_refused_the_page_cache_is_written_and_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (log, _) = CommitLog::open(path.clone(), <[u8]>::to_vec).unwrap();
        let cached = OpenOptions::new().write(true).open(&path).unwrap();
        log.lock().file =
            Some(Arc::new(Log { direct: None, refused: AtomicBool::new(false), cached, syncing: Mutex::new(()) }));
        log.append(b"a 1\n").unwrap();
        drop(log);
        assert_eq!(CommitLog::open(path, <[u8]>::to_vec).unwrap().1, b"a 1\n");
    }

    /// The fall-back kept for a file system that takes direct writes at open and refuses one
    /// later (`EINVAL`): that write and every later one go through the page cache, synced.
    #[test]
    fn a_direct_write_refused_with_einval_and_every_later_one_go_through_the_page_cache() {
        // A disk's file system (the build's directory): a tmpfs may take unaligned direct writes.
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, vec![0u8; 3 * BLOCK]).unwrap();
        let file = Log::open(&path).unwrap();
        assert!(file.direct.is_some(), "this file system takes direct writes");
        // An offset off the disk's sectors: the kernel refuses a direct write there.
        file.write(1, &Blocks::of(b"a 1\n")).unwrap();
        assert!(file.refused.load(Ordering::Relaxed), "the refusal is remembered");
        file.write(BLOCK as u64, &Blocks::of(b"a 2\n")).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((&bytes[1..5], &bytes[BLOCK..BLOCK + 4]), (&b"a 1\n"[..], &b"a 2\n"[..]));
    }

    /// A new log in a directory of its own, holding `record`.
    fn log_holding(record: &[u8]) -> (tempfile::TempDir, PathBuf, CommitLog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (log, _) = CommitLog::open(path.clone(), <[u8]>::to_vec).unwrap();
        log.append(record).unwrap();
        (dir, path, log)
    }

    #[test]
    fn a_failed_write_is_an_error_naming_the_file_and_the_next_group_does_not_follow_it() {
        let (_dir, path, log) = log_holding(b"kept 1\n");
        log.fail_writes(true);
        let err = log.append(b"lost 2\n").unwrap_err();
        assert!(format!("{err:#}").contains(&path.display().to_string()), "{err:#}");
        let end = log.lock().end;
        assert_eq!(end % 4096, 0, "the failed group's blocks are not written into again");
        log.fail_writes(false);
        log.append(b"kept 3\n").unwrap();
        assert_eq!(CommitLog::read(&path), b"kept 1\nkept 3\n");
    }

    #[test]
    fn a_rewrite_that_fails_before_its_rename_leaves_appends_going_to_the_file_as_before() {
        let (_dir, path, log) = log_holding(b"a 1\n");
        // The temporary file cannot be made: a directory holds its name.
        std::fs::create_dir(path.with_extension("tmp")).unwrap();
        let err = log.rewrite(|_| Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("failed to rewrite"), "{err:#}");
        log.append(b"a 2\n").unwrap();
        assert_eq!(CommitLog::read(&path), b"a 1\na 2\n", "nothing dropped, the next record after the last");
        std::fs::remove_dir(path.with_extension("tmp")).unwrap();
        log.rewrite(|text| text.to_vec()).unwrap();
        log.append(b"a 3\n").unwrap();
        assert_eq!(CommitLog::open(path, <[u8]>::to_vec).unwrap().1, b"a 1\na 2\na 3\n");
    }
}
