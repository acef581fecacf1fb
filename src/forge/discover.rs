//! Listing an organization's repositories through each forge's documented API:
//!
//! - GitHub: `GET {api}/orgs/{org}/repos?per_page=100&sort=pushed&direction=desc`
//!   (docs.github.com/en/rest/repos/repos#list-organization-repositories), next pages by the
//!   `Link` header.
//! - Gitea/Forgejo: `GET {api}/orgs/{org}/repos?limit=50&page=N` (gitea.com/api/swagger,
//!   `orgListRepos`), next pages by the `Link` header.
//! - GitLab: `GET {api}/groups/{id}/projects?per_page=100&order_by=last_activity_at&sort=desc&page=N`
//!   (docs.gitlab.com/api/groups/#list-projects), next pages by `Link` or `X-Next-Page`.
//!
//! GitHub and GitLab list the most recently pushed repositories first, so a push or a new
//! repository changes the first page and a tick can tell from that page alone that nothing
//! moved ([`newest_first`]). Gitea/Forgejo document no order for an organization's
//! repositories: every page is asked for on every tick.
//!
//! Every page is asked for with the `ETag` it last had (`If-None-Match`): an unchanged page is
//! a `304` with no body. The listing is untrusted: pages are capped in size and number, a next
//! page on another origin is refused (the token would go there), and each repository's name,
//! path, default branch and clone URL is checked before anything uses it; a repository that
//! fails is skipped with the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{CloneVia, Discover, Forge, ForgeKind, Origin, valid_repo_name};
use crate::secret::Secret;
use crate::state::Repo;

/// The largest listing page read.
pub(crate) const MAX_PAGE_BYTES: u64 = 8 * 1024 * 1024;
/// Pages followed at most (10,000 repositories at GitHub's 100 per page).
pub(crate) const MAX_PAGES: usize = 100;
/// Repositories kept from one organization's listing, whatever a page holds.
pub(crate) const MAX_REPOS: usize = 10_000;
/// Bytes of listing text (names, URLs, branches, markers) kept from one organization.
pub(crate) const MAX_LISTING_BYTES: usize = 8 * 1024 * 1024;
/// Reasons for refused entries kept from one listing (the rest are counted).
pub(crate) const MAX_REFUSED: usize = 100;
/// How long one page may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The first page's URL.
pub(crate) fn first_page(forge: &Forge, discover: &Discover) -> String {
    let api = forge.api_base();
    match forge.kind {
        ForgeKind::Github => format!("{api}/orgs/{}/repos?per_page=100&sort=pushed&direction=desc", discover.org),
        ForgeKind::Gitea => format!("{api}/orgs/{}/repos?limit=50&page=1", discover.org),
        ForgeKind::Gitlab => format!(
            "{api}/groups/{}/projects?per_page=100&order_by=last_activity_at&sort=desc&page=1",
            super::encode_path(&discover.org)
        ),
    }
}

/// Whether the forge's listing comes most recently pushed first (GitHub `sort=pushed`, GitLab
/// `order_by=last_activity_at`): then whatever a push or a new repository changes shows on the
/// first page. Gitea/Forgejo's `orgListRepos` takes no order.
pub(crate) fn newest_first(kind: ForgeKind) -> bool {
    matches!(kind, ForgeKind::Github | ForgeKind::Gitlab)
}

/// Entries of a first page a tick keeps to compare the next first page with: the documented
/// largest page. A forge that serves more a page is listed whole every tick.
pub(crate) const MAX_FIRST_PAGE: usize = 100;

/// One page's answer.
pub(crate) enum Answer {
    /// `304`: the page is as it was.
    Unchanged,
    /// `200`: the page's repositories, its `ETag` and the next page.
    Fresh { etag: Option<String>, next: Option<String>, page: Parsed },
}

