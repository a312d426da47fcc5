/*
 * test_protocol_scram.c - unit tests for protocol/scram.c.
 *
 * The server side is checked byte for byte against RFC 7677's SCRAM-SHA-256 example (user
 * "user", password "pencil"). The client side always sends PostgreSQL's "n,,n=,r=<nonce>", so
 * its client-final differs from the RFC's; its expected proof and server signature were
 * computed outside pgmux with Python's hashlib/hmac over the same RFC values, and the client
 * is also run against the server side. Independent proofs for hand-made messages are computed
 * here with OpenSSL directly (see proof_for). Also covered: secret parse/format, wrong
 * passwords, tampered nonces and proofs, channel-binding flags, malformed messages from either
 * side, the SaltedPassword cache, and logging in with a ClientKey recovered from a client's
 * proof. Single-threaded.
 *
 * Reference: RFC 5802, RFC 7677 section 3; PostgreSQL 15 documentation, 55.3.1
 * "SCRAM-SHA-256 Authentication".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "protocol/scram.h"

/* ---- RFC 7677 section 3 ---- */

#define CNONCE           "rOprNGfwEbeRWgbNEkqO"
#define SNONCE           "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define NONCE            CNONCE SNONCE
#define RFC_CLIENT_FIRST "n,,n=user,r=" CNONCE
#define RFC_SERVER_FIRST "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL "c=biws,r=" NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/* PostgreSQL-style client-first with the RFC's nonces and password; expectations computed with
 * Python: AuthMessage = "n=,r=" CNONCE "," RFC_SERVER_FIRST ",c=biws,r=" NONCE. */
#define PG_CLIENT_FIRST "n,,n=,r=" CNONCE
#define PG_CLIENT_FINAL "c=biws,r=" NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k="
#define PG_SERVER_FINAL "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg="

/* What PostgreSQL stores for "pencil" with the RFC's salt and 4096 iterations (Python). */
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
/* HMAC(SaltedPassword, "Client Key") */
static const uint8_t rfc_client_key[32] = { 0xa6, 0x0f, 0xc9, 0x23, 0xd6, 0x7e, 0x86, 0x44,
                                            0xa9, 0x2d, 0x16, 0xb9, 0x6e, 0xda, 0x5e, 0xf4,
                                            0x65, 0x6b, 0x0c, 0x72, 0x5c, 0x48, 0x43, 0x74,
                                            0xbe, 0x25, 0x53, 0x55, 0x76, 0x99, 0x6e, 0x8b };

#define S(lit) (const uint8_t *) (lit), (sizeof(lit) - 1)

static void
rfc_secret(struct proto_scram_secret *sec)
{
    assert_true(proto_scram_secret_parse(PENCIL_SECRET, sec));
}

/* A server past server-first, fed the RFC client-first. */
static void
server_started(struct proto_scram_server *s, const char *client_first)
{
    struct proto_scram_secret sec;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    struct proto_err err;
    rfc_secret(&sec);
    proto_scram_server_init(s, &sec, SNONCE);
    assert_int_equal(proto_scram_server_first(s, (const uint8_t *) client_first,
                                              strlen(client_first), out, sizeof(out), &out_len,
                                              &err),
                     ST_OK);
}

/*
 * "<without_proof>,p=<proof>" for AuthMessage = bare "," server_first "," without_proof, with
 * the RFC ClientKey; computed with OpenSSL directly, not with scram.c.
 */
static void
proof_for(const char *bare, const char *server_first, const char *without_proof, char *out,
          size_t cap)
{
    char am[2048];
    uint8_t stored[32], sig[32], proof[32];
    unsigned char b64[64];
    unsigned int n = 0;
    snprintf(am, sizeof(am), "%s,%s,%s", bare, server_first, without_proof);
    assert_int_equal(EVP_Digest(rfc_client_key, 32, stored, &n, EVP_sha256(), NULL), 1);
    assert_non_null(HMAC(EVP_sha256(), stored, 32, (const uint8_t *) am, strlen(am), sig, &n));
    for (int i = 0; i < 32; i++) {
        proof[i] = rfc_client_key[i] ^ sig[i];
    }
    EVP_EncodeBlock(b64, proof, 32);
    snprintf(out, cap, "%s,p=%s", without_proof, (const char *) b64);
}

/* ---- secrets ---- */

static void
test_salted_password(void **state)
{
    (void) state;
    uint8_t out[32];
    assert_true(proto_scram_salted_password("pencil", rfc_salt, sizeof(rfc_salt), 4096, out));
    assert_memory_equal(out, rfc_salted, 32);
    assert_false(proto_scram_salted_password("pencil", rfc_salt, sizeof(rfc_salt), 0, out));
    assert_false(proto_scram_salted_password("pencil", rfc_salt, sizeof(rfc_salt), -1, out));
}

static void
test_secret_from_password(void **state)
{
    (void) state;
    struct proto_scram_secret sec, parsed;
    char text[PROTO_SCRAM_SECRET_MAX];
    assert_true(proto_scram_secret_from_password("pencil", rfc_salt, sizeof(rfc_salt), 4096, &sec));
    assert_int_equal(sec.iterations, 4096);
    assert_int_equal(sec.salt_len, 16);
    assert_memory_equal(sec.salt, rfc_salt, 16);
    assert_true(proto_scram_secret_format(&sec, text, sizeof(text)));
    assert_string_equal(text, PENCIL_SECRET);
    assert_true(proto_scram_secret_parse(text, &parsed));
    assert_int_equal(parsed.iterations, sec.iterations);
    assert_int_equal(parsed.salt_len, sec.salt_len);
    assert_memory_equal(parsed.salt, sec.salt, sec.salt_len);
    assert_memory_equal(parsed.stored_key, sec.stored_key, 32);
    assert_memory_equal(parsed.server_key, sec.server_key, 32);

    /* A too-small buffer is refused, not truncated. */
    assert_false(proto_scram_secret_format(&sec, text, strlen(PENCIL_SECRET)));
    assert_true(proto_scram_secret_format(&sec, text, strlen(PENCIL_SECRET) + 1));
    /* Bad inputs. */
    assert_false(proto_scram_secret_from_password("pencil", rfc_salt, 0, 4096, &sec));
    assert_false(
        proto_scram_secret_from_password("pencil", rfc_salt, PROTO_SCRAM_MAX_SALT + 1, 4096, &sec));
    assert_false(proto_scram_secret_from_password("pencil", rfc_salt, 16, 0, &sec));
}

