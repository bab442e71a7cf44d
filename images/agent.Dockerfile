# syntax=docker/dockerfile:1
# bpfpin-agent: distroless, runs as root (bpffs is root-owned; the chart adds only the
# capabilities it needs). Build from the repository root:
#   docker build -f images/agent.Dockerfile -t bpfpin-agent:dev .
# The context is filtered by .dockerignore (the Cargo workspace and images/ only).
# hack/images assembles the same image without Docker: it reads this file's final stage (only
# COPY --from=build /out/X DEST, USER, LABEL, EXPOSE, ENTRYPOINT and CMD are understood there),
# builds /out/X as the build stage does, and replaces the distroless base by the Debian 12
# packages it is made of (libc6, libgcc-s1, ca-certificates, distroless' users).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crds crds
COPY agent agent
COPY operator operator
COPY images/mount-bpffs.c images/mount-bpffs.c
# clang builds the agent's XDP dispatcher (agent/build.rs).
RUN apt-get update && apt-get install -y --no-install-recommends clang && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=bpfpin-target \
    cargo build --release --locked -p bpfpin-agent \
    && install -D -m 0755 target/release/bpfpin-agent /out/bpfpin-agent
# The chart's mount-bpffs init container: static, so it needs nothing from the runtime image.
RUN gcc -static -O2 -Wall -Wextra -Werror -o /out/bpfpin-mount-bpffs images/mount-bpffs.c \
    && strip /out/bpfpin-mount-bpffs

FROM gcr.io/distroless/cc-debian12
LABEL org.opencontainers.image.title="bpfpin-agent" \
      org.opencontainers.image.description="bpfpin per-node agent: loads, pins, attaches and garbage-collects eBPF objects under /sys/fs/bpf/bpfpin" \
      org.opencontainers.image.source="https://github.com/bpfpin/bpfpin" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bpfpin-agent /usr/local/bin/bpfpin-agent
COPY --from=build /out/bpfpin-mount-bpffs /usr/local/bin/bpfpin-mount-bpffs
USER 0:0
# /healthz, /readyz, /metrics
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/bpfpin-agent"]
CMD ["--help"]
