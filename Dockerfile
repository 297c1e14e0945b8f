# syntax=docker/dockerfile:1
# Multi-stage build: compile in the full Rust image (cmake for Pingora's zlib-ng; aws-lc, the
# one TLS library, builds with the image's C compiler), run from a slim Debian image as an
# unprivileged user.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
COPY benches ./benches
RUN cargo build --release --locked --bin hookgate \
 && strip target/release/hookgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin hookgate \
 && mkdir -p /var/lib/hookgate \
 && chown 10001:10001 /var/lib/hookgate
COPY --from=build /src/target/release/hookgate /usr/local/bin/hookgate
# The example config; mount your own over /etc/hookgate (certificates, schemas, hookgate.yaml).
COPY config /etc/hookgate
# mimalloc reads this before main: without eager arena commit, 10,000 idle connections hold
# 255 MiB instead of 850 MiB (docs/performance.md).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0
# The example config's file store (queue mode and durable keys): on a volume, so it outlives the
# container. The default upgrade socket goes to a private directory under XDG_RUNTIME_DIR.
ENV HOOKGATE_STATE_FILE=/var/lib/hookgate/hookgate.db \
    XDG_RUNTIME_DIR=/tmp
USER 10001:10001
VOLUME ["/etc/hookgate", "/var/lib/hookgate"]
# 8443 HTTPS webhooks, 8080 plain HTTP webhooks, 9090 admin (bind admin.addr to 0.0.0.0 in a
# container and keep the port private to your Prometheus).
EXPOSE 8443 8080 9090
ENTRYPOINT ["/usr/local/bin/hookgate"]
CMD ["run", "-c", "/etc/hookgate/hookgate.yaml"]
