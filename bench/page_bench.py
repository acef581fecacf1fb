"""The status page of `pipe serve` at scale, driven by bench/page.sh.

usage: page_bench.py PIPE_BIN WORKDIR RESULTS_MD

Makes two state directories the way pipe writes them (compact state.toml, one history per ref
with one run of three stages, two deploy targets per project with five deploys each): 20
projects x 50 refs, and 20 projects x 500 refs (10,000). The first also holds a 16 MiB run log
(escape codes, markup, 100-byte lines). For each it starts `pipe serve` with `[serve.page]` on
127.0.0.1 and measures with curl, one request at a time:

- the overview (first page, a middle page, a filtered page, the JSON) and a badge: median time
  to last byte of 20 requests; the first request after start (the state is read) and the first
  after a save (read again) are timed apart;
- `pipe serve`'s RSS (VmRSS) idle before the requests, peak while serving them (VmHWM, reset
  before), and after;
- the 16 MiB log page, on a fresh server that has only read the state (one badge): time to
  first byte and to last byte (median of 5), bytes, peak RSS while it streams and its growth
  over the RSS before it (VmHWM reset before each request).

Writes the `page` section of RESULTS_MD and prints it.
"""
import datetime
import hashlib
import os
import re
import socket
import statistics
import subprocess
import sys
import time

PROJECTS = 20
LOG_BYTES = 16 * 1024 * 1024


def ref_key(refname):
    # pipe's file name for a ref (docker::branch_tag): a name with `/` gets a hashed suffix.
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", refname).lstrip("-.")
    return f"{clean[:119].rstrip('-.')}-{hashlib.sha256(refname.encode()).hexdigest()[:8]}"


def make_state(root, per_project, log_bytes=0):
    os.makedirs(root)
    state = ["# pipe state\nschema = 1"]
    for p in range(PROJECTS):
        project = f"project{p:02}"
        state.append(f"\n[project.{project}]\nindexed = true\n\n[project.{project}.refs]")
        os.makedirs(f"{root}/refs/{project}")
        os.makedirs(f"{root}/deploys/{project}")
        for i in range(per_project):
            refname = f"refs/heads/branch-{i:04}"
            sha = hashlib.sha1(f"{project}{i}".encode()).hexdigest()
            result = "failed" if i % 10 == 3 else "passed"
            state.append(
                f'"{refname}" = {{ head = "{sha}", since = "2026-11-26T10:00:00Z", last = {{ stage = "test", '
                f'result = "{result}", commit = "{sha}", at = "2026-11-26T10:01:00Z" }} }}'
            )
            log = f"{root}/logs/{project}/{ref_key(refname)}/1.log"
            if p == 0 and i == 0 and log_bytes:
                os.makedirs(os.path.dirname(log))
                line = "\x1b[32mstep\x1b[0m compiling <module> & 'quoted' \"text\" \x1b]0;title\x07" + "x" * 34 + "\n"
                with open(log, "w") as f:
                    f.write(line * (log_bytes // len(line)))
            with open(f"{root}/refs/{project}/{ref_key(refname)}.toml", "w") as f:
                f.write(f'schema = 1\nref = "{refname}"\nnext_run = 2\n\n[[run]]\nnumber = 1\ncommit = "{sha}"\n'
                        f'started = "2026-11-26T10:00:00Z"\nimage = "{project}"\ntags = ["branch-{i:04}"]\nlog = "{log}"\n')
                for stage, seconds in (("build", 3.2), ("test", 1.5), ("push", 0.7)):
                    f.write(f'\n[[run.stage]]\nstage = "{stage}"\nresult = "passed"\n'
                            f'started = "2026-11-26T10:00:00Z"\nseconds = {seconds}\n')
        for target in ("dev", "prod"):
            with open(f"{root}/deploys/{project}/{target}.toml", "w") as f:
                f.write("schema = 1\n")
                for d in range(5):
                    sha = hashlib.sha1(f"{project}{target}{d}".encode()).hexdigest()
                    f.write(f'\n[[deploy]]\ncommit = "{sha}"\nimage = "registry.local/{project}"\ntag = "{sha[:12]}"\n'
                            f'ref = "refs/heads/branch-0000"\nat = "2026-11-26T1{d}:00:00Z"\nresult = "succeeded"\n')
    with open(f"{root}/state.toml", "w") as f:
        f.write("\n".join(state) + "\n")
    with open(f"{root}/pipeline.toml", "w") as f:
        f.write("[serve.page]\nenabled = true\n")


def proc_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid):
    # Linux: writing 5 resets the peak RSS (VmHWM) to the current RSS.
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def curl(url):
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}", url],
        check=True, capture_output=True, text=True).stdout.split()
    assert out[0] == "200", (url, out)
    return float(out[1]) * 1000, float(out[2]) * 1000, int(out[3])


