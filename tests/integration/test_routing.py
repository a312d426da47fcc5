"""Read/write routing (issue 4 items 3-5), observed from the server side: every check asks the
server that ran a statement who it is (pg_is_in_recovery(), inet_server_port()).

The shared session cluster has a primary and one replica. Tests that need a second replica they
may stop use `replica2`, a module-scoped extra standby of the shared primary (tests/cluster.sh
add-replica), never the shared replica. Tests that pause replay on the shared replica always
resume it in a finally."""

import os
import re
import signal
import subprocess
import time

import psycopg
import pytest

import pgwire
from helpers import wait_for
from test_txn_protocol import Wire, bind, execute, parse

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


def test_session_state_is_not_created_on_a_replica(cluster, rt):
    """Pinning state belongs on the primary: inside a read-only transaction on a replica it is
    refused, and the client stays unpinned."""
    px = rt()
    with px.connect() as c:
        c.execute("BEGIN READ ONLY")
        assert where(cluster, c) == "replica"
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            c.execute("SET work_mem = '8MB'")
        assert "only on the primary" in str(e.value)
        c.execute("ROLLBACK")
        assert where(cluster, c) == "replica"  # not pinned
        assert c.execute("SHOW work_mem").fetchone()[0] != "8MB"
        # outside it, the same statement pins the client to the primary
        c.execute("SET work_mem = '8MB'")
        assert where(cluster, c) == "primary"
        assert c.execute("SHOW work_mem").fetchone()[0] == "8MB"


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


# ---- balancing -------------------------------------------------------------------------------

# One worker: least_conn counts, and the round-robin position, are per worker thread.
BALANCED = dict(workers=1, primary_reads_weight=1)


def reads(cluster, px, n, **conn_params):
    with px.connect(**conn_params) as c:
        # psycopg prepares a statement on its sixth run: Parse then Bind, two transactions
        c.prepare_threshold = None
        return [where(cluster, c) for _ in range(n)]


def test_round_robin_alternates_by_weight(cluster, rt):
    px = rt(replica_balance="round_robin", **BALANCED)
    got = reads(cluster, px, 8)
    assert got.count("primary") == 4 and got.count("replica") == 4, got
    assert all(a != b for a, b in zip(got, got[1:])), got  # equal weights: strictly alternating


def test_random_uses_both_read_nodes(cluster, rt):
    px = rt(replica_balance="random", **BALANCED)
    got = reads(cluster, px, 60)
    # each side has weight 1: fewer than 10 of 60 on one side has probability < 1e-6
    assert got.count("primary") >= 10 and got.count("replica") >= 10, got


def test_hash_keeps_each_application_on_one_node(cluster, rt):
    px = rt(replica_balance="hash", **BALANCED)
    seen = {}
    for i in range(12):
        got = reads(cluster, px, 3, application_name=f"app{i}")
        assert len(set(got)) == 1, (i, got)
        seen[f"app{i}"] = got[0]
    assert set(seen.values()) == {"primary", "replica"}, seen
    # the same name lands on the same node on a new connection
    for name in ("app0", "app5", "app11"):
        assert reads(cluster, px, 1, application_name=name) == [seen[name]]


def test_least_conn_avoids_the_busy_node(cluster, rt):
    px = rt(replica_balance="least_conn", **BALANCED)
    with px.connect() as holder, px.connect() as other:
        other.prepare_threshold = None
        holder.execute("BEGIN READ ONLY")  # a read transaction that stays open
        busy = where(cluster, holder)
        got = [where(cluster, other) for _ in range(5)]
        assert set(got) == {"primary", "replica"} - {busy}, (busy, got)
        holder.execute("COMMIT")
        got = [where(cluster, other) for _ in range(4)]
        assert sorted(got) == ["primary", "primary", "replica", "replica"], got


def test_weight_zero_replica_gets_no_reads(cluster, rt):
    px = rt(nodes={
        "primary": {"host": "127.0.0.1", "port": cluster.primary_port, "role": "primary"},
        "replica": {"host": "127.0.0.1", "port": cluster.replica_port, "role": "replica",
                    "weight": 0},
    })
    assert reads(cluster, px, 4) == ["primary"] * 4


