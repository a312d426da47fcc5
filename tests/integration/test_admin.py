"""The admin console (issue 6, item 1): clients of the virtual database `pgmux` are answered by
pgmux itself. Every command through psql (-X -A -t, output parsed) and through psycopg in the
simple and the extended protocol (prepare=True, binary=True); typed columns; stats_users limited
to SHOW; other users refused; PAUSE holding new transactions until RESUME; KILL dropping a
database's clients; SET changing a value in SHOW CONFIG and in behaviour; RELOAD taking the
SIGHUP path; SHUTDOWN ending the process with status 0."""

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import psycopg
import psycopg.errors
import pytest

import pgwire
from conftest import PASSWORDS
from helpers import Background, wait_for

ADMIN_USERS = [("admin", "admin-secret"), ("watcher", "watcher-secret")]

INT8, INT4, TEXT, BOOL, TIMESTAMPTZ = 20, 23, 25, 16, 1184


@pytest.fixture
def console(pgmux):
    """Factory: a pgmux with admin_users = admin and stats_users = watcher."""

    def start(**kw):
        kw.setdefault("admin_users", "admin")
        kw.setdefault("stats_users", "watcher")
        kw.setdefault("userlist", list(PASSWORDS.items()) + ADMIN_USERS)
        return pgmux(**kw)

    return start


def admin_conn(px, user="admin", **kw):
    password = dict(ADMIN_USERS)[user]
    return px.connect(user=user, password=password, dbname="pgmux", **kw)


def psql(px, sql, user="admin", check=True):
    """Run sql through psql on the console; rows as lists of strings."""
    env = dict(os.environ, PGPASSWORD=dict(ADMIN_USERS).get(user, PASSWORDS.get(user, "")),
               PGCONNECT_TIMEOUT="10")
    r = subprocess.run(
        ["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
         str(px.port), "-U", user, "-d", "pgmux", "-c", sql],
        capture_output=True, text=True, timeout=30, env=env)
    if check:
        assert r.returncode == 0, f"psql {sql!r} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        return [line.split("|") for line in r.stdout.splitlines() if line]
    return r


def rows_dict(cur):
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def run3(conn, sql):
    """sql in the simple protocol, then prepared (extended, text), then binary (extended): the
    three must agree on column names and types, and give rows as dicts."""
    out = []
    for kw in ({}, {"prepare": True}, {"binary": True}):
        cur = conn.cursor()
        cur.execute(sql, **kw)
        out.append(([(d.name, d.type_code) for d in cur.description], rows_dict(cur)))
    assert out[0][0] == out[1][0] == out[2][0], out
    return out


def test_show_version_config_nodes(console, cluster):
    px = console()
    assert psql(px, "SHOW VERSION") == [["pgmux 0.1.0"]]
    with admin_conn(px) as c:
        for desc, rows in run3(c, "SHOW VERSION"):
            assert desc == [("version", TEXT)]
            assert rows == [{"version": "pgmux 0.1.0"}]

        for desc, rows in run3(c, "show config;"):
            assert desc == [("key", TEXT), ("value", TEXT), ("default", TEXT),
                            ("changeable", BOOL)]
            cfg = {r["key"]: r for r in rows}
            assert cfg["listen_port"]["value"] == str(px.port)
            assert cfg["listen_port"]["default"] == "6432"
            assert cfg["listen_port"]["changeable"] is False
            assert cfg["query_wait_timeout"]["value"] == "30s"
            assert cfg["query_wait_timeout"]["default"] == "120s"
            assert cfg["query_wait_timeout"]["changeable"] is True
            assert cfg["admin_users"]["value"] == "admin"
            assert cfg["pool_mode"]["value"] == "session"

        for desc, rows in run3(c, "SHOW NODES"):
            assert desc == [("name", TEXT), ("host", TEXT), ("port", INT4), ("role", TEXT),
                            ("healthy", BOOL), ("lsn", TEXT), ("lag_bytes", INT8),
                            ("lag_ms", INT8), ("fenced", BOOL), ("weight", INT4),
                            ("connections", INT8), ("removed", BOOL),
                            ("last_check", TIMESTAMPTZ)]
            nodes = {r["name"]: r for r in rows}
            assert nodes["primary"]["port"] == cluster.primary_port
            assert nodes["replica"]["port"] == cluster.replica_port
            assert nodes["primary"]["role"] == "primary"
            assert nodes["replica"]["role"] == "replica"
            assert all(isinstance(r["connections"], int) and r["removed"] is False
                       and r["healthy"] is True for r in rows)

    cfg = {r[0]: r for r in psql(px, "SHOW CONFIG")}
    assert cfg["listen_port"][1:] == [str(px.port), "6432", "f"]
    nodes = psql(px, "SHOW NODES")
    assert sorted(int(r[2]) for r in nodes) == sorted([cluster.primary_port, cluster.replica_port])


