//! The record of seen deliveries: signed hook requests' `delivery` ids and forge deliveries'
//! bodies, kept on disk until they expire so a captured request stays refused after a restart.
//!
//! Bounded three ways: in time (an entry lives until its expiry, at most the replay window or
//! the forges' seven days), in entries ([`MAX_ENTRIES`] live at once; beyond it a new delivery
//! is refused rather than an unexpired one forgotten, and only authenticated requests add
//! entries), and in bytes (a key is held as 16 bytes of its SHA-256, a line on disk is 45
//! bytes, and the file is rewritten without the expired entries once it has grown to twice the
//! live ones). A request costs one hash lookup and one heap push (expired entries leave from the
//! heap's top as time passes), and one line appended through the group commit of `commit`, so
//! concurrent requests share a sync; the rewrite runs on a thread of its own, not in the request
//! that triggered it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::commit::CommitLog;

/// Live entries at most.
pub(crate) const MAX_ENTRIES: usize = 250_000;

pub(crate) struct Deliveries {
    log: Arc<CommitLog>,
    state: Mutex<State>,
    rewriting: Arc<AtomicBool>,
}

struct State {
    live: HashMap<u128, i64>,
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
            if self.live.get(&key) == Some(&expires) {
                self.live.remove(&key);
            }
        }
    }

    /// Takes `key` until `expires`: `None` when it is live already, else whether the file is due
    /// for a rewrite; an error when the record is full.
    fn take(&mut self, key: u128, expires: i64, now: i64) -> anyhow::Result<Option<bool>> {
        self.expire(now);
        if self.live.get(&key).is_some_and(|&e| e >= now) {
            return Ok(None);
        }
        if self.live.len() >= MAX_ENTRIES {
            anyhow::bail!("{MAX_ENTRIES} deliveries are remembered already; none has expired yet");
        }
        self.insert(key, expires);
        self.lines += 1;
        let rewrite = self.lines > 2 * self.live.len() + 1024;
        if rewrite {
            self.lines = self.live.len();
        }
        Ok(Some(rewrite))
    }

    fn insert(&mut self, key: u128, expires: i64) {
        self.live.insert(key, expires);
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

/// The entries of `text` that have not expired at `now`: `EXPIRES =HASH` lines, and the
/// `EXPIRES ID` lines of earlier versions (an id never contains `=`).
fn parse(text: &str, now: i64) -> impl Iterator<Item = (u128, i64)> {
    text.lines().filter_map(move |line| {
        let (expires, key) = line.split_once(' ')?;
        let expires = expires.parse::<i64>().ok().filter(|e| *e >= now)?;
        let key = match key.strip_prefix('=') {
            Some(hex) if hex.len() == 32 => u128::from_str_radix(hex, 16).ok()?,
            Some(_) => return None,
            None if valid_id(key) => hash(key),
            None => return None,
        };
        Some((key, expires))
    })
}

fn line(key: u128, expires: i64) -> String {
    format!("{expires} ={key:032x}\n")
}

impl Deliveries {
    /// Loads the entries that have not expired at `now`.
    pub(crate) fn open(path: PathBuf, now: i64) -> anyhow::Result<Deliveries> {
        let (log, text) = CommitLog::open(path)?;
        let text = String::from_utf8_lossy(&text);
        let mut state = State { live: HashMap::new(), expiries: BinaryHeap::new(), lines: text.lines().count() };
        for (key, expires) in parse(&text, now) {
            if state.live.get(&key).is_none_or(|e| *e < expires) {
                state.insert(key, expires);
            }
        }
        Ok(Deliveries { log: Arc::new(log), state: Mutex::new(state), rewriting: Arc::default() })
    }

    /// Records `key` until `expires`, on stable storage when this returns `Ok(true)`; `Ok(false)`
    /// when it was already received and has not expired; an error when it could not be written
    /// or [`MAX_ENTRIES`] unexpired entries are held.
    pub(crate) fn record(&self, key: &str, expires: i64, now: i64) -> anyhow::Result<bool> {
        let key = hash(key);
        let Some(rewrite) = self.state.lock().unwrap_or_else(|e| e.into_inner()).take(key, expires, now)? else {
            return Ok(false);
        };
        self.log.append(line(key, expires).as_bytes())?;
        if rewrite && !self.rewriting.swap(true, Ordering::AcqRel) {
            // The entry is on disk already; a rewrite that fails leaves the file as it was.
            let (log, rewriting) = (self.log.clone(), self.rewriting.clone());
            let spawned = std::thread::Builder::new().name("pipe-serve-deliveries".into()).spawn(move || {
                let _ = log.rewrite(|text| {
                    let text = String::from_utf8_lossy(text);
                    parse(&text, now).map(|(key, expires)| line(key, expires)).collect::<String>().into_bytes()
                });
                rewriting.store(false, Ordering::Release);
            });
            if spawned.is_err() {
                self.rewriting.store(false, Ordering::Release);
            }
        }
        Ok(true)
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
    fn ids_survive_a_reopen_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries");
        let store = Deliveries::open(path.clone(), 100).unwrap();
        assert!(store.record("d-1", 200, 100).unwrap());
        assert!(!store.record("d-1", 200, 150).unwrap());
        let reopened = Deliveries::open(path.clone(), 190).unwrap();
        assert!(!reopened.record("d-1", 300, 190).unwrap(), "remembered across a restart");
        let later = Deliveries::open(path, 201).unwrap();
        assert!(later.record("d-1", 400, 201).unwrap(), "forgotten once expired");
    }

    #[test]
    fn ids_written_by_earlier_versions_are_still_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries");
        std::fs::write(&path, "200 d-old\n50 d-gone\n").unwrap();
        let store = Deliveries::open(path, 100).unwrap();
        assert!(!store.record("d-old", 300, 100).unwrap());
        assert!(store.record("d-gone", 300, 100).unwrap());
    }

    #[test]
    fn the_file_is_rewritten_without_expired_ids_and_keeps_the_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries");
        let store = Deliveries::open(path.clone(), 0).unwrap();
        for i in 0..1100 {
            assert!(store.record(&format!("old-{i}"), 10, 0).unwrap());
        }
        assert_eq!(store.len(), 1100);
        assert!(store.record("new", 1000, 20).unwrap(), "the 1,101st line: the expired 1,100 go");
        assert_eq!(store.len(), 1, "expired entries leave memory too");
        wait_rewritten(&store);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, line(hash("new"), 1000));
        assert!(store.record("newer", 1000, 20).unwrap());
        let reopened = Deliveries::open(path, 30).unwrap();
        assert!(!reopened.record("new", 1000, 30).unwrap() && !reopened.record("newer", 1000, 30).unwrap());
    }

    #[test]
    fn a_request_costs_the_same_beside_100000_entries_as_beside_none() {
        // Regression: every request swept every entry for expired ones (O(n) per request).
        let cost = |entries: u128| {
            let mut state = State { live: HashMap::new(), expiries: BinaryHeap::new(), lines: 0 };
            for i in 0..entries {
                state.insert(u128::MAX - i, 9_000_000 + (i % 1000) as i64);
            }
            let started = std::time::Instant::now();
            for i in 0..20_000u128 {
                // Time moves on: each request's entry expires 50 s later, as others arrive.
                let now = 1_000_000 + (i / 20) as i64;
                assert!(state.take(i, now + 50, now).unwrap().is_some());
            }
            started.elapsed()
        };
        let (none, full) = (cost(0).min(cost(0)), cost(100_000).min(cost(100_000)));
        assert!(full < none * 4 + std::time::Duration::from_millis(20), "{full:?} beside 100,000 vs {none:?}");
    }

    #[test]
    fn a_full_record_refuses_new_deliveries_rather_than_forget_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Deliveries::open(dir.path().join("deliveries"), 0).unwrap();
        {
            let mut state = store.state.lock().unwrap();
            for i in 0..MAX_ENTRIES as u128 {
                state.insert(i, 100);
            }
        }
        assert!(store.record("one-more", 100, 50).is_err(), "full: refused");
        assert!(store.record("one-more", 200, 101).unwrap(), "once the others expired: taken");
        assert_eq!(store.len(), 1);
    }
}
