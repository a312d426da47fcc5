/*
 * client.h - a client session: startup, authentication, waiting for a server connection,
 * relaying, teardown. One teardown function (client_close) ends every path (CONVENTIONS 3.1.6).
 *
 * A client belongs to one worker at a time: the one that accepted it, or (worker_balance) an
 * active worker it was handed to between transactions, as an idle server connection is
 * (client_move; balance.h says when).
 */
#ifndef PGMUX_PROXY_CLIENT_H
#define PGMUX_PROXY_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/hidx.h"
#include "common/list.h"
#include "common/status.h"
#include "pool/pool.h"
#include "pool/sock.h"
#include "protocol/scram.h"
#include "proxy/config.h"

struct worker;
struct cfg;
struct cfg_user;
struct stats_pool;
struct admin_session;

/* Bytes of query text kept for the slow-query log, with the NUL. */
#define CLIENT_QUERY_TEXT_LEN 128

/* How log lines name a session: worker.generation, unique in the process. */
#define CLIENT_ID_FMT "%d.%u"
#define CLIENT_ID(c)  (c)->w->idx, (unsigned) ((c)->waiter.id >> 32)

enum client_state {
    CLIENT_STARTUP, /* w->clients_login: reading the startup packet */
    CLIENT_IDLE,    /* w->clients_idle: logged in, no server connection (transaction pooling) */
    CLIENT_AUTH,    /* w->clients_login: exchanging authentication messages */
    CLIENT_WAITING, /* w->clients_waiting: authenticated, waiting for a server connection */
    CLIENT_SETTING, /* w->clients_waiting: replaying parameters on the server (or reading
                       back tracked ones before releasing it) */
    CLIENT_ACTIVE,  /* w->clients_active: relaying to and from its server connection */
    CLIENT_ADMIN,   /* w->clients_admin: a session of the admin console (admin.c) */
    CLIENT_CLOSED,  /* w->to_free: freed at the end of the loop iteration */
};

enum client_auth_kind {
    CLIENT_AUTH_NONE,
    CLIENT_AUTH_MD5,
    CLIENT_AUTH_SCRAM,
    CLIENT_AUTH_PASSWORD, /* cleartext password (hba method "password") */
};

struct client_auth {
    struct cfg *cfg; /* the snapshot login->cu points into: a reload during the exchange must not
                        free it (one reference) */
    enum client_auth_kind kind;
    uint8_t md5_salt[4];
    struct cfg_user aq_user; /* the user as auth_query found it (name borrowed, secret owned);
                                login->cu points here for such a user */
    struct proto_scram_server *scram; /* CLIENT_AUTH_SCRAM and CLIENT_AUTH_PASSWORD only (owned):
                                         an md5 login does without its ~1.7 KiB */
};

/*
 * What a session needs only while it logs in: allocated with the startup packet, freed once
 * the session is logged in (admin console sessions keep it: admin.c reads their startup
 * parameters). Keeping it out of struct client is most of what makes an idle session small.
 */
struct client_login {
    const struct cfg_user *cu; /* auth_file entry, NULL for an unknown user (points into
                                  auth->cfg, or w->cfg without an exchange) */
    struct client_auth *auth;  /* only while authenticating */
    const char *user;          /* in startup */
    const char *database;      /* in startup */
    const char *opts;          /* settings of the "options" parameter, "name\0value\0" each,
                                  after the packet in startup[] (proto_options_split) */
    int n_opts;
    uint32_t startup_len;
    char startup[]; /* copy of the startup packet, then opts */
};

/*
 * State few sessions ever need, allocated on first use (client_aux) and freed with the
 * session: an idle session pays one pointer for all of it.
 */
