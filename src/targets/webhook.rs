//! Webhook targets: POST a release to a remote `pipe serve` hook (HMAC-signed, bearer token) or
//! to a docker-puller, and follow the receiver's run until it ends.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::config::{SecretRef, WebhookTarget};
use crate::secret;

/// What a webhook delivers: the release of one project's ref.
pub(crate) struct Delivery<'a> {
    pub project: &'a str,
    pub refname: &'a str,
    pub commit: &'a str,
    /// The release's first image (by name) for a release of several: the single-image fields
    /// docker-puller-style receivers and older `pipe serve` versions read.
    pub image: &'a str,
    pub tag: &'a str,
    pub digest: Option<&'a str>,
    /// Every image of a release of several (the body's `images`); empty for one image.
    pub images: &'a [ReleaseImage],
    /// The host of a fleet this delivery goes to (the body's `host`, as `hosts` names it), so
    /// a receiver runs it only there; none for a target of one receiver.
    pub host: Option<&'a str>,
}

/// One image of a release of several, as the body's `images` carries it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct ReleaseImage {
    /// The image's table name (`api` in `[project.p.images.api]`).
    pub name: String,
    /// The repository as the receiver pulls it (with the registry when the target pushes).
    pub image: String,
    pub tag: String,
    pub digest: Option<String>,
}

/// The webhook URL as shown to people: docker-puller's token is never displayed.
pub(crate) fn shown_url(hook: &WebhookTarget, project: &str) -> String {
    shown(hook, &hook.url, project)
}

fn shown(hook: &WebhookTarget, url: &str, project: &str) -> String {
    if hook.docker_puller {
        format!("{url}?token=***&hook={}", hook.hook.as_deref().unwrap_or(project))
    } else {
        crate::git::redact_url(url)
    }
}

/// The URL of one host of a fleet: `{host}` in the hook's URL replaced by it.
pub(crate) fn host_url(hook: &WebhookTarget, host: &str) -> String {
    hook.url.replace("{host}", host)
}

/// `/healthz` of the `pipe serve` a hook's URL names.
pub(crate) fn healthz_url(url: &str) -> Result<reqwest::Url, String> {
    let base = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    base.join("/healthz").map_err(|e| format!("invalid URL: {e}"))
}

/// What a dry run of a webhook target prints: its POST, or for a fleet the check of every host
/// and one POST per host in its batches.
/// `several`: the release has several images, so the body carries `images` too.
pub(crate) fn plan(hook: &WebhookTarget, project: &str, several: bool) -> Vec<String> {
    let fields = if several { "image, digest, images" } else { "image, digest" };
    let post = |shown: String| format!("POST {shown} (body: project, ref, commit, {fields}; {})", auth_note(hook));
    if !hook.is_fleet() {
        return vec![post(shown_url(hook, project))];
    }
    let mut lines: Vec<String> = hook
        .hosts
        .iter()
        .map(|h| {
            let url = host_url(hook, h);
            let healthz = healthz_url(&url).map_or(url, |u| u.to_string());
            format!("GET {}", crate::git::redact_url(&healthz))
        })
        .collect();
    for (b, batch) in hook.hosts.chunks(hook.batch_size()).enumerate() {
        lines.push(format!("batch {}:", b + 1));
        lines.extend(batch.iter().map(|h| format!("  {}", post(crate::git::redact_url(&host_url(hook, h))))));
    }
    lines.push("on any failure: POST the previous release to every host asked".into());
    lines
}

/// Whether the `pipe serve` behind `url` answers its `/healthz` within `timeout`: before a
/// fleet's rollout, so that a host that cannot be reached fails the deploy before any switches.
pub(crate) fn reachable(url: &str, timeout: Duration) -> Result<(), String> {
    let healthz = healthz_url(url)?;
    let client = crate::http::builder(crate::http::Redirects::SameOrigin)
        .timeout(timeout)
        .build()
        .map_err(|e| format!("failed to set up an HTTP client: {e}"))?;
    match client.get(healthz).send() {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("`GET /healthz` answered HTTP {}", resp.status().as_u16())),
        Err(e) => Err(secret::http_cause(&e)),
    }
}

