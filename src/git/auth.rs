//! A remote's credentials: what the project's `auth` table resolves to, how libgit2 is handed
//! them (bounded attempts), how libcurl takes them in a URL, and URLs shown with them hidden.

use std::cell::Cell;
use std::path::PathBuf;

use git2::{Cred, CredentialType};

/// Credential callbacks give up after this many attempts instead of looping forever.
pub(crate) const MAX_AUTH_ATTEMPTS: u32 = 3;

/// Credentials for one remote, resolved from the project's `auth` table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Auth {
    pub username: Option<String>,
    pub token: Option<String>,
    pub ssh_key: Option<PathBuf>,
    pub ssh_passphrase: Option<String>,
}

pub(crate) fn credentials(
    auth: &Auth,
    attempts: &Cell<u32>,
    username_from_url: Option<&str>,
    allowed: CredentialType,
) -> Result<Cred, git2::Error> {
    let n = attempts.get() + 1;
    attempts.set(n);
    if n > MAX_AUTH_ATTEMPTS {
        return Err(git2::Error::from_str(&format!("authentication failed after {MAX_AUTH_ATTEMPTS} attempts")));
    }
    if allowed.contains(CredentialType::USERNAME) {
        return Cred::username(auth.username.as_deref().or(username_from_url).unwrap_or("git"));
    }
    if allowed.contains(CredentialType::SSH_KEY) {
        let user = auth.username.as_deref().or(username_from_url).unwrap_or("git");
        // The agent first; the configured key on the next attempt.
        if (n == 1 || auth.ssh_key.is_none()) && std::env::var_os("SSH_AUTH_SOCK").is_some() {
            return Cred::ssh_key_from_agent(user);
        }
        if let Some(key) = &auth.ssh_key {
            return Cred::ssh_key(user, None, key, auth.ssh_passphrase.as_deref());
        }
    }
    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
        && let Some(token) = &auth.token
    {
        let user = auth.username.as_deref().or(username_from_url).unwrap_or("x-access-token");
        return Cred::userpass_plaintext(user, token);
    }
    Err(git2::Error::from_str("the remote wants credentials and none are configured (see `auth` in the pipeline file)"))
}

/// Hides the password or token in `https://user:secret@host/…`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

/// `https://host/x` with the project's token as `https://user:token@host/x` (percent-encoded),
/// which is how libcurl takes Basic credentials. The result is never shown; `redact_url` is.
pub(crate) fn with_credentials(url: &str, auth: &Auth) -> String {
    let Some(token) = &auth.token else { return url.to_string() };
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let end = rest.find('/').unwrap_or(rest.len());
    let host = rest[..end].rsplit_once('@').map_or(&rest[..end], |(_, h)| h);
    let user = auth.username.as_deref().unwrap_or("x-access-token");
    format!("{scheme}://{}:{}@{host}{}", percent(user), percent(token), &rest[end..])
}

pub(crate) fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
