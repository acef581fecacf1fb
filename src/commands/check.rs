//! `pipe check`: validate the pipeline file (every error at once, via `ConfigError`), then look
//! at the secrets it points to. Secrets missing from this environment are warnings: the file
//! may be checked on a workstation, away from the host that holds them.

use std::os::unix::fs::PermissionsExt;

use anyhow::Context as _;
use serde::Serialize;

use super::context::Context;
use crate::cli::CheckArgs;
use crate::config::{ArgValue, NetworkPolicy, SecretRef};
use crate::docker::Needs;
use crate::engine::discover::ForgeReport;
use crate::error::code;
use crate::output;
use crate::trust::isolation;

pub(super) fn run(cx: &Context, args: &CheckArgs) -> anyhow::Result<u8> {
    // Discovery is listed afresh (nothing saved, no lock), so the check shows what the next
    // tick would make of the organization.
    let super::context::Discovered { config, reports, .. } = cx.discovered_config("check", true)?;
    for (key, secret) in config.secret_refs() {
        match secret {
            SecretRef::Env(var) => {
                if std::env::var_os(&var).is_none() {
                    cx.out.warn(format!("`{key}`: environment variable `{var}` is not set here"));
                }
            }
            SecretRef::Command { argv, .. } => {
                // Not run: a check never asks a password manager for anything.
                if !crate::secret::command_found(&argv) {
                    let program = argv.first().map_or("", String::as_str);
                    cx.out.warn(format!("`{key}`: the secret command `{program}` is not on PATH here"));
                }
            }
            SecretRef::File(path) => match std::fs::metadata(&path) {
                Err(err) => cx.out.warn(format!("`{key}`: cannot read secret file `{}` here: {err}", path.display())),
                Ok(meta) => {
                    let mode = meta.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        cx.out.warn(format!(
                            "`{key}`: secret file `{}` is readable by others (mode {mode:04o})\nhint: chmod 600 {}",
                            path.display(),
                            path.display()
                        ));
                    }
                }
            },
        }
    }
    for (name, project) in &config.projects {
        for (table, values) in [("build_args", &project.build_args), ("test_env", &project.test_env)] {
            for (key, value) in values {
                if matches!(value.get_ref(), ArgValue::Literal(_)) && looks_secret(key) {
                    cx.out.warn(format!(
                        "`project.{name}.{table}.{key}` looks like a secret written inline: it would appear in logs, \
                         histories and `ps`\nhint: write `{key} = {{ env = \"VARIABLE\" }}` or `{{ file = \"/path\" }}`"
                    ));
                }
            }
        }
        if project.trust_pull_requests {
            // Previews of trusted pull requests run with the target's environment and paths too.
            let previews = if crate::engine::previews::targets(project).is_empty() {
                ""
            } else {
                ", and its previews run unconfined with the deploy target's host paths and literal variables (never its secrets)"
            };
            cx.out.warn(format!(
                "project `{name}` has `trust_pull_requests = true`: anyone who can open a pull request can read its \
                 secret build args and test variables{previews}"
            ));
        }
    }
    for (name, project) in &config.projects {
        // Asked for explicitly, yet nothing to read on a fresh host: the default stays quiet.
        if project.cache == Some(true) && project.deploy.iter().all(|d| d.get_ref().push.is_empty()) {
            cx.out.warn(format!(
                "project `{name}` has `cache = true`, but none of its deploy entries pushes to a registry: a build \
                 on a fresh host has no cache to read\nhint: push its default branch to a `[registry.*]`, or remove \
                 `cache`"
            ));
        }
    }
    trust_warnings(cx, &config);
    network_warnings(cx, &config);
    for warning in crate::targets::interpolation_warnings(&config) {
        cx.out.warn(warning);
    }
    for warning in crate::targets::outage_warnings(&config) {
        cx.out.warn(warning);
    }
    let deploys: usize = config.projects.values().map(|p| p.deploy.len()).sum();
    if args.json {
        let doc = CheckReport {
            version: 1,
            file: &config.path,
            projects: config.projects.len(),
            discovered: config.projects.values().filter(|p| p.discovered.is_some()).count(),
            discovery: &reports,
        };
        output::println(serde_json::to_string_pretty(&doc).context("failed to render JSON")?)?;
    } else {
        print_discovery(&reports)?;
    }
    cx.out.info(format!(
        "`{}` is valid: {} project(s), {} registr{}, {} deploy target(s)",
        config.path.display(),
        config.projects.len(),
        config.registries.len(),
        if config.registries.len() == 1 { "y" } else { "ies" },
        deploys
    ));
    Ok(code::OK)
}

/// `pipe check --json`.
#[derive(Serialize)]
struct CheckReport<'a> {
    version: u32,
    file: &'a std::path::Path,
    /// Projects in all: written out and discovered.
    projects: usize,
    discovered: usize,
    discovery: &'a [ForgeReport],
}

