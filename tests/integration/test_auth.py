"""Authentication: clients to pgmux (auth_type scram-sha-256, md5, trust; plaintext, md5 and
SCRAM secrets in the auth_file) and pgmux to PostgreSQL (SCRAM, md5, cleartext password)."""

import re

import psycopg
import pytest

import pgwire
from conftest import PASSWORDS


def server_auth_methods(cluster, start_offset, user):
    """The methods PostgreSQL logged for user's authentications since start_offset of the
    primary's log ("connection authenticated: identity=... method=...", log_connections)."""
    with open(cluster.logs["primary"], "rb") as f:
        f.seek(start_offset)
        text = f.read().decode(errors="replace")
    return re.findall(rf'connection authenticated: identity="{user}" method=(\S+)', text)


# ---- client -> pgmux ------------------------------------------------------------------------


@pytest.mark.parametrize("userlist", ["plain", "hashed"])
def test_scram_client_auth_succeeds(pgmux, userlist):
    """auth_type scram-sha-256: pgmux asks for SASL/SCRAM-SHA-256 and the login works with a
    plaintext secret and with PostgreSQL's own stored verifier in the auth_file."""
    px = pgmux(auth_type="scram-sha-256", userlist=userlist)
    c = pgwire.connect(px.port, "app", "appdb", "app-secret")
    assert c.auth_requests[0] == pgwire.AUTH_SASL
    assert c.query("SELECT current_user, current_database()") == [["app", "appdb"]]
    c.terminate()
    # And a real driver (libpq) agrees.
    with px.connect() as conn:
        assert conn.execute("SELECT 42").fetchone() == (42,)


@pytest.mark.parametrize("userlist", ["plain", "hashed"])
def test_md5_client_auth_succeeds(pgmux, userlist):
    """auth_type md5: pgmux sends AuthenticationMD5Password; a plaintext or an md5-form secret
    both verify. (md5user's server login is md5, so the md5 form also serves towards it.)"""
    px = pgmux(auth_type="md5", userlist=userlist)
    c = pgwire.connect(px.port, "md5user", "appdb", "md5-secret")
    assert c.auth_requests[0] == pgwire.AUTH_MD5
    assert c.query("SELECT current_user") == [["md5user"]]
    c.terminate()
    with px.connect("md5user", "md5-secret") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("md5user",)


def test_trust_client_auth(pgmux):
    """auth_type trust: no password asked; pgmux still logs in to PostgreSQL with the
    auth_file's secret (the server asks SCRAM for app)."""
    px = pgmux(auth_type="trust")
    c = pgwire.connect(px.port, "app", "appdb", password=None)
    assert c.auth_requests == [pgwire.AUTH_OK]
    assert c.query("SELECT current_user") == [["app"]]
    c.terminate()
    with px.connect("app", password=None) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("auth_type", ["scram-sha-256", "md5"])
def test_wrong_password_and_unknown_user_look_the_same(pgmux, auth_type):
    """A wrong password and an unknown user both get 28P01 with one and the same message,
    so that user names cannot be probed."""
    px = pgmux(auth_type=auth_type)
    wrong = pgwire.login_error(px.port, "app", "appdb", "not-the-password")
    unknown = pgwire.login_error(px.port, "nosuchuser", "appdb", "app-secret")
    assert wrong.sqlstate == "28P01", wrong.fields
    assert unknown.sqlstate == "28P01", unknown.fields
    # The message may name the user; apart from that it must be identical.
    assert wrong.message.replace("app", "U") == unknown.message.replace("nosuchuser", "U")
    assert wrong.fields.get("S") == unknown.fields.get("S") == "FATAL"
    # Through libpq as well, and pgmux keeps serving afterwards.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(px.dsn("app", "wrong")).close()
    with px.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_unknown_user_scram_is_not_revealed_by_the_exchange(pgmux):
    """With SCRAM, an unknown user must be taken through a full-looking exchange (a SASL
    request, a server-first message) and only then refused, like a wrong password."""
    px = pgmux(auth_type="scram-sha-256")
    c = pgwire.RawConn(px.port)
    try:
        with pytest.raises(pgwire.PgError) as e:
            c.login("nosuchuser", "appdb", "whatever")
        assert e.value.sqlstate == "28P01"
        assert c.auth_requests[:2] == [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE]
    finally:
        c.close()


# ---- pgmux -> PostgreSQL --------------------------------------------------------------------


@pytest.mark.parametrize(
    "user, method",
    [("app", "scram-sha-256"), ("md5user", "md5"), ("pwuser", "password")],
)
def test_server_login_methods(cluster, pgmux, user, method):
    """pgmux logs in to PostgreSQL with whatever the server asks: SCRAM (app), md5 (md5user)
    and a cleartext password (pwuser), as PostgreSQL's own log confirms."""
    px = pgmux(auth_type="scram-sha-256")
    offset = cluster.log_size()
    with px.connect(user, PASSWORDS[user]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)
    methods = server_auth_methods(cluster, offset, user)
    assert methods and set(methods) == {method}, methods


def test_server_scram_with_verifier_in_auth_file(cluster, pgmux):
    """With only PostgreSQL's SCRAM verifier in the auth_file (no plaintext), pgmux logs in to
    the server with the keys the client's SCRAM proof gave it (as PgBouncer does)."""
    px = pgmux(auth_type="scram-sha-256", userlist="hashed")
    offset = cluster.log_size()
    with px.connect("app", "app-secret") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app",)
    assert set(server_auth_methods(cluster, offset, "app")) == {"scram-sha-256"}


def test_server_md5_with_md5_secret_in_auth_file(cluster, pgmux):
    """An md5-form secret is enough to log in to a server that asks md5."""
    px = pgmux(auth_type="md5", userlist="hashed")
    offset = cluster.log_size()
    with px.connect("md5user", "md5-secret") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("md5user",)
    assert set(server_auth_methods(cluster, offset, "md5user")) == {"md5"}


def test_server_refuses_the_auth_file_secret(pgmux):
    """When the auth_file's secret is not the server's password, the client gets an error
    (not a hang, not a session) and pgmux keeps serving other users."""
    px = pgmux(userlist=[("app", "app-secret"), ("demo", "not-demos-password")])
    with pytest.raises(psycopg.Error):
        with psycopg.connect(px.dsn("demo", "not-demos-password", "appdb")) as conn:
            conn.execute("SELECT 1")
    with px.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
