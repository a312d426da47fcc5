/*
 * test_router_route.c - the routing decision: which transactions need the primary, and how
 * reads are spread over usable replicas (health, lag limits, read-your-writes, weights, each
 * balance policy).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "router/route.h"

static const struct router_session split = { .is_split = true };

static enum router_target
txn(const struct router_session *s, struct router_stmt st)
{
    return router_route_txn(s, &st).target;
}

static void
test_route_txn(void **state)
{
    (void) state;
    struct router_stmt read = { .is_known = true, .is_read = true };
    struct router_stmt write = { .is_known = true };
    assert_int_equal(txn(&split, read), ROUTER_REPLICA);
    assert_int_equal(txn(&split, write), ROUTER_PRIMARY);
    /* unknown text: the primary */
    assert_int_equal(txn(&split, (struct router_stmt){ 0 }), ROUTER_PRIMARY);
    /* explicit transactions */
    assert_int_equal(txn(&split, (struct router_stmt){ .is_known = true, .is_begin = true }),
                     ROUTER_PRIMARY);
    assert_int_equal(
        txn(&split, (struct router_stmt){ .is_known = true, .is_begin = true, .is_read = true }),
        ROUTER_PRIMARY);
    assert_int_equal(
        txn(&split,
            (struct router_stmt){ .is_known = true, .is_begin = true, .is_read_only = true }),
        ROUTER_REPLICA);
    /* hints override the class, but never pinning state */
    struct router_stmt hinted = write;
    hinted.is_hint_replica = true;
    assert_int_equal(txn(&split, hinted), ROUTER_REPLICA);
    hinted = read;
    hinted.is_hint_primary = true;
    assert_int_equal(txn(&split, hinted), ROUTER_PRIMARY);
    hinted = read;
    hinted.is_hint_replica = true;
    hinted.is_pinning = true;
    assert_int_equal(txn(&split, hinted), ROUTER_PRIMARY);
    /* read_write_split = off, pinned sessions, the write window */
    struct router_session s = split;
    s.is_split = false;
    assert_int_equal(txn(&s, read), ROUTER_PRIMARY);
    s = split;
    s.is_pinned = true;
    assert_int_equal(txn(&s, read), ROUTER_PRIMARY);
    s = split;
    s.is_write_window = true;
    assert_int_equal(txn(&s, read), ROUTER_PRIMARY);
    assert_string_equal(router_route_txn(&s, &read).reason, "read-your-writes window");
    /* a read-only session reads on replicas whatever it sends */
    s = split;
    s.is_read_only_hint = true;
    assert_int_equal(txn(&s, write), ROUTER_REPLICA);
}

static void
test_route_session(void **state)
{
    (void) state;
    struct router_session s = split;
    s.is_session_pooled = true;
    assert_int_equal(router_route_session(&s).target, ROUTER_PRIMARY);
    s.is_read_only_hint = true;
    assert_int_equal(router_route_session(&s).target, ROUTER_REPLICA);
    s.is_split = false;
    assert_int_equal(router_route_session(&s).target, ROUTER_PRIMARY);
}

/* node 0 primary, 1..3 replicas (weight 1), all usable, all caught up */
static void
make_nodes(struct router_node *n)
{
    for (int i = 0; i < 4; i++) {
        n[i] = (struct router_node){ .idx = i,
                                     .is_primary = i == 0,
                                     .is_replica = i != 0,
                                     .is_usable = true,
                                     .weight = 1,
                                     .lsn = 1000 };
    }
}

static int
pick(struct router_balancer *b, const struct router_limits *lim, struct router_node *n,
     uint64_t min_lsn, uint64_t key)
{
    return router_pick_read(b, lim, n, 4, 0, min_lsn, key, NULL);
}

static void
test_pick_eligibility(void **state)
{
    (void) state;
    struct router_balancer b = { .rng = 42 };
    struct router_limits lim = { .balance = ROUTER_BALANCE_ROUND_ROBIN };
    struct router_node n[4];
    make_nodes(n);
    n[1].is_usable = false; /* failing its checks */
    n[2].lag_bytes = 5000;  /* lagging */
    lim.max_lag_bytes = 4096;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(pick(&b, &lim, n, 0, 0), 3);
    }
    n[3].lag_ms = 2000;
    lim.max_lag_ms = 1000;
    const char *why = NULL;
    assert_int_equal(router_pick_read(&b, &lim, n, 4, 0, 0, 0, &why), 0);
    assert_string_equal(why, "no usable replica");
    /* no limit: lag does not matter */
    lim.max_lag_ms = 0;
    lim.max_lag_bytes = 0;
    assert_int_not_equal(pick(&b, &lim, n, 0, 0), 0);
    /* read-your-writes: only replicas that replayed past the client's commit */
    make_nodes(n);
    n[2].lsn = 2000;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(pick(&b, &lim, n, 1500, 0), 2);
    }
    assert_int_equal(router_pick_read(&b, &lim, n, 4, 0, 2500, 0, &why), 0);
    assert_string_equal(why, "no replica has replayed the client's last write");
    /* weight 0: no reads */
    make_nodes(n);
    n[1].weight = n[2].weight = n[3].weight = 0;
    assert_int_equal(pick(&b, &lim, n, 0, 0), 0);
    /* no primary and no replica */
    n[1].weight = 1;
    n[1].is_usable = false;
    assert_int_equal(router_pick_read(&b, &lim, n, 4, -1, 0, 0, NULL), -1);
}

