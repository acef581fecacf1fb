//! The run table: every accepted request is a run with a status document, written to
//! `serve/HOOK/ID.json` beside its log `serve/HOOK/ID.log` before the `202` is answered and on
//! every change, so each run stays retrievable after a restart. Retention: the newest
//! `serve.keep_runs` runs of each hook (default 1,000); older documents and their logs are
//! removed together, at start and every 100 accepted runs. Memory holds queued and running
//! runs and the most recent finished ones.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Finished runs kept in memory (older ones are read back from disk).
const CACHED: usize = 500;
/// Runs accepted between two retention passes.
const PRUNE_EVERY: usize = 100;

/// What `GET /hooks/NAME/runs/ID` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunInfo {
    pub id: String,
    pub hook: String,
    /// `queued`, `running`, `succeeded`, `failed`, `superseded`, `cancelled`, `interrupted`.
    pub status: String,
    /// Unix seconds at which the request was accepted.
    #[serde(default)]
    pub received_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub env: Vec<(String, String)>,
}

impl RunInfo {
    pub(crate) fn ended(&self) -> bool {
        !matches!(self.status.as_str(), "queued" | "running")
    }
}

/// A run id as `secret::random_id` makes them: the only names read from disk.
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) struct Runs {
    dir: PathBuf,
    keep: usize,
    table: Mutex<Table>,
    /// Signalled whenever a run reaches its end, for `?wait=`.
    ended: Condvar,
}

#[derive(Default)]
struct Table {
    live: HashMap<String, RunInfo>,
    finished: VecDeque<String>,
    accepted: usize,
}

impl Runs {
    /// Opens the run directory; runs a previous process left queued or running are recorded as
    /// `cancelled` or `interrupted`, and retention is applied.
    pub(crate) fn open(dir: PathBuf, keep: usize, hooks: &[String]) -> Runs {
        let runs = Runs { dir, keep: keep.max(1), table: Mutex::new(Table::default()), ended: Condvar::new() };
        for hook in hooks {
            for path in runs.documents(hook) {
                let Some(mut run) = read(&path) else { continue };
                if !run.ended() {
                    run.error = Some("the receiver stopped before the run ended".into());
                    run.status = if run.status == "running" { "interrupted" } else { "cancelled" }.into();
                    let _ = write(&path, &run);
                }
            }
            runs.prune(hook);
        }
        runs
    }

    pub(crate) fn log_path(&self, hook: &str, id: &str) -> PathBuf {
        self.dir.join(hook).join(format!("{id}.log"))
    }

    fn doc_path(&self, hook: &str, id: &str) -> PathBuf {
        self.dir.join(hook).join(format!("{id}.json"))
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new run (on disk first); `then` runs under the table's lock, for the queue.
    pub(crate) fn insert(&self, run: RunInfo, then: impl FnOnce(&mut dyn FnMut(&str, &str))) -> anyhow::Result<()> {
        let dir = self.dir.join(&run.hook);
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("failed to create `{}`: {e}", dir.display()))?;
        write(&self.doc_path(&run.hook, &run.id), &run)?;
        let hook = run.hook.clone();
        let prune = {
            let mut table = self.lock();
            table.live.insert(run.id.clone(), run);
            let mut supersede = |old: &str, by: &str| {
                if let Some(r) = table.live.get_mut(old) {
                    r.status = "superseded".into();
                    r.superseded_by = Some(by.to_string());
                    let _ = write(&self.doc_path(&r.hook, &r.id), r);
                }
                table.finished.push_back(old.to_string());
            };
            then(&mut supersede);
            self.trim(&mut table);
            table.accepted += 1;
            table.accepted.is_multiple_of(PRUNE_EVERY)
        };
        self.ended.notify_all();
        if prune {
            self.prune(&hook);
        }
        Ok(())
    }

    /// Changes a run and writes its document.
    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut RunInfo)) {
        let mut table = self.lock();
        let Some(run) = table.live.get_mut(id) else { return };
        change(run);
        let _ = write(&self.doc_path(&run.hook, &run.id), run);
        if run.ended() {
            table.finished.push_back(id.to_string());
            self.trim(&mut table);
            drop(table);
            self.ended.notify_all();
        }
    }

    pub(crate) fn get_live(&self, id: &str) -> Option<RunInfo> {
        self.lock().live.get(id).cloned()
    }

    /// A run of `hook`, from memory or from its document.
    pub(crate) fn get(&self, hook: &str, id: &str) -> Option<RunInfo> {
        if let Some(run) = self.lock().live.get(id).filter(|r| r.hook == hook) {
            return Some(run.clone());
        }
        if !valid_id(id) {
            return None;
        }
        read(&self.doc_path(hook, id)).filter(|r| r.hook == hook && r.id == id)
    }

    /// Waits up to `wait` for a run to end; `None` if it is still queued or running.
    pub(crate) fn wait_for_end(&self, id: &str, wait: Duration) -> Option<RunInfo> {
        let deadline = Instant::now() + wait;
        let mut table = self.lock();
        loop {
            let run = table.live.get(id)?;
            if run.ended() {
                return Some(run.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || crate::signals::received().is_some() {
                return None;
            }
            table = self
                .ended
                .wait_timeout(table, left.min(Duration::from_millis(200)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Forgets the oldest finished runs beyond [`CACHED`] (their documents stay).
    fn trim(&self, table: &mut Table) {
        while table.finished.len() > CACHED {
            if let Some(old) = table.finished.pop_front()
                && table.live.get(&old).is_some_and(RunInfo::ended)
            {
                table.live.remove(&old);
            }
        }
    }

    fn documents(&self, hook: &str) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.dir.join(hook)) else { return Vec::new() };
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect()
    }

    /// Removes the documents and logs of `hook`'s runs beyond the newest `keep`.
    fn prune(&self, hook: &str) {
        let mut docs: Vec<(std::time::SystemTime, PathBuf)> = self
            .documents(hook)
            .into_iter()
            .filter_map(|p| Some((std::fs::metadata(&p).and_then(|m| m.modified()).ok()?, p)))
            .collect();
        if docs.len() <= self.keep {
            return;
        }
        docs.sort();
        let live: Vec<String> = self.lock().live.values().filter(|r| !r.ended()).map(|r| r.id.clone()).collect();
        for (_, path) in &docs[..docs.len() - self.keep] {
            let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            if live.contains(&id) {
                continue;
            }
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(path.with_extension("log"));
        }
    }
}

fn read(path: &Path) -> Option<RunInfo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes a run's document whole (temporary file, rename); not fsynced: evidence, not state.
fn write(path: &Path, run: &RunInfo) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(run)?)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| anyhow::anyhow!("failed to write `{}`: {e}", path.display()))
}
