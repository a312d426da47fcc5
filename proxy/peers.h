/*
 * peers.h - client connections per client address, across workers, for
 * max_client_conn_per_addr.
 *
 * Touched twice per client connection (accept and close), never per message. The table is
 * striped: an address hashes to one of PEERS_STRIPES short mutex-protected chains, so workers
 * accepting from different addresses rarely meet on a lock. Any thread.
 */
#ifndef PGMUX_PROXY_PEERS_H
#define PGMUX_PROXY_PEERS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/macros.h"

#define PEERS_STRIPES 64
#define PEERS_BUCKETS 4096 /* per table; a multiple of PEERS_STRIPES */

struct peers_entry;

struct peers {
    pthread_mutex_t mu[PEERS_STRIPES]; /* mu[b % PEERS_STRIPES] guards bucket b */
    struct peers_entry *buckets[PEERS_BUCKETS];
};

/** Initialize an empty table. Returns 0 or -1. */
int peers_init(struct peers *t) MUST_CHECK;

/** Free every entry. No other thread may use the table any more. */
void peers_fini(struct peers *t);

/**
 * Count one more connection from (family, addr: 4 or 16 bytes) unless cap are already
 * counted. Returns true when counted (give it back with peers_release), false when the address
 * is at its cap or memory ran out (nothing counted).
 */
bool peers_acquire(struct peers *t, int family, const uint8_t *addr, int cap) MUST_CHECK;

/** Give back one connection counted by peers_acquire. */
void peers_release(struct peers *t, int family, const uint8_t *addr);

#endif
