//! One `[project.NAME]`, written out or discovered: its keys, deploy entries and what a
//! repository's code gets (build args, test variables, limits, submodules).

use std::collections::BTreeMap;

use toml::Spanned;

use super::ingress::validate_ingress_services;
use super::pair::{Need, Pair};
use super::values::{Table, validate_values};
use crate::config::document::Cx;
use crate::config::patterns::Patterns;
use crate::config::patterns::compile_branch_glob;
use crate::config::project::{Project, Submodules};

pub(crate) fn validate_project(cx: &mut Cx<'_>, name: &str, project: &mut Project, registries: &[String]) {
    if project.repo.trim().is_empty() {
        cx.error_at(&["project", name, "repo"], format!("project `{name}`: `repo` is empty"));
    }
    if project.branches.is_empty() {
        cx.error_at(
            &["project", name, "branches"],
            format!("project `{name}`: `branches` is empty; list at least one branch or pattern"),
        );
    }
    if let Some(image) = &project.image
        && crate::docker::in_untrusted_namespace(image)
    {
        cx.error_at(
            &["project", name, "image"],
            format!(
                "project `{name}`: `image = \"{image}\"` is under `{}`, where only untrusted refs' builds go",
                crate::docker::UNTRUSTED_NAMESPACE
            ),
        );
    }
    let single: Vec<&str> = [
        ("image", project.image.is_some()),
        ("dockerfile", project.dockerfile.is_some()),
        ("context", project.context.is_some()),
        ("test", project.test.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set && !project.images.is_empty())
    .map(|(k, _)| k)
    .collect();
    crate::config::images::validate_images(cx, &["project", name], &project.images, &single);
    project.tracked = compile_spanned(cx, &project.branches);
    project.trusted = project.trusted_branches.as_ref().map(|patterns| compile_spanned(cx, patterns));
    validate_trust(cx, name, project);
    if let Some(auth) = &project.auth {
        Pair::new(&["project", name, "auth"], "token", &auth.token_env, &auth.token_file).check(
            cx,
            Need::AtMostOne,
            || format!("project `{name}`: `auth`: set one of `token_env` and `token_file`, not both"),
        );
    }
    let mut target_names = BTreeMap::new();
    for (index, deploy) in project.deploy.iter_mut().enumerate() {
        let index = index.to_string();
        let entry = ["project", name, "deploy", index.as_str()];
        let at = |key: &'static str| [entry.as_slice(), &[key]].concat();
        let webhook_table = at("webhook");
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
            cx.error_at(
                &at("command"),
                format!("project `{name}`: `command` takes exactly one of `argv` (preferred) and `shell`"),
            );
        }
        if let Some(cmd) = &deploy.command
            && cmd.argv.as_ref().is_some_and(|a| a.is_empty())
        {
            cx.error_at(
                &[entry.as_slice(), &["command", "argv"]].concat(),
                format!("project `{name}`: `command.argv` is empty"),
            );
        }
        super::ssh::validate_ssh(cx, name, &entry, deploy);
        if let Some(health) = &deploy.health
            && health.url.is_some() == health.container.is_some()
        {
            cx.error_at(
                &at("health"),
                format!("project `{name}`: `health` takes exactly one of `url` and `container`"),
            );
        }
        if let Some(hook) = &deploy.webhook {
            Pair::new(&webhook_table, "secret", &hook.secret_env, &hook.secret_file).check(cx, Need::AtMostOne, || {
                format!("project `{name}`: `webhook`: set one of `secret_env` and `secret_file`, not both")
            });
            Pair::new(&webhook_table, "token", &hook.token_env, &hook.token_file).check(cx, Need::AtMostOne, || {
                format!("project `{name}`: `webhook`: set one of `token_env` and `token_file`, not both")
            });
            super::fleet::validate_fleet(cx, name, &entry, hook);
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                cx.error_at(
                    &[entry.as_slice(), &["webhook", "url"]].concat(),
                    format!("project `{name}`: `webhook.url` must start with `http://` or `https://`"),
                );
            }
        }
        if deploy.branches.is_empty() {
            cx.error(Some(span.clone()), format!("project `{name}`: a deploy entry needs `branches`"));
        }
        if deploy.webhook.is_some() && !deploy.ingress.is_empty() {
            cx.error_at(
                &at("ingress"),
                format!(
                    "project `{name}`: `ingress` on a webhook target belongs in the receiving host's `[serve.hooks.*]`"
                ),
            );
        }
        validate_ingress_services(cx, &format!("project `{name}`"), &entry, &deploy.ingress);
        let env_table = format!("deploy.{}.env", deploy.display_name());
        validate_values(cx, &format!("project `{name}`"), &env_table, Table::Deploy, &deploy.env);
        if deploy.webhook.is_some() && !deploy.env.is_empty() {
            cx.error_at(
                &at("env"),
                format!(
                    "project `{name}`: `env` on a webhook target belongs in the receiving host's `[serve.hooks.*]`"
                ),
            );
        }
        if let Some(release) = &deploy.release {
            if deploy.compose.is_none() || deploy.ingress.is_empty() {
                cx.error_at(
                    &at("release"),
                    format!("project `{name}`: `release` runs before an ingress switch: it needs a `compose` target with `ingress`"),
                );
            } else if release.argv.is_empty() {
                cx.error_at(
                    &[entry.as_slice(), &["release", "argv"]].concat(),
                    format!("project `{name}`: `release.argv` is empty"),
                );
            }
        }
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
            cx.error_at(
                &at("name"),
                format!("project `{name}`: two deploy targets are named `{target}`; give each a distinct `name`"),
            );
        }
    }
}

