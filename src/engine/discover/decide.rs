//! What each listed repository becomes: refused, excluded, kept out by a name another holds, or
//! a project made from the forge's template.

use std::collections::BTreeSet;

use crate::config::{self, Candidate, Config, Discover, Project};
use crate::state::{Discovered, Repo};

use super::report::{Decision, RepoDecision};

/// A listed repository before its probe: what keeps it out, or the project it would be.
pub(crate) enum Candidacy {
    Out(Decision, Option<String>, Option<String>),
    Eligible(String, Box<Project>),
}

pub(crate) fn candidacy(config: &Config, forge: &str, discover: &Discover, repo_name: &str, repo: &Repo) -> Candidacy {
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

pub(crate) fn decide(
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
