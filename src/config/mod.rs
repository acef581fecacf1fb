//! `pipeline.toml`: serde types, strict loading and validation. Reads files, never the network.
//!
//! Loading parses the document once, then deserializes every section and every project on its
//! own, so that `pipe check` can report every problem at once, each with `file:line:column`.
//!
//! - [`types`]: the serde types and what the rest of pipe asks of a loaded file.
//! - `document`: the span-tracking parse and the parsing context diagnostics go through.
//! - `validate`: the rules serde cannot express.
//! - `duration`, `patterns`: durations and branch/image globs.
//! - `repo`: the repository's own `.pipe.toml` and `.jenkins-env`.

mod discover;
mod document;
mod duration;
mod forge;
mod images;
mod patterns;
mod project;
mod repo;
mod targets;
mod types;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use toml::Spanned;
use toml::de::DeValue;

use crate::error::{ConfigError, Diagnostic, Usage};
use document::Cx;
pub(crate) use validate::{parse_memory, parse_ssh_host};
use validate::{validate, validate_hook, validate_ingress};

pub(crate) use discover::{Candidate, instantiate, project_name, valid_repo_name};
pub(crate) use document::validate_name;
pub(crate) use forge::{CloneVia, Discover, Forge, ForgeKind, Origin};
pub(crate) use images::{MAX_IMAGES, PathSet, env_name as image_env_name, valid_name as valid_image_name};
pub(crate) use project::{NetworkPolicy, Project, Submodules};
pub(crate) use repo::{RepoFile, parse_jenkins_env, parse_repo_file};
pub(crate) use targets::{
    CommandTarget, ComposeTarget, Deploy, Health, ReleaseCommand, SshHosts, SwarmTarget, WebhookTarget, preview_host,
    preview_host_template,
};
pub(crate) use types::{Config, Event, Hook, Ingress, Notify, Page, Registry, Serve, Settings};
pub(crate) use values::{ArgValue, SecretRef};

/// Where the pipeline file is looked for when neither `-c` nor `PIPE_CONFIG` names one.
pub(crate) const DEFAULT_PATHS: [&str; 2] = ["pipeline.toml", "/etc/pipe/pipeline.toml"];

/// Finds the pipeline file: the explicit path, else the first default that exists.
pub(crate) fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    DEFAULT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()).ok_or_else(|| {
        Usage(
            "no pipeline file: looked for `./pipeline.toml` and `/etc/pipe/pipeline.toml`\n\
                 hint: pass `-c FILE` or set `PIPE_CONFIG`; `pipeline.example.toml` is a starting point"
                .into(),
        )
        .into()
    })
}

/// Reads and validates the pipeline file; every problem found is in the error.
pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read pipeline file `{}`", path.display()))
        .map_err(|e| anyhow::Error::new(Usage(format!("{e:#}"))))?;
    parse(path, &text).map_err(|diagnostics| ConfigError { diagnostics }.into())
}

/// Parses pipeline text; `path` is only used in diagnostics.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let mut cx = Cx::new(path, text);
    let doc = cx.document()?;

    let mut settings = None;
    let mut notify = None;
    let mut serve: Option<Serve> = None;
    let mut ingress = None;
    let mut hooks = BTreeMap::new();
    let mut registries = BTreeMap::new();
    let mut forges = BTreeMap::new();
    let mut projects = BTreeMap::new();
    for (key, value) in doc {
        let span = key.span();
        match key.get_ref().as_ref() {
            "pipe" => settings = cx.de::<Settings>(value),
            "notify" => notify = cx.de::<Notify>(value),
            "ingress" => ingress = cx.de::<Ingress>(value),
            "serve" => {
                let span = value.span();
                let DeValue::Table(mut table) = value.into_inner() else {
                    cx.error(Some(span), "`serve` must be a table".into());
                    continue;
                };
                let hook_tables = table.remove("hooks");
                serve = cx.de::<Serve>(Spanned::new(span, DeValue::Table(table)));
                if let Some(hook_tables) = hook_tables {
                    for (name, value) in cx.named_tables(hook_tables, "hook") {
                        if let Some(hook) = cx.de::<Hook>(value) {
                            hooks.insert(name, hook);
                        }
                    }
                }
            }
            "registry" => {
                for (name, value) in cx.named_tables(value, "registry") {
                    if let Some(reg) = cx.de::<Registry>(value) {
                        registries.insert(name, reg);
                    }
                }
            }
            "forge" => {
                for (name, value) in cx.named_tables(value, "forge") {
                    let span = value.span();
                    let (value, discover) = match value.into_inner() {
                        DeValue::Table(mut table) => {
                            let discover = discover::take(&mut cx, &name, &mut table);
                            (Spanned::new(span, DeValue::Table(table)), discover)
                        }
                        other => (Spanned::new(span, other), None),
                    };
                    if let Some(mut forge) = cx.de::<Forge>(value) {
                        forge.discover = discover;
                        forges.insert(name, forge);
                    }
                }
            }
            "project" => {
                for (name, value) in cx.named_tables(value, "project") {
                    if let Some(project) = cx.de::<Project>(value) {
                        projects.insert(name, project);
                    }
                }
            }
            other => cx.error(
                Some(span),
                format!("unknown section `{other}`, expected one of `pipe`, `notify`, `registry`, `project`, `serve`, `ingress`, `forge`"),
            ),
        }
    }
    let mut config = Config {
        path: path.to_path_buf(),
        settings: settings.unwrap_or_default(),
        notify: notify.unwrap_or_default(),
        registries,
        projects,
        serve: serve.unwrap_or_default(),
        ingress: ingress.unwrap_or_default(),
        forges,
    };
    validate(&mut cx, &mut config);
    for (name, mut hook) in hooks {
        validate_hook(&mut cx, &name, &mut hook);
        hook.host_ingress = config.ingress.clone();
        config.serve.hooks.insert(name, hook);
    }
    validate_ingress(&mut cx, &config.ingress);
    if cx.diagnostics.is_empty() {
        discover::validate_templates(&mut cx, &config);
    }
    if cx.diagnostics.is_empty() { Ok(config) } else { Err(cx.diagnostics) }
}
