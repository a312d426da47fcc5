/*
 * test_protocol_messages.c - unit tests for protocol/messages.c: every builder against
 * hand-written bytes, every reader with valid, truncated, over-long and trailing-garbage bodies.
 * Does not test framing (test_protocol_wire.c) or startup packets (test_protocol_startup.c).
 * Single-threaded.
 *
 * Reference: PostgreSQL 15 documentation, 55.7 "Message Formats", 55.8 "Error and Notice
 * Message Fields".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/messages.h"
#include "protocol/sqlstate.h"

/* The builder holds exactly the expected bytes and did not fail. */
#define EXPECT_BUILT(b, want)                                 \
    do {                                                      \
        assert_false(proto_builder_failed(b));                \
        assert_int_equal((b)->len, sizeof(want));             \
        assert_memory_equal((b)->data, (want), sizeof(want)); \
    } while (0)

/* ---- builders ---- */

static void
test_build_error(void **state)
{
    (void) state;
    struct proto_builder b;
    proto_builder_init_dynamic(&b);
    proto_build_error(&b, 'E', "FATAL", SQLSTATE_TOO_MANY_CONNECTIONS, "too many", NULL, NULL);
    static const uint8_t want[] = { 'E', 0,   0,   0,   36,  'S', 'F', 'A', 'T', 'A', 'L', 0,   'V',
                                    'F', 'A', 'T', 'A', 'L', 0,   'C', '5', '3', '3', '0', '0', 0,
                                    'M', 't', 'o', 'o', ' ', 'm', 'a', 'n', 'y', 0,   0 };
    /* Length 36 = 4 + S(7) + V(7) + C(7) + M(10) + terminator(1). */
    EXPECT_BUILT(&b, want);
    proto_builder_fini(&b);
}

static void
test_build_notice_detail_hint(void **state)
{
    (void) state;
    struct proto_builder b;
    proto_builder_init_dynamic(&b);
    proto_build_error(&b, 'N', "NOTICE", "00000", "m", "d", "h");
    static const uint8_t want[] = { 'N', 0,   0,   0,   37,  'S', 'N', 'O', 'T', 'I', 'C', 'E', 0,
                                    'V', 'N', 'O', 'T', 'I', 'C', 'E', 0,   'C', '0', '0', '0', '0',
                                    '0', 0,   'M', 'm', 0,   'D', 'd', 0,   'H', 'h', 0,   0 };
    /* Length 37 = 4 + S(8) + V(8) + C(7) + M(3) + D(3) + H(3) + terminator(1). */
    EXPECT_BUILT(&b, want);
    proto_builder_fini(&b);
}

static void
test_build_auth(void **state)
{
    (void) state;
    struct proto_builder b;
    static const uint8_t salt[4] = { 0x01, 0x02, 0x03, 0x04 };
    static const uint8_t ok[] = { 'R', 0, 0, 0, 8, 0, 0, 0, 0 };
    static const uint8_t clear[] = { 'R', 0, 0, 0, 8, 0, 0, 0, 3 };
    static const uint8_t md5[] = { 'R', 0, 0, 0, 12, 0, 0, 0, 5, 0x01, 0x02, 0x03, 0x04 };
    static const uint8_t sasl[] = { 'R', 0,   0,   0,   23,  0,   0,   0,   10,  'S', 'C', 'R',
                                    'A', 'M', '-', 'S', 'H', 'A', '-', '2', '5', '6', 0,   0 };
    static const uint8_t sasl_plus[] = "R\0\0\0\x2a\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
    static const uint8_t cont[] = { 'R', 0, 0, 0, 11, 0, 0, 0, 11, 'a', 'b', 'c' };
    static const uint8_t fin[] = { 'R', 0, 0, 0, 10, 0, 0, 0, 12, 'v', '=' };

    proto_builder_init_dynamic(&b);
    proto_build_auth_ok(&b);
    EXPECT_BUILT(&b, ok);
    proto_builder_reset(&b);
    proto_build_auth_cleartext(&b);
    EXPECT_BUILT(&b, clear);
    proto_builder_reset(&b);
    proto_build_auth_md5(&b, salt);
    EXPECT_BUILT(&b, md5);
    proto_builder_reset(&b);
    proto_build_auth_sasl(&b, false);
    EXPECT_BUILT(&b, sasl);
    proto_builder_reset(&b);
    proto_build_auth_sasl(&b, true);
    EXPECT_BUILT(&b, sasl_plus);
    proto_builder_reset(&b);
    proto_build_auth_sasl_continue(&b, "abc", 3);
    EXPECT_BUILT(&b, cont);
    proto_builder_reset(&b);
    proto_build_auth_sasl_final(&b, "v=", 2);
    EXPECT_BUILT(&b, fin);
    proto_builder_fini(&b);
}

