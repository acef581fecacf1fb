//! Zero-downtime compose deploys behind the ingress: start the new release's containers beside
//! the old ones (same project and service, `up --no-recreate --scale`), wait until each is
//! ready (its container health check, the target's health path or its port, asked directly,
//! not through the ingress), run the release command, switch the ingress's upstream to them,
//! let the old ones drain, then stop them. Anything failing before the switch removes the new
//! containers: the old release never stopped serving.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use jiff::Timestamp;

use super::Compose;
use super::answer::HealthAnswer;
use super::ingress::Nginx;
use super::pinned::Pinned;
use crate::config::{Health, ReleaseCommand};
use crate::docker::client::Docker;
use crate::exec::{self, Cmd};
use crate::nginx::Server;
use crate::output::Output;

/// One zero-downtime rollout of a compose target.
pub(crate) struct Beside<'a> {
    pub out: &'a Output,
    pub docker: &'a Docker,
    pub compose: &'a Compose,
    /// Ingress services of the target and the port nginx connects to inside each container.
    pub services: &'a BTreeMap<String, u16>,
    pub health: Option<&'a Health>,
    pub release: Option<&'a ReleaseCommand>,
    pub drain: Duration,
    pub nginx: &'a Nginx<'a>,
    pub pull: bool,
    pub log: &'a Path,
    /// Names the release in the upstream files.
    pub note: String,
    /// The health check's last answer from a new container that never got ready.
    pub answer: std::cell::RefCell<Option<super::answer::HealthAnswer>>,
    /// New containers join the project's own network with fixed addresses (`pinned`) and the
    /// ingress is sent there; previews keep their one network.
    pub pin: bool,
    /// The engine is another host's, reached over SSH: each new container's check goes through
    /// a forward of that link (its address is the host's, not reachable from here).
    pub tunnel: Option<&'a super::ssh::Link>,
}

/// When the new release was ready and when it took traffic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Switched {
    pub healthy: Timestamp,
    pub switched: Timestamp,
}

/// A container of a service as `docker inspect` shows it.
#[derive(Debug, Clone)]
struct Box {
    id: String,
    status: String,
    /// `healthy`, `unhealthy`, `starting`, or `none` without a health check.
    health: String,
    /// The address nginx is sent to: on pipe's own network when the container joined it, else
    /// on its first network by name.
    ip: Option<String>,
    /// Its address on every network.
    ips: Vec<String>,
}

const SHORT: Duration = Duration::from_secs(60);
const LOG_CAP: u64 = 1024 * 1024;
/// Drain when the target says nothing.
pub(crate) const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

