/*
 * mono.h - monotonic and wall clocks in microseconds. Header only; any thread.
 */
#ifndef PGMUX_COMMON_MONO_H
#define PGMUX_COMMON_MONO_H

#include <stdint.h>
#include <time.h>

static inline int64_t
mono_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#endif
