//! Listing a remote's refs without downloading objects, with bounded auth, timeouts and sizes;
//! fetching one ref and checking it out with git2. Local repositories are read directly, HTTPS
//! remotes get one smart-HTTP request on a shared client ([`http`]), plain HTTP remotes one on a
//! connection of their own ([`plain`]), SSH remotes a channel on a reused session per host
//! ([`ssh`]), `git://` one connection to the daemon; all of them read the advertisement through
//! the same capped reader ([`wire`]).

mod auth;
mod http;
mod libgit;
mod plain;
mod probe;
mod slots;
mod ssh;
pub(crate) mod submodules;
mod timeouts;
mod wire;

use std::cell::Cell;
use std::io::Write as _;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

pub(crate) use auth::{Auth, redact_url};
use auth::{credentials, with_credentials};
use libgit::{clean_message, explain, local_path, use_curl_for_http, with_hostkey_hint};
pub(crate) use probe::{Probed, root_files};
use slots::host_slot;
use timeouts::apply_timeouts;
pub(crate) use timeouts::set_timeouts;

use anyhow::{Context as _, anyhow};
use git2::{Direction, Remote, RemoteCallbacks, Repository};

/// Lists the remote's refs (`git ls-remote`), giving up after `deadline` even if the transport
/// ignores its own timeouts: the listing runs on a thread that is abandoned when it is late.
/// The transports pipe speaks itself (`git://`, plain `http://`) bound every connect, read and
/// name lookup by the deadline, so they run on the caller's thread (a local repository keeps the
/// watchdog: a hung file system has no deadline of its own).
pub(crate) fn list_remote(url: &str, auth: &Auth, deadline: Duration) -> anyhow::Result<Vec<(String, String)>> {
    if url.starts_with("http://") || url.starts_with("git://") {
        return list_now(url, auth, deadline);
    }
    let (tx, rx) = mpsc::channel();
    let owned_url = url.to_string();
    let auth = auth.clone();
    std::thread::Builder::new()
        .name("pipe-ls-remote".into())
        .spawn(move || {
            let _ = tx.send(list_now(&owned_url, &auth, deadline));
        })
        .context("failed to start a polling thread")?;
    match rx.recv_timeout(deadline) {
        Ok(result) => result,
        Err(_) => Err(anyhow!("`{}` did not answer within {}s", redact_url(url), deadline.as_secs())),
    }
}

fn list_now(url: &str, auth: &Auth, timeout: Duration) -> anyhow::Result<Vec<(String, String)>> {
    if let Some(path) = local_path(url) {
        return list_local(url, path);
    }
    if url.starts_with("http://") {
        return plain::list(url, auth, timeout);
    }
    if url.starts_with("https://") {
        return http::list(url, auth, timeout);
    }
    if let Some(rest) = url.strip_prefix("git://") {
        return list_daemon(url, rest, timeout);
    }
    if is_ssh(url) {
        return ssh::list(url, auth, timeout).map_err(|e| anyhow!("{}", with_hostkey_hint(format!("{e:#}"), url)));
    }
    apply_timeouts();
    let shown = redact_url(url);
    let mut remote = Remote::create_detached(url).with_context(|| format!("invalid remote `{shown}`"))?;
    let attempts = Cell::new(0u32);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(|_url, username_from_url, allowed| credentials(auth, &attempts, username_from_url, allowed));
    let connection = remote
        .connect_auth(Direction::Fetch, Some(callbacks), None)
        .map_err(|e| anyhow!("cannot connect to `{shown}`: {}", explain(&e, url)))?;
    let heads = connection.list().map_err(|e| anyhow!("cannot list refs of `{shown}`: {}", clean_message(&e)))?;
    Ok(heads.iter().map(|h| (h.name().to_string(), h.oid().to_string())).collect())
}

/// `ssh://…`, `git+ssh://…`, `ssh+git://…` or scp-like `[user@]host:path`.
fn is_ssh(url: &str) -> bool {
    if ["ssh://", "git+ssh://", "ssh+git://"].iter().any(|p| url.starts_with(p)) {
        return true;
    }
    !url.contains("://") && url.find(':').is_some_and(|colon| !url[..colon].contains('/'))
}

/// Lists a `git daemon` repository: one TCP connection, the `git-upload-pack` request line,
/// the advertisement (capped), then a flush so the daemon's upload-pack exits cleanly.
fn list_daemon(url: &str, rest: &str, timeout: Duration) -> anyhow::Result<Vec<(String, String)>> {
    let shown = redact_url(url);
    let deadline = std::time::Instant::now() + timeout;
    let (authority, path) = rest.split_at(rest.find('/').ok_or_else(|| anyhow!("invalid remote `{shown}`"))?);
    let has_port = authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    let with_port = if has_port { authority.to_string() } else { format!("{authority}:9418") };
    let _slot = host_slot(&with_port);
    let stream = plain::connect(&with_port, deadline).map_err(|e| anyhow!("cannot connect to `{shown}`: {e}"))?;
    let left = deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(left)).ok();
    let _ = stream.set_nodelay(true);
    let request = wire::pkt(format!("git-upload-pack {path}\0host={authority}\0").as_bytes());
    (&stream).write_all(&request).map_err(|e| anyhow!("cannot talk to `{shown}`: {e}"))?;
    // Every read waits at most what is left of the deadline: a trickling daemon cannot hold it.
    let refs = wire::read_advertisement(plain::Deadline { stream: &stream, deadline })
        .map_err(|e| anyhow!("cannot list refs of `{shown}`: {e:#}"))?;
    // The flush tells upload-pack we want nothing, and it exits; like `git ls-remote`, the
    // connection is closed without waiting for the daemon's end (one wake-up per repository
    // less). Protocol v0 sends nothing after the advertisement, so no unread byte resets it.
    let _ = (&stream).write_all(b"0000");
    Ok(refs)
}

