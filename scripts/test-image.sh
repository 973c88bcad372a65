#!/usr/bin/env bash
# Tests the container image: builds it from a prebuilt `weir` with
# scripts/image.sh --binary (no Rust build, no Docker daemon), then checks
# in a container that `weir --version` prints the workspace version, that
# the default command (--help) works, that tini is PID 1 and forwards
# SIGTERM (a coordinator stops cleanly), and the image's configuration.
#
#   scripts/test-image.sh [BINARY]
#
# BINARY defaults to $WEIR_BINARY, else $CARGO_TARGET_DIR/release/weir,
# else $CARGO_TARGET_DIR/debug/weir. Exits non-zero on any failure; exits 0
# with a "SKIP" message only where the machine lacks what it cannot
# install (not Linux, or no podman and no apt-get to install it).
# WEIR_IMAGE_BASE=registry|mmdebstrap forces the base (see image.sh).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Defines podman_ (podman with the OCI runtime this host needs) and
# podman_limit_args; also sources scripts/lib.sh.
# shellcheck source=scripts/image.sh
. "$ROOT/scripts/image.sh"

fail() { echo "test-image: FAIL: $*" >&2; exit 1; }
skip() { echo "test-image: SKIP: $*" >&2; exit 0; }
ok() { echo "test-image: ok: $*" >&2; }

[ "$(uname -s)" = Linux ] || skip "podman/buildah images need Linux (this is $(uname -s))"
if ! command -v apt-get >/dev/null; then
  command -v podman >/dev/null || skip "podman is not installed and there is no apt-get to install it"
  command -v mmdebstrap >/dev/null || command -v buildah >/dev/null \
    || skip "neither mmdebstrap nor buildah is installed and there is no apt-get to install them"
fi

binary=${1:-${WEIR_BINARY:-}}
if [ -z "$binary" ]; then
  for b in "$CARGO_TARGET_DIR/release/weir" "$CARGO_TARGET_DIR/debug/weir"; do
    if [ -x "$b" ]; then binary=$b; break; fi
  done
fi
[ -n "$binary" ] || fail "no weir binary: pass one, or build it (cargo build --release -p weir-cli)"
[ -x "$binary" ] || fail "$binary: no such executable"

version=$(workspace_version)
expected="weir $version"
host_version=$("$binary" --version) || fail "$binary --version failed on the host"
[ "$host_version" = "$expected" ] \
  || fail "$binary is not this checkout's build: it prints '$host_version', Cargo.toml says $version"

tag="localhost/weir-image-test:$$"
work=$(mktemp -d "${TMPDIR:-/tmp}/weir-image-test.XXXXXX")
container="weir-image-test-$$"
cleanup() {
  podman rm -f -t 0 "$container" >/dev/null 2>&1 || true
  podman rmi -f "$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. The image, and its OCI archive.
"$ROOT/scripts/image.sh" --binary "$binary" --tag "$tag" --out "$work/weir.tar" >/dev/null \
  || fail "scripts/image.sh --binary $binary failed (output above)"
[ -s "$work/weir.tar" ] && tar tf "$work/weir.tar" | grep -q '^oci-layout$' \
  || fail "--out did not write an OCI archive"
ok "built $tag from $binary"

mapfile -t limits < <(podman_limit_args)
run() { podman_ run --rm --network none "${limits[@]}" "$@"; }

# 2. weir --version through the entrypoint (tini -> weir).
got=$(run "$tag" --version 2>&1) || fail "podman run $tag --version failed: $got"
[ "$got" = "$expected" ] || fail "podman run $tag --version printed '$got', expected '$expected'"
ok "podman run $tag --version: $got"

# 3. The default command is --help.
got=$(run "$tag" 2>&1) || fail "podman run $tag (default command) failed: $got"
grep -q '^Usage: weir' <<<"$got" || fail "the default command did not print weir's help: $got"
ok "default command: weir --help"

# 4. The configuration: entrypoint, user, workdir, ports, labels.
check_config() {
  local what=$1 want=$2 got
  got=$(podman image inspect --format "$what" "$tag")
  [ "$got" = "$want" ] || fail "image $what is '$got', expected '$want'"
}
check_config '{{json .Config.Entrypoint}}' '["/usr/bin/tini","--","/usr/local/bin/weir"]'
check_config '{{json .Config.Cmd}}' '["--help"]'
check_config '{{.Config.User}}' '10001:10001'
check_config '{{.Config.WorkingDir}}' '/var/lib/weir'
check_config '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' '7070/tcp 7071/tcp 8080/tcp '
check_config '{{index .Config.Labels "org.opencontainers.image.licenses"}}' 'Apache-2.0'
check_config '{{index .Config.Labels "org.opencontainers.image.version"}}' "$version"
got=$(run --entrypoint /bin/sh "$tag" -c 'echo "$(id -u):$(id -g) $(pwd) $(stat -c %u:%g /var/lib/weir)"; touch /var/lib/weir/probe') \
  || fail "cannot run a shell in $tag as the weir user, or /var/lib/weir is not writable: $got"
[ "$got" = "10001:10001 /var/lib/weir 10001:10001" ] \
  || fail "user/workdir in the container: '$got', expected '10001:10001 /var/lib/weir 10001:10001'"
ok "user 10001:10001, /var/lib/weir owned and writable, entrypoint, ports, labels"

# 5. tini is PID 1 and forwards SIGTERM: a coordinator (default job spec)
#    shuts down cleanly with exit status 0.
podman_ run -d --name "$container" --network none "${limits[@]}" "$tag" coordinator >/dev/null \
  || fail "cannot start weir coordinator in $tag"
for _ in $(seq 50); do
  podman logs "$container" 2>&1 | grep -q 'coordinator listening' && break
  sleep 0.2
done
podman logs "$container" 2>&1 | grep -q 'coordinator listening' \
  || fail "the coordinator did not start: $(podman logs "$container" 2>&1 | tail -n 5)"
pid1=$(podman_ exec "$container" cat /proc/1/comm) || fail "podman exec in the coordinator failed"
[ "$pid1" = tini ] || fail "PID 1 is '$pid1', expected tini"
podman_ stop -t 30 "$container" >/dev/null || fail "podman stop failed"
status=$(podman inspect --format '{{.State.ExitCode}}' "$container")
podman logs "$container" 2>&1 | grep -q 'shutting down' \
  || fail "the coordinator did not log its shutdown on SIGTERM"
[ "$status" = 0 ] || fail "the coordinator exited with $status after SIGTERM, expected 0"
ok "tini is PID 1; SIGTERM stops the coordinator cleanly (exit 0)"

echo "test-image: PASS ($tag, $expected)" >&2
