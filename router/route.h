/*
 * route.h - the routing decision: which kind of node serves what a client is about to send.
 * Pure: its input is what the session knows and a read-only view of node health, its output a
 * target and the reason (CONVENTIONS 1.3). Any thread.
 *
 * Today every session goes to the primary: session pooling pins a client to one server for its
 * whole life, and statement classification with read/write splitting arrives with the topology
 * monitor. The hook sits where those will plug in, before a server connection is chosen.
 */
#ifndef PGMUX_ROUTER_ROUTE_H
#define PGMUX_ROUTER_ROUTE_H

#include <stdbool.h>

enum router_target {
    ROUTER_PRIMARY,
    ROUTER_REPLICA,
};

struct router_session {
    bool is_session_pooled; /* the server is chosen once, at login */
    bool is_read_only_hint; /* the client asked for a read-only session */
};

struct router_decision {
    enum router_target target;
    const char *reason; /* static string, for logs and statistics */
};

/** Decide where a new session's server connection comes from. */
struct router_decision router_route_session(const struct router_session *s);

#endif
