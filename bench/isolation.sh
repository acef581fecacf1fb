#!/usr/bin/env bash
# What isolating an untrusted build costs: `pipe build` of an unchanged commit (every step a
# cache hit, so the difference is pipe's own work) with `build_network` "default" (no network
# made), "none" (`--network none`) and "isolated" (a bridge of its own plus its iptables rules,
# created before and removed after the build), measured side by side in one hyperfine run.
# Needs root, iptables, the Docker engine (legacy builder) and hyperfine. Uses
# target/release/pipe (built when missing; PIPE_BIN overrides it) and writes its section of
# bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="${PIPE_BIN:-$root/target/release/pipe}"
[ -x "$bin" ] || cargo build --quiet --release
say() { printf '[bench] %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] && command -v iptables >/dev/null || { say "needs root and iptables"; exit 1; }
command -v hyperfine >/dev/null || { say "needs hyperfine (apt-get install hyperfine)"; exit 1; }
base_image="${PIPE_TEST_BASE_IMAGE:-pipe-busybox:latest}"
work="$(mktemp -d)"
image="pipe-bench-isolation-$$"
trap 'docker image ls -q "$image" | sort -u | xargs -r docker image rm -f >/dev/null 2>&1; rm -rf "$work"' EXIT

git -C "$work" init -q -b main src
printf 'FROM %s\nCOPY app.txt /app.txt\nRUN echo step\n' "$base_image" >"$work/src/Dockerfile"
echo hello >"$work/src/app.txt"
printf 'image = "%s"\n' "$image" >"$work/src/.pipe.toml"
git -C "$work/src" add -A
git -C "$work/src" -c user.name=bench -c user.email=bench@pipe.invalid commit -qm bench
git clone -q --bare "$work/src" "$work/app.git"
for policy in default none isolated; do
    mkdir -p "$work/$policy"
    cat >"$work/$policy/pipeline.toml" <<TOML
[pipe]
workspace = "$work/$policy/work"
[project.app]
repo = "file://$work/app.git"
branches = ["main"]
build_network = "$policy"
TOML
done
run() { echo "env PIPE_CONFIG=$work/$1/pipeline.toml PIPE_STATE=$work/$1/state/state.toml $bin -q build app"; }
for policy in default none isolated; do $(run "$policy") >/dev/null; done
hyperfine --warmup 2 --runs 15 --export-json "$work/isolation.json" \
    -n default "$(run default)" -n none "$(run none)" -n isolated "$(run isolated)" >&2
median_ms() { jq -r ".results[$1].median * 1000 | . * 10 | round / 10" "$work/isolation.json"; }
d=$(median_ms 0); n=$(median_ms 1); i=$(median_ms 2)
extra=$(jq -r '((.results[2].median - .results[0].median) * 1000) | . * 10 | round / 10' "$work/isolation.json")
ratio=$(jq -r '(.results[2].median / .results[0].median) | . * 100 | round / 100' "$work/isolation.json")
left=$(iptables -w -S | grep -c 'pipe isolation' || true)

section=$(cat <<MD
<!-- isolation start -->
## Isolated builds: \`pipe build\` of an unchanged commit by \`build_network\`

\`bench/isolation.sh\`, $(date -u +%F), $(nproc) cores shared with other work (load average
$(cut -d' ' -f1 /proc/loadavg) at the end), $(docker version --format 'Docker {{.Server.Version}}'), $(iptables -V).
Hyperfine medians of 15 runs, one run; every build step a cache hit.

| \`build_network\` | median |
|---|---|
| \`default\` (the engine's bridge, nothing made) | $d ms |
| \`none\` | $n ms |
| \`isolated\` (bridge + iptables rules made and removed) | $i ms |
| cost of isolating | **$extra ms** (ratio $ratio) |

\`pipe isolation\` rules left after the runs: $left.
<!-- isolation end -->
MD
)
results="$root/bench/RESULTS.md"
if grep -q '<!-- isolation start -->' "$results"; then
    python3 - "$results" "$section" <<'PY'
import sys, re
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"<!-- isolation start -->.*?<!-- isolation end -->", lambda _: section, text, flags=re.S)
open(path, "w").write(text)
PY
else
    printf '\n%s\n' "$section" >>"$results"
fi
say "wrote the isolation section of bench/RESULTS.md"
