/*
 * relay.c - the byte path of an ACTIVE session, written once for both directions
 * (CONVENTIONS 3.2.4).
 *
 * Per wake-up: one recv into the source's lent buffer, a walk over message headers that only
 * looks inside the messages pgmux must understand, then one writev to the destination of
 * (bytes pgmux wrote itself, approved relay bytes). Forwarded bodies are never copied (3.2.3).
 * When the destination cannot take more, reading from the source stops until it drains: that
 * is the backpressure that keeps a slow reader of a huge result from growing pgmux's memory.
 * A TLS destination takes the same bytes through relay_flush_tls (one test of dst->ssl is all
 * the plaintext path pays); a TLS source is read with pool_sock_read, which also comes back
 * for bytes OpenSSL decrypted but the buffer had no room for.
 *
 * Session pooling looks at the client's type bytes (Terminate, and which messages owe a
 * ReadyForQuery) and at the server's ReadyForQuery and ParameterStatus. Transaction and
 * statement pooling hand every message to txn.c, which may also drop a message or write its own
 * in its place; writing needs the approved bytes before it to have left first, so the walk
 * pauses there until they drain (is_*_paused) and then resumes where it stopped.
 *
 * Runs on the session's worker.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "common/log.h"
#include "common/sysio.h"
#include "pool/pool.h"
#include "protocol/messages.h"
#include "protocol/wire.h"
#include "proxy/client.h"
#include "proxy/config.h"
#include "proxy/iobatch.h"
#include "proxy/relay_int.h"
#include "proxy/stats.h"
#include "proxy/worker.h"

static bool relay_flush_how(struct client *c, bool from_client, bool is_now);
static bool relay_flush(struct client *c, bool from_client);
static void relay_pump(struct client *c, bool from_client);

int
relay_emit(struct client *c, struct pool_sock *dst, const void *data, uint32_t len)
{
    if (buf_reserve(&c->w->pw.bufs, &dst->out, len) != 0) {
        return -1;
    }
    struct buf *o = dst->out;
    memcpy(o->data + o->recvd, data, len);
    o->recvd += len;
    o->parsed = o->recvd;
    return 0;
}

/* Session pooling: the little the relay must know. */
static enum relay_action
session_client_msg(struct client *c, const struct relay_msg *m)
{
    struct pool_conn *sc = c->sc;
    switch (m->h.type) {
    case 'X':
        return RELAY_TERMINATE;
    case 'Q': /* simple query: one ReadyForQuery, however many statements */
    case 'F': /* function call */
        sc->expect_ready++;
        break;
    case 'S': /* Sync: one ReadyForQuery, even after an error skipped the batch */
        sc->expect_ready++;
        sc->is_unsynced = false;
        break;
    case 'P':
    case 'B':
    case 'E':
    case 'D':
    case 'C':
        sc->is_unsynced = true;
        break;
    default:
        break;
    }
    return RELAY_OK;
}

static enum relay_action
session_server_msg(struct client *c, const struct relay_msg *m)
{
    struct pool_conn *sc = c->sc;
    if (m->h.type != 'Z' && m->h.type != 'S') {
        return RELAY_OK;
    }
    if (!m->has_full) {
        return RELAY_WAIT;
    }
    size_t len = m->h.len - 4;
    if (m->h.type == 'Z') {
        if (proto_read_ready(m->body, len, &sc->txn_status) != ST_OK) {
            return RELAY_EPROTOCOL;
        }
        if (sc->expect_ready > 0) {
            sc->expect_ready--;
        }
        return RELAY_OK;
    }
    const char *name, *value;
    if (proto_read_parameter_status(m->body, len, &name, &value) != ST_OK) {
        return RELAY_EPROTOCOL;
    }
    return pool_params_set(&sc->params, name, value) == ST_OK ? RELAY_OK : RELAY_ENOMEM;
}

/*
 * Keep the start of a request's SQL for the slow-query log: a Query's text, or a Parse's after
 * the statement name; avail is how much of the body is in the buffer (the rest is never waited
 * for). A Bind/Execute of a statement prepared earlier leaves a placeholder.
 */
