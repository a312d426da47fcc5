"""What a login costs pgmux in system calls (a new connection per transaction, README
"Performance"): socket options inherited from the listening socket instead of set per client,
TCP_DEFER_ACCEPT and the first read straight after accept, the whole login answer in one
write, one accept per wake-up unless connections queue up. The system calls are counted with
strace attached to the running pgmux, and sockets are inspected from inside pgmux with
pidfd_getfd.
"""

import ctypes
import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import time

import psycopg
import pytest

import pgwire
from helpers import wait_for
from conftest import PASSWORDS, _free_port, register_secret, userlist_entries

SYS_PIDFD_GETFD = 438  # x86_64 and aarch64 alike
_libc = ctypes.CDLL(None, use_errno=True)


def _steal(pid, fd):
    """A duplicate of pgmux's descriptor fd as a socket object of ours (pidfd_getfd)."""
    pidfd = os.pidfd_open(pid)
    try:
        dup = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    finally:
        os.close(pidfd)
    return socket.socket(fileno=dup)


def _pgmux_sockets(pid):
    """(fd, socket) for each TCP socket pgmux holds."""
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                continue
            s = _steal(pid, int(name))
        except OSError:
            continue
        if s.family in (socket.AF_INET, socket.AF_INET6) and s.type == socket.SOCK_STREAM:
            out.append((int(name), s))
        else:
            s.close()
    return out


def test_client_sockets_inherit_options_from_the_listener(pgmux):
    """The listening socket carries TCP_NODELAY, SO_KEEPALIVE and TCP_DEFER_ACCEPT; an accepted
    client socket has TCP_NODELAY and SO_KEEPALIVE without a setsockopt of its own."""
    px = pgmux(workers=1)
    c = pgwire.connect(px.port, "app", "appdb", "app-secret")
    try:
        mine = c.sock.getsockname()
        socks = _pgmux_sockets(px.proc.pid)
        try:
            listeners = [
                s
                for _, s in socks
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                and s.getsockname()[1] == px.port
            ]
            accepted = [s for _, s in socks if _peer(s) == mine]
            assert len(listeners) == 1 and len(accepted) == 1, (listeners, accepted)
            lst, cli = listeners[0], accepted[0]
            assert lst.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
            for s in (lst, cli):
                assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
                assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        finally:
            for _, s in socks:
                s.close()
        assert c.query("SELECT 1") == [["1"]]
    finally:
        c.terminate()


def _peer(s):
    try:
        return s.getpeername()
    except OSError:
        return None


# ---- system calls per login ----------------------------------------------------------------

TRACED = (
    "accept4,accept,recvfrom,recvmsg,read,sendto,sendmsg,write,writev,close,epoll_wait,"
    "epoll_pwait,epoll_ctl,fcntl,setsockopt,shutdown"
)
_LINE = re.compile(r"^(\d+)\s+(\w+)\((\d+)?(.*?)\)?\s+=\s+(-?\d+)")


def _attach_strace(pid, out, traced=TRACED):
    st = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", f"trace={traced}", "-e", "signal=none", "-o", str(out),
         "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # attached once every thread of pgmux names a tracer
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tasks = os.listdir(f"/proc/{pid}/task")
        traced = 0
        for t in tasks:
            try:
                with open(f"/proc/{pid}/task/{t}/status") as f:
                    traced += any(
                        ln.startswith("TracerPid:") and ln.split()[1] != "0" for ln in f
                    )
            except OSError:
                pass
        if traced == len(tasks):
            return st
        time.sleep(0.02)
    st.kill()
    raise AssertionError("strace did not attach")


