//! Networks for untrusted code that reach the internet but neither the host nor the LAN: a
//! bridge per build or test, with a name pipe chooses, and iptables rules on that bridge for as
//! long as it lives (the host's INPUT refused; forwarding to private and special ranges
//! refused, except DNS to the host's own resolvers). An internal network (`--internal`: a test's
//! services without `egress`) is refused everything beyond its bridge, DNS included: Docker's
//! embedded DNS forwards a container's lookups from the container's own address, through the
//! bridge's gateway, and on Docker 20.10 an internal network still has that route.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context as _;
use sha2::Digest as _;

use crate::docker::client::Docker;
use crate::exec::{self, Cmd};
use crate::output::Output;

/// Every IPv4 range that is not the public internet: RFC 1918, shared address space, link
/// local, the documentation and benchmark nets, multicast and reserved. Traffic from an
/// isolated bridge to these is refused (the bridge's own traffic excepted).
pub(crate) const NOT_PUBLIC: &str = "10.0.0.0/8,100.64.0.0/10,169.254.0.0/16,172.16.0.0/12,192.0.0.0/24,\
192.0.2.0/24,192.168.0.0/16,198.18.0.0/15,198.51.100.0/24,203.0.113.0/24,224.0.0.0/4,240.0.0.0/4";

/// The comment on every rule pipe inserts: how an operator (and pipe's sweep) recognises them.
const COMMENT: &str = "pipe isolation";

/// The iptables program (`PIPE_IPTABLES`, default `iptables`), or for IPv6 `PIPE_IP6TABLES`
/// (default `ip6tables`): the seam for failure-injection tests, as `PIPE_DOCKER` is.
fn program(v6: bool) -> OsString {
    let (var, default) = if v6 { ("PIPE_IP6TABLES", "ip6tables") } else { ("PIPE_IPTABLES", "iptables") };
    std::env::var_os(var).filter(|p| !p.is_empty()).unwrap_or_else(|| default.into())
}

fn iptables() -> OsString {
    program(false)
}

/// Why this host cannot firewall a bridge, or `None` when it can: pipe must run as root or
/// with `CAP_NET_ADMIN` (the packaged units' `AmbientCapabilities=`), and find `iptables`.
pub(crate) fn unenforceable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 && !has_net_admin() {
        return Some("pipe runs neither as root nor with CAP_NET_ADMIN, so it cannot add firewall rules".into());
    }
    if !exec::available(&iptables()) {
        return Some(format!("`{}` is not installed", iptables().to_string_lossy()));
    }
    None
}

/// Whether `CAP_NET_ADMIN` (bit 12) is in this process's effective set, which iptables
/// inherits through the ambient set: all its nf_tables backend needs.
fn has_net_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim);
    eff.and_then(|hex| u64::from_str_radix(hex, 16).ok()).is_some_and(|caps| caps & (1 << 12) != 0)
}

/// One rule: which program, which chain, and the match and target (without `-I`/`-D`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub v6: bool,
    pub chain: String,
    pub spec: Vec<String>,
}

impl Rule {
    fn argv(&self, action: &str) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec!["-w".into(), action.into(), self.chain.clone().into()];
        argv.extend(self.spec.iter().map(OsString::from));
        argv
    }

    fn cmd(&self, action: &str) -> Cmd {
        Cmd::new(program(self.v6)).args(self.argv(action)).through_signals()
    }
}

/// Where a bridge's containers may go beyond it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// The internet and the host's resolvers on port 53; not the host, not private ranges.
    Internet,
    /// Nowhere: no resolver, no gateway, no address off the bridge, by any protocol.
    Bridge,
}

