//! What is known about one ref, and the outcome of its last stage: the records of a state's
//! ref lines, in a room of their own so that both the state's front and the reader of its ref
//! lines (`ref_line`) use them without one using the other.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::disk::is_false;
use crate::model::{Outcome, Stage};

/// What is known about one ref.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefState {
    /// The head commit the remote advertised at the last poll.
    pub head: String,
    /// When that head was first seen.
    pub since: Timestamp,
    /// The head has not been through `pipe run` yet.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pending: bool,
    /// Last stage run for this ref, with its commit, outcome and end time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<StageRecord>,
    /// A pull request whose merge ref is no longer advertised: closed or merged. Its images
    /// are pruned like those of a deleted branch.
    #[serde(default, skip_serializing_if = "is_false")]
    pub closed: bool,
}

/// The outcome of one stage for one commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecord {
    pub stage: Stage,
    pub result: Outcome,
    pub commit: String,
    pub at: Timestamp,
}
