//! What the overview shows: one page of refs with what their histories add, and the deploy
//! targets. The routes fill it, the HTML and JSON render it.

use serde::Serialize;

use crate::report::StatusReport;
use crate::state::DeployRecord;

/// One deploy target as the overview shows it.
#[derive(Debug, Serialize)]
pub(crate) struct Target {
    pub project: String,
    pub target: String,
    /// The newest succeeded deploy: what the target runs now.
    pub current: Option<DeployRecord>,
    /// Newest first.
    pub deploys: Vec<DeployRecord>,
}

/// What the overview shows of a row beyond the state: from the ref's history, read for the
/// rows on the page only.
#[derive(Debug, Default)]
pub(crate) struct RowRun {
    /// The newest run's duration, its stages summed.
    pub seconds: Option<f64>,
    /// The subject and author's name of the row's commit, from its newest build's checkout.
    pub subject: Option<String>,
    pub author: Option<String>,
    /// A project of several images: each image of the row's commit, whether that run built it,
    /// and the commit its build comes from.
    pub images: Vec<(String, bool, String)>,
}

/// The overview: one page of refs, the filter that chose them, the deploy targets.
pub(crate) struct Overview {
    pub report: StatusReport,
    /// One per row of `report`.
    pub runs: Vec<RowRun>,
    pub total: usize,
    pub page: usize,
    pub pages: usize,
    pub query: String,
    pub result: String,
    pub targets: Vec<Target>,
}
