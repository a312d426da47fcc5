#!/usr/bin/env bash
# Multi-core scaling: pgmux with workers = 1, 2, 4, 8 beside single-process PgBouncer and a
# direct connection, under `pgbench -S` (select-only, simple protocol), on one machine, with
# nothing but the bench bundle (tests/bench/device/bundle.sh, `make bench-bundle`): no
# PostgreSQL, PgBouncer, network or Debian there. Run as root from the repository root:
#
#   tests/bench/device/scaling.sh build/bundle.tar.gz     (or an already unpacked bundle dir)
#
# It unpacks the bundle at its fixed prefix (/opt/pgmux-bundle), checks that every program loads
# only bundled libraries, creates an unprivileged user when none fits (PostgreSQL and PgBouncer
# refuse root), starts one PostgreSQL, loads pgbench data, then alternates targets run by run
# (direct, pgbouncer, pgmux w=1, w=2, ... then again) and reports medians. Each target gets a
# fresh proxy process, a warm-up run and a measured run.
#
# CPU pinning (pinrun, from the bundle): the proxy, PostgreSQL and pgbench each get their own
# CPUs, the same for every target, so the proxies cannot take CPU from PostgreSQL or pgbench and
# the only thing that changes from row to row is how many of its CPUs a proxy can use (PgBouncer
# one, pgmux its workers). Defaults with 8 or more CPUs: the proxy the first half, pgbench the
# last eighth (at least 2), PostgreSQL the rest; on 16 CPUs 0-7 / 8-13 / 14-15. The direct row
# shows what PostgreSQL and pgbench reach on their CPUs: the ceiling a proxy can approach.
# Below 8 CPUs nothing is pinned unless the SCALING_*_CPUS variables say so.
#
# SCALING_TARGETS may add "relay" (tests/bench/relay.c: one thread, bytes only, one server
# connection per client), what one core can forward at all, and "pgmux-uring" (pgmux with
# io_engine = io_uring, at SCALING_URING_WORKERS). "pgmux-static" is pgmux with worker_balance =
# off (every worker keeps the sessions the kernel dealt it), at SCALING_STATIC_WORKERS.
#
# Then, with SCALING_IDLE clients (default 100000 with 8 or more CPUs, else none): memory per
# idle client. PgBouncer and pgmux at each of SCALING_IDLE_WORKERS hold that many authenticated
# idle connections (tests/bench/idle_clients.c, from 127.0.0.2-6), and the RSS growth of the
# proxy divided by the clients is reported (one run each, after the scaling runs).
#
# Output in $OUT (default build/scaling): scaling.md (the table), runs.tsv (every run),
# pgbench.log (every pgbench output), scaling.log (this script's log), env.txt (the machine),
# logs.tar.gz (PostgreSQL's and the proxies' logs).
#
# Settings (environment): see the defaults below and README.md "Multi-core scaling".
set -uo pipefail

T0=$(date +%s)
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
WORKERS=${SCALING_WORKERS:-1 2 4 8}
TARGETS=${SCALING_TARGETS:-direct pgbouncer pgmux pgmux-uring pgmux-static}
TIME=${SCALING_TIME:-10}          # seconds per measured pgbench run
WARMUP=${SCALING_WARMUP:-2}       # seconds of the unmeasured run before it (pools fill)
REPS=${SCALING_REPS:-3}           # runs per target; the median is reported
CLIENTS=${SCALING_CLIENTS:-128}   # pgbench -c
JOBS=${SCALING_JOBS:-8}           # pgbench -j
POOL=${SCALING_POOL:-64}          # server connections: PgBouncer's pool, pgmux's max_open_conns
SCALE=${SCALING_SCALE:-50}        # pgbench -i -s
BUDGET=${SCALING_BUDGET:-380}     # seconds: no run starts that would end past this
IO_ENGINE=${SCALING_IO_ENGINE:-epoll}
URING_WORKERS=${SCALING_URING_WORKERS:-8}   # workers for the pgmux-uring target
STATIC_WORKERS=${SCALING_STATIC_WORKERS:-8} # workers for the pgmux-static target
IDLE_WORKERS=${SCALING_IDLE_WORKERS:-}      # pgmux workers for the idle-client runs (default 1 8 16)
IDLE_WAIT=${SCALING_IDLE_WAIT:-120}         # seconds an idle-client run may take to log in
IDLE_DEADLINE=${SCALING_IDLE_DEADLINE:-}    # seconds after which no idle run starts (default BUDGET + 120)
PREFIX=${PGMUX_BUNDLE_PREFIX:-/opt/pgmux-bundle}
OUT=${OUT:-$ROOT/build/scaling}
BENCH_PASSWORD=bench-secret
BENCH_USER=bench
BENCH_DB=bench

