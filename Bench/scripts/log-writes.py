#!/usr/bin/env python3
"""What a log write + fdatasync costs in CPU on this machine, by how the file is written.

Usage: Bench/scripts/log-writes.py DIR [MODE...]   (DIR on the disk the data directory uses)

Modes (default: all, each in a fresh process so none inherits another's recycled pages):
  append        1 MiB appends, fdatasync after each: a growing file, as the log and checkpoints write
  append-drop   the same, then posix_fadvise(DONTNEED) on each synced MiB (what raffled does now)
  small         4 KiB appends + fdatasync each (a single-entry group commit's size)
  small-zeroed  4 KiB writes + fdatasync into a file zero-filled (and synced) beforehand
  small-falloc  4 KiB writes + fdatasync into a file posix_fallocate'd beforehand
Prints throughput, the CPU time (user + system) per MiB or per commit, and voluntary context switches.
"""
import mmap
import os
import resource
import subprocess
import sys
import time

MODES = ["append", "append-drop", "small", "small-zeroed", "small-falloc"]


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_nvcsw


def big(directory, drop, total=512 << 20, chunk=1 << 20):
    path = os.path.join(directory, "log-writes.big")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    buf = mmap.mmap(-1, chunk)
    buf.write(b"x" * chunk)
    (c0, v0), t0 = cpu(), time.perf_counter()
    for i in range(total // chunk):
        os.write(fd, buf)
        os.fdatasync(fd)
        if drop:
            os.posix_fadvise(fd, i * chunk, chunk, os.POSIX_FADV_DONTNEED)
    (c1, v1), t1 = cpu(), time.perf_counter()
    os.close(fd)
    os.unlink(path)
    mib = total / (1 << 20)
    return f"{mib / (t1 - t0):7.0f} MiB/s  {1000 * (c1 - c0) / mib:5.2f} ms CPU per MiB  {v1 - v0} switches"


def small(directory, prepare, n=3000, size=4096):
    path = os.path.join(directory, "log-writes.small")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    if prepare == "zeroed":
        os.write(fd, b"\0" * (n * size))
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    elif prepare == "falloc":
        os.posix_fallocate(fd, 0, n * size)
        os.fsync(fd)
    buf = b"x" * size
    (c0, v0), t0 = cpu(), time.perf_counter()
    for _ in range(n):
        os.write(fd, buf)
        os.fdatasync(fd)
    (c1, v1), t1 = cpu(), time.perf_counter()
    os.close(fd)
    os.unlink(path)
    return f"{n / (t1 - t0):7.0f} commits/s  {1e6 * (c1 - c0) / n:6.1f} µs CPU per commit  {(v1 - v0) / n:.1f} switches per commit"


def run(directory, mode):
    if mode == "append":
        return big(directory, drop=False)
    if mode == "append-drop":
        return big(directory, drop=True)
    if mode == "small":
        return small(directory, None)
    if mode == "small-zeroed":
        return small(directory, "zeroed")
    if mode == "small-falloc":
        return small(directory, "falloc")
    sys.exit(f"log-writes: unknown mode {mode!r} (modes: {', '.join(MODES)})")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    directory, modes = sys.argv[1], sys.argv[2:]
    os.makedirs(directory, exist_ok=True)
    if len(modes) == 1:
        print(f"{modes[0]:13} {run(directory, modes[0])}", flush=True)
        return
    for mode in modes or MODES:
        subprocess.run([sys.executable, __file__, directory, mode], check=True)


if __name__ == "__main__":
    main()