static void
relay_note_text(struct client *c, const struct relay_msg *m, uint32_t avail)
{
    struct client_aux *x = client_aux(c);
    if (!x) {
        return;
    }
    if (!x->query_text) {
        x->query_text = malloc(CLIENT_QUERY_TEXT_LEN);
        if (!x->query_text) {
            return;
        }
    }
    char *text = x->query_text;
    const char *p = (const char *) m->body;
    uint32_t n = avail;
    if (m->h.type == 'P') {
        const char *nul = memchr(p, '\0', n);
        if (!nul) {
            n = 0;
        } else {
            n -= (uint32_t) (nul + 1 - p);
            p = nul + 1;
        }
    } else if (m->h.type != 'Q') {
        snprintf(text, CLIENT_QUERY_TEXT_LEN, "(prepared statement)");
        return;
    }
    const char *nul = memchr(p, '\0', n);
    if (nul) {
        n = (uint32_t) (nul - p);
    }
    if (n > CLIENT_QUERY_TEXT_LEN - 1) {
        n = CLIENT_QUERY_TEXT_LEN - 1;
    }
    memcpy(text, p, n);
    text[n] = '\0';
    /* ALTER ROLE ... PASSWORD '...' and friends: the log never carries a secret. */
    if (strcasestr(text, "password") || strcasestr(text, "secret")) {
        snprintf(text, CLIENT_QUERY_TEXT_LEN, "(text hidden: it may hold a password)");
    }
}

/*
 * Request and transaction times use the loop's clock, taken once per wake-up: the moment the
 * bytes were seen, which is what a latency should measure, at no system call per message. It
 * follows the wall clock; a step of the clock can skew one sample (negative ones count as 0).
 */
static inline int64_t
relay_now_us(const struct client *c)
{
    return (int64_t) (ev_now(c->w->loop) * 1e6);
}

/* Out of line: its buffers would make every caller's frame bigger. */
static __attribute__((noinline, cold)) void
relay_log_slow(struct client *c, int64_t us)
{
    stats_add(&c->w->stats->g.slow_queries, 1);
    char u[96], d[96], q[CLIENT_QUERY_TEXT_LEN * 4 + 4];
    log_warning("event=slow_query client=" CLIENT_ID_FMT
                " addr=%s db=%s user=%s node=%s server=%llu duration_ms=%.3f query=%s",
                CLIENT_ID(c), client_addr(c), log_value(client_database(c), d, sizeof(d)),
                log_value(client_user(c), u, sizeof(u)), c->pool->node->name,
                (unsigned long long) c->sc->id, (double) us / 1000.0,
                log_value(c->aux && c->aux->query_text ? c->aux->query_text : "", q, sizeof(q)));
}

/* A request's answer ended with ReadyForQuery: latency, transaction end, slow-query log. */
static void
relay_request_done(struct client *c, struct stats_pool *sp)
{
    struct pool_conn *sc = c->sc;
    int64_t now = relay_now_us(c);
    sc->ready_us = now + c->w->mono_minus_loop_us; /* worker_now_us */
    if (c->req_start_us) {
        int64_t us = now - c->req_start_us;
        if (sp) {
            stats_hist_observe(&sp->query_latency, us);
            stats_add(&sp->query_time_us, (uint64_t) (us > 0 ? us : 0));
        }
        int64_t min_ms = c->w->cfg->log_min_duration_ms;
        if (UNLIKELY(min_ms >= 0 && us >= min_ms * 1000)) {
            relay_log_slow(c, us);
        }
        /* Pipelined requests: the next answer's clock starts now. */
        c->req_start_us = sc->expect_ready > 0 ? now : 0;
    }
    if (sc->txn_status == 'I' && c->xact_start_us) {
        if (sp) {
            stats_add(&sp->xact_count, 1);
            int64_t us = now - c->xact_start_us;
            stats_add(&sp->xact_time_us, (uint64_t) (us > 0 ? us : 0));
        }
        c->xact_start_us = 0;
    }
}

