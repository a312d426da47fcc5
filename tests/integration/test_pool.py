"""Session pooling and its limits, observed from PostgreSQL's pg_stat_activity:
max_open_conns, the FIFO wait queue and query_wait_timeout, min_idle_conns/warm_pools,
max_idle_conns, conn_max_idle_time, conn_max_lifetime, max_client_conn, reset on release,
and a server connection dying under a client."""

import select
import signal
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import PASSWORDS, _render_ini
from helpers import Background, stays, wait_for

APP = dict(user="app", dbname="appdb")


def app_conns(cluster, **kw):
    return cluster.count(**APP, **kw)


def test_max_open_conns_is_never_exceeded(cluster, pgmux):
    """8 concurrent clients, cap 3: never more than 3 server connections, all clients served."""
    px = pgmux(max_open_conns=3, query_wait_timeout="30s", workers=4)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], app_conns(cluster))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def client(i):
        with px.connect(application_name=f"cap-{i}") as conn:
            return conn.execute("SELECT pg_sleep(0.4), %s::int", [i]).fetchone()[1]

    try:
        tasks = [Background(client, i) for i in range(8)]
        assert sorted(t.result(timeout=30) for t in tasks) == list(range(8))
    finally:
        stop.set()
        sampler.join()
    assert peak[0] == 3, f"peak server connections {peak[0]}, cap 3"
    assert app_conns(cluster) <= 3


def test_waiting_clients_are_served_in_arrival_order(cluster, pgmux):
    """max_open_conns=1: clients that queue behind a session get the connection in the order
    they arrived."""
    px = pgmux(max_open_conns=1, query_wait_timeout="30s")
    holder = px.connect()
    holder.execute("SELECT 1")
    order = []
    lock = threading.Lock()

    def client(name):
        with px.connect(application_name=name) as conn:
            conn.execute("SELECT 1")
            with lock:
                order.append(name)

    tasks = []
    for name in ("first", "second", "third", "fourth"):
        tasks.append(Background(client, name))
        time.sleep(0.3)  # let it reach pgmux's queue before the next one arrives
    assert order == []  # all waiting behind the holder
    holder.close()
    for t in tasks:
        t.result(timeout=30)
    assert order == ["first", "second", "third", "fourth"]
    assert app_conns(cluster) == 1


def test_query_wait_timeout_gives_53300(cluster, pgmux):
    """A client that cannot get a server connection within query_wait_timeout gets 53300."""
    px = pgmux(max_open_conns=1, query_wait_timeout="1s")
    holder = px.connect()
    holder.execute("SELECT 1")
    t0 = time.monotonic()
    with pytest.raises(pgwire.PgError) as e:
        c = pgwire.connect(px.port, "app", "appdb", "app-secret", timeout=15)
        try:
            c.query("SELECT 1")  # pgmux may queue at login or at the first query
        finally:
            c.close()
    elapsed = time.monotonic() - t0
    assert e.value.sqlstate == "53300", e.value.fields
    assert 0.8 <= elapsed < 5, f"answered after {elapsed:.2f}s with query_wait_timeout 1s"
    assert app_conns(cluster) == 1
    # The holder is unaffected, and once it leaves the next client is served.
    assert holder.execute("SELECT 2").fetchone() == (2,)
    holder.close()
    with px.connect() as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_min_idle_conns_warm_pool_at_start_and_refilled(cluster, pgmux):
    """warm_pools + min_idle_conns: idle server connections exist before any client, and a
    retired one is replaced."""
    pgmux(min_idle_conns=2, warm_pools="app@appdb", max_open_conns=5)
    wait_for(lambda: app_conns(cluster, state="idle") == 2, timeout=10, what="2 warm connections")
    stays(lambda: app_conns(cluster) == 2, duration=0.5, what="exactly 2 warm connections")
    victim = cluster.server_conns(**APP)[0]
    assert cluster.terminate(victim["pid"], replica=victim["node"] == "replica")

    def refilled():
        rows = cluster.server_conns(**APP, state="idle")
        return len(rows) == 2 and victim["pid"] not in [r["pid"] for r in rows]

    wait_for(refilled, timeout=10, what="the warm pool refilled to 2")


def test_warm_connections_serve_clients(cluster, pgmux):
    """A client is served by one of the warm connections instead of opening a new one."""
    pgmux_ = pgmux(min_idle_conns=2, warm_pools="app@appdb", max_open_conns=5)
    wait_for(lambda: app_conns(cluster, state="idle") == 2, timeout=10, what="2 warm connections")
    warm = {r["pid"] for r in cluster.server_conns(**APP)}
    with pgmux_.connect() as conn:
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] in warm


