//! Who may run a hook, and what a request may hand it: bearer tokens and HMAC signatures
//! compared in constant time (an unknown hook is checked against a random per-process secret,
//! so it costs the same work as a known one), the replay window judged on the receiver's clock,
//! and the environment a body may set, each value checked.

use crate::config::Hook;
use crate::secret::{self, Secret};
use crate::server::Request;

/// A hook's credentials; an unknown hook gets the per-process dummies.
pub(crate) struct Credentials<'a> {
    pub token: Option<&'a Secret>,
    pub secret: Option<&'a Secret>,
}

/// How a request authenticated.
#[derive(PartialEq, Debug)]
pub(crate) enum Auth {
    Missing,
    Wrong,
    Token,
    Signature,
}

pub(crate) fn bearer(req: &Request) -> Option<&str> {
    req.header("authorization").and_then(|v| v.strip_prefix("Bearer "))
}

pub(crate) fn signature(req: &Request) -> Option<&str> {
    req.header("x-hub-signature-256")
}

/// Checks the bearer token alone (the head is enough): `None` when there is none.
pub(crate) fn token_valid(creds: &Credentials<'_>, req: &Request) -> Option<bool> {
    let given = bearer(req)?;
    Some(creds.token.is_some_and(|t| secret::same(t.reveal().as_bytes(), given.as_bytes())))
}

/// Checks a bearer token or an HMAC signature over `signed` (the raw body, or the path for GETs).
pub(crate) fn authenticate(creds: &Credentials<'_>, req: &Request, signed: &[u8]) -> Auth {
    let given = signature(req);
    match token_valid(creds, req) {
        None if given.is_none() => return Auth::Missing,
        Some(true) => return Auth::Token,
        _ => {}
    }
    if let (Some(secret), Some(given)) = (creds.secret, given)
        && secret::verify(secret.reveal().as_bytes(), signed, given)
    {
        return Auth::Signature;
    }
    Auth::Wrong
}

/// Why a signed body is refused; each maps to a status code.
#[derive(Debug, PartialEq)]
pub(crate) enum Stale {
    /// `409`: outside the window, or the delivery was already received.
    Replay(&'static str),
    /// `403`: the body names another hook than the URL.
    OtherHook,
    /// `400`: a field is missing or malformed.
    Malformed(&'static str),
}

/// The checks on a signed body before its delivery id is recorded: it names this hook, and its
/// `sent_at` is within `window` of the receiver's clock, both ways. Returns the delivery id and
/// the time until which it must be remembered (`max(now, sent_at) + window`: any later replay
/// is outside the window).
pub(crate) fn signed_fields<'a>(
    body: &'a serde_json::Value,
    hook: &str,
    now: i64,
    window: i64,
) -> Result<(&'a str, i64), Stale> {
    match body["hook"].as_str() {
        Some(named) if named == hook => {}
        Some(_) => return Err(Stale::OtherHook),
        None => return Err(Stale::Malformed("signed requests name their `hook`")),
    }
    let sent = body["sent_at"].as_i64().ok_or(Stale::Malformed("signed requests carry `sent_at`"))?;
    let delivery = body["delivery"]
        .as_str()
        .filter(|d| super::replay::valid_id(d))
        .ok_or(Stale::Malformed("signed requests carry `delivery` (up to 128 letters, digits, `._:-`)"))?;
    let skew = now.checked_sub(sent).ok_or(Stale::Replay("the request is outside the replay window"))?;
    if skew.checked_abs().is_none_or(|s| s > window) {
        return Err(Stale::Replay("the request is outside the replay window"));
    }
    let expires = now.max(sent).checked_add(window).ok_or(Stale::Replay("the request is outside the replay window"))?;
    Ok((delivery, expires))
}

/// The environment for the hook's target from the request body; images are checked against
/// the hook's `images` patterns, tags against Docker's grammar, the project against the config's
/// name rules and the branch against git's ref-name rules. Nothing reaches a shell.
pub(crate) fn release_env(name: &str, hook: &Hook, body: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let text = |k: &str| body[k].as_str().map(str::to_string);
    let mut env = vec![("PIPE_HOOK".to_string(), name.to_string())];
    if hook.compose.is_some() || hook.swarm.is_some() {
        let image = text("image").ok_or("this hook deploys an image: the body names none")?;
        if !hook.allowed.is_match(&image) {
            return Err(format!("image `{image}` is not allowed by this hook"));
        }
        crate::docker::validate_repository(&image)?;
        let tag = text("tag").ok_or("the body names no `tag`")?;
        let valid_tag = !tag.is_empty()
            && tag.len() <= 128
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !tag.starts_with(['.', '-']);
        if !valid_tag {
            return Err("invalid `tag`".into());
        }
        env.push(("PIPE_IMAGE".into(), image));
        env.push(("PIPE_TAG".into(), tag));
    }
    if let Some(commit) = text("commit").filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_hexdigit())) {
        env.push(("PIPE_COMMIT".into(), commit));
    }
    if let Some(reference) = text("ref") {
        let branch = reference.strip_prefix("refs/heads/");
        if !valid_ref_name(&reference) || branch.is_some_and(|b| b.is_empty()) {
            return Err("invalid `ref`: expected a git ref name such as `refs/heads/main`".into());
        }
        if let Some(branch) = branch {
            env.push(("PIPE_BRANCH".into(), branch.to_string()));
        }
    }
    if let Some(project) = text("project") {
        crate::config::validate_name(&project).map_err(|why| format!("invalid `project`: {why}"))?;
        env.push(("PIPE_PROJECT".into(), project));
    }
    Ok(env)
}

/// git's ref-name rules (`git check-ref-format`), at most 255 bytes.
pub(crate) fn valid_ref_name(name: &str) -> bool {
    let bad_char = |c: char| c.is_control() || c == ' ' || "~^:?*[\\".contains(c);
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(bad_char)
        && !name.contains("..")
        && !name.contains("@{")
        && name != "@"
        && !name.ends_with('.')
        && name.split('/').all(|part| !part.is_empty() && !part.starts_with('.') && !part.ends_with(".lock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_window_is_judged_on_the_receivers_clock_both_ways() {
        let body = |sent: i64| json!({"hook": "h", "delivery": "d", "sent_at": sent});
        assert_eq!(signed_fields(&body(1000), "h", 1000, 10), Ok(("d", 1010)));
        // Sent "from the future": remembered until the window after that time has passed.
        assert_eq!(signed_fields(&body(1009), "h", 1000, 10), Ok(("d", 1019)));
        assert!(signed_fields(&body(1011), "h", 1000, 10).is_err());
        assert!(signed_fields(&body(989), "h", 1000, 10).is_err());
        assert!(signed_fields(&body(i64::MIN), "h", 1000, 10).is_err(), "no overflow");
        assert!(signed_fields(&body(i64::MAX), "h", -1000, 10).is_err(), "no overflow");
        assert_eq!(signed_fields(&body(1000), "other", 1000, 10), Err(Stale::OtherHook));
    }

    #[test]
    fn ref_names_follow_git() {
        for good in ["refs/heads/main", "refs/heads/feature/x-1", "refs/tags/v1.0"] {
            assert!(valid_ref_name(good), "{good}");
        }
        for bad in [
            "refs/heads/a..b",
            "refs/heads/a b",
            "refs/heads/\n",
            "refs/heads/x.lock",
            "refs/heads/.x",
            "refs//x",
            "refs/heads/a@{1}",
            "refs/heads/x/",
        ] {
            assert!(!valid_ref_name(bad), "{bad:?}");
        }
    }
}
