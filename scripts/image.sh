#!/usr/bin/env bash
# Builds the Weir container image without a Docker daemon (podman/buildah).
#
#   scripts/image.sh                          # podman build of ./Dockerfile
#   scripts/image.sh --binary PATH            # runtime image from a prebuilt
#                                             # `weir` (no Rust build)
#   options: --tag NAME     image name (default weir:<workspace version>)
#            --out FILE.tar also save the image as an OCI archive
#            --base auto|registry|mmdebstrap  (with --binary; default auto)
#
# With --binary the base is debian:bookworm-slim from the registry when the
# registry answers, else a bookworm root file system made by mmdebstrap
# from the Debian mirror this machine's apt uses; either way it gets
# ca-certificates, tini, libstdc++6, the user weir (uid/gid 10001) and the
# same entrypoint, user, workdir, ports and labels as the Dockerfile.
#
# Environment: WEIR_BINARY (= --binary), WEIR_IMAGE_TAG (= --tag),
# WEIR_IMAGE_BASE (= --base), WEIR_DEBIAN_MIRROR / WEIR_DEBIAN_SECURITY_MIRROR
# (mmdebstrap's mirrors), WEIR_OCI_RUNTIME (podman's OCI runtime; default:
# podman's, or runc where crun cannot run: cgroup v1/v2 hybrid hosts),
# WEIR_PODMAN_ARGS (extra global arguments to the podman calls). See
# docs/image.md.
#
# Sourcing this file (`. scripts/image.sh`) only defines its functions.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim
RUNTIME_PACKAGES=ca-certificates,tini,libstdc++6
IMAGE_SOURCE=https://github.com/weir-stream/weir

die() { echo "image.sh: error: $*" >&2; exit 1; }
note() { echo "image.sh: $*" >&2; }

# The workspace version (Cargo.toml's [workspace.package] version).
workspace_version() {
  sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' \
    "$ROOT/Cargo.toml" | head -n1
}

# apt_install where there is apt (Debian/Ubuntu); elsewhere the tools
# must be installed already (checked by the callers).
ensure_packages() {
  if command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; then
    apt_install "$@"
  fi
}

# Installs podman (and what it needs to run containers here).
install_podman() {
  local pkgs=(podman)
  # Rootless podman needs the uid maps, an overlay in user space and a
  # user-mode network; root does not.
  [ "$(id -u)" = 0 ] || pkgs+=(uidmap fuse-overlayfs slirp4netns)
  [ "$(oci_runtime)" = runc ] && pkgs+=(runc)
  ensure_packages "${pkgs[@]}"
  command -v podman >/dev/null || die "podman is not installed (and there is no apt-get to install it)"
}

# True when cgroup v1 and v2 are both mounted with controllers on v2
# (systemd's "hybrid" layout), where crun refuses to start containers
# ("cgroups in hybrid mode not supported, drop all controllers from
# cgroupv2") and runc works.
cgroup_hybrid() {
  [ ! -e /sys/fs/cgroup/cgroup.controllers ] \
    && grep -q '[a-z]' /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null
}

# The OCI runtime to ask podman for ("" = podman's default).
oci_runtime() {
  if [ -n "${WEIR_OCI_RUNTIME:-}" ]; then
    echo "$WEIR_OCI_RUNTIME"
  elif cgroup_hybrid; then
    echo runc
  fi
}

# Arguments for every podman call: the runtime, then WEIR_PODMAN_ARGS.
podman_args() {
  local rt
  rt=$(oci_runtime)
  [ -z "$rt" ] || printf '%s\n' --runtime "$rt"
  # shellcheck disable=SC2086
  [ -z "${WEIR_PODMAN_ARGS:-}" ] || printf '%s\n' $WEIR_PODMAN_ARGS
}

