/*
 * conn.c - a server connection's own life: non-blocking connect, TLS negotiation
 * (server_tls_mode: SSLRequest, then a non-blocking handshake), startup and authentication
 * (SCRAM-SHA-256, md5, cleartext password), the reset query on release, idle watching, retiring
 * and closing. While a client session is attached (POOL_CONN_ACTIVE) the session layer owns the
 * socket's callbacks; everything else here runs on the connection's owning worker.
 *
 * Reference: PostgreSQL documentation, "Message Flow" / "Start-up" and "SASL Authentication".
 */
#include "pool/pool.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/log.h"
#include "common/mono.h"
#include "pool/pool_int.h"
#include "protocol/md5.h"
#include "protocol/messages.h"
#include "protocol/sqlstate.h"
#include "protocol/wire.h"

/* Login-only state, freed as soon as the server says ReadyForQuery. */
struct pool_login {
    struct proto_scram_client scram;
    bool is_scram_started;
    bool used_password;  /* SCRAM with a plaintext password: cache the SaltedPassword */
    uint32_t secret_gen; /* pool->secret_gen when the secret was read */
};

static void conn_login_read_cb(EV_P_ ev_io *io, int revents);
static void conn_reset_read_cb(EV_P_ ev_io *io, int revents);
static void conn_answer_none(struct pool_worker *w, uint64_t owner);
static void conn_idle_read_cb(EV_P_ ev_io *io, int revents);
static void conn_write_cb(EV_P_ ev_io *io, int revents);
static void conn_connect_cb(EV_P_ ev_io *io, int revents);
static void conn_tls_answer_cb(EV_P_ ev_io *io, int revents);
static void conn_send_startup(struct pool_conn *sc);

/* ---- parameters ---- */

/* A packed set: this header, then v[n], then the strings. Immutable once built; shared by every
 * set that pool_params_intern_from gave it, on any thread (a session moves between workers), so
 * the count is atomic. */
struct params_block {
    atomic_int refs;
    int n;
};

static struct pool_param *
block_v(struct params_block *b)
{
    return (struct pool_param *) (void *) (b + 1);
}

/* A packed set has cap 0 and entries (an unpacked one with entries has cap >= n); its block
 * header sits just before v. */
static struct params_block *
params_block(const struct pool_params *ps)
{
    return ps->cap == 0 && ps->n > 0 ? (struct params_block *) (void *) ps->v - 1 : NULL;
}

bool
pool_params_is_packed(const struct pool_params *ps)
{
    return params_block(ps) != NULL;
}

void
pool_params_block_put(void *block)
{
    struct params_block *b = block;
    if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        free(b);
    }
}

/* Give a packed set separate allocations again, so one entry can change. */
static enum status
params_unpack(struct pool_params *ps)
{
    struct params_block *b = params_block(ps);
    if (!b) {
        return ST_OK;
    }
    int cap = ps->n < 8 ? 16 : ps->n * 2;
    struct pool_param *v = calloc((size_t) cap, sizeof(*v));
    if (!v) {
        return ST_ENOMEM;
    }
    for (int i = 0; i < ps->n; i++) {
        v[i].name = strdup(ps->v[i].name);
        v[i].value = strdup(ps->v[i].value);
        if (!v[i].name || !v[i].value) {
            for (int k = 0; k <= i; k++) {
                free(v[k].name);
                free(v[k].value);
            }
            free(v);
            return ST_ENOMEM;
        }
    }
    pool_params_block_put(b);
    ps->v = v;
    ps->cap = cap;
    return ST_OK;
}

enum status
pool_params_set(struct pool_params *ps, const char *name, const char *value)
{
    int at = -1;
    for (int i = 0; i < ps->n; i++) {
        /* Setting names are case-insensitive: a client's startup "datestyle" and the server's
         * "DateStyle" are one entry, which keeps the client's spelling of the name. */
        if (strcasecmp(ps->v[i].name, name) == 0) {
            if (strcmp(ps->v[i].value, value) == 0) {
                return ST_OK;
            }
            at = i;
            break;
        }
    }
    /* Copies first: name or value may point into a packed block that unpacking frees. */
    char *n = at < 0 ? strdup(name) : NULL;
    char *v = strdup(value);
    if ((at < 0 && !n) || !v || params_unpack(ps) != ST_OK) {
        free(n);
        free(v);
        return ST_ENOMEM;
    }
    if (at >= 0) {
        free(ps->v[at].value);
        ps->v[at].value = v;
        return ST_OK;
    }
    if (ps->n == ps->cap) {
        int ncap = ps->cap ? ps->cap * 2 : 16;
        struct pool_param *nv = realloc(ps->v, (size_t) ncap * sizeof(*nv));
        if (!nv) {
            free(n);
            free(v);
            return ST_ENOMEM;
        }
        ps->v = nv;
        ps->cap = ncap;
    }
    ps->v[ps->n].name = n;
    ps->v[ps->n].value = v;
    ps->n++;
    return ST_OK;
}

enum status
pool_params_remove_at(struct pool_params *ps, int i)
{
    if (i < 0 || i >= ps->n) {
        return ST_OK;
    }
    if (params_unpack(ps) != ST_OK) {
        return ST_ENOMEM;
    }
    free(ps->v[i].name);
    free(ps->v[i].value);
    ps->v[i] = ps->v[--ps->n];
    return ST_OK;
}

/* One block holding the n pairs of v, with one reference; NULL when out of memory. */
static struct params_block *
params_block_new(const struct pool_param *v, int n)
{
    size_t size = sizeof(struct params_block) + (size_t) n * sizeof(struct pool_param);
    for (int i = 0; i < n; i++) {
        size += strlen(v[i].name) + 1 + strlen(v[i].value) + 1;
    }
    struct params_block *b = malloc(size);
    if (!b) {
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->n = n;
    struct pool_param *bv = block_v(b);
    char *p = (char *) (bv + n);
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(v[i].name) + 1, vl = strlen(v[i].value) + 1;
        bv[i].name = memcpy(p, v[i].name, nl);
        p += nl;
        bv[i].value = memcpy(p, v[i].value, vl);
        p += vl;
    }
    return b;
}

/* Make the empty set ps the packed set of block b (whose reference it takes over). */
static void
params_adopt(struct pool_params *ps, struct params_block *b)
{
    ps->v = block_v(b);
    ps->n = b->n;
    ps->cap = 0; /* packed (params_block) */
}

static bool
block_holds(struct params_block *b, const struct pool_param *v, int n)
{
    bool same = b && b->n == n;
    for (int i = 0; same && i < n; i++) {
        same = strcmp(block_v(b)[i].name, v[i].name) == 0 &&
               strcmp(block_v(b)[i].value, v[i].value) == 0;
    }
    return same;
}

/* The newest set takes the slot: the next login from the same driver finds it. */
static void
slot_take(void **slot, struct params_block *mine)
{
    atomic_fetch_add_explicit(&mine->refs, 1, memory_order_relaxed);
    pool_params_block_put(*slot);
    *slot = mine;
}

enum status
pool_params_intern_from(struct pool_params *ps, const struct pool_param *v, int n, void **slot)
{
    ASSERT(ps->n == 0);
    if (n == 0) {
        return ST_OK;
    }
    struct params_block *cached = *slot;
    if (block_holds(cached, v, n)) {
        atomic_fetch_add_explicit(&cached->refs, 1, memory_order_relaxed);
        params_adopt(ps, cached);
        return ST_OK;
    }
    struct params_block *b = params_block_new(v, n);
    if (!b) {
        return ST_ENOMEM;
    }
    params_adopt(ps, b);
    slot_take(slot, b);
    return ST_OK;
}