def _sessions(trace):
    """Per accepted client socket: the list of (syscall, return value) made on it, in order,
    from its accept4 to its close; plus the accept4 calls that found the queue empty, and
    for each session whether an epoll_wait ran between its accept and its first read."""
    sessions, open_fd, eagain = [], {}, 0
    last_by_thread = {}
    for line in trace.splitlines():
        if "resumed>" in line:
            # "<... recvfrom resumed>": strace split a call another thread interrupted
            m = re.match(r"^(\d+)\s+<\.\.\. (\w+) resumed>.*=\s+(-?\d+)", line)
            if not m:
                continue
            tid, name, ret = m.group(1), m.group(2), int(m.group(3))
            fd = last_by_thread.get(tid)
        else:
            unfinished = "<unfinished" in line
            m = _LINE.match(line.replace(" <unfinished ...>", " = 0") if unfinished else line)
            if not m:
                continue
            tid, name, fd, ret = m.group(1), m.group(2), m.group(3), int(m.group(5))
            if name == "epoll_ctl":  # epoll_ctl(epfd, op, fd, ...): the socket is the third
                e = re.search(r"epoll_ctl\(\d+, EPOLL_CTL_\w+, (\d+)", line)
                fd = e.group(1) if e else None
            last_by_thread[tid] = fd
            if unfinished:
                continue
        if name in ("accept4", "accept"):
            if ret < 0:
                eagain += 1
            else:
                s = {"fd": ret, "ops": [], "tid": tid, "waited": False, "read": False}
                sessions.append(s)
                open_fd[ret] = s
            continue
        if name in ("epoll_wait", "epoll_pwait"):
            for s in open_fd.values():
                if s["tid"] == tid and not s["read"]:
                    s["waited"] = True
            continue
        if fd is None or int(fd) not in open_fd:
            continue
        s = open_fd[int(fd)]
        s["ops"].append((name, ret))
        if name in ("recvfrom", "recvmsg", "read") and ret > 0:
            s["read"] = True
        if name == "close":
            del open_fd[int(fd)]
    return sessions, eagain


WRITES = ("sendto", "sendmsg", "write", "writev")


def test_login_system_calls(pgmux, tmp_path):
    """Logins with an SSLRequest first (as libpq's sslmode=prefer sends), by SCRAM and by md5,
    each running one query, with strace attached: per session one accept4 and no accept4 that
    finds the queue empty, no fcntl, setsockopt or shutdown, the SSLRequest read straight
    after accept (no epoll_wait in between), one epoll_ctl (the registration) during the
    login, and one write per step of the exchange: 'N', the authentication requests, then
    the whole login answer (SASLFinal or nothing, AuthenticationOk, ParameterStatus...,
    BackendKeyData, ReadyForQuery) in a single write."""
    px = pgmux(workers=1, pool_mode="transaction", userlist="hashed", io_engine="epoll")
    # user, password, authentication requests written before the login answer
    users = [("app", "app-secret", 2), ("md5user", "md5-secret", 1)]
    for user, pw, _ in users:  # warm: a server connection and the pool's welcome set
        c = pgwire.connect(px.port, user, "appdb", pw)
        assert c.query("SELECT 1") == [["1"]]
        c.terminate()
    out = tmp_path / "strace.txt"
    st = _attach_strace(px.proc.pid, out)
    rounds = 4
    try:
        for _ in range(rounds):
            for user, pw, _ in users:
                c = pgwire.RawConn(px.port)
                c.send(pgwire.ssl_request())
                assert c.recv_byte() == b"N"
                c.login(user, "appdb", pw)
                assert c.query("SELECT 2") == [["2"]]
                c.terminate()
        # pgmux has closed every session (it reads the Terminate, then closes)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sessions, _ = _sessions(out.read_text())
            if len(sessions) == 2 * rounds and all(s["ops"] and s["ops"][-1][0] == "close"
                                                   for s in sessions):
                break
            time.sleep(0.05)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(timeout=10)
    sessions, eagain = _sessions(out.read_text())
    assert len(sessions) == 2 * rounds, out.read_text()[-3000:]
    assert eagain == 0, "an accept4 found the queue empty"
    for i, s in enumerate(sessions):
        user, _, auth_writes = users[i % 2]
        ops = [name for name, _ in s["ops"]]
        where = f"{user}: {s['ops']}"
        assert not {"fcntl", "setsockopt", "shutdown"} & set(ops), where
        assert ops[0] in ("recvfrom", "recvmsg", "read") and s["ops"][0][1] == 8, where
        assert not s["waited"], "epoll_wait between accept and the first read: " + where
        writes = [k for k, name in enumerate(ops) if name in WRITES]
        # 'N', the authentication requests, the login answer, the query's result
        assert len(writes) == 1 + auth_writes + 1 + 1, where
        login = ops[: writes[1 + auth_writes] + 1]
        assert login.count("epoll_ctl") == 1, where
        assert ops[-1] == "close" and ops.count("close") == 1, where