/// Reads a local repository's refs directly. libgit2's local transport looks every ref up
/// again (a `stat` per loose ref, a packed-refs search per ref); iterating the ref database
/// once gives the same list several times faster on repos with thousands of refs.
fn list_local(url: &str, path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let repo = Repository::open(path).map_err(|e| anyhow!("cannot open `{url}`: {}", clean_message(&e)))?;
    let refs = repo.references().map_err(|e| anyhow!("cannot list refs of `{url}`: {}", clean_message(&e)))?;
    let mut out = Vec::new();
    for reference in refs {
        let reference = reference.map_err(|e| anyhow!("cannot list refs of `{url}`: {}", clean_message(&e)))?;
        if let (Ok(name), Some(oid)) = (reference.name(), reference.target()) {
            out.push((name.to_string(), oid.to_string()));
        }
    }
    Ok(out)
}

/// Fetches one ref (a single refspec, no tags) into the project's cache repository at `dir`
/// and checks out `commit` (or the fetched head) clean: forced, untracked and ignored files
/// removed, submodules updated. Returns the checked-out commit.
pub(crate) fn checkout(
    url: &str,
    auth: &Auth,
    refname: &str,
    commit: Option<&str>,
    dir: &Path,
    deadline: std::time::Instant,
) -> anyhow::Result<Commit> {
    let shown = redact_url(url);
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create workspace `{}`", dir.display()))?;
    let repo = match Repository::open(dir) {
        Ok(repo) => repo,
        Err(_) => {
            Repository::init(dir).with_context(|| format!("failed to create repository in `{}`", dir.display()))?
        }
    };
    let fetched = "refs/pipe/fetched";
    let refspec = format!("+{refname}:{fetched}");
    let fetch_url = if url.starts_with("http://") || url.starts_with("https://") {
        use_curl_for_http(deadline.saturating_duration_since(std::time::Instant::now()))?;
        with_credentials(url, auth)
    } else {
        url.to_string()
    };
    apply_timeouts();
    let mut remote = repo.remote_anonymous(&fetch_url).with_context(|| format!("invalid remote `{shown}`"))?;
    let attempts = Cell::new(0u32);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(|_url, user, allowed| credentials(auth, &attempts, user, allowed));
    callbacks.transfer_progress(|_| std::time::Instant::now() < deadline && crate::signals::received().is_none());
    let mut options = git2::FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        .download_tags(git2::AutotagOption::None)
        .depth(0)
        .follow_redirects(git2::RemoteRedirect::None);
    remote
        .fetch(&[&refspec], Some(&mut options), None)
        .map_err(|e| anyhow!("cannot fetch `{refname}` from `{shown}`: {}", explain(&e, url)))?;
    let oid = match commit {
        Some(sha) => {
            let object = repo
                .revparse_single(sha)
                .map_err(|_| anyhow!("commit `{sha}` is not in `{refname}` of `{shown}` (fetched its history)"))?;
            object.peel_to_commit().map_err(|_| anyhow!("`{sha}` is not a commit"))?.id()
        }
        None => repo
            .refname_to_id(fetched)
            .map_err(|e| anyhow!("fetched `{refname}` but cannot resolve it: {}", clean_message(&e)))?,
    };
    let target = repo.find_commit(oid).with_context(|| format!("cannot read commit {oid}"))?;
    let mut checkout = git2::build::CheckoutBuilder::new();
    checkout.force().remove_untracked(true).remove_ignored(true);
    repo.checkout_tree(target.as_object(), Some(&mut checkout))
        .map_err(|e| anyhow!("cannot check out {oid} in `{}`: {}", dir.display(), clean_message(&e)))?;
    repo.set_head_detached(oid).map_err(|e| anyhow!("cannot move HEAD to {oid}: {}", clean_message(&e)))?;
    // FETCH_HEAD names the URL fetched from, credentials included: it must not stay in a
    // checkout that becomes a build context.
    let _ = std::fs::remove_file(repo.path().join("FETCH_HEAD"));
    Ok(Commit {
        sha: oid.to_string(),
        time: commit_time(&target),
        subject: shown_text(target.summary_bytes().unwrap_or_default(), 200),
        author: shown_text(target.author().name_bytes(), 100),
    })
}

/// A commit's line as pipe keeps it to show: repository content, so lossy UTF-8 with control
/// characters as spaces, and at most `max` characters.
fn shown_text(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut shown: String = text.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect();
    if text.trim().chars().nth(max).is_some() {
        shown.push('…');
    }
    shown
}

