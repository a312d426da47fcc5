"""The protocol through pgmux with real drivers: simple and extended queries, prepared
statements, errors, COPY both ways, notices, LISTEN/NOTIFY and FunctionCall."""

import select
import time

import psycopg
import psycopg2
import psycopg2.extensions
import pytest

import pgwire


@pytest.fixture
def px(pgmux):
    return pgmux()


def test_simple_query_protocol(px):
    """psycopg2 sends everything as simple Query messages; several statements in one Query,
    and an error that does not break the session."""
    conn = psycopg2.connect(px.dsn())
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SELECT 1 AS a, 'two' AS b, NULL::int AS c")
        assert cur.fetchall() == [(1, "two", None)]
        assert [d.name for d in cur.description] == ["a", "b", "c"]
        cur.execute("CREATE TEMP TABLE t (x int); INSERT INTO t SELECT generate_series(1, 5)")
        cur.execute("SELECT sum(x) FROM t")
        assert cur.fetchone() == (15,)
        with pytest.raises(psycopg2.errors.DivisionByZero):
            cur.execute("SELECT 1/0")
        cur.execute("SELECT 'still here'")
        assert cur.fetchone() == ("still here",)
    finally:
        conn.close()


def test_simple_query_raw_and_empty(px):
    """Raw simple queries: an empty query string and a multi-result Query."""
    c = pgwire.connect(px.port, "app", "appdb", "app-secret")
    try:
        c.send(pgwire.query_message(""))
        types = []
        while True:
            t, _ = c.recv_msg()
            types.append(t)
            if t == b"Z":
                break
        assert types == [b"I", b"Z"]  # EmptyQueryResponse, ReadyForQuery
        assert c.query("SELECT 1; SELECT 2, 3") == [["2", "3"]]
    finally:
        c.terminate()


def test_extended_query_with_parameters(px):
    """psycopg 3 sends parameterized queries as Parse/Bind/Describe/Execute/Sync, text and
    binary."""
    with px.connect() as conn:
        row = conn.execute("SELECT %s::int + %s::int, %s::text, %s::bytea",
                           [2, 40, "héllo", b"\x00\xff"]).fetchone()
        assert row == (42, "héllo", b"\x00\xff")
        cur = conn.cursor(binary=True)
        assert cur.execute("SELECT %s::bigint * 2", [2**40]).fetchone() == (2**41,)
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table WHERE x = %s", [1])
        assert conn.execute("SELECT %s", ["after error"]).fetchone() == ("after error",)
        # executemany: a series of Bind/Execute.
        conn.execute("CREATE TEMP TABLE m (a int, b text)")
        with conn.cursor() as cur2:
            cur2.executemany("INSERT INTO m VALUES (%s, %s)", [(i, str(i)) for i in range(100)])
        assert conn.execute("SELECT count(*), sum(a) FROM m").fetchone() == (100, 4950)