static void
test_secret_roundtrip_odd_salts(void **state)
{
    (void) state;
    /* Salt lengths 1, 2, 3 and the maximum exercise every base64 padding case. */
    static const size_t lens[] = { 1, 2, 3, PROTO_SCRAM_MAX_SALT };
    uint8_t salt[PROTO_SCRAM_MAX_SALT];
    for (size_t i = 0; i < sizeof(salt); i++) {
        salt[i] = (uint8_t) (i * 37 + 1);
    }
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        struct proto_scram_secret sec, parsed;
        char text[PROTO_SCRAM_SECRET_MAX], text2[PROTO_SCRAM_SECRET_MAX];
        assert_true(proto_scram_secret_from_password("pw", salt, lens[k], 1, &sec));
        assert_true(proto_scram_secret_format(&sec, text, sizeof(text)));
        assert_true(proto_scram_secret_parse(text, &parsed));
        assert_int_equal(parsed.salt_len, lens[k]);
        assert_memory_equal(parsed.salt, salt, lens[k]);
        assert_true(proto_scram_secret_format(&parsed, text2, sizeof(text2)));
        assert_string_equal(text, text2);
    }
}

static void
test_secret_parse_malformed(void **state)
{
    (void) state;
    static const char *const bad[] = {
        "",
        "md520c46e3762c864548e296b33c3406aa9",
        "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4x96:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$99999999999:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbs"
        "T4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* empty salt */
        "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* salt not base64 */
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* stored key one byte short */
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4q==:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* server key with trailing garbage */
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=x",
        /* missing server key */
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",
        "SCRAM-SHA-256$4096",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct proto_scram_secret sec;
        if (proto_scram_secret_parse(bad[i], &sec)) {
            fail_msg("accepted bad secret %zu: %s", i, bad[i]);
        }
    }
}

/* ---- server side ---- */

static void
test_server_rfc7677(void **state)
{
    (void) state;
    struct proto_scram_secret sec;
    struct proto_scram_server s;
    struct proto_err err;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len = 0;
    rfc_secret(&sec);
    proto_scram_server_init(&s, &sec, SNONCE);
    assert_int_equal(
        proto_scram_server_first(&s, S(RFC_CLIENT_FIRST), out, sizeof(out), &out_len, &err), ST_OK);
    assert_int_equal(out_len, strlen(RFC_SERVER_FIRST));
    assert_memory_equal(out, RFC_SERVER_FIRST, out_len);
    assert_int_equal(
        proto_scram_server_final(&s, S(RFC_CLIENT_FINAL), out, sizeof(out), &out_len, &err), ST_OK);
    assert_int_equal(out_len, strlen(RFC_SERVER_FINAL));
    assert_memory_equal(out, RFC_SERVER_FINAL, out_len);
    assert_memory_equal(s.client_key, rfc_client_key, 32);
    /* The exchange is over: another final is out of order. */
    assert_int_equal(
        proto_scram_server_final(&s, S(RFC_CLIENT_FINAL), out, sizeof(out), &out_len, &err),
        ST_ECLIENT_PROTOCOL);
    proto_scram_server_fini(&s);
    static const uint8_t zero[32];
    assert_memory_equal(s.client_key, zero, 32);
}

/* The caller's random bytes become the server nonce, in base64, and the exchange goes on. */
static void
test_server_init_random(void **state)
{
    (void) state;
    struct proto_scram_secret sec;
    struct proto_scram_server s;
    struct proto_err err;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len = 0;
    uint8_t random[PROTO_SCRAM_NONCE_LEN];
    for (size_t i = 0; i < sizeof(random); i++) {
        random[i] = (uint8_t) (i * 37 + 1);
    }
    rfc_secret(&sec);
    proto_scram_server_init_random(&s, &sec, random);
    unsigned char b64[64];
    int n = EVP_EncodeBlock(b64, random, (int) sizeof(random));
    assert_int_equal(n, 32);
    assert_string_equal(s.nonce, (const char *) b64);
    assert_int_equal(
        proto_scram_server_first(&s, S(RFC_CLIENT_FIRST), out, sizeof(out), &out_len, &err), ST_OK);
    char want[128];
    snprintf(want, sizeof(want), "r=" CNONCE "%s,", (const char *) b64);
    assert_true(out_len > strlen(want) && memcmp(out, want, strlen(want)) == 0);
    proto_scram_server_fini(&s);
}

static void
test_server_pg_client_first(void **state)
{
    (void) state;
    struct proto_scram_server s;
    struct proto_err err;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    /* The user name in client-first is ignored, whatever it is. */
    server_started(&s, PG_CLIENT_FIRST);
    assert_string_equal(s.server_first, RFC_SERVER_FIRST);
    assert_int_equal(
        proto_scram_server_final(&s, S(PG_CLIENT_FINAL), out, sizeof(out), &out_len, &err), ST_OK);
    assert_memory_equal(out, PG_SERVER_FINAL, out_len);
    assert_int_equal(out_len, strlen(PG_SERVER_FINAL));
    proto_scram_server_fini(&s);
}

