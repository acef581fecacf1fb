//! The names a project or target holds outside pipe's own tables — its project name (the
//! `/forge/NAME` webhook path and the state's directories), compose projects and swarm stacks
//! (Docker's namespace), image repositories, ingress and preview host names — folded so that
//! names that differ only in case or punctuation are the same name. Discovery keeps out a
//! repository whose project would hold a name another holds (pure: no IO).
//!
//! Docker names are joined ones: compose (v1 and v2) names a project's volumes and networks
//! `PROJECT_NAME`, its containers `PROJECT_SERVICE_N` (v1) or `PROJECT-SERVICE-N` (v2), and a
//! swarm stack its services, networks, volumes, configs and secrets `STACK_NAME`. So two compose
//! projects or stacks `P` and `Q` can make the same Docker object exactly when `P` is `Q`, or
//! one is the other followed by `_` or `-` and more (`shop_db` makes `shop_db_data`, the volume
//! `db_data` of `shop`). Folded, that is: equal, or one is the other followed by `-` and more
//! ([`meet`]). Names in other spaces are compared whole.

use std::collections::BTreeMap;

use crate::config::{self, Config, Project};

/// Where a name lives: two names collide only in the same space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Space {
    /// Project names, forge names (`/forge/NAME`) and serve hooks (`/hooks/NAME`).
    Name,
    /// Compose projects and swarm stacks: containers, networks and volumes carry them.
    Docker,
    /// Image repositories (without tag or digest).
    Image,
    /// Host names the ingress answers: `SERVICE.DOMAIN` and preview hosts.
    Host,
}

/// One name held: its space, its folded form, and how to say it.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub space: Space,
    pub folded: String,
    /// E.g. "compose project `web`".
    pub what: String,
}

/// A name folded for comparison: lowercase, every run of characters other than ASCII letters
/// and digits one `-`, no `-` at either end. `My_App`, `my.app` and `MY-APP` fold alike.
pub(crate) fn fold(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Whether two folded names in `space` are one name to whoever reads them: equal, or in
/// [`Space::Docker`] one the other followed by `-` and more (a `_` or `-` before folding),
/// since Docker joins a compose project's or stack's name to its objects' with `_` or `-`.
pub(crate) fn meet(space: Space, a: &str, b: &str) -> bool {
    let extends = |long: &str, short: &str| long.strip_prefix(short).is_some_and(|rest| rest.starts_with('-'));
    a == b || (space == Space::Docker && (extends(a, b) || extends(b, a)))
}

/// Names held, each with what it says about its holder, looked up by every held name a name
/// meets ([`meet`]): the same folded name, and for a Docker name also each shorter name it
/// extends and each longer one extending it.
pub(crate) struct Register<T> {
    held: BTreeMap<(Space, String), T>,
}

impl<T> Register<T> {
    pub(crate) fn new() -> Self {
        Register { held: BTreeMap::new() }
    }

    /// What `held` maps to, made by `first` when nobody held it before.
    pub(crate) fn hold(&mut self, held: &Held, first: impl FnOnce() -> T) -> &mut T {
        self.held.entry((held.space, held.folded.clone())).or_insert_with(first)
    }

    /// What every held name that `name` meets maps to, the same name first.
    pub(crate) fn met(&self, name: &Held) -> Vec<&T> {
        let mut found: Vec<&T> = self.held.get(&(name.space, name.folded.clone())).into_iter().collect();
        if name.space == Space::Docker {
            let shorter = name.folded.match_indices('-').map(|(i, _)| &name.folded[..i]);
            found.extend(shorter.filter_map(|s| self.held.get(&(Space::Docker, s.to_string()))));
            // Every name extending it sorts from `NAME-` on, together.
            found.extend(
                self.held
                    .range((Space::Docker, format!("{}-", name.folded))..)
                    .take_while(|((space, n), _)| meet(*space, n, &name.folded))
                    .map(|(_, t)| t),
            );
        }
        found
    }
}

fn held(space: Space, name: &str, what: String) -> Held {
    Held { space, folded: fold(name), what }
}

/// An image reference's repository: the tag and digest dropped.
fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(r, _)| r);
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

