#!/usr/bin/env bash
# PostgreSQL for the Rust tests.
#
# Sourced by scripts/test.sh (pg_setup, then pg_cleanup from an EXIT trap), or run
# directly to wrap one command:  scripts/pg.sh cargo test -p control
#
# Exports PILOTHOUSE_TEST_PG_URL (server URL without a database name, e.g.
# postgres://postgres@127.0.0.1:5432) and PILOTHOUSE_TEST_PG_PREFIX (tests create
# databases named <prefix>_<random>; pg_cleanup drops all of them).
#
# Server choice: $DATABASE_URL if it is a reachable postgres:// URL, else
# postgres://postgres@127.0.0.1:5432 if reachable, else a throwaway cluster that
# lives in a temporary directory until pg_cleanup. With none of these: an error
# when CI=true, a warning otherwise (PILOTHOUSE_TEST_SKIP_PG=1: the PostgreSQL tests
# then skip themselves, and each skip is listed in $PILOTHOUSE_TEST_SKIP_LOG).

PG_TMP=""   # throwaway cluster directory, when we started one
PG_BIN=""   # directory holding initdb and pg_ctl
PG_PORT=""
PG_AS=()    # prefix that runs the cluster tools as a non-root user

pg_say() { printf 'pg: %s\n' "$*"; }

# scheme://user[:password]@host:port, without database or query string.
pg_base_url() { sed -E 's#^(postgres(ql)?://[^/?]*).*$#\1#' <<<"$1"; }

pg_redact() { sed -E 's#(://[^:@/]*):[^@/]*@#\1:***@#' <<<"$1"; }

pg_reachable() {
	PGCONNECT_TIMEOUT=3 psql "$1/postgres" -XAtqc 'select 1' >/dev/null 2>&1
}

pg_free_port() {
	if command -v python3 >/dev/null 2>&1 &&
		python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null; then
		return 0
	fi
	local port
	for port in $(seq 54320 54999); do
		# A failed connect means nothing listens there.
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	return 1
}

