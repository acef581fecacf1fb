#!/usr/bin/env bash
# A release to four simulated hosts (network namespaces, each with its own dockerd, nginx and
# `pipe serve`; tests/it/support/hosts.rs) under ~120 requests/s through every host's nginx:
# to one host alone, to all four one host a batch (`batch = 1`), to all four at once; a release
# that fails its health check on host 3; and on four fresh hosts, by hand (`docker-compose up -d`
# against each host's engine, one after another). Writes the "fleet" section of bench/RESULTS.md.
# Needs root, Docker, docker-compose, nginx, jq and the base image (scripts/test-deps.sh).
# Usage: bench/fleet.sh   (BENCH_ROUNDS deploys per way, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
rounds="${BENCH_ROUNDS:-3}"
out="$(mktemp /tmp/pipe-fleet-bench.XXXXXX.json)"
trap 'rm -f "$out"' EXIT
echo "[bench] $rounds deploys per way; the hosts are made and removed by the test" >&2
PIPE_REQUIRE_DOCKER=1 PIPE_FLEET_BENCH_ROUNDS="$rounds" PIPE_FLEET_BENCH_OUT="$out" \
    cargo test --quiet --test it fleet::bench_fleet_rollout -- --ignored --nocapture >&2
med() { jq -r "[.$1[].$2] | sort | .[(length / 2 | floor)] | . * 100 | round / 100" "$out"; }
sum() { jq -r "[.$1[].$2] | add" "$out"; }
row() { echo "| $2 | $(med "$1" command_s) s | $(med "$1" serving_s) s | $(med "$1" mixed_s) s | $(sum "$1" failed) of $(sum "$1" requests) |"; }
ratio=$(jq -r '([.all_at_once[].serving_s] | sort | .[(length / 2 | floor)]) / ([.one_host[].serving_s] | sort | .[(length / 2 | floor)]) | . * 100 | round / 100' "$out")
section=$(cat <<MD
<!-- fleet start -->
## A release to four hosts (\`bench/fleet.sh\`)

$(date -u +%F), $(nproc) cores shared with other work (load average $(cut -d' ' -f1 /proc/loadavg)
at the end), $(docker version --format 'engine {{.Server.Version}}'), \`$(docker-compose version --short 2>/dev/null || echo docker-compose)\`.
Four hosts simulated on this machine (a network namespace each, with its own dockerd, nginx and
\`pipe serve\`, joined by veth pairs), so the four hosts' work shares the same $(nproc) cores: on
real hosts "all at once" runs on four machines. Load: ~30 requests/s through each host's nginx,
from 1 s before the deploy to 2 s after it. Medians of $rounds deploys per way (failed
requests: the sum). *Command*: the deploy command's duration; *all serving*: from its start to
the last host's first answer from the new release; *mixed*: from the first host's first new
answer to the last host's. pipe's hosts deploy through their hooks' zero-downtime rollout
(start beside, check, switch each host's nginx); the hand-rolled way runs on four fresh hosts
whose nginx proxies to the port the app publishes, which \`up -d\` replaces in place.

| way | command | all serving | mixed | failed requests |
|---|---|---|---|---|
$(row one_host "pipe, one host (\`hosts = [1 host]\`)")
$(row batch_1 "pipe, four hosts, \`batch = 1\`")
$(row all_at_once "pipe, four hosts, all at once")
$(row compose_by_hand "\`docker-compose up -d\` on each host in turn")

All at once against one host (all serving): **${ratio}x**. A release that fails its health check
on host 3 of 4 (all at once): $(jq -r '.failure_on_host3.command_s * 10 | round / 10' "$out") s from the deploy's
start to every host rolled back; hosts left on another release than the previous one:
**$(jq -r '.failure_on_host3.hosts_off_previous' "$out")**; failed requests $(jq -r '.failure_on_host3.failed' "$out") of $(jq -r '.failure_on_host3.requests' "$out").
<!-- fleet end -->
MD
)
# shellcheck source=bench/section.sh
. "$root/bench/section.sh"
write_section fleet "$section"
echo "$section"
