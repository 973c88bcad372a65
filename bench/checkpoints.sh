#!/usr/bin/env bash
# What checkpoints cost, and how long recovery takes (not a test: nothing
# here passes or fails).
#
# 1. The 5,000,000-record data set (500 and 50,000 devices) read by
#    `weir local` at RATE_LIMIT records/s, so that a run spans several
#    checkpoint intervals: without checkpoints (interval 1h), with a
#    checkpoint every INTERVAL into a local directory, and into an S3 server
#    on loopback (moto). One line per run: records per CPU-second, peak RSS,
#    checkpoints completed, their mean duration, size and uploaded size.
# 2. A cluster (coordinator and two workers) reading the same data with a
#    checkpoint every INTERVAL: one worker is SIGKILLed; prints the time
#    until the next generation runs again from the restored checkpoint
#    (the heartbeat timeout, 10 s by default, is most of it: a killed
#    worker's closed control stream is noticed at once, a frozen one is not).
#
#   bench/checkpoints.sh
#   DEVICES=500 STORES="local" bench/checkpoints.sh
#   WEIR=/tmp/weir-old bench/checkpoints.sh
#
# With epoch commits, the `local` and `s3` rows also include staging the
# output, keeping it in the checkpoint and committing it after completion
# (and checkpoints taken as windows close): compare them with a build
# before epoch commits (WEIR=) for what commits cost.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
install_build_deps
install_python_tools
apt_install time curl bc

RECORDS="${RECORDS:-5000000}"
# The data sets of bench/devices.sh.
RATE=30000
DISORDER_MS=2000
SEED=9
DEVICES="${DEVICES-500 50000}"
STORES="${STORES-none local s3}"
INTERVAL="${INTERVAL:-10s}"
RATE_LIMIT="${RATE_LIMIT:-150000}"

if [ -z "${WEIR:-}" ]; then
  cargo build --locked --release --workspace --bin weir
  WEIR="$CARGO_TARGET_DIR/release/weir"
fi
# Builds with epoch commits also checkpoint when windows close.
NO_WINDOW_CLOSE=""
if "$WEIR" local --help 2>/dev/null | grep -q -- --checkpoint-on-window-close; then
  NO_WINDOW_CLOSE="--checkpoint-on-window-close false"
fi
DATA="$CARGO_TARGET_DIR/bench-data"
mkdir -p "$DATA"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT



S3_PORT=""
start_s3() {
  S3_PORT=$(free_port)
  moto_server -H 127.0.0.1 -p "$S3_PORT" > "$WORK/moto.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$S3_PORT/" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS -X PUT "http://127.0.0.1:$S3_PORT/weir-bench" >/dev/null
}
s3_env() {
  echo AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" AWS_ACCESS_KEY_ID=bench \
    AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
}

# Mean of a `key=value` field over the "checkpoint completed" log lines.
mean_field() { # log key
  grep "checkpoint completed" "$1" | grep -o "$2=[0-9]*" | cut -d= -f2 |
    awk '{ s += $1; n++ } END { if (n) printf "%.0f", s / n; else printf "-" }'
}

# Mean and maximum wait of committed rows (from the first row of an epoch
# to its commit: for window rows, from the watermark passing the window to
# the rows being visible), over the "epoch committed" log lines.
commit_wait() { # log
  grep "epoch committed" "$1" | grep -o "waited_ms=[0-9]*" | cut -d= -f2 |
    awk '{ s += $1; n++; if ($1 > m) m = $1 } END { if (n) printf "%.0f/%d", s / n, m; else printf "-" }'
}

printf '%-8s %-6s %8s %14s %8s %6s %9s %12s %14s %14s\n' \
  devices store cpu_s "records/cpu-s" rss_MB ckpts mean_ms mean_bytes mean_uploaded wait_ms_avg/max

