# syntax=docker/dockerfile:1
# The lifeboat image: `docker build -t etcd-lifeboat:0.1.0 .`
# Used by config/kubernetes/ (the CronJobs and the daemon Deployment); any lifeboat
# command runs as
#   docker run --rm etcd-lifeboat:0.1.0 snapshot status /data/snapshot.db

FROM rust:1.95-bookworm AS builder
# etcd-client generates its gRPC code with protoc at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The caches speed up rebuilds (BuildKit); target/ lives in a cache, so copy the binary out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lifeboat \
 && install -m 0755 target/release/lifeboat /usr/local/bin/lifeboat
# Man pages and shell completions, generated from the binary's own command definitions.
RUN mkdir -p /out/man/man1 /out/bash-completion/completions /out/zsh/vendor-completions \
             /out/fish/vendor_completions.d \
 && lifeboat man --dir /out/man/man1 \
 && gzip -9n /out/man/man1/*.1 \
 && lifeboat completions bash > /out/bash-completion/completions/lifeboat \
 && lifeboat completions zsh > /out/zsh/vendor-completions/_lifeboat \
 && lifeboat completions fish > /out/fish/vendor_completions.d/lifeboat.fish

# Same Debian release as the builder, so the glibc the binary links against is there.
FROM debian:bookworm-slim
# TLS roots for S3 endpoints with public certificates (etcd uses its own CA).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/bin/lifeboat /usr/local/bin/lifeboat
COPY --from=builder /out/ /usr/share/
# Non-root by default (numeric, so runAsNonRoot can check it). The backup CronJob and
# the daemon of config/kubernetes/{cronjob,daemon} override it with runAsUser: 0, only to
# read kubeadm's root-only (0600) etcd client key; the *-restricted overlays keep it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/lifeboat"]
CMD ["--help"]