void
pool_params_clear(struct pool_params *ps)
{
    struct params_block *b = params_block(ps);
    if (b) {
        pool_params_block_put(b);
    } else {
        for (int i = 0; i < ps->n; i++) {
            free(ps->v[i].name);
            free(ps->v[i].value);
        }
        free(ps->v);
    }
    ps->v = NULL;
    ps->n = ps->cap = 0;
}

const char *
pool_conn_param(const struct pool_conn *sc, const char *name)
{
    for (int i = 0; i < sc->params.n; i++) {
        if (strcmp(sc->params.v[i].name, name) == 0) {
            return sc->params.v[i].value;
        }
    }
    return NULL;
}

/* ---- small I/O helpers ---- */

int
pool_conn_recv(struct pool_conn *sc)
{
    return pool_sock_recv(&sc->sock, &sc->w->bufs);
}

enum status
pool_conn_next_msg(struct pool_conn *sc, struct proto_header *h, const uint8_t **body)
{
    struct buf *b = sc->sock.in;
    if (!b) {
        return ST_INCOMPLETE;
    }
    enum status st =
        proto_header_read((const uint8_t *) b->data + b->parsed, buf_unparsed(b), b->cap - 1, h);
    if (st == ST_INCOMPLETE) {
        return st;
    }
    if (st != ST_OK || !proto_backend_type_valid(h->type)) {
        return ST_ESERVER_PROTOCOL;
    }
    if (buf_unparsed(b) < proto_header_total(h)) {
        return ST_INCOMPLETE;
    }
    *body = (const uint8_t *) b->data + b->parsed + PROTO_HEADER_LEN;
    b->parsed += (uint32_t) proto_header_total(h);
    b->sent = b->parsed;
    return ST_OK;
}

void
pool_conn_in_settle(struct pool_conn *sc)
{
    struct buf *b = sc->sock.in;
    if (b && buf_is_empty(b)) {
        buf_put(&sc->w->bufs, b);
        sc->sock.in = NULL;
    } else if (b) {
        buf_compact(b);
    }
}

enum status
pool_conn_send(struct pool_conn *sc, const struct proto_builder *pb)
{
    struct pool_sock *s = &sc->sock;
    if (proto_builder_failed(pb)) {
        return ST_ENOMEM;
    }
    if (!s->out) {
        s->out = buf_get(&sc->w->bufs);
        if (!s->out) {
            return ST_ENOMEM;
        }
    }
    if (buf_append(s->out, pb->data, pb->len) != 0) {
        return ST_ENOMEM;
    }
    int r = pool_sock_flush_out(s, &sc->w->bufs);
    if (r < 0) {
        return ST_ESERVER_CLOSED;
    }
    if (r > 0) {
        ev_set_cb(&s->wio, conn_write_cb);
        pool_sock_start_write(sc->w->loop, s);
    }
    return ST_OK;
}

static void
conn_write_cb(EV_P_ ev_io *io, int revents)
{
    (void) revents;
    struct pool_conn *sc = io->data;
    int r = pool_sock_flush_out(&sc->sock, &sc->w->bufs);
    if (r < 0) {
        pool_conn_close(sc, "write to server failed");
        return;
    }
    if (r == 0) {
        pool_sock_stop_write(EV_A, &sc->sock);
    }
}

/* ---- closing ---- */

static void
conn_free_login(struct pool_conn *sc)
{
    if (sc->login) {
        proto_scram_client_fini(&sc->login->scram);
        OPENSSL_cleanse(sc->login, sizeof(*sc->login));
        free(sc->login);
        sc->login = NULL;
    }
}

static void
conn_unlink(struct pool_conn *sc)
{
    struct pool_local *loc = &sc->pool->local[sc->w->idx];
    if (sc->state == POOL_CONN_RESET && !sc->is_release_query) {
        atomic_fetch_sub(&sc->pool->n_resetting, 1);
    }
    if (sc->state == POOL_CONN_IDLE) {
        ilist_remove(&loc->idle, &sc->node);
        atomic_fetch_sub(&loc->n_idle, 1);
        atomic_fetch_sub(&sc->pool->n_idle, 1);
    } else {
        ilist_remove(&loc->busy, &sc->node);
    }
}

/* Close without touching the pool's slot accounting. */
static void
conn_teardown(struct pool_conn *sc, bool polite)
{
    struct pool_worker *w = sc->w;
    if (polite && sc->sock.fd >= 0 && (!sc->sock.out || buf_is_empty(sc->sock.out))) {
        static const uint8_t terminate[5] = { 'X', 0, 0, 0, 4 };
        pool_sock_send_nowait(&sc->sock, terminate, sizeof(terminate));
    }
    SSL_CTX_free(sc->tls_ctx);
    sc->tls_ctx = NULL;
    conn_unlink(sc);
    if (sc->cancel_ref) {
        *sc->cancel_ref = NULL; /* the cancel in flight no longer holds anything */
        sc->cancel_ref = NULL;
    }
    pool_sock_close(w->loop, &sc->sock, &w->bufs);
    conn_free_login(sc);
    sc->state = POOL_CONN_CLOSED;
    sc->client = NULL;
    ilist_push_tail(&w->to_free, &sc->node);
    if (w->reap) {
        ev_check_start(w->loop, w->reap);
    }
}

void
pool_conn_close(struct pool_conn *sc, const char *why)
{
    if (sc->state == POOL_CONN_CLOSED) {
        return;
    }
    struct pool *p = sc->pool;
    struct pool_worker *w = sc->w;
    if (sc->answer_owner) {
        /* closed while running a release query: its owner must not wait for the answer */
        uint64_t owner = sc->answer_owner;
        sc->answer_owner = 0;
        conn_answer_none(w, owner);
    }
    /* A clean connection closed on release (lifetime, limits) says goodbye too. */
    bool polite = (sc->state == POOL_CONN_IDLE && !sc->is_broken) || pool_conn_is_clean(sc);
    if (log_level_current >= LOG_INFO) {
        char d[96], u[96], r[160];
        log_info("event=server_close server=%llu node=%s db=%s user=%s age_ms=%lld reason=%s",
                 (unsigned long long) sc->id, p->node->name, log_value(p->database, d, sizeof(d)),
                 log_value(p->user, u, sizeof(u)),
                 (long long) ((mono_now_us() - sc->created_us) / 1000),
                 log_value(why, r, sizeof(r)));
    }
    conn_teardown(sc, polite);
    pool_slot_release(w, p);
}

static void conn_fail(struct pool_conn *sc, enum status st, const char *sqlstate, const char *fmt,
                      ...) PRINTF_LIKE(4, 5);

static void
conn_fail(struct pool_conn *sc, enum status st, const char *sqlstate, const char *fmt, ...)
{
    struct pool_failure f;
    f.st = st;
    snprintf(f.sqlstate, sizeof(f.sqlstate), "%s", sqlstate);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f.message, sizeof(f.message), fmt, ap);
    va_end(ap);
    struct pool *p = sc->pool;
    struct pool_worker *w = sc->w;
    uint64_t opener = sc->opener_id;
    if (sc->opener_id == 0 && p->local[w->idx].n_warming > 0) {
        p->local[w->idx].n_warming--;
    }
    if (log_level_current >= LOG_WARNING) {
        char d[96], u[96], m[240];
        log_warning("event=server_login_failed server=%llu node=%s db=%s user=%s sqlstate=%s "
                    "message=%s",
                    (unsigned long long) sc->id, p->node->name,
                    log_value(p->database, d, sizeof(d)), log_value(p->user, u, sizeof(u)),
                    f.sqlstate[0] ? f.sqlstate : "-", log_value(f.message, m, sizeof(m)));
    }
    if (st == ST_ESERVER_CONNECT || st == ST_ETIMEOUT) {
        atomic_store(&p->node->is_up, 0);
        atomic_store(&p->node->down_until_us, mono_now_us() + p->set.login_retry_us);
    }
    conn_teardown(sc, false);
    pool_slot_release(w, p);
    if (opener) {
        w->on_failed(w, p, opener, &f);
    }
}

