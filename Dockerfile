# turnd container image: a static binary in an empty image, run as a non-root user.
#
#   docker build -t turnd .
#   docker run -d --name turnd --network host \
#       -e TURND_CONFIG=/etc/turnd/turnd.toml -v "$PWD/turnd.toml:/etc/turnd/turnd.toml:ro" turnd
#
# See docs/deployment.md: host networking is the recommended mode (a TURN
# server hands out thousands of UDP relay ports, which port publishing handles badly), the
# narrow-port-range alternative, and `external_ips` behind NAT.
#
# Three stages, each with a name another builder can replace:
#   builder  compiles turnd (needs the Rust image and crates.io);
#   binary   holds only /turnd — `--build-context binary=DIR` (podman ≥ 4.2, docker buildx)
#            swaps in a directory with a turnd built elsewhere, and the builder is then skipped;
#   (last)   the runtime image, FROM scratch: nothing to pull, nothing but the binary.
# CI builds it that way with no registry at all (tests/container.rs).

# Pinned by digest (a tag can move). To update: docker buildx imagetools inspect rust:1.88-bookworm
FROM docker.io/library/rust:1.88-bookworm@sha256:af306cfa71d987911a781c37b59d7d67d934f49684058f96cf72079c3626bfe0 AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY build.rs ./
COPY ebpf ./ebpf
# The `xdp` feature (the kernel fast path, docs/xdp.md) compiles ebpf/turnd_xdp.c with clang;
# libbpf-dev has its helper headers. Nothing of them reaches the image: the program is
# embedded in the binary.
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang libbpf-dev linux-libc-dev \
    && rm -rf /var/lib/apt/lists/*
# A fully static glibc binary (crt-static): it runs in an empty image. turnd needs no NSS
# (no user or host-name lookups; every address in its configuration is an IP), which is what
# static glibc cannot do. The explicit --target keeps crt-static off build scripts and proc-macros.
RUN RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked --bin turnd --features xdp \
            --target x86_64-unknown-linux-gnu \
    && mkdir /out \
    && cp target/x86_64-unknown-linux-gnu/release/turnd /out/turnd \
    && /out/turnd --version

FROM scratch AS binary
COPY --from=builder /out/turnd /turnd

FROM scratch
LABEL org.opencontainers.image.title="turnd" \
      org.opencontainers.image.description="STUN/TURN relay server (RFC 8489, RFC 8656)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /turnd /usr/local/bin/turnd
# 65532 is distroless's "nonroot"; numeric, as an empty image has no /etc/passwd. Binding
# 3478, 5349 and 9641 needs no privilege; binding 443 would need CAP_NET_BIND_SERVICE.
USER 65532:65532
# STUN/TURN over UDP and TCP, TURN over TLS, and the admin HTTP listener (/metrics, /healthz,
# /readyz). The relay ports (relay_ports, default 49152-65535/udp) are not listed: with
# --network host they need no publishing; without it publish exactly the range you configure.
EXPOSE 3478/udp 3478/tcp 5349/tcp 9641/tcp
# No shell in the image: turnd asks its own /healthz, on the metrics_listen the configuration
# (TURND_CONFIG, TURND_* variables) names. Give the configuration through TURND_CONFIG rather
# than --config so this check reads the same file.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/turnd", "healthcheck", "--timeout", "3s"]
# Configuration: TURND_CONFIG=/path/to/mounted.toml and/or TURND_<KEY> variables, or flags
# after the image name. SIGTERM drains (see drain_timeout): give `docker stop` a --time longer.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/turnd"]
