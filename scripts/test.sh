#!/usr/bin/env bash
# The whole check, as CI runs it: format, lints, Rust tests against PostgreSQL,
# a short fuzzing run, a debug site build, then the browser tests. Stops at the
# first failing step.
set -euo pipefail

cd "$(dirname "$0")/.."

# npm's tailwindcss and wasm-opt must come first: otherwise cargo-leptos tries
# to download its own copies (no GitHub access here) or finds Debian's broken
# wasm-opt.
export PATH="$PWD/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# shellcheck source=scripts/pg.sh
. scripts/pg.sh

STEP_NAMES=()
STEP_SECS=()
TOTAL_START=$SECONDS
LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/pilothouse-test.XXXXXX")

on_exit() {
	pg_cleanup
	rm -rf "$LOG_DIR"
}

fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

summary() {
	local i
	printf '\nstep durations:\n'
	for i in "${!STEP_NAMES[@]}"; do
		printf '  %-24s %s\n' "${STEP_NAMES[$i]}" "$(fmt_secs "${STEP_SECS[$i]}")"
	done
}

# step NAME COMMAND [ARG...]: runs in this shell (pg_setup's exports must stick).
step() {
	local name=$1 start=$SECONDS rc=0
	shift
	printf '\n==> [%s] %s: %s\n' "$(date +%H:%M:%S)" "$name" "$*"
	"$@" || rc=$?
	STEP_NAMES+=("$name")
	STEP_SECS+=($((SECONDS - start)))
	if ((rc != 0)); then
		summary
		printf '\nFAILED at step "%s" (exit %d) after %s\n' "$name" "$rc" "$(fmt_secs $((SECONDS - TOTAL_START)))"
		exit "$rc"
	fi
}

# logged LOG COMMAND [ARG...]: shows the output and keeps a copy for counting.
logged() {
	local log=$1
	shift
	"$@" 2>&1 | tee "$LOG_DIR/$log"
}

# Sums "N passed" and "N failed" over the matching result lines of a log.
count() {
	sed -E 's/\x1b\[[0-9;]*m//g' "$LOG_DIR/$1" | grep -E "$2" |
		sed -nE 's/^(.*[^0-9])?([0-9]+) passed[;,] ([0-9]+) failed.*$/\2 \3/p' |
		awk '{ p += $1; f += $2 } END { printf "%d %d\n", p, f }'
}

# PostgreSQL halves that skipped (only when no server was found outside CI).
export PILOTHOUSE_TEST_SKIP_LOG="$LOG_DIR/pg-skips"
: >"$PILOTHOUSE_TEST_SKIP_LOG"

# A clean clone builds everything once: incremental caches would only take disk
# (several GB over the test binaries) without ever being reused.
if [[ "${CI:-}" == "true" ]]; then
	export CARGO_INCREMENTAL=0
fi

# Disk: what the build takes is printed at the end, and a cold run (no target/
# yet) on a machine short of room is told so before a build fails half-way with
# "No space left on device".
disk_free_gb() { df -Pk . | awk 'NR == 2 { printf "%d", $4 / 1048576 }'; }
NEED_GB=${PILOTHOUSE_TEST_NEED_GB:-25}
if [[ ! -d target ]] && (($(disk_free_gb) < NEED_GB)); then
	printf 'make test: only %d GB free here (%s); a cold run needs about %d GB for target/ and fuzz/target/.\n' \
		"$(disk_free_gb)" "$PWD" "$NEED_GB" >&2
	printf 'Free some space (for example `cargo clean` in another checkout) and run it again.\n' >&2
	exit 1
fi
printf 'disk: %d GB free before the build\n' "$(disk_free_gb)"

trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "fmt" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --exclude frontend --all-targets -- -D warnings
# The wasm crate is linted for the target it is built for; on the host its
# hydrate features would be unified with the server's ssr ones.
step "clippy (wasm)" cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings
step "postgres" pg_setup
step "cargo test" logged cargo-test.log cargo test --workspace --exclude frontend
# The fuzz crate is outside the workspace, so `cargo fmt --all` skips it.
step "fmt (fuzz)" cargo fmt --manifest-path fuzz/Cargo.toml -- --check
# Smoke fuzzing of the agent channel (envelopes, agent request bodies, the
# registration token): builds the fuzz crate, installing cargo-fuzz if it is
# missing, then 20 s per target; any crash fails the step.
step "fuzz (smoke)" logged fuzz.log scripts/fuzz.sh 20
step "site build" cargo leptos build
step "agent build" cargo build -p agent --bin pilothouse-agent
step "browser tests" logged e2e.log node end2end/run.mjs
pg_cleanup

read -r rust_passed rust_failed < <(count cargo-test.log '^test result: ')
read -r e2e_passed e2e_failed < <(count e2e.log '^[0-9]+ passed, [0-9]+ failed$')
pg_skipped=$(wc -l <"$PILOTHOUSE_TEST_SKIP_LOG")
summary
printf '\ndisk: target/ %s, fuzz/target/ %s, %d GB left free\n' \
	"$(du -sh target 2>/dev/null | cut -f1)" "$(du -sh fuzz/target 2>/dev/null | cut -f1)" "$(disk_free_gb)"
if ((pg_skipped > 0)); then
	printf '\nSKIP: %d tests or PostgreSQL test halves did not run:\n' "$pg_skipped"
	sed 's/^/  /' "$PILOTHOUSE_TEST_SKIP_LOG"
else
	printf '\nPostgreSQL: every PostgreSQL test half ran (0 skipped)\n'
fi
printf '\nall %d steps passed in %s (Rust tests: %d passed, browser tests: %d passed)\n' \
	"${#STEP_NAMES[@]}" "$(fmt_secs $((SECONDS - TOTAL_START)))" "$rust_passed" "$e2e_passed"
printf 'total: %d passed, %d failed, %d skipped\n' $((rust_passed + e2e_passed)) $((rust_failed + e2e_failed)) "$pg_skipped"
