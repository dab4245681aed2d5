#!/usr/bin/env bash
# Batched durable ingest only, two (or more) raffled builds alternating: each round starts every build
# afresh (new data directory) on core 0 and runs IngestLoad on core 1 (a raffle sized for the run,
# batches of 4,000, 2 connections x 32 in flight). Prints entries/s as IngestLoad measured it and the
# server's CPU from just before IngestLoad starts (so creating the raffle counts) to its end.
# Quicker than ab.sh (no h2o, no disk yardstick) when only the bulk path changed.
# Usage: Bench/scripts/bulk-ab.sh BEFORE_RAFFLED AFTER_RAFFLED [MORE...]   env: ROUNDS (3), INGEST (8000000)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 BEFORE_RAFFLED AFTER_RAFFLED [MORE_RAFFLED...]" >&2; exit 2; }
for bin in "$@"; do [ -x "$bin" ] || { echo "bulk-ab: $bin is not an executable" >&2; exit 2; }; done
ROUNDS=${ROUNDS:-3}
INGEST=${INGEST:-8000000}
. Bench/scripts/lib.sh
need bulk-ab curl:curl
(cd Bench && swift build -c release --product IngestLoad >/dev/null)
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
hz=$(getconf CLK_TCK)
# taskset in front of the server itself (not the pin function) so $! is the server's pid.
server_pin=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then server_pin=(taskset -c 0); fi
for r in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    rm -rf "$tmp/d"
    "${server_pin[@]}" "$bin" --port 18081 --data "$tmp/d" --loops 1 --durability fsync --log-level warning --global-rate 0 \
      --anonymous-rate 1000000000 >"$tmp/log" 2>&1 &
    pid=$!
    up=
    for _ in $(seq 100); do curl -s --http2-prior-knowledge http://127.0.0.1:18081/healthz >/dev/null && { up=1; break; }; sleep 0.1; done
    [ -n "$up" ] || { echo "bulk-ab: $bin did not start on port 18081" >&2; cat "$tmp/log" >&2; exit 1; }
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(RAFFLE_ADMIN_KEY="$(cat "$tmp/d/admin.key")" pin 1 Bench/.build/release/IngestLoad 127.0.0.1 18081 2 32 4000 "$INGEST")
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    rate=$(echo "$out" | sed -n 's/.* = \([0-9]*\) entries\/s.*/\1/p')
    printf 'round %s %s: %s entries/s, server CPU %.0f ms = %.0f ns/entry\n' "$r" "$(basename "$bin")" "$rate" \
      "$(echo "($t1 - $t0) * 1000 / $hz" | bc -l)" "$(echo "($t1 - $t0) * 1000000000 / $hz / $INGEST" | bc -l)"
  done
done
