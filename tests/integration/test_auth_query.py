"""auth_query: users that are not in the auth_file are looked up on the primary as auth_user,
by a lookup thread off the worker loops, cached for auth_cache_ttl (answers of "no such user"
for at most 5 s), and then authenticate exactly as auth_file users do."""

import subprocess
import time
import uuid

import psycopg
import pytest

import pgwire
from conftest import PASSWORDS, register_secret
from helpers import Background, wait_for

LOOKUP_USER = "pgmux_lookup"
LOOKUP_PASSWORD = "lookup-pass-42"


@pytest.fixture(scope="module")
def lookup_role(cluster):
    """auth_user: a superuser, so that the default query may read pg_shadow."""
    register_secret(LOOKUP_PASSWORD, LOOKUP_USER)
    with cluster.su() as c:
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [LOOKUP_USER]).fetchone():
            c.execute(f"CREATE ROLE {LOOKUP_USER} LOGIN SUPERUSER PASSWORD '{LOOKUP_PASSWORD}'")
    return LOOKUP_USER


@pytest.fixture
def new_role(cluster):
    """Factory: new_role(password, md5=False) creates a login role that no auth_file lists,
    with a SCRAM (or md5) secret, and returns its name. Its password and stored secret are
    registered for the log grep."""

    def make(password, md5=False, name=None):
        name = name or f"aq_{uuid.uuid4().hex[:10]}"
        register_secret(password, name)
        with cluster.su() as c:
            if md5:
                c.execute("SET password_encryption = 'md5'")
            c.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
            c.execute(f"GRANT ALL ON DATABASE appdb TO {name}")
            register_secret(
                c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [name])
                .fetchone()["rolpassword"]
            )
        return name

    return make


def set_password(cluster, name, password, md5=False):
    register_secret(password, name)
    with cluster.su() as c:
        if md5:
            c.execute("SET password_encryption = 'md5'")
        c.execute(f"ALTER ROLE {name} PASSWORD '{password}'")
        register_secret(
            c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [name])
            .fetchone()["rolpassword"]
        )


def userlist():
    return list(PASSWORDS.items()) + [(LOOKUP_USER, LOOKUP_PASSWORD)]


