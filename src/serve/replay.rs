//! The record of seen deliveries: signed hook requests' `delivery` ids and forge deliveries'
//! bodies, kept on disk until they expire so a captured request stays refused after a restart.
//!
//! Bounded three ways: in time (an entry lives until its expiry, at most the replay window or
//! the forges' seven days), in entries (each credential — a hook, a forge project — has its own
//! part of [`PART_ENTRIES`] live entries; beyond it that credential's new delivery is refused
//! rather than an unexpired one forgotten, so whoever holds one credential fills only its part
//! and never keeps another hook's or project's deliveries out; only authenticated requests add
//! entries), and in bytes (a key is held as 16 bytes of its SHA-256 and its part as 8, a line on
//! disk is 62 bytes, and the file is rewritten without the expired entries once its lines are
//! twice the live ones, or once its gaps are more than 1 MiB larger than its lines, as `commit`
//! says). A request costs one hash lookup and one heap push (expired entries leave from the
//! heap's top as time passes), and one line appended through the group commit of `commit`, so
//! concurrent requests share a write; the rewrite runs on a thread of its own, not in the request
//! that triggered it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::commit::CommitLog;

/// Live entries at most in one credential's part.
pub(crate) const PART_ENTRIES: usize = 100_000;

/// The part of entries written by versions that kept no parts: looked up, never added to.
const EARLIER: u64 = 0;

pub(crate) struct Deliveries {
    log: Arc<CommitLog>,
    /// The replay window, in seconds, its file's last [`window`] line names.
    window: i64,
    state: Mutex<State>,
    rewriting: Arc<AtomicBool>,
}

struct State {
    /// Each live key's expiry and part.
    live: HashMap<u128, (i64, u64)>,
    /// Live entries per part.
    parts: HashMap<u64, usize>,
    /// Every entry's expiry, soonest on top (an entry recorded again leaves a stale one behind,
    /// told apart by its expiry).
    expiries: BinaryHeap<Reverse<(i64, u128)>>,
    lines: usize,
}

impl State {
    /// Forgets what expired before `now`: amortised O(1) per request, each entry leaves once.
    fn expire(&mut self, now: i64) {
        while let Some(Reverse((expires, key))) = self.expiries.peek().copied() {
            if expires >= now {
                break;
            }
            self.expiries.pop();
            self.forget(key, expires);
        }
    }

    /// Takes `key` for `part` until `expires`: `None` when it is live already (in any part),
    /// else whether the file is due for a rewrite; an error when the part is full.
    fn take(&mut self, key: u128, part: u64, expires: i64, now: i64) -> anyhow::Result<Option<bool>> {
        self.expire(now);
        if self.live.get(&key).is_some_and(|&(e, _)| e >= now) {
            return Ok(None);
        }
        if self.parts.get(&part).copied().unwrap_or(0) >= PART_ENTRIES {
            anyhow::bail!("{PART_ENTRIES} deliveries of this credential are remembered already; none has expired yet");
        }
        self.insert(key, part, expires);
        self.lines += 1;
        let rewrite = self.lines > 2 * self.live.len() + 1024;
        if rewrite {
            self.lines = self.live.len();
        }
        Ok(Some(rewrite))
    }

    /// Forgets `key` if it is live until `expires` (an entry recorded again since is kept): as
    /// it expires, or to undo `take` when the entry could not be written, so that a sender told
    /// so may send it again.
    fn forget(&mut self, key: u128, expires: i64) {
        if let Some(&(live, part)) = self.live.get(&key)
            && live == expires
        {
            self.live.remove(&key);
            self.leave(part);
        }
    }

    /// One entry fewer in `part`.
    fn leave(&mut self, part: u64) {
        if let Some(count) = self.parts.get_mut(&part) {
            *count -= 1;
            if *count == 0 {
                self.parts.remove(&part);
            }
        }
    }

    fn insert(&mut self, key: u128, part: u64, expires: i64) {
        if let Some((_, was)) = self.live.insert(key, (expires, part)) {
            self.leave(was);
        }
        *self.parts.entry(part).or_default() += 1;
        self.expiries.push(Reverse((expires, key)));
    }
}

/// What a delivery id may look like.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// A key as it is held: the first 16 bytes of its SHA-256.
fn hash(key: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    u128::from_be_bytes(digest[..16].try_into().unwrap_or_default())
}

