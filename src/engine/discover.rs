//! Organization discovery: every repository of a `[forge.NAME.discover]` organization whose
//! default branch carries a `.pipe.toml` (or `.jenkins-env` beside a `Dockerfile`) becomes a
//! project from the forge's template.
//!
//! [`refresh`] (the tick, `pipe poll`, `pipe check`) lists the organization through the forge's
//! API — one conditional request per page — and probes the default branch of each repository
//! whose last push moved since its last probe, with one shallow fetch through `git` (the
//! project's own URL and credentials, no API quota). What it found is kept in
//! `discover/FORGE.toml` beside the state. [`apply`] (every command) turns that cache into
//! projects without touching the network, so `pipe build APP` knows a discovered `APP`.
//!
//! A project written out in the pipeline file wins over the template, by name and by forge
//! repository. A repository that is archived, removed, excluded or loses its `.pipe.toml` stops
//! being a project; its state stays until `pipe prune` removes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

use crate::config::{self, Candidate, Config, Discover, Project, SecretRef};
use crate::forge::discover::{Answer, MAX_PAGES, fetch_page, first_page};
use crate::model::Stage;
use crate::output::Output;
use crate::state::{self, Discovered, Page, Repo};
use crate::{git, secret};

/// What discovery made of one organization.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ForgeReport {
    pub forge: String,
    pub org: String,
    /// Listing requests this run sent, and how many were answered `304 Not Modified`.
    pub requests: usize,
    pub not_modified: usize,
    /// The forge's rate limit holds discovery back until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_until: Option<jiff::Timestamp>,
    /// Why the listing did not complete; the known projects stay as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every listed repository and what it became.
    pub repos: Vec<RepoDecision>,
    /// Listing entries refused before use, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Projects discovery made before and no longer makes: not polled, state kept until
    /// `pipe prune`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gone: BTreeMap<String, String>,
}

/// One repository of the listing.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RepoDecision {
    pub repo: String,
    /// The project it is (or would be) under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What became of a listed repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Decision {
    /// A project from the template.
    Project,
    /// A project of that name or forge repository is written out in the pipeline file.
    WrittenOut,
    Excluded,
    Archived,
    Fork,
    /// Its name makes no valid project name.
    InvalidName,
    /// Its default branch carries neither `.pipe.toml` nor `.jenkins-env` beside a `Dockerfile`.
    NoPipeFile,
    /// The template gives an invalid project for it.
    InvalidProject,
    /// Its default branch could not be probed yet.
    NotProbed,
}

impl Decision {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Decision::Project => "project",
            Decision::WrittenOut => "written out",
            Decision::Excluded => "excluded",
            Decision::Archived => "archived",
            Decision::Fork => "fork",
            Decision::InvalidName => "invalid name",
            Decision::NoPipeFile => "no .pipe.toml",
            Decision::InvalidProject => "invalid project",
            Decision::NotProbed => "not probed",
        }
    }
}

/// Adds the projects the discovery caches name to `config`, without the network. A cache that
/// cannot be read is a warning: the written-out projects still run.
pub(crate) fn apply(out: &Output, config: &mut Config, state_path: &Path) {
    for forge in discovering(config) {
        let path = state::discovered_path(state_path, &forge);
        let cache = match state::load_discovered(&path) {
            Ok(cache) => cache,
            Err(e) => {
                out.warn(format!("forge `{forge}`: discovered projects are left out: {e:#}"));
                continue;
            }
        };
        let discover = config.forges[&forge].discover.clone().expect("discovering forges have a discover table");
        if cache.org != discover.org {
            continue;
        }
        let (_, projects) = decide(config, &forge, &discover, &cache);
        config.projects.extend(projects);
    }
}

