//! Cross-field rules serde cannot express, each reported as a located diagnostic.

use crate::config::document::Cx;
use crate::config::types::Config;

mod fleet;
mod forges;
mod hook;
mod ingress;
mod pair;
mod previews;
mod project;
mod ssh;
mod values;

pub(crate) use forges::validate_project_forge;
pub(crate) use hook::validate_hook;
pub(crate) use ingress::validate_ingress;
use pair::{Need, Pair};
pub(crate) use previews::validate_project_previews;
pub(crate) use project::{parse_memory, validate_project};
pub(crate) use ssh::parse_host as parse_ssh_host;

/// Cross-field rules serde cannot express.
pub(crate) fn validate(cx: &mut Cx<'_>, config: &mut Config) {
    for (name, reg) in &config.registries {
        let table = ["registry", name.as_str()];
        let password = Pair::new(&table, "password", &reg.password_env, &reg.password_file);
        password.check(cx, Need::AtMostOne, || {
            format!("registry `{name}`: set one of `password_env` and `password_file`, not both")
        });
        if reg.ecr.is_some() && password.any() {
            cx.error_at(
                &["registry", name, "ecr"],
                format!("registry `{name}`: `ecr` logs in by itself; drop `password_env`/`password_file`"),
            );
        }
        if password.any() && reg.username.is_none() {
            cx.error_at(
                &["registry", name, "username"],
                format!("registry `{name}`: `username` is required with a password"),
            );
        }
        if reg.url.is_empty() || reg.url.contains("://") {
            cx.error_at(
                &["registry", name, "url"],
                format!("registry `{name}`: `url` is a registry host like `registry.example.com[:port][/prefix]`, without a scheme"),
            );
        }
    }
    let slack = config.notify.slack.as_ref().map(|s| ("slack", "webhook_url", &s.webhook_url_env, &s.webhook_url_file));
    let webhook = config.notify.webhook.as_ref().map(|w| ("webhook", "url", &w.url_env, &w.url_file));
    for (which, key, env, file) in slack.into_iter().chain(webhook) {
        Pair::new(&["notify", which], key, env, file).check(cx, Need::ExactlyOne, || {
            format!("`notify.{which}`: set exactly one of `{key}_env` and `{key}_file`")
        });
    }
    let counts = [
        ("parallel", config.settings.parallel),
        ("max_builds", config.settings.max_builds),
        ("max_builds_per_author", config.settings.max_builds_per_author),
        ("max_previews_per_author", config.settings.max_previews_per_author),
    ];
    for (key, value) in counts {
        if value == 0 {
            cx.error_at(&["pipe", key], format!("`pipe.{key}` must be at least 1"));
        }
    }
    let registries: Vec<String> = config.registries.keys().cloned().collect();
    for (name, project) in &mut config.projects {
        validate_project(cx, name, project, &registries);
    }
    previews::validate_previews(cx, config);
    forges::validate_forges(cx, config);
}
