/*
 * routing.c - see routing.h. Runs on the client's worker.
 */
#include "proxy/routing.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/mono.h"
#include "protocol/wire.h"
#include "proxy/client.h"
#include "proxy/config.h"
#include "proxy/worker.h"
#include "router/classify.h"
#include "router/scan.h"

_Static_assert(TOPO_MAX_NODES == ROUTER_MAX_NODES, "one node limit");
_Static_assert(TOPO_MAX_NODES == POOL_MAX_NODES, "one node limit");

void
routing_worker_init(struct routing_worker *rw, uint64_t seed)
{
    memset(&rw->bal, 0, sizeof(rw->bal));
    rw->bal.rng = seed ? seed : 1;
    for (int i = 0; i < TOPO_MAX_NODES; i++) {
        rw->active[i] = 0;
    }
    atomic_init(&rw->n_lsn_lookups, 0);
    atomic_init(&rw->n_fallbacks, 0);
    atomic_init(&rw->n_probes, 0);
    memset(rw->replay_lsn, 0, sizeof(rw->replay_lsn));
    memset(rw->probe_sent_us, 0, sizeof(rw->probe_sent_us));
    memset(rw->is_probing, 0, sizeof(rw->is_probing));
    rw->wanted_lsn = 0;
    rw->read_node_gen = 0;
    rw->read_node_cfg = NULL;
    rw->read_node_primary = -1;
    rw->has_read_node = true;
}

void
routing_worker_log(const struct routing_worker *rw, const struct stats_worker *sw, int idx,
                   const struct pool_node *nodes, int n_nodes)
{
    char line[1024];
    size_t len = 0;
    for (int i = 0; sw && i < n_nodes && i < STATS_MAX_NODES; i++) {
        uint64_t wr =
            atomic_load_explicit(&sw->nodes[i].routed[STATS_ROUTE_PRIMARY], memory_order_relaxed);
        uint64_t rd =
            atomic_load_explicit(&sw->nodes[i].routed[STATS_ROUTE_REPLICA], memory_order_relaxed);
        int k = snprintf(line + len, sizeof(line) - len, "%s%s %llu (reads %llu)", len ? ", " : "",
                         nodes[i].name ? nodes[i].name : "?", (unsigned long long) (wr + rd),
                         (unsigned long long) rd);
        if (k < 0 || (size_t) k >= sizeof(line) - len) {
            break;
        }
        len += (size_t) k;
    }
    log_info("worker %d routed: %s; commit positions learned %llu, replica replay positions "
             "learned %llu, reads moved to the primary after a replica refused %llu",
             idx, len ? line : "nothing",
             (unsigned long long) atomic_load_explicit(&rw->n_lsn_lookups, memory_order_relaxed),
             (unsigned long long) atomic_load_explicit(&rw->n_probes, memory_order_relaxed),
             (unsigned long long) atomic_load_explicit(&rw->n_fallbacks, memory_order_relaxed));
}

/* ---- counting ---- */

static enum routing_result
enter(struct client *c, int node, bool is_read)
{
    struct worker *w = c->w;
    struct pool *p = pool_sibling(&w->rt->pools, c->pool, node);
    if (!p) {
        return ROUTING_ENOMEM;
    }
    routing_leave(c);
    if (p != c->pool) {
        c->pool = p;
        client_pool_changed(c);
    }
    c->route_node = (int16_t) node;
    c->is_route_read = is_read;
    w->routing.active[node]++;
    if (node < STATS_MAX_NODES) {
        /* routed[REPLICA] counts decisions made as reads, wherever they landed */
        stats_add(
            &w->stats->nodes[node].routed[is_read ? STATS_ROUTE_REPLICA : STATS_ROUTE_PRIMARY], 1);
    }
    return ROUTING_OK;
}

enum routing_result
routing_to_node(struct client *c, int node)
{
    return enter(c, node, false);
}

void
routing_leave(struct client *c)
{
    if (c->route_node >= 0) {
        c->w->routing.active[c->route_node]--;
        c->route_node = -1;
    }
}

