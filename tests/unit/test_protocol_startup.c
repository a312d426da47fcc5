/*
 * test_protocol_startup.c - unit tests for protocol/startup.c: StartupMessage v3 (parameters,
 * missing user, database defaulting to user, bad layouts, too many parameters, versions),
 * SSLRequest, GSSENCRequest and CancelRequest with right and wrong lengths, and the length word
 * check, and the settings of the "options" parameter. Does not test what the proxy answers.
 * Single-threaded.
 *
 * Reference: PostgreSQL 15 documentation, 55.7 "Message Formats" (StartupMessage, SSLRequest,
 * GSSENCRequest, CancelRequest), 55.2.1 "Start-up".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/messages.h"
#include "protocol/startup.h"

/* Write a packet: Int32 length (whole packet), Int32 code, then body (zeros when body is NULL);
 * returns its length. */
static size_t
packet(uint8_t *out, uint32_t code, const void *body, size_t body_len)
{
    uint32_t len = (uint32_t) (8 + body_len);
    out[0] = (uint8_t) (len >> 24);
    out[1] = (uint8_t) (len >> 16);
    out[2] = (uint8_t) (len >> 8);
    out[3] = (uint8_t) len;
    out[4] = (uint8_t) (code >> 24);
    out[5] = (uint8_t) (code >> 16);
    out[6] = (uint8_t) (code >> 8);
    out[7] = (uint8_t) code;
    if (body) {
        memcpy(out + 8, body, body_len);
    } else {
        memset(out + 8, 0, body_len);
    }
    return len;
}

/* A parameter list given as a string literal with embedded NULs; sizeof - 1 drops the literal's
 * own NUL so the list ends exactly where the text says. */
#define PARAMS(lit) (lit), (sizeof(lit) - 1)

static void
test_v3_hand_written(void **state)
{
    (void) state;
    /* StartupMessage, length 34, version 3.0, user=alice database=shop, terminator. */
    static const uint8_t pkt[] = { 0,   0,   0,   34,  0,   3,   0,   0,   'u', 's', 'e', 'r',
                                   0,   'a', 'l', 'i', 'c', 'e', 0,   'd', 'a', 't', 'a', 'b',
                                   'a', 's', 'e', 0,   's', 'h', 'o', 'p', 0,   0 };
    struct proto_startup s;
    struct proto_err err;
    uint32_t len;
    uint8_t buf[sizeof(pkt)];
    memcpy(buf, pkt, sizeof(pkt));
    assert_int_equal(sizeof(pkt), 34);
    assert_int_equal(proto_startup_len(buf, sizeof(buf), &len), ST_OK);
    assert_int_equal(len, sizeof(pkt));
    assert_int_equal(proto_startup_parse(buf, len, &s, &err), ST_OK);
    assert_int_equal(s.kind, PROTO_STARTUP_V3);
    assert_int_equal(s.version, PROTO_V3);
    assert_string_equal(s.user, "alice");
    assert_string_equal(s.database, "shop");
    assert_int_equal(s.n_params, 2);
    assert_string_equal(s.params[0].name, "user");
    assert_string_equal(s.params[1].value, "shop");
    /* Borrowed from the packet. */
    assert_ptr_equal(s.user, (const char *) buf + 13);
}