def test_show_clients_servers_pools(console):
    px = console(pool_mode="transaction")
    app = px.connect(application_name="it-app")
    app.execute("SELECT 1")
    busy = px.connect()
    busy.execute("BEGIN")
    busy.execute("SELECT 1")  # holds a server connection: sv_active
    try:
        with admin_conn(px) as c:
            for desc, rows in run3(c, "SHOW CLIENTS"):
                types = dict(desc)
                assert types["port"] == INT4 and types["id"] == TEXT
                assert types["connect_time"] == TIMESTAMPTZ and types["wait_us"] == INT8
                apps = [r for r in rows if r["user"] == "app"]
                assert sorted(r["state"] for r in apps) == ["active", "idle"], apps
                assert all(r["database"] == "appdb" and r["addr"] == "127.0.0.1" for r in apps)
                assert all(r["connect_time"].year >= 2024 for r in apps)
                # ids as log lines spell them: worker.generation
                assert all(r["id"].startswith(f"{r['worker']}.") for r in apps)
                assert sorted(r["application_name"] or "" for r in apps) == ["", "it-app"]
                mine = [r for r in rows if r["user"] == "admin"]
                assert [r["state"] for r in mine] == ["admin"]

            for desc, rows in run3(c, "SHOW SERVERS"):
                assert dict(desc)["remote_pid"] == INT4
                srv = [r for r in rows if r["user"] == "app" and r["database"] == "appdb"]
                assert {r["state"] for r in srv} <= {"active", "idle"}
                assert "active" in {r["state"] for r in srv}
                assert all(isinstance(r["remote_pid"], int) and r["remote_pid"] > 0 for r in srv)
                active = [r for r in srv if r["state"] == "active"]
                assert all(r["link"] is not None for r in active)
                client_ids = {r["id"] for r in rows_dict(c.execute("SHOW CLIENTS"))}
                assert {r["link"] for r in active} <= client_ids

            for desc, rows in run3(c, "SHOW POOLS"):
                assert [d for d in desc if d[1] == INT8][0] == ("cl_active", INT8)
                pools = [r for r in rows if r["user"] == "app" and r["database"] == "appdb"]
                assert len(pools) == 1, rows
                p = pools[0]
                assert p["mode"] == "transaction"
                assert p["cl_active"] == 2 and p["cl_waiting"] == 0
                assert p["sv_active"] == 1
                assert p["sv_active"] + p["sv_idle"] + p["sv_used"] >= 1
                assert p["maxwait"] == 0

        pools = psql(px, "SHOW POOLS")
        mine = [r for r in pools if r[0] == "appdb" and r[1] == "app"]
        assert len(mine) == 1 and mine[0][3] == "transaction" and mine[0][4] == "2"
        clients = psql(px, "SHOW CLIENTS")
        assert sum(1 for r in clients if r[1] == "app") == 2
        # psql names itself at login; the console reports it like any client's.
        assert [r[14] for r in clients if r[3] == "admin"] == ["psql"]
        servers = psql(px, "SHOW SERVERS")
        assert any(r[1] == "app" and r[4] == "active" for r in servers)
    finally:
        busy.execute("COMMIT")
        busy.close()
        app.close()


