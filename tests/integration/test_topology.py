"""Topology monitor: role discovery, health, learned VOLATILE functions, DNS, failover and the
split-brain guard (proxy/monitor.c).

The tests that stop, promote or restart servers use their own primary + replica (tests/cluster.sh
in a temporary directory, module-scoped, started on first use), never the shared session
cluster. They run in file order: the stopped-replica test leaves the replica streaming again;
the failover test leaves the old primary stopped and the replica promoted, which the split-brain
test builds on.
"""

import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

import pgwire
from conftest import CLUSTER_SH, Cluster, _add_log_source, _free_port, _read_env, _render_ini
from helpers import wait_for

PGBIN = "/usr/lib/postgresql/15/bin"


def _as_pg(*args, **kw):
    cmd = list(args)
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


def _pg_ctl(*args):
    r = _as_pg(f"{PGBIN}/pg_ctl", *args)
    assert r.returncode == 0, f"pg_ctl {' '.join(args)} failed: {r.stdout}{r.stderr}"


class OwnCluster(Cluster):
    """A primary + replica of this module only, with what the tests do to it."""

    def __init__(self, directory, env):
        super().__init__(directory, env)
        self.primary_data = env["PRIMARY_DATA"]
        self.replica_data = env["REPLICA_DATA"]

    def stop(self, node, mode="fast"):
        data = self.primary_data if node == "primary" else self.replica_data
        _pg_ctl("-D", data, "-m", mode, "-w", "-t", "30", "stop")

    def start(self, node):
        data = self.primary_data if node == "primary" else self.replica_data
        _pg_ctl("-D", data, "-l", str(self.logs[node]), "-w", "-t", "30", "start")

    def promote_replica(self):
        _pg_ctl("-D", self.replica_data, "-w", "-t", "30", "promote")

    def streaming(self):
        with self.su() as c:
            return c.execute(
                "SELECT count(*) AS n FROM pg_stat_replication WHERE state = 'streaming'"
            ).fetchone()["n"]


