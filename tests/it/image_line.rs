//! The image line: a secret handed to a build never enters the image or anything pushed.
//! BuildKit mounts it for one `RUN` step; a builder that cannot (the legacy one) is refused
//! the build, and `pipe check` says so before any build. Both builders run here: the engine's
//! BuildKit through Debian's 20.10 CLI (`/usr/bin/docker`, BuildKit built in), the legacy
//! builder through the 28.x CLI without buildx that is first on `PATH`.

use std::path::Path;
use std::process::Command;

use crate::support::docker::{Docker, ProjectImages, Registry, unique_name};
use crate::support::{TestEnv, WorkRepo};

const NPM_TOKEN: &str = "npm-token-planted-161803";
const REG_PASSWORD: &str = "reg-pass-image-line-1414";
/// Debian's docker.io CLI: BuildKit built in.
const BUILTIN_BUILDKIT_CLI: &str = "/usr/bin/docker";

struct Fixture {
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    image: String,
    reg: Registry,
    _images: ProjectImages,
}

/// A project whose build reads `NPM_TOKEN` as a secret, pushing `main` to a real registry.
fn fixture(docker: &Docker) -> Fixture {
    let mut env = TestEnv::new();
    let reg = Registry::start("ci", REG_PASSWORD);
    let project = unique_name("img").replace("pipe-test-", "").replace('_', "-");
    let image = format!("pipe-test/{project}");
    let repo = WorkRepo::new(env.path(), "app");
    // The step proves it saw the secret (its length) without writing it anywhere.
    repo.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN --mount=type=secret,id=NPM_TOKEN test \"$(cat /run/secrets/NPM_TOKEN | wc -c)\" -eq {} && echo mounted > /mounted\nCOPY app.txt /app.txt\n",
            docker.base_image,
            NPM_TOKEN.len()
        ),
    )
    .write("app.txt", "v1\n")
    .write(".pipe.toml", &format!("image = \"{image}\"\ntest = \"grep -q mounted /mounted\"\n"));
    repo.commit_to("main", "reads a secret");
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[registry.local]
url = "{host}"
username = "ci"
password_env = "REG_PASSWORD"

[project.{project}]
repo = "{url}"
branches = ["main"]
build_args = {{ NPM_TOKEN = {{ env = "NPM_TOKEN" }} }}

[[project.{project}.deploy]]
branches = ["main"]
push = ["local"]
"#,
        ws = env.path().join("work").display(),
        host = reg.host(),
        url = repo.url(),
    ));
    env.env("REG_PASSWORD", REG_PASSWORD).env("NPM_TOKEN", NPM_TOKEN);
    Fixture { _images: ProjectImages { project: project.clone() }, env, repo, project, image, reg }
}