for devices in $DEVICES; do
  input=$(data_set "$devices")
  for store in $STORES; do
    out="$WORK/run-$devices-$store"
    rm -rf "$out"
    mkdir -p "$out"
    args=(local --input "$input" --output "$out/out" --data-dir "$out/data"
      --rate-limit "$RATE_LIMIT" --quiet)
    envs=()
    case $store in
      # No checkpoint at all: no interval, and (in builds that have them)
      # no checkpoints when windows close. Output is then committed by the
      # final checkpoint alone.
      none) args+=(--checkpoint-interval 1h $NO_WINDOW_CLOSE) ;;
      local) args+=(--checkpoint-interval "$INTERVAL") ;;
      s3)
        [ -n "$S3_PORT" ] || start_s3
        args+=(--checkpoint-interval "$INTERVAL" --checkpoint-store "s3://weir-bench/$devices"
          --s3-path-style)
        read -r -a envs <<< "$(s3_env)"
        ;;
    esac
    # The same page-cache state for every run: earlier output written
    # back, the input cached (a run that reads it from disk pays for that
    # in system time, which would swamp what checkpoints cost).
    sync
    cat "$input" > /dev/null
    env "${envs[@]}" WEIR_LOG=info NO_COLOR=1 /usr/bin/time -f '%U %S %M' -o "$out/time" \
      "$WEIR" "${args[@]}" > "$out/log" 2>&1
    read -r user sys rss_kb < "$out/time"
    cpu=$(echo "$user + $sys" | bc -l)
    printf '%-8s %-6s %8.2f %14.0f %8.0f %6s %9s %12s %14s %14s\n' \
      "$devices" "$store" "$cpu" "$(echo "$RECORDS / $cpu" | bc -l)" "$(echo "$rss_kb / 1024" | bc -l)" \
      "$(grep -c 'checkpoint completed' "$out/log" || true)" \
      "$(mean_field "$out/log" duration_ms)" "$(mean_field "$out/log" bytes)" \
      "$(mean_field "$out/log" incremental_bytes)" "$(commit_wait "$out/log")"
  done
done

# Recovery: two workers, one SIGKILLed after two checkpoints.
input=$(data_set "${RECOVERY_DEVICES:-50000}")
dir="$WORK/cluster"
mkdir -p "$dir"
grpc=$(free_port)
http=$(free_port)
(cd "$dir" && exec "$WEIR" coordinator --listen "127.0.0.1:$grpc" --http "127.0.0.1:$http" \
  --input "$input" --output out --data-dir data --min-workers 2 \
  --checkpoint-interval 2s --rate-limit 100000) > "$dir/coordinator.log" 2>&1 &
PIDS+=($!)
for id in w-0 w-1; do
  (cd "$dir" && exec "$WEIR" worker --coordinator "127.0.0.1:$grpc" --listen "127.0.0.1:$(free_port)" \
    --id "$id") > "$dir/$id.log" 2>&1 &
  PIDS+=($!)
done
W1=${PIDS[-1]}
job() { curl -fsS "http://127.0.0.1:$http/api/v1/job" 2>/dev/null || echo '{}'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"; }
for _ in $(seq 1 300); do
  done_n=$(curl -fsS "http://127.0.0.1:$http/api/v1/checkpoints" 2>/dev/null | field completed || echo 0)
  [ "${done_n:-0}" -ge 2 ] && break
  sleep 0.2
done
generation=$(job | field generation)
killed=$(date +%s.%N)
kill -9 "$W1"
while :; do
  j=$(job)
  g=$(echo "$j" | field generation)
  restored=$(echo "$j" | field restored_checkpoint)
  phase=$(echo "$j" | field phase)
  if [ "$g" -gt "$generation" ] && [ "$restored" -gt 0 ] && [ "$phase" = running ]; then
    break
  fi
  sleep 0.05
done
echo "recovery: $(echo "$(date +%s.%N) - $killed" | bc -l | xargs printf '%.1f') s from the SIGKILL of a worker to generation $g running from checkpoint $restored"
