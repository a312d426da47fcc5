/*
 * admin.h - the admin console: clients that connect to the virtual database "pgmux" are
 * answered by pgmux itself, never by a server (SHOW POOLS, PAUSE, SET, ...), and the
 * process-wide state the console changes: paused databases and the values SET made.
 *
 * Sessions: an admin session is a struct client in CLIENT_ADMIN on its worker's
 * clients_admin list; it speaks the simple and the extended query protocol and answers with
 * ordinary, typed result sets. Commands that need other workers' sessions or server
 * connections ask each worker through its inbox and answer when all have replied, so no
 * thread reads another's lists (CONVENTIONS 3.1.1). Admin sessions are rare; nothing here is on
 * the path of ordinary traffic except admin_is_paused and admin_tunable, which cost one relaxed
 * load when nothing is paused or SET.
 *
 * Threads: admin_session_* on the session's worker; struct admin_shared any thread (its fields
 * say how); admin_shared_init/fini on the main thread.
 */
#ifndef PGMUX_PROXY_ADMIN_H
#define PGMUX_PROXY_ADMIN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/macros.h"

/* The database name that reaches the console instead of a server. */
#define ADMIN_DB "pgmux"

struct cfg;
struct client;
struct worker;

/* Keys SET may change while pgmux runs. Everything else needs the file and RELOAD. */
enum admin_tun {
    ADMIN_TUN_MAX_CLIENT_CONN,
    ADMIN_TUN_CLIENT_IDLE_TIMEOUT,  /* ms */
    ADMIN_TUN_IDLE_TXN_TIMEOUT,     /* ms */
    ADMIN_TUN_CLIENT_LOGIN_TIMEOUT, /* ms */
    ADMIN_TUN_QUERY_WAIT_TIMEOUT,   /* ms */
    ADMIN_TUN_SHUTDOWN_TIMEOUT,     /* ms */
    ADMIN_TUN_LOG_LEVEL,            /* enum log_level */
    ADMIN_TUN__COUNT,
};

/*
 * Shared by every thread. A SET value belongs to the configuration snapshot it was made
 * against (tun_base): once a reload publishes a new snapshot, a worker running with it no
 * longer sees the old SET values, so the file wins after RELOAD without the reload code having
 * to know about SET.
 */
struct admin_shared {
    pthread_mutex_t pause_mu;
    atomic_int n_paused; /* is_all_paused + n_paused_dbs; 0 lets the fast path skip the lock */
    bool is_all_paused;  /* under pause_mu: PAUSE without a database */
    char **paused_dbs;   /* under pause_mu: PAUSE db and KILL db */
    int n_paused_dbs;    /* under pause_mu */
    int cap_paused_dbs;  /* under pause_mu */

    pthread_mutex_t tun_mu;         /* serializes SET (writers only) */
    _Atomic(struct cfg *) tun_base; /* the snapshot the values apply to, one reference held;
                                       written under tun_mu */
    atomic_uint tun_mask;           /* bit k: value[k] is set for tun_base */
    _Atomic int64_t tun_value[ADMIN_TUN__COUNT];
};

/** Set up the shared state. 0, or -1 when out of memory. Main thread, before workers. */
int admin_shared_init(struct admin_shared *a) MUST_CHECK;

/** Release it. Main thread, after workers have stopped. */
void admin_shared_fini(struct admin_shared *a);

/**
 * The value of tunable k for a thread running with snapshot cfg: what SET made against that
 * snapshot, else file_value (the snapshot's own field). Any thread; one relaxed load when
 * nothing was SET.
 */
int64_t admin_tunable(struct admin_shared *a, const struct cfg *cfg, enum admin_tun k,
                      int64_t file_value);

/**
 * A reload has published a new snapshot: drop the SET values (they belonged to the old one, and
 * the file now wins) and the reference to that snapshot, so its memory and secrets go when its
 * other holders let go. Main thread (runtime_reload).
 */
void admin_tunables_forget(struct admin_shared *a);

/**
 * Whether new transactions of database are held (PAUSE, KILL). Any thread; one relaxed load
 * when nothing is paused.
 */
bool admin_is_paused(struct admin_shared *a, const char *database);

/** Whether a startup packet's database names the console. Pure. */
bool admin_is_console_db(const char *database);

/**
 * The client authenticated to the console database: refuse it (FATAL 28000) unless it is in
 * admin_users or stats_users, else send the welcome and serve commands. Session's worker.
 */
void admin_session_start(struct client *c);

/** Release the console state of c; from client_close. Accepts a client without one. */
void admin_session_close(struct client *c);

/** A CancelRequest for c: a PAUSE still waiting gives up (57014) and is undone. */
void admin_session_cancel(struct client *c);

#endif