/* ---- the node view ---- */

static int
primary_of(struct worker *w, const struct topo_snapshot *t)
{
    return t->primary >= 0 ? t->primary : w->rt->primary_node;
}

/* The client's key for replica_balance = hash: its user and application_name. */
static uint64_t
hash_key(const struct client *c)
{
    uint64_t h = router_hash(ROUTER_HASH_INIT, client_user(c), strlen(client_user(c)) + 1);
    for (int i = 0; i < c->want.n; i++) {
        if (strcasecmp(c->want.v[i].name, "application_name") == 0) {
            h = router_hash(h, c->want.v[i].value, strlen(c->want.v[i].value));
            break;
        }
    }
    return h;
}

static int
pick_read(struct client *c, const struct topo_snapshot *t, int primary, const char **reason)
{
    struct worker *w = c->w;
    const struct cfg *cfg = w->cfg;
    struct router_node v[TOPO_MAX_NODES];
    int n = 0;
    int64_t now = mono_now_us();
    for (int i = 0; i < t->n_nodes && i < TOPO_MAX_NODES; i++) {
        const struct topo_node *tn = &t->nodes[i];
        /* A failed connect from this process is fresher news than the last health check. */
        bool is_down =
            atomic_load_explicit(&w->rt->nodes[i].down_until_us, memory_order_relaxed) > now;
        v[n++] = (struct router_node){
            .idx = i,
            .is_primary = i == primary,
            .is_replica = tn->role == POOL_ROLE_REPLICA,
            .is_usable = tn->is_healthy && !tn->is_removed && !tn->is_fenced && !is_down,
            .weight = tn->weight,
            /* the fresher of the health check's and this worker's own probe's position */
            .lsn = tn->lsn > w->routing.replay_lsn[i] ? tn->lsn : w->routing.replay_lsn[i],
            .lag_bytes = tn->lag_bytes,
            .lag_ms = tn->lag_ms,
            .active = w->routing.active[i],
        };
    }
    struct router_limits lim = {
        .balance = (enum router_balance) cfg->replica_balance,
        .primary_reads_weight = cfg->primary_reads_weight,
        .max_lag_ms = cfg->max_replica_lag_ms,
        .max_lag_bytes = (uint64_t) cfg->max_replica_lag_bytes,
    };
    uint64_t min_lsn = 0;
    if (cfg->read_your_writes == CFG_RYW_LSN) {
        /* While its last commit's position is still being learned no replica can be shown to
         * have it: UINT64_MAX keeps every replica out. */
        min_lsn = c->n_ryw_pending ? UINT64_MAX : c->ryw_lsn;
    }
    uint64_t key = lim.balance == ROUTER_BALANCE_HASH ? hash_key(c) : 0;
    int node = router_pick_read(&w->routing.bal, &lim, v, n, primary, min_lsn, key, reason);
    if (node == primary && min_lsn != 0 && min_lsn != UINT64_MAX &&
        min_lsn > w->routing.wanted_lsn) {
        /* Kept off the replicas by its own write: worth asking them how far they are. */
        w->routing.wanted_lsn = min_lsn;
    }
    return node;
}

/*
 * Whether some node other than the primary could take a read now, by this worker's snapshot and
 * configuration: a replica by role, healthy, not removed or fenced, with a weight, within the lag
 * limits. It ignores this process's own failed connects (down_until_us): saying yes too often
 * only costs a classification. Cached per (snapshot, configuration, primary), so the common path
 * is three compares.
 */
