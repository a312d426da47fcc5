#!/usr/bin/env bash
# `make run`: a local PostgreSQL 15 primary (127.0.0.1:15432) and streaming replica (:15433)
# in a temporary directory, and pgmux in front of them on port 6432 with ./proxy.ini.
# Ctrl-C (or pgmux exiting) stops everything this script started and removes the directory.
#
# Environment: PGMUX_BIN (default ./build/release/pgmux), PGMUX_CONF (default ./proxy.ini).
set -euo pipefail
cd "$(dirname "$0")/.."

PGMUX_BIN=${PGMUX_BIN:-./build/release/pgmux}
PGMUX_CONF=${PGMUX_CONF:-proxy.ini}
PRIMARY_PORT=15432
REPLICA_PORT=15433

[ -x "$PGMUX_BIN" ] || { echo "run-demo: $PGMUX_BIN not built (make)" >&2; exit 1; }
[ -f "$PGMUX_CONF" ] || { echo "run-demo: $PGMUX_CONF not found" >&2; exit 1; }

# Directly under /tmp so that the postgres user can reach it when we run as root.
dir=$(mktemp -d /tmp/pgmux-demo.XXXXXX)
pgmux_pid=""

# shellcheck disable=SC2317  # invoked by the traps below
cleanup() {
    trap - EXIT INT TERM
    if [ -n "$pgmux_pid" ] && kill -0 "$pgmux_pid" 2>/dev/null; then
        kill -TERM "$pgmux_pid" 2>/dev/null || true
        wait "$pgmux_pid" 2>/dev/null || true
    fi
    echo "run-demo: stopping PostgreSQL" >&2
    ./tests/cluster.sh stop "$dir" || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "run-demo: starting PostgreSQL primary :$PRIMARY_PORT and replica :$REPLICA_PORT in $dir" >&2
./tests/cluster.sh start "$dir" "$PRIMARY_PORT" "$REPLICA_PORT" >/dev/null

# pgmux runs as a child we wait for, so that the traps above run on Ctrl-C.
"$PGMUX_BIN" -c "$PGMUX_CONF" &
pgmux_pid=$!

# Say how to connect once pgmux listens (or as soon as it has exited, with its status).
for _ in $(seq 100); do
    kill -0 "$pgmux_pid" 2>/dev/null || break
    if (exec 3<>/dev/tcp/127.0.0.1/6432) 2>/dev/null; then break; fi
    sleep 0.1
done
if kill -0 "$pgmux_pid" 2>/dev/null; then
    echo
    echo "pgmux is listening on 127.0.0.1:6432. Connect with:"
    echo
    echo "  psql \"host=127.0.0.1 port=6432 user=demo dbname=demo password=demo\""
    echo
    echo "Ctrl-C stops pgmux and PostgreSQL. Logs: $dir/primary.log, $dir/replica.log"
fi

status=0
wait "$pgmux_pid" || status=$?
pgmux_pid=""
echo "run-demo: pgmux exited with status $status" >&2
exit "$status"
