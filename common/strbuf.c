/*
 * strbuf.c - see strbuf.h.
 */
#include "common/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void
strbuf_appendf(struct strbuf *b, const char *fmt, ...)
{
    if (b->failed) {
        return;
    }
    for (;;) {
        size_t room = b->cap - b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if (b->s && (size_t) n < room) {
            b->len += (size_t) n;
            return;
        }
        size_t ncap = b->cap ? b->cap : 128;
        while (ncap < b->len + (size_t) n + 1) {
            ncap *= 2;
        }
        char *ns = realloc(b->s, ncap);
        if (!ns) {
            b->failed = true;
            return;
        }
        b->s = ns;
        b->cap = ncap;
    }
}

char *
strbuf_take(struct strbuf *b)
{
    char *s = (b->failed || b->len == 0) ? NULL : b->s;
    if (!s) {
        free(b->s);
    }
    b->s = NULL;
    b->len = b->cap = 0;
    b->failed = false;
    return s;
}

void
strbuf_fini(struct strbuf *b)
{
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}
