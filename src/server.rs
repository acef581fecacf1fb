//! A small HTTP/1.1 server for `pipe serve`, written for the attacks a deploy receiver meets.
//!
//! One I/O thread reads every connection with `poll(2)`, so a slow or idle client costs a file
//! descriptor and a small buffer, never a thread. The head is parsed with httparse under RFC
//! 9112's strict rules, then the [`Service`] decides from the head alone whether a body may be
//! read and how much ([`Admit`]): a request without valid credentials is answered before any of
//! its body is read. Bodies share one memory budget. Connections being read are bounded per
//! client address and in total; at a bound the oldest connection of the busiest address is shed,
//! so a flood of slow clients pushes out its own members, not a fresh request. Only a complete
//! request reaches a handler thread (bounded too). One request per connection
//! (`Connection: close`); every answer the server gives on its own is reported to the service
//! so it can be logged.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Limits that keep one client from hurting the others.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Time allowed for the request line and headers, from the connection's accept.
    pub head_timeout: Duration,
    /// Time allowed for the body, from the end of the head.
    pub body_timeout: Duration,
    /// Connections being read at once; at the bound the oldest of the busiest address is shed.
    pub connections: usize,
    /// Connections being read at once from one address.
    pub per_client: usize,
    /// Bytes of request bodies held at once, across all connections; beyond it `503`.
    pub body_memory: usize,
    /// Requests handled at once (each on its own thread); beyond it `503`.
    pub handlers: usize,
}

/// What the service decides from a request's head.
pub(crate) enum Admit {
    /// Answer now, without reading the body; the service logged it.
    Answer(Response),
    /// Read a body of at most this many bytes (larger `Content-Length` → `413`), then handle.
    Body(u64),
}

/// What `pipe serve` plugs into the server.
pub(crate) trait Service: Send + Sync + 'static {
    /// Decides from the head (its `body` is empty); runs on the I/O thread, so it must not block.
    fn admit(&self, head: &Request, peer: IpAddr) -> Admit;
    /// Answers a complete request, on a handler thread.
    fn handle(&self, request: &Request, peer: IpAddr) -> Response;
    /// The server answered `status` on its own (`head` is `None` when none was parsed).
    fn refused(&self, head: Option<&Request>, peer: IpAddr, status: u16);
}

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sent as HTTP/1.0: a streamed answer is delimited by the close, not chunked.
    pub http10: bool,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A query parameter (no percent-decoding beyond `%XX` of ASCII).
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
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
    /// has a short answer at once).
    fn bytes(&self, http10: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.body.is_empty() && !self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            head.push_str("Content-Type: application/json\r\n");
        }
        if self.stream.is_none() {
            head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", self.body.len()));
            head.push_str(&self.body);
        } else if http10 {
            // HTTP/1.0 knows no chunks: the body ends where the connection does.
            head.push_str("Connection: close\r\n\r\n");
        } else {
            head.push_str("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        }
        head.into_bytes()
    }

    /// Writes the whole answer to a blocking stream: a streamed one as the head, then its body
    /// and stream through a [`Chunked`] writer.
    fn write_to(mut self, out: &mut impl Write, http10: bool) -> std::io::Result<()> {
        out.write_all(&self.bytes(http10))?;
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

/// Bytes a [`Chunked`] writer holds before sending them as one chunk.
pub(crate) const CHUNK: usize = 32 * 1024;

/// HTTP/1.1 chunked transfer coding over a writer, with a bounded buffer: every [`CHUNK`]
/// bytes (or on `flush`) one chunk goes out in one write; `finish` sends the last chunk.
/// Without `chunked` (an HTTP/1.0 client), the same bytes go out as they are.
pub(crate) struct Chunked<W: Write> {
    out: W,
    chunked: bool,
    buf: Vec<u8>,
    frame: Vec<u8>,
}

impl<W: Write> Chunked<W> {
    pub(crate) fn new(out: W, chunked: bool) -> Chunked<W> {
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
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
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

/// The largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// How long a refused connection's unread input is still drained after the answer, so the
/// answer is not lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// Parses a request head under RFC 9112's rules: `Ok(None)` while it is incomplete, else the
/// request and the head's length. Bare LF line endings, versions other than HTTP/1.0 and 1.1,
/// malformed or conflicting `Content-Length` are `400`.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if bare_lf(buf) { Err(400) } else { Ok(None) };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    if bare_lf(&buf[..len]) {
        return Err(400);
    }
    let target = parsed.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method: parsed.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: parsed
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).trim().to_string()))
            .collect(),
        body: Vec::new(),
        http10: parsed.version == Some(0),
    };
    content_length(&request)?;
    Ok(Some((request, len)))
}