static void
test_build_session_messages(void **state)
{
    (void) state;
    struct proto_builder b;
    static const uint8_t ps[] = { 'S', 0,   0,   0,   17, 'T', 'i', 'm', 'e',
                                  'Z', 'o', 'n', 'e', 0,  'U', 'T', 'C', 0 };
    static const uint8_t key[] = {
        'K', 0, 0, 0, 12, 0x00, 0x00, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef
    };
    static const uint8_t ready[] = { 'Z', 0, 0, 0, 5, 'I' };
    proto_builder_init_dynamic(&b);
    proto_build_parameter_status(&b, "TimeZone", "UTC");
    EXPECT_BUILT(&b, ps);
    proto_builder_reset(&b);
    proto_build_backend_key(&b, 12345, 0xdeadbeefu);
    EXPECT_BUILT(&b, key);
    proto_builder_reset(&b);
    proto_build_ready(&b, 'I');
    EXPECT_BUILT(&b, ready);
    proto_builder_fini(&b);
}

static void
test_build_negotiate_version(void **state)
{
    (void) state;
    struct proto_builder b;
    static const char *const unknown[] = { "_pq_.a", "_pq_.bc" };
    static const uint8_t none[] = { 'v', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0 };
    static const uint8_t two[] = { 'v', 0,   0,   0,   27,  0,   0,   0,   0,   0,
                                   0,   0,   2,   '_', 'p', 'q', '_', '.', 'a', 0,
                                   '_', 'p', 'q', '_', '.', 'b', 'c', 0 };
    proto_builder_init_dynamic(&b);
    proto_build_negotiate_version(&b, 0, NULL, 0);
    EXPECT_BUILT(&b, none);
    proto_builder_reset(&b);
    proto_build_negotiate_version(&b, 0, unknown, 2);
    EXPECT_BUILT(&b, two);
    proto_builder_reset(&b);
    proto_build_negotiate_version(&b, 0, unknown, -1);
    assert_true(proto_builder_failed(&b));
    proto_builder_fini(&b);
}

static void
test_build_frontend_messages(void **state)
{
    (void) state;
    struct proto_builder b;
    static const char *const names[] = { "user", "database" };
    static const char *const values[] = { "u", "d" };
    static const uint8_t startup[] = { 0,   0,   0,   27,  0,   3, 0,   0,   'u',
                                       's', 'e', 'r', 0,   'u', 0, 'd', 'a', 't',
                                       'a', 'b', 'a', 's', 'e', 0, 'd', 0,   0 };
    static const uint8_t cancel[] = { 0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 0, 0, 0, 9 };
    static const uint8_t pw[] = { 'p', 0, 0, 0, 8, 'a', 'b', 'c', 0 };
    static const uint8_t init[] = {
        'p', 0,   0,   0,   25,  'S', 'C', 'R', 'A', 'M', '-', 'S', 'H',
        'A', '-', '2', '5', '6', 0,   0,   0,   0,   3,   'n', ',', ','
    };
    static const uint8_t init_none[] = { 'p', 0, 0, 0, 11, 'M', 'X', 0, 0xff, 0xff, 0xff, 0xff };
    static const uint8_t resp[] = { 'p', 0, 0, 0, 6, 'c', '=' };
    static const uint8_t query[] = { 'Q', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0 };
    static const uint8_t term[] = { 'X', 0, 0, 0, 4 };

    proto_builder_init_dynamic(&b);
    proto_build_startup(&b, names, values, 2);
    EXPECT_BUILT(&b, startup);
    proto_builder_reset(&b);
    proto_build_cancel_request(&b, 7, 9);
    EXPECT_BUILT(&b, cancel);
    proto_builder_reset(&b);
    proto_build_password(&b, "abc");
    EXPECT_BUILT(&b, pw);
    proto_builder_reset(&b);
    proto_build_sasl_initial(&b, "SCRAM-SHA-256", "n,,", 3);
    EXPECT_BUILT(&b, init);
    proto_builder_reset(&b);
    proto_build_sasl_initial(&b, "MX", NULL, 0);
    EXPECT_BUILT(&b, init_none);
    proto_builder_reset(&b);
    proto_build_sasl_response(&b, "c=", 2);
    EXPECT_BUILT(&b, resp);
    proto_builder_reset(&b);
    proto_build_query(&b, "SELECT 1");
    EXPECT_BUILT(&b, query);
    proto_builder_reset(&b);
    proto_build_terminate(&b);
    EXPECT_BUILT(&b, term);
    proto_builder_fini(&b);
}

