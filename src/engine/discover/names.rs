//! The names a project or target holds outside pipe's own tables — its project name (the
//! `/forge/NAME` webhook path and the state's directories), compose projects and swarm stacks
//! (Docker's namespace), image repositories, ingress and preview host names — folded so that
//! names that differ only in case or punctuation are the same name. Discovery keeps out a
//! repository whose project would hold a name another holds (pure: no IO).

use crate::config::{self, Config, Project};

/// Where a name lives: two names collide only in the same space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Every name project `name` holds.
pub(crate) fn of_project(config: &Config, name: &str, project: &Project) -> Vec<Held> {
    let mut names = vec![held(Space::Name, name, format!("project name `{name}`"))];
    for image in project.image.iter().chain(project.images.values().map(|i| &i.get_ref().image)) {
        let repo = repository(image);
        names.push(held(Space::Image, repo, format!("image repository `{repo}`")));
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
            let p = compose.project.as_deref().unwrap_or(hook);
            names.push((owner.clone(), held(Space::Docker, p, format!("compose project `{p}`"))));
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
            names.push((owner.clone(), held(Space::Image, repo, format!("image repository `{repo}`"))));
        }
    }
    names
}

/// The serve hook whose `images` patterns let it deploy `project`'s image repository, if any:
/// a discovered project pushing there would choose what that hook runs.
pub(crate) fn hook_deploys(config: &Config, project: &Project) -> Option<(String, String)> {
    let images = project.image.iter().chain(project.images.values().map(|i| &i.get_ref().image));
    images.map(|i| repository(i)).find_map(|image| {
        config
            .serve
            .hooks
            .iter()
            .find(|(_, h)| h.allowed.is_match(image))
            .map(|(hook, _)| (format!("serve hook `{hook}`"), format!("image repository `{image}`")))
    })
}

/// Who holds image repository `image` besides project `name`, when `name`'s repository content
/// chose it: another project (written out or discovered) naming it in `image` or `images`, a
/// serve hook naming it, or a serve hook whose `images` patterns let it deploy it. Compared
/// folded, as discovery compares. `(holder, what)`, e.g. ("project `web`", "image repository
/// `team/web`").
pub(crate) fn image_holder(config: &Config, name: &str, image: &str) -> Option<(String, String)> {
    let repo = repository(image);
    let folded = fold(repo);
    let projects = config.projects.iter().filter(|(other, _)| other.as_str() != name).flat_map(|(other, p)| {
        of_project(config, other, p).into_iter().map(move |h| (format!("project `{other}`"), h))
    });
    projects
        .chain(of_others(config))
        .find(|(_, held)| held.space == Space::Image && held.folded == folded)
        .map(|(owner, held)| (owner, held.what))
        .or_else(|| {
            config
                .serve
                .hooks
                .iter()
                .find(|(_, h)| h.allowed.is_match(repo))
                .map(|(hook, _)| (format!("serve hook `{hook}`"), format!("image repository `{repo}` (`images`)")))
        })
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
        let holder = |image| image_holder(&config, "taker", image).map(|(who, _)| who);
        assert_eq!(holder("team/owner").as_deref(), Some("project `owner`"));
        assert_eq!(holder("Team/Owner:2").as_deref(), Some("project `owner`"));
        assert_eq!(holder("team.api").as_deref(), Some("project `multi`"));
        assert_eq!(holder("team/exact:3").as_deref(), Some("serve hook `h`"));
        assert_eq!(holder("shop/front").as_deref(), Some("serve hook `h`"));
        assert_eq!(holder("team/taker"), None);
        // A project's own image is not held against it.
        assert_eq!(image_holder(&config, "owner", "team/owner"), None);
    }
}
