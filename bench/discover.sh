#!/usr/bin/env bash
# Organization discovery at scale: a no-op `pipe run` over an organization of 500 repositories,
# each carrying a `.pipe.toml`, listed by the GitHub stand-in (tests/it/support/forge_api.py,
# 100 repositories a page, `ETag`s, answering `304` to an unchanged page) and polled as local
# bare repositories (file://). Measured side by side in one run: the tick with discovery
# against the same 500 projects written out in the pipeline file (same forge, same repos, same
# state), hyperfine medians, and the peak RSS of each (median of 5 runs of /usr/bin/time).
# Prints a Markdown section for bench/RESULTS.md. Uses target/release/pipe (built when
# missing); PIPE_BIN overrides it, PIPE_BENCH_REPOS the organization's size.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="${PIPE_BIN:-$root/target/release/pipe}"
[ -x "$bin" ] || cargo build --quiet --release
n="${PIPE_BENCH_REPOS:-500}"
work="$(mktemp -d)"
trap 'kill "${api:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
say() { printf '[bench] %s\n' "$*" >&2; }
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@pipe.invalid GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@pipe.invalid

say "fixture: $n bare repositories with a .pipe.toml on main"
mkdir -p "$work/repos"
git init --quiet --bare "$work/repos/r1.git"
blob=$(printf 'test = "true"\n' | git -C "$work/repos/r1.git" hash-object -w --stdin)
tree=$(printf '100644 blob %s\t.pipe.toml\n' "$blob" | git -C "$work/repos/r1.git" mktree)
commit=$(git -C "$work/repos/r1.git" commit-tree "$tree" -m first)
git -C "$work/repos/r1.git" update-ref refs/heads/main "$commit"
for i in $(seq 2 "$n"); do cp -r "$work/repos/r1.git" "$work/repos/r$i.git"; done

say "the GitHub stand-in listing them"
record="$work/api.jsonl"
python3 - "$n" "$record.org.json" <<'PY'
import json, sys
n = int(sys.argv[1])
repos = [{"name": f"r{i}", "clone_url": f"http://127.0.0.1/acme/r{i}.git", "default_branch": "main",
          "pushed_at": "2026-11-01T00:00:00Z"} for i in range(1, n + 1)]
json.dump({"org": "acme", "repos": repos}, open(sys.argv[2], "w"))
PY
python3 tests/it/support/forge_api.py github bench-token "$record" "$work/api.port" &
api=$!
for _ in $(seq 100); do [ -s "$work/api.port" ] && break; sleep 0.05; done
port=$(cat "$work/api.port")

forge="[forge.acme]
kind = \"github\"
api = \"http://127.0.0.1:$port\"
token_env = \"BENCH_TOKEN\"
"
mkdir -p "$work/discovered" "$work/written"
cat >"$work/discovered/pipeline.toml" <<EOF
[pipe]
workspace = "$work/ws"

$forge
[forge.acme.discover]
org = "acme"

[forge.acme.discover.project]
repo = "file://$work/repos/{repo}.git"
branches = ["main"]
image = "bench/{name}"
EOF
{
    printf '[pipe]\nworkspace = "%s"\n\n%s\n' "$work/ws" "$forge"
    for i in $(seq 1 "$n"); do
        printf '[project.r%s]\nrepo = "file://%s/repos/r%s.git"\nbranches = ["main"]\nimage = "bench/r%s"\nforge = "acme"\nforge_repo = "acme/r%s"\n\n' \
            "$i" "$work" "$i" "$i" "$i"
    done
} >"$work/written/pipeline.toml"

export BENCH_TOKEN=bench-token
say "first ticks: discovery lists and probes $n repositories; both states then settled (nothing pending)"
for kind in discovered written; do
    PIPE_CONFIG="$work/$kind/pipeline.toml" PIPE_STATE="$work/$kind/state.toml" "$bin" -q poll >/dev/null
    sed -i 's/, pending = true//' "$work/$kind/state.toml"
done
first_listing=$(grep -c '"GET"' "$record")
projects=$(grep -c '^"\?r[0-9]*"\? = ' "$work/discovered/discover/acme.toml" || true)
say "discovery made $(PIPE_CONFIG="$work/discovered/pipeline.toml" PIPE_STATE="$work/discovered/state.toml" "$bin" status --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["discovery"][0]["projects"]))') projects from $projects listed repositories in $first_listing listing request(s)"

run() { echo "PIPE_CONFIG=$work/$1/pipeline.toml PIPE_STATE=$work/$1/state.toml $bin -q run"; }
: >"$record"
hyperfine --style none --warmup 3 --runs 30 --export-json "$work/h.json" \
    -n discovered "$(run discovered)" -n written "$(run written)" >&2
requests=$(grep -c '"GET"' "$record")
not_modified=$(grep -c '"status": 304' "$record")
runs=$((30 + 3))
median() { python3 -c "import json; r=json.load(open('$work/h.json'))['results']; print(round([x for x in r if x['command']=='$1'][0]['median']*1000, 1))"; }
d=$(median discovered)
w=$(median written)
rss() {
    local f
    f=$(mktemp)
    for _ in 1 2 3 4 5; do
        PIPE_CONFIG="$work/$1/pipeline.toml" PIPE_STATE="$work/$1/state.toml" /usr/bin/time -a -o "$f" -f '%M' "$bin" -q run >/dev/null 2>&1
    done
    sort -n "$f" | sed -n 3p
    rm -f "$f"
}
rd=$(rss discovered)
rw=$(rss written)

cat <<EOF
## Organization discovery: a no-op tick over $n repositories (\`bench/discover.sh\`)

\`pipe run\` with nothing changed, release build, 2 shared cores (Debian 12), measured in one
run: the organization listed by the GitHub stand-in (\`tests/it/support/forge_api.py\`, 100
repositories a page, every page answered \`304 Not Modified\` to its \`ETag\`) and its $n
repositories polled as local bare repositories, against the same $n projects written out in
the pipeline file (same remotes, same settled state). hyperfine medians of 30 runs after 3
warm-ups; peak RSS the median of 5 runs of \`/usr/bin/time -f %M\`.

| tick | median | peak RSS |
|---|---|---|
| with discovery ($n discovered projects) | $d ms | $((rd / 1024)).$(((rd % 1024) * 10 / 1024)) MB |
| the same projects written out | $w ms | $((rw / 1024)).$(((rw % 1024) * 10 / 1024)) MB |
| what discovery adds | **$(python3 -c "print(round($d - $w, 1))") ms** (goal < 50 ms) | **$(python3 -c "print(round(($rd - $rw) / 1024 / ($n / 100), 2))") MB per 100 projects** (goal < 2 MB) |

Listing requests during the $runs measured ticks: $requests, of which $not_modified answered \`304\`
($(python3 -c "print($requests / $runs)") per tick: one conditional request per page). Whole tick
with discovery: $(python3 -c "print(round($rd / 1024 / ($n / 100), 2))") MB of peak RSS per 100 projects.
EOF
