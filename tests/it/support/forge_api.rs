//! A strict stand-in for a forge's API (`forge_api.py`): commit statuses and organization
//! listings as each forge documents them, on 127.0.0.1.

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
    /// From now on, every request the documentation accepts whose path contains `replace.0` is
    /// answered `status` to `origin` (empty: this one) + its path with `replace.0` replaced by
    /// `replace.1`; `None` stops redirecting.
    pub fn redirect(&self, redirect: Option<(u16, &str, (&str, &str))>) {
        let path = PathBuf::from(format!("{}.redirect", self.record.display()));
        match redirect {
            Some((status, origin, (old, new))) => {
                let tmp = PathBuf::from(format!("{}.redirect.tmp", self.record.display()));
                let spec = serde_json::json!({"status": status, "origin": origin, "replace": [old, new]});
                std::fs::write(&tmp, spec.to_string()).unwrap();
                std::fs::rename(tmp, path).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl ForgeApi {
    /// Stops the stand-in: the forge's API is down from now on.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ForgeApi {
    /// The open pull requests the stand-in lists from now on: `(repository, number, author)`.
    pub fn set_pulls(&self, pulls: &[(&str, u32, &str)]) {
        let with_bodies: Vec<(&str, u32, &str, &str)> = pulls.iter().map(|&(r, n, a)| (r, n, a, "")).collect();
        self.set_pulls_with_bodies(&with_bodies);
    }

    /// [`set_pulls`](Self::set_pulls) with each pull request's description (`body`), as its
    /// author wrote it.
    pub fn set_pulls_with_bodies(&self, pulls: &[(&str, u32, &str, &str)]) {
        let mut by_repo = serde_json::Map::new();
        for (repo, number, author, body) in pulls {
            let list = by_repo.entry(repo.to_string()).or_insert_with(|| serde_json::json!([]));
            list.as_array_mut().unwrap().push(serde_json::json!({"number": number, "author": author, "body": body}));
        }
        let path = PathBuf::from(format!("{}.pulls.json", self.record.display()));
        let tmp = PathBuf::from(format!("{}.pulls.json.tmp", self.record.display()));
        std::fs::write(&tmp, serde_json::Value::Object(by_repo).to_string()).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }
}
