"""io_engine: epoll (the default) or io_uring (receives of a loop iteration batched into one
submission). The whole relay suite also runs with PGMUX_IO_ENGINE=io_uring (make
check-integration-uring); this file checks the choice itself."""

import subprocess
import threading

import conftest
from helpers import wait_for


def test_io_uring_engine_is_chosen_and_relays_many_sessions(pgmux):
    px = pgmux(io_engine="io_uring", workers=2, pool_mode="transaction", max_open_conns=4)
    wait_for(lambda: "io_engine io_uring" in px.log_text(), what="io_engine io_uring at start")
    # More sessions than server connections, each pipelining statements, so one loop
    # iteration has several receives to batch and servers change hands between transactions.
    errors = []

    def run(k):
        try:
            with px.connect() as c:
                for i in range(50):
                    row = c.execute("SELECT %s::int + %s::int, repeat('x', %s)",
                                    (k, i, 1000 * (i % 40))).fetchone()
                    assert row[0] == k + i and len(row[1]) == 1000 * (i % 40)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    # A result larger than a buffer, read back slowly in many receives.
    with px.connect() as c:
        rows = c.execute("SELECT g, repeat('y', 200) FROM generate_series(1, 20000) g").fetchall()
        assert len(rows) == 20000 and rows[-1][0] == 20000


def test_default_engine_is_epoll_and_bad_values_are_refused(pgmux, tmp_path):
    px = pgmux(io_engine=None)
    wait_for(lambda: "io_engine epoll" in px.log_text(), what="io_engine epoll at start")
    exe = conftest._binary("PGMUX_BIN", "build/asan/pgmux")
    ini = tmp_path / "proxy.ini"
    ini.write_text("[pgmux]\nauth_type = trust\nio_engine = kqueue\n[node.a]\nhost = 127.0.0.1\n")
    r = subprocess.run([exe, "--check", "-c", str(ini)], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{ini}:3: io_engine: 'kqueue' is not one of: epoll, io_uring, auto" in r.stderr, r.stderr
    ini.write_text("[pgmux]\nauth_type = trust\nio_engine = auto\n[node.a]\nhost = 127.0.0.1\n")
    r = subprocess.run([exe, "--check", "-c", str(ini)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
