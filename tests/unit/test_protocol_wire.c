/*
 * test_protocol_wire.c - unit tests for protocol/wire.c: header reading, type-byte validity, the
 * bounds-checked reader (valid, truncated, trailing-garbage input) and the builder against
 * hand-written bytes. Does not test message bodies (test_protocol_messages.c does).
 * Single-threaded.
 *
 * Reference: PostgreSQL 15 documentation, 55.6 "Message Data Types", 55.7 "Message Formats".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/wire.h"

/* ---- header ---- */

static void
test_header_valid(void **state)
{
    (void) state;
    /* Query "SELECT 1": 'Q', length 13 (4 + 9). */
    static const uint8_t msg[] = { 'Q', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0 };
    struct proto_header h;
    assert_int_equal(proto_header_read(msg, sizeof(msg), PROTO_MAX_MSG_LEN, &h), ST_OK);
    assert_int_equal(h.type, 'Q');
    assert_int_equal(h.len, 13);
    assert_int_equal(proto_header_total(&h), sizeof(msg));
    /* Only the header needs to be there. */
    assert_int_equal(proto_header_read(msg, PROTO_HEADER_LEN, PROTO_MAX_MSG_LEN, &h), ST_OK);
}

static void
test_header_minimal(void **state)
{
    (void) state;
    static const uint8_t msg[] = { 'X', 0, 0, 0, 4 }; /* Terminate */
    struct proto_header h;
    assert_int_equal(proto_header_read(msg, sizeof(msg), PROTO_MAX_MSG_LEN, &h), ST_OK);
    assert_int_equal(h.type, 'X');
    assert_int_equal(h.len, 4);
    assert_int_equal(proto_header_total(&h), 5);
}

static void
test_header_truncated(void **state)
{
    (void) state;
    static const uint8_t msg[] = { 'Q', 0, 0, 0, 13 };
    struct proto_header h = { .type = 0xAA, .len = 77 };
    for (size_t n = 0; n < PROTO_HEADER_LEN; n++) {
        assert_int_equal(proto_header_read(msg, n, PROTO_MAX_MSG_LEN, &h), ST_INCOMPLETE);
    }
    assert_int_equal(h.type, 0xAA); /* untouched */
    assert_int_equal(h.len, 77);
}

static void
test_header_bad_length(void **state)
{
    (void) state;
    struct proto_header h;
    static const uint8_t zero[] = { 'Q', 0, 0, 0, 0 };
    static const uint8_t three[] = { 'Q', 0, 0, 0, 3 };
    static const uint8_t huge[] = { 'Q', 0xff, 0xff, 0xff, 0xff };
    static const uint8_t neg[] = { 'Q', 0x80, 0, 0, 0 };
    static const uint8_t over[] = { 'Q', 0, 0, 0x20, 0x01 }; /* 8193 */
    static const uint8_t at[] = { 'Q', 0, 0, 0x20, 0x00 };   /* 8192 */
    assert_int_equal(proto_header_read(zero, 5, PROTO_MAX_MSG_LEN, &h), ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_header_read(three, 5, PROTO_MAX_MSG_LEN, &h), ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_header_read(huge, 5, PROTO_MAX_MSG_LEN, &h), ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_header_read(neg, 5, PROTO_MAX_MSG_LEN, &h), ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_header_read(over, 5, 8192, &h), ST_ECLIENT_PROTOCOL);
    assert_int_equal(proto_header_read(at, 5, 8192, &h), ST_OK);
    assert_int_equal(h.len, 8192);
}

static void
test_frontend_types(void **state)
{
    (void) state;
    static const char valid[] = "BCdcfDEHFPpQSX";
    for (size_t i = 0; valid[i]; i++) {
        assert_true(proto_frontend_type_valid((uint8_t) valid[i]));
    }
    static const char invalid[] = "RKZTzq12 ";
    for (size_t i = 0; invalid[i]; i++) {
        assert_false(proto_frontend_type_valid((uint8_t) invalid[i]));
    }
    assert_false(proto_frontend_type_valid(0));
    assert_false(proto_frontend_type_valid(0xff));
}

