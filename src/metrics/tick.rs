//! What `pipe run` adds to the metrics, and the textfile it writes for node_exporter's textfile
//! collector (`[pipe] metrics_textfile`). Nothing is done unless that key is set.
//!
//! A tick's observations come from the tick's results and from the files it just wrote (the
//! run's stages in the ref's history, this tick's records in the deploy histories), read only
//! for refs that ran: a tick with nothing new reads and writes two small files, no history.

use std::path::{Path, PathBuf};
use std::time::Instant;

use jiff::Timestamp;

use super::store::{self, Store};
use super::{Family, labels, ref_kind};
use crate::config::Config;
use crate::engine::tick::Tick;
use crate::model::{DeployResult, Outcome, Stage, Verdict};
use crate::output::Output;
use crate::state;

const TICKS: Family = Family::counter(
    "pipe_ticks_total",
    "Ticks of pipe run by how they ended: ok, failed (a stage or a poll failed), locked (another tick held the state lock), unavailable (docker or a registry did not answer), config_error, state_error, interrupted.",
);
const TICK_SUCCESS: Family = Family::gauge(
    "pipe_tick_last_success_timestamp_seconds",
    "When a tick of pipe run last ran to its end (exit 0 or 1: every project polled and its work run, whatever the projects' results).",
);
const TICK_SECONDS: Family = Family::gauge("pipe_tick_duration_seconds", "Wall time of the last tick of pipe run.");
const DEFERRED: Family = Family::gauge(
    "pipe_deferred_refs",
    "Refs with work left for a later tick by the last tick (beyond pipe.max_builds).",
);
const RUNS: Family = Family::counter(
    "pipe_runs_total",
    "Refs taken through build, test, push and deploy, by project, ref kind and result (passed, failed, timed_out, interrupted, unavailable).",
);
const PROJECT_SUCCESS: Family = Family::gauge(
    "pipe_project_last_success_timestamp_seconds",
    "When a run of the project last passed every stage it ran.",
);
const PROJECT_FAILURE: Family =
    Family::gauge("pipe_project_last_failure_timestamp_seconds", "When a run of the project last failed or timed out.");
const STAGE_SECONDS: Family = Family::histogram(
    "pipe_stage_duration_seconds",
    "How long each stage took, by project, stage and result.",
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0],
);
const QUEUE_SECONDS: Family = Family::histogram(
    "pipe_queue_wait_seconds",
    "From a ref's head being first seen to its run starting, by project.",
    &[30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0],
);
const DEPLOYS: Family = Family::counter(
    "pipe_deploys_total",
    "Deploys by pipe run, by project, target and result (succeeded, failed, rolled_back).",
);
const ROLLBACKS: Family = Family::counter(
    "pipe_rollbacks_total",
    "Deploys that failed their health check and were rolled back to the target's previous image.",
);
const DEPLOY_SUCCESS: Family =
    Family::gauge("pipe_deploy_last_success_timestamp_seconds", "When a deploy to the target last succeeded.");
const DEPLOY_FAILURE: Family = Family::gauge(
    "pipe_deploy_last_failure_timestamp_seconds",
    "When a deploy to the target last failed (rolled back or not).",
);
const COMMIT_TO_TRAFFIC: Family = Family::histogram(
    "pipe_commit_to_traffic_seconds",
    "From a commit being detected to its release taking traffic, by project and target.",
    &[30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0],
);
const POLL_ERRORS: Family = Family::counter(
    "pipe_poll_errors_total",
    "Remotes that could not be listed, by project and remote (credentials removed).",
);

/// Every family of the textfile, in the order it is written.
pub(crate) const FAMILIES: &[Family] = &[
    TICKS,
    TICK_SUCCESS,
    TICK_SECONDS,
    DEFERRED,
    RUNS,
    PROJECT_SUCCESS,
    PROJECT_FAILURE,
    STAGE_SECONDS,
    QUEUE_SECONDS,
    DEPLOYS,
    ROLLBACKS,
    DEPLOY_SUCCESS,
    DEPLOY_FAILURE,
    COMMIT_TO_TRAFFIC,
    POLL_ERRORS,
];

