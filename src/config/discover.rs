//! `[forge.NAME.discover]`: which repositories of an organization become projects, and the
//! template they become. Pure: the listing itself is `forge::discover`'s, the per-tick choice
//! `engine::discover`'s; here a repository's name turns into a validated [`Project`].

use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::document::Cx;
use super::forge::Discover;
use super::patterns::Patterns;
use super::project::Project;
use super::types::Config;
use super::validate;
use crate::error::Diagnostic;

/// The longest repository name taken from a listing (GitHub allows 100).
pub(crate) const MAX_REPO_NAME: usize = 100;

/// A repository name as a forge lists it: letters, digits, `.`, `_`, `-`, not starting with
/// `.` or `-`, at most [`MAX_REPO_NAME`] bytes. Anything else is refused before it is used.
pub(crate) fn valid_repo_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_REPO_NAME
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The project a repository becomes: its name lowercased, `.` made `-`; `None` when that is
/// still not a valid project name.
pub(crate) fn project_name(repo: &str) -> Option<String> {
    let name: String = repo.to_ascii_lowercase().chars().map(|c| if c == '.' { '-' } else { c }).collect();
    super::document::validate_name(&name).ok().map(|()| name)
}

impl Discover {
    /// Whether the include/exclude patterns take the repository named `repo`.
    pub(crate) fn wants(&self, repo: &str) -> bool {
        self.included.is_match(repo) && !self.excluded.is_match(repo)
    }
}

/// One repository as the instantiation needs it: all of it already validated by the listing.
pub(crate) struct Candidate<'a> {
    /// The project name ([`project_name`] of `repo`).
    pub name: &'a str,
    /// The repository's name on the forge.
    pub repo: &'a str,
    /// `owner/repo` (GitLab: `group/project`), the project's `forge_repo`.
    pub full_name: &'a str,
    /// The clone URL the listing gave, used when the template sets no `repo`.
    pub clone_url: &'a str,
}

/// Splits `discover` (and its `project` template) off a `[forge.NAME]` table and reads it.
pub(super) fn take(cx: &mut Cx<'_>, forge: &str, table: &mut DeTable<'_>) -> Option<Discover> {
    let value = table.remove("discover")?;
    let span = value.span();
    let DeValue::Table(mut inner) = value.into_inner() else {
        cx.error(Some(span), format!("`forge.{forge}.discover` must be a table"));
        return None;
    };
    let template = inner.remove("project");
    let mut discover = cx.de::<Discover>(Spanned::new(span.clone(), DeValue::Table(inner)))?;
    let Some(template) = template else {
        cx.error(
            Some(span),
            format!("`forge.{forge}.discover` needs a `[forge.{forge}.discover.project]` template (branches, image, deploy targets)"),
        );
        return None;
    };
    let template_span = template.span();
    let table: toml::Table = cx.de(template)?;
    if table.contains_key("forge") || table.contains_key("forge_repo") {
        cx.error(
            Some(template_span.clone()),
            format!("`forge.{forge}.discover.project`: `forge` and `forge_repo` come from the listing; drop them"),
        );
    }
    discover.template = table;
    let patterns = |cx: &mut Cx<'_>, key: &str, list: &[String]| {
        let globs = list.iter().map(|p| {
            globset::GlobBuilder::new(p).literal_separator(true).build().map_err(|e| format!("`{p}`: {}", e.kind()))
        });
        let mut builder = globset::GlobSetBuilder::new();
        for glob in globs {
            match glob {
                Ok(g) => {
                    builder.add(g);
                }
                Err(why) => {
                    cx.error_at(&["forge", forge, "discover", key], format!("invalid repository pattern {why}"))
                }
            }
        }
        Patterns::from_set(builder.build().unwrap_or_default())
    };
    discover.included = patterns(cx, "include", &discover.include);
    discover.excluded = patterns(cx, "exclude", &discover.exclude);
    if discover.webhook_secret_env.is_some() && discover.webhook_secret_file.is_some() {
        cx.error_at(
            &["forge", forge, "discover", "webhook_secret_file"],
            format!("forge `{forge}`: `discover`: set one of `webhook_secret_env` and `webhook_secret_file`, not both"),
        );
    }
    let org_ok = !discover.org.is_empty()
        && discover.org.len() <= 255
        && discover.org.split('/').all(|part| !part.is_empty() && !part.starts_with('.') && valid_repo_name(part));
    if !org_ok {
        cx.error_at(
            &["forge", forge, "discover", "org"],
            format!("forge `{forge}`: `discover.org` must be an organization name (GitLab: a group id or `group/subgroup` path)"),
        );
    }
    Some(discover)
}

/// Checks every forge's template once, as a repository named `example` would get it, and
/// reports what is wrong at the template's table.
pub(super) fn validate_templates(cx: &mut Cx<'_>, config: &Config) {
    for (forge, f) in &config.forges {
        let Some(discover) = &f.discover else { continue };
        let sample = Candidate {
            name: "example",
            repo: "example",
            full_name: "org/example",
            clone_url: "https://host/example.git",
        };
        if let Err(problems) = instantiate(config, forge, discover, &sample) {
            for problem in problems {
                cx.error_at(
                    &["forge", forge, "discover", "project"],
                    format!(
                        "forge `{forge}`: the discovery template, for a repository named `example`: {}",
                        problem.message
                    ),
                );
            }
        }
    }
}

