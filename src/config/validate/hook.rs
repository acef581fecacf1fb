//! `[serve.hooks.NAME]`: one hook of the receiver.

use super::ingress::validate_ingress_services;
use super::pair::{Need, Pair};
use super::values::{Table, validate_values};
use crate::config::document::Cx;
use crate::config::patterns::Patterns;
use crate::config::types::Hook;

/// Names of `pipe serve`'s own files and directories under `serve/` beside the state, where
/// each hook has its directory.
const RESERVED: [&str; 4] = ["accepted", "deliveries", "superseded", "forge"];

pub(crate) fn validate_hook(cx: &mut Cx<'_>, name: &str, hook: &mut Hook) {
    let table = ["serve", "hooks", name];
    if RESERVED.contains(&name) {
        cx.error_at(
            &table,
            format!(
                "hook `{name}`: the name is taken by `pipe serve`'s own `serve/{name}` beside the state; choose another"
            ),
        );
    }
    let token = Pair::new(&table, "token", &hook.token_env, &hook.token_file);
    let secret = Pair::new(&table, "secret", &hook.secret_env, &hook.secret_file);
    let both = || format!("hook `{name}`: set one of `*_env` and `*_file` for each credential, not both");
    // One message covers both credentials: the second is checked only when the first passed.
    if !token.check(cx, Need::AtMostOne, both) {
        secret.check(cx, Need::AtMostOne, both);
    }
    let (token, secret) = (token.any(), secret.any());
    validate_ingress_services(cx, &format!("hook `{name}`"), &table, &hook.ingress);
    validate_values(cx, &format!("hook `{name}`"), "env", Table::Deploy, &hook.env);
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
    if let Some(release) = &hook.release {
        if hook.compose.is_none() || hook.ingress.is_empty() {
            cx.error_at(
                &at("release"),
                format!(
                    "hook `{name}`: `release` runs before an ingress switch: it needs a `compose` hook with `ingress`"
                ),
            );
        } else if release.argv.is_empty() {
            cx.error_at(
                &[table.as_slice(), &["release", "argv"]].concat(),
                format!("hook `{name}`: `release.argv` is empty"),
            );
        }
    }
    match Patterns::compile_images(hook.images.iter().map(String::as_str)) {
        Ok(p) => hook.allowed = p,
        Err(e) => cx.error_at(&at("images"), format!("hook `{name}`: {e}")),
    }
}
