/*
 * iobatch.c - io_engine = io_uring: the receives and sends of a loop iteration go to the kernel
 * in batches, none outliving the iteration (see iobatch.h for why).
 *
 * The hook works in rounds. A round turns the queue into SQEs (receives first, since making
 * room for one may replace a buffer; then sends, gathered from the buffers as they are now),
 * submits them in one io_uring_enter and waits for every completion (MSG_DONTWAIT: at once).
 * Then, before anything else runs, the bytes each send moved are booked (so every buffer agrees
 * with the kernel whatever a later completion does), and the completions are handled in queue
 * order. That handling queues the sends it causes (a query for its server, an answer for its
 * client) into the other queue, and the next round submits them; the hook ends when a round
 * queued nothing, so no byte waits for the next wake-up. A request-response exchange costs a
 * worker one epoll_wait and two io_uring_enter per iteration, however many sessions it serves.
 */
#include "proxy/iobatch.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ev.h>
#include <liburing.h>

#include "common/log.h"
#include "pool/pool.h"
#include "pool/sock.h"
#include "proxy/client.h"
#include "proxy/relay_int.h"
#include "proxy/worker.h"

/* Requests one round may carry; beyond them a callback reads or writes at once. Sized so a
 * ring costs a worker a few pages. */
#define IOBATCH_DEPTH 256

enum iobatch_op {
    IOBATCH_OP_RECV_CLIENT = IOBATCH_RELAY_CLIENT,
    IOBATCH_OP_RECV_SERVER = IOBATCH_RELAY_SERVER,
    IOBATCH_OP_RECV_IDLE = IOBATCH_IDLE_CLIENT,
    IOBATCH_OP_SEND_C2S, /* relay flush towards the server */
    IOBATCH_OP_SEND_S2C, /* relay flush towards the client */
};

struct iobatch_rq {
    struct client *c; /* NULL once the client closed, or when the request was dropped */
    enum iobatch_op op;
    int res;                 /* the completion's result */
    struct relay_send snd;   /* sends: what went into the SQE */
    struct buf *rbuf;        /* receives: the buffer the bytes go to */
    struct pool_sock *rsock; /* receives: the socket read (valid until the round's handling) */
    struct msghdr mh;        /* sends with two pieces: IORING_OP_SENDMSG's header */
};

struct iobatch_queue {
    unsigned n;
    struct iobatch_rq rq[IOBATCH_DEPTH];
};

struct iobatch {
    struct io_uring ring;
    ev_prepare prepare;
    bool is_running;    /* inside the hook: receives are read at once */
    bool is_broken;     /* a submission failed: everything goes the epoll way from now on */
    bool has_run;       /* done_iter is set */
    bool is_disabled;   /* made with IORING_SETUP_R_DISABLED: the worker's thread enables it */
    bool has_reg_fd;    /* the ring's fd is registered with the worker's thread */
    unsigned done_iter; /* ev_iteration() when the hook last ran: until libev polls again,
                           nothing may be queued (another prepare watcher runs after us) */
    unsigned fill;      /* q[fill] takes new requests; the hook runs the other one */
    struct iobatch_queue q[2];
};

static bool
op_is_send(enum iobatch_op op)
{
    return op == IOBATCH_OP_SEND_C2S || op == IOBATCH_OP_SEND_S2C;
}

static bool *
send_flag(struct client *c, bool from_client)
{
    return from_client ? &c->is_c2s_send_queued : &c->is_s2c_send_queued;
}

