"""Transaction pooling at the wire-protocol level (issue 3), over raw sockets: named prepared
statements that follow a client from one server connection to another, Close / DEALLOCATE /
DISCARD ALL, the per-connection LRU cache (max_prepared_statements), unnamed statements, the
skip-until-Sync rule in pipelined batches, and clients that vanish in the middle of a
transaction or of a pipeline."""

import struct
import time

import psycopg
import pytest

import pgwire
from helpers import Background, wait_for

# ---- extended-protocol messages (frontend) ---------------------------------------------------

SYNC = pgwire.message(b"S")
FLUSH = pgwire.message(b"H")


def parse(name, sql, oids=()):
    body = name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!h", len(oids))
    body += b"".join(struct.pack("!i", o) for o in oids)
    return pgwire.message(b"P", body)


def bind(stmt, params=(), portal=""):
    """Bind with every parameter and result column in text format."""
    body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!hh", 0, len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            v = str(p).encode()
            body += struct.pack("!i", len(v)) + v
    body += struct.pack("!h", 0)
    return pgwire.message(b"B", body)


def execute(portal="", max_rows=0):
    return pgwire.message(b"E", portal.encode() + b"\0" + struct.pack("!i", max_rows))


def describe(kind, name):
    return pgwire.message(b"D", kind + name.encode() + b"\0")


def close(kind, name):
    return pgwire.message(b"C", kind + name.encode() + b"\0")


# ---- a raw client ----------------------------------------------------------------------------


class Wire:
    """A raw protocol client logged in through pgmux as app/appdb."""

    def __init__(self, px, **extra):
        self.c = pgwire.connect(px.port, "app", "appdb", "app-secret", extra or None)

    def send(self, *msgs):
        self.c.send(b"".join(msgs))

    def recv(self):
        """Next message other than NoticeResponse/ParameterStatus, as (type char, value):
        D -> list of column values, C -> command tag, E -> error fields, Z -> status char,
        others -> raw payload."""
        while True:
            t, p = self.c.recv_msg()
            if t == b"N":
                self.c.notices.append(pgwire.parse_error_fields(p))
                continue
            if t == b"S":
                name, value = p.split(b"\0")[:2]
                self.c.parameters[name.decode()] = value.decode()
                continue
            t = t.decode()
            if t == "D":
                return t, pgwire._data_row(p)
            if t == "C":
                return t, p.rstrip(b"\0").decode()
            if t == "E":
                return t, pgwire.parse_error_fields(p)
            if t == "Z":
                return t, p.decode()
            return t, p

    def until_ready(self):
        """Messages up to and including the next ReadyForQuery."""
        out = []
        while True:
            m = self.recv()
            out.append(m)
            if m[0] == "Z":
                return out

    def sync(self, *msgs):
        """Send msgs followed by one Sync; return the messages up to its ReadyForQuery."""
        self.send(*msgs, SYNC)
        return self.until_ready()

    def query(self, sql):
        return self.c.query(sql)

    def pid(self):
        return int(self.query("SELECT pg_backend_pid()")[0][0])

    def close(self):
        self.c.terminate()

    def vanish(self):
        """Close the socket without Terminate."""
        self.c.close()


def types(res):
    return [t for t, _ in res]


def rows(res):
    return [v for t, v in res if t == "D"]


def error_states(res):
    return [v.get("C") for t, v in res if t == "E"]


def ok_rows(res):
    """The rows of a batch that must have succeeded and ended idle."""
    assert not error_states(res), f"unexpected error in {res}"
    assert res[-1] == ("Z", "I"), res
    return rows(res)


def run_named(w, name, params=()):
    """Bind+Execute statement `name` in its own Sync; its rows (AssertionError on error)."""
    return ok_rows(w.sync(bind(name, params), execute()))


def hold_backend(px, pid, max_open):
    """Open psycopg clients, each inside a transaction, until one holds the server connection
    with backend pid `pid`; release the others and return that one (in its transaction).
    With the pool at max_open this forces the next transaction of anyone else onto another
    server connection."""
    held = []
    try:
        for _ in range(max_open):
            h = px.connect(autocommit=False, application_name="holder")
            held.append(h)
            if h.execute("SELECT pg_backend_pid()").fetchone()[0] == pid:
                for other in held[:-1]:
                    other.rollback()
                    other.close()
                return h
        raise AssertionError(f"no holder landed on backend {pid} (pool of {max_open})")
    except BaseException:
        for h in held:
            h.close()
        raise


