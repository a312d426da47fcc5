"""worker_balance: sessions gather on as few workers as the load keeps busy and spread again
when it grows. New connections go to the active workers' listeners (a BPF program steers the
kernel's SO_REUSEPORT choice; a parked worker leaves the Unix listener alone); with session
pooling, or worker_balance = off, the kernel spreads them over every worker, and they stay
where they were accepted. A session between transactions moves to an active worker, keeps its
prepared statements and its cancel key (a CancelRequest names the worker that accepted it,
which forwards it). Tests of moves put sessions on every worker with worker_balance = off
first, then turn it on by reload."""

import os
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

from helpers import Background, stays, wait_for
from test_cancel import CANCEL_S, sleeping
from test_metrics import _events, _free_port, scrape, value

WORKER_SLOT_BITS = 23  # BackendKeyData pid: accepting worker << 23 | its slot


def per_worker(mport, name, n):
    fams = scrape(mport)
    return [int(value(fams, name, worker=str(i))) for i in range(n)]


def home(conn):
    return conn.info.backend_pid >> WORKER_SLOT_BITS


def _balance(px, on):
    from test_reload import rewrite, sighup_and_wait
    rewrite(px, worker_balance="on" if on else "off")
    sighup_and_wait(px)


def test_new_logins_go_to_the_active_workers(pgmux):
    """At a light load only worker 0 is active: every login over TCP and over the Unix socket
    lands there, and nothing has to move."""
    import tempfile
    sockdir = tempfile.mkdtemp(prefix="pgmux-", dir="/tmp")
    try:
        mport = _free_port()
        px = pgmux(workers=4, pool_mode="transaction", metrics_port=mport,
                   unix_socket_dir=sockdir)
        conns = [px.connect() for _ in range(24)]
        conns += [psycopg.connect(f"host={sockdir} port={px.port} user=app password=app-secret "
                                  "dbname=appdb", autocommit=True) for _ in range(8)]
        assert [home(c) for c in conns] == [0] * 32
        assert per_worker(mport, "pgmux_worker_client_connections", 4) == [32, 0, 0, 0]
        for i, c in enumerate(conns):
            assert c.execute("SELECT %s::int", [i]).fetchone()[0] == i
        fams = scrape(mport)
        assert value(fams, "pgmux_workers_active") == 1
        assert value(fams, "pgmux_workers_steered") == 1
        assert value(fams, "pgmux_client_moves_total") == 0
        for c in conns:
            c.close()
    finally:
        import shutil
        shutil.rmtree(sockdir, ignore_errors=True)


def test_session_pooling_spreads_new_logins(pgmux):
    """A session-pooled client can never move, so with any session pooling in the file the
    kernel spreads logins over every worker, whatever the load."""
    mport = _free_port()
    px = pgmux(workers=4, pool_mode="transaction", metrics_port=mport,
               sections={"database.postgres": {"pool_mode": "session"}})
    conns = [px.connect() for _ in range(16)]
    assert len({home(c) for c in conns}) > 1  # all 16 on one worker: 1 run in 4**15
    assert value(scrape(mport), "pgmux_workers_steered") == 0
    for c in conns:
        c.close()