/// The project `candidate` becomes: the template with `{name}` and `{repo}` replaced, `repo`
/// (unless the template sets it), `forge` and `forge_repo` added, then read and validated
/// exactly as a `[project.NAME]` in the pipeline file is.
pub(crate) fn instantiate(
    config: &Config,
    forge: &str,
    discover: &Discover,
    candidate: &Candidate<'_>,
) -> Result<Project, Vec<Diagnostic>> {
    let mut table = discover.template.clone();
    for (_, value) in table.iter_mut() {
        substitute(value, candidate);
    }
    table.entry("repo").or_insert_with(|| candidate.clone_url.into());
    table.insert("forge".into(), forge.into());
    table.insert("forge_repo".into(), candidate.full_name.into());
    let mut projects = toml::Table::new();
    projects.insert(candidate.name.into(), toml::Value::Table(table));
    let mut doc = toml::Table::new();
    doc.insert("project".into(), toml::Value::Table(projects));
    let text = toml::to_string(&doc).map_err(|e| {
        vec![Diagnostic { path: config.path.clone(), line: 1, column: 1, message: format!("cannot render: {e}") }]
    })?;
    let label = format!("{} (project `{}` discovered on forge `{forge}`)", config.path.display(), candidate.name);
    let mut cx = Cx::new(Path::new(&label), &text);
    let doc = cx.document()?;
    let mut project = None;
    for (_, value) in doc {
        for (_, value) in cx.named_tables(value, "project") {
            project = cx.de::<Project>(value);
        }
    }
    let Some(mut project) = project else { return Err(cx.diagnostics) };
    let registries: Vec<String> = config.registries.keys().cloned().collect();
    validate::validate_project(&mut cx, candidate.name, &mut project, &registries);
    validate::validate_project_forge(&mut cx, &config.forges, candidate.name, &project);
    validate::validate_project_previews(&mut cx, &config.ingress, candidate.name, &project, &mut Default::default());
    if !cx.diagnostics.is_empty() {
        return Err(cx.diagnostics);
    }
    project.discovered = Some(forge.to_string());
    Ok(project)
}

fn substitute(value: &mut toml::Value, candidate: &Candidate<'_>) {
    match value {
        toml::Value::String(s) if s.contains('{') => {
            *s = s.replace("{name}", candidate.name).replace("{repo}", candidate.repo);
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, candidate)),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| substitute(v, candidate)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_from_a_listing_are_checked() {
        for good in ["app", "My.App", "a_b-c", "x1"] {
            assert!(valid_repo_name(good), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", "ü", "a\n", &"a".repeat(101)] {
            assert!(!valid_repo_name(bad), "{bad:?}");
        }
        assert_eq!(project_name("My.App").as_deref(), Some("my-app"));
        assert_eq!(project_name("_x"), None);
    }

    const FILE: &str = r#"
[forge.gh]
kind = "github"
token_env = "T"

[forge.gh.discover]
org = "acme"
exclude = ["old-*"]

[forge.gh.discover.project]
branches = ["main"]
image = "registry.example.com/{name}"

[[forge.gh.discover.project.deploy]]
branches = ["main"]
compose = { file = "/srv/{name}/compose.yml", project = "{name}" }
"#;

    #[test]
    fn the_template_becomes_a_validated_project_named_after_the_repository() {
        let config = super::super::parse(Path::new("pipeline.toml"), FILE).unwrap();
        let discover = config.forges["gh"].discover.as_ref().unwrap();
        assert!(discover.wants("web") && !discover.wants("old-web"));
        let candidate = Candidate {
            name: "my-app",
            repo: "My.App",
            full_name: "acme/My.App",
            clone_url: "https://github.com/acme/My.App.git",
        };
        let project = instantiate(&config, "gh", discover, &candidate).unwrap();
        assert_eq!(project.image.as_deref(), Some("registry.example.com/my-app"));
        assert_eq!(project.repo, "https://github.com/acme/My.App.git");
        assert_eq!(project.forge_repo.as_deref(), Some("acme/My.App"));
        assert_eq!(project.discovered.as_deref(), Some("gh"));
        let compose = project.deploy[0].get_ref().compose.as_ref().unwrap();
        assert_eq!(compose.project.as_deref(), Some("my-app"));
        assert!(project.tracks_branch("main"));
    }

    #[test]
    fn a_template_that_makes_no_valid_project_is_refused_at_its_table() {
        let bad = FILE.replace("branches = [\"main\"]\nimage", "branches = []\nimage");
        let errors = super::super::parse(Path::new("pipeline.toml"), &bad).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].line, 10);
        assert!(errors[0].message.contains("the discovery template"), "{}", errors[0].message);
        assert!(errors[0].message.contains("`branches` is empty"), "{}", errors[0].message);
        let no_template = FILE.split("[forge.gh.discover.project]").next().unwrap();
        let errors = super::super::parse(Path::new("pipeline.toml"), no_template).unwrap_err();
        assert!(errors[0].message.contains("needs a `[forge.gh.discover.project]` template"), "{errors:#?}");
    }
}
