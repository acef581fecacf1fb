//! `pipe generate`: files derived from pipe itself: the nginx front from the pipeline file, the
//! shipped systemd units, and completions and man pages from the CLI definition.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory;
use clap_complete::Shell as CompleteShell;

use crate::cli::{Cli, GenerateArgs, GenerateWhat, Shell};
use crate::error::code;
use crate::output;

use super::context::Context;

/// The units shipped in `systemd/`, built into the binary so `pipe generate systemd` needs no checkout.
const UNITS: [(&str, &str); 5] = [
    ("pipe.service", include_str!("../../systemd/pipe.service")),
    ("pipe.timer", include_str!("../../systemd/pipe.timer")),
    ("pipe-serve.service", include_str!("../../systemd/pipe-serve.service")),
    ("pipe-prune.service", include_str!("../../systemd/pipe-prune.service")),
    ("pipe-prune.timer", include_str!("../../systemd/pipe-prune.timer")),
];

pub(super) fn run(cx: &Context, args: &GenerateArgs) -> anyhow::Result<u8> {
    match &args.what {
        GenerateWhat::Nginx => {
            let config = cx.config()?;
            let routes = crate::nginx::routes(&config)?;
            if routes.is_empty() {
                cx.out.warn(format!(
                    "no deploy target or hook in `{}` has an `ingress` table: every name will get 404",
                    config.path.display()
                ));
            }
            output::print(crate::nginx::render(&config, &routes))?;
        }
        GenerateWhat::Systemd { dir, bin } => write_units(cx, dir, bin)?,
        GenerateWhat::Webhook { project, url } => {
            let config = cx.config()?;
            output::print(webhook(&config, project, url.as_deref())?)?;
        }
        GenerateWhat::Completions { shell } => {
            output::print(completions(*shell))?;
        }
        GenerateWhat::Man { dir } => write_man_pages(dir)?,
    }
    Ok(code::OK)
}

/// What to enter in the forge's webhook settings for a project.
fn webhook(config: &crate::config::Config, name: &str, base: Option<&str>) -> anyhow::Result<String> {
    use crate::config::{ForgeKind, SecretRef};
    use crate::error::Usage;
    use crate::forge::hook_secret::{self, Source};
    let project = crate::engine::project(config, name)?;
    let forge = project.forge.as_ref().and_then(|f| config.forges.get(f).map(|forge| (f, forge)));
    let Some((forge_name, forge)) = forge else {
        return Err(
            Usage(format!("project `{name}` names no forge\nhint: set `forge = \"NAME\"` and `forge_repo`")).into()
        );
    };
    let shown = |r: &SecretRef| match r {
        SecretRef::Env(var) => (format!("the value of ${var}"), format!("\"${var}\"")),
        SecretRef::File(path) => {
            (format!("the content of `{}`", path.display()), format!("\"$(cat '{}')\"", path.display()))
        }
        SecretRef::Command { argv, .. } => {
            (format!("the output of `{}`", argv.join(" ")), format!("\"$({})\"", argv.join(" ")))
        }
    };
    let (secret, derivation) = match hook_secret::source(config, project) {
        Some(Source::Own(r)) => (shown(&r).0, None),
        Some(Source::Derived(r)) => {
            let (key, arg) = shown(&r);
            let text = format!("this project's own: HMAC-SHA256 of `{name}` keyed with {key}, as hex");
            let command = format!("printf %s '{name}' | openssl dgst -sha256 -hmac {arg} -r | cut -d' ' -f1");
            (text, Some(command))
        }
        None => {
            return Err(Usage(format!(
                "project `{name}` has no webhook secret\nhint: set `webhook_secret_env` or `webhook_secret_file`"
            ))
            .into());
        }
    };
    let base = base.map(str::to_string).unwrap_or_else(|| format!("http://{}", config.serve.listen));
    let url = format!("{}/forge/{name}", base.trim_end_matches('/'));
    let repo = project.forge_repo.as_deref().unwrap_or("");
    let text = match forge.kind {
        ForgeKind::Github => format!(
            "# GitHub: {repo} → Settings → Webhooks → Add webhook\n\
             Payload URL:   {url}\n\
             Content type:  application/json\n\
             Secret:        {secret}\n\
             Events:        Let me select individual events: Pushes, Pull requests\n"
        ),
        ForgeKind::Gitea => format!(
            "# Gitea/Forgejo: {repo} → Settings → Webhooks → Add webhook → Gitea (or Forgejo)\n\
             Target URL:    {url}\n\
             HTTP method:   POST\n\
             Content type:  application/json\n\
             Secret:        {secret}\n\
             Trigger on:    Custom events: Push, Pull Request (Pull Request Synchronized)\n\
             Branch filter: *\n"
        ),
        ForgeKind::Gitlab => format!(
            "# GitLab: project {repo} → Settings → Webhooks → Add new webhook\n\
             URL:           {url}\n\
             Secret token:  {secret}\n\
             Trigger:       Push events (all branches), Merge request events\n"
        ),
    };
    let derivation = derivation.map_or_else(String::new, |command| {
        format!(
            "# The secret is this repository's alone (a discovered project's is derived from the key, so the\n\
             # admin of one repository cannot sign another's). Print it on the CI host with:\n#   {command}\n"
        )
    });
    Ok(format!("{text}{derivation}# forge `{forge_name}`; pipe polls on each event, so the payload is never trusted\n"))
}

fn write_units(cx: &Context, dir: &Path, bin: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
    for (name, text) in UNITS {
        let path = dir.join(name);
        let text = text.replace("/usr/local/bin/pipe", &bin.display().to_string());
        std::fs::write(&path, text).with_context(|| format!("failed to write `{}`", path.display()))?;
        cx.out.info(format!("wrote {}", path.display()));
    }
    Ok(())
}

/// The completion script for a shell.
pub(super) fn completions(shell: Shell) -> String {
    let shell = match shell {
        Shell::Bash => CompleteShell::Bash,
        Shell::Zsh => CompleteShell::Zsh,
        Shell::Fish => CompleteShell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "pipe", &mut buf);
    String::from_utf8(buf).expect("completion scripts are UTF-8")
}

/// Writes `pipe.1` and `pipe-SUBCOMMAND.1` for every visible subcommand.
fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
    for (name, page) in man_pages()? {
        let path = dir.join(name);
        std::fs::write(&path, page).with_context(|| format!("failed to write `{}`", path.display()))?;
    }
    Ok(())
}

/// Every man page as (file name, roff text).
pub(super) fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut root = Cli::command();
    // Building propagates the global flags into every subcommand, so each page lists them.
    root.build();
    let mut pages = Vec::new();
    let mut buf = Vec::new();
    clap_mangen::Man::new(root.clone()).render(&mut buf).context("failed to render pipe.1")?;
    pages.push(("pipe.1".to_string(), buf));
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("pipe-{}", sub.get_name());
        let mut buf = Vec::new();
        let sub = sub.clone().name(name.clone()).version(env!("CARGO_PKG_VERSION"));
        clap_mangen::Man::new(sub).render(&mut buf).with_context(|| format!("failed to render {name}.1"))?;
        pages.push((format!("{name}.1"), buf));
    }
    Ok(pages)
}