static void
test_backend_types(void **state)
{
    (void) state;
    static const char valid[] = "RK23CdcGHWDIEVvnNAtS1sZT";
    for (size_t i = 0; valid[i]; i++) {
        assert_true(proto_backend_type_valid((uint8_t) valid[i]));
    }
    static const char invalid[] = "QPBXpFfxz4 ";
    for (size_t i = 0; invalid[i]; i++) {
        assert_false(proto_backend_type_valid((uint8_t) invalid[i]));
    }
    assert_false(proto_backend_type_valid(0));
    assert_false(proto_backend_type_valid(0x80));
}

/* ---- reader ---- */

static void
test_reader_ints(void **state)
{
    (void) state;
    static const uint8_t in[] = { 0x7f, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff,
                                  0xff, 0x80, 0,    0,    0,    0x00, 0x00, 0x00, 0x2a };
    struct proto_reader r;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    int32_t i32;
    proto_reader_init(&r, in, sizeof(in));
    assert_int_equal(proto_reader_u8(&r, &u8), ST_OK);
    assert_int_equal(u8, 0x7f);
    assert_int_equal(proto_reader_u16(&r, &u16), ST_OK);
    assert_int_equal(u16, 0x1234);
    assert_int_equal(proto_reader_u32(&r, &u32), ST_OK);
    assert_int_equal(u32, 0xdeadbeefu);
    assert_int_equal(proto_reader_i32(&r, &i32), ST_OK);
    assert_int_equal(i32, -1);
    assert_int_equal(proto_reader_i32(&r, &i32), ST_OK);
    assert_int_equal(i32, INT32_MIN);
    assert_int_equal(proto_reader_left(&r), 4);
    assert_int_equal(proto_reader_end(&r), ST_DECLINED); /* trailing bytes */
    assert_int_equal(proto_reader_i32(&r, &i32), ST_OK);
    assert_int_equal(i32, 42);
    assert_int_equal(proto_reader_left(&r), 0);
    assert_int_equal(proto_reader_end(&r), ST_OK);
}

static void
test_reader_truncated(void **state)
{
    (void) state;
    static const uint8_t in[] = { 1, 2, 3 };
    struct proto_reader r;
    uint32_t u32 = 99;
    uint16_t u16 = 99;
    uint8_t u8 = 99;
    int32_t i32 = 99;
    const uint8_t *bytes = NULL;

    proto_reader_init(&r, in, sizeof(in));
    assert_int_equal(proto_reader_u32(&r, &u32), ST_INCOMPLETE);
    assert_int_equal(u32, 99);
    assert_true(r.failed);
    assert_int_equal(r.pos, 0);
    /* Sticky: a later get that would fit still fails, so no field is read from a bad offset. */
    assert_int_equal(proto_reader_u8(&r, &u8), ST_INCOMPLETE);
    assert_int_equal(u8, 99);
    assert_int_equal(proto_reader_end(&r), ST_DECLINED);

    proto_reader_init(&r, in, 1);
    assert_int_equal(proto_reader_u16(&r, &u16), ST_INCOMPLETE);
    assert_int_equal(u16, 99);
    proto_reader_init(&r, in, 3);
    assert_int_equal(proto_reader_i32(&r, &i32), ST_INCOMPLETE);
    assert_int_equal(i32, 99);
    proto_reader_init(&r, in, 0);
    assert_int_equal(proto_reader_u8(&r, &u8), ST_INCOMPLETE);
    proto_reader_init(&r, in, 3);
    assert_int_equal(proto_reader_bytes(&r, 4, &bytes), ST_INCOMPLETE);
    assert_null(bytes);
    /* A length near SIZE_MAX must not wrap the bounds check. */
    proto_reader_init(&r, in, 3);
    assert_int_equal(proto_reader_u8(&r, &u8), ST_OK);
    assert_int_equal(proto_reader_bytes(&r, SIZE_MAX, &bytes), ST_INCOMPLETE);
}

static void
test_reader_bytes(void **state)
{
    (void) state;
    static const uint8_t in[] = { 'a', 'b', 'c', 'd' };
    struct proto_reader r;
    const uint8_t *p;
    proto_reader_init(&r, in, sizeof(in));
    assert_int_equal(proto_reader_bytes(&r, 0, &p), ST_OK);
    assert_int_equal(proto_reader_bytes(&r, 3, &p), ST_OK);
    assert_ptr_equal(p, in); /* borrowed */
    assert_int_equal(proto_reader_bytes(&r, 1, &p), ST_OK);
    assert_ptr_equal(p, in + 3);
    assert_int_equal(proto_reader_end(&r), ST_OK);
}

