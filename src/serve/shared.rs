//! What the routing, the hooks' workers and the forges' workers share: the run table, the
//! delivery ids, the journal of log lines and the output, and the body limit of a name nobody
//! configured.

use super::journal::Journal;
use super::replay::Deliveries;
use super::runs::Runs;
use crate::output::Output;

/// A hook's body limit when it sets no `max_body`; also what a request to an unknown hook or
/// project may send, so an unknown name costs what a known one does.
pub(crate) const DEFAULT_MAX_BODY: u64 = 64 * 1024;

pub(crate) struct Shared {
    pub runs: Runs,
    pub deliveries: Deliveries,
    pub journal: Journal,
    pub out: Output,
}
