"""Access control: hba_file rules (by connection type, database, user and client address, with
their methods), max_client_conn_per_addr, and the limits that keep a hostile or slow client from
hurting anyone else (startup and message sizes, client_login_timeout, silent sockets).

Two client addresses come from the loopback network: every 127.0.0.0/8 address is local on
Linux, so a socket bound to 127.0.0.2 reaches pgmux on 127.0.0.1 from a second address."""

import os
import resource
import socket
import statistics
import struct
import subprocess
import time

import psycopg
import pytest

import pgwire
from helpers import wait_for

OTHER = "127.0.0.2"

HBA = """\
# TYPE  DATABASE    USER           ADDRESS        METHOD
host    appdb       pwuser         127.0.0.1/32   reject
host    appdb       app,md5user    127.0.0.1/32   scram-sha-256
host    "postgres"  app            127.0.0.0/8    md5
host    appdb       all            127.0.0.2/32   password   # a second client address
hostssl all         all            0.0.0.0/0      trust
host    all         all            ::1/128        trust
"""


def raw_errors(data):
    """ErrorResponse fields in bytes a refused client received (other messages are skipped)."""
    out, pos = [], 0
    while pos + 5 <= len(data):
        mtype = data[pos : pos + 1]
        (length,) = struct.unpack("!i", data[pos + 1 : pos + 5])
        if mtype == b"E":
            out.append(pgwire.parse_error_fields(data[pos + 5 : pos + 1 + length]))
        pos += 1 + length
    return out


def refused(port, payload, sqlstate, source=None, timeout=5):
    """Send payload on a fresh connection; the answer must end in one ErrorResponse with
    sqlstate, then EOF. Returns its fields."""
    c = pgwire.RawConn(port, source=source)
    try:
        c.send(payload)
        data = c.read_until_eof(timeout=timeout)
    finally:
        c.close()
    errs = raw_errors(data)
    assert len(errs) == 1 and errs[0].get("C") == sqlstate, (data, errs)
    return errs[0]


# ---- hba_file -------------------------------------------------------------------------------


def test_hba_rules_by_user_database_and_address(pgmux):
    """The first matching line decides: by user, by database, by source address; reject lines
    and a missing line both refuse with 28000 before any password is asked."""
    px = pgmux(hba=HBA, log_level="debug")

    c = pgwire.connect(px.port, "app", "appdb", "app-secret")
    assert c.auth_requests[0] == pgwire.AUTH_SASL
    assert c.query("SELECT current_user") == [["app"]]
    c.terminate()

    # Same database and address, another user: the reject line.
    e = pgwire.login_error(px.port, "pwuser", "appdb", "pw-secret")
    assert e.sqlstate == "28000", e.fields
    assert e.message == (
        'pgmux hba_file rejects connection for host "127.0.0.1", user "pwuser", database '
        '"appdb", no encryption'
    )

    # Another database (quoted name in the file): md5.
    c = pgwire.connect(px.port, "app", "postgres", "app-secret")
    assert c.auth_requests[0] == pgwire.AUTH_MD5
    assert c.query("SELECT current_database()") == [["postgres"]]
    c.terminate()

    # Another address: neither the reject nor the scram line applies, the password line does.
    for user, password in (("app", "app-secret"), ("pwuser", "pw-secret")):
        c = pgwire.connect(px.port, user, "appdb", password, source=OTHER)
        assert c.auth_requests == [pgwire.AUTH_CLEARTEXT, pgwire.AUTH_OK]
        assert c.query("SELECT current_user") == [[user]]
        c.terminate()
    e = pgwire.login_error(px.port, "app", "appdb", "wrong", source=OTHER)
    assert e.sqlstate == "28P01", e.fields

    # No line for this user and database (hostssl needs TLS): refused, no password asked.
    conn = pgwire.RawConn(px.port)
    conn.send(pgwire.startup_packet({"user": "demo", "database": "demo"}))
    mtype, payload = conn.recv_msg()
    conn.close()
    assert mtype == b"E"
    fields = pgwire.parse_error_fields(payload)
    assert fields["C"] == "28000" and fields["S"] == "FATAL"
    assert fields["M"] == (
        'no pgmux hba_file entry for host "127.0.0.1", user "demo", database "demo", '
        "no encryption"
    )
    # The address column also refuses what it does not list: app@demo from .2.
    assert pgwire.login_error(px.port, "app", "demo", "app-secret", source=OTHER).sqlstate == (
        "28000"
    )

    # libpq sees the same.
    with pytest.raises(psycopg.OperationalError, match="no pgmux hba_file entry"):
        psycopg.connect(px.dsn("demo", "demo", "demo")).close()
    with px.connect("md5user", "md5-secret") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("md5user",)
    assert "hba_file line 3, method scram-sha-256" in px.log_text()


