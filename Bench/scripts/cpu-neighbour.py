#!/usr/bin/env python3
"""A noisy neighbour: takes a share of one core by spinning BUSY ms of every 10 ms, until killed.

Stands in for the minutes a shared VM runs slower, e.g. beside a `drop` generator pinned to core 1:

    taskset -c 1 python3 Bench/scripts/cpu-neighbour.py 3 &    # ~30 % of core 1
"""
import sys
import time

if len(sys.argv) != 2 or not 0 < float(sys.argv[1]) <= 10:
    sys.exit("usage: cpu-neighbour.py BUSY_MS   (0 < BUSY_MS <= 10, out of every 10 ms)")
busy = float(sys.argv[1]) / 1000.0
period = 0.010
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < busy:
        pass
    time.sleep(max(period - busy, 0.0))
