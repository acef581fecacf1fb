//! Answers: a status, headers and a whole body, or a body followed by a stream sent as
//! HTTP/1.1 chunks.

use std::io::Write;

use super::chunked::Chunked;

/// The rest of a streamed answer, written after its `body` a bounded piece at a time.
pub(crate) type Stream = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + Send>;

/// A response: status, extra headers, JSON (or empty) body, and optionally a [`Stream`] that
/// follows the body (sent chunked, so the body's length need not be known or held).
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub stream: Option<Stream>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .field("stream", &self.stream.is_some())
            .finish()
    }
}

impl Response {
    pub(crate) fn json(status: u16, body: serde_json::Value) -> Response {
        Response::text(status, body.to_string())
    }

    pub(crate) fn empty(status: u16) -> Response {
        Response::text(status, String::new())
    }

    /// A whole body; the caller adds its `Content-Type` (JSON is assumed otherwise).
    pub(crate) fn text(status: u16, body: String) -> Response {
        Response { status, headers: Vec::new(), body, stream: None }
    }

    /// The head, and the body unless the answer is streamed (one write, one packet: the client
    /// has a short answer at once). `keep`: the connection carries another request after this
    /// answer (no `Connection: close`; never over HTTP/1.0).
    pub(super) fn bytes(&self, http10: bool, keep: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.body.is_empty() && !self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            head.push_str("Content-Type: application/json\r\n");
        }
        let close = if keep && !http10 { "" } else { "Connection: close\r\n" };
        if self.stream.is_none() {
            head.push_str(&format!("Content-Length: {}\r\n{close}\r\n", self.body.len()));
            head.push_str(&self.body);
        } else if http10 {
            // HTTP/1.0 knows no chunks: the body ends where the connection does.
            head.push_str("Connection: close\r\n\r\n");
        } else {
            head.push_str(&format!("Transfer-Encoding: chunked\r\n{close}\r\n"));
        }
        head.into_bytes()
    }

    /// The head alone, as the answer to a `HEAD` request carries it (its `Content-Length` that
    /// of the body it leaves out).
    pub(super) fn head_bytes(&self, http10: bool, keep: bool) -> Vec<u8> {
        let mut bytes = self.bytes(http10, keep);
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").map_or(bytes.len(), |at| at + 4);
        bytes.truncate(end);
        bytes
    }

    /// Writes the whole answer to a blocking stream: a streamed one as the head, then its body
    /// and stream through a [`Chunked`] writer.
    pub(super) fn write_to(mut self, out: &mut impl Write, http10: bool, keep: bool) -> std::io::Result<()> {
        out.write_all(&self.bytes(http10, keep))?;
        let Some(stream) = self.stream.take() else { return Ok(()) };
        let mut chunked = Chunked::new(out, !http10);
        chunked.write_all(self.body.as_bytes())?;
        // The head and the body that precedes the stream go out at once: the first byte does
        // not wait for the stream's first chunk.
        chunked.flush()?;
        drop(std::mem::take(&mut self.body));
        stream(&mut chunked)?;
        chunked.finish()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::chunked::CHUNK;

    /// Decodes a chunked body strictly: sizes in hex, CRLF after each chunk, a last `0` chunk.
    fn dechunk(mut bytes: &[u8]) -> (Vec<u8>, usize) {
        let (mut body, mut chunks) = (Vec::new(), 0);
        loop {
            let line = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&bytes[..line]).unwrap(), 16).unwrap();
            bytes = &bytes[line + 2..];
            if size == 0 {
                assert_eq!(bytes, b"\r\n");
                return (body, chunks);
            }
            body.extend_from_slice(&bytes[..size]);
            assert_eq!(&bytes[size..size + 2], b"\r\n");
            bytes = &bytes[size + 2..];
            chunks += 1;
        }
    }

    #[test]
    fn a_streamed_answer_is_chunked_in_bounded_pieces_and_ends_with_the_last_chunk() {
        let mut response = Response::text(200, "<head>".into());
        response.stream = Some(Box::new(|out: &mut dyn Write| {
            for i in 0..100u32 {
                out.write_all(&vec![b'a' + (i % 26) as u8; 1000 + i as usize])?;
            }
            Ok(())
        }));
        let mut wire = Vec::new();
        response.write_to(&mut wire, false, false).unwrap();
        let text = String::from_utf8_lossy(&wire);
        let (head, _) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Transfer-Encoding: chunked") && !head.contains("Content-Length"), "{head}");
        let (body, chunks) = dechunk(&wire[head.len() + 4..]);
        let expected: Vec<u8> = std::iter::once(b"<head>".to_vec())
            .chain((0..100u32).map(|i| vec![b'a' + (i % 26) as u8; 1000 + i as usize]))
            .flatten()
            .collect();
        assert_eq!(body, expected);
        assert_eq!(
            chunks,
            1 + expected.len().saturating_sub(6).div_ceil(CHUNK),
            "the head's body goes out alone first"
        );

        let mut response = Response::text(200, String::new());
        response.stream = Some(Box::new(|out: &mut dyn Write| out.write_all(b"plain")));
        let mut wire = Vec::new();
        response.write_to(&mut wire, true, true).unwrap();
        assert!(wire.ends_with(b"Connection: close\r\n\r\nplain"), "HTTP/1.0: delimited by the close");
    }
}