static void
test_server_wrong_proof(void **state)
{
    (void) state;
    struct proto_scram_server s;
    struct proto_err err = { .text = "" };
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len = 12345;
    /* The RFC proof with its first character changed (not a padding bit). */
    server_started(&s, RFC_CLIENT_FIRST);
    assert_int_equal(proto_scram_server_final(
                         &s, S("c=biws,r=" NONCE ",p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
                         out, sizeof(out), &out_len, &err),
                     ST_EAUTH);
    assert_int_equal(out_len, 12345); /* nothing written */
    assert_true(err.text[0] != '\0');
    proto_scram_server_fini(&s);

    /* The PostgreSQL-style proof against the RFC client-first: AuthMessage differs. */
    server_started(&s, RFC_CLIENT_FIRST);
    assert_int_equal(
        proto_scram_server_final(&s, S(PG_CLIENT_FINAL), out, sizeof(out), &out_len, &err),
        ST_EAUTH);
    proto_scram_server_fini(&s);
}

static void
test_server_tampered_nonce(void **state)
{
    (void) state;
    struct proto_scram_server s;
    struct proto_err err;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    static const char *const finals[] = {
        /* last nonce character changed */
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1,"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        /* only the client's part */
        "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        /* extended */
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0X,"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        /* empty */
        "c=biws,r=,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    };
    for (size_t i = 0; i < sizeof(finals) / sizeof(finals[0]); i++) {
        server_started(&s, RFC_CLIENT_FIRST);
        assert_int_equal(proto_scram_server_final(&s, (const uint8_t *) finals[i],
                                                  strlen(finals[i]), out, sizeof(out), &out_len,
                                                  &err),
                         ST_ECLIENT_PROTOCOL);
        proto_scram_server_fini(&s);
    }
}

static void
test_server_channel_binding(void **state)
{
    (void) state;
    struct proto_scram_secret sec;
    struct proto_scram_server s;
    struct proto_err err = { .text = "" };
    char out[PROTO_SCRAM_MSG_MAX], final[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    rfc_secret(&sec);

    /* "p=": the client insists on channel binding, which pgmux does not offer. */
    proto_scram_server_init(&s, &sec, SNONCE);
    assert_int_equal(proto_scram_server_first(&s, S("p=tls-server-end-point,,n=,r=" CNONCE), out,
                                              sizeof(out), &out_len, &err),
                     ST_ECLIENT_PROTOCOL);
    assert_non_null(strstr(err.text, "channel binding"));
    proto_scram_server_fini(&s);

    /* "y": supported by the client, thought unsupported by us; c= must then be base64("y,,"). */
    server_started(&s, "y,,n=,r=" CNONCE);
    assert_string_equal(s.gs2_header, "y,,");
    proof_for("n=,r=" CNONCE, RFC_SERVER_FIRST, "c=eSws,r=" NONCE, final, sizeof(final));
    assert_int_equal(proto_scram_server_final(&s, (const uint8_t *) final, strlen(final), out,
                                              sizeof(out), &out_len, &err),
                     ST_OK);
    proto_scram_server_fini(&s);

    /* "y" in client-first but "n,," repeated in client-final: a downgrade, refused. */
    server_started(&s, "y,,n=,r=" CNONCE);
    proof_for("n=,r=" CNONCE, RFC_SERVER_FIRST, "c=biws,r=" NONCE, final, sizeof(final));
    assert_int_equal(proto_scram_server_final(&s, (const uint8_t *) final, strlen(final), out,
                                              sizeof(out), &out_len, &err),
                     ST_ECLIENT_PROTOCOL);
    proto_scram_server_fini(&s);

    /* And the other way round. */
    server_started(&s, PG_CLIENT_FIRST);
    proof_for("n=,r=" CNONCE, RFC_SERVER_FIRST, "c=eSws,r=" NONCE, final, sizeof(final));
    assert_int_equal(proto_scram_server_final(&s, (const uint8_t *) final, strlen(final), out,
                                              sizeof(out), &out_len, &err),
                     ST_ECLIENT_PROTOCOL);
    proto_scram_server_fini(&s);
}

/* A server offering -PLUS with cb as the binding data, the client having chosen mech, fed
 * client_first; the step's status. */
static enum status
plus_started(struct proto_scram_server *s, const uint8_t *cb, size_t cb_len, const char *mech,
             const char *client_first, struct proto_err *err)
{
    struct proto_scram_secret sec;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    rfc_secret(&sec);
    proto_scram_server_init(s, &sec, SNONCE);
    proto_scram_server_offer_plus(s, cb, cb_len);
    enum status st = proto_scram_server_mechanism(s, mech);
    if (st != ST_OK) {
        return st;
    }
    return proto_scram_server_first(s, (const uint8_t *) client_first, strlen(client_first), out,
                                    sizeof(out), &out_len, err);
}

/* "c=" base64(gs2 header + binding data) */
static void
cbind_attr(const char *gs2, const uint8_t *cb, size_t cb_len, char *out, size_t cap)
{
    uint8_t raw[128];
    unsigned char b64[200];
    size_t n = strlen(gs2);
    memcpy(raw, gs2, n);
    memcpy(raw + n, cb, cb_len);
    EVP_EncodeBlock(b64, raw, (int) (n + cb_len));
    snprintf(out, cap, "c=%s", (const char *) b64);
}

static void
test_server_channel_binding_plus(void **state)
{
    (void) state;
    struct proto_scram_server s;
    struct proto_err err = { .text = "" };
    char out[PROTO_SCRAM_MSG_MAX], final[PROTO_SCRAM_MSG_MAX], without[PROTO_SCRAM_MSG_MAX];
    char c_attr[256];
    size_t out_len;
    uint8_t cb[32], other[32];
    memset(cb, 0xab, sizeof(cb));
    memset(other, 0xcd, sizeof(other));
    const char *gs2 = "p=tls-server-end-point,,";

    /* -PLUS is chosen only where it was offered */
    assert_int_equal(plus_started(&s, NULL, 0, "SCRAM-SHA-256-PLUS", PG_CLIENT_FIRST, &err),
                     ST_ECLIENT_PROTOCOL);
    assert_int_equal(plus_started(&s, cb, sizeof(cb), "SCRAM-SHA-1", PG_CLIENT_FIRST, &err),
                     ST_ECLIENT_PROTOCOL);

    /* Offered: a client without channel binding ("n") may still use SCRAM-SHA-256; one that
     * supports it but saw no -PLUS ("y") was downgraded on the way: refused. */
    assert_int_equal(plus_started(&s, cb, sizeof(cb), "SCRAM-SHA-256", PG_CLIENT_FIRST, &err),
                     ST_OK);
    assert_int_equal(plus_started(&s, cb, sizeof(cb), "SCRAM-SHA-256", "y,,n=,r=" CNONCE, &err),
                     ST_ECLIENT_PROTOCOL);
    assert_non_null(strstr(err.text, "negotiation error"));
    /* -PLUS chosen: the flag must be "p=tls-server-end-point" */
    assert_int_equal(plus_started(&s, cb, sizeof(cb), "SCRAM-SHA-256-PLUS", PG_CLIENT_FIRST, &err),
                     ST_ECLIENT_PROTOCOL);
    assert_int_equal(
        plus_started(&s, cb, sizeof(cb), "SCRAM-SHA-256-PLUS", "p=tls-unique,,n=,r=" CNONCE, &err),
        ST_ECLIENT_PROTOCOL);
    assert_non_null(strstr(err.text, "unsupported SCRAM channel-binding type"));

    /* The whole exchange, bound to cb: AuthMessage carries c= with the binding data */
    assert_int_equal(plus_started(&s, cb, sizeof(cb), "SCRAM-SHA-256-PLUS",
                                  "p=tls-server-end-point,,n=,r=" CNONCE, &err),
                     ST_OK);
    assert_string_equal(s.gs2_header, gs2);
    cbind_attr(gs2, cb, sizeof(cb), c_attr, sizeof(c_attr));
    snprintf(without, sizeof(without), "%s,r=%s", c_attr, NONCE);
    proof_for("n=,r=" CNONCE, RFC_SERVER_FIRST, without, final, sizeof(final));
    assert_int_equal(proto_scram_server_final(&s, (const uint8_t *) final, strlen(final), out,
                                              sizeof(out), &out_len, &err),
                     ST_OK);
    assert_memory_equal(s.client_key, rfc_client_key, 32);
    proto_scram_server_fini(&s);

    /* Bound to another certificate (a proxy that terminated the client's TLS), or to none: refused,
     * however right the proof */
    const uint8_t *wrong[] = { other, cb };
    size_t wrong_len[] = { sizeof(other), 0 };
    for (int i = 0; i < 2; i++) {
        assert_int_equal(plus_started(&s, cb, sizeof(cb), "SCRAM-SHA-256-PLUS",
                                      "p=tls-server-end-point,,n=,r=" CNONCE, &err),
                         ST_OK);
        cbind_attr(gs2, wrong[i], wrong_len[i], c_attr, sizeof(c_attr));
        snprintf(without, sizeof(without), "%s,r=%s", c_attr, NONCE);
        proof_for("n=,r=" CNONCE, RFC_SERVER_FIRST, without, final, sizeof(final));
        assert_int_equal(proto_scram_server_final(&s, (const uint8_t *) final, strlen(final), out,
                                                  sizeof(out), &out_len, &err),
                         ST_ECLIENT_PROTOCOL);
        assert_non_null(strstr(err.text, "channel binding check failed"));
        proto_scram_server_fini(&s);
    }
}

static void
test_server_extensions(void **state)
{
    (void) state;
    struct proto_scram_server s;
    struct proto_err err;
    char out[PROTO_SCRAM_MSG_MAX], final[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    /* Extensions after the nonce are ignored in client-first and kept in the AuthMessage of
     * client-final (they are part of client-final-without-proof). */
    server_started(&s, "n,,n=someone,r=" CNONCE ",x=1");
    proof_for("n=someone,r=" CNONCE ",x=1", RFC_SERVER_FIRST, "c=biws,r=" NONCE ",y=2", final,
              sizeof(final));
    assert_int_equal(proto_scram_server_final(&s, (const uint8_t *) final, strlen(final), out,
                                              sizeof(out), &out_len, &err),
                     ST_OK);
    assert_memory_equal(s.client_key, rfc_client_key, 32);
    proto_scram_server_fini(&s);
}

static void
test_server_first_malformed(void **state)
{
    (void) state;
    struct proto_scram_secret sec;
    struct proto_scram_server s;
    struct proto_err err;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    static const char *const bad[] = {
        "",
        "n",
        "n,",
        "n,,",
        "x,,n=,r=abc",
        "nn,,n=,r=abc",
        "n,a=bob,n=,r=abc",    /* authorization identity */
        "n,,m=ext,n=,r=abc",   /* mandatory extension */
        "n,,r=abc",            /* no user name attribute */
        "n,,n=,r=",            /* empty nonce */
        "n,,n=,r=ab c",        /* space in nonce */
        "n,,n=,r=abc,",        /* dangling comma */
        "n,,n=,r=abc,garbage", /* not an attribute */
        "n,,n=,s=abc",         /* not a nonce */
        "n,,n=",
    };
    rfc_secret(&sec);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        proto_scram_server_init(&s, &sec, SNONCE);
        if (proto_scram_server_first(&s, (const uint8_t *) bad[i], strlen(bad[i]), out, sizeof(out),
                                     &out_len, &err) != ST_ECLIENT_PROTOCOL) {
            fail_msg("accepted bad client-first %zu: %s", i, bad[i]);
        }
        proto_scram_server_fini(&s);
    }
    /* Embedded NUL. */
    static const uint8_t nul[] = { 'n', ',', ',', 'n', '=', 0, ',', 'r', '=', 'a' };
    proto_scram_server_init(&s, &sec, SNONCE);
    assert_int_equal(
        proto_scram_server_first(&s, nul, sizeof(nul), out, sizeof(out), &out_len, &err),
        ST_ECLIENT_PROTOCOL);
    /* Over-long message. */
    char big[PROTO_SCRAM_MSG_MAX + 10];
    memset(big, 'a', sizeof(big));
    memcpy(big, "n,,n=,r=", 8);
    proto_scram_server_init(&s, &sec, SNONCE);
    assert_int_equal(proto_scram_server_first(&s, (const uint8_t *) big, sizeof(big), out,
                                              sizeof(out), &out_len, &err),
                     ST_ECLIENT_PROTOCOL);
    /* A nonce that fits the message but not next to the server's part in server-first. */
    proto_scram_server_init(&s, &sec, SNONCE);
    assert_int_equal(proto_scram_server_first(&s, (const uint8_t *) big, PROTO_SCRAM_MSG_MAX - 1,
                                              out, sizeof(out), &out_len, &err),
                     ST_ECLIENT_PROTOCOL);
    /* Out of order: client-first twice. */
    server_started(&s, RFC_CLIENT_FIRST);
    assert_int_equal(
        proto_scram_server_first(&s, S(RFC_CLIENT_FIRST), out, sizeof(out), &out_len, &err),
        ST_ECLIENT_PROTOCOL);
    /* Final before first. */
    proto_scram_server_init(&s, &sec, SNONCE);
    assert_int_equal(
        proto_scram_server_final(&s, S(RFC_CLIENT_FINAL), out, sizeof(out), &out_len, &err),
        ST_ECLIENT_PROTOCOL);
    /* Output buffer too small for server-first. */
    proto_scram_server_init(&s, &sec, SNONCE);
    assert_int_equal(proto_scram_server_first(&s, S(RFC_CLIENT_FIRST), out, 10, &out_len, &err),
                     ST_EINTERNAL);
    /* A fixed server nonce that cannot be one. */
    proto_scram_server_init(&s, &sec, "has,comma");
    assert_int_equal(
        proto_scram_server_first(&s, S(RFC_CLIENT_FIRST), out, sizeof(out), &out_len, &err),
        ST_EINTERNAL);
    proto_scram_server_fini(&s);
}

static void
test_server_final_malformed(void **state)
{
    (void) state;
    struct proto_scram_server s;
    struct proto_err err;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    static const char *const bad[] = {
        "",
        "c=biws,r=" NONCE,                                                   /* no proof */
        "c=biws,r=" NONCE ",",                                               /* dangling comma */
        "c=biws,r=" NONCE ",p=",                                             /* empty proof */
        "c=biws,r=" NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndV=",  /* bad base64 */
        "c=biws,r=" NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndQ==", /* 31 bytes */
        "c=biws,r=" NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1", /* after proof */
        "c=biws,r=" NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,",
        "c=biws,r=" NONCE ",p=dHzb!apWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "r=" NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", /* no channel binding */
        "c=bi,r=" NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=,r=" NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", /* no nonce */
        "c=biws,r=" NONCE ",1=x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        server_started(&s, RFC_CLIENT_FIRST);
        if (proto_scram_server_final(&s, (const uint8_t *) bad[i], strlen(bad[i]), out, sizeof(out),
                                     &out_len, &err) != ST_ECLIENT_PROTOCOL) {
            fail_msg("accepted bad client-final %zu: %s", i, bad[i]);
        }
        proto_scram_server_fini(&s);
    }
    /* Output buffer too small for server-final. */
    server_started(&s, RFC_CLIENT_FIRST);
    assert_int_equal(proto_scram_server_final(&s, S(RFC_CLIENT_FINAL), out, 10, &out_len, &err),
                     ST_EINTERNAL);
    proto_scram_server_fini(&s);
}

/* ---- client side ---- */

static void
test_client_pg_style(void **state)
{
    (void) state;
    struct proto_scram_client c;
    struct proto_err err;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    proto_scram_client_init_password(&c, "pencil", CNONCE);
    assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_OK);
    assert_int_equal(out_len, strlen(PG_CLIENT_FIRST));
    assert_memory_equal(out, PG_CLIENT_FIRST, out_len);
    assert_int_equal(
        proto_scram_client_final(&c, S(RFC_SERVER_FIRST), out, sizeof(out), &out_len, &err), ST_OK);
    assert_int_equal(out_len, strlen(PG_CLIENT_FINAL));
    assert_memory_equal(out, PG_CLIENT_FINAL, out_len);
    /* What the caller caches (CONVENTIONS 6.10). */
    assert_true(c.have_salted);
    assert_memory_equal(c.salted_password, rfc_salted, 32);
    assert_int_equal(c.salted_salt_len, 16);
    assert_memory_equal(c.salted_salt, rfc_salt, 16);
    assert_int_equal(c.salted_iterations, 4096);
    assert_int_equal(proto_scram_client_verify(&c, S(PG_SERVER_FINAL), &err), ST_OK);
    proto_scram_client_fini(&c);
    assert_int_equal(c.password[0], 0);
    assert_false(c.have_password);
}

static void
test_client_against_server(void **state)
{
    (void) state;
    struct proto_scram_secret sec;
    /* Fixed nonces first (outputs known), then random ones, twice. */
    const char *cn[] = { CNONCE, NULL, NULL };
    const char *sn[] = { SNONCE, NULL, NULL };
    char first_nonce[2][64];
    rfc_secret(&sec);
    for (int i = 0; i < 3; i++) {
        struct proto_scram_client c;
        struct proto_scram_server s;
        struct proto_err err;
        char m1[PROTO_SCRAM_MSG_MAX], m2[PROTO_SCRAM_MSG_MAX], m3[PROTO_SCRAM_MSG_MAX],
            m4[PROTO_SCRAM_MSG_MAX];
        size_t l1, l2, l3, l4;
        proto_scram_client_init_password(&c, "pencil", cn[i]);
        proto_scram_server_init(&s, &sec, sn[i]);
        assert_int_equal(proto_scram_client_first(&c, m1, sizeof(m1), &l1), ST_OK);
        assert_int_equal(
            proto_scram_server_first(&s, (const uint8_t *) m1, l1, m2, sizeof(m2), &l2, &err),
            ST_OK);
        assert_int_equal(
            proto_scram_client_final(&c, (const uint8_t *) m2, l2, m3, sizeof(m3), &l3, &err),
            ST_OK);
        assert_int_equal(
            proto_scram_server_final(&s, (const uint8_t *) m3, l3, m4, sizeof(m4), &l4, &err),
            ST_OK);
        assert_int_equal(proto_scram_client_verify(&c, (const uint8_t *) m4, l4, &err), ST_OK);
        assert_memory_equal(s.client_key, rfc_client_key, 32);
        if (i == 0) {
            assert_memory_equal(m4, PG_SERVER_FINAL, l4);
        } else {
            /* 24 random bytes are 32 base64 characters. */
            assert_int_equal(strlen(c.client_nonce), 32);
            assert_int_equal(strlen(s.nonce), 64);
            memcpy(first_nonce[i - 1], c.client_nonce, sizeof(c.client_nonce));
        }
        proto_scram_client_fini(&c);
        proto_scram_server_fini(&s);
    }
    assert_string_not_equal(first_nonce[0], first_nonce[1]);
}

/* One exchange between pgmux's two sides: the client bound to client_cb (or saying "y" with
 * NULL, or nothing when no_tls), the server offering server_cb (or nothing with NULL). The
 * status of the first step that fails, ST_OK when the client verified the server. */
static enum status
bound_exchange(const uint8_t *client_cb, bool no_tls, const uint8_t *server_cb, char *first_out)
{
    struct proto_scram_secret sec;
    struct proto_scram_client c;
    struct proto_scram_server s;
    struct proto_err err;
    char m1[PROTO_SCRAM_MSG_MAX], m2[PROTO_SCRAM_MSG_MAX], m3[PROTO_SCRAM_MSG_MAX],
        m4[PROTO_SCRAM_MSG_MAX];
    size_t l1, l2, l3, l4;
    enum status st;
    rfc_secret(&sec);
    proto_scram_client_init_password(&c, "pencil", CNONCE);
    if (!no_tls) {
        proto_scram_client_bind(&c, client_cb, client_cb ? 32 : 0);
    }
    proto_scram_server_init(&s, &sec, SNONCE);
    if (server_cb) {
        proto_scram_server_offer_plus(&s, server_cb, 32);
    }
    assert_int_equal(proto_scram_client_first(&c, m1, sizeof(m1), &l1), ST_OK);
    memcpy(first_out, m1, l1 + 1);
    if ((st = proto_scram_server_mechanism(&s, client_cb ? "SCRAM-SHA-256-PLUS"
                                                         : "SCRAM-SHA-256")) != ST_OK ||
        (st = proto_scram_server_first(&s, (const uint8_t *) m1, l1, m2, sizeof(m2), &l2, &err)) !=
            ST_OK ||
        (st = proto_scram_client_final(&c, (const uint8_t *) m2, l2, m3, sizeof(m3), &l3, &err)) !=
            ST_OK ||
        (st = proto_scram_server_final(&s, (const uint8_t *) m3, l3, m4, sizeof(m4), &l4, &err)) !=
            ST_OK) {
        goto out;
    }
    st = proto_scram_client_verify(&c, (const uint8_t *) m4, l4, &err);
out:
    proto_scram_client_fini(&c);
    proto_scram_server_fini(&s);
    return st;
}

/* The client side binds as libpq does with channel_binding=prefer: "p=tls-server-end-point"
 * with the server certificate's hash where -PLUS is offered, "y" over TLS where it is not,
 * "n" without TLS; a binding to another certificate fails. */
static void
test_client_channel_binding(void **state)
{
    (void) state;
    uint8_t cb[32], other[32];
    char first[PROTO_SCRAM_MSG_MAX];
    memset(cb, 0x5a, sizeof(cb));
    memset(other, 0xa5, sizeof(other));
    assert_int_equal(bound_exchange(cb, false, cb, first), ST_OK);
    assert_true(strncmp(first, "p=tls-server-end-point,,n=,r=", 29) == 0);
    assert_int_equal(bound_exchange(other, false, cb, first), ST_ECLIENT_PROTOCOL);
    assert_int_equal(bound_exchange(NULL, false, NULL, first), ST_OK); /* "y", none offered */
    assert_true(strncmp(first, "y,,n=,r=", 8) == 0);
    assert_int_equal(bound_exchange(NULL, false, cb, first), ST_ECLIENT_PROTOCOL); /* stripped */
    assert_int_equal(bound_exchange(NULL, true, NULL, first), ST_OK);
    assert_true(strncmp(first, "n,,n=,r=", 8) == 0);
}

static void
test_wrong_password(void **state)
{
    (void) state;
    struct proto_scram_secret sec;
    struct proto_scram_client c;
    struct proto_scram_server s;
    struct proto_err err;
    char m1[PROTO_SCRAM_MSG_MAX], m2[PROTO_SCRAM_MSG_MAX], m3[PROTO_SCRAM_MSG_MAX],
        m4[PROTO_SCRAM_MSG_MAX];
    size_t l1, l2, l3, l4;
    rfc_secret(&sec);
    proto_scram_client_init_password(&c, "pencil2", NULL);
    proto_scram_server_init(&s, &sec, NULL);
    assert_int_equal(proto_scram_client_first(&c, m1, sizeof(m1), &l1), ST_OK);
    assert_int_equal(
        proto_scram_server_first(&s, (const uint8_t *) m1, l1, m2, sizeof(m2), &l2, &err), ST_OK);
    assert_int_equal(
        proto_scram_client_final(&c, (const uint8_t *) m2, l2, m3, sizeof(m3), &l3, &err), ST_OK);
    assert_int_equal(
        proto_scram_server_final(&s, (const uint8_t *) m3, l3, m4, sizeof(m4), &l4, &err),
        ST_EAUTH);
    proto_scram_client_fini(&c);
    proto_scram_server_fini(&s);
}

static void
test_recovered_keys_login(void **state)
{
    (void) state;
    struct proto_scram_secret sec;
    struct proto_err err;
    char m1[PROTO_SCRAM_MSG_MAX], m2[PROTO_SCRAM_MSG_MAX], m3[PROTO_SCRAM_MSG_MAX],
        m4[PROTO_SCRAM_MSG_MAX];
    size_t l1, l2, l3, l4;
    uint8_t salt[16], salted[32], expect_key[32], recovered[32];
    unsigned int n = 0;

    /* A secret derived from a password with a salt of our own. */
    for (size_t i = 0; i < sizeof(salt); i++) {
        salt[i] = (uint8_t) (0xa0 + i);
    }
    assert_true(proto_scram_secret_from_password("s3cret pw", salt, sizeof(salt), 4096, &sec));

    /* 1: a client logs in to pgmux with the password; the server recovers its ClientKey. */
    struct proto_scram_client c;
    struct proto_scram_server s;
    proto_scram_client_init_password(&c, "s3cret pw", NULL);
    proto_scram_server_init(&s, &sec, NULL);
    assert_int_equal(proto_scram_client_first(&c, m1, sizeof(m1), &l1), ST_OK);
    assert_int_equal(
        proto_scram_server_first(&s, (const uint8_t *) m1, l1, m2, sizeof(m2), &l2, &err), ST_OK);
    assert_int_equal(
        proto_scram_client_final(&c, (const uint8_t *) m2, l2, m3, sizeof(m3), &l3, &err), ST_OK);
    assert_int_equal(
        proto_scram_server_final(&s, (const uint8_t *) m3, l3, m4, sizeof(m4), &l4, &err), ST_OK);
    assert_true(proto_scram_salted_password("s3cret pw", salt, sizeof(salt), 4096, salted));
    assert_non_null(
        HMAC(EVP_sha256(), salted, 32, (const uint8_t *) "Client Key", 10, expect_key, &n));
    assert_memory_equal(s.client_key, expect_key, 32);
    memcpy(recovered, s.client_key, 32);
    proto_scram_client_fini(&c);
    proto_scram_server_fini(&s);

    /* 2: pgmux logs in to a server holding the same secret with the recovered keys only. */
    proto_scram_client_init_keys(&c, recovered, sec.server_key, NULL);
    proto_scram_server_init(&s, &sec, NULL);
    assert_int_equal(proto_scram_client_first(&c, m1, sizeof(m1), &l1), ST_OK);
    assert_int_equal(
        proto_scram_server_first(&s, (const uint8_t *) m1, l1, m2, sizeof(m2), &l2, &err), ST_OK);
    assert_int_equal(
        proto_scram_client_final(&c, (const uint8_t *) m2, l2, m3, sizeof(m3), &l3, &err), ST_OK);
    assert_false(c.have_salted); /* no PBKDF2 with keys */
    assert_int_equal(
        proto_scram_server_final(&s, (const uint8_t *) m3, l3, m4, sizeof(m4), &l4, &err), ST_OK);
    assert_int_equal(proto_scram_client_verify(&c, (const uint8_t *) m4, l4, &err), ST_OK);
    proto_scram_client_fini(&c);
    proto_scram_server_fini(&s);

    /* 3: a wrong ClientKey is refused; a wrong ServerKey makes the client refuse the server. */
    recovered[0] ^= 1;
    proto_scram_client_init_keys(&c, recovered, sec.server_key, NULL);
    proto_scram_server_init(&s, &sec, NULL);
    assert_int_equal(proto_scram_client_first(&c, m1, sizeof(m1), &l1), ST_OK);
    assert_int_equal(
        proto_scram_server_first(&s, (const uint8_t *) m1, l1, m2, sizeof(m2), &l2, &err), ST_OK);
    assert_int_equal(
        proto_scram_client_final(&c, (const uint8_t *) m2, l2, m3, sizeof(m3), &l3, &err), ST_OK);
    assert_int_equal(
        proto_scram_server_final(&s, (const uint8_t *) m3, l3, m4, sizeof(m4), &l4, &err),
        ST_EAUTH);
    proto_scram_client_fini(&c);
    proto_scram_server_fini(&s);

    recovered[0] ^= 1;
    uint8_t bad_server_key[32];
    memcpy(bad_server_key, sec.server_key, 32);
    bad_server_key[31] ^= 0x80;
    proto_scram_client_init_keys(&c, recovered, bad_server_key, NULL);
    proto_scram_server_init(&s, &sec, NULL);
    assert_int_equal(proto_scram_client_first(&c, m1, sizeof(m1), &l1), ST_OK);
    assert_int_equal(
        proto_scram_server_first(&s, (const uint8_t *) m1, l1, m2, sizeof(m2), &l2, &err), ST_OK);
    assert_int_equal(
        proto_scram_client_final(&c, (const uint8_t *) m2, l2, m3, sizeof(m3), &l3, &err), ST_OK);
    assert_int_equal(
        proto_scram_server_final(&s, (const uint8_t *) m3, l3, m4, sizeof(m4), &l4, &err), ST_OK);
    assert_int_equal(proto_scram_client_verify(&c, (const uint8_t *) m4, l4, &err), ST_EAUTH);
    proto_scram_client_fini(&c);
    proto_scram_server_fini(&s);
}

static void
test_client_salted_cache(void **state)
{
    (void) state;
    struct proto_scram_client c;
    struct proto_err err;
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    uint8_t wrong[32];

    /* The right SaltedPassword offered: same message as computing it. */
    proto_scram_client_init_password(&c, "pencil", CNONCE);
    proto_scram_client_set_salted(&c, rfc_salted, rfc_salt, sizeof(rfc_salt), 4096);
    assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_OK);
    assert_int_equal(
        proto_scram_client_final(&c, S(RFC_SERVER_FIRST), out, sizeof(out), &out_len, &err), ST_OK);
    assert_memory_equal(out, PG_CLIENT_FINAL, out_len);
    proto_scram_client_fini(&c);

    /* A wrong value for the same salt and count is used as is: proof that PBKDF2 was skipped. */
    memcpy(wrong, rfc_salted, 32);
    wrong[0] ^= 1;
    proto_scram_client_init_password(&c, "pencil", CNONCE);
    proto_scram_client_set_salted(&c, wrong, rfc_salt, sizeof(rfc_salt), 4096);
    assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_OK);
    assert_int_equal(
        proto_scram_client_final(&c, S(RFC_SERVER_FIRST), out, sizeof(out), &out_len, &err), ST_OK);
    assert_memory_not_equal(out, PG_CLIENT_FINAL, out_len);
    proto_scram_client_fini(&c);

    /* Offered for other iterations, or another salt: recomputed, and the cache updated. */
    proto_scram_client_init_password(&c, "pencil", CNONCE);
    proto_scram_client_set_salted(&c, wrong, rfc_salt, sizeof(rfc_salt), 4095);
    assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_OK);
    assert_int_equal(
        proto_scram_client_final(&c, S(RFC_SERVER_FIRST), out, sizeof(out), &out_len, &err), ST_OK);
    assert_memory_equal(out, PG_CLIENT_FINAL, out_len);
    assert_int_equal(c.salted_iterations, 4096);
    assert_memory_equal(c.salted_password, rfc_salted, 32);
    proto_scram_client_fini(&c);

    proto_scram_client_init_password(&c, "pencil", CNONCE);
    proto_scram_client_set_salted(&c, wrong, rfc_salt, sizeof(rfc_salt) - 1, 4096);
    assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_OK);
    assert_int_equal(
        proto_scram_client_final(&c, S(RFC_SERVER_FIRST), out, sizeof(out), &out_len, &err), ST_OK);
    assert_memory_equal(out, PG_CLIENT_FINAL, out_len);
    proto_scram_client_fini(&c);
}

