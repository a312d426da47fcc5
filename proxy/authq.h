/*
 * authq.h - auth_query: users missing from auth_file are looked up on the primary with
 * auth_user's credentials, by one dedicated lookup thread using libpq (blocking, with connect and
 * statement timeouts), never on a worker loop (CONVENTIONS 6.9). Answers are cached for every
 * worker: found secrets for auth_cache_ttl, "no such user" for at most AUTHQ_NEGATIVE_TTL_MS.
 *
 * A worker first asks the cache (authq_cached, a short mutex at login, never per message); on a
 * miss it queues a request (authq_request) and the answer comes back as a struct authq_reply in
 * that worker's inbox (pool_worker_post), run by the callback given to authq_start.
 *
 * Secrets are never logged and are wiped whenever pgmux frees one (cache entries, replies, the
 * lookup thread's copies, libpq's result memory).
 *
 * Threads: authq_start/authq_stop on the main thread; authq_cached/authq_request on workers;
 * the lookup thread runs everything else.
 */
#ifndef PGMUX_PROXY_AUTHQ_H
#define PGMUX_PROXY_AUTHQ_H

#include <stdbool.h>
#include <stdint.h>

#include "common/macros.h"
#include "common/status.h"
#include "pool/pool.h"

struct cfg;
struct authq;

/* "No such user" is remembered at most this long (or auth_cache_ttl when shorter): long enough
 * to absorb a burst of logins for a missing name, short enough that a new role works soon. */
#define AUTHQ_NEGATIVE_TTL_MS 5000

enum authq_outcome {
    AUTHQ_MISS,      /* authq_cached only: ask the lookup thread */
    AUTHQ_FOUND,     /* the user exists and has a secret */
    AUTHQ_NOT_FOUND, /* no row, or a NULL or empty secret: the user cannot log in */
    AUTHQ_FAILED,    /* the lookup itself failed (server down, query error, timeout) */
};

/* The answer posted to the asking worker. The callback owns it: authq_reply_free. */
struct authq_reply {
    struct pool_msg msg;
    uint64_t client_id;
    enum authq_outcome outcome;
    char *secret; /* AUTHQ_FOUND: owned, wiped by authq_reply_free */
};

/**
 * Start the lookup thread. on_reply runs on the asking worker for each answer. Returns 0 and
 * *out, or -1.
 */
int authq_start(struct authq **out,
                void (*on_reply)(struct pool_worker *, struct pool_msg *)) MUST_CHECK;

/**
 * Stop and join the lookup thread, answer nothing more, and free the cache (wiped). Requests
 * still queued are dropped. Call after the workers have stopped. Accepts NULL.
 */
void authq_stop(struct authq *q);

/**
 * The cached answer for user, if fresh: AUTHQ_FOUND with *secret (a copy the caller frees with
 * authq_secret_free), AUTHQ_NOT_FOUND, or AUTHQ_MISS. Any thread.
 */
enum authq_outcome authq_cached(struct authq *q, const char *user, char **secret);

/**
 * Queue a lookup of user for the client client_id of worker pw. cfg (a reference is taken)
 * supplies auth_user and its password, auth_query, auth_dbname (else database is used),
 * auth_cache_ttl and the timeouts; host and port name the server to ask. Returns ST_OK,
 * ST_ENOMEM, or ST_EPOOL when too many lookups are queued already. Worker thread.
 */
enum status authq_request(struct authq *q, struct cfg *cfg, struct pool_worker *pw,
                          uint64_t client_id, const char *user, const char *database,
                          const char *host, int port) MUST_CHECK;

/** Wipe and free a reply (and its secret). */
void authq_reply_free(struct authq_reply *r);

/** Wipe and free a secret from authq_cached. Accepts NULL. */
void authq_secret_free(char *secret);

#endif