/// Every blob of every tag the registry holds for `repo`: manifests, configs, and each layer
/// decompressed.
fn registry_blobs(reg: &Registry, repo: &str, dir: &Path) -> Vec<Vec<u8>> {
    let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
    let mut blobs = Vec::new();
    for tag in reg.tags(repo) {
        let (status, _, manifest) = reg.get(&format!("/v2/{repo}/manifests/{tag}"), Some(accept));
        assert_eq!(status, 200, "manifest of {repo}:{tag}");
        let doc: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        blobs.push(manifest.into_bytes());
        let digests: Vec<String> = std::iter::once(&doc["config"])
            .chain(doc["layers"].as_array().unwrap().iter())
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect();
        assert!(digests.len() >= 2, "a config and layers: {doc}");
        for digest in digests {
            let file = dir.join(digest.replace(':', "-"));
            let out = Command::new("curl")
                .args(["-sf", "-u", &format!("{}:{}", reg.user, reg.password), "-o"])
                .arg(&file)
                .arg(format!("http://{}/v2/{repo}/blobs/{digest}", reg.host()))
                .status()
                .unwrap();
            assert!(out.success(), "blob {digest}");
            let raw = std::fs::read(&file).unwrap();
            let unpacked = Command::new("gzip").arg("-dc").arg(&file).output().unwrap();
            blobs.push(if unpacked.status.success() { unpacked.stdout } else { raw });
        }
    }
    blobs
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_secret_build_arg_is_mounted_by_buildkit_and_found_in_no_blob_the_registry_holds() {
    let Some(docker) = Docker::require() else { return };
    let mut f = fixture(&docker);
    f.env.env("PIPE_DOCKER", BUILTIN_BUILDKIT_CLI);
    f.env.pipe(&["check"]).code(0);
    let run = f.env.pipe(&["run", "-vv"]);
    run.code(0);
    let logs = f.env.pipe(&["logs", &f.project, "main"]);
    logs.code(0).stdout_has("--secret id=NPM_TOKEN,env=NPM_TOKEN");
    assert!(!logs.stdout.contains("--build-arg NPM_TOKEN"), "{}", logs.stdout);
    let tags = f.reg.tags(&f.image);
    assert!(tags.contains(&"latest".to_string()), "pushed: {tags:?}");
    // Every byte the registry holds for the image, layers unpacked.
    let dir = tempfile::tempdir().unwrap();
    let blobs = registry_blobs(&f.reg, &f.image, dir.path());
    let encoded = base64(NPM_TOKEN);
    for blob in &blobs {
        assert!(!contains(blob, NPM_TOKEN) && !contains(blob, &encoded), "the secret is in a pushed blob");
    }
    // The layers were unpacked and read: tar archives, one holding the step's output file.
    let layers: Vec<&Vec<u8>> = blobs.iter().filter(|b| contains(b, "ustar")).collect();
    assert!(layers.iter().any(|l| contains(l, "mounted\n")), "no layer read holds /mounted");
    // The local image: its history and config.
    let local = format!("{}:latest", f.image);
    let history = docker.ok(&["history", "--no-trunc", &local]);
    let inspect = docker.ok(&["image", "inspect", &local]);
    assert!(!history.contains(NPM_TOKEN) && !inspect.contains(NPM_TOKEN), "{history}\n{inspect}");
    // Nor in anything pipe printed or wrote.
    for text in [&run.stdout, &run.stderr, &logs.stdout] {
        assert!(!text.contains(NPM_TOKEN));
    }
    let state = f.env.state_path().parent().unwrap().to_path_buf();
    for file in walk(&state) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!contains(&bytes, NPM_TOKEN), "`{}` holds the secret", file.display());
    }
}