struct client_aux {
    struct admin_session *admin; /* CLIENT_ADMIN only (owned) */
    char *set_error;             /* first error of pgmux's own query: SQLSTATE, NUL, message
                                    (allocated only when there is one) */
    char *query_text;            /* start of the request's SQL for the slow-query log, NUL-ended
                                    (CLIENT_QUERY_TEXT_LEN bytes, allocated once when
                                    log_min_duration is set) */
    int64_t drain_rest_us;       /* draining: when the drain first saw the session between
                                    transactions (0 = not seen so) */
    int64_t await_until_us;      /* give up waiting for a primary then; 0 = not waiting since
                                    the last server */
    int await_node;              /* the node whose connection failed, -1 when none was usable */
};

/* A statement the client prepared with a named Parse (transaction and statement pooling). */
struct client_stmt {
    char *name;  /* the client's name */
    uint64_t h1; /* SHA-256 of tail, the server-side name (pool_stmt_name) */
    uint64_t h2;
    uint8_t *tail; /* Parse body after the name: query, parameter count and types */
    uint32_t tail_len;
    uint32_t name_hash; /* hidx_hash_str(name), its key in client_stmts.idx */
    bool is_pending;    /* its Parse has not been answered yet: an error there undoes it */
    bool is_read;       /* its text may run on a replica (a Bind of it routes as a read) */
    bool is_classified; /* is_read is known; false when it was prepared while no replica
                           could read (routing classifies it when a Bind first needs it) */
};

/* The named prepared statements of a session; allocated with its first one. Looked up by
 * name for every Bind and Describe: idx finds one without scanning all. */
struct client_stmts {
    int n;
    int cap;
    struct hidx idx;        /* by name_hash; room for cap */
    struct client_stmt v[]; /* [cap] */
};

/*
 * A session. An idle one costs what this struct costs (plus libev's per-descriptor slot in
 * each worker's loop), so everything a session needs only sometimes lives behind a pointer
 * (login, aux, stmts, want's array): see README "Performance" for the measured figure. Order
 * keeps related fields together without holes; flags are one bit each.
 */
struct client {
    struct ilist_node node;
    struct pool_sock sock;
    struct worker *w;
    enum client_state state;
    uint32_t cancel_key;  /* the key of our BackendKeyData */
    uint32_t home_pid;    /* the pid of our BackendKeyData: the accepting worker's index <<
                             WORKER_SLOT_BITS | its slot, which keeps forwarding cancels while
                             the session lives on another worker (worker_balance) */
    int64_t since_us;     /* entered the current state */
    int64_t last_read_us; /* last byte from the client */
    int64_t connected_us; /* accepted (mono_now_us), for the disconnect line and
                             client_login_timeout, which counts from here */

    struct client_login *login; /* only while logging in (and for console sessions) */
    struct client_aux *aux;     /* NULL until something rare needs it (client_aux) */
    struct pool *pool;
    struct pool_conn *sc;       /* attached server connection (CLIENT_SETTING, CLIENT_ACTIVE) */
    struct pool_waiter waiter;  /* linked in pool->waiters while queued; waiter.id is the
                                   session's id, generation << 32 | slot on its current worker
                                   (client_id): stale grants and cancels miss */
    struct pool_params want;    /* parameter values this client set (startup or SET);
                                   tracked ones it did not set are the pool's defaults */
    uint64_t want_hash;         /* order-independent hash of want, never 0 */
    struct stats_pool *stats;   /* this worker's counters for the pool the session's gauges
                                   are counted in (stats.h); NULL before login */
    int64_t req_start_us;       /* first message of a request awaiting ReadyForQuery, 0 = none */
    int64_t xact_start_us;      /* first message of the running transaction, 0 = none */
    struct client_stmts *stmts; /* named prepared statements (transaction pooling), NULL: none */

    /* read/write routing (routing.c) */
    uint64_t ryw_lsn;       /* read_your_writes = lsn: WAL insert position after its last
                               write transaction; reads need a replica past it (0: none) */
    int64_t ryw_until_us;   /* read_your_writes = window: reads on the primary until then */
    int16_t route_node;     /* node of the server it holds or waits for, -1: none (counted
                               in w->routing.active) */
    uint16_t n_ryw_pending; /* commit positions of its writes still being learned: its
                               reads go to the primary until none is */

