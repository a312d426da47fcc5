/*
 * scram.c - SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (tls-server-end-point), both sides, as
 * PostgreSQL speaks them.
 * See scram.h.
 *
 * Does not: send or receive anything (the SASL payloads travel in messages.c's
 * SASLInitialResponse/SASLResponse and AuthenticationSASLContinue/Final), look up users or
 * secrets, log, or apply SASLprep. PostgreSQL SASLpreps passwords; for ASCII passwords that is
 * the identity, and for others PostgreSQL falls back to the raw bytes when the password is not
 * valid UTF-8 or has prohibited characters. TODO(pgmux): vendor PostgreSQL's saslprep into
 * protocol/vendor/ (CONVENTIONS 9.8) so non-ASCII passwords that normalize differently work.
 *
 * Messages are copied into a bounded, NUL-terminated local buffer after checking for embedded
 * NULs, so the attribute parsing below works on C strings of known length (CONVENTIONS 3.3.1).
 *
 * Secrets are compared with CRYPTO_memcmp and wiped with OPENSSL_cleanse (CONVENTIONS 3.4.4).
 *
 * Thread: pure apart from OpenSSL's RNG (which is thread-safe); any thread, on objects the
 * caller owns.
 *
 * Reference: PostgreSQL 15 documentation, 55.3 "SASL Authentication" (55.3.1 "SCRAM-SHA-256
 * Authentication"); RFC 5802 section 3 (the algorithm) and 7 (the message grammar); RFC 7677
 * (SHA-256 and its test vector). The checks follow src/backend/libpq/auth-scram.c (server) and
 * src/interfaces/libpq/fe-auth-scram.c (client).
 */
#include "protocol/scram.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "protocol/digest.h"

#define SECRET_PREFIX "SCRAM-SHA-256$"

/* ---- helpers: errors, base64, hashes ---- */

static enum status
scram_fail(struct proto_err *err, enum status st, const char *text)
{
    if (err) {
        snprintf(err->text, sizeof(err->text), "%s", text);
    }
    return st;
}

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Encoded length of n bytes, without the NUL; a macro so it can size arrays. */
#define B64_LEN(n) (((n) + 2) / 3 * 4)

/* Encode n bytes into dst, which has room for B64_LEN(n) + 1; NUL-terminates; returns length. */
static size_t
b64_encode(const uint8_t *src, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t) src[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t) src[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= src[i + 2];
        }
        dst[o++] = b64_chars[(v >> 18) & 63];
        dst[o++] = b64_chars[(v >> 12) & 63];
        dst[o++] = i + 1 < n ? b64_chars[(v >> 6) & 63] : '=';
        dst[o++] = i + 2 < n ? b64_chars[v & 63] : '=';
    }
    dst[o] = '\0';
    return o;
}

static int
b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

/*
 * Strict decode of src[0..n): padded, whole quads, '=' only as the last one or two characters
 * (RFC 5802 section 7 uses RFC 4648 base64). Every client we know of pads; accepting unpadded
 * or whitespace-broken input would only widen what an attacker can feed us.
 */
static bool
b64_decode(const char *src, size_t n, uint8_t *dst, size_t cap, size_t *out_len)
{
    if (n % 4 != 0) {
        return false;
    }
    size_t pad = 0;
    if (n >= 4 && src[n - 1] == '=') {
        pad = src[n - 2] == '=' ? 2 : 1;
    }
    size_t len = n / 4 * 3 - pad;
    if (len > cap) {
        return false;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        for (size_t k = 0; k < 4; k++) {
            int d;
            if (i + k >= n - pad) {
                d = 0; /* a padding position */
            } else if ((d = b64_value(src[i + k])) < 0) {
                return false;
            }
            v = (v << 6) | (uint32_t) d;
        }
        uint8_t bytes[3] = { (uint8_t) (v >> 16), (uint8_t) (v >> 8), (uint8_t) v };
        for (size_t k = 0; k < 3 && o < len; k++) {
            dst[o++] = bytes[k];
        }
    }
    *out_len = len;
    return true;
}

/* out = SHA-256(a || b). On the thread's context fetched once (protocol/digest.h): OpenSSL 3
 * looks EVP_sha256() up in the provider tables at every EVP_DigestInit, and its one-shot
 * HMAC() also builds a MAC context per call, together ten times the cost of the hashing in a
 * SCRAM login. Fails when this OpenSSL cannot provide SHA-256. */
static bool
sha256_2(const void *a, size_t a_len, const void *b, size_t b_len, uint8_t out[PROTO_SCRAM_KEY_LEN])
{
    unsigned int out_len = 0;
    EVP_MD_CTX *ctx = proto_digest_begin(PROTO_DIGEST_SHA256);
    return ctx && EVP_DigestUpdate(ctx, a, a_len) == 1 &&
           (b_len == 0 || EVP_DigestUpdate(ctx, b, b_len) == 1) &&
           EVP_DigestFinal_ex(ctx, out, &out_len) == 1 && out_len == PROTO_SCRAM_KEY_LEN;
}

