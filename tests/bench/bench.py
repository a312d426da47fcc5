#!/usr/bin/python3
"""pgmux side-by-side benchmark (`make bench`, `make bench-smoke`; run through tests/bench/run.sh).

Starts the test cluster (tests/cluster.sh; the replica is stopped, only the primary is
measured), loads pgbench data, and runs each workload against a direct connection, the byte
relay (tests/bench/relay.c, the kernel floor), Debian's PgBouncer in transaction mode and
pgmux (when BENCH_TARGETS names them: pgmux-uring, the same with io_engine = io_uring, and
pgmux-1w, the same with one worker thread, as PgBouncer has; pgmux-static, the same with
worker_balance = off, so every worker keeps the sessions it accepted), alternating targets run by run
(A B C D A B C D ...), and reports medians. Then: system
calls per transaction (strace -c -f on a short separate run), RSS per idle client
(tests/bench/idle_clients.c), and instructions per transaction under callgrind.
Writes build/bench/results.md and prints it. Settings: BENCH_* environment variables, listed in
ENV below and in README.md "Performance".

--smoke: pgbench -S, 10 clients, a few seconds, pgmux and direct; fails only when pgmux errors
or has failed transactions (CI runs it from `make test`).
"""
import glob
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
USER, PASSWORD, DB = "md5user", "md5-secret", "bench"  # md5user: md5 in the cluster's pg_hba
MD5_SECRET = "md5" + hashlib.md5((PASSWORD + USER).encode()).hexdigest()
# app: a SCRAM verifier in the cluster, copied into both proxies' auth_file (so each logs in to
# PostgreSQL with the keys the client's SCRAM exchange gave it: no plaintext anywhere)
SCRAM_USER, SCRAM_PASSWORD = "app", "app-secret"
PASSWORDS = {USER: PASSWORD, SCRAM_USER: SCRAM_PASSWORD}
ROW_USERS = {"S -C scram c=10": SCRAM_USER}  # rows not run as USER


def env(name, default):
    return os.environ.get(name, str(default))


ENV = {
    "BENCH_TIME": env("BENCH_TIME", 4),  # seconds per pgbench run
    "BENCH_REPS": env("BENCH_REPS", 3),  # runs per (workload, target); the median is reported
    "BENCH_SCALE": env("BENCH_SCALE", 10),  # pgbench -i scale
    "BENCH_WORKLOADS": env("BENCH_WORKLOADS", "all"),  # comma list of row names, or all
    "BENCH_TARGETS": env("BENCH_TARGETS", "direct,relay,pgbouncer,pgmux"),
    "BENCH_POOL_SIZE": env("BENCH_POOL_SIZE", 20),  # server connections, pgbouncer and pgmux
    "BENCH_PGMUX": env("BENCH_PGMUX", os.path.join(ROOT, "build/release/pgmux")),
    # target pgmux-base: another pgmux binary (an older build) for A/B comparisons in one run
    "BENCH_PGMUX_BASE": env("BENCH_PGMUX_BASE", ""),
    "BENCH_PGMUX_POOL_MODE": env("BENCH_PGMUX_POOL_MODE", "transaction"),
    "BENCH_PGMUX_WORKERS": env("BENCH_PGMUX_WORKERS", 0),  # 0 = one per CPU
    "BENCH_JOBS": env("BENCH_JOBS", 2),  # pgbench -j (threads)
    "BENCH_STRACE_TIME": env("BENCH_STRACE_TIME", 2),  # seconds; 0 = no syscall counts
    "BENCH_IDLE_CLIENTS": env("BENCH_IDLE_CLIENTS", "10000,100000"),  # empty = skip
    # startup parameters the idle clients send besides user and database ("name=value,...")
    "BENCH_IDLE_PARAMS": env("BENCH_IDLE_PARAMS", ""),
    # idle-client counts above the open-file limit: "vm" runs them in a virtual machine
    # (tests/bench/vm.sh), where root may raise the limit; "off" reports them as not run
    "BENCH_IDLE_VM": env("BENCH_IDLE_VM", "vm"),
    "BENCH_CALLGRIND_TXNS": env("BENCH_CALLGRIND_TXNS", 5000),  # 0 = skip
    # callgrind workloads: S (pgbench -S), S extended (-M extended), TPC-B (the default script)
    "BENCH_CALLGRIND_WORKLOADS": env("BENCH_CALLGRIND_WORKLOADS", "S"),
    "BENCH_SLOW_READER_ROWS": env("BENCH_SLOW_READER_ROWS", 1000000),  # 0 = skip
    "BENCH_OUT": env("BENCH_OUT", os.path.join(ROOT, "build/bench")),
}

