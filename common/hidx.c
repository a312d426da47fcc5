/*
 * hidx.c - see hidx.h.
 */
#include "common/hidx.h"

#include <stdbool.h>
#include <stdlib.h>

enum status
hidx_reserve(struct hidx *x, uint32_t cap, uint32_t n, hidx_hash_fn hash, const void *ctx)
{
    if (cap > UINT32_MAX / 4) {
        return ST_ENOMEM;
    }
    uint32_t slots = 8;
    while (slots < cap * 2) {
        slots *= 2;
    }
    if (x->slot && x->mask + 1 >= slots) {
        return ST_OK;
    }
    uint32_t *slot = calloc(slots, sizeof(*slot));
    if (!slot) {
        return ST_ENOMEM;
    }
    free(x->slot);
    x->slot = slot;
    x->mask = slots - 1;
    for (uint32_t pos = 0; pos < n; pos++) {
        hidx_insert(x, hash(ctx, pos), pos);
    }
    return ST_OK;
}

void
hidx_fini(struct hidx *x)
{
    free(x->slot);
    x->slot = NULL;
    x->mask = 0;
}

void
hidx_insert(struct hidx *x, uint32_t h, uint32_t pos)
{
    uint32_t i = hidx_first(x, h);
    while (x->slot[i]) {
        i = hidx_next(x, i);
    }
    x->slot[i] = pos + 1;
}

/* The slot holding pos; it must be there. */
static uint32_t
slot_of(const struct hidx *x, uint32_t h, uint32_t pos)
{
    uint32_t i = hidx_first(x, h);
    while (x->slot[i] != pos + 1) {
        i = hidx_next(x, i);
    }
    return i;
}

void
hidx_remove_swap(struct hidx *x, uint32_t pos, uint32_t last, hidx_hash_fn hash, const void *ctx)
{
    uint32_t hole = slot_of(x, hash(ctx, pos), pos);
    /* Backward shift: an entry after the hole, up to the next empty slot, moves into it unless
     * its home slot lies cyclically in (hole, j]: probing from there would not pass the hole. */
    for (uint32_t j = hidx_next(x, hole); x->slot[j]; j = hidx_next(x, j)) {
        uint32_t home = hidx_first(x, hash(ctx, x->slot[j] - 1));
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            x->slot[hole] = x->slot[j];
            hole = j;
        }
    }
    x->slot[hole] = 0;
    if (last != pos) {
        x->slot[slot_of(x, hash(ctx, last), last)] = pos + 1;
    }
}
