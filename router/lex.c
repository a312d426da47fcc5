/*
 * lex.c - see lex_int.h. Character classes come from a table, not <ctype.h>: the scanner runs on
 * every query, and PostgreSQL's own scanner treats every byte >= 0x80 as an identifier byte
 * whatever the locale.
 */
#include "router/lex_int.h"

#include <string.h>
#include <strings.h>

/* Character classes, one table lookup per byte on the hot loops. */
enum {
    C_OTHER = 0,
    C_SPACE = 1,
    C_IDENT = 2, /* letters, '_', bytes >= 0x80: may start an identifier */
    C_DIGIT = 4,
    C_DOLLAR = 8,
    C_PUNCT = 16, /* ; ( ) . , = */
};

#define IDENT_CONT (C_IDENT | C_DIGIT | C_DOLLAR)

/* ASCII only; every byte >= 0x80 is C_IDENT (cls) */
static const unsigned char cclass[128] = {
    [' '] = C_SPACE,  ['\t'] = C_SPACE, ['\n'] = C_SPACE, ['\r'] = C_SPACE, ['\f'] = C_SPACE,
    ['\v'] = C_SPACE, ['0'] = C_DIGIT,  ['1'] = C_DIGIT,  ['2'] = C_DIGIT,  ['3'] = C_DIGIT,
    ['4'] = C_DIGIT,  ['5'] = C_DIGIT,  ['6'] = C_DIGIT,  ['7'] = C_DIGIT,  ['8'] = C_DIGIT,
    ['9'] = C_DIGIT,  ['$'] = C_DOLLAR, [';'] = C_PUNCT,  ['('] = C_PUNCT,  [')'] = C_PUNCT,
    ['.'] = C_PUNCT,  [','] = C_PUNCT,  ['='] = C_PUNCT,  ['_'] = C_IDENT,  ['a'] = C_IDENT,
    ['b'] = C_IDENT,  ['c'] = C_IDENT,  ['d'] = C_IDENT,  ['e'] = C_IDENT,  ['f'] = C_IDENT,
    ['g'] = C_IDENT,  ['h'] = C_IDENT,  ['i'] = C_IDENT,  ['j'] = C_IDENT,  ['k'] = C_IDENT,
    ['l'] = C_IDENT,  ['m'] = C_IDENT,  ['n'] = C_IDENT,  ['o'] = C_IDENT,  ['p'] = C_IDENT,
    ['q'] = C_IDENT,  ['r'] = C_IDENT,  ['s'] = C_IDENT,  ['t'] = C_IDENT,  ['u'] = C_IDENT,
    ['v'] = C_IDENT,  ['w'] = C_IDENT,  ['x'] = C_IDENT,  ['y'] = C_IDENT,  ['z'] = C_IDENT,
    ['A'] = C_IDENT,  ['B'] = C_IDENT,  ['C'] = C_IDENT,  ['D'] = C_IDENT,  ['E'] = C_IDENT,
    ['F'] = C_IDENT,  ['G'] = C_IDENT,  ['H'] = C_IDENT,  ['I'] = C_IDENT,  ['J'] = C_IDENT,
    ['K'] = C_IDENT,  ['L'] = C_IDENT,  ['M'] = C_IDENT,  ['N'] = C_IDENT,  ['O'] = C_IDENT,
    ['P'] = C_IDENT,  ['Q'] = C_IDENT,  ['R'] = C_IDENT,  ['S'] = C_IDENT,  ['T'] = C_IDENT,
    ['U'] = C_IDENT,  ['V'] = C_IDENT,  ['W'] = C_IDENT,  ['X'] = C_IDENT,  ['Y'] = C_IDENT,
    ['Z'] = C_IDENT,
};

static inline unsigned char
cls(unsigned char c)
{
    return c >= 0x80 ? C_IDENT : cclass[c];
}

static inline bool
is_space(unsigned char c)
{
    return cls(c) == C_SPACE;
}

static inline bool
is_digit(unsigned char c)
{
    return cls(c) == C_DIGIT;
}

static inline bool
is_ident_start(unsigned char c)
{
    return cls(c) == C_IDENT;
}

static inline bool
is_ident_char(unsigned char c)
{
    return (cls(c) & IDENT_CONT) != 0;
}

void
router_lex_skip_space(struct router_lexer *lx)
{
    while (lx->pos < lx->len) {
        char c = lx->s[lx->pos];
        if (is_space((unsigned char) c)) {
            lx->pos++;
        } else if (c == '-' && lx->pos + 1 < lx->len && lx->s[lx->pos + 1] == '-') {
            while (lx->pos < lx->len && lx->s[lx->pos] != '\n' && lx->s[lx->pos] != '\r') {
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
    } else if (cls(c) == C_PUNCT) {
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