impl Beside<'_> {
    fn names(&self) -> Vec<&str> {
        self.services.keys().map(String::as_str).collect()
    }

    /// Other services the target lists: updated as before (`up`), ahead of the switch.
    fn others(&self) -> Vec<&str> {
        self.compose.services.iter().map(String::as_str).filter(|s| !self.services.contains_key(*s)).collect()
    }

    fn scale_cmd(&self, counts: &BTreeMap<&str, usize>) -> Cmd {
        let mut verb: Vec<String> = ["up", "--detach", "--no-build", "--no-recreate"].map(String::from).to_vec();
        for (service, n) in counts {
            verb.push("--scale".into());
            verb.push(format!("{service}={n}"));
        }
        let verb: Vec<&str> = verb.iter().map(String::as_str).collect();
        self.compose.cmd(&verb, &self.names())
    }

    fn release_cmd(&self, release: &ReleaseCommand) -> Cmd {
        let service = self.names()[0].to_string();
        let mut verb = vec!["run", "--rm", "--no-deps", "-T", service.as_str()];
        verb.extend(release.argv.iter().map(String::as_str));
        self.compose.cmd(&verb, &[] as &[&str])
    }

    /// What a real run executes, for `--dry-run` (the scale counts depend on what runs then).
    pub(crate) fn commands(&self) -> Vec<Cmd> {
        let mut cmds = Vec::new();
        if self.pull {
            cmds.push(self.compose.cmd(&["pull"], &self.names()));
        }
        if !self.others().is_empty() {
            cmds.push(self.compose.cmd(&["up", "--detach", "--no-build"], &self.others()));
        }
        cmds.push(self.scale_cmd(&self.names().into_iter().map(|s| (s, 2)).collect()));
        if let Some(release) = self.release {
            cmds.push(self.release_cmd(release));
        }
        cmds.extend(self.nginx.commands());
        cmds
    }

    /// Starts beside, checks, switches and drains within `deadline`.
    pub(crate) fn run(&self, deadline: Instant) -> anyhow::Result<Switched> {
        // The ingress first routes to the release pipe switched to, or to nothing.
        for line in super::guard(self.out, self.docker, self.nginx, &self.names())? {
            self.out.warn(line);
        }
        let mut old: BTreeMap<&str, Vec<Box>> = BTreeMap::new();
        for service in self.names() {
            old.insert(service, self.converge(service)?);
        }
        if self.pull {
            self.logged(&self.compose.cmd(&["pull"], &self.names()), deadline)?;
        }
        if !self.others().is_empty() {
            self.logged(&self.compose.cmd(&["up", "--detach", "--no-build"], &self.others()), deadline)?;
        }
        // compose's `--scale` counts every container with the service's labels, a stranger's
        // too: without them it would start nothing new, or stop one of the old release's.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (service, boxes) in &old {
            let strangers = self.listed(service, false, true)?.1;
            counts.insert(*service, boxes.len() + boxes.iter().filter(|b| b.ip.is_some()).count().max(1) + strangers);
        }
        let started = self.logged(&self.scale_cmd(&counts), deadline);
        let mut fresh: BTreeMap<&str, Vec<Box>> = BTreeMap::new();
        let checked = started.and_then(|()| {
            for service in self.names() {
                let known: Vec<&str> = old[service].iter().map(|b| b.id.as_str()).collect();
                let boxes = self.boxes(service)?.into_iter().filter(|b| !known.contains(&b.id.as_str())).collect();
                fresh.insert(service, boxes);
            }
            for (service, boxes) in &fresh {
                if boxes.is_empty() {
                    bail!("`{}` started no new container for `{service}`", self.compose.project);
                }
            }
            if self.pin {
                let pinned = self.pinned();
                let subnet = pinned.ensure()?;
                for b in fresh.values_mut().flatten() {
                    let ip = pinned.attach(&b.id, subnet)?;
                    b.ip = Some(ip);
                }
            }
            for (service, boxes) in &fresh {
                for b in boxes {
                    self.wait_ready(service, b, deadline)?;
                }
            }
            let healthy = crate::clock::precise();
            if let Some(release) = self.release {
                self.out.info(format!("running the release command in `{}`", self.names()[0]));
                let ran = self.logged(&self.release_cmd(release), deadline);
                self.remove_oneoffs();
                ran.context("the release command failed")?;
            }
            Ok(healthy)
        });
        let healthy = match checked {
            Ok(healthy) => healthy,
            Err(err) => {
                self.remove_new(&old);
                return Err(err.context("the new release never took traffic; the old release kept serving"));
            }
        };
        let mut upstreams = Vec::new();
        for (service, boxes) in &fresh {
            let port = self.services[*service];
            let servers = boxes
                .iter()
                .filter_map(|b| Some(Server { addr: format!("{}:{port}", b.ip.as_ref()?), container: b.id.clone() }))
                .collect();
            upstreams.push((service.to_string(), servers));
        }
        if let Err(err) = self.nginx.switch(self.out, &upstreams, &self.note) {
            self.remove_new(&old);
            return Err(err.context("the new release never took traffic; the old release kept serving"));
        }
        let switched = crate::clock::precise();
        self.drain_and_stop(old.values().flatten().map(|b| b.id.clone()).collect());
        Ok(Switched { healthy, switched })
    }

    /// The service's containers that may serve now. A container the ingress does not route
    /// to is left from an interrupted deploy and never took traffic: nginx is first made to
    /// match its files (the interruption may have come between the write and the reload),
    /// then such containers are removed.
    fn converge(&self, service: &str) -> anyhow::Result<Vec<Box>> {
        let boxes = self.boxes(service)?;
        let serving = self.nginx.serving(service)?;
        if serving.is_empty() {
            return Ok(boxes);
        }
        let port = self.services[service];
        let routed = |b: &Box| b.ips.iter().any(|ip| serving.contains(&format!("{ip}:{port}")));
        let (keep, stray): (Vec<Box>, Vec<Box>) = boxes.into_iter().partition(routed);
        if !stray.is_empty() {
            self.out.info(format!(
                "removing {} container(s) of `{service}` left by an interrupted deploy (they never took traffic)",
                stray.len()
            ));
            self.nginx.resync(self.out)?;
            self.remove(&stray.iter().map(|b| b.id.clone()).collect::<Vec<_>>());
        }
        Ok(keep)
    }

    fn wait_ready(&self, service: &str, b: &Box, deadline: Instant) -> anyhow::Result<()> {
        let limit = self.health.and_then(|h| h.timeout).map_or(Duration::from_secs(60), |t| t.0);
        let deadline = deadline.min(Instant::now() + limit);
        let port = self.services[service];
        let path = self.health.and_then(|h| h.url.as_deref()).map(url_path);
        // A redirect is not followed: the container's code (a pull request's, for a preview)
        // would choose where pipe, on the host, sends a request next.
        let client = crate::http::builder(crate::http::Redirects::None)
            .timeout(Duration::from_secs(2))
            .build()
            .context("failed to set up an HTTP client")?;
        let short = &b.id[..12.min(b.id.len())];
        let redactor = &self.compose.redactor;
        let mut last = String::from("not checked yet");
        // Where this host reaches the container's address: itself, or a forward over SSH.
        let mut via: Option<(String, String)> = None;
        while Instant::now() < deadline {
            crate::signals::check()?;
            let now =
                self.inspect(std::slice::from_ref(&b.id))?.pop().ok_or_else(|| anyhow!("container {short} is gone"))?;
            if matches!(now.status.as_str(), "exited" | "dead" | "removing") {
                bail!("new container {short} of `{service}` {}", now.status);
            }
            if now.health == "unhealthy" {
                bail!("new container {short} of `{service}` is unhealthy");
            }
            if let (Some(ip), true) = (&now.ip, matches!(now.health.as_str(), "healthy" | "none")) {
                let reach = match (&via, self.tunnel) {
                    (Some((at, local)), _) if at == ip => local.clone(),
                    (_, Some(link)) => {
                        let local = link.forward(ip, port)?;
                        via = Some((ip.clone(), local.clone()));
                        local
                    }
                    (_, None) => format!("{ip}:{port}"),
                };
                match &path {
                    Some(path) => {
                        let url = format!("http://{ip}:{port}{path}");
                        let answer = match client.get(format!("http://{reach}{path}")).send() {
                            Ok(resp) if resp.status().is_success() => return Ok(()),
                            Ok(resp) => HealthAnswer::answered(&url, resp, redactor),
                            Err(e) => HealthAnswer::failed(&url, &crate::secret::http_cause(&e), redactor),
                        };
                        last = answer.describe();
                        *self.answer.borrow_mut() = Some(answer);
                    }
                    None => {
                        let addr: SocketAddr = reach.parse().context("container address")?;
                        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                            Ok(_) => return Ok(()),
                            Err(e) => {
                                let answer = HealthAnswer::failed(&addr.to_string(), &e.to_string(), redactor);
                                last = answer.describe();
                                *self.answer.borrow_mut() = Some(answer);
                            }
                        }
                    }
                }
            } else {
                last = format!("container {}, health {}", now.status, now.health);
                let answer = HealthAnswer::failed(&format!("container {short}"), &last, redactor);
                *self.answer.borrow_mut() = Some(answer);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("new container {short} of `{service}` was not ready within {}s (last: {last})", limit.as_secs())
    }

    /// Waits `drain` (cut short by a signal: the switch is done), then stops the old containers
    /// (SIGTERM, then SIGKILL after their stop timeout) and removes them.
    fn drain_and_stop(&self, old: Vec<String>) {
        if old.is_empty() {
            return;
        }
        let until = Instant::now() + self.drain;
        while Instant::now() < until && crate::signals::received().is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let stop = self.docker.cmd().arg("stop").args(&old);
        if let Err(e) = exec::capture(self.out, &stop.through_signals(), SHORT) {
            self.out.warn(format!("could not stop the old release's containers: {e:#}"));
        }
        self.remove(&old);
    }

    /// Removes every container of the services that was not there before this deploy.
    fn remove_new(&self, old: &BTreeMap<&str, Vec<Box>>) {
        let mut ids = Vec::new();
        for service in self.names() {
            let known: Vec<&str> = old.get(service).map_or(Vec::new(), |v| v.iter().map(|b| b.id.as_str()).collect());
            match self.ids(service, false, false) {
                Ok(all) => ids.extend(all.into_iter().filter(|id| !known.contains(&id.as_str()))),
                Err(e) => self.out.warn(format!("could not list the new containers of `{service}`: {e:#}")),
            }
        }
        self.remove(&ids);
        self.remove_oneoffs();
    }

    fn remove_oneoffs(&self) {
        if let Ok(ids) = self.ids(self.names()[0], true, false) {
            self.remove(&ids);
        }
    }

    fn remove(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let rm = self.docker.cmd().args(["rm", "--force", "--volumes"]).args(ids);
        if let Err(e) = exec::capture(self.out, &rm.through_signals(), SHORT) {
            self.out.warn(format!("could not remove containers: {e:#}"));
        }
    }

    /// The ids of the service's containers (one-off `run` containers when `oneoff`) that
    /// compose created: labels alone are not enough, since an image's `LABEL`s reach every
    /// container made from it (a legacy build's step containers, a test container), so the
    /// name compose gives must match too ([`made_by_compose`]).
    fn ids(&self, service: &str, oneoff: bool, stop_on_signal: bool) -> anyhow::Result<Vec<String>> {
        Ok(self.listed(service, oneoff, stop_on_signal)?.0)
    }

    /// [`Self::ids`], and how many containers carry the service's labels without being
    /// compose's: compose counts them in `--scale`, so the count asked for includes them.
    fn listed(&self, service: &str, oneoff: bool, stop_on_signal: bool) -> anyhow::Result<(Vec<String>, usize)> {
        let project = self.compose.project.to_lowercase();
        let format = "{{.ID}}\t{{.Names}}\t{{.Label \"com.docker.compose.container-number\"}}";
        let cmd = self.docker.cmd().args(["ps", "--all", "--no-trunc", "--format", format]).args([
            "--filter".to_string(),
            format!("label=com.docker.compose.project={project}"),
            "--filter".to_string(),
            format!("label=com.docker.compose.service={service}"),
            "--filter".to_string(),
            format!("label=com.docker.compose.oneoff={}", if oneoff { "True" } else { "False" }),
        ]);
        let text = if stop_on_signal {
            exec::capture(self.out, &cmd, SHORT)?
        } else {
            exec::capture(self.out, &cmd.through_signals(), SHORT)?
        };
        let (mut ids, mut strangers) = (Vec::new(), 0);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut fields = line.splitn(3, '\t');
            let (id, names, number) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""), fields.next());
            if made_by_compose(&project, service, oneoff, names, number.unwrap_or("").trim()) {
                ids.push(id.trim().to_string());
            } else {
                strangers += 1;
                let short = &id[..12.min(id.len())];
                self.out.detail(format!(
                    "container {short} (`{names}`) carries the labels of `{project}`'s `{service}` but is not one \
                     compose made: left alone"
                ));
            }
        }
        Ok((ids, strangers))
    }

    fn boxes(&self, service: &str) -> anyhow::Result<Vec<Box>> {
        let ids = self.ids(service, false, true)?;
        self.inspect(&ids)
    }

    fn inspect(&self, ids: &[String]) -> anyhow::Result<Vec<Box>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // engine 20.10 has no `.State.Health` key without a health check: read the JSON.
        let format = "{{.Id}}\t{{json .State}}\t{{json .NetworkSettings.Networks}}";
        let cmd = self.docker.cmd().args(["inspect", "--format", format]).args(ids);
        let text = exec::capture(self.out, &cmd, SHORT)?;
        let pinned = self.pin.then(|| self.pinned().network());
        Ok(text.lines().filter_map(|line| parse_box(line, pinned.as_deref())).collect())
    }

    fn pinned(&self) -> Pinned<'_> {
        Pinned { out: self.out, docker: self.docker, project: self.compose.project.clone() }
    }

    fn logged(&self, cmd: &Cmd, deadline: Instant) -> anyhow::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let redactor = &self.compose.redactor;
        let finished = crate::trust::redact::logged(self.out, cmd, self.log, LOG_CAP, left, redactor, &mut |_| {})?;
        finished.check_interrupted()?;
        if finished.success() {
            return Ok(());
        }
        let tail = crate::output::tail_lines(&finished.tail, 10);
        Err(anyhow!("`{cmd}` failed: {}\n{tail}", finished.describe()))
    }
}

