#!/usr/bin/env bash
# The benchmark command: builds the release binary, makes its fixtures under bench/work,
# measures side by side in one run, and writes bench/RESULTS.md.
#
#   poll:  `pipe poll` with nothing changed over 20 bare repos x 50 branches, against a shell
#          loop of `git ls-remote file://...` over the same repos (medians, ratio, peak RSS).
#   protocols: `pipe poll` against a `git ls-remote` loop over file://, git:// (git-daemon),
#          http:// and https:// (nginx + fcgiwrap + git http-backend, self-signed TLS) and ssh://
#          (OpenSSH sshd), 20 repos x 50 branches on one host, plus HTTPS with 200 repos: wall,
#          CPU and peak RSS, every server started by bench/protocols.sh (which says how).
#   state: a no-op `pipe poll` and `pipe status --json` with 1,000 / 10,000 / 50,000 refs recorded.
#   fuzz:  the `prop_*` property tests (config, state, tags, request parser) with PIPE_FUZZ_CASES
#          cases each (default 20,000), then generated requests against a running `pipe serve`,
#          each bounded by PIPE_FUZZ_SECONDS (default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
work="$root/bench/work"
results="$root/bench/RESULTS.md"

say() { printf '[bench] %s\n' "$*" >&2; }
for tool in hyperfine /usr/bin/time git jq; do
    if ! command -v "$tool" >/dev/null; then
        pkg="$tool"; [ "$tool" = /usr/bin/time ] && pkg=time
        say "installing $pkg"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null
    fi
done

say "building the release binary"
cargo build --quiet --release
pipe="$root/target/release/pipe"

rm -rf "$work"
mkdir -p "$work"
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@pipe.invalid GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@pipe.invalid

# make_repo DIR BRANCHES: a bare repo with BRANCHES branches, each on its own commit.
make_repo() {
    local dir="$1" n="$2"
    git init --quiet --bare "$dir"
    local tree
    tree=$(git -C "$dir" hash-object -t tree -w --stdin </dev/null)
    local base
    base=$(git -C "$dir" commit-tree "$tree" -m base)
    {
        for i in $(seq 1 "$n"); do
            echo "create refs/heads/branch-$i $base"
        done
        echo "create refs/heads/main $base"
    } | git -C "$dir" update-ref --stdin
    git -C "$dir" pack-refs --all
}

median_ms() { jq -r ".results[$2].median * 1000 | . * 10 | round / 10" "$1"; }
peak_rss_kb() {
    local f
    f=$(mktemp)
    for _ in 1 2 3 4 5; do
        /usr/bin/time -a -o "$f" -f '%M' "$@" >/dev/null 2>&1
    done
    sort -n "$f" | sed -n 3p
    rm -f "$f"
}

say "fixture: 20 bare repos x 50 branches"
mkdir -p "$work/poll/repos"
config="$work/poll/pipeline.toml"
: >"$config"
urls=()
for r in $(seq 1 20); do
    make_repo "$work/poll/repos/r$r.git" 49
    urls+=("file://$work/poll/repos/r$r.git")
    printf '[project.r%s]\nrepo = "file://%s"\nbranches = ["**"]\n\n' "$r" "$work/poll/repos/r$r.git" >>"$config"
done
state="$work/poll/state.toml"
PIPE_CONFIG="$config" PIPE_STATE="$state" "$pipe" poll -q >/dev/null
printf '%s\n' "${urls[@]}" >"$work/poll/urls"
loop="while read -r u; do git ls-remote \"\$u\" >/dev/null; done <$work/poll/urls"

say "timing no-op pipe poll against the git ls-remote loop"
hyperfine --shell=none --warmup 5 --runs 40 --export-json "$work/poll.json" \
    -n "pipe poll (no change)" "env PIPE_CONFIG=$config PIPE_STATE=$state $pipe poll -q" \
    -n "git ls-remote loop" "bash -c '$loop'" >&2
poll_ms=$(median_ms "$work/poll.json" 0)
loop_ms=$(median_ms "$work/poll.json" 1)
ratio=$(jq -r '(.results[0].median / .results[1].median) * 1000 | round / 1000' "$work/poll.json")
poll_rss=$(PIPE_CONFIG="$config" PIPE_STATE="$state" peak_rss_kb "$pipe" poll -q)