def test_refusals(console):
    px = console()
    # Not in admin_users or stats_users: refused at login with 28000, after authentication.
    with pytest.raises(psycopg.OperationalError, match="not allowed to use the pgmux admin"):
        px.connect(user="app", password="app-secret", dbname="pgmux")
    r = psql(px, "SHOW VERSION", user="app", check=False)
    assert r.returncode != 0 and "not allowed to use the pgmux admin console" in r.stderr
    # A wrong password is a wrong password, whoever it is.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        px.connect(user="admin", password="nope", dbname="pgmux")

    # stats_users: SHOW only.
    with admin_conn(px, user="watcher") as c:
        assert c.execute("SHOW VERSION").fetchone() == ("pgmux 0.1.0",)
        for sql in ("PAUSE", "RESUME", "KILL appdb", "RELOAD", "SHUTDOWN",
                    "SET query_wait_timeout = '1s'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql, prepare=True)
        # The session goes on after each refusal.
        assert c.execute("SHOW VERSION", prepare=True).fetchone() == ("pgmux 0.1.0",)
    r = psql(px, "SHUTDOWN", user="watcher", check=False)
    assert r.returncode != 0 and "only SHOW is allowed" in r.stderr
    assert px.alive()

    with admin_conn(px) as c:
        with pytest.raises(psycopg.errors.SyntaxError) as ei:
            c.execute("SELECT 1")
        assert "unrecognized admin console command" in str(ei.value)
        assert "SHOW POOLS" in ei.value.diag.message_hint
        with pytest.raises(psycopg.errors.SyntaxError):
            c.execute("SHOW TABLES", binary=True)
        with pytest.raises(psycopg.errors.SyntaxError):
            c.execute("SHOW VERSION extra")
        with pytest.raises(psycopg.errors.SyntaxError):
            c.execute("KILL")
        assert c.execute("SHOW VERSION").fetchone() == ("pgmux 0.1.0",)
        # psycopg's own transactions (autocommit off) are accepted as no-ops.
    with admin_conn(px, autocommit=False) as c:
        assert c.execute("SHOW VERSION").fetchone() == ("pgmux 0.1.0",)
        c.commit()
        assert c.execute("SHOW VERSION", binary=True).fetchone() == ("pgmux 0.1.0",)
        c.rollback()


def test_pause_waits_and_holds_until_resume(console):
    px = console(pool_mode="transaction")
    running = px.connect()
    other = px.connect()
    other.execute("SELECT 1")
    running.execute("BEGIN")
    running.execute("SELECT 1")
    with admin_conn(px) as adm:
        # PAUSE waits for the running transaction.
        pause = Background(adm.execute, "PAUSE appdb")
        time.sleep(0.3)
        assert not pause.done(), "PAUSE returned while a transaction was running"
        running.execute("COMMIT")
        pause.result(timeout=10)
        # A new transaction is held.
        held = Background(lambda: other.execute("SELECT 42").fetchone())
        with admin_conn(px) as look:
            # the query may take a while to reach pgmux on a loaded machine: wait until it is
            # held, then check that it stays held
            wait_for(lambda: [p["cl_waiting"] for p in rows_dict(look.execute("SHOW POOLS"))
                              if p["database"] == "appdb"] == [1], what="the client held")
            assert not held.done(), "a transaction ran on a paused database"
            states = [r[3] for r in psql(px, "SHOW CLIENTS") if r[1] == "app"]
            assert "paused" in states, states
        # A second PAUSE of the same database is an error; the first still holds.
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            adm.execute("PAUSE appdb")
        assert not held.done()
        adm.execute("RESUME appdb", prepare=True)
        assert held.result(timeout=10) == (42,)
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            adm.execute("RESUME appdb")

    # PAUSE of everything through psql, then RESUME; a new client's transaction waits for it.
    assert psql(px, "PAUSE") == []
    fresh = Background(lambda: px.connect().execute("SELECT 7").fetchone())
    time.sleep(0.3)
    assert not fresh.done()
    psql(px, "RESUME")
    assert fresh.result(timeout=10) == (7,)
    running.close()
    other.close()


def test_pause_cancel_undoes_it(console):
    px = console(pool_mode="transaction")
    running = px.connect()
    running.execute("BEGIN")
    running.execute("SELECT 1")
    with admin_conn(px) as adm:
        pause = Background(adm.execute, "PAUSE")
        wait_for(lambda: "command=PAUSE db=*" in px.log_text(), what="the PAUSE under way")
        time.sleep(0.1)
        assert not pause.done()
        adm.cancel()
        err = pause.error(timeout=10)
        assert isinstance(err, psycopg.errors.QueryCanceled), err
        running.execute("COMMIT")
        # Not paused any more: a new transaction runs at once.
        assert running.execute("SELECT 3").fetchone() == (3,)
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            adm.execute("RESUME")
    running.close()


def test_kill_drops_clients_and_servers(console, cluster):
    px = console(pool_mode="session")
    victims = [px.connect() for _ in range(3)]
    for v in victims:
        v.execute("SELECT 1")
    bystander = px.connect(dbname="postgres")
    bystander.execute("SELECT 1")
    assert cluster.count(user="app", dbname="appdb") == 3
    with admin_conn(px) as adm:
        adm.execute("KILL appdb", binary=True)
        for v in victims:
            with pytest.raises(psycopg.OperationalError):
                v.execute("SELECT 1")
        wait_for(lambda: cluster.count(user="app", dbname="appdb") == 0,
                 what="appdb server connections closed")
        servers = rows_dict(adm.execute("SHOW SERVERS"))
        assert not [s for s in servers if s["database"] == "appdb"], servers
        # Other databases are untouched.
        assert bystander.execute("SELECT 2").fetchone() == (2,)
        # As in PgBouncer, the killed database stays paused until RESUME.
        comeback = Background(lambda: px.connect().execute("SELECT 5").fetchone())
        time.sleep(0.3)
        assert not comeback.done()
        adm.execute("RESUME appdb")
        assert comeback.result(timeout=10) == (5,)
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            adm.execute("KILL pgmux")
    # Through psql: the other database's client goes too, the console session stays.
    assert psql(px, "KILL postgres; RESUME postgres") == []
    with pytest.raises(psycopg.OperationalError):
        bystander.execute("SELECT 1")
    assert px.connect(dbname="postgres").execute("SELECT 4").fetchone() == (4,)
    bystander.close()
    for v in victims:
        v.close()


def test_set_changes_config_and_behaviour(console):
    px = console(max_client_conn=100)
    with admin_conn(px) as adm:
        adm.execute("SET max_client_conn = 2")
        cfg = {r[0]: r for r in adm.execute("SHOW CONFIG").fetchall()}
        assert cfg["max_client_conn"][1:] == ("2", "1000", True)
        keep = px.connect()  # with the console: 2 clients
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            px.connect()
        adm.execute("SET max_client_conn TO 100", prepare=True)
        px.connect().close()
        keep.close()

        adm.execute("set query_wait_timeout = '250ms'")
        assert psql(px, "SHOW CONFIG") and \
            {r[0]: r[1] for r in psql(px, "SHOW CONFIG")}["query_wait_timeout"] == "250ms"
        # Behaviour: on a paused database a session-pooled login, which waits for a server,
        # now times out after 250 ms instead of 30 s.
        adm.execute("PAUSE appdb")
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="timed out waiting"):
            px.connect(dbname="appdb")
        assert time.monotonic() - t0 < 5
        adm.execute("RESUME appdb")

        with pytest.raises(psycopg.errors.UndefinedObject):
            adm.execute("SET no_such_key = 1")
        with pytest.raises(psycopg.errors.CantChangeRuntimeParam):
            adm.execute("SET listen_port = 7000")
        with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
            adm.execute("SET query_wait_timeout = 'soon'")
        assert "is not a duration" in str(ei.value)
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            adm.execute("SET max_client_conn = 0")
        adm.execute("SET max_db_connections = 3")
        assert {r[0]: r for r in adm.execute("SHOW CONFIG")}["max_db_connections"][1:] \
            == ("3", "0", True)
        adm.execute("SET idle_transaction_timeout = '2s'")
        assert {r[0]: r for r in adm.execute("SHOW CONFIG")}["idle_transaction_timeout"][1:] \
            == ("2s", "0s", True)
        adm.execute("SET log_level = debug")
        assert {r[0]: r[1] for r in adm.execute("SHOW CONFIG")}["log_level"] == "debug"
    assert psql(px, "SET log_level = info") == []


