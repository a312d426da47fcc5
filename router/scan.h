/*
 * scan.h - a small SQL lexer that reports what a query string does to session state, for
 * transaction and statement pooling: which statements pin a client to its server connection
 * (LISTEN, SQL-level PREPARE, WITH HOLD cursors, session advisory locks, temporary tables,
 * SET of parameters pgmux does not track), and which ones pgmux must honour itself
 * (DEALLOCATE, DISCARD ALL, BEGIN). It understands comments, quoted identifiers, standard and
 * E'' strings and dollar quoting, so keywords inside them do not count; it does not parse SQL.
 *
 * Pure; any thread.
 */
#ifndef PGMUX_ROUTER_SCAN_H
#define PGMUX_ROUTER_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ROUTER_F_BEGIN          (1u << 0)  /* BEGIN / START TRANSACTION */
#define ROUTER_F_LISTEN         (1u << 1)  /* LISTEN */
#define ROUTER_F_PREPARE        (1u << 2)  /* SQL-level PREPARE name AS ... */
#define ROUTER_F_DEALLOCATE     (1u << 3)  /* DEALLOCATE [PREPARE] name (name reported) */
#define ROUTER_F_DEALLOCATE_ALL (1u << 4)  /* DEALLOCATE [PREPARE] ALL */
#define ROUTER_F_DISCARD_ALL    (1u << 5)  /* DISCARD ALL */
#define ROUTER_F_WITH_HOLD      (1u << 6)  /* DECLARE ... WITH HOLD */
#define ROUTER_F_TEMP           (1u << 7)  /* temporary table, view or sequence */
#define ROUTER_F_ADVISORY       (1u << 8)  /* session-level advisory lock function */
#define ROUTER_F_SET_SESSION    (1u << 9)  /* SET/RESET/set_config of an untracked parameter */
#define ROUTER_F_SET_TRACKED    (1u << 10) /* SET/RESET of a tracked parameter */
#define ROUTER_F_EXECUTE        (1u << 11) /* SQL-level EXECUTE */
#define ROUTER_F_UNLISTEN       (1u << 12) /* UNLISTEN */

/* Everything that leaves state on the server connection beyond the transaction. */
#define ROUTER_F_PINS                                                                              \
    (ROUTER_F_LISTEN | ROUTER_F_PREPARE | ROUTER_F_WITH_HOLD | ROUTER_F_TEMP | ROUTER_F_ADVISORY | \
     ROUTER_F_SET_SESSION)

#define ROUTER_NAME_MAX 64

struct router_scan {
    uint32_t flags;                        /* ROUTER_F_* over all statements */
    int n_statements;                      /* non-empty statements seen */
    char deallocate_name[ROUTER_NAME_MAX]; /* the first DEALLOCATE target, case-folded unless
                                              quoted; truncated names make the scan ambiguous */
    bool is_truncated_name;
};

/* Whether a parameter name (case-insensitive, len bytes, not NUL-terminated) is tracked. */
typedef bool (*router_tracked_fn)(const char *name, size_t len, void *arg);

/**
 * Scan sql[0..len) (need not be NUL-terminated). is_tracked decides whether a SET target is a
 * parameter pgmux follows (may be NULL: nothing is tracked). Never fails: text it cannot make
 * sense of (an unterminated quote) just ends the scan.
 */
void router_scan_sql(const char *sql, size_t len, router_tracked_fn is_tracked, void *arg,
                     struct router_scan *out);

#endif
