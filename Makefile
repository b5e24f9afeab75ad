# Pilothouse build entry points. scripts/install.sh is idempotent and fast when
# the toolchain is already present, so every target runs it first.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# npm's tailwindcss and wasm-opt first: cargo-leptos would otherwise try to
# download its own (no GitHub access) or pick up Debian's broken wasm-opt.
export PATH := $(CURDIR)/node_modules/.bin:$(or $(CARGO_HOME),$(HOME)/.cargo)/bin:$(PATH)

DATA_DIR ?= ./data
LISTEN ?= 127.0.0.1:3000
# The release key agent builds are signed with, made on first use. It belongs
# to whoever builds releases: in production keep it off the control plane
# (docs/agent-install.md).
RELEASE_KEY ?= ./release.key

.PHONY: all install build release agent agent-static deb run test e2e fmt lint clean-data

all: build

install:
	scripts/install.sh

# Debug build of server + wasm + CSS into target/debug and target/site.
build: install
	cargo leptos build

release: install
	cargo leptos build --release

# The agent as shipped (profile agent-release), signed with RELEASE_KEY into
# the releases the gateway serves to `/install/agent.sh`.
agent: release
	cargo build --profile agent-release -p agent --bin pilothouse-agent
	test -f $(RELEASE_KEY) || target/release/pilothouse release keygen --out $(RELEASE_KEY) >/dev/null
	target/release/pilothouse release sign --key $(RELEASE_KEY) \
		--binary target/agent-release/pilothouse-agent --out $(DATA_DIR)/releases

# The agent as one static binary (x86_64 musl) that runs on any Linux
# distribution; needs `rustup target add x86_64-unknown-linux-musl` and musl-gcc
# (Debian's musl-tools).
agent-static: install
	cargo build --target x86_64-unknown-linux-musl --profile agent-release -p agent --bin pilothouse-agent

# The Debian package of the agent as shipped, in target/debian/.
deb: install
	cargo deb -p agent --profile agent-release

run: agent
	target/release/pilothouse serve --data-dir $(DATA_DIR) --listen $(LISTEN)

test: install
	scripts/test.sh

# Browser tests only, against a fresh debug build.
e2e: build
	node end2end/run.mjs

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean-data:
	rm -rf $(DATA_DIR)
