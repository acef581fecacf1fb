//! Simulated hosts on this machine: a `Host` is a network namespace joined to the main one by a
//! veth pair on a private /30 of its own, with its own `dockerd` (data root, exec root, pid file,
//! unix socket, `--bip`), and whatever the test starts inside it (nginx, `pipe serve`, sshd).
//! Drop removes everything it made, panics included: containers, processes, the daemon, the veth,
//! the namespace, the directories and the address slot.
//!
//! Slots: each host takes a slot (0..1024) by creating `/tmp/pipe-test-hosts/slot-N` with the
//! owner's pid, so tests in parallel (and other test processes) never share a subnet; a slot
//! whose owner pid is gone is taken over. Each host of a process starts its search one slot past
//! the last one's, so a slot just given back is not reused at once. Slot N gives:
//! - veth subnet `10.213.(N/64).(N%64*4)/30`, the main side `.1`, the host side `.2`;
//! - the host engine's bridge `10.(216 + N/256).(N%256).1/24`;
//! - the namespace `pipe-h<pid>-<N>` and the veth ends `pvm<N>` (main) / `pvh<N>` (host).
//!
//! The daemon is started with `nsenter --net=/var/run/netns/NAME dockerd …` rather than
//! `ip netns exec`, which remounts /sys and loses the cgroup mounts dockerd needs.

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SLOTS: u32 = 1024;
const SLOT_DIR: &str = "/tmp/pipe-test-hosts";

/// Whether this machine can simulate hosts (root, `ip`, `nsenter`, `dockerd`). Without them the
/// test is skipped, unless `PIPE_REQUIRE_DOCKER=1`, which makes it a failure.
pub fn available() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let tools = ["/usr/sbin/ip", "/usr/bin/nsenter", "/usr/sbin/dockerd"].iter().all(|p| Path::new(p).exists());
    if root && tools {
        return true;
    }
    assert!(
        std::env::var("PIPE_REQUIRE_DOCKER").is_err(),
        "simulated hosts need root, iproute2, util-linux's nsenter and dockerd"
    );
    eprintln!("skipped: simulated hosts need root, ip, nsenter and dockerd");
    false
}

/// One simulated host.
pub struct Host {
    /// A short label for messages (`host1`).
    pub label: String,
    /// The network namespace's name under `/var/run/netns`.
    pub netns: String,
    slot: u32,
    /// The host's address on its veth: reachable from the main namespace (and from containers
    /// the host publishes ports for).
    pub ip: Ipv4Addr,
    /// The main namespace's address on the same veth: what the host reaches the main host by
    /// (a registry, a forge, the CI host's `pipe`).
    pub gateway: Ipv4Addr,
    bip: String,
    /// Everything of this host's on disk: the engine's roots and socket, nginx's prefix, logs.
    pub dir: PathBuf,
    engine: Option<Child>,
    insecure_registries: Vec<String>,
    children: Vec<Child>,
    nginx_pids: Vec<PathBuf>,
}

impl Host {
    /// Makes the namespace and its veth and starts its engine (waiting until it answers).
    /// `insecure_registries` are `HOST:PORT`s on the main host (`gateway`) its engine may pull
    /// from over plain HTTP; pass the whole private range (`10.213.0.0/16`) when the port is not
    /// known yet.
    pub fn start(label: &str, insecure_registries: &[&str]) -> Host {
        let slot = take_slot();
        let netns = format!("pipe-h{}-{slot}", std::process::id());
        let base = [10, 213, (slot / 64) as u8, (slot % 64 * 4) as u8];
        let gateway = Ipv4Addr::new(base[0], base[1], base[2], base[3] + 1);
        let ip = Ipv4Addr::new(base[0], base[1], base[2], base[3] + 2);
        let bip = format!("10.{}.{}.1/24", 216 + slot / 256, slot % 256);
        // Short: containerd's socket lives under the exec root, and unix socket paths are short.
        let dir = PathBuf::from(format!("/tmp/ph{slot}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut host = Host {
            label: label.into(),
            netns,
            slot,
            ip,
            gateway,
            bip,
            dir,
            engine: None,
            insecure_registries: insecure_registries.iter().map(|s| s.to_string()).collect(),
            children: Vec::new(),
            nginx_pids: Vec::new(),
        };
        host.network();
        host.start_engine();
        host
    }

    fn network(&self) {
        let (main, inner) = (format!("pvm{}", self.slot), format!("pvh{}", self.slot));
        // A veth left by a killed run on this slot would make `add` fail.
        let _ = quiet(Command::new("ip").args(["link", "del", &main]));
        ip(&["netns", "add", &self.netns]);
        ip(&["link", "add", &main, "type", "veth", "peer", "name", &inner]);
        ip(&["link", "set", &inner, "netns", &self.netns]);
        ip(&["addr", "add", &format!("{}/30", self.gateway), "dev", &main]);
        ip(&["link", "set", &main, "up"]);
        let inside = |args: &[&str]| {
            let mut full = vec!["-n", self.netns.as_str()];
            full.extend_from_slice(args);
            ip(&full)
        };
        inside(&["addr", "add", &format!("{}/30", self.ip), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "default", "via", &self.gateway.to_string()]);
    }

    /// The path `nsenter --net=` takes.
    pub fn netns_path(&self) -> String {
        format!("/var/run/netns/{}", self.netns)
    }

    /// A command run inside the host's network namespace (`nsenter --net=…`); the rest of the
    /// machine (files, processes) is shared.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path())).arg("--").arg(program).stdin(Stdio::null());
        cmd
    }

