/*
 * monitor.h - the topology monitor thread: health checks, role discovery, replication
 * positions, learned VOLATILE functions and DNS re-resolution (topology.h says what it
 * publishes). It is the only writer of rt->topology after start and the only user of libpq
 * (CONVENTIONS 1.6).
 *
 * Threads: monitor_start and monitor_stop on the main thread.
 */
#ifndef PGMUX_PROXY_MONITOR_H
#define PGMUX_PROXY_MONITOR_H

#include "common/macros.h"

struct runtime;
struct monitor;

/**
 * Start the monitor over rt (whose first snapshot is already published) and wait until its
 * first round of checks has published what it found, at most health_check_timeout, so the first
 * clients already see discovered roles. The workers need not exist yet: the monitor tells them
 * nothing until monitor_workers_ready. Returns 0 or -1 (out of memory, thread not started).
 */
int monitor_start(struct runtime *rt, struct monitor **out) MUST_CHECK;

/**
 * rt->workers are initialized (worker_init: their inboxes take the monitor's messages; they need
 * not run yet) and reloads may come (runtime_reload_init): from now on the monitor tells the
 * workers what changed and follows the configuration a reload publishes. Main thread.
 */
void monitor_workers_ready(struct monitor *m);

/**
 * Stop the thread, close its connections. Nodes it appended to rt->nodes keep their names until
 * monitor_free, since pools may still name them. Main thread, before the workers are freed.
 */
void monitor_stop(struct monitor *m);

/** Free what monitor_stop left (the appended nodes' names). After pool_set_fini. */
void monitor_free(struct monitor *m);

#endif