static void
test_build_overflow_fixed(void **state)
{
    (void) state;
    uint8_t mem[16];
    struct proto_builder b;
    proto_builder_init_fixed(&b, mem, sizeof(mem));
    proto_build_error(&b, 'E', "ERROR", SQLSTATE_INTERNAL_ERROR, "does not fit here", NULL, NULL);
    assert_true(proto_builder_failed(&b));
    /* Sticky: a later small message is not written either. */
    proto_build_terminate(&b);
    assert_true(proto_builder_failed(&b));
}

/* ---- readers ---- */

static void
test_read_error(void **state)
{
    (void) state;
    struct proto_error_fields f;
    /* S, V, C, M, D, an unknown field 'q', terminator. */
    static const uint8_t body[] = "SERREUR\0VERROR\0C42P01\0Mno such table\0Dd\0qx\0";
    assert_int_equal(proto_read_error(body, sizeof(body), &f), ST_OK); /* sizeof keeps last 0 */
    assert_string_equal(f.severity, "ERROR"); /* V preferred over the localized S */
    assert_string_equal(f.code, "42P01");
    assert_string_equal(f.message, "no such table");
    assert_string_equal(f.detail, "d");

    static const uint8_t s_only[] = "SFATAL\0M m\0";
    assert_int_equal(proto_read_error(s_only, sizeof(s_only), &f), ST_OK);
    assert_string_equal(f.severity, "FATAL");
    assert_null(f.code);
    assert_null(f.detail);

    static const uint8_t empty[] = { 0 };
    assert_int_equal(proto_read_error(empty, 1, &f), ST_OK);
    assert_null(f.severity);
}

static void
test_read_error_malformed(void **state)
{
    (void) state;
    struct proto_error_fields f;
    static const uint8_t body[] = "SERROR\0C42P01\0";
    /* Missing the final terminator. */
    assert_int_equal(proto_read_error(body, sizeof(body) - 1, &f), ST_ESERVER_PROTOCOL);
    /* Field value running past the end. */
    assert_int_equal(proto_read_error(body, 5, &f), ST_ESERVER_PROTOCOL);
    /* Nothing at all. */
    assert_int_equal(proto_read_error(body, 0, &f), ST_ESERVER_PROTOCOL);
    /* Trailing garbage after the terminator. */
    static const uint8_t trail[] = { 'S', 'E', 0, 0, 'x' };
    assert_int_equal(proto_read_error(trail, sizeof(trail), &f), ST_ESERVER_PROTOCOL);
}

