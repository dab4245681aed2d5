#!/usr/bin/env bash
# The published comparison, in one run on this machine: raffle-bench's scenarios against a raffled it
# starts (durability fsync), each beside its yardstick, and the ratios the README and RESULTS.md quote.
#   - calibration: raffle-bench's GET mode vs h2load, both against h2o (must be within 10%);
#   - single-entry durable submissions (raffle-bench single) vs h2o's static-file rate (h2load);
#   - batched durable ingest (raffle-bench bulk) vs the disk's write+fdatasync limit (disk-limit.py);
#   - a drop spike (raffle-bench drop), mobile traffic (raffle-bench mobile), and raw TCP / UDP runs;
#   - idle RSS of raffled.
# Servers are pinned to core 0 and load generators to core 1 (taskset) where there are 2 cores.
# Outputs (JSON + SVG per scenario, and the log) go to Bench/results/<date>/.
# Usage: Bench/scripts/compare.sh    (env: QUICK=1 for a short run; USERS, WITHIN for the drop)
set -euo pipefail
cd "$(dirname "$0")/../.."
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then N=200000; USERS=${USERS:-100000}; WITHIN=${WITHIN:-10}; BULK=1000000; MOBILE_S=5; else
  N=1000000; USERS=${USERS:-1000000}; WITHIN=${WITHIN:-60}; BULK=8000000; MOBILE_S=10; fi
out="Bench/results/$(date -u +%Y-%m-%d)"
mkdir -p "$out"
# A trap in the bench (issue #18: SIGILL seen twice, not reproduced since) must leave evidence: a
# core file in the current directory (where core_pattern allows) and the runtime's backtrace.
ulimit -c unlimited 2>/dev/null || true
export SWIFT_BACKTRACE=${SWIFT_BACKTRACE:-enable=yes,interactive=no,symbolicate=full}
. Bench/scripts/lib.sh
need compare h2load:nghttp2-client h2o:h2o
echo "compare: building raffled and raffle-bench (release)..."
swift build -c release --product raffled >/dev/null
(cd Bench && swift build -c release --product raffle-bench >/dev/null)
bench=Bench/.build/release/raffle-bench
raffled=$PWD/.build/release/raffled
server_core=0; client_core=1
tmp=$(mktemp -d)
cleanup() { pkill -f -- "$tmp" 2>/dev/null || true; sleep 0.3; rm -rf "$tmp"; }
trap cleanup EXIT
# A raffled for the bench to use, pinned to the server core (the bench starts it through this wrapper).
cat > "$tmp/raffled" <<SH
#!/usr/bin/env bash
exec taskset -c $server_core $raffled --loops 1 "\$@" # $tmp
SH
chmod +x "$tmp/raffled"
capacity=(--server-arg=--global-rate=0 --server-arg=--anonymous-rate=1000000000)

h2o_conf "$tmp" 18090
pin $server_core h2o -c "$tmp/h2o.conf" >"$tmp/h2o.log" 2>&1 &
sleep 1
rate() { awk '/finished in/ {gsub(",", "", $4); print $4}'; }

echo "== calibration: raffle-bench get vs h2load, against h2o (1 core each)"
pin $client_core $bench get --target 127.0.0.1:18090 --path /ok --requests "$N" --compare | tee "$out/calibration.txt"
H=$(pin $client_core h2load -c16 -m32 -t1 -n "$N" http://127.0.0.1:18090/ok 2>&1 | rate)
echo "h2o static 2-byte file, h2load -c16 -m32: $H req/s" | tee -a "$out/calibration.txt"
pkill -f -- "$tmp/h2o.conf" || true

echo "== single-entry durable submissions (raffle-bench single)"
pin $client_core $bench single --raffled "$tmp/raffled" "${capacity[@]}" --requests "$N" --json "$out/single.json" --svg "$out/single.svg" | tee "$out/single.txt"
S=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requestsPerSecond"])' "$out/single.json")

echo "== batched durable ingest (raffle-bench bulk, 4 partners, batches of 1,000)"
pin $client_core $bench bulk --raffled "$tmp/raffled" "${capacity[@]}" --partners 4 --batch 1000 --window 8 --entries "$BULK" --json "$out/bulk.json" --svg "$out/bulk.svg" | tee "$out/bulk.txt"
B=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["entriesPerSecond"])' "$out/bulk.json")
disk=$(python3 Bench/scripts/disk-limit.py "$tmp" 3 | tee "$out/disk.txt" | awk '/1 MiB/ {print $(NF-1)}')

echo "== drop spike: $USERS users within $WITHIN s (raffle-bench drop, default throttling)"
pin $client_core $bench drop --raffled "$tmp/raffled" --users "$USERS" --within "$WITHIN" --json "$out/drop.json" --svg "$out/drop.svg" | tee "$out/drop.txt"

echo "== drop beyond capacity: 100,000 users within 2 s against a server admitting 10,000 entries/s (waiting room)"
pin $client_core $bench drop --raffled "$tmp/raffled" --server-arg=--global-rate=10000 --server-arg=--global-burst=10000 --users 100000 --within 2 --json "$out/drop-overload.json" --svg "$out/drop-overload.svg" | tee "$out/drop-overload.txt"

echo "== mobile: 10,000 requests/s of 1-10 entries, open loop"
pin $client_core $bench mobile --raffled "$tmp/raffled" "${capacity[@]}" --rate 10000 --seconds "$MOBILE_S" --json "$out/mobile.json" --svg "$out/mobile.svg" | tee "$out/mobile.txt"

for t in tcp udp; do
  echo "== mobile over $t"
  pin $client_core $bench mobile --transport $t --raffled "$tmp/raffled" "${capacity[@]}" --rate 10000 --seconds "$MOBILE_S" --json "$out/mobile-$t.json" | tee "$out/mobile-$t.txt"
done
echo "== bulk over raw TCP"
pin $client_core $bench bulk --transport tcp --raffled "$tmp/raffled" "${capacity[@]}" --partners 4 --batch 1000 --entries "$BULK" --json "$out/bulk-tcp.json" | tee "$out/bulk-tcp.txt"

echo "== idle RSS"
pin $server_core "$raffled" --port 18085 --data "$tmp/idle" --loops 1 --log-level warning >/dev/null 2>&1 &
sleep 3
rss=$(awk '/VmRSS/ {print $2}' /proc/$(pgrep -f -- "$tmp/idle" | head -1)/status)
pkill -f -- "$tmp/idle" || true

{
  echo
  echo "ratios ($(date -u +%Y-%m-%dT%H:%MZ), durability fsync, server on 1 pinned core):"
  printf '  raffled single-entry req/s / h2o static req/s   %8.0f / %8.0f = %.2f  (target >= 0.5)\n' "$S" "$H" "$(echo "$S / $H" | bc -l)"
  printf '  raffled batched entries/s / disk-limit entries/s %8.0f / %8.0f = %.2f  (target >= 0.3)\n' "$B" "$disk" "$(echo "$B / $disk" | bc -l)"
  printf '  idle RSS                                        %8d KiB  (target <= 64 MiB)\n' "$rss"
  printf '  index bytes per entry (after bulk)              %8s      (target <= 24)\n' "$(python3 -c 'import json,sys; print("%.1f" % json.load(open(sys.argv[1])).get("indexBytesPerEntry", 0))' "$out/bulk.json")"
} | tee "$out/ratios.txt"
