#!/usr/bin/env bash
# The benchmark command: builds the release binary, makes its fixtures under bench/work,
# measures side by side in one run, and writes bench/RESULTS.md.
#
#   poll:  `pipe poll` with nothing changed over 20 bare repos x 50 branches, against a shell
#          loop of `git ls-remote file://...` over the same repos (medians, ratio, peak RSS).
#   state: a no-op `pipe poll` and `pipe status --json` with 1,000 / 10,000 / 50,000 refs recorded.
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
docker run --rm --init --name raw-bench-\$\$ pipe-bench/app:$short sh -c 'grep -q hello /app.txt'
docker tag pipe-bench/app:$short $reg:latest && docker push -q $reg:latest >/dev/null
docker tag pipe-bench/app:$short $reg:$short && docker push -q $reg:$short >/dev/null
SH
bash "$sd/pipe.sh" && bash "$sd/raw.sh"
hyperfine --warmup 2 --runs 15 --export-json "$work/stages.json" \
    -n "pipe build + test + push" "bash $sd/pipe.sh" \
    -n "raw git + docker commands" "bash $sd/raw.sh" >&2
stage_pipe=$(median_ms "$work/stages.json" 0)
stage_raw=$(median_ms "$work/stages.json" 1)
stage_diff=$(jq -r '((.results[0].median - .results[1].median) * 1000) | . * 10 | round / 10' "$work/stages.json")
stage_pct=$(jq -r '((.results[0].median / .results[1].median) - 1) * 100 | . * 10 | round / 10' "$work/stages.json")
docker image ls --quiet --filter "reference=pipe-bench/app" --filter "reference=$reg" | sort -u | xargs -r docker image rm -f >/dev/null 2>&1 || true

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
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

## Stages: build + test + push of an unchanged commit (legacy builder, local registry)

| command | median |
|---|---|
| \`pipe build\` + \`pipe test\` + \`pipe push\` | $stage_pipe ms |
| the same raw \`git\` + \`docker build/run/tag/push\` commands | $stage_raw ms |
| overhead | **$stage_diff ms ($stage_pct %)** (target ≤ 5 % or ≤ 150 ms) |

## State scale: one project with N branches, nothing changed

| refs | state file | no-op \`pipe poll\` | \`pipe status --json\` | poll peak RSS |
|---|---|---|---|---|
$scale_rows
MD
say "wrote $results"
cat "$results"
