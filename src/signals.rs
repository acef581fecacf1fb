//! SIGTERM and SIGINT: the first asks the running stage to stop (its child is killed, its
//! container removed, the stage recorded as interrupted, the state saved, the lock released);
//! a second one exits at once.

use crate::error::Interrupted;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use signal_hook::consts::{SIGINT, SIGTERM};

struct Flags {
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Installs the handlers (once per process).
pub(crate) fn install() -> anyhow::Result<()> {
    if FLAGS.get().is_some() {
        return Ok(());
    }
    let any = Arc::new(AtomicBool::new(false));
    let flags = Flags { term: Arc::new(AtomicBool::new(false)), int: Arc::new(AtomicBool::new(false)) };
    for (signal, own, code) in [(SIGTERM, &flags.term, 143), (SIGINT, &flags.int, 130)] {
        // Registered first, so it sees `any` as it was before this delivery: set means second signal.
        signal_hook::flag::register_conditional_shutdown(signal, code, any.clone())
            .context("failed to install a signal handler")?;
        signal_hook::flag::register(signal, any.clone()).context("failed to install a signal handler")?;
        signal_hook::flag::register(signal, own.clone()).context("failed to install a signal handler")?;
    }
    let _ = FLAGS.set(flags);
    Ok(())
}

/// The signal received, if any: `Some(15)` for SIGTERM, `Some(2)` for SIGINT.
pub(crate) fn received() -> Option<i32> {
    let flags = FLAGS.get()?;
    if flags.term.load(Ordering::Relaxed) {
        Some(SIGTERM)
    } else if flags.int.load(Ordering::Relaxed) {
        Some(SIGINT)
    } else {
        None
    }
}

/// Fails with [`Interrupted`] when a signal arrived.
pub(crate) fn check() -> anyhow::Result<()> {
    match received() {
        Some(signal) => Err(Interrupted(signal).into()),
        None => Ok(()),
    }
}
