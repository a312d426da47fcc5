/*
 * topology.h - what the monitor thread knows about the PostgreSQL nodes, published as immutable,
 * reference-counted snapshots that workers read without blocking (DESIGN "Threads").
 *
 * The monitor thread is the only writer. Every health_check_period it connects to each node with
 * libpq (connect and statement timeouts; never on a worker loop) and reads: reachability,
 * pg_is_in_recovery(), the timeline, the primary's current WAL LSN, a replica's replay LSN and
 * replay lag. Every dns_ttl it re-resolves host names; a name that resolves to several addresses
 * gives several nodes. It also learns, from the primary's catalog, the user-defined functions
 * marked VOLATILE, which the classifier must treat as writes.
 *
 * Node indexes are stable for the life of the process: nodes are only ever appended to
 * rt->nodes (fixed capacity TOPO_MAX_NODES), never moved; a node that leaves the configuration or
 * DNS stays in the array marked is_removed and gets no new connections. So a pool's node pointer
 * and an index kept by a client stay valid.
 *
 * Workers: each worker keeps its own reference in w->topo and refreshes it with
 * topo_refresh(), which costs one relaxed atomic load when nothing changed, so it may be called
 * at every routing decision. A snapshot is never modified after publication.
 *
 * Threads: topo_publish on the monitor (or on main before workers start); the rest any thread.
 */
#ifndef PGMUX_PROXY_TOPOLOGY_H
#define PGMUX_PROXY_TOPOLOGY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define TOPO_MAX_NODES 64

struct topo_node {
    int idx;               /* index into rt->nodes, == position in snapshot->nodes */
    int role;              /* enum pool_role: what the server says (declared role until checked) */
    bool is_healthy;       /* the last check connected and answered within its timeouts */
    bool is_removed;       /* no longer in the configuration or DNS: no new connections */
    bool is_fenced;        /* not in recovery, but another node has a newer timeline: split-brain
                              guard, never used as a primary (and given no reads: its data is
                              from before the failover) */
    uint32_t timeline;     /* primary: its current WAL file's; replica: pg_control_checkpoint()'s;
                              0 when unknown */
    uint64_t lsn;          /* primary: pg_current_wal_lsn(); replica: pg_last_wal_replay_lsn() */
    uint64_t lag_bytes;    /* replica: the primary's LSN minus its replay LSN; 0 on a primary */
    int64_t lag_ms;        /* replica: replay delay while behind the primary; 0 when caught up */
    int weight;            /* [node.NAME] weight */
    int64_t checked_at_us; /* monotonic time of the last completed check, 0 = never */
};

struct topo_snapshot {
    atomic_int refs;
    uint64_t generation; /* grows by one per publication */
    int primary;         /* index of the node writes go to, -1 when none is usable */
    int n_nodes;
    struct topo_node nodes[TOPO_MAX_NODES];
    /* User-defined functions marked VOLATILE on the primary, lower-case "schema.name" and bare
     * "name" forms, sorted (strcmp) for bsearch. Owned by the snapshot. */
    char **volatile_functions;
    int n_volatile_functions;
    uint64_t functions_generation; /* changes only when the list changes (classifier caches) */
};

struct topology {
    pthread_mutex_t mu;          /* guards cur's replacement and reference taking */
    struct topo_snapshot *cur;   /* under mu */
    _Atomic uint64_t generation; /* == cur->generation, readable without mu */
};

/** Take a reference to the current snapshot. Any thread. */
struct topo_snapshot *topo_get(struct topology *t);

/** Drop a reference; the last one frees the snapshot. Accepts NULL. Any thread. */
void topo_put(struct topo_snapshot *s);

/**
 * Replace *held by the current snapshot when a newer one was published; a relaxed load of
 * t->generation when nothing changed. Returns the snapshot now held.
 */
const struct topo_snapshot *topo_refresh(struct topology *t, struct topo_snapshot **held);

/** Publish s (refs == 1, owned by the topology afterwards). Monitor thread, or main at start. */
void topo_publish(struct topology *t, struct topo_snapshot *s);

/** Set up an empty topology (no snapshot yet). Main thread, before any other thread. */
void topo_init(struct topology *t);

/** Drop the current snapshot and free the lock. Main thread, after every other thread. */
void topo_fini(struct topology *t);

/** A zeroed snapshot with refs == 1 and primary == -1, or NULL. Any thread. */
struct topo_snapshot *topo_snapshot_new(void);

/** A deep copy of from (volatile functions included) with refs == 1, or NULL. Any thread. */
struct topo_snapshot *topo_snapshot_copy(const struct topo_snapshot *from);

/** Whether name (lower-case "schema.name" or "name") is a learned VOLATILE function. */
bool topo_has_volatile_function(const struct topo_snapshot *s, const char *name);

#endif
