"""Statement classification (router/classify.c) checked against a real hot standby.

The classifier's promise is one-sided: whatever it calls a read runs on a replica. So every
text here that it calls a read is run on the streaming replica, inside a transaction that is
rolled back, and must succeed; and the writes it must catch (data-modifying CTEs, lock clauses,
SELECT INTO, nextval, a learned VOLATILE function, EXPLAIN ANALYZE of a write, COPY FROM,
SERIALIZABLE, ...) are run there too and must be refused by the standby, which shows they
really need the primary. The classifier runs through build/<variant>/tests/classify_cli, next
to the pgmux binary under test, so it is the same sanitizer build.
"""

import os
import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]

SETUP = """
DROP SCHEMA IF EXISTS classify_it CASCADE;
CREATE SCHEMA classify_it;
CREATE TABLE classify_it.t (id int PRIMARY KEY, a int, note text);
INSERT INTO classify_it.t SELECT g, g * 10, 'row ' || g FROM generate_series(1, 5) g;
CREATE SEQUENCE classify_it.s;
CREATE TABLE classify_it.log (at timestamptz DEFAULT now());
CREATE FUNCTION classify_it.touch() RETURNS int LANGUAGE sql VOLATILE
    AS 'INSERT INTO classify_it.log DEFAULT VALUES RETURNING 1';
CREATE FUNCTION classify_it.twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
"""

# What the topology monitor would have learned from the primary's catalog.
VOLATILE = "classify_it.touch,touch"

READS = [
    "SELECT a FROM classify_it.t WHERE id = 1",
    "select id, note from classify_it.t where id in (1, 2, 3) order by id limit 2",
    "SELECT count(*), max(a) FROM classify_it.t",
    "SELECT classify_it.twice(a) FROM classify_it.t",
    "SELECT now(), random(), pg_is_in_recovery(), pg_catalog.lower('X')",
    "TABLE classify_it.t",
    "VALUES (1, 'a'), (2, 'b')",
    "SHOW search_path",
    "WITH x AS (SELECT * FROM classify_it.t WHERE a > 10) SELECT count(*) FROM x",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) "
    "SELECT sum(n) FROM r",
    "SELECT * FROM classify_it.t t1 JOIN classify_it.t t2 USING (id) "
    "WHERE EXISTS (SELECT 1 FROM classify_it.t t3 WHERE t3.id = t1.id)",
    "SELECT * FROM classify_it.t FOR READ ONLY",
    "SELECT 'nextval(1)', $$ FOR UPDATE $$, $q$ INSERT $q$, E'it\\'s; DELETE'",
    "/* DELETE FROM classify_it.t */ SELECT 1 -- ; INSERT",
    "SELECT \"NEXTVAL\" FROM (SELECT 1 AS \"NEXTVAL\") s",
    "EXPLAIN INSERT INTO classify_it.t VALUES (99, 99)",
    "EXPLAIN (COSTS off) UPDATE classify_it.t SET a = 0",
    "EXPLAIN (ANALYZE false) DELETE FROM classify_it.t",
    "EXPLAIN (ANALYZE 0) DELETE FROM classify_it.t",
    "EXPLAIN SELECT * FROM classify_it.t FOR UPDATE",
    "EXPLAIN ANALYZE SELECT * FROM classify_it.t",
    "EXPLAIN SELECT nextval('classify_it.s')",
    "BEGIN READ ONLY",
    "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    "SET TRANSACTION READ ONLY",
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SAVEPOINT sp",
    "COMMIT",
    "ROLLBACK",
    "/* pgmux: replica */ SELECT 1",
]

# Texts a read-only standby executes, but whose copy-out the driver reads differently.
COPY_READS = [
    "COPY classify_it.t TO STDOUT",
    "COPY (SELECT id FROM classify_it.t WHERE a > 20) TO STDOUT WITH (FORMAT csv)",
]

