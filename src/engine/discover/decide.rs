//! What each listed repository becomes: refused, excluded, kept out by a name another holds, or
//! a project made from the forge's template.

use crate::config::{self, Candidate, Config, Discover, Project};
use crate::state::{Discovered, Repo};

use super::names::{self, Held, Register, Space};
use super::report::{Decision, RepoDecision};

/// A listed repository before its probe: what keeps it out, or the project it would be.
pub(crate) enum Candidacy {
    Out(Decision, Option<String>, Option<String>),
    Eligible(String, Box<Project>),
}

/// What keeps a listed repository out without making its project (cheap: no template is
/// rendered), or the project name it would have.
pub(crate) fn screen(
    config: &Config,
    forge: &str,
    discover: &Discover,
    repo_name: &str,
    repo: &Repo,
) -> Result<String, Candidacy> {
    let out = |d, project: Option<&str>, detail: Option<String>| Candidacy::Out(d, project.map(str::to_string), detail);
    if !discover.wants(repo_name) {
        return Err(out(Decision::Excluded, None, None));
    }
    if repo.archived && !discover.archived {
        return Err(out(Decision::Archived, None, None));
    }
    if repo.fork && !discover.forks {
        return Err(out(Decision::Fork, None, None));
    }
    let Some(name) = config::project_name(repo_name) else {
        return Err(out(
            Decision::InvalidName,
            None,
            Some("a project name is lowercase letters, digits, `-` and `_`".into()),
        ));
    };
    let written = config.projects.iter().find(|(n, p)| {
        p.discovered.is_none()
            && (**n == name || (p.forge.as_deref() == Some(forge) && p.forge_repo.as_deref() == Some(&repo.full_name)))
    });
    if let Some((written, _)) = written {
        return Err(out(
            Decision::WrittenOut,
            Some(&name),
            Some(format!("`[project.{written}]` in the pipeline file")),
        ));
    }
    Ok(name)
}

/// [`screen`], then the project made from the template.
pub(crate) fn candidacy(config: &Config, forge: &str, discover: &Discover, repo_name: &str, repo: &Repo) -> Candidacy {
    let name = match screen(config, forge, discover, repo_name, repo) {
        Ok(name) => name,
        Err(out) => return out,
    };
    let out = |d, project: Option<&str>, detail: Option<String>| Candidacy::Out(d, project.map(str::to_string), detail);
    let candidate = Candidate { name: &name, repo: repo_name, full_name: &repo.full_name, clone_url: &repo.clone_url };
    match config::instantiate(config, forge, discover, &candidate) {
        Ok(project) => Candidacy::Eligible(name, Box::new(project)),
        Err(problems) => {
            let detail = problems.iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("; ");
            out(Decision::InvalidProject, Some(&name), Some(detail))
        }
    }
}

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

/// A repository that may become a project, once no name it would hold is another's.
struct Eligible {
    /// Its row in the decisions.
    row: usize,
    repo: String,
    name: String,
    project: Project,
    names: Vec<Held>,
}

