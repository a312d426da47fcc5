/*
 * client.c - a client session from accept to close: the startup packet (SSLRequest answered
 * 'S' and the TLS handshake begun when client TLS is on, else 'N'; GSSENCRequest answered 'N';
 * CancelRequest routed to the session's worker; plaintext refused under
 * client_tls_mode = require), authentication
 * against the auth_file (SCRAM-SHA-256, md5, trust), getting a server connection from the pool,
 * replaying the client's startup parameters on it, the welcome (ParameterStatus, our own
 * BackendKeyData, ReadyForQuery), then the relay (relay.c) until one side leaves.
 *
 * Every path ends in client_close (CONVENTIONS 3.1.6); every refusal goes through client_fail
 * and the table in errors.c (4.2.1). Runs on the session's worker.
 *
 * Reference: PostgreSQL documentation, "Message Flow" (Start-up, Canceling Requests in
 * Progress) and "SASL Authentication".
 */
#include "proxy/client.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/sha.h>

#include "common/log.h"
#include "common/mono.h"
#include "common/strbuf.h"
#include "protocol/digest.h"
#include "protocol/md5.h"
#include "protocol/messages.h"
#include "protocol/sqlstate.h"
#include "protocol/startup.h"
#include "protocol/wire.h"
#include "proxy/admin.h"
#include "proxy/authq.h"
#include "proxy/config.h"
#include "proxy/iobatch.h"
#include "proxy/errors.h"
#include "proxy/hba.h"
#include "proxy/peers.h"
#include "proxy/relay_int.h"
#include "proxy/stats.h"
#include "proxy/tls.h"
#include "proxy/topology.h"
#include "proxy/worker.h"
#include "proxy/routing.h"

/* Authentication messages are small; anything bigger is an attack or a bug. */
#define CLIENT_AUTH_MSG_MAX 8192

static void client_login_read_cb(EV_P_ ev_io *io, int revents);
static void client_out_write_cb(EV_P_ ev_io *io, int revents);
static void client_acquire(struct client *c);

/* ---- state lists ---- */

/*
 * A slot (w->slots) holds a session's pointer, or with a tag in the low bits (pointers are
 * aligned): SLOT_FREE, the index of the next unused slot above it; SLOT_FWD, where a session
 * this worker accepted lives now (worker_balance): its worker in bits 2-9, its slot there
 * above them (WORKER_NO_SLOT while the move is on its way). The accepting worker keeps the
 * slot, because the session's BackendKeyData names it: cancels come here and are forwarded.
 */
#define SLOT_FREE 1u
#define SLOT_FWD  2u
#define SLOT_TAGS 3u

static inline uintptr_t
slot_fwd(int worker, uint32_t slot)
{
    return ((uintptr_t) slot << 10) | ((uintptr_t) worker << 2) | SLOT_FWD;
}

static void home_tell(struct worker *w, uint32_t home_pid, int worker, uint32_t slot);

static struct ilist *
client_list(struct worker *w, enum client_state st)
{
    switch (st) {
    case CLIENT_STARTUP:
    case CLIENT_AUTH:
        return &w->clients_login;
    case CLIENT_IDLE:
        return &w->clients_idle;
    case CLIENT_WAITING:
    case CLIENT_SETTING:
        return &w->clients_waiting;
    case CLIENT_ACTIVE:
        return &w->clients_active;
    case CLIENT_ADMIN:
        return &w->clients_admin;
    case CLIENT_CLOSED:
        return &w->to_free;
    }
    return NULL;
}

/* The pool gauge a session in state st counts in, or NULL. */
static stats_gauge *
client_gauge(struct stats_pool *sp, enum client_state st)
{
    switch (st) {
    case CLIENT_IDLE:
        return &sp->cl_idle;
    case CLIENT_WAITING:
        return &sp->cl_waiting;
    case CLIENT_SETTING:
        return &sp->cl_setting;
    case CLIENT_ACTIVE:
        return &sp->cl_active;
    default:
        return NULL;
    }
}

void
client_pool_changed(struct client *c)
{
    struct stats_pool *sp = stats_pool_get(c->w->stats, c->pool->id);
    if (sp == c->stats) {
        return;
    }
    if (c->stats) {
        stats_gauge *g = client_gauge(c->stats, c->state);
        if (g) {
            stats_gauge_add(g, -1);
        }
    }
    if (sp) {
        stats_gauge *g = client_gauge(sp, c->state);
        if (g) {
            stats_gauge_add(g, 1);
        }
    }
    c->stats = sp;
}

/* State and list are one fact (CONVENTIONS 3.1.2), and so are the pool's client gauges. */
void
client_set_state(struct client *c, enum client_state st)
{
    struct worker *w = c->w;
    ASSERT(c->state != CLIENT_CLOSED);
    int64_t now = worker_now_us(w);
    struct stats_pool *sp = c->stats;
    if (sp) {
        stats_gauge *from = client_gauge(sp, c->state);
        stats_gauge *to = client_gauge(sp, st);
        if (from) {
            stats_gauge_add(from, -1);
        }
        if (to) {
            stats_gauge_add(to, 1);
        }
        if (c->state == CLIENT_WAITING) {
            /* Got a server connection (or a replay on one): the wait is over. */
            stats_hist_observe(&sp->wait, now - c->since_us);
            stats_add(&sp->wait_count, 1);
            stats_add(&sp->wait_time_us, (uint64_t) (now - c->since_us));
        }
    }
    ilist_remove(client_list(w, c->state), &c->node);
    c->state = st;
    c->since_us = now;
    ilist_push_tail(client_list(w, st), &c->node);
    if (st == CLIENT_IDLE && w->is_parked) {
        w->has_leavers = true; /* the reaper hands it to an active worker (worker_balance) */
        worker_reap_soon(w);
    }
}

struct client *
client_by_slot(struct worker *w, uint32_t slot)
{
    if (slot >= w->cap_slots) {
        return NULL;
    }
    uintptr_t v = w->slots[slot];
    struct client *c = (v & SLOT_TAGS) ? NULL : (struct client *) v;
    return (c && c->state != CLIENT_CLOSED) ? c : NULL;
}

static struct client *
client_by_id(struct worker *w, uint64_t id)
{
    struct client *c = client_by_slot(w, (uint32_t) (id & 0xffffffffu));
    return (c && client_id(c) == id) ? c : NULL;
}

static void
slot_free(struct worker *w, uint32_t slot)
{
    w->slots[slot] = ((uintptr_t) w->free_slot << 1) | SLOT_FREE;
    w->free_slot = slot;
}

static bool
slot_alloc(struct worker *w, uint32_t *out)
{
    if (w->free_slot == WORKER_NO_SLOT) {
        /* Doubling while small, then a quarter more: the table is 8 bytes a session, and
         * doubling would leave up to half of it unused at 100,000 clients. */
        uint32_t cap = w->cap_slots;
        uint32_t ncap = cap == 0 ? 1024 : cap < 8192 ? cap * 2 : cap + cap / 4;
        if (ncap > WORKER_MAX_SLOTS) {
            ncap = WORKER_MAX_SLOTS;
        }
        if (ncap <= cap) {
            return false;
        }
        uintptr_t *ns = realloc(w->slots, ncap * sizeof(*ns));
        if (!ns) {
            return false;
        }
        w->slots = ns;
        for (uint32_t i = cap; i < ncap; i++) {
            uint32_t next = i + 1 < ncap ? i + 1 : WORKER_NO_SLOT;
            ns[i] = ((uintptr_t) next << 1) | SLOT_FREE;
        }
        w->free_slot = cap;
        w->cap_slots = ncap;
    }
    uint32_t slot = w->free_slot;
    w->free_slot = (uint32_t) (w->slots[slot] >> 1);
    *out = slot;
    return true;
}

/* ---- output during login ---- */

static void
client_out_flush(struct client *c)
{
    int r = pool_sock_flush_out(&c->sock, &c->w->pw.bufs);
    if (r > 0) {
        pool_sock_start_write(c->w->loop, &c->sock);
    } else {
        pool_sock_stop_write(c->w->loop, &c->sock);
    }
}

static void
client_out_write_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct client *c = io->data;
    int r = pool_sock_flush_out(&c->sock, &c->w->pw.bufs);
    if (r < 0) {
        client_close(c, "could not write to the client");
    } else if (r == 0) {
        pool_sock_stop_write(c->w->loop, &c->sock);
    }
}

/* Append a built message to the client's output. */
static enum status
client_queue(struct client *c, const struct proto_builder *pb)
{
    if (proto_builder_failed(pb)) {
        return ST_ENOMEM;
    }
    if (!c->sock.out) {
        c->sock.out = buf_get(&c->w->pw.bufs);
        if (!c->sock.out) {
            return ST_ENOMEM;
        }
    }
    if (buf_append(c->sock.out, pb->data, pb->len) != 0) {
        return ST_ENOMEM;
    }
    return ST_OK;
}

/* ---- teardown ---- */

static void
client_free_auth(struct client *c)
{
    struct client_login *l = c->login;
    if (l && l->auth) {
        struct client_auth *a = l->auth;
        authq_secret_free(a->aq_user.secret);
        if (a->scram) {
            proto_scram_server_fini(a->scram);
            free(a->scram);
        }
        cfg_unref(a->cfg);
        l->cu = NULL;
        OPENSSL_cleanse(a, sizeof(*a));
        free(a);
        l->auth = NULL;
    }
}

/* The login state is done with: the startup packet's copy goes too (user and database must
 * already point elsewhere, or nowhere). */
static void
client_free_login(struct client *c)
{
    client_free_auth(c);
    free(c->login);
    c->login = NULL;
}

/* Every idle session costs this struct (README "Architecture"); the budget is what keeps an
 * idle client under 0.5 KiB of RSS with libev's and the slot table's share. Rare state goes in
 * struct client_aux, login state in struct client_login, flags in the bit-fields. */
_Static_assert(sizeof(struct client) <= 384, "struct client grew past its idle-session budget");

struct client_aux *
client_aux(struct client *c)
{
    if (!c->aux) {
        c->aux = calloc(1, sizeof(*c->aux));
        if (c->aux) {
            c->aux->await_node = -1;
        }
    }
    return c->aux;
}

void
client_close(struct client *c, const char *why)
{
    if (c->state == CLIENT_CLOSED) {
        return;
    }
    struct worker *w = c->w;
    if (c->is_recv_queued || c->is_c2s_send_queued || c->is_s2c_send_queued) {
        iobatch_forget(w, c);
    }
    if (log_level_current >= LOG_INFO) {
        char u[96], d[96], r[160];
        log_info("event=disconnect client=" CLIENT_ID_FMT
                 " addr=%s db=%s user=%s node=%s duration_ms=%lld reason=%s",
                 CLIENT_ID(c), client_addr(c), log_value(client_database(c), d, sizeof(d)),
                 log_value(client_user(c), u, sizeof(u)), c->pool ? c->pool->node->name : "-",
                 (long long) ((mono_now_us() - c->connected_us) / 1000),
                 log_value(why, r, sizeof(r)));
    }
    if (c->stats) {
        stats_gauge *g = client_gauge(c->stats, c->state);
        if (g) {
            stats_gauge_add(g, -1);
        }
    }
    if (c->is_queued && c->pool) {
        /* If a grant is already on its way it will not find us and goes back to the pool. */
        (void) pool_waiter_cancel(c->pool, &c->waiter);
        c->is_queued = false;
    }
    if (c->sc) {
        struct pool_conn *sc = c->sc;
        bool client_clean = c->sock.remain == 0 && (!c->sock.in || buf_pending(c->sock.in) == 0);
        if (!client_clean) {
            sc->is_broken = true; /* half a message went to the server */
        }
        c->sc = NULL;
        pool_conn_release(sc, c->mode == CFG_POOL_SESSION);
    }
    admin_session_close(c);
    routing_leave(c);
    client_free_auth(c);
    pool_params_clear(&c->want);
    txn_stmts_clear(c);
    /* A second descriptor keeps the socket open past pool_sock_close (which may send a TLS
     * close_notify through the first). */
    int linger_fd = -1;
    if (c->wants_linger && c->sock.fd >= 0 && (!c->sock.out || buf_is_empty(c->sock.out))) {
        linger_fd = fcntl(c->sock.fd, F_DUPFD_CLOEXEC, 0);
    }
    pool_sock_close(w->loop, &c->sock, &w->pw.bufs);
    if (linger_fd >= 0) {
        worker_linger(w, linger_fd);
    }
    if (c->is_counted) {
        atomic_fetch_sub(&w->rt->n_clients, 1);
        c->is_counted = false;
    }
    if (c->is_addr_counted) {
        peers_release(&w->rt->peers, c->peer_family, c->peer);
        c->is_addr_counted = false;
    }
    if (client_slot(c) != WORKER_NO_SLOT) {
        slot_free(w, client_slot(c));
    }
    if (c->home_pid >> WORKER_SLOT_BITS != (uint32_t) w->idx) {
        home_tell(w, c->home_pid, -1, WORKER_NO_SLOT); /* the home slot is free again */
    }
    stats_gauge_add(&w->stats->g.sessions, -1);
    ilist_remove(client_list(w, c->state), &c->node);
    c->state = CLIENT_CLOSED;
    ilist_push_tail(&w->to_free, &c->node);
    worker_reap_soon(w);
}

void
client_reap(struct worker *w)
{
    struct ilist_node *n;
    while ((n = ilist_pop_head(&w->to_free)) != NULL) {
        struct client *c = CONTAINER_OF(n, struct client, node);
        client_free_login(c);
        if (c->aux) {
            free(c->aux->set_error);
            free(c->aux->query_text);
            free(c->aux);
        }
        free(c);
    }
}

