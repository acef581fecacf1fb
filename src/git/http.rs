//! Listing an HTTP(S) remote's refs with one request (git's smart HTTP, protocol v0):
//! `GET <repo>/info/refs?service=git-upload-pack`, then the pkt-line advertisement.
//!
//! libgit2's own HTTPS support initialises OpenSSL when libgit2 starts, which costs ~50 ms on
//! every run, even one that polls only SSH or local remotes. Speaking the one request a poll
//! needs keeps that cost on the HTTPS remotes that need it.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use super::{Auth, redact_url};

/// Lists refs as (full name, commit id); peeled tags (`^{}`) and capabilities are dropped.
pub fn list(url: &str, auth: &Auth, timeout: Duration) -> anyhow::Result<Vec<(String, String)>> {
    let shown = redact_url(url);
    let (bare_url, url_user, url_password) = split_userinfo(url);
    let endpoint = format!("{}/info/refs?service=git-upload-pack", bare_url.trim_end_matches('/'));
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("git/2.0 (pipe/", env!("CARGO_PKG_VERSION"), ")"))
        .build()
        .context("failed to set up an HTTP client")?;
    let mut request = client.get(&endpoint);
    let password = auth.token.clone().or(url_password);
    if let Some(password) = password {
        let user = auth.username.clone().or(url_user).unwrap_or_else(|| "x-access-token".into());
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().map_err(|e| anyhow!("cannot reach `{shown}`: {}", crate::secret::http_cause(&e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        bail!(
            "`{shown}` refused the credentials (HTTP {}); check `auth.token_env` / `auth.token_file`",
            status.as_u16()
        );
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
    let body =
        response.bytes().map_err(|e| anyhow!("cannot read refs from `{shown}`: {}", crate::secret::http_cause(&e)))?;
    parse_advertisement(&body).with_context(|| format!("`{shown}` sent an invalid ref advertisement"))
}

/// `https://user:pw@host/x` → (`https://host/x`, user, pw).
fn split_userinfo(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None, None) };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((info, host)) => {
            let (user, pw) = match info.split_once(':') {
                Some((u, p)) => (u.to_string(), Some(p.to_string())),
                None => (info.to_string(), None),
            };
            (format!("{scheme}://{host}{}", &rest[end..]), Some(user), pw)
        }
        None => (url.to_string(), None, None),
    }
}

/// Parses pkt-lines: an optional `# service=…` section, then `<oid> <ref>[\0caps]` lines.
fn parse_advertisement(body: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let mut refs = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let len_hex = rest.get(..4).ok_or_else(|| anyhow!("truncated pkt-line"))?;
        let len = usize::from_str_radix(std::str::from_utf8(len_hex)?, 16).context("bad pkt-line length")?;
        if len == 0 {
            rest = &rest[4..];
            continue;
        }
        if len < 4 || len > rest.len() {
            bail!("bad pkt-line length {len}");
        }
        let line = &rest[4..len];
        rest = &rest[len..];
        if line.starts_with(b"# service=") {
            continue;
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.split(|b| *b == 0).next().unwrap_or(line);
        let line = std::str::from_utf8(line).context("ref advertisement is not UTF-8")?;
        let Some((oid, name)) = line.split_once(' ') else { bail!("bad ref line `{line}`") };
        if name.ends_with("^{}") || name == "capabilities^{}" {
            continue;
        }
        refs.push((name.to_string(), oid.to_string()));
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(s: &str) -> String {
        format!("{:04x}{s}", s.len() + 4)
    }

    #[test]
    fn advertisement_is_parsed() {
        let a = "1".repeat(40);
        let b = "2".repeat(40);
        let body = format!(
            "{}0000{}{}{}0000",
            pkt("# service=git-upload-pack\n"),
            pkt(&format!("{a} HEAD\0multi_ack symref=HEAD:refs/heads/main\n")),
            pkt(&format!("{a} refs/heads/main\n")),
            pkt(&format!("{b} refs/tags/v1^{{}}\n")),
        );
        let refs = parse_advertisement(body.as_bytes()).unwrap();
        assert_eq!(refs, vec![("HEAD".into(), a.clone()), ("refs/heads/main".into(), a)]);
    }

    #[test]
    fn empty_repository_has_no_refs() {
        let zero = "0".repeat(40);
        let body = format!(
            "{}0000{}0000",
            pkt("# service=git-upload-pack\n"),
            pkt(&format!("{zero} capabilities^{{}}\0agent=x\n"))
        );
        assert_eq!(parse_advertisement(body.as_bytes()).unwrap(), vec![]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_advertisement(b"zzzz").is_err());
        assert!(parse_advertisement(b"00ff short").is_err());
        assert!(parse_advertisement(b"0002").is_err());
    }

    #[test]
    fn userinfo_is_split_off() {
        assert_eq!(
            split_userinfo("https://bob:pw@h.example/r.git"),
            ("https://h.example/r.git".into(), Some("bob".into()), Some("pw".into()))
        );
        assert_eq!(split_userinfo("https://h.example/r.git"), ("https://h.example/r.git".into(), None, None));
    }
}