/// A page and the rate limit it reported.
pub(crate) struct Fetched {
    pub answer: Answer,
    /// When the forge may be asked again, if its headers said to wait.
    pub defer: Option<i64>,
}

/// Why a page could not be read: the listing stops, the known projects stay.
pub(crate) struct Failed {
    pub why: String,
    /// The forge asked to wait until then (a rate limit).
    pub defer: Option<i64>,
}

/// Asks for one page, conditionally when an `ETag` is known; at most `room` repositories are
/// taken from it (see [`parse_page`]).
pub(crate) fn fetch_page(
    forge: &Forge,
    discover: &Discover,
    token: &Secret,
    url: &str,
    etag: Option<&str>,
    now: i64,
    room: usize,
) -> Result<Fetched, Failed> {
    let fail = |why: String| Failed { why, defer: None };
    let (auth_name, auth_value) = super::auth_header(forge.kind, token);
    let accept = match forge.kind {
        ForgeKind::Github => "application/vnd.github+json",
        _ => "application/json",
    };
    let mut headers = vec![format!("{auth_name}: {auth_value}"), format!("Accept: {accept}")];
    if forge.kind == ForgeKind::Github {
        headers.push("X-GitHub-Api-Version: 2022-11-28".into());
    }
    if let Some(etag) = etag {
        headers.push(format!("If-None-Match: {etag}"));
    }
    let (code, response_headers, body) = get(url, &headers).map_err(fail)?;
    let header = |name: &str| response_headers.get(name).cloned();
    let defer = super::defer_until(code, &header, now);
    match code {
        304 => return Ok(Fetched { answer: Answer::Unchanged, defer }),
        200 => {}
        429 => return Err(Failed { why: format!("rate limited ({code})"), defer }),
        403 if defer.is_some() => return Err(Failed { why: format!("rate limited ({code})"), defer }),
        401 | 403 | 404 => {
            return Err(Failed {
                why: format!("the forge answered {code}: check the token and `discover.org`"),
                defer: None,
            });
        }
        300..=399 => {
            return Err(Failed {
                why: format!(
                    "the forge answered {code}, a redirect: not followed (the token would go with it); check `api`"
                ),
                defer: None,
            });
        }
        _ => return Err(Failed { why: format!("the forge answered {code}"), defer }),
    }
    let page = parse_page(forge, discover, &body, room).map_err(fail)?;
    drop(body);
    let etag = header("etag").filter(|e| e.len() <= 256 && e.bytes().all(|b| (0x21..0x7f).contains(&b)));
    let next = next_page(forge, url, &header("link"), &header("x-next-page")).map_err(fail)?;
    Ok(Fetched { answer: Answer::Fresh { etag, next, page }, defer })
}

/// An answer: status, headers by lowercased name, body.
pub(super) type Response = (u16, BTreeMap<String, String>, Vec<u8>);

/// One GET through libcurl on this thread's reused handle (keep-alive across a listing's
/// pages): the status, the last response's headers (names lowercased), and the body, read up
/// to [`MAX_PAGE_BYTES`]. libcurl rather than the process's reqwest client because a reqwest
/// client loads and parses the system's TLS roots when it is built, even for `http://`, twice
/// over with native-tls: ~45 ms of CPU on every tick; libcurl loads them only for an `https://`
/// connection, once per handle.
pub(super) fn get(url: &str, headers: &[String]) -> Result<Response, String> {
    let mut body = Vec::new();
    let (code, found) = get_into(url, headers, &mut |data: &[u8]| {
        if body.len() + data.len() > MAX_PAGE_BYTES as usize {
            return Err(format!("a listing page is over {} MiB", MAX_PAGE_BYTES >> 20));
        }
        body.extend_from_slice(data);
        Ok(())
    })?;
    Ok((code, found, body))
}

