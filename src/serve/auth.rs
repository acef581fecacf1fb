//! Who may run a hook, and what a request may hand it: bearer tokens and HMAC signatures
//! compared in constant time (an unknown hook is checked against a random per-process secret,
//! so it costs the same work as a known one), the replay window judged on the receiver's clock,
//! and the environment a body may set, each value checked.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Hook;
use crate::secret::{self, Secret};
use crate::server::Request;
use crate::targets::rollout::Shipment;

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

/// What a request hands the hook's target.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Requested {
    /// The `PIPE_*` variables of the release.
    pub env: Vec<(String, String)>,
    /// A release of several images: image name → repository, each with the release's tag,
    /// which the hook's deploy history records so its rollback puts all of them back.
    pub images: BTreeMap<String, String>,
}

/// The environment for the hook's target from the request body; images are checked against
/// the hook's `images` patterns (every one of a release of several: one the hook does not
/// allow refuses the whole body), tags against Docker's grammar, the project against the
/// config's name rules and the branch against git's ref-name rules. Nothing reaches a shell.
pub(crate) fn release_env(name: &str, hook: &Hook, body: &serde_json::Value) -> Result<Requested, String> {
    let text = |k: &str| body[k].as_str().map(str::to_string);
    let mut env = vec![("PIPE_HOOK".to_string(), name.to_string())];
    let mut images = BTreeMap::new();
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
        images = release_images(hook, body, &image, &tag)?;
        // Each image's variables exactly as a deploy target on the CI host gets them.
        let several = Shipment { tag: tag.clone(), images: images.clone(), ..Shipment::default() };
        env.push(("PIPE_IMAGE".into(), image));
        env.push(("PIPE_TAG".into(), tag));
        env.extend(several.image_env());
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
    Ok(Requested { env, images })
}

/// The body's `images` (a release of several; none: a release of one), every one checked
/// before any is taken: a name as the pipeline file's image names, a repository the hook's
/// `images` allows, the release's own tag, and the release's `image` among them.
fn release_images(
    hook: &Hook,
    body: &serde_json::Value,
    image: &str,
    tag: &str,
) -> Result<BTreeMap<String, String>, String> {
    let Some(list) = body.get("images").filter(|v| !v.is_null()) else { return Ok(BTreeMap::new()) };
    let list = list.as_array().ok_or("`images` must be a list")?;
    if list.len() > crate::config::MAX_IMAGES {
        return Err(format!("`images` lists {} images; at most {}", list.len(), crate::config::MAX_IMAGES));
    }
    let mut images = BTreeMap::new();
    let mut variables = BTreeSet::new();
    for entry in list {
        let name = entry["name"].as_str().filter(|n| crate::config::valid_image_name(n)).ok_or(
            "`images`: each image needs a `name` (lowercase letters, digits, `-` and `_`, starting with a letter)",
        )?;
        let repository = entry["image"].as_str().ok_or_else(|| format!("`images`: image `{name}` names no `image`"))?;
        if !hook.allowed.is_match(repository) {
            return Err(format!("image `{repository}` is not allowed by this hook"));
        }
        crate::docker::validate_repository(repository)?;
        if entry["tag"].as_str() != Some(tag) {
            return Err(format!("`images`: image `{name}` does not carry the release's `tag`"));
        }
        if !variables.insert(crate::config::image_env_name(name)) {
            return Err(format!("`images`: image `{name}` is named twice"));
        }
        images.insert(name.to_string(), repository.to_string());
    }
    if !images.is_empty() && !images.values().any(|r| r == image) {
        return Err("`images` does not list the release's `image`".into());
    }
    Ok(images)
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

    fn hook() -> Hook {
        let text = "[serve.hooks.app]\nsecret_env = \"S\"\nimages = [\"reg.example/app-*\"]\n\
                    compose = { file = \"/srv/app/docker-compose.yml\" }\n";
        let config = crate::config::parse(std::path::Path::new("p.toml"), text).unwrap();
        config.serve.hooks["app"].clone()
    }

    #[test]
    fn every_image_of_a_release_is_checked_and_exported_as_the_ci_host_exports_it() {
        let image =
            |name: &str, repo: &str, tag: &str| json!({"name": name, "image": repo, "tag": tag, "digest": null});
        let body = |images: serde_json::Value| json!({"image": "reg.example/app-api", "tag": "c0ffee", "commit": "c0ffee00", "images": images});
        let both = json!([
            image("api", "reg.example/app-api", "c0ffee"),
            image("front-end", "reg.example/app-front", "c0ffee")
        ]);
        let requested = release_env("app", &hook(), &body(both)).unwrap();
        let var = |k: &str| requested.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(var("PIPE_IMAGE"), Some("reg.example/app-api"));
        assert_eq!(var("PIPE_IMAGE_API"), Some("reg.example/app-api"));
        assert_eq!(var("PIPE_IMAGE_FRONT_END"), Some("reg.example/app-front"));
        assert_eq!(var("PIPE_TAG_FRONT_END"), Some("c0ffee"));
        assert_eq!(requested.images.len(), 2);
        assert_eq!(requested.images["front-end"], "reg.example/app-front");

        // One image outside the hook's `images` refuses the whole body.
        let outside =
            json!([image("api", "reg.example/app-api", "c0ffee"), image("evil", "reg.example/other", "c0ffee")]);
        assert_eq!(
            release_env("app", &hook(), &body(outside)),
            Err("image `reg.example/other` is not allowed by this hook".into())
        );
        let refused = |images: serde_json::Value| release_env("app", &hook(), &body(images)).unwrap_err();
        assert!(refused(json!([image("api", "reg.example/app-api", "other")])).contains("release's `tag`"));
        assert!(refused(json!([image("Api", "reg.example/app-api", "c0ffee")])).contains("needs a `name`"));
        assert!(refused(json!([image("front", "reg.example/app-front", "c0ffee")])).contains("release's `image`"));
        let twice = json!([image("a-b", "reg.example/app-api", "c0ffee"), image("a_b", "reg.example/app-x", "c0ffee")]);
        assert!(refused(twice).contains("named twice"));
        assert!(refused(json!("reg.example/app-api")).contains("must be a list"));
        let many: Vec<_> = (0..17).map(|i| image(&format!("i{i}"), "reg.example/app-api", "c0ffee")).collect();
        assert!(refused(json!(many)).contains("at most 16"));
        // A release of one image: the body as it always was.
        let one = release_env("app", &hook(), &json!({"image": "reg.example/app-api", "tag": "c0ffee"})).unwrap();
        assert!(one.images.is_empty() && !one.env.iter().any(|(k, _)| k.starts_with("PIPE_IMAGE_")));
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
