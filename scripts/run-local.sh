#!/usr/bin/env bash
# Installs what is missing, builds Weir and runs the default job in this
# process: generated readings → RocksDB state under ./weir-data → JSON lines
# under ./weir-output. Extra arguments go to `weir local` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_build_deps
cargo build --locked -p weir-cli --bin weir
exec "$CARGO_TARGET_DIR/debug/weir" local "$@"