say "no-op tick: pipe run with nothing new over the same 20 projects, against pipe poll"
tick_state="$work/poll/tick-state.toml"
sed 's/, pending = true//' "$state" >"$tick_state"
hyperfine --shell=none --warmup 5 --runs 40 --export-json "$work/tick.json" \
    -n "pipe run (nothing new)" "env PIPE_CONFIG=$config PIPE_STATE=$tick_state $pipe run -q" \
    -n "pipe poll (nothing new)" "env PIPE_CONFIG=$config PIPE_STATE=$tick_state $pipe poll -q" >&2
tick_ms=$(median_ms "$work/tick.json" 0)
tick_poll_ms=$(median_ms "$work/tick.json" 1)
tick_diff=$(jq -r '((.results[0].median - .results[1].median) * 1000) | . * 10 | round / 10' "$work/tick.json")
tick_rss=$(PIPE_CONFIG="$config" PIPE_STATE="$tick_state" peak_rss_kb "$pipe" run -q)

say "poll over every protocol: bench/protocols.sh"
bash bench/protocols.sh "$pipe" >/dev/null

say "state scale: 1,000 / 10,000 / 50,000 refs"
scale_rows=""
for n in 1000 10000 50000; do
    d="$work/scale-$n"
    mkdir -p "$d"
    make_repo "$d/repo.git" "$n"
    printf '[project.big]\nrepo = "file://%s"\nbranches = ["**"]\n' "$d/repo.git" >"$d/pipeline.toml"
    PIPE_CONFIG="$d/pipeline.toml" PIPE_STATE="$d/state.toml" "$pipe" poll -q >/dev/null
    size_kb=$(( $(stat -c %s "$d/state.toml") / 1024 ))
    hyperfine --shell=none --warmup 2 --runs 15 --export-json "$d/t.json" \
        -n poll "env PIPE_CONFIG=$d/pipeline.toml PIPE_STATE=$d/state.toml $pipe poll -q" \
        -n status "env PIPE_CONFIG=$d/pipeline.toml PIPE_STATE=$d/state.toml $pipe status --json" >&2
    rss=$(PIPE_CONFIG="$d/pipeline.toml" PIPE_STATE="$d/state.toml" peak_rss_kb "$pipe" poll -q)
    scale_rows+="| $n | $size_kb KB | $(median_ms "$d/t.json" 0) ms | $(median_ms "$d/t.json" 1) ms | $(awk "BEGIN {printf \"%.1f\", $rss / 1024}") MB |"$'\n'
done

say "stages: pipe build+test+push against the same raw docker and git commands"
command -v docker-registry >/dev/null && docker info >/dev/null 2>&1 || { say "needs the Docker engine and docker-registry: run scripts/test-deps.sh"; exit 1; }
base_image="${PIPE_TEST_BASE_IMAGE:-pipe-busybox:latest}"
sd="$work/stages"
mkdir -p "$sd/src" "$sd/reg"
reg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$sd/reg/data" "$reg_port" >"$sd/reg/config.yml"
docker-registry serve "$sd/reg/config.yml" >/dev/null 2>&1 &
reg_pid=$!
trap 'kill $reg_pid 2>/dev/null || true' EXIT
git -C "$sd/src" init -q -b main
printf 'FROM %s\nCOPY app.txt /app.txt\nRUN echo step\nCMD ["cat", "/app.txt"]\n' "$base_image" >"$sd/src/Dockerfile"
echo hello >"$sd/src/app.txt"
printf 'image = "pipe-bench/app"\ntest = "grep -q hello /app.txt"\n' >"$sd/src/.pipe.toml"
git -C "$sd/src" add -A && git -C "$sd/src" commit -qm bench
git clone -q --bare "$sd/src" "$sd/app.git"
sha=$(git -C "$sd/src" rev-parse HEAD); short=${sha:0:12}
created=$(date -u -d "@$(git -C "$sd/src" log -1 --format=%ct)" +%FT%TZ)
cat >"$sd/pipeline.toml" <<TOML
[pipe]
workspace = "$sd/work"
[registry.local]
url = "127.0.0.1:$reg_port"
[project.app]
repo = "file://$sd/app.git"
branches = ["main"]
[[project.app.deploy]]
branches = ["main"]
push = ["local"]
TOML
git clone -q "$sd/app.git" "$sd/raw"
for _ in $(seq 1 50); do curl -s "http://127.0.0.1:$reg_port/v2/" >/dev/null && break; sleep 0.1; done
penv="env PIPE_CONFIG=$sd/pipeline.toml PIPE_STATE=$sd/state/state.toml"
cat >"$sd/pipe.sh" <<SH
set -e
$penv $pipe -q build app
$penv $pipe -q test app
$penv $pipe -q push app >/dev/null
SH
reg="127.0.0.1:$reg_port/pipe-bench/app"
cat >"$sd/raw.sh" <<SH
set -e
cd $sd/raw
git fetch -q --no-tags origin +refs/heads/main:refs/remotes/origin/main
git checkout -q -f $sha
git clean -q -ffdx
DOCKER_BUILDKIT=0 docker build -q --file Dockerfile --tag pipe-bench/app:latest --tag pipe-bench/app:$short \\
  --label org.opencontainers.image.revision=$sha --label org.opencontainers.image.source=file://$sd/app.git \\
  --label org.opencontainers.image.created=$created --label pipe.project=app --label pipe.ref=refs/heads/main . >/dev/null
