//! Which files a remote branch carries at its root: organization discovery's question ("does
//! this repository have a `.pipe.toml`?"), answered with one shallow fetch of that branch into
//! a throw-away bare repository and a read of the root tree's entry names. Nothing is checked
//! out and no file content is read; the fetch is capped.

use std::cell::Cell;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use git2::{RemoteCallbacks, Repository};

use super::auth::{Auth, credentials, redact_url, with_credentials};
use super::libgit::{clean_message, explain, local_path, use_curl_for_http};

/// A probe gives up once the pack it receives passes this size.
pub(crate) const PROBE_CAP: usize = 256 * 1024 * 1024;

/// The branch's commit and the names of the regular files at its root.
pub(crate) struct Probed {
    pub commit: String,
    pub root_files: Vec<String>,
}

/// Fetches `refname` at depth 1 into a new bare repository at `dir` (removed afterwards,
/// whatever happens) and lists the regular files at the root of its commit.
pub(crate) fn root_files(
    url: &str,
    auth: &Auth,
    refname: &str,
    dir: &Path,
    deadline: Instant,
) -> anyhow::Result<Probed> {
    // A local repository is read where it is (libgit2's local transport cannot fetch shallow,
    // and needs no fetch).
    if let Some(path) = local_path(url) {
        let repo = Repository::open(path).with_context(|| format!("cannot open repository `{}`", path.display()))?;
        let oid = repo
            .refname_to_id(refname)
            .map_err(|e| anyhow!("`{}` has no `{refname}`: {}", path.display(), clean_message(&e)))?;
        return read(&repo, oid);
    }
    let _ = std::fs::remove_dir_all(dir);
    let result = probe(url, auth, refname, dir, deadline);
    let _ = std::fs::remove_dir_all(dir);
    result
}

fn probe(url: &str, auth: &Auth, refname: &str, dir: &Path, deadline: Instant) -> anyhow::Result<Probed> {
    let shown = redact_url(url);
    let repo =
        Repository::init_bare(dir).with_context(|| format!("failed to create repository in `{}`", dir.display()))?;
    let fetch_url = if url.starts_with("http://") || url.starts_with("https://") {
        use_curl_for_http(deadline.saturating_duration_since(Instant::now()))?;
        with_credentials(url, auth)
    } else {
        url.to_string()
    };
    super::timeouts::apply_timeouts();
    let mut remote = repo.remote_anonymous(&fetch_url).with_context(|| format!("invalid remote `{shown}`"))?;
    let attempts = Cell::new(0u32);
    let too_big = Cell::new(false);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(|_url, user, allowed| credentials(auth, &attempts, user, allowed));
    callbacks.transfer_progress(|progress| {
        if progress.received_bytes() > PROBE_CAP {
            too_big.set(true);
            return false;
        }
        Instant::now() < deadline && crate::signals::received().is_none()
    });
    let mut options = git2::FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        .download_tags(git2::AutotagOption::None)
        .depth(1)
        .follow_redirects(git2::RemoteRedirect::None);
    let probed = "refs/pipe/probed";
    let fetched = remote.fetch(&[&format!("+{refname}:{probed}")], Some(&mut options), None);
    drop(remote);
    if too_big.get() {
        return Err(anyhow!("`{refname}` of `{shown}` is over {} MiB; not probed", PROBE_CAP >> 20));
    }
    fetched.map_err(|e| anyhow!("cannot fetch `{refname}` from `{shown}`: {}", explain(&e, url)))?;
    let oid = repo
        .refname_to_id(probed)
        .map_err(|e| anyhow!("fetched `{refname}` but cannot resolve it: {}", clean_message(&e)))?;
    read(&repo, oid)
}

/// The regular files at the root of commit `oid`.
fn read(repo: &Repository, oid: git2::Oid) -> anyhow::Result<Probed> {
    let commit = repo.find_commit(oid).with_context(|| format!("cannot read commit {oid}"))?;
    let tree = commit.tree().with_context(|| format!("cannot read the tree of {oid}"))?;
    let root_files = tree
        .iter()
        .filter(|e| matches!(e.filemode(), 0o100644 | 0o100755))
        .filter_map(|e| e.name().ok().map(str::to_string))
        .collect();
    Ok(Probed { commit: oid.to_string(), root_files })
}