mkdir -p "$OUT"
exec > >(tee -a "$OUT/scaling.log") 2>&1
log() { printf 'scaling [%4ds]: %s\n' $(($(date +%s) - T0)) "$*"; }
die() { log "FATAL: $*"; write_logs; exit 1; }
elapsed() { echo $(($(date +%s) - T0)); }

# --- the bundle --------------------------------------------------------------------------------
bundle=${1:-$ROOT/build/bundle.tar.gz}
W=""  # work directory, set below
write_logs() {
    [ -n "$W" ] && [ -d "$W" ] || return 0
    # plain file names only: busybox's tar (a bare image's) has no --exclude
    (cd "$W" && tar -czf "$OUT/logs.tar.gz" $(ls *.log *.ini 2>/dev/null)) 2>/dev/null
    return 0
}
if [ -f "$bundle" ]; then
    log "unpacking $bundle to $PREFIX and checking it"
    bash "$ROOT/tests/bench/device/check-bundle.sh" "$bundle" > "$OUT/check-bundle.txt" 2>&1 \
        || { cat "$OUT/check-bundle.txt"; die "the bundle does not run here"; }
elif [ -d "$bundle" ] && [ "$(cd "$bundle" && pwd)" = "$PREFIX" ]; then
    log "using the unpacked bundle at $PREFIX"
else
    die "usage: $0 BUNDLE.tar.gz (from make bench-bundle) or the unpacked $PREFIX"
fi
[ "$(cat "$PREFIX/PREFIX")" = "$PREFIX" ] || die "$PREFIX/PREFIX says another prefix"
PG=$PREFIX/usr/lib/postgresql/15/bin
PINRUN=$PREFIX/bin/pinrun
# The bundled programs find their libraries through RPATH; nothing of the host's may interfere.
unset LD_LIBRARY_PATH LD_PRELOAD PGHOST PGPORT PGUSER PGDATABASE PGSERVICE PGPASSFILE PGSSLMODE
export LC_ALL=C LANG=C TZ=GMT
NCPU=$(nproc 2>/dev/null || grep -c '^processor' /proc/cpuinfo)
IDLE=${SCALING_IDLE:-$([ "$NCPU" -ge 8 ] && echo 100000 || echo 0)}
[ -n "$IDLE_WORKERS" ] || IDLE_WORKERS="1 8$([ "$NCPU" -ge 16 ] && echo " 16")"
# Each idle client is a descriptor in the proxy and one in idle_clients; root may raise the
# hard limit (up to fs.nr_open).
nofile=$((IDLE + 20000 > 65536 ? IDLE + 20000 : 65536))
ulimit -n "$nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- the machine -------------------------------------------------------------------------------
cpu_range() { [ "$1" -eq "$2" ] && echo "$1" || echo "$1-$2"; }
if [ "$NCPU" -ge 8 ]; then
    nclient=$((NCPU / 8 < 2 ? 2 : NCPU / 8))
    def_proxy=$(cpu_range 0 $((NCPU / 2 - 1)))
    def_pg=$(cpu_range $((NCPU / 2)) $((NCPU - nclient - 1)))
    def_client=$(cpu_range $((NCPU - nclient)) $((NCPU - 1)))
else
    def_proxy="" def_pg="" def_client=""
fi
PROXY_CPUS=${SCALING_PROXY_CPUS-$def_proxy}
PG_CPUS=${SCALING_PG_CPUS-$def_pg}
CLIENT_CPUS=${SCALING_CLIENT_CPUS-$def_client}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
MEM_KB=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
if [ -n "${SCALING_SHARED_BUFFERS:-}" ]; then SHARED_BUFFERS=$SCALING_SHARED_BUFFERS
elif [ "$MEM_KB" -ge $((32 * 1024 * 1024)) ]; then SHARED_BUFFERS=4GB
elif [ "$MEM_KB" -ge $((8 * 1024 * 1024)) ]; then SHARED_BUFFERS=1GB
else SHARED_BUFFERS=256MB; fi
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
    echo "date: $(date -u +'%Y-%m-%d %H:%M UTC')"
    echo "uname: $(uname -a)"
    grep -h '^PRETTY_NAME' /etc/os-release 2>/dev/null
    echo "host libc: $( (ldd --version 2>/dev/null || true) | head -1)"
    echo "cpus: $NCPU ($CPU_MODEL); memory: $((MEM_KB / 1024)) MiB; CLK_TCK $CLK_TCK"
    # Which CPUs share a core (hyperthreads) decides what a CPU split really gives each party.
    echo "thread siblings: $(cat /sys/devices/system/cpu/cpu[0-9]*/topology/thread_siblings_list 2>/dev/null | sort -u -t, -n | tr '\n' ' ')"
    echo "open files: $(ulimit -n) (fs.nr_open $(cat /proc/sys/fs/nr_open 2>/dev/null)); ephemeral ports: $(cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null | tr '\t' -)"
    echo "io_uring_disabled: $(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo absent)"
    echo "tools: $(for t in taskset setpriv runuser su useradd python3 perf strace; do
        command -v $t >/dev/null 2>&1 && printf '%s ' $t; done)"
    echo "bundle:"; sed 's/^/  /' "$PREFIX/MANIFEST"
    [ -f "$OUT/check-bundle.txt" ] && sed 's/^/  /' "$OUT/check-bundle.txt"
} > "$OUT/env.txt"
cat "$OUT/env.txt"
log "CPUs: proxy '${PROXY_CPUS:-any}', PostgreSQL '${PG_CPUS:-any}', pgbench '${CLIENT_CPUS:-any}'"

