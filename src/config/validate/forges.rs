//! `[forge.NAME]` tables and the projects' `forge`, `forge_repo` and `webhook_secret_*` keys.

use std::collections::BTreeMap;

use super::pair::{Need, Pair};
use crate::config::document::Cx;
use crate::config::forge::ForgeKind;
use crate::config::project::Project;
use crate::config::types::Config;

/// `[forge.NAME]` tables and the projects' `forge`, `forge_repo` and `webhook_secret_*` keys.
pub(super) fn validate_forges(cx: &mut Cx<'_>, config: &Config) {
    for (name, forge) in &config.forges {
        let table = ["forge", name.as_str()];
        Pair::new(&table, "token", &forge.token_env, &forge.token_file).check(cx, Need::ExactlyOne, || {
            format!(
                "forge `{name}`: set exactly one of `token_env` and `token_file` (a token that may set commit statuses)"
            )
        });
        let api = forge.api_base();
        let suffix = match forge.kind {
            ForgeKind::Github => None,
            ForgeKind::Gitea => Some("/api/v1"),
            ForgeKind::Gitlab => Some("/api/v4"),
        };
        let scheme = api.starts_with("https://") || api.starts_with("http://");
        if !scheme || api.contains(char::is_whitespace) || suffix.is_some_and(|s| !api.ends_with(s)) {
            let example = match forge.kind {
                ForgeKind::Github => "`https://api.github.com` or `https://HOST/api/v3`",
                ForgeKind::Gitea => "`https://HOST/api/v1`",
                ForgeKind::Gitlab => "`https://HOST/api/v4`",
            };
            let at: &[&str] = if forge.api.is_some() { &["forge", name, "api"] } else { &["forge", name] };
            cx.error_at(at, format!("forge `{name}`: `api` must be the API base URL, like {example}"));
        }
        if forge.api.is_none() && forge.kind != ForgeKind::Github {
            cx.error_at(&table, format!("forge `{name}`: `api` is required for {}", forge.kind.as_str()));
        }
    }
    for (name, project) in &config.projects {
        validate_project_forge(cx, &config.forges, name, project);
    }
}

/// A project's `forge`, `forge_repo` and `webhook_secret_*` keys.
pub(crate) fn validate_project_forge(
    cx: &mut Cx<'_>,
    forges: &BTreeMap<String, crate::config::forge::Forge>,
    name: &str,
    project: &Project,
) {
    let at = |key: &'static str| ["project", name, key];
    Pair::new(&["project", name], "webhook_secret", &project.webhook_secret_env, &project.webhook_secret_file).check(
        cx,
        Need::AtMostOne,
        || format!("project `{name}`: set one of `webhook_secret_env` and `webhook_secret_file`, not both"),
    );
    let Some(forge_name) = &project.forge else {
        let stray = if project.forge_repo.is_some() {
            Some("forge_repo")
        } else if project.webhook_secret_env.is_some() {
            Some("webhook_secret_env")
        } else if project.webhook_secret_file.is_some() {
            Some("webhook_secret_file")
        } else {
            None
        };
        if let Some(key) = stray {
            cx.error_at(&at(key), format!("project `{name}`: `{key}` needs `forge = \"NAME\"` of a `[forge.NAME]`"));
        }
        return;
    };
    let Some(forge) = forges.get(forge_name) else {
        let known: Vec<String> = forges.keys().map(|k| format!("`{k}`")).collect();
        let known = if known.is_empty() { "none defined".into() } else { known.join(", ") };
        cx.error_at(&at("forge"), format!("project `{name}`: no `[forge.{forge_name}]` (forges: {known})"));
        return;
    };
    match &project.forge_repo {
        None => cx.error_at(
            &at("forge"),
            format!("project `{name}`: `forge_repo` is required with `forge` (the repository on the forge)"),
        ),
        Some(repo) if !valid_forge_repo(forge.kind, repo) => {
            let expected = match forge.kind {
                ForgeKind::Gitlab => "a project id like `42` or a path like `group/project`",
                _ => "`owner/repo`",
            };
            cx.error_at(&at("forge_repo"), format!("project `{name}`: `forge_repo` must be {expected}"));
        }
        Some(_) => {}
    }
}

/// `owner/repo` on GitHub and Gitea; a numeric id or `group/…/project` path on GitLab.
pub(super) fn valid_forge_repo(kind: ForgeKind, repo: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let parts: Vec<&str> = repo.split('/').collect();
    match kind {
        ForgeKind::Gitlab => {
            (!repo.is_empty() && repo.bytes().all(|b| b.is_ascii_digit()))
                || (parts.len() >= 2 && parts.iter().all(|p| part(p)))
        }
        _ => parts.len() == 2 && parts.iter().all(|p| part(p)),
    }
}
