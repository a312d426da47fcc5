"""Fixtures for pgmux's integration tests: a real PostgreSQL 15 primary + streaming replica
(tests/cluster.sh, once per session) and a fresh pgmux process per test.

Fixtures
  cluster   session-scoped Cluster: .primary_port, .replica_port, .socket_dir, .dir,
            .su(replica=False) -> superuser psycopg connection over the unix socket,
            .server_conns(user=..., dbname=..., state=...) -> pgmux's server connections as
            pg_stat_activity rows (dicts) on both nodes, .terminate(pid), .scram_verifier(user),
            .log_text(node) -> that node's PostgreSQL log.
  pgmux     factory: pgmux(**overrides) writes proxy.ini + userlist.txt into a per-test
            directory, starts the binary (env PGMUX_BIN, default build/asan/pgmux; pass
            binary=... for another), waits until it accepts connections and returns a Pgmux
            (.port, .pid, .dsn(user, password, dbname), .connect(...), .log_text(), .rss_kib(),
            .alive()). At teardown: SIGTERM, wait, and fail if pgmux had died before, did not
            exit, or its log holds a sanitizer report. Its port is reserved for the whole run
            (a lock file in $TMPDIR/pgmux-test-ports), so runs may share a machine.

Environment
  PGMUX_BIN          pgmux under test (default: build/asan/pgmux)
  PGMUX_RELEASE_BIN  optimized pgmux for the memory test (default: build/release/pgmux)
  PGMUX_KEEP_CLUSTER=1  leave the cluster directory behind (its path is printed)
  PGMUX_IO_ENGINE    io_engine for every pgmux started (default: pgmux's own, epoll)
"""

import atexit
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import psycopg.rows
import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "tests" / "cluster.sh"

# Keys that go into [pool]; any other override goes into [pgmux].
POOL_KEYS = {
    "pool_mode",
    "max_open_conns",
    "max_idle_conns",
    "min_idle_conns",
    "max_db_connections",
    "max_user_connections",
    "conn_max_lifetime",
    "conn_max_idle_time",
    "warm_pools",
    # transaction and statement pooling (issue 3)
    "max_prepared_statements",
    "track_parameters",
    "pin_session_state",
}

# Test users and their passwords (tests/cluster.sh creates them).
PASSWORDS = {"app": "app-secret", "md5user": "md5-secret", "pwuser": "pw-secret", "demo": "demo"}

# What a sanitizer writes when it finds something; any of these in pgmux's log fails the test.
SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer", "ThreadSanitizer")

# Every pgmux log file this session produced, and every secret pgmux was given (passwords,
# their md5 forms, SCRAM StoredKey/ServerKey); _no_secrets_in_logs greps the first for the
# second when the session ends. Tests that hand pgmux other secrets (auth_query roles) add
# them with register_secret().
PGMUX_LOGS = []
SECRETS = set()


def register_secret(secret, user=None):
    """Remember a secret that must never reach a pgmux log: a password (with user: also its md5
    forms), an md5 hash, or a SCRAM-SHA-256 verifier (its StoredKey and ServerKey)."""
    if secret.startswith("SCRAM-SHA-256$"):
        keys = secret.split("$", 2)[2]
        SECRETS.update(k for k in keys.split(":") if k)
        return
    if len(secret) == 35 and secret.startswith("md5"):
        SECRETS.update((secret, secret[3:]))
        return
    SECRETS.add(secret)
    if user is not None:
        digest = hashlib.md5((secret + user).encode()).hexdigest()
        SECRETS.update((digest, "md5" + digest))


for _user, _password in PASSWORDS.items():
    # "demo" is also a user and database name that log lines rightly carry; its md5 forms are
    # still checked.
    if _password != _user:
        register_secret(_password, _user)
    else:
        _digest = hashlib.md5((_password + _user).encode()).hexdigest()
        SECRETS.update((_digest, "md5" + _digest))


@pytest.fixture(scope="session", autouse=True)
def _no_secrets_in_logs():
    """After the last test: no pgmux log line of the whole session holds a secret."""
    yield
    found = []
    for path in PGMUX_LOGS:
        try:
            text = Path(path).read_text(errors="replace")
        except FileNotFoundError:
            continue
        for secret in SECRETS:
            if secret in text:
                line = next(ln for ln in text.splitlines() if secret in ln)
                found.append(f"{path}: {line[:200]!r}")
    assert not found, "secrets in pgmux logs:\n" + "\n".join(found)


