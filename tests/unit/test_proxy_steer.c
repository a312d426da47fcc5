/*
 * test_proxy_steer.c - proxy/steer.c on real loopback sockets: the listeners of one port are
 * counted per address and family; with a program attached, connections reach only the first n
 * listeners of the group in the order they started listening; detached, the kernel's hash
 * reaches every one again. Single-threaded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/steer.h"

#define N_LISTENERS 4
#define N_CONNECTS  64

static int
listener(const char *addr, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int one = 1;
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
    assert_int_equal(inet_pton(AF_INET, addr, &sin.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *) &sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 128), 0);
    return fd;
}

static int
port_of(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *) &sin, &len), 0);
    return ntohs(sin.sin_port);
}

/* Connects N_CONNECTS times and counts, per listener, the connections it can accept. */
static void
spread(int fds[N_LISTENERS], int port, int got[N_LISTENERS])
{
    int cs[N_CONNECTS];
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < N_CONNECTS; i++) {
        cs[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(cs[i] >= 0);
        /* Blocking: on loopback the handshake is done, and the connection queued on the
         * listener the kernel chose, when connect returns. */
        assert_int_equal(connect(cs[i], (struct sockaddr *) &sin, sizeof(sin)), 0);
    }
    int total = 0;
    for (int l = 0; l < N_LISTENERS; l++) {
        got[l] = 0;
        int fd;
        while ((fd = accept4(fds[l], NULL, NULL, SOCK_CLOEXEC)) >= 0) {
            close(fd);
            got[l]++;
        }
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        total += got[l];
    }
    assert_int_equal(total, N_CONNECTS);
    for (int i = 0; i < N_CONNECTS; i++) {
        close(cs[i]);
    }
}

static void
test_steers_to_the_first_listeners(void **state)
{
    (void) state;
    int fds[N_LISTENERS];
    fds[0] = listener("127.0.0.1", 0);
    int port = port_of(fds[0]);
    for (int l = 1; l < N_LISTENERS; l++) {
        fds[l] = listener("127.0.0.1", port);
    }
    /* Same port on another address and on another family: other groups, not counted. */
    int other = listener("127.0.0.2", port);
    int v6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    assert_true(v6 >= 0);
    (void) setsockopt(v6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6,
                                 .sin6_port = htons((uint16_t) port),
                                 .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    bool has_v6 = bind(v6, (struct sockaddr *) &sin6, sizeof(sin6)) == 0 && listen(v6, 8) == 0;

    assert_int_equal(steer_listeners(fds[0]), N_LISTENERS);
    assert_int_equal(steer_listeners(fds[3]), N_LISTENERS);
    assert_int_equal(steer_listeners(other), 1);
    if (has_v6) {
        assert_int_equal(steer_listeners(v6), 1);
    }

    int got[N_LISTENERS];
    assert_int_equal(steer_attach(fds[2], 1), 0); /* any socket of the group will do */
    spread(fds, port, got);
    assert_int_equal(got[0], N_CONNECTS);

    assert_int_equal(steer_attach(fds[0], 2), 0);
    spread(fds, port, got);
    assert_int_equal(got[2] + got[3], 0);
    assert_true(got[0] > 0 && got[1] > 0); /* each half of 64 draws: 2^-63 to fail */

    assert_int_equal(steer_detach(fds[0]), 0);
    assert_int_equal(steer_detach(fds[0]), 0); /* nothing attached is no error */
    spread(fds, port, got);
    assert_true((got[2] + got[3]) > 0);

    errno = 0;
    assert_int_equal(steer_attach(fds[0], 0), -1);
    assert_int_equal(errno, EINVAL);

    /* A listener that closes takes the last one's place: position 0 is now listener 3. */
    assert_int_equal(steer_attach(fds[0], 1), 0);
    close(fds[0]);
    fds[0] = -1;
    assert_int_equal(steer_listeners(fds[1]), N_LISTENERS - 1);
    int rest[N_LISTENERS] = { fds[3], fds[1], fds[2], -1 };
    int cs = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(cs, (struct sockaddr *) &sin, sizeof(sin)), 0);
    int fd = accept4(rest[0], NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    close(fd);
    close(cs);

    for (int l = 1; l < N_LISTENERS; l++) {
        close(fds[l]);
    }
    close(other);
    close(v6);
}

static void
test_not_a_listener(void **state)
{
    (void) state;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(steer_listeners(fd), -1);
    close(fd);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steers_to_the_first_listeners),
        cmocka_unit_test(test_not_a_listener),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
