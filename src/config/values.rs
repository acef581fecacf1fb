//! A value in a table of variables (`build_args`, `test_env`, a target's `env`): a literal, or
//! a secret by reference (an environment variable, a file, or a command whose output it is).

use std::path::PathBuf;

use serde::Deserialize;

use super::duration::Seconds;

/// A build arg, test variable or deploy variable in the pipeline file: a literal, or a secret
/// by reference.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a string, `{ env = \"VARIABLE\" }`, `{ file = \"/path\" }` or `{ command = [\"program\", \"arg\", …] }`"
)]
pub(crate) enum ArgValue {
    Literal(String),
    Secret(SecretArg),
}

/// `{ env = "VAR" }`, `{ file = "/path" }` or `{ command = ["pass", "show", "ci/npm"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretArg {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    /// A password manager's or secrets store's CLI, run without a shell; its stdout is the value.
    pub command: Option<Vec<String>>,
    /// How long `command` may take [default: 30s].
    pub timeout: Option<Seconds>,
}

impl ArgValue {
    /// The secret this value refers to, if it is one.
    pub(crate) fn secret(&self) -> Option<SecretRef> {
        match self {
            ArgValue::Literal(_) => None,
            ArgValue::Secret(s) => match &s.command {
                Some(argv) if s.env.is_none() && s.file.is_none() => Some(SecretRef::Command {
                    argv: argv.clone(),
                    timeout: s.timeout.map_or(DEFAULT_COMMAND_TIMEOUT, |t| t.0),
                }),
                _ => SecretRef::from_pair(&s.env, &s.file),
            },
        }
    }
}

/// How long a secret command may take when its reference names no `timeout`.
pub(crate) const DEFAULT_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A secret given by indirection: the name of an environment variable, a file, or a command
/// whose output is the secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SecretRef {
    Env(String),
    File(PathBuf),
    Command { argv: Vec<String>, timeout: std::time::Duration },
}

impl SecretRef {
    /// The `*_env` / `*_file` pair of a config table as one reference, if either is set.
    pub(crate) fn from_pair(env: &Option<String>, file: &Option<PathBuf>) -> Option<SecretRef> {
        match (env, file) {
            (Some(var), _) => Some(SecretRef::Env(var.clone())),
            (None, Some(path)) => Some(SecretRef::File(path.clone())),
            (None, None) => None,
        }
    }
}
