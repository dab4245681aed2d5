#!/usr/bin/env bash
# Server benchmarks, each side by side with its yardstick, on this machine:
#   1. single-entry submissions: raffled (POST, durability fsync) vs h2o serving a 2-byte static file
#      (GET), both on one pinned core, same h2load client on the other core;
#   2. durable batched ingest of unique entries (IngestLoad) vs the disk's own sequential
#      write+fdatasync limit (disk-limit.py), and the dedupe index's bytes per entry.
# Throttling is set out of the way (--global-rate 0, a huge anonymous rate) so these measure capacity;
# the admission decision still runs on every batch.
# Usage: Bench/scripts/server-bench.sh   (env: N=requests per h2load run, ROUNDS=alternating rounds)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
INGEST=${INGEST:-8000000}

. Bench/scripts/lib.sh
need bench h2load:nghttp2-client h2o:h2o curl:curl
echo "bench: building raffled and IngestLoad (release)..."
swift build -c release --product raffled >/dev/null
(cd Bench && swift build -c release --product IngestLoad >/dev/null)

server_core=0; client_core=1
tmp=$(mktemp -d)
pids=()
# Every process started here has $tmp on its command line: kill by that, not by pid (h2o forks).
cleanup() { pkill -f -- "$tmp" 2>/dev/null || true; sleep 0.3; rm -rf "$tmp"; }
trap cleanup EXIT

h2o_conf "$tmp" 18090
for port in 18080 18081 18090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "bench: port $port is busy; stop what listens there" >&2; exit 1; fi
done
pin $server_core h2o -c "$tmp/h2o.conf" >"$tmp/h2o.log" 2>&1 & pids+=($!)
pin $server_core .build/release/raffled --port 18080 --data "$tmp/data" --loops 1 --durability fsync --log-level warning --global-rate 0 --anonymous-rate 1000000000 >"$tmp/raffled.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do curl -s --http2-prior-knowledge http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.1; done
curl -s -H "authorization: Bearer $(cat "$tmp/data/admin.key")" -X POST -d '{"title":"bench","durationSeconds":86400}' http://127.0.0.1:18080/v1/raffles >/dev/null
python3 - "$tmp/one.bin" <<'PY'
import struct, sys
p = struct.pack('<QII', 1, 1, 0) + struct.pack('<QII', 42, 1, 0)
open(sys.argv[1], 'wb').write(b'RF' + struct.pack('<BBHHIQ', 1, 1, 0, 0, len(p), 1) + b'\0' * 4 + p)
PY

rate() { awk '/finished in/ {gsub(",", "", $4); print $4}'; }
h2o_rates=(); raffled_rates=()
for r in $(seq "$ROUNDS"); do
  h=$(pin $client_core h2load -c16 -m32 -t1 -n "$N" http://127.0.0.1:18090/ok 2>&1 | rate)
  s=$(pin $client_core h2load -c16 -m32 -t1 -n "$N" -d "$tmp/one.bin" -H "content-type: application/vnd.raffled.frames" http://127.0.0.1:18080/v1/entries 2>&1 | rate)
  echo "bench: round $r/$ROUNDS: h2o ${h} req/s, raffled ${s} req/s"
  h2o_rates+=("$h"); raffled_rates+=("$s")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
H=$(median "${h2o_rates[@]}"); S=$(median "${raffled_rates[@]}")
echo
echo "single-entry submissions (h2load -c16 -m32 -t1 -n $N, server on 1 pinned core, durability fsync):"
printf '  h2o static 2-byte file  %10.0f req/s\n' "$H"
printf '  raffled POST 1 entry    %10.0f req/s\n' "$S"
echo "  (HTTP/1.1 and TLS beside HTTP/2: Bench/scripts/http-versions.sh)"
printf '  ratio raffled / h2o     %10.2f   (target >= 0.50)\n' "$(echo "$S / $H" | bc -l)"
echo "  note: h2load re-sends one body, so after the first request every entry is 'already entered':"
echo "  this measures the request path up to the dedupe check, not the log."
pkill -f -- "$tmp/h2o.conf" 2>/dev/null || true

echo
disk=$(python3 Bench/scripts/disk-limit.py "$tmp" 3 | tee /dev/stderr | awk '/1 MiB/ {print $(NF-1)}')
pkill -f -- "$tmp/data" 2>/dev/null || true; sleep 0.5
rm -rf "$tmp/data2"
pin $server_core .build/release/raffled --port 18081 --data "$tmp/data2" --loops 1 --durability fsync --log-level warning --global-rate 0 --anonymous-rate 1000000000 >"$tmp/raffled2.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do curl -s --http2-prior-knowledge http://127.0.0.1:18081/healthz >/dev/null && break; sleep 0.1; done
line=$(RAFFLE_ADMIN_KEY="$(cat "$tmp/data2/admin.key")" pin $client_core Bench/.build/release/IngestLoad 127.0.0.1 18081 2 32 4000 "$INGEST")
echo "$line"
ingest=$(echo "$line" | sed -E 's/.*= ([0-9]+) entries\/s.*/\1/')
stats=$(curl -s -H "authorization: Bearer $(cat "$tmp/data2/admin.key")" http://127.0.0.1:18081/v1/stats)
per=$(echo "$stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("%.1f" % s["indexBytesPerEntry"])')
fsyncs=$(curl -s --http2-prior-knowledge http://127.0.0.1:18081/metrics | awk '/^raffled_log_entries_per_fsync/ {print $2}')
echo
echo "durable batched ingest (unique entries, batches of 4,000, 2 connections x 32 in flight, durability fsync):"
printf '  raffled                 %10.0f entries/s  (%.0f entries per fdatasync)\n' "$ingest" "$fsyncs"
printf '  disk limit (1 MiB/sync) %10.0f entries/s\n' "$disk"
printf '  ratio raffled / disk    %10.2f   (target >= 0.30)\n' "$(echo "$ingest / $disk" | bc -l)"
printf '  index bytes per entry   %10s   (target <= 24)\n' "$per"
