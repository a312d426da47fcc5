"""TLS towards clients (client_tls_*) and towards servers (server_tls_*).

Certificates are made here with the openssl command line: a CA, a certificate for pgmux
(SAN IP:127.0.0.1 and DNS:localhost), a client certificate, and a second CA that signed
nothing pgmux trusts. Server-side tests run against a PostgreSQL of their own with ssl = on
(started once for this module), so the shared cluster's settings stay as they are.
"""

import hashlib
import os
import re
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

import pgwire
from conftest import PASSWORDS
from helpers import wait_for

PGBIN = Path("/usr/lib/postgresql/15/bin")


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "30", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
             "-out", f"{name}.crt", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_cert(d, name, ca, cn, san=None):
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "30", "-out", f"{name}.crt", "-extfile", str(ext), cwd=d)
    os.chmod(d / f"{name}.key", 0o600)


@pytest.fixture(scope="module")
def certs(cluster):
    # Under the cluster's directory: the postgres user must read the server-side files.
    d = Path(cluster.dir) / "tls"
    d.mkdir(exist_ok=True)
    _make_ca(d, "ca")
    _make_ca(d, "otherca")
    _make_cert(d, "pgmux", "ca", "localhost", "IP:127.0.0.1,DNS:localhost")
    _make_cert(d, "pgmux2", "otherca", "localhost", "IP:127.0.0.1,DNS:localhost")
    _make_cert(d, "client", "ca", "app")
    _make_cert(d, "rogue", "otherca", "app")
    # PostgreSQL's own certificate: valid for 127.0.0.1 and localhost only, so 127.0.0.2 is a
    # wrong host
    _make_cert(d, "pg", "ca", "pg-server", "IP:127.0.0.1,DNS:localhost")
    _make_cert(d, "certuser", "ca", "certuser")
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:", str(d)], check=True)
    return d


def tls_settings(certs, **extra):
    s = {
        "client_tls_mode": "require",
        "client_tls_cert_file": str(certs / "pgmux.crt"),
        "client_tls_key_file": str(certs / "pgmux.key"),
    }
    s.update(extra)
    return s


def psql(px, certs, sslmode, command="\\conninfo", **params):
    env = dict(os.environ, PGPASSWORD="app-secret", PGCONNECT_TIMEOUT="10")
    dsn = f"host=127.0.0.1 port={px.port} user=app dbname=appdb sslmode={sslmode}"
    for k, v in params.items():
        dsn += f" {k}={v}"
    return subprocess.run([str(PGBIN / "psql"), "-X", "-At", dsn, "-c", command],
                          capture_output=True, text=True, env=env, timeout=30)


# ---- client side ------------------------------------------------------------------------------


def test_psql_require_and_verify_full(pgmux, certs):
    px = pgmux(**tls_settings(certs))
    r = psql(px, certs, "require")
    assert r.returncode == 0, r.stderr
    assert "SSL connection" in r.stdout, r.stdout
    r = psql(px, certs, "verify-full", sslrootcert=certs / "ca.crt")
    assert r.returncode == 0, r.stderr
    assert "SSL connection (protocol: TLSv1.3" in r.stdout, r.stdout
    r = psql(px, certs, "verify-full", "select 41 + 1", sslrootcert=certs / "ca.crt")
    assert r.stdout.strip() == "42", r.stderr
    # pgmux's certificate is not signed by otherca: libpq refuses it
    r = psql(px, certs, "verify-ca", sslrootcert=certs / "otherca.crt")
    assert r.returncode != 0
    assert "certificate verify failed" in r.stderr, r.stderr


