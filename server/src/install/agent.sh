#!/bin/sh
# Installs the Pilothouse agent on this server and registers it with the
# control plane at @SERVER_URL@, which served this script.
#
#   sh agent.sh [--token-file FILE] [--ca FILE] [--release-key FILE]
#               [--hostname NAME] [--no-start]
#
# The registration token is read from standard input (or --token-file), never
# from the command line. The script:
#   1. checks the control plane's CA against the pin inside the token (before
#      the token is sent anywhere), then fetches everything else over TLS
#      verified by that CA;
#   2. checks the agent binary's release signature with the release key: the
#      one given with --release-key, else the one pinned by an earlier install
#      (/etc/pilothouse/release-key.pem), else the control plane's;
#   3. installs /usr/local/bin/pilothouse-agent, the system user
#      pilothouse-agent, the state directory /var/lib/pilothouse-agent (0700),
#      /etc/pilothouse/agent.toml (kept if present) and the systemd unit;
#   4. registers the agent (skipped when it is already registered) and starts
#      the service.
# Running it again leaves one installation, and the binary it installs replaces
# any self-update the agent had applied. Exit status: 0 done, 1 refused or
# failed (with a sentence on stderr), 2 bad usage.
set -eu

SERVER_URL='@SERVER_URL@'
BIN=/usr/local/bin/pilothouse-agent
CONF_DIR=/etc/pilothouse
STATE_DIR=/var/lib/pilothouse-agent
UNIT=/etc/systemd/system/pilothouse-agent.service
USER_NAME=pilothouse-agent

say() { printf 'pilothouse install: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
usage() { say "$*"; exit 2; }

token_file=-
ca_file=
release_key=
hostname_arg=
start=yes
while [ $# -gt 0 ]; do
	case $1 in
	--token-file) [ $# -ge 2 ] || usage "--token-file needs a file (or - for standard input)"; token_file=$2; shift 2 ;;
	--ca) [ $# -ge 2 ] || usage "--ca needs a file"; ca_file=$2; shift 2 ;;
	--release-key) [ $# -ge 2 ] || usage "--release-key needs a file"; release_key=$2; shift 2 ;;
	--hostname) [ $# -ge 2 ] || usage "--hostname needs a name"; hostname_arg=$2; shift 2 ;;
	--no-start) start=no; shift ;;
	*) usage "unknown argument $1 (see the comment at the top of this script)" ;;
	esac
done

# --- what this machine must be ----------------------------------------------
[ "$(uname -s)" = Linux ] || die "this installer supports Linux only; this machine runs $(uname -s)"
case $(uname -m) in
x86_64 | amd64) platform=x86_64-linux ;;
aarch64 | arm64) platform=aarch64-linux ;;
*) die "no agent build exists for the $(uname -m) architecture (supported: x86_64, aarch64)" ;;
esac
[ "$(id -u)" = 0 ] || die "run this as root: it installs a system service"
for tool in curl openssl sha256sum useradd install; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is needed and not installed; install it and run this again"
done

# --- the token ----------------------------------------------------------------
if [ "$token_file" = - ]; then
	IFS= read -r token || [ -n "${token:-}" ] || usage "no registration token on standard input"
else
	[ -r "$token_file" ] || usage "cannot read the token file $token_file"
	IFS= read -r token <"$token_file" || [ -n "${token:-}" ] || usage "the token file $token_file is empty"
fi
token=$(printf '%s' "$token" | tr -d ' \r\t')
printf '%s\n' "$token" | grep -Eq '^pht1_[0-9a-fA-F]{32}_[0-9a-fA-F]{64}$' ||
	usage "the registration token must look like pht1_<32 hex>_<64 hex>; copy it again from the dashboard"
pin=$(printf '%s' "$token" | cut -d_ -f3 | tr 'A-F' 'a-f')

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# --- 1. the control plane's CA, checked against the token's pin ----------------
if [ -z "$ca_file" ]; then
	# Unverified on purpose: the pin below decides.
	curl -fsS --proto '=https' -k "$SERVER_URL/install/ca.pem" -o "$work/ca.pem" ||
		die "cannot reach the control plane at $SERVER_URL"
	ca_file=$work/ca.pem
fi
ca_pin=$(openssl x509 -in "$ca_file" -outform DER 2>/dev/null | sha256sum | cut -d' ' -f1)
[ "$ca_pin" = "$pin" ] ||
	die "the control plane's CA (SHA-256 $ca_pin) does not match the pin in the token ($pin): someone may be in the way; nothing was sent"

