//! Continuous HTTP load through an ingress, every answer tallied by its body, so a test can say
//! "0 failed requests and only these releases answered".

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One GET of `path` at `addr` with `Host: host`, the connection closed after it: its answer
/// as [`answer`] reads it, or what kept it from coming.
pub fn get(addr: std::net::SocketAddr, host: &str, path: &str) -> Result<(u16, Result<String, String>), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    Ok(answer(&raw))
}

/// One GET of `path` at `ip:port` with `Host: host`: the body of a 200, or what went wrong.
pub fn request(ip: &str, port: u16, host: &str, path: &str) -> Result<String, String> {
    let addr = format!("{ip}:{port}");
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    match get(addr, host, path)? {
        (200, Ok(body)) => Ok(body),
        (status, Ok(_)) => Err(format!("HTTP {status}")),
        (status, Err(why)) => Err(format!("HTTP {status} {why}")),
    }
}

/// An HTTP/1.1 answer read to the connection's close: its status and its trimmed body, or why
/// the body is not whole. A body shorter than its `Content-Length` or a chunked body without
/// its last chunk is an answer cut short (the peer went away mid-answer, as a container
/// killed while it answers), never a body to tally.
pub fn answer(raw: &[u8]) -> (u16, Result<String, String>) {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        let status = String::from_utf8_lossy(raw).split_whitespace().nth(1).and_then(|s| s.parse().ok());
        return (status.unwrap_or(0), Err("no end of the head".into()));
    };
    let (head, body) = (String::from_utf8_lossy(&raw[..end]), &raw[end + 4..]);
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_ascii_lowercase())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        match dechunk(body) {
            Some(b) => b,
            None => return (status, Err("cut short: the chunked body has no last chunk".into())),
        }
    } else if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() != length {
            return (status, Err(format!("cut short: {} of {length} bytes", body.len())));
        }
        body.to_vec()
    } else {
        body.to_vec()
    };
    (status, Ok(String::from_utf8_lossy(&body).trim().to_string()))
}

/// A chunked body's data, or `None` without its last (empty) chunk.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let line = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        let after = &rest[line + 2..];
        if size == 0 {
            return Some(data);
        }
        data.extend_from_slice(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// GETs at 150/s (bounded: at most 10 minutes) until finished, each answer tallied: a 200 by
/// its body, anything else as `FAILED …`.
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<BTreeMap<String, usize>>>,
    /// When each answer was first seen, from the start.
    first: Arc<Mutex<BTreeMap<String, Duration>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    pub fn start(ip: &str, port: u16, host: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(BTreeMap::new()));
        let first = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, t, f) = (stop.clone(), tally.clone(), first.clone());
        let started = Instant::now();
        let (ip, host) = (ip.to_string(), host.to_string());
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(600);
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) && Instant::now() < until {
                let key = match request(&ip, port, &host, "/") {
                    Ok(body) => body,
                    Err(e) => format!("FAILED {e}"),
                };
                let mut firsts = f.lock().unwrap();
                firsts.entry(key.clone()).or_insert_with(|| started.elapsed());
                // Every failure's instant too, for a test to place them (at most 100).
                if key.starts_with("FAILED") && firsts.len() < 100 {
                    firsts.insert(format!("{key} at {:.3}s", started.elapsed().as_secs_f64()), started.elapsed());
                }
                drop(firsts);
                *t.lock().unwrap().entry(key).or_default() += 1;
                next += Duration::from_micros(6_667);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
        Load { stop, tally, first, thread: Some(thread), started }
    }

    /// The tally so far.
    pub fn tally(&self) -> BTreeMap<String, usize> {
        self.tally.lock().unwrap().clone()
    }

    /// When each answer was first seen, from the start.
    pub fn first_seen(&self) -> BTreeMap<String, Duration> {
        self.first.lock().unwrap().clone()
    }

    /// Since the load started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops and returns the tally; asserts the rate held at 100/s or more.
    pub fn finish(mut self) -> BTreeMap<String, usize> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let tally = self.tally();
        let total: usize = tally.values().sum();
        let rate = total as f64 / self.started.elapsed().as_secs_f64();
        assert!(rate >= 100.0, "the load ran at {rate:.0} requests/s, below 100: {tally:?}");
        eprintln!("load: {total} requests at {rate:.0}/s: {tally:?}");
        tally
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every answer came from one of `allowed`, and none failed.
pub fn only(tally: &BTreeMap<String, usize>, allowed: &[&str]) {
    let bad: Vec<_> = tally.iter().filter(|(k, _)| !allowed.contains(&k.as_str())).collect();
    assert!(bad.is_empty(), "answers from outside {allowed:?} (failed requests or a bad release): {bad:?}");
}

#[test]
fn an_answer_cut_short_is_never_a_body() {
    let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nrelease 1\n";
    assert_eq!(answer(whole), (200, Ok("release 1".to_string())));
    let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    assert_eq!(answer(cut), (200, Err("cut short: 0 of 10 bytes".to_string())));
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nrele\r\n6\r\nase 2\n\r\n0\r\n\r\n";
    assert_eq!(answer(chunked), (200, Ok("release 2".to_string())));
    let unfinished = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nrele\r\n";
    assert!(answer(unfinished).1.is_err());
    assert_eq!(answer(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").0, 502);
}
