#!/usr/bin/env python3
"""Paced HTTP GETs through the ingress (bounded): one line of JSON per window on stdout.

usage: zdd_load.py PORT HOST RATE MAX_SECONDS STOPFILE
Runs until STOPFILE exists (or MAX_SECONDS). Prints {total, failed, p50_ms, p99_ms, bodies,
first_seen: {body: seconds since start}}."""
import http.client, json, os, sys, time

port, host, rate, limit, stopfile = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
start = time.monotonic()
start_epoch = time.time()
lat, bodies, first, failed = [], {}, {}, 0
n = 0
while time.monotonic() - start < limit and not os.path.exists(stopfile):
    t = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        body = r.read().decode(errors="replace").strip()
        key = body if r.status == 200 else f"HTTP {r.status}"
        c.close()
    except Exception as e:  # a refused or reset connection is a failed request
        key = f"ERROR {type(e).__name__}"
    lat.append((time.monotonic() - t) * 1000)
    if not key.startswith(("HTTP", "ERROR")):
        first.setdefault(key, round(time.monotonic() - start, 3))
    else:
        failed += 1
    bodies[key] = bodies.get(key, 0) + 1
    n += 1
    wait = start + n / rate - time.monotonic()
    if wait > 0:
        time.sleep(wait)
lat.sort()
pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None
elapsed = time.monotonic() - start
print(json.dumps({"start_epoch": start_epoch, "total": len(lat), "rate": round(len(lat) / elapsed, 1), "failed": failed,
                  "p50_ms": pick(0.5), "p99_ms": pick(0.99), "bodies": bodies, "first_seen": first}))
