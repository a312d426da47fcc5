"""Read/write routing (issue 4 items 3-5), observed from the server side: every check asks the
server that ran a statement who it is (pg_is_in_recovery(), inet_server_port()).

The shared session cluster has a primary and one replica. Tests that need a second replica they
may stop use `replica2`, a module-scoped extra standby of the shared primary (tests/cluster.sh
add-replica), never the shared replica. Tests that pause replay on the shared replica always
resume it in a finally."""

import os
import subprocess
import time

import psycopg
import pytest

import pgwire
from helpers import wait_for
from test_txn_protocol import SYNC, Wire, bind, execute, parse

WHO = "SELECT pg_is_in_recovery(), inet_server_port()"


@pytest.fixture
def rt(pgmux):
    """pgmux in transaction pooling with routing on; keys pass through."""

    def start(**kw):
        kw.setdefault("pool_mode", "transaction")
        kw.setdefault("read_write_split", "on")
        kw.setdefault("read_your_writes", "off")
        return pgmux(**kw)

    return start


def node_of(cluster, row):
    """'primary' or 'replica' from a (pg_is_in_recovery, inet_server_port) row."""
    in_recovery, port = row[0], int(row[1])
    if port == cluster.primary_port:
        assert in_recovery in (False, "f")
        return "primary"
    assert in_recovery in (True, "t")
    assert port == cluster.replica_port
    return "replica"


def where(cluster, conn, sql=WHO, params=None, **kw):
    return node_of(cluster, conn.execute(sql, params, **kw).fetchone())


@pytest.fixture(scope="module")
def routing_table(cluster):
    """A table and a sequence the app user may write, present on the replica too."""
    with cluster.su(dbname="appdb") as su:
        su.execute("DROP TABLE IF EXISTS rt_items")
        su.execute("DROP SEQUENCE IF EXISTS rt_seq")
        su.execute("CREATE TABLE rt_items (id serial PRIMARY KEY, v text)")
        su.execute("CREATE SEQUENCE rt_seq")
        su.execute("GRANT ALL ON rt_items, rt_items_id_seq, rt_seq TO app")
    with cluster.su(replica=True, dbname="appdb") as r:
        wait_for(lambda: r.execute("SELECT to_regclass('rt_seq') IS NOT NULL").fetchone()
                 ["?column?"], timeout=10, what="rt_seq on the replica")
    return "rt_items"


# ---- what goes where ---------------------------------------------------------------------------


def test_reads_to_the_replica_writes_to_the_primary(cluster, rt, routing_table):
    px = rt()
    with px.connect() as c:
        assert where(cluster, c) == "replica"
        assert where(cluster, c, "/* a comment */ select pg_is_in_recovery(), inet_server_port()") \
            == "replica"
        assert where(cluster, c, "INSERT INTO rt_items (v) VALUES ('a')"
                     " RETURNING pg_is_in_recovery(), inet_server_port()") == "primary"
        assert where(cluster, c, "WITH ins AS (INSERT INTO rt_items (v) VALUES ('cte') RETURNING id)"
                     " SELECT pg_is_in_recovery(), inet_server_port() FROM ins") == "primary"
        assert where(cluster, c, "SELECT pg_is_in_recovery(), inet_server_port()"
                     " FROM rt_items LIMIT 1 FOR UPDATE") == "primary"
        assert where(cluster, c, "SELECT pg_is_in_recovery(), inet_server_port(),"
                     " nextval('rt_seq')") == "primary"
        # hints override the class
        assert where(cluster, c, "/* pgmux: primary */ " + WHO) == "primary"
        assert where(cluster, c, "/* pgmux: replica */ SELECT pg_is_in_recovery(),"
                     " inet_server_port() FROM (VALUES (1)) v WHERE v.column1 = 1") == "replica"
        # a read that pins session state runs where the client is pinned: the primary
        assert where(cluster, c, "SELECT pg_is_in_recovery(), inet_server_port(),"
                     " set_config('work_mem', '8MB', false)") == "primary"
        assert where(cluster, c) == "primary"  # pinned from now on


