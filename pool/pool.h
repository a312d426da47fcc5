/*
 * pool.h - server connection pools per (node, database, user), shared by all workers.
 *
 * Accounting is global and exact: pool->n_open (connecting + logging in + resetting + idle +
 * in use, on every worker) never exceeds max_open and is only changed under pool->mu. The common
 * path is worker-local and lock-free: a client takes an idle connection from its own worker's
 * list and a released connection goes back to the list of the worker it is on (CONVENTIONS
 * 6.4a). The lock is taken only to open a connection, to queue or dequeue a waiter, or to hand a
 * connection to a waiter.
 *
 * No connection is stranded while a client waits: a worker that queues a waiter while other
 * workers hold idle connections asks them (inbox message) to hand one over, and every worker
 * that makes a connection idle or closes one looks at the waiter queue first. The release side
 * publishes its idle count before it looks at n_waiting, and the acquire side publishes
 * n_waiting before it looks at the idle count (both sequentially consistent), so at least one of
 * them sees the other.
 *
 * A connection moves between workers only while idle: the giver stops its watchers, the taker
 * starts them on its own loop (CONVENTIONS 3.1.1).
 *
 * Threads: struct pool fields say who may touch them. struct pool_conn belongs to the worker
 * in conn->w. struct pool_worker belongs to its thread, except the inbox (any thread, under
 * inbox_mu).
 */
#ifndef PGMUX_POOL_POOL_H
#define PGMUX_POOL_POOL_H

#include <ev.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/buf.h"
#include "common/hidx.h"
#include "common/list.h"
#include "common/macros.h"
#include "common/status.h"
#include "pool/sock.h"
#include "protocol/scram.h"
#include "protocol/wire.h"

/* Most nodes a pool set serves (proxy/topology.h TOPO_MAX_NODES is the same number). */
#define POOL_MAX_NODES 64

enum pool_role {
    POOL_ROLE_UNKNOWN = 0,
    POOL_ROLE_PRIMARY,
    POOL_ROLE_REPLICA,
};

/* A PostgreSQL server. Immutable after start except the atomics. */
struct pool_node {
    char *name;
    char *host;
    int port;
    struct sockaddr_storage addr; /* resolved before workers start (no DNS on a worker) */
    socklen_t addr_len;
    atomic_int role;               /* enum pool_role */
    atomic_int is_up;              /* 0 after a failed connect, 1 after a successful login */
    _Atomic int64_t down_until_us; /* no new connections before this (server_login_retry) */
    atomic_int is_removed;         /* left the configuration or DNS: released connections close */
};

/* TLS towards servers: libpq's sslmode values, in the order of enum cfg_server_tls. */
enum pool_tls {
    POOL_TLS_DISABLE,
    POOL_TLS_PREFER,      /* SSLRequest; plaintext when the server answers 'N' */
    POOL_TLS_REQUIRE,     /* TLS or fail; the certificate is not checked */
    POOL_TLS_VERIFY_CA,   /* and it must chain to a trusted root */
    POOL_TLS_VERIFY_FULL, /* and name the node's host (DNS name, or IP address) */
};

/*
 * Where new server connections get their TLS context: a new reference (the caller frees it)
 * and the mode; NULL with POOL_TLS_DISABLE when TLS is off. Any thread.
 */
typedef struct ssl_ctx_st *(*pool_tls_fn)(void *arg, enum pool_tls *mode);

/*
 * Limits and timeouts of a pool. Workers read them without a lock; a reload changes them while
 * they run (pool_set_apply), so every field is atomic: a reader sees the old or the new value of
 * each, never a torn one. reset_query points to a string the pool set owns until
 * pool_set_fini, so a worker that loaded the old pointer can still use it.
 */
