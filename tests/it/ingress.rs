//! `pipe generate nginx` against Debian's real nginx: the generated file passes `nginx -t`, and a
//! request for `<service>.DOMAIN` reaches the container `pipe run` deployed, both with nginx on
//! the host (published ports) and with nginx in a container using Docker's DNS server.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::docker::{ComposeProject, Container, Docker, ProjectImages, unique_name, write_web_compose};
use crate::support::http::get_as;
use crate::support::nginx::{self, NGINX};
use crate::support::{TestEnv, WorkRepo, free_port};

/// An http-level nginx.conf around the generated file, with every path inside `dir`, logging
/// errors to stderr.
fn wrapper(dir: &Path, include: &str) -> String {
    format!("error_log stderr;\n{}", nginx::conf(dir, include))
}

fn nginx_t(conf: &Path) -> String {
    let out = Command::new(NGINX).arg("-t").arg("-c").arg(conf).args(["-e", "stderr"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "nginx -t refused the generated config:\n{said}");
    said
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops its workers too; SIGKILL would leave them holding the port.
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

fn until_answers(url: &str, host: &str) -> Option<(u16, String)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = get_as(url, Some(host));
        if matches!(got, Some((200, _))) || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A FROM-scratch image holding the host's nginx and the libraries it links (nothing can be pulled).
fn nginx_image(docker: &Docker, dir: &Path, name: &str) {
    let root = dir.join("rootfs");
    let ldd = Command::new("ldd").arg(NGINX).output().unwrap();
    let mut files = vec![NGINX.to_string()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line.split("=>").last().unwrap().split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            files.push(path.to_string());
        }
    }
    for file in files {
        let to = root.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(std::fs::canonicalize(&file).unwrap(), &to).unwrap();
    }
    for d in ["etc", "var/lib/nginx", "var/log/nginx", "run", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY rootfs /\n").unwrap();
    docker.ok(&["build", "--quiet", "--tag", name, &dir.display().to_string()]);
}

#[test]
fn generated_nginx_config_passes_nginx_t_and_proxies_to_the_deployed_service() {
    let Some(docker) = Docker::require() else { return };
    if !nginx::available() {
        return;
    }
    let env = TestEnv::new();
    let project = unique_name("ngx").replace("pipe-test-", "");
    // Images after the compose project: locals drop in reverse, so its containers go first and
    // the images are no longer in use when they are removed.
    let _images = ProjectImages { project: project.clone() };
    let _compose = ComposeProject { name: project.clone() };
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    repo.write("www/index.html", "hello through nginx\n");
    repo.write(".pipe.toml", &format!("image = \"pipe-test/{project}\"\n"));
    repo.commit_to("dev", "app");
    let app_port = free_port();
    let compose_file = env.path().join("docker-compose.yml");
    write_web_compose(&compose_file, app_port);
    let host_port = free_port();
    let config = |ingress: &str, port: u16| {
        format!(
            r#"[pipe]
workspace = "{ws}"

[ingress]
domain = "devel.example.test"
body_size = "20m"
timeout = "30s"
{ingress}

[project.{project}]
repo = "{url}"
branches = ["dev"]

[[project.{project}.deploy]]
name = "devhost"
branches = ["dev"]
compose = {{ file = "{file}", project = "{project}", services = ["web"] }}
ingress = {{ web = {port} }}
"#,
            ws = env.path().join("work").display(),
            url = repo.url(),
            file = compose_file.display(),
        )
    };

    // nginx on the host, reaching the service through the port it publishes.
    env.config(&config(&format!("listen = \"127.0.0.1:{host_port}\"\nupstream = \"127.0.0.1\""), app_port));
    env.pipe(&["run"]).code(0).stdout_has("deploy  passed");
    let host_dir = env.path().join("nginx-host");
    std::fs::create_dir_all(&host_dir).unwrap();
    let generated = env.pipe(&["generate", "nginx"]);
    generated.code(0).stdout_has(&format!("web {app_port};")).stdout_has("proxy_pass http://127.0.0.1:$pipe_port;");
    assert!(!generated.stdout.contains("resolver"), "no DNS server on the host to name:\n{}", generated.stdout);
    std::fs::write(host_dir.join("pipe.conf"), &generated.stdout).unwrap();
    let conf = host_dir.join("nginx.conf");
    std::fs::write(&conf, wrapper(&host_dir, &host_dir.join("pipe.conf").display().to_string())).unwrap();
    assert!(nginx_t(&conf).contains("test is successful"));
    let _nginx = Nginx(
        Command::new(NGINX)
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr", "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let front = format!("http://127.0.0.1:{host_port}/");
    let got = until_answers(&front, "web.devel.example.test");
    assert_eq!(got, Some((200, "hello through nginx\n".into())));
    let unknown = get_as(&front, Some("nope.devel.example.test"));
    assert_eq!(unknown.map(|(code, _)| code), Some(404), "a service nobody deploys is a 404");

    // nginx in a container on the project's network, finding `web` through Docker's DNS server:
    // the classic setup, where the map holds the container's own port.
    env.config(&config("listen = \"80\"", 8080));
    let generated = env.pipe(&["generate", "nginx"]);
    generated.code(0).stdout_has("resolver 127.0.0.11").stdout_has("proxy_pass http://$pipe_service:$pipe_port;");
    let docker_dir = env.path().join("nginx-docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    std::fs::write(docker_dir.join("pipe.conf"), &generated.stdout).unwrap();
    let in_container = Path::new("/conf");
    std::fs::write(docker_dir.join("nginx.conf"), wrapper(Path::new("/tmp"), "/conf/pipe.conf")).unwrap();
    // The same file passes nginx -t on the host too (paths rewritten to the host's copy).
    let local = docker_dir.join("local.conf");
    std::fs::write(&local, wrapper(&docker_dir, &docker_dir.join("pipe.conf").display().to_string())).unwrap();
    nginx_t(&local);

    let image = docker.image(&format!("{project}-nginx"));
    let build_dir = env.path().join("nginx-image");
    nginx_image(&docker, &build_dir, &image.name);
    let container = Container { name: unique_name("nginx") };
    let front_port = free_port();
    docker.ok(&[
        "run",
        "--detach",
        "--name",
        &container.name,
        "--network",
        &format!("{project}_default"),
        "--publish",
        &format!("127.0.0.1:{front_port}:80"),
        "--volume",
        &format!("{}:{}:ro", docker_dir.display(), in_container.display()),
        &image.name,
        NGINX,
        "-c",
        "/conf/nginx.conf",
        "-e",
        "stderr",
        "-g",
        "daemon off;",
    ]);
    let front = format!("http://127.0.0.1:{front_port}/");
    let got = until_answers(&front, "web.devel.example.test");
    let logs = Command::new("docker").args(["logs", &container.name]).output().unwrap();
    assert_eq!(
        got,
        Some((200, "hello through nginx\n".into())),
        "nginx in a container did not reach `web`:\n{}",
        String::from_utf8_lossy(&logs.stderr)
    );
}
