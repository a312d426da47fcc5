/*
 * log.h - logging front end. Lines are formatted on the calling thread and handed to one logger
 * thread through a bounded queue, so a worker never blocks on stderr (CONVENTIONS 5.4); when the
 * queue is full the line is dropped and counted. Debug and trace are tested before formatting.
 * Before log_start (and after log_stop) lines are written directly, which is what the
 * single-threaded start-up and tests want. Any thread.
 */
#ifndef PGMUX_COMMON_LOG_H
#define PGMUX_COMMON_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macros.h"

enum log_level {
    LOG_FATAL = 0,
    LOG_ERROR,
    LOG_WARNING,
    LOG_INFO,
    LOG_DEBUG,
    LOG_TRACE,
};

/* Relaxed loads: a reload may change the level while workers log, and a line logged at the old
 * level just after the change costs nothing; a plain int would be a data race. */
extern atomic_int log_level_current;

/** Set the level; any thread. */
void log_set_level(enum log_level level);

/** Parse "fatal".."trace"; returns false for anything else. */
bool log_level_parse(const char *s, enum log_level *out) MUST_CHECK;

/** Start the logger thread. Returns 0 or -1. */
int log_start(void) MUST_CHECK;

/** Flush queued lines and stop the logger thread. */
void log_stop(void);

/**
 * Send lines to the local syslog daemon instead of stderr: one RFC 3164 datagram per line
 * ("<PRI>Mmm dd hh:mm:ss ident[pid]: message") to the unix datagram socket socket_path
 * (normally /dev/log), with facility (a syslog facility code, 0..23). A line the daemon does
 * not take (no socket, send timeout of 1 s) goes to stderr. Call before log_start. Returns 0,
 * or -1 when ident (32 bytes) or the path (107 bytes) is too long.
 */
int log_use_syslog(const char *ident, int facility, const char *socket_path) MUST_CHECK;

/** Lines dropped because the queue was full. */
uint64_t log_dropped(void);

void log_write(enum log_level level, const char *fmt, ...) PRINTF_LIKE(2, 3);

/**
 * s (NULL reads as "-") as the value of a key=value pair in a log line: bare when it holds only
 * letters, digits and ._-:/@+, else in double quotes with '"', '\\' and bytes outside printable
 * ASCII escaped (\\xNN), so a client-chosen user name cannot forge a line or a key. Cut to fit
 * out (outlen >= 4 bytes). Returns out. Any thread.
 */
const char *log_value(const char *s, char *out, size_t outlen);

#define LOG_AT(lvl, ...)                                                                     \
    do {                                                                                     \
        if ((int) (lvl) <= atomic_load_explicit(&log_level_current, memory_order_relaxed)) { \
            log_write((lvl), __VA_ARGS__);                                                   \
        }                                                                                    \
    } while (0)

#define log_fatal(...)   LOG_AT(LOG_FATAL, __VA_ARGS__)
#define log_error(...)   LOG_AT(LOG_ERROR, __VA_ARGS__)
#define log_warning(...) LOG_AT(LOG_WARNING, __VA_ARGS__)
#define log_info(...)    LOG_AT(LOG_INFO, __VA_ARGS__)
#define log_debug(...)   LOG_AT(LOG_DEBUG, __VA_ARGS__)
#define log_trace(...)   LOG_AT(LOG_TRACE, __VA_ARGS__)

#endif