/* HMAC-SHA-256 as RFC 2104 defines it, over the digest fetched once. */
static bool
hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
            uint8_t out[PROTO_SCRAM_KEY_LEN])
{
    enum {
        BLOCK = 64
    };
    uint8_t k[BLOCK] = { 0 }, pad[BLOCK], inner[PROTO_SCRAM_KEY_LEN];
    bool ok = true;
    if (key_len > BLOCK) {
        ok = sha256_2(key, key_len, NULL, 0, k);
    } else {
        memcpy(k, key, key_len);
    }
    for (int i = 0; i < BLOCK; i++) {
        pad[i] = k[i] ^ 0x36;
    }
    ok = ok && sha256_2(pad, BLOCK, data, len, inner);
    for (int i = 0; i < BLOCK; i++) {
        pad[i] = k[i] ^ 0x5c;
    }
    ok = ok && sha256_2(pad, BLOCK, inner, sizeof(inner), out);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
    return ok;
}

static bool
sha256(const void *data, size_t len, uint8_t out[PROTO_SCRAM_KEY_LEN])
{
    return sha256_2(data, len, NULL, 0, out);
}

/* RFC 5802 nonce characters: printable ASCII except ','. */
static bool
nonce_valid(const char *s, size_t n)
{
    if (n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',') {
            return false;
        }
    }
    return true;
}

/* A fresh nonce: PROTO_SCRAM_NONCE_LEN random bytes in base64, into dst (cap bytes). */
static bool
nonce_make(char *dst, size_t cap)
{
    uint8_t raw[PROTO_SCRAM_NONCE_LEN];
    if (cap < B64_LEN(sizeof(raw)) + 1 || RAND_bytes(raw, (int) sizeof(raw)) != 1) {
        dst[0] = '\0';
        return false;
    }
    b64_encode(raw, sizeof(raw), dst);
    return true;
}

/* A fixed nonce for tests, or "" when it does not fit or has characters a nonce cannot. */
static void
nonce_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap);
    if (n >= cap || !nonce_valid(src, n)) {
        dst[0] = '\0';
        return;
    }
    memcpy(dst, src, n + 1);
}

/*
 * Copy a received message into buf (PROTO_SCRAM_MSG_MAX bytes) as a C string. Fails for
 * messages too long or carrying a NUL, which no SCRAM attribute may contain.
 */
static bool
msg_copy(char *buf, const uint8_t *msg, size_t len)
{
    if (len >= PROTO_SCRAM_MSG_MAX || memchr(msg, '\0', len) != NULL) {
        return false;
    }
    memcpy(buf, msg, len);
    buf[len] = '\0';
    return true;
}

/*
 * Read "<attr>=<value>" at *p; the value runs to the next ',' or the end. On success *p points
 * at that ',' or NUL, and the value is [*val, *val + *val_len).
 */
static bool
attr_read(const char **p, char attr, const char **val, size_t *val_len)
{
    const char *s = *p;
    if (s[0] != attr || s[1] != '=') {
        return false;
    }
    s += 2;
    const char *end = strchr(s, ',');
    if (!end) {
        end = s + strlen(s);
    }
    *val = s;
    *val_len = (size_t) (end - s);
    *p = end;
    return true;
}

/* Skip one ','; false when *p is elsewhere. */
static bool
comma_skip(const char **p)
{
    if (**p != ',') {
        return false;
    }
    (*p)++;
    return true;
}

