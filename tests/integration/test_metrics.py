"""The monitoring endpoint (/metrics, /healthz, /readyz) and logging: Prometheus text format
checked line by line by a strict validator, counters that move with real traffic, readiness
against a live and a dead primary and during a SIGTERM drain, syslog delivery to a unix datagram
socket the test owns, the slow-query log and the identity every event line carries."""

import math
import os
import re
import signal
import socket
import time

import psycopg
import pytest

from helpers import wait_for

# ---- a strict parser for the Prometheus text exposition format 0.0.4 -----------------------

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def _parse_labels(s, where):
    """'a="x",b="y\\"z"' -> dict; every escape must be one of \\\\, \\" and \\n."""
    labels = {}
    i = 0
    while i < len(s):
        m = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"").match(s, i)
        assert m, f"{where}: bad label syntax at {s[i:]!r}"
        name = m.group(1)
        assert not name.startswith("__"), f"{where}: reserved label name {name}"
        assert name not in labels, f"{where}: label {name} repeated"
        i = m.end()
        value = []
        while True:
            assert i < len(s), f"{where}: unterminated label value"
            ch = s[i]
            if ch == "\\":
                assert i + 1 < len(s) and s[i + 1] in '\\"n', f"{where}: bad escape {s[i:i+2]!r}"
                value.append({"\\": "\\", '"': '"', "n": "\n"}[s[i + 1]])
                i += 2
            elif ch == '"':
                i += 1
                break
            else:
                assert ch != "\n", f"{where}: raw newline in a label value"
                value.append(ch)
                i += 1
        labels[name] = "".join(value)
        if i < len(s):
            assert s[i] == ",", f"{where}: expected ',' between labels, got {s[i:]!r}"
            i += 1
            assert i < len(s), f"{where}: trailing comma in labels"
    return labels


def _parse_value(s, where):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", s), f"{where}: bad value {s!r}"
    return float(s)


def parse_exposition(text):
    """Validate text strictly and return {family: {"type": t, "help": h, "samples":
    [(name, labels, value)]}}. Raises AssertionError naming the line on any violation."""
    assert text.endswith("\n"), "exposition must end with a newline"
    families = {}
    current = None  # the family whose samples may follow
    finished = set()  # families whose sample block is over
    series = set()
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n} {line!r}"
        assert line, f"{where}: empty line"
        assert line == line.strip(), f"{where}: stray whitespace"
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (\S+) (.+)", line)
            assert m, f"{where}: only '# HELP name text' and '# TYPE name type' comments"
            kind, name, rest = m.groups()
            assert METRIC_NAME.match(name), f"{where}: bad metric name"
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            assert name not in finished and not fam["samples"], f"{where}: {kind} after samples"
            if kind == "HELP":
                assert fam["help"] is None, f"{where}: second HELP"
                assert fam["type"] is None, f"{where}: HELP must come before TYPE"
                assert re.fullmatch(r"([^\\\n]|\\\\|\\n)*", rest), f"{where}: bad HELP escape"
                fam["help"] = rest
            else:
                assert fam["type"] is None, f"{where}: second TYPE"
                assert rest in TYPES, f"{where}: unknown type {rest}"
                fam["type"] = rest
            if current and current != name:
                finished.add(current)
            current = name
            continue
        m = re.fullmatch(r"([^{} ]+)(\{(.*)\})? (\S+)( -?\d+)?", line)
        assert m, f"{where}: not 'name{{labels}} value [timestamp]'"
        name, _, labels_s, value_s, _ = m.groups()
        assert METRIC_NAME.match(name), f"{where}: bad metric name"
        labels = _parse_labels(labels_s or "", where)
        value = _parse_value(value_s, where)
        fam_name = name
        if current and families[current]["type"] == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                if name == current + suffix:
                    fam_name = current
        assert fam_name == current, f"{where}: sample outside its family block (or no TYPE)"
        fam = families[fam_name]
        assert fam["help"] is not None and fam["type"] is not None, f"{where}: HELP/TYPE missing"
        key = (name, tuple(sorted(labels.items())))
        assert key not in series, f"{where}: duplicate series"
        series.add(key)
        if fam["type"] == "counter":
            assert name.endswith("_total"), f"{where}: counter name must end in _total"
            assert value >= 0 and not math.isnan(value), f"{where}: negative counter"
        if fam["type"] == "histogram":
            assert name != current, f"{where}: a histogram has only _bucket, _sum, _count"
            if name.endswith("_bucket"):
                assert "le" in labels, f"{where}: bucket without le"
        else:
            assert "le" not in labels, f"{where}: le outside a histogram"
        fam["samples"].append((name, labels, value))
    for name, fam in families.items():
        assert fam["type"] is not None, f"{name}: no TYPE"
        if fam["type"] == "histogram":
            _check_histogram(name, fam["samples"])
    return families


