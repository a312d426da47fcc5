/*
 * topology.c - publication and reference counting of topology snapshots (topology.h).
 *
 * The mutex is held only to swap cur and to take a reference, a few instructions; workers take
 * it only when the generation they hold is out of date, so the common path stays lock-free
 * (CONVENTIONS 6.4).
 */
#include "proxy/topology.h"

#include <stdlib.h>
#include <string.h>

void
topo_init(struct topology *t)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    atomic_init(&t->generation, 0);
}

void
topo_fini(struct topology *t)
{
    topo_put(t->cur);
    t->cur = NULL;
    pthread_mutex_destroy(&t->mu);
}

struct topo_snapshot *
topo_snapshot_new(void)
{
    struct topo_snapshot *s = calloc(1, sizeof(*s));
    if (!s) {
        return NULL;
    }
    atomic_init(&s->refs, 1);
    s->primary = -1;
    return s;
}

struct topo_snapshot *
topo_snapshot_copy(const struct topo_snapshot *from)
{
    struct topo_snapshot *s = topo_snapshot_new();
    if (!s) {
        return NULL;
    }
    s->generation = from->generation;
    s->primary = from->primary;
    s->n_nodes = from->n_nodes;
    memcpy(s->nodes, from->nodes, sizeof(s->nodes));
    s->functions_generation = from->functions_generation;
    if (from->n_volatile_functions > 0) {
        s->volatile_functions = calloc((size_t) from->n_volatile_functions, sizeof(char *));
        if (!s->volatile_functions) {
            free(s);
            return NULL;
        }
        for (int i = 0; i < from->n_volatile_functions; i++) {
            s->volatile_functions[i] = strdup(from->volatile_functions[i]);
            if (!s->volatile_functions[i]) {
                s->n_volatile_functions = i;
                topo_put(s);
                return NULL;
            }
        }
        s->n_volatile_functions = from->n_volatile_functions;
    }
    return s;
}

struct topo_snapshot *
topo_get(struct topology *t)
{
    pthread_mutex_lock(&t->mu);
    struct topo_snapshot *s = t->cur;
    if (s) {
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&t->mu);
    return s;
}

void
topo_put(struct topo_snapshot *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    for (int i = 0; i < s->n_volatile_functions; i++) {
        free(s->volatile_functions[i]);
    }
    free(s->volatile_functions);
    free(s);
}

const struct topo_snapshot *
topo_refresh(struct topology *t, struct topo_snapshot **held)
{
    /* Relaxed is enough: a stale read only delays the switch to the next call, and the
     * snapshot's contents are ordered by the mutex topo_get takes. */
    uint64_t g = atomic_load_explicit(&t->generation, memory_order_relaxed);
    if (*held && (*held)->generation == g) {
        return *held;
    }
    struct topo_snapshot *s = topo_get(t);
    if (s) {
        topo_put(*held);
        *held = s;
    }
    return *held;
}

void
topo_publish(struct topology *t, struct topo_snapshot *s)
{
    pthread_mutex_lock(&t->mu);
    struct topo_snapshot *old = t->cur;
    s->generation = old ? old->generation + 1 : 1;
    t->cur = s;
    atomic_store_explicit(&t->generation, s->generation, memory_order_relaxed);
    pthread_mutex_unlock(&t->mu);
    topo_put(old);
}

bool
topo_has_volatile_function(const struct topo_snapshot *s, const char *name)
{
    int lo = 0, hi = s->n_volatile_functions - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(s->volatile_functions[mid], name);
        if (c == 0) {
            return true;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return false;
}
