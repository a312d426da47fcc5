/*
 * admin_cmd.h - the admin console's command language: split a simple query into statements and
 * parse one statement (SHOW ..., PAUSE [db], SET key = value, ...) into a struct admin_cmd.
 *
 * Pure: no I/O, no allocation, no globals; any thread. Unit-tested and fuzzed on its own; the
 * session and the commands themselves are admin.c's.
 */
#ifndef PGMUX_PROXY_ADMIN_CMD_H
#define PGMUX_PROXY_ADMIN_CMD_H

#include <stdbool.h>
#include <stddef.h>

#include "common/macros.h"

#define ADMIN_ARG_MAX   64  /* database and key names, with the NUL (NAMEDATALEN) */
#define ADMIN_VALUE_MAX 256 /* SET values, with the NUL */

enum admin_kind {
    AK_EMPTY, /* nothing but whitespace and comments */
    AK_SHOW_POOLS,
    AK_SHOW_STATS,
    AK_SHOW_SERVERS,
    AK_SHOW_CLIENTS,
    AK_SHOW_NODES,
    AK_SHOW_CONFIG,
    AK_SHOW_VERSION,
    AK_PAUSE,
    AK_RESUME,
    AK_RELOAD,
    AK_KILL,
    AK_SHUTDOWN,
    AK_SET,
    AK_BEGIN,  /* accepted so drivers that open transactions on their own work; nothing on */
    AK_COMMIT, /* the console is transactional */
    AK_ROLLBACK,
};

struct admin_cmd {
    enum admin_kind kind;
    bool has_arg;
    char arg[ADMIN_ARG_MAX];     /* database (PAUSE, RESUME, KILL) or key (SET) */
    char value[ADMIN_VALUE_MAX]; /* SET */
};

struct admin_parse_err {
    const char *sqlstate; /* protocol/sqlstate.h constant */
    char message[200];    /* for the ErrorResponse, lowercase, no trailing period */
    const char *hint;     /* static text, or NULL */
};

/**
 * Parse one statement, the text [p, end) (no NUL needed; a trailing ';' and comments are
 * allowed). Unquoted names are folded to lower case, "quoted" ones kept. 0 with *cmd filled
 * (AK_EMPTY for nothing but blanks and comments), or -1 with *e filled (SQLSTATE 42601 for
 * every refusal). Pure.
 */
int admin_cmd_parse(const char *p, const char *end, struct admin_cmd *cmd,
                    struct admin_parse_err *e) MUST_CHECK;

/** The end of the statement starting at p: its ';' outside quotes and comments, or end. Pure. */
const char *admin_cmd_statement_end(const char *p, const char *end);

/** Whether [p, end) holds nothing but blanks, comments and ';'. Pure. */
bool admin_cmd_is_empty(const char *p, const char *end);

/** Whether a stats_users member may run kind (SHOW, and the no-op transaction commands). */
bool admin_cmd_is_read_only(enum admin_kind kind);

#endif
