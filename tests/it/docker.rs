//! The real-Docker harness: proves the engine, the local base image and per-test cleanup work,
//! so the stages built on them are tested against a real engine. Skips on a laptop without an
//! engine; fails when `PIPE_REQUIRE_DOCKER=1` (set by `scripts/test.sh`, hence in CI).

use crate::support::TestEnv;
use crate::support::docker::{Docker, unique_name};

#[test]
fn engine_builds_an_image_from_the_local_base_and_runs_it() {
    let Some(docker) = Docker::require() else { return };
    let env = TestEnv::new();
    let context = env.path().join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            r#"FROM {}
RUN echo built-by-the-engine > /built
CMD ["cat", "/built"]
"#,
            docker.base_image
        ),
    )
    .unwrap();
    let image = docker.image(&unique_name("harness"));
    docker.ok(&["build", "--quiet", "--label", "pipe.test=harness", "-t", &image.name, context.to_str().unwrap()]);

    let container = unique_name("harness-run");
    let out = docker.ok(&["run", "--rm", "--name", &container, "--label", "pipe.test=harness", &image.name]);
    assert_eq!(out.trim(), "built-by-the-engine");
    let left = docker.ok(&["ps", "-a", "--quiet", "--filter", &format!("name=^{container}$")]);
    assert_eq!(left.trim(), "", "`--rm` left the container behind");
}