/// One thing a tick did that the metrics count.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Observation {
    Run { project: String, ref_kind: &'static str, result: Verdict },
    Stage { project: String, stage: Stage, result: Outcome, seconds: f64 },
    QueueWait { project: String, seconds: f64 },
    Deploy { project: String, target: String, result: DeployResult, commit_to_traffic: Option<f64> },
    PollError { project: String, remote: String },
    Deferred(usize),
}

/// How a tick ended, as `pipe_ticks_total` says it, from its exit code.
pub(crate) fn tick_result(code: u8) -> &'static str {
    use crate::error::code;
    match code {
        code::OK => "ok",
        code::FAILED => "failed",
        code::USAGE => "config_error",
        code::LOCKED => "locked",
        code::UNAVAILABLE => "unavailable",
        code::STATE => "state_error",
        128.. => "interrupted",
        _ => "failed",
    }
}

/// Adds one tick to the store: pure, so the arithmetic is tested without a tick.
pub(crate) fn apply(store: &mut Store, result: &str, at: Timestamp, seconds: f64, observed: &[Observation]) {
    let now = at.as_second() as f64;
    store.add(&TICKS, labels(&[("result", result)]), 1.0);
    if matches!(result, "ok" | "failed") {
        store.set(&TICK_SUCCESS, String::new(), now);
        store.set(&TICK_SECONDS, String::new(), seconds);
    }
    for o in observed {
        match o {
            Observation::Run { project, ref_kind, result } => {
                // The failure series exists from a project's first run on, at 0, so that its
                // first failure is an increase an alert rule sees.
                let failed = labels(&[("project", project), ("ref_kind", ref_kind), ("result", "failed")]);
                store.add(&RUNS, failed, 0.0);
                store.add(
                    &RUNS,
                    labels(&[("project", project), ("ref_kind", ref_kind), ("result", result.as_str())]),
                    1.0,
                );
                if *result == Verdict::Passed {
                    store.set(&PROJECT_SUCCESS, labels(&[("project", project)]), now);
                } else if result.is_failure() {
                    store.set(&PROJECT_FAILURE, labels(&[("project", project)]), now);
                }
            }
            Observation::Stage { project, stage, result, seconds } => store.observe(
                &STAGE_SECONDS,
                labels(&[("project", project), ("stage", stage.as_str()), ("result", result.as_str())]),
                *seconds,
            ),
            Observation::QueueWait { project, seconds } => {
                store.observe(&QUEUE_SECONDS, labels(&[("project", project)]), *seconds)
            }
            Observation::Deploy { project, target, result, commit_to_traffic } => {
                let word = match result {
                    DeployResult::Succeeded => "succeeded",
                    DeployResult::Failed => "failed",
                    DeployResult::RolledBack => "rolled_back",
                };
                store.add(&DEPLOYS, labels(&[("project", project), ("target", target), ("result", word)]), 1.0);
                let key = labels(&[("project", project), ("target", target)]);
                // At 0 from a target's first deploy on: a rollback needs an earlier deploy, so
                // the first rollback is already an increase.
                let rolled_back = if *result == DeployResult::RolledBack { 1.0 } else { 0.0 };
                store.add(&ROLLBACKS, key.clone(), rolled_back);
                if *result == DeployResult::Succeeded {
                    store.set(&DEPLOY_SUCCESS, key.clone(), now);
                    if let Some(s) = commit_to_traffic {
                        store.observe(&COMMIT_TO_TRAFFIC, key, *s);
                    }
                } else {
                    store.set(&DEPLOY_FAILURE, key, now);
                }
            }
            Observation::PollError { project, remote } => {
                store.add(&POLL_ERRORS, labels(&[("project", project), ("remote", remote)]), 1.0)
            }
            Observation::Deferred(n) => store.set(&DEFERRED, String::new(), *n as f64),
        }
    }
}

