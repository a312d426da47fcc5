/*
 * scan.c - see scan.h. One pass over the text: a tokenizer that skips whitespace, comments
 * (nested block comments as PostgreSQL allows), string constants and dollar-quoted bodies, and
 * hands words, quoted identifiers and punctuation to a per-statement recognizer that looks at
 * the first few words of each statement and at function names followed by '('.
 */
#include "router/scan.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

enum tok_kind {
    TOK_END,
    TOK_WORD,   /* identifier or keyword (unquoted) */
    TOK_QIDENT, /* "quoted identifier" */
    TOK_STRING, /* any string constant */
    TOK_PUNCT,  /* one character: ; ( ) . , = etc. */
    TOK_OTHER,  /* numbers, operators, parameters */
};

struct tok {
    enum tok_kind kind;
    const char *p; /* start of the token's text (inside quotes for TOK_QIDENT) */
    size_t len;
};

struct lexer {
    const char *s;
    size_t len;
    size_t pos;
};

static bool
is_ident_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}

static bool
is_ident_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
}

/* Skip whitespace and comments. */
static void
skip_space(struct lexer *lx)
{
    while (lx->pos < lx->len) {
        char c = lx->s[lx->pos];
        if (isspace((unsigned char) c)) {
            lx->pos++;
        } else if (c == '-' && lx->pos + 1 < lx->len && lx->s[lx->pos + 1] == '-') {
            while (lx->pos < lx->len && lx->s[lx->pos] != '\n') {
                lx->pos++;
            }
        } else if (c == '/' && lx->pos + 1 < lx->len && lx->s[lx->pos + 1] == '*') {
            int depth = 1;
            lx->pos += 2;
            while (lx->pos < lx->len && depth > 0) {
                if (lx->s[lx->pos] == '/' && lx->pos + 1 < lx->len && lx->s[lx->pos + 1] == '*') {
                    depth++;
                    lx->pos += 2;
                } else if (lx->s[lx->pos] == '*' && lx->pos + 1 < lx->len &&
                           lx->s[lx->pos + 1] == '/') {
                    depth--;
                    lx->pos += 2;
                } else {
                    lx->pos++;
                }
            }
        } else {
            return;
        }
    }
}

/* A quoted run ending at an unescaped q; doubled q is an escape, and backslash too when
 * backslashes is set (E'' strings). Leaves pos after the closing quote (or at the end). */
static void
skip_quoted(struct lexer *lx, char q, bool backslashes)
{
    while (lx->pos < lx->len) {
        char c = lx->s[lx->pos++];
        if (backslashes && c == '\\') {
            lx->pos++;
        } else if (c == q) {
            if (lx->pos < lx->len && lx->s[lx->pos] == q) {
                lx->pos++;
            } else {
                return;
            }
        }
    }
}

static bool
next_token(struct lexer *lx, struct tok *t)
{
    skip_space(lx);
    if (lx->pos >= lx->len) {
        t->kind = TOK_END;
        return false;
    }
    const char *s = lx->s;
    size_t start = lx->pos;
    unsigned char c = (unsigned char) s[start];
    t->p = s + start;
    if (c == '\'') {
        lx->pos++;
        /* Without knowing standard_conforming_strings, '' doubling is the common ground;
         * a backslash before a quote could end the scan early, never start a keyword. */
        skip_quoted(lx, '\'', false);
        t->kind = TOK_STRING;
    } else if ((c == 'E' || c == 'e') && start + 1 < lx->len && s[start + 1] == '\'') {
        lx->pos += 2;
        skip_quoted(lx, '\'', true);
        t->kind = TOK_STRING;
    } else if (c == '"') {
        lx->pos++;
        skip_quoted(lx, '"', false);
        t->kind = TOK_QIDENT;
        t->p = s + start + 1;
        t->len = lx->pos - start - 2;
        if (lx->pos - start < 2) {
            t->len = 0;
        }
        return true;
    } else if (c == '$') {
        /* $tag$ ... $tag$ or a parameter $1. */
        size_t q = start + 1;
        while (q < lx->len && (is_ident_char((unsigned char) s[q]) && s[q] != '$')) {
            q++;
        }
        if (q < lx->len && s[q] == '$' &&
            !(q > start + 1 && isdigit((unsigned char) s[start + 1]))) {
            size_t tag_len = q - start + 1;
            size_t body = q + 1;
            const char *end = NULL;
            for (size_t i = body; i + tag_len <= lx->len; i++) {
                if (s[i] == '$' && memcmp(s + i, s + start, tag_len) == 0) {
                    end = s + i;
                    break;
                }
            }
            lx->pos = end ? (size_t) (end - s) + tag_len : lx->len;
            t->kind = TOK_STRING;
        } else {
            lx->pos = q;
            t->kind = TOK_OTHER;
        }
    } else if (is_ident_start(c)) {
        while (lx->pos < lx->len && is_ident_char((unsigned char) s[lx->pos])) {
            lx->pos++;
        }
        t->kind = TOK_WORD;
    } else if (strchr(";().,=", c)) {
        lx->pos++;
        t->kind = TOK_PUNCT;
    } else {
        lx->pos++;
        t->kind = TOK_OTHER;
    }
    t->len = lx->pos - start;
    return true;
}

