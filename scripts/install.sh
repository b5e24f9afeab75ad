#!/usr/bin/env bash
# Installs the build and test toolchain. Idempotent: every step checks first,
# so a machine that already has everything finishes in a second or two.
set -euo pipefail

cd "$(dirname "$0")/.."

CARGO_LEPTOS_VERSION=0.3.10
WASM_BINDGEN_VERSION=0.2.130 # must equal the wasm-bindgen crate pinned in Cargo.toml

# cargo-installed tools land here; make sure later checks can see them.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

say() { printf 'install: %s\n' "$*"; }

need() {
	if ! command -v "$1" >/dev/null 2>&1; then
		say "error: '$1' not found; $2" >&2
		exit 1
	fi
}

need rustup "install Rust from https://rustup.rs"
need cargo "install Rust from https://rustup.rs"
need npm "install Node.js 20 or newer"

# --- Rust targets and components -------------------------------------------
if rustup target list --installed | grep -qx 'wasm32-unknown-unknown'; then
	say "wasm32-unknown-unknown target: present"
else
	say "wasm32-unknown-unknown target: adding"
	rustup target add wasm32-unknown-unknown
fi

for component in rustfmt clippy; do
	if rustup component list --installed | grep -q "^${component}-"; then
		say "$component: present"
	else
		say "$component: adding"
		rustup component add "$component"
	fi
done

# --- cargo-leptos -----------------------------------------------------------
# 0.3.11 needs a newer rustc than the workspace's MSRV; 0.3.10 builds with --locked.
if cargo leptos --version 2>/dev/null | grep -Eq "(^| )${CARGO_LEPTOS_VERSION//./\\.}\$"; then
	say "cargo-leptos $CARGO_LEPTOS_VERSION: present"
else
	say "cargo-leptos $CARGO_LEPTOS_VERSION: installing (about 12 minutes on 2 cores)"
	cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked
fi

# --- wasm-bindgen CLI -------------------------------------------------------
# Installed unlocked on purpose: its own lock file does not build with --locked.
if wasm-bindgen --version 2>/dev/null | grep -Eq " ${WASM_BINDGEN_VERSION//./\\.}\$"; then
	say "wasm-bindgen-cli $WASM_BINDGEN_VERSION: present"
else
	say "wasm-bindgen-cli $WASM_BINDGEN_VERSION: installing"
	cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

# --- cargo-deb (the agent's Debian package) ---------------------------------
CARGO_DEB_VERSION=3.8.0
if cargo deb --version 2>/dev/null | grep -Eq "(^| )${CARGO_DEB_VERSION//./\\.}\$"; then
	say "cargo-deb $CARGO_DEB_VERSION: present"
else
	say "cargo-deb $CARGO_DEB_VERSION: installing (about 3 minutes on 2 cores)"
	cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

# --- npm tools (tailwindcss, wasm-opt, playwright-core) ---------------------
if [ -d node_modules ] && [ -f node_modules/.package-lock.json ] &&
	! [ package-lock.json -nt node_modules/.package-lock.json ]; then
	say "node_modules: up to date"
else
	say "node_modules: npm ci"
	npm ci --no-audit --no-fund
fi

# --- Debian packages the tests run for real -------------------------------
# Chromium for the browser tests; nginx for the agent gateway behind a
# TLS-terminating proxy; rsyslog with its GnuTLS driver as the SIEM that
# audit forwarding sends to; pebble, the ACME test server the dashboard gets
# its certificate from (each started by its test, never as a service).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/sbin/rsyslogd ] || missing+=(rsyslog)
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || [ -n "$(find /usr/lib -name lmnsd_gtls.so -print -quit 2>/dev/null)" ] || missing+=(rsyslog-gnutls)
[ -x /usr/bin/pebble ] && [ -x /usr/bin/pebble-challtestsrv ] || missing+=(pebble)
# OpenSSH's ssh-keygen checks the SSH keys Pilothouse generates.
[ -x /usr/bin/ssh-keygen ] || missing+=(openssh-client)
if [ ${#missing[@]} -eq 0 ]; then
	say "chromium, nginx, rsyslog, pebble, ssh-keygen: present"
else
	say "installing from Debian: ${missing[*]}"
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		need sudo "run as root or install ${missing[*]} by hand"
		sudo=(sudo)
	fi
	"${sudo[@]}" apt-get update
	# RUNLEVEL=1: invoke-rc.d starts no service, so nginx and rsyslog are not left running.
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y "${missing[@]}"
fi

say "done"