def test_hba_password_method_against_stored_hashes(cluster, pgmux):
    """method password checks a cleartext password against a SCRAM verifier and an md5 hash in
    the auth_file; the SCRAM one then logs pgmux in to PostgreSQL without any plaintext."""
    px = pgmux(hba="host all all 127.0.0.1/32 password\n", userlist="hashed")
    for user, password in (("app", "app-secret"), ("md5user", "md5-secret")):
        c = pgwire.connect(px.port, user, "appdb", password)
        assert c.auth_requests == [pgwire.AUTH_CLEARTEXT, pgwire.AUTH_OK]
        assert c.query("SELECT current_user") == [[user]]
        c.terminate()
        e = pgwire.login_error(px.port, user, "appdb", password + "x")
        assert e.sqlstate == "28P01"
    # Unknown users look like wrong passwords.
    assert pgwire.login_error(px.port, "nosuch", "appdb", "x").sqlstate == "28P01"


def test_hba_hostssl_and_hostnossl(pgmux, tmp_path):
    """hostssl lines match TLS clients only, hostnossl lines the others; the refusal says which
    kind of connection found no line."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "px.key", "-out", "px.crt", "-subj", "/CN=localhost", "-days", "2"],
        cwd=tmp_path, check=True, capture_output=True,
    )
    px = pgmux(
        client_tls_mode="prefer",
        client_tls_cert_file=str(tmp_path / "px.crt"),
        client_tls_key_file=str(tmp_path / "px.key"),
        hba="hostssl   appdb  app     all  scram-sha-256\n"
        "hostnossl appdb  app     all  reject\n"
        "hostnossl appdb  md5user all  md5\n",
    )
    with px.connect(sslmode="require") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app",)
        assert conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(px.dsn(sslmode="disable")).close()
    assert 'pgmux hba_file rejects connection for host "127.0.0.1", user "app", database ' \
        '"appdb", no encryption' in str(e.value)
    with px.connect("md5user", "md5-secret", sslmode="disable") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("md5user",)
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(px.dsn("md5user", "md5-secret", sslmode="require")).close()
    assert 'no pgmux hba_file entry for host "127.0.0.1", user "md5user", database "appdb", ' \
        "SSL encryption" in str(e.value)


def test_hba_file_is_read_again_on_reload(pgmux):
    """SIGHUP reads hba_file again with the rest of the configuration: new logins follow the new
    rules, a logged-in client stays, and a broken file keeps the running rules."""
    import signal

    px = pgmux(hba="host all all 127.0.0.1/32 scram-sha-256\n")
    held = pgwire.connect(px.port, "app", "appdb", "app-secret")
    hba = px.dir / "hba.conf"

    def reload(text, word):
        before = px.log_text().count(word)
        hba.write_text(text)
        px.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: px.log_text().count(word) > before, timeout=10, what=word)

    reload("host all app 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 md5\n",
           "configuration reloaded from")
    assert pgwire.login_error(px.port, "app", "appdb", "app-secret").sqlstate == "28000"
    c = pgwire.connect(px.port, "pwuser", "appdb", "pw-secret")
    assert c.auth_requests[0] == pgwire.AUTH_MD5
    c.terminate()
    assert held.query("SELECT 1") == [["1"]]
    reload("host all app 127.0.0.1/32 kerberos\n", "method: 'kerberos' is not supported")
    assert pgwire.login_error(px.port, "app", "appdb", "app-secret").sqlstate == "28000"
    held.terminate()


def _check(pgmux_bin, tmp_path, hba_text):
    (tmp_path / "hba.conf").write_text(hba_text)
    ini = tmp_path / "proxy.ini"
    ini.write_text(
        "[pgmux]\nauth_type = trust\nhba_file = hba.conf\n[node.a]\nhost = 127.0.0.1\n"
    )
    return subprocess.run([pgmux_bin, "--check", "-c", str(ini)], capture_output=True, text=True)


def test_hba_file_is_validated_at_load(tmp_path):
    """Every refused line is reported as FILE:LINE: column: reason, all at once."""
    import conftest

    exe = conftest._binary("PGMUX_BIN", "build/asan/pgmux")
    good = _check(exe, tmp_path, HBA + "local all all trust\n")
    assert good.returncode == 0, good.stderr
    bad = _check(
        exe,
        tmp_path,
        "host all all 10.0.0.0/8 trust\n"  # 1: fine
        "hostx all all all trust\n"  # 2
        "host all +admins all trust\n"  # 3
        "host all all 10.0.0.1 trust\n"  # 4
        "host all all 10.0.0.0/33 trust\n"  # 5
        "host all all all ident\n"  # 6
        "host all all all md5 clientcert=verify-full\n"  # 7
        "host all all\n"  # 8
        'host "unterminated all all trust\n'  # 9
        "host all all db.example.com/32 trust\n",  # 10
    )
    assert bad.returncode == 2
    hba = str(tmp_path / "hba.conf")
    lines = bad.stderr.strip().splitlines()
    expect = [
        (2, "type: 'hostx' is not a connection type"),
        (3, "user: group membership ('+admins') is not supported by pgmux"),
        (4, "address: '10.0.0.1': expected address/prefix"),
        (5, "address: prefix length 33 is more than 32"),
        (6, "method: 'ident' is not supported by pgmux"),
        (7, "options: 'clientcert=verify-full': authentication options are not supported"),
        (8, "line: expected: TYPE DATABASE USER ADDRESS METHOD"),
        (9, "line: unterminated double quote"),
        (10, "address: 'db.example.com/32' is not an IP address/prefix"),
    ]
    assert len(lines) == len(expect), lines
    for (num, text), line in zip(expect, lines):
        assert line.startswith(f"{hba}:{num}: {text}"), (line, num, text)
    # A missing file is refused too.
    ini = tmp_path / "proxy.ini"
    ini.write_text("[pgmux]\nauth_type = trust\nhba_file = nope.conf\n[node.a]\nhost = 127.0.0.1\n")
    r = subprocess.run([exe, "--check", "-c", str(ini)], capture_output=True, text=True)
    assert r.returncode == 2 and f"{ini}:3: hba_file: cannot read" in r.stderr, r.stderr


# ---- max_client_conn_per_addr ---------------------------------------------------------------


def test_max_client_conn_per_addr(pgmux):
    """The cap counts every connection from one address (logged in or not); the next one gets
    53300, other addresses are not affected, and a closed connection frees its place."""
    # One worker, one listening socket: connections are accepted in the order their first
    # bytes arrive (TCP_DEFER_ACCEPT), so the stalled one below is counted before the login
    # that follows it.
    px = pgmux(max_client_conn_per_addr=3, workers=1)
    held = [pgwire.connect(px.port, "app", "appdb", "app-secret") for _ in range(2)]
    silent = pgwire.RawConn(px.port)  # a startup packet begun, then nothing: counts as well
    silent.send(b"\0\0")
    e = pgwire.login_error(px.port, "app", "appdb", "app-secret")
    assert e.sqlstate == "53300", e.fields
    assert e.message == "too many connections from address 127.0.0.1"
    assert e.fields.get("D") == "max_client_conn_per_addr is 3"
    other = pgwire.connect(px.port, "app", "appdb", "app-secret", source=OTHER)
    assert other.query("SELECT 1") == [["1"]]
    for c in held:
        assert c.query("SELECT 2") == [["2"]]
    silent.close()

    def login_works():
        try:
            pgwire.connect(px.port, "app", "appdb", "app-secret").terminate()
            return True
        except pgwire.PgError as err:
            assert err.sqlstate == "53300"
            return False

    wait_for(login_works, timeout=5, what="a place freed by the closed socket")
    for c in held + [other]:
        c.terminate()


# ---- hostile and slow clients ---------------------------------------------------------------


@pytest.fixture
def bystander_px(pgmux):
    px = pgmux(client_login_timeout="2s", max_message_size="1kB")
    c = pgwire.connect(px.port, "app", "appdb", "app-secret")
    px.bystander = c
    yield px
    assert c.query("SELECT 'still here'") == [["still here"]]
    c.terminate()


def test_startup_packet_size_limit(bystander_px):
    """10,000 bytes, PostgreSQL's limit, is accepted; one more is refused with 08P01."""
    px = bystander_px

    def packet(total):
        base = pgwire.startup_packet({"user": "app", "database": "appdb", "application_name": ""})
        pad = total - len(base)
        return pgwire.startup_packet(
            {"user": "app", "database": "appdb", "application_name": "x" * pad}
        )

    ok = packet(10000)
    assert len(ok) == 10000
    c = pgwire.RawConn(px.port)
    c.send(ok)
    mtype, payload = c.recv_msg()
    assert mtype == b"R" and struct.unpack("!i", payload[:4])[0] == pgwire.AUTH_SASL
    c.close()
    too_big = packet(10001)
    assert len(too_big) == 10001
    e = refused(px.port, too_big, "08P01")
    assert e["M"] == "invalid length of startup packet"
    assert px.bystander.query("SELECT 1") == [["1"]]