/* Turn rq into an SQE, or drop it (rq->c = NULL) when its session moved on. */
static bool
iobatch_prep(struct worker *w, struct iobatch *b, struct iobatch_rq *rq, uint64_t tag)
{
    struct client *c = rq->c;
    if (op_is_send(rq->op)) {
        bool from_client = rq->op == IOBATCH_OP_SEND_C2S;
        *send_flag(c, from_client) = false;
        if (c->state != CLIENT_ACTIVE || !c->sc || !relay_send_gather(c, from_client, &rq->snd)) {
            rq->c = NULL;
            return false;
        }
        struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
        /* The ring has IOBATCH_DEPTH entries and is empty here: never NULL. */
        if (rq->snd.n_iov == 1) {
            io_uring_prep_send(sqe, rq->snd.fd, rq->snd.iov[0].iov_base, rq->snd.iov[0].iov_len,
                               MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            memset(&rq->mh, 0, sizeof(rq->mh));
            rq->mh.msg_iov = rq->snd.iov;
            rq->mh.msg_iovlen = (size_t) rq->snd.n_iov;
            io_uring_prep_sendmsg(sqe, rq->snd.fd, &rq->mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        io_uring_sqe_set_data64(sqe, tag);
        return true;
    }
    c->is_recv_queued = false;
    /* Whatever ran since the callback queued it may have ended the relay or the wait. */
    struct pool_sock *src = NULL;
    if (rq->op == IOBATCH_OP_RECV_IDLE) {
        src = c->state == CLIENT_IDLE ? &c->sock : NULL;
    } else if (c->state == CLIENT_ACTIVE && c->sc) {
        src = rq->op == IOBATCH_OP_RECV_CLIENT ? &c->sock : &c->sc->sock;
    }
    if (!src || src->fd < 0 || src->ssl || !src->is_reading) {
        rq->c = NULL;
        return false;
    }
    if (rq->op == IOBATCH_OP_RECV_IDLE) {
        if (pool_sock_recv_room(src, &w->pw.bufs) != 0) {
            rq->c = NULL;
            client_idle_read_done(c, -1);
            return false;
        }
    } else if (!relay_read_room(c, rq->op == IOBATCH_OP_RECV_CLIENT)) {
        rq->c = NULL;
        return false;
    }
    struct buf *in = src->in;
    rq->rbuf = in;
    rq->rsock = src;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
    io_uring_prep_recv(sqe, src->fd, in->data + in->recvd, buf_space(in), MSG_DONTWAIT);
    io_uring_sqe_set_data64(sqe, tag);
    return true;
}

/* Submit what is prepared and wait for all of it; false when the ring failed. */
static bool
iobatch_submit(struct worker *w, struct iobatch *b, struct iobatch_queue *q, unsigned submitted)
{
    /* The kernel stops a submission early only when it cannot take an SQE (memory); it then
     * returns without waiting, and the rest go in the next call. Each call that takes all that
     * is left waits until every completion is there: with MSG_DONTWAIT, at once. */
    unsigned sent = 0;
    int tries = 0;
    bool ok = true;
    while (sent < submitted) {
        int rc = io_uring_submit_and_wait(&b->ring, submitted);
        if (rc > 0) {
            sent += (unsigned) rc;
        } else if (rc == -EINTR || ((rc == -EAGAIN || rc == 0) && ++tries < 8)) {
            continue;
        } else {
            /* What was not submitted must never be: the ring goes, this worker reads and
             * writes the epoll way from now on; sockets not read stay readable, and sends not
             * made look like a full socket (the write watcher takes them). */
            log_error("worker %d: io_uring_submit: %s; back to epoll", w->idx,
                      rc < 0 ? strerror(-rc) : "no progress");
            ok = false;
            break;
        }
    }
    unsigned head, seen = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&b->ring, head, cqe)
    {
        uint64_t i = io_uring_cqe_get_data64(cqe);
        if (i < q->n) {
            q->rq[i].res = cqe->res;
        }
        seen++;
    }
    io_uring_cq_advance(&b->ring, seen);
    return ok;
}

/* Whether a receive's session still reads that socket the way it did when it was prepared. */
static bool
recv_applies(const struct iobatch_rq *rq, const struct client *c)
{
    if (rq->op == IOBATCH_OP_RECV_IDLE) {
        return c->state == CLIENT_IDLE;
    }
    if (c->state != CLIENT_ACTIVE || !c->sc) {
        return false;
    }
    return rq->rsock == (rq->op == IOBATCH_OP_RECV_CLIENT ? &c->sock : &c->sc->sock);
}

/* One round: the queue q in one submission, then its completions in order. */
static void
iobatch_round(struct worker *w, struct iobatch *b, struct iobatch_queue *q)
{
    unsigned n = q->n;
    unsigned submitted = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned i = 0; i < n; i++) {
            struct iobatch_rq *rq = &q->rq[i];
            if (pass == 0) {
                rq->res = -EAGAIN;
            }
            if (rq->c && op_is_send(rq->op) == (pass == 1) &&
                iobatch_prep(w, b, rq, (uint64_t) i)) {
                submitted++;
            }
        }
    }
    if (submitted > 0 && !iobatch_submit(w, b, q, submitted)) {
        b->is_broken = true; /* flushes from here on write at once */
    }
    /* Book every byte moved before any completion is handled: handling one may tear down,
     * flush at once or give back the buffer of a session further down the queue, and must see
     * buffers that agree with the kernel. */
    for (unsigned i = 0; i < n; i++) {
        struct iobatch_rq *rq = &q->rq[i];
        if (rq->c && !op_is_send(rq->op) && rq->res == -EAGAIN && rq->rsock->in == rq->rbuf &&
            buf_is_empty(rq->rbuf)) {
            /* Nothing came: a buffer lent for the receive goes back (idle sessions hold none). */
            buf_put(&w->pw.bufs, rq->rbuf);
            rq->rsock->in = NULL;
        }
        if (!rq->c || rq->res <= 0) {
            continue;
        }
        if (op_is_send(rq->op)) {
            relay_send_advance(&rq->snd, (uint32_t) rq->res);
        } else {
            rq->rbuf->recvd += (uint32_t) rq->res;
        }
    }
    /* In queue order. A session may have a receive and a send here, and handling one may end
     * it or its relay: what no longer applies is skipped (bytes already received stay in the
     * buffer for whoever reads it next). The session's memory stays valid until the end of the
     * iteration (CONVENTIONS 3.1.5). */
    for (unsigned i = 0; i < n; i++) {
        struct iobatch_rq *rq = &q->rq[i];
        struct client *c = rq->c;
        if (!c || c->state == CLIENT_CLOSED) {
            continue;
        }
        if (!op_is_send(rq->op) && !recv_applies(rq, c)) {
            continue;
        }
        if (op_is_send(rq->op)) {
            relay_send_done(c, rq->op == IOBATCH_OP_SEND_C2S, rq->res > 0 ? 0 : rq->res);
            continue;
        }
        if (rq->res == -EAGAIN || rq->res == -EWOULDBLOCK || rq->res == -EINTR) {
            continue;
        }
        int got = rq->res;
        if (got < 0) {
            errno = -got;
            got = -1;
        }
        if (rq->op == IOBATCH_OP_RECV_IDLE) {
            client_idle_read_done(c, got);
        } else {
            relay_read_done(c, rq->op == IOBATCH_OP_RECV_CLIENT, got);
        }
    }
    q->n = 0;
}