/// The rules that isolate `bridge`, in the order they are inserted (each `-I` goes on top, so
/// the DNS exceptions, inserted last, are matched first). `forward` is the chain Docker leaves
/// to its users (`DOCKER-USER`), else `FORWARD`.
pub(crate) fn rules(bridge: &str, forward: &str, reach: Reach, resolvers: &[Ipv4Addr], v6: bool) -> Vec<Rule> {
    let rule = |v6: bool, chain: &str, matches: &[&str], target: &str| {
        let mut spec: Vec<String> = matches.iter().map(|w| w.to_string()).collect();
        spec.extend(["-m", "comment", "--comment", COMMENT, "-j", target].map(String::from));
        Rule { v6, chain: chain.into(), spec }
    };
    if reach == Reach::Bridge {
        let mut rules = vec![
            rule(false, "INPUT", &["-i", bridge], "REJECT"),
            rule(false, forward, &["-i", bridge, "!", "-o", bridge], "REJECT"),
        ];
        if v6 {
            rules.push(rule(true, "INPUT", &["-i", bridge], "REJECT"));
            rules.push(rule(true, "FORWARD", &["-i", bridge, "!", "-o", bridge], "REJECT"));
        }
        return rules;
    }
    let mut rules = vec![
        rule(false, "INPUT", &["-i", bridge], "REJECT"),
        rule(false, forward, &["-i", bridge, "!", "-o", bridge, "-d", NOT_PUBLIC], "REJECT"),
    ];
    for resolver in resolvers.iter().filter(|r| !r.is_loopback()) {
        let address = resolver.to_string();
        for proto in ["udp", "tcp"] {
            rules.push(rule(false, forward, &["-i", bridge, "-d", &address, "-p", proto, "--dport", "53"], "ACCEPT"));
        }
    }
    if v6 {
        rules.push(rule(true, "INPUT", &["-i", bridge], "REJECT"));
    }
    rules
}

/// The name servers Docker's embedded DNS forwards to: `/etc/resolv.conf`'s (or the file
/// `PIPE_RESOLV_CONF` names, for a daemon given other servers), or where that holds only a
/// local stub (systemd-resolved's 127.0.0.53), the upstream servers behind it, as Docker itself
/// reads them.
fn host_resolvers() -> Vec<Ipv4Addr> {
    let read = |path: &str| resolvers(&std::fs::read_to_string(path).unwrap_or_default());
    if let Some(path) = std::env::var_os("PIPE_RESOLV_CONF").filter(|p| !p.is_empty()) {
        return resolvers(&std::fs::read_to_string(path).unwrap_or_default());
    }
    let found = read("/etc/resolv.conf");
    if found.iter().any(|r| !r.is_loopback()) {
        return found;
    }
    read("/run/systemd/resolve/resolv.conf")
}

/// The IPv4 name servers of `resolv.conf`'s text: Docker's embedded DNS forwards to them from
/// the container's network, so they must stay reachable.
pub(crate) fn resolvers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

/// The bridge device of the network `name`: `pipe` and 11 hex digits of its hash (a Linux
/// interface name holds 15 bytes).
pub(crate) fn bridge_name(name: &str) -> String {
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("pipe{}", &hex[..11])
}

/// What a network pipe creates for untrusted code looks like.
pub(crate) struct NetworkSpec<'a> {
    pub name: &'a str,
    /// No route beyond the bridge at all (`--internal`).
    pub internal: bool,
    /// `pipe.network` label: `build` or `test`.
    pub purpose: &'a str,
    /// Add the firewall rules (the host can enforce them).
    pub firewall: bool,
}

/// A network pipe created, with its rules; both removed on drop (after a failure or a signal
/// too: the commands run through signals).
pub(crate) struct Isolated {
    out: Output,
    docker: Docker,
    pub name: String,
    pub bridge: String,
    reach: Reach,
    installed: Vec<Rule>,
}

impl Isolated {
    /// Creates the network, then its rules, so a rule whose bridge is gone is known stale.
    pub(crate) fn create(out: Output, docker: &Docker, spec: &NetworkSpec<'_>) -> anyhow::Result<Isolated> {
        sweep_networks(&out, docker);
        let bridge = bridge_name(spec.name);
        let mut create = docker.cmd().args([
            "network".to_string(),
            "create".into(),
            "--driver".into(),
            "bridge".into(),
            "--label".into(),
            format!("pipe.network={}", spec.purpose),
            "--label".into(),
            format!("{OWNER_LABEL}={}", owner(std::process::id())),
            "--opt".into(),
            format!("com.docker.network.bridge.name={bridge}"),
        ]);
        if spec.internal {
            create = create.arg("--internal");
        }
        let create = create.arg(spec.name);
        exec::capture(&out, &create, Duration::from_secs(60))
            .with_context(|| format!("failed to create the network `{}`", spec.name))?;
        let reach = if spec.internal { Reach::Bridge } else { Reach::Internet };
        let mut network =
            Isolated { out, docker: docker.clone(), name: spec.name.to_string(), bridge, reach, installed: Vec::new() };
        if spec.firewall {
            network.firewall()?;
        }
        Ok(network)
    }

