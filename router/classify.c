/*
 * classify.c - see classify.h. Three layers, cheapest first:
 *
 * 1. The lexer (lex_int.h) settles one-statement texts whose answer needs no grammar: a SELECT
 *    with no word followed by '(' that could be a function call, no FOR (lock clauses), no INTO,
 *    no WITH; INSERT/UPDATE/DELETE/MERGE; bare BEGIN/START TRANSACTION/COMMIT/END/ROLLBACK/ABORT.
 *    A text with an unterminated quote or comment, or more than one statement, goes on.
 * 2. The cache: parser answers keyed by a 128-bit hash of the text, its length and the function
 *    lists' generations. 4-way set associative with LRU inside a set; fixed size, allocated at
 *    create, so a hit allocates nothing. Two 64-bit lanes make an accidental collision
 *    (~2^-128) irrelevant; a deliberate one could only send a client's own text to a replica,
 *    which its hint comment can do anyway, and a replica refuses writes.
 * 3. libpg_query's pg_query_parse, walked as JSON. The JSON form was chosen over the protobuf
 *    form because reading the protobuf needs protobuf-c's headers (another package) against
 *    the private copy of the protobuf-c runtime that libpg_query carries, and unpacking
 *    allocates the whole tree again; while the rules are "does this key appear anywhere below"
 *    questions that one linear scan of the JSON text answers without building a tree or
 *    recursing, so the walk needs no stack depth however deep the query nests (libpg_query's
 *    own output does: see STACK_PER_TOKEN). Keys are the node type names of PostgreSQL's parse
 * nodes (InsertStmt, FuncCall's funcname, lockingClause, ...); string values inside the query
 * (constants, identifiers) are JSON strings in value position, so they can never be mistaken for
 * keys.
 *
 * Everything not positively recognized as a read is a write: unknown statement types,
 * parse errors, texts with NUL bytes, a parser that ran out of memory.
 *
 * Threads: the classifier's owner only; libpg_query's state is thread-local.
 */
#include "router/classify.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>

#include "router/lex_int.h"

/* ---------------------------------------------------------------------------------------- */
/* Function lists                                                                            */

/* Built-in functions that write or need the primary, sorted (strcmp). Every advisory lock
 * function is here (session and xact, try and shared variants, unlock): they take locks that
 * only mean something on the node where writes happen. */
static const char *const default_primary[] = {
    "currval",
    "lastval",
    "lo_creat",
    "lo_create",
    "lo_export",
    "lo_from_bytea",
    "lo_import",
    "lo_open",
    "lo_put",
    "lo_truncate",
    "lo_truncate64",
    "lo_unlink",
    "lowrite",
    "nextval",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_all",
    "pg_advisory_unlock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_create_restore_point",
    "pg_current_wal_flush_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_lsn",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_logical_emit_message",
    "pg_notify",
    "pg_switch_wal",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "setval",
    "txid_current",
    "txid_current_if_assigned",
};

static int
cmp_name(const void *key, const void *elem)
{
    return strcmp((const char *) key, *(const char *const *) elem);
}

static bool
list_has(const char *const *list, int n, const char *name)
{
    return n > 0 && list != NULL &&
           bsearch(name, list, (size_t) n, sizeof(list[0]), cmp_name) != NULL;
}

bool
router_function_is_default_primary(const char *name)
{
    const char *dot = strrchr(name, '.');
    return list_has(default_primary, (int) ARRAY_LEN(default_primary), dot ? dot + 1 : name);
}

enum fn_verdict {
    FN_HARMLESS,
    FN_PRIMARY,  /* built-in default or primary_functions */
    FN_VOLATILE, /* learned VOLATILE user function */
};

/* schema may be NULL. The built-in defaults match in any schema: a user function that shadows
 * nextval is treated like nextval, which errs towards the primary. */
static enum fn_verdict
function_verdict(const struct router_functions *fns, const char *schema, const char *name)
{
    if (list_has(default_primary, (int) ARRAY_LEN(default_primary), name)) {
        return FN_PRIMARY;
    }
    if (fns == NULL) {
        return FN_HARMLESS;
    }
    char qualified[2 * 64 + 2];
    bool has_qualified = false;
    if (schema != NULL) {
        size_t sl = strlen(schema), nl = strlen(name);
        if (sl + nl + 2 <= sizeof(qualified)) {
            memcpy(qualified, schema, sl);
            qualified[sl] = '.';
            memcpy(qualified + sl + 1, name, nl + 1);
            has_qualified = true;
        }
    }
    if (list_has(fns->primary, fns->n_primary, name) ||
        (has_qualified && list_has(fns->primary, fns->n_primary, qualified))) {
        return FN_PRIMARY;
    }
    if (list_has(fns->volatile_fns, fns->n_volatile, name) ||
        (has_qualified && list_has(fns->volatile_fns, fns->n_volatile, qualified))) {
        return FN_VOLATILE;
    }
    return FN_HARMLESS;
}

/* ---------------------------------------------------------------------------------------- */
/* Hints                                                                                     */

static bool
hint_is(const char *p, size_t n, const char *target)
{
    /* "pgmux" [space] ":" [space] target, case-insensitive, with surrounding space */
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) {
        i++;
    }
    if (n - i < 5 || strncasecmp(p + i, "pgmux", 5) != 0) {
        return false;
    }
    i += 5;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) {
        i++;
    }
    if (i >= n || p[i] != ':') {
        return false;
    }
    i++;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) {
        i++;
    }
    size_t tl = strlen(target);
    if (n - i < tl || strncasecmp(p + i, target, tl) != 0) {
        return false;
    }
    i += tl;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) {
        i++;
    }
    return i == n;
}

