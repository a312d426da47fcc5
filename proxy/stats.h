/*
 * stats.h - statistics counters: per worker, per pool and per node, written on the hot path with
 * no lock and no shared cache line (CONVENTIONS 6.8), summed by readers (the metrics endpoint,
 * the admin console's SHOW STATS) with relaxed loads.
 *
 * Every counter has exactly one writer: the worker that owns the struct stats_worker it lives
 * in. A write is a relaxed load plus a relaxed store of the new value (no read-modify-write
 * instruction, no lock prefix), which is as cheap as a plain increment but lets other threads
 * read the word without a data race. Each worker's counters live in their own allocations
 * aligned to a cache line, so two workers never write the same line. Readers add up the
 * workers' values; a total may lag the truth by the increments in flight, never more.
 *
 * Pools are identified by pool->id (1, 2, ... in creation order, never reused). A worker's
 * per-pool block is allocated the first time that worker touches the pool (once per worker and
 * pool, never on the per-message path after that) and published with a release store, so a
 * reader sees either NULL (nothing counted yet) or a zeroed, live block.
 *
 * Gauges (client connections by state) are per-worker signed values: each worker adds and
 * removes its own sessions (a session leaves one gauge before it enters another), so no
 * worker's value is ever negative and the sum over workers is exact at rest.
 *
 * Histograms have fixed log-scale bucket bounds (stats_hist_bounds_us); buckets are stored
 * non-cumulative and turned into Prometheus' cumulative form by the reader, whose count is the
 * sum of the buckets it read, so "+Inf" always equals "_count" within one reading.
 *
 * Threads: stats_worker_* writers and stats_pool_get on the owning worker only; stats_*_sum
 * and stats_sqlstate_class_name on any thread.
 */
#ifndef PGMUX_PROXY_STATS_H
#define PGMUX_PROXY_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/macros.h"

#define STATS_CACHE_LINE 64
#define STATS_MAX_POOLS  4096 /* pools beyond this many are not counted (logged once) */
#define STATS_MAX_NODES  64   /* == TOPO_MAX_NODES */

/* Histogram buckets: 16 finite upper bounds (100 us .. 10 s) and +Inf. */
#define STATS_HIST_FINITE  16
#define STATS_HIST_BUCKETS (STATS_HIST_FINITE + 1)
extern const int64_t stats_hist_bounds_us[STATS_HIST_FINITE];

/* SQLSTATE classes PostgreSQL defines (errcodes.txt), plus one for any other class. */
#define STATS_SQLSTATE_CLASSES 44
#define STATS_SQLSTATE_OTHER   (STATS_SQLSTATE_CLASSES - 1)

/* Who produced an error the client received. */
enum stats_err_source {
    STATS_ERR_SERVER = 0, /* an ErrorResponse from PostgreSQL, forwarded */
    STATS_ERR_PGMUX,      /* pgmux refused or ended something itself (errors.c table) */
    STATS_ERR_SOURCES,
};

/* Where a routing decision sent a client. */
enum stats_route {
    STATS_ROUTE_PRIMARY = 0,
    STATS_ROUTE_REPLICA,
    STATS_ROUTES,
};

typedef _Atomic uint64_t stats_counter;
typedef _Atomic int64_t stats_gauge;

struct stats_hist {
    stats_counter bucket[STATS_HIST_BUCKETS]; /* non-cumulative: observations in (b-1, b] */
    stats_counter sum_us;                     /* sum of observations, microseconds */
};

/* One worker's counters for one pool. Written by that worker only. */
struct stats_pool {
    stats_counter xact_count;    /* transactions finished (ReadyForQuery 'I' after work) */
    stats_counter query_count;   /* Query, Execute and FunctionCall messages relayed */
    stats_counter bytes_in;      /* bytes received from clients while attached */
    stats_counter bytes_out;     /* bytes received from the server for clients */
    stats_counter xact_time_us;  /* time from a transaction's first message to its end */
    stats_counter query_time_us; /* == query_latency.sum_us, kept for SHOW STATS */
    stats_counter wait_count;    /* times a client got a server after waiting (or not) */
    stats_counter wait_time_us;  /* == wait.sum_us */
    stats_counter errors[STATS_ERR_SOURCES][STATS_SQLSTATE_CLASSES];
    stats_gauge cl_idle;             /* clients logged in with no server (transaction pooling) */
    stats_gauge cl_waiting;          /* clients waiting for a server connection */
    stats_gauge cl_active;           /* clients attached to a server connection (in use) */
    stats_gauge cl_setting;          /* clients whose server runs pgmux's own SET first (in use) */
    struct stats_hist query_latency; /* request (Query or Parse..Sync) to ReadyForQuery */
    struct stats_hist wait;          /* waiting for a server connection */
};