static bool
has_read_node(struct worker *w, const struct topo_snapshot *t, int primary)
{
    struct routing_worker *rw = &w->routing;
    if (rw->read_node_gen == t->generation && rw->read_node_cfg == w->cfg &&
        rw->read_node_primary == primary) {
        return rw->has_read_node;
    }
    const struct cfg *cfg = w->cfg;
    bool any = false;
    for (int i = 0; i < t->n_nodes && i < TOPO_MAX_NODES && !any; i++) {
        const struct topo_node *tn = &t->nodes[i];
        any = i != primary && tn->role == POOL_ROLE_REPLICA && tn->is_healthy && !tn->is_removed &&
              !tn->is_fenced && tn->weight > 0 &&
              !(cfg->max_replica_lag_ms > 0 && tn->lag_ms > cfg->max_replica_lag_ms) &&
              !(cfg->max_replica_lag_bytes > 0 &&
                tn->lag_bytes > (uint64_t) cfg->max_replica_lag_bytes);
    }
    rw->read_node_gen = t->generation;
    rw->read_node_cfg = cfg;
    rw->read_node_primary = primary;
    rw->has_read_node = any;
    return any;
}

bool
routing_has_read_node(struct client *c)
{
    struct worker *w = c->w;
    const struct topo_snapshot *t = topo_refresh(&w->rt->topology, &w->topo);
    return has_read_node(w, t, primary_of(w, t));
}

/* ---- sessions ---- */

enum routing_result
routing_login(struct client *c, struct pool *home)
{
    struct worker *w = c->w;
    const struct topo_snapshot *t = topo_refresh(&w->rt->topology, &w->topo);
    int primary = primary_of(w, t);
    c->pool = home;
    client_pool_changed(c);
    c->route_node = -1;
    if (c->mode != CFG_POOL_SESSION) {
        /* A login that needs a server (the pool has no welcome set yet) runs nothing of the
         * client's: the primary, where the home pool is. Transactions are routed later. */
        return ROUTING_OK;
    }
    struct router_session rs = {
        .is_session_pooled = true,
        .is_read_only_hint = c->is_read_only_session,
        .is_split = w->cfg->read_write_split,
    };
    struct router_decision d = router_route_session(&rs);
    int node = primary;
    const char *reason = d.reason;
    if (d.target == ROUTER_REPLICA) {
        node = pick_read(c, t, primary, &reason);
        if (node < 0) {
            node = primary;
        }
    }
    log_debug("client %s user=%s db=%s session routed to node %d: %s", client_addr(c),
              client_user(c), client_database(c), node, reason);
    return enter(c, node, d.target == ROUTER_REPLICA);
}

bool
routing_on_replica(struct client *c)
{
    struct worker *w = c->w;
    return c->route_node >= 0 && c->route_node != primary_of(w, w->topo);
}

bool
routing_fallback(struct client *c)
{
    struct worker *w = c->w;
    if (!c->is_route_read || c->route_node < 0) {
        return false;
    }
    int primary = primary_of(w, topo_refresh(&w->rt->topology, &w->topo));
    if (c->route_node == primary) {
        return false;
    }
    log_info("client %s user=%s db=%s: replica node %d refused a connection, reading on the "
             "primary",
             client_addr(c), client_user(c), client_database(c), c->route_node);
    stats_add(&w->routing.n_fallbacks, 1);
    return enter(c, primary, false) == ROUTING_OK;
}

/* ---- transactions ---- */

/* What the classifier (router/classify.h) says about one text, in the router's terms. */
static void
classify_text(struct client *c, const char *sql, size_t len, struct router_stmt *st)
{
    struct worker *w = c->w;
    const struct cfg *cfg = w->cfg;
    const struct topo_snapshot *t = w->topo;
    struct router_functions fns = {
        .primary = (const char *const *) cfg->primary_functions,
        .n_primary = cfg->n_primary_functions,
        .volatile_fns = t ? (const char *const *) t->volatile_functions : NULL,
        .n_volatile = t ? t->n_volatile_functions : 0,
        .primary_generation = cfg->primary_functions_hash,
        .volatile_generation = t ? t->functions_generation : 0,
    };
    struct router_classification cl;
    if (router_classify(w->classifier, sql, len, &fns, &cl) != ST_OK) {
        return; /* not known: the primary */
    }
    st->is_known = true;
    /* The hint is the router's to weigh (it never beats pinning), so the class without it. */
    st->is_read = cl.parsed_cls == ROUTER_CLASS_READ;
    st->is_hint_primary = cl.hint == ROUTER_HINT_PRIMARY;
    st->is_hint_replica = cl.hint == ROUTER_HINT_REPLICA;
    st->is_begin = (cl.txn & ROUTER_TXN_BEGIN) != 0;
    st->is_read_only = cl.is_begin_read_only;
}

