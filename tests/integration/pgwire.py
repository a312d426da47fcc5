"""A small PostgreSQL v3 wire-protocol client over a raw socket, for the tests that need to see
or send exact bytes: which authentication request pgmux sends, SQLSTATEs of errors at login
(libpq-based drivers only expose the message text there), hostile input, and a slow reader
for the streaming test. Only what those tests need; psycopg covers everything else.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct
import time

PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

# Authentication request codes (the int32 after 'R').
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


class PgError(Exception):
    """An ErrorResponse from the server (or pgmux). fields maps the one-letter field codes
    ('S', 'C', 'M', ...) to their values."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('S', '?')} {fields.get('C', '?')}: {fields.get('M', '')}")

    @property
    def sqlstate(self):
        return self.fields.get("C")

    @property
    def message(self):
        return self.fields.get("M")


class ConnectionClosed(Exception):
    """The peer closed the connection (EOF) before a complete message arrived."""


# ---- message builders ------------------------------------------------------------------------


def startup_packet(params, version=PROTOCOL_3_0):
    """StartupMessage: int32 length, int32 version, (name NUL value NUL)*, NUL. params: a dict,
    or a list of (name, value) pairs (a name may repeat)."""
    body = struct.pack("!i", version)
    for k, v in (params.items() if isinstance(params, dict) else params):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def ssl_request():
    return struct.pack("!ii", 8, SSL_REQUEST_CODE)


def gssenc_request():
    return struct.pack("!ii", 8, GSSENC_REQUEST_CODE)


def cancel_request(pid, key):
    return struct.pack("!iiii", 16, CANCEL_REQUEST_CODE, pid, key)


def message(type_byte, payload=b""):
    """A typed frontend message: type byte, int32 length (counting itself), payload."""
    return type_byte + struct.pack("!i", len(payload) + 4) + payload


def query_message(sql):
    return message(b"Q", sql.encode() + b"\0")


