//! The forges' own webhooks, as hints to poll now: who signed them and which event they carry.
//! Pure: the receiver (`serve::forge`) reads the head and body and asks in here.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=HEX` (HMAC-SHA256 of the body), `X-GitHub-Event`,
//!   `X-GitHub-Delivery` (docs.github.com/en/webhooks/webhook-events-and-payloads).
//! - Gitea/Forgejo: `X-Gitea-Signature: HEX` (`X-Forgejo-Signature` on Forgejo), `X-Gitea-Event`,
//!   `X-Gitea-Delivery` (docs.gitea.com/usage/webhooks).
//! - GitLab: `X-Gitlab-Token` equal to the secret, `X-Gitlab-Event`, `X-Gitlab-Event-UUID`
//!   (docs.gitlab.com/user/project/integrations/webhooks/).

use crate::config::ForgeKind;
use crate::secret::{self, Secret};

/// What an event asks of pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// A branch or pull request moved: poll this project now.
    Run,
    /// The forge checks the hook: answer 200.
    Ping,
    /// Anything else: acknowledged, nothing runs.
    Ignore,
}

/// The header naming the event.
pub(crate) fn event_header(kind: ForgeKind) -> &'static str {
    match kind {
        ForgeKind::Github => "X-GitHub-Event",
        ForgeKind::Gitea => "X-Gitea-Event",
        ForgeKind::Gitlab => "X-Gitlab-Event",
    }
}

/// The header carrying the delivery's unique id.
pub(crate) fn delivery_header(kind: ForgeKind) -> &'static str {
    match kind {
        ForgeKind::Github => "X-GitHub-Delivery",
        ForgeKind::Gitea => "X-Gitea-Delivery",
        ForgeKind::Gitlab => "X-Gitlab-Event-UUID",
    }
}

/// The signature headers, in the order they are looked for (none on GitLab: its token is
/// compared from the head).
pub(crate) fn signature_headers(kind: ForgeKind) -> &'static [&'static str] {
    match kind {
        ForgeKind::Github => &["X-Hub-Signature-256"],
        ForgeKind::Gitea => &["X-Gitea-Signature", "X-Forgejo-Signature"],
        ForgeKind::Gitlab => &[],
    }
}

/// What a delivery asks for. The event header is not signed, so it may only narrow what the
/// (signed) body is: an event that runs must come with a body that reads as a move — a `ref`
/// (push, tag, branch created or deleted), a `pull_request`, GitLab's `object_kind` or
/// `event_name`, or an organization's `repository` with its `action` — and never with a ping's
/// `zen`. A captured ping or comment relabelled `push` runs nothing.
pub(crate) fn action(kind: ForgeKind, event: &str, body: &[u8]) -> Action {
    match event_action(kind, event) {
        Action::Run if !reads_as_move(body) => Action::Ignore,
        action => action,
    }
}

fn reads_as_move(body: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(doc)) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
    let has = |k: &str| doc.contains_key(k);
    !has("zen")
        && (has("ref")
            || has("pull_request")
            || has("object_kind")
            || has("event_name")
            || (has("repository") && doc.get("action").is_some_and(serde_json::Value::is_string)))
}

/// A delivery's key in the record of seen deliveries: the project and the body's digest, so
/// the unsigned delivery id cannot make a body count twice.
pub(crate) fn replay_key(project: &str, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect();
    format!("forge:{project}:{digest}")
}

/// What an event name asks for.
fn event_action(kind: ForgeKind, event: &str) -> Action {
    match (kind, event) {
        (ForgeKind::Github, "ping") => Action::Ping,
        // `repository`: an organization's repository was created, archived, renamed or deleted
        // (its webhook at `/forge/FORGE`, for organization discovery).
        (
            ForgeKind::Github | ForgeKind::Gitea,
            "push" | "pull_request" | "pull_request_sync" | "create" | "delete" | "repository",
        ) => Action::Run,
        (ForgeKind::Gitlab, "Push Hook" | "Merge Request Hook" | "Tag Push Hook" | "System Hook") => Action::Run,
        _ => Action::Ignore,
    }
}

/// GitLab's token, compared in constant time.
pub(crate) fn token_matches(secret: &Secret, given: &str) -> bool {
    secret::same(secret.reveal().as_bytes(), given.as_bytes())
}

/// A body's signature as the forge sends it: `sha256=HEX` on GitHub, bare `HEX` on Gitea;
/// compared in constant time.
pub(crate) fn signature_matches(kind: ForgeKind, secret: &Secret, body: &[u8], given: &str) -> bool {
    let expected = secret::sign(secret.reveal().as_bytes(), body);
    let expected = match kind {
        ForgeKind::Github => expected.as_str(),
        _ => expected.trim_start_matches("sha256="),
    };
    secret::same(expected.as_bytes(), given.trim().to_ascii_lowercase().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_each_forges_own_form() {
        let secret = crate::secret::random();
        let body = br#"{"ref":"refs/heads/main"}"#;
        let signed = crate::secret::sign(secret.reveal().as_bytes(), body);
        assert!(signature_matches(ForgeKind::Github, &secret, body, &signed));
        assert!(!signature_matches(ForgeKind::Github, &secret, body, signed.trim_start_matches("sha256=")));
        assert!(signature_matches(ForgeKind::Gitea, &secret, body, signed.trim_start_matches("sha256=")));
        assert!(!signature_matches(ForgeKind::Gitea, &secret, b"other", signed.trim_start_matches("sha256=")));
        assert!(token_matches(&secret, secret.reveal()));
        assert!(!token_matches(&secret, "nope"));
    }

    #[test]
    fn only_moves_run() {
        let push = br#"{"ref": "refs/heads/main", "after": "abc"}"#;
        assert_eq!(action(ForgeKind::Github, "push", push), Action::Run);
        assert_eq!(
            action(ForgeKind::Github, "pull_request", br#"{"action": "opened", "pull_request": {}}"#),
            Action::Run
        );
        assert_eq!(action(ForgeKind::Github, "ping", br#"{"zen": "x"}"#), Action::Ping);
        assert_eq!(action(ForgeKind::Github, "issues", push), Action::Ignore);
        assert_eq!(action(ForgeKind::Gitea, "push", push), Action::Run);
        assert_eq!(
            action(ForgeKind::Gitlab, "Merge Request Hook", br#"{"object_kind": "merge_request"}"#),
            Action::Run
        );
        assert_eq!(action(ForgeKind::Gitlab, "push", push), Action::Ignore);
        assert_eq!(action(ForgeKind::Gitea, "repository", br#"{"action": "created", "repository": {}}"#), Action::Run);
    }

    #[test]
    fn an_unsigned_event_header_cannot_turn_a_body_into_a_run() {
        // A ping, an issue comment, a non-JSON body relabelled `push`: nothing runs.
        for body in [&br#"{"zen": "x", "hook_id": 1, "ref": "r"}"#[..], br#"{"issue": {}, "repository": {}}"#, b"push"]
        {
            assert_eq!(action(ForgeKind::Github, "push", body), Action::Ignore, "{}", String::from_utf8_lossy(body));
        }
        assert_ne!(replay_key("a", b"x"), replay_key("b", b"x"), "per project");
        assert_ne!(replay_key("a", b"x"), replay_key("a", b"y"));
    }
}