@pytest.fixture(scope="module")
def own_cluster():
    directory = tempfile.mkdtemp(prefix="pgmux-topo-")
    proc = subprocess.run(
        [str(CLUSTER_SH), "start", directory], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        subprocess.run([str(CLUSTER_SH), "stop", directory], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"tests/cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}")
    c = OwnCluster(directory, _read_env(Path(directory) / "env"))
    yield c
    subprocess.run([str(CLUSTER_SH), "stop", directory], capture_output=True)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def own_logs(request, own_cluster):
    """Attach this module's cluster logs to a failing test's report."""
    start = {n: own_cluster.log_size(n) for n in ("primary", "replica")}

    def tail(node):
        with open(own_cluster.logs[node], "rb") as f:
            f.seek(start[node])
            return f.read()[-20000:].decode(errors="replace")

    _add_log_source(request, "own primary log", lambda: tail("primary"))
    _add_log_source(request, "own replica log", lambda: tail("replica"))
    return own_cluster


def auto_nodes(primary_port, replica_port, replica_first=True):
    nodes = {
        "replica": {"host": "127.0.0.1", "port": replica_port, "role": "auto"},
        "primary": {"host": "127.0.0.1", "port": primary_port, "role": "auto"},
    }
    if not replica_first:
        nodes = dict(reversed(list(nodes.items())))
    return nodes


def where(conn):
    """(port, in recovery) of the server that ran the statement."""
    return conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()


def log_has(px, text):
    return text in px.log_text()


# ---- the shared cluster: discovery only, nothing stopped ---------------------------------------


def test_auto_roles_discovered(cluster, pgmux):
    """Both nodes `auto`, the replica listed first (the first auto node used to take the writes):
    the monitor's first round, before pgmux accepts clients, finds which is the primary."""
    px = pgmux(
        pool_mode="transaction",
        nodes=auto_nodes(cluster.primary_port, cluster.replica_port),
    )
    with px.connect() as c:
        assert where(c) == (cluster.primary_port, False)
        c.execute("CREATE TABLE IF NOT EXISTS topo_auto (v int)")
        c.execute("INSERT INTO topo_auto VALUES (1)")
        c.execute("DROP TABLE topo_auto")
    wait_for(lambda: "primary is now node primary" in px.log_text(), timeout=5,
             what="the log line")
    log = px.log_text()
    assert "node replica: role unknown -> replica" in log, log
    assert "node primary: role unknown -> primary" in log, log
    # The monitor's connections say who they are (pg_stat_activity filters on it).
    with cluster.su() as su:
        names = [r["application_name"] for r in su.execute(
            "SELECT application_name FROM pg_stat_activity WHERE usename = 'app'").fetchall()]
    assert "pgmux-monitor" in names, names


VOLATILE_SQL = (
    "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE p.provolatile = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema')")


def learned(px, n):
    return f"learned {n} user-defined VOLATILE" in px.log_text()


def test_volatile_functions_learned(cluster, pgmux):
    """User-defined VOLATILE functions are read from the primary's catalog of
    health_check_database, and the list is republished only when it changes. A reload that
    points health_check_database elsewhere is followed. (Other tests may leave functions
    behind: counts are taken from the catalog, each function giving "schema.name" and "name".)"""
    with cluster.su(dbname="appdb") as su:
        su.execute("DROP FUNCTION IF EXISTS topo_bump(), topo_stable()")
        base = su.execute(VOLATILE_SQL).fetchone()["count"]
        with cluster.su() as pg:
            in_postgres = pg.execute(VOLATILE_SQL).fetchone()["count"]
        try:
            su.execute("CREATE FUNCTION topo_bump() RETURNS int VOLATILE LANGUAGE sql"
                       " AS 'SELECT 1'")
            su.execute("CREATE FUNCTION topo_stable() RETURNS int STABLE LANGUAGE sql"
                       " AS 'SELECT 1'")
            px = pgmux(pool_mode="transaction", health_check_period="200ms")
            wait_for(lambda: learned(px, 2 * in_postgres), timeout=5,
                     what="the list of the postgres database")
            # SIGHUP only once pgmux handles it (the first check comes before that)
            wait_for(lambda: log_has(px, " listening on "), timeout=5, what="pgmux to run")
            px.config["pgmux"]["health_check_database"] = "appdb"
            (px.dir / "proxy.ini").write_text(_render_ini(px.config))
            px.proc.send_signal(signal.SIGHUP)
            # "public.topo_bump" and "topo_bump"; the STABLE one is not a write
            wait_for(lambda: learned(px, 2 * (base + 1)), timeout=5,
                     what="the function in appdb after the reload")
            time.sleep(0.6)  # three more rounds: an unchanged list is not announced again
            assert px.log_text().count("user-defined VOLATILE") == 2, px.log_text()
        finally:
            su.execute("DROP FUNCTION IF EXISTS topo_bump(), topo_stable()")
    wait_for(lambda: px.log_text().count("user-defined VOLATILE") == 3 and learned(px, 2 * base),
             timeout=5, what="the list to lose the function again")


HOSTS = Path("/etc/hosts")
HOSTS_LOCK = Path(tempfile.gettempdir()) / "pgmux-test-hosts.lock"


@pytest.fixture
def hosts_entry():
    """Add lines to /etc/hosts for a name of this test; .set(addresses) rewrites them, and they
    are removed at teardown. Written in place: /etc/hosts may be a bind mount. Only this name's
    lines are touched, under a lock: test runs sharing a machine edit the file at the same time,
    and writing back a copy read earlier dropped the other run's name."""
    name = f"pgmux-topo-{os.getpid()}.test"

    def edit(addresses):
        with open(HOSTS_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            kept = [line for line in HOSTS.read_text().splitlines(keepends=True)
                    if line.split()[-1:] != [name]]
            if kept and not kept[-1].endswith("\n"):
                kept[-1] += "\n"
            with open(HOSTS, "w") as f:
                f.write("".join(kept) + "".join(f"{a} {name}\n" for a in addresses))

    class Entry:
        def set(self, addresses):
            edit(addresses)

    e = Entry()
    e.name = name
    yield e
    edit([])


def test_dns_name_with_two_addresses(cluster, pgmux, hosts_entry):
    """A host name with two addresses gives two nodes; the one nothing listens on is down and
    gets no traffic; when its address leaves DNS the node is marked removed."""
    hosts_entry.set(["127.0.0.1", "127.0.0.2"])
    px = pgmux(
        pool_mode="transaction",
        dns_ttl="300ms",
        health_check_period="200ms",
        nodes={"db": {"host": hosts_entry.name, "port": cluster.primary_port, "role": "auto"}},
    )
    # whichever address getaddrinfo listed first is node "db", the other one "db@ADDRESS"
    wait_for(lambda: f'"{hosts_entry.name}" also resolves to' in px.log_text(), timeout=5,
             what="the second address to become a node")
    wait_for(lambda: "(127.0.0.2:%d) is down" % cluster.primary_port in px.log_text(),
             timeout=5, what="the address nothing listens on to be reported down")
    wait_for(lambda: "role unknown -> primary" in px.log_text(), timeout=5,
             what="the address PostgreSQL listens on to be the primary")
    for _ in range(5):
        with px.connect() as c:
            assert c.execute("SELECT host(inet_server_addr())").fetchone()[0] == "127.0.0.1"
    hosts_entry.set(["127.0.0.1"])
    wait_for(lambda: "address 127.0.0.2 no longer in DNS" in px.log_text(), timeout=5,
             what="the vanished address to be removed")
    with px.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


# ---- the module's own cluster: stop, promote, restart ------------------------------------------


def read_on(px):
    with px.connect() as c:
        return where(c)


def test_stopped_replica_marked_down(own_logs, pgmux):
    """A stopped replica is reported down within a health-check period, and the reads routed to
    it go to the primary instead, without an error; when it returns it is reported up and
    takes the reads again."""
    oc = own_logs
    px = pgmux(pool_mode="transaction", health_check_period="200ms", read_write_split="on",
               nodes=auto_nodes(oc.primary_port, oc.replica_port))
    assert read_on(px) == (oc.replica_port, True)
    oc.stop("replica")
    try:
        wait_for(lambda: log_has(px, "node replica (127.0.0.1:%d) is down" % oc.replica_port),
                 timeout=5, what="the replica to be reported down")
        for _ in range(5):
            assert read_on(px) == (oc.primary_port, False)
    finally:
        oc.start("replica")
    wait_for(lambda: log_has(px, "node replica (127.0.0.1:%d) is up" % oc.replica_port),
             timeout=10, what="the replica to be reported up")
    wait_for(lambda: read_on(px) == (oc.replica_port, True), timeout=5,
             what="reads to go to the replica again")
    wait_for(oc.streaming, timeout=15, what="the replica to stream again")


def test_write_without_a_primary_is_not_sent_to_a_replica(cluster, pgmux):
    """No node answers as the primary (the only other one is down), so the fallback for writes
    is the first auto node, a standby: a transaction routed as a write (read_write_split off)
    waits for the topology, then fails with 08006, instead of running there (it used to, and
    a failover slower than two health checks gave the writers 25006)."""
    px = pgmux(pool_mode="transaction", health_check_period="200ms",
               health_check_timeout="200ms",
               nodes={"replica": {"host": "127.0.0.1", "port": cluster.replica_port,
                                  "role": "auto"},
                      "primary": {"host": "127.0.0.1", "port": _free_port(), "role": "auto"}})
    with px.connect() as c:  # the login itself runs nothing of the client's: the standby will do
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as e:
            c.execute("SELECT pg_is_in_recovery()").fetchone()
    # libpq folds the FATAL into "connection lost"; the SQLSTATE is in pgmux's event line
    assert "no usable primary server" in str(e.value), e.value
    assert time.monotonic() - t0 >= 0.5  # two periods plus the timeout: 600 ms
    # the event lines come through the logger thread, maybe after the client saw the error
    log = wait_for(lambda: (lambda t: t if 'sqlstate=08006 message="no usable primary server"'
                            in t else None)(px.log_text()), what="the refusal's event line")
    assert "no usable primary; waiting up to 600 ms" in log


def test_failover_by_promotion_under_load(own_logs, pgmux):
    """Primary stopped, replica promoted with pg_ctl promote, while clients write through pgmux
    in transaction pooling: writes reach the new primary within two health-check periods of the
    promotion, idle clients keep their connections, and a client inside a transaction on the
    dead primary gets 57P01 or 08006 at once. Prints the failover time and the error count."""
    oc = own_logs
    period = 1.0
    px = pgmux(pool_mode="transaction", health_check_period="1s", max_client_conn=100,
               nodes=auto_nodes(oc.primary_port, oc.replica_port))
    with px.connect() as c:
        c.execute("CREATE TABLE IF NOT EXISTS topo_load (w int, i int, port int)")

    idle = [px.connect() for _ in range(3)]
    for c in idle:
        assert where(c) == (oc.primary_port, False)
    # raw protocol: the SQLSTATEs on the wire, which libpq folds into "connection lost"
    in_txn = pgwire.connect(px.port, "app", "appdb", "app-secret")
    in_txn.query("BEGIN")
    in_txn.query("INSERT INTO topo_load VALUES (-1, 0, inet_server_port())")

    stop = threading.Event()
    lock = threading.Lock()
    errors = []  # (time, sqlstate, message)
    ok_on = {}  # port -> first time a write succeeded there after the stop began
    stop_at = [None]

    def writer(wid):
        conn = None
        i = 0
        while not stop.is_set():
            try:
                if conn is None:
                    conn = px.connect()
                port = conn.execute(
                    "INSERT INTO topo_load VALUES (%s, %s, inet_server_port()) RETURNING port",
                    [wid, i]).fetchone()[0]
                now = time.monotonic()
                with lock:
                    if stop_at[0] is not None and port not in ok_on:
                        ok_on[port] = now
                i += 1
            except psycopg.Error as e:
                with lock:
                    errors.append((time.monotonic(), e.sqlstate, str(e).strip()[:160]))
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: px.connect().execute("SELECT count(*) FROM topo_load").fetchone()[0]
                 > 50, timeout=10, what="the load to run")
        with lock:
            stop_at[0] = time.monotonic()
        oc.stop("primary")
        stopped = time.monotonic()

        # The transaction on the dead primary fails cleanly, without a hang: ErrorResponses
        # with 57P01 (the server's) or 08006 (pgmux's), then the connection closes.
        t0 = time.monotonic()
        try:
            in_txn.send(pgwire.query_message("INSERT INTO topo_load VALUES (-1, 1, 0)"))
        except OSError:
            pass
        data = in_txn.read_until_eof(timeout=5)
        assert time.monotonic() - t0 < 5
        states = []
        while len(data) >= 5:
            length = int.from_bytes(data[1:5], "big")
            if data[:1] == b"E":
                states.append(pgwire.parse_error_fields(data[5:1 + length]).get("C"))
            data = data[1 + length:]
        assert states and set(states) <= {"57P01", "08006"}, states

        oc.promote_replica()
        promoted = time.monotonic()
        first_new = wait_for(lambda: ok_on.get(oc.replica_port), timeout=10,
                             what="a write to reach the promoted replica")
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    in_txn.close()
    print(f"\nFAILOVER: the client inside a transaction got SQLSTATE {states}")

    # Idle sessions kept their client connections; their next transaction runs on the new
    # primary.
    for c in idle:
        assert where(c) == (oc.replica_port, False)
        c.execute("INSERT INTO topo_load VALUES (-2, 0, inet_server_port())")
        c.close()

    failover_s = first_new - promoted
    total_s = first_new - stopped
    late = [e for e in errors if e[0] > promoted]
    print(f"\nFAILOVER: first write on the promoted replica {failover_s:.3f} s after "
          f"pg_ctl promote returned ({total_s:.3f} s after the primary stopped); "
          f"health_check_period {period:.0f} s; client-visible errors: {len(errors)} "
          f"({len(late)} after the promotion) over 4 writers + 3 idle sessions + 1 open "
          f"transaction; errors: {errors}")
    assert failover_s < 2 * period + 0.5, f"failover took {failover_s:.3f} s"
    # At most the statements in flight when the primary stopped, one per writer.
    assert len(errors) <= 4, errors
    assert not late, late
    assert "primary is now node replica" in px.log_text()


def test_split_brain_guard(own_logs, pgmux):
    """After the failover, the old primary comes back out of recovery on the old timeline: it is
    fenced and gets no writes, which keep going to the promoted replica."""
    oc = own_logs
    with psycopg.connect(host=oc.socket_dir, port=oc.replica_port, user="postgres",
                         dbname="postgres", autocommit=True) as c:
        assert c.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False, \
            "the failover test must have promoted the replica"
    px = pgmux(pool_mode="transaction", health_check_period="200ms",
               nodes=auto_nodes(oc.primary_port, oc.replica_port, replica_first=False))
    oc.start("primary")
    wait_for(lambda: log_has(px, "node primary is out of recovery on timeline 1, older than "
                                 "timeline 2"), timeout=10, what="the old primary to be fenced")
    for i in range(10):
        with px.connect() as c:
            port = c.execute("INSERT INTO topo_load VALUES (-3, %s, inet_server_port())"
                             " RETURNING port", [i]).fetchone()[0]
            assert port == oc.replica_port
    with psycopg.connect(host=oc.socket_dir, port=oc.primary_port, user="postgres",
                         dbname="appdb", autocommit=True) as c:
        assert c.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        got = c.execute("SELECT count(*) FROM topo_load WHERE w = -3").fetchone()[0]
        assert got == 0
        clients = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'"
            " AND application_name <> 'pgmux-monitor' AND pid <> pg_backend_pid()"
            ).fetchone()[0]
        assert clients == 0
    assert "primary is now node primary" not in px.log_text().split("fenced")[-1]


