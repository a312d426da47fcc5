/*
 * test_pool_params.c - pool/conn.c's parameter sets: set, replace, remove, and the packed form
 * (one allocation of exact size, pool_params_intern_from) that a client's wanted settings
 * take: packing keeps every entry, a change unpacks first, even when the new name or value
 * points into the packed block itself, and clear frees either form (LeakSanitizer checks that
 * under `make check-asan`); equal sets interned through one slot share one block, which a
 * change copies first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pool/pool.h"

static const char *
get(const struct pool_params *ps, const char *name)
{
    for (int i = 0; i < ps->n; i++) {
        if (strcmp(ps->v[i].name, name) == 0) {
            return ps->v[i].value;
        }
    }
    return NULL;
}

/* In the packed block, which starts just before v and is well under 4 KiB. */
static bool
inside(const struct pool_params *ps, const char *p)
{
    const char *start = (const char *) ps->v - 64;
    return pool_params_is_packed(ps) && p >= start && p < start + 4096;
}

/* Replace ps by its packed copy, interned through *slot (a login's settings are built so). */
static void
intern(struct pool_params *ps, void **slot)
{
    struct pool_params p = { 0 };
    assert_int_equal(pool_params_intern_from(&p, ps->v, ps->n, slot), ST_OK);
    pool_params_clear(ps);
    *ps = p;
}

/* Replace ps by a packed copy of its own. */
static void
pack(struct pool_params *ps)
{
    void *slot = NULL;
    intern(ps, &slot);
    pool_params_block_put(slot);
}

static void
test_set_replace_remove(void **state)
{
    (void) state;
    struct pool_params ps = { 0 };
    assert_int_equal(pool_params_set(&ps, "DateStyle", "ISO"), ST_OK);
    assert_int_equal(pool_params_set(&ps, "TimeZone", "UTC"), ST_OK);
    assert_int_equal(pool_params_set(&ps, "DateStyle", "ISO, MDY"), ST_OK);
    assert_int_equal(ps.n, 2);
    assert_string_equal(get(&ps, "DateStyle"), "ISO, MDY");
    assert_int_equal(pool_params_remove_at(&ps, 0), ST_OK);
    assert_int_equal(ps.n, 1);
    assert_null(get(&ps, "DateStyle"));
    assert_string_equal(get(&ps, "TimeZone"), "UTC");
    assert_int_equal(pool_params_remove_at(&ps, 5), ST_OK); /* out of range: nothing */
    pool_params_clear(&ps);
    assert_int_equal(ps.n, 0);
    assert_null(ps.v);
}

static void
test_pack_keeps_every_entry(void **state)
{
    (void) state;
    /* What JDBC sends besides user and database. */
    static const char *kv[][2] = { { "client_encoding", "UTF8" },
                                   { "DateStyle", "ISO" },
                                   { "TimeZone", "Europe/Berlin" },
                                   { "extra_float_digits", "3" },
                                   { "application_name", "PostgreSQL JDBC Driver" } };
    struct pool_params ps = { 0 };
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(pool_params_set(&ps, kv[i][0], kv[i][1]), ST_OK);
    }
    pack(&ps);
    assert_true(pool_params_is_packed(&ps));
    assert_int_equal(ps.n, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(ps.v[i].name, kv[i][0]);
        assert_string_equal(ps.v[i].value, kv[i][1]);
        assert_true(inside(&ps, ps.v[i].name) && inside(&ps, ps.v[i].value));
    }
    pack(&ps); /* packed already: the same entries */
    assert_int_equal(ps.n, 5);
    assert_string_equal(ps.v[4].value, kv[4][1]);
    /* the same value again changes nothing and keeps it packed */
    assert_int_equal(pool_params_set(&ps, "DateStyle", "ISO"), ST_OK);
    assert_true(pool_params_is_packed(&ps));
    pool_params_clear(&ps);
    assert_false(pool_params_is_packed(&ps));
    assert_null(ps.v);

    /* an empty set packs to nothing */
    pack(&ps);
    assert_null(ps.v);
    assert_false(pool_params_is_packed(&ps));
}

static void
test_change_after_pack_unpacks(void **state)
{
    (void) state;
    struct pool_params ps = { 0 };
    assert_int_equal(pool_params_set(&ps, "search_path", "app"), ST_OK);
    assert_int_equal(pool_params_set(&ps, "TimeZone", "UTC"), ST_OK);
    pack(&ps);
    /* a new value for an entry */
    assert_int_equal(pool_params_set(&ps, "TimeZone", "GMT"), ST_OK);
    assert_false(pool_params_is_packed(&ps));
    assert_string_equal(get(&ps, "TimeZone"), "GMT");
    assert_string_equal(get(&ps, "search_path"), "app");
    /* a new entry after packing again */
    pack(&ps);
    assert_int_equal(pool_params_set(&ps, "work_mem", "64MB"), ST_OK);
    assert_int_equal(ps.n, 3);
    assert_string_equal(get(&ps, "work_mem"), "64MB");
    /* removal from a packed set */
    pack(&ps);
    assert_int_equal(pool_params_remove_at(&ps, 0), ST_OK);
    assert_false(pool_params_is_packed(&ps));
    assert_int_equal(ps.n, 2);
    assert_null(get(&ps, "search_path"));
    pool_params_clear(&ps);
}