/* Send an error (from the table, message optionally replaced) and close. */
static void
client_fail_full(struct client *c, enum status st, const char *severity, const char *sqlstate,
                 const char *message, const char *detail)
{
    if (c->state == CLIENT_CLOSED) {
        return;
    }
    const struct errors_entry *e = errors_lookup(st);
    const char *code = sqlstate ? sqlstate : e->sqlstate;
    /* Speak only at a message boundary (CONVENTIONS 4.2.5). */
    bool mid_message =
        c->sc && (c->sc->sock.remain != 0 || (c->sc->sock.in && buf_pending(c->sc->sock.in) != 0));
    int cls = stats_sqlstate_class(code);
    if (c->stats) {
        stats_add(&c->stats->errors[STATS_ERR_PGMUX][cls], 1);
    } else {
        stats_add(&c->w->stats->g.errors_nopool[cls], 1);
    }
    if (st == ST_EAUTH || st == ST_EAUTH_USER) {
        stats_add(&c->w->stats->g.logins_failed, 1);
    }
    if (!mid_message) {
        struct proto_builder pb;
        proto_builder_init_dynamic(&pb);
        proto_build_error(&pb, 'E', severity ? severity : e->severity, code,
                          message ? message : e->message, detail, message ? NULL : e->hint);
        if (client_queue(c, &pb) == ST_OK) {
            (void) pool_sock_flush_out(&c->sock, &c->w->pw.bufs);
        }
        proto_builder_fini(&pb);
    }
    if (log_level_current >= LOG_INFO) {
        char u[96], d[96], m[200], dt[200], cs[16];
        log_info("event=%s client=" CLIENT_ID_FMT
                 " addr=%s db=%s user=%s node=%s sqlstate=%s message=%s detail=%s",
                 st == ST_EAUTH || st == ST_EAUTH_USER ? "login_failed" : "refused", CLIENT_ID(c),
                 client_addr(c), log_value(client_database(c), d, sizeof(d)),
                 log_value(client_user(c), u, sizeof(u)), c->pool ? c->pool->node->name : "-",
                 log_value(code, cs, sizeof(cs)),
                 log_value(message ? message : e->message, m, sizeof(m)),
                 log_value(detail, dt, sizeof(dt)));
    }
    client_close(c, message ? message : e->message);
}

void
client_fail(struct client *c, enum status st, const char *detail)
{
    client_fail_full(c, st, NULL, NULL, NULL, detail);
}

/* Wrong password and unknown user must look the same (no user enumeration). */
static void
client_fail_auth(struct client *c)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "password authentication failed for user \"%s\"",
             client_user(c) ? client_user(c) : "");
    client_fail_full(c, ST_EAUTH, NULL, NULL, msg, NULL);
}

/* ---- accept ---- */

const char *
client_addr(const struct client *c)
{
    static __thread char buf[INET6_ADDRSTRLEN + 8];
    char host[INET6_ADDRSTRLEN] = "?";
    if (c->peer_family == AF_INET) {
        inet_ntop(AF_INET, c->peer, host, sizeof(host));
    } else if (c->peer_family == AF_INET6) {
        inet_ntop(AF_INET6, c->peer, host, sizeof(host));
    } else {
        return "unix";
    }
    snprintf(buf, sizeof(buf), "%s:%u", host, (unsigned) c->peer_port);
    return buf;
}

/* The peer address without the port, as PostgreSQL names hosts in its messages (a per-thread
 * buffer, valid until the next call). */
static const char *
client_host(const struct client *c)
{
    static __thread char buf[INET6_ADDRSTRLEN];
    if (c->peer_family == AF_INET || c->peer_family == AF_INET6) {
        if (inet_ntop(c->peer_family, c->peer, buf, sizeof(buf))) {
            return buf;
        }
        return "?";
    }
    return "[local]";
}

static void
client_set_peer(struct client *c, const struct sockaddr *sa)
{
    c->peer_family = (uint8_t) sa->sa_family;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *) (const void *) sa;
        memcpy(c->peer, &in->sin_addr, 4);
        c->peer_port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) (const void *) sa;
        memcpy(c->peer, &in6->sin6_addr, 16);
        c->peer_port = ntohs(in6->sin6_port);
    }
}

void
client_accept(struct worker *w, int fd, const struct sockaddr *sa, socklen_t salen)
{
    (void) salen;
    struct client *c = calloc(1, sizeof(*c));
    uint32_t slot;
    if (!c || !slot_alloc(w, &slot)) {
        free(c);
        close(fd);
        log_error("out of memory accepting a client");
        return;
    }
    c->w = w;
    c->route_node = -1;
    c->waiter.id = ((uint64_t) ++w->next_gen << 32) | slot;
    c->home_pid = ((uint32_t) w->idx << WORKER_SLOT_BITS) | slot;
    worker_random(w, &c->cancel_key, sizeof(c->cancel_key));
    c->since_us = c->last_read_us = c->connected_us = mono_now_us();
    client_set_peer(c, sa);
    stats_add(&w->stats->g.clients_accepted, 1);
    int n = atomic_fetch_add(&w->rt->n_clients, 1) + 1;
    c->is_counted = true;
    c->is_over_limit = n > admin_tunable(&w->rt->admin, w->cfg, ADMIN_TUN_MAX_CLIENT_CONN,
                                         w->cfg->max_client_conn);
    int per_addr = w->cfg->max_client_conn_per_addr;
    if (per_addr > 0 && (c->peer_family == AF_INET || c->peer_family == AF_INET6)) {
        c->is_addr_counted = peers_acquire(&w->rt->peers, c->peer_family, c->peer, per_addr);
        c->is_over_addr_limit = !c->is_addr_counted;
    }
    w->slots[slot] = (uintptr_t) c;
    c->state = CLIENT_STARTUP;
    ilist_node_init(&c->node);
    ilist_push_tail(&w->clients_login, &c->node);
    ilist_node_init(&c->waiter.node);
    stats_gauge_add(&w->stats->g.sessions, 1);
    pool_sock_init(&c->sock, fd, c, client_login_read_cb, client_out_write_cb);
    pool_sock_start_read(w->loop, &c->sock);
    log_info("event=connect client=" CLIENT_ID_FMT " addr=%s", CLIENT_ID(c), client_addr(c));
    /* The client speaks first, and with TCP_DEFER_ACCEPT (main.c) its first packet is already
     * here: read it now rather than after another trip through the loop. When it is not, the
     * read finds nothing and the watcher waits for it. */
    client_login_read_cb(w->loop, &c->sock.rio, EV_READ);
}

/* ---- cancel ---- */

struct cancel_msg {
    struct pool_msg msg;
    uint32_t slot;
    uint32_t key;
    bool is_forwarded; /* sent on by the session's home worker: not forwarded again */
};

static void
cancel_msg_run(struct pool_worker *pw, struct pool_msg *m)
{
    struct cancel_msg *cm = (struct cancel_msg *) m;
    struct worker *w = pw->owner;
    uintptr_t v = cm->slot < w->cap_slots ? w->slots[cm->slot] : SLOT_FREE;
    if ((v & SLOT_TAGS) == SLOT_FWD && !cm->is_forwarded) {
        /* The session moved (worker_balance): its key is checked where it lives. While the
         * move is on its way the cancel is dropped, as one racing a query's end would be. */
        int to = (int) ((v >> 2) & 0xff);
        uint32_t slot = (uint32_t) (v >> 10);
        if (slot != WORKER_NO_SLOT && to < w->rt->n_workers && !atomic_load(&w->rt->is_finishing)) {
            cm->slot = slot;
            cm->is_forwarded = true;
            pool_worker_post(&w->rt->workers[to].pw, &cm->msg);
            return;
        }
        free(cm);
        return;
    }
    struct client *c = client_by_slot(w, cm->slot);
    /* The key is compared in constant time: it is the only thing that authorizes a cancel. */
    if (c && c->state == CLIENT_ADMIN &&
        CRYPTO_memcmp(&c->cancel_key, &cm->key, sizeof(cm->key)) == 0) {
        admin_session_cancel(c);
    } else if (c && CRYPTO_memcmp(&c->cancel_key, &cm->key, sizeof(cm->key)) == 0 && c->sc &&
               c->sc->be_pid) {
        log_debug("client %s: forwarding cancel to server conn %llu be_pid %u", client_addr(c),
                  (unsigned long long) c->sc->id, (unsigned) c->sc->be_pid);
        cancel_send(w, c->sc);
    } else {
        log_debug("cancel request for an unknown or idle session ignored");
    }
    free(cm);
}

void
client_cancel_dispatch(struct worker *w, uint32_t pid, uint32_t key)
{
    uint32_t target = pid >> WORKER_SLOT_BITS;
    if (target >= (uint32_t) w->rt->n_workers) {
        return;
    }
    struct cancel_msg *cm = malloc(sizeof(*cm));
    if (!cm) {
        return;
    }
    cm->msg.fn = cancel_msg_run;
    cm->slot = pid & (WORKER_MAX_SLOTS - 1);
    cm->key = key;
    cm->is_forwarded = false;
    pool_worker_post(&w->rt->workers[target].pw, &cm->msg);
}

/* ---- moving between workers (worker_balance) ---- */

/* To a session's home worker: it lives at (worker, slot) now, or (-1) has ended. */
struct home_msg {
    struct pool_msg msg;
    uint32_t home_slot;
    int worker;
    uint32_t slot;
};

static void
home_msg_run(struct pool_worker *pw, struct pool_msg *m)
{
    struct home_msg *hm = (struct home_msg *) m;
    struct worker *w = pw->owner;
    /* The messages about one session arrive in the order they were sent (each is sent before
     * the session moves on), and the slot stays taken until the last: it is still forwarding. */
    if (hm->home_slot < w->cap_slots && (w->slots[hm->home_slot] & SLOT_TAGS) == SLOT_FWD) {
        if (hm->worker < 0) {
            slot_free(w, hm->home_slot);
        } else {
            w->slots[hm->home_slot] = slot_fwd(hm->worker, hm->slot);
        }
    } else {
        log_error("worker %d: a moved session's slot %u is not forwarding", w->idx,
                  (unsigned) hm->home_slot);
    }
    free(hm);
}

/* Tell the session's home worker where it lives now, or (worker -1) that it ended. */
static void
home_tell(struct worker *w, uint32_t home_pid, int worker, uint32_t slot)
{
    uint32_t home = home_pid >> WORKER_SLOT_BITS;
    /* At the very end (worker_fini runs the inboxes one worker after another), a worker already
     * finalized must not be posted to; its slots are gone with it. */
    if (home >= (uint32_t) w->rt->n_workers || atomic_load(&w->rt->is_finishing)) {
        return;
    }
    struct home_msg *hm = malloc(sizeof(*hm));
    if (!hm) {
        /* The home slot stays taken (and forwarding to a dead end) until the process ends:
         * eight bytes lost, nothing wrong. */
        log_error("worker %d: out of memory telling a session's home worker", w->idx);
        return;
    }
    hm->msg.fn = home_msg_run;
    hm->home_slot = home_pid & (WORKER_MAX_SLOTS - 1);
    hm->worker = worker;
    hm->slot = slot;
    pool_worker_post(&w->rt->workers[home].pw, &hm->msg);
}

bool
client_can_move(const struct client *c)
{
    const struct pool_sock *s = &c->sock;
    return c->state == CLIENT_IDLE && !c->sc && !c->is_queued && !c->is_opening &&
           !c->is_looking_up && !c->is_held && !c->is_awaiting_primary && c->n_ryw_pending == 0 &&
           c->route_node < 0 && !c->is_recv_queued && !c->is_c2s_send_queued &&
           !c->is_s2c_send_queued && s->fd >= 0 && s->remain == 0 &&
           (!s->in || buf_is_empty(s->in)) && (!s->out || buf_is_empty(s->out)) && !s->is_writing &&
           !s->is_tls_wpending && !s->is_read_deferred && !s->is_rio_flipped &&
           !s->is_wio_flipped && !pool_sock_has_pending(s);
}

struct move_msg {
    struct pool_msg msg;
    struct client *c;
    int from;          /* the worker it left */
    uint32_t from_gen; /* and its generation there, for the log line */
};

/* Adopt a session another worker handed over (client_move). */
static void
client_move_run(struct pool_worker *pw, struct pool_msg *m)
{
    struct move_msg *mm = (struct move_msg *) m;
    struct client *c = mm->c;
    struct worker *w = pw->owner;
    int from = mm->from;
    uint32_t from_gen = mm->from_gen;
    free(mm);
    uint32_t home = c->home_pid >> WORKER_SLOT_BITS;
    uint32_t slot = WORKER_NO_SLOT;
    if (home == (uint32_t) w->idx) {
        slot = c->home_pid & (WORKER_MAX_SLOTS - 1); /* back home: the forwarding slot again */
    } else if (!slot_alloc(w, &slot)) {
        slot = WORKER_NO_SLOT; /* closed below, without a slot to free */
    }
    c->w = w;
    c->waiter.id = ((uint64_t) ++w->next_gen << 32) | slot;
    if (slot != WORKER_NO_SLOT) {
        w->slots[slot] = (uintptr_t) c;
    }
    stats_gauge_add(&w->stats->g.sessions, 1);
    c->since_us = worker_now_us(w);
    ilist_push_tail(&w->clients_idle, &c->node);
    client_pool_changed(c); /* counted in this worker's gauges from now on */
    if (home != (uint32_t) w->idx && slot != WORKER_NO_SLOT) {
        home_tell(w, c->home_pid, w->idx, slot);
    }
    if (slot == WORKER_NO_SLOT) {
        log_error("worker %d: out of memory adopting a session", w->idx);
        client_fail(c, ST_ENOMEM, NULL);
        return;
    }
    if (w->is_stopping) {
        client_fail(c, ST_ESHUTDOWN, NULL);
        return;
    }
    /* The session's log id (worker.generation) changes here: this line ties the two. */
    log_info("event=move client=" CLIENT_ID_FMT " from=%d.%u", CLIENT_ID(c), from,
             (unsigned) from_gen);
    /* ev_io_set makes libev register the descriptor with this loop's epoll set whatever it
     * remembers of the number: it skips epoll_ctl when the events it last set for a number
     * match the new ones, and this loop may have watched the number before (this socket
     * before it moved away, or another one since closed, whose registration the kernel
     * dropped). libev copes with one that is still there (EEXIST). Bytes that arrived on the
     * way are then seen at once (level-triggered). */
    ev_io_set(&c->sock.rio, c->sock.fd, EV_READ);
    ev_io_set(&c->sock.wio, c->sock.fd, EV_WRITE);
    pool_sock_start_read(w->loop, &c->sock);
    if (w->is_parked) {
        w->has_leavers = true; /* parked since the move was decided: it goes on */
        worker_reap_soon(w);
    }
}

