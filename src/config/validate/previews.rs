//! Preview targets: only for projects that track pull requests, with a host-name template
//! that yields one plain host per service and tells projects apart.

use std::collections::BTreeMap;

use crate::config::document::Cx;
use crate::config::project::Project;
use crate::config::types::{Config, Ingress};

/// Preview targets: a compose target switched through the ingress, of a project that follows
/// pull requests, with a host-name template that yields one plain host per service.
pub(super) fn validate_previews(cx: &mut Cx<'_>, config: &Config) {
    // The compose project each preview target's previews are named after (`<base>-pr-<N>`):
    // two targets with one base would run pull request N of each in one compose project, on
    // one network, torn down together.
    let mut bases = BTreeMap::new();
    for (name, project) in &config.projects {
        validate_project_previews(cx, &config.ingress, name, project, &mut bases);
    }
}

/// [`validate_previews`] for one project, written out or discovered; `bases` holds the
/// compose projects previews are named after so far, and who they are of.
pub(crate) fn validate_project_previews(
    cx: &mut Cx<'_>,
    ingress: &Ingress,
    name: &str,
    project: &Project,
    bases: &mut BTreeMap<String, String>,
) {
    {
        for (index, deploy) in project.deploy.iter().enumerate() {
            let deploy = deploy.get_ref();
            let index = index.to_string();
            let at = |key: &'static str| ["project", name, "deploy", index.as_str(), key];
            let others = deploy.preview_host.is_some() || deploy.preview_ttl.is_some() || deploy.max_previews.is_some();
            if !deploy.previews {
                if others {
                    cx.error_at(
                        &at("previews"),
                        format!(
                            "project `{name}`: `preview_host`, `preview_ttl` and `max_previews` need `previews = true`"
                        ),
                    );
                }
                continue;
            }
            if deploy.compose.is_none() || deploy.ingress.is_empty() || ingress.upstreams.is_none() {
                cx.error_at(
                    &at("previews"),
                    format!("project `{name}`: previews are reached through the ingress: they need a `compose` target with `ingress` and `upstreams` in `[ingress]`"),
                );
            }
            if !project.pull_requests {
                cx.error_at(
                    &at("previews"),
                    format!("project `{name}`: previews are of pull requests: set `pull_requests = true`"),
                );
            }
            if let Some(compose) = &deploy.compose {
                let base = compose.project.clone().unwrap_or_else(|| name.to_string());
                let here = format!("project `{name}` target `{}`", deploy.display_name());
                if let Some(first) = bases.get(&base) {
                    cx.error_at(
                        &at("previews"),
                        format!("{here}: its previews would share the compose projects `{base}-pr-<N>` with the previews of {first} (one network, one teardown); give one of the targets a `compose.project` of its own"),
                    );
                } else {
                    bases.insert(base, here);
                }
            }
            if deploy.max_previews == Some(0) {
                cx.error_at(&at("max_previews"), format!("project `{name}`: `max_previews` must be at least 1"));
            }
            let template = crate::config::targets::preview_host_template(deploy);
            let sample =
                |service: &str| crate::config::targets::preview_host(template, 12345, name, service, &ingress.domain);
            let hosts: Vec<String> = deploy.ingress.keys().map(|s| sample(s)).collect();
            let plain = |h: &String| {
                !h.is_empty()
                    && !h.contains('{')
                    && h.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            };
            if !hosts.iter().all(plain) || !template.contains("{pr}") {
                cx.error_at(
                    &at("preview_host"),
                    format!("project `{name}`: `preview_host` must name a host with `{{pr}}` in it, from letters, digits, `-`, `.` and `{{pr}}`, `{{project}}`, `{{service}}`, `{{domain}}`"),
                );
            } else if !template.contains("{project}") && !names_project(&hosts, &ingress.domain, name) {
                // Two projects' previews of pull request 1 at one name: nginx answers both with
                // the first, so one preview's link would show another project's code.
                cx.error_at(
                    &at("preview_host"),
                    format!("project `{name}`: `preview_host` needs `{{project}}` (or the project's name) so previews of different projects get different names"),
                );
            } else if deploy.ingress.len() > 1 && !template.contains("{service}") {
                cx.error_at(
                    &at("preview_host"),
                    format!("project `{name}`: the target routes {} services: `preview_host` needs `{{service}}` so each gets its own name", deploy.ingress.len()),
                );
            }
        }
    }
}

/// Whether every sample host names the project itself: a label of it before the domain is the
/// project's name, or has it as a `-`-separated part.
pub(super) fn names_project(hosts: &[String], domain: &str, name: &str) -> bool {
    hosts.iter().all(|host| {
        let own = host.strip_suffix(domain).unwrap_or(host);
        own.split('.').any(|label| label == name || label.split('-').any(|part| part == name))
    })
}
