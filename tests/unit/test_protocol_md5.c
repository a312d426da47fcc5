/*
 * test_protocol_md5.c - unit tests for protocol/md5.c: the stored secret and the salted answer
 * to AuthenticationMD5Password, against digests computed outside pgmux with md5sum and Python's
 * hashlib, the MD5 computation itself against OpenSSL's on every input length over several
 * blocks, and the shape check for stored secrets. Single-threaded.
 *
 * Reference: PostgreSQL 15 documentation, 21.5 "Password Authentication" (md5), 55.7
 * "Message Formats" (AuthenticationMD5Password).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

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

/* md5(password || user) for every split of inputs up to 300 bytes long (padding on either
 * side of the 56-byte mark, one to five blocks), against OpenSSL's MD5. */
static void
test_against_openssl(void **state)
{
    (void) state;
    char in[301];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(in) - 1; i++) {
        x = x * 1103515245 + 12345;
        in[i] = (char) (1 + (x >> 16) % 255); /* no NUL: the inputs are C strings */
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_non_null(ctx);
    for (size_t len = 0; len <= 300; len++) {
        for (size_t cut = 0; cut <= len; cut += len < 140 ? 1 : 37) {
            char pw[301], user[301];
            memcpy(pw, in, cut);
            pw[cut] = '\0';
            memcpy(user, in + cut, len - cut);
            user[len - cut] = '\0';
            unsigned char d[EVP_MAX_MD_SIZE];
            unsigned int dlen = 0;
            assert_int_equal(EVP_DigestInit_ex(ctx, EVP_md5(), NULL), 1);
            assert_int_equal(EVP_DigestUpdate(ctx, in, len), 1);
            assert_int_equal(EVP_DigestFinal_ex(ctx, d, &dlen), 1);
            char want[PROTO_MD5_LEN + 1] = "md5";
            for (unsigned int k = 0; k < dlen; k++) {
                snprintf(want + 3 + 2 * k, 3, "%02x", d[k]);
            }
            char out[PROTO_MD5_LEN + 1];
            proto_md5_hash_password(pw, user, out);
            assert_string_equal(out, want);
        }
    }
    EVP_MD_CTX_free(ctx);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_password),
        cmocka_unit_test(test_salt),
        cmocka_unit_test(test_against_openssl),
        cmocka_unit_test(test_is_secret),
    };
    return cmocka_run_group_tests_name("protocol_md5", tests, NULL, NULL);
}
