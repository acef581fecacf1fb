//! The run table: every accepted request is a run. Before the `202` its acceptance (the run's
//! document, status `queued`) is on stable storage in `serve/accepted`, one line per run
//! (`HOOK DOCUMENT`) appended through the group commit of `commit`, so concurrent requests share
//! one sync. The document `serve/HOOK/ID.json` beside its log `serve/HOOK/ID.log` is written when
//! the run's status changes (not synced: a status after acceptance is evidence, not a promise);
//! at start a document the log has but the directory lacks (or holds cut short) is written
//! again, so each accepted run stays retrievable after a crash or a power cut. A run
//! superseded while it waited has no document while the process runs (see `superseded`):
//! memory answers for it until retention lets it go. Retention: the newest `serve.keep_runs`
//! runs of each hook by acceptance (default 1,000; at start their order in `serve/accepted`,
//! a document of a run it no longer has coming before them); when a new run is accepted, an
//! older run's document and log stop being served and wait, up to [`SPARES`] per hook, to become a new run's files (the
//! rest are removed), and `serve/accepted` keeps the newest `keep_runs` lines of each hook
//! when it has grown past twice that (or once its gaps are more than 1 MiB larger than its
//! lines, as `commit` says). Memory holds queued and running runs, the most recent
//! finished ones, the ids of the runs retention keeps, and the documents of the superseded
//! ones among them (without the environment and images they would have run with). What a
//! request need not wait for — the line of the run it superseded, retention's files, the
//! rewrite of `serve/accepted` — is done in order by a thread of its own ([`Chore`]) after
//! the request is answered.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::commit::CommitLog;
use super::superseded::Ledger;

/// Finished runs kept in memory (older ones are read back from disk).
const CACHED: usize = 500;
/// Files of runs retention let go kept per hook, under their names but hidden from `get`, and
/// renamed to the next documents and logs (a document is written over and cut to its length,
/// a log emptied): renaming a file costs less than creating one and removing another, most of
/// all on ext4 without a journal, whose inode allocator steps over every inode freed in the
/// last five minutes (under `wrk -c64`, perf found request threads spending 46 % of their time
/// there).
const SPARES: usize = 64;
/// Chores waiting for the chores' thread at most; a request that finds them all taken waits.
const CHORES: usize = 4096;

/// File work a request need not wait for, done in order on a thread of its own
/// (`pipe-serve-runs`): the line of a run a new one superseded, and retention's files
/// (spares, removals, the rewrite of `serve/accepted`). What must survive a power cut is in
/// `serve/accepted` before the `202`; these only follow from it, and a document a crash left
/// unwritten is written again from it at start.
enum Chore {
    Supersede(Arc<RunInfo>),
    Retire { gone: Vec<(String, String)>, compact: bool },
    Flush(SyncSender<()>),
}

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
    /// What the deploy did: its timeline, the health check's last answer, rollbacks.
    #[serde(flatten)]
    pub deploy: DeployReport,
    #[serde(skip)]
    pub env: Vec<(String, String)>,
    /// A release of several images: image name → repository (see `auth::Requested`).
    #[serde(skip)]
    pub images: std::collections::BTreeMap<String, String>,
}

/// The deploy of a hook's run as its status document shows it (every field additive: absent
/// until there is something to say).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeployReport {
    /// `zero-downtime` (started beside, checked, switched through the ingress) or `in-place`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// The deploy's moments, as in `pipe run --json`: `healthy` and `traffic` (and the
    /// commit's `detected`, `built`, `tested`, `pushed` when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<crate::state::Timeline>,
    /// The health check's last answer when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::targets::answer::HealthAnswer>,
    /// This run put back an image the hook ran before (a rollback by hand).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// `IMAGE:TAG` the automatic rollback put back after this run's release failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
}

impl RunInfo {
    pub(crate) fn ended(&self) -> bool {
        !matches!(self.status.as_str(), "queued" | "running")
    }
}

/// A run a previous process left queued or running: `cancelled` or `interrupted`.
fn stopped(run: &mut RunInfo) {
    if !run.ended() {
        run.error = Some("the receiver stopped before the run ended".into());
        run.status = if run.status == "running" { "interrupted" } else { "cancelled" }.into();
    }
}

