"""unix_socket_dir: a Unix-domain listening socket .s.PGSQL.<listen_port> beside the TCP one, for
sidecar deployments. Reached with psql -h DIR and psycopg host=DIR, accepted by every worker,
matched by hba `local` lines, removed at exit, and a stale file from a crash replaced only when
nothing listens on it."""

import os
import shutil
import socket
import stat
import subprocess
import tempfile

import psycopg
import pytest

import conftest
from helpers import wait_for


@pytest.fixture
def sockdir():
    # sun_path holds 108 bytes: pytest's tmp_path is often longer than that allows.
    d = tempfile.mkdtemp(prefix="pgmux-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _unix_dsn(px, sockdir, user="app", password="app-secret", dbname="appdb"):
    return (f"host={sockdir} port={px.port} user={user} dbname={dbname} connect_timeout=10"
            + (f" password={password}" if password else ""))


def test_psql_and_psycopg_over_the_unix_socket(pgmux, sockdir):
    px = pgmux(unix_socket_dir=sockdir, unix_socket_mode="0660", workers=2,
               pool_mode="transaction")
    path = os.path.join(sockdir, f".s.PGSQL.{px.port}")
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    wait_for(lambda: f"and {path}" in px.log_text(), what="the socket path in the start line")

    env = dict(os.environ, PGPASSWORD="app-secret")
    out = subprocess.run(
        ["psql", "-h", sockdir, "-p", str(px.port), "-U", "app", "-d", "appdb", "-At", "-c",
         "SELECT 40 + 2"],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert out.returncode == 0 and out.stdout.strip() == "42", out.stderr

    # Several sessions at once over the socket, and TCP still serves beside it.
    conns = [psycopg.connect(_unix_dsn(px, sockdir), autocommit=True) for _ in range(8)]
    for i, c in enumerate(conns):
        assert c.execute("SELECT %s::int * 2", (i,)).fetchone()[0] == i * 2
    with px.connect() as tcp:
        assert tcp.execute("SELECT 1").fetchone()[0] == 1
    for c in conns:
        c.close()
    # psql's session and the eight above came in through the socket (client=W.N names the
    # worker W); the shared listener is not tied to one worker.
    import re

    workers = set(re.findall(r"event=connect client=(\d+)\.\d+ addr=unix", px.log_text()))
    assert len(re.findall(r"event=connect client=\S+ addr=unix", px.log_text())) >= 9
    assert workers, px.log_text()

    px.proc.send_signal(15)
    px.proc.wait(timeout=15)
    px.exited_on_purpose = True
    assert px.proc.returncode == 0
    assert not os.path.exists(path), "the socket file outlived pgmux"


def test_hba_local_lines_match_unix_clients(pgmux, sockdir):
    hba = (
        "local all app trust\n"
        "host  all all 127.0.0.1/32 reject\n"
    )
    px = pgmux(unix_socket_dir=sockdir, hba=hba)
    with psycopg.connect(_unix_dsn(px, sockdir, password=None), autocommit=True) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "app"
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(px.dsn()).close()
    assert "28000" in str(e.value.sqlstate) or "rejects connection" in str(e.value)
    # A local line names app only: another user over the socket has no line.
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(_unix_dsn(px, sockdir, user="md5user", password="md5-secret")).close()
    assert "no pgmux hba_file entry" in str(e.value)


def test_stale_socket_file_is_replaced_live_one_is_not(pgmux, sockdir):
    port = conftest._free_port()
    path = os.path.join(sockdir, f".s.PGSQL.{port}")
    # A file left by a crash: bound once, nobody listens on it any more.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    assert os.path.exists(path)
    px = pgmux(unix_socket_dir=sockdir, listen_port=port)
    wait_for(lambda: "removing stale Unix socket" in px.log_text(), what="the stale-file warning")
    with psycopg.connect(_unix_dsn(px, sockdir), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
    px.proc.send_signal(15)
    px.proc.wait(timeout=15)
    px.exited_on_purpose = True
    assert not os.path.exists(path)

    # Something accepts on the socket: pgmux must not steal its name. Started by hand with the
    # same proxy.ini, as it must exit at once.
    ini = str(px.dir / "proxy.ini")
    exe = conftest._binary("PGMUX_BIN", "build/asan/pgmux")

    def refused():
        r = subprocess.run([exe, "-c", ini], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, r.stderr
        assert f"cannot listen on Unix socket {path}: Address already in use" in r.stderr, r.stderr

    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(1)
    try:
        refused()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(path)  # still the original listener's
    finally:
        live.close()
        os.unlink(path)

    # A regular file of that name is no socket of ours either.
    with open(path, "w") as f:
        f.write("not a socket")
    refused()
    with open(path) as f:
        assert f.read() == "not a socket"


def test_unix_socket_keys_are_validated(tmp_path):
    exe = conftest._binary("PGMUX_BIN", "build/asan/pgmux")
    ini = tmp_path / "proxy.ini"
    ini.write_text(
        "[pgmux]\nauth_type = trust\n"
        "unix_socket_dir = relative/dir\n"
        "unix_socket_mode = 0789\n"
        f"[node.a]\nhost = 127.0.0.1\n"
    )
    r = subprocess.run([exe, "--check", "-c", str(ini)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert f"{ini}:3: unix_socket_dir: 'relative/dir' is not an absolute path" in r.stderr
    assert f"{ini}:4: unix_socket_mode: '0789' is not an octal file mode" in r.stderr
    ini.write_text(
        "[pgmux]\nauth_type = trust\n"
        f"unix_socket_dir = /{'x' * 100}\n"
        f"[node.a]\nhost = 127.0.0.1\n"
    )
    r = subprocess.run([exe, "--check", "-c", str(ini)], capture_output=True, text=True)
    assert r.returncode == 2 and "too long for a Unix socket path" in r.stderr, r.stderr
    ini.write_text(
        "[pgmux]\nauth_type = trust\nunix_socket_dir =\nunix_socket_mode = 600\n"
        f"[node.a]\nhost = 127.0.0.1\n"
    )
    r = subprocess.run([exe, "--check", "-c", str(ini)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
