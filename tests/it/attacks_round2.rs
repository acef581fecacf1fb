//! Holes found by the second round of attacking pipe as an outsider would. Each test is the
//! attack that found its hole, beside the legitimate path; each fails today and is ignored
//! (`hole: …`) until the hole is closed.

use std::process::Stdio;

use crate::support::docker::{Docker, ProjectImages, Registry, unique_name};
use crate::support::serve::Serve;
use crate::support::{TestEnv, WorkRepo};

/// Removes every local tag of an image repository on drop.
struct ImageCleanup {
    names: Vec<String>,
}

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        for name in &self.names {
            let out = std::process::Command::new("docker")
                .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}", name])
                .output();
            if let Ok(out) = out {
                for tag in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = std::process::Command::new("docker")
                        .args(["image", "rm", "--force", tag])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
            // What a push leaves: the repository's digests, without a tag.
            let out = std::process::Command::new("docker")
                .args(["image", "ls", "--digests", "--format", "{{.Repository}}@{{.Digest}}", name])
                .output();
            if let Ok(out) = out {
                for reference in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.ends_with("<none>")) {
                    let _ = std::process::Command::new("docker")
                        .args(["image", "rm", "--force", reference])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

/// A serve hook on the CI host deploys `REGISTRY/team/shop` (its `images`, the registry's
/// host included, as every hook must name what it pulls). A repository's `.pipe.toml` names
/// `team/shop`, which its project pushes to that very registry: `REGISTRY/team/shop`, the
/// repository the hook deploys. The refusal of a name a hook holds compares the repository's
/// bare name with the hook's patterns, never the name the push makes of it, so the build goes
/// ahead and the push lands in the hook's repository (its moving tags included).
#[test]
#[ignore = "hole: a repository's image pushed through a registry lands in the repository a serve hook deploys (the hook's patterns are matched against the name without the registry)"]
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
#[ignore = "hole: `pipe build --here` of several images tags over any image on the engine (a base image's `latest`), which CI refuses"]
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

/// A fleet's hosts run the same hook with the same signing secret (README, "Targets that span
/// hosts": `secret_env = "PIPE_PROD_SECRET"` for every host). The signed body names the hook,
/// a delivery id and `sent_at`, never the receiver, and each receiver remembers only the ids it
/// was sent itself. So whoever captures the release pipe posted to one host (the README's own
/// example posts over plain `http://{host}:9010`) can, within the replay window, make every
/// other host run it: a host the fleet never asked (a later batch, after a failure stopped
/// the batches), or one it has since rolled back. The same bytes sent again to the host they
/// were meant for are refused, as the README promises of a replay.
#[test]
#[ignore = "hole: a signed delivery captured on its way to one host of a fleet is accepted and run by every other host (the body does not bind the receiver)"]
fn a_delivery_captured_on_its_way_to_one_host_is_not_run_by_another() {
    let secret = "fleet-secret-round2";
    let host = |label: &str| {
        let mut env = TestEnv::new();
        env.env("PIPE_PROD_SECRET", secret);
        let out = env.path().join(format!("{label}-ran"));
        env.config(&format!(
            r#"[serve.hooks.app]
secret_env = "PIPE_PROD_SECRET"
command = {{ argv = ["/bin/sh", "-c", "echo \"ran $PIPE_COMMIT\" >> {out}"] }}
"#,
            out = out.display()
        ));
        let server = Serve::start(&env);
        (env, server, out)
    };
    let (_env_a, host_a, ran_a) = host("a");
    let (_env_b, host_b, ran_b) = host("b");

    // What pipe's webhook target posts to host A: the hook, a fresh delivery id, the time.
    let sent_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let body = format!(
        r#"{{"hook":"app","project":"app","ref":"refs/heads/main","commit":"c0ffee0000000000000000000000000000000002","delivery":"{}","sent_at":{sent_at}}}"#,
        unique_name("d").replace("pipe-test-", "")
    );
    let signature = crate::support::hub_signature(secret, body.as_bytes());
    let headers = [("X-Hub-Signature-256", signature.as_str())];
    let (status, doc) = host_a.json("POST", "/hooks/app?wait=30", &headers, body.as_bytes());
    assert_eq!(status, 200, "host A runs the release it was sent: {doc}");
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(std::fs::read_to_string(&ran_a).unwrap(), "ran c0ffee0000000000000000000000000000000002\n");

    // The legitimate guard: the same bytes again at host A are a replay.
    let (again, doc) = host_a.json("POST", "/hooks/app", &headers, body.as_bytes());
    assert_eq!(again, 409, "a replay at the host it was sent to is refused: {doc}");

    // The attack: the bytes captured on their way to host A, sent to host B.
    let (replayed, doc) = host_b.json("POST", "/hooks/app?wait=30", &headers, body.as_bytes());
    let ran = std::fs::read_to_string(&ran_b).unwrap_or_default();
    assert!(
        replayed == 409 && ran.is_empty(),
        "host B accepted ({replayed}: {doc}) and ran the delivery pipe sent to host A: {ran:?}"
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
#[ignore = "hole: a repository's image name replaces a base image in the registry it pushes to (foreign tags are checked only under the bare name)"]
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
#[ignore = "hole: a repository's image pushed through another registry entry replaces another project's image (names compared without the registry's prefix)"]
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

/// A `pipe serve` that shows the status page without a token (`[serve.page]` with no
/// `token_env`: "the pages are open to whoever reaches them") and receives signed webhooks.
/// Unauthenticated requests are handled on a share of the handlers (half the CPUs, at least
/// one), and a streamed run log keeps its handler's place until the last byte is written: one
/// anonymous client that asks for a long log and reads it a little at a time (never 10 s
/// without reading) holds the whole anonymous share for up to ten minutes, renewable. A signed
/// request from an address that has not authenticated in the last ten minutes (the CI host
/// after a quiet spell, a forge's delivery) is anonymous until its signature is checked: it
/// waits its turn and is answered `503` after 10 s, and the sender's retries meet the same.
#[test]
#[ignore = "hole: one anonymous client reading a run log slowly holds the anonymous handlers, and signed webhooks wait, then get 503"]
fn a_slow_reader_of_an_open_log_cannot_keep_signed_webhooks_out() {
    use crate::serve_flood::{connect_from, post_bytes, send_from};
    use pipe::model::{Outcome, Stage};
    use pipe::state::{self, History, Run, StageRecord, StageRun};
    use std::io::{Read as _, Write as _};
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let mut env = TestEnv::new();
    env.env("HOOK_SECRET", "hook-secret-slow-log");
    let repo = crate::support::BareRepo::new(env.path(), "app");
    let main = repo.set("refs/heads/main");
    env.config(&format!(
        r#"[project.app]
repo = "{}"
branches = ["main"]

[serve.page]
enabled = true

[serve.hooks.deploy]
secret_env = "HOOK_SECRET"
command = {{ argv = ["true"] }}
"#,
        repo.url()
    ));
    env.pipe(&["poll"]).code(0);
    // A failed run on main with a long log, written with pipe's own state writers.
    let path = env.state_path();
    let at: jiff::Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
    let mut st = state::load(&path).unwrap();
    let r = st.project.get_mut("app").unwrap().refs.get_mut("refs/heads/main").unwrap();
    r.last = Some(StageRecord { stage: Stage::Test, result: Outcome::Failed, commit: main.clone(), at });
    r.pending = false;
    state::save(&path, &st).unwrap();
    let logs = state::logs_dir(&path, "app", "refs/heads/main");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("1.log");
    let line = "test output: the same line, over and over, as a failing test prints it\n";
    std::fs::write(&log, line.repeat(16 * 1024 * 1024 / line.len())).unwrap();
    let stage = |stage, result| StageRun { stage, result, started: at, seconds: 1.0, exit_code: None, ended: None };
    let mut history = History {
        schema: state::SCHEMA,
        refname: "refs/heads/main".into(),
        next_run: 2,
        tested: Default::default(),
        runs: vec![Run {
            number: 1,
            commit: main.clone(),
            started: at,
            image: "app".into(),
            tags: vec!["latest".into()],
            image_id: None,
            log,
            stages: vec![stage(Stage::Build, Outcome::Passed), stage(Stage::Test, Outcome::Failed)],
            digests: Default::default(),
            test: None,
            test_env: Default::default(),
            test_secrets: Vec::new(),
            test_services: None,
            subject: None,
            author: None,
            images: Vec::new(),
        }],
    };
    state::save_history(&state::history_path(&path, "app", "refs/heads/main"), &mut history, 20).unwrap();
    let server = Serve::start(&env);
    let signed = |delivery: &str| {
        let sent_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let body = format!(r#"{{"hook": "deploy", "delivery": "{delivery}", "sent_at": {sent_at}}}"#);
        let sig = crate::support::hub_signature("hook-secret-slow-log", body.as_bytes());
        post_bytes("/hooks/deploy", &[("X-Hub-Signature-256", &sig)], body.as_bytes())
    };

    // The legitimate path: a signed request from an address never seen is answered at once.
    let (status, answer, took) = send_from(Ipv4Addr::new(127, 0, 0, 21), server.port, &signed("before-1"));
    assert!(status == 202 && took < Duration::from_secs(2), "{status} after {took:?}: {answer}");

    // The attack: one client asks for the log and reads 16 KiB every 2 s.
    let mut reader = connect_from(Ipv4Addr::new(127, 0, 0, 9), server.port, false).expect("connect");
    reader.write_all(b"GET /status/run?project=app&ref=main HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let slow = std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0usize;
        while !stopping.load(Ordering::Relaxed) {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        total
    });
    std::thread::sleep(Duration::from_secs(2));

    // The CI host's signed release, from an address that has not authenticated lately.
    let started = Instant::now();
    let (status, answer, took) = send_from(Ipv4Addr::new(127, 0, 0, 22), server.port, &signed("during-1"));
    stop.store(true, Ordering::Relaxed);
    let read = slow.join().unwrap();
    assert!(
        status == 202 && took < Duration::from_secs(5),
        "a signed webhook was answered {status} after {:?} while one anonymous client read a log slowly ({read} bytes \
         read): {}",
        started.elapsed(),
        answer.lines().next().unwrap_or("")
    );
}

/// Deliveries a GitLab project's captured token floods the receiver with.
const FILL: usize = 250_000;

/// The README concedes that whoever captures one GitLab delivery holds the project's token and
/// "can send new deliveries", and bounds what that buys: "start `pipe run PROJECT`". But every
/// delivery a receiver takes, of any forge project and of any hook, is remembered in one record
/// of at most 250,000 live entries, a forge's for seven days, and a full record refuses every
/// new delivery with `503` rather than forget one. With one GitLab token, 250,000 distinct
/// bodies of an event that runs nothing (`Note Hook`, answered `204`) fill it in minutes: then
/// for seven days every signed release to every hook of that receiver is refused, and so is
/// every other project's forge webhook.
#[test]
#[ignore = "hole: one captured GitLab token fills the receiver's shared delivery record for 7 days, and every signed hook release is then refused (503)"]
fn a_captured_gitlab_token_cannot_keep_every_signed_release_out_for_a_week() {
    use crate::serve_flood::{connect_from, post_bytes, send_from};
    use std::io::{Read as _, Write as _};
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let mut env = TestEnv::new();
    env.env("HOOK_SECRET", "hook-secret-fill")
        .env("LAB_SECRET", "gitlab-token-fill")
        .env("FORGE_TOKEN", "forge-token-fill");
    let repo = WorkRepo::new(env.path(), "lab");
    repo.write("README", "no image here\n");
    repo.commit_to("main", "one");
    env.config(&format!(
        r#"[forge.lab]
kind = "gitlab"
api = "http://127.0.0.1:9/api/v4"
token_env = "FORGE_TOKEN"

[project.lab]
repo = "{url}"
branches = ["main"]
forge = "lab"
forge_repo = "42"
webhook_secret_env = "LAB_SECRET"

[serve.hooks.deploy]
secret_env = "HOOK_SECRET"
command = {{ argv = ["true"] }}
"#,
        url = repo.url()
    ));
    let server = Serve::start(&env);
    let port = server.port;
    let release = |delivery: &str| {
        let sent_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let body = format!(r#"{{"hook": "deploy", "delivery": "{delivery}", "sent_at": {sent_at}}}"#);
        let sig = crate::support::hub_signature("hook-secret-fill", body.as_bytes());
        post_bytes("/hooks/deploy", &[("X-Hub-Signature-256", &sig)], body.as_bytes())
    };
    let ci = Ipv4Addr::new(127, 0, 5, 1);
    let (status, text, _) = send_from(ci, port, &release("before"));
    assert_eq!(status, 202, "the CI host's release before the flood: {text}");

    // The flood: distinct bodies with the captured token, each answered 204 (nothing runs).
    let sent = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let (sent, refused) = (sent.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut i = t as usize;
                while i < FILL {
                    // Many source addresses: one connection per request wears out a source's ports.
                    let source = Ipv4Addr::new(127, 0, 4 + t, 1 + (i / 8 % 200) as u8);
                    let uuid = format!("n{i}");
                    let bytes = post_bytes(
                        "/forge/lab",
                        &[
                            ("X-Gitlab-Token", "gitlab-token-fill"),
                            ("X-Gitlab-Event", "Note Hook"),
                            ("X-Gitlab-Event-UUID", &uuid),
                        ],
                        format!(r#"{{"object_kind": "note", "n": {i}}}"#).as_bytes(),
                    );
                    let Some(mut stream) = connect_from(source, port, false) else { continue };
                    let _ = stream.write_all(&bytes);
                    let mut answer = [0u8; 12];
                    let _ = stream.read_exact(&mut answer);
                    if !answer.starts_with(b"HTTP/1.1 204") {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += 8;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    // The CI host's next release, and another project's forge webhook, after the flood.
    let (status, text, _) = send_from(ci, port, &release("after"));
    assert_eq!(
        status,
        202,
        "after {} GitLab deliveries sent with one captured token ({} not answered 204), the CI host's signed release \
         was refused: {} ({})",
        sent.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        text.lines().next().unwrap_or(""),
        server.log().lines().rev().find(|l| l.contains("delivery")).unwrap_or("")
    );
}