/// Lists every discovering forge's organization, probes what moved, and adds the projects to
/// `config`. With `save`, the caches are written (the caller holds the state lock). A forge
/// that does not answer keeps its known projects.
pub(crate) fn refresh(out: &Output, config: &mut Config, state_path: &Path, save: bool) -> Vec<ForgeReport> {
    let mut reports = Vec::new();
    for forge in discovering(config) {
        let path = state::discovered_path(state_path, &forge);
        let discover = config.forges[&forge].discover.clone().expect("discovering forges have a discover table");
        let mut cache = match state::load_discovered(&path) {
            Ok(cache) => cache,
            Err(e) => {
                out.warn(format!("forge `{forge}`: discovery skipped: {e:#}"));
                continue;
            }
        };
        let before = cache.clone();
        if cache.org != discover.org {
            let gone = cache.projects.iter().map(|p| (p.clone(), format!("organization is now `{}`", discover.org)));
            let gone: BTreeMap<String, String> = cache.gone.clone().into_iter().chain(gone).collect();
            cache = Discovered { schema: state::SCHEMA, org: discover.org.clone(), gone, ..Discovered::default() };
        }
        let (requests, not_modified, refused) = list(out, config, &forge, &discover, &mut cache);
        probe(out, config, &forge, &discover, &mut cache);
        let (decisions, projects) = decide(config, &forge, &discover, &cache);
        let now: Vec<String> = projects.iter().map(|(name, _)| name.clone()).collect();
        for name in cache.projects.clone() {
            if !now.contains(&name) {
                let why = decisions
                    .iter()
                    .find(|d| d.project.as_deref() == Some(&name))
                    .map_or_else(|| "no longer listed".to_string(), |d| d.decision.as_str().to_string());
                out.info(format!("forge `{forge}`: `{name}` is no longer a discovered project ({why}); its state stays until `pipe prune`"));
                cache.gone.insert(name, why);
            }
        }
        for name in &now {
            if !cache.projects.contains(name) {
                out.info(format!("forge `{forge}`: discovered project `{name}`"));
            }
            cache.gone.remove(name);
        }
        cache.projects = now;
        if save
            && cache != before
            && let Err(e) = state::save_discovered(&path, &cache)
        {
            out.warn(format!("forge `{forge}`: {e:#}"));
        }
        config.projects.extend(projects);
        reports.push(ForgeReport {
            forge: forge.clone(),
            org: discover.org.clone(),
            requests,
            not_modified,
            throttled_until: throttled(&cache),
            error: cache.error.clone(),
            repos: decisions,
            refused,
            gone: cache.gone.clone(),
        });
    }
    reports
}

/// When the cache says the forge's rate limit holds discovery back, if it still does.
pub(crate) fn throttled(cache: &Discovered) -> Option<jiff::Timestamp> {
    let now = crate::clock::now().as_second();
    cache.throttled_until.filter(|t| *t > now).and_then(|t| jiff::Timestamp::from_second(t).ok())
}

/// Forges with a `discover` table, by name.
fn discovering(config: &Config) -> Vec<String> {
    config.forges.iter().filter(|(_, f)| f.discover.is_some()).map(|(n, _)| n.clone()).collect()
}

