"""Transaction and statement pooling semantics (issue 3): when a server connection goes back to
the pool (ReadyForQuery 'I') and when it stays with the client ('T', 'E'); statement mode
refusing transaction blocks; pool_mode per database and per user; session parameters that
follow a client across server connections; session state (PREPARE, LISTEN, WITH HOLD
cursors, advisory locks, temporary tables) pinning the client, or refused when
pin_session_state is off."""

import threading
import time

import psycopg
import pytest

import pgwire
from helpers import Background, wait_for

PASSWORDS = {"app": "app-secret", "pwuser": "pw-secret"}


@pytest.fixture
def txn(pgmux):
    def start(**kw):
        kw.setdefault("pool_mode", "transaction")
        return pgmux(**kw)

    return start


def pid_of(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def connect(px, user="app", dbname="appdb", **kw):
    return px.connect(user=user, password=PASSWORDS[user], dbname=dbname, **kw)


def refusal(px, sql, user="app", dbname="appdb"):
    """Run sql on a fresh raw client; return the fields of the ErrorResponse it gets (before
    its ReadyForQuery, or before pgmux closes it). AssertionError if sql succeeds."""
    c = pgwire.connect(px.port, user, dbname, PASSWORDS[user])
    c.send(pgwire.query_message(sql))
    err = None
    try:
        while True:
            t, p = c.recv_msg()
            if t == b"E" and err is None:
                err = pgwire.parse_error_fields(p)
            elif t == b"Z":
                break
    except pgwire.ConnectionClosed:
        pass
    finally:
        c.close()
    assert err is not None, f"{sql!r} was not refused"
    return err


def assert_clean(conn):
    """conn's server connection is not inside a transaction."""
    row = conn.execute(
        "SELECT txid_current_if_assigned() IS NULL, now() = statement_timestamp()"
    ).fetchone()
    assert row == (True, True), f"connection is inside a transaction: {row}"


def alternate(px, rounds=3, **who):
    """Two clients, both connected all along, take turns on a pool of 1; returns the backend
    pids they saw. Only works when the server connection is released after each statement
    or transaction."""
    a, b = connect(px, **who), connect(px, **who)
    try:
        pids = set()
        for i in range(rounds):
            assert a.execute("SELECT %s::int", [i]).fetchone() == (i,)
            pids.add(pid_of(a))
            assert b.execute("SELECT %s::int", [i]).fetchone() == (i,)
            pids.add(pid_of(b))
        return pids
    finally:
        a.close()
        b.close()


def waits_behind_idle_client(px, **who):
    """Session behaviour on a pool of 1: while client a is connected (idle, outside any
    transaction), client b cannot run; once a leaves, b does."""
    a = connect(px, **who)
    a.execute("SELECT 1")

    def b_runs():
        with connect(px, **who) as b:
            return b.execute("SELECT 'b ran'").fetchone()[0]

    waiting = Background(b_runs)
    time.sleep(1.0)
    assert not waiting.done(), "b ran while a held the only server connection in session mode"
    a.close()
    assert waiting.result(timeout=20) == "b ran"


def held_while_in_transaction(px, **who):
    """On a pool of 1: a client inside BEGIN keeps the server connection (b waits) until
    COMMIT."""
    a, b = connect(px, **who), connect(px, **who)
    try:
        a.execute("BEGIN")
        a.execute("SELECT 1")
        waiting = Background(lambda: b.execute("SELECT 'b ran'").fetchone()[0])
        time.sleep(1.0)
        assert not waiting.done(), "b ran while a was inside a transaction"
        a.execute("COMMIT")
        assert waiting.result(timeout=10) == "b ran"
    finally:
        a.close()
        b.close()


def assert_refuses_transactions(px, **who):
    """Statement mode: BEGIN gets a clear error (0A000, naming transactions), single
    statements keep working, and the pool is left clean."""
    err = refusal(px, "BEGIN", **who)
    assert err.get("C", "").startswith("0A"), err
    assert "transaction" in err.get("M", "").lower(), err
    with connect(px, **who) as c:
        assert_clean(c)


# ---- release at ReadyForQuery ----------------------------------------------------------------


def test_server_connection_released_at_idle_and_held_in_transaction(cluster, txn):
    """Pool of 1, two clients connected throughout: they take turns statement by statement;
    while one is inside a transaction ('T') or a failed one ('E') the other waits, and runs
    as soon as the transaction ends."""
    px = txn(max_open_conns=1, query_wait_timeout="10s")
    a, b = px.connect(), px.connect()
    try:
        pids = set()
        for i in range(5):
            pids.add(pid_of(a))
            pids.add(pid_of(b))
        assert len(pids) == 1

        for end in ("COMMIT", "ROLLBACK"):
            a.execute("BEGIN")
            a.execute("SELECT 1")
            if end == "ROLLBACK":  # a failed transaction: status E
                with pytest.raises(psycopg.errors.DivisionByZero):
                    a.execute("SELECT 1/0")
            waiting = Background(lambda: b.execute("SELECT 'b ran'").fetchone()[0])
            time.sleep(1.0)
            assert not waiting.done(), f"b ran while a was in a transaction (before {end})"
            a.execute(end)
            assert waiting.result(timeout=10) == "b ran"
            assert_clean(b)

        # A driver's implicit transaction (psycopg without autocommit) behaves the same.
        c = px.connect(autocommit=False)
        c.execute("SELECT 1")
        waiting = Background(lambda: b.execute("SELECT 'b ran'").fetchone()[0])
        time.sleep(1.0)
        assert not waiting.done(), "b ran while c's implicit transaction was open"
        c.commit()
        assert waiting.result(timeout=10) == "b ran"
        c.close()
        assert cluster.count(user="app", dbname="appdb") == 1
    finally:
        a.close()
        b.close()


# ---- statement mode --------------------------------------------------------------------------


def test_statement_mode_refuses_transaction_blocks(cluster, pgmux):
    """pool_mode = statement: single statements (simple and extended) from two clients share
    one server connection; BEGIN and a driver's implicit transaction are refused with a clear
    error, leaving nothing open on the server."""
    px = pgmux(pool_mode="statement", max_open_conns=1, query_wait_timeout="5s")
    assert len(alternate(px)) == 1
    with px.connect() as c:
        c.execute("SELECT 1")  # simple-ish (no parameters)
        assert c.execute("SELECT %s::int + 1", [1]).fetchone() == (2,)

    assert_refuses_transactions(px)

    c = px.connect(autocommit=False)
    with pytest.raises(psycopg.Error) as e:
        c.execute("SELECT 1")
        c.commit()
    assert "transaction" in str(e.value).lower(), e.value
    c.close()

    with px.connect() as c:
        assert_clean(c)
        assert c.execute("SELECT 'still serving'").fetchone() == ("still serving",)
    wait_for(lambda: not [r for r in cluster.server_conns(user="app")
                          if r["state"].startswith("idle in transaction")],
             what="no server connection idle in transaction")


# ---- per database / per user -----------------------------------------------------------------


def test_pool_mode_per_database(pgmux):
    """[pool] transaction with [database.appdb] session: appdb clients keep their server
    connection for the session, clients of another database share theirs."""
    px = pgmux(pool_mode="transaction", max_open_conns=1, query_wait_timeout="5s",
               sections={"database.appdb": {"pool_mode": "session"}})
    waits_behind_idle_client(px, dbname="appdb")
    assert len(alternate(px, dbname="postgres")) == 1
    held_while_in_transaction(px, dbname="postgres")


def test_pool_mode_per_user_wins_over_per_database(pgmux):
    """[pool] session, [user.pwuser] transaction, [database.postgres] statement: pwuser gets
    transaction pooling everywhere (the user's setting wins), app gets statement pooling in
    postgres and session pooling in appdb."""
    px = pgmux(pool_mode="session", max_open_conns=1, query_wait_timeout="5s",
               sections={"database.postgres": {"pool_mode": "statement"},
                         "user.pwuser": {"pool_mode": "transaction"}})
    waits_behind_idle_client(px, user="app", dbname="appdb")
    for db in ("appdb", "postgres"):
        assert len(alternate(px, user="pwuser", dbname=db)) == 1
        held_while_in_transaction(px, user="pwuser", dbname=db)
    assert len(alternate(px, user="app", dbname="postgres")) == 1
    assert_refuses_transactions(px, user="app", dbname="postgres")


# ---- session parameters ----------------------------------------------------------------------

A_VALUES = {"application_name": "client-a", "search_path": "txn_a_schema, public",
            "TimeZone": "Asia/Kathmandu"}


def show_all(conn):
    return {k: conn.execute(f"SHOW {k}").fetchone()[0] for k in A_VALUES}


def test_session_parameters_follow_the_client(txn):
    """SET application_name / search_path / TimeZone outside a transaction block: later
    transactions of that client that land on other server connections still see its values
    (and compute with them); other clients, including the ones that get the server
    connections the SETs ran on, never see them."""
    px = txn(max_open_conns=2)
    a = px.connect(application_name="client-a-start")
    a.execute("SET application_name = 'client-a'")
    a.execute("SET search_path = txn_a_schema, public")
    a.execute("SET TimeZone = 'Asia/Kathmandu'")
    stamp = "SELECT '2020-01-01 00:00:00+00'::timestamptz::text"
    a_pids = set()
    for _ in range(3):
        pid = pid_of(a)
        a_pids.add(pid)
        holder = hold_backend(px, pid, 2)  # the connection a last ran on
        try:
            hv = show_all(holder)
            assert hv["application_name"] == "holder", hv
            assert hv["TimeZone"] != "Asia/Kathmandu" and "txn_a" not in hv["search_path"], hv
            assert a.execute(stamp).fetchone()[0] == "2020-01-01 05:45:00+05:45"
            assert show_all(a) == A_VALUES
            other = pid_of(a)
            assert other != pid
            a_pids.add(other)
        finally:
            holder.rollback()
            holder.close()
    assert len(a_pids) == 2
    # Any other client, on either server connection, sees its own values.
    b1 = px.connect(autocommit=False, application_name="b1")
    b2 = px.connect(autocommit=False, application_name="b2")
    try:
        for b, name in ((b1, "b1"), (b2, "b2")):
            v = show_all(b)
            assert v["application_name"] == name, v
            assert v["TimeZone"] != "Asia/Kathmandu" and "txn_a" not in v["search_path"], v
        assert {pid_of(b1), pid_of(b2)} == a_pids
    finally:
        b1.close()
        b2.close()
    assert show_all(a) == A_VALUES
    a.execute("RESET TimeZone")
    assert a.execute("SHOW TimeZone").fetchone()[0] != "Asia/Kathmandu"
    a.close()


def hold_backend(px, pid, max_open):
    """psycopg clients, each in a transaction, until one holds backend `pid`; the others are
    released and that one (application_name 'holder') returned, still in its transaction."""
    held = []
    try:
        for _ in range(max_open):
            h = px.connect(autocommit=False, application_name="holder")
            held.append(h)
            if pid_of(h) == pid:
                for other in held[:-1]:
                    other.rollback()
                    other.close()
                return h
        raise AssertionError(f"no holder landed on backend {pid} (pool of {max_open})")
    except BaseException:
        for h in held:
            h.close()
        raise


# ---- pinning ---------------------------------------------------------------------------------

# kind: (statement that creates session state, a word naming it (its refusal may say it),
#        query that shows the state is gone on a connection (must return True))
PIN_KINDS = {
    "prepare": ("PREPARE pin_p(int) AS SELECT $1 + 1", "prepare",
                "SELECT NOT EXISTS (SELECT FROM pg_prepared_statements WHERE name = 'pin_p')"),
    "listen": ("LISTEN pin_chan", "listen",
               "SELECT NOT EXISTS (SELECT FROM pg_listening_channels())"),
    "with_hold": ("DECLARE pin_cur CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 100) g",
                  "hold", "SELECT NOT EXISTS (SELECT FROM pg_cursors)"),
    "advisory_lock": ("SELECT pg_advisory_lock(4242)", "advisory",
                      "SELECT NOT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory'"
                      " AND objid = 4242)"),
    "temp_table": ("CREATE TEMP TABLE pin_tmp (x int)", "temp",
                   "SELECT to_regclass('pin_tmp') IS NULL"),
}


def use_state(kind, a, cluster, step, in_txn, notified):
    """Use the session state `kind` created on a (step 0, 1, 2, ...); fails if it is not
    there. notified: the list a's notify handler appends payloads to."""
    if kind == "prepare":
        assert a.execute("EXECUTE pin_p(%d)" % step).fetchone() == (step + 1,)
    elif kind == "listen":
        assert a.execute("SELECT array_agg(c) FROM pg_listening_channels() c").fetchone() \
            == (["pin_chan"],)
        if not in_txn:  # notifications reach a listener only between transactions
            with cluster.su(dbname="appdb") as su:
                su.execute("SELECT pg_notify('pin_chan', %s)", [str(step)])
            wait_for(lambda: (a.execute("SELECT 1"), str(step) in notified)[1],
                     what=f"notification {step}")
    elif kind == "with_hold":
        assert [r[0] for r in a.execute("FETCH 2 FROM pin_cur")] == [2 * step + 1, 2 * step + 2]
    elif kind == "advisory_lock":
        n = a.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                      " AND objid = 4242 AND pid = pg_backend_pid() AND granted").fetchone()[0]
        assert n == 1
    elif kind == "temp_table":
        a.execute("INSERT INTO pin_tmp VALUES (%d)" % step)
        assert a.execute("SELECT count(*) FROM pin_tmp").fetchone() == (step + 1,)