@pytest.fixture
def txn(pgmux):
    """pgmux in transaction mode; pass other keys through."""

    def start(**kw):
        kw.setdefault("pool_mode", "transaction")
        return pgmux(**kw)

    return start


def direct(cluster, dbname="appdb"):
    """app's own direct connection to the primary (unix socket, trust), autocommit."""
    return psycopg.connect(host=cluster.socket_dir, port=cluster.primary_port, user="app",
                           dbname=dbname, autocommit=True)


# ---- prepared statements ---------------------------------------------------------------------


def test_named_statement_follows_the_client_to_another_server_connection(txn):
    """Parse on one server connection; a later transaction that lands on another one (the
    first is held by someone else) can still Bind and Describe the statement."""
    px = txn(max_open_conns=2)
    a = Wire(px)
    res = a.sync(parse("s1", "SELECT $1::int + 1, pg_backend_pid()"), bind("s1", [41]),
                 execute())
    [[value, p1]] = ok_rows(res)
    assert value == "42"
    p1 = int(p1)

    holder = hold_backend(px, p1, 2)
    try:
        [[value, p2]] = run_named(a, "s1", [1])
        assert value == "2"
        assert int(p2) != p1, "the Bind was meant to run on the other server connection"
        res = a.sync(describe(b"S", "s1"))
        assert types(res) == ["t", "T", "Z"], res  # ParameterDescription, RowDescription
        # Several Binds of it in one pipeline, with a Sync each.
        a.send(*[bind("s1", [i]) + execute() + SYNC for i in range(5)])
        got = [ok_rows(a.until_ready()) for _ in range(5)]
        assert [r[0][0] for r in got] == [str(i + 1) for i in range(5)]
        assert {int(r[0][1]) for r in got} == {int(p2)}
    finally:
        holder.rollback()
        holder.close()
    # And inside an explicit transaction, wherever it lands now.
    assert a.query("BEGIN") == []
    assert run_in_txn(a, "s1", [99])[0][0] == "100"
    assert a.query("COMMIT") == []
    a.close()


def test_same_statement_name_in_two_clients(txn):
    """Two clients use the same statement name for different queries on one shared server
    connection (pool of 1): each always gets its own statement."""
    px = txn(max_open_conns=1)
    a, b = Wire(px), Wire(px)
    ok_rows(a.sync(parse("s", "SELECT 'a:' || $1::text")))
    ok_rows(b.sync(parse("s", "SELECT 'b:' || $1::text, $2::int")))
    pids = set()
    for i in range(10):
        assert run_named(a, "s", [i]) == [[f"a:{i}"]]
        assert run_named(b, "s", [i, i]) == [[f"b:{i}", str(i)]]
        pids.add(a.pid())
        pids.add(b.pid())
    assert len(pids) == 1, f"pool of 1, yet backends {pids}"
    a.close()
    b.close()


def test_close_then_reparse(txn):
    """Close of a named statement is honoured: Bind after it fails with 26000, a Parse of the
    same name with another query works on every server connection (none runs the old one),
    and a Parse of a name that exists fails with 42P05 as on a direct connection."""
    px = txn(max_open_conns=2)
    a = Wire(px)
    ok_rows(a.sync(parse("s1", "SELECT 'old', pg_backend_pid()")))
    [[v, p1]] = run_named(a, "s1")
    assert v == "old"
    res = a.sync(close(b"S", "s1"))
    assert types(res) == ["3", "Z"], res  # CloseComplete
    res = a.sync(bind("s1"), execute())
    assert error_states(res) == ["26000"] and res[-1] == ("Z", "I"), res
    # Closing a statement that does not exist is not an error.
    assert types(a.sync(close(b"S", "never_prepared"))) == ["3", "Z"]

    ok_rows(a.sync(parse("s1", "SELECT 'new', pg_backend_pid()")))
    res = a.sync(parse("s1", "SELECT 'dup'"))
    assert error_states(res) == ["42P05"] and res[-1] == ("Z", "I"), res
    seen = {}
    [[v, p]] = run_named(a, "s1")
    seen[int(p)] = v
    holder = hold_backend(px, int(p), 2)  # now run it on the other server connection
    try:
        [[v, p]] = run_named(a, "s1")
        seen[int(p)] = v
    finally:
        holder.rollback()
        holder.close()
    assert set(seen.values()) == {"new"} and len(seen) == 2, seen
    assert int(p1) in seen
    a.close()


