//! The only place that spawns processes. Commands are argv vectors built as data, never shell
//! strings; each is logged at `-v` with secrets already redacted; a missing program is a
//! [`ToolUnavailable`] error (exit 4).
//!
//! Every child runs in its own process group, and that group is the command's lifetime: a
//! timeout or a signal stops the whole group (SIGTERM, SIGKILL after [`GRACE`]); once the direct
//! child has exited, pipe waits at most [`DRAIN`] for output its descendants still hold open,
//! then stops whatever is left of the group the same way. The command succeeds or fails on the
//! direct child's exit status. A daemon meant to outlive its command leaves the group itself
//! (`setsid`, or better a systemd unit).

use crate::error::{ProcessFailed, ToolUnavailable};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::error::StateError;
use crate::output::Output;

/// How much of a failed command's output an error message carries.
const TAIL_BYTES: usize = 4096;

/// How long a stopped process group gets between SIGTERM and SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// How long output is still read after the direct child exited (descendants may hold the pipe).
pub(crate) const DRAIN: Duration = Duration::from_millis(1500);

/// A process to run: program, argv, environment, working directory and optional stdin.
#[derive(Clone)]
pub(crate) struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// Start from an empty environment: the process sees only `inherit` and `env`.
    env_clear: bool,
    /// With `env_clear`, the variables of pipe's own environment the process keeps.
    inherit: Vec<&'static str>,
    dir: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    /// Runs to its end even after SIGTERM/SIGINT (cleanup that must finish).
    through_signals: bool,
}

