//! What `build`, `test` and `push` share: resolving a project's ref, the build plan from the
//! pipeline file and the repository's own files, the docker client, and recording results.

use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context as _, anyhow, bail};

use super::Context;
use crate::config::{self, Config, Project, RepoFile, SecretRef};
use crate::docker::{self};
use crate::engine::docker::Docker;
use crate::error::Usage;
use crate::state::{self, History, Run, StageRecord, StageRun, State};
use crate::{git, secret};

/// Turns what a person types (`dev`, `feature/x`, `pr-12`, `pull/12`, `refs/…`) into a full ref.
pub fn resolve_ref(config: &Config, name: &str, project: &Project, st: &State, given: Option<&str>) -> String {
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
pub fn default_branch(config: &Config, name: &str, project: &Project, st: &State) -> String {
    if let Some(branch) = &project.default_branch {
        return branch.clone();
    }
    let known = st.project.get(name);
    let candidates = &config.settings.default_branches;
    candidates
        .iter()
        .find(|b| known.is_some_and(|p| p.refs.contains_key(&format!("refs/heads/{b}"))))
        .or_else(|| candidates.first())
        .cloned()
        .unwrap_or_else(|| "main".into())
}

/// Resolves the project's git credentials from its `auth` table.
pub fn git_auth(name: &str, project: &Project) -> anyhow::Result<git::Auth> {
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

/// How to build and test one checkout: the pipeline file wins, then `.pipe.toml`, then
/// `.jenkins-env` (image name only), then the defaults.
#[derive(Debug, Clone)]
pub struct Plan {
    pub image: String,
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub build_args: Vec<(String, String)>,
    pub test: Option<String>,
    pub test_env: Vec<(String, String)>,
    pub test_services: Option<PathBuf>,
}

/// Reads the repository's own files in `checkout` and merges them under the project's settings.
pub fn plan(name: &str, project: Option<&Project>, checkout: &Path) -> anyhow::Result<Plan> {
    let repo_file_path = checkout.join(".pipe.toml");
    let repo_file = match std::fs::read_to_string(&repo_file_path) {
        Ok(text) => config::parse_repo_file(Path::new(".pipe.toml"), &text).map_err(|diagnostics| {
            anyhow::Error::new(crate::error::ConfigError { diagnostics })
                .context(format!("project `{name}`: invalid `.pipe.toml` in the repository"))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RepoFile::default(),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("failed to read `{}`", repo_file_path.display()))),
    };
    let jenkins_image =
        std::fs::read_to_string(checkout.join(".jenkins-env")).ok().and_then(|t| config::parse_jenkins_env(&t));
    let image =
        project.and_then(|p| p.image.clone()).or(repo_file.image.clone()).or(jenkins_image).ok_or_else(|| {
            anyhow!(
                "project `{name}` names no image\nhint: set `image` under [project.{name}] in the pipeline file, \
                 `image = \"…\"` in the repository's .pipe.toml, or `imagename=\"…\"` in its .jenkins-env"
            )
        })?;
    docker::validate_repository(&image).map_err(|e| anyhow!("project `{name}`: {e}"))?;
    let pick = |ours: Option<&String>, theirs: &Option<String>| ours.cloned().or_else(|| theirs.clone());
    let dockerfile =
        pick(project.and_then(|p| p.dockerfile.as_ref()), &repo_file.dockerfile).unwrap_or_else(|| "Dockerfile".into());
    let context = pick(project.and_then(|p| p.context.as_ref()), &repo_file.context).unwrap_or_else(|| ".".into());
    let services = pick(project.and_then(|p| p.test_services.as_ref()), &repo_file.test_services);
    let mut build_args = repo_file.build_args.clone();
    let mut test_env = repo_file.test_env.clone();
    if let Some(p) = project {
        build_args.extend(p.build_args.clone());
        test_env.extend(p.test_env.clone());
    }
    Ok(Plan {
        image,
        dockerfile: inside(checkout, &dockerfile, "dockerfile")?,
        context: inside(checkout, &context, "context")?,
        build_args: build_args.into_iter().collect(),
        test: pick(project.and_then(|p| p.test.as_ref()), &repo_file.test),
        test_env: test_env.into_iter().collect(),
        test_services: services.map(|s| inside(checkout, &s, "test_services")).transpose()?,
    })
}

/// Joins a repository-relative path, refusing absolute paths and `..` (repo content must not
/// reach outside its checkout).
fn inside(root: &Path, relative: &str, key: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(relative);
    if path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        bail!("`{key} = \"{relative}\"` must be a path inside the repository (no `/` prefix, no `..`)");
    }
    Ok(root.join(path))
}

/// The ref's history file, its runs and where new logs go.
pub struct RefFiles {
    pub history_path: PathBuf,
    pub logs: PathBuf,
    pub history: History,
}

pub fn ref_files(state_path: &Path, project: &str, refname: &str) -> anyhow::Result<RefFiles> {
    let history_path = state::history_path(state_path, project, refname);
    let history = state::load_history(&history_path, refname)?;
    Ok(RefFiles { history_path, logs: state::logs_dir(state_path, project, refname), history })
}

/// One project's ref being worked on: everything a stage needs besides the state.
pub struct Job<'a> {
    pub cx: &'a Context,
    pub config: &'a Config,
    pub state_path: &'a Path,
    pub name: &'a str,
    pub project: &'a Project,
    pub refname: String,
}