/// [`get`], its body handed to `sink` as it arrives: an error from `sink` ends the transfer
/// and is the answer.
pub(super) fn get_into(
    url: &str,
    headers: &[String],
    sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<(u16, BTreeMap<String, String>), String> {
    thread_local! {
        static HANDLE: std::cell::RefCell<Option<curl::easy::Easy>> = const { std::cell::RefCell::new(None) };
    }
    let cause = |e: curl::Error| format!("cannot reach the forge: {}", e.description());
    HANDLE.with_borrow_mut(|handle| {
        let easy = handle.get_or_insert_with(curl::easy::Easy::new);
        easy.reset();
        easy.url(url).map_err(cause)?;
        easy.get(true).map_err(cause)?;
        crate::http::curl_refusing_redirects(easy).map_err(cause)?;
        easy.connect_timeout(TIMEOUT).map_err(cause)?;
        easy.timeout(TIMEOUT).map_err(cause)?;
        easy.useragent(concat!("pipe/", env!("CARGO_PKG_VERSION"))).map_err(cause)?;
        let mut list = curl::easy::List::new();
        for h in headers {
            list.append(h).map_err(cause)?;
        }
        easy.http_headers(list).map_err(cause)?;
        let mut found = BTreeMap::new();
        let mut refused = None;
        {
            let mut transfer = easy.transfer();
            transfer
                .header_function(|line| {
                    let line = String::from_utf8_lossy(line);
                    if line.starts_with("HTTP/") {
                        found.clear();
                    } else if let Some((name, value)) = line.split_once(':')
                        && found.len() < 200
                    {
                        found.insert(name.trim().to_ascii_lowercase(), value.trim().chars().take(4096).collect());
                    }
                    true
                })
                .map_err(cause)?;
            transfer
                .write_function(|data| match sink(data) {
                    Ok(()) => Ok(data.len()),
                    Err(why) => {
                        refused = Some(why);
                        Ok(0)
                    }
                })
                .map_err(cause)?;
            let performed = transfer.perform();
            drop(transfer);
            if let Some(why) = refused {
                return Err(why);
            }
            performed.map_err(cause)?;
        }
        let code = easy.response_code().map_err(cause)?;
        Ok((u16::try_from(code).unwrap_or(0), found))
    })
}

/// The next page: `Link: <URL>; rel="next"` (every forge), else GitLab's `X-Next-Page`. A URL
/// on another origin than the API's is refused: the token goes with it.
pub(crate) fn next_page(
    forge: &Forge,
    current: &str,
    link: &Option<String>,
    next_number: &Option<String>,
) -> Result<Option<String>, String> {
    let from_link = link.as_deref().and_then(|link| {
        link.split(',').find_map(|part| {
            let (url, params) = part.split_once(';')?;
            let next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            next.then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_string())
        })
    });
    let next = match (from_link, next_number.as_deref().map(str::trim)) {
        (Some(url), _) => url,
        (None, Some(n))
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && forge.kind == ForgeKind::Gitlab =>
        {
            let base = current.split_once("&page=").map_or(current, |(b, _)| b);
            format!("{base}&page={n}")
        }
        _ => return Ok(None),
    };
    if next.len() > 2048 || next.bytes().any(|b| b.is_ascii_control() || b == b' ') || origin(&next) != origin(current)
    {
        return Err(format!("the forge named a next page outside its API (`{}`); listing stopped", escape(&next)));
    }
    Ok(Some(next))
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..scheme.len() + 3 + end])
}

/// Untrusted text shown to people: control characters escaped, at most 200 characters.
fn escape(text: &str) -> String {
    text.chars().take(200).flat_map(char::escape_debug).collect()
}

#[derive(Deserialize)]
struct GithubRepo {
    name: String,
    full_name: String,
    clone_url: Option<String>,
    ssh_url: Option<String>,
    default_branch: Option<String>,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    fork: bool,
    #[serde(default)]
    pushed_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Deserialize)]
