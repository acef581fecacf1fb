//! Names a repository may not take: what a push makes of its image name (the registry's
//! prefix included), and what `--here` tags.

use std::process::Stdio;

use super::ImageCleanup;
use crate::support::docker::{Docker, ProjectImages, Registry, unique_name};
use crate::support::{TestEnv, WorkRepo};

/// A serve hook on the CI host deploys `REGISTRY/team/shop` (its `images`, the registry's
/// host included, as every hook must name what it pulls). A repository's `.pipe.toml` names
/// `team/shop`, which its project pushes to that very registry: `REGISTRY/team/shop`, the
/// repository the hook deploys. The refusal of a name a hook holds compares the repository's
/// bare name with the hook's patterns, never the name the push makes of it, so the build goes
/// ahead and the push lands in the hook's repository (its moving tags included).
#[test]
fn a_repository_cannot_push_into_the_repository_a_serve_hook_deploys() {
    let Some(docker) = Docker::require() else { return };
    let reg = Registry::start("ci", "pw-round2-hook");
    let mut env = TestEnv::new();
    env.env("REG_PW", "pw-round2-hook").env("HOOK_SECRET", "hook-secret-round2");
    let taker = unique_name("tk").replace("pipe-test-", "");
    let _images = ProjectImages { project: taker.clone() };
    let held = format!("team/{taker}-shop");
    let _cleanup = ImageCleanup { names: vec![held.clone(), format!("{}/{held}", reg.host())] };

    let repo = WorkRepo::new(env.path(), "taker");
    repo.write("Dockerfile", &format!("FROM {}\nRUN echo taker > /who\n", docker.base_image));
    repo.write(".pipe.toml", &format!("image = \"{held}\"\ntest = \"true\"\n"));
    repo.commit_to("main", "names the image the hook deploys");
    let compose = env.path().join("prod").join("docker-compose.yml");
    std::fs::create_dir_all(compose.parent().unwrap()).unwrap();
    std::fs::write(&compose, "services:\n  web:\n    image: ${PIPE_IMAGE}:${PIPE_TAG}\n").unwrap();

    let config = |image_line: &str| {
        format!(
            r#"[pipe]
workspace = "{ws}"

[registry.prod]
url = "{reg}"
username = "ci"
password_env = "REG_PW"

# The production hook on this host: it deploys what the registry holds under this name.
[serve.hooks.{taker}-deploy]
secret_env = "HOOK_SECRET"
images = ["{reg}/{held}"]
compose = {{ file = "{file}", project = "{taker}-prod" }}

[project.{taker}]
repo = "{url}"
branches = ["main"]
{image_line}

[[project.{taker}.deploy]]
branches = ["main"]
push = ["prod"]
"#,
            ws = env.path().join("work").display(),
            reg = reg.host(),
            file = compose.display(),
            url = repo.url(),
        )
    };

    // The legitimate path: a repository naming the hook's repository whole is refused.
    repo.write(".pipe.toml", &format!("image = \"{}/{held}\"\ntest = \"true\"\n", reg.host()));
    repo.commit_to("main", "names the hook's repository whole");
    env.config(&config(""));
    let whole = env.pipe(&["build", &taker, "main"]);
    assert!(
        whole.stderr.contains(&format!("serve hook `{taker}-deploy`")),
        "naming the hook's repository whole is not refused:\n{}",
        whole.stderr
    );

    // The attack: the bare name, which the push joins to the registry the hook pulls from.
    repo.write(".pipe.toml", &format!("image = \"{held}\"\ntest = \"true\"\n"));
    repo.commit_to("main", "names the image the hook deploys");
    let run = env.pipe(&["run", &taker]);
    let pushed = reg.tags(&held);
    assert!(
        pushed.is_empty(),
        "project `{taker}`'s repository pushed into `{}/{held}`, the repository serve hook `{taker}-deploy` deploys: \
         tags {pushed:?}\nstderr:\n{}",
        reg.host(),
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("serve hook `{taker}-deploy`")) && run.stderr.contains(".pipe.toml"),
        "the refusal names neither the file nor the hook\nstderr:\n{}",
        run.stderr
    );
}

