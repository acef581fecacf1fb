//! The nginx front for the services pipe deploys: `<service>.DOMAIN` → that service's container.
//!
//! Pure: takes the loaded config, returns the configuration text. Every value that reaches a
//! directive was validated by `config` as a plain token, so nothing in the pipeline file can add
//! a directive of its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::config::{Config, Ingress};

/// One routed service: the port nginx connects to and where the route was configured.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub port: u16,
    pub from: Vec<String>,
    /// pipe switches this service between releases through an upstream file of its own.
    pub switched: bool,
}

/// The nginx upstream group of a switched service, defined in [`upstream_file`].
pub(crate) fn upstream_name(service: &str) -> String {
    format!("pipe-{service}")
}

/// The file pipe writes into `[ingress] upstreams` for a switched service.
pub(crate) fn upstream_file(dir: &std::path::Path, service: &str) -> std::path::PathBuf {
    dir.join(format!("{service}.conf"))
}

/// A server of a switched upstream group: the address nginx connects to and the container
/// pipe switched to there (empty in files written before pipe recorded it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    pub addr: String,
    pub container: String,
}

/// What an upstream group routes to when every container pipe switched to is gone: nothing.
/// A group whose only server is `down` answers 502 at once and never a stranger at the address.
const CLOSED: &str = "127.0.0.1:9 down";

/// The upstream group of `service` routing to `servers` (the release's containers). `note`
/// becomes a comment naming the release; each server's container is recorded
/// (`# pipe-release ID ADDRESS`), so the guard can tell the release from whoever holds its
/// address later.
pub(crate) fn render_upstream(service: &str, servers: &[Server], note: &str) -> String {
    let mut out = format!("# Written by pipe: {note}. Rewritten on every deploy.\n");
    for s in servers.iter().filter(|s| !s.container.is_empty()) {
        let _ = writeln!(out, "# pipe-release {} {}", s.container, s.addr);
    }
    let _ = writeln!(out, "upstream {} {{", upstream_name(service));
    for s in servers {
        let _ = writeln!(out, "    server {};", s.addr);
    }
    out.push_str("}\n");
    out
}

/// The containers an upstream file records as the release pipe switched to, with the address
/// each had then.
pub(crate) fn parse_releases(text: &str) -> Vec<Server> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# pipe-release "))
        .filter_map(|l| {
            let (container, addr) = l.trim().split_once(' ')?;
            Some(Server { addr: addr.trim().to_string(), container: container.to_string() })
        })
        .collect()
}

/// `text` with its upstream group's servers replaced by `addrs`, or failed closed (one `down`
/// server, with `why` as a comment) when there are none. Everything else (the recorded
/// releases, a preview's server block) is kept.
pub(crate) fn reroute(text: &str, addrs: &[String], why: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("upstream ") && trimmed.ends_with('{') {
            inside = true;
            out.push_str(line);
            out.push('\n');
            if addrs.is_empty() {
                let _ = writeln!(out, "    # pipe failed closed: {why}");
                let _ = writeln!(out, "    server {CLOSED};");
            }
            for addr in addrs {
                let _ = writeln!(out, "    server {addr};");
            }
            continue;
        }
        if inside && trimmed == "}" {
            inside = false;
        } else if inside {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A preview's server block, written after its upstream group in the same file: `host` is
/// proxied to the group `upstream` with the ingress's limits. An exact `server_name` wins over
/// the wildcard server of [`render`], so the preview's name never reaches another service.
pub(crate) fn render_site(ingress: &Ingress, host: &str, upstream: &str) -> String {
    let timeout = ingress.timeout.0.as_secs().max(1);
    format!(
        "server {{
    listen {listen};
    server_name {host};
    client_max_body_size {body_size};

    location / {{
        proxy_pass http://{upstream};
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_connect_timeout 5s;
        proxy_send_timeout {timeout}s;
        proxy_read_timeout {timeout}s;
    }}
}}
",
        listen = ingress.listen,
        body_size = ingress.body_size,
    )
}

/// The addresses an upstream file written by [`render_upstream`] routes to now (none when it
/// failed closed).
pub(crate) fn parse_upstream(text: &str) -> Vec<String> {
    let mut inside = false;
    let mut addrs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("upstream ") {
            inside = true;
        } else if line == "}" {
            inside = false;
        } else if inside
            && let Some(server) = line.strip_prefix("server ")
            && !server.trim_end_matches(';').trim().ends_with(" down")
        {
            addrs.extend(server.trim_end_matches(';').split_whitespace().next().map(str::to_string));
        }
    }
    addrs
}