def _check_histogram(name, samples):
    groups = {}
    for sname, labels, value in samples:
        base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if sname.endswith("_bucket"):
            g["buckets"].append((_parse_value(labels["le"], name), value))
        elif sname.endswith("_sum"):
            g["sum"] = value
        else:
            g["count"] = value
    for base, g in groups.items():
        where = f"{name}{dict(base)}"
        assert g["sum"] is not None and g["count"] is not None, f"{where}: _sum or _count missing"
        les = [le for le, _ in g["buckets"]]
        assert les == sorted(les) and len(set(les)) == len(les), f"{where}: le not increasing"
        assert les and les[-1] == math.inf, f"{where}: no +Inf bucket"
        counts = [c for _, c in g["buckets"]]
        assert counts == sorted(counts), f"{where}: bucket counts not cumulative"
        assert counts[-1] == g["count"], f"{where}: +Inf bucket != _count"
        assert g["sum"] >= 0, f"{where}: negative _sum"


def test_validator_rejects_what_it_must():
    """The validator is the test's teeth: each of these breaks one rule of the format."""
    good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n"
    parse_exposition(good)
    bad = [
        "# TYPE a_total counter\n# HELP a_total A.\na_total 1\n",  # HELP after TYPE
        "# HELP a A.\n# TYPE a counter\na 1\n",  # counter without _total
        "a_total 1\n",  # no TYPE
        '# HELP a A.\n# TYPE a gauge\na{x="\\q"} 1\n',  # bad escape
        '# HELP a A.\n# TYPE a gauge\na{x="1",x="2"} 1\n',  # repeated label
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",  # duplicate series
        "# HELP a A.\n# TYPE a gauge\na 1",  # no final newline
        "# HELP 1a A.\n# TYPE 1a gauge\n1a 1\n",  # bad name
        "# HELP h H.\n# TYPE h histogram\n"
        'h_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',  # not cumulative
        "# HELP h H.\n# TYPE h histogram\n"
        'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n',  # +Inf != count
        "# HELP h H.\n# TYPE h histogram\n" 'h_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',  # no +Inf
        "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\na 1\n",  # not contiguous
    ]
    for text in bad:
        with pytest.raises(AssertionError):
            parse_exposition(text)


