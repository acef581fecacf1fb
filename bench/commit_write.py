#!/usr/bin/env python3
"""What one durable record costs on this disk, the ways `serve/commit.rs` could write it.

Usage: python3 bench/commit_write.py [DIR] [COUNT]   (DIR: a directory on the disk pipe's
state is on, default /var/lib; COUNT records per thread, default 400)

For 1 and 2 threads writing at once, the median and p90 time of one record (a 100-byte line):
  append+fdatasync   appended to the file, then fdatasync (the file's length changes each time)
  zeroed+fdatasync   written over a file zeroed and synced ahead, then fdatasync
  direct+dsync       a whole 4 KiB block over a file zeroed ahead, opened O_DIRECT | O_DSYNC
                     (what `pipe serve` does; each thread its own block)
Python's own cost per record (a few microseconds) is in every figure alike.
"""
import mmap
import os
import statistics
import sys
import threading
import time

BLOCK = 4096


def run(mode, threads, directory, count):
    path = os.path.join(directory, f".pipe-commit-bench-{os.getpid()}")
    if mode != "append+fdatasync":
        with open(path, "wb") as f:
            f.write(b"\0" * (BLOCK * count * threads + BLOCK))
            f.flush()
            os.fsync(f.fileno())
    flags = os.O_WRONLY | os.O_CREAT
    if mode == "append+fdatasync":
        flags |= os.O_APPEND | os.O_TRUNC
    if mode == "direct+dsync":
        flags |= os.O_DIRECT | os.O_DSYNC
    fd = os.open(path, flags, 0o600)
    line = b"x" * 99 + b"\n"
    times = []
    lock = threading.Lock()
    slot = [0]

    def worker():
        block = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
        block.write(line)
        mine = []
        for _ in range(count):
            with lock:
                at = slot[0]
                slot[0] += 1
            started = time.perf_counter()
            if mode == "append+fdatasync":
                os.write(fd, line)
                os.fdatasync(fd)
            elif mode == "zeroed+fdatasync":
                os.pwrite(fd, line, at * len(line))
                os.fdatasync(fd)
            else:
                os.pwrite(fd, block, at * BLOCK)
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            times.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    os.close(fd)
    os.unlink(path)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "/var/lib"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    print(f"| way | 1 thread: median / p90 | 2 threads at once: median / p90 |")
    print("|---|---|---|")
    for mode in ("append+fdatasync", "zeroed+fdatasync", "direct+dsync"):
        cells = [run(mode, threads, directory, count) for threads in (1, 2)]
        print(f"| {mode} | " + " | ".join(f"{m:.3f} / {p:.3f} ms" for m, p in cells) + " |")


if __name__ == "__main__":
    main()
