//! Listing an organization page by page through the forge's API into the discovery cache, one
//! conditional request per page.

use std::collections::BTreeMap;

use crate::config::{Config, Discover, SecretRef};
use crate::forge::discover::{
    Answer, Failed, Fetched, MAX_FIRST_PAGE, MAX_LISTING_BYTES, MAX_PAGES, MAX_REFUSED, MAX_REPOS, entry_bytes,
    fetch_page, first_page,
};
use crate::output::Output;
use crate::secret;
use crate::state::{Discovered, Page, Repo};

/// How long a listing that went over the bounds waits before the organization is listed again.
const RELIST_AFTER: i64 = 3600;

/// How a tick lists the organization.
pub(crate) enum Mode {
    /// Every page (conditionally): the listing replaces the cache's, so archived, removed and
    /// renamed repositories show.
    Whole,
    /// On a forge that lists the most recently pushed first: pages from the first on, up to
    /// the one that lists a repository pushed before `newest` (the newest push the cache
    /// knew); what they list is merged into the cache's listing.
    Since(String),
}

/// What listing brought: the requests sent, how many were answered `304`, the entries refused,
/// whether every page was read, and the first page as answered.
#[derive(Default)]
pub(crate) struct Listed {
    pub requests: usize,
    pub not_modified: usize,
    pub refused: Vec<String>,
    /// Whether it listed every page: a listing `Since` a push that found no older repository
    /// it knew, or an older one it did not know, did.
    pub whole: bool,
    /// The first page's `ETag` and entries (listing fields only), when it was read and the
    /// listing completed; `(None, empty)` for a first page over [`MAX_FIRST_PAGE`] entries.
    pub first: Option<(Option<String>, BTreeMap<String, Repo>)>,
}

/// A first page a tick already asked for, with the `ETag` it sent.
pub(crate) type Asked = (Option<String>, Result<Fetched, Failed>);

/// Lists the organization page by page into `cache` (the first page's answer is `asked` when
/// the tick already has it). A failure leaves the previous listing in place.
pub(crate) fn list(
    out: &Output,
    config: &Config,
    forge_name: &str,
    discover: &Discover,
    cache: &mut Discovered,
    mode: Mode,
    mut asked: Option<Asked>,
) -> Listed {
    let forge = &config.forges[forge_name];
    let now = crate::clock::now().as_second();
    let (mut requests, mut not_modified, mut refused) = (0, 0, Vec::new());
    let mut first = None;
    if cache.throttled_until.is_some_and(|t| t > now) {
        out.detail(format!("forge `{forge_name}`: discovery waits for the rate limit; known projects are polled"));
        return Listed::default();
    }
    if cache.over_bound_until.is_some_and(|t| t > now) {
        out.detail(format!("forge `{forge_name}`: the last listing was over the bound; known projects are polled"));
        return Listed::default();
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
            return Listed::default();
        }
    };
    let since = match &mode {
        Mode::Whole => None,
        Mode::Since(newest) => Some(newest.as_str()),
    };
    let mut pages = Vec::new();
    let mut repos = BTreeMap::new();
    let (mut stopped, mut stray) = (false, false);
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
        let mut etag =
            known.filter(|p| p.repos.iter().all(|r| cache.repo.contains_key(r))).and_then(|p| p.etag.clone());
        requests += 1;
        let room = MAX_REPOS - repos.len();
        let answer = match asked.take() {
            Some((sent, answer)) => {
                etag = sent;
                answer
            }
            None => fetch_page(forge, discover, &token, &current, etag.as_deref(), now, room),
        };
        let is_first = pages.is_empty();
        let mut older = false;
        let fetched = match answer {
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
                let mut listed = BTreeMap::new();
                for name in &page.repos {
                    if let Some(repo) = cache.repo.get(name) {
                        bytes += entry_bytes(name, repo);
                        older |= since.is_some_and(|newest| repo.marker.as_str() < newest);
                        if is_first && page.repos.len() <= MAX_FIRST_PAGE {
                            listed.insert(name.clone(), as_listed(repo));
                        }
                        repos.insert(name.clone(), repo.clone());
                    }
                }
                if is_first {
                    first = Some((etag.clone().filter(|_| page.repos.len() <= MAX_FIRST_PAGE), listed));
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
                if is_first {
                    let small = listed.repos.len() <= MAX_FIRST_PAGE;
                    let entries = listed.repos.iter().filter(|_| small).map(|(n, r)| (n.clone(), r.clone()));
                    first = Some((etag.clone().filter(|_| small), entries.collect()));
                }
                let mut names = Vec::new();
                for (name, mut repo) in listed.repos {
                    bytes += entry_bytes(&name, &repo);
                    if since.is_some_and(|newest| repo.marker.as_str() < newest) {
                        // Listed among the old but unknown: it came without a push (moved in,
                        // or the forge's listing changed), which only the whole listing shows.
                        match cache.repo.contains_key(&name) {
                            true => older = true,
                            false => stray = true,
                        }
                    }
                    if let Some(old) = cache.repo.get(&name) {
                        repo.probed = old.probed.clone();
                        repo.commit = old.commit.clone();
                        repo.carries = old.carries.clone();
                        // A failed probe waits only while the repository has not moved since.
                        if old.marker == repo.marker {
                            repo.probe_failed_at = old.probe_failed_at;
                        }
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
        // Listed newest first: past a repository pushed before the newest push known, every
        // other one is as the cache has it.
        if older && !stray {
            url = None;
            stopped = true;
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
    // What moved, merged into the listing the cache has, within the same bounds.
    if stopped && failure.is_none() && over.is_none() {
        let mut merged = cache.repo.clone();
        merged.extend(repos);
        let bytes: usize = merged.iter().map(|(n, r)| entry_bytes(n, r)).sum();
        if merged.len() > MAX_REPOS || bytes > MAX_LISTING_BYTES {
            // Over the bound with what the cache still holds, which may since have been
            // removed: only the whole listing can say.
            let whole = list(out, config, forge_name, discover, cache, Mode::Whole, None);
            return Listed {
                requests: requests + whole.requests,
                not_modified: not_modified + whole.not_modified,
                ..whole
            };
        } else {
            repos = merged;
            let mut known = std::mem::take(&mut cache.pages);
            for page in pages.drain(..) {
                match known.iter_mut().find(|p| p.url == page.url) {
                    Some(old) => *old = page,
                    None => known.push(page),
                }
            }
            pages = known;
        }
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
            return Listed { requests, not_modified, refused, whole: !stopped, first };
        }
    }
    Listed { requests, not_modified, refused, whole: false, first: None }
}

/// A listed repository without what probing added: what the first page is compared on.
pub(crate) fn as_listed(repo: &Repo) -> Repo {
    Repo { probed: None, commit: None, carries: None, probe_failed_at: None, ..repo.clone() }
}

/// Forges with a `discover` table, by name.
pub(crate) fn discovering(config: &Config) -> Vec<String> {
    config.forges.iter().filter(|(_, f)| f.discover.is_some()).map(|(n, _)| n.clone()).collect()
}