@pytest.mark.parametrize("kind", list(PIN_KINDS))
def test_session_state_pins_the_client(cluster, txn, kind):
    """pin_session_state = on (the default): after the statement, the client runs on the same
    server connection for the rest of its session while three other clients share the other
    one of the pool of 2 and never get the pinned one; when the client leaves, the state is
    gone from every server connection."""
    setup, _, gone = PIN_KINDS[kind]
    px = txn(max_open_conns=2, pin_session_state="on")
    a = px.connect()
    a.execute(setup)
    pinned = pid_of(a)

    stop = threading.Event()
    seen = [[], [], []]

    def hammer(i):
        with px.connect(autocommit=False, application_name=f"hammer-{i}") as h:
            while not stop.is_set():
                seen[i].append(h.execute("SELECT pg_backend_pid(), pg_sleep(0.005)").fetchone()[0])
                h.commit()

    hammers = [Background(hammer, i) for i in range(3)]
    notified = []
    a.add_notify_handler(lambda n: notified.append(n.payload))
    try:
        for step in range(20):
            if step % 2:
                use_state(kind, a, cluster, step, False, notified)
                assert pid_of(a) == pinned
            else:
                with a.transaction():
                    use_state(kind, a, cluster, step, True, notified)
                    assert pid_of(a) == pinned
            time.sleep(0.02)
        # Under a sanitizer on a busy machine the hammers may still be logging in: keep the
        # pinned client busy until each of them has shared the other connection a few times.
        deadline = time.monotonic() + 30
        while not all(len(s) >= 5 for s in seen) and time.monotonic() < deadline:
            assert pid_of(a) == pinned
            time.sleep(0.02)
    finally:
        stop.set()
    for t in hammers:
        t.result(timeout=30)
    assert all(len(s) >= 5 for s in seen), [len(s) for s in seen]
    assert all(pinned not in s for s in seen), "another client ran on the pinned connection"
    a.close()

    # Both server connections, each held by a new client: the state is gone everywhere.
    time.sleep(0.2)
    c1, c2 = px.connect(autocommit=False), px.connect(autocommit=False)
    try:
        assert c1.execute(gone).fetchone() == (True,)
        assert c2.execute(gone).fetchone() == (True,)
        assert pid_of(c1) != pid_of(c2)
    finally:
        c1.close()
        c2.close()


@pytest.mark.parametrize("kind", list(PIN_KINDS))
def test_session_state_refused_when_pinning_is_off(txn, kind):
    """pin_session_state = off: the statement is refused with a clear error (SQLSTATE class
    0A, saying what was refused and naming pin_session_state), and nothing of it is left on
    the shared server connection (pool of 1) for the next client."""
    setup, keyword, gone = PIN_KINDS[kind]
    px = txn(max_open_conns=1, pin_session_state="off")
    err = refusal(px, setup)
    assert err.get("C", "").startswith("0A"), err
    # Clear: it says what was refused (the statement, or that it keeps session state) and
    # names the setting that would allow it.
    text = " ".join(err.get(f, "") for f in "MDH").lower()
    assert keyword in err.get("M", "").lower() or "session state" in err.get("M", "").lower(), err
    assert "pin_session_state" in text, err
    with px.connect() as b:
        assert b.execute(gone).fetchone() == (True,)
        assert_clean(b)
        assert b.execute("SELECT 'still serving'").fetchone() == ("still serving",)
