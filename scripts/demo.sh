#!/usr/bin/env bash
# The newcomer's demo: a complete pipeline on a bundled project, on this machine only.
#
#   scripts/demo.sh          set up what is missing, then `pipe run`: poll the demo's git repo,
#                            build its image, test it, push it to a local registry, deploy it
#                            with compose, and print the URL where it answers
#   scripts/demo.sh stop     stop the demo app and the demo registry (files stay)
#
# Run it again and nothing that has not changed is rebuilt. Commit to the demo repo (the script
# prints how) and run it again: the new commit is built, tested, pushed and deployed.
#
# What it sets up (each step says so): scripts/setup-docker.sh (git, Docker engine, compose,
# Debian's docker-registry, busybox-static and a base image made from it), the release build of
# pipe (unless PIPE_BIN names a binary), Debian's docker-registry on 127.0.0.1, and everything
# else under PIPE_DEMO_DIR. Overrides: PIPE_DEMO_DIR (/var/tmp/pipe-demo), PIPE_DEMO_PORT (8088),
# PIPE_DEMO_REGISTRY_PORT (5055), PIPE_DEMO_PROJECT (pipe-demo), PIPE_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

say() { printf '[demo] %s\n' "$*" >&2; }

dir="${PIPE_DEMO_DIR:-/var/tmp/pipe-demo}"
port="${PIPE_DEMO_PORT:-8088}"
registry_port="${PIPE_DEMO_REGISTRY_PORT:-5055}"
project="${PIPE_DEMO_PROJECT:-pipe-demo}"
base_image="${PIPE_TEST_BASE_IMAGE:-pipe-busybox:latest}"
url="http://127.0.0.1:$port/"

compose() {
    if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

if [ "${1:-}" = "stop" ]; then
    if [ -f "$dir/docker-compose.yml" ]; then
        say "stopping the demo app (compose project $project)"
        PIPE_IMAGE=none PIPE_TAG=none compose -p "$project" -f "$dir/docker-compose.yml" down --remove-orphans >&2 || true
    fi
    if [ -f "$dir/registry.pid" ] && kill "$(cat "$dir/registry.pid")" 2>/dev/null; then
        say "stopped the demo registry on 127.0.0.1:$registry_port"
    fi
    rm -f "$dir/registry.pid"
    exit 0
elif [ -n "${1:-}" ]; then
    say "unknown argument '$1'; usage: scripts/demo.sh [stop]"
    exit 2
fi

scripts/setup-docker.sh

if [ -n "${PIPE_BIN:-}" ]; then
    pipe="$PIPE_BIN"
else
    if ! command -v cargo >/dev/null; then
        say "cargo is missing: install a Rust toolchain (https://rustup.rs), or set PIPE_BIN to a pipe binary"
        exit 1
    fi
    say "building pipe: cargo build --release (the first build takes a few minutes)"
    cargo build --release --quiet
    pipe="$root/target/release/pipe"
fi

mkdir -p "$dir/state"

if ! curl -fs -o /dev/null "http://127.0.0.1:$registry_port/v2/"; then
    say "starting Debian's docker-registry on 127.0.0.1:$registry_port (data in $dir/registry, log in $dir/registry.log)"
    cat >"$dir/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/registry
http:
  addr: 127.0.0.1:$registry_port
EOF
    nohup docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
    echo $! >"$dir/registry.pid"
    for _ in $(seq 1 50); do
        curl -fs -o /dev/null "http://127.0.0.1:$registry_port/v2/" && break
        sleep 0.2
    done
    curl -fs -o /dev/null "http://127.0.0.1:$registry_port/v2/" || {
        say "the registry did not start; its log:"
        cat "$dir/registry.log" >&2
        exit 1
    }
fi

if [ ! -d "$dir/app.git" ]; then
    say "creating the demo project: git repository $dir/app.git, working copy $dir/app"
    git init --quiet --bare --initial-branch=main "$dir/app.git"
    mkdir -p "$dir/app"
    cp -R scripts/demo/app/. "$dir/app/"
    git -C "$dir/app" init --quiet --initial-branch=main
    git -C "$dir/app" config user.name "pipe demo"
    git -C "$dir/app" config user.email "demo@pipe.invalid"
    git -C "$dir/app" remote add origin "$dir/app.git"
    git -C "$dir/app" add --all
    git -C "$dir/app" commit --quiet -m "The pipe demo app"
    git -C "$dir/app" push --quiet --set-upstream origin main
fi

# The operator's side: the deploy target's compose file and the pipeline file.
sed "s/\${PIPE_DEMO_PORT:-8088}/$port/" scripts/demo/docker-compose.yml >"$dir/docker-compose.yml"
cat >"$dir/pipeline.toml" <<EOF
# Written by scripts/demo.sh: the demo project, built, tested, pushed and deployed on this host.
[pipe]
workspace = "$dir/work"

[registry.demo]
url = "127.0.0.1:$registry_port"

[project.$project]
repo = "file://$dir/app.git"
branches = ["main"]
image = "$project/app"
build_args = { BASE = "$base_image" }

[[project.$project.deploy]]
name = "local"
branches = ["main"]
push = ["demo"]
compose = { file = "$dir/docker-compose.yml", project = "$project", services = ["web"] }
health = { url = "$url", timeout = "30s" }
EOF

say "running: pipe -c $dir/pipeline.toml --state $dir/state/state.toml run"
status=0
"$pipe" -c "$dir/pipeline.toml" --state "$dir/state/state.toml" run || status=$?
if [ "$status" -ne 0 ]; then
    say "pipe run exited with $status; the log of the run: $pipe -c $dir/pipeline.toml --state $dir/state/state.toml logs $project main"
    exit "$status"
fi

if ! curl -fs -o /dev/null "$url"; then
    # Nothing new to build, but the app was stopped (`scripts/demo.sh stop`, a reboot): bring
    # the last deployed image back, as an operator would with `pipe deploy`.
    say "the demo app is not running; redeploying its last image: pipe deploy $project main"
    "$pipe" -c "$dir/pipeline.toml" --state "$dir/state/state.toml" deploy "$project" main
fi
if ! curl -fs -o /dev/null "$url"; then
    say "the demo app does not answer at $url"
    exit 1
fi
echo "The demo app answers at $url"
cat >&2 <<EOF
[demo] Change it and watch it redeploy:
[demo]   echo '<h1>Changed</h1>' >$dir/app/www/index.html
[demo]   git -C $dir/app commit -qam 'my change' && git -C $dir/app push -q
[demo]   scripts/demo.sh
[demo] See what pipe recorded: $pipe --state $dir/state/state.toml status
[demo] Stop the demo: scripts/demo.sh stop
EOF