def _after_auth_request(px):
    """A raw connection that sent its startup packet and got the SASL request."""
    c = pgwire.RawConn(px.port)
    c.send(pgwire.startup_packet({"user": "app", "database": "appdb"}))
    mtype, payload = c.recv_msg()
    assert mtype == b"R" and struct.unpack("!i", payload[:4])[0] == pgwire.AUTH_SASL
    return c


def test_bad_messages_during_authentication(bystander_px):
    """During authentication: a message above max_message_size (here 1 kB), a huge length, a
    message of the wrong type, and half a message then EOF. The first three get 08P01."""
    px = bystander_px
    first = b"n,,n=,r=" + b"a" * 1100  # a SASLInitialResponse above 1 kB
    for payload in (
        pgwire.message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first),
        b"p" + struct.pack("!i", 0x7FFFFFF0),
        pgwire.query_message("SELECT 1"),
    ):
        c = _after_auth_request(px)
        c.send(payload)
        errs = raw_errors(c.read_until_eof(timeout=5))
        c.close()
        assert [e.get("C") for e in errs] == ["08P01"], errs
    c = _after_auth_request(px)
    c.send(b"p\0\0\0\x40SCRAM")
    c.close()
    assert px.bystander.query("SELECT 1") == [["1"]]
    assert px.alive()


