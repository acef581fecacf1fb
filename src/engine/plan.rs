//! The build plan of one checkout: the pipeline file wins, then the repository's `.pipe.toml`,
//! then its `.jenkins-env` (image name only), then the defaults. Repository paths stay inside
//! the checkout.

use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail};

use crate::config::{self, Project, RepoFile};
use crate::docker;

/// How to build and test one checkout: the pipeline file wins, then `.pipe.toml`, then
/// `.jenkins-env` (image name only), then the defaults.
#[derive(Debug, Clone)]
pub struct Plan {
    pub image: String,
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub build_args: Vec<(String, String)>,
    pub test: Option<String>,
    pub test_env: Vec<(String, String)>,
    pub test_services: Option<PathBuf>,
}

/// Reads the repository's own files in `checkout` and merges them under the project's settings.
pub fn plan(name: &str, project: Option<&Project>, checkout: &Path) -> anyhow::Result<Plan> {
    let repo_file_path = checkout.join(".pipe.toml");
    let repo_file = match std::fs::read_to_string(&repo_file_path) {
        Ok(text) => config::parse_repo_file(Path::new(".pipe.toml"), &text).map_err(|diagnostics| {
            anyhow::Error::new(crate::error::ConfigError { diagnostics })
                .context(format!("project `{name}`: invalid `.pipe.toml` in the repository"))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RepoFile::default(),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("failed to read `{}`", repo_file_path.display()))),
    };
    let jenkins_image =
        std::fs::read_to_string(checkout.join(".jenkins-env")).ok().and_then(|t| config::parse_jenkins_env(&t));
    let image =
        project.and_then(|p| p.image.clone()).or(repo_file.image.clone()).or(jenkins_image).ok_or_else(|| {
            anyhow!(
                "project `{name}` names no image\nhint: set `image` under [project.{name}] in the pipeline file, \
                 `image = \"…\"` in the repository's .pipe.toml, or `imagename=\"…\"` in its .jenkins-env"
            )
        })?;
    docker::validate_repository(&image).map_err(|e| anyhow!("project `{name}`: {e}"))?;
    let pick = |ours: Option<&String>, theirs: &Option<String>| ours.cloned().or_else(|| theirs.clone());
    let dockerfile =
        pick(project.and_then(|p| p.dockerfile.as_ref()), &repo_file.dockerfile).unwrap_or_else(|| "Dockerfile".into());
    let context = pick(project.and_then(|p| p.context.as_ref()), &repo_file.context).unwrap_or_else(|| ".".into());
    let services = pick(project.and_then(|p| p.test_services.as_ref()), &repo_file.test_services);
    let mut build_args = repo_file.build_args.clone();
    let mut test_env = repo_file.test_env.clone();
    if let Some(p) = project {
        build_args.extend(p.build_args.clone());
        test_env.extend(p.test_env.clone());
    }
    Ok(Plan {
        image,
        dockerfile: inside(checkout, &dockerfile, "dockerfile")?,
        context: inside(checkout, &context, "context")?,
        build_args: build_args.into_iter().collect(),
        test: pick(project.and_then(|p| p.test.as_ref()), &repo_file.test),
        test_env: test_env.into_iter().collect(),
        test_services: services.map(|s| inside(checkout, &s, "test_services")).transpose()?,
    })
}

/// Joins a repository-relative path, refusing absolute paths and `..` (repo content must not
/// reach outside its checkout).
fn inside(root: &Path, relative: &str, key: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(relative);
    if path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        bail!("`{key} = \"{relative}\"` must be a path inside the repository (no `/` prefix, no `..`)");
    }
    Ok(root.join(path))
}
