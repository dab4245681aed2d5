#!/usr/bin/env bash
# raffled nodes on one PostgreSQL (--ledger postgres://…), in one run on this machine:
#   - PostgreSQL's own rate for the same work: pgbench running raffled's group-commit transaction
#     (BEGIN; Sources/RafflePostgres/Schema.swift `commitRound`: unnest of three arrays, FOR SHARE on
#     the raffle row, INSERT … ON CONFLICT DO NOTHING RETURNING; COMMIT) with ROWS entries each, for
#     1 to 4 clients — the yardstick;
#   - batched ingest (raffle-bench bulk, batches of 1,000) through 1, 2 and 3 raffled nodes sharing
#     one port (--reuse-port) and one PostgreSQL, and the local ledger's figure beside them;
#   - single-entry submissions at 10,000 users/s through one node on PostgreSQL (raffle-bench drop:
#     100,000 users arriving evenly within 10 s): p50/p99.
# PostgreSQL runs as a private cluster (scripts/pg-cluster), fsync on, on this machine's 2 cores with
# everything else: the figures are what one small box does, not a cluster's.
# Usage: Bench/scripts/postgres-scale.sh   (env: ENTRIES (default 2,000,000), ROWS (pgbench rows per
#        transaction, default 1000), SECONDS_PG (pgbench seconds, default 8), LOOPS (event loops per
#        node, default 1))
set -euo pipefail
cd "$(dirname "$0")/../.."
ENTRIES=${ENTRIES:-2000000}
ROWS=${ROWS:-1000}
SECONDS_PG=${SECONDS_PG:-8}
out="Bench/results/$(date -u +%Y-%m-%d)"
mkdir -p "$out"
scripts/setup --tests >/dev/null
echo "postgres-scale: building raffled and raffle-bench (release)..."
swift build -c release --product raffled >/dev/null
(cd Bench && swift build -c release --product raffle-bench >/dev/null)
bench=Bench/.build/release/raffle-bench
raffled=$PWD/.build/release/raffled
tmp=$(mktemp -d)
chmod 755 "$tmp"
cleanup() {
  pkill -f -- "--data $tmp" 2>/dev/null || true
  scripts/pg-cluster stop "$tmp/pg" >/dev/null 2>&1 || true
  sleep 0.3
  rm -rf "$tmp"
}
trap cleanup EXIT
url=$(scripts/pg-cluster start "$tmp/pg")
psql_() { psql -X -q -At "$url" "$@"; }
echo "postgres-scale: PostgreSQL at $url ($(psql_ -c 'SHOW server_version'), fsync $(psql_ -c 'SHOW fsync'))"

# --- PostgreSQL's own rate: raffled's statement through pgbench -----------------------------------
# Schema as raffled makes it (one raffled start creates it), one open raffle.
"$raffled" --port 0 --tcp-port=-1 --udp-port=-1 --data "$tmp/schema" --ledger "$url" --log-level warning >/dev/null 2>&1 &
for _ in $(seq 50); do psql_ -c "SELECT 1 FROM raffled.schema_version" 2>/dev/null | grep -q 1 && break; sleep 0.2; done
pkill -f -- "--data $tmp/schema" || true
psql_ -c "INSERT INTO raffled.raffles (id, title, opens_at, closes_at, winners, max_tickets, seed) VALUES (1000000, 'pgbench', 0, 9000000000000, 1, 1, '00') ON CONFLICT DO NOTHING"
statement=$(sed -n '/static let commitRound = """/,/^        """/p' Sources/RafflePostgres/Schema.swift | sed '1d;$d')
# pgbench has no arrays: build them from a random base (fresh users every transaction).
# The same transaction shape as raffled's rounds: BEGIN, the statement, COMMIT (raffled counts the
# outcomes only once COMMIT has answered).
cat >"$tmp/round.sql" <<SQL
\set base random(1, 1000000000000)
BEGIN;
$(echo "$statement" | sed \
  -e "s/\$1::int8\[\]/array_fill(1000000::int8, ARRAY[$ROWS])/" \
  -e "s/\$2::int8\[\]/ARRAY(SELECT (:base * $ROWS + g)::int8 FROM generate_series(1, $ROWS) g)/" \
  -e "s/\$3::int8\[\]/array_fill(1::int8, ARRAY[$ROWS])/" \
  -e "s/\$4::int8\[\]/ARRAY[1000000::int8]/g" \
  -e "s/\$5/1000/g");