# ---- read-your-writes ------------------------------------------------------------------------


class ReplayPause:
    """Pause and resume WAL replay on the shared replica."""

    def __init__(self, cluster):
        self.cluster = cluster

    def __call__(self):
        with self.cluster.su(replica=True) as r:
            r.execute("SELECT pg_wal_replay_pause()")

    def resume(self):
        with self.cluster.su(replica=True) as r:
            r.execute("SELECT pg_wal_replay_resume()")

    def caught_up(self):
        """Wait until the replica shows a mark written on the primary now (the cluster runs
        with synchronous_commit = off: WAL positions say little about what it shows)."""
        mark = f"replay mark {time.time_ns()}"
        with self.cluster.su(dbname="appdb") as su:
            su.execute("INSERT INTO rt_items (v) VALUES (%s)", [mark])
        with self.cluster.su(replica=True, dbname="appdb") as r:
            wait_for(lambda: r.execute("SELECT count(*) AS n FROM rt_items WHERE v = %s",
                                       [mark]).fetchone()["n"] == 1,
                     timeout=30, what="the replica to replay the mark")


@pytest.fixture
def paused_replica(cluster):
    """Call it to pause WAL replay on the shared replica (.resume() to resume); replay is
    always resumed after the test."""
    p = ReplayPause(cluster)
    try:
        yield p
    finally:
        p.resume()
        # the next test starts with a replica that is not behind
        p.caught_up()


def insert_one(cluster, c, v):
    return where(cluster, c, "INSERT INTO rt_items (v) VALUES (%s)"
                 " RETURNING pg_is_in_recovery(), inet_server_port()", [v])


def test_read_your_writes_window(cluster, rt, routing_table, paused_replica):
    px = rt(read_your_writes="window", read_your_writes_window="1500ms")
    paused_replica()
    with px.connect() as writer, px.connect() as bystander:
        assert where(cluster, writer) == "replica"
        # before the write: the window opens at its commit, no earlier than this
        t0 = time.monotonic()
        assert insert_one(cluster, writer, "w1") == "primary"
        # the write is not on the replica (replay paused): the writer must not read there
        assert writer.execute("SELECT count(*) FROM rt_items WHERE v = 'w1'").fetchone()[0] == 1
        assert where(cluster, writer) == "primary"
        assert where(cluster, bystander) == "replica"
        wait_for(lambda: where(cluster, writer) == "replica", timeout=5,
                 what="the writer's reads back on the replica after the window")
        assert time.monotonic() - t0 >= 1.4


def test_read_your_writes_lsn_while_the_replica_is_paused(cluster, rt, routing_table,
                                                          paused_replica):
    px = rt(read_your_writes="lsn")
    with px.connect() as writer, px.connect() as bystander:
        assert insert_one(cluster, writer, "before-pause") == "primary"
        paused_replica()
        assert insert_one(cluster, writer, "l1") == "primary"
        for _ in range(3):
            assert writer.execute("SELECT count(*) FROM rt_items WHERE v = 'l1'"
                                  ).fetchone()[0] == 1
            assert where(cluster, writer) == "primary"
        assert where(cluster, bystander) == "replica"
        assert bystander.execute("SELECT count(*) FROM rt_items WHERE v = 'l1'"
                                 ).fetchone()[0] == 0  # proof that the replica is behind
    # both writes' commit positions were learned (not a fallback to the window)
    assert learned_positions(px) == 2


def test_read_your_writes_lsn_asks_the_replica_how_far_it_is(cluster, rt, routing_table):
    """After a read on the replica, a worker whose client waits for its write there asks the
    replica for its replay position: the writer reads on the replica again without waiting for a
    health check."""
    # one health check at start, none during the test: only the probes can tell
    px = rt(read_your_writes="lsn", workers=1, health_check_period="1h")
    with px.connect() as writer, px.connect() as bystander:
        writer.prepare_threshold = bystander.prepare_threshold = None
        assert insert_one(cluster, writer, "probe") == "primary"

        def writer_back_on_the_replica():
            where(cluster, writer)  # kept on the primary until the replay is known to pass it
            assert where(cluster, bystander) == "replica"  # a read there, then a probe
            return where(cluster, writer) == "replica"

        wait_for(writer_back_on_the_replica, timeout=5, interval=0.01,
                 what="the writer's reads back on the replica")
        assert writer.execute("SELECT count(*) FROM rt_items WHERE v = 'probe'").fetchone()[0] == 1
    px.proc.send_signal(signal.SIGTERM)
    assert px.proc.wait(timeout=15) == 0
    px.exited_on_purpose = True
    probes = re.findall(r"replica replay positions learned (\d+)", px.log_text())
    assert probes and int(probes[0]) >= 1, px.log_text()[-2000:]


