//! The words pipe records and reports: stages, their outcomes, a ref's verdict in a tick, and
//! a deploy's result. Serde names keep the state, history and JSON files byte-compatible.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stage of the pipeline. `Poll` has a timeout but no run record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Poll,
    Build,
    Test,
    Push,
    Deploy,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Poll => "poll",
            Stage::Build => "build",
            Stage::Test => "test",
            Stage::Push => "push",
            Stage::Deploy => "deploy",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one stage of one run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    TimedOut,
    Interrupted,
    /// The stage had nothing to do (no test command).
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Interrupted => "interrupted",
            Outcome::Skipped => "skipped",
        }
    }

    /// A failure worth a notification and a `--retry`: the work ran and did not succeed.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut)
    }

    /// The next stage may go on: passed, or had nothing to do.
    pub fn clears(self) -> bool {
        matches!(self, Outcome::Passed | Outcome::Skipped)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a tick made of one ref: a stage outcome, or `unavailable` when the engine or a
/// registry did not answer (nothing recorded; the ref stays pending and the next tick retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Failed,
    TimedOut,
    Interrupted,
    Unavailable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::TimedOut => "timed_out",
            Verdict::Interrupted => "interrupted",
            Verdict::Unavailable => "unavailable",
        }
    }

    /// The verdict a failed stage's recorded outcome gives its ref.
    pub fn of_failure(outcome: Option<Outcome>) -> Verdict {
        match outcome {
            Some(Outcome::TimedOut) => Verdict::TimedOut,
            Some(Outcome::Interrupted) => Verdict::Interrupted,
            _ => Verdict::Failed,
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Verdict::Failed | Verdict::TimedOut)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a deploy to one target ended, as its history keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployResult {
    Succeeded,
    Failed,
    /// Failed, and the previous image was redeployed.
    RolledBack,
}

/// Where one host of a fleet ended up in a deploy that spans hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostResult {
    /// Runs the new release, checked.
    Deployed,
    /// Its deploy failed (the detail says why: the receiver's answer, its health check's last).
    Failed,
    /// Went to the new release (or tried to), and runs the previous one again.
    RolledBack,
    /// Putting the previous release back failed too.
    RollbackFailed,
    /// Could not be reached before the rollout; the deploy went on without it (`skip_unreachable`).
    Skipped,
    /// Could not be reached before the rollout; nothing was switched anywhere.
    Unreachable,
    /// Never asked: the deploy stopped before its batch.
    NotStarted,
}

impl HostResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HostResult::Deployed => "deployed",
            HostResult::Failed => "failed",
            HostResult::RolledBack => "rolled_back",
            HostResult::RollbackFailed => "rollback_failed",
            HostResult::Skipped => "skipped",
            HostResult::Unreachable => "unreachable",
            HostResult::NotStarted => "not_started",
        }
    }
}

impl DeployResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployResult::Succeeded => "succeeded",
            DeployResult::Failed => "failed",
            DeployResult::RolledBack => "rolled_back",
        }
    }
}

impl fmt::Display for DeployResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_the_recorded_words() {
        let words: Vec<String> =
            [Outcome::Passed, Outcome::Failed, Outcome::TimedOut, Outcome::Interrupted, Outcome::Skipped]
                .iter()
                .map(|o| serde_json::to_string(o).unwrap())
                .collect();
        assert_eq!(words, ["\"passed\"", "\"failed\"", "\"timed_out\"", "\"interrupted\"", "\"skipped\""]);
        for o in [Outcome::Passed, Outcome::TimedOut, Outcome::Skipped] {
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{}\"", o.as_str()));
        }
        assert_eq!(serde_json::to_string(&Verdict::Unavailable).unwrap(), "\"unavailable\"");
        for d in [DeployResult::Succeeded, DeployResult::Failed, DeployResult::RolledBack] {
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{}\"", d.as_str()));
        }
        for v in [Verdict::Passed, Verdict::Failed, Verdict::TimedOut, Verdict::Interrupted, Verdict::Unavailable] {
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{}\"", v.as_str()));
        }
        assert_eq!(serde_json::to_string(&DeployResult::RolledBack).unwrap(), "\"rolled_back\"");
        assert_eq!(serde_json::to_string(&Stage::Deploy).unwrap(), "\"deploy\"");
    }
}
