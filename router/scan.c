/*
 * scan.c - see scan.h. One pass over the text: the router's tokenizer (lex_int.h) skips
 * whitespace, comments, string constants and dollar-quoted bodies, and hands words, quoted
 * identifiers and punctuation to a per-statement recognizer that looks at the first few words of
 * each statement and at function names followed by '('.
 */
#include "router/scan.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "router/lex_int.h"

static bool
punct_is(const struct router_tok *t, char c)
{
    return t->kind == ROUTER_TOK_PUNCT && t->p[0] == c;
}

/* Copy a name token, folding unquoted ones to lower case as PostgreSQL does. */
static void
copy_name(const struct router_tok *t, char *out, bool *truncated)
{
    size_t n = t->len < ROUTER_NAME_MAX - 1 ? t->len : ROUTER_NAME_MAX - 1;
    *truncated = t->len > n;
    for (size_t i = 0; i < n; i++) {
        out[i] = t->kind == ROUTER_TOK_WORD ? (char) tolower((unsigned char) t->p[i]) : t->p[i];
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
scan_set(struct router_lexer *lx, struct router_tok *t, bool is_reset, router_tracked_fn is_tracked,
         void *arg, struct router_scan *out)
{
    if (!router_lex_next(lx, t)) {
        return;
    }
    if (router_tok_word_is(t, "local") || router_tok_word_is(t, "transaction") ||
        router_tok_word_is(t, "constraints")) {
        return; /* transaction-scoped: gone at COMMIT */
    }
    if (router_tok_word_is(t, "session")) {
        if (!router_lex_next(lx, t)) {
            return;
        }
        if (router_tok_word_is(t, "characteristics") || router_tok_word_is(t, "authorization")) {
            out->flags |= ROUTER_F_SET_SESSION;
            return;
        }
    }
    if (is_reset && router_tok_word_is(t, "all")) {
        out->flags |= ROUTER_F_SET_TRACKED;
        return;
    }
    if (router_tok_word_is(t, "time")) {
        /* SET TIME ZONE is TimeZone */
        if (is_tracked && is_tracked("timezone", 8, arg)) {
            out->flags |= ROUTER_F_SET_TRACKED;
        } else {
            out->flags |= ROUTER_F_SET_SESSION;
        }
        return;
    }
    if (t->kind != ROUTER_TOK_WORD && t->kind != ROUTER_TOK_QIDENT) {
        out->flags |= ROUTER_F_SET_SESSION;
        return;
    }
    char name[ROUTER_NAME_MAX * 2];
    size_t n = 0;
    for (;;) {
        for (size_t i = 0; i < t->len && n < sizeof(name) - 1; i++) {
            name[n++] =
                t->kind == ROUTER_TOK_WORD ? (char) tolower((unsigned char) t->p[i]) : t->p[i];
        }
        struct router_lexer save = *lx;
        struct router_tok dot;
        if (router_lex_next(lx, &dot) && punct_is(&dot, '.') && router_lex_next(lx, t) &&
            (t->kind == ROUTER_TOK_WORD || t->kind == ROUTER_TOK_QIDENT) && n < sizeof(name) - 1) {
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

/* Words whose mere presence sends a query to the full scan (they may change session state),
 * indexed by length: no two have the same. */
static const char *const suspect_of_len[28] = {
    [4] = "temp",
    [7] = "pg_temp",
    [9] = "temporary",
    [10] = "set_config",
    [16] = "pg_advisory_lock",
    [20] = "pg_try_advisory_lock",
    [23] = "pg_advisory_lock_shared",
    [27] = "pg_try_advisory_lock_shared",
};

static bool
word_is_suspect(const char *w, size_t n)
{
    const char *s =
        n < sizeof(suspect_of_len) / sizeof(suspect_of_len[0]) ? suspect_of_len[n] : NULL;
    if (!s) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = w[i];
        if (c >= 'A' && c <= 'Z') {
            c = (char) (c + ('a' - 'A'));
        }
        if (c != s[i]) {
            return false;
        }
    }
    return true;
}

/* Bytes that continue a word for scan_is_plain: ASCII letters, digits, '_', and every byte
 * >= 0x80, as in PostgreSQL's scanner. A table, not <ctype.h> or a chain of compares: it runs
 * over every byte of every query in transaction pooling. */
#define W8  1, 1, 1, 1, 1, 1, 1, 1
#define W64 W8, W8, W8, W8, W8, W8, W8, W8
#define W10 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
#define W26 W8, W8, W8, 1, 1
static const unsigned char word_byte[256] = {
    ['0'] = W10, ['A'] = W26, ['_'] = 1, ['a'] = W26, [0x80] = W64, W64,
};
#undef W8
#undef W64
#undef W10
#undef W26

static inline bool
ident_char(unsigned char c)
{
    return word_byte[c] != 0;
}

/* s[0..n) equals the lower-case word w (n bytes), ignoring ASCII case. */
static inline bool
word_eq(const char *s, const char *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((char) (s[i] | 0x20) != w[i]) {
            return false;
        }
    }
    return true;
}

/*
 * Every suspect holds one of "temp" (temp, temporary, pg_temp), "nfig" (set_config) or "advi"
 * (the advisory locks), in any case. Most queries hold none, and that is told 16 bytes at a
 * time (GCC vector extensions, which clang knows too; plain code where the target has no vector
 * unit) before any word is looked at. One inside another word ("template") only means the words
 * are looked at.
 */
typedef unsigned char scan_v16 __attribute__((vector_size(16)));

static inline scan_v16
scan_load16(const char *p)
{
    scan_v16 v;
    memcpy(&v, p, sizeof(v));
    return v | 0x20; /* ASCII upper case to lower; other bytes may collide: a false alarm */
}

/* Whether one of the quads starts in p[0..16); reads p[0..19). */
static inline bool
block_has_quad(const char *p)
{
    scan_v16 a = scan_load16(p);
    scan_v16 b = scan_load16(p + 1);
    scan_v16 c = scan_load16(p + 2);
    scan_v16 d = scan_load16(p + 3);
    scan_v16 hit = (scan_v16) (((a == 't') & (b == 'e') & (c == 'm') & (d == 'p')) |
                               ((a == 'n') & (b == 'f') & (c == 'i') & (d == 'g')) |
                               ((a == 'a') & (b == 'd') & (c == 'v') & (d == 'i')));
    uint64_t h[2];
    memcpy(h, &hit, sizeof(h));
    return (h[0] | h[1]) != 0;
}

#define SCAN_BLOCK 19 /* bytes block_has_quad reads */

static bool
has_suspect_quad(const char *s, size_t len)
{
    if (len < SCAN_BLOCK) {
        char pad[SCAN_BLOCK] = { 0 }; /* NUL bytes start no quad */
        memcpy(pad, s, len);
        return block_has_quad(pad);
    }
    size_t i = 0;
    for (; i + SCAN_BLOCK <= len; i += 16) {
        if (block_has_quad(s + i)) {
            return true;
        }
    }
    /* The quads that start after the last whole block: one more block, overlapping. */
    return i + 3 < len && block_has_quad(s + len - SCAN_BLOCK);
}

/*
 * The common case, decided without tokenizing: one statement (no ';' but trailing ones) that
 * starts with a word that never changes session state, and mentions none of the names that
 * could (advisory locks, set_config, temporary objects). Anything else takes the full scan.
 */
static bool
scan_is_plain(const char *sql, size_t len, uint32_t *flags)
{
    /* BEGIN and START leave nothing behind either; they only need saying (statement pooling
     * refuses them), as the full scan would for a first word. */
    static const struct {
        const char *w;
        size_t n;
        uint32_t flags;
    } plain[] = {
        { "select", 6, 0 },
        { "insert", 6, 0 },
        { "update", 6, 0 },
        { "delete", 6, 0 },
        { "with", 4, 0 },
        { "values", 6, 0 },
        { "table", 5, 0 },
        { "commit", 6, 0 },
        { "end", 3, 0 },
        { "rollback", 8, 0 },
        { "abort", 5, 0 },
        { "fetch", 5, 0 },
        { "move", 4, 0 },
        { "close", 5, 0 },
        { "show", 4, 0 },
        { "explain", 7, 0 },
        { "copy", 4, 0 },
        { "savepoint", 9, 0 },
        { "release", 7, 0 },
        { "begin", 5, ROUTER_F_BEGIN },
        { "start", 5, ROUTER_F_BEGIN },
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
        /* (c | 0x20) maps only letters onto letters here: the word holds letters only */
        known = plain[k].n == wl && word_eq(sql + w, plain[k].w, wl);
        *flags = plain[k].flags;
    }
    /* '$' continues a word for the lexer ("begin$1" is one word, not BEGIN) */
    if (!known || (i < len && (ident_char((unsigned char) sql[i]) || sql[i] == '$'))) {
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
    if (!has_suspect_quad(sql + i, len - i)) {
        return true;
    }
    /* One pass over the words; only those of a suspect's length are compared. A suspect
     * inside a string literal just costs the full scan. */
    const unsigned char *u = (const unsigned char *) sql;
    for (size_t p = i; p < len;) {
        /* A word starts as the lexer's do: not with a digit ("1pg_temp" is 1, pg_temp). */
        if (!word_byte[u[p]] || (unsigned) (u[p] - '0') < 10) {
            p++;
            continue;
        }
        size_t b = p;
        do {
            p++;
        } while (p < len && word_byte[u[p]]);
        size_t n = p - b;
        if (word_is_suspect(sql + b, n)) {
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
    uint32_t plain_flags = 0;
    if (scan_is_plain(sql, len, &plain_flags)) {
        out->flags = plain_flags;
        out->n_statements = 1;
        return;
    }
    struct router_lexer lx = { .s = sql, .len = len };
    struct router_tok t, prev = { .kind = ROUTER_TOK_END };
    bool at_start = true;
    int word_no = 0; /* words since the statement started */
    bool in_declare = false;
    bool in_create = false;
    bool saw_into = false;

    while (router_lex_next(&lx, &t)) {
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
            if (router_tok_word_is(&t, "begin") || router_tok_word_is(&t, "start")) {
                out->flags |= ROUTER_F_BEGIN;
            } else if (router_tok_word_is(&t, "listen")) {
                out->flags |= ROUTER_F_LISTEN;
            } else if (router_tok_word_is(&t, "unlisten")) {
                out->flags |= ROUTER_F_UNLISTEN;
            } else if (router_tok_word_is(&t, "execute")) {
                out->flags |= ROUTER_F_EXECUTE;
            } else if (router_tok_word_is(&t, "prepare")) {
                struct router_lexer save = lx;
                struct router_tok n2;
                /* PREPARE TRANSACTION ends a transaction; it leaves nothing behind. */
                if (!(router_lex_next(&lx, &n2) && router_tok_word_is(&n2, "transaction"))) {
                    out->flags |= ROUTER_F_PREPARE;
                }
                lx = save;
            } else if (router_tok_word_is(&t, "deallocate")) {
                struct router_tok n2;
                if (router_lex_next(&lx, &n2) && router_tok_word_is(&n2, "prepare")) {
                    (void) router_lex_next(&lx, &n2);
                }
                if (router_tok_word_is(&n2, "all")) {
                    out->flags |= ROUTER_F_DEALLOCATE_ALL;
                } else if ((n2.kind == ROUTER_TOK_WORD || n2.kind == ROUTER_TOK_QIDENT) &&
                           !(out->flags & ROUTER_F_DEALLOCATE)) {
                    out->flags |= ROUTER_F_DEALLOCATE;
                    copy_name(&n2, out->deallocate_name, &out->is_truncated_name);
                }
            } else if (router_tok_word_is(&t, "discard")) {
                struct router_tok n2;
                if (router_lex_next(&lx, &n2) && router_tok_word_is(&n2, "all")) {
                    out->flags |= ROUTER_F_DISCARD_ALL;
                }
            } else if (router_tok_word_is(&t, "set")) {
                scan_set(&lx, &t, false, is_tracked, arg, out);
            } else if (router_tok_word_is(&t, "reset")) {
                scan_set(&lx, &t, true, is_tracked, arg, out);
            } else if (router_tok_word_is(&t, "declare")) {
                in_declare = true;
            } else if (router_tok_word_is(&t, "create")) {
                in_create = true;
            }
            word_no = 1;
            prev = t;
            continue;
        }
        word_no++;
        if (in_declare && router_tok_word_is(&prev, "with") && router_tok_word_is(&t, "hold")) {
            out->flags |= ROUTER_F_WITH_HOLD;
        }
        if (in_create && word_no <= 4 &&
            (router_tok_word_is(&t, "temp") || router_tok_word_is(&t, "temporary"))) {
            out->flags |= ROUTER_F_TEMP;
        }
        if (router_tok_word_is(&t, "into")) {
            saw_into = true;
        } else if (saw_into &&
                   (router_tok_word_is(&t, "temp") || router_tok_word_is(&t, "temporary"))) {
            out->flags |= ROUTER_F_TEMP; /* SELECT ... INTO TEMP t */
            saw_into = false;
        } else if (t.kind == ROUTER_TOK_WORD) {
            saw_into = false;
        }
        if (punct_is(&t, '.') && router_tok_word_is(&prev, "pg_temp")) {
            out->flags |= ROUTER_F_TEMP;
        }
        if (punct_is(&t, '(') && prev.kind == ROUTER_TOK_WORD) {
            for (size_t i = 0; i < sizeof(advisory_fns) / sizeof(advisory_fns[0]); i++) {
                if (router_tok_word_is(&prev, advisory_fns[i])) {
                    out->flags |= ROUTER_F_ADVISORY;
                }
            }
            if (router_tok_word_is(&prev, "set_config")) {
                out->flags |= ROUTER_F_SET_SESSION;
            }
        }
        prev = t;
    }
}
