//! A tick's first look at an organization whose forge lists the most recently pushed first
//! (GitHub, GitLab): one conditional request for the first page, against what the cache's head
//! remembers of it. A push or a new repository changes that page; when it did not, the tick
//! decides from the head alone and asks for nothing more, so what it costs does not grow with
//! what the forge listed. The whole organization is listed again every `relist` (archives,
//! removals, renames), or when the pipeline file changed.

use sha2::Digest as _;

use crate::config::{Config, Discover, SecretRef};
use crate::forge::discover::{Answer, fetch_page, first_page, newest_first};
use crate::secret;
use crate::state::Discovered;

use super::listing::{Asked, as_listed};

/// What the first look found.
pub(crate) enum Look {
    /// The listing is due whole (no first page known, the relisting is due, the pipeline file
    /// changed, a forge without an order, or not a tick).
    Whole,
    /// Nothing moved since the last tick, and no probe waits: the head is all there is to read.
    Still { requests: usize, not_modified: usize },
    /// Nothing moved, but repositories wait for their probe: the listing is read, not asked.
    Probe { requests: usize, not_modified: usize },
    /// The first page moved (or could not be read): the listing goes on from it, up to the
    /// newest push the cache knew.
    Moved { newest: String, asked: Asked },
}

/// A digest of the pipeline file as discovery reads it: a change (a template, a pattern, a
/// project written out) decides every listed repository anew, so it lists the organization whole.
pub(crate) fn inputs(config: &Config) -> String {
    let digest = sha2::Sha256::digest(format!("{config:?}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The first look: `head` is the cache's head, `inputs` the pipeline file's digest.
pub(crate) fn look(config: &Config, forge_name: &str, discover: &Discover, head: &Discovered, inputs: &str) -> Look {
    let forge = &config.forges[forge_name];
    let now = crate::clock::now().as_second();
    let relist = i64::try_from(discover.relist.as_secs()).unwrap_or(i64::MAX);
    let current = newest_first(forge.kind)
        && head.org == discover.org
        && head.error.is_none()
        && head.inputs.as_deref() == Some(inputs)
        && head.relisted_at.is_some_and(|t| now >= t && now < t.saturating_add(relist));
    let Some(etag) = head.first_etag.clone().filter(|_| current) else { return Look::Whole };
    let token = SecretRef::from_pair(&forge.token_env, &forge.token_file)
        .ok_or_else(|| anyhow::anyhow!("no token"))
        .and_then(|r| secret::resolve(&r, &format!("forge.{forge_name}.token")));
    let Ok(token) = token else { return Look::Whole };
    let url = first_page(forge, discover);
    let answer = fetch_page(forge, discover, &token, &url, Some(&etag), now, crate::forge::discover::MAX_REPOS);
    let (requests, not_modified) = match &answer {
        Ok(fetched) if fetched.defer.is_none() => match &fetched.answer {
            Answer::Unchanged => (1, 1),
            // The same entries under another `ETag` (a star, an issue): nothing pipe reads moved.
            Answer::Fresh { page, .. }
                if !page.over
                    && page.repos.len() == head.first.len()
                    && page.repos.iter().all(|(n, r)| head.first.get(n) == Some(&as_listed(r))) =>
            {
                (1, 0)
            }
            Answer::Fresh { .. } => (0, 0),
        },
        _ => (0, 0),
    };
    match (requests, head.unprobed) {
        (1, 0) => Look::Still { requests, not_modified },
        (1, _) => Look::Probe { requests, not_modified },
        _ => {
            let newest = head.first.values().map(|r| r.marker.as_str()).max().unwrap_or_default().to_string();
            Look::Moved { newest, asked: (Some(etag), answer) }
        }
    }
}
