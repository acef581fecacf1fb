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

/// What an event name asks for.
pub(crate) fn action(kind: ForgeKind, event: &str) -> Action {
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
        assert_eq!(action(ForgeKind::Github, "push"), Action::Run);
        assert_eq!(action(ForgeKind::Github, "pull_request"), Action::Run);
        assert_eq!(action(ForgeKind::Github, "ping"), Action::Ping);
        assert_eq!(action(ForgeKind::Github, "issues"), Action::Ignore);
        assert_eq!(action(ForgeKind::Gitea, "push"), Action::Run);
        assert_eq!(action(ForgeKind::Gitlab, "Merge Request Hook"), Action::Run);
        assert_eq!(action(ForgeKind::Gitlab, "push"), Action::Ignore);
    }
}
