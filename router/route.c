/*
 * route.c - see route.h. Pure: no I/O, no clock, no globals; the balancer state is the
 * caller's. Any thread.
 */
#include "router/route.h"

#include <math.h>
#include <stddef.h>

static struct router_decision
decide(enum router_target t, const char *reason)
{
    struct router_decision d = { t, reason };
    return d;
}

struct router_decision
router_route_session(const struct router_session *s)
{
    /* A session-pooled client may write at any moment, so only the primary can serve it
     * unless it said it will not write (a read-only session). */
    if (!s->is_split) {
        return decide(ROUTER_PRIMARY, "read_write_split = off");
    }
    if (s->is_read_only_hint) {
        return decide(ROUTER_REPLICA, "read-only session");
    }
    return decide(ROUTER_PRIMARY, "session pooling: primary");
}

/* A read may still have to stay on the primary while the client's write window is open. */
static struct router_decision
read_node(const struct router_session *s, const char *reason)
{
    if (s->is_write_window) {
        return decide(ROUTER_PRIMARY, "read-your-writes window");
    }
    return decide(ROUTER_REPLICA, reason);
}

struct router_decision
router_route_txn(const struct router_session *s, const struct router_stmt *st)
{
    if (!s->is_split) {
        return decide(ROUTER_PRIMARY, "read_write_split = off");
    }
    if (s->is_pinned) {
        return decide(ROUTER_PRIMARY, "pinned session");
    }
    /* Session state outlives the transaction; the primary is the one node every later
     * statement of this client, read or write, can run on. */
    if (st->is_pinning) {
        return decide(ROUTER_PRIMARY, "session state pins to the primary");
    }
    if (st->is_hint_primary) {
        return decide(ROUTER_PRIMARY, "hint: primary");
    }
    if (st->is_hint_replica) {
        return read_node(s, "hint: replica");
    }
    if (s->is_read_only_hint) {
        return read_node(s, "read-only session");
    }
    if (st->is_begin || st->is_read_only) {
        /* The whole transaction runs where it starts: only a declared read-only one may run
         * on a replica. */
        if (st->is_read_only) {
            return read_node(s, "read-only transaction");
        }
        return decide(ROUTER_PRIMARY, "read-write transaction");
    }
    if (!st->is_known) {
        return decide(ROUTER_PRIMARY, "statement not classified");
    }
    if (!st->is_read) {
        return decide(ROUTER_PRIMARY, "write");
    }
    return read_node(s, "read");
}

/* ---- choosing among read nodes ---- */

uint64_t
router_hash(uint64_t h, const void *data, uint64_t len)
{
    const unsigned char *p = data;
    for (uint64_t i = 0; i < len; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

/* splitmix64 finaliser: spreads (key, node) pairs evenly for rendezvous hashing. */
static uint64_t
mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t
xorshift64(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

struct cand {
    int idx;
    int weight;
    int active;
};

static bool
replica_ok(const struct router_limits *lim, const struct router_node *nd, int primary,
           uint64_t min_lsn)
{
    if (!nd->is_replica || nd->idx == primary || !nd->is_usable || nd->weight <= 0) {
        return false;
    }
    if (lim->max_lag_ms > 0 && nd->lag_ms > lim->max_lag_ms) {
        return false;
    }
    if (lim->max_lag_bytes > 0 && nd->lag_bytes > lim->max_lag_bytes) {
        return false;
    }
    return min_lsn == 0 || nd->lsn >= min_lsn;
}

static int
pick_least_conn(struct router_balancer *b, const struct cand *c, int n)
{
    /* Fewest in flight per unit of weight: a->active / a->weight < b->active / b->weight,
     * compared without division. Ties rotate so that idle nodes share sequential work. */
    int start = (int) (b->tie++ % (uint32_t) n);
    int best = start;
    for (int k = 1; k < n; k++) {
        int i = (start + k) % n;
        int64_t lhs = (int64_t) c[i].active * c[best].weight;
        int64_t rhs = (int64_t) c[best].active * c[i].weight;
        if (lhs < rhs) {
            best = i;
        }
    }
    return best;
}

static int
pick_round_robin(struct router_balancer *b, const struct cand *c, int n)
{
    /* nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, never a burst. */
    int64_t total = 0;
    int best = 0;
    for (int i = 0; i < n; i++) {
        int64_t *cur = &b->rr_current[c[i].idx];
        *cur += c[i].weight;
        total += c[i].weight;
        if (*cur > b->rr_current[c[best].idx]) {
            best = i;
        }
    }
    b->rr_current[c[best].idx] -= total;
    return best;
}

static int
pick_random(struct router_balancer *b, const struct cand *c, int n)
{
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        total += (uint64_t) c[i].weight;
    }
    if (total == 0) {
        return 0; /* not reached: every candidate has a positive weight */
    }
    uint64_t r = xorshift64(&b->rng) % total;
    for (int i = 0; i < n; i++) {
        if (r < (uint64_t) c[i].weight) {
            return i;
        }
        r -= (uint64_t) c[i].weight;
    }
    return n - 1;
}

static int
pick_hash(const struct cand *c, int n, uint64_t key)
{
    /* Weighted rendezvous hashing: each (key, node) pair gets a score, the highest wins. A
     * node leaving moves only its own keys; a node coming back takes back only its own. */
    int best = 0;
    double best_score = 0;
    for (int i = 0; i < n; i++) {
        uint64_t h = mix64(key ^ mix64((uint64_t) c[i].idx + 1));
        double u = ((double) (h >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
        double score = (double) c[i].weight / -log(u);
        if (i == 0 || score > best_score) {
            best = i;
            best_score = score;
        }
    }
    return best;
}

int
router_pick_read(struct router_balancer *b, const struct router_limits *lim,
                 const struct router_node *nodes, int n, int primary, uint64_t min_lsn,
                 uint64_t key, const char **reason)
{
    struct cand c[ROUTER_MAX_NODES];
    int nc = 0;
    int n_replicas = 0;
    for (int i = 0; i < n && nc < ROUTER_MAX_NODES; i++) {
        const struct router_node *nd = &nodes[i];
        if (nd->idx < 0 || nd->idx >= ROUTER_MAX_NODES) {
            continue;
        }
        if (nd->idx == primary) {
            if (lim->primary_reads_weight > 0) {
                c[nc++] = (struct cand){ nd->idx, lim->primary_reads_weight, nd->active };
            }
        } else if (replica_ok(lim, nd, primary, min_lsn)) {
            c[nc++] = (struct cand){ nd->idx, nd->weight, nd->active };
            n_replicas++;
        }
    }
    if (n_replicas == 0) {
        if (reason) {
            *reason =
                min_lsn ? "no replica has replayed the client's last write" : "no usable replica";
        }
        return primary;
    }
    int i;
    switch (lim->balance) {
    case ROUTER_BALANCE_ROUND_ROBIN:
        i = pick_round_robin(b, c, nc);
        break;
    case ROUTER_BALANCE_RANDOM:
        i = pick_random(b, c, nc);
        break;
    case ROUTER_BALANCE_HASH:
        i = pick_hash(c, nc, key);
        break;
    case ROUTER_BALANCE_LEAST_CONN:
    default:
        i = pick_least_conn(b, c, nc);
        break;
    }
    if (reason) {
        *reason = c[i].idx == primary ? "read on the primary (primary_reads_weight)" : "read";
    }
    return c[i].idx;
}