/// A developer reviews a pull request on the CI host (the README's "CI host, which is usually
/// the dev host") and runs `pipe build --here` in its checkout, which the README says builds
/// "exactly as CI would". The checkout's `.pipe.toml` names, as one of its several images, a
/// base image every trusted build starts `FROM` (here a copy of the suite's base image). CI
/// refuses that build before it starts (a tag of an image pipe did not build); `--here` builds
/// and moves the base image's `latest` onto the pull request's image, so the next trusted build
/// of every project on that engine starts from the pull request's layers.
#[test]
fn build_here_cannot_replace_a_base_image_the_ci_build_refuses_to_touch() {
    let Some(docker) = Docker::require() else { return };
    let mut env = TestEnv::new();
    let project = unique_name("hr").replace("pipe-test-", "");
    let _images = ProjectImages { project: project.clone() };
    // The base image trusted builds start FROM: not built by pipe.
    let base = format!("pipe-test-r2base-{project}");
    let _cleanup = ImageCleanup { names: vec![base.clone()] };
    docker.ok(&["tag", &docker.base_image, &format!("{base}:latest")]);
    let original = docker.ok(&["image", "inspect", "--format", "{{.Id}}", &format!("{base}:latest")]);

    let repo = WorkRepo::new(env.path(), &project);
    repo.write("web/Dockerfile", &format!("FROM {}\nRUN echo pull-request > /pwned\n", docker.base_image));
    repo.write(
        ".pipe.toml",
        &format!("[images.web]\nimage = \"{project}-web\"\ncontext = \"web\"\n\n[images.base]\nimage = \"{base}\"\ncontext = \"web\"\n"),
    );
    repo.commit_to("main", "a pull request's checkout");
    let _web = ImageCleanup { names: vec![format!("{project}-web")] };
    env.env("PIPE_CONFIG", env.path().join("none.toml").to_str().unwrap());

    // CI, for the same commit on its default branch: refused before the build.
    let cfg = env.path().join("ci.toml");
    std::fs::write(
        &cfg,
        format!(
            "[pipe]\nworkspace = \"{}\"\n\n[project.{project}]\nrepo = \"{}\"\nbranches = [\"main\"]\n",
            env.path().join("work").display(),
            repo.url()
        ),
    )
    .unwrap();
    let ci = env.pipe(&["-c", cfg.to_str().unwrap(), "build", &project, "main"]);
    assert!(
        ci.stderr.contains("an image pipe did not build"),
        "CI did not refuse the base image's tag:\n{}",
        ci.stderr
    );
    let after_ci = docker.ok(&["image", "inspect", "--format", "{{.Id}}", &format!("{base}:latest")]);
    assert_eq!(after_ci, original, "CI's refused build moved the base image");

    // The developer's build of the same checkout.
    let out = env.command(&["build", "--here"]).current_dir(&repo.work).output().expect("pipe build --here");
    let after = docker.ok(&["image", "inspect", "--format", "{{.Id}}", &format!("{base}:latest")]);
    let planted = std::process::Command::new("docker")
        .args(["run", "--rm", &format!("{base}:latest"), "cat", "/pwned"])
        .output()
        .unwrap();
    assert_eq!(
        after,
        original,
        "`pipe build --here` moved `{base}:latest`, a base image pipe did not build, onto the checkout's image \
         (it now holds /pwned: {:?})\nstderr:\n{}",
        String::from_utf8_lossy(&planted.stdout).trim(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The company's base image lives in the registry the CI host pushes to
/// (`REGISTRY/base/NAME:stable`, pushed by another team's CI, pulled here by every build that
/// starts `FROM` it), as registries are used. A branch's `.pipe.toml` names `base/NAME`. Its
/// tags are checked only under the bare name, which this engine does not have, never under the
/// name the push makes of it, which it does: the build goes ahead, the push moves the local
/// `REGISTRY/base/NAME:stable` onto the branch's image and overwrites the base image in the
/// registry, so every build on every host that starts `FROM` it now starts from the branch's
/// layers. The same repository is refused when the base image is on the engine under its bare
/// name.
#[test]
fn a_repository_cannot_push_over_a_base_image_in_its_registry() {
    let Some(docker) = Docker::require() else { return };
    let reg = Registry::start("ci", "pw-round2-base");
    let mut env = TestEnv::new();
    env.env("REG_PW", "pw-round2-base");
    let taker = unique_name("bs").replace("pipe-test-", "");
    let _images = ProjectImages { project: taker.clone() };
    let base = format!("base/{taker}");
    let remote = format!("{}/{base}:stable", reg.host());
    let _cleanup = ImageCleanup { names: vec![base.clone(), format!("{}/{base}", reg.host())] };

    // The base image, pushed by another team (a docker CLI of its own, its own login).
    let other_team = env.path().join("other-team-docker");
    std::fs::create_dir_all(&other_team).unwrap();
    let team = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write as _;
        let mut child = std::process::Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", &other_team)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    team(&["login", "--username", "ci", "--password-stdin", &reg.host()], Some("pw-round2-base"));
    team(&["tag", &docker.base_image, &remote], None);
    team(&["push", &remote], None);
    let digest = reg.digest(&base, "stable").expect("the base image is in the registry");
    let local = docker.ok(&["image", "inspect", "--format", "{{.Id}}", &remote]).trim().to_string();

    let repo = WorkRepo::new(env.path(), "taker");
    repo.write("Dockerfile", &format!("FROM {}\nRUN echo branch > /pwned\n", docker.base_image));
    repo.write(".pipe.toml", &format!("image = \"{base}\"\ntest = \"true\"\n"));
    repo.commit_to("stable", "names the base image");
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[registry.prod]
url = "{reg}"
username = "ci"
password_env = "REG_PW"

[project.{taker}]
repo = "{url}"
branches = ["stable"]

[[project.{taker}.deploy]]
branches = ["stable"]
push = ["prod"]
"#,
        ws = env.path().join("work").display(),
        reg = reg.host(),
        url = repo.url(),
    ));

    // The legitimate guard: with the base image on this engine under its bare name, refused.
    docker.ok(&["tag", &docker.base_image, &format!("{base}:stable")]);
    let guarded = env.pipe(&["build", &taker, "stable"]);
    assert!(
        guarded.stderr.contains("an image pipe did not build"),
        "the bare base image's tag was not refused:\n{}",
        guarded.stderr
    );
    docker.ok(&["image", "rm", &format!("{base}:stable")]);

    // The attack: the engine has the base image under the name the registry gives it.
    let run = env.pipe(&["run", &taker]);
    let after = docker.ok(&["image", "inspect", "--format", "{{.Id}}", &remote]).trim().to_string();
    assert_eq!(
        reg.digest(&base, "stable"),
        Some(digest),
        "project `{taker}`'s branch pushed over `{remote}`, a base image pipe did not build (local id now {after}, was \
         {local})\nstderr:\n{}",
        run.stderr
    );
    assert_eq!(after, local, "the engine's `{remote}` was moved onto the branch's image");
}

/// Two registries of the pipeline file on one registry host, one with a path prefix
/// (`REGISTRY/team`, as an ECR account's team prefix is written) and one without. Project
/// `owner` names `app-…` and pushes through the prefixed one: `REGISTRY/team/app-…`. Another
/// project's repository names `team/app-…` in its `.pipe.toml` and pushes through the other:
/// the same repository. Names are compared as the files spell them, never as the push makes
/// them, so the build is not refused and the push replaces `owner`'s image (its moving tags
/// included), which `owner`'s deploys pull. Naming `app-…` itself is refused.
#[test]
fn a_repository_cannot_push_over_another_projects_image_through_another_registry_entry() {
    let Some(docker) = Docker::require() else { return };
    let reg = Registry::start("ci", "pw-round2-prefix");
    let mut env = TestEnv::new();
    env.env("REG_PW", "pw-round2-prefix");
    let owner = unique_name("ow").replace("pipe-test-", "");
    let taker = unique_name("tk").replace("pipe-test-", "");
    let (_io, _it) = (ProjectImages { project: owner.clone() }, ProjectImages { project: taker.clone() });
    let held = format!("app-{owner}");
    let _cleanup =
        ImageCleanup { names: vec![held.clone(), format!("team/{held}"), format!("{}/team/{held}", reg.host())] };

    let owner_repo = WorkRepo::new(env.path(), "owner");
    owner_repo.write("Dockerfile", &format!("FROM {}\nRUN echo owner > /who\n", docker.base_image));
    owner_repo.commit_to("main", "the owner's service");
    let taker_repo = WorkRepo::new(env.path(), "taker");
    taker_repo.write("Dockerfile", &format!("FROM {}\nRUN echo taker > /who\n", docker.base_image));
    taker_repo.write(".pipe.toml", &format!("image = \"{held}\"\ntest = \"true\"\n"));
    taker_repo.commit_to("main", "names the owner's image as written");
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[registry.team]
url = "{reg}/team"
username = "ci"
password_env = "REG_PW"

[registry.all]
url = "{reg}"
username = "ci"
password_env = "REG_PW"

[project.{owner}]
repo = "{ourl}"
image = "{held}"
branches = ["main"]

[[project.{owner}.deploy]]
branches = ["main"]
push = ["team"]

[project.{taker}]
repo = "{turl}"
branches = ["main"]

[[project.{taker}.deploy]]
branches = ["main"]
push = ["all"]
"#,
        ws = env.path().join("work").display(),
        reg = reg.host(),
        ourl = owner_repo.url(),
        turl = taker_repo.url(),
    ));

    // The owner's release, in the registry.
    env.pipe(&["run", &owner]).code(0);
    let repository = format!("team/{held}");
    let digest = reg.digest(&repository, "latest").expect("the owner's image is in the registry");
    let tags = reg.tags(&repository);

    // The legitimate guard: naming the owner's image as the pipeline file writes it is refused.
    let refused = env.pipe(&["build", &taker, "main"]);
    assert!(
        refused.stderr.contains(&format!("project `{owner}` holds it")),
        "naming the owner's image is not refused:\n{}",
        refused.stderr
    );

    // The attack: the name the owner's push makes of it, pushed through the other entry.
    taker_repo.write(".pipe.toml", &format!("image = \"team/{held}\"\ntest = \"true\"\n"));
    taker_repo.commit_to("main", "names the owner's image as pushed");
    let run = env.pipe(&["run", &taker]);
    assert_eq!(
        (reg.digest(&repository, "latest"), reg.tags(&repository)),
        (Some(digest), tags),
        "project `{taker}`'s repository pushed over `{}/{repository}`, project `{owner}`'s image\nstderr:\n{}",
        reg.host(),
        run.stderr
    );
}