fetch() { # fetch PATH FILE: over TLS verified by the pinned CA
	curl -fsS --proto '=https' --cacert "$ca_file" "$SERVER_URL$1" -o "$2" ||
		die "cannot download $SERVER_URL$1"
}

# --- 2. the binary and its release signature -------------------------------------
fetch "/install/$platform/release.txt" "$work/release.txt"
fetch "/install/$platform/pilothouse-agent" "$work/pilothouse-agent"
if [ -n "$release_key" ]; then
	cp "$release_key" "$work/release-key.pem"
elif [ -f "$CONF_DIR/release-key.pem" ]; then
	cp "$CONF_DIR/release-key.pem" "$work/release-key.pem"
else
	fetch /install/release-key.pem "$work/release-key.pem"
fi
openssl pkey -pubin -in "$work/release-key.pem" -noout 2>/dev/null ||
	die "the release key is not a public key in PEM form"
key_fp=$(openssl pkey -pubin -in "$work/release-key.pem" -outform DER | sha256sum | cut -d' ' -f1)

field() { sed -n "s/^$1=//p" "$work/release.txt" | head -n 1; }
version=$(field version)
rel_platform=$(field platform)
sha=$(field sha256)
printf '%s\n' "$version" | grep -Eq '^[0-9][0-9A-Za-z.+-]{0,63}$' || die "the release manifest names no valid version"
[ "$rel_platform" = "$platform" ] || die "the control plane offered a build for $rel_platform to this $platform machine"
actual=$(sha256sum "$work/pilothouse-agent" | cut -d' ' -f1)
[ "$actual" = "$sha" ] || die "the downloaded agent's SHA-256 ($actual) is not the one its release manifest names ($sha)"
printf 'pilothouse/agent-release/v1\nversion=%s\nplatform=%s\nsha256=%s\n' "$version" "$platform" "$sha" >"$work/message"
field signature | openssl base64 -d -A >"$work/signature" 2>/dev/null || true
openssl pkeyutl -verify -pubin -inkey "$work/release-key.pem" -rawin -in "$work/message" \
	-sigfile "$work/signature" >/dev/null 2>&1 ||
	die "the agent binary's release signature does not verify with release key SHA256:$key_fp; not installing it"
say "agent $version for $platform, signed by release key SHA256:$key_fp"

# --- 3. files, user, unit ------------------------------------------------------------
install -d -m 0755 "$CONF_DIR" "$(dirname "$BIN")" "$(dirname "$UNIT")"
install -m 0755 "$work/pilothouse-agent" "$BIN.new"
mv -f "$BIN.new" "$BIN"
[ -f "$CONF_DIR/release-key.pem" ] || install -m 0644 "$work/release-key.pem" "$CONF_DIR/release-key.pem"
if [ ! -f "$CONF_DIR/agent.toml" ]; then
	cat >"$CONF_DIR/agent.toml" <<'TOML'
@AGENT_TOML@
TOML
	chmod 0644 "$CONF_DIR/agent.toml"
fi
if ! id -u "$USER_NAME" >/dev/null 2>&1; then
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/bin/false
	useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell "$nologin" "$USER_NAME" ||
		die "cannot create the system user $USER_NAME"
fi
install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "$STATE_DIR"
chmod 0700 "$STATE_DIR"
# The binary just installed is the one to run: a self-update staged earlier
# (bin/ in the state directory) would otherwise keep running instead.
rm -rf "$STATE_DIR/bin"
cat >"$UNIT.new" <<'UNIT'
@UNIT@
UNIT
chmod 0644 "$UNIT.new"
mv -f "$UNIT.new" "$UNIT"

# --- 4. registration and start ---------------------------------------------------------
if [ -f "$STATE_DIR/agent.json" ]; then
	say "already registered; keeping that registration (the token was not used)"
else
	set -- register --server "$SERVER_URL" --token-file - --state-dir "$STATE_DIR"
	[ -z "$hostname_arg" ] || set -- "$@" --hostname "$hostname_arg"
	printf '%s\n' "$token" | "$BIN" "$@" >/dev/null || die "registration failed (the reason is above)"
fi
chown -R "$USER_NAME:$USER_NAME" "$STATE_DIR"

if [ "$start" = no ]; then
	say "installed; start it with: systemctl enable --now pilothouse-agent"
elif [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl enable pilothouse-agent >/dev/null 2>&1
	systemctl restart pilothouse-agent
	say "installed and started: systemctl status pilothouse-agent"
else
	say "installed, but systemd is not running here: start $BIN run --state-dir $STATE_DIR --config $CONF_DIR/agent.toml as $USER_NAME"
fi