def test_light_load_gathers_on_one_worker(pgmux):
    mport = _free_port()
    px = pgmux(workers=4, pool_mode="transaction", metrics_port=mport, worker_balance="off")
    conns = [px.connect() for _ in range(16)]
    homes = {home(c) for c in conns}
    # The kernel spread the logins over the four listeners ...
    assert len(homes) > 1, homes
    _balance(px, True)
    # ... and the sessions gather on worker 0, the only active one at this load.
    wait_for(lambda: per_worker(mport, "pgmux_worker_client_connections", 4) == [16, 0, 0, 0],
             timeout=10, what="all 16 sessions on worker 0")
    fams = scrape(mport)
    assert value(fams, "pgmux_workers_active") == 1
    assert value(fams, "pgmux_client_moves_total") >= 16 - sum(1 for c in conns if home(c) == 0)
    # They keep working there, protocol-level prepared statements included (psycopg prepares
    # a statement it has run prepare_threshold times; the server connection under it differs).
    for rnd in range(3):
        for i, c in enumerate(conns):
            got = c.execute("SELECT %s::int + 1", [i], prepare=True).fetchone()[0]
            assert got == i + 1
    # A session that runs a transaction stays put until it ends, and then still works.
    with conns[1].transaction():
        conns[1].execute("CREATE TEMP TABLE IF NOT EXISTS t_bal (x int) ON COMMIT DROP")
        conns[1].execute("INSERT INTO t_bal VALUES (1)")
        assert conns[1].execute("SELECT count(*) FROM t_bal").fetchone()[0] == 1
    for c in conns:
        c.close()
    wait_for(lambda: per_worker(mport, "pgmux_worker_client_connections", 4) == [0, 0, 0, 0],
             timeout=10, what="every session counted out")
    # The log ties a moved session's ids: its connect line's id is a move line's from=, and
    # the move line's id is the one its disconnect line carries.
    log = wait_for(lambda: (lambda t: t if len(_events(t, "disconnect")) >= 16 else None)(
        px.log_text()), what="16 disconnect lines")
    connected = {e["client"] for e in _events(log, "connect")}
    gone = {e["client"] for e in _events(log, "disconnect")}
    moves = _events(log, "move")
    # (a session moved twice is found under its first id's from= and its last id's client=)
    froms = {m["from"] for m in moves}
    assert moves and all(m["from"] in connected | {x["client"] for x in moves} and
                         (m["client"] in gone or m["client"] in froms) for m in moves), moves


def test_cancel_reaches_a_moved_session(cluster, pgmux):
    """The cancel key names the worker that accepted the session; after the session moved,
    that worker forwards the CancelRequest to where it lives."""
    mport = _free_port()
    px = pgmux(workers=4, pool_mode="transaction", metrics_port=mport, worker_balance="off")
    keep = []
    conn = None
    for _ in range(60):
        c = px.connect()
        if home(c) != 0:
            conn = c
            break
        keep.append(c)
    assert conn is not None, "60 logins, all accepted by worker 0"
    h = home(conn)
    _balance(px, True)
    wait_for(lambda: per_worker(mport, "pgmux_worker_client_connections", 4)[h] == 0,
             timeout=10, what=f"the session accepted by worker {h} moved away")
    for attempt in range(2):
        job = Background(conn.execute, "SELECT pg_sleep(30)")
        sleeping(cluster)
        t0 = time.monotonic()
        conn.cancel()
        err = job.error(timeout=10)
        assert isinstance(err, psycopg.errors.QueryCanceled), err
        assert time.monotonic() - t0 < CANCEL_S
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    # A wrong key cancels nothing, though it is forwarded all the same.
    job = Background(lambda: conn.execute("SELECT pg_sleep(1.5), 'done'").fetchone())
    sleeping(cluster)
    with socket.create_connection(("127.0.0.1", px.port)) as s:
        s.sendall(struct.pack("!iiii", 16, 80877102, conn.info.backend_pid,
                              (conn.info.backend_pid * 7 + 1) & 0x7FFFFFFF))
        s.recv(1)
    assert job.result(timeout=10)[1] == "done"
    for c in keep + [conn]:
        c.close()


def _load(px, stop, errors, done, n_threads=6, homes=None):
    """Threads running one-statement transactions back to back until stop; sessions move
    between them, so every answer is checked. homes[k]: the worker that accepted session k."""
    def run(k):
        try:
            with px.connect() as c:
                if homes is not None:
                    homes[k] = home(c)
                i = 0
                while not stop.is_set():
                    assert c.execute("SELECT %s::int", [i]).fetchone()[0] == i
                    i += 1
                done[k] = i
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(n_threads)]
    for t in threads:
        t.start()
    return threads


def _stop_load(stop, threads):
    stop.set()
    for t in threads:
        t.join(timeout=10)


def _check_load(errors, done, n_threads):
    """Every load thread ran statements and none failed."""
    assert not errors, errors
    assert len(done) == n_threads and all(n > 0 for n in done.values()), done