static void
test_set_from_its_own_block(void **state)
{
    (void) state;
    /* name and value that live in the block unpacking frees: copied before (ASan would
     * report a use after free otherwise) */
    struct pool_params ps = { 0 };
    assert_int_equal(pool_params_set(&ps, "a", "one"), ST_OK);
    assert_int_equal(pool_params_set(&ps, "b", "two"), ST_OK);
    pack(&ps);
    assert_int_equal(pool_params_set(&ps, ps.v[0].name, ps.v[1].value), ST_OK);
    assert_string_equal(get(&ps, "a"), "two");
    pack(&ps);
    assert_int_equal(pool_params_set(&ps, ps.v[1].value, ps.v[0].name), ST_OK); /* new: "two" */
    assert_int_equal(ps.n, 3);
    assert_string_equal(get(&ps, "two"), "a");
    pool_params_clear(&ps);
}

static void
fill(struct pool_params *ps, const char *app)
{
    assert_int_equal(pool_params_set(ps, "client_encoding", "UTF8"), ST_OK);
    assert_int_equal(pool_params_set(ps, "application_name", app), ST_OK);
}

static void
test_intern_shares_equal_sets(void **state)
{
    (void) state;
    void *slot = NULL;
    struct pool_params a = { 0 }, b = { 0 }, c = { 0 };
    fill(&a, "shop");
    intern(&a, &slot);
    assert_true(pool_params_is_packed(&a));
    assert_non_null(slot);
    /* the same entries: the same block */
    fill(&b, "shop");
    intern(&b, &slot);
    assert_true(pool_params_is_packed(&b));
    assert_ptr_equal(b.v, a.v);
    assert_string_equal(b.v[1].value, "shop");
    /* another value: its own block, which takes the slot */
    fill(&c, "billing");
    void *slot_a = slot;
    intern(&c, &slot);
    assert_ptr_not_equal(c.v, a.v);
    assert_ptr_not_equal(slot, slot_a);
    /* a change to a shared set copies it; the others keep theirs */
    assert_int_equal(pool_params_set(&b, "application_name", "shop2"), ST_OK);
    assert_false(pool_params_is_packed(&b));
    assert_string_equal(b.v[1].value, "shop2");
    assert_string_equal(a.v[1].value, "shop");
    /* freed with the last reference (LeakSanitizer under check-asan, ASan on a double free) */
    pool_params_clear(&a);
    pool_params_clear(&b);
    pool_params_clear(&c);
    pool_params_block_put(slot);
    pool_params_block_put(NULL);
    /* an empty set is left alone */
    struct pool_params e = { 0 };
    slot = NULL;
    intern(&e, &slot);
    assert_null(slot);
    assert_false(pool_params_is_packed(&e));
}

/* From pairs that point elsewhere (a login's startup packet): copied into a block, shared with
 * an equal set in the slot, and the slot taken by a different one. */
static void
test_intern_from_pairs(void **state)
{
    (void) state;
    void *slot = NULL;
    char n1[] = "client_encoding", v1[] = "UTF8", n2[] = "application_name", v2[] = "shop";
    struct pool_param v[] = { { n1, v1 }, { n2, v2 } };
    struct pool_params a = { 0 }, b = { 0 }, c = { 0 }, e = { 0 };
    assert_int_equal(pool_params_intern_from(&a, v, 2, &slot), ST_OK);
    assert_true(pool_params_is_packed(&a));
    assert_non_null(slot);
    /* the pairs were copied: the caller's buffers may go */
    v2[0] = 'X';
    assert_string_equal(a.v[1].value, "shop");
    assert_ptr_not_equal(a.v[1].value, v2);
    /* the same pairs again: the same block */
    v2[0] = 's';
    assert_int_equal(pool_params_intern_from(&b, v, 2, &slot), ST_OK);
    assert_ptr_equal(b.v, a.v);
    /* the same set built apart and interned the other way finds it too */
    fill(&e, "shop");
    intern(&e, &slot);
    assert_ptr_equal(e.v, a.v);
    /* one value differs: its own block, which takes the slot */
    void *slot_a = slot;
    assert_int_equal(pool_params_intern_from(&c, v, 1, &slot), ST_OK);
    assert_int_equal(c.n, 1);
    assert_ptr_not_equal(slot, slot_a);
    /* a SET on a shared one copies it first */
    assert_int_equal(pool_params_set(&b, "application_name", "mine"), ST_OK);
    assert_string_equal(a.v[1].value, "shop");
    assert_string_equal(b.v[1].value, "mine");
    /* no pairs: nothing */
    struct pool_params z = { 0 };
    assert_int_equal(pool_params_intern_from(&z, v, 0, &slot), ST_OK);
    assert_false(pool_params_is_packed(&z));
    pool_params_clear(&a);
    pool_params_clear(&b);
    pool_params_clear(&c);
    pool_params_clear(&e);
    pool_params_block_put(slot);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_replace_remove),
        cmocka_unit_test(test_pack_keeps_every_entry),
        cmocka_unit_test(test_change_after_pack_unpacks),
        cmocka_unit_test(test_set_from_its_own_block),
        cmocka_unit_test(test_intern_shares_equal_sets),
        cmocka_unit_test(test_intern_from_pairs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
