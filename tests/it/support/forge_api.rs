//! A strict stand-in for a forge's API (`forge_api.py`): commit statuses and organization
//! listings as each forge documents them, on 127.0.0.1; and `pipe serve` receiving their webhooks.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TestEnv, free_port};

/// The token the stand-in accepts.
pub const TOKEN: &str = "forge-token-7f3a";

/// One forge's status API on 127.0.0.1; killed on drop.
pub struct ForgeApi {
    child: Child,
    pub port: u16,
    pub record: PathBuf,
}

impl ForgeApi {
    pub fn start(env: &TestEnv, kind: &str, port: Option<u16>) -> ForgeApi {
        let record = env.path().join(format!("forge-{kind}.jsonl"));
        let port_file = env.path().join(format!("forge-{kind}-{}.port", free_port()));
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/forge_api.py"))
            .args([kind, TOKEN])
            .arg(&record)
            .arg(&port_file);
        if let Some(port) = port {
            cmd.arg(port.to_string());
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("python3");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                return ForgeApi { child, port: port.trim().parse().unwrap(), record };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the {kind} stand-in did not start");
    }

    /// Every request so far, as the stand-in judged it.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `(context, state)` of each status, after asserting the stand-in accepted every request.
    pub fn statuses(&self, name_key: &str) -> Vec<(String, String)> {
        let requests: Vec<_> = self.requests().into_iter().filter(|r| r["method"] == "POST").collect();
        for r in &requests {
            assert_eq!(r["status"], 201, "the forge stand-in refused a request: {r}");
        }
        requests
            .iter()
            .map(|r| {
                (r["body"][name_key].as_str().unwrap().to_string(), r["body"]["state"].as_str().unwrap().to_string())
            })
            .collect()
    }
}

impl Drop for ForgeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ForgeApi {
    /// What the organization listing serves from now on (`forge_api.py` documents the shape).
    pub fn set_org(&self, org: &serde_json::Value) {
        let path = PathBuf::from(format!("{}.org.json", self.record.display()));
        let tmp = PathBuf::from(format!("{}.org.json.tmp", self.record.display()));
        std::fs::write(&tmp, org.to_string()).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// The listing requests (GETs) so far.
    pub fn listings(&self) -> Vec<serde_json::Value> {
        self.requests().into_iter().filter(|r| r["method"] == "GET").collect()
    }
}

impl ForgeApi {
    /// Stops the stand-in: the forge's API is down from now on.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `pipe serve` whose log lines are kept, each with when it arrived; SIGTERM on drop.
pub struct Serve {
    child: Child,
    pub port: u16,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

impl Serve {
    pub fn start(env: &TestEnv) -> Serve {
        for _ in 0..5 {
            let port = free_port();
            let mut child = env
                .command(&["serve", "--listen", &format!("127.0.0.1:{port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let stderr = child.stderr.take().unwrap();
            let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let kept = lines.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    kept.lock().unwrap().push((Instant::now(), line));
                }
            });
            let serve = Serve { child, port, lines };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if serve.has("listening on") {
                    return serve;
                }
                if serve.has("cannot listen") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("pipe serve did not start");
    }

    pub fn has(&self, needle: &str) -> bool {
        self.count(needle) > 0
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|(_, l)| l.contains(needle)).count()
    }

    /// When the first line containing `needle` arrived, waiting up to `limit` for it.
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

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}
