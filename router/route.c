/*
 * route.c - see route.h. Pure.
 */
#include "router/route.h"

struct router_decision
router_route_session(const struct router_session *s)
{
    struct router_decision d;
    /* A session-pooled client may write at any moment, so only the primary can serve it
     * without changing what the client sees. */
    (void) s;
    d.target = ROUTER_PRIMARY;
    d.reason = "session pooling: primary";
    return d;
}
