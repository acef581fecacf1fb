//! Delivery ids of signed requests, kept on disk until they expire so a captured request stays
//! refused after a restart. One line per id (`EXPIRES DELIVERY`, unix seconds), on stable
//! storage before the request is accepted (appended through the group commit of `commit`, so
//! concurrent requests share a sync); rewritten without the expired ids when it has grown to
//! twice the live ones.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use super::commit::CommitLog;

pub(crate) struct Deliveries {
    log: CommitLog,
    state: Mutex<State>,
}

struct State {
    live: HashMap<String, i64>,
    lines: usize,
}

/// What a delivery id may look like: it is written to the file as one word.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// The ids of `text` that have not expired at `now`.
fn parse(text: &str, now: i64) -> impl Iterator<Item = (&str, i64)> {
    text.lines().filter_map(move |line| {
        let (expires, id) = line.split_once(' ')?;
        let expires = expires.parse::<i64>().ok()?;
        (expires >= now && valid_id(id)).then_some((id, expires))
    })
}

impl Deliveries {
    /// Loads the ids that have not expired at `now`.
    pub(crate) fn open(path: PathBuf, now: i64) -> anyhow::Result<Deliveries> {
        let (log, text) = CommitLog::open(path)?;
        let text = String::from_utf8_lossy(&text);
        let live: HashMap<String, i64> = parse(&text, now).map(|(id, e)| (id.to_string(), e)).collect();
        let lines = text.lines().count();
        Ok(Deliveries { log, state: Mutex::new(State { live, lines }) })
    }

    /// Records `id` until `expires`, on stable storage when this returns `Ok(true)`; `Ok(false)`
    /// when it was already received and has not expired.
    pub(crate) fn record(&self, id: &str, expires: i64, now: i64) -> anyhow::Result<bool> {
        let rewrite = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.live.get(id).is_some_and(|&e| e >= now) {
                return Ok(false);
            }
            state.live.retain(|_, e| *e >= now);
            state.live.insert(id.to_string(), expires);
            state.lines += 1;
            let rewrite = state.lines > 2 * state.live.len() + 1024;
            if rewrite {
                state.lines = state.live.len();
            }
            rewrite
        };
        self.log.append(format!("{expires} {id}\n").as_bytes())?;
        if rewrite {
            // The id is on disk already; a rewrite that fails leaves the file as it was.
            let _ = self.log.rewrite(|text| {
                let text = String::from_utf8_lossy(text);
                parse(&text, now).map(|(id, e)| format!("{e} {id}\n")).collect::<String>().into_bytes()
            });
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_file_is_rewritten_without_expired_ids_and_keeps_the_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries");
        let store = Deliveries::open(path.clone(), 0).unwrap();
        for i in 0..1100 {
            assert!(store.record(&format!("old-{i}"), 10, 0).unwrap());
        }
        assert!(store.record("new", 1000, 20).unwrap(), "the 1,101st line: the expired 1,100 go");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "1000 new\n");
        assert!(store.record("newer", 1000, 20).unwrap());
        let reopened = Deliveries::open(path, 30).unwrap();
        assert!(!reopened.record("new", 1000, 30).unwrap() && !reopened.record("newer", 1000, 30).unwrap());
    }
}
