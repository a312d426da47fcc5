/*
 * lex_int.h - the SQL tokenizer shared by router/scan.c (session state) and router/classify.c
 * (the fast path in front of the parser). Private to router/.
 *
 * It knows what PostgreSQL's scanner knows about where keywords cannot be: whitespace, -- and
 * nested block comments, standard and E'' strings, quoted identifiers and dollar quotes ($$ and
 * $tag$). It does not know keywords or grammar. Plain strings are read with
 * standard_conforming_strings on ('' is the only escape), as the parser does.
 *
 * Pure; any thread.
 */
#ifndef PGMUX_ROUTER_LEX_INT_H
#define PGMUX_ROUTER_LEX_INT_H

#include <stdbool.h>
#include <stddef.h>

enum router_tok_kind {
    ROUTER_TOK_END,
    ROUTER_TOK_WORD,   /* identifier or keyword (unquoted) */
    ROUTER_TOK_QIDENT, /* "quoted identifier" */
    ROUTER_TOK_STRING, /* any string constant, dollar-quoted bodies included */
    ROUTER_TOK_PUNCT,  /* one character: ; ( ) . , = */
    ROUTER_TOK_OTHER,  /* numbers, operators, parameters */
};

struct router_tok {
    enum router_tok_kind kind;
    const char *p; /* start of the token's text (inside the quotes for ROUTER_TOK_QIDENT) */
    size_t len;
    bool is_unterminated; /* a string, quoted identifier or dollar quote that the text ends in */
};

struct router_lexer {
    const char *s;
    size_t len;
    size_t pos;
    bool is_comment_open; /* the text ended inside a block comment */
};

/* Skip whitespace and comments (block comments nest, as in PostgreSQL). */
void router_lex_skip_space(struct router_lexer *lx);

/* The next token into *t; false (and t->kind ROUTER_TOK_END) at the end of the text. */
bool router_lex_next(struct router_lexer *lx, struct router_tok *t);

/* Whether t is the unquoted word kw (lower case, NUL-terminated), compared case-insensitively. */
bool router_tok_word_is(const struct router_tok *t, const char *kw);

#endif