pub(super) fn compile_spanned(cx: &mut Cx<'_>, patterns: &[Spanned<String>]) -> Patterns {
    for pattern in patterns {
        if let Err(why) = compile_branch_glob(pattern.get_ref()) {
            cx.error(Some(pattern.span()), why);
        }
    }
    Patterns::compile(patterns.iter().map(|p| p.get_ref().as_str())).unwrap_or_default()
}

/// Build args, test variables, limits and submodule patterns: the parts of a project that
/// decide what a repository's code gets.
pub(super) fn validate_trust(cx: &mut Cx<'_>, name: &str, project: &Project) {
    for (table, values) in [("build_args", &project.build_args), ("test_env", &project.test_env)] {
        validate_values(cx, &format!("project `{name}`"), table, Table::Build, values);
    }
    let limits = &project.limits;
    let digits = limits.memory.trim_end_matches(['b', 'k', 'm', 'g', 'B', 'K', 'M', 'G']);
    let memory_ok = !digits.is_empty()
        && limits.memory.len() - digits.len() <= 1
        && digits.bytes().all(|b| b.is_ascii_digit())
        && parse_memory(&limits.memory).is_some_and(|b| b >= 6 * 1024 * 1024);
    if !memory_ok {
        cx.error(
            None,
            format!("project `{name}`: `limits.memory` must be a size like \"512m\" or \"2g\" (at least 6m)"),
        );
    }
    if limits.pids < 16 {
        cx.error_at(
            &["project", name, "limits", "pids"],
            format!("project `{name}`: `limits.pids` must be at least 16"),
        );
    }
    if !(limits.cpus > 0.0 && limits.cpus <= 1024.0) {
        cx.error_at(
            &["project", name, "limits", "cpus"],
            format!("project `{name}`: `limits.cpus` must be a number above 0, like 2.0"),
        );
    }
    if let Some(Submodules::Allow(allow)) = &project.submodules {
        for pattern in &allow.allow {
            if !pattern.contains("://") {
                cx.error_at(&["project", name, "submodules", "allow"], format!("project `{name}`: `submodules.allow`: `{pattern}` must be a URL pattern with a scheme, like \"https://github.com/org/*\""));
            }
        }
    }
}

/// Bytes in `512m`, `2g`, `1048576`.
pub(crate) fn parse_memory(text: &str) -> Option<u64> {
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
        _ => (text, 'b'),
    };
    let n: u64 = digits.parse().ok()?;
    let mult = match unit {
        'b' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}
