//! Pull-request previews attacked from a pull request: its author controls the Dockerfile,
//! `.pipe.toml`, every file and commit message, and tries to reach a secret, the host, the main
//! deployment or another preview, or to make teardown leave or remove what is not its own.
//! Each test runs the real engine, nginx and git through the previews harness, and checks the
//! safe outcome: the planted secret absent, the host canary unchanged byte for byte, the main
//! deployment and its volume untouched.

use std::process::Command;

use crate::previews::{Stack, of_project, stack};
use crate::support::docker::Docker;
use crate::support::git;

/// The environment of a container, one `NAME=value` a line.
fn env_of(docker: &Docker, id: &str) -> String {
    docker.ok(&["inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", id])
}

/// Every file under pipe's state directory, as text (lossy), with its path.
fn state_files(s: &Stack) -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&s.env.path().join("state"), &mut out);
    out
}

/// The operator keeps the deployment's database password where compose users usually do: in
/// `.env` beside the target's compose file, referenced as `${DB_PASSWORD}`. The main deployment
/// gets it; an untrusted pull request's preview must not (compose reads that `.env` when it
/// renders the file in the file's directory).
#[test]
fn a_dotenv_beside_the_targets_compose_file_reaches_no_untrusted_preview() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "", false) else { return };
    let deploy = s.env.path().join("deploy");
    let file = deploy.join("docker-compose.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text =
        text.replace("APP_SECRET: ${APP_SECRET}", "APP_SECRET: ${APP_SECRET}\n      DB_PASSWORD: ${DB_PASSWORD}");
    std::fs::write(&file, text).unwrap();
    std::fs::write(deploy.join(".env"), "DB_PASSWORD=dotenv-s3cr3t-of-main\n").unwrap();
    s.release("refs/heads/main", "main v1");
    s.run();
    let main = s.container(&s.project);
    assert!(env_of(&docker, &main).contains("DB_PASSWORD=dotenv-s3cr3t-of-main"), "the main deployment reads `.env`");

    s.release("refs/pull/5/head", "untrusted");
    s.run();
    s.answers(&s.host(5), "untrusted");
    let preview = s.container(&s.preview(5));
    let env = env_of(&docker, &preview);
    assert!(!env.contains("dotenv-s3cr3t"), "the untrusted preview was given the `.env` secret:\n{env}");
    for (path, text) in state_files(&s) {
        assert!(!text.contains("dotenv-s3cr3t"), "`{path}` holds the `.env` secret");
    }
}

