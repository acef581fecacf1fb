//! The switched ingress survives what happens behind pipe's back. An upstream file records the
//! containers pipe switched to (`# pipe-release ID ADDRESS`); the guard asks the engine about
//! each by id, not by address: a container still running at its address keeps its traffic, one
//! that has another fixed address on pipe's network now is followed there (never to an address
//! on another network: a moment ago it may have been another container's), and when none of
//! them runs (removed by hand, stopped, an engine restart before its restart
//! policy brought it back) the group fails closed — one `down` server, nginx answers 502 and
//! logs "no live upstreams" — never whichever container holds the address now. It runs before
//! every deploy of a target (`beside`) and, in `pipe serve`, every 2 s between a hook's runs.

use std::time::Duration;

use super::ingress::Nginx;
use super::pinned::PREFIX as PINNED;
use crate::docker::client::Docker;
use crate::error::ProcessFailed;
use crate::exec;
use crate::nginx;
use crate::output::Output;

/// What the engine says of one container pipe switched to.
enum Seen {
    /// Running: its address on each network, and those on pipe's own networks (`pinned`).
    Running { all: Vec<String>, pinned: Vec<String> },
    /// Not running, or gone.
    Away(&'static str),
}

/// Checks the upstream files of `services` against the engine, rewrites those that route
/// elsewhere than to the release pipe switched to, and reloads nginx when one changed.
/// Returns what it changed, one line each, for the caller to log. An engine that does not answer changes nothing.
pub(crate) fn guard(
    out: &Output,
    docker: &Docker,
    nginx: &Nginx<'_>,
    services: &[&str],
) -> anyhow::Result<Vec<String>> {
    let mut changed = Vec::new();
    for service in services {
        let path = nginx::upstream_file(nginx.dir, &nginx.key(service));
        let Ok(Some(text)) = nginx.read(&path) else { continue };
        let releases = nginx::parse_releases(&text);
        if releases.is_empty() {
            continue;
        }
        let mut addrs = Vec::new();
        let mut why = Vec::new();
        for release in &releases {
            let short = &release.container[..12.min(release.container.len())];
            let (ip, port) = release.addr.rsplit_once(':').unwrap_or((&release.addr, ""));
            match seen(out, docker, &release.container)? {
                Seen::Running { all, .. } if all.iter().any(|i| i == ip) => addrs.push(release.addr.clone()),
                // A fixed address is the container's alone; any other it has now may have
                // been someone else's a moment ago (an engine restoring its networks).
                Seen::Running { pinned, .. } => match pinned.first() {
                    Some(now) => addrs.push(format!("{now}:{port}")),
                    None => {
                        why.push(format!("container {short} of the release pipe switched to is not at its address"))
                    }
                },
                Seen::Away(what) => why.push(format!("container {short} of the release pipe switched to {what}")),
            }
        }
        if addrs == nginx::parse_upstream(&text) {
            continue;
        }
        let why = why.join("; ");
        let rerouted = nginx::reroute(&text, &addrs, &why);
        nginx.write(&path, &rerouted)?;
        changed.push(if addrs.is_empty() {
            format!("ingress `{service}` failed closed (nginx answers 502): {why}")
        } else {
            format!("ingress `{service}` follows the release pipe switched to: now {}", addrs.join(", "))
        });
    }
    if !changed.is_empty() {
        nginx.resync(out)?;
    }
    Ok(changed)
}

/// The container's state by id. An engine that does not answer is an error: nothing is
/// decided on it.
fn seen(out: &Output, docker: &Docker, id: &str) -> anyhow::Result<Seen> {
    let format =
        "{{.State.Running}} {{range $net, $on := .NetworkSettings.Networks}}{{$net}}={{$on.IPAddress}} {{end}}";
    let cmd = docker.cmd().args(["inspect", "--type", "container", "--format", format, id]);
    match exec::capture(out, &cmd, Duration::from_secs(30)) {
        Ok(text) => {
            let mut words = text.split_whitespace();
            match words.next() {
                Some("true") => {
                    let on: Vec<(&str, &str)> =
                        words.filter_map(|w| w.split_once('=')).filter(|(_, ip)| !ip.is_empty()).collect();
                    let all = on.iter().map(|(_, ip)| ip.to_string()).collect();
                    let pinned = on.iter().filter(|(net, _)| net.starts_with(PINNED)).map(|(_, ip)| ip.to_string());
                    Ok(Seen::Running { all, pinned: pinned.collect() })
                }
                _ => Ok(Seen::Away("is not running")),
            }
        }
        Err(e) if e.downcast_ref::<ProcessFailed>().is_some_and(|p| p.output_tail.contains("No such")) => {
            Ok(Seen::Away("is gone"))
        }
        Err(e) => Err(e),
    }
}
