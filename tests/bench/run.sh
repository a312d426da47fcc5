#!/usr/bin/env bash
# `make bench` / `make bench-smoke`: build the bench helpers, then run tests/bench/bench.py.
#   tests/bench/run.sh           the full side-by-side benchmark -> build/bench/results.md
#   tests/bench/run.sh --smoke   pgbench -S, 10 clients, a few seconds: pgmux must not fail
# Settings are BENCH_* environment variables (README.md, "Performance").
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${BENCH_OUT:-build/bench}
mkdir -p "$out"
cc=${CC:-cc}
flags="-O2 -g -Wall -Wextra -Werror"
for prog in relay idle_clients; do
    if [ ! -x "$out/$prog" ] || [ "tests/bench/$prog.c" -nt "$out/$prog" ]; then
        libs=""
        [ "$prog" = idle_clients ] && libs="-lcrypto"
        $cc $flags -o "$out/$prog" "tests/bench/$prog.c" $libs
    fi
done
exec /usr/bin/python3 tests/bench/bench.py "$@"
