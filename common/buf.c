/*
 * buf.c - per-thread free list of fixed-size I/O buffers. See buf.h. Runs on the thread that
 * owns the pool; no locking.
 */
#include "common/buf.h"

#include <stdlib.h>
#include <string.h>

void
buf_pool_init(struct buf_pool *p, uint32_t buf_size, size_t max_free)
{
    p->free = NULL;
    p->n_free = 0;
    p->n_lent = 0;
    p->max_free = max_free;
    p->low_free = 0;
    p->buf_size = buf_size;
}

void
buf_pool_fini(struct buf_pool *p)
{
    while (p->free) {
        struct buf *b = p->free;
        p->free = b->next_free;
        free(b);
    }
    p->n_free = 0;
    p->low_free = 0;
}

size_t
buf_pool_trim(struct buf_pool *p, size_t keep)
{
    size_t drop = p->low_free > keep ? (p->low_free - keep + 1) / 2 : 0;
    if (drop > 0) {
        /* A stack: pops never reached below low_free, so the bottom buffers were idle all
         * along. Keep the top, cut the tail. */
        struct buf **link = &p->free;
        for (size_t left = p->n_free - drop; left > 0; left--) {
            link = &(*link)->next_free;
        }
        struct buf *b = *link;
        *link = NULL;
        while (b) {
            struct buf *next = b->next_free;
            free(b);
            b = next;
        }
        p->n_free -= drop;
    }
    p->low_free = p->n_free;
    return drop;
}

struct buf *
buf_get(struct buf_pool *p)
{
    struct buf *b = p->free;
    if (b) {
        p->free = b->next_free;
        p->n_free--;
        if (p->n_free < p->low_free) {
            p->low_free = p->n_free;
        }
    } else {
        b = malloc(sizeof(*b) + p->buf_size);
        if (!b) {
            return NULL;
        }
        b->cap = p->buf_size;
    }
    b->next_free = NULL;
    b->sent = b->parsed = b->recvd = 0;
    p->n_lent++;
    return b;
}

void
buf_put(struct buf_pool *p, struct buf *b)
{
    if (!b) {
        return;
    }
    ASSERT(p->n_lent > 0);
    p->n_lent--;
    if (p->n_free >= p->max_free || b->cap != p->buf_size) {
        free(b);
        return;
    }
    b->next_free = p->free;
    p->free = b;
    p->n_free++;
}

void
buf_compact(struct buf *b)
{
    buf_check(b);
    if (b->sent == 0) {
        return;
    }
    uint32_t keep = b->recvd - b->sent;
    if (keep) {
        memmove(b->data, b->data + b->sent, keep);
    }
    b->parsed -= b->sent;
    b->recvd = keep;
    b->sent = 0;
}

int
buf_append(struct buf *b, const void *data, size_t len)
{
    if (len > buf_space(b)) {
        buf_compact(b);
        if (len > buf_space(b)) {
            return -1;
        }
    }
    memcpy(b->data + b->recvd, data, len);
    b->recvd += (uint32_t) len;
    b->parsed = b->recvd;
    return 0;
}

int
buf_reserve(struct buf_pool *p, struct buf **bp, uint32_t need)
{
    if (!*bp) {
        *bp = buf_get(p);
        if (!*bp) {
            return -1;
        }
    }
    struct buf *b = *bp;
    if (buf_space(b) >= need) {
        return 0;
    }
    buf_compact(b);
    if (buf_space(b) >= need) {
        return 0;
    }
    uint64_t cap = (uint64_t) b->recvd + need;
    if (cap > UINT32_MAX - sizeof(*b)) {
        return -1;
    }
    struct buf *nb = malloc(sizeof(*nb) + cap);
    if (!nb) {
        return -1;
    }
    memcpy(nb->data, b->data, b->recvd);
    nb->next_free = NULL;
    nb->sent = b->sent;
    nb->parsed = b->parsed;
    nb->recvd = b->recvd;
    nb->cap = (uint32_t) cap;
    p->n_lent++; /* buf_put below gives back the old one's count */
    buf_put(p, b);
    *bp = nb;
    return 0;
}
