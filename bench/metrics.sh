#!/usr/bin/env bash
# The cost of metrics on a no-op tick: `pipe run` with nothing new over bench/run.sh's fixture
# (20 bare repos x 50 branches), without and with `[pipe] metrics_textfile`, the same binary,
# ticks interleaved (so a burst of other work on the shared cores hits both), then the system
# calls each makes (strace). Writes its section of bench/RESULTS.md.
#   PIPE_BIN=PATH   a release binary already built (default: cargo build --release)
#   RUNS=N          ticks of each case (default 300)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
work="$root/bench/work/metrics"
runs="${RUNS:-300}"
command -v strace >/dev/null || { say "installing strace"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q strace >/dev/null; }

rm -rf "$work"
mkdir -p "$work/repos" "$work/plain" "$work/metrics" "$work/textfile"
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@pipe.invalid GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@pipe.invalid
say "fixture: 20 bare repos x 50 branches"
: >"$work/projects.toml"
for r in $(seq 1 20); do
    dir="$work/repos/r$r.git"
    git init --quiet --bare "$dir"
    tree=$(git -C "$dir" hash-object -t tree -w --stdin </dev/null)
    commit=$(git -C "$dir" commit-tree "$tree" -m base)
    { for i in $(seq 1 49); do echo "create refs/heads/branch-$i $commit"; done; echo "create refs/heads/main $commit"; } |
        git -C "$dir" update-ref --stdin
    git -C "$dir" pack-refs --all
    printf '[project.r%s]\nrepo = "file://%s"\nbranches = ["**"]\n\n' "$r" "$dir" >>"$work/projects.toml"
done
cp "$work/projects.toml" "$work/plain/pipeline.toml"
{ printf '[pipe]\nmetrics_textfile = "%s"\n\n' "$work/textfile/pipe.prom"; cat "$work/projects.toml"; } >"$work/metrics/pipeline.toml"
PIPE_CONFIG="$work/plain/pipeline.toml" PIPE_STATE="$work/seed.toml" "$pipe" poll -q >/dev/null
for case in plain metrics; do
    sed 's/, pending = true//' "$work/seed.toml" >"$work/$case/state.toml"
    PIPE_CONFIG="$work/$case/pipeline.toml" PIPE_STATE="$work/$case/state.toml" "$pipe" run -q
done

say "timing $runs interleaved no-op ticks of each case"
python3 - "$pipe" "$work" "$runs" "$root/bench/RESULTS.md" <<'PY'
import datetime, os, re, statistics, subprocess, sys, time
pipe, work, runs, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
wall = {"plain": [], "metrics": []}
cpu = {"plain": [], "metrics": []}
for i in range(runs):
    for case in (("plain", "metrics") if i % 2 == 0 else ("metrics", "plain")):
        env = dict(os.environ, PIPE_CONFIG=f"{work}/{case}/pipeline.toml", PIPE_STATE=f"{work}/{case}/state.toml")
        before, start = os.times(), time.perf_counter()
        subprocess.run([pipe, "run", "-q"], env=env, check=True)
        wall[case].append((time.perf_counter() - start) * 1000)
        after = os.times()
        cpu[case].append((after.children_user - before.children_user + after.children_system - before.children_system) * 1000)
calls = {}
for case in ("plain", "metrics"):
    env = dict(os.environ, PIPE_CONFIG=f"{work}/{case}/pipeline.toml", PIPE_STATE=f"{work}/{case}/state.toml")
    trace = f"{work}/{case}.strace"
    subprocess.run(["strace", "-f", "-qq", "-o", trace, pipe, "run", "-q"], env=env, check=True)
    lines = open(trace).read().splitlines()
    calls[case] = (len(lines), sum("rename" in l for l in lines), sum("fsync" in l for l in lines))
load = open("/proc/loadavg").read().split()[0]
m = {k: statistics.median(v) for k, v in wall.items()}
c = {k: statistics.mean(v) for k, v in cpu.items()}
section = f"""<!-- metrics start -->
## Metrics: a no-op tick with and without `metrics_textfile` (`bench/metrics.sh`)

Written by `bench/metrics.sh` on {datetime.date.today()}: `pipe run` (release build, 2 shared cores, load
average {load} at the end) with nothing new over 20 bare repos x 50 branches, {runs} ticks of each case,
interleaved. System calls: one tick under `strace -f`.

| case | median wall | mean CPU (user + system) | system calls | renames | fsyncs |
|---|---|---|---|---|---|
| no `metrics_textfile` | {m['plain']:.2f} ms | {c['plain']:.2f} ms | {calls['plain'][0]} | {calls['plain'][1]} | {calls['plain'][2]} |
| `metrics_textfile` set | {m['metrics']:.2f} ms | {c['metrics']:.2f} ms | {calls['metrics'][0]} | {calls['metrics'][1]} | {calls['metrics'][2]} |

Metrics cost a no-op tick **{c['metrics'] - c['plain']:+.2f} ms** of CPU and {m['metrics'] - m['plain']:+.2f} ms of median wall time: the
lock, reading and writing `metrics.json`, rendering and renaming the textfile, without fsync. Without the
key the tick reads and writes nothing more than before.
<!-- metrics end -->
"""
text = open(path).read()
pattern = re.compile(r"<!-- metrics start -->.*?<!-- metrics end -->\n", re.S)
text = pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
print(section)
PY
say "wrote bench/RESULTS.md"