/// Collects a tick's observations while `pipe run` goes, and writes them when it ends.
pub(crate) struct Recorder {
    started: Instant,
    at: Timestamp,
    textfile: Option<PathBuf>,
    store: Option<PathBuf>,
    observed: Vec<Observation>,
}

impl Recorder {
    pub(crate) fn start() -> Recorder {
        Recorder { started: Instant::now(), at: crate::clock::now(), textfile: None, store: None, observed: Vec::new() }
    }

    /// Whether the pipeline file was seen (a tick refused before that finds it itself).
    pub(crate) fn configured(&self) -> bool {
        self.store.is_some()
    }

    /// Where to write, from the pipeline file: nothing when `metrics_textfile` is not set.
    pub(crate) fn configure(&mut self, config: &Config, state_path: &Path) {
        self.textfile = config.settings.metrics_textfile.clone();
        self.store = Some(store::path(state_path));
    }

    /// What the tick did: its results, the stages and deploys its refs recorded, poll errors.
    pub(crate) fn observe(&mut self, config: &Config, state_path: &Path, tick: &Tick) {
        if self.textfile.is_none() {
            return;
        }
        for e in &tick.poll.errors {
            let remote = config.projects.get(&e.project).map(|p| crate::git::redact_url(&p.repo)).unwrap_or_default();
            self.observed.push(Observation::PollError { project: e.project.clone(), remote });
        }
        self.observed.push(Observation::Deferred(tick.deferred));
        let st = if tick.results.is_empty() { None } else { state::load(state_path).ok() };
        for r in &tick.results {
            self.observed.push(Observation::Run {
                project: r.project.clone(),
                ref_kind: ref_kind(&r.refname),
                result: r.result,
            });
            let run = r.run.and_then(|number| {
                let history = state::load_history(&state::history_path(state_path, &r.project, &r.refname), &r.refname);
                history.ok()?.runs.into_iter().find(|run| run.number == number)
            });
            if let Some(run) = &run {
                let since = st.as_ref().and_then(|s| s.project.get(&r.project)?.refs.get(&r.refname)).map(|s| s.since);
                // `since` is kept to the millisecond, a run's start to the second.
                if let Some(since) = since.filter(|s| s.as_second() <= run.started.as_second()) {
                    let millis = (run.started.as_millisecond() - since.as_millisecond()).max(0);
                    let seconds = millis as f64 / 1000.0;
                    self.observed.push(Observation::QueueWait { project: r.project.clone(), seconds });
                }
                for s in run.stages.iter().filter(|s| s.started >= self.at) {
                    self.observed.push(Observation::Stage {
                        project: r.project.clone(),
                        stage: s.stage,
                        result: s.result,
                        seconds: s.seconds,
                    });
                }
            }
            if r.stage == Stage::Deploy {
                self.deploys(state_path, &r.project, &r.refname, &r.commit);
            }
        }
    }

