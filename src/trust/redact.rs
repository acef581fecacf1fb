//! Secret values kept out of what pipe writes and prints. exec.rs streams a command's output
//! into its run log raw (and capped); a stage that gave a command secrets scrubs the part of
//! the log that command wrote once it has ended, and its output tail before that reaches an
//! error or a notification. Scrubbing after the fact sees a secret that straddled two reads
//! whole, which a per-chunk filter would not; the price is that the log holds the value on
//! disk while the command runs (the state directory is root's, mode 700 under systemd).

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::time::Duration;

use crate::exec::{self, Cmd, Finished};
use crate::output::Output;
use crate::secret::Secret;

/// What every secret value is replaced with.
pub(crate) const MASK: &str = "***";

/// The secret values one command was given.
#[derive(Default, Clone)]
pub(crate) struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Redactor {
        let mut values: Vec<String> =
            secrets.into_iter().map(|s| s.reveal().to_string()).filter(|v| !v.is_empty()).collect();
        // Longest first, so a secret that contains another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Redactor { values }
    }

    /// These secrets masked too (a hook's own credentials beside its `env`).
    pub(crate) fn and<'a>(mut self, secrets: impl IntoIterator<Item = &'a Secret>) -> Redactor {
        self.values.extend(secrets.into_iter().map(|s| s.reveal().to_string()).filter(|v| !v.is_empty()));
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        self.values.dedup();
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub(crate) fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), MASK);
            }
        }
        out
    }

    /// Rewrites `log` from byte `from` on with every secret masked.
    pub(crate) fn log_from(&self, log: &Path, from: u64) -> anyhow::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(log)
            .map_err(|e| crate::error::StateError::log(log, e))?;
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(from))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| crate::error::StateError::log(log, e))?;
        let mut changed = false;
        for value in &self.values {
            let needle = value.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i..].starts_with(needle) {
                    out.extend_from_slice(MASK.as_bytes());
                    i += needle.len();
                    changed = true;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            bytes = out;
        }
        if changed {
            file.set_len(from)
                .and_then(|_| file.seek(SeekFrom::Start(from)))
                .and_then(|_| file.write_all(&bytes))
                .map_err(|e| crate::error::StateError::log(log, e))?;
        }
        Ok(())
    }
}

/// [`exec::logged`] for a command that was given secrets: lines offered to `on_line`, the log
/// and the tail come back with every secret masked.
pub(crate) fn logged(
    out: &Output,
    cmd: &Cmd,
    log: &Path,
    cap: u64,
    timeout: Duration,
    redactor: &Redactor,
    on_line: &mut dyn FnMut(&str),
) -> anyhow::Result<Finished> {
    let from = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    let mut masked = |line: &str| on_line(&redactor.text(line));
    let result = exec::logged(out, cmd, log, cap, timeout, &mut masked);
    redactor.log_from(log, from)?;
    let mut finished = result?;
    finished.tail = redactor.text(&finished.tail);
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_text_and_in_the_log_after_an_offset() {
        let secrets = [crate::secret::Secret::for_tests("s3cret-value"), crate::secret::Secret::for_tests("s3cret")];
        let r = Redactor::new(secrets.iter());
        assert_eq!(r.text("a s3cret-value b s3cret"), "a *** b ***");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("1.log");
        std::fs::write(&log, "before s3cret\nafter s3cret-value and s3cret\n").unwrap();
        r.log_from(&log, 14).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "before s3cret\nafter *** and ***\n");
    }
}