/* Count a message that was forwarded (or answered by pgmux in its place). */
static void
relay_account(struct client *c, bool from_client, const struct relay_msg *m, uint32_t avail)
{
    struct stats_pool *sp = c->stats;
    if (from_client) {
        switch (m->h.type) {
        case 'Q':
        case 'E':
        case 'F':
            if (sp) {
                stats_add(&sp->query_count, 1);
            }
            /* fall through */
        case 'P':
        case 'B':
        case 'D':
        case 'C':
        case 'S':
            if (!c->req_start_us) {
                c->req_start_us = relay_now_us(c);
                if (!c->xact_start_us) {
                    c->xact_start_us = c->req_start_us;
                }
                if (c->w->cfg->log_min_duration_ms >= 0) {
                    relay_note_text(c, m, avail);
                }
            } else if (m->h.type == 'Q' || m->h.type == 'P') {
                /* A later statement in the same request names it better than a Bind did. */
                if (c->w->cfg->log_min_duration_ms >= 0 && c->aux && c->aux->query_text &&
                    strcmp(c->aux->query_text, "(prepared statement)") == 0) {
                    relay_note_text(c, m, avail);
                }
            }
            break;
        default:
            break;
        }
        return;
    }
    if (m->h.type == 'Z') {
        relay_request_done(c, sp);
    } else if (m->h.type == 'E' && sp) {
        struct proto_error_fields ef;
        if (m->has_full && proto_read_error(m->body, m->h.len - 4, &ef) == ST_OK) {
            stats_add(&sp->errors[STATS_ERR_SERVER][stats_sqlstate_class(ef.code)], 1);
        }
    }
}

/* Decide about messages in src->in one by one; see the file comment. */
static enum relay_action
relay_parse(struct client *c, bool from_client)
{
    struct pool_sock *src = from_client ? &c->sock : &c->sc->sock;
    struct pool_sock *dst = from_client ? &c->sc->sock : &c->sock;
    bool is_txn = c->mode != CFG_POOL_SESSION;
    uint32_t max = from_client ? c->w->cfg->max_message_size : PROTO_MAX_MSG_LEN;
    struct buf *b;
    while ((b = src->in) != NULL && b->parsed < b->recvd) {
        if (src->remain) {
            uint32_t take = buf_unparsed(b) < src->remain ? buf_unparsed(b) : src->remain;
            b->parsed += take;
            src->remain -= take;
            continue;
        }
        struct relay_msg m;
        const uint8_t *p = (const uint8_t *) b->data + b->parsed;
        enum status st = proto_header_read(p, buf_unparsed(b), max, &m.h);
        if (st == ST_INCOMPLETE) {
            break;
        }
        if (st != ST_OK) {
            return RELAY_EPROTOCOL;
        }
        if (from_client ? !proto_frontend_type_valid(m.h.type)
                        : !proto_backend_type_valid(m.h.type)) {
            return RELAY_EPROTOCOL;
        }
        uint64_t total = proto_header_total(&m.h);
        m.has_full = buf_unparsed(b) >= total;
        m.body = p + PROTO_HEADER_LEN;
        m.pending = buf_pending(b);
        m.src = src;
        m.dst = dst;
        if (!from_client && m.h.type == 'E' && !m.has_full) {
            return RELAY_OK; /* counted by SQLSTATE class: wait for the whole (small) message */
        }
        enum relay_action a;
        if (is_txn) {
            a = (enum relay_action)(from_client ? txn_client_msg(c, &m) : txn_server_msg(c, &m));
        } else {
            a = from_client ? session_client_msg(c, &m) : session_server_msg(c, &m);
        }
        /* Statistics look at client requests and at the server's ReadyForQuery and
         * ErrorResponse only; rows and the rest cost them nothing. */
        if ((a == RELAY_OK || a == RELAY_DROP) &&
            (from_client || m.h.type == 'Z' || m.h.type == 'E')) {
            uint32_t avail = buf_unparsed(b) - PROTO_HEADER_LEN;
            relay_account(c, from_client, &m, avail < m.h.len - 4 ? avail : m.h.len - 4);
        }
        switch (a) {
        case RELAY_OK:
            if (m.has_full) {
                b->parsed += (uint32_t) total; /* the common case: no second turn of the loop */
            } else {
                src->remain = (uint32_t) total;
            }
            break;
        case RELAY_WAIT:
            return RELAY_OK; /* relay_read grows the buffer if the message cannot fit */
        case RELAY_DROP:
            ASSERT(m.has_full);
            if (buf_pending(b) == 0) {
                b->parsed += (uint32_t) total;
                b->sent = b->parsed;
            } else {
                memmove(b->data + b->parsed, b->data + b->parsed + total,
                        b->recvd - b->parsed - total);
                b->recvd -= (uint32_t) total;
            }
            break;
        default:
            return a;
        }
    }
    if (is_txn && !from_client) {
        /* Answers pgmux owes for requests it did not send go out when their turn comes. */
        enum relay_action a =
            pool_reqs_owes_fake(&c->sc->reqs) ? (enum relay_action) txn_emit_fakes(c) : RELAY_OK;
        if (a != RELAY_OK) {
            return a;
        }
    }
    return RELAY_OK;
}