def test_deallocate_and_discard_all(txn):
    """SQL DEALLOCATE name / DEALLOCATE ALL and DISCARD ALL from the client, as simple
    queries or through the extended protocol, drop its protocol-level statements, as on a
    direct connection."""
    px = txn(max_open_conns=2)
    a = Wire(px)
    for name in ("d1", "d2", "d3"):
        ok_rows(a.sync(parse(name, f"SELECT '{name}'")))
    assert run_named(a, "d1") == [["d1"]]
    a.query("DEALLOCATE d1")
    assert error_states(a.sync(bind("d1"), execute())) == ["26000"]
    assert run_named(a, "d2") == [["d2"]]
    # Through the extended protocol, as psycopg 3 sends it when its statement cache evicts.
    res = a.sync(parse("", "DEALLOCATE PREPARE d2"), bind(""), execute())
    assert types(res) == ["1", "2", "C", "Z"] and res[2] == ("C", "DEALLOCATE"), res
    assert error_states(a.sync(bind("d2"), execute())) == ["26000"]
    assert run_named(a, "d3") == [["d3"]]
    a.query("DEALLOCATE ALL")
    assert error_states(a.sync(bind("d3"), execute())) == ["26000"]
    with pytest.raises(pgwire.PgError) as e:
        a.query("DEALLOCATE d3")
    assert e.value.sqlstate == "26000"

    # Re-Parse after DEALLOCATE ALL, then DISCARD ALL.
    for name in ("d1", "d3"):
        ok_rows(a.sync(parse(name, f"SELECT '{name} again'")))
    assert run_named(a, "d3") == [["d3 again"]]
    res = a.sync(parse("", "DISCARD ALL"), bind(""), execute())
    assert types(res) == ["1", "2", "C", "Z"] and res[2] == ("C", "DISCARD ALL"), res
    for name in ("d1", "d3"):
        assert error_states(a.sync(bind(name), execute())) == ["26000"], name
    ok_rows(a.sync(parse("d1", "SELECT 'after discard'")))
    assert run_named(a, "d1") == [["after discard"]]
    a.close()


def test_lru_cache_is_bounded_by_max_prepared_statements(txn):
    """max_prepared_statements=2: five statements used in rotation all keep working, and the
    server connection never holds more than 2 prepared statements (pg_prepared_statements,
    read from inside the client's own transaction)."""
    px = txn(max_open_conns=1, max_prepared_statements=2)
    a = Wire(px)
    for k in range(5):
        ok_rows(a.sync(parse(f"r{k}", f"SELECT {k} AS k, $1::int * {k + 1} AS v")))
    counts = []
    for rnd in range(3):
        for k in [0, 1, 2, 3, 4] if rnd != 1 else [4, 2, 0, 3, 1]:
            assert a.query("BEGIN") == []
            assert run_in_txn(a, f"r{k}", [rnd]) == [[str(k), str(rnd * (k + 1))]]
            [[n]] = a.query("SELECT count(*) FROM pg_prepared_statements")
            counts.append(int(n))
            assert a.query("COMMIT") == []
    assert max(counts) <= 2, f"server-side prepared statements per connection: {counts}"
    assert min(counts) >= 1, f"the statement just used is not prepared on the server: {counts}"
    # A second client's statements share the same bounded cache.
    b = Wire(px)
    ok_rows(b.sync(parse("r0", "SELECT 'b' AS k, $1::int AS v")))
    for k in range(5):
        assert run_named(a, f"r{k}", [1]) == [[str(k), str(k + 1)]]
        assert run_named(b, "r0", [k]) == [["b", str(k)]]
    b.query("BEGIN")
    [[n]] = b.query("SELECT count(*) FROM pg_prepared_statements")
    b.query("COMMIT")
    assert int(n) <= 2
    a.close()
    b.close()


