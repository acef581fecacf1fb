//! Listing an organization page by page through the forge's API into the discovery cache, one
//! conditional request per page.

use std::collections::BTreeMap;

use crate::config::{Config, Discover, SecretRef};
use crate::forge::discover::{
    Answer, MAX_LISTING_BYTES, MAX_PAGES, MAX_REFUSED, MAX_REPOS, entry_bytes, fetch_page, first_page,
};
use crate::output::Output;
use crate::secret;
use crate::state::{Discovered, Page};

/// How long a listing that went over the bounds waits before the organization is listed again.
const RELIST_AFTER: i64 = 3600;

/// Lists the organization page by page into `cache`. Returns the requests sent, how many were
/// answered `304`, and the entries refused. A failure leaves the previous listing in place.
pub(crate) fn list(
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
    if cache.over_bound_until.is_some_and(|t| t > now) {
        out.detail(format!("forge `{forge_name}`: the last listing was over the bound; known projects are polled"));
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
    // Over a bound, the listing stops and counts as failed: the known projects stay.
    let mut over = None;
    let (mut bytes, mut refused_count) = (0, 0);
    while let Some(current) = url.take() {
        if pages.len() == MAX_PAGES {
            over = Some(format!("the listing has more than {MAX_PAGES} pages"));
            break;
        }
        let known = cache.pages.iter().find(|p| p.url == current);
        // A page is asked for conditionally only when every repository it listed is at hand.
        let etag = known.filter(|p| p.repos.iter().all(|r| cache.repo.contains_key(r))).and_then(|p| p.etag.clone());
        requests += 1;
        let room = MAX_REPOS - repos.len();
        let fetched = match fetch_page(forge, discover, &token, &current, etag.as_deref(), now, room) {
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
                        bytes += entry_bytes(name, repo);
                        repos.insert(name.clone(), repo.clone());
                    }
                }
                url = page.next.clone();
                pages.push(page);
            }
            Answer::Fresh { etag, next, page: listed } => {
                refused_count += listed.refused;
                let keep = MAX_REFUSED.saturating_sub(refused.len());
                refused.extend(listed.skipped.into_iter().take(keep));
                if listed.over {
                    over = Some(format!("the listing has more than {MAX_REPOS} repositories"));
                    break;
                }
                let mut names = Vec::new();
                for (name, mut repo) in listed.repos {
                    bytes += entry_bytes(&name, &repo);
                    if let Some(old) = cache.repo.get(&name) {
                        repo.probed = old.probed.clone();
                        repo.commit = old.commit.clone();
                        repo.carries = old.carries.clone();
                        repo.probe_failed_at = old.probe_failed_at;
                    }
                    names.push(name.clone());
                    repos.insert(name, repo);
                }
                url = next.clone();
                pages.push(Page { url: current, etag, next, repos: names });
            }
        }
        if bytes > MAX_LISTING_BYTES || repos.len() > MAX_REPOS {
            over = Some(format!("the listing holds more than {} MiB of names and URLs", MAX_LISTING_BYTES >> 20));
            break;
        }
        if let Some(until) = fetched.defer {
            cache.throttled_until = Some(until);
            if url.is_some() {
                failure = Some("rate limited before the last page".into());
                break;
            }
        }
    }
    if refused_count > refused.len() {
        refused.push(format!("{} more entries refused", refused_count - refused.len()));
    }
    if let Some(why) = over {
        cache.over_bound_until = Some(now + RELIST_AFTER);
        failure = Some(format!(
            "over pipe's bound: {why} (at most {MAX_REPOS} repositories, {MAX_PAGES} pages, {} MiB); the rest is ignored and the organization is listed again after {} minutes",
            MAX_LISTING_BYTES >> 20,
            RELIST_AFTER / 60
        ));
    } else if failure.is_none() {
        cache.over_bound_until = None;
    }
    const SHOWN: usize = 5;
    for why in refused.iter().take(SHOWN) {
        out.warn(format!("forge `{forge_name}`: skipped a listed repository: {why}"));
    }
    if refused_count > SHOWN {
        out.warn(format!("forge `{forge_name}`: skipped {} more listed repositories", refused_count - SHOWN));
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

/// Forges with a `discover` table, by name.
pub(crate) fn discovering(config: &Config) -> Vec<String> {
    config.forges.iter().filter(|(_, f)| f.discover.is_some()).map(|(n, _)| n.clone()).collect()
}
