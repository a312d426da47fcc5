/*
 * test_proxy_admin_cmd.c - the admin console's command language: every command, case and
 * comments, identifier folding and quoting, SET values, refusals with SQLSTATE 42601, statement
 * splitting outside quotes and comments, texts that are not NUL-terminated.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/sqlstate.h"
#include "proxy/admin_cmd.h"

/* Parse s from an exact-size heap copy (no NUL), so ASan sees any read past the end. */
static int
parse(const char *s, struct admin_cmd *cmd, struct admin_parse_err *e)
{
    size_t n = strlen(s);
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    int r = admin_cmd_parse(copy, copy + n, cmd, e);
    free(copy);
    return r;
}

static enum admin_kind
kind_of(const char *s)
{
    struct admin_cmd cmd;
    struct admin_parse_err e;
    if (parse(s, &cmd, &e) != 0) {
        fail_msg("%s: refused: %s", s, e.message);
    }
    return cmd.kind;
}

static void
expect_refused(const char *s, const char *message_part)
{
    struct admin_cmd cmd;
    struct admin_parse_err e;
    if (parse(s, &cmd, &e) == 0) {
        fail_msg("%s: accepted", s);
    }
    assert_string_equal(e.sqlstate, SQLSTATE_SYNTAX_ERROR);
    if (!strstr(e.message, message_part)) {
        fail_msg("%s: message \"%s\" lacks \"%s\"", s, e.message, message_part);
    }
}

static void
test_commands(void **state)
{
    (void) state;
    assert_int_equal(kind_of("SHOW POOLS"), AK_SHOW_POOLS);
    assert_int_equal(kind_of("show stats;"), AK_SHOW_STATS);
    assert_int_equal(kind_of("  Show Servers ;; "), AK_SHOW_SERVERS);
    assert_int_equal(kind_of("SHOW CLIENTS"), AK_SHOW_CLIENTS);
    assert_int_equal(kind_of("SHOW NODES"), AK_SHOW_NODES);
    assert_int_equal(kind_of("/* c */ SHOW CONFIG -- trailing"), AK_SHOW_CONFIG);
    assert_int_equal(kind_of("SHOW\n\tVERSION"), AK_SHOW_VERSION);
    assert_int_equal(kind_of("RELOAD"), AK_RELOAD);
    assert_int_equal(kind_of("SHUTDOWN;"), AK_SHUTDOWN);
    assert_int_equal(kind_of("BEGIN"), AK_BEGIN);
    assert_int_equal(kind_of("START TRANSACTION"), AK_BEGIN);
    assert_int_equal(kind_of("COMMIT WORK"), AK_COMMIT);
    assert_int_equal(kind_of("end"), AK_COMMIT);
    assert_int_equal(kind_of("ROLLBACK"), AK_ROLLBACK);
    assert_int_equal(kind_of("abort transaction"), AK_ROLLBACK);
    assert_int_equal(kind_of(""), AK_EMPTY);
    assert_int_equal(kind_of(" ;; -- nothing\n/* at all */"), AK_EMPTY);
    assert_true(admin_cmd_is_read_only(AK_SHOW_POOLS));
    assert_true(admin_cmd_is_read_only(AK_BEGIN));
    assert_false(admin_cmd_is_read_only(AK_PAUSE));
    assert_false(admin_cmd_is_read_only(AK_SET));
    assert_false(admin_cmd_is_read_only(AK_SHUTDOWN));
}

