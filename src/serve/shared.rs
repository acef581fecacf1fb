//! What the routing, the hooks' workers and the forges' workers share: the run table, the
//! delivery ids, the journal of log lines and the output, the addresses that authenticated
//! recently, and the body limit of a name nobody configured.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::journal::Journal;
use super::replay::Deliveries;
use super::runs::Runs;
use crate::output::Output;

/// A hook's body limit when it sets no `max_body`; also what a request to an unknown hook or
/// project may send, so an unknown name costs what a known one does.
pub(crate) const DEFAULT_MAX_BODY: u64 = 64 * 1024;

pub(crate) struct Shared {
    pub runs: std::sync::Arc<Runs>,
    pub deliveries: Deliveries,
    pub journal: Journal,
    pub out: Output,
    pub senders: Senders,
}

/// How long an address that authenticated stays a known sender.
const SENDER_TTL: Duration = Duration::from_secs(600);
/// How many known senders are kept; beyond it the one seen longest ago is forgotten.
const SENDERS: usize = 4096;

/// The addresses that sent an authenticated request in the last ten minutes: a signed request
/// from one of them may use the part of the body budget and of the handlers that anonymous
/// requests can never take. Only an authenticated request adds an address, so anonymous
/// traffic cannot grow the table or push a sender out.
#[derive(Default)]
pub(crate) struct Senders {
    seen: Mutex<HashMap<IpAddr, Instant>>,
}

impl Senders {
    pub(crate) fn authenticated(&self, peer: IpAddr) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if seen.len() >= SENDERS && !seen.contains_key(&peer) {
            seen.retain(|_, at| now.duration_since(*at) < SENDER_TTL);
            if seen.len() >= SENDERS
                && let Some(oldest) = seen.iter().min_by_key(|(_, at)| **at).map(|(ip, _)| *ip)
            {
                seen.remove(&oldest);
            }
        }
        seen.insert(peer, now);
    }

    pub(crate) fn known(&self, peer: IpAddr) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&peer).is_some_and(|at| at.elapsed() < SENDER_TTL)
    }
}