#[test]
fn the_legacy_builder_is_refused_a_secret_build_arg_and_check_says_so_before_any_build() {
    let Some(docker) = Docker::require() else { return };
    let mut f = fixture(&docker);
    // A host with the legacy builder alone (the 28.x CLI on PATH has no buildx plugin), or an
    // operator choosing it.
    f.env.env("PIPE_BUILDER", "legacy");
    f.env.pipe(&["check"]).code(0).stderr_has(&format!(
        "project `{}`: the secret build arg `NPM_TOKEN` would be written into the image by the legacy builder",
        f.project
    ));
    let run = f.env.pipe(&["run"]);
    run.code(1)
        .stderr_has("cannot build main: the secret build arg `NPM_TOKEN` would be written into the image")
        .stderr_has("RUN --mount=type=secret,id=NPM_TOKEN");
    assert!(f.reg.tags(&f.image).is_empty(), "nothing was pushed");
    let images = docker.ok(&["images", "--quiet", &f.image]);
    assert!(images.trim().is_empty(), "nothing was built: {images}");
    assert!(!run.stderr.contains(NPM_TOKEN) && !run.stdout.contains(NPM_TOKEN));
    // Chosen on a CLI with BuildKit, the legacy builder is refused the build all the same.
    f.env.env("PIPE_DOCKER", BUILTIN_BUILDKIT_CLI);
    f.env.pipe(&["run", "--retry"]).code(1).stderr_has("would be written into the image by the legacy builder");
    // Without the override, the same CLI builds it with BuildKit.
    f.env.env("PIPE_BUILDER", "");
    f.repo.write("app.txt", "v2\n").commit_to("main", "again");
    f.env.pipe(&["run"]).code(0);
    assert!(f.reg.tags(&f.image).contains(&"latest".to_string()));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    files
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn an_untrusted_ref_never_creates_or_moves_a_name_a_trusted_build_or_deploy_resolves() {
    let Some(docker) = Docker::require() else { return };
    let env = TestEnv::new();
    let project = unique_name("ns").replace("pipe-test-", "").replace('_', "-");
    let image = format!("pipe-test/{project}");
    // A base image a trusted build starts from, not on the host yet.
    let victim = format!("pipe-test/{project}-base");
    let _images = ProjectImages { project: project.clone() };
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY app.txt /app.txt\n", docker.base_image))
        .write("app.txt", "trusted\n")
        .write(".pipe.toml", &format!("image = \"{image}\"\ntest = \"true\"\n"));
    repo.commit_to("main", "trusted");
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"
default_branches = ["master", "main"]

[project.{project}]
repo = "{url}"
branches = ["**"]
trusted_branches = ["main"]
pull_requests = true
"#,
        ws = env.path().join("work").display(),
        url = repo.url(),
    ));
    env.pipe(&["run"]).code(0);
    let latest = docker.ok(&["image", "inspect", "--format", "{{.Id}}", &format!("{image}:latest")]);
    // Untrusted refs whose repository names the victim's image, on branches named like the
    // default branch and like the victim's tag, and a pull request.
    repo.write("app.txt", "untrusted\n").write(".pipe.toml", &format!("image = \"{victim}\"\ntest = \"true\"\n"));
    let sha = repo.commit_to("master", "untrusted master");
    git_push(&repo, "HEAD:refs/heads/1.0");
    git_push(&repo, "HEAD:refs/pull/5/head");
    env.pipe(&["run"]).code(0);
    let victims = docker.ok(&["image", "ls", "--quiet", &victim]);
    assert!(victims.trim().is_empty(), "an untrusted build created `{victim}`: {victims}");
    assert_eq!(
        docker.ok(&["image", "inspect", "--format", "{{.Id}}", &format!("{image}:latest")]),
        latest,
        "an untrusted branch moved `latest`"
    );
    let mine = format!("pipe-untrusted/{project}");
    let tags = docker.ok(&["image", "ls", "--format", "{{.Tag}}", &mine]);
    for tag in ["master", "1.0", "pr-5", &format!("{}-untrusted", &sha[..12])] {
        assert!(tags.lines().any(|t| t == tag), "`{mine}:{tag}` missing: {tags}");
    }
    assert!(!tags.lines().any(|t| t == "latest"), "an untrusted branch was tagged latest: {tags}");
    // A trusted build from the victim's name finds no image an untrusted ref made.
    repo.write("Dockerfile", &format!("FROM {victim}:1.0\nCOPY app.txt /app.txt\n"))
        .write(".pipe.toml", &format!("image = \"{image}\"\ntest = \"true\"\n"));
    repo.commit_to("main", "from the victim");
    env.pipe(&["run"]).code(1);
    let log = env.pipe(&["logs", &project, "main"]).stdout.clone();
    assert!(log.contains(&victim), "the build looked for `{victim}` and found nothing local: {log}");
    // The operator's own image under that name is what the trusted build starts from.
    docker.ok(&["tag", &docker.base_image, &format!("{victim}:1.0")]);
    let _victim = docker.image(&format!("{victim}:1.0"));
    env.pipe(&["run", "--retry"]).code(0);
    // Neither the pipeline file nor a repository may name an image under pipe's namespace.
    repo.write(".pipe.toml", &format!("image = \"{mine}\"\ntest = \"true\"\n"));
    repo.commit_to("main", "takes the untrusted namespace");
    env.pipe(&["run"]).code(1);
    env.pipe(&["logs", &project, "main"]).code(0).stdout_has("where only untrusted refs' builds go");
}

fn git_push(repo: &WorkRepo, refspec: &str) {
    crate::support::git(&repo.work, &["push", "--quiet", "--force", "origin", refspec]);
}