void
client_move(struct client *c, struct worker *to)
{
    struct worker *w = c->w;
    ASSERT(client_can_move(c) && to != w);
    struct move_msg *mm = malloc(sizeof(*mm));
    if (!mm) {
        return; /* it stays */
    }
    pool_sock_stop_read(w->loop, &c->sock);
    /* Buffers belong to this worker's pool: an idle session holds only empty ones. */
    buf_put(&w->pw.bufs, c->sock.in);
    c->sock.in = NULL;
    buf_put(&w->pw.bufs, c->sock.out);
    c->sock.out = NULL;
    if (c->stats) {
        stats_gauge_add(client_gauge(c->stats, c->state), -1);
        c->stats = NULL; /* the adopting worker counts it in its own (client_pool_changed) */
    }
    stats_gauge_add(&w->stats->g.sessions, -1);
    stats_add(&w->stats->g.sessions_moved, 1);
    ilist_remove(&w->clients_idle, &c->node);
    if (c->home_pid >> WORKER_SLOT_BITS == (uint32_t) w->idx) {
        w->slots[client_slot(c)] = slot_fwd(to->idx, WORKER_NO_SLOT);
    } else {
        slot_free(w, client_slot(c));
    }
    mm->msg.fn = client_move_run;
    mm->c = c;
    mm->from = w->idx;
    mm->from_gen = (uint32_t) (client_id(c) >> 32);
    /* The inbox's lock orders everything written to c here before the adopting worker reads
     * it. */
    pool_worker_post(&to->pw, &mm->msg);
}

/* ---- authentication ---- */

/* A stable fake secret for an unknown user, so the exchange looks like a real one. */
static void
mock_scram_secret(struct worker *w, const char *user, struct proto_scram_secret *out)
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    memset(out, 0, sizeof(*out));
    HMAC(EVP_sha256(), w->rt->mock_key, sizeof(w->rt->mock_key), (const uint8_t *) user,
         strlen(user), mac, &mac_len);
    out->iterations = PROTO_SCRAM_DEFAULT_ITERATIONS;
    out->salt_len = 16;
    memcpy(out->salt, mac, 16);
    worker_random(w, out->stored_key, sizeof(out->stored_key));
    worker_random(w, out->server_key, sizeof(out->server_key));
}

/*
 * The cache entry for keys derived from (kind, user, secret, password or NULL), with its tag
 * in tag: *hit says whether it holds them; otherwise the caller may fill it (client_derived_
 * fill) once it has derived and checked them, so a wrong password evicts nothing. NULL when
 * the tag could not be computed (then nothing is cached).
 */
static struct worker_derived *
client_derived(struct worker *w, char kind, const char *user, const char *secret,
               const char *password, uint8_t tag[SHA256_DIGEST_LENGTH], bool *hit)
{
    unsigned int tag_len = 0;
    EVP_MD_CTX *ctx = proto_digest_begin(PROTO_DIGEST_SHA256);
    /* The NULs keep ("ab", "c") and ("a", "bc") apart. */
    bool ok = ctx && EVP_DigestUpdate(ctx, w->derived_key, sizeof(w->derived_key)) == 1 &&
              EVP_DigestUpdate(ctx, &kind, 1) == 1 &&
              EVP_DigestUpdate(ctx, user, strlen(user) + 1) == 1 &&
              EVP_DigestUpdate(ctx, secret, strlen(secret) + 1) == 1 &&
              (!password || EVP_DigestUpdate(ctx, password, strlen(password) + 1) == 1) &&
              EVP_DigestFinal_ex(ctx, tag, &tag_len) == 1 && tag_len == SHA256_DIGEST_LENGTH;
    *hit = false;
    if (!ok) {
        return NULL;
    }
    struct worker_derived *d = &w->derived[tag[0] % WORKER_DERIVED_N];
    *hit = d->is_used && CRYPTO_memcmp(d->tag, tag, SHA256_DIGEST_LENGTH) == 0;
    return d;
}

/* Make d the entry for tag (from client_derived) holding secret or client_key. */
static void
client_derived_fill(struct worker_derived *d, const uint8_t tag[SHA256_DIGEST_LENGTH],
                    const struct proto_scram_secret *secret, const uint8_t *client_key)
{
    OPENSSL_cleanse(d, sizeof(*d));
    memcpy(d->tag, tag, SHA256_DIGEST_LENGTH);
    if (secret) {
        d->secret = *secret;
    }
    if (client_key) {
        memcpy(d->client_key, client_key, PROTO_SCRAM_KEY_LEN);
    }
    d->is_used = true;
}

/* The SCRAM secret to check this user's proof against. false: the secret is md5 only. */
static bool
client_scram_secret(struct client *c, struct proto_scram_secret *out)
{
    struct worker *w = c->w;
    if (!c->login->cu) {
        mock_scram_secret(w, client_user(c), out);
        return true;
    }
    const char *s = c->login->cu->secret;
    if (strncmp(s, "SCRAM-SHA-256$", 14) == 0) {
        return proto_scram_secret_parse(s, out);
    }
    if (proto_md5_is_secret(s)) {
        return false;
    }
    /* A plaintext secret: PBKDF2 once per worker, then from the cache, by user index for
     * auth_file users, by tag for a plaintext secret that auth_query returned (a custom query
     * can). */
    struct client_login *l = c->login;
    int idx = l->auth && l->cu == &l->auth->aq_user ? -1 : (int) (l->cu - w->cfg->users);
    struct worker_derived *d = NULL;
    uint8_t tag[SHA256_DIGEST_LENGTH];
    if (idx >= 0 && idx < w->n_scram_cache && w->scram_cached[idx]) {
        *out = w->scram_cache[idx];
        return true;
    }
    if (idx < 0) {
        bool hit;
        d = client_derived(w, 'p', client_user(c), s, NULL, tag, &hit);
        if (hit) {
            *out = d->secret;
            return true;
        }
    }
    uint8_t salt[16];
    worker_random(w, salt, sizeof(salt));
    stats_add(&w->stats->g.auth_derivations, 1);
    if (!proto_scram_secret_from_password(s, salt, sizeof(salt), PROTO_SCRAM_DEFAULT_ITERATIONS,
                                          out)) {
        return false;
    }
    if (idx >= 0 && idx < w->n_scram_cache) {
        w->scram_cache[idx] = *out;
        w->scram_cached[idx] = true;
    } else if (d) {
        client_derived_fill(d, tag, out, NULL);
    }
    return true;
}

static void client_welcome_from(struct client *c, const struct pool *p);

/* pool_get through the worker's cache (w->pool_cache). */
static struct pool *
client_pool_get(struct worker *w, int node, const char *database, const char *user,
                const struct pool_secret *ps, bool may_overtake)
{
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t) node;
    for (const char *p = database; *p; p++) {
        h = (h ^ (uint8_t) *p) * 0x100000001b3ull;
    }
    h = (h ^ 0xff) * 0x100000001b3ull; /* ("ab", "c") and ("a", "bc") apart */
    for (const char *p = user; *p; p++) {
        h = (h ^ (uint8_t) *p) * 0x100000001b3ull;
    }
    struct pool **slot = &w->pool_cache[h % WORKER_POOL_CACHE_N];
    struct pool *p = *slot;
    /* The names and the node of a pool never change once it is made. */
    if (p && p->node_idx == node && strcmp(p->database, database) == 0 &&
        strcmp(p->user, user) == 0) {
        return p;
    }
    p = pool_get(&w->rt->pools, node, database, user, ps, may_overtake);
    if (p) {
        *slot = p;
    }
    return p;
}
static enum status client_init_want(struct client *c);
static uint64_t want_hash_of(const struct pool_param *v, int n);

_Static_assert(sizeof(((struct pool_secret *) 0)->md5) == PROTO_MD5_LEN + 1,
               "pool_secret.md5 holds an md5 secret and its NUL");

static void
client_auth_done(struct client *c)
{
    struct worker *w = c->w;
    if (admin_is_console_db(client_database(c))) {
        /* Authorization is decided after authentication, so a refusal tells a stranger
         * nothing about which users exist. */
        client_free_auth(c);
        admin_session_start(c);
        return;
    }
    /* Pools are found from the client's pool on the primary (routing.c picks its siblings). */
    const struct topo_snapshot *topo = topo_refresh(&w->rt->topology, &w->topo);
    int node = topo->primary >= 0 ? topo->primary : w->rt->primary_node;

    struct client_login *l = c->login;
    struct pool_secret ps;
    memset(&ps, 0, sizeof(ps));
    const char *s = l->cu->secret;
    bool is_scram = strncmp(s, "SCRAM-SHA-256$", 14) == 0;
    if (proto_md5_is_secret(s)) {
        /* exactly PROTO_MD5_LEN characters and a NUL, as proto_md5_is_secret checked; a copy,
         * not snprintf("%s"), which costs about 550 instructions a login */
        memcpy(ps.md5, s, PROTO_MD5_LEN + 1);
    } else if (!is_scram) {
        ps.password = (char *) (uintptr_t) s; /* copied by pool_get */
    }
    c->mode = (uint8_t) cfg_pool_mode_for(w->cfg, client_database(c), client_user(c));
    c->pool = client_pool_get(w, node, client_database(c), client_user(c), &ps,
                              c->mode != CFG_POOL_SESSION);
    if (c->pool && l->auth && l->cu == &l->auth->aq_user) {
        /* The pool may have been made with a secret auth_query has since seen change; so may
         * its pools on the other nodes, which copied it. */
        pool_update_secret(c->pool, &ps);
        for (int i = 0; i < POOL_MAX_NODES; i++) {
            struct pool *sib = atomic_load_explicit(&c->pool->siblings[i], memory_order_acquire);
            if (sib && sib != c->pool) {
                pool_update_secret(sib, &ps);
            }
        }
    }
    OPENSSL_cleanse(&ps, sizeof(ps));
    l->cu = NULL; /* the snapshot it points into may go with the next reload */
    if (!c->pool) {
        client_fail(c, ST_ENOMEM, NULL);
        return;
    }
    c->stats = stats_pool_get(w->stats, c->pool->id);
    stats_add(&w->stats->g.logins_ok, 1);
    if (is_scram && l->auth && l->auth->scram &&
        (l->auth->kind == CLIENT_AUTH_SCRAM || l->auth->kind == CLIENT_AUTH_PASSWORD)) {
        /* The client's proof gave us its ClientKey: with the secret's ServerKey that logs us
         * in to a server storing the same secret, with no plaintext password anywhere. */
        pool_learn_scram_keys(c->pool, l->auth->scram->client_key,
                              l->auth->scram->secret.server_key);
    }
    client_free_auth(c);

    struct proto_builder pb;
    uint8_t mem[16];
    proto_builder_init_fixed(&pb, mem, sizeof(mem));
    proto_build_auth_ok(&pb);
    /* Not written yet: with a known welcome set the whole login answer (AuthenticationOk,
     * ParameterStatus..., BackendKeyData, ReadyForQuery) goes in one write below. */
    if (client_queue(c, &pb) != ST_OK) {
        client_fail(c, ST_ENOMEM, NULL);
        return;
    }
    if (client_init_want(c) != ST_OK) {
        client_fail(c, ST_ENOMEM, NULL);
        return;
    }
    if (routing_login(c, c->pool) != ROUTING_OK) {
        client_fail(c, ST_ENOMEM, NULL);
        return;
    }
    if (log_level_current >= LOG_INFO) {
        char u[96], db[96];
        log_info("event=login client=" CLIENT_ID_FMT " addr=%s db=%s user=%s node=%s mode=%s",
                 CLIENT_ID(c), client_addr(c), log_value(client_database(c), db, sizeof(db)),
                 log_value(client_user(c), u, sizeof(u)), c->pool->node->name,
                 cfg_pool_mode_name((enum cfg_pool_mode) c->mode));
    }
    /* The startup packet has served its purpose (the wanted settings are parsed out of it);
     * the names live on in the pool. An idle session keeps only what it must. */
    client_free_login(c);
    if (c->mode != CFG_POOL_SESSION) {
        /* Transaction pooling: a client that logs in needs no server when the pool already
         * knows what a fresh server reports. */
        if (pool_welcome(c->pool)) {
            client_welcome_from(c, c->pool);
            return;
        }
    }
    /* The welcome must come from a server first: the client learns now that its password
     * was accepted. */
    client_out_flush(c);
    client_set_state(c, CLIENT_WAITING);
    /* Nothing is read from the client until it has a server: it must wait for
     * ReadyForQuery anyway, and unread bytes are the cheapest way to hold it. */
    pool_sock_stop_read(w->loop, &c->sock);
    client_acquire(c);
}