static void
relay_server_lost(struct client *c, const char *why)
{
    struct pool_conn *sc = c->sc;
    /* Whatever complete messages the server managed to send (its FATAL, typically) go first,
     * now: the server's buffer goes with it. */
    if (!relay_flush_how(c, false, true)) {
        return;
    }
    bool at_boundary = sc->sock.remain == 0 && (!sc->sock.in || buf_pending(sc->sock.in) == 0);
    sc->is_broken = true;
    c->sc = NULL;
    pool_conn_close(sc, why);
    if (at_boundary) {
        client_fail(c, ST_ESERVER_CLOSED, why);
    } else {
        client_close(c, why);
    }
}

/*
 * Write dst->out, then src->in's approved bytes, in one system call. Returns false when the
 * session was torn down (a peer is gone).
 */
/*
 * TLS destination: the approved source bytes are copied behind dst->out and the lot goes out
 * in as few SSL_write calls as the records allow, instead of one TLS record per piece. Once
 * copied they count as sent for the source (its buffer goes back to the worker); what the
 * socket did not take waits in dst->out, which is what blocks reading from the source. The
 * copy is cheap next to the encryption, and it keeps OpenSSL's retry rule (the same bytes
 * first on the next SSL_write) trivially true.
 */
static bool
relay_flush_tls(struct client *c, bool from_client)
{
    struct worker *w = c->w;
    struct pool_sock *src = from_client ? &c->sock : &c->sc->sock;
    struct pool_sock *dst = from_client ? &c->sc->sock : &c->sock;
    struct buf *b = src->in;
    if (b && buf_pending(b)) {
        uint32_t n = buf_pending(b);
        if (buf_reserve(&w->pw.bufs, &dst->out, n) != 0) {
            client_fail(c, ST_ENOMEM, NULL);
            return false;
        }
        struct buf *o = dst->out;
        memcpy(o->data + o->recvd, b->data + b->sent, n);
        o->recvd += n;
        o->parsed = o->recvd;
        b->sent += n;
    }
    if (pool_sock_flush_out(dst, &w->pw.bufs) < 0) {
        if (from_client) {
            relay_server_lost(c, "could not write to the server");
        } else {
            client_close(c, "could not write to the client");
        }
        return false;
    }
    if (b && buf_is_empty(b)) {
        buf_put(&w->pw.bufs, b);
        src->in = NULL;
    }
    if (dst->out && buf_pending(dst->out)) {
        pool_sock_stop_read(w->loop, src);
        pool_sock_start_write(w->loop, dst);
    } else {
        pool_sock_stop_write(w->loop, dst);
        pool_sock_start_read(w->loop, src);
    }
    return true;
}

