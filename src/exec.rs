//! The only place that spawns processes (through duct). Commands are argv vectors built as
//! data, never shell strings; each is logged at `-v` with secrets already redacted; each has a
//! timeout after which it is killed; a missing program is a [`ToolUnavailable`] error (exit 4).

use crate::error::{ProcessFailed, ToolUnavailable};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::error::StateError;
use crate::output::Output;

/// How much of a failed command's output an error message carries.
const TAIL_BYTES: usize = 4096;

/// A process to run: program, argv, environment, working directory and optional stdin.
#[derive(Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Cmd {
        Cmd { program: program.into(), args: Vec::new(), env: Vec::new(), dir: None, stdin: None }
    }

    /// A program given as a words list (e.g. `["docker", "compose"]`) plus arguments.
    pub fn from_argv(argv: &[OsString]) -> Cmd {
        let mut cmd = Cmd::new(argv.first().cloned().unwrap_or_default());
        cmd.args.extend(argv.iter().skip(1).cloned());
        cmd
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Cmd {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Cmd {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Cmd {
        self.dir = Some(dir.into());
        self
    }

    /// Bytes written to the process's stdin (how passwords reach `docker login`).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn argv(&self) -> Vec<OsString> {
        std::iter::once(self.program.clone()).chain(self.args.iter().cloned()).collect()
    }

    fn expression(&self) -> duct::Expression {
        let mut expr = duct::cmd(&self.program, &self.args).unchecked();
        for (k, v) in &self.env {
            expr = expr.env(k, v);
        }
        if let Some(dir) = &self.dir {
            expr = expr.dir(dir);
        }
        match &self.stdin {
            Some(bytes) => expr.stdin_bytes(bytes.clone()),
            None => expr.stdin_null(),
        }
    }
}

/// The argv as a person would type it, each word quoted only when needed. Stdin is never shown.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.argv().iter().map(|w| quote(&w.to_string_lossy())).collect();
        f.write_str(&words.join(" "))
    }
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%^".contains(c));
    if plain { word.to_string() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

/// How a logged process ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit code; `None` when killed by a signal or on timeout.
    pub code: Option<i32>,
    pub timed_out: bool,
    /// Stopped because pipe received SIGTERM or SIGINT.
    pub interrupted: bool,
    pub duration: Duration,
    /// The timeout the process ran under.
    pub limit: Duration,
    /// The last few KB of output, for error messages and notifications.
    pub tail: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out && !self.interrupted
    }

    pub fn describe(&self) -> String {
        if self.interrupted {
            return "interrupted by a signal".to_string();
        }
        match (self.timed_out, self.code) {
            (true, _) => format!("timed out after {}s", self.limit.as_secs_f64().round()),
            (false, Some(code)) => format!("exit status: {code}"),
            (false, None) => "killed by a signal".to_string(),
        }
    }
}

fn spawn_error(cmd: &Cmd, err: std::io::Error) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::NotFound {
        ToolUnavailable { tool: cmd.program.to_string_lossy().into_owned(), reason: "not found on PATH".into() }.into()
    } else {
        anyhow::Error::new(err).context(format!("failed to start `{cmd}`"))
    }
}