def learned_positions(px):
    """Stop pgmux; the commit positions its workers learned, from their exit lines."""
    px.proc.send_signal(signal.SIGTERM)
    assert px.proc.wait(timeout=15) == 0
    px.exited_on_purpose = True
    return sum(int(n) for n in re.findall(r"commit positions learned (\d+)", px.log_text()))


# ---- no replica that can read: nothing is classified, nothing is looked up -----------------


def only_primary(cluster):
    return {"primary": {"host": "127.0.0.1", "port": cluster.primary_port, "role": "primary"}}


def with_replica(cluster):
    return dict(only_primary(cluster), replica={"host": "127.0.0.1", "port": cluster.replica_port,
                                                "role": "replica"})


def test_no_commit_position_lookup_without_a_replica(cluster, rt, routing_table):
    """With only the primary configured, write transactions are not followed by a commit
    position lookup (the positive case is the paused-replica test above, which counts 2)."""
    px = rt(read_your_writes="lsn", nodes=only_primary(cluster))
    with px.connect() as c:
        for i in range(5):
            assert insert_one(cluster, c, f"solo{i}") == "primary"
            assert where(cluster, c) == "primary"
        with c.transaction():
            c.execute("UPDATE rt_items SET v = v WHERE v = 'solo0'")
    assert learned_positions(px) == 0


def test_write_made_before_a_replica_joins_is_read_back(cluster, rt, routing_table,
                                                       paused_replica):
    """A write made while no replica could read, then a replica that has not replayed it added
    by a reload: the writer still reads its write; a bystander reads on the replica."""
    from test_reload import rewrite_nodes, sighup_and_wait

    px = rt(read_your_writes="lsn", nodes=only_primary(cluster), health_check_period="100ms")

    def fresh(sql):
        # A new client each time: every transaction run while no replica could read counts
        # as a possible write, so a client that ran one would wait for the replay too.
        with px.connect() as c:
            return tuple(c.execute(sql).fetchone())

    with px.connect() as writer:
        paused_replica()
        assert insert_one(cluster, writer, "before-join") == "primary"
        rewrite_nodes(px, with_replica(cluster))
        sighup_and_wait(px)
        wait_for(lambda: node_of(cluster, fresh(WHO)) == "replica", timeout=10,
                 what="reads on the replica added by the reload")
        # proof that the replica is behind
        assert fresh("SELECT count(*), pg_is_in_recovery() FROM rt_items"
                     " WHERE v = 'before-join'") == (0, True)
        for _ in range(3):
            assert writer.execute("SELECT count(*) FROM rt_items WHERE v = 'before-join'"
                                  ).fetchone()[0] == 1
            assert where(cluster, writer) == "primary"
        paused_replica.resume()
        wait_for(lambda: where(cluster, writer) == "replica", timeout=10,
                 what="the writer's reads back on the replica once it replayed the write")
    # the writer's first transaction after the reload learned a position covering its write
    assert learned_positions(px) >= 1


def test_statement_prepared_before_a_replica_joins_reads_there(cluster, rt, routing_table):
    """A named statement prepared while no replica could read is classified when first needed:
    once a replica joins, executing it reads there."""
    from test_reload import rewrite_nodes, sighup_and_wait

    px = rt(nodes=only_primary(cluster), health_check_period="100ms")
    with px.connect() as c:
        for _ in range(2):
            assert where(cluster, c, WHO + " WHERE %s > 0", [1], prepare=True) == "primary"
        rewrite_nodes(px, with_replica(cluster))
        sighup_and_wait(px)
        wait_for(lambda: where(cluster, c, WHO + " WHERE %s > 0", [1], prepare=True) ==
                 "replica", timeout=10, what="the prepared read on the replica")
        assert where(cluster, c, "INSERT INTO rt_items (v) VALUES (%s)"
                     " RETURNING pg_is_in_recovery(), inet_server_port()", ["prep-join"],
                     prepare=True) == "primary"