/// A `\n` not preceded by `\r`.
fn bare_lf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

/// The body's length: `Content-Length` as 1*DIGIT, every copy equal; `Transfer-Encoding` is
/// refused (`411`): the limit must be known before reading.
pub(crate) fn content_length(request: &Request) -> Result<u64, u16> {
    if request.header("transfer-encoding").is_some() {
        return Err(411);
    }
    let mut length = None;
    for (_, value) in request.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        if value.is_empty() || value.len() > 18 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(400);
        }
        let n: u64 = value.parse().map_err(|_| 400u16)?;
        if length.is_some_and(|l| l != n) {
            return Err(400);
        }
        length = Some(n);
    }
    Ok(length.unwrap_or(0))
}

/// Where a connection is in its one request.
enum Phase {
    Head,
    Body {
        request: Request,
        length: usize,
        reserved: usize,
        since: Instant,
    },
    /// Answered; unread input is drained until `until` so the answer is not reset away.
    Linger {
        until: Instant,
        drained: usize,
    },
}

struct Conn {
    stream: TcpStream,
    peer: IpAddr,
    accepted: Instant,
    buf: Vec<u8>,
    phase: Phase,
}

/// Bytes of bodies held now, released when a handler is done.
struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    fn reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|t| *t <= self.limit))
            .is_ok()
    }
    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Accepts and reads connections until `stop()` is true; complete requests go to