def test_prepared_statements_in_session_mode(px):
    """Named prepared statements live on the session's server connection: psycopg's
    prepare=True (protocol-level Parse with a name) and SQL PREPARE/EXECUTE."""
    with px.connect() as conn:
        for i in range(3):
            r = conn.execute("SELECT %s::int * 10", [i], prepare=True).fetchone()
            assert r == (i * 10,)
        names = [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements")]
        assert any(n.startswith("_pg3_") for n in names), names
        conn.execute("PREPARE p(int) AS SELECT $1 + 1")
        assert conn.execute("EXECUTE p(41)").fetchone() == (42,)
        conn.execute("DEALLOCATE p")


def test_pipeline_and_flush(px):
    """psycopg's pipeline mode sends many extended-query batches before reading (Sync and
    Flush interleaved)."""
    with px.connect() as conn:
        with conn.pipeline():
            curs = [conn.execute("SELECT %s::int", [i]) for i in range(50)]
        assert [c.fetchone()[0] for c in curs] == list(range(50))


def test_transactions(px):
    with px.connect(autocommit=False) as conn:
        conn.execute("CREATE TEMP TABLE tx (x int)")
        conn.commit()
        conn.execute("INSERT INTO tx VALUES (1)")
        conn.rollback()
        conn.execute("INSERT INTO tx VALUES (2)")
        conn.commit()
        assert conn.execute("SELECT array_agg(x) FROM tx").fetchone() == ([2],)


def test_large_query_and_result(px):
    """A 2 MB query text and a 10 MB result cross pgmux intact."""
    with px.connect() as conn:
        big = "x" * (2 * 1024 * 1024)
        assert conn.execute("SELECT length(%s)", [big]).fetchone() == (len(big),)
        assert conn.execute("SELECT length('" + big + "')").fetchone() == (len(big),)
        rows = conn.execute("SELECT g, repeat('y', 1000) FROM generate_series(1, 10000) g").fetchall()
        assert len(rows) == 10000 and rows[-1] == (10000, "y" * 1000)


def test_copy_in_and_out(px):
    """COPY FROM STDIN (CopyData/CopyDone) and COPY TO STDOUT through pgmux."""
    with px.connect() as conn:
        conn.execute("CREATE TEMP TABLE c (id int, name text)")
        with conn.cursor() as cur:
            with cur.copy("COPY c (id, name) FROM STDIN") as copy:
                for i in range(10000):
                    copy.write_row((i, f"name {i}"))
            assert cur.rowcount == 10000
        assert conn.execute("SELECT count(*), max(id) FROM c").fetchone() == (10000, 9999)
        out = []
        with conn.cursor() as cur:
            with cur.copy("COPY (SELECT id, name FROM c ORDER BY id) TO STDOUT") as copy:
                for row in copy.rows():
                    out.append(row)
        assert len(out) == 10000
        assert out[0] == ("0", "name 0") and out[-1] == ("9999", "name 9999")


def test_copy_failure_keeps_the_session(px):
    """A client aborting COPY IN (CopyFail) and a COPY rejected by the server both leave the
    session usable."""
    with px.connect() as conn:
        conn.execute("CREATE TEMP TABLE cf (id int)")
        with pytest.raises(psycopg.errors.QueryCanceled):
            with conn.cursor().copy("COPY cf FROM STDIN") as copy:
                copy.write_row((1,))
                raise psycopg.errors.QueryCanceled("client gives up")  # psycopg sends CopyFail
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with conn.cursor().copy("COPY cf FROM STDIN") as copy:
                copy.write(b"not a number\n")
        assert conn.execute("SELECT count(*) FROM cf").fetchone() == (0,)


def test_copy_with_psycopg2(px):
    """psycopg2's copy_expert (simple-protocol COPY both ways)."""
    import io

    conn = psycopg2.connect(px.dsn())
    try:
        cur = conn.cursor()
        cur.execute("CREATE TEMP TABLE c2 (a int, b text)")
        cur.copy_expert("COPY c2 FROM STDIN", io.StringIO("1\tone\n2\ttwo\n"))
        buf = io.StringIO()
        cur.copy_expert("COPY c2 TO STDOUT", buf)
        assert buf.getvalue() == "1\tone\n2\ttwo\n"
        conn.commit()
    finally:
        conn.close()


def test_notices_reach_the_client(px):
    """RAISE NOTICE in a DO block arrives as a NoticeResponse, before the command completes."""
    with px.connect() as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$")
        assert ("NOTICE", "hello 42") in notices
        assert ("WARNING", "careful") in notices


def test_listen_notify_between_two_clients(px):
    """NOTIFY from one client reaches another client's LISTEN through pgmux, including while
    the listener is idle (an asynchronous message pgmux must forward unprompted)."""
    listener = psycopg2.connect(px.dsn())
    sender = psycopg2.connect(px.dsn())
    try:
        listener.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        sender.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        listener.cursor().execute("LISTEN chan")
        sender.cursor().execute("NOTIFY chan, 'payload 1'")
        sender.cursor().execute("SELECT pg_notify('chan', 'payload 2')")
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            if select.select([listener], [], [], 0.5)[0]:
                listener.poll()
                while listener.notifies:
                    got.append(listener.notifies.pop(0))
        assert [(n.channel, n.payload) for n in got] == [("chan", "payload 1"), ("chan", "payload 2")]
    finally:
        listener.close()
        sender.close()


def test_function_call_via_large_objects(px):
    """libpq's large-object API uses the FunctionCall ('F') message."""
    conn = psycopg2.connect(px.dsn())
    try:
        lo = conn.lobject(0, "wb")
        lo.write(b"large object through pgmux" * 1000)
        oid = lo.oid
        lo.close()
        lo = conn.lobject(oid, "rb")
        assert lo.read() == b"large object through pgmux" * 1000
        lo.close()
        lo.unlink()
        conn.commit()
    finally:
        conn.close()


def test_startup_parameters_are_forwarded(px, cluster):
    """Startup parameters (application_name, TimeZone, search_path) reach the server, and the
    server's ParameterStatus messages reach the client. (pgmux refuses the `options`
    parameter with 0A000; see the README.)"""
    c = pgwire.connect(px.port, "app", "appdb", "app-secret",
                       extra={"application_name": "pgmux-it-params", "TimeZone": "Asia/Tokyo",
                              "search_path": "pg_catalog"})
    try:
        assert c.query("SHOW application_name") == [["pgmux-it-params"]]
        assert c.query("SHOW TimeZone") == [["Asia/Tokyo"]]
        assert c.query("SHOW search_path") == [["pg_catalog"]]
        assert c.parameters["server_version"].startswith("15")
        assert c.parameters["application_name"] == "pgmux-it-params"
        c.query("SET application_name = 'changed'")
        assert c.parameters["application_name"] == "changed"
    finally:
        c.terminate()