/// Lists the organization page by page into `cache`. Returns the requests sent, how many were
/// answered `304`, and the entries refused. A failure leaves the previous listing in place.
fn list(
    out: &Output,
    config: &Config,
    forge_name: &str,
    discover: &Discover,
    cache: &mut Discovered,
) -> (usize, usize, Vec<String>) {
    let forge = &config.forges[forge_name];
    let now = crate::clock::now().as_second();
    let (mut requests, mut not_modified, mut refused) = (0, 0, Vec::new());
    if cache.throttled_until.is_some_and(|t| t > now) {
        out.detail(format!("forge `{forge_name}`: discovery waits for the rate limit; known projects are polled"));
        return (requests, not_modified, refused);
    }
    cache.throttled_until = None;
    let token = SecretRef::from_pair(&forge.token_env, &forge.token_file)
        .ok_or_else(|| anyhow::anyhow!("no token"))
        .and_then(|r| secret::resolve(&r, &format!("forge.{forge_name}.token")));
    let token = match token {
        Ok(t) => t,
        Err(e) => {
            out.warn(format!("forge `{forge_name}`: cannot list `{}`: {e:#}", discover.org));
            cache.error = Some(format!("{e:#}"));
            return (requests, not_modified, refused);
        }
    };
    let mut pages = Vec::new();
    let mut repos = BTreeMap::new();
    let mut url = Some(first_page(forge, discover));
    let mut failure = None;
    while let Some(current) = url.take() {
        if pages.len() == MAX_PAGES {
            failure = Some(format!("the listing has more than {MAX_PAGES} pages; the rest is ignored"));
            break;
        }
        let known = cache.pages.iter().find(|p| p.url == current);
        // A page is asked for conditionally only when every repository it listed is at hand.
        let etag = known.filter(|p| p.repos.iter().all(|r| cache.repo.contains_key(r))).and_then(|p| p.etag.clone());
        requests += 1;
        let fetched = match fetch_page(forge, discover, &token, &current, etag.as_deref(), now) {
            Ok(f) => f,
            Err(failed) => {
                cache.throttled_until = failed.defer;
                failure = Some(failed.why);
                break;
            }
        };
        match fetched.answer {
            // Only an answer to our `If-None-Match` may say "unchanged"; any other 304 is the
            // forge's mistake, and the listing stops there as failed.
            Answer::Unchanged if etag.is_none() => {
                failure = Some(format!("`{current}` answered 304 Not Modified to a request without an ETag"));
                break;
            }
            Answer::Unchanged => {
                let page = known.cloned().unwrap_or_default();
                not_modified += 1;
                for name in &page.repos {
                    if let Some(repo) = cache.repo.get(name) {
                        repos.insert(name.clone(), repo.clone());
                    }
                }
                url = page.next.clone();
                pages.push(page);
            }
            Answer::Fresh { etag, next, repos: listed, skipped } => {
                refused.extend(skipped);
                let mut names = Vec::new();
                for (name, mut repo) in listed {
                    if let Some(old) = cache.repo.get(&name) {
                        repo.probed = old.probed.clone();
                        repo.commit = old.commit.clone();
                        repo.carries = old.carries.clone();
                    }
                    names.push(name.clone());
                    repos.insert(name, repo);
                }
                url = next.clone();
                pages.push(Page { url: current, etag, next, repos: names });
            }
        }
        if let Some(until) = fetched.defer {
            cache.throttled_until = Some(until);
            if url.is_some() {
                failure = Some("rate limited before the last page".into());
                break;
            }
        }
    }
    const SHOWN: usize = 5;
    for why in refused.iter().take(SHOWN) {
        out.warn(format!("forge `{forge_name}`: skipped a listed repository: {why}"));
    }
    if refused.len() > SHOWN {
        out.warn(format!("forge `{forge_name}`: skipped {} more listed repositories", refused.len() - SHOWN));
    }
    match failure {
        Some(why) => {
            out.warn(format!(
                "forge `{forge_name}`: cannot list `{}`: {why}; the known projects are polled as before",
                discover.org
            ));
            cache.error = Some(why);
        }
        None => {
            // An unchanged listing leaves the cache as it was, so a no-op tick writes nothing.
            if not_modified < requests {
                cache.listed_at = Some(crate::clock::now());
            }
            cache.pages = pages;
            cache.repo = repos;
            cache.error = None;
        }
    }
    (requests, not_modified, refused)
}

/// Probes, in parallel, the default branch of each candidate whose listing marker moved since
/// its last probe (or that was never probed), and records what it carries.
fn probe(out: &Output, config: &Config, forge: &str, discover: &Discover, cache: &mut Discovered) {
    let mut todo = Vec::new();
    for (repo_name, repo) in &cache.repo {
        if repo.probed.as_deref() == Some(repo.marker.as_str()) && repo.carries.is_some() {
            continue;
        }
        let Candidacy::Eligible(name, project) = candidacy(config, forge, discover, repo_name, repo) else {
            continue;
        };
        todo.push((repo_name.clone(), name, project));
    }
    if todo.is_empty() {
        return;
    }
    git::set_timeouts(config.timeout(None, Stage::Poll));
    let results = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..config.settings.parallel.clamp(1, todo.len()) {
            scope.spawn(|| {
                while let Some((repo_name, name, project)) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if crate::signals::received().is_some() {
                        return;
                    }
                    let branch = &cache.repo[repo_name].default_branch;
                    let result = probe_one(config, name, project, branch);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push((repo_name.clone(), result));
                }
            });
        }
    });
    let mut failed = 0;
    for (repo_name, result) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        let repo = cache.repo.get_mut(&repo_name).expect("probed repositories are listed");
        match result {
            Ok(probed) => {
                let files = &probed.root_files;
                let has = |f: &str| files.iter().any(|n| n == f);
                let carries = if has(".pipe.toml") {
                    "pipe-toml"
                } else if has(".jenkins-env") && has("Dockerfile") {
                    "jenkins-env"
                } else {
                    "none"
                };
                repo.carries = Some(carries.into());
                repo.commit = Some(probed.commit);
                repo.probed = Some(repo.marker.clone());
            }
            Err(e) => {
                // Tried again next tick; a few by name so an unreachable host cannot flood the journal.
                failed += 1;
                if failed <= 5 {
                    out.warn(format!("forge `{forge}`: cannot probe `{repo_name}`: {e:#}"));
                }
            }
        }
    }
    if failed > 5 {
        out.warn(format!("forge `{forge}`: {} more repositories could not be probed", failed - 5));
    }
}