struct GitlabProject {
    path: String,
    path_with_namespace: String,
    http_url_to_repo: Option<String>,
    ssh_url_to_repo: Option<String>,
    default_branch: Option<String>,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    forked_from_project: Option<serde_json::Value>,
    #[serde(default)]
    last_activity_at: Option<String>,
}

/// A page's repositories by name, each checked; why entries were refused (at most
/// [`MAX_REFUSED`] reasons) and how many were; and whether the page held more than the room
/// left (the listing is then over its bound).
#[derive(Default)]
pub(crate) struct Parsed {
    pub repos: Vec<(String, Repo)>,
    pub skipped: Vec<String>,
    pub refused: usize,
    pub over: bool,
}

/// A page's repositories, each checked as it is read, one entry in memory at a time (never
/// the whole page as JSON values); reading stops at the entry beyond `room`.
pub(crate) fn parse_page(forge: &Forge, discover: &Discover, body: &[u8], room: usize) -> Result<Parsed, String> {
    use serde::de::{Deserializer as _, Error as _, SeqAccess, Visitor};
    struct Entries<'a> {
        forge: &'a Forge,
        discover: &'a Discover,
        room: usize,
        page: Parsed,
    }
    impl<'de> Visitor<'de> for &mut Entries<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of repositories")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(item) = seq.next_element::<serde_json::Value>()? {
                match entry(self.forge, self.discover, item) {
                    Ok(repo) if self.page.repos.len() == self.room => {
                        drop(repo);
                        self.page.over = true;
                        return Err(A::Error::custom("over the bound"));
                    }
                    Ok(repo) => self.page.repos.push(repo),
                    Err(why) => {
                        self.page.refused += 1;
                        if self.page.skipped.len() < MAX_REFUSED {
                            self.page.skipped.push(why);
                        }
                    }
                }
            }
            Ok(())
        }
    }
    let mut entries = Entries { forge, discover, room, page: Parsed::default() };
    let mut reader = serde_json::Deserializer::from_slice(body);
    match (&mut reader).deserialize_seq(&mut entries).and_then(|()| reader.end()) {
        Ok(()) => Ok(entries.page),
        Err(_) if entries.page.over => Ok(entries.page),
        Err(e) => Err(format!("the listing is not a JSON array of repositories: {e}")),
    }
}

/// One entry of a page, checked, or why it is refused.
fn entry(forge: &Forge, discover: &Discover, item: serde_json::Value) -> Result<(String, Repo), String> {
    let listed = match forge.kind {
        ForgeKind::Github | ForgeKind::Gitea => serde_json::from_value::<GithubRepo>(item).map(|r| {
            let url = match discover.clone {
                CloneVia::Https => r.clone_url,
                CloneVia::Ssh => r.ssh_url,
            };
            let marker = r.pushed_at.or(r.updated_at).unwrap_or_default();
            (r.name, r.full_name, url, r.default_branch, r.archived || r.disabled, r.fork, marker)
        }),
        ForgeKind::Gitlab => serde_json::from_value::<GitlabProject>(item).map(|p| {
            let url = match discover.clone {
                CloneVia::Https => p.http_url_to_repo,
                CloneVia::Ssh => p.ssh_url_to_repo,
            };
            let fork = p.forked_from_project.is_some_and(|f| !f.is_null());
            (
                p.path,
                p.path_with_namespace,
                url,
                p.default_branch,
                p.archived,
                fork,
                p.last_activity_at.unwrap_or_default(),
            )
        }),
    };
    let (name, full_name, url, branch, archived, fork, marker) =
        listed.map_err(|e| format!("an entry the listing does not describe as documented: {e}"))?;
    check(forge, discover, &name, &full_name, url.as_deref(), branch.as_deref())
        .map_err(|why| format!("`{}`: {why}", escape(&name)))?;
    let repo = Repo {
        full_name,
        clone_url: url.unwrap_or_default(),
        default_branch: branch.unwrap_or_default(),
        archived,
        fork,
        marker: marker.chars().take(64).collect(),
        ..Repo::default()
    };
    Ok((name, repo))
}