docker run --rm --init --name raw-bench-\$\$ CONFINEMENT pipe-bench/app:$short sh -c 'grep -q hello /app.txt'
docker tag pipe-bench/app:$short $reg:latest && docker push -q $reg:latest >/dev/null
docker tag pipe-bench/app:$short $reg:$short && docker push -q $reg:$short >/dev/null
SH
# The same raw commands with the test container confined as pipe confines it, and without.
confined="--cap-drop ALL --security-opt no-new-privileges --memory 2g --memory-swap 2g --pids-limit 1024 --cpus 2 --network none"
sed "s|CONFINEMENT|$confined|" "$sd/raw.sh" >"$sd/raw-confined.sh"
sed -i "s|CONFINEMENT ||" "$sd/raw.sh"
bash "$sd/pipe.sh" && bash "$sd/raw.sh" && bash "$sd/raw-confined.sh"
hyperfine --warmup 2 --runs 15 --export-json "$work/stages.json" \
    -n "pipe build + test + push" "bash $sd/pipe.sh" \
    -n "raw git + docker commands, test container confined" "bash $sd/raw-confined.sh" \
    -n "raw git + docker commands, unconfined" "bash $sd/raw.sh" >&2
stage_pipe=$(median_ms "$work/stages.json" 0)
stage_raw=$(median_ms "$work/stages.json" 1)
stage_diff=$(jq -r '((.results[0].median - .results[1].median) * 1000) | . * 10 | round / 10' "$work/stages.json")
stage_pct=$(jq -r '((.results[0].median / .results[1].median) - 1) * 100 | . * 10 | round / 10' "$work/stages.json")
stage_unconfined=$(median_ms "$work/stages.json" 2)
confine_pct=$(jq -r '((.results[1].median / .results[2].median) - 1) * 100 | . * 10 | round / 10' "$work/stages.json")
docker image ls --quiet --filter "reference=pipe-bench/app" --filter "reference=$reg" | sort -u | xargs -r docker image rm -f >/dev/null 2>&1 || true