static void
test_v3_params(void **state)
{
    (void) state;
    uint8_t buf[512];
    struct proto_startup s;
    struct proto_err err;
    size_t n = packet(buf, PROTO_V3,
                      PARAMS("user\0bob\0database\0app\0application_name\0psql\0"
                             "client_encoding\0UTF8\0options\0-c geqo=off\0\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_OK);
    assert_int_equal(s.n_params, 5);
    assert_string_equal(s.user, "bob");
    assert_string_equal(s.database, "app");
    assert_string_equal(proto_startup_param(&s, "application_name"), "psql");
    assert_string_equal(proto_startup_param(&s, "client_encoding"), "UTF8");
    assert_string_equal(proto_startup_param(&s, "options"), "-c geqo=off");
    assert_null(proto_startup_param(&s, "search_path"));
    assert_null(proto_startup_param(&s, "applicatio"));
}

static void
test_v3_walk_matches_parse(void **state)
{
    (void) state;
    /* proto_startup_next yields what proto_startup_parse put in params[], in order, duplicates
     * and empty values included, and stops at the terminator. */
    uint8_t buf[512];
    struct proto_startup s;
    struct proto_err err;
    size_t n = packet(buf, PROTO_V3,
                      PARAMS("user\0bob\0database\0app\0application_name\0\0"
                             "user\0carol\0client_encoding\0UTF8\0\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_OK);
    assert_int_equal(s.n_params, 5);
    size_t off = 0;
    const char *name, *value;
    int i = 0;
    while (proto_startup_next(buf, n, &off, &name, &value)) {
        assert_true(i < s.n_params);
        assert_ptr_equal(name, s.params[i].name);
        assert_ptr_equal(value, s.params[i].value);
        i++;
    }
    assert_int_equal(i, s.n_params);
    assert_false(proto_startup_next(buf, n, &off, &name, &value));
}

static void
test_v3_missing_user(void **state)
{
    (void) state;
    uint8_t buf[256];
    struct proto_startup s;
    struct proto_err err = { .text = "" };
    size_t n = packet(buf, PROTO_V3, PARAMS("database\0app\0\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
    assert_non_null(strstr(err.text, "user"));
    /* An empty user name counts as missing, as in PostgreSQL. */
    n = packet(buf, PROTO_V3, PARAMS("user\0\0database\0app\0\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
    /* No parameters at all: just the terminator. */
    n = packet(buf, PROTO_V3, PARAMS("\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, NULL), ST_ECLIENT_PROTOCOL);
}

static void
test_v3_database_defaults_to_user(void **state)
{
    (void) state;
    uint8_t buf[256];
    struct proto_startup s;
    size_t n = packet(buf, PROTO_V3, PARAMS("user\0carol\0\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, NULL), ST_OK);
    assert_string_equal(s.database, "carol");
    assert_ptr_equal(s.database, s.user);
    assert_null(proto_startup_param(&s, "database"));
    /* An empty database also means the user's. */
    n = packet(buf, PROTO_V3, PARAMS("database\0\0user\0carol\0\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, NULL), ST_OK);
    assert_string_equal(s.database, "carol");
}

static void
test_v3_duplicate_takes_last(void **state)
{
    (void) state;
    uint8_t buf[256];
    struct proto_startup s;
    size_t n = packet(buf, PROTO_V3, PARAMS("user\0a\0user\0b\0\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, NULL), ST_OK);
    assert_string_equal(s.user, "b");
    assert_string_equal(proto_startup_param(&s, "user"), "b");
    assert_int_equal(s.n_params, 2);
}

static void
test_v3_bad_layout(void **state)
{
    (void) state;
    uint8_t buf[256];
    struct proto_startup s;
    struct proto_err err = { .text = "" };
    size_t n;
    /* Unterminated list: no empty name at the end. */
    n = packet(buf, PROTO_V3, PARAMS("user\0bob\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
    assert_true(err.text[0] != '\0');
    /* Value runs past the end. */
    n = packet(buf, PROTO_V3, PARAMS("user\0bob"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
    /* Name runs past the end. */
    n = packet(buf, PROTO_V3, PARAMS("user\0bob\0datab"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
    /* Name with no value. */
    n = packet(buf, PROTO_V3, PARAMS("user\0bob\0database\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
    /* Trailing garbage after the terminator. */
    n = packet(buf, PROTO_V3, PARAMS("user\0bob\0\0xx"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
    n = packet(buf, PROTO_V3, PARAMS("user\0bob\0\0\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
    /* A bare 8-byte StartupMessage has no list at all. */
    n = packet(buf, PROTO_V3, NULL, 0);
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
}

static void
test_v3_too_many_params(void **state)
{
    (void) state;
    char body[2048];
    uint8_t buf[2100];
    struct proto_startup s;
    struct proto_err err;
    size_t off = 0;
    off += (size_t) snprintf(body, sizeof(body), "user") + 1;
    off += (size_t) snprintf(body + off, sizeof(body) - off, "u") + 1;
    for (int i = 1; i < PROTO_STARTUP_MAX_PARAMS; i++) {
        off += (size_t) snprintf(body + off, sizeof(body) - off, "p%d", i) + 1;
        off += (size_t) snprintf(body + off, sizeof(body) - off, "v") + 1;
    }
    body[off] = '\0';
    /* Exactly the maximum is fine. */
    size_t n = packet(buf, PROTO_V3, body, off + 1);
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_OK);
    assert_int_equal(s.n_params, PROTO_STARTUP_MAX_PARAMS);
    /* One more is refused. */
    off += (size_t) snprintf(body + off, sizeof(body) - off, "extra") + 1;
    off += (size_t) snprintf(body + off, sizeof(body) - off, "v") + 1;
    body[off] = '\0';
    n = packet(buf, PROTO_V3, body, off + 1);
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
    assert_non_null(strstr(err.text, "too many"));
}

static void
test_versions(void **state)
{
    (void) state;
    uint8_t buf[256];
    struct proto_startup s;
    struct proto_err err;
    size_t n;
    /* 2.0 is refused as unsupported, not as malformed. */
    n = packet(buf, 2u << 16, PARAMS("user\0bob\0\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_UNSUPPORTED);
    assert_non_null(strstr(err.text, "2.0"));
    n = packet(buf, 4u << 16, PARAMS("user\0bob\0\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_UNSUPPORTED);
    /* 3.1 is accepted with its version kept, for NegotiateProtocolVersion. */
    n = packet(buf, (3u << 16) | 1u, PARAMS("user\0bob\0_pq_.x\0y\0\0"));
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_OK);
    assert_int_equal(s.kind, PROTO_STARTUP_V3);
    assert_int_equal(s.version, (3u << 16) | 1u);
    assert_string_equal(proto_startup_param(&s, "_pq_.x"), "y");
    /* An unknown request code in the 1234 space is unsupported too. */
    n = packet(buf, (1234u << 16) | 5681u, NULL, 0);
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_UNSUPPORTED);
}

static void
test_ssl_request(void **state)
{
    (void) state;
    static const uint8_t ssl[] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f };
    static const uint8_t gss[] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30 };
    static const uint8_t ssl_long[] = { 0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f, 0, 0, 0, 0 };
    static const uint8_t gss_long[] = { 0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x30, 0 };
    struct proto_startup s;
    struct proto_err err;
    assert_int_equal(proto_startup_parse(ssl, sizeof(ssl), &s, &err), ST_OK);
    assert_int_equal(s.kind, PROTO_STARTUP_SSL);
    assert_int_equal(s.version, PROTO_SSL_CODE);
    assert_null(s.user);
    assert_int_equal(proto_startup_parse(gss, sizeof(gss), &s, &err), ST_OK);
    assert_int_equal(s.kind, PROTO_STARTUP_GSSENC);
    assert_int_equal(s.version, PROTO_GSSENC_CODE);
    assert_int_equal(proto_startup_parse(ssl_long, sizeof(ssl_long), &s, &err),
                     ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_startup_parse(gss_long, sizeof(gss_long), &s, &err),
                     ST_ECLIENT_PROTOCOL);
}

static void
test_cancel_request(void **state)
{
    (void) state;
    /* Length 16, code 80877102 = 0x04d2162e, pid 0x00001234, key 0xcafebabe. */
    static const uint8_t ok[] = { 0, 0, 0,    16,   0x04, 0xd2, 0x16, 0x2e,
                                  0, 0, 0x12, 0x34, 0xca, 0xfe, 0xba, 0xbe };
    static const uint8_t short_[] = { 0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x12, 0x34 };
    static const uint8_t long_[] = { 0,    0,    0,    20,   0x04, 0xd2, 0x16, 0x2e, 0, 0,
                                     0x12, 0x34, 0xca, 0xfe, 0xba, 0xbe, 0,    0,    0, 0 };
    struct proto_startup s;
    struct proto_err err;
    assert_int_equal(proto_startup_parse(ok, sizeof(ok), &s, &err), ST_OK);
    assert_int_equal(s.kind, PROTO_STARTUP_CANCEL);
    assert_int_equal(s.cancel_pid, 0x1234);
    assert_int_equal(s.cancel_key, 0xcafebabeu);
    assert_int_equal(proto_startup_parse(short_, sizeof(short_), &s, &err), ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_startup_parse(long_, sizeof(long_), &s, &err), ST_ECLIENT_PROTOCOL);

    /* What proto_build_cancel_request writes parses back. */
    uint8_t mem[32];
    struct proto_builder b;
    proto_builder_init_fixed(&b, mem, sizeof(mem));
    proto_build_cancel_request(&b, 0x1234, 0xcafebabeu);
    assert_false(proto_builder_failed(&b));
    assert_int_equal(b.len, sizeof(ok));
    assert_memory_equal(mem, ok, sizeof(ok));
}

static void
test_length_word(void **state)
{
    (void) state;
    uint32_t len = 0;
    static const uint8_t min[] = { 0, 0, 0, 8 };
    static const uint8_t seven[] = { 0, 0, 0, 7 };
    static const uint8_t max[] = { 0, 0, 0x27, 0x10 };  /* 10000 */
    static const uint8_t over[] = { 0, 0, 0x27, 0x11 }; /* 10001 */
    static const uint8_t neg[] = { 0xff, 0xff, 0xff, 0xf0 };
    assert_int_equal(proto_startup_len(min, 0, &len), ST_INCOMPLETE);
    assert_int_equal(proto_startup_len(min, 3, &len), ST_INCOMPLETE);
    assert_int_equal(proto_startup_len(min, 4, &len), ST_OK);
    assert_int_equal(len, 8);
    assert_int_equal(proto_startup_len(max, 4, &len), ST_OK);
    assert_int_equal(len, PROTO_STARTUP_MAX_LEN);
    assert_int_equal(proto_startup_len(seven, 4, &len), ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_startup_len(over, 4, &len), ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_startup_len(neg, 4, &len), ST_ECLIENT_PROTOCOL);
}

static void
test_parse_length_checks(void **state)
{
    (void) state;
    uint8_t buf[PROTO_STARTUP_MAX_LEN + 16];
    struct proto_startup s;
    struct proto_err err;
    size_t n = packet(buf, PROTO_V3, PARAMS("user\0bob\0\0"));
    /* The length word must match the bytes given. */
    assert_int_equal(proto_startup_parse(buf, n - 1, &s, &err), ST_ECLIENT_PROTOCOL);
    buf[3] = (uint8_t) (buf[3] + 1);
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
    /* Too short to hold a code. */
    assert_int_equal(proto_startup_parse(buf, 4, &s, &err), ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_startup_parse(buf, 0, &s, &err), ST_ECLIENT_PROTOCOL);
    /* Oversize: refused before looking inside. */
    memset(buf, 0, sizeof(buf));
    n = packet(buf, PROTO_V3, NULL, PROTO_STARTUP_MAX_LEN + 1 - 8);
    assert_int_equal(n, PROTO_STARTUP_MAX_LEN + 1);
    assert_int_equal(proto_startup_parse(buf, n, &s, &err), ST_ECLIENT_PROTOCOL);
}

static void
test_builder_roundtrip(void **state)
{
    (void) state;
    static const char *const names[] = { "user", "database", "application_name" };
    static const char *const values[] = { "dave", "db1", "pgmux" };
    struct proto_builder b;
    struct proto_startup s;
    proto_builder_init_dynamic(&b);
    proto_build_startup(&b, names, values, 3);
    assert_false(proto_builder_failed(&b));
    uint32_t len;
    assert_int_equal(proto_startup_len(b.data, b.len, &len), ST_OK);
    assert_int_equal(len, b.len);
    assert_int_equal(proto_startup_parse(b.data, len, &s, NULL), ST_OK);
    assert_string_equal(s.user, "dave");
    assert_string_equal(s.database, "db1");
    assert_string_equal(proto_startup_param(&s, "application_name"), "pgmux");
    proto_builder_fini(&b);
}

/* Split opts; each "name=value" of want (NULL-ended) must come out in order. out is sized
 * exactly as the contract allows, in its own allocation, so ASan sees a write past it. */
static void
expect_options(const char *opts, const char *const *want)
{
    size_t cap = strlen(opts) + 1;
    char *out = malloc(cap);
    assert_non_null(out);
    int n = -1;
    struct proto_err err;
    assert_int_equal(proto_options_split(opts, out, &n, &err), ST_OK);
    const char *p = out;
    int k = 0;
    for (; want[k]; k++) {
        char pair[256];
        const char *value = p + strlen(p) + 1;
        snprintf(pair, sizeof(pair), "%s=%s", p, value);
        assert_string_equal(pair, want[k]);
        p = value + strlen(value) + 1;
        assert_true((size_t) (p - out) <= cap);
    }
    assert_int_equal(n, k);
    free(out);
}

static void
test_options_settings(void **state)
{
    (void) state;
    static const char *const none[] = { NULL };
    expect_options("", none);
    expect_options("  \t ", none);
    static const char *const one[] = { "search_path=app", NULL };
    expect_options("-c search_path=app", one);
    expect_options("-csearch_path=app", one);
    expect_options("--search_path=app", one);
    expect_options("  --search-path=app  ", one);
    /* a backslash keeps the next character, a space included; '-' in a value stays */
    static const char *const esc[] = { "search_path=a, b", "application_name=x-y\\z", NULL };
    expect_options("-c search_path=a,\\ b --application-name=x-y\\\\z", esc);
    /* '=' after the first belongs to the value; an empty value is a value */
    static const char *const eq[] = { "pgmux.k=a=b", "pgmux.e=", NULL };
    expect_options("-c pgmux.k=a=b -c pgmux.e=", eq);
    /* the next word is -c's argument even when it starts with '-' */
    static const char *const dash[] = { "statement_timeout=-1", NULL };
    expect_options("-c\tstatement_timeout=-1", dash);
    /* a trailing backslash escapes nothing */
    static const char *const trail[] = { "a=b", NULL };
    expect_options("-c a=b\\", trail);
}

static void
test_options_refused(void **state)
{
    (void) state;
    static const struct {
        const char *opts;
        enum status st;
        const char *says;
    } cases[] = {
        { "-d 5", ST_ECLIENT_UNSUPPORTED, "server switch \"-d\"" },
        { "-c a=b -F", ST_ECLIENT_UNSUPPORTED, "server switch \"-F\"" },
        { "-Fc a=b", ST_ECLIENT_UNSUPPORTED, "server switch \"-Fc\"" },
        { "-", ST_ECLIENT_UNSUPPORTED, "server switch \"-\"" },
        { "search_path=a", ST_ECLIENT_PROTOCOL, "invalid command-line argument" },
        { "\\", ST_ECLIENT_PROTOCOL, "invalid command-line argument" }, /* an empty word */
        { "-c", ST_ECLIENT_PROTOCOL, "requires an argument" },
        { "-c   ", ST_ECLIENT_PROTOCOL, "requires an argument" },
        { "-c work_mem", ST_ECLIENT_PROTOCOL, "-c work_mem requires a value" },
        { "--work-mem", ST_ECLIENT_PROTOCOL, "--work-mem requires a value" },
        { "-c =1", ST_ECLIENT_PROTOCOL, "has no name" },
        { "--", ST_ECLIENT_PROTOCOL, "requires a value" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        int n;
        struct proto_err err = { { 0 } };
        assert_int_equal(proto_options_split(cases[i].opts, out, &n, &err), cases[i].st);
        if (!strstr(err.text, cases[i].says)) {
            fail_msg("%s: \"%s\" does not say \"%s\"", cases[i].opts, err.text, cases[i].says);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v3_hand_written),
        cmocka_unit_test(test_v3_params),
        cmocka_unit_test(test_v3_walk_matches_parse),
        cmocka_unit_test(test_v3_missing_user),
        cmocka_unit_test(test_v3_database_defaults_to_user),
        cmocka_unit_test(test_v3_duplicate_takes_last),
        cmocka_unit_test(test_v3_bad_layout),
        cmocka_unit_test(test_v3_too_many_params),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_ssl_request),
        cmocka_unit_test(test_cancel_request),
        cmocka_unit_test(test_length_word),
        cmocka_unit_test(test_parse_length_checks),
        cmocka_unit_test(test_builder_roundtrip),
        cmocka_unit_test(test_options_settings),
        cmocka_unit_test(test_options_refused),
    };
    return cmocka_run_group_tests_name("protocol_startup", tests, NULL, NULL);
}