# pgmux listens with SO_REUSEPORT, so a second pgmux on a port that one already listens on
# starts without an error and the kernel splits the connections between the two. Two test runs
# on one machine (same user) that happened to pick the same free port then sent each other's
# clients to the wrong pgmux. A run reserves each port it hands out with a lock file held until
# it exits, and reuses its own reserved ports once they are free again, so that it holds few.
PORT_LOCK_DIR = Path(tempfile.gettempdir()) / "pgmux-test-ports"
_PORTS_HELD = {}  # port -> the open lock file
_PORTS_RECENT = []  # the last ports handed out: a test may take several before pgmux binds one


def _bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port():
    """A port on 127.0.0.1 that nothing listens on and that no other test run holds."""
    port = next((p for p in _PORTS_HELD if p not in _PORTS_RECENT and _bindable(p)), None)
    while port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            candidate = s.getsockname()[1]
        if candidate in _PORTS_HELD:
            continue
        PORT_LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
        f = open(PORT_LOCK_DIR / str(candidate), "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()  # another run holds it (it may be between two of its tests)
            continue
        try:
            same = os.stat(PORT_LOCK_DIR / str(candidate)).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            f.close()  # its holder removed it as we opened it: the lock is on a dead file
            continue
        _PORTS_HELD[candidate] = f
        port = candidate
    _PORTS_RECENT.append(port)
    del _PORTS_RECENT[:-8]
    return port


def _release_ports():
    """At exit: remove our lock files (still locked, so no other run can take a port from a file
    we are about to remove: it checks that the file it locked is still the one in the
    directory), so that the directory does not grow by a file per port over many runs."""
    for port, f in list(_PORTS_HELD.items()):
        try:
            os.unlink(PORT_LOCK_DIR / str(port))
        except OSError:
            pass
        f.close()
    _PORTS_HELD.clear()
    # Files that runs killed before their exit left behind: unlocked, so nobody holds them.
    try:
        names = os.listdir(PORT_LOCK_DIR)
    except OSError:
        return
    for name in names:
        try:
            with open(PORT_LOCK_DIR / name, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(PORT_LOCK_DIR / name)
        except OSError:
            pass  # held by a running run (BlockingIOError), or already gone


atexit.register(_release_ports)


def _binary(env_name, default):
    path = Path(os.environ.get(env_name) or REPO / default)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"{env_name}: {path} is not an executable (build it: make all asan)")
    return str(path)


# ---- failure reports: every fixture registers log sources on the test item -------------------


def _add_log_source(request, name, fn):
    request.node.__dict__.setdefault("_pgmux_log_sources", []).append((name, fn))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # A skipped test proves nothing: count it as a failure (xfail is not used in this suite).
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped tests count as failures in this suite: {report.longrepr}"
    if report.failed:
        for name, fn in getattr(item, "_pgmux_log_sources", []):
            try:
                text = fn()
            except Exception as e:  # a report must never hide the real failure
                text = f"(could not read: {e})"
            report.sections.append((f"{name} ({report.when})", text or "(empty)"))


# ---- the PostgreSQL cluster ------------------------------------------------------------------


class Cluster:
    def __init__(self, directory, env):
        self.dir = Path(directory)
        self.primary_port = int(env["PRIMARY_PORT"])
        self.replica_port = int(env["REPLICA_PORT"])
        self.socket_dir = env["SOCKET_DIR"]
        self.logs = {"primary": Path(env["PRIMARY_LOG"]), "replica": Path(env["REPLICA_LOG"])}

    def su(self, replica=False, dbname="postgres"):
        """A superuser (postgres) connection over the unix socket, autocommit."""
        port = self.replica_port if replica else self.primary_port
        return psycopg.connect(
            host=self.socket_dir,
            port=port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
            row_factory=psycopg.rows.dict_row,
        )

    def server_conns(self, user=None, dbname=None, state=None, replica=None, conns=None):
        """pg_stat_activity rows (dicts) of TCP client backends - pgmux's server connections,
        as the tests themselves only connect over the unix socket - on both nodes (or on one:
        replica=False/True), filtered by user, database and state. Each row has a 'node' key.
        Connections with an application_name starting with 'pgmux-monitor' are left out: that
        prefix is reserved for pgmux's own health checks."""
        sql = (
            "SELECT pid, usename, datname, state, application_name, query, backend_start,"
            " state_change FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND client_addr IS NOT NULL"
            " AND application_name NOT LIKE 'pgmux-monitor%%'"
        )
        args = []
        for col, val in (("usename", user), ("datname", dbname), ("state", state)):
            if val is not None:
                sql += f" AND {col} = %s"
                args.append(val)
        rows = []
        nodes = [False, True] if replica is None else [replica]
        for on_replica in nodes:
            if conns is not None:  # {on_replica: connection} kept open by the caller
                result = conns[on_replica].execute(sql, args).fetchall()
            else:
                with self.su(replica=on_replica) as c:
                    result = c.execute(sql, args).fetchall()
            for r in result:
                r["node"] = "replica" if on_replica else "primary"
                rows.append(r)
        return rows

    def count(self, **filters):
        return len(self.server_conns(**filters))

    def terminate(self, pid, replica=False):
        with self.su(replica=replica) as c:
            return c.execute("SELECT pg_terminate_backend(%s) AS ok", [pid]).fetchone()["ok"]

    def scram_verifier(self, user):
        """The SCRAM-SHA-256$... verifier PostgreSQL stores for user."""
        with self.su() as c:
            row = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [user]).fetchone()
        assert row and row["rolpassword"].startswith("SCRAM-SHA-256$"), row
        return row["rolpassword"]

    def log_text(self, node="primary"):
        return self.logs[node].read_text(errors="replace")

    def log_size(self, node="primary"):
        return self.logs[node].stat().st_size