/// Each discovering forge's repositories and what they become.
fn print_discovery(reports: &[ForgeReport]) -> anyhow::Result<()> {
    for report in reports {
        output::println(format_args!("forge `{}`, organization `{}`:", report.forge, report.org))?;
        let rows: Vec<Vec<String>> = report
            .repos
            .iter()
            .map(|r| {
                vec![
                    r.repo.clone(),
                    r.project.clone().unwrap_or_else(|| "-".into()),
                    r.decision.as_str().to_string(),
                    r.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            output::print(output::table(&["REPOSITORY", "PROJECT", "DISCOVERED AS", "DETAIL"], &rows))?;
        }
        match (&report.error, rows.is_empty()) {
            (Some(error), false) => {
                output::println(format_args!("listing failed: {error} (the rows are the last listing's)"))?
            }
            (Some(error), true) => output::println(format_args!("listing failed: {error}"))?,
            (None, _) => {}
        }
        if let Some(until) = report.throttled_until {
            output::println(format_args!("throttled by the forge's rate limit until {until}"))?;
        }
        for (name, why) in &report.gone {
            output::println(format_args!("no longer discovered: `{name}` ({why}); `pipe prune` removes its state"))?;
        }
    }
    Ok(())
}

/// Deploy entries for branches `trusted_branches` leaves out: they never push or deploy.
fn trust_warnings(cx: &Context, config: &crate::config::Config) {
    for (name, project) in &config.projects {
        let Some(trusted) = &project.trusted else { continue };
        for deploy in &project.deploy {
            for branch in &deploy.get_ref().branches {
                let branch = branch.get_ref();
                if !branch.contains('*') && !trusted.is_match(branch) {
                    cx.out.warn(format!(
                        "project `{name}`: the deploy entry for `{branch}` never pushes or deploys: `{branch}` is outside \
                         `trusted_branches`, and untrusted branches are treated like pull requests"
                    ));
                }
            }
        }
    }
}

/// Says when this host's builders cannot build what the pipeline file asks for, before any
/// build: a secret build arg where only the legacy builder is (it would keep the value in the
/// image), an isolated build where pipe cannot make its network. Such builds are refused.
/// Also says when test networks reach the host.
fn network_warnings(cx: &Context, config: &crate::config::Config) {
    let builders = crate::docker::client::Docker::new(None).builders(&cx.out);
    for (name, project) in &config.projects {
        let secret = project
            .build_args
            .iter()
            .find(|(_, v)| matches!(v.get_ref(), ArgValue::Secret(_)))
            .map(|(k, _)| k.as_str());
        if let Some(key) = secret
            && let Err(why) = builders.choose(Needs { secret, network: false })
        {
            cx.out.warn(format!(
                "project `{name}`: {why}: its builds will be refused\nhint: install docker's buildx plugin or use a \
                 docker CLI with BuildKit built in, and read the secret with `RUN --mount=type=secret,id={key}`"
            ));
        }
        let untrusted = (project.pull_requests && !project.trust_pull_requests) || project.trusted.is_some();
        if secret.is_some() && untrusted && project.build_network(false) == NetworkPolicy::Isolated {
            cx.out.warn(format!(
                "project `{name}`: untrusted refs build on an isolated network, which only the legacy builder can \
                 join, and it cannot read `RUN --mount`: a Dockerfile that mounts a secret fails there\nhint: set \
                 `build_network = {{ untrusted = \"none\" }}` under [project.{name}] to build them with BuildKit \
                 and no network"
            ));
        }
        let mut kinds = Vec::new();
        for (trusted, kind) in [(true, "trusted"), (false, "untrusted")] {
            if (trusted || untrusted) && project.build_network(trusted) == NetworkPolicy::Isolated {
                let secret = if trusted { secret } else { None };
                let why = builders.choose(Needs { secret, network: true }).err().or_else(isolation::unenforceable);
                if let Some(why) = why {
                    kinds.push(format!("{kind} refs ({why})"));
                }
            }
        }
        if !kinds.is_empty() {
            cx.out.warn(format!(
                "project `{name}`: this host cannot isolate the image build's network for {}: those builds will be \
                 refused\nhint: run pipe as root or with CAP_NET_ADMIN (the packaged units do), with \
                 iptables, or set `build_network` to \"none\" or \"default\"",
                kinds.join(" and ")
            ));
        }
    }
    if let Some(why) = isolation::unenforceable() {
        cx.out.warn(format!(
            "test containers with test services or `limits.egress` can reach services listening on this host and its \
             LAN: {why}"
        ));
    }
}

/// A variable name that usually holds a secret: `*TOKEN*`, `*PASSWORD*`, `*SECRET*`, `*KEY*`.
fn looks_secret(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    ["TOKEN", "PASSWORD", "PASSWD", "SECRET", "KEY", "CREDENTIAL"].iter().any(|w| upper.contains(w))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_looking_names() {
        for yes in ["NPM_TOKEN", "db_password", "AWS_SECRET_ACCESS_KEY", "api_key"] {
            assert!(super::looks_secret(yes), "{yes}");
        }
        for no in ["RUST_LOG", "GREETING", "PORT"] {
            assert!(!super::looks_secret(no), "{no}");
        }
    }
}