    /// This tick's records in the project's deploy histories, for the ref's commit.
    fn deploys(&mut self, state_path: &Path, project: &str, refname: &str, commit: &str) {
        let dir = state::state_dir(state_path).join("deploys").join(project);
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "toml")) {
            let Some(target) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else { continue };
            let Ok(history) = state::load_deploys(path) else { continue };
            for d in history.deploys.iter().filter(|d| d.at >= self.at && d.commit == commit && d.refname == refname) {
                self.observed.push(Observation::Deploy {
                    project: project.to_string(),
                    target: target.clone(),
                    result: d.result,
                    commit_to_traffic: d.timeline.as_ref().and_then(|t| t.commit_to_traffic()),
                });
            }
        }
    }

    /// Adds the tick to `metrics.json` and rewrites the textfile; a failure is a warning,
    /// never the tick's result.
    pub(crate) fn finish(self, out: Output, result: &anyhow::Result<u8>) {
        let (Some(textfile), Some(store_path)) = (&self.textfile, &self.store) else { return };
        let code = match result {
            Ok(code) => *code,
            Err(err) => crate::error::exit_code(err),
        };
        let seconds = (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        let written = (|| -> anyhow::Result<()> {
            let _lock = store::lock(store_path)?;
            let mut store = store::load(store_path);
            apply(&mut store, tick_result(code), self.at, seconds, &self.observed);
            store::save(store_path, &store)?;
            store::replace(textfile, store.render(FAMILIES).as_bytes(), 0o644)
        })();
        if let Err(err) = written {
            out.warn(format!("metrics were not written to `{}`: {err:#}", textfile.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn exit_codes_name_the_tick_result() {
        assert_eq!(tick_result(0), "ok");
        assert_eq!(tick_result(1), "failed");
        assert_eq!(tick_result(3), "locked");
        assert_eq!(tick_result(143), "interrupted");
    }

    #[test]
    fn a_tick_with_a_failing_run_and_a_rolled_back_deploy() {
        let mut store = Store::default();
        let observed = vec![
            Observation::Run { project: "p".into(), ref_kind: "branch", result: Verdict::Failed },
            Observation::Stage { project: "p".into(), stage: Stage::Test, result: Outcome::Failed, seconds: 3.5 },
            Observation::Deploy {
                project: "p".into(),
                target: "dev".into(),
                result: DeployResult::RolledBack,
                commit_to_traffic: None,
            },
            Observation::PollError { project: "q".into(), remote: "https://git.example.com/q.git".into() },
            Observation::Deferred(2),
        ];
        apply(&mut store, "failed", at(), 4.25, &observed);
        apply(&mut store, "locked", at(), 0.0, &[]);
        let text = store.render(FAMILIES);
        for line in [
            "pipe_ticks_total{result=\"failed\"} 1\n",
            "pipe_ticks_total{result=\"locked\"} 1\n",
            "pipe_tick_last_success_timestamp_seconds 1800000000\n",
            "pipe_tick_duration_seconds 4.25\n",
            "pipe_deferred_refs 2\n",
            "pipe_runs_total{project=\"p\",ref_kind=\"branch\",result=\"failed\"} 1\n",
            "pipe_project_last_failure_timestamp_seconds{project=\"p\"} 1800000000\n",
            "pipe_stage_duration_seconds_bucket{project=\"p\",stage=\"test\",result=\"failed\",le=\"5\"} 1\n",
            "pipe_stage_duration_seconds_count{project=\"p\",stage=\"test\",result=\"failed\"} 1\n",
            "pipe_deploys_total{project=\"p\",target=\"dev\",result=\"rolled_back\"} 1\n",
            "pipe_rollbacks_total{project=\"p\",target=\"dev\"} 1\n",
            "pipe_deploy_last_failure_timestamp_seconds{project=\"p\",target=\"dev\"} 1800000000\n",
            "pipe_poll_errors_total{project=\"q\",remote=\"https://git.example.com/q.git\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("pipe_project_last_success_timestamp_seconds{"));
    }

    #[test]
    fn a_succeeded_deploy_observes_commit_to_traffic() {
        let mut store = Store::default();
        let deploy = Observation::Deploy {
            project: "p".into(),
            target: "prod".into(),
            result: DeployResult::Succeeded,
            commit_to_traffic: Some(95.0),
        };
        apply(&mut store, "ok", at(), 1.0, &[deploy]);
        let text = store.render(FAMILIES);
        assert!(text.contains("pipe_commit_to_traffic_seconds_bucket{project=\"p\",target=\"prod\",le=\"60\"} 0\n"));
        assert!(text.contains("pipe_commit_to_traffic_seconds_bucket{project=\"p\",target=\"prod\",le=\"120\"} 1\n"));
        assert!(
            text.contains("pipe_deploy_last_success_timestamp_seconds{project=\"p\",target=\"prod\"} 1800000000\n")
        );
        assert!(text.contains("pipe_rollbacks_total{project=\"p\",target=\"prod\"} 0\n"));
    }
}