    uint8_t peer[16]; /* peer address (IPv4 in the first 4 bytes), formatted only for log
                         lines: an idle session should cost little */
    uint16_t peer_port;
    uint8_t peer_family;     /* AF_INET, AF_INET6, AF_UNIX */
    uint8_t mode;            /* enum cfg_pool_mode for this session */
    uint8_t method;          /* enum hba_method: how this client must authenticate (auth_type, or
                                its hba_file line) */
    bool is_c2s_paused;      /* the relay waits for bytes to drain before injecting */
    bool is_c2s_send_queued; /* io_uring: a send to the server waits in the batch */
    bool is_s2c_send_queued; /* io_uring: a send to the client waits in the batch; the server
                                is not given back before it went */
    bool is_s2c_paused;

    bool is_ssl_answered : 1; /* an SSLRequest was answered 'N' */
    bool is_gss_answered : 1;
    bool is_over_limit : 1;  /* accepted beyond max_client_conn: refuse after startup */
    bool is_counted : 1;     /* holds one unit of rt->n_clients */
    bool is_queued : 1;      /* waiter was queued (grant or cancel pending) */
    bool is_held : 1;        /* CLIENT_WAITING without asking the pool: its database is paused */
    bool is_opening : 1;     /* a connection is being opened for us */
    bool is_capturing : 1;   /* CLIENT_SETTING reads tracked values back, then releases */
    bool is_welcomed : 1;    /* ParameterStatus/BackendKeyData/ReadyForQuery were sent */
    bool is_pinned : 1;      /* session state keeps the server connection (txn pooling) */
    bool needs_capture : 1;  /* a tracked parameter the server does not report may have
                                changed: read it back before releasing the server */
    bool is_recv_queued : 1; /* io_uring: a receive waits in the worker's batch (iobatch.c) */
    bool wants_linger : 1;   /* close by half-closing and reading what the client still sends
                                (worker_linger), so the FATAL it was sent is not lost to a
                                reset */
    bool is_over_addr_limit : 1;   /* beyond max_client_conn_per_addr: refuse after startup */
    bool is_addr_counted : 1;      /* holds one unit of its address in rt->peers */
    bool is_looking_up : 1;        /* CLIENT_AUTH: waiting for auth_query's answer, not reading */
    bool is_route_read : 1;        /* routed as a read (a replica refusing falls back to primary) */
    bool txn_wrote : 1;            /* the transaction may have written: learn its commit position */
    bool has_unlearned_write : 1;  /* read_your_writes = lsn: it may have written while no
                                      replica could read, and that commit position was not
                                      learned */
    bool is_read_only_session : 1; /* default_transaction_read_only or target_session_attrs
                                      said it will not write */
    bool is_awaiting_primary : 1;  /* CLIENT_WAITING for a usable primary (failover), not
                                      queued */
};

/*
 * The session's user and database: the pool's copy once it has a pool (every pool of a
 * session, whichever node routing picks, has the same pair), else the startup packet's while
 * it logs in (and for console sessions); NULL before the startup packet. Not stored in the
 * session: 16 bytes of every idle one.
 */
static inline const char *
client_user(const struct client *c)
{
    return c->pool ? c->pool->user : c->login ? c->login->user : NULL;
}

static inline const char *
client_database(const struct client *c)
{
    return c->pool ? c->pool->database : c->login ? c->login->database : NULL;
}

/** The session's id: generation << 32 | slot, unique on its current worker. */
static inline uint64_t
client_id(const struct client *c)
{
    return c->waiter.id;
}

/** The session's slot in its worker (w->slots), the low half of its id. */
static inline uint32_t
client_slot(const struct client *c)
{
    return (uint32_t) c->waiter.id;
}

/**
 * The session's rarely used state, allocated (zeroed, await_node -1) on first call. NULL when
 * out of memory. Worker thread of c.
 */
