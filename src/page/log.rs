//! Run logs for the page, never read whole: the HTML page streams the log from its file a
//! bounded piece at a time, terminal escape sequences removed and the text escaped piece by
//! piece ([`stream_html`], [`Strip`]); the JSON reads a bounded window cut at a line boundary
//! ([`window`]) and keeps the text as `pipe logs --json` does.

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

/// Removes CSI (`ESC [ … final`), OSC (`ESC ] … BEL` or `ESC \\`) and two-byte escapes, and
/// every other control character but newline and tab; a carriage return ends nothing visible.
#[cfg(test)]
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    Strip::default().push(text.as_bytes(), &mut out);
    out
}

/// Where [`Strip`] is in an escape sequence.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Escape {
    #[default]
    Text,
    /// After `ESC`.
    Start,
    /// In `ESC [ …`, until a final byte.
    Csi,
    /// In `ESC ] …`, until BEL or `ESC \\`.
    Osc,
    /// After an `ESC` inside an OSC.
    OscEsc,
}

/// [`strip_ansi`] over a log read a piece at a time: an escape sequence or a UTF-8 character
/// cut by a piece's end is finished by the next piece, so the text is the same however the log
/// was cut. Invalid UTF-8 becomes U+FFFD, as `String::from_utf8_lossy` does.
#[derive(Debug, Default)]
pub(crate) struct Strip {
    escape: Escape,
    /// The start of a character the piece ended in (at most 3 bytes).
    partial: Vec<u8>,
}

impl Strip {
    /// Appends the visible text of `bytes` to `out`.
    pub(crate) fn push(&mut self, mut bytes: &[u8], out: &mut String) {
        if !self.partial.is_empty() {
            // Complete the character the last piece ended in, one byte at a time (≤ 3).
            while let Some((&b, rest)) = bytes.split_first() {
                self.partial.push(b);
                bytes = rest;
                match std::str::from_utf8(&self.partial) {
                    Ok(c) => {
                        let c = c.to_string();
                        self.text(&c, out);
                        self.partial.clear();
                        break;
                    }
                    Err(e) if let Some(bad) = e.error_len() => {
                        // Not a character after all: one replacement, then the bytes after it again.
                        let taken = std::mem::take(&mut self.partial);
                        self.text("\u{fffd}", out);
                        let mut again = taken[e.valid_up_to() + bad..].to_vec();
                        again.extend_from_slice(bytes);
                        return self.push(&again, out);
                    }
                    Err(_) => {}
                }
            }
        }
        for chunk in bytes.utf8_chunks() {
            self.text(chunk.valid(), out);
            let invalid = chunk.invalid();
            if invalid.is_empty() {
                continue;
            }
            // An incomplete character at the very end waits for the next piece.
            let at_end = invalid.as_ptr_range().end == bytes.as_ptr_range().end;
            if at_end && invalid.len() < 4 && std::str::from_utf8(invalid).is_err_and(|e| e.error_len().is_none()) {
                self.partial.extend_from_slice(invalid);
            } else {
                self.text("\u{fffd}", out);
            }
        }
    }

    /// The end of the log: a character left incomplete is one replacement character.
    pub(crate) fn finish(&mut self, out: &mut String) {
        if !std::mem::take(&mut self.partial).is_empty() {
            self.text("\u{fffd}", out);
        }
    }

    fn text(&mut self, text: &str, out: &mut String) {
        for c in text.chars() {
            self.escape = match (self.escape, c) {
                (Escape::Text, '\u{1b}') => Escape::Start,
                (Escape::Text, '\n' | '\t') => {
                    out.push(c);
                    Escape::Text
                }
                (Escape::Text, c) => {
                    if !c.is_control() {
                        out.push(c);
                    }
                    Escape::Text
                }
                (Escape::Start, '[') => Escape::Csi,
                (Escape::Start, ']') => Escape::Osc,
                (Escape::Start, _) => Escape::Text,
                (Escape::Csi, '\u{40}'..='\u{7e}') => Escape::Text,
                (Escape::Csi, _) => Escape::Csi,
                (Escape::Osc | Escape::OscEsc, '\u{7}') => Escape::Text,
                (Escape::OscEsc, '\\') => Escape::Text,
                (Escape::Osc | Escape::OscEsc, '\u{1b}') => Escape::OscEsc,
                (Escape::Osc | Escape::OscEsc, _) => Escape::Osc,
            };
        }
    }
}

