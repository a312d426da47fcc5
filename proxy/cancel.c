/*
 * cancel.c - forwarding a client's CancelRequest to the server connection serving it. The
 * request travels on a fresh, non-blocking TCP connection to the node (as PostgreSQL's protocol
 * wants), carrying the server's own BackendKeyData. Nothing comes back: the server closes the
 * connection after acting on it, and that close is waited for. PostgreSQL signals the backend
 * twice (its pid and its process group, signal_child), and when the second signal lands after
 * the query has ended it cancels whatever the backend runs next; with transaction pooling the
 * next transaction on that connection may be another client's. So the server connection runs
 * nothing new until the cancel connection has closed (pool_conn_cancel_begin): by then both
 * signals are pending, and an idle backend drops them while it reads its next command.
 *
 * Runs on the worker that owns the session being cancelled.
 *
 * Reference: PostgreSQL documentation, "Canceling Requests in Progress".
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mono.h"
#include "protocol/messages.h"
#include "proxy/client.h"
#include "proxy/worker.h"

#define CANCEL_TIMEOUT_US (5 * 1000000)

struct cancel_req {
    struct ilist_node node; /* in w->cancels */
    struct worker *w;
    ev_io io;
    int fd;
    uint8_t pkt[16];
    uint32_t sent;
    int64_t deadline_us;
    struct pool_conn *sc; /* held back until this request is done; NULL: nothing (or it
                             closed, or a later cancel took over) */
};

static void
cancel_free(struct cancel_req *r)
{
    ev_io_stop(r->w->loop, &r->io);
    close(r->fd);
    ilist_remove(&r->w->cancels, &r->node);
    struct pool_conn *sc = r->sc;
    free(r);
    if (sc) {
        pool_conn_cancel_done(sc); /* may release it: after r is gone */
    }
}

static void
cancel_io_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct cancel_req *r = io->data;
    if (r->sent == sizeof(r->pkt)) {
        /* Sent: wait for the server to close the connection (see the top). */
        char scratch[64];
        ssize_t n = recv(r->fd, scratch, sizeof(scratch), 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        cancel_free(r);
        return;
    }
    if (r->sent == 0) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            log_warning("could not connect to forward a cancel request: %s",
                        strerror(err ? err : errno));
            cancel_free(r);
            return;
        }
    }
    ssize_t n = send(r->fd, r->pkt + r->sent, sizeof(r->pkt) - r->sent, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n < 0) {
        cancel_free(r);
        return;
    }
    r->sent += (uint32_t) n;
    if (r->sent == sizeof(r->pkt)) {
        ev_io_stop(r->w->loop, &r->io);
        ev_io_set(&r->io, r->fd, EV_READ);
        ev_io_start(r->w->loop, &r->io);
    }
}

void
cancel_send(struct worker *w, struct pool_conn *sc)
{
    const struct pool_node *node = sc->pool->node;
    struct cancel_req *r = calloc(1, sizeof(*r));
    if (!r) {
        return;
    }
    r->w = w;
    r->fd = socket(node->addr.ss_family, SOCK_STREAM, 0);
    if (r->fd < 0 || pool_sock_setup(r->fd, true) < 0) {
        if (r->fd >= 0) {
            close(r->fd);
        }
        free(r);
        return;
    }
    struct proto_builder pb;
    proto_builder_init_fixed(&pb, r->pkt, sizeof(r->pkt));
    proto_build_cancel_request(&pb, sc->be_pid, sc->be_key);
    r->deadline_us = mono_now_us() + CANCEL_TIMEOUT_US;
    ilist_push_tail(&w->cancels, &r->node);
    ev_io_init(&r->io, cancel_io_cb, r->fd, EV_WRITE);
    r->io.data = r;
    if (connect(r->fd, (const struct sockaddr *) &node->addr, node->addr_len) < 0 &&
        errno != EINPROGRESS) {
        log_warning("could not connect to %s to forward a cancel request: %s", node->name,
                    strerror(errno));
        close(r->fd);
        ilist_remove(&w->cancels, &r->node);
        free(r);
        return;
    }
    ev_io_start(w->loop, &r->io);
    pool_conn_cancel_begin(sc, &r->sc);
}

void
cancel_tick(struct worker *w, int64_t now)
{
    struct ilist_node *it, *tmp;
    ILIST_FOREACH_SAFE(&w->cancels, it, tmp)
    {
        struct cancel_req *r = CONTAINER_OF(it, struct cancel_req, node);
        if (now > r->deadline_us) {
            cancel_free(r);
        }
    }
}

void
cancel_close_all(struct worker *w)
{
    struct ilist_node *it;
    while ((it = ilist_first(&w->cancels)) != NULL) {
        cancel_free(CONTAINER_OF(it, struct cancel_req, node));
    }
}
