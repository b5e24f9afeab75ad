# Pilothouse build entry points. scripts/install.sh is idempotent and fast when
# the toolchain is already present, so every target runs it first.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# npm's tailwindcss and wasm-opt first: cargo-leptos would otherwise try to
# download its own (no GitHub access) or pick up Debian's broken wasm-opt.
export PATH := $(CURDIR)/node_modules/.bin:$(or $(CARGO_HOME),$(HOME)/.cargo)/bin:$(PATH)

DATA_DIR ?= ./data
LISTEN ?= 127.0.0.1:3000

.PHONY: all install build release run test e2e fmt lint clean-data

all: build

install:
	scripts/install.sh

# Debug build of server + wasm + CSS into target/debug and target/site.
build: install
	cargo leptos build

release: install
	cargo leptos build --release

run: release
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
