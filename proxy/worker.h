/*
 * worker.h - a worker thread: one libev loop, its own SO_REUSEPORT listener, the client sessions
 * it holds (those it accepted, less those it handed to another worker and plus those handed to
 * it: worker_balance, balance.h) and the server connections it currently holds.
 *
 * struct runtime is built by main before the workers start and is read-only afterwards, except
 * its atomics. struct worker belongs to its thread; other threads reach it only through the
 * inbox in w->pw (pool_worker_post).
 */
#ifndef PGMUX_PROXY_WORKER_H
#define PGMUX_PROXY_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/list.h"
#include "pool/pool.h"
#include "protocol/scram.h"
#include "proxy/admin.h"
#include "proxy/authq.h"
#include "proxy/balance.h"
#include "proxy/config.h"
#include "proxy/peers.h"
#include "proxy/routing.h"
#include "proxy/stats.h"
#include "proxy/tls.h"
#include "proxy/topology.h"
#include "router/classify.h"

/* BackendKeyData pid given to clients: worker index in the high bits, session slot below, so a
 * CancelRequest arriving on any worker finds the owner (CONVENTIONS 6.5). Stays positive. */
#define WORKER_SLOT_BITS 23
#define WORKER_MAX_SLOTS (1u << WORKER_SLOT_BITS)
#define WORKER_NO_SLOT   UINT32_MAX /* end of the unused-slot list */
#define WORKER_MAX       255
/* Draining: a session between transactions that sends nothing is closed after this long. */
#define WORKER_DRAIN_REST_US 1000000

struct worker;
struct client;

/*
 * A key derived with PBKDF2 for a client login where no auth_file user index can name it: the
 * SCRAM secret made from a plaintext secret that auth_query returned, or the ClientKey that a
 * cleartext password (hba method password) gave against a SCRAM secret. Found again by tag,
 * SHA-256 over derived_key and what it was derived from (the password too, for the second
 * kind: a hit proves the same password was checked before). Direct-mapped by tag, so a
 * collision only costs one derivation more.
 */
#define WORKER_DERIVED_N    32
#define WORKER_POOL_CACHE_N 64
struct worker_derived {
    uint8_t tag[32];
    bool is_used;
    struct proto_scram_secret secret;        /* from a plaintext secret */
    uint8_t client_key[PROTO_SCRAM_KEY_LEN]; /* from a cleartext password */
};

struct runtime {
    struct cfg *cfg;               /* current configuration snapshot, one reference held here;
                                      replaced by a reload on the main thread under cfg_mu (other
                                      threads use runtime_cfg_get) */
    pthread_mutex_t cfg_mu;        /* guards cfg's replacement against runtime_cfg_get */
    ev_async reload_async;         /* runtime_request_reload: a reload to run on the main thread */
    atomic_uint n_reloads;         /* configurations applied by a reload since start */
    atomic_uint n_reload_failures; /* reloads refused because the file was invalid */
    bool is_stopping;              /* main thread: SIGTERM or SIGINT seen; reloads are ignored */
    struct pool_node *nodes;       /* [TOPO_MAX_NODES], n_nodes used; from cfg->nodes, resolved, and
                                      appended to by the monitor (DNS): never moved or shrunk */
    int n_nodes;              /* nodes known at start; the live count is a snapshot's n_nodes */
    int primary_node;         /* the primary of the first snapshot; prefer w->topo->primary */
    struct topology topology; /* node states published by the monitor thread */
    struct pool_set pools;
    struct worker *workers; /* [n_workers] */
    int n_workers;
    atomic_int n_active;   /* worker_balance: workers 0..n_active-1 keep sessions, the others hand
                              theirs over (balance.h); written by worker 0's tick */
    atomic_uint spare_pm;  /* worker_balance: idle CPU the process could use at worker 0's last
                              tick, permille of one CPU (balance_spare_pm) */
    atomic_bool is_spread; /* worker_balance: workers count as busy at half worker_busy_percent
                              (balance.h, spreading); written by worker 0's tick */
    atomic_int n_clients;  /* client connections open, all workers (max_client_conn) */
    pthread_mutex_t steer_mu;  /* orders worker 0's steering (worker_steer) against the drain */
    bool may_steer;            /* under steer_mu: our listeners are the port's first ones, in worker
                                  order (steer.h); false once draining or where it failed */
    atomic_int steer_n;        /* new TCP connections go to workers 0..steer_n-1; 0 = the
                                  kernel's hash over all. Written under steer_mu; metrics read */
    struct ev_loop *main_loop; /* told through workers_done when a worker has finished */
    ev_async workers_done;
    atomic_int n_running;        /* workers whose loop still runs */
    uint8_t mock_key[32];        /* derives stable fake SCRAM salts for unknown users */
    struct stats_worker **stats; /* [n_workers]: each worker's counters, for readers (stats.h);
                                    filled by worker_init, emptied by worker_fini */
    struct tls_state tls;        /* TLS contexts towards clients and servers (swapped on reload) */
    struct peers peers;          /* client connections per address (max_client_conn_per_addr) */
    struct admin_shared admin;   /* paused databases and SET values (admin console) */
    atomic_bool is_finishing;    /* main has left its loop and finalizes the workers: inbox
                                    messages must no longer be posted */
    struct authq *authq;         /* auth_query's lookup thread and cache */
};

