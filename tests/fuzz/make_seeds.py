#!/usr/bin/python3
"""Write the hand-made seed inputs of tests/fuzz/corpus/<target>/ (run from the repository root).

Every seed is a small valid input in the layout its target's header comment describes, so the
fuzzers start from the paths real traffic takes. Rerun after changing a layout; the files are
committed, so the fuzzers never need this script.
"""
import base64
import hashlib
import hmac
import os
import struct

ROOT = "tests/fuzz/corpus"


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def cstr(s):
    return s.encode() + b"\0"


def msg(t, body):
    """A typed v3 message: type byte, length counting itself, body."""
    return t.encode() + struct.pack(">I", len(body) + 4) + body


def startup(params, version=196608):
    body = struct.pack(">I", version) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack(">I", len(body) + 4) + body


# ---- startup: the first packet, length word included --------------------------------------
put("startup", "v3_psql", startup([("user", "demo"), ("database", "demo"),
                                   ("application_name", "psql"), ("client_encoding", "UTF8")]))
put("startup", "v3_user_only", startup([("user", "alice")]))
put("startup", "v3_jdbc", startup([("user", "app"), ("database", "shop"),
                                   ("client_encoding", "UTF8"), ("DateStyle", "ISO"),
                                   ("TimeZone", "UTC"), ("extra_float_digits", "2"),
                                   ("search_path", "public")]))
put("startup", "v3_minor2", startup([("user", "demo"), ("_pq_.x", "1")], version=(3 << 16) | 2))
put("startup", "v3_options", startup([("user", "app"), ("database", "shop"),
                                      ("options", "-c search_path=a,\\ b --statement-timeout=5s"
                                                  " -cwork_mem=4MB -c")]))
put("startup", "ssl_request", struct.pack(">II", 8, 80877103))
put("startup", "gssenc_request", struct.pack(">II", 8, 80877104))
put("startup", "cancel_request", struct.pack(">IIII", 16, 80877102, 0x1234, 0xdeadbeef))

# ---- frontend: mode byte (even = stream), limit byte, then messages -----------------------
CLIENT_FIRST = b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"
CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=")
put("frontend", "password", b"\0\0" + msg("p", cstr("demo")))
put("frontend", "md5_password", b"\0\0" + msg("p", cstr("md5" + "0123456789abcdef" * 2)))
put("frontend", "sasl_initial", b"\0\0" + msg("p", cstr("SCRAM-SHA-256") +
                                              struct.pack(">i", len(CLIENT_FIRST)) + CLIENT_FIRST))
put("frontend", "sasl_initial_none", b"\0\0" + msg("p", cstr("SCRAM-SHA-256") +
                                                   struct.pack(">i", -1)))
put("frontend", "session", b"\0\1" + msg("p", cstr("SCRAM-SHA-256") +
                                         struct.pack(">i", len(CLIENT_FIRST)) + CLIENT_FIRST) +
    msg("p", CLIENT_FINAL) + msg("Q", cstr("select 1")) +
    msg("P", cstr("") + cstr("select $1") + struct.pack(">h", 0)) + msg("S", b"") +
    msg("X", b""))
# reader mode: odd byte, opcode count, opcodes, data (u32, cstr, u8, bytes(2), i32, end)
ops = bytes([2, 6, 0, 4 | (2 << 3), 3, 7])
put("frontend", "reader", b"\1" + bytes([len(ops)]) + ops +
    struct.pack(">I", 196608) + cstr("user") + b"R" + b"ab" + struct.pack(">i", -1))

# ---- backend: a stream of server messages --------------------------------------------------
R = lambda code, rest=b"": msg("R", struct.pack(">I", code) + rest)
SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
SERVER_FINAL = b"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg="
err = lambda t: msg(t, b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"x\"\0"
                       b"Dsome detail\0Fauth.c\0L335\0Rauth_failed\0\0")
put("backend", "auth_ok", R(0))
put("backend", "auth_cleartext", R(3))
put("backend", "auth_md5", R(5, b"\x01\x02\x03\x04"))
put("backend", "auth_sasl", R(10, cstr("SCRAM-SHA-256-PLUS") + cstr("SCRAM-SHA-256") + b"\0"))
put("backend", "auth_sasl_continue", R(11, SERVER_FIRST))
put("backend", "auth_sasl_final", R(12, SERVER_FINAL))
put("backend", "error", err("E"))
put("backend", "notice", err("N"))
put("backend", "parameter_status", msg("S", cstr("server_version") + cstr("15.5")))
put("backend", "backend_key", msg("K", struct.pack(">II", 4242, 0x5eed)))
put("backend", "ready_idle", msg("Z", b"I"))
put("backend", "login", R(10, cstr("SCRAM-SHA-256") + b"\0") + R(11, SERVER_FIRST) +
    R(12, SERVER_FINAL) + R(0) + msg("S", cstr("client_encoding") + cstr("UTF8")) +
    msg("S", cstr("DateStyle") + cstr("ISO, MDY")) + msg("K", struct.pack(">II", 1, 2)) +
    msg("Z", b"T") + msg("Z", b"E"))