# name -> (pgbench arguments, clients, targets allowed or None for all)
WORKLOADS = [
    ("S c=1", ["-S"], 1, None),
    ("S c=10", ["-S"], 10, None),
    ("S c=100", ["-S"], 100, None),
    ("S c=500", ["-S"], 500, None),
    ("S extended c=10", ["-S", "-M", "extended"], 10, None),
    ("S extended c=100", ["-S", "-M", "extended"], 100, None),
    ("S extended c=500", ["-S", "-M", "extended"], 500, None),
    # PgBouncer 1.18 cannot pool named prepared statements in transaction mode
    ("S prepared c=10", ["-S", "-M", "prepared"], 10,
     {"direct", "relay", "pgmux", "pgmux-uring", "pgmux-1w", "pgmux-static", "pgmux-base"}),
    ("S prepared c=100", ["-S", "-M", "prepared"], 100,
     {"direct", "relay", "pgmux", "pgmux-uring", "pgmux-1w", "pgmux-static", "pgmux-base"}),
    ("S -C c=10", ["-S", "-C"], 10, None),
    # the same logins with SCRAM-SHA-256: libpq runs PBKDF2 (4096 iterations) for each one
    ("S -C scram c=10", ["-S", "-C"], 10, None),
    ("TPC-B c=10", [], 10, None),
    ("TPC-B c=100", [], 100, None),
]
PG_MAX_CONNECTIONS = 300  # tests/cluster.sh
PROXIES = ("relay", "pgbouncer", "pgmux", "pgmux-uring", "pgmux-1w", "pgmux-static",
           "pgmux-base")

children = []  # Popen objects to stop on exit


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def spawn(argv, logpath, user=None):
    out = open(logpath, "ab")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         user=user, start_new_session=True)
    children.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=10):
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def proc_cpu(pid):
    """(utime, stime) in seconds, all threads, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(rest[11]) / tck, int(rest[12]) / tck


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1048576
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Bench:
    def __init__(self, smoke):
        self.smoke = smoke
        self.out = ENV["BENCH_OUT"]
        os.makedirs(self.out, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="pgmux-bench-", dir="/tmp")
        os.chmod(self.tmp, 0o755)
        self.cluster = os.path.join(self.tmp, "cluster")
        self.procs = {}  # target -> Popen
        self.ports = {}  # target -> port
        self.notes = []
        self.pool_mode = ENV["BENCH_PGMUX_POOL_MODE"]
        self.pool_size = int(ENV["BENCH_POOL_SIZE"])

    # --- cluster and data ----------------------------------------------------------------
    def start_cluster(self):
        log("starting the test cluster (tests/cluster.sh)")
        r = subprocess.run([os.path.join(ROOT, "tests/cluster.sh"), "start", self.cluster],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("cluster.sh start failed:\n" + r.stdout + r.stderr)
        e = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        self.pg_port = int(e["PRIMARY_PORT"])
        self.sock = e["SOCKET_DIR"]
        # Only the primary is measured; a streaming replica would replay TPC-B's WAL on the
        # same two cores.
        as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run(as_pg + [f"{PGBIN}/pg_ctl", "-D", e["REPLICA_DATA"], "-m", "fast", "-w",
                                "stop"], cwd=self.cluster, capture_output=True, check=True)
        self.ports["direct"] = self.pg_port
        psql = as_pg + [f"{PGBIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.sock,
                        "-p", str(self.pg_port), "-U", "postgres", "-d", "postgres", "-c"]
        subprocess.run(psql + [f"CREATE DATABASE {DB} OWNER {USER}"], cwd=self.cluster,
                       check=True, capture_output=True)
        scale = "1" if self.smoke else ENV["BENCH_SCALE"]
        log(f"pgbench -i -s {scale}")
        r = subprocess.run(["pgbench", "-i", "-q", "-s", scale, "-h", "127.0.0.1", "-p",
                            str(self.pg_port), "-U", USER, DB], env=self.pgenv(),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("pgbench -i failed:\n" + r.stderr)
        psql_bench = psql[:-2] + [DB, "-c"]  # psql ends with "-d", "postgres", "-c"
        subprocess.run(psql_bench + [f"GRANT SELECT, UPDATE, INSERT ON ALL TABLES IN SCHEMA "
                                     f"public TO {SCRAM_USER}"],
                       cwd=self.cluster, check=True, capture_output=True)
        r = subprocess.run(psql[:-1] + ["-At", "-c", "SELECT rolpassword FROM pg_authid "
                                        f"WHERE rolname = '{SCRAM_USER}'"],
                           cwd=self.cluster, check=True, capture_output=True, text=True)
        self.scram_secret = r.stdout.strip()

    def pgenv(self, user=USER):
        e = dict(os.environ)
        e["PGPASSWORD"] = PASSWORDS[user]
        e.pop("PGSERVICE", None)
        return e

    # --- proxies -------------------------------------------------------------------------
    def write_userlist(self):
        path = os.path.join(self.tmp, "userlist.txt")
        with open(path, "w") as f:
            f.write(f'"{USER}" "{MD5_SECRET}"\n')
            f.write(f'"{SCRAM_USER}" "{self.scram_secret}"\n')
        os.chmod(path, 0o644)
        return path

    def pgmux_ini(self, name, port, pool_mode, max_open, workers, max_clients, io_engine="epoll",
                  balance="on"):
        path = os.path.join(self.tmp, f"{name}.ini")
        with open(path, "w") as f:
            f.write(f"""[pgmux]
listen_addr = 127.0.0.1
listen_port = {port}
workers = {workers}
{"" if balance == "on" else f"worker_balance = {balance}"}
max_client_conn = {max_clients}
auth_type = md5
auth_file = {self.write_userlist()}
log_level = warning
io_engine = {io_engine}
; a pool that cannot serve a client surfaces as an error in the table, not a two-minute hang
query_wait_timeout = 10s

[pool]
pool_mode = {pool_mode}
max_open_conns = {max_open}

