#!/usr/bin/env bash
# What running previews cost a tick that has nothing new: `pipe run` over one project whose
# remote (a local bare repo) has `main` and 20 open pull requests, every head already seen,
# (a) without a preview target, (b) with a preview target and no preview running, and
# (c) with a preview target and 20 previews running (recorded in previews/PROJECT.toml, none
# idle past its TTL). Medians of hyperfine runs in one go; writes the "previews" section of
# bench/RESULTS.md. Uses target/release/pipe (built when missing); PIPE_BIN overrides it.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="${PIPE_BIN:-$root/target/release/pipe}"
[ -x "$bin" ] || cargo build --quiet --release
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say() { printf '[bench] %s\n' "$*" >&2; }
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@pipe.invalid GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@pipe.invalid

repo="$work/app.git"
git init --quiet --bare "$repo"
tree=$(git -C "$repo" hash-object -t tree -w --stdin </dev/null)
base=$(git -C "$repo" commit-tree "$tree" -m base)
{
    echo "create refs/heads/main $base"
    for n in $(seq 1 20); do
        c=$(git -C "$repo" commit-tree "$tree" -p "$base" -m "pr $n")
        echo "create refs/pull/$n/head $c"
        echo "create refs/pull/$n/merge $c"
    done
} | git -C "$repo" update-ref --stdin

config() { # config FILE PREVIEWS
    cat > "$1" <<TOML
[pipe]
workspace = "$work/ws"

[ingress]
domain = "bench.test"
upstreams = "$work/upstreams"

[project.app]
repo = "file://$repo"
branches = ["main"]
pull_requests = true

[[project.app.deploy]]
branches = ["main"]
compose = { file = "$work/docker-compose.yml", services = ["web"] }
ingress = { web = 8080 }
previews = $2
TOML
}

for case in none empty twenty; do
    mkdir -p "$work/$case/state"
    config "$work/$case/pipeline.toml" "$([ "$case" = none ] && echo false || echo true)"
done
# One poll records every head; then nothing is pending (as after the tick that built them).
"$bin" -q -c "$work/none/pipeline.toml" --state "$work/none/state/state.toml" poll >/dev/null
sed -i 's/, pending = true//' "$work/none/state/state.toml"
cp "$work/none/state/state.toml" "$work/empty/state/state.toml"
cp "$work/none/state/state.toml" "$work/twenty/state/state.toml"
mkdir -p "$work/twenty/state/previews"
python3 - "$work/twenty/state/previews/app.toml" "$(git -C "$repo" for-each-ref --format='%(refname) %(objectname)' 'refs/pull/*/head')" <<'PY'
import sys, datetime
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
out = ["schema = 1", ""]
for line in sys.argv[2].splitlines():
    ref, sha = line.split()
    n = ref.split("/")[2]
    out += ["[[preview]]", 'target = "compose"', f"number = {n}", f'ref = "{ref}"', f'compose_project = "app-pr-{n}"', 'services = ["web"]',
            f'commit = "{sha}"', f'image = "pipe/app:{sha[:12]}"', f'url = "http://pr-{n}.app.bench.test/"',
            "trusted = false", f'created = "{now}"', f'updated = "{now}"', ""]
open(sys.argv[1], "w").write("\n".join(out))
PY

say "pipe run, nothing new: no preview target / a preview target, none running / 20 previews running"
hyperfine -N --warmup 5 --runs 150 --export-json "$work/h.json" \
    -n none "$bin -q -c $work/none/pipeline.toml --state $work/none/state/state.toml run" \
    -n empty "$bin -q -c $work/empty/pipeline.toml --state $work/empty/state/state.toml run" \
    -n twenty "$bin -q -c $work/twenty/pipeline.toml --state $work/twenty/state/state.toml run" >&2
# Still 20 previews recorded: the ticks removed nothing.
test "$(grep -c '^\[\[preview\]\]' "$work/twenty/state/previews/app.toml")" = 20

python3 - "$root/bench/RESULTS.md" "$work/h.json" <<'PY'
import json, re, sys, datetime
path, h = sys.argv[1], json.load(open(sys.argv[2]))
m = {r["command"]: r["median"] * 1000 for r in h["results"]}
s = {r["command"]: r["stddev"] * 1000 for r in h["results"]}
cpu = {r["command"]: (r["user"] + r["system"]) * 1000 for r in h["results"]}
section = f"""<!-- previews start -->
## Previews: a tick with nothing new (`bench/previews.sh`)

Written by `bench/previews.sh` on {datetime.date.today()}: `pipe run` (release build, 2 shared cores) over one project
whose local remote has `main` and 20 open pull requests, every head already seen, so the tick polls, sweeps
the previews (none closed or idle) and has no work. Medians of 150 runs each, in one hyperfine run.

| case | median wall | stddev | mean CPU (user + system) |
|---|---|---|---|
| no preview target | {m['none']:.1f} ms | {s['none']:.1f} ms | {cpu['none']:.1f} ms |
| preview target, no preview running | {m['empty']:.1f} ms | {s['empty']:.1f} ms | {cpu['empty']:.1f} ms |
| preview target, 20 previews running | {m['twenty']:.1f} ms | {s['twenty']:.1f} ms | {cpu['twenty']:.1f} ms |

20 previews running cost **{m['twenty'] - m['none']:+.1f} ms** of median wall time over no preview target (goal: at
most +10 ms; ratio {m['twenty'] / m['none']:.2f}x) and {cpu['twenty'] - cpu['none']:+.1f} ms of CPU. The machine's two cores are shared
with other builds, so the wall times' spread is wide; the CPU column is the steadier one. The tick reads
one `previews/app.toml` and compares it with the state it already loaded; it writes nothing and asks
Docker and nginx nothing unless a preview goes.
<!-- previews end -->
"""
text = open(path).read()
pattern = re.compile(r"<!-- previews start -->.*?<!-- previews end -->\n", re.S)
text = pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
print(section)
PY
say "wrote bench/RESULTS.md"
