/*
 * test_pool_waiters.c - pool/pool.c: which waiter a freed slot goes to. In transaction pooling
 * a waiter on the freeing worker within the first POOL_OVERTAKE_WINDOW goes first (the
 * connection stays on its loop), but no waiter is overtaken more than POOL_OVERTAKE_MAX times;
 * in session pooling the oldest waiter always wins; a slot under a shared cap
 * (max_db_connections) freed by one pool goes to another that waits behind the cap. Two
 * workers on one thread: grants are
 * collected by running each worker's messages by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ev.h>

#include "pool/pool.h"
#include "pool/pool_int.h"

#define N_WAITERS 128

struct fixture {
    struct pool_node node;
    struct pool_set set;
    struct ev_loop *loops[2];
    struct pool_worker workers[2];
    struct pool_waiter waiters[N_WAITERS];
    struct pool *p;
    uint64_t granted[N_WAITERS]; /* waiter ids in grant order */
    int n_granted;
};

static struct fixture *fx;

static void
on_grant(struct pool_worker *w, struct pool *p, struct pool_conn *sc, uint64_t waiter_id)
{
    (void) w;
    (void) p;
    assert_null(sc);
    assert_true(fx->n_granted < N_WAITERS);
    fx->granted[fx->n_granted++] = waiter_id;
}

/* A pool set over one node with two workers, no pool yet. */
static struct fixture *
fixture_init(int max_open, int max_db)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    struct pool_settings ps;
    memset(&ps, 0, sizeof(ps));
    ps.reset_query = "";
    atomic_init(&ps.max_open, max_open);
    atomic_init(&ps.max_db, max_db);
    assert_int_equal(pool_set_init(&f->set, &f->node, 1, 2, &ps), 0);
    for (int i = 0; i < 2; i++) {
        f->loops[i] = ev_loop_new(EVFLAG_AUTO);
        assert_non_null(f->loops[i]);
        pool_worker_init(&f->workers[i], i, f->loops[i], &f->set, NULL);
        f->workers[i].on_grant = on_grant;
    }
    return f;
}

static struct fixture *
fixture_new(bool may_overtake)
{
    /* One slot, held: every acquire queues, and the slot released is handed on. */
    struct fixture *f = fixture_init(1, 0);
    f->p = pool_get(&f->set, 0, "db", "user", NULL, may_overtake);
    assert_non_null(f->p);
    f->p->n_open = 1;
    return f;
}

static void
fixture_free(struct fixture *f)
{
    for (int i = 0; i < 2; i++) {
        pool_worker_fini(&f->workers[i]);
        ev_loop_destroy(f->loops[i]);
    }
    pool_set_fini(&f->set);
    free(f);
}

/* Queue waiter number id (its id too) on worker wi. */
static void
queue(int id, int wi)
{
    struct pool_conn *sc = NULL;
    fx->waiters[id].id = (uint64_t) id;
    assert_int_equal(pool_acquire(&fx->workers[wi], fx->p, &fx->waiters[id], &sc), POOL_QUEUED);
}

/* Worker wi frees a slot; returns the id of the waiter that got it. */
static uint64_t
release_on(int wi)
{
    int before = fx->n_granted;
    pool_slot_release(&fx->workers[wi], fx->p);
    for (int i = 0; i < 2; i++) {
        pool_worker_run_local(&fx->workers[i]);
        pool_worker_drain(&fx->workers[i]);
    }
    assert_int_equal(fx->n_granted, before + 1);
    return fx->granted[before];
}

static int
setup_txn(void **state)
{
    (void) state;
    fx = fixture_new(true);
    return 0;
}

static int
setup_session(void **state)
{
    (void) state;
    fx = fixture_new(false);
    return 0;
}

static int
teardown(void **state)
{
    (void) state;
    /* Drain what is left so nothing stays linked in the pool. */
    while (atomic_load(&fx->p->n_waiting) > 0) {
        release_on(0);
    }
    fixture_free(fx);
    fx = NULL;
    return 0;
}

/* A waiter of the freeing worker deep in the window goes before older waiters elsewhere. */
static void
test_own_waiter_in_window_goes_first(void **state)
{
    (void) state;
    for (int i = 0; i < POOL_OVERTAKE_WINDOW - 1; i++) {
        queue(i, 1);
    }
    queue(POOL_OVERTAKE_WINDOW - 1, 0);
    assert_int_equal(release_on(0), POOL_OVERTAKE_WINDOW - 1);
    /* Worker 1's own release serves its oldest. */
    assert_int_equal(release_on(1), 0);
}

/* Beyond the window the oldest waiter is served, even on another worker. */
static void
test_own_waiter_beyond_window_waits(void **state)
{
    (void) state;
    for (int i = 0; i < POOL_OVERTAKE_WINDOW; i++) {
        queue(i, 1);
    }
    queue(POOL_OVERTAKE_WINDOW, 0);
    assert_int_equal(release_on(0), 0);
}

