# The Weir image: one `weir` binary on Debian bookworm (slim), tini as PID 1.
#
#   docker build -t weir .                      # with a Docker daemon
#   scripts/image.sh                            # podman/buildah, no daemon
#   scripts/image.sh --binary target/release/weir   # from a prebuilt binary
#
# Plain Dockerfile syntax on purpose (no BuildKit-only features such as
# cache mounts), so the classic builder, BuildKit, podman and buildah all
# build it. See docs/image.md.

# Fully qualified names: podman/buildah refuse ambiguous short names when
# several search registries are configured; Docker accepts them as well.
ARG RUST_IMAGE=docker.io/library/rust:1.88-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

# ---- stage 1: build --------------------------------------------------------
FROM ${RUST_IMAGE} AS build

# A C/C++ toolchain for RocksDB, libclang for its bindings, protoc for the
# gRPC definitions (the same list as scripts/lib.sh's install_build_deps).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config libclang-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
# The build directory inside the stage, whatever the environment says.
ENV CARGO_TARGET_DIR=/src/target
RUN cargo build --release --locked -p weir-cli \
 && install -D -m 0755 target/release/weir /out/weir \
 && strip --strip-debug /out/weir \
 && /out/weir --version

# ---- stage 2: runtime ------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="weir" \
      org.opencontainers.image.description="Weir: a distributed stream processor for per-device IoT windows" \
      org.opencontainers.image.source="https://github.com/weir-stream/weir" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# ca-certificates for TLS (Pulsar, S3, ClickHouse over HTTPS), tini as PID 1
# (forwards signals, reaps zombies), libstdc++6 for RocksDB's C++ (already
# in bookworm-slim; listed so that it stays there). scripts/image.sh
# --binary builds the same layout; keep the two in sync.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates tini libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 weir \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/weir --no-create-home \
      --shell /usr/sbin/nologin weir \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/weir

COPY --from=build /out/weir /usr/local/bin/weir

# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/weir
ENV HOME=/var/lib/weir

# 7070: coordinator gRPC; 7071: worker shuffle gRPC + /healthz /readyz
# /metrics; 8080: coordinator HTTP (REST admin API, probes, metrics).
EXPOSE 7070 7071 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/weir"]
CMD ["--help"]
