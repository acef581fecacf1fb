//! How messages reach people: a terminal gets plain short lines (and, for long stages,
//! indicatif spinners); a journal, cron mail or a pipe gets timestamped lines without escapes.
//! Results that scripts read (tables, `--json`) go to stdout; everything else to stderr.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;

/// Verbosity and destination of diagnostic messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    pub quiet: bool,
    pub verbose: u8,
    /// stderr is a terminal: no timestamps, spinners allowed.
    pub terminal: bool,
    /// Colour allowed: a terminal and no `NO_COLOR`.
    pub color: bool,
}

impl Output {
    pub(crate) fn new(quiet: bool, verbose: u8) -> Output {
        let terminal = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Output { quiet, verbose, terminal, color: terminal && !no_color }
    }

    /// Progress and results worth knowing; hidden by `-q`.
    pub(crate) fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            self.line("", msg.as_ref());
        }
    }

    /// Detail shown with `-v`.
    pub(crate) fn detail(&self, msg: impl AsRef<str>) {
        if self.verbose > 0 && !self.quiet {
            self.line("", msg.as_ref());
        }
    }

    /// Always shown.
    pub(crate) fn warn(&self, msg: impl AsRef<str>) {
        self.line(&self.paint("warning: ", "33"), msg.as_ref());
    }

    /// Always shown; used for per-project failures that do not stop the command.
    pub(crate) fn error(&self, msg: impl AsRef<str>) {
        self.line(&self.paint("error: ", "31"), msg.as_ref());
    }

    fn paint(&self, text: &str, sgr: &str) -> String {
        if self.color { format!("\x1b[{sgr}m{text}\x1b[0m") } else { text.to_string() }
    }

    fn line(&self, prefix: &str, msg: &str) {
        let indent = " ".repeat(prefix.chars().filter(|c| c.is_ascii_alphabetic() || *c == ':' || *c == ' ').count());
        let mut text = String::new();
        for (i, line) in msg.lines().enumerate() {
            // The prefix marks the first line; the rest of a message is indented under it.
            let lead = if i == 0 { prefix } else { indent.as_str() };
            if !self.terminal {
                text.push_str(&format!("{} ", crate::clock::now()));
            }
            text.push_str(lead);
            text.push_str(line);
            text.push('\n');
        }
        let write = || {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        };
        // Spinners are cleared while the line is written and redrawn under it, so a message
        // never lands in the middle of a bar, whichever thread prints it.
        if self.terminal { bars().suspend(write) } else { write() }
    }
}

/// Writes a result (a table, a JSON document, a dry run's commands) to stdout. A reader that
/// closed its end early (`pipe status --json | head -1`) is not an error: the rest of the
/// output is dropped and the command goes on to its own end and exit code, as `git` and
/// `ripgrep` stop quietly. Any other failure to write is an error.
pub(crate) fn print(text: impl std::fmt::Display) -> anyhow::Result<()> {
    static CLOSED: AtomicBool = AtomicBool::new(false);
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match write!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        written => written.context("failed to write to stdout"),
    }
}

/// [`print`] and a newline.
pub(crate) fn println(text: impl std::fmt::Display) -> anyhow::Result<()> {
    print(format_args!("{text}\n"))
}

/// A line of a command's own output echoed to stderr (`--here`); like every message, dropped
/// when nobody reads stderr any more.
pub(crate) fn echo(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Every spinner of the process draws through one `MultiProgress`, which serialises drawing
/// with the lines printed in between (projects run in parallel, each with its own spinner).
fn bars() -> &'static indicatif::MultiProgress {
    static BARS: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(indicatif::MultiProgress::new)
}

/// A spinner for a long stage on a terminal; nothing elsewhere. Lines printed while it spins
/// clear it first and redraw it after (see [`Output::line`]), so they never garble the bar.
pub(crate) struct Spinner {
    bar: Option<indicatif::ProgressBar>,
}

impl Output {
    pub(crate) fn spinner(&self, message: &str) -> Spinner {
        if !self.terminal || self.quiet {
            return Spinner { bar: None };
        }
        let bar = bars().add(indicatif::ProgressBar::new_spinner());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(message.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Spinner { bar: Some(bar) }
    }
}

impl Spinner {
    pub(crate) fn set(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.chars().take(100).collect::<String>());
        }
    }

    pub(crate) fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
            bars().remove(&bar);
        }
    }
}

/// Formats an age in seconds as `42s`, `5m`, `3h`, `2d`.
pub(crate) fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Lays out rows in left-aligned columns separated by two spaces.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&mut header.iter().copied());
    for row in rows {
        push_row(&mut row.iter().map(String::as_str));
    }
    out
}

/// The short tail of a log for an error message.
pub(crate) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    printable(&lines[lines.len().saturating_sub(n)..].join("\n")).into_owned()
}

/// Text a command or a repository wrote (untrusted), made safe for a terminal: every control
/// character but newline and tab is shown escaped (`\u{1b}`), so no escape sequence (a window
/// title, the clipboard, a cleared screen) reaches the terminal or the journal.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        // A carriage return (docker's progress lines) only moves the cursor: dropped.
        if c == '\r' {
            continue;
        }
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The short commit id shown to people.
pub(crate) fn short(oid: &str) -> &str {
    oid.get(..12).unwrap_or(oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a test printing OSC 52 (write the clipboard) reached the terminal through
    /// `pipe logs` and error tails.
    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("ok\tline\n"), "ok\tline\n");
        assert_eq!(printable("\x1b]52;c;cm0K\x07\x1b[2J"), "\\u{1b}]52;c;cm0K\\u{7}\\u{1b}[2J");
        assert_eq!(tail_lines("a\nb\x1b[31m\n", 1), "b\\u{1b}[31m");
        assert_eq!(printable("50%\r100%\r\n"), "50%100%\n");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(7300), "2h");
        assert_eq!(age(200_000), "2d");
        assert_eq!(age(-3), "0s");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A     BB\nlong  x\n");
    }
}