# ---- HTTP helpers ----------------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, path="/metrics", method="GET", raw=None, timeout=10):
    """One request on a fresh connection; returns (status, headers dict, body str)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw if raw is not None else
                  f"{method} {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    if "content-length" in headers and method != "HEAD":
        assert len(body) == int(headers["content-length"]), "Content-Length mismatch"
    return status, headers, body.decode()


def scrape(port):
    status, headers, body = http(port)
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    return parse_exposition(body)


def value(fams, name, **labels):
    """The value of the one sample of `name` whose labels include `labels` (0 if absent)."""
    fam_name = re.sub(r"_(bucket|sum|count)$", "", name) if name not in fams else name
    hits = [v for n, l, v in fams.get(fam_name, {"samples": []})["samples"]
            if n == name and all(l.get(k) == v for k, v in labels.items())]
    assert len(hits) <= 1, f"{name}{labels} is ambiguous: {hits}"
    return hits[0] if hits else 0


POOL = {"database": "appdb", "user": "app", "node": "primary"}


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_scrape_is_valid_and_counters_move(pgmux, mode):
    mport = _free_port()
    px = pgmux(metrics_port=mport, pool_mode=mode)
    before = scrape(mport)  # valid with no pool at all
    assert value(before, "pgmux_workers_running") == 2
    with px.connect() as c:
        for i in range(5):
            c.execute("SELECT %s::int", [i]).fetchone()
        with c.transaction():
            c.execute("SELECT 1")
            c.execute("SELECT 2")
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM no_such_table_here")
        mid = scrape(mport)
        assert value(mid, "pgmux_pool_client_connections", state="active", **POOL) + value(
            mid, "pgmux_pool_client_connections", state="idle", **POOL) == 1
        assert value(mid, "pgmux_client_connections") == 1
    # The worker sees the client leave a moment after psycopg closes its socket.
    after = wait_for(lambda: (lambda f: f if value(f, "pgmux_client_connections") == 0 else None)(
        scrape(mport)), what="the client's departure in the gauges")

    xacts = value(after, "pgmux_pool_transactions_total", **POOL)
    assert xacts >= 8, xacts  # 5 autocommit + 1 explicit + 2 failed (each ends its transaction)
    assert value(after, "pgmux_pool_queries_total", **POOL) >= 9
    assert value(after, "pgmux_pool_client_bytes_received_total", **POOL) > 100
    assert value(after, "pgmux_pool_client_bytes_sent_total", **POOL) > 100
    errs = {(l["class"], l["source"]): v for n, l, v in
            after["pgmux_pool_errors_total"]["samples"] if l["database"] == "appdb"}
    assert errs.get(("22", "server")) == 1, errs
    assert errs.get(("42", "server")) == 1, errs
    lat = value(after, "pgmux_pool_query_duration_seconds_count", **POOL)
    assert lat >= 9, lat
    assert value(after, "pgmux_pool_query_duration_seconds_sum", **POOL) > 0
    waits = value(after, "pgmux_pool_wait_duration_seconds_count", **POOL)
    assert waits >= (1 if mode == "session" else 8), waits  # transaction pooling: one per xact
    assert value(after, "pgmux_logins_total", result="ok") == 1
    # one routing decision per session (session pooling) or per transaction (transaction
    # pooling; read_write_split is off in these tests, so every one picks the primary)
    routed = value(after, "pgmux_node_routed_total", node="primary", target="primary")
    assert routed == 1 if mode == "session" else routed >= 8, routed
    assert value(after, "pgmux_node_up", node="primary") == 1
    assert value(after, "pgmux_node_role", node="replica", role="replica") == 1
    assert value(after, "pgmux_node_is_write_target", node="primary") == 1
    assert value(after, "pgmux_pool_server_connections_open", **POOL) >= 1
    assert value(after, "pgmux_pool_server_connections", state="in_use", **POOL) == 0
    assert value(after, "pgmux_pool_client_connections", state="active", **POOL) == 0
    assert value(after, "pgmux_client_connections") == 0

    # More traffic moves every counter again; nothing goes backwards.
    with px.connect() as c:
        c.execute("SELECT 1").fetchone()
    again = scrape(mport)
    assert value(again, "pgmux_pool_transactions_total", **POOL) == xacts + 1
    assert value(again, "pgmux_pool_query_duration_seconds_count", **POOL) == lat + 1
    for fam in ("pgmux_pool_client_bytes_received_total", "pgmux_pool_client_bytes_sent_total"):
        assert value(again, fam, **POOL) > value(after, fam, **POOL)
    assert value(again, "pgmux_logins_total", result="ok") == 2


def test_counters_follow_the_routed_pool(pgmux):
    """With read/write splitting, reads run in the replica's pool and writes in the primary's:
    each pool's counters and gauges count what ran there."""
    mport = _free_port()
    px = pgmux(metrics_port=mport, pool_mode="transaction", read_write_split="on",
               read_your_writes="off")
    replica = dict(POOL, node="replica")
    with px.connect() as c:
        for _ in range(4):
            assert c.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT 1/0")
        c.execute("SELECT txid_current()")  # a write: primary-only function
        fams = wait_for(lambda: (lambda f: f if value(
            f, "pgmux_pool_client_connections", state="idle", **replica) + value(
            f, "pgmux_pool_client_connections", state="idle", **POOL) == 1 else None)(
            scrape(mport)), what="the idle client in one pool")
    assert value(fams, "pgmux_pool_transactions_total", **replica) == 5
    assert value(fams, "pgmux_pool_transactions_total", **POOL) == 1
    errs = {(l["node"], l["class"]): v for n, l, v in fams["pgmux_pool_errors_total"]["samples"]}
    assert errs == {("replica", "22"): 1}, errs
    assert value(fams, "pgmux_pool_query_duration_seconds_count", **replica) == 5
    assert value(fams, "pgmux_node_routed_total", node="replica", target="replica") == 5
    total_clients = sum(v for n, l, v in fams["pgmux_pool_client_connections"]["samples"])
    assert total_clients == 1


