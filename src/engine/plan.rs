//! The build plan of one checkout: the pipeline file wins, then the repository's `.pipe.toml`,
//! then its `.jenkins-env` (image name only), then the defaults. Every path a repository names
//! is resolved inside the checkout ([`crate::trust::paths`]); its test-services file is parsed against
//! the allow-list ([`crate::trust::services`]) here, so a refused key fails the build with its
//! `file:line`. Secrets (`{ env }` / `{ file }` values) come only from the pipeline file, and
//! only when the ref is trusted.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use sha2::Digest as _;

use crate::config::{self, ArgValue, Project, RepoFile, SecretRef};
use crate::docker;
use crate::trust::paths;
use crate::trust::services::{self, Services};

/// How to build and test one checkout: the pipeline file wins, then `.pipe.toml`, then
/// `.jenkins-env` (image name only), then the defaults.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub image: String,
    /// The repository file that named the image (`.pipe.toml`, `.jenkins-env`), when the
    /// pipeline file did not: its tags may only replace images pipe built for this project, and
    /// no image repository another project or hook holds.
    pub image_from_repo: Option<&'static str>,
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub build_args: Vec<(String, String)>,
    /// Secret build args from the pipeline file (trusted refs only).
    pub secret_args: Vec<(String, SecretRef)>,
    pub test: Option<String>,
    pub test_env: Vec<(String, String)>,
    /// Secret test variables from the pipeline file (trusted refs only).
    pub test_secrets: Vec<(String, SecretRef)>,
    /// The test services the allow-list accepted, and the file they came from.
    pub test_services: Option<(PathBuf, Services)>,
    /// A project of several images: each one's build (the first is also `image`,
    /// `dockerfile` and `context` above); empty for a project of one image.
    pub images: Vec<ImagePlan>,
}

/// One image of a project with several: its build, the paths it depends on, its test.
#[derive(Debug, Clone)]
pub(crate) struct ImagePlan {
    /// The image's table name (`api` in `[project.p.images.api]`).
    pub name: String,
    pub image: String,
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    /// Path patterns relative to the repository (see [`crate::config::PathSet`]).
    pub paths: Vec<String>,
    pub test: Option<String>,
    /// A digest of what the build is made with: image, Dockerfile, context, paths, build args
    /// (literal values, secret names). Set once the plan is whole.
    pub recipe: String,
}

/// The images of a project with several: the pipeline file's `images`, else the repository's
/// (the whole table from one place: an image is never half the operator's, half the code's).
fn image_plans(
    name: &str,
    project: Option<&Project>,
    repo_file: &RepoFile,
    checkout: &Path,
) -> anyhow::Result<(Vec<ImagePlan>, bool)> {
    let (specs, from_repo) = match project.map(|p| &p.images).filter(|i| !i.is_empty()) {
        Some(images) => (images, false),
        None => (&repo_file.images, true),
    };
    let mut plans = Vec::new();
    for (key, spec) in specs {
        let spec = spec.get_ref();
        docker::validate_repository(&spec.image).map_err(|e| anyhow!("project `{name}`: image `{key}`: {e}"))?;
        let (dockerfile, context) = (spec.dockerfile(), spec.context());
        let what = format!("images.{key}");
        // The paths first: a symlink leading out is refused as the key it was named by.
        let dockerfile_path = paths::resolve(checkout, &dockerfile, &format!("{what}.dockerfile"))?;
        let context_path = paths::resolve(checkout, &context, &format!("{what}.context"))?;
        for ignore in [format!("{context}/.dockerignore"), format!("{dockerfile}.dockerignore")] {
            paths::read_repo_file(checkout, &ignore)
                .map_err(|e| e.context(format!("project `{name}`: cannot read `{ignore}`")))?;
        }
        plans.push(ImagePlan {
            name: key.clone(),
            image: spec.image.clone(),
            dockerfile: dockerfile_path,
            context: context_path,
            paths: spec.paths(),
            test: spec.test.clone(),
            recipe: String::new(),
        });
    }
    Ok((plans, from_repo))
}