static void
test_client_bad_server_first(void **state)
{
    (void) state;
    struct proto_scram_client c;
    struct proto_err err = { .text = "" };
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    static const char *const bad[] = {
        "",
        "r=" CNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /* nonce not extended */
        "r=rOprNGfwEbeRWgbNEkqX" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /* not ours */
        "r=" SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "r=" NONCE " ,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /* space in nonce */
        "r=" NONCE ",s=,i=4096",
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096",
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4k",
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=",
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999",
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000001", /* over PROTO_SCRAM_MAX_ITERATIONS */
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=2147483647",
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,x=1",
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,",
        "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==",
        "r=" NONCE ",i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==",
        "m=x,r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "e=other-error",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        proto_scram_client_init_password(&c, "pencil", CNONCE);
        assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_OK);
        if (proto_scram_client_final(&c, (const uint8_t *) bad[i], strlen(bad[i]), out, sizeof(out),
                                     &out_len, &err) != ST_ESERVER_PROTOCOL) {
            fail_msg("accepted bad server-first %zu: %s", i, bad[i]);
        }
        assert_true(err.text[0] != '\0');
        proto_scram_client_fini(&c);
    }
    /* Out of order: server-first before client-first. */
    proto_scram_client_init_password(&c, "pencil", CNONCE);
    assert_int_equal(
        proto_scram_client_final(&c, S(RFC_SERVER_FIRST), out, sizeof(out), &out_len, &err),
        ST_EINTERNAL);
    /* Output too small. */
    assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_OK);
    assert_int_equal(proto_scram_client_final(&c, S(RFC_SERVER_FIRST), out, 20, &out_len, &err),
                     ST_EINTERNAL);
    proto_scram_client_fini(&c);
}

