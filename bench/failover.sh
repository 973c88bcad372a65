#!/usr/bin/env bash
# How long the job goes without a leader when the leading coordinator dies
# (not a test: nothing here passes or fails).
#
# Three coordinators in a raft group (--peers, RAFT_HEARTBEAT and
# RAFT_ELECTION) and two workers read the 5,000,000-record data set at
# RATE_LIMIT records/s with a checkpoint every INTERVAL. KILLS times: once
# a checkpoint completed, the leader is SIGKILLed; the script prints the
# time from the kill to another coordinator saying it runs the job (its own
# /metrics, polled every 10 ms), and to the next completed checkpoint; then
# it starts the killed coordinator again (as its StatefulSet would) and
# waits a little. GENERATION says whether the new leader adopted the
# running generation or deployed a new one. At the end: the raft write latency of every checkpoint
# completion (the leader's log: from asking the group to record it to a
# majority having it on disk and applied), as percentiles.
#
#   bench/failover.sh
#   INTERVAL=3s KILLS=10 bench/failover.sh
#   WEIR=/path/to/weir bench/failover.sh     # a binary already built
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
install_build_deps
apt_install curl bc

RECORDS="${RECORDS:-5000000}"
RATE=30000
DISORDER_MS=2000
SEED=9
DEVICES="${DEVICES:-5000}"
INTERVAL="${INTERVAL:-10s}"
RATE_LIMIT="${RATE_LIMIT:-50000}"
KILLS="${KILLS:-5}"
RAFT_HEARTBEAT="${RAFT_HEARTBEAT:-250ms}"
RAFT_ELECTION="${RAFT_ELECTION:-1500ms}"

cluster_bench_prepare

input=$(data_set "$DEVICES")
dir="$WORK/run"
mkdir -p "$dir"
declare -a GRPC HTTP
for i in 0 1 2; do GRPC[$i]=$(free_port); HTTP[$i]=$(free_port); done
peers="0=127.0.0.1:${GRPC[0]},1=127.0.0.1:${GRPC[1]},2=127.0.0.1:${GRPC[2]}"
starts=0
start_coordinator() {
  starts=$((starts + 1))
  (cd "$dir" && exec "$WEIR" coordinator --node-id "$1" --peers "$peers" \
    --listen "127.0.0.1:${GRPC[$1]}" --http "127.0.0.1:${HTTP[$1]}" --raft-dir "raft-$1" \
    --raft-heartbeat "$RAFT_HEARTBEAT" --raft-election "$RAFT_ELECTION" \
    --input "$input" --output out --data-dir data --min-workers 2 \
    --checkpoint-interval "$INTERVAL" --rate-limit "$RATE_LIMIT") > "$dir/coordinator-$1-$starts.log" 2>&1 &
  PID[c$1]=$!
}
start_worker() {
  (cd "$dir" && exec "$WEIR" worker --coordinator "127.0.0.1:${GRPC[0]},127.0.0.1:${GRPC[1]},127.0.0.1:${GRPC[2]}" \
    --listen "127.0.0.1:$(free_port)" --id "$1") > "$dir/$1.log" 2>&1 &
  PID[$1]=$!
}
# The coordinator that says it runs the job (empty: none), other than $1.
leader() {
  local i
  for i in 0 1 2; do
    [ "$i" = "${1:-}" ] && continue
    if curl -fsS -m 1 "http://127.0.0.1:${HTTP[$i]}/metrics" 2>/dev/null | grep -qx 'weir_coordinator_leader 1'; then
      echo "$i"
      return
    fi
  done
}
# The newest completed checkpoint, as coordinator $1 has it.
latest() {
  curl -fsS -m 2 "http://127.0.0.1:${HTTP[$1]}/api/v1/checkpoints" 2>/dev/null \
    | python3 -c 'import json,sys
c=[x["id"] for x in json.load(sys.stdin).get("checkpoints",[]) if x.get("state")=="COMPLETED"]
print(max(c) if c else 0)' 2>/dev/null || echo 0
}
# The generation coordinator $1 runs.
generation() {
  curl -fsS -m 2 "http://127.0.0.1:${HTTP[$1]}/api/v1/job" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("generation",0))' 2>/dev/null || echo 0
}
now() { date +%s.%N; }
ms_since() { echo "($(now) - $1) * 1000" | bc -l | xargs printf '%.0f'; }

for i in 0 1 2; do start_coordinator "$i"; done
start_worker w-0
start_worker w-1
echo "3 coordinators (heartbeat $RAFT_HEARTBEAT, election $RAFT_ELECTION), 2 workers, $DEVICES devices, $RATE_LIMIT records/s, checkpoint every $INTERVAL"
printf '%-5s %-7s %-7s %14s %18s  %s\n' KILL KILLED LEADER "NEW LEADER" "NEXT CHECKPOINT" GENERATION
for k in $(seq 1 "$KILLS"); do
  l=""
  for _ in $(seq 1 1200); do
    l=$(leader)
    [ -n "$l" ] && [ "$(latest "$l")" -ge 1 ] && break
    sleep 0.1
  done
  [ -n "$l" ] || { echo "no leader"; exit 1; }
  before=$(latest "$l")
  # A moment after a checkpoint, as a failure at any time would be.
  for _ in $(seq 1 600); do [ "$(latest "$l")" -gt "$before" ] && break; sleep 0.05; done
  before=$(latest "$l")
  gen_before=$(generation "$l")
  sleep "0.$((RANDOM % 10))"
  t0=$(now)
  kill -9 "${PID[c$l]}"
  wait "${PID[c$l]}" 2>/dev/null || true
  new=""
  while [ -z "$new" ]; do new=$(leader "$l"); [ -z "$new" ] && sleep 0.01; done
  elected=$(ms_since "$t0")
  while [ "$(latest "$new")" -le "$before" ]; do sleep 0.02; done
  checkpointed=$(ms_since "$t0")
  gen_after=$(generation "$new")
  if [ "$gen_after" = "$gen_before" ]; then how="$gen_before adopted"; else how="$gen_before -> $gen_after"; fi
  printf '%-5s %-7s %-7s %11s ms %15s ms  %s\n' "$k" "$l" "$new" "$elected" "$checkpointed" "$how"
  sleep 0.5
  start_coordinator "$l"
  sleep 5
done
cat "$dir"/coordinator-*.log | grep -o 'raft_ms=[0-9.]*' | cut -d= -f2 | sort -n | python3 -c '
import sys
v=[float(x) for x in sys.stdin if x.strip()]
if v:
    q=lambda p: v[min(len(v)-1,int(p*len(v)))]
    print(f"raft write of a checkpoint completion: {len(v)} writes, p50 {q(0.5):.1f} ms, p90 {q(0.9):.1f} ms, max {v[-1]:.1f} ms")'
