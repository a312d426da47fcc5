/*
 * peers.c - per-address connection counts (see peers.h). An entry lives while its address has
 * at least one counted connection, so the table holds no more entries than open clients.
 */
#include "proxy/peers.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct peers_entry {
    struct peers_entry *next;
    uint8_t family;
    uint8_t addr[16];
    int count;
};

static size_t
addr_len(int family)
{
    return family == AF_INET ? 4 : 16;
}

/* FNV-1a over family and address: cheap and spreads sequential addresses well enough. */
static uint32_t
peers_hash(int family, const uint8_t *addr)
{
    uint32_t h = 2166136261u ^ (uint32_t) family;
    size_t n = addr_len(family);
    for (size_t i = 0; i < n; i++) {
        h = (h ^ addr[i]) * 16777619u;
    }
    return h % PEERS_BUCKETS;
}

int
peers_init(struct peers *t)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < PEERS_STRIPES; i++) {
        if (pthread_mutex_init(&t->mu[i], NULL) != 0) {
            while (i-- > 0) {
                pthread_mutex_destroy(&t->mu[i]);
            }
            return -1;
        }
    }
    return 0;
}

void
peers_fini(struct peers *t)
{
    for (int b = 0; b < PEERS_BUCKETS; b++) {
        struct peers_entry *e = t->buckets[b];
        while (e) {
            struct peers_entry *next = e->next;
            free(e);
            e = next;
        }
        t->buckets[b] = NULL;
    }
    for (int i = 0; i < PEERS_STRIPES; i++) {
        pthread_mutex_destroy(&t->mu[i]);
    }
}

static struct peers_entry **
peers_find(struct peers *t, uint32_t b, int family, const uint8_t *addr)
{
    struct peers_entry **pp = &t->buckets[b];
    while (*pp && ((*pp)->family != family || memcmp((*pp)->addr, addr, addr_len(family)) != 0)) {
        pp = &(*pp)->next;
    }
    return pp;
}

bool
peers_acquire(struct peers *t, int family, const uint8_t *addr, int cap)
{
    uint32_t b = peers_hash(family, addr);
    pthread_mutex_t *mu = &t->mu[b % PEERS_STRIPES];
    bool ok = false;
    pthread_mutex_lock(mu);
    struct peers_entry **pp = peers_find(t, b, family, addr);
    if (*pp) {
        if ((*pp)->count < cap) {
            (*pp)->count++;
            ok = true;
        }
    } else if (cap > 0) {
        struct peers_entry *e = calloc(1, sizeof(*e));
        if (e) {
            e->family = (uint8_t) family;
            memcpy(e->addr, addr, addr_len(family));
            e->count = 1;
            e->next = t->buckets[b];
            t->buckets[b] = e;
            ok = true;
        }
    }
    pthread_mutex_unlock(mu);
    return ok;
}

void
peers_release(struct peers *t, int family, const uint8_t *addr)
{
    uint32_t b = peers_hash(family, addr);
    pthread_mutex_t *mu = &t->mu[b % PEERS_STRIPES];
    pthread_mutex_lock(mu);
    struct peers_entry **pp = peers_find(t, b, family, addr);
    struct peers_entry *e = *pp;
    if (e && --e->count == 0) {
        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(mu);
}
