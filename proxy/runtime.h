/*
 * runtime.h - configuration reload: read proxy.ini again and apply it to the running process
 * without dropping a client.
 *
 * What changes live: pool limits and timeouts (every existing pool, under its lock), users and
 * secrets (new logins; pools log in to servers with the new secret from their next connection),
 * pool_mode for new sessions, every [pgmux] timeout, max_client_conn, auth_type, admin and stats
 * users, max_message_size, max_prepared_statements, pin_session_state, log_level, new
 * warm_pools, [node.NAME] sections added, removed or changed (applied by the monitor thread).
 * What needs a restart (logged, the running value stays): listen_addr, listen_port, workers,
 * track_parameters.
 *
 * Threads: runtime_request_reload from any thread (and from a signal handler: it only calls
 * ev_async_send); the reload itself runs on the main thread, the only one that reads files.
 */
#ifndef PGMUX_PROXY_RUNTIME_H
#define PGMUX_PROXY_RUNTIME_H

#include "common/macros.h"
#include "proxy/config.h"
#include "proxy/worker.h"

/** Set up the reload watcher on rt->main_loop. Main thread, before runtime_request_reload. */
void runtime_reload_init(struct runtime *rt);

/** Stop the watcher (exit). Main thread. */
void runtime_reload_fini(struct runtime *rt);

/**
 * Ask the main thread to reload the configuration file. Returns at once; requests made before
 * the main thread gets to them are served by one reload. The outcome is logged, and counted in
 * rt->n_reloads / rt->n_reload_failures. Any thread.
 */
void runtime_request_reload(struct runtime *rt);

/**
 * Reload now: read rt->cfg->path; if it is invalid, log every problem and keep the running
 * configuration (-1); else apply it (0). Main thread.
 */
int runtime_reload(struct runtime *rt);

/**
 * Give the pool set the caps that [database.NAME] max_db_connections and [user.NAME]
 * max_user_connections set (pool_set_cap_limits). ST_OK or ST_ENOMEM. Any thread.
 */
enum status runtime_cap_limits(struct pool_set *s, const struct cfg *c) MUST_CHECK;

/** The current configuration snapshot, with a reference for the caller (cfg_unref). Any thread. */
struct cfg *runtime_cfg_get(struct runtime *rt);

#endif
