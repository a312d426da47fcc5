/*
 * classify_bench.c - cost per statement of router_classify (router/classify.h) on each of its
 * paths: texts the lexer settles, texts parsed by libpg_query with no cache, and the same texts
 * found in the cache. Prints the median of several rounds in nanoseconds per statement.
 *
 *   build/release/tests/classify_bench            5 rounds of about 0.3 s per path
 *   build/release/tests/classify_bench --smoke    one short round; checks the paths, exits 1
 *                                                 when a text takes the wrong one
 *
 * Single-threaded; one classifier, as one worker has.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "router/classify.h"

static const char *const fast_texts[] = {
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, "
    "CURRENT_TIMESTAMP)",
    "SELECT id, name, email FROM users WHERE id IN ($1, $2, $3) ORDER BY name LIMIT 20",
    "BEGIN",
    "COMMIT",
    "select o.id, o.total from orders o join customers c on c.id = o.customer_id where c.id = $1 "
    "and o.created_at > $2",
    "DELETE FROM sessions WHERE expires_at < $1",
};

/* typical ORM/reporting texts that need the grammar */
static const char *const parser_texts[] = {
    "SELECT count(*) FROM pgbench_accounts WHERE bid = $1",
    "SELECT u.id, lower(u.email), coalesce(p.nick, u.name) FROM users u LEFT JOIN profiles p ON "
    "p.user_id = u.id WHERE u.id = $1",
    "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') SELECT "
    "customer_id, sum(total) FROM recent GROUP BY customer_id ORDER BY 2 DESC LIMIT 10",
    "SELECT * FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
    "SELECT nextval('orders_id_seq')",
    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    "WITH moved AS (DELETE FROM inbox WHERE id = $1 RETURNING *) INSERT INTO archive SELECT * "
    "FROM moved",
    "SELECT date_trunc('hour', ts) AS h, avg(v) FROM metrics WHERE ts BETWEEN $1 AND $2 GROUP BY "
    "1 ORDER BY 1",
};

static double
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e9 + (double) ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static volatile int sink;

/* ns per statement over texts, repeated until min_ns has passed; checks every path */
static double
round_ns(struct router_classifier *cl, const char *const *texts, size_t n, const size_t *lens,
         enum router_path want, double min_ns, int *bad)
{
    static const char *const volatile_fns[] = { "audit.touch", "touch" };
    struct router_functions fns = { .volatile_fns = volatile_fns, .n_volatile = 2 };
    long count = 0;
    double start = now_ns(), end;
    do {
        for (int rep = 0; rep < 64; rep++) {
            for (size_t i = 0; i < n; i++) {
                struct router_classification out;
                if (router_classify(cl, texts[i], lens[i], &fns, &out) != ST_OK ||
                    out.path != want) {
                    (*bad)++;
                }
                sink += (int) out.cls;
            }
        }
        count += 64 * (long) n;
        end = now_ns();
    } while (end - start < min_ns);
    return (end - start) / (double) count;
}

int
main(int argc, char **argv)
{
    bool smoke = argc > 1 && strcmp(argv[1], "--smoke") == 0;
    int rounds = smoke ? 1 : 5;
    double min_ns = smoke ? 50e6 : 300e6;
    size_t nf = sizeof(fast_texts) / sizeof(fast_texts[0]);
    size_t np = sizeof(parser_texts) / sizeof(parser_texts[0]);
    size_t fl[16], pl[16];
    for (size_t i = 0; i < nf; i++) {
        fl[i] = strlen(fast_texts[i]);
    }
    for (size_t i = 0; i < np; i++) {
        pl[i] = strlen(parser_texts[i]);
    }
    struct router_classifier *nocache, *cached;
    if (router_classifier_create(0, &nocache) != ST_OK ||
        router_classifier_create(ROUTER_CLASSIFY_CACHE_DEFAULT, &cached) != ST_OK) {
        fprintf(stderr, "classify_bench: out of memory\n");
        return 1;
    }
    int bad = 0;
    /* warm the cache */
    (void) round_ns(cached, parser_texts, np, pl, ROUTER_PATH_PARSER, 0, &bad);
    bad = 0;
    double r_fast[8], r_parse[8], r_hit[8];
    for (int r = 0; r < rounds; r++) {
        r_fast[r] = round_ns(cached, fast_texts, nf, fl, ROUTER_PATH_FAST, min_ns, &bad);
        r_parse[r] = round_ns(nocache, parser_texts, np, pl, ROUTER_PATH_PARSER, min_ns, &bad);
        r_hit[r] = round_ns(cached, parser_texts, np, pl, ROUTER_PATH_CACHE, min_ns, &bad);
    }
    qsort(r_fast, (size_t) rounds, sizeof(double), cmp_double);
    qsort(r_parse, (size_t) rounds, sizeof(double), cmp_double);
    qsort(r_hit, (size_t) rounds, sizeof(double), cmp_double);
    printf("classification cost per statement (median of %d rounds, %zu + %zu texts):\n", rounds,
           nf, np);
    printf("  fast path (lexer)        %9.0f ns\n", r_fast[rounds / 2]);
    printf("  parser, uncached         %9.0f ns\n", r_parse[rounds / 2]);
    printf("  parser result, cached    %9.0f ns\n", r_hit[rounds / 2]);
    router_classifier_destroy(nocache);
    router_classifier_destroy(cached);
    if (bad != 0) {
        fprintf(stderr, "classify_bench: %d classifications took an unexpected path\n", bad);
        return 1;
    }
    return 0;
}