/* Whether *p starts an extension attribute "x=..." (a letter, then '='). */
static bool
attr_any(const char *p)
{
    return ((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z')) && p[1] == '=';
}

/* Positive decimal int with no sign, spaces or overflow. */
static bool
parse_iterations(const char *s, size_t n, int *out)
{
    long v = 0;
    if (n == 0 || n > 10) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > INT_MAX) {
        return false;
    }
    *out = (int) v;
    return true;
}

/* Copy src[0..n) and a NUL to out (cap bytes); false when it does not fit. */
static bool
put_str(char *out, size_t cap, size_t *out_len, const char *src, size_t n)
{
    if (n >= cap) {
        return false;
    }
    memcpy(out, src, n);
    out[n] = '\0';
    *out_len = n;
    return true;
}

/* ---- secrets ---- */

bool
proto_scram_salted_password(const char *password, const uint8_t *salt, size_t salt_len,
                            int iterations, uint8_t out[PROTO_SCRAM_KEY_LEN])
{
    size_t pw_len = strlen(password);
    if (iterations < 1 || salt_len > INT_MAX || pw_len > INT_MAX) {
        return false;
    }
    return PKCS5_PBKDF2_HMAC(password, (int) pw_len, salt, (int) salt_len, iterations, EVP_sha256(),
                             PROTO_SCRAM_KEY_LEN, out) == 1;
}

/* RFC 5802 section 3: ClientKey, StoredKey and ServerKey from SaltedPassword. */
static bool
keys_from_salted(const uint8_t salted[PROTO_SCRAM_KEY_LEN], uint8_t client_key[PROTO_SCRAM_KEY_LEN],
                 uint8_t stored_key[PROTO_SCRAM_KEY_LEN], uint8_t server_key[PROTO_SCRAM_KEY_LEN])
{
    return hmac_sha256(salted, PROTO_SCRAM_KEY_LEN, "Client Key", 10, client_key) &&
           sha256(client_key, PROTO_SCRAM_KEY_LEN, stored_key) &&
           hmac_sha256(salted, PROTO_SCRAM_KEY_LEN, "Server Key", 10, server_key);
}

bool
proto_scram_secret_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                                 int iterations, struct proto_scram_secret *out)
{
    uint8_t salted[PROTO_SCRAM_KEY_LEN];
    uint8_t client_key[PROTO_SCRAM_KEY_LEN];
    bool ok = false;
    memset(out, 0, sizeof(*out));
    if (salt_len == 0 || salt_len > PROTO_SCRAM_MAX_SALT) {
        return false;
    }
    if (!proto_scram_salted_password(password, salt, salt_len, iterations, salted) ||
        !keys_from_salted(salted, client_key, out->stored_key, out->server_key)) {
        goto done;
    }
    out->iterations = iterations;
    memcpy(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    ok = true;
done:
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    if (!ok) {
        OPENSSL_cleanse(out, sizeof(*out));
    }
    return ok;
}

/* The stored form, as PostgreSQL's pg_authid.rolpassword holds it (parse_scram_secret). */
bool
proto_scram_secret_parse(const char *s, struct proto_scram_secret *out)
{
    struct proto_scram_secret sec;
    const char *p = s;
    const char *end;
    size_t n;
    memset(&sec, 0, sizeof(sec));

    if (strncmp(p, SECRET_PREFIX, strlen(SECRET_PREFIX)) != 0) {
        return false;
    }
    p += strlen(SECRET_PREFIX);
    if (!(end = strchr(p, ':')) || !parse_iterations(p, (size_t) (end - p), &sec.iterations)) {
        return false;
    }
    p = end + 1;
    if (!(end = strchr(p, '$')) ||
        !b64_decode(p, (size_t) (end - p), sec.salt, sizeof(sec.salt), &sec.salt_len) ||
        sec.salt_len == 0) {
        return false;
    }
    p = end + 1;
    if (!(end = strchr(p, ':')) ||
        !b64_decode(p, (size_t) (end - p), sec.stored_key, sizeof(sec.stored_key), &n) ||
        n != PROTO_SCRAM_KEY_LEN) {
        goto bad;
    }
    p = end + 1;
    if (!b64_decode(p, strlen(p), sec.server_key, sizeof(sec.server_key), &n) ||
        n != PROTO_SCRAM_KEY_LEN) {
        goto bad;
    }
    *out = sec;
    OPENSSL_cleanse(&sec, sizeof(sec));
    return true;
bad:
    OPENSSL_cleanse(&sec, sizeof(sec));
    return false;
}

bool
proto_scram_secret_format(const struct proto_scram_secret *secret, char *out, size_t cap)
{
    char salt[B64_LEN(PROTO_SCRAM_MAX_SALT) + 1];
    char stored[B64_LEN(PROTO_SCRAM_KEY_LEN) + 1];
    char server[B64_LEN(PROTO_SCRAM_KEY_LEN) + 1];
    if (secret->iterations < 1 || secret->salt_len == 0 ||
        secret->salt_len > PROTO_SCRAM_MAX_SALT) {
        return false;
    }
    b64_encode(secret->salt, secret->salt_len, salt);
    b64_encode(secret->stored_key, PROTO_SCRAM_KEY_LEN, stored);
    b64_encode(secret->server_key, PROTO_SCRAM_KEY_LEN, server);
    int n =
        snprintf(out, cap, SECRET_PREFIX "%d:%s$%s:%s", secret->iterations, salt, stored, server);
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(server, sizeof(server));
    return n > 0 && (size_t) n < cap;
}

/* ---- server side ---- */

void
proto_scram_server_init(struct proto_scram_server *s, const struct proto_scram_secret *secret,
                        const char *server_nonce)
{
    memset(s, 0, sizeof(*s));
    s->secret = *secret;
    /* s->nonce holds the server's part until client-first brings the client's. An empty one
     * (RNG failure, or a test nonce that cannot be one) makes server_first refuse. */
    if (server_nonce) {
        nonce_copy(s->nonce, sizeof(s->nonce), server_nonce);
    } else {
        (void) nonce_make(s->nonce, sizeof(s->nonce));
    }
}

void
proto_scram_server_init_random(struct proto_scram_server *s,
                               const struct proto_scram_secret *secret,
                               const uint8_t random[PROTO_SCRAM_NONCE_LEN])
{
    memset(s, 0, sizeof(*s));
    s->secret = *secret;
    _Static_assert(B64_LEN(PROTO_SCRAM_NONCE_LEN) < sizeof(s->nonce), "nonce room");
    b64_encode(random, PROTO_SCRAM_NONCE_LEN, s->nonce);
}

void
proto_scram_server_offer_plus(struct proto_scram_server *s, const uint8_t *data, size_t len)
{
    if (len == 0 || len > sizeof(s->cbind)) {
        return; /* nothing to bind to: SCRAM-SHA-256 alone */
    }
    memcpy(s->cbind, data, len);
    s->cbind_len = (uint8_t) len;
}

enum status
proto_scram_server_mechanism(struct proto_scram_server *s, const char *mechanism)
{
    if (strcmp(mechanism, "SCRAM-SHA-256") == 0) {
        s->is_plus = false;
        return ST_OK;
    }
    if (strcmp(mechanism, "SCRAM-SHA-256-PLUS") == 0 && s->cbind_len > 0) {
        s->is_plus = true;
        return ST_OK;
    }
    return ST_ECLIENT_PROTOCOL;
}

/*
 * client-first-message = gs2-header client-first-message-bare
 * gs2-header = gs2-cbind-flag "," [ authzid ] ","
 * client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
 * (RFC 5802 section 7).
 */
enum status
proto_scram_server_first(struct proto_scram_server *s, const uint8_t *msg, size_t len, char *out,
                         size_t cap, size_t *out_len, struct proto_err *err)
{
    char buf[PROTO_SCRAM_MSG_MAX];
    const char *p = buf;
    const char *val;
    size_t val_len;

    if (s->state != 0) {
        return scram_fail(err, ST_ECLIENT_PROTOCOL, "unexpected SCRAM client-first-message");
    }
    s->state = 2; /* anything but success below ends the exchange */
    if (s->nonce[0] == '\0') {
        return scram_fail(err, ST_EINTERNAL, "could not generate a SCRAM nonce");
    }
    if (!msg_copy(buf, msg, len)) {
        return scram_fail(err, ST_ECLIENT_PROTOCOL,
                          "malformed SCRAM message (too long or contains NUL)");
    }

    /* gs2-cbind-flag, checked as PostgreSQL checks it: "n" the client does not support
     * channel binding; "y" it does but thinks we do not, a downgrade where -PLUS was offered;
     * "p=type" it binds, which only SCRAM-SHA-256-PLUS may do, and it must. */
    switch (*p) {
    case 'n':
    case 'y':
        if (s->is_plus) {
            return scram_fail(err, ST_ECLIENT_PROTOCOL,
                              "the client selected SCRAM-SHA-256-PLUS, but the SCRAM message "
                              "does not include channel binding data");
        }
        if (*p == 'y' && s->cbind_len > 0) {
            return scram_fail(err, ST_ECLIENT_PROTOCOL,
                              "SCRAM channel binding negotiation error: the client supports "
                              "channel binding but thinks the server does not");
        }
        p++;
        break;
    case 'p':
        if (!s->is_plus) {
            return scram_fail(err, ST_ECLIENT_PROTOCOL,
                              "the client selected SCRAM-SHA-256 without channel binding, but "
                              "the SCRAM message includes channel binding data");
        }
        if (strncmp(p, "p=tls-server-end-point,", 23) != 0) {
            return scram_fail(err, ST_ECLIENT_PROTOCOL, "unsupported SCRAM channel-binding type");
        }
        p += 22;
        break;
    default:
        return scram_fail(err, ST_ECLIENT_PROTOCOL,
                          "malformed SCRAM message (unexpected channel-binding flag)");
    }
    if (!comma_skip(&p)) {
        return scram_fail(err, ST_ECLIENT_PROTOCOL,
                          "malformed SCRAM message (comma expected after channel-binding flag)");
    }
    if (*p == 'a') {
        return scram_fail(err, ST_ECLIENT_PROTOCOL,
                          "client uses authorization identity, but it is not supported");
    }
    if (!comma_skip(&p)) {
        return scram_fail(err, ST_ECLIENT_PROTOCOL,
                          "malformed SCRAM message (unexpected attribute in client-first)");
    }
    memcpy(s->gs2_header, buf, (size_t) (p - buf));
    s->gs2_header[p - buf] = '\0';

    const char *bare = p;
    if (*p == 'm') {
        return scram_fail(err, ST_ECLIENT_PROTOCOL,
                          "client requires an unsupported SCRAM extension");
    }
    /* The user name is ignored: PostgreSQL clients send "n=," and the startup packet's user is
     * the one being authenticated. */
    if (!attr_read(&p, 'n', &val, &val_len) || !comma_skip(&p)) {
        return scram_fail(err, ST_ECLIENT_PROTOCOL,
                          "malformed SCRAM message (user name attribute expected)");
    }
    if (!attr_read(&p, 'r', &val, &val_len) || !nonce_valid(val, val_len)) {
        return scram_fail(err, ST_ECLIENT_PROTOCOL,
                          "malformed SCRAM message (nonce attribute expected)");
    }
    /* Extensions after the nonce are allowed by the grammar and ignored, as PostgreSQL does. */
    while (*p) {
        const char *ext;
        size_t ext_len;
        if (!comma_skip(&p) || !attr_any(p) || !attr_read(&p, *p, &ext, &ext_len)) {
            return scram_fail(err, ST_ECLIENT_PROTOCOL,
                              "malformed SCRAM message (garbage at end of client-first)");
        }
    }

    size_t bare_len = strlen(bare);
    size_t snonce_len = strlen(s->nonce);
    if (val_len + snonce_len >= sizeof(s->nonce)) {
        return scram_fail(err, ST_ECLIENT_PROTOCOL, "malformed SCRAM message (nonce too long)");
    }
    memmove(s->nonce + val_len, s->nonce, snonce_len + 1);
    memcpy(s->nonce, val, val_len);
    memcpy(s->client_first_bare, bare, bare_len + 1);

    char salt[B64_LEN(PROTO_SCRAM_MAX_SALT) + 1];
    b64_encode(s->secret.salt, s->secret.salt_len, salt);
    int n = snprintf(s->server_first, sizeof(s->server_first), "r=%s,s=%s,i=%d", s->nonce, salt,
                     s->secret.iterations);
    if (n < 0 || (size_t) n >= sizeof(s->server_first)) {
        return scram_fail(err, ST_ECLIENT_PROTOCOL, "malformed SCRAM message (nonce too long)");
    }
    if (!put_str(out, cap, out_len, s->server_first, (size_t) n)) {
        return scram_fail(err, ST_EINTERNAL, "SCRAM output buffer too small");
    }
    s->state = 1;
    return ST_OK;
}

/*
 * client-final-message = channel-binding "," nonce ["," extensions] "," proof
 * channel-binding = "c=" base64(gs2-header)   (RFC 5802 section 7)
 */
enum status
proto_scram_server_final(struct proto_scram_server *s, const uint8_t *msg, size_t len, char *out,
                         size_t cap, size_t *out_len, struct proto_err *err)
{
    char buf[PROTO_SCRAM_MSG_MAX];
    char auth_message[3 * PROTO_SCRAM_MSG_MAX];
    uint8_t cbind[32 + PROTO_SCRAM_CBIND_MAX];
    uint8_t proof[PROTO_SCRAM_KEY_LEN];
    uint8_t signature[PROTO_SCRAM_KEY_LEN];
    uint8_t client_key[PROTO_SCRAM_KEY_LEN];
    uint8_t stored[PROTO_SCRAM_KEY_LEN];
    char verifier[2 + B64_LEN(PROTO_SCRAM_KEY_LEN) + 1];
    const char *p = buf;
    const char *val;
    size_t val_len, n;
    enum status st;

    if (s->state != 1) {
        return scram_fail(err, ST_ECLIENT_PROTOCOL, "unexpected SCRAM client-final-message");
    }
    s->state = 2;
    if (!msg_copy(buf, msg, len)) {
        st = scram_fail(err, ST_ECLIENT_PROTOCOL,
                        "malformed SCRAM message (too long or contains NUL)");
        goto done;
    }

    /* The channel-binding attribute must repeat the gs2 header of client-first (without it a
     * man in the middle could downgrade "y" to "n" unnoticed), followed, with -PLUS, by the
     * hash of the certificate this TLS session presented: a client that bound to another
     * certificate (a proxy between it and us) is refused. */
    size_t gs2_len = strlen(s->gs2_header);
    size_t cb_len = s->is_plus ? s->cbind_len : 0;
    if (!attr_read(&p, 'c', &val, &val_len) ||
        !b64_decode(val, val_len, cbind, sizeof(cbind), &n) || n != gs2_len + cb_len ||
        memcmp(cbind, s->gs2_header, gs2_len) != 0 ||
        CRYPTO_memcmp(cbind + gs2_len, s->cbind, cb_len) != 0) {
        st = scram_fail(err, ST_ECLIENT_PROTOCOL,
                        "SCRAM channel binding check failed (unexpected c= attribute)");
        goto done;
    }
    if (!comma_skip(&p) || !attr_read(&p, 'r', &val, &val_len)) {
        st = scram_fail(err, ST_ECLIENT_PROTOCOL,
                        "malformed SCRAM message (nonce attribute expected)");
        goto done;
    }
    if (val_len != strlen(s->nonce) || memcmp(val, s->nonce, val_len) != 0) {
        st = scram_fail(err, ST_ECLIENT_PROTOCOL, "SCRAM nonce mismatch");
        goto done;
    }
    /* Skip extensions up to the proof, which must come last. */
    const char *proof_at = NULL;
    while (!proof_at) {
        const char *attr_start = p;
        if (!comma_skip(&p) || !attr_any(p)) {
            st = scram_fail(err, ST_ECLIENT_PROTOCOL,
                            "malformed SCRAM message (proof attribute expected)");
            goto done;
        }
        if (*p == 'p') {
            proof_at = attr_start;
        }
        if (!attr_read(&p, *p, &val, &val_len)) {
            st = scram_fail(err, ST_ECLIENT_PROTOCOL, "malformed SCRAM message");
            goto done;
        }
    }
    if (*p != '\0' || !b64_decode(val, val_len, proof, sizeof(proof), &n) ||
        n != PROTO_SCRAM_KEY_LEN) {
        st = scram_fail(err, ST_ECLIENT_PROTOCOL,
                        "malformed SCRAM message (malformed proof in client-final-message)");
        goto done;
    }

    /* AuthMessage = client-first-message-bare "," server-first-message ","
     *               client-final-message-without-proof */
    int am = snprintf(auth_message, sizeof(auth_message), "%s,%s,%.*s", s->client_first_bare,
                      s->server_first, (int) (proof_at - buf), buf);
    if (am < 0 || (size_t) am >= sizeof(auth_message)) {
        st = scram_fail(err, ST_ECLIENT_PROTOCOL, "malformed SCRAM message (too long)");
        goto done;
    }

    /* ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); right when H(ClientKey) is
     * StoredKey. */
    if (!hmac_sha256(s->secret.stored_key, PROTO_SCRAM_KEY_LEN, auth_message, (size_t) am,
                     signature)) {
        st = scram_fail(err, ST_EINTERNAL, "could not compute SCRAM client signature");
        goto done;
    }
    for (size_t i = 0; i < PROTO_SCRAM_KEY_LEN; i++) {
        client_key[i] = proof[i] ^ signature[i];
    }
    if (!sha256(client_key, PROTO_SCRAM_KEY_LEN, stored)) {
        st = scram_fail(err, ST_EINTERNAL, "could not hash SCRAM client key");
        goto done;
    }
    if (CRYPTO_memcmp(stored, s->secret.stored_key, PROTO_SCRAM_KEY_LEN) != 0) {
        st = scram_fail(err, ST_EAUTH, "SCRAM client proof does not match");
        goto done;
    }

    /* server-final-message = "v=" base64(HMAC(ServerKey, AuthMessage)) */
    if (!hmac_sha256(s->secret.server_key, PROTO_SCRAM_KEY_LEN, auth_message, (size_t) am,
                     signature)) {
        st = scram_fail(err, ST_EINTERNAL, "could not compute SCRAM server signature");
        goto done;
    }
    memcpy(verifier, "v=", 2);
    n = 2 + b64_encode(signature, PROTO_SCRAM_KEY_LEN, verifier + 2);
    if (!put_str(out, cap, out_len, verifier, n)) {
        st = scram_fail(err, ST_EINTERNAL, "SCRAM output buffer too small");
        goto done;
    }
    memcpy(s->client_key, client_key, PROTO_SCRAM_KEY_LEN);
    st = ST_OK;
done:
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(signature, sizeof(signature));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(auth_message, sizeof(auth_message));
    OPENSSL_cleanse(buf, sizeof(buf));
    return st;
}

void
proto_scram_server_fini(struct proto_scram_server *s)
{
    if (!s) {
        return;
    }
    OPENSSL_cleanse(s, sizeof(*s));
}

/* ---- client side ---- */

static void
client_nonce_init(struct proto_scram_client *c, const char *client_nonce)
{
    if (client_nonce) {
        nonce_copy(c->client_nonce, sizeof(c->client_nonce), client_nonce);
    } else {
        (void) nonce_make(c->client_nonce, sizeof(c->client_nonce));
    }
}

void
proto_scram_client_init_password(struct proto_scram_client *c, const char *password,
                                 const char *client_nonce)
{
    memset(c, 0, sizeof(*c));
    size_t n = strnlen(password, sizeof(c->password));
    /* A truncated password would fail later with a misleading "wrong password"; refuse it in
     * client_first instead (have_password stays false). */
    if (n < sizeof(c->password)) {
        memcpy(c->password, password, n + 1);
        c->have_password = true;
    }
    client_nonce_init(c, client_nonce);
}

void
proto_scram_client_init_keys(struct proto_scram_client *c,
                             const uint8_t client_key[PROTO_SCRAM_KEY_LEN],
                             const uint8_t server_key[PROTO_SCRAM_KEY_LEN],
                             const char *client_nonce)
{
    memset(c, 0, sizeof(*c));
    memcpy(c->client_key, client_key, PROTO_SCRAM_KEY_LEN);
    memcpy(c->server_key, server_key, PROTO_SCRAM_KEY_LEN);
    c->have_keys = true;
    client_nonce_init(c, client_nonce);
}

void
proto_scram_client_set_salted(struct proto_scram_client *c,
                              const uint8_t salted[PROTO_SCRAM_KEY_LEN], const uint8_t *salt,
                              size_t salt_len, int iterations)
{
    if (salt_len == 0 || salt_len > PROTO_SCRAM_MAX_SALT || iterations < 1) {
        c->have_salted = false;
        return;
    }
    memcpy(c->salted_password, salted, PROTO_SCRAM_KEY_LEN);
    memcpy(c->salted_salt, salt, salt_len);
    c->salted_salt_len = salt_len;
    c->salted_iterations = iterations;
    c->have_salted = true;
}

void
proto_scram_client_bind(struct proto_scram_client *c, const uint8_t *data, size_t len)
{
    if (data && len > 0 && len <= sizeof(c->cbind)) {
        memcpy(c->cbind, data, len);
        c->cbind_len = (uint8_t) len;
        strcpy(c->gs2_header, "p=tls-server-end-point,,");
    } else {
        c->cbind_len = 0;
        strcpy(c->gs2_header, "y,,");
    }
}

size_t
proto_scram_cert_end_point(const struct x509_st *cert, uint8_t *out)
{
    int md_nid;
    if (!cert || !OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, NULL)) {
        return 0;
    }
    const EVP_MD *md =
        md_nid == NID_md5 || md_nid == NID_sha1 ? EVP_sha256() : EVP_get_digestbynid(md_nid);
    unsigned int n = 0;
    if (!md || EVP_MD_get_size(md) > PROTO_SCRAM_CBIND_MAX || !X509_digest(cert, md, out, &n)) {
        return 0;
    }
    return n;
}

