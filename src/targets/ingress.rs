//! The ingress as pipe drives it: the upstream files of switched services, `nginx -t` before
//! every reload, a graceful `nginx -s reload`, and starting nginx when none runs. The nginx may
//! be this host's or another's reached over SSH (`over`): then its files and commands go
//! through that host's link, and the same switch runs there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};

use super::reloaded;
use super::ssh::Link;
use crate::config::Ingress;
use crate::exec::{self, Cmd};
use crate::nginx;
use crate::output::Output;

/// The nginx of `[ingress]`: where its upstream files live and the command that runs it.
pub(crate) struct Nginx<'a> {
    pub dir: &'a Path,
    argv: &'a [String],
    log: &'a Path,
    ingress: &'a Ingress,
    /// Set for a preview: its own upstream groups and server names.
    pub site: Option<Site>,
    /// The host over SSH whose nginx this is; `None`: this host's.
    remote: Option<&'a Link>,
}

/// A preview's place in the ingress: upstream groups `pipe-<prefix>-<service>` in files of
/// their own, each with a server block answering the service's host name.
pub(crate) struct Site {
    pub prefix: String,
    /// Service → host name.
    pub hosts: std::collections::BTreeMap<String, String>,
}

const LOG_CAP: u64 = 64 * 1024;

impl<'a> Nginx<'a> {
    /// `None` when the pipeline file does not let pipe switch the ingress (no `upstreams`).
    pub(crate) fn new(ingress: &'a Ingress, log: &'a Path) -> Option<Nginx<'a>> {
        Some(Nginx { dir: ingress.upstreams.as_deref()?, argv: &ingress.nginx, log, ingress, site: None, remote: None })
    }

    /// The same nginx on the host `link` reaches (its paths and command are that host's).
    pub(crate) fn over(mut self, link: Option<&'a Link>) -> Nginx<'a> {
        self.remote = link;
        self
    }

    /// An upstream file's text, `None` when there is none.
    pub(crate) fn read(&self, path: &Path) -> anyhow::Result<Option<String>> {
        if let Some(link) = self.remote {
            return link.read(path);
        }
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!(e).context(format!("failed to read upstream file `{}`", path.display()))),
        }
    }

    /// Writes an upstream file whole (a temporary file renamed over it).
    pub(crate) fn write(&self, path: &Path, text: &str) -> anyhow::Result<()> {
        match self.remote {
            Some(link) => link.write(path, text),
            None => write_file(path, text),
        }
    }

    fn remove(&self, path: &Path) -> anyhow::Result<bool> {
        if let Some(link) = self.remote {
            return link.remove(path);
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(anyhow!(e).context(format!("failed to remove `{}`", path.display()))),
        }
    }

    /// The name of `service`'s upstream group and file: the service's own, or the preview's.
    pub(crate) fn key(&self, service: &str) -> String {
        match &self.site {
            Some(site) => format!("{}-{service}", site.prefix),
            None => service.to_string(),
        }
    }

    /// The upstream file's text: the group, and for a preview its server block.
    fn render(&self, service: &str, servers: &[nginx::Server], note: &str) -> String {
        let key = self.key(service);
        let mut text = nginx::render_upstream(&key, servers, note);
        if let Some(host) = self.site.as_ref().and_then(|s| s.hosts.get(service)) {
            text.push_str(&nginx::render_site(self.ingress, host, &nginx::upstream_name(&key)));
        }
        text
    }

    /// Makes the ingress forget `services` (a preview torn down): their files are removed,
    /// then `nginx -t` and a reload. Nothing to do when no file was there.
    pub(crate) fn forget(&self, out: &Output, services: &[&str]) -> anyhow::Result<()> {
        let mut removed = false;
        for service in services {
            let path = nginx::upstream_file(self.dir, &self.key(service));
            removed |= self.remove(&path)?;
        }
        if removed { self.resync(out) } else { Ok(()) }
    }

    fn cmd(&self, extra: &[&str]) -> Cmd {
        if let Some(link) = self.remote {
            let argv: Vec<&str> = self.argv.iter().map(String::as_str).chain(extra.iter().copied()).collect();
            return link.remote(&argv);
        }
        let mut argv: Vec<OsString> = self.argv.iter().map(OsString::from).collect();
        argv.extend(extra.iter().map(OsString::from));
        Cmd::from_argv(&argv)
    }

    /// The commands a dry run shows for a switch.
    pub(crate) fn commands(&self) -> Vec<Cmd> {
        vec![self.cmd(&["-t"]), self.cmd(&["-s", "reload"])]
    }

    /// The servers the ingress routes `service` to now (empty before its first switch).
    pub(crate) fn serving(&self, service: &str) -> anyhow::Result<Vec<String>> {
        let path = nginx::upstream_file(self.dir, &self.key(service));
        Ok(self.read(&path)?.map(|text| nginx::parse_upstream(&text)).unwrap_or_default())
    }

    /// Points each service at its servers: writes the upstream files, checks the whole config
    /// with `nginx -t`, and reloads gracefully (old workers finish their requests). A config
    /// nginx refuses is never reloaded: the previous files are put back.
    pub(crate) fn switch(
        &self,
        out: &Output,
        services: &[(String, Vec<nginx::Server>)],
        note: &str,
    ) -> anyhow::Result<()> {
        match self.remote {
            Some(link) => link.mkdir(self.dir)?,
            None => std::fs::create_dir_all(self.dir)
                .with_context(|| format!("failed to create upstream directory `{}`", self.dir.display()))?,
        }
        let mut previous: Vec<(PathBuf, Option<String>)> = Vec::new();
        for (service, servers) in services {
            let path = nginx::upstream_file(self.dir, &self.key(service));
            previous.push((path.clone(), self.read(&path)?));
            self.write(&path, &self.render(service, servers, note))?;
        }
        let restore = || {
            for (path, text) in &previous {
                let _ = match text {
                    Some(text) => self.write(path, text),
                    None => self.remove(path).map(|_| ()),
                };
            }
        };
        if let Err(err) = self.check(out) {
            restore();
            return Err(err.context("nginx refused the new upstreams; nginx was not reloaded"));
        }
        if let Err(err) = self.reload(out) {
            restore();
            return Err(err);
        }
        Ok(())
    }

    /// Makes the running nginx match the files on disk (after an interrupted switch).
    pub(crate) fn resync(&self, out: &Output) -> anyhow::Result<()> {
        self.check(out)?;
        self.reload(out)
    }

    /// `nginx -t`.
    pub(crate) fn check(&self, out: &Output) -> anyhow::Result<()> {
        self.run(out, &self.cmd(&["-t"]))
    }

    /// `nginx -s reload`, or starting nginx when no master runs (no pid file, stale pid). After
    /// a reload, waits until the old workers stopped accepting (`reloaded`).
    fn reload(&self, out: &Output) -> anyhow::Result<()> {
        let mut cmd = self.cmd(&["-s", "reload"]);
        let pid_file = exec::capture(out, &self.cmd(&["-T"]), Duration::from_secs(30))
            .ok()
            .and_then(|dump| reloaded::pid_file(&dump));
        // Another host's workers are not in this host's `/proc`: the wait runs there.
        if let (Some(link), Some(pid_file)) = (self.remote, &pid_file) {
            let pid_file = pid_file.to_string_lossy();
            let mut argv = vec!["sh", "-c", reloaded::REMOTE_WAIT, "sh", &pid_file];
            argv.extend(self.argv.iter().map(String::as_str));
            argv.extend(["-s", "reload"]);
            cmd = link.remote(&argv);
        }
        let old = pid_file.as_ref().filter(|_| self.remote.is_none()).and_then(reloaded::workers);
        match self.run(out, &cmd) {
            Ok(()) => {
                if let Some(old) = old
                    && !reloaded::wait_old_generation(&old, Duration::from_secs(10))
                {
                    out.warn("nginx's old workers still accept connections 10s after the reload");
                }
                Ok(())
            }
            Err(err) if not_running(&format!("{err:#}")) => {
                out.info("the ingress nginx is not running: starting it");
                self.run(out, &self.cmd(&[]))
            }
            Err(err) => Err(err),
        }
    }

    fn run(&self, out: &Output, cmd: &Cmd) -> anyhow::Result<()> {
        let finished = exec::logged(out, cmd, self.log, LOG_CAP, Duration::from_secs(30), &mut |_| {})?;
        finished.check_interrupted()?;
        if finished.success() {
            return Ok(());
        }
        let tail = crate::output::tail_lines(&finished.tail, 10);
        Err(anyhow!("`{cmd}` failed: {}\n{tail}", finished.describe()))
    }
}

/// nginx's words for "no master process to signal".
fn not_running(said: &str) -> bool {
    said.contains(".pid\" failed") || said.contains("invalid PID") || said.contains("No such process")
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("conf.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("failed to write upstream file `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("failed to write upstream file `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_without_a_master_is_recognised() {
        assert!(not_running("open() \"/run/nginx.pid\" failed (2: No such file or directory)"));
        assert!(not_running("invalid PID number \"\" in \"/tmp/x/nginx.pid\""));
        assert!(!not_running("unknown directive \"servr\""));
    }

    #[test]
    fn upstream_files_round_trip() {
        let server = |addr: &str| nginx::Server { addr: addr.into(), container: String::new() };
        let text = nginx::render_upstream("web", &[server("172.18.0.3:8080"), server("172.18.0.4:8080")], "x");
        assert!(text.contains("upstream pipe-web {\n    server 172.18.0.3:8080;\n"), "{text}");
        assert_eq!(nginx::parse_upstream(&text), ["172.18.0.3:8080", "172.18.0.4:8080"]);
    }
}