/* ---- opening ---- */

enum status
pool_conn_open(struct pool_worker *w, struct pool *p, uint64_t opener_id)
{
    if (mono_now_us() < atomic_load(&p->node->down_until_us)) {
        pool_slot_release(w, p);
        return ST_ESERVER_CONNECT;
    }
    struct pool_conn *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        pool_slot_release(w, p);
        return ST_ENOMEM;
    }
    int fd = socket(p->node->addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0 || pool_sock_setup(fd, true) < 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        free(sc);
        pool_slot_release(w, p);
        log_error("cannot create socket for server %s: %s", p->node->name, strerror(e));
        return ST_ESERVER_CONNECT;
    }
    sc->pool = p;
    sc->w = w;
    sc->id = atomic_fetch_add(&w->set->next_conn_id, 1);
    sc->opener_id = opener_id;
    sc->created_us = mono_now_us();
    sc->deadline_us = sc->created_us + p->set.connect_timeout_us;
    sc->txn_status = 'I';
    sc->state = POOL_CONN_CONNECTING;
    pool_sock_init(&sc->sock, fd, sc, conn_login_read_cb, conn_connect_cb);
    ilist_push_tail(&p->local[w->idx].busy, &sc->node);
    if (opener_id == 0) {
        p->local[w->idx].n_warming++;
    }
    int r = connect(fd, (const struct sockaddr *) &p->node->addr, p->node->addr_len);
    if (r < 0 && errno != EINPROGRESS) {
        int e = errno;
        /* Failed at once (loopback refusals do): the caller reports it, nobody is called back. */
        log_warning("could not connect to server %s (%s:%d): %s", p->node->name, p->node->host,
                    p->node->port, strerror(e));
        if (opener_id == 0) {
            p->local[w->idx].n_warming--;
        }
        atomic_store(&p->node->is_up, 0);
        atomic_store(&p->node->down_until_us, mono_now_us() + p->set.login_retry_us);
        conn_teardown(sc, false);
        pool_slot_release(w, p);
        return ST_ESERVER_CONNECT;
    }
    pool_sock_start_write(w->loop, &sc->sock);
    return ST_OK;
}

static void
conn_connect_cb(EV_P_ ev_io *io, int revents)
{
    (void) revents;
    struct pool_conn *sc = io->data;
    struct pool *p = sc->pool;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(sc->sock.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        err = errno;
    }
    if (err != 0) {
        conn_fail(sc, ST_ESERVER_CONNECT, SQLSTATE_CONNECTION_FAILURE,
                  "could not connect to server \"%s\" (%s:%d): %s", p->node->name, p->node->host,
                  p->node->port, strerror(err));
        return;
    }
    pool_sock_stop_write(EV_A, &sc->sock);
    ev_set_cb(&sc->sock.wio, conn_write_cb);
    sc->state = POOL_CONN_LOGIN;

    enum pool_tls mode = POOL_TLS_DISABLE;
    if (sc->w->set->tls_get) {
        sc->tls_ctx = sc->w->set->tls_get(sc->w->set->tls_arg, &mode);
    }
    sc->tls_mode = (uint8_t) mode;
    if (mode != POOL_TLS_DISABLE) {
        /* PostgreSQL documentation, "SSL Session Encryption": SSLRequest, one byte back. */
        uint8_t ssl_request[8] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f };
        struct proto_builder pb;
        proto_builder_init_fixed(&pb, ssl_request, sizeof(ssl_request));
        pb.len = sizeof(ssl_request);
        if (pool_conn_send(sc, &pb) != ST_OK) {
            conn_fail(sc, ST_ESERVER_CONNECT, SQLSTATE_CONNECTION_FAILURE,
                      "could not send SSLRequest to server \"%s\"", p->node->name);
            return;
        }
        ev_set_cb(&sc->sock.rio, conn_tls_answer_cb);
        pool_sock_start_read(EV_A, &sc->sock);
        return;
    }
    conn_send_startup(sc);
}

static void
conn_send_startup(struct pool_conn *sc)
{
    struct pool *p = sc->pool;
    const char *names[] = { "user", "database" };
    const char *values[] = { p->user, p->database };
    uint8_t mem[1024];
    struct proto_builder pb;
    proto_builder_init_fixed(&pb, mem, sizeof(mem));
    proto_build_startup(&pb, names, values, 2);
    if (pool_conn_send(sc, &pb) != ST_OK) {
        conn_fail(sc, ST_ESERVER_CONNECT, SQLSTATE_CONNECTION_FAILURE,
                  "could not send startup packet to server \"%s\"", p->node->name);
        return;
    }
    ev_set_cb(&sc->sock.rio, conn_login_read_cb);
    pool_sock_start_read(sc->w->loop, &sc->sock);
}

/* Set up the TLS session towards the node: SNI and the checks server_tls_mode asks for. */
static bool
conn_tls_setup(struct pool_conn *sc)
{
    struct pool_node *node = sc->pool->node;
    SSL *ssl = SSL_new(sc->tls_ctx);
    SSL_CTX_free(sc->tls_ctx); /* the session holds its own reference */
    sc->tls_ctx = NULL;
    if (!ssl || SSL_set_fd(ssl, sc->sock.fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return false;
    }
    SSL_set_connect_state(ssl);
    unsigned char addr[16];
    bool is_ip =
        inet_pton(AF_INET, node->host, addr) == 1 || inet_pton(AF_INET6, node->host, addr) == 1;
    bool ok = true;
    if (!is_ip) {
        /* RFC 6066: SNI carries host names only, never addresses (libpq does the same). */
        ok = SSL_set_tlsext_host_name(ssl, node->host) == 1;
    }
    if (sc->tls_mode >= POOL_TLS_VERIFY_CA) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    }
    if (ok && sc->tls_mode == POOL_TLS_VERIFY_FULL) {
        /* The name must match the node's host as configured: a DNS name against the
         * certificate's DNS names (CN only without any), an address against its IP entries. */
        if (is_ip) {
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), node->host) == 1;
        } else {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = SSL_set1_host(ssl, node->host) == 1;
        }
    }
    if (!ok) {
        SSL_free(ssl);
        ERR_clear_error();
        return false;
    }
    sc->sock.ssl = ssl;
    return true;
}

static void
conn_tls_handshake_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct pool_conn *sc = io->data;
    int r = pool_sock_handshake(&sc->sock);
    if (r == 0) {
        return;
    }
    if (r < 0) {
        conn_fail(sc, ST_ESERVER_CLOSED, SQLSTATE_CONNECTION_FAILURE,
                  "TLS handshake with server \"%s\" failed: %s", sc->pool->node->name,
                  pool_sock_tls_error());
        return;
    }
    conn_send_startup(sc);
}