/// Whether the checkout in `dir` declares submodules (its `.gitmodules` lists any).
pub(crate) fn has_submodules(dir: &Path) -> anyhow::Result<bool> {
    let repo = Repository::open(dir).with_context(|| format!("cannot open the checkout `{}`", dir.display()))?;
    Ok(!repo.submodules().context("cannot read .gitmodules")?.is_empty())
}

/// Fetches and checks out the submodules of the checkout in `dir`, whose project lives at
/// `url`. libgit2 bounds this only by socket timeouts, so the build runs it in a child process
/// that its deadline can stop (`pipe internal-submodules`).
pub(crate) fn update_submodules(url: &str, auth: &Auth, dir: &Path, policy: &submodules::Policy) -> anyhow::Result<()> {
    if url.starts_with("http://") || url.starts_with("https://") {
        use_curl_for_http(Duration::from_secs(600))?;
    }
    let repo = Repository::open(dir).with_context(|| format!("cannot open the checkout `{}`", dir.display()))?;
    // Submodules by policy: each URL is resolved and checked before anything is fetched, and
    // only the project's own host is offered its credentials.
    for submodule in repo.submodules().context("cannot read .gitmodules")? {
        let name = submodule.name().unwrap_or("?").to_string();
        let declared = submodule.url().ok().flatten().unwrap_or("").to_string();
        let decision =
            submodules::decide(url, &declared, policy).map_err(|why| anyhow!("submodule `{name}`: {why}"))?;
        let key = format!("submodule.{name}.url");
        repo.config()
            .and_then(|mut c| c.set_str(&key, &decision.url))
            .map_err(|e| anyhow!("cannot set the URL of submodule `{name}`: {}", clean_message(&e)))?;
        let mut submodule =
            repo.find_submodule(&name).map_err(|e| anyhow!("cannot read submodule `{name}`: {}", clean_message(&e)))?;
        let sub_auth = if decision.credentials { auth.clone() } else { Auth::default() };
        let attempts = Cell::new(0u32);
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|_url, user, allowed| credentials(&sub_auth, &attempts, user, allowed));
        let mut fetch = git2::FetchOptions::new();
        fetch.remote_callbacks(callbacks).follow_redirects(git2::RemoteRedirect::None);
        let mut update = git2::SubmoduleUpdateOptions::new();
        update.fetch(fetch);
        submodule
            .update(false, Some(&mut update))
            .map_err(|e| anyhow!("cannot update submodule `{name}`: {}", clean_message(&e)))?;
    }
    Ok(())
}

/// A checked-out commit: its id, committer time, subject and author's name.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub sha: String,
    pub time: jiff::Timestamp,
    pub subject: String,
    pub author: String,
}

/// The committer time of a commit (what `created` labels use, so rebuilds are reproducible).
pub(crate) fn commit_time(commit: &git2::Commit<'_>) -> jiff::Timestamp {
    jiff::Timestamp::from_second(commit.time().seconds()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::auth::MAX_AUTH_ATTEMPTS;
    use crate::git::libgit::ssh_host;
    use git2::CredentialType;

    #[test]
    fn tokens_are_put_in_the_fetch_url_encoded() {
        let auth = Auth { token: Some("a/b:c".into()), ..Default::default() };
        assert_eq!(
            with_credentials("https://old@h.example/r.git", &auth),
            "https://x-access-token:a%2Fb%3Ac@h.example/r.git"
        );
        assert_eq!(with_credentials("https://h.example/r.git", &Auth::default()), "https://h.example/r.git");
    }

    #[test]
    fn ssh_hosts_and_ports_are_found_for_the_known_hosts_hint() {
        assert_eq!(ssh_host("ssh://git@10.0.0.5:2222/srv/r.git"), ("10.0.0.5".to_string(), Some(2222)));
        assert_eq!(ssh_host("ssh://git@github.com/x/r.git"), ("github.com".to_string(), None));
        assert_eq!(ssh_host("git@github.com:example/project1.git"), ("github.com".to_string(), None));
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(redact_url("https://bob:s3cret@git.example.com/a.git"), "https://bob:***@git.example.com/a.git");
        assert_eq!(redact_url("https://tok@git.example.com/a.git"), "https://***@git.example.com/a.git");
        assert_eq!(redact_url("git@github.com:a/b.git"), "git@github.com:a/b.git");
        assert_eq!(redact_url("file:///srv/a@b.git"), "file:///srv/a@b.git");
    }

    #[test]
    fn credential_attempts_are_bounded() {
        let auth = Auth { token: Some("t".into()), ..Default::default() };
        let attempts = Cell::new(0);
        for _ in 0..MAX_AUTH_ATTEMPTS {
            assert!(credentials(&auth, &attempts, None, CredentialType::USER_PASS_PLAINTEXT).is_ok());
        }
        let err = credentials(&auth, &attempts, None, CredentialType::USER_PASS_PLAINTEXT).err().unwrap();
        assert!(err.message().contains("after 3 attempts"));
    }
}
