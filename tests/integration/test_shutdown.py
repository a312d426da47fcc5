"""Shutdown. SIGTERM: pgmux stops accepting, closes sessions that are not inside a
transaction at once (57P01), lets running transactions finish and then closes those sessions,
and exits 0; what was still open at shutdown_timeout is closed (and rolled back by the server).
SIGINT: everything closes at once."""

import signal
import socket
import time

import psycopg
import pytest

from helpers import wait_for


def table(cluster, name):
    with cluster.su(dbname="appdb") as su:
        su.execute(f"DROP TABLE IF EXISTS {name}")
        su.execute(f"CREATE TABLE {name} (v text)")
        su.execute(f"GRANT ALL ON {name} TO app")
    return name


def rows(cluster, name):
    with cluster.su(dbname="appdb") as su:
        return sorted(r["v"] for r in su.execute(f"SELECT v FROM {name}").fetchall())


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_sigterm_lets_running_transactions_commit(cluster, pgmux, mode):
    t = table(cluster, f"shutdown_{mode}")
    px = pgmux(pool_mode=mode, shutdown_timeout="20s")
    busy = px.connect(autocommit=False)
    idle = px.connect()
    assert idle.execute("SELECT 1").fetchone() == (1,)
    busy.execute(f"INSERT INTO {t} VALUES ('before')")  # transaction open

    started = time.monotonic()
    px.proc.send_signal(signal.SIGTERM)
    # Not in a transaction: closed at once with 57P01.
    with pytest.raises(psycopg.OperationalError) as e:
        wait_for(lambda: idle.execute("SELECT 1") and False, timeout=3,
                 what="the idle session to be closed")
    assert "shutting down" in str(e.value) or idle.closed or e.value.sqlstate in (None, "57P01")
    # No new connections.
    wait_for(lambda: refused(px.port), timeout=3, what="the listener to close")
    # The running transaction goes on and commits.
    busy.execute(f"INSERT INTO {t} VALUES ('during')")
    busy.commit()
    # ... then its session is closed, and pgmux exits cleanly well before shutdown_timeout.
    rc = px.proc.wait(timeout=10)
    px.exited_on_purpose = True
    assert rc == 0
    assert time.monotonic() - started < 10
    with pytest.raises(psycopg.OperationalError):
        busy.execute("SELECT 1")
    assert rows(cluster, t) == ["before", "during"]


def test_sigterm_closes_what_is_still_open_at_shutdown_timeout(cluster, pgmux):
    t = table(cluster, "shutdown_timeout")
    px = pgmux(shutdown_timeout="1s")
    stuck = px.connect(autocommit=False)
    stuck.execute(f"INSERT INTO {t} VALUES ('never committed')")
    started = time.monotonic()
    px.proc.send_signal(signal.SIGTERM)
    rc = px.proc.wait(timeout=10)
    px.exited_on_purpose = True
    took = time.monotonic() - started
    assert rc == 0
    assert 0.8 < took < 5, took
    with pytest.raises(psycopg.OperationalError):
        stuck.execute("SELECT 1")
    wait_for(lambda: cluster.count(user="app", dbname="appdb") == 0, timeout=5,
             what="the server connection to go")
    assert rows(cluster, t) == []


def test_sigint_closes_everything_at_once(cluster, pgmux):
    px = pgmux(shutdown_timeout="30s")
    busy = px.connect(autocommit=False)
    busy.execute("SELECT 1")  # inside a transaction
    started = time.monotonic()
    px.proc.send_signal(signal.SIGINT)
    rc = px.proc.wait(timeout=10)
    px.exited_on_purpose = True
    assert rc == 0
    assert time.monotonic() - started < 3
    with pytest.raises(psycopg.OperationalError):
        busy.execute("SELECT 1")
