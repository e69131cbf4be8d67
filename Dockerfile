# The container image the Kubernetes files in deploy/ run (registry.example.com/hidream-batch).
#   docker build -t hidream-batch .
#   docker run --rm -e HIDREAM_API_TOKEN -v "$PWD:/work" -w /work hidream-batch run manifests/sweep.yaml --dry-run
# Build stage: the `dist` profile (fat LTO), as shipped; rustls, so no OpenSSL in either stage.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked && cp target/dist/hidream-batch /hidream-batch

# Runtime: a small Debian with CA certificates (the API is HTTPS), as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /nonexistent --shell /usr/sbin/nologin hidream
COPY --from=build /hidream-batch /usr/local/bin/hidream-batch
USER 10001
# PID 1 is the binary itself: SIGTERM reaches it (in-flight requests finish, exit 130).
ENTRYPOINT ["/usr/local/bin/hidream-batch"]