/// How the webhook authenticates, for a dry run: never the credential itself.
pub(crate) fn auth_note(hook: &WebhookTarget) -> &'static str {
    match (
        hook.secret_env.is_some() || hook.secret_file.is_some(),
        hook.token_env.is_some() || hook.token_file.is_some(),
    ) {
        (true, true) => "signed X-Hub-Signature-256 and a bearer token, both redacted",
        (true, false) => "signed X-Hub-Signature-256, secret redacted",
        (false, true) => "bearer token, redacted",
        (false, false) => "unauthenticated",
    }
}

/// POSTs the release to a `pipe serve` hook (HMAC-signed) or a docker-puller; retries connect
/// errors and 5xx with backoff (1 s, 2 s), fails on any other non-2xx.
pub(crate) fn post(hook: &WebhookTarget, delivery: &Delivery<'_>, timeout: Duration) -> anyhow::Result<()> {
    post_to(hook, &hook.url, delivery, timeout)
}

/// [`post`] to one host of a fleet: `url` is the hook's URL with that host in it.
pub(crate) fn post_to(
    hook: &WebhookTarget,
    url: &str,
    delivery: &Delivery<'_>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let project = delivery.project;
    // `delivery` and `sent_at` are covered by the signature: a receiver refuses a replay. So is
    // `hook`, the last segment of the URL's path: a `pipe serve` receiver refuses a body signed
    // for another of its hooks.
    let hook_name = url.split(['?', '#']).next().unwrap_or("").trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let body = body(hook_name, delivery, &secret::random_id(), crate::clock::now().as_second());
    let secret = SecretRef::from_pair(&hook.secret_env, &hook.secret_file)
        .map(|s| secret::resolve(&s, &format!("project.{project}.deploy.webhook.secret")))
        .transpose()?;
    let token = SecretRef::from_pair(&hook.token_env, &hook.token_file)
        .map(|s| secret::resolve(&s, &format!("project.{project}.deploy.webhook.token")))
        .transpose()?;
    let client = crate::http::builder(crate::http::Redirects::SameOrigin)
        .timeout(timeout.min(Duration::from_secs(60)))
        .build()
        .context("failed to set up an HTTP client")?;
    let shown = shown(hook, url, project);
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1 << (attempt - 1)));
        }
        crate::signals::check()?;
        let mut request = if hook.docker_puller {
            let hook_name = hook.hook.clone().unwrap_or_else(|| project.to_string());
            let token = token.as_ref().map(|t| t.reveal().to_string()).unwrap_or_default();
            client.post(url).query(&[("token", token.as_str()), ("hook", hook_name.as_str())])
        } else {
            // The receiver holds the answer until the run ends (or `wait` passes), so a quick
            // deploy needs no status polling at all.
            let wait = timeout.min(Duration::from_secs(60)).saturating_sub(Duration::from_secs(5)).as_secs();
            client.post(url).query(&[("wait", wait.to_string())])
        };
        request = request
            .header("Content-Type", "application/json")
            .header("User-Agent", concat!("pipe/", env!("CARGO_PKG_VERSION")));
        if let Some(secret) = &secret {
            request =
                request.header("X-Hub-Signature-256", crate::secret::sign(secret.reveal().as_bytes(), body.as_bytes()));
        }
        if let (Some(token), false) = (&token, hook.docker_puller) {
            request = request.bearer_auth(token.reveal());
        }
        match request.body(body.clone()).send() {
            Ok(resp) if resp.status().is_success() => {
                if hook.docker_puller {
                    return Ok(());
                }
                let answer: serde_json::Value = resp.json_value();
                if run_ended(&answer)? {
                    return Ok(());
                }
                return match answer["status_url"].as_str() {
                    Some(status_url) => follow_run(url, &client, status_url, secret.as_ref(), token.as_ref(), timeout),
                    None => Ok(()),
                };
            }
            Ok(resp) if resp.status().is_server_error() => last = format!("HTTP {}", resp.status().as_u16()),
            Ok(resp) => match crate::http::unfollowed(&resp) {
                Some(why) => bail!("webhook `{shown}` {why}"),
                None => bail!("webhook `{shown}` answered HTTP {}", resp.status().as_u16()),
            },
            Err(e) if e.is_connect() || e.is_timeout() => last = secret::http_cause(&e),
            Err(e) => return Err(anyhow!("webhook `{shown}` failed: {}", secret::http_cause(&e))),
        }
    }
    Err(anyhow!("webhook `{shown}` failed after 3 attempts: {last}"))
}