/// The pull request's image claims another compose project's labels (the main deployment's,
/// and another preview's), declares anonymous volumes, and its code tries to read and write
/// the host. Its preview still runs as its own project, confined; closing it removes exactly
/// its own containers, network and volumes (anonymous ones included) and nothing else: the
/// main deployment's container, its data volume, the other preview and the host canary stay.
#[test]
fn a_pull_request_image_claiming_other_projects_labels_touches_nothing_of_theirs() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "", false) else { return };
    let canary = s.host_dir.join("key");
    let canary_before = std::fs::read(&canary).unwrap();
    s.release("refs/heads/main", "main v1");
    s.run();
    let main = s.container(&s.project);
    // The main deployment writes its own data to its volume.
    docker.ok(&["exec", &main, "sh", "-c", "echo main-data > /data/canary"]);
    s.release("refs/pull/3/head", "honest preview");
    s.run();
    s.answers(&s.host(3), "honest preview");
    let honest = s.container(&s.preview(3));

    // The attacker's pull request: an image labelled as the main project's `web` and as pull
    // request 3's, with anonymous volumes, and a test that tries to write the host path. The
    // labels come from its base image (its own Dockerfile's `LABEL com.docker.compose.*` is
    // refused before the build).
    let base = docker.base_image.clone();
    let labelled = format!("pipe-test/{}-labelled:base", s.project);
    let dir = s.env.path().join("labelled-base");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {base}\nLABEL com.docker.compose.project={main} com.docker.compose.service=web \
             com.docker.compose.oneoff=False pipe.preview={pr3}\n",
            main = s.project,
            pr3 = s.preview(3),
        ),
    )
    .unwrap();
    let owner = format!("pipe.project={}", s.project);
    docker.ok(&["build", "--quiet", "--label", &owner, "--tag", &labelled, dir.to_str().unwrap()]);
    s.repo.write("Dockerfile", &format!("FROM {labelled}\nCOPY www /www\nVOLUME /data /host /anon\n"));
    s.repo.write(
        ".pipe.toml",
        &format!(
            "image = \"pipe-test/{}\"\ntest = \"echo pwned > /host/key 2>/dev/null; echo pwned > /data/canary; true\"\n",
            s.project
        ),
    );
    s.release("refs/pull/9/head", "attacker");
    s.run();
    s.answers(&s.host(9), "attacker");
    let attacker = s.container(&s.preview(9));
    let labels =
        docker.ok(&["inspect", "--format", "{{index .Config.Labels \"com.docker.compose.project\"}}", &attacker]);
    assert_eq!(labels.trim(), s.preview(9), "the preview runs as its own compose project");
    assert_eq!(s.container(&s.project), main, "the main deployment was not touched");
    assert_eq!(s.container(&s.preview(3)), honest, "pull request 3's preview was not touched");
    // The attacker's container writes where it can: its own volumes only.
    docker.ok(&["exec", &attacker, "sh", "-c", "echo pwned > /data/canary; echo pwned > /host/key; true"]);
    let anon: Vec<String> = docker
        .ok(&["inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}", &attacker])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(!anon.is_empty());

    s.close(9);
    s.run().stderr_has("removing the preview of pull/9");
    for kind in ["ps --all", "network ls", "volume ls"] {
        assert_eq!(of_project(kind, &s.preview(9)), Vec::<String>::new(), "{kind} of pr-9 left behind");
    }
    let volumes = docker.ok(&["volume", "ls", "--quiet"]);
    for v in &anon {
        assert!(!volumes.lines().any(|l| l == v), "volume {v} of the attacker's preview left behind");
    }
    assert_eq!(s.container(&s.project), main, "the main deployment survived the teardown");
    assert_eq!(s.container(&s.preview(3)), honest, "pull request 3's preview survived the teardown");
    assert_eq!(docker.ok(&["exec", &main, "cat", "/data/canary"]), "main-data\n");
    assert_eq!(std::fs::read(&canary).unwrap(), canary_before, "the host canary changed");
    s.answers(&format!("web.{}", crate::previews::DOMAIN), "main v1");
    s.answers(&s.host(3), "honest preview");
}

/// Bytes on the host of a container's log, rotated files included.
fn log_bytes(docker: &Docker, id: &str) -> u64 {
    let path = docker.ok(&["inspect", "--format", "{{.LogPath}}", id]).trim().to_string();
    if path.is_empty() {
        return 0;
    }
    let path = std::path::Path::new(&path);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

/// The image's entrypoint wraps the target's command and prints 64 MiB first: a preview that
/// runs for days printing without end would fill the host's disk through Docker's log. The
/// preview's log on the host stays bounded.
#[test]
fn an_untrusted_preview_cannot_fill_the_host_disk_through_its_log() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "", false) else { return };
    s.release("refs/heads/main", "main v1");
    s.run();
    let base = docker.base_image.clone();
    s.repo.write("flood.sh", "#!/bin/sh\nhead -c 67108864 /dev/zero | tr '\\0' 'x' | fold -w 1023\nexec \"$@\"\n");
    std::fs::set_permissions(s.repo.work.join("flood.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    s.repo.write(
        "Dockerfile",
        &format!("FROM {base}\nCOPY www /www\nCOPY flood.sh /flood.sh\nENTRYPOINT [\"/flood.sh\"]\n"),
    );
    s.release("refs/pull/4/head", "flooding");
    s.run();
    s.answers(&s.host(4), "flooding");
    let preview = s.container(&s.preview(4));
    let bytes = log_bytes(&docker, &preview);
    assert!(bytes < 32 << 20, "the preview's log holds {} MiB on the host: unbounded", bytes >> 20);
}