def test_reloaded_node_resolved_when_its_name_appears(cluster, pgmux, hosts_entry):
    """A [node.NAME] section added by a reload whose host does not resolve yet: the reload is
    applied, the monitor keeps trying (about once a second, not at dns_ttl), and the node
    takes reads once the name resolves."""
    from test_reload import rewrite_nodes, sighup_and_wait

    primary = {"host": "127.0.0.1", "port": cluster.primary_port, "role": "primary"}
    px = pgmux(pool_mode="transaction", read_write_split="on", read_your_writes="off",
               dns_ttl="1h", nodes={"primary": primary})
    rewrite_nodes(px, {"primary": primary, "late": {"host": hosts_entry.name,
                                                    "port": cluster.replica_port,
                                                    "role": "replica"}})
    sighup_and_wait(px)
    wait_for(lambda: "node late: cannot resolve" in px.log_text(), timeout=5,
             what="the failed lookup in the log")
    assert "place empty, trying again" in px.log_text()
    with px.connect() as c:
        assert where(c) == (cluster.primary_port, False)
    hosts_entry.set(["127.0.0.1"])
    wait_for(lambda: re.search(r"node late: added \(127\.0\.0\.1:", px.log_text()), timeout=5,
             what="the section's node once its name resolves")
    with px.connect() as c:
        wait_for(lambda: where(c) == (cluster.replica_port, True), timeout=5,
                 what="a read on the late node")
    assert px.log_text().count("node late: cannot resolve") == 1
