//! A release of several images after it is built: the automatic rollback of a deploy target
//! run in place puts every image of the previous release back, and a real `pipe serve` hook
//! receives the whole release from a webhook target and from a fleet (each image checked
//! against its `images`, each exported, all recorded, all rolled back) and refuses a body with
//! one image it does not allow.

use super::{Project1, short};
use crate::support::docker::{ComposeProject, Docker};
use crate::support::http::get;
use crate::support::serve::Serve;
use crate::support::{free_port, hub_signature};

/// Project1's API (published on `port`, answering its `health` file) and frontend, each from
/// its image's variables.
fn compose_file(port: u16) -> String {
    "services:\n  api:\n    image: ${PIPE_IMAGE_API}:${PIPE_TAG_API}\n    init: true\n    \
     command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/app\"]\n    ports: [\"127.0.0.1:PORT:8080\"]\n  \
     front:\n    image: ${PIPE_IMAGE_FRONT}:${PIPE_TAG_FRONT}\n    init: true\n    \
     command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
        .replace("PORT", &port.to_string())
}

/// One deploy record: (commit, result, rollback, images as (name, repository)).
type Record = (String, String, bool, Vec<(String, String)>);

/// The deploy records of a history file.
fn records(path: &std::path::Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let history: toml::Value = toml::from_str(&text).unwrap();
    history["deploy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let images = d.get("images").and_then(|i| i.as_table()).map_or_else(Vec::new, |t| {
                t.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()
            });
            let s = |k: &str| d[k].as_str().unwrap().to_string();
            (s("commit"), s("result"), d.get("rollback").and_then(|r| r.as_bool()).unwrap_or(false), images)
        })
        .collect()
}

