/*
 * test_common_hidx.c - the hash index over array positions, checked against a linear scan
 * through random adds, lookups and swap-removals. Weak hashes (few distinct values) force long
 * probe runs, clusters that wrap past the table's end, and backward shifts across them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/hidx.h"

#define MAX_KEYS 600

struct arr {
    uint64_t key[MAX_KEYS];
    int n;
    int cap;
    uint32_t hash_mod; /* hash = key % hash_mod (+ a high constant so the mask matters) */
    struct hidx idx;
};

static uint32_t
hash_of(const struct arr *a, uint64_t key)
{
    return (uint32_t) (key % a->hash_mod) * 7u + 0xabc00000u;
}

static uint32_t
hash_at(const void *ctx, uint32_t pos)
{
    const struct arr *a = ctx;
    return hash_of(a, a->key[pos]);
}

static int
find(const struct arr *a, uint64_t key)
{
    uint32_t h = hash_of(a, key);
    for (uint32_t i = hidx_first(&a->idx, h); a->idx.slot && a->idx.slot[i];
         i = hidx_next(&a->idx, i)) {
        if (a->key[a->idx.slot[i] - 1] == key) {
            return (int) (a->idx.slot[i] - 1);
        }
    }
    return -1;
}

static int
scan(const struct arr *a, uint64_t key)
{
    for (int i = 0; i < a->n; i++) {
        if (a->key[i] == key) {
            return i;
        }
    }
    return -1;
}

static void
add(struct arr *a, uint64_t key)
{
    if (a->n == a->cap) {
        int ncap = a->cap ? a->cap * 2 : 4;
        assert_int_equal(hidx_reserve(&a->idx, (uint32_t) ncap, (uint32_t) a->n, hash_at, a),
                         ST_OK);
        a->cap = ncap;
    }
    a->key[a->n] = key;
    hidx_insert(&a->idx, hash_of(a, key), (uint32_t) a->n);
    a->n++;
}

static void
remove_at(struct arr *a, int pos)
{
    hidx_remove_swap(&a->idx, (uint32_t) pos, (uint32_t) a->n - 1, hash_at, a);
    a->key[pos] = a->key[--a->n];
}

/* Every key present is found at its position, and some absent ones are not found. */
static void
check_all(const struct arr *a, uint64_t key_space)
{
    for (int i = 0; i < a->n; i++) {
        assert_int_equal(find(a, a->key[i]), i);
    }
    for (uint64_t k = 0; k < key_space; k += 7) {
        assert_int_equal(find(a, k) >= 0, scan(a, k) >= 0);
    }
    /* at most half full, so every probe ends at an empty slot */
    if (a->idx.slot) {
        assert_true((uint32_t) a->n * 2 <= a->idx.mask + 1);
    }
}

static void
run(uint32_t hash_mod, unsigned seed)
{
    struct arr *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    a->hash_mod = hash_mod;
    srand(seed);
    const uint64_t key_space = 1000;
    for (int step = 0; step < 20000; step++) {
        uint64_t k = (uint64_t) rand() % key_space;
        int at = scan(a, k);
        assert_int_equal(find(a, k), at);
        int r = rand() % 3;
        if (r < 2 && at < 0 && a->n < MAX_KEYS) {
            add(a, k);
        } else if (at >= 0) {
            remove_at(a, at);
        }
        if (step % 500 == 0) {
            check_all(a, key_space);
        }
    }
    check_all(a, key_space);
    /* empty it from the front, the last element moving each time */
    while (a->n > 0) {
        uint64_t gone = a->key[0];
        remove_at(a, 0);
        assert_int_equal(find(a, gone), -1);
        check_all(a, key_space);
    }
    hidx_fini(&a->idx);
    assert_null(a->idx.slot);
    free(a);
}

static void
test_good_hash(void **state)
{
    (void) state;
    run(1000003, 1);
}

static void
test_colliding_hash(void **state)
{
    (void) state;
    run(5, 2);  /* five distinct hashes: every probe run is long */
    run(61, 3); /* runs that meet and wrap around the table's end */
}

static void
test_string_hash_spreads(void **state)
{
    (void) state;
    /* driver-style names differ in their last characters; their low bits must too */
    uint32_t seen = 0;
    char name[16];
    for (int i = 0; i < 32; i++) {
        snprintf(name, sizeof(name), "S_%d", i);
        seen |= 1u << (hidx_hash_str(name) & 31);
    }
    assert_true(__builtin_popcount(seen) >= 16);
    assert_int_equal(hidx_hash_str("a"), hidx_hash_str("a"));
    assert_int_not_equal(hidx_hash_str("S_1"), hidx_hash_str("S_2"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_hash),
        cmocka_unit_test(test_colliding_hash),
        cmocka_unit_test(test_string_hash_spreads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