/// With the ingress listening on every address (`listen = "PORT"`, as the default `80` does),
/// the preview's code connects to its network's gateway, which is the host, and asks nginx for
/// the main deployment's name. Docker isolates the bridges, but the ingress on the host was a
/// way around that; the preview's bridge is now firewalled from the host, so nothing answers.
#[test]
fn an_untrusted_preview_cannot_reach_the_main_deployment_through_the_ingress_on_its_gateway() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "", false) else { return };
    let config = std::fs::read_to_string(s.env.config_path()).unwrap();
    s.env.config(&config.replace("listen = \"127.0.0.1:", "listen = \""));
    let generated = s.env.pipe(&["generate", "nginx"]);
    generated.code(0);
    std::fs::write(s.env.path().join("nginx/pipe.conf"), &generated.stdout).unwrap();
    let cgi = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\n\
               (printf 'GET /index.html HTTP/1.0\\r\\nHost: web.pv.test\\r\\n\\r\\n'; sleep 2) | \
               nc -w 3 \"${QUERY_STRING%:*}\" \"${QUERY_STRING#*:}\" | tail -n 1\n";
    s.repo.write("www/cgi-bin/probe", cgi);
    std::fs::set_permissions(
        s.repo.work.join("www/cgi-bin/probe"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    s.release("refs/heads/main", "main v1");
    s.run();
    s.answers(&format!("web.{}", crate::previews::DOMAIN), "main v1");
    s.release("refs/pull/6/head", "untrusted");
    s.run();
    s.answers(&s.host(6), "untrusted");
    let network = format!("{}_isolated", s.preview(6));
    let gateway = docker.ok(&["network", "inspect", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", &network]);
    let seen = s.fetch(&s.host(6), &format!("/cgi-bin/probe?{}:{}", gateway.trim(), s.front));
    assert!(!seen.contains("main v1"), "the preview read the main deployment through the ingress: {seen:?}");
    // The same probe from the main deployment's own network does reach the ingress: it works.
    let main_network = format!("{}_default", s.project);
    let main_gateway =
        docker.ok(&["network", "inspect", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", &main_network]);
    let main_host = format!("web.{}", crate::previews::DOMAIN);
    let main_seen = s.fetch(&main_host, &format!("/cgi-bin/probe?{}:{}", main_gateway.trim(), s.front));
    assert!(main_seen.contains("main v1"), "the probe itself works: {main_seen:?}");
}

/// Two repositories deploy into one compose project, each its own service (what `services` in
/// a compose target is for), and both run previews. Pull request 1 of each would run in the
/// same compose project `<project>-pr-1`, on one network: the attacker's pull request 1 on the
/// first repository reached the second repository's pull request 1 directly (its service name
/// answered), and closing it tore the other preview down. The pipeline file is refused instead,
/// and nothing runs.
#[test]
fn a_preview_never_shares_its_compose_project_with_another_projects_preview() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "", false) else { return };
    let other = format!("{}-b", s.project);
    let _images = crate::support::docker::ProjectImages { project: other.clone() };
    let repo = crate::support::WorkRepo::new(s.env.path(), "b");
    let deploy = s.env.path().join("deploy-b");
    std::fs::create_dir_all(&deploy).unwrap();
    std::fs::write(
        deploy.join("docker-compose.yml"),
        "version: \"2.4\"\nservices:\n  api:\n    image: ${PIPE_IMAGE}:${PIPE_TAG}\n    init: true\n    \
         command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    let config = std::fs::read_to_string(s.env.config_path()).unwrap();
    s.env.config(&format!(
        "{config}\n[project.{other}]\nrepo = \"{url}\"\nbranches = [\"main\"]\npull_requests = true\n\
         image = \"pipe-test/{other}\"\nlimits = {{ memory = \"256m\", pids = 128, cpus = 0.5 }}\n\n\
         [[project.{other}.deploy]]\nname = \"devhost\"\nbranches = [\"release\"]\n\
         compose = {{ file = \"{file}\", project = \"{shared}\", services = [\"api\"] }}\n\
         ingress = {{ api = 8080 }}\ndrain = \"1s\"\npreviews = true\n",
        url = repo.url(),
        file = deploy.join("docker-compose.yml").display(),
        shared = s.project,
    ));
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    repo.write("www/index.html", "victim preview\n");
    repo.write(".pipe.toml", "test = \"true\"\n");
    repo.commit_to("main", "victim main");
    git(&repo.work, &["push", "--quiet", "origin", "HEAD:refs/pull/1/head", "HEAD:refs/pull/1/merge"]);
    s.release("refs/heads/main", "main v1");
    s.release("refs/pull/1/head", "attacker preview");
    let said = format!("would share the compose projects `{}-pr-<N>`", s.project);
    s.env.pipe(&["check"]).code(2).stderr_has(&said);
    s.env.pipe(&["run", &other]).code(2).stderr_has(&said);
    s.env.pipe(&["run", &s.project]).code(2);
    assert_eq!(of_project("ps --all", &s.preview(1)), Vec::<String>::new(), "a preview ran");
}

/// The preview answers pipe's readiness check (the target's health path, asked by pipe on the
/// host at the container's address) with a redirect to a service on the host's loopback, which
/// no container reaches. pipe must not follow it: the host's own services never get a request
/// the pull request chose.
#[test]
fn the_readiness_check_of_a_preview_follows_no_redirect_to_the_hosts_loopback() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "", false) else { return };
    let sink = crate::support::http::HttpSink::start(200);
    s.release("refs/heads/main", "main v1");
    s.run();
    let base = docker.base_image.clone();
    s.repo.write(
        "redirect.sh",
        &format!(
            "#!/bin/sh\n[ \"$1\" = sh ] && exec \"$@\"\nwhile true; do printf 'HTTP/1.0 302 Found\\r\\nLocation: http://127.0.0.1:{}/from-the-preview\\r\\n\
             Content-Length: 0\\r\\n\\r\\n' | nc -l -p 8080 >/dev/null; done\n",
            sink.port
        ),
    );
    std::fs::set_permissions(s.repo.work.join("redirect.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    s.repo.write(
        "Dockerfile",
        &format!("FROM {base}\nCOPY www /www\nCOPY redirect.sh /redirect.sh\nENTRYPOINT [\"/redirect.sh\"]\n"),
    );
    s.release("refs/pull/2/head", "redirecting");
    let run = s.env.pipe(&["run"]);
    let hits: Vec<String> = sink.requests.lock().unwrap().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert!(hits.is_empty(), "pipe followed the preview's redirect to the host's loopback: {hits:?}\n{}", run.stderr);
}

/// Runs `script` in `container` with `sh -c`; whether it printed `wrote`.
fn wrote(container: &str, script: &str) -> bool {
    let out = Command::new("docker").args(["exec", container, "sh", "-c", script]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("wrote")
}

/// The preview's code writes twice its memory limit to its volume, to its own filesystem and
/// to its `/etc/hosts` (a file Docker keeps on the host's disk): each landed on the host's
/// disk, with no bound, for as long as the preview lived (a week by default), so a few
/// previews filled the host's disk. Its volumes and writable paths are now tmpfs of half its
/// memory limit on a read-only root, and ordinary writes still work.
#[test]
fn an_untrusted_preview_cannot_write_without_bound_to_the_hosts_disk() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "", false) else { return };
    s.release("refs/heads/main", "main v1");
    s.release("refs/pull/8/head", "writer");
    s.run();
    s.answers(&s.host(8), "writer");
    let preview = s.container(&s.preview(8));
    for target in ["/data/fill", "/fill", "/etc/hosts"] {
        let wrote = wrote(&preview, &format!("head -c 536870912 /dev/zero >> {target} && echo wrote"));
        if target != "/etc/hosts" {
            let _ = Command::new("docker").args(["exec", &preview, "rm", "-f", target]).status();
        }
        assert!(!wrote, "512 MiB (twice the memory limit) written to {target} on the host's disk");
    }
    for target in ["/data/small", "/tmp/small", "/run/small", "/var/tmp/small"] {
        let script = format!("head -c 1048576 /dev/zero > {target} && rm {target} && echo wrote");
        assert!(wrote(&preview, &script), "the preview could not write 1 MiB to {target}");
    }
}

/// The same, through a volume the pull request's own Dockerfile declares (`VOLUME`), which
/// Docker would make an anonymous volume on the host's disk: it is a tmpfs of the same bound.
#[test]
fn an_untrusted_preview_cannot_write_without_bound_through_a_volume_its_image_declares() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "", false) else { return };
    s.release("refs/heads/main", "main v1");
    s.repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\nVOLUME /scratch\n", docker.base_image));
    s.release("refs/pull/8/head", "declares a volume");
    s.run();
    s.answers(&s.host(8), "declares a volume");
    let preview = s.container(&s.preview(8));
    let wrote = wrote(&preview, "head -c 536870912 /dev/zero > /scratch/fill && echo wrote");
    let _ = Command::new("docker").args(["exec", &preview, "rm", "-f", "/scratch/fill"]).status();
    assert!(!wrote, "512 MiB (twice the memory limit) written to the image's volume on the host's disk");
    let volumes = docker.ok(&["inspect", "--format", "{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}", &preview]);
    assert!(!volumes.contains("/scratch"), "the image's `VOLUME` became a volume: {volumes}");
}

