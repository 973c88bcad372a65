#!/usr/bin/env bash
# The cluster benchmark: 1 coordinator + 2 workers on this machine over the
# same data set in 2 partitions, against `weir local` on it. Prints records
# per CPU-second of each (CPU time of every process involved, summed) and
# the workers' peak RSS.
#
#   bench/cluster.sh                      # 5,000,000 readings, 500 devices, rate 30000, seed 7
#   RECORDS=1000000 bench/cluster.sh
#   CHECKPOINT_INTERVAL=1s bench/cluster.sh # default 10s (checkpoints also follow window closes)
#
# Devices are spread over the two partitions by sensorId % 2 (as a keyed
# producer would), so about half of all records cross between the workers:
# as per-device window accumulators (worker/src/combine.rs) while there are
# few enough devices for that to pay off, else as records.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
install_build_deps
apt_install time curl

RECORDS="${RECORDS:-5000000}"
CHECKPOINT_INTERVAL="${CHECKPOINT_INTERVAL:-10s}"
DEVICES="${DEVICES:-500}"
RATE="${RATE:-30000}"
SEED="${SEED:-7}"

cargo build --locked --release --workspace --bin weir
WEIR="$CARGO_TARGET_DIR/release/weir"

DATA="$CARGO_TARGET_DIR/bench-data"
mkdir -p "$DATA"
NAME="r${RECORDS}-d${DEVICES}-rate${RATE}-s${SEED}-p2"
if [ ! -e "$DATA/$NAME.done" ]; then
  "$WEIR" gen --out "$DATA/$NAME.avro" --records "$RECORDS" --devices "$DEVICES" \
    --rate "$RATE" --seed "$SEED" --partitions 2 >/dev/null
  touch "$DATA/$NAME.done"
fi
INPUTS=(--input "$DATA/$NAME-0.avro" --input "$DATA/$NAME-1.avro")

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do pkill -TERM -P "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT


# Single process first, for comparison.
/usr/bin/time -f "%e %U %S %M" -o "$WORK/local.time" \
  "$WEIR" local --quiet "${INPUTS[@]}" --output "$WORK/local-out" --data-dir "$WORK/local-data" \
  --checkpoint-interval "$CHECKPOINT_INTERVAL" \
  > "$WORK/local.summary" 2> "$WORK/local.log"
read -r L_ELAPSED L_USER L_SYS L_RSS < <(tail -1 "$WORK/local.time")

GRPC=$(free_port); HTTP=$(free_port)
/usr/bin/time -f "%e %U %S %M" -o "$WORK/coordinator.time" \
  "$WEIR" coordinator --listen "127.0.0.1:$GRPC" --http "127.0.0.1:$HTTP" --min-workers 2 \
  "${INPUTS[@]}" --output "$WORK/cluster-out" --data-dir "$WORK/cluster-data" \
  --checkpoint-interval "$CHECKPOINT_INTERVAL" \
  > "$WORK/coordinator.log" 2>&1 &
PIDS+=($!)
for i in 0 1; do
  PORT=$(free_port)
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/worker-$i.time" \
    "$WEIR" worker --coordinator "127.0.0.1:$GRPC" --listen "127.0.0.1:$PORT" --id "w-$i" \
    > "$WORK/worker-$i.log" 2>&1 &
  PIDS+=($!)
done
START=$(date +%s.%N)
until curl -sf "http://127.0.0.1:$HTTP/api/v1/job" 2>/dev/null | grep -q '"state":"finished"'; do
  if curl -sf "http://127.0.0.1:$HTTP/api/v1/job" 2>/dev/null | grep -q '"state":"failed"'; then
    echo "the cluster job failed:" >&2; cat "$WORK"/*.log >&2; exit 1
  fi
  sleep 0.1
done
END=$(date +%s.%N)
JOB=$(curl -sf "http://127.0.0.1:$HTTP/api/v1/job")
# Stop the weir processes (children of the `time` wrappers, which then report).
for pid in "${PIDS[@]}"; do pkill -TERM -P "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

read -r _ C_USER C_SYS _ < <(tail -1 "$WORK/coordinator.time")
read -r _ W0_USER W0_SYS W0_RSS < <(tail -1 "$WORK/worker-0.time")
read -r _ W1_USER W1_SYS W1_RSS < <(tail -1 "$WORK/worker-1.time")
L_CHECKPOINTS=$(checkpoints_in "$WORK/local.log")
C_CHECKPOINTS=$(checkpoints_in "$WORK/coordinator.log")
READ=$(echo "$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["records_in"])')
SHUFFLED=$(echo "$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["shuffle_records"])')
ACCUMULATORS=$(echo "$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("shuffle_accumulators", 0))')
awk -v r="$READ" -v sh="$SHUFFLED" -v acc="$ACCUMULATORS" -v name="$NAME" \
    -v lu="$L_USER" -v ls="$L_SYS" -v le="$L_ELAPSED" -v lm="$L_RSS" \
    -v cu="$C_USER" -v cs="$C_SYS" -v w0u="$W0_USER" -v w0s="$W0_SYS" -v w1u="$W1_USER" -v w1s="$W1_SYS" \
    -v w0m="$W0_RSS" -v w1m="$W1_RSS" -v start="$START" -v end="$END" \
    -v lchk="$L_CHECKPOINTS" -v cchk="$C_CHECKPOINTS" -v every="$CHECKPOINT_INTERVAL" 'BEGIN {
  lcpu = lu + ls
  ccpu = cu + cs + w0u + w0s + w1u + w1s
  printf "data set                 %s (2 partitions)\n", name
  printf "records                  %d (%d crossed between workers, %.0f%%)\n", r, sh, 100 * sh / r
  printf "pre-aggregation          %d per-device window accumulators crossed in place of records\n", acc
  printf "weir local               %.2f s cpu, %.2f s wall, %.0f records/cpu-second, peak rss %.1f MB\n", lcpu, le, r / lcpu, lm / 1024
  printf "cluster (1 + 2 workers)  %.2f s cpu (coordinator %.2f, workers %.2f + %.2f), %.2f s wall to finished\n", ccpu, cu + cs, w0u + w0s, w1u + w1s, end - start
  printf "cluster records/cpu-sec  %.0f (%.0f%% of weir local)\n", r / ccpu, 100 * (r / ccpu) / (r / lcpu)
  printf "worker peak rss          %.1f MB, %.1f MB\n", w0m / 1024, w1m / 1024
  printf "checkpoints              %d (local), %d (cluster) completed (every %s and on window close, and the final one)\n", lchk, cchk, every
}'
