/*
 * sock.c - see sock.h. Thin wrappers; the thread that owns the loop calls them.
 */
#include "pool/sock.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

void
pool_sock_init(struct pool_sock *s, int fd, void *data, void (*rcb)(EV_P_ ev_io *, int),
               void (*wcb)(EV_P_ ev_io *, int))
{
    s->fd = fd;
    s->in = NULL;
    s->out = NULL;
    s->remain = 0;
    s->is_reading = false;
    s->is_writing = false;
    ev_io_init(&s->rio, rcb, fd, EV_READ);
    ev_io_init(&s->wio, wcb, fd, EV_WRITE);
    s->rio.data = data;
    s->wio.data = data;
}

void
pool_sock_start_read(struct ev_loop *loop, struct pool_sock *s)
{
    if (!s->is_reading && s->fd >= 0) {
        ev_io_start(loop, &s->rio);
        s->is_reading = true;
    }
}

void
pool_sock_stop_read(struct ev_loop *loop, struct pool_sock *s)
{
    if (s->is_reading) {
        ev_io_stop(loop, &s->rio);
        s->is_reading = false;
    }
}

void
pool_sock_start_write(struct ev_loop *loop, struct pool_sock *s)
{
    if (!s->is_writing && s->fd >= 0) {
        ev_io_start(loop, &s->wio);
        s->is_writing = true;
    }
}

void
pool_sock_stop_write(struct ev_loop *loop, struct pool_sock *s)
{
    if (s->is_writing) {
        ev_io_stop(loop, &s->wio);
        s->is_writing = false;
    }
}

void
pool_sock_close(struct ev_loop *loop, struct pool_sock *s, struct buf_pool *bp)
{
    if (loop) {
        pool_sock_stop_read(loop, s);
        pool_sock_stop_write(loop, s);
    }
    buf_put(bp, s->in);
    buf_put(bp, s->out);
    s->in = NULL;
    s->out = NULL;
    s->remain = 0;
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

int
pool_sock_setup(int fd, bool is_tcp)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        return -1;
    }
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        return -1;
    }
    if (is_tcp) {
        int one = 1;
        /* Every PostgreSQL message pgmux writes is a complete request or response: Nagle would
         * only add latency. Keepalive finds peers that vanished without a FIN. */
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        (void) setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    }
    return 0;
}

int
pool_sock_recv(struct pool_sock *s, struct buf_pool *bp)
{
    if (!s->in) {
        s->in = buf_get(bp);
        if (!s->in) {
            errno = ENOMEM;
            return -1;
        }
    }
    struct buf *b = s->in;
    if (buf_space(b) == 0) {
        buf_compact(b);
        if (buf_space(b) == 0) {
            errno = EMSGSIZE;
            return -1;
        }
    }
    for (;;) {
        ssize_t n = recv(s->fd, b->data + b->recvd, buf_space(b), 0);
        if (n > 0) {
            b->recvd += (uint32_t) n;
            return (int) n;
        }
        if (n == 0) {
            return 0;
        }
        if (errno == EINTR) {
            continue;
        }
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? -2 : -1;
    }
}

int
pool_sock_flush_out(struct pool_sock *s, struct buf_pool *bp)
{
    struct buf *b = s->out;
    while (b && b->sent < b->parsed) {
        ssize_t n = send(s->fd, b->data + b->sent, b->parsed - b->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 1;
            }
            return -1;
        }
        b->sent += (uint32_t) n;
    }
    if (b && b->sent == b->recvd) {
        buf_put(bp, b);
        s->out = NULL;
    }
    return 0;
}
