/*
 * lex.c - see lex_int.h. Character classes are ASCII tests, not <ctype.h>: the scanner runs on
 * every query, and PostgreSQL's own scanner treats every byte >= 0x80 as an identifier byte
 * whatever the locale.
 */
#include "router/lex_int.h"

#include <string.h>
#include <strings.h>

static inline bool
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static inline bool
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline bool
is_ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static inline bool
is_ident_char(unsigned char c)
{
    return is_ident_start(c) || is_digit(c) || c == '$';
}

void
router_lex_skip_space(struct router_lexer *lx)
{
    while (lx->pos < lx->len) {
        char c = lx->s[lx->pos];
        if (is_space((unsigned char) c)) {
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
            if (depth > 0) {
                lx->is_comment_open = true;
            }
        } else {
            return;
        }
    }
}

/* A quoted run ending at an unescaped q; doubled q is an escape, and backslash too when
 * backslashes is set (E'' strings). Leaves pos after the closing quote (or at the end).
 * Returns false when the text ends first. */
static bool
skip_quoted(struct router_lexer *lx, char q, bool backslashes)
{
    while (lx->pos < lx->len) {
        char c = lx->s[lx->pos++];
        if (backslashes && c == '\\') {
            lx->pos++;
        } else if (c == q) {
            if (lx->pos < lx->len && lx->s[lx->pos] == q) {
                lx->pos++;
            } else {
                return true;
            }
        }
    }
    if (lx->pos > lx->len) {
        lx->pos = lx->len; /* a backslash was the last byte */
    }
    return false;
}

bool
router_lex_next(struct router_lexer *lx, struct router_tok *t)
{
    router_lex_skip_space(lx);
    t->is_unterminated = false;
    if (lx->pos >= lx->len) {
        t->kind = ROUTER_TOK_END;
        t->p = lx->s + lx->len;
        t->len = 0;
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
        t->is_unterminated = !skip_quoted(lx, '\'', false);
        t->kind = ROUTER_TOK_STRING;
    } else if ((c == 'E' || c == 'e') && start + 1 < lx->len && s[start + 1] == '\'') {
        lx->pos += 2;
        t->is_unterminated = !skip_quoted(lx, '\'', true);
        t->kind = ROUTER_TOK_STRING;
    } else if (c == '"') {
        lx->pos++;
        t->is_unterminated = !skip_quoted(lx, '"', false);
        t->kind = ROUTER_TOK_QIDENT;
        t->p = s + start + 1;
        t->len = lx->pos - start >= 2 ? lx->pos - start - 2 : 0;
        if (t->is_unterminated) {
            t->len = lx->pos - start - 1;
        }
        return true;
    } else if (c == '$') {
        /* $tag$ ... $tag$ or a parameter $1. */
        size_t q = start + 1;
        while (q < lx->len && (is_ident_char((unsigned char) s[q]) && s[q] != '$')) {
            q++;
        }
        if (q < lx->len && s[q] == '$' &&
            !(q > start + 1 && is_digit((unsigned char) s[start + 1]))) {
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
            t->is_unterminated = end == NULL;
            t->kind = ROUTER_TOK_STRING;
        } else {
            lx->pos = q;
            t->kind = ROUTER_TOK_OTHER;
        }
    } else if (is_ident_start(c)) {
        while (lx->pos < lx->len && is_ident_char((unsigned char) s[lx->pos])) {
            lx->pos++;
        }
        t->kind = ROUTER_TOK_WORD;
    } else if (c != '\0' && strchr(";().,=", c)) {
        lx->pos++;
        t->kind = ROUTER_TOK_PUNCT;
    } else {
        lx->pos++;
        t->kind = ROUTER_TOK_OTHER;
    }
    t->len = lx->pos - start;
    return true;
}

bool
router_tok_word_is(const struct router_tok *t, const char *kw)
{
    size_t n = strlen(kw);
    return t->kind == ROUTER_TOK_WORD && t->len == n && strncasecmp(t->p, kw, n) == 0;
}