static bool
word_is(const struct tok *t, const char *kw)
{
    size_t n = strlen(kw);
    return t->kind == TOK_WORD && t->len == n && strncasecmp(t->p, kw, n) == 0;
}

static bool
punct_is(const struct tok *t, char c)
{
    return t->kind == TOK_PUNCT && t->p[0] == c;
}

/* Copy a name token, folding unquoted ones to lower case as PostgreSQL does. */
static void
copy_name(const struct tok *t, char *out, bool *truncated)
{
    size_t n = t->len < ROUTER_NAME_MAX - 1 ? t->len : ROUTER_NAME_MAX - 1;
    *truncated = t->len > n;
    for (size_t i = 0; i < n; i++) {
        out[i] = t->kind == TOK_WORD ? (char) tolower((unsigned char) t->p[i]) : t->p[i];
    }
    out[n] = '\0';
}

static const char *const advisory_fns[] = {
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
};

/* SET/RESET target: words up to '=', TO, FROM or the statement's end; "a.b" names allowed. */
static void
scan_set(struct lexer *lx, struct tok *t, bool is_reset, router_tracked_fn is_tracked, void *arg,
         struct router_scan *out)
{
    if (!next_token(lx, t)) {
        return;
    }
    if (word_is(t, "local") || word_is(t, "transaction") || word_is(t, "constraints")) {
        return; /* transaction-scoped: gone at COMMIT */
    }
    if (word_is(t, "session")) {
        if (!next_token(lx, t)) {
            return;
        }
        if (word_is(t, "characteristics") || word_is(t, "authorization")) {
            out->flags |= ROUTER_F_SET_SESSION;
            return;
        }
    }
    if (is_reset && word_is(t, "all")) {
        out->flags |= ROUTER_F_SET_TRACKED;
        return;
    }
    if (word_is(t, "time")) {
        /* SET TIME ZONE is TimeZone */
        if (is_tracked && is_tracked("timezone", 8, arg)) {
            out->flags |= ROUTER_F_SET_TRACKED;
        } else {
            out->flags |= ROUTER_F_SET_SESSION;
        }
        return;
    }
    if (t->kind != TOK_WORD && t->kind != TOK_QIDENT) {
        out->flags |= ROUTER_F_SET_SESSION;
        return;
    }
    char name[ROUTER_NAME_MAX * 2];
    size_t n = 0;
    for (;;) {
        for (size_t i = 0; i < t->len && n < sizeof(name) - 1; i++) {
            name[n++] = t->kind == TOK_WORD ? (char) tolower((unsigned char) t->p[i]) : t->p[i];
        }
        struct lexer save = *lx;
        struct tok dot;
        if (next_token(lx, &dot) && punct_is(&dot, '.') && next_token(lx, t) &&
            (t->kind == TOK_WORD || t->kind == TOK_QIDENT) && n < sizeof(name) - 1) {
            name[n++] = '.';
            continue;
        }
        *lx = save;
        break;
    }
    name[n] = '\0';
    if (is_tracked && is_tracked(name, n, arg)) {
        out->flags |= ROUTER_F_SET_TRACKED;
    } else {
        out->flags |= ROUTER_F_SET_SESSION;
    }
}

