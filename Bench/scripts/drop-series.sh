#!/usr/bin/env bash
# Alternating 1M-user drops with each side's CPU (issue #15 item 2).
#
#   Bench/scripts/drop-series.sh OUT ROUNDS NAME:RAFFLE_BENCH:CONNECTIONS ...
#
# Each round runs every NAME once, in order: raffled on core 0 (RAFFLED, default /tmp/pb/raffled: a
# wrapper `exec taskset -c 0 .build/release/raffled --loops 1 "$@"`), the generator on core 1 under
# SCHED_BATCH. 2.5 s into each 10 s drop, `perf stat -e task-clock` measures both processes for 5 s
# (5,000 ms = a whole core). Appends to OUT: the commands, each run's CPU and its summary lines; keeps
# each run's output, JSON and SVG as OUT_DIR/drop-1m-NAME-ROUND.* (OUT_DIR defaults to OUT's folder).
# With a neighbour on the generator's core: `taskset -c 1 python3 Bench/scripts/cpu-neighbour.py 3 &` first.
set -u
[ $# -ge 3 ] || { echo "usage: $0 OUT ROUNDS NAME:RAFFLE_BENCH:CONNECTIONS ..." >&2; exit 2; }
out=$1 rounds=$2; shift 2
dir=${OUT_DIR:-$(dirname "$out")}
raffled=${RAFFLED:-/tmp/pb/raffled}
command -v perf > /dev/null || { echo "drop-series: needs perf (linux-perf)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  echo "# $(date -u +%FT%H:%MZ) 1M-user drop, alternating configurations, $rounds rounds; tree at $(git -C "$(dirname "$0")" rev-parse --short HEAD)"
  echo "# per run: chrt -b 0 taskset -c 1 RAFFLE_BENCH drop --raffled $raffled --server-arg=--global-rate=0 --server-arg=--anonymous-rate=1000000000 --users 1000000 --within 10 --connections C"
  echo "# generator/server: perf stat -e task-clock -p PID -- sleep 5, from 2.5 s into the run (5000 msec = a whole core)"
} >> "$out"
for r in $(seq 1 "$rounds"); do
  for cfg in "$@"; do
    IFS=: read -r name bench c <<< "$cfg"
    echo "drop-series: round $r/$rounds, $name ($c connections)" >&2
    echo "== $name (connections $c), round $r" >> "$out"
    chrt -b 0 taskset -c 1 "$bench" drop --raffled "$raffled" --server-arg=--global-rate=0 --server-arg=--anonymous-rate=1000000000 \
      --users 1000000 --within 10 --connections "$c" --json "$dir/drop-1m-$name-$r.json" --svg "$dir/drop-1m-$name-$r.svg" > "$work/run.log" 2>&1 &
    sleep 2.5
    gen=$(pgrep -f "drop --raffled $raffled" | head -1); srv=$(pgrep -P "$gen" | head -1)
    perf stat -e task-clock -p "$gen" -- sleep 5 2>&1 | awk '/task-clock/ {print "  generator task-clock", $1, "msec / 5 s"}' > "$work/g" &
    perf stat -e task-clock -p "$srv" -- sleep 5 2>&1 | awk '/task-clock/ {print "  server task-clock   ", $1, "msec / 5 s"}' > "$work/s"
    wait  # the two perf stats and the drop itself
    cp "$work/run.log" "$dir/drop-1m-$name-$r.txt"
    cat "$work/g" "$work/s" >> "$out"
    grep -aE "^elapsed|^lost|^latency|entries acknowledged|gave up" "$work/run.log" >> "$out"
  done
done
