//! The host's nginx for the ingress tests: where it is, an `nginx.conf` around the file
//! `pipe generate nginx` writes, and stopping the nginx pipe started.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const NGINX: &str = "/usr/sbin/nginx";

/// Whether nginx is installed; where the real engine is required, it must be.
pub fn available() -> bool {
    if Path::new(NGINX).exists() {
        return true;
    }
    assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "nginx is missing (apt-get install nginx)");
    eprintln!("skipped: nginx is not installed");
    false
}

/// An http-level `nginx.conf` that keeps every file of nginx's in `dir` and includes `include`.
pub fn conf(dir: &Path, include: &str) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nevents {{}}\nhttp {{\n    access_log off;\n    \
         client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    \
         uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n    include {include};\n}}\n"
    )
}

/// Stops the nginx pipe started, by its pid file.
pub struct NginxGuard(pub PathBuf);

impl Drop for NginxGuard {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// One GET through the nginx listening on `port` with a Host header: the body of a 200, or what
/// went wrong.
pub fn request(port: u16, host: &str, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| format!("read: {e}"))?;
    let status = text.split_whitespace().nth(1).unwrap_or("");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim().to_string();
    if status == "200" { Ok(body) } else { Err(format!("HTTP {status}: {body}")) }
}
