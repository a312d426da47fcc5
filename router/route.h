/*
 * route.h - the routing decision: which node serves what a client is about to send.
 * Pure: its input is what the session knows, the first statement's class and a read-only view
 * of the nodes; its output a node and the reason (CONVENTIONS 1.3). The only state it keeps is
 * the caller's struct router_balancer (one per worker). Any thread.
 *
 * Two steps, so that each can be tested alone:
 *
 * 1. router_route_txn / router_route_session: does this transaction (or session) need the
 *    primary, or may a read node serve it? Writes, anything unknown, explicit read-write
 *    transactions and statements that leave session state go to the primary; reads, hinted
 *    statements and read-only transactions may go to a read node.
 * 2. router_pick_read: which read node. The candidates are the replicas that are healthy, not
 *    removed or fenced, within the lag limits and, for read-your-writes, past the client's last
 *    commit, plus the primary when primary_reads_weight > 0; replica_balance chooses among
 *    them by weight. With no usable replica the primary serves the read.
 */
#ifndef PGMUX_ROUTER_ROUTE_H
#define PGMUX_ROUTER_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#define ROUTER_MAX_NODES 64

enum router_target {
    ROUTER_PRIMARY,
    ROUTER_REPLICA, /* a read node: a usable replica, or the primary when none is */
};

/* What the classifier says about the first statement of a transaction. */
struct router_stmt {
    bool is_known;        /* a statement text (or a remembered class) was available */
    bool is_read;         /* may run on a replica (only meaningful when is_known) */
    bool is_begin;        /* BEGIN / START TRANSACTION */
    bool is_read_only;    /* BEGIN ... READ ONLY, or SET TRANSACTION READ ONLY */
    bool is_pinning;      /* leaves session state that pins the client (router/scan.h) */
    bool is_hint_primary; /* leading comment pgmux: primary */
    bool is_hint_replica; /* leading comment pgmux: replica */
};

struct router_session {
    bool is_session_pooled; /* the server is chosen once, at login */
    bool is_read_only_hint; /* the client asked for a read-only session */
    bool is_split;          /* read_write_split = on */
    bool is_pinned;         /* session state keeps it on its current server */
    bool is_write_window;   /* read_your_writes = window and the window is open */
};

struct router_decision {
    enum router_target target;
    const char *reason; /* static string, for logs and statistics */
};

/** Decide where a new session's server connection comes from (session pooling). */
struct router_decision router_route_session(const struct router_session *s);

/** Decide where a transaction that starts with st goes (transaction and statement pooling). */
struct router_decision router_route_txn(const struct router_session *s,
                                        const struct router_stmt *st);

enum router_balance {
    ROUTER_BALANCE_LEAST_CONN,  /* fewest transactions in flight per unit of weight */
    ROUTER_BALANCE_ROUND_ROBIN, /* smooth weighted round robin */
    ROUTER_BALANCE_RANDOM,      /* weighted random */
    ROUTER_BALANCE_HASH,        /* weighted rendezvous hash of the client's key */
};

/* One node as the router sees it. */
struct router_node {
    int idx;            /* stable node index, < ROUTER_MAX_NODES */
    bool is_primary;    /* where writes go */
    bool is_replica;    /* a replica by role */
    bool is_usable;     /* healthy, not removed, not fenced (and not known down here) */
    int weight;         /* [node] weight: share of reads among replicas */
    uint64_t lsn;       /* replica: replay LSN */
    uint64_t lag_bytes; /* replica: behind the primary's WAL */
    int64_t lag_ms;     /* replica: replay delay */
    int active;         /* transactions this worker runs or queues on it */
};

struct router_limits {
    enum router_balance balance;
    int primary_reads_weight; /* the primary's weight among read nodes; 0 = only as fallback */
    int64_t max_lag_ms;       /* 0 = no limit */
    uint64_t max_lag_bytes;   /* 0 = no limit */
};

/* A worker's balancing state. Zero-initialise, then seed rng (non-zero). */
struct router_balancer {
    int64_t rr_current[ROUTER_MAX_NODES]; /* smooth weighted round robin, by node index */
    uint32_t tie;                         /* rotates least_conn ties */
    uint64_t rng;                         /* xorshift64 state */
};

/**
 * Pick the node for a read. nodes[0..n) is the current view (any order); primary is the index
 * of the primary (-1 when none). min_lsn: a replica must have replayed at least this far (0 =
 * any). key: the client's hash key (balance = hash). Returns a node index, or -1 when neither a
 * usable replica nor a primary exists; *reason (may be NULL) gets a static string.
 */
int router_pick_read(struct router_balancer *b, const struct router_limits *lim,
                     const struct router_node *nodes, int n, int primary, uint64_t min_lsn,
                     uint64_t key, const char **reason);

/** 64-bit FNV-1a of len bytes, chained from h (start with ROUTER_HASH_INIT). */
#define ROUTER_HASH_INIT 0xcbf29ce484222325ull
uint64_t router_hash(uint64_t h, const void *data, uint64_t len);

#endif
