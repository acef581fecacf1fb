//! Cross-field rules serde cannot express, each reported as a located diagnostic.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::document::Cx;
use super::patterns::compile_branch_glob;
use super::{Config, Hook, Ingress, Notify, Patterns, Project};

/// `[ingress]` values end up in nginx directives: each must be one plain token of its kind.
pub(super) fn validate_ingress(cx: &mut Cx<'_>, ingress: &Ingress) {
    let host_chars = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
    let listen_chars = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || ".:[]-".contains(c));
    let size = |s: &str| {
        let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
        !digits.is_empty() && s.len() - digits.len() <= 1 && digits.chars().all(|c| c.is_ascii_digit())
    };
    let checks = [
        ("domain", host_chars(&ingress.domain), "a domain like `devel.example.com`"),
        ("listen", listen_chars(&ingress.listen), "a port or `address:port`"),
        ("body_size", size(&ingress.body_size), "a size like `10m`"),
        ("resolver", listen_chars(&ingress.resolver), "an address like `127.0.0.11`"),
        ("upstream", ingress.upstream.as_deref().is_none_or(host_chars), "a host like `127.0.0.1`"),
    ];
    for (key, ok, expected) in checks {
        if !ok {
            cx.error(None, format!("`ingress.{key}` must be {expected}"));
        }
    }
}

/// Service names become host names (`<service>.DOMAIN`) and nginx map keys.
fn validate_ingress_services(cx: &mut Cx<'_>, owner: &str, span: &Range<usize>, services: &BTreeMap<String, u16>) {
    for (service, port) in services {
        let label = !service.is_empty()
            && service.len() <= 63
            && service.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !service.starts_with('-')
            && !service.ends_with('-');
        if !label {
            cx.error(
                Some(span.clone()),
                format!("{owner}: ingress service `{service}` must be a DNS label: lowercase letters, digits and `-`"),
            );
        }
        if *port == 0 {
            cx.error(Some(span.clone()), format!("{owner}: ingress service `{service}` needs a port from 1 to 65535"));
        }
    }
}

/// Cross-field rules serde cannot express.
pub(super) fn validate(cx: &mut Cx<'_>, config: &mut Config) {
    for (name, reg) in &config.registries {
        let has_password = reg.password_env.is_some() || reg.password_file.is_some();
        if reg.password_env.is_some() && reg.password_file.is_some() {
            cx.error(None, format!("registry `{name}`: set one of `password_env` and `password_file`, not both"));
        }
        if reg.ecr.is_some() && has_password {
            cx.error(None, format!("registry `{name}`: `ecr` logs in by itself; drop `password_env`/`password_file`"));
        }
        if has_password && reg.username.is_none() {
            cx.error(None, format!("registry `{name}`: `username` is required with a password"));
        }
        if reg.url.is_empty() || reg.url.contains("://") {
            cx.error(
                None,
                format!("registry `{name}`: `url` is a registry host like `registry.example.com[:port][/prefix]`, without a scheme"),
            );
        }
    }
    for (which, env, file) in notify_pairs(&config.notify) {
        if env == file {
            cx.error(
                None,
                format!("`notify.{which}`: set exactly one of `{}_env` and `{}_file`", url_key(which), url_key(which)),
            );
        }
    }
    if config.settings.parallel == 0 {
        cx.error(None, "`pipe.parallel` must be at least 1".into());
    }
    let registries: Vec<String> = config.registries.keys().cloned().collect();
    for (name, project) in &mut config.projects {
        validate_project(cx, name, project, &registries);
    }
}

fn notify_pairs(notify: &Notify) -> Vec<(&'static str, bool, bool)> {
    let mut out = Vec::new();
    if let Some(s) = &notify.slack {
        out.push(("slack", s.webhook_url_env.is_some(), s.webhook_url_file.is_some()));
    }
    if let Some(w) = &notify.webhook {
        out.push(("webhook", w.url_env.is_some(), w.url_file.is_some()));
    }
    out
}

fn url_key(which: &str) -> &'static str {
    if which == "slack" { "webhook_url" } else { "url" }
}