/* The server's one-byte answer to the SSLRequest. */
static void
conn_tls_answer_cb(EV_P_ ev_io *io, int revents)
{
    (void) revents;
    struct pool_conn *sc = io->data;
    struct pool *p = sc->pool;
    uint8_t answer;
    /* Exactly one byte: anything after it belongs to the TLS handshake, and a server that
     * sends plaintext there (CVE-2021-23222) only makes the handshake fail. */
    ssize_t n;
    do {
        n = recv(sc->sock.fd, &answer, 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
    }
    if (n <= 0) {
        conn_fail(sc, ST_ESERVER_CLOSED, SQLSTATE_CONNECTION_FAILURE,
                  "server \"%s\" closed the connection after SSLRequest", p->node->name);
        return;
    }
    if (answer == 'S') {
        if (!conn_tls_setup(sc)) {
            conn_fail(sc, ST_ENOMEM, SQLSTATE_OUT_OF_MEMORY,
                      "could not set up TLS towards server \"%s\"", p->node->name);
            return;
        }
        ev_set_cb(&sc->sock.rio, conn_tls_handshake_cb);
        conn_tls_handshake_cb(EV_A, &sc->sock.rio, EV_READ);
        return;
    }
    SSL_CTX_free(sc->tls_ctx);
    sc->tls_ctx = NULL;
    if (answer == 'N' && sc->tls_mode == POOL_TLS_PREFER) {
        conn_send_startup(sc);
        return;
    }
    if (answer == 'N') {
        conn_fail(sc, ST_ESERVER_CLOSED, SQLSTATE_CONNECTION_FAILURE,
                  "server \"%s\" does not support TLS, and server_tls_mode requires it",
                  p->node->name);
    } else {
        conn_fail(sc, ST_ESERVER_PROTOCOL, SQLSTATE_CONNECTION_FAILURE,
                  "server \"%s\" sent an invalid answer to SSLRequest", p->node->name);
    }
}

/* ---- login ---- */

static enum status
conn_auth_scram_start(struct pool_conn *sc, const uint8_t *mechs, size_t mechs_len)
{
    struct pool *p = sc->pool;
    /* Over TLS, as libpq's channel_binding=prefer: bound to the certificate the server showed
     * when it offers -PLUS (a machine in between that terminates our TLS cannot relay the
     * exchange, even where server_tls_mode does not verify the certificate), else "y", so a
     * server that offers it knows the offer was taken away on the way. */
    uint8_t cb[PROTO_SCRAM_CBIND_MAX];
    size_t cb_len = 0;
    bool plus = false;
    if (sc->sock.ssl) {
        cb_len = proto_scram_cert_end_point(SSL_get0_peer_certificate(sc->sock.ssl), cb);
        plus = cb_len > 0 && proto_sasl_list_has(mechs, mechs_len, "SCRAM-SHA-256-PLUS");
    }
    if (!plus && !proto_sasl_list_has(mechs, mechs_len, "SCRAM-SHA-256")) {
        return ST_ECLIENT_UNSUPPORTED;
    }
    sc->login = calloc(1, sizeof(*sc->login));
    if (!sc->login) {
        return ST_ENOMEM;
    }
    pthread_mutex_lock(&p->mu);
    sc->login->secret_gen = p->secret_gen;
    if (p->secret.password) {
        proto_scram_client_init_password(&sc->login->scram, p->secret.password, NULL);
        if (p->secret.has_salted) {
            proto_scram_client_set_salted(&sc->login->scram, p->secret.salted, p->secret.salt,
                                          p->secret.salt_len, p->secret.iterations);
        }
        sc->login->used_password = true;
    } else if (p->secret.has_scram_keys) {
        proto_scram_client_init_keys(&sc->login->scram, p->secret.client_key, p->secret.server_key,
                                     NULL);
    } else {
        pthread_mutex_unlock(&p->mu);
        return ST_EAUTH;
    }
    pthread_mutex_unlock(&p->mu);
    sc->login->is_scram_started = true;
    if (plus) {
        proto_scram_client_bind(&sc->login->scram, cb, cb_len);
    } else if (sc->sock.ssl && !proto_sasl_list_has(mechs, mechs_len, "SCRAM-SHA-256-PLUS")) {
        proto_scram_client_bind(&sc->login->scram, NULL, 0);
    } /* else "n": no TLS, or a certificate with no end-point hash (Ed25519) */
    sc->auth_method = plus ? "scram-sha-256-plus" : "scram-sha-256";

    char first[PROTO_SCRAM_MSG_MAX];
    size_t first_len = 0;
    if (proto_scram_client_first(&sc->login->scram, first, sizeof(first), &first_len) != ST_OK) {
        return ST_EINTERNAL;
    }
    uint8_t mem[PROTO_SCRAM_MSG_MAX + 64];
    struct proto_builder pb;
    proto_builder_init_fixed(&pb, mem, sizeof(mem));
    proto_build_sasl_initial(&pb, plus ? "SCRAM-SHA-256-PLUS" : "SCRAM-SHA-256", first, first_len);
    return pool_conn_send(sc, &pb);
}

static enum status
conn_auth_scram_continue(struct pool_conn *sc, const uint8_t *data, size_t len,
                         struct proto_err *err)
{
    struct pool *p = sc->pool;
    if (!sc->login || !sc->login->is_scram_started) {
        return ST_ESERVER_PROTOCOL;
    }
    char final[PROTO_SCRAM_MSG_MAX];
    size_t final_len = 0;
    enum status st = proto_scram_client_final(&sc->login->scram, data, len, final, sizeof(final),
                                              &final_len, err);
    if (st != ST_OK) {
        return st;
    }
    if (sc->login->used_password && sc->login->scram.have_salted) {
        /* PBKDF2 costs milliseconds; remember it for the next login (CONVENTIONS 6.10). */
        pthread_mutex_lock(&p->mu);
        if (sc->login->secret_gen == p->secret_gen) { /* else a reload changed the password */
            memcpy(p->secret.salted, sc->login->scram.salted_password, PROTO_SCRAM_KEY_LEN);
            memcpy(p->secret.salt, sc->login->scram.salted_salt, sc->login->scram.salted_salt_len);
            p->secret.salt_len = sc->login->scram.salted_salt_len;
            p->secret.iterations = sc->login->scram.salted_iterations;
            p->secret.has_salted = true;
        }
        pthread_mutex_unlock(&p->mu);
    }
    uint8_t mem[PROTO_SCRAM_MSG_MAX + 64];
    struct proto_builder pb;
    proto_builder_init_fixed(&pb, mem, sizeof(mem));
    proto_build_sasl_response(&pb, final, final_len);
    return pool_conn_send(sc, &pb);
}

static enum status
conn_auth_password(struct pool_conn *sc, uint32_t code, const uint8_t *rest, size_t rest_len)
{
    struct pool *p = sc->pool;
    char md5buf[PROTO_MD5_LEN + 1];
    char salted[PROTO_MD5_LEN + 1];
    const char *send_pw = NULL;
    uint8_t mem[600];
    struct proto_builder pb;
    proto_builder_init_fixed(&pb, mem, sizeof(mem));

    pthread_mutex_lock(&p->mu);
    if (code == PROTO_AUTH_CLEARTEXT) {
        if (p->secret.password && strlen(p->secret.password) < 500) {
            proto_build_password(&pb, p->secret.password);
            send_pw = "cleartext";
        }
    } else {
        if (rest_len != 4) {
            pthread_mutex_unlock(&p->mu);
            return ST_ESERVER_PROTOCOL;
        }
        if (p->secret.password) {
            proto_md5_hash_password(p->secret.password, p->user, md5buf);
        } else if (p->secret.md5[0]) {
            memcpy(md5buf, p->secret.md5, sizeof(md5buf));
        } else {
            md5buf[0] = '\0';
        }
        if (md5buf[0]) {
            proto_md5_salt(md5buf, rest, salted);
            proto_build_password(&pb, salted);
            send_pw = "md5";
        }
    }
    pthread_mutex_unlock(&p->mu);
    OPENSSL_cleanse(md5buf, sizeof(md5buf));
    OPENSSL_cleanse(salted, sizeof(salted));
    if (!send_pw) {
        return ST_EAUTH;
    }
    sc->auth_method = code == PROTO_AUTH_CLEARTEXT ? "password" : "md5";
    enum status st = pool_conn_send(sc, &pb);
    OPENSSL_cleanse(mem, sizeof(mem));
    return st;
}

static void
conn_login_done(struct pool_conn *sc)
{
    struct pool *p = sc->pool;
    struct pool_worker *w = sc->w;
    conn_free_login(sc);
    atomic_store(&p->node->is_up, 1);
    if (log_level_current >= LOG_INFO) {
        char d[96], u[96];
        log_info("event=server_connect server=%llu node=%s db=%s user=%s backend_pid=%u "
                 "login_ms=%lld tls=%s auth=%s",
                 (unsigned long long) sc->id, p->node->name, log_value(p->database, d, sizeof(d)),
                 log_value(p->user, u, sizeof(u)), sc->be_pid,
                 (long long) ((mono_now_us() - sc->created_us) / 1000), sc->sock.ssl ? "on" : "off",
                 sc->auth_method ? sc->auth_method : "trust");
    }
    pool_conn_in_settle(sc);
    if (sc->sock.in) {
        pool_conn_close(sc, "server sent data after ReadyForQuery");
        return;
    }
    pool_sock_stop_read(w->loop, &sc->sock);
    sc->state = POOL_CONN_ACTIVE;
    if (sc->opener_id) {
        w->on_ready(w, sc, sc->opener_id);
    } else {
        if (p->local[w->idx].n_warming > 0) {
            p->local[w->idx].n_warming--;
        }
        pool_conn_make_idle(sc);
    }
}

static void
conn_login_read_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct pool_conn *sc = io->data;
    struct pool *p = sc->pool;
    int r = pool_conn_recv(sc);
    if (r == -2) {
        return;
    }
    if (r <= 0) {
        conn_fail(sc, ST_ESERVER_CLOSED, SQLSTATE_CONNECTION_FAILURE,
                  "server \"%s\" closed the connection during login", p->node->name);
        return;
    }
    struct proto_header h;
    const uint8_t *body;
    enum status st;
    while ((st = pool_conn_next_msg(sc, &h, &body)) == ST_OK) {
        size_t blen = h.len - 4;
        switch (h.type) {
        case 'R': {
            uint32_t code;
            const uint8_t *rest;
            size_t rest_len;
            struct proto_err err = { { 0 } };
            if (proto_read_auth(body, blen, &code, &rest, &rest_len) != ST_OK) {
                st = ST_ESERVER_PROTOCOL;
                break;
            }
            switch (code) {
            case PROTO_AUTH_OK:
                st = ST_OK;
                break;
            case PROTO_AUTH_CLEARTEXT:
            case PROTO_AUTH_MD5:
                st = conn_auth_password(sc, code, rest, rest_len);
                break;
            case PROTO_AUTH_SASL:
                st = conn_auth_scram_start(sc, rest, rest_len);
                break;
            case PROTO_AUTH_SASL_CONTINUE:
                st = conn_auth_scram_continue(sc, rest, rest_len, &err);
                break;
            case PROTO_AUTH_SASL_FINAL:
                st = sc->login ? proto_scram_client_verify(&sc->login->scram, rest, rest_len, &err)
                               : ST_ESERVER_PROTOCOL;
                break;
            default:
                st = ST_ECLIENT_UNSUPPORTED;
                break;
            }
            if (st == ST_EAUTH) {
                conn_fail(sc, ST_EAUTH, SQLSTATE_INVALID_PASSWORD,
                          "pgmux has no usable credentials to log in to server \"%s\" as user "
                          "\"%s\"",
                          p->node->name, p->user);
                return;
            }
            if (st == ST_ECLIENT_UNSUPPORTED) {
                conn_fail(sc, st, SQLSTATE_FEATURE_NOT_SUPPORTED,
                          "server \"%s\" asked for an authentication method pgmux does not "
                          "support (%u)",
                          p->node->name, code);
                return;
            }
            break;
        }
        case 'E': {
            struct proto_error_fields ef;
            if (proto_read_error(body, blen, &ef) == ST_OK && ef.message) {
                conn_fail(sc, ST_EAUTH, ef.code ? ef.code : SQLSTATE_CONNECTION_FAILURE, "%s",
                          ef.message);
            } else {
                conn_fail(sc, ST_ESERVER_PROTOCOL, SQLSTATE_CONNECTION_FAILURE,
                          "server \"%s\" refused the login", p->node->name);
            }
            return;
        }
        case 'S': {
            const char *name, *value;
            st = proto_read_parameter_status(body, blen, &name, &value);
            if (st == ST_OK) {
                st = pool_params_set(&sc->params, name, value);
            }
            break;
        }
        case 'K':
            st = proto_read_backend_key(body, blen, &sc->be_pid, &sc->be_key);
            break;
        case 'Z':
            st = proto_read_ready(body, blen, &sc->txn_status);
            if (st == ST_OK) {
                conn_login_done(sc);
                return;
            }
            break;
        case 'N': /* notices during login are of no use to anyone */
        case 'v': /* NegotiateProtocolVersion: we asked for plain 3.0, nothing to adjust */
            st = ST_OK;
            break;
        default:
            st = ST_ESERVER_PROTOCOL;
            break;
        }
        if (st != ST_OK) {
            break;
        }
    }
    if (st != ST_INCOMPLETE && st != ST_OK) {
        conn_fail(sc, st, SQLSTATE_CONNECTION_FAILURE, "login to server \"%s\" failed (%s)",
                  p->node->name, st == ST_ENOMEM ? "out of memory" : "protocol error");
        return;
    }
    pool_conn_in_settle(sc);
}

