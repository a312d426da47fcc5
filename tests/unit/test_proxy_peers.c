/*
 * test_proxy_peers.c - proxy/peers.c: per-address counts for max_client_conn_per_addr (the cap
 * holds per address and family, a release frees a place, the last release forgets the address,
 * many addresses share buckets). Single-threaded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <sys/socket.h>

#include "proxy/peers.h"

static struct peers t;

static int
setup(void **state)
{
    (void) state;
    return peers_init(&t);
}

static int
teardown(void **state)
{
    (void) state;
    peers_fini(&t);
    return 0;
}

static void
test_cap_per_address(void **state)
{
    (void) state;
    uint8_t a[16] = { 127, 0, 0, 1 }, b[16] = { 127, 0, 0, 2 }, v6[16] = { 0 };
    v6[15] = 1;
    for (int i = 0; i < 3; i++) {
        assert_true(peers_acquire(&t, AF_INET, a, 3));
    }
    assert_false(peers_acquire(&t, AF_INET, a, 3));
    assert_true(peers_acquire(&t, AF_INET, b, 3)); /* another address */
    assert_true(peers_acquire(&t, AF_INET6, v6, 3));
    peers_release(&t, AF_INET, a);
    assert_true(peers_acquire(&t, AF_INET, a, 3));
    assert_false(peers_acquire(&t, AF_INET, a, 3));
    /* a lower cap (after a reload) refuses until enough have left */
    assert_false(peers_acquire(&t, AF_INET, a, 2));
    for (int i = 0; i < 3; i++) {
        peers_release(&t, AF_INET, a);
    }
    assert_true(peers_acquire(&t, AF_INET, a, 1));
    assert_false(peers_acquire(&t, AF_INET, a, 1));
    peers_release(&t, AF_INET, a);
    peers_release(&t, AF_INET, b);
    peers_release(&t, AF_INET6, v6);
    /* 0 counts nothing */
    assert_false(peers_acquire(&t, AF_INET, a, 0));
}

static void
test_many_addresses(void **state)
{
    (void) state;
    uint8_t addr[16] = { 10 };
    for (int i = 0; i < 20000; i++) {
        addr[2] = (uint8_t) (i >> 8);
        addr[3] = (uint8_t) i;
        assert_true(peers_acquire(&t, AF_INET, addr, 1));
    }
    for (int i = 0; i < 20000; i++) {
        addr[2] = (uint8_t) (i >> 8);
        addr[3] = (uint8_t) i;
        assert_false(peers_acquire(&t, AF_INET, addr, 1));
        peers_release(&t, AF_INET, addr);
    }
    for (int b = 0; b < PEERS_BUCKETS; b++) {
        assert_null(t.buckets[b]); /* every entry went with its last connection */
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cap_per_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_addresses, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
