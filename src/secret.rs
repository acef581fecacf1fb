//! Secrets resolved from `*_env` / `*_file` indirection. The value never prints: `Debug` and
//! `Display` show `***`, and error messages name the variable or file, never the content.

use std::fmt;

use anyhow::{Context as _, bail};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::SecretRef;

/// A secret value; reveal it only where it is handed to git, docker's stdin or an HTTP header.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn reveal(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn for_tests(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads the secret now; `what` names the config key for the error message.
pub(crate) fn resolve(secret: &SecretRef, what: &str) -> anyhow::Result<Secret> {
    let value = match secret {
        SecretRef::Env(var) => match std::env::var(var) {
            Ok(v) => v,
            Err(_) => bail!("environment variable `{var}` (named by `{what}_env`) is not set"),
        },
        SecretRef::File(path) => std::fs::read_to_string(path)
            .with_context(|| format!("failed to read secret file `{}` (named by `{what}_file`)", path.display()))?,
    };
    let value = value.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        bail!("the secret for `{what}` is empty");
    }
    Ok(Secret(value))
}

/// The innermost cause of an HTTP error, without the URL reqwest puts in its own message (a
/// Slack URL or a docker-puller URL is a secret).
pub(crate) fn http_cause(err: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = err;
    while let Some(inner) = source.source() {
        source = inner;
    }
    if err.is_timeout() { format!("timed out ({source})") } else { source.to_string() }
}

/// `sha256=<hex>` of HMAC-SHA256 over the body.
pub(crate) fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Whether `given` is the `sha256=<hex>` signature of `body`, compared in constant time.
pub(crate) fn verify(secret: &[u8], body: &[u8], given: &str) -> bool {
    same(sign(secret, body).as_bytes(), given.as_bytes())
}

/// A secret of its own for `label`, derived from `key`: the hex HMAC-SHA256 of `label` keyed
/// with `key` (as `openssl dgst -sha256 -hmac KEY` prints it). Knowing one label's secret
/// tells nothing of another's or of the key.
pub(crate) fn derive(key: &Secret, label: &str) -> Secret {
    Secret(sign(key.0.as_bytes(), label.as_bytes()).trim_start_matches("sha256=").to_string())
}

/// A random secret nobody knows: what an unknown hook is checked against, so it costs the same
/// work as a known one.
pub(crate) fn random() -> Secret {
    Secret(random_id())
}

/// 128 random bits as 32 hex digits (run ids, delivery ids).
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom(2) writes at most `bytes.len()` bytes into the buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        // No entropy to be had: time and pid still make an id unique enough for a delivery id.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes[..16].copy_from_slice(&(nanos ^ u128::from(std::process::id())).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in constant time (over their SHA-256 digests, so lengths leak nothing).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter().zip(db.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_and_ids() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        let (a, b) = (random_id(), random_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn secrets_never_format() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }

    #[test]
    fn signature_matches_github_format() {
        // HMAC-SHA256("It's a Secret to Everybody", "Hello, World!") as documented by GitHub.
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(b"It's a Secret to Everybody", b"Hello, World!"), expected);
        assert!(verify(b"It's a Secret to Everybody", b"Hello, World!", expected));
        assert!(!verify(b"It's a Secret to Everybody", b"Hello, World?", expected));
    }

    #[test]
    fn missing_variable_names_the_key_not_a_value() {
        let err = resolve(&SecretRef::Env("PIPE_TEST_SURELY_UNSET_VAR".into()), "registry.r.password").unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable `PIPE_TEST_SURELY_UNSET_VAR` (named by `registry.r.password_env`) is not set"
        );
    }
}