/* A read that leaves session state behind must run where the client pins: the primary. */
static void
classify_sql(struct client *c, const char *sql, size_t len, struct router_stmt *st)
{
    classify_text(c, sql, len, st);
    if (st->is_read || st->is_hint_replica || st->is_read_only) {
        struct router_scan scan;
        router_scan_sql(sql, len, cfg_scan_tracked, (void *) (uintptr_t) c->w->cfg, &scan);
        st->is_pinning = (scan.flags & ROUTER_F_PINS) != 0;
    }
}

bool
routing_text_is_read(struct client *c, const char *sql, size_t len)
{
    struct router_stmt st = { 0 };
    classify_sql(c, sql, len, &st);
    return st.is_known && st.is_read && !st.is_pinning;
}

/* Read a NUL-terminated string at body[*pos..len); NULL when there is none. */
static const char *
cstr_at(const uint8_t *body, size_t len, size_t *pos, size_t *slen)
{
    const uint8_t *nul = memchr(body + *pos, 0, len - *pos);
    if (!nul) {
        return NULL;
    }
    const char *s = (const char *) body + *pos;
    *slen = (size_t) (nul - (body + *pos));
    *pos += *slen + 1;
    return s;
}

/*
 * What the buffered messages say about the transaction they start. The first message decides
 * its kind; the rest of a pipeline that is already here (up to a Sync) may turn a read into a
 * write, since the whole pipeline runs as one transaction on one node.
 */
static enum routing_result
first_statement(struct client *c, struct router_stmt *st)
{
    struct buf *b = c->sock.in;
    const uint8_t *p = (const uint8_t *) b->data + b->parsed;
    size_t avail = buf_unparsed(b);
    uint32_t max = c->w->cfg->max_message_size;
    bool first = true;
    while (avail >= PROTO_HEADER_LEN) {
        struct proto_header h;
        if (proto_header_read(p, avail, max, &h) != ST_OK) {
            break;
        }
        uint64_t total = proto_header_total(&h);
        if (avail < total) {
            /* Wait for the first message when it can fit; one bigger than a buffer is not
             * worth holding the client for: it routes as unknown (the primary). */
            if (first && (h.type == 'Q' || h.type == 'P' || h.type == 'B') && total <= b->cap) {
                return ROUTING_WAIT;
            }
            break;
        }
        const uint8_t *body = p + PROTO_HEADER_LEN;
        size_t blen = h.len - 4;
        size_t pos = 0, slen = 0;
        struct router_stmt one = { 0 };
        if (h.type == 'Q' || h.type == 'P') {
            if (h.type == 'P' && !cstr_at(body, blen, &pos, &slen)) {
                break;
            }
            const char *sql = cstr_at(body, blen, &pos, &slen);
            if (!sql) {
                break;
            }
            classify_sql(c, sql, slen, &one);
        } else if (h.type == 'B') {
            if (!cstr_at(body, blen, &pos, &slen)) {
                break;
            }
            const char *name = cstr_at(body, blen, &pos, &slen);
            struct client_stmt *s = name && name[0] ? txn_stmt_find(c, name) : NULL;
            if (s) {
                if (!s->is_classified) {
                    /* the Parse text leads the tail, NUL-terminated (txn.c stmt_store) */
                    const char *text = (const char *) s->tail;
                    s->is_read = routing_text_is_read(c, text, strnlen(text, s->tail_len));
                    s->is_classified = true;
                }
                one.is_known = true;
                one.is_read = s->is_read;
            } else if (!first) {
                /* the unnamed statement a Parse earlier in this pipeline made */
                p += total;
                avail -= total;
                continue;
            }
        } else if (h.type == 'S' || h.type == 'X' || !first) {
            /* Sync ends the pipeline; Describe, Execute, Flush change nothing */
            if (h.type == 'S' || h.type == 'X') {
                break;
            }
            p += total;
            avail -= total;
            continue;
        }
        if (first) {
            *st = one;
            first = false;
            if (h.type == 'Q' || st->is_begin || !st->is_known || !st->is_read) {
                break;
            }
        } else if (!one.is_known || !one.is_read || one.is_pinning || one.is_begin) {
            st->is_read = st->is_read && one.is_known && one.is_read && !one.is_begin;
            st->is_pinning = st->is_pinning || one.is_pinning;
            break;
        }
        p += total;
        avail -= total;
    }
    return ROUTING_OK;
}