/// The pull request's head is the main branch's own commit (a pull request opened from a
/// branch at that commit): its preview runs the main deployment's image, and closing the pull
/// request removes the preview but not that image, whose tags the main deployment still needs.
#[test]
fn closing_a_pull_request_at_the_main_commit_leaves_the_main_image() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "", false) else { return };
    let main = s.release("refs/heads/main", "main v1");
    git(&s.repo.work, &["push", "--quiet", "origin", "HEAD:refs/pull/11/head", "HEAD:refs/pull/11/merge"]);
    s.run();
    s.answers(&s.host(11), "main v1");
    let main_box = s.container(&s.project);
    s.close(11);
    s.run().stderr_has("removing the preview of pull/11");
    assert_eq!(of_project("ps --all", &s.preview(11)), Vec::<String>::new());
    let tags = s.image_tags();
    assert!(tags.contains(&main[..12].to_string()) && tags.contains(&"latest".to_string()), "{tags:?}");
    assert_eq!(s.container(&s.project), main_box, "the main deployment was not touched");
    s.answers(&format!("web.{}", crate::previews::DOMAIN), "main v1");
}

/// Removes volumes and images by id on drop (what a failed build left, found by the test).
struct Remove {
    volumes: Vec<String>,
    images: Vec<String>,
}

