//! The work below the commands: the Docker client, the build plan, the stages and the run
//! they hand along. Commands parse arguments, call in here and print.
//!
//! A stage receives the ref's loaded history ([`RefFiles`]) and the run it works on, records
//! its outcome there (one history save per stage transition) and hands the history back; the
//! ref's summary line in `state.toml` is written once, by [`Job::settle`], when the command or
//! the ref's pass through the chain ends.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context as _, anyhow};

use crate::config::{Config, Project, SecretRef};
use crate::docker::client::Docker;
use crate::error::Usage;
use crate::model::{Outcome, Stage};
use crate::output::Output;
use crate::state::{self, History, Run, StageRecord, StageRun, State};
use crate::{git, secret};

pub(crate) mod authors;
pub(crate) mod build;
pub(crate) mod build_cache;
pub(crate) mod changes;
pub(crate) mod deploy;
pub(crate) mod discover;
mod fleet;
mod fleet_ssh;
pub(crate) mod here;
pub(crate) mod images;
pub(crate) mod plan;
pub(crate) mod poll;
pub(crate) mod previews;
pub(crate) mod prune;
pub(crate) mod push;
mod refuse;
pub(crate) mod statuses;
pub(crate) mod test;
pub(crate) mod tick;

/// The ref's history file, its runs and where new logs go, loaded once per command.
pub(crate) struct RefFiles {
    pub history_path: PathBuf,
    pub logs: PathBuf,
    pub history: History,
    /// The newest stage recorded through [`Job::record`], not yet in the state's summary.
    unsettled: Option<StageRecord>,
}

impl RefFiles {
    pub(crate) fn load(state_path: &Path, project: &str, refname: &str) -> anyhow::Result<RefFiles> {
        let history_path = state::history_path(state_path, project, refname);
        let history = state::load_history(&history_path, refname)?;
        Ok(RefFiles { history_path, logs: state::logs_dir(state_path, project, refname), history, unsettled: None })
    }

    /// Creates the log directory and names the log of a new run.
    pub(crate) fn new_log(&self, number: u64) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&self.logs).map_err(|e| crate::error::StateError::log(&self.logs, e))?;
        Ok(self.logs.join(format!("{number}.log")))
    }

    pub(crate) fn run(&self, number: u64) -> Option<&Run> {
        self.history.runs.iter().find(|r| r.number == number)
    }

    /// The newest stage recorded since the last settle, for [`Job::settle`].
    pub(crate) fn take_unsettled(&mut self) -> Option<StageRecord> {
        self.unsettled.take()
    }

    /// The outcome of the newest stage recorded since the last settle.
    pub(crate) fn last_recorded(&self) -> Option<Outcome> {
        self.unsettled.as_ref().map(|s| s.result)
    }

    pub(crate) fn run_mut(&mut self, number: u64) -> Option<&mut Run> {
        self.history.runs.iter_mut().find(|r| r.number == number)
    }
}

/// One project's ref being worked on: everything a stage needs besides the state.
pub(crate) struct Job<'a> {
    pub out: Output,
    pub config: &'a Config,
    pub state_path: &'a Path,
    pub name: &'a str,
    pub project: &'a Project,
    pub refname: String,
}