def test_sessions_move_in_the_middle_of_a_load(pgmux):
    """Twelve sessions run statements back to back, spread by the kernel with worker_balance
    off; once it is on, the load stays light, so those accepted by worker 1 move to worker 0
    between two of their statements, and nothing is lost."""
    mport = _free_port()
    px = pgmux(workers=2, pool_mode="transaction", metrics_port=mport, worker_balance="off")
    stop = threading.Event()
    errors, done, homes = [], {}, {}
    threads = _load(px, stop, errors, done, n_threads=12, homes=homes)
    try:
        wait_for(lambda: len(homes) == 12, timeout=15, what="12 sessions logged in")
        moved = sum(1 for h in homes.values() if h != 0)
        assert moved > 0, homes  # the kernel put all 12 on worker 0: 1 run in 2048
        _balance(px, True)
        wait_for(lambda: per_worker(mport, "pgmux_worker_client_connections", 2) == [12, 0],
                 timeout=15, what="the busy sessions gathered on worker 0")
        assert value(scrape(mport), "pgmux_client_moves_total") >= moved
        time.sleep(0.5)  # more statements after the moves
    finally:
        _stop_load(stop, threads)
    _check_load(errors, done, 12)


def test_busy_load_spreads_and_gathers_again(pgmux):
    """worker_busy_percent = 1: any load calls for the second worker; sessions move to it, and
    go back to worker 0 once the load has stopped."""
    mport = _free_port()
    px = pgmux(workers=2, pool_mode="transaction", metrics_port=mport, worker_busy_percent=1)
    idle = [px.connect() for _ in range(4)]
    stop = threading.Event()
    errors, done = [], {}
    threads = _load(px, stop, errors, done)
    try:
        wait_for(lambda: value(scrape(mport), "pgmux_workers_active") == 2, timeout=15,
                 what="a second active worker under load")
        wait_for(lambda: per_worker(mport, "pgmux_worker_client_connections", 2)[1] > 0,
                 timeout=15, what="sessions handed to worker 1")
        fams = scrape(mport)
        assert value(fams, "pgmux_worker_busy_ratio", worker="0") > 0
    finally:
        _stop_load(stop, threads)
    _check_load(errors, done, 6)
    wait_for(lambda: value(scrape(mport), "pgmux_workers_active") == 1, timeout=15,
             what="back to one active worker")
    wait_for(lambda: per_worker(mport, "pgmux_worker_client_connections", 2) == [4, 0],
             timeout=15, what="the idle sessions gathered on worker 0 again")
    for c in idle:
        assert c.execute("SELECT 2").fetchone()[0] == 2
        c.close()


def test_shared_startup_settings_stay_each_clients_own(pgmux):
    """Clients that sent the same startup parameters share one block of wanted settings
    (pool_params_intern); a SET by one copies it first. With the sessions moved to worker 0
    and two server connections changing hands, each client keeps its own settings, and a
    client that logs in later with the same parameters gets the original ones."""
    mport = _free_port()
    px = pgmux(workers=4, pool_mode="transaction", metrics_port=mport, max_open_conns=2)
    conns = [px.connect(application_name="shared", client_encoding="UTF8") for _ in range(12)]
    wait_for(lambda: per_worker(mport, "pgmux_worker_client_connections", 4) == [12, 0, 0, 0],
             timeout=10, what="all 12 sessions on worker 0")
    conns[3].execute("SET application_name = 'mine'")
    conns[7].execute("SET application_name = 'other'")
    late = px.connect(application_name="shared", client_encoding="UTF8")
    for _ in range(3):
        for i, c in enumerate(conns + [late]):
            want = {3: "mine", 7: "other"}.get(i, "shared")
            assert c.execute("SHOW application_name").fetchone()[0] == want, i
            assert c.execute("SHOW client_encoding").fetchone()[0] == "UTF8", i
    for c in conns + [late]:
        c.close()