bool
relay_send_gather(struct client *c, bool from_client, struct relay_send *s)
{
    struct pool_sock *src = from_client ? &c->sock : &c->sc->sock;
    struct pool_sock *dst = from_client ? &c->sc->sock : &c->sock;
    if (dst->ssl || dst->fd < 0) {
        return false;
    }
    struct buf *o = dst->out;
    struct buf *b = src->in;
    s->fd = dst->fd;
    s->n_iov = 0;
    s->out = NULL;
    s->out_len = 0;
    s->in = NULL;
    if (o && buf_pending(o)) {
        s->iov[0].iov_base = o->data + o->sent;
        s->iov[0].iov_len = buf_pending(o);
        s->out = o;
        s->out_len = buf_pending(o);
        s->n_iov = 1;
    }
    if (b && buf_pending(b)) {
        s->iov[s->n_iov].iov_base = b->data + b->sent;
        s->iov[s->n_iov].iov_len = buf_pending(b);
        s->in = b;
        s->n_iov++;
    }
    return s->n_iov > 0;
}

void
relay_send_advance(const struct relay_send *s, uint32_t n)
{
    uint32_t t = n < s->out_len ? n : s->out_len;
    if (s->out) {
        s->out->sent += t;
    }
    if (s->in && n > t) {
        s->in->sent += n - t;
    }
}

/* A write to dst failed (errno set): the side it went to is gone. */
static void
relay_write_failed(struct client *c, bool from_client)
{
    if (from_client) {
        relay_server_lost(c, "could not write to the server");
    } else {
        client_close(c, "could not write to the client");
    }
}

/* After a write: give back what drained, and read from the source only while the destination
 * keeps up (the backpressure in the file comment). */
static void
relay_settle(struct client *c, bool from_client)
{
    struct worker *w = c->w;
    struct pool_sock *src = from_client ? &c->sock : &c->sc->sock;
    struct pool_sock *dst = from_client ? &c->sc->sock : &c->sock;
    struct buf *o = dst->out;
    struct buf *b = src->in;
    if (o && o->sent == o->recvd) {
        buf_put(&w->pw.bufs, o);
        dst->out = NULL;
    }
    if (b && buf_is_empty(b)) {
        buf_put(&w->pw.bufs, b);
        src->in = NULL;
    }
    bool blocked = (dst->out && buf_pending(dst->out)) || (src->in && buf_pending(src->in));
    if (blocked) {
        pool_sock_stop_read(w->loop, src);
        pool_sock_start_write(w->loop, dst);
    } else {
        pool_sock_stop_write(w->loop, dst);
        pool_sock_start_read(w->loop, src);
    }
}

/*
 * Write dst->out, then src->in's approved bytes, in one system call; with io_engine = io_uring
 * the worker's batch does it later in this loop iteration (relay_send_done goes on from there).
 * Returns false when the session was torn down (a peer is gone). is_now: never defer (the
 * caller needs the bytes gone before it goes on).
 */
static bool
relay_flush_how(struct client *c, bool from_client, bool is_now)
{
    struct pool_sock *dst = from_client ? &c->sc->sock : &c->sock;
    if (dst->ssl) {
        return relay_flush_tls(c, from_client);
    }
    struct relay_send s;
    if (relay_send_gather(c, from_client, &s)) {
        if (!is_now && c->w->iob && iobatch_queue_send(c->w, c, from_client)) {
            return true;
        }
        ssize_t n;
        if (s.n_iov == 1) {
            /* The common case (one answer, one query): send() takes the kernel's single-buffer
             * path, without copying in a msghdr and importing an iovec. */
            do {
                n = sys_send(s.fd, s.iov[0].iov_base, s.iov[0].iov_len, MSG_NOSIGNAL);
            } while (n < 0 && errno == EINTR);
        } else {
            struct msghdr mh;
            memset(&mh, 0, sizeof(mh));
            mh.msg_iov = s.iov;
            mh.msg_iovlen = (size_t) s.n_iov;
            do {
                n = sys_sendmsg(s.fd, &mh, MSG_NOSIGNAL);
            } while (n < 0 && errno == EINTR);
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                relay_write_failed(c, from_client);
                return false;
            }
            n = 0;
        }
        relay_send_advance(&s, (uint32_t) n);
    }
    relay_settle(c, from_client);
    return true;
}

static bool
relay_flush(struct client *c, bool from_client)
{
    return relay_flush_how(c, from_client, false);
}