static void
test_read_auth(void **state)
{
    (void) state;
    uint32_t code = 99;
    const uint8_t *rest = NULL;
    size_t rest_len = 99;
    static const uint8_t ok[] = { 0, 0, 0, 0 };
    static const uint8_t md5[] = { 0, 0, 0, 5, 1, 2, 3, 4 };
    static const uint8_t sasl[] = "\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
    static const uint8_t cont[] = { 0, 0, 0, 11, 'r', '=', 'x' };
    static const uint8_t gss[] = { 0, 0, 0, 7 };

    assert_int_equal(proto_read_auth(ok, sizeof(ok), &code, &rest, &rest_len), ST_OK);
    assert_int_equal(code, PROTO_AUTH_OK);
    assert_int_equal(rest_len, 0);
    assert_int_equal(proto_read_auth(md5, sizeof(md5), &code, &rest, &rest_len), ST_OK);
    assert_int_equal(code, PROTO_AUTH_MD5);
    assert_int_equal(rest_len, 4);
    assert_ptr_equal(rest, md5 + 4);
    assert_int_equal(proto_read_auth(sasl, sizeof(sasl), &code, &rest, &rest_len), ST_OK);
    assert_int_equal(code, PROTO_AUTH_SASL);
    assert_true(proto_sasl_list_has(rest, rest_len, "SCRAM-SHA-256"));
    assert_true(proto_sasl_list_has(rest, rest_len, "SCRAM-SHA-256-PLUS"));
    assert_false(proto_sasl_list_has(rest, rest_len, "SCRAM-SHA"));
    assert_int_equal(proto_read_auth(cont, sizeof(cont), &code, &rest, &rest_len), ST_OK);
    assert_int_equal(code, PROTO_AUTH_SASL_CONTINUE);
    assert_int_equal(rest_len, 3);
    assert_memory_equal(rest, "r=x", 3);
    /* Codes we do not act on pass through. */
    assert_int_equal(proto_read_auth(gss, sizeof(gss), &code, &rest, &rest_len), ST_OK);
    assert_int_equal(code, 7);
}

static void
test_read_auth_malformed(void **state)
{
    (void) state;
    uint32_t code = 99;
    const uint8_t *rest;
    size_t rest_len;
    static const uint8_t ok_trail[] = { 0, 0, 0, 0, 'x' };
    static const uint8_t md5_short[] = { 0, 0, 0, 5, 1, 2, 3 };
    static const uint8_t md5_long[] = { 0, 0, 0, 5, 1, 2, 3, 4, 5 };
    static const uint8_t clear_trail[] = { 0, 0, 0, 3, 0 };
    static const uint8_t sasl_unterminated[] = "\0\0\0\x0aSCRAM-SHA-256"; /* one NUL only */
    static const uint8_t sasl_trail[] = "\0\0\0\x0aSCRAM-SHA-256\0\0x";
    static const uint8_t sasl_empty[] = { 0, 0, 0, 10 };

    assert_int_equal(proto_read_auth(ok_trail, 3, &code, &rest, &rest_len), ST_ESERVER_PROTOCOL);
    assert_int_equal(code, 99); /* untouched */
    assert_int_equal(proto_read_auth(ok_trail, sizeof(ok_trail), &code, &rest, &rest_len),
                     ST_ESERVER_PROTOCOL);
    assert_int_equal(proto_read_auth(md5_short, sizeof(md5_short), &code, &rest, &rest_len),
                     ST_ESERVER_PROTOCOL);
    assert_int_equal(proto_read_auth(md5_long, sizeof(md5_long), &code, &rest, &rest_len),
                     ST_ESERVER_PROTOCOL);
    assert_int_equal(proto_read_auth(clear_trail, sizeof(clear_trail), &code, &rest, &rest_len),
                     ST_ESERVER_PROTOCOL);
    assert_int_equal(
        proto_read_auth(sasl_unterminated, sizeof(sasl_unterminated), &code, &rest, &rest_len),
        ST_ESERVER_PROTOCOL);
    /* sizeof - 1: the literal's own NUL would be the list's trailing garbage anyway. */
    assert_int_equal(proto_read_auth(sasl_trail, sizeof(sasl_trail) - 1, &code, &rest, &rest_len),
                     ST_ESERVER_PROTOCOL);
    assert_int_equal(proto_read_auth(sasl_empty, sizeof(sasl_empty), &code, &rest, &rest_len),
                     ST_ESERVER_PROTOCOL);
    /* Malformed lists name nothing. */
    static const uint8_t bad_list[] = { 'S', 'C', 'R' };
    assert_false(proto_sasl_list_has(bad_list, sizeof(bad_list), "SCR"));
    static const uint8_t no_end[] = "SCRAM-SHA-256"; /* name, but no empty name after it */
    assert_false(proto_sasl_list_has(no_end, sizeof(no_end), "SCRAM-SHA-256"));
}

