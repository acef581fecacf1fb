#!/usr/bin/env python3
"""Push to traffic: one commit pushed to a git daemon until nginx serves it, driven by a forge
push webhook to `pipe serve` and by a 60 s timer running `pipe run` (the seed's setup).

Run by bench/push_to_traffic.sh, which prepares the git daemon, the forge stand-in, nginx and
the pipeline file, and passes: PIPE WORK FRONT_PORT HOST SERVE_PORT PROJECT SECRET SAMPLES
TIMER_SAMPLES PERIOD. Prints one JSON document on stdout.
"""

import hashlib
import hmac
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

(PIPE, WORK, FRONT, HOST, SERVE_PORT, PROJECT, SECRET, SAMPLES, TIMER_SAMPLES, PERIOD) = sys.argv[1:11]
DRAIN = 1.0  # the deploy target's `drain`, in the pipeline file bench/push_to_traffic.sh writes
SAMPLES, TIMER_SAMPLES, PERIOD = int(SAMPLES), int(TIMER_SAMPLES), float(PERIOD)
APP = os.path.join(WORK, "app")
PUSH_BODY = open(os.path.join(os.path.dirname(__file__), "..", "tests", "it", "fixtures", "github-push.json"), "rb").read()


def git(*args):
    subprocess.run(["git", "-C", APP, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def commit(text):
    with open(os.path.join(APP, "www", "index.html"), "w") as f:
        f.write(text + "\n")
    git("add", "-A")
    git("-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-qm", text)


def push():
    git("push", "-q", "origin", "dev")


def serving():
    req = urllib.request.Request(f"http://127.0.0.1:{FRONT}/", headers={"Host": HOST, "Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.read().decode().strip()
    except Exception:
        return None


def wait_for_traffic(text, limit):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if serving() == text:
            return time.monotonic()
        time.sleep(0.02)
    raise SystemExit(f"`{text}` was not served within {limit} s")


def stages():
    """The stage durations of the ref's last run, as pipe recorded them."""
    out = subprocess.run([PIPE, "logs", "--json", PROJECT, "dev"], check=True, capture_output=True, text=True).stdout
    doc = json.loads(out)
    return {s["stage"]: s["seconds"] for s in doc["stages"]}


def webhook(delivery):
    signature = "sha256=" + hmac.new(SECRET.encode(), PUSH_BODY, hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        f"http://127.0.0.1:{SERVE_PORT}/forge/{PROJECT}",
        data=PUSH_BODY,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature,
        },
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


class Serve:
    """`pipe serve`, its log lines kept with the time each arrived."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [PIPE, "serve", "--listen", f"127.0.0.1:{SERVE_PORT}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 10
        while not self.seen("listening on"):
            if time.monotonic() > deadline:
                raise SystemExit("pipe serve did not start:\n" + "\n".join(l for _, l in self.lines))
            time.sleep(0.02)

    def _read(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def seen(self, needle, after=0.0):
        with self.lock:
            return next((t for t, l in self.lines if needle in l and t >= after), None)

    def wait(self, needle, after, limit=120):
        deadline = time.monotonic() + limit
        while True:
            t = self.seen(needle, after)
            if t is not None:
                return t
            if time.monotonic() > deadline:
                with self.lock:
                    log = "\n".join(l for _, l in self.lines)
                raise SystemExit(f"no `{needle}` in pipe serve's log:\n{log}")
            time.sleep(0.01)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def summary(rows):
    keys = rows[0].keys()
    return {k: round(statistics.median(r[k] for r in rows), 2) for k in keys}


def webhook_rounds(serve, first):
    rows = []
    for i in range(SAMPLES):
        text = f"release {first + i}"
        commit(text)
        t0 = time.monotonic()
        push()
        pushed = time.monotonic()
        status = webhook(f"bench-{os.getpid()}-{first + i}")
        assert status == 202, status
        # The run may start before the webhook's answer arrives.
        started = serve.wait("run started", pushed)
        served = wait_for_traffic(text, 300)
        serve.wait("run ended", pushed)
        s = stages()
        # The deploy stage ends after the old release's drain, which follows the switch.
        work = sum(s.values()) - DRAIN
        rows.append(
            {
                "push_s": pushed - t0,
                "hook_to_run_start_ms": (started - pushed) * 1000,
                "push_to_traffic_s": served - t0,
                "stages_s": work,
                "overhead_s": served - t0 - work,
            }
        )
        print(f"[bench] webhook {text}: {json.dumps({k: round(v, 2) for k, v in rows[-1].items()})}", file=sys.stderr)
    return rows


def timer_rounds(first):
    """A timer that starts `pipe run` every PERIOD seconds, as a systemd timer would; each
    commit is pushed at a random moment of the period."""
    rows = []
    stop = threading.Event()
    runs = []  # [start, end or None] of each `pipe run`

    def timer():
        tick = time.monotonic()
        while not stop.is_set():
            run = [time.monotonic(), None]
            runs.append(run)
            subprocess.run([PIPE, "run", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run[1] = time.monotonic()
            tick += PERIOD
            stop.wait(max(0.0, tick - time.monotonic()))

    thread = threading.Thread(target=timer, daemon=True)
    thread.start()
    rng = random.Random(7)
    for i in range(TIMER_SAMPLES):
        text = f"release {first + i}"
        time.sleep(rng.uniform(0, PERIOD))
        commit(text)
        t0 = time.monotonic()
        push()
        served = wait_for_traffic(text, PERIOD * 2 + 300)
        run = next(r for r in runs if r[0] >= t0)
        while run[1] is None:
            time.sleep(0.05)
        start = run[0]
        s = stages()
        rows.append(
            {
                "push_to_run_start_s": start - t0,
                "push_to_traffic_s": served - t0,
                "stages_s": sum(s.values()) - DRAIN,
            }
        )
        print(f"[bench] timer {text}: {json.dumps({k: round(v, 2) for k, v in rows[-1].items()})}", file=sys.stderr)
    stop.set()
    thread.join()
    return rows


def main():
    commit("release 0")
    push()
    subprocess.run([PIPE, "run", "-q"], check=True, stdout=subprocess.DEVNULL)
    wait_for_traffic("release 0", 60)
    serve = Serve()
    try:
        hooks = webhook_rounds(serve, 1)
    finally:
        serve.stop()
    timers = timer_rounds(1 + SAMPLES) if TIMER_SAMPLES else []
    print(
        json.dumps(
            {
                "samples": SAMPLES,
                "timer_samples": TIMER_SAMPLES,
                "period_s": PERIOD,
                "webhook": summary(hooks),
                "webhook_max": {k: round(max(r[k] for r in hooks), 2) for k in hooks[0]},
                "timer": summary(timers) if timers else None,
                "timer_rows": timers,
            }
        )
    )


main()
