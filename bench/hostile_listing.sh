#!/usr/bin/env bash
# A hostile listing cached: what `pipe status`, `pipe build APP --dry-run` and a tick where
# nothing moved (`pipe poll`) cost when the organization's discovery cache holds the most a
# listing can leave in it (10,000 repositories, pipe's bound, none of them a project), and when
# a listing of a million repositories went over the bound, against the same single project with
# an organization that lists only it.
# The GitHub stand-in (tests/it/support/forge_api.py) makes the hostile entries lazily; the
# project is a local bare repository (file://). Medians of interleaved rounds (wall time and
# peak RSS of each run). Prints a Markdown section for bench/RESULTS.md. Uses
# target/release/pipe (built when missing); PIPE_BIN overrides it. Writes its section of
# bench/RESULTS.md (bench/section.sh) and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="${PIPE_BIN:-$root/target/release/pipe}"
[ -x "$bin" ] || cargo build --quiet --release
work="$(mktemp -d)"
say() { printf '[bench] %s\n' "$*" >&2; }
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@pipe.invalid GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@pipe.invalid

say "fixture: one bare repository with a .pipe.toml on main"
mkdir -p "$work/repos"
git init --quiet --bare "$work/repos/app.git"
blob=$(printf 'test = "true"\n' | git -C "$work/repos/app.git" hash-object -w --stdin)
tree=$(printf '100644 blob %s\t.pipe.toml\n' "$blob" | git -C "$work/repos/app.git" mktree)
commit=$(git -C "$work/repos/app.git" commit-tree "$tree" -m first)
git -C "$work/repos/app.git" update-ref refs/heads/main "$commit"

# One stand-in per state, each serving its own organization.
org() { # org STATE COUNT [HOSTILE_PER_PAGE] (clone URLs on the stand-in's own origin, as a forge lists them)
    python3 - "$work/$1/api.jsonl.org.json" "$2" "${3:-0}" "$(cat "$work/$1/api.port")" <<'PY'
import json, sys
base = "http://127.0.0.1:%s/acme/" % sys.argv[4]
org = {"org": "acme", "repos": [{"name": "app", "clone_url": base + "app.git",
       "default_branch": "main", "pushed_at": "2026-11-01T00:00:00Z"}]}
if int(sys.argv[2]):
    org["generate"] = {"count": int(sys.argv[2]), "prefix": "gen", "clone_base": base}
if int(sys.argv[3]):
    org["hostile_per_page"] = int(sys.argv[3])
json.dump(org, open(sys.argv[1] + ".tmp", "w"))
PY
    mv "$work/$1/api.jsonl.org.json.tmp" "$work/$1/api.jsonl.org.json"
}
apis=()
trap 'kill "${apis[@]}" 2>/dev/null || true; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"' EXIT
export BENCH_TOKEN=bench-token
for s in plain kept over; do
    mkdir -p "$work/$s"
    python3 tests/it/support/forge_api.py github bench-token "$work/$s/api.jsonl" "$work/$s/api.port" &
    apis+=($!)
    for _ in $(seq 100); do [ -s "$work/$s/api.port" ] && break; sleep 0.05; done
    org "$s" 0
    cat >"$work/$s/pipeline.toml" <<EOF
[pipe]
workspace = "$work/$s/ws"

[forge.acme]
kind = "github"
api = "http://127.0.0.1:$(cat "$work/$s/api.port")"
token_env = "BENCH_TOKEN"

[forge.acme.discover]
org = "acme"
exclude = ["gen-*"]

[forge.acme.discover.project]
repo = "file://$work/repos/{repo}.git"
branches = ["main"]
image = "bench/{name}"
EOF
done
requests() { grep -c '"GET"' "$work/$1/api.jsonl"; }
poll() { PIPE_CONFIG="$work/$1/pipeline.toml" PIPE_STATE="$work/$1/state.toml" "$bin" -q poll >/dev/null 2>"$work/$1/poll.err" || cat "$work/$1/poll.err" >&2; }
say "every state: the organization lists the project only"
poll plain
poll kept
poll over
say "kept: 9,999 more repositories listed, within the bounds (10,000 kept)"
org kept 9999
poll kept
kept_listing=$(requests kept)
say "over: a million more, 12,500 a page, over the bound"
org over 1000000 12500
poll over
for s in plain kept over; do
    sed -i 's/, pending = true//' "$work/$s/state.toml"
done
size() { stat -c %s "$work/$1/discover/acme.toml"; }
kept_repos=$(awk '/^\[repo\]$/ { listing = 1; next } listing && /^"?gen-/ { n++ } END { print n + 0 }' "$work/kept/discover/acme.toml")