static void
test_read_parameter_status(void **state)
{
    (void) state;
    const char *name, *value;
    static const uint8_t body[] = "server_version\00015.4\0";
    assert_int_equal(proto_read_parameter_status(body, sizeof(body) - 1, &name, &value), ST_OK);
    assert_string_equal(name, "server_version");
    assert_string_equal(value, "15.4");
    assert_ptr_equal(name, (const char *) body);
    /* Truncated value, missing value, trailing garbage. */
    assert_int_equal(proto_read_parameter_status(body, sizeof(body) - 2, &name, &value),
                     ST_ESERVER_PROTOCOL);
    assert_int_equal(proto_read_parameter_status(body, 15, &name, &value), ST_ESERVER_PROTOCOL);
    assert_int_equal(proto_read_parameter_status(body, sizeof(body), &name, &value),
                     ST_ESERVER_PROTOCOL);
}

static void
test_read_backend_key(void **state)
{
    (void) state;
    uint32_t pid = 0, key = 0;
    static const uint8_t body[] = { 0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef, 0 };
    assert_int_equal(proto_read_backend_key(body, 8, &pid, &key), ST_OK);
    assert_int_equal(pid, 12345);
    assert_int_equal(key, 0xdeadbeefu);
    assert_int_equal(proto_read_backend_key(body, 7, &pid, &key), ST_ESERVER_PROTOCOL);
    assert_int_equal(proto_read_backend_key(body, 9, &pid, &key), ST_ESERVER_PROTOCOL);
    assert_int_equal(proto_read_backend_key(body, 0, &pid, &key), ST_ESERVER_PROTOCOL);
}

static void
test_read_ready(void **state)
{
    (void) state;
    uint8_t st = 0;
    static const uint8_t idle[] = { 'I' }, txn[] = { 'T' }, failed[] = { 'E' };
    static const uint8_t bad[] = { 'X' }, two[] = { 'I', 'I' };
    assert_int_equal(proto_read_ready(idle, 1, &st), ST_OK);
    assert_int_equal(st, 'I');
    assert_int_equal(proto_read_ready(txn, 1, &st), ST_OK);
    assert_int_equal(st, 'T');
    assert_int_equal(proto_read_ready(failed, 1, &st), ST_OK);
    assert_int_equal(st, 'E');
    st = 0;
    assert_int_equal(proto_read_ready(bad, 1, &st), ST_ESERVER_PROTOCOL);
    assert_int_equal(st, 0);
    assert_int_equal(proto_read_ready(two, 2, &st), ST_ESERVER_PROTOCOL);
    assert_int_equal(proto_read_ready(idle, 0, &st), ST_ESERVER_PROTOCOL);
}

static void
test_read_password(void **state)
{
    (void) state;
    const char *pw = NULL;
    static const uint8_t body[] = "md520c46e3762c864548e296b33c3406aa9";
    assert_int_equal(proto_read_password(body, sizeof(body), &pw), ST_OK);
    assert_string_equal(pw, "md520c46e3762c864548e296b33c3406aa9");
    static const uint8_t empty[] = { 0 };
    assert_int_equal(proto_read_password(empty, 1, &pw), ST_OK);
    assert_string_equal(pw, "");
    pw = NULL;
    assert_int_equal(proto_read_password(body, sizeof(body) - 1, &pw), ST_ECLIENT_PROTOCOL);
    assert_null(pw);
    static const uint8_t trail[] = { 'a', 0, 'b' };
    assert_int_equal(proto_read_password(trail, sizeof(trail), &pw), ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_read_password(body, 0, &pw), ST_ECLIENT_PROTOCOL);
}

