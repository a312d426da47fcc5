"""Configuration reload (SIGHUP): a changed proxy.ini is applied to the running pgmux without
dropping a client; an invalid one is refused with its reasons and the running configuration
stays. Keys that need a restart are reported and keep their value."""

import re
import signal
import threading
import time

import psycopg
import pytest

from conftest import PASSWORDS, _render_ini, write_userlist
from helpers import Background, wait_for
from test_metrics import _free_port, scrape, value


def reloads(px, word="configuration reloaded from"):
    return px.log_text().count(word)


def rewrite(px, userlist=None, **changes):
    """Rewrite px's proxy.ini with changes ({key: value}, None removes; a key of [pool] goes
    there), and its auth_file when userlist is given."""
    from conftest import POOL_KEYS

    for key, value in changes.items():
        section = "pool" if key in POOL_KEYS else "pgmux"
        if value is None:
            px.config[section].pop(key, None)
        else:
            px.config[section][key] = value
    (px.dir / "proxy.ini").write_text(_render_ini(px.config))
    if userlist is not None:
        write_userlist(px.dir / "userlist.txt", userlist)


def sighup_and_wait(px, word="configuration reloaded from"):
    before = reloads(px, word)
    px.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: reloads(px, word) > before, timeout=10, what=f"'{word}' in the log")


class Load:
    """Threads running short transactions through pgmux (a new connection every few
    transactions, and long-lived sessions) until stop(); counts what failed."""

    def __init__(self, px, n_short=4, n_long=2):
        self.px = px
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.txns = 0
        self.failures = []
        self.threads = [threading.Thread(target=self._run, args=(i < n_long,), daemon=True)
                        for i in range(n_short + n_long)]
        for t in self.threads:
            t.start()

    def _run(self, long_lived):
        conn = None
        done = 0
        while not self.stop_ev.is_set():
            try:
                if conn is None:
                    conn = self.px.connect(autocommit=False)
                with conn.transaction():
                    conn.execute("INSERT INTO reload_load VALUES (1)")
                    conn.execute("SELECT count(*) FROM pg_class").fetchone()
                with self.lock:
                    self.txns += 1
                done += 1
                if not long_lived and done % 5 == 0:
                    conn.close()
                    conn = None
            except Exception as e:
                with self.lock:
                    self.failures.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def count(self):
        with self.lock:
            return self.txns

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
        return self.txns, self.failures


@pytest.fixture
def load_table(cluster):
    with cluster.su(dbname="appdb") as su:
        su.execute("DROP TABLE IF EXISTS reload_load")
        su.execute("CREATE TABLE reload_load (v int)")
        su.execute("GRANT ALL ON reload_load TO app")


def hold_transactions(px, n):
    """n connections, each inside a transaction (holding a server connection)."""
    conns = []
    for _ in range(n):
        c = px.connect(autocommit=False)
        c.execute("SELECT 1")
        conns.append(c)
    return conns


def test_reload_under_load(cluster, pgmux, load_table):
    app_only = [("app", PASSWORDS["app"])]
    px = pgmux(pool_mode="transaction", max_open_conns=3, userlist=app_only, workers=2)
    # pwuser is not in the auth_file yet.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        px.connect(user="pwuser", password=PASSWORDS["pwuser"])

    load = Load(px)
    wait_for(lambda: load.count() > 20, timeout=20, what="the load to run")

    # 1. A new user, a smaller pool, a shorter timeout, debug logging: all live.
    rewrite(px, userlist=app_only + [("pwuser", PASSWORDS["pwuser"])], max_open_conns=2,
            query_wait_timeout="20s", log_level="debug")
    sighup_and_wait(px)
    log = px.log_text()
    assert re.search(r"changed: [^\n]*query_wait_timeout", log), log[-3000:]
    assert re.search(r"changed: [^\n]*max_open_conns", log)
    assert re.search(r"users: 1 added, 0 removed", log)
    with px.connect(user="pwuser", password=PASSWORDS["pwuser"]) as c:
        assert c.execute("SELECT current_user").fetchone() == ("pwuser",)
    wait_for(lambda: "DEBUG" in px.log_text(), timeout=5, what="debug lines after the reload")
    # The pool shrinks to the new max_open_conns as connections are released, under load.
    wait_for(lambda: cluster.count(user="app", dbname="appdb") <= 2, timeout=10,
             what="the app pool to shrink to 2")
    n = load.count()
    wait_for(lambda: load.count() > n + 20, timeout=20, what="the load to go on")
    for _ in range(10):
        assert cluster.count(user="app", dbname="appdb") <= 2
        time.sleep(0.05)

    # 2. Repeated SIGHUPs, some changing nothing, some changing values back and forth.
    for i in range(6):
        rewrite(px, max_open_conns=2 + i % 3, conn_max_idle_time=f"{5 + i}m",
                log_level="info" if i % 2 else "debug")
        sighup_and_wait(px)
    rewrite(px, max_open_conns=4, log_level="info")
    sighup_and_wait(px)
    sighup_and_wait(px)  # unchanged file: applied again, nothing dropped

    # 3. An invalid file is refused; the running configuration stays (pwuser can still log in,
    # max_open_conns stays 4).
    ini = px.dir / "proxy.ini"
    good = ini.read_text()
    bad = good.replace("max_open_conns = 4", "max_open_conns = 4\nmax_idle_conns = 9")
    bad = bad.replace("[pgmux]", "[pgmux]\nno_such_key = 1")
    ini.write_text(bad)
    write_userlist(px.dir / "userlist.txt", app_only)
    sighup_and_wait(px, word="configuration reload refused")
    log = px.log_text()
    assert re.search(r"proxy\.ini:\d+: no_such_key: ", log), log[-3000:]
    assert re.search(r"proxy\.ini:\d+: max_idle_conns: 9 is more than max_open_conns \(4\)", log)
    with px.connect(user="pwuser", password=PASSWORDS["pwuser"]) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)

    total, failures = load.stop()
    print(f"\nreload under load: {total} transactions, {len(failures)} failed, "
          f"{reloads(px)} reloads applied, 1 refused")
    assert failures == []
    assert total > 100
    assert px.alive()
    with cluster.su(dbname="appdb") as su:
        assert su.execute("SELECT count(*) AS n FROM reload_load").fetchone()["n"] == total