/* Ask the client for what its method needs, now that login->cu is known (NULL: unknown user). */
static enum status
client_auth_challenge(struct client *c)
{
    struct worker *w = c->w;
    struct client_login *l = c->login;
    enum hba_method m = (enum hba_method) c->method;
    if (m == HBA_TRUST) {
        if (!l->cu) {
            client_fail_auth(c);
            return ST_EAUTH;
        }
        client_auth_done(c);
        return ST_OK;
    }
    if (!l->auth) {
        l->auth = calloc(1, sizeof(*l->auth));
        if (!l->auth) {
            return ST_ENOMEM;
        }
    }
    struct client_auth *a = l->auth;
    a->cfg = cfg_ref(w->cfg);
    struct proto_builder pb;
    uint8_t mem[64];
    proto_builder_init_fixed(&pb, mem, sizeof(mem));
    struct proto_scram_secret secret;
    bool use_scram = false;
    if (m == HBA_PASSWORD) {
        /* The password itself comes back, so any form of secret can check it. */
        a->kind = CLIENT_AUTH_PASSWORD;
        proto_build_auth_cleartext(&pb);
        client_set_state(c, CLIENT_AUTH);
        enum status st = client_queue(c, &pb);
        if (st == ST_OK) {
            client_out_flush(c);
        }
        return st;
    }
    if (m == HBA_SCRAM || (l->cu && strncmp(l->cu->secret, "SCRAM-SHA-256$", 14) == 0)) {
        /* md5 cannot be checked against a SCRAM secret, and a SCRAM exchange cannot be
         * checked against an md5 secret: each user gets the method its secret allows. */
        use_scram = client_scram_secret(c, &secret);
    } else if (!l->cu) {
        use_scram = false;
    }
    if (use_scram) {
        a->scram = malloc(sizeof(*a->scram));
        if (!a->scram) {
            OPENSSL_cleanse(&secret, sizeof(secret));
            return ST_ENOMEM;
        }
        a->kind = CLIENT_AUTH_SCRAM;
        uint8_t nonce[PROTO_SCRAM_NONCE_LEN];
        worker_random(w, nonce, sizeof(nonce));
        proto_scram_server_init_random(a->scram, &secret, nonce);
        OPENSSL_cleanse(&secret, sizeof(secret));
        bool plus = false;
        if (c->sock.ssl) {
            /* Over TLS a client may bind the exchange to the certificate it was shown, so a
             * proxy in between that terminates its TLS cannot relay the exchange. */
            uint8_t cb[PROTO_SCRAM_CBIND_MAX];
            size_t cb_len = proto_scram_cert_end_point(SSL_get_certificate(c->sock.ssl), cb);
            proto_scram_server_offer_plus(a->scram, cb, cb_len);
            plus = a->scram->cbind_len > 0;
        }
        proto_build_auth_sasl(&pb, plus);
    } else {
        a->kind = CLIENT_AUTH_MD5;
        worker_random(w, a->md5_salt, sizeof(a->md5_salt));
        proto_build_auth_md5(&pb, a->md5_salt);
    }
    client_set_state(c, CLIENT_AUTH);
    enum status st = client_queue(c, &pb);
    if (st == ST_OK) {
        client_out_flush(c);
    }
    return st;
}

/*
 * A cleartext password against the user's secret, whatever its form. Against a SCRAM secret
 * the password yields the ClientKey, kept in login->auth like a SCRAM exchange's so that pgmux
 * can log in to servers storing the same secret.
 */
static bool
client_check_cleartext(struct client *c, const char *pw)
{
    struct client_auth *a = c->login->auth;
    const char *s = c->login->cu->secret;
    bool ok = false;
    if (strncmp(s, "SCRAM-SHA-256$", 14) == 0) {
        /* Only the secret and the ClientKey of the exchange's state are used here. */
        if (!a->scram) {
            a->scram = calloc(1, sizeof(*a->scram));
            if (!a->scram) {
                return false;
            }
        }
        struct proto_scram_secret *sec = &a->scram->secret;
        uint8_t salted[PROTO_SCRAM_KEY_LEN], stored[SHA256_DIGEST_LENGTH];
        uint8_t *client_key = a->scram->client_key;
        unsigned int klen = 0;
        if (!proto_scram_secret_parse(s, sec)) {
            return false;
        }
        /* PBKDF2 once per password, secret and worker: a hit means this very password
         * matched this secret before. The entry is as good as the ClientKey that pgmux keeps
         * anyway to log in to servers. */
        bool hit;
        uint8_t tag[SHA256_DIGEST_LENGTH];
        struct worker_derived *d = client_derived(c->w, 'c', client_user(c), s, pw, tag, &hit);
        if (hit) {
            memcpy(client_key, d->client_key, PROTO_SCRAM_KEY_LEN);
            return true;
        }
        stats_add(&c->w->stats->g.auth_derivations, 1);
        if (proto_scram_salted_password(pw, sec->salt, sec->salt_len, sec->iterations, salted) &&
            HMAC(EVP_sha256(), salted, sizeof(salted), (const uint8_t *) "Client Key", 10,
                 client_key, &klen) != NULL &&
            klen == PROTO_SCRAM_KEY_LEN) {
            SHA256(client_key, PROTO_SCRAM_KEY_LEN, stored);
            ok = CRYPTO_memcmp(stored, sec->stored_key, PROTO_SCRAM_KEY_LEN) == 0;
        }
        if (ok && d) {
            client_derived_fill(d, tag, NULL, client_key);
        }
        OPENSSL_cleanse(salted, sizeof(salted));
        OPENSSL_cleanse(stored, sizeof(stored));
    } else if (proto_md5_is_secret(s)) {
        char hashed[PROTO_MD5_LEN + 1];
        proto_md5_hash_password(pw, client_user(c), hashed);
        ok = strlen(s) == PROTO_MD5_LEN && CRYPTO_memcmp(hashed, s, PROTO_MD5_LEN) == 0;
        OPENSSL_cleanse(hashed, sizeof(hashed));
    } else {
        size_t n = strlen(s);
        ok = strlen(pw) == n && CRYPTO_memcmp(pw, s, n) == 0;
    }
    return ok;
}

/* login->auth takes secret (owned) as what auth_query found for client_user(c). */
static void
client_use_found(struct client *c, char *secret)
{
    struct client_login *l = c->login;
    l->auth->aq_user.name = (char *) (uintptr_t) client_user(c);
    l->auth->aq_user.secret = secret;
    l->cu = &l->auth->aq_user;
}

/*
 * Find the user: auth_file first, then (with auth_user set) auth_query's cache, then the
 * lookup thread, whose answer arrives in client_on_authq. An unknown user goes on to the same
 * exchange as a known one and fails like a wrong password.
 */
static enum status
client_auth_begin(struct client *c)
{
    struct worker *w = c->w;
    c->login->cu = cfg_user_find(w->cfg, client_user(c));
    /* The console's database exists only in pgmux: auth_query cannot run there, so console
     * users come from auth_file unless auth_dbname names a real database. */
    if (c->login->cu || !w->cfg->auth_user || strcmp(client_user(c), w->cfg->auth_user) == 0 ||
        (!w->cfg->auth_dbname && admin_is_console_db(client_database(c)))) {
        return client_auth_challenge(c);
    }
    c->login->auth = calloc(1, sizeof(*c->login->auth));
    if (!c->login->auth) {
        return ST_ENOMEM;
    }
    char *secret = NULL;
    switch (authq_cached(w->rt->authq, client_user(c), &secret)) {
    case AUTHQ_FOUND:
        client_use_found(c, secret);
        return client_auth_challenge(c);
    case AUTHQ_NOT_FOUND:
        return client_auth_challenge(c);
    default:
        break;
    }
    const struct topo_snapshot *topo = topo_refresh(&w->rt->topology, &w->topo);
    int idx = topo->primary >= 0 ? topo->primary : w->rt->primary_node;
    const struct pool_node *node = &w->rt->nodes[idx];
    enum status st = authq_request(w->rt->authq, w->cfg, &w->pw, client_id(c), client_user(c),
                                   client_database(c), node->host, node->port);
    if (st == ST_EPOOL) {
        client_fail_full(c, ST_EPOOL, NULL, NULL, "too many auth_query lookups are waiting", NULL);
        return ST_EPOOL;
    }
    if (st != ST_OK) {
        return st;
    }
    /* Nothing to read until the answer: the client waits for our authentication request. The
     * login timeout still runs. */
    c->is_looking_up = true;
    client_set_state(c, CLIENT_AUTH);
    pool_sock_stop_read(w->loop, &c->sock);
    return ST_OK;
}

void
client_on_authq(struct pool_worker *pw, struct pool_msg *m)
{
    struct authq_reply *r = (struct authq_reply *) m;
    struct client *c = client_by_id(pw->owner, r->client_id);
    if (!c || c->state != CLIENT_AUTH || !c->is_looking_up) {
        authq_reply_free(r); /* gave up, timed out, or the worker is stopping */
        return;
    }
    c->is_looking_up = false;
    enum authq_outcome outcome = r->outcome;
    if (outcome == AUTHQ_FOUND) {
        client_use_found(c, r->secret);
        r->secret = NULL;
    }
    authq_reply_free(r);
    if (outcome == AUTHQ_FAILED) {
        char msg[160];
        snprintf(msg, sizeof(msg), "could not look up user \"%.64s\" with auth_query",
                 client_user(c));
        client_fail_full(c, ST_ESERVER_CONNECT, NULL, NULL, msg,
                         "pgmux's log says why; users in auth_file are not affected");
        return;
    }
    enum status st = client_auth_challenge(c);
    if (st != ST_OK) {
        if (c->state != CLIENT_CLOSED) {
            client_fail(c, st, NULL);
        }
        return;
    }
    if (c->state == CLIENT_AUTH) {
        pool_sock_start_read(c->w->loop, &c->sock);
    }
}

/* One 'p' message during authentication. Returns ST_OK to go on reading. */
static enum status
client_auth_message(struct client *c, const uint8_t *body, size_t len)
{
    struct client_auth *a = c->login->auth;
    struct proto_err err = { { 0 } };
    if (a->kind == CLIENT_AUTH_PASSWORD) {
        const char *pw;
        if (proto_read_password(body, len, &pw) != ST_OK) {
            return ST_ECLIENT_PROTOCOL;
        }
        bool ok = c->login->cu && client_check_cleartext(c, pw);
        OPENSSL_cleanse((void *) (uintptr_t) body, len);
        if (!ok) {
            client_fail_auth(c);
            return ST_EAUTH;
        }
        client_auth_done(c);
        return ST_OK;
    }
    if (a->kind == CLIENT_AUTH_MD5) {
        const char *pw;
        if (proto_read_password(body, len, &pw) != ST_OK) {
            return ST_ECLIENT_PROTOCOL;
        }
        bool ok = false;
        if (c->login->cu) {
            char stored[PROTO_MD5_LEN + 1];
            char expect[PROTO_MD5_LEN + 1];
            if (proto_md5_is_secret(c->login->cu->secret)) {
                memcpy(stored, c->login->cu->secret, PROTO_MD5_LEN + 1);
            } else {
                proto_md5_hash_password(c->login->cu->secret, client_user(c), stored);
            }
            proto_md5_salt(stored, a->md5_salt, expect);
            ok = strlen(pw) == PROTO_MD5_LEN && CRYPTO_memcmp(pw, expect, PROTO_MD5_LEN) == 0;
            OPENSSL_cleanse(stored, sizeof(stored));
            OPENSSL_cleanse(expect, sizeof(expect));
        }
        if (!ok) {
            client_fail_auth(c);
            return ST_EAUTH;
        }
        client_auth_done(c);
        return ST_OK;
    }
    char out[PROTO_SCRAM_MSG_MAX];
    size_t out_len = 0;
    struct proto_builder pb;
    uint8_t mem[PROTO_SCRAM_MSG_MAX + 64];
    proto_builder_init_fixed(&pb, mem, sizeof(mem));
    if (!a->scram) {
        return ST_ECLIENT_PROTOCOL; /* no exchange of that kind was started */
    }
    if (a->scram->state == 0) {
        const char *mech;
        const uint8_t *data;
        size_t data_len;
        if (proto_read_sasl_initial(body, len, &mech, &data, &data_len) != ST_OK || !data) {
            return ST_ECLIENT_PROTOCOL;
        }
        if (proto_scram_server_mechanism(a->scram, mech) != ST_OK) {
            client_fail_full(c, ST_ECLIENT_PROTOCOL, NULL, SQLSTATE_PROTOCOL_VIOLATION,
                             "client selected an invalid SASL authentication mechanism", NULL);
            return ST_ECLIENT_PROTOCOL;
        }
        if (proto_scram_server_first(a->scram, data, data_len, out, sizeof(out), &out_len, &err) !=
            ST_OK) {
            client_fail_full(c, ST_ECLIENT_PROTOCOL, NULL, NULL, "malformed SCRAM message",
                             err.text[0] ? err.text : NULL);
            return ST_ECLIENT_PROTOCOL;
        }
        proto_build_auth_sasl_continue(&pb, out, out_len);
        enum status st = client_queue(c, &pb);
        if (st == ST_OK) {
            client_out_flush(c);
        }
        return st;
    }
    enum status st =
        proto_scram_server_final(a->scram, body, len, out, sizeof(out), &out_len, &err);
    if (st == ST_EAUTH || (st == ST_OK && !c->login->cu)) {
        client_fail_auth(c);
        return ST_EAUTH;
    }
    if (st != ST_OK) {
        client_fail_full(c, ST_ECLIENT_PROTOCOL, NULL, NULL, "malformed SCRAM message",
                         err.text[0] ? err.text : NULL);
        return st;
    }
    proto_build_auth_sasl_final(&pb, out, out_len);
    st = client_queue(c, &pb);
    if (st != ST_OK) {
        return st;
    }
    client_auth_done(c);
    return ST_OK;
}

/* Whether the session runs over TLS (hostssl and hostnossl lines ask). */
static bool
client_is_tls(const struct client *c)
{
    return c->sock.ssl != NULL;
}

/*
 * Which authentication method this client gets: auth_type, or with hba_file the method of the
 * first line that matches its connection type, database, user and address. No line, or a
 * reject line, refuses it with 28000 before any password is asked, as PostgreSQL does.
 */
static enum status
client_check_access(struct client *c)
{
    const struct cfg *cfg = c->w->cfg;
    if (!cfg->has_hba) {
        c->method = cfg->auth_type == CFG_AUTH_TRUST ? HBA_TRUST
                    : cfg->auth_type == CFG_AUTH_MD5 ? HBA_MD5
                                                     : HBA_SCRAM;
        return ST_OK;
    }
    bool tls = client_is_tls(c);
    struct hba_conn hc = {
        .is_local = c->peer_family == AF_UNIX,
        .is_tls = tls,
        .family = c->peer_family,
        .addr = c->peer,
        .database = client_database(c),
        .user = client_user(c),
    };
    const struct hba_rule *r = hba_match(&cfg->hba, &hc);
    if (r && r->method != HBA_REJECT) {
        c->method = r->method;
        log_debug("client %s user=%s db=%s: hba_file line %d, method %s", client_addr(c),
                  client_user(c), client_database(c), r->line,
                  hba_method_name((enum hba_method) r->method));
        return ST_OK;
    }
    if (r) {
        log_debug("client %s user=%s db=%s: rejected by hba_file line %d", client_addr(c),
                  client_user(c), client_database(c), r->line);
    }
    char msg[320];
    snprintf(msg, sizeof(msg), "%s for host \"%s\", user \"%.64s\", database \"%.64s\", %s",
             r ? "pgmux hba_file rejects connection" : "no pgmux hba_file entry", client_host(c),
             client_user(c), client_database(c), tls ? "SSL encryption" : "no encryption");
    client_fail_full(c, ST_EAUTH_USER, NULL, SQLSTATE_INVALID_AUTHORIZATION, msg, NULL);
    return ST_EAUTH_USER;
}

