/*
 * test_common_buf.c - unit tests for common/buf.c: lending and taking back buffers, the free
 * list's bound, the sent <= parsed <= recvd <= cap offsets, compaction and appending.
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
        cmocka_unit_test(test_append_and_offsets),
        cmocka_unit_test(test_compact),
    };
    return cmocka_run_group_tests_name("common_buf", tests, NULL, NULL);
}