/* Words whose mere presence sends a query to the full scan (they may change session state). */
static const struct {
    const char *w;
    size_t n;
} suspects[] = {
    { "temp", 4 },
    { "pg_temp", 7 },
    { "temporary", 9 },
    { "set_config", 10 },
    { "pg_advisory_lock", 16 },
    { "pg_try_advisory_lock", 20 },
    { "pg_advisory_lock_shared", 23 },
    { "pg_try_advisory_lock_shared", 27 },
};

static bool
word_is_suspect(const char *w, size_t n)
{
    for (size_t i = 0; i < sizeof(suspects) / sizeof(suspects[0]); i++) {
        if (suspects[i].n == n && (w[0] | 0x20) == suspects[i].w[0] &&
            strncasecmp(w, suspects[i].w, n) == 0) {
            return true;
        }
    }
    return false;
}

/* ASCII identifier characters without the locale lookups of isalnum(); bytes >= 0x80 count
 * as identifier characters, as in PostgreSQL's scanner. */
static inline bool
ident_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c >= 0x80;
}

/*
 * The common case, decided without tokenizing: one statement (no ';' but trailing ones) that
 * starts with a word that never changes session state, and mentions none of the names that
 * could (advisory locks, set_config, temporary objects). Anything else takes the full scan.
 */
static bool
scan_is_plain(const char *sql, size_t len)
{
    static const struct {
        const char *w;
        size_t n;
    } plain[] = {
        { "select", 6 },  { "insert", 6 }, { "update", 6 },    { "delete", 6 },  { "with", 4 },
        { "values", 6 },  { "table", 5 },  { "commit", 6 },    { "end", 3 },     { "rollback", 8 },
        { "abort", 5 },   { "fetch", 5 },  { "move", 4 },      { "close", 5 },   { "show", 4 },
        { "explain", 7 }, { "copy", 4 },   { "savepoint", 9 }, { "release", 7 },
    };
    size_t i = 0;
    while (i < len && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r')) {
        i++;
    }
    size_t w = i;
    while (i < len && ((sql[i] | 0x20) >= 'a' && (sql[i] | 0x20) <= 'z')) {
        i++;
    }
    size_t wl = i - w;
    bool known = false;
    for (size_t k = 0; k < sizeof(plain) / sizeof(plain[0]) && !known; k++) {
        known = plain[k].n == wl && (sql[w] | 0x20) == plain[k].w[0] &&
                strncasecmp(sql + w, plain[k].w, wl) == 0;
    }
    if (!known || (i < len && ident_char((unsigned char) sql[i]))) {
        return false;
    }
    const char *semi = memchr(sql, ';', len);
    if (semi) {
        for (const char *p = semi; p < sql + len; p++) {
            if (*p != ';' && !isspace((unsigned char) *p)) {
                return false;
            }
        }
    }
    /* One pass over the words; only those of a suspect's length and first letter are compared.
     * A suspect inside a string literal just costs the full scan. */
    for (size_t p = i; p < len;) {
        if (!ident_char((unsigned char) sql[p])) {
            p++;
            continue;
        }
        size_t b = p;
        while (p < len && ident_char((unsigned char) sql[p])) {
            p++;
        }
        size_t n = p - b;
        if ((n == 4 || n == 7 || n == 9 || n == 10 || n == 16 || n == 20 || n == 23 || n == 27) &&
            word_is_suspect(sql + b, n)) {
            return false;
        }
    }
    return true;
}

