/*
 * test_proxy_topology.c - proxy/topology.c: publication, reference counting, refresh, deep
 * copies and the sorted volatile-function list. A second thread publishes while the test
 * thread refreshes, so `make check-tsan`-style builds see the real sharing pattern.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/topology.h"

static void
test_publish_get_put(void **state)
{
    (void) state;
    struct topology t;
    topo_init(&t);
    assert_null(topo_get(&t));

    struct topo_snapshot *s1 = topo_snapshot_new();
    assert_non_null(s1);
    assert_int_equal(s1->primary, -1);
    s1->n_nodes = 2;
    s1->primary = 1;
    topo_publish(&t, s1);
    assert_int_equal(s1->generation, 1);
    assert_int_equal(atomic_load(&t.generation), 1);

    struct topo_snapshot *held = topo_get(&t);
    assert_ptr_equal(held, s1);
    assert_int_equal(atomic_load(&s1->refs), 2);

    /* nothing new: refresh keeps what is held */
    assert_ptr_equal(topo_refresh(&t, &held), s1);

    struct topo_snapshot *s2 = topo_snapshot_copy(s1);
    assert_non_null(s2);
    assert_int_equal(s2->primary, 1);
    s2->primary = 0;
    topo_publish(&t, s2);
    assert_int_equal(s2->generation, 2);
    /* s1 survives while held */
    assert_int_equal(atomic_load(&s1->refs), 1);
    assert_ptr_equal(topo_refresh(&t, &held), s2);
    assert_int_equal(held->primary, 0);
    topo_put(held);
    topo_put(NULL);
    topo_fini(&t);
}

static void
test_copy_functions(void **state)
{
    (void) state;
    struct topo_snapshot *s = topo_snapshot_new();
    const char *names[] = { "bump", "public.bump", "s.touch", "touch" };
    s->volatile_functions = calloc(4, sizeof(char *));
    for (int i = 0; i < 4; i++) {
        s->volatile_functions[i] = strdup(names[i]);
    }
    s->n_volatile_functions = 4;
    s->functions_generation = 7;
    struct topo_snapshot *c = topo_snapshot_copy(s);
    topo_put(s);
    assert_int_equal(c->n_volatile_functions, 4);
    assert_int_equal(c->functions_generation, 7);
    for (int i = 0; i < 4; i++) {
        assert_true(topo_has_volatile_function(c, names[i]));
    }
    assert_false(topo_has_volatile_function(c, "now"));
    assert_false(topo_has_volatile_function(c, "a"));
    assert_false(topo_has_volatile_function(c, "zzz"));
    topo_put(c);
}

#define ROUNDS 2000

static void *
publisher(void *arg)
{
    struct topology *t = arg;
    for (int i = 0; i < ROUNDS; i++) {
        struct topo_snapshot *s = topo_snapshot_new();
        s->n_nodes = 1;
        s->primary = 0;
        s->nodes[0].lsn = (uint64_t) i;
        topo_publish(t, s);
    }
    return NULL;
}

static void
test_concurrent_refresh(void **state)
{
    (void) state;
    struct topology t;
    topo_init(&t);
    topo_publish(&t, topo_snapshot_new());
    struct topo_snapshot *held = topo_get(&t);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, publisher, &t), 0);
    uint64_t last_gen = 0, last_lsn = 0;
    while (last_gen < ROUNDS + 1) {
        const struct topo_snapshot *s = topo_refresh(&t, &held);
        /* snapshots only move forward and are never seen half-written */
        assert_true(s->generation >= last_gen);
        if (s->n_nodes == 1) {
            assert_true(s->nodes[0].lsn >= last_lsn);
            last_lsn = s->nodes[0].lsn;
            assert_int_equal(s->nodes[0].lsn, s->generation - 2);
        }
        last_gen = s->generation;
    }
    pthread_join(th, NULL);
    topo_put(held);
    topo_fini(&t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_get_put),
        cmocka_unit_test(test_copy_functions),
        cmocka_unit_test(test_concurrent_refresh),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