static void
test_arguments(void **state)
{
    (void) state;
    struct admin_cmd cmd;
    struct admin_parse_err e;
    assert_int_equal(parse("PAUSE", &cmd, &e), 0);
    assert_int_equal(cmd.kind, AK_PAUSE);
    assert_false(cmd.has_arg);
    assert_int_equal(parse("pause AppDB;", &cmd, &e), 0);
    assert_true(cmd.has_arg);
    assert_string_equal(cmd.arg, "appdb"); /* folded, as PostgreSQL folds names */
    assert_int_equal(parse("RESUME \"AppDB\"", &cmd, &e), 0);
    assert_int_equal(cmd.kind, AK_RESUME);
    assert_string_equal(cmd.arg, "AppDB");
    assert_int_equal(parse("KILL \"we\"\"ird db\"", &cmd, &e), 0);
    assert_int_equal(cmd.kind, AK_KILL);
    assert_string_equal(cmd.arg, "we\"ird db");

    assert_int_equal(parse("SET query_wait_timeout = 30s", &cmd, &e), 0);
    assert_int_equal(cmd.kind, AK_SET);
    assert_string_equal(cmd.arg, "query_wait_timeout");
    assert_string_equal(cmd.value, "30s");
    assert_int_equal(parse("set Log_Level TO 'debug';", &cmd, &e), 0);
    assert_string_equal(cmd.arg, "log_level");
    assert_string_equal(cmd.value, "debug");
    assert_int_equal(parse("SET SESSION application_name='it''s'", &cmd, &e), 0);
    assert_string_equal(cmd.arg, "application_name");
    assert_string_equal(cmd.value, "it's");
    assert_int_equal(parse("SET x = ''", &cmd, &e), 0);
    assert_string_equal(cmd.value, "");
    assert_int_equal(parse("SET extra_float_digits = -3", &cmd, &e), 0);
    assert_string_equal(cmd.value, "-3");

    /* A name of exactly ADMIN_ARG_MAX - 1 bytes fits; one more does not. */
    char name[ADMIN_ARG_MAX + 16];
    memset(name, 'd', sizeof(name));
    memcpy(name, "KILL ", 5);
    name[5 + ADMIN_ARG_MAX - 1] = '\0';
    assert_int_equal(parse(name, &cmd, &e), 0);
    assert_int_equal(strlen(cmd.arg), ADMIN_ARG_MAX - 1);
    memset(name, 'd', sizeof(name));
    memcpy(name, "KILL ", 5);
    name[5 + ADMIN_ARG_MAX] = '\0';
    assert_int_equal(parse(name, &cmd, &e), -1);
}

static void
test_refusals(void **state)
{
    (void) state;
    expect_refused("SELECT 1", "unrecognized admin console command \"SELECT\"");
    expect_refused("SHOW", "SHOW needs what to show");
    expect_refused("SHOW TABLES", "unknown SHOW command \"tables\"");
    expect_refused("SHOW POOLS extra", "syntax error at or near \"extra\"");
    expect_refused("SHOW POOLS; SHOW STATS", "syntax error at or near \"SHOW\"");
    expect_refused("KILL", "KILL needs the database");
    expect_refused("PAUSE 'db'", "expected a database name");
    expect_refused("PAUSE a b", "syntax error");
    expect_refused("RESUME \"unterminated", "expected a database name");
    expect_refused("SET", "SET needs a key");
    expect_refused("SET key", "expected = or TO");
    expect_refused("SET key =", "needs a value");
    expect_refused("SET key = 'open", "needs a value");
    expect_refused("SET key = a b", "syntax error");
    expect_refused("PAUSED", "unrecognized admin console command");
    expect_refused("SHOWPOOLS", "unrecognized");
    struct admin_cmd cmd;
    struct admin_parse_err e;
    assert_int_equal(parse("FOO", &cmd, &e), -1);
    assert_non_null(e.hint);
    assert_non_null(strstr(e.hint, "SHOW POOLS"));
}

static void
test_statement_split(void **state)
{
    (void) state;
    const char *q = "SHOW POOLS; SET a = 'x;y'; /* ; */ PAUSE \"a;b\" -- ;\n; RESUME";
    const char *end = q + strlen(q);
    const char *p = q;
    const char *want[] = { "SHOW POOLS", " SET a = 'x;y'", " /* ; */ PAUSE \"a;b\" -- ;\n",
                           " RESUME" };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *e = admin_cmd_statement_end(p, end);
        assert_int_equal((size_t) (e - p), strlen(want[i]));
        assert_memory_equal(p, want[i], strlen(want[i]));
        p = e < end ? e + 1 : end;
    }
    assert_ptr_equal(p, end);
    /* An unterminated string or comment runs to the end. */
    const char *u = "SET a = 'x; RESUME";
    assert_ptr_equal(admin_cmd_statement_end(u, u + strlen(u)), u + strlen(u));
    const char *c = "/* ; RESUME";
    assert_ptr_equal(admin_cmd_statement_end(c, c + strlen(c)), c + strlen(c));
    assert_true(admin_cmd_is_empty(c, c + strlen(c)));
    assert_true(admin_cmd_is_empty(" ; ;", strchr(" ; ;", '\0')));
    assert_false(admin_cmd_is_empty(" x", strchr(" x", '\0')));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_statement_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