def test_spreads_only_while_a_cpu_is_idle(pgmux):
    """Spreading: while a whole CPU that pgmux may use is idle, a worker counts as busy at half
    worker_busy_percent (pgmux_workers_spread 1); once every CPU is busy, at the whole of it
    again. Processes that spin on every CPU this test may use take the idle time away."""
    mport = _free_port()
    px = pgmux(workers=2, pool_mode="transaction", metrics_port=mport)
    conn = px.connect()
    spread = lambda: value(scrape(mport), "pgmux_workers_spread")  # noqa: E731
    wait_for(lambda: spread() == 1, timeout=10, what="spreading on an idle machine")
    assert value(scrape(mport), "pgmux_spare_cpus") >= 0.5
    spinners = [subprocess.Popen(["/usr/bin/python3", "-c", "while True: pass"])
                for _ in os.sched_getaffinity(0)]
    try:
        wait_for(lambda: spread() == 0, timeout=15, what="no spreading with every CPU busy")
        assert value(scrape(mport), "pgmux_spare_cpus") < 0.5
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    wait_for(lambda: spread() == 1, timeout=10, what="spreading again once the CPUs are idle")
    assert conn.execute("SELECT 2").fetchone()[0] == 2
    conn.close()
    # The log says each change, with the spare CPU that decided it.
    states = [(e["state"], float(e["spare_cpus"])) for e in _events(px.log_text(), "spread")]
    assert [st for st, _ in states] == ["on", "off", "on"], states
    assert states[0][1] >= 1.0 and states[1][1] < 0.5 and states[2][1] >= 1.0, states


def test_balance_off_keeps_sessions_where_accepted(pgmux):
    mport = _free_port()
    px = pgmux(workers=4, pool_mode="transaction", metrics_port=mport, worker_balance="off")
    conns = [px.connect() for _ in range(16)]
    for c in conns:
        c.execute("SELECT 1")
    want = [sum(1 for c in conns if home(c) == i) for i in range(4)]
    assert sum(1 for n in want if n) > 1, want
    assert per_worker(mport, "pgmux_worker_client_connections", 4) == want
    stays(lambda: per_worker(mport, "pgmux_worker_client_connections", 4) == want,
          duration=1.5, what="sessions where the kernel put them")
    fams = scrape(mport)
    assert value(fams, "pgmux_workers_active") == 4
    assert value(fams, "pgmux_client_moves_total") == 0
    for c in conns:
        c.close()


def test_reload_turns_balancing_on_and_off(pgmux):
    """worker_balance is reloadable: off keeps the sessions where the kernel put them, on
    gathers them, off again leaves them where they are and lets every worker keep new ones."""
    from test_reload import rewrite, sighup_and_wait
    mport = _free_port()
    px = pgmux(workers=2, pool_mode="transaction", metrics_port=mport, worker_balance="off")
    conns = [px.connect() for _ in range(12)]
    spread = [sum(1 for c in conns if home(c) == i) for i in range(2)]
    assert spread[1] > 0, spread  # all 12 on worker 0: 1 run in 2048
    assert value(scrape(mport), "pgmux_workers_active") == 2
    rewrite(px, worker_balance="on")
    sighup_and_wait(px)
    assert "changed: worker_balance;" in px.log_text()
    wait_for(lambda: per_worker(mport, "pgmux_worker_client_connections", 2) == [12, 0],
             timeout=15, what="sessions gathered after the reload")
    assert value(scrape(mport), "pgmux_workers_active") == 1
    rewrite(px, worker_balance="off")
    sighup_and_wait(px)
    wait_for(lambda: value(scrape(mport), "pgmux_workers_active") == 2, timeout=10,
             what="every worker active again")
    for i, c in enumerate(conns):
        assert c.execute("SELECT %s::int", [i]).fetchone()[0] == i
        c.close()


