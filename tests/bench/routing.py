#!/usr/bin/python3
"""Read/write routing figures (`make bench-routing`):

1. Share of statements per node: one `pgbench -S -c 50` run through pgmux (transaction pooling,
   one primary, one replica, default routing), counted on the servers as the growth of
   pg_stat_database.xact_commit of the pgbench database on each node (every -S transaction is
   one SELECT), and by pgmux's own per-node counters (logged when it stops).
2. What read_your_writes = lsn costs per write transaction: the pgbench TPC-B-like script
   through pgmux with read_your_writes = lsn and = off, alternating runs (A B A B ...), medians
   of tps and latency, and pgmux's CPU time per transaction (/proc/PID/stat utime + stime).

Starts its own cluster with tests/cluster.sh in a temporary directory. Settings: ROUTING_TIME
(seconds per run, default 10), ROUTING_REPS (runs per setting, default 3), ROUTING_SCALE
(pgbench scale, default 10), ROUTING_CLIENTS (TPC-B clients, default 10), PGMUX (binary,
default build/release/pgmux).
"""
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
TIME = int(os.environ.get("ROUTING_TIME", 10))
REPS = int(os.environ.get("ROUTING_REPS", 3))
SCALE = int(os.environ.get("ROUTING_SCALE", 10))
CLIENTS = int(os.environ.get("ROUTING_CLIENTS", 10))
PGMUX = os.environ.get("PGMUX", os.path.join(ROOT, "build/release/pgmux"))
USER, PASSWORD, DB = "app", "app-secret", "rtbench"


def log(*a):
    print("bench-routing:", *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def su(env, replica=False, dbname="postgres"):
    port = env["REPLICA_PORT"] if replica else env["PRIMARY_PORT"]
    return psycopg.connect(host=env["SOCKET_DIR"], port=port, user="postgres", dbname=dbname,
                           autocommit=True)


def xact_commits(env):
    out = {}
    for node, replica in (("primary", False), ("replica", True)):
        with su(env, replica) as c:
            c.execute("SELECT pg_stat_clear_snapshot()")
            out[node] = c.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                                  [DB]).fetchone()[0]
    return out


def wait_backends_gone(env):
    for _ in range(300):
        n = 0
        for replica in (False, True):
            with su(env, replica) as c:
                n += c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                               " AND backend_type = 'client backend'", [DB]).fetchone()[0]
        if n == 0:
            return
        time.sleep(0.1)
    raise SystemExit("pgmux's server connections did not go away")


