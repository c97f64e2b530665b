#!/bin/sh
# Berth agent installer, served by the controller at /install.sh:
#   curl -fsSL http://CONTROLLER/install.sh | sudo sh -s -- --controller HOST:PORT --token TOKEN --ca-pin sha256:HEX
# Downloads the agent for this architecture from the controller, checks its
# SHA-256 against the controller's SHA256SUMS, installs it with a systemd
# unit, enrolls with the one-time token and starts the service.
set -eu

BASE_URL="@@BASE_URL@@"
PREFIX="${BERTH_INSTALL_PREFIX:-/usr/local/bin}"
DATA_DIR="${BERTH_AGENT_DATA_DIR:-/var/lib/berth-agent}"
UNIT_DIR="${BERTH_UNIT_DIR:-/etc/systemd/system}"
controller="" token="" pin=""

die() { echo "berth install: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --controller) controller="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --ca-pin) pin="$2"; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -n "$controller" ] && [ -n "$token" ] && [ -n "$pin" ] || die "--controller, --token and --ca-pin are required"
[ "$(uname -s)" = Linux ] || die "the agent runs on Linux only"
if [ -z "${BERTH_INSTALL_NO_SYSTEMD:-}" ] && [ "$(id -u)" != 0 ]; then die "run as root (sudo)"; fi

case "$(uname -m)" in
  x86_64|amd64) arch=amd64 ;;
  aarch64|arm64) arch=arm64 ;;
  *) die "unsupported architecture $(uname -m)" ;;
esac

fetch() {
  if command -v curl >/dev/null 2>&1; then curl -fsSL "$1" -o "$2"
  elif command -v wget >/dev/null 2>&1; then wget -q "$1" -O "$2"
  else die "need curl or wget"; fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin="berth-agent-linux-$arch"
fetch "$BASE_URL/download/$bin" "$tmp/$bin"
fetch "$BASE_URL/download/SHA256SUMS" "$tmp/SHA256SUMS"
want=$(awk -v f="$bin" '$2 == f { print $1 }' "$tmp/SHA256SUMS")
got=$(sha256sum "$tmp/$bin" | awk '{ print $1 }')
[ -n "$want" ] && [ "$want" = "$got" ] || die "checksum mismatch for $bin: refusing to install"

install -d -m 0755 "$PREFIX"
install -m 0755 "$tmp/$bin" "$PREFIX/berth-agent"
install -d -m 0700 "$DATA_DIR"
"$PREFIX/berth-agent" enroll --controller "$controller" --token "$token" --ca-pin "$pin" --data-dir "$DATA_DIR"

if [ -n "${BERTH_INSTALL_NO_SYSTEMD:-}" ]; then
  echo "berth-agent installed and enrolled (systemd skipped)"
  exit 0
fi
fetch "$BASE_URL/download/berth-agent.service" "$tmp/berth-agent.service"
install -m 0644 "$tmp/berth-agent.service" "$UNIT_DIR/berth-agent.service"
systemctl daemon-reload
systemctl enable --now berth-agent
echo "berth-agent installed, enrolled and running"