enum routing_result
routing_txn_begin(struct client *c)
{
    struct worker *w = c->w;
    const struct cfg *cfg = w->cfg;
    const struct topo_snapshot *t = topo_refresh(&w->rt->topology, &w->topo);
    int primary = primary_of(w, t);
    if (cfg->read_write_split && !c->is_pinned && !has_read_node(w, t, primary)) {
        /* No replica can take a read: everything runs on the primary, so the class would
         * change nothing here, and it is not worked out. The transaction may have written;
         * routing_txn_end remembers that for when a replica can read again. A read-only
         * session is trusted not to write, as on the classified path. */
        c->txn_wrote = !c->is_read_only_session;
        return enter(c, primary, c->is_read_only_session);
    }
    struct router_session rs = {
        .is_read_only_hint = c->is_read_only_session,
        .is_split = cfg->read_write_split,
        .is_pinned = c->is_pinned,
    };
    struct router_stmt st = { 0 };
    if (rs.is_split && !rs.is_pinned) {
        if (c->ryw_until_us) {
            /* window mode, or lsn mode after a commit position could not be learned */
            rs.is_write_window = mono_now_us() < c->ryw_until_us;
            if (!rs.is_write_window) {
                c->ryw_until_us = 0;
            }
        }
        /* It wrote while no replica could read, so its commit position was never learned:
         * this transaction runs on the primary, and learns one at its end that is at least as
         * far as that write's commit. */
        rs.is_write_window = rs.is_write_window || c->has_unlearned_write;
        enum routing_result r = first_statement(c, &st);
        if (r != ROUTING_OK) {
            return r;
        }
    }
    struct router_decision d = router_route_txn(&rs, &st);
    int node = primary;
    const char *reason = d.reason;
    bool is_read = d.target == ROUTER_REPLICA;
    if (is_read) {
        node = pick_read(c, t, primary, &reason);
        if (node < 0) {
            node = primary;
        }
    }
    /* Only a transaction that may have written needs its commit position: not one that was
     * routed as a read, nor a plain read that stayed on the primary. */
    c->txn_wrote = rs.is_split && !is_read && !(st.is_known && st.is_read && !st.is_begin) &&
                   !(st.is_begin && st.is_read_only);
    c->txn_wrote = c->txn_wrote || (rs.is_split && c->has_unlearned_write);
    log_debug("client %s user=%s db=%s transaction routed to node %d: %s", client_addr(c),
              client_user(c), client_database(c), node, reason);
    return enter(c, node, is_read);
}

/* After a read on a replica: ask it how far it has replayed, when a client waits for that. */
static const char *
probe_replica(struct client *c, uint64_t *owner)
{
    struct routing_worker *rw = &c->w->routing;
    int node = c->route_node;
    if (node < 0 || !c->is_route_read || !routing_on_replica(c) || rw->is_probing[node] ||
        rw->wanted_lsn <= rw->replay_lsn[node]) {
        return NULL;
    }
    int64_t now = mono_now_us();
    if (now - rw->probe_sent_us[node] < ROUTING_PROBE_GAP_US) {
        return NULL;
    }
    rw->is_probing[node] = true;
    rw->probe_sent_us[node] = now;
    *owner = ROUTING_PROBE_OWNER | (uint64_t) node;
    return ROUTING_REPLAY_SQL;
}