/// A run id as `secret::random_id` makes them: the only names read from disk.
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) struct Runs {
    dir: PathBuf,
    keep: usize,
    /// Hooks configured, for the size `serve/accepted` may grow to.
    hooks: usize,
    /// `serve/accepted`: every accepted run, on stable storage before its `202`.
    accepted: CommitLog,
    table: Mutex<Table>,
    /// Signalled when a run reaches its end while a request waits for one (`?wait=`).
    ended: Condvar,
    /// To the chores' thread.
    chores: SyncSender<Chore>,
    /// `serve/superseded`, the chores' thread's.
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
struct Table {
    live: HashMap<String, RunInfo>,
    finished: VecDeque<String>,
    /// Per hook, the runs retention keeps, oldest first.
    kept: HashMap<String, VecDeque<String>>,
    /// Lines in `serve/accepted`.
    lines: usize,
    /// Per hook, files of runs retention let go, to reuse.
    spares: HashMap<String, Vec<PathBuf>>,
    /// Requests waiting on `ended` (`?wait=`): a run's end wakes them only when there are any.
    waiting: usize,
    /// Runs superseded while they waited, which have no document, until retention lets them go.
    superseded: HashMap<String, Arc<RunInfo>>,
}

impl Runs {
    /// Opens the run directory: documents `serve/accepted` has and the directory lacks are
    /// written again; runs a previous process left queued or running are recorded as
    /// `cancelled` or `interrupted`, and retention is applied.
    pub(crate) fn open(dir: PathBuf, keep: usize, hooks: &[String]) -> anyhow::Result<Arc<Runs>> {
        for hook in hooks {
            let path = dir.join(hook);
            std::fs::create_dir_all(&path).with_context(|| format!("failed to create `{}`", path.display()))?;
        }
        let keep = keep.max(1);
        // The file is rewritten once, with the newest runs of each hook only: the runs kept.
        let (accepted, kept) = CommitLog::open(dir.join("accepted"), |text| newest(text, keep))?;
        let ledger = Ledger::new(dir.join("superseded"));
        let mut superseded: HashMap<String, RunInfo> = (ledger.read().split(|&b| b == b'\n'))
            .filter_map(parse)
            .filter(|(_, run)| run.status == "superseded")
            .map(|(_, run)| (run.id.clone(), run))
            .collect();
        let (chores, todo) = sync_channel(CHORES);
        let mut runs = Runs {
            dir,
            keep,
            hooks: hooks.len().max(1),
            accepted,
            table: Mutex::new(Table::default()),
            ended: Condvar::new(),
            chores,
            ledger: Mutex::new(ledger),
        };
        // Runs are kept by acceptance: their place among the lines kept. A document of a run
        // those lines lack (a file retention let go, or older than them) comes first, by its
        // file's time, and goes first.
        let place = runs.recover(&kept, hooks, &mut superseded);
        runs.ledger.get_mut().unwrap_or_else(|e| e.into_inner()).start()?;
        let mut gone = Vec::new();
        let mut table = Table::default();
        for hook in hooks {
            let mut documents = Vec::new();
            for path in runs.documents(hook) {
                let Some(mut run) = read(&path) else { continue };
                if !run.ended() {
                    stopped(&mut run);
                    let _ = write(&path, &run);
                }
                let Ok(at) = std::fs::metadata(&path).and_then(|m| m.modified()) else { continue };
                documents.push((place.get(&run.id).copied(), at, run.id));
            }
            documents.sort();
            table.kept.insert(hook.clone(), documents.into_iter().map(|(_, _, id)| id).collect());
            gone.extend(beyond(&mut table, runs.keep, hook).into_iter().map(|id| (hook.clone(), id)));
        }
        table.lines = kept.iter().filter(|&&b| b == b'\n').count();
        runs.table = Mutex::new(table);
        runs.remove(&gone);
        let runs = Arc::new(runs);
        // The thread holds the table only while it does a chore; it ends with the last sender.
        let table = Arc::downgrade(&runs);
        std::thread::Builder::new()
            .name("pipe-serve-runs".into())
            .spawn(move || {
                while let Ok(chore) = todo.recv() {
                    let Some(runs) = table.upgrade() else { return };
                    runs.chore(chore);
                }
            })
            .context("failed to start the thread that writes run documents")?;
        Ok(runs)
    }

    fn chore(&self, chore: Chore) {
        match chore {
            Chore::Supersede(run) => {
                let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
                let kept = self.lock().superseded.len();
                // Not on stable storage in any case: a line that could not be written leaves
                // the run `cancelled` after a restart.
                let rewritten = ledger.full(kept) && {
                    let all: Vec<Arc<RunInfo>> = self.lock().superseded.values().cloned().collect();
                    let text = all.iter().filter_map(|run| line(run).ok()).flatten().collect();
                    ledger.rewrite(text, all.len()).is_ok()
                };
                if !rewritten {
                    let _ = line(&run).and_then(|line| ledger.append(&line));
                }
            }
            Chore::Retire { gone, compact } => {
                self.remove(&gone);
                if compact {
                    // The runs are on disk already; a rewrite that fails leaves the file as it was.
                    let keep = self.keep;
                    let _ = self.accepted.rewrite(|text| newest(text, keep));
                }
            }
            Chore::Flush(done) => {
                let _ = done.send(());
            }
        }
    }

    /// Waits (up to 10 s) until every chore asked for so far is done: at shutdown, and for
    /// tests that look at the files.
    pub(crate) fn flush(&self) {
        let (done, wait) = sync_channel(1);
        if self.chores.send(Chore::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(10));
        }
    }

    fn later(&self, chore: Chore) {
        // The thread is gone only when the process is going: do it here then.
        if let Err(std::sync::mpsc::SendError(chore)) = self.chores.send(chore) {
            self.chore(chore);
        }
    }

    /// Writes the documents of accepted runs that are missing or cut short, as a stopped
    /// receiver leaves them (`superseded` has those of runs superseded while they waited),
    /// dated when the run was accepted. Returns each run's place in `text`.
    fn recover(
        &self,
        text: &[u8],
        hooks: &[String],
        superseded: &mut HashMap<String, RunInfo>,
    ) -> HashMap<String, usize> {
        let mut place = HashMap::new();
        for (i, (hook, mut run)) in text.split(|&b| b == b'\n').filter_map(parse).enumerate() {
            place.insert(run.id.clone(), i);
            if !hooks.contains(&run.hook) || hook != run.hook.as_bytes() || !valid_id(&run.id) {
                continue;
            }
            let path = self.doc_path(&run.hook, &run.id);
            if read(&path).is_some() {
                continue;
            }
            match superseded.remove(&run.id).filter(|s| s.hook == run.hook) {
                Some(doc) => run = doc,
                None => stopped(&mut run),
            }
            if write(&path, &run).is_ok() {
                let at = std::time::UNIX_EPOCH + Duration::from_secs(run.received_at.max(0) as u64);
                let _ = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(at));
            }
        }
        place
    }

    /// The hook's deploy history (its last deploys, for rollback), beside its runs.
    pub(crate) fn history_path(&self, hook: &str) -> PathBuf {
        self.dir.join(hook).join("deploys.toml")
    }

    pub(crate) fn log_path(&self, hook: &str, id: &str) -> PathBuf {
        self.dir.join(hook).join(format!("{id}.log"))
    }

    /// The log of a run about to run: a spare put in its place and emptied, when there is one.
    pub(crate) fn new_log(&self, hook: &str, id: &str) -> PathBuf {
        let path = self.log_path(hook, id);
        let spare = self.lock().spares.get_mut(hook).and_then(Vec::pop);
        if let Some(spare) = spare
            && std::fs::rename(&spare, &path).is_ok()
        {
            let _ = std::fs::OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(0));
        }
        path
    }

    /// Writes a run's document; its first write (the run leaves `queued`) reuses a spare.
    fn save(&self, spares: &mut HashMap<String, Vec<PathBuf>>, run: &RunInfo, first: bool) {
        let spare = if first { spares.get_mut(&run.hook).and_then(Vec::pop) } else { None };
        self.write_document(spare, run);
    }

    /// Writes a run's document, in the place of `spare` when there is one (a run's first
    /// document: it leaves `queued`).
    fn write_document(&self, spare: Option<PathBuf>, run: &RunInfo) {
        let path = self.doc_path(&run.hook, &run.id);
        if let Some(spare) = spare {
            let _ = std::fs::rename(&spare, &path);
        }
        let _ = write(&path, run);
    }

    fn doc_path(&self, hook: &str, id: &str) -> PathBuf {
        self.dir.join(hook).join(format!("{id}.json"))
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new run: on stable storage in `serve/accepted` when this returns; `then` runs
    /// under the table's lock, for the queue. The lines of the runs it supersedes (in
    /// `serve/superseded`) and retention's files are left to the chores' thread.
    pub(crate) fn insert(&self, run: RunInfo, then: impl FnOnce(&mut dyn FnMut(&str, &str))) -> anyhow::Result<()> {
        let sparse = self.accepted.append(&line(&run)?)?;
        let mut superseded = Vec::new();
        let (gone, compact, ended) = {
            let mut table = self.lock();
            let hook = run.hook.clone();
            table.kept.entry(hook.clone()).or_default().push_back(run.id.clone());
            table.live.insert(run.id.clone(), run);
            let mut supersede = |old: &str, by: &str| {
                let Table { live, finished, superseded: kept_superseded, .. } = &mut *table;
                if let Some(r) = live.get_mut(old) {
                    // Only a run still waiting is superseded: it has no document, and never
                    // needs the environment and images it would have run with.
                    r.status = "superseded".into();
                    r.superseded_by = Some(by.to_string());
                    r.env = Vec::new();
                    r.images = Default::default();
                    let run = Arc::new(r.clone());
                    kept_superseded.insert(r.id.clone(), run.clone());
                    superseded.push(run);
                }
                finished.push_back(old.to_string());
            };
            then(&mut supersede);
            self.trim(&mut table);
            let gone = beyond(&mut table, self.keep, &hook);
            table.lines += 1;
            let compact = table.lines > 2 * self.keep * self.hooks + 1024 || sparse;
            if compact {
                table.lines = self.keep * self.hooks;
            }
            let ended = !superseded.is_empty() && table.waiting > 0;
            (gone.into_iter().map(|id| (hook.clone(), id)).collect::<Vec<_>>(), compact, ended)
        };
        if ended {
            self.ended.notify_all();
        }
        for run in superseded {
            self.later(Chore::Supersede(run));
        }
        if compact || !gone.is_empty() {
            self.later(Chore::Retire { gone, compact });
        }
        Ok(())
    }

    /// Changes a run and writes its document.
    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut RunInfo)) {
        let mut table = self.lock();
        let Table { live, spares, .. } = &mut *table;
        let Some(run) = live.get_mut(id) else { return };
        let first = run.status == "queued";
        change(run);
        self.save(spares, run, first);
        if run.ended() {
            table.finished.push_back(id.to_string());
            self.trim(&mut table);
            let waiting = table.waiting > 0;
            drop(table);
            if waiting {
                self.ended.notify_all();
            }
        }
    }

    pub(crate) fn get_live(&self, id: &str) -> Option<RunInfo> {
        self.lock().live.get(id).cloned()
    }

    /// A run of `hook`, from memory or from its document.
    pub(crate) fn get(&self, hook: &str, id: &str) -> Option<RunInfo> {
        {
            let table = self.lock();
            if let Some(run) =
                table.live.get(id).or_else(|| table.superseded.get(id).map(|r| &**r)).filter(|r| r.hook == hook)
            {
                return Some(run.clone());
            }
            let doc = self.doc_path(hook, id);
            if table.spares.get(hook).is_some_and(|s| s.contains(&doc)) {
                return None;
            }
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
            table.waiting += 1;
            table = self
                .ended
                .wait_timeout(table, left.min(Duration::from_millis(200)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
            table.waiting -= 1;
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

    /// Keeps the documents and logs of runs retention let go as spares, up to [`SPARES`] per
    /// hook; removes them beyond.
    fn remove(&self, gone: &[(String, String)]) {
        for (hook, id) in gone {
            let doc = self.doc_path(hook, id);
            let log = doc.with_extension("log");
            let log = log.exists().then_some(log);
            let mut table = self.lock();
            let spares = table.spares.entry(hook.clone()).or_default();
            for path in std::iter::once(doc).chain(log) {
                if spares.len() < SPARES {
                    spares.push(path);
                } else {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

/// Takes `hook`'s runs beyond the newest `keep` out of the table, a run still queued or running
/// excepted; returns the ids of those with files (a superseded run has none).
fn beyond(table: &mut Table, keep: usize, hook: &str) -> Vec<String> {
    let Table { live, kept, superseded, .. } = table;
    let Some(order) = kept.get_mut(hook) else { return Vec::new() };
    let (mut gone, mut going_on) = (Vec::new(), Vec::new());
    while order.len() > keep {
        let Some(id) = order.pop_front() else { break };
        if live.get(&id).is_some_and(|r| !r.ended()) {
            going_on.push(id);
        } else {
            live.remove(&id);
            if superseded.remove(&id).is_none() {
                gone.push(id);
            }
        }
    }
    for id in going_on.into_iter().rev() {
        order.push_front(id);
    }
    gone
}

/// The lines of `serve/accepted` worth keeping: the newest `keep` of each hook, in order.
fn newest(text: &[u8], keep: usize) -> Vec<u8> {
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').filter(|l| l.ends_with(b"\n")).collect();
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    let mut kept = vec![false; lines.len()];
    for (i, line) in lines.iter().enumerate().rev() {
        let hook = line.split(|&b| b == b' ').next().unwrap_or_default();
        let n = seen.entry(hook).or_default();
        if *n < keep {
            *n += 1;
            kept[i] = true;
        }
    }
    lines.iter().zip(kept).filter(|(_, k)| *k).flat_map(|(l, _)| l.iter().copied()).collect()
}

/// A run's line in `serve/accepted` or `serve/superseded`: `HOOK DOCUMENT`.
fn line(run: &RunInfo) -> anyhow::Result<Vec<u8>> {
    let mut line = format!("{} ", run.hook).into_bytes();
    serde_json::to_writer(&mut line, run)?;
    line.push(b'\n');
    Ok(line)
}

/// A line's hook and run (the caller checks that they agree).
fn parse(line: &[u8]) -> Option<(&[u8], RunInfo)> {
    let space = line.iter().position(|&b| b == b' ')?;
    Some((&line[..space], serde_json::from_slice(&line[space + 1..]).ok()?))
}

fn read(path: &Path) -> Option<RunInfo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes a run's document in place. Not synced: what must survive a power cut (the
/// acceptance) is in `serve/accepted`. Not atomic either, and need not be: a document is
/// written only while its run is in memory, where every reader finds it, and one a crash cut
/// short is written again from `serve/accepted` at start.
fn write(path: &Path, run: &RunInfo) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(run)?;
    // Written over, then cut to its length: never truncated to nothing first, which makes
    // ext4 write the file out when it is closed.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes).and_then(|()| f.set_len(bytes.len() as u64)))
        .map_err(|e| anyhow::anyhow!("failed to write `{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> String {
        format!("{n:032x}")
    }

    fn queued(hook: &str, n: u32) -> RunInfo {
        RunInfo {
            id: id(n),
            hook: hook.into(),
            status: "queued".into(),
            received_at: 1_000 + i64::from(n),
            exit_code: None,
            seconds: None,
            image: None,
            superseded_by: None,
            error: None,
            deploy: Default::default(),
            env: Vec::new(),
            images: Default::default(),
        }
    }

    #[test]
    fn an_accepted_run_whose_document_was_never_written_is_there_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = vec!["a".to_string(), "b".to_string()];
        let runs = Runs::open(dir.path().to_path_buf(), 3, &hooks).unwrap();
        for n in 0..5 {
            runs.insert(queued("a", n), |_| {}).unwrap();
        }
        runs.insert(queued("b", 9), |_| {}).unwrap();
        assert!(!dir.path().join("a").join(format!("{}.json", id(4))).exists(), "written on its first change");
        runs.flush();
        drop(runs);
        let runs = Runs::open(dir.path().to_path_buf(), 3, &hooks).unwrap();
        for (hook, n) in [("a", 2), ("a", 3), ("a", 4), ("b", 9)] {
            let run = runs.get(hook, &id(n)).unwrap_or_else(|| panic!("run {n} of {hook}"));
            assert_eq!((run.status.as_str(), run.received_at), ("cancelled", 1_000 + i64::from(n)));
        }
        assert!(runs.get("a", &id(0)).is_none() && runs.get("a", &id(1)).is_none(), "beyond keep_runs");
        let accepted = String::from_utf8(CommitLog::read(&dir.path().join("accepted"))).unwrap();
        assert_eq!(accepted.lines().map(|l| &l[..1]).collect::<String>(), "aaab", "the newest 3 of each hook");
    }

    #[test]
    fn a_run_beyond_keep_runs_goes_with_its_log_as_new_ones_arrive_and_a_running_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::open(dir.path().to_path_buf(), 2, &["a".to_string()]).unwrap();
        let doc = |n: u32| dir.path().join("a").join(format!("{}.json", id(n)));
        for n in 0..4 {
            runs.insert(queued("a", n), |_| {}).unwrap();
            // Retention's files are the chores' thread's: done before the run's first change.
            runs.flush();
            let status = if n == 0 { "running" } else { "succeeded" };
            runs.update(&id(n), |r| r.status = status.into());
            std::fs::write(runs.log_path("a", &id(n)), "log").unwrap();
        }
        let present = |n: u32| runs.get("a", &id(n)).is_some();
        assert_eq!(
            (0..4).map(present).collect::<Vec<_>>(),
            [true, false, true, true],
            "the newest 2 and the running 0"
        );
        runs.update(&id(0), |r| r.status = "succeeded".into());
        runs.insert(queued("a", 4), |_| {}).unwrap();
        runs.flush();
        assert!(!present(0) && !present(2) && present(3));
        let files = || std::fs::read_dir(dir.path().join("a")).unwrap().count();
        // Documents and logs of 1, 0 and 2 went; run 3's first document took one back.
        assert_eq!((runs.lock().spares["a"].len(), files()), (5, 7), "3 and its log, and 5 spares");
        runs.update(&id(4), |r| r.status = "running".into());
        let log = runs.new_log("a", &id(4));
        assert_eq!(std::fs::read(&log).unwrap().len(), 0, "an emptied log");
        assert_eq!((runs.lock().spares["a"].len(), files()), (3, 7), "no file created: a document and a log reused");
        assert!(doc(4).exists());
    }

    #[test]
    fn a_superseded_run_has_no_document_until_a_restart_writes_it_and_retention_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = vec!["a".to_string()];
        let runs = Runs::open(dir.path().to_path_buf(), 3, &hooks).unwrap();
        let doc = |n: u32| dir.path().join("a").join(format!("{}.json", id(n)));
        // Run `n` of `from..to` supersedes the one before it, which waited (the first none).
        let chain = |runs: &Runs, from: u32, to: u32| {
            for n in from..to {
                runs.insert(queued("a", n), |supersede| {
                    if n > from {
                        supersede(&id(n - 1), &id(n));
                    }
                })
                .unwrap();
            }
            runs.flush();
        };
        chain(&runs, 0, 3);
        for n in 0..2 {
            assert!(!doc(n).exists(), "run {n} was superseded: no file");
            let run = runs.get("a", &id(n)).unwrap();
            assert_eq!((run.status.as_str(), run.superseded_by), ("superseded", Some(id(n + 1))));
        }
        assert!(runs.get("b", &id(0)).is_none(), "another hook's name does not find it");
        let ledger = std::fs::read_to_string(dir.path().join("superseded")).unwrap();
        assert_eq!(ledger.lines().count(), 2, "{ledger}");
        // Out of the cache, a superseded run is still there until retention lets it go.
        runs.lock().live.clear();
        assert_eq!(runs.get("a", &id(1)).unwrap().status, "superseded");
        drop(runs);

        let runs = Runs::open(dir.path().to_path_buf(), 3, &hooks).unwrap();
        for n in 0..2 {
            let run: RunInfo = serde_json::from_slice(&std::fs::read(doc(n)).unwrap()).unwrap();
            assert_eq!((run.status.as_str(), run.superseded_by), ("superseded", Some(id(n + 1))), "written at start");
        }
        assert_eq!(runs.get("a", &id(2)).unwrap().status, "cancelled", "the last one waited when the receiver stopped");
        assert_eq!(std::fs::read(dir.path().join("superseded")).unwrap().len(), 0, "emptied once written");
        // Superseded runs retention lets go leave no files behind and nothing in memory.
        chain(&runs, 3, 9);
        assert!(runs.get("a", &id(4)).is_none(), "beyond keep_runs");
        assert_eq!(runs.lock().superseded.len(), 2, "the newest 3 less the one waiting");
        // The file is rewritten with the runs still kept once it holds twice them and more.
        for n in 9..1200 {
            runs.insert(queued("a", n), |supersede| supersede(&id(n - 1), &id(n))).unwrap();
        }
        runs.flush();
        let ledger = std::fs::read_to_string(dir.path().join("superseded")).unwrap();
        assert!(ledger.lines().count() < 1100, "{} lines", ledger.lines().count());
        assert!(ledger.contains(&format!("\"superseded_by\":\"{}\"", id(1198))), "the newest is there");
    }

    /// `count` runs of hook `a` accepted in one second, each superseding the one before, with
    /// random-looking ids (acceptance, not the id, must order them); the receiver is stopped.
    fn one_second(dir: &Path, keep: usize, count: u32) -> Vec<String> {
        let runs = Runs::open(dir.to_path_buf(), keep, &["a".to_string()]).unwrap();
        let mut ids: Vec<String> = Vec::new();
        for n in 0..count {
            let mut run = queued("a", n);
            run.id = format!("{:032x}", u128::from(n.wrapping_mul(2_654_435_761)) << 64);
            run.received_at = 5_000;
            let previous = ids.last().cloned();
            ids.push(run.id.clone());
            runs.insert(run, |supersede| {
                if let Some(previous) = &previous {
                    supersede(previous, &ids[ids.len() - 1]);
                }
            })
            .unwrap();
        }
        runs.flush();
        ids
    }

    /// The statuses of `ids` as `runs` serves them: the last `kept` as a stopped receiver
    /// leaves them (the last one was waiting), none before.
    fn newest_kept(runs: &Runs, ids: &[String], kept: usize) {
        let statuses: Vec<Option<String>> = ids.iter().map(|id| runs.get("a", id).map(|r| r.status)).collect();
        let mut expected = vec![None; ids.len() - kept];
        expected.extend(std::iter::repeat_n(Some("superseded".to_string()), kept - 1));
        expected.push(Some("cancelled".to_string()));
        assert_eq!(statuses, expected, "the newest {kept}, as they were");
    }

    #[test]
    fn after_a_restart_the_runs_kept_are_the_newest_accepted_even_within_one_second() {
        let dir = tempfile::tempdir().unwrap();
        let ids = one_second(dir.path(), 3, 20);
        let runs = Runs::open(dir.path().to_path_buf(), 3, &["a".to_string()]).unwrap();
        newest_kept(&runs, &ids, 3);
        let files = std::fs::read_dir(dir.path().join("a")).unwrap().count();
        assert!(files <= 3 + SPARES, "{files} files");
    }

    #[test]
    fn a_start_with_fewer_runs_kept_keeps_the_newest_accepted_of_one_second() {
        let dir = tempfile::tempdir().unwrap();
        let ids = one_second(dir.path(), 10, 10);
        // A start writes the ten documents, all of one second; a start with fewer kept keeps
        // the newest of them.
        drop(Runs::open(dir.path().to_path_buf(), 10, &["a".to_string()]).unwrap());
        let runs = Runs::open(dir.path().to_path_buf(), 3, &["a".to_string()]).unwrap();
        newest_kept(&runs, &ids, 3);
    }

    #[test]
    fn a_run_that_ended_after_newer_ones_were_accepted_does_not_outlive_them_at_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = vec!["a".to_string()];
        let runs = Runs::open(dir.path().to_path_buf(), 3, &hooks).unwrap();
        // Run 0 runs while 1 to 4 arrive, each superseding the one that waited; run 0 ends
        // last, so its document is the newest file.
        runs.insert(queued("a", 0), |_| {}).unwrap();
        runs.update(&id(0), |r| r.status = "running".into());
        runs.insert(queued("a", 1), |_| {}).unwrap();
        for n in 2..5 {
            runs.insert(queued("a", n), |supersede| supersede(&id(n - 1), &id(n))).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        runs.update(&id(0), |r| r.status = "succeeded".into());
        runs.flush();
        drop(runs);
        let runs = Runs::open(dir.path().to_path_buf(), 3, &hooks).unwrap();
        let statuses: Vec<Option<String>> = (0..5).map(|n| runs.get("a", &id(n)).map(|r| r.status)).collect();
        assert_eq!(
            statuses,
            [None, None, Some("superseded".into()), Some("superseded".into()), Some("cancelled".into())],
            "the newest three accepted"
        );
    }
}
