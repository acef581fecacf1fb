#!/usr/bin/env bash
# The status page at scale: `pipe serve` with `[serve.page]` over a state of 1,000 and 10,000
# refs (the compact state.toml, one stage record per ref, every tenth failed), on 127.0.0.1.
# For the overview (first page, a middle page, a filtered page, the JSON) it prints the median
# time to last byte of 20 requests (curl's time_total) and the server's peak RSS (VmHWM) after
# them. Uses target/release/pipe (built when missing); PIPE_BIN overrides it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${PIPE_BIN:-$PWD/target/release/pipe}"
[ -x "$bin" ] || cargo build --release
work="$(mktemp -d)"
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
say() { printf '[bench] %s\n' "$*" >&2; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '| refs | request | median time to last byte | bytes |\n|---|---|---|---|\n'
for refs in 1000 10000; do
    dir="$work/$refs"
    mkdir -p "$dir"
    printf '[serve.page]\nenabled = true\n' > "$dir/pipeline.toml"
    python3 - "$refs" > "$dir/state.toml" <<'PY'
import sys
n = int(sys.argv[1])
print("schema = 1\n\n[project.big]\nindexed = true\n\n[project.big.refs]")
for i in range(n):
    sha = f"{i:040x}"
    result = "failed" if i % 10 == 3 else "passed"
    print(f'"refs/heads/branch-{i:05}" = {{ head = "{sha}", since = "2026-11-26T10:00:00Z", '
          f'last = {{ stage = "test", result = "{result}", commit = "{sha}", at = "2026-11-26T10:01:00Z" }} }}')
PY
    port=$((20000 + RANDOM % 20000))
    "$bin" -c "$dir/pipeline.toml" --state "$dir/state.toml" serve --listen "127.0.0.1:$port" 2>"$dir/serve.log" &
    pid=$!
    for _ in $(seq 50); do grep -q "listening on" "$dir/serve.log" && break; sleep 0.1; done
    for path in "/status" "/status?page=5" "/status?q=branch-0042" "/status.json"; do
        bytes=$(curl -s -o /dev/null -w '%{size_download}' "http://127.0.0.1:$port$path")
        ms=$(for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port$path"; done | median)
        printf '| %s | `%s` | %.1f ms | %s |\n' "$refs" "$path" "$(echo "$ms * 1000" | bc -l)" "$bytes"
    done
    say "$refs refs: peak RSS of pipe serve $(awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status")"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done
