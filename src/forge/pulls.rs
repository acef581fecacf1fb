//! Who opened each open pull request, from each forge's documented listing (git refs name the
//! pull request, never its author):
//!
//! - GitHub: `GET {api}/repos/{owner}/{repo}/pulls?state=open&per_page=100`
//!   (docs.github.com/en/rest/pulls/pulls#list-pull-requests): `number`, `user.login`.
//! - Gitea/Forgejo: `GET {api}/repos/{owner}/{repo}/pulls?state=open&limit=50&page=1`
//!   (gitea.com/api/swagger, `repoListPullRequests`): `number`, `user.login`.
//! - GitLab: `GET {api}/projects/{id}/merge_requests?state=opened&per_page=10&page=1`
//!   (docs.gitlab.com/api/merge_requests/#list-project-merge-requests): `iid`, `author.username`.
//!
//! Next pages as the listing of organizations follows them (`Link`, GitLab's `X-Next-Page`,
//! the API's own origin only). Untrusted: at most [`MAX_PAGES`] pages of at most
//! [`MAX_PAGE_BYTES`], read one pull request at a time (each listed with its description, up to
//! 65,536 characters at GitHub, a million at GitLab and without a documented bound at Gitea,
//! so a few long ones make a page of many MiB); a pull request longer than [`MAX_PULL_BYTES`],
//! or not as documented, is left without an author and the others keep theirs, and a login is
//! used only when it is 1 to 64 letters, digits, `.`, `_` or `-`. A page over its bound ends
//! the listing with what it named; a pull request pipe needs the author of and the listing did
//! not name is then asked for on its own (GitHub and Gitea `GET {api}/repos/{owner}/{repo}/pulls/N`,
//! GitLab `GET {api}/projects/{id}/merge_requests/IID`), read up to [`MAX_PULL_BYTES`], for as
//! long as [`ASKING`] allows, so long descriptions, or more pull requests than the pages hold,
//! cost their own pull requests their author and no one else's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::elements::{Element, Elements};
use crate::config::{Forge, ForgeKind};
use crate::secret::Secret;

/// Pages of open pull requests read at most (1,000 at GitHub's 100 a page, 100 merge requests
/// at GitLab's 10).
pub(crate) const MAX_PAGES: usize = 10;
/// Bytes of one page read at most (GitHub's 100 pull requests with the longest descriptions
/// and their repositories come to about 30 MiB).
const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of one pull request kept at most while it is read.
const MAX_PULL_BYTES: usize = 8 * 1024 * 1024;
/// Authors kept at most, whatever the pages hold.
const MAX_AUTHORS: usize = 100 * MAX_PAGES;
/// Time after which no more pull requests the listing did not name are asked for one at a
/// time, in one call (the last may take its own timeout; a forge that answers slowly leaves the
/// rest without an author). No bound on their number: 50 pull requests with work of one
/// contributor used one up for everyone listed after them; this one takes as many as the forge
/// answers in that time.
const ASKING: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Login {
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Deserialize)]
struct Pull {
    #[serde(default)]
    number: Option<u64>,
    #[serde(default)]
    iid: Option<u64>,
    #[serde(default)]
    user: Option<Login>,
    #[serde(default)]
    author: Option<Login>,
}

/// A login as pipe keeps it, or `None` when the forge's text is not one.
pub(crate) fn valid_login(login: &str) -> bool {
    !login.is_empty() && login.len() <= 64 && login.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The first page's URL for the repository `repo` (`owner/name`; GitLab: the project's path).
fn first_page(forge: &Forge, repo: &str) -> String {
    let api = forge.api_base();
    match forge.kind {
        ForgeKind::Github => format!("{api}/repos/{repo}/pulls?state=open&per_page=100"),
        ForgeKind::Gitea => format!("{api}/repos/{repo}/pulls?state=open&limit=50&page=1"),
        // A merge request's description runs to a million characters (4 MiB of UTF-8): ten a
        // page keep a page within MAX_PAGE_BYTES whatever they hold.
        ForgeKind::Gitlab => {
            format!("{api}/projects/{}/merge_requests?state=opened&per_page=10&page=1", super::encode_component(repo))
        }
    }
}

