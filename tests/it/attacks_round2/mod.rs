//! Holes found by the second round of attacking pipe as an outsider would. Each test is the
//! attack that found its hole, beside the legitimate path; a test still ignored (`hole: …`)
//! is a hole not closed yet.

mod fleet;
mod names;
mod serve;

pub(crate) use crate::support::docker::ImageCleanup;