static void
test_reader_cstr(void **state)
{
    (void) state;
    static const uint8_t in[] = { 'u', 's', 'e', 'r', 0, 0, 'x', 'y' };
    struct proto_reader r;
    const char *s = NULL;
    size_t len = 99;
    proto_reader_init(&r, in, sizeof(in));
    assert_int_equal(proto_reader_cstr(&r, &s, &len), ST_OK);
    assert_string_equal(s, "user");
    assert_ptr_equal(s, (const char *) in);
    assert_int_equal(len, 4);
    assert_int_equal(proto_reader_cstr(&r, &s, NULL), ST_OK); /* empty string, len optional */
    assert_string_equal(s, "");
    /* "xy" has no NUL before the end: unterminated. */
    s = NULL;
    assert_int_equal(proto_reader_cstr(&r, &s, &len), ST_INCOMPLETE);
    assert_null(s);
    assert_true(r.failed);
    assert_int_equal(proto_reader_end(&r), ST_DECLINED);

    /* A NUL just past the reader's length is not found: the search is bounded by len. */
    static const uint8_t in2[] = { 'a', 'b', 0 };
    proto_reader_init(&r, in2, 2);
    assert_int_equal(proto_reader_cstr(&r, &s, &len), ST_INCOMPLETE);
    proto_reader_init(&r, in2, 0);
    assert_int_equal(proto_reader_cstr(&r, &s, &len), ST_INCOMPLETE);
}

static void
test_reader_end_empty(void **state)
{
    (void) state;
    struct proto_reader r;
    proto_reader_init(&r, NULL, 0);
    assert_int_equal(proto_reader_left(&r), 0);
    assert_int_equal(proto_reader_end(&r), ST_OK);
}

/* ---- builder ---- */

static void
test_builder_typed(void **state)
{
    (void) state;
    uint8_t mem[64];
    struct proto_builder b;
    proto_builder_init_fixed(&b, mem, sizeof(mem));
    proto_builder_begin(&b, 'T');
    proto_builder_u8(&b, 0x01);
    proto_builder_u16(&b, 0x0203);
    proto_builder_u32(&b, 0x04050607);
    proto_builder_bytes(&b, "ab", 2);
    proto_builder_cstr(&b, "xy");
    proto_builder_end(&b);
    static const uint8_t want[] = { 'T',  0,    0,    0,   16,  0x01, 0x02, 0x03, 0x04,
                                    0x05, 0x06, 0x07, 'a', 'b', 'x',  'y',  0 };
    assert_false(proto_builder_failed(&b));
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(mem, want, sizeof(want));
    proto_builder_fini(&b); /* no-op on caller memory */
}

static void
test_builder_untyped_and_sequence(void **state)
{
    (void) state;
    uint8_t mem[64];
    struct proto_builder b;
    proto_builder_init_fixed(&b, mem, sizeof(mem));
    /* SSLRequest: untyped, length 8, code 80877103 = 0x04d2162f. */
    proto_builder_begin(&b, 0);
    proto_builder_u32(&b, 80877103u);
    proto_builder_end(&b);
    /* Followed by a Sync: two messages in one buffer, each length patched on its own. */
    proto_builder_begin(&b, 'S');
    proto_builder_end(&b);
    static const uint8_t want[] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f, 'S', 0, 0, 0, 4 };
    assert_false(proto_builder_failed(&b));
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(mem, want, sizeof(want));
}

static void
test_builder_fixed_overflow(void **state)
{
    (void) state;
    uint8_t mem[8];
    struct proto_builder b;
    memset(mem, 0xee, sizeof(mem));
    proto_builder_init_fixed(&b, mem, 7);
    proto_builder_begin(&b, 'Q');
    proto_builder_cstr(&b, "SELECT 1"); /* does not fit */
    proto_builder_u8(&b, 0);            /* would fit, but failure is sticky */
    proto_builder_end(&b);
    assert_true(proto_builder_failed(&b));
    assert_int_equal(mem[7], 0xee); /* never wrote past cap */
    assert_int_equal(b.len, 5);     /* the header, nothing after the failing put */

    /* Reset clears the failure and keeps the memory. */
    proto_builder_reset(&b);
    assert_false(proto_builder_failed(&b));
    assert_int_equal(b.len, 0);
    proto_builder_begin(&b, 'H');
    proto_builder_end(&b);
    static const uint8_t want[] = { 'H', 0, 0, 0, 4 };
    assert_false(proto_builder_failed(&b));
    assert_memory_equal(mem, want, sizeof(want));

    /* A header that does not fit fails at begin; end must not patch anything. */
    proto_builder_init_fixed(&b, mem, 3);
    proto_builder_begin(&b, 'Z');
    proto_builder_u8(&b, 'I');
    proto_builder_end(&b);
    assert_true(proto_builder_failed(&b));

    /* Exactly full is not a failure. */
    proto_builder_init_fixed(&b, mem, 6);
    proto_builder_begin(&b, 'Z');
    proto_builder_u8(&b, 'I');
    proto_builder_end(&b);
    assert_false(proto_builder_failed(&b));
    static const uint8_t z[] = { 'Z', 0, 0, 0, 5, 'I' };
    assert_memory_equal(mem, z, sizeof(z));
}

