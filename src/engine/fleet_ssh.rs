//! The SSH model of a fleet: a compose target whose `ssh.hosts` have Docker, nginx and sshd,
//! and no pipe. Each host gets one master connection (`targets::ssh::Link`), opened when the
//! fleet asks whether the host can be reached and closed when the deploy ends; its rollout is
//! `targets::rollout` — start beside, check each new container through the link, switch the
//! host's own nginx, drain — with docker and compose run here against the host's engine. The
//! order, the all-or-nothing rollback and the record are `fleet`'s.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::anyhow;

use super::fleet::{Hosts, Ship};
use crate::config::{Ingress, SshHosts};
use crate::docker::client::Docker;
use crate::output::Output;
use crate::targets::rollout::{Place, Rollout, Shipment, Target};
use crate::targets::ssh::{Link, Unreached};
use crate::trust::redact::Redactor;

/// The `PIPE_*` variables of a shipment, shareable across the hosts' threads.
pub(crate) type SharedExports<'a> = &'a (dyn Fn(&Shipment) -> Vec<(String, String)> + Sync);

/// A compose target's hosts over SSH, each connected once for the whole deploy.
pub(crate) struct SshFleet<'a> {
    pub out: Output,
    pub ssh: &'a SshHosts,
    /// The target as the rollout sees it (its compose file, ingress services, health, drain).
    pub target: &'a Target<'a>,
    /// This host's `[ingress]` with the hosts' upstream directory and nginx command.
    pub ingress: Ingress,
    pub docker: Docker,
    pub project: &'a str,
    pub compose_project: &'a str,
    /// Each host's own deploy history (its rollouts) goes here, one file per host.
    pub histories: PathBuf,
    pub log: PathBuf,
    pub swarm_dir: PathBuf,
    /// Where the links' control and Docker sockets are made (`WORKSPACE/ssh`).
    pub sockets: PathBuf,
    pub exports: SharedExports<'a>,
    /// The target's own `env`, read, and its secrets to mask.
    pub own: (Vec<(String, String)>, Redactor),
    links: Vec<OnceLock<Link>>,
}

impl<'a> SshFleet<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        out: Output,
        ssh: &'a SshHosts,
        target: &'a Target<'a>,
        ingress: &Ingress,
        docker: Docker,
        (project, compose_project): (&'a str, &'a str),
        (histories, log, swarm_dir, sockets): (PathBuf, PathBuf, PathBuf, PathBuf),
        exports: SharedExports<'a>,
        own: (Vec<(String, String)>, Redactor),
    ) -> SshFleet<'a> {
        let ingress = Ingress { upstreams: Some(ssh.upstreams.clone()), nginx: ssh.nginx.clone(), ..ingress.clone() };
        SshFleet {
            out,
            ssh,
            target,
            ingress,
            docker,
            project,
            compose_project,
            histories,
            log,
            swarm_dir,
            sockets,
            exports,
            own,
            links: ssh.hosts.iter().map(|_| OnceLock::new()).collect(),
        }
    }
}

impl Hosts for SshFleet<'_> {
    fn names(&self) -> &[String] {
        &self.ssh.hosts
    }

    fn batch(&self) -> usize {
        self.ssh.batch_size()
    }

    fn skip_unreachable(&self) -> bool {
        self.ssh.skip_unreachable
    }

    fn reach(&self, i: usize) -> Result<(), Unreached> {
        let dir = self.sockets.join(format!("{}-{i}", std::process::id()));
        let link = Link::open(&self.out, &self.ssh.hosts[i], self.ssh, &dir)?;
        let _ = self.links[i].set(link);
        Ok(())
    }

    fn ship(&self, i: usize, ship: &Ship<'_>) -> anyhow::Result<()> {
        let spec = &self.ssh.hosts[i];
        let link = self.links[i].get().ok_or_else(|| anyhow!("host `{spec}` is not connected"))?;
        let docker = self.docker.on(link.docker_host());
        let owner = format!("{} on {spec}", self.project);
        let place = Place {
            out: &self.out,
            docker: &docker,
            ingress: &self.ingress,
            owner: &owner,
            project: self.project,
            compose_project: self.compose_project,
            refname: ship.refname,
            history: self.histories.join(format!("{}.toml", file_key(spec))),
            log: self.log.clone(),
            swarm_dir: self.swarm_dir.clone(),
            remote: Some(link),
        };
        let exports = |s: &Shipment| (self.exports)(s);
        let rollout = Rollout::new(&place, self.target, ship.release, &exports, self.own.clone());
        rollout.run().map(|_| ())
    }
}

/// A host's name as a file name: `ssh://deploy@10.0.0.5:22` → `deploy@10.0.0.5_22`.
fn file_key(spec: &str) -> String {
    let bare = spec.strip_prefix("ssh://").unwrap_or(spec);
    bare.chars().map(|c| if c.is_ascii_alphanumeric() || "@.-".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::file_key;

    #[test]
    fn a_hosts_history_is_named_after_it() {
        assert_eq!(file_key("ssh://deploy@10.0.0.5:2222"), "deploy@10.0.0.5_2222");
        assert_eq!(file_key("ssh://web1.example.com"), "web1.example.com");
    }
}