/* ---- release, reset, idle ---- */

bool
pool_conn_is_clean(const struct pool_conn *sc)
{
    return sc->state == POOL_CONN_ACTIVE && !sc->is_broken && sc->txn_status == 'I' &&
           sc->expect_ready == 0 && sc->reqs.n == 0 && !sc->is_unsynced && sc->sock.remain == 0 &&
           (!sc->sock.in || buf_is_empty(sc->sock.in)) &&
           (!sc->sock.out || buf_is_empty(sc->sock.out)) && sc->sock.fd >= 0;
}

void
pool_conn_attach(struct pool_conn *sc, void *client)
{
    ASSERT(sc->state == POOL_CONN_ACTIVE);
    sc->client = client;
}

static bool
conn_too_old(const struct pool_conn *sc, int64_t now)
{
    int64_t life = sc->pool->set.max_lifetime_us;
    return life > 0 && now - sc->created_us >= life;
}

/* ---- answers still to come ---- */

bool
pool_reqs_push(struct pool_reqs *r, uint8_t kind, uint8_t flags, uint64_t h1, uint64_t h2)
{
    if (r->cap == 0) {
        r->v = r->inline_v;
        r->cap = ARRAY_LEN(r->inline_v);
        r->head = 0;
        r->n = 0;
    }
    if (r->n == r->cap) {
        /* A deep pipeline: grow once, keep the order. */
        uint32_t ncap = r->cap * 2;
        struct pool_req *nv = malloc(ncap * sizeof(*nv));
        if (!nv) {
            return false;
        }
        for (uint32_t i = 0; i < r->n; i++) {
            nv[i] = r->v[(r->head + i) & (r->cap - 1)];
        }
        if (r->v != r->inline_v) {
            free(r->v);
        }
        r->v = nv;
        r->cap = ncap;
        r->head = 0;
    }
    struct pool_req *q = &r->v[(r->head + r->n) & (r->cap - 1)];
    q->kind = kind;
    q->flags = flags;
    q->h1 = h1;
    q->h2 = h2;
    r->n++;
    return true;
}