fn probe_one(config: &Config, name: &str, project: &Project, branch: &str) -> anyhow::Result<git::Probed> {
    let auth = super::git_auth(name, project)?;
    let deadline = Instant::now() + config.timeout(Some(project), Stage::Poll) * 4;
    git::root_files(&project.repo, &auth, &format!("refs/heads/{branch}"), &probe_dir(config, name), deadline)
}

/// Where a repository is probed: beside the projects' workspaces, under a name no project
/// can have (project names never start with `.`), one per process (`pipe check` probes
/// while a tick may).
fn probe_dir(config: &Config, name: &str) -> PathBuf {
    config.settings.workspace.join(format!(".discover-{name}-{}", std::process::id()))
}

/// A listed repository before its probe: what keeps it out, or the project it would be.
enum Candidacy {
    Out(Decision, Option<String>, Option<String>),
    Eligible(String, Box<Project>),
}

fn candidacy(config: &Config, forge: &str, discover: &Discover, repo_name: &str, repo: &Repo) -> Candidacy {
    let out = |d, project: Option<&str>, detail: Option<String>| Candidacy::Out(d, project.map(str::to_string), detail);
    if !discover.wants(repo_name) {
        return out(Decision::Excluded, None, None);
    }
    if repo.archived && !discover.archived {
        return out(Decision::Archived, None, None);
    }
    if repo.fork && !discover.forks {
        return out(Decision::Fork, None, None);
    }
    let Some(name) = config::project_name(repo_name) else {
        return out(
            Decision::InvalidName,
            None,
            Some("a project name is lowercase letters, digits, `-` and `_`".into()),
        );
    };
    let written = config.projects.iter().find(|(n, p)| {
        p.discovered.is_none()
            && (**n == name || (p.forge.as_deref() == Some(forge) && p.forge_repo.as_deref() == Some(&repo.full_name)))
    });
    if let Some((written, _)) = written {
        return out(Decision::WrittenOut, Some(&name), Some(format!("`[project.{written}]` in the pipeline file")));
    }
    let candidate = Candidate { name: &name, repo: repo_name, full_name: &repo.full_name, clone_url: &repo.clone_url };
    match config::instantiate(config, forge, discover, &candidate) {
        Ok(project) => Candidacy::Eligible(name, Box::new(project)),
        Err(problems) => {
            let detail = problems.iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("; ");
            out(Decision::InvalidProject, Some(&name), Some(detail))
        }
    }
}

/// What each listed repository is, from the listing and the probes in `cache`, and the
/// projects. Two repositories that would make the same project name both stay out.
/// Why a repository may not become the project `name` though it is valid: it would take the
/// URL of a forge's organization webhook (`/forge/NAME`), or the compose project of a
/// pull-request preview (`<project>-pr-<N>`), whose teardown and deploys are another's.
fn reserved(config: &Config, name: &str) -> Option<&'static str> {
    if config.forges.contains_key(name) {
        return Some("the name of a forge section, whose organization webhook is `/forge/NAME`");
    }
    let preview = name.rsplit_once("-pr-").is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    preview.then_some("names ending in `-pr-<N>` are those of pull-request previews")
}

