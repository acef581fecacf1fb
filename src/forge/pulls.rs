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
//! 65,536 characters at GitHub and a million at GitLab, so a few long ones make a page of many
//! MiB); a pull request longer than [`MAX_PULL_BYTES`], or not as documented, is left without
//! an author and the others keep theirs, and a login is used only when it is 1 to 64 letters,
//! digits, `.`, `_` or `-`.

use std::collections::BTreeMap;

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

/// The author of each open pull request of `repo`, by number.
pub(crate) fn authors(forge: &Forge, token: &Secret, repo: &str) -> Result<BTreeMap<u64, String>, String> {
    let (auth_name, auth_value) = super::auth_header(forge.kind, token);
    let mut headers = vec![format!("{auth_name}: {auth_value}")];
    match forge.kind {
        ForgeKind::Github => {
            headers.push("Accept: application/vnd.github+json".into());
            headers.push("X-GitHub-Api-Version: 2022-11-28".into());
        }
        _ => headers.push("Accept: application/json".into()),
    }
    let mut found = BTreeMap::new();
    let mut url = Some(first_page(forge, repo));
    let mut pages = 0;
    while let Some(current) = url.take() {
        if pages == MAX_PAGES {
            break;
        }
        pages += 1;
        let mut elements = Elements::new(MAX_PULL_BYTES);
        let mut read = 0;
        let mut keep = |bytes: &[u8]| {
            let Ok(pull) = serde_json::from_slice::<Pull>(bytes) else { return };
            let number = if forge.kind == ForgeKind::Gitlab { pull.iid } else { pull.number };
            let who = if forge.kind == ForgeKind::Gitlab { pull.author } else { pull.user };
            let login = who.and_then(|l| if forge.kind == ForgeKind::Gitlab { l.username } else { l.login });
            if let (Some(number), Some(login)) = (number, login.filter(|l| valid_login(l)))
                && found.len() < MAX_AUTHORS
            {
                found.insert(number, login);
            }
        };
        let (code, response_headers) = super::discover::get_into(&current, &headers, &mut |data: &[u8]| {
            read += data.len();
            if read > MAX_PAGE_BYTES {
                return Err(format!("a pull-request listing page is over {} MiB", MAX_PAGE_BYTES >> 20));
            }
            elements.feed(data, &mut |element| {
                if let Element::Whole(bytes) = element {
                    keep(bytes);
                }
            });
            Ok(())
        })?;
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
