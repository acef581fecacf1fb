//! The receiver's log lines, written to stderr by one thread, the lines waiting written
//! together. A request never waits for stderr: when it does not keep up (a stalled journal, an
//! unread pipe), lines are dropped and counted, and the count is logged as soon as it does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use crate::output::Output;

/// Lines written at once at most.
const BATCH: usize = 256;
/// How long the journal thread waits after a batch.
const PAUSE: Duration = Duration::from_millis(2);

/// Writes the lines gathered (each stamped as `Output::info` stamps a line) and empties `batch`.
fn write(out: &Output, batch: &mut String) {
    if !batch.is_empty() {
        out.info(batch.trim_end_matches('\n'));
        batch.clear();
    }
}

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
            // Lines waiting are written together, in one write; the pause after a batch lets
            // a busy receiver's lines gather instead of waking this thread once per line.
            let mut batch = String::new();
            while let Ok(first) = rx.recv() {
                let lost = counted.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    out.warn(format!("{lost} log line(s) dropped: stderr did not keep up"));
                }
                for msg in std::iter::once(first).chain(rx.try_iter().take(BATCH)) {
                    match msg {
                        Msg::Line(line) => {
                            batch.push_str(&line);
                            batch.push('\n');
                        }
                        Msg::Flush(done) => {
                            write(&out, &mut batch);
                            let _ = done.send(());
                        }
                    }
                }
                write(&out, &mut batch);
                std::thread::sleep(PAUSE);
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
