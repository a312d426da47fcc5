/*
 * test_common_buf.c - unit tests for common/buf.c: lending and taking back buffers, the free
 * list's bound and its trimming, the sent <= parsed <= recvd <= cap offsets, compaction and
 * appending.
 * Single-threaded, like the pools it tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"

static void
test_get_put_reuse(void **state)
{
    (void) state;
    struct buf_pool p;
    buf_pool_init(&p, 64, 2);
    struct buf *a = buf_get(&p);
    assert_non_null(a);
    assert_int_equal(a->cap, 64);
    assert_int_equal(a->sent, 0);
    assert_int_equal(a->parsed, 0);
    assert_int_equal(a->recvd, 0);
    assert_true(buf_is_empty(a));
    assert_int_equal(p.n_lent, 1);
    assert_int_equal(p.n_free, 0);

    /* A returned buffer is lent again, with its offsets reset. */
    a->sent = 1;
    a->parsed = 2;
    a->recvd = 3;
    buf_put(&p, a);
    assert_int_equal(p.n_lent, 0);
    assert_int_equal(p.n_free, 1);
    struct buf *b = buf_get(&p);
    assert_ptr_equal(b, a);
    assert_int_equal(b->sent + b->parsed + b->recvd, 0);
    assert_int_equal(p.n_free, 0);
    buf_put(&p, b);
    buf_put(&p, NULL); /* accepted, changes nothing */
    assert_int_equal(p.n_free, 1);
    assert_int_equal(p.n_lent, 0);
    buf_pool_fini(&p);
    assert_int_equal(p.n_free, 0);
}

static void
test_free_list_bound(void **state)
{
    (void) state;
    struct buf_pool p;
    struct buf *bs[5];
    buf_pool_init(&p, 32, 2);
    for (int i = 0; i < 5; i++) {
        bs[i] = buf_get(&p);
        assert_non_null(bs[i]);
    }
    assert_int_equal(p.n_lent, 5);
    for (int i = 0; i < 5; i++) {
        buf_put(&p, bs[i]);
    }
    /* Only max_free are kept; the rest went back to malloc (ASan would report a leak). */
    assert_int_equal(p.n_free, 2);
    assert_int_equal(p.n_lent, 0);
    buf_pool_fini(&p);
}

static void
test_trim_drops_half_of_what_stayed_idle(void **state)
{
    (void) state;
    struct buf_pool p;
    struct buf *bs[8];
    buf_pool_init(&p, 32, 16);
    for (int i = 0; i < 8; i++) {
        bs[i] = buf_get(&p);
        assert_non_null(bs[i]);
    }
    for (int i = 7; i >= 0; i--) {
        buf_put(&p, bs[i]); /* bs[0] on top, bs[7] at the bottom */
    }
    /* All eight were lent since the pool began: none stayed idle. */
    assert_int_equal(buf_pool_trim(&p, 0), 0);
    assert_int_equal(p.n_free, 8);
    /* Idle for a whole period: half go, from the bottom (the least recently used). */
    assert_int_equal(buf_pool_trim(&p, 0), 4);
    assert_int_equal(p.n_free, 4);
    for (int i = 0; i < 4; i++) {
        struct buf *b = buf_get(&p);
        assert_ptr_equal(b, bs[i]);
    }
    assert_null(p.free);
    for (int i = 3; i >= 0; i--) {
        buf_put(&p, bs[i]);
    }
    /* The free list ran dry in that period: nothing stayed idle. */
    assert_int_equal(buf_pool_trim(&p, 0), 0);
    /* One lent and returned: the three below it stayed idle, half of them (rounded up) go,
     * and the top one stays. */
    struct buf *top = buf_get(&p);
    assert_ptr_equal(top, bs[0]);
    buf_put(&p, top);
    assert_int_equal(buf_pool_trim(&p, 0), 2);
    assert_int_equal(p.n_free, 2);
    assert_ptr_equal(p.free, bs[0]);
    assert_ptr_equal(p.free->next_free, bs[1]);
    assert_null(p.free->next_free->next_free);
    /* Idle from then on: one, then the last one too (rounded up). */
    assert_int_equal(buf_pool_trim(&p, 0), 1);
    assert_int_equal(buf_pool_trim(&p, 0), 1);
    assert_int_equal(buf_pool_trim(&p, 0), 0);
    assert_int_equal(p.n_free, 0);
    assert_null(p.free);
    buf_pool_fini(&p);
}

