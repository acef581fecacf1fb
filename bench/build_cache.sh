#!/usr/bin/env bash
# A warm build cache on a fresh host: `pipe build` of a one-line change to a project whose
# dependency step takes 20 s, four ways, for each builder, in one run:
#   warm host:        the same engine and workspace as the last build;
#   fresh workspace:  the same engine, a workspace pipe never used;
#   fresh engine:     a second dockerd of its own (own data root, own network namespace, only
#                     the base image loaded) with a state and workspace of its own, reading the
#                     registry cache the first build pushed (`cache` on, the default);
#   fresh, no cache:  the same with `cache = false`: every step runs.
# The dependency step sleeps 20 s and then writes 64 MiB of random bytes: a sleep, not CPU work,
# so the step costs the same whatever else the 2 shared cores are doing (the figure is about
# reuse, not the CPU), and the bytes make the registry carry a real, incompressible layer.
# Needs root (ip netns, a second dockerd), docker-registry and both docker CLIs. Uses
# target/release/pipe (built when missing; PIPE_BIN overrides it) and writes its section of
# bench/RESULTS.md. PIPE_BENCH_RUNS (default 3) runs per figure; the median is quoted.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="${PIPE_BIN:-$root/target/release/pipe}"
[ -x "$bin" ] || cargo build --quiet --release
say() { printf '[bench] %s\n' "$*" >&2; }
legacy_cli="${PIPE_LEGACY_DOCKER:-/usr/local/bin/docker}"
kit_cli="${PIPE_BUILDKIT_DOCKER:-/usr/bin/docker}"
base_image="${PIPE_TEST_BASE_IMAGE:-pipe-busybox:latest}"
runs="${PIPE_BENCH_RUNS:-3}"
for tool in docker-registry dockerd nsenter ip; do
    command -v "$tool" >/dev/null || { say "needs $tool"; exit 1; }
done
work="$(mktemp -d /tmp/pipe-bench-cache-XXXXXX)"
tag="$$"
netns="pipebc$tag"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
registry_pid="" ns_registry_pid="" dockerd_pid="" engine_host=""

