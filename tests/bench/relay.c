/* relay: the kernel floor for a PostgreSQL proxy (tests/bench, `make bench`).
 *
 *   relay LISTEN_PORT UPSTREAM_PORT        (both on 127.0.0.1)
 *
 * One thread, one epoll set, one upstream connection per client, no parsing, no pooling.
 * On readiness it does one recv() into a 16 KiB buffer and one send() of what it read; only
 * when send() cannot take everything does it keep the rest, stop reading the source and wait
 * for EPOLLOUT. Any proxy that does one recv and one send per message costs at least this
 * much CPU per transaction; the bench reports it beside pgmux and PgBouncer. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFSZ 16384

struct end {
    int fd;
    struct end *peer;
    size_t off, len; /* bytes read from this end not yet sent to the peer */
    char buf[BUFSZ];
};

static int ep;

static void
watch(struct end *e, int op, unsigned ev)
{
    struct epoll_event x = { .events = ev, .data.ptr = e };
    epoll_ctl(ep, op, e->fd, &x);
}

/* EPOLLIN unless this end still holds bytes for its peer; EPOLLOUT while the peer holds
 * bytes for it. */
static void
rearm(struct end *e)
{
    unsigned ev = (e->off < e->len ? 0 : EPOLLIN) | (e->peer->off < e->peer->len ? EPOLLOUT : 0);
    watch(e, EPOLL_CTL_MOD, ev);
}

/* Closed pairs are freed after the current epoll batch: later events in it may name them. */
static struct end *graveyard[512];
static int ngrave;

static void
close_pair(struct end *e)
{
    struct end *p = e->peer;
    close(e->fd);
    close(p->fd);
    e->fd = p->fd = -1;
    graveyard[ngrave++] = e < p ? e : p; /* both ends live in one allocation */
}

static struct sockaddr_in
loopback(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short) port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int
main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: relay LISTEN_PORT UPSTREAM_PORT\n");
        return 2;
    }
    struct sockaddr_in la = loopback(atoi(argv[1])), ua = loopback(atoi(argv[2]));
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *) &la, sizeof la) || listen(lfd, 4096)) {
        perror("relay: listen");
        return 1;
    }
    ep = epoll_create1(0);
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct end *e = evs[i].data.ptr;
            if (e == NULL) { /* new client: connect upstream (loopback: completes at once) */
                int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                if (cfd < 0)
                    continue;
                int sfd = socket(AF_INET, SOCK_STREAM, 0);
                if (connect(sfd, (struct sockaddr *) &ua, sizeof ua) < 0) {
                    close(cfd);
                    close(sfd);
                    continue;
                }
                fcntl(sfd, F_SETFL, O_NONBLOCK);
                struct end *pair = calloc(2, sizeof *pair);
                pair[0] = (struct end){ .fd = cfd, .peer = &pair[1] };
                pair[1] = (struct end){ .fd = sfd, .peer = &pair[0] };
                for (int k = 0; k < 2; k++) {
                    setsockopt(pair[k].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    watch(&pair[k], EPOLL_CTL_ADD, EPOLLIN);
                }
                continue;
            }
            if (e->fd < 0)
                continue;
            struct end *src = e, *dst = e->peer;
            if (evs[i].events & EPOLLOUT) { /* e's peer had bytes waiting for e: flush them */
                src = e->peer;
                dst = e;
            } else {
                ssize_t r = recv(src->fd, src->buf, BUFSZ, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    close_pair(src);
                    continue;
                }
                if (r < 0)
                    continue;
                src->off = 0;
                src->len = (size_t) r;
            }
            ssize_t w = send(dst->fd, src->buf + src->off, src->len - src->off, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EINTR) {
                close_pair(src);
                continue;
            }
            if (w > 0)
                src->off += (size_t) w;
            if (src->off < src->len || (evs[i].events & EPOLLOUT)) {
                /* backpressure: src is not read while it holds unsent bytes; dst waits for
                 * EPOLLOUT meanwhile. Interest is recomputed for both ends. */
                rearm(src);
                rearm(dst);
            }
        }
        while (ngrave > 0)
            free(graveyard[--ngrave]);
    }
}
