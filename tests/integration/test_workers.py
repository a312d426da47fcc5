"""Limits that hold across worker threads: an idle server connection held by one worker is
handed to a client waiting on another (it would otherwise sit idle while the client times
out), and a CancelRequest reaches a session on whichever worker owns it."""

import time

import psycopg
import pytest

from helpers import Background, wait_for


def test_idle_connection_on_another_worker_is_not_stranded(cluster, pgmux):
    """One server connection, eight workers, sequential clients. Each client lands on whichever
    worker the kernel picks; the single connection stays idle on the worker that used it last.
    Without the hand-over a client on any other worker would wait for query_wait_timeout and
    get 53300; with it every client is served at once."""
    px = pgmux(workers=8, max_open_conns=1, query_wait_timeout="3s")
    started = time.monotonic()
    pids = set()
    for i in range(40):
        with px.connect(application_name=f"hop-{i}") as conn:
            pids.add(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
    elapsed = time.monotonic() - started
    # One connection served all 40 clients (max_open_conns = 1) ...
    assert len(pids) == 1
    assert cluster.count(user="app", dbname="appdb") <= 1
    # ... and no client waited anywhere near query_wait_timeout.
    assert elapsed < 20, f"40 sequential clients took {elapsed:.1f}s"


def test_waiters_on_every_worker_share_one_connection(cluster, pgmux):
    """Concurrent clients on several workers queue for one connection and are all served."""
    px = pgmux(workers=4, max_open_conns=1, query_wait_timeout="20s")

    def client(i):
        with px.connect(application_name=f"share-{i}") as conn:
            return conn.execute("SELECT pg_sleep(0.05), %s::int", [i]).fetchone()[1]

    jobs = [Background(client, i) for i in range(12)]
    assert sorted(j.result(timeout=30) for j in jobs) == list(range(12))
    assert cluster.count(user="app", dbname="appdb") <= 1


@pytest.mark.parametrize("workers", [1, 4])
def test_cancel_reaches_the_owning_worker(cluster, pgmux, workers):
    """With several workers the CancelRequest usually arrives on a worker that does not own the
    session; it must still cancel the right query, within a second."""
    px = pgmux(workers=workers)
    for _ in range(3):
        conn = psycopg.connect(px.dsn(), autocommit=True)
        job = Background(conn.execute, "SELECT pg_sleep(30)")
        # a cancel that arrives before the query does cancels nothing
        try:
            wait_for(lambda: [r for r in cluster.server_conns(state="active")
                              if "pg_sleep" in r["query"]], timeout=10, what="pg_sleep running")
        except AssertionError as e:
            # This wait once timed out on a loaded CI machine and could not be reproduced;
            # say what the server and the client were doing.
            raise AssertionError(
                f"{e}\nserver connections: {cluster.server_conns()}\n"
                f"client finished: {job.done()}, error: {job._error!r}\n"
                f"pgmux log (end): {px.log_text()[-3000:]}") from None
        t0 = time.monotonic()
        conn.cancel()
        err = job.error(timeout=10)
        assert isinstance(err, psycopg.errors.QueryCanceled), err
        # far below the 30 s the query would run uncancelled; a second is too tight for a
        # sanitizer build on a loaded machine
        assert time.monotonic() - t0 < 5.0
        assert conn.execute("SELECT 1").fetchone()[0] == 1
        conn.close()
