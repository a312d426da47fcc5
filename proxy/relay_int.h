/*
 * relay_int.h - what relay.c shares with txn.c (one message as the relay sees it, and what a
 * handler decides about it) and with iobatch.c (a flush in parts, for io_engine = io_uring).
 */
#ifndef PGMUX_PROXY_RELAY_INT_H
#define PGMUX_PROXY_RELAY_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "pool/sock.h"
#include "protocol/wire.h"

struct client;

enum relay_action {
    RELAY_OK,        /* forward the message */
    RELAY_WAIT,      /* the handler must see the whole message: wait for the rest */
    RELAY_DROP,      /* remove it (the handler may have emitted something in its place) */
    RELAY_PAUSE,     /* bytes approved before it must drain before the handler can emit */
    RELAY_TERMINATE, /* the client said goodbye */
    RELAY_EPROTOCOL, /* the source broke the protocol */
    RELAY_ENOMEM,
};

struct relay_msg {
    struct proto_header h;
    const uint8_t *body; /* the body, when has_full */
    bool has_full;       /* the whole message is in the buffer */
    uint32_t pending;    /* approved source bytes not yet written (emitting needs 0) */
    struct pool_sock *src;
    struct pool_sock *dst;
};

/**
 * Append a message pgmux writes itself to dst's output, after everything already approved.
 * Only valid when the source has no approved bytes pending (relay_msg.pending == 0).
 * 0, or -1 when out of memory.
 */
int relay_emit(struct client *c, struct pool_sock *dst, const void *data, uint32_t len);

/*
 * io_engine = io_uring: a relay flush goes to the kernel as one send in the worker's batch
 * (iobatch.c) instead of a sendmsg of its own. The bytes are gathered when the batch is
 * submitted, not when the flush is asked for, so whatever the session appended meanwhile goes
 * in the same send and nothing points at a buffer that was replaced.
 */
struct relay_send {
    int fd;              /* the destination socket */
    int n_iov;           /* 1 or 2 */
    struct iovec iov[2]; /* dst->out's pending bytes, then src->in's approved ones */
    struct buf *out;     /* dst->out when it has bytes in iov[0], else NULL */
    uint32_t out_len;    /* how many of them */
    struct buf *in;      /* src->in when it has bytes in the iov, else NULL */
};

/**
 * Fill s with what c (which has a server) owes the destination of one direction. false when
 * nothing is owed or the destination is TLS or closed. Worker thread.
 */
bool relay_send_gather(struct client *c, bool from_client, struct relay_send *s);

/** n bytes of s went: advance the buffers' sent offsets. Nothing else runs (see iobatch.c). */
void relay_send_advance(const struct relay_send *s, uint32_t n);

/**
 * A batched send of c's is done (res: bytes, or -errno; -EAGAIN when the socket was full):
 * give back drained buffers, wait for writability when bytes are left, go on where the flush
 * left the session (resume a paused walk, give the server back). May tear the session down.
 */
void relay_send_done(struct client *c, bool from_client, int res);

#endif