def test_wait_histogram_counts_a_real_wait(pgmux):
    """With one server connection, a second client waits for it: the wait shows up in the
    buckets above 100 ms."""
    mport = _free_port()
    px = pgmux(metrics_port=mport, pool_mode="transaction", max_open_conns=1)
    with px.connect() as a, px.connect() as b:
        a.execute("BEGIN")
        a.execute("SELECT 1")
        import threading

        t = threading.Thread(target=lambda: b.execute("SELECT 2").fetchone())
        t.start()
        wait_for(lambda: value(scrape(mport), "pgmux_pool_client_connections", state="waiting",
                               **POOL) == 1, what="a waiting client")
        time.sleep(0.3)
        a.execute("COMMIT")
        t.join(10)
    fams = scrape(mport)
    slow = [v for n, l, v in fams["pgmux_pool_wait_duration_seconds"]["samples"]
            if n.endswith("_bucket") and l["le"] == "0.25" and l["database"] == "appdb"]
    total = value(fams, "pgmux_pool_wait_duration_seconds_count", **POOL)
    assert total - slow[0] >= 1, (total, slow)  # at least one wait above 250 ms
    assert value(fams, "pgmux_pool_wait_duration_seconds_sum", **POOL) >= 0.3


def test_http_edges(pgmux):
    mport = _free_port()
    pgmux(metrics_port=mport)
    status, headers, body = http(mport, "/healthz")
    assert (status, body) == (200, "ok\n")
    assert headers["connection"] == "close"
    assert http(mport, "/nope")[0] == 404
    assert http(mport, "/metrics?x=1")[0] == 200
    status, headers, _ = http(mport, "/metrics", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, body = http(mport, "/metrics", method="HEAD")
    assert status == 200 and body == "" and int(headers["content-length"]) > 1000
    assert http(mport, raw=b"GARBAGE\r\n\r\n")[0] == 400
    assert http(mport, raw=b"GET /metrics HTTP/2.0\r\n\r\n")[0] == 505
    assert http(mport, raw=b"GET /healthz HTTP/1.0\n\n")[0] == 200  # bare LF is tolerated
    huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 8000 + b"\r\n\r\n"
    assert http(mport, raw=huge)[0] == 431
    # A peer that never finishes its request is cut off; the endpoint keeps serving meanwhile.
    with socket.create_connection(("127.0.0.1", mport)) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert http(mport, "/healthz")[0] == 200
        slow.settimeout(10)
        start = time.monotonic()
        assert slow.recv(100) == b""
        assert time.monotonic() - start < 8


def test_readyz_live_primary_then_drain(pgmux):
    mport = _free_port()
    px = pgmux(metrics_port=mport, shutdown_timeout="20s")
    status, _, body = http(mport, "/readyz")
    assert status == 200, body
    c = px.connect(autocommit=False)
    c.execute("SELECT 1")  # a transaction stays open: the drain waits for it
    px.proc.send_signal(signal.SIGTERM)
    try:
        status, _, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
            http(mport, "/readyz")), what="/readyz 503 while draining")
        assert "shutting down" in body
        assert http(mport, "/healthz")[0] == 200  # still alive
    finally:
        c.commit()
        c.close()
    px.proc.wait(15)
    px.exited_on_purpose = True