COMMIT;
SQL
pg_rate() {
  # rows/s for $1 clients
  local tps
  tps=$(pgbench -n -f "$tmp/round.sql" -c "$1" -j "$(( $1 < 2 ? 1 : 2 ))" -T "$SECONDS_PG" "$url" 2>/dev/null | awk '/^tps/ {print $3; exit}')
  awk -v t="$tps" -v r="$ROWS" 'BEGIN {printf "%d", t * r}'
}
echo "postgres-scale: pgbench, raffled's statement, $ROWS rows per transaction, ${SECONDS_PG}s each:" | tee "$out/postgres-pgbench.txt"
best=0
for c in 1 2 4; do
  r=$(pg_rate "$c")
  echo "  $c clients: $r rows/s" | tee -a "$out/postgres-pgbench.txt"
  if [ "$r" -gt "$best" ]; then best=$r; fi
done
echo "  best: $best rows/s" | tee -a "$out/postgres-pgbench.txt"

# --- raffled nodes on PostgreSQL: batched ingest ----------------------------------------------------
key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '{"keys":[{"name":"bench","key":"%s"}]}\n' "$key" >"$tmp/keys.json"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
common=(--port "$port" --tcp-port=-1 --udp-port=-1 --ledger "$url" --reuse-port --admin-keys "$tmp/keys.json"
  --log-level warning --global-rate 0 --anonymous-rate 1000000000 --loops "${LOOPS:-1}")
results=()
for n in 1 2 3; do
  for i in $(seq "$n"); do "$raffled" "${common[@]}" --data "$tmp/node$n-$i" >"$tmp/node$n-$i.log" 2>&1 & done
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  sleep 0.5
  echo "postgres-scale: bulk through $n node(s)..."
  $bench bulk --target "127.0.0.1:$port" --admin-key "$key" --partners 8 --batch 1000 --window 8 --entries "$ENTRIES" \
    --json "$out/postgres-bulk-$n.json" | tee "$out/postgres-bulk-$n.txt"
  results+=("$n node(s): $(awk '/^rate/ {print $2}' "$out/postgres-bulk-$n.txt") entries/s")
  pkill -f -- "--data $tmp/node$n-" || true
  sleep 1
done

# --- single entries at 10,000 users/s through one node ---------------------------------------------
"$raffled" "${common[@]}" --data "$tmp/single" >"$tmp/single.log" 2>&1 &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
# The drop scenario: 100,000 users arriving evenly within 10 s, each one single-entry request.
$bench drop --target "127.0.0.1:$port" --admin-key "$key" --users 100000 --within 10 --connections 64 \
  --json "$out/postgres-single.json" | tee "$out/postgres-single.txt"
pkill -f -- "--data $tmp/single" || true

# --- the local ledger, same bulk shape -------------------------------------------------------------
echo "postgres-scale: bulk on the local ledger (one node, fsync)..."
$bench bulk --raffled "$raffled" --server-arg=--global-rate=0 --server-arg=--anonymous-rate=1000000000 --server-arg=--loops=1 \
  --partners 8 --batch 1000 --window 8 --entries "$ENTRIES" --json "$out/local-bulk.json" | tee "$out/local-bulk.txt"

{
  echo "postgres-scale summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores):"
  echo "  PostgreSQL's own rate (pgbench, raffled's statement, $ROWS rows/transaction, best of 1/2/4 clients): $best rows/s"
  for r in "${results[@]}"; do echo "  bulk, $r"; done
  echo "  local ledger bulk: $(awk '/^rate/ {print $2}' "$out/local-bulk.txt") entries/s"
  echo "  single entries at 10,000 users/s through one node: $(grep -m1 '^latency p50' "$out/postgres-single.txt")"
} | tee "$out/postgres-summary.txt"
