//! A host reached over SSH with the system `ssh` (so the operator's ssh configuration, agent and
//! keys behave exactly as with plain `ssh`): one master connection per host (`-M`, its control
//! socket in a directory of pipe's), which forwards the host's Docker socket to a local unix
//! socket (docker and compose run here with `DOCKER_HOST=unix://…`), carries the commands run
//! on the host (nginx's `-t` and reload, the upstream files) and, per new container, a TCP
//! forward for its health check. Host keys are checked strictly against known_hosts
//! (`StrictHostKeyChecking=yes`, never `accept-new`) and nothing asks a person (`BatchMode`).
//! Nothing of the target's `env` reaches `ssh`: not its argv, not its environment.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::SshHosts;
use crate::exec::{self, Cmd};
use crate::output::Output;

/// How long connecting and authenticating may take.
const CONNECT: Duration = Duration::from_secs(20);
/// How long a command on the host may take (nginx, a file).
const REMOTE: Duration = Duration::from_secs(30);

/// What `ssh` keeps of pipe's environment: its own needs (home, user, agent, locale).
const SSH_ENV: [&str; 7] = ["HOME", "USER", "LOGNAME", "PATH", "SSH_AUTH_SOCK", "LANG", "LC_ALL"];

/// Why a host could not be used before the rollout.
#[derive(Debug, Clone)]
pub(crate) enum Unreached {
    /// Down, refused, timed out, no engine: `skip_unreachable` may skip it.
    Down(String),
    /// Its key is not in known_hosts (or differs): never skipped, nothing runs there.
    Key(String),
}

impl Unreached {
    pub(crate) fn why(&self) -> &str {
        match self {
            Unreached::Down(why) | Unreached::Key(why) => why,
        }
    }
}

/// One host's master connection, closed (and its directory removed) on drop.
pub(crate) struct Link {
    /// `ssh://[USER@]HOST[:PORT]` as the pipeline file names it.
    pub spec: String,
    host: String,
    port: Option<u16>,
    dir: PathBuf,
    control: PathBuf,
    socket: PathBuf,
    /// Options every `ssh` of this link gets, the destination last.
    base: Vec<OsString>,
    out: Output,
}