    fn firewall(&mut self) -> anyhow::Result<()> {
        sweep(&self.out);
        for rule in host_rules(&self.out, &self.bridge, self.reach, false) {
            match exec::capture(&self.out, &rule.cmd("-I"), Duration::from_secs(30)) {
                Ok(_) => self.installed.push(rule),
                // Without IPv6 filtering in the kernel there is no IPv6 on the bridge to filter.
                Err(err) if rule.v6 => self.out.detail(format!("no IPv6 rule for `{}`: {err:#}", self.bridge)),
                Err(err) => {
                    return Err(err.context(format!("failed to isolate the network `{}` with iptables", self.name)));
                }
            }
        }
        Ok(())
    }
}

/// The rules for `bridge` on this host, in the order they are inserted: the forwarding chain,
/// resolvers and IPv6 as found now. With `answers` (the host opens connections to the bridge's
/// containers: nginx to a preview) the answers to those connections are let in.
fn host_rules(out: &Output, bridge: &str, reach: Reach, answers: bool) -> Vec<Rule> {
    let probe = Cmd::new(iptables()).args(["-w", "-S", "DOCKER-USER"]);
    let forward = if exec::capture(out, &probe, Duration::from_secs(30)).is_ok() { "DOCKER-USER" } else { "FORWARD" };
    let v6 = std::path::Path::new("/proc/net/if_inet6").exists();
    let mut rules = rules(bridge, forward, reach, &host_resolvers(), v6);
    if answers {
        let spec = ["-i", bridge, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-m", "comment", "--comment"];
        let mut spec: Vec<String> = spec.iter().map(|w| w.to_string()).collect();
        spec.extend([COMMENT, "-j", "ACCEPT"].map(String::from));
        rules.push(Rule { v6: false, chain: "INPUT".into(), spec });
    }
    rules
}

/// Firewalls a long-lived bridge that pipe names but compose creates (a preview's network),
/// with the rules of [`rules`] plus the answers to the host's own connections. Called before
/// its containers start (a rule names the interface, which need not exist yet) and after (a
/// sweep by another pipe may have taken rules whose bridge did not exist yet): when any rule is
/// missing, all are put back in order, so a redeploy never adds one twice.
pub(crate) fn ensure_firewall(out: &Output, bridge: &str) -> anyhow::Result<()> {
    let rules = host_rules(out, bridge, Reach::Internet, true);
    let present = |r: &Rule| exec::capture(out, &r.cmd("-C"), Duration::from_secs(30)).is_ok();
    if rules.iter().filter(|r| !r.v6).all(present) {
        return Ok(());
    }
    remove_rules(out, &rules);
    for rule in &rules {
        match exec::capture(out, &rule.cmd("-I"), Duration::from_secs(30)) {
            Ok(_) => {}
            Err(err) if rule.v6 => out.detail(format!("no IPv6 rule for `{bridge}`: {err:#}")),
            Err(err) => return Err(err.context(format!("failed to isolate the bridge `{bridge}` with iptables"))),
        }
    }
    Ok(())
}

/// Removes what [`ensure_firewall`] added for `bridge` (a preview torn down); rules that are not
/// there are no error.
pub(crate) fn remove_firewall(out: &Output, bridge: &str) {
    remove_rules(out, &host_rules(out, bridge, Reach::Internet, true));
}

fn remove_rules(out: &Output, rules: &[Rule]) {
    for rule in rules {
        // Every copy: at most a few, however they came.
        for _ in 0..4 {
            if exec::capture(out, &rule.cmd("-D"), Duration::from_secs(30)).is_err() {
                break;
            }
        }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        for rule in self.installed.iter().rev() {
            if let Err(err) = exec::capture(&self.out, &rule.cmd("-D"), Duration::from_secs(30)) {
                self.out.warn(format!("could not remove a firewall rule of `{}`: {err:#}", self.bridge));
            }
        }
        let rm = self.docker.cmd().args(["network", "rm", &self.name]).through_signals();
        if let Err(err) = exec::capture(&self.out, &rm, Duration::from_secs(60)) {
            self.out.warn(format!("could not remove the network `{}`: {err:#}", self.name));
        }
    }
}

/// The label naming the process that made a network: `HOST:PID:START` (START: the process's
/// start time in clock ticks since boot, so a reused PID is not taken for the owner).
const OWNER_LABEL: &str = "pipe.owner";

/// This host's name and `pid`'s start time, as [`OWNER_LABEL`] writes them; `None` for a
/// process that does not exist.
fn owner_of(pid: u32) -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The second field, `(comm)`, may hold spaces; the start time is the 20th after it.
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.to_string();
    Some(format!("{}:{pid}:{start}", host.trim()))
}

