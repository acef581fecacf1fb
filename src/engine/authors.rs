//! Who opened the pull requests a tick works on, so that one contributor's pull requests are
//! bounded (`pipe.max_builds_per_author`, `pipe.max_previews_per_author`) as well as all of
//! them. Git refs name a pull request, never its author: the author comes from the project's
//! forge (`forge::pulls`), asked once per project per tick and only when one of its pull
//! requests has work. A project without a forge has no authors, and its pull requests are
//! bounded only in total; when its forge does not answer (or does not name an author), its
//! pull requests share one author, `?`, so an outage bounds them rather than opening them up.

use std::collections::BTreeMap;

use crate::config::{Config, Project, SecretRef};
use crate::output::Output;
use crate::refs;
use crate::secret;
use crate::state::State;

/// The bucket of a pull request whose author the forge did not name.
pub(crate) const UNKNOWN: &str = "?";

/// The author of each pull request with work, by project and ref: `forge:login`, or
/// `forge:?`; no entry for a project without a forge.
pub(crate) fn of_pull_requests(
    out: &Output,
    config: &Config,
    projects: &[(&str, &Project)],
    st: &State,
    with_work: &dyn Fn(&str, &str) -> bool,
) -> BTreeMap<(String, String), String> {
    let mut found = BTreeMap::new();
    for (name, project) in projects {
        let Some(refs_state) = st.project.get(*name) else { continue };
        let pulls: Vec<(&String, u64)> = refs_state
            .refs
            .keys()
            .filter(|r| with_work(name, r))
            .filter_map(|r| refs::pull_number(r).map(|n| (r, n)))
            .collect();
        if pulls.is_empty() {
            continue;
        }
        let (Some(forge_name), Some(repo)) = (&project.forge, &project.forge_repo) else { continue };
        let Some(forge) = config.forges.get(forge_name) else { continue };
        let known = SecretRef::from_pair(&forge.token_env, &forge.token_file)
            .ok_or_else(|| "no token".to_string())
            .and_then(|r| secret::resolve(&r, &format!("forge.{forge_name}.token")).map_err(|e| format!("{e:#}")))
            .and_then(|token| {
                let wanted: Vec<u64> = pulls.iter().map(|(_, n)| *n).collect();
                crate::forge::pulls::authors(forge, &token, repo, &wanted)
            });
        let known = known.unwrap_or_else(|why| {
            out.warn(format!(
                "{name}: the authors of its pull requests are unknown ({why}); they count as one author this tick"
            ));
            BTreeMap::new()
        });
        for (refname, number) in pulls {
            let login = known.get(&number).map_or(UNKNOWN, String::as_str);
            found.insert((name.to_string(), refname.clone()), format!("{forge_name}:{login}"));
        }
    }
    found
}
