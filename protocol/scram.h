/*
 * scram.h - SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it: the server side that
 * authenticates clients to pgmux, and the client side that logs pgmux in to PostgreSQL, both
 * with SCRAM-SHA-256-PLUS (channel binding type tls-server-end-point, RFC 5929) over TLS. Pure
 * apart from OpenSSL's RNG for nonces; any thread.
 *
 * When a client proves itself against a stored SCRAM secret, the server side recovers the
 * client's ClientKey (ClientProof XOR ClientSignature). With that key and the secret's
 * ServerKey, the client side can log in to a PostgreSQL server that stores the same secret
 * (same salt and iterations), so no plaintext password has to be written into pgmux's files.
 *
 * Reference: PostgreSQL documentation, "SASL Authentication" (sasl-authentication.html).
 */
#ifndef PGMUX_PROTOCOL_SCRAM_H
#define PGMUX_PROTOCOL_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macros.h"
#include "common/status.h"
#include "protocol/wire.h"

struct x509_st;

#define PROTO_SCRAM_KEY_LEN            32
#define PROTO_SCRAM_MAX_SALT           64
#define PROTO_SCRAM_NONCE_LEN          24 /* random bytes before base64 */
#define PROTO_SCRAM_DEFAULT_ITERATIONS 4096
#define PROTO_SCRAM_MSG_MAX            512 /* generous bound for any SCRAM message we build or accept */
/* tls-server-end-point binding data: a hash of the server's certificate, SHA-512 at most. */
#define PROTO_SCRAM_CBIND_MAX 64
/* Most iterations pgmux runs PBKDF2 for when a server names them (about a second of CPU): a
 * hostile or impersonated server must not stall a worker for hours. PostgreSQL's default is
 * 4096. */
#define PROTO_SCRAM_MAX_ITERATIONS 1000000

/* A stored secret: "SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>". */
struct proto_scram_secret {
    int iterations;
    uint8_t salt[PROTO_SCRAM_MAX_SALT];
    size_t salt_len;
    uint8_t stored_key[PROTO_SCRAM_KEY_LEN];
    uint8_t server_key[PROTO_SCRAM_KEY_LEN];
};

/** Parse a stored secret. Returns false for anything malformed. */
bool proto_scram_secret_parse(const char *s, struct proto_scram_secret *out) MUST_CHECK;

/* Room for any formatted secret: prefix, 10-digit count, 64-byte salt and two keys in base64. */
#define PROTO_SCRAM_SECRET_MAX 256

/**
 * Write secret in the stored form proto_scram_secret_parse reads, NUL-terminated, into out
 * (cap bytes; PROTO_SCRAM_SECRET_MAX always suffices). Returns false when it does not fit or
 * the secret has no salt or a non-positive iteration count.
 */
bool proto_scram_secret_format(const struct proto_scram_secret *secret, char *out,
                               size_t cap) MUST_CHECK;

/** SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations). Returns false on failure. */
bool proto_scram_salted_password(const char *password, const uint8_t *salt, size_t salt_len,
                                 int iterations, uint8_t out[PROTO_SCRAM_KEY_LEN]) MUST_CHECK;

/**
 * Derive a secret from a plaintext password with the given salt and iterations (what
 * PostgreSQL stores for it). Returns false on failure.
 */
bool proto_scram_secret_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                                      int iterations, struct proto_scram_secret *out) MUST_CHECK;

/* ---- server side: pgmux authenticating a client ---- */

struct proto_scram_server {
    int state; /* 0 = expecting client-first, 1 = expecting client-final, 2 = done */
    struct proto_scram_secret secret;
    char nonce[PROTO_SCRAM_MSG_MAX];             /* client nonce + server nonce */
    char client_first_bare[PROTO_SCRAM_MSG_MAX]; /* for the AuthMessage */
    char server_first[PROTO_SCRAM_MSG_MAX];
    char gs2_header[32]; /* "n,,", "y,," or "p=tls-server-end-point,," as the client sent it */
    uint8_t cbind[PROTO_SCRAM_CBIND_MAX];    /* tls-server-end-point data while -PLUS is offered */
    uint8_t cbind_len;                       /* 0: SCRAM-SHA-256-PLUS not offered */
    bool is_plus;                            /* the client chose SCRAM-SHA-256-PLUS */
    uint8_t client_key[PROTO_SCRAM_KEY_LEN]; /* recovered ClientKey, valid after ST_OK final */
};

