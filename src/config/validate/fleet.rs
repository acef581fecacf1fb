//! A webhook target that spans hosts: `hosts`, `batch` and `skip_unreachable`.

use std::collections::BTreeSet;

use crate::config::document::Cx;
use crate::config::targets::WebhookTarget;

/// `hosts` fill `{host}` in `url`, are distinct and plain host names (or `host:port`); `batch`
/// and `skip_unreachable` belong to a fleet; a fleet speaks `pipe serve`'s protocol only.
pub(crate) fn validate_fleet(cx: &mut Cx<'_>, name: &str, entry: &[&str], hook: &WebhookTarget) {
    let at = |key: &'static str| [entry, &["webhook", key]].concat();
    let placeholder = hook.url.contains("{host}");
    if hook.hosts.is_empty() {
        if placeholder {
            cx.error_at(
                &at("url"),
                format!("project `{name}`: `webhook.url` has `{{host}}` but the target has no `hosts`"),
            );
        }
        for (key, set) in [("batch", hook.batch.is_some()), ("skip_unreachable", hook.skip_unreachable)] {
            if set {
                cx.error_at(
                    &at(key),
                    format!("project `{name}`: `webhook.{key}` needs `hosts` (a target that spans hosts)"),
                );
            }
        }
        return;
    }
    if !placeholder {
        cx.error_at(
            &at("url"),
            format!(
                "project `{name}`: `webhook.url` needs `{{host}}` where each of `hosts` goes, e.g. `http://{{host}}:9010/hooks/{name}`"
            ),
        );
    }
    if hook.docker_puller {
        cx.error_at(
            &at("hosts"),
            format!(
                "project `{name}`: `hosts` needs `pipe serve` on every host (its run is followed to its health check); docker-puller answers before it deploys"
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, host) in hook.hosts.iter().enumerate() {
        let index = i.to_string();
        let path = [entry, &["webhook", "hosts", index.as_str()]].concat();
        let plain = !host.is_empty()
            && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'));
        if !plain {
            cx.error_at(
                &path,
                format!("project `{name}`: `webhook.hosts` entry `{host}` is not a host name, address or `host:port`"),
            );
        } else if !seen.insert(host.to_ascii_lowercase()) {
            cx.error_at(&path, format!("project `{name}`: `webhook.hosts` names `{host}` twice"));
        }
    }
    if hook.batch == Some(0) {
        cx.error_at(
            &at("batch"),
            format!("project `{name}`: `webhook.batch` is 0; it is how many hosts deploy at once, at least 1"),
        );
    }
}