def test_max_idle_conns_caps_idle_connections(cluster, pgmux):
    """5 concurrent sessions open 5 server connections; when they end only max_idle_conns=2
    stay in the pool."""
    px = pgmux(max_open_conns=5, max_idle_conns=2, conn_max_idle_time="10m")
    release = threading.Event()

    def client():
        with px.connect() as conn:
            conn.execute("SELECT 1")
            assert release.wait(timeout=15)  # hold the session until all five are seen

    tasks = [Background(client) for _ in range(5)]
    try:
        wait_for(lambda: app_conns(cluster) == 5, timeout=10, what="5 server connections")
    finally:
        release.set()
    for t in tasks:
        t.result()
    wait_for(lambda: app_conns(cluster) == 2, timeout=5, what="idle connections trimmed to 2")
    stays(lambda: app_conns(cluster) == 2, duration=1.0, what="2 idle connections kept")


def test_conn_max_idle_time_retires_idle_connections(cluster, pgmux):
    """A released connection stays pooled, then is closed after conn_max_idle_time idle."""
    # Long enough that a sanitizer build on a busy machine logs the second client in before
    # the connection has been idle that long; the reuse below depends on it.
    px = pgmux(conn_max_idle_time="3s", conn_max_lifetime="1h")
    with px.connect() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    # Pooled, not closed on release, and reused by the next client while still fresh.
    with px.connect() as conn:
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        # taken before the release, so pgmux's idle clock starts no earlier than this
        t0 = time.monotonic()
    wait_for(lambda: app_conns(cluster) == 0, timeout=10, what="the idle connection retired")
    assert time.monotonic() - t0 >= 2.5, "closed before conn_max_idle_time"


def test_conn_max_lifetime_retires_old_connections(cluster, pgmux):
    """A connection older than conn_max_lifetime is not handed out again."""
    px = pgmux(conn_max_lifetime="2s", conn_max_idle_time="10m")
    with px.connect() as conn:
        first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    with px.connect() as conn:  # young: reused
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == first
    time.sleep(2.5)
    with px.connect() as conn:
        second = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert second != first
    wait_for(lambda: first not in [r["pid"] for r in cluster.server_conns()], timeout=5,
             what="the expired connection closed")


def test_max_client_conn_refuses_at_once(cluster, pgmux):
    """Beyond max_client_conn a client gets 53300 immediately; a slot freed is usable again."""
    px = pgmux(max_client_conn=3)
    held = [pgwire.connect(px.port, "app", "appdb", "app-secret") for _ in range(3)]
    try:
        t0 = time.monotonic()
        err = pgwire.login_error(px.port, "app", "appdb", "app-secret")
        assert err.sqlstate == "53300", err.fields
        # at once, not after query_wait_timeout (30 s here) in a queue
        assert time.monotonic() - t0 < 5.0
        # libpq sees it too.
        with pytest.raises(psycopg.OperationalError):
            px.connect().close()
        held.pop().terminate()
        c = wait_for(lambda: _try_connect(px), timeout=5, what="a freed client slot")
        assert c.query("SELECT 1") == [["1"]]
        c.terminate()
    finally:
        for c in held:
            c.terminate()


def _try_connect(px):
    try:
        return pgwire.connect(px.port, "app", "appdb", "app-secret")
    except pgwire.PgError:
        return None


