/*
 * test_proxy_hba.c - proxy/hba.c: parsing hba_file text (lists, quotes, comments, every
 * refusal with its line and column) and matching (first line wins, CIDR prefixes, IPv4-mapped
 * IPv6 clients, connection types). Single-threaded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <sys/socket.h>

#include "proxy/hba.h"

static char errs[4096];
static int n_errs;

static void
collect(void *ctx, int line, const char *field, const char *reason)
{
    (void) ctx;
    size_t n = strlen(errs);
    snprintf(errs + n, sizeof errs - n, "%d: %s: %s\n", line, field, reason);
    n_errs++;
}

static int
parse(const char *text, struct hba_rules *r)
{
    memset(r, 0, sizeof *r);
    errs[0] = '\0';
    n_errs = 0;
    return hba_parse(text, strlen(text), r, collect, NULL);
}

/* The line of the rule matching (user, database, address), or 0 for none. */
static int
match(const struct hba_rules *r, const char *user, const char *db, const char *addr, bool tls)
{
    uint8_t a[16];
    int family = strchr(addr, ':') ? AF_INET6 : AF_INET;
    assert_int_equal(inet_pton(family, addr, a), 1);
    struct hba_conn c = {
        .is_tls = tls, .family = family, .addr = a, .database = db, .user = user
    };
    const struct hba_rule *h = hba_match(r, &c);
    return h ? h->line : 0;
}

static void
test_match_order_and_columns(void **state)
{
    (void) state;
    struct hba_rules r;
    const char *text = "# comment\n"
                       "\n"
                       "host appdb pwuser 127.0.0.1/32 reject\n"
                       "host appdb app,\tmd5user 127.0.0.1/32 scram-sha-256 # trailing\n"
                       "host \"all\" all 10.1.0.0/16 md5\n"
                       "host sameuser all 10.0.0.0/8 password\r\n"
                       "hostssl all all 0.0.0.0/0 trust\n"
                       "hostnossl all all 192.168.1.128/25 trust\n"
                       "host all all fd00::/8 md5\n"
                       "local all all trust\n";
    assert_int_equal(parse(text, &r), 0);
    assert_int_equal(r.n, 8);
    assert_int_equal(r.v[0].method, HBA_REJECT);
    assert_int_equal(match(&r, "pwuser", "appdb", "127.0.0.1", false), 3);
    assert_int_equal(match(&r, "app", "appdb", "127.0.0.1", false), 4);
    assert_int_equal(match(&r, "md5user", "appdb", "127.0.0.1", false), 4);
    assert_int_equal(match(&r, "demo", "appdb", "127.0.0.1", false), 0);
    /* a quoted "all" is a database named all */
    assert_int_equal(match(&r, "x", "all", "10.1.2.3", false), 5);
    assert_int_equal(match(&r, "x", "other", "10.1.2.3", false), 0);
    assert_int_equal(match(&r, "bob", "bob", "10.200.0.1", false), 6);
    assert_int_equal(match(&r, "bob", "alice", "10.200.0.1", true), 7);
    assert_int_equal(match(&r, "bob", "alice", "192.168.1.200", false), 8);
    assert_int_equal(match(&r, "bob", "alice", "192.168.1.127", false), 0);
    assert_int_equal(match(&r, "bob", "alice", "fd12::1", false), 9);
    assert_int_equal(match(&r, "bob", "alice", "fe80::1", false), 0);
    /* an IPv4 client on a dual-stack socket matches IPv4 lines */
    assert_int_equal(match(&r, "app", "appdb", "::ffff:127.0.0.1", false), 4);
    struct hba_conn local = { .is_local = true, .database = "x", .user = "y" };
    assert_int_equal(hba_match(&r, &local)->line, 10);
    hba_rules_free(&r);
}

static void
test_refusals(void **state)
{
    (void) state;
    struct hba_rules r;
    const char *text = "host all all 10.0.0.0/8 trust\n" /* 1 fine */
                       "hostgssenc all all all trust\n"  /* 2 */
                       "host all @users all trust\n"     /* 3 */
                       "host samerole all all trust\n"   /* 4 */
                       "host all all samenet trust\n"    /* 5 */
                       "host all all 1.2.3.4/x trust\n"  /* 6 */
                       "host all all ::1/129 trust\n"    /* 7 */
                       "host all all all peer\n"         /* 8 */
                       "host all, all all all trust\n"   /* 9: a list goes on after ", " */
                       "host all all, all trust\n"       /* 10 */
                       "local all all all trust\n"       /* 11 */
                       "host all a, b all trust\n";      /* 12 */
    int n = parse(text, &r);
    assert_int_equal(r.n, 3); /* lines 1, 9 and 12 read as lists */
    assert_int_equal(n, 9);
    assert_non_null(strstr(errs, "2: type: 'hostgssenc' is not supported"));
    assert_non_null(strstr(errs, "3: user: file inclusion ('@users')"));
    assert_non_null(strstr(errs, "4: database: 'samerole' is not supported"));
    assert_non_null(strstr(errs, "5: address: 'samenet' is not supported"));
    assert_non_null(strstr(errs, "6: address: '1.2.3.4/x': the prefix length must be a number"));
    assert_non_null(strstr(errs, "7: address: prefix length 129 is more than 128"));
    assert_non_null(strstr(errs, "8: method: 'peer' is not supported"));
    assert_non_null(strstr(errs, "10: line: expected: TYPE DATABASE USER ADDRESS METHOD"));
    assert_non_null(strstr(errs, "11: method: 'all' is not supported"));
    hba_rules_free(&r);
    assert_int_equal(parse("host all all all trust,\n", &r), 1);
    assert_non_null(strstr(errs, "1: line: a list ends with a comma"));
    hba_rules_free(&r);
    assert_int_equal(parse("host all all all trust\0\n", &r), 0); /* strlen stops at NUL */
    hba_rules_free(&r);
    const char nul[] = "host all all all trust\nhost a\0b all all trust\n";
    memset(&r, 0, sizeof r);
    errs[0] = '\0';
    assert_int_equal(hba_parse(nul, sizeof nul - 1, &r, collect, NULL), 1);
    assert_non_null(strstr(errs, "2: line: line contains a NUL byte"));
    hba_rules_free(&r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_order_and_columns),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
