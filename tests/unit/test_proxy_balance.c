/*
 * test_proxy_balance.c - proxy/balance.c: the active worker count grows by doubling when the
 * active workers are busy, shrinks one at a time when the load fits fewer with room to spare,
 * never flaps at a steady load, and the hand-over count evens two workers out; the spare CPU
 * (idle time, capped by the quota less the process's own use) and the spread's hysteresis.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/balance.h"

static void
test_one_worker_stays_one(void **state)
{
    (void) state;
    uint32_t l[1] = { 1000 };
    assert_int_equal(balance_active(l, 1, 1, 700, 700), 1);
}

static void
test_grows_by_doubling(void **state)
{
    (void) state;
    uint32_t l[8] = { 950, 0, 0, 0, 0, 0, 0, 0 };
    assert_int_equal(balance_active(l, 8, 1, 700, 700), 2);
    uint32_t l2[8] = { 800, 720, 0, 0, 0, 0, 0, 0 };
    assert_int_equal(balance_active(l2, 8, 2, 700, 700), 4);
    uint32_t l4[8] = { 800, 720, 700, 690, 0, 0, 0, 0 };
    assert_int_equal(balance_active(l4, 8, 4, 700, 700), 8);
    assert_int_equal(balance_active(l4, 6, 4, 700, 700), 6); /* capped at the workers there are */
    uint32_t l8[8] = { 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000 };
    assert_int_equal(balance_active(l8, 8, 8, 700, 700), 8);
}

static void
test_one_busy_worker_among_idle_ones_does_not_grow(void **state)
{
    (void) state;
    /* The average decides: one hot worker is the hand-over's business, not a new worker's. */
    uint32_t l[4] = { 900, 100, 0, 0 };
    assert_int_equal(balance_active(l, 4, 2, 700, 700), 2);
}

static void
test_shrinks_one_at_a_time(void **state)
{
    (void) state;
    uint32_t l[4] = { 100, 90, 80, 0 };
    assert_int_equal(balance_active(l, 4, 3, 700, 700), 2);
    uint32_t l2[4] = { 200, 200, 0, 0 };
    assert_int_equal(balance_active(l2, 4, 2, 700, 700), 1);
    uint32_t idle[4] = { 0, 0, 0, 0 };
    assert_int_equal(balance_active(idle, 4, 4, 700, 700), 3);
    assert_int_equal(balance_active(idle, 4, 1, 700, 700), 1);
}

static void
test_no_flapping_at_a_steady_load(void **state)
{
    (void) state;
    /* A total load of L permille spread evenly over the active workers: whatever count the
     * decisions reach, the next decision at the same load keeps it. */
    for (uint32_t total = 0; total <= 4000; total += 25) {
        int n = 1;
        for (int step = 0; step < 20; step++) {
            uint32_t l[8] = { 0 };
            for (int i = 0; i < n; i++) {
                uint32_t each = total / (uint32_t) n;
                l[i] = each > 1000 ? 1000 : each;
            }
            n = balance_active(l, 8, n, 700, 700);
        }
        uint32_t l[8] = { 0 };
        for (int i = 0; i < n; i++) {
            uint32_t each = total / (uint32_t) n;
            l[i] = each > 1000 ? 1000 : each;
        }
        assert_int_equal(balance_active(l, 8, n, 700, 700), n);
        /* and enough workers that none is busy, unless all eight are */
        assert_true(n == 8 || total / (uint32_t) n < 700);
    }
}

static void
test_give_evens_out(void **state)
{
    (void) state;
    assert_int_equal(balance_give(800, 200, 100, 700), 37); /* 100 * 600 / 1600 */
    assert_int_equal(balance_give(800, 0, 10, 700), 5);
    assert_int_equal(balance_give(1000, 800, 3, 700), 1); /* at least one */
}

static void
test_give_nothing_when_close_or_light(void **state)
{
    (void) state;
    assert_int_equal(balance_give(800, 700, 100, 700), 0); /* gap under 150 */
    assert_int_equal(balance_give(300, 0, 100, 700), 0);   /* under half busy */
    assert_int_equal(balance_give(900, 0, 0, 700), 0);     /* nothing to give */
}

