//! Listing an SSH remote's refs over one reused SSH session per host: the first repository on a
//! host pays for the TCP connection, key exchange, host-key check and authentication; every
//! further repository on that host is one more channel (`git-upload-pack '<path>'`) on the same
//! session. libgit2 opens a new session per remote and offers no way to share one, so listing
//! speaks the advertisement itself (libssh2 through the `ssh2` crate, the same library libgit2
//! uses); fetches still go through libgit2.
//!
//! Host keys are checked as strictly as libgit2 does: the server's key must be in
//! `~/.ssh/known_hosts` for that host and port, an unknown or different key is refused.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use ssh2::{CheckResult, KnownHostFileKind, MethodType, Session};

use super::auth::{Auth, redact_url};
use super::wire;

/// Where one remote lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    user: String,
    host: String,
    port: u16,
    key: Option<PathBuf>,
}

/// Sessions that finished a listing and can take another channel, per target.
static IDLE: Mutex<Vec<(Target, Session)>> = Mutex::new(Vec::new());

/// Lists the refs of `ssh://[user@]host[:port]/path` or `[user@]host:path`.
pub(super) fn list(url: &str, auth: &Auth, timeout: Duration) -> anyhow::Result<Vec<(String, String)>> {
    let shown = redact_url(url);
    let (url_user, host, port, path) = parse(url).ok_or_else(|| anyhow!("invalid remote `{shown}`"))?;
    let user = auth.username.clone().or(url_user).unwrap_or_else(|| "git".into());
    let target = Target { user, host, port, key: auth.ssh_key.clone() };
    let _slot = super::slots::host_slot(&format!("{}:{}", target.host, target.port));
    let session = match take_idle(&target) {
        Some(session) => session,
        None => connect(&target, auth, timeout).map_err(|e| anyhow!("cannot connect to `{shown}`: {e:#}"))?,
    };
    session.set_timeout(millis(timeout));
    let refs = upload_pack_refs(&session, &path).map_err(|e| anyhow!("cannot list refs of `{shown}`: {e:#}"))?;
    IDLE.lock().unwrap_or_else(|e| e.into_inner()).push((target, session));
    Ok(refs)
}

fn take_idle(target: &Target) -> Option<Session> {
    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
    let i = idle.iter().position(|(t, _)| t == target)?;
    Some(idle.swap_remove(i).1)
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A new authenticated session: TCP connect, handshake preferring the host-key types
/// `known_hosts` holds for this host, the host-key check, then the agent or the configured key.
fn connect(target: &Target, auth: &Auth, timeout: Duration) -> anyhow::Result<Session> {
    let addrs: Vec<_> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve `{}`", target.host))?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(tcp), _) => tcp,
        (None, Some(e)) => return Err(anyhow!(e).context("failed to connect")),
        (None, None) => bail!("`{}` has no address", target.host),
    };
    let _ = tcp.set_nodelay(true);
    let mut session = Session::new().context("cannot start an SSH session")?;
    session.set_tcp_stream(tcp);
    session.set_timeout(millis(timeout));
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let known_hosts = home.join(".ssh").join("known_hosts");
    let known_text = std::fs::read_to_string(&known_hosts).unwrap_or_default();
    let types = host_key_types(&known_text, &target.host, target.port);
    if !types.is_empty() {
        let _ = session.method_pref(MethodType::HostKey, &types.join(","));
    }
    session.handshake().map_err(|e| anyhow!("SSH handshake failed: {}", e.message()))?;
    check_host_key(&session, target, &known_hosts)?;
    authenticate(&session, target, auth)?;
    Ok(session)
}

fn check_host_key(session: &Session, target: &Target, known_hosts: &std::path::Path) -> anyhow::Result<()> {
    let (key, _) = session.host_key().ok_or_else(|| anyhow!("the server sent no host key"))?;
    let mut known = session.known_hosts().context("cannot check host keys")?;
    if known_hosts.exists() {
        known
            .read_file(known_hosts, KnownHostFileKind::OpenSSH)
            .map_err(|e| anyhow!("cannot read `{}`: {}", known_hosts.display(), e.message()))?;
    }
    match known.check_port(&target.host, target.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::NotFound => bail!("unknown remote ssh hostkey"),
        CheckResult::Mismatch => bail!(
            "the host key of `{}` does not match the one in `{}`: refused (it may have been replaced, or someone is in between)",
            target.host,
            known_hosts.display()
        ),
        CheckResult::Failure => bail!("cannot check the host key of `{}`", target.host),
    }
}

/// The agent first (when there is one), then the configured key, as the libgit2 path does.
fn authenticate(session: &Session, target: &Target, auth: &Auth) -> anyhow::Result<()> {
    let mut tried = Vec::new();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match session.userauth_agent(&target.user) {
            Ok(()) if session.authenticated() => return Ok(()),
            Ok(()) => tried.push("the agent".to_string()),
            Err(e) => tried.push(format!("the agent ({})", e.message())),
        }
    }
    if let Some(key) = &auth.ssh_key {
        match session.userauth_pubkey_file(&target.user, None, key, auth.ssh_passphrase.as_deref()) {
            Ok(()) if session.authenticated() => return Ok(()),
            Ok(()) => tried.push(format!("`{}`", key.display())),
            Err(e) => tried.push(format!("`{}` ({})", key.display(), e.message())),
        }
    }
    if tried.is_empty() {
        bail!("the remote wants credentials and none are configured (see `auth` in the pipeline file)");
    }
    bail!("authentication as `{}` failed; tried {}", target.user, tried.join(", "))
}

