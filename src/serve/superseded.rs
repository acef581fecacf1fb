//! Runs superseded while they waited (a newer request for their hook came first) never run,
//! and retention would remove the document they got soon after it was written: under a flood
//! most accepted runs are such runs, and a file each cost more than the request that made
//! them. So they have no document while the receiver runs: the run table keeps each in memory
//! until retention lets it go, and its document is appended to `serve/superseded`, one line
//! `HOOK DOCUMENT` as in `serve/accepted` (not synced: a status after acceptance is evidence,
//! not a promise). At start the runs `serve/accepted` has without a document get theirs from
//! this file when it has them (else they are recorded `cancelled`: after a power cut that lost
//! the line, or a crash before the chores' thread wrote it, or a write that failed), and the
//! file starts empty. It is rewritten with the runs still kept once it has grown past twice
//! their number and [`SLACK`] lines more (a rewrite that fails leaves the file to be appended
//! to as before).

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;

/// Lines the file may hold beyond twice the runs it must.
const SLACK: usize = 1024;

pub(crate) struct Ledger {
    path: PathBuf,
    /// Open for appending once something was written.
    file: Option<File>,
    lines: usize,
}

impl Ledger {
    /// `path`, not written to until [`Ledger::start`].
    pub(crate) fn new(path: PathBuf) -> Ledger {
        Ledger { path, file: None, lines: 0 }
    }

    /// What a previous process left (nothing when it cannot be read).
    pub(crate) fn read(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_default()
    }

    /// Empties the file: the documents it had were written at start.
    pub(crate) fn start(&mut self) -> anyhow::Result<()> {
        self.rewrite(Vec::new(), 0)
    }

    /// Whether the file holds more than twice the `kept` runs it must: then it is rewritten.
    pub(crate) fn full(&self, kept: usize) -> bool {
        self.lines > 2 * kept + SLACK
    }

    /// Appends one line.
    pub(crate) fn append(&mut self, line: &[u8]) -> anyhow::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                File::options()
                    .append(true)
                    .create(true)
                    .open(&self.path)
                    .map_err(|e| anyhow::anyhow!("failed to open `{}`: {e}", self.path.display()))?,
            ),
        };
        file.write_all(line).map_err(|e| anyhow::anyhow!("failed to write `{}`: {e}", self.path.display()))?;
        self.lines += 1;
        Ok(())
    }

    /// Writes the file anew with `text`, of `lines` lines (a temporary file renamed over it;
    /// not synced).
    pub(crate) fn rewrite(&mut self, text: Vec<u8>, lines: usize) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("new");
        std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| anyhow::anyhow!("failed to write `{}`: {e}", self.path.display()))?;
        self.file = None;
        self.lines = lines;
        Ok(())
    }
}
