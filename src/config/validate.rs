//! Cross-field rules serde cannot express, each reported as a located diagnostic.

use std::collections::BTreeMap;

use toml::Spanned;

use super::document::Cx;
use super::patterns::compile_branch_glob;
use super::{ArgValue, Config, ForgeKind, Hook, Ingress, Patterns, Project, Submodules};

/// `[ingress]` values end up in nginx directives: each must be one plain token of its kind.
pub(super) fn validate_ingress(cx: &mut Cx<'_>, ingress: &Ingress) {
    let host_chars = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
    let listen_chars = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || ".:[]-".contains(c));
    let path_chars = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
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
        (
            "upstreams",
            ingress.upstreams.as_ref().is_none_or(|p| p.is_absolute() && p.to_str().is_some_and(path_chars)),
            "an absolute directory path of letters, digits, `/`, `.`, `_` and `-`",
        ),
        ("nginx", !ingress.nginx.is_empty(), "a command like `[\"nginx\"]`"),
    ];
    for (key, ok, expected) in checks {
        if !ok {
            cx.error_at(&["ingress", key], format!("`ingress.{key}` must be {expected}"));
        }
    }
}

/// Service names become host names (`<service>.DOMAIN`) and nginx map keys.
fn validate_ingress_services(cx: &mut Cx<'_>, owner: &str, table: &[&str], services: &BTreeMap<String, u16>) {
    for (service, port) in services {
        let at = [table, &["ingress", service.as_str()]].concat();
        let label = !service.is_empty()
            && service.len() <= 63
            && service.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !service.starts_with('-')
            && !service.ends_with('-');
        if !label {
            cx.error_at(
                &at,
                format!("{owner}: ingress service `{service}` must be a DNS label: lowercase letters, digits and `-`"),
            );
        }
        if *port == 0 {
            cx.error_at(&at, format!("{owner}: ingress service `{service}` needs a port from 1 to 65535"));
        }
    }
}

/// Cross-field rules serde cannot express.
pub(super) fn validate(cx: &mut Cx<'_>, config: &mut Config) {
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
    if config.settings.parallel == 0 {
        cx.error_at(&["pipe", "parallel"], "`pipe.parallel` must be at least 1".into());
    }
    let registries: Vec<String> = config.registries.keys().cloned().collect();
    for (name, project) in &mut config.projects {
        validate_project(cx, name, project, &registries);
    }
    validate_previews(cx, config);
    validate_forges(cx, config);
}

/// Preview targets: a compose target switched through the ingress, of a project that follows
/// pull requests, with a host-name template that yields one plain host per service.
fn validate_previews(cx: &mut Cx<'_>, config: &Config) {
    // The compose project each preview target's previews are named after (`<base>-pr-<N>`):
    // two targets with one base would run pull request N of each in one compose project, on
    // one network, torn down together.
    let mut bases = BTreeMap::new();
    for (name, project) in &config.projects {
        validate_project_previews(cx, &config.ingress, name, project, &mut bases);
    }
}

