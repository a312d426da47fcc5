/*
 * test_router_classify.c - read/write classification (router/classify.h): the tricky statements
 * other routers get wrong, each with the answer PostgreSQL's grammar gives; the lexer's fast path
 * against the parser; transaction control; hints; the function lists; the cache.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>

#include "router/classify.h"

#define R ROUTER_CLASS_READ
#define W ROUTER_CLASS_WRITE

/* a learned VOLATILE function, in both forms the topology monitor publishes */
static const char *const volatile_fns[] = { "audit.touch", "touch" };
/* primary_functions = app.bump, bump (the loader adds the bare form) */
static const char *const primary_fns[] = { "app.bump", "bump" };

static const struct router_functions fns = {
    .primary = primary_fns,
    .n_primary = 2,
    .volatile_fns = volatile_fns,
    .n_volatile = 2,
    .primary_generation = 1,
    .volatile_generation = 1,
};

struct case_ {
    const char *sql;
    enum router_class cls;
};

/* Classify an exact-size heap copy with no NUL terminator: a read past the end is an ASan
 * report. */
static struct router_classification
classify_with(struct router_classifier *cl, const char *sql, const struct router_functions *f)
{
    size_t n = strlen(sql);
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, sql, n);
    struct router_classification out;
    memset(&out, 0x5a, sizeof(out));
    assert_int_equal(router_classify(cl, copy, n, f, &out), ST_OK);
    free(copy);
    return out;
}

static struct router_classification
classify(const char *sql)
{
    return classify_with(NULL, sql, &fns);
}

