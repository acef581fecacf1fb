//! `[ingress]` and the ingress tables of targets and hooks: every value ends up in nginx's
//! configuration, so each must be one plain token of its kind.

use std::collections::BTreeMap;

use crate::config::document::Cx;
use crate::config::types::Ingress;

/// `[ingress]` values end up in nginx directives: each must be one plain token of its kind.
pub(crate) fn validate_ingress(cx: &mut Cx<'_>, ingress: &Ingress) {
    let host_chars = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
    let listen_chars = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || ".:[]-".contains(c));
    let path_chars = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
    let size = |s: &str| {
        let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
        !digits.is_empty() && s.len() - digits.len() <= 1 && digits.chars().all(|c| c.is_ascii_digit())
    };
    let checks = [
        ("domain", host_chars(&ingress.domain), "a domain like `devel.example.com`"),
        ("listen", listen_chars(&ingress.listen), "a port or `address:port`"),
        ("body_size", size(&ingress.body_size), "a size like `10m`"),
        ("resolver", listen_chars(&ingress.resolver), "an address like `127.0.0.11`"),
        ("upstream", ingress.upstream.as_deref().is_none_or(host_chars), "a host like `127.0.0.1`"),
        (
            "upstreams",
            ingress.upstreams.as_ref().is_none_or(|p| p.is_absolute() && p.to_str().is_some_and(path_chars)),
            "an absolute directory path of letters, digits, `/`, `.`, `_` and `-`",
        ),
        ("nginx", !ingress.nginx.is_empty(), "a command like `[\"nginx\"]`"),
    ];
    for (key, ok, expected) in checks {
        if !ok {
            cx.error_at(&["ingress", key], format!("`ingress.{key}` must be {expected}"));
        }
    }
}

/// Service names become host names (`<service>.DOMAIN`) and nginx map keys.
pub(super) fn validate_ingress_services(
    cx: &mut Cx<'_>,
    owner: &str,
    table: &[&str],
    services: &BTreeMap<String, u16>,
) {
    for (service, port) in services {
        let at = [table, &["ingress", service.as_str()]].concat();
        let label = !service.is_empty()
            && service.len() <= 63
            && service.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !service.starts_with('-')
            && !service.ends_with('-');
        if !label {
            cx.error_at(
                &at,
                format!("{owner}: ingress service `{service}` must be a DNS label: lowercase letters, digits and `-`"),
            );
        }
        if *port == 0 {
            cx.error_at(&at, format!("{owner}: ingress service `{service}` needs a port from 1 to 65535"));
        }
    }
}
