#!/usr/bin/env bash
# How long a rescale takes (not a test: nothing here passes or fails).
#
# For each device count, a cluster (coordinator and two workers) reads the
# 5,000,000-record data set at RATE_LIMIT records/s with a checkpoint every
# INTERVAL. Once two checkpoints have completed (the state holds every
# device's open windows), two workers are started (2 → 4), and later one is
# stopped with SIGTERM (4 → 3), as a StatefulSet scaled to those counts
# would do. For each rescale it prints the time from the change (workers
# started, or SIGTERM sent) to the new generation running on every worker,
# as the coordinator measured it (`rescales[].duration_ms` in the job
# status, from the change it saw) and as seen from outside, with the
# checkpoint it restored and the bytes the new generation fetched.
#
# The coordinator waits SETTLE (its --settle, 1 s by default) after workers
# join or leave before it acts, so that pods of one change come together:
# that wait is part of every figure.
#
#   bench/rescale.sh
#   DEVICES=500 SETTLE=200ms bench/rescale.sh
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
DEVICES="${DEVICES-500 50000}"
INTERVAL="${INTERVAL:-10s}"
RATE_LIMIT="${RATE_LIMIT:-100000}"
SETTLE="${SETTLE:-1s}"

cluster_bench_prepare

job() { curl -fsS "http://127.0.0.1:$http/api/v1/job" 2>/dev/null || echo '{}'; }
# A field of the job status's newest rescale, once there are $1 of them.
rescale_field() {
  python3 -c "
import json,sys
j=json.load(sys.stdin); r=j.get('rescales') or []
ok = len(r) >= $1 and not j.get('rescaling')
print(r[0].get('$2', '') if ok else '')"
}
start_worker() {
  (cd "$dir" && exec "$WEIR" worker --coordinator "127.0.0.1:$grpc" \
    --listen "127.0.0.1:$(free_port)" --id "$1") > "$dir/$1.log" 2>&1 &
  PID[$1]=$!
}
# Waits for rescale number $1 to end; prints one line about it.
report() {
  local n=$1 what=$2 since=$3 outcome=""
  for _ in $(seq 1 1200); do
    outcome=$(job | rescale_field "$n" outcome)
    [ -n "$outcome" ] && break
    sleep 0.05
  done
  local wall j checkpoint
  wall=$(echo "$(date +%s.%N) - $since" | bc -l | xargs printf '%.2f')
  # The new generation's metrics (restored bytes) come with its workers'
  # next heartbeats.
  checkpoint=$(job | rescale_field "$n" checkpoint)
  for _ in $(seq 1 100); do
    j=$(job)
    [ "$(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("restored_checkpoint", 0))')" = "$checkpoint" ] \
      && [ "$(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("restored_bytes", 0))')" != 0 ] && break
    sleep 0.1
  done
  printf '%-8s %-7s %9s ms %8s s  checkpoint %-4s restored %12s bytes  %s\n' \
    "$devices" "$what" "$(echo "$j" | rescale_field "$n" duration_ms)" "$wall" \
    "$(echo "$j" | rescale_field "$n" checkpoint)" \
    "$(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("restored_bytes", 0))')" \
    "$outcome"
}

echo "settle $SETTLE, checkpoint interval $INTERVAL, $RATE_LIMIT records/s"
printf '%-8s %-7s %12s %10s\n' DEVICES RESCALE COORDINATOR OUTSIDE
for devices in $DEVICES; do
  input=$(data_set "$devices")
  dir="$WORK/d$devices"
  mkdir -p "$dir"
  grpc=$(free_port)
  http=$(free_port)
  (cd "$dir" && exec "$WEIR" coordinator --listen "127.0.0.1:$grpc" --http "127.0.0.1:$http" \
    --input "$input" --output out --data-dir data --min-workers 2 --settle "$SETTLE" \
    --checkpoint-interval "$INTERVAL" --rate-limit "$RATE_LIMIT") > "$dir/coordinator.log" 2>&1 &
  PID[coordinator]=$!
  start_worker w-0
  start_worker w-1
  for _ in $(seq 1 1200); do
    done_n=$(curl -fsS "http://127.0.0.1:$http/api/v1/checkpoints" 2>/dev/null \
      | python3 -c 'import json,sys; print(json.load(sys.stdin).get("completed", 0))' 2>/dev/null || echo 0)
    [ "${done_n:-0}" -ge 2 ] && break
    sleep 0.2
  done
  since=$(date +%s.%N)
  start_worker w-2
  start_worker w-3
  report 1 "2 → 4" "$since"
  sleep 5
  since=$(date +%s.%N)
  kill -TERM "${PID[w-3]}"
  report 2 "4 → 3" "$since"
  wait "${PID[w-3]}" || echo "w-3 exited with $?"
  unset 'PID[w-3]'
  for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  PID=()
done