fn validate_project(cx: &mut Cx<'_>, name: &str, project: &mut Project, registries: &[String]) {
    if project.repo.trim().is_empty() {
        cx.error(None, format!("project `{name}`: `repo` is empty"));
    }
    if project.branches.is_empty() {
        cx.error(None, format!("project `{name}`: `branches` is empty; list at least one branch or pattern"));
    }
    project.tracked = compile_spanned(cx, &project.branches);
    if let Some(auth) = &project.auth
        && auth.token_env.is_some()
        && auth.token_file.is_some()
    {
        cx.error(None, format!("project `{name}`: `auth`: set one of `token_env` and `token_file`, not both"));
    }
    let mut target_names = BTreeMap::new();
    for deploy in &mut project.deploy {
        let span = deploy.span();
        let deploy = deploy.get_mut();
        let kinds =
            [deploy.compose.is_some(), deploy.swarm.is_some(), deploy.command.is_some(), deploy.webhook.is_some()];
        let count = kinds.iter().filter(|k| **k).count();
        if count == 0 && deploy.push.is_empty() {
            cx.error(
                Some(span.clone()),
                format!(
                    "project `{name}`: a deploy entry needs `push` or one of `compose`, `swarm`, `command`, `webhook`"
                ),
            );
        }
        if count > 1 {
            cx.error(
                Some(span.clone()),
                format!("project `{name}`: a deploy entry has one target kind; split `compose`, `swarm`, `command` and `webhook` into separate `[[project.{name}.deploy]]` entries"),
            );
        }
        if let Some(cmd) = &deploy.command
            && cmd.argv.is_some() == cmd.shell.is_some()
        {
            cx.error(
                Some(span.clone()),
                format!("project `{name}`: `command` takes exactly one of `argv` (preferred) and `shell`"),
            );
        }
        if let Some(cmd) = &deploy.command
            && cmd.argv.as_ref().is_some_and(|a| a.is_empty())
        {
            cx.error(Some(span.clone()), format!("project `{name}`: `command.argv` is empty"));
        }
        if let Some(health) = &deploy.health
            && health.url.is_some() == health.container.is_some()
        {
            cx.error(
                Some(span.clone()),
                format!("project `{name}`: `health` takes exactly one of `url` and `container`"),
            );
        }
        if let Some(hook) = &deploy.webhook {
            if hook.secret_env.is_some() && hook.secret_file.is_some() {
                cx.error(
                    Some(span.clone()),
                    format!("project `{name}`: `webhook`: set one of `secret_env` and `secret_file`, not both"),
                );
            }
            if hook.token_env.is_some() && hook.token_file.is_some() {
                cx.error(
                    Some(span.clone()),
                    format!("project `{name}`: `webhook`: set one of `token_env` and `token_file`, not both"),
                );
            }
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                cx.error(
                    Some(span.clone()),
                    format!("project `{name}`: `webhook.url` must start with `http://` or `https://`"),
                );
            }
        }
        if deploy.branches.is_empty() {
            cx.error(Some(span.clone()), format!("project `{name}`: a deploy entry needs `branches`"));
        }
        if deploy.webhook.is_some() && !deploy.ingress.is_empty() {
            cx.error(
                Some(span.clone()),
                format!(
                    "project `{name}`: `ingress` on a webhook target belongs in the receiving host's `[serve.hooks.*]`"
                ),
            );
        }
        validate_ingress_services(cx, &format!("project `{name}`"), &span, &deploy.ingress);
        deploy.matcher = compile_spanned(cx, &deploy.branches);
        for registry in &deploy.push {
            if !registries.iter().any(|r| r == registry.get_ref()) {
                let known = if registries.is_empty() { "none are defined".to_string() } else { registries.join(", ") };
                cx.error(
                    Some(registry.span()),
                    format!("unknown registry `{}` (registries: {known})", registry.get_ref()),
                );
            }
        }
        let target = deploy.display_name().to_string();
        if count == 1 && target_names.insert(target.clone(), ()).is_some() {
            cx.error(
                Some(span),
                format!("project `{name}`: two deploy targets are named `{target}`; give each a distinct `name`"),
            );
        }
    }
}

pub(super) fn validate_hook(cx: &mut Cx<'_>, name: &str, span: Range<usize>, hook: &mut Hook) {
    let token = hook.token_env.is_some() || hook.token_file.is_some();
    let secret = hook.secret_env.is_some() || hook.secret_file.is_some();
    if hook.token_env.is_some() && hook.token_file.is_some() || hook.secret_env.is_some() && hook.secret_file.is_some()
    {
        cx.error(
            Some(span.clone()),
            format!("hook `{name}`: set one of `*_env` and `*_file` for each credential, not both"),
        );
    }
    validate_ingress_services(cx, &format!("hook `{name}`"), &span, &hook.ingress);
    if !token && !secret {
        cx.error(Some(span.clone()), format!("hook `{name}` needs credentials: `secret_env`/`secret_file` (HMAC) or `token_env`/`token_file` (bearer)"));
    }
    if hook.docker_puller && !token {
        cx.error(
            Some(span.clone()),
            format!("hook `{name}`: `docker_puller = true` needs a `token_env` or `token_file`"),
        );
    }
    let kinds = [hook.compose.is_some(), hook.swarm.is_some(), hook.command.is_some()].iter().filter(|k| **k).count();
    if kinds != 1 {
        cx.error(Some(span.clone()), format!("hook `{name}` runs exactly one of `compose`, `swarm`, `command`"));
    }
    if (hook.compose.is_some() || hook.swarm.is_some()) && hook.images.is_empty() {
        cx.error(
            Some(span.clone()),
            format!("hook `{name}` deploys images: list the repositories it may run in `images`, so a leaked secret cannot run an arbitrary image"),
        );
    }
    if let Some(cmd) = &hook.command
        && cmd.argv.is_some() == cmd.shell.is_some()
    {
        cx.error(Some(span.clone()), format!("hook `{name}`: `command` takes exactly one of `argv` and `shell`"));
    }
    match Patterns::compile_images(hook.images.iter().map(String::as_str)) {
        Ok(p) => hook.allowed = p,
        Err(e) => cx.error(Some(span), format!("hook `{name}`: {e}")),
    }
}

fn compile_spanned(cx: &mut Cx<'_>, patterns: &[Spanned<String>]) -> Patterns {
    for pattern in patterns {
        if let Err(why) = compile_branch_glob(pattern.get_ref()) {
            cx.error(Some(pattern.span()), why);
        }
    }
    Patterns::compile(patterns.iter().map(|p| p.get_ref().as_str())).unwrap_or_default()
}