@pytest.mark.parametrize("userlist", ["plain", "hashed"])
def test_scram_channel_binding(pgmux, certs, userlist):
    """Over TLS pgmux offers SCRAM-SHA-256-PLUS with tls-server-end-point binding, as PostgreSQL
    does: libpq with channel_binding=require logs in bound to the certificate pgmux presented
    (pgmux refuses a client-final whose binding data is not that certificate's hash, and libpq
    refuses a server signature that did not cover it), with a plaintext or a SCRAM secret.
    Without TLS there is nothing to bind to; an md5 secret gets md5: libpq refuses both."""
    px = pgmux(userlist=userlist, **tls_settings(certs, client_tls_mode="prefer"))
    for sslmode, extra in (("require", {}), ("verify-full", {"sslrootcert": certs / "ca.crt"})):
        r = psql(px, certs, sslmode, "select 'bound'", channel_binding="require", **extra)
        assert (r.returncode, r.stdout.strip()) == (0, "bound"), r.stderr
    with psycopg.connect(px.dsn(sslmode="require", channel_binding="require")) as c:
        assert c.execute("SELECT current_user").fetchone() == ("app",)
    # channel_binding=prefer (libpq's default) over TLS takes -PLUS too, and disable does not
    r = psql(px, certs, "require", "select 1", channel_binding="disable")
    assert r.returncode == 0, r.stderr
    r = psql(px, certs, "disable", channel_binding="require")
    assert r.returncode != 0 and "channel binding" in r.stderr, r.stderr
    env = dict(os.environ, PGPASSWORD=PASSWORDS["md5user"], PGCONNECT_TIMEOUT="10")
    r = subprocess.run([str(PGBIN / "psql"), "-X", "-At",
                        f"host=127.0.0.1 port={px.port} user=md5user dbname=appdb "
                        "sslmode=require channel_binding=require", "-c", "select 1"],
                       capture_output=True, text=True, env=env, timeout=30)
    if userlist == "hashed":  # md5 secret: md5 exchange, nothing to bind
        assert r.returncode != 0 and "channel binding" in r.stderr, r.stderr
    else:
        assert r.returncode == 0, r.stderr


def test_require_refuses_plaintext(pgmux, certs):
    px = pgmux(**tls_settings(certs))
    r = psql(px, certs, "disable")
    assert r.returncode != 0
    assert "SSL required" in r.stderr, r.stderr
    err = pgwire.login_error(px.port, "app", "appdb", "app-secret")
    assert err.sqlstate == "28000", err.fields
    # and it keeps serving TLS clients
    with px.connect(sslmode="require") as c:
        assert c.pgconn.ssl_in_use
        assert c.execute("select 1").fetchone() == (1,)


def test_cancel_under_require(pgmux, certs, cluster):
    """libpq sends a CancelRequest on a new plaintext connection: client_tls_mode = require
    still routes it (it carries no credentials and no data)."""
    px = pgmux(**tls_settings(certs))
    with px.connect(sslmode="require") as c:
        from helpers import Background

        bg = Background(c.execute, "SELECT pg_sleep(20)")
        wait_for(lambda: any("pg_sleep" in r["query"] for r in cluster.server_conns(
            state="active")), what="the query to run")
        c.cancel()
        err = bg.error(timeout=10)
        assert isinstance(err, psycopg.errors.QueryCanceled), err
        assert c.execute("select 4").fetchone() == (4,)


def test_tls_sessions_move_between_workers(pgmux, certs):
    """worker_balance hands a TLS session to another worker between transactions: its OpenSSL
    state goes with it, and what OpenSSL reads ahead afterwards is still answered there."""
    from test_balance import per_worker
    from test_metrics import _free_port
    mport = _free_port()
    from test_balance import _balance
    px = pgmux(**tls_settings(certs), pool_mode="transaction", workers=4, metrics_port=mport,
               worker_balance="off")
    conns = [px.connect(sslmode="require") for _ in range(12)]
    # spread by the kernel with worker_balance off; on, they gather on worker 0
    assert len({c.info.backend_pid >> 23 for c in conns}) > 1
    _balance(px, True)
    wait_for(lambda: per_worker(mport, "pgmux_worker_client_connections", 4) == [12, 0, 0, 0],
             timeout=10, what="all 12 TLS sessions on worker 0")
    for i, c in enumerate(conns):
        assert c.pgconn.ssl_in_use
        with c.pipeline():
            curs = [c.execute("SELECT %s::int", [i * 100 + k]) for k in range(50)]
        assert [cur.fetchone()[0] for cur in curs] == [i * 100 + k for k in range(50)]
    for c in conns:
        c.close()


