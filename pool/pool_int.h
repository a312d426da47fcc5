/*
 * pool_int.h - what pool.c and conn.c share and nobody else sees.
 */
#ifndef PGMUX_POOL_POOL_INT_H
#define PGMUX_POOL_POOL_INT_H

#include "pool/pool.h"

/* A connection (or, with sc NULL, the right to open one) handed to a waiter's worker. */
struct pool_grant_msg {
    struct pool_msg msg;
    struct pool *pool;
    struct pool_conn *sc;
    uint64_t waiter_id;
};

/* Ask a worker that holds idle connections of pool to serve the queue. */
struct pool_steal_msg {
    struct pool_msg msg;
    struct pool *pool;
    int hops; /* workers this request has already visited */
};

/* conn.c: a just-made-idle or just-opened connection goes to the queue or the idle list. */
void pool_conn_make_idle(struct pool_conn *sc);

/* pool.c: hand sc (or a slot when NULL) to the oldest waiter if there is one; under p->mu.
 * Returns true when handed. */
bool pool_serve_waiter_locked(struct pool_worker *w, struct pool *p, struct pool_conn *sc);

/* pool.c: a connection of p is gone for good; give its slot to a waiter or back. */
void pool_slot_release(struct pool_worker *w, struct pool *p);

/* pool.c: move an idle connection out of w's list and its loop, ready to be given away. */
void pool_conn_detach_idle(struct pool_conn *sc);

/* pool.c: how many more connections are open than max_open_conns allows (after a reload
 * lowered it), 0 when none. Takes p->mu. */
int pool_open_excess(struct pool *p);

/* pool.c: take a slot in each of p's caps (max_db_connections, max_user_connections); false,
 * with nothing taken, when one is full. Atomics only: callable under p->mu. */
bool pool_caps_take(struct pool *p);

/* pool.c: give back what pool_caps_take took, waking nobody (under p->mu, right after a take
 * that is not used). */
void pool_caps_untake(struct pool *p);

/* pool.c: whether a pool sharing one of p's full caps waits for room (the last tick or the one
 * before found it so): p should close an idle connection. */
bool pool_caps_wanted(struct pool *p, int64_t now_us);

/* conn.c: worker-side housekeeping of one pool. */
void pool_local_tick(struct pool_worker *w, struct pool *p, int64_t now_us);

#endif
