/*
 * test_proxy_stats.c - statistics counters: histogram buckets at their bounds, SQLSTATE
 * classes, per-worker pool blocks summed over workers, gauges, and log_value's escaping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"
#include "proxy/stats.h"

static void
test_hist_bounds(void **state)
{
    (void) state;
    struct stats_worker *sw = stats_worker_new();
    assert_non_null(sw);
    struct stats_pool *sp = stats_pool_get(sw, 1);
    assert_non_null(sp);
    /* le is inclusive: 100 us goes to the first bucket, 101 us to the second. */
    stats_hist_observe(&sp->query_latency, 100);
    stats_hist_observe(&sp->query_latency, 101);
    stats_hist_observe(&sp->query_latency, -5);       /* clock step: counts as 0 */
    stats_hist_observe(&sp->query_latency, 10000000); /* 10 s: last finite bucket */
    stats_hist_observe(&sp->query_latency, 10000001); /* +Inf */
    struct stats_pool_sum s;
    stats_pool_sum(&sw, 1, 1, &s);
    assert_int_equal(s.query_latency.bucket[0], 2);
    assert_int_equal(s.query_latency.bucket[1], 1);
    assert_int_equal(s.query_latency.bucket[STATS_HIST_FINITE - 1], 1);
    assert_int_equal(s.query_latency.bucket[STATS_HIST_FINITE], 1);
    assert_int_equal(s.query_latency.count, 5);
    assert_int_equal(s.query_latency.sum_us, 100 + 101 + 0 + 10000000 + 10000001);
    stats_worker_free(sw);
}

static void
test_bounds_increase(void **state)
{
    (void) state;
    for (int i = 1; i < STATS_HIST_FINITE; i++) {
        assert_true(stats_hist_bounds_us[i] > stats_hist_bounds_us[i - 1]);
    }
}

static void
test_sqlstate_class(void **state)
{
    (void) state;
    assert_string_equal(stats_sqlstate_class_name(stats_sqlstate_class("42P01")), "42");
    assert_string_equal(stats_sqlstate_class_name(stats_sqlstate_class("22012")), "22");
    assert_string_equal(stats_sqlstate_class_name(stats_sqlstate_class("XX000")), "XX");
    assert_string_equal(stats_sqlstate_class_name(stats_sqlstate_class("0A000")), "0A");
    assert_string_equal(stats_sqlstate_class_name(stats_sqlstate_class("P0001")), "P0");
    assert_int_equal(stats_sqlstate_class("ZZ999"), STATS_SQLSTATE_OTHER);
    assert_int_equal(stats_sqlstate_class(NULL), STATS_SQLSTATE_OTHER);
    assert_int_equal(stats_sqlstate_class("4"), STATS_SQLSTATE_OTHER);
    assert_string_equal(stats_sqlstate_class_name(STATS_SQLSTATE_OTHER), "other");
}

static void
test_sum_over_workers(void **state)
{
    (void) state;
    struct stats_worker *ws[3] = { stats_worker_new(), stats_worker_new(), NULL };
    assert_non_null(ws[0]);
    assert_non_null(ws[1]);
    struct stats_pool *a = stats_pool_get(ws[0], 7);
    struct stats_pool *b = stats_pool_get(ws[1], 7);
    assert_ptr_equal(stats_pool_get(ws[0], 7), a); /* allocated once */
    assert_ptr_not_equal(a, b);
    assert_int_equal((uintptr_t) a % STATS_CACHE_LINE, 0);
    stats_add(&a->xact_count, 3);
    stats_add(&b->xact_count, 4);
    stats_add(&a->bytes_in, 1000);
    stats_add(&b->errors[STATS_ERR_SERVER][stats_sqlstate_class("22012")], 1);
    stats_gauge_add(&a->cl_active, 2);
    stats_gauge_add(&a->cl_active, -1);
    stats_gauge_add(&b->cl_waiting, 1);
    stats_add(&ws[1]->nodes[2].routed[STATS_ROUTE_REPLICA], 5);
    stats_add(&ws[0]->g.logins_ok, 1);
    stats_add(&ws[1]->g.logins_ok, 1);

    struct stats_pool_sum s;
    stats_pool_sum(ws, 3, 7, &s);
    assert_int_equal(s.xact_count, 7);
    assert_int_equal(s.bytes_in, 1000);
    assert_int_equal(s.errors[STATS_ERR_SERVER][stats_sqlstate_class("22")], 1);
    assert_int_equal(s.cl_active, 1);
    assert_int_equal(s.cl_waiting, 1);
    stats_pool_sum(ws, 3, 8, &s); /* never touched */
    assert_int_equal(s.xact_count, 0);
    stats_pool_sum(ws, 3, 0, &s); /* out of range */
    assert_int_equal(s.xact_count, 0);

    struct stats_global_sum g;
    stats_global_sum(ws, 3, &g);
    assert_int_equal(g.logins_ok, 2);
    assert_int_equal(g.routed[2][STATS_ROUTE_REPLICA], 5);
    assert_null(stats_pool_get(ws[0], STATS_MAX_POOLS + 1));
    stats_worker_free(ws[0]);
    stats_worker_free(ws[1]);
    stats_worker_free(NULL);
}

static void
test_log_value(void **state)
{
    (void) state;
    char buf[64];
    assert_string_equal(log_value("appdb", buf, sizeof(buf)), "appdb");
    assert_string_equal(log_value("127.0.0.1:5432", buf, sizeof(buf)), "127.0.0.1:5432");
    assert_string_equal(log_value(NULL, buf, sizeof(buf)), "-");
    assert_string_equal(log_value("", buf, sizeof(buf)), "\"\"");
    assert_string_equal(log_value("a b", buf, sizeof(buf)), "\"a b\"");
    assert_string_equal(log_value("x\" user=admin\n", buf, sizeof(buf)),
                        "\"x\\\" user=admin\\x0a\"");
    assert_string_equal(log_value("back\\slash", buf, sizeof(buf)), "\"back\\\\slash\"");
    char small[8];
    assert_string_equal(log_value("a b c d e f", small, sizeof(small)), "\"a b c\"");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_bounds),    cmocka_unit_test(test_bounds_increase),
        cmocka_unit_test(test_sqlstate_class), cmocka_unit_test(test_sum_over_workers),
        cmocka_unit_test(test_log_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