# Arguments for `podman run`/`podman build`: without CAP_SYS_RESOURCE (as in
# some sandboxes) podman's default rlimits (nofile 1048576, nproc above
# the pid limit) cannot be set ("setrlimit `RLIMIT_NOFILE`: Operation not
# permitted"), so ask for the limits this process already has. Nothing
# when the capability is there.
podman_limit_args() {
  local capeff
  capeff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
  if [ -n "$capeff" ] && (( (16#$capeff >> 24 & 1) == 0 )); then
    local nofile nproc pidmax
    nofile=$(ulimit -Hn)
    nproc=$(ulimit -Hu)
    pidmax=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)
    # podman lowers its own RLIMIT_NPROC to the pid limit.
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pidmax" ]; then nproc=$pidmax; fi
    [ "$nofile" != unlimited ] || nofile=1048576
    printf '%s\n' --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc"
  fi
}

# podman with podman_args.
podman_() {
  local args
  mapfile -t args < <(podman_args)
  podman "${args[@]}" "$@"
}

# True when the registry of the runtime image answers: pulls it (it is
# needed anyway). The error goes to $PULL_ERROR.
PULL_ERROR=""
registry_reachable() {
  local out
  if podman_ image exists "$RUNTIME_IMAGE" 2>/dev/null; then return 0; fi
  if out=$(timeout 120 podman pull -q "$RUNTIME_IMAGE" 2>&1); then
    return 0
  fi
  PULL_ERROR=$(printf '%s\n' "$out" | tail -n1)
  return 1
}

# The Debian mirrors apt uses here for bookworm and bookworm-security
# (e.g. "http://deb.debian.org/debian/"), else deb.debian.org.
debian_mirror() {
  local suite=$1 fallback=$2 uri
  uri=$(apt-get indextargets --format '$(CODENAME) $(REPO_URI)' 2>/dev/null \
    | awk -v s="$suite" '$1 == s { print $2; exit }')
  echo "${uri:-$fallback}"
}

# The runtime configuration, as Dockerfile-style instructions (for
# `podman import --change`) and the matching `buildah config` arguments.
runtime_changes() {
  local version=$1
  cat <<EOF
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/weir"]
CMD ["--help"]
USER 10001:10001
WORKDIR /var/lib/weir
ENV HOME=/var/lib/weir
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EXPOSE 7070
EXPOSE 7071
EXPOSE 8080
STOPSIGNAL SIGTERM
LABEL org.opencontainers.image.title=weir
LABEL org.opencontainers.image.description="Weir: a distributed stream processor for per-device IoT windows"
LABEL org.opencontainers.image.source=$IMAGE_SOURCE
LABEL org.opencontainers.image.licenses=Apache-2.0
LABEL org.opencontainers.image.version=$version
EOF
}

# The user, the state directory and the binary, in the root file system
# at $1 (run from mmdebstrap's customize hook) or in a buildah container.
SETUP_USER='getent group weir >/dev/null || groupadd --gid 10001 weir
getent passwd weir >/dev/null || useradd --uid 10001 --gid 10001 --home-dir /var/lib/weir --no-create-home --shell /usr/sbin/nologin weir
install -d -o 10001 -g 10001 -m 0750 /var/lib/weir'

# --binary, no registry: a bookworm root file system from the Debian
# mirror (mmdebstrap), imported as an image.
build_with_mmdebstrap() {
  local binary=$1 tag=$2 version=$3
  ensure_packages mmdebstrap
  command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (and there is no apt-get to install it)"
  local main security work
  main=$(debian_mirror bookworm http://deb.debian.org/debian)
  security=$(debian_mirror bookworm-security http://deb.debian.org/debian-security)
  main=${WEIR_DEBIAN_MIRROR:-$main}
  security=${WEIR_DEBIAN_SECURITY_MIRROR:-$security}
  work=$(mktemp -d "${TMPDIR:-/tmp}/weir-image.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  note "making a bookworm root file system from $main (mmdebstrap)"
  # minbase (as debian:bookworm-slim: apt, no docs, no man pages, no
  # locales); the binary is run once inside to check its libraries.
  if ! mmdebstrap --variant=minbase --include="$RUNTIME_PACKAGES" \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --customize-hook="upload '$binary' /usr/local/bin/weir" \
      --customize-hook='chroot "$1" chmod 0755 /usr/local/bin/weir' \
      --customize-hook="chroot \"\$1\" sh -ec '$SETUP_USER'" \
      --customize-hook='chroot "$1" /usr/local/bin/weir --version >&2' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      --format=tar bookworm "$work/rootfs.tar" \
      "deb $main bookworm main" "deb $main bookworm-updates main" \
      "deb $security bookworm-security main" >"$work/mmdebstrap.log" 2>&1; then
    tail -n 30 "$work/mmdebstrap.log" >&2
    die "mmdebstrap could not make the root file system from $main (log above); set WEIR_DEBIAN_MIRROR to a reachable Debian mirror"
  fi
  local changes=() line
  while IFS= read -r line; do changes+=(--change "$line"); done < <(runtime_changes "$version")
  note "importing as $tag (podman import)"
  podman_ import -q "${changes[@]}" --message "weir $version from $(basename "$binary") on mmdebstrap bookworm" \
    "$work/rootfs.tar" "$tag" >/dev/null \
    || die "podman import of the root file system failed"
  rm -rf "$work"
  trap - EXIT
}

# --binary, registry reachable: debian:bookworm-slim plus the binary
# (buildah, the same steps as the Dockerfile's runtime stage).
build_with_buildah() {
  local binary=$1 tag=$2 version=$3
  ensure_packages buildah
  command -v buildah >/dev/null || die "buildah is not installed (and there is no apt-get to install it)"
  local rt ctr
  rt=$(oci_runtime)
  local bargs=()
  [ -z "$rt" ] || bargs+=(--runtime "$rt")
  # (buildah takes the rlimits of the container's RUN steps at `from`.)
  local limits
  mapfile -t limits < <(podman_limit_args)
  ctr=$(buildah from --pull=never "${limits[@]}" "$RUNTIME_IMAGE")
  # shellcheck disable=SC2064
  trap "buildah rm '$ctr' >/dev/null 2>&1 || true" EXIT
  buildah run "${bargs[@]}" --user root "$ctr" -- sh -ec "
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${RUNTIME_PACKAGES//,/ } >/dev/null
    rm -rf /var/lib/apt/lists/*
    $SETUP_USER" || die "installing the runtime packages in $RUNTIME_IMAGE failed (does the container reach a Debian mirror?)"
  buildah copy --chmod 0755 "$ctr" "$binary" /usr/local/bin/weir >/dev/null
  buildah run "${bargs[@]}" --user 10001:10001 "$ctr" -- /usr/local/bin/weir --version >&2 \
    || die "the binary does not run on $RUNTIME_IMAGE (missing libraries? wrong architecture?)"
  local version_label=org.opencontainers.image.version=$version
  # (The base's CMD cleared first: buildah warns about it otherwise.)
  buildah config --cmd '[]' "$ctr"
  buildah config \
    --entrypoint '["/usr/bin/tini", "--", "/usr/local/bin/weir"]' --cmd '--help' \
    --user 10001:10001 --workingdir /var/lib/weir --env HOME=/var/lib/weir \
    --port 7070/tcp --port 7071/tcp --port 8080/tcp --stop-signal SIGTERM \
    --label org.opencontainers.image.title=weir \
    --label "org.opencontainers.image.description=Weir: a distributed stream processor for per-device IoT windows" \
    --label "org.opencontainers.image.source=$IMAGE_SOURCE" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label "$version_label" "$ctr"
  buildah commit -q "$ctr" "$tag" >/dev/null
  buildah rm "$ctr" >/dev/null
  trap - EXIT
}

# Default: the Dockerfile, Rust build included.
build_dockerfile() {
  local tag=$1 version=$2
  if ! registry_reachable; then
    die "cannot pull $RUNTIME_IMAGE ($PULL_ERROR); the Dockerfile build needs a container registry for its base images (rust, debian). Without one, build the binary (cargo build --release -p weir-cli) and run: scripts/image.sh --binary \$CARGO_TARGET_DIR/release/weir"
  fi
  local limits
  mapfile -t limits < <(podman_limit_args)
  note "podman build of $ROOT/Dockerfile (a release build of Weir: slow)"
  podman_ build "${limits[@]}" --build-arg "VERSION=$version" -t "$tag" -f "$ROOT/Dockerfile" "$ROOT" \
    || die "podman build failed (output above)"
}

main() {
  local binary=${WEIR_BINARY:-} tag=${WEIR_IMAGE_TAG:-} out="" base=${WEIR_IMAGE_BASE:-auto}
  while [ $# -gt 0 ]; do
    case "$1" in
      --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
      --binary=*) binary=${1#*=}; shift ;;
      --tag) [ $# -ge 2 ] || die "--tag needs a name"; tag=$2; shift 2 ;;
      --tag=*) tag=${1#*=}; shift ;;
      --out) [ $# -ge 2 ] || die "--out needs a file name"; out=$2; shift 2 ;;
      --out=*) out=${1#*=}; shift ;;
      --base) [ $# -ge 2 ] || die "--base needs auto, registry or mmdebstrap"; base=$2; shift 2 ;;
      --base=*) base=${1#*=}; shift ;;
      -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; return 0 ;;
      *) die "unknown argument: $1 (see --help)" ;;
    esac
  done
  local version
  version=$(workspace_version)
  [ -n "$version" ] || die "no [workspace.package] version in $ROOT/Cargo.toml"
  tag=${tag:-weir:$version}
  case "$base" in auto|registry|mmdebstrap) ;; *) die "--base must be auto, registry or mmdebstrap, not '$base'" ;; esac

  if [ "$(uname -s)" != Linux ]; then
    die "podman/buildah builds without a daemon need Linux (on macOS: docker build -t weir . or podman machine)"
  fi
  install_podman

  if [ -n "$binary" ]; then
    [ -f "$binary" ] || die "--binary $binary: no such file"
    [ -x "$binary" ] || die "--binary $binary: not executable"
    binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
    if command -v file >/dev/null && ! file -L "$binary" | grep -q 'ELF 64-bit.*x86-64' \
        && [ "$(uname -m)" = x86_64 ]; then
      die "--binary $binary is not an x86-64 Linux executable: $(file -bL "$binary")"
    fi
    case "$base" in
      registry)
        registry_reachable || die "cannot pull $RUNTIME_IMAGE: $PULL_ERROR"
        build_with_buildah "$binary" "$tag" "$version" ;;
      mmdebstrap)
        build_with_mmdebstrap "$binary" "$tag" "$version" ;;
      auto)
        if registry_reachable; then
          note "base: $RUNTIME_IMAGE from the registry"
          build_with_buildah "$binary" "$tag" "$version"
        else
          note "no container registry ($PULL_ERROR); base: mmdebstrap"
          build_with_mmdebstrap "$binary" "$tag" "$version"
        fi ;;
    esac
  else
    [ "$base" = auto ] || die "--base only applies with --binary"
    build_dockerfile "$tag" "$version"
  fi

  if [ -n "$out" ]; then
    rm -f "$out"
    podman_ save -q --format oci-archive -o "$out" "$tag" || die "podman save to $out failed"
    note "saved $tag to $out (OCI archive; load with: podman load -i $out, or skopeo copy oci-archive:$out ...)"
  fi
  note "built $tag"
  echo "$tag"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
