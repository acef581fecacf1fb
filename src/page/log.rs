//! Run logs for the page: read a bounded window from the file (never the whole log), cut at a
//! line boundary. The HTML page removes terminal escape sequences ([`strip_ansi`]); the JSON
//! keeps the text as `pipe logs --json` does.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes of log one page shows.
pub(crate) const CHUNK: u64 = 256 * 1024;

/// One window of a log file.
#[derive(Debug, PartialEq)]
pub(crate) struct Window {
    pub text: String,
    /// Where this window starts and where the next one would (== `len` at the end).
    pub offset: u64,
    pub next: u64,
    /// The file's length when it was opened.
    pub len: u64,
}

/// Reads at most `chunk` bytes from `offset`, ending at the last newline unless the file ends
/// first. The file is opened once, so a log replaced mid-read is read whole from the old inode.
pub(crate) fn window(path: &Path, offset: u64, chunk: u64) -> std::io::Result<Window> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let offset = offset.min(len);
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::with_capacity(chunk.min(len - offset) as usize);
    file.take(chunk).read_to_end(&mut bytes)?;
    let at_end = offset + bytes.len() as u64 >= len;
    if !at_end && let Some(cut) = bytes.iter().rposition(|&b| b == b'\n') {
        bytes.truncate(cut + 1);
    }
    let next = offset + bytes.len() as u64;
    Ok(Window { text: String::from_utf8_lossy(&bytes).into_owned(), offset, next, len })
}

/// Removes CSI (`ESC [ … final`), OSC (`ESC ] … BEL` or `ESC \`) and two-byte escapes, and
/// every other control character but newline and tab; a carriage return ends nothing visible.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_removed() {
        assert_eq!(strip_ansi("\u{1b}[1;31mred\u{1b}[0m ok\r\n"), "red ok\n");
        assert_eq!(strip_ansi("\u{1b}]0;title\u{7}x\u{1b}]8;;u\u{1b}\\y\tz\u{0}"), "xy\tz");
        assert_eq!(strip_ansi("<script>"), "<script>");
    }

    #[test]
    fn windows_end_at_a_newline_and_chain_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let w = window(&path, 0, 10).unwrap();
        assert_eq!((w.text.as_str(), w.next, w.len), ("one\ntwo\n", 8, 14));
        let w = window(&path, w.next, 10).unwrap();
        assert_eq!((w.text.as_str(), w.next), ("three\n", 14));
        assert_eq!(window(&path, 99, 10).unwrap().text, "");
    }
}