void
router_scan_sql(const char *sql, size_t len, router_tracked_fn is_tracked, void *arg,
                struct router_scan *out)
{
    memset(out, 0, sizeof(*out));
    if (scan_is_plain(sql, len)) {
        out->n_statements = 1;
        return;
    }
    struct lexer lx = { sql, len, 0 };
    struct tok t, prev = { TOK_END, NULL, 0 };
    bool at_start = true;
    int word_no = 0; /* words since the statement started */
    bool in_declare = false;
    bool in_create = false;
    bool saw_into = false;

    while (next_token(&lx, &t)) {
        if (punct_is(&t, ';')) {
            at_start = true;
            word_no = 0;
            in_declare = in_create = saw_into = false;
            prev = t;
            continue;
        }
        if (at_start) {
            at_start = false;
            out->n_statements++;
            if (word_is(&t, "begin") || word_is(&t, "start")) {
                out->flags |= ROUTER_F_BEGIN;
            } else if (word_is(&t, "listen")) {
                out->flags |= ROUTER_F_LISTEN;
            } else if (word_is(&t, "unlisten")) {
                out->flags |= ROUTER_F_UNLISTEN;
            } else if (word_is(&t, "execute")) {
                out->flags |= ROUTER_F_EXECUTE;
            } else if (word_is(&t, "prepare")) {
                struct lexer save = lx;
                struct tok n2;
                /* PREPARE TRANSACTION ends a transaction; it leaves nothing behind. */
                if (!(next_token(&lx, &n2) && word_is(&n2, "transaction"))) {
                    out->flags |= ROUTER_F_PREPARE;
                }
                lx = save;
            } else if (word_is(&t, "deallocate")) {
                struct tok n2;
                if (next_token(&lx, &n2) && word_is(&n2, "prepare")) {
                    (void) next_token(&lx, &n2);
                }
                if (word_is(&n2, "all")) {
                    out->flags |= ROUTER_F_DEALLOCATE_ALL;
                } else if ((n2.kind == TOK_WORD || n2.kind == TOK_QIDENT) &&
                           !(out->flags & ROUTER_F_DEALLOCATE)) {
                    out->flags |= ROUTER_F_DEALLOCATE;
                    copy_name(&n2, out->deallocate_name, &out->is_truncated_name);
                }
            } else if (word_is(&t, "discard")) {
                struct tok n2;
                if (next_token(&lx, &n2) && word_is(&n2, "all")) {
                    out->flags |= ROUTER_F_DISCARD_ALL;
                }
            } else if (word_is(&t, "set")) {
                scan_set(&lx, &t, false, is_tracked, arg, out);
            } else if (word_is(&t, "reset")) {
                scan_set(&lx, &t, true, is_tracked, arg, out);
            } else if (word_is(&t, "declare")) {
                in_declare = true;
            } else if (word_is(&t, "create")) {
                in_create = true;
            }
            word_no = 1;
            prev = t;
            continue;
        }
        word_no++;
        if (in_declare && word_is(&prev, "with") && word_is(&t, "hold")) {
            out->flags |= ROUTER_F_WITH_HOLD;
        }
        if (in_create && word_no <= 4 && (word_is(&t, "temp") || word_is(&t, "temporary"))) {
            out->flags |= ROUTER_F_TEMP;
        }
        if (word_is(&t, "into")) {
            saw_into = true;
        } else if (saw_into && (word_is(&t, "temp") || word_is(&t, "temporary"))) {
            out->flags |= ROUTER_F_TEMP; /* SELECT ... INTO TEMP t */
            saw_into = false;
        } else if (t.kind == TOK_WORD) {
            saw_into = false;
        }
        if (punct_is(&t, '.') && word_is(&prev, "pg_temp")) {
            out->flags |= ROUTER_F_TEMP;
        }
        if (punct_is(&t, '(') && prev.kind == TOK_WORD) {
            for (size_t i = 0; i < sizeof(advisory_fns) / sizeof(advisory_fns[0]); i++) {
                if (word_is(&prev, advisory_fns[i])) {
                    out->flags |= ROUTER_F_ADVISORY;
                }
            }
            if (word_is(&prev, "set_config")) {
                out->flags |= ROUTER_F_SET_SESSION;
            }
        }
        prev = t;
    }
}