struct pool_settings {
    atomic_int max_open;              /* hard cap on server connections of one pool, all workers */
    atomic_int max_idle;              /* idle connections kept, all workers */
    atomic_int min_idle;              /* idle connections kept open (warm) */
    _Atomic int64_t max_lifetime_us;  /* 0 = forever */
    _Atomic int64_t max_idle_time_us; /* 0 = forever */
    _Atomic int64_t connect_timeout_us;
    _Atomic int64_t login_retry_us;  /* after a failed connect, refuse new ones this long */
    const char *_Atomic reset_query; /* owned by the pool set; "" for none */
    atomic_int max_db;   /* server connections to one node for one database, over all its
                            pools (users); 0 = no cap */
    atomic_int max_user; /* the same for one user, over all its databases */
};

/*
 * A cap that several pools share: the server connections to one node for one database
 * (max_db_connections) or for one user (max_user_connections). Every pool counts its slots in
 * its two caps whether or not a cap is set, so one set by a reload starts from the truth.
 * Lives until pool_set_fini.
 */
/* The cap of one database or user where it is not the set's default ([database.NAME]
 * max_db_connections, [user.NAME] max_user_connections). */
struct pool_cap_limit {
    bool is_user;
    char *name;
    int max; /* 0 = none */
};

struct pool_cap {
    int node_idx;
    bool is_user;
    char *name;                   /* the database or user */
    atomic_int n_open;            /* slots the sharing pools hold */
    atomic_int max;               /* 0 = none */
    _Atomic int64_t want_room_us; /* last tick that found a sharing pool queued behind the full
                                     cap: idle connections of the others are closed for it */
};

/* How to log in to the server as pool->user. Secrets are wiped on free. */
struct pool_secret {
    char *password;      /* plaintext, or NULL */
    char md5[36];        /* "md5..." stored hash, or "" */
    bool has_scram_keys; /* recovered from a client's SCRAM proof */
    uint8_t client_key[PROTO_SCRAM_KEY_LEN];
    uint8_t server_key[PROTO_SCRAM_KEY_LEN];
    bool has_salted; /* SaltedPassword cache for password logins */
    uint8_t salted[PROTO_SCRAM_KEY_LEN];
    uint8_t salt[PROTO_SCRAM_MAX_SALT];
    size_t salt_len;
    int iterations;
};

struct pool_param {
    char *name;
    char *value;
};

/* Parameter names and values: a server's ParameterStatus set, or what a client asks for. */
struct pool_params {
    struct pool_param *v;
    int n;
    int cap; /* 0 with entries: packed (pool_params_intern_from): v and every string in
                one allocation, immutable, perhaps shared with other sets, and
                freed with the last; else v and each string allocated apart */
};

struct pool_local {
    struct ilist idle; /* pool_conn in POOL_CONN_IDLE on this worker, oldest first */
    struct ilist busy; /* pool_conn in any other live state on this worker */
    atomic_int n_idle; /* == idle.n; read by other workers to find idle connections */
    int n_warming;     /* connections this worker opens to reach min_idle */
};

struct pool {
    uint32_t id;
    int node_idx;
    struct pool_node *node;
    char *database;
    char *user;
    struct pool_settings set; /* written at creation and by pool_set_apply (reload) */

    pthread_mutex_t mu;
    int n_open;                 /* under mu: every live connection of this pool */
    struct ilist waiters;       /* under mu: struct pool_waiter, arrival order */
    struct pool_secret secret;  /* under mu */
    uint32_t secret_gen;        /* under mu: grows when a reload replaces the secret, so a login
                                   that started with the old one does not cache its keys */
    atomic_int n_waiting;       /* == waiters.n, readable without mu */
    atomic_int n_idle;          /* sum of local[].n_idle */
    atomic_int n_resetting;     /* connections running the reset query, about to be idle */
    struct pool_local *local;   /* [n_workers]; local[i] touched only by worker i */
    int home_worker;            /* the worker that keeps min_idle warm */
    bool may_overtake;          /* transaction pooling: a waiter on the worker that frees a
                                   connection may go first (at most POOL_OVERTAKE_MAX times
                                   per waiter); session pooling serves strictly in arrival
                                   order */
    struct pool_params welcome; /* a fresh server's ParameterStatus set, so clients in
                                   transaction pooling can log in without a server: written
                                   once under mu, then read-only until pool_set_fini */
    uint8_t *welcome_msgs;      /* the same as ParameterStatus messages, welcome.v[i]'s
                                   ending at welcome_ends[i]; written with welcome */
    uint32_t *welcome_ends;     /* [welcome.n] */
    atomic_bool has_welcome;    /* welcome is complete (stored with release after it was
                                   written, so a reader that sees true may read it unlocked) */
    /* The pools of the same (database, user) on each node, by node index, filled on first use
     * by pool_sibling and never cleared (pools live until pool_set_fini): routing a
     * transaction to another node costs an atomic load, not the set's lock. */
    _Atomic(struct pool *) siblings[POOL_MAX_NODES];
    struct pool_cap *caps[2]; /* (node, database) and (node, user); set at creation */
};