/// Bytes of log read at a time when a page streams it.
const PIECE: usize = 16 * 1024;

/// Writes `len` bytes of `file` from `offset` as HTML text: escape codes removed ([`Strip`]),
/// then escaped by maud's escaper, a [`PIECE`] at a time with buffers reused, so memory stays
/// bounded whatever the log's size. A start inside a UTF-8 character skips to the next one.
/// Gives up at `deadline` (a client reading too slowly).
pub(crate) fn stream_html(
    mut file: File,
    offset: u64,
    len: u64,
    out: &mut dyn std::io::Write,
    deadline: std::time::Instant,
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    file.seek(SeekFrom::Start(offset))?;
    let mut file = file.take(len.saturating_sub(offset));
    let (mut piece, mut text, mut html) = (vec![0u8; PIECE], String::new(), String::new());
    let mut strip = Strip::default();
    let mut first = offset > 0;
    loop {
        let n = match file.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut bytes = &piece[..n];
        if std::mem::take(&mut first) {
            let skip = bytes.iter().take(3).take_while(|&&b| b & 0xc0 == 0x80).count();
            bytes = &bytes[skip..];
        }
        text.clear();
        html.clear();
        strip.push(bytes, &mut text);
        let _ = maud::Escaper::new(&mut html).write_str(&text);
        out.write_all(html.as_bytes())?;
        if std::time::Instant::now() > deadline {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client reads too slowly"));
        }
    }
    text.clear();
    html.clear();
    strip.finish(&mut text);
    let _ = maud::Escaper::new(&mut html).write_str(&text);
    out.write_all(html.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_removed() {
        assert_eq!(strip_ansi("\u{1b}[1;31mred\u{1b}[0m ok\r\n"), "red ok\n");
        assert_eq!(strip_ansi("\u{1b}]0;title\u{7}x\u{1b}]8;;u\u{1b}\\y\tz\u{0}"), "xy\tz");
        assert_eq!(strip_ansi("<script>"), "<script>");
        assert_eq!(strip_ansi("a\u{1b}]0;t\u{1b}x\u{7}b"), "ab", "an ESC inside an OSC does not end it");
    }

    #[test]
    fn text_cut_anywhere_strips_as_it_does_whole() {
        let text = "é\u{1b}[1;31mred\u{1b}[0m→ ok\r\n\u{1b}]8;;u\u{1b}\\link\u{1b}]0;t\u{7}🦀 <b>\n";
        let mut bytes = text.as_bytes().to_vec();
        bytes.extend_from_slice(b"bad \xff\xfe end \xe2\x82");
        let whole = {
            let mut out = String::new();
            let mut s = Strip::default();
            s.push(&bytes, &mut out);
            s.finish(&mut out);
            out
        };
        let lossy = String::from_utf8_lossy(&bytes);
        assert_eq!(whole, strip_ansi(&lossy), "invalid bytes become U+FFFD as from_utf8_lossy does");
        for a in 0..bytes.len() {
            for b in a..bytes.len() {
                let mut out = String::new();
                let mut s = Strip::default();
                for piece in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    s.push(piece, &mut out);
                }
                s.finish(&mut out);
                assert_eq!(out, whole, "cut at {a} and {b}");
            }
        }
    }

    #[test]
    fn a_streamed_log_is_the_escaped_stripped_text_from_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let line = "\u{1b}[31m<script>alert('x')</script>\u{1b}[0m & é\n";
        std::fs::write(&path, line.repeat(2000)).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        let far = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut out = Vec::new();
        stream_html(File::open(&path).unwrap(), 0, len, &mut out, far).unwrap();
        let escaped = "&lt;script&gt;alert('x')&lt;/script&gt; &amp; é\n";
        assert_eq!(String::from_utf8(out).unwrap(), escaped.repeat(2000));
        // From inside the `é` (its second byte): the character's rest is skipped.
        let at = line.find('é').unwrap() as u64 + 1;
        let mut out = Vec::new();
        stream_html(File::open(&path).unwrap(), at, len, &mut out, far).unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("\n&lt;script&gt;"));
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
