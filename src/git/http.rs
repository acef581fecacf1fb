//! Listing an HTTP(S) remote's refs with one request (git's smart HTTP, protocol v0):
//! `GET <repo>/info/refs?service=git-upload-pack`, then the pkt-line advertisement.
//!
//! libgit2's own HTTPS support initialises OpenSSL when libgit2 starts, which costs ~50 ms on
//! every run, even one that polls only SSH or local remotes. Speaking the one request a poll
//! needs keeps that cost on the HTTPS remotes that need it.
//!
//! One client serves the whole process: one TLS context (the system's roots plus
//! `GIT_SSL_CAINFO`, loaded once), one connection pool with HTTP/1.1 keep-alive, so twenty
//! repositories on one host cost a few connections and TLS handshakes, not twenty.

use std::io::Read as _;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use super::auth::{Auth, redact_url};
use super::wire;

/// Idle connections kept per host: enough for every poll worker ([`super::slots::MAX_PER_HOST`]).
const IDLE_PER_HOST: usize = super::slots::MAX_PER_HOST;

/// Lists refs as (full name, commit id); peeled tags (`^{}`) and capabilities are dropped.
pub(super) fn list(url: &str, auth: &Auth, timeout: Duration) -> anyhow::Result<Vec<(String, String)>> {
    let shown = redact_url(url);
    let (bare_url, url_user, url_password) = split_userinfo(url);
    let endpoint = format!("{}/info/refs?service=git-upload-pack", bare_url.trim_end_matches('/'));
    let mut request = client()?.get(&endpoint).timeout(timeout);
    let password = auth.token.clone().or(url_password);
    if let Some(password) = password {
        let user = auth.username.clone().or(url_user).unwrap_or_else(|| "x-access-token".into());
        request = request.basic_auth(user, Some(password));
    }
    let _slot = super::slots::host_slot(host_of(&bare_url));
    let response = request.send().map_err(|e| anyhow!("cannot reach `{shown}`: {}", crate::secret::http_cause(&e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        bail!(
            "`{shown}` refused the credentials (HTTP {}); check `auth.token_env` / `auth.token_file`",
            status.as_u16()
        );
    }
    if let Some(why) = crate::http::unfollowed(&response) {
        bail!("`{shown}` {why}");
    }
    if !status.is_success() {
        bail!("`{shown}` answered HTTP {}", status.as_u16());
    }
    let smart = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/x-git-upload-pack-advertisement");
    if !smart {
        bail!("`{shown}` is not a smart HTTP git server (dumb HTTP is not supported)");
    }
    // Streamed and capped: never more than the advertisement cap is read, whatever the
    // Content-Length says. Reading to the end lets the connection go back to the pool.
    let mut body = response.take(wire::MAX_ADVERTISEMENT_BYTES as u64 + 1);
    let refs =
        wire::read_advertisement(&mut body).with_context(|| format!("`{shown}` sent an invalid ref advertisement"))?;
    let _ = std::io::copy(&mut body.take(64 * 1024), &mut std::io::sink());
    Ok(refs)
}

/// The process's one HTTP client (built on first use; a poll with no HTTP remote never pays
/// for it).
fn client() -> anyhow::Result<&'static reqwest::blocking::Client> {
    static CLIENT: OnceLock<Result<reqwest::blocking::Client, String>> = OnceLock::new();
    CLIENT.get_or_init(build_client).as_ref().map_err(|e| anyhow!("failed to set up an HTTP client: {e}"))
}

fn build_client() -> Result<reqwest::blocking::Client, String> {
    let mut builder = crate::http::builder(crate::http::Redirects::None)
        .user_agent(concat!("git/2.0 (pipe/", env!("CARGO_PKG_VERSION"), ")"))
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true);
    // git's own variable for an extra CA (a private forge); OpenSSL itself honours
    // SSL_CERT_FILE / SSL_CERT_DIR for the system roots.
    if let Some(path) = std::env::var_os("GIT_SSL_CAINFO") {
        let pem = std::fs::read(&path)
            .map_err(|e| format!("cannot read GIT_SSL_CAINFO `{}`: {e}", path.to_string_lossy()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("GIT_SSL_CAINFO `{}` is not a PEM bundle: {e}", path.to_string_lossy()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// `https://host:443/x` → `host:443`.
pub(super) fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// `https://user:pw@host/x` → (`https://host/x`, user, pw), user and password percent-decoded
/// as URLs carry them (`p%40ss` is the password `p@ss`).
pub(super) fn split_userinfo(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None, None) };
    let end = rest.find('/').unwrap_or(rest.len());
    let decoded = |text: &str| percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned();
    match rest[..end].rsplit_once('@') {
        Some((info, host)) => {
            let (user, pw) = match info.split_once(':') {
                Some((u, p)) => (decoded(u), Some(decoded(p))),
                None => (decoded(info), None),
            };
            (format!("{scheme}://{host}{}", &rest[end..]), Some(user), pw)
        }
        None => (url.to_string(), None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_split_off() {
        assert_eq!(
            split_userinfo("https://bob:pw@h.example/r.git"),
            ("https://h.example/r.git".into(), Some("bob".into()), Some("pw".into()))
        );
        assert_eq!(split_userinfo("https://h.example/r.git"), ("https://h.example/r.git".into(), None, None));
        // Regression: the password went out still percent-encoded.
        assert_eq!(
            split_userinfo("https://bob%2Bci:p%40ss%3Aw0rd@h.example/r.git"),
            ("https://h.example/r.git".into(), Some("bob+ci".into()), Some("p@ss:w0rd".into()))
        );
        assert_eq!(host_of("https://h.example:8443/r.git"), "h.example:8443");
    }
}