/**
 * Start an exchange against secret. server_nonce: NULL for a fresh random nonce, or a fixed
 * string for tests.
 */
void proto_scram_server_init(struct proto_scram_server *s, const struct proto_scram_secret *secret,
                             const char *server_nonce);

/**
 * Start an exchange against secret with the caller's random bytes as the server nonce (in
 * base64), e.g. from a pool that is refilled in bulk: RAND_bytes for each login costs more
 * than the rest of the server side of the exchange but the hashing.
 */
void proto_scram_server_init_random(struct proto_scram_server *s,
                                    const struct proto_scram_secret *secret,
                                    const uint8_t random[PROTO_SCRAM_NONCE_LEN]);

/**
 * Offer SCRAM-SHA-256-PLUS on a TLS connection: data (len <= PROTO_SCRAM_CBIND_MAX bytes) is the
 * tls-server-end-point binding, the hash of the certificate pgmux presented (RFC 5929 section
 * 4.1). Between init and the client-first-message.
 */
void proto_scram_server_offer_plus(struct proto_scram_server *s, const uint8_t *data, size_t len);

/**
 * The mechanism named by the client's SASLInitialResponse: ST_OK for SCRAM-SHA-256, or for
 * SCRAM-SHA-256-PLUS when it was offered; ST_ECLIENT_PROTOCOL for anything else.
 */
enum status proto_scram_server_mechanism(struct proto_scram_server *s, const char *mechanism);

/**
 * Take the client-first-message (the SASLInitialResponse data) and write the server-first-
 * message into out (cap bytes, not NUL-terminated), its length in *out_len.
 * Returns ST_OK, or ST_ECLIENT_PROTOCOL for a malformed message or a channel-binding flag that
 * does not fit the mechanism and the offer (as PostgreSQL checks it: "p=" only with -PLUS, "y"
 * only where -PLUS was not offered), with err saying why; ST_EINTERNAL when init could not make
 * a nonce or out is too small.
 */
enum status proto_scram_server_first(struct proto_scram_server *s, const uint8_t *msg, size_t len,
                                     char *out, size_t cap, size_t *out_len,
                                     struct proto_err *err) MUST_CHECK;

/**
 * Take the client-final-message; when the proof is right write the server-final-message
 * ("v=...") into out and keep the recovered ClientKey in s->client_key.
 * Returns ST_OK, ST_EAUTH for a wrong proof, ST_ECLIENT_PROTOCOL for a malformed message or a
 * nonce or channel-binding mismatch (or when called out of order), ST_EINTERNAL when out is too
 * small or OpenSSL fails. Any outcome but ST_OK from either step ends the exchange.
 */
enum status proto_scram_server_final(struct proto_scram_server *s, const uint8_t *msg, size_t len,
                                     char *out, size_t cap, size_t *out_len,
                                     struct proto_err *err) MUST_CHECK;

/** Wipe the exchange's keys. */
void proto_scram_server_fini(struct proto_scram_server *s);

/* ---- client side: pgmux logging in to PostgreSQL ---- */

struct proto_scram_client {
    int state; /* 0 = nothing sent, 1 = client-first sent, 2 = client-final sent, 3 = done */
    bool have_password;
    bool have_keys;
    char password[256];                      /* when logging in with a plaintext password */
    uint8_t client_key[PROTO_SCRAM_KEY_LEN]; /* when logging in with recovered keys */
    uint8_t server_key[PROTO_SCRAM_KEY_LEN];
    uint8_t salted_password[PROTO_SCRAM_KEY_LEN]; /* offered or computed SaltedPassword */
    bool have_salted;                             /* salted_password valid for salted_salt/iter */
    uint8_t salted_salt[PROTO_SCRAM_MAX_SALT];
    size_t salted_salt_len;
    int salted_iterations;
    char client_nonce[64];
    char client_first_bare[PROTO_SCRAM_MSG_MAX];
    char auth_message[3 * PROTO_SCRAM_MSG_MAX];
    uint8_t expected_server_signature[PROTO_SCRAM_KEY_LEN];
    char gs2_header[32];                  /* "n,,", "y,," or "p=tls-server-end-point,," */
    uint8_t cbind[PROTO_SCRAM_CBIND_MAX]; /* with "p=": the server certificate's hash */
    uint8_t cbind_len;
};

