#!/usr/bin/env bash
# Before/after of two (or more) raffled builds in one run, each beside the same yardsticks, alternating so the
# VM's drift hits both alike:
#   1. single-entry durable POSTs (h2load, one body: after the first, every request is a duplicate)
#      vs h2o serving a 2-byte static file;
#   1b. single-entry durable POSTs from fresh users (raffle-bench single, the issue's headline figure)
#      vs h2o through the same generator (raffle-bench get), same shape (-c16 -m32);
#   2. durable batched ingest of unique entries (IngestLoad, batches of 4,000) vs the disk's own
#      sequential write+fdatasync limit (disk-limit.py, 1 MiB per fdatasync).
# Server on core 0, generator on core 1; throttling out of the way (--global-rate 0).
# Usage: Bench/scripts/ab.sh BEFORE_RAFFLED AFTER_RAFFLED [MORE_RAFFLED...]   (labelled by file name)
#   env: N=requests per h2load run (300000), ROUNDS (3), INGEST=entries per bulk run (8000000),
#        UNIQUE=requests per raffle-bench single run (1000000; 0 skips 1b)
# Build a "before" binary with: git worktree add /tmp/before <commit> && (cd /tmp/before &&
#   swift build -c release --product raffled)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 BEFORE_RAFFLED AFTER_RAFFLED [MORE_RAFFLED...]" >&2; exit 2; }
bins=()
for bin in "$@"; do
  [ -x "$bin" ] || { echo "ab: $bin is not an executable" >&2; exit 2; }
  bins+=("$(realpath "$bin")")
done
N=${N:-300000}
ROUNDS=${ROUNDS:-3}
INGEST=${INGEST:-8000000}
UNIQUE=${UNIQUE:-1000000}
. Bench/scripts/lib.sh
need ab h2load:nghttp2-client h2o:h2o curl:curl
echo "ab: building IngestLoad and raffle-bench (release)..."
(cd Bench && swift build -c release --product IngestLoad >/dev/null && swift build -c release --product raffle-bench >/dev/null)

tmp=$(mktemp -d)
cleanup() { pkill -f -- "$tmp" 2>/dev/null || true; sleep 0.3; rm -rf "$tmp"; }
trap cleanup EXIT
h2o_conf "$tmp" 18090
python3 - "$tmp/one.bin" <<'PY'
import struct, sys
p = struct.pack('<QII', 1, 1, 0) + struct.pack('<QII', 42, 1, 0)
open(sys.argv[1], 'wb').write(b'RF' + struct.pack('<BBHHIQ', 1, 1, 0, 0, len(p), 1) + b'\0' * 4 + p)
PY

# start BIN PORT DIR: a raffled on one pinned core, waited for (bounded).
# taskset in front of the server itself (not a shell function) so $! is the server's pid.
server_pin=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then server_pin=(taskset -c 0); fi
start() {
  "${server_pin[@]}" "$1" --port "$2" --data "$3" --loops 1 --durability fsync --log-level warning --global-rate 0 \
    --anonymous-rate 1000000000 >"$3.log" 2>&1 &
  echo $! >"$3.pid"
  for _ in $(seq 100); do curl -s --http2-prior-knowledge "http://127.0.0.1:$2/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "ab: $1 did not start on port $2" >&2; cat "$3.log" >&2; exit 1
}
stop() { pkill -f -- "$1" 2>/dev/null || true; sleep 0.5; }
rate() { awk '/finished in/ {gsub(",", "", $4); print $4}'; }
# The server's CPU time so far (user + system), in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$(cat "$1.pid")/stat"; }
hz=$(getconf CLK_TCK)

pin 0 h2o -c "$tmp/h2o.conf" >"$tmp/h2o.log" 2>&1 &
post() { pin 1 h2load -c16 -m32 -t1 -n "$1" -d "$tmp/one.bin" -H "content-type: application/vnd.raffled.frames" "http://127.0.0.1:$2/v1/entries" 2>&1; }
for k in "${!bins[@]}"; do
  port=$((18100 + 10 * k))
  start "${bins[$k]}" "$port" "$tmp/s$k"
  curl -s -H "authorization: Bearer $(cat "$tmp/s$k/admin.key")" -X POST -d '{"title":"ab","durationSeconds":86400}' \
    "http://127.0.0.1:$port/v1/raffles" >/dev/null
  post 20000 "$port" >/dev/null  # warm-up
