"""Zero-downtime restart: a second pgmux (B) starts on the port of a running one (A) thanks to
SO_REUSEPORT, then A gets SIGTERM and drains, while a steady client load runs through both.

What is counted (README "Zero-downtime restart"):
  connections  every connection attempt; failed = it did not reach ReadyForQuery (or, for
               the probes that only send an SSLRequest, did not get its answer)
  transactions every BEGIN a client sent; failed = a transaction that began (BEGIN answered)
               and did not commit, or a BEGIN answered by anything but a drain close
  drain closes A closing a session between two transactions with FATAL 57P01 (item 4 of the
               shutdown contract): the client's next BEGIN gets the 57P01, nothing of it ran,
               and the client reconnects (to B). These are reported, not counted as failures.
Every committed transaction's rows must be in the table afterwards, and nothing else.

The kernel resets connections still queued on a listening socket when it closes, unless
net.ipv4.tcp_migrate_req = 1 hands them to another listener of the port; the test sets it for
its run, as the README's procedure does (PGMUX_TEST_MIGRATE_REQ=0 runs without, to compare).
"""

import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import psycopg
import pytest

from helpers import wait_for

MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


@pytest.fixture
def migrate_req():
    want = os.environ.get("PGMUX_TEST_MIGRATE_REQ", "1")
    old = MIGRATE_REQ.read_text().strip()
    MIGRATE_REQ.write_text(want)
    yield want
    MIGRATE_REQ.write_text(old)


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.probes = 0
        self.failed_connections = []
        self.transactions = 0
        self.committed = 0
        self.failed_transactions = []
        self.drain_closes = 0

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                if isinstance(v, int):
                    setattr(self, k, getattr(self, k) + v)
                else:
                    getattr(self, k).append(v)


def drain_close(conn, e):
    """Whether e is pgmux's FATAL 57P01 "pgmux is shutting down" closing an idle session. How
    libpq shows it depends on when it reads it: as the error of the next query (SQLSTATE
    57P01); as text only, when it read it while idle and then found the socket closed
    ("consuming input failed: pgmux is shutting down"); or, when it came in the same read as
    the previous ReadyForQuery, as a notice (libpq hands an error received outside a query to
    the notice processor), followed by "server closed the connection unexpectedly"."""
    return (getattr(e, "sqlstate", None) == "57P01" or "pgmux is shutting down" in str(e)
            or getattr(conn, "_drain_notice", False))


def watch_drain_notice(conn):
    def on_notice(diag):
        if diag.sqlstate == "57P01":
            conn._drain_notice = True

    conn.add_notice_handler(on_notice)
    return conn


class Load:
    """n_short threads: connect, 1-3 short transactions, disconnect, again. n_long threads:
    one session each, transactions in a loop (with a short sleep inside), reconnecting only
    after a drain close."""

    def __init__(self, port, n_short=4, n_long=3, n_probe=2):
        self.port = port
        self.dsn = (f"host=127.0.0.1 port={port} user=app password=app-secret dbname=appdb "
                    "connect_timeout=10")
        self.c = Counts()
        self.stop_ev = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i, i < n_long), daemon=True)
            for i in range(n_short + n_long)
        ] + [threading.Thread(target=self._probe, daemon=True) for _ in range(n_probe)]
        for t in self.threads:
            t.start()

    def _connect(self):
        self.c.add(connections=1)
        try:
            return watch_drain_notice(psycopg.connect(self.dsn, autocommit=True))
        except Exception as e:
            self.c.add(failed_connections=repr(e))
            return None

    def _txn(self, conn, tid, seq, long_lived):
        """One transaction. Returns True to go on with this connection."""
        self.c.add(transactions=1)
        try:
            conn.execute("BEGIN")
        except Exception as e:
            if drain_close(conn, e):
                self.c.add(drain_closes=1, transactions=-1)
            else:
                self.c.add(failed_transactions=f"BEGIN: {e!r}")
            return False
        try:
            conn.execute("INSERT INTO restart_load VALUES (%s, %s, 1)", (tid, seq))
            if long_lived:
                conn.execute("SELECT pg_sleep(0.02)")
            conn.execute("INSERT INTO restart_load VALUES (%s, %s, 2)", (tid, seq))
            conn.execute("COMMIT")
        except Exception as e:
            self.c.add(failed_transactions=f"in transaction: {e!r}")
            return False
        self.c.add(committed=1)
        return True

    def _run(self, tid, long_lived):
        seq = 0
        while not self.stop_ev.is_set():
            conn = self._connect()
            if conn is None:
                time.sleep(0.01)
                continue
            try:
                n = 0
                while not self.stop_ev.is_set() and (long_lived or n < 1 + seq % 3):
                    seq += 1
                    n += 1
                    if not self._txn(conn, tid, seq, long_lived):
                        break
            finally:
                conn.close()

    def _probe(self):
        """Connections as fast as the listener takes them (an SSLRequest answered 'N', no
        login), so that some are always in the accept queue when A closes its listener."""
        while not self.stop_ev.is_set():
            self.c.add(connections=1, probes=1)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                    s.sendall(struct.pack("!ii", 8, 80877103))
                    reply = s.recv(1)
                if reply != b"N":
                    raise OSError(f"SSLRequest answered {reply!r}")
            except OSError as e:
                self.c.add(failed_connections=f"probe: {e!r}")

    def committed(self):
        with self.c.lock:
            return self.c.committed

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
        return self.c