# --- an unprivileged user ----------------------------------------------------------------------
RUNAS=${SCALING_USER:-}
if [ "$(id -u)" -ne 0 ]; then
    RUNAS=""  # already unprivileged: run everything as ourselves
elif [ -z "$RUNAS" ]; then
    if grep -q '^postgres:' /etc/passwd; then
        RUNAS=postgres
    else
        RUNAS=pgmuxbench
        if ! grep -q "^$RUNAS:" /etc/passwd; then
            if command -v useradd >/dev/null 2>&1; then
                useradd -r -M -d /nonexistent -s /bin/false "$RUNAS" || die "useradd failed"
            else
                # No useradd in a minimal image: write the entries ourselves, with a free id.
                id=64100
                while awk -F: -v id=$id '$3 == id {f=1} END {exit !f}' /etc/passwd /etc/group; do
                    id=$((id + 1))
                done
                echo "$RUNAS:x:$id:$id:pgmux bench:/nonexistent:/bin/false" >> /etc/passwd
                echo "$RUNAS:x:$id:" >> /etc/group
            fi
            log "created the user $RUNAS"
        fi
    fi
fi
as_user() {  # as_user CPUS PROGRAM ARGS...: pinned to CPUS (empty: any), as $RUNAS
    local cpus=$1; shift
    "$PINRUN" ${cpus:+-c "$cpus"} ${RUNAS:+-u "$RUNAS"} -- "$@"
}