stop_engine() {
    [ -n "$ns_registry_pid" ] && kill "$ns_registry_pid" 2>/dev/null && wait "$ns_registry_pid" 2>/dev/null || true
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 300); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
    fi
    ns_registry_pid="" dockerd_pid=""
    grep -o " $work/engine[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work/engine"
}
cleanup() {
    stop_engine
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
    ip netns del "$netns" 2>/dev/null || true
    docker image ls --format '{{.Repository}}:{{.Tag}}' | grep "pipe-bench/cache-$tag-" | xargs -r docker image rm -f \
        >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# The registry, answering on 127.0.0.1:$port both here and inside the fresh engine's namespace
# (a second process over the same storage).
cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
ip netns add "$netns"
nsenter --net="/var/run/netns/$netns" ip link set lo up

start_engine() { # a fresh dockerd, its socket at $work/engine/docker.sock
    mkdir -p "$work/engine"
    nsenter --net="/var/run/netns/$netns" dockerd --data-root "$work/engine/data" \
        --exec-root "$work/engine/exec" --pidfile "$work/engine/dockerd.pid" \
        -H "unix://$work/engine/docker.sock" >"$work/engine/dockerd.log" 2>&1 &
    dockerd_pid=$!
    nsenter --net="/var/run/netns/$netns" docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
    ns_registry_pid=$!
    for _ in $(seq 300); do docker -H "unix://$work/engine/docker.sock" version >/dev/null 2>&1 && break; sleep 0.2; done
    docker save "$base_image" | docker -H "unix://$work/engine/docker.sock" load >/dev/null
}

git -C "$work" init -q -b main src
echo v0 >"$work/src/app.txt"
git -C "$work/src" add -A
git -C "$work/src" -c user.name=bench -c user.email=bench@pipe.invalid commit -qm bench
git clone -q --bare "$work/src" "$work/app.git"
git -C "$work/src" remote add origin "$work/app.git"
change=0
one_line_change() {
    change=$((change + 1))
    echo "change $change" >"$work/src/app.txt"
    git -C "$work/src" -c user.name=bench -c user.email=bench@pipe.invalid commit -qam "change $change"
    git -C "$work/src" push -q --force origin HEAD:main
}
config() { # DIR IMAGE [EXTRA]
    mkdir -p "$1"
    cat >"$1/pipeline.toml" <<TOML
[pipe]
workspace = "$1/work"
[registry.local]
url = "127.0.0.1:$port"
[project.app]
repo = "file://$work/app.git"
branches = ["main"]
image = "$2"
$3
[[project.app.deploy]]
branches = ["main"]
push = ["local"]
command = { argv = ["true"] }
TOML
}
pipe_in() { # DIR CLI ARGS...: pipe with that pipeline file and state
    local dir="$1" cli="$2"
    shift 2
    env ${engine_host:+DOCKER_HOST=$engine_host} PIPE_DOCKER="$cli" PIPE_CONFIG="$dir/pipeline.toml" \
        PIPE_STATE="$dir/state/state.toml" "$bin" -q "$@"
}
seconds() { # COMMAND...: its wall-clock seconds on stdout, its output in $work/last.log
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    python3 -c "print(round($t1 - $t0, 2))"
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { python3 -c "print(round($1 / $2, 2))"; }

declare -A figure
for builder in legacy buildkit; do
    cli=$legacy_cli
    [ "$builder" = buildkit ] && cli=$kit_cli
    image="pipe-bench/cache-$tag-$builder"
    printf 'FROM %s\nRUN echo bench-cache-%s-%s dependencies && sleep 20 && head -c 67108864 /dev/urandom > /deps.bin\nCOPY app.txt /app.txt\n' \
        "$base_image" "$tag" "$builder" >"$work/src/Dockerfile"
    git -C "$work/src" add -A
    git -C "$work/src" -c user.name=bench -c user.email=bench@pipe.invalid commit -qm "$builder"
    git -C "$work/src" push -q --force origin HEAD:main
    # The first build, pushed: what every later one can reuse.
    config "$work/$builder-warm" "$image" ""
    say "$builder: first build and push"
    pipe_in "$work/$builder-warm" "$cli" run app >/dev/null
    warm=() fresh_ws=() fresh_cache=() fresh_cold=()
    for i in $(seq "$runs"); do
        one_line_change
        say "$builder: run $i: warm host"
        warm+=("$(seconds pipe_in "$work/$builder-warm" "$cli" build app)")
        one_line_change
        config "$work/$builder-ws-$i" "$image" ""
        ln -sfn "$work/$builder-warm/state" "$work/$builder-ws-$i/state"
        say "$builder: run $i: fresh workspace"
        fresh_ws+=("$(seconds pipe_in "$work/$builder-ws-$i" "$cli" build app)")
        for mode in cache cold; do
            one_line_change
            start_engine
            extra=""
            [ "$mode" = cold ] && extra="cache = false"
            config "$work/engine/host" "$image" "$extra"
            say "$builder: run $i: fresh engine ($mode)"
            engine_host="unix://$work/engine/docker.sock"
            t=$(seconds pipe_in "$work/engine/host" "$cli" build app)
            engine_host=""
            if [ "$mode" = cache ]; then fresh_cache+=("$t"); else fresh_cold+=("$t"); fi
            stop_engine
        done
    done
    figure[$builder-warm]=$(median "${warm[@]}")
    figure[$builder-ws]=$(median "${fresh_ws[@]}")
    figure[$builder-cache]=$(median "${fresh_cache[@]}")
    figure[$builder-cold]=$(median "${fresh_cold[@]}")
    figure[$builder-runs]="warm ${warm[*]}; fresh workspace ${fresh_ws[*]}; fresh engine, cache ${fresh_cache[*]}; no cache ${fresh_cold[*]}"
    say "$builder: ${figure[$builder-runs]}"
done

row() { # BUILDER LABEL
    local b=$1
    printf '| %s | %s s | %s s | %s s | %s s | **%s** | %s |\n' "$2" "${figure[$b-warm]}" "${figure[$b-ws]}" \
        "${figure[$b-cache]}" "${figure[$b-cold]}" "$(ratio "${figure[$b-cache]}" "${figure[$b-warm]}")" \
        "$(ratio "${figure[$b-cold]}" "${figure[$b-warm]}")"
}
section=$(cat <<MD
<!-- build-cache start -->
## A warm build cache on a fresh host: \`pipe build\` of a one-line change (\`bench/build_cache.sh\`)

$(date -u +%F), $(nproc) cores shared with other work (load average $(cut -d' ' -f1 /proc/loadavg)
at the end), $(docker version --format 'engine {{.Server.Version}}'); legacy: \`$("$legacy_cli" --version)\`;
BuildKit: \`$("$kit_cli" --version)\` with \`DOCKER_BUILDKIT=1\`. One run, medians of $runs builds each.
The dependency step sleeps 20 s and writes 64 MiB of random bytes (a sleep: the step costs the
same however busy the shared cores are); each build follows a one-line change to a file the
last step copies. Fresh engine: a second \`dockerd\` (own data root, own network namespace, only
the base image), with a state and workspace of its own, reading a local \`docker-registry\`
(no TLS, no login) that holds the image the first build pushed. pipe: \`${bin#"$root"/}\`.

| builder | warm host | fresh workspace | fresh engine, registry cache | fresh engine, \`cache = false\` | cache / warm | no cache / warm |
|---|---|---|---|---|---|---|
$(row legacy "legacy (pull, then \`--cache-from\`)")
$(row buildkit "BuildKit (inline cache, \`--cache-from\` the registry)")

Goal: a fresh engine with the registry cache at most 1.5 times the warm rebuild. Every build
in seconds, in order: legacy: ${figure[legacy-runs]}; BuildKit: ${figure[buildkit-runs]}.
<!-- build-cache end -->
MD
)
# shellcheck source=bench/section.sh
. "$root/bench/section.sh"
write_section build-cache "$section"
echo "$section"