/// The author of each open pull request of `repo`, by number, for the pull requests in
/// `wanted` at least: the listing's, then, for a wanted one the listing did not name (a page cut
/// at [`MAX_PAGE_BYTES`], a description too long, a page past [`MAX_PAGES`]), its own answer,
/// for as many as [`ASKING`] allows.
pub(crate) fn authors(
    forge: &Forge,
    token: &Secret,
    repo: &str,
    wanted: &[u64],
) -> Result<BTreeMap<u64, String>, String> {
    let (auth_name, auth_value) = super::auth_header(forge.kind, token);
    let mut headers = vec![format!("{auth_name}: {auth_value}")];
    match forge.kind {
        ForgeKind::Github => {
            headers.push("Accept: application/vnd.github+json".into());
            headers.push("X-GitHub-Api-Version: 2022-11-28".into());
        }
        _ => headers.push("Accept: application/json".into()),
    }
    let mut found = list(forge, repo, &headers)?;
    let missing: Vec<u64> = wanted.iter().copied().filter(|n| !found.contains_key(n)).collect();
    let until = Instant::now() + ASKING;
    for number in missing {
        if Instant::now() >= until {
            break;
        }
        if let Some(login) = one(forge, repo, &headers, number) {
            found.insert(number, login);
        }
    }
    Ok(found)
}

/// The authors the listing names: a page over [`MAX_PAGE_BYTES`] ends it with what was read.
fn list(forge: &Forge, repo: &str, headers: &[String]) -> Result<BTreeMap<u64, String>, String> {
    let mut found = BTreeMap::new();
    let mut url = Some(first_page(forge, repo));
    let mut pages = 0;
    while let Some(current) = url.take() {
        if pages == MAX_PAGES {
            break;
        }
        pages += 1;
        let mut elements = Elements::new(MAX_PULL_BYTES);
        let (mut read, mut cut) = (0, false);
        let mut keep = |bytes: &[u8]| {
            if let Some((number, login)) = author(forge, bytes)
                && found.len() < MAX_AUTHORS
            {
                found.insert(number, login);
            }
        };
        let answer = super::discover::get_into(&current, headers, &mut |data: &[u8]| {
            read += data.len();
            if read > MAX_PAGE_BYTES {
                cut = true;
                return Err(format!("a pull-request listing page is over {} MiB", MAX_PAGE_BYTES >> 20));
            }
            elements.feed(data, &mut |element| {
                if let Element::Whole(bytes) = element {
                    keep(bytes);
                }
            });
            Ok(())
        });
        if cut {
            break;
        }
        let (code, response_headers) = answer?;
        if code != 200 {
            return Err(format!("the forge answered {code} to its pull-request listing"));
        }
        if !elements.complete() {
            return Err("the pull-request listing is not as documented: not a whole JSON array".into());
        }
        let header = |name: &str| response_headers.get(name).cloned();
        url = super::discover::next_page(forge, &current, &header("link"), &header("x-next-page"))?;
    }
    Ok(found)
}

/// The author of pull request `number`, from its own answer (`GET …/pulls/N`, GitLab's
/// `…/merge_requests/IID`), read up to [`MAX_PULL_BYTES`]; `None` when the forge does not name
/// one as documented.
fn one(forge: &Forge, repo: &str, headers: &[String], number: u64) -> Option<String> {
    let api = forge.api_base();
    let url = match forge.kind {
        ForgeKind::Gitlab => format!("{api}/projects/{}/merge_requests/{number}", super::encode_component(repo)),
        _ => format!("{api}/repos/{repo}/pulls/{number}"),
    };
    let mut body = Vec::new();
    let (code, _) = super::discover::get_into(&url, headers, &mut |data: &[u8]| {
        if body.len() + data.len() > MAX_PULL_BYTES {
            return Err("too long".into());
        }
        body.extend_from_slice(data);
        Ok(())
    })
    .ok()?;
    author(forge, &body).filter(|(n, _)| code == 200 && *n == number).map(|(_, login)| login)
}

/// A pull request's number and its author's login, as the forge documents them.
fn author(forge: &Forge, bytes: &[u8]) -> Option<(u64, String)> {
    let pull = serde_json::from_slice::<Pull>(bytes).ok()?;
    let number = if forge.kind == ForgeKind::Gitlab { pull.iid } else { pull.number };
    let who = if forge.kind == ForgeKind::Gitlab { pull.author } else { pull.user };
    let login = who.and_then(|l| if forge.kind == ForgeKind::Gitlab { l.username } else { l.login });
    Some((number?, login.filter(|l| valid_login(l))?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_logins_are_kept() {
        for good in ["alice", "bob-2", "a.b_c"] {
            assert!(super::valid_login(good), "{good}");
        }
        for bad in ["", "a b", "a/b", "ü", &"x".repeat(65), "a\n"] {
            assert!(!super::valid_login(bad), "{bad:?}");
        }
    }
}
