//! The names and places of a preview: which targets run previews, a preview's compose
//! project, address, network and directory, and how long it may idle. Shared by the deploy and
//! the teardown of previews; nothing here does IO.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, Deploy, Project};
use crate::state;

/// Previews of a target that has no TTL of its own are removed after a week without a commit.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub(crate) const DEFAULT_MAX: usize = 10;
/// The deploy entries of a project that run previews.
pub(crate) fn targets(project: &Project) -> Vec<&Deploy> {
    project.deploy.iter().map(|d| d.get_ref()).filter(|d| d.previews && d.compose.is_some()).collect()
}

/// The compose project of pull request `number`'s preview of `target`.
pub(crate) fn compose_project(name: &str, target: &Deploy, number: u64) -> String {
    let base = target.compose.as_ref().and_then(|c| c.project.as_deref()).unwrap_or(name);
    format!("{base}-pr-{number}")
}

/// The preview's address through the ingress: its first service's host name, with the port
/// nginx listens on unless it is 80.
pub(crate) fn url(config: &Config, name: &str, target: &Deploy, number: u64) -> String {
    let service = target.ingress.keys().next().map_or("", String::as_str);
    let template = crate::config::preview_host_template(target);
    let host = crate::config::preview_host(template, number, name, service, &config.ingress.domain);
    let port = config.ingress.listen.rsplit(':').next().unwrap_or("80");
    if port == "80" { format!("http://{host}/") } else { format!("http://{host}:{port}/") }
}

pub(crate) fn isolated_network_name(project: &str) -> String {
    format!("{project}_isolated")
}

/// pipe's own directory of a preview: the compose file it runs from, nothing of the repository.
pub(crate) fn preview_dir(state_path: &Path, compose_project: &str) -> PathBuf {
    state::state_dir(state_path).join("previews").join(compose_project)
}
