//! The receiver's log lines, written to stderr by one thread. A request never waits for
//! stderr: when it does not keep up (a stalled journal, an unread pipe), lines are dropped and
//! counted, and the count is logged as soon as it does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use crate::output::Output;

/// What the journal thread is asked to do.
enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

pub(crate) struct Journal {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl Journal {
    pub(crate) fn start(out: Output) -> Journal {
        let (tx, rx) = sync_channel::<Msg>(1024);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        std::thread::spawn(move || {
            for msg in rx {
                let lost = counted.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    out.warn(format!("{lost} log line(s) dropped: stderr did not keep up"));
                }
                match msg {
                    Msg::Line(line) => out.info(line),
                    Msg::Flush(done) => drop(done.send(())),
                }
            }
        });
        Journal { tx, dropped }
    }

    pub(crate) fn line(&self, text: String) {
        if self.tx.try_send(Msg::Line(text)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (briefly) until every line queued so far is written: called once, at shutdown.
    pub(crate) fn flush(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (done, wait) = sync_channel(1);
        let mut msg = Msg::Flush(done);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}
