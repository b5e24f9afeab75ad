#!/usr/bin/env bash
# Self-update latency: the time from an Owner's "Update agent" (the
# update-agent server function over HTTP) to the agent reporting the new
# version to the control plane, with a real `pilothouse serve` and a real
# `pilothouse-agent run` under a restart loop (as systemd's Restart=always),
# release builds, loopback. Each round signs the same binary as a newer
# version. Prints figures; asserts nothing.
#
# Usage: scripts/bench-update.sh [ROUNDS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}

cargo build --release -q -p server --bin pilothouse
cargo build --profile agent-release -q -p agent --bin pilothouse-agent
server_bin=target/release/pilothouse
agent_bin=target/agent-release/pilothouse-agent

work=$(mktemp -d)
cleanup() {
	[ -n "${loop_pid:-}" ] && kill -- "-$loop_pid" 2>/dev/null || true
	[ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -m 700 "$work/agent"

"$server_bin" release keygen --out "$work/release.key" >/dev/null 2>&1
RUST_LOG=info "$server_bin" serve --data-dir "$work/data" --listen 127.0.0.1:0 \
	--agent-listen 127.0.0.1:0 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on http" "$work/server.log" 2>/dev/null && break; sleep 0.1; done
clean_log() { sed -E 's/\x1b\[[0-9;]*m//g' "$work/server.log"; }
gateway=$(clean_log | grep -o 'agent gateway listening on https://[0-9.:]*' | awk '{print $5}')
web=$(clean_log | grep -o 'listening on http://[0-9.:]*' | head -n 1 | awk '{print $3}')

echo "correct horse battery staple" | "$server_bin" admin add-user --data-dir "$work/data" \
	--org Bench --email bench@example.com --role owner >/dev/null
token=$("$server_bin" admin registration-token --data-dir "$work/data" --org Bench 2>/dev/null | tail -n 1)
printf '%s\n' "$token" | "$agent_bin" register --server "$gateway" --token-file - \
	--state-dir "$work/agent" >/dev/null 2>&1
# The first release fixes the releases directory's key; the agent pins it.
"$server_bin" release sign --key "$work/release.key" --binary "$agent_bin" \
	--out "$work/data/releases" --version 1.0.0 >/dev/null
cat >"$work/agent.toml" <<EOF
release_key = "$work/data/releases/release-key.pem"
update_stable_after_secs = 1
EOF

setsid sh -c "while :; do '$agent_bin' run --state-dir '$work/agent' --config '$work/agent.toml'; sleep 0.2; done" \
	2>"$work/agent.log" &
loop_pid=$!

jar="$work/cookies"
curl -fsS -c "$jar" -b "$jar" -o /dev/null --data-urlencode "email=bench@example.com" \
	--data-urlencode "password=correct horse battery staple" "$web/api/login"
servers() { curl -fsS -c "$jar" -b "$jar" -X POST "$web/api/list-servers"; }
field() { python3 -c "import json,sys; s=json.load(sys.stdin); print(s[0]['$1'] if s else '')"; }
for _ in $(seq 100); do [ "$(servers | field online)" = True ] && break; sleep 0.1; done
id=$(servers | field id)
audit_count() {
	curl -fsS -c "$jar" -b "$jar" --data "limit=100" "$web/api/latest-audit-events" |
		python3 -c "import json,sys; print(sum(1 for e in json.load(sys.stdin) if e['action']=='agent.self_update_applied'))"
}

times=()
for round in $(seq "$rounds"); do
	version="1.0.$round"
	"$server_bin" release sign --key "$work/release.key" --binary "$agent_bin" \
		--out "$work/data/releases" --version "$version" >/dev/null
	t0=$(date +%s%N)
	curl -fsS -c "$jar" -b "$jar" -o /dev/null --data "id=$id" "$web/api/update-agent"
	until [ "$(servers | field agent_version)" = "$version" ]; do
		sleep 0.02
		if (($(date +%s%N) - t0 > 120000000000)); then
			echo "round $round: no report of $version after 120 s" >&2
			tail -n 20 "$work/agent.log" >&2
			exit 1
		fi
	done
	t1=$(date +%s%N)
	ms=$(((t1 - t0) / 1000000))
	times+=("$ms")
	echo "round $round: Update agent -> $version reported in $ms ms"
	# Wait for it to be marked stable (applied) before the next round.
	until [ "$(audit_count)" -ge "$round" ]; do sleep 0.2; done
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "Update agent -> new version reported, n=$rounds: median $(echo "$sorted" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ms, max $(echo "$sorted" | tail -n 1) ms"
echo "binary size $(stat -c %s "$agent_bin") bytes"
