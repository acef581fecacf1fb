//! Fixed addresses for the containers the ingress routes to. Each switched compose project gets
//! a network pipe owns, `pipe-ingress-PROJECT`, on a subnet Docker picks from its pools, whose
//! dynamic range (`--ip-range`) is only the subnet's lower half; each release container joins
//! it with a static address from the upper half. Docker keeps a static address in the
//! container's own configuration, so an engine restart or a host reboot gives the container
//! the same address back, and no other container joining the network (nginx in a container, a
//! debugging shell) is ever handed an address of the upper half. The upstream files name these
//! addresses; `guard` checks the containers behind them by id.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use crate::docker::client::Docker;
use crate::exec;
use crate::output::Output;

const SHORT: Duration = Duration::from_secs(60);
/// The start of the name of every network of fixed addresses.
pub(crate) const PREFIX: &str = "pipe-ingress-";

/// The network of one compose project's routed containers.
pub(crate) struct Pinned<'a> {
    pub out: &'a Output,
    pub docker: &'a Docker,
    pub project: String,
}

/// An IPv4 subnet: base address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Subnet {
    base: u32,
    prefix: u32,
}

impl Subnet {
    pub(crate) fn parse(text: &str) -> Option<Subnet> {
        let (ip, prefix) = text.trim().split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u32 = prefix.parse().ok()?;
        (8..=28).contains(&prefix).then_some(Subnet { base: u32::from(ip) & (u32::MAX << (32 - prefix)), prefix })
    }

    /// The lower half: the network's dynamic range.
    pub(crate) fn lower(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix + 1)
    }

    /// The static addresses, lowest first: the upper half from its third address (never one
    /// ending in `.0`) to the one before its broadcast address.
    fn statics(&self) -> impl Iterator<Item = Ipv4Addr> {
        let size = 1u32 << (32 - self.prefix);
        (self.base + size / 2 + 2..self.base + size - 1).map(Ipv4Addr::from)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl Pinned<'_> {
    /// The network's name: `pipe-ingress-` and the compose project.
    pub(crate) fn network(&self) -> String {
        format!("{PREFIX}{}", self.project.to_lowercase())
    }

    /// The network's subnet, creating the network when it is missing.
    pub(crate) fn ensure(&self) -> anyhow::Result<Subnet> {
        let name = self.network();
        for _ in 0..3 {
            if let Some(subnet) = self.existing(&name)? {
                return Ok(subnet);
            }
            // Docker picks a free subnet from its pools; the network is then made again on
            // that subnet with only its lower half dynamic. Another network taking the subnet
            // in between makes the second create fail: then try again.
            let labels = ["--label", "pipe.ingress=true", "--label"];
            let project = format!("com.docker.compose.project={}", self.project.to_lowercase());
            let probe = self.docker.cmd().args(["network", "create"]).args(labels).arg(&project).arg(&name);
            exec::capture(self.out, &probe, SHORT).with_context(|| format!("cannot create network `{name}`"))?;
            let subnet = self.existing_subnet(&name)?;
            let rm = self.docker.cmd().args(["network", "rm", &name]);
            exec::capture(self.out, &rm, SHORT)?;
            let Some(subnet) = subnet else { bail!("Docker gave network `{name}` no IPv4 subnet") };
            let create = self
                .docker
                .cmd()
                .args(["network", "create", "--subnet", &subnet.to_string(), "--ip-range", &subnet.lower()])
                .args(labels)
                .arg(&project)
                .arg(&name);
            if exec::capture(self.out, &create, SHORT).is_ok() {
                return Ok(subnet);
            }
        }
        Err(anyhow!("cannot create network `{name}` with a subnet of its own"))
    }

    /// The subnet of an existing network of pipe's (with its dynamic range set).
    fn existing(&self, name: &str) -> anyhow::Result<Option<Subnet>> {
        let cmd = self.docker.cmd().args(["network", "ls", "--quiet", "--filter", &format!("name=^{name}$")]);
        if exec::capture(self.out, &cmd, SHORT)?.trim().is_empty() {
            return Ok(None);
        }
        let format = "{{range .IPAM.Config}}{{.Subnet}} {{.IPRange}};{{end}}";
        let cmd = self.docker.cmd().args(["network", "inspect", "--format", format, name]);
        let text = exec::capture(self.out, &cmd, SHORT)?;
        for config in text.split(';') {
            if let Some((subnet, range)) = config.trim().split_once(' ')
                && let Some(subnet) = Subnet::parse(subnet)
                && range.trim() == subnet.lower()
            {
                return Ok(Some(subnet));
            }
        }
        bail!(
            "network `{name}` exists but is not one pipe made (no dynamic range on the lower half of its subnet); remove it"
        )
    }

    fn existing_subnet(&self, name: &str) -> anyhow::Result<Option<Subnet>> {
        let cmd = self.docker.cmd().args([
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
            name,
        ]);
        Ok(exec::capture(self.out, &cmd, SHORT)?.split_whitespace().find_map(Subnet::parse))
    }

    /// Connects container `id` with the lowest static address no container on the network
    /// holds; returns the address.
    pub(crate) fn attach(&self, id: &str, subnet: Subnet) -> anyhow::Result<String> {
        let name = self.network();
        let format = "{{range .Containers}}{{.IPv4Address}} {{end}}";
        let cmd = self.docker.cmd().args(["network", "inspect", "--format", format, &name]);
        let held = exec::capture(self.out, &cmd, SHORT)?;
        let held: Vec<&str> = held.split_whitespace().filter_map(|a| a.split('/').next()).collect();
        let mut tried = 0;
        for ip in subnet.statics().map(|ip| ip.to_string()).filter(|ip| !held.contains(&ip.as_str())) {
            let connect = self.docker.cmd().args(["network", "connect", "--ip", &ip, &name, id]);
            match exec::capture(self.out, &connect, SHORT) {
                Ok(_) => return Ok(ip),
                // A stopped container may keep a static address it is not using now.
                Err(_) if tried < 8 => tried += 1,
                Err(e) => return Err(e.context(format!("cannot give container {id} an address on `{name}`"))),
            }
        }
        bail!("network `{name}` has no static address left")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dynamic_range_is_the_lower_half_and_static_addresses_the_upper() {
        let s = Subnet::parse("172.20.0.0/16").unwrap();
        assert_eq!(s.lower(), "172.20.0.0/17");
        let mut statics = s.statics();
        assert_eq!(statics.next(), Some(Ipv4Addr::new(172, 20, 128, 2)));
        assert_eq!(s.statics().last(), Some(Ipv4Addr::new(172, 20, 255, 254)));
        let small = Subnet::parse("192.168.16.0/20").unwrap();
        assert_eq!(
            (small.lower().as_str(), small.statics().next()),
            ("192.168.16.0/21", Some(Ipv4Addr::new(192, 168, 24, 2)))
        );
        assert_eq!(Subnet::parse("fd00::/64"), None);
    }
}