def test_readyz_dead_primary(pgmux, cluster):
    mport = _free_port()
    dead = _free_port()  # nothing listens there
    pgmux(metrics_port=mport, nodes={
        "primary": {"host": "127.0.0.1", "port": dead, "role": "primary"},
        "replica": {"host": "127.0.0.1", "port": cluster.replica_port, "role": "replica"},
    })
    status, _, body = http(mport, "/readyz")
    assert status == 503 and "primary" in body, body
    assert http(mport, "/healthz")[0] == 200


def test_metrics_port_off_by_default(pgmux):
    px = pgmux()
    assert "metrics endpoint" not in px.log_text()


def test_bad_metrics_keys_are_refused(tmp_path, cluster):
    import subprocess
    exe = os.environ.get("PGMUX_BIN") or "build/asan/pgmux"
    ini = tmp_path / "bad.ini"
    ini.write_text(
        "[pgmux]\nlisten_port = 6500\nauth_type = trust\nmetrics_port = 6500\n"
        "log_destination = journald\nsyslog_facility = kern\nsyslog_ident = a b\n"
        "log_min_duration = soon\nsyslog_socket = dev/log\n"
        f"[node.p]\nhost = 127.0.0.1\nport = {cluster.primary_port}\n")
    r = subprocess.run([exe, "--check", "-c", str(ini)], capture_output=True, text=True)
    assert r.returncode == 2
    for expect in (f"{ini}:4: metrics_port: 6500 is also listen_port",
                   f"{ini}:5: log_destination:", f"{ini}:6: syslog_facility:",
                   f"{ini}:7: syslog_ident:", f"{ini}:8: log_min_duration:",
                   f"{ini}:9: syslog_socket:"):
        assert expect in r.stderr, r.stderr


# ---- logging ---------------------------------------------------------------------------------


def _events(text, event):
    """key=value pairs of every line with event=<event>."""
    out = []
    for line in text.splitlines():
        if f"event={event} " not in line:
            continue
        body = line.split("event=", 1)[1]
        pairs = re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', "event=" + body)
        out.append({k: v for k, v in pairs})
    return out


def test_event_lines_carry_identity(pgmux):
    px = pgmux()
    with px.connect() as c:
        c.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(px.dsn(password="wrong"))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(px.dsn(user='eve" user=app', password="x"))
    # three sessions (and the fixture's own probe) end; the lines arrive through the logger thread
    log = wait_for(lambda: (lambda t: t if len(_events(t, "login_failed")) == 2 and len(
        [e for e in _events(t, "disconnect") if e["db"] != "-"]) == 3 else None)(px.log_text()),
        what="two login_failed and three disconnect lines")
    login = _events(log, "login")
    assert len(login) == 1
    l = login[0]
    assert l["db"] == "appdb" and l["user"] == "app" and l["node"] == "primary", l
    assert re.fullmatch(r"127\.0\.0\.1:\d+", l["addr"]) and re.fullmatch(r"\d+\.\d+", l["client"])
    connects = [e for e in _events(log, "connect") if e["client"] == l["client"]]
    assert connects and connects[0]["addr"] == l["addr"]
    bye = [e for e in _events(log, "disconnect") if e["client"] == l["client"]]
    assert len(bye) == 1 and bye[0]["user"] == "app" and bye[0]["db"] == "appdb"
    assert int(bye[0]["duration_ms"]) >= 0
    failed = _events(log, "login_failed")
    assert len(failed) == 2 and all(f["sqlstate"] == "28P01" for f in failed), failed
    # A client-chosen name is quoted and escaped: it cannot forge a key of its own.
    forged = [f for f in failed if "eve" in f["user"]]
    assert forged and forged[0]["user"] == '"eve\\" user=app"', forged
    assert "wrong" not in log and "app-secret" not in log


