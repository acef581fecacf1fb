//! libgit2 as pipe sets it up: libcurl for HTTP(S) fetches, `file://` URLs read in place, and
//! libgit2's messages made readable (with the `ssh-keyscan` hint for an unknown host key).

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// The repository path of a `file://` URL; `None` for network URLs (and encoded paths, which
/// take libgit2's own local transport).
pub(crate) fn local_path(url: &str) -> Option<&Path> {
    let path = url.strip_prefix("file://")?;
    (path.starts_with('/') && !path.contains('%')).then(|| Path::new(path))
}

/// libgit2 messages end with the class and code in parentheses; keep the human part.
pub(crate) fn clean_message(err: &git2::Error) -> String {
    err.message().trim_end_matches('.').to_string()
}

/// [`clean_message`], plus what to do when libgit2 refused an SSH server whose host key is not
/// in `~/.ssh/known_hosts` (it never accepts an unknown one, like `StrictHostKeyChecking=yes`),
/// or when an HTTP(S) server redirected a fetch (never followed: see `crate::http`).
pub(crate) fn explain(err: &git2::Error, url: &str) -> String {
    with_redirect_hint(with_hostkey_hint(clean_message(err), url))
}

/// Adds what to do about a redirect to a message from libcurl or libgit2 about one.
fn with_redirect_hint(message: String) -> String {
    let lower = message.to_ascii_lowercase();
    if !lower.contains("redirect") && !lower.contains("response: got 30") {
        return message;
    }
    format!(
        "{message}\nhint: the server answered with a redirect, which pipe never follows for git (the credentials would go where it points); set the project's `repo` to the repository's new URL"
    )
}

/// Adds the `ssh-keyscan` hint to a message about an unknown host key.
pub(crate) fn with_hostkey_hint(message: String, url: &str) -> String {
    if !message.contains("hostkey") {
        return message;
    }
    let (host, port) = ssh_host(url);
    let home = std::env::var("HOME").unwrap_or_else(|_| "~".into());
    let port_flag = port.map(|p| format!("-p {p} ")).unwrap_or_default();
    format!(
        "{message}\nhint: the host key of `{host}` is not in `{home}/.ssh/known_hosts`; check its fingerprint, then add it: `ssh-keyscan {port_flag}{host} >> {home}/.ssh/known_hosts`"
    )
}

/// Host and port of `ssh://[user@]host[:port]/path` or scp-like `[user@]host:path`.
pub(crate) fn ssh_host(url: &str) -> (String, Option<u16>) {
    let rest = url.strip_prefix("ssh://").or_else(|| url.strip_prefix("git+ssh://"));
    let authority = match rest {
        Some(rest) => rest.split('/').next().unwrap_or(rest),
        None => url.split(':').next().unwrap_or(url),
    };
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match (rest, host_port.rsplit_once(':')) {
        (Some(_), Some((host, port))) if port.parse::<u16>().is_ok() => (host.to_string(), port.parse().ok()),
        _ => (host_port.to_string(), None),
    }
}

/// Routes libgit2's HTTP(S) through libcurl (git2-curl). libgit2 is built without its own TLS
/// so that runs which never fetch over HTTPS never initialise OpenSSL; fetches, which are rare,
/// pay for it here, once per process. An error when libcurl would not take pipe's redirect
/// rule: then nothing is registered and no HTTP(S) fetch runs.
pub(crate) fn use_curl_for_http(timeout: Duration) -> anyhow::Result<()> {
    static ONCE: OnceLock<Result<(), String>> = OnceLock::new();
    let registered = ONCE.get_or_init(|| {
        let mut handle = curl::easy::Easy::new();
        // git2-curl turns following on for each request; this handle still follows none, so
        // the credentials in the URL never go where a 3xx points.
        crate::http::curl_refusing_redirects(&mut handle).map_err(|e| e.to_string())?;
        let _ = handle.connect_timeout(timeout.min(Duration::from_secs(60)));
        // A transfer slower than 1 KB/s for a minute is a dead one.
        let _ = handle.low_speed_limit(1024);
        let _ = handle.low_speed_time(Duration::from_secs(60));
        let _ = handle.useragent(concat!("git/2.0 (pipe/", env!("CARGO_PKG_VERSION"), ")"));
        // SAFETY: called once, before the first HTTP(S) fetch creates a transport.
        unsafe { git2_curl::register(handle) };
        Ok(())
    });
    registered.clone().map_err(|e| anyhow::anyhow!("cannot set up libcurl for HTTP(S) fetches: {e}"))
}
