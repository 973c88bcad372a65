#!/usr/bin/env bash
# How Weir's cost grows with the number of devices (not a test: nothing here
# passes or fails). The same 5,000,000 readings (rate 30,000/s of event time,
# 2 s disorder, seed 9) spread over 500 to 5,000,000 devices, run by
# `weir local` into JSON lines and, for some device counts, into a real
# ClickHouse server on loopback. Prints one line per run: records per
# CPU-second, peak RSS and the peak on-disk size of the RocksDB state.
#
#   bench/devices.sh                                  # the whole table
#   DEVICES="500 50000" CLICKHOUSE_DEVICES="" bench/devices.sh
#   MEMORY_BUDGET=256MiB DEVICES=5000000 bench/devices.sh
#   WEIR=/tmp/weir-old DEVICES=500 CLICKHOUSE_DEVICES= bench/devices.sh
#
# CPU time is user + system time of the `weir local` process (all threads);
# with ClickHouse, the server's CPU time is printed separately. The data
# sets are generated once into $CARGO_TARGET_DIR/bench-data and reused.
#
# Before each run the page cache is written back and dropped (when run as
# root): the runs write gigabytes of output, and a process that has to
# reclaim the page cache an earlier run filled pays for it in system time
# (on the 2-core VM of docs/performance.md, writing 2 GB cost 4.5 s of
# system time with a full cache and 1.2 s with an empty one).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
install_build_deps
apt_install time

RECORDS="${RECORDS:-5000000}"
RATE="${RATE:-30000}"
DISORDER_MS="${DISORDER_MS:-2000}"
SEED="${SEED:-9}"
DEVICES="${DEVICES-500 5000 50000 500000 5000000}"
CLICKHOUSE_DEVICES="${CLICKHOUSE_DEVICES-50000 500000}"
MEMORY_BUDGET="${MEMORY_BUDGET:-256MiB}"

# WEIR=path/to/weir runs that binary instead (to compare two builds).
if [ -z "${WEIR:-}" ]; then
  cargo build --locked --release --workspace --bin weir
  WEIR="$CARGO_TARGET_DIR/release/weir"
fi
DATA="$CARGO_TARGET_DIR/bench-data"
mkdir -p "$DATA"

WORK="$(mktemp -d)"
CH_PID=""
cleanup() {
  if [ -n "$CH_PID" ]; then kill "$CH_PID" 2>/dev/null || true; wait "$CH_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT


# Largest size seen of a directory, sampled every 200 ms until $1 exits.
watch_size() { # pid dir out
  local max=0 size
  while kill -0 "$1" 2>/dev/null; do
    size=$(du -sk "$2" 2>/dev/null | cut -f1 || echo 0)
    [ "${size:-0}" -gt "$max" ] && max=$size
    sleep 0.2
  done
  echo "$max" > "$3"
}


# A ClickHouse server of its own on loopback (Debian's clickhouse-server).
start_clickhouse() {
  apt_install clickhouse-server curl
  local dir="$WORK/clickhouse"
  mkdir -p "$dir/data"
  CH_HTTP=$(free_port)
  local tcp
  tcp=$(free_port)
  cat > "$dir/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/server.log</log><errorlog>$dir/server.err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$CH_HTTP</http_port>
  <tcp_port>$tcp</tcp_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/data/tmp/</tmp_path>
  <user_files_path>$dir/data/user_files/</user_files_path>
  <format_schema_path>$dir/data/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <mlock_executable>false</mlock_executable>
</yandex>
EOF
  cat > "$dir/users.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
EOF
  local server=/usr/bin/clickhouse-server
  [ -x "$server" ] || server=/usr/sbin/clickhouse-server
  (cd "$dir" && exec "$server" --config-file="$dir/config.xml") > "$dir/stdout" 2>&1 &
  CH_PID=$!
  for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$CH_HTTP/" --data-binary 'SELECT 1' >/dev/null 2>&1 && return
    sleep 0.5
  done
  echo "ClickHouse did not start; see $dir" >&2
  exit 1
}

ch_query() { curl -fsS "http://127.0.0.1:$CH_HTTP/" --data-binary "$1"; }

# CPU seconds (user + system) a process has used so far.
proc_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

printf '%-10s %-10s %10s %8s %12s %9s %10s %8s %s\n' \
  devices sink rows cpu_s "records/cpu-s" "rss_MB" "state_MB" spills "clickhouse_cpu_s"

run() { # devices sink
  local devices=$1 sink=$2 input out args=()
  input=$(data_set "$devices")
  out="$WORK/run-$devices-$sink"
  rm -rf "$out"
  mkdir -p "$out"
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
  local ch_cpu_before=0
  if [ "$sink" = clickhouse ]; then
    [ -n "$CH_PID" ] || start_clickhouse
    ch_query "DROP DATABASE IF EXISTS bench" >/dev/null
    args=(--clickhouse "http://127.0.0.1:$CH_HTTP" --database bench --create-tables)
    ch_cpu_before=$(proc_cpu "$CH_PID")
  else
    args=(--output "$out/rows")
  fi
  /usr/bin/time -f "%e %U %S %M" -o "$out/time" \
    "$WEIR" local --quiet --input "$input" "${args[@]}" --data-dir "$out/data" \
    --memory-budget "$MEMORY_BUDGET" > "$out/summary" 2> "$out/log" &
  local pid=$!
  watch_size "$pid" "$out/data" "$out/state_kb" &
  local watcher=$!
  if ! wait "$pid"; then
    echo "weir local failed ($devices devices, $sink):" >&2
    tail -20 "$out/log" >&2
    exit 1
  fi
  wait "$watcher"
  local elapsed user sys rss_kb
  read -r elapsed user sys rss_kb < <(tail -1 "$out/time")
  local read rows spills
  read=$(awk '/records read/ {gsub(",", "", $3); print $3}' "$out/summary")
  rows=$(awk '/rows written/ {gsub(",", "", $3); print $3}' "$out/summary")
  spills=$(awk '/state spills/ {gsub(",", "", $3); print $3}' "$out/summary")
  local ch_cpu="-"
  if [ "$sink" = clickhouse ]; then
    ch_cpu=$(awk -v a="$(proc_cpu "$CH_PID")" -v b="$ch_cpu_before" 'BEGIN { printf "%.1f", a - b }')
    local stored
    stored=$(ch_query "SELECT count() FROM bench.sensors_local")
    [ "$((stored * 2))" = "$rows" ] || echo "warning: ClickHouse holds $stored sensors_local rows, Weir wrote $rows rows in all" >&2
  fi
  awk -v d="$devices" -v s="$sink" -v r="$read" -v rows="$rows" -v u="$user" -v sy="$sys" \
      -v m="$rss_kb" -v st="$(cat "$out/state_kb")" -v sp="$spills" -v ch="$ch_cpu" 'BEGIN {
    cpu = u + sy
    printf "%-10s %-10s %10d %8.1f %12.0f %9.1f %10.1f %8d %s\n", d, s, rows, cpu, r / cpu, m / 1024, st / 1024, sp, ch
  }'
  rm -rf "$out"
}

for d in $DEVICES; do
  run "$d" jsonl
done
for d in $CLICKHOUSE_DEVICES; do
  run "$d" clickhouse
done
