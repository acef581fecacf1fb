#!/usr/bin/env bash
# The status page at scale: `pipe serve` with `[serve.page]` over states of 20 projects x 50
# refs and 20 x 500 (10,000), with histories and deploy targets, and a 16 MiB run log. Measures
# the overview's median time to last byte, `pipe serve`'s RSS while serving, and the log page's
# time to first byte and RSS growth, all in one run (bench/page_bench.py says how), and writes
# the `page` section of bench/RESULTS.md. Uses target/release/pipe (built when missing);
# PIPE_BIN overrides it. Needs curl and python3; root or the owner of the process for
# /proc/PID/clear_refs (peak RSS reset).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${PIPE_BIN:-$PWD/target/release/pipe}"
[ -x "$bin" ] || cargo build --release
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 bench/page_bench.py "$bin" "$work" bench/RESULTS.md