def test_raised_pool_limit_serves_waiters_at_once(cluster, pgmux):
    px = pgmux(pool_mode="transaction", max_open_conns=2)
    held = hold_transactions(px, 2)
    waiter = Background(lambda: px.connect().execute("SELECT 42").fetchone())
    time.sleep(0.3)
    assert not waiter.done()  # queued: the pool is full
    rewrite(px, max_open_conns=3)
    sighup_and_wait(px)
    assert waiter.result(timeout=5) == (42,)
    for c in held:
        c.rollback()
        c.close()


def test_shorter_wait_timeout_applies_to_queued_clients(cluster, pgmux):
    px = pgmux(pool_mode="transaction", max_open_conns=1, query_wait_timeout="60s")
    held = hold_transactions(px, 1)
    waiter = Background(lambda: px.connect().execute("SELECT 1").fetchone())
    time.sleep(0.3)
    rewrite(px, query_wait_timeout="500ms")
    started = time.monotonic()
    sighup_and_wait(px)
    err = waiter.error(timeout=10)
    assert "query_wait_timeout" in str(err) or getattr(err, "sqlstate", None) == "53300", err
    assert time.monotonic() - started < 5
    # The client holding the connection was not touched.
    assert held[0].execute("SELECT 2").fetchone() == (2,)
    held[0].commit()


def test_restart_only_keys_are_reported_and_kept(cluster, pgmux):
    px = pgmux(pool_mode="transaction", workers=2)
    keep = px.connect(autocommit=False)
    keep.execute("SELECT 1")
    port = px.port
    rewrite(px, listen_port=port + 1 if port < 65535 else port - 1, workers=3,
            track_parameters="work_mem", max_client_conn=50)
    sighup_and_wait(px)
    log = px.log_text()
    assert re.search(r"listen_port: changed from \d+ to \d+; takes effect after a restart", log)
    assert "workers: changed from 2 to 3; takes effect after a restart" in log
    assert "track_parameters: changed; takes effect after a restart" in log
    assert re.search(r"changed: [^\n]*max_client_conn", log)
    # Still on the old port; the session in its transaction goes on.
    with px.connect() as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    keep.execute("SELECT 2")
    keep.commit()


def test_rotated_password_is_used_for_new_logins(cluster, pgmux):
    """The server's password and the auth_file change together: a session opened before the
    reload keeps going; new client logins need the new password, and the pool logs in to the
    server with it (session pooling: the second client needs a new server connection)."""
    px = pgmux(pool_mode="session", userlist=[("pwuser", PASSWORDS["pwuser"])])
    before = px.connect(user="pwuser", password=PASSWORDS["pwuser"])
    assert before.execute("SELECT 1").fetchone() == (1,)
    try:
        with cluster.su() as su:
            su.execute("ALTER ROLE pwuser PASSWORD 'rotated-secret'")
        rewrite(px, userlist=[("pwuser", "rotated-secret")])
        sighup_and_wait(px)
        assert re.search(r"users: 0 added, 0 removed, 1 with a new secret \(1 pools", px.log_text())
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            px.connect(user="pwuser", password=PASSWORDS["pwuser"])
        with px.connect(user="pwuser", password="rotated-secret") as c:
            assert c.execute("SELECT current_user").fetchone() == ("pwuser",)
        assert before.execute("SELECT 2").fetchone() == (2,)
        before.close()
    finally:
        with cluster.su() as su:
            su.execute(f"ALTER ROLE pwuser PASSWORD '{PASSWORDS['pwuser']}'")