enum status
proto_scram_client_first(struct proto_scram_client *c, char *out, size_t cap, size_t *out_len)
{
    if (c->state != 0 || c->client_nonce[0] == '\0') {
        return ST_EINTERNAL;
    }
    if (!c->have_password && !c->have_keys) {
        return ST_ECONFIG;
    }
    if (c->gs2_header[0] == '\0') {
        strcpy(c->gs2_header, "n,,"); /* no TLS: nothing to bind to */
    }
    /* The user name is empty because PostgreSQL takes it from the startup packet (55.3.1). */
    int n =
        snprintf(c->client_first_bare, sizeof(c->client_first_bare), "n=,r=%s", c->client_nonce);
    size_t gl = strlen(c->gs2_header);
    if (n < 0 || (size_t) n >= sizeof(c->client_first_bare) || (size_t) n + gl >= cap) {
        return ST_EINTERNAL;
    }
    memcpy(out, c->gs2_header, gl);
    memcpy(out + gl, c->client_first_bare, (size_t) n + 1);
    *out_len = (size_t) n + gl;
    c->state = 1;
    return ST_OK;
}

/*
 * server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count
 * ["," extensions]   (RFC 5802 section 7). Like libpq we accept no extensions: PostgreSQL
 * sends none, and anything after i= is garbage.
 */
