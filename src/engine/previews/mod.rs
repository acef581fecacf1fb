//! Pull-request previews: each open pull request's tested image runs as a compose project of
//! its own (`<project>-pr-<N>`) beside a target marked `previews = true`, reachable through the
//! ingress at a name of its own, and is torn down (containers, networks, volumes, images, the
//! ingress's name) when the pull request closes, idles past the target's TTL, or makes room
//! under `max_previews`.
//!
//! The pipeline file decides how a preview runs, never the pull request: compose renders the
//! target's own compose file (`compose config`), and pipe writes the file the preview runs
//! from. For an untrusted pull request compose renders it with pipe's deploy variables only
//! (no secret of pipe's environment can be interpolated), each service keeps only the test
//! services' allow-list plus named volumes of its own, and gets the test containers'
//! confinement; for every preview, ports, fixed names and other networks are dropped, so it
//! sits alone on its own network.

mod deploy;
mod document;
mod names;
mod teardown;

pub(crate) use deploy::deploy;
pub(crate) use names::targets;
pub(crate) use teardown::{orphaned, sweep};
