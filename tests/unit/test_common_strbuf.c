/*
 * test_common_strbuf.c - the growable string: appends across growth, take and reuse, empty.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/strbuf.h"

static void
test_appends_grow(void **state)
{
    (void) state;
    struct strbuf b = { 0 };
    for (int i = 0; i < 1000; i++) {
        strbuf_appendf(&b, "%s%d", i ? "," : "", i);
    }
    assert_false(b.failed);
    assert_int_equal(strlen(b.s), b.len);
    assert_memory_equal(b.s, "0,1,2,3", 7);
    assert_string_equal(b.s + b.len - 4, ",999");
    char *s = strbuf_take(&b);
    assert_non_null(s);
    assert_null(b.s);
    assert_int_equal(b.len, 0);
    free(s);
    strbuf_appendf(&b, "again %s", "x");
    assert_string_equal(b.s, "again x");
    strbuf_fini(&b);
    assert_null(b.s);
}

static void
test_empty_take_is_null(void **state)
{
    (void) state;
    struct strbuf b = { 0 };
    assert_null(strbuf_take(&b));
    strbuf_appendf(&b, "%s", "");
    assert_null(strbuf_take(&b));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_appends_grow),
        cmocka_unit_test(test_empty_take_is_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
