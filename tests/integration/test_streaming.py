"""Memory that stays flat: results stream with backpressure (1,000,000 rows, about 60 MB, to a
client that reads slowly must not grow pgmux's RSS by more than a few MiB), and an idle
logged-in client costs under half a KiB. Runs the optimized build (PGMUX_RELEASE_BIN): ASan's
allocator would blur the measurement."""

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


IDLE_CLIENTS = 2000
IDLE_LIMIT_KIB = 0.5  # README "Performance": the target per idle client


def test_idle_clients_cost_under_half_a_kib(pgmux, release_binary):
    """RSS growth per idle md5-authenticated client in transaction pooling, one worker (libev's
    per-descriptor table costs 16 bytes per worker, README "Architecture"). Guards what keeps a
    session small: login state freed after login, rare state allocated on first use."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * IDLE_CLIENTS + 200  # this process and pgmux, which inherits the limit
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need, "open-file limit too low"
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
