# etcd-lifeboat — the two commands that matter: `make demo` and `make test`.
# Both do all set-up on a fresh machine (test servers into .tools/, protoc if missing).

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build deps protoc demo test lint bench clean-tools

all: build

# External binaries (etcd 3.5.30 / 3.4.23 / 3.5.1, SeaweedFS, zstd, sshd, age, k8s-encode,
# kubectl, promtool, Azurite, moto) into .tools/,
# downloads cached in ~/.cache/etcd-lifeboat/; also installs protoc when missing.
deps:
	@scripts/install-test-deps.sh

# etcd-client's build script needs protoc and its well-known includes (Debian:
# protobuf-compiler + libprotobuf-dev); the script checks both by compiling a tiny .proto.
protoc:
	@scripts/install-test-deps.sh protoc

build: protoc
	$(CARGO) build --release --bins --examples

# A real run against a local etcd that it starts: sample Kubernetes-like data, a snapshot,
# then `lifeboat snapshot status` and `inspect` on it.
demo: deps build
	@scripts/demo.sh

# Every test, against real etcd, SeaweedFS, Azurite and moto servers on 127.0.0.1.
test: deps
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest
	$(CARGO) nextest run --all-targets --no-fail-fast

lint: protoc
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Benchmarks against the plain tools on the same data in the same run; writes
# docs/benchmarks.md. Takes several minutes (builds a >= 1 GiB database).
bench: deps build
	@scripts/bench.sh

clean-tools:
	rm -rf .tools