def test_slow_query_log(pgmux):
    px = pgmux(log_min_duration="150ms", pool_mode="transaction")
    with px.connect() as c:
        c.execute("SELECT 1")
        c.execute("SELECT pg_sleep(0.3)")
        # extended protocol: the text comes from the Parse; the parameter value never appears
        c.execute("SELECT pg_sleep(%s), %s::text", [0.2, "bind-value-not-for-logs"])
        c.execute("SELECT pg_sleep(0.2), 'my password is hunter2'")
    log = wait_for(lambda: px.log_text() if len(_events(px.log_text(), "slow_query")) >= 3
                   else None, what="three slow_query lines")
    slow = _events(log, "slow_query")
    assert len(slow) == 3, slow
    assert slow[0]["query"] == '"SELECT pg_sleep(0.3)"' and float(slow[0]["duration_ms"]) >= 300
    assert slow[0]["db"] == "appdb" and slow[0]["user"] == "app" and slow[0]["node"] == "primary"
    assert "pg_sleep($1)" in slow[1]["query"], slow[1]
    assert "bind-value-not-for-logs" not in log
    assert "hunter2" not in log and "hidden" in slow[2]["query"]
    assert "SELECT 1" not in log


def test_syslog(pgmux, tmp_path):
    path = str(tmp_path / "log.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(10)
    try:
        px = pgmux(log_destination="syslog", syslog_socket=path, syslog_ident="pgmux-test",
                   syslog_facility="local3")
        with px.connect() as c:
            c.execute("SELECT 1")
        got = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                "event=disconnect" in g and "user=app" in g for g in got):
            got.append(sink.recv(4096).decode())
    finally:
        sink.close()
    # RFC 3164 as glibc sends it: <PRI>Mmm dd hh:mm:ss ident[pid]: message; local3 = 19, info = 6
    pat = re.compile(r"<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d pgmux-test\[(\d+)\]: (.*)\Z")
    parsed = [pat.match(g) for g in got]
    assert all(parsed), got
    assert all(int(m.group(2)) == px.pid for m in parsed)
    login = [m for m in parsed if m.group(3).startswith("event=login ")]
    assert login and int(login[0].group(1)) == 19 * 8 + 6, got
    assert "user=app" in login[0].group(3) and "\n" not in login[0].group(3)
    # nothing of it went to stderr
    assert "event=login" not in px.log_text()


def test_shared_caps_in_metrics(pgmux):
    """What each database and user holds on each node over its pools, beside its cap
    (max_db_connections, max_user_connections; 0 = none), for alerting before a cap bites."""
    mport = _free_port()
    px = pgmux(metrics_port=mport, pool_mode="transaction", max_db_connections=3,
               read_write_split="off")
    held = []
    for _ in range(2):
        c = px.connect(autocommit=False)
        c.execute("SELECT 1").fetchone()
        held.append(c)
    fams = scrape(mport)
    db = {"database": "appdb", "node": "primary"}
    user = {"user": "app", "node": "primary"}
    assert value(fams, "pgmux_database_server_connections", **db) == 2
    assert value(fams, "pgmux_database_server_connections_max", **db) == 3
    assert value(fams, "pgmux_user_server_connections", **user) == 2
    assert value(fams, "pgmux_user_server_connections_max", **user) == 0
    for c in held:
        c.close()
