/*
 * md5.c - PostgreSQL's md5 password scheme: the stored secret "md5" + hex(md5(password || user))
 * and the salted answer to AuthenticationMD5Password. See md5.h.
 *
 * Does not: compare secrets (the caller does, with CRYPTO_memcmp), or recommend md5: it exists
 * because servers and auth files still use it.
 *
 * MD5 itself is computed here (RFC 1321), not through OpenSSL's EVP interface: OpenSSL 3.0
 * builds and frees a provider context at every EVP_DigestInit_ex2, about 1,200 instructions and
 * two allocations per hash, and an md5 login hashes once or twice. The unit test checks it
 * against OpenSSL's MD5 on every length across several blocks. OpenSSL still decides whether
 * MD5 may be used: when its default provider has none (configured for FIPS only) the output is
 * the empty string, which never equals a secret, so authentication fails closed, as before.
 *
 * Thread: pure; any thread.
 *
 * Reference: PostgreSQL 15 documentation, 21.5 "Password Authentication" (md5) and 55.7
 * "Message Formats" (AuthenticationMD5Password, PasswordMessage); the computation follows
 * pg_md5_encrypt in src/common/md5_common.c.
 */
#include "protocol/md5.h"

#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>

#include "protocol/digest.h"

#define MD5_HEX_LEN 32

struct md5 {
    uint32_t h[4];
    uint64_t len; /* bytes hashed so far */
    uint8_t buf[64];
};

