//! `pipe check`: validate the pipeline file (every error at once, via `ConfigError`), then look
//! at the secrets it points to. Secrets missing from this environment are warnings: the file
//! may be checked on a workstation, away from the host that holds them.

use std::os::unix::fs::PermissionsExt;

use super::Context;
use crate::cli::CheckArgs;
use crate::config::{ArgValue, SecretRef};
use crate::error::code;

pub(super) fn run(cx: &Context, _args: &CheckArgs) -> anyhow::Result<u8> {
    let config = cx.config()?;
    for (key, secret) in config.secret_refs() {
        match secret {
            SecretRef::Env(var) => {
                if std::env::var_os(&var).is_none() {
                    cx.out.warn(format!("`{key}`: environment variable `{var}` is not set here"));
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
                ", and its previews run unconfined with the deploy target's environment and host paths"
            };
            cx.out.warn(format!(
                "project `{name}` has `trust_pull_requests = true`: anyone who can open a pull request can read its \
                 secret build args and test variables{previews}"
            ));
        }
    }
    for warning in crate::targets::outage_warnings(&config) {
        cx.out.warn(warning);
    }
    let deploys: usize = config.projects.values().map(|p| p.deploy.len()).sum();
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
