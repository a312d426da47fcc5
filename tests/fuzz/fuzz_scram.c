/*
 * fuzz_scram.c - libFuzzer target for SCRAM-SHA-256 message parsing (protocol/scram.h).
 *
 * Input layout: one mode byte, then up to three messages separated by '\n' (no SCRAM message
 * contains a newline; a message may still contain NUL and anything else).
 *   'C' client side with recovered keys (pgmux logging in to a server): client_first, then
 *       proto_scram_client_final on message 1 and proto_scram_client_verify on message 2.
 *   'P' client side with the plaintext password "pencil" and a SaltedPassword cached for
 *       RFC 7677's salt and 4096 iterations. A server picks the iteration count, and PBKDF2
 *       with up to INT_MAX rounds would only make the fuzzer time out, so message 1 goes to
 *       the client only when its last attribute is "i=" with at most four digits.
 *   anything else: the server side (pgmux authenticating a client) against RFC 7677's stored
 *       secret with the RFC's server nonce: proto_scram_server_first on message 1, then
 *       proto_scram_server_final on message 2. RFC 7677's own client messages pass, so the
 *       fuzzer starts from the success path. With '+' the server offers SCRAM-SHA-256-PLUS
 *       (binding data: 32 bytes of 0xab) and the client chose it; with '*' it is offered and
 *       the client chose SCRAM-SHA-256.
 * In every mode, each message and the whole input are also given to proto_scram_secret_parse;
 * a secret that parses must format and parse back to the same value.
 *
 * Seeds: tests/fuzz/corpus/scram/ (RFC 7677 section 3 and PostgreSQL's variants).
 * Single-threaded.
 */
#include "tests/fuzz/fuzz_common.h"

#include <openssl/evp.h>

#include "protocol/scram.h"

#define CNONCE "rOprNGfwEbeRWgbNEkqO"
#define SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define PENCIL_SECRET                                                                           \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:" \
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

static const uint8_t rfc_salt[16] = { 0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
                                      0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81 };
/* PBKDF2-HMAC-SHA-256("pencil", salt, 4096) */
static const uint8_t rfc_salted[32] = { 0xc4, 0xa4, 0x95, 0x10, 0x32, 0x3a, 0xb4, 0xf9,
                                        0x52, 0xca, 0xc1, 0xfa, 0x99, 0x44, 0x19, 0x39,
                                        0xe7, 0x8e, 0xa7, 0x4d, 0x6b, 0xe8, 0x1d, 0xdf,
                                        0x70, 0x96, 0xe8, 0x75, 0x13, 0xdc, 0x61, 0x5d };

struct piece {
    const uint8_t *p;
    size_t n;
};

static void
check_secret(const uint8_t *p, size_t n)
{
    char *s = fuzz_strdup(p, n);
    struct proto_scram_secret sec;
    if (proto_scram_secret_parse(s, &sec)) {
        FUZZ_CHECK(sec.iterations >= 1);
        FUZZ_CHECK(sec.salt_len >= 1 && sec.salt_len <= PROTO_SCRAM_MAX_SALT);
        char text[PROTO_SCRAM_SECRET_MAX];
        FUZZ_CHECK(proto_scram_secret_format(&sec, text, sizeof(text)));
        struct proto_scram_secret again;
        FUZZ_CHECK(proto_scram_secret_parse(text, &again));
        FUZZ_CHECK(again.iterations == sec.iterations && again.salt_len == sec.salt_len);
        FUZZ_CHECK(memcmp(again.salt, sec.salt, sec.salt_len) == 0);
        FUZZ_CHECK(memcmp(again.stored_key, sec.stored_key, PROTO_SCRAM_KEY_LEN) == 0);
        FUZZ_CHECK(memcmp(again.server_key, sec.server_key, PROTO_SCRAM_KEY_LEN) == 0);
    }
    free(s);
}