# ---- scram: mode byte, then messages separated by '\n' -------------------------------------
NONCE = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
put("scram", "server_rfc7677", "S" + "n,,n=user,r=rOprNGfwEbeRWgbNEkqO\n"
    "c=biws,r=" + NONCE + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
put("scram", "server_pg", "S" + CLIENT_FIRST.decode() + "\n" + CLIENT_FINAL.decode())
put("scram", "server_y_flag", "S" + "y,,n=,r=rOprNGfwEbeRWgbNEkqO,x=ext\n"
    "c=eSws,r=" + NONCE + ",x=1,p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=")
# SCRAM-SHA-256-PLUS bound to the fuzzer's binding data (32 bytes of 0xab), a valid proof
_RFC_CLIENT_KEY = bytes.fromhex("a60fc923d67e8644a92d16b96eda5ef4656b0c725c484374be25535576996e8b")
_GS2 = b"p=tls-server-end-point,,"
_C_ATTR = "c=" + base64.b64encode(_GS2 + b"\xab" * 32).decode()
_AUTH = ("n=,r=rOprNGfwEbeRWgbNEkqO,r=" + NONCE + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
         + _C_ATTR + ",r=" + NONCE)
_SIG = hmac.new(hashlib.sha256(_RFC_CLIENT_KEY).digest(), _AUTH.encode(), hashlib.sha256).digest()
_PROOF = base64.b64encode(bytes(a ^ b for a, b in zip(_RFC_CLIENT_KEY, _SIG))).decode()
put("scram", "server_plus", "+" + _GS2.decode() + "n=,r=rOprNGfwEbeRWgbNEkqO\n"
    + _C_ATTR + ",r=" + NONCE + ",p=" + _PROOF)
put("scram", "server_plus_offered_y", "*" + "y,,n=,r=rOprNGfwEbeRWgbNEkqO\nc=eSws,r=" + NONCE)
put("scram", "client_keys", "C" + SERVER_FIRST.decode() + "\n" + SERVER_FINAL.decode())
put("scram", "client_password", "P" + SERVER_FIRST.decode() + "\n" + SERVER_FINAL.decode())
put("scram", "client_error", "C" + SERVER_FIRST.decode() + "\ne=invalid-proof")
put("scram", "secret", "S" + "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=")

# ---- config: proxy.ini, optionally "\n%%auth%%\n" and an auth file -------------------------
INI = """; pgmux configuration
[pgmux]
listen_addr = 127.0.0.1
listen_port = 6432
workers = 2
max_client_conn = 1000
auth_type = scram-sha-256
auth_file = users.txt
admin_users = demo, scram
stats_users = demo
server_reset_query = "DISCARD ALL"
client_idle_timeout = 0
idle_transaction_timeout = 1s
client_login_timeout = 60s
query_wait_timeout = 2m
server_connect_timeout = 1500ms
server_login_retry = 1s
log_level = info
max_message_size = 64MB

[pool]
pool_mode = session
max_open_conns = 4
max_idle_conns = 2
min_idle_conns = 1
conn_max_lifetime = 1h
conn_max_idle_time = 10m
warm_pools = demo@demo, scram@app

[node.primary]
host = 127.0.0.1
port = 15432
role = primary   ; pinned
weight = 1

[node.replica-1]
host = "replica.example"
port = 15433
role = auto
weight = 3
"""
put("config", "proxy_ini", INI)
put("config", "minimal", "[pgmux]\nauth_type = trust\n\n[node.a]\nhost = db\n")
put("config", "overrides", "\ufeff[pgmux]\r\nauth_type = md5\r\nauth_file = users.txt\r\n"
    "[pool]\r\npool_mode = session\r\n[database.shop]\r\npool_mode = session\r\n"
    "max_db_connections = 3\r\n[user.demo]\r\npool_mode = session\r\n"
    "max_user_connections = 2\r\n[node.n1]\r\nhost = ::1\r\nrole = replica\r\n")
put("config", "with_auth", "[pgmux]\nauth_file = auth.txt\n[node.x]\nhost = h\n"
    "\n%%auth%%\n"
    "; users\n\"demo\" \"demo\"\n\"u2\" \"md5" + "0123456789abcdef" * 2 + "\" extra\n"
    "\"s\" \"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\"\n"
    "\"a\"\"b\" \"\"\n")
put("config", "errors", "key = 1\n[pgmux]\nlisten_port = 99999\nworkers = x\nbogus = 1\n"
    "[pool]\nmax_idle_conns = 9\n[node.bad name]\n[node.y]\nport = 0\nrole = leader\n[other]\n")

# ---- hba: an hba_file, as is ---------------------------------------------------------------
put("hba", "rules", "# TYPE DATABASE USER ADDRESS METHOD\n"
    "host appdb pwuser 127.0.0.1/32 reject\n"
    "host appdb app,\tmd5user 127.0.0.1/32 scram-sha-256 # trailing\n"
    "host \"all\" all 10.1.0.0/16 md5\r\n"
    "hostssl sameuser all 0.0.0.0/0 password\n"
    "hostnossl replication all fd00::/8 trust\n"
    "local all all trust\n")
put("hba", "errors", "hostx all all all trust\nhost all +g all trust\nhost all all 10.0.0.1 md5\n"
    "host all all ::1/129 ident\nhost all all all md5 opt=1\nhost \"a\"\"b all all trust\n"
    "host a, all all trust,\n")

# ---- scan: tracking-mode byte ('\0' = fixed list), then SQL text ---------------------------
put("scan", "select", "\0select 1; select 'begin;' as \"listen\" -- prepare\n")
put("scan", "txn", "\0BEGIN; SET LOCAL TimeZone = 'UTC'; set search_path to a, b; COMMIT;")
put("scan", "pins", "\0LISTEN ch; PREPARE q AS select $1; DECLARE c CURSOR WITH HOLD FOR select 1; "
    "create temp table t (a int); select pg_advisory_lock(1); select set_config('x.y', '1', false);")
put("scan", "dealloc", "\0DEALLOCATE PREPARE \"Q1\"; DEALLOCATE ALL; DISCARD ALL; EXECUTE q(1); "
    "UNLISTEN *; RESET ALL; reset DateStyle; set session time zone local")
put("scan", "quoting", "\2select $tag$ ; listen x $tag$, E'it\\'s; listen', U&\"d\\0061t\", "
    "/* nested /* listen */ ; */ $1, 1.5e3::text; PREPARE TRANSACTION 'x'")

# ---- classify: option byte (bit 0: cache, bit 1: function lists), then SQL text -------------
put("classify", "plain", "\x01SELECT a, b FROM t WHERE id IN ($1, 2) ORDER BY a")
put("classify", "writes", "\x03INSERT INTO t VALUES (1); UPDATE t SET a = nextval('s')")
put("classify", "cte", "\x03WITH x AS (DELETE FROM t RETURNING *) SELECT touch(id) FROM x")
put("classify", "locks", "\x01SELECT * FROM (SELECT 1 UNION SELECT 2) s FOR NO KEY UPDATE SKIP LOCKED")
put("classify", "txn", "\x01BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY; SET TRANSACTION READ WRITE; "
    "COMMIT AND CHAIN; PREPARE TRANSACTION 'x'; SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
put("classify", "explain", "\x02EXPLAIN (ANALYZE off, COSTS) INSERT INTO t SELECT 1; "
    "EXPLAIN ANALYZE SELECT pg_catalog.NEXTVAL('s'); COPY (SELECT 1) TO STDOUT")
put("classify", "hint", "\x00/* pgmux: replica */ -- x\nSELECT E'\\'', $q$ ; $q$, \"a\"\"b\" INTO t2")
put("classify", "set", "\x00SET default_transaction_read_only = on; SET transaction_read_only TO off; "
    "RESET ALL; SHOW x; TABLE t; VALUES (1)")

# ---- admin: the admin console's query text ----------------------------------------------------
put("admin", "show", "SHOW POOLS; show stats;SHOW SERVERS ; SHOW CLIENTS;SHOW NODES; SHOW CONFIG;"
    "SHOW VERSION")
put("admin", "pause", "PAUSE; PAUSE appdb; RESUME \"App\"\"DB\"; KILL appdb; RESUME; RELOAD; SHUTDOWN")
put("admin", "set", "SET query_wait_timeout = '250ms'; set log_level TO debug; "
    "SET SESSION application_name = 'it''s'; SET max_open_conns=5")
put("admin", "comments", "/* c ; */ SHOW -- x;\n VERSION; BEGIN; START TRANSACTION WORK; COMMIT; "
    "ROLLBACK; ABORT; END;;")
put("admin", "refused", "SELECT 1; SHOW TABLES; KILL; SET x; SET y = 'open")
