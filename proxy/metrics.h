/*
 * metrics.h - the HTTP endpoint for monitoring: Prometheus text format on /metrics, liveness
 * on /healthz, readiness on /readyz (metrics_addr, metrics_port).
 *
 * It runs on the main thread's libev loop (CONVENTIONS 6.1), never on a worker: a scrape reads
 * the workers' counters with relaxed loads (stats.h), the pool registry under its lock, each
 * pool's open count under the pool's lock (held for one load), and the topology snapshot by
 * reference. Nothing a worker does waits for a scrape.
 *
 * Threads: main thread only.
 */
#ifndef PGMUX_PROXY_METRICS_H
#define PGMUX_PROXY_METRICS_H

#include <ev.h>
#include <stdbool.h>

#include "common/macros.h"
#include "common/strbuf.h"

struct runtime;
struct metrics_server;

/**
 * Listen on addr:port ("*" = every address) and serve on loop. rt is borrowed and must outlive
 * the server. Returns the server, or NULL after logging why (address in use, bad address).
 */
struct metrics_server *metrics_start(struct ev_loop *loop, struct runtime *rt, const char *addr,
                                     int port) MUST_CHECK;

/** Close the listener and every open HTTP connection, and free. Accepts NULL. */
void metrics_stop(struct metrics_server *m);

/** Append the Prometheus text exposition (format 0.0.4) of everything rt counts to out. */
void metrics_render(struct runtime *rt, struct strbuf *out);

#endif