def _read_env(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


@pytest.fixture(scope="session")
def cluster():
    # Directly under /tmp: when we run as root, the postgres user must reach the directory.
    directory = tempfile.mkdtemp(prefix="pgmux-it-")
    proc = subprocess.run(
        [str(CLUSTER_SH), "start", directory], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        logs = ""
        for name in ("primary.log", "replica.log", "initdb.log", "basebackup.log"):
            p = Path(directory) / name
            if p.exists():
                logs += f"\n== {name}\n" + p.read_text(errors="replace")[-5000:]
        subprocess.run([str(CLUSTER_SH), "stop", directory])
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"tests/cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}{logs}")
    c = Cluster(directory, _read_env(Path(directory) / "env"))
    yield c
    subprocess.run([str(CLUSTER_SH), "stop", directory], capture_output=True)
    if os.environ.get("PGMUX_KEEP_CLUSTER") == "1":
        print(f"\ncluster kept in {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def su(cluster):
    """A superuser connection to the primary (autocommit, dict rows)."""
    with cluster.su() as c:
        yield c


@pytest.fixture(autouse=True)
def _cluster_logs_on_failure(request):
    """Attach the PostgreSQL log lines written during a failing test to its report."""
    if "cluster" not in request.fixturenames:
        yield
        return
    c = request.getfixturevalue("cluster")
    start = {node: c.log_size(node) for node in ("primary", "replica")}

    def tail(node):
        with open(c.logs[node], "rb") as f:
            f.seek(start[node])
            return f.read()[-20000:].decode(errors="replace")

    _add_log_source(request, "PostgreSQL primary log", lambda: tail("primary"))
    _add_log_source(request, "PostgreSQL replica log", lambda: tail("replica"))
    yield


# ---- pgmux -----------------------------------------------------------------------------------


class Pgmux:
    """One running pgmux process."""

    def __init__(self, proc, port, workdir, log_path, config):
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.dir = workdir
        self.log_path = log_path
        self.config = config  # {section: {key: value}} as written
        self.exited_on_purpose = False  # set by tests that stop pgmux themselves

    def dsn(self, user="app", password="app-secret", dbname="appdb", **params):
        """A libpq connection string for pgmux. password=None leaves it out."""
        parts = {"host": "127.0.0.1", "port": self.port, "user": user, "dbname": dbname,
                 "connect_timeout": 10}
        if password is not None:
            parts["password"] = password
        parts.update(params)
        return " ".join(f"{k}='{v}'" for k, v in parts.items())

    def connect(self, user="app", password="app-secret", dbname="appdb", autocommit=True,
                **params):
        """A psycopg (3) connection through pgmux."""
        return psycopg.connect(self.dsn(user, password, dbname, **params), autocommit=autocommit)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        """VmRSS of the pgmux process in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/PID/status")

    def stop(self):
        """SIGTERM and wait; returns a list of problems (empty when all is well)."""
        problems = []
        rc = self.proc.poll()
        if rc is not None and self.exited_on_purpose:
            pass  # the test stopped it and checked how it went
        elif rc is not None:
            problems.append(f"pgmux died during the test (exit status {rc})")
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append("pgmux did not exit within 15 s of SIGTERM")
                rc = None
            if rc not in (None, 0, -signal.SIGTERM):
                problems.append(f"pgmux exited with status {rc} after SIGTERM")
        log = self.log_text()
        for marker in SANITIZER_MARKERS:
            if marker in log:
                problems.append(f"pgmux log contains {marker!r}")
        return problems


def write_userlist(path, entries):
    """PgBouncer-style userlist: one `"user" "secret"` line per entry."""
    with open(path, "w") as f:
        for user, secret in entries:
            if secret != user:
                register_secret(secret, user)
            f.write(f'"{user}" "{secret}"\n')


def userlist_entries(cluster, variant):
    """The auth_file contents for a variant:
    plain   every test user with its plaintext password
    hashed  app with PostgreSQL's real SCRAM verifier, md5user with its md5 form
            ("md5" + md5(password + user)), the others plaintext
    or an explicit list of (user, secret) pairs."""
    if variant == "plain":
        return list(PASSWORDS.items())
    if variant == "hashed":
        md5 = "md5" + hashlib.md5((PASSWORDS["md5user"] + "md5user").encode()).hexdigest()
        return [
            ("app", cluster.scram_verifier("app")),
            ("md5user", md5),
            ("pwuser", PASSWORDS["pwuser"]),
            ("demo", PASSWORDS["demo"]),
        ]
    return list(variant)


def _render_ini(config):
    out = []
    for section, keys in config.items():
        out.append(f"[{section}]")
        for k, v in keys.items():
            if v is not None:
                out.append(f"{k} = {v}")
        out.append("")
    return "\n".join(out)


def _wait_listening(proc, port, log_path, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"pgmux exited with status {proc.returncode} at start:\n"
                + log_path.read_text(errors="replace")[-5000:]
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"pgmux did not listen on {port} within {timeout}s")


@pytest.fixture
def pgmux(cluster, request, tmp_path):
    """Factory: pgmux(**overrides) -> Pgmux. Keyword arguments:
      any [pgmux] or [pool] key (see POOL_KEYS); None removes a default key
      userlist="plain" | "hashed" | [(user, secret), ...]
      nodes={name: {key: value}} replaces the two [node.*] sections
      sections={name: {key: value}} extra sections written after the nodes, e.g.
               {"database.appdb": {"pool_mode": "session"}, "user.pwuser": {...}}
      binary=path  another pgmux executable (default env PGMUX_BIN or build/asan/pgmux)
      hba=text     written to hba.conf next to proxy.ini and named by hba_file
    """
    started = []

    def start(userlist="plain", nodes=None, binary=None, sections=None, hba=None, **overrides):
        n = len(started)
        workdir = tmp_path / f"pgmux{n}"
        workdir.mkdir()
        write_userlist(workdir / "userlist.txt", userlist_entries(cluster, userlist))
        if hba is not None:
            (workdir / "hba.conf").write_text(hba)
            overrides["hba_file"] = str(workdir / "hba.conf")
        # listen_port=... starts a second pgmux on a port another one already listens on
        # (SO_REUSEPORT restarts, tests/integration/test_restart.py).
        port = int(overrides["listen_port"]) if "listen_port" in overrides else _free_port()
        config = {
            "pgmux": {
                "listen_addr": "127.0.0.1",
                "listen_port": port,
                "workers": 2,
                "max_client_conn": 100,
                "auth_type": "scram-sha-256",
                "auth_file": str(workdir / "userlist.txt"),
                "server_reset_query": "DISCARD ALL",
                "client_idle_timeout": 0,
                "query_wait_timeout": "30s",
                # teardown sends SIGTERM and waits 15 s; a test that leaves a transaction open
                # must not make pgmux wait for it longer than that
                "shutdown_timeout": "5s",
                "log_level": "info",
                # pgmux's default is on; the suites written before routing check server
                # identity (pg_backend_pid) across transactions on one node, so tests that
                # route ask for it (test_routing.py)
                "read_write_split": "off",
                # PGMUX_IO_ENGINE=io_uring runs the suite on the batched path (make
                # check-integration-uring)
                "io_engine": os.environ.get("PGMUX_IO_ENGINE") or None,
            },
            "pool": {
                "pool_mode": "session",
                "max_open_conns": 20,
                "max_idle_conns": None,  # pgmux default: = max_open_conns
                "min_idle_conns": 0,
                "conn_max_lifetime": "1h",
                "conn_max_idle_time": "10m",
            },
        }
        for key, value in overrides.items():
            section = "pool" if key in POOL_KEYS else "pgmux"
            config[section][key] = value
        if nodes is None:
            nodes = {
                "primary": {"host": "127.0.0.1", "port": cluster.primary_port, "role": "primary"},
                "replica": {"host": "127.0.0.1", "port": cluster.replica_port, "role": "replica"},
            }
        for name, keys in nodes.items():
            config[f"node.{name}"] = dict(keys)
        for name, keys in (sections or {}).items():
            assert name not in config, f"sections: [{name}] is already written"
            config[name] = dict(keys)
        ini = workdir / "proxy.ini"
        ini.write_text(_render_ini(config))
        log_path = workdir / "pgmux.log"
        PGMUX_LOGS.append(log_path)

        env = dict(os.environ)
        env["ASAN_OPTIONS"] = "detect_leaks=1:halt_on_error=1:abort_on_error=0:" + env.get(
            "ASAN_OPTIONS", ""
        )
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:" + env.get("UBSAN_OPTIONS", "")
        exe = binary or _binary("PGMUX_BIN", "build/asan/pgmux")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [exe, "-c", str(ini)], stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=str(workdir),
            )
        inst = Pgmux(proc, port, workdir, log_path, config)
        started.append(inst)
        _add_log_source(request, f"pgmux log #{n} ({ini})", inst.log_text)
        _wait_listening(proc, port, log_path)
        return inst

    yield start

    problems = []
    for inst in started:
        problems += inst.stop()
    # Each test starts from a clean slate: wait until the stopped pgmux's server connections
    # have left pg_stat_activity (backends exit asynchronously after their socket closes).
    if started:
        try:
            deadline = time.monotonic() + 10
            while cluster.count() and time.monotonic() < deadline:
                time.sleep(0.05)
            left = cluster.server_conns()
            if left:
                problems.append(f"server connections left after pgmux exited: {left}")
        except Exception as e:
            problems.append(f"could not check pg_stat_activity: {e}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


class PeakSampler:
    """Samples cluster.count(**filters) (pgmux's server connections in pg_stat_activity) in a
    background thread until stop(); .peak is the highest count seen, .samples how many."""

    def __init__(self, cluster, interval=0.05, **filters):
        import threading

        self.cluster = cluster
        self.filters = filters
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        # Connections kept open: a login per sample made a loaded machine sample a few times a
        # second, too rarely to see a peak.
        conns = {}
        try:
            for on_replica in (False, True):
                conns[on_replica] = self.cluster.su(replica=on_replica)
            while not self._stop.is_set():
                rows = self.cluster.server_conns(conns=conns, **self.filters)
                self.peak = max(self.peak, len(rows))
                self.samples += 1
                self._stop.wait(self.interval)
        except Exception as e:  # reported by stop()
            self.error = e
        finally:
            for c in conns.values():
                c.close()

    def stop(self):
        """Stop sampling; returns the peak. Raises what the sampler hit, if anything."""
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise self.error
        return self.peak


@pytest.fixture
def conn_peak(cluster):
    """Factory: conn_peak(user=..., dbname=..., interval=0.05) starts a PeakSampler over
    cluster.count(...); stopped at teardown if the test did not stop it."""
    samplers = []

    def start(interval=0.05, **filters):
        s = PeakSampler(cluster, interval=interval, **filters)
        samplers.append(s)
        return s

    yield start
    for s in samplers:
        s._stop.set()
        s._thread.join(10)


@pytest.fixture
def release_binary():
    """The optimized pgmux (env PGMUX_RELEASE_BIN, default build/release/pgmux)."""
    return _binary("PGMUX_RELEASE_BIN", "build/release/pgmux")