# Interleaved rounds (plain, kept, over, plain, …) so that a load that drifts over the run
# weighs on the three alike; each run's wall time and peak RSS (wait4's ru_maxrss).
measure() { # with $rounds set # measure ARGS... → "plain_ms kept_ms over_ms plain_kb kept_kb over_kb" (medians)
    python3 - "$work" "$bin" "$rounds" "$@" <<'PY'
import os, statistics, subprocess, sys, time
work, binary, rounds, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
kinds = ["plain", "kept", "over"]
times = {k: [] for k in kinds}
rss = {k: [] for k in kinds}
for i in range(rounds + 3):
    for k in kinds:
        env = dict(os.environ, PIPE_STATE=f"{work}/{k}/state.toml", PIPE_CONFIG=f"{work}/{k}/pipeline.toml")
        start = time.perf_counter()
        p = subprocess.Popen([binary, "-q", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(p.pid, 0)
        took = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"`pipe {' '.join(args)}` failed for {k}")
        if i >= 3:
            times[k].append(took * 1000)
            rss[k].append(usage.ru_maxrss)
print(" ".join(f"{statistics.median(times[k]):.1f}" for k in kinds), " ".join(str(int(statistics.median(rss[k]))) for k in kinds))
PY
}
rounds="${PIPE_BENCH_ROUNDS:-60}"
read -r sp sk so rsp rsk rso < <(measure status)
read -r bp bk bo rbp rbk rbo < <(measure build app --dry-run)
# A tick with nothing new: `pipe poll` (the listing asked page by page, 304s, and the probes
# the listing still owes), fewer rounds.
before=("$(requests plain)" "$(requests kept)" "$(requests over)")
tick_rounds="${PIPE_BENCH_TICK_ROUNDS:-30}"
rounds=$tick_rounds
read -r tp tk to rtp rtk rto < <(measure poll)
rounds="${PIPE_BENCH_ROUNDS:-60}"
per_tick() { python3 -c "print(round(($1 - $2) / ($tick_rounds + 3), 1))"; }
qp=$(per_tick "$(requests plain)" "${before[0]}")
qk=$(per_tick "$(requests kept)" "${before[1]}")
qo=$(per_tick "$(requests over)" "${before[2]}")
mb() { python3 -c "print(round($1 / 1024, 1))"; }
pct() { python3 -c "print(f'{($1 - $2) / $2 * 100:+.1f} %')"; }

section=$(cat <<EOF
<!-- hostile listing start -->
## A hostile listing cached: \`pipe status\`, \`pipe build --dry-run\` and a no-op tick (\`bench/hostile_listing.sh\`)

One discovered project; the organization's cache beside the state as three listings left it:
**plain**, the organization lists the project only ($(size plain) bytes); **kept**, 9,999 more
repositories (none a project, $kept_repos of them kept: pipe's bound of 10,000 entries) in
$(size kept) bytes, listed by $kept_listing requests in all (the first tick's, and the whole
listing's 100 pages); **over**, a million more at 12,500 a page, over the bound: nothing of it
kept, the error recorded ($(size over) bytes). The template excludes the generated entries
(\`exclude = ["gen-*"]\`): kept in the listing, never probed, as a large organization is once
each repository was probed. GitHub stand-in (one per state), listing newest pushed first;
medians of interleaved rounds (plain, kept, over) after 3 warm-up rounds, wall time and peak
RSS (\`wait4\`) of each run; $(basename "$(dirname "$(dirname "$bin")")")/$(basename "$(dirname "$bin")") binary, 2 shared cores, load average
$(cut -d' ' -f1-3 /proc/loadavg) at the end.

| command | plain | kept (10,000 listed) | over (1,000,000 listed) |
|---|---|---|---|
| \`pipe status\` time | $sp ms | $sk ms ($(pct "$sk" "$sp")) | $so ms ($(pct "$so" "$sp")) |
| \`pipe status\` peak RSS | $(mb "$rsp") MB | $(mb "$rsk") MB ($(pct "$rsk" "$rsp")) | $(mb "$rso") MB ($(pct "$rso" "$rsp")) |
| \`pipe build app --dry-run\` time | $bp ms | $bk ms ($(pct "$bk" "$bp")) | $bo ms ($(pct "$bo" "$bp")) |
| \`pipe build app --dry-run\` peak RSS | $(mb "$rbp") MB | $(mb "$rbk") MB ($(pct "$rbk" "$rbp")) | $(mb "$rbo") MB ($(pct "$rbo" "$rbp")) |
| no-op tick (\`pipe poll\`) time | $tp ms | $tk ms ($(pct "$tk" "$tp")) | $to ms ($(pct "$to" "$tp")) |
| no-op tick (\`pipe poll\`) peak RSS | $(mb "$rtp") MB | $(mb "$rtk") MB ($(pct "$rtk" "$rtp")) | $(mb "$rto") MB ($(pct "$rto" "$rtp")) |

Listing requests per tick: plain $qp, kept $qk, over $qo. Status and dry-run build: $rounds
rounds; ticks: $tick_rounds rounds.

Every command here reads only the head of \`discover/FORGE.toml\` (a tick also the head's copy
of the first page, at most 100 entries, which the others stop before). A no-op tick on GitHub (or
GitLab) asks for the first page of the listing, newest pushed first, with its \`ETag\`; its
\`304\` says nothing moved, and the tick decides from the head: one request and no probe however
many repositories are kept. The kept tick's first page holds 100 entries against the plain
one's 1 (the stand-in renders them for its \`304\`; pipe reads the head's copy of them): that
part differs, bounded at 100 whatever the listing holds. Before (this bench on 2026-12-07, every page asked each tick, the
generated entries probed) the kept tick sent 100 conditional requests, parsed the whole cache
and probed 32 entries that never answer: 1605.8 ms and 61.2 MB against 42.3 ms and 25.2 MB
plain. A tick after a listing went over the bound asks the forge nothing for an hour and reads
the head only. What still grows with the listing, up to the bound: a tick where something
moved (the cache read whole and written again), the whole listing every \`relist\` (an hour by
default), and ticks while repositories wait for their first probe (32 a tick). On
Gitea/Forgejo, whose listing takes no order, every tick still asks for every page.
<!-- hostile listing end -->
EOF
)
# shellcheck source=bench/section.sh
. "$root/bench/section.sh"
write_section "hostile listing" "$section"
echo "$section"
