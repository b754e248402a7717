# syntax=docker/dockerfile:1
# The clone-controller image: built with the official Rust image, shipped on distroless (glibc,
# CA certificates, no shell), running as the distroless `nonroot` user (65532).
#
#   docker build -t ghcr.io/vmclone/clone-controller:latest .

# Bookworm, like the runtime image below, so the binary links against the same glibc.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace (see .dockerignore): cargo resolves every member even for one package.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --package clone-controller --bin clone-controller \
    && install -D --mode=0755 target/release/clone-controller /out/clone-controller

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/clone-controller /usr/local/bin/clone-controller
USER 65532:65532
# Metrics and health (the defaults of --metrics-addr and --health-addr).
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/clone-controller"]