/// [`validate_previews`] for one project, written out or discovered; `bases` holds the
/// compose projects previews are named after so far, and who they are of.
pub(super) fn validate_project_previews(
    cx: &mut Cx<'_>,
    ingress: &Ingress,
    name: &str,
    project: &Project,
    bases: &mut BTreeMap<String, String>,
) {
    {
        for (index, deploy) in project.deploy.iter().enumerate() {
            let deploy = deploy.get_ref();
            let index = index.to_string();
            let at = |key: &'static str| ["project", name, "deploy", index.as_str(), key];
            let others = deploy.preview_host.is_some() || deploy.preview_ttl.is_some() || deploy.max_previews.is_some();
            if !deploy.previews {
                if others {
                    cx.error_at(
                        &at("previews"),
                        format!(
                            "project `{name}`: `preview_host`, `preview_ttl` and `max_previews` need `previews = true`"
                        ),
                    );
                }
                continue;
            }
            if deploy.compose.is_none() || deploy.ingress.is_empty() || ingress.upstreams.is_none() {
                cx.error_at(
                    &at("previews"),
                    format!("project `{name}`: previews are reached through the ingress: they need a `compose` target with `ingress` and `upstreams` in `[ingress]`"),
                );
            }
            if !project.pull_requests {
                cx.error_at(
                    &at("previews"),
                    format!("project `{name}`: previews are of pull requests: set `pull_requests = true`"),
                );
            }
            if let Some(compose) = &deploy.compose {
                let base = compose.project.clone().unwrap_or_else(|| name.to_string());
                let here = format!("project `{name}` target `{}`", deploy.display_name());
                if let Some(first) = bases.get(&base) {
                    cx.error_at(
                        &at("previews"),
                        format!("{here}: its previews would share the compose projects `{base}-pr-<N>` with the previews of {first} (one network, one teardown); give one of the targets a `compose.project` of its own"),
                    );
                } else {
                    bases.insert(base, here);
                }
            }
            if deploy.max_previews == Some(0) {
                cx.error_at(&at("max_previews"), format!("project `{name}`: `max_previews` must be at least 1"));
            }
            let template = crate::config::preview_host_template(deploy);
            let sample = |service: &str| crate::config::preview_host(template, 12345, name, service, &ingress.domain);
            let hosts: Vec<String> = deploy.ingress.keys().map(|s| sample(s)).collect();
            let plain = |h: &String| {
                !h.is_empty()
                    && !h.contains('{')
                    && h.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            };
            if !hosts.iter().all(plain) || !template.contains("{pr}") {
                cx.error_at(
                    &at("preview_host"),
                    format!("project `{name}`: `preview_host` must name a host with `{{pr}}` in it, from letters, digits, `-`, `.` and `{{pr}}`, `{{project}}`, `{{service}}`, `{{domain}}`"),
                );
            } else if !template.contains("{project}") && !names_project(&hosts, &ingress.domain, name) {
                // Two projects' previews of pull request 1 at one name: nginx answers both with
                // the first, so one preview's link would show another project's code.
                cx.error_at(
                    &at("preview_host"),
                    format!("project `{name}`: `preview_host` needs `{{project}}` (or the project's name) so previews of different projects get different names"),
                );
            } else if deploy.ingress.len() > 1 && !template.contains("{service}") {
                cx.error_at(
                    &at("preview_host"),
                    format!("project `{name}`: the target routes {} services: `preview_host` needs `{{service}}` so each gets its own name", deploy.ingress.len()),
                );
            }
        }
    }
}

/// Whether every sample host names the project itself: a label of it before the domain is the
/// project's name, or has it as a `-`-separated part.
fn names_project(hosts: &[String], domain: &str, name: &str) -> bool {
    hosts.iter().all(|host| {
        let own = host.strip_suffix(domain).unwrap_or(host);
        own.split('.').any(|label| label == name || label.split('-').any(|part| part == name))
    })
}

/// `[forge.NAME]` tables and the projects' `forge`, `forge_repo` and `webhook_secret_*` keys.
fn validate_forges(cx: &mut Cx<'_>, config: &Config) {
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
pub(super) fn validate_project_forge(
    cx: &mut Cx<'_>,
    forges: &BTreeMap<String, super::Forge>,
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
fn valid_forge_repo(kind: ForgeKind, repo: &str) -> bool {
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

/// A secret named one of two ways in one table: `KEY_env` (a variable) or `KEY_file`.
#[derive(Clone, Copy)]
struct Pair<'p> {
    table: &'p [&'p str],
    key: &'p str,
    env: bool,
    file: bool,
}

/// How many halves of a [`Pair`] may be set.
#[derive(Clone, Copy)]
enum Need {
    AtMostOne,
    ExactlyOne,
}

impl<'p> Pair<'p> {
    fn new<F>(table: &'p [&'p str], key: &'p str, env: &Option<String>, file: &Option<F>) -> Self {
        Pair { table, key, env: env.is_some(), file: file.is_some() }
    }

    fn any(&self) -> bool {
        self.env || self.file
    }

    /// Reports `message` when the pair breaks `need`: at the later of the two keys when both are
    /// set, at the table when neither is. Returns whether it reported.
    fn check(&self, cx: &mut Cx<'_>, need: Need, message: impl FnOnce() -> String) -> bool {
        let both = self.env && self.file;
        let broken = match need {
            Need::AtMostOne => both,
            Need::ExactlyOne => self.env == self.file,
        };
        if !broken {
            return false;
        }
        let half = |suffix: &str| {
            let key = format!("{}_{suffix}", self.key);
            cx.locate(&[self.table, &[key.as_str()]].concat())
        };
        let span = if both { half("env").into_iter().chain(half("file")).max_by_key(|s| s.start) } else { None };
        let span = span.or_else(|| cx.locate(self.table));
        cx.error(span, message());
        true
    }
}

