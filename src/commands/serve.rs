//! `pipe serve`: the authenticated deploy receiver for the receiving host. Parses the
//! arguments, builds the [`Receiver`](crate::serve::Receiver) and runs it; the receiver itself
//! lives in `src/serve/`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use super::Context;
use crate::cli::ServeArgs;
use crate::error::{Usage, code};
use crate::serve::Receiver;

pub fn run(cx: &Context, args: &ServeArgs) -> anyhow::Result<u8> {
    let config = cx.config()?;
    if config.serve.hooks.is_empty() {
        return Err(Usage(format!(
            "`{}` defines no `[serve.hooks.NAME]`; `pipe serve` has nothing to run",
            config.path.display()
        ))
        .into());
    }
    let listen = args.listen.clone().unwrap_or_else(|| config.serve.listen.clone());
    // Runs, their logs and the delivery ids live beside the state file.
    let dir = crate::state::locate(cx.global.state.as_deref())?
        .parent()
        .map(|p| p.join("serve"))
        .unwrap_or_else(|| PathBuf::from("serve"));
    let receiver = Arc::new(Receiver::new(&config.serve, dir, cx.out)?);
    let listener = std::net::TcpListener::bind(&listen).with_context(|| format!("cannot listen on `{listen}`"))?;
    receiver.run(listener)?;
    Ok(code::OK)
}