def test_burst_of_connections(pgmux, tmp_path):
    """300 clients connect at once and all log in: past the first wake-up the listener is
    drained in bursts, none is left in the queue. Their 600 log lines (connect, login, at
    log_level info) reach the log file in batches: the logger thread is not woken, and does
    not write, once per line."""
    px = pgmux(workers=1, pool_mode="transaction", userlist="hashed", max_client_conn=400,
               log_level="info")
    out = tmp_path / "strace.txt"
    st = _attach_strace(px.proc.pid, out, "write,futex")
    conns = []
    try:
        for _ in range(300):
            c = pgwire.RawConn(px.port)
            c.send(pgwire.startup_packet({"user": "md5user", "database": "appdb"}))
            conns.append(c)
        for c in conns:
            mtype, payload = c.recv_msg()
            assert mtype == b"R" and struct.unpack("!i", payload[:4])[0] == pgwire.AUTH_MD5
            inner = pgwire.md5_secret("md5user", "md5-secret")[3:]
            outer = "md5" + hashlib.md5(inner.encode() + payload[4:8]).hexdigest()
            c.send(pgwire.message(b"p", outer.encode() + b"\0"))
        for c in conns:
            while True:
                mtype, payload = c.recv_msg()
                assert mtype != b"E", pgwire.parse_error_fields(payload)
                if mtype == b"Z":
                    break
        assert conns[-1].query("SELECT 3") == [["3"]]
        wait_for(lambda: px.log_text().count("event=login ") >= 300, timeout=10,
                 what="every login line in the log")
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(timeout=10)
        for c in conns:
            c.terminate()
    trace = out.read_text()
    writes = len(re.findall(r"^\d+\s+write\(2,", trace, re.M))
    futexes = len(re.findall(r"^\d+\s+futex\(", trace, re.M))
    # one write and two futex calls or more per line when the logger is woken for each (607
    # and 2145 here before); the futex calls left are mostly other threads' and ASan's
    assert writes < 150 and futexes < 600, (writes, futexes)


# ---- no key derivation per login --------------------------------------------------------


