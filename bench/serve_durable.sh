#!/usr/bin/env bash
# `pipe serve` with durability on against adnanh/webhook (Debian's webhook package), in one run:
# wrk throughput and answer times at 2, 16 and 64 connections, accepted requests never run, idle
# and loaded RSS, syncs per accepted request under strace, and a SIGKILL during a flood of
# signed requests followed by a count of the status documents (bench/serve_bench.py says how).
# Writes the `serve-durable` section of bench/RESULTS.md. Uses target/release/pipe (built when
# missing); PIPE_BIN overrides it. Installs webhook, wrk and strace when missing. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in webhook wrk strace; do
    command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$tool" >/dev/null
done
bin="${PIPE_BIN:-$PWD/target/release/pipe}"
[ -x "$bin" ] || cargo build --release
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 bench/serve_bench.py durable "$bin" "$work" bench/RESULTS.md
