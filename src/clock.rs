//! The wall clock: a leaf every other module may read time from.

use jiff::Timestamp;

/// Now, to the second: state timestamps carry no sub-second noise.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Now, to the millisecond: the moments of a deploy's timeline (a head detected, a stage
/// ended, a release healthy, taking traffic), each read from this one clock when it happens,
/// so they compare with each other and keep their order.
pub(crate) fn precise() -> Timestamp {
    Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap_or(Timestamp::UNIX_EPOCH)
}
