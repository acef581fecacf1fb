#!/usr/bin/env bash
# A release to four simulated hosts (network namespaces, each with its own dockerd and nginx;
# tests/it/support/hosts.rs) under ~120 requests/s through every host's nginx: to one host
# alone, to all four one host a batch (`batch = 1`), to all four at once; a release that fails
# its health check on host 3; and on four fresh hosts, by hand (`docker-compose up -d` on each
# host, one after another). One section of bench/RESULTS.md per model:
#   serve  hosts that run `pipe serve` (a webhook target with `hosts`); by hand, compose runs
#          here against each host's engine socket. Section "fleet".
#   ssh    hosts that run only Docker, nginx and sshd (a compose target with `ssh`); by hand,
#          `ssh HOST docker-compose -p P -f FILE up -d` with the file on the host. Section
#          "fleet-ssh".
# Needs root, Docker, docker-compose, nginx, sshd, jq and the base image (scripts/test-deps.sh).
# Usage: bench/fleet.sh [serve|ssh]...   (default: serve; BENCH_ROUNDS deploys per way, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
rounds="${BENCH_ROUNDS:-3}"
out="$(mktemp /tmp/pipe-fleet-bench.XXXXXX.json)"
trap 'rm -f "$out"' EXIT
# shellcheck source=bench/section.sh
. "$root/bench/section.sh"

med() { jq -r "[.$1[].$2] | sort | .[(length / 2 | floor)] | . * 100 | round / 100" "$out"; }
sum() { jq -r "[.$1[].$2] | add" "$out"; }
row() { echo "| $2 | $(med "$1" command_s) s | $(med "$1" serving_s) s | $(med "$1" mixed_s) s | $(sum "$1" failed) of $(sum "$1" requests) |"; }

# bench MODEL: runs the model's test and writes its section.
bench() {
    local model="$1" test name title hosts how hand one_label hand_label
    case "$model" in
    serve)
        test=fleet::bench_fleet_rollout name=fleet title="A release to four hosts"
        hosts="its own dockerd, nginx and
\`pipe serve\`"
        how="pipe's hosts deploy through their hooks' zero-downtime rollout
(start beside, check, switch each host's nginx)"
        hand="runs \`docker-compose up -d\` here against each host's engine socket, on four fresh hosts"
        one_label="pipe, one host (\`hosts = [1 host]\`)"
        hand_label="\`docker-compose up -d\` on each host in turn"
        ;;
    ssh)
        test=fleet_ssh::bench_ssh_fleet_rollout name=fleet-ssh title="A release to four hosts over SSH"
        hosts="its own dockerd, nginx and
an sshd, no pipe; the sshd in a mount namespace of its own where \`/mnt\` is the host's directory"
        how="pipe (a compose target with \`ssh\`) reaches each host's engine through one
SSH connection per host and runs the zero-downtime rollout (start beside, check through an SSH
forward, switch that host's nginx over SSH)"
        hand="runs \`ssh HOST env DOCKER_HOST=unix:///mnt/docker.sock PIPE_TAG=… docker-compose -p P
-f /mnt/app/docker-compose.yml up -d\` on four fresh hosts, the compose file placed on each
(\`DOCKER_HOST\` only because a simulated host's engine socket is not the default one)"
        one_label="pipe over SSH, one host (\`hosts = [1 host]\`)"
        hand_label="\`ssh HOST docker-compose up -d\` on each host in turn"
        ;;
    *)
        echo "bench/fleet.sh: unknown model \`$model\` (serve or ssh)" >&2
        return 2
        ;;
    esac
    echo "[bench] $model: $rounds deploys per way; the hosts are made and removed by the test" >&2
    PIPE_REQUIRE_DOCKER=1 PIPE_FLEET_BENCH_ROUNDS="$rounds" PIPE_FLEET_BENCH_OUT="$out" \
        cargo test --quiet --test it "$test" -- --ignored --nocapture >&2
    local ratio
    ratio=$(jq -r '([.all_at_once[].serving_s] | sort | .[(length / 2 | floor)]) / ([.one_host[].serving_s] | sort | .[(length / 2 | floor)]) | . * 100 | round / 100' "$out")
    local section
    section=$(cat <<MD
<!-- $name start -->
## $title (\`bench/fleet.sh $model\`)

$(date -u +%F), $(nproc) cores shared with other work (load average $(cut -d' ' -f1 /proc/loadavg)
at the end), $(docker version --format 'engine {{.Server.Version}}'), \`$(docker-compose version --short 2>/dev/null || echo docker-compose)\`.
Four hosts simulated on this machine (a network namespace each, with $hosts, joined by veth pairs), so the four hosts' work shares the same $(nproc) cores: on
real hosts "all at once" runs on four machines. Each release's image is copied into every
host's engine before its deploy (\`docker save | docker load\`), so no deploy pulls from a
registry. Load: ~30 requests/s through each host's nginx,
from 1 s before the deploy to 2 s after it. Medians of $rounds deploys per way (failed
requests: the sum). *Command*: the deploy command's duration; *all serving*: from its start to
the last host's first answer from the new release; *mixed*: from the first host's first new
answer to the last host's. $how; the hand-rolled way $hand, whose nginx proxies to the port the
app publishes, which \`up -d\` replaces in place.

| way | command | all serving | mixed | failed requests |
|---|---|---|---|---|
$(row one_host "$one_label")
$(row batch_1 "pipe, four hosts, \`batch = 1\`")
$(row all_at_once "pipe, four hosts, all at once")
$(row compose_by_hand "$hand_label")

All at once against one host (all serving): **${ratio}x**. A release that fails its health check
on host 3 of 4 (all at once): $(jq -r '.failure_on_host3.command_s * 10 | round / 10' "$out") s from the deploy's
start to every host rolled back; hosts left on another release than the previous one:
**$(jq -r '.failure_on_host3.hosts_off_previous' "$out")**; failed requests $(jq -r '.failure_on_host3.failed' "$out") of $(jq -r '.failure_on_host3.requests' "$out").
<!-- $name end -->
MD
)
    write_section "$name" "$section"
    echo "$section"
}

[ $# -gt 0 ] || set -- serve
for model in "$@"; do
    bench "$model"
done