#define WORKER_WANT_CACHE_N 64
#define WORKER_SPELLING_N   64

struct worker {
    int idx;
    pthread_t thread;
    struct ev_loop *loop;
    struct runtime *rt;
    struct cfg *cfg;            /* this worker's reference to the snapshot it runs with */
    struct topo_snapshot *topo; /* this worker's reference to the node states (topo_refresh) */
    struct pool_worker pw;
    struct stats_worker *stats; /* this worker's counters; only this thread writes them */

    int listen_fd;
    ev_io listen_io;
    unsigned int accept_iter; /* ev_iteration of the last accepting wake-up (accept_budget) */
    int unix_fd;   /* the Unix-domain listener shared by all workers (main.c owns it); -1 = none */
    int unix_epfd; /* owned: an epoll set holding unix_fd with EPOLLEXCLUSIVE; -1 = none */
    ev_io unix_io; /* on unix_epfd */
    struct iobatch *iob; /* owned: io_engine = io_uring's ring; NULL = epoll only */
    ev_timer tick;
    int64_t mono_minus_loop_us; /* mono_now_us() - ev_now() in µs, as of the last tick
                                   (worker_now_us) */
    ev_check reap;
    bool is_stopping;
    bool is_draining;          /* SIGTERM: no new clients, sessions end between transactions */
    int64_t drain_deadline_us; /* then every remaining session is closed */

    struct ilist clients_login;   /* client: CLIENT_STARTUP, CLIENT_AUTH */
    struct ilist clients_idle;    /* client: CLIENT_IDLE */
    struct ilist clients_waiting; /* client: CLIENT_WAITING, CLIENT_SETTING */
    struct ilist clients_active;  /* client: CLIENT_ACTIVE */
    struct ilist clients_admin;   /* client: CLIENT_ADMIN */
    struct ilist to_free;         /* client: CLIENT_CLOSED */
    struct ilist cancels;         /* outgoing cancel requests in flight */
    struct ilist lingering;       /* struct worker_linger: closed sessions' sockets, half-closed,
                                     read until the client closes (drain only) */

    uintptr_t *slots;   /* [cap_slots]: session by slot, for cancel and grants: a struct client *,
                           or for an unused slot (index of the next unused one << 1) | 1, so
                           the free list needs no array of its own (8 bytes a slot, not 12) */
    uint32_t free_slot; /* first unused slot; WORKER_NO_SLOT when none */
    uint32_t cap_slots;
    uint32_t next_gen; /* generation counter for client ids */