/* A hint is a block comment before the first token; other leading comments may surround it. */
static enum router_hint
find_hint(const char *s, size_t len)
{
    size_t i = 0;
    for (;;) {
        while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' ||
                           s[i] == '\f' || s[i] == '\v')) {
            i++;
        }
        if (i + 1 < len && s[i] == '-' && s[i + 1] == '-') {
            while (i < len && s[i] != '\n' && s[i] != '\r') {
                i++;
            }
            continue;
        }
        if (!(i + 1 < len && s[i] == '/' && s[i + 1] == '*')) {
            return ROUTER_HINT_NONE;
        }
        size_t body = i + 2;
        int depth = 1;
        i = body;
        while (i < len && depth > 0) {
            if (s[i] == '/' && i + 1 < len && s[i + 1] == '*') {
                depth++;
                i += 2;
            } else if (s[i] == '*' && i + 1 < len && s[i + 1] == '/') {
                depth--;
                i += 2;
            } else {
                i++;
            }
        }
        if (depth > 0) {
            return ROUTER_HINT_NONE; /* unterminated: the text is broken, no hint honoured */
        }
        size_t body_len = i - 2 - body;
        if (hint_is(s + body, body_len, "primary")) {
            return ROUTER_HINT_PRIMARY;
        }
        if (hint_is(s + body, body_len, "replica")) {
            return ROUTER_HINT_REPLICA;
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Fast path                                                                                 */

/* The words the fast path acts on. */
enum kw {
    KW_NONE,
    KW_SELECT,
    KW_INSERT,
    KW_UPDATE,
    KW_DELETE,
    KW_MERGE,
    KW_BEGIN,
    KW_START,
    KW_TRANSACTION,
    KW_WORK,
    KW_COMMIT,
    KW_END,
    KW_ROLLBACK,
    KW_ABORT,
    KW_FOR,
    KW_INTO,
    KW_WITH,
    /* Reserved keywords that may precede '(' without it being a function call. Any other word
     * followed by '(' might be one (non-reserved keywords can name functions too), so the text
     * goes to the parser. */
    KW_PAREN_OK,
};

struct kw_def {
    const char *w;
    enum kw id;
};

/* by length, for kw_lookup; every word here is lower-case ASCII letters */
static const struct kw_def kw2[] = {
    { "as", KW_PAREN_OK }, { "in", KW_PAREN_OK }, { "on", KW_PAREN_OK }, { "or", KW_PAREN_OK }
};
static const struct kw_def kw3[] = { { "all", KW_PAREN_OK }, { "and", KW_PAREN_OK },
                                     { "any", KW_PAREN_OK }, { "end", KW_END },
                                     { "for", KW_FOR },      { "not", KW_PAREN_OK },
                                     { "row", KW_PAREN_OK } };
static const struct kw_def kw4[] = { { "else", KW_PAREN_OK }, { "from", KW_PAREN_OK },
                                     { "into", KW_INTO },     { "some", KW_PAREN_OK },
                                     { "then", KW_PAREN_OK }, { "when", KW_PAREN_OK },
                                     { "with", KW_WITH },     { "work", KW_WORK } };
static const struct kw_def kw5[] = { { "abort", KW_ABORT },    { "array", KW_PAREN_OK },
                                     { "begin", KW_BEGIN },    { "merge", KW_MERGE },
                                     { "start", KW_START },    { "union", KW_PAREN_OK },
                                     { "using", KW_PAREN_OK }, { "where", KW_PAREN_OK } };
static const struct kw_def kw6[] = { { "commit", KW_COMMIT },   { "delete", KW_DELETE },
                                     { "except", KW_PAREN_OK }, { "exists", KW_PAREN_OK },
                                     { "having", KW_PAREN_OK }, { "insert", KW_INSERT },
                                     { "select", KW_SELECT },   { "update", KW_UPDATE },
                                     { "values", KW_PAREN_OK } };
static const struct kw_def kw7[] = { { "lateral", KW_PAREN_OK } };
static const struct kw_def kw8[] = { { "distinct", KW_PAREN_OK }, { "rollback", KW_ROLLBACK } };
static const struct kw_def kw9[] = { { "intersect", KW_PAREN_OK } };
static const struct kw_def kw11[] = { { "transaction", KW_TRANSACTION } };

static const struct {
    const struct kw_def *defs;
    size_t n;
} kw_by_len[12] = {
    [2] = { kw2, ARRAY_LEN(kw2) }, [3] = { kw3, ARRAY_LEN(kw3) }, [4] = { kw4, ARRAY_LEN(kw4) },
    [5] = { kw5, ARRAY_LEN(kw5) }, [6] = { kw6, ARRAY_LEN(kw6) }, [7] = { kw7, ARRAY_LEN(kw7) },
    [8] = { kw8, ARRAY_LEN(kw8) }, [9] = { kw9, ARRAY_LEN(kw9) }, [11] = { kw11, ARRAY_LEN(kw11) },
};

/* Which of our words an unquoted word token is, comparing case-insensitively with the words of
 * its length. */
static enum kw
kw_lookup(const struct router_tok *t)
{
    if (t->kind != ROUTER_TOK_WORD || t->len < 2 || t->len >= ARRAY_LEN(kw_by_len)) {
        return KW_NONE;
    }
    const struct kw_def *d = kw_by_len[t->len].defs;
    char first = (char) ((unsigned char) t->p[0] | 0x20);
    for (size_t i = 0; i < kw_by_len[t->len].n; i++) {
        if (d[i].w[0] != first) {
            continue;
        }
        size_t k = 1;
        /* d[i].w is lower-case letters: OR-ing 0x20 folds only A-Z onto it (no other byte
         * folds onto a lower-case letter) */
        while (k < t->len && ((unsigned char) t->p[k] | 0x20) == (unsigned char) d[i].w[k]) {
            k++;
        }
        if (k == t->len) {
            return d[i].id;
        }
    }
    return KW_NONE;
}

enum fast_kind {
    FAST_NONE,
    FAST_SELECT,
    FAST_WRITE,
    FAST_BEGIN,
    FAST_COMMIT,
    FAST_ROLLBACK,
};

static void
result_init(struct router_classification *out, enum router_class cls, const char *reason)
{
    out->cls = cls;
    out->parsed_cls = cls;
    out->hint = ROUTER_HINT_NONE;
    out->path = ROUTER_PATH_FAST;
    out->txn = 0;
    out->txn_end = ROUTER_TXN_END_UNCHANGED;
    out->is_begin_read_only = false;
    out->is_parse_error = false;
    out->n_statements = 1;
    out->reason = reason;
}

/* True when the lexer settled the text into *out. */
static bool
fast_path(const char *sql, size_t len, struct router_classification *out)
{
    struct router_lexer lx = { .s = sql, .len = len };
    struct router_tok t, prev = { .kind = ROUTER_TOK_END };
    if (!router_lex_next(&lx, &t)) {
        if (lx.is_comment_open) {
            return false;
        }
        result_init(out, ROUTER_CLASS_READ, "empty query");
        out->n_statements = 0;
        return true;
    }
    enum fast_kind kind = FAST_NONE;
    if (t.kind == ROUTER_TOK_PUNCT && t.p[0] == ';') {
        /* only semicolons: an empty query */
        while (router_lex_next(&lx, &t)) {
            if (!(t.kind == ROUTER_TOK_PUNCT && t.p[0] == ';')) {
                return false;
            }
        }
        if (lx.is_comment_open) {
            return false;
        }
        result_init(out, ROUTER_CLASS_READ, "empty query");
        out->n_statements = 0;
        return true;
    }
    if (t.kind != ROUTER_TOK_WORD) {
        return false;
    }
    switch (kw_lookup(&t)) {
    case KW_SELECT:
        kind = FAST_SELECT;
        break;
    case KW_INSERT:
    case KW_UPDATE:
    case KW_DELETE:
    case KW_MERGE:
        kind = FAST_WRITE;
        break;
    case KW_BEGIN:
        kind = FAST_BEGIN;
        break;
    case KW_START:
        if (!router_lex_next(&lx, &t) || kw_lookup(&t) != KW_TRANSACTION) {
            return false;
        }
        kind = FAST_BEGIN;
        break;
    case KW_COMMIT:
    case KW_END:
        kind = FAST_COMMIT;
        break;
    case KW_ROLLBACK:
    case KW_ABORT:
        kind = FAST_ROLLBACK;
        break;
    default:
        return false;
    }
    int n_words = 0;    /* after the first word */
    int parens = 0;     /* open '(' : unbalanced text is left to the parser to refuse */
    bool ended = false; /* a ';' was seen: only more ';' may follow */
    prev = t;
    while (router_lex_next(&lx, &t)) {
        if (t.is_unterminated) {
            return false;
        }
        if (t.kind == ROUTER_TOK_PUNCT && t.p[0] == ';') {
            ended = true;
            prev = t;
            continue;
        }
        if (ended) {
            return false; /* a second statement */
        }
        if (t.kind == ROUTER_TOK_PUNCT && (t.p[0] == '(' || t.p[0] == ')')) {
            parens += t.p[0] == '(' ? 1 : -1;
            if (parens < 0) {
                return false;
            }
        }
        switch (kind) {
        case FAST_SELECT: {
            if (t.kind == ROUTER_TOK_WORD && (t.len == 3 || t.len == 4)) {
                enum kw k = kw_lookup(&t);
                if (k == KW_FOR || k == KW_INTO || k == KW_WITH) {
                    return false;
                }
            }
            if (t.kind == ROUTER_TOK_PUNCT && t.p[0] == '(' &&
                (prev.kind == ROUTER_TOK_QIDENT ||
                 (prev.kind == ROUTER_TOK_WORD && kw_lookup(&prev) != KW_PAREN_OK))) {
                return false;
            }
            break;
        }
        case FAST_BEGIN:
        case FAST_COMMIT:
        case FAST_ROLLBACK: {
            /* only the bare forms: BEGIN [WORK|TRANSACTION], COMMIT [WORK|TRANSACTION] */
            enum kw k = kw_lookup(&t);
            if (n_words > 0 || (k != KW_WORK && k != KW_TRANSACTION)) {
                return false;
            }
            break;
        }
        default:
            break;
        }
        n_words++;
        prev = t;
    }
    if (lx.is_comment_open || parens != 0) {
        return false;
    }
    switch (kind) {
    case FAST_SELECT:
        result_init(out, ROUTER_CLASS_READ, "plain select");
        break;
    case FAST_WRITE:
        result_init(out, ROUTER_CLASS_WRITE, "insert, update, delete or merge");
        break;
    case FAST_BEGIN:
        result_init(out, ROUTER_CLASS_WRITE, "begin read write");
        out->txn = ROUTER_TXN_BEGIN;
        out->txn_end = ROUTER_TXN_END_OPEN;
        break;
    case FAST_COMMIT:
        result_init(out, ROUTER_CLASS_READ, "transaction end");
        out->txn = ROUTER_TXN_COMMIT;
        out->txn_end = ROUTER_TXN_END_CLOSED;
        break;
    case FAST_ROLLBACK:
        result_init(out, ROUTER_CLASS_READ, "transaction end");
        out->txn = ROUTER_TXN_ROLLBACK;
        out->txn_end = ROUTER_TXN_END_CLOSED;
        break;
    default:
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Parse-tree walk (libpg_query JSON)                                                       */

enum json_tok {
    J_END,
    J_OBJ_OPEN,
    J_OBJ_CLOSE,
    J_ARR_OPEN,
    J_ARR_CLOSE,
    J_KEY,    /* a string followed by ':' (the ':' is consumed) */
    J_STRING, /* a string in value position */
    J_NUMBER,
    J_TRUE,
    J_FALSE,
    J_NULL,
    J_BAD,
};

struct json {
    const char *s;
    size_t pos;
    const char *tok; /* string tokens: the raw text between the quotes (escapes undone by
                        json_unescape); numbers: the first digit or '-' */
    size_t tok_len;
};

static enum json_tok
json_next(struct json *j)
{
    const char *s = j->s;
    for (;;) {
        char c = s[j->pos];
        switch (c) {
        case '\0':
            return J_END;
        case ' ':
        case '\n':
        case '\t':
        case '\r':
        case ',':
            j->pos++;
            continue;
        case '{':
            j->pos++;
            return J_OBJ_OPEN;
        case '}':
            j->pos++;
            return J_OBJ_CLOSE;
        case '[':
            j->pos++;
            return J_ARR_OPEN;
        case ']':
            j->pos++;
            return J_ARR_CLOSE;
        case '"': {
            size_t b = ++j->pos;
            while (s[j->pos] != '"') {
                if (s[j->pos] == '\0') {
                    return J_BAD;
                }
                if (s[j->pos] == '\\' && s[j->pos + 1] != '\0') {
                    j->pos++;
                }
                j->pos++;
            }
            j->tok = s + b;
            j->tok_len = j->pos - b;
            j->pos++;
            size_t q = j->pos;
            while (s[q] == ' ' || s[q] == '\n' || s[q] == '\t' || s[q] == '\r') {
                q++;
            }
            if (s[q] == ':') {
                j->pos = q + 1;
                return J_KEY;
            }
            return J_STRING;
        }
        case 't':
            j->pos += strncmp(s + j->pos, "true", 4) == 0 ? 4 : 1;
            return J_TRUE;
        case 'f':
            j->pos += strncmp(s + j->pos, "false", 5) == 0 ? 5 : 1;
            return J_FALSE;
        case 'n':
            j->pos += strncmp(s + j->pos, "null", 4) == 0 ? 4 : 1;
            return J_NULL;
        default:
            if (c == '-' || (c >= '0' && c <= '9')) {
                size_t b = j->pos;
                j->pos++;
                while ((s[j->pos] >= '0' && s[j->pos] <= '9') || s[j->pos] == '.' ||
                       s[j->pos] == 'e' || s[j->pos] == 'E' || s[j->pos] == '+' ||
                       s[j->pos] == '-') {
                    j->pos++;
                }
                j->tok = s + b;
                j->tok_len = j->pos - b;
                return J_NUMBER;
            }
            return J_BAD;
        }
    }
}

static bool
tok_is(const struct json *j, const char *lit)
{
    size_t n = strlen(lit);
    return j->tok_len == n && memcmp(j->tok, lit, n) == 0;
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* The current string token, unescaped, into out (cap bytes, NUL-terminated). False when it
 * does not fit: such a name is longer than any identifier PostgreSQL keeps (63 bytes). */
static bool
json_unescape(const struct json *j, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < j->tok_len; i++) {
        char c = j->tok[i];
        if (c == '\\' && i + 1 < j->tok_len) {
            char e = j->tok[++i];
            switch (e) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'u': {
                /* libpg_query escapes control characters only: \u00XX */
                unsigned v = 0;
                for (int k = 0; k < 4; k++) {
                    int h = i + 1 < j->tok_len ? hexval(j->tok[i + 1]) : -1;
                    if (h < 0) {
                        return false;
                    }
                    v = v * 16 + (unsigned) h;
                    i++;
                }
                if (v > 0x7f) {
                    return false;
                }
                c = (char) v;
                break;
            }
            default:
                c = e; /* \" \\ \/ */
                break;
            }
        }
        if (n + 1 >= cap) {
            return false;
        }
        out[n++] = c;
    }
    out[n] = '\0';
    return true;
}

static long
json_number(const struct json *j)
{
    long v = 0;
    size_t i = 0;
    bool neg = false;
    if (i < j->tok_len && j->tok[i] == '-') {
        neg = true;
        i++;
    }
    for (; i < j->tok_len && j->tok[i] >= '0' && j->tok[i] <= '9'; i++) {
        if (v < 100000000) {
            v = v * 10 + (j->tok[i] - '0');
        }
    }
    return neg ? -v : v;
}

enum val_kind {
    VAL_NONE,
    VAL_STR,
    VAL_INT,
};

/* The first scalar of a DefElem's arg or of a SET's value list. */
struct val_capture {
    enum val_kind kind;
    long ival;
    char sval[32];
    bool is_ival_open; /* "ival" was the last key: a number may follow, or {} meaning 0 */
};

#define NAME_CAP 64

/* What one statement of the tree said; reset at each "stmt". */
struct stmt_info {
    char type[40];       /* node type of the statement: SelectStmt, InsertStmt, ... */
    char query_type[40]; /* ExplainStmt/CopyStmt: node type of the inner query */
    char kind[40];       /* TransactionStmt/VariableSetStmt kind, DiscardStmt target */
    char name[NAME_CAP]; /* VariableSetStmt/VariableShowStmt name */
    bool is_chain, is_from, has_filename, is_program, is_local;
    bool has_write_node;          /* Insert/Update/Delete/Merge anywhere below */
    bool has_lock;                /* a locking clause anywhere below */
    bool has_into;                /* SELECT ... INTO */
    enum fn_verdict fn;           /* worst function call below */
    int read_only;                /* DefElem transaction_read_only: -1 not seen, 0, 1 */
    bool is_analyze;              /* DefElem analyze, true */
    bool is_serializable;         /* DefElem transaction_isolation 'serializable' */
    struct val_capture set_value; /* VAR_SET_VALUE: the first value */
};

struct walk {
    const struct router_functions *fns;
    struct stmt_info st;
    bool in_stmt;
    int depth;
    bool want_type;       /* the next key at depth 4 is the statement's node type */
    bool want_query_type; /* the next key at depth 6 is the inner query's node type */
    int top_field;        /* 0 none, 1 options, 2 args: the depth-5 field being read */
    /* funcname: collecting the parts of a function name */
    int fn_depth; /* depth of the object holding "funcname", 0 = not collecting */
    int fn_parts;
    bool fn_too_long;
    char fn_part[3][NAME_CAP];
    /* DefElem */
    int de_depth; /* depth of the object holding "DefElem", 0 = none */
    char de_name[32];
    bool de_has_arg;
    bool de_in_arg;
    struct val_capture de_val;
    /* the key whose value comes next (only the few we act on at value time) */
    enum {
        K_OTHER,
        K_KIND,
        K_NAME,
        K_CHAIN,
        K_IS_FROM,
        K_FILENAME,
        K_IS_PROGRAM,
        K_IS_LOCAL,
        K_DEFNAME,
        K_SVAL,
        K_IVAL,
        K_BOOLVAL,
    } key;
};

/* Whether s is a case-insensitive prefix of word of at least min bytes. */
static bool
bool_prefix(const char *s, const char *word, size_t min)
{
    size_t n = strlen(s);
    return n >= min && n <= strlen(word) && strncasecmp(s, word, n) == 0;
}

/*
 * A boolean option's value as PostgreSQL's parse_bool reads it (true/false, yes/no, on/off, 1/0,
 * unambiguous prefixes; integers: non-zero). if_none: no value given (a bare option means true);
 * if_bad: a value PostgreSQL would refuse, so the statement fails anyway and the caller picks the
 * side that errs towards the primary.
 */
static bool
val_bool(const struct val_capture *v, bool if_none, bool if_bad)
{
    switch (v->kind) {
    case VAL_INT:
        return v->ival != 0;
    case VAL_STR:
        if (bool_prefix(v->sval, "true", 1) || bool_prefix(v->sval, "yes", 1) ||
            bool_prefix(v->sval, "on", 2) || strcmp(v->sval, "1") == 0) {
            return true;
        }
        if (bool_prefix(v->sval, "false", 1) || bool_prefix(v->sval, "no", 1) ||
            bool_prefix(v->sval, "off", 2) || strcmp(v->sval, "0") == 0) {
            return false;
        }
        return if_bad;
    default:
        return if_none;
    }
}

static void
fn_finish(struct walk *w)
{
    if (w->fn_too_long || w->fn_parts == 0) {
        /* a name longer than PostgreSQL keeps cannot be on a list; unknown is harmless here,
         * it is not a write function of ours */
        w->fn_depth = 0;
        return;
    }
    const char *name = w->fn_part[w->fn_parts - 1];
    const char *schema = w->fn_parts >= 2 ? w->fn_part[w->fn_parts - 2] : NULL;
    enum fn_verdict v = function_verdict(w->fns, schema, name);
    if (v > w->st.fn) {
        w->st.fn = v;
    }
    w->fn_depth = 0;
}

static void
de_finish(struct walk *w)
{
    if (w->de_has_arg && w->de_val.kind == VAL_NONE) {
        /* libpg_query leaves zero values out: {"Integer":{}} is 0, {"Boolean":{}} false */
        w->de_val.kind = VAL_INT;
        w->de_val.ival = 0;
    }
    if (strcmp(w->de_name, "analyze") == 0) {
        w->st.is_analyze = val_bool(&w->de_val, true, true);
    } else if (strcmp(w->de_name, "transaction_isolation") == 0) {
        w->st.is_serializable =
            w->de_val.kind == VAL_STR && strcasecmp(w->de_val.sval, "serializable") == 0;
    } else if (strcmp(w->de_name, "transaction_read_only") == 0) {
        w->st.read_only = val_bool(&w->de_val, false, false) ? 1 : 0;
    }
    w->de_depth = 0;
}

static bool
is_write_node(const struct json *j)
{
    return tok_is(j, "InsertStmt") || tok_is(j, "UpdateStmt") || tok_is(j, "DeleteStmt") ||
           tok_is(j, "MergeStmt");
}

static void
capture_scalar(struct walk *w, struct val_capture *v, enum json_tok t, const struct json *j)
{
    if (t == J_STRING && w->key == K_SVAL && v->kind == VAL_NONE) {
        v->kind = VAL_STR;
        if (!json_unescape(j, v->sval, sizeof(v->sval))) {
            strcpy(v->sval, "?");
        }
    } else if (t == J_NUMBER && (w->key == K_IVAL) && v->is_ival_open) {
        v->ival = json_number(j);
    } else if ((t == J_TRUE || t == J_FALSE) && w->key == K_BOOLVAL && v->is_ival_open) {
        v->ival = t == J_TRUE;
    }
}

static void
on_key(struct walk *w, const struct json *j)
{
    w->key = K_OTHER;
    int d = w->depth;
    if (d == 3 && tok_is(j, "stmt")) {
        memset(&w->st, 0, sizeof(w->st));
        w->st.read_only = -1;
        w->in_stmt = true;
        w->want_type = true;
        return;
    }
    if (!w->in_stmt || d < 4) {
        return;
    }
    if (d == 4 && w->want_type) {
        if (!json_unescape(j, w->st.type, sizeof(w->st.type))) {
            strcpy(w->st.type, "?");
        }
        w->want_type = false;
        return;
    }
    if (d == 6 && w->want_query_type) {
        if (!json_unescape(j, w->st.query_type, sizeof(w->st.query_type))) {
            strcpy(w->st.query_type, "?");
        }
        w->want_query_type = false;
    }
    if (d == 5) {
        w->top_field = 0;
        w->want_query_type = false;
        if (tok_is(j, "kind") || tok_is(j, "target")) {
            w->key = K_KIND; /* "target": DiscardStmt's kind */
        } else if (tok_is(j, "name")) {
            w->key = K_NAME;
        } else if (tok_is(j, "chain")) {
            w->key = K_CHAIN;
        } else if (tok_is(j, "is_from")) {
            w->key = K_IS_FROM;
        } else if (tok_is(j, "filename")) {
            w->key = K_FILENAME;
        } else if (tok_is(j, "is_program")) {
            w->key = K_IS_PROGRAM;
        } else if (tok_is(j, "is_local")) {
            w->key = K_IS_LOCAL;
        } else if (tok_is(j, "query")) {
            w->want_query_type = true;
        } else if (tok_is(j, "options")) {
            w->top_field = 1;
        } else if (tok_is(j, "args")) {
            w->top_field = 2;
        }
    }
    /* rules that hold at any depth */
    if (is_write_node(j)) {
        w->st.has_write_node = true;
    } else if (tok_is(j, "lockingClause")) {
        w->st.has_lock = true;
    } else if (tok_is(j, "intoClause")) {
        w->st.has_into = true;
    } else if (tok_is(j, "funcname") && w->fn_depth == 0) {
        w->fn_depth = d;
        w->fn_parts = 0;
        w->fn_too_long = false;
    } else if (tok_is(j, "DefElem") && w->top_field != 0 && w->de_depth == 0) {
        w->de_depth = d;
        w->de_name[0] = '\0';
        w->de_has_arg = false;
        w->de_in_arg = false;
        memset(&w->de_val, 0, sizeof(w->de_val));
    } else if (w->de_depth != 0 && d == w->de_depth + 1 && tok_is(j, "defname")) {
        w->key = K_DEFNAME;
    } else if (w->de_depth != 0 && d == w->de_depth + 1 && tok_is(j, "arg")) {
        w->de_in_arg = true;
        w->de_has_arg = true;
    } else if (w->de_depth != 0 && d == w->de_depth + 1) {
        w->de_in_arg = false;
    } else if (tok_is(j, "sval")) {
        w->key = K_SVAL;
    } else if (tok_is(j, "ival") || tok_is(j, "boolval")) {
        w->key = tok_is(j, "ival") ? K_IVAL : K_BOOLVAL;
        struct val_capture *v = NULL;
        if (w->de_depth != 0 && w->de_in_arg) {
            v = &w->de_val;
        } else if (w->de_depth == 0 && w->top_field == 2) {
            v = &w->st.set_value;
        }
        if (v != NULL) {
            if (v->kind == VAL_NONE) {
                v->kind = VAL_INT;
                v->ival = 0;
                v->is_ival_open = true;
            }
        }
    }
    /* inside a funcname list, the String nodes' sval keys carry the parts */
    if (w->fn_depth != 0 && tok_is(j, "sval")) {
        w->key = K_SVAL;
    }
}

static void
on_scalar(struct walk *w, enum json_tok t, const struct json *j)
{
    if (!w->in_stmt) {
        return;
    }
    if (w->fn_depth != 0 && t == J_STRING && w->key == K_SVAL) {
        if (w->fn_parts == 3) {
            memmove(w->fn_part[0], w->fn_part[1], sizeof(w->fn_part[0]) * 2);
            w->fn_parts = 2;
        }
        if (!json_unescape(j, w->fn_part[w->fn_parts], NAME_CAP)) {
            w->fn_too_long = true;
        }
        w->fn_parts++;
        return;
    }
    if (w->depth == 5) {
        switch (w->key) {
        case K_KIND:
            if (t == J_STRING && !json_unescape(j, w->st.kind, sizeof(w->st.kind))) {
                strcpy(w->st.kind, "?");
            }
            break;
        case K_NAME:
            if (t == J_STRING && !json_unescape(j, w->st.name, sizeof(w->st.name))) {
                strcpy(w->st.name, "?");
            }
            break;
        case K_CHAIN:
            w->st.is_chain = t == J_TRUE;
            break;
        case K_IS_FROM:
            w->st.is_from = t == J_TRUE;
            break;
        case K_FILENAME:
            w->st.has_filename = true;
            break;
        case K_IS_PROGRAM:
            w->st.is_program = t == J_TRUE;
            break;
        case K_IS_LOCAL:
            w->st.is_local = t == J_TRUE;
            break;
        default:
            break;
        }
        return;
    }
    if (w->de_depth != 0) {
        if (w->key == K_DEFNAME && t == J_STRING &&
            !json_unescape(j, w->de_name, sizeof(w->de_name))) {
            strcpy(w->de_name, "?");
        } else if (w->de_in_arg) {
            capture_scalar(w, &w->de_val, t, j);
        }
        return;
    }
    if (w->top_field == 2) {
        capture_scalar(w, &w->st.set_value, t, j);
    }
}

/* The per-text result being built over its statements. */
struct text_result {
    bool is_write;
    const char *reason; /* of the first statement that made it a write, else of the last read */
    uint32_t txn;
    enum router_txn_end txn_end;
    bool is_begin_read_only;
    int n_statements;
    /* the transaction opened by a BEGIN in this text, while it is open */
    bool in_own_txn;
    bool own_txn_read_only;
    bool own_txn_serializable; /* a hot standby refuses SERIALIZABLE, even READ ONLY */
    bool first_begin_serializable;
    bool saw_first_begin;
    bool first_begin_open;
};

static void
mark(struct text_result *r, bool is_write, const char *reason)
{
    if (is_write && !r->is_write) {
        r->is_write = true;
        r->reason = reason;
    } else if (!r->is_write) {
        r->reason = reason;
    }
}

/* A SELECT that runs (alone, or under EXPLAIN ANALYZE) writes when it modifies data in a CTE,
 * locks rows, creates a table with INTO or calls a function that may write. */
static void
mark_select(struct text_result *r, const struct stmt_info *st, const char *cte_reason,
            const char *read_reason)
{
    if (st->has_write_node) {
        mark(r, true, cte_reason);
    } else if (st->has_lock) {
        mark(r, true, "row lock clause");
    } else if (st->has_into) {
        mark(r, true, "select into");
    } else if (st->fn != FN_HARMLESS) {
        mark(r, true,
             st->fn == FN_VOLATILE ? "calls a volatile function" : "calls a primary function");
    } else {
        mark(r, false, read_reason);
    }
}

/* The BEGIN of this text's open transaction ends (COMMIT, ROLLBACK, PREPARE, end of text): if
 * nothing declared it read only, it needed the primary all along. */
static void
close_own_txn(struct text_result *r)
{
    if (r->in_own_txn && !r->own_txn_read_only) {
        mark(r, true, "begin read write");
    } else if (r->in_own_txn && r->own_txn_serializable) {
        mark(r, true, "serializable transaction");
    }
    r->in_own_txn = false;
    r->first_begin_open = false;
}

/* SET TRANSACTION ... or SET transaction_isolation: settings of the current transaction, which
 * run wherever it runs, unless they ask for SERIALIZABLE, which a hot standby refuses. */
static void
set_serializable(struct text_result *r, bool is_serializable)
{
    if (!is_serializable) {
        mark(r, false, "set transaction");
        return;
    }
    r->txn |= ROUTER_TXN_SERIALIZABLE;
    if (r->in_own_txn) {
        r->own_txn_serializable = true;
        if (r->first_begin_open) {
            r->first_begin_serializable = true;
        }
    }
    mark(r, true, "serializable transaction");
}

static void
stmt_finish(struct walk *w, struct text_result *r)
{
    const struct stmt_info *st = &w->st;
    r->n_statements++;
    const char *t = st->type;
    bool fn_write = st->fn != FN_HARMLESS;

    if (strcmp(t, "SelectStmt") == 0) {
        mark_select(r, st, "data-modifying cte", "read-only select");
    } else if (strcmp(t, "VariableShowStmt") == 0) {
        mark(r, false, "show");
    } else if (strcmp(t, "ExplainStmt") == 0) {
        const char *q = st->query_type;
        if (!st->is_analyze) {
            /* not executed: planning a write on a standby is allowed */
            bool plannable = strcmp(q, "SelectStmt") == 0 || strcmp(q, "InsertStmt") == 0 ||
                             strcmp(q, "UpdateStmt") == 0 || strcmp(q, "DeleteStmt") == 0 ||
                             strcmp(q, "MergeStmt") == 0 || strcmp(q, "CreateTableAsStmt") == 0 ||
                             strcmp(q, "DeclareCursorStmt") == 0;
            mark(r, !plannable, plannable ? "explain" : "explain of an unknown statement");
        } else if (strcmp(q, "SelectStmt") != 0) {
            mark(r, true, "explain analyze of a write");
        } else {
            mark_select(r, st, "explain analyze of a write", "explain analyze of a read");
        }
    } else if (strcmp(t, "CopyStmt") == 0) {
        if (st->is_from || st->has_filename || st->is_program) {
            mark(r, true, "copy from, or to a server file or program");
        } else if (st->query_type[0] != '\0' && strcmp(st->query_type, "SelectStmt") != 0) {
            mark(r, true, "copy of a write");
        } else if (st->has_write_node || st->has_lock || fn_write) {
            mark(r, true, "copy of a write");
        } else {
            mark(r, false, "copy to stdout");
        }
    } else if (strcmp(t, "TransactionStmt") == 0) {
        const char *k = st->kind;
        if (strcmp(k, "TRANS_STMT_BEGIN") == 0 || strcmp(k, "TRANS_STMT_START") == 0) {
            close_own_txn(r);
            r->txn |= ROUTER_TXN_BEGIN;
            r->txn_end = ROUTER_TXN_END_OPEN;
            r->in_own_txn = true;
            r->own_txn_read_only = st->read_only == 1;
            r->own_txn_serializable = st->is_serializable;
            if (st->is_serializable) {
                r->txn |= ROUTER_TXN_SERIALIZABLE;
            }
            if (st->read_only == 1) {
                r->txn |= ROUTER_TXN_READ_ONLY;
            } else if (st->read_only == 0) {
                r->txn |= ROUTER_TXN_READ_WRITE;
            }
            if (!r->saw_first_begin) {
                r->saw_first_begin = true;
                r->first_begin_open = true;
                r->is_begin_read_only = st->read_only == 1;
                r->first_begin_serializable = st->is_serializable;
            }
            mark(r, false, st->read_only == 1 ? "begin read only" : "begin");
        } else if (strcmp(k, "TRANS_STMT_COMMIT") == 0 || strcmp(k, "TRANS_STMT_ROLLBACK") == 0) {
            bool is_commit = k[11] == 'C';
            r->txn |= is_commit ? ROUTER_TXN_COMMIT : ROUTER_TXN_ROLLBACK;
            if (st->is_chain) {
                /* the chained transaction keeps the characteristics: the same node */
                r->txn |= ROUTER_TXN_CHAIN;
                r->txn_end = ROUTER_TXN_END_OPEN;
                r->first_begin_open = false;
            } else {
                close_own_txn(r);
                r->txn_end = ROUTER_TXN_END_CLOSED;
            }
            mark(r, false, "transaction end");
        } else if (strcmp(k, "TRANS_STMT_PREPARE") == 0) {
            close_own_txn(r);
            r->txn |= ROUTER_TXN_PREPARE;
            r->txn_end = ROUTER_TXN_END_CLOSED;
            mark(r, true, "prepare transaction");
        } else if (strcmp(k, "TRANS_STMT_COMMIT_PREPARED") == 0 ||
                   strcmp(k, "TRANS_STMT_ROLLBACK_PREPARED") == 0) {
            r->txn |= ROUTER_TXN_PREPARED;
            mark(r, true, "commit or rollback prepared");
        } else if (strcmp(k, "TRANS_STMT_SAVEPOINT") == 0 || strcmp(k, "TRANS_STMT_RELEASE") == 0 ||
                   strcmp(k, "TRANS_STMT_ROLLBACK_TO") == 0) {
            r->txn |= ROUTER_TXN_SAVEPOINT;
            mark(r, false, "savepoint");
        } else {
            mark(r, true, "unknown transaction statement");
        }
    } else if (strcmp(t, "VariableSetStmt") == 0) {
        const char *k = st->kind;
        const char *n = st->name;
        bool is_reset = strcmp(k, "VAR_RESET") == 0 || strcmp(k, "VAR_SET_DEFAULT") == 0;
        if (strcmp(k, "VAR_SET_MULTI") == 0 && strcmp(n, "TRANSACTION") == 0) {
            /* SET TRANSACTION ...: this transaction only */
            if (st->read_only == 1) {
                r->txn |= ROUTER_TXN_READ_ONLY;
                if (r->in_own_txn) {
                    r->own_txn_read_only = true;
                    if (r->first_begin_open) {
                        r->is_begin_read_only = true;
                    }
                }
            } else if (st->read_only == 0) {
                r->txn |= ROUTER_TXN_READ_WRITE;
                if (r->in_own_txn) {
                    r->own_txn_read_only = false;
                    if (r->first_begin_open) {
                        r->is_begin_read_only = false;
                    }
                }
            }
            set_serializable(r, st->is_serializable);
        } else if (strcmp(n, "transaction_isolation") == 0 && !is_reset &&
                   strcmp(k, "VAR_SET_VALUE") == 0) {
            set_serializable(r, st->set_value.kind == VAL_STR &&
                                    strcasecmp(st->set_value.sval, "serializable") == 0);
        } else if (strcmp(n, "transaction_read_only") == 0 && !is_reset &&
                   strcmp(k, "VAR_SET_VALUE") == 0) {
            bool ro = val_bool(&st->set_value, false, false);
            r->txn |= ro ? ROUTER_TXN_READ_ONLY : ROUTER_TXN_READ_WRITE;
            if (r->in_own_txn) {
                r->own_txn_read_only = ro;
                if (r->first_begin_open) {
                    r->is_begin_read_only = ro;
                }
            }
            mark(r, false, "set transaction");
        } else if (strcmp(k, "VAR_SET_MULTI") == 0 && strcmp(n, "SESSION CHARACTERISTICS") == 0) {
            if (st->read_only == 1) {
                r->txn |= ROUTER_TXN_SESSION_RO;
            } else if (st->read_only == 0) {
                r->txn |= ROUTER_TXN_SESSION_RW;
            }
            mark(r, true, "set session characteristics");
        } else {
            if (strcmp(n, "default_transaction_read_only") == 0 && !st->is_local) {
                if (!is_reset && val_bool(&st->set_value, false, false)) {
                    r->txn |= ROUTER_TXN_SESSION_RO;
                } else {
                    r->txn |= ROUTER_TXN_SESSION_RW;
                }
            } else if (strcmp(k, "VAR_RESET_ALL") == 0) {
                r->txn |= ROUTER_TXN_SESSION_RW;
            }
            mark(r, true, "set");
        }
    } else {
        if (strcmp(t, "DiscardStmt") == 0 && strcmp(st->kind, "DISCARD_ALL") == 0) {
            r->txn |= ROUTER_TXN_SESSION_RW; /* DISCARD ALL includes RESET ALL */
        }
        mark(r, true, "not a read statement");
    }
}

/* Walk libpg_query's JSON tree into r. False when the JSON is not what we expect. */
static bool
walk_tree(const char *tree, const struct router_functions *fns, struct text_result *r)
{
    struct json j = { .s = tree };
    struct walk w;
    memset(&w, 0, sizeof(w));
    w.fns = fns;
    for (;;) {
        enum json_tok t = json_next(&j);
        switch (t) {
        case J_END:
            return w.depth == 0 && !w.in_stmt;
        case J_BAD:
            return false;
        case J_OBJ_OPEN:
        case J_ARR_OPEN:
            w.depth++;
            w.key = K_OTHER;
            break;
        case J_OBJ_CLOSE:
        case J_ARR_CLOSE:
            if (w.depth == 0) {
                return false;
            }
            w.depth--;
            if (w.fn_depth != 0 && w.depth == w.fn_depth) {
                fn_finish(&w);
            }
            if (w.de_depth != 0 && w.depth == w.de_depth) {
                de_finish(&w);
            }
            if (w.depth == 4) {
                w.top_field = 0;
            }
            if (w.depth == 2 && w.in_stmt) {
                stmt_finish(&w, r);
                w.in_stmt = false;
            }
            w.key = K_OTHER;
            break;
        case J_KEY:
            on_key(&w, &j);
            break;
        default:
            on_scalar(&w, t, &j);
            if (w.key == K_IVAL || w.key == K_BOOLVAL) {
                w.st.set_value.is_ival_open = false;
                w.de_val.is_ival_open = false;
            }
            w.key = K_OTHER;
            break;
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Cache                                                                                     */

#define WAYS 4

struct cache_entry {
    uint64_t h1, h2; /* the text's two hash lanes */
    uint64_t gen;    /* function lists' generations, mixed */
    uint32_t len;    /* text length (truncated to 32 bits; the hashes cover all of it) */
    uint32_t stamp;  /* LRU clock at the last use; 0 = empty */
    uint32_t txn;
    int32_t n_statements;
    const char *reason;
    uint8_t parsed_cls;
    uint8_t txn_end;
    bool is_begin_read_only;
    bool is_parse_error;
};

struct router_classifier {
    struct cache_entry *cache; /* n_sets * WAYS entries, NULL when disabled */
    size_t n_sets;             /* power of two */
    uint32_t clock;            /* LRU stamp source; 0 never used */
    char *scratch;             /* NUL-terminated copy of the text for the parser */
    size_t scratch_cap;
    uintptr_t stack_low; /* the owner thread's stack, [stack_low, stack_high); 0 = not known */
    uintptr_t stack_high;
    struct router_classify_stats stats;
};

static inline uint64_t
rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t
fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* Two independent 64-bit lanes over 8-byte words (murmur3-style mixing); ~1 cycle a byte. */
static void
hash128(const char *s, size_t len, uint64_t *o1, uint64_t *o2)
{
    uint64_t h1 = 0x9e3779b97f4a7c15ULL ^ len, h2 = 0xc2b2ae3d27d4eb4fULL ^ (len * 31);
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h1 ^= rotl64(w * c1, 31) * c2;
        h1 = rotl64(h1, 27) * 5 + 0x52dce729;
        h2 ^= rotl64(w * c2, 33) * c1;
        h2 = rotl64(h2, 31) * 5 + 0x38495ab5;
    }
    uint64_t tail = 0;
    memcpy(&tail, s + i, len - i);
    h1 ^= rotl64(tail * c1, 31) * c2;
    h2 ^= rotl64(tail * c2, 33) * c1;
    h1 += h2;
    h2 += h1;
    *o1 = fmix64(h1);
    *o2 = fmix64(h2 ^ 0x6a09e667f3bcc909ULL);
}

enum status
router_classifier_create(size_t cache_entries, struct router_classifier **out)
{
    *out = NULL;
    struct router_classifier *cl = calloc(1, sizeof(*cl));
    if (cl == NULL) {
        return ST_ENOMEM;
    }
    if (cache_entries > 0) {
        size_t sets = 1;
        while (sets * WAYS < cache_entries && sets < ((size_t) 1 << 24)) {
            sets <<= 1;
        }
        cl->cache = calloc(sets * WAYS, sizeof(*cl->cache));
        if (cl->cache == NULL) {
            free(cl);
            return ST_ENOMEM;
        }
        cl->n_sets = sets;
    }
    *out = cl;
    return ST_OK;
}

void
router_classifier_destroy(struct router_classifier *cl)
{
    if (cl == NULL) {
        return;
    }
    free(cl->cache);
    free(cl->scratch);
    free(cl);
}

void
router_classifier_stats(const struct router_classifier *cl, struct router_classify_stats *out)
{
    if (cl == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = cl->stats;
}

static uint64_t
fns_generation(const struct router_functions *fns)
{
    if (fns == NULL) {
        return 0;
    }
    return fmix64(fns->primary_generation * 0x9e3779b97f4a7c15ULL + 1) ^ fns->volatile_generation;
}

static struct cache_entry *
cache_lookup(struct router_classifier *cl, uint64_t h1, uint64_t h2, uint64_t gen, size_t len)
{
    struct cache_entry *set = cl->cache + (h1 & (cl->n_sets - 1)) * WAYS;
    for (int i = 0; i < WAYS; i++) {
        struct cache_entry *e = &set[i];
        if (e->stamp != 0 && e->h1 == h1 && e->h2 == h2 && e->gen == gen &&
            e->len == (uint32_t) len) {
            return e;
        }
    }
    return NULL;
}

static uint32_t
tick(struct router_classifier *cl)
{
    if (++cl->clock == 0) {
        /* wrapped after 2^32 uses: age everything to "long ago" but keep it */
        for (size_t i = 0; i < cl->n_sets * WAYS; i++) {
            if (cl->cache[i].stamp != 0) {
                cl->cache[i].stamp = 1;
            }
        }
        cl->clock = 2;
    }
    return cl->clock;
}

static void
cache_store(struct router_classifier *cl, uint64_t h1, uint64_t h2, uint64_t gen, size_t len,
            const struct router_classification *res)
{
    struct cache_entry *set = cl->cache + (h1 & (cl->n_sets - 1)) * WAYS;
    struct cache_entry *victim = &set[0];
    for (int i = 0; i < WAYS; i++) {
        if (set[i].stamp == 0) {
            victim = &set[i];
            break;
        }
        if (set[i].stamp < victim->stamp) {
            victim = &set[i];
        }
    }
    victim->h1 = h1;
    victim->h2 = h2;
    victim->gen = gen;
    victim->len = (uint32_t) len;
    victim->stamp = tick(cl);
    victim->txn = res->txn;
    victim->n_statements = res->n_statements;
    victim->reason = res->reason;
    victim->parsed_cls = (uint8_t) res->parsed_cls;
    victim->txn_end = (uint8_t) res->txn_end;
    victim->is_begin_read_only = res->is_begin_read_only;
    victim->is_parse_error = res->is_parse_error;
}

/* ---------------------------------------------------------------------------------------- */
/* Entry point                                                                               */

/*
 * Stack depth. libpg_query turns the parse tree into JSON (or protobuf) by recursion over the
 * tree, without PostgreSQL's stack-depth check, and a left-deep chain ("a+a+a...", UNION after
 * UNION, JOIN after JOIN) has no depth limit in the grammar: a long enough text overflows any
 * thread stack and would take the whole proxy down. So before parsing, the text's tokens that
 * can add a tree level are counted (everything but strings, numbers, parameters, ',', ')', '.'
 * and ';') and the text is parsed only when that many levels fit in the stack left. Measured
 * with libpg_query 15-4.0.0, the worst construct ("(SELECT " nesting) needs under 350 bytes of
 * stack per counted token; left-deep chains 65 to 130 per level of two tokens.
 */
#define STACK_PER_TOKEN 512
#define STACK_MARGIN    (128 * 1024) /* pg_query_parse's own frames, error handling */

static size_t
depth_tokens(const char *sql, size_t len)
{
    struct router_lexer lx = { .s = sql, .len = len };
    struct router_tok t;
    size_t n = 0;
    while (router_lex_next(&lx, &t)) {
        if (t.kind == ROUTER_TOK_STRING ||
            (t.kind == ROUTER_TOK_PUNCT && t.p[0] != '(' && t.p[0] != '=') ||
            (t.kind == ROUTER_TOK_OTHER && ((t.p[0] >= '0' && t.p[0] <= '9') || t.p[0] == '$'))) {
            continue;
        }
        n++;
    }
    return n;
}

/* The calling thread's stack, [*low, *high); false when it cannot be found. */
static bool
thread_stack(uintptr_t *low, uintptr_t *high)
{
    pthread_attr_t attr;
    void *addr = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) {
        return false;
    }
    int rc = pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_destroy(&attr);
    if (rc != 0 || addr == NULL) {
        return false;
    }
    *low = (uintptr_t) addr;
    *high = (uintptr_t) addr + size;
    return true;
}

/* Whether a text with n depth tokens can be parsed on this stack. Without a classifier the
 * stack is looked up each time (tests); pthread_getattr_np reads /proc on the main thread. */
static bool
stack_fits(struct router_classifier *cl, size_t n)
{
    /* the frame address, not a local's: under ASan's use-after-return checking locals may
     * live on a heap-allocated fake stack */
    uintptr_t here = (uintptr_t) __builtin_frame_address(0);
    uintptr_t low = 0, high = 0;
    if (cl != NULL && cl->stack_low != 0) {
        low = cl->stack_low;
        high = cl->stack_high;
    } else if (thread_stack(&low, &high) && cl != NULL) {
        cl->stack_low = low;
        cl->stack_high = high;
    }
    /* unknown stack, or running elsewhere (a signal stack): assume a small one */
    size_t room = 256 * 1024;
    if (here > low && here < high) {
        room = (size_t) (here - low);
    }
    return room > STACK_MARGIN && n <= (room - STACK_MARGIN) / STACK_PER_TOKEN;
}

static enum status
parse_text(struct router_classifier *cl, const char *sql, size_t len,
           const struct router_functions *fns, struct router_classification *out)
{
    result_init(out, ROUTER_CLASS_WRITE, "unparsable");
    out->path = ROUTER_PATH_PARSER;
    out->n_statements = 0;
    if (!stack_fits(cl, depth_tokens(sql, len))) {
        out->reason = "too complex to classify";
        return ST_OK;
    }
    char local[1024];
    char *buf = local;
    if (len + 1 > sizeof(local)) {
        if (cl != NULL && cl->scratch_cap >= len + 1) {
            buf = cl->scratch;
        } else {
            buf = malloc(len + 1);
            if (buf == NULL) {
                out->reason = "out of memory";
                return ST_ENOMEM;
            }
            if (cl != NULL) {
                free(cl->scratch);
                cl->scratch = buf;
                cl->scratch_cap = len + 1;
            }
        }
    }
    memcpy(buf, sql, len);
    buf[len] = '\0';
    PgQueryParseResult pr = pg_query_parse(buf);
    if (cl == NULL && buf != local) {
        free(buf);
    }
    if (pr.error != NULL) {
        out->is_parse_error = true;
        out->reason = "parse error";
    } else if (pr.parse_tree == NULL) {
        out->reason = "parser returned nothing";
    } else {
        struct text_result r;
        memset(&r, 0, sizeof(r));
        r.reason = "empty query";
        if (!walk_tree(pr.parse_tree, fns, &r)) {
            out->reason = "unexpected parse tree";
        } else {
            close_own_txn(&r);
            out->cls = r.is_write ? ROUTER_CLASS_WRITE : ROUTER_CLASS_READ;
            out->parsed_cls = out->cls;
            out->reason = r.reason;
            out->txn = r.txn;
            out->txn_end = r.txn_end;
            out->is_begin_read_only =
                r.is_begin_read_only && !r.first_begin_serializable && (r.txn & ROUTER_TXN_BEGIN);
            out->n_statements = r.n_statements;
        }
    }
    pg_query_free_parse_result(pr);
    return ST_OK;
}

enum status
router_classify(struct router_classifier *cl, const char *sql, size_t len,
                const struct router_functions *fns, struct router_classification *out)
{
    enum status st = ST_OK;
    /* the wire's terminating NUL is not part of the text */
    while (len > 0 && sql[len - 1] == '\0') {
        len--;
    }
    enum router_hint hint = find_hint(sql, len);
    if (memchr(sql, '\0', len) != NULL) {
        /* the server stops at the first NUL; the parser would too and see less than is sent */
        result_init(out, ROUTER_CLASS_WRITE, "nul byte in the text");
    } else if (fast_path(sql, len, out)) {
        if (cl != NULL) {
            cl->stats.fast++;
        }
    } else if (cl != NULL && cl->cache != NULL) {
        uint64_t h1, h2, gen = fns_generation(fns);
        hash128(sql, len, &h1, &h2);
        struct cache_entry *e = cache_lookup(cl, h1, h2, gen, len);
        if (e != NULL) {
            e->stamp = tick(cl);
            cl->stats.cache_hits++;
            out->parsed_cls = (enum router_class) e->parsed_cls;
            out->cls = out->parsed_cls;
            out->path = ROUTER_PATH_CACHE;
            out->txn = e->txn;
            out->txn_end = (enum router_txn_end) e->txn_end;
            out->is_begin_read_only = e->is_begin_read_only;
            out->is_parse_error = e->is_parse_error;
            out->n_statements = e->n_statements;
            out->reason = e->reason;
        } else {
            cl->stats.parsed++;
            st = parse_text(cl, sql, len, fns, out);
            if (st == ST_OK) {
                cache_store(cl, h1, h2, gen, len, out);
            }
        }
    } else {
        if (cl != NULL) {
            cl->stats.parsed++;
        }
        st = parse_text(cl, sql, len, fns, out);
    }
    out->hint = hint;
    if (hint == ROUTER_HINT_PRIMARY) {
        out->cls = ROUTER_CLASS_WRITE;
        out->reason = "hint: primary";
    } else if (hint == ROUTER_HINT_REPLICA) {
        out->cls = ROUTER_CLASS_READ;
        out->reason = "hint: replica";
    }
    return st;
}
