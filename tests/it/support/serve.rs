//! A running `pipe serve` for the tests that talk to it over real HTTP on 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{TestEnv, free_port};

/// `pipe serve` on a free port of 127.0.0.1, ready once it said "listening on" itself (so a
/// test never talks to another test's server). Its stderr is drained as it comes, each line
/// kept with when it arrived, so a long test never stalls the server's logging (unless it asks
/// for a stderr nobody reads: [`Serve::start_unread`]). SIGTERM and wait on drop.
pub struct Serve {
    child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<JoinHandle<()>>,
    /// Held while stderr is left unread; dropping it lets the reader drain again.
    unread: Option<std::sync::mpsc::Sender<()>>,
}

/// One answer: the status, the headers (names in lowercase) and the body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The body as JSON, `Null` when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl Serve {
    /// Starts on a free port, trying another when a concurrent test took the one picked.
    pub fn start(env: &TestEnv) -> Serve {
        (0..5).find_map(|_| Serve::start_on(env, free_port())).expect("pipe serve did not start")
    }

    /// Starts on `port`; `None` when pipe serve could not listen there.
    pub fn start_on(env: &TestEnv, port: u16) -> Option<Serve> {
        Serve::spawn(env, port, false)
    }

    /// [`Serve::start`], but once it listens nothing reads its stderr (a stalled journal, a
    /// full pipe) until [`Serve::stop`], which reads the rest.
    pub fn start_unread(env: &TestEnv) -> Serve {
        (0..5).find_map(|_| Serve::spawn(env, free_port(), true)).expect("pipe serve did not start")
    }

    fn spawn(env: &TestEnv, port: u16, unread: bool) -> Option<Serve> {
        let mut child = env
            .command(&["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (resume_tx, resume_rx) = std::sync::mpsc::channel::<()>();
        let kept = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let ready = line.contains("listening on");
                kept.lock().unwrap().push((Instant::now(), line));
                if ready {
                    let _ = ready_tx.send(());
                    if unread {
                        // Returns when the sender is dropped: by `stop`, or on drop.
                        let _ = resume_rx.recv();
                    }
                }
            }
        });
        let serve = Serve { child, port, lines, reader: Some(reader), unread: unread.then_some(resume_tx) };
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            eprintln!("pipe serve did not listen on {port}: {}", serve.log());
            return None;
        }
        Some(serve)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|(_, l)| l.contains(needle)).count()
    }

    pub fn has(&self, needle: &str) -> bool {
        self.count(needle) > 0
    }

    /// When the `nth` line (from 1) containing `needle` arrived, waiting up to `limit` for it.
    pub fn wait_for(&self, needle: &str, nth: usize, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((at, _)) = self.lines.lock().unwrap().iter().filter(|(_, l)| l.contains(needle)).nth(nth - 1) {
                return *at;
            }
            assert!(Instant::now() < deadline, "no {needle:?} (#{nth}) in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and returns the exit code and everything it logged.
    pub fn stop(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.unread.take();
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status.code(), self.log())
    }

    /// Writes `bytes` on a new connection and reads the answer until the server closes it.
    pub fn raw(&self, bytes: &[u8]) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let _ = stream.write_all(bytes);
        let answer = crate::support::http::read_answer(&mut stream);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines.next().unwrap_or("").split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Response { status, headers, body: body.to_string() }
    }

    /// One HTTP/1.1 request with a `Content-Length` and these extra headers.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.raw(&bytes)
    }

    /// `GET path` with these headers: the status, the headers and the body.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
        let answer = self.request("GET", path, headers, b"");
        (answer.status, answer.headers, answer.body)
    }

    /// A webhook delivery: a JSON body with these headers; the status and the body answered.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        let answer = self.request("POST", path, &all, body);
        (answer.status, answer.body)
    }

    /// [`Serve::request`], answered with the status and the body as JSON.
    pub fn json(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, serde_json::Value) {
        let answer = self.request(method, path, headers, body);
        (answer.status, answer.json())
    }

    /// Peak resident memory so far, in KiB.
    pub fn peak_rss_kb(&self) -> u64 {
        self.status_kb("VmHWM:")
    }

    /// Resident anonymous memory now (the heap, stacks: not the binary's own pages), in KiB.
    pub fn anon_rss_kb(&self) -> u64 {
        self.status_kb("RssAnon:")
    }

    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix(field)).unwrap();
        line.split_whitespace().next().unwrap().parse().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.unread.take();
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
