//! HTTP/1.1 chunked transfer coding through a bounded buffer, for streamed answers.

use std::io::Write;

/// Bytes a [`Chunked`] writer holds before sending them as one chunk.
pub(super) const CHUNK: usize = 32 * 1024;

/// HTTP/1.1 chunked transfer coding over a writer, with a bounded buffer: every [`CHUNK`]
/// bytes (or on `flush`) one chunk goes out in one write; `finish` sends the last chunk.
/// Without `chunked` (an HTTP/1.0 client), the same bytes go out as they are.
pub(super) struct Chunked<W: Write> {
    out: W,
    chunked: bool,
    buf: Vec<u8>,
    frame: Vec<u8>,
}

impl<W: Write> Chunked<W> {
    pub(super) fn new(out: W, chunked: bool) -> Chunked<W> {
        Chunked { out, chunked, buf: Vec::with_capacity(CHUNK), frame: Vec::new() }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if !self.chunked {
            self.out.write_all(&self.buf)?;
        } else {
            self.frame.clear();
            self.frame.extend_from_slice(format!("{:x}\r\n", self.buf.len()).as_bytes());
            self.frame.extend_from_slice(&self.buf);
            self.frame.extend_from_slice(b"\r\n");
            self.out.write_all(&self.frame)?;
        }
        self.buf.clear();
        Ok(())
    }

    /// Sends what is held and the terminating chunk.
    pub(super) fn finish(mut self) -> std::io::Result<()> {
        self.send()?;
        if self.chunked {
            self.out.write_all(b"0\r\n\r\n")?;
        }
        self.out.flush()
    }
}

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()?;
        self.out.flush()
    }
}
