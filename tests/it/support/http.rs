//! A real HTTP/1.1 receiver on 127.0.0.1 that records every request (standing in for Slack,
//! a generic webhook, or a deploy receiver) and answers with a fixed status.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

/// One received request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

pub struct HttpSink {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Request>>>,
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl HttpSink {
    pub fn start(status: u16) -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(status));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (requests.clone(), status.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let Some(request) = read_request(&stream) else { continue };
                r.lock().unwrap().push(request);
                let code = s.load(Ordering::Relaxed);
                let mut stream = stream;
                let _ = write!(stream, "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            }
        });
        HttpSink { port, requests, status, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn taken(&self) -> Vec<Request> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// GET a URL on 127.0.0.1: (status, body), or `None` when nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    get_as(url, None)
}

/// GET a URL with another `Host` header, as a browser asking for that name would.
pub fn get_as(url: &str, host: Option<&str>) -> Option<(u16, String)> {
    let mut curl = std::process::Command::new("curl");
    curl.args(["-s", "-m", "5", "-w", "\n%{http_code}"]);
    if let Some(host) = host {
        curl.args(["-H", &format!("Host: {host}")]);
    }
    let out = curl.arg(url).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok()?;
    (code != 0).then(|| (code, body.to_string()))
}

/// Reads one HTTP/1.1 request: its line, headers and a `Content-Length` body.
pub fn read_request(stream: &std::net::TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0usize);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    Some(Request { method, path, headers, body })
}

/// Reads one answer from `stream`: its head, then as much body as its framing says
/// (`Content-Length`, chunks up to the last one, or up to the close), so a connection the
/// server keeps for another request is not waited on. What arrived, raw.
pub fn read_answer(stream: &mut impl Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut more = |bytes: &mut Vec<u8>| match stream.read(&mut chunk) {
        Ok(n) if n > 0 => {
            bytes.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    };
    let end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if !more(&mut bytes) {
            return bytes;
        }
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let field = |name: &str| head.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
    if let Some(length) = field("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        while bytes.len() < end + length && more(&mut bytes) {}
    } else if field("transfer-encoding:").is_some_and(|v| v == "chunked") {
        while !bytes[end..].ends_with(b"0\r\n\r\n") && more(&mut bytes) {}
    } else {
        while more(&mut bytes) {}
    }
    bytes
}