/// An image repository as a registry stores it, for comparison: lowercase, no empty path
/// component, and Docker Hub's host aliases (`index.docker.io`, `registry-1.docker.io`) made
/// `docker.io`, with `library/` before a one-component name there. A name without a registry
/// host (no `.` or `:` in its first component, not `localhost`) is left as written.
pub(crate) fn canonical(repo: &str) -> String {
    let lower = repo.trim().to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('/').filter(|p| !p.is_empty()).collect();
    let Some((first, rest)) = parts.split_first() else { return String::new() };
    let is_host = first.contains('.') || first.contains(':') || *first == "localhost";
    if !is_host || rest.is_empty() {
        return parts.join("/");
    }
    let host = match *first {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        host => host,
    };
    if host == "docker.io" && rest.len() == 1 {
        return format!("docker.io/library/{}", rest[0]);
    }
    format!("{host}/{}", rest.join("/"))
}

/// The URL of every registry entry `project`'s deploy entries push to (any branch), once each.
pub(crate) fn registries_of<'a>(config: &'a Config, project: &Project) -> Vec<&'a str> {
    let mut urls: Vec<&str> = Vec::new();
    let pushed = project.deploy.iter().flat_map(|d| d.get_ref().push.iter());
    for registry in pushed.filter_map(|r| config.registries.get(r.get_ref().as_str())) {
        if !urls.contains(&registry.url.as_str()) {
            urls.push(registry.url.as_str());
        }
    }
    urls
}