impl Link {
    /// Connects to `spec` (authenticating, checking its key), forwards its Docker socket into
    /// `dir` (made here, 0700), and asks that engine for its version.
    pub(crate) fn open(out: &Output, spec: &str, ssh: &SshHosts, dir: &Path) -> Result<Link, Unreached> {
        let Some((user, host, port)) = crate::config::parse_ssh_host(spec) else {
            return Err(Unreached::Down(format!("`{spec}` is not `ssh://[USER@]HOST[:PORT]`")));
        };
        let control = dir.join("c");
        // ssh binds `c.` and 16 characters beside the control socket first; sun_path has 108.
        if control.as_os_str().len() + 17 >= 104 {
            return Err(Unreached::Down(format!(
                "the control socket `{}` is too long for a unix socket; use a shorter `pipe.workspace`",
                control.display()
            )));
        }
        make_private_dir(dir).map_err(|e| Unreached::Down(format!("{e:#}")))?;
        let mut base: Vec<OsString> = Vec::new();
        let mut opt = |o: String| base.extend(["-o".into(), o.into()]);
        opt("BatchMode=yes".into());
        opt("StrictHostKeyChecking=yes".into());
        opt("UpdateHostKeys=no".into());
        opt(format!("ConnectTimeout={}", 10));
        opt("ServerAliveInterval=10".into());
        opt("ServerAliveCountMax=3".into());
        if let Some(file) = &ssh.known_hosts {
            opt(format!("UserKnownHostsFile={}", file.display()));
            opt("GlobalKnownHostsFile=/dev/null".into());
        }
        if let Some(key) = &ssh.identity {
            opt("IdentitiesOnly=yes".into());
            base.extend(["-i".into(), key.clone().into()]);
        }
        if let Some(port) = port {
            base.extend(["-p".into(), port.to_string().into()]);
        }
        if let Some(user) = user {
            base.extend(["-l".into(), user.into()]);
        }
        base.extend(["-S".into(), control.clone().into()]);
        let link = Link {
            spec: spec.to_string(),
            host: host.to_string(),
            port,
            dir: dir.to_path_buf(),
            socket: dir.join("docker.sock"),
            control,
            base,
            out: *out,
        };
        let forward = format!("{}:{}", link.socket.display(), ssh.docker_socket.display());
        let master = link
            .ssh()
            .args(["-M", "-f", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes", "-L"])
            .arg(forward)
            .arg("--")
            .arg(&link.host);
        if let Err(err) = exec::capture(out, &master, CONNECT) {
            let said = said(&err);
            return Err(link.refusal(&said));
        }
        let version = link.docker().arg("version").args(["--format", "{{.Server.Version}}"]);
        if let Err(err) = exec::capture(out, &version, CONNECT) {
            return Err(Unreached::Down(format!(
                "its Docker engine does not answer at `{}`: {}",
                ssh.docker_socket.display(),
                last_line(&said(&err))
            )));
        }
        Ok(link)
    }

    /// The `DOCKER_HOST` that reaches the host's engine through this link.
    pub(crate) fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn docker(&self) -> Cmd {
        Cmd::new("docker").env_clear_but(&SSH_ENV).env("DOCKER_HOST", self.docker_host())
    }

    /// `ssh` with this link's options, pipe's environment cut to what ssh needs.
    fn ssh(&self) -> Cmd {
        Cmd::new("ssh").env_clear_but(&SSH_ENV).args(self.base.iter().cloned())
    }

    /// `argv` run on the host through the master connection. ssh joins its words into one line
    /// for the host's shell, so each word is quoted for that shell here (plain words are left
    /// as they are, so `-v` shows `… -- HOST nginx -t`).
    pub(crate) fn remote<S: AsRef<str>>(&self, argv: &[S]) -> Cmd {
        self.ssh().args(["--", self.host.as_str()]).args(argv.iter().map(|w| shell_word(w.as_ref())))
    }

    /// A local TCP address forwarded, through the master, to `ip:port` as the host sees it.
    pub(crate) fn forward(&self, ip: &str, port: u16) -> anyhow::Result<String> {
        // A free port now; ssh binds it next (another process taking it in between fails the
        // forward, and the check says so).
        let local = TcpListener::bind("127.0.0.1:0").context("failed to find a free local port")?.local_addr()?;
        let spec = format!("127.0.0.1:{}:{ip}:{port}", local.port());
        let cmd = self.ssh().args(["-O", "forward", "-L"]).arg(spec).args(["--", self.host.as_str()]);
        exec::capture(&self.out, &cmd, REMOTE)
            .with_context(|| format!("failed to forward a port to {ip}:{port} on `{}`", self.spec))?;
        Ok(local.to_string())
    }

    /// The text of a file on the host, `None` when there is none.
    pub(crate) fn read(&self, path: &Path) -> anyhow::Result<Option<String>> {
        let path = path.to_string_lossy();
        let cmd = self.remote(&["sh", "-c", "if [ -e \"$1\" ]; then cat -- \"$1\"; else exit 3; fi", "sh", &path]);
        let (text, failed) = exec::capture_even_failed(&self.out, &cmd, REMOTE)?;
        match failed {
            None => Ok(Some(text)),
            Some(f) if f.status.contains("exit status: 3") => Ok(None),
            Some(f) => Err(anyhow::Error::new(f).context(format!("failed to read `{path}` on `{}`", self.spec))),
        }
    }

    /// Writes a file on the host (a temporary file renamed over it), its text through stdin.
    pub(crate) fn write(&self, path: &Path, text: &str) -> anyhow::Result<()> {
        let path = path.to_string_lossy();
        let script = "cat > \"$1.tmp\" && mv -f -- \"$1.tmp\" \"$1\"";
        let cmd = self.remote(&["sh", "-c", script, "sh", &path]).stdin(text.as_bytes().to_vec());
        exec::capture(&self.out, &cmd, REMOTE)
            .with_context(|| format!("failed to write `{path}` on `{}`", self.spec))?;
        Ok(())
    }

    /// Removes a file on the host; whether one was there.
    pub(crate) fn remove(&self, path: &Path) -> anyhow::Result<bool> {
        let path = path.to_string_lossy();
        let cmd = self.remote(&["sh", "-c", "[ -e \"$1\" ] || exit 3; rm -f -- \"$1\"", "sh", &path]);
        let (_, failed) = exec::capture_even_failed(&self.out, &cmd, REMOTE)?;
        match failed {
            None => Ok(true),
            Some(f) if f.status.contains("exit status: 3") => Ok(false),
            Some(f) => Err(anyhow::Error::new(f).context(format!("failed to remove `{path}` on `{}`", self.spec))),
        }
    }

    /// `mkdir -p` on the host.
    pub(crate) fn mkdir(&self, dir: &Path) -> anyhow::Result<()> {
        let dir = dir.to_string_lossy();
        exec::capture(&self.out, &self.remote(&["mkdir", "-p", "--", &dir]), REMOTE)
            .with_context(|| format!("failed to create `{dir}` on `{}`", self.spec))?;
        Ok(())
    }

    /// What a failed `ssh` said, as the refusal of this host: an unknown or changed key with
    /// the fix, else the host is down.
    fn refusal(&self, said: &str) -> Unreached {
        let (host, port) = (&self.host, self.port);
        let keyscan = match port {
            Some(p) => format!("ssh-keyscan -p {p} -t ed25519 {host}"),
            None => format!("ssh-keyscan -t ed25519 {host}"),
        };
        if said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            return Unreached::Key(format!(
                "its host key differs from the one known_hosts holds for it; refused (a reinstalled host, or someone in between)\n\
                 hint: confirm the new key's fingerprint on the host itself (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), \
                 then replace the old one: `ssh-keygen -R {host}` and `{keyscan} >> ~/.ssh/known_hosts`"
            ));
        }
        if said.contains("Host key verification failed") || said.contains("host key is known") {
            return Unreached::Key(format!(
                "its host key is not known (no entry in known_hosts); refused before anything ran there\n\
                 hint: check the host's key fingerprint out of band (on the host: `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), \
                 then add it: `{keyscan} >> ~/.ssh/known_hosts` (or the target's `ssh.known_hosts`)"
            ));
        }
        Unreached::Down(format!("ssh cannot reach it: {}", last_line(said)))
    }

    /// Ends the master connection and removes its directory.
    fn close(&self) {
        // Also after SIGTERM: a master left behind would hold the host's Docker socket open.
        let exit = self.ssh().args(["-O", "exit", "--", self.host.as_str()]).through_signals();
        if std::fs::metadata(&self.control).is_ok()
            && let Err(e) = exec::capture(&self.out, &exit, REMOTE)
        {
            self.out.warn(format!("could not close the ssh connection to `{}`: {e:#}", self.spec));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
    }
}

/// A word as a POSIX shell reads it back: as it is when plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain { word.to_string() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    let _ = std::fs::remove_dir_all(dir);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("failed to create `{}`", parent.display()))?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir).with_context(|| format!("failed to create `{}`", dir.display()))
}

/// What a failed command said (its stderr's tail), or the error itself.
fn said(err: &anyhow::Error) -> String {
    match err.downcast_ref::<crate::error::ProcessFailed>() {
        Some(f) if !f.output_tail.trim().is_empty() => f.output_tail.clone(),
        _ => format!("{err:#}"),
    }
}

fn last_line(text: &str) -> String {
    text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no answer").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_quoted_for_the_hosts_shell() {
        let words = |argv: &[&str]| argv.iter().map(|w| shell_word(w)).collect::<Vec<_>>().join(" ");
        assert_eq!(words(&["nginx", "-s", "reload"]), "nginx -s reload");
        assert_eq!(words(&["cat", "a b; rm -rf /", "it's", "$HOME", ""]), r"cat 'a b; rm -rf /' 'it'\''s' '$HOME' ''");
    }
}