impl Job<'_> {
    /// pipe's own docker client for CI work.
    pub(crate) fn docker(&self) -> Docker {
        Docker::new(Some(state::docker_config_dir(self.state_path)))
    }

    /// Whether this ref may have the project's secrets (see [`trusted`]).
    pub(crate) fn trusted(&self) -> bool {
        crate::trust::trusted(self.project, &self.refname)
    }

    /// A docker client with no registry login, for work on untrusted refs and for test
    /// services: pipe's `DOCKER_CONFIG` is not handed over.
    pub(crate) fn untrusted_docker(&self) -> anyhow::Result<Docker> {
        let dir = state::state_dir(self.state_path).join("docker-nologin");
        ensure_private_dir(&dir)?;
        Ok(Docker::new(Some(dir)))
    }

    pub(crate) fn files(&self) -> anyhow::Result<RefFiles> {
        RefFiles::load(self.state_path, self.name, &self.refname)
    }

    /// The stage's timeout: the project's, else the pipeline's, else the default.
    pub(crate) fn timeout(&self, stage: Stage) -> std::time::Duration {
        self.config.timeout(Some(self.project), stage)
    }

    /// Appends a stage result to run `number` and saves the history: one save per stage
    /// transition. The state's summary follows in [`Job::settle`].
    pub(crate) fn record(&self, files: &mut RefFiles, number: u64, stage: StageRun) -> anyhow::Result<()> {
        let run = files.run_mut(number).ok_or_else(|| anyhow!("run {number} vanished from the history"))?;
        let summary = StageRecord {
            stage: stage.stage,
            result: stage.result,
            commit: run.commit.clone(),
            at: crate::clock::now(),
        };
        run.stages.push(stage);
        state::save_history(&files.history_path, &mut files.history, self.config.keep_logs(self.project))?;
        files.unsettled = Some(summary);
        Ok(())
    }

    /// Writes the newest recorded stage into the ref's summary line and, with `done`, clears
    /// `pending` when the state's head is still that commit; saves the state once, and only
    /// when something changed.
    pub(crate) fn settle(
        &self,
        st: &Mutex<State>,
        summary: Option<StageRecord>,
        done: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut st = st.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        if let Some(summary) = summary {
            let entry =
                st.project.entry(self.name.to_string()).or_default().refs.entry(self.refname.clone()).or_insert_with(
                    || state::RefState {
                        head: summary.commit.clone(),
                        since: summary.at,
                        pending: false,
                        last: None,
                        closed: false,
                    },
                );
            entry.last = Some(summary);
            changed = true;
        }
        if let Some(head) = done
            && let Some(r) = st.project.get_mut(self.name).and_then(|p| p.refs.get_mut(&self.refname))
            && r.head == head
            && r.pending
        {
            r.pending = false;
            changed = true;
        }
        if changed { state::save(self.state_path, &st) } else { Ok(()) }
    }
}

/// A command's result once its stage ran and the record was settled: the stage's own error
/// first (it says what happened, and decides the exit code), with a failed save attached to
/// it; else the save's error.
pub(crate) fn conclude<T>(outcome: anyhow::Result<T>, settled: anyhow::Result<()>) -> anyhow::Result<T> {
    match (outcome, settled) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(err)) | (Err(err), Ok(())) => Err(err),
        (Err(err), Err(save)) => Err(err.context(format!("and the state could not be saved: {save:#}"))),
    }
}

/// What a stage command holds: the pipeline file, the state path, the lock (unless a dry
/// run) and the state.
pub(crate) struct Session {
    pub config: Config,
    pub state_path: PathBuf,
    /// Held until the command ends.
    _lock: Option<state::StateLock>,
    pub state: Mutex<State>,
}

impl Session {
    pub(crate) fn open(
        config: Config,
        state_path: PathBuf,
        project_name: &str,
        command: &str,
        dry_run: bool,
    ) -> anyhow::Result<Session> {
        project(&config, project_name)?;
        let lock = if dry_run { None } else { Some(state::lock(&state_path, command)?) };
        let state = Mutex::new(state::load(&state_path)?);
        Ok(Session { config, state_path, _lock: lock, state })
    }

    pub(crate) fn job<'a>(&'a self, out: Output, name: &'a str, reference: Option<&str>) -> Job<'a> {
        let project = &self.config.projects[name];
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let refname = resolve_ref(&self.config, name, project, &st, reference);
        Job { out, config: &self.config, state_path: &self.state_path, name, project, refname }
    }
}

/// Turns what a person types (`dev`, `feature/x`, `pr-12`, `pull/12`, `refs/…`) into a full ref.
pub(crate) fn resolve_ref(config: &Config, name: &str, project: &Project, st: &State, given: Option<&str>) -> String {
    let known = st.project.get(name);
    let has = |r: &str| known.is_some_and(|p| p.refs.contains_key(r));
    let Some(given) = given else {
        return format!("refs/heads/{}", default_branch(config, name, project, st));
    };
    if given.starts_with("refs/") {
        return given.to_string();
    }
    let number = given
        .strip_prefix("pr-")
        .or_else(|| given.strip_prefix("pull/"))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if let Some(n) = number
        && !has(&format!("refs/heads/{given}"))
    {
        let gitlab = format!("refs/merge-requests/{n}/head");
        return if has(&gitlab) { gitlab } else { format!("refs/pull/{n}/head") };
    }
    if let Some(n) = given.strip_prefix("merge-requests/") {
        return format!("refs/merge-requests/{n}/head");
    }
    format!("refs/heads/{given}")
}