/* Parse and flush until nothing more can move; then, for transaction pooling, see whether
 * the server can go back to the pool. */
static void
relay_pump(struct client *c, bool from_client)
{
    for (;;) {
        enum relay_action a = relay_parse(c, from_client);
        if (!relay_flush(c, from_client)) {
            return;
        }
        if (c->state != CLIENT_ACTIVE || !c->sc) {
            return;
        }
        struct pool_sock *src = from_client ? &c->sock : &c->sc->sock;
        bool *paused = from_client ? &c->is_c2s_paused : &c->is_s2c_paused;
        switch (a) {
        case RELAY_OK:
            *paused = false;
            break;
        case RELAY_PAUSE:
            if (!src->in || buf_pending(src->in) == 0) {
                continue; /* drained at once: go on where the walk stopped */
            }
            *paused = true; /* the write callback resumes */
            return;
        case RELAY_TERMINATE:
            client_close(c, "client sent Terminate");
            return;
        case RELAY_ENOMEM:
            client_fail(c, ST_ENOMEM, NULL);
            return;
        case RELAY_EPROTOCOL:
            if (from_client) {
                client_fail(c, ST_ECLIENT_PROTOCOL, "invalid message length or type");
            } else {
                log_error("server conn %llu sent a message pgmux cannot follow",
                          (unsigned long long) c->sc->id);
                relay_server_lost(c, "server sent an unexpected message");
            }
            return;
        default:
            return;
        }
        break;
    }
    if (c->mode != CFG_POOL_SESSION) {
        if (from_client) {
            /* Answers owed to the client for requests that never reached the server. */
            if (c->sc->sock.in == NULL && c->sc->sock.remain == 0 && !c->is_s2c_paused) {
                relay_pump(c, false);
                return;
            }
        } else if (client_can_release(c)) {
            client_release_server(c);
        }
    }
}

bool
relay_read_room(struct client *c, bool from_client)
{
    struct worker *w = c->w;
    struct pool_sock *src = from_client ? &c->sock : &c->sc->sock;
    if (!src->in || buf_space(src->in) == 0) {
        /* A message that must be seen whole but is larger than a buffer gets a buffer of its
         * own size (bounded by max_message_size for clients). */
        uint32_t need = 1;
        if (src->in && src->remain == 0 && buf_unparsed(src->in) >= PROTO_HEADER_LEN) {
            struct proto_header h;
            if (proto_header_read((const uint8_t *) src->in->data + src->in->parsed,
                                  buf_unparsed(src->in), PROTO_MAX_MSG_LEN, &h) == ST_OK &&
                proto_header_total(&h) > buf_unparsed(src->in)) {
                need = (uint32_t) (proto_header_total(&h) - buf_unparsed(src->in));
            }
        }
        if (buf_reserve(&w->pw.bufs, &src->in, need) != 0) {
            client_fail(c, ST_ENOMEM, NULL);
            return false;
        }
    }
    return true;
}

void
relay_read_done(struct client *c, bool from_client, int n)
{
    struct worker *w = c->w;
    struct pool_sock *src = from_client ? &c->sock : &c->sc->sock;
    if (n <= 0) {
        if (from_client) {
            if (n < 0 && src->ssl) {
                log_info("client %s: TLS error: %s", client_addr(c), pool_sock_tls_error());
            }
            client_close(c, n == 0 ? "client disconnected" : "client connection error");
        } else {
            if (n < 0 && src->ssl) {
                log_warning("server conn %llu: TLS error: %s", (unsigned long long) c->sc->id,
                            pool_sock_tls_error());
            }
            relay_server_lost(c,
                              n == 0 ? "server closed the connection" : "server connection error");
        }
        return;
    }
    if (c->stats) {
        stats_add(from_client ? &c->stats->bytes_in : &c->stats->bytes_out, (uint64_t) n);
    }
    if (from_client) {
        c->last_read_us = worker_now_us(w); /* the clock client_idle_timeout reads */
    }
    relay_pump(c, from_client);
}

