//! `pipe serve`: the authenticated deploy receiver for the receiving host. Parses the
//! arguments, builds the [`Receiver`](crate::serve::Receiver) and runs it; the receiver itself
//! lives in `src/serve/`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use super::context::Context;
use crate::cli::ServeArgs;
use crate::error::{Usage, code};
use crate::page::Page;
use crate::serve::{ForgeHooks, Receiver};

pub(super) fn run(cx: &Context, args: &ServeArgs) -> anyhow::Result<u8> {
    let config = cx.config()?;
    let state = crate::state::locate(cx.global.state.as_deref())?;
    // Runs, their logs and the delivery ids live beside the state file.
    let dir = state.parent().map(|p| p.join("serve")).unwrap_or_else(|| PathBuf::from("serve"));
    let forge = ForgeHooks::new(&config, &state, dir.join("forge"), config.serve.body_limit)?;
    let page = Page::new(config.serve.page.as_ref(), state.clone())?;
    if config.serve.hooks.is_empty() && forge.names().next().is_none() && page.is_none() {
        return Err(Usage(format!(
            "`{}` defines no `[serve.hooks.NAME]`, no project with a forge `webhook_secret` and no enabled `[serve.page]`; `pipe serve` has nothing to do",
            config.path.display()
        ))
        .into());
    }
    let listen = args.listen.clone().unwrap_or_else(|| config.serve.listen.clone());
    let listener = std::net::TcpListener::bind(&listen).with_context(|| format!("cannot listen on `{listen}`"))?;
    let port = listener.local_addr().ok().map(|a| a.port());
    let receiver = Arc::new(Receiver::new(&config.serve, forge, dir, cx.out, port)?.with_page(page));
    receiver.run(listener)?;
    Ok(code::OK)
}