/// Reads the repository's own files in `checkout` and merges them under the project's
/// settings. `trusted` is false for a pull request of a project that does not trust them:
/// its plan carries no secret.
pub(crate) fn plan(name: &str, project: Option<&Project>, checkout: &Path, trusted: bool) -> anyhow::Result<Plan> {
    let invalid = |file: &str| {
        let file = file.to_string();
        move |diagnostics| {
            anyhow::Error::new(crate::error::ConfigError { diagnostics })
                .context(format!("project `{name}`: invalid `{file}` in the repository"))
        }
    };
    let repo_file = match paths::read_repo_file(checkout, ".pipe.toml")
        .map_err(|e| e.context(format!("project `{name}`: cannot read `.pipe.toml`")))?
    {
        Some(text) => config::parse_repo_file(Path::new(".pipe.toml"), &text).map_err(invalid(".pipe.toml"))?,
        None => RepoFile::default(),
    };
    let jenkins_image = paths::read_repo_file(checkout, ".jenkins-env")
        .map_err(|e| e.context(format!("project `{name}`: cannot read `.jenkins-env`")))?
        .and_then(|t| config::parse_jenkins_env(&t));
    let (images, images_from_repo) = image_plans(name, project, &repo_file, checkout)?;
    let first = images.first();
    let image_from_repo = match first {
        Some(_) => images_from_repo.then_some(".pipe.toml"),
        None if project.and_then(|p| p.image.as_ref()).is_some() => None,
        None if repo_file.image.is_some() => Some(".pipe.toml"),
        None => Some(".jenkins-env"),
    };
    let image = first.map(|i| i.image.clone());
    let image =
        image.or(project.and_then(|p| p.image.clone())).or(repo_file.image.clone()).or(jenkins_image).ok_or_else(
            || {
                anyhow!(
                    "project `{name}` names no image\nhint: set `image` under [project.{name}] in the pipeline file, \
                 `image = \"…\"` in the repository's .pipe.toml, or `imagename=\"…\"` in its .jenkins-env"
                )
            },
        )?;
    docker::validate_repository(&image).map_err(|e| anyhow!("project `{name}`: {e}"))?;
    if docker::in_untrusted_namespace(&image) {
        bail!(
            "project `{name}`: the image `{image}` is under `{}`, where only untrusted refs' builds go\nhint: name \
             the image elsewhere",
            docker::UNTRUSTED_NAMESPACE
        );
    }
    let pick = |ours: Option<&String>, theirs: &Option<String>| ours.cloned().or_else(|| theirs.clone());
    let dockerfile =
        pick(project.and_then(|p| p.dockerfile.as_ref()), &repo_file.dockerfile).unwrap_or_else(|| "Dockerfile".into());
    let context = pick(project.and_then(|p| p.context.as_ref()), &repo_file.context).unwrap_or_else(|| ".".into());
    let services_file = pick(project.and_then(|p| p.test_services.as_ref()), &repo_file.test_services);
    let mut build_args = repo_file.build_args.clone();
    let mut test_env = repo_file.test_env.clone();
    let mut secret_args = Vec::new();
    let mut test_secrets = Vec::new();
    if let Some(p) = project {
        for (values, literal, secret) in
            [(&p.build_args, &mut build_args, &mut secret_args), (&p.test_env, &mut test_env, &mut test_secrets)]
        {
            for (key, value) in values {
                match value.get_ref() {
                    ArgValue::Literal(v) => {
                        literal.insert(key.clone(), v.clone());
                    }
                    ArgValue::Secret(_) => {
                        // The repository's value of the same name never stands in for a secret.
                        literal.remove(key);
                        if trusted && let Some(r) = value.get_ref().secret() {
                            secret.push((key.clone(), r));
                        }
                    }
                }
            }
        }
    }
    let test_services = match services_file {
        Some(file) => {
            paths::resolve(checkout, &file, "test_services")?;
            let text = paths::read_repo_file(checkout, &file)
                .map_err(|e| e.context(format!("project `{name}`: cannot read test services `{file}`")))?
                .ok_or_else(|| anyhow!("project `{name}`: the test services file `{file}` is not in the repository"))?;
            let parsed = services::parse(Path::new(&file), &text).map_err(invalid(&file))?;
            Some((PathBuf::from(file), parsed))
        }
        None => None,
    };
    let (dockerfile_path, context_path) = match first {
        Some(first) => (first.dockerfile.clone(), first.context.clone()),
        None => {
            // The docker CLI reads the context's `.dockerignore` (and BuildKit
            // `DOCKERFILE.dockerignore`) on the host: the same rules as every repository file,
            // so a link out is never followed.
            let resolved =
                (paths::resolve(checkout, &dockerfile, "dockerfile")?, paths::resolve(checkout, &context, "context")?);
            for ignore in [format!("{context}/.dockerignore"), format!("{dockerfile}.dockerignore")] {
                paths::read_repo_file(checkout, &ignore)
                    .map_err(|e| e.context(format!("project `{name}`: cannot read `{ignore}`")))?;
            }
            resolved
        }
    };
    let mut images = images;
    for i in &mut images {
        let secrets: Vec<&String> = secret_args.iter().map(|(k, _)| k).collect();
        let what =
            format!("{}\0{:?}\0{:?}\0{:?}\0{build_args:?}\0{secrets:?}", i.image, i.dockerfile, i.context, i.paths);
        let digest = sha2::Sha256::digest(what.as_bytes());
        i.recipe = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    }
    Ok(Plan {
        image,
        image_from_repo,
        dockerfile: dockerfile_path,
        context: context_path,
        build_args: build_args.into_iter().collect(),
        secret_args,
        test: if images.is_empty() { pick(project.and_then(|p| p.test.as_ref()), &repo_file.test) } else { None },
        test_env: test_env.into_iter().collect(),
        test_secrets,
        test_services,
        images,
    })
}