done
echo "single-entry durable POSTs (h2load -c16 -m32 -t1 -n $N, one body), req/s:"
for r in $(seq "$ROUNDS"); do
  h=$(pin 1 h2load -c16 -m32 -t1 -n "$N" http://127.0.0.1:18090/ok 2>&1 | rate)
  line=$(printf '  round %d: h2o %.0f' "$r" "$h")
  for k in "${!bins[@]}"; do
    t0=$(ticks "$tmp/s$k")
    got=$(post "$N" $((18100 + 10 * k)) | rate)
    t1=$(ticks "$tmp/s$k")
    line+=$(printf '  %s %.0f (%.2fx, %.2f µs CPU/req)' "$(basename "${bins[$k]}")" "$got" "$(echo "$got / $h" | bc -l)" \
      "$(echo "($t1 - $t0) * 1000000 / $hz / $N" | bc -l)")
  done
  echo "$line"
done
for k in "${!bins[@]}"; do stop "$tmp/s$k"; done

if [ "$UNIQUE" -gt 0 ]; then
  echo "single-entry durable POSTs from fresh users (raffle-bench single -c16 -m32, $UNIQUE requests) vs h2o (raffle-bench get), req/s:"
  # raffle-bench starts each raffled itself, through a wrapper that pins it to the server core.
  for k in "${!bins[@]}"; do
    printf '#!/usr/bin/env bash\nexec %s %s --loops 1 "$@" # %s\n' "${server_pin[*]}" "${bins[$k]}" "$tmp" >"$tmp/w$k"
    chmod +x "$tmp/w$k"
  done
  for r in $(seq "$ROUNDS"); do
    h=$(pin 1 Bench/.build/release/raffle-bench get --target 127.0.0.1:18090 --path /ok --requests "$UNIQUE" | sed -E 's/.*= ([0-9]+) req\/s.*/\1/')
    line=$(printf '  round %d: h2o %.0f' "$r" "$h")
    for k in "${!bins[@]}"; do
      pin 1 Bench/.build/release/raffle-bench single --raffled "$tmp/w$k" --server-arg=--global-rate=0 --server-arg=--anonymous-rate=1000000000 \
        --requests "$UNIQUE" --json "$tmp/u$k.json" >/dev/null 2>&1
      got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requestsPerSecond"])' "$tmp/u$k.json")
      line+=$(printf '  %s %.0f (%.2fx)' "$(basename "${bins[$k]}")" "$got" "$(echo "$got / $h" | bc -l)")
    done
    echo "$line"
  done
fi
stop "$tmp/h2o.conf"

echo "durable batched ingest (unique entries, batches of 4,000, 2 connections x 32 in flight, $INGEST entries), entries/s:"
for r in $(seq "$ROUNDS"); do
  disk=$(python3 Bench/scripts/disk-limit.py "$tmp" 3 2>&1 | awk '/1 MiB/ {print $(NF-1)}')
  line="  round $r: disk $disk"
  for bin in "${bins[@]}"; do
    rm -rf "$tmp/bulk"
    start "$bin" 18081 "$tmp/bulk"
    t0=$(ticks "$tmp/bulk")
    out=$(RAFFLE_ADMIN_KEY="$(cat "$tmp/bulk/admin.key")" pin 1 Bench/.build/release/IngestLoad 127.0.0.1 18081 2 32 4000 "$INGEST")
    t1=$(ticks "$tmp/bulk")
    got=$(echo "$out" | sed -E 's/.*= ([0-9]+) entries\/s.*/\1/')
    line+=$(printf '  %s %.0f (%.2fx, %.0f ns CPU/entry)' "$(basename "$bin")" "$got" "$(echo "$got / $disk" | bc -l)" \
      "$(echo "($t1 - $t0) * 1000000000 / $hz / $INGEST" | bc -l)")
    stop "$tmp/bulk"
  done
  echo "$line"
done