static void
test_read_sasl_initial(void **state)
{
    (void) state;
    const char *mech = NULL;
    const uint8_t *data = NULL;
    size_t data_len = 99;
    static const uint8_t body[] = "SCRAM-SHA-256\0\0\0\0\x03n,,";
    static const uint8_t none[] = "SCRAM-SHA-256\0\xff\xff\xff\xff";
    static const uint8_t zero[] = "SCRAM-SHA-256\0\0\0\0\0";
    static const uint8_t neg2[] = "SCRAM-SHA-256\0\xff\xff\xff\xfe";
    static const uint8_t over[] = "SCRAM-SHA-256\0\0\0\0\x04n,,";
    static const uint8_t huge[] = "SCRAM-SHA-256\0\x7f\xff\xff\xff";

    assert_int_equal(proto_read_sasl_initial(body, sizeof(body) - 1, &mech, &data, &data_len),
                     ST_OK);
    assert_string_equal(mech, "SCRAM-SHA-256");
    assert_int_equal(data_len, 3);
    assert_memory_equal(data, "n,,", 3);
    assert_int_equal(proto_read_sasl_initial(none, sizeof(none) - 1, &mech, &data, &data_len),
                     ST_OK);
    assert_null(data);
    assert_int_equal(data_len, 0);
    assert_int_equal(proto_read_sasl_initial(zero, sizeof(zero) - 1, &mech, &data, &data_len),
                     ST_OK);
    assert_non_null(data); /* an empty response is not "no response" */
    assert_int_equal(data_len, 0);

    assert_int_equal(proto_read_sasl_initial(neg2, sizeof(neg2) - 1, &mech, &data, &data_len),
                     ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_read_sasl_initial(over, sizeof(over) - 1, &mech, &data, &data_len),
                     ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_read_sasl_initial(huge, sizeof(huge) - 1, &mech, &data, &data_len),
                     ST_ECLIENT_PROTOCOL);
    /* Trailing garbage, truncated length, unterminated mechanism. */
    assert_int_equal(proto_read_sasl_initial(body, sizeof(body), &mech, &data, &data_len),
                     ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_read_sasl_initial(body, 16, &mech, &data, &data_len),
                     ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_read_sasl_initial(body, 10, &mech, &data, &data_len),
                     ST_ECLIENT_PROTOCOL);
}

static void
test_builders_feed_readers(void **state)
{
    (void) state;
    struct proto_builder b;
    struct proto_error_fields f;
    const char *mech;
    const uint8_t *data;
    size_t data_len;
    proto_builder_init_dynamic(&b);
    proto_build_error(&b, 'E', "FATAL", SQLSTATE_INVALID_PASSWORD, "password authentication failed",
                      "detail", "hint");
    assert_false(proto_builder_failed(&b));
    assert_int_equal(proto_read_error(b.data + 5, b.len - 5, &f), ST_OK);
    assert_string_equal(f.severity, "FATAL");
    assert_string_equal(f.code, SQLSTATE_INVALID_PASSWORD);
    assert_string_equal(f.message, "password authentication failed");
    assert_string_equal(f.detail, "detail");
    proto_builder_reset(&b);
    proto_build_sasl_initial(&b, "SCRAM-SHA-256", "n,,n=,r=abc", 11);
    assert_int_equal(proto_read_sasl_initial(b.data + 5, b.len - 5, &mech, &data, &data_len),
                     ST_OK);
    assert_string_equal(mech, "SCRAM-SHA-256");
    assert_int_equal(data_len, 11);
    assert_memory_equal(data, "n,,n=,r=abc", 11);
    proto_builder_fini(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_error),
        cmocka_unit_test(test_build_notice_detail_hint),
        cmocka_unit_test(test_build_auth),
        cmocka_unit_test(test_build_session_messages),
        cmocka_unit_test(test_build_negotiate_version),
        cmocka_unit_test(test_build_frontend_messages),
        cmocka_unit_test(test_build_overflow_fixed),
        cmocka_unit_test(test_read_error),
        cmocka_unit_test(test_read_error_malformed),
        cmocka_unit_test(test_read_auth),
        cmocka_unit_test(test_read_auth_malformed),
        cmocka_unit_test(test_read_parameter_status),
        cmocka_unit_test(test_read_backend_key),
        cmocka_unit_test(test_read_ready),
        cmocka_unit_test(test_read_password),
        cmocka_unit_test(test_read_sasl_initial),
        cmocka_unit_test(test_builders_feed_readers),
    };
    return cmocka_run_group_tests_name("protocol_messages", tests, NULL, NULL);
}
