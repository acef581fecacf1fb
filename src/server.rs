//! A small HTTP/1.1 server for `pipe serve`, written for the attacks a deploy receiver meets:
//! a thread per connection (bounded), a deadline for the request head, a body limit checked
//! against `Content-Length` *before* any of the body is read, a deadline for the body, and one
//! request per connection (`Connection: close`), so an idle or slow client only ever holds its
//! own thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Limits that keep one client from hurting the others.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body accepted; larger `Content-Length` gets `413` without reading the body.
    pub body: u64,
    /// Time allowed for the request line and headers.
    pub head_timeout: Duration,
    /// Time allowed for the body.
    pub body_timeout: Duration,
    /// Connections served at once; more get `503`.
    pub connections: usize,
}

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A query parameter (no percent-decoding beyond `%XX` of ASCII).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response: status, extra headers, JSON (or empty) body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(status: u16, body: serde_json::Value) -> Response {
        Response { status, headers: Vec::new(), body: body.to_string() }
    }

    pub fn empty(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: String::new() }
    }

    fn write(&self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", self.body.len()));
        // One write, one packet: the client has the whole answer at once.
        head.push_str(&self.body);
        stream.write_all(head.as_bytes())?;
        stream.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Why a request could not be read; each maps to a status code.
#[derive(Debug)]
pub enum ReadError {
    /// The client went away or sent nothing in time: close without answering.
    Gone,
    Status(u16),
}

const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// Reads one request within the limits. `413` is decided from `Content-Length` alone.
pub fn read_request(stream: &TcpStream, limits: &Limits) -> Result<Request, ReadError> {
    read_request_from(stream, |left| drop(stream.set_read_timeout(Some(left))), limits)
}

/// [`read_request`] over any byte source; `set_timeout` bounds the next read. Separate so the
/// parser can be fuzzed with arbitrary bytes.
pub fn read_request_from<R: Read>(
    source: R,
    mut set_timeout: impl FnMut(Duration),
    limits: &Limits,
) -> Result<Request, ReadError> {
    let started = Instant::now();
    let mut reader = BufReader::new(source);
    let mut head_bytes = 0usize;
    let mut line = String::new();
    let mut read_line = |line: &mut String, deadline: Duration| -> Result<(), ReadError> {
        line.clear();
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(ReadError::Status(408));
        }
        set_timeout(left);
        let n = (&mut reader)
            .take((MAX_HEAD - head_bytes.min(MAX_HEAD)) as u64 + 1)
            .read_line(line)
            .map_err(|_| ReadError::Gone)?;
        head_bytes += n;
        if head_bytes > MAX_HEAD {
            return Err(ReadError::Status(431));
        }
        if n == 0 {
            return Err(ReadError::Gone);
        }
        Ok(())
    };
    read_line(&mut line, limits.head_timeout)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ReadError::Status(400));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Status(400));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request =
        Request { method: method.to_string(), path: path.to_string(), query: query.to_string(), ..Default::default() };
    loop {
        read_line(&mut line, limits.head_timeout)?;
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let Some((k, v)) = header.split_once(':') else { return Err(ReadError::Status(400)) };
        request.headers.push((k.trim().to_string(), v.trim().to_string()));
        if request.headers.len() > MAX_HEADERS {
            return Err(ReadError::Status(431));
        }
    }
    if request.header("transfer-encoding").is_some() {
        // Only Content-Length bodies: the limit must be known before reading.
        return Err(ReadError::Status(411));
    }
    let length: u64 = match request.header("content-length") {
        Some(v) => v.parse().map_err(|_| ReadError::Status(400))?,
        None => 0,
    };
    if length > limits.body {
        return Err(ReadError::Status(413));
    }
    let mut body = vec![0u8; length as usize];
    let body_started = Instant::now();
    let mut filled = 0;
    while filled < body.len() {
        let left = limits.body_timeout.saturating_sub(body_started.elapsed());
        if left.is_zero() {
            return Err(ReadError::Status(408));
        }
        set_timeout(left);
        match reader.read(&mut body[filled..]) {
            Ok(0) => return Err(ReadError::Gone),
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(ReadError::Status(408));
            }
            Err(_) => return Err(ReadError::Gone),
        }
    }
    request.body = body;
    Ok(request)
}

