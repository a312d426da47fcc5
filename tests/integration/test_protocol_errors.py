"""Hostile and odd client input over raw sockets: garbage, truncated and oversized startup
packets, bad message lengths, SSLRequest/GSSENCRequest. pgmux answers 08P01 where it can
answer at all, drops the offender, and keeps serving everyone else."""

import os
import socket
import struct
import time

import pytest

import pgwire
from helpers import wait_for


@pytest.fixture
def px(pgmux):
    # A short login timeout, so that a client that stalls mid-startup is dropped quickly.
    return pgmux(client_login_timeout="2s")


@pytest.fixture
def bystander(px):
    """A logged-in client that must stay usable through every hostile connection."""
    c = pgwire.connect(px.port, "app", "appdb", "app-secret")
    yield c
    assert c.query("SELECT 'bystander ok'") == [["bystander ok"]]
    c.terminate()


def assert_serving(px, bystander):
    assert px.alive(), "pgmux died"
    assert bystander.query("SELECT 1") == [["1"]]
    fresh = pgwire.connect(px.port, "app", "appdb", "app-secret")
    assert fresh.query("SELECT 2") == [["2"]]
    fresh.terminate()


def errors_in(data):
    """Parse the bytes a refused client received: a list of ErrorResponse field dicts. Any
    other message type fails the test."""
    out, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 5, f"truncated message in {data!r}"
        mtype = data[pos : pos + 1]
        (length,) = struct.unpack("!i", data[pos + 1 : pos + 5])
        assert mtype == b"E", f"expected ErrorResponse, got {mtype!r} in {data!r}"
        out.append(pgwire.parse_error_fields(data[pos + 5 : pos + 1 + length]))
        pos += 1 + length
    return out


def refused_with(px, payload, sqlstates=("08P01",)):
    """Send payload on a fresh connection; pgmux must answer one ErrorResponse with one of
    sqlstates and close."""
    c = pgwire.RawConn(px.port)
    try:
        c.send(payload)
        data = c.read_until_eof(timeout=5)
    finally:
        c.close()
    errs = errors_in(data)
    assert len(errs) == 1, f"expected one ErrorResponse, got {data!r}"
    assert errs[0].get("C") in sqlstates, errs[0]
    return errs[0]