static const uint32_t md5_t[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

static inline uint32_t
md5_rotl(uint32_t x, int s)
{
    return (x << s) | (x >> (32 - s));
}

#define MD5_F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MD5_G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define MD5_H(x, y, z) ((x) ^ (y) ^ (z))
#define MD5_I(x, y, z) ((y) ^ ((x) | ~(z)))
#define MD5_STEP(f, a, b, c, d, k, i, s) \
    ((a) = (b) + md5_rotl((a) + f((b), (c), (d)) + x[k] + md5_t[i], (s)))

/* Written out step by step, so that every index, constant and shift is an immediate: as a loop
 * over the 64 steps, GCC at -O2 spends about twice the instructions. */
static void
md5_block(uint32_t h[4], const uint8_t *p)
{
    uint32_t x[16];
    memcpy(x, p, sizeof(x));
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    for (int i = 0; i < 16; i++) {
        x[i] = __builtin_bswap32(x[i]);
    }
#endif
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    MD5_STEP(MD5_F, a, b, c, d, 0, 0, 7);
    MD5_STEP(MD5_F, d, a, b, c, 1, 1, 12);
    MD5_STEP(MD5_F, c, d, a, b, 2, 2, 17);
    MD5_STEP(MD5_F, b, c, d, a, 3, 3, 22);
    MD5_STEP(MD5_F, a, b, c, d, 4, 4, 7);
    MD5_STEP(MD5_F, d, a, b, c, 5, 5, 12);
    MD5_STEP(MD5_F, c, d, a, b, 6, 6, 17);
    MD5_STEP(MD5_F, b, c, d, a, 7, 7, 22);
    MD5_STEP(MD5_F, a, b, c, d, 8, 8, 7);
    MD5_STEP(MD5_F, d, a, b, c, 9, 9, 12);
    MD5_STEP(MD5_F, c, d, a, b, 10, 10, 17);
    MD5_STEP(MD5_F, b, c, d, a, 11, 11, 22);
    MD5_STEP(MD5_F, a, b, c, d, 12, 12, 7);
    MD5_STEP(MD5_F, d, a, b, c, 13, 13, 12);
    MD5_STEP(MD5_F, c, d, a, b, 14, 14, 17);
    MD5_STEP(MD5_F, b, c, d, a, 15, 15, 22);
    MD5_STEP(MD5_G, a, b, c, d, 1, 16, 5);
    MD5_STEP(MD5_G, d, a, b, c, 6, 17, 9);
    MD5_STEP(MD5_G, c, d, a, b, 11, 18, 14);
    MD5_STEP(MD5_G, b, c, d, a, 0, 19, 20);
    MD5_STEP(MD5_G, a, b, c, d, 5, 20, 5);
    MD5_STEP(MD5_G, d, a, b, c, 10, 21, 9);
    MD5_STEP(MD5_G, c, d, a, b, 15, 22, 14);
    MD5_STEP(MD5_G, b, c, d, a, 4, 23, 20);
    MD5_STEP(MD5_G, a, b, c, d, 9, 24, 5);
    MD5_STEP(MD5_G, d, a, b, c, 14, 25, 9);
    MD5_STEP(MD5_G, c, d, a, b, 3, 26, 14);
    MD5_STEP(MD5_G, b, c, d, a, 8, 27, 20);
    MD5_STEP(MD5_G, a, b, c, d, 13, 28, 5);
    MD5_STEP(MD5_G, d, a, b, c, 2, 29, 9);
    MD5_STEP(MD5_G, c, d, a, b, 7, 30, 14);
    MD5_STEP(MD5_G, b, c, d, a, 12, 31, 20);
    MD5_STEP(MD5_H, a, b, c, d, 5, 32, 4);
    MD5_STEP(MD5_H, d, a, b, c, 8, 33, 11);
    MD5_STEP(MD5_H, c, d, a, b, 11, 34, 16);
    MD5_STEP(MD5_H, b, c, d, a, 14, 35, 23);
    MD5_STEP(MD5_H, a, b, c, d, 1, 36, 4);
    MD5_STEP(MD5_H, d, a, b, c, 4, 37, 11);
    MD5_STEP(MD5_H, c, d, a, b, 7, 38, 16);
    MD5_STEP(MD5_H, b, c, d, a, 10, 39, 23);
    MD5_STEP(MD5_H, a, b, c, d, 13, 40, 4);
    MD5_STEP(MD5_H, d, a, b, c, 0, 41, 11);
    MD5_STEP(MD5_H, c, d, a, b, 3, 42, 16);
    MD5_STEP(MD5_H, b, c, d, a, 6, 43, 23);
    MD5_STEP(MD5_H, a, b, c, d, 9, 44, 4);
    MD5_STEP(MD5_H, d, a, b, c, 12, 45, 11);
    MD5_STEP(MD5_H, c, d, a, b, 15, 46, 16);
    MD5_STEP(MD5_H, b, c, d, a, 2, 47, 23);
    MD5_STEP(MD5_I, a, b, c, d, 0, 48, 6);
    MD5_STEP(MD5_I, d, a, b, c, 7, 49, 10);
    MD5_STEP(MD5_I, c, d, a, b, 14, 50, 15);
    MD5_STEP(MD5_I, b, c, d, a, 5, 51, 21);
    MD5_STEP(MD5_I, a, b, c, d, 12, 52, 6);
    MD5_STEP(MD5_I, d, a, b, c, 3, 53, 10);
    MD5_STEP(MD5_I, c, d, a, b, 10, 54, 15);
    MD5_STEP(MD5_I, b, c, d, a, 1, 55, 21);
    MD5_STEP(MD5_I, a, b, c, d, 8, 56, 6);
    MD5_STEP(MD5_I, d, a, b, c, 15, 57, 10);
    MD5_STEP(MD5_I, c, d, a, b, 6, 58, 15);
    MD5_STEP(MD5_I, b, c, d, a, 13, 59, 21);
    MD5_STEP(MD5_I, a, b, c, d, 4, 60, 6);
    MD5_STEP(MD5_I, d, a, b, c, 11, 61, 10);
    MD5_STEP(MD5_I, c, d, a, b, 2, 62, 15);
    MD5_STEP(MD5_I, b, c, d, a, 9, 63, 21);
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
}

static void
md5_init(struct md5 *m)
{
    m->h[0] = 0x67452301;
    m->h[1] = 0xefcdab89;
    m->h[2] = 0x98badcfe;
    m->h[3] = 0x10325476;
    m->len = 0;
}

static void
md5_update(struct md5 *m, const void *data, size_t n)
{
    const uint8_t *p = data;
    size_t used = (size_t) (m->len & 63);
    m->len += n;
    if (used > 0) {
        size_t take = n < 64 - used ? n : 64 - used;
        memcpy(m->buf + used, p, take);
        p += take;
        n -= take;
        if (used + take < 64) {
            return;
        }
        md5_block(m->h, m->buf);
    }
    for (; n >= 64; p += 64, n -= 64) {
        md5_block(m->h, p);
    }
    memcpy(m->buf, p, n);
}

static void
md5_final(struct md5 *m, uint8_t out[16])
{
    uint64_t bits = m->len * 8;
    size_t used = (size_t) (m->len & 63);
    m->buf[used++] = 0x80;
    if (used > 56) {
        memset(m->buf + used, 0, 64 - used);
        md5_block(m->h, m->buf);
        used = 0;
    }
    memset(m->buf + used, 0, 56 - used);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(m->buf + 56, &bits, 8);
    md5_block(m->h, m->buf);
    memcpy(out, m->h, 16);
#else
    for (int i = 0; i < 8; i++) {
        m->buf[56 + i] = (uint8_t) (bits >> (8 * i));
    }
    md5_block(m->h, m->buf);
    for (int i = 0; i < 16; i++) {
        out[i] = (uint8_t) (m->h[i / 4] >> (8 * (i % 4)));
    }
#endif
}

/* out = "md5" + hex(md5(a || b)), NUL-terminated; "" where OpenSSL offers no MD5. */
static void
md5_hex2(const void *a, size_t a_len, const void *b, size_t b_len, char out[PROTO_MD5_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    if (!proto_digest_md(PROTO_DIGEST_MD5)) {
        out[0] = '\0';
        return;
    }
    struct md5 m;
    uint8_t digest[16];
    md5_init(&m);
    md5_update(&m, a, a_len);
    md5_update(&m, b, b_len);
    md5_final(&m, digest);
    memcpy(out, "md5", 3);
    for (unsigned int i = 0; i < 16; i++) {
        out[3 + 2 * i] = hex[digest[i] >> 4];
        out[3 + 2 * i + 1] = hex[digest[i] & 0x0f];
    }
    out[PROTO_MD5_LEN] = '\0';
    /* The input was a password or a secret: its last block stays in m.buf. */
    OPENSSL_cleanse(&m, sizeof(m));
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