/// A container from `docker inspect`; its routed address is the one on `pinned` when it has one.
fn parse_box(line: &str, pinned: Option<&str>) -> Option<Box> {
    let mut fields = line.splitn(3, '\t');
    let id = fields.next()?.trim().to_string();
    let state: serde_json::Value = serde_json::from_str(fields.next()?).ok()?;
    let networks: serde_json::Value = serde_json::from_str(fields.next()?).ok()?;
    let status = state["Status"].as_str().unwrap_or("unknown").to_string();
    let health = state["Health"]["Status"].as_str().unwrap_or("none").to_string();
    // Every address, pipe's own network first, then by network name (a `BTreeMap`).
    let mut on: Vec<(&String, String)> = networks
        .as_object()
        .map(|n| n.iter().filter_map(|(name, v)| Some((name, v["IPAddress"].as_str()?.to_string()))).collect())
        .unwrap_or_default();
    on.retain(|(_, ip)| !ip.is_empty());
    on.sort_by_key(|(name, _)| Some(name.as_str()) != pinned);
    let ips: Vec<String> = on.into_iter().map(|(_, ip)| ip).collect();
    Some(Box { id, status, health, ip: ips.first().cloned(), ips })
}

/// Whether a container with these labels is one compose created for `project`'s `service`:
/// its name is compose's (`PROJECT-SERVICE-N` for compose v2, `PROJECT_SERVICE_N` for v1, with
/// `N` its `com.docker.compose.container-number` label; a one-off's `PROJECT-SERVICE-run-…`).
/// A build step's or test's container gets a name the engine or pipe chooses, never these.
fn made_by_compose(project: &str, service: &str, oneoff: bool, names: &str, number: &str) -> bool {
    names.split(',').map(|n| n.trim().trim_start_matches('/')).any(|name| {
        ['-', '_'].into_iter().any(|sep| {
            let Some(rest) = name.strip_prefix(&format!("{project}{sep}{service}{sep}")) else { return false };
            if oneoff {
                rest.strip_prefix("run").is_some_and(|r| r.starts_with(sep) && r.len() > 1)
            } else {
                !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) && rest == number
            }
        })
    })
}

