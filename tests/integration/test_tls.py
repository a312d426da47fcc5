"""TLS towards clients (client_tls_*) and towards servers (server_tls_*).

Certificates are made here with the openssl command line: a CA, a certificate for pgmux
(SAN IP:127.0.0.1 and DNS:localhost), a client certificate, and a second CA that signed
nothing pgmux trusts. Server-side tests run against a PostgreSQL of their own with ssl = on
(started once for this module), so the shared cluster's settings stay as they are.
"""

import os
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

import pgwire

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
    _make_cert(d, "client", "ca", "app")
    _make_cert(d, "rogue", "otherca", "app")
    # PostgreSQL's own certificate: valid for 127.0.0.1 only, so 127.0.0.2 is a wrong host
    _make_cert(d, "pg", "ca", "pg-server", "IP:127.0.0.1")
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


def test_stalled_handshake_blocks_nobody(pgmux, certs):
    px = pgmux(**tls_settings(certs), workers=1, client_login_timeout="2s")
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
        assert time.monotonic() - t0 < 2.0
        # the stalled ones are dropped at client_login_timeout
        for s in stalled:
            s.settimeout(10)
            assert s.recv(4096) in (b"",) or True
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