static void
relay_read(struct client *c, bool from_client)
{
    if (!relay_read_room(c, from_client)) {
        return;
    }
    struct pool_sock *src = from_client ? &c->sock : &c->sc->sock;
    struct buf *b = src->in;
    int n = pool_sock_read(src, b->data + b->recvd, buf_space(b));
    if (n == -2) {
        return;
    }
    if (n > 0) {
        b->recvd += (uint32_t) n;
    }
    relay_read_done(c, from_client, n);
}

static void
relay_client_read_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct client *c = io->data;
    /* Draining, session pooling between transactions: the next statement gets the 57P01. */
    if (c->w->is_draining && worker_drain_close(c, true)) {
        return;
    }
    if (!c->sock.ssl && iobatch_queue(c->w, c, IOBATCH_RELAY_CLIENT)) {
        return;
    }
    relay_read(c, true);
}

static void
relay_server_read_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct pool_conn *sc = io->data;
    struct client *c = sc->client;
    if (!sc->sock.ssl && iobatch_queue(c->w, c, IOBATCH_RELAY_SERVER)) {
        return;
    }
    relay_read(c, false);
}

/* One direction's destination took everything that was waiting (or as much as it could): go
 * on where the flush left the session. */
static void
relay_drained(struct client *c, bool from_client)
{
    if (c->state != CLIENT_ACTIVE || !c->sc) {
        return;
    }
    bool *paused = from_client ? &c->is_c2s_paused : &c->is_s2c_paused;
    struct pool_sock *src = from_client ? &c->sock : &c->sc->sock;
    if (*paused && (!src->in || buf_pending(src->in) == 0)) {
        *paused = false;
        relay_pump(c, from_client);
    } else if (!from_client && c->mode != CFG_POOL_SESSION && client_can_release(c)) {
        client_release_server(c);
    }
}

static void
relay_writable(struct client *c, bool from_client)
{
    if (!relay_flush(c, from_client)) {
        return;
    }
    relay_drained(c, from_client);
}

void
relay_send_done(struct client *c, bool from_client, int res)
{
    if (c->state != CLIENT_ACTIVE || !c->sc) {
        return;
    }
    if (res < 0 && res != -EAGAIN && res != -EWOULDBLOCK && res != -EINTR) {
        errno = -res;
        relay_write_failed(c, from_client);
        return;
    }
    relay_settle(c, from_client);
    relay_drained(c, from_client);
}

static void
relay_client_write_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    relay_writable(io->data, false);
}

static void
relay_server_write_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct pool_conn *sc = io->data;
    relay_writable(sc->client, true);
}

void
relay_start(struct client *c)
{
    struct pool_conn *sc = c->sc;
    c->is_c2s_paused = c->is_s2c_paused = false;
    ev_set_cb(&c->sock.rio, relay_client_read_cb);
    ev_set_cb(&c->sock.wio, relay_client_write_cb);
    ev_set_cb(&sc->sock.rio, relay_server_read_cb);
    ev_set_cb(&sc->sock.wio, relay_server_write_cb);
    pool_sock_start_read(c->w->loop, &sc->sock);
    pool_sock_start_read(c->w->loop, &c->sock);
    /* What the client sent while it had no server (or pipelined behind its startup) goes
     * first; the welcome or earlier output waiting in c->sock.out goes with the other
     * direction. */
    if (c->sock.in && buf_unparsed(c->sock.in)) {
        relay_pump(c, true);
        if (c->state != CLIENT_ACTIVE || !c->sc) {
            return;
        }
    }
    if (!relay_flush(c, false)) {
        return;
    }
    if (c->state == CLIENT_ACTIVE && c->mode != CFG_POOL_SESSION && client_can_release(c)) {
        client_release_server(c);
    }
}

void
relay_stop(struct client *c)
{
    struct worker *w = c->w;
    pool_sock_stop_read(w->loop, &c->sock);
    pool_sock_stop_write(w->loop, &c->sock);
    if (c->sc) {
        pool_sock_stop_read(w->loop, &c->sc->sock);
        pool_sock_stop_write(w->loop, &c->sc->sock);
    }
}