static void
test_builder_dynamic_grows(void **state)
{
    (void) state;
    struct proto_builder b;
    char big[1000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    proto_builder_init_dynamic(&b);
    proto_builder_begin(&b, 'Q');
    proto_builder_cstr(&b, big);
    proto_builder_end(&b);
    assert_false(proto_builder_failed(&b));
    assert_int_equal(b.len, 1 + 4 + 1000);
    static const uint8_t hdr[] = { 'Q', 0, 0, 0x03, 0xec }; /* 4 + 1000 = 1004 */
    assert_memory_equal(b.data, hdr, sizeof(hdr));
    assert_int_equal(b.data[5], 'q');
    assert_int_equal(b.data[b.len - 1], 0);
    assert_true(b.cap >= b.len);

    proto_builder_reset(&b);
    assert_int_equal(b.len, 0);
    assert_non_null(b.data);
    proto_builder_begin(&b, 'X');
    proto_builder_end(&b);
    static const uint8_t x[] = { 'X', 0, 0, 0, 4 };
    assert_int_equal(b.len, sizeof(x));
    assert_memory_equal(b.data, x, sizeof(x));
    proto_builder_fini(&b);
    assert_null(b.data);
    proto_builder_fini(&b); /* twice is harmless */
}

static void
test_builder_roundtrip(void **state)
{
    (void) state;
    struct proto_builder b;
    struct proto_header h;
    struct proto_reader r;
    uint32_t u32;
    uint16_t u16;
    const char *s;
    proto_builder_init_dynamic(&b);
    proto_builder_begin(&b, 'D');
    proto_builder_u16(&b, 1);
    proto_builder_u32(&b, 5);
    proto_builder_cstr(&b, "hello");
    proto_builder_end(&b);
    assert_false(proto_builder_failed(&b));
    assert_int_equal(proto_header_read(b.data, b.len, PROTO_MAX_MSG_LEN, &h), ST_OK);
    assert_int_equal(proto_header_total(&h), b.len);
    proto_reader_init(&r, b.data + PROTO_HEADER_LEN, h.len - 4);
    assert_int_equal(proto_reader_u16(&r, &u16), ST_OK);
    assert_int_equal(proto_reader_u32(&r, &u32), ST_OK);
    assert_int_equal(proto_reader_cstr(&r, &s, NULL), ST_OK);
    assert_int_equal(u16, 1);
    assert_int_equal(u32, 5);
    assert_string_equal(s, "hello");
    assert_int_equal(proto_reader_end(&r), ST_OK);
    proto_builder_fini(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_valid),
        cmocka_unit_test(test_header_minimal),
        cmocka_unit_test(test_header_truncated),
        cmocka_unit_test(test_header_bad_length),
        cmocka_unit_test(test_frontend_types),
        cmocka_unit_test(test_backend_types),
        cmocka_unit_test(test_reader_ints),
        cmocka_unit_test(test_reader_truncated),
        cmocka_unit_test(test_reader_bytes),
        cmocka_unit_test(test_reader_cstr),
        cmocka_unit_test(test_reader_end_empty),
        cmocka_unit_test(test_builder_typed),
        cmocka_unit_test(test_builder_untyped_and_sequence),
        cmocka_unit_test(test_builder_fixed_overflow),
        cmocka_unit_test(test_builder_dynamic_grows),
        cmocka_unit_test(test_builder_roundtrip),
    };
    return cmocka_run_group_tests_name("protocol_wire", tests, NULL, NULL);
}
