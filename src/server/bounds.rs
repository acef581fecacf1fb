//! What clients may hold: the body-memory budget all connections share (with a part anonymous
//! requests can never take, and a cap per address on the rest), and which connection is shed
//! when one address, or the server, is at a bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::service::Limits;

/// Bytes of bodies held now, released when a handler is done.
pub(super) struct Budget {
    held: Mutex<Held>,
    limit: usize,
    untrusted: usize,
    per_client: usize,
}

#[derive(Default)]
struct Held {
    total: usize,
    untrusted: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One request's share of the budget, handed back with [`Budget::release`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Share {
    pub(super) bytes: usize,
    pub(super) peer: IpAddr,
    pub(super) trusted: bool,
}

/// Why a share was refused: what must be shed to make room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Short {
    /// The address is at its own cap of anonymous bytes: one of its own readers must go.
    Address,
    /// Anonymous requests hold all they may, or the whole budget is taken.
    Total,
}

impl Budget {
    pub(super) fn new(limits: &Limits) -> Budget {
        Budget {
            held: Mutex::default(),
            limit: limits.body_memory,
            untrusted: limits.untrusted_body_memory.min(limits.body_memory),
            per_client: limits.untrusted_body_per_client,
        }
    }

    pub(super) fn reserve(&self, share: Share) -> Result<(), Short> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.total + share.bytes > self.limit {
            return Err(Short::Total);
        }
        if !share.trusted {
            let mine = held.by_address.get(&share.peer).copied().unwrap_or(0);
            if mine + share.bytes > self.per_client {
                return Err(Short::Address);
            }
            if held.untrusted + share.bytes > self.untrusted {
                return Err(Short::Total);
            }
            held.untrusted += share.bytes;
            *held.by_address.entry(share.peer).or_default() += share.bytes;
        }
        held.total += share.bytes;
        Ok(())
    }

    pub(super) fn release(&self, share: Share) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total -= share.bytes;
        if !share.trusted {
            held.untrusted -= share.bytes;
            if let Some(mine) = held.by_address.get_mut(&share.peer) {
                *mine -= share.bytes;
                if *mine == 0 {
                    held.by_address.remove(&share.peer);
                }
            }
        }
    }
}

/// The client a connection counts against: its IPv4 address, or its IPv6 /64 (one host's
/// usual allocation, where a single client can pick any of 2^64 addresses).
pub(super) fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// How long a new connection cannot be shed for a newer one.
const PROTECTED: Duration = Duration::from_secs(1);

/// Before accepting a connection from `peer`: which of `readers` (index, address, accepted: the
/// connections being read) to shed, if any. At `peer`'s own bound one of its own goes; at the
/// total bound one of the busiest address, so a flood pushes out its own members, not a fresh
/// request. The oldest goes, preferably one past its first second: a younger one may be a
/// request whose bytes are still on their way.
pub(super) fn victim<I>(readers: I, peer: IpAddr, limits: &Limits) -> Option<usize>
where
    I: Iterator<Item = (usize, IpAddr, Instant)> + Clone,
{
    let ip = if readers.clone().filter(|(_, ip, _)| *ip == peer).count() >= limits.per_client {
        peer
    } else if readers.clone().count() >= limits.connections {
        busiest(readers.clone().map(|(_, ip, _)| (ip, 1)))?
    } else {
        return None;
    };
    oldest_of(readers, ip)
}

/// The address holding the most of something (connections, bytes).
pub(super) fn busiest(held: impl Iterator<Item = (IpAddr, usize)>) -> Option<IpAddr> {
    let mut counts: HashMap<IpAddr, usize> = HashMap::new();
    for (ip, n) in held {
        *counts.entry(ip).or_default() += n;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(ip, _)| ip)
}

/// The oldest of `ip`'s `readers`, preferably one past its first second.
pub(super) fn oldest_of<I>(readers: I, ip: IpAddr) -> Option<usize>
where
    I: Iterator<Item = (usize, IpAddr, Instant)> + Clone,
{
    let from = || readers.clone().filter(move |(_, addr, _)| *addr == ip);
    from()
        .filter(|(_, _, since)| since.elapsed() >= PROTECTED)
        .min_by_key(|(_, _, since)| *since)
        .or_else(|| from().min_by_key(|(_, _, since)| *since))
        .map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            connections: 8,
            per_client: 4,
            head_memory: 1024,
            body_memory: 100,
            untrusted_body_memory: 60,
            untrusted_body_per_client: 30,
            handlers: 8,
            untrusted_handlers: 6,
            untrusted_handlers_per_client: 2,
            untrusted_answers: 4,
            untrusted_answers_per_client: 2,
            answer_timeout: Duration::from_secs(600),
        }
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client(a), client(b));
        assert_ne!(client(a), client(other));
        assert_eq!(client("::ffff:10.0.0.1".parse().unwrap()), IpAddr::from([10, 0, 0, 1]));
        assert_eq!(client(IpAddr::from([10, 0, 0, 1])), IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn anonymous_requests_never_take_the_trusted_part_of_the_budget() {
        let budget = Budget::new(&limits());
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let anon = |n: u8, bytes: usize| Share { bytes, peer: ip(n), trusted: false };
        assert_eq!(budget.reserve(anon(2, 30)), Ok(()));
        assert_eq!(budget.reserve(anon(2, 1)), Err(Short::Address), "one address's cap");
        assert_eq!(budget.reserve(anon(3, 30)), Ok(()));
        assert_eq!(budget.reserve(anon(4, 1)), Err(Short::Total), "anonymous requests' cap, many addresses");
        let trusted = Share { bytes: 40, peer: ip(2), trusted: true };
        assert_eq!(budget.reserve(trusted), Ok(()), "the trusted part is still free");
        assert_eq!(budget.reserve(Share { bytes: 1, ..trusted }), Err(Short::Total));
        budget.release(anon(2, 30));
        assert_eq!(budget.reserve(anon(4, 30)), Ok(()));
    }
}