/// Accepts connections until `stop()` is true, answering each with `handle` on its own thread.
/// `log` gets (request or none, response status, duration) for every answered connection.
pub fn serve<H, S>(listener: TcpListener, limits: Limits, handle: H, stop: S) -> std::io::Result<()>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
    S: Fn() -> bool,
{
    listener.set_nonblocking(true)?;
    let handle = Arc::new(handle);
    let active = Arc::new(AtomicUsize::new(0));
    let mut ready = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&listener), events: libc::POLLIN, revents: 0 };
    while !stop() {
        // Wait for a connection, waking every 100 ms to look at `stop`.
        // SAFETY: one valid pollfd for the lifetime of the call.
        if unsafe { libc::poll(&mut ready, 1, 100) } <= 0 {
            continue;
        }
        let (mut stream, _) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        if active.load(Ordering::Relaxed) >= limits.connections {
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = Response::empty(503).write(&mut stream);
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (handle, conn_active) = (handle.clone(), active.clone());
        let spawned =
            std::thread::Builder::new().name("pipe-serve-conn".into()).stack_size(256 * 1024).spawn(move || {
                let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
                let response = match read_request(&stream, &limits) {
                    Ok(request) => Some(handle(&request)),
                    Err(ReadError::Status(status)) => Some(Response::empty(status)),
                    Err(ReadError::Gone) => None,
                };
                if let Some(response) = response {
                    let _ = response.write(&mut stream);
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
                conn_active.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            // Out of threads: the connection is dropped; the counter must not leak.
            active.fetch_sub(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let r = Request { query: "token=a%2Bb&hook=web+app".into(), ..Default::default() };
        assert_eq!(r.query_param("token").as_deref(), Some("a+b"));
        assert_eq!(r.query_param("hook").as_deref(), Some("web app"));
        assert_eq!(r.query_param("x"), None);
    }

    fn limits() -> Limits {
        Limits {
            body: 4096,
            head_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            connections: 4,
        }
    }

    fn parse(bytes: &[u8]) -> Result<Request, ReadError> {
        read_request_from(std::io::Cursor::new(bytes), |_| {}, &limits())
    }

    #[test]
    fn an_oversized_body_is_413_before_any_of_it_is_read() {
        let err = parse(b"POST /hooks/x HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n").unwrap_err();
        assert!(matches!(err, ReadError::Status(413)), "{err:?}");
    }

    // Property tests (`prop_*`): `bench/run.sh` runs them with many more cases.
    proptest::proptest! {
        #[test]
        fn prop_arbitrary_bytes_never_panic_or_overread(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8192)) {
            if let Ok(req) = parse(&bytes) {
                proptest::prop_assert!(req.body.len() <= 4096);
                proptest::prop_assert!(req.headers.len() <= MAX_HEADERS);
            }
        }

        #[test]
        fn prop_well_formed_requests_parse_to_what_was_sent(
            method in "(GET|POST|PUT|DELETE)",
            path in "(/[a-zA-Z0-9._~-]{0,12}){1,4}",
            query in "([a-z]{1,5}=[a-zA-Z0-9%+]{0,8}(&[a-z]{1,5}=[a-z0-9]{0,5}){0,3})?",
            headers in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~&&[^:]]{0,40}"), 0..10),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
        ) {
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("transfer-encoding"))
                .map(|(k, v)| (k, v.trim().to_string()))
                .collect();
            let target = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
            let mut raw = format!("{method} {target} HTTP/1.1\r\n");
            for (k, v) in &headers {
                raw.push_str(&format!("{k}: {v}\r\n"));
            }
            raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut bytes = raw.into_bytes();
            bytes.extend_from_slice(&body);
            let req = parse(&bytes).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:?}")))?;
            proptest::prop_assert_eq!(&req.method, &method);
            proptest::prop_assert_eq!(&req.path, &path);
            proptest::prop_assert_eq!(&req.query, &query);
            proptest::prop_assert_eq!(&req.body, &body);
            for (k, v) in &headers {
                proptest::prop_assert!(req.headers.iter().any(|(hk, hv)| hk == k && hv == v));
            }
        }
    }
}
