"""Real drivers through pgmux in transaction pooling mode (issue 3): pgbench in its three
query modes, psycopg 3 with every statement prepared server-side and in pipeline mode, JDBC
(pgjdbc) past prepareThreshold and with batch inserts, node-postgres named statements,
psycopg2 named cursors, and 200 clients over a pool of 10 that must not lose or duplicate a
row. Server connections are counted in pg_stat_activity while they run."""

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import psycopg2
import pytest

from helpers import Background

HERE = Path(__file__).resolve().parent
PGBIN = Path(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"))
PGJDBC_JAR = Path("/usr/share/java/postgresql.jar")


@pytest.fixture
def txn(pgmux):
    def start(**kw):
        kw.setdefault("pool_mode", "transaction")
        return pgmux(**kw)

    return start


def direct(cluster, dbname="appdb"):
    """app's own direct connection to the primary (unix socket, trust), autocommit."""
    return psycopg.connect(host=cluster.socket_dir, port=cluster.primary_port, user="app",
                           dbname=dbname, autocommit=True)


@pytest.fixture
def table(cluster):
    """Factory: table(name, columns) creates appdb.name (dropped first and at teardown)."""
    made = []

    def create(name, columns):
        with direct(cluster) as c:
            c.execute(f"DROP TABLE IF EXISTS {name}")
            c.execute(f"CREATE TABLE {name} ({columns})")
        made.append(name)
        return name

    yield create
    with direct(cluster) as c:
        for name in made:
            c.execute(f"DROP TABLE IF EXISTS {name}")


def run(cmd, timeout, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


# ---- pgbench ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pgbench_db(cluster):
    """Database txn_pgbench owned by app, initialised by pgbench -i (scale 1) over a direct
    connection, so that the pgbench tables disturb no other test."""
    with cluster.su() as su:
        su.execute("DROP DATABASE IF EXISTS txn_pgbench")
        su.execute("CREATE DATABASE txn_pgbench OWNER app")
    r = run([str(PGBIN / "pgbench"), "-i", "-q", "-s", "1", "-h", cluster.socket_dir,
             "-p", str(cluster.primary_port), "-U", "app", "txn_pgbench"], timeout=120)
    assert r.returncode == 0, f"pgbench -i failed:\n{r.stdout}\n{r.stderr}"
    yield "txn_pgbench"
    with cluster.su() as su:
        su.execute("DROP DATABASE IF EXISTS txn_pgbench WITH (FORCE)")


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench(txn, conn_peak, pgbench_db, mode):
    """pgbench -M simple/extended/prepared, 50 clients (-j 2) for 5 s over max_open_conns=10:
    zero failed or aborted transactions, and never more than 10 server connections.

    simple and extended run the default TPC-B-like script (explicit transactions). prepared runs
    the select-only script: pgbench 15 prepares a script's statements with a synchronous
    PQprepare when a client first runs it, which blocks its whole thread while that client
    waits for a server connection; if the thread's other clients hold every server connection
    inside explicit transactions, nobody can finish (a client-side deadlock any transaction
    pooler reproduces). Prepared statements inside explicit transactions are covered by the
    JDBC and psycopg tests."""
    px = txn(max_open_conns=10, query_wait_timeout="30s")
    script = ["-S"] if mode == "prepared" else []
    peak = conn_peak(user="app", dbname=pgbench_db, interval=0.02)
    env = dict(os.environ, PGPASSWORD="app-secret")
    r = run([str(PGBIN / "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(px.port), "-U", "app",
             "-c", "50", "-j", "2", "-T", "5", "-M", mode, *script, pgbench_db], timeout=120,
            env=env)
    top = peak.stop()
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"pgbench exit status {r.returncode}:\n{out}"
    assert "aborted" not in out, out
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert processed and failed, f"unexpected pgbench output:\n{out}"
    assert int(failed.group(1)) == 0, out
    assert int(processed.group(1)) >= 100, out
    assert 1 <= top <= 10, f"peak server connections {top} (max_open_conns 10)"
    assert peak.samples >= 20


# ---- psycopg 3 -------------------------------------------------------------------------------

QUERIES = [
    ("SELECT %s::int * 2", lambda i: i * 2),
    ("SELECT %s::text || '!'", lambda i: f"{i}!"),
    ("SELECT %s::int + 1000", lambda i: i + 1000),
]


def test_psycopg_every_statement_prepared(txn):
    """psycopg 3 with prepare_threshold=0 (every statement Parse'd with a name, then only
    Bind/Execute): 12 clients over 4 server connections, 30 rounds each, in autocommit and in
    explicit transactions. Clients use the queries in different orders, so psycopg's names
    (_pg3_0, _pg3_1, ...) mean different queries in different clients. Then a client whose
    psycopg cache holds only 2 statements rotates 5, so psycopg sends DEALLOCATE all along."""
    px = txn(max_open_conns=4, query_wait_timeout="30s")

    def client(n):
        order = QUERIES[n % 3:] + QUERIES[: n % 3]
        backends = set()
        with psycopg.connect(px.dsn(), autocommit=True, prepare_threshold=0) as conn:
            for i in range(30):
                if i % 3 == 2:
                    with conn.transaction():
                        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                        for sql, want in order:
                            assert conn.execute(sql, [i]).fetchone() == (want(i),)
                        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
                else:
                    for sql, want in order:
                        assert conn.execute(sql, [i]).fetchone() == (want(i),)
                backends.add(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        return backends

    tasks = [Background(client, n) for n in range(12)]
    seen = [t.result(timeout=60) for t in tasks]
    assert len(set().union(*seen)) <= 4
    assert max(len(s) for s in seen) >= 2, "no client's statements ever ran on a second server"

    rotating = [(f"SELECT %s::int + {k}", k) for k in range(5)]
    with psycopg.connect(px.dsn(), autocommit=True, prepare_threshold=0) as conn:
        conn.prepared_max = 2
        for rnd in range(10):
            for sql, k in rotating:
                assert conn.execute(sql, [rnd]).fetchone() == (rnd + k,)


def test_thousands_of_prepared_statements_per_client(txn):
    """Applications cache many statements per connection (Rails: 1,000 by default). Two
    clients prepare 3,000 distinct statements each, over 2 server connections that keep 200
    apiece (so the servers evict and re-create all the time), then run them all again in
    another order. psycopg keeps 1,500 and DEALLOCATEs the oldest beyond that, so the
    session's own statements are removed and re-added throughout. Every answer must be its
    own statement's; pgmux looks statements up by hash, so this stays fast."""
    px = txn(max_open_conns=2, max_prepared_statements=200, query_wait_timeout="60s")
    n = 3000

    def client(seed):
        with psycopg.connect(px.dsn(), autocommit=True, prepare_threshold=0) as conn:
            conn.prepared_max = 1500
            order = list(range(n))
            for rnd in range(2):
                for k in order:
                    got = conn.execute(f"SELECT %s::int + {k}, {seed}", [rnd]).fetchone()
                    assert got == (rnd + k, seed), (k, got)
                order = order[seed::2] + order[1 - seed::2]
                order.reverse()
            return conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]

    started = time.monotonic()
    jobs = [Background(client, seed) for seed in (0, 1)]
    on_server = [j.result(timeout=240) for j in jobs]
    # each server connection holds at most max_prepared_statements of pgmux's statements
    assert all(c <= 200 for c in on_server), on_server
    # 12,000 executions; a linear scan over 1,500 names per Bind would still finish, so this
    # only catches something far worse (quadratic work per statement)
    assert time.monotonic() - started < 200


def test_psycopg_pipeline_mode(txn, table):
    """psycopg 3 pipeline mode: 8 clients over 3 server connections send batches of queries
    before reading; a transaction inside a pipeline; an error inside a pipeline skips the
    rest of its batch and leaves the client usable."""
    tbl = table("txn_pipe", "client int, i int")
    px = txn(max_open_conns=3, query_wait_timeout="30s")

    def client(n):
        with px.connect() as conn:
            for rnd in range(10):
                with conn.pipeline():
                    curs = [conn.execute("SELECT %s::int, %s::int", [n, i]) for i in range(10)]
                assert [c.fetchone() for c in curs] == [(n, i) for i in range(10)]
                with conn.pipeline(), conn.transaction():
                    for i in range(5):
                        conn.execute(f"INSERT INTO {tbl} VALUES (%s, %s)", [n, rnd * 5 + i])
                    pid = conn.execute("SELECT pg_backend_pid()")
                    pid2 = conn.execute("SELECT pg_backend_pid()")
                assert pid.fetchone() == pid2.fetchone()
            with pytest.raises(psycopg.errors.DivisionByZero):
                with conn.pipeline():
                    conn.execute("SELECT 1")
                    conn.execute("SELECT 1 / (g - g) FROM generate_series(1, 1) g")
                    conn.execute("SELECT 3")
            assert conn.execute("SELECT 'after the error'").fetchone() == ("after the error",)
            assert conn.execute("SELECT txid_current_if_assigned() IS NULL").fetchone() == (True,)
        return n

    tasks = [Background(client, n) for n in range(8)]
    assert sorted(t.result(timeout=60) for t in tasks) == list(range(8))
    with px.connect() as conn:
        assert conn.execute(f"SELECT count(*), count(DISTINCT (client, i)) FROM {tbl}") \
            .fetchone() == (400, 400)


# ---- JDBC ------------------------------------------------------------------------------------


def test_jdbc_prepared_statements_and_batch(txn, table, tmp_path, conn_peak):
    """pgjdbc: 10 threads over max_open_conns=4 reuse PreparedStatements 50 times each (past
    prepareThreshold, so as named server-side statements), then a 1000-row batch insert in a
    transaction (tests/integration/java/TxnPooling.java checks every result, and that the
    extra_float_digits and application_name pgjdbc SETs hold on every server connection)."""
    for tool in ("javac", "java"):
        assert shutil.which(tool), f"{tool} not found (make deps installs openjdk-17-jdk-headless)"
    assert PGJDBC_JAR.is_file(), f"{PGJDBC_JAR} missing (make deps: libpostgresql-jdbc-java)"
    r = run(["javac", "-d", str(tmp_path), "-cp", str(PGJDBC_JAR),
             str(HERE / "java" / "TxnPooling.java")], timeout=180)
    assert r.returncode == 0, f"javac failed:\n{r.stdout}\n{r.stderr}"

    tbl = table("txn_jdbc_batch", "id int, label text")
    # pgjdbc runs SET extra_float_digits = 3 after login: tracked, it is replayed instead of
    # pinning every JDBC client to its first server connection.
    px = txn(max_open_conns=4, query_wait_timeout="30s", track_parameters="extra_float_digits")
    peak = conn_peak(user="app", dbname="appdb")
    threads, iterations, batch = 10, 50, 1000
    url = f"jdbc:postgresql://127.0.0.1:{px.port}/appdb?ApplicationName=txn-jdbc"
    r = run(["java", "-cp", f"{tmp_path}:{PGJDBC_JAR}", "TxnPooling", url, "app", "app-secret",
             str(threads), str(iterations), str(batch)], timeout=180)
    top = peak.stop()
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"TxnPooling failed ({r.returncode}):\n{out}"
    m = re.search(r"SUMMARY threads=(\d+) executions=(\d+) max_backends_per_thread=(\d+)"
                  r" distinct_backends=(\d+) server_prepared=(\w+)", r.stdout)
    assert m, out
    assert int(m.group(2)) == threads * (iterations * 2 + 10), out
    assert m.group(5) == "true", f"statements never became server-prepared:\n{out}"
    assert int(m.group(3)) >= 2, f"no thread ever moved to another server connection:\n{out}"
    assert int(m.group(4)) <= 4, out
    assert f"BATCH rows={batch}" in r.stdout
    assert top <= 4
    with px.connect() as conn:
        assert conn.execute(f"SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {tbl}") \
            .fetchone() == (batch, batch, 0, batch - 1)


# ---- node-postgres ---------------------------------------------------------------------------


def test_node_postgres_named_statements(txn, table, conn_peak):
    """node-postgres (pg from npm): a pg.Pool of 20 over max_open_conns=5 runs 400 concurrent
    queries with named prepared statements, a fifth of them in transactions that insert
    (tests/integration/node/script.js checks every result)."""
    nodedir = HERE / "node"
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} not found (make deps installs nodejs and npm)"
    if not (nodedir / "node_modules").is_dir():
        r = run(["npm", "ci", "--no-audit", "--no-fund"], timeout=300, cwd=nodedir)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"

    tbl = table("txn_node_ids", "id int")
    px = txn(max_open_conns=5, query_wait_timeout="30s")
    peak = conn_peak(user="app", dbname="appdb")
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(px.port), PGUSER="app",
               PGPASSWORD="app-secret", PGDATABASE="appdb")
    r = run(["node", "script.js", "400"], timeout=120, cwd=nodedir, env=env)
    top = peak.stop()
    assert r.returncode == 0, f"script.js failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["queries"] == 400 and result["inserted"] == 80, result
    assert 2 <= result["backends"] <= 5, result
    assert top <= 5
    with px.connect() as conn:
        assert conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {tbl}").fetchone() \
            == (80, 80)


# ---- psycopg2 named cursors ------------------------------------------------------------------


def test_psycopg2_named_cursor_inside_a_transaction(txn):
    """psycopg2 server-side cursors (DECLARE/FETCH in batches of itersize, and fetchmany) in
    one transaction hold one server connection from start to end, while four other clients
    keep working on the other server connection of the pool of 2."""
    px = txn(max_open_conns=2, query_wait_timeout="10s")
    conn = psycopg2.connect(px.dsn())
    stop = threading.Event()
    cursor_pid = []
    others = []

    def other(i):
        pids = []
        with px.connect(application_name=f"other-{i}") as c:
            while not stop.is_set():
                pids.append(c.execute("SELECT pg_backend_pid()").fetchone()[0])
                time.sleep(0.005)
        return pids

    try:
        cur = conn.cursor(name="big")
        cur.itersize = 100
        cur.execute("SELECT g, pg_backend_pid() FROM generate_series(1, 5000) g")
        others = [Background(other, i) for i in range(4)]
        total, pids = 0, set()
        for n, (g, pid) in enumerate(cur, 1):
            total += g
            pids.add(pid)
            if n % 500 == 0:
                time.sleep(0.05)  # let the others run meanwhile
        assert total == 5000 * 5001 // 2
        assert len(pids) == 1
        cursor_pid = list(pids)

        cur2 = conn.cursor(name="second")
        cur2.execute("SELECT g FROM generate_series(1, 1000) g")
        got = []
        while True:
            rows = cur2.fetchmany(300)
            if not rows:
                break
            got += [r[0] for r in rows]
            time.sleep(0.05)
        assert got == list(range(1, 1001))
        plain = conn.cursor()
        plain.execute("SELECT pg_backend_pid()")
        assert plain.fetchone()[0] == cursor_pid[0]
        # Stop the others while the transaction still holds its connection: after the commit
        # that connection is theirs to use.
        stop.set()
        seen = [t.result(timeout=30) for t in others]
        conn.commit()
    finally:
        stop.set()
        conn.close()
    assert all(len(s) >= 5 for s in seen), [len(s) for s in seen]
    assert all(cursor_pid[0] not in s for s in seen), "another client ran inside the cursor's txn"


# ---- many clients, no row lost ---------------------------------------------------------------


def test_200_clients_over_10_server_connections(txn, table, conn_peak):
    """200 clients, each running 50 transactions that insert a unique id, over
    max_open_conns=10: every id arrives exactly once, and pg_stat_activity never shows more
    than 10 server connections."""
    tbl = table("txn_ids", "id int, client int")
    px = txn(max_open_conns=10, max_client_conn=300, query_wait_timeout="60s", workers=4)
    peak = conn_peak(user="app", dbname="appdb", interval=0.05)
    clients, per_client = 200, 50
    barrier = threading.Barrier(clients)

    def client(n):
        with px.connect() as conn:
            barrier.wait(timeout=60)
            for k in range(per_client):
                with conn.transaction():
                    conn.execute(f"INSERT INTO {tbl} (id, client) VALUES (%s, %s)",
                                 [n * per_client + k, n])
        return n

    started = time.monotonic()
    tasks = [Background(client, n) for n in range(clients)]
    assert sorted(t.result(timeout=120) for t in tasks) == list(range(clients))
    elapsed = time.monotonic() - started
    top = peak.stop()
    total = clients * per_client
    with px.connect() as conn:
        row = conn.execute(f"SELECT count(*), count(DISTINCT id), min(id), max(id),"
                           f" count(DISTINCT client) FROM {tbl}").fetchone()
    assert row == (total, total, 0, total - 1, clients), row
    assert 1 <= top <= 10, f"peak server connections {top} (max_open_conns 10)"
    print(f"200 clients x 50 transactions in {elapsed:.1f}s, peak {top} server connections")