/// Every repository image `image` is written under: its own name on the engine that builds
/// it, and `REGISTRY/IMAGE` for each registry URL a push sends it to (the name `docker tag`
/// and `docker push` use, then [`canonical`]), so that two registry entries on one host (`REG`
/// and `REG/team`) give `team/x` and `x` one name.
pub(crate) fn written_as(image: &str, registries: &[&str]) -> Vec<String> {
    let repo = repository(image);
    let mut forms = vec![repo.to_string()];
    for url in registries {
        for form in [format!("{}/{repo}", url.trim_end_matches('/')), canonical(&format!("{url}/{repo}"))] {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
    }
    forms
}

/// Every name project `name` holds.
pub(crate) fn of_project(config: &Config, name: &str, project: &Project) -> Vec<Held> {
    let mut names = vec![held(Space::Name, name, format!("project name `{name}`"))];
    let registries = registries_of(config, project);
    for image in project.image.iter().chain(project.images.values().map(|i| &i.get_ref().image)) {
        for repo in written_as(image, &registries) {
            names.push(held(Space::Image, &repo, format!("image repository `{repo}`")));
        }
    }
    for deploy in &project.deploy {
        let deploy = deploy.get_ref();
        if let Some(compose) = &deploy.compose {
            let p = compose.project.as_deref().unwrap_or(name);
            names.push(held(Space::Docker, p, format!("compose project `{p}`")));
        }
        if let Some(swarm) = &deploy.swarm {
            names.push(held(Space::Docker, &swarm.stack, format!("swarm stack `{}`", swarm.stack)));
        }
        for service in deploy.ingress.keys() {
            let host = format!("{service}.{}", config.ingress.domain);
            names.push(held(Space::Host, &host, format!("host `{host}`")));
            if deploy.previews {
                let template = config::preview_host_template(deploy);
                // `{pr}` stays as written: two templates collide when they would for any number.
                let host = template
                    .replace("{project}", name)
                    .replace("{service}", service)
                    .replace("{domain}", &config.ingress.domain);
                names.push(held(Space::Host, &host, format!("preview host `{host}`")));
            }
        }
    }
    names
}

/// The names held by what is not a project: forges (`/forge/FORGE`) and the receiver's hooks
/// (`/hooks/NAME`, their compose projects, stacks and ingress hosts).
pub(crate) fn of_others(config: &Config) -> Vec<(String, Held)> {
    let mut names = Vec::new();
    for forge in config.forges.keys() {
        names.push((format!("forge `{forge}`"), held(Space::Name, forge, format!("webhook path `/forge/{forge}`"))));
    }
    for (hook, h) in &config.serve.hooks {
        let owner = format!("serve hook `{hook}`");
        names.push((owner.clone(), held(Space::Name, hook, format!("hook name `{hook}`"))));
        if let Some(compose) = &h.compose {
            let p = compose.project.clone().unwrap_or_else(|| config::Hook::default_project(hook));
            names.push((owner.clone(), held(Space::Docker, &p, format!("compose project `{p}`"))));
        }
        if let Some(swarm) = &h.swarm {
            names.push((owner.clone(), held(Space::Docker, &swarm.stack, format!("swarm stack `{}`", swarm.stack))));
        }
        for service in h.ingress.keys() {
            let host = format!("{service}.{}", config.ingress.domain);
            names.push((owner.clone(), held(Space::Host, &host, format!("host `{host}`"))));
        }
        // The images the hook deploys: a pattern with a wildcard is matched by
        // [`hook_deploys`] instead.
        for image in h.images.iter().filter(|i| !i.contains('*')) {
            let repo = repository(image);
            let what = format!("image repository `{repo}`");
            names.push((owner.clone(), Held { space: Space::Image, folded: fold(&canonical(repo)), what }));
        }
    }
    names
}

/// The serve hook whose `images` patterns let it deploy `project`'s image repository, as it
/// is built or as its pushes write it ([`written_as`]), if any: a discovered project pushing
/// there would choose what that hook runs.
pub(crate) fn hook_deploys(config: &Config, project: &Project) -> Option<(String, String)> {
    let registries = registries_of(config, project);
    let images = project.image.iter().chain(project.images.values().map(|i| &i.get_ref().image));
    images.flat_map(|i| written_as(i, &registries)).find_map(|image| hook_allowing(config, &image))
}

/// The serve hook whose `images` patterns match repository `repo` (also in its [`canonical`]
/// form): `(holder, what)`.
fn hook_allowing(config: &Config, repo: &str) -> Option<(String, String)> {
    let canonical = canonical(repo);
    config
        .serve
        .hooks
        .iter()
        .find(|(_, h)| h.allowed.is_match(repo) || h.allowed.is_match(&canonical))
        .map(|(hook, _)| (format!("serve hook `{hook}`"), format!("image repository `{repo}` (`images`)")))
}

/// Who holds image repository `image` besides project `name`, when `name`'s repository content
/// chose it: another project (written out or discovered) naming it in `image` or `images`, a
/// serve hook naming it, or a serve hook whose `images` patterns let it deploy it. Every name
/// is compared as it is written: `image` on the engine and under every registry `project`
/// pushes to, against each other project's image on the engine and under every registry it
/// pushes to, and each hook's names ([`written_as`]), folded as discovery compares. `(holder,
/// what)`, e.g. ("project `web`", "image repository `registry.example/team/web`").
pub(crate) fn image_holder(
    config: &Config,
    name: &str,
    project: Option<&Project>,
    image: &str,
) -> Option<(String, String)> {
    let registries = project.map(|p| registries_of(config, p)).unwrap_or_default();
    let forms = written_as(image, &registries);
    let folded: Vec<String> = forms.iter().map(|f| fold(f)).collect();
    let projects = config.projects.iter().filter(|(other, _)| other.as_str() != name).flat_map(|(other, p)| {
        of_project(config, other, p).into_iter().map(move |h| (format!("project `{other}`"), h))
    });
    projects
        .chain(of_others(config))
        .find(|(_, held)| held.space == Space::Image && folded.contains(&held.folded))
        .map(|(owner, held)| (owner, held.what))
        .or_else(|| forms.iter().find_map(|form| hook_allowing(config, form)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_differ_in_case_or_punctuation_fold_alike() {
        for variant in ["My_App", "my.app", "MY-APP", "my--app", "-my_app-", "my app"] {
            assert_eq!(fold(variant), "my-app", "{variant}");
        }
        assert_ne!(fold("myapp"), fold("my-app"));
        assert_eq!(repository("r.example/team/web:1.2"), "r.example/team/web");
        assert_eq!(repository("localhost:5000/web"), "localhost:5000/web");
        assert_eq!(repository("r/web@sha256:abc"), "r/web");
    }

    #[test]
    fn docker_names_meet_when_one_joins_the_other_with_an_underscore_or_dash() {
        let docker = |n: &str| held(Space::Docker, n, format!("compose project `{n}`"));
        // `shop_db`'s volume `data` and `shop`'s `db_data` are both `shop_db_data`; `shop-db`'s
        // v2 container `web-1` and `shop`'s service `db-web` are both `shop-db-web-1`.
        for (a, b) in
            [("shop", "shop_db"), ("shop_db", "shop"), ("shop", "shop-db"), ("Shop", "shop__db_x"), ("a", "a")]
        {
            assert!(meet(Space::Docker, &fold(a), &fold(b)), "{a} {b}");
        }
        // No separator between them: Docker never makes `shopdb_…` from `shop`.
        for (a, b) in [("shop", "shopdb"), ("shop", "sho"), ("shop_db", "shop_dc"), ("db", "shop_db")] {
            assert!(!meet(Space::Docker, &fold(a), &fold(b)), "{a} {b}");
        }
        // Other spaces compare whole.
        assert!(!meet(Space::Name, "shop", "shop-db"));

        let mut register = Register::new();
        for n in ["shop", "web_api", "cart"] {
            register.hold(&docker(n), || n.to_string());
        }
        let met = |n: &str| register.met(&docker(n)).into_iter().cloned().collect::<Vec<_>>();
        assert_eq!(met("shop_db"), ["shop"]);
        assert_eq!(met("web"), ["web_api"]);
        assert_eq!(met("shop"), ["shop"]);
        assert!(met("shopdb").is_empty() && met("car").is_empty() && met("cart2").is_empty());
        assert!(register.met(&held(Space::Name, "shop_db", String::new())).is_empty());
    }

    #[test]
    fn an_image_another_project_or_hook_holds_is_found_folded() {
        let text = r#"
[project.owner]
repo = "https://git.example/owner.git"
branches = ["main"]
image = "team/owner:1"

[project.multi]
repo = "https://git.example/multi.git"
branches = ["main"]
[project.multi.images.api]
image = "team/api"

[project.taker]
repo = "https://git.example/taker.git"
branches = ["main"]

[serve.hooks.h]
token_env = "T"
command = { argv = ["true"] }
images = ["team/exact", "shop/*"]
"#;
        let config = crate::config::parse(std::path::Path::new("pipe.toml"), text).expect("valid");
        let taker = config.projects.get("taker");
        let holder = |image| image_holder(&config, "taker", taker, image).map(|(who, _)| who);
        assert_eq!(holder("team/owner").as_deref(), Some("project `owner`"));
        assert_eq!(holder("Team/Owner:2").as_deref(), Some("project `owner`"));
        assert_eq!(holder("team.api").as_deref(), Some("project `multi`"));
        assert_eq!(holder("team/exact:3").as_deref(), Some("serve hook `h`"));
        assert_eq!(holder("shop/front").as_deref(), Some("serve hook `h`"));
        assert_eq!(holder("team/taker"), None);
        // A project's own image is not held against it.
        assert_eq!(image_holder(&config, "owner", config.projects.get("owner"), "team/owner"), None);
    }

    #[test]
    fn an_image_is_compared_as_every_push_writes_it() {
        assert_eq!(canonical("Reg.Example:5000//team/"), "reg.example:5000/team");
        assert_eq!(canonical("index.docker.io/node"), "docker.io/library/node");
        assert_eq!(canonical("team/x"), "team/x");
        assert_eq!(written_as("team/x:1", &["reg:5000/"]), ["team/x", "reg:5000/team/x"]);
        let text = r#"
[registry.team]
url = "reg.example:5000/team"
[registry.all]
url = "REG.example:5000/"

[project.owner]
repo = "https://git.example/owner.git"
branches = ["main"]
image = "app"
[[project.owner.deploy]]
branches = ["main"]
push = ["team"]

[project.taker]
repo = "https://git.example/taker.git"
branches = ["main"]
[[project.taker.deploy]]
branches = ["main"]
push = ["all"]

[serve.hooks.h]
token_env = "T"
command = { argv = ["true"] }
images = ["reg.example:5000/prod/web", "reg.example:5000/shop/*"]
"#;
        let config = crate::config::parse(std::path::Path::new("pipe.toml"), text).expect("valid");
        let taker = config.projects.get("taker");
        let holder = |image| image_holder(&config, "taker", taker, image).map(|(who, _)| who);
        // Pushed through `all`, `team/app` is `owner`'s `reg.example:5000/team/app`.
        assert_eq!(holder("team/app").as_deref(), Some("project `owner`"));
        assert_eq!(holder("app").as_deref(), Some("project `owner`"));
        // Pushed, `prod/web` and `shop/front` are what hook `h` deploys.
        assert_eq!(holder("prod/web:2").as_deref(), Some("serve hook `h`"));
        assert_eq!(holder("shop/front").as_deref(), Some("serve hook `h`"));
        assert_eq!(holder("team/other"), None);
        // Without a push to that registry, the bare names meet nothing.
        assert_eq!(image_holder(&config, "nobody", None, "prod/web"), None);
        // The owner pushing its own image again is not refused.
        assert_eq!(image_holder(&config, "owner", config.projects.get("owner"), "app"), None);
    }
}
