/*
 * sock.c - see sock.h. Thin wrappers; the thread that owns the loop calls them.
 *
 * The plaintext path is one test of s->ssl away from the bare system call. The TLS path keeps
 * OpenSSL non-blocking: SSL_ERROR_WANT_READ / WANT_WRITE become "would block", with the asking
 * watcher pointed at the direction OpenSSL waits for.
 */
#include "pool/sock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/sysio.h"

static __thread char tls_err[256];

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
    s->is_rio_flipped = false;
    s->is_wio_flipped = false;
    s->is_tls_failed = false;
    s->is_tls_wpending = false;
    s->is_read_deferred = false;
    s->ssl = NULL;
    s->loop = NULL;
    ev_io_init(&s->rio, rcb, fd, EV_READ);
    ev_io_init(&s->wio, wcb, fd, EV_WRITE);
    s->rio.data = data;
    s->wio.data = data;
}

bool
pool_sock_has_pending(const struct pool_sock *s)
{
    /* With read-ahead (tls.c) OpenSSL may hold whole records it has not decrypted yet, so
     * SSL_pending (decrypted bytes only) is not enough. SSL_has_pending also counts half a
     * record that only more socket bytes can complete; that costs one SSL_read that ends in
     * WANT_READ, which feeds nothing, so it cannot spin. */
    return s->ssl && SSL_has_pending(s->ssl);
}

void
pool_sock_feed_pending(struct pool_sock *s)
{
    /* The fed event is dropped by ev_io_stop, so a callback that stops reading or closes the
     * socket cancels it. */
    if (s->is_reading && pool_sock_has_pending(s)) {
        ev_feed_event(s->loop, &s->rio, EV_READ);
    }
}