/* Transaction pooling: how far down the wait queue a worker freeing a connection looks for a
 * waiter of its own, and how many times one waiter may be overtaken that way. */
#define POOL_OVERTAKE_WINDOW 32
#define POOL_OVERTAKE_MAX    32

/* A client waiting for a connection. Memory owned by the client's worker; linked under mu. */
struct pool_waiter {
    struct ilist_node node;
    uint64_t id;       /* the owner's identifier, handed back with the grant */
    int worker;        /* index of the waiting client's worker */
    uint32_t n_passed; /* times a later waiter on the serving worker went first */
};

enum pool_conn_state {
    POOL_CONN_CONNECTING, /* local->busy: TCP connect in progress */
    POOL_CONN_LOGIN,      /* local->busy: startup and authentication */
    POOL_CONN_RESET,      /* local->busy: running the reset query */
    POOL_CONN_IDLE,       /* local->idle: ready, nobody attached */
    POOL_CONN_ACTIVE,     /* local->busy: attached to a client session */
    POOL_CONN_CLOSED,     /* worker to_free: waiting to be freed at the end of the iteration */
};


struct pool_login;
struct pool_worker;

/* Inbox message: fn runs on the receiving worker and owns m. */
struct pool_msg {
    struct pool_msg *next;
    void (*fn)(struct pool_worker *w, struct pool_msg *m);
};


/* What a request sent to the server will be answered with (transaction and statement
 * pooling follow every answer, so pgmux can add and remove messages and stay in step). */
enum pool_req_kind {
    POOL_REQ_PARSE,    /* ParseComplete */
    POOL_REQ_BIND,     /* BindComplete */
    POOL_REQ_DESCRIBE, /* [ParameterDescription] RowDescription | NoData */
    POOL_REQ_EXECUTE,  /* ... CommandComplete | EmptyQueryResponse | PortalSuspended */
    POOL_REQ_CLOSE,    /* CloseComplete */
    POOL_REQ_SYNC,     /* ReadyForQuery */
    POOL_REQ_QUERY,    /* anything, then ReadyForQuery (Query, FunctionCall) */
};

#define POOL_REQ_INJECTED 0x1 /* sent by pgmux: its answer is not forwarded */
#define POOL_REQ_FAKE     0x2 /* not sent: pgmux answers it when its turn comes */

struct pool_req {
    uint8_t kind;  /* enum pool_req_kind */
    uint8_t flags; /* POOL_REQ_* */
    uint64_t h1;   /* statement created by a Parse (0 = unnamed / none) */
    uint64_t h2;
};

/* Ring of requests awaiting answers, oldest first. */
struct pool_reqs {
    struct pool_req *v; /* inline[] or a heap array when a pipeline runs deep */
    uint32_t head;
    uint32_t n;
    uint32_t cap; /* power of two */
    struct pool_req inline_v[8];
};

/* A prepared statement pgmux created on this server connection, named from its text. */
struct pool_stmt {
    uint64_t h1; /* first 128 bits of SHA-256 over the Parse body after the name */
    uint64_t h2;
    uint64_t used; /* LRU clock */
};