/* ---- startup ---- */

/* Parameters that are part of the connection, not settings to replay with SET. */
static bool
param_is_structural(const char *name)
{
    return strcmp(name, "user") == 0 || strcmp(name, "database") == 0 ||
           strcmp(name, "replication") == 0 || strcmp(name, "options") == 0 ||
           strncmp(name, "_pq_.", 5) == 0;
}

static enum status
client_startup_v3(struct client *c, const uint8_t *pkt, uint32_t len,
                  const struct proto_startup *st)
{
    /* Newer minor versions and protocol options get NegotiateProtocolVersion, as PostgreSQL
     * answers them: the client then knows we speak 3.0 without the options. */
    const char *unknown[PROTO_STARTUP_MAX_PARAMS];
    int n_unknown = 0;
    for (int i = 0; i < st->n_params; i++) {
        if (strncmp(st->params[i].name, "_pq_.", 5) == 0) {
            unknown[n_unknown++] = st->params[i].name;
        }
    }
    if ((st->version & 0xffff) > 0 || n_unknown > 0) {
        struct proto_builder pb;
        proto_builder_init_dynamic(&pb);
        proto_build_negotiate_version(&pb, 0, unknown, n_unknown);
        enum status s = client_queue(c, &pb);
        proto_builder_fini(&pb);
        if (s != ST_OK) {
            return s;
        }
    }
    const char *repl = proto_startup_param(st, "replication");
    if (repl && strcasecmp(repl, "false") != 0 && strcasecmp(repl, "off") != 0 &&
        strcmp(repl, "0") != 0) {
        client_fail_full(c, ST_ECLIENT_UNSUPPORTED, NULL, NULL,
                         "replication connections are not supported by pgmux",
                         "connect to the server directly for replication");
        return ST_ECLIENT_UNSUPPORTED;
    }
    const char *opts = proto_startup_param(st, "options");
    size_t opts_len = opts ? strlen(opts) : 0;
    ASSERT(!c->login);
    struct client_login *l = calloc(1, sizeof(*l) + len + (opts_len ? opts_len + 1 : 0));
    if (!l) {
        return ST_ENOMEM;
    }
    c->login = l;
    memcpy(l->startup, pkt, len);
    l->startup_len = len;
    if (opts_len) {
        /* "-c name=value" settings (libpq's options, PGOPTIONS) are settings like the
         * packet's own, which PostgreSQL applies after them, so the packet's win a tie. */
        struct proto_err perr;
        enum status ost = proto_options_split(opts, l->startup + len, &l->n_opts, &perr);
        if (ost == ST_OK && l->n_opts + st->n_params > PROTO_STARTUP_MAX_PARAMS) {
            ost = ST_ECLIENT_UNSUPPORTED;
            snprintf(perr.text, sizeof(perr.text),
                     "more than %d settings in the startup packet and its \"options\"",
                     PROTO_STARTUP_MAX_PARAMS);
        }
        if (ost != ST_OK) {
            client_fail_full(c, ost, "FATAL",
                             ost == ST_ECLIENT_UNSUPPORTED ? SQLSTATE_FEATURE_NOT_SUPPORTED
                                                           : SQLSTATE_SYNTAX_ERROR,
                             perr.text,
                             "set it with -c name=value, as a startup parameter or with SET");
            return ost;
        }
        l->opts = l->startup + len;
    }
    l->user = l->startup + (st->user - (const char *) pkt);
    l->database = l->startup + (st->database - (const char *) pkt);
    if (!c->sock.ssl && c->peer_family != AF_UNIX &&
        tls_client_mode(&c->w->rt->tls) == CFG_CLIENT_TLS_REQUIRE) {
        /* After the startup packet, as PostgreSQL's hostssl does, so the client learns why. */
        client_fail_full(c, ST_EAUTH_USER, "FATAL", SQLSTATE_INVALID_AUTHORIZATION,
                         "SSL required: pgmux accepts only TLS connections",
                         "connect with sslmode=require or stronger");
        return ST_EAUTH_USER;
    }
    if (c->is_over_limit) {
        client_fail(c, ST_ETOOMANY, NULL);
        return ST_ETOOMANY;
    }
    if (c->is_over_addr_limit) {
        char msg[160], detail[80];
        snprintf(msg, sizeof(msg), "too many connections from address %s", client_host(c));
        snprintf(detail, sizeof(detail), "max_client_conn_per_addr is %d",
                 c->w->cfg->max_client_conn_per_addr);
        client_fail_full(c, ST_ETOOMANY, NULL, NULL, msg, detail);
        return ST_ETOOMANY;
    }
    enum status s = client_check_access(c);
    if (s != ST_OK) {
        return s;
    }
    return client_auth_begin(c);
}

/*
 * Answer an SSLRequest ('S' and start the TLS handshake when client TLS is on and the client
 * is on TCP) or a GSSENCRequest ('N': GSSAPI encryption is not offered). After 'N' the client
 * goes on in the clear, or gives up if its sslmode demands TLS.
 */
