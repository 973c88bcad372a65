#!/usr/bin/env bash
# The Pulsar benchmark: `weir produce` publishes generated readings to the
# Pulsar test broker (in memory, on this machine), then `weir local` reads
# the topic to its end (--until-idle) and aggregates it. Prints records per
# CPU-second of the job process alone and of the job plus the broker (the
# broker shares the machine's two cores), and the job's peak RSS.
#
#   bench/pulsar.sh                                # 5,000,000 readings, 4 partitions
#   RECORDS=1000000 PARTITIONS=2 bench/pulsar.sh
#   CHECKPOINT_INTERVAL=1s bench/pulsar.sh         # default 10s
#
# Checkpoints are on: every CHECKPOINT_INTERVAL and whenever every task has
# closed a window (the default); the count is printed.
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
PARTITIONS="${PARTITIONS:-4}"
IDLE=2
CHECKPOINT_INTERVAL="${CHECKPOINT_INTERVAL:-10s}"

cargo build --locked --release --workspace --bin weir --bin pulsar-test-broker
WEIR="$CARGO_TARGET_DIR/release/weir"
BROKER="$CARGO_TARGET_DIR/release/pulsar-test-broker"

WORK="$(mktemp -d)"
BROKER_PID=""
cleanup() {
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# User + system CPU seconds a running process has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

PORT=$(free_port)
"$BROKER" --port "$PORT" --partitions "$PARTITIONS" > "$WORK/broker.log" 2>&1 &
BROKER_PID=$!
URL="pulsar://127.0.0.1:$PORT"
TOPIC=iot-sensor-data
for _ in $(seq 50); do
  grep -q listening "$WORK/broker.log" 2>/dev/null && break
  sleep 0.1
done

"$WEIR" produce --quiet --pulsar "$URL" --topic "$TOPIC" --records "$RECORDS" \
  --devices "$DEVICES" --event-rate "$RATE" --seed "$SEED" > "$WORK/produce.summary"
BROKER_BEFORE=$(cpu_of "$BROKER_PID")

/usr/bin/time -f "%e %U %S %M" -o "$WORK/local.time" \
  "$WEIR" local --quiet --pulsar "$URL" --topic "$TOPIC" --until-idle "${IDLE}s" \
  --checkpoint-interval "$CHECKPOINT_INTERVAL" \
  --output "$WORK/out" --data-dir "$WORK/data" > "$WORK/local.summary" 2> "$WORK/local.log" || {
  echo "the job failed:" >&2; cat "$WORK/local.log" >&2; exit 1; }
CHECKPOINTS=$(checkpoints_in "$WORK/local.log")
BROKER_AFTER=$(cpu_of "$BROKER_PID")
read -r ELAPSED USER SYS RSS < <(tail -1 "$WORK/local.time")
READ=$(awk '/records read/ { gsub(",", "", $3); print $3 }' "$WORK/local.summary")

cat "$WORK/produce.summary"
awk -v r="$READ" -v u="$USER" -v s="$SYS" -v e="$ELAPSED" -v m="$RSS" -v idle="$IDLE" \
    -v b0="$BROKER_BEFORE" -v b1="$BROKER_AFTER" -v p="$PARTITIONS" \
    -v chk="$CHECKPOINTS" -v every="$CHECKPOINT_INTERVAL" 'BEGIN {
  cpu = u + s; broker = b1 - b0
  printf "records                  %d from %d partitions of the test broker\n", r, p
  printf "weir local               %.2f s cpu, %.2f s wall (%d s of it waiting out --until-idle), peak rss %.1f MB\n", cpu, e, idle, m / 1024
  printf "checkpoints              %d completed (every %s and on window close, and the final one)\n", chk, every
  printf "weir records/cpu-sec     %.0f\n", r / cpu
  printf "broker cpu while read    %.2f s\n", broker
  printf "job + broker             %.0f records/cpu-second\n", r / (cpu + broker)
}'