def test_explicit_transactions_stay_on_one_node(cluster, rt, routing_table):
    px = rt()
    with px.connect(autocommit=False) as c:
        # psycopg sends BEGIN first: a read-write transaction, on the primary throughout
        assert where(cluster, c) == "primary"
        assert where(cluster, c) == "primary"
        c.commit()
    with px.connect() as c:
        with c.transaction():
            c.execute("SET TRANSACTION READ ONLY")  # after BEGIN: too late to move
            assert where(cluster, c) == "primary"
        rows = []
        for sql in ("BEGIN READ ONLY", "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"):
            c.execute(sql)
            rows.append(where(cluster, c))
            rows.append(where(cluster, c))
            c.execute("COMMIT")
        assert rows == ["replica"] * 4
        c.execute("BEGIN")
        assert where(cluster, c) == "primary"
        c.execute("COMMIT")


def test_one_query_string_that_begins_a_read_only_transaction(cluster, rt):
    px = rt()
    conn = pgwire.connect(px.port, "app", "appdb", "app-secret")
    try:
        assert node_of(cluster, conn.query("BEGIN; SET TRANSACTION READ ONLY; " + WHO)[0]) \
            == "replica"
        assert node_of(cluster, conn.query(WHO)[0]) == "replica"
        conn.query("COMMIT")
        assert node_of(cluster, conn.query("BEGIN; " + WHO)[0]) == "primary"
        conn.query("COMMIT")
    finally:
        conn.terminate()


def test_read_write_split_off_sends_everything_to_the_primary(cluster, rt):
    px = rt(read_write_split="off")
    with px.connect() as c:
        for _ in range(3):
            assert where(cluster, c) == "primary"
        c.execute("BEGIN READ ONLY")
        assert where(cluster, c) == "primary"
        c.execute("COMMIT")


def test_psycopg_prepared_statements_route_by_their_text(cluster, rt, routing_table):
    px = rt()
    with px.connect() as c:
        for _ in range(4):  # prepare=True: Parse once, then Bind/Execute of the named statement
            assert where(cluster, c, WHO + " WHERE %s > 0", [1], prepare=True) == "replica"
        for i in range(3):
            assert where(cluster, c, "INSERT INTO rt_items (v) VALUES (%s)"
                         " RETURNING pg_is_in_recovery(), inet_server_port()", [f"p{i}"],
                         prepare=True) == "primary"


def test_named_statement_is_prepared_on_the_node_that_runs_it(cluster, rt):
    """pgbench -M prepared style: a statement parsed inside a transaction on the primary is
    later executed by itself; it runs on the replica, which pgmux prepares it on first."""
    px = rt()
    w = Wire(px)
    try:
        assert w.query("BEGIN") == []
        res = w.sync(parse("who", WHO + " WHERE $1::int > 0"), bind("who", [1]), execute())
        assert node_of(cluster, [v for t, v in res if t == "D"][0]) == "primary"
        w.query("COMMIT")
        for _ in range(3):
            res = w.sync(bind("who", [1]), execute())
            assert [t for t, _ in res] == ["2", "D", "C", "Z"], res
            assert node_of(cluster, [v for t, v in res if t == "D"][0]) == "replica"
        # pgbench -M extended style: unnamed Parse/Bind/Execute/Sync each time
        for _ in range(2):
            res = w.sync(parse("", WHO), bind(""), execute())
            assert node_of(cluster, [v for t, v in res if t == "D"][0]) == "replica"
        # a pipeline that reads then writes runs as one transaction: on the primary
        res = w.sync(parse("", WHO), bind(""), execute(),
                     parse("", "SELECT pg_is_in_recovery(), inet_server_port(), nextval('rt_seq')"),
                     bind(""), execute())
        assert [node_of(cluster, v) for t, v in res if t == "D"] == ["primary", "primary"]
    finally:
        w.close()


def test_session_pooling_uses_the_primary_unless_the_session_is_read_only(cluster, rt):
    px = rt(pool_mode="session")
    with px.connect() as c:
        assert where(cluster, c) == "primary"
    for extra in ({"default_transaction_read_only": "on"}, {"target_session_attrs": "read-only"}):
        conn = pgwire.connect(px.port, "app", "appdb", "app-secret", extra)
        try:
            assert node_of(cluster, conn.query(WHO)[0]) == "replica"
            assert node_of(cluster, conn.query(WHO)[0]) == "replica"
        finally:
            conn.terminate()
    # a read-only session in transaction pooling reads on replicas whatever it sends
    tx = rt()
    conn = pgwire.connect(tx.port, "app", "appdb", "app-secret",
                          {"default_transaction_read_only": "on"})
    try:
        assert node_of(cluster, conn.query("BEGIN; " + WHO)[0]) == "replica"
        conn.query("COMMIT")
    finally:
        conn.terminate()
