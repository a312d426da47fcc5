/*
 * test_router_scan.c - the session-state lexer: keywords count only outside comments, strings,
 * quoted identifiers and dollar quotes, in every statement of a multi-statement string.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "router/scan.h"

static bool
tracked(const char *name, size_t len, void *arg)
{
    (void) arg;
    static const char *const names[] = { "application_name", "timezone", "search_path",
                                         "datestyle" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0) {
            return true;
        }
    }
    return false;
}

static uint32_t
flags(const char *sql)
{
    struct router_scan s;
    router_scan_sql(sql, strlen(sql), tracked, NULL, &s);
    return s.flags;
}

static void
test_plain_statements_pin_nothing(void **state)
{
    (void) state;
    assert_int_equal(flags("SELECT 1"), 0);
    assert_int_equal(flags("insert into t values (1)"), 0);
    assert_int_equal(flags("SELECT pg_advisory_xact_lock(1)"), 0);
    assert_int_equal(flags("SELECT 'LISTEN x; PREPARE p AS SELECT 1'"), 0);
    assert_int_equal(flags("SELECT $$ LISTEN x $$, $t$ DECLARE c CURSOR WITH HOLD $t$"), 0);
    assert_int_equal(flags("/* LISTEN x */ SELECT 1 -- ; LISTEN y"), 0);
    /* a line comment ends at a carriage return, as in PostgreSQL */
    assert_int_equal(flags("SELECT 1 -- x\r; LISTEN y"), ROUTER_F_LISTEN);
    assert_int_equal(flags("/* nested /* LISTEN */ still comment */ SELECT 1"), 0);
    assert_int_equal(flags("SELECT \"listen\" FROM t"), 0);
    assert_int_equal(flags("SELECT E'it\\'s; LISTEN x'"), 0);
    assert_int_equal(flags("SET LOCAL statement_timeout = 5"), 0);
    assert_int_equal(flags("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"), 0);
    assert_int_equal(flags("PREPARE TRANSACTION 'x'"), 0);
    assert_int_equal(flags(""), 0);
    assert_int_equal(flags(";;"), 0);
}

static void
test_pinning_statements(void **state)
{
    (void) state;
    assert_true(flags("LISTEN chan") & ROUTER_F_LISTEN);
    assert_true(flags("  listen chan") & ROUTER_F_PINS);
    assert_true(flags("PREPARE p AS SELECT 1") & ROUTER_F_PREPARE);
    assert_true(flags("DECLARE c CURSOR WITH HOLD FOR SELECT 1") & ROUTER_F_WITH_HOLD);
    assert_false(flags("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1") & ROUTER_F_WITH_HOLD);
    assert_true(flags("CREATE TEMP TABLE t (a int)") & ROUTER_F_TEMP);
    assert_true(flags("create global temporary table t (a int)") & ROUTER_F_TEMP);
    assert_true(flags("CREATE TABLE pg_temp.t (a int)") & ROUTER_F_TEMP);
    assert_true(flags("SELECT 1 INTO TEMP t") & ROUTER_F_TEMP);
    assert_true(flags("SELECT pg_advisory_lock(42)") & ROUTER_F_ADVISORY);
    assert_true(flags("select pg_try_advisory_lock_shared (1, 2)") & ROUTER_F_ADVISORY);
    assert_true(flags("SET statement_timeout = 5") & ROUTER_F_SET_SESSION);
    assert_true(flags("SET SESSION work_mem TO '4MB'") & ROUTER_F_SET_SESSION);
    assert_true(flags("SET ROLE other") & ROUTER_F_SET_SESSION);
    assert_true(flags("SET SESSION AUTHORIZATION other") & ROUTER_F_SET_SESSION);
    assert_true(flags("SELECT set_config('work_mem', '4MB', false)") & ROUTER_F_SET_SESSION);
    assert_true(flags("SET myapp.tenant = 'x'") & ROUTER_F_SET_SESSION);
    assert_true(flags("SELECT 1; LISTEN x") & ROUTER_F_LISTEN);
    /* the plain-query shortcut must still see suspects in any case, after any word */
    assert_true(flags("SELECT PG_ADVISORY_LOCK(42)") & ROUTER_F_ADVISORY);
    assert_true(flags("Select x, Pg_Try_Advisory_Lock(1) FROM t") & ROUTER_F_ADVISORY);
    assert_true(flags("SELECT 1 INTO TEMPORARY t") & ROUTER_F_TEMP);
    assert_true(flags("SELECT * INTO Pg_Temp.t FROM s") & ROUTER_F_TEMP);
    assert_true(flags("WITH a AS (SELECT 1) SELECT SET_CONFIG('work_mem', '1MB', false)") &
                ROUTER_F_SET_SESSION);
    /* words of a suspect's length that are not one, and suspects inside longer words */
    assert_int_equal(flags("SELECT tempo, pg_tempx, temporari, set_confix FROM t"), 0);
    assert_int_equal(flags("SELECT abalance FROM pgbench_accounts WHERE aid = 1;"), 0);
    assert_int_equal(flags("SELECT x\xc3\xa9temp FROM t"), 0);
    /* shorter than one 16-byte step after the first word */
    assert_true(flags("select pg_temp.f()") & ROUTER_F_TEMP);
    assert_true(flags("TABLE pg_temp.t") & ROUTER_F_TEMP);
    assert_int_equal(flags("SELECT tem"), 0);
    /* words start where the lexer's do */
    assert_true(flags("SELECT 1set_config('a.b', 'c', false)") & ROUTER_F_SET_SESSION);
    assert_int_equal(flags("begin$1"), 0);
}

