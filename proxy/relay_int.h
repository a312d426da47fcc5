/*
 * relay_int.h - what relay.c shares with txn.c: one message as the relay sees it, and what a
 * handler decides about it.
 */
#ifndef PGMUX_PROXY_RELAY_INT_H
#define PGMUX_PROXY_RELAY_INT_H

#include <stdbool.h>
#include <stdint.h>

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

#endif