static void
test_client_verify(void **state)
{
    (void) state;
    struct proto_scram_client c;
    struct proto_err err = { .text = "" };
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len;
    static const struct {
        const char *msg;
        enum status want;
    } cases[] = {
        { PG_SERVER_FINAL, ST_OK },
        { RFC_SERVER_FINAL, ST_EAUTH }, /* well formed, wrong signature */
        { "e=invalid-proof", ST_ESERVER_PROTOCOL },
        { "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg", ST_ESERVER_PROTOCOL },
        { "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MB=", ST_ESERVER_PROTOCOL }, /* 29 bytes */
        { PG_SERVER_FINAL ",x=1", ST_ESERVER_PROTOCOL },
        { "", ST_ESERVER_PROTOCOL },
        { "x=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=", ST_ESERVER_PROTOCOL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        proto_scram_client_init_password(&c, "pencil", CNONCE);
        proto_scram_client_set_salted(&c, rfc_salted, rfc_salt, sizeof(rfc_salt), 4096);
        assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_OK);
        assert_int_equal(
            proto_scram_client_final(&c, S(RFC_SERVER_FIRST), out, sizeof(out), &out_len, &err),
            ST_OK);
        enum status st = proto_scram_client_verify(&c, (const uint8_t *) cases[i].msg,
                                                   strlen(cases[i].msg), &err);
        if (st != cases[i].want) {
            fail_msg("server-final %zu (%s): got %d want %d", i, cases[i].msg, st, cases[i].want);
        }
        if (i == 2) {
            assert_non_null(strstr(err.text, "invalid-proof"));
        }
        /* Verifying twice is out of order. */
        assert_int_equal(proto_scram_client_verify(&c, S(PG_SERVER_FINAL), &err), ST_EINTERNAL);
        proto_scram_client_fini(&c);
    }
}

