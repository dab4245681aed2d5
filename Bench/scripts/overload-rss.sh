#!/usr/bin/env bash
# Memory under overload: raffled with a server-wide limit of RATE entries/s (default 200,000) is
# offered what IngestLoad can send (unique entries, 4 connections x 16 in flight; about 10x the limit
# here), throttles the excess, and its resident memory is sampled throughout. Reports idle RSS, peak
# RSS, and how many entries were admitted vs throttled.
# Usage: Bench/scripts/overload-rss.sh [RATE] [ENTRIES]
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=${1:-200000}
ENTRIES=${2:-4000000}
swift build -c release --product raffled >/dev/null
(cd Bench && swift build -c release --product IngestLoad >/dev/null)
tmp=$(mktemp -d)
cleanup() { pkill -f -- "$tmp" 2>/dev/null || true; sleep 0.3; rm -rf "$tmp"; }
trap cleanup EXIT
.build/release/raffled --port 18082 --data "$tmp/data" --loops 1 --log-level warning \
  --global-rate "$RATE" --global-burst "$RATE" --anonymous-rate 1000000000 >"$tmp/raffled.log" 2>&1 &
pid=$!
for _ in $(seq 50); do curl -s --http2-prior-knowledge http://127.0.0.1:18082/healthz >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
idle=$(rss)
peak=$idle
( while kill -0 $pid 2>/dev/null; do r=$(rss 2>/dev/null || echo 0); echo "$r"; sleep 0.05; done ) >"$tmp/rss.txt" &
sampler=$!
start=$(date +%s.%N)
line=$(Bench/.build/release/IngestLoad 127.0.0.1 18082 4 16 1000 "$ENTRIES" || true)
end=$(date +%s.%N)
kill $sampler 2>/dev/null || true
peak=$(sort -n "$tmp/rss.txt" | tail -1)
metrics=$(curl -s --http2-prior-knowledge http://127.0.0.1:18082/metrics)
admitted=$(echo "$metrics" | awk -F' ' '/^raffled_entries_total\{outcome="accepted"\}/ {print $2}')
throttled=$(echo "$metrics" | awk '/^raffled_throttled_total/ {s+=$2} END {print s}')
secs=$(echo "$end - $start" | bc -l)
echo "$line"
printf 'overload: limit %d entries/s, offered %.0f entries/s (%.1fx), admitted %s entries, throttled %s batches\n' \
  "$RATE" "$(echo "$ENTRIES / $secs" | bc -l)" "$(echo "$ENTRIES / $secs / $RATE" | bc -l)" "$admitted" "$throttled"
printf 'overload: RSS idle %d KiB, peak %d KiB during the run\n' "$idle" "$peak"