def test_removed_user_keeps_its_open_sessions(cluster, pgmux):
    """A user taken out of auth_file cannot log in after the reload; its session already open
    goes on, in transaction pooling even when it needs a new server connection."""
    both = [("app", PASSWORDS["app"]), ("pwuser", PASSWORDS["pwuser"])]
    px = pgmux(pool_mode="transaction", userlist=both)
    open_session = px.connect(user="pwuser", password=PASSWORDS["pwuser"])
    assert open_session.execute("SELECT 1").fetchone() == (1,)
    rewrite(px, userlist=both[:1])
    sighup_and_wait(px)
    assert re.search(r"users: 0 added, 1 removed", px.log_text())
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        px.connect(user="pwuser", password=PASSWORDS["pwuser"])
    # Its idle server connection goes away: the next transaction needs a new one.
    for row in cluster.server_conns(user="pwuser"):
        cluster.terminate(row["pid"], replica=row["node"] == "replica")
    wait_for(lambda: cluster.count(user="pwuser") == 0, timeout=5,
             what="pwuser's server connection to go")
    assert open_session.execute("SELECT current_user").fetchone() == ("pwuser",)
    open_session.close()


def test_reloads_are_counted_in_metrics(cluster, pgmux):
    import urllib.request

    from conftest import _free_port

    mport = _free_port()
    px = pgmux(metrics_port=mport)

    def count(result):
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read()
        m = re.search(rf'^pgmux_config_reloads_total{{result="{result}"}} (\d+)$',
                      body.decode(), re.M)
        assert m, body.decode()[-2000:]
        return int(m.group(1))

    assert count("applied") == 0 and count("refused") == 0
    rewrite(px, max_open_conns=5)
    sighup_and_wait(px)
    ini = px.dir / "proxy.ini"
    ini.write_text(ini.read_text().replace("[pool]", "[pool]\nno_such_key = 1"))
    sighup_and_wait(px, word="configuration reload refused")
    assert count("applied") == 1 and count("refused") == 1


WHO = "SELECT inet_server_port(), pg_is_in_recovery()"


def rewrite_nodes(px, nodes):
    """Replace px's [node.*] sections with nodes ({name: {key: value}}), keeping the order of
    the other sections."""
    for section in [s for s in px.config if s.startswith("node.")]:
        del px.config[section]
    for name, keys in nodes.items():
        px.config[f"node.{name}"] = dict(keys)
    (px.dir / "proxy.ini").write_text(_render_ini(px.config))


def replica_pids(cluster):
    return {r["pid"] for r in cluster.server_conns(user="app", dbname="appdb", replica=True)}


