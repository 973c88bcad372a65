#!/usr/bin/env bash
# Installs what is missing (build tools, clickhouse-server) and runs the
# whole test suite: formatting, lints, unit and multi-process integration
# tests (which start their own ClickHouse servers on free loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_test_deps
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo build --locked --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast
else
  cargo test --locked --workspace --no-fail-fast
fi
