/*
 * admin_cmd.c - the admin console's command language (admin_cmd.h): a small lexer (blanks,
 * -- and block comments, identifiers folded as PostgreSQL folds them, "quoted" identifiers,
 * 'strings' for SET values) and one function per statement. Pure; any thread.
 */
#include "proxy/admin_cmd.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "protocol/sqlstate.h"

#define ADMIN_HELP                                                                                \
    "the console understands SHOW POOLS | STATS | SERVERS | CLIENTS | NODES | CONFIG | VERSION, " \
    "PAUSE [db], RESUME [db], RELOAD, KILL db, SHUTDOWN and SET key = value"


struct lexer {
    const char *p;
    const char *end;
};

static void
lex_skip(struct lexer *lx)
{
    for (;;) {
        while (lx->p < lx->end && isspace((unsigned char) *lx->p)) {
            lx->p++;
        }
        if (lx->end - lx->p >= 2 && lx->p[0] == '-' && lx->p[1] == '-') {
            while (lx->p < lx->end && *lx->p != '\n') {
                lx->p++;
            }
            continue;
        }
        if (lx->end - lx->p >= 2 && lx->p[0] == '/' && lx->p[1] == '*') {
            const char *q = lx->p + 2;
            while (q + 1 < lx->end && !(q[0] == '*' && q[1] == '/')) {
                q++;
            }
            lx->p = q + 1 < lx->end ? q + 2 : lx->end;
            continue;
        }
        return;
    }
}

static bool
lex_at_end(struct lexer *lx)
{
    lex_skip(lx);
    while (lx->p < lx->end && *lx->p == ';') {
        lx->p++;
        lex_skip(lx);
    }
    return lx->p >= lx->end;
}

/*
 * The quoted run at lx->p (which is the quote character), with a doubled quote standing for one,
 * copied into out without the quotes. Returns its length, or -1 when it is unterminated or does
 * not fit; lx->p moves past it only on success.
 */
static int
lex_quoted(struct lexer *lx, char quote, char *out, size_t cap)
{
    size_t n = 0;
    const char *q = lx->p + 1;
    for (;;) {
        /* A NUL cannot be part of SQL text (a Query message ends at the first one); inside a
         * name it would cut it short, "\0x" naming "" */
        if (q >= lx->end || *q == '\0') {
            return -1;
        }
        if (*q == quote) {
            if (q + 1 < lx->end && q[1] == quote) {
                q++;
            } else {
                break;
            }
        }
        if (n + 1 >= cap) {
            return -1;
        }
        out[n++] = *q++;
    }
    lx->p = q + 1;
    out[n] = '\0';
    return (int) n;
}

/*
 * An identifier: unquoted ones are folded to lower case, as PostgreSQL does; "quoted" ones are
 * kept as written ("" is a quote). false when there is none or it does not fit.
 */
static bool
lex_ident(struct lexer *lx, char *out, size_t cap)
{
    lex_skip(lx);
    size_t n = 0;
    if (lx->p < lx->end && *lx->p == '"') {
        return lex_quoted(lx, '"', out, cap) > 0;
    }
    const char *q = lx->p;
    while (q < lx->end &&
           (isalnum((unsigned char) *q) || *q == '_' || *q == '$' || *q == '-' || *q == '.')) {
        if (n + 1 >= cap) {
            return false;
        }
        out[n++] = (char) tolower((unsigned char) *q);
        q++;
    }
    if (n == 0) {
        return false;
    }
    lx->p = q;
    out[n] = '\0';
    return true;
}

/* A keyword (case-insensitive) as the next word. Consumes it only when it matches. */
static bool
lex_keyword(struct lexer *lx, const char *kw)
{
    lex_skip(lx);
    size_t n = strlen(kw);
    if ((size_t) (lx->end - lx->p) < n || strncasecmp(lx->p, kw, n) != 0) {
        return false;
    }
    const char *after = lx->p + n;
    if (after < lx->end && (isalnum((unsigned char) *after) || *after == '_')) {
        return false;
    }
    lx->p = after;
    return true;
}

