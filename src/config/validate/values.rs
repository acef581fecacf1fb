//! Tables of variables (`build_args`, `test_env`, a deploy target's or a hook's `env`): names,
//! and secrets by reference given exactly one source.

use std::collections::BTreeMap;

use toml::Spanned;

use crate::config::document::Cx;
use crate::config::values::ArgValue;

/// Which table the values are, for the rules that differ.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// `build_args` and `test_env`: secrets reach the docker CLI by name in its environment.
    Build,
    /// A deploy target's or hook's `env`: `PIPE_*` is pipe's own.
    Deploy,
}

/// Checks each name and each secret reference of `values`; `owner` starts each message
/// (`project `app``, `hook `prod``) and `table` names the key (`test_env`, `deploy.prod.env`).
pub(crate) fn validate_values(
    cx: &mut Cx<'_>,
    owner: &str,
    table: &str,
    kind: Table,
    values: &BTreeMap<String, Spanned<ArgValue>>,
) {
    for (key, value) in values {
        let valid = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            cx.error(Some(value.span()), format!("{owner}: `{table}.{key}`: names are letters, digits and `_`"));
        }
        if kind == Table::Deploy && key.starts_with("PIPE_") {
            cx.error(
                Some(value.span()),
                format!("{owner}: `{table}.{key}`: `PIPE_*` variables are set by pipe for every deploy"),
            );
        }
        let ArgValue::Secret(secret) = value.get_ref() else { continue };
        let sources = [secret.env.is_some(), secret.file.is_some(), secret.command.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            cx.error(
                Some(value.span()),
                format!("{owner}: `{table}.{key}` takes exactly one of `env`, `file` and `command`"),
            );
        }
        if secret.command.as_ref().is_some_and(|argv| argv.first().is_none_or(|p| p.is_empty())) {
            cx.error(
                Some(value.span()),
                format!("{owner}: `{table}.{key}.command` is an argv list like [\"pass\", \"show\", \"ci/npm\"]: the program first"),
            );
        }
        if secret.timeout.is_some() && secret.command.is_none() {
            cx.error(Some(value.span()), format!("{owner}: `{table}.{key}.timeout` goes with `command` only"));
        }
        if kind == Table::Build && (key.starts_with("DOCKER_") || ["PATH", "HOME"].contains(&key.as_str())) {
            cx.error(
                Some(value.span()),
                format!("{owner}: `{table}.{key}`: a secret cannot be named like the docker CLI's own variables"),
            );
        }
    }
}