def test_reload_and_shutdown(console):
    px = console()
    ini = px.dir / "proxy.ini"
    with admin_conn(px) as adm:
        # SET lasts until the next reload, which applies the file's values again.
        adm.execute("SET query_wait_timeout = '1s'")
        cfg = {r[0]: r[1] for r in adm.execute("SHOW CONFIG")}
        assert cfg["query_wait_timeout"] == "1s"
        adm.execute("RELOAD")
        wait_for(lambda: "configuration reloaded" in px.log_text(), what="the reload logged")
        cfg = {r[0]: r[1] for r in adm.execute("SHOW CONFIG")}
        assert cfg["query_wait_timeout"] == "30s"

        # A changed file is applied by RELOAD (the SIGHUP path) before it answers.
        text = ini.read_text()
        ini.write_text(text.replace("query_wait_timeout = 30s", "query_wait_timeout = 45s"))
        assert psql(px, "RELOAD") == []
        cfg = {r[0]: r[1] for r in adm.execute("SHOW CONFIG", prepare=True)}
        assert cfg["query_wait_timeout"] == "45s"

        # An invalid file: ERROR F0000, and the running configuration stays.
        ini.write_text(text + "\nno_such_key = 1\n")
        with pytest.raises(psycopg.errors.ConfigFileError):
            adm.execute("RELOAD")
        wait_for(lambda: "no_such_key" in px.log_text(), what="the refused key logged")
        cfg = {r[0]: r[1] for r in adm.execute("SHOW CONFIG")}
        assert cfg["query_wait_timeout"] == "45s"
        ini.write_text(text)
    assert px.alive()

    app = px.connect()
    app.execute("SELECT 1")
    r = psql(px, "SHUTDOWN", check=False)
    assert r.returncode == 0, r.stderr
    px.exited_on_purpose = True
    assert px.proc.wait(timeout=15) == 0
    with pytest.raises(psycopg.OperationalError):
        app.execute("SELECT 1")
    app.close()


