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

echo "[test] cargo fmt --check" >&2
cargo fmt --check
echo "[test] cargo clippy --all-targets -- -D warnings" >&2
cargo clippy --quiet --all-targets -- -D warnings
echo "[test] cargo test" >&2
cargo test --quiet 2>&1
