#!/usr/bin/env bash
# Deploys under load through one real nginx: pipe's zero-downtime compose deploy against a plain
# `docker-compose up -d` of the same images, and writes the "Zero-downtime deploys" section of
# bench/RESULTS.md. Needs Docker, docker-compose, nginx, python3 and the base image
# (scripts/test-deps.sh). Usage: bench/zero_downtime.sh   (BENCH_BOOT=5 for a 5 s-boot app,
# BENCH_RATE requests/s, default 150; PIPE_BIN to use another binary).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
boot="${BENCH_BOOT:-0}"
rate="${BENCH_RATE:-150}"
work="$(mktemp -d /tmp/pipe-zdd-bench.XXXXXX)"
name="zdb$$"
front="$(free_port)"; plain_port="$(free_port)"
cleanup() {
    [ -f "$work/nginx/nginx.pid" ] && kill -TERM "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
    remove_deployment "$name" "${name}plain"
    rm -rf "$work"
}
trap cleanup EXIT

say "fixtures in $work (app boots in ${boot}s, load ${rate} requests/s)"
mkdir -p "$work/app" "$work/deploy" "$work/plain" "$work/nginx"
git -C "$work" init -q --bare app.git
git -C "$work/app" init -q -b dev
git -C "$work/app" remote add origin "file://$work/app.git"
commit() {
    mkdir -p "$work/app/www"
    printf 'FROM %s\nCOPY www /www\n' "$base" > "$work/app/Dockerfile"
    printf '%s\n' "$1" > "$work/app/www/index.html"
    echo ok > "$work/app/www/health"
    echo "$boot" > "$work/app/www/boot"
    printf 'image = "pipe-bench/%s"\ntest = "true"\n' "$name" > "$work/app/.pipe.toml"
    git -C "$work/app" add -A && git -C "$work/app" -c user.name=b -c user.email=b@b commit -qm "$1"
    git -C "$work/app" push -q origin dev
    git -C "$work/app" rev-parse --short=12 HEAD
}
app='    image: ${PIPE_IMAGE}:${PIPE_TAG}
    init: true
    command: ["sh", "-c", "sleep $$(cat /www/boot); exec httpd -f -p 8080 -h /www"]'
printf 'version: "2.4"\nservices:\n  app:\n%s\n' "$app" > "$work/deploy/docker-compose.yml"
printf 'version: "2.4"\nservices:\n  app:\n%s\n    ports: ["127.0.0.1:%s:8080"]\n' "$app" "$plain_port" > "$work/plain/docker-compose.yml"
n="$work/nginx"
cat > "$work/pipeline.toml" <<TOML
[pipe]
workspace = "$work/work"

[ingress]
domain = "zdd.bench"
listen = "127.0.0.1:$front"
upstreams = "$n/upstreams"
nginx = ["/usr/sbin/nginx", "-c", "$n/nginx.conf", "-e", "$n/error.log"]

[project.$name]
repo = "file://$work/app.git"
branches = ["dev"]

[[project.$name.deploy]]
branches = ["dev"]
compose = { file = "$work/deploy/docker-compose.yml", project = "$name", services = ["app"] }
ingress = { app = 8080 }
health = { url = "http://app.zdd.bench/health", timeout = "60s" }
drain = "2s"
TOML
export PIPE_CONFIG="$work/pipeline.toml" PIPE_STATE="$work/state/state.toml"
"$pipe" generate nginx > "$n/pipe.conf"
# The same nginx in front of the plain compose project's published port.
nginx_conf "$n" "    server { listen 127.0.0.1:$front; server_name plain.zdd.bench; location / { proxy_pass http://127.0.0.1:$plain_port; } }"

v1="$(commit 'release 1')"
say "first deploy of $v1 (pipe builds, tests and starts nginx)"
"$pipe" run -q >/dev/null
v2="$(commit 'release 2')"
"$pipe" poll -q >/dev/null && "$pipe" build -q "$name" dev >/dev/null && "$pipe" test -q "$name" dev >/dev/null
plain_up() { PIPE_IMAGE="pipe-bench/$name" PIPE_TAG="$1" docker-compose -p "${name}plain" -f "$work/plain/docker-compose.yml" up -d --no-build >/dev/null 2>&1; }
plain_up "$v1"
for i in $(seq 1 100); do curl -sf -H 'Host: plain.zdd.bench' "http://127.0.0.1:$front/" >/dev/null && break; sleep 0.2; done

