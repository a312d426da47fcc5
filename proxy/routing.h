/*
 * routing.h - the session side of read/write routing: which node a client's next transaction
 * (transaction and statement pooling) or its whole session (session pooling) runs on.
 *
 * It reads the first statement from the client's buffered input (a Query's text, a Parse's
 * text, or the class remembered for a named statement a Bind names), classifies it, lets
 * router/route.h decide between the primary and a read node and pick the read node from the
 * worker's topology snapshot, and points the client at its pool on that node. It also keeps
 * read-your-writes: after a transaction that may have written, the commit's WAL position
 * (lsn) or a time window (window) that later reads must respect.
 *
 * Does not: talk to servers (the pool runs the LSN lookup it asks for), or move a transaction
 * once it has started: a whole transaction runs on the node its first statement chose.
 *
 * Runs on the client's worker. struct routing_worker belongs to its worker; its counters (and the
 * routed[] counters in stats.h) are written only there and may be read by any thread with relaxed
 * loads (CONVENTIONS 6.8).
 */
#ifndef PGMUX_PROXY_ROUTING_H
#define PGMUX_PROXY_ROUTING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool/pool.h"
#include "proxy/stats.h"
#include "proxy/topology.h"
#include "router/route.h"

struct cfg;
struct client;
struct worker;

/* What pgmux runs on the primary after a write transaction when read_your_writes = lsn. The
 * insert position, not the write or flush one: with synchronous_commit = off the commit record
 * may not be written yet when COMMIT returns, but it has been inserted, so a replica whose
 * replay position reaches this value has replayed the commit. */
#define ROUTING_LSN_SQL "SELECT pg_catalog.pg_current_wal_insert_lsn()"

/* What pgmux runs on a replica's connection after a read there, when some client of the worker
 * waits for that replica to pass its last write: the health checks' replay position can be a
 * health_check_period old, this one is a round trip old. At most one in flight per replica and
 * worker, and no more often than ROUTING_PROBE_GAP_US. */
#define ROUTING_REPLAY_SQL   "SELECT pg_catalog.pg_last_wal_replay_lsn()"
#define ROUTING_PROBE_GAP_US 5000

/* Owner ids of replay probes (pool_conn_release_query): the top bit, then the node index.
 * Client ids never have it (generation << 32 | slot, generations far below 2^31). */
#define ROUTING_PROBE_OWNER (1ull << 63)

struct routing_worker {
    struct router_balancer bal;
    int active[TOPO_MAX_NODES];            /* this worker's clients routed to each node and
                                              not finished (waiting or running) */
    _Atomic uint64_t n_lsn_lookups;        /* commit positions learned (read_your_writes) */
    _Atomic uint64_t n_fallbacks;          /* reads moved to the primary when a replica refused */
    _Atomic uint64_t n_probes;             /* replay positions learned from replicas (probes) */
    uint64_t replay_lsn[TOPO_MAX_NODES];   /* replay position a probe saw, 0 = none */
    int64_t probe_sent_us[TOPO_MAX_NODES]; /* when the last probe went out */
    bool is_probing[TOPO_MAX_NODES];       /* a probe is in flight */
    uint64_t wanted_lsn; /* highest position a read of this worker's clients needed that no
                            replica was known to have */
    /* has_read_node's cache: its answer for (snapshot generation, configuration, primary) */
    uint64_t read_node_gen;
    const struct cfg *read_node_cfg;
    int read_node_primary;
    bool has_read_node;
};

enum routing_result {
    ROUTING_OK,     /* c->pool is the pool to take a server from */
    ROUTING_WAIT,   /* the first message is not complete yet: read more */
    ROUTING_ENOMEM, /* no pool could be made */
};

/** Seed the balancer (seed != 0). The worker's thread, before it runs. */
void routing_worker_init(struct routing_worker *rw, uint64_t seed);

/**
 * Log what worker idx routed where (info), at exit: transactions (session pooling: sessions)
 * per node from its stats (stats.h routed[]), as writes and reads. Any thread once the worker
 * stopped.
 */
void routing_worker_log(const struct routing_worker *rw, const struct stats_worker *sw, int idx,
                        const struct pool_node *nodes, int n_nodes);

/**
 * A client just authenticated; home is its pool on the primary. Chooses the pool it logs in on:
 * in session pooling the node for the whole session (a read node only for a read-only
 * session), otherwise home. Sets c->pool.
 */
enum routing_result routing_login(struct client *c, struct pool *home);

/**
 * A transaction-pooled client with no server sent a message (complete header in c->sock.in):
 * choose the node for the transaction it starts. Sets c->pool.
 */
enum routing_result routing_txn_begin(struct client *c);

/**
 * Opening a server connection for a read on a replica failed before anything was sent: move
 * the read to the primary (c->pool). true when it did; false when the client was not routed
 * to a replica for a read (the failure is the client's).
 */
bool routing_fallback(struct client *c);

/**
 * Move the client's next server to node, as a write (the primary found after a failover),
 * keeping the per-node accounting. ROUTING_OK or ROUTING_ENOMEM.
 */
enum routing_result routing_to_node(struct client *c, int node);

/** The client no longer holds or waits for a server (release or close). Idempotent. */
void routing_leave(struct client *c);

/**
 * The client's transaction ended (ReadyForQuery idle) and its server is about to go back: the
 * query to run on it first (pool_conn_release_query), with the owner id its answer goes to
 * (routing_answer), or NULL for none. After a write with read_your_writes = lsn: the commit's
 * position (c->n_ryw_pending keeps the client's reads on the primary meanwhile); after a read
 * on a replica that some client waits to see pass its write: that replica's replay position
 * (ROUTING_REPLAY_SQL). Opens the write window in window mode.
 */
const char *routing_txn_end(struct client *c, uint64_t *owner);

/**
 * The answer to a query routing_txn_end asked for (value NULL when it failed), for client c
 * (NULL when it has gone, or for a probe: owner has ROUTING_PROBE_OWNER). A commit position
 * that cannot be learned keeps the client's reads on the primary for read_your_writes_window.
 */
void routing_answer(struct worker *w, struct client *c, uint64_t owner, const char *value,
                    size_t len);

/** Whether the client's current transaction runs on a node other than the primary. */
bool routing_on_replica(struct client *c);

/**
 * Whether some replica could take a read now (this worker's snapshot and configuration). When
 * none can, transactions and named statements are not classified: everything runs on the
 * primary, and writes are remembered as not yet learned (routing_txn_end).
 */
bool routing_has_read_node(struct client *c);

/** Whether a Parse text may run on a replica (remembered with a named statement). */
bool routing_text_is_read(struct client *c, const char *sql, size_t len);

/** Parse PostgreSQL's "X/Y" LSN text; false when malformed. Pure. */
bool routing_parse_lsn(const char *text, size_t len, uint64_t *out);

#endif