def test_nodes_added_and_removed_by_reload(cluster, pgmux):
    primary = {"host": "127.0.0.1", "port": cluster.primary_port, "role": "primary"}
    replica = {"host": "127.0.0.1", "port": cluster.replica_port, "role": "replica"}
    mport = _free_port()
    px = pgmux(pool_mode="transaction", read_write_split="on", read_your_writes="off",
               metrics_port=mport, nodes={"primary": primary})
    reader = px.connect()
    assert reader.execute(WHO).fetchone() == (cluster.primary_port, False)
    # A session-mode client would do as well; this one stays in its transaction throughout.
    keep = px.connect(autocommit=False)
    keep.execute("SELECT 1")

    # 1. Added: reads reach the new replica; writes stay on the primary.
    rewrite_nodes(px, {"primary": primary, "replica": replica})
    sighup_and_wait(px)
    assert "nodes: 1 added, 0 removed" in px.log_text()
    wait_for(lambda: reader.execute(WHO).fetchone() == (cluster.replica_port, True), timeout=10,
             what="a read on the replica added by the reload")
    for _ in range(5):
        assert reader.execute(WHO).fetchone() == (cluster.replica_port, True)
    with px.connect() as c:
        c.execute("BEGIN")
        assert c.execute(WHO).fetchone() == (cluster.primary_port, False)
        c.execute("COMMIT")
    assert re.search(r"node replica: added \(127\.0\.0\.1:\d+", px.log_text())

    # A changed role is a removal and an addition under the same name; a new weight applies.
    rewrite_nodes(px, {"primary": dict(primary, weight=3), "replica": dict(replica, role="auto")})
    sighup_and_wait(px)
    log = px.log_text()
    assert "nodes: 0 added, 0 removed, 1 replaced (new host, port or role), 1 with a new weight" \
        in log, log[-2000:]
    wait_for(lambda: "node primary: weight 1 -> 3" in px.log_text()
             and px.log_text().count("node replica: added (") == 2, timeout=10,
             what="the replaced node and the new weight in the log")
    assert "removed: its role changed" in px.log_text()
    wait_for(lambda: value(scrape(mport), "pgmux_node_up", node="replica") == 1, timeout=10,
             what="the new node up in /metrics")
    fams = scrape(mport)  # one series per node name: value() asserts it is not ambiguous
    assert value(fams, "pgmux_node_role", node="replica", role="replica") == 1
    for _ in range(5):
        assert reader.execute(WHO).fetchone() == (cluster.replica_port, True)

    # 2. A running transaction on it, then it is removed.
    held = px.connect()
    held.execute("BEGIN READ ONLY")
    assert held.execute(WHO).fetchone() == (cluster.replica_port, True)
    pids_before = replica_pids(cluster)
    assert pids_before
    rewrite_nodes(px, {"primary": primary})
    sighup_and_wait(px)
    wait_for(lambda: "node replica (127.0.0.1:" in px.log_text()
             and "removed: its section is gone" in px.log_text(), timeout=10,
             what="the node's removal in the log")
    # New reads go to the primary, and nothing new opens on the removed node.
    wait_for(lambda: reader.execute(WHO).fetchone() == (cluster.primary_port, False), timeout=5,
             what="reads back on the primary")
    others = [px.connect() for _ in range(3)]
    for c in others:
        for _ in range(3):
            assert c.execute(WHO).fetchone() == (cluster.primary_port, False)
    assert replica_pids(cluster) <= pids_before
    # The transaction on it runs to its end; its server connection closes when released.
    assert held.execute(WHO).fetchone() == (cluster.replica_port, True)
    held.execute("COMMIT")
    wait_for(lambda: not replica_pids(cluster), timeout=5,
             what="the removed node's connections to close")
    assert held.execute(WHO).fetchone() == (cluster.primary_port, False)
    keep.execute("SELECT 2")
    keep.commit()
    for c in others + [held, keep]:
        c.close()

    # 3. Invalid node sections refuse the reload; the running nodes stay.
    rewrite_nodes(px, {"primary": primary, "bad": {"host": "127.0.0.1", "port": 70000}})
    sighup_and_wait(px, word="configuration reload refused")
    assert re.search(r"proxy\.ini:\d+: port: ", px.log_text()), px.log_text()[-2000:]
    rewrite_nodes(px, {"only": dict(replica)})
    sighup_and_wait(px, word="no node can serve writes")
    assert reloads(px, "configuration reload refused") == 2
    assert reader.execute(WHO).fetchone() == (cluster.primary_port, False)
    with px.connect() as c:
        c.execute("BEGIN")
        assert c.execute(WHO).fetchone() == (cluster.primary_port, False)
        c.execute("COMMIT")
    reader.close()
    assert px.alive()


def test_primary_section_replaced_without_health_checks(cluster, pgmux):
    """With health checks off roles stay as declared: a declared primary that a reload brings
    in under a new name takes the writes from the one it replaces."""
    mport = _free_port()
    old = {"host": "127.0.0.1", "port": cluster.primary_port, "role": "primary"}
    replica = {"host": "127.0.0.1", "port": cluster.replica_port, "role": "replica"}
    px = pgmux(pool_mode="transaction", read_write_split="on", read_your_writes="off",
               health_check_period=0, metrics_port=mport,
               nodes={"old": old, "replica": replica})
    assert value(scrape(mport), "pgmux_node_is_write_target", node="old") == 1
    rewrite_nodes(px, {"replica": replica, "new": dict(old)})
    sighup_and_wait(px)
    wait_for(lambda: value(scrape(mport), "pgmux_node_is_write_target", node="new") == 1,
             timeout=5, what="the new section to take the writes")
    fams = scrape(mport)
    assert value(fams, "pgmux_node_is_write_target", node="old") == 0
    with px.connect() as c:
        c.execute("BEGIN")
        assert c.execute(WHO).fetchone() == (cluster.primary_port, False)
        c.execute("COMMIT")
        assert c.execute(WHO).fetchone() == (cluster.replica_port, True)
    assert "node old (127.0.0.1:" in px.log_text()