/// A part as it is held: the first 8 bytes of its name's SHA-256 (never [`EARLIER`]).
fn part_id(part: &str) -> u64 {
    ((hash(part) >> 64) as u64).max(1)
}

/// The entries of `text` that have not expired at `now`: `EXPIRES =HASH PART` lines, and the
/// `EXPIRES =HASH` and `EXPIRES ID` lines of earlier versions (an id never contains `=`), which
/// go to the part [`EARLIER`].
fn parse(text: &str, now: i64) -> impl Iterator<Item = (u128, u64, i64)> {
    text.lines().filter_map(entry).filter(move |(_, _, expires)| *expires >= now)
}

/// One line's entry: key, part, expiry; `None` for a line that is not one (a [`window`] line).
fn entry(line: &str) -> Option<(u128, u64, i64)> {
    let (expires, rest) = line.split_once(' ')?;
    let expires = expires.parse::<i64>().ok()?;
    let (key, part) = match rest.split_once(' ') {
        Some((key, part)) if part.len() == 16 => (key, u64::from_str_radix(part, 16).ok()?),
        Some(_) => return None,
        None => (rest, EARLIER),
    };
    let key = match key.strip_prefix('=') {
        Some(hex) if hex.len() == 32 => u128::from_str_radix(hex, 16).ok()?,
        Some(_) => return None,
        None if valid_id(key) => hash(key),
        None => return None,
    };
    Some((key, part, expires))
}

/// The line that says which replay window the entries after it were recorded under.
fn window(secs: i64) -> String {
    format!("window {secs}\n")
}

/// `text` as the replay window `secs` keeps it at `now`, at an open and at a rewrite: each entry
/// that has not expired, an entry recorded under a shorter window living as long as the longer
/// one lets its delivery be fresh (its expiry pushed by the difference), so raising the window
/// never makes a captured request that is fresh again acceptable again. Each run of entries
/// follows a window line naming the window its expiries reflect (the longer of the two: a
/// shorter window keeps what was recorded), and the text ends with `secs`'s line, for the
/// entries appended after it. Entries before any window line (an earlier version's) keep
/// their expiry.
fn kept(text: &[u8], now: i64, secs: i64) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let mut out = String::new();
    let (mut then, mut named) = (None, None);
    for l in text.lines() {
        if let Some(recorded) = l.strip_prefix("window ") {
            then = recorded.parse::<i64>().ok();
        } else if let Some((key, part, expires)) = entry(l) {
            let recorded = then.unwrap_or(secs);
            let longer = secs.saturating_sub(recorded).max(0);
            if expires.saturating_add(longer) >= now {
                if named != Some(recorded.max(secs)) {
                    named = Some(recorded.max(secs));
                    out.push_str(&window(recorded.max(secs)));
                }
                // A line kept as it was (an earlier version's form too) unless its expiry moves.
                match longer {
                    0 => out.extend([l, "\n"]),
                    _ => out.push_str(&line(key, part, expires.saturating_add(longer))),
                }
            }
        }
    }
    if named != Some(secs) {
        out.push_str(&window(secs));
    }
    out.into_bytes()
}

fn line(key: u128, part: u64, expires: i64) -> String {
    format!("{expires} ={key:032x} {part:016x}\n")
}

impl Deliveries {
    /// Loads the entries that have not expired at `now` under the replay window `window`
    /// (seconds; see [`kept`]).
    pub(crate) fn open(path: PathBuf, now: i64, window: i64) -> anyhow::Result<Deliveries> {
        let (log, text) = CommitLog::open(path, |text| kept(text, now, window))?;
        let text = String::from_utf8_lossy(&text);
        let mut state = State {
            live: HashMap::new(),
            parts: HashMap::new(),
            expiries: BinaryHeap::new(),
            lines: text.lines().count(),
        };
        for (key, part, expires) in parse(&text, now) {
            if state.live.get(&key).is_none_or(|(e, _)| *e < expires) {
                state.insert(key, part, expires);
            }
        }
        Ok(Deliveries { log: Arc::new(log), window, state: Mutex::new(state), rewriting: Arc::default() })
    }

