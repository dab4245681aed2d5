#!/usr/bin/env bash
# --loops 1 → 2 on this 2-core machine (issue #15): raffled with one event loop pinned to core 0,
# then with two loops on cores 0-1, the same generator (raffle-bench, pinned to core 1) for both, in
# alternation. With two loops the second shares core 1 with the generator: the 2-loop figure is a
# floor, not what a second free core gives (see docs/SCALING.md for the 16-core plan).
#   swift build -c release --product raffled && (cd Bench && swift build -c release --product raffle-bench)
#   Bench/scripts/loops-scaling.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-2}
bench=Bench/.build/release/raffle-bench
raffled=$PWD/.build/release/raffled
[ -x "$raffled" ] && [ -x "$bench" ] || { echo "build raffled and raffle-bench first (see the header)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '#!/usr/bin/env bash\nexec taskset -c 0 %s --loops 1 "$@"\n' "$raffled" > "$tmp/loops1"
printf '#!/usr/bin/env bash\nexec taskset -c 0,1 %s --loops 2 "$@"\n' "$raffled" > "$tmp/loops2"
chmod +x "$tmp/loops1" "$tmp/loops2"
capacity=(--server-arg=--global-rate=0 --server-arg=--anonymous-rate=1000000000)
for round in $(seq "$rounds"); do
  for loops in 1 2; do
    echo "== round $round: --loops $loops, single (closed loop, -c16 -m32, durable single-entry POSTs)"
    taskset -c 1 "$bench" single --raffled "$tmp/loops$loops" "${capacity[@]}" --requests 1000000 | grep -E "^rate|latency p50|lost"
    echo "== round $round: --loops $loops, bulk (4 partners, batches of 1,000, durable)"
    taskset -c 1 "$bench" bulk --raffled "$tmp/loops$loops" "${capacity[@]}" --partners 4 --batch 1000 --entries 8000000 | grep -E "^rate|latency p50|lost"
  done
done
