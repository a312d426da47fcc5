#!/usr/bin/env bash
# Unpack a bench bundle (build/bundle.tar.gz, from bundle.sh) at its fixed prefix and check that
# its programs start and that every shared library they load, libc and the loader included,
# comes from the bundle (the loader's own LD_DEBUG=libs trace says which file it opened).
#   tests/bench/device/check-bundle.sh [BUNDLE.tar.gz]      (about 5 s; `make bench-bundle-check`)
# scaling.sh runs the same check on the machine it measures. Exits non-zero on any failure.
set -euo pipefail
tarball=${1:-build/bundle.tar.gz}
[ -f "$tarball" ] || { echo "check-bundle: $tarball is missing (make bench-bundle)" >&2; exit 1; }
name=$(tar -tzf "$tarball" 2>/dev/null | head -1 | cut -d/ -f1 || true)
prefix=$(tar -xzOf "$tarball" "$name/PREFIX")
[ "$(basename "$prefix")" = "$name" ] || { echo "check-bundle: PREFIX $prefix does not end in $name" >&2; exit 1; }
mkdir -p "$(dirname "$prefix")"
rm -rf "$prefix"
tar -xzf "$tarball" -C "$(dirname "$prefix")"

pg=$prefix/usr/lib/postgresql/15/bin
fail=0
check() {  # check NAME ARGV...: runs it with an empty environment, libraries traced
    local what=$1; shift
    local trace out rc=0
    trace=$(mktemp)
    out=$(env -i LD_DEBUG=libs LD_DEBUG_OUTPUT="$trace" "$@" 2>&1) || rc=$?
    local outside
    outside=$(cat "$trace".* 2>/dev/null | awk '/calling init:/ {print $NF}' | grep -v "^$prefix/" | sort -u || true)
    local n
    n=$(cat "$trace".* 2>/dev/null | awk '/calling init:/ {print $NF}' | sort -u | wc -l)
    rm -f "$trace" "$trace".*
    if [ $rc -ne 0 ]; then
        echo "check-bundle: FAIL $what exited $rc: $out" >&2; fail=1
    elif [ -n "$outside" ]; then
        echo "check-bundle: FAIL $what loaded libraries outside $prefix: $outside" >&2; fail=1
    else
        echo "check-bundle: ok   $what: $(head -1 <<<"$out") ($n libraries, all from the bundle)"
    fi
}
check pgmux "$prefix/bin/pgmux" --version
check pgbouncer "$prefix/bin/pgbouncer" --version
check pinrun "$prefix/bin/pinrun" -c 0 -- "$prefix/bin/pgmux" --version
check postgres "$pg/postgres" --version
check initdb "$pg/initdb" --version
check pg_ctl "$pg/pg_ctl" --version
check pgbench "$pg/pgbench" --version
check psql "$pg/psql" --version
[ -x "$prefix/bin/relay" ] && { "$prefix/bin/relay" 2>/dev/null; [ $? -ne 127 ]; } \
    && echo "check-bundle: ok   relay starts" || { echo "check-bundle: FAIL relay" >&2; fail=1; }
# idle_clients without arguments prints its usage and exits 2; 127 would mean it cannot load.
[ -x "$prefix/bin/idle_clients" ] && { "$prefix/bin/idle_clients" >/dev/null 2>&1; [ $? -ne 127 ]; } \
    && echo "check-bundle: ok   idle_clients starts" || { echo "check-bundle: FAIL idle_clients" >&2; fail=1; }
exit $fail