const char *
routing_txn_end(struct client *c, uint64_t *owner)
{
    struct worker *w = c->w;
    const struct cfg *cfg = w->cfg;
    bool wrote = c->txn_wrote;
    c->txn_wrote = false;
    if (!cfg->read_write_split || c->is_pinned || cfg->read_your_writes == CFG_RYW_OFF) {
        c->has_unlearned_write = false; /* nothing will wait for it (or a reload said so) */
        return NULL;
    }
    if (!wrote) {
        return cfg->read_your_writes == CFG_RYW_LSN ? probe_replica(c, owner) : NULL;
    }
    if (cfg->read_your_writes == CFG_RYW_WINDOW) {
        c->has_unlearned_write = false; /* the window covers it (lsn before a reload) */
        c->ryw_until_us = mono_now_us() + cfg->read_your_writes_window_ms * 1000;
        return NULL;
    }
    /* With no replica to read from, the position would never be used now. A replica that can
     * read later (a reload, DNS, a standby that recovers or catches up) must still not serve
     * this client's reads before it has this write: the flag sends its next transaction to the
     * primary, whose commit position then covers this one. */
    const struct topo_snapshot *t = topo_refresh(&w->rt->topology, &w->topo);
    if (!has_read_node(w, t, primary_of(w, t))) {
        c->has_unlearned_write = true;
        return NULL;
    }
    c->has_unlearned_write = false;
    c->n_ryw_pending++;
    *owner = client_id(c);
    return ROUTING_LSN_SQL;
}

bool
routing_parse_lsn(const char *text, size_t len, uint64_t *out)
{
    uint64_t hi = 0, lo = 0;
    size_t i = 0;
    int nd = 0;
    for (; i < len && text[i] != '/'; i++, nd++) {
        char ch = text[i];
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                         : -1;
        if (d < 0 || nd >= 8) {
            return false;
        }
        hi = hi << 4 | (uint64_t) d;
    }
    if (nd == 0 || i >= len) {
        return false;
    }
    i++;
    nd = 0;
    for (; i < len; i++, nd++) {
        char ch = text[i];
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                         : -1;
        if (d < 0 || nd >= 8) {
            return false;
        }
        lo = lo << 4 | (uint64_t) d;
    }
    if (nd == 0) {
        return false;
    }
    *out = hi << 32 | lo;
    return true;
}

static void
note_lsn(struct client *c, const char *text, size_t len)
{
    uint64_t lsn;
    if (text && routing_parse_lsn(text, len, &lsn)) {
        stats_add(&c->w->routing.n_lsn_lookups, 1);
        if (lsn > c->ryw_lsn) {
            c->ryw_lsn = lsn;
        }
        return;
    }
    /* The node stopped being a primary under us (failover), or answered nonsense: nothing
     * says which replica has the write, so the client reads on the primary for a window. */
    c->ryw_until_us = mono_now_us() + c->w->cfg->read_your_writes_window_ms * 1000;
}

void
routing_answer(struct worker *w, struct client *c, uint64_t owner, const char *value, size_t len)
{
    struct routing_worker *rw = &w->routing;
    uint64_t lsn;
    if (owner & ROUTING_PROBE_OWNER) {
        uint64_t node = owner & ~ROUTING_PROBE_OWNER;
        if (node >= TOPO_MAX_NODES) {
            return;
        }
        rw->is_probing[node] = false;
        if (value && routing_parse_lsn(value, len, &lsn)) {
            stats_add(&rw->n_probes, 1);
            if (lsn > rw->replay_lsn[node]) {
                rw->replay_lsn[node] = lsn;
            }
        }
        return;
    }
    if (c && c->n_ryw_pending > 0) {
        /* Several may be in flight (the next write transaction ran on another connection);
         * note_lsn keeps the highest position. */
        c->n_ryw_pending--;
        note_lsn(c, value, len);
    }
}
