/*
 * macros.h - compiler helpers shared by every module: assertions, result checking, container_of.
 * Header only; no thread affinity.
 */
#ifndef PGMUX_COMMON_MACROS_H
#define PGMUX_COMMON_MACROS_H

#include <stddef.h>

#define MUST_CHECK                      __attribute__((warn_unused_result))
#define PRINTF_LIKE(f, a)               __attribute__((format(printf, f, a)))
#define LIKELY(x)                       __builtin_expect(!!(x), 1)
#define UNLIKELY(x)                     __builtin_expect(!!(x), 0)
#define ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))
#define CONTAINER_OF(ptr, type, member) ((type *) (void *) ((char *) (ptr) -offsetof(type, member)))

/* Invariant checks, never input checks (CONVENTIONS 4.3.1). Active unless NDEBUG. */
void assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#ifdef NDEBUG
#define ASSERT(e) ((void) 0)
#else
#define ASSERT(e) (LIKELY(e) ? (void) 0 : assert_fail(#e, __FILE__, __LINE__))
#endif

#endif