impl Job<'_> {
    /// pipe's own docker client for CI work.
    pub fn docker(&self) -> Docker {
        Docker::new(Some(state::docker_config_dir(self.state_path)))
    }

    pub fn files(&self) -> anyhow::Result<RefFiles> {
        ref_files(self.state_path, self.name, &self.refname)
    }

    /// Appends a stage result to run `run_number`, saves the history, and updates the ref's
    /// summary line in the state (saved too).
    pub fn record(
        &self,
        st: &Mutex<State>,
        files: &mut RefFiles,
        run_number: u64,
        stage: StageRun,
    ) -> anyhow::Result<()> {
        let run = files
            .history
            .runs
            .iter_mut()
            .find(|r| r.number == run_number)
            .ok_or_else(|| anyhow!("run {run_number} vanished from the history"))?;
        let summary = StageRecord {
            stage: stage.stage.clone(),
            result: stage.result.clone(),
            commit: run.commit.clone(),
            at: crate::clock::now(),
        };
        run.stages.push(stage);
        state::save_history(&files.history_path, &mut files.history, self.config.keep_logs(self.project))?;
        let mut st = st.lock().unwrap_or_else(|e| e.into_inner());
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
        state::save(self.state_path, &st)
    }
}

/// Loads config, project, state path, lock (unless a dry run) and state for a stage command.
pub struct Loaded {
    pub config: Config,
    pub state_path: PathBuf,
    /// Held until the command ends.
    pub _lock: Option<state::StateLock>,
    pub state: Mutex<State>,
}

pub fn load(cx: &Context, project: &str, command: &str, dry_run: bool) -> anyhow::Result<Loaded> {
    let config = cx.config()?;
    self::project(&config, project)?;
    let state_path = cx.state_path()?;
    let lock = if dry_run { None } else { Some(state::lock(&state_path, command)?) };
    let state = Mutex::new(state::load(&state_path)?);
    Ok(Loaded { config, state_path, _lock: lock, state })
}

impl Loaded {
    pub fn job<'a>(&'a self, cx: &'a Context, name: &'a str, reference: Option<&str>) -> Job<'a> {
        let project = &self.config.projects[name];
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let refname = resolve_ref(&self.config, name, project, &st, reference);
        Job { cx, config: &self.config, state_path: &self.state_path, name, project, refname }
    }
}

/// After recording a stage: a stage stopped by a signal ends the command with [`Interrupted`].
pub fn interrupted(finished: &crate::exec::Finished) -> anyhow::Result<()> {
    if finished.interrupted { crate::signals::check() } else { Ok(()) }
}

/// The newest run of the ref whose build passed (optionally of one commit).
pub fn latest_built<'a>(history: &'a History, commit: Option<&str>) -> Option<&'a Run> {
    history.runs.iter().rev().find(|r| {
        r.stage("build").is_some_and(|s| s.result == "passed") && commit.is_none_or(|c| r.commit.starts_with(c))
    })
}

/// Finds a project or fails with a usage error listing the known ones.
pub fn project<'a>(config: &'a Config, name: &str) -> anyhow::Result<&'a Project> {
    Ok(config.select(&[name.to_string()])?[0].1)
}

/// `--here` with a pipeline file project is a contradiction worth naming.
pub fn here_takes_no_project(project: &Option<String>) -> anyhow::Result<()> {
    if project.is_some() {
        return Err(Usage("`--here` builds the checkout in the current directory; it takes no PROJECT".into()).into());
    }
    Ok(())
}

/// Context for a missing checkout: where it was expected.
pub fn workspace_dir(config: &Config, project: &str) -> PathBuf {
    config.settings.workspace.join(project).join("src")
}

/// Creates the log directory and names the log of a new run.
pub fn new_log(files: &RefFiles, number: u64) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&files.logs)
        .with_context(|| format!("failed to create log directory `{}`", files.logs.display()))?;
    Ok(files.logs.join(format!("{number}.log")))
}