    /// Runs a command in the namespace; panics with its stderr when it fails; returns stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().expect("nsenter");
        assert!(
            out.status.success(),
            "{}: `{program} {}` failed:\n{}",
            self.label,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Spawns a long-lived process in the namespace, killed (with its process group) on drop.
    pub fn spawn(&mut self, mut cmd: Command) -> u32 {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{}: spawn in namespace: {e}", self.label));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Kills a process [`Host::spawn`] started (its whole process group) and waits for it.
    pub fn kill(&mut self, pid: u32) {
        if let Some(at) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.remove(at);
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// The engine's socket, for `docker -H` and `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// The docker CLI pointed at this host's engine.
    pub fn docker_cmd(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.args(["-H", &self.docker_host()]).stdin(Stdio::null());
        cmd
    }

    /// `docker ARGS` against this host's engine; panics with stderr on failure; returns stdout.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = self.docker_cmd().args(args).output().expect("docker");
        assert!(
            out.status.success(),
            "{}: docker {args:?} failed:\n{}",
            self.label,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the host's engine answers.
    pub fn engine_answers(&self) -> bool {
        self.docker_cmd()
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the host's `dockerd` in its namespace and waits (up to 60 s) until it answers.
    pub fn start_engine(&mut self) {
        assert!(self.engine.is_none(), "{}: engine already running", self.label);
        let d = &self.dir;
        let registries: Vec<String> = self.insecure_registries.iter().map(|r| format!("\"{r}\"")).collect();
        std::fs::write(d.join("daemon.json"), format!("{{\"insecure-registries\": [{}]}}\n", registries.join(", ")))
            .unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("dockerd.log")).unwrap();
        let mut cmd = self.command("dockerd");
        cmd.arg(format!("--config-file={}", d.join("daemon.json").display()))
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("x").display()))
            .arg(format!("--pidfile={}", d.join("dockerd.pid").display()))
            .arg(format!("--host={}", self.docker_host()))
            .arg(format!("--bip={}", self.bip))
            .stdout(Stdio::null())
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        self.engine = Some(cmd.spawn().expect("dockerd"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.engine_answers() {
            if let Some(Ok(Some(status))) = self.engine.as_mut().map(|c| c.try_wait()) {
                self.engine = None;
                panic!("{}: dockerd exited ({status}):\n{}", self.label, self.engine_log());
            }
            assert!(
                Instant::now() < deadline,
                "{}: dockerd did not answer in 60 s:\n{}",
                self.label,
                self.engine_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the host's `dockerd` (SIGTERM, then SIGKILL after 20 s) and waits until it is gone;
    /// its containers stop with it.
    pub fn stop_engine(&mut self) {
        let Some(mut child) = self.engine.take() else { return };
        let pid = child.id() as i32;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its containerd and shims are in its process group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }

    /// The tail of the engine's log, for failure messages.
    pub fn engine_log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Copies an image from the main engine into this host's (`docker save | docker load`).
    pub fn load_image(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("docker save");
        let out = self.docker_cmd().arg("load").stdin(save.stdout.take().unwrap()).output().expect("docker load");
        assert!(save.wait().unwrap().success(), "{}: docker save {image} failed", self.label);
        assert!(
            out.status.success(),
            "{}: docker load of {image} failed:\n{}",
            self.label,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts nginx in the namespace with its own prefix, pid file and temp paths under
    /// `dir/nginx`; `http` is what goes inside its `http {}` block. Stopped on drop. Returns the
    /// directory (its `nginx.conf`, pid file, and room for included files).
    pub fn nginx(&mut self, http: &str) -> PathBuf {
        let dir = self.dir.join("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n    \
             access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    \
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
             {http}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let conf = dir.join("nginx.conf");
        self.run("/usr/sbin/nginx", &["-p", &d.to_string(), "-c", &conf.display().to_string()]);
        self.nginx_pids.push(dir.join("nginx.pid"));
        dir
    }

    /// Waits (up to `limit`) until `port` on the host's address accepts a connection.
    pub fn wait_port(&self, port: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        while TcpStream::connect_timeout(&(self.ip, port).into(), Duration::from_millis(500)).is_err() {
            assert!(Instant::now() < deadline, "{}: nothing listens on {}:{port}", self.label, self.ip);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One GET from the main namespace to `http://IP:PORT/PATH` with a Host header: the body of a
    /// 200, or what went wrong.
    pub fn get(&self, port: u16, host: &str, path: &str) -> Result<String, String> {
        match super::load::get((self.ip, port).into(), host, path)? {
            (200, Ok(body)) => Ok(body),
            (status, Ok(body)) => Err(format!("HTTP {status}: {body}")),
            (status, Err(why)) => Err(format!("HTTP {status}: {why}")),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for pid_file in &self.nginx_pids {
            if let Ok(pid) = std::fs::read_to_string(pid_file) {
                let _ = quiet(Command::new("kill").args(["-TERM", pid.trim()]));
            }
        }
        for child in &mut self.children {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        if self.engine.is_some()
            && let Ok(out) = self.docker_cmd().args(["ps", "--all", "--quiet"]).output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
            if !ids.is_empty() {
                let _ = quiet(self.docker_cmd().args(["rm", "--force", "--volumes"]).args(&ids));
            }
        }
        self.stop_engine();
        let _ = quiet(Command::new("ip").args(["link", "del", &format!("pvm{}", self.slot)]));
        // The engine's shims and orphaned container processes may still be exiting (a loaded
        // machine): their mounts and files keep the directory and the namespace busy for a
        // moment, so the removal is tried until it holds.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut why = Vec::new();
        loop {
            why.clear();
            kill_what_belongs(&self.netns, &self.dir);
            unmount_under(&self.dir);
            if let Err(e) = remove_netns(&self.netns) {
                why.push(e);
            }
            if let Err(e) = std::fs::remove_dir_all(&self.dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                why.push(format!("removing {}: {e}", self.dir.display()));
            }
            if leftovers(&self.netns, &self.dir).is_empty() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("{}: teardown left {:?} after 60 s: {why:?}", self.label, leftovers(&self.netns, &self.dir));
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::fs::remove_file(slot_file(self.slot));
    }
}

/// Kills whatever still belongs to a host: processes in its network namespace (a proxy, a worker
/// finishing a request, the engine's shims) and processes whose root or working directory lies
/// in its directory (a container the engine left running when it died).
fn kill_what_belongs(netns: &str, dir: &Path) {
    let mut pids: Vec<String> = Vec::new();
    if Path::new(&format!("/var/run/netns/{netns}")).exists()
        && let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output()
    {
        pids.extend(String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string));
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let inside = ["root", "cwd"].iter().any(|link| {
                std::fs::read_link(entry.path().join(link)).is_ok_and(|t| t.starts_with(dir) && t != Path::new("/"))
            });
            if inside {
                pids.push(name);
            }
        }
    }
    for pid in pids {
        let _ = quiet(Command::new("kill").args(["-KILL", &pid]));
    }
}

/// Lazily unmounts every mount under `dir` (overlay layers, the engine's netns bind mounts),
/// deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> =
        mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|p| p.starts_with(&prefix)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = quiet(Command::new("umount").args(["-l", p]));
    }
}

/// Removes the namespace's file under `/var/run/netns`, unmounting it as often as it is mounted
/// (concurrent `ip netns add`s can stack mounts there), and says why when it could not.
fn remove_netns(netns: &str) -> Result<(), String> {
    let path = format!("/var/run/netns/{netns}");
    if !Path::new(&path).exists() {
        return Ok(());
    }
    let _ = quiet(Command::new("ip").args(["netns", "del", netns]));
    // `/var/run` is a link to `/run`: the mount table names the namespace's file there.
    let listed = format!("/run/netns/{netns}");
    for _ in 0..8 {
        let mounted = std::fs::read_to_string("/proc/self/mounts")
            .is_ok_and(|m| m.lines().any(|l| matches!(l.split(' ').nth(1), Some(p) if p == listed || p == path)));
        if !mounted {
            break;
        }
        let _ = quiet(Command::new("umount").args(["-l", &path]));
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("removing {path}: {e}")),
        _ => Ok(()),
    }
}

fn slot_file(slot: u32) -> PathBuf {
    PathBuf::from(format!("{SLOT_DIR}/slot-{slot}"))
}

/// Takes a free slot: created exclusively, or taken over from an owner pid that is gone.
fn take_slot() -> u32 {
    std::fs::create_dir_all(SLOT_DIR).unwrap();
    let me = std::process::id();
    // Each host of this process starts looking one slot further on: a slot another test just
    // gave back is not taken again at once, so a test that checks its hosts left nothing never
    // finds another test's new host under the same namespace and directory names.
    static TAKEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let next = TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = me.wrapping_mul(7919).wrapping_add(next) % SLOTS;
    for i in 0..SLOTS {
        let slot = (start + i) % SLOTS;
        let path = slot_file(slot);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                use std::io::Write;
                write!(f, "{me}").unwrap();
                return slot;
            }
            Err(_) => {
                let owner: Option<i32> = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok());
                let gone = owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                if gone && std::fs::remove_file(&path).is_ok() {
                    // Someone else may race for it: go round through create_new again.
                    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                        use std::io::Write;
                        write!(f, "{me}").unwrap();
                        return slot;
                    }
                }
            }
        }
    }
    panic!("no free host slot under {SLOT_DIR}");
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn quiet(cmd: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status()
}

/// Whether anything of the host in `slot` is left: its namespace, its veth, its directory.
pub fn leftovers(netns: &str, slot_dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    if Path::new(&format!("/var/run/netns/{netns}")).exists() {
        left.push(format!("namespace {netns}"));
    }
    if slot_dir.exists() {
        left.push(format!("directory {}", slot_dir.display()));
    }
    left
}

impl Host {
    /// The main-side veth's name (gone once the host is dropped).
    pub fn veth(&self) -> String {
        format!("pvm{}", self.slot)
    }
}

/// Commits a release whose page (`www/index.html`) says `name`; `bad_on` names the host label
/// whose health check this release fails (`www/bad-on`, which the test's app reads at start).
/// Builds and tests it with `env`'s pipe and copies `image` at the commit's tag into every
/// host's engine. Returns the commit.
pub fn release_everywhere(
    env: &crate::support::TestEnv,
    repo: &crate::support::WorkRepo,
    image: &str,
    hosts: &[Host],
    name: &str,
    bad_on: Option<&str>,
) -> String {
    repo.write("www/index.html", &format!("{name}\n"));
    repo.write("www/health", "ok\n");
    let marker = repo.work.join("www").join("bad-on");
    match bad_on {
        Some(label) => std::fs::write(&marker, label).unwrap(),
        None => {
            let _ = std::fs::remove_file(&marker);
        }
    }
    let sha = repo.commit_to("main", name);
    let project = image.trim_start_matches("pipe-test/");
    env.pipe(&["build", project, "main"]).code(0);
    env.pipe(&["test", project, "main"]).code(0);
    for host in hosts {
        host.load_image(&format!("{image}:{}", &sha[..12]));
    }
    sha
}

/// The `[[host]]` entries of a deploy record in a target's history: host, result, detail.
pub fn host_entries(record: &toml::Value) -> Vec<(String, String, String)> {
    record
        .get("host")
        .and_then(|h| h.as_array())
        .map(|hosts| {
            hosts
                .iter()
                .map(|h| {
                    (
                        h["host"].as_str().unwrap_or("").to_string(),
                        h["result"].as_str().unwrap_or("").to_string(),
                        h.get("detail").and_then(|d| d.as_str()).unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