fn owner(pid: u32) -> String {
    owner_of(pid).unwrap_or_else(|| format!("?:{pid}:?"))
}

/// Whether the owner label `label` names a process of this host that is gone: its network was
/// left by a pipe killed outright.
fn owner_gone(label: &str) -> bool {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut parts = label.splitn(3, ':');
    let (Some(h), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else { return false };
    if h != host.trim() {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else { return false };
    owner_of(pid).as_deref() != Some(label)
}

/// Removes networks pipe made for isolation whose owner process on this host is gone (a pipe
/// killed outright), so they cannot pile up and exhaust Docker's address pools. One with a
/// container still attached is refused by Docker and left.
fn sweep_networks(out: &Output, docker: &Docker) {
    let list = docker.cmd().args([
        "network".to_string(),
        "ls".into(),
        "--filter".into(),
        format!("label={OWNER_LABEL}"),
        "--format".into(),
        format!("{{{{.Name}}}}\t{{{{.Label \"{OWNER_LABEL}\"}}}}"),
    ]);
    let Ok(listing) = exec::capture(out, &list, Duration::from_secs(30)) else { return };
    for line in listing.lines() {
        let Some((name, label)) = line.split_once('\t') else { continue };
        if owner_gone(label.trim()) {
            let rm = docker.cmd().args(["network", "rm", name]);
            let _ = exec::capture(out, &rm, Duration::from_secs(60));
        }
    }
}

/// Removes pipe's rules whose bridge no longer exists (left by a pipe killed outright). A rule
/// is inserted only after its bridge exists, so a live run's rules are never taken.
fn sweep(out: &Output) {
    for (v6, chain) in
        [(false, "INPUT"), (false, "DOCKER-USER"), (false, "FORWARD"), (true, "INPUT"), (true, "FORWARD")]
    {
        let probe = Rule { v6, chain: chain.into(), spec: Vec::new() };
        let list = probe.cmd("-S");
        let Ok(listing) = exec::capture(out, &list, Duration::from_secs(30)) else { continue };
        for line in stale(&listing, |bridge| std::path::Path::new("/sys/class/net").join(bridge).exists()) {
            let rule = Rule { v6, chain: chain.into(), spec: line };
            let _ = exec::capture(out, &rule.cmd("-D"), Duration::from_secs(30));
        }
    }
}

/// The specs of pipe's rules in an `iptables -S CHAIN` listing whose bridge does not exist.
fn stale(listing: &str, exists: impl Fn(&str) -> bool) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for line in listing.lines() {
        if !line.contains(COMMENT) {
            continue;
        }
        let words = shell_words(line);
        // `-A CHAIN …`
        let Some(spec) = words.get(2..) else { continue };
        let bridge = spec.iter().position(|w| w == "-i").and_then(|i| spec.get(i + 1));
        if let Some(bridge) = bridge
            && bridge.starts_with("pipe")
            && !exists(bridge)
        {
            found.push(spec.to_vec());
        }
    }
    found
}

/// Words of an `iptables -S` line, where only the comment is quoted.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            words.push(quoted[..end].to_string());
            rest = quoted.get(end + 1..).unwrap_or("").trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            words.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_refuse_the_host_and_private_ranges_but_keep_the_bridge_and_dns() {
        let resolvers = [Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::LOCALHOST];
        let rules = rules("pipeabc", "DOCKER-USER", Reach::Internet, &resolvers, true);
        let lines: Vec<String> = rules.iter().map(|r| format!("{} {}", r.chain, r.spec.join(" "))).collect();
        assert_eq!(lines[0], "INPUT -i pipeabc -m comment --comment pipe isolation -j REJECT");
        assert_eq!(
            lines[1],
            format!(
                "DOCKER-USER -i pipeabc ! -o pipeabc -d {NOT_PUBLIC} -m comment --comment pipe isolation -j REJECT"
            )
        );
        assert!(lines[2].contains("-d 10.0.0.53 -p udp --dport 53") && lines[2].ends_with("-j ACCEPT"));
        assert!(lines[3].contains("-p tcp"));
        assert_eq!(rules.len(), 5, "loopback resolvers need no exception: {lines:?}");
        assert!(rules[4].v6 && rules[4].chain == "INPUT");
    }

    #[test]
    fn an_internal_bridge_is_refused_everything_beyond_it_dns_included() {
        let resolvers = [Ipv4Addr::new(10, 0, 0, 53)];
        let rules = rules("pipeabc", "DOCKER-USER", Reach::Bridge, &resolvers, true);
        let lines: Vec<String> = rules.iter().map(|r| format!("{} {}", r.chain, r.spec.join(" "))).collect();
        assert_eq!(
            lines,
            [
                "INPUT -i pipeabc -m comment --comment pipe isolation -j REJECT",
                "DOCKER-USER -i pipeabc ! -o pipeabc -m comment --comment pipe isolation -j REJECT",
                "INPUT -i pipeabc -m comment --comment pipe isolation -j REJECT",
                "FORWARD -i pipeabc ! -o pipeabc -m comment --comment pipe isolation -j REJECT",
            ]
        );
        assert!(!rules[0].v6 && !rules[1].v6 && rules[2].v6 && rules[3].v6);
        assert!(rules.iter().all(|r| r.spec.last().unwrap() == "REJECT"), "no exception, DNS included: {lines:?}");
    }

    #[test]
    fn a_network_is_stale_only_when_its_owner_on_this_host_is_gone() {
        let me = owner(std::process::id());
        assert!(!owner_gone(&me), "{me}");
        let (host, rest) = me.split_once(':').unwrap();
        let start = rest.split_once(':').unwrap().1;
        // The same PID with another start time: a reused PID, not the owner.
        assert!(owner_gone(&format!("{host}:{}:{}1", std::process::id(), start)));
        assert!(owner_gone(&format!("{host}:999999999:1")));
        assert!(!owner_gone("another-host:999999999:1"), "another host's processes are not ours to judge");
        assert!(!owner_gone("garbage"));
    }

    #[test]
    fn bridge_names_fit_an_interface_name() {
        let a = bridge_name("pipe-build-1234abcd");
        assert_eq!(a.len(), 15);
        assert_ne!(a, bridge_name("pipe-build-1234abce"));
    }

    #[test]
    fn resolvers_are_read_from_resolv_conf() {
        let text = "# comment\nnameserver 10.255.255.53\nnameserver ::1\nsearch x\nnameserver 127.0.0.53\n";
        assert_eq!(resolvers(text), [Ipv4Addr::new(10, 255, 255, 53), Ipv4Addr::new(127, 0, 0, 53)]);
    }

    #[test]
    fn only_rules_of_gone_pipe_bridges_are_stale() {
        let listing = "-N DOCKER-USER\n\
-A DOCKER-USER -i pipe0123456789a ! -o pipe0123456789a -d 10.0.0.0/8 -m comment --comment \"pipe isolation\" -j REJECT --reject-with icmp-port-unreachable\n\
-A DOCKER-USER -i pipefffffffffff -m comment --comment \"pipe isolation\" -j REJECT\n\
-A DOCKER-USER -i br-1234 -j DROP\n\
-A DOCKER-USER -j RETURN\n";
        let found = stale(listing, |b| b == "pipefffffffffff");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0][..2], ["-i".to_string(), "pipe0123456789a".to_string()]);
        assert!(found[0].contains(&"pipe isolation".to_string()));
    }
}
