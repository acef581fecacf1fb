//! `pipe poll` over the network protocols against real servers on 127.0.0.1, with a counting TCP
//! relay in front of each: many repositories on one host cost a few connections (one SSH
//! session per poll worker, pooled HTTP keep-alive), never one per repository; host keys stay
//! strictly checked on reused sessions; a daemon's error reaches the user escaped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::{BareRepo, GitDaemon, GitHttpServer, Sshd, TestEnv};

const REPOS: usize = 6;

/// A TCP relay on 127.0.0.1 to `upstream` that counts the connections it accepted.
struct Relay {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Relay {
    fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Relay { port, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// `REPOS` bare repos under `dir`, each with `main`; returns their heads.
fn repos(dir: &std::path::Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    (0..REPOS).map(|i| BareRepo::new(dir, &format!("r{i}")).set("refs/heads/main")).collect()
}

fn config(urls: &[String], extra: &str) -> String {
    let mut text = "[pipe]\nparallel = 2\n\n".to_string();
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&format!("[project.r{i}]\nrepo = \"{url}\"\nbranches = [\"main\"]\n{extra}\n"));
    }
    text
}

fn assert_all_new(run: &crate::support::Run, heads: &[String]) {
    run.code(0);
    let doc = run.json();
    let changes = doc["changes"].as_array().unwrap();
    assert_eq!(changes.len(), REPOS, "{doc}");
    for (i, head) in heads.iter().enumerate() {
        let c = changes.iter().find(|c| c["project"] == format!("r{i}")).unwrap();
        assert_eq!(c["to"], head.as_str());
    }
}

#[test]
fn many_ssh_repositories_on_one_host_share_one_session_per_worker() {
    let Some(sshd) = Sshd::start() else { return };
    let env = TestEnv::new();
    let heads = repos(&env.path().join("served"));
    let relay = Relay::start(sshd.port);
    let urls: Vec<String> = (0..REPOS)
        .map(|i| {
            sshd.url(&env.path().join(format!("served/r{i}.git")))
                .replace(&format!(":{}/", sshd.port), &format!(":{}/", relay.port))
        })
        .collect();
    env.config(&config(&urls, &format!("auth = {{ ssh_key = \"{}\" }}\n", sshd.key.display())));
    let ssh_dir = env.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let known = sshd.known_hosts_line().replace(&format!("]:{} ", sshd.port), &format!("]:{} ", relay.port));
    std::fs::write(ssh_dir.join("known_hosts"), &known).unwrap();

    assert_all_new(&env.pipe(&["poll", "--json"]), &heads);
    assert!(
        relay.connections() <= 2,
        "{} SSH connections for {REPOS} repositories with two workers",
        relay.connections()
    );
}

#[test]
fn a_changed_host_key_is_refused_on_the_shared_session_path() {
    let Some(sshd) = Sshd::start() else { return };
    let env = TestEnv::new();
    repos(&env.path().join("served"));
    let urls: Vec<String> = (0..REPOS).map(|i| sshd.url(&env.path().join(format!("served/r{i}.git")))).collect();
    env.config(&config(&urls, &format!("auth = {{ ssh_key = \"{}\" }}\n", sshd.key.display())));
    // known_hosts vouches for another key under this host and port.
    let other = env.path().join("other_host_key");
    let keygen =
        std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other).status();
    assert!(keygen.unwrap().success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_pub: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    std::fs::create_dir_all(env.path().join(".ssh")).unwrap();
    std::fs::write(env.path().join(".ssh/known_hosts"), format!("[127.0.0.1]:{} {}\n", sshd.port, other_pub.join(" ")))
        .unwrap();
    let run = env.pipe(&["poll"]);
    run.code(1).stderr_has("does not match the one in");
    assert_eq!(run.stderr.matches("does not match").count(), REPOS, "every repository refused:\n{}", run.stderr);
    assert!(env.read_state_opt().is_empty(), "nothing recorded from an unverified server");
}

#[test]
fn many_http_repositories_on_one_host_reuse_pooled_connections() {
    let env = TestEnv::new();
    let served = env.path().join("served");
    let heads = repos(&served);
    let server = GitHttpServer::start(&served, None);
    let relay = Relay::start(server.port);
    let urls: Vec<String> = (0..REPOS).map(|i| format!("http://127.0.0.1:{}/r{i}.git", relay.port)).collect();
    env.config(&config(&urls, ""));
    assert_all_new(&env.pipe(&["poll", "--json"]), &heads);
    assert!(
        relay.connections() <= 2,
        "{} HTTP connections for {REPOS} repositories with two workers",
        relay.connections()
    );
}

#[test]
fn git_daemon_remotes_are_listed_and_its_errors_shown_escaped() {
    let env = TestEnv::new();
    let served = env.path().join("served");
    let heads = repos(&served);
    let daemon = GitDaemon::start(&served);
    let mut urls: Vec<String> = (0..REPOS).map(|i| daemon.url(&format!("r{i}.git"))).collect();
    env.config(&config(&urls, ""));
    assert_all_new(&env.pipe(&["poll", "--json"]), &heads);

    urls.push(daemon.url("missing.git"));
    env.config(&config(&urls, ""));
    let run = env.pipe(&["poll"]);
    run.code(1).stderr_has("the server said: \"no such repository: /missing.git\"");
    assert_eq!(run.stderr.matches("error:").count(), 1, "only the missing one failed:\n{}", run.stderr);
}