W=$(mktemp -d /tmp/pgmux-scaling.XXXXXX)
chmod 755 "$W"
mkdir -p "$W/data" "$W/sock"
[ -n "$RUNAS" ] && chown "$RUNAS" "$W" "$W/data" "$W/sock"
PROXY_PID=""
cleanup() {
    stop_proxy
    [ -f "$W/data/postmaster.pid" ] && as_user "" "$PG/pg_ctl" -D "$W/data" -m immediate -w stop >/dev/null 2>&1
    # Anything still running from this run's directory (a proxy whose start timed out).
    local f
    for f in /proc/[0-9]*/cmdline; do
        tr '\0' ' ' 2>/dev/null < "$f" | grep -q "$W/" && kill -KILL "$(basename "$(dirname "$f")")" 2>/dev/null
    done
    write_logs
    [ -n "${SCALING_KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Below the ephemeral range: a port that hundreds of client sockets may hold as their local end
# looks free to a connect() probe yet cannot be bound.
EPHEMERAL_LO=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
    local span=$((EPHEMERAL_LO - 11000)) p
    [ "$span" -gt 100 ] || span=20000
    p=$((10000 + RANDOM % span))
    while port_open $p; do p=$((p + 1)); done
    echo $p
}
wait_port() {  # wait_port PORT PID WHAT
    local i
    for i in $(seq 1 300); do
        port_open "$1" && return 0
        [ -n "$2" ] && ! kill -0 "$2" 2>/dev/null && return 1
        sleep 0.1
    done
    return 1
}

# --- PostgreSQL --------------------------------------------------------------------------------
PGPORT_=$(free_port)
log "initdb"
as_user "$PG_CPUS" "$PG/initdb" -D "$W/data" -U postgres -E UTF8 --locale=C --no-sync \
    --auth-local=trust --auth-host=md5 > "$W/initdb.log" 2>&1 \
    || { cat "$W/initdb.log"; die "initdb failed"; }
cat >> "$W/data/postgresql.conf" <<EOF

# tests/bench/device/scaling.sh: select-only throughput on one machine; durability is not
# measured here.
listen_addresses = '127.0.0.1'
port = $PGPORT_
unix_socket_directories = '$W/sock'
max_connections = 400
shared_buffers = $SHARED_BUFFERS
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 8GB
jit = off
autovacuum = off
password_encryption = md5
timezone = 'GMT'
log_timezone = 'GMT'
log_min_messages = warning
EOF
log "starting PostgreSQL (shared_buffers $SHARED_BUFFERS, port $PGPORT_)"
as_user "$PG_CPUS" "$PG/pg_ctl" -D "$W/data" -l "$W/postgres.log" -w -t 120 start >/dev/null \
    || { tail -20 "$W/postgres.log"; die "PostgreSQL did not start"; }
psql_() { as_user "" "$PG/psql" -X -q -v ON_ERROR_STOP=1 -h "$W/sock" -p "$PGPORT_" -U postgres "$@"; }
psql_ -d postgres -c "CREATE ROLE $BENCH_USER LOGIN PASSWORD '$BENCH_PASSWORD'" \
    -c "CREATE DATABASE $BENCH_DB OWNER $BENCH_USER" || die "cannot create the bench role"
export PGPASSWORD=$BENCH_PASSWORD
log "pgbench -i -s $SCALE"
as_user "$CLIENT_CPUS" "$PG/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT_" \
    -U "$BENCH_USER" "$BENCH_DB" > "$W/pgbench-init.log" 2>&1 \
    || { tail -5 "$W/pgbench-init.log"; die "pgbench -i failed"; }
# Into shared buffers before the first measured run, so run order does not decide the cache.
psql_ -d "$BENCH_DB" -c "SELECT count(*) FROM pgbench_accounts" >/dev/null

MD5=$(printf '%s' "$BENCH_PASSWORD$BENCH_USER" | md5sum | cut -d' ' -f1)
printf '"%s" "md5%s"\n' "$BENCH_USER" "$MD5" > "$W/userlist.txt"
chmod 644 "$W/userlist.txt"

# --- proxies -----------------------------------------------------------------------------------
start_pgmux() {  # start_pgmux WORKERS PORT [ENGINE [MAX_CLIENTS [BALANCE]]]: sets PROXY_PID
    local engine=${3:-$IO_ENGINE} balance=${5:-on} name=pgmux-$1
    [ "$engine" = "$IO_ENGINE" ] || name=pgmux-$engine-$1
    [ "$balance" = on ] || name=pgmux-static-$1
    cat > "$W/$name.ini" <<EOF
[pgmux]
listen_addr = 127.0.0.1
listen_port = $2
workers = $1
$([ "$balance" = on ] || echo "worker_balance = $balance")
$([ -z "${SCALING_METRICS_PORT:-}" ] || echo "metrics_port = $SCALING_METRICS_PORT")
max_client_conn = ${4:-$((CLIENTS + 100))}
auth_type = md5
auth_file = $W/userlist.txt
log_level = warning
io_engine = $engine
query_wait_timeout = 10s
health_check_user = $BENCH_USER
health_check_password = $BENCH_PASSWORD
health_check_database = $BENCH_DB

[pool]
pool_mode = transaction
max_open_conns = $POOL

[node.primary]
host = 127.0.0.1
port = $PGPORT_
role = primary
EOF
    # pinrun itself in the background (not through a function, which would run in a subshell),
    # so $! is the pid pinrun execs the proxy in
    "$PINRUN" ${PROXY_CPUS:+-c "$PROXY_CPUS"} ${RUNAS:+-u "$RUNAS"} -- \
        "$PREFIX/bin/pgmux" -c "$W/$name.ini" >> "$W/$name.log" 2>&1 &
    PROXY_PID=$!
}
start_pgbouncer() {  # start_pgbouncer PORT [MAX_CLIENTS]: sets PROXY_PID
    cat > "$W/pgbouncer.ini" <<EOF
[databases]
$BENCH_DB = host=127.0.0.1 port=$PGPORT_ dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = md5
auth_file = $W/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_db_connections = $POOL
max_client_conn = ${2:-$((CLIENTS + 100))}
log_connections = 0
log_disconnections = 0
query_wait_timeout = 10
stats_period = 3600
EOF
    "$PINRUN" ${PROXY_CPUS:+-c "$PROXY_CPUS"} ${RUNAS:+-u "$RUNAS"} -- \
        "$PREFIX/bin/pgbouncer" "$W/pgbouncer.ini" >> "$W/pgbouncer.log" 2>&1 &
    PROXY_PID=$!
}
start_relay() {  # start_relay PORT: sets PROXY_PID
    "$PINRUN" ${PROXY_CPUS:+-c "$PROXY_CPUS"} ${RUNAS:+-u "$RUNAS"} -- \
        "$PREFIX/bin/relay" "$1" "$PGPORT_" >> "$W/relay.log" 2>&1 &
    PROXY_PID=$!
}
stop_proxy() {
    [ -n "${PROXY_PID:-}" ] || return 0
    kill -TERM "$PROXY_PID" 2>/dev/null
    local i
    for i in $(seq 1 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PROXY_PID" 2>/dev/null
    wait "$PROXY_PID" 2>/dev/null
    PROXY_PID=""
}

# --- measuring ---------------------------------------------------------------------------------
uptime_s() { awk '{print $1}' /proc/uptime; }  # 10 ms resolution; date +%N is not everywhere
proc_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
cpu_snapshot() { grep '^cpu[0-9]' /proc/stat; }
# busy percentage of a CPU list over two /proc/stat snapshots (empty list: all CPUs)
group_busy() {  # group_busy CPULIST FILE_BEFORE FILE_AFTER
    awk -v list="$1" '
        BEGIN { n = split(list, parts, ","); for (i = 1; i <= n; i++) {
                    if (split(parts[i], r, "-") == 2) { for (c = r[1]; c <= r[2]; c++) want[c] = 1 }
                    else if (parts[i] != "") want[parts[i] + 0] = 1 } }
        { c = substr($1, 4) + 0; if (list != "" && !(c in want)) next
          tot = 0; for (i = 2; i <= NF; i++) tot += $i; idle = $5 + $6
          if (FNR == NR) { t0[c] = tot; i0[c] = idle } else { dt += tot - t0[c]; di += idle - i0[c] } }
        END { if (dt > 0) printf "%.0f", 100 * (dt - di) / dt; else printf "-" }' "$2" "$3"
}
# A proxy that stops answering must not hold the run past the device command's limit.
TIMEOUT=""
command -v timeout >/dev/null 2>&1 && TIMEOUT="timeout -s KILL"
pgbench_run() {  # pgbench_run PORT SECONDS: output in $W/pgbench.out
    ${TIMEOUT:+$TIMEOUT $(($2 + 30))} \
    "$PINRUN" ${CLIENT_CPUS:+-c "$CLIENT_CPUS"} ${RUNAS:+-u "$RUNAS"} -- "$PG/pgbench" -n -S -h 127.0.0.1 -p "$1" -U "$BENCH_USER" \
        -c "$CLIENTS" -j "$JOBS" -T "$2" "$BENCH_DB" > "$W/pgbench.out" 2>&1
}

printf 'rep\ttarget\tworkers\ttps\tlat_ms\tproxy_cpu_pct\tproxy_cpus_busy\tpg_cpus_busy\tclient_cpus_busy\tfailed\terror\n' > "$OUT/runs.tsv"
: > "$OUT/pgbench.log"
run_target() {  # run_target REP TARGET WORKERS
    local rep=$1 target=$2 w=$3 port err="" pid="" label=$2
    case $target in pgmux*) label="$target w=$w" ;; esac
    PROXY_PID=""
    if [ "$target" = direct ]; then
        port=$PGPORT_
    else
        local try
        for try in 1 2 3; do  # another port if the chosen one was taken meanwhile
            port=$(free_port)
            case $target in
                pgbouncer) start_pgbouncer "$port" ;;
                relay) start_relay "$port" ;;
                pgmux-uring) start_pgmux "$w" "$port" io_uring ;;
                pgmux-static) start_pgmux "$w" "$port" "$IO_ENGINE" "" off ;;
                *) start_pgmux "$w" "$port" ;;
            esac
            pid=$PROXY_PID
            wait_port "$port" "$pid" && { err=""; break; }
            err="$label did not start (see its log)"
            stop_proxy
        done
    fi
    local tps="" lat="" cpu="" failed="" busy_proxy="" busy_pg="" busy_client=""
    if [ -z "$err" ]; then
        pgbench_run "$port" "$WARMUP" || true
        local t_before="" s_before="$W/stat.before" s_after="$W/stat.after" start end
        [ -n "$pid" ] && t_before=$(proc_ticks "$pid")
        cpu_snapshot > "$s_before"
        start=$(uptime_s)
        pgbench_run "$port" "$TIME" || err="pgbench exited $?"
        end=$(uptime_s)
        cpu_snapshot > "$s_after"
        if [ -n "$pid" ]; then
            local t_after
            t_after=$(proc_ticks "$pid")
            cpu=$(awk -v a="$t_after" -v b="$t_before" -v hz="$CLK_TCK" -v s="$start" -v e="$end" \
                  'BEGIN { printf "%.0f", 100 * (a - b) / hz / (e - s) }')
            busy_proxy=$(group_busy "$PROXY_CPUS" "$s_before" "$s_after")
        fi
        busy_pg=$(group_busy "$PG_CPUS" "$s_before" "$s_after")
        busy_client=$(group_busy "$CLIENT_CPUS" "$s_before" "$s_after")
        tps=$(awk '/^tps = / {printf "%.0f", $3}' "$W/pgbench.out")
        lat=$(awk '/^latency average = / {print $4}' "$W/pgbench.out")
        failed=$(awk '/number of failed transactions:/ {print $5}' "$W/pgbench.out")
        [ -z "$tps" ] && [ -z "$err" ] && err="no tps in pgbench's output"
        [ -z "$err" ] && [ -n "$failed" ] && [ "$failed" != 0 ] && err="$failed failed transactions"
        if [ -n "$err" ]; then
            local first
            first=$(grep -i -m1 'error' "$W/pgbench.out")
            [ -n "$first" ] && err="$err: $first"
        fi
        { echo "=== rep $rep $label ($(date -u +%T))"; cat "$W/pgbench.out"; } >> "$OUT/pgbench.log"
    fi
    [ -n "$pid" ] && stop_proxy
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$target" "$w" "$tps" "$lat" \
        "$cpu" "$busy_proxy" "$busy_pg" "$busy_client" "${failed:-0}" "$err" >> "$OUT/runs.tsv"
    log "rep $rep ${label}: ${tps:-—} tps, lat ${lat:-—} ms, proxy ${cpu:-—}% CPU; busy: proxy CPUs ${busy_proxy:-—}%, PostgreSQL CPUs ${busy_pg}%, pgbench CPUs ${busy_client}%${err:+  ERROR $err}"
}