static enum status
client_answer_encryption(struct client *c, bool is_ssl)
{
    struct worker *w = c->w;
    SSL_CTX *ctx = NULL;
    if (is_ssl && c->peer_family != AF_UNIX) {
        ctx = tls_client_ctx(&w->rt->tls);
    }
    if (!c->sock.out) {
        c->sock.out = buf_get(&w->pw.bufs);
    }
    if (!c->sock.out || buf_append(c->sock.out, ctx ? "S" : "N", 1) != 0) {
        SSL_CTX_free(ctx);
        return ST_ENOMEM;
    }
    client_out_flush(c);
    if (!ctx) {
        return ST_OK;
    }
    if (c->sock.out) {
        /* One byte to a fresh socket always goes; if it did not, it must not be encrypted. */
        SSL_CTX_free(ctx);
        client_close(c, "could not write to the client");
        return ST_ECLIENT_CLOSED;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the session holds its own reference */
    if (!ssl || SSL_set_fd(ssl, c->sock.fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return ST_ENOMEM;
    }
    SSL_set_accept_state(ssl);
    /* The handshake runs inside the next reads (SSL_read drives it), under the same
     * client_login_timeout as the rest of the login. */
    c->sock.ssl = ssl;
    return ST_OK;
}

/* Handle whole startup packets in c->sock.in. ST_OK: keep reading. */
static enum status
client_handle_startup(struct client *c)
{
    struct buf *b = c->sock.in;
    while (c->state == CLIENT_STARTUP && b && buf_unparsed(b) > 0) {
        const uint8_t *p = (const uint8_t *) b->data + b->parsed;
        uint32_t len;
        enum status st = proto_startup_len(p, buf_unparsed(b), &len);
        if (st == ST_INCOMPLETE) {
            return ST_OK;
        }
        if (st != ST_OK) {
            client_fail_full(c, ST_ECLIENT_PROTOCOL, NULL, NULL, "invalid length of startup packet",
                             NULL);
            return ST_ECLIENT_PROTOCOL;
        }
        if (buf_unparsed(b) < len) {
            if (len > buf_space(b) + buf_unparsed(b)) {
                buf_compact(b);
            }
            return ST_OK;
        }
        struct proto_startup su;
        struct proto_err err = { { 0 } };
        st = proto_startup_parse(p, len, &su, &err);
        if (st != ST_OK) {
            client_fail_full(
                c, st == ST_ECLIENT_UNSUPPORTED ? ST_ECLIENT_UNSUPPORTED : ST_ECLIENT_PROTOCOL,
                NULL, NULL,
                st == ST_ECLIENT_UNSUPPORTED ? "unsupported frontend protocol"
                                             : "invalid startup packet layout",
                err.text[0] ? err.text : NULL);
            return st;
        }
        b->parsed += len;
        b->sent = b->parsed;
        switch (su.kind) {
        case PROTO_STARTUP_SSL:
        case PROTO_STARTUP_GSSENC: {
            bool is_ssl = su.kind == PROTO_STARTUP_SSL;
            if (is_ssl ? c->is_ssl_answered : c->is_gss_answered) {
                client_fail_full(c, ST_ECLIENT_PROTOCOL, NULL, NULL, "encryption requested twice",
                                 NULL);
                return ST_ECLIENT_PROTOCOL;
            }
            if (buf_unparsed(b) > 0) {
                /* Bytes sent before our answer could be spliced in by an attacker
                 * (CVE-2021-23214 in PostgreSQL's terms): refuse, as PostgreSQL does. */
                client_fail_full(c, ST_ECLIENT_PROTOCOL, NULL, NULL,
                                 "received unencrypted data after SSL request", NULL);
                return ST_ECLIENT_PROTOCOL;
            }
            if (is_ssl) {
                c->is_ssl_answered = true;
            } else {
                c->is_gss_answered = true;
            }
            st = client_answer_encryption(c, is_ssl);
            if (st != ST_OK) {
                return st;
            }
            break;
        }
        case PROTO_STARTUP_CANCEL:
            client_cancel_dispatch(c->w, su.cancel_pid, su.cancel_key);
            client_close(c, "cancel request forwarded");
            return ST_DECLINED;
        case PROTO_STARTUP_V3:
            st = client_startup_v3(c, p, len, &su);
            if (st != ST_OK) {
                if (c->state != CLIENT_CLOSED) {
                    client_fail(c, st, NULL);
                }
                return st;
            }
            break;
        }
    }
    return ST_OK;
}

/* Handle whole authentication messages in c->sock.in. */
static enum status
client_handle_auth(struct client *c)
{
    struct buf *b = c->sock.in;
    while (c->state == CLIENT_AUTH && !c->is_looking_up && b && buf_unparsed(b) > 0) {
        const uint8_t *p = (const uint8_t *) b->data + b->parsed;
        struct proto_header h;
        uint32_t max = c->w->cfg->max_message_size < CLIENT_AUTH_MSG_MAX
                           ? c->w->cfg->max_message_size
                           : CLIENT_AUTH_MSG_MAX;
        enum status st = proto_header_read(p, buf_unparsed(b), max, &h);
        if (st == ST_INCOMPLETE) {
            return ST_OK;
        }
        if (st != ST_OK || (h.type != 'p' && h.type != 'X')) {
            client_fail_full(c, ST_ECLIENT_PROTOCOL, NULL, NULL, "expected password response",
                             NULL);
            return ST_ECLIENT_PROTOCOL;
        }
        if (h.type == 'X') {
            client_close(c, "client gave up during authentication");
            return ST_DECLINED;
        }
        if (buf_unparsed(b) < proto_header_total(&h)) {
            return ST_OK;
        }
        b->parsed += (uint32_t) proto_header_total(&h);
        b->sent = b->parsed;
        st = client_auth_message(c, p + PROTO_HEADER_LEN, h.len - 4);
        if (st != ST_OK) {
            if (c->state != CLIENT_CLOSED) {
                client_fail(c, st, NULL);
            }
            return st;
        }
    }
    return ST_OK;
}

static void
client_login_read_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct client *c = io->data;
    struct worker *w = c->w;
    if (!c->sock.in) {
        c->sock.in = buf_get(&w->pw.bufs);
        if (!c->sock.in) {
            client_close(c, "out of memory");
            return;
        }
    }
    struct buf *b = c->sock.in;
    if (buf_space(b) == 0) {
        buf_compact(b);
        if (buf_space(b) == 0) {
            client_fail_full(c, ST_ECLIENT_PROTOCOL, NULL, NULL, "startup packet too large", NULL);
            return;
        }
    }
    int n = pool_sock_read(&c->sock, b->data + b->recvd, buf_space(b));
    if (n == -2) {
        return;
    }
    if (n <= 0) {
        if (n < 0 && c->sock.ssl) {
            log_info("client %s: TLS handshake or read failed: %s", client_addr(c),
                     pool_sock_tls_error());
            client_close(c, "TLS error during login");
            return;
        }
        client_close(c, "client disconnected during login");
        return;
    }
    b->recvd += (uint32_t) n;
    c->last_read_us = mono_now_us();
    enum status st = ST_OK;
    if (c->state == CLIENT_STARTUP) {
        st = client_handle_startup(c);
    }
    if (st == ST_OK && c->state == CLIENT_AUTH) {
        st = client_handle_auth(c);
    }
    if (c->state != CLIENT_CLOSED && c->sock.in && buf_is_empty(c->sock.in)) {
        buf_put(&w->pw.bufs, c->sock.in);
        c->sock.in = NULL;
    }
}

/* ---- what the client expects of the server's settings ---- */

static const char *
params_get(const struct pool_params *ps, const char *name)
{
    /* The first letter, folded, rules out most names before a strcasecmp call: a login's
     * welcome asks this for each of about 13 server parameters. */
    unsigned char first = (unsigned char) name[0] | 0x20;
    for (int i = 0; i < ps->n; i++) {
        if (((unsigned char) ps->v[i].name[0] | 0x20) == first &&
            strcasecmp(ps->v[i].name, name) == 0) {
            return ps->v[i].value;
        }
    }
    return NULL;
}

static enum status
params_remove(struct pool_params *ps, const char *name)
{
    for (int i = 0; i < ps->n; i++) {
        if (strcasecmp(ps->v[i].name, name) == 0) {
            return pool_params_remove_at(ps, i);
        }
    }
    return ST_OK;
}

/* ---- the server's spelling of a reported setting (worker.h, spellings) ---- */

#define FNV_BASIS      0xcbf29ce484222325ull
#define FNV_PRIME      0x100000001b3ull
#define WANT_HASH_SEED 0x9e3779b97f4a7c15ull

/* FNV-1a of "name=", the name folded to lower case (ASCII, as setting names are); a pair's
 * hash goes on from it with the value (value_hash), so a value replaced by its server
 * spelling costs only the value again. */
static uint64_t
name_hash(const char *name)
{
    uint64_t e = FNV_BASIS;
    for (const char *p = name; *p; p++) {
        unsigned ch = (unsigned char) *p;
        e = (e ^ (ch | (unsigned) (ch - 'A' < 26u) << 5)) * FNV_PRIME;
    }
    return (e ^ '=') * FNV_PRIME;
}

static uint64_t
value_hash(uint64_t e, const char *value)
{
    for (const char *p = value; *p; p++) {
        e = (e ^ (unsigned char) *p) * FNV_PRIME;
    }
    return e;
}

/* What a spelling depends on besides the pair: the pool's database and user. */
static uint64_t
pool_ident_hash(const struct pool *p)
{
    uint64_t h = value_hash(FNV_BASIS, p->database);
    h = (h ^ 0xff) * FNV_PRIME; /* 0xff never occurs in a string: ends it */
    return value_hash(h, p->user);
}

static uint64_t
spelling_hash(uint64_t ident, uint64_t pair)
{
    /* FNV's low bits, which pick the slot, depend only on the low bits of what went in */
    uint64_t h = ident ^ (pair * 0x9e3779b97f4a7c15ull);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

/* The two slots h may take. */
static struct worker_spelling *
spelling_slot(struct worker *w, uint64_t h, int way)
{
    return &w->spellings[((h % (WORKER_SPELLING_N / 2)) * 2) + (unsigned) way];
}

/* Whether entry e is (p's database and user, name, value). */
static bool
spelling_is(const struct worker_spelling *e, uint64_t h, const struct pool *p, const char *name,
            const char *value)
{
    if (!e->s || e->hash != h) {
        return false;
    }
    /* Pools live as long as the process: the same pool is the same database and user. */
    if (e->pool != p &&
        (strcmp(e->pool->database, p->database) != 0 || strcmp(e->pool->user, p->user) != 0)) {
        return false;
    }
    /* Clients of one application spell a name alike: strcmp mostly answers. */
    return (strcmp(e->s, name) == 0 || strcasecmp(e->s, name) == 0) &&
           strcmp(e->s + e->value_at, value) == 0;
}

/* The server's spelling of value (pair: its hash), or NULL when none was learned. */
static const char *
spelling_find(struct worker *w, const struct pool *p, uint64_t ident, uint64_t pair,
              const char *name, const char *value)
{
    uint64_t h = spelling_hash(ident, pair);
    const struct worker_spelling *e = spelling_slot(w, h, 0);
    if (!spelling_is(e, h, p, name, value)) {
        e = spelling_slot(w, h, 1);
        if (!spelling_is(e, h, p, name, value)) {
            return NULL;
        }
    }
    return e->s + e->server_at;
}

/* Best effort: an entry that cannot be stored costs a later login one SET. */
static void
spelling_learn(struct worker *w, const struct pool *p, const char *name, const char *value,
               const char *server)
{
    size_t nl = strlen(name) + 1, vl = strlen(value) + 1, sl = strlen(server) + 1;
    if (nl + vl + sl > 1024) {
        return; /* long values (an application_name, say) are rarely respelled, never shared */
    }
    char *s = malloc(nl + vl + sl);
    if (!s) {
        return;
    }
    memcpy(s, name, nl);
    memcpy(s + nl, value, vl);
    memcpy(s + nl + vl, server, sl);
    uint64_t h = spelling_hash(pool_ident_hash(p), value_hash(name_hash(name), value));
    /* An empty slot of the two, or the one the hash's top bit names. */
    struct worker_spelling *e = spelling_slot(w, h, 0);
    if (e->s && e->hash != h) {
        struct worker_spelling *o = spelling_slot(w, h, 1);
        e = !o->s || o->hash == h ? o : spelling_slot(w, h, (int) (h >> 63));
    }
    w->n_spellings += e->s == NULL;
    free(e->s);
    e->s = s;
    e->hash = h;
    e->pool = p;
    e->value_at = (uint16_t) nl;
    e->server_at = (uint16_t) (nl + vl);
}

/* The client's wanted settings start as its startup parameters. */
static enum status
client_init_want(struct client *c)
{
    /* The packet was parsed when it arrived (client_startup_v3); this is its copy, which lives
     * until the login ends, so the pairs can point into it until they are interned. */
    const uint8_t *pkt = (const uint8_t *) c->login->startup;
    struct pool_param v[PROTO_STARTUP_MAX_PARAMS];
    int n = 0;
    const char *name, *value;
    /* The "options" settings come first: the packet's own, applied after them by PostgreSQL,
     * win a name given in both. */
    const char *opt = c->login->opts;
    int opts_left = c->login->n_opts;
    for (size_t off = 0;;) {
        if (opts_left > 0) {
            name = opt;
            value = name + strlen(name) + 1;
            opt = value + strlen(value) + 1;
            opts_left--;
        } else if (!proto_startup_next(pkt, c->login->startup_len, &off, &name, &value)) {
            break;
        }
        if (strcmp(name, "target_session_attrs") == 0) {
            /* libpq's own option, sent by drivers that pass it through: a request to pgmux,
             * not a server setting */
            c->is_read_only_session = strcmp(value, "read-only") == 0 ||
                                      strcmp(value, "standby") == 0 ||
                                      strcmp(value, "prefer-standby") == 0;
            continue;
        }
        if (strcasecmp(name, "default_transaction_read_only") == 0) {
            c->is_read_only_session = strcasecmp(value, "on") == 0 ||
                                      strcasecmp(value, "true") == 0 ||
                                      strcasecmp(value, "yes") == 0 || strcmp(value, "1") == 0;
        }
        if (param_is_structural(name)) {
            continue;
        }
        /* A name sent twice, in any case (setting names are), keeps its first place and
         * takes the last value, as the server would. */
        int at = 0;
        while (at < n && strcasecmp(v[at].name, name) != 0) {
            at++;
        }
        if (at == PROTO_STARTUP_MAX_PARAMS) {
            break; /* cannot be: the login refused more pairs (client_startup_v3) */
        }
        v[at].name = (char *) (uintptr_t) name;
        v[at].value = (char *) (uintptr_t) value;
        n += at == n;
    }
    uint64_t ident = c->w->n_spellings > 0 ? pool_ident_hash(c->pool) : 0;
    uint64_t h = WANT_HASH_SEED;
    for (int i = 0; i < n; i++) {
        uint64_t named = name_hash(v[i].name);
        uint64_t e = value_hash(named, v[i].value);
        const char *server =
            ident ? spelling_find(c->w, c->pool, ident, e, v[i].name, v[i].value) : NULL;
        if (server) {
            v[i].value = (char *) (uintptr_t) server; /* interned below: copied */
            e = value_hash(named, server);
        }
        h += e;
    }
    c->want_hash = h ? h : 1;
    /* Held for the session's life and changed only by a SET the client sends: one block, the
     * same for every client that sent the same parameters. */
    return pool_params_intern_from(&c->want, v, n,
                                   &c->w->want_cache[c->want_hash % WORKER_WANT_CACHE_N]);
}

static uint64_t
want_hash_of(const struct pool_param *v, int n)
{
    /* summed, so order does not matter */
    uint64_t h = WANT_HASH_SEED;
    for (int i = 0; i < n; i++) {
        h += value_hash(name_hash(v[i].name), v[i].value);
    }
    return h ? h : 1;
}

void
client_want_rehash(struct client *c)
{
    c->want_hash = want_hash_of(c->want.v, c->want.n);
}

static bool
set_name_ok(const char *name)
{
    return name[0] && !strchr(name, '"');
}

/* Whether setting DateStyle on sc would merge with a value other than the default. */
static bool
datestyle_merges(struct client *c, struct pool_conn *sc)
{
    char dflt[64];
    const char *have = params_get(&sc->params, "DateStyle");
    return !have || !pool_welcome_value(c->pool, "DateStyle", dflt, sizeof(dflt)) ||
           strcmp(dflt, have) != 0;
}

/*
 * Statements that make sc's settings what the client wants, into *out (NULL when none are
 * needed). ST_OK, ST_ENOMEM, or ST_ECLIENT_UNSUPPORTED for a name or value pgmux cannot quote.
 * set_config() is used rather than SET because it parses the value as the configuration file
 * would: a list such as search_path's "a, b" stays a list, where SET would take it as one
 * quoted name. Dollar quoting needs no escaping whatever standard_conforming_strings says; a
 * value containing the tag itself is refused rather than mangled.
 */
static enum status
client_build_sets(struct client *c, struct pool_conn *sc, char **out)
{
    struct strbuf q = { 0 };
    char dflt[256];
    *out = NULL;
    for (int pass = 0; pass < 3; pass++) {
        int n = pass == 0 ? c->want.n : pass == 1 ? sc->applied.n : sc->params.n;
        for (int i = 0; i < n; i++) {
            const char *name, *value = NULL;
            if (pass == 2) {
                /* A tracked setting the client never set: another client's value must not
                 * leak to it, so the pool's default (what a fresh server reports) applies. */
                name = sc->params.v[i].name;
                if (c->mode == CFG_POOL_SESSION || params_get(&c->want, name) ||
                    !cfg_param_tracked(c->w->cfg, name) ||
                    !pool_welcome_value(c->pool, name, dflt, sizeof(dflt)) ||
                    strcmp(dflt, sc->params.v[i].value) == 0) {
                    continue;
                }
                value = dflt;
            } else if (pass == 0) {
                name = c->want.v[i].name;
                value = c->want.v[i].value;
                const char *have = params_get(&sc->params, name);
                if (!have) {
                    have = params_get(&sc->applied, name);
                }
                if (have && strcmp(have, value) == 0) {
                    continue;
                }
            } else {
                /* Set by pgmux for an earlier client, not wanted by this one. */
                name = sc->applied.v[i].name;
                if (params_get(&c->want, name)) {
                    continue;
                }
            }
            if (!set_name_ok(name) || strstr(name, "$pgmux$") ||
                (value && strstr(value, "$pgmux$"))) {
                strbuf_fini(&q);
                return ST_ECLIENT_UNSUPPORTED;
            }
            const char *sep = q.len ? "; " : "";
            if (pass == 0 && strcasecmp(name, "DateStyle") == 0 && datestyle_merges(c, sc)) {
                /* DateStyle takes what a value leaves out from the current setting: "ISO" on
                 * a server left at "SQL, DMY" gives "ISO, DMY", where a login gets "ISO" with
                 * the default order. From the default it is what a login would get. */
                strbuf_appendf(&q, "%sRESET \"DateStyle\"", sep);
                sep = "; ";
            }
            if (value) {
                strbuf_appendf(&q,
                               "%sSELECT pg_catalog.set_config($pgmux$%s$pgmux$, "
                               "$pgmux$%s$pgmux$, false)",
                               sep, name, value);
            } else {
                strbuf_appendf(&q, "%sRESET \"%s\"", sep, name);
            }
        }
    }
    if (q.failed) {
        strbuf_fini(&q);
        return ST_ENOMEM;
    }
    *out = strbuf_take(&q);
    return ST_OK;
}

/*
 * After the replay succeeded: a wanted setting the server reports in a spelling of its own
 * (DateStyle "ISO" as "ISO, MDY") is wanted in that spelling from now on, so the next server
 * compares equal where it holds the same; the worker's later logins get it in their welcome;
 * and a client already welcomed with its own spelling is told the server's, by the
 * ParameterStatus PostgreSQL sends whenever a reported setting changes.
 */
static enum status
client_take_spellings(struct client *c, struct pool_conn *sc)
{
    /* While c->want still holds the client's spelling: the ParameterStatus messages, under
     * the server's names as the welcome has them ("DateStyle", not "datestyle"). */
    struct proto_builder pb;
    proto_builder_init_dynamic(&pb); /* allocates only when a message is built */
    bool changed = false;
    for (int i = 0; i < sc->params.n; i++) {
        const char *mine = params_get(&c->want, sc->params.v[i].name);
        if (mine && strcmp(mine, sc->params.v[i].value) != 0) {
            changed = true;
            if (c->is_welcomed) {
                proto_build_parameter_status(&pb, sc->params.v[i].name, sc->params.v[i].value);
            }
        }
    }
    if (!changed) {
        return ST_OK; /* the common case: settings spelled as the server spells them */
    }
    enum status st = pb.len > 0 || proto_builder_failed(&pb) ? client_queue(c, &pb) : ST_OK;
    proto_builder_fini(&pb);
    for (int i = 0; i < c->want.n && st == ST_OK; i++) {
        const char *have = params_get(&sc->params, c->want.v[i].name);
        if (have && strcmp(have, c->want.v[i].value) != 0) {
            spelling_learn(c->w, c->pool, c->want.v[i].name, c->want.v[i].value, have);
            st = pool_params_set(&c->want, c->want.v[i].name, have);
        }
    }
    client_want_rehash(c);
    return st;
}

/* After the replay succeeded, remember what pgmux set that the server does not report. */
static enum status
client_note_applied(struct client *c, struct pool_conn *sc)
{
    for (int i = 0; i < c->want.n; i++) {
        const char *name = c->want.v[i].name;
        if (!params_get(&sc->params, name) &&
            pool_params_set(&sc->applied, name, c->want.v[i].value) != ST_OK) {
            return ST_ENOMEM;
        }
    }
    for (int i = sc->applied.n - 1; i >= 0; i--) {
        if (!params_get(&c->want, sc->applied.v[i].name) &&
            pool_params_remove_at(&sc->applied, i) != ST_OK) {
            return ST_ENOMEM;
        }
    }
    return ST_OK;
}

/* Tracked settings the server does not report (search_path, ...): read back after the client
 * may have changed them. *out is NULL when there is nothing to read. ST_OK or ST_ENOMEM. */
static enum status
client_build_capture(struct client *c, struct pool_conn *sc, char **out)
{
    const struct cfg *cfg = c->w->cfg;
    struct strbuf q = { 0 };
    *out = NULL;
    for (int i = 0; i < cfg_tracked_count(cfg); i++) {
        const char *name = cfg_tracked_name(cfg, i);
        if (params_get(&sc->params, name) || strchr(name, '\'')) {
            continue;
        }
        strbuf_appendf(&q, "%scurrent_setting('%s', true)", q.len ? ", " : "SELECT ", name);
    }
    if (q.failed) {
        strbuf_fini(&q);
        return ST_ENOMEM;
    }
    *out = strbuf_take(&q);
    return ST_OK;
}

/* A captured row: column i is the i-th tracked name the server does not report. */
static enum status
client_apply_capture(struct client *c, struct pool_conn *sc, const uint8_t *body, size_t len)
{
    const struct cfg *cfg = c->w->cfg;
    struct proto_reader r;
    proto_reader_init(&r, body, len);
    uint16_t ncol;
    if (proto_reader_u16(&r, &ncol) != ST_OK) {
        return ST_ESERVER_PROTOCOL;
    }
    int col = 0;
    for (int i = 0; i < cfg_tracked_count(cfg) && col < ncol; i++) {
        const char *name = cfg_tracked_name(cfg, i);
        if (params_get(&sc->params, name) || strchr(name, '\'')) {
            continue;
        }
        int32_t vlen;
        const uint8_t *v;
        if (proto_reader_i32(&r, &vlen) != ST_OK) {
            return ST_ESERVER_PROTOCOL;
        }
        col++;
        if (vlen < 0) {
            if (params_remove(&c->want, name) != ST_OK ||
                params_remove(&sc->applied, name) != ST_OK) {
                return ST_ENOMEM;
            }
            continue;
        }
        if (proto_reader_bytes(&r, (size_t) vlen, &v) != ST_OK) {
            return ST_ESERVER_PROTOCOL;
        }
        char *value = strndup((const char *) v, (size_t) vlen);
        if (!value) {
            return ST_ENOMEM;
        }
        enum status st = pool_params_set(&c->want, name, value);
        if (st == ST_OK) {
            st = pool_params_set(&sc->applied, name, value);
        }
        free(value);
        if (st != ST_OK) {
            return st;
        }
    }
    return ST_OK;
}

/* ---- getting a server ---- */

static void client_attach(struct client *c, struct pool_conn *sc);

static bool client_await_primary(struct client *c, int failed_node);

static void
client_open_server(struct client *c)
{
    c->is_opening = true;
    enum status st = pool_conn_open(&c->w->pw, c->pool, client_id(c));
    if (st != ST_OK) {
        c->is_opening = false;
        if (routing_fallback(c)) {
            client_acquire(c);
            return;
        }
        if (st != ST_ENOMEM && client_await_primary(c, c->pool->node_idx)) {
            return;
        }
        char detail[200];
        snprintf(detail, sizeof(detail), "server \"%s\" (%s:%d) refused the connection",
                 c->pool->node->name, c->pool->node->host, c->pool->node->port);
        client_fail(c, st == ST_ENOMEM ? ST_ENOMEM : ST_ESERVER_CONNECT, detail);
    }
}

/*
 * Transaction and statement pooling: a transaction whose pool is on a node that can no longer
 * serve it (down, removed, fenced, or a former primary) takes its server from the current
 * primary's pool instead, so an idle session follows a failover. A pool on a usable replica is
 * left alone when a read was routed there on purpose, or for a login that runs nothing of the
 * client's; a transaction routed as a write lands on a replica only when no primary was known
 * (the fallback node may be a standby), and must wait for one instead. False when no node is
 * usable as the primary right now.
 */
static bool
client_follow_primary(struct client *c)
{
    struct worker *w = c->w;
    const struct topo_snapshot *t = topo_refresh(&w->rt->topology, &w->topo);
    int cur = c->pool->node_idx;
    if (cur == t->primary) {
        return true;
    }
    if ((c->is_route_read || c->route_node < 0) && cur >= 0 && cur < t->n_nodes) {
        const struct topo_node *tn = &t->nodes[cur];
        if (tn->role == POOL_ROLE_REPLICA && tn->is_healthy && !tn->is_removed && !tn->is_fenced) {
            return true;
        }
    }
    if (t->primary < 0) {
        return false;
    }
    (void) routing_to_node(c, t->primary); /* out of memory: the old pool, which fails */
    return true;
}

/*
 * A transaction that could not get a primary server waits for the monitor to find one instead
 * of failing at once: during a failover the old primary refuses connections before the monitor
 * has noticed, and the promoted replica is found within two health-check periods. The wait is
 * two periods plus health_check_timeout, at most query_wait_timeout; only in transaction and
 * statement pooling (nothing was sent to the server yet) and only while health checks run.
 * Returns false when the client must fail now.
 */
static bool
client_await_primary(struct client *c, int failed_node)
{
    const struct cfg *cfg = c->w->cfg;
    if (c->mode == CFG_POOL_SESSION || cfg->health_check_period_ms <= 0 ||
        cfg->health_check_user == NULL || c->state != CLIENT_WAITING) {
        return false;
    }
    struct client_aux *x = client_aux(c);
    if (!x) {
        return false;
    }
    int64_t now = mono_now_us();
    if (x->await_until_us == 0) {
        int64_t wait_ms = 2 * cfg->health_check_period_ms + cfg->health_check_timeout_ms;
        if (cfg->query_wait_timeout_ms > 0 && wait_ms > cfg->query_wait_timeout_ms) {
            wait_ms = cfg->query_wait_timeout_ms;
        }
        x->await_until_us = now + wait_ms * 1000;
        log_info("client %s: no usable primary; waiting up to %lld ms for the topology to "
                 "change",
                 client_addr(c), (long long) wait_ms);
    } else if (now >= x->await_until_us) {
        return false; /* this was the last try */
    }
    c->is_awaiting_primary = true;
    x->await_node = failed_node;
    return true;
}

static void
client_acquire(struct client *c)
{
    if (admin_is_paused(&c->w->rt->admin, client_database(c))) {
        /* PAUSE or KILL: the transaction waits here, asking no pool, until RESUME. */
        c->is_held = true;
        return;
    }
    if (c->mode != CFG_POOL_SESSION && !client_follow_primary(c)) {
        if (client_await_primary(c, -1)) {
            return;
        }
        if (c->route_node >= 0 && !c->is_route_read && c->route_node < c->w->topo->n_nodes &&
            c->w->topo->nodes[c->route_node].role == POOL_ROLE_REPLICA) {
            /* A write on the fallback node, which is a standby: it would only refuse it. */
            client_fail_full(c, ST_ESERVER_CONNECT, NULL, NULL, "no usable primary server",
                             "no node answers as the primary; pgmux waited for the topology to "
                             "change");
            return;
        }
    }
    struct pool_conn *sc = NULL;
    switch (pool_acquire(&c->w->pw, c->pool, &c->waiter, &sc)) {
    case POOL_GOT_CONN:
        client_attach(c, sc);
        break;
    case POOL_MUST_CONNECT:
        client_open_server(c);
        break;
    case POOL_QUEUED:
        c->is_queued = true;
        break;
    }
}

void
client_on_grant(struct pool_worker *pw, struct pool *p, struct pool_conn *sc, uint64_t waiter_id)
{
    struct worker *w = pw->owner;
    struct client *c = client_by_id(w, waiter_id);
    if (!c || c->state != CLIENT_WAITING || !c->is_queued) {
        pool_grant_orphan(pw, p, sc);
        return;
    }
    c->is_queued = false;
    if (sc) {
        client_attach(c, sc);
    } else {
        client_open_server(c);
    }
}

void
client_on_ready(struct pool_worker *pw, struct pool_conn *sc, uint64_t opener_id)
{
    struct worker *w = pw->owner;
    struct client *c = client_by_id(w, opener_id);
    if (!c || c->state != CLIENT_WAITING || !c->is_opening) {
        pool_grant_orphan(pw, sc->pool, sc);
        return;
    }
    c->is_opening = false;
    /* A server that has just logged in is untouched: its settings are the pool's defaults. Pools
     * on replicas learn them here, as no client logs in through them in transaction pooling. */
    pool_learn_welcome(sc->pool, &sc->params);
    client_attach(c, sc);
}

void
client_on_answer(struct pool_worker *pw, uint64_t owner_id, const char *value, size_t len)
{
    struct worker *w = pw->owner;
    struct client *c = owner_id & ROUTING_PROBE_OWNER ? NULL : client_by_id(w, owner_id);
    routing_answer(w, c, owner_id, value, len);
}

void
client_on_failed(struct pool_worker *pw, struct pool *p, uint64_t opener_id,
                 const struct pool_failure *f)
{
    (void) p;
    struct worker *w = pw->owner;
    struct client *c = client_by_id(w, opener_id);
    if (!c || c->state != CLIENT_WAITING || !c->is_opening) {
        return;
    }
    c->is_opening = false;
    if (f->st != ST_ENOMEM && routing_fallback(c)) {
        client_acquire(c);
        return;
    }
    /* A server that is down, going down or starting (SQLSTATE class 57: operator
     * intervention) may be replaced by a failover; a refused password will not be. */
    bool is_down = f->st == ST_ESERVER_CONNECT || f->st == ST_ETIMEOUT ||
                   f->st == ST_ESERVER_CLOSED || strncmp(f->sqlstate, "57", 2) == 0;
    if (is_down && client_await_primary(c, p->node_idx)) {
        return;
    }
    /* The server's own words (database does not exist, password rejected) help most. */
    client_fail_full(c, f->st, "FATAL", f->sqlstate, f->message, NULL);
}

void
client_topology_changed(struct worker *w)
{
    const struct topo_snapshot *t = topo_refresh(&w->rt->topology, &w->topo);
    int64_t now = mono_now_us();
    struct ilist_node *it, *tmp;
    ILIST_FOREACH_SAFE(&w->clients_waiting, it, tmp)
    {
        struct client *c = CONTAINER_OF(it, struct client, node);
        if (!c->is_awaiting_primary) {
            continue;
        }
        /* is_awaiting_primary is only set with c->aux in place (client_await_primary) */
        bool has_new = t->primary >= 0 && t->primary != c->aux->await_node;
        bool expired = now >= c->aux->await_until_us;
        if (!has_new && !expired) {
            continue;
        }
        /* past the deadline: one last try against whatever the snapshot says now */
        c->is_awaiting_primary = false;
        client_acquire(c);
    }
}

static void client_welcome(struct client *c);
static void client_idle_read_cb(EV_P_ ev_io *io, int revents);

/* The server is ready for this client's bytes. */
static void
client_go(struct client *c)
{
    if (!c->is_welcomed) {
        client_welcome(c);
        return;
    }
    client_set_state(c, CLIENT_ACTIVE);
    relay_start(c);
}

/*
 * Replies to pgmux's own queries on the server (parameter replay, reading tracked settings
 * back): swallowed, except the first error, which ends a replay at login.
 */
static void
client_setting_read_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct pool_conn *sc = io->data;
    struct client *c = sc->client;
    int r = pool_conn_recv(sc);
    if (r == -2) {
        return;
    }
    if (r <= 0) {
        sc->is_broken = true;
        c->sc = NULL;
        pool_conn_close(sc, "server closed while pgmux ran its own query");
        client_fail(c, ST_ESERVER_CLOSED, NULL);
        return;
    }
    struct proto_header h;
    const uint8_t *body;
    enum status st;
    while ((st = pool_conn_next_msg(sc, &h, &body)) == ST_OK) {
        size_t blen = h.len - 4;
        if (h.type == 'E' && !(c->aux && c->aux->set_error)) {
            struct proto_error_fields ef;
            if (proto_read_error(body, blen, &ef) == ST_OK) {
                const char *code =
                    ef.code && strlen(ef.code) == 5 ? ef.code : SQLSTATE_INVALID_PARAMETER_VALUE;
                const char *msg = ef.message ? ef.message : "invalid startup parameter";
                size_t ml = strlen(msg);
                struct client_aux *x = client_aux(c);
                char *e = x ? malloc(6 + ml + 1) : NULL;
                if (e) {
                    memcpy(e, code, 6);
                    memcpy(e + 6, msg, ml + 1);
                    x->set_error = e;
                }
            }
        } else if (h.type == 'S') {
            const char *name, *value;
            if (proto_read_parameter_status(body, blen, &name, &value) != ST_OK ||
                pool_params_set(&sc->params, name, value) != ST_OK) {
                st = ST_ESERVER_PROTOCOL;
                break;
            }
        } else if (h.type == 'D' && c->is_capturing) {
            st = client_apply_capture(c, sc, body, blen);
            if (st != ST_OK) {
                break;
            }
        } else if (h.type == 'Z') {
            if (proto_read_ready(body, blen, &sc->txn_status) != ST_OK) {
                st = ST_ESERVER_PROTOCOL;
                break;
            }
            sc->expect_ready = 0;
            pool_conn_in_settle(sc);
            if (c->aux && c->aux->set_error) {
                const char *e = c->aux->set_error;
                client_fail_full(c, ST_ECLIENT_UNSUPPORTED, "FATAL", e, e + 6,
                                 "a startup parameter was refused");
                return;
            }
            if (c->is_capturing) {
                c->is_capturing = false;
                c->needs_capture = false;
                client_want_rehash(c);
                sc->synced_hash = c->want_hash;
                client_set_state(c, CLIENT_ACTIVE);
                client_release_server(c);
                return;
            }
            if (client_take_spellings(c, sc) != ST_OK || client_note_applied(c, sc) != ST_OK) {
                client_fail(c, ST_ENOMEM, NULL);
                return;
            }
            sc->synced_hash = c->want_hash;
            client_go(c);
            return;
        }
    }
    if (st != ST_INCOMPLETE) {
        sc->is_broken = true;
        c->sc = NULL;
        pool_conn_close(sc, "protocol error while pgmux ran its own query");
        client_fail(c, st == ST_ENOMEM ? ST_ENOMEM : ST_ESERVER_PROTOCOL, NULL);
        return;
    }
    pool_conn_in_settle(sc);
}

/* Run one of pgmux's own queries on the client's server connection (CLIENT_SETTING). */
static void
client_run_own_query(struct client *c, const char *sql)
{
    struct pool_conn *sc = c->sc;
    struct proto_builder pb;
    proto_builder_init_dynamic(&pb);
    proto_build_query(&pb, sql);
    client_set_state(c, CLIENT_SETTING);
    if (c->aux) {
        free(c->aux->set_error);
        c->aux->set_error = NULL;
    }
    sc->expect_ready = 1;
    pool_sock_stop_read(c->w->loop, &c->sock);
    ev_set_cb(&sc->sock.rio, client_setting_read_cb);
    enum status st = pool_conn_send(sc, &pb);
    proto_builder_fini(&pb);
    if (st != ST_OK) {
        sc->is_broken = true;
        c->sc = NULL;
        pool_conn_close(sc, "could not send pgmux's own query");
        client_fail(c, ST_ESERVER_CLOSED, NULL);
        return;
    }
    pool_sock_start_read(c->w->loop, &sc->sock);
}

static void
client_attach(struct client *c, struct pool_conn *sc)
{
    c->sc = sc;
    if (c->aux) {
        c->aux->await_until_us = 0; /* a server at last: a later failover gets a wait of its own */
    }
    pool_conn_attach(sc, c);
    if (c->mode != CFG_POOL_SESSION && sc->synced_hash == c->want_hash) {
        /* The last client on this connection wanted the same settings: nothing to compare. */
        client_go(c);
        return;
    }
    char *sets;
    enum status st = client_build_sets(c, sc, &sets);
    if (st == ST_ECLIENT_UNSUPPORTED) {
        client_fail_full(c, ST_ECLIENT_UNSUPPORTED, NULL, SQLSTATE_INVALID_PARAMETER_VALUE,
                         "invalid startup parameter", NULL);
        return;
    }
    if (st != ST_OK) {
        client_fail(c, ST_ENOMEM, NULL);
        return;
    }
    if (!sets) {
        sc->synced_hash = c->want_hash;
        client_go(c);
        return;
    }
    client_run_own_query(c, sets);
    free(sets);
}

/* ParameterStatus (the server's values, the client's own for what it set), our
 * BackendKeyData, ReadyForQuery. msgs/ends: server's values already serialized
 * (pool_welcome), or NULL. */
static enum status
client_queue_welcome(struct client *c, const struct pool_params *server, const uint8_t *msgs,
                     const uint32_t *ends, uint8_t txn_status)
{
    struct proto_builder pb;
    /* Room for a usual welcome (about 450 bytes); a longer one is built again below. */
    uint8_t mem[1024];
    proto_builder_init_fixed(&pb, mem, sizeof(mem));
    for (int pass = 0; pass < 2; pass++) {
        /* With the server's messages at hand, the ones the client's settings do not replace
         * are copied a run at a time: [run, start) is copied when a replaced one or the end
         * comes. */
        uint32_t start = 0, run = 0;
        for (int i = 0; i < server->n; i++) {
            const char *name = server->v[i].name;
            const char *mine = c->want.n > 0 ? params_get(&c->want, name) : NULL;
            if (!msgs) {
                proto_build_parameter_status(&pb, name, mine ? mine : server->v[i].value);
                continue;
            }
            if (mine) {
                proto_builder_bytes(&pb, msgs + run, start - run);
                proto_build_parameter_status(&pb, name, mine);
                run = ends[i];
            }
            start = ends[i];
        }
        if (msgs) {
            proto_builder_bytes(&pb, msgs + run, start - run);
        }
        proto_build_backend_key(&pb, c->home_pid, c->cancel_key);
        proto_build_ready(&pb, txn_status);
        if (!proto_builder_failed(&pb) || pass == 1) {
            break;
        }
        proto_builder_init_dynamic(&pb);
    }
    enum status st = client_queue(c, &pb);
    proto_builder_fini(&pb);
    c->is_welcomed = true;
    return st;
}

/* Transaction pooling with a known welcome set: no server needed to log in. */
static void
client_welcome_from(struct client *c, const struct pool *p)
{
    if (client_queue_welcome(c, &p->welcome, p->welcome_msgs, p->welcome_ends, 'I') != ST_OK) {
        client_fail(c, ST_ENOMEM, NULL);
        return;
    }
    client_set_state(c, CLIENT_IDLE);
    ev_set_cb(&c->sock.rio, client_idle_read_cb);
    client_out_flush(c);
    pool_sock_start_read(c->w->loop, &c->sock);
}

static void
client_welcome(struct client *c)
{
    struct pool_conn *sc = c->sc;
    struct worker *w = c->w;
    /* The parameters of a connection nobody has touched yet (the replay changed only what
     * this client asked for, and the client gets its own values anyway). */
    pool_learn_welcome(c->pool, &sc->params);
    if (client_queue_welcome(c, &sc->params, NULL, NULL, sc->txn_status) != ST_OK) {
        client_fail(c, ST_ENOMEM, NULL);
        return;
    }
    pool_sock_stop_read(w->loop, &sc->sock);
    client_set_state(c, CLIENT_ACTIVE);
    c->last_read_us = mono_now_us();
    log_debug("client %s user=%s db=%s attached to server conn %llu", client_addr(c),
              client_user(c), client_database(c), (unsigned long long) sc->id);
    relay_start(c);
}

/* ---- transaction pooling: between transactions ---- */

bool
client_can_release(const struct client *c)
{
    const struct pool_conn *sc = c->sc;
    return sc && c->state == CLIENT_ACTIVE && c->mode != CFG_POOL_SESSION && !c->is_pinned &&
           sc->txn_status == 'I' && sc->expect_ready == 0 && sc->reqs.n == 0 && !sc->is_unsynced &&
           !c->is_c2s_paused && !c->is_s2c_paused && !c->is_s2c_send_queued &&
           c->sock.remain == 0 &&
           (!c->sock.in || buf_unparsed(c->sock.in) + buf_pending(c->sock.in) == 0) &&
           sc->sock.remain == 0 && (!sc->sock.in || buf_unparsed(sc->sock.in) == 0) &&
           (!sc->sock.out || buf_pending(sc->sock.out) == 0);
}

void
client_release_server(struct client *c)
{
    struct worker *w = c->w;
    struct pool_conn *sc = c->sc;
    /* Bytes of this transaction still on their way to the client leave with the client, before
     * any query of pgmux's own reads from the server (which consumes the buffer). */
    struct buf *b = sc->sock.in;
    if (b && buf_pending(b)) {
        if (relay_emit(c, &c->sock, b->data + b->sent, buf_pending(b)) != 0) {
            client_fail(c, ST_ENOMEM, NULL);
            return;
        }
        b->sent = b->parsed;
    }
    if (c->needs_capture) {
        char *q;
        if (client_build_capture(c, sc, &q) != ST_OK) {
            client_fail(c, ST_ENOMEM, NULL);
            return;
        }
        if (q) {
            c->is_capturing = true;
            client_run_own_query(c, q);
            free(q);
            return;
        }
        c->needs_capture = false;
    }
    pool_conn_in_settle(sc);
    c->sc = NULL;
    uint64_t owner = 0;
    const char *q = routing_txn_end(c, &owner);
    if (q) {
        /* The connection learns a position for read-your-writes on its way back to the pool;
         * the client does not wait for it. */
        pool_conn_release_query(sc, q, owner);
    } else {
        pool_conn_release(sc, false);
    }
    routing_leave(c);
    client_set_state(c, CLIENT_IDLE);
    ev_set_cb(&c->sock.rio, client_idle_read_cb);
    ev_set_cb(&c->sock.wio, client_out_write_cb);
    client_out_flush(c);
    pool_sock_start_read(w->loop, &c->sock);
}

/* A transaction-pooled client waiting for a server sent more, or hung up. */
static void
client_waiting_read_cb(EV_P_ ev_io *io, int revents)
{
    (void) revents;
    struct client *c = io->data;
    if (!c->sock.in || buf_space(c->sock.in) == 0) {
        pool_sock_stop_read(EV_A, &c->sock); /* full: the relay takes over when attached */
        return;
    }
    int n = pool_sock_recv(&c->sock, &c->w->pw.bufs);
    if (n == 0 || n == -1) {
        client_close(c, n == 0 ? "client disconnected while waiting" : "client connection error");
    } else if (n > 0 && c->stats) {
        stats_add(&c->stats->bytes_in, (uint64_t) n);
    }
}

/* A transaction-pooled client with no server sent something: get one. */
static void
client_idle_read_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct client *c = io->data;
    struct worker *w = c->w;
    if (w->is_draining && worker_drain_close(c, true)) {
        return; /* its next statement is answered with the 57P01, unread and not run */
    }
    if (!c->sock.ssl && iobatch_queue(w, c, IOBATCH_IDLE_CLIENT)) {
        return;
    }
    client_idle_read_done(c, pool_sock_recv(&c->sock, &w->pw.bufs));
}

