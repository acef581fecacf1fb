//! Holes found by the fourth round of attacking pipe as an outsider would. Each test is the
//! attack that found its hole, beside the legitimate path; each failed before its fix.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::docker::{ComposeProject, Docker, ProjectImages, unique_name, write_web_compose};
use crate::support::http::get;
use crate::support::{TestEnv, WorkRepo, free_port, git};

/// The README: an untrusted ref's "Dockerfile may not `LABEL` a `com.docker.compose.*` or
/// `com.docker.stack.*` key (nor a key made of a variable)", since the legacy builder's step
/// containers would carry it and pass for containers of another project's service while the
/// build runs. The check (`trust::dockerfile::claimed_label`) strips quotes from a key but not
/// the builder's escapes: the builder expands a `LABEL` key as a shell word, so
/// `com\.docker\.compose\.project` is `com.docker.compose.project` to it, while the check sees
/// a key that starts with `com\.` and a text that never contains `com.docker.compose.`. The
/// first round's attack, with its keys written so, breaks the other project's deploy again.
///
/// Fixed: keys are compared without their quotes and escape characters.
#[test]
fn a_pull_request_label_key_written_with_escapes_cannot_pose_as_another_projects_service() {
    label_attack(
        "LABEL com\\.docker\\.compose\\.project={victim} com\\.docker\\.compose\\.service=web com\\.docker\\.compose\\.oneoff=False",
    );
}

/// The same attack with the keys written plainly, after an empty line inside the `LABEL`'s
/// continuation: the builder skips an empty continuation line (with a warning) and reads on,
/// while the check ends the instruction there and reads the keys as an instruction of their own.
///
/// Fixed: the check skips empty lines inside a continuation, as the builder does.
#[test]
fn a_pull_request_label_continued_past_an_empty_line_cannot_pose_as_another_projects_service() {
    label_attack(
        "LABEL org.example.note=x \\\n\n  com.docker.compose.project={victim} com.docker.compose.service=web com.docker.compose.oneoff=False",
    );
}

