/*
 * fuzz_classify.c - libFuzzer target for the statement classifier router_classify
 * (router/classify.h): the lexer's fast path, libpg_query and the JSON walk, and the cache.
 *
 * Input layout: one option byte, then the SQL text, handed over in an exact-size heap copy with
 * no NUL terminator. Option bit 0: classify through a classifier with a small cache that lives
 * across inputs (so entries are evicted and hit), else through one without a cache; bit 1: pass
 * function lists (a learned volatile function and a primary_functions entry), else NULL.
 *
 * Beyond crashes it checks: the result uses only known values; a second call gives the same
 * answer (from the cache when there is one); and whenever the lexer settled the text, the parser
 * agrees: the same text followed by "\n;SELECT 1" (which only the parser takes) must give the
 * same class unless the parser refuses the text (the lexer does not check syntax).
 *
 * Seeds: tests/fuzz/corpus/classify/. Single-threaded.
 */
#include "tests/fuzz/fuzz_common.h"

#include "router/classify.h"

#define KNOWN_TXN ((ROUTER_TXN_SERIALIZABLE << 1) - 1)

static struct router_classifier *cached, *uncached;

static const char *const volatile_fns[] = { "audit.touch", "touch" };
static const char *const primary_fns[] = { "app.bump", "bump" };
static const struct router_functions fns = {
    .primary = primary_fns,
    .n_primary = 2,
    .volatile_fns = volatile_fns,
    .n_volatile = 2,
    .primary_generation = 7,
    .volatile_generation = 3,
};

static void
check_result(const struct router_classification *c, size_t len)
{
    FUZZ_CHECK(c->cls == ROUTER_CLASS_READ || c->cls == ROUTER_CLASS_WRITE);
    FUZZ_CHECK(c->parsed_cls == ROUTER_CLASS_READ || c->parsed_cls == ROUTER_CLASS_WRITE);
    FUZZ_CHECK(c->hint >= ROUTER_HINT_NONE && c->hint <= ROUTER_HINT_REPLICA);
    FUZZ_CHECK(c->path >= ROUTER_PATH_FAST && c->path <= ROUTER_PATH_CACHE);
    FUZZ_CHECK((c->txn & ~(uint32_t) KNOWN_TXN) == 0);
    FUZZ_CHECK(c->txn_end >= ROUTER_TXN_END_UNCHANGED && c->txn_end <= ROUTER_TXN_END_CLOSED);
    FUZZ_CHECK(c->n_statements >= 0 && (size_t) c->n_statements <= len);
    FUZZ_CHECK(c->reason != NULL && c->reason[0] != '\0');
    FUZZ_CHECK(!c->is_parse_error || c->parsed_cls == ROUTER_CLASS_WRITE);
    if (c->hint == ROUTER_HINT_NONE) {
        FUZZ_CHECK(c->cls == c->parsed_cls);
    } else {
        FUZZ_CHECK(c->cls ==
                   (c->hint == ROUTER_HINT_PRIMARY ? ROUTER_CLASS_WRITE : ROUTER_CLASS_READ));
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    if (cached == NULL && (router_classifier_create(16, &cached) != ST_OK ||
                           router_classifier_create(0, &uncached) != ST_OK)) {
        abort();
    }
    struct router_classifier *cl = (data[0] & 1) ? cached : uncached;
    const struct router_functions *f = (data[0] & 2) ? &fns : NULL;
    size_t len = size - 1;
    char *sql = (char *) fuzz_dup(data + 1, len);

    struct router_classification a, b;
    memset(&a, 0x5a, sizeof(a));
    FUZZ_CHECK(router_classify(cl, sql, len, f, &a) == ST_OK);
    check_result(&a, len);
    memset(&b, 0x5a, sizeof(b));
    FUZZ_CHECK(router_classify(cl, sql, len, f, &b) == ST_OK);
    check_result(&b, len);
    FUZZ_CHECK(a.parsed_cls == b.parsed_cls && a.txn == b.txn && a.txn_end == b.txn_end &&
               a.is_begin_read_only == b.is_begin_read_only && a.n_statements == b.n_statements);
    if (cl == cached && a.path == ROUTER_PATH_PARSER) {
        FUZZ_CHECK(b.path == ROUTER_PATH_CACHE);
    }

    if (a.path == ROUTER_PATH_FAST && a.n_statements > 0 && memchr(sql, '\0', len) == NULL) {
        static const char tail[] = "\n;SELECT 1";
        char *two = malloc(len + sizeof(tail) - 1);
        FUZZ_CHECK(two != NULL);
        memcpy(two, sql, len);
        memcpy(two + len, tail, sizeof(tail) - 1);
        struct router_classification p;
        FUZZ_CHECK(router_classify(uncached, two, len + sizeof(tail) - 1, f, &p) == ST_OK);
        FUZZ_CHECK(p.path == ROUTER_PATH_PARSER);
        if (!p.is_parse_error) {
            if (p.parsed_cls != a.parsed_cls) {
                fprintf(stderr, "lexer says %s, parser %s (%s)\n",
                        a.parsed_cls == ROUTER_CLASS_READ ? "read" : "write",
                        p.parsed_cls == ROUTER_CLASS_READ ? "read" : "write", p.reason);
            }
            FUZZ_CHECK(p.parsed_cls == a.parsed_cls);
        }
        free(two);
    }
    free(sql);
    return 0;
}