void
client_idle_read_done(struct client *c, int n)
{
    struct worker *w = c->w;
    if (n == -2) {
        return;
    }
    if (n <= 0) {
        client_close(c, n == 0 ? "client disconnected" : "client connection error");
        return;
    }
    struct buf *b = c->sock.in;
    c->last_read_us = worker_now_us(w);
    if (c->stats) {
        stats_add(&c->stats->bytes_in, (uint64_t) n);
    }
    struct proto_header h;
    enum status st = proto_header_read((const uint8_t *) b->data + b->parsed, buf_unparsed(b),
                                       w->cfg->max_message_size, &h);
    if (st == ST_INCOMPLETE) {
        return;
    }
    if (st != ST_OK || !proto_frontend_type_valid(h.type)) {
        client_fail(c, ST_ECLIENT_PROTOCOL, "invalid message length or type");
        return;
    }
    if (h.type == 'X') {
        client_close(c, "client sent Terminate");
        return;
    }
    enum routing_result rr = routing_txn_begin(c);
    if (rr == ROUTING_WAIT) {
        return;
    }
    if (rr != ROUTING_OK) {
        client_fail(c, ST_ENOMEM, NULL);
        return;
    }
    client_set_state(c, CLIENT_WAITING);
    /* Read interest stays on while the client waits (no epoll_ctl per transaction): what it
     * pipelines is buffered, and a client that gives up is noticed at once. */
    ev_set_cb(&c->sock.rio, client_waiting_read_cb);
    client_acquire(c);
}

