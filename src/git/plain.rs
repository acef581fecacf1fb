//! Listing a plain `http://` remote's refs with one request on a connection of its own, without
//! the process's HTTP client ([`super::http`]).
//!
//! That client carries a TLS context, and building one makes OpenSSL parse the system's whole
//! CA bundle: about 65 ms of CPU here, paid by every `pipe poll` that listed any HTTP remote,
//! ten times what twenty repositories cost to list. A plain remote needs none of it, so its one
//! request (`GET <repo>/info/refs?service=git-upload-pack`) is spoken here over a `TcpStream`:
//! the head parsed by httparse, a body by `Content-Length`, chunks or the connection's end,
//! all of it capped, and the whole exchange bounded by the listing's deadline. A connection the
//! server keeps open (HTTP/1.1) serves the next repository on that host. Redirects are not
//! followed (credentials never leave their origin).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use base64::Engine as _;

use super::auth::{Auth, redact_url};
use super::http::{host_of, split_userinfo};
use super::wire;

/// The most a response head may be.
const MAX_HEAD: usize = 64 * 1024;

/// Lists refs as (full name, commit id), as [`super::http::list`] does for HTTPS.
pub(super) fn list(url: &str, auth: &Auth, timeout: Duration) -> anyhow::Result<Vec<(String, String)>> {
    let shown = redact_url(url);
    let deadline = Instant::now() + timeout;
    let (bare_url, url_user, url_password) = split_userinfo(url);
    let authority = host_of(&bare_url).to_string();
    let path = bare_url.split_once("://").map_or("", |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.clone()
    } else {
        format!("{authority}:80")
    };
    let target = format!("{}/info/refs?service=git-upload-pack", path.trim_end_matches('/'));
    let endpoint = format!("http://{authority}{target}");
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: git/2.0 (pipe/{})\r\nAccept: */*\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(password) = auth.token.clone().or(url_password) {
        let user = auth.username.clone().or(url_user).unwrap_or_else(|| "x-access-token".into());
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {basic}\r\n"));
    }
    request.push_str("\r\n");
    let _slot = super::slots::host_slot(&with_port);
    let unreachable = |e: std::io::Error| anyhow!("cannot reach `{shown}`: {}", describe(&e));
    // A kept connection the server has closed since fails before any answer: once, a new one.
    loop {
        let (stream, reused) = match take_idle(&with_port) {
            Some(stream) => (stream, true),
            None => (connect(&with_port, deadline).map_err(unreachable)?, false),
        };
        match exchange(&stream, &request, &endpoint, deadline, &shown) {
            Ok((refs, keep)) => {
                if keep {
                    put_idle(&with_port, stream);
                }
                return Ok(refs);
            }
            Err(Failure::BeforeAnswer(_)) if reused => continue,
            Err(Failure::BeforeAnswer(e)) => return Err(unreachable(e)),
            Err(Failure::Answer(e)) => return Err(e),
        }
    }
}

/// How an exchange failed: before the server answered anything (a kept connection it closed),
/// or on what it answered.
enum Failure {
    BeforeAnswer(std::io::Error),
    Answer(anyhow::Error),
}

/// Sends the request on `stream` and reads the advertisement; says whether the connection can
/// carry the next request (HTTP/1.1, not closed, the body read to its end).
fn exchange(
    stream: &TcpStream,
    request: &str,
    endpoint: &str,
    deadline: Instant,
    shown: &str,
) -> Result<(Vec<(String, String)>, bool), Failure> {
    let _ = stream.set_nodelay(true);
    let write_timeout = left(deadline).map_err(Failure::BeforeAnswer)?;
    stream.set_write_timeout(Some(write_timeout)).map_err(Failure::BeforeAnswer)?;
    let mut writer = stream;
    writer.write_all(request.as_bytes()).map_err(Failure::BeforeAnswer)?;
    let mut input = BufReader::with_capacity(16 * 1024, Deadline { stream, deadline });
    if input.fill_buf().map_err(Failure::BeforeAnswer)?.is_empty() {
        return Err(Failure::BeforeAnswer(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let answer = |e: anyhow::Error| Failure::Answer(anyhow!("`{shown}`: {e:#}"));
    let head = read_head(&mut input).map_err(answer)?;
    let status = head.status;
    match status {
        401 | 403 => {
            return Err(Failure::Answer(anyhow!(
                "`{shown}` refused the credentials (HTTP {status}); check `auth.token_env` / `auth.token_file`"
            )));
        }
        300..=399 => {
            let from = reqwest::Url::parse(endpoint).map_err(|e| Failure::Answer(anyhow!("`{shown}`: {e}")))?;
            let why = crate::http::redirect_refused(status, &from, head.location.as_deref());
            return Err(Failure::Answer(anyhow!("`{shown}` {why}")));
        }
        200..=299 => {}
        _ => return Err(Failure::Answer(anyhow!("`{shown}` answered HTTP {status}"))),
    }
    if !head.smart {
        return Err(Failure::Answer(anyhow!("`{shown}` is not a smart HTTP git server (dumb HTTP is not supported)")));
    }
    let cap = wire::MAX_ADVERTISEMENT_BYTES as u64 + 1;
    let invalid = |e: anyhow::Error| Failure::Answer(anyhow!("`{shown}` sent an invalid ref advertisement: {e:#}"));
    // The connection is kept only when the body's end is known and was reached: otherwise bytes
    // left unread would be the next request's answer.
    let (refs, ended) = match (head.chunked, head.length) {
        (true, _) => {
            let mut chunked = Chunked { input, left: 0, done: false };
            let refs = read_body((&mut chunked).take(cap)).map_err(invalid)?.0;
            (refs, chunked.done)
        }
        (false, Some(length)) => {
            let (refs, drained) = read_body(input.take(length.min(cap))).map_err(invalid)?;
            (refs, length < cap && drained)
        }
        (false, None) => (read_body(input.take(cap)).map_err(invalid)?.0, false),
    };
    Ok((refs, head.keep_alive && ended))
}

/// The advertisement, then what follows its flush up to the body's end (at most 64 KiB): the
/// refs, and whether the body was read to its end.
fn read_body(mut body: impl Read) -> anyhow::Result<(Vec<(String, String)>, bool)> {
    let refs = wire::read_advertisement(&mut body)?;
    let rest = std::io::copy(&mut body.take(64 * 1024), &mut std::io::sink()).unwrap_or(64 * 1024);
    Ok((refs, rest < 64 * 1024))
}

/// Connections a finished listing left open, by host: the next repository on that host uses
/// one instead of connecting again.
static IDLE: Mutex<Vec<(String, TcpStream)>> = Mutex::new(Vec::new());

fn take_idle(with_port: &str) -> Option<TcpStream> {
    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
    let at = idle.iter().position(|(host, _)| host == with_port)?;
    Some(idle.swap_remove(at).1)
}

fn put_idle(with_port: &str, stream: TcpStream) {
    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
    if idle.iter().filter(|(host, _)| host == with_port).count() < super::slots::MAX_PER_HOST {
        idle.push((with_port.to_string(), stream));
    }
}

pub(super) fn connect(with_port: &str, deadline: Instant) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in resolve(with_port, deadline)? {
        match TcpStream::connect_timeout(&addr, left(deadline)?) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The addresses of `host:port`, under the listing's deadline. The system's resolver has no
/// deadline of its own, so a name is resolved on a thread that is abandoned when it is late;
/// the answer is kept for the process, so the repositories of one host pay for it once. An
/// address literal needs no resolver.
fn resolve(with_port: &str, deadline: Instant) -> std::io::Result<Vec<SocketAddr>> {
    static RESOLVED: Mutex<BTreeMap<String, Vec<SocketAddr>>> = Mutex::new(BTreeMap::new());
    if let Ok(addr) = with_port.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if let Some(addrs) = RESOLVED.lock().unwrap_or_else(|e| e.into_inner()).get(with_port) {
        return Ok(addrs.clone());
    }
    let (tx, rx) = mpsc::channel();
    let name = with_port.to_string();
    std::thread::Builder::new().name("pipe-resolve".into()).spawn(move || {
        let _ = tx.send(name.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    })?;
    let addrs = match rx.recv_timeout(left(deadline)?) {
        Ok(answer) => answer?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("resolving `{with_port}` timed out"),
            ));
        }
    };
    RESOLVED.lock().unwrap_or_else(|e| e.into_inner()).insert(with_port.to_string(), addrs.clone());
    Ok(addrs)
}

fn left(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() { Err(std::io::ErrorKind::TimedOut.into()) } else { Ok(left) }
}

fn describe(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => format!("timed out ({err})"),
        _ => err.to_string(),
    }
}

/// A socket read under the listing's whole deadline (plain HTTP and `git://`): each read waits at most what is left, so
/// a server trickling a byte at a time cannot hold the poll past it.
pub(super) struct Deadline<'a> {
    pub stream: &'a TcpStream,
    pub deadline: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(left(self.deadline)?))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

/// What a response head says about the body and the connection.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    length: Option<u64>,
    chunked: bool,
    /// The content type is the smart protocol's.
    smart: bool,
    /// HTTP/1.1 without `Connection: close`.
    keep_alive: bool,
    location: Option<String>,
}

/// Reads and parses the response head.
fn read_head(input: &mut impl std::io::BufRead) -> anyhow::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    while !head.ends_with(b"\r\n\r\n") {
        let before = head.len();
        input.by_ref().take((MAX_HEAD + 1 - head.len()) as u64).read_until(b'\n', &mut head)?;
        if head.len() > MAX_HEAD {
            bail!("the response head is over {} KiB", MAX_HEAD / 1024);
        }
        if head.len() == before {
            bail!("the connection closed before the response head ended");
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    response.parse(&head).map_err(|e| anyhow!("an invalid response head ({e})"))?;
    let status = response.code.ok_or_else(|| anyhow!("a response head without a status"))?;
    let value = |name: &str| {
        response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value))
    };
    let length = value("content-length").and_then(|v| v.trim().parse().ok());
    let chunked = value("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let smart = value("content-type").is_some_and(|v| v.trim() == "application/x-git-upload-pack-advertisement");
    let keep_alive =
        response.version == Some(1) && !value("connection").is_some_and(|v| v.to_ascii_lowercase().contains("close"));
    let location = value("location").map(|v| v.into_owned());
    Ok(Head { status, length, chunked, smart, keep_alive, location })
}

/// A chunked body (RFC 9112 §7.1) read as the bytes it carries; chunk extensions and trailers
/// ignored.
struct Chunked<R> {
    input: R,
    left: u64,
    done: bool,
}

impl<R: std::io::BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = Vec::new();
            (&mut self.input).take(1024).read_until(b'\n', &mut line)?;
            let text = std::str::from_utf8(&line).map_err(|_| invalid("a chunk size that is not text"))?;
            let size = text.trim().split(';').next().unwrap_or("").trim();
            self.left = u64::from_str_radix(size, 16).map_err(|_| invalid("an invalid chunk size"))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(invalid("the connection closed inside a chunk"));
        }
        self.left -= n as u64;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.input.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_reads_as_what_it_carries() {
        let body = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        let mut out = String::new();
        Chunked { input: &body[..], left: 0, done: false }.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello, world");
        let mut cut = String::new();
        assert!(Chunked { input: &b"a\r\nshort"[..], left: 0, done: false }.read_to_string(&mut cut).is_err());
    }

    #[test]
    fn the_head_gives_status_length_encoding_and_protocol() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nContent-Length: 12\r\n\r\nrest";
        let read = read_head(&mut &head[..]).unwrap();
        assert_eq!(
            read,
            Head { status: 200, length: Some(12), chunked: false, smart: true, keep_alive: true, location: None }
        );
        let head = b"HTTP/1.0 302 Found\r\nLocation: http://elsewhere/\r\n\r\n";
        let read = read_head(&mut &head[..]).unwrap();
        assert_eq!(
            read,
            Head {
                status: 302,
                length: None,
                chunked: false,
                smart: false,
                keep_alive: false,
                location: Some("http://elsewhere/".into()),
            }
        );
        let endless = vec![b'x'; MAX_HEAD + 10];
        assert!(read_head(&mut &endless[..]).unwrap_err().to_string().contains("over 64 KiB"));
    }
}
