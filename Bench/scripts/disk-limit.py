#!/usr/bin/env python3
"""The disk's own limit for durable batched ingest, in entries/s.

Writes log-record-sized blocks (a 1,000-entry record is 12,020 bytes on disk) sequentially to a file
in DIR and fdatasyncs, the way the write-ahead log does, for SECONDS each:
  1. one record per fdatasync  -> the rate when every batch waits alone for its sync;
  2. 1 MiB per fdatasync       -> the streaming limit group commit approaches.
Entries/s = bytes/s / 12 (the log stores 12 bytes per entry).

    python3 Bench/scripts/disk-limit.py [DIR=/tmp] [SECONDS=3]
"""
import os
import sys
import time

directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
path = os.path.join(directory, "raffled-disk-limit.tmp")


def run(block_bytes):
    block = os.urandom(block_bytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    written = syncs = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        os.write(fd, block)
        os.fdatasync(fd)
        written += block_bytes
        syncs += 1
    elapsed = time.monotonic() - start
    os.close(fd)
    os.unlink(path)
    return syncs / elapsed, written / elapsed


for label, size in (("one 1,000-entry record per fdatasync", 12_020), ("1 MiB per fdatasync", 1 << 20)):
    rate, bps = run(size)
    print("disk: %-38s %9.0f fdatasync/s %8.1f MB/s = %11.0f entries/s" % (label, rate, bps / 1e6, bps / 12))