static void
count_picks(struct router_limits *lim, struct router_node *n, int rounds, int *hits)
{
    struct router_balancer b = { .rng = 7 };
    memset(hits, 0, 4 * sizeof(int));
    for (int i = 0; i < rounds; i++) {
        hits[pick(&b, lim, n, 0, (uint64_t) i * 2654435761u)]++;
    }
}

static void
test_pick_round_robin(void **state)
{
    (void) state;
    struct router_limits lim = { .balance = ROUTER_BALANCE_ROUND_ROBIN, .primary_reads_weight = 1 };
    struct router_node n[4];
    make_nodes(n);
    n[1].weight = 2;
    int hits[4];
    count_picks(&lim, n, 500, hits);
    /* weights primary 1, replicas 2, 1, 1: exactly proportional over whole cycles */
    assert_int_equal(hits[0], 100);
    assert_int_equal(hits[1], 200);
    assert_int_equal(hits[2], 100);
    assert_int_equal(hits[3], 100);
    /* smooth: weights 5, 1, 1 give a a b a c a a (nginx's example), not a burst of five */
    struct router_balancer b = { 0 };
    lim.primary_reads_weight = 0;
    n[1].weight = 5;
    static const int want[] = { 1, 1, 2, 1, 3, 1, 1, 1, 1, 2, 1, 3, 1, 1 };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(pick(&b, &lim, n, 0, 0), want[i]);
    }
}

static void
test_pick_random(void **state)
{
    (void) state;
    struct router_limits lim = { .balance = ROUTER_BALANCE_RANDOM };
    struct router_node n[4];
    make_nodes(n);
    n[3].weight = 2;
    int hits[4];
    count_picks(&lim, n, 4000, hits);
    assert_int_equal(hits[0], 0); /* primary_reads_weight 0 */
    assert_in_range(hits[1], 800, 1200);
    assert_in_range(hits[2], 800, 1200);
    assert_in_range(hits[3], 1800, 2200);
}

static void
test_pick_least_conn(void **state)
{
    (void) state;
    struct router_balancer b = { 0 };
    struct router_limits lim = { .balance = ROUTER_BALANCE_LEAST_CONN };
    struct router_node n[4];
    make_nodes(n);
    n[1].active = 5;
    n[2].active = 2;
    n[3].active = 3;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pick(&b, &lim, n, 0, 0), 2);
    }
    /* per unit of weight: 3 in flight on weight 2 beats 2 on weight 1 */
    n[3].weight = 2;
    assert_int_equal(pick(&b, &lim, n, 0, 0), 3);
    /* all idle: ties rotate, so sequential work is spread */
    make_nodes(n);
    int hits[4] = { 0 };
    for (int i = 0; i < 30; i++) {
        hits[pick(&b, &lim, n, 0, 0)]++;
    }
    assert_int_equal(hits[0], 0);
    assert_int_equal(hits[1], 10);
    assert_int_equal(hits[2], 10);
    assert_int_equal(hits[3], 10);
}

static void
test_pick_hash(void **state)
{
    (void) state;
    struct router_balancer b = { 0 };
    struct router_limits lim = { .balance = ROUTER_BALANCE_HASH };
    struct router_node n[4];
    make_nodes(n);
    int hits[4];
    count_picks(&lim, n, 3000, hits);
    assert_in_range(hits[1], 800, 1200);
    assert_in_range(hits[2], 800, 1200);
    assert_in_range(hits[3], 800, 1200);
    /* the same key always lands on the same node; when a node leaves, only its keys move */
    int moved = 0, stayed = 0;
    for (uint64_t k = 1; k < 2000; k++) {
        uint64_t key = router_hash(ROUTER_HASH_INIT, &k, sizeof k);
        int first = pick(&b, &lim, n, 0, key);
        assert_int_equal(pick(&b, &lim, n, 0, key), first);
        n[2].is_usable = false;
        int second = pick(&b, &lim, n, 0, key);
        n[2].is_usable = true;
        if (first != 2) {
            assert_int_equal(second, first);
            stayed++;
        } else {
            assert_int_not_equal(second, 2);
            moved++;
        }
    }
    assert_true(moved > 400 && stayed > 900);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_txn),        cmocka_unit_test(test_route_session),
        cmocka_unit_test(test_pick_eligibility), cmocka_unit_test(test_pick_round_robin),
        cmocka_unit_test(test_pick_random),      cmocka_unit_test(test_pick_least_conn),
        cmocka_unit_test(test_pick_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