struct pool_stmts {
    struct pool_stmt *v;
    int n;
    int cap;
    uint64_t clock;
    struct hidx idx; /* by (uint32_t) h1: looked up for every Bind and Describe */
};

/* Server-side name of a statement: "pgmux_" + 32 hex digits. */
#define POOL_STMT_NAME_LEN 38

struct pool_conn {
    struct ilist_node node;
    struct pool_sock sock;
    struct pool *pool;
    struct pool_worker *w;
    enum pool_conn_state state;
    uint64_t id;        /* process-unique, for logs */
    uint64_t opener_id; /* who asked for it to be opened (0 = warm pool) */
    uint32_t be_pid;    /* the server's BackendKeyData, for cancel */
    uint32_t be_key;
    /* A CancelRequest for this connection may still be on its way (pool_conn_cancel_begin):
     * the in-flight request's pointer to us, NULL when none. PostgreSQL signals a cancelled
     * backend twice (its pid, then its process group), and a signal that lands after the query
     * ended cancels whatever runs next on the connection: with pooling, another transaction,
     * perhaps another client's. So a release waits (is_quarantined) until the server has
     * closed the cancel connection, which it does after signalling. */
    struct pool_conn **cancel_ref;
    bool is_quarantined;        /* released while cancel_ref was set: conn_release resumes */
    bool quarantine_reset;      /* with these arguments when the cancel is done */
    const char *quarantine_sql; /* (a static string or NULL) */
    uint64_t quarantine_owner;
    uint8_t txn_status;    /* last ReadyForQuery status: 'I', 'T', 'E' */
    int expect_ready;      /* ReadyForQuery messages still owed by the server */
    bool is_unsynced;      /* extended-protocol messages sent since the last Sync */
    bool is_broken;        /* lost sync with the protocol; never pool it */
    bool is_session_dirty; /* a pinned client left session state: reset before reuse */
    bool is_skipping;      /* after an error in the extended protocol the server ignores
                              everything up to the next Sync */
    int64_t created_us;
    int64_t last_used_us;       /* when it last became idle */
    int64_t ready_us;           /* attached: when the server last owed nothing (worker_now_us);
                                   what idle_transaction_timeout counts from */
    int64_t deadline_us;        /* connect/login/reset must finish by then */
    struct pool_params params;  /* ParameterStatus values the server reported */
    struct pool_params applied; /* unreported parameters pgmux SET on it, with their values */
    struct pool_reqs reqs;      /* answers still to come (transaction and statement pooling) */
    struct pool_stmts stmts;    /* prepared statements pgmux made on it (LRU) */
    struct pool_login *login;   /* only while logging in */
    struct pool_msg grant_msg;  /* hands this connection to a waiter's worker: at most one
                                   hand-over is in flight, so no allocation per hand-over */
    uint64_t grant_waiter;      /* the waiter it is handed to */
    uint64_t synced_hash;       /* settings hash of the client the server's settings match
                                   (0: unknown); lets an attach skip comparing settings */
    uint64_t answer_owner;      /* POOL_CONN_RESET running a release query: who gets its first
                                   value (on_answer), 0 once answered or for a reset query */
    bool is_release_query;      /* POOL_CONN_RESET runs a release query, not the reset query:
                                   not counted in pool->n_resetting (see conn_release) */
    void *client;               /* the attached session while ACTIVE */
    struct ssl_ctx_st *tls_ctx; /* from the SSLRequest until the handshake starts (owned) */
    uint8_t tls_mode;           /* enum pool_tls this connection was opened with */
    const char *auth_method;    /* how it logged in ("md5", "scram-sha-256-plus", ...; static),
                                   NULL: the server asked for nothing */
};

/* What went wrong logging in, for the client that asked. */
struct pool_failure {
    enum status st;
    char sqlstate[6];
    char message[200];
};

struct pool_worker;


/* Callbacks into the session layer, run on the worker that owns the waiter or opener. */
typedef void (*pool_grant_fn)(struct pool_worker *w, struct pool *p, struct pool_conn *sc,
                              uint64_t waiter_id);