@pytest.mark.parametrize("limit", [{"max_replica_lag_bytes": "1kB"},
                                   {"max_replica_lag": "300ms"}], ids=["bytes", "time"])
def test_lagging_replica_gets_no_reads(cluster, rt, routing_table, paused_replica, limit):
    px = rt(health_check_period="100ms", **limit)
    with px.connect() as c:
        # Not behind to begin with: WAL the primary has not sent yet (its commits do not wait
        # for the flush) counts against the 1 kB limit until the next check after it arrives.
        wait_for(lambda: where(cluster, c) == "replica", timeout=10,
                 what="reads on the replica before the pause")
        paused_replica()
        with cluster.su(dbname="appdb") as su:  # another client's writes: WAL to replay
            su.execute("INSERT INTO rt_items (v) SELECT 'lag' FROM generate_series(1, 100)")
            su.execute("SELECT pg_sleep(0.05)")
            su.execute("INSERT INTO rt_items (v) VALUES ('lag-last')")
        wait_for(lambda: where(cluster, c) == "primary", timeout=10,
                 what="the lagging replica excluded from reads")
        for _ in range(3):
            assert where(cluster, c) == "primary"
        paused_replica.resume()
        wait_for(lambda: where(cluster, c) == "replica", timeout=10,
                 what="reads back on the replica once it caught up")


def test_read_your_writes_lsn_returns_to_the_replica_once_replayed(cluster, rt, routing_table,
                                                                   paused_replica):
    px = rt(read_your_writes="lsn", health_check_period="100ms")
    with px.connect() as writer:
        paused_replica()
        assert insert_one(cluster, writer, "l2") == "primary"
        for _ in range(3):
            assert where(cluster, writer) == "primary"
        paused_replica.resume()
        wait_for(lambda: where(cluster, writer) == "replica", timeout=10,
                 what="the writer's reads back on the replica once it replayed the write")
        assert writer.execute("SELECT count(*) FROM rt_items WHERE v = 'l2'").fetchone()[0] == 1


# ---- a replica that stops ------------------------------------------------------------------


@pytest.fixture(scope="module")
def replica2(cluster):
    """A second streaming replica of the shared primary that tests may stop and start."""
    out = subprocess.run([str(cluster_sh()), "add-replica", str(cluster.dir), "replica2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    port = int(out.stdout.strip().split("PORT=")[1])
    yield port
    subprocess.run([str(cluster_sh()), "remove-node", str(cluster.dir), "replica2"],
                   capture_output=True, timeout=60)


def cluster_sh():
    return os.path.join(os.path.dirname(__file__), "..", "cluster.sh")


def test_stopped_replica_gets_no_reads_and_no_client_sees_an_error(cluster, rt, replica2):
    px = rt(log_level="debug", nodes={
        "primary": {"host": "127.0.0.1", "port": cluster.primary_port, "role": "primary"},
        "replica2": {"host": "127.0.0.1", "port": replica2, "role": "replica"},
    })

    def port_of(c):
        return int(c.execute("SELECT inet_server_port()").fetchone()[0])

    node = [str(cluster.dir), "replica2"]
    with px.connect() as c:
        assert {port_of(c) for _ in range(3)} == {replica2}
        subprocess.run([str(cluster_sh()), "stop-node", *node], check=True, timeout=60)
        try:
            # its idle server connection hears the shutdown and is closed, never handed out
            wait_for(lambda: "idle connection" in px.log_text(), timeout=5,
                     what="pgmux closing the stopped replica's idle connection")
            assert [port_of(c) for _ in range(5)] == [cluster.primary_port] * 5
        finally:
            subprocess.run([str(cluster_sh()), "start-node", *node], check=True,
                           timeout=60)
        wait_for(lambda: port_of(c) == replica2, timeout=15,
                 what="reads back on the restarted replica")
