//! Which host this receiver is, for the deliveries of a fleet: a body a fleet signs names the
//! host it was sent to (`host`, as the fleet's `hosts` spells it), so the same bytes captured on
//! their way to one host run nowhere else. This receiver answers to its `[serve] names`, its
//! host name and every address of its interfaces.

use std::net::IpAddr;

/// The names and addresses this receiver answers to, each with the port it answers on when
/// known (a host named with a port must name that one).
#[derive(Debug, Default, Clone)]
pub(crate) struct OwnNames {
    entries: Vec<(Key, Option<u16>)>,
}

/// A lower-cased name or an address.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Name(String),
    Address(IpAddr),
}

impl Key {
    fn of(bare: &str) -> Key {
        match bare.parse::<IpAddr>() {
            Ok(ip) => Key::Address(ip),
            Err(_) => Key::Name(bare.to_ascii_lowercase()),
        }
    }
}

impl OwnNames {
    /// `[serve] names` as written (a name with a port answers on that port only), then this
    /// machine's host name and its interfaces' addresses on `port`, the one it listens on.
    pub(crate) fn gather(configured: &[String], port: Option<u16>) -> OwnNames {
        let mut entries: Vec<(Key, Option<u16>)> = configured
            .iter()
            .map(|name| split(name))
            .filter(|(bare, _)| !bare.is_empty())
            .map(|(bare, port)| (Key::of(bare), port))
            .collect();
        entries.extend(host_name().map(|name| (Key::Name(name.to_ascii_lowercase()), port)));
        entries.extend(interface_addresses().into_iter().map(|ip| (Key::Address(ip), port)));
        OwnNames { entries }
    }

    /// Whether `host` (a name, an address, either with `:PORT`, an IPv6 address in brackets)
    /// is this receiver.
    pub(crate) fn answers_to(&self, host: &str) -> bool {
        let (bare, port) = split(host);
        if bare.is_empty() {
            return false;
        }
        let key = Key::of(bare);
        self.entries.iter().any(|(k, p)| *k == key && (port.is_none() || p.is_none() || *p == port))
    }

    /// What this receiver answers to, for the refusal's message.
    pub(crate) fn describe(&self) -> String {
        let shown: Vec<String> = self
            .entries
            .iter()
            .filter(|(k, _)| !matches!(k, Key::Address(ip) if ip.is_loopback()))
            .map(|(k, p)| {
                let bare = match k {
                    Key::Name(n) => n.clone(),
                    Key::Address(IpAddr::V6(ip)) if p.is_some() => format!("[{ip}]"),
                    Key::Address(ip) => ip.to_string(),
                };
                p.map_or(bare.clone(), |p| format!("{bare}:{p}"))
            })
            .collect();
        shown.join(", ")
    }
}

/// `host`, `host:port`, `[v6]:port`, `[v6]` or a bare IPv6 address: the host and the port.
fn split(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        let (bare, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (bare, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.matches(':').count() {
        1 => {
            let (bare, port) = host.split_once(':').unwrap_or((host, ""));
            (bare, port.parse().ok())
        }
        _ => (host, None),
    }
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).to_string();
    (!name.is_empty()).then_some(name)
}

fn interface_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we walk read-only and free once.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return found;
    }
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is an element of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*node };
        if !entry.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` points to a sockaddr whose family says which struct it is.
            let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: the family is AF_INET, so the address is a sockaddr_in.
                let v4 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                found.push(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
            } else if family == libc::AF_INET6 {
                // SAFETY: the family is AF_INET6, so the address is a sockaddr_in6.
                let v6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                found.push(IpAddr::from(v6.sin6_addr.s6_addr));
            }
        }
        node = entry.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> OwnNames {
        OwnNames {
            entries: vec![
                (Key::of("web1.example.com"), None),
                (Key::of("10.0.0.5"), Some(9010)),
                (Key::of("fd00::5"), Some(9010)),
            ],
        }
    }

    #[test]
    fn a_host_is_compared_by_name_without_case_by_address_as_an_address_and_by_port_when_both_say() {
        let own = own();
        for yes in [
            "10.0.0.5",
            "10.0.0.5:9010",
            "WEB1.example.com",
            "web1.example.com:443",
            "[fd00::5]:9010",
            "fd00::5",
            "[fd00::5]",
        ] {
            assert!(own.answers_to(yes), "{yes}");
        }
        for no in ["10.0.0.6", "10.0.0.5:9011", "web2.example.com", "", ":9010", "[fd00::6]", "web1", "[fd00::5]:1"] {
            assert!(!own.answers_to(no), "{no}");
        }
    }

    #[test]
    fn this_machine_answers_to_its_loopback_on_its_port_and_to_its_configured_names() {
        let own = OwnNames::gather(&["prod-a.example.com:80".into(), "192.0.2.7".into()], Some(9010));
        assert!(own.answers_to("127.0.0.1"));
        assert!(own.answers_to("127.0.0.1:9010"));
        assert!(!own.answers_to("127.0.0.1:9011"), "another receiver on this machine");
        assert!(own.answers_to("prod-a.example.com:80"));
        assert!(!own.answers_to("prod-a.example.com:8080"));
        assert!(own.answers_to("192.0.2.7:9010"));
        assert!(!own.answers_to("192.0.2.8"));
        assert!(own.describe().contains("prod-a.example.com:80"), "{}", own.describe());
    }
}