def test_admin_console_over_tls(pgmux, certs):
    px = pgmux(**tls_settings(certs), admin_users="app")
    with px.connect(dbname="pgmux", sslmode="verify-full", sslrootcert=certs / "ca.crt") as c:
        assert c.pgconn.ssl_in_use
        rows = c.execute("SHOW CLIENTS").fetchall()
        assert len(rows) >= 1


def test_pipeline_over_tls(pgmux, certs):
    """Many small requests in one write: several TLS records arrive together and OpenSSL reads
    them ahead, which makes the socket look idle; every answer must still come."""
    px = pgmux(**tls_settings(certs), pool_mode="transaction")
    with px.connect(sslmode="require") as c:
        with c.pipeline():
            curs = [c.execute("SELECT %s::int", [i]) for i in range(300)]
        assert [cur.fetchone()[0] for cur in curs] == list(range(300))


def test_prefer_and_disable_modes(pgmux, certs):
    px = pgmux(**tls_settings(certs, client_tls_mode="prefer"))
    with px.connect(sslmode="prefer") as c:
        assert c.pgconn.ssl_in_use
    with px.connect(sslmode="disable") as c:
        assert not c.pgconn.ssl_in_use
        assert c.execute("select 2").fetchone() == (2,)
    px2 = pgmux(client_tls_mode="disable")
    with px2.connect(sslmode="prefer") as c:
        assert not c.pgconn.ssl_in_use  # SSLRequest answered 'N'
    with pytest.raises(psycopg.OperationalError) as ei:
        px2.connect(sslmode="require")
    assert "does not support SSL" in str(ei.value)


def test_client_certificates(pgmux, certs):
    px = pgmux(**tls_settings(certs, client_tls_ca_file=str(certs / "ca.crt")))
    with px.connect(sslmode="verify-full", sslrootcert=certs / "ca.crt",
                    sslcert=certs / "client.crt", sslkey=certs / "client.key") as c:
        assert c.pgconn.ssl_in_use
        assert c.execute("select 3").fetchone() == (3,)
    # no certificate
    with pytest.raises(psycopg.OperationalError):
        px.connect(sslmode="require", sslcert="/nonexistent", sslkey="/nonexistent")
    # a certificate from a CA pgmux does not trust
    with pytest.raises(psycopg.OperationalError):
        px.connect(sslmode="require", sslcert=certs / "rogue.crt", sslkey=certs / "rogue.key")
    assert "TLS handshake or read failed" in px.log_text()