void
pool_reqs_clear(struct pool_reqs *r)
{
    if (r->v && r->v != r->inline_v) {
        free(r->v);
    }
    r->v = NULL;
    r->cap = r->n = r->head = 0;
}

/* ---- prepared statements ---- */

/* h1 is already the start of a SHA-256: its low bits are as good as any hash. */
static uint32_t
stmt_hash_at(const void *ctx, uint32_t pos)
{
    return (uint32_t) ((const struct pool_stmts *) ctx)->v[pos].h1;
}

int
pool_stmts_find(struct pool_stmts *s, uint64_t h1, uint64_t h2)
{
    if (!s->idx.slot) {
        return -1;
    }
    for (uint32_t i = hidx_first(&s->idx, (uint32_t) h1); s->idx.slot[i];
         i = hidx_next(&s->idx, i)) {
        struct pool_stmt *st = &s->v[s->idx.slot[i] - 1];
        if (st->h1 == h1 && st->h2 == h2) {
            st->used = ++s->clock;
            return (int) (s->idx.slot[i] - 1);
        }
    }
    return -1;
}

enum status
pool_stmts_add(struct pool_stmts *s, uint64_t h1, uint64_t h2)
{
    if (s->n == s->cap) {
        int ncap = s->cap ? s->cap * 2 : 8;
        struct pool_stmt *nv = realloc(s->v, (size_t) ncap * sizeof(*nv));
        if (!nv) {
            return ST_ENOMEM;
        }
        s->v = nv;
        if (hidx_reserve(&s->idx, (uint32_t) ncap, (uint32_t) s->n, stmt_hash_at, s) != ST_OK) {
            return ST_ENOMEM;
        }
        s->cap = ncap;
    }
    s->v[s->n].h1 = h1;
    s->v[s->n].h2 = h2;
    s->v[s->n].used = ++s->clock;
    hidx_insert(&s->idx, (uint32_t) h1, (uint32_t) s->n);
    s->n++;
    return ST_OK;
}

void
pool_stmts_remove(struct pool_stmts *s, int i)
{
    hidx_remove_swap(&s->idx, (uint32_t) i, (uint32_t) s->n - 1, stmt_hash_at, s);
    s->v[i] = s->v[--s->n];
}

int
pool_stmts_lru(const struct pool_stmts *s)
{
    int best = -1;
    for (int i = 0; i < s->n; i++) {
        if (best < 0 || s->v[i].used < s->v[best].used) {
            best = i;
        }
    }
    return best;
}

void
pool_stmt_name(uint64_t h1, uint64_t h2, char *out)
{
    snprintf(out, POOL_STMT_NAME_LEN + 1, "pgmux_%016llx%016llx", (unsigned long long) h1,
             (unsigned long long) h2);
}

static void
pool_stmts_clear(struct pool_stmts *s)
{
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
    hidx_fini(&s->idx);
}

void
pool_learn_welcome(struct pool *p, const struct pool_params *params)
{
    if (atomic_load_explicit(&p->has_welcome, memory_order_acquire)) {
        return;
    }
    /* mu only orders writers; readers go by has_welcome. */
    pthread_mutex_lock(&p->mu);
    if (!atomic_load_explicit(&p->has_welcome, memory_order_relaxed)) {
        /* Serialized once here, so a login copies bytes instead of building messages. */
        struct proto_builder pb;
        proto_builder_init_dynamic(&pb);
        uint32_t *ends = calloc((size_t) params->n + 1, sizeof(*ends));
        bool ok = ends != NULL;
        for (int i = 0; i < params->n && ok; i++) {
            ok = pool_params_set(&p->welcome, params->v[i].name, params->v[i].value) == ST_OK;
            proto_build_parameter_status(&pb, params->v[i].name, params->v[i].value);
            ok = ok && !proto_builder_failed(&pb) && pb.len <= UINT32_MAX;
            if (ok) {
                ends[i] = (uint32_t) pb.len;
            }
        }
        if (ok) {
            p->welcome_msgs = pb.data; /* taken over from the builder */
            p->welcome_ends = ends;
            atomic_store_explicit(&p->has_welcome, true, memory_order_release);
        } else {
            pool_params_clear(&p->welcome);
            proto_builder_fini(&pb);
            free(ends);
        }
    }
    pthread_mutex_unlock(&p->mu);
}

const struct pool_params *
pool_welcome(struct pool *p)
{
    return atomic_load_explicit(&p->has_welcome, memory_order_acquire) ? &p->welcome : NULL;
}

bool
pool_welcome_value(struct pool *p, const char *name, char *out, size_t outlen)
{
    const struct pool_params *wp = pool_welcome(p);
    for (int i = 0; wp && i < wp->n; i++) {
        if (strcasecmp(wp->v[i].name, name) == 0) {
            if (strlen(wp->v[i].value) >= outlen) {
                return false;
            }
            strcpy(out, wp->v[i].value);
            return true;
        }
    }
    return false;
}

static void conn_release(struct pool_conn *sc, bool reset, const char *answer_sql, uint64_t owner);

void
pool_conn_release(struct pool_conn *sc, bool reset)
{
    conn_release(sc, reset, NULL, 0);
}

void
pool_conn_release_query(struct pool_conn *sc, const char *sql, uint64_t owner_id)
{
    conn_release(sc, false, sql, owner_id);
}

void
pool_conn_cancel_begin(struct pool_conn *sc, struct pool_conn **ref)
{
    if (sc->cancel_ref) {
        *sc->cancel_ref = NULL; /* the newest request holds the connection until it is done */
    }
    sc->cancel_ref = ref;
    *ref = sc;
}

void
pool_conn_cancel_done(struct pool_conn *sc)
{
    sc->cancel_ref = NULL;
    if (sc->is_quarantined) {
        sc->is_quarantined = false;
        conn_release(sc, sc->quarantine_reset, sc->quarantine_sql, sc->quarantine_owner);
    }
}

/* A release query that will not run (or did not answer): its owner hears so now. */
static void
conn_answer_none(struct pool_worker *w, uint64_t owner)
{
    if (owner && w->on_answer) {
        w->on_answer(w, owner, NULL, 0);
    }
}