def test_oversized_message_after_login(bystander_px):
    """A Query above max_message_size from a logged-in client: 08P01, only that client goes."""
    px = bystander_px
    c = pgwire.connect(px.port, "app", "appdb", "app-secret")
    c.send(pgwire.query_message("SELECT '" + "x" * 2000 + "'"))
    errs = raw_errors(c.read_until_eof(timeout=5))
    c.close()
    assert [e.get("C") for e in errs] == ["08P01"], errs
    assert px.bystander.query("SELECT 1") == [["1"]]


def test_max_message_size_on_the_admin_console(pgmux):
    """The console database obeys max_message_size too when it is below its own 1 MiB cap."""
    px = pgmux(max_message_size="1kB", admin_users="app")
    c = pgwire.connect(px.port, "app", "pgmux", "app-secret")
    assert c.query("SHOW VERSION")
    c.send(pgwire.query_message("SHOW VERSION; -- " + "x" * 2000))
    errs = raw_errors(c.read_until_eof(timeout=5))
    c.close()
    assert [e.get("C") for e in errs] == ["08P01"], errs


def test_login_timeout_counts_from_accept(bystander_px):
    """client_login_timeout (2 s) ends a login that trickles its startup packet at one byte
    per 100 ms and would need about 4 s, and one that never answers the password request,
    with 57014; the bystander is served all along."""
    px = bystander_px
    t0 = time.monotonic()
    slow = pgwire.RawConn(px.port)
    pkt = pgwire.startup_packet({"user": "app", "database": "appdb", "application_name": "slow"})
    stalled = _after_auth_request(px)
    dropped_after = None
    for i in range(len(pkt)):
        try:
            slow.send(pkt[i : i + 1])
        except OSError:
            dropped_after = time.monotonic() - t0
            break
        assert px.bystander.query("SELECT 1") == [["1"]]
        time.sleep(0.1)
        if time.monotonic() - t0 > 3.5:
            break
    errs = raw_errors(slow.read_until_eof(timeout=5))
    elapsed = time.monotonic() - t0
    slow.close()
    assert [e.get("C") for e in errs] == ["57014"], (errs, dropped_after)
    assert elapsed < 4.0, elapsed
    errs = raw_errors(stalled.read_until_eof(timeout=5))
    stalled.close()
    assert [e.get("C") for e in errs] == ["57014"], errs


