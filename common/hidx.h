/*
 * hidx.h - an open-addressing hash index over the positions of an array its owner keeps
 * (linear probing, at most half full, deletion by backward shift so there are no tombstones).
 * The index stores positions only: the owner compares keys while probing, and tells the index
 * each element's 32-bit hash through a callback when entries have to move.
 *
 * Prepared statements use it: a session's by name, a server connection's by text hash. Both
 * are looked up for every Bind and Describe, and applications keep hundreds of statements per
 * connection (Rails caches 1,000 by default), so a linear scan would cost O(n) per message.
 *
 * Owned by whoever owns the array; no thread affinity.
 */
#ifndef PGMUX_COMMON_HIDX_H
#define PGMUX_COMMON_HIDX_H

#include <stdint.h>

#include "common/macros.h"
#include "common/status.h"

struct hidx {
    uint32_t *slot; /* position + 1 per slot, 0 = empty; NULL until the first hidx_reserve */
    uint32_t mask;  /* number of slots - 1 */
};

/* The hash of the array's element at pos. */
typedef uint32_t (*hidx_hash_fn)(const void *ctx, uint32_t pos);

/** Make room for cap entries, re-adding the array's first n elements. On failure x is as it
 *  was. */
enum status hidx_reserve(struct hidx *x, uint32_t cap, uint32_t n, hidx_hash_fn hash,
                         const void *ctx) MUST_CHECK;

/** Free the slots; x is empty and can be reserved again. */
void hidx_fini(struct hidx *x);

/** Add the element at pos, whose hash is h; room must have been reserved. */
void hidx_insert(struct hidx *x, uint32_t h, uint32_t pos);

/**
 * Remove the element at pos, and renumber the array's last element (position last) to pos,
 * as the owner then moves it there (pos == last: nothing moves). Call before moving anything:
 * hash is asked about positions as they are now.
 */
void hidx_remove_swap(struct hidx *x, uint32_t pos, uint32_t last, hidx_hash_fn hash,
                      const void *ctx);

/*
 * Probing, in the owner's lookup:
 *   for (uint32_t i = hidx_first(x, h); x->slot && x->slot[i]; i = hidx_next(x, i)) {
 *       uint32_t pos = x->slot[i] - 1;  ... compare the key at pos ...
 *   }
 */
static inline uint32_t
hidx_first(const struct hidx *x, uint32_t h)
{
    return h & x->mask;
}

static inline uint32_t
hidx_next(const struct hidx *x, uint32_t i)
{
    return (i + 1) & x->mask;
}

/** FNV-1a over a NUL-terminated string: names are short, and this needs no table. */
static inline uint32_t
hidx_hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (uint8_t) *s) * 16777619u;
    }
    /* Linear probing takes the low bits; mix the high ones in. */
    return h ^ (h >> 16);
}

#endif
