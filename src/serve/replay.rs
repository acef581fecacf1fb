//! Delivery ids of signed requests, kept on disk until they expire so a captured request stays
//! refused after a restart. One line per id (`EXPIRES DELIVERY`, unix seconds), appended and
//! synced before the request is accepted; rewritten without the expired ids when it has grown
//! to twice the live ones.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context as _;

pub(crate) struct Deliveries {
    path: PathBuf,
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

impl Deliveries {
    /// Loads the ids that have not expired at `now`.
    pub(crate) fn open(path: PathBuf, now: i64) -> anyhow::Result<Deliveries> {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("failed to read `{}`", path.display())),
        };
        let mut live = HashMap::new();
        let mut lines = 0;
        for line in text.lines() {
            lines += 1;
            let Some((expires, id)) = line.split_once(' ') else { continue };
            if let Ok(expires) = expires.parse::<i64>()
                && expires >= now
                && valid_id(id)
            {
                live.insert(id.to_string(), expires);
            }
        }
        Ok(Deliveries { path, state: Mutex::new(State { live, lines }) })
    }

    /// Records `id` until `expires`; `Ok(false)` when it was already received and has not expired.
    pub(crate) fn record(&self, id: &str, expires: i64, now: i64) -> anyhow::Result<bool> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.live.get(id).is_some_and(|&e| e >= now) {
            return Ok(false);
        }
        state.live.retain(|_, e| *e >= now);
        state.live.insert(id.to_string(), expires);
        if state.lines > 2 * state.live.len() + 1024 {
            let text: String = state.live.iter().map(|(id, e)| format!("{e} {id}\n")).collect();
            let tmp = self.path.with_extension("tmp");
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, &self.path))
                .with_context(|| format!("failed to rewrite `{}`", self.path.display()))?;
            state.lines = state.live.len();
            return Ok(true);
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("failed to open `{}`", self.path.display()))?;
        file.write_all(format!("{expires} {id}\n").as_bytes())
            .and_then(|()| file.sync_data())
            .with_context(|| format!("failed to write `{}`", self.path.display()))?;
        state.lines += 1;
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
}
