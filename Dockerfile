# syntax=docker/dockerfile:1
# Multi-stage build of the operator: a Rust builder, then a distroless non-root runtime that holds
# only the binary (TLS via rustls with its bundled roots; glibc from the cc base image).
#
# Both base images are build arguments, so a mirror or a pinned digest can stand in for them.
# e2e/image.sh assembles the same runtime stage offline (no Docker, no registry) from this file.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Declared targets must exist for cargo to load the manifest.
COPY benches ./benches
# The workspace manifest names the e2e crate, so cargo needs it present to resolve the workspace.
COPY e2e ./e2e
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p keeper-operator --bin keeper-operator \
    && install -D -m 0755 target/release/keeper-operator /out/keeper-operator

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="keeper-operator" \
      org.opencontainers.image.description="Syncs Keeper Secrets Manager records into Kubernetes Secrets" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/keeper-operator /usr/local/bin/keeper-operator
# The distroless "nonroot" user; the chart also enforces runAsNonRoot.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/keeper-operator"]
CMD ["run"]