static void
test_trim_keeps_some_spare(void **state)
{
    (void) state;
    struct buf_pool p;
    struct buf *bs[10];
    buf_pool_init(&p, 32, 16);
    for (int i = 0; i < 10; i++) {
        bs[i] = buf_get(&p);
    }
    for (int i = 9; i >= 0; i--) {
        buf_put(&p, bs[i]);
    }
    (void) buf_pool_trim(&p, 4); /* starts the period */
    /* Ten idle, four kept: half of the other six go, then half of three (rounded up), ... */
    assert_int_equal(buf_pool_trim(&p, 4), 3);
    assert_int_equal(buf_pool_trim(&p, 4), 2);
    assert_int_equal(buf_pool_trim(&p, 4), 1);
    assert_int_equal(buf_pool_trim(&p, 4), 0);
    assert_int_equal(p.n_free, 4);
    /* The kept ones are the most recently used. */
    for (int i = 0; i < 4; i++) {
        assert_ptr_equal(buf_get(&p), bs[i]);
    }
    assert_null(p.free);
    for (int i = 0; i < 4; i++) {
        buf_put(&p, bs[i]);
    }
    buf_pool_fini(&p);
}

static void
test_append_and_offsets(void **state)
{
    (void) state;
    struct buf_pool p;
    buf_pool_init(&p, 8, 1);
    struct buf *b = buf_get(&p);
    assert_non_null(b);
    assert_int_equal(buf_append(b, "abcde", 5), 0);
    assert_int_equal(b->recvd, 5);
    assert_int_equal(b->parsed, 5); /* proxy-made bytes are approved for sending */
    assert_int_equal(buf_pending(b), 5);
    assert_int_equal(buf_unparsed(b), 0);
    assert_int_equal(buf_space(b), 3);
    assert_memory_equal(b->data, "abcde", 5);
    buf_check(b);

    /* Too big even after compaction: -1 and nothing written. */
    assert_int_equal(buf_append(b, "123456", 6), -1);
    assert_int_equal(b->recvd, 5);

    /* After sending 4 bytes, an append that needs the room compacts first. */
    b->sent = 4;
    assert_int_equal(buf_append(b, "12345", 5), 0);
    assert_int_equal(b->sent, 0);
    assert_int_equal(b->recvd, 6);
    assert_int_equal(b->parsed, 6);
    assert_memory_equal(b->data, "e12345", 6);
    buf_check(b);
    assert_false(buf_is_empty(b));
    buf_put(&p, b);
    buf_pool_fini(&p);
}

static void
test_compact(void **state)
{
    (void) state;
    struct buf_pool p;
    buf_pool_init(&p, 16, 1);
    struct buf *b = buf_get(&p);
    assert_non_null(b);
    memcpy(b->data, "0123456789", 10);
    b->sent = 3;
    b->parsed = 6;
    b->recvd = 10;
    assert_int_equal(buf_unparsed(b), 4);
    buf_compact(b);
    assert_int_equal(b->sent, 0);
    assert_int_equal(b->parsed, 3);
    assert_int_equal(b->recvd, 7);
    assert_memory_equal(b->data, "3456789", 7);
    /* Nothing sent: compaction is a no-op. */
    buf_compact(b);
    assert_int_equal(b->recvd, 7);
    /* Everything sent: the buffer is empty and starts over. */
    b->sent = b->parsed = b->recvd;
    assert_true(buf_is_empty(b));
    buf_compact(b);
    assert_int_equal(b->recvd, 0);
    assert_int_equal(buf_space(b), 16);
    buf_put(&p, b);
    buf_pool_fini(&p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_put_reuse),
        cmocka_unit_test(test_free_list_bound),
        cmocka_unit_test(test_trim_drops_half_of_what_stayed_idle),
        cmocka_unit_test(test_trim_keeps_some_spare),
        cmocka_unit_test(test_append_and_offsets),
        cmocka_unit_test(test_compact),
    };
    return cmocka_run_group_tests_name("common_buf", tests, NULL, NULL);
}
