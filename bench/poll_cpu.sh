#!/usr/bin/env bash
# The CPU a no-op poll pays per repository where connections cannot be reused: `pipe poll` of
# 20 repositories x 50 branches with nothing new, over `git://` (git-daemon: one connection per
# repository), plain HTTP that closes every connection (HTTP/1.0) and plain HTTP with keep-alive
# (HTTP/1.1), both `git http-backend` behind Python's HTTP server (tests/it/support/
# git_http_server.py). CPU is task-clock (user + system of the process and its threads) from
# `perf stat -r 15`, against a loop of `git ls-remote URL` over the same repositories (its
# children counted). With BEFORE_BIN set, that binary is measured in the same run too.
# Needs git, perf, python3. Uses target/release/pipe (PIPE_BIN overrides it) and writes its
# section of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="${PIPE_BIN:-$root/target/release/pipe}"
[ -x "$bin" ] || cargo build --quiet --release
before="${BEFORE_BIN:-}"
say() { printf '[bench] %s\n' "$*" >&2; }
command -v perf >/dev/null || { say "needs perf (apt-get install linux-perf)"; exit 1; }
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

git init -q -b main "$work/seed"
git -C "$work/seed" -c user.name=bench -c user.email=bench@pipe.invalid commit -q --allow-empty -m seed
for i in $(seq 1 50); do git -C "$work/seed" branch "b$i"; done
mkdir "$work/repos"
for i in $(seq 1 20); do
    git clone -q --mirror "$work/seed" "$work/repos/r$i.git"
    touch "$work/repos/r$i.git/git-daemon-export-ok"
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$work/repos" --export-all "$work/repos" \
    >/dev/null 2>&1 &
pids+=($!)
sed 's/protocol_version = "HTTP\/1.1"/protocol_version = "HTTP\/1.0"/' tests/it/support/git_http_server.py >"$work/h10.py"
python3 "$work/h10.py" "$work/repos" "$work/h10.port" >/dev/null 2>&1 &
pids+=($!)
python3 tests/it/support/git_http_server.py "$work/repos" "$work/h11.port" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/h10.port" ] && [ -s "$work/h11.port" ] && break; sleep 0.1; done
sleep 0.5
declare -A base=([git]="git://127.0.0.1:$port" [http10]="http://127.0.0.1:$(cat "$work/h10.port")"
    [http11]="http://127.0.0.1:$(cat "$work/h11.port")")
for kind in git http10 http11; do
    {
        printf '[pipe]\nworkspace = "%s/work"\n' "$work"
        for i in $(seq 1 20); do
            printf '[project.r%s]\nrepo = "%s/r%s.git"\nbranches = ["**"]\nimage = "bench/r%s"\n' "$i" "${base[$kind]}" "$i" "$i"
        done
    } >"$work/$kind.toml"
    printf '#!/bin/sh\nfor i in $(seq 1 20); do git ls-remote %s/r$i.git >/dev/null; done\n' "${base[$kind]}" >"$work/$kind.loop"
    chmod +x "$work/$kind.loop"
done
# task-clock in ms of `perf stat -r N CMD…`.
cpu() { local n=$1; shift; perf stat -x, -r "$n" -e task-clock "$@" 2>&1 >/dev/null | awk -F, '/task-clock/ {printf "%.1f", $1}'; }
poll() { # BIN KIND: a no-op poll (the first one, which records every ref, is not measured)
    env PIPE_CONFIG="$work/$2.toml" PIPE_STATE="$work/state-$2-$(basename "$(dirname "$(dirname "$1")")")/state.toml" "$1" -q poll >/dev/null
    cpu 15 env PIPE_CONFIG="$work/$2.toml" PIPE_STATE="$work/state-$2-$(basename "$(dirname "$(dirname "$1")")")/state.toml" "$1" -q poll
}
rows=""
for kind in git http10 http11; do
    loop=$(cpu 5 "$work/$kind.loop")
    after=$(poll "$bin" "$kind")
    ratio=$(python3 -c "print(f'{$after/$loop:.2f}')")
    if [ -n "$before" ]; then
        was=$(poll "$before" "$kind")
        was_ratio=$(python3 -c "print(f'{$was/$loop:.2f}')")
        rows+="| $kind | $loop ms | $was ms ($was_ratio) | $after ms (**$ratio**) |"$'\n'
    else
        rows+="| $kind | $loop ms | — | $after ms (**$ratio**) |"$'\n'
    fi
    say "$kind: loop $loop ms, pipe $after ms"
done
labels="git:// (git-daemon, one connection a repository); http10: HTTP/1.0, every connection closed; http11: HTTP/1.1 keep-alive"
section=$(cat <<MD
<!-- poll-cpu start -->
## CPU of a no-op poll per protocol, connections not reused (\`bench/poll_cpu.sh\`)

$(date -u +%F), $(nproc) cores shared with other work (load average $(cut -d' ' -f1 /proc/loadavg) at the end).
20 repositories x 50 branches on 127.0.0.1, nothing new. CPU: \`perf stat\` task-clock, mean of
15 polls (5 loops), one run. Servers: git-daemon; \`git http-backend\` behind Python's HTTP server.
Before: \`${before:-not measured}\`; after: \`$bin\`. Rows: $labels.

| remote | \`git ls-remote\` loop | pipe before (ratio) | pipe after (ratio, goal ≤ 0.25) |
|---|---|---|---|
$rows
<!-- poll-cpu end -->
MD
)
# shellcheck source=bench/section.sh
. "$root/bench/section.sh"
write_section poll-cpu "$section"
echo "$section"