static void
conn_release(struct pool_conn *sc, bool reset, const char *answer_sql, uint64_t owner)
{
    ASSERT(sc->state == POOL_CONN_ACTIVE);
    struct pool_worker *w = sc->w;
    sc->client = NULL;
    /* A plaintext socket keeps reading: every way out of here closes it, or sets the read
     * callback of what it becomes (reset, idle) before the loop runs again. */
    if (sc->sock.ssl) {
        pool_sock_stop_read(w->loop, &sc->sock);
    }
    pool_sock_stop_write(w->loop, &sc->sock);
    ev_set_cb(&sc->sock.wio, conn_write_cb);
    if (!pool_conn_is_clean(sc)) {
        sc->is_broken = true;
        pool_conn_close(sc, "released in a state that cannot be reused");
        conn_answer_none(w, owner);
        return;
    }
    pool_conn_in_settle(sc);
    if (sc->sock.out && buf_is_empty(sc->sock.out)) {
        buf_put(&w->bufs, sc->sock.out);
        sc->sock.out = NULL;
    }
    if (conn_too_old(sc, mono_now_us())) {
        pool_conn_close(sc, "conn_max_lifetime reached");
        conn_answer_none(w, owner);
        return;
    }
    /* Idle connections to a removed node were closed when it left; this one was busy then. */
    if (atomic_load_explicit(&sc->pool->node->is_removed, memory_order_relaxed)) {
        pool_conn_close(sc, "node removed");
        conn_answer_none(w, owner);
        return;
    }
    if (answer_sql && (reset || sc->is_session_dirty)) {
        conn_answer_none(w, owner);
        answer_sql = NULL;
        owner = 0;
    }
    if (sc->cancel_ref) {
        /* pool_conn_cancel_done resumes here. Meanwhile the server may only report parameters
         * or notices, as an idle one. */
        sc->is_quarantined = true;
        sc->quarantine_reset = reset;
        sc->quarantine_sql = answer_sql;
        sc->quarantine_owner = owner;
        ev_set_cb(&sc->sock.rio, conn_idle_read_cb);
        pool_sock_start_read(w->loop, &sc->sock);
        return;
    }
    const char *q = sc->pool->set.reset_query;
    if (!reset && sc->is_session_dirty && !(q && q[0])) {
        /* Session state was left behind and there is no reset query to clear it. */
        pool_conn_close(sc, "session state left behind and server_reset_query is empty");
        return;
    }
    if (answer_sql || ((reset || sc->is_session_dirty) && q && q[0])) {
        if (!answer_sql) {
            /* The reset forgets prepared statements and settings pgmux made on the server. */
            pool_stmts_clear(&sc->stmts);
            pool_params_clear(&sc->applied);
            sc->is_session_dirty = false;
            sc->synced_hash = 0;
        }
        sc->answer_owner = owner;
        struct proto_builder pb;
        proto_builder_init_dynamic(&pb);
        proto_build_query(&pb, answer_sql ? answer_sql : q);
        sc->state = POOL_CONN_RESET;
        /* A client that finds no idle connection waits for one being reset rather than open
         * another. Not for a release query: that is the last client's bookkeeping, and the next
         * client must not queue behind it (the pool's cap still holds). */
        sc->is_release_query = answer_sql != NULL;
        if (!sc->is_release_query) {
            atomic_fetch_add(&sc->pool->n_resetting, 1);
        }
        sc->deadline_us = mono_now_us() + sc->pool->set.connect_timeout_us;
        sc->expect_ready = 1;
        ev_set_cb(&sc->sock.rio, conn_reset_read_cb);
        enum status st = pool_conn_send(sc, &pb);
        proto_builder_fini(&pb);
        if (st != ST_OK) {
            sc->is_broken = true;
            pool_conn_close(sc, "could not send the reset query");
            return;
        }
        pool_sock_start_read(w->loop, &sc->sock);
        return;
    }
    pool_conn_make_idle(sc);
}

/* The first column of a release query's DataRow to its owner (once). */
static void
conn_answer_row(struct pool_conn *sc, const uint8_t *body, size_t len)
{
    struct proto_reader r;
    uint16_t ncol;
    int32_t vlen;
    const uint8_t *v = NULL;
    uint64_t owner = sc->answer_owner;
    sc->answer_owner = 0;
    proto_reader_init(&r, body, len);
    if (proto_reader_u16(&r, &ncol) != ST_OK || ncol < 1 || proto_reader_i32(&r, &vlen) != ST_OK ||
        vlen < 0 || proto_reader_bytes(&r, (size_t) vlen, &v) != ST_OK) {
        conn_answer_none(sc->w, owner);
        return;
    }
    if (sc->w->on_answer) {
        sc->w->on_answer(sc->w, owner, (const char *) v, (size_t) vlen);
    }
}

static void
conn_reset_read_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct pool_conn *sc = io->data;
    int r = pool_conn_recv(sc);
    if (r == -2) {
        return;
    }
    if (r <= 0) {
        sc->is_broken = true;
        pool_conn_close(sc, "server closed during reset");
        return;
    }
    struct proto_header h;
    const uint8_t *body;
    enum status st;
    while ((st = pool_conn_next_msg(sc, &h, &body)) == ST_OK) {
        size_t blen = h.len - 4;
        if (h.type == 'D' && sc->answer_owner) {
            conn_answer_row(sc, body, blen);
            continue;
        }
        if (h.type == 'E' && sc->answer_owner) {
            /* A release query that failed (the node is no longer a primary, say) leaves the
             * connection as it was: its owner learns nothing. */
            uint64_t owner = sc->answer_owner;
            sc->answer_owner = 0;
            conn_answer_none(sc->w, owner);
            continue;
        }
        if (h.type == 'E') {
            sc->is_broken = true;
            pool_conn_close(sc, "reset query failed");
            return;
        }
        if (h.type == 'S') {
            const char *name, *value;
            if (proto_read_parameter_status(body, blen, &name, &value) != ST_OK ||
                pool_params_set(&sc->params, name, value) != ST_OK) {
                sc->is_broken = true;
                pool_conn_close(sc, "bad ParameterStatus during reset");
                return;
            }
        }
        if (h.type == 'Z') {
            if (proto_read_ready(body, blen, &sc->txn_status) != ST_OK || sc->txn_status != 'I') {
                sc->is_broken = true;
                pool_conn_close(sc, "reset query left a transaction open");
                return;
            }
            sc->expect_ready = 0;
            if (sc->answer_owner) {
                uint64_t owner = sc->answer_owner; /* answered with no row */
                sc->answer_owner = 0;
                conn_answer_none(sc->w, owner);
            }
            pool_conn_in_settle(sc);
            if (sc->sock.in) {
                sc->is_broken = true;
                pool_conn_close(sc, "server sent data after reset");
                return;
            }
            pool_sock_stop_read(EV_A, &sc->sock);
            sc->state = POOL_CONN_ACTIVE;
            if (!sc->is_release_query) {
                atomic_fetch_sub(&sc->pool->n_resetting, 1);
            }
            sc->is_release_query = false;
            pool_conn_make_idle(sc);
            return;
        }
    }
    if (st != ST_INCOMPLETE) {
        sc->is_broken = true;
        pool_conn_close(sc, "protocol error during reset");
        return;
    }
    pool_conn_in_settle(sc);
}

static void
conn_idle_read_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct pool_conn *sc = io->data;
    int r = pool_conn_recv(sc);
    if (r == -2) {
        return;
    }
    if (r <= 0) {
        sc->is_broken = true;
        pool_conn_close(sc, "server closed an idle connection");
        return;
    }
    struct proto_header h;
    const uint8_t *body;
    enum status st;
    while ((st = pool_conn_next_msg(sc, &h, &body)) == ST_OK) {
        if (h.type == 'S') {
            const char *name, *value;
            if (proto_read_parameter_status(body, h.len - 4, &name, &value) == ST_OK &&
                pool_params_set(&sc->params, name, value) == ST_OK) {
                continue;
            }
        } else if (h.type == 'N') {
            continue;
        }
        /* An ErrorResponse here is a FATAL (administrator shutdown, idle timeout): the server
         * is about to hang up. Anything else means we lost track of the protocol. */
        sc->is_broken = true;
        pool_conn_close(sc, h.type == 'E' ? "server sent an error to an idle connection"
                                          : "unexpected message on an idle connection");
        return;
    }
    if (st != ST_INCOMPLETE) {
        sc->is_broken = true;
        pool_conn_close(sc, "protocol error on an idle connection");
        return;
    }
    pool_conn_in_settle(sc);
}