/// Runs a short command and returns its stdout; a non-zero exit is a [`ProcessFailed`].
pub fn capture(out: &Output, cmd: &Cmd, timeout: Duration) -> anyhow::Result<String> {
    out.detail(format!("$ {cmd}"));
    let handle = cmd.expression().stdout_capture().stderr_capture().start().map_err(|e| spawn_error(cmd, e))?;
    let started = Instant::now();
    let result = loop {
        let left = timeout.saturating_sub(started.elapsed());
        let slice = left.min(Duration::from_millis(100));
        let result = handle.wait_timeout(slice).with_context(|| format!("failed to wait for `{cmd}`"))?;
        if result.is_some() || left.is_zero() {
            break result;
        }
        if let Some(signal) = crate::signals::received() {
            let _ = handle.kill();
            return Err(crate::error::Interrupted(signal).into());
        }
    };
    let Some(output) = result else {
        let _ = handle.kill();
        return Err(ProcessFailed {
            command: cmd.to_string(),
            status: format!("timed out after {}s", timeout.as_secs()),
            output_tail: String::new(),
        }
        .into());
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(ProcessFailed {
            command: cmd.to_string(),
            status: output.status.to_string(),
            output_tail: tail_of(&stderr),
        }
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command with stdout and stderr streamed into `log` (at most `cap` bytes are kept;
/// the rest is counted and dropped so a runaway build cannot fill the disk or memory). Each
/// complete output line is also offered to `on_line` (for a spinner). Killed at `timeout`.
pub fn logged(
    out: &Output,
    cmd: &Cmd,
    log: &Path,
    cap: u64,
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
) -> anyhow::Result<Finished> {
    out.detail(format!("$ {cmd}"));
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| StateError::log(log, e))?;
    writeln!(file, "$ {cmd}").map_err(|e| StateError::log(log, e))?;
    let started = Instant::now();
    let reader = Arc::new(cmd.expression().stderr_to_stdout().reader().map_err(|e| spawn_error(cmd, e))?);
    let timed_out = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    // The watchdog wakes when `done` is dropped, at the deadline, or to look for a signal.
    let (done, finished_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let (reader, timed_out, interrupted) = (reader.clone(), timed_out.clone(), interrupted.clone());
        std::thread::spawn(move || {
            loop {
                let left = timeout.saturating_sub(started.elapsed());
                match finished_rx.recv_timeout(left.min(Duration::from_millis(100))) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                        timed_out.store(true, Ordering::Relaxed);
                        stop(&reader, &finished_rx);
                        return;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if crate::signals::received().is_some() {
                            interrupted.store(true, Ordering::Relaxed);
                            stop(&reader, &finished_rx);
                            return;
                        }
                    }
                    _ => return,
                }
            }
        })
    };
    let mut written: u64 = 0;
    let mut dropped: u64 = 0;
    let mut tail: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut write_error = None;
    loop {
        let n = match (&*reader).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        let room = cap.saturating_sub(written) as usize;
        let keep = chunk.len().min(room);
        if keep > 0 && write_error.is_none() {
            if let Err(e) = file.write_all(&chunk[..keep]) {
                write_error = Some(e);
            }
            written += keep as u64;
        }
        dropped += (chunk.len() - keep) as u64;
        tail.extend_from_slice(chunk);
        if tail.len() > 2 * TAIL_BYTES {
            tail.drain(..tail.len() - TAIL_BYTES);
        }
        for &b in chunk {
            if b == b'\n' {
                on_line(String::from_utf8_lossy(&line).trim_end());
                line.clear();
            } else if line.len() < 512 {
                line.push(b);
            }
        }
    }
    drop(done);
    let _ = watchdog.join();
    let status = reader.try_wait().ok().flatten().map(|o| o.status);
    let status = match status {
        Some(s) => Some(s),
        None => {
            let _ = reader.kill();
            reader.try_wait().ok().flatten().map(|o| o.status)
        }
    };
    let timed_out = timed_out.load(Ordering::Relaxed);
    let interrupted = interrupted.load(Ordering::Relaxed);
    if dropped > 0 {
        let _ = writeln!(file, "\n[pipe: log capped at {cap} bytes; {dropped} more bytes of output were dropped]");
    }
    if let Some(e) = write_error {
        return Err(StateError::log(log, e));
    }
    let finished = Finished {
        code: status.and_then(|s| s.code()),
        timed_out,
        interrupted,
        duration: started.elapsed(),
        limit: timeout,
        tail: tail_of(&String::from_utf8_lossy(&tail)),
    };
    let _ = writeln!(file, "[pipe: {} after {:.1}s]", finished.describe(), finished.duration.as_secs_f64());
    // Flushed, not fsynced: a log is evidence, not state, and an fsync per command would add
    // milliseconds to every hook run. The state file is always fsynced.
    file.flush().map_err(|e| StateError::log(log, e))?;
    Ok(finished)
}

/// How long a stopped child gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Stops a child: SIGTERM, then SIGKILL if it has not exited (its output closed) within
/// [`GRACE`]. The docker CLI relays SIGTERM (`docker run` stops its container, `docker build`
/// cancels the build) when given the chance.
fn stop(reader: &duct::ReaderHandle, finished: &std::sync::mpsc::Receiver<()>) {
    for pid in reader.pids() {
        // SAFETY: kill(2) with a pid duct spawned and has not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(GRACE) {
        let _ = reader.kill();
    }
}

/// The last [`TAIL_BYTES`] of text, cut at a line start.
fn tail_of(text: &str) -> String {
    if text.len() <= TAIL_BYTES {
        return text.to_string();
    }
    let mut start = text.len() - TAIL_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    cut.find('\n').map_or(cut, |i| &cut[i + 1..]).to_string()
}

/// Is `program` on PATH (or an existing path)?
pub fn available(program: &OsStr) -> bool {
    which::which(program).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_needs_it() {
        let cmd = Cmd::new("docker").args(["build", "-t", "app:dev", "--label", "a=b c", "x$(touch pwned)"]);
        assert_eq!(cmd.to_string(), "docker build -t app:dev --label 'a=b c' 'x$(touch pwned)'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn tail_keeps_the_end_at_a_line_start() {
        let text = format!("{}\nlast line\n", "x".repeat(10_000));
        assert_eq!(tail_of(&text), "last line\n");
    }
}