def parse_error_fields(payload):
    """Fields of an ErrorResponse/NoticeResponse payload: code byte, NUL-terminated string."""
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def md5_secret(user, password):
    """The md5 form PostgreSQL stores (and PgBouncer's userlist accepts): md5 + md5(pw + user)."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


# ---- the connection -------------------------------------------------------------------------


class RawConn:
    """One client connection. Use connect() for a full login, or RawConn(port) + send() for
    hand-made bytes."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0, rcvbuf=None, source=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source:
            # Any 127.0.0.0/8 address is local on Linux: a second client address for tests.
            self.sock.bind((source, 0))
        if rcvbuf:
            # Before connect, so that the advertised window is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.auth_requests = []  # authentication codes received, in order
        self.parameters = {}  # ParameterStatus
        self.backend_key = None  # (pid, key) from BackendKeyData
        self.notices = []  # fields of NoticeResponses seen

    # -- raw I/O --

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n):
        """Read until self.buf holds at least n bytes; ConnectionClosed on EOF."""
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionClosed(f"EOF with {len(self.buf)} of {n} bytes buffered")
            self.buf += chunk

    def recv_byte(self):
        self._fill(1)
        b = bytes(self.buf[:1])
        del self.buf[:1]
        return b

    def recv_msg(self):
        """Next backend message as (type byte, payload bytes)."""
        self._fill(5)
        mtype = bytes(self.buf[:1])
        (length,) = struct.unpack("!i", self.buf[1:5])
        if length < 4:
            raise AssertionError(f"backend message {mtype!r} with bad length {length}")
        self._fill(1 + length)
        payload = bytes(self.buf[5 : 1 + length])
        del self.buf[: 1 + length]
        return mtype, payload

    def read_until_eof(self, timeout=5.0):
        """Everything the peer still sends until it closes the connection; raises
        socket.timeout if it stays open longer than timeout."""
        self.sock.settimeout(timeout)
        data = bytes(self.buf)
        self.buf.clear()
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise socket.timeout("connection still open")
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def terminate(self):
        """Send Terminate and close."""
        try:
            self.send(message(b"X"))
        except OSError:
            pass
        self.close()

    # -- login --

    def login(self, user, database, password=None, extra=None):
        """Send a StartupMessage and complete authentication (cleartext, md5, SCRAM-SHA-256)
        up to ReadyForQuery. Raises PgError on an ErrorResponse."""
        params = {"user": user, "database": database}
        if isinstance(extra, list):  # pairs, sent in order after user and database
            params = list(params.items()) + extra
        else:
            params.update(extra or {})
        self.send(startup_packet(params))
        scram = None
        while True:
            mtype, payload = self.recv_msg()
            if mtype == b"E":
                raise PgError(parse_error_fields(payload))
            if mtype == b"R":
                (code,) = struct.unpack("!i", payload[:4])
                self.auth_requests.append(code)
                if code == AUTH_OK:
                    continue
                if password is None:
                    raise AssertionError(f"server asked for authentication {code}, no password")
                if code == AUTH_CLEARTEXT:
                    self.send(message(b"p", password.encode() + b"\0"))
                elif code == AUTH_MD5:
                    salt = payload[4:8]
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    outer = "md5" + hashlib.md5(inner.encode() + salt).hexdigest()
                    self.send(message(b"p", outer.encode() + b"\0"))
                elif code == AUTH_SASL:
                    mechs = [m.decode() for m in payload[4:].split(b"\0") if m]
                    assert "SCRAM-SHA-256" in mechs, mechs
                    scram = _ScramClient(password)
                    first = scram.client_first()
                    self.send(
                        message(
                            b"p",
                            b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first,
                        )
                    )
                elif code == AUTH_SASL_CONTINUE:
                    self.send(message(b"p", scram.client_final(payload[4:])))
                elif code == AUTH_SASL_FINAL:
                    scram.verify_server_final(payload[4:])
                else:
                    raise AssertionError(f"unsupported authentication request {code}")
            elif mtype == b"S":
                name, value = payload.split(b"\0")[:2]
                self.parameters[name.decode()] = value.decode()
            elif mtype == b"K":
                self.backend_key = struct.unpack("!ii", payload)
            elif mtype == b"N":
                self.notices.append(parse_error_fields(payload))
            elif mtype == b"Z":
                return
            else:
                raise AssertionError(f"unexpected message {mtype!r} during login")

    # -- simple query --

    def query(self, sql):
        """Run sql with the simple query protocol. Returns the rows of the last result as
        lists of str (None for NULL); raises PgError after ReadyForQuery if one failed."""
        self.send(query_message(sql))
        return self.result()

    def result(self):
        """Read the answer to a query already sent, up to ReadyForQuery: the rows of its last
        result, or PgError if one failed (as query)."""
        rows, error = [], None
        while True:
            mtype, payload = self.recv_msg()
            if mtype == b"T":
                rows = []
            elif mtype == b"D":
                rows.append(_data_row(payload))
            elif mtype == b"E":
                error = PgError(parse_error_fields(payload))
            elif mtype == b"N":
                self.notices.append(parse_error_fields(payload))
            elif mtype == b"S":
                name, value = payload.split(b"\0")[:2]
                self.parameters[name.decode()] = value.decode()
            elif mtype == b"Z":
                if error:
                    raise error
                return rows


def connect(port, user, database, password=None, extra=None, timeout=10.0, rcvbuf=None,
            source=None):
    """A logged-in RawConn, or PgError from the login. source: local address to connect from."""
    conn = RawConn(port, timeout=timeout, rcvbuf=rcvbuf, source=source)
    try:
        conn.login(user, database, password, extra)
    except BaseException:
        conn.close()
        raise
    return conn


def login_error(port, user, database, password=None, timeout=10.0, source=None):
    """Attempt a login that must fail; returns the PgError. AssertionError if it succeeds."""
    try:
        conn = connect(port, user, database, password, timeout=timeout, source=source)
    except PgError as e:
        return e
    conn.terminate()
    raise AssertionError(f"login of {user!r} unexpectedly succeeded")


def _data_row(payload):
    (n,) = struct.unpack("!h", payload[:2])
    pos, out = 2, []
    for _ in range(n):
        (length,) = struct.unpack("!i", payload[pos : pos + 4])
        pos += 4
        if length < 0:
            out.append(None)
        else:
            out.append(payload[pos : pos + length].decode())
            pos += length
    return out


class _ScramClient:
    """SCRAM-SHA-256 client side (RFC 5802/7677) without channel binding, as libpq does it
    when TLS is off."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def client_first(self):
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(self.nonce), "server nonce does not extend ours"
        salt = base64.b64decode(attrs["s"])
        iterations = int(attrs["i"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.expected_server_signature = hmac.new(server_key, auth_message, "sha256").digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final):
        attrs = dict(kv.split("=", 1) for kv in server_final.decode().split(","))
        got = base64.b64decode(attrs["v"])
        assert hmac.compare_digest(got, self.expected_server_signature), "bad server signature"
