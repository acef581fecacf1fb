//! `pipe check`: validate the pipeline file (every error at once, via `ConfigError`), then look
//! at the secrets it points to.

use std::os::unix::fs::PermissionsExt;

use super::Context;
use crate::cli::CheckArgs;
use crate::config::SecretRef;
use crate::error::code;

pub fn run(cx: &Context, _args: &CheckArgs) -> anyhow::Result<u8> {
    let config = cx.config()?;
    let mut problems = Vec::new();
    for (key, secret) in config.secret_refs() {
        match secret {
            SecretRef::Env(var) => {
                if std::env::var_os(&var).is_none() {
                    cx.out.warn(format!(
                        "`{key}`: environment variable `{var}` is not set here"
                    ));
                }
            }
            SecretRef::File(path) => match std::fs::metadata(&path) {
                Err(err) => problems.push(format!(
                    "`{key}`: cannot read secret file `{}`: {err}",
                    path.display()
                )),
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
    if !problems.is_empty() {
        for p in &problems {
            cx.out.error(p);
        }
        return Ok(code::USAGE);
    }
    let deploys: usize = config.projects.values().map(|p| p.deploy.len()).sum();
    cx.out.info(format!(
        "`{}` is valid: {} project(s), {} registr{}, {} deploy target(s)",
        config.path.display(),
        config.projects.len(),
        config.registries.len(),
        if config.registries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        deploys
    ));
    Ok(code::OK)
}
