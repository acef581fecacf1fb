"""Side-by-side measurements of `pipe serve` and adnanh/webhook, driven by bench/run.sh.

usage: serve_bench.py latency URL HEADER_NAME HEADER_VALUE N
       serve_bench.py complete-pipe BASE HOOK TOKEN N
       serve_bench.py complete-sync URL HEADER_NAME HEADER_VALUE N
Prints one number: the median in milliseconds.
"""
import http.client
import json
import statistics
import sys
import time
import urllib.parse


def post(url, headers, body=b""):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    path = u.path + ("?" + u.query if u.query else "")
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def latency(url, name, value, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        status, _ = post(url, {name: value})
        times.append((time.perf_counter() - t) * 1000)
        assert status in (200, 202), status
        time.sleep(0.005)
    return statistics.median(times)


def complete_pipe(base, hook, token, n):
    headers = {"Authorization": "Bearer " + token}
    times = []
    for _ in range(n):
        t = time.perf_counter()
        status, data = post(f"{base}/hooks/{hook}?wait=30", headers)
        assert status == 200 and json.loads(data)["status"] == "succeeded", (status, data)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def complete_sync(url, name, value, n):
    return latency(url, name, value, n)


cmd = sys.argv[1]
if cmd == "latency":
    print(round(latency(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])), 2))
elif cmd == "complete-pipe":
    print(round(complete_pipe(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])), 2))
elif cmd == "complete-sync":
    print(round(complete_sync(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])), 2))
