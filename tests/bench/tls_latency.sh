#!/usr/bin/env bash
# The latency client TLS adds to a pgbench -S transaction through pgmux.
#
# One pgmux (build/release/pgmux, client_tls_mode = prefer, transaction pooling) in front of
# the test cluster's primary; pgbench -S with sslmode=require and with sslmode=disable against
# that same pgmux, alternating run by run, TLS_RUNS runs each; prints every run, the medians
# and the difference of the medians of pgbench's average latency, with pgmux's own CPU time
# per transaction (utime + stime from /proc, clock-tick resolution).
#
#   make && tests/bench/tls_latency.sh
#   TLS_CLIENTS=1 TLS_SECONDS=20 tests/bench/tls_latency.sh
#
# Settings: TLS_CLIENTS (10), TLS_SECONDS (10), TLS_RUNS (3), TLS_SCALE (pgbench -i, 10).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
clients=${TLS_CLIENTS:-10}
seconds=${TLS_SECONDS:-10}
runs=${TLS_RUNS:-3}
scale=${TLS_SCALE:-10}
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
pgmux=$root/build/release/pgmux
[ -x "$pgmux" ] || { echo "tls_latency.sh: build pgmux first (make)" >&2; exit 1; }

work=$(mktemp -d /tmp/pgmux-tls-bench.XXXXXX)
chmod 755 "$work" # the postgres user must reach the cluster below it
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    tests/cluster.sh stop "$work/cluster" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

tests/cluster.sh start "$work/cluster" >"$work/env"
# shellcheck disable=SC1091
. "$work/env"
pg() { "$@" -h "$SOCKET_DIR" -p "$PRIMARY_PORT" -U postgres; }
if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$pgbin/pgbench" -i -q -s "$scale" -h "$SOCKET_DIR" -p "$PRIMARY_PORT" \
        -U postgres appdb >/dev/null 2>&1
else
    pg "$pgbin/pgbench" -i -q -s "$scale" appdb >/dev/null 2>&1
fi
pg "$pgbin/psql" -X -q -d appdb -c 'GRANT SELECT ON ALL TABLES IN SCHEMA public TO app'

cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=bench-ca -keyout ca.key -out ca.crt >/dev/null 2>&1
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout server.key -out server.csr >/dev/null 2>&1
echo "subjectAltName=IP:127.0.0.1,DNS:localhost" >server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.crt >/dev/null 2>&1
echo '"app" "app-secret"' >userlist.txt
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >pgmux.ini <<EOF
[pgmux]
listen_addr = 127.0.0.1
listen_port = $port
workers = 0
auth_type = scram-sha-256
auth_file = userlist.txt
log_level = warning
client_tls_mode = prefer
client_tls_cert_file = server.crt
client_tls_key_file = server.key
[pool]
pool_mode = transaction
max_open_conns = 20
[node.primary]
host = 127.0.0.1
port = $PRIMARY_PORT
role = primary
EOF
"$pgmux" -c pgmux.ini >pgmux.log 2>&1 &
pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
done

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; } # pgmux's utime + stime, all threads
threads=$(nproc)
[ "$clients" -lt "$threads" ] && threads=$clients
echo "pgbench -S -c $clients -j $threads -T $seconds through pgmux, sslmode=require vs disable"
: >runs.txt
for i in $(seq "$runs"); do
    for mode in require disable; do
        cpu0=$(cpu_ticks)
        out=$(PGSSLMODE=$mode PGPASSWORD=app-secret "$pgbin/pgbench" -S -n -c "$clients" \
            -j "$threads" -T "$seconds" -h 127.0.0.1 -p "$port" -U app appdb 2>&1) || {
            echo "$out" >&2
            exit 1
        }
        cpu1=$(cpu_ticks)
        lat=$(echo "$out" | awk '/^latency average/ {print $4}')
        tps=$(echo "$out" | awk '/^tps/ {print $3}')
        txns=$(echo "$out" | awk '/actually processed/ {print $NF}')
        failed=$(echo "$out" | awk '/failed transactions/ {print $5}')
        cpu=$(awk -v d=$((cpu1 - cpu0)) -v hz="$hz" -v n="$txns" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}')
        printf '%-8s run %d: latency %s ms, tps %s, pgmux CPU %s us/tx, failed %s\n' "$mode" "$i" \
            "$lat" "$tps" "$cpu" "$failed"
        echo "$mode $lat $tps $cpu" >>runs.txt
    done
done
median() { # MODE COLUMN
    awk -v m="$1" -v c="$2" '$1 == m {print $c}' runs.txt | sort -g |
        awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
lt=$(median require 2)
lp=$(median disable 2)
tt=$(median require 3)
tp=$(median disable 3)
ct=$(median require 4)
cp=$(median disable 4)
echo "median latency: TLS $lt ms, plaintext $lp ms; median tps: TLS $tt, plaintext $tp"
echo "median pgmux CPU per transaction: TLS $ct us, plaintext $cp us"
awk -v a="$lt" -v b="$lp" -v x="$tt" -v y="$tp" 'BEGIN {
    printf "TLS adds %.3f ms (%.0f us) per transaction (latency ratio %.2f, tps ratio %.2f)\n",
        a - b, (a - b) * 1000, a / b, x / y }'