[node.primary]
host = 127.0.0.1
port = {self.pg_port}
role = primary
""")
        return path

    def check_pool_mode(self):
        """Fall back to session mode (noted in the results) when this pgmux refuses the
        configured mode: transaction pooling may not have landed yet."""
        ini = self.pgmux_ini("check", free_port(), self.pool_mode, self.pool_size, 1, 100)
        r = subprocess.run([ENV["BENCH_PGMUX"], "--check", "-c", ini], capture_output=True,
                           text=True)
        if r.returncode != 0 and self.pool_mode != "session":
            msg = (r.stdout + r.stderr).strip().splitlines()
            self.notes.append(f"pgmux refused pool_mode = {self.pool_mode} "
                              f"({msg[0] if msg else 'rc ' + str(r.returncode)}); "
                              "pgmux ran in **session** mode with max_open_conns = "
                              f"{PG_MAX_CONNECTIONS - 50}: rows needing more server "
                              "connections are skipped, and it holds a server connection "
                              "per client")
            log("NOTE:", self.notes[-1])
            self.pool_mode = "session"

    def pgmux_max_open(self):
        return self.pool_size if self.pool_mode != "session" else PG_MAX_CONNECTIONS - 50

    def start_pgmux(self, name="pgmux", workers=None, max_clients=1000, valgrind=None,
                    io_engine="epoll", binary=None, balance="on"):
        port = free_port()
        w = ENV["BENCH_PGMUX_WORKERS"] if workers is None else workers
        ini = self.pgmux_ini(name, port, self.pool_mode, self.pgmux_max_open(), w, max_clients,
                             io_engine, balance)
        argv = [binary or ENV["BENCH_PGMUX"], "-c", ini]
        if valgrind:
            argv = valgrind + argv
        p = spawn(argv, os.path.join(self.tmp, f"{name}.log"))
        wait_port(port, p, name, 120 if valgrind else 30)
        return p, port

    def start_pgmux_base(self):
        if not ENV["BENCH_PGMUX_BASE"]:
            raise RuntimeError("target pgmux-base needs BENCH_PGMUX_BASE (a pgmux binary)")
        return self.start_pgmux("pgmux-base", binary=ENV["BENCH_PGMUX_BASE"])

    def start_pgbouncer(self, name="pgbouncer", max_clients=1000, valgrind=None):
        port = free_port()
        ini = os.path.join(self.tmp, f"{name}.ini")
        with open(ini, "w") as f:
            f.write(f"""[databases]
{DB} = host=127.0.0.1 port={self.pg_port} dbname={DB}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = md5
auth_file = {self.write_userlist()}
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = {max_clients}
max_db_connections = {self.pool_size}
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
query_wait_timeout = 10
stats_period = 3600
# pgmux listens with the kernel's maximum backlog; PgBouncer's default of 128 drops SYNs when
# idle_clients has 256 logins in flight, and each drop waits out a 1 s retransmission
listen_backlog = 4096
# what JDBC users set: PgBouncer refuses this startup parameter otherwise (BENCH_IDLE_PARAMS)
ignore_startup_parameters = extra_float_digits
""")
        os.chmod(ini, 0o644)
        # PgBouncer refuses to run as root
        user = "postgres" if os.getuid() == 0 else None
        argv = (valgrind or []) + ["pgbouncer", ini]
        p = spawn(argv, os.path.join(self.tmp, f"{name}.log"), user=user)
        wait_port(port, p, name, 120 if valgrind else 30)
        return p, port

    def start_relay(self):
        port = free_port()
        p = spawn([os.path.join(self.out, "relay"), str(port), str(self.pg_port)],
                  os.path.join(self.tmp, "relay.log"))
        wait_port(port, p, "relay")
        return p, port

    def start_targets(self, targets):
        for t in targets:
            if t == "direct":
                continue
            p, port = {"relay": self.start_relay, "pgbouncer": self.start_pgbouncer,
                       "pgmux": self.start_pgmux,
                       "pgmux-uring": lambda: self.start_pgmux("pgmux-uring",
                                                               io_engine="io_uring"),
                       "pgmux-1w": lambda: self.start_pgmux("pgmux-1w", workers=1),
                       "pgmux-static": lambda: self.start_pgmux("pgmux-static",
                                                                balance="off"),
                       "pgmux-base": self.start_pgmux_base}[t]()
            self.procs[t], self.ports[t] = p, port

    # --- one pgbench run -----------------------------------------------------------------
    def pgbench(self, target, args, clients, seconds=None, txns=None, logdir=None, port=None,
                user=USER):
        argv = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(port or self.ports[target]),
                "-U", user, "-c", str(clients), "-j", str(min(clients, int(ENV["BENCH_JOBS"])))]
        argv += ["-t", str(txns)] if txns else ["-T", str(seconds)]
        if logdir:
            argv += ["-l", "--log-prefix", os.path.join(logdir, "tx")]
        argv += args + [DB]
        limit = (float(seconds) if seconds else 0) + 60 + clients / 10 + (txns or 0) / 100
        try:
            r = subprocess.run(argv, env=self.pgenv(user), capture_output=True, text=True,
                               timeout=limit)
        except subprocess.TimeoutExpired as e:
            r = subprocess.CompletedProcess(argv, -9, e.stdout or "", (e.stderr or "") +
                                            f"\npgbench: error: killed after {limit:.0f} s")
            r.stdout = r.stdout.decode() if isinstance(r.stdout, bytes) else r.stdout
            r.stderr = r.stderr.decode() if isinstance(r.stderr, bytes) else r.stderr
        res = {"rc": r.returncode, "out": r.stdout, "err": r.stderr}

        def grab(pattern, cast=float):
            m = re.search(pattern, r.stdout)
            return cast(m.group(1)) if m else None

        res["txns"] = grab(r"number of transactions actually processed: (\d+)", int) or 0
        res["failed"] = grab(r"number of failed transactions: (\d+)", int) or 0
        res["tps"] = grab(r"tps = ([\d.]+)")
        res["lat"] = grab(r"latency average = ([\d.]+) ms")
        errs = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
        res["error"] = errs[0] if errs else (f"pgbench exited {r.returncode}"
                                             if r.returncode else None)
        if res["failed"] and not res["error"]:
            res["error"] = f"{res['failed']} failed transactions"
        if logdir:
            lats = []
            for fn in glob.glob(os.path.join(logdir, "tx.*")):
                with open(fn) as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) >= 3 and parts[2].isdigit():
                            lats.append(int(parts[2]))
            lats.sort()
            res["p99"] = lats[min(len(lats) - 1, int(len(lats) * 0.99))] / 1000 if lats else None
        return res

    def run_one(self, target, args, clients, user=USER):
        pid = self.procs[target].pid if target in self.procs else None
        if pid and self.procs[target].poll() is not None:
            return {"error": f"{target} is not running (exit {self.procs[target].returncode})"}
        logdir = tempfile.mkdtemp(dir=self.tmp, prefix="run-")
        before = proc_cpu(pid) if pid else None
        res = self.pgbench(target, args, clients, seconds=ENV["BENCH_TIME"], logdir=logdir,
                           user=user)
        if pid and self.procs[target].poll() is None and res["txns"] and not res["error"]:
            after = proc_cpu(pid)
            n = max(res["txns"], 1)
            res["usr"] = (after[0] - before[0]) * 1e6 / n
            res["sys"] = (after[1] - before[1]) * 1e6 / n
            res["rss"] = proc_rss_kib(pid)
        shutil.rmtree(logdir, ignore_errors=True)
        return res

    def count_syscalls(self, target, args, clients, user=USER):
        pid = self.procs[target].pid
        outf = os.path.join(self.tmp, f"strace-{target}.txt")
        st = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", outf],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children.append(st)
        time.sleep(0.5)  # attach to every thread
        res = self.pgbench(target, args, clients, seconds=ENV["BENCH_STRACE_TIME"], user=user)
        stop(st, signal.SIGINT)
        calls = None
        try:  # strace -c table: % time, seconds, usecs/call, calls, errors, syscall
            with open(outf) as f:
                text = f.read()
            tot = [ln for ln in text.splitlines() if ln.rstrip().endswith("total")]
            if tot:
                nums = tot[-1].split()
                calls = int(nums[3])
            top = [ln.split() for ln in text.splitlines()[2:] if ln and ln[0] == " "]
            top = [(int(x[3]), x[-1]) for x in top if len(x) >= 5 and x[3].isdigit()]
            top.sort(reverse=True)
            self.syscall_mix[(target, " ".join(args), clients)] = top[:4]
        except (OSError, ValueError, IndexError):
            pass
        if calls is None or not res["txns"] or res["error"]:
            return None
        return calls / res["txns"]

    # --- item 1 --------------------------------------------------------------------------
    def run_workloads(self):
        targets = [t for t in ENV["BENCH_TARGETS"].split(",") if t]
        self.start_targets(targets)
        wanted = ENV["BENCH_WORKLOADS"]
        rows = [w for w in WORKLOADS if wanted == "all" or w[0] in wanted.split(",")]
        self.results = {}  # (workload, target) -> list of run results, or a skip reason
        self.syscalls = {}
        self.syscall_mix = {}
        reps = int(ENV["BENCH_REPS"])
        for name, args, clients, allowed in rows:
            user = ROW_USERS.get(name, USER)
            active = []
            for t in targets:
                if allowed is not None and t not in allowed:
                    self.results[(name, t)] = "not supported"
                elif t in ("direct", "relay") and clients > PG_MAX_CONNECTIONS - 10:
                    self.results[(name, t)] = f"> max_connections ({PG_MAX_CONNECTIONS})"
                elif t.startswith("pgmux") and self.pool_mode == "session" and \
                        clients > self.pgmux_max_open():
                    self.results[(name, t)] = "session mode: > server connections"
                else:
                    active.append(t)
                    self.results[(name, t)] = []
            for rep in range(reps):
                for t in active:
                    res = self.run_one(t, args, clients, user)
                    self.results[(name, t)].append(res)
                    tps = res.get("tps")
                    log(f"{name:18} {t:9} run {rep + 1}/{reps}: "
                        + (f"tps {tps:.0f}" if tps else "") + (
                            f"  cpu {res['usr'] + res['sys']:.1f} us/tx" if "usr" in res
                            else "") + (f"  ERROR {res['error']}" if res.get("error") else ""))
            if float(ENV["BENCH_STRACE_TIME"]) > 0:
                for t in active:
                    if t in PROXIES:
                        self.syscalls[(name, t)] = self.count_syscalls(t, args, clients, user)

    # --- item 2 --------------------------------------------------------------------------
    def idle_clients(self):
        """RSS growth per idle client, PgBouncer and pgmux alternating, median of BENCH_REPS
        runs each (a run's figure moves by a few per cent with heap layout)."""
        self.idle = {}  # (target, n) -> text for the table
        counts = [int(x) for x in ENV["BENCH_IDLE_CLIENTS"].split(",") if x.strip()]
        if not counts:
            return
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        reps = max(1, int(ENV["BENCH_REPS"]))
        # Each side (proxy and idle_clients) needs a descriptor per client; the bench raises
        # the soft limit to the hard one, and only a process with CAP_SYS_RESOURCE can raise
        # the hard one (ulimit -Hn as root, or LimitNOFILE= in a systemd unit).
        too_many = [n for n in counts if n + 1000 > nofile]
        in_vm = self.idle_in_vm(too_many) if too_many and ENV["BENCH_IDLE_VM"] == "vm" else {}
        for n in counts:
            runs = {}
            for t in self.memory_targets():
                if n in too_many:
                    self.idle[(t, n)] = in_vm.get(f"{t} {n}") or (
                        f"not run: needs an open-file limit of at least {n + 1000}; the "
                        f"hard limit here is {nofile} (ulimit -Hn)")
                elif t.startswith("pgmux") and self.pool_mode == "session":
                    self.idle[(t, n)] = "skipped: needs transaction mode"
                else:
                    runs[t] = []
            for rep in range(reps):
                for t in runs:
                    r = self.idle_one(t, n)
                    runs[t].append(r)
                    log(f"idle clients {t} {n} run {rep + 1}/{reps}: "
                        + (r if isinstance(r, str) else f"{r['kib']:.3f} KiB/client"))
            for t, rs in runs.items():
                errs = [r for r in rs if isinstance(r, str)]
                if errs:
                    self.idle[(t, n)] = errs[0]
                    continue
                rs.sort(key=lambda r: r["kib"])
                m = rs[len(rs) // 2]
                each = ", ".join(f"{r['kib']:.2f}" for r in rs)
                self.idle[(t, n)] = (
                    f"{statistics.median(r['kib'] for r in rs):.2f} KiB/client (runs: {each}; "
                    f"median run: RSS {m['base'] / 1024:.1f} -> {m['rss'] / 1024:.1f} MiB, "
                    f"logins took {m['secs']:.1f} s)")
        with open(os.path.join(self.out, "idle.json"), "w") as f:
            json.dump({f"{t} {n}": text for (t, n), text in self.idle.items()}, f)

    def idle_in_vm(self, counts):
        """The same measurement for counts the open-file limit here forbids, in a qemu guest
        on this machine's own root filesystem (tests/bench/vm.sh): "target n" -> text."""
        log(f"idle clients {','.join(map(str, counts))}: above the open-file limit here; "
            "measuring them in a virtual machine (tests/bench/vm.sh, about 2 minutes a run)")
        out = os.path.join(self.tmp, "vm")
        r = subprocess.run(
            [os.path.join(ROOT, "tests/bench/vm.sh"), out, "env", "BENCH_OUT=/tmp/bench",
             "BENCH_WORKLOADS=none", "BENCH_SLOW_READER_ROWS=0", "BENCH_CALLGRIND_TXNS=0",
             "BENCH_STRACE_TIME=0", "BENCH_IDLE_VM=off",
             "BENCH_IDLE_CLIENTS=" + ",".join(map(str, counts)), "sh", "-c",
             'tests/bench/run.sh; rc=$?; cp /tmp/bench/idle.json "$VM_OUT/"; exit $rc'],
            capture_output=True, text=True)
        try:
            with open(os.path.join(out, "idle.json")) as f:
                got = json.load(f)
        except (OSError, ValueError):
            log("the virtual machine gave no figures: " + (r.stderr.strip()[-500:] or
                                                            f"exit {r.returncode}"))
            return {}
        return {k: v + " (in a virtual machine)" for k, v in got.items()}

    def memory_targets(self):
        """PgBouncer, pgmux, and pgmux-base when BENCH_TARGETS names it (before/after in one
        run)."""
        return ("pgbouncer", "pgmux") + (
            ("pgmux-base",) if "pgmux-base" in ENV["BENCH_TARGETS"].split(",") else ())

    def start_memory_target(self, target, name, max_clients=1000):
        if target == "pgbouncer":
            return self.start_pgbouncer(f"pgbouncer-{name}", max_clients=max_clients)
        if target == "pgmux-base":
            return self.start_pgmux(f"pgmux-base-{name}", max_clients=max_clients,
                                    binary=ENV["BENCH_PGMUX_BASE"])
        return self.start_pgmux(f"pgmux-{name}", max_clients=max_clients)

    def idle_one(self, target, n):
        p, port = self.start_memory_target(target, "idle", max_clients=n + 100)
        cl = None
        try:
            # one login and query first, so the pool and its server connection exist
            r = self.pgbench(target, ["-S"], 1, txns=10, port=port)
            if r["error"]:
                return "error: " + r["error"]
            time.sleep(0.5)
            base = proc_rss_kib(p.pid)
            # A source address per 4,000 clients (at least 5): connect() looks for a free
            # ephemeral port of its source, which slows down as that range fills up.
            sources = max(5, -(-n // 4000))
            cl = subprocess.Popen([os.path.join(self.out, "idle_clients"), str(port), str(n),
                                   USER, DB, PASSWORD, str(sources)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, IDLE_CLIENTS_PARAMS=ENV["BENCH_IDLE_PARAMS"]))
            children.append(cl)
            t0 = time.time()
            line = cl.stdout.readline()
            if not line.startswith("ready"):
                cl.wait()
                return "error: " + (cl.stderr.read().strip() or "idle_clients failed")
            secs = time.time() - t0
            time.sleep(1)
            rss = proc_rss_kib(p.pid)
            return {"kib": (rss - base) / n, "base": base, "rss": rss, "secs": secs}
        finally:
            stop(cl)
            stop(p)

    # --- a huge result to a slow reader -------------------------------------------------
    def slow_reader(self):
        """Peak RSS growth of the proxy while a client with a small receive buffer takes
        BENCH_SLOW_READER_ROWS rows of about 60 bytes, reading nothing for 2 s first and then
        about 16 MB/s with half-second stalls (the method of tests/integration/
        test_streaming.py). PgBouncer and pgmux alternate, median of BENCH_REPS runs."""
        self.slow = {}  # target -> text for the table
        rows = int(ENV["BENCH_SLOW_READER_ROWS"])
        if rows <= 0:
            return
        runs = {t: [] for t in self.memory_targets()}
        for rep in range(max(1, int(ENV["BENCH_REPS"]))):
            for t in runs:
                r = self.slow_reader_one(t, rows)
                runs[t].append(r)
                log(f"slow reader {t} run {rep + 1}: "
                    + (r if isinstance(r, str) else f"RSS +{r / 1024:.2f} MiB"))
        for t, rs in runs.items():
            errs = [r for r in rs if isinstance(r, str)]
            self.slow[t] = errs[0] if errs else (
                f"{statistics.median(rs) / 1024:.2f} MiB (runs: "
                + ", ".join(f"{r / 1024:.2f}" for r in sorted(rs)) + ")")

    def slow_reader_one(self, target, rows):
        sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
        import pgwire  # noqa: E402 (the integration suite's raw protocol client)
        p, port = self.start_memory_target(target, "slow")
        c = None
        try:
            c = pgwire.connect(port, USER, DB, PASSWORD, rcvbuf=64 * 1024, timeout=60)
            c.query("SELECT 1")  # the server connection and the buffers exist
            time.sleep(0.2)
            base = proc_rss_kib(p.pid)
            peak = [base]
            done_sampling = threading.Event()

            def sample():
                while not done_sampling.is_set():
                    try:
                        peak[0] = max(peak[0], proc_rss_kib(p.pid))
                    except (FileNotFoundError, ProcessLookupError):
                        return
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                c.send(pgwire.query_message(
                    f"SELECT g, repeat('x', 40) FROM generate_series(1, {rows}) g"))
                time.sleep(2.0)
                got, done, buf = 0, False, bytearray()
                last_pause = time.monotonic()
                while not done:
                    chunk = c.sock.recv(32 * 1024)
                    if not chunk:
                        return "error: the proxy closed the connection mid-result"
                    buf += chunk
                    pos = 0
                    while len(buf) - pos >= 5:
                        length = int.from_bytes(buf[pos + 1:pos + 5], "big")
                        if len(buf) - pos < 1 + length:
                            break
                        if buf[pos] == ord("D"):
                            got += 1
                        elif buf[pos] == ord("E"):
                            return "error: ErrorResponse mid-result"
                        elif buf[pos] == ord("Z"):
                            done = True
                        pos += 1 + length
                    del buf[:pos]
                    time.sleep(0.002)
                    if time.monotonic() - last_pause > 1.0:
                        time.sleep(0.5)
                        last_pause = time.monotonic()
            finally:
                done_sampling.set()
                sampler.join()
            if got != rows:
                return f"error: {got} of {rows} rows"
            return peak[0] - base
        except (OSError, pgwire.PgError) as e:
            return f"error: {e}"
        finally:
            if c:
                c.close()
            stop(p)

    # --- item 3 --------------------------------------------------------------------------
    def callgrind(self):
        self.instr = {}  # (target, workload) -> instructions per transaction, or an error
        n = int(ENV["BENCH_CALLGRIND_TXNS"])
        if n <= 0:
            return
        args_of = {"S": ["-S"], "S extended": ["-S", "-M", "extended"], "TPC-B": [],
                   "S -C": ["-S", "-C"], "S -C scram": ["-S", "-C"]}
        workloads = [w.strip() for w in ENV["BENCH_CALLGRIND_WORKLOADS"].split(",") if w.strip()]
        for w in workloads:
            if w not in args_of:
                raise RuntimeError(f"BENCH_CALLGRIND_WORKLOADS: unknown workload {w!r} "
                                   f"(known: {', '.join(args_of)})")
        targets = ["pgmux", "pgbouncer"] + (["pgmux-base"] if ENV["BENCH_PGMUX_BASE"] else [])
        for w in workloads:
            for target in targets:
                totals = []
                for txns in (n // 5, n):
                    outf = os.path.join(self.tmp, f"callgrind-{target}-{txns}.out")
                    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outf}"]
                    if target == "pgbouncer":
                        os.chmod(self.tmp, 0o777)  # pgbouncer (postgres) writes the output here
                        p, port = self.start_pgbouncer("pgbouncer-callgrind", valgrind=vg)
                    else:
                        binary = ENV["BENCH_PGMUX_BASE"] if target == "pgmux-base" else None
                        p, port = self.start_pgmux(target + "-callgrind", workers=1,
                                                   valgrind=vg, binary=binary)
                    r = self.pgbench(target, args_of[w], 1, txns=txns, port=port,
                                     user=SCRAM_USER if w == "S -C scram" else USER)
                    stop(p, timeout=60)
                    if r["error"]:
                        self.instr[(target, w)] = "error: " + r["error"]
                        break
                    with open(outf) as f:
                        m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
                    totals.append(int(m.group(1)))
                if len(totals) == 2:
                    self.instr[(target, w)] = (totals[1] - totals[0]) / (n - n // 5)
                log(f"callgrind {w} {target}: {self.instr.get((target, w))}")

    # --- report --------------------------------------------------------------------------
    def report(self, seconds):
        def med(runs, key):
            vals = [r[key] for r in runs if r.get(key) is not None and not r.get("error")]
            return statistics.median(vals) if vals else None

        def fmt(v, spec):
            return "—" if v is None else format(v, spec)

        rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip() or "?"
        lines = ["# pgmux benchmark", "",
                 f"{time.strftime('%Y-%m-%d %H:%M')}, pgmux {rev}, {os.cpu_count()} CPUs, "
                 f"kernel {os.uname().release}; pgbench scale {ENV['BENCH_SCALE']}, "
                 f"{ENV['BENCH_REPS']} runs of {ENV['BENCH_TIME']} s per row (median), "
                 f"targets alternating; pgmux pool_mode = {self.pool_mode}, max_open_conns = "
                 f"{self.pgmux_max_open()}, workers = {ENV['BENCH_PGMUX_WORKERS']} (0 = CPUs); "
                 f"PgBouncer {self.pgbouncer_version()} transaction mode, pool size "
                 f"{self.pool_size}; auth md5 (the scram row: SCRAM-SHA-256 as {SCRAM_USER}, its "
                 f"PostgreSQL verifier in both auth_files). Whole run: {seconds / 60:.1f} min.", ""]
        for n in self.notes:
            lines += [f"**Note:** {n}", ""]
        lines += ["| workload | target | tps | lat avg ms | lat p99 ms | proxy user µs/tx | "
                  "proxy sys µs/tx | proxy CPU µs/tx | syscalls/tx | proxy RSS MiB |",
                  "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
        errors = []
        summary = {}
        for name, _, _, _ in WORKLOADS:
            for t in ENV["BENCH_TARGETS"].split(","):
                runs = self.results.get((name, t))
                if runs is None:
                    continue
                if isinstance(runs, str):
                    lines.append(f"| {name} | {t} | {runs} | | | | | | | |")
                    continue
                for r in runs:
                    if r.get("error"):
                        errors.append(f"{name} / {t}: {r['error']}")
                ok = [r for r in runs if not r.get("error")]
                m = {k: med(runs, k) for k in ("tps", "lat", "p99", "usr", "sys", "rss")}
                m["cpu"] = med([dict(r, cpu=r["usr"] + r["sys"]) for r in ok if "usr" in r],
                               "cpu")
                m["sc"] = self.syscalls.get((name, t))
                summary[(name, t)] = m
                err = f" ({len(runs) - len(ok)} of {len(runs)} runs failed)" \
                    if len(ok) < len(runs) else ""
                lines.append(
                    f"| {name} | {t}{err} | {fmt(m['tps'], '.0f')} | {fmt(m['lat'], '.3f')} | "
                    f"{fmt(m['p99'], '.3f')} | {fmt(m['usr'], '.1f')} | {fmt(m['sys'], '.1f')} | "
                    f"{fmt(m['cpu'], '.1f')} | {fmt(m['sc'], '.1f')} | "
                    f"{fmt(m['rss'] / 1024 if m['rss'] else None, '.1f')} |")
        lines += ["", "Ratios (medians above):", "",
                  "| workload | pgmux/PgBouncer tps | pgmux/PgBouncer CPU per tx | "
                  "pgmux/relay CPU per tx | added avg latency vs direct, ms: pgmux / PgBouncer | "
                  "pgmux io_uring/PgBouncer CPU per tx | pgmux io_uring/epoll CPU per tx | "
                  "pgmux 1 worker/PgBouncer CPU per tx | "
                  "pgmux worker_balance off/PgBouncer CPU per tx |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]

        def ratio(a, b):
            return f"{a / b:.2f}" if a is not None and b else "—"

        for name, _, _, _ in WORKLOADS:
            mx, pb = summary.get((name, "pgmux"), {}), summary.get((name, "pgbouncer"), {})
            rl, di = summary.get((name, "relay"), {}), summary.get((name, "direct"), {})
            ur = summary.get((name, "pgmux-uring"), {})
            w1 = summary.get((name, "pgmux-1w"), {})
            st = summary.get((name, "pgmux-static"), {})
            if not mx and not pb:
                continue
            d = di.get("lat")
            add = (f"{fmt(mx.get('lat') - d if mx.get('lat') and d else None, '.3f')} / "
                   f"{fmt(pb.get('lat') - d if pb.get('lat') and d else None, '.3f')}")
            lines.append(f"| {name} | {ratio(mx.get('tps'), pb.get('tps'))} | "
                         f"{ratio(mx.get('cpu'), pb.get('cpu'))} | "
                         f"{ratio(mx.get('cpu'), rl.get('cpu'))} | {add} | "
                         f"{ratio(ur.get('cpu'), pb.get('cpu'))} | "
                         f"{ratio(ur.get('cpu'), mx.get('cpu'))} | "
                         f"{ratio(w1.get('cpu'), pb.get('cpu'))} | "
                         f"{ratio(st.get('cpu'), pb.get('cpu'))} |")
        if self.syscall_mix:
            lines += ["", "Most frequent system calls in the strace runs (calls, name), "
                      "S c=100: " + "; ".join(
                          f"{t}: " + ", ".join(f"{c} {s}" for c, s in mix)
                          for (t, a, c_), mix in self.syscall_mix.items()
                          if a == "-S" and c_ == 100)]
        ts = self.memory_targets()

        def label(t):
            return {"pgbouncer": "PgBouncer", "pgmux-base": f"pgmux-base ({base_rev})"}.get(t, t)

        base_rev = os.path.basename(ENV["BENCH_PGMUX_BASE"]) if ENV["BENCH_PGMUX_BASE"] else ""
        if self.idle:
            lines += ["", "Idle authenticated clients (RSS growth of the proxy / clients):", "",
                      "| clients | " + " | ".join(label(t) for t in ts) + " |",
                      "|--:|" + "---|" * len(ts)]
            for n in sorted({k[1] for k in self.idle}):
                lines.append(f"| {n} | " + " | ".join(self.idle.get((t, n), "—") for t in ts)
                             + " |")
        if self.slow:
            lines += ["", f"A {int(ENV['BENCH_SLOW_READER_ROWS']):,}-row result (about 60 bytes "
                      "a row) to a slow reader (64 KiB receive buffer, reads nothing for 2 s, "
                      "then about 16 MB/s with pauses): peak RSS growth of the proxy", "",
                      "| " + " | ".join(label(t) for t in ts) + " |", "|" + "---|" * len(ts),
                      "| " + " | ".join(self.slow.get(t, "—") for t in ts) + " |"]
        if self.instr:
            def fmt_instr(v):
                return f"{v:,.0f}" if isinstance(v, float) else (v or "—")

            wls = list(dict.fromkeys(w for _, w in self.instr))
            tgs = list(dict.fromkeys(t for t, _ in self.instr))
            what = "`pgbench -S` transaction" if wls == ["S"] else "transaction"
            lines += ["", f"Instructions per {what}, user space, callgrind "
                      f"(1 client, difference of {ENV['BENCH_CALLGRIND_TXNS']} and "
                      f"{int(ENV['BENCH_CALLGRIND_TXNS']) // 5} transactions; pgmux workers = 1):",
                      ""]
            if wls == ["S"]:
                for t in tgs:
                    lines.append(f"- {t}: " + fmt_instr(self.instr.get((t, "S"))))
            else:
                lines += ["| workload | " + " | ".join(tgs) + " |",
                          "|---|" + "--:|" * len(tgs)]
                for w in wls:
                    lines.append(f"| {w} | " + " | ".join(fmt_instr(self.instr.get((t, w)))
                                                          for t in tgs) + " |")
        if errors:
            lines += ["", "Errors:", ""] + [f"- {e}" for e in errors[:40]]
        text = "\n".join(lines) + "\n"
        with open(os.path.join(self.out, "results.md"), "w") as f:
            f.write(text)
        print(text)

    def pgbouncer_version(self):
        r = subprocess.run(["pgbouncer", "--version"], capture_output=True, text=True)
        m = re.search(r"PgBouncer (\S+)", r.stdout)
        return m.group(1) if m else "?"

    # --- smoke ---------------------------------------------------------------------------
    def smoke_run(self):
        self.start_targets(["pgmux"])
        secs = env("BENCH_SMOKE_TIME", 3)
        d = self.pgbench("direct", ["-S"], 10, seconds=secs)
        m = self.pgbench("pgmux", ["-S"], 10, seconds=secs)
        print(f"bench-smoke: pgbench -S, 10 clients, {secs} s: direct {d['tps'] or 0:.0f} tps, "
              f"pgmux ({self.pool_mode} mode) {m['tps'] or 0:.0f} tps, "
              f"{m['failed']} failed transactions")
        if m["error"] or not m["txns"]:
            print("bench-smoke: FAILED: " + (m["error"] or "no transactions") + "\n"
                  + m["out"] + m["err"], file=sys.stderr)
            with open(os.path.join(self.tmp, "pgmux.log")) as f:
                print("pgmux log:\n" + f.read()[-4000:], file=sys.stderr)
            return 1
        return 0

    def cleanup(self):
        for p in reversed(children):
            stop(p, timeout=5)
        subprocess.run([os.path.join(ROOT, "tests/cluster.sh"), "stop", self.cluster],
                       capture_output=True)
        if os.environ.get("BENCH_KEEP"):
            log("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    smoke = "--smoke" in sys.argv[1:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    nofile = raise_nofile()
    b = Bench(smoke)
    t0 = time.time()
    try:
        b.start_cluster()
        b.check_pool_mode()
        if smoke:
            return b.smoke_run()
        log(f"open-file limit {nofile}; results go to {b.out}/results.md")
        b.run_workloads()
        b.idle_clients()
        b.slow_reader()
        b.callgrind()
        b.report(time.time() - t0)
        return 0
    except RuntimeError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        for name in ("pgmux.log", "pgbouncer.log", "relay.log"):
            path = os.path.join(b.tmp, name)
            if os.path.exists(path) and os.path.getsize(path):
                with open(path, errors="replace") as f:
                    print(f"== {name} (last lines)\n" + "".join(f.readlines()[-20:]),
                          file=sys.stderr)
        return 1
    finally:
        b.cleanup()


if __name__ == "__main__":
    sys.exit(main())