/// The path (and query) of a health URL, asked of a container directly.
fn url_path(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_lines_are_parsed() {
        let line = "abc\t{\"Status\":\"running\"}\t{\"p_default\":{\"IPAddress\":\"172.18.0.3\"}}";
        let b = parse_box(line, None).unwrap();
        assert_eq!((b.id.as_str(), b.status.as_str(), b.health.as_str()), ("abc", "running", "none"));
        assert_eq!(b.ip.as_deref(), Some("172.18.0.3"));
        let b = parse_box("abc\t{\"Status\":\"exited\",\"Health\":{\"Status\":\"unhealthy\"}}\t{}", None).unwrap();
        assert_eq!((b.health.as_str(), b.ip), ("unhealthy", None));
    }

    #[test]
    fn the_routed_address_is_the_one_on_pipes_network() {
        let line = "abc\t{\"Status\":\"running\"}\t{\"a_default\":{\"IPAddress\":\"172.18.0.3\"},\"pipe-ingress-a\":{\"IPAddress\":\"172.19.128.2\"}}";
        let b = parse_box(line, Some("pipe-ingress-a")).unwrap();
        assert_eq!(b.ip.as_deref(), Some("172.19.128.2"));
        assert_eq!(b.ips, ["172.19.128.2", "172.18.0.3"]);
        assert_eq!(parse_box(line, None).unwrap().ip.as_deref(), Some("172.18.0.3"));
    }

    #[test]
    fn only_containers_compose_named_count_as_the_services() {
        assert!(made_by_compose("shop", "web", false, "shop-web-2", "2"));
        assert!(made_by_compose("shop", "web", false, "shop_web_1", "1"));
        assert!(made_by_compose("shop", "web", true, "shop_web_run_3f2a1b", ""));
        assert!(made_by_compose("shop", "web", true, "shop-web-run-3f2a1b", "1"));
        // A build step's container with the service's labels: a name the engine chose.
        assert!(!made_by_compose("shop", "web", false, "hopeful_turing", "1"));
        // A number label that is not the one in the name, or none at all.
        assert!(!made_by_compose("shop", "web", false, "shop-web-2", "3"));
        assert!(!made_by_compose("shop", "web", false, "shop-web-2", ""));
        // Another service or project whose name starts alike.
        assert!(!made_by_compose("shop", "web", false, "shop-web-api-1", "1"));
        assert!(!made_by_compose("shop", "web", false, "shopx-web-1", "1"));
        assert!(!made_by_compose("shop", "web", true, "shop-web-1", "1"));
    }

    #[test]
    fn the_health_path_is_kept_and_the_host_dropped() {
        assert_eq!(url_path("http://web.devel.example.com/health?deep=1"), "/health?deep=1");
        assert_eq!(url_path("http://127.0.0.1:8080"), "/");
    }
}