void
pool_sock_start_read(struct ev_loop *loop, struct pool_sock *s)
{
    if (!s->is_reading && s->fd >= 0) {
        s->loop = loop;
        ev_io_start(loop, &s->rio);
        s->is_reading = true;
        pool_sock_feed_pending(s);
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
        s->loop = loop;
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
    if (s->ssl) {
        /* One close_notify, never waited for: the peer learns the end was deliberate (libpq
         * and OpenSSL 3 otherwise report an unexpected EOF). Not after a fatal error, where
         * OpenSSL forbids it. */
        if (!s->is_tls_failed && s->fd >= 0 && SSL_is_init_finished(s->ssl)) {
            ERR_clear_error();
            (void) SSL_shutdown(s->ssl);
        }
        SSL_free(s->ssl);
        ERR_clear_error();
        s->ssl = NULL;
    }
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

/* ---- TLS ---- */

const char *
pool_sock_tls_error(void)
{
    return tls_err;
}

/* Remember why OpenSSL failed (the first queued error, else the verification result). */
static void
tls_note_error(struct pool_sock *s, int ssl_err)
{
    unsigned long e = ERR_peek_error();
    long vr = s->ssl ? SSL_get_verify_result(s->ssl) : X509_V_OK;
    if (vr != X509_V_OK && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        snprintf(tls_err, sizeof(tls_err), "certificate verify failed: %s",
                 X509_verify_cert_error_string(vr));
    } else if (e != 0) {
        const char *r = ERR_reason_error_string(e);
        snprintf(tls_err, sizeof(tls_err), "%s", r ? r : "TLS error");
    } else if (ssl_err == SSL_ERROR_SYSCALL) {
        snprintf(tls_err, sizeof(tls_err), "%s", errno ? strerror(errno) : "unexpected EOF");
    } else {
        snprintf(tls_err, sizeof(tls_err), "TLS error %d", ssl_err);
    }
    ERR_clear_error();
    s->is_tls_failed = true;
}

/* Point io at events, restarting it if it runs (libev needs a stopped watcher to change). */
static void
sock_rewatch(struct pool_sock *s, ev_io *io, bool is_active, int events)
{
    if ((io->events & (EV_READ | EV_WRITE)) == events) {
        return;
    }
    if (is_active) {
        ev_io_stop(s->loop, io);
    }
    ev_io_set(io, s->fd, events);
    if (is_active) {
        ev_io_start(s->loop, io);
    }
}

static void
rio_direction(struct pool_sock *s, bool want_write)
{
    if (s->is_rio_flipped != want_write) {
        sock_rewatch(s, &s->rio, s->is_reading, want_write ? EV_WRITE : EV_READ);
        s->is_rio_flipped = want_write;
    }
}

static void
wio_direction(struct pool_sock *s, bool want_read)
{
    if (s->is_wio_flipped != want_read) {
        sock_rewatch(s, &s->wio, s->is_writing, want_read ? EV_READ : EV_WRITE);
        s->is_wio_flipped = want_read;
    }
}

static int
tls_read(struct pool_sock *s, char *p, size_t len)
{
    if (s->is_tls_failed) {
        errno = EPROTO;
        return -1;
    }
    if (s->is_tls_wpending) {
        s->is_read_deferred = true;
        rio_direction(s, true);
        return -2;
    }
    ERR_clear_error();
    int r = SSL_read(s->ssl, p, len > INT_MAX ? INT_MAX : (int) len);
    if (r > 0) {
        rio_direction(s, false);
        /* What is left of the record does not make the socket readable: come back for it. */
        pool_sock_feed_pending(s);
        return r;
    }
    int e = SSL_get_error(s->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        rio_direction(s, false);
        return -2;
    case SSL_ERROR_WANT_WRITE:
        /* a handshake flight or a KeyUpdate answer must go out before reading goes on */
        rio_direction(s, true);
        return -2;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        tls_note_error(s, e);
        errno = EPROTO;
        return -1;
    }
}

int
pool_sock_read(struct pool_sock *s, char *p, size_t len)
{
    if (s->ssl) {
        return tls_read(s, p, len);
    }
    for (;;) {
        ssize_t n = sys_recv(s->fd, p, len, 0);
        if (n > 0) {
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

long
pool_sock_write(struct pool_sock *s, const char *p, size_t len)
{
    if (!s->ssl) {
        for (;;) {
            ssize_t n = sys_send(s->fd, p, len, MSG_NOSIGNAL);
            if (n >= 0) {
                return (long) n;
            }
            if (errno == EINTR) {
                continue;
            }
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        }
    }
    if (s->is_tls_failed) {
        errno = EPIPE;
        return -1;
    }
    if (len == 0) {
        return 0;
    }
    ERR_clear_error();
    int r = SSL_write(s->ssl, p, len > INT_MAX ? INT_MAX : (int) len);
    if (r > 0) {
        /* A positive return means every record it built has left: nothing is held back. */
        s->is_tls_wpending = false;
        wio_direction(s, false);
        if (s->is_read_deferred) {
            s->is_read_deferred = false;
            rio_direction(s, false);
            if (s->is_reading) {
                ev_feed_event(s->loop, &s->rio, EV_READ);
            }
        }
        return r;
    }
    int e = SSL_get_error(s->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_WRITE:
        s->is_tls_wpending = true;
        wio_direction(s, false);
        return 0;
    case SSL_ERROR_WANT_READ:
        /* only while a handshake runs (renegotiation is off): wait for the peer's flight */
        s->is_tls_wpending = true;
        wio_direction(s, true);
        return 0;
    default:
        tls_note_error(s, e);
        errno = EPIPE;
        return -1;
    }
}

int
pool_sock_handshake(struct pool_sock *s)
{
    ERR_clear_error();
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        rio_direction(s, false);
        return 1;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        rio_direction(s, false);
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        rio_direction(s, true);
        return 0;
    }
    tls_note_error(s, e);
    return -1;
}

void
pool_sock_send_nowait(struct pool_sock *s, const void *p, size_t len)
{
    if (s->fd < 0) {
        return;
    }
    if (s->ssl) {
        if (!s->is_tls_failed && SSL_is_init_finished(s->ssl)) {
            ERR_clear_error();
            (void) SSL_write(s->ssl, p, (int) len);
            ERR_clear_error();
        }
        return;
    }
    (void) !send(s->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* ---- buffered I/O ---- */

int
pool_sock_recv_room(struct pool_sock *s, struct buf_pool *bp)
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
    return 0;
}

int
pool_sock_recv(struct pool_sock *s, struct buf_pool *bp)
{
    if (pool_sock_recv_room(s, bp) != 0) {
        return -1;
    }
    struct buf *b = s->in;
    int n = pool_sock_read(s, b->data + b->recvd, buf_space(b));
    if (n > 0) {
        b->recvd += (uint32_t) n;
    }
    return n;
}

int
pool_sock_flush_out(struct pool_sock *s, struct buf_pool *bp)
{
    struct buf *b = s->out;
    while (b && b->sent < b->parsed) {
        long n = pool_sock_write(s, b->data + b->sent, b->parsed - b->sent);
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            return 1;
        }
        b->sent += (uint32_t) n;
    }
    if (b && b->sent == b->recvd) {
        buf_put(bp, b);
        s->out = NULL;
    }
    return 0;
}
