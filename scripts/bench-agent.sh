#!/usr/bin/env bash
# Agent footprint: RSS and CPU of a real `pilothouse-agent run` connected to a
# real `pilothouse serve` (release builds, the agent in its `agent-release`
# profile, loopback), idle except for its long-polls and a metrics sample every
# 60 s. Prints its RSS after 20 s and after 20 s + SECONDS, and its CPU time over
# those SECONDS. Prints figures; asserts nothing.
#
# Usage: [AGENT_BIN=FILE] scripts/bench-agent.sh [SECONDS]   (default 580: RSS after 10 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-580}

cargo build --release -q -p server --bin pilothouse
# AGENT_BIN measures another build (the static one: `make agent-static`).
if [ -z "${AGENT_BIN:-}" ]; then
	cargo build --profile agent-release -q -p agent --bin pilothouse-agent
fi
agent_bin=${AGENT_BIN:-target/agent-release/pilothouse-agent}

work=$(mktemp -d)
trap 'kill $server_pid $agent_pid 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -m 700 "$work/agent"

RUST_LOG=info target/release/pilothouse serve --data-dir "$work/data" --listen 127.0.0.1:0 \
	--agent-listen 127.0.0.1:0 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on http" "$work/server.log" 2>/dev/null && break; sleep 0.1; done
gateway=$(sed -E 's/\x1b\[[0-9;]*m//g' "$work/server.log" | grep -o 'agent gateway listening on https://[0-9.:]*' | awk '{print $5}')

echo "correct horse battery staple" | target/release/pilothouse admin add-user --data-dir "$work/data" \
	--org Bench --email bench@example.com --role owner >/dev/null
token=$(target/release/pilothouse admin registration-token --data-dir "$work/data" --org Bench 2>/dev/null | tail -n 1)
printf '%s\n' "$token" | "$agent_bin" register --server "$gateway" --token-file - \
	--state-dir "$work/agent" >/dev/null

"$agent_bin" run --state-dir "$work/agent" 2>"$work/agent.log" &
agent_pid=$!

rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$agent_pid/status"; }
sleep 20
echo "agent RSS after 20 s: $(rss_mib) MiB"
# Idle from here: the enrolment is done and the first metrics samples went out.
# CPU time from the scheduler's own accounting (/proc/PID/schedstat, field 1,
# nanoseconds): clock ticks (10 ms) are too coarse for a process that runs a
# few milliseconds at a time.
cpu_ns() { awk '{print $1}' "/proc/$agent_pid/schedstat"; }
c0=$(cpu_ns)
sleep "$secs"
c1=$(cpu_ns)
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$agent_pid/status")
echo "agent idle over ${secs} s: CPU $(awk -v d="$((c1 - c0))" 'BEGIN { printf "%.1f", d / 1e6 }') ms (schedstat), $(awk -v d="$((c1 - c0))" -v s="$secs" 'BEGIN { printf "%.3f", d / 1e6 / s }') ms CPU per second"
echo "agent RSS after $((secs + 20)) s: $(rss_mib) MiB (peak $(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }') MiB)"
echo "binary size $(stat -c %s "$agent_bin") bytes"