def test_show_stats(console):
    px = console(pool_mode="transaction")
    with admin_conn(px) as adm:
        before = {r["database"]: r for r in rows_dict(adm.execute("SHOW STATS"))}
        app = px.connect()
        for i in range(5):
            app.execute("SELECT %s::int", [i])
        with app.transaction():
            app.execute("SELECT 1")
            app.execute("SELECT 2")
        app.close()
        for desc, rows in run3(adm, "SHOW STATS"):
            assert desc[0] == ("database", TEXT)
            assert all(t == INT8 for _, t in desc[1:]), desc
            st = {r["database"]: r for r in rows}["appdb"]
            old = before.get("appdb", {k: 0 for k in st})
            assert st["total_xact_count"] - old["total_xact_count"] >= 6
            assert st["total_query_count"] - old["total_query_count"] >= 9
            assert st["total_received"] > old["total_received"]
            assert st["total_sent"] > old["total_sent"]
            assert st["total_query_time"] > 0 and st["total_xact_time"] > 0
            assert 0 < st["avg_query_time"] <= st["total_query_time"]
    rows = psql(px, "SHOW STATS")
    appdb = [r for r in rows if r[0] == "appdb"]
    assert len(appdb) == 1 and int(appdb[0][1]) >= 6


def test_set_pool_limit(console):
    px = console(pool_mode="transaction", max_open_conns=1)
    holder = px.connect()
    holder.execute("BEGIN")
    holder.execute("SELECT 1")
    other = px.connect()
    with admin_conn(px) as adm:
        waiting = Background(lambda: other.execute("SELECT 11").fetchone())
        wait_for(lambda: [p["cl_waiting"] for p in rows_dict(adm.execute("SHOW POOLS"))
                          if p["database"] == "appdb"] == [1], what="a client waiting")
        # Raising the limit serves the waiting client at once; the holder keeps its server.
        adm.execute("SET max_open_conns = 2")
        assert waiting.result(timeout=10) == (11,)
        cfg = {r[0]: r[1:] for r in adm.execute("SHOW CONFIG")}
        assert cfg["max_open_conns"] == ("2", "20", True)
        # The file's rules between limits hold for SET too.
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="max_idle_conns"):
            adm.execute("SET max_idle_conns = 3")
        adm.execute("SET conn_max_idle_time = '5m'")
        assert {r[0]: r[1] for r in adm.execute("SHOW CONFIG")}["conn_max_idle_time"] == "300s"
    holder.execute("COMMIT")
    holder.close()
    other.close()