/// What each listed repository is, from the listing and the probes in `cache`, and the
/// projects. A name belongs to whoever holds it first ([`names`]): every project already in
/// `config` (written out, or discovered on another forge), forges and serve hooks, then the
/// projects this forge made before (`cache.made`); a newcomer that would hold one of their
/// names, exactly or folded, stays out. Two newcomers that would hold the same name both stay out.
pub(crate) fn decide(
    config: &Config,
    forge: &str,
    discover: &Discover,
    cache: &Discovered,
) -> (Vec<RepoDecision>, Vec<(String, Project)>) {
    let mut decisions = Vec::new();
    let mut eligible = Vec::new();
    for (repo_name, repo) in &cache.repo {
        let decision = |decision, project: Option<String>, detail| RepoDecision {
            repo: repo_name.clone(),
            project,
            decision,
            detail,
        };
        // Only a repository carrying a pipe file has its template rendered: what the rest of
        // a listing costs stays the cost of reading it.
        let name = match screen(config, forge, discover, repo_name, repo) {
            Ok(name) => name,
            Err(Candidacy::Out(d, project, detail)) => {
                decisions.push(decision(d, project, detail));
                continue;
            }
            Err(Candidacy::Eligible(..)) => unreachable!("screen keeps out or names"),
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
        let (name, project) = match candidacy(config, forge, discover, repo_name, repo) {
            Candidacy::Out(d, project, detail) => {
                decisions.push(decision(d, project, detail));
                continue;
            }
            Candidacy::Eligible(name, project) => (name, project),
        };
        if let Some(why) = reserved(config, &name) {
            decisions.push(decision(Decision::InvalidName, Some(name), Some(why.into())));
            continue;
        }
        let detail = repo.carries.as_deref().map(|c| if c == "pipe-toml" { ".pipe.toml" } else { ".jenkins-env" });
        let names = names::of_project(config, &name, &project);
        eligible.push(Eligible {
            row: decisions.len(),
            repo: repo_name.clone(),
            name: name.clone(),
            project: *project,
            names,
        });
        decisions.push(decision(Decision::Project, Some(name), detail.map(str::to_string)));
    }
    let mut holders: Register<(String, String)> = Register::new();
    let mut hold = |owner: &str, held: &Held| {
        holders.hold(held, || (owner.to_string(), held.what.clone()));
    };
    for (owner, held) in names::of_others(config) {
        hold(&owner, &held);
    }
    for (name, project) in config.projects.iter().filter(|(_, p)| p.discovered.as_deref() != Some(forge)) {
        for held in names::of_project(config, name, project) {
            hold(&format!("project `{name}`"), &held);
        }
    }
    // The repositories this forge made projects of before hold their names first, in name
    // order (a cache from before `made` was kept names only the projects).
    let (mut prior, newcomers): (Vec<Eligible>, Vec<Eligible>) = eligible
        .into_iter()
        .partition(|e| cache.made.contains_key(&e.repo) || (cache.made.is_empty() && cache.projects.contains(&e.name)));
    prior.sort_by(|a, b| a.name.cmp(&b.name));
    let mut projects = Vec::new();
    let taken = |e: &Eligible, holders: &Register<(String, String)>| {
        e.names
            .iter()
            .find_map(|mine| {
                holders.met(mine).first().map(|(owner, theirs)| {
                    format!("its {} is held by {owner} ({theirs}){}", mine.what, joined(mine.space))
                })
            })
            .or_else(|| {
                names::hook_deploys(config, &e.project)
                    .map(|(owner, what)| format!("its {what} is one {owner} deploys (`images`)"))
            })
    };
    let mut admitted = Vec::new();
    for e in prior {
        match taken(&e, &holders) {
            Some(why) => keep_out(&mut decisions[e.row], why),
            None => {
                for held in &e.names {
                    holders.hold(held, || (format!("project `{}`", e.name), held.what.clone()));
                }
                admitted.push(e);
            }
        }
    }
    let newcomers: Vec<Eligible> = newcomers
        .into_iter()
        .filter(|e| match taken(e, &holders) {
            Some(why) => {
                keep_out(&mut decisions[e.row], why);
                false
            }
            None => true,
        })
        .collect();
    // Which newcomers hold each name; one whose name meets another newcomer's stays out.
    let mut among: Register<Vec<usize>> = Register::new();
    for (i, e) in newcomers.iter().enumerate() {
        for held in &e.names {
            among.hold(held, Vec::new).push(i);
        }
    }
    for (i, e) in newcomers.into_iter().enumerate() {
        let shared = e.names.iter().find(|h| among.met(h).into_iter().flatten().any(|&other| other != i));
        match shared {
            Some(shared) => keep_out(
                &mut decisions[e.row],
                format!("another new repository would hold the same {}{}", shared.what, joined(shared.space)),
            ),
            None => admitted.push(e),
        }
    }
    admitted.sort_by_key(|e| e.row);
    projects.extend(admitted.into_iter().map(|e| (e.name, e.project)));
    (decisions, projects)
}

/// For a Docker name: that names joined to it count too ([`names::meet`]).
fn joined(space: Space) -> &'static str {
    if space == Space::Docker { " (or one joined to it with `_` or `-`)" } else { "" }
}

fn keep_out(decision: &mut RepoDecision, why: String) {
    decision.decision = Decision::NameTaken;
    decision.detail = Some(why);
}
