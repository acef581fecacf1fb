//! `[project.NAME.images.IMAGE]` (and `[images.IMAGE]` in a repository's `.pipe.toml`): the
//! several images of one project, each with its own build, test and the paths it depends on.

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use toml::Spanned;

use super::document::Cx;

/// Images one project may declare.
pub(crate) const MAX_IMAGES: usize = 16;

/// One image of a project with several.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImageSpec {
    /// Image repository name.
    pub image: String,
    /// Dockerfile, relative to the repository [default: `CONTEXT/Dockerfile`].
    pub dockerfile: Option<String>,
    /// Build context, relative to the repository [default: `.`].
    pub context: Option<String>,
    /// Path patterns the image depends on (`*` within a segment, `**` across; a directory
    /// covers everything under it) [default: the context].
    pub paths: Option<Vec<String>>,
    /// Test command run with `sh -c` inside this image.
    pub test: Option<String>,
}

impl ImageSpec {
    pub(crate) fn context(&self) -> String {
        self.context.clone().unwrap_or_else(|| ".".into())
    }

    pub(crate) fn dockerfile(&self) -> String {
        self.dockerfile.clone().unwrap_or_else(|| match self.context().trim_end_matches('/') {
            "." | "" => "Dockerfile".into(),
            context => format!("{context}/Dockerfile"),
        })
    }

    /// The patterns of the paths this image depends on.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.paths.clone().unwrap_or_else(|| vec![self.context()])
    }
}

/// The name an image's deploy variables carry: `PIPE_IMAGE_<NAME>`, upper-cased, `-` as `_`.
pub(crate) fn env_name(image: &str) -> String {
    image.to_ascii_uppercase().replace('-', "_")
}

/// Compiled path patterns: a pattern matches a file when it matches the file's path or one of
/// its parent directories (`project1` covers `project1/api/views.py`).
#[derive(Debug, Clone)]
pub(crate) struct PathSet {
    set: GlobSet,
    everything: bool,
}

impl PathSet {
    pub(crate) fn compile(patterns: &[String]) -> Result<PathSet, String> {
        let mut builder = GlobSetBuilder::new();
        let mut everything = false;
        for pattern in patterns {
            check_pattern(pattern)?;
            let trimmed = pattern.trim_start_matches("./").trim_end_matches('/');
            if trimmed.is_empty() || trimmed == "." || trimmed == "**" {
                everything = true;
                continue;
            }
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("invalid path pattern `{pattern}`: {}", e.kind()))?;
            builder.add(glob);
        }
        Ok(PathSet { set: builder.build().map_err(|e| e.to_string())?, everything })
    }

    /// Whether `path` (relative, `/`-separated) is covered.
    pub(crate) fn covers(&self, path: &str) -> bool {
        if self.everything {
            return true;
        }
        let mut at = path;
        loop {
            if self.set.is_match(at) {
                return true;
            }
            match at.rsplit_once('/') {
                Some((parent, _)) => at = parent,
                None => return false,
            }
        }
    }
}

fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.starts_with('/') || pattern.split('/').any(|part| part == "..") {
        return Err(format!("invalid path pattern `{pattern}`: paths are relative to the repository, without `..`"));
    }
    if pattern.chars().any(char::is_control) {
        return Err(format!("invalid path pattern `{pattern}`: control characters"));
    }
    Ok(())
}

