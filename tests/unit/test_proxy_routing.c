/*
 * test_proxy_routing.c - the pure parts of the session-side routing: PostgreSQL's LSN text,
 * which read-your-writes compares with replicas' replay positions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/routing.h"

static bool
lsn(const char *text, uint64_t *out)
{
    return routing_parse_lsn(text, strlen(text), out);
}

static void
test_parse_lsn(void **state)
{
    (void) state;
    uint64_t v = 0;
    assert_true(lsn("0/0", &v));
    assert_true(v == 0);
    assert_true(lsn("16/B374D848", &v));
    assert_true(v == ((uint64_t) 0x16 << 32 | 0xB374D848u));
    assert_true(lsn("ffffffff/ffffffff", &v));
    assert_true(v == UINT64_MAX);
    assert_true(lsn("0/3000060", &v));
    assert_true(v == 0x3000060u);
    /* the order PostgreSQL's pg_lsn compares in */
    uint64_t a, b;
    assert_true(lsn("1/0", &a) && lsn("0/FFFFFFFF", &b));
    assert_true(a > b);
    static const char *const bad[] = { "",      "/",    "0/",          "/0",          "0",
                                       "0/0/0", "g/0",  "0/12345678 ", "123456789/0", "0/123456789",
                                       "-1/0",  "0x1/0" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (lsn(bad[i], &v)) {
            fail_msg("'%s' parsed", bad[i]);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_lsn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
