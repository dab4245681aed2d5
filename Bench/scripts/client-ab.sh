#!/usr/bin/env bash
# A/B: the client library before and after a change, same raffled, alternating (issue #15).
# OLD: a raffle-bench built from the earlier commit (git worktree add /tmp/old REV; cd /tmp/old/Bench;
# swift build -c release --product raffle-bench); NEW: this tree's. raffled pinned to core 0 (/tmp/pb/raffled
# is a wrapper: exec taskset -c 0 .build/release/raffled --loops 1 "$@"), the generator to core 1.
set -u
new=${NEW:-$(dirname "$0")/../.build/release/raffle-bench}
old=${OLD:-/tmp/old/Bench/.build/release/raffle-bench}
srv=(--raffled ${RAFFLED:-/tmp/pb/raffled} --server-arg=--global-rate=0 --server-arg=--anonymous-rate=1000000000)
for round in 1 2 3; do
  for v in old new; do
    b=$old; [ $v = new ] && b=$new
    echo "== calls round $round $v"
    timeout 300 taskset -c 1 $b calls "${srv[@]}" --calls 1000000 2>&1 | grep -E "^rate|latency p|lost|elapsed"
  done
done
for spec in "300000 10" "1000000 10"; do
  set -- $spec
  for round in 1 2; do
    for v in old new; do
      b=$old; [ $v = new ] && b=$new
      echo "== drop users=$1 within=$2 round $round $v"
      timeout 300 taskset -c 1 $b drop "${srv[@]}" --users $1 --within $2 2>&1 | grep -E "^rate|latency p|lost|elapsed|note|attempts"
    done
  done
done
