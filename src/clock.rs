//! The wall clock, to the second: a leaf every other module may read time from.

use jiff::Timestamp;

/// Now, to the second: state timestamps carry no sub-second noise.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}
