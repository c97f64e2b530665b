#!/usr/bin/env bash
# Installs what `make test` and `make run` need when it is missing, on a fresh
# Debian/Ubuntu machine, or stops with a one-line instruction when it may not.
set -euo pipefail
target=${1:-deps-test}

have_pg() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing $*: install it (Debian/Ubuntu: sudo apt-get install -y $*) and run make again" >&2
    exit 1
  fi
  echo "installing $* ..." >&2
  if [ -z "${APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! have_pg; then
  # Berth runs its own private clusters; keep Debian from creating and
  # starting a system-wide one as a side effect of the install.
  mkdir -p /etc/postgresql-common
  if [ "$(id -u)" = 0 ] && ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
  fi
  apt_install postgresql
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "running as root needs the 'postgres' system user (initdb refuses root): install the postgresql package" >&2
  exit 1
fi
# The deploy end-to-end tests serve a private repository over SSH with a real
# sshd on a loopback port (and over HTTP with git http-backend).
if [ "$target" = deps-test ] && { [ ! -x /usr/sbin/sshd ] || ! command -v git >/dev/null 2>&1; }; then
  apt_install openssh-server git
fi
# The agent's backup tests and the controller's backup end-to-end tests dump
# and restore a real MariaDB that they start themselves (mariadb-install-db
# into a temp dir, pg_dump/pg_restore come with postgresql); the backup bench compares
# against the shell pipeline pg_dump | zstd | age.
if [ "$target" = deps-test ]; then
  backup=()
  command -v mariadb-install-db >/dev/null 2>&1 || command -v mysql_install_db >/dev/null 2>&1 || backup+=(mariadb-server)
  command -v zstd >/dev/null 2>&1 || backup+=(zstd)
  command -v age >/dev/null 2>&1 || backup+=(age)
  if [ ${#backup[@]} -gt 0 ]; then
    apt_install "${backup[@]}"
  fi
fi
# The agent's site manager tests (agent/internal/proxy) start a real nginx
# with their own prefix and loopback ports. Debian's package does not start
# a system nginx where policy-rc.d forbids it (containers); elsewhere it
# starts one on port 80, which the tests do not use.
if [ "$target" = deps-test ] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  apt_install nginx
fi
# The web UI's browser tests drive a real headless Chromium (chromedp); it
# needs a font to lay pages out and render the screenshots.
have_chromium() {
  local b
  for b in chromium chromium-browser google-chrome google-chrome-stable headless-shell; do
    command -v "$b" >/dev/null 2>&1 && return 0
  done
  return 1
}
if [ "$target" = deps-test ]; then
  browser=()
  have_chromium || browser+=(chromium)
  compgen -G '/usr/share/fonts/truetype/*/*.ttf' >/dev/null || browser+=(fonts-dejavu-core)
  if [ ${#browser[@]} -gt 0 ]; then
    apt_install "${browser[@]}"
  fi
fi
exit 0