/// The bytes of listing text a repository keeps (for [`MAX_LISTING_BYTES`]).
pub(crate) fn entry_bytes(name: &str, repo: &Repo) -> usize {
    name.len() + repo.full_name.len() + repo.clone_url.len() + repo.default_branch.len() + repo.marker.len()
}

/// The checks a listed repository passes before pipe uses any of it.
fn check(
    forge: &Forge,
    discover: &Discover,
    name: &str,
    full_name: &str,
    url: Option<&str>,
    branch: Option<&str>,
) -> Result<(), String> {
    if !valid_repo_name(name) {
        return Err("not a repository name pipe accepts (letters, digits, `.`, `_`, `-`)".into());
    }
    let parts: Vec<&str> = full_name.split('/').collect();
    let owner_ok = parts.len() >= 2
        && parts.last() == Some(&name)
        && parts.iter().all(|p| valid_repo_name(p))
        && (forge.kind == ForgeKind::Gitlab || parts.len() == 2);
    if !owner_ok || full_name.len() > 512 {
        return Err(format!("its full name `{}` is not `owner/{name}`", escape(full_name)));
    }
    let Some(branch) = branch.filter(|b| !b.is_empty()) else {
        return Err("it has no default branch (an empty repository)".into());
    };
    if branch.len() > 255 || !crate::refs::valid_name(&format!("refs/heads/{branch}")) {
        return Err(format!("its default branch `{}` is not a valid branch name", escape(branch)));
    }
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return Err("the listing gives no clone URL".into());
    };
    clone_url_ok(forge, discover, url)
}

/// A clone URL from the listing is used only on the forge's git origin (scheme, host and
/// port; [`git_origin`]): a listing that points elsewhere, another port on the forge's host
/// included, would be handed the project's git credentials.
fn clone_url_ok(forge: &Forge, discover: &Discover, url: &str) -> Result<(), String> {
    if url.len() > 1024 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("its clone URL is not a plain URL".into());
    }
    if discover.clone == CloneVia::Https
        && (!(url.starts_with("https://") || url.starts_with("http://")) || url.contains('@'))
    {
        return Err(format!("its clone URL `{}` is not an http(s) URL without credentials", escape(url)));
    }
    let Some(want) = git_origin(forge, discover) else {
        return Err(format!("the forge's git origin is not known from `{}`", escape(forge.api_base())));
    };
    if Origin::of(url).as_ref() != Some(&want) {
        return Err(format!("its clone URL `{}` is not on the forge's git origin `{want}`", escape(url)));
    }
    Ok(())
}