/// Whether an image's table name is valid: lowercase letters, digits, `-` and `_`, starting
/// with a letter, at most 32 characters (it becomes part of an environment variable's name).
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Checks the images of a project (`at`: the table path of the project, `["project", NAME]`,
/// or `[]` in a `.pipe.toml`): names, image repositories, paths. `single` lists the
/// single-image keys set beside `images`, which would be ambiguous.
pub(crate) fn validate_images(
    cx: &mut Cx<'_>,
    at: &[&str],
    images: &BTreeMap<String, Spanned<ImageSpec>>,
    single: &[&str],
) {
    if images.is_empty() {
        return;
    }
    let table = [at, &["images"]].concat();
    let owner = at.get(1).map_or("the repository".to_string(), |p| format!("project `{p}`"));
    if images.len() > MAX_IMAGES {
        cx.error_at(&table, format!("{owner}: {} images; at most {MAX_IMAGES}", images.len()));
    }
    for key in single {
        let path = [at, &[*key]].concat();
        cx.error_at(
            &path,
            format!("{owner}: `{key}` is set beside `images`; set it per image, under `images.NAME.{key}`"),
        );
    }
    let mut folded: BTreeMap<String, &str> = BTreeMap::new();
    for (name, spec) in images {
        let here = [table.as_slice(), &[name.as_str()]].concat();
        if !valid_name(name) {
            cx.error_at(
                &here,
                format!(
                    "{owner}: image name `{name}`: expected lowercase letters, digits, `-` and `_`, starting with a \
                     letter, at most 32 characters"
                ),
            );
        } else if let Some(other) = folded.insert(env_name(name), name) {
            cx.error_at(
                &here,
                format!("{owner}: images `{other}` and `{name}` would both set `PIPE_IMAGE_{}`", env_name(name)),
            );
        }
        let spec = spec.get_ref();
        let image_at = [here.as_slice(), &["image"]].concat();
        if let Err(e) = crate::docker::validate_repository(&spec.image) {
            cx.error_at(&image_at, format!("{owner}: image `{name}`: {e}"));
        } else if crate::docker::in_untrusted_namespace(&spec.image) {
            cx.error_at(
                &image_at,
                format!(
                    "{owner}: image `{name}`: `{}` is under `{}`, where only untrusted refs' builds go",
                    spec.image,
                    crate::docker::UNTRUSTED_NAMESPACE
                ),
            );
        }
        if let Some((other, _)) = images.iter().find(|(o, s)| *o < name && s.get_ref().image == spec.image) {
            cx.error_at(&image_at, format!("{owner}: images `{other}` and `{name}` name the same repository"));
        }
        for (key, value) in [("context", &spec.context), ("dockerfile", &spec.dockerfile)] {
            if let Some(value) = value
                && check_pattern(value).is_err()
            {
                let path = [here.as_slice(), &[key]].concat();
                cx.error_at(&path, format!("{owner}: image `{name}`: `{key}` must be relative, without `..`"));
            }
        }
        if let Some(paths) = &spec.paths {
            let path = [here.as_slice(), &["paths"]].concat();
            if paths.is_empty() {
                cx.error_at(&path, format!("{owner}: image `{name}`: `paths` is empty; omit it to mean the context"));
            }
            if let Err(e) = PathSet::compile(paths) {
                cx.error_at(&path, format!("{owner}: image `{name}`: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_pattern_covers_what_is_under_it() {
        let set = PathSet::compile(&["project1".into(), "shared/*.py".into(), "docs/**/api.md".into()]).unwrap();
        assert!(set.covers("project1/api/views.py"));
        assert!(set.covers("project1"));
        assert!(!set.covers("project1-front/index.html"), "a prefix of a name is not its directory");
        assert!(set.covers("shared/db.py"));
        assert!(!set.covers("shared/sub/db.py"));
        assert!(set.covers("docs/a/b/api.md"));
        assert!(!set.covers("README.md"));
        assert!(PathSet::compile(&[".".into()]).unwrap().covers("anything/at/all"));
        assert!(PathSet::compile(&["../up".into()]).is_err());
        assert!(PathSet::compile(&["/abs".into()]).is_err());
    }

    fn errors(text: &str) -> Vec<String> {
        match super::super::parse(std::path::Path::new("p.toml"), text) {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn images_are_checked_at_their_line() {
        let head = "[project.a]\nrepo = \"x\"\nbranches = [\"main\"]\n";
        let ok = format!("{head}[project.a.images.api]\nimage = \"t/api\"\ncontext = \"project1\"\ntest = \"true\"\n");
        assert_eq!(errors(&ok), Vec::<String>::new());
        let errs =
            errors(&format!("{head}image = \"t/x\"\n[project.a.images.Api]\nimage = \"T\"\npaths = [\"../x\"]\n"));
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].starts_with("p.toml:4:1: project `a`: `image` is set beside `images`"), "{errs:?}");
        assert!(errs[1].starts_with("p.toml:5:") && errs[1].contains("image name `Api`"), "{errs:?}");
        assert!(errs[2].starts_with("p.toml:6:") && errs[2].contains("invalid image name `T`"), "{errs:?}");
        assert!(errs[3].starts_with("p.toml:7:") && errs[3].contains("without `..`"), "{errs:?}");
        let clash = errors(&format!(
            "{head}[project.a.images.web-a]\nimage = \"t/a\"\n[project.a.images.web_a]\nimage = \"t/a\"\n"
        ));
        assert!(clash.iter().any(|e| e.contains("would both set `PIPE_IMAGE_WEB_A`")), "{clash:?}");
        assert!(clash.iter().any(|e| e.contains("name the same repository")), "{clash:?}");
        // The same table in a repository's `.pipe.toml`, under the same rules.
        let repo = super::super::parse_repo_file(
            std::path::Path::new(".pipe.toml"),
            "[images.api]\nimage = \"t/api\"\ncontext = \"/etc\"\n",
        )
        .unwrap_err();
        assert!(repo[0].to_string().starts_with(".pipe.toml:3:"), "{repo:?}");
    }

    #[test]
    fn defaults_follow_the_context() {
        let spec = ImageSpec { image: "x".into(), context: Some("project1".into()), ..Default::default() };
        assert_eq!(spec.dockerfile(), "project1/Dockerfile");
        assert_eq!(spec.paths(), ["project1"]);
        assert_eq!(ImageSpec::default().dockerfile(), "Dockerfile");
        assert_eq!(env_name("front-end"), "FRONT_END");
    }
}
