# Helpers of the bench/ scripts (sourced after scripts/lib.sh).

# Checkpoints completed in a run, counted in its log `$1` (each completed
# checkpoint logs one "checkpoint completed" line).
checkpoints_in() { grep -c "checkpoint completed" "$1" || true; }

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The Avro data set of `$1` devices (RECORDS readings, RATE per second of
# event time, DISORDER_MS disorder, seed SEED), generated once into $DATA
# with $WEIR and reused; prints its path.
data_set() {
  local name="r${RECORDS}-d$1-rate${RATE}-o${DISORDER_MS}-s${SEED}"
  if [ ! -e "$DATA/$name.done" ]; then
    "$WEIR" gen --out "$DATA/$name.avro" --records "$RECORDS" --devices "$1" \
      --rate "$RATE" --disorder-ms "$DISORDER_MS" --seed "$SEED" >/dev/null
    touch "$DATA/$name.done"
  fi
  echo "$DATA/$name.avro"
}

# What a cluster benchmark needs first: the release binary (unless $WEIR
# names one), the data-set cache $DATA, a work directory $WORK removed at
# exit, and PID (a name → process id map) whose processes are killed at
# exit.
cluster_bench_prepare() {
  if [ -z "${WEIR:-}" ]; then
    cargo build --locked --release --workspace --bin weir
    WEIR="$CARGO_TARGET_DIR/release/weir"
  fi
  DATA="$CARGO_TARGET_DIR/bench-data"
  mkdir -p "$DATA"
  WORK="$(mktemp -d)"
  declare -gA PID=()
  trap cluster_bench_cleanup EXIT
}

cluster_bench_cleanup() {
  for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  # Reaped quietly (bash would report each as killed).
  for p in "${PID[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