typedef void (*pool_ready_fn)(struct pool_worker *w, struct pool_conn *sc, uint64_t opener_id);
typedef void (*pool_failed_fn)(struct pool_worker *w, struct pool *p, uint64_t opener_id,
                               const struct pool_failure *f);
/* The first column of the first row a release query returned (value NULL when it failed or
 * returned none), for owner_id. */
typedef void (*pool_answer_fn)(struct pool_worker *w, uint64_t owner_id, const char *value,
                               size_t len);

struct pool_set;

struct pool_worker {
    int idx;
    struct ev_loop *loop;
    struct buf_pool bufs;
    struct pool_set *set;
    void *owner; /* the proxy's worker */
    pthread_mutex_t inbox_mu;
    struct pool_msg *inbox_head; /* under inbox_mu */
    struct pool_msg *inbox_tail;
    ev_async inbox_wake;
    struct pool_msg *local_head; /* messages this worker sent itself: no lock, no wake-up */
    struct pool_msg *local_tail;
    ev_prepare local_run; /* runs them before the loop polls again (started only while any
                             wait) */
    struct ilist to_free; /* closed pool_conns */
    ev_check *reap;       /* the owner's end-of-iteration reaper (pool_worker_reap), started
                             when a connection is queued for freeing; NULL: none */
    uint64_t next_conn_id;
    pool_grant_fn on_grant;   /* a waiter got a connection (sc) or the right to open one (NULL) */
    pool_ready_fn on_ready;   /* a connection opened for opener_id finished logging in */
    pool_failed_fn on_failed; /* opening for opener_id failed; the slot is already released */
    pool_answer_fn on_answer; /* a release query answered (pool_conn_release_query) */
};

struct pool_set {
    pthread_mutex_t mu;
    struct pool **pools; /* under mu; pools live until pool_set_fini */
    int n_pools;
    int cap_pools;
    struct pool_cap **caps; /* under mu; live until pool_set_fini */
    int n_caps;
    int cap_caps;
    struct pool_cap_limit *limits; /* under mu: per-name caps (pool_set_cap_limits), owned */
    int n_limits;
    struct pool_node *nodes;
    int n_nodes;
    struct pool_worker **workers;
    int n_workers;
    struct pool_settings defaults; /* under mu: for pools created from now on */
    char **queries;                /* under mu: every reset_query string ever used, freed by
                                      pool_set_fini (readers hold no reference) */
    int n_queries;
    pool_tls_fn tls_get; /* NULL: never TLS; set before workers start */
    void *tls_arg;
    atomic_uint_fast64_t next_conn_id;
};

/** Set up a pool set over nodes (borrowed) for n_workers workers (filled in later). */
int pool_set_init(struct pool_set *s, struct pool_node *nodes, int n_nodes, int n_workers,
                  const struct pool_settings *defaults) MUST_CHECK;

/**
 * Reload: make ps (reset_query copied) the settings of every existing pool and of pools created
 * from now on. Raised limits serve queued clients at once; lowered ones are reached as
 * connections are released (one over max_open is closed instead of handed on, idle ones beyond
 * max_idle_conns are closed by the next tick). Any thread; ST_OK or ST_ENOMEM (nothing changed).
 */
enum status pool_set_apply(struct pool_set *s, const struct pool_settings *ps) MUST_CHECK;

/**
 * Replace the per-name caps (v[n], copied) and apply them, and the set's defaults to every
 * other cap, at once. Any thread; ST_OK or ST_ENOMEM (nothing changed).
 */
enum status pool_set_cap_limits(struct pool_set *s, const struct pool_cap_limit *v,
                                int n) MUST_CHECK;

/**
 * Reload: log in to servers as p->user with secret from now on (copied; learned SCRAM keys and
 * cached salted passwords are dropped). Connections already open are not touched. Any thread;
 * ST_OK or ST_ENOMEM.
 */
enum status pool_set_secret(struct pool *p, const struct pool_secret *secret) MUST_CHECK;