/* ---- timers ---- */

static void
client_tick_idle(struct ilist *l, int64_t now, int64_t idle_to)
{
    struct ilist_node *it, *tmp;
    ILIST_FOREACH_SAFE(l, it, tmp)
    {
        struct client *c = CONTAINER_OF(it, struct client, node);
        if (now - c->last_read_us > idle_to && (!c->sc || c->sc->expect_ready == 0)) {
            client_fail(c, ST_ECLIENT_IDLE_TIMEOUT, NULL);
        }
    }
}

/* idle_transaction_timeout: in a transaction (or a failed one) with every answer given, the
 * client holds a server connection, and its locks, while the server waits for it. */
static void
client_tick_idle_txn(struct ilist *l, int64_t now, int64_t txn_to)
{
    struct ilist_node *it, *tmp;
    ILIST_FOREACH_SAFE(l, it, tmp)
    {
        struct client *c = CONTAINER_OF(it, struct client, node);
        struct pool_conn *sc = c->sc;
        int64_t since = sc && c->last_read_us < sc->ready_us ? sc->ready_us : c->last_read_us;
        if (sc && sc->txn_status != 'I' && sc->expect_ready == 0 && !c->sock.in &&
            now - since > txn_to) {
            client_fail(c, ST_ECLIENT_IDLE_TXN_TIMEOUT, NULL);
        }
    }
}

void
client_tick(struct worker *w, int64_t now)
{
    const struct cfg *cfg = w->cfg;
    struct ilist_node *it, *tmp;
    struct admin_shared *adm = &w->rt->admin;
    int64_t login_to =
        admin_tunable(adm, cfg, ADMIN_TUN_CLIENT_LOGIN_TIMEOUT, cfg->client_login_timeout_ms) *
        1000;
    if (login_to > 0) {
        ILIST_FOREACH_SAFE(&w->clients_login, it, tmp)
        {
            struct client *c = CONTAINER_OF(it, struct client, node);
            /* From accept, not from the last state change: a client that trickles its startup
             * packet and then its password gets no more time than one that sends nothing. */
            if (now - c->connected_us > login_to) {
                client_fail(c, ST_ECLIENT_LOGIN_TIMEOUT, NULL);
            }
        }
    }
    int64_t wait_to =
        admin_tunable(adm, cfg, ADMIN_TUN_QUERY_WAIT_TIMEOUT, cfg->query_wait_timeout_ms) * 1000;
    if (wait_to > 0) {
        ILIST_FOREACH_SAFE(&w->clients_waiting, it, tmp)
        {
            struct client *c = CONTAINER_OF(it, struct client, node);
            if (c->state == CLIENT_WAITING && c->is_queued && now - c->since_us > wait_to) {
                if (pool_waiter_cancel(c->pool, &c->waiter)) {
                    c->is_queued = false;
                    client_fail(c, ST_ETIMEOUT, NULL);
                }
            } else if (c->state == CLIENT_WAITING && c->is_held && now - c->since_us > wait_to) {
                /* A paused database counts as a wait for a server, as in PgBouncer. */
                client_fail(c, ST_ETIMEOUT, NULL);
            }
        }
    }
    client_topology_changed(w);
    int64_t idle_to =
        admin_tunable(adm, cfg, ADMIN_TUN_CLIENT_IDLE_TIMEOUT, cfg->client_idle_timeout_ms) * 1000;
    if (idle_to > 0) {
        client_tick_idle(&w->clients_active, now, idle_to);
        client_tick_idle(&w->clients_idle, now, idle_to);
    }
    int64_t txn_to =
        admin_tunable(adm, cfg, ADMIN_TUN_IDLE_TXN_TIMEOUT, cfg->idle_transaction_timeout_ms) *
        1000;
    if (txn_to > 0) {
        client_tick_idle_txn(&w->clients_active, now, txn_to);
    }
}

void
client_resume_held(struct worker *w)
{
    struct ilist_node *it, *tmp;
    ILIST_FOREACH_SAFE(&w->clients_waiting, it, tmp)
    {
        struct client *c = CONTAINER_OF(it, struct client, node);
        if (c->state == CLIENT_WAITING && c->is_held &&
            !admin_is_paused(&w->rt->admin, client_database(c))) {
            c->is_held = false;
            client_acquire(c);
        }
    }
}
