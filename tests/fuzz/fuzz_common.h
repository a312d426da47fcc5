/*
 * fuzz_common.h - helpers shared by the libFuzzer targets in tests/fuzz/.
 *
 * Every target copies the bytes it hands to pgmux into a heap block of exactly the size it
 * claims, so AddressSanitizer sees a read one byte past the end (libFuzzer's own buffer is
 * followed by the rest of the input, which would hide it). Invariants the code promises are
 * checked with FUZZ_CHECK, which aborts: a broken promise is a finding like a crash.
 *
 * Single-threaded; test code only, never linked into pgmux.
 */
#ifndef PGMUX_TESTS_FUZZ_COMMON_H
#define PGMUX_TESTS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Abort with the failed condition: libFuzzer reports it as a crash and keeps the input. */
#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An exact-size heap copy of p[0..n) (malloc(0) is avoided: one byte, never read). */
static inline uint8_t *
fuzz_dup(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (!d) {
        abort();
    }
    if (n) {
        memcpy(d, p, n);
    }
    return d;
}

/* A NUL-terminated heap copy of p[0..n). */
static inline char *
fuzz_strdup(const uint8_t *p, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) {
        abort();
    }
    if (n) {
        memcpy(d, p, n);
    }
    d[n] = '\0';
    return d;
}

/* Whether s is a C string that starts and ends inside [base, base + len). */
static inline int
fuzz_cstr_within(const char *s, const void *base, size_t len)
{
    const char *b = base;
    if (s < b || s >= b + len) {
        return 0;
    }
    return memchr(s, '\0', (size_t) (b + len - s)) != NULL;
}

/* Whether [p, p + n) lies inside [base, base + len). */
static inline int
fuzz_range_within(const void *p, size_t n, const void *base, size_t len)
{
    const char *c = p, *b = base;
    return c >= b && c <= b + len && n <= (size_t) (b + len - c);
}

/* A proto_err text must always be a C string in its buffer. */
#define FUZZ_CHECK_ERR(e) FUZZ_CHECK(memchr((e)->text, '\0', sizeof((e)->text)) != NULL)

#endif
