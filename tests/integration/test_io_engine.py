"""io_engine: epoll (the default) or io_uring (receives of a loop iteration batched into one
submission). The whole relay suite also runs with PGMUX_IO_ENGINE=io_uring (make
check-integration-uring); this file checks the choice itself."""

import socket
import struct
import subprocess
import threading
import time

import conftest
import pgwire
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


def test_io_uring_hands_a_released_connection_to_a_waiter_at_once(pgmux):
    """The answer that ends a transaction is sent from the batch, the server connection goes
    back and is granted to a client of the same worker that was waiting: that client's query
    must go out in the same loop iteration, not at the next wake-up (the 250 ms tick when
    nothing else happens)."""
    px = pgmux(io_engine="io_uring", workers=1, pool_mode="transaction", max_open_conns=1,
               query_wait_timeout="20s")
    wait_for(lambda: "io_engine io_uring" in px.log_text(), what="io_engine io_uring at start")
    with px.connect() as a, px.connect() as b:
        a.autocommit = b.autocommit = True
        waits = []
        for i in range(10):
            a.execute("BEGIN")
            a.execute("SELECT 1")
            got = []
            t = threading.Thread(target=lambda: got.append(b.execute("SELECT %s::int", (i,)).fetchone()))
            t.start()
            # b's query waits behind a's transaction (one server connection).
            time.sleep(0.05)
            assert t.is_alive()
            t0 = time.monotonic()
            a.execute("COMMIT")
            t.join(10)
            waits.append(time.monotonic() - t0)
            assert got == [(i,)]
        waits.sort()
        assert waits[len(waits) // 2] < 0.06, waits


def test_io_uring_clients_that_vanish_mid_answer(pgmux):
    """Clients that reset their connection while their answer is being sent: the batched send
    fails, the session ends, and the server connection is not lost (ASan checks that no
    completion touches a freed session)."""
    px = pgmux(io_engine="io_uring", workers=2, pool_mode="transaction", max_open_conns=2,
               auth_type="trust", query_wait_timeout="20s")
    wait_for(lambda: "io_engine io_uring" in px.log_text(), what="io_engine io_uring at start")
    for round_ in range(3):
        conns = []
        for k in range(12):
            c = pgwire.RawConn(px.port, rcvbuf=4096)
            c.login("app", "appdb")
            conns.append(c)
        for k, c in enumerate(conns):
            c.send(pgwire.query_message(
                f"SELECT g, repeat('z', 100) FROM generate_series(1, {2000 + 500 * k}) g"))
        for c in conns:
            # SO_LINGER 0: close sends a reset, so pgmux's next send to it fails.
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
    # Both server connections came back to the pool clean: four clients at once are served.
    results = []

    def run(k):
        with px.connect() as c:
            results.append(c.execute("SELECT count(*) FROM generate_series(1, %s)", (k,)).fetchone()[0])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [1, 2, 3, 4]
    assert px.alive()
