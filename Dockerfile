# vpslens container image: build with the Rust toolchain, run from a distroless image as a
# non-root user (uid 65532, the one k8s/ sets) with nothing but the binary and glibc.
#
#   docker build -t ghcr.io/example/vpslens:0.1.0 .
#
# The image has no shell; the Kubernetes manifests run it with a read-only root filesystem.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p vpslens \
    && install -D -m 0755 target/release/vpslens /out/vpslens

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/vpslens /usr/local/bin/vpslens
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/vpslens"]
CMD ["run", "--config", "/etc/vpslens/config.yaml"]
