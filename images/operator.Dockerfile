# syntax=docker/dockerfile:1
# bpfpin-operator: distroless, non-root (uid 65532). Build from the repository root:
#   docker build -f images/operator.Dockerfile -t bpfpin-operator:dev .
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
# Cache mounts keep the registry and target/ between builds; the binary is copied out of target/
# because a cache mount is not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=bpfpin-target \
    cargo build --release --locked -p bpfpin-operator \
    && install -D -m 0755 target/release/bpfpin-operator /out/bpfpin-operator

# cc: glibc + libgcc_s, which the Rust binary links against (bookworm's glibc, like the builder).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="bpfpin-operator" \
      org.opencontainers.image.description="bpfpin operator: node selection, BpfObject status, deletion finalizer" \
      org.opencontainers.image.source="https://github.com/bpfpin/bpfpin" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bpfpin-operator /usr/local/bin/bpfpin-operator
USER 65532:65532
# /healthz, /readyz, /metrics
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/bpfpin-operator"]