def test_protocols_and_ciphers(pgmux, certs):
    px = pgmux(**tls_settings(certs, client_tls_protocols="tlsv1.2",
                              client_tls_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
    r = psql(px, certs, "require")
    assert "protocol: TLSv1.2, cipher: ECDHE-ECDSA-AES128-GCM-SHA256" in r.stdout, r.stderr
    # a client limited to TLS 1.1 gets nowhere: pgmux's minimum is 1.2
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(px.dsn(sslmode="require", ssl_max_protocol_version="TLSv1.1"))


def test_bad_tls_config_refused(pgmux, certs, tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text(
        "[pgmux]\nauth_type = trust\nclient_tls_mode = require\n"
        f"client_tls_cert_file = {certs / 'pgmux.crt'}\n"
        f"client_tls_key_file = {certs / 'client.key'}\n"
        "client_tls_protocols = tlsv1.1\n"
        "server_tls_mode = verify-all\n"
        "[node.a]\nhost = 127.0.0.1\n")
    exe = os.environ.get("PGMUX_BIN") or "build/asan/pgmux"
    r = subprocess.run([exe, "--check", "-c", str(ini)], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{ini}:6: client_tls_protocols:" in r.stderr, r.stderr
    assert f"{ini}:7: server_tls_mode:" in r.stderr, r.stderr
    ini.write_text(
        "[pgmux]\nauth_type = trust\nclient_tls_mode = require\n"
        f"client_tls_cert_file = {certs / 'pgmux.crt'}\n"
        f"client_tls_key_file = {certs / 'client.key'}\n"
        "[node.a]\nhost = 127.0.0.1\n")
    r = subprocess.run([exe, "--check", "-c", str(ini)], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{ini}:5: client_tls_key_file:" in r.stderr and "mismatch" in r.stderr, r.stderr


def test_reload_rereads_certificates(pgmux, certs, tmp_path):
    """SIGHUP re-reads the certificate files: new sessions get the new certificate, a session
    already open keeps going; a file that does not load refuses the reload and the running
    certificate stays."""
    import shutil
    import signal

    # copies, replaced in place below as a renewal does
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    shutil.copy(certs / "pgmux.crt", cert)
    shutil.copy(certs / "pgmux.key", key)
    px = pgmux(**tls_settings(certs, client_tls_cert_file=str(cert), client_tls_key_file=str(key)))
    old = px.connect(sslmode="verify-full", sslrootcert=certs / "ca.crt")

    def hup_and_wait(word):
        before = px.log_text().count(word)
        px.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: px.log_text().count(word) > before, timeout=10, what=word)

    shutil.copy(certs / "pgmux2.crt", cert)
    shutil.copy(certs / "pgmux2.key", key)
    hup_and_wait("configuration reloaded from")
    with px.connect(sslmode="verify-full", sslrootcert=certs / "otherca.crt") as c:
        assert c.execute("select 7").fetchone() == (7,)
    with pytest.raises(psycopg.OperationalError):
        px.connect(sslmode="verify-full", sslrootcert=certs / "ca.crt")
    assert old.execute("select 8").fetchone() == (8,)  # the session from before the reload
    old.close()

    cert.write_text("not a certificate\n")
    hup_and_wait("configuration reload refused")
    assert "client_tls_cert_file: cannot load certificate" in px.log_text()
    with px.connect(sslmode="verify-full", sslrootcert=certs / "otherca.crt") as c:
        assert c.execute("select 9").fetchone() == (9,)


def _ssl_request():
    return struct.pack("!II", 8, 80877103)


def test_data_after_sslrequest_refused(pgmux, certs):
    """Bytes sent together with the SSLRequest, before pgmux answered, could have been
    injected by a man in the middle (CVE-2021-23222): the connection is refused."""
    px = pgmux(**tls_settings(certs, client_tls_mode="prefer"))
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
        startup = b"\x00\x03\x00\x00user\x00app\x00database\x00appdb\x00\x00"
        s.sendall(_ssl_request() + struct.pack("!I", len(startup) + 4) + startup)
        data = s.recv(4096)
        assert data[:1] == b"E", data
        assert b"08P01" in data and b"unencrypted data after SSL request" in data
    with px.connect(sslmode="require") as c:
        assert c.execute("select 1").fetchone() == (1,)


def test_direct_tls_without_sslrequest_refused(pgmux, certs):
    """A ClientHello sent straight away (PostgreSQL 17's sslnegotiation=direct) is not a
    startup packet: refused in the clear, and pgmux keeps serving."""
    px = pgmux(**tls_settings(certs))
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            ctx.wrap_socket(raw, server_hostname="localhost")
    with px.connect(sslmode="require") as c:
        assert c.execute("select 1").fetchone() == (1,)
    assert "invalid length of startup packet" in px.log_text()


def test_stalled_handshake_blocks_nobody(pgmux, certs):
    px = pgmux(**tls_settings(certs), workers=1, client_login_timeout="3s")
    stalled = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
        s.sendall(_ssl_request())
        assert s.recv(1) == b"S"
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a ClientHello
        stalled.append(s)
    try:
        t0 = time.monotonic()
        with px.connect(sslmode="require") as c:
            assert c.execute("select 1").fetchone() == (1,)
        # served while the stalled handshakes are still pending, not after they were dropped
        for s in stalled:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(4096)
        # the stalled ones are dropped at client_login_timeout (no TLS session: plain EOF)
        for s in stalled:
            s.settimeout(10)
            assert s.recv(4096) == b""
        assert time.monotonic() - t0 < 10.0
    finally:
        for s in stalled:
            s.close()


def test_tls_python_ssl_module(pgmux, certs):
    """Another TLS stack (Python's ssl) speaking the protocol by hand through pgmux."""
    px = pgmux(**tls_settings(certs))
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with socket.create_connection(("127.0.0.1", px.port), timeout=10) as raw:
        raw.sendall(_ssl_request())
        assert raw.recv(1) == b"S"
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() in ("TLSv1.3", "TLSv1.2")
            # a Terminate right away; pgmux must close cleanly
            startup = b"\x00\x03\x00\x00user\x00app\x00database\x00appdb\x00\x00"
            s.sendall(struct.pack("!I", len(startup) + 4) + startup)
            data = s.recv(4096)
            assert data[:1] == b"R"  # an authentication request, over TLS


# ---- server side ------------------------------------------------------------------------------


class TlsServer:
    """A PostgreSQL of this module's own with ssl = on, on 127.0.0.1, 127.0.0.2 and ::1 (where
    the machine has IPv6: "localhost" may resolve to it first); its certificate names
    IP:127.0.0.1 and DNS:localhost only. Plaintext TCP is rejected by pg_hba.conf; certuser
    logs in with a client certificate (method cert)."""

    def __init__(self, directory, port):
        self.dir = directory
        self.port = port

    def su(self):
        return psycopg.connect(host=str(self.dir / "sock"), port=self.port, user="postgres",
                               dbname="postgres", autocommit=True)


def _as_pg(*args):
    cmd = list(args)
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def tls_server(cluster, certs):
    d = Path(cluster.dir) / "tls-pg"
    d.mkdir()
    (d / "sock").mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:", str(d)], check=True)
    data = d / "data"
    _as_pg(str(PGBIN / "initdb"), "-D", str(data), "-U", "postgres", "--no-sync", "--no-locale",
           "-E", "UTF8", "--auth-local=trust")
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"""
listen_addresses = '127.0.0.1,127.0.0.2,::1'
include_if_exists = 'port.conf'
unix_socket_directories = '{d / "sock"}'
fsync = off
shared_buffers = 16MB
ssl = on
ssl_cert_file = '{certs / "pg.crt"}'
ssl_key_file = '{certs / "pg.key"}'
ssl_ca_file = '{certs / "ca.crt"}'
password_encryption = 'scram-sha-256'
log_connections = on
""")
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all certuser 127.0.0.0/8 cert\n"
        "hostssl all certuser ::1/128 cert\n"
        "hostssl all all 127.0.0.0/8 scram-sha-256\n"
        "hostssl all all ::1/128 scram-sha-256\n"
        "hostnossl all all 0.0.0.0/0 reject\n"
        "hostnossl all all ::/0 reject\n")
    # A port free on 127.0.0.1 may be taken on 127.0.0.2 (another suite's client bound there):
    # PostgreSQL then starts without that address, and the verify-full tests that connect to
    # it would see "connection refused". Start again on another port until both addresses
    # accept.
    for attempt in range(5):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        (data / "port.conf").write_text(f"port = {port}\n")
        _as_pg(str(PGBIN / "pg_ctl"), "-D", str(data), "-l", str(d / "log"), "-w", "-t", "60",
               "start")
        try:
            for host in ("127.0.0.1", "127.0.0.2"):
                socket.create_connection((host, port), timeout=5).close()
            break
        except OSError:
            _as_pg(str(PGBIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    else:
        raise AssertionError("the TLS PostgreSQL could not listen on 127.0.0.1 and 127.0.0.2")
    srv = TlsServer(d, port)
    try:
        with srv.su() as c:
            c.execute("CREATE ROLE app LOGIN PASSWORD 'app-secret'")
            c.execute("CREATE ROLE certuser LOGIN")
            c.execute("CREATE DATABASE appdb OWNER app")
            c.execute("GRANT CONNECT ON DATABASE appdb TO certuser")
        yield srv
    finally:
        _as_pg(str(PGBIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")


def tls_nodes(server, host="127.0.0.1"):
    return {"tlspg": {"host": host, "port": server.port, "role": "primary"}}


def _backend_ssl(c):
    return c.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()


def test_server_verify_full(pgmux, certs, tls_server):
    px = pgmux(nodes=tls_nodes(tls_server), server_tls_mode="verify-full",
               server_tls_ca_file=str(certs / "ca.crt"))
    with px.connect() as c:
        assert _backend_ssl(c) == (True, "TLSv1.3")
        assert c.execute("select 5").fetchone() == (5,)
    # a DNS name is checked against the certificate's DNS names (and sent as SNI). pgmux uses
    # the first address "localhost" resolves to; on a machine where that is ::1 without IPv6
    # nothing listens there, and only the address checks below apply.
    first = socket.getaddrinfo("localhost", tls_server.port, 0, socket.SOCK_STREAM)[0][4][0]
    try:
        socket.create_connection((first, tls_server.port), timeout=5).close()
        localhost_works = True
    except OSError:
        localhost_works = False
    if localhost_works:
        px_name = pgmux(nodes=tls_nodes(tls_server, "localhost"), server_tls_mode="verify-full",
                        server_tls_ca_file=str(certs / "ca.crt"))
        with px_name.connect() as c:
            assert _backend_ssl(c)[0] is True
    # verify-ca does not look at the name: 127.0.0.2 is fine
    px2 = pgmux(nodes=tls_nodes(tls_server, "127.0.0.2"), server_tls_mode="verify-ca",
                server_tls_ca_file=str(certs / "ca.crt"))
    with px2.connect() as c:
        assert _backend_ssl(c)[0] is True


def test_server_verify_full_wrong_host_or_ca(pgmux, certs, tls_server):
    # the certificate names 127.0.0.1, not 127.0.0.2
    px = pgmux(nodes=tls_nodes(tls_server, "127.0.0.2"), server_tls_mode="verify-full",
               server_tls_ca_file=str(certs / "ca.crt"))
    err = pgwire.login_error(px.port, "app", "appdb", "app-secret")
    assert err.sqlstate == "08006", err.fields
    assert "certificate verify failed" in err.message, err.message
    assert "mismatch" in err.message, err.message
    # signed by a CA pgmux was not told to trust
    px2 = pgmux(nodes=tls_nodes(tls_server), server_tls_mode="verify-ca",
                server_tls_ca_file=str(certs / "otherca.crt"))
    err = pgwire.login_error(px2.port, "app", "appdb", "app-secret")
    assert err.sqlstate == "08006", err.fields
    assert "certificate verify failed" in err.message, err.message
    # the proxy keeps serving: a plain session through px2 would need TLS, so use px's log
    assert px.alive() and px2.alive()


def test_server_scram_channel_binding(pgmux, certs, tls_server, cluster):
    """Towards a server over TLS pgmux logs in with SCRAM-SHA-256-PLUS, bound to the
    certificate the server showed (PostgreSQL offers it over TLS and checks the binding, so a
    wrong one would fail the login), whether or not server_tls_mode verifies the certificate;
    without TLS, plain SCRAM. The server_connect log line says which."""
    px = pgmux(nodes=tls_nodes(tls_server), server_tls_mode="require")
    with px.connect() as c:
        assert c.execute("select current_user").fetchone() == ("app",)
    wait_for(lambda: "tls=on auth=scram-sha-256-plus" in px.log_text(),
             what="a bound SCRAM login to the TLS server")
    px2 = pgmux()
    with px2.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
    wait_for(lambda: re.search(r"tls=off auth=scram-sha-256$", px2.log_text(), re.M),
             what="a plain SCRAM login without TLS")


def test_server_tls_modes_against_plaintext_server(pgmux, cluster):
    px = pgmux(server_tls_mode="require")
    err = pgwire.login_error(px.port, "app", "appdb", "app-secret")
    assert err.sqlstate == "08006"
    assert "does not support TLS" in err.message, err.message
    px2 = pgmux(server_tls_mode="prefer")
    with px2.connect() as c:
        assert c.execute("select 6").fetchone() == (6,)


def test_server_client_certificate(pgmux, certs, tls_server):
    users = [("app", "app-secret"), ("certuser", "cert-pw")]
    px = pgmux(nodes=tls_nodes(tls_server), userlist=users, server_tls_mode="verify-full",
               server_tls_ca_file=str(certs / "ca.crt"),
               server_tls_cert_file=str(certs / "certuser.crt"),
               server_tls_key_file=str(certs / "certuser.key"))
    with px.connect(user="certuser", password="cert-pw") as c:
        assert c.execute("select current_user").fetchone() == ("certuser",)
    px2 = pgmux(nodes=tls_nodes(tls_server), userlist=users, server_tls_mode="require")
    err = pgwire.login_error(px2.port, "certuser", "appdb", "cert-pw")
    assert err.sqlstate == "28000", err.fields  # PostgreSQL's own refusal, forwarded


def test_large_transfers_tls_both_sides(pgmux, certs, tls_server):
    """50 MB out (COPY TO) and 20 MB in (COPY FROM) through TLS on both sides, intact."""
    px = pgmux(nodes=tls_nodes(tls_server), server_tls_mode="verify-full",
               server_tls_ca_file=str(certs / "ca.crt"), pool_mode="transaction",
               **tls_settings(certs))
    n = 500_000
    pad = b"x" * 90
    expected = hashlib.sha256(b"".join(b"%d\t%s\n" % (g, pad) for g in range(1, n + 1)))
    with px.connect(sslmode="verify-full", sslrootcert=certs / "ca.crt") as c:
        assert c.pgconn.ssl_in_use
        got = hashlib.sha256()
        size = 0
        with c.cursor() as cur:
            with cur.copy(f"COPY (SELECT g, repeat('x', 90) FROM generate_series(1, {n}) g) "
                          "TO STDOUT") as cp:
                for chunk in cp:
                    size += len(chunk)
                    got.update(chunk)
        assert size > 48_000_000
        assert got.hexdigest() == expected.hexdigest()
        c.execute("CREATE TEMP TABLE t (g int, pad text)")
        m = 400_000
        with c.cursor() as cur:
            with cur.copy("COPY t FROM STDIN") as cp:
                block = []
                for g in range(1, m + 1):
                    block.append(f"{g}\t{'y' * 40}\n")
                    if len(block) == 10000:
                        cp.write("".join(block))
                        block = []
        assert c.execute("SELECT count(*), sum(g), min(length(pad)) FROM t").fetchone() == (
            m, m * (m + 1) // 2, 40)


# ---- TLS 1.3 KeyUpdate ------------------------------------------------------------------------


class _LibSsl:
    """The few libssl calls Python's ssl module does not offer (SSL_key_update), through ctypes
    on the system's OpenSSL 3: a blocking TLS client on a connected socket."""

    def __init__(self, sock):
        import ctypes

        lib = ctypes.CDLL("libssl.so.3")
        vp = ctypes.c_void_p
        lib.TLS_client_method.restype = vp
        lib.SSL_CTX_new.restype = vp
        lib.SSL_CTX_new.argtypes = [vp]
        lib.SSL_new.restype = vp
        lib.SSL_new.argtypes = [vp]
        lib.SSL_set_fd.argtypes = [vp, ctypes.c_int]
        lib.SSL_connect.argtypes = [vp]
        lib.SSL_write.argtypes = [vp, ctypes.c_char_p, ctypes.c_int]
        lib.SSL_read.argtypes = [vp, ctypes.c_void_p, ctypes.c_int]
        lib.SSL_key_update.argtypes = [vp, ctypes.c_int]
        lib.SSL_get_error.argtypes = [vp, ctypes.c_int]
        lib.SSL_free.argtypes = [vp]
        lib.SSL_CTX_free.argtypes = [vp]
        self.lib = lib
        self.ctx = lib.SSL_CTX_new(lib.TLS_client_method())
        self.ssl = lib.SSL_new(self.ctx)
        lib.SSL_set_fd(self.ssl, sock.fileno())
        assert lib.SSL_connect(self.ssl) == 1
        self.buf = ctypes.create_string_buffer(65536)
        self.pending = bytearray()

    def write(self, data):
        r = self.lib.SSL_write(self.ssl, data, len(data))
        assert r == len(data), ("SSL_write", r, self.lib.SSL_get_error(self.ssl, r))

    def key_update(self):
        assert self.lib.SSL_key_update(self.ssl, 1) == 1  # SSL_KEY_UPDATE_REQUESTED

    def recv_msg(self):
        while True:
            if len(self.pending) >= 5:
                (length,) = struct.unpack("!I", self.pending[1:5])
                if len(self.pending) >= 1 + length:
                    m = bytes(self.pending[: 1 + length])
                    del self.pending[: 1 + length]
                    return m
            r = self.lib.SSL_read(self.ssl, self.buf, len(self.buf))
            assert r > 0, ("SSL_read", r, self.lib.SSL_get_error(self.ssl, r))
            self.pending += self.buf.raw[:r]

    def close(self):
        self.lib.SSL_free(self.ssl)
        self.lib.SSL_CTX_free(self.ctx)


def test_key_update_while_write_blocked(pgmux, certs):
    """The client asks for a KeyUpdate while pgmux's writes to it are blocked (it does not read
    a big result): pgmux's answer must not be written into the middle of its pending record
    (OpenSSL fails such a connection with "bad length"); every row arrives."""
    px = pgmux(auth_type="trust", **tls_settings(certs))
    with socket.create_connection(("127.0.0.1", px.port), timeout=30) as s:
        s.sendall(_ssl_request())
        assert s.recv(1) == b"S"
        # libssl needs a blocking socket; a receive timeout still bounds a hang
        s.settimeout(None)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 30, 0))
        t = _LibSsl(s)
        try:
            startup = b"\x00\x03\x00\x00user\x00app\x00database\x00appdb\x00\x00"
            t.write(struct.pack("!I", len(startup) + 4) + startup)
            while t.recv_msg()[:1] != b"Z":
                pass
            n, rows_each = 5, 3000
            q = b"SELECT repeat('z', 1000) FROM generate_series(1, %d)\x00" % rows_each
            for _ in range(n):
                t.key_update()
                t.write(b"Q" + struct.pack("!I", len(q) + 4) + q)
                time.sleep(0.15)  # let pgmux fill the socket and block on it
            rows = ready = 0
            while ready < n:
                m = t.recv_msg()
                assert m[:1] != b"E", m
                rows += m[:1] == b"D"
                ready += m[:1] == b"Z"
            assert rows == n * rows_each
        finally:
            t.close()
    assert "TLS error" not in px.log_text()