static void
run_server(const struct piece *m, int n_m, uint8_t mode)
{
    static struct proto_scram_secret secret;
    static int have_secret;
    if (!have_secret) {
        FUZZ_CHECK(proto_scram_secret_parse(PENCIL_SECRET, &secret));
        have_secret = 1;
    }
    struct proto_scram_server s;
    struct proto_err err;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len = 0;
    proto_scram_server_init(&s, &secret, SNONCE);
    if (mode == '+' || mode == '*') {
        uint8_t cb[32];
        memset(cb, 0xab, sizeof(cb));
        proto_scram_server_offer_plus(&s, cb, sizeof(cb));
        FUZZ_CHECK(proto_scram_server_mechanism(&s, mode == '+' ? "SCRAM-SHA-256-PLUS"
                                                                : "SCRAM-SHA-256") == ST_OK);
    } else {
        FUZZ_CHECK(proto_scram_server_mechanism(&s, "SCRAM-SHA-256-PLUS") == ST_ECLIENT_PROTOCOL);
        FUZZ_CHECK(proto_scram_server_mechanism(&s, "SCRAM-SHA-256") == ST_OK);
    }

    uint8_t *msg = fuzz_dup(m[0].p, m[0].n);
    err.text[0] = '\0';
    enum status st = proto_scram_server_first(&s, msg, m[0].n, out, sizeof(out), &out_len, &err);
    free(msg);
    FUZZ_CHECK_ERR(&err);
    FUZZ_CHECK(st == ST_OK || st == ST_ECLIENT_PROTOCOL);
    if (st == ST_OK) {
        /* a flag that fits the choice: "p=" exactly with -PLUS, "y" only where none was offered */
        FUZZ_CHECK((m[0].n > 0 && m[0].p[0] == 'p') == (mode == '+'));
        FUZZ_CHECK(!(m[0].n > 0 && m[0].p[0] == 'y' && (mode == '+' || mode == '*')));
        FUZZ_CHECK(out_len < sizeof(out) && out[out_len] == '\0' && strlen(out) == out_len);
        FUZZ_CHECK(strncmp(out, "r=", 2) == 0);
    }
    if (n_m >= 2) {
        /* also called after a failed first step: it must refuse, not read stale state */
        msg = fuzz_dup(m[1].p, m[1].n);
        err.text[0] = '\0';
        /* a small out buffer on odd lengths exercises the "too small" path */
        size_t cap = (m[1].n & 1) ? (m[1].n % 48) : sizeof(out);
        enum status st2 = proto_scram_server_final(&s, msg, m[1].n, out, cap, &out_len, &err);
        free(msg);
        FUZZ_CHECK_ERR(&err);
        FUZZ_CHECK(st2 == ST_OK || st2 == ST_ECLIENT_PROTOCOL || st2 == ST_EAUTH ||
                   (st2 == ST_EINTERNAL && cap <= 46));
        FUZZ_CHECK(st == ST_OK || st2 == ST_ECLIENT_PROTOCOL);
        if (st2 == ST_OK) {
            FUZZ_CHECK(out_len < cap && strncmp(out, "v=", 2) == 0);
            /* the recovered ClientKey hashes to the StoredKey */
            uint8_t h[32];
            unsigned int hl = 0;
            FUZZ_CHECK(EVP_Digest(s.client_key, sizeof(s.client_key), h, &hl, EVP_sha256(), NULL) ==
                       1);
            FUZZ_CHECK(memcmp(h, secret.stored_key, 32) == 0);
        }
    }
    if (n_m >= 3) {
        /* a third message is always out of order */
        msg = fuzz_dup(m[2].p, m[2].n);
        FUZZ_CHECK(proto_scram_server_final(&s, msg, m[2].n, out, sizeof(out), &out_len, &err) ==
                   ST_ECLIENT_PROTOCOL);
        free(msg);
    }
    proto_scram_server_fini(&s);
}

/* Whether the iteration count a server-first-message would give PBKDF2 is small. */
static int
iterations_small(const uint8_t *p, size_t n)
{
    size_t i = n;
    while (i > 0 && p[i - 1] != ',') {
        i--;
    }
    if (n - i < 3 || p[i] != 'i' || p[i + 1] != '=' || n - i - 2 > 4) {
        return 0;
    }
    for (size_t k = i + 2; k < n; k++) {
        if (p[k] < '0' || p[k] > '9') {
            return 0;
        }
    }
    return 1;
}