/// Every service named in an `ingress` table of a deploy target or a `pipe serve` hook.
/// Webhook targets are skipped: they deploy on another host, whose own config routes them.
pub(crate) fn routes(config: &Config) -> anyhow::Result<BTreeMap<String, Route>> {
    let mut sources = Vec::new();
    for (project, p) in &config.projects {
        for deploy in &p.deploy {
            let deploy = deploy.get_ref();
            let switched = config.ingress.upstreams.is_some() && deploy.compose.is_some();
            for (service, port) in &deploy.ingress {
                let from = format!("project `{project}` target `{}`", deploy.display_name());
                sources.push((service, *port, from, switched));
            }
        }
    }
    for (name, hook) in &config.serve.hooks {
        let switched = config.ingress.upstreams.is_some() && hook.compose.is_some();
        for (service, port) in &hook.ingress {
            sources.push((service, *port, format!("hook `{name}`"), switched));
        }
    }
    let mut routes: BTreeMap<String, Route> = BTreeMap::new();
    for (service, port, from, switched) in sources {
        let route = routes.entry(service.clone()).or_insert(Route { port, from: Vec::new(), switched });
        route.switched |= switched;
        if route.port != port {
            anyhow::bail!(
                "ingress service `{service}` has port {} in {} but {port} in {from}; one host name reaches one port",
                route.port,
                route.from.join(", "),
            );
        }
        route.from.push(from);
    }
    Ok(routes)
}

/// The configuration for nginx's `http` block (e.g. `/etc/nginx/conf.d/pipe.conf`), for the
/// routes [`routes`] found in `config`.
pub(crate) fn render(config: &Config, routes: &BTreeMap<String, Route>) -> String {
    render_routes(&config.ingress, &config.path.display().to_string(), routes)
}

