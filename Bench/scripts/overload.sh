#!/usr/bin/env bash
# A 20x overload, two ways, in one run (issue #15; the comparison the admission issue asked for):
# N users arrive within T seconds through RaffleClient while the server admits R entries/s — a
# single-entry request costs 2 (1 entry + the request cost), so R/2 requests/s: with the defaults
# (100,000 users within 2 s, R = 5,000) arrivals are 20 x what is admitted — (a) with raffled's waiting
# room (each throttled batch gets its own slot of the admission schedule as retry-after) and (b) with
# a flat retry-after of 1 s for everyone plus the clients' jitter (up to one more second, full share),
# as most rate limiters do. Reports attempts per admitted entry and the most attempts any one user
# needed (raffle-bench drop --count-attempts).
# raffled pinned to core 0, the generator to core 1; ROUNDS alternating rounds.
#   swift build -c release --product raffled && (cd Bench && swift build -c release --product raffle-bench)
#   Bench/scripts/overload.sh            (env: RATE=5000 USERS=100000 WITHIN=2 ROUNDS=2)
set -euo pipefail
cd "$(dirname "$0")/../.."
. Bench/scripts/lib.sh
RATE=${RATE:-5000}; USERS=${USERS:-100000}; WITHIN=${WITHIN:-2}; ROUNDS=${ROUNDS:-2}
bench=Bench/.build/release/raffle-bench
raffled=$PWD/.build/release/raffled
[ -x "$raffled" ] && [ -x "$bench" ] || { echo "overload: build raffled and raffle-bench first (see the header)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '#!/usr/bin/env bash\nexec %s %s --loops 1 "$@"\n' "$( [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null && echo "taskset -c 0")" "$raffled" > "$tmp/raffled"
chmod +x "$tmp/raffled"
echo "overload: $USERS users within ${WITHIN}s ($((USERS / ${WITHIN%.*})) arrivals/s) against a global rate of $RATE entries/s"
common=(drop --raffled "$tmp/raffled" --users "$USERS" --within "$WITHIN" --count-attempts
  --server-arg=--global-rate="$RATE" --server-arg=--anonymous-rate=1000000000)
for round in $(seq "$ROUNDS"); do
  echo "== round $round: waiting room (retry-after = the batch's own slot; client jitter: default, 10% up to 100 ms)"
  pin 1 "$bench" "${common[@]}" 2>/dev/null | grep -E "^rate|latency p|attempts|lost|note"
  echo "== round $round: flat retry-after 1000 ms for everyone + client jitter up to 100% (1 s)"
  pin 1 "$bench" "${common[@]}" --server-arg=--flat-retry-after-ms=1000 --retry-jitter-share 1 --max-retry-jitter-ms 1000 2>/dev/null |
    grep -E "^rate|latency p|attempts|lost|note"
done
