/*
 * tls.c - see tls.h. Builds OpenSSL contexts from the configuration and hands out references.
 *
 * Choices, mirroring PostgreSQL's be-secure-openssl.c where it applies: TLS 1.2 at least,
 * no renegotiation (the only thing that makes SSL_write wait for a read after the handshake),
 * no compression (CRIME), no session cache or tickets (nothing pgmux could resume cheaply is
 * worth keeping per client), partial writes so one SSL_write can return after some records,
 * a moving write buffer because the relay's buffers may be compacted between retries,
 * read-ahead, and record buffers released between records: an idle TLS session then holds
 * about 15 KiB of OpenSSL state instead of about 29 (measured with 300 idle psycopg clients),
 * for one malloc/free pair per record inside OpenSSL, small next to the record's system call
 * and cipher work. pgmux is built to hold many idle clients.
 * A peer that closes without close_notify reads as an ordinary EOF.
 *
 * Runs on the main thread (tls_load, tls_reload) and any thread (the getters).
 */
#include "proxy/tls.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "proxy/worker.h"

struct tls_err {
    char *buf;
    size_t len;
    size_t used;
    int n;
};

static void tls_err_add(struct tls_err *e, const struct cfg *cfg, int line, const char *key,
                        const char *fmt, ...) PRINTF_LIKE(5, 6);

static void
tls_err_add(struct tls_err *e, const struct cfg *cfg, int line, const char *key, const char *fmt,
            ...)
{
    e->n++;
    if (!e->buf || e->used + 1 >= e->len) {
        return;
    }
    char *p = e->buf + e->used;
    size_t left = e->len - e->used;
    int n = snprintf(p, left, "%s%s:%d: %s: ", e->used ? "\n" : "", cfg->path, line, key);
    if (n < 0 || (size_t) n >= left) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(p + n, left - (size_t) n, fmt, ap);
    va_end(ap);
    if (m < 0) {
        return;
    }
    e->used += (size_t) n + (size_t) m < left ? (size_t) n + (size_t) m : left - 1;
}

/* OpenSSL's reason for the last failure, and an empty queue. */
static const char *
ossl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : "unknown error");
    ERR_clear_error();
    return buf;
}

static void
ctx_common(SSL_CTX *ctx)
{
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* One recv per read instead of one for the record header and one for its body: a small
     * request costs a system call less. What is read ahead raises no readiness, which
     * pool_sock_read handles by feeding the read watcher (pool/sock.c). */
    SSL_CTX_set_read_ahead(ctx, 1);
}

/* Certificate chain and key; false after reporting. */
static bool
ctx_cert(SSL_CTX *ctx, struct tls_err *e, const struct cfg *cfg, const char *cert,
         const char *cert_key, int cert_line, const char *key, const char *key_key, int key_line)
{
    char why[256];
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        tls_err_add(e, cfg, cert_line, cert_key, "cannot load certificate '%s': %s", cert,
                    ossl_reason(why, sizeof(why)));
        return false;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        tls_err_add(e, cfg, key_line, key_key, "cannot load private key '%s': %s", key,
                    ossl_reason(why, sizeof(why)));
        return false;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_err_add(e, cfg, key_line, key_key, "'%s' does not match the certificate '%s'", key,
                    cert);
        ERR_clear_error();
        return false;
    }
    return true;
}

static SSL_CTX *
build_client_side(const struct cfg *cfg, struct tls_err *e)
{
    const struct cfg_tls_lines *tl = &cfg->tls_lines;
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_err_add(e, cfg, tl->client_mode, "client_tls_mode", "cannot create a TLS context: %s",
                    ossl_reason(why, sizeof(why)));
        return NULL;
    }
    ctx_common(ctx);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    int before = e->n;
    if (SSL_CTX_set_min_proto_version(ctx, cfg->client_tls_min_version) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, cfg->client_tls_max_version) != 1) {
        tls_err_add(e, cfg, tl->client_protocols, "client_tls_protocols",
                    "not supported by this OpenSSL: %s", ossl_reason(why, sizeof(why)));
    }
    if (cfg->client_tls_ciphers && SSL_CTX_set_cipher_list(ctx, cfg->client_tls_ciphers) != 1) {
        tls_err_add(e, cfg, tl->client_ciphers, "client_tls_ciphers", "'%s': %s",
                    cfg->client_tls_ciphers, ossl_reason(why, sizeof(why)));
    }
    if (cfg->client_tls_ciphersuites &&
        SSL_CTX_set_ciphersuites(ctx, cfg->client_tls_ciphersuites) != 1) {
        tls_err_add(e, cfg, tl->client_ciphersuites, "client_tls_ciphersuites", "'%s': %s",
                    cfg->client_tls_ciphersuites, ossl_reason(why, sizeof(why)));
    }
    (void) ctx_cert(ctx, e, cfg, cfg->client_tls_cert_file, "client_tls_cert_file", tl->client_cert,
                    cfg->client_tls_key_file, "client_tls_key_file", tl->client_key);
    if (cfg->client_tls_ca_file) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->client_tls_ca_file);
        if (SSL_CTX_load_verify_locations(ctx, cfg->client_tls_ca_file, NULL) != 1 || !names) {
            tls_err_add(e, cfg, tl->client_ca, "client_tls_ca_file", "cannot load '%s': %s",
                        cfg->client_tls_ca_file, ossl_reason(why, sizeof(why)));
            sk_X509_NAME_pop_free(names, X509_NAME_free);
        } else {
            /* A CA file means client certificates are part of the login: no certificate, no
             * connection (PgBouncer's verify-ca for clients). */
            SSL_CTX_set_client_CA_list(ctx, names);
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        }
    }
    if (e->n != before) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static SSL_CTX *