# --- the report --------------------------------------------------------------------------------
median() {  # median [PRINTF_FORMAT] < values
    sort -n | awk -v f="${1:-%.0f}" '{v[NR] = $1} END { if (NR == 0) exit
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf f "\n", m }'
}
col() {  # col TARGET WORKERS COLUMN: the column's values of the runs without an error
    awk -F'\t' -v t="$1" -v w="$2" -v c="$3" 'NR > 1 && $2 == t && $3 == w && $11 == "" && $c != "" && $c != "-" {print $c}' "$OUT/runs.tsv"
}
report() {
    local md="$OUT/scaling.md" rows=() t w
    for t in $TARGETS; do
        case $t in
            pgmux) for w in $WORKERS; do rows+=("pgmux:$w"); done ;;
            pgmux-uring) for w in $URING_WORKERS; do rows+=("pgmux-uring:$w"); done ;;
            pgmux-static) for w in $STATIC_WORKERS; do rows+=("pgmux-static:$w"); done ;;
            *) rows+=("$t:-") ;;
        esac
    done
    local bouncer
    bouncer=$(col pgbouncer - 4 | median)
    local direct
    direct=$(col direct - 4 | median)
    {
        echo "$(date -u +'%Y-%m-%d %H:%M UTC'), $(awk '/^pgmux / {print "pgmux", $2}' "$PREFIX/MANIFEST"), $NCPU CPUs ($CPU_MODEL), kernel $(uname -r);"
        echo "\`pgbench -S\` (simple protocol) -c $CLIENTS -j $JOBS, $TIME s per run after $WARMUP s of warm-up, median of up to $REPS runs per row, targets alternating;"
        echo "scale $SCALE, shared_buffers $SHARED_BUFFERS, fsync off; pool $POOL server connections (PgBouncer 1.18 default_pool_size, pgmux max_open_conns), transaction mode, md5;"
        echo "CPUs: proxy ${PROXY_CPUS:-any}, PostgreSQL ${PG_CPUS:-any}, pgbench ${CLIENT_CPUS:-any}; pgmux io_engine = $IO_ENGINE."
        echo
        echo "| target | workers | tps | × PgBouncer | × direct | proxy CPU % | proxy CPUs busy % | PostgreSQL CPUs busy % | pgbench CPUs busy % | lat avg ms | runs |"
        echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        local r tps n errs
        for r in "${rows[@]}"; do
            t=${r%%:*} w=${r#*:}
            tps=$(col "$t" "$w" 4 | median)
            n=$(col "$t" "$w" 4 | wc -l)
            errs=$(awk -F'\t' -v t="$t" -v w="$w" 'NR > 1 && $2 == t && $3 == w && $11 != "" {n++} END {print n + 0}' "$OUT/runs.tsv")
            local ratio_b="—" ratio_d="—"
            [ -n "$tps" ] && [ -n "$bouncer" ] && ratio_b=$(awk -v a="$tps" -v b="$bouncer" 'BEGIN {printf "%.2f", a / b}')
            [ -n "$tps" ] && [ -n "$direct" ] && ratio_d=$(awk -v a="$tps" -v b="$direct" 'BEGIN {printf "%.2f", a / b}')
            local cpu busy_x busy_pg busy_c lat
            cpu=$(col "$t" "$w" 6 | median); busy_x=$(col "$t" "$w" 7 | median)
            busy_pg=$(col "$t" "$w" 8 | median); busy_c=$(col "$t" "$w" 9 | median)
            lat=$(col "$t" "$w" 5 | median %.2f)
            case $t in pgmux*) ;; *) w="—" ;; esac
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s%s |\n' "$t" "$w" \
                "${tps:-—}" "$ratio_b" "$ratio_d" "${cpu:-—}" "${busy_x:-—}" "${busy_pg:-—}" \
                "${busy_c:-—}" "${lat:-—}" "$n" "$([ "$errs" -gt 0 ] && echo " ($errs failed)")"
        done
        echo
        echo "proxy CPU %: the proxy process's utime + stime over the measured run (100 = one core)."
        case " $TARGETS " in *" relay "*)
            echo "relay: tests/bench/relay.c, one thread that forwards bytes (one upstream connection per client, no pooling): one core's kernel floor." ;; esac
        case " $TARGETS " in *" pgmux-uring "*)
            if grep -qs 'io_uring is not available' "$W"/pgmux-io_uring-*.log; then
                echo "pgmux-uring: io_uring was NOT available here, so those rows ran on epoll: $(grep -hm1 'io_uring is not available' "$W"/pgmux-io_uring-*.log | sed 's/.*(\(.*\)).*/\1/')"
            else
                echo "pgmux-uring: pgmux with io_engine = io_uring (batched receives and sends)."
            fi ;; esac
        case " $TARGETS " in *" pgmux-static "*)
            echo "pgmux-static: pgmux with worker_balance = off (each worker keeps the sessions the kernel dealt it); the pgmux rows have it on, the default." ;; esac
        echo "CPUs busy %: share of non-idle time of that CPU group in /proc/stat over the measured run."
        local w8
        w8=$(col pgmux 8 4 | median)
        if [ -n "$w8" ] && [ -n "$bouncer" ]; then
            echo
            awk -v a="$w8" -v b="$bouncer" 'BEGIN { r = a / b; v = (r >= 3) ? "met" : "not met"; printf "Issue 7 target, pgmux at 8 workers >= 3x PgBouncer: %.2fx, %s.\n", r, v }'
        fi
        [ -n "${NOTE:-}" ] && { echo; echo "$NOTE"; }
        if [ -s "$OUT/idle.tsv" ]; then
            echo
            echo "Memory per idle client: $IDLE authenticated idle connections (md5) from 127.0.0.2-6, one run each; RSS of the proxy after one transaction (pool warm) and after the last login.${IDLE_NOTE:+ $IDLE_NOTE}"
            echo
            echo "| target | workers | clients | RSS before MiB | RSS after MiB | KiB per client | logins took s |"
            echo "|---|--:|--:|--:|--:|--:|--:|"
            awk -F'\t' 'NR > 1 { if ($9 != "") printf "| %s | %s | %s | %s |  |  | %s |\n", $1, $2, $3, $4, $9
                                  else printf "| %s | %s | %s | %.1f | %.1f | %.3f | %s |\n", $1, $2, $3, $4 / 1024, $5 / 1024, $6, $7 }' "$OUT/idle.tsv"
        fi
        echo
        echo "Whole run: $(elapsed) s."
    } > "$md"
}