/// Runs `git-upload-pack '<path>'` on a new channel, reads the advertisement, and ends the
/// conversation with a flush so the server exits cleanly and the session stays usable.
fn upload_pack_refs(session: &Session, path: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut channel = session.channel_session().map_err(|e| anyhow!("cannot open a channel: {}", e.message()))?;
    channel.exec(&format!("git-upload-pack {}", sq_quote(path))).map_err(|e| anyhow!("{}", e.message()))?;
    let refs = match wire::read_advertisement(&mut channel) {
        Ok(refs) => refs,
        Err(e) => {
            let mut stderr = Vec::new();
            let _ = channel.stderr().take(4096).read_to_end(&mut stderr);
            let said = String::from_utf8_lossy(&stderr);
            let said = said.trim();
            return Err(if said.is_empty() {
                e
            } else {
                anyhow!("the server said: {}", wire::printable(said.as_bytes()))
            });
        }
    };
    let _ = channel.write_all(b"0000");
    let _ = channel.send_eof();
    let _ = std::io::copy(&mut (&mut channel).take(64 * 1024), &mut std::io::sink());
    let _ = channel.wait_close();
    Ok(refs)
}

/// git's own quoting of the path for the remote shell: `'…'` with `'` as `'\''`.
fn sq_quote(path: &str) -> String {
    format!("'{}'", path.replace('\'', r"'\''"))
}

/// (user, host, port, path) of `ssh://[user@]host[:port]/path` (also `git+ssh://`,
/// `ssh+git://`) or scp-like `[user@]host:path`. `ssh://host/~user/x` keeps `~user/x`, as git does.
fn parse(url: &str) -> Option<(Option<String>, String, u16, String)> {
    let scheme_rest = ["ssh://", "git+ssh://", "ssh+git://"].iter().find_map(|p| url.strip_prefix(p));
    let (authority, path) = match scheme_rest {
        Some(rest) => {
            let slash = rest.find('/')?;
            let path = &rest[slash..];
            let path = if path.starts_with("/~") { &path[1..] } else { path };
            (&rest[..slash], path.to_string())
        }
        None => {
            let (authority, path) = url.split_once(':')?;
            (authority, path.to_string())
        }
    };
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_string()), host),
        None => (None, authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if scheme_rest.is_some() => (host, port.parse().ok()?),
        _ => (host_port, 22),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && !path.is_empty()).then(|| (user, host.to_string(), port, path))
}

/// The host-key algorithms of the plain (unhashed) `known_hosts` entries for this host, in
/// libssh2's names, so the handshake asks for a key the file can vouch for. Empty: no
/// preference (hashed entries cannot be matched before the handshake).
fn host_key_types(known_hosts: &str, host: &str, port: u16) -> Vec<&'static str> {
    let wanted = if port == 22 { host.to_string() } else { format!("[{host}]:{port}") };
    let mut types = Vec::new();
    for line in known_hosts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(kind)) = (fields.next(), fields.next()) else { continue };
        if hosts.starts_with('@') || !hosts.split(',').any(|h| h == wanted) {
            continue;
        }
        let names: &[&'static str] = match kind {
            "ssh-ed25519" => &["ssh-ed25519"],
            "ecdsa-sha2-nistp256" => &["ecdsa-sha2-nistp256"],
            "ecdsa-sha2-nistp384" => &["ecdsa-sha2-nistp384"],
            "ecdsa-sha2-nistp521" => &["ecdsa-sha2-nistp521"],
            "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            _ => &[],
        };
        for name in names {
            if !types.contains(name) {
                types.push(*name);
            }
        }
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_as_git_does() {
        assert_eq!(
            parse("ssh://git@10.0.0.5:2222/srv/r.git"),
            Some((Some("git".into()), "10.0.0.5".into(), 2222, "/srv/r.git".into()))
        );
        assert_eq!(parse("ssh://h.example/~bob/r.git"), Some((None, "h.example".into(), 22, "~bob/r.git".into())));
        assert_eq!(
            parse("git@github.com:example/project1.git"),
            Some((Some("git".into()), "github.com".into(), 22, "example/project1.git".into()))
        );
        assert_eq!(parse("ssh://h.example"), None);
    }

    #[test]
    fn paths_are_quoted_for_the_remote_shell() {
        assert_eq!(sq_quote("/srv/it's.git"), r"'/srv/it'\''s.git'");
    }

    #[test]
    fn known_hosts_key_types_lead_the_handshake() {
        let text = "[127.0.0.1]:2222 ssh-ed25519 AAAA\n127.0.0.1 ssh-rsa AAAA\n|1|x|y ecdsa-sha2-nistp256 AAAA\n";
        assert_eq!(host_key_types(text, "127.0.0.1", 2222), ["ssh-ed25519"]);
        assert_eq!(host_key_types(text, "127.0.0.1", 22), ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]);
        assert!(host_key_types(text, "other", 22).is_empty());
    }
}