fn decide(
    config: &Config,
    forge: &str,
    discover: &Discover,
    cache: &Discovered,
) -> (Vec<RepoDecision>, Vec<(String, Project)>) {
    let mut decisions = Vec::new();
    let mut projects: Vec<(String, Project)> = Vec::new();
    let mut taken = BTreeSet::new();
    for (repo_name, repo) in &cache.repo {
        let decision = |decision, project: Option<String>, detail| RepoDecision {
            repo: repo_name.clone(),
            project,
            decision,
            detail,
        };
        let (name, project) = match candidacy(config, forge, discover, repo_name, repo) {
            Candidacy::Out(d, project, detail) => {
                decisions.push(decision(d, project, detail));
                continue;
            }
            Candidacy::Eligible(name, project) => (name, project),
        };
        match repo.carries.as_deref() {
            Some("pipe-toml" | "jenkins-env") => {}
            Some(_) => {
                decisions.push(decision(Decision::NoPipeFile, Some(name), None));
                continue;
            }
            None => {
                decisions.push(decision(Decision::NotProbed, Some(name), None));
                continue;
            }
        }
        if let Some(why) = reserved(config, &name) {
            decisions.push(decision(Decision::InvalidName, Some(name), Some(why.into())));
            continue;
        }
        if !taken.insert(name.clone()) || config.projects.contains_key(&name) {
            let clash = "another repository makes the same project name";
            for earlier in decisions.iter_mut().filter(|d| d.project.as_deref() == Some(&name)) {
                earlier.decision = Decision::InvalidName;
                earlier.detail = Some(clash.into());
            }
            decisions.push(decision(Decision::InvalidName, Some(name.clone()), Some(clash.into())));
            projects.retain(|(n, _)| *n != name);
            continue;
        }
        let detail = repo.carries.as_deref().map(|c| if c == "pipe-toml" { ".pipe.toml" } else { ".jenkins-env" });
        decisions.push(decision(Decision::Project, Some(name.clone()), detail.map(str::to_string)));
        projects.push((name, *project));
    }
    (decisions, projects)
}

/// A discovery cache and where it goes, saved once the state is.
pub(crate) type CacheToSave = (PathBuf, state::Discovered);

/// A project no longer discovered whose state `pipe prune` removes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Forgotten {
    pub forge: String,
    pub project: String,
    /// Why discovery stopped making it.
    pub why: String,
    /// Refs it had in the state.
    pub refs: usize,
    /// Its histories, logs, deploy histories and workspace, as they were removed.
    pub removed: Vec<PathBuf>,
}

/// Removes what is left of projects discovery no longer makes: their lines in the state,
/// their ref and deploy histories, logs and workspace; then forgets them. A project that came
/// back (or is now written out) is only forgotten as gone. The caller holds the lock and saves
/// `st` when this returns something and it is not a dry run.
pub(crate) fn prune_gone(
    config: &Config,
    state_path: &Path,
    st: &mut state::State,
    dry_run: bool,
) -> anyhow::Result<(Vec<Forgotten>, Vec<CacheToSave>)> {
    let mut forgotten = Vec::new();
    // Saved by the caller after the state: a crash between leaves the projects to forget
    // still named in the caches, so the next prune finishes the job.
    let mut caches = Vec::new();
    for forge in discovering(config) {
        let path = state::discovered_path(state_path, &forge);
        let mut cache = state::load_discovered(&path)?;
        if cache.gone.is_empty() {
            continue;
        }
        for (name, why) in std::mem::take(&mut cache.gone) {
            if config.projects.contains_key(&name) {
                continue;
            }
            let refs = st.project.get(&name).map_or(0, |p| p.refs.len());
            let dirs = state::project_dirs(state_path, &name);
            let workspace = config.settings.workspace.join(&name);
            let removed: Vec<PathBuf> = dirs.into_iter().chain([workspace]).filter(|d| d.exists()).collect();
            if !dry_run {
                for dir in &removed {
                    std::fs::remove_dir_all(dir).with_context(|| format!("failed to remove `{}`", dir.display()))?;
                }
                st.project.remove(&name);
            }
            forgotten.push(Forgotten { forge: forge.clone(), project: name, why, refs, removed });
        }
        if !dry_run {
            caches.push((path, cache));
        }
    }
    Ok((forgotten, caches))
}