/** Set whether p serves waiters on the releasing worker first (transaction pooling). */
void pool_set_may_overtake(struct pool *p, bool may_overtake);

/** Free every pool. Workers must have stopped and closed their connections. */
void pool_set_fini(struct pool_set *s);

/**
 * The pool for (node, database, user), created on first use. secret_init is used only when the
 * pool is created (copied). NULL when out of memory. Any thread (takes the set's lock).
 */
struct pool *pool_get(struct pool_set *s, int node_idx, const char *database, const char *user,
                      const struct pool_secret *secret_init, bool may_overtake);

/**
 * Replace the plaintext password and md5 hash the pool logs in to servers with (from secret;
 * either may be empty), when a user's secret has changed since the pool was made. Any thread.
 */
void pool_update_secret(struct pool *p, const struct pool_secret *secret);

/**
 * The pool for p's database and user on node node_idx (p itself for p's node), created on first
 * use with a copy of p's credentials (SCRAM keys included). NULL when out of memory. Any thread;
 * lock-free once the sibling is known.
 */
struct pool *pool_sibling(struct pool_set *s, struct pool *p, int node_idx);

/** Remember SCRAM keys recovered from a client's proof for server logins. Any thread. */
void pool_learn_scram_keys(struct pool *p, const uint8_t client_key[PROTO_SCRAM_KEY_LEN],
                           const uint8_t server_key[PROTO_SCRAM_KEY_LEN]);

/** Whether pool credentials allow logging in without a client's help. Any thread. */
bool pool_can_login(struct pool *p);

/* Per-worker context. Runs on that worker except pool_worker_post. */
void pool_worker_init(struct pool_worker *w, int idx, struct ev_loop *loop, struct pool_set *set,
                      void *owner);
void pool_worker_fini(struct pool_worker *w);

/** Queue m for worker w and wake it. Any thread. */
void pool_worker_post(struct pool_worker *w, struct pool_msg *m);

/**
 * Queue m for worker to, sent by worker from (the calling thread's): a message to itself skips
 * the lock and the eventfd wake-up and runs before the loop next polls.
 */
void pool_worker_send(struct pool_worker *from, struct pool_worker *to, struct pool_msg *m);

/**
 * Run the messages this worker sent itself (pool_worker_send), including those they send. A
 * prepare watcher does it before each poll; a later prepare hook that may cause such messages
 * (io_engine = io_uring's batch) calls it too, so none waits for the next wake-up.
 */
void pool_worker_run_local(struct pool_worker *w);

/** Run queued inbox messages; call from the ev_async callback. */
void pool_worker_drain(struct pool_worker *w);

/** Housekeeping every tick: timeouts, idle and lifetime retirement, warm pools. */
void pool_worker_tick(struct pool_worker *w, int64_t now_us);

/** Free closed connections; call from an ev_check watcher (CONVENTIONS 3.1.5). */
void pool_worker_reap(struct pool_worker *w);

/** Close every connection of this worker (shutdown). */
void pool_worker_close_all(struct pool_worker *w);

/**
 * Close this worker's idle connections to node node_idx (the node died, changed role or left
 * DNS): they would fail or serve the wrong role when next used. Connections in use are left to
 * their sessions. Returns how many were closed. Runs on w.
 */
int pool_worker_close_idle_node(struct pool_worker *w, int node_idx, const char *why);

enum pool_acquire {
    POOL_GOT_CONN,     /* *out is an idle connection, now ACTIVE and attached to nobody yet;
                          its read watcher may still be started (plaintext): set the read
                          callback (and start reading) before returning to the loop */
    POOL_MUST_CONNECT, /* a slot was reserved: call pool_conn_open */
    POOL_QUEUED,       /* waiter queued: on_grant will be called (or pool_waiter_cancel) */
};

/** Take a connection for a client of worker w. */
enum pool_acquire pool_acquire(struct pool_worker *w, struct pool *p, struct pool_waiter *wt,
                               struct pool_conn **out);

