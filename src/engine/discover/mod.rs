//! Organization discovery: every repository of a `[forge.NAME.discover]` organization whose
//! default branch carries a `.pipe.toml` (or `.jenkins-env` beside a `Dockerfile`) becomes a
//! project from the forge's template.
//!
//! [`refresh`] (the tick, `pipe poll`, `pipe check`) lists the organization through the forge's
//! API — one conditional request per page; on a tick where the forge lists newest first, the
//! first page alone when nothing moved ([`quick`]) — and probes the default branch of each repository
//! whose last push moved since its last probe, with one shallow fetch through `git` (the
//! project's own URL and credentials, no API quota). What it found is kept in
//! `discover/FORGE.toml` beside the state. [`apply`] (every command) turns that cache into
//! projects without touching the network, so `pipe build APP` knows a discovered `APP`.
//!
//! A project written out in the pipeline file wins over the template, by name and by forge
//! repository. A repository that is archived, removed, excluded or loses its `.pipe.toml` stops
//! being a project; its state stays until `pipe prune` removes it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::Config;
use crate::output::Output;
use crate::state::{self, Discovered};

mod decide;
mod listing;
mod names;
mod probe;
mod prune;
mod quick;

mod report;

use listing::discovering;
pub(crate) use names::{image_holder, registries_of, written_as};
pub(crate) use prune::{Forgotten, prune_gone};
pub(crate) use report::ForgeReport;

/// Adds the projects the discovery caches name to `config`, without the network. A cache that
/// cannot be read is a warning: the written-out projects still run.
///
/// Only the cache's head is read (the projects made and the entries they were made of), never
/// the listing, so what this costs grows with the projects, not with what the forge listed.
pub(crate) fn apply(out: &Output, config: &mut Config, state_path: &Path) {
    for forge in discovering(config) {
        let path = state::discovered_path(state_path, &forge);
        let cache = match made(&path) {
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
        let (_, projects) = decide::decide(config, &forge, &discover, &cache);
        config.projects.extend(projects);
    }
}

/// The cache's head with the entries of the projects made as its only listing: what every
/// command but the listing decides over. A cache written before `made` was kept is read whole.
fn made(path: &Path) -> anyhow::Result<Discovered> {
    made_with(path, state::load_discovered_head)
}

/// [`made`] with the head's copy of the first page, for a tick's first look.
fn made_with(path: &Path, read: fn(&Path) -> anyhow::Result<Discovered>) -> anyhow::Result<Discovered> {
    let head = read(path)?;
    if head.made.is_empty() && !head.projects.is_empty() {
        return state::load_discovered(path);
    }
    Ok(Discovered { repo: head.made.clone(), ..head })
}

/// Lists every discovering forge's organization, probes what moved, and adds the projects to
/// `config`. With `save` (a tick: the caller holds the state lock), the caches are written, and
/// on a forge that lists the most recently pushed first a tick first asks for the first page
/// alone ([`quick`]): when nothing moved and no probe waits, only the cache's head is read. A
/// forge that does not answer keeps its known projects.
pub(crate) fn refresh(out: &Output, config: &mut Config, state_path: &Path, save: bool) -> Vec<ForgeReport> {
    let mut reports = Vec::new();
    for forge in discovering(config) {
        let path = state::discovered_path(state_path, &forge);
        let discover = config.forges[&forge].discover.clone().expect("discovering forges have a discover table");
        let inputs = quick::inputs(config);
        // While the forge's rate limit or an over-bound listing holds discovery back, the
        // listing is neither asked for nor read: the projects come from the cache's head.
        let now = crate::clock::now().as_second();
        let head = made_with(&path, state::load_discovered_look);
        let look = match &head {
            Ok(head)
                if head.org == discover.org
                    && (head.throttled_until.is_some_and(|t| t > now)
                        || head.over_bound_until.is_some_and(|t| t > now)) =>
            {
                Some(quick::Look::Still { requests: 0, not_modified: 0 })
            }
            Ok(head) if save => Some(quick::look(config, &forge, &discover, head, &inputs)),
            _ => None,
        };
        if let (Some(quick::Look::Still { requests, not_modified }), Ok(head)) = (&look, &head) {
            let (decisions, projects) = decide::decide(config, &forge, &discover, head);
            // The same projects as the cache says: nothing to write. Otherwise (another forge's
            // projects took a name) the organization is listed whole below.
            let same = projects.iter().map(|(n, _)| n).eq(head.projects.iter());
            if same || *requests == 0 {
                config.projects.extend(projects);
                reports.push(ForgeReport {
                    forge: forge.clone(),
                    org: discover.org.clone(),
                    requests: *requests,
                    not_modified: *not_modified,
                    throttled_until: throttled(head),
                    error: head.error.clone(),
                    repos: decisions,
                    refused: Vec::new(),
                    gone: head.gone.clone(),
                });
                continue;
            }
        }
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
        let listed = match look {
            Some(quick::Look::Probe { requests, not_modified }) => {
                listing::Listed { requests, not_modified, ..listing::Listed::default() }
            }
            Some(quick::Look::Moved { newest, asked }) => {
                listing::list(out, config, &forge, &discover, &mut cache, listing::Mode::Since(newest), Some(asked))
            }
            _ => listing::list(out, config, &forge, &discover, &mut cache, listing::Mode::Whole, None),
        };
        // Only where a tick can look at the first page alone does the whole listing have a
        // cadence (elsewhere every tick lists whole, and a no-op tick must write nothing).
        if listed.whole && crate::forge::discover::newest_first(config.forges[&forge].kind) {
            cache.relisted_at = Some(now);
        }
        if let Some((etag, entries)) = listed.first.clone() {
            cache.first_etag = etag;
            cache.first = entries;
        }
        let listing::Listed { requests, not_modified, refused, .. } = listed;
        probe::probe(out, config, &forge, &discover, &mut cache);
        cache.unprobed = probe::unprobed(config, &forge, &discover, &cache);
        cache.inputs = Some(inputs);
        let (decisions, projects) = decide::decide(config, &forge, &discover, &cache);
        let now: Vec<String> = projects.iter().map(|(name, _)| name.clone()).collect();
        for name in cache.projects.clone() {
            if !now.contains(&name) {
                let why = decisions
                    .iter()
                    .find(|d| {
                        d.project.as_deref() == Some(&name)
                            || crate::config::project_name(&d.repo).as_deref() == Some(name.as_str())
                    })
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
        cache.made = decisions
            .iter()
            .filter(|d| d.decision == report::Decision::Project)
            .filter_map(|d| cache.repo.get(&d.repo).map(|r| (d.repo.clone(), r.clone())))
            .collect();
        cache.kept_out = decisions
            .iter()
            .filter(|d| d.decision == report::Decision::NameTaken)
            .map(|d| (d.repo.clone(), d.detail.clone().unwrap_or_default()))
            .collect();
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