now() { date +%s.%N; }
# measure HOST PROJECT SECONDS_AFTER COMMAND...: load through nginx while COMMAND runs, then a
# tail; PROJECT's remaining container is the new release, whose start time splits the figures.
measure() {
    local host="$1" project="$2" tail="$3"; shift 3
    rm -f "$work/stop"
    python3 "$root/bench/zdd_load.py" "$front" "$host" "$rate" 300 "$work/stop" > "$work/load.json" &
    local loader=$!
    local t0; t0="$(now)"; sleep 1
    local c0; c0="$(now)"
    "$@"
    local c1; c1="$(now)"
    sleep "$tail"; touch "$work/stop"; wait "$loader"
    local started=""
    if [ -n "$project" ]; then
        started="$(docker ps -q --filter "label=com.docker.compose.project=$project" | head -1 | xargs docker inspect -f '{{.State.StartedAt}}')"
    fi
    python3 - "$work/load.json" "$t0" "$c0" "$c1" "$started" "$boot" <<'PY'
import json, sys, datetime
d = json.load(open(sys.argv[1])); t0, c0, c1 = map(float, sys.argv[2:5]); boot = float(sys.argv[6])
t0 = d.pop("start_epoch")  # the loader's own clock start, not the shell's (python starts later)
new = d["first_seen"].get("release 2")
d["switch_s"] = round(new - (c0 - t0), 2) if new is not None else None
d["command_s"] = round(c1 - c0, 2)
if sys.argv[5] and new is not None:
    s = sys.argv[5].rstrip("Z"); s = s[:26] if "." in s else s  # microseconds for fromisoformat
    started = datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc).timestamp()
    d["start_s"] = round(started - c0, 2)                 # command start → new container started
    d["after_boot_s"] = round(t0 + new - started - boot, 2)  # app booted → first answer through nginx
print(json.dumps(d))
PY
}
say "idle: 5 s of load, no deploy"
idle="$(measure "app.zdd.bench" "" 4 true)"
say "pipe deploy (zero-downtime) of $v2 under load"
zdd="$(measure "app.zdd.bench" "$name" 3 "$pipe" deploy -q "$name" dev)"
say "plain docker-compose up -d of $v2 under load"
plain="$(measure "plain.zdd.bench" "${name}plain" "$((boot + 3))" plain_up "$v2")"
say "idle: $idle"; say "pipe: $zdd"; say "plain: $plain"

python3 - "$root/bench/RESULTS.md" "$boot" "$rate" "$idle" "$zdd" "$plain" <<'PY'
import json, re, sys, platform, datetime
path, boot, rate = sys.argv[1], sys.argv[2], sys.argv[3]
idle, zdd, plain = (json.loads(a) for a in sys.argv[4:7])
def row(what, d):
    g = lambda k: f"{d[k]} s" if d.get(k) is not None else "-"
    return f"| {what} | {d['total']} | {d['rate']} | **{d['failed']}** | {d['p50_ms']} ms | {d['p99_ms']} ms | {g('command_s')} | {g('switch_s')} | {g('start_s')} | {g('after_boot_s')} |"
section = f"""<!-- zero-downtime:{boot} start -->
## Zero-downtime deploys: app booting in {boot} s

Written by `bench/zero_downtime.sh` (`BENCH_BOOT={boot}`) on {datetime.date.today()} — {rate} requests/s through one host nginx
(`Connection: close`, a new connection per request); the same images, the same nginx. "to traffic" is
from the deploy command's start to the first answer of the new release; it splits into "to start"
(command start → the new container started: compose, and pipe's checks before it) and "after boot"
(the app's {boot} s boot over → first answer through nginx: health check, nginx -t, reload; for
plain compose, nginx noticing the new port). "command took" includes pipe's 2 s drain.

| deploy | requests | req/s | failed | p50 | p99 | command took | to traffic | to start | after boot |
|---|---|---|---|---|---|---|---|---|---|
{row("idle (no deploy)", idle)}
{row("`pipe deploy` (start beside, check, switch, drain 2 s)", zdd)}
{row("plain `docker-compose up -d`", plain)}

p99 during pipe's deploy / idle p99: **{round(zdd['p99_ms'] / idle['p99_ms'], 2)}x**. Answers seen: pipe {zdd['bodies']}; plain {plain['bodies']}.
<!-- zero-downtime:{boot} end -->
"""
text = open(path).read()
pattern = re.compile(rf"<!-- zero-downtime:{boot} start -->.*?<!-- zero-downtime:{boot} end -->\n", re.S)
text = pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
say "wrote bench/RESULTS.md"
