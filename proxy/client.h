/*
 * client.h - a client session: startup, authentication, waiting for a server connection,
 * relaying, teardown. One teardown function (client_close) ends every path (CONVENTIONS 3.1.6).
 *
 * A client belongs to the worker that accepted it, for its whole life.
 */
#ifndef PGMUX_PROXY_CLIENT_H
#define PGMUX_PROXY_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/list.h"
#include "common/status.h"
#include "pool/pool.h"
#include "pool/sock.h"
#include "protocol/scram.h"

struct worker;
struct cfg_user;

enum client_state {
    CLIENT_STARTUP, /* w->clients_login: reading the startup packet */
    CLIENT_AUTH,    /* w->clients_login: exchanging authentication messages */
    CLIENT_WAITING, /* w->clients_waiting: authenticated, waiting for a server connection */
    CLIENT_SETTING, /* w->clients_waiting: replaying startup parameters on the server */
    CLIENT_ACTIVE,  /* w->clients_active: relaying to and from its server connection */
    CLIENT_CLOSED,  /* w->to_free: freed at the end of the loop iteration */
};

enum client_auth_kind {
    CLIENT_AUTH_NONE,
    CLIENT_AUTH_MD5,
    CLIENT_AUTH_SCRAM,
};

struct client_auth {
    enum client_auth_kind kind;
    uint8_t md5_salt[4];
    struct proto_scram_server scram;
};

struct client {
    struct ilist_node node;
    struct pool_sock sock;
    struct worker *w;
    enum client_state state;
    uint64_t id; /* generation << 32 | slot: stale grants and cancels miss */
    uint32_t slot;
    uint32_t cancel_key;  /* the key of our BackendKeyData */
    int64_t since_us;     /* entered the current state */
    int64_t last_read_us; /* last byte from the client */

    char *startup; /* copy of the startup packet (owned); params point into it */
    uint32_t startup_len;
    const char *user;          /* in startup */
    const char *database;      /* in startup */
    const struct cfg_user *cu; /* auth_file entry, NULL for an unknown user */
    struct client_auth *auth;  /* only while authenticating */
    bool is_ssl_answered;      /* an SSLRequest was answered 'N' */
    bool is_gss_answered;
    bool is_over_limit; /* accepted beyond max_client_conn: refuse after startup */
    bool is_counted;    /* holds one unit of rt->n_clients */

    struct pool *pool;
    struct pool_conn *sc;       /* attached server connection (CLIENT_SETTING, CLIENT_ACTIVE) */
    struct pool_waiter waiter;  /* linked in pool->waiters while queued */
    bool is_queued;             /* waiter was queued (grant or cancel pending) */
    bool is_opening;            /* a connection is being opened for us */
    struct proto_err set_error; /* first error while replaying parameters */
    char set_sqlstate[6];
    bool has_set_error;

    char addr[64]; /* peer address, for logs */
};

/** Take over an accepted socket (already non-blocking). */
void client_accept(struct worker *w, int fd, const struct sockaddr *sa, socklen_t salen);

/**
 * Tear the session down: release or close its server connection, leave the wait queue, close
 * the socket, and queue the struct for freeing. Safe to call twice.
 */
void client_close(struct client *c, const char *why);

/**
 * Send an error for st (severity, SQLSTATE and message from the one table, CONVENTIONS
 * 4.2.1), with detail when not NULL, then close the session.
 */
void client_fail(struct client *c, enum status st, const char *detail);

/** Periodic checks of worker w's sessions: login, wait and idle timeouts. */
void client_tick(struct worker *w, int64_t now_us);

/** Free closed sessions; from the worker's ev_check watcher. */
void client_reap(struct worker *w);

/** Pool callbacks (see pool.h). */
void client_on_grant(struct pool_worker *pw, struct pool *p, struct pool_conn *sc,
                     uint64_t waiter_id);
void client_on_ready(struct pool_worker *pw, struct pool_conn *sc, uint64_t opener_id);
void client_on_failed(struct pool_worker *pw, struct pool *p, uint64_t opener_id,
                      const struct pool_failure *f);

/** A CancelRequest for (pid, key) arrived on some worker; route it to the owner. */
void client_cancel_dispatch(struct worker *w, uint32_t pid, uint32_t key);

/** Find a live session of worker w by slot. */
struct client *client_by_slot(struct worker *w, uint32_t slot);

/* relay.c: the byte path of an ACTIVE session. */
void relay_start(struct client *c);
void relay_stop(struct client *c);

/* cancel.c: send a CancelRequest for a server connection of c. */
void cancel_send(struct worker *w, const struct pool_node *node, uint32_t be_pid, uint32_t be_key);
void cancel_tick(struct worker *w, int64_t now_us);
void cancel_close_all(struct worker *w);

#endif
