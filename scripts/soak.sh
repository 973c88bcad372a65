#!/usr/bin/env bash
# The fault-injection soak, for as long as you like: a Pulsar job on a
# coordinator and 3 workers under steady load, with a fault (SIGKILL of a
# worker or the coordinator, SIGSTOP past the lease, ClickHouse frozen while
# a generation changes, the broker dropping connections, network
# partitions) at random seeded times, then the output checked against an
# independent computation. Prints the faults injected and the rows
# checked, lost and duplicated; exits 1 unless the output is exactly once.
#
#   scripts/soak.sh --minutes 10 [--fault-every 20] [--seed 1] [--rate 2000]
#                   [--devices 1000] [--sink clickhouse|jsonl]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_test_deps
export SOAK_MINUTES=10 SOAK_FAULT_EVERY_S=20 SOAK_SEED=1 SOAK_RATE=2000 SOAK_DEVICES=1000 SOAK_SINK=clickhouse
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) SOAK_MINUTES="$2"; shift 2 ;;
    --fault-every) SOAK_FAULT_EVERY_S="$2"; shift 2 ;;
    --seed) SOAK_SEED="$2"; shift 2 ;;
    --rate) SOAK_RATE="$2"; shift 2 ;;
    --devices) SOAK_DEVICES="$2"; shift 2 ;;
    --sink) SOAK_SINK="$2"; shift 2 ;;
    *) echo "unknown option $1 (see the top of $0)" >&2; exit 2 ;;
  esac
done
# The whole workspace, so that dependencies resolve their features as in
# every other build (and are not built twice).
cargo build --locked --workspace --bins
exec "$CARGO_TARGET_DIR/debug/weir-soak"
