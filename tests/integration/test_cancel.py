"""CancelRequest: pgmux hands clients its own BackendKeyData and routes a cancel to the server
connection serving that client, on whichever worker it lives."""

import time

import psycopg
import psycopg2
import psycopg2.extensions

import pgwire
from helpers import Background, wait_for


# How soon a cancelled pg_sleep(30) must end: far below the 30 s it would run uncancelled, with
# room for a sanitizer build on a loaded machine (a second was too tight there).
CANCEL_S = 5.0


def sleeping(cluster, n=1):
    """pgmux's server connections running pg_sleep, once there are at least n of them."""

    def probe():
        rows = [r for r in cluster.server_conns(state="active") if "pg_sleep" in r["query"]]
        return rows if len(rows) >= n else None

    return wait_for(probe, timeout=10, what=f"{n} server connection(s) in pg_sleep")


def test_cancel_psycopg3(cluster, pgmux):
    px = pgmux(workers=4)
    with px.connect() as conn:
        task = Background(conn.execute, "SELECT pg_sleep(30)")
        sleeping(cluster)
        t0 = time.monotonic()
        conn.cancel()
        err = task.error(timeout=10)
        elapsed = task.finished_at - t0
        assert isinstance(err, psycopg.errors.QueryCanceled), err
        assert elapsed < CANCEL_S, f"cancel took {elapsed:.2f}s"
        # The session goes on.
        assert conn.execute("SELECT 'after cancel'").fetchone() == ("after cancel",)


def test_cancel_psycopg2(cluster, pgmux):
    px = pgmux(workers=4)
    conn = psycopg2.connect(px.dsn())
    try:
        conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        task = Background(conn.cursor().execute, "SELECT pg_sleep(30)")
        sleeping(cluster)
        t0 = time.monotonic()
        conn.cancel()
        err = task.error(timeout=10)
        assert isinstance(err, psycopg2.errors.QueryCanceled), err
        assert task.finished_at - t0 < CANCEL_S
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_cancel_reaches_only_its_own_client(cluster, pgmux):
    """With several clients spread over 4 workers, each cancel stops exactly its own query."""
    px = pgmux(workers=4)
    conns = [px.connect() for _ in range(6)]
    try:
        tasks = [Background(c.execute, "SELECT pg_sleep(30)") for c in conns]
        sleeping(cluster, n=len(conns))
        for i, (c, t) in enumerate(zip(conns, tasks)):
            t0 = time.monotonic()
            c.cancel()
            assert isinstance(t.error(timeout=10), psycopg.errors.QueryCanceled)
            assert t.finished_at - t0 < CANCEL_S
            # Everyone after i is still running.
            assert all(not other.done() for other in tasks[i + 1 :]), f"cancel {i} hit others"
    finally:
        for c in conns:
            c.close()


def test_backend_key_is_pgmux_own(cluster, pgmux):
    """The BackendKeyData a client gets is pgmux's, not the server backend's: a cancel must go
    through pgmux, which knows the current server connection."""
    px = pgmux()
    with px.connect() as conn:
        server_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert conn.info.backend_pid != server_pid


def test_cancel_with_wrong_key_is_ignored(cluster, pgmux):
    """A CancelRequest with a key pgmux never issued cancels nothing."""
    px = pgmux()
    c = pgwire.connect(px.port, "app", "appdb", "app-secret")
    try:
        pid, key = c.backend_key
        c.send(pgwire.query_message("SELECT pg_sleep(1.5), 'done'"))
        sleeping(cluster)
        for bad in ((pid, key ^ 0x5A5A5A5A), (pid + 1, key), (0, 0)):
            s = pgwire.RawConn(px.port)
            s.send(pgwire.cancel_request(*bad))
            assert s.read_until_eof(timeout=5) == b""  # pgmux answers nothing, closes
        rows, error = [], None
        while True:
            t, payload = c.recv_msg()
            if t == b"D":
                rows.append(t)
            elif t == b"E":
                error = pgwire.parse_error_fields(payload)
            elif t == b"Z":
                break
        assert error is None and len(rows) == 1, error
    finally:
        c.terminate()


def test_cancel_ends_only_its_own_statement(cluster, pgmux):
    """One server connection, two clients: A's pg_sleep is cancelled while B's statement waits
    for that connection. PostgreSQL signals a cancelled backend twice (its pid, then its process
    group); the second signal, if it lands after the sleep ended, would cancel B's statement,
    which runs on the same backend next. pgmux holds the connection back until the server has
    closed the cancel connection, so B's statement always completes."""
    px = pgmux(pool_mode="transaction", max_open_conns=1, workers=2)
    a = psycopg.connect(px.dsn(), autocommit=True)
    b = psycopg.connect(px.dsn(), autocommit=True)
    try:
        for i in range(15):
            sleeper = Background(a.execute, "SELECT pg_sleep(30)")
            sleeping(cluster)
            waiter = Background(lambda: b.execute("SELECT %s::int", [i]).fetchone()[0])
            time.sleep(0.05)  # B's statement is queued behind A's before the cancel
            a.cancel()
            assert isinstance(sleeper.error(timeout=CANCEL_S * 2), psycopg.errors.QueryCanceled)
            assert waiter.result(timeout=10) == i
            assert a.execute("SELECT 1").fetchone()[0] == 1
    finally:
        a.close()
        b.close()