def test_churn_of_moves_cancels_and_disconnects(cluster, pgmux):
    """Two workers, worker_balance turned off and on by reload every second (off: the kernel
    spreads new sessions over both and they stay; on: new ones go to worker 0, and worker 1
    parks and hands its sessions over), while clients connect, run
    statements and pipelines, cancel their own running sleeps and hang up at random moments.
    Every answer is checked: a cancel must end the statement it was sent for and nothing else
    (PostgreSQL signals a cancelled backend twice, and pgmux holds the server connection
    back until the cancel is done: cancel.c). pgmux must stay healthy (the fixture fails the
    test on a sanitizer report or an exit) and end with no session counted."""
    import random
    from test_reload import rewrite, sighup_and_wait
    mport = _free_port()
    px = pgmux(workers=2, pool_mode="transaction", metrics_port=mport)
    stop = threading.Event()
    errors, counts = [], {"stmts": 0, "cancels": 0, "sessions": 0}
    lock = threading.Lock()

    def run(seed):
        rnd = random.Random(seed)
        try:
            while not stop.is_set():
                conn = px.connect()
                with lock:
                    counts["sessions"] += 1
                # long enough that many sessions see a reload turn balancing on
                for _ in range(rnd.randint(1, 60)):
                    r = rnd.random()
                    if r < 0.1:
                        mark = f"churn-{seed}-{rnd.randint(0, 10**9)}"
                        job = Background(conn.execute, f"SELECT pg_sleep(5), '{mark}'")
                        # cancel what runs, not a statement still on its way (a cancel that
                        # reaches the server before it is ignored, and the sleep finishes)
                        wait_for(lambda: [q for q in cluster.server_conns(state="active")
                                          if mark in q["query"]] or job.done(), timeout=10,
                                 what=f"{mark} running")
                        assert not job.done(), f"{mark} ended before its cancel: {job._error!r}"
                        time.sleep(rnd.uniform(0, 0.1))
                        conn.cancel()
                        err = job.error(timeout=10)
                        assert isinstance(err, psycopg.errors.QueryCanceled), err
                        with lock:
                            counts["cancels"] += 1
                    elif r < 0.3:
                        with conn.pipeline():
                            curs = [conn.execute("SELECT %s::int", [k]) for k in range(20)]
                        assert [c.fetchone()[0] for c in curs] == list(range(20))
                    else:
                        k = rnd.randint(0, 10**6)
                        assert conn.execute("SELECT %s::int", [k]).fetchone()[0] == k
                    with lock:
                        counts["stmts"] += 1
                    if rnd.random() < 0.5:
                        time.sleep(rnd.uniform(0, 0.05))
                if rnd.random() < 0.5:
                    conn.close()
                else:
                    conn.pgconn.finish()  # no Terminate: the socket just closes
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(10)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 8
    on = True
    while time.monotonic() < deadline:
        time.sleep(1.0)
        on = not on
        rewrite(px, worker_balance="on" if on else "off")
        sighup_and_wait(px)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[:5]
    assert counts["sessions"] > 20 and counts["stmts"] > 200 and counts["cancels"] > 10, counts
    moves = value(scrape(mport), "pgmux_client_moves_total")
    print(f"\nchurn: {counts}, {moves:.0f} moves")
    assert moves >= 5  # a stress of moves (10-20 here under ASan)
    wait_for(lambda: sum(per_worker(mport, "pgmux_worker_client_connections", 2)) == 0,
             timeout=15, what="every session counted out")
    with px.connect() as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_a_listener_that_joins_the_port_gets_its_share(pgmux):
    """While pgmux steers new connections to its active worker, another socket that starts
    listening on the same port (same user, SO_REUSEPORT: here a plain one, which knows nothing
    of steering) would get none. pgmux counts the port's listeners every second while it
    steers, lets the kernel's hash share connections while the other one is there, and steers
    again once it has gone."""
    mport = _free_port()
    px = pgmux(workers=2, pool_mode="transaction", metrics_port=mport)
    steered = lambda: value(scrape(mport), "pgmux_workers_steered")  # noqa: E731
    assert steered() == 1
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", px.port))
        other.listen(64)
        wait_for(lambda: steered() == 0, timeout=10, what="steering off beside another listener")
        assert "another process listens on the same port" in px.log_text()
        # the hash deals over three listeners now: some connections reach the other one
        other.settimeout(0)
        got = 0
        for _ in range(60):
            with socket.create_connection(("127.0.0.1", px.port), timeout=5):
                pass
            try:
                other.accept()[0].close()
                got += 1
            except BlockingIOError:
                pass
        assert got > 0  # none of 60 with a third of the hash: about 1 run in 10**10
    finally:
        other.close()
    wait_for(lambda: steered() == 1, timeout=10, what="steering again once it has gone")
    conns = [px.connect() for _ in range(8)]
    assert [home(c) for c in conns] == [0] * 8
    for c in conns:
        c.close()