impl Cmd {
    pub(crate) fn new(program: impl Into<OsString>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            inherit: Vec::new(),
            dir: None,
            stdin: None,
            through_signals: false,
        }
    }

    /// Not stopped by a signal pipe received (still by its timeout): cleanup after SIGTERM,
    /// such as removing containers that never took traffic.
    pub(crate) fn through_signals(mut self) -> Cmd {
        self.through_signals = true;
        self
    }

    /// A program given as a words list (e.g. `["docker", "compose"]`) plus arguments.
    pub(crate) fn from_argv(argv: &[OsString]) -> Cmd {
        let mut cmd = Cmd::new(argv.first().cloned().unwrap_or_default());
        cmd.args.extend(argv.iter().skip(1).cloned());
        cmd
    }

    pub(crate) fn arg(mut self, arg: impl Into<OsString>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Cmd {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Cmd {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the process with only the variables given by [`Cmd::env`], none of pipe's own
    /// (compose must not interpolate pipe's secrets into a repository's services).
    pub(crate) fn env_clear(mut self) -> Cmd {
        self.env_clear = true;
        self
    }

    /// [`Cmd::env_clear`], keeping these of pipe's own variables (where set) under those given
    /// by [`Cmd::env`]: a deploy target sees what its tools need to work, not pipe's secrets.
    pub(crate) fn env_clear_but(mut self, keep: &[&'static str]) -> Cmd {
        self.env_clear = true;
        self.inherit = keep.to_vec();
        self
    }

    pub(crate) fn dir(mut self, dir: impl Into<PathBuf>) -> Cmd {
        self.dir = Some(dir.into());
        self
    }

    /// Bytes written to the process's stdin (how passwords reach `docker login`).
    pub(crate) fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    pub(crate) fn argv(&self) -> Vec<OsString> {
        std::iter::once(self.program.clone()).chain(self.args.iter().cloned()).collect()
    }

    /// The duct expression, in a process group of its own (its pid is the group id), writing
    /// to `stdout` and `stderr`. Dropping the expression closes its copies of those write ends.
    fn expression(&self, stdout: std::io::PipeWriter, stderr: std::io::PipeWriter) -> duct::Expression {
        let mut expression = duct::cmd(&self.program, &self.args)
            .before_spawn(|command| {
                command.process_group(0);
                Ok(())
            })
            .unchecked()
            .stdout_file(stdout)
            .stderr_file(stderr);
        if self.env_clear {
            let kept = self.inherit.iter().filter_map(|k| std::env::var_os(k).map(|v| (OsString::from(k), v)));
            expression = expression.full_env(kept.chain(self.env.iter().cloned()));
        }
        for (k, v) in &self.env {
            expression = expression.env(k, v);
        }
        if let Some(dir) = &self.dir {
            expression = expression.dir(dir);
        }
        match &self.stdin {
            Some(bytes) => expression.stdin_bytes(bytes.clone()),
            None => expression.stdin_null(),
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
pub(crate) struct Finished {
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
    /// After recording what the process did: a process stopped by a signal ends the command
    /// with [`crate::error::Interrupted`].
    pub(crate) fn check_interrupted(&self) -> anyhow::Result<()> {
        if self.interrupted { crate::signals::check() } else { Ok(()) }
    }

    pub(crate) fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out && !self.interrupted
    }

    /// How the process ended, as a stage records it.
    pub(crate) fn outcome(&self) -> crate::model::Outcome {
        use crate::model::Outcome;
        if self.interrupted {
            Outcome::Interrupted
        } else if self.timed_out {
            Outcome::TimedOut
        } else if self.success() {
            Outcome::Passed
        } else {
            Outcome::Failed
        }
    }

    pub(crate) fn describe(&self) -> String {
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
pub(crate) fn capture(out: &Output, cmd: &Cmd, timeout: Duration) -> anyhow::Result<String> {
    let (stdout, failed) = capture_even_failed(out, cmd, timeout)?;
    match failed {
        Some(err) => Err(err.into()),
        None => Ok(stdout),
    }
}

/// [`capture`] for a command whose stdout matters even when it exits non-zero (`docker image
/// inspect` of several images, some missing): its stdout, and how it failed if it did. A
/// signal still ends the command with [`crate::error::Interrupted`].
pub(crate) fn capture_even_failed(
    out: &Output,
    cmd: &Cmd,
    timeout: Duration,
) -> anyhow::Result<(String, Option<ProcessFailed>)> {
    out.detail(format!("$ {cmd}"));
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let ended = supervise(cmd, timeout, false, &mut |stream, chunk| match stream {
        Stream::Out => stdout.extend_from_slice(chunk),
        Stream::Err => {
            stderr.extend_from_slice(chunk);
            if stderr.len() > 2 * TAIL_BYTES {
                stderr.drain(..stderr.len() - TAIL_BYTES);
            }
        }
    })?;
    if let Some(signal) = ended.interrupted {
        return Err(crate::error::Interrupted(signal).into());
    }
    let failed = |status: String| ProcessFailed {
        command: cmd.to_string(),
        status,
        output_tail: tail_of(&String::from_utf8_lossy(&stderr)),
    };
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    if ended.timed_out {
        return Ok((stdout, Some(failed(format!("timed out after {}s", timeout.as_secs())))));
    }
    if !ended.status.success() {
        return Ok((stdout, Some(failed(ended.status.to_string()))));
    }
    Ok((stdout, None))
}

/// Runs a command with stdout and stderr streamed into `log` (at most `cap` bytes are kept;
/// the rest is counted and dropped so a runaway build cannot fill the disk or memory). Each
/// complete output line is also offered to `on_line` (for a spinner). Stopped at `timeout`.
pub(crate) fn logged(
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
    let mut written: u64 = 0;
    let mut dropped: u64 = 0;
    let mut tail: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut write_error = None;
    let ended = supervise(cmd, timeout, true, &mut |_, chunk| {
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
    })?;
    if dropped > 0 {
        let _ = writeln!(file, "\n[pipe: log capped at {cap} bytes; {dropped} more bytes of output were dropped]");
    }
    if let Some(e) = write_error {
        return Err(StateError::log(log, e));
    }
    let finished = Finished {
        code: ended.status.code(),
        timed_out: ended.timed_out,
        interrupted: ended.interrupted.is_some(),
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

/// Which pipe a chunk of output came from.
#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// How a supervised command ended.
struct Ended {
    /// The direct child's exit status.
    status: ExitStatus,
    timed_out: bool,
    /// The signal pipe received while the command ran.
    interrupted: Option<i32>,
}

/// Spawns `cmd` in its own process group and hands its output to `sink` (stderr into the same
/// stream when `merged`) until the direct child has exited and the output is closed, or
/// [`DRAIN`] after that exit when descendants still hold it. A timeout or a signal stops the
/// group; whatever the command left in its group is stopped before this returns.
fn supervise(cmd: &Cmd, timeout: Duration, merged: bool, sink: &mut dyn FnMut(Stream, &[u8])) -> anyhow::Result<Ended> {
    let (out_read, out_write) = std::io::pipe().context("failed to create a pipe")?;
    let (err_read, err_write) = if merged {
        (None, out_write.try_clone().context("failed to create a pipe")?)
    } else {
        let (read, write) = std::io::pipe().context("failed to create a pipe")?;
        (Some(read), write)
    };
    let expression = cmd.expression(out_write, err_write);
    let spawned = expression.start();
    // Our copies of the write ends go with the expression: end of output then means every
    // process that inherited them closed them or exited.
    drop(expression);
    let child = spawned.map_err(|e| spawn_error(cmd, e))?;
    let group =
        child.pids().first().copied().ok_or_else(|| anyhow::anyhow!("`{cmd}` started no process"))? as libc::pid_t;
    // Bounded: a command that writes faster than its log is written waits on its own pipe
    // (at most 64 chunks of 16 KiB in flight), so a gigabyte of output costs no memory.
    let (tx, rx) = mpsc::sync_channel::<(Stream, Vec<u8>)>(64);
    for (stream, pipe) in [(Stream::Out, Some(out_read)), (Stream::Err, err_read)] {
        let (Some(mut pipe), tx) = (pipe, tx.clone()) else { continue };
        // A reader left blocked by a descendant that keeps the pipe open ends when it closes.
        std::thread::Builder::new()
            .name("pipe-exec-output".into())
            .spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) if tx.send((stream, buf[..n].to_vec())).is_ok() => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        _ => break,
                    }
                }
            })
            .context("failed to start an output reader")?;
    }
    drop(tx);
    let started = Instant::now();
    let (mut status, mut exited_at, mut closed) = (None, None, false);
    let mut pause = Duration::from_millis(1);
    let (mut stopped_at, mut timed_out, mut interrupted) = (None::<Instant>, false, None);
    loop {
        if closed {
            // Output ended: the child is exiting. Ask again soon, backing off to 20 ms for a
            // child that closed its output and goes on running.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        } else {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((stream, chunk)) => sink(stream, &chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => closed = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        if status.is_none()
            && let Some(output) = child.try_wait().with_context(|| format!("failed to wait for `{cmd}`"))?
        {
            status = Some(output.status);
            exited_at = Some(Instant::now());
        }
        if let Some(at) = exited_at {
            if closed || at.elapsed() >= DRAIN {
                break;
            }
            continue;
        }
        match stopped_at {
            None => {
                if started.elapsed() >= timeout {
                    timed_out = true;
                } else if !cmd.through_signals {
                    interrupted = crate::signals::received();
                }
                if timed_out || interrupted.is_some() {
                    signal_group(group, libc::SIGTERM);
                    stopped_at = Some(Instant::now());
                }
            }
            Some(at) if at.elapsed() >= GRACE => signal_group(group, libc::SIGKILL),
            Some(_) => {}
        }
    }
    // Output that arrived with the exit.
    while let Ok((stream, chunk)) = rx.try_recv() {
        sink(stream, &chunk);
    }
    sweep(group, stopped_at);
    let status = status.unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL));
    Ok(Ended { status, timed_out, interrupted })
}

/// Stops what is left of a process group: SIGTERM (unless it was sent at `stopped_at`), then
/// SIGKILL once [`GRACE`] has passed. The docker CLI relays SIGTERM (`docker run` stops its
/// container, `docker build` cancels the build) when given the chance.
fn sweep(group: libc::pid_t, stopped_at: Option<Instant>) {
    if !group_alive(group) {
        return;
    }
    let since = stopped_at.unwrap_or_else(|| {
        signal_group(group, libc::SIGTERM);
        Instant::now()
    });
    while group_alive(group) {
        if since.elapsed() >= GRACE {
            signal_group(group, libc::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal_group(group: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) on a process group pipe created (negative pid: the whole group).
    unsafe {
        libc::kill(-group, signal);
    }
}

/// Whether a live (not zombie) process is still in the group. Zombies count as gone: their
/// parent exited and whoever adopted them may never reap them.
fn group_alive(group: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    if unsafe { libc::kill(-group, 0) } != 0 {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return true };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { return false };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return false };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let pgrp = fields.nth(1).and_then(|p| p.parse::<libc::pid_t>().ok());
        pgrp == Some(group) && state != "Z" && state != "X"
    })
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
pub(crate) fn available(program: &OsStr) -> bool {
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