static void
test_spread_thresholds(void **state)
{
    (void) state;
    /* 8 workers at 320 each: busy at 700 would gather them, spreading (350) keeps them */
    uint32_t l[8] = { 320, 320, 320, 320, 320, 320, 320, 320 };
    assert_int_equal(balance_active(l, 8, 8, 700, 700), 7);
    assert_int_equal(balance_active(l, 8, 8, 350, 350), 8);
    /* 4 workers at 550: grow only with the spread's threshold */
    uint32_t l4[8] = { 550, 550, 550, 550, 0, 0, 0, 0 };
    assert_int_equal(balance_active(l4, 8, 4, 700, 700), 4);
    assert_int_equal(balance_active(l4, 8, 4, 350, 350), 8);
    /* no CPU spare this tick (grow at 700) while still spreading (shrink at 350): stays */
    assert_int_equal(balance_active(l, 8, 8, 700, 350), 8);
    assert_int_equal(balance_active(l4, 8, 4, 700, 350), 4);
}

static void
test_spare(void **state)
{
    (void) state;
    /* 16 CPUs, a quarter idle: 4 CPUs */
    assert_int_equal(balance_spare_pm(100, 400, 16, 16000, 2500), 4000);
    /* a quota of 2 CPUs, 1.5 of them used: 0.5 left, however idle the machine is */
    assert_int_equal(balance_spare_pm(100, 400, 16, 2000, 1500), 500);
    assert_int_equal(balance_spare_pm(100, 400, 16, 2000, 2600), 0);
    /* a quota of 1.5 CPUs, nothing used: the machine's idle time decides */
    assert_int_equal(balance_spare_pm(10, 400, 16, 1500, 0), 400);
    /* nothing measured */
    assert_int_equal(balance_spare_pm(0, 0, 16, 16000, 0), 0);
    assert_int_equal(balance_spare_pm(5, 10, 0, 16000, 0), 0);
    assert_int_equal(balance_spare_pm(5, 10, 4, 0, 0), 0);
}

static void
test_spread_hysteresis(void **state)
{
    (void) state;
    struct balance_spread s = { 0 };
    /* one spare tick is noise; BALANCE_SPREAD_ON_TICKS in a row turn it on */
    assert_false(balance_spread_step(&s, 1500));
    assert_false(balance_spread_step(&s, 100));
    for (int i = 1; i < BALANCE_SPREAD_ON_TICKS; i++) {
        assert_false(balance_spread_step(&s, 1000));
    }
    assert_true(balance_spread_step(&s, 1000));
    /* between the thresholds it holds, however long */
    for (int i = 0; i < 50; i++) {
        assert_true(balance_spread_step(&s, 700));
    }
    /* below BALANCE_SPARE_OFF_PM it ends only after BALANCE_SPREAD_OFF_TICKS in a row */
    for (int i = 1; i < BALANCE_SPREAD_OFF_TICKS; i++) {
        assert_true(balance_spread_step(&s, 100));
    }
    assert_true(balance_spread_step(&s, 600)); /* an interruption starts the count again */
    for (int i = 1; i < BALANCE_SPREAD_OFF_TICKS; i++) {
        assert_true(balance_spread_step(&s, 499));
    }
    assert_false(balance_spread_step(&s, 499));
    assert_false(balance_spread_step(&s, 999));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_worker_stays_one),
        cmocka_unit_test(test_grows_by_doubling),
        cmocka_unit_test(test_one_busy_worker_among_idle_ones_does_not_grow),
        cmocka_unit_test(test_shrinks_one_at_a_time),
        cmocka_unit_test(test_no_flapping_at_a_steady_load),
        cmocka_unit_test(test_give_evens_out),
        cmocka_unit_test(test_give_nothing_when_close_or_light),
        cmocka_unit_test(test_spread_thresholds),
        cmocka_unit_test(test_spare),
        cmocka_unit_test(test_spread_hysteresis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