/** Log in with a plaintext password. client_nonce: NULL for random, fixed for tests. */
void proto_scram_client_init_password(struct proto_scram_client *c, const char *password,
                                      const char *client_nonce);

/** Log in with a ClientKey and ServerKey recovered from a client's proof. */
void proto_scram_client_init_keys(struct proto_scram_client *c,
                                  const uint8_t client_key[PROTO_SCRAM_KEY_LEN],
                                  const uint8_t server_key[PROTO_SCRAM_KEY_LEN],
                                  const char *client_nonce);

/**
 * Offer a SaltedPassword computed earlier for (salt, iterations). When the server names the same
 * salt and iterations the exchange skips PBKDF2; otherwise it computes it (CONVENTIONS 6.10: the
 * caller caches per worker what c->salted_password holds after proto_scram_client_final).
 */
void proto_scram_client_set_salted(struct proto_scram_client *c,
                                   const uint8_t salted[PROTO_SCRAM_KEY_LEN], const uint8_t *salt,
                                   size_t salt_len, int iterations);

/**
 * Over TLS, before client_first: with data (the tls-server-end-point hash of the server's
 * certificate, len <= PROTO_SCRAM_CBIND_MAX) the exchange binds to it, for SCRAM-SHA-256-PLUS;
 * without (NULL, 0: the server did not offer -PLUS) it says "y", that it could have bound, so a
 * server that does offer it knows the offer was taken away on the way.
 */
void proto_scram_client_bind(struct proto_scram_client *c, const uint8_t *data, size_t len);

/**
 * The tls-server-end-point binding data of a certificate (RFC 5929 section 4.1, as PostgreSQL
 * computes it): its hash with its signature's hash function, SHA-256 for MD5 and SHA-1, into
 * out (PROTO_SCRAM_CBIND_MAX bytes). Its length, or 0 when the signature has no single hash
 * (Ed25519) or OpenSSL fails.
 */
size_t proto_scram_cert_end_point(const struct x509_st *cert, uint8_t *out);

/**
 * Write the client-first-message ("n,,n=,r=<nonce>", or with the header bind chose) for
 * SASLInitialResponse. ST_OK;
 * ST_ECONFIG when init was given a password longer than 255 bytes; ST_EINTERNAL when called out
 * of order, no nonce could be made or out is too small.
 */
enum status proto_scram_client_first(struct proto_scram_client *c, char *out, size_t cap,
                                     size_t *out_len) MUST_CHECK;

/**
 * Take the server-first-message and write the client-final-message.
 * After ST_OK with a password, c->salted_password/salted_salt/salted_iterations hold what was
 * used, for the caller's cache. With keys, PBKDF2 is never run (the proof comes from ClientKey).
 * Returns ST_OK, or ST_ESERVER_PROTOCOL for a malformed message or a nonce that does not extend
 * ours; ST_EINTERNAL when called out of order, out is too small or OpenSSL fails.
 */
enum status proto_scram_client_final(struct proto_scram_client *c, const uint8_t *msg, size_t len,
                                     char *out, size_t cap, size_t *out_len,
                                     struct proto_err *err) MUST_CHECK;

/**
 * Check the server-final-message's signature. ST_OK, ST_EAUTH when the server cannot prove it
 * knows the secret, ST_ESERVER_PROTOCOL when malformed or an "e=" error is sent (err quotes it),
 * ST_EINTERNAL when called out of order.
 */
enum status proto_scram_client_verify(struct proto_scram_client *c, const uint8_t *msg, size_t len,
                                      struct proto_err *err) MUST_CHECK;

/** Wipe the password and keys. */
void proto_scram_client_fini(struct proto_scram_client *c);

#endif