/* A SET value: 'quoted' ('' is a quote), or a bare run of letters, digits and . _ - +. */
static bool
lex_value(struct lexer *lx, char *out, size_t cap)
{
    lex_skip(lx);
    size_t n = 0;
    if (lx->p < lx->end && *lx->p == '\'') {
        return lex_quoted(lx, '\'', out, cap) >= 0;
    }
    const char *q = lx->p;
    while (q < lx->end &&
           (isalnum((unsigned char) *q) || *q == '.' || *q == '_' || *q == '-' || *q == '+')) {
        if (n + 1 >= cap) {
            return false;
        }
        out[n++] = *q++;
    }
    if (n == 0) {
        return false;
    }
    lx->p = q;
    out[n] = '\0';
    return true;
}

static int parse_fail(struct admin_parse_err *e, const char *sqlstate, const char *hint,
                      const char *fmt, ...) PRINTF_LIKE(4, 5);

static int
parse_fail(struct admin_parse_err *e, const char *sqlstate, const char *hint, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    e->sqlstate = sqlstate;
    e->hint = hint;
    return -1;
}

/* The first word of the text, for messages. */
static void
first_word(const char *p, const char *end, char *out, size_t cap)
{
    struct lexer lx = { p, end };
    lex_skip(&lx);
    size_t n = 0;
    while (lx.p < end && !isspace((unsigned char) *lx.p) && *lx.p != ';' && n + 1 < cap) {
        out[n++] = *lx.p++;
    }
    out[n] = '\0';
}

int
admin_cmd_parse(const char *p, const char *end, struct admin_cmd *cmd, struct admin_parse_err *e)
{
    struct lexer lx = { p, end };
    memset(cmd, 0, sizeof(*cmd));
    if (lex_at_end(&lx)) {
        cmd->kind = AK_EMPTY;
        return 0;
    }
    if (lex_keyword(&lx, "show")) {
        static const struct {
            const char *word;
            enum admin_kind kind;
        } shows[] = {
            { "pools", AK_SHOW_POOLS },     { "stats", AK_SHOW_STATS },
            { "servers", AK_SHOW_SERVERS }, { "clients", AK_SHOW_CLIENTS },
            { "nodes", AK_SHOW_NODES },     { "config", AK_SHOW_CONFIG },
            { "version", AK_SHOW_VERSION },
        };
        char word[ADMIN_ARG_MAX];
        if (!lex_ident(&lx, word, sizeof(word))) {
            return parse_fail(e, SQLSTATE_SYNTAX_ERROR, ADMIN_HELP, "SHOW needs what to show");
        }
        for (size_t i = 0; i < ARRAY_LEN(shows); i++) {
            if (strcmp(word, shows[i].word) == 0) {
                cmd->kind = shows[i].kind;
                goto tail;
            }
        }
        return parse_fail(e, SQLSTATE_SYNTAX_ERROR, ADMIN_HELP, "unknown SHOW command \"%s\"",
                          word);
    }
    bool is_pause = lex_keyword(&lx, "pause");
    if (is_pause || lex_keyword(&lx, "resume")) {
        cmd->kind = is_pause ? AK_PAUSE : AK_RESUME;
        if (!lex_at_end(&lx)) {
            cmd->has_arg = lex_ident(&lx, cmd->arg, sizeof(cmd->arg));
            if (!cmd->has_arg) {
                return parse_fail(e, SQLSTATE_SYNTAX_ERROR, "PAUSE [database], RESUME [database]",
                                  "syntax error: expected a database name");
            }
        }
        goto tail;
    }
    if (lex_keyword(&lx, "kill")) {
        cmd->kind = AK_KILL;
        cmd->has_arg = lex_ident(&lx, cmd->arg, sizeof(cmd->arg));
        if (!cmd->has_arg) {
            return parse_fail(e, SQLSTATE_SYNTAX_ERROR, "KILL database",
                              "KILL needs the database whose connections it drops");
        }
        goto tail;
    }
    if (lex_keyword(&lx, "reload")) {
        cmd->kind = AK_RELOAD;
        goto tail;
    }
    if (lex_keyword(&lx, "shutdown")) {
        cmd->kind = AK_SHUTDOWN;
        goto tail;
    }
    if (lex_keyword(&lx, "set")) {
        cmd->kind = AK_SET;
        (void) lex_keyword(&lx, "session");
        if (!lex_ident(&lx, cmd->arg, sizeof(cmd->arg))) {
            return parse_fail(e, SQLSTATE_SYNTAX_ERROR, "SET key = value",
                              "syntax error: SET needs a key");
        }
        cmd->has_arg = true;
        lex_skip(&lx);
        if (lx.p < lx.end && *lx.p == '=') {
            lx.p++;
        } else if (!lex_keyword(&lx, "to")) {
            return parse_fail(e, SQLSTATE_SYNTAX_ERROR, "SET key = value",
                              "syntax error: expected = or TO after \"%s\"", cmd->arg);
        }
        if (!lex_value(&lx, cmd->value, sizeof(cmd->value))) {
            return parse_fail(e, SQLSTATE_SYNTAX_ERROR,
                              "SET key = value; quote values that hold "
                              "spaces: SET key = 'value'",
                              "syntax error: SET %s needs a value", cmd->arg);
        }
        goto tail;
    }
    if (lex_keyword(&lx, "begin") || lex_keyword(&lx, "start")) {
        cmd->kind = AK_BEGIN;
        (void) lex_keyword(&lx, "transaction");
        (void) lex_keyword(&lx, "work");
        goto tail;
    }
    if (lex_keyword(&lx, "commit") || lex_keyword(&lx, "end")) {
        cmd->kind = AK_COMMIT;
        (void) lex_keyword(&lx, "transaction");
        (void) lex_keyword(&lx, "work");
        goto tail;
    }
    if (lex_keyword(&lx, "rollback") || lex_keyword(&lx, "abort")) {
        cmd->kind = AK_ROLLBACK;
        (void) lex_keyword(&lx, "transaction");
        (void) lex_keyword(&lx, "work");
        goto tail;
    }
    {
        char word[32];
        first_word(p, end, word, sizeof(word));
        return parse_fail(e, SQLSTATE_SYNTAX_ERROR, ADMIN_HELP,
                          "unrecognized admin console command \"%s\"", word);
    }
tail:
    if (!lex_at_end(&lx)) {
        char word[32];
        first_word(lx.p, lx.end, word, sizeof(word));
        return parse_fail(e, SQLSTATE_SYNTAX_ERROR, ADMIN_HELP, "syntax error at or near \"%s\"",
                          word);
    }
    return 0;
}