enum status
proto_scram_client_final(struct proto_scram_client *c, const uint8_t *msg, size_t len, char *out,
                         size_t cap, size_t *out_len, struct proto_err *err)
{
    char buf[PROTO_SCRAM_MSG_MAX];
    char without_proof[PROTO_SCRAM_MSG_MAX];
    uint8_t salt[PROTO_SCRAM_MAX_SALT];
    uint8_t stored[PROTO_SCRAM_KEY_LEN];
    uint8_t signature[PROTO_SCRAM_KEY_LEN];
    uint8_t proof[PROTO_SCRAM_KEY_LEN];
    char proof_b64[B64_LEN(PROTO_SCRAM_KEY_LEN) + 1];
    const char *p = buf;
    const char *nonce, *salt_b64, *iter;
    size_t nonce_len, salt_b64_len, iter_len, salt_len;
    int iterations;
    enum status st;

    if (c->state != 1) {
        return scram_fail(err, ST_EINTERNAL, "SCRAM server-first-message out of order");
    }
    c->state = 3; /* anything but success below ends the exchange */
    if (!msg_copy(buf, msg, len) || !attr_read(&p, 'r', &nonce, &nonce_len) || !comma_skip(&p) ||
        !attr_read(&p, 's', &salt_b64, &salt_b64_len) || !comma_skip(&p) ||
        !attr_read(&p, 'i', &iter, &iter_len) || *p != '\0') {
        st = scram_fail(err, ST_ESERVER_PROTOCOL, "malformed SCRAM server-first-message");
        goto done;
    }
    size_t cn_len = strlen(c->client_nonce);
    if (nonce_len <= cn_len || memcmp(nonce, c->client_nonce, cn_len) != 0 ||
        !nonce_valid(nonce, nonce_len)) {
        st = scram_fail(err, ST_ESERVER_PROTOCOL,
                        "invalid SCRAM response (nonce does not extend ours)");
        goto done;
    }
    if (!b64_decode(salt_b64, salt_b64_len, salt, sizeof(salt), &salt_len) || salt_len == 0) {
        st = scram_fail(err, ST_ESERVER_PROTOCOL, "malformed SCRAM message (invalid salt)");
        goto done;
    }
    if (!parse_iterations(iter, iter_len, &iterations)) {
        st = scram_fail(err, ST_ESERVER_PROTOCOL,
                        "malformed SCRAM message (invalid iteration count)");
        goto done;
    }
    if (c->have_password && iterations > PROTO_SCRAM_MAX_ITERATIONS) {
        st = scram_fail(err, ST_ESERVER_PROTOCOL,
                        "server asked for more SCRAM iterations than pgmux will compute");
        goto done;
    }

    /* With a password: SaltedPassword (from the caller's cache when salt and iterations match,
     * since PBKDF2 is the expensive step, CONVENTIONS 6.10), then the keys. With recovered
     * keys: nothing to derive. */
    if (c->have_password) {
        if (!c->have_salted || c->salted_iterations != iterations ||
            c->salted_salt_len != salt_len || memcmp(c->salted_salt, salt, salt_len) != 0) {
            c->have_salted = false;
            if (!proto_scram_salted_password(c->password, salt, salt_len, iterations,
                                             c->salted_password)) {
                st = scram_fail(err, ST_EINTERNAL, "could not compute SCRAM salted password");
                goto done;
            }
            memcpy(c->salted_salt, salt, salt_len);
            c->salted_salt_len = salt_len;
            c->salted_iterations = iterations;
            c->have_salted = true;
        }
        if (!keys_from_salted(c->salted_password, c->client_key, stored, c->server_key)) {
            st = scram_fail(err, ST_EINTERNAL, "could not compute SCRAM keys");
            goto done;
        }
    } else if (c->have_keys) {
        if (!sha256(c->client_key, PROTO_SCRAM_KEY_LEN, stored)) {
            st = scram_fail(err, ST_EINTERNAL, "could not hash SCRAM client key");
            goto done;
        }
    } else {
        st = scram_fail(err, ST_ECONFIG, "no SCRAM password or keys");
        goto done;
    }

    /* client-final-message-without-proof: c= is base64 of the gs2 header and, when bound, the
     * binding data ("c=biws" for "n,,"). */
    uint8_t cb_raw[32 + PROTO_SCRAM_CBIND_MAX];
    char cb_b64[B64_LEN(sizeof(cb_raw)) + 1];
    size_t gl = strlen(c->gs2_header);
    memcpy(cb_raw, c->gs2_header, gl);
    memcpy(cb_raw + gl, c->cbind, c->cbind_len);
    (void) b64_encode(cb_raw, gl + c->cbind_len, cb_b64);
    int wp = snprintf(without_proof, sizeof(without_proof), "c=%s,r=%.*s", cb_b64, (int) nonce_len,
                      nonce);
    int am = snprintf(c->auth_message, sizeof(c->auth_message), "%s,%s,%s", c->client_first_bare,
                      buf, without_proof);
    if (wp < 0 || (size_t) wp >= sizeof(without_proof) || am < 0 ||
        (size_t) am >= sizeof(c->auth_message)) {
        st = scram_fail(err, ST_ESERVER_PROTOCOL, "malformed SCRAM message (nonce too long)");
        goto done;
    }
    /* ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage); the server must later show
     * HMAC(ServerKey, AuthMessage). */
    if (!hmac_sha256(stored, PROTO_SCRAM_KEY_LEN, c->auth_message, (size_t) am, signature) ||
        !hmac_sha256(c->server_key, PROTO_SCRAM_KEY_LEN, c->auth_message, (size_t) am,
                     c->expected_server_signature)) {
        st = scram_fail(err, ST_EINTERNAL, "could not compute SCRAM signatures");
        goto done;
    }
    for (size_t i = 0; i < PROTO_SCRAM_KEY_LEN; i++) {
        proof[i] = c->client_key[i] ^ signature[i];
    }
    b64_encode(proof, sizeof(proof), proof_b64);
    int n = snprintf(out, cap, "%s,p=%s", without_proof, proof_b64);
    if (n < 0 || (size_t) n >= cap) {
        st = scram_fail(err, ST_EINTERNAL, "SCRAM output buffer too small");
        goto done;
    }
    *out_len = (size_t) n;
    c->state = 2;
    st = ST_OK;
done:
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(signature, sizeof(signature));
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(proof_b64, sizeof(proof_b64));
    return st;
}

