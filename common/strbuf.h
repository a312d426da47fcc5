/*
 * strbuf.h - a growable NUL-terminated string for the few SQL texts pgmux writes itself
 * (parameter replay, reading settings back). Sticky failure: append freely, check once.
 * Owned by its creator; no thread affinity.
 */
#ifndef PGMUX_COMMON_STRBUF_H
#define PGMUX_COMMON_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "common/macros.h"

struct strbuf {
    char *s;     /* NUL-terminated once anything was appended; NULL before */
    size_t len;  /* bytes before the NUL */
    size_t cap;  /* bytes allocated */
    bool failed; /* sticky: an allocation failed */
};

/** Append printf-style text. */
void strbuf_appendf(struct strbuf *b, const char *fmt, ...) PRINTF_LIKE(2, 3);

/** Hand the string to the caller (NULL when empty or failed) and reset b. */
char *strbuf_take(struct strbuf *b) MUST_CHECK;

/** Free the string; b can be reused. */
void strbuf_fini(struct strbuf *b);

#endif