static void
run_client(const struct piece *m, int n_m, int with_password)
{
    static struct proto_scram_secret secret;
    static uint8_t client_key[PROTO_SCRAM_KEY_LEN];
    static int have_keys;
    if (!have_keys) {
        /* ClientKey = HMAC(SaltedPassword, "Client Key"), as a server-side exchange recovers */
        FUZZ_CHECK(proto_scram_secret_parse(PENCIL_SECRET, &secret));
        static const uint8_t rfc_client_key[32] = {
            0xa6, 0x0f, 0xc9, 0x23, 0xd6, 0x7e, 0x86, 0x44, 0xa9, 0x2d, 0x16,
            0xb9, 0x6e, 0xda, 0x5e, 0xf4, 0x65, 0x6b, 0x0c, 0x72, 0x5c, 0x48,
            0x43, 0x74, 0xbe, 0x25, 0x53, 0x55, 0x76, 0x99, 0x6e, 0x8b,
        };
        memcpy(client_key, rfc_client_key, sizeof(client_key));
        have_keys = 1;
    }
    struct proto_scram_client c;
    struct proto_err err;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len = 0;
    if (with_password) {
        if (!iterations_small(m[0].p, m[0].n)) {
            return;
        }
        proto_scram_client_init_password(&c, "pencil", CNONCE);
        proto_scram_client_set_salted(&c, rfc_salted, rfc_salt, sizeof(rfc_salt), 4096);
    } else {
        proto_scram_client_init_keys(&c, client_key, secret.server_key, CNONCE);
    }
    FUZZ_CHECK(proto_scram_client_first(&c, out, sizeof(out), &out_len) == ST_OK);
    FUZZ_CHECK(out_len == strlen("n,,n=,r=" CNONCE) &&
               memcmp(out, "n,,n=,r=" CNONCE, out_len) == 0);

    uint8_t *msg = fuzz_dup(m[0].p, m[0].n);
    err.text[0] = '\0';
    size_t cap = (m[0].n & 1) ? (m[0].n % 128) : sizeof(out);
    enum status st = proto_scram_client_final(&c, msg, m[0].n, out, cap, &out_len, &err);
    free(msg);
    FUZZ_CHECK_ERR(&err);
    FUZZ_CHECK(st == ST_OK || st == ST_ESERVER_PROTOCOL || st == ST_EINTERNAL);
    if (st == ST_OK) {
        FUZZ_CHECK(out_len < cap && out[out_len] == '\0' && strlen(out) == out_len);
        FUZZ_CHECK(strncmp(out, "c=biws,r=" CNONCE, strlen("c=biws,r=" CNONCE)) == 0);
    }
    if (n_m >= 2) {
        msg = fuzz_dup(m[1].p, m[1].n);
        err.text[0] = '\0';
        enum status st2 = proto_scram_client_verify(&c, msg, m[1].n, &err);
        free(msg);
        FUZZ_CHECK_ERR(&err);
        FUZZ_CHECK(st2 == ST_OK || st2 == ST_ESERVER_PROTOCOL || st2 == ST_EAUTH ||
                   st2 == ST_EINTERNAL);
        FUZZ_CHECK(st == ST_OK || st2 == ST_EINTERNAL);
    }
    proto_scram_client_fini(&c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t mode = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    struct piece m[3];
    int n_m = 0;
    while (n_m < 3) {
        const uint8_t *nl = n_m < 2 ? memchr(p, '\n', n) : NULL;
        size_t k = nl ? (size_t) (nl - p) : n;
        m[n_m].p = p;
        m[n_m].n = k;
        n_m++;
        if (!nl) {
            break;
        }
        p += k + 1;
        n -= k + 1;
    }

    check_secret(data, size);
    for (int i = 0; i < n_m; i++) {
        check_secret(m[i].p, m[i].n);
    }

    if (mode == 'C') {
        run_client(m, n_m, 0);
    } else if (mode == 'P') {
        run_client(m, n_m, 1);
    } else {
        run_server(m, n_m, mode);
    }
    return 0;
}
