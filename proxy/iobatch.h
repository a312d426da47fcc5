/*
 * iobatch.h - io_engine = io_uring: the receives of a worker's loop iteration go to the kernel
 * in one io_uring submission.
 *
 * A relay read callback, and the read callback of a transaction-pooled client between
 * transactions, does not recv at once: it queues (client, which read) here. The
 * worker's ev_prepare hook, which libev runs once per iteration just before it polls again,
 * turns the queue into one RECV SQE per socket (MSG_DONTWAIT), submits them with one
 * io_uring_enter and waits for all of them; with MSG_DONTWAIT each completes during that call
 * (data, EOF, or -EAGAIN), so no request outlives the hook. That is what keeps the rest of
 * pgmux unchanged: a buffer is lent only while a receive is in flight inside the hook (idle
 * clients hold none), closing a connection never has to cancel anything, and a connection can
 * move to another worker whenever it could with epoll. libev keeps readiness, timers, signals
 * and inboxes; TLS sockets, logins and the console stay on the readiness path.
 *
 * Owned by the worker's thread.
 */
#ifndef PGMUX_PROXY_IOBATCH_H
#define PGMUX_PROXY_IOBATCH_H

#include <stdbool.h>

#include "proxy/config.h"

struct worker;
struct client;

/**
 * Set up w's ring for engine (nothing for CFG_IO_EPOLL). When io_uring cannot be set up
 * (old kernel, io_uring_disabled, seccomp) the worker stays on epoll: *why says so. Returns
 * whether the worker batches. Main thread, after worker_init.
 */
bool iobatch_init(struct worker *w, enum cfg_io_engine engine, const char **why);

/** Release the ring. Safe when there is none. */
void iobatch_fini(struct worker *w);

/** Which read a queued receive stands for, and where its result goes. */
enum iobatch_kind {
    IOBATCH_RELAY_CLIENT, /* an ACTIVE session's client socket: relay_read_done */
    IOBATCH_RELAY_SERVER, /* an ACTIVE session's server socket: relay_read_done */
    IOBATCH_IDLE_CLIENT,  /* a transaction-pooled client with no server: client_idle_read_done */
};

/**
 * Queue a receive for c; false when the worker does not batch, the queue is full, or c already
 * has a receive queued this iteration (the caller then reads at once, as epoll does: a session
 * has at most one entry, so handling one entry never changes another's session).
 */
bool iobatch_queue(struct worker *w, struct client *c, enum iobatch_kind kind);

/** c is closing: drop its queued receive. */
void iobatch_forget(struct worker *w, struct client *c);

#endif