static void
iobatch_prepare_cb(EV_P_ ev_prepare *p, int revents)
{
    (void) loop;
    (void) revents;
    struct worker *w = p->data;
    struct iobatch *b = w->iob;
    b->is_running = true;
    /* Each round's handling queues into the other queue what it causes; stop when a round
     * caused nothing. A connection given back in a round goes to a waiter of this worker
     * through the worker's own message list: run it here, or the waiter's request would be
     * queued after this hook and wait for the next wake-up. */
    for (;;) {
        pool_worker_run_local(&w->pw);
        if (b->q[b->fill].n == 0 || b->is_broken) {
            break;
        }
        struct iobatch_queue *q = &b->q[b->fill];
        b->fill ^= 1;
        iobatch_round(w, b, q);
    }
    b->is_running = false;
    b->done_iter = ev_iteration(w->loop);
    b->has_run = true;
    if (b->is_broken) {
        iobatch_fini(w); /* stops the prepare watcher that runs us: allowed in its callback */
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
     * completions always fit. Only the worker's thread submits, and every request completes
     * inside the submission that carries it, so the kernel need not be ready for other
     * submitters nor interrupt the thread to run completion work (SINGLE_ISSUER,
     * DEFER_TASKRUN: Linux 6.1). The ring is made here, on the main thread, disabled, and
     * enabled by the worker's thread (iobatch_thread_start), which then is its one submitter.
     * Older kernels refuse the flags: they get a ring without them. */
    static const unsigned flag_sets[] = {
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_R_DISABLED | IORING_SETUP_SINGLE_ISSUER |
            IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int rc = -EINVAL;
    for (size_t k = 0; k < sizeof(flag_sets) / sizeof(flag_sets[0]) && rc == -EINVAL; k++) {
        struct io_uring_params pa;
        memset(&pa, 0, sizeof(pa));
        pa.flags = flag_sets[k];
        rc = io_uring_queue_init_params(IOBATCH_DEPTH, &b->ring, &pa);
        b->is_disabled = rc >= 0 && (flag_sets[k] & IORING_SETUP_R_DISABLED) != 0;
    }
    if (rc < 0) {
        *why = strerror(-rc);
        free(b);
        return false;
    }
    /* A kernel that rejects an opcode (before 5.6) fails here rather than on the hot path. */
    struct io_uring_probe *probe = io_uring_get_probe_ring(&b->ring);
    bool ok = probe && io_uring_opcode_supported(probe, IORING_OP_RECV) &&
              io_uring_opcode_supported(probe, IORING_OP_SEND) &&
              io_uring_opcode_supported(probe, IORING_OP_SENDMSG);
    io_uring_free_probe(probe);
    if (!ok) {
        *why = "the kernel's io_uring has no IORING_OP_RECV or IORING_OP_SEND";
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

bool
iobatch_thread_start(struct worker *w)
{
    struct iobatch *b = w->iob;
    if (!b) {
        return true;
    }
    if (b->is_disabled) {
        /* io_uring_enable_rings, which Debian's liburing 2.3 declares but does not export */
        long rc =
            syscall(__NR_io_uring_register, b->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
        if (rc < 0) {
            log_error("worker %d: enabling the io_uring: %s; back to epoll", w->idx,
                      strerror(errno));
            iobatch_fini(w);
            return false;
        }
        b->is_disabled = false;
    }
    /* io_uring_enter then finds the ring without looking up (and counting a reference to) its
     * file in the process's descriptor table each time; the registration is this thread's. */
    b->has_reg_fd = io_uring_register_ring_fd(&b->ring) == 1;
    return true;
}

void
iobatch_thread_stop(struct worker *w)
{
    struct iobatch *b = w->iob;
    if (b && b->has_reg_fd) {
        (void) io_uring_unregister_ring_fd(&b->ring);
        b->has_reg_fd = false;
    }
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

/* The hook ran and libev has not polled since: a request queued now would wait for the next
 * wake-up (the caller does it at once instead). */
static bool
iobatch_is_done(struct worker *w, const struct iobatch *b)
{
    return !b->is_running && b->done_iter == ev_iteration(w->loop) && b->has_run;
}

bool
iobatch_queue(struct worker *w, struct client *c, enum iobatch_kind kind)
{
    struct iobatch *b = w->iob;
    struct iobatch_queue *q;
    if (!b || b->is_running || b->is_broken || iobatch_is_done(w, b) || c->is_recv_queued ||
        (q = &b->q[b->fill])->n == IOBATCH_DEPTH) {
        return false;
    }
    q->rq[q->n].c = c;
    q->rq[q->n].op = (enum iobatch_op) kind;
    q->n++;
    c->is_recv_queued = true;
    return true;
}

bool
iobatch_queue_send(struct worker *w, struct client *c, bool from_client)
{
    struct iobatch *b = w->iob;
    if (!b || b->is_broken || iobatch_is_done(w, b)) {
        return false;
    }
    bool *flag = send_flag(c, from_client);
    if (*flag) {
        return true; /* the queued send gathers these bytes too */
    }
    struct iobatch_queue *q = &b->q[b->fill];
    if (q->n == IOBATCH_DEPTH) {
        return false;
    }
    q->rq[q->n].c = c;
    q->rq[q->n].op = from_client ? IOBATCH_OP_SEND_C2S : IOBATCH_OP_SEND_S2C;
    q->n++;
    *flag = true;
    return true;
}

void
iobatch_forget(struct worker *w, struct client *c)
{
    struct iobatch *b = w->iob;
    c->is_recv_queued = false;
    c->is_c2s_send_queued = false;
    c->is_s2c_send_queued = false;
    if (!b) {
        return;
    }
    for (int k = 0; k < 2; k++) {
        for (unsigned i = 0; i < b->q[k].n; i++) {
            if (b->q[k].rq[i].c == c) {
                b->q[k].rq[i].c = NULL;
            }
        }
    }
}
