//! The repository's own files: `.pipe.toml` and a Jenkins-era `.jenkins-env`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use super::document::Cx;
use super::images::{ImageSpec, validate_images};
use crate::error::Diagnostic;

/// `.pipe.toml` at a repository's root: how to build and test it, and nothing that runs on the
/// host. Every key is optional; the operator's pipeline file wins where both set one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepoFile {
    pub image: Option<String>,
    pub dockerfile: Option<String>,
    pub context: Option<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    pub test: Option<String>,
    #[serde(default)]
    pub test_env: BTreeMap<String, String>,
    pub test_services: Option<String>,
    /// Several images (`[images.NAME]`), as in the pipeline file.
    #[serde(default)]
    pub images: BTreeMap<String, Spanned<ImageSpec>>,
}

/// Keys a repository might try to set that only the operator may: they run on the host.
pub(super) const HOST_SIDE_KEYS: [&str; 6] = ["deploy", "hooks", "command", "commands", "notify", "registry"];

/// Parses `.pipe.toml` text; errors carry `path:line:column`.
pub(crate) fn parse_repo_file(path: &Path, text: &str) -> Result<RepoFile, Vec<Diagnostic>> {
    let mut cx = Cx::new(path, text);
    cx.pipeline = false;
    let mut doc = cx.document()?;
    let entries = std::mem::take(&mut doc);
    for (key, value) in entries {
        let name: &str = key.get_ref().as_ref();
        if HOST_SIDE_KEYS.contains(&name) {
            cx.error(
                Some(key.span()),
                format!("a repository's `.pipe.toml` cannot define `{name}`: what runs on the host comes only from the operator's pipeline file"),
            );
        } else {
            doc.insert(key, value);
        }
    }
    let span = 0..text.len();
    let file = cx.de::<RepoFile>(Spanned::new(span, DeValue::Table(doc)));
    if let Some(file) = &file {
        let single: Vec<&str> = [
            ("image", file.image.is_some()),
            ("dockerfile", file.dockerfile.is_some()),
            ("context", file.context.is_some()),
            ("test", file.test.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set && !file.images.is_empty())
        .map(|(k, _)| k)
        .collect();
        validate_images(&mut cx, &[], &file.images, &single);
    }
    match (file, cx.diagnostics.is_empty()) {
        (Some(file), true) => Ok(file),
        _ => Err(cx.diagnostics),
    }
}

/// The image name in a Jenkins-era `.jenkins-env` (`imagename="…"`, quotes optional).
pub(crate) fn parse_jenkins_env(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim().strip_prefix("export ").unwrap_or(line.trim());
        let value = line.strip_prefix("imagename=")?.trim();
        let value = value.trim_matches('"').trim_matches('\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_file_cannot_define_host_side_commands() {
        let text = "image = \"app\"\n[[deploy]]\ncommand = { argv = [\"rm\", \"-rf\", \"/\"] }\n";
        let errs = parse_repo_file(Path::new(".pipe.toml"), text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].to_string().starts_with(".pipe.toml:2:3: a repository's `.pipe.toml` cannot define `deploy`"),
            "{errs:?}"
        );
        let ok = parse_repo_file(Path::new(".pipe.toml"), "image = \"app\"\ntest = \"make test\"\n").unwrap();
        assert_eq!(ok.image.as_deref(), Some("app"));
        assert!(parse_repo_file(Path::new(".pipe.toml"), "imag = 1\n").is_err());
    }

    #[test]
    fn jenkins_env_names_the_image() {
        assert_eq!(parse_jenkins_env("# x\nimagename=\"team/app\"\nother=1\n").as_deref(), Some("team/app"));
        assert_eq!(parse_jenkins_env("export imagename=app\n").as_deref(), Some("app"));
        assert_eq!(parse_jenkins_env("name=app\n"), None);
    }
}