/// The body a receiver gets (and the signature covers): the single-image fields as they always
/// were, and for a release of several images `images`, each with its name, repository, tag and
/// digest.
fn body(hook: &str, delivery: &Delivery<'_>, id: &str, sent_at: i64) -> String {
    let mut body = serde_json::json!({
        "hook": hook,
        "project": delivery.project,
        "ref": delivery.refname,
        "commit": delivery.commit,
        "image": delivery.image,
        "tag": delivery.tag,
        "digest": delivery.digest,
        "delivery": id,
        "sent_at": sent_at,
    });
    if !delivery.images.is_empty() {
        body["images"] = serde_json::json!(delivery.images);
    }
    if let Some(host) = delivery.host {
        body["host"] = serde_json::json!(host);
    }
    body.to_string()
}

/// Reads a response body as JSON, or `null`.
trait JsonValue {
    fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::blocking::Response {
    fn json_value(self) -> serde_json::Value {
        self.bytes().ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(serde_json::Value::Null)
    }
}

/// Whether a receiver's run document says the run ended: `Ok(true)` when it succeeded, an error
/// when it ended otherwise, `Ok(false)` while it is queued or running.
fn run_ended(run: &serde_json::Value) -> anyhow::Result<bool> {
    match run["status"].as_str().unwrap_or("") {
        "succeeded" => Ok(true),
        "queued" | "running" | "" => Ok(false),
        other => {
            let detail = run["error"].as_str().unwrap_or("");
            let health = health_answer(&run["health"]).map(|h| format!("; {h}")).unwrap_or_default();
            let tail = run["log_tail"].as_str().unwrap_or("");
            bail!("the receiver's run ended `{other}`: {detail}{health}\n{tail}");
        }
    }
}

/// The health check's last answer in a receiver's run document (`health`: `{url, status,
/// body}` or `{url, error}`), on one line, as a failed host's report gives it.
fn health_answer(health: &serde_json::Value) -> Option<String> {
    let url = health["url"].as_str().unwrap_or("");
    let one_line = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(status) = health["status"].as_u64() {
        let body = one_line(health["body"].as_str().unwrap_or(""));
        let body = if body.is_empty() { String::new() } else { format!(": {body}") };
        return Some(format!("health check `{url}` last answered HTTP {status}{body}"));
    }
    let error = health["error"].as_str()?;
    Some(format!("health check `{url}` last answered: {}", one_line(error)))
}

/// A `pipe serve` hook answers `202` with a `status_url`: follow it until the run ends, so the
/// deploy is reported as it really went on the far side.
fn follow_run(
    hook_url: &str,
    client: &reqwest::blocking::Client,
    status_url: &str,
    secret: Option<&secret::Secret>,
    token: Option<&secret::Secret>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let base = reqwest::Url::parse(hook_url).context("invalid webhook URL")?;
    let url = base.join(status_url).context("invalid status URL from the receiver")?;
    // The token and signature go only where the webhook itself goes.
    if url.origin() != base.origin() {
        bail!("the receiver named a status URL on another origin; not following it");
    }
    let deadline = Instant::now() + timeout;
    let mut last = serde_json::Value::Null;
    // Backs off from 0.3 s to 5 s: a long run costs the receiver a request every few seconds.
    let mut pause = Duration::from_millis(300);
    while Instant::now() < deadline {
        crate::signals::check()?;
        let mut request = client.get(url.clone());
        if let Some(secret) = secret {
            request = request
                .header("X-Hub-Signature-256", crate::secret::sign(secret.reveal().as_bytes(), url.path().as_bytes()));
        }
        if let Some(token) = token {
            request = request.bearer_auth(token.reveal());
        }
        if let Ok(resp) = request.send()
            && resp.status().is_success()
        {
            last = resp.json_value();
            if run_ended(&last)? {
                return Ok(());
            }
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_secs(5));
    }
    bail!("the receiver's run did not finish in time (last status: {})", last["status"].as_str().unwrap_or("unknown"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_names_its_health_checks_last_answer_when_the_receiver_gives_it() {
        let run = serde_json::json!({
            "status": "failed",
            "error": "the release failed its health check",
            "health": {"url": "http://web/health", "status": 503, "body": "db down\nretry later"},
            "log_tail": "step 1",
        });
        let err = run_ended(&run).unwrap_err().to_string();
        assert_eq!(
            err.lines().next().unwrap(),
            "the receiver's run ended `failed`: the release failed its health check; health check `http://web/health` last answered HTTP 503: db down retry later"
        );
        let refused = serde_json::json!({"status": "failed", "error": "e", "health": {"url": "http://web/health", "error": "connection refused"}});
        assert!(run_ended(&refused).unwrap_err().to_string().contains("last answered: connection refused"));
        let plain = serde_json::json!({"status": "failed", "error": "`docker compose up` failed"});
        assert_eq!(
            run_ended(&plain).unwrap_err().to_string(),
            "the receiver's run ended `failed`: `docker compose up` failed\n"
        );
    }

    #[test]
    fn a_release_of_several_images_carries_each_beside_the_single_image_fields() {
        let images = [
            ReleaseImage { name: "api".into(), image: "r/app-api".into(), tag: "c0ffee".into(), digest: None },
            ReleaseImage {
                name: "front".into(),
                image: "r/app-front".into(),
                tag: "c0ffee".into(),
                digest: Some("sha256:ab".into()),
            },
        ];
        let mut delivery = Delivery {
            project: "app",
            refname: "refs/heads/main",
            commit: "c0ffee00",
            image: "r/app-api",
            tag: "c0ffee",
            digest: None,
            images: &images,
            host: None,
        };
        let doc: serde_json::Value = serde_json::from_str(&body("app", &delivery, "d1", 7)).unwrap();
        assert_eq!((doc["image"].as_str(), doc["tag"].as_str()), (Some("r/app-api"), Some("c0ffee")));
        assert_eq!(
            doc["images"],
            serde_json::json!([
                {"name": "api", "image": "r/app-api", "tag": "c0ffee", "digest": null},
                {"name": "front", "image": "r/app-front", "tag": "c0ffee", "digest": "sha256:ab"},
            ])
        );
        delivery.images = &[];
        let one: serde_json::Value = serde_json::from_str(&body("app", &delivery, "d1", 7)).unwrap();
        assert!(one.get("images").is_none(), "a release of one image keeps the body it always had: {one}");
        assert!(one.get("host").is_none(), "a target of one receiver names no host: {one}");
        delivery.host = Some("10.0.0.7:9010");
        let fleet: serde_json::Value = serde_json::from_str(&body("app", &delivery, "d1", 7)).unwrap();
        assert_eq!(fleet["host"], "10.0.0.7:9010", "a fleet's body names the host it goes to");
    }

    #[test]
    fn a_dry_run_shows_the_check_of_every_host_then_each_batch() {
        let hook = WebhookTarget {
            url: "http://{host}:9010/hooks/app".into(),
            secret_env: Some("S".into()),
            secret_file: None,
            token_env: None,
            token_file: None,
            docker_puller: false,
            hook: None,
            hosts: vec!["web1".into(), "web2".into(), "web3".into()],
            batch: Some(2),
            skip_unreachable: false,
        };
        let post = "(body: project, ref, commit, image, digest; signed X-Hub-Signature-256, secret redacted)";
        assert_eq!(
            plan(&hook, "app", false),
            vec![
                "GET http://web1:9010/healthz".to_string(),
                "GET http://web2:9010/healthz".into(),
                "GET http://web3:9010/healthz".into(),
                "batch 1:".into(),
                format!("  POST http://web1:9010/hooks/app {post}"),
                format!("  POST http://web2:9010/hooks/app {post}"),
                "batch 2:".into(),
                format!("  POST http://web3:9010/hooks/app {post}"),
                "on any failure: POST the previous release to every host asked".into(),
            ]
        );
        let several = plan(&hook, "app", true);
        assert!(several[4].contains("(body: project, ref, commit, image, digest, images; "), "{several:?}");
    }
}