/*
 * The end of the statement starting at p: the first ';' outside quotes and comments, or end.
 */
const char *
admin_cmd_statement_end(const char *p, const char *end)
{
    while (p < end) {
        if (*p == '\'' || *p == '"') {
            char q = *p++;
            while (p < end && *p != q) {
                p++;
            }
            if (p < end) {
                p++;
            }
        } else if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
            while (p < end && *p != '\n') {
                p++;
            }
        } else if (end - p >= 2 && p[0] == '/' && p[1] == '*') {
            p += 2;
            while (end - p >= 2 && !(p[0] == '*' && p[1] == '/')) {
                p++;
            }
            p = end - p >= 2 ? p + 2 : end;
        } else if (*p == ';') {
            return p;
        } else {
            p++;
        }
    }
    return end;
}

bool
admin_cmd_is_empty(const char *p, const char *end)
{
    struct lexer lx = { p, end };
    return lex_at_end(&lx);
}

bool
admin_cmd_is_read_only(enum admin_kind k)
{
    switch (k) {
    case AK_EMPTY:
    case AK_SHOW_POOLS:
    case AK_SHOW_STATS:
    case AK_SHOW_SERVERS:
    case AK_SHOW_CLIENTS:
    case AK_SHOW_NODES:
    case AK_SHOW_CONFIG:
    case AK_SHOW_VERSION:
    case AK_BEGIN:
    case AK_COMMIT:
    case AK_ROLLBACK:
        return true;
    default:
        return false;
    }
}
