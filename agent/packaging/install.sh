#!/bin/sh
# Berth agent installer, served by the controller at /install.sh:
#   curl -fsSL http://CONTROLLER/install.sh | sudo sh -s -- --controller HOST:PORT --ca-pin sha256:HEX \
#       --sha256-amd64 HEX --sha256-arm64 HEX [--token-file F]
# Downloads the agent for this architecture from the controller, checks its
# SHA-256 against the checksum given on the command line (printed by the
# controller with the command, so the download is not checked only against
# a file from the same origin) and against the controller's SHA256SUMS,
# installs it with a systemd unit, enrolls with the one-time token and
# starts the service. The token is never an argument (ps, shell history):
# it is read from --token-file (yours, mode 0600) or asked for on the
# terminal, and handed to the agent on its standard input.
set -eu

BASE_URL="@@BASE_URL@@"
PREFIX="${BERTH_INSTALL_PREFIX:-/usr/local/bin}"
DATA_DIR="${BERTH_AGENT_DATA_DIR:-/var/lib/berth-agent}"
UNIT_DIR="${BERTH_UNIT_DIR:-/etc/systemd/system}"
controller="" pin="" sum_amd64="" sum_arm64="" token_file=""

die() { echo "berth install: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "$1 needs a value"
  case "$1" in
    --controller) controller="$2" ;;
    --ca-pin) pin="$2" ;;
    --sha256-amd64) sum_amd64="$2" ;;
    --sha256-arm64) sum_arm64="$2" ;;
    --token-file) token_file="$2" ;;
    --token) die "--token is not accepted (a token on the command line shows in ps and shell history): use --token-file F, or leave it out to be asked" ;;
    *) die "unknown argument $1" ;;
  esac
  shift 2
done
[ -n "$controller" ] && [ -n "$pin" ] || die "--controller and --ca-pin are required"
[ "$(uname -s)" = Linux ] || die "the agent runs on Linux only"
if [ -z "${BERTH_INSTALL_NO_SYSTEMD:-}" ] && [ "$(id -u)" != 0 ]; then die "run as root (sudo)"; fi

case "$(uname -m)" in
  x86_64|amd64) arch=amd64 want="$sum_amd64" ;;
  aarch64|arm64) arch=arm64 want="$sum_arm64" ;;
  *) die "unsupported architecture $(uname -m)" ;;
esac
want=$(printf %s "$want" | tr 'A-F' 'a-f')
case "$want" in
  *[!0-9a-f]*|"") die "--sha256-$arch is required: the agent binary's SHA-256 as the controller printed it" ;;
esac
[ ${#want} -eq 64 ] || die "--sha256-$arch must be 64 hex digits"

# The token file is checked before anything is downloaded: it must be the
# installer's own and closed to group and others.
if [ -n "$token_file" ]; then
  [ -f "$token_file" ] || die "token file $token_file does not exist or is not a regular file"
  set -- $(stat -L -c '%u %a' "$token_file")
  [ "$1" = "$(id -u)" ] || die "token file $token_file is owned by uid $1, not by you (uid $(id -u))"
  case "$2" in
    *00) ;;
    *) die "token file $token_file has mode $2: it must not be readable by group or others (chmod 600 $token_file)" ;;
  esac
fi

fetch() {
  if command -v curl >/dev/null 2>&1; then curl -fsSL "$1" -o "$2"
  elif command -v wget >/dev/null 2>&1; then wget -q "$1" -O "$2"
  else die "need curl or wget"; fi
}

tmp=$(mktemp -d)
restore_tty=""
trap 'rm -rf "$tmp"; [ -z "$restore_tty" ] || stty echo </dev/tty' EXIT
bin="berth-agent-linux-$arch"
fetch "$BASE_URL/download/$bin" "$tmp/$bin"
fetch "$BASE_URL/download/SHA256SUMS" "$tmp/SHA256SUMS"
got=$(sha256sum "$tmp/$bin" | awk '{ print $1 }')
[ "$want" = "$got" ] || die "checksum mismatch for $bin: got $got, the command said $want: refusing to install"
listed=$(awk -v f="$bin" '$2 == f { print $1 }' "$tmp/SHA256SUMS")
[ -n "$listed" ] && [ "$listed" = "$got" ] || die "checksum mismatch for $bin against the controller's SHA256SUMS: refusing to install"

if [ -n "$token_file" ]; then
  token=$(cat "$token_file")
else
  # Asked on the terminal, not stdin: with curl | sh, stdin is the script.
  { : </dev/tty; } 2>/dev/null || die "no --token-file and no terminal to ask for the join token on"
  # Echo goes off before the prompt shows: whatever is typed after it
  # is never on the screen.
  restore_tty=1
  stty -echo </dev/tty
  printf 'Join token (from berth server add): ' >/dev/tty
  IFS= read -r token </dev/tty || token=""
  stty echo </dev/tty
  restore_tty=""
  printf '\n' >/dev/tty
fi
[ -n "$token" ] || die "the join token is empty"

install -d -m 0755 "$PREFIX"
install -m 0755 "$tmp/$bin" "$PREFIX/berth-agent"
install -d -m 0700 "$DATA_DIR"
# printf is a shell builtin: the token reaches the agent through a pipe and
# is never an argument of any process.
printf '%s\n' "$token" | "$PREFIX/berth-agent" enroll --controller "$controller" --ca-pin "$pin" --data-dir "$DATA_DIR" --token-stdin

if [ -n "${BERTH_INSTALL_NO_SYSTEMD:-}" ]; then
  echo "berth-agent installed and enrolled (systemd skipped)"
  exit 0
fi
fetch "$BASE_URL/download/berth-agent.service" "$tmp/berth-agent.service"
install -m 0644 "$tmp/berth-agent.service" "$UNIT_DIR/berth-agent.service"
systemctl daemon-reload
systemctl enable --now berth-agent
echo "berth-agent installed, enrolled and running"
