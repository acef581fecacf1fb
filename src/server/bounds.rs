//! What clients may hold: the body-memory budget all connections share, and which connection
//! is shed when one address, or the server, is at its bound of connections being read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::service::Limits;

/// Bytes of bodies held now, released when a handler is done.
pub(super) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Budget {
        Budget { used: AtomicUsize::new(0), limit }
    }

    pub(super) fn reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|t| *t <= self.limit))
            .is_ok()
    }

    pub(super) fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
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
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for (_, ip, _) in readers.clone() {
            *counts.entry(ip).or_default() += 1;
        }
        counts.into_iter().max_by_key(|(_, n)| *n).map(|(ip, _)| ip)?
    } else {
        return None;
    };
    let from = || readers.clone().filter(move |(_, addr, _)| *addr == ip);
    from()
        .filter(|(_, _, accepted)| accepted.elapsed() >= PROTECTED)
        .min_by_key(|(_, _, accepted)| *accepted)
        .or_else(|| from().min_by_key(|(_, _, accepted)| *accepted))
        .map(|(i, _, _)| i)
}
