/*
 * buf.h - fixed-size I/O buffers lent to connections only while bytes are in flight
 * (CONVENTIONS 3.2.1), from a per-thread free list so the relay never calls malloc per message.
 *
 * A buffer has three offsets, sent <= parsed <= recvd <= cap (3.2.2): bytes before `sent` have
 * left for the destination, bytes in [sent, parsed) are approved for sending, bytes in
 * [parsed, recvd) arrived but their fate is not decided yet.
 *
 * A buf_pool and the buffers it lends belong to one thread.
 */
#ifndef PGMUX_COMMON_BUF_H
#define PGMUX_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "common/macros.h"

struct buf {
    struct buf *next_free; /* free-list link while not lent */
    uint32_t sent;         /* bytes already written out */
    uint32_t parsed;       /* bytes approved for writing */
    uint32_t recvd;        /* bytes filled */
    uint32_t cap;          /* bytes in data[] */
    char data[];
};

struct buf_pool {
    struct buf *free;  /* idle buffers */
    size_t n_free;     /* buffers on the free list */
    size_t n_lent;     /* buffers out with connections */
    size_t max_free;   /* free buffers kept; beyond that they go back to malloc */
    size_t low_free;   /* fewest buffers on the free list since the last buf_pool_trim: the
                          bottom low_free of the stack were not lent in that time */
    uint32_t buf_size; /* bytes per buffer */
};

/** Set up a pool of buffers of buf_size bytes, keeping at most max_free idle ones. */
void buf_pool_init(struct buf_pool *p, uint32_t buf_size, size_t max_free);

/** Free every idle buffer. Lent buffers must have been returned. */
void buf_pool_fini(struct buf_pool *p);

/**
 * Of the buffers that stayed on the free list since the last call, beyond the first keep, give
 * half (rounded up) back to malloc, the least recently used ones: the buffers of a burst drain
 * away over a few calls, while a steady load keeps what it uses and a few spare. Returns how
 * many went.
 */
size_t buf_pool_trim(struct buf_pool *p, size_t keep);

/** Lend an empty buffer; NULL when memory is exhausted. The caller owns it until buf_put. */
struct buf *buf_get(struct buf_pool *p) MUST_CHECK;

/** Take back a buffer; accepts NULL. Grown buffers go back to malloc, not the free list. */
void buf_put(struct buf_pool *p, struct buf *b);

/**
 * Make room for need more bytes after recvd in *bp (lending one when *bp is NULL): compact,
 * and when that is not enough move the contents to a larger buffer of its own (for the rare
 * message that must be seen whole and is larger than a pool buffer). 0, or -1 when out of
 * memory (*bp unchanged).
 */
int buf_reserve(struct buf_pool *p, struct buf **bp, uint32_t need) MUST_CHECK;

static inline void
buf_check(const struct buf *b)
{
    ASSERT(b->sent <= b->parsed && b->parsed <= b->recvd && b->recvd <= b->cap);
}

/* Bytes approved but not yet sent. */
static inline uint32_t
buf_pending(const struct buf *b)
{
    return b->parsed - b->sent;
}

/* Bytes received but not yet decided upon. */
static inline uint32_t
buf_unparsed(const struct buf *b)
{
    return b->recvd - b->parsed;
}

static inline uint32_t
buf_space(const struct buf *b)
{
    return b->cap - b->recvd;
}

static inline int
buf_is_empty(const struct buf *b)
{
    return b->sent == b->recvd;
}

/** Move unsent bytes to the start of the buffer to make room at the end. */
void buf_compact(struct buf *b);

/**
 * Append len bytes (for proxy-generated messages). Returns 0, or -1 when they do not fit, in
 * which case nothing is written.
 */
int buf_append(struct buf *b, const void *data, size_t len) MUST_CHECK;

#endif
