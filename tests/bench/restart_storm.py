#!/usr/bin/python3
"""Connection storm through a SO_REUSEPORT restart (README "Zero-downtime restart").

    tests/bench/restart_storm.py [--threads 8] [--runs 5] PGMUX_BINARY...

For each run and binary: pgmux A listens on a free port, THREADS threads open connections as
fast as they can (each sends an SSLRequest and expects 'N': no login, no PostgreSQL needed),
pgmux B starts on the same port, A gets SIGTERM and exits, the storm goes on one more second.
Prints, per run, how many connections got their answer and how many failed, by error. Run it
as root to compare net.ipv4.tcp_migrate_req = 0 and 1 (--migrate 0,1; restored afterwards).
"""
import argparse
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

MIGRATE = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, workdir, name, port):
    ini = workdir / f"{name}.ini"
    (workdir / "users.txt").write_text('"app" "x"\n')
    ini.write_text(f"""[pgmux]
listen_addr = 127.0.0.1
listen_port = {port}
workers = 2
max_client_conn = 100000
auth_file = {workdir}/users.txt
shutdown_timeout = 5s
log_level = warning
[node.p]
host = 127.0.0.1
port = 1
role = primary
""")
    log = open(workdir / f"{name}.log", "w")
    return subprocess.Popen([binary, "-c", str(ini)], stdout=log, stderr=subprocess.STDOUT)


def one_run(binary, threads):
    workdir = Path(tempfile.mkdtemp(prefix="pgmux-storm-"))
    port = free_port()
    stop = threading.Event()
    lock = threading.Lock()
    ok = [0]
    failed = {}

    def storm():
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(struct.pack("!ii", 8, 80877103))
                    reply = s.recv(1)
                if reply != b"N":
                    raise OSError(f"answer {reply!r}")
                with lock:
                    ok[0] += 1
            except OSError as e:
                key = type(e).__name__ if e.errno is None else f"{type(e).__name__} {e.errno}"
                with lock:
                    failed[key] = failed.get(key, 0) + 1

    a = start(binary, workdir, "a", port)
    for _ in range(250):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.02)
    else:
        raise SystemExit(f"pgmux A did not listen; see {workdir}/a.log")
    ts = [threading.Thread(target=storm, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    time.sleep(1)
    b = start(binary, workdir, "b", port)
    time.sleep(0.7)
    if b.poll() is not None:
        raise SystemExit(f"pgmux B exited; see {workdir}/b.log")
    a.send_signal(signal.SIGTERM)
    a.wait(15)
    time.sleep(1)
    stop.set()
    for t in ts:
        t.join()
    b.send_signal(signal.SIGINT)
    b.wait(15)
    shutil.rmtree(workdir, ignore_errors=True)
    return ok[0], failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--migrate", default="", help="comma-separated tcp_migrate_req values")
    args = ap.parse_args()
    values = [v for v in args.migrate.split(",") if v] or [None]
    old = MIGRATE.read_text().strip() if MIGRATE.exists() else None
    try:
        for run in range(1, args.runs + 1):
            for value in values:
                if value is not None:
                    MIGRATE.write_text(value)
                current = MIGRATE.read_text().strip() if MIGRATE.exists() else "n/a"
                for binary in args.binaries:
                    ok, failed = one_run(binary, args.threads)
                    print(f"run {run} tcp_migrate_req={current} {binary}: {ok} answered, "
                          f"{sum(failed.values())} failed {failed or ''}", flush=True)
    finally:
        if old is not None and values != [None]:
            MIGRATE.write_text(old)


if __name__ == "__main__":
    main()
