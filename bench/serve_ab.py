#!/usr/bin/env python3
"""Alternating wrk runs against builds of `pipe serve` and adnanh/webhook, for comparing two
builds of the receiver on a noisy machine (each round runs every target once, in turn).

Usage: python3 bench/serve_ab.py ROUNDS SECONDS CONNS BIN [BIN...]

Every BIN is started as `pipe serve` with one token hook whose script appends a line, webhook
with the same hook; each round runs `wrk -t1 -cCONNS -dSECONDS` on each (after a `sync` and 2 s, so no run pays
for the last one's writeback), waits until the scripts stop running, and prints wrk's median and req/s; the end prints the median of each
over the rounds. Needs wrk and webhook (bench/serve_durable.sh installs them). Loopback only.
"""
import json, os, re, socket, subprocess, sys, time, shutil, statistics
rounds, secs, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
bins = sys.argv[4:]
import tempfile
work = tempfile.mkdtemp(prefix="pipe-serve-ab-")
token = "bench-token-4242"
with open(f"{work}/hook.sh", "w") as f: f.write(f"#!/bin/sh\necho ran >> {work}/out\n")
os.chmod(f"{work}/hook.sh", 0o755)
with open(f"{work}/pipeline.toml", "w") as f:
    f.write(f'[serve.hooks.deploy]\ntoken_env = "BENCH_TOKEN"\ncommand = {{ argv = ["{work}/hook.sh"] }}\n')
rule = {"match": {"type": "value", "value": token, "parameter": {"source": "header", "name": "X-Token"}}}
json.dump([{"id": "deploy", "execute-command": f"{work}/hook.sh", "trigger-rule": rule}], open(f"{work}/hooks.json", "w"))
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
procs, targets = [], []
for i, b in enumerate(bins):
    p = port(); log = f"{work}/p{i}.log"
    procs.append(subprocess.Popen([b, "-c", f"{work}/pipeline.toml", "--state", f"{work}/s{i}/state.toml", "serve", "--listen", f"127.0.0.1:{p}"],
        stderr=open(log, "w"), stdout=subprocess.DEVNULL, env={**os.environ, "BENCH_TOKEN": token}))
    targets.append((os.path.basename(b), f"http://127.0.0.1:{p}/hooks/deploy", ("Authorization", "Bearer " + token)))
p = port()
procs.append(subprocess.Popen(["webhook", "-hooks", f"{work}/hooks.json", "-ip", "127.0.0.1", "-port", str(p)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
targets.append(("webhook", f"http://127.0.0.1:{p}/hooks/deploy", ("X-Token", token)))
time.sleep(1.5)
def ms(t):
    v, u = re.match(r"([\d.]+)(us|ms|s)", t).groups(); return float(v) * {"us": .001, "ms": 1, "s": 1000}[u]
res = {t[0]: [] for t in targets}
for r in range(rounds):
    for name, url, h in targets:
        os.sync(); time.sleep(2)  # the last run's dirty pages are written before this one
        lua = f"{work}/w.lua"; open(lua, "w").write(f'wrk.method = "POST"\nwrk.headers["{h[0]}"] = "{h[1]}"\n')
        out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", "-s", lua, url], capture_output=True, text=True).stdout
        if not re.search(r"50%\s+[\d.]+(us|ms|s)\b", out): print(out); continue
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)); p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        res[name].append((p50, rps)); print(f"round {r} {name:12} p50 {p50:.3f} ms  {rps:8.0f} req/s {'BAD '+bad.group(1) if bad else ''}", flush=True)
        last = -1
        while True:
            n = sum(1 for _ in open(f"{work}/out")) if os.path.exists(f"{work}/out") else 0
            if n == last: break
            last = n; time.sleep(1)
for name, v in res.items():
    print(f"{name:12} median p50 {statistics.median(x[0] for x in v):.3f} ms  median rps {statistics.median(x[1] for x in v):.0f}")
for p in procs: p.terminate()
for p in procs: p.wait()
shutil.rmtree(work, ignore_errors=True)