static void
test_client_init_errors(void **state)
{
    (void) state;
    struct proto_scram_client c;
    char out[PROTO_SCRAM_MSG_MAX];
    char long_pw[300];
    size_t out_len;
    memset(long_pw, 'p', sizeof(long_pw) - 1);
    long_pw[sizeof(long_pw) - 1] = '\0';
    proto_scram_client_init_password(&c, long_pw, NULL);
    assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_ECONFIG);
    proto_scram_client_fini(&c);
    /* 255 bytes fit. */
    long_pw[255] = '\0';
    proto_scram_client_init_password(&c, long_pw, NULL);
    assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_OK);
    /* Twice is out of order. */
    assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_EINTERNAL);
    proto_scram_client_fini(&c);
    /* A fixed nonce that cannot be one, and an output too small. */
    proto_scram_client_init_password(&c, "pencil", "bad,nonce");
    assert_int_equal(proto_scram_client_first(&c, out, sizeof(out), &out_len), ST_EINTERNAL);
    proto_scram_client_fini(&c);
    proto_scram_client_init_password(&c, "pencil", CNONCE);
    assert_int_equal(proto_scram_client_first(&c, out, 10, &out_len), ST_EINTERNAL);
    proto_scram_client_fini(&c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_salted_password),
        cmocka_unit_test(test_secret_from_password),
        cmocka_unit_test(test_secret_roundtrip_odd_salts),
        cmocka_unit_test(test_secret_parse_malformed),
        cmocka_unit_test(test_server_rfc7677),
        cmocka_unit_test(test_server_init_random),
        cmocka_unit_test(test_server_pg_client_first),
        cmocka_unit_test(test_server_wrong_proof),
        cmocka_unit_test(test_server_tampered_nonce),
        cmocka_unit_test(test_server_channel_binding),
        cmocka_unit_test(test_server_channel_binding_plus),
        cmocka_unit_test(test_server_extensions),
        cmocka_unit_test(test_server_first_malformed),
        cmocka_unit_test(test_server_final_malformed),
        cmocka_unit_test(test_client_pg_style),
        cmocka_unit_test(test_client_against_server),
        cmocka_unit_test(test_client_channel_binding),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_recovered_keys_login),
        cmocka_unit_test(test_client_salted_cache),
        cmocka_unit_test(test_client_bad_server_first),
        cmocka_unit_test(test_client_verify),
        cmocka_unit_test(test_client_init_errors),
    };
    return cmocka_run_group_tests_name("protocol_scram", tests, NULL, NULL);
}