struct client_aux *client_aux(struct client *c);

/** The peer address as text, for log lines (a per-thread buffer, valid until the next call). */
const char *client_addr(const struct client *c);

/**
 * c->pool was replaced (routing picked another node's pool): the session's statistics (its
 * gauge and the counters of what it does next) follow it to the new pool. Call after every
 * assignment of c->pool once the session is counted (c->stats set).
 */
void client_pool_changed(struct client *c);

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

/** An auth_query answer (struct authq_reply) for one of worker pw's clients; owns m. */
void client_on_authq(struct pool_worker *pw, struct pool_msg *m);

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
void client_on_answer(struct pool_worker *pw, uint64_t owner_id, const char *value, size_t len);

/**
 * The worker's topology snapshot may have a new primary: sessions waiting for one try again.
 * Runs on w (the monitor's inbox message, and every tick).
 */
void client_topology_changed(struct worker *w);

/** A CancelRequest for (pid, key) arrived on some worker; route it to the owner. */
void client_cancel_dispatch(struct worker *w, uint32_t pid, uint32_t key);

/**
 * Move c to state st and to the list that goes with it (CONVENTIONS 3.1.2). Not CLIENT_CLOSED:
 * client_close does that.
 */
void client_set_state(struct client *c, enum client_state st);

/** Held clients of worker w whose database is no longer paused ask for a server (RESUME). */
void client_resume_held(struct worker *w);

/**
 * Whether session c can move to another worker now (worker_balance): logged in with
 * transaction or statement pooling, between transactions, nothing buffered or queued either
 * way, no answer on its way to it. Worker thread of c.
 */
bool client_can_move(const struct client *c);

/**
 * Hand session c (client_can_move) to worker to, whose inbox adopts it: its socket is watched
 * there from then on and its slot there answers grants; cancels keep arriving at the worker
 * that accepted it, which forwards them. c is not to be touched afterwards. Worker thread of c.
 */
void client_move(struct client *c, struct worker *to);

/** Find a live session of worker w by slot. */
struct client *client_by_slot(struct worker *w, uint32_t slot);

/* relay.c: the byte path of an ACTIVE session. */
void relay_start(struct client *c);
void relay_stop(struct client *c);

/**
 * The relay's read in two halves, for io_engine = io_uring (iobatch.c): make room in the
 * source's buffer (false: the session failed and is closed), then move on the n bytes that
 * were received and already added to src->in->recvd (0 = EOF, -1 = error with errno).
 */
bool relay_read_room(struct client *c, bool from_client);
void relay_read_done(struct client *c, bool from_client, int n);

/** A transaction-pooled client with no server: n bytes were added to c->sock.in (the result of
 * pool_sock_recv, as for relay_read_done); get it a server. For iobatch.c. */
void client_idle_read_done(struct client *c, int n);

/* client.c: a transaction-pooled client finished its transaction: give the server back. */
void client_release_server(struct client *c);

/* client.c: want changed; recompute want_hash. */
void client_want_rehash(struct client *c);

/* client.c: whether the session can give its server connection back now. */
bool client_can_release(const struct client *c);

/* txn.c: message handling for transaction and statement pooling (see relay.c). */
struct relay_msg;
int txn_client_msg(struct client *c, struct relay_msg *m);
int txn_server_msg(struct client *c, struct relay_msg *m);
int txn_emit_fakes(struct client *c);
void txn_stmts_clear(struct client *c);
/** The client's named statement called name (not ""), or NULL. Used by routing too. */
struct client_stmt *txn_stmt_find(struct client *c, const char *name);

/* cancel.c: send a CancelRequest for the query server connection sc runs; sc runs nothing new
 * until the server has acted on it (pool_conn_cancel_begin). */
void cancel_send(struct worker *w, struct pool_conn *sc);
void cancel_tick(struct worker *w, int64_t now_us);
void cancel_close_all(struct worker *w);

#endif