def serve(pipe, root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = open(f"{root}/serve.log", "w")
    proc = subprocess.Popen([pipe, "-c", f"{root}/pipeline.toml", "--state", f"{root}/state.toml", "serve",
                             "--listen", f"127.0.0.1:{port}"], stderr=err, stdout=subprocess.DEVNULL)
    for _ in range(100):
        if "listening on" in open(f"{root}/serve.log").read():
            return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    raise SystemExit("pipe serve did not start")


def mb(kb):
    return f"{kb / 1024:.1f} MB"


def overview(pipe, root, label, rows, rss):
    proc, base = serve(pipe, root)
    try:
        time.sleep(0.2)
        idle = proc_kb(proc.pid, "VmRSS")
        reset_peak(proc.pid)
        first = curl(base + "/status")[1]
        paths = ["/status", "/status?page=5", "/status?q=branch-0042", "/status.json", "/badge/project07/branch-0003.svg"]
        for path in paths:
            times, size = [], 0
            for _ in range(20):
                _, total, size = curl(base + path)
                times.append(total)
            rows.append(f"| {label} | `{path}` | {statistics.median(times):.1f} ms | {size} |")
        # A save by `pipe run` (an atomic rename): the next request reads the state again.
        text = open(f"{root}/state.toml").read()
        with open(f"{root}/.state.tmp", "w") as f:
            f.write(text.replace('result = "passed"', 'result = "failed"', 1))
        os.rename(f"{root}/.state.tmp", f"{root}/state.toml")
        after_save = curl(base + "/status")[1]
        rows.append(f"| {label} | `/status`, first request after start (state read) | {first:.1f} ms | |")
        rows.append(f"| {label} | `/status`, first request after a save (state read again) | {after_save:.1f} ms | |")
        peak, after = proc_kb(proc.pid, "VmHWM"), proc_kb(proc.pid, "VmRSS")
        rss.append(f"| {label} | {mb(idle)} | {mb(peak)} | {mb(after)} |")
        return proc, base
    except BaseException:
        proc.kill()
        raise


def log_page(proc, base, logs):
    url = base + "/status/run?project=project00&ref=branch-0000"
    firsts, totals, growths, peaks, size = [], [], [], [], 0
    for _ in range(5):
        before = proc_kb(proc.pid, "VmRSS")
        reset_peak(proc.pid)
        first, total, size = curl(url)
        peak = proc_kb(proc.pid, "VmHWM")
        firsts.append(first)
        totals.append(total)
        peaks.append(peak)
        growths.append(peak - before)
    logs.append(f"| 16 MiB log, `/status/run` (one page, streamed) | {statistics.median(firsts):.1f} ms | "
                f"{statistics.median(totals):.1f} ms | {size} | {mb(max(peaks))} | {mb(max(growths))} |")
    return proc_kb(proc.pid, "VmRSS")


def main():
    pipe, work, results = sys.argv[1:4]
    rows, rss, logs = [], [], []
    small, big = f"{work}/1000", f"{work}/10000"
    make_state(small, 50, LOG_BYTES)
    make_state(big, 500)
    proc, _ = overview(pipe, small, "20 × 50", rows, rss)
    proc.kill()
    proc.wait()
    # The log on a fresh server that has read the state (one badge) and served nothing else.
    proc, base = serve(pipe, small)
    try:
        curl(base + "/badge/project00/branch-0000.svg")
        start_rss = proc_kb(proc.pid, "VmRSS")
        after_log = log_page(proc, base, logs)
    finally:
        proc.kill()
        proc.wait()
    proc, _ = overview(pipe, big, "20 × 500", rows, rss)
    proc.kill()
    proc.wait()
    section = f"""<!-- page start -->
## Status page (`bench/page.sh`)

Written by `bench/page.sh` on {datetime.date.today()} — `pipe serve` with `[serve.page]`,
release build, 127.0.0.1, curl one request at a time. The states are what pipe writes: 20
projects of 50 refs (1,000) or of 500 refs (10,000), each ref with a history of one run, two
deploy targets per project. `state.toml` is read once per version (a line at a time) and
kept as a compact index (one buffer of strings, one row per ref); a page reads the histories
of the 100 rows it shows and the deploy histories. The peak while serving includes the two
reads of the state (the parsed state and the index side by side for a moment).

| state | request | median time to last byte (20) | bytes |
|---|---|---|---|
{chr(10).join(rows)}

`pipe serve` RSS: idle after start, peak while serving the requests above (VmHWM, reset
before them; the state read twice included), and after them (target: < 16 MB after serving
the pages):

| state | idle | peak while serving | after |
|---|---|---|---|
{chr(10).join(rss)}

The run page of a 16 MiB log (ANSI colours, markup and quotes on every 100-byte line), as one
page: head and stages sent at once, then the log read, stripped and escaped 16 KiB at a time
into 32 KiB chunks. A fresh `pipe serve` on the 20 × 50 state that has answered one badge
(the state read: {mb(start_rss)}), then 5 requests; RSS growth is the peak while streaming
(VmHWM, reset before each) over the RSS before it (target: < 4 MB):

| request | median time to first byte | median time to last byte | bytes | peak RSS | RSS growth (max) |
|---|---|---|---|---|---|
{chr(10).join(logs)}

RSS after the five log pages: {mb(after_log)}.
<!-- page end -->
"""
    text = open(results).read() if os.path.exists(results) else "# Benchmark results\n"
    pattern = re.compile(r"<!-- page start -->.*?<!-- page end -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    open(results, "w").write(text)
    print(section)


main()
