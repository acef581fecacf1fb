//! Typed error leaves that decide the exit code, and how an error chain is printed.

use std::fmt;
use std::path::PathBuf;

/// Exit codes. Stable and documented in the README; scripts depend on them.
pub mod code {
    /// Success, or nothing to do.
    pub const OK: u8 = 0;
    /// A stage failed, or a remote could not be polled.
    pub const FAILED: u8 = 1;
    /// Usage or configuration error (including a command that is not implemented yet).
    pub const USAGE: u8 = 2;
    /// Another `pipe` process holds the lock on the state.
    pub const LOCKED: u8 = 3;
    /// docker, compose or git is missing or not answering.
    pub const UNAVAILABLE: u8 = 4;
    /// The state file cannot be read, parsed or written.
    pub const STATE: u8 = 5;
}

/// The pipeline file is invalid; carries every problem found, each with file, line and column.
#[derive(Debug)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        write!(f, "invalid pipeline file ({n} error{})", if n == 1 { "" } else { "s" })?;
        for d in &self.diagnostics {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The state file (or a history or log beside it) is unreadable, corrupt or cannot be saved.
#[derive(Debug)]
pub struct StateError {
    pub path: PathBuf,
    pub message: String,
}

impl StateError {
    /// A run log beside the state that cannot be written: the same storage, the same exit code.
    pub fn log(path: &std::path::Path, err: std::io::Error) -> anyhow::Error {
        StateError { path: path.to_path_buf(), message: format!("cannot be written: {err}") }.into()
    }

    fn disk_full(&self) -> bool {
        self.message.contains("os error 28") || self.message.contains("No space left on device")
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.path.extension().is_some_and(|e| e == "log") { "run log" } else { "state file" };
        write!(f, "{what} `{}`: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for StateError {}

/// A registry (or another remote service) did not answer: nothing is recorded, so the next
/// run retries, as when the Docker engine is down.
#[derive(Debug)]
pub struct RemoteUnavailable {
    pub what: String,
    pub reason: String,
}

impl fmt::Display for RemoteUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} does not answer: {}", self.what, self.reason)
    }
}

impl std::error::Error for RemoteUnavailable {}

impl RemoteUnavailable {
    /// Docker's wording for a registry it could not reach (as opposed to one that refused).
    pub fn unreachable(output: &str) -> Option<&str> {
        const NEEDLES: [&str; 8] = [
            "connection refused",
            "no such host",
            "i/o timeout",
            "TLS handshake timeout",
            "connection reset by peer",
            "502 Bad Gateway",
            "503 Service Unavailable",
            "504 Gateway Timeout",
        ];
        output.lines().find(|line| NEEDLES.iter().any(|n| line.contains(n))).map(str::trim)
    }
}

/// Another `pipe` process holds the state lock.
#[derive(Debug)]
pub struct Locked {
    pub lock_file: PathBuf,
    pub holder: Option<String>,
}

impl fmt::Display for Locked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "another pipe process holds the lock `{}`", self.lock_file.display())?;
        if let Some(holder) = &self.holder {
            write!(f, " ({holder})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Locked {}

/// A usage mistake that clap cannot see, such as an unknown project name.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// One problem in the pipeline file, located by line and column (both 1-based).
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
    }
}

/// A required program is missing or its service does not answer.
#[derive(Debug)]
pub struct ToolUnavailable {
    pub tool: String,
    pub reason: String,
}

impl fmt::Display for ToolUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is unavailable: {}", self.tool, self.reason)
    }
}

impl std::error::Error for ToolUnavailable {}

/// A process that exited unsuccessfully, in cargo's shape: argv, status, tail of its output.
#[derive(Debug)]
pub struct ProcessFailed {
    pub command: String,
    pub status: String,
    pub output_tail: String,
}

impl fmt::Display for ProcessFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process didn't exit successfully: `{}` ({})", self.command, self.status)?;
        let tail = self.output_tail.trim_end();
        if !tail.is_empty() {
            write!(f, "\n--- output\n{tail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProcessFailed {}

/// The run was stopped by a signal; exits 128 + the signal number (143 or 130).
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.0 == libc::SIGTERM { "SIGTERM" } else { "SIGINT" };
        write!(f, "interrupted by {name}; the stage was recorded as interrupted and the next run retries it")
    }
}

impl std::error::Error for Interrupted {}

/// A stage that ran and did not succeed (exit 1); its record is already saved.
#[derive(Debug)]
pub struct StageFailed(pub String);

impl std::fmt::Display for StageFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StageFailed {}

/// The exit code for an error: the first typed leaf found walking the chain decides.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(interrupted) = cause.downcast_ref::<Interrupted>() {
            return (128 + interrupted.0) as u8;
        }
        if cause.is::<ConfigError>() || cause.is::<Usage>() {
            return code::USAGE;
        }
        if cause.is::<Locked>() {
            return code::LOCKED;
        }
        if cause.is::<StateError>() {
            return code::STATE;
        }
        if cause.is::<ToolUnavailable>() || cause.is::<RemoteUnavailable>() {
            return code::UNAVAILABLE;
        }
    }
    code::FAILED
}

/// Renders `error: outer` followed by `caused by:` lines, cargo style.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}");
    for cause in err.chain().skip(1) {
        out.push_str(&format!("\ncaused by: {cause}"));
    }
    if let Some(hint) = hint(err) {
        out.push_str(&format!("\nhint: {hint}"));
    }
    out
}

fn hint(err: &anyhow::Error) -> Option<&'static str> {
    for cause in err.chain() {
        if cause.is::<Locked>() {
            return Some("wait for the other run to finish; the lock is released when it exits");
        }
        if let Some(state) = cause.downcast_ref::<StateError>() {
            if state.disk_full() {
                return Some("free space on the file system that holds the state; nothing recorded was lost");
            }
            return Some("fix or move the state file aside by hand; pipe never resets it on its own");
        }
        if cause.is::<ToolUnavailable>() {
            return Some("is the Docker engine running? `docker version` should show a Server section");
        }
        if cause.is::<RemoteUnavailable>() {
            return Some("nothing was recorded; the next run retries once it answers");
        }
    }
    None
}

/// 1-based line and column (in characters) of a byte offset into `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncé\nx", 7), (3, 1));
        assert_eq!(line_column("ab\ncéd", 6), (2, 3));
        assert_eq!(line_column("é", 1), (1, 1));
    }
}
