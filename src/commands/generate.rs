//! `pipe generate`: files derived from pipe itself: the nginx front from the pipeline file, the
//! shipped systemd units, and completions and man pages from the CLI definition.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory;
use clap_complete::Shell as CompleteShell;

use crate::cli::{Cli, GenerateArgs, GenerateWhat, Shell};
use crate::error::code;

use super::Context;

/// The units shipped in `systemd/`, built into the binary so `pipe generate systemd` needs no checkout.
const UNITS: [(&str, &str); 5] = [
    ("pipe.service", include_str!("../../systemd/pipe.service")),
    ("pipe.timer", include_str!("../../systemd/pipe.timer")),
    ("pipe-serve.service", include_str!("../../systemd/pipe-serve.service")),
    ("pipe-prune.service", include_str!("../../systemd/pipe-prune.service")),
    ("pipe-prune.timer", include_str!("../../systemd/pipe-prune.timer")),
];

pub fn run(cx: &Context, args: &GenerateArgs) -> anyhow::Result<u8> {
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
            print!("{}", crate::nginx::render(&config, &routes));
        }
        GenerateWhat::Systemd { dir, bin } => write_units(cx, dir, bin)?,
        GenerateWhat::Completions { shell } => {
            print!("{}", completions(*shell));
        }
        GenerateWhat::Man { dir } => write_man_pages(dir)?,
    }
    Ok(code::OK)
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
pub fn completions(shell: Shell) -> String {
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
pub fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
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
