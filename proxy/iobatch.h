/*
 * iobatch.h - io_engine = io_uring: the receives and sends of a worker's loop iteration go to
 * the kernel in batches of one io_uring submission each.
 *
 * A relay read callback, and the read callback of a transaction-pooled client between
 * transactions, does not recv at once: it queues (client, which read) here; a relay flush to a
 * plaintext socket does not sendmsg: it queues (client, which direction). The worker's
 * ev_prepare hook, which libev runs once per iteration just before it polls again, turns the
 * queue into one RECV or SEND SQE per socket (MSG_DONTWAIT), submits them with one
 * io_uring_enter and waits for all of them; with MSG_DONTWAIT each completes during that call
 * (data, EOF, bytes taken, or -EAGAIN), so no request outlives the hook. Handling the results
 * queues the sends they cause, and the hook submits those too before libev polls (see
 * iobatch.c). That is what keeps the rest of pgmux unchanged: a buffer is lent only while bytes
 * are in flight (idle clients hold none), closing a connection never has to cancel anything,
 * and a connection can move to another worker whenever it could with epoll. A send that the
 * socket takes only in part leaves the rest to the write watcher, as with epoll. libev keeps
 * readiness, timers, signals and inboxes; TLS sockets, logins and the console stay on the
 * readiness path.
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

/**
 * On the worker's thread, before its loop runs: make that thread the ring's submitter. false
 * when the ring could not be enabled: the worker then runs on epoll (logged).
 */
bool iobatch_thread_start(struct worker *w);

/** On the worker's thread, after its loop ended: drop what belongs to the thread. */
void iobatch_thread_stop(struct worker *w);

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

/**
 * Queue a relay flush of c towards the server (from_client) or the client: the bytes are
 * gathered when the hook submits, then relay_send_done goes on. true when queued or already
 * queued; false when the worker does not batch or the queue is full (the caller writes at once).
 */
bool iobatch_queue_send(struct worker *w, struct client *c, bool from_client);

/** c is closing: drop its queued receive and sends. */
void iobatch_forget(struct worker *w, struct client *c);

#endif