/**
 * Remove a waiter that gave up. true when it was still queued; false when a grant for it is
 * already on its way (the grant will arrive and must be passed to pool_grant_orphan).
 */
bool pool_waiter_cancel(struct pool *p, struct pool_waiter *wt);

/**
 * Open a connection in a reserved slot. opener_id comes back with on_ready/on_failed.
 * On ST_OK the connection is logging in; otherwise the slot was released and nothing will be
 * called back. Within server_login_retry of a failed connect to the node it fails at once
 * with ST_ESERVER_CONNECT, so a dead server costs waiting clients no connect timeout each.
 */
enum status pool_conn_open(struct pool_worker *w, struct pool *p, uint64_t opener_id) MUST_CHECK;

/** A grant whose waiter is gone: keep the connection or give the slot back. */
void pool_grant_orphan(struct pool_worker *w, struct pool *p, struct pool_conn *sc);

/**
 * Mark an idle or just-opened connection as in use by client (the caller sets the socket
 * callbacks to its relay and starts reading).
 */
void pool_conn_attach(struct pool_conn *sc, void *client);

/**
 * Give a connection back after use. If its state is clean it is pooled (after
 * server_reset_query when reset is true), else closed. The caller has stopped using it; its
 * watchers are taken over by the pool.
 */
void pool_conn_release(struct pool_conn *sc, bool reset);

/**
 * Give a connection back like pool_conn_release(sc, false), after running sql on it (one
 * statement that returns one value and leaves no state). Until it answers the connection is
 * resetting, not idle; the answer goes to on_answer(owner_id) on this worker, then the
 * connection becomes idle. An error from sql is answered with NULL and keeps the connection.
 * When the connection cannot run it (not clean, too old, session state to reset) it is
 * released as pool_conn_release would, and on_answer gets NULL at once.
 */
void pool_conn_release_query(struct pool_conn *sc, const char *sql, uint64_t owner_id);

/**
 * A CancelRequest for sc's running query is on its way to the server, on a connection whose
 * pointer to sc is *ref (set here; cleared when sc closes, or when a later cancel takes
 * over). Until pool_conn_cancel_done, a release of sc runs nothing on it and makes it idle
 * for nobody. Worker of sc.
 */
void pool_conn_cancel_begin(struct pool_conn *sc, struct pool_conn **ref);

/** The server closed that cancel connection (or it failed or timed out): a release that
 * waited goes on. Worker of sc. */
void pool_conn_cancel_done(struct pool_conn *sc);

/* ---- answers still to come (struct pool_reqs) ---- */

/** Append a request; false when out of memory. */
bool pool_reqs_push(struct pool_reqs *r, uint8_t kind, uint8_t flags, uint64_t h1, uint64_t h2);

static inline struct pool_req *
pool_reqs_head(struct pool_reqs *r)
{
    return r->n ? &r->v[r->head & (r->cap - 1)] : NULL;
}

/* Whether the oldest request is one pgmux answers itself (POOL_REQ_FAKE): the relay checks
 * this before every server message, and almost always there is none. */
static inline bool
pool_reqs_owes_fake(struct pool_reqs *r)
{
    struct pool_req *q = pool_reqs_head(r);
    return q && (q->flags & POOL_REQ_FAKE);
}

static inline void
pool_reqs_pop(struct pool_reqs *r)
{
    r->head++;
    r->n--;
}

void pool_reqs_clear(struct pool_reqs *r);

/* ---- prepared statements on a server connection ---- */

/** Index of the statement (h1, h2) in s, or -1. Touches its LRU clock. */
int pool_stmts_find(struct pool_stmts *s, uint64_t h1, uint64_t h2);

/** Add a statement; ST_OK or ST_ENOMEM. The caller evicts first when full. */
enum status pool_stmts_add(struct pool_stmts *s, uint64_t h1, uint64_t h2) MUST_CHECK;

/** Remove the statement at index i. */
void pool_stmts_remove(struct pool_stmts *s, int i);