def _derivations(mport):
    with socket.create_connection(("127.0.0.1", mport), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    m = re.search(rb"^pgmux_auth_key_derivations_total (\d+)$", data, re.M)
    assert m, data[-2000:]
    return int(m.group(1))


def test_logins_derive_no_keys_once_cached(cluster, pgmux):
    """PBKDF2 runs once per worker and secret, not per login, wherever pgmux needs it: a
    plaintext auth_file password in a SCRAM exchange (pwuser), a cleartext password checked
    against a SCRAM secret (app, hba method password), a plaintext secret that auth_query
    returned (cx_plain). A wrong cleartext password costs its own derivation and evicts
    nothing; an md5 secret needs none."""
    lookup, lookup_pw, role, role_pw = "cx_lookup", "cx-lookup-pw", "cx_plain", "cx-plain-pw"
    register_secret(lookup_pw, lookup)
    register_secret(role_pw, role)
    with cluster.su() as c:
        for name, pw, extra in ((lookup, lookup_pw, " SUPERUSER"), (role, role_pw, "")):
            if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone():
                c.execute(f"CREATE ROLE {name} LOGIN{extra} PASSWORD '{pw}'")
        c.execute(f"GRANT ALL ON DATABASE appdb TO {role}")
    mport = _free_port()
    users = userlist_entries(cluster, "hashed") + [(lookup, lookup_pw)]
    px = pgmux(
        workers=1, pool_mode="transaction", metrics_port=mport, userlist=users,
        hba="host all app 127.0.0.1/32 password\nhost all all 127.0.0.1/32 scram-sha-256\n",
        auth_user=lookup, auth_dbname="postgres",
        auth_query=f"SELECT usename, '{role_pw}' FROM pg_shadow WHERE usename = $1",
    )
    # user, password, authentication request, derivations: for the first login, for a wrong
    # password (only a cleartext one is run through PBKDF2: a SCRAM proof is checked against
    # the cached keys)
    cases = [
        ("pwuser", PASSWORDS["pwuser"], pgwire.AUTH_SASL, 1, 0),
        ("app", PASSWORDS["app"], pgwire.AUTH_CLEARTEXT, 1, 1),
        (role, role_pw, pgwire.AUTH_SASL, 1, 0),
        ("md5user", PASSWORDS["md5user"], pgwire.AUTH_MD5, 0, 0),
    ]
    for user, pw, method, first, wrong in cases:
        before = _derivations(mport)
        for i in range(5):
            c = pgwire.connect(px.port, user, "appdb", pw)
            assert c.auth_requests[0] == method, (user, c.auth_requests)
            assert c.query("SELECT current_user") == [[user]]
            c.terminate()
            if i == 1:
                assert pgwire.login_error(px.port, user, "appdb", "wrong").sqlstate == "28P01"
        after = _derivations(mport)
        assert after - before == first + wrong, (user, before, after)


def test_welcome_carries_the_clients_own_settings(cluster, pgmux):
    """Transaction pooling answers a login from the pool's welcome, without a server: the
    server's ParameterStatus messages in the server's order, each replaced by the client's own
    value where its startup packet set one (here the first, a middle and the last of the
    server's list, names in any case), every other one as the server sent it. (Values spelled
    as the server spells them: test_welcome_spells_settings_as_the_server_does.)"""
    px = pgmux(pool_mode="transaction")
    direct = pgwire.connect(cluster.primary_port, "app", "appdb", "app-secret")
    server = dict(direct.parameters)
    direct.close()
    names = list(server)
    first, last = names[0], names[-1]
    middle = "DateStyle"
    assert first == "application_name" and last == "TimeZone" and middle in names, names
    mine = {"application_name": "welcome-test", "datestyle": "SQL, DMY",
            "timezone": "Pacific/Chatham"}
    warm = pgwire.connect(px.port, "app", "appdb", "app-secret")  # the pool learns its welcome
    warm.close()
    for extra, want in (({}, {}),
                        (mine, {"application_name": "welcome-test", "DateStyle": "SQL, DMY",
                                "TimeZone": "Pacific/Chatham"}),
                        ({"DateStyle": "German, DMY"}, {"DateStyle": "German, DMY"})):
        c = pgwire.connect(px.port, "app", "appdb", "app-secret", extra=extra)
        got = list(c.parameters.items())
        expect = [(k, want.get(k, v)) for k, v in server.items()]
        # pgmux's welcome may add nothing and lose nothing; session_authorization and
        # is_superuser are the server's for this user either way
        assert got == expect, (extra, got)
        # and the session runs with them
        assert c.query("SHOW DateStyle")[0][0] == want.get("DateStyle", server["DateStyle"])
        c.terminate()


# Startup values the server reports in another spelling than the client's.
RESPELLED = [("DateStyle", "ISO"), ("client_encoding", "utf8"), ("TimeZone", "utc"),
             ("IntervalStyle", "ISO_8601"), ("application_name", "h\u00e9llo"),
             ("standard_conforming_strings", "ON"), ("datestyle", "sql,dmy")]


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_welcome_spells_settings_as_the_server_does(cluster, pgmux, mode):
    """PostgreSQL reports a startup setting in its own spelling (DateStyle "ISO" as "ISO, MDY",
    client_encoding "utf8" as "UTF8", a non-ASCII application_name with "?"), and drivers act
    on what it reports. A client gets the server's spelling: in session pooling in its
    welcome; in transaction pooling, where the welcome comes before any server, the first
    client of a spelling gets a ParameterStatus with the server's value before its first
    result, and later ones (pgmux has learned it) in their welcome."""
    px = pgmux(pool_mode=mode, workers=1)
    warm = pgwire.connect(px.port, "app", "appdb", "app-secret")  # the pool learns its welcome
    warm.close()
    for rnd in range(2):
        for name, value in RESPELLED:
            d = pgwire.connect(cluster.primary_port, "app", "appdb", "app-secret",
                               extra={name: value})
            server = {k: v for k, v in d.parameters.items() if k.lower() == name.lower()}
            shown = d.query(f"SHOW {name}")
            d.close()
            assert len(server) == 1 and list(server.values())[0] != value, server
            c = pgwire.connect(px.port, "app", "appdb", "app-secret", extra={name: value})
            welcome = {k: c.parameters[k] for k in server}
            if mode == "session" or rnd == 1:
                assert welcome == server, (mode, rnd, name, welcome, server)
            assert c.query(f"SHOW {name}") == shown
            after = {k: c.parameters[k] for k in server}
            assert after == server, (mode, rnd, name, after, server)
            c.terminate()


def test_datestyle_of_a_login_ignores_the_last_clients(cluster, pgmux):
    """Setting DateStyle to a value that names only the output format ("ISO") keeps the
    current order. Through one server connection, a client that logged in with "SQL, DMY"
    must not leave its order to the next one, which logged in with "ISO": that client reads
    01/02/2024 as PostgreSQL reads it for a login of its own (2 January)."""
    px = pgmux(pool_mode="transaction", max_open_conns=1, workers=1)
    read = "SELECT to_char('01/02/2024'::date, 'YYYY-MM-DD')"
    for first in ("SQL, DMY", "dmy"):
        a = pgwire.connect(px.port, "app", "appdb", "app-secret", extra={"DateStyle": first})
        assert a.query(read) == [["2024-02-01"]]
        for second in ("ISO", "iso", "Postgres", "German"):
            d = pgwire.connect(cluster.primary_port, "app", "appdb", "app-secret",
                               extra={"DateStyle": second})
            want = (d.parameters["DateStyle"], d.query(read))
            d.close()
            b = pgwire.connect(px.port, "app", "appdb", "app-secret",
                               extra={"DateStyle": second})
            got = b.query(read)
            assert (b.parameters["DateStyle"], got) == want, (first, second)
            # and the first client keeps its own order on the same server connection
            assert a.query(read) == [["2024-02-01"]]
            b.terminate()
        a.terminate()


# "options" values and the settings PostgreSQL makes of them (as SHOW shows them).
OPTIONS = [
    ("-c search_path=pg_catalog,\\ public -c statement_timeout=4321",
     {"search_path": "pg_catalog, public", "statement_timeout": "4321ms"}),
    ("--application-name=opt-app  -cextra_float_digits=1",
     {"application_name": "opt-app", "extra_float_digits": "1"}),
    ("-c pgmux_test.k=a=b --DateStyle=SQL,DMY",
     {"pgmux_test.k": "a=b", "DateStyle": "SQL, DMY"}),
]


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_options_settings_reach_the_session(cluster, pgmux, mode):
    """libpq's "options" (PGOPTIONS; "-c name=value", "--name=value", backslash escapes) sets
    what PostgreSQL would set for it, and in transaction pooling keeps it per client across one
    shared server connection; a startup parameter of the same name wins, as PostgreSQL applies
    those after the options."""
    # session pooling holds a server connection per client
    px = pgmux(pool_mode=mode, max_open_conns=2 if mode == "transaction" else 8, workers=1)
    both = {"options": "-c application_name=from-options -c statement_timeout=1s",
            "application_name": "from-packet"}
    cases = OPTIONS + [(both, {"application_name": "from-packet", "statement_timeout": "1s"})]
    conns = []
    for opts, want in cases:
        extra = opts if isinstance(opts, dict) else {"options": opts}
        d = pgwire.connect(cluster.primary_port, "app", "appdb", "app-secret", extra=extra)
        assert {k: d.query(f"SHOW {k}")[0][0] for k in want} == want  # PostgreSQL agrees
        d.close()
        c = pgwire.connect(px.port, "app", "appdb", "app-secret", extra=extra)
        conns.append((c, want))
    for _ in range(2):  # interleaved: in transaction pooling they share server connections
        for c, want in conns:
            assert {k: c.query(f"SHOW {k}")[0][0] for k in want} == want
    for c, _ in conns:
        c.terminate()

    # a driver's own connection string
    with psycopg.connect(host="127.0.0.1", port=px.port, user="app", dbname="appdb",
                         password="app-secret", sslmode="disable",
                         options="-c statement_timeout=2500 -c search_path=pg_catalog") as c:
        assert c.execute("SHOW statement_timeout").fetchone()[0] == "2500ms"
        assert c.execute("SHOW search_path").fetchone()[0] == "pg_catalog"


def test_options_that_are_not_settings_are_refused(pgmux):
    """A server switch other than -c (say "-d 5", a debug level) is no setting pgmux can carry
    to a pooled connection: FATAL 0A000 naming it. A malformed value gets PostgreSQL's
    42601. pgmux goes on serving."""
    px = pgmux(pool_mode="transaction")
    for opts, code, says in (("-d 5", "0A000", 'server switch "-d"'),
                             ("-c statement_timeout=1 -F", "0A000", 'server switch "-F"'),
                             ("statement_timeout=1", "42601", "invalid command-line argument"),
                             ("-c work_mem", "42601", "-c work_mem requires a value"),
                             ("-c", "42601", "requires an argument")):
        with pytest.raises(pgwire.PgError) as e:
            pgwire.connect(px.port, "app", "appdb", "app-secret", extra={"options": opts})
        assert (e.value.sqlstate, e.value.fields.get("S")) == (code, "FATAL"), opts
        assert says in e.value.message, (opts, e.value.message)
    many = " ".join(f"-c pgmux_test.k{i}={i}" for i in range(63))
    with pytest.raises(pgwire.PgError) as e:
        pgwire.connect(px.port, "app", "appdb", "app-secret", extra={"options": many})
    assert e.value.sqlstate == "0A000" and "more than 64 settings" in e.value.message
    c = pgwire.connect(px.port, "app", "appdb", "app-secret", extra={"options": ""})
    assert c.query("SELECT 1") == [["1"]]
    c.terminate()


def test_startup_parameters_repeated_or_piled_up(pgmux):
    """A login's wanted settings come from its startup packet, which the client writes: a name
    given twice, in any case, counts once, with its last value, as PostgreSQL takes it; 62
    settings besides user and database, the most a packet may hold, all reach the session; one
    more is refused with 08P01, and pgmux goes on serving."""
    px = pgmux(pool_mode="transaction")
    c = pgwire.connect(px.port, "app", "appdb", "app-secret",
                       extra=[("application_name", "first"), ("DateStyle", "SQL, DMY"),
                              ("application_name", "second"), ("datestyle", "ISO, YMD")])
    assert c.parameters["application_name"] == "second"
    assert c.parameters["DateStyle"] == "ISO, YMD"
    assert c.query("SHOW application_name") == [["second"]]
    assert c.query("SHOW DateStyle") == [["ISO, YMD"]]
    c.terminate()

    many = [(f"pgmux_test.k{i}", str(i)) for i in range(62)]
    c = pgwire.connect(px.port, "app", "appdb", "app-secret", extra=many)
    assert c.query("SELECT current_setting('pgmux_test.k0'), "
                   "current_setting('pgmux_test.k61')") == [["0", "61"]]
    c.terminate()

    raw = pgwire.RawConn(px.port)
    try:
        with pytest.raises(pgwire.PgError) as e:
            raw.login("app", "appdb", "app-secret", extra=many + [("pgmux_test.k62", "62")])
        assert e.value.sqlstate == "08P01", e.value.message
        assert "invalid startup packet" in e.value.message
    finally:
        raw.close()
    # the reason is the log's
    wait_for(lambda: "too many startup parameters" in px.log_text(), what="the reason logged")
    with px.connect() as ok:
        assert ok.execute("SELECT 1").fetchone()[0] == 1