    /// Records `key` in the part of the credential `part` (`hook:NAME`, `forge:PROJECT`) until
    /// `expires`, on stable storage when this returns `Ok(true)`; `Ok(false)` when it was
    /// already received and has not expired; an error when it could not be written or that
    /// part holds [`PART_ENTRIES`] unexpired entries.
    pub(crate) fn record(&self, part: &str, key: &str, expires: i64, now: i64) -> anyhow::Result<bool> {
        let (key, part) = (hash(key), part_id(part));
        let Some(rewrite) = self.state.lock().unwrap_or_else(|e| e.into_inner()).take(key, part, expires, now)? else {
            return Ok(false);
        };
        let sparse = match self.log.append(line(key, part, expires).as_bytes()) {
            Ok(sparse) => sparse,
            Err(e) => {
                self.state.lock().unwrap_or_else(|e| e.into_inner()).forget(key, expires);
                return Err(e);
            }
        };
        if (rewrite || sparse) && !self.rewriting.swap(true, Ordering::AcqRel) {
            // The entry is on disk already; a rewrite that fails leaves the file as it was.
            let (log, rewriting, secs) = (self.log.clone(), self.rewriting.clone(), self.window);
            let spawned = std::thread::Builder::new().name("pipe-serve-deliveries".into()).spawn(move || {
                let _ = log.rewrite(|text| kept(text, now, secs));
                rewriting.store(false, Ordering::Release);
            });
            if spawned.is_err() {
                self.rewriting.store(false, Ordering::Release);
            }
        }
        Ok(true)
    }

    /// Whether `key` was recorded and has not expired at `now` (in any part), without
    /// recording it.
    pub(crate) fn seen(&self, key: &str, now: i64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.expire(now);
        state.live.get(&hash(key)).is_some_and(|&(e, _)| e >= now)
    }

