"""Memory that stays flat: results stream with backpressure (1,000,000 rows, about 60 MB, to a
client that reads slowly must not grow pgmux's RSS by more than a few MiB), an idle
logged-in client costs under half a KiB, and the buffers of a burst go back afterwards. Runs
the optimized build (PGMUX_RELEASE_BIN): ASan's allocator would blur the measurement."""

import resource
import struct
import threading
import time

import pgwire

ROWS = 1_000_000
LIMIT_KIB = 8 * 1024  # allowed RSS growth


def test_million_rows_to_a_slow_client_bounded_rss(pgmux, release_binary):
    px = pgmux(binary=release_binary, auth_type="trust", workers=2)
    # Small receive buffer: the kernel holds little, so pgmux must stop reading the server.
    c = pgwire.connect(px.port, "app", "appdb", "app-secret", rcvbuf=64 * 1024, timeout=60)
    try:
        assert c.query("SELECT 1") == [["1"]]  # warm up buffers and the server connection
        time.sleep(0.2)
        baseline = px.rss_kib()
        peak = [baseline]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], px.rss_kib())
                except (FileNotFoundError, ProcessLookupError):
                    return
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            c.send(pgwire.query_message(
                f"SELECT g, repeat('x', 40) FROM generate_series(1, {ROWS}) g"))
            # Phase 1: read nothing. PostgreSQL could send the whole result in well under this
            # time; without backpressure pgmux would buffer it.
            time.sleep(2.0)
            stalled_peak = peak[0]
            # Phase 2: read slowly (about 16 MB/s), counting DataRows, until ReadyForQuery.
            rows, done, buf = 0, False, bytearray()
            last_pause = time.monotonic()
            while not done:
                chunk = c.sock.recv(32 * 1024)
                assert chunk, "pgmux closed the connection mid-result"
                buf += chunk
                pos = 0
                while len(buf) - pos >= 5:
                    (length,) = struct.unpack_from("!i", buf, pos + 1)
                    if len(buf) - pos < 1 + length:
                        break
                    t = buf[pos]
                    if t == ord("D"):
                        rows += 1
                    elif t == ord("E"):
                        raise pgwire.PgError(pgwire.parse_error_fields(bytes(buf[pos + 5 : pos + 1 + length])))
                    elif t == ord("Z"):
                        done = True
                    pos += 1 + length
                del buf[:pos]
                time.sleep(0.002)
                if time.monotonic() - last_pause > 1.0:  # and stall again now and then
                    time.sleep(0.5)
                    last_pause = time.monotonic()
        finally:
            stop.set()
            sampler.join()
        assert rows == ROWS
        growth = peak[0] - baseline
        assert stalled_peak - baseline < LIMIT_KIB, f"RSS grew {stalled_peak - baseline} KiB while stalled"
        assert growth < LIMIT_KIB, f"RSS grew {growth} KiB (baseline {baseline} KiB)"
        # The session is intact afterwards.
        assert c.query("SELECT 'after'") == [["after"]]
    finally:
        c.terminate()


def _nofile_at_least(need):
    """Raise the open-file limit of this process and of the pgmux it starts (which inherits it)
    to need: each client takes a descriptor on both sides."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need, "open-file limit too low"


IDLE_CLIENTS = 2000
IDLE_LIMIT_KIB = 0.5  # README "Performance": the target per idle client


def test_idle_clients_cost_under_half_a_kib(pgmux, release_binary):
    """RSS growth per idle md5-authenticated client in transaction pooling, one worker (libev's
    per-descriptor table costs 16 bytes per worker, README "Architecture"). Guards what keeps a
    session small: login state freed after login, rare state allocated on first use."""
    _nofile_at_least(2 * IDLE_CLIENTS + 200)
    px = pgmux(binary=release_binary, auth_type="md5", userlist="hashed", workers=1,
               pool_mode="transaction", max_client_conn=IDLE_CLIENTS + 50, log_level="warning")
    conns = []
    try:
        first = pgwire.connect(px.port, "md5user", "appdb", "md5-secret")
        conns.append(first)
        assert first.query("SELECT 1") == [["1"]]  # the pool and its welcome set exist
        time.sleep(0.2)
        baseline = px.rss_kib()
        for i in range(IDLE_CLIENTS):
            # five source addresses, as the bench does, so the ports of one pair suffice
            conns.append(pgwire.connect(px.port, "md5user", "appdb", "md5-secret",
                                        source=f"127.0.0.{2 + i % 5}"))
        time.sleep(0.3)
        per_client = (px.rss_kib() - baseline) / IDLE_CLIENTS
        print(f"RSS per idle client: {per_client:.3f} KiB")
        assert per_client < IDLE_LIMIT_KIB, f"{per_client:.3f} KiB per idle client"
        # they are live sessions, not just open sockets
        assert conns[-1].query("SELECT 'idle'") == [["idle"]]
    finally:
        for c in conns:
            c.close()


BURST_CLIENTS = 300
BURST_QUERY_BYTES = 12_000  # most of a 16 KiB pool buffer


def test_buffers_of_a_burst_go_back(pgmux, release_binary):
    """A burst lends many buffers at once: 300 sessions whose 12 KB queries wait for the one
    server connection each hold a buffer. Once they are served the buffers sit on the worker's
    free list; each second pgmux gives back half of those that stayed idle (buf_pool_trim, then
    malloc_trim), so the RSS returns to about what it was before the burst instead of keeping
    it for good. Fails with either step left out."""
    _nofile_at_least(2 * BURST_CLIENTS + 200)
    px = pgmux(binary=release_binary, auth_type="trust", workers=1, pool_mode="transaction",
               max_open_conns=1, max_client_conn=BURST_CLIENTS + 50, log_level="warning")
    holder = pgwire.connect(px.port, "app", "appdb", "app-secret")
    conns = []
    try:
        holder.query("BEGIN")
        holder.query("SELECT 1")  # holds the only server connection
        for _ in range(BURST_CLIENTS):
            conns.append(pgwire.connect(px.port, "app", "appdb", "app-secret"))
        time.sleep(0.5)
        baseline = px.rss_kib()
        literal = "x" * BURST_QUERY_BYTES
        for c in conns:
            c.send(pgwire.query_message(f"SELECT length('{literal}')"))
        time.sleep(1.0)
        lent = px.rss_kib() - baseline
        holder.query("COMMIT")
        for c in conns:  # every one is served, one after the other
            assert c.result() == [[str(BURST_QUERY_BYTES)]]
        after = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = px.rss_kib() - baseline
            if after < 1536:
                break
            time.sleep(0.25)
        print(f"RSS over the baseline: {lent} KiB while the queries waited, {after} KiB after")
        # The burst was real: about 300 buffers of which 12 KB was touched. Afterwards the 16
        # that a worker keeps spare (WORKER_BUFS_KEPT) and the allocator's slack remain.
        assert lent > 3072, f"only {lent} KiB while 300 queries waited"
        assert after < 1536, f"RSS stayed {after} KiB above the baseline after the burst"
        assert conns[0].query("SELECT 'after'") == [["after"]]
    finally:
        for c in conns:
            c.close()
        holder.close()
