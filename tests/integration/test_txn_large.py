"""Messages larger than a relay buffer (16 KiB) in transaction pooling, where pgmux must see
some of them whole: a named Parse of a 100 KB statement (stored and re-prepared on another
server connection), Binds carrying parameters of up to 5 MB (rewritten to the server name), and
a 100 KB simple query. Every byte must arrive: the server's md5 of each parameter is checked."""

import hashlib
import os

import pytest


@pytest.fixture
def txn(pgmux):
    return pgmux(pool_mode="transaction", max_open_conns=2)


def test_large_binds_and_parses(txn):
    px = txn
    conn = px.connect()
    conn.prepare_threshold = 0  # every statement a named server-side one
    for size in (10, 100_000, 1_000_000, 5_000_000):
        data = os.urandom(size)
        got = conn.execute("SELECT length(%s::bytea), md5(%s::bytea)", [data, data]).fetchone()
        assert got == (size, hashlib.md5(data).hexdigest()), size
    lit = "x" * 100_000
    # Hold one server connection elsewhere so the statement is re-prepared on the other one.
    other = px.connect()
    other.execute("BEGIN")
    other.execute("SELECT 1")
    for i in range(3):
        assert conn.execute("SELECT length('" + lit + "') + %s", [i]).fetchone()[0] == 100_000 + i
    other.execute("COMMIT")
    for i in range(3):
        assert conn.execute("SELECT length('" + lit + "') + %s", [i]).fetchone()[0] == 100_000 + i
    plain = px.connect()
    assert plain.execute("SELECT length('" + lit + "')").fetchone()[0] == 100_000
