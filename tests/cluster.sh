#!/usr/bin/env bash
# A throw-away PostgreSQL 15 primary + streaming replica for pgmux's tests and demo.
#
#   tests/cluster.sh start DIR [PRIMARY_PORT REPLICA_PORT]
#   tests/cluster.sh stop DIR
#
# start: creates DIR (it must not hold a cluster yet), initdb's a primary into DIR/primary,
# creates the test roles and databases, clones a replica into DIR/replica with
# pg_basebackup -R and waits until it streams. Both listen on 127.0.0.1 and on a unix socket
# in DIR/sock. Free ports are picked when none are given. Writes DIR/env (shell syntax, also
# read by tests/integration/conftest.py) and prints it. Logs: DIR/primary.log, DIR/replica.log.
#
# stop: fast shutdown of both; idempotent (a missing or stopped cluster is not an error).
#
# Roles (created on the primary, replicated):
#   app / app-secret      SCRAM-SHA-256 verifier; owns database appdb
#   md5user / md5-secret  md5 hash; pg_hba asks md5 over TCP
#   pwuser / pw-secret    SCRAM verifier; pg_hba asks a cleartext password over TCP
#   demo / demo           SCRAM verifier; owns database demo (for `make run`)
# The superuser is postgres, trusted on the unix socket only.
#
# PostgreSQL refuses to run as root: when run as root, every PostgreSQL program runs as the
# postgres system user and DIR is handed to it (its parent directories must let it through,
# e.g. a directory made with mktemp -d directly under /tmp).
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

usage() {
    echo "usage: $0 start DIR [PRIMARY_PORT REPLICA_PORT] | $0 stop DIR" >&2
    exit 2
}

# Run a PostgreSQL program as the postgres user when we are root.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Print a free TCP port on 127.0.0.1 (the kernel picks it; PostgreSQL binds it a moment later).
free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# psql on the primary's unix socket as the superuser; extra arguments follow.
psql_primary() {
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PRIMARY_PORT" -U postgres "$@"
}

stop_one() { # DATADIR
    if [ -f "$1/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    fi
}

cmd_stop() {
    local dir=$1
    [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd)
    cd "$dir"
    # Replica first: the primary's fast shutdown would otherwise wait for its walsender.
    stop_one "$dir/replica"
    stop_one "$dir/primary"
}

on_start_error() {
    echo "cluster.sh: start failed; log tails follow" >&2
    for f in "$DIR/primary.log" "$DIR/replica.log" "$DIR/initdb.log" "$DIR/basebackup.log"; do
        [ -f "$f" ] && { echo "== $f" >&2; tail -n 40 "$f" >&2; }
    done
    cmd_stop "$DIR"
}

cmd_start() {
    DIR=$1
    PRIMARY_PORT=${2:-}
    REPLICA_PORT=${3:-}
    [ -x "$PGBIN/initdb" ] || { echo "cluster.sh: no PostgreSQL in $PGBIN (make deps)" >&2; exit 1; }

    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if [ -e "$DIR/primary" ] || [ -e "$DIR/replica" ]; then
        echo "cluster.sh: $DIR already holds a cluster; stop it and use an empty directory" >&2
        exit 1
    fi
    if [ -z "$PRIMARY_PORT" ]; then
        PRIMARY_PORT=$(free_port)
        REPLICA_PORT=$(free_port)
        while [ "$REPLICA_PORT" = "$PRIMARY_PORT" ]; do REPLICA_PORT=$(free_port); done
    fi
    [ -n "$REPLICA_PORT" ] || usage
    SOCK=$DIR/sock
    mkdir -p "$SOCK"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres: "$DIR"
        if ! runuser -u postgres -- test -w "$DIR"; then
            echo "cluster.sh: user postgres cannot write $DIR (check its parent directories' modes)" >&2
            exit 1
        fi
    fi
    cd "$DIR" # runuser keeps the working directory; make it one postgres can enter
    trap on_start_error ERR

    # --- primary ---------------------------------------------------------------------------
    as_pg "$PGBIN/initdb" -D "$DIR/primary" -U postgres -E UTF8 --no-locale --no-sync \
        --auth-local=trust --auth-host=scram-sha-256 >"$DIR/initdb.log" 2>&1
    # Appended settings win over initdb's defaults. The replica inherits this file.
    cat >>"$DIR/primary/postgresql.conf" <<EOF

# --- pgmux test cluster (tests/cluster.sh) ---
listen_addresses = '127.0.0.1'
port = $PRIMARY_PORT
unix_socket_directories = '$SOCK'
max_connections = 300
shared_buffers = 16MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = replica
max_wal_senders = 5
hot_standby = on
password_encryption = 'scram-sha-256'
log_connections = on
log_disconnections = on
log_line_prefix = '%m [%p] %q%u@%d/%a '
EOF
    cat >"$DIR/primary/pg_hba.conf" <<EOF
# TYPE  DATABASE     USER     ADDRESS        METHOD
local   all          all                     trust
host    replication  all      127.0.0.1/32   trust
host    all          pwuser   127.0.0.1/32   password
host    all          md5user  127.0.0.1/32   md5
host    all          all      127.0.0.1/32   scram-sha-256
EOF
    as_pg "$PGBIN/pg_ctl" -D "$DIR/primary" -l "$DIR/primary.log" -w -t 30 start >/dev/null

    psql_primary -d postgres <<'EOF'
CREATE ROLE app LOGIN PASSWORD 'app-secret';
CREATE ROLE pwuser LOGIN PASSWORD 'pw-secret';
CREATE ROLE demo LOGIN PASSWORD 'demo';
SET password_encryption = 'md5';
CREATE ROLE md5user LOGIN PASSWORD 'md5-secret';
RESET password_encryption;
CREATE DATABASE appdb OWNER app;
CREATE DATABASE demo OWNER demo;
GRANT ALL ON DATABASE appdb TO md5user, pwuser, demo;
EOF
    # Let every test role create tables in appdb's public schema (PostgreSQL 15 no longer
    # grants CREATE on public to everyone).
    psql_primary -d appdb -c 'GRANT ALL ON SCHEMA public TO PUBLIC'

    # --- replica ---------------------------------------------------------------------------
    as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$DIR/replica" \
        -R -X stream -c fast --no-sync >"$DIR/basebackup.log" 2>&1
    echo "port = $REPLICA_PORT" >>"$DIR/replica/postgresql.conf"
    as_pg "$PGBIN/pg_ctl" -D "$DIR/replica" -l "$DIR/replica.log" -w -t 30 start >/dev/null

    # Wait until the primary sees the replica streaming (at most ~15 s).
    local streaming=0
    for _ in $(seq 150); do
        streaming=$(psql_primary -d postgres -At -c \
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        [ "$streaming" -ge 1 ] && break
        sleep 0.1
    done
    if [ "$streaming" -lt 1 ]; then
        echo "cluster.sh: replica did not start streaming" >&2
        false
    fi
    trap - ERR

    cat >"$DIR/env" <<EOF
PRIMARY_PORT=$PRIMARY_PORT
REPLICA_PORT=$REPLICA_PORT
SOCKET_DIR=$SOCK
PRIMARY_DATA=$DIR/primary
REPLICA_DATA=$DIR/replica
PRIMARY_LOG=$DIR/primary.log
REPLICA_LOG=$DIR/replica.log
EOF
    cat "$DIR/env"
}

[ $# -ge 2 ] || usage
case $1 in
    start) [ $# -eq 2 ] || [ $# -eq 4 ] || usage; cmd_start "$2" "${3:-}" "${4:-}" ;;
    stop) [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
    *) usage ;;
esac