def test_restart_on_the_same_port_under_load(cluster, pgmux, migrate_req):
    with cluster.su(dbname="appdb") as su:
        su.execute("DROP TABLE IF EXISTS restart_load")
        su.execute("CREATE TABLE restart_load (tid int, seq int, part int)")
        su.execute("GRANT ALL ON restart_load TO app")
    settings = dict(pool_mode="transaction", max_open_conns=10, shutdown_timeout="10s",
                    workers=2)
    a = pgmux(**settings)
    load = Load(a.port)
    wait_for(lambda: load.committed() > 50, timeout=30, what="the load to run on A")

    b = pgmux(listen_port=a.port, **settings)
    wait_for(lambda: "listening on" in b.log_text(), timeout=15, what="B to listen")
    # A steers new connections to its active worker's listener; B, which found A's listeners
    # on the port, must not (its positions in the group are not its workers'), and takes A's
    # program off, so the kernel's hash shares new connections between A and B.
    assert "another process listens on the same port" in b.log_text()
    assert "another process listens" not in a.log_text()
    at_b = load.committed()
    wait_for(lambda: load.committed() > at_b + 50, timeout=30, what="the load on A and B")
    wait_for(lambda: "event=connect" in b.log_text(), timeout=30,
             what="B to get connections while A still listens")

    a.proc.send_signal(signal.SIGTERM)
    rc = a.proc.wait(timeout=20)
    a.exited_on_purpose = True
    assert rc == 0, a.log_text()[-3000:]
    after_a = load.committed()
    wait_for(lambda: load.committed() > after_a + 100, timeout=30, what="the load on B alone")

    c = load.stop()
    print(f"\nrestart (tcp_migrate_req={migrate_req}): {c.connections} connections "
          f"({c.probes} of them SSLRequest probes), "
          f"{len(c.failed_connections)} failed; {c.transactions} transactions, "
          f"{c.committed} committed, {len(c.failed_transactions)} failed; "
          f"{c.drain_closes} sessions closed by A between transactions (57P01) and reconnected")
    assert c.failed_connections == [], c.failed_connections[:5]
    assert c.failed_transactions == [], c.failed_transactions
    assert c.transactions == c.committed
    # Each committed transaction left its two rows; nothing else was left.
    with cluster.su(dbname="appdb") as su:
        row = su.execute("SELECT count(*) AS n, count(DISTINCT (tid, seq)) AS t"
                         " FROM restart_load").fetchone()
    assert row["n"] == 2 * c.committed and row["t"] == c.committed, (row, c.committed)
    # B served everyone after A left, and is still healthy.
    assert b.alive()
    with b.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