def run_in_txn(w, name, params=()):
    """Bind+Execute inside an open transaction: rows; the batch must end in status T."""
    res = w.sync(bind(name, params), execute())
    assert not error_states(res), res
    assert res[-1] == ("Z", "T"), res
    return rows(res)


def test_unnamed_statements_pass_through(txn):
    """Unnamed statements work in every pattern drivers use, interleaved with another client
    on a pool of 1, and pgmux does not turn them into named ones on the server."""
    px = txn(max_open_conns=1)
    a, b = Wire(px), Wire(px)
    for i in range(10):
        res = a.sync(parse("", "SELECT $1::int * 2"), bind("", [i]), execute())
        assert ok_rows(res) == [[str(i * 2)]]
        res = b.sync(parse("", "SELECT $1::text || '!'"), describe(b"S", ""), bind("", [i]),
                     describe(b"P", ""), execute())
        assert types(res) == ["1", "t", "T", "2", "T", "D", "C", "Z"], res
        assert rows(res) == [[f"{i}!"]]
    # Parse in one message group, Bind of the unnamed statement later in the same Sync.
    res = a.sync(parse("", "SELECT 'x'"), FLUSH, bind(""), execute())
    assert ok_rows(res) == [["x"]]
    a.query("BEGIN")
    assert a.query("SELECT count(*) FROM pg_prepared_statements") == [["0"]]
    a.query("COMMIT")
    a.close()
    b.close()


# ---- extended protocol under errors ----------------------------------------------------------

DIV0 = "SELECT 1 / (g - g) FROM generate_series(1, 1) g"  # fails at Execute, not at Bind


def test_pipelined_batch_with_an_error_stays_in_step(txn):
    """After an ErrorResponse the rest of the batch is skipped until Sync; the answers to a
    pipeline of several Syncs come back one ReadyForQuery per Sync, in order; a statement
    whose Parse was skipped does not exist afterwards; the next transaction works."""
    px = txn(max_open_conns=1)
    a = Wire(px)
    res = a.sync(parse("", DIV0), bind(""), execute(),
                 parse("after_err", "SELECT 2"), bind("after_err"), execute(),
                 parse("", "SELECT 3"), bind(""), execute())
    assert types(res) == ["1", "2", "E", "Z"], res
    assert error_states(res) == ["22012"] and res[-1] == ("Z", "I")

    # Three Syncs in one write: ok, error, ok.
    a.send(parse("", "SELECT 10"), bind(""), execute(), SYNC,
           parse("", DIV0), bind(""), execute(), parse("", "SELECT 20"), bind(""), execute(),
           SYNC,
           parse("", "SELECT 30"), bind(""), execute(), SYNC)
    r1, r2, r3 = a.until_ready(), a.until_ready(), a.until_ready()
    assert types(r1) == ["1", "2", "D", "C", "Z"] and rows(r1) == [["10"]], r1
    assert types(r2) == ["1", "2", "E", "Z"] and error_states(r2) == ["22012"], r2
    assert types(r3) == ["1", "2", "D", "C", "Z"] and rows(r3) == [["30"]], r3

    # "after_err" was never parsed: Bind fails as on a direct connection; Parse then works.
    assert error_states(a.sync(bind("after_err"), execute())) == ["26000"]
    ok_rows(a.sync(parse("after_err", "SELECT 2")))
    assert run_named(a, "after_err") == [["2"]]

    # Inside an explicit transaction the error leaves it failed (E) until ROLLBACK, and the
    # server connection stays with the client meanwhile.
    b = px.connect()
    assert a.query("BEGIN") == []
    res = a.sync(parse("", DIV0), bind(""), execute(), parse("", "SELECT 1"), bind(""),
                 execute())
    assert types(res) == ["1", "2", "E", "Z"] and res[-1] == ("Z", "E"), res
    waiting = Background(lambda: b.execute("SELECT 'b ran'").fetchone()[0])
    time.sleep(1.0)
    assert not waiting.done(), "another client ran while the failed transaction was open"
    res = a.sync(parse("", "SELECT 1"), bind(""), execute())
    assert error_states(res) == ["25P02"] and res[-1] == ("Z", "E"), res
    assert a.query("ROLLBACK") == []
    assert waiting.result(timeout=10) == "b ran"
    assert ok_rows(a.sync(parse("", "SELECT 'next'"), bind(""), execute())) == [["next"]]
    b.close()
    a.close()


