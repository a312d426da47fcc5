/*
 * tls.h - the OpenSSL contexts pgmux uses towards clients (server role) and towards PostgreSQL
 * servers (client role), built from the configuration and swapped whole on reload.
 *
 * New connections take a reference to the current context under a short mutex (once per TLS
 * connection, never per message); a session holds its SSL object, which holds its own
 * reference, so a reload never touches connections already established.
 *
 * tls_load and tls_reload: main thread (they read files). The getters: any thread.
 */
#ifndef PGMUX_PROXY_TLS_H
#define PGMUX_PROXY_TLS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "common/macros.h"
#include "pool/pool.h"
#include "proxy/config.h"

struct runtime;

struct tls_state {
    pthread_mutex_t mu;
    struct ssl_ctx_st *client_ctx; /* under mu; NULL when client_tls_mode = disable */
    struct ssl_ctx_st *server_ctx; /* under mu; NULL when server_tls_mode = disable */
    atomic_int client_mode;        /* enum cfg_client_tls, matches client_ctx */
    atomic_int server_mode;        /* enum cfg_server_tls, matches server_ctx */
};

/** Set up an empty state (TLS off both ways). 0, or -1. */
int tls_init(struct tls_state *t) MUST_CHECK;

/** Free the contexts (connections still holding SSL objects keep theirs alive). */
void tls_fini(struct tls_state *t);

/**
 * Build both contexts from cfg (reading certificate, key and CA files) and, when both build,
 * publish them; on any problem nothing changes. Errors are lines "FILE:LINE: key: reason"
 * joined with '\n' into err. 0, or -1. Main thread.
 */
int tls_load(struct tls_state *t, const struct cfg *cfg, char *err, size_t errlen) MUST_CHECK;

/**
 * Reload hook: re-read the certificates and settings of cfg into rt's TLS state, so new
 * connections use them; existing connections keep theirs. Same contract as tls_load.
 */
int tls_reload(struct runtime *rt, const struct cfg *cfg, char *err, size_t errlen) MUST_CHECK;

/** The client-side context with a new reference (SSL_CTX_free it), or NULL for no TLS. */
struct ssl_ctx_st *tls_client_ctx(struct tls_state *t);

/** The current client_tls_mode. */
enum cfg_client_tls tls_client_mode(struct tls_state *t);

/** pool_tls_fn for pool_set: the server-side context (new reference) and mode. */
struct ssl_ctx_st *tls_server_ctx(void *arg, enum pool_tls *mode);

#endif
