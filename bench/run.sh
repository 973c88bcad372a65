#!/usr/bin/env bash
# Weir's throughput and memory benchmark (not a test: nothing here passes or
# fails). Runs the contract job with RocksDB state on a generated data set
# and prints records per CPU-second and peak RSS.
#
#   bench/run.sh                 # 5,000,000 readings, 500 devices, rate 30000, seed 7
#   RECORDS=1000000 bench/run.sh
#   MEMORY_BUDGET=64KiB bench/run.sh   # spill window state to RocksDB constantly
#   CHECKPOINT_INTERVAL=500ms bench/run.sh
#
# Checkpoints are on: every CHECKPOINT_INTERVAL (default 10s, as in the
# Flink anchor) and whenever every task has closed a window (the default
# `checkpoint.on_window_close`), so a run of a few seconds takes several;
# the count is printed.
# The data set is generated once into $CARGO_TARGET_DIR/bench-data and
# reused. CPU time is user + system time of the whole `weir local` process
# (all threads), so the figure is comparable with Flink's records per
# CPU-second measured the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
install_build_deps
apt_install time

RECORDS="${RECORDS:-5000000}"
DEVICES="${DEVICES:-500}"
RATE="${RATE:-30000}"
SEED="${SEED:-7}"
PARTITIONS="${PARTITIONS:-1}"
MEMORY_BUDGET="${MEMORY_BUDGET:-256MiB}"
CHECKPOINT_INTERVAL="${CHECKPOINT_INTERVAL:-10s}"

cargo build --locked --release --workspace --bin weir
WEIR="$CARGO_TARGET_DIR/release/weir"

DATA="$CARGO_TARGET_DIR/bench-data"
mkdir -p "$DATA"
NAME="r${RECORDS}-d${DEVICES}-rate${RATE}-s${SEED}-p${PARTITIONS}"
if [ ! -e "$DATA/$NAME.done" ]; then
  "$WEIR" gen --out "$DATA/$NAME.avro" --records "$RECORDS" --devices "$DEVICES" \
    --rate "$RATE" --seed "$SEED" --partitions "$PARTITIONS" >/dev/null
  touch "$DATA/$NAME.done"
fi
INPUTS=()
if [ "$PARTITIONS" = 1 ]; then
  INPUTS+=(--input "$DATA/$NAME.avro")
else
  for ((i = 0; i < PARTITIONS; i++)); do INPUTS+=(--input "$DATA/$NAME-$i.avro"); done
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
/usr/bin/time -f "%e %U %S %M" -o "$WORK/time" \
  "$WEIR" local --quiet "${INPUTS[@]}" --output "$WORK/out" --data-dir "$WORK/data" \
  --memory-budget "$MEMORY_BUDGET" --checkpoint-interval "$CHECKPOINT_INTERVAL" \
  > "$WORK/summary" 2> "$WORK/log"
CHECKPOINTS=$(checkpoints_in "$WORK/log")
read -r ELAPSED USER SYS RSS_KB < <(tail -1 "$WORK/time")
READ=$(awk '/records read/ {gsub(",", "", $3); print $3}' "$WORK/summary")
SPILLS=$(awk '/state spills/ {gsub(",", "", $3); print $3}' "$WORK/summary")
ROWS=$(awk '/rows written/ {gsub(",", "", $3); print $3}' "$WORK/summary")
awk -v r="$READ" -v u="$USER" -v s="$SYS" -v e="$ELAPSED" -v m="$RSS_KB" -v rows="$ROWS" -v name="$NAME" \
    -v budget="$MEMORY_BUDGET" -v spills="$SPILLS" -v chk="$CHECKPOINTS" -v every="$CHECKPOINT_INTERVAL" 'BEGIN {
  cpu = u + s
  printf "data set           %s\n", name
  printf "records            %d\n", r
  printf "rows written       %d\n", rows
  printf "memory budget      %s (%d spills to RocksDB)\n", budget, spills
  printf "checkpoints        %d completed (every %s and on window close, and the final one)\n", chk, every
  printf "wall time          %.2f s\n", e
  printf "cpu time           %.2f s (user %.2f, system %.2f)\n", cpu, u, s
  printf "records/cpu-second %.0f\n", r / cpu
  printf "records/second     %.0f (wall clock)\n", r / e
  printf "peak rss           %.1f MB\n", m / 1024
  printf "vs Flink 1.17      %.1fx records/cpu-second (51,000), %.2fx memory (626 MB)\n", (r / cpu) / 51000, (m / 1024) / 626
}'