/// `service.handle` on their own threads.
pub(crate) fn serve<S: Service>(
    listener: TcpListener,
    limits: Limits,
    service: Arc<S>,
    stop: impl Fn() -> bool,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    // A deep accept queue: a burst of connections must not drop a fresh one's SYN (a 1 s retry).
    // SAFETY: listen(2) again on a listening socket only changes its backlog.
    unsafe {
        libc::listen(listener.as_raw_fd(), 4096);
    }
    let budget = Arc::new(Budget { used: AtomicUsize::new(0), limit: limits.body_memory });
    let handlers = Arc::new(AtomicUsize::new(0));
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !stop() {
        fds.clear();
        fds.push(libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        fds.extend(conns.iter().map(|c| libc::pollfd { fd: c.stream.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        let now = Instant::now();
        let mut done = vec![false; conns.len()];
        if ready > 0 {
            for (i, conn) in conns.iter_mut().enumerate() {
                if fds[i + 1].revents != 0 {
                    done[i] = read_ready(conn, &limits, &service, &budget, &handlers, now);
                }
            }
        }
        for (i, conn) in conns.iter_mut().enumerate() {
            if !done[i] {
                done[i] = expired(conn, &limits, &*service, &budget, now);
            }
        }
        let mut i = 0;
        conns.retain(|_| {
            i += 1;
            !done[i - 1]
        });
        if ready > 0 && fds[0].revents != 0 {
            accept_all(&listener, &mut conns, &limits, &*service, &budget);
        }
    }
    for conn in conns {
        if let Phase::Body { reserved, .. } = conn.phase {
            budget.release(reserved);
        }
    }
    Ok(())
}

/// Connections accepted per turn of the loop: between turns the waiting input is read, so a
/// burst of new connections meets requests that arrived whole already read.
const ACCEPT_BATCH: usize = 16;
/// How long a new connection cannot be shed for a newer one.
const PROTECTED: Duration = Duration::from_secs(1);

/// Accepts what is waiting, shedding the oldest connection of the busiest address at a bound.
fn accept_all<S: Service>(
    listener: &TcpListener,
    conns: &mut Vec<Conn>,
    limits: &Limits,
    service: &S,
    budget: &Budget,
) {
    for _ in 0..ACCEPT_BATCH {
        let (stream, addr) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let _ = stream.set_nodelay(true);
        let peer = addr.ip();
        let reading = |conns: &Vec<Conn>, ip: Option<IpAddr>| {
            conns
                .iter()
                .filter(|c| !matches!(c.phase, Phase::Linger { .. }) && ip.is_none_or(|ip| c.peer == ip))
                .count()
        };
        let shed_from = if reading(conns, Some(peer)) >= limits.per_client {
            Some(peer)
        } else if reading(conns, None) >= limits.connections {
            let mut counts: HashMap<IpAddr, usize> = HashMap::new();
            for c in conns.iter().filter(|c| !matches!(c.phase, Phase::Linger { .. })) {
                *counts.entry(c.peer).or_default() += 1;
            }
            counts.into_iter().max_by_key(|(_, n)| *n).map(|(ip, _)| ip)
        } else {
            None
        };
        if let Some(ip) = shed_from {
            // The oldest reader goes, preferably one past its first second: a younger one may be
            // a request whose bytes are still on their way.
            let readers =
                || conns.iter().enumerate().filter(|(_, c)| c.peer == ip && !matches!(c.phase, Phase::Linger { .. }));
            let victim = readers()
                .filter(|(_, c)| c.accepted.elapsed() >= PROTECTED)
                .min_by_key(|(_, c)| c.accepted)
                .or_else(|| readers().min_by_key(|(_, c)| c.accepted))
                .map(|(i, _)| i);
            if let Some(i) = victim {
                refuse(&mut conns[i], service, budget, 503);
            }
        }
        // Lingering connections count against the descriptors too: drop the oldest beyond twice the bound.
        if conns.len() >= 2 * limits.connections
            && let Some(i) = conns.iter().position(|c| matches!(c.phase, Phase::Linger { .. }))
        {
            conns.swap_remove(i);
        }
        conns.push(Conn { stream, peer, accepted: Instant::now(), buf: Vec::new(), phase: Phase::Head });
    }
}

/// Reads what the connection has; true when it is finished with (closed or handed off).
fn read_ready<S: Service>(
    conn: &mut Conn,
    limits: &Limits,
    service: &Arc<S>,
    budget: &Arc<Budget>,
    handlers: &Arc<AtomicUsize>,
    now: Instant,
) -> bool {
    let service_ref = &**service;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let want = match &conn.phase {
            Phase::Head => (MAX_HEAD + 1).saturating_sub(conn.buf.len()),
            Phase::Body { length, .. } => length.saturating_sub(conn.buf.len()),
            Phase::Linger { .. } => chunk.len(),
        }
        .clamp(1, chunk.len());
        let n = match conn.stream.read(&mut chunk[..want]) {
            Ok(0) => {
                if let Phase::Body { reserved, .. } = conn.phase {
                    budget.release(reserved);
                }
                return true;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => {
                if let Phase::Body { reserved, .. } = conn.phase {
                    budget.release(reserved);
                }
                return true;
            }
        };
        if let Phase::Linger { drained, .. } = &mut conn.phase {
            *drained += n;
            if *drained > LINGER_BYTES {
                return true;
            }
            continue;
        }
        conn.buf.extend_from_slice(&chunk[..n]);
        if matches!(conn.phase, Phase::Head) {
            match parse_head(&conn.buf) {
                Ok(None) if conn.buf.len() > MAX_HEAD => {
                    refuse(conn, service_ref, budget, 431);
                    return false;
                }
                Ok(None) => continue,
                Err(status) => {
                    refuse(conn, service_ref, budget, status);
                    return false;
                }
                Ok(Some((request, len))) => {
                    let limit = match service_ref.admit(&request, conn.peer) {
                        Admit::Answer(response) => {
                            answer(conn, &response);
                            return false;
                        }
                        Admit::Body(limit) => limit,
                    };
                    // parse_head checked the framing already.
                    let length = content_length(&request).unwrap_or(0);
                    if length > limit {
                        conn.phase = Phase::Body { request, length: 0, reserved: 0, since: now };
                        refuse(conn, service_ref, budget, 413);
                        return false;
                    }
                    let length = length as usize;
                    if !budget.reserve(length) {
                        conn.phase = Phase::Body { request, length: 0, reserved: 0, since: now };
                        refuse(conn, service_ref, budget, 503);
                        return false;
                    }
                    conn.buf.drain(..len);
                    conn.buf.truncate(length);
                    conn.buf.reserve_exact(length - conn.buf.len());
                    conn.phase = Phase::Body { request, length, reserved: length, since: now };
                }
            }
        }
        if let Phase::Body { length, .. } = conn.phase
            && conn.buf.len() >= length
        {
            return dispatch(conn, service, budget, handlers, limits);
        }
    }
}

/// Answers `408` to a connection past its deadline, and closes lingering ones; true when done.
fn expired<S: Service>(conn: &mut Conn, limits: &Limits, service: &S, budget: &Budget, now: Instant) -> bool {
    let late = match &conn.phase {
        Phase::Head => now.duration_since(conn.accepted) >= limits.head_timeout,
        Phase::Body { since, .. } => now.duration_since(*since) >= limits.body_timeout,
        Phase::Linger { until, .. } => return now >= *until,
    };
    if late {
        refuse(conn, service, budget, 408);
    }
    false
}

/// Answers with a bare status on the server's own behalf, reports it, and lingers.
fn refuse<S: Service>(conn: &mut Conn, service: &S, budget: &Budget, status: u16) {
    let head = match &conn.phase {
        Phase::Body { request, reserved, .. } => {
            budget.release(*reserved);
            Some(request)
        }
        _ => None,
    };
    service.refused(head, conn.peer, status);
    answer(conn, &Response::empty(status));
}

/// Writes a short answer without blocking and moves the connection to [`Phase::Linger`].
fn answer(conn: &mut Conn, response: &Response) {
    // A short answer fits the socket's send buffer; a client that does not read it loses it.
    // (Answers from the head are never streamed.)
    let _ = conn.stream.write(&response.bytes(false));
    let _ = conn.stream.shutdown(std::net::Shutdown::Write);
    conn.buf = Vec::new();
    conn.phase = Phase::Linger { until: Instant::now() + LINGER, drained: 0 };
}

/// Hands a complete request to a handler thread; false when it was refused (and lingers).
fn dispatch<S: Service>(
    conn: &mut Conn,
    service: &Arc<S>,
    budget: &Arc<Budget>,
    handlers: &Arc<AtomicUsize>,
    limits: &Limits,
) -> bool {
    let Phase::Body { mut request, reserved, .. } = std::mem::replace(&mut conn.phase, Phase::Head) else {
        return true;
    };
    request.body = std::mem::take(&mut conn.buf);
    let stream = conn.stream.try_clone();
    let full = handlers.fetch_add(1, Ordering::AcqRel) >= limits.handlers;
    let (Ok(mut stream), false) = (stream, full) else {
        handlers.fetch_sub(1, Ordering::AcqRel);
        conn.phase = Phase::Body { request, length: 0, reserved, since: Instant::now() };
        refuse(conn, &**service, budget, 503);
        return false;
    };
    let (svc, held, busy, peer) = (service.clone(), budget.clone(), handlers.clone(), conn.peer);
    let spawned =
        std::thread::Builder::new().name("pipe-serve-request".into()).stack_size(256 * 1024).spawn(move || {
            let response = svc.handle(&request, peer);
            let http10 = request.http10;
            drop(request);
            held.release(reserved);
            let _ = stream.set_nonblocking(false);
            // Per write: a streamed answer to a client that stops reading ends here.
            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
            let _ = response.write_to(&mut stream, http10);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            busy.fetch_sub(1, Ordering::AcqRel);
        });
    if spawned.is_err() {
        // Out of threads: the counters must not leak; the connection is dropped.
        handlers.fetch_sub(1, Ordering::AcqRel);
        budget.release(reserved);
    }
    true
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
        response.write_to(&mut wire, false).unwrap();
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
        response.write_to(&mut wire, true).unwrap();
        assert!(wire.ends_with(b"Connection: close\r\n\r\nplain"), "HTTP/1.0: delimited by the close");
    }

    /// A whole request from bytes, as the server frames it (4 KiB body limit).
    fn parse(bytes: &[u8]) -> Result<Request, u16> {
        let (mut request, len) = parse_head(bytes)?.ok_or(0u16)?;
        let length = content_length(&request)?;
        if length > 4096 {
            return Err(413);
        }
        let body = &bytes[len..];
        if (body.len() as u64) < length {
            return Err(0);
        }
        request.body = body[..length as usize].to_vec();
        Ok(request)
    }

    #[test]
    fn an_oversized_body_is_413_before_any_of_it_is_read() {
        assert_eq!(parse(b"POST /hooks/x HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n").unwrap_err(), 413);
    }

    #[test]
    fn heads_follow_rfc_9112_strictly() {
        let cases: [(&[u8], u16); 9] = [
            (b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", 400),
            (b"POST / HTTP/1.1\nContent-Length: 0\n\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\nA: b\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\nab", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab", 400),
            (b"POST / HTTP/1.99\r\n\r\n", 400),
            (b"POST /  HTTP/1.1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
            (b"POST / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            assert_eq!(parse(raw).map(|_| ()), Err(status), "{:?}", String::from_utf8_lossy(raw));
        }
        let same = parse(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab").unwrap();
        assert_eq!(same.body, b"ab");
        assert!(parse_head(b"POST / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none(), "incomplete, not an error");
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
