#!/usr/bin/env bash
# Install the Debian packages that pgmux's build, tests, benchmark and demo need.
# Idempotent and quiet when everything is present. Needs root (or sudo) only when installing.
set -euo pipefail

pkgs=(
  build-essential pkg-config
  libev-dev libssl-dev libpq-dev libinih-dev libcmocka-dev
  liburing-dev  # io_engine = io_uring (proxy/iobatch.c)
  libpg-query-dev  # router/classify.c: PostgreSQL 15's parser
  postgresql-15 postgresql-client-15
  python3-pytest python3-psycopg python3-psycopg2
  pgbouncer procps strace valgrind
  openssl  # tests/integration/test_tls.py makes its certificates with the openssl command
  python3-yaml systemd  # tests/integration/test_packaging.py: compose file, systemd-analyze verify
  openjdk-17-jdk-headless libpostgresql-jdbc-java  # JDBC tests (tests/integration/java)
  clang-14 libclang-rt-14-dev  # make fuzz / fuzz-smoke: libFuzzer's runtime is in libclang-rt
  clang-format  # make format-check (the first step of make test)
)

# `tests/deps.sh bundle` (make bench-bundle, bench-scaling; not CI): patchelf points the bundled
# programs at the bundled loader and libraries; busybox-static and bash-static are the only
# programs tests/bench/device/bare.sh leaves usable besides the bundle's.
if [ "${1:-}" = bundle ]; then
  pkgs+=(patchelf busybox-static bash-static)
fi

# node-postgres tests (tests/integration/node): Debian's node and npm, unless a node is
# already installed (e.g. from NodeSource, whose nodejs package carries npm itself).
if ! command -v node >/dev/null 2>&1; then
  pkgs+=(nodejs npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a cluster of its own on 5432; pgmux's harness never uses it.