/// The first round's attack (`attacks.rs`) with the pull request's `LABEL` instruction written
/// as `label` (`{victim}` stands for the victim's compose project).
fn label_attack(label: &str) {
    let Some(docker) = Docker::require() else { return };
    let env = TestEnv::new();
    let victim = unique_name("v").replace("pipe-test-", "");
    let attacker = unique_name("a").replace("pipe-test-", "");
    let (_iv, _ia) = (ProjectImages { project: victim.clone() }, ProjectImages { project: attacker.clone() });
    // Dropped before the images: its containers go first.
    let _cv = ComposeProject { name: victim.clone() };

    // The victim: a trusted branch deployed in place with compose.
    let repo = WorkRepo::new(env.path(), "victim");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    repo.write("www/index.html", "version 1\n");
    repo.write(".pipe.toml", &format!("image = \"pipe-test/{victim}\"\ntest = \"true\"\n"));
    repo.commit_to("dev", "version 1");
    let port = free_port();
    let file = env.path().join("deploy").join("docker-compose.yml");
    write_web_compose(&file, port);

    // The attacker: a pull request of another project on the same host.
    let hostile = WorkRepo::new(env.path(), "hostile");
    hostile.write("Dockerfile", &format!("FROM {}\n", docker.base_image));
    hostile.write(".pipe.toml", "test = \"true\"\n");
    hostile.commit_to("main", "main");

    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[project.{victim}]
repo = "{vurl}"
branches = ["dev"]

[[project.{victim}.deploy]]
branches = ["dev"]
compose = {{ file = "{file}", project = "{victim}", services = ["web"] }}

[project.{attacker}]
repo = "{aurl}"
image = "pipe-test/{attacker}"
branches = ["main"]
pull_requests = true
"#,
        ws = env.path().join("work").display(),
        vurl = repo.url(),
        aurl = hostile.url(),
        file = file.display(),
    ));

    // A first tick: both projects built, the victim's version 1 deployed.
    env.pipe(&["run"]).code(0);

    // The pull request's Dockerfile claims the victim's compose project and service, then
    // takes its time in a build step (the untrusted ref builds with the legacy builder, whose
    // step containers carry the labels set so far); the victim pushes version 2.
    hostile.write(
        "Dockerfile",
        &format!("FROM {}\n{}\nRUN sleep 40\n", docker.base_image, label.replace("{victim}", &victim)),
    );
    git(&hostile.work, &["add", "--all"]);
    git(&hostile.work, &["commit", "--quiet", "-m", "a pull request"]);
    git(&hostile.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/1/head"]);
    repo.write("www/index.html", "version 2\n");
    repo.commit_to("dev", "version 2");

    // Both projects in one tick, as the timer runs them (projects in parallel).
    let run = env.command(&["run"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start pipe run");
    let output = run.wait_with_output().expect("pipe run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = None;
    while Instant::now() < deadline {
        if let Some((200, body)) = get(&format!("http://127.0.0.1:{port}/")) {
            answer = Some(body.trim().to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = env.pipe(&["logs", &victim, "dev"]).stdout.clone();
    assert_eq!(
        answer.as_deref(),
        Some("version 2"),
        "the victim's deploy, run while another project's pull request built, never answered\nstderr:\n{stderr}\nvictim's log:\n{log}"
    );
}

/// The README: "at most `pipe.max_builds_per_author` (default 2) of them pull requests of one
/// author, so a contributor who opens many pull requests cannot take every build of a tick";
/// the authors come from the forge's listing of open pull requests, "at most 10 pages of 8
/// MiB", and "when the forge does not answer (or names no author for a pull request), its pull
/// requests count as one author (`?`) that tick". But the listing carries what each author
/// wrote, their pull requests' descriptions (GitHub allows 65,536 characters each), and one page
/// over 8 MiB fails the whole listing (`forge::pulls::authors` returns the error of
/// `forge::discover::get`, keeping none of what it read). So Mallory, who opens a few dozen pull
/// requests with long descriptions (4-byte characters: 256 KiB each as the forge sends them),
/// makes every pull request of the project `?`: her own and Alice's share one author's two
/// builds a tick, and Mallory's, which waited longer, take them. Alice's commit, which the
/// legitimate path (`author_bounds.rs`) builds in the same tick, waits.
///
/// Fixed: the listing is read one pull request at a time (a page up to 64 MiB, one pull
/// request up to 8 MiB); one too long is left without an author, and the others keep theirs.
#[test]
fn long_pull_request_descriptions_do_not_let_one_author_take_every_build_of_a_tick() {
    use crate::previews::stack_with;
    use crate::support::forge_api::{ForgeApi, TOKEN};

    let Some(docker) = Docker::require() else { return };
    let mut probe = TestEnv::new();
    probe.env("FORGE_TOKEN", TOKEN);
    let api = ForgeApi::start(&probe, "github", None);
    let sections = format!(
        "max_builds = 4\nmax_builds_per_author = 2\nmax_previews_per_author = 2\n\n\
         [forge.gh]\nkind = \"github\"\napi = \"http://127.0.0.1:{}\"\ntoken_env = \"FORGE_TOKEN\"\n",
        api.port
    );
    let Some(mut s) =
        stack_with(&docker, "max_previews = 3", false, &sections, "forge = \"gh\"\nforge_repo = \"acme/app\"")
    else {
        return;
    };
    s.env.env("FORGE_TOKEN", TOKEN);
    let built = |s: &crate::previews::Stack| {
        let run = s.env.pipe(&["run", "--json"]);
        assert_eq!(run.code, 0, "pipe run failed:\n{}\n{}", run.stdout, run.stderr);
        let mut refs: Vec<String> =
            run.json()["results"].as_array().unwrap().iter().map(|r| r["ref"].as_str().unwrap().to_string()).collect();
        refs.sort();
        (refs, run.stderr.clone())
    };
    let pulls = |numbers: &[u32]| {
        let mut refs: Vec<String> = numbers.iter().map(|n| format!("refs/pull/{n}/head")).collect();
        refs.sort();
        refs
    };

    s.release("refs/heads/main", "main v1");
    api.set_pulls(&[("acme/app", 9, "alice")]);
    s.release("refs/pull/9/head", "alice v1");
    let (first, stderr) = built(&s);
    assert_eq!(first, vec!["refs/heads/main".to_string(), pulls(&[9])[0].clone()], "{stderr}");

    // Mallory opens five pull requests with work and 30 more, each described at GitHub's
    // length limit; Alice pushes to hers in the same minute.
    let description = "\u{1F600}".repeat(65_536);
    let mut open = vec![("acme/app", 9, "alice", "fixes the login page")];
    for n in (1..=5).chain(10..=39) {
        if n <= 5 {
            s.release(&format!("refs/pull/{n}/head"), &format!("mallory {n}"));
        }
        open.push(("acme/app", n, "mallory", description.as_str()));
    }
    api.set_pulls_with_bodies(&open);
    s.release("refs/pull/9/head", "alice v2");

    // Four builds a tick, two of them Mallory's at most: Alice's commit is one of this tick's.
    let (tick, stderr) = built(&s);
    assert_eq!(tick, pulls(&[1, 2, 9]), "Mallory's pull requests took every build of the tick:\n{stderr}");
}