impl Drop for Remove {
    fn drop(&mut self) {
        for volume in &self.volumes {
            let users = Command::new("docker")
                .args(["ps", "--all", "--quiet", "--filter"])
                .arg(format!("volume={volume}"))
                .output();
            let users: Vec<String> = users
                .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
                .unwrap_or_default();
            if !users.is_empty() {
                let _ = Command::new("docker").args(["rm", "--force"]).args(&users).output();
            }
        }
        if !self.volumes.is_empty() {
            let _ = Command::new("docker").args(["volume", "rm", "--force"]).args(&self.volumes).output();
        }
        if !self.images.is_empty() {
            let _ = Command::new("docker").args(["image", "rm", "--force"]).args(&self.images).output();
        }
    }
}

/// The pull request's Dockerfile labels itself as the main deployment's compose container,
/// declares `/www` a volume over its own defaced page and then fails a `RUN`: the legacy
/// builder leaves that step's container behind, labelled as the main deployment's `web`, with
/// the defaced volume. The main branch's next plain compose deploy must run the main branch's
/// own page, not the pull request's.
#[test]
fn a_failed_pull_request_build_leaves_nothing_that_the_main_deploy_adopts() {
    let Some(docker) = Docker::require() else { return };
    let mut env = crate::support::TestEnv::new();
    env.env("X", "y");
    let project = crate::support::docker::unique_name("adopt").replace("pipe-test-", "");
    let _images = crate::support::docker::ProjectImages { project: project.clone() };
    let _leftovers = crate::previews::Leftovers(project.clone());
    let repo = crate::support::WorkRepo::new(env.path(), "app");
    let dir = env.path().join("deploy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        "version: \"2.4\"\nservices:\n  web:\n    image: ${PIPE_IMAGE}:${PIPE_TAG}\n    init: true\n    \
         command: [\"sleep\", \"3600\"]\n",
    )
    .unwrap();
    env.config(&format!(
        "[pipe]\nworkspace = \"{ws}\"\n\n[project.{project}]\nrepo = \"{url}\"\nbranches = [\"main\"]\n\
         pull_requests = true\n\n[[project.{project}.deploy]]\nbranches = [\"main\"]\n\
         compose = {{ file = \"{file}\", project = \"{project}\" }}\n",
        ws = env.path().join("work").display(),
        url = repo.url(),
        file = dir.join("docker-compose.yml").display(),
    ));
    let base = docker.base_image.clone();
    repo.write("Dockerfile", &format!("FROM {base}\nCOPY www /www\n"));
    repo.write(".pipe.toml", &format!("image = \"pipe-test/{project}\"\ntest = \"true\"\n"));
    repo.write("www/index.html", "main v1\n");
    repo.commit_to("main", "main v1");
    env.pipe(&["run"]).code(0);
    let of_main = || of_project("ps", &project);
    assert_eq!(of_main().len(), 1);

    // The attacker's pull request: its build fails after planting.
    git(&repo.work, &["checkout", "--quiet", "-b", "attack"]);
    repo.write(
        "Dockerfile",
        &format!(
            "FROM {base}\nCOPY www /www\nLABEL com.docker.compose.project={project} com.docker.compose.service=web \
             com.docker.compose.oneoff=False com.docker.compose.container-number=0 \
             com.docker.compose.version=1.29.2\nVOLUME /www\nRUN false\n"
        ),
    );
    repo.write("www/index.html", "defaced by a pull request\n");
    git(&repo.work, &["add", "--all"]);
    git(&repo.work, &["commit", "--quiet", "-m", "attack"]);
    git(&repo.work, &["push", "--quiet", "origin", "HEAD:refs/pull/5/head", "HEAD:refs/pull/5/merge"]);
    env.pipe(&["run"]);
    let planted = of_project("ps --all", &project);
    let claimed = planted.len();
    let mut remove = Remove { volumes: Vec::new(), images: Vec::new() };
    for id in &planted {
        let mounts = docker.ok(&["inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}", id]);
        remove.volumes.extend(mounts.split_whitespace().map(str::to_string));
        remove.images.push(docker.ok(&["inspect", "--format", "{{.Image}}", id]).trim().to_string());
    }

    assert_eq!(claimed, 1, "only the main deployment's container claims its compose project: {planted:?}");
    // The main branch moves on; its next deploy is a plain `compose up`.
    git(&repo.work, &["checkout", "--quiet", "main"]);
    repo.write("www/index.html", "main v2\n");
    repo.commit_to("main", "main v2");
    env.pipe(&["run"]).code(0);
    let running = of_main();
    assert_eq!(running.len(), 1, "{running:?}");
    for id in &running {
        let mounts = docker.ok(&["inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}", id]);
        remove.volumes.extend(mounts.split_whitespace().map(str::to_string));
    }
    let page = docker.ok(&["exec", &running[0], "cat", "/www/index.html"]);
    assert_eq!(page, "main v2\n", "the main deployment serves the pull request's page");
}
