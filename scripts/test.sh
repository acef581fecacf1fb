#!/usr/bin/env bash
# The one command that runs everything CI runs: installs and starts what the tests need
# (scripts/test-deps.sh), then formatting, lints and every test, real-Docker ones included.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh

# Real-Docker tests fail instead of skipping when the engine is required.
export PIPE_REQUIRE_DOCKER=1
export PIPE_REQUIRE_CHROMIUM=1
export PIPE_TEST_BASE_IMAGE="${PIPE_TEST_BASE_IMAGE:-pipe-busybox:latest}"
# Most integration tests wait on engines, registries and load rather than on the CPU: three at
# once on two cores keeps the suite within its time budget.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-3}"

echo "[test] cargo fmt --check" >&2
cargo fmt --check
echo "[test] cargo clippy --all-targets -- -D warnings" >&2
cargo clippy --quiet --all-targets -- -D warnings
echo "[test] cargo test" >&2
cargo test --quiet 2>&1
# Both builders are first-class: the build, test, push, secret and isolation scenarios run
# again through Debian's docker CLI (20.10), whose BuildKit is built in (`DOCKER_BUILDKIT=1`);
# the pass above used the CLI on PATH, whose builder without buildx is the legacy one.
kit_cli=/usr/bin/docker
if ! [ -x "$kit_cli" ] || ! "$kit_cli" --version | grep -qE 'version (18\.09|19\.|2[0-2]\.)'; then
    echo "[test] $kit_cli is not a docker CLI with BuildKit built in (Debian's docker.io)" >&2
    exit 1
fi
echo "[test] cargo test: stages, runs, trust, the image line, several images and the build cache again on BuildKit ($kit_cli)" >&2
# Swarm updates and deploys under load build nothing the first pass did not: they are skipped here.
PIPE_TEST_DOCKER="$kit_cli" cargo test --quiet --test it -- stages:: run:: trust:: image_line:: images:: build_cache:: \
    --skip run::a_swarm --skip images::a_release_of_several_images_switches_together_under_load 2>&1
