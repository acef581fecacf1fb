"""Side-by-side measurements of `pipe serve` and adnanh/webhook, driven by bench/run.sh.

usage: serve_bench.py latency URL HEADER_NAME HEADER_VALUE N
       serve_bench.py complete-pipe BASE HOOK TOKEN N
       serve_bench.py complete-sync URL HEADER_NAME HEADER_VALUE N
       serve_bench.py flood URL KIND SECRET_OR_TOKEN N
Prints one number: the median in milliseconds; `flood` prints "PERCENT_WITHIN_1S MAX_MS": N
legitimate requests (KIND `signed`: pipe's HMAC body for hook URL; `token`: an X-Token header)
sent one after another while 300 slowloris connections trickle a byte every 2 s and 255
connections each POST 1 MiB without credentials.
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


def flood(url, kind, credential, n):
    import hashlib
    import hmac
    import socket
    import threading
    import uuid

    u = urllib.parse.urlsplit(url)
    host, port, path = u.hostname, u.port, u.path
    stop = threading.Event()

    def slowloris():
        conns = []
        while not stop.is_set():
            while len(conns) < 300:
                try:
                    c = socket.create_connection((host, port), timeout=5)
                    c.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode())
                    c.setblocking(False)
                    conns.append(c)
                except OSError:
                    time.sleep(0.01)
            alive = []
            for c in conns:
                try:
                    c.send(b"X")
                    alive.append(c)
                except OSError:
                    c.close()
            conns = alive
            stop.wait(2)
        for c in conns:
            c.close()

    def big_body():
        body = b"x" * (1024 * 1024)
        while not stop.is_set():
            try:
                c = socket.create_connection((host, port), timeout=10)
                c.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
                c.sendall(body)
                c.recv(100)
                c.close()
            except OSError:
                stop.wait(0.05)

    threads = [threading.Thread(target=slowloris)] + [threading.Thread(target=big_body) for _ in range(255)]
    for t in threads:
        t.start()
    time.sleep(2)
    times = []
    for _ in range(n):
        if kind == "signed":
            body = json.dumps({"hook": path.rsplit("/", 1)[-1], "delivery": uuid.uuid4().hex, "sent_at": int(time.time())}).encode()
            sig = "sha256=" + hmac.new(credential.encode(), body, hashlib.sha256).hexdigest()
            headers = {"X-Hub-Signature-256": sig}
        else:
            body, headers = b"", {"X-Token": credential}
        t = time.perf_counter()
        try:
            status, _ = post(url, headers, body)
        except OSError:
            status = 0
        elapsed = (time.perf_counter() - t) * 1000
        times.append(elapsed if status in (200, 202) else float("inf"))
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    within = sum(1 for t in times if t <= 1000) * 100 / len(times)
    return f"{within:.0f} {max(times):.1f}"


cmd = sys.argv[1]
if cmd == "latency":
    print(round(latency(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])), 2))
elif cmd == "complete-pipe":
    print(round(complete_pipe(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])), 2))
elif cmd == "complete-sync":
    print(round(complete_sync(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])), 2))
elif cmd == "flood":
    print(flood(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