# ---- clients that vanish ---------------------------------------------------------------------


@pytest.fixture
def vanish_table(cluster):
    with direct(cluster) as c:
        c.execute("DROP TABLE IF EXISTS txn_vanish")
        c.execute("CREATE TABLE txn_vanish (id int)")
    yield "txn_vanish"
    with direct(cluster) as c:
        c.execute("DROP TABLE IF EXISTS txn_vanish")


@pytest.mark.parametrize("how", ["in_transaction", "in_pipeline", "mid_query"])
def test_client_that_vanishes_leaves_a_clean_connection(cluster, txn, vanish_table, how):
    """A client closes its socket (no Terminate) after BEGIN + INSERT, or after an unsynced
    Parse/Bind/Execute pipeline, or while its query runs inside a transaction: its insert is
    never visible, and the next client on the pool of 1 gets a connection that is not in a
    transaction."""
    px = txn(max_open_conns=1)
    a = Wire(px)
    if how == "in_transaction":
        a.query("BEGIN")
        a.query("INSERT INTO txn_vanish VALUES (1)")
    elif how == "in_pipeline":
        a.send(parse("", "INSERT INTO txn_vanish VALUES ($1::int)"), bind("", [1]), execute(),
               parse("ins", "INSERT INTO txn_vanish VALUES ($1::int)"), bind("ins", [2]),
               execute(), FLUSH)
        got = [a.recv() for _ in range(6)]
        assert types(got) == ["1", "2", "C", "1", "2", "C"], got  # ran, not yet committed
    else:
        a.query("BEGIN")
        a.query("INSERT INTO txn_vanish VALUES (1)")
        a.send(pgwire.query_message("SELECT pg_sleep(1.5)"))
        time.sleep(0.2)
    a.vanish()

    with px.connect() as b:
        row = b.execute(
            "SELECT txid_current_if_assigned() IS NULL, now() = statement_timestamp(),"
            " (SELECT count(*) FROM txn_vanish)"
        ).fetchone()
        assert row == (True, True, 0), f"next client's connection is not clean: {row}"
        with b.transaction():
            b.execute("INSERT INTO txn_vanish VALUES (100)")
    with direct(cluster) as c:
        assert c.execute("SELECT array_agg(id) FROM txn_vanish").fetchone()[0] == [100]
    # Nothing is left idle in a transaction on the server side.
    wait_for(lambda: not [r for r in cluster.server_conns(user="app", dbname="appdb")
                          if r["state"].startswith("idle in transaction")],
             what="no server connection idle in transaction")


def test_messages_sent_after_an_error_arrived_are_skipped_too(txn):
    """The client reads the ErrorResponse (after a Flush) before it sends the rest of the batch
    and its Sync: the server ignores those messages as well, and pgmux must expect no answer to
    them. The Sync's ReadyForQuery ends the batch and the connection stays usable."""
    px = txn(max_open_conns=1)
    a = Wire(px)
    a.send(parse("", DIV0), bind(""), execute(), pgwire.message(b"H"))
    before = [a.recv() for _ in range(3)]
    assert types(before) == ["1", "2", "E"], before
    # Sent after the error was seen: skipped by the server, answered by nobody.
    a.send(parse("late", "SELECT 5"), bind("late"), execute(), close(b"S", "late"), SYNC)
    res = a.until_ready()
    assert types(res) == ["Z"], res
    # "late" was never created, on the server or for pgmux.
    assert error_states(a.sync(bind("late"), execute())) == ["26000"]
    ok_rows(a.sync(parse("late", "SELECT 5")))
    assert run_named(a, "late") == [["5"]]