build_server_side(const struct cfg *cfg, struct tls_err *e)
{
    const struct cfg_tls_lines *tl = &cfg->tls_lines;
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        tls_err_add(e, cfg, tl->server_mode, "server_tls_mode", "cannot create a TLS context: %s",
                    ossl_reason(why, sizeof(why)));
        return NULL;
    }
    ctx_common(ctx);
    int before = e->n;
    (void) SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (cfg->server_tls_ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, cfg->server_tls_ca_file, NULL) != 1) {
            tls_err_add(e, cfg, tl->server_ca, "server_tls_ca_file", "cannot load '%s': %s",
                        cfg->server_tls_ca_file, ossl_reason(why, sizeof(why)));
        }
    } else if (cfg->server_tls_mode >= CFG_SERVER_TLS_VERIFY_CA) {
        (void) SSL_CTX_set_default_verify_paths(ctx);
        ERR_clear_error();
    }
    if (cfg->server_tls_cert_file && cfg->server_tls_key_file) {
        (void) ctx_cert(ctx, e, cfg, cfg->server_tls_cert_file, "server_tls_cert_file",
                        tl->server_cert, cfg->server_tls_key_file, "server_tls_key_file",
                        tl->server_key);
    }
    if (e->n != before) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int
tls_init(struct tls_state *t)
{
    memset(t, 0, sizeof(*t));
    atomic_init(&t->client_mode, CFG_CLIENT_TLS_DISABLE);
    atomic_init(&t->server_mode, CFG_SERVER_TLS_DISABLE);
    return pthread_mutex_init(&t->mu, NULL) == 0 ? 0 : -1;
}

void
tls_fini(struct tls_state *t)
{
    SSL_CTX_free(t->client_ctx);
    SSL_CTX_free(t->server_ctx);
    t->client_ctx = t->server_ctx = NULL;
    pthread_mutex_destroy(&t->mu);
}

int
tls_load(struct tls_state *t, const struct cfg *cfg, char *err, size_t errlen)
{
    struct tls_err e = { .buf = err, .len = errlen };
    if (err && errlen) {
        err[0] = '\0';
    }
    SSL_CTX *cctx = NULL, *sctx = NULL;
    if (cfg->client_tls_mode != CFG_CLIENT_TLS_DISABLE) {
        cctx = build_client_side(cfg, &e);
    }
    if (cfg->server_tls_mode != CFG_SERVER_TLS_DISABLE) {
        sctx = build_server_side(cfg, &e);
    }
    if (e.n > 0) {
        SSL_CTX_free(cctx);
        SSL_CTX_free(sctx);
        return -1;
    }
    pthread_mutex_lock(&t->mu);
    SSL_CTX *old_c = t->client_ctx, *old_s = t->server_ctx;
    t->client_ctx = cctx;
    t->server_ctx = sctx;
    atomic_store(&t->client_mode, (int) cfg->client_tls_mode);
    atomic_store(&t->server_mode, (int) cfg->server_tls_mode);
    pthread_mutex_unlock(&t->mu);
    /* SSL objects made from the old contexts hold references of their own. */
    SSL_CTX_free(old_c);
    SSL_CTX_free(old_s);
    return 0;
}

int
tls_reload(struct runtime *rt, const struct cfg *cfg, char *err, size_t errlen)
{
    return tls_load(&rt->tls, cfg, err, errlen);
}

struct ssl_ctx_st *
tls_client_ctx(struct tls_state *t)
{
    pthread_mutex_lock(&t->mu);
    SSL_CTX *ctx = t->client_ctx;
    if (ctx) {
        SSL_CTX_up_ref(ctx);
    }
    pthread_mutex_unlock(&t->mu);
    return ctx;
}

enum cfg_client_tls
tls_client_mode(struct tls_state *t)
{
    return (enum cfg_client_tls) atomic_load_explicit(&t->client_mode, memory_order_relaxed);
}

struct ssl_ctx_st *
tls_server_ctx(void *arg, enum pool_tls *mode)
{
    struct tls_state *t = arg;
    pthread_mutex_lock(&t->mu);
    SSL_CTX *ctx = t->server_ctx;
    *mode = ctx ? (enum pool_tls) atomic_load(&t->server_mode) : POOL_TLS_DISABLE;
    if (ctx) {
        SSL_CTX_up_ref(ctx);
    }
    pthread_mutex_unlock(&t->mu);
    return ctx;
}
