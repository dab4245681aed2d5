#!/usr/bin/env bash
# Single-entry POSTs to one raffled over HTTP/2 and HTTP/1.1, in cleartext and over TLS: the same
# server, body and client (h2load), so the rows differ only in the protocol; and h2o serving a static
# file over HTTP/1.1 with the same client settings, as the HTTP/1.1 yardstick (when h2o is installed).
# HTTP/2: 16 connections x 32 streams. HTTP/1.1: 128 connections, one request at a time each (h2load
# does not pipeline requests that carry a body, so -m32 would measure the same thing).
# Server pinned to core 0, h2load to core 1; median of ROUNDS alternating rounds of N requests.
# Usage: Bench/scripts/http-versions.sh        (from the repository root; N=200000 ROUNDS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${N:-200000}"
ROUNDS="${ROUNDS:-3}"
. Bench/scripts/lib.sh
need bench h2load:nghttp2-client curl:curl
echo "bench: building raffled (release)..."
swift build -c release --product raffled >/dev/null
tmp=$(mktemp -d)
cleanup() { pkill -f -- "$tmp" 2>/dev/null || true; sleep 0.3; rm -rf "$tmp"; }
trap cleanup EXIT
scripts/dev-cert "$tmp/certs" >/dev/null
for port in 18380 18390 18391; do
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
h2o_up=0
if command -v h2o >/dev/null; then
  h2o_conf "$tmp" 18391
  pin 0 h2o -c "$tmp/h2o.conf" >"$tmp/h2o.log" 2>&1 &
  for _ in $(seq 50); do curl -s http://127.0.0.1:18391/ok >/dev/null && { h2o_up=1; break; }; sleep 0.1; done
fi
python3 - "$tmp/one.bin" <<'PY'
import struct, sys
p = struct.pack('<QII', 1, 1, 0) + struct.pack('<QII', 42, 1, 0)
open(sys.argv[1], 'wb').write(b'RF' + struct.pack('<BBHHIQ', 1, 1, 0, 0, len(p), 1) + b'\0' * 4 + p)
PY
rate() { awk '/finished in/ {gsub(",", "", $4); print $4}'; }
post=(-t1 -n "$N" -d "$tmp/one.bin" -H "content-type: application/vnd.raffled.frames")
h2() { pin 1 h2load -c16 -m32 "${post[@]}" "$1" 2>&1 | rate; }
h1() { pin 1 h2load --h1 -c128 -m1 "${post[@]}" "$1" 2>&1 | rate; }
names=("raffled HTTP/2 (h2c)" "raffled HTTP/1.1" "raffled HTTP/2 + TLS" "raffled HTTP/1.1 + TLS" "h2o HTTP/1.1 static")
declare -a r0 r1 r2 r3 r4
for r in $(seq "$ROUNDS"); do
  a=$(h2 http://127.0.0.1:18380/v1/entries)
  b=$(h1 http://127.0.0.1:18380/v1/entries)
  c=$(h2 https://127.0.0.1:18390/v1/entries)
  d=$(h1 https://127.0.0.1:18390/v1/entries)
  e=0
  if [ "$h2o_up" = 1 ]; then e=$(pin 1 h2load --h1 -c128 -m1 -t1 -n "$N" http://127.0.0.1:18391/ok 2>&1 | rate); fi
  echo "bench: round $r/$ROUNDS: h2c $a, http/1.1 $b, h2+tls $c, http/1.1+tls $d, h2o http/1.1 $e req/s"
  r0+=("$a"); r1+=("$b"); r2+=("$c"); r3+=("$d"); r4+=("$e")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m=("$(median "${r0[@]}")" "$(median "${r1[@]}")" "$(median "${r2[@]}")" "$(median "${r3[@]}")" "$(median "${r4[@]}")")
echo
echo "single-entry POST /v1/entries, raffled --loops 1 --durability fsync pinned to core 0, median of $ROUNDS rounds"
echo "(HTTP/2: h2load -c16 -m32; HTTP/1.1: h2load --h1 -c128 -m1; -t1 -n $N):"
for i in 0 1 2 3 4; do
  [ "$i" = 4 ] && [ "$h2o_up" != 1 ] && continue
  printf '  %-24s %10.0f req/s\n' "${names[$i]}" "${m[$i]}"
done
printf '  HTTP/1.1 / HTTP/2        %10.2f\n' "$(echo "${m[1]} / ${m[0]}" | bc -l)"
if [ "$h2o_up" = 1 ]; then printf '  raffled / h2o, HTTP/1.1  %10.2f\n' "$(echo "${m[1]} / ${m[4]}" | bc -l)"; fi
echo "  note: h2load re-sends one body: past the first request every entry is 'already entered'."