/* server-final-message = (server-error / verifier) ["," extensions]; like libpq we accept no
 * extensions. */
enum status
proto_scram_client_verify(struct proto_scram_client *c, const uint8_t *msg, size_t len,
                          struct proto_err *err)
{
    char buf[PROTO_SCRAM_MSG_MAX];
    uint8_t signature[PROTO_SCRAM_KEY_LEN];
    const char *p = buf;
    const char *val;
    size_t val_len, n;
    enum status st;

    if (c->state != 2) {
        return scram_fail(err, ST_EINTERNAL, "SCRAM server-final-message out of order");
    }
    c->state = 3;
    if (!msg_copy(buf, msg, len)) {
        return scram_fail(err, ST_ESERVER_PROTOCOL, "malformed SCRAM server-final-message");
    }
    if (attr_read(&p, 'e', &val, &val_len)) {
        if (err) {
            snprintf(err->text, sizeof(err->text), "SCRAM error from server: %.*s",
                     (int) (val_len > 100 ? 100 : val_len), val);
        }
        return ST_ESERVER_PROTOCOL;
    }
    if (!attr_read(&p, 'v', &val, &val_len) || *p != '\0' ||
        !b64_decode(val, val_len, signature, sizeof(signature), &n) || n != PROTO_SCRAM_KEY_LEN) {
        st = scram_fail(err, ST_ESERVER_PROTOCOL, "malformed SCRAM server-final-message");
        goto done;
    }
    if (CRYPTO_memcmp(signature, c->expected_server_signature, PROTO_SCRAM_KEY_LEN) != 0) {
        st = scram_fail(err, ST_EAUTH, "incorrect server signature");
        goto done;
    }
    st = ST_OK;
done:
    OPENSSL_cleanse(signature, sizeof(signature));
    return st;
}

void
proto_scram_client_fini(struct proto_scram_client *c)
{
    if (!c) {
        return;
    }
    OPENSSL_cleanse(c, sizeof(*c));
}