# Writes the classifier must catch, each refused by the standby.
WRITES = [
    "INSERT INTO classify_it.t VALUES (100, 1, 'x')",
    "UPDATE classify_it.t SET a = a + 1 WHERE id = 1",
    "DELETE FROM classify_it.t WHERE id = 1",
    "WITH d AS (DELETE FROM classify_it.t WHERE id = 2 RETURNING *) SELECT * FROM d",
    "WITH o AS (WITH i AS (INSERT INTO classify_it.t VALUES (101, 1, 'y') RETURNING id) "
    "SELECT id FROM i) SELECT * FROM o",
    "SELECT * FROM classify_it.t FOR UPDATE",
    "SELECT * FROM classify_it.t FOR NO KEY UPDATE",
    "SELECT * FROM classify_it.t FOR SHARE",
    "SELECT * FROM classify_it.t FOR KEY SHARE",
    "SELECT * FROM (SELECT * FROM classify_it.t FOR UPDATE) s",
    "SELECT id FROM classify_it.t WHERE id IN (SELECT id FROM classify_it.t FOR KEY SHARE)",
    "SELECT * INTO classify_it.t2 FROM classify_it.t",
    "SELECT nextval('classify_it.s')",
    "SELECT NEXTVAL('classify_it.s')",
    "SELECT pg_catalog.nextval('classify_it.s')",
    'SELECT "nextval"(\'classify_it.s\')',
    "SELECT setval('classify_it.s', 10)",
    "SELECT a FROM classify_it.t WHERE id = nextval('classify_it.s')",
    "SELECT classify_it.touch()",
    "SELECT txid_current()",
    "SELECT pg_current_xact_id()",
    "SELECT pg_current_wal_lsn()",
    "SELECT pg_notify('ch', 'x')",
    "SELECT lo_create(0)",
    "EXPLAIN ANALYZE INSERT INTO classify_it.t VALUES (102, 1, 'z')",
    "EXPLAIN (ANALYZE, COSTS off) UPDATE classify_it.t SET a = 0",
    "EXPLAIN ANALYZE SELECT nextval('classify_it.s')",
    "EXPLAIN ANALYZE SELECT * FROM classify_it.t FOR UPDATE",
    "CREATE TABLE classify_it.t3 (a int)",
    "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "/* pgmux: primary */ SELECT * FROM classify_it.t FOR UPDATE",
]

COPY_WRITES = ["COPY classify_it.t FROM STDIN"]

# SQLSTATE classes a standby answers a write with: 25 (read-only transaction, 25006), 55
# (recovery is in progress), 0A (not supported in a hot standby, e.g. serializable), XX
# ("cannot assign OIDs during recovery", an internal error). Class 42 (a missing object)
# would mean a broken test, not a refusal.
REFUSED_CLASSES = ("25", "55", "0A", "XX")


def _classify_cli():
    base = Path(os.environ.get("PGMUX_BIN") or REPO / "build/asan/pgmux").parent
    cli = base / "tests" / "classify_cli"
    if not cli.is_file():
        pytest.fail(f"{cli} is missing (make all asan builds it)")
    return str(cli)


