#!/bin/sh
# Installs the Debian packages resilnet's build and tests need, if any is
# missing. Silent when everything is present. As root it installs them;
# otherwise it prints the command to run and fails.
#   tools/install-deps.sh [--bench]
# --bench adds the peers `make bench` compares with (libhiredis-dev for
# hiredis' async client): benchmark-only, never linked into resilnet; a
# benchmark run without them skips their rows and says why. ioredis is not
# a Debian package: bench/run.py installs it with npm into the build
# directory when Node.js and npm are on the PATH (from wherever the system
# has them), and skips its rows, saying why, when they are not.
set -eu

packages="
  build-essential cmake pkg-config libuv1-dev libssl-dev openssl
  lua5.1 liblua5.1-0-dev lua5.2 liblua5.2-dev lua5.3 liblua5.3-dev
  lua5.4 liblua5.4-dev luajit libluajit-5.1-dev
  lua-busted luarocks lua-socket redis-server redis-tools valgrind
  clang libclang-rt-14-dev
  python3 lua-luv gnuplot-nox
  neovim lua-cqueues lua-copas
  iproute2 iptables
"
if [ "${1:-}" = "--bench" ]; then
  packages="$packages libhiredis-dev"
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  echo "install-deps: not a Debian system; make sure these (or your" \
       "distribution's equivalents) are installed:" $packages >&2
  exit 0
fi

# One dpkg-query for all (fast); a package it has never heard of is missing.
# shellcheck disable=SC2086 # $packages is a word list on purpose
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' $packages \
              2>/dev/null | awk '$2 == "installed" { print $1 }' || true)
missing=""
for p in $packages; do
  echo "$installed" | grep -qx "$p" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

install="DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages:$missing" >&2
  echo "install-deps: run as root: apt-get update && $install" >&2
  exit 1
fi
echo "install-deps: installing$missing"
apt-get update
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
