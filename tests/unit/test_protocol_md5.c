/*
 * test_protocol_md5.c - unit tests for protocol/md5.c: the stored secret and the salted answer
 * to AuthenticationMD5Password, against digests computed outside pgmux with md5sum and Python's
 * hashlib, and the shape check for stored secrets. Single-threaded.
 *
 * Reference: PostgreSQL 15 documentation, 21.5 "Password Authentication" (md5), 55.7
 * "Message Formats" (AuthenticationMD5Password).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/md5.h"

/* printf '%s' penciluser | md5sum */
#define PENCIL_USER "md520c46e3762c864548e296b33c3406aa9"
/* hashlib.md5(b"20c46e3762c864548e296b33c3406aa9" + bytes([1, 2, 3, 4])).hexdigest() */
#define PENCIL_USER_SALTED "md54376eb6913b38f9aaff38dc7cf19ca76"

static void
test_hash_password(void **state)
{
    (void) state;
    char out[PROTO_MD5_LEN + 1];
    memset(out, 'x', sizeof(out));
    proto_md5_hash_password("pencil", "user", out);
    assert_string_equal(out, PENCIL_USER);
    assert_int_equal(strlen(out), PROTO_MD5_LEN);
    /* printf '%s' '' | md5sum: the empty password and user still hash. */
    proto_md5_hash_password("", "", out);
    assert_string_equal(out, "md5d41d8cd98f00b204e9800998ecf8427e");
}

static void
test_salt(void **state)
{
    (void) state;
    static const uint8_t salt[4] = { 1, 2, 3, 4 };
    char out[PROTO_MD5_LEN + 1];
    proto_md5_salt(PENCIL_USER, salt, out);
    assert_string_equal(out, PENCIL_USER_SALTED);
    /* A different salt gives a different answer. */
    static const uint8_t salt2[4] = { 1, 2, 3, 5 };
    proto_md5_salt(PENCIL_USER, salt2, out);
    assert_string_not_equal(out, PENCIL_USER_SALTED);
    /* A stored value of the wrong shape fails closed: empty output matches nothing. */
    proto_md5_salt("pencil", salt, out);
    assert_string_equal(out, "");
}

static void
test_is_secret(void **state)
{
    (void) state;
    assert_true(proto_md5_is_secret(PENCIL_USER));
    assert_false(proto_md5_is_secret(""));
    assert_false(proto_md5_is_secret("md5"));
    assert_false(proto_md5_is_secret("pencil"));
    assert_false(proto_md5_is_secret("md520c46e3762c864548e296b33c3406aa"));   /* 31 digits */
    assert_false(proto_md5_is_secret("md520c46e3762c864548e296b33c3406aa90")); /* 33 digits */
    assert_false(proto_md5_is_secret("md520C46E3762C864548E296B33C3406AA9"));  /* uppercase */
    assert_false(proto_md5_is_secret("md520c46e3762c864548e296b33c3406aag"));
    assert_false(proto_md5_is_secret("MD520c46e3762c864548e296b33c3406aa9"));
    assert_false(proto_md5_is_secret("SCRAM-SHA-256$4096:abc"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_password),
        cmocka_unit_test(test_salt),
        cmocka_unit_test(test_is_secret),
    };
    return cmocka_run_group_tests_name("protocol_md5", tests, NULL, NULL);
}
