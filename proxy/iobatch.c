/*
 * iobatch.c - io_engine = io_uring: one io_uring submission for the receives of a loop
 * iteration (see iobatch.h for why no request outlives the iteration).
 */
#include "proxy/iobatch.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <ev.h>
#include <liburing.h>

#include "common/log.h"
#include "pool/sock.h"
#include "proxy/client.h"
#include "proxy/worker.h"

/* Receives one iteration may batch; beyond them a callback reads at once. Sized so a ring
 * costs a worker a few pages. */
#define IOBATCH_DEPTH 256

struct iobatch_rq {
    struct client *c; /* NULL once the client closed */
    enum iobatch_kind kind;
    int res; /* the completion's result */
};

struct iobatch {
    struct io_uring ring;
    ev_prepare prepare;
    bool is_running; /* inside the hook: queueing now would miss this submission */
    unsigned n;
    struct iobatch_rq rq[IOBATCH_DEPTH];
};

static void
iobatch_run(struct worker *w, struct iobatch *b)
{
    unsigned n = b->n;
    unsigned submitted = 0;
    b->is_running = true;
    for (unsigned i = 0; i < n; i++) {
        struct iobatch_rq *rq = &b->rq[i];
        struct client *c = rq->c;
        rq->res = -EAGAIN;
        if (!c) {
            continue;
        }
        c->is_recv_queued = false;
        /* Whatever ran since the callback queued it may have ended the relay or the wait. */
        struct pool_sock *src = NULL;
        if (rq->kind == IOBATCH_IDLE_CLIENT) {
            src = c->state == CLIENT_IDLE ? &c->sock : NULL;
        } else if (c->state == CLIENT_ACTIVE && c->sc) {
            src = rq->kind == IOBATCH_RELAY_CLIENT ? &c->sock : &c->sc->sock;
        }
        if (!src || src->fd < 0 || src->ssl || !src->is_reading) {
            rq->c = NULL;
            continue;
        }
        if (rq->kind == IOBATCH_IDLE_CLIENT) {
            if (pool_sock_recv_room(src, &w->pw.bufs) != 0) {
                rq->c = NULL;
                client_idle_read_done(c, -1);
                continue;
            }
        } else if (!relay_read_room(c, rq->kind == IOBATCH_RELAY_CLIENT)) {
            rq->c = NULL;
            continue;
        }
        struct buf *in = src->in;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
        /* The ring has IOBATCH_DEPTH entries and is empty here: never NULL. */
        io_uring_prep_recv(sqe, src->fd, in->data + in->recvd, buf_space(in), MSG_DONTWAIT);
        io_uring_sqe_set_data64(sqe, i);
        submitted++;
    }
    bool is_broken = false;
    if (submitted > 0) {
        /* The kernel stops a submission early only when it cannot take an SQE (memory); it
         * then returns without waiting, and the rest go in the next call. Each call that takes
         * all that is left waits until every completion is there: with MSG_DONTWAIT, at once. */
        unsigned sent = 0;
        int tries = 0;
        while (sent < submitted) {
            int rc = io_uring_submit_and_wait(&b->ring, submitted);
            if (rc > 0) {
                sent += (unsigned) rc;
            } else if (rc == -EINTR || ((rc == -EAGAIN || rc == 0) && ++tries < 8)) {
                continue;
            } else {
                /* What was not submitted must never be: the ring goes, this worker reads
                 * with epoll from now on, and the sockets not read stay readable. */
                log_error("worker %d: io_uring_submit: %s; back to epoll", w->idx,
                          rc < 0 ? strerror(-rc) : "no progress");
                is_broken = true;
                break;
            }
        }
        unsigned head, seen = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(&b->ring, head, cqe)
        {
            uint64_t i = io_uring_cqe_get_data64(cqe);
            if (i < n) {
                b->rq[i].res = cqe->res;
            }
            seen++;
        }
        io_uring_cq_advance(&b->ring, seen);
    }
    /* In queue order; a client that closed meanwhile was forgotten (its bytes go with it). */
    for (unsigned i = 0; i < n; i++) {
        struct iobatch_rq *rq = &b->rq[i];
        if (!rq->c || rq->res == -EAGAIN || rq->res == -EWOULDBLOCK || rq->res == -EINTR) {
            continue;
        }
        int got = rq->res;
        if (got < 0) {
            errno = -got;
            got = -1;
        }
        if (rq->kind == IOBATCH_IDLE_CLIENT) {
            /* pool_sock_recv's half that the kernel did not do */
            if (got > 0) {
                rq->c->sock.in->recvd += (uint32_t) got;
            }
            client_idle_read_done(rq->c, got);
        } else {
            relay_read_done(rq->c, rq->kind == IOBATCH_RELAY_CLIENT, got);
        }
    }
    b->n = 0;
    b->is_running = false;
    if (is_broken) {
        iobatch_fini(w); /* stops the prepare watcher that runs us: allowed in its callback */
    }
}

static void
iobatch_prepare_cb(EV_P_ ev_prepare *p, int revents)
{
    (void) loop;
    (void) revents;
    struct worker *w = p->data;
    if (w->iob->n > 0) {
        iobatch_run(w, w->iob);
    }
}

bool
iobatch_init(struct worker *w, enum cfg_io_engine engine, const char **why)
{
    *why = NULL;
    if (engine == CFG_IO_EPOLL) {
        return false;
    }
    struct iobatch *b = calloc(1, sizeof(*b));
    if (!b) {
        *why = "out of memory";
        return false;
    }
    /* The completion queue is twice the submission queue by default, so one submission's
     * completions always fit. */
    int rc = io_uring_queue_init(IOBATCH_DEPTH, &b->ring, 0);
    if (rc < 0) {
        *why = strerror(-rc);
        free(b);
        return false;
    }
    /* A kernel that rejects the opcode (before 5.6) fails here rather than on the hot path. */
    struct io_uring_probe *probe = io_uring_get_probe_ring(&b->ring);
    bool ok = probe && io_uring_opcode_supported(probe, IORING_OP_RECV);
    io_uring_free_probe(probe);
    if (!ok) {
        *why = "the kernel's io_uring has no IORING_OP_RECV";
        io_uring_queue_exit(&b->ring);
        free(b);
        return false;
    }
    ev_prepare_init(&b->prepare, iobatch_prepare_cb);
    b->prepare.data = w;
    ev_prepare_start(w->loop, &b->prepare);
    w->iob = b;
    return true;
}

void
iobatch_fini(struct worker *w)
{
    struct iobatch *b = w->iob;
    if (!b) {
        return;
    }
    ev_prepare_stop(w->loop, &b->prepare);
    io_uring_queue_exit(&b->ring);
    free(b);
    w->iob = NULL;
}

bool
iobatch_queue(struct worker *w, struct client *c, enum iobatch_kind kind)
{
    struct iobatch *b = w->iob;
    if (!b || b->is_running || c->is_recv_queued || b->n == IOBATCH_DEPTH) {
        return false;
    }
    b->rq[b->n].c = c;
    b->rq[b->n].kind = kind;
    b->n++;
    c->is_recv_queued = true;
    return true;
}

void
iobatch_forget(struct worker *w, struct client *c)
{
    struct iobatch *b = w->iob;
    if (!b) {
        return;
    }
    for (unsigned i = 0; i < b->n; i++) {
        if (b->rq[i].c == c) {
            b->rq[i].c = NULL;
        }
    }
    c->is_recv_queued = false;
}
