#!/usr/bin/env bash
# Restart after kill -9 with ENTRIES entries logged (issue #18, bounded restart): how long from exec
# until /healthz answers, replaying the whole log (--checkpoint-mb 0) against reading a checkpoint
# and replaying only the log after it (the default, --checkpoint-mb 64).
#
# For each mode: a fresh data directory, ENTRIES unique entries in batches of 1,000 (IngestLoad,
# durable), then kill -9 at two moments — at once (a checkpoint may be unwritten: the worst case
# replays up to --checkpoint-mb of log) and after SETTLE seconds (the checkpoint thread caught up) —
# and ROUNDS restarts each, timed to the first 200 from /healthz (curl every 5 ms).
# With BEFORE=path/to/an/older/raffled, that binary also restarts on the replay-mode data (a build
# from before checkpoints: `git worktree add /tmp/before REV && (cd /tmp/before && swift build -c release)`).
# Usage: Bench/scripts/restart.sh   (env: ENTRIES=10000000, BATCH=1000, ROUNDS=3, SETTLE=3, BEFORE=)
set -euo pipefail
cd "$(dirname "$0")/../.."
ENTRIES=${ENTRIES:-10000000}
BATCH=${BATCH:-1000}
ROUNDS=${ROUNDS:-3}
SETTLE=${SETTLE:-3}
BEFORE=${BEFORE:-}
port=18480

command -v curl >/dev/null || { echo "restart: needs curl (apt-get install curl)" >&2; exit 1; }
echo "restart: building raffled and IngestLoad (release)..."
swift build -c release --product raffled >/dev/null
(cd Bench && swift build -c release --product IngestLoad >/dev/null)

tmp=$(mktemp -d)
cleanup() { pkill -9 -f -- "$tmp" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

start() {  # start DATA CHECKPOINT_MB [BINARY]: runs raffled in the background (detached: kill -9 is not news)
  local binary=${3:-.build/release/raffled} extra=(--checkpoint-mb "$2")
  [ -n "${3:-}" ] && extra=()  # an older build has no checkpoints (nor the flag)
  ("$binary" --port $port --tcp-port=-1 --udp-port=-1 --data "$1" "${extra[@]}" --loops 1 \
    --global-rate 0 --anonymous-rate 1000000000 --log-level info >>"$1.log" 2>&1 &)
}
ms_now() { date +%s%N | awk '{printf "%d", $1 / 1000000}'; }
until_healthy() {  # prints ms until /healthz answers 200 (gives up after 60 s)
  local t0; t0=$(date +%s%N)
  for _ in $(seq 12000); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --http2-prior-knowledge "http://127.0.0.1:$port/healthz")" = 200 ]; then
      echo $(( ($(date +%s%N) - t0) / 1000000 )); return
    fi
    sleep 0.005
  done
  echo "restart: raffled did not answer /healthz within 60 s" >&2; exit 1
}

restarts() {  # restarts MODE WHEN DATA CHECKPOINT_MB [BINARY]: ROUNDS timed restarts, one line each
  for _ in $(seq "$ROUNDS"); do
    : >"$3.log"
    start "$3" "$4" "${5:-}"
    ms=$(until_healthy)
    # The server's own account (this build's log line): recovery time and what it replayed.
    line=$(grep -m1 'ledger ready' "$3.log")
    own=$(echo "$line" | sed -nE 's/.*ms=([0-9]+).*/\1/p')
    replayed=$(echo "$line" | sed -nE 's/.*records(_replayed)?=([0-9]+).*/\2/p')
    log_mb=$(du -sm --apparent-size "$3"/wal-*.log | awk '{s+=$1} END {print s}')
    ck_mb=$( (du -sm --apparent-size "$3"/checkpoint-*.ckpt 2>/dev/null || echo 0) | awk '{s+=$1} END {print s+0}')
    printf '%-11s %-8s %10s %12s %10s %14s %16s\n' "$1" "$2" "$log_mb" "$ck_mb" "$ms" "${own:--}" "$replayed records"
    pkill -9 -f -- "--data $3 " || true
    sleep 0.3
  done
}

echo "restart: $ENTRIES entries in batches of $BATCH, then kill -9; time from exec to the first /healthz 200"
printf '%-11s %-8s %10s %12s %10s %14s %16s\n' mode kill log-MiB checkpoint-MiB ready-ms "raffled's ms" "log replayed"
for mode in replay checkpoint; do
  mb=$([ $mode = replay ] && echo 0 || echo 64)
  for when in at-once settled; do
    data="$tmp/$mode-$when"
    start "$data" $mb
    until_healthy >/dev/null
    RAFFLE_ADMIN_KEY="$(cat "$data/admin.key")" Bench/.build/release/IngestLoad 127.0.0.1 $port 2 16 "$BATCH" "$ENTRIES" >"$data.ingest"
    [ $when = settled ] && sleep "$SETTLE"
    pkill -9 -f -- "--data $data " || true
    sleep 0.3
    restarts $mode $when "$data" $mb
    if [ -n "$BEFORE" ] && [ $mode = replay ]; then restarts before $when "$data" 0 "$BEFORE"; fi
  done
done
echo "(ingest: $(head -1 "$tmp/replay-at-once.ingest"))"