/// Where the forge's clone URLs of the kind discovery polls must be: `[forge.NAME.discover]
/// git`, else the API's origin (`https://github.com` for `api.github.com`); for ssh, that
/// origin's host on `ssh_port`.
pub(crate) fn git_origin(forge: &Forge, discover: &Discover) -> Option<Origin> {
    let mut origin = Origin::of(discover.git.as_deref().unwrap_or(forge.api_base()))?;
    if discover.git.is_none() && origin.host == "api.github.com" {
        origin.host = "github.com".into();
    }
    if discover.clone == CloneVia::Ssh {
        origin = Origin { scheme: "ssh".into(), port: discover.ssh_port, ..origin };
    }
    Some(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forge(kind: ForgeKind, api: &str) -> Forge {
        Forge {
            kind,
            api: Some(api.into()),
            token_env: Some("T".into()),
            token_file: None,
            target_url: None,
            discover: None,
        }
    }

    fn discover() -> Discover {
        Discover {
            org: "example".into(),
            include: vec!["*".into()],
            exclude: vec![],
            forks: false,
            archived: false,
            clone: CloneVia::Https,
            git: None,
            ssh_port: 22,
            webhook_secret_env: None,
            webhook_secret_file: None,
            relist: std::time::Duration::from_secs(3600),
            template: toml::Table::new(),
            included: Default::default(),
            excluded: Default::default(),
        }
    }

    #[test]
    fn the_next_page_comes_from_the_link_header_on_the_same_origin_only() {
        let gh = forge(ForgeKind::Github, "https://api.github.com");
        let current = "https://api.github.com/orgs/example/repos?per_page=100";
        let link = Some(
            r#"<https://api.github.com/organizations/1/repos?per_page=100&page=2>; rel="next", <https://api.github.com/organizations/1/repos?per_page=100&page=5>; rel="last""#.to_string(),
        );
        assert_eq!(
            next_page(&gh, current, &link, &None).unwrap().as_deref(),
            Some("https://api.github.com/organizations/1/repos?per_page=100&page=2")
        );
        let last_only = Some(r#"<https://api.github.com/x?page=1>; rel="prev""#.to_string());
        assert_eq!(next_page(&gh, current, &last_only, &None).unwrap(), None);
        let elsewhere = Some(r#"<https://evil.example/steal?page=2>; rel="next""#.to_string());
        assert!(next_page(&gh, current, &elsewhere, &None).unwrap_err().contains("outside its API"));
        let gl = forge(ForgeKind::Gitlab, "https://gl.example/api/v4");
        let current = "https://gl.example/api/v4/groups/g/projects?per_page=100&page=1";
        assert_eq!(
            next_page(&gl, current, &None, &Some("2".into())).unwrap().as_deref(),
            Some("https://gl.example/api/v4/groups/g/projects?per_page=100&page=2")
        );
        assert_eq!(next_page(&gl, current, &None, &Some(String::new())).unwrap(), None);
    }

    #[test]
    fn a_page_gives_at_most_its_room_and_says_when_it_held_more() {
        let gh = forge(ForgeKind::Github, "https://api.github.com");
        let entry = |i: usize| {
            serde_json::json!({"name": format!("r{i}"), "full_name": format!("example/r{i}"),
                "clone_url": format!("https://github.com/example/r{i}.git"), "default_branch": "main"})
        };
        let body =
            serde_json::Value::Array((0..50).map(entry).chain((0..300).map(|_| serde_json::json!({}))).collect());
        let page = parse_page(&gh, &discover(), body.to_string().as_bytes(), 10).unwrap();
        assert!(page.over);
        assert_eq!(page.repos.len(), 10);
        let page = parse_page(&gh, &discover(), body.to_string().as_bytes(), 50).unwrap();
        assert!(!page.over);
        assert_eq!((page.repos.len(), page.refused, page.skipped.len()), (50, 300, MAX_REFUSED));
        assert!(parse_page(&gh, &discover(), b"[{}, ", 50).is_err());
    }

    #[test]
    fn listed_repositories_are_checked_before_use() {
        let gh = forge(ForgeKind::Github, "https://api.github.com");
        let body = serde_json::json!([
            {"name": "app", "full_name": "example/app", "clone_url": "https://github.com/example/app.git",
             "default_branch": "main", "archived": false, "fork": false, "pushed_at": "2026-01-01T00:00:00Z"},
            {"name": "../x", "full_name": "example/../x", "clone_url": "https://github.com/example/x.git", "default_branch": "main"},
            {"name": "steal", "full_name": "example/steal", "clone_url": "https://evil.example/steal.git", "default_branch": "main"},
            {"name": "cred", "full_name": "example/cred", "clone_url": "https://u:p@github.com/example/cred.git", "default_branch": "main"},
            {"name": "branch", "full_name": "example/branch", "clone_url": "https://github.com/example/branch.git", "default_branch": "-x..y"},
            {"name": "empty", "full_name": "example/empty", "clone_url": "https://github.com/example/empty.git", "default_branch": null},
            {"name": "other", "full_name": "someone/else", "clone_url": "https://github.com/example/other.git", "default_branch": "main"},
            "not an object"
        ]);
        let Parsed { repos, skipped, .. } = parse_page(&gh, &discover(), body.to_string().as_bytes(), 100).unwrap();
        assert_eq!(repos.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["app"]);
        assert_eq!(repos[0].1.marker, "2026-01-01T00:00:00Z");
        assert_eq!(skipped.len(), 7, "{skipped:#?}");
        assert!(skipped.iter().any(|s| s.contains("evil.example")));
        assert!(parse_page(&gh, &discover(), b"{\"message\": \"x\"}", 100).is_err());
    }

    #[test]
    fn a_clone_url_must_be_on_the_forges_git_origin_scheme_host_and_port() {
        let gh = forge(ForgeKind::Github, "https://api.github.com");
        let https = discover();
        for ok in ["https://github.com/example/a.git", "https://GITHUB.com:443/example/a.git"] {
            assert!(clone_url_ok(&gh, &https, ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://github.com:8443/example/a.git",
            "http://github.com/example/a.git",
            "https://api.github.com/example/a.git",
            "https://evil.example/a.git",
        ] {
            assert!(clone_url_ok(&gh, &https, bad).unwrap_err().contains("git origin"), "{bad}");
        }
        let ssh = Discover { clone: CloneVia::Ssh, ..discover() };
        assert!(clone_url_ok(&gh, &ssh, "git@github.com:example/a.git").is_ok());
        assert!(clone_url_ok(&gh, &ssh, "ssh://git@github.com:22/example/a.git").is_ok());
        for bad in ["ssh://git@github.com:2222/example/a.git", "git@evil.example:a.git", "https://github.com/a.git"] {
            assert!(clone_url_ok(&gh, &ssh, bad).is_err(), "{bad}");
        }
        let ssh_2222 = Discover { ssh_port: 2222, ..ssh };
        assert!(clone_url_ok(&gh, &ssh_2222, "ssh://git@github.com:2222/example/a.git").is_ok());
        assert!(clone_url_ok(&gh, &ssh_2222, "git@github.com:example/a.git").is_err());
        let local = forge(ForgeKind::Gitea, "http://127.0.0.1:3000/api/v1");
        assert!(clone_url_ok(&local, &discover(), "http://127.0.0.1:3000/o/a.git").is_ok());
        assert!(clone_url_ok(&local, &discover(), "http://127.0.0.1:3001/o/a.git").is_err());
        let git = Discover { git: Some("http://127.0.0.1:3001".into()), ..discover() };
        assert!(clone_url_ok(&local, &git, "http://127.0.0.1:3001/o/a.git").is_ok());
        assert!(clone_url_ok(&local, &git, "http://127.0.0.1:3000/o/a.git").is_err());
    }

    #[test]
    fn gitlab_projects_name_their_forks_by_their_origin() {
        let gl = forge(ForgeKind::Gitlab, "https://gl.example/api/v4");
        let body = serde_json::json!([
            {"path": "svc", "path_with_namespace": "grp/sub/svc", "http_url_to_repo": "https://gl.example/grp/sub/svc.git",
             "default_branch": "main", "archived": true, "last_activity_at": "t1"},
            {"path": "fork", "path_with_namespace": "grp/fork", "http_url_to_repo": "https://gl.example/grp/fork.git",
             "default_branch": "main", "forked_from_project": {"id": 3}}
        ]);
        let Parsed { repos, skipped, .. } = parse_page(&gl, &discover(), body.to_string().as_bytes(), 100).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert!(repos[0].1.archived && !repos[0].1.fork);
        assert!(repos[1].1.fork);
        assert_eq!(
            first_page(&gl, &Discover { org: "grp/sub".into(), ..discover() }),
            "https://gl.example/api/v4/groups/grp%2Fsub/projects?per_page=100&order_by=last_activity_at&sort=desc&page=1"
        );
    }
}
