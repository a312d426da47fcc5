/*
 * stats.c - see stats.h. Allocation of per-pool blocks, histogram bucketing, SQLSTATE classes
 * and the readers' sums. Nothing here locks.
 */
#include "proxy/stats.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

const int64_t stats_hist_bounds_us[STATS_HIST_FINITE] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

/* PostgreSQL's SQLSTATE classes (Appendix A, "PostgreSQL Error Codes"), in its order. */
static const char stats_classes[STATS_SQLSTATE_CLASSES - 1][3] = {
    "00", "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21", "22",
    "23", "24", "25", "26", "27", "28", "2B", "2D", "2F", "34", "38", "39", "3B", "3D", "3F",
    "40", "42", "44", "53", "54", "55", "57", "58", "72", "F0", "HV", "P0", "XX",
};

struct stats_worker *
stats_worker_new(void)
{
    size_t sz =
        (sizeof(struct stats_worker) + STATS_CACHE_LINE - 1) & ~(size_t) (STATS_CACHE_LINE - 1);
    struct stats_worker *sw = aligned_alloc(STATS_CACHE_LINE, sz);
    if (sw) {
        memset(sw, 0, sz);
    }
    return sw;
}

void
stats_worker_free(struct stats_worker *sw)
{
    if (!sw) {
        return;
    }
    for (size_t i = 0; i < ARRAY_LEN(sw->pools); i++) {
        free(atomic_load_explicit(&sw->pools[i], memory_order_relaxed));
    }
    free(sw);
}

struct stats_pool *
stats_pool_get(struct stats_worker *sw, uint32_t pool_id)
{
    if (pool_id == 0 || pool_id > STATS_MAX_POOLS) {
        if (!sw->warned_full) {
            sw->warned_full = true;
            log_warning("more than %d pools: the newer ones are left out of statistics",
                        STATS_MAX_POOLS);
        }
        return NULL;
    }
    struct stats_pool *sp = atomic_load_explicit(&sw->pools[pool_id], memory_order_relaxed);
    if (LIKELY(sp != NULL)) {
        return sp;
    }
    size_t sz = (sizeof(*sp) + STATS_CACHE_LINE - 1) & ~(size_t) (STATS_CACHE_LINE - 1);
    sp = aligned_alloc(STATS_CACHE_LINE, sz);
    if (!sp) {
        return NULL;
    }
    memset(sp, 0, sz);
    /* Release: a reader that sees the pointer sees the zeroed block. */
    atomic_store_explicit(&sw->pools[pool_id], sp, memory_order_release);
    return sp;
}

int
stats_sqlstate_class(const char *code)
{
    if (!code || !code[0] || !code[1]) {
        return STATS_SQLSTATE_OTHER;
    }
    for (int i = 0; i < STATS_SQLSTATE_OTHER; i++) {
        if (stats_classes[i][0] == code[0] && stats_classes[i][1] == code[1]) {
            return i;
        }
    }
    return STATS_SQLSTATE_OTHER;
}

const char *
stats_sqlstate_class_name(int i)
{
    return i >= 0 && i < STATS_SQLSTATE_OTHER ? stats_classes[i] : "other";
}

static uint64_t
ld(stats_counter *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static int64_t
ldg(stats_gauge *g)
{
    return atomic_load_explicit(g, memory_order_relaxed);
}

static void
hist_sum(struct stats_hist *h, struct stats_hist_sum *out)
{
    for (int b = 0; b < STATS_HIST_BUCKETS; b++) {
        uint64_t v = ld(&h->bucket[b]);
        out->bucket[b] += v;
        out->count += v;
    }
    out->sum_us += ld(&h->sum_us);
}

void
stats_pool_sum(struct stats_worker *const *workers, int n, uint32_t pool_id,
               struct stats_pool_sum *out)
{
    memset(out, 0, sizeof(*out));
    if (pool_id == 0 || pool_id > STATS_MAX_POOLS) {
        return;
    }
    for (int i = 0; i < n; i++) {
        if (!workers[i]) {
            continue;
        }
        struct stats_pool *sp =
            atomic_load_explicit(&workers[i]->pools[pool_id], memory_order_acquire);
        if (!sp) {
            continue;
        }
        out->xact_count += ld(&sp->xact_count);
        out->query_count += ld(&sp->query_count);
        out->bytes_in += ld(&sp->bytes_in);
        out->bytes_out += ld(&sp->bytes_out);
        out->xact_time_us += ld(&sp->xact_time_us);
        out->query_time_us += ld(&sp->query_time_us);
        out->wait_count += ld(&sp->wait_count);
        out->wait_time_us += ld(&sp->wait_time_us);
        for (int s = 0; s < STATS_ERR_SOURCES; s++) {
            for (int k = 0; k < STATS_SQLSTATE_CLASSES; k++) {
                out->errors[s][k] += ld(&sp->errors[s][k]);
            }
        }
        out->cl_idle += ldg(&sp->cl_idle);
        out->cl_waiting += ldg(&sp->cl_waiting);
        out->cl_active += ldg(&sp->cl_active);
        out->cl_setting += ldg(&sp->cl_setting);
        hist_sum(&sp->query_latency, &out->query_latency);
        hist_sum(&sp->wait, &out->wait);
    }
}

void
stats_global_sum(struct stats_worker *const *workers, int n, struct stats_global_sum *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < n; i++) {
        struct stats_worker *sw = workers[i];
        if (!sw) {
            continue;
        }
        out->clients_accepted += ld(&sw->g.clients_accepted);
        out->logins_ok += ld(&sw->g.logins_ok);
        out->logins_failed += ld(&sw->g.logins_failed);
        out->auth_derivations += ld(&sw->g.auth_derivations);
        out->slow_queries += ld(&sw->g.slow_queries);
        out->sessions_moved += ld(&sw->g.sessions_moved);
        for (int k = 0; k < STATS_SQLSTATE_CLASSES; k++) {
            out->errors_nopool[k] += ld(&sw->g.errors_nopool[k]);
        }
        for (int nd = 0; nd < STATS_MAX_NODES; nd++) {
            for (int r = 0; r < STATS_ROUTES; r++) {
                out->routed[nd][r] += ld(&sw->nodes[nd].routed[r]);
            }
        }
    }
}