/* Overtaken POOL_OVERTAKE_MAX times, a waiter is served next, wherever the slot is freed. */
static void
test_overtakes_are_bounded(void **state)
{
    (void) state;
    queue(0, 1);
    for (int i = 1; i <= POOL_OVERTAKE_MAX + 1; i++) {
        queue(i, 0);
    }
    for (int i = 1; i <= POOL_OVERTAKE_MAX; i++) {
        assert_int_equal(release_on(0), i);
    }
    assert_int_equal(release_on(0), 0);
    assert_int_equal(release_on(0), POOL_OVERTAKE_MAX + 1);
}

/* Session pooling: strict arrival order. */
static void
test_session_pooling_keeps_arrival_order(void **state)
{
    (void) state;
    queue(0, 1);
    queue(1, 0);
    assert_int_equal(release_on(0), 0);
    assert_int_equal(release_on(0), 1);
}

/* max_db_connections: a pool of another user of the same database waits behind the shared cap
 * though it has room of its own, another database does not; the slot the first pool gives
 * back goes to the waiting pool. */
static void
test_shared_cap_hands_a_freed_slot_to_another_pool(void **state)
{
    (void) state;
    fx = fixture_init(2, 1);
    struct pool *a = pool_get(&fx->set, 0, "db", "a", NULL, true);
    struct pool *b = pool_get(&fx->set, 0, "db", "b", NULL, true);
    struct pool *c = pool_get(&fx->set, 0, "other", "a", NULL, true);
    assert_true(a && b && c && a->caps[0] == b->caps[0] && a->caps[0] != c->caps[0]);
    assert_true(a->caps[1] == c->caps[1] && a->caps[1] != b->caps[1]);
    struct pool_conn *sc = NULL;
    fx->waiters[0].id = 100;
    fx->waiters[1].id = 101;
    fx->waiters[2].id = 102;
    assert_int_equal(pool_acquire(&fx->workers[0], a, &fx->waiters[0], &sc), POOL_MUST_CONNECT);
    assert_int_equal(pool_acquire(&fx->workers[1], b, &fx->waiters[1], &sc), POOL_QUEUED);
    assert_int_equal(pool_acquire(&fx->workers[0], c, &fx->waiters[2], &sc), POOL_MUST_CONNECT);
    assert_int_equal(atomic_load(&a->caps[0]->n_open), 1);
    assert_int_equal(atomic_load(&a->caps[1]->n_open), 2); /* user a: no cap, still counted */
    for (int i = 0; i < 2; i++) {                          /* nothing for b yet */
        pool_worker_run_local(&fx->workers[i]);
        pool_worker_drain(&fx->workers[i]);
    }
    assert_int_equal(fx->n_granted, 0);

    pool_slot_release(&fx->workers[0], a); /* a's connection closed: its room goes to b */
    for (int i = 0; i < 2; i++) {
        pool_worker_run_local(&fx->workers[i]);
        pool_worker_drain(&fx->workers[i]);
    }
    assert_int_equal(fx->n_granted, 1);
    assert_int_equal(fx->granted[0], 101);
    assert_int_equal(b->n_open, 1);
    assert_int_equal(a->n_open, 0);
    assert_int_equal(atomic_load(&a->caps[0]->n_open), 1);
    assert_int_equal(atomic_load(&b->n_waiting), 0);

    /* A reload that lifts the cap lets a queue past it at once. */
    assert_int_equal(pool_acquire(&fx->workers[0], a, &fx->waiters[0], &sc), POOL_QUEUED);
    struct pool_settings ps;
    memset(&ps, 0, sizeof(ps));
    ps.reset_query = "";
    atomic_init(&ps.max_open, 2);
    atomic_init(&ps.max_db, 0);
    assert_int_equal(pool_set_apply(&fx->set, &ps), ST_OK);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 2; i++) {
            pool_worker_run_local(&fx->workers[i]);
            pool_worker_drain(&fx->workers[i]);
        }
    }
    assert_int_equal(fx->n_granted, 2);
    assert_int_equal(fx->granted[1], 100);
    fixture_free(fx);
    fx = NULL;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_own_waiter_in_window_goes_first, setup_txn, teardown),
        cmocka_unit_test_setup_teardown(test_own_waiter_beyond_window_waits, setup_txn, teardown),
        cmocka_unit_test_setup_teardown(test_overtakes_are_bounded, setup_txn, teardown),
        cmocka_unit_test_setup_teardown(test_session_pooling_keeps_arrival_order, setup_session,
                                        teardown),
        cmocka_unit_test(test_shared_cap_hands_a_freed_slot_to_another_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