void
pool_conn_make_idle(struct pool_conn *sc)
{
    struct pool *p = sc->pool;
    struct pool_worker *w = sc->w;
    struct pool_local *loc = &p->local[w->idx];
    ASSERT(sc->state == POOL_CONN_ACTIVE);
    ASSERT(!sc->sock.in && !sc->sock.out);
    sc->client = NULL;
    /* Plaintext: reading stays on, with the idle callback below (see conn_release). */
    if (sc->sock.ssl) {
        pool_sock_stop_read(w->loop, &sc->sock);
    }
    pool_sock_stop_write(w->loop, &sc->sock);

    if (atomic_load(&p->n_waiting) > 0) {
        /* It may be handed to a waiter of another worker: off this loop first. */
        pool_sock_stop_read(w->loop, &sc->sock);
        pthread_mutex_lock(&p->mu);
        /* A reload lowered max_open_conns: shrink by not handing this one on. */
        bool over = p->n_open > atomic_load(&p->set.max_open);
        bool served = !over && pool_serve_waiter_locked(w, p, sc);
        pthread_mutex_unlock(&p->mu);
        if (over) {
            pool_conn_close(sc, "max_open_conns lowered");
            return;
        }
        if (served) {
            return;
        }
    }
    int64_t now = mono_now_us();
    if (conn_too_old(sc, now)) {
        pool_conn_close(sc, "conn_max_lifetime reached");
        return;
    }
    if (atomic_load(&p->n_idle) >= p->set.max_idle) {
        pool_conn_close(sc, "max_idle_conns reached");
        return;
    }
    ilist_remove(&loc->busy, &sc->node);
    sc->state = POOL_CONN_IDLE;
    sc->last_used_us = now;
    ilist_push_tail(&loc->idle, &sc->node);
    atomic_fetch_add(&loc->n_idle, 1);
    atomic_fetch_add(&p->n_idle, 1);
    ev_set_cb(&sc->sock.rio, conn_idle_read_cb);
    pool_sock_start_read(w->loop, &sc->sock);

    /* Pairs with pool_acquire: it queues, then looks at n_idle; we publish n_idle, then look
     * at n_waiting. One of us sees the other. */
    if (atomic_load(&p->n_waiting) > 0) {
        pthread_mutex_lock(&p->mu);
        if (!ilist_empty(&p->waiters) && sc->state == POOL_CONN_IDLE) {
            pool_conn_detach_idle(sc);
            ilist_push_tail(&loc->busy, &sc->node);
            if (!pool_serve_waiter_locked(w, p, sc)) {
                /* Could not allocate the grant: keep it idle. */
                ilist_remove(&loc->busy, &sc->node);
                sc->state = POOL_CONN_IDLE;
                ilist_push_tail(&loc->idle, &sc->node);
                atomic_fetch_add(&loc->n_idle, 1);
                atomic_fetch_add(&p->n_idle, 1);
                pool_sock_start_read(w->loop, &sc->sock);
            }
        }
        pthread_mutex_unlock(&p->mu);
    }
}

/* ---- housekeeping ---- */

void
pool_local_tick(struct pool_worker *w, struct pool *p, int64_t now)
{
    struct pool_local *loc = &p->local[w->idx];
    struct ilist_node *it, *tmp;

    ILIST_FOREACH_SAFE(&loc->busy, it, tmp)
    {
        struct pool_conn *sc = CONTAINER_OF(it, struct pool_conn, node);
        if ((sc->state == POOL_CONN_CONNECTING || sc->state == POOL_CONN_LOGIN) &&
            now > sc->deadline_us) {
            conn_fail(sc, ST_ETIMEOUT, SQLSTATE_CONNECTION_FAILURE,
                      "timed out connecting to server \"%s\" (server_connect_timeout)",
                      p->node->name);
        } else if (sc->state == POOL_CONN_RESET && now > sc->deadline_us) {
            sc->is_broken = true;
            pool_conn_close(sc, "reset query timed out");
        }
    }
    int excess = ilist_empty(&loc->idle) ? 0 : pool_open_excess(p);
    ILIST_FOREACH_SAFE(&loc->idle, it, tmp)
    {
        struct pool_conn *sc = CONTAINER_OF(it, struct pool_conn, node);
        int64_t idle_max = p->set.max_idle_time_us;
        bool keep_warm = w->idx == p->home_worker && atomic_load(&p->n_idle) <= p->set.min_idle;
        if (conn_too_old(sc, now)) {
            pool_conn_close(sc, "conn_max_lifetime reached");
        } else if (idle_max > 0 && now - sc->last_used_us >= idle_max && !keep_warm) {
            pool_conn_close(sc, "conn_max_idle_time reached");
        } else if (atomic_load(&p->n_idle) > p->set.max_idle) {
            /* Only after a reload lowered max_idle_conns: releases keep it otherwise. */
            pool_conn_close(sc, "max_idle_conns lowered");
        } else if (excess > 0) {
            excess--;
            pool_conn_close(sc, "max_open_conns lowered");
        }
    }
    if (atomic_load(&p->n_waiting) == 0 && !ilist_empty(&loc->idle) && pool_caps_wanted(p, now)) {
        /* Another pool behind a full max_db_connections or max_user_connections cap that
         * this one shares: one idle connection a tick makes room for it. */
        pool_conn_close(CONTAINER_OF(ilist_first(&loc->idle), struct pool_conn, node),
                        "closed while idle to make room under a shared cap");
    }
    /* Not into a slot a pool sharing a full cap waits for. */
    if (w->idx == p->home_worker && p->set.min_idle > 0 && !pool_caps_wanted(p, now)) {
        int need = p->set.min_idle - atomic_load(&p->n_idle) - loc->n_warming;
        if (need > 0 && pool_can_login(p)) {
            for (int i = 0; i < need; i++) {
                pthread_mutex_lock(&p->mu);
                bool ok = p->n_open < p->set.max_open && pool_caps_take(p);
                if (ok) {
                    p->n_open++;
                }
                pthread_mutex_unlock(&p->mu);
                if (!ok || pool_conn_open(w, p, 0) != ST_OK) {
                    break;
                }
            }
        }
    }
}

void
pool_worker_reap(struct pool_worker *w)
{
    struct ilist_node *n;
    while ((n = ilist_pop_head(&w->to_free)) != NULL) {
        struct pool_conn *sc = CONTAINER_OF(n, struct pool_conn, node);
        pool_params_clear(&sc->params);
        pool_params_clear(&sc->applied);
        pool_reqs_clear(&sc->reqs);
        pool_stmts_clear(&sc->stmts);
        free(sc);
    }
}

void
pool_worker_close_all(struct pool_worker *w)
{
    struct pool_set *s = w->set;
    pthread_mutex_lock(&s->mu);
    int n = s->n_pools;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&s->mu);
        struct pool *p = s->pools[i];
        pthread_mutex_unlock(&s->mu);
        struct pool_local *loc = &p->local[w->idx];
        struct ilist_node *it;
        while ((it = ilist_first(&loc->idle)) != NULL) {
            pool_conn_close(CONTAINER_OF(it, struct pool_conn, node), "shutting down");
        }
        while ((it = ilist_first(&loc->busy)) != NULL) {
            struct pool_conn *sc = CONTAINER_OF(it, struct pool_conn, node);
            sc->is_broken = true;
            pool_conn_close(sc, "shutting down");
        }
    }
}

int
pool_worker_close_idle_node(struct pool_worker *w, int node_idx, const char *why)
{
    struct pool_set *s = w->set;
    pthread_mutex_lock(&s->mu);
    int n = s->n_pools;
    pthread_mutex_unlock(&s->mu);
    int closed = 0;
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&s->mu);
        struct pool *p = s->pools[i];
        pthread_mutex_unlock(&s->mu);
        if (p->node_idx != node_idx) {
            continue;
        }
        struct ilist_node *it;
        while ((it = ilist_first(&p->local[w->idx].idle)) != NULL) {
            pool_conn_close(CONTAINER_OF(it, struct pool_conn, node), why);
            closed++;
        }
    }
    return closed;
}