# --- the runs ----------------------------------------------------------------------------------
order=()
for t in $TARGETS; do
    case $t in
        pgmux) for w in $WORKERS; do order+=("pgmux:$w"); done ;;
        pgmux-uring) for w in $URING_WORKERS; do order+=("pgmux-uring:$w"); done ;;
        pgmux-static) for w in $STATIC_WORKERS; do order+=("pgmux-static:$w"); done ;;
        direct|pgbouncer|relay) order+=("$t:-") ;;
        *) die "unknown target $t (direct, relay, pgbouncer, pgmux, pgmux-uring, pgmux-static)" ;;
    esac
done
NOTE=""
per_run=$((WARMUP + TIME + 3))
log "${#order[@]} targets x $REPS runs of $TIME s (+$WARMUP s warm-up); budget $BUDGET s"
for rep in $(seq 1 "$REPS"); do
    for o in "${order[@]}"; do
        if [ $(($(elapsed) + per_run)) -gt "$BUDGET" ]; then
            NOTE="Stopped early: SCALING_BUDGET ($BUDGET s) reached during run $rep; rows show the runs done."
            log "$NOTE"
            break 2
        fi
        run_target "$rep" "${o%%:*}" "${o#*:}"
    done
    report
done
report

# --- memory per idle client --------------------------------------------------------------------
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
idle_run() {  # idle_run TARGET WORKERS: one line in $OUT/idle.tsv
    local target=$1 w=$2 port pid err="" base="" rss="" secs="" kib="" cl="" t0 line=""
    port=$(free_port)
    if [ "$target" = pgbouncer ]; then start_pgbouncer "$port" $((IDLE + 100))
    else start_pgmux "$w" "$port" "$IO_ENGINE" $((IDLE + 100)); fi
    pid=$PROXY_PID
    if ! wait_port "$port" "$pid"; then
        err="did not start"
    else
        # one transaction first, so the pool and its server connection exist before the baseline
        ${TIMEOUT:+$TIMEOUT 30} "$PINRUN" ${CLIENT_CPUS:+-c "$CLIENT_CPUS"} ${RUNAS:+-u "$RUNAS"} -- \
            "$PG/pgbench" -n -S -h 127.0.0.1 -p "$port" -U "$BENCH_USER" -c 1 -t 10 "$BENCH_DB" \
            > "$W/idle-pgbench.out" 2>&1 || err="pgbench: $(grep -m1 -i error "$W/idle-pgbench.out")"
    fi
    if [ -z "$err" ]; then
        sleep 0.5
        base=$(rss_kib "$pid")
        t0=$(uptime_s)
        "$PINRUN" ${CLIENT_CPUS:+-c "$CLIENT_CPUS"} -- "$PREFIX/bin/idle_clients" "$port" "$IDLE" \
            "$BENCH_USER" "$BENCH_DB" "$BENCH_PASSWORD" 5 > "$W/idle.out" 2> "$W/idle.err" &
        cl=$!
        local i
        for i in $(seq 1 $((IDLE_WAIT * 10))); do
            line=$(head -1 "$W/idle.out" 2>/dev/null)
            [ -n "$line" ] && break
            kill -0 "$cl" 2>/dev/null || break
            sleep 0.1
        done
        secs=$(awk -v a="$(uptime_s)" -v b="$t0" 'BEGIN {printf "%.1f", a - b}')
        case $line in
            ready*) sleep 1; rss=$(rss_kib "$pid")
                    kib=$(awk -v a="$rss" -v b="$base" -v n="$IDLE" 'BEGIN {printf "%.3f", (a - b) / n}') ;;
            *) if [ -s "$W/idle.err" ]; then err="idle_clients: $(head -c 300 "$W/idle.err" | tr '\n' ' ')"
               else err="not all logged in within $IDLE_WAIT s"; fi ;;
        esac
        kill -TERM "$cl" 2>/dev/null; wait "$cl" 2>/dev/null
    fi
    stop_proxy
    [ "$target" = pgbouncer ] && w="—"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$w" "$IDLE" "${base:-0}" "${rss:-0}" \
        "$kib" "$secs" "$(uptime_s)" "$err" >> "$OUT/idle.tsv"
    log "idle $target w=$w: $IDLE clients: ${kib:-—} KiB each (RSS ${base:-?} -> ${rss:-?} KiB, logins ${secs:-?} s)${err:+  ERROR $err}"
}
IDLE_NOTE=""
if [ "$IDLE" -gt 0 ] && [ "$(ulimit -n)" -lt $((IDLE + 1000)) ]; then
    # Each process (the proxy, idle_clients) needs a descriptor per client. Without the right to
    # raise the hard limit (CAP_SYS_RESOURCE), measure as many clients as it allows.
    fit=$(( ($(ulimit -n) - 1000) / 1000 * 1000 ))
    IDLE_NOTE="Fewer than the $IDLE idle clients asked for: the open-file limit here is $(ulimit -n) and cannot be raised (no CAP_SYS_RESOURCE?), so $fit."
    log "idle clients: $IDLE_NOTE"
    IDLE=$fit
fi
if [ "$IDLE" -gt 0 ]; then
    if [ "$IDLE" -lt 1000 ]; then
        log "idle clients: skipped, the open-file limit is $(ulimit -n)"
    else
        printf 'target\tworkers\tclients\trss_before_kib\trss_after_kib\tkib_per_client\tlogin_s\tat\terror\n' > "$OUT/idle.tsv"
        deadline=${IDLE_DEADLINE:-$((BUDGET + 120))}
        for t in pgbouncer $(for w in $IDLE_WORKERS; do echo "pgmux:$w"; done); do
            if [ "$(elapsed)" -gt "$deadline" ]; then
                log "idle clients: $t not run, past $deadline s"; continue
            fi
            case $t in pgmux:*) idle_run pgmux "${t#pgmux:}" ;; *) idle_run "$t" - ;; esac
        done
        report
    fi
fi
echo
cat "$OUT/scaling.md"
log "done: $OUT/scaling.md"