pg_find_bin() {
	local dirs=() d
	for d in /usr/lib/postgresql/*/bin; do
		if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then dirs+=("$d"); fi
	done
	if ((${#dirs[@]})); then
		PG_BIN=$(printf '%s\n' "${dirs[@]}" | sort -V | tail -n 1)
		return 0
	fi
	if command -v initdb >/dev/null 2>&1; then
		d=$(dirname "$(readlink -f "$(command -v initdb)")")
		if [ -x "$d/pg_ctl" ]; then
			PG_BIN=$d
			return 0
		fi
	fi
	return 1
}

pg_start_throwaway() {
	pg_find_bin || {
		pg_say "no initdb/pg_ctl found (install postgresql)"
		return 1
	}
	local parent=${TMPDIR:-/tmp}
	if [ "$(id -u)" -eq 0 ]; then
		# initdb refuses to run as root: use the postgres system user.
		if ! id -u postgres >/dev/null 2>&1; then
			useradd --system --user-group --no-create-home --home-dir /nonexistent \
				--shell /usr/sbin/nologin postgres || return 1
		fi
		PG_AS=(runuser -u postgres --)
		parent=/tmp # TMPDIR may not be reachable for that user
	fi
	PG_TMP=$(mktemp -d "$parent/pilothouse-pg.XXXXXX") || return 1
	if ((${#PG_AS[@]})); then chown postgres "$PG_TMP" || return 1; fi

	pg_say "starting a throwaway cluster with $PG_BIN in $PG_TMP"
	if ! (cd "$PG_TMP" && "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_TMP/data" -U postgres \
		-A trust -E UTF8 --no-locale --no-sync >"$PG_TMP/initdb.log" 2>&1); then
		pg_say "initdb failed:"
		cat "$PG_TMP/initdb.log" >&2 || true
		return 1
	fi

	local attempt
	for attempt in 1 2 3; do
		PG_PORT=$(pg_free_port) || return 1
		# fsync off and friends: the data is thrown away at exit anyway.
		if (cd "$PG_TMP" && "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" \
			-l "$PG_TMP/server.log" -w -t 60 \
			-o "-h 127.0.0.1 -p $PG_PORT -k '$PG_TMP' -F -c max_connections=200 -c full_page_writes=off -c synchronous_commit=off" \
			start >/dev/null); then
			return 0
		fi
		pg_say "start on port $PG_PORT failed (attempt $attempt)"
	done
	tail -n 30 "$PG_TMP/server.log" >&2 || true
	return 1
}

pg_setup() {
	local url=""
	if ! command -v psql >/dev/null 2>&1; then
		pg_say "psql not found (install postgresql-client)"
	else
		if [[ "${DATABASE_URL:-}" =~ ^postgres(ql)?:// ]]; then
			url=$(pg_base_url "$DATABASE_URL")
			if pg_reachable "$url"; then
				pg_say "using \$DATABASE_URL server $(pg_redact "$url")"
			else
				pg_say "\$DATABASE_URL server $(pg_redact "$url") not reachable"
				url=""
			fi
		fi
		if [ -z "$url" ] && pg_reachable "postgres://postgres@127.0.0.1:5432"; then
			url="postgres://postgres@127.0.0.1:5432"
			pg_say "using $url"
		fi
		if [ -z "$url" ]; then
			if pg_start_throwaway; then
				url="postgres://postgres@127.0.0.1:$PG_PORT"
				pg_say "using throwaway cluster $url"
			else
				pg_stop_throwaway
			fi
		fi
	fi

	if [ -z "$url" ]; then
		unset PILOTHOUSE_TEST_PG_URL PILOTHOUSE_TEST_PG_PREFIX
		if [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; then
			pg_say "error: no PostgreSQL server available and CI=true; set DATABASE_URL or install postgresql" >&2
			return 1
		fi
		pg_say "warning: no PostgreSQL server available; PostgreSQL tests will be skipped and counted as SKIP" >&2
		PILOTHOUSE_TEST_SKIP_PG=1
		export PILOTHOUSE_TEST_SKIP_PG
		return 0
	fi

	PILOTHOUSE_TEST_PG_URL=$url
	PILOTHOUSE_TEST_PG_PREFIX="ph_t_$(date +%s)_$$"
	export PILOTHOUSE_TEST_PG_URL PILOTHOUSE_TEST_PG_PREFIX
	pg_say "PILOTHOUSE_TEST_PG_PREFIX=$PILOTHOUSE_TEST_PG_PREFIX"
}

pg_drop_test_databases() {
	local url=${PILOTHOUSE_TEST_PG_URL:-} prefix=${PILOTHOUSE_TEST_PG_PREFIX:-}
	[ -n "$url" ] && [ -n "$prefix" ] || return 0
	# The prefix is [a-z0-9_] only, so it is safe inside the SQL literal. left()
	# instead of LIKE because "_" is a LIKE wildcard.
	local names db count=0
	names=$(psql "$url/postgres" -XAtq -c \
		"select datname from pg_database where left(datname, ${#prefix}) = '$prefix'") || {
		pg_say "warning: could not list test databases"
		return 0
	}
	while IFS= read -r db; do
		[ -n "$db" ] || continue
		if psql "$url/postgres" -XAtq -v ON_ERROR_STOP=1 \
			-c "DROP DATABASE IF EXISTS \"${db//\"/\"\"}\" WITH (FORCE)" >/dev/null; then
			count=$((count + 1))
		else
			pg_say "warning: could not drop database $db"
		fi
	done <<<"$names"
	pg_say "dropped $count test database(s)"
}

pg_stop_throwaway() {
	[ -n "$PG_TMP" ] || return 0
	if [ -f "$PG_TMP/data/postmaster.pid" ]; then
		(cd "$PG_TMP" && "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1) || true
	fi
	rm -rf "$PG_TMP" || true
	PG_TMP=""
}

pg_cleanup() {
	# Runs from an explicit call and again from the EXIT trap: once is enough.
	[ -z "${PG_CLEANED:-}" ] || return 0
	PG_CLEANED=1
	if [ -n "$PG_TMP" ]; then
		pg_stop_throwaway # the databases go with the cluster
		pg_say "throwaway cluster removed"
	else
		pg_drop_test_databases || true
	fi
}

# Run directly: set up, run the given command, clean up.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	set -euo pipefail
	if (($# == 0)); then
		echo "usage: $0 COMMAND [ARG...]   (e.g. $0 cargo test -p control)" >&2
		exit 2
	fi
	trap pg_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	pg_setup
	"$@"
fi