def test_users_found_by_auth_query(cluster, pgmux, lookup_role, new_role):
    """A SCRAM role and an md5 role that only PostgreSQL knows log in through pgmux with the
    method their secret allows, and pgmux logs in to the server for them without any
    plaintext; wrong passwords and unknown users get the usual 28P01. At log_level trace, so the
    log grep covers the most verbose level."""
    scram_role = new_role("aq-scram-pw-1")
    # md5user: the cluster's pg_hba.conf asks md5 of this role only; left out of the auth_file
    md5_role = "md5user"
    users = [u for u in userlist() if u[0] != md5_role]
    px = pgmux(userlist=users, auth_user=lookup_role, auth_dbname="postgres", log_level="trace")

    c = pgwire.connect(px.port, scram_role, "appdb", "aq-scram-pw-1")
    assert c.auth_requests[0] == pgwire.AUTH_SASL
    assert c.query("SELECT current_user, current_database()") == [[scram_role, "appdb"]]
    c.terminate()
    c = pgwire.connect(px.port, md5_role, "appdb", "md5-secret")
    assert c.auth_requests[0] == pgwire.AUTH_MD5
    assert c.query("SELECT current_user") == [[md5_role]]
    c.terminate()
    with psycopg.connect(px.dsn(scram_role, "aq-scram-pw-1"), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    wrong = pgwire.login_error(px.port, scram_role, "appdb", "not-it")
    unknown = pgwire.login_error(px.port, "aq_nobody_here", "appdb", "not-it")
    assert wrong.sqlstate == unknown.sqlstate == "28P01"
    assert wrong.message == f'password authentication failed for user "{scram_role}"'
    assert unknown.message == 'password authentication failed for user "aq_nobody_here"'
    assert pgwire.login_error(px.port, md5_role, "appdb", "not-it").sqlstate == "28P01"
    # The console's database: auth_dbname (postgres) is where the lookup runs, so a looked-up
    # user is known there too, and refused for not being in admin_users (28000).
    e = pgwire.login_error(px.port, scram_role, "pgmux", "aq-scram-pw-1")
    assert e.sqlstate == "28000", e.fields
    # auth_file users never wait for a lookup
    with px.connect() as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app",)
    log = px.log_text()
    assert f'auth_query for user "{scram_role}": found' in log
    assert 'auth_query for user "aq_nobody_here": no such user' in log


def test_cache_ttl(cluster, pgmux, lookup_role, new_role):
    """A found secret is reused for auth_cache_ttl: a password changed on the server is seen
    only after it. "No such user" is remembered too (at most 5 s, here auth_cache_ttl's 3 s)."""
    role = new_role("aq-ttl-pw-1")
    px = pgmux(userlist=userlist(), auth_user=lookup_role, auth_cache_ttl="3s")
    pgwire.connect(px.port, role, "appdb", "aq-ttl-pw-1").terminate()
    set_password(cluster, role, "aq-ttl-pw-2")
    # still the cached secret
    assert pgwire.login_error(px.port, role, "appdb", "aq-ttl-pw-2").sqlstate == "28P01"

    def new_password_works():
        try:
            c = pgwire.connect(px.port, role, "appdb", "aq-ttl-pw-2")
        except pgwire.PgError as e:
            assert e.sqlstate == "28P01", e.fields
            return False
        ok = c.query("SELECT current_user") == [[role]]
        c.terminate()
        return ok

    t0 = time.monotonic()
    wait_for(new_password_works, timeout=10, interval=0.2, what="the new password")
    assert time.monotonic() - t0 < 6

    late = f"aq_late_{uuid.uuid4().hex[:8]}"
    assert pgwire.login_error(px.port, late, "appdb", "aq-late-pw").sqlstate == "28P01"
    new_role("aq-late-pw", name=late)
    # remembered as missing for a while
    assert pgwire.login_error(px.port, late, "appdb", "aq-late-pw").sqlstate == "28P01"

    def late_role_works():
        try:
            pgwire.connect(px.port, late, "appdb", "aq-late-pw").terminate()
            return True
        except pgwire.PgError:
            return False

    wait_for(late_role_works, timeout=10, interval=0.2, what="the new role")


def test_lookup_failures_and_slow_lookups(cluster, pgmux, lookup_role, new_role):
    """A lookup that fails (here: statement_timeout, which is server_connect_timeout) gives that
    client 08006, and while a slow lookup runs, auth_file users log in and query at once: the
    lookup never runs on a worker loop."""
    role = new_role("aq-slow-pw")
    px = pgmux(
        userlist=userlist(),
        auth_user=lookup_role,
        server_connect_timeout="4s",
        auth_query="SELECT usename, passwd FROM pg_shadow WHERE usename = $1 "
        "AND pg_sleep(6) IS NOT NULL",
    )
    slow = Background(pgwire.login_error, px.port, role, "appdb", "aq-slow-pw")
    # the lookup is running on the server, so the logins below overlap it
    wait_for(lambda: [r for r in cluster.server_conns(state="active")
                      if "pg_shadow" in r["query"]], timeout=10, what="the lookup running")
    for _ in range(5):
        with px.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    # all served while the lookup still waits for its answer, not after it gave up
    assert not slow.done(), "the logins waited for the slow lookup"
    err = slow.result(timeout=15)
    assert err.sqlstate == "08006", err.fields
    assert err.message == f'could not look up user "{role}" with auth_query'
    assert "auth_query for user" in px.log_text() and "statement timeout" in px.log_text()


def test_security_definer_function(cluster, pgmux, new_role):
    """The README's recipe: a non-superuser auth_user calling a SECURITY DEFINER function."""
    register_secret("fn-lookup-pw", "pgmux_fn_lookup")
    with cluster.su() as c:
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = 'pgmux_fn_lookup'").fetchone():
            c.execute("CREATE ROLE pgmux_fn_lookup LOGIN PASSWORD 'fn-lookup-pw'")
            c.execute("CREATE SCHEMA pgmux_fn")
            c.execute(
                "CREATE FUNCTION pgmux_fn.lookup(name) RETURNS TABLE (usename name, passwd text)"
                " LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog"
                " AS $$ SELECT usename, passwd FROM pg_shadow WHERE usename = $1 $$"
            )
            c.execute("REVOKE ALL ON FUNCTION pgmux_fn.lookup(name) FROM PUBLIC")
            c.execute("GRANT USAGE ON SCHEMA pgmux_fn TO pgmux_fn_lookup")
            c.execute("GRANT EXECUTE ON FUNCTION pgmux_fn.lookup(name) TO pgmux_fn_lookup")
    role = new_role("aq-fn-pw")
    px = pgmux(userlist=list(PASSWORDS.items()) + [("pgmux_fn_lookup", "fn-lookup-pw")],
               auth_user="pgmux_fn_lookup", auth_dbname="postgres",
               auth_query="SELECT * FROM pgmux_fn.lookup($1)")
    c = pgwire.connect(px.port, role, "appdb", "aq-fn-pw")
    assert c.query("SELECT current_user") == [[role]]
    c.terminate()


def test_console_users_without_auth_dbname(pgmux, lookup_role, new_role):
    """Without auth_dbname a lookup would run in the client's database, which for the console
    exists only in pgmux: console users must then be in auth_file, others get 28P01."""
    role = new_role("aq-console-pw")
    px = pgmux(userlist=userlist(), auth_user=lookup_role, admin_users=f"app,{role}",
               log_level="debug")
    e = pgwire.login_error(px.port, role, "pgmux", "aq-console-pw")
    assert e.sqlstate == "28P01", e.fields
    c = pgwire.connect(px.port, "app", "pgmux", "app-secret")
    assert c.query("SHOW VERSION")
    c.terminate()
    assert "auth_query for user" not in px.log_text()


def test_auth_user_with_wrong_password(pgmux, lookup_role, new_role):
    role = new_role("aq-wrong-pw")
    px = pgmux(userlist=list(PASSWORDS.items()) + [(LOOKUP_USER, "not-the-password")],
               auth_user=lookup_role)
    err = pgwire.login_error(px.port, role, "appdb", "aq-wrong-pw")
    assert err.sqlstate == "08006", err.fields
    with px.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "auth_query: cannot connect to" in px.log_text()


def test_auth_query_settings_are_validated(tmp_path):
    import conftest

    exe = conftest._binary("PGMUX_BIN", "build/asan/pgmux")
    (tmp_path / "users.txt").write_text(
        '"plain" "pw"\n"hashed" "md5ee69efad287c7423caf0b3229d71f567"\n'
    )

    def check(body):
        ini = tmp_path / "proxy.ini"
        ini.write_text("[pgmux]\nauth_file = users.txt\n" + body + "[node.a]\nhost = 127.0.0.1\n")
        r = subprocess.run([exe, "--check", "-c", str(ini)], capture_output=True, text=True)
        return r.returncode, r.stderr

    assert check("auth_user = plain\nauth_cache_ttl = 10s\nauth_dbname = postgres\n")[0] == 0
    ini = str(tmp_path / "proxy.ini")
    rc, err = check("auth_query = SELECT 1\nauth_cache_ttl = 5s\n")
    assert rc == 2
    assert f"{ini}:3: auth_query: needs auth_user" in err
    assert f"{ini}:4: auth_cache_ttl: needs auth_user" in err
    rc, err = check("auth_user = nobody\n")
    assert rc == 2 and f"{ini}:3: auth_user: user 'nobody' is not in auth_file" in err
    rc, err = check("auth_user = hashed\n")
    assert rc == 2 and "auth_user: user 'hashed' needs a plaintext password in auth_file" in err
    rc, err = check("auth_user = plain\nauth_query = SELECT usename, passwd FROM pg_shadow\n")
    assert rc == 2 and f"{ini}:4: auth_query: must use $1 for the user name" in err