pub(super) fn validate_project(cx: &mut Cx<'_>, name: &str, project: &mut Project, registries: &[String]) {
    if project.repo.trim().is_empty() {
        cx.error_at(&["project", name, "repo"], format!("project `{name}`: `repo` is empty"));
    }
    if project.branches.is_empty() {
        cx.error_at(
            &["project", name, "branches"],
            format!("project `{name}`: `branches` is empty; list at least one branch or pattern"),
        );
    }
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

pub(super) fn validate_hook(cx: &mut Cx<'_>, name: &str, hook: &mut Hook) {
    let table = ["serve", "hooks", name];
    let token = Pair::new(&table, "token", &hook.token_env, &hook.token_file);
    let secret = Pair::new(&table, "secret", &hook.secret_env, &hook.secret_file);
    let both = || format!("hook `{name}`: set one of `*_env` and `*_file` for each credential, not both");
    // One message covers both credentials: the second is checked only when the first passed.
    if !token.check(cx, Need::AtMostOne, both) {
        secret.check(cx, Need::AtMostOne, both);
    }
    let (token, secret) = (token.any(), secret.any());
    validate_ingress_services(cx, &format!("hook `{name}`"), &table, &hook.ingress);
    let at = |key: &'static str| [table.as_slice(), &[key]].concat();
    if !token && !secret {
        cx.error_at(&table, format!("hook `{name}` needs credentials: `secret_env`/`secret_file` (HMAC) or `token_env`/`token_file` (bearer)"));
    }
    if hook.docker_puller && !token {
        cx.error_at(
            &at("docker_puller"),
            format!("hook `{name}`: `docker_puller = true` needs a `token_env` or `token_file`"),
        );
    }
    let kinds = [hook.compose.is_some(), hook.swarm.is_some(), hook.command.is_some()].iter().filter(|k| **k).count();
    if kinds != 1 {
        cx.error_at(&table, format!("hook `{name}` runs exactly one of `compose`, `swarm`, `command`"));
    }
    if (hook.compose.is_some() || hook.swarm.is_some()) && hook.images.is_empty() {
        cx.error_at(
            &at("images"),
            format!("hook `{name}` deploys images: list the repositories it may run in `images`, so a leaked secret cannot run an arbitrary image"),
        );
    }
    if let Some(cmd) = &hook.command
        && cmd.argv.is_some() == cmd.shell.is_some()
    {
        cx.error_at(&at("command"), format!("hook `{name}`: `command` takes exactly one of `argv` and `shell`"));
    }
    match Patterns::compile_images(hook.images.iter().map(String::as_str)) {
        Ok(p) => hook.allowed = p,
        Err(e) => cx.error_at(&at("images"), format!("hook `{name}`: {e}")),
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

/// Build args, test variables, limits and submodule patterns: the parts of a project that
/// decide what a repository's code gets.
fn validate_trust(cx: &mut Cx<'_>, name: &str, project: &Project) {
    for (table, values) in [("build_args", &project.build_args), ("test_env", &project.test_env)] {
        for (key, value) in values {
            let valid = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                cx.error(
                    Some(value.span()),
                    format!("project `{name}`: `{table}.{key}`: names are letters, digits and `_`"),
                );
            }
            if let ArgValue::Secret(secret) = value.get_ref() {
                if secret.env.is_some() == secret.file.is_some() {
                    cx.error(
                        Some(value.span()),
                        format!("project `{name}`: `{table}.{key}` takes exactly one of `env` and `file`"),
                    );
                }
                if key.starts_with("DOCKER_") || ["PATH", "HOME"].contains(&key.as_str()) {
                    cx.error(
                        Some(value.span()),
                        format!("project `{name}`: `{table}.{key}`: a secret cannot be named like the docker CLI's own variables"),
                    );
                }
            }
        }
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