#[test]
fn a_failed_release_of_several_images_is_rolled_back_whole_in_place_through_pipe_serve_and_by_a_fleet() {
    let Some(docker) = Docker::require() else { return };
    let mut p1 = Project1::new(&docker);
    let p = p1.project.clone();
    let (ci_port, hook_port, serve_port) = (free_port(), free_port(), free_port());
    let receiver = format!("rx{p}");
    let (_ci, _hook) = (ComposeProject { name: p.clone() }, ComposeProject { name: receiver.clone() });
    let dir = p1.env.path().join("deploy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ci.yml"), compose_file(ci_port)).unwrap();
    std::fs::write(dir.join("hook.yml"), compose_file(hook_port)).unwrap();
    p1.env.env("HOOK_SECRET", "several-images-2718");
    // The receiving hook (on this host) allows the project's two repositories only.
    let head = format!(
        "[serve.hooks.{p}]\nsecret_env = \"HOOK_SECRET\"\nimages = [\"pipe-test/{p}-api\", \"pipe-test/{p}-front\"]\n\
         compose = {{ file = \"{hook}\", project = \"{receiver}\" }}\n\
         health = {{ url = \"http://127.0.0.1:{hook_port}/health\", timeout = \"5s\" }}\n",
        hook = dir.join("hook.yml").display(),
    );
    p1.configure(&head, "[\"main\"]", "");
    let text = std::fs::read_to_string(p1.env.config_path()).unwrap();
    p1.env.config(&format!(
        "{text}\n[[project.{p}.deploy]]\nname = \"devhost\"\nbranches = [\"main\"]\n\
         compose = {{ file = \"{ci}\", project = \"{p}\" }}\n\
         health = {{ url = \"http://127.0.0.1:{ci_port}/health\", timeout = \"5s\" }}\n\n\
         [[project.{p}.deploy]]\nname = \"production\"\nbranches = [\"main\"]\n\
         webhook = {{ url = \"http://127.0.0.1:{serve_port}/hooks/{p}\", secret_env = \"HOOK_SECRET\" }}\n\n\
         [[project.{p}.deploy]]\nname = \"fleet\"\nbranches = [\"main\"]\n\
         webhook = {{ url = \"http://{{host}}/hooks/{p}\", secret_env = \"HOOK_SECRET\", hosts = [\"127.0.0.1:{serve_port}\"] }}\n",
        ci = dir.join("ci.yml").display(),
    ));
    let server = Serve::start_on(&p1.env, serve_port).expect("pipe serve listens");
    let running = |project: &str, service: &str| {
        let label = format!("label=com.docker.compose.service={service}");
        let project = format!("label=com.docker.compose.project={project}");
        let out = docker.ok(&["ps", "--filter", &label, "--filter", &project, "--format", "{{.Image}}"]);
        out.lines().map(str::to_string).collect::<Vec<_>>()
    };

    // The first release: both images, on both hosts' compose projects.
    let c1 = p1.commit("main", &[]);
    p1.env.pipe(&["run"]).code(0);
    for project in [p.as_str(), receiver.as_str()] {
        assert_eq!(running(project, "api"), [p1.image("api", short(&c1))], "{project}");
        assert_eq!(running(project, "front"), [p1.image("front", short(&c1))], "{project}");
    }
    assert_eq!(get(&format!("http://127.0.0.1:{hook_port}/")).map(|(_, b)| b.trim().to_string()), Some("api 1".into()));

    // The second changes both; its API fails the health check: both services go back to the
    // first release's images, on the CI host's target and on the receiver.
    std::fs::remove_file(p1.repo.work.join("project1/health")).unwrap();
    let c2 = p1.commit("main", &[("project1/index.html", "api 2\n"), ("project1-front/index.html", "front 2\n")]);
    let run = p1.env.pipe(&["run"]);
    run.code(1).stderr_has(&format!("rolled back to {}, which is running again", p1.image("api", short(&c1))));
    run.stderr_has("the receiver's run ended `failed`");
    for project in [p.as_str(), receiver.as_str()] {
        assert_eq!(running(project, "api"), [p1.image("api", short(&c1))], "{project}");
        assert_eq!(running(project, "front"), [p1.image("front", short(&c1))], "{project}: back with its API");
    }
    let all = vec![("api".to_string(), format!("pipe-test/{p}-api")), ("front".into(), format!("pipe-test/{p}-front"))];
    let expected = vec![
        (c1.clone(), "succeeded".to_string(), false, all.clone()),
        (c2.clone(), "rolled_back".into(), false, all.clone()),
        (c1.clone(), "succeeded".into(), true, all.clone()),
    ];
    let state = p1.env.state_path();
    assert_eq!(records(&state.with_file_name("deploys").join(&p).join("devhost.toml")), expected);
    // The webhook target's own history: the release failed on the receiver, which rolled back.
    let production = records(&state.with_file_name("deploys").join(&p).join("production.toml"));
    assert_eq!(production, [expected[0].clone(), (c2.clone(), "failed".into(), false, all.clone())]);
    // The fleet (one host here) posted the previous release back whole: without every image
    // the receiver's compose file could not have run it, and the host would be `rollback_failed`.
    assert_eq!(records(&state.with_file_name("deploys").join(&p).join("fleet.toml")), expected);
    // The receiver, asked by the webhook target, then by the fleet (whose rollback it was last
    // asked for), recorded and rolled back the release whole each time.
    let hook_history = state.with_file_name("serve").join(&p).join("deploys.toml");
    let received = [0, 0, 1, 2, 1, 2, 0].map(|i| expected[i].clone());
    assert_eq!(records(&hook_history), received, "the receiver records and rolls back the release whole");

    // A signed body naming one image the hook does not allow is refused whole: nothing runs.
    let runs = |dir: &std::path::Path| std::fs::read_dir(dir).unwrap().count();
    let before = (runs(hook_history.parent().unwrap()), std::fs::read_to_string(&hook_history).unwrap());
    let image =
        |name: &str, repo: String| serde_json::json!({"name": name, "image": repo, "tag": short(&c1), "digest": null});
    let body = serde_json::json!({
        "hook": p, "project": p, "ref": "refs/heads/main", "commit": c1,
        "image": format!("pipe-test/{p}-api"), "tag": short(&c1), "digest": null,
        "images": [image("api", format!("pipe-test/{p}-api")), image("cache", format!("pipe-test/{p}-cache"))],
        "delivery": "outside-allow-list-1",
        "sent_at": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
    })
    .to_string();
    let signature = hub_signature("several-images-2718", body.as_bytes());
    let (status, answer) =
        server.json("POST", &format!("/hooks/{p}"), &[("X-Hub-Signature-256", &signature)], body.as_bytes());
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], format!("image `pipe-test/{p}-cache` is not allowed by this hook"));
    let after = (runs(hook_history.parent().unwrap()), std::fs::read_to_string(&hook_history).unwrap());
    assert_eq!(after, before, "no run was made and nothing was deployed");
    assert_eq!(running(&receiver, "api"), [p1.image("api", short(&c1))]);
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("several-images-2718"), "{log}");
}
