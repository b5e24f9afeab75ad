#!/usr/bin/env bash
# Fuzzes the agent channel with cargo-fuzz (libFuzzer), SECONDS_PER_TARGET
# seconds per target (default 20), and prints one line per target:
#   fuzz <target>: <execs> execs in <N> s, <crashes> crashes
# Exits non-zero if any target crashed (a panic, a failed assertion, a
# sanitizer report, a timeout or running out of memory); the input that did it
# is kept in fuzz/artifacts/<target>/ and the command to replay it is printed.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   fuzz every target
#   scripts/fuzz.sh --write-seeds          rewrite the seed files in fuzz/corpus/
#
# Works from any directory. Installs cargo-fuzz if it is missing. Builds with
# the stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the -Z flags that
# cargo-fuzz passes for coverage and AddressSanitizer.
#
# The committed seeds in fuzz/corpus/<target>/ are only read. New inputs go to
# a working corpus: FUZZ_CORPUS_DIR/<target> if FUZZ_CORPUS_DIR is set (keep it
# under fuzz/work/, which git ignores, to carry a corpus from run to run),
# otherwise a temporary directory removed at the end.
set -euo pipefail

TARGETS=(envelope_open agent_requests registration_token)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ_DIR="$ROOT/fuzz"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export RUSTC_BOOTSTRAP=1

usage() {
	sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit 2
}

if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "installing cargo-fuzz"
	cargo install cargo-fuzz --locked
fi

if [[ -n ${FUZZ_CORPUS_DIR:-} ]]; then
	FUZZ_CORPUS_DIR=$(realpath -m -- "$FUZZ_CORPUS_DIR")
fi
cd "$FUZZ_DIR"

if [[ ${1:-} == --write-seeds ]]; then
	for target in "${TARGETS[@]}"; do
		CHANNEL_FUZZ_WRITE_SEEDS="$FUZZ_DIR/corpus" cargo fuzz run "$target" -- -runs=0
	done
	exit 0
fi

SECS=${1:-20}
[[ $SECS =~ ^[1-9][0-9]*$ ]] || usage

LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/pilothouse-fuzz.XXXXXX")
trap 'rm -rf "$LOG_DIR"' EXIT
WORK=${FUZZ_CORPUS_DIR:-$LOG_DIR/corpus}

cargo fuzz build >"$LOG_DIR/build.log" 2>&1 || {
	cat "$LOG_DIR/build.log"
	echo "fuzz: the fuzz targets did not build" >&2
	exit 1
}

failed=0
for target in "${TARGETS[@]}"; do
	log="$LOG_DIR/$target.log"
	mkdir -p "$WORK/$target" "$FUZZ_DIR/artifacts/$target"
	marker="$LOG_DIR/$target.start"
	touch "$marker"
	rc=0
	start=$SECONDS
	cargo fuzz run "$target" "$WORK/$target" "$FUZZ_DIR/corpus/$target" -- \
		-max_total_time="$SECS" -timeout=30 -print_final_stats=1 >"$log" 2>&1 || rc=$?

	execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n1)
	[[ -n $execs ]] || execs=$(sed -nE 's/^#([0-9]+)[[:space:]]+DONE.*/\1/p' "$log" | tail -n1)
	secs=$(sed -nE 's/^Done [0-9]+ runs in ([0-9]+) second.*/\1/p' "$log" | tail -n1)
	mapfile -t found < <(find "$FUZZ_DIR/artifacts/$target" -type f -newer "$marker" | sort)
	crashes=${#found[@]}
	if ((rc != 0 && crashes == 0)); then
		crashes=1
	fi
	echo "fuzz $target: ${execs:-?} execs in ${secs:-$((SECONDS - start))} s, $crashes crashes"
	if ((rc != 0 || crashes > 0)); then
		failed=1
		grep -E -m1 -A3 "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" | sed 's/^/    /' || tail -n 30 "$log"
		for f in "${found[@]}"; do
			echo "    artifact: ${f#"$ROOT"/}"
			echo "    replay:   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $target ${f#"$FUZZ_DIR"/})"
		done
	fi
done
exit "$failed"