/// The branch tagged `latest`: the project's `default_branch`, else the first of
/// `pipe.default_branches` the remote has (as last polled), else the first of them.
pub(crate) fn default_branch(config: &Config, name: &str, project: &Project, st: &State) -> String {
    if let Some(branch) = &project.default_branch {
        return branch.clone();
    }
    let known = st.project.get(name);
    let candidates = &config.settings.default_branches;
    candidates
        .iter()
        // A branch pipe does not trust never becomes the default (tagged `latest`).
        .find(|b| {
            let refname = format!("refs/heads/{b}");
            known.is_some_and(|p| p.refs.contains_key(&refname)) && crate::trust::trusted(project, &refname)
        })
        .or_else(|| candidates.first())
        .cloned()
        .unwrap_or_else(|| "main".into())
}

/// Resolves the project's git credentials from its `auth` table.
pub(crate) fn git_auth(name: &str, project: &Project) -> anyhow::Result<git::Auth> {
    let Some(auth) = &project.auth else { return Ok(git::Auth::default()) };
    let token = SecretRef::from_pair(&auth.token_env, &auth.token_file)
        .map(|s| secret::resolve(&s, &format!("project.{name}.auth.token")))
        .transpose()?
        .map(|s| s.reveal().to_string());
    let passphrase = auth
        .ssh_key_passphrase_env
        .as_ref()
        .map(|var| secret::resolve(&SecretRef::Env(var.clone()), &format!("project.{name}.auth.ssh_key_passphrase")))
        .transpose()?
        .map(|s| s.reveal().to_string());
    Ok(git::Auth { username: auth.username.clone(), token, ssh_key: auth.ssh_key.clone(), ssh_passphrase: passphrase })
}

/// The newest run of the ref whose build passed (optionally of one commit).
pub(crate) fn latest_built<'a>(history: &'a History, commit: Option<&str>) -> Option<&'a Run> {
    history.runs.iter().rev().find(|r| {
        r.stage(Stage::Build).is_some_and(|s| s.result == Outcome::Passed)
            && commit.is_none_or(|c| r.commit.starts_with(c))
    })
}

/// A run's immutable tag: the commit's, or for an untrusted ref's build its own
/// (`…-untrusted`), as the build recorded it.
pub(crate) fn run_tag(run: &crate::state::Run) -> &str {
    let commit = crate::docker::commit_tag(&run.commit);
    let untrusted = crate::docker::untrusted_commit_tag(&run.commit);
    run.tags.iter().find(|t| t.as_str() == commit || **t == untrusted).map_or(commit, String::as_str)
}

/// The image of a run by its immutable tag ([`run_tag`]).
pub(crate) fn run_image(run: &crate::state::Run) -> String {
    format!("{}:{}", run.image, run_tag(run))
}

/// The gates between stages, in one place: an image is pushed or deployed only when its tests
/// passed or had nothing to run; an image bound for a registry is deployed only once pushed.
pub(crate) mod gate {
    use crate::model::{Outcome, Stage};
    use crate::state::Run;

    /// Why the run's image may not be pushed, or `None` when it may.
    pub(crate) fn refuse_push(run: &Run) -> Option<String> {
        let tested = run.stage(Stage::Test).map(|s| s.result);
        match tested {
            Some(result) if result.clears() => None,
            Some(result) => Some(format!("its tests ended `{result}`")),
            None => Some("its tests have not run".into()),
        }
    }

    /// Why the run's image may not be deployed (to targets that `push` through a registry, or
    /// not), or `None` when it may.
    pub(crate) fn refuse_deploy(run: &Run, pushes: bool) -> Option<String> {
        refuse_push(run).or_else(|| {
            let pushed = run.stage(Stage::Push).is_some_and(|s| s.result == Outcome::Passed);
            (pushes && !pushed).then(|| "it was not pushed".into())
        })
    }
}