    /* SCRAM secrets derived from plaintext auth_file passwords, by user index; PBKDF2 once per
     * user and worker instead of once per login (CONVENTIONS 6.10). */
    struct proto_scram_secret *scram_cache;
    bool *scram_cached;
    int n_scram_cache;
    /* Pools this worker's logins found, by a hash of (node, database, user): a login takes
     * its pool without the pool set's lock or its linear search (client.c). Pools live until
     * the process ends, so an entry never dangles. */
    struct pool *pool_cache[WORKER_POOL_CACHE_N];
    /* The other PBKDF2 results of client logins, which no user index names (client.c). */
    struct worker_derived derived[WORKER_DERIVED_N];
    uint8_t derived_key[32]; /* random: a tag means nothing outside this worker */

    /* worker_balance (balance.h) */
    _Atomic uint32_t load_pm; /* CPU this thread used over its last tick, permille of one CPU
                                 (written by its tick, read by the others' and /metrics) */
    int64_t load_cpu_ns;      /* the thread's CPU time at that tick */
    int64_t load_at_us;       /* and the monotonic clock then */
    bool is_parked;           /* index >= n_active at the last tick: sessions leave when idle */
    bool skips_unix;          /* parked: the Unix listener is left to the active workers */
    unsigned ticks;           /* tick_cb calls so far; once-a-second work runs at multiples of
                                 WORKER_TICKS_PER_S (steering's recount, the buffer trim) */
    bool has_leavers;         /* parked: a session became idle since the reaper last looked */
    int give_hold;            /* ticks before this worker hands sessions to another again */
    int active_hold;          /* worker 0: ticks before n_active may change again */
    /* Packed wanted-settings blocks of recent logins, by a hash of their entries: clients of
     * one application send the same startup parameters and share one (pool_params_intern_from). */
    void *want_cache[WORKER_WANT_CACHE_N];
    /* How the server spells a reported setting's value that a startup packet gave otherwise
     * (DateStyle "ISO" is "ISO, MDY" for a user whose default order is MDY, TimeZone "utc" is
     * "UTC"), by a hash of (database, user, name, value), learned at the first replay of it:
     * later logins are welcomed with the server's spelling, as PostgreSQL would welcome them,
     * and their settings then compare equal to a server's. Two ways per slot pair; a third
     * entry replaces one of them. */
    struct worker_spelling {
        uint64_t hash;
        const struct pool *pool; /* learned there; pools live until shutdown */
        char *s;                 /* "name\0value\0server's value\0"; NULL: empty */
        uint16_t value_at;       /* offsets in s */
        uint16_t server_at;
    } spellings[WORKER_SPELLING_N];
    int n_spellings;              /* entries in use: 0 spares a login the hashing */
    struct balance_spread spread; /* worker 0: whether the load spreads (balance.h) */
    struct cpu_sampler {          /* worker 0: idle time of the CPUs this process may use */
        int fd;                   /* /proc/stat, opened at the first tick; -1: none */
        bool has_failed;          /* it cannot be read here: spare stays 0 */
        bool has_prev;            /* idle and total hold the previous tick's sums */
        int n_cpus;               /* CPUs of mask found in /proc/stat */
        int quota_fd;             /* the quota's cgroup CPU time (cpus_quota); -1: none */
        bool quota_v2;            /* its format */
        uint32_t quota_pm;        /* the quota (permille of one CPU); 0: none */
        int64_t usage_us;         /* the cgroup's CPU time at the previous tick; -1: unknown */
        int64_t usage_at_us;      /* and the monotonic clock then */
        char *buf;                /* [size]: the text read at each tick */
        size_t size;
        uint64_t idle, total; /* sums at the previous tick (cpus_stat_idle) */
        cpu_set_t mask;       /* the process's affinity mask at the first tick */
    } cpu;
    unsigned int next_target; /* parked: where the next leaving session goes (round robin) */