fn render_routes(ingress: &Ingress, source: &str, routes: &BTreeMap<String, Route>) -> String {
    let mut out = String::new();
    let domain_regex = ingress.domain.replace('.', r"\.");
    let direct = match &ingress.upstream {
        Some(host) => format!("{host}:$pipe_port"),
        None => "$pipe_service:$pipe_port".to_string(),
    };
    let switched: Vec<&String> = routes.iter().filter(|(_, r)| r.switched).map(|(s, _)| s).collect();
    let upstream = if switched.is_empty() { format!("http://{direct}") } else { "http://$pipe_backend".to_string() };
    let timeout = ingress.timeout.0.as_secs().max(1);
    // Only a route by name needs nginx's `resolver` (a name in a `proxy_pass` with variables is
    // looked up when a request comes): a service's own name on nginx's Docker network, found
    // through Docker's DNS server, or an `upstream` host given by name. An address, or an
    // upstream group pipe writes, needs none; nginx on the host has no Docker DNS server to ask.
    let direct_routes = routes.values().any(|r| !r.switched);
    let by_name = ingress.upstream.as_deref().is_none_or(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().is_err());
    let resolver = direct_routes && by_name;
    let _ = writeln!(out, "# Generated by `pipe generate nginx` from `{source}`; regenerate rather than edit.");
    let _ = writeln!(
        out,
        "# Goes in nginx's http block, e.g. /etc/nginx/conf.d/pipe.conf, then `nginx -t && nginx -s reload`."
    );
    match (&ingress.upstream, direct_routes) {
        (_, false) => {}
        (Some(host), true) => {
            let _ = writeln!(
                out,
                "# <service>.{} is proxied to {host}:<port> (the port the service publishes).",
                ingress.domain
            );
            if resolver {
                let _ = writeln!(out, "# {host} is looked up through the DNS server {}.", ingress.resolver);
            }
        }
        (None, true) => {
            let _ = writeln!(
                out,
                "# <service>.{} is proxied to the container of that name on nginx's Docker network, at its port,",
                ingress.domain
            );
            let _ = writeln!(out, "# found through Docker's DNS server ({}).", ingress.resolver);
        }
    }
    if let Some(dir) = &ingress.upstreams {
        let _ = writeln!(
            out,
            "# Switched services go to the upstream group pipe writes into {} on every deploy.",
            dir.display()
        );
    }
    out.push_str("\nmap $pipe_service $pipe_port {\n    default \"\";\n");
    let width = routes.keys().map(String::len).max().unwrap_or(0);
    for (service, route) in routes {
        let _ = writeln!(out, "    {service:<width$} {};  # {}", route.port, route.from.join(", "));
    }
    out.push('}');
    out.push('\n');
    if !switched.is_empty() {
        let _ = write!(out, "\nmap $pipe_service $pipe_backend {{\n    default {direct};\n");
        for service in &switched {
            let _ = writeln!(out, "    {service:<width$} {};", upstream_name(service));
        }
        out.push_str("}\n");
    }
    out.push_str("\nmap $http_upgrade $pipe_connection {\n    default upgrade;\n    \"\"      close;\n}\n\n");
    let _ = write!(
        out,
        "server {{
    listen {listen};
    server_name ~^(?<pipe_service>[a-z0-9-]+)\\.{domain_regex}$;

    client_max_body_size {body_size};
{resolver}
    location / {{
        if ($pipe_port = \"\") {{
            return 404;
        }}
        proxy_pass {upstream};
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $pipe_connection;
        proxy_connect_timeout 5s;
        proxy_send_timeout {timeout}s;
        proxy_read_timeout {timeout}s;
    }}
}}
",
        listen = ingress.listen,
        body_size = ingress.body_size,
        resolver =
            if resolver { format!("    resolver {} valid=10s ipv6=off;\n", ingress.resolver) } else { String::new() },
    );
    if let Some(dir) = &ingress.upstreams {
        // After the wildcard server, so that it stays the listener's default server: a host
        // name nobody serves (a preview torn down) gets its 404, never a preview's answer.
        let _ = write!(out, "\ninclude {}/*.conf;\n", dir.display());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse;

    fn config(text: &str) -> Config {
        parse(Path::new("pipeline.toml"), text).unwrap_or_else(|d| panic!("{d:?}"))
    }

    fn generate(c: &Config) -> anyhow::Result<String> {
        Ok(render(c, &routes(c)?))
    }

    const TWO_PROJECTS: &str = "[ingress]\ndomain = \"devel.example.com\"\nbody_size = \"50m\"\ntimeout = \"2m\"\n\n\
        [project.a]\nrepo = \"x\"\nbranches = [\"dev\"]\n[[project.a.deploy]]\nbranches = [\"dev\"]\n\
        compose = { file = \"a.yml\" }\ningress = { api = 8080, web = 3000 }\n\n\
        [project.b]\nrepo = \"y\"\nbranches = [\"dev\"]\n[[project.b.deploy]]\nbranches = [\"dev\"]\n\
        command = { argv = [\"true\"] }\ningress = { admin = 9000 }\n";

    #[test]
    fn every_service_is_mapped_to_its_port_under_the_domain() {
        let text = generate(&config(TWO_PROJECTS)).unwrap();
        assert!(text.contains("server_name ~^(?<pipe_service>[a-z0-9-]+)\\.devel\\.example\\.com$;"), "{text}");
        assert!(text.contains("    admin 9000;  # project `b` target `command`\n"), "{text}");
        assert!(text.contains("    api   8080;  # project `a` target `compose`\n"), "{text}");
        assert!(text.contains("    web   3000;"), "{text}");
        assert!(text.contains("client_max_body_size 50m;"), "{text}");
        assert!(text.contains("proxy_read_timeout 120s;"), "{text}");
        assert!(text.contains("proxy_pass http://$pipe_service:$pipe_port;"), "{text}");
        assert!(text.contains("resolver 127.0.0.11 valid=10s"), "{text}");
    }

    #[test]
    fn an_upstream_file_records_its_release_and_is_rerouted_or_failed_closed() {
        let servers = [Server { addr: "10.1.128.2:8080".into(), container: "abc".into() }];
        let text = render_upstream("web", &servers, "project web:1") + "server {\n    listen 80;\n}\n";
        assert_eq!(parse_releases(&text), servers);
        assert_eq!(parse_upstream(&text), ["10.1.128.2:8080"]);
        let moved = reroute(&text, &["10.1.0.7:8080".into()], "");
        assert_eq!(parse_upstream(&moved), ["10.1.0.7:8080"]);
        assert_eq!(parse_releases(&moved), servers);
        let closed = reroute(&text, &[], "container abc is gone");
        assert!(parse_upstream(&closed).is_empty(), "{closed}");
        assert!(closed.contains("    # pipe failed closed: container abc is gone\n    server 127.0.0.1:9 down;\n}\nserver {\n    listen 80;"), "{closed}");
        assert_eq!(parse_upstream(&reroute(&closed, &["10.1.128.2:8080".into()], "")), ["10.1.128.2:8080"]);
    }

    #[test]
    fn an_upstream_host_replaces_the_service_name() {
        let c = config(&TWO_PROJECTS.replace("timeout = \"2m\"\n", "timeout = \"2m\"\nupstream = \"127.0.0.1\"\n"));
        let text = generate(&c).unwrap();
        assert!(text.contains("proxy_pass http://127.0.0.1:$pipe_port;"), "{text}");
        // nginx on the host: no Docker DNS server to name, nothing to look up.
        assert!(!text.contains("resolver") && !text.contains("Docker"), "{text}");
        // An upstream host given by name is looked up through the resolver the file names.
        let c = config(&TWO_PROJECTS.replace("timeout = \"2m\"\n", "timeout = \"2m\"\nupstream = \"apps.lan\"\n"));
        let text = generate(&c).unwrap();
        assert!(text.contains("resolver 127.0.0.11 valid=10s") && text.contains("# apps.lan is looked up"), "{text}");
    }

    /// Regression: nginx on the host with every service switched got `resolver 127.0.0.11` and
    /// a header about Docker's DNS server, which the host does not have.
    #[test]
    fn switched_services_on_the_host_name_no_resolver() {
        let only_a = TWO_PROJECTS[..TWO_PROJECTS.find("[project.b]").unwrap()]
            .replace("timeout = \"2m\"\n", "timeout = \"2m\"\nupstreams = \"/etc/nginx/pipe\"\n");
        let text = generate(&config(&only_a)).unwrap();
        assert!(!text.contains("resolver") && !text.contains("Docker"), "{text}");
        assert!(
            text.contains("# Switched services go to the upstream group pipe writes into /etc/nginx/pipe"),
            "{text}"
        );
        assert!(text.contains("    client_max_body_size 50m;\n\n    location / {\n"), "{text}");
        // A service reached by its name (the command target's) still needs Docker's DNS server.
        let with_b = TWO_PROJECTS.replace("timeout = \"2m\"\n", "timeout = \"2m\"\nupstreams = \"/etc/nginx/pipe\"\n");
        let text = generate(&config(&with_b)).unwrap();
        assert!(text.contains("    resolver 127.0.0.11 valid=10s ipv6=off;\n\n    location"), "{text}");
        assert!(text.contains("found through Docker's DNS server (127.0.0.11)"), "{text}");
    }

    #[test]
    fn switched_services_go_to_the_upstream_groups_pipe_writes() {
        let c =
            config(&TWO_PROJECTS.replace("timeout = \"2m\"\n", "timeout = \"2m\"\nupstreams = \"/etc/nginx/pipe\"\n"));
        let text = generate(&c).unwrap();
        assert!(text.contains("\ninclude /etc/nginx/pipe/*.conf;\n"), "{text}");
        assert!(text.contains("map $pipe_service $pipe_backend {\n    default $pipe_service:$pipe_port;\n"), "{text}");
        // The compose target's services are switched; the command target's keeps its port.
        assert!(text.contains("    api   pipe-api;\n    web   pipe-web;\n}"), "{text}");
        assert!(!text.contains("pipe-admin"), "{text}");
        assert!(text.contains("proxy_pass http://$pipe_backend;"), "{text}");
        // The wildcard server comes first, so it stays the listener's default server.
        assert!(text.find("server_name ~^") < text.find("include /etc/nginx/pipe/"), "{text}");
    }

    #[test]
    fn a_preview_site_answers_its_own_name_through_its_own_group() {
        let c = config(TWO_PROJECTS);
        let text = render_site(&c.ingress, "pr-3.a.devel.example.com", "pipe-a-pr-3-api");
        assert!(text.contains("    server_name pr-3.a.devel.example.com;\n"), "{text}");
        assert!(text.contains("    proxy_pass http://pipe-a-pr-3-api;\n"), "{text}");
        assert!(text.contains("client_max_body_size 50m;") && text.contains("proxy_read_timeout 120s;"), "{text}");
    }

    #[test]
    fn one_service_name_with_two_ports_is_an_error_naming_both() {
        let text = TWO_PROJECTS.replace("admin = 9000", "api = 9000");
        let err = generate(&config(&text)).unwrap_err().to_string();
        assert!(err.contains("`api` has port 8080 in project `a` target `compose` but 9000 in project `b`"), "{err}");
    }

    #[test]
    fn values_that_could_smuggle_directives_are_refused_by_the_config() {
        for bad in [
            "[ingress]\ndomain = \"x.com; include /etc/passwd\"\n",
            "[ingress]\nbody_size = \"10m; root /\"\n",
            "[ingress]\nlisten = \"80 default_server\"\n",
            "[ingress]\nupstream = \"a b\"\n",
        ] {
            assert!(parse(Path::new("p.toml"), bad).is_err(), "{bad}");
        }
        let bad_service = TWO_PROJECTS.replace("admin = 9000", "\"Admin;x\" = 9000");
        let diags = parse(Path::new("p.toml"), &bad_service).unwrap_err();
        assert!(diags.iter().any(|d| d.message.contains("must be a DNS label")), "{diags:?}");
    }
}
