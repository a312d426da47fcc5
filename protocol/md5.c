/*
 * md5.c - PostgreSQL's md5 password scheme: the stored secret "md5" + hex(md5(password || user))
 * and the salted answer to AuthenticationMD5Password. See md5.h.
 *
 * Does not: compare secrets (the caller does, with CRYPTO_memcmp), or recommend md5: it exists
 * because servers and auth files still use it. MD5 comes from OpenSSL's EVP interface; when
 * the digest is unavailable (an OpenSSL configured for FIPS only) the output is the empty
 * string, which never equals a secret, so authentication fails closed.
 *
 * Thread: pure; any thread.
 *
 * Reference: PostgreSQL 15 documentation, 21.5 "Password Authentication" (md5) and 55.7
 * "Message Formats" (AuthenticationMD5Password, PasswordMessage); the computation follows
 * pg_md5_encrypt in src/common/md5_common.c.
 */
#include "protocol/md5.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "protocol/digest.h"

#define MD5_HEX_LEN 32

/* out = "md5" + hex(md5(a || b)), NUL-terminated; "" when OpenSSL fails. */
static void
md5_hex2(const void *a, size_t a_len, const void *b, size_t b_len, char out[PROTO_MD5_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    EVP_MD_CTX *ctx = proto_digest_begin(PROTO_DIGEST_MD5);
    bool ok = ctx && EVP_DigestUpdate(ctx, a, a_len) == 1 && EVP_DigestUpdate(ctx, b, b_len) == 1 &&
              EVP_DigestFinal_ex(ctx, digest, &digest_len) == 1 && digest_len == 16;
    if (!ok) {
        out[0] = '\0';
        return;
    }
    memcpy(out, "md5", 3);
    for (unsigned int i = 0; i < 16; i++) {
        out[3 + 2 * i] = hex[digest[i] >> 4];
        out[3 + 2 * i + 1] = hex[digest[i] & 0x0f];
    }
    out[PROTO_MD5_LEN] = '\0';
    OPENSSL_cleanse(digest, sizeof(digest));
}

void
proto_md5_hash_password(const char *password, const char *user, char out[PROTO_MD5_LEN + 1])
{
    md5_hex2(password, strlen(password), user, strlen(user), out);
}

void
proto_md5_salt(const char *stored, const uint8_t salt[4], char out[PROTO_MD5_LEN + 1])
{
    /* Only the 32 hex digits are hashed, not the "md5" prefix (pg_md5_encrypt is called with
     * shadow_pass + strlen("md5")). A stored value of the wrong shape fails closed. */
    if (!proto_md5_is_secret(stored)) {
        out[0] = '\0';
        return;
    }
    md5_hex2(stored + 3, MD5_HEX_LEN, salt, 4, out);
}

bool
proto_md5_is_secret(const char *s)
{
    /* Same test as PostgreSQL's get_password_type: length, prefix, lowercase hex digits. A
     * table, because a login asks this up to three times (half the instructions of the two
     * range tests). */
    static const bool is_hex[256] = {
        ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
        ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    };
    if (s[0] != 'm' || s[1] != 'd' || s[2] != '5') {
        return false;
    }
    for (size_t i = 3; i < PROTO_MD5_LEN; i++) {
        if (!is_hex[(unsigned char) s[i]]) { /* a NUL is not hex: no read past a short string */
            return false;
        }
    }
    return s[PROTO_MD5_LEN] == '\0';
}