def test_session_reset_on_release(cluster, pgmux):
    """A session's state (SET, temp tables, prepared statements) is gone for the next client
    that gets the same server connection (server_reset_query DISCARD ALL)."""
    px = pgmux(max_open_conns=1)
    with px.connect() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        default_work_mem = conn.execute("SHOW work_mem").fetchone()[0]
        conn.execute("SET work_mem = '7MB'")
        conn.execute("CREATE TEMP TABLE leftover (x int)")
        conn.execute("PREPARE leftover_stmt AS SELECT 1")
        assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)
    with px.connect() as conn:
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid  # same connection
        assert conn.execute("SHOW work_mem").fetchone() == (default_work_mem,)
        assert conn.execute("SELECT to_regclass('pg_temp.leftover')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)


def test_connection_in_transaction_is_not_pooled(cluster, pgmux):
    """A client that leaves inside an open transaction: its server connection is reset or
    closed, never handed to the next client mid-transaction."""
    px = pgmux(max_open_conns=1)
    conn = px.connect(autocommit=False)
    conn.execute("CREATE TEMP TABLE t_in_tx (x int)")
    conn.execute("INSERT INTO t_in_tx VALUES (1)")  # transaction left open
    conn.close()
    with px.connect() as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT now() = statement_timestamp()").fetchone() == (True,)
        assert conn.execute("SELECT to_regclass('pg_temp.t_in_tx')").fetchone() == (None,)


def test_server_backend_killed_mid_query(cluster, pgmux):
    """pg_terminate_backend on the server connection under a running query: that client gets
    an error; the dead connection is not pooled; the next client works (with max_open_conns=1
    a leaked slot would make it wait)."""
    px = pgmux(max_open_conns=1, query_wait_timeout="5s")
    conn = px.connect()
    task = Background(conn.execute, "SELECT pg_sleep(30)")
    row = wait_for(
        lambda: [r for r in cluster.server_conns(**APP, state="active") if "pg_sleep" in r["query"]],
        timeout=10, what="the query running")[0]
    assert cluster.terminate(row["pid"], replica=row["node"] == "replica")
    err = task.error(timeout=5)
    assert isinstance(err, psycopg.Error), err
    conn.close()
    with px.connect() as conn2:
        assert conn2.execute("SELECT 'next client'").fetchone() == ("next client",)
        assert conn2.execute("SELECT pg_backend_pid()").fetchone()[0] != row["pid"]


def _in_transaction(px, user, dbname="appdb"):
    """A client of user inside a transaction, holding a server connection."""
    c = px.connect(user=user, password=PASSWORDS[user], dbname=dbname, autocommit=False)
    c.execute("SELECT 1").fetchone()
    return c


def _query_as(px, user, dbname="appdb"):
    with px.connect(user=user, password=PASSWORDS[user], dbname=dbname) as c:
        return c.execute("SELECT current_user, current_database()").fetchone()


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_max_db_connections_shared_by_the_users_of_a_database(cluster, pgmux, mode):
    """max_db_connections caps the server connections to one database over all its users'
    pools (each may open max_open_conns). A client of another user that finds the cap full
    waits; when a connection of the full pools is released it gets room: an idle connection
    of theirs is closed for it, and in session pooling a connection closed with its session
    hands the room on. Never more than the cap at once."""
    px = pgmux(pool_mode=mode, max_open_conns=5, max_db_connections=2, read_write_split="off")
    held = [_in_transaction(px, "app"), _in_transaction(px, "app")]
    waiter = Background(_query_as, px, "pwuser")
    stays(lambda: not waiter.done(), duration=1.0, what="pwuser waiting behind the cap")
    assert len(cluster.server_conns(dbname="appdb")) == 2
    held[0].commit()  # transaction pooling: back to app's pool, idle; session: still held
    if mode == "session":
        held[0].close()  # the session ends: its server connection is reset and pooled
    t0 = time.monotonic()
    assert waiter.result(timeout=10) == ("pwuser", "appdb")
    assert time.monotonic() - t0 < 5
    conns = cluster.server_conns(dbname="appdb")
    assert len(conns) <= 2, conns
    assert "closed while idle to make room under a shared cap" in px.log_text()
    held[1].commit()
    for c in held:
        c.close()
    # the cap does not bind another database (postgres) nor the users in it
    a = _in_transaction(px, "app")
    b = _in_transaction(px, "pwuser")
    assert _query_as(px, "app", dbname="postgres") == ("app", "postgres")
    a.close()
    b.close()


def test_a_refused_server_login_gives_its_room_back(cluster, pgmux):
    """A server that refuses pgmux's login (here: auth_file holds a password PostgreSQL does
    not take) fails the client with the server's error, and the room the connection took
    under a full cap comes back: after two refusals under max_db_connections = 1, another
    user of the database is served at once."""
    px = pgmux(pool_mode="transaction", max_db_connections=1, read_write_split="off",
               query_wait_timeout="5s", health_check_user="pwuser",
               userlist=[("app", "not-what-postgres-has"), ("pwuser", PASSWORDS["pwuser"])])
    for _ in range(2):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            with px.connect(password="not-what-postgres-has") as c:
                c.execute("SELECT 1")
    t0 = time.monotonic()
    assert _query_as(px, "pwuser") == ("pwuser", "appdb")
    assert time.monotonic() - t0 < 2


def test_a_database_section_sets_its_own_cap(cluster, pgmux):
    """[database.NAME] max_db_connections caps that database alone, over [pool]'s (none here);
    a reload that drops the section lifts the cap, and a client queued behind it is served."""
    px = pgmux(pool_mode="transaction", max_open_conns=5, read_write_split="off",
               sections={"database.appdb": {"max_db_connections": 1}})
    held = _in_transaction(px, "app")
    waiter = Background(_query_as, px, "pwuser")
    stays(lambda: not waiter.done(), duration=1.0, what="pwuser waiting behind appdb's cap")
    # postgres has no cap of its own: two transactions there at once
    a, b = _in_transaction(px, "app", "postgres"), _in_transaction(px, "pwuser", "postgres")
    a.close()
    b.close()
    del px.config["database.appdb"]
    (px.dir / "proxy.ini").write_text(_render_ini(px.config))
    px.proc.send_signal(signal.SIGHUP)
    assert waiter.result(timeout=10) == ("pwuser", "appdb")
    assert "[database.NAME]/[user.NAME] sections" in px.log_text()
    held.close()


def test_max_user_connections_shared_by_the_databases_of_a_user(cluster, pgmux):
    """max_user_connections caps one user's server connections over all its databases."""
    px = pgmux(pool_mode="transaction", max_open_conns=5, max_user_connections=1,
               read_write_split="off")
    held = _in_transaction(px, "app")
    waiter = Background(_query_as, px, "app", "postgres")
    stays(lambda: not waiter.done(), duration=1.0, what="app in postgres waiting")
    assert _query_as(px, "pwuser") == ("pwuser", "appdb")  # another user is not capped
    held.commit()
    assert waiter.result(timeout=10) == ("app", "postgres")
    assert len(cluster.server_conns(user="app")) <= 1
    held.close()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_idle_transaction_timeout(cluster, pgmux, mode):
    """idle_transaction_timeout closes a client that leaves a transaction open, every answer
    given, for that long: FATAL 25P03 as PostgreSQL's own idle-in-transaction timeout, its
    server connection closed, so its write is rolled back and its locks go, and (transaction
    pooling) the one server connection serves the client that waited for it. A transaction
    whose statement runs longer than the timeout, or whose client keeps sending, stays."""
    with cluster.su(dbname="appdb") as su:
        su.execute("DROP TABLE IF EXISTS idle_txn")
        su.execute("CREATE TABLE idle_txn (v int)")
        su.execute("GRANT ALL ON idle_txn TO app")
    px = pgmux(pool_mode=mode, idle_transaction_timeout="1s",
               max_open_conns=1 if mode == "transaction" else 4)

    # a long statement and a busy client inside their transactions are not idle
    with px.connect(autocommit=False) as busy:
        busy.execute("SELECT pg_sleep(1.6)")
        for _ in range(5):
            time.sleep(0.4)
            busy.execute("SELECT 1")
        busy.commit()

    idle = pgwire.connect(px.port, "app", "appdb", "app-secret")
    idle.query("BEGIN")
    idle.query("INSERT INTO idle_txn VALUES (1)")
    idle.query("SELECT v FROM idle_txn FOR UPDATE")  # a row lock it holds
    t0 = time.monotonic()
    if mode == "transaction":
        # the only server connection is the idle one's: the next client waits for it
        def count():
            with px.connect() as c:
                return c.execute("SELECT count(*) FROM idle_txn").fetchone()[0]
        waiter = Background(count)
    mtype, payload = idle.recv_msg()  # unasked: nothing was sent since
    assert time.monotonic() - t0 >= 0.9
    err = pgwire.PgError(pgwire.parse_error_fields(payload))
    assert (mtype, err.sqlstate, err.fields.get("S")) == (b"E", "25P03", "FATAL"), err
    assert "idle-in-transaction timeout" in err.message
    idle.read_until_eof()
    idle.close()
    if mode == "transaction":
        assert waiter.result(timeout=10) == 0
    # rolled back, nothing left locked, and pgmux serves on
    with px.connect() as c:
        assert c.execute("SELECT count(*) FROM idle_txn").fetchone()[0] == 0
        # the backend that held the row lock exits on its own once pgmux hung up: a little
        # patience, not an unbounded wait
        c.execute("BEGIN; SET LOCAL lock_timeout = '5s'; "
                  "LOCK TABLE idle_txn IN ACCESS EXCLUSIVE MODE; COMMIT")
    assert "event=disconnect" in px.log_text() and "idle-in-transaction" in px.log_text()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_client_idle_timeout_counts_from_the_last_message(cluster, pgmux, mode):
    """client_idle_timeout closes a client that sent nothing for that long, also one whose last
    message reached a server it holds (a session, or a transaction left open)."""
    px = pgmux(pool_mode=mode, client_idle_timeout="1s")
    with px.connect(autocommit=False) as c:
        c.execute("SELECT 1").fetchone()  # BEGIN, then the SELECT inside the transaction
        t0 = time.monotonic()
        # pgmux's FATAL makes the socket readable; nothing is sent that would reset the clock
        wait_for(lambda: select.select([c.fileno()], [], [], 0.05)[0], timeout=10,
                 what="pgmux closing the idle client")
        assert time.monotonic() - t0 >= 0.9
        with pytest.raises(psycopg.OperationalError, match="idle-session timeout"):
            c.execute("SELECT 1")