def start_pgmux(workdir, env, **keys):
    port = free_port()
    conf = {
        "listen_addr": "127.0.0.1", "listen_port": port, "workers": 2, "max_client_conn": 200,
        "auth_type": "scram-sha-256", "auth_file": os.path.join(workdir, "users.txt"),
        "log_level": "info", "pool_mode": "transaction", "max_open_conns": 20,
    }
    conf.update(keys)
    pool_keys = {"pool_mode", "max_open_conns"}
    ini = ["[pgmux]"] + [f"{k} = {v}" for k, v in conf.items() if k not in pool_keys]
    ini += ["[pool]"] + [f"{k} = {v}" for k, v in conf.items() if k in pool_keys]
    ini += ["[node.primary]", "host = 127.0.0.1", f"port = {env['PRIMARY_PORT']}",
            "role = primary", "[node.replica]", "host = 127.0.0.1",
            f"port = {env['REPLICA_PORT']}", "role = replica", ""]
    path = os.path.join(workdir, f"pgmux-{port}.ini")
    with open(path, "w") as f:
        f.write("\n".join(ini))
    logf = open(os.path.join(workdir, f"pgmux-{port}.log"), "wb")
    proc = subprocess.Popen([PGMUX, "-c", path], stdout=logf, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port, logf.name
        except OSError:
            time.sleep(0.02)
    raise SystemExit("pgmux did not start")


def stop_pgmux(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pgbench(port, args, clients):
    cmd = [f"{PGBIN}/pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-n",
           "-c", str(clients), "-j", "2", "-T", str(TIME), *args, DB]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         env=dict(os.environ, PGPASSWORD=PASSWORD), timeout=TIME * 4 + 60)
    if out.returncode != 0:
        raise SystemExit(f"pgbench failed: {out.stderr[-2000:]}")
    tps = float(re.search(r"tps = ([0-9.]+) \(without", out.stdout).group(1))
    lat = float(re.search(r"latency average = ([0-9.]+) ms", out.stdout).group(1))
    txns = int(re.search(r"number of transactions actually processed: (\d+)", out.stdout).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    return tps, lat, txns, int(failed.group(1)) if failed else 0


def main():
    cdir = tempfile.mkdtemp(prefix="pgmux-rtbench-")
    workdir = tempfile.mkdtemp(prefix="pgmux-rtbench-w-")
    cluster_sh = os.path.join(ROOT, "tests/cluster.sh")
    subprocess.run([cluster_sh, "start", cdir], check=True, capture_output=True, timeout=180)
    try:
        env = dict(line.split("=", 1) for line in open(os.path.join(cdir, "env")).read().split())
        with open(os.path.join(workdir, "users.txt"), "w") as f:
            f.write(f'"{USER}" "{PASSWORD}"\n')
        with su(env) as c:
            c.execute(f"CREATE DATABASE {DB} OWNER {USER}")
        subprocess.run([f"{PGBIN}/pgbench", "-i", "-q", "-s", str(SCALE), "-h", "127.0.0.1",
                        "-p", env["PRIMARY_PORT"], "-U", USER, DB], check=True,
                       capture_output=True, env=dict(os.environ, PGPASSWORD=PASSWORD))
        with su(env) as p, su(env, replica=True) as r:
            target = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            while not r.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                [target]).fetchone()[0]:
                time.sleep(0.1)

        # 1. pgbench -S -c 50: who served the statements (defaults, then the primary taking
        #    reads too with primary_reads_weight = 1 beside the replica's weight 1)
        for extra in ({}, {"primary_reads_weight": 1}):
            proc, port, logname = start_pgmux(workdir, env, **extra)
            before = xact_commits(env)
            tps, lat, txns, failed = pgbench(port, ["-S"], 50)
            stop_pgmux(proc)
            # A backend reports its counters when it exits (or at most once a second while
            # busy): read them once pgmux's server connections are gone.
            wait_backends_gone(env)
            after = xact_commits(env)
            served = {k: after[k] - before[k] for k in before}
            total = sum(served.values())
            routed = [line.split("routed: ", 1)[1].split(";")[0]
                      for line in open(logname, errors="replace") if "routed: " in line]
            keys = ", ".join(f"{k} = {v}" for k, v in extra.items()) or "defaults"
            print(f"## pgbench -S -c 50 -j 2 -T {TIME}, scale {SCALE}, through pgmux "
                  f"(transaction pooling, 2 workers, {keys})\n")
            print(f"pgbench: {txns} transactions, {failed} failed, tps {tps:.0f}, "
                  f"latency {lat:.3f} ms")
            for node in ("primary", "replica"):
                print(f"- {node}: {served[node]} transactions committed "
                      f"({100.0 * served[node] / total:.1f}% of {total})")
            print("- pgmux per worker: " + " | ".join(routed) + "\n")

        # 2. read-your-writes = lsn vs off, TPC-B-like, alternating
        results = {"lsn": [], "off": []}
        for rep in range(REPS):
            for mode in ("lsn", "off"):
                proc, port, logname = start_pgmux(workdir, env, read_your_writes=mode)
                c0 = cpu_s(proc.pid)
                tps, lat, txns, failed = pgbench(port, [], CLIENTS)
                cpu = cpu_s(proc.pid) - c0
                stop_pgmux(proc)
                lookups = sum(int(m) for m in re.findall(r"commit positions learned (\d+)",
                                                         open(logname, errors="replace").read()))
                results[mode].append((tps, lat, cpu * 1e6 / max(txns, 1), lookups / max(txns, 1)))
                log(f"rep {rep} {mode}: tps {tps:.0f} lat {lat:.3f} ms "
                    f"cpu {cpu * 1e6 / max(txns, 1):.1f} us/tx lookups/tx {lookups / max(txns, 1):.2f}")
        print(f"\n## TPC-B-like (pgbench default script), -c {CLIENTS} -j 2 -T {TIME}, "
              f"{REPS} runs each, alternating; medians\n")
        print("| read_your_writes | tps | latency avg ms | pgmux CPU us/tx | LSN lookups/tx |")
        print("|---|--:|--:|--:|--:|")
        med = {}
        for mode in ("lsn", "off"):
            cols = list(zip(*results[mode]))
            med[mode] = [statistics.median(c) for c in cols]
            print(f"| {mode} | {med[mode][0]:.0f} | {med[mode][1]:.3f} | {med[mode][2]:.1f} | "
                  f"{med[mode][3]:.2f} |")
        print(f"\nlsn / off: tps {med['lsn'][0] / med['off'][0]:.3f}, latency "
              f"+{med['lsn'][1] - med['off'][1]:.3f} ms per transaction, pgmux CPU "
              f"+{med['lsn'][2] - med['off'][2]:.1f} us per transaction")
    finally:
        subprocess.run([cluster_sh, "stop", cdir], capture_output=True)
        shutil.rmtree(cdir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