static void
test_tracked_parameters(void **state)
{
    (void) state;
    assert_int_equal(flags("SET application_name = 'a'"), ROUTER_F_SET_TRACKED);
    assert_int_equal(flags("SET TIME ZONE 'UTC'"), ROUTER_F_SET_TRACKED);
    assert_int_equal(flags("set search_path to public"), ROUTER_F_SET_TRACKED);
    assert_int_equal(flags("SET \"DateStyle\" = 'ISO'"), ROUTER_F_SET_TRACKED);
    assert_int_equal(flags("RESET ALL"), ROUTER_F_SET_TRACKED);
    assert_int_equal(flags("RESET timezone"), ROUTER_F_SET_TRACKED);
    assert_int_equal(flags("RESET work_mem"), ROUTER_F_SET_SESSION);
}

static void
test_honoured_statements(void **state)
{
    (void) state;
    struct router_scan s;
    const char *q = "DEALLOCATE \"S_1\"";
    router_scan_sql(q, strlen(q), tracked, NULL, &s);
    assert_true(s.flags & ROUTER_F_DEALLOCATE);
    assert_string_equal(s.deallocate_name, "S_1");
    q = "deallocate prepare Stmt";
    router_scan_sql(q, strlen(q), tracked, NULL, &s);
    assert_string_equal(s.deallocate_name, "stmt");
    assert_true(flags("DEALLOCATE ALL") & ROUTER_F_DEALLOCATE_ALL);
    assert_true(flags("DISCARD ALL") & ROUTER_F_DISCARD_ALL);
    assert_false(flags("DISCARD PLANS") & ROUTER_F_DISCARD_ALL);
    assert_true(flags("BEGIN") & ROUTER_F_BEGIN);
    assert_int_equal(flags("BEGIN;"), ROUTER_F_BEGIN);
    assert_int_equal(flags("begin isolation level repeatable read"), ROUTER_F_BEGIN);
    assert_int_equal(flags("START TRANSACTION;"), ROUTER_F_BEGIN);
    assert_int_equal(flags("BEGIN; LISTEN x"), ROUTER_F_BEGIN | ROUTER_F_LISTEN);
    assert_int_equal(flags("beginning"), 0);
    assert_true(flags("start transaction read only") & ROUTER_F_BEGIN);
    assert_true(flags("SELECT 1; BEGIN; SELECT 2; COMMIT") & ROUTER_F_BEGIN);
    router_scan_sql("SELECT 1; SELECT 2;", 19, tracked, NULL, &s);
    assert_int_equal(s.n_statements, 2);
}

static void
test_unterminated_input_ends_the_scan(void **state)
{
    (void) state;
    assert_int_equal(flags("SELECT 'unterminated; LISTEN x"), 0);
    assert_int_equal(flags("SELECT $a$ unterminated; LISTEN x"), 0);
    assert_int_equal(flags("SELECT /* unterminated; LISTEN x"), 0);
    assert_int_equal(flags("SELECT \"unterminated; LISTEN x"), 0);
    /* Not a dollar quote: a parameter. */
    assert_true(flags("SELECT $1; LISTEN x") & ROUTER_F_LISTEN);
}

/* The plain-query shortcut looks 16 bytes at a time: a suspect at every offset, in every
 * case, across block boundaries and in the bytes after the last whole block. */
static void
test_suspects_at_every_offset(void **state)
{
    (void) state;
    char sql[256];
    for (int pad = 0; pad < 40; pad++) {
        snprintf(sql, sizeof(sql), "SELECT %*s, PG_ADVISORY_LOCK(1)", pad, "x");
        assert_true(flags(sql) & ROUTER_F_ADVISORY);
        snprintf(sql, sizeof(sql), "select %*s, set_config('a.b', 'c', false)", pad, "x");
        assert_true(flags(sql) & ROUTER_F_SET_SESSION);
        snprintf(sql, sizeof(sql), "SELECT %*s INTO tEmP t", pad, "x");
        assert_true(flags(sql) & ROUTER_F_TEMP);
        snprintf(sql, sizeof(sql), "SELECT %*s INTO temp t;", pad, "x");
        assert_true(flags(sql) & ROUTER_F_TEMP);
        snprintf(sql, sizeof(sql), "SELECT %*s FROM timestamps, views, info WHERE a = 'temp'", pad,
                 "x");
        assert_int_equal(flags(sql), 0);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_statements_pin_nothing),
        cmocka_unit_test(test_pinning_statements),
        cmocka_unit_test(test_tracked_parameters),
        cmocka_unit_test(test_honoured_statements),
        cmocka_unit_test(test_unterminated_input_ends_the_scan),
        cmocka_unit_test(test_suspects_at_every_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
