//! A compose target that spans hosts reached over SSH: `ssh = { hosts, batch, skip_unreachable,
//! upstreams, nginx, docker_socket, known_hosts, identity }`.

use std::collections::BTreeSet;

use crate::config::document::Cx;
use crate::config::targets::Deploy;

/// `ssh` goes with a compose target behind its ingress with an HTTP health check (the check
/// reaches each new container through the host's tunnel, where a bare TCP connect would always
/// succeed); hosts are `ssh://[USER@]HOST[:PORT]`, distinct; paths are absolute.
pub(crate) fn validate_ssh(cx: &mut Cx<'_>, name: &str, entry: &[&str], deploy: &Deploy) {
    let Some(ssh) = &deploy.ssh else { return };
    let at = |key: &'static str| [entry, &["ssh", key]].concat();
    let whole = [entry, &["ssh"]].concat();
    if deploy.compose.is_none() {
        cx.error_at(
            &whole,
            format!("project `{name}`: `ssh` deploys a compose target: add `compose = {{ file = … }}`"),
        );
    }
    if deploy.ingress.is_empty() {
        cx.error_at(
            &whole,
            format!(
                "project `{name}`: `ssh` hosts deploy without downtime through their nginx: add `ingress = {{ SERVICE = PORT }}`"
            ),
        );
    }
    if deploy.health.as_ref().is_none_or(|h| h.url.is_none()) {
        cx.error_at(
            &whole,
            format!(
                "project `{name}`: `ssh` hosts need `health = {{ url = \"http://SERVICE.DOMAIN/PATH\" }}`: each new container is asked that path through the host's tunnel"
            ),
        );
    }
    if deploy.previews {
        cx.error_at(&at("hosts"), format!("project `{name}`: previews run on this host, not on `ssh` hosts"));
    }
    if ssh.hosts.is_empty() {
        cx.error_at(
            &at("hosts"),
            format!("project `{name}`: `ssh.hosts` is empty; name at least one `ssh://USER@HOST`"),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, host) in ssh.hosts.iter().enumerate() {
        let index = i.to_string();
        let path = [entry, &["ssh", "hosts", index.as_str()]].concat();
        match parse_host(host) {
            None => cx.error_at(
                &path,
                format!("project `{name}`: `ssh.hosts` entry `{host}` is not `ssh://[USER@]HOST[:PORT]`"),
            ),
            Some(_) if !seen.insert(host.to_ascii_lowercase()) => {
                cx.error_at(&path, format!("project `{name}`: `ssh.hosts` names `{host}` twice"))
            }
            Some(_) => {}
        }
    }
    if ssh.batch == Some(0) {
        cx.error_at(
            &at("batch"),
            format!("project `{name}`: `ssh.batch` is 0; it is how many hosts deploy at once, at least 1"),
        );
    }
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
    for (key, path) in [("upstreams", &ssh.upstreams), ("docker_socket", &ssh.docker_socket)] {
        if !path.is_absolute() || !path.to_str().is_some_and(plain) {
            cx.error_at(
                &at(key),
                format!(
                    "project `{name}`: `ssh.{key}` must be an absolute path on the hosts, of letters, digits, `/`, `.`, `_` and `-`"
                ),
            );
        }
    }
    if ssh.nginx.is_empty() || ssh.nginx.iter().any(|w| w.is_empty()) {
        cx.error_at(&at("nginx"), format!("project `{name}`: `ssh.nginx` must be a command like `[\"nginx\"]`"));
    }
}

/// `ssh://[USER@]HOST[:PORT]` → (user, host, port). Plain characters only: each part reaches
/// `ssh` as an argument of its own, and a leading `-` would be an option.
pub(crate) fn parse_host(spec: &str) -> Option<(Option<&str>, &str, Option<u16>)> {
    let rest = spec.strip_prefix("ssh://")?;
    let (user, rest) = match rest.split_once('@') {
        Some((user, rest)) => (Some(user), rest),
        None => (None, rest),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port.parse::<u16>().ok().filter(|p| *p > 0)?)),
        Some(_) => return None,
        None => (rest, None),
    };
    let word = |s: &str| {
        !s.is_empty() && !s.starts_with('-') && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if !word(host) || user.is_some_and(|u| !word(u)) {
        return None;
    }
    Some((user, host, port))
}

#[cfg(test)]
mod tests {
    use super::parse_host;

    #[test]
    fn ssh_hosts_are_user_host_and_port() {
        assert_eq!(parse_host("ssh://deploy@10.0.0.5"), Some((Some("deploy"), "10.0.0.5", None)));
        assert_eq!(parse_host("ssh://web1.example.com:2222"), Some((None, "web1.example.com", Some(2222))));
        for bad in
            ["10.0.0.5", "ssh://", "ssh://-oProxyCommand=x", "ssh://a@b@c", "ssh://h:0", "ssh://h:x", "ssh://a b"]
        {
            assert_eq!(parse_host(bad), None, "{bad}");
        }
    }
}
