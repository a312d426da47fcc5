#!/usr/bin/env bash
# A throw-away PostgreSQL 15 primary + streaming replica for pgmux's tests and demo.
#
#   tests/cluster.sh start DIR [PRIMARY_PORT REPLICA_PORT]
#   tests/cluster.sh stop DIR
#   tests/cluster.sh add-replica DIR NAME [PORT]
#   tests/cluster.sh stop-node DIR NAME | start-node DIR NAME | remove-node DIR NAME
#
# start: creates DIR (it must not hold a cluster yet), initdb's a primary into DIR/primary,
# creates the test roles and databases, clones a replica into DIR/replica with
# pg_basebackup -R and waits until it streams. Both listen on 127.0.0.1 and on a unix socket
# in DIR/sock. Free ports are picked when none are given. Writes DIR/env (shell syntax, also
# read by tests/integration/conftest.py) and prints it. Logs: DIR/primary.log, DIR/replica.log.
#
# stop: fast shutdown of every node; idempotent (a missing or stopped cluster is not an error).
#
# add-replica: one more streaming replica of the running primary in DIR/NAME (NAME: letters,
# digits, '_'; not primary or replica), on PORT or a free one, started and streaming; prints
# PORT=... and writes DIR/NAME.port. Its log is DIR/NAME.log. stop-node and start-node stop
# (fast) and start any node by its directory name; remove-node stops NAME and deletes it. The
# shared test cluster's own nodes and DIR/env are never changed by these.
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
    echo "usage: $0 start DIR [PRIMARY_PORT REPLICA_PORT] | $0 stop DIR |" \
        "$0 add-replica DIR NAME [PORT] | $0 stop-node|start-node|remove-node DIR NAME" >&2
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
    # Replicas first: the primary's fast shutdown would otherwise wait for its walsenders.
    local d
    for d in "$dir"/*/; do
        d=${d%/}
        [ "$d" = "$dir/primary" ] || [ ! -f "$d/PG_VERSION" ] || stop_one "$d"
    done
    stop_one "$dir/primary"
}

check_node_name() { # NAME
    case $1 in
        primary | replica | sock | '' | *[!A-Za-z0-9_]*)
            echo "cluster.sh: bad node name '$1'" >&2
            exit 2
            ;;
    esac
}

cmd_add_replica() {
    DIR=$(cd "$1" && pwd)
    local name=$2 port=${3:-}
    check_node_name "$name"
    [ -f "$DIR/env" ] || { echo "cluster.sh: no cluster in $DIR" >&2; exit 1; }
    PRIMARY_PORT=$(sed -n 's/^PRIMARY_PORT=//p' "$DIR/env")
    SOCK=$DIR/sock
    if [ -e "$DIR/$name" ]; then
        echo "cluster.sh: $DIR/$name already exists" >&2
        exit 1
    fi
    [ -n "$port" ] || port=$(free_port)
    cd "$DIR"
    as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$DIR/$name" \
        -R -X stream -c fast --no-sync >"$DIR/$name.basebackup.log" 2>&1
    # cluster_name becomes the walreceiver's application_name, which the wait below looks for
    printf "port = %s\ncluster_name = '%s'\n" "$port" "$name" >>"$DIR/$name/postgresql.conf"
    as_pg "$PGBIN/pg_ctl" -D "$DIR/$name" -l "$DIR/$name.log" -w -t 30 start >/dev/null
    local streaming=0
    for _ in $(seq 150); do
        streaming=$(psql_primary -d postgres -At -c \
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'
                AND application_name = '$name'")
        [ "$streaming" -ge 1 ] && break
        sleep 0.1
    done
    if [ "$streaming" -lt 1 ]; then
        echo "cluster.sh: $name did not start streaming" >&2
        exit 1
    fi
    echo "$port" >"$DIR/$name.port"
    echo "PORT=$port"
}

cmd_node() { # stop|start|remove DIR NAME
    local dir
    dir=$(cd "$2" && pwd)
    check_node_name "$3"
    [ -f "$dir/$3/PG_VERSION" ] || { echo "cluster.sh: no node $3 in $dir" >&2; exit 1; }
    cd "$dir"
    case $1 in
        stop) stop_one "$dir/$3" ;;
        start) as_pg "$PGBIN/pg_ctl" -D "$dir/$3" -l "$dir/$3.log" -w -t 30 start >/dev/null ;;
        remove) stop_one "$dir/$3"; rm -rf "${dir:?}/$3" "$dir/$3.port" ;;
    esac
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
    add-replica) [ $# -eq 3 ] || [ $# -eq 4 ] || usage; cmd_add_replica "$2" "$3" "${4:-}" ;;
    stop-node) [ $# -eq 3 ] || usage; cmd_node stop "$2" "$3" ;;
    start-node) [ $# -eq 3 ] || usage; cmd_node start "$2" "$3" ;;
    remove-node) [ $# -eq 3 ] || usage; cmd_node remove "$2" "$3" ;;
    *) usage ;;
esac
