#!/usr/bin/env bash
# What a docs-only commit costs in a monorepo of five images: the time of one `pipe run` (a
# tick: poll, build, test) after a commit, three ways, side by side in one hyperfine run:
#   one image, docs commit:   the same repository as one image (context `.`): every commit builds;
#   5 images, docs commit:    five images with `paths` (their contexts): nothing is built, each
#                             image gets the commit's tags;
#   5 images, one service:    a commit changing one service: one build and test, four retags.
# Each measured run is prepared by a new commit pushed to the bare repository (hyperfine's
# `--prepare`, not timed). Needs the Docker engine and hyperfine. Uses target/release/pipe
# (built when missing; PIPE_BIN overrides it) and writes its section of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="${PIPE_BIN:-$root/target/release/pipe}"
[ -x "$bin" ] || cargo build --quiet --release
say() { printf '[bench] %s\n' "$*" >&2; }
command -v hyperfine >/dev/null || { say "needs hyperfine (apt-get install hyperfine)"; exit 1; }
base_image="${PIPE_TEST_BASE_IMAGE:-pipe-busybox:latest}"
runs="${PIPE_BENCH_RUNS:-10}"
work="$(mktemp -d)"
prefix="pipe-bench-images-$$"
trap 'docker image ls --format "{{.Repository}}:{{.Tag}}" | grep "^$prefix" | xargs -r docker image rm -f >/dev/null 2>&1; rm -rf "$work"' EXIT

git -C "$work" init -q -b main src
for i in 1 2 3 4 5; do
    mkdir -p "$work/src/svc$i"
    # A RUN step unique to this benchmark: a build is a real build, not a cache hit of another's.
    printf 'FROM %s\nCOPY . /app\nRUN echo %s-svc%s > /app/built\n' "$base_image" "$prefix" "$i" >"$work/src/svc$i/Dockerfile"
    echo "service $i" >"$work/src/svc$i/main.txt"
done
printf 'FROM %s\nCOPY . /app\nRUN echo %s-one > /app/built\n' "$base_image" "$prefix" >"$work/src/Dockerfile"
mkdir -p "$work/src/docs"
echo docs >"$work/src/docs/README.md"
git -C "$work/src" add -A
git -C "$work/src" -c user.name=bench -c user.email=bench@pipe.invalid commit -qm bench
git clone -q --bare "$work/src" "$work/app.git"
git -C "$work/src" remote add origin "$work/app.git"

config() { # NAME BODY
    mkdir -p "$work/$1"
    printf '[pipe]\nworkspace = "%s"\n[project.app]\nrepo = "file://%s"\nbranches = ["main"]\n%s\n' \
        "$work/$1/work" "$work/app.git" "$2" >"$work/$1/pipeline.toml"
}
config one "image = \"$prefix-one\"
test = \"test -s /app/built\""
five=""
for i in 1 2 3 4 5; do
    five+="[project.app.images.svc$i]
image = \"$prefix-svc$i\"
context = \"svc$i\"
test = \"test -s /app/built\"
"
done
config five "$five"

run() { # NAME
    echo "env PIPE_CONFIG=$work/$1/pipeline.toml PIPE_STATE=$work/$1/state/state.toml $bin -q run"
}
commit() { # FILE
    echo "sh -c 'date +%s%N >> $work/src/$1 && git -C $work/src add -A && git -C $work/src -c user.name=bench -c user.email=bench@pipe.invalid commit -qm c && git -C $work/src push -q origin HEAD:main'"
}
# Everything built and tested once: the measured ticks start from a ref with tested builds.
$(run one) >/dev/null 2>&1
$(run five) >/dev/null 2>&1
hyperfine --runs "$runs" --export-json "$work/images.json" \
    -n "one image, docs commit" --prepare "$(commit docs/README.md)" "$(run one)" \
    -n "5 images, docs commit" --prepare "$(commit docs/README.md)" "$(run five)" \
    -n "5 images, one service" --prepare "$(commit svc3/main.txt)" "$(run five)" >&2
median_ms() { jq -r ".results[$1].median * 1000 | round" "$work/images.json"; }
ratio() { jq -r "(.results[$1].median / .results[$2].median) | . * 100 | round / 100" "$work/images.json"; }
o=$(median_ms 0); d=$(median_ms 1); s=$(median_ms 2)
# One more docs-only tick, and what it did: how many images its run built and retagged.
date +%s%N >>"$work/src/docs/README.md"
git -C "$work/src" add -A
git -C "$work/src" -c user.name=bench -c user.email=bench@pipe.invalid commit -qm c
git -C "$work/src" push -q origin HEAD:main
$(run five) >/dev/null 2>&1
read -r built retagged < <(python3 -c '
import sys, tomllib, glob
run = tomllib.load(open(glob.glob(sys.argv[1] + "/*.toml")[0], "rb"))["run"][-1]
print(sum(i["built"] for i in run["images"]), sum(not i["built"] for i in run["images"]))
' "$work/five/state/refs/app")

source bench/section.sh
write_section images "$(cat <<MD
<!-- images start -->
## Several images: a docs-only commit in a five-image monorepo (\`bench/images.sh\`)

$(date -u +%F), $(nproc) cores shared with other work (load average $(cut -d' ' -f1 /proc/loadavg)
at the end), $(docker version --format 'engine {{.Server.Version}}'), $(docker --version | cut -d, -f1),
\`${bin#"$root"/}\`.
Hyperfine medians of $runs runs of \`pipe run\`, each after a new commit pushed to a \`file://\`
remote (the commit and push are not timed). Each image is a base image, a \`COPY\` and a
\`RUN\` step; its test is \`test -s /app/built\`. Shortcut: tiny images, so a build here is a
few seconds, far less than a real one.

| repository | commit | median | against one image |
|---|---|---|---|
| one image (context \`.\`) | docs only | $o ms | 1.00 |
| five images (\`paths\` = contexts) | docs only | **$d ms** | $(ratio 1 0) |
| five images | one service | $s ms | $(ratio 2 0) |

A docs-only commit builds nothing: every image gets the commit's tags on its tested build
(the run of one more docs-only commit after the measured ones: $built images built, $retagged
retagged).
<!-- images end -->
MD
)"
say "wrote the images section of bench/RESULTS.md"