/// Finds a project or fails with a usage error listing the known ones.
pub(crate) fn project<'a>(config: &'a Config, name: &str) -> anyhow::Result<&'a Project> {
    Ok(config.select(&[name.to_string()])?[0].1)
}

/// `--here` with a pipeline file project is a contradiction worth naming.
pub(crate) fn here_takes_no_project(project: &Option<String>) -> anyhow::Result<()> {
    if project.is_some() {
        return Err(Usage("`--here` builds the checkout in the current directory; it takes no PROJECT".into()).into());
    }
    Ok(())
}

/// Where a project's checkout lives.
pub(crate) fn workspace_dir(config: &Config, project: &str) -> PathBuf {
    config.settings.workspace.join(project).join("src")
}

/// A usage error for a stage that needs an image of a ref that was never built.
pub(crate) fn not_built(job: &Job<'_>) -> anyhow::Error {
    let shown = crate::refs::display(&job.refname);
    Usage(format!("no image was built for {} {shown} yet\nhint: run `pipe build {} {shown}` first", job.name, job.name))
        .into()
}

/// Keeps one project's run logs (every ref's, under `project_dir`) within `budget` bytes with
/// room for a run about to be written (two capped commands): the oldest logs are emptied, down
/// to a line saying why, so histories still point at a file. Many branches each flooding their
/// logs cannot fill the disk.
pub(crate) fn enforce_log_budget(out: &Output, project_dir: &Path, budget: u64) {
    let room = 2 * crate::docker::client::LOG_CAP;
    let mut logs = Vec::new();
    let Ok(refs) = std::fs::read_dir(project_dir) else { return };
    for dir in refs.flatten() {
        let Ok(files) = std::fs::read_dir(dir.path()) else { continue };
        for file in files.flatten() {
            let Ok(meta) = file.metadata() else { continue };
            if meta.is_file() {
                logs.push((meta.modified().ok(), meta.len(), file.path()));
            }
        }
    }
    let mut total: u64 = logs.iter().map(|(_, len, _)| len).sum();
    if total.saturating_add(room) <= budget {
        return;
    }
    logs.sort();
    let note = format!("[log emptied: this project's logs were over `pipe.project_logs_mib` ({} MiB)]\n", budget >> 20);
    for (_, len, path) in logs {
        if total.saturating_add(room) <= budget {
            break;
        }
        if len <= note.len() as u64 {
            continue;
        }
        match std::fs::write(&path, &note) {
            Ok(()) => total -= len - note.len() as u64,
            Err(err) => out.warn(format!("could not empty the log `{}`: {err}", path.display())),
        }
    }
}

/// Lowercase letters and digits unique to this process and moment.
pub(crate) fn unique_suffix() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}{:08x}", std::process::id(), nanos)
}

/// Creates a directory only its owner can enter.
pub(crate) fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    ensure_dir(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("failed to restrict `{}`", dir.display()))
}

/// Creates a directory the stage writes into.
pub(crate) fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_logs_are_emptied_to_keep_a_project_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let room = 2 * crate::docker::client::LOG_CAP;
        let epoch = std::time::SystemTime::UNIX_EPOCH;
        for (i, (refdir, name)) in [("a", "1.log"), ("b", "1.log"), ("a", "2.log")].iter().enumerate() {
            std::fs::create_dir_all(dir.path().join(refdir)).unwrap();
            let path = dir.path().join(refdir).join(name);
            std::fs::write(&path, vec![b'x'; 200]).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(epoch + std::time::Duration::from_secs(1000 + i as u64)).unwrap();
        }
        let out = Output::new(true, 0);
        enforce_log_budget(&out, dir.path(), room + 1000);
        assert_eq!(std::fs::metadata(dir.path().join("a/1.log")).unwrap().len(), 200, "within budget: untouched");
        enforce_log_budget(&out, dir.path(), room + 450);
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert!(read("a/1.log").starts_with("[log emptied"), "the oldest goes first");
        assert!(read("b/1.log").starts_with("[log emptied"));
        assert_eq!(read("a/2.log").len(), 200, "the newest stays");
    }
}