/* One worker's counters for one node. */
struct stats_node {
    stats_counter routed[STATS_ROUTES]; /* routing decisions that picked this node */
};

/* Counters that belong to no pool. */
struct stats_global {
    stats_counter clients_accepted; /* TCP/unix connections accepted */
    stats_counter logins_ok;
    stats_counter logins_failed;    /* authentication refused */
    stats_counter auth_derivations; /* PBKDF2 runs for client logins (cache misses) */
    stats_counter slow_queries;     /* requests over log_min_duration */
    stats_counter sessions_moved;   /* sessions handed to another worker (worker_balance) */
    stats_gauge sessions;           /* client connections on this worker, in any state */
    stats_counter errors_nopool[STATS_SQLSTATE_CLASSES]; /* pgmux errors before a pool */
};

struct stats_worker {
    struct stats_global g;
    struct stats_node nodes[STATS_MAX_NODES];
    _Atomic(struct stats_pool *) pools[STATS_MAX_POOLS + 1]; /* by pool id; [0] unused */
    bool warned_full;                                        /* owner only */
};

/* Sums over workers, for readers. Plain values. */
struct stats_hist_sum {
    uint64_t bucket[STATS_HIST_BUCKETS]; /* non-cumulative */
    uint64_t count;                      /* sum of bucket[] */
    uint64_t sum_us;
};

struct stats_pool_sum {
    uint64_t xact_count;
    uint64_t query_count;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t xact_time_us;
    uint64_t query_time_us;
    uint64_t wait_count;
    uint64_t wait_time_us;
    uint64_t errors[STATS_ERR_SOURCES][STATS_SQLSTATE_CLASSES];
    int64_t cl_idle;
    int64_t cl_waiting;
    int64_t cl_active;
    int64_t cl_setting;
    struct stats_hist_sum query_latency;
    struct stats_hist_sum wait;
};

struct stats_global_sum {
    uint64_t clients_accepted;
    uint64_t logins_ok;
    uint64_t logins_failed;
    uint64_t auth_derivations;
    uint64_t slow_queries;
    uint64_t sessions_moved;
    uint64_t errors_nopool[STATS_SQLSTATE_CLASSES];
    uint64_t routed[STATS_MAX_NODES][STATS_ROUTES];
};

/* ---- owner side (the worker) ---- */

/** A zeroed stats_worker, aligned to a cache line; NULL when out of memory. Main thread. */
struct stats_worker *stats_worker_new(void);

/** Free sw and its pool blocks. Accepts NULL. After the worker has stopped. */
void stats_worker_free(struct stats_worker *sw);

/**
 * The owner's block for pool_id, allocated on first use; NULL when pool_id is out of range or
 * memory is short (the event then goes uncounted, the session is unaffected). Owner only.
 */
struct stats_pool *stats_pool_get(struct stats_worker *sw, uint32_t pool_id);

static inline void
stats_add(stats_counter *c, uint64_t d)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

static inline void
stats_gauge_add(stats_gauge *g, int64_t d)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

/** Record one observation of us microseconds (negative counts as 0). Owner only. */
static inline void
stats_hist_observe(struct stats_hist *h, int64_t us)
{
    if (us < 0) {
        us = 0;
    }
    int i = 0;
    while (i < STATS_HIST_FINITE && us > stats_hist_bounds_us[i]) {
        i++;
    }
    stats_add(&h->bucket[i], 1);
    stats_add(&h->sum_us, (uint64_t) us);
}

/** Index of the SQLSTATE class of code (5 characters, or NULL): 0..STATS_SQLSTATE_OTHER. */
int stats_sqlstate_class(const char *code);

/** The two-character class name of index i, or "other". */
const char *stats_sqlstate_class_name(int i);

/* ---- readers (any thread) ---- */

/** Sum pool pool_id's counters over n workers into out (zeroed first). */
void stats_pool_sum(struct stats_worker *const *workers, int n, uint32_t pool_id,
                    struct stats_pool_sum *out);

/** Sum the per-worker global and per-node counters into out (zeroed first). */
void stats_global_sum(struct stats_worker *const *workers, int n, struct stats_global_sum *out);

#endif