def test_garbage_startup(px, bystander):
    """An HTTP request instead of a startup packet (its first 4 bytes read as a huge length)."""
    refused_with(px, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_serving(px, bystander)


def test_oversized_startup_length(px, bystander):
    refused_with(px, struct.pack("!ii", 0x7FFFFFFF, pgwire.PROTOCOL_3_0))
    refused_with(px, struct.pack("!ii", 1_000_000, pgwire.PROTOCOL_3_0) + b"user\0app\0")
    assert_serving(px, bystander)


def test_startup_length_too_small(px, bystander):
    for length in (0, 4, 7, -1):
        refused_with(px, struct.pack("!ii", length, pgwire.PROTOCOL_3_0))
    assert_serving(px, bystander)


def test_unsupported_protocol_version(px, bystander):
    """Protocol 2.0 and nonsense versions: refused (PostgreSQL says 0A000 for these)."""
    for version in (0x00020000, 0x12345678):
        refused_with(px, pgwire.startup_packet({"user": "app", "database": "appdb"}, version),
                     sqlstates=("08P01", "0A000"))
    assert_serving(px, bystander)


def test_malformed_startup_parameters(px, bystander):
    """Parameters without their terminators, and a startup packet without a user."""
    body = struct.pack("!i", pgwire.PROTOCOL_3_0) + b"user\0app"  # no NULs at the end
    refused_with(px, struct.pack("!i", len(body) + 4) + body)
    body = struct.pack("!i", pgwire.PROTOCOL_3_0) + b"database\0appdb\0\0"
    refused_with(px, struct.pack("!i", len(body) + 4) + body, sqlstates=("08P01", "28000"))
    assert_serving(px, bystander)


def test_truncated_startup_then_close(px, bystander):
    """Half a startup packet and a closed socket: nothing to answer, nothing may break."""
    pkt = pgwire.startup_packet({"user": "app", "database": "appdb"})
    for cut in (1, 3, 4, 6, len(pkt) - 1):
        c = pgwire.RawConn(px.port)
        c.send(pkt[:cut])
        c.close()
    time.sleep(0.2)
    assert_serving(px, bystander)


def test_truncated_startup_stalls_until_login_timeout(px, bystander):
    """A client that sends part of its startup packet and stalls does not block anyone and is
    dropped after client_login_timeout."""
    pkt = pgwire.startup_packet({"user": "app", "database": "appdb"})
    c = pgwire.RawConn(px.port)
    c.send(pkt[:10])
    assert_serving(px, bystander)  # served while the stalled one hangs
    t0 = time.monotonic()
    data = c.read_until_eof(timeout=8)
    c.close()
    assert time.monotonic() - t0 < 6
    errors_in(data)  # nothing, or an ErrorResponse


def test_ssl_request_answered_n(px, bystander):
    """SSLRequest and GSSENCRequest get 'N'; the client then logs in on the same socket."""
    for request in (pgwire.ssl_request(), pgwire.gssenc_request()):
        c = pgwire.RawConn(px.port)
        c.send(request)
        assert c.recv_byte() == b"N"
        c.login("app", "appdb", "app-secret")
        assert c.query("SELECT 'plain'") == [["plain"]]
        c.terminate()
    # Both in a row, as a client trying GSS then TLS does.
    c = pgwire.RawConn(px.port)
    c.send(pgwire.gssenc_request())
    assert c.recv_byte() == b"N"
    c.send(pgwire.ssl_request())
    assert c.recv_byte() == b"N"
    c.login("app", "appdb", "app-secret")
    c.terminate()
    assert_serving(px, bystander)


def test_bad_message_length_after_login(px, bystander):
    """A logged-in client sending a message whose length is < 4 or absurdly large gets 08P01
    and is disconnected."""
    for mtype, length in ((b"Q", 3), (b"Q", -5), (b"Q", 0x7FFFFFF0), (b"P", 2)):
        c = pgwire.connect(px.port, "app", "appdb", "app-secret")
        c.send(mtype + struct.pack("!i", length) + b"SELECT 1\0")
        data = c.read_until_eof(timeout=5)
        c.close()
        errs = errors_in(data)
        assert errs and errs[-1]["C"] == "08P01", (mtype, length, data)
    assert_serving(px, bystander)


def test_unknown_message_type_after_login(px, bystander):
    c = pgwire.connect(px.port, "app", "appdb", "app-secret")
    c.send(pgwire.message(b"\x01", b"junk"))
    try:
        data = c.read_until_eof(timeout=5)
    finally:
        c.close()
    errs = errors_in(data)
    assert errs and errs[-1]["C"] == "08P01", data
    assert_serving(px, bystander)


def test_random_garbage_storm(px, bystander):
    """Many connections sending random bytes, some closing early: pgmux survives and serves."""
    rnd = os.urandom(64 * 200)
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", px.port), timeout=5)
        try:
            s.sendall(rnd[i * 64 : i * 64 + (i % 64) + 1])
        except OSError:
            pass
        s.close()
    wait_for(px.alive, timeout=1, what="pgmux alive")
    assert_serving(px, bystander)


@pytest.mark.parametrize("body", [
    (b"P", b"stmt\0SELECT 1"),            # Parse: query not NUL-terminated
    (b"P", b"stmt"),                      # Parse: name not terminated, no query
    (b"B", b"portal\0"),                  # Bind: statement name missing
    (b"B", b"\0stm"),                     # Bind: statement name not terminated
    (b"D", b""),                          # Describe: no kind byte
    (b"D", b"Sstmt"),                     # Describe: name not terminated
    (b"C", b"S"),                         # Close: name missing
    (b"Q", b"SELECT 1"),                  # Query: not NUL-terminated
    (b"Q", b""),                          # Query: empty body
])
def test_malformed_extended_messages_in_transaction_mode(pgmux, body):
    """In transaction pooling pgmux parses Parse, Bind, Describe, Close and Query itself (to
    rename statements and follow session state); a malformed one gets 08P01 and the client is
    disconnected, while a bystander keeps working."""
    px = pgmux(pool_mode="transaction", max_open_conns=2)
    bystander = pgwire.connect(px.port, "app", "appdb", "app-secret")
    c = pgwire.connect(px.port, "app", "appdb", "app-secret")
    # A named statement the malformed messages may refer to.
    c.send(pgwire.message(b"P", b"stmt\0SELECT 1\0\0\0") + pgwire.message(b"S"))
    while c.recv_msg()[0] != b"Z":
        pass
    mtype, payload = body
    c.send(pgwire.message(mtype, payload) + pgwire.message(b"S"))
    data = c.read_until_eof(timeout=5)
    c.close()
    errs = errors_in(data)
    assert errs and errs[-1]["C"] == "08P01", (body, data)
    assert_serving(px, bystander)
    bystander.terminate()
