#!/usr/bin/env bash
# From `git push` to the new release answering through nginx: a push to a real git daemon
# (git://), then the forge's push webhook to `pipe serve`, against the same project driven by a
# 60 s timer running `pipe run` (the seed's polling). Writes the "Push to traffic" section of
# bench/RESULTS.md. Needs Docker, git daemon, nginx, python3 and the base image
# (scripts/test-deps.sh). Usage: bench/push_to_traffic.sh   (BENCH_SAMPLES webhook pushes,
# default 5; BENCH_TIMER_SAMPLES timer pushes, default 3; BENCH_PERIOD seconds, default 60;
# PIPE_BIN to use another binary).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
samples="${BENCH_SAMPLES:-5}"
timer_samples="${BENCH_TIMER_SAMPLES:-3}"
period="${BENCH_PERIOD:-60}"
work="$(mktemp -d /tmp/pipe-p2t-bench.XXXXXX)"
name="p2t$$"
front="$(free_port)"; git_port="$(free_port)"; serve_port="$(free_port)"
n="$work/nginx"
cleanup() {
    [ -f "$n/nginx.pid" ] && kill -TERM "$(cat "$n/nginx.pid")" 2>/dev/null || true
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null || true
    [ -n "${forge:-}" ] && kill "$forge" 2>/dev/null || true
    remove_deployment "$name"
    rm -rf "$work"
}
trap cleanup EXIT

say "fixtures in $work"
mkdir -p "$work/git" "$work/app/www" "$work/deploy" "$n"
git -C "$work/git" init -q --bare app.git
git -C "$work/git/app.git" config daemon.receivepack true
git daemon --reuseaddr --listen=127.0.0.1 --port="$git_port" --base-path="$work/git" --export-all \
    --enable=receive-pack "$work/git" 2>"$work/git-daemon.log" &
daemon=$!
python3 "$root/tests/it/support/forge_api.py" github bench-forge-token "$work/forge.jsonl" "$work/forge.port" &
forge=$!
for _ in $(seq 1 100); do [ -s "$work/forge.port" ] && break; sleep 0.05; done
git -C "$work/app" init -q -b dev
git -C "$work/app" remote add origin "git://127.0.0.1:$git_port/app.git"
printf 'FROM %s\nCOPY www /www\n' "$base" > "$work/app/Dockerfile"
echo ok > "$work/app/www/health"
printf 'image = "pipe-bench/%s"\ntest = "true"\n' "$name" > "$work/app/.pipe.toml"
cat > "$work/deploy/docker-compose.yml" <<'YML'
version: "2.4"
services:
  app:
    image: ${PIPE_IMAGE}:${PIPE_TAG}
    init: true
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
YML
cat > "$work/pipeline.toml" <<TOML
[pipe]
workspace = "$work/work"

[ingress]
domain = "p2t.bench"
listen = "127.0.0.1:$front"
upstreams = "$n/upstreams"
nginx = ["/usr/sbin/nginx", "-c", "$n/nginx.conf", "-e", "$n/error.log"]

[forge.origin]
kind = "github"
api = "http://127.0.0.1:$(cat "$work/forge.port")"
token_env = "BENCH_FORGE_TOKEN"

[project.$name]
repo = "git://127.0.0.1:$git_port/app.git"
branches = ["dev"]
forge = "origin"
forge_repo = "acme/app"
webhook_secret_env = "BENCH_HOOK_SECRET"

[[project.$name.deploy]]
branches = ["dev"]
compose = { file = "$work/deploy/docker-compose.yml", project = "$name", services = ["app"] }
ingress = { app = 8080 }
health = { url = "http://app.p2t.bench/health", timeout = "60s" }
drain = "1s"
TOML
export PIPE_CONFIG="$work/pipeline.toml" PIPE_STATE="$work/state/state.toml"
export BENCH_FORGE_TOKEN=bench-forge-token BENCH_HOOK_SECRET="bench-hook-$$-$RANDOM"
"$pipe" generate nginx > "$n/pipe.conf"
nginx_conf "$n"

say "$samples webhook pushes, then $timer_samples pushes under a ${period} s timer"
result="$(python3 "$root/bench/push_to_traffic.py" "$pipe" "$work" "$front" "app.p2t.bench" "$serve_port" \
    "$name" "$BENCH_HOOK_SECRET" "$samples" "$timer_samples" "$period")"
say "$result"
refused="$(grep -c '"error": "' "$work/forge.jsonl" || true)"
statuses="$(wc -l < "$work/forge.jsonl")"

python3 - "$root/bench/RESULTS.md" "$result" "$statuses" "$refused" <<'PY'
import json, re, sys, datetime
path, d, statuses, refused = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
w, wmax, t = d["webhook"], d["webhook_max"], d["timer"]
timer_rows = ""
if t:
    timer_rows = f"""| {d['period_s']:.0f} s timer running `pipe run` ({d['timer_samples']} pushes at random moments) | {t['push_to_run_start_s']} s | {t['push_to_traffic_s']} s | {t['stages_s']} s | {round(t['push_to_traffic_s'] - t['stages_s'], 2)} s |
"""
ratio = f"{round(t['push_to_traffic_s'] / w['push_to_traffic_s'], 1)}x" if t else "-"
section = f"""<!-- push-to-traffic start -->
## Push to traffic

Written by `bench/push_to_traffic.sh` on {datetime.date.today()}: a commit pushed with `git push` to a real
`git daemon` (git://), built, tested and deployed through the ingress (nginx, zero-downtime switch,
1 s drain) until nginx answers with the new page, polled every 20 ms. Webhook: the forge's push
webhook (GitHub's, signed) posted to `pipe serve` right after the push; the run still polls the
remote. Timer: `pipe run` started every {d['period_s']:.0f} s as a systemd timer would. "stages" is the
sum of the build, test and deploy durations pipe recorded for that run, less the 1 s drain of the
old release after the switch; "overhead" is push to traffic minus the stages: git push, webhook,
run start, poll, and the time between stages. Medians of
{d['samples']} webhook pushes; {statuses} commit statuses reached the GitHub stand-in, {refused} refused.

| trigger | push → run start | push → traffic | stages | overhead |
|---|---|---|---|---|
| forge push webhook → `pipe serve` | {w['hook_to_run_start_ms']:.0f} ms (webhook sent → run start; max {wmax['hook_to_run_start_ms']:.0f} ms) | **{w['push_to_traffic_s']} s** | {w['stages_s']} s | **{w['overhead_s']} s** (max {wmax['overhead_s']} s) |
{timer_rows}
Push to traffic, timer / webhook: **{ratio}**.
<!-- push-to-traffic end -->
"""
text = open(path).read()
pattern = re.compile(r"<!-- push-to-traffic start -->.*?<!-- push-to-traffic end -->\n", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
say "wrote bench/RESULTS.md"