say "serve: pipe serve against adnanh/webhook (Debian's webhook package), same machine, same run"
for tool in webhook wrk; do
    command -v "$tool" >/dev/null || { say "installing $tool"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$tool" >/dev/null; }
done
sv="$work/serve"
mkdir -p "$sv"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
token="bench-token-4242"
for who in pipe webhook; do
    printf '#!/bin/sh\necho ran >> %s\n' "$sv/$who.out" >"$sv/$who-hook.sh"
    chmod +x "$sv/$who-hook.sh"
    : >"$sv/$who.out"
done
printf '[serve.hooks.deploy]\ntoken_env = "BENCH_TOKEN"\ncommand = { argv = ["%s"] }\n\n[serve.hooks.signed]\nsecret_env = "BENCH_TOKEN"\ncommand = { argv = ["%s"] }\n' "$sv/pipe-hook.sh" "$sv/pipe-hook.sh" >"$sv/pipeline.toml"
rule="{\"match\": {\"type\": \"value\", \"value\": \"$token\", \"parameter\": {\"source\": \"header\", \"name\": \"X-Token\"}}}"
cat >"$sv/hooks.json" <<JSON
[
  {"id": "deploy", "execute-command": "$sv/webhook-hook.sh", "trigger-rule": $rule},
  {"id": "deploy-sync", "execute-command": "$sv/webhook-hook.sh", "include-command-output-in-response": true, "trigger-rule": $rule}
]
JSON
pipe_port=$(free_port)
wh_port=$(free_port)
BENCH_TOKEN="$token" PIPE_CONFIG="$sv/pipeline.toml" PIPE_STATE="$sv/state/state.toml" \
    "$pipe" serve --listen "127.0.0.1:$pipe_port" 2>"$sv/pipe.log" &
pipe_pid=$!
webhook -hooks "$sv/hooks.json" -ip 127.0.0.1 -port "$wh_port" >"$sv/webhook.log" 2>&1 &
wh_pid=$!
trap 'kill $reg_pid $pipe_pid $wh_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
    curl -s "http://127.0.0.1:$pipe_port/healthz" >/dev/null && curl -s -o /dev/null "http://127.0.0.1:$wh_port/" && break
    sleep 0.1
done
sleep 1
rss_kb() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
mb() { awk "BEGIN {printf \"%.1f\", $1 / 1024}"; }
pipe_idle=$(rss_kb $pipe_pid VmRSS)
wh_idle=$(rss_kb $wh_pid VmRSS)
purl="http://127.0.0.1:$pipe_port"
wurl="http://127.0.0.1:$wh_port/hooks"
pipe_202=$(python3 bench/serve_bench.py latency "$purl/hooks/deploy" Authorization "Bearer $token" 200)
wh_202=$(python3 bench/serve_bench.py latency "$wurl/deploy" X-Token "$token" 200)
sleep 2
pipe_done=$(python3 bench/serve_bench.py complete-pipe "$purl" deploy "$token" 100)
wh_done=$(python3 bench/serve_bench.py complete-sync "$wurl/deploy-sync" X-Token "$token" 100)
sleep 2
printf 'wrk.method = "POST"\nwrk.headers["Authorization"] = "Bearer %s"\n' "$token" >"$sv/pipe.lua"
printf 'wrk.method = "POST"\nwrk.headers["X-Token"] = "%s"\n' "$token" >"$sv/webhook.lua"
count() { grep -c -E "$1" "$2" || true; }
p_acc0=$(count 'POST /hooks/deploy 202' "$sv/pipe.log"); p_end0=$(count 'hook=deploy (succeeded|failed|interrupted|cancelled)|superseded by' "$sv/pipe.log")
w_ran0=$(wc -l <"$sv/webhook.out")
wrk -t1 -c2 -d10s -s "$sv/pipe.lua" "$purl/hooks/deploy" >"$sv/wrk-pipe.txt" 2>&1
wrk -t1 -c2 -d10s -s "$sv/webhook.lua" "$wurl/deploy" >"$sv/wrk-webhook.txt" 2>&1
sleep 5
wrk_rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
wrk_total() { awk '/requests in/ {print $1}' "$1"; }
wrk_bad() { awk '/Non-2xx/ {print $5}' "$1"; }
p_rps=$(wrk_rps "$sv/wrk-pipe.txt"); w_rps=$(wrk_rps "$sv/wrk-webhook.txt")
p_total=$(wrk_total "$sv/wrk-pipe.txt"); w_total=$(wrk_total "$sv/wrk-webhook.txt")
p_acc=$(( $(count 'POST /hooks/deploy 202' "$sv/pipe.log") - p_acc0 ))
p_end=$(( $(count 'hook=deploy (succeeded|failed|interrupted|cancelled)|superseded by' "$sv/pipe.log") - p_end0 ))
p_lost=$(( p_acc - p_end ))
w_bad=$(wrk_bad "$sv/wrk-webhook.txt"); w_bad=${w_bad:-0}
w_acc=$(( w_total - w_bad ))
w_ran=$(( $(wc -l <"$sv/webhook.out") - w_ran0 ))
w_lost=$(( w_acc - w_ran ))
# 300 slowloris connections + 255 x 1 MiB unauthenticated bodies, 100 legitimate requests beside.
read -r pipe_flood_ok pipe_flood_max < <(python3 bench/serve_bench.py flood "$purl/hooks/signed" signed "$token" 100)
pipe_flood_rss=$(rss_kb $pipe_pid VmHWM)
read -r wh_flood_ok wh_flood_max < <(python3 bench/serve_bench.py flood "$wurl/deploy" token "$token" 100)
wh_flood_rss=$(rss_kb $wh_pid VmHWM)
head -c 100000000 /dev/zero >"$sv/big"
attack() {
    local pids=()
    for _ in 1 2; do
        curl -s -o /dev/null -m 60 --data-binary @"$sv/big" "$1" &
        pids+=($!)
    done
    wait "${pids[@]}" || true
}
attack "$purl/hooks/deploy"
attack "$wurl/deploy"
pipe_peak=$(rss_kb $pipe_pid VmHWM); wh_peak=$(rss_kb $wh_pid VmHWM)
pipe_after=$(rss_kb $pipe_pid VmRSS); wh_after=$(rss_kb $wh_pid VmRSS)
kill $pipe_pid $wh_pid 2>/dev/null || true
rm -f "$sv/big"

say "fuzzing: property tests, then generated requests against a running pipe serve"
fuzz_cases="${PIPE_FUZZ_CASES:-20000}"
serve_cases=$((fuzz_cases / 4))
fuzz() { # name cases command...: runs bounded, prints "result|seconds|tests"
    local name="$1" cases="$2" started rc=0
    shift 2
    started=$(date +%s.%N)
    PROPTEST_CASES="$cases" timeout "${PIPE_FUZZ_SECONDS:-600}" "$@" >"$work/fuzz-$name.log" 2>&1 || rc=$?
    local took tests
    took=$(awk "BEGIN {print $(date +%s.%N) - $started}")
    tests=$(grep -o '[0-9]* passed' "$work/fuzz-$name.log" | awk '{s+=$1} END {print s+0}' || true)
    if [ "$rc" -eq 0 ]; then echo "no failure|$(printf %.0f "$took")|$tests"
    elif [ "$rc" -eq 124 ]; then echo "stopped at the time bound, no failure before it|${PIPE_FUZZ_SECONDS:-600}|$tests"
    else echo "**FAILED** (bench/work/fuzz-$name.log)|$(printf %.0f "$took")|$tests"; fi
}
IFS='|' read -r fuzz_lib fuzz_lib_s fuzz_lib_n < <(fuzz lib "$fuzz_cases" cargo test --release --lib prop_)
IFS='|' read -r fuzz_srv fuzz_srv_s _ < <(fuzz serve "$serve_cases" cargo test --release --test it serve::generated_requests)

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
# Sections other scripts write (bench/zero_downtime.sh, bench/page.sh, bench/push_to_traffic.sh,
# bench/discover.sh, bench/previews.sh, bench/isolation.sh, bench/serve_durable.sh) sit between
# `<!-- NAME start -->` and `<!-- NAME end -->` markers: kept as they are.
kept="$(python3 -c 'import re,sys; t=open(sys.argv[1]).read() if __import__("os").path.exists(sys.argv[1]) else ""; print("\n".join(m.group(0) for m in re.finditer(r"<!-- ([\w:-]+) start -->.*?<!-- \1 end -->", t, re.S)))' "$results")"
cat >"$results" <<MD
# Benchmark results

Written by \`bench/run.sh\` on $(date -u +%Y-%m-%d) — $(nproc) cores, $cpu, $(free -g | awk '/Mem:/ {print $2}') GB,
$(uname -sr), $(git --version), pipe $("$pipe" --version | cut -d' ' -f2) (release build).
Each row was measured in the same run with hyperfine (medians); peak RSS is the median of 5 runs of \`/usr/bin/time -f %M\`.

## No-op poll: 20 bare repos x 50 branches (file://)

| command | median | peak RSS |
|---|---|---|
| \`pipe poll\` (nothing changed) | $poll_ms ms | $(awk "BEGIN {printf \"%.1f\", $poll_rss / 1024}") MB |
| \`git ls-remote\` shell loop over the same repos | $loop_ms ms | |
| ratio pipe / loop | **$ratio** (target ≤ 0.25) | |

## No-op tick: \`pipe run\` with nothing new, 20 projects

| command | median | peak RSS |
|---|---|---|
| \`pipe run\` | $tick_ms ms | $(awk "BEGIN {printf \"%.1f\", $tick_rss / 1024}") MB (target < 30 MB) |
| \`pipe poll\` alone | $tick_poll_ms ms | |
| the tick's extra cost | **$tick_diff ms** | |

$(cat "$work/proto/table.md")

## Stages: build + test + push of an unchanged commit (legacy builder, local registry)

| command | median |
|---|---|
| \`pipe build\` + \`pipe test\` + \`pipe push\` | $stage_pipe ms |
| the same raw \`git\` + \`docker build/run/tag/push\` commands (test container confined) | $stage_raw ms |
| overhead | **$stage_diff ms ($stage_pct %)** (target ≤ 5 % or ≤ 150 ms) |
| the raw commands with an unconfined test container | $stage_unconfined ms |
| cost of the confinement | **$confine_pct %** (target ≤ 5 %) |

## \`pipe serve\` against adnanh/webhook $(webhook -version | awk '{print $3}') (same hook: a token check, a script that appends a line)

| | \`pipe serve\` | adnanh/webhook |
|---|---|---|
| idle RSS | $(mb "$pipe_idle") MB | $(mb "$wh_idle") MB |
| median time to the answer (202 / 200), 200 sequential requests | $pipe_202 ms | $wh_202 ms |
| median time from request to the script having finished, 100 requests | $pipe_done ms (\`POST …?wait=30\`) | $wh_done ms (sync mode) |
| \`wrk -t1 -c2 -d10s\` throughput | $p_rps req/s ($p_total requests) | $w_rps req/s ($w_total requests) |
| requests accepted during wrk | $p_acc (202) | $w_acc (200) |
| accepted requests never run nor accounted for | **$p_lost** (each 202 ended as a run or a logged supersede) | **$w_lost** (200 answered, script never ran) |
| 300 slowloris + 255 x 1 MiB unauthenticated bodies: legitimate requests answered within 1 s (100 sequential; pipe: signed) | **${pipe_flood_ok} %** (slowest ${pipe_flood_max} ms) | **${wh_flood_ok} %** (slowest ${wh_flood_max} ms) |
| peak RSS (VmHWM) after that load | $(mb "$pipe_flood_rss") MB (target < 32 MB) | $(mb "$wh_flood_rss") MB |
| peak RSS (VmHWM) after two unauthenticated 100 MB POSTs | $(mb "$pipe_peak") MB (RSS now $(mb "$pipe_after") MB) | $(mb "$wh_peak") MB (RSS now $(mb "$wh_after") MB) |

## Fuzzing (proptest, bounded by PIPE_FUZZ_SECONDS)

| target | cases | time | outcome |
|---|---|---|---|
| $fuzz_lib_n \`prop_*\` properties: config parsing (fragments and arbitrary text), state parsing and render/parse round trip, tag sanitising (valid, deterministic, distinct, no branch can take another's tag), the HTTP request parser (arbitrary bytes, well-formed requests) | $fuzz_cases each | $fuzz_lib_s s | $fuzz_lib |
| generated requests (noise and near-valid: methods, paths, auth headers, lengths, bodies) against a running \`pipe serve\`: only expected statuses, no hook run, still serving, no token logged | $serve_cases | $fuzz_srv_s s | $fuzz_srv |

Found and fixed by these properties: a branch named exactly like another branch's sanitised tag
(\`feat-a-<8 hex>\`) shared it; a ref name such as \`'\\\` was written as a state key the parser
refused.

## State scale: one project with N branches, nothing changed

| refs | state file | no-op \`pipe poll\` | \`pipe status --json\` | poll peak RSS |
|---|---|---|---|---|
$scale_rows
MD
if [ -n "$kept" ]; then printf '\n%s\n' "$kept" >>"$results"; fi
say "wrote $results"
cat "$results"
