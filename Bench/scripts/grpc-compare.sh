#!/usr/bin/env bash
# raffled vs the same ledger behind grpc-swift-2 + protobuf (Sources/GRPCPeer), at batch sizes 1 and
# 1,000, with the same load generator (h2load -c16 -m32 -t1) against each, server on one pinned core,
# durability fsync for both. h2load repeats one body, so after the first request every entry is
# "already entered" on both servers: this compares the request paths up to the dedupe check.
# Usage: Bench/scripts/grpc-compare.sh   (env: N=requests per run)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-200000}
out="Bench/results/$(date -u +%Y-%m-%d)"
mkdir -p "$out"
. Bench/scripts/lib.sh
need grpc-compare h2load:nghttp2-client curl:curl
echo "grpc-compare: building raffled and grpc-peer (release; the first gRPC build takes several minutes)..."
swift build -c release --product raffled >/dev/null
(cd Bench && swift build -c release --product grpc-peer >/dev/null)
tmp=$(mktemp -d)
cleanup() { pkill -f -- "$tmp" 2>/dev/null || true; sleep 0.3; rm -rf "$tmp"; }
trap cleanup EXIT

pin 0 .build/release/raffled --port 18180 --tcp-port=-1 --udp-port=-1 --data "$tmp/raffled" --loops 1 --log-level warning --global-rate 0 --anonymous-rate 1000000000 >"$tmp/raffled.log" 2>&1 &
pin 0 Bench/.build/release/grpc-peer --port 18181 --data "$tmp/grpc" >"$tmp/grpc.log" 2>&1 &
sleep 2
curl -s -H "authorization: Bearer $(cat "$tmp/raffled/admin.key")" -X POST -d '{"title":"bench","durationSeconds":86400}' http://127.0.0.1:18180/v1/raffles >/dev/null
python3 - "$tmp" <<'PY'
import struct, sys
d = sys.argv[1]
def varint(n):
    out = b''
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def grpc(msg): return b'\0' + struct.pack('>I', len(msg)) + msg
for n in (1, 1000):
    entries = [(1000 + i, 1) for i in range(n)]
    p = struct.pack('<QII', 1, n, 0) + b''.join(struct.pack('<QII', u, t, 0) for u, t in entries)
    open(f'{d}/raffled-{n}.bin', 'wb').write(b'RF' + struct.pack('<BBHHIQ', 1, 1, 0, 0, len(p), 1) + b'\0' * 4 + p)
    body = b'\x08' + varint(1)
    for u, t in entries:
        e = b'\x08' + varint(u) + b'\x10' + varint(t)
        body += b'\x12' + varint(len(e)) + e
    open(f'{d}/grpc-{n}.bin', 'wb').write(grpc(body))
create = b'\x0a' + varint(5) + b'bench' + b'\x10' + varint(86400)
open(f'{d}/create.bin', 'wb').write(grpc(create))
PY
h2load -n1 -c1 -d "$tmp/create.bin" -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:18181/raffle.v1.Raffle/CreateRaffle >/dev/null
rate() { awk '/finished in/ {gsub(",", "", $4); print $4}'; }
ok() { awk '/^requests:/ {print $8, "succeeded,", $10, "failed"}'; }
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ): raffled vs grpc-swift-2 + protobuf, same ledger, durability fsync, h2load -c16 -m32 -t1 -n $N"
  for n in 1 1000; do
    r=$(pin 1 h2load -c16 -m32 -t1 -n "$N" -d "$tmp/raffled-$n.bin" -H 'content-type: application/vnd.raffled.frames' http://127.0.0.1:18180/v1/entries 2>&1)
    g=$(pin 1 h2load -c16 -m32 -t1 -n "$N" -d "$tmp/grpc-$n.bin" -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:18181/raffle.v1.Raffle/Enter 2>&1)
    R=$(echo "$r" | rate); G=$(echo "$g" | rate)
    printf 'batch %4d: raffled %9.0f req/s (%s), grpc-peer %9.0f req/s (%s), ratio %.1fx   (target >= 5x at batch 1)\n' \
      "$n" "$R" "$(echo "$r" | ok)" "$G" "$(echo "$g" | ok)" "$(echo "$R / $G" | bc -l)"
  done
} | tee "$out/grpc-compare.txt"
