#!/usr/bin/env bash
# Single-entry POSTs to one raffled over HTTP/2 and HTTP/1.1, in cleartext and over TLS: the same
# server, body and client (h2load), so the rows differ only in the protocol.
# Server pinned to core 0, h2load to core 1; median of ROUNDS alternating rounds of N requests.
# Usage: Bench/scripts/http-versions.sh        (from the repository root; N=300000 ROUNDS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${N:-300000}"
ROUNDS="${ROUNDS:-3}"
command -v h2load >/dev/null || { echo "bench: h2load is needed (apt-get install -y nghttp2-client)" >&2; exit 1; }
echo "bench: building raffled (release)..."
swift build -c release --product raffled >/dev/null
pin() { if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
tmp=$(mktemp -d)
cleanup() { pkill -f -- "$tmp" 2>/dev/null || true; sleep 0.3; rm -rf "$tmp"; }
trap cleanup EXIT
scripts/dev-cert "$tmp/certs" >/dev/null
for port in 18380 18390; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "bench: port $port is busy; stop what listens there" >&2; exit 1; fi
done
common=(--loops 1 --durability fsync --log-level warning --global-rate 0 --anonymous-rate 1000000000 --tcp-port=-1 --udp-port=-1)
pin 0 .build/release/raffled --port 18380 --data "$tmp/plain" "${common[@]}" >"$tmp/plain.log" 2>&1 &
pin 0 .build/release/raffled --port 18390 --data "$tmp/tls" "${common[@]}" \
  --tls-cert "$tmp/certs/server.pem" --tls-key "$tmp/certs/server.key" >"$tmp/tls.log" 2>&1 &
for _ in $(seq 100); do
  curl -s http://127.0.0.1:18380/healthz >/dev/null && curl -s --cacert "$tmp/certs/ca.pem" https://127.0.0.1:18390/healthz >/dev/null && break
  sleep 0.1
done
curl -s -H "authorization: Bearer $(cat "$tmp/plain/admin.key")" -d '{"title":"bench","durationSeconds":86400}' http://127.0.0.1:18380/v1/raffles >/dev/null
curl -s --cacert "$tmp/certs/ca.pem" -H "authorization: Bearer $(cat "$tmp/tls/admin.key")" \
  -d '{"title":"bench","durationSeconds":86400}' https://127.0.0.1:18390/v1/raffles >/dev/null
python3 - "$tmp/one.bin" <<'PY'
import struct, sys
p = struct.pack('<QII', 1, 1, 0) + struct.pack('<QII', 42, 1, 0)
open(sys.argv[1], 'wb').write(b'RF' + struct.pack('<BBHHIQ', 1, 1, 0, 0, len(p), 1) + b'\0' * 4 + p)
PY
rate() { awk '/finished in/ {gsub(",", "", $4); print $4}'; }
run() { pin 1 h2load "$@" -c16 -m32 -t1 -n "$N" -d "$tmp/one.bin" -H "content-type: application/vnd.raffled.frames" 2>&1 | rate; }
names=("HTTP/2 (h2c)" "HTTP/1.1" "HTTP/2 over TLS" "HTTP/1.1 over TLS")
declare -a r0 r1 r2 r3
for r in $(seq "$ROUNDS"); do
  a=$(run http://127.0.0.1:18380/v1/entries)
  b=$(run --h1 http://127.0.0.1:18380/v1/entries)
  c=$(run https://127.0.0.1:18390/v1/entries)
  d=$(run --h1 https://127.0.0.1:18390/v1/entries)
  echo "bench: round $r/$ROUNDS: h2c $a, http/1.1 $b, h2+tls $c, http/1.1+tls $d req/s"
  r0+=("$a"); r1+=("$b"); r2+=("$c"); r3+=("$d")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m=("$(median "${r0[@]}")" "$(median "${r1[@]}")" "$(median "${r2[@]}")" "$(median "${r3[@]}")")
echo
echo "single-entry POST /v1/entries (h2load -c16 -m32 -t1 -n $N; HTTP/1.1: 32 pipelined per connection),"
echo "raffled --loops 1 --durability fsync pinned to core 0, median of $ROUNDS rounds:"
for i in 0 1 2 3; do
  printf '  %-20s %10.0f req/s   (%.2f of HTTP/2)\n' "${names[$i]}" "${m[$i]}" "$(echo "${m[$i]} / ${m[0]}" | bc -l)"
done
echo "  note: h2load re-sends one body: past the first request every entry is 'already entered'."