    /// Live entries now (for tests and the bench).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_rewritten(store: &Deliveries) {
        while store.rewriting.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_delivery_that_could_not_be_written_may_be_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Deliveries::open(dir.path().join("deliveries"), 100, 300).unwrap();
        store.log.fail_writes(true);
        assert!(store.record("h", "d-1", 200, 100).is_err());
        assert!(!store.seen("d-1", 100), "not taken: its sender heard of the failure");
        store.log.fail_writes(false);
        assert!(store.record("h", "d-1", 200, 101).unwrap(), "taken when sent again");
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn ids_survive_a_reopen_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries");
        let store = Deliveries::open(path.clone(), 100, 300).unwrap();
        assert!(store.record("h", "d-1", 200, 100).unwrap());
        assert!(!store.record("h", "d-1", 200, 150).unwrap());
        let reopened = Deliveries::open(path.clone(), 190, 300).unwrap();
        assert!(!reopened.record("h", "d-1", 300, 190).unwrap(), "remembered across a restart");
        let later = Deliveries::open(path, 201, 300).unwrap();
        assert!(later.record("h", "d-1", 400, 201).unwrap(), "forgotten once expired");
    }

    #[test]
    fn an_open_writes_back_only_the_ids_that_have_not_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries");
        let store = Deliveries::open(path.clone(), 100, 300).unwrap();
        assert!(store.record("h", "d-1", 150, 100).unwrap());
        assert!(store.record("h", "d-2", 300, 100).unwrap());
        drop(store);
        let reopened = Deliveries::open(path.clone(), 200, 300).unwrap();
        assert_eq!(reopened.len(), 1);
        let text = String::from_utf8(CommitLog::read(&path)).unwrap();
        let firsts: Vec<_> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(firsts, ["window", "300"], "the window line, the live entry after it: {text}");
        assert!(!reopened.record("h", "d-2", 400, 200).unwrap(), "the live one is still refused");
    }

    /// A captured signed request, fresh again under a window the operator raised, is still
    /// refused after the restart: its entry lives as long as the new window lets it be fresh.
    #[test]
    fn raising_the_replay_window_keeps_an_entry_as_long_as_the_new_window_needs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries");
        let store = Deliveries::open(path.clone(), 100, 10).unwrap();
        assert!(store.record("h", "d-1", 110, 100).unwrap(), "sent at 100, window 10 s");
        drop(store);
        let raised = Deliveries::open(path.clone(), 115, 3600).unwrap();
        assert!(!raised.record("h", "d-1", 3700, 115).unwrap(), "still refused under a window of an hour");
        drop(raised);
        let lowered = Deliveries::open(path.clone(), 200, 5).unwrap();
        assert!(!lowered.record("h", "d-1", 205, 200).unwrap(), "a shorter window keeps what was recorded");
        drop(lowered);
        let later = Deliveries::open(path, 3701, 3600).unwrap();
        assert!(later.record("h", "d-1", 7301, 3701).unwrap(), "forgotten once the hour has passed");
    }

    #[test]
    fn ids_written_by_earlier_versions_are_still_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries");
        std::fs::write(&path, format!("200 d-old\n50 d-gone\n200 ={:032x}\n", hash("d-hashed"))).unwrap();
        let store = Deliveries::open(path, 100, 300).unwrap();
        assert!(!store.record("h", "d-old", 300, 100).unwrap());
        assert!(!store.record("h", "d-hashed", 300, 100).unwrap());
        assert!(store.record("h", "d-gone", 300, 100).unwrap());
    }

    #[test]
    fn the_file_is_rewritten_without_expired_ids_and_keeps_the_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries");
        let store = Deliveries::open(path.clone(), 0, 300).unwrap();
        for i in 0..1100 {
            assert!(store.record("h", &format!("old-{i}"), 10, 0).unwrap());
        }
        assert_eq!(store.len(), 1100);
        assert!(store.record("h", "new", 1000, 20).unwrap(), "the 1,101st line: the expired 1,100 go");
        assert_eq!(store.len(), 1, "expired entries leave memory too");
        wait_rewritten(&store);
        let text = String::from_utf8(CommitLog::read(&path)).unwrap();
        assert_eq!(text, window(300) + &line(hash("new"), part_id("h"), 1000));
        assert!(store.record("h", "newer", 1000, 20).unwrap());
        let reopened = Deliveries::open(path, 30, 300).unwrap();
        assert!(!reopened.record("h", "new", 1000, 30).unwrap() && !reopened.record("h", "newer", 1000, 30).unwrap());
    }

    #[test]
    fn a_request_costs_the_same_beside_100000_entries_as_beside_none() {
        // Regression: every request swept every entry for expired ones (O(n) per request).
        let cost = |entries: u128| {
            let mut state =
                State { live: HashMap::new(), parts: HashMap::new(), expiries: BinaryHeap::new(), lines: 0 };
            for i in 0..entries {
                state.insert(u128::MAX - i, 7 + (i % 4) as u64, 9_000_000 + (i % 1000) as i64);
            }
            let started = std::time::Instant::now();
            for i in 0..20_000u128 {
                // Time moves on: each request's entry expires 50 s later, as others arrive.
                let now = 1_000_000 + (i / 20) as i64;
                assert!(state.take(i, 1, now + 50, now).unwrap().is_some());
            }
            started.elapsed()
        };
        let (none, full) = (cost(0).min(cost(0)), cost(100_000).min(cost(100_000)));
        assert!(full < none * 4 + std::time::Duration::from_millis(20), "{full:?} beside 100,000 vs {none:?}");
    }

    #[test]
    fn a_full_part_refuses_its_new_deliveries_and_no_other_part_s() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries");
        let store = Deliveries::open(path.clone(), 0, 300).unwrap();
        {
            let mut state = store.state.lock().unwrap();
            for i in 0..PART_ENTRIES as u128 {
                state.insert(i, part_id("forge:lab"), 100);
            }
        }
        assert!(store.record("forge:lab", "one-more", 100, 50).is_err(), "its part is full: refused");
        assert!(store.record("hook:deploy", "release", 100, 50).unwrap(), "another credential's part is not");
        assert!(store.record("forge:other", "push", 100, 50).unwrap(), "nor another project's");
        assert!(!store.record("forge:lab", "release", 100, 50).unwrap(), "a key is seen once, whatever the part");
        assert!(store.seen("release", 50) && !store.seen("never", 50));
        assert!(store.record("forge:lab", "one-more", 200, 101).unwrap(), "once the others expired: taken");
        assert_eq!(store.len(), 1);
        // Parts are kept on disk: a restart does not give a full part room again.
        assert!(store.record("hook:deploy", "later", 500, 101).unwrap());
        let reopened = Deliveries::open(path, 102, 300).unwrap();
        let state = reopened.state.lock().unwrap();
        assert_eq!(state.parts.get(&part_id("forge:lab")), Some(&1));
        assert_eq!(state.parts.get(&part_id("hook:deploy")), Some(&1));
    }
}