/** Index of the least recently used statement, or -1 when empty. */
int pool_stmts_lru(const struct pool_stmts *s);

/** Write the server-side name of (h1, h2) into out (POOL_STMT_NAME_LEN + 1 bytes). */
void pool_stmt_name(uint64_t h1, uint64_t h2, char *out);

/** Remember a fresh server's parameters as the pool's welcome set (first one wins). */
void pool_learn_welcome(struct pool *p, const struct pool_params *params);

/** The pool's welcome value of name into out (outlen bytes); false when unknown. Any thread. */
bool pool_welcome_value(struct pool *p, const char *name, char *out, size_t outlen);

/**
 * The pool's welcome set, or NULL when none is known yet. It never changes once known and
 * lives as long as the pool, so the caller reads it (and p->welcome_msgs, welcome_ends)
 * without a lock or a copy. Any thread.
 */
const struct pool_params *pool_welcome(struct pool *p);

/** Close a connection now (server gone, protocol lost, shutdown). */
void pool_conn_close(struct pool_conn *sc, const char *why);

/** Whether the server side is clean enough to be pooled (CONVENTIONS 3.1.7). */
bool pool_conn_is_clean(const struct pool_conn *sc);

/* Message-level I/O while the pool (or the session layer, before relaying) talks to the server
 * itself: login, reset, parameter replay. */

/** recv once into sc->sock.in: >0 bytes read, 0 EOF, -1 error (errno), -2 would block. */
int pool_conn_recv(struct pool_conn *sc) MUST_CHECK;

/**
 * Next whole message in sc->sock.in, consumed: ST_OK with *h and *body (borrowed until the next
 * recv), ST_INCOMPLETE, or ST_ESERVER_PROTOCOL (bad length, unknown type, too big to inspect).
 */
enum status pool_conn_next_msg(struct pool_conn *sc, struct proto_header *h,
                               const uint8_t **body) MUST_CHECK;

/** Return sc->sock.in to the worker when everything in it was consumed, else compact it. */
void pool_conn_in_settle(struct pool_conn *sc);

/** Queue a built message for the server and write what the socket takes; ST_OK or failure. */
enum status pool_conn_send(struct pool_conn *sc, const struct proto_builder *pb) MUST_CHECK;

/** Value of a server parameter, or NULL. */
const char *pool_conn_param(const struct pool_conn *sc, const char *name);

/** Record a ParameterStatus (the name in any case). Returns ST_OK or ST_ENOMEM (ps unchanged). */
enum status pool_params_set(struct pool_params *ps, const char *name, const char *value) MUST_CHECK;

/** Remove entry i (the last one takes its place). A packed set is unpacked first; ST_ENOMEM
 *  then leaves it unchanged. */
enum status pool_params_remove_at(struct pool_params *ps, int i) MUST_CHECK;

/**
 * Make the empty set ps hold the n pairs of v (names distinct; the strings are the caller's
 * and are copied), packed: one allocation of exact size, immutable (a later change unpacks it
 * first). A client's wanted settings live as long as the client, and five parameters, as JDBC
 * sends, cost about 590 bytes apart against about 210 packed. The block is the one in *slot if
 * that holds the same pairs in the same order, else a new one, which then takes the slot;
 * *slot holds a reference (pool_params_block_put drops it). Clients of one application send
 * the same startup parameters, so their settings take one block between them, and a login
 * builds them from pointers into its startup packet, so one that finds its block allocates
 * nothing. The slot's thread only; a block may be released on any thread. ST_OK, or ST_ENOMEM
 * with ps still empty.
 */
enum status pool_params_intern_from(struct pool_params *ps, const struct pool_param *v, int n,
                                    void **slot) MUST_CHECK;

/** Whether ps is packed (pool_params_intern_from). */
bool pool_params_is_packed(const struct pool_params *ps);

/** Drop a reference to a packed block (a pool_params_intern_from slot); NULL is ignored. */
void pool_params_block_put(void *block);

void pool_params_clear(struct pool_params *ps);

#endif