static void
check_cases(const struct case_ *cases, size_t n)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        struct router_classification c = classify(cases[i].sql);
        if (c.cls != cases[i].cls) {
            print_error("%s expected %s, got %s (%s)\n", cases[i].sql,
                        cases[i].cls == R ? "READ" : "WRITE", c.cls == R ? "READ" : "WRITE",
                        c.reason);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

static void
test_reads(void **state)
{
    (void) state;
    static const struct case_ cases[] = {
        { "SELECT 1", R },
        { "select * from t where id = $1", R },
        { "SELECT a, b FROM t WHERE id IN (1, 2, 3) ORDER BY a LIMIT 10", R },
        { "SELECT count(*) FROM t", R },
        { "SELECT now(), lower('X'), coalesce(a, 0) FROM t", R },
        { "SELECT pg_is_in_recovery()", R },
        { "TABLE t", R },
        { "VALUES (1, 'a'), (2, 'b')", R },
        { "SHOW search_path", R },
        { "SHOW ALL", R },
        { "WITH x AS (SELECT 1) SELECT * FROM x", R },
        { "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) "
          "SELECT * FROM r",
          R },
        { "EXPLAIN SELECT * FROM t", R },
        { "EXPLAIN INSERT INTO t VALUES (1)", R },
        { "EXPLAIN (COSTS off) UPDATE t SET a = 1", R },
        { "EXPLAIN (ANALYZE false) DELETE FROM t", R },
        { "EXPLAIN (ANALYZE off, BUFFERS) DELETE FROM t", R },
        { "EXPLAIN (ANALYZE fals) DELETE FROM t", R },
        { "EXPLAIN (ANALYZE 0) DELETE FROM t", R },
        { "EXPLAIN VERBOSE SELECT nextval('s')", R },
        { "EXPLAIN ANALYZE SELECT * FROM t", R },
        { "SELECT * FROM t1 JOIN t2 USING (id) WHERE EXISTS (SELECT 1 FROM t3)", R },
        { "SELECT 1 UNION SELECT 2 EXCEPT SELECT 3", R },
        { "SELECT * FROM (SELECT * FROM t) s", R },
        { "SELECT * FROM generate_series(1, 10)", R },
        { "select x::varchar(10) from t", R },
        { "SELECT 'nextval(1)' AS s", R },
        { "SELECT \"for\", \"into\" FROM t", R },
        { "SELECT nextval FROM t", R },
        { "SELECT t.nextval FROM t", R },
        { "SELECT * FROM t WHERE a = ANY($1)", R },
        { "SELECT CASE WHEN a THEN 1 ELSE 2 END FROM t", R },
        { "SELECT ARRAY(SELECT 1)", R },
        { "COPY t TO STDOUT", R },
        { "COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)", R },
    };
    check_cases(cases, ARRAY_LEN(cases));
}

static void
test_writes(void **state)
{
    (void) state;
    static const struct case_ cases[] = {
        { "INSERT INTO t VALUES (1)", W },
        { "insert into t select * from s", W },
        { "UPDATE t SET a = 1", W },
        { "DELETE FROM t", W },
        { "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", W },
        { "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", W },
        { "CREATE TABLE t (a int)", W },
        { "DROP TABLE t", W },
        { "ALTER TABLE t ADD COLUMN b int", W },
        { "TRUNCATE t", W },
        { "VACUUM t", W },
        { "ANALYZE t", W },
        { "SET search_path = a", W },
        { "RESET ALL", W },
        { "DO $$ BEGIN PERFORM 1; END $$", W },
        { "CALL p()", W },
        { "LOCK TABLE t", W },
        { "LISTEN ch", W },
        { "NOTIFY ch", W },
        { "PREPARE q AS SELECT 1", W },
        { "EXECUTE q", W },
        { "DECLARE c CURSOR FOR SELECT 1", W },
        { "GRANT SELECT ON t TO u", W },
        { "REFRESH MATERIALIZED VIEW v", W },
        { "CREATE TABLE t2 AS SELECT * FROM t", W },
        { "COPY t FROM STDIN", W },
        { "COPY t TO '/tmp/t.csv'", W },
        { "COPY t TO PROGRAM 'cat'", W },
        { "COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", W },
        { "COPY (SELECT nextval('s')) TO STDOUT", W },
        { "EXPLAIN ANALYZE INSERT INTO t VALUES (1)", W },
        { "EXPLAIN (ANALYZE, COSTS off) UPDATE t SET a = 1", W },
        { "EXPLAIN (ANALYZE true) DELETE FROM t", W },
        { "EXPLAIN (ANALYZE 1) DELETE FROM t", W },
        { "EXPLAIN (ANALYSE) DELETE FROM t", W },
        { "EXPLAIN ANALYSE VERBOSE DELETE FROM t", W },
        { "EXPLAIN (ANALYZE tru) DELETE FROM t", W },
        { "EXPLAIN (ANALYZE whatever) DELETE FROM t", W },
        { "EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", W },
        { "EXPLAIN ANALYZE SELECT nextval('s')", W },
        { "EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT 1", W },
        { "EXPLAIN EXECUTE q", W },
        { "SELECT 1 INTO t2", W },
        { "SELECT * INTO TEMP t2 FROM t", W },
        { "SELECT * INTO UNLOGGED t2 FROM t", W },
    };
    check_cases(cases, ARRAY_LEN(cases));
}

static void
test_data_modifying_ctes(void **state)
{
    (void) state;
    static const struct case_ cases[] = {
        { "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", W },
        { "WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x", W },
        { "WITH x AS (DELETE FROM t RETURNING *) SELECT count(*) FROM x", W },
        { "with a as (select 1), b as (delete from t returning id) select * from a, b", W },
        /* nested: a read CTE whose own WITH modifies data */
        { "WITH outer_cte AS (WITH inner_cte AS (INSERT INTO t VALUES (1) RETURNING id) "
          "SELECT id FROM inner_cte) SELECT * FROM outer_cte",
          W },
        { "SELECT * FROM (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) s", W },
        { "WITH /* insert */ x AS (SELECT 'delete from t') SELECT * FROM x", R },
    };
    check_cases(cases, ARRAY_LEN(cases));
}

static void
test_row_locks(void **state)
{
    (void) state;
    static const struct case_ cases[] = {
        { "SELECT * FROM t FOR UPDATE", W },
        { "SELECT * FROM t FOR NO KEY UPDATE", W },
        { "SELECT * FROM t FOR SHARE", W },
        { "SELECT * FROM t FOR KEY SHARE", W },
        { "select * from t for update skip locked", W },
        { "SELECT * FROM t FOR UPDATE OF t NOWAIT", W },
        { "SELECT * FROM t LIMIT 1 FOR NO KEY UPDATE", W },
        { "SELECT 1 UNION SELECT 2 FOR UPDATE", W },
        { "(SELECT * FROM t FOR SHARE) UNION ALL SELECT * FROM u", W },
        { "SELECT * FROM (SELECT * FROM t FOR UPDATE) s", W },
        { "SELECT * FROM t WHERE id IN (SELECT id FROM u FOR KEY SHARE)", W },
        { "WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", W },
        { "SELECT * FROM t\nFOR\n  UPDATE", W },
        /* the words, but not the clause */
        { "SELECT 'FOR UPDATE' FROM t", R },
        { "SELECT * FROM t -- FOR UPDATE", R },
        { "SELECT * FROM t /* FOR UPDATE */", R },
        { "SELECT * FROM \"for update\"", R },
        { "SELECT $$ FOR UPDATE $$", R },
        { "SELECT $lock$ FOR SHARE $lock$ FROM t", R },
    };
    check_cases(cases, ARRAY_LEN(cases));
}

static void
test_functions(void **state)
{
    (void) state;
    static const struct case_ cases[] = {
        { "SELECT nextval('s')", W },
        { "SELECT NEXTVAL('s')", W },
        { "SELECT NextVal('s')", W },
        { "SELECT pg_catalog.nextval('s')", W },
        { "SELECT PG_CATALOG.NEXTVAL('s')", W },
        { "SELECT \"nextval\"('s')", W },
        { "SELECT \"pg_catalog\".\"nextval\"('s')", W },
        { "SELECT \"NEXTVAL\"('s')", R }, /* a different function: quoted names keep case */
        { "SELECT currval('s'), lastval()", W },
        { "SELECT setval('s', 1)", W },
        { "SELECT pg_advisory_lock(1)", W },
        { "SELECT pg_advisory_xact_lock(1)", W },
        { "SELECT pg_try_advisory_lock_shared(1)", W },
        { "SELECT pg_try_advisory_xact_lock(1, 2)", W },
        { "SELECT pg_advisory_unlock_all()", W },
        { "SELECT pg_notify('ch', 'x')", W },
        { "SELECT txid_current()", W },
        { "SELECT txid_current_if_assigned()", W },
        { "SELECT pg_current_xact_id()", W },
        { "SELECT pg_current_wal_lsn()", W },
        { "SELECT lo_create(0)", W },
        { "SELECT a FROM t WHERE b = nextval('s')", W },
        { "SELECT * FROM t ORDER BY (SELECT nextval('s'))", W },
        { "SELECT coalesce(x, nextval('s')) FROM t", W },
        { "SELECT * FROM t, LATERAL (SELECT setval('s', t.a)) x", W },
        { "SELECT 1 UNION SELECT nextval('s')", W },
        { "SELECT touch(1)", W },       /* learned volatile */
        { "SELECT audit.touch(1)", W }, /* learned volatile, qualified */
        { "SELECT other.touch(1)", W }, /* bare form matches any schema */
        { "SELECT * FROM touch()", W }, /* set-returning, in FROM */
        { "SELECT bump()", W },         /* primary_functions */
        { "SELECT app.bump()", W },     /* primary_functions, qualified */
        { "SELECT \"Touch\"(1)", R },   /* another function */
        { "SELECT now(), random(), upper('nextval')", R },
        { "SELECT pg_catalog.now()", R },
        { "SELECT touched(1), nextvalue(1), my_nextval(1)", R },
        { "SELECT count(*) FILTER (WHERE a > 1) FROM t", R },
    };
    check_cases(cases, ARRAY_LEN(cases));
}

static void
test_lexing(void **state)
{
    (void) state;
    static const struct case_ cases[] = {
        { "/* DELETE FROM t */ SELECT 1", R },
        { "-- DELETE FROM t\nSELECT 1", R },
        /* PostgreSQL ends a line comment at a carriage return too */
        { "SELECT 1 -- x\r; DELETE FROM t", W },
        { "SELECT 1 -- x\r; START TRANSACTION; SELECT 1", W },
        { "SELECT 1 -- x\rFOR UPDATE", W },
        { "/* outer /* inner DELETE */ still comment; DELETE */ SELECT 1", R },
        { "/* outer /* inner */ SELECT 1 */ DELETE FROM t", W },
        { "SELECT 'it''s; DELETE FROM t'", R },
        { "SELECT E'it\\'s; DELETE FROM t'", R },
        { "SELECT E'\\\\', 'x' FOR UPDATE", W },
        { "SELECT e'\\'' || nextval('s')", W },
        { "SELECT $$; DELETE FROM t; $$", R },
        { "SELECT $a$ $$ ; DELETE FROM t; $$ $a$", R },
        { "SELECT $a$ x $a$; DELETE FROM t", W },
        { "SELECT \"a;b\" FROM \"DELETE\"", R },
        { "SELECT \"weird\"\"name\" FROM t", R },
        { "SELECT $1::int", R },
        { "SELECT 1;", R },
        { "SELECT 1;;  ;", R },
        { "  \n\tSELECT 1", R },
        { "select 1 from t where a = 'unterminated", W },
        { "SELECT \"unterminated FROM t", W },
        { "SELECT $$ unterminated", W },
        { "SELECT 1 /* unterminated comment", W },
        { "SELECT U&'d\\0061t\\+000061' FROM t", R },
    };
    check_cases(cases, ARRAY_LEN(cases));
}

static void
test_multi_statements(void **state)
{
    (void) state;
    static const struct case_ cases[] = {
        { "SELECT 1; SELECT 2", R },
        { "SELECT 1; DELETE FROM t", W },
        { "DELETE FROM t; SELECT 1", W },
        { "SELECT 1; SELECT nextval('s'); SELECT 3", W },
        { "SHOW x; TABLE t; VALUES (1)", R },
        { "SELECT 1; CREATE TABLE x (a int)", W },
        { "SELECT 1; SELECT 2 FOR UPDATE", W },
        { "SELECT 1; SELEC 2", W },
    };
    check_cases(cases, ARRAY_LEN(cases));
}

static void
test_unparsable_and_empty(void **state)
{
    (void) state;
    struct router_classification c = classify("SELEC 1");
    assert_int_equal(c.cls, W);
    assert_true(c.is_parse_error);
    c = classify("SELECT FROM WHERE (");
    assert_int_equal(c.cls, W);
    c = classify("INSERT INTO");
    assert_int_equal(c.cls, W);
    c = classify("\x01\x02garbage");
    assert_int_equal(c.cls, W);
    c = classify("");
    assert_int_equal(c.cls, R);
    assert_int_equal(c.n_statements, 0);
    c = classify("   ");
    assert_int_equal(c.n_statements, 0);
    c = classify("/* just a comment */");
    assert_int_equal(c.cls, R);
    assert_int_equal(c.n_statements, 0);
    c = classify("-- only a line comment");
    assert_int_equal(c.n_statements, 0);
    c = classify(";");
    assert_int_equal(c.n_statements, 0);

    /* a NUL inside: the server would stop there, the proxy cannot vouch for the rest */
    struct router_classification o;
    assert_int_equal(router_classify(NULL, "SELECT 1\0DELETE FROM t", 22, &fns, &o), ST_OK);
    assert_int_equal(o.cls, W);
    /* the wire's terminator is not part of the text */
    assert_int_equal(router_classify(NULL, "SELECT 1", 9, &fns, &o), ST_OK);
    assert_int_equal(o.cls, R);
}

static void
test_transaction_control(void **state)
{
    (void) state;
    struct router_classification c = classify("BEGIN");
    assert_int_equal(c.cls, W);
    assert_int_equal(c.txn, ROUTER_TXN_BEGIN);
    assert_int_equal(c.txn_end, ROUTER_TXN_END_OPEN);
    assert_false(c.is_begin_read_only);
    assert_int_equal(c.path, ROUTER_PATH_FAST);

    c = classify("START TRANSACTION");
    assert_int_equal(c.txn, ROUTER_TXN_BEGIN);
    assert_int_equal(c.cls, W);

    c = classify("BEGIN READ ONLY");
    assert_int_equal(c.cls, R);
    assert_true(c.is_begin_read_only);
    assert_int_equal(c.txn, ROUTER_TXN_BEGIN | ROUTER_TXN_READ_ONLY);

    c = classify("begin isolation level repeatable read read only");
    assert_int_equal(c.cls, R);
    assert_true(c.is_begin_read_only);

    c = classify("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE");
    assert_int_equal(c.cls, R);
    assert_true(c.is_begin_read_only);

    /* a hot standby refuses SERIALIZABLE, read only or not */
    c = classify("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE");
    assert_int_equal(c.cls, W);
    assert_false(c.is_begin_read_only);
    assert_int_equal(c.txn, ROUTER_TXN_BEGIN | ROUTER_TXN_READ_ONLY | ROUTER_TXN_SERIALIZABLE);
    c = classify("BEGIN READ ONLY; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; SELECT 1");
    assert_int_equal(c.cls, W);
    assert_false(c.is_begin_read_only);
    c = classify("BEGIN READ ONLY; SET transaction_isolation = 'serializable'; SELECT 1");
    assert_int_equal(c.cls, W);
    assert_false(c.is_begin_read_only);
    c = classify("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
    assert_int_equal(c.cls, W);
    assert_int_equal(c.txn, ROUTER_TXN_SERIALIZABLE);
    c = classify("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
    assert_int_equal(c.cls, R);
    assert_int_equal(c.txn, 0);

    c = classify("START TRANSACTION READ WRITE");
    assert_int_equal(c.cls, W);
    assert_false(c.is_begin_read_only);
    assert_int_equal(c.txn, ROUTER_TXN_BEGIN | ROUTER_TXN_READ_WRITE);

    c = classify("BEGIN ISOLATION LEVEL SERIALIZABLE");
    assert_int_equal(c.cls, W);
    assert_false(c.is_begin_read_only);

    /* READ ONLY in a comment or string is not an option */
    c = classify("BEGIN /* READ ONLY */");
    assert_int_equal(c.cls, W);
    assert_false(c.is_begin_read_only);

    c = classify("BEGIN; SET TRANSACTION READ ONLY; SELECT 1; COMMIT");
    assert_int_equal(c.cls, R);
    assert_true(c.is_begin_read_only);
    assert_int_equal(c.txn_end, ROUTER_TXN_END_CLOSED);
    assert_int_equal(c.n_statements, 4);

    c = classify("BEGIN; INSERT INTO t VALUES (1); COMMIT");
    assert_int_equal(c.cls, W);
    assert_int_equal(c.txn, ROUTER_TXN_BEGIN | ROUTER_TXN_COMMIT);

    c = classify("BEGIN READ ONLY; SELECT 1");
    assert_int_equal(c.txn_end, ROUTER_TXN_END_OPEN);
    assert_int_equal(c.cls, R);

    c = classify("SET TRANSACTION READ ONLY");
    assert_int_equal(c.cls, R);
    assert_int_equal(c.txn, ROUTER_TXN_READ_ONLY);
    c = classify("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE");
    assert_int_equal(c.txn, ROUTER_TXN_READ_WRITE | ROUTER_TXN_SERIALIZABLE);
    c = classify("SET transaction_read_only = on");
    assert_int_equal(c.txn, ROUTER_TXN_READ_ONLY);
    c = classify("SET transaction_read_only TO off");
    assert_int_equal(c.txn, ROUTER_TXN_READ_WRITE);

    c = classify("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY");
    assert_int_equal(c.txn, ROUTER_TXN_SESSION_RO);
    c = classify("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE");
    assert_int_equal(c.txn, ROUTER_TXN_SESSION_RW);
    c = classify("SET default_transaction_read_only = on");
    assert_int_equal(c.txn, ROUTER_TXN_SESSION_RO);
    c = classify("SET default_transaction_read_only = false");
    assert_int_equal(c.txn, ROUTER_TXN_SESSION_RW);
    c = classify("RESET default_transaction_read_only");
    assert_int_equal(c.txn, ROUTER_TXN_SESSION_RW);
    c = classify("RESET ALL");
    assert_int_equal(c.txn, ROUTER_TXN_SESSION_RW);
    c = classify("DISCARD ALL");
    assert_int_equal(c.txn, ROUTER_TXN_SESSION_RW);
    assert_int_equal(c.cls, W);
    c = classify("SET LOCAL default_transaction_read_only = on");
    assert_int_equal(c.txn, 0);
    /* PostgreSQL's boolean spellings, prefixes included; a bad value never means read only */
    c = classify("SET transaction_read_only = 'of'");
    assert_int_equal(c.txn, ROUTER_TXN_READ_WRITE);
    c = classify("SET transaction_read_only = 'ye'");
    assert_int_equal(c.txn, ROUTER_TXN_READ_ONLY);
    c = classify("SET transaction_read_only = 'maybe'");
    assert_int_equal(c.txn, ROUTER_TXN_READ_WRITE);
    c = classify("SET default_transaction_read_only = 1");
    assert_int_equal(c.txn, ROUTER_TXN_SESSION_RO);

    static const struct {
        const char *sql;
        uint32_t txn;
        enum router_txn_end end;
    } ends[] = {
        { "COMMIT", ROUTER_TXN_COMMIT, ROUTER_TXN_END_CLOSED },
        { "commit work", ROUTER_TXN_COMMIT, ROUTER_TXN_END_CLOSED },
        { "END", ROUTER_TXN_COMMIT, ROUTER_TXN_END_CLOSED },
        { "END TRANSACTION", ROUTER_TXN_COMMIT, ROUTER_TXN_END_CLOSED },
        { "ROLLBACK", ROUTER_TXN_ROLLBACK, ROUTER_TXN_END_CLOSED },
        { "ABORT", ROUTER_TXN_ROLLBACK, ROUTER_TXN_END_CLOSED },
        { "COMMIT AND CHAIN", ROUTER_TXN_COMMIT | ROUTER_TXN_CHAIN, ROUTER_TXN_END_OPEN },
        { "ROLLBACK AND CHAIN", ROUTER_TXN_ROLLBACK | ROUTER_TXN_CHAIN, ROUTER_TXN_END_OPEN },
        { "COMMIT AND NO CHAIN", ROUTER_TXN_COMMIT, ROUTER_TXN_END_CLOSED },
        { "PREPARE TRANSACTION 'gx'", ROUTER_TXN_PREPARE, ROUTER_TXN_END_CLOSED },
        { "COMMIT PREPARED 'gx'", ROUTER_TXN_PREPARED, ROUTER_TXN_END_UNCHANGED },
        { "ROLLBACK PREPARED 'gx'", ROUTER_TXN_PREPARED, ROUTER_TXN_END_UNCHANGED },
        { "SAVEPOINT a", ROUTER_TXN_SAVEPOINT, ROUTER_TXN_END_UNCHANGED },
        { "RELEASE SAVEPOINT a", ROUTER_TXN_SAVEPOINT, ROUTER_TXN_END_UNCHANGED },
        { "ROLLBACK TO SAVEPOINT a", ROUTER_TXN_SAVEPOINT, ROUTER_TXN_END_UNCHANGED },
        { "COMMIT; BEGIN", ROUTER_TXN_COMMIT | ROUTER_TXN_BEGIN, ROUTER_TXN_END_OPEN },
        { "BEGIN; COMMIT", ROUTER_TXN_COMMIT | ROUTER_TXN_BEGIN, ROUTER_TXN_END_CLOSED },
    };
    for (size_t i = 0; i < ARRAY_LEN(ends); i++) {
        c = classify(ends[i].sql);
        if (c.txn != ends[i].txn || c.txn_end != ends[i].end) {
            print_error("%s: txn %#x end %d\n", ends[i].sql, c.txn, c.txn_end);
        }
        assert_int_equal(c.txn, ends[i].txn);
        assert_int_equal(c.txn_end, ends[i].end);
    }
    /* ending statements need no particular node; two-phase ones need the primary */
    assert_int_equal(classify("COMMIT").cls, R);
    assert_int_equal(classify("ROLLBACK TO SAVEPOINT a").cls, R);
    assert_int_equal(classify("COMMIT PREPARED 'gx'").cls, W);
    assert_int_equal(classify("PREPARE TRANSACTION 'gx'").cls, W);
}

static void
test_hints(void **state)
{
    (void) state;
    struct router_classification c = classify("/* pgmux: replica */ SELECT nextval('s')");
    assert_int_equal(c.hint, ROUTER_HINT_REPLICA);
    assert_int_equal(c.cls, R);
    assert_int_equal(c.parsed_cls, W);

    c = classify("/* pgmux: primary */ SELECT 1");
    assert_int_equal(c.hint, ROUTER_HINT_PRIMARY);
    assert_int_equal(c.cls, W);
    assert_int_equal(c.parsed_cls, R);

    c = classify("/*pgmux:primary*/SELECT 1");
    assert_int_equal(c.hint, ROUTER_HINT_PRIMARY);
    c = classify("  /* PGMUX:  Replica */\nINSERT INTO t VALUES (1)");
    assert_int_equal(c.hint, ROUTER_HINT_REPLICA);
    assert_int_equal(c.cls, R);
    c = classify("-- app: orders\n/* pgmux: primary */ SELECT 1");
    assert_int_equal(c.hint, ROUTER_HINT_PRIMARY);

    /* only a leading comment counts, and only the exact form */
    c = classify("SELECT 1 /* pgmux: primary */");
    assert_int_equal(c.hint, ROUTER_HINT_NONE);
    assert_int_equal(c.cls, R);
    c = classify("SELECT '/* pgmux: replica */'; DELETE FROM t");
    assert_int_equal(c.hint, ROUTER_HINT_NONE);
    assert_int_equal(c.cls, W);
    c = classify("/* pgmux: replica please */ DELETE FROM t");
    assert_int_equal(c.hint, ROUTER_HINT_NONE);
    assert_int_equal(c.cls, W);
    c = classify("-- pgmux: replica\nDELETE FROM t");
    assert_int_equal(c.hint, ROUTER_HINT_NONE);
    c = classify("-- x\r/* pgmux: primary */ SELECT 1");
    assert_int_equal(c.hint, ROUTER_HINT_PRIMARY);
    c = classify("/* pgmux: replica");
    assert_int_equal(c.hint, ROUTER_HINT_NONE);
}

static void
test_fast_path_agrees_with_parser(void **state)
{
    (void) state;
    /* texts the lexer settles, and what the parser says about each */
    static const char *const fast[] = {
        "SELECT 1",
        "select a, b from t where id = $1 and c in (1, 2)",
        "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
        "INSERT INTO t VALUES (nextval('s'))",
        "UPDATE t SET a = a + 1 WHERE id = $1",
        "DELETE FROM t WHERE id = $1;",
        "BEGIN",
        "begin transaction",
        "COMMIT",
        "ROLLBACK WORK",
        "SELECT 'x' || \"col\" FROM \"t\"",
    };
    static const char *const slow[] = {
        "SELECT count(*) FROM t", "SELECT * FROM t FOR UPDATE",
        "SELECT 1 INTO x",        "WITH x AS (SELECT 1) SELECT 1",
        "SELECT 1; SELECT 2",     "BEGIN READ ONLY",
        "SELECT \"f\"(1)",        "SELECT 'unterminated",
        "COMMIT AND CHAIN",
    };
    for (size_t i = 0; i < ARRAY_LEN(fast); i++) {
        struct router_classification c = classify(fast[i]);
        if (c.path != ROUTER_PATH_FAST) {
            print_error("%s: not settled by the lexer\n", fast[i]);
        }
        assert_int_equal(c.path, ROUTER_PATH_FAST);
        /* a second statement that changes nothing sends the text to the parser, which must
         * agree with the lexer */
        char buf[256];
        snprintf(buf, sizeof(buf), "%s; SELECT 1", fast[i]);
        struct router_classification p = classify(buf);
        assert_int_equal(p.path, ROUTER_PATH_PARSER);
        assert_false(p.is_parse_error);
        if (p.cls != c.cls) {
            print_error("%s: lexer and parser disagree\n", fast[i]);
        }
        assert_int_equal(p.cls, c.cls);
    }
    for (size_t i = 0; i < ARRAY_LEN(slow); i++) {
        struct router_classification c = classify(slow[i]);
        if (c.path == ROUTER_PATH_FAST) {
            print_error("%s: settled by the lexer\n", slow[i]);
        }
        assert_int_not_equal(c.path, ROUTER_PATH_FAST);
    }
}

static void
test_function_lists(void **state)
{
    (void) state;
    /* without lists, only the built-in defaults */
    struct router_classification c = classify_with(NULL, "SELECT touch(1)", NULL);
    assert_int_equal(c.cls, R);
    c = classify_with(NULL, "SELECT nextval('s')", NULL);
    assert_int_equal(c.cls, W);
    assert_true(router_function_is_default_primary("nextval"));
    assert_true(router_function_is_default_primary("pg_catalog.setval"));
    assert_true(router_function_is_default_primary("pg_try_advisory_xact_lock_shared"));
    assert_false(router_function_is_default_primary("now"));
    /* every built-in name is found (the list must stay sorted for bsearch) */
    static const char *const defaults[] = {
        "currval",
        "lastval",
        "lo_creat",
        "lo_create",
        "lo_export",
        "lo_from_bytea",
        "lo_import",
        "lo_open",
        "lo_put",
        "lo_truncate",
        "lo_truncate64",
        "lo_unlink",
        "lowrite",
        "nextval",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_advisory_unlock",
        "pg_advisory_unlock_all",
        "pg_advisory_unlock_shared",
        "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared",
        "pg_create_restore_point",
        "pg_current_wal_flush_lsn",
        "pg_current_wal_insert_lsn",
        "pg_current_wal_lsn",
        "pg_current_xact_id",
        "pg_current_xact_id_if_assigned",
        "pg_logical_emit_message",
        "pg_notify",
        "pg_switch_wal",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
        "setval",
        "txid_current",
        "txid_current_if_assigned",
    };
    for (size_t i = 0; i < ARRAY_LEN(defaults); i++) {
        if (!router_function_is_default_primary(defaults[i])) {
            fail_msg("%s is not found among the defaults", defaults[i]);
        }
        char q[128];
        snprintf(q, sizeof(q), "SELECT %s(1)", defaults[i]);
        assert_int_equal(classify_with(NULL, q, NULL).cls, W);
    }

    /* a qualified-only entry matches that schema's calls */
    static const char *const only_q[] = { "billing.charge" };
    struct router_functions f = { .primary = only_q, .n_primary = 1 };
    assert_int_equal(classify_with(NULL, "SELECT billing.charge(1)", &f).cls, W);
    assert_int_equal(classify_with(NULL, "SELECT BILLING.CHARGE(1)", &f).cls, W);
    assert_int_equal(classify_with(NULL, "SELECT other.charge(1)", &f).cls, R);
}

static void
test_cache(void **state)
{
    (void) state;
    struct router_classifier *cl;
    assert_int_equal(router_classifier_create(8, &cl), ST_OK);
    const char *q = "SELECT count(*) FROM t WHERE touch(a)";
    struct router_classification c = classify_with(cl, q, &fns);
    assert_int_equal(c.path, ROUTER_PATH_PARSER);
    assert_int_equal(c.cls, W);
    c = classify_with(cl, q, &fns);
    assert_int_equal(c.path, ROUTER_PATH_CACHE);
    assert_int_equal(c.cls, W);
    assert_string_equal(c.reason, "calls a volatile function");

    /* the volatile list changed: a new generation, a new answer */
    struct router_functions f2 = fns;
    f2.n_volatile = 0;
    f2.volatile_generation = 2;
    c = classify_with(cl, q, &f2);
    assert_int_equal(c.path, ROUTER_PATH_PARSER);
    assert_int_equal(c.cls, R);
    c = classify_with(cl, q, &f2);
    assert_int_equal(c.path, ROUTER_PATH_CACHE);
    assert_int_equal(c.cls, R);

    /* a hint is read from the text each time, the cached class stays the statements' */
    c = classify_with(cl, "/* pgmux: replica */ SELECT nextval('s')", &fns);
    assert_int_equal(c.path, ROUTER_PATH_PARSER);
    c = classify_with(cl, "/* pgmux: replica */ SELECT nextval('s')", &fns);
    assert_int_equal(c.path, ROUTER_PATH_CACHE);
    assert_int_equal(c.cls, R);
    assert_int_equal(c.parsed_cls, W);

    /* bounded: many texts through a small cache, the most recent stays */
    char buf[64];
    for (int i = 0; i < 200; i++) {
        snprintf(buf, sizeof(buf), "SELECT count(*) FROM t%d", i);
        (void) classify_with(cl, buf, &fns);
        c = classify_with(cl, buf, &fns);
        assert_int_equal(c.path, ROUTER_PATH_CACHE);
    }
    snprintf(buf, sizeof(buf), "SELECT count(*) FROM t%d", 0);
    c = classify_with(cl, buf, &fns);
    assert_int_equal(c.path, ROUTER_PATH_PARSER);

    /* texts that differ only after the first bytes, or only in length */
    c = classify_with(cl, "SELECT count(*) FROM t WHERE a = 1", &fns);
    assert_int_equal(c.cls, R);
    c = classify_with(cl, "SELECT count(*) FROM t WHERE a = 1 FOR UPDATE", &fns);
    assert_int_equal(c.cls, W);
    assert_int_equal(c.path, ROUTER_PATH_PARSER);

    /* the fast path is never cached */
    c = classify_with(cl, "SELECT 1", &fns);
    assert_int_equal(c.path, ROUTER_PATH_FAST);
    struct router_classify_stats st;
    router_classifier_stats(cl, &st);
    assert_true(st.cache_hits >= 203);
    assert_true(st.fast >= 1);
    router_classifier_destroy(cl);
    router_classifier_destroy(NULL);
}

static void
test_long_text(void **state)
{
    (void) state;
    struct router_classifier *cl;
    assert_int_equal(router_classifier_create(ROUTER_CLASSIFY_CACHE_DEFAULT, &cl), ST_OK);
    /* longer than the on-stack copy: the scratch buffer grows */
    size_t n = 20000;
    char *big = malloc(n + 64);
    assert_non_null(big);
    strcpy(big, "SELECT count(*) FROM t WHERE a IN (");
    size_t len = strlen(big);
    while (len < n) {
        len += (size_t) sprintf(big + len, "%zu,", len);
    }
    strcpy(big + len, "0)");
    struct router_classification c = classify_with(cl, big, &fns);
    assert_int_equal(c.cls, R);
    assert_int_equal(c.path, ROUTER_PATH_PARSER);
    strcpy(big + len, "0) FOR UPDATE");
    c = classify_with(cl, big, &fns);
    assert_int_equal(c.cls, W);
    free(big);

    /* deep nesting: the walk does not recurse */
    char *deep = malloc(40000);
    assert_non_null(deep);
    strcpy(deep, "SELECT ");
    len = strlen(deep);
    for (int i = 0; i < 2000; i++) {
        len += (size_t) sprintf(deep + len, "a + ");
    }
    strcpy(deep + len, "nextval('s') FROM t");
    c = classify_with(cl, deep, &fns);
    assert_int_equal(c.cls, W);
    free(deep);
    router_classifier_destroy(cl);
}

static void *
small_stack_main(void *arg)
{
    int *ok = arg;
    struct router_classifier *cl;
    if (router_classifier_create(16, &cl) != ST_OK) {
        return NULL;
    }
    /* a left-deep chain the grammar does not limit: 300000 levels would overflow the stack in
     * libpg_query's tree output; it is not parsed, and goes to the primary */
    size_t n = 300000;
    char *s = malloc(n * 2 + 64);
    if (s == NULL) {
        router_classifier_destroy(cl);
        return NULL;
    }
    size_t len = (size_t) sprintf(s, "SELECT f(a");
    for (size_t i = 0; i < n; i++) {
        s[len++] = '+';
        s[len++] = 'a';
    }
    s[len++] = ')';
    struct router_classification c;
    if (router_classify(cl, s, len, NULL, &c) == ST_OK && c.cls == W && !c.is_parse_error &&
        strcmp(c.reason, "too complex to classify") == 0) {
        (*ok)++;
    }
    /* nested subqueries, the costliest construct per token, as deep as the grammar allows:
     * parsed (a read) or refused (a write) depending on the stack the thread really got (glibc
     * may hand it a larger cached one), but never a crash */
    len = (size_t) sprintf(s, "SELECT f(");
    for (int i = 0; i < 3000; i++) {
        len += (size_t) sprintf(s + len, "(SELECT ");
    }
    s[len++] = 'a';
    for (int i = 0; i < 3000; i++) {
        s[len++] = ')';
    }
    s[len++] = ')';
    if (router_classify(cl, s, len, NULL, &c) == ST_OK &&
        (c.cls == R || strcmp(c.reason, "too complex to classify") == 0)) {
        (*ok)++;
    }
    /* an ordinary query still fits */
    const char *q = "SELECT count(*) FROM t WHERE a + b + c > 1";
    if (router_classify(cl, q, strlen(q), NULL, &c) == ST_OK && c.cls == R &&
        c.path == ROUTER_PATH_PARSER) {
        (*ok)++;
    }
    free(s);
    router_classifier_destroy(cl);
    return NULL;
}

/* Whatever a client sends, parsing never overflows a worker's stack (here a small one). */
static void
test_stack_depth(void **state)
{
    (void) state;
    pthread_attr_t attr;
    pthread_t th;
    int ok = 0;
    assert_int_equal(pthread_attr_init(&attr), 0);
    /* 2 MiB: ThreadSanitizer keeps most of a megabyte of its own at the top of a stack */
    assert_int_equal(pthread_attr_setstacksize(&attr, 2048 * 1024), 0);
    assert_int_equal(pthread_create(&th, &attr, small_stack_main, &ok), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    pthread_attr_destroy(&attr);
    assert_int_equal(ok, 3);
}

static void *
thread_main(void *arg)
{
    int *ok = arg;
    struct router_classifier *cl;
    if (router_classifier_create(64, &cl) != ST_OK) {
        return NULL;
    }
    for (int i = 0; i < 200; i++) {
        char buf[80];
        snprintf(buf, sizeof(buf), "SELECT count(*) FROM t%d; SELECT nextval('s')", i % 50);
        struct router_classification c;
        if (router_classify(cl, buf, strlen(buf), &fns, &c) == ST_OK && c.cls == W) {
            (*ok)++;
        }
    }
    router_classifier_destroy(cl);
    return NULL;
}

/* One classifier per thread, as workers use them. Under ASan, LeakSanitizer checks that
 * libpg_query's per-thread memory is freed when each thread ends. */
static void
test_threads(void **state)
{
    (void) state;
    pthread_t th[4];
    int ok[4] = { 0 };
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &ok[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(ok[i], 200);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads),
        cmocka_unit_test(test_writes),
        cmocka_unit_test(test_data_modifying_ctes),
        cmocka_unit_test(test_row_locks),
        cmocka_unit_test(test_functions),
        cmocka_unit_test(test_lexing),
        cmocka_unit_test(test_multi_statements),
        cmocka_unit_test(test_unparsable_and_empty),
        cmocka_unit_test(test_transaction_control),
        cmocka_unit_test(test_hints),
        cmocka_unit_test(test_fast_path_agrees_with_parser),
        cmocka_unit_test(test_function_lists),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_long_text),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_stack_depth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