def classify(texts):
    data = b"\0".join(t.encode() for t in texts)
    proc = subprocess.run(
        [_classify_cli(), "-v", VOLATILE], input=data, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(texts), proc.stdout
    return [tuple(line.split("\t", 1)) for line in lines]


@pytest.fixture(scope="module")
def standby(cluster):
    """The schema above on the primary, replayed on the replica; a replica connection."""
    token = f"setup {time.time_ns()}"
    with cluster.su() as c:
        # one simple Query: one transaction, so the comment shows on the replica with the rest
        c.execute(SETUP + f"COMMENT ON SCHEMA classify_it IS '{token}';")
    # The test cluster runs with synchronous_commit = off, so the primary's WAL position says
    # little about when a commit reaches the replica: wait for this setup's mark to show there.
    deadline = time.monotonic() + 30
    with cluster.su(replica=True) as r:
        while True:
            row = r.execute(
                "SELECT obj_description(oid, 'pg_namespace') = %s AS ok"
                " FROM pg_namespace WHERE nspname = 'classify_it'",
                [token],
            ).fetchone()
            if row is not None and row["ok"]:
                break
            assert time.monotonic() < deadline, "the replica did not replay the test schema"
            time.sleep(0.05)
    conn = psycopg.connect(
        host=cluster.socket_dir,
        port=cluster.replica_port,
        user="postgres",
        dbname="postgres",
        autocommit=True,
    )
    yield conn
    conn.close()
    with cluster.su() as c:
        c.execute("DROP SCHEMA IF EXISTS classify_it CASCADE")


def run_on_standby(conn, text, copy=False):
    """Run text on the standby in a transaction that is rolled back (transaction-control texts
    run as they are, between a BEGIN and a ROLLBACK where they need one); return the error or
    None."""
    pgconn = conn.pgconn
    first = re.sub(r"^(\s|/\*.*?\*/)*", "", text).split(None, 1)[0].upper()
    try:
        if first in ("BEGIN", "START"):
            conn.execute(text)
            conn.execute("SELECT 1")
            conn.execute("ROLLBACK")
            return None
        conn.execute("BEGIN")
        try:
            if copy:
                with conn.cursor().copy(text) as cp:
                    if "FROM STDIN" in text:
                        cp.write(b"200\t1\tz\n")
                    else:
                        for _ in cp:
                            pass
            else:
                # the simple protocol, as a Query message would carry the text
                res = pgconn.exec_(text.encode())
                if res.status not in (
                    psycopg.pq.ExecStatus.COMMAND_OK,
                    psycopg.pq.ExecStatus.TUPLES_OK,
                ):
                    return res.error_field(psycopg.pq.DiagnosticField.SQLSTATE).decode()
                if first in ("SET", "SAVEPOINT"):
                    conn.execute("SELECT 1")  # the setting takes effect at the first query
        finally:
            conn.pgconn.exec_(b"ROLLBACK")
        return None
    except psycopg.Error as e:
        if conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.pgconn.exec_(b"ROLLBACK")
        return e.sqlstate or "?????"


def test_reads_run_on_the_standby(standby):
    texts = READS + COPY_READS
    verdicts = classify(texts)
    wrong = [(t, v) for t, v in zip(texts, verdicts) if v[0] != "read"]
    assert not wrong, f"classified as writes: {wrong}"
    refused = []
    for t in READS:
        err = run_on_standby(standby, t)
        if err is not None:
            refused.append((t, err))
    for t in COPY_READS:
        err = run_on_standby(standby, t, copy=True)
        if err is not None:
            refused.append((t, err))
    assert not refused, f"reads the standby refused: {refused}"


def test_writes_need_the_primary(standby):
    texts = WRITES + COPY_WRITES
    verdicts = classify(texts)
    wrong = [(t, v) for t, v in zip(texts, verdicts) if v[0] != "write"]
    assert not wrong, f"classified as reads: {wrong}"
    accepted = []
    for t in WRITES:
        err = run_on_standby(standby, t)
        if err is None or not err.startswith(REFUSED_CLASSES):
            accepted.append((t, err))
    for t in COPY_WRITES:
        err = run_on_standby(standby, t, copy=True)
        if err is None or not err.startswith(REFUSED_CLASSES):
            accepted.append((t, err))
    assert not accepted, f"writes the standby did not refuse as read-only: {accepted}"


def test_unparsable_and_unknown_go_to_the_primary(standby):
    texts = [
        "SELEC 1",
        "SELECT (",
        "DO $$ BEGIN PERFORM 1; END $$",
        "LOCK TABLE classify_it.t",
        "CALL classify_it.nope()",
        "SET search_path = classify_it",
        "LISTEN ch",
    ]
    assert [v[0] for v in classify(texts)] == ["write"] * len(texts)