def test_jdbc(console, tmp_path):
    """pgjdbc sets extra_float_digits and application_name after login, uses the extended
    protocol, and past prepareThreshold a named statement with binary results
    (tests/integration/java/AdminConsole.java checks every value)."""
    jar = Path("/usr/share/java/postgresql.jar")
    assert shutil.which("javac") and jar.is_file(), "make deps installs the JDK and pgjdbc"
    r = subprocess.run(["javac", "-d", str(tmp_path), "-cp", str(jar),
                        str(Path(__file__).parent / "java" / "AdminConsole.java")],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"javac failed:\n{r.stdout}\n{r.stderr}"
    px = console(pool_mode="transaction")
    app = px.connect()
    app.execute("SELECT 1")
    url = f"jdbc:postgresql://127.0.0.1:{px.port}/pgmux?prepareThreshold=5"
    r = subprocess.run(["java", "-cp", f"{tmp_path}:{jar}", "AdminConsole", url, "admin",
                        "admin-secret"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "OK", f"{r.stdout}\n{r.stderr}"
    cfg = {row[0]: row[1] for row in psql(px, "SHOW CONFIG")}
    assert cfg["query_wait_timeout"] == "20s"
    app.close()


def _msgs_until_ready(conn):
    out = []
    while True:
        t, payload = conn.recv_msg()
        out.append((t, payload))
        if t == b"Z":
            return out


def test_wire_protocol(console):
    """Exact messages: SQLSTATEs at login, several commands in one Query, an extended-protocol
    error skipping to Sync, Describe, binary results, an empty query, a hostile message."""
    px = console()
    assert pgwire.login_error(px.port, "app", "pgmux", "app-secret").sqlstate == "28000"
    assert pgwire.login_error(px.port, "admin", "pgmux", "wrong").sqlstate == "28P01"

    conn = pgwire.connect(px.port, "admin", "pgmux", "admin-secret")
    assert conn.parameters["server_version"].startswith("15.")
    assert conn.backend_key is not None
    # Two commands in one simple Query: two result sets, one ReadyForQuery.
    conn.send(pgwire.query_message("SHOW VERSION; show version;"))
    types = [t for t, _ in _msgs_until_ready(conn)]
    assert types == [b"T", b"D", b"C", b"T", b"D", b"C", b"Z"], types
    # An error stops the rest of the Query.
    conn.send(pgwire.query_message("SHOW VERSION; NONSENSE; SHOW VERSION"))
    msgs = _msgs_until_ready(conn)
    assert [t for t, _ in msgs] == [b"T", b"D", b"C", b"E", b"Z"]
    assert pgwire.parse_error_fields(msgs[3][1])["C"] == "42601"
    # Empty query.
    conn.send(pgwire.query_message(" ; -- nothing\n"))
    assert [t for t, _ in _msgs_until_ready(conn)] == [b"I", b"Z"]

    def parse(name, sql):
        return pgwire.message(b"P", name + b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))

    def bind(portal, stmt, params=(), result_formats=()):
        body = portal + b"\0" + stmt + b"\0" + struct.pack("!h", 0)
        body += struct.pack("!h", len(params))
        for p in params:
            body += struct.pack("!i", len(p)) + p
        body += struct.pack("!h", len(result_formats))
        body += b"".join(struct.pack("!h", f) for f in result_formats)
        return pgwire.message(b"B", body)

    def execute(portal=b""):
        return pgwire.message(b"E", portal + b"\0" + struct.pack("!i", 0))

    sync = pgwire.message(b"S")
    # Parameters are refused; the Execute after the error is skipped up to Sync.
    conn.send(parse(b"", "SHOW VERSION") + bind(b"", b"", params=[b"1"]) + execute() + sync)
    msgs = _msgs_until_ready(conn)
    assert [t for t, _ in msgs] == [b"1", b"E", b"Z"]
    assert pgwire.parse_error_fields(msgs[1][1])["C"] == "08P01"
    # Several commands in one Parse: 42601.
    conn.send(parse(b"two", "SHOW VERSION; SHOW NODES") + sync)
    msgs = _msgs_until_ready(conn)
    assert [t for t, _ in msgs] == [b"E", b"Z"]
    assert pgwire.parse_error_fields(msgs[0][1])["C"] == "42601"
    # Describe of a named statement, then binary results: port is int4, 4 bytes.
    conn.send(parse(b"nodes", "SHOW NODES") + pgwire.message(b"D", b"Snodes\0")
              + bind(b"p1", b"nodes", result_formats=[1]) + pgwire.message(b"D", b"Pp1\0")
              + execute(b"p1") + pgwire.message(b"C", b"Snodes\0") + sync)
    msgs = _msgs_until_ready(conn)
    types = [t for t, _ in msgs]
    assert types[:5] == [b"1", b"t", b"T", b"2", b"T"], types
    assert types[-3:] == [b"C", b"3", b"Z"], types
    rows = [p for t, p in msgs if t == b"D"]
    assert len(rows) == 2
    ports = set()
    for row in rows:
        pos = 2
        for col in range(3):
            (n,) = struct.unpack("!i", row[pos:pos + 4])
            if col == 2:
                assert n == 4
                ports.add(struct.unpack("!i", row[pos + 4:pos + 8])[0])
            pos += 4 + n
    assert len(ports) == 2
    # Execute of a portal that does not exist: 34000, then the session goes on.
    conn.send(execute(b"nope") + sync)
    msgs = _msgs_until_ready(conn)
    assert pgwire.parse_error_fields(msgs[0][1])["C"] == "34000"
    assert conn.query("SHOW VERSION") == [["pgmux 0.1.0"]]
    # A message type the console does not take: FATAL 08P01 and the connection closes.
    conn.send(pgwire.message(b"d", b"copy data"))
    t, payload = conn.recv_msg()
    assert t == b"E" and pgwire.parse_error_fields(payload)["C"] == "08P01"
    assert conn.read_until_eof() == b""
    conn.close()
    assert px.alive()


def test_pause_session_pooling_and_hangup(console):
    """In session pooling PAUSE waits for sessions to end. A console client that hangs up
    while its PAUSE waits is noticed at once, and the PAUSE stays in effect until RESUME."""
    px = console(pool_mode="session")
    session = px.connect()
    session.execute("SELECT 1")
    raw = pgwire.connect(px.port, "admin", "pgmux", "admin-secret")
    raw.send(pgwire.query_message("PAUSE appdb"))
    with admin_conn(px) as adm:
        wait_for(lambda: len([r for r in rows_dict(adm.execute("SHOW CLIENTS"))
                              if r["state"] == "admin"]) == 2, what="two console sessions")
        raw.close()
        wait_for(lambda: len([r for r in rows_dict(adm.execute("SHOW CLIENTS"))
                              if r["state"] == "admin"]) == 1, what="the hung-up console gone")
        # The session that held the database open still works; a new login waits.
        assert session.execute("SELECT 2").fetchone() == (2,)
        session.close()
        newcomer = Background(lambda: px.connect().execute("SELECT 3").fetchone())
        time.sleep(0.3)
        assert not newcomer.done()
        adm.execute("RESUME appdb")
        assert newcomer.result(timeout=10) == (3,)