def test_slow_client_after_login_is_served(bystander_px):
    """A logged-in client that sends its query one byte per 100 ms gets its answer, and others
    are served in the meantime."""
    px = bystander_px
    c = pgwire.connect(px.port, "app", "appdb", "app-secret")
    msg = pgwire.query_message("SELECT 7")
    for i in range(len(msg)):
        c.send(msg[i : i + 1])
        assert px.bystander.query("SELECT 1") == [["1"]]
        time.sleep(0.1)
    assert c.result() == [["7"]]
    c.terminate()


def _select1_ms(conn, n=20):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), max(times)


def test_thousand_silent_sockets(pgmux):
    """1,000 connections that send nothing do not slow a logged-in client's SELECT 1 beyond a
    few milliseconds, and a new client still logs in."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    assert want >= 2200, f"RLIMIT_NOFILE hard limit {hard} is too low for this test"
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # pgmux inherits it
    px = pgmux(max_client_conn=2000, client_login_timeout="60s")
    with px.connect() as conn:
        _select1_ms(conn, 5)  # warm up
        before, _ = _select1_ms(conn)
        socks = []
        # libpq waits with select(), which takes no descriptor above 1023: keep a few low ones
        # free for the fresh client below, whatever else the test run holds open
        spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(8)]
        try:
            for _ in range(1000):
                s = socket.socket()
                s.settimeout(10)
                s.connect(("127.0.0.1", px.port))
                socks.append(s)
            for fd in spare:
                os.close(fd)
            spare = []
            # Every one of them reached pgmux: a fresh login still succeeds, which it could
            # not if the accept queue were stuck behind them.
            with px.connect() as fresh:
                assert fresh.execute("SELECT 1").fetchone() == (1,)
            after, worst = _select1_ms(conn)
        finally:
            for fd in spare:
                os.close(fd)
            for s in socks:
                s.close()
    print(f"SELECT 1 median: {before:.3f} ms before, {after:.3f} ms with 1000 silent sockets")
    assert after < before + 5.0, (before, after, worst)