    struct routing_worker routing;        /* balancing state and routing counters */
    struct router_classifier *classifier; /* statement classes, with this worker's cache */

    uint8_t rand_pool[256]; /* random bytes for cancel keys and salts, refilled in bulk */
    size_t rand_left;
};

/**
 * The monotonic clock (mono_now_us) as of this loop iteration, without a system call: the
 * loop's time (ev_now, the wall clock when the iteration began) moved onto the monotonic clock
 * by an offset the housekeeping tick refreshes. A step of the wall clock skews it until the
 * next tick (WORKER_TICK_S). For timestamps that are compared with mono_now_us (idle and wait
 * timeouts). The worker's thread.
 */
static inline int64_t
worker_now_us(const struct worker *w)
{
    return (int64_t) (ev_now(w->loop) * 1e6) + w->mono_minus_loop_us;
}

/**
 * Free what was closed (sessions, server connections) and hand parked sessions over at the
 * start of the next loop iteration's dispatch. The reaper is watched only while it has work:
 * an idle check watcher still costs libev a queue and a dispatch per iteration. Worker thread.
 */
static inline void
worker_reap_soon(struct worker *w)
{
    ev_check_start(w->loop, &w->reap);
}

/** Create worker idx's loop, listener watcher and pool context. Main thread, before start. */
int worker_init(struct worker *w, int idx, struct runtime *rt, int listen_fd) MUST_CHECK;

/**
 * Accept clients from the shared Unix-domain listener fd too (not owned: main.c closes it
 * after every worker thread ended). Main thread, after worker_init and before start.
 */
int worker_listen_unix(struct worker *w, int fd) MUST_CHECK;

/** Start the thread. */
int worker_start(struct worker *w) MUST_CHECK;

/**
 * Decide once, after every worker's listener is open and before any starts, whether new TCP
 * connections may be steered to the active workers (steer.h): only where no other socket
 * listened on the port before ours, and then steer them as cfg and the active count say.
 * Otherwise detach what a predecessor may have left. Main thread.
 */
void worker_steer_init(struct runtime *rt, const struct cfg *cfg);

/** Hand new TCP connections to the kernel's hash again, for good (drain). Any thread. */
void worker_steer_stop(struct runtime *rt);

/** Ask the worker to close everything and leave its loop. Any thread. */
void worker_stop(struct worker *w);

/**
 * Ask the worker to stop accepting, close each session as soon as its server is between
 * transactions, and leave its loop when none is left or timeout_us has passed. Any thread.
 */
void worker_drain(struct worker *w, int64_t timeout_us);

/**
 * Hand the worker a new configuration snapshot (reload). Takes over the caller's reference to
 * cfg; the worker adopts it between events and drops its old one. Sessions already logged in
 * keep going; what they read from w->cfg (timeouts, limits) follows the new snapshot. Any
 * thread.
 */
void worker_set_cfg(struct worker *w, struct cfg *cfg);

/**
 * Take over fd, a client socket whose last message (a FATAL) was sent: half-close it and read
 * and drop what the client still sends until it closes its end, or a second has passed. A
 * plain close with unread input makes the kernel send a reset, and a reset can destroy the
 * FATAL before the client reads it. Worker thread.
 */
void worker_linger(struct worker *w, int fd);

/**
 * While draining (SIGTERM), close session c with FATAL 57P01 if it is between transactions
 * (logged in, no transaction open on its server connection, nothing owed either way, all
 * output written) and either has_input (it just sent its next statement, which then does not
 * run) or it has stayed between transactions for WORKER_DRAIN_REST_US; a client waiting for a
 * server connection (its statement not run yet) goes at once. Returns true when it closed it.
 * Worker thread.
 */
bool worker_drain_close(struct client *c, bool has_input);

/** Join and free. Main thread. */
void worker_fini(struct worker *w);

/** Fill out with n random bytes from the worker's pool. */
void worker_random(struct worker *w, void *out, size_t n);

#endif
