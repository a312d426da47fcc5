/*
 * pool.c - pool registry, global accounting, the waiter queue and hand-over of connections
 * between workers. See pool.h for the locking story; connection I/O lives in conn.c.
 */
#include "pool/pool.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/log.h"
#include "common/mono.h"
#include "pool/pool_int.h"

static char *
dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int
pool_set_init(struct pool_set *s, struct pool_node *nodes, int n_nodes, int n_workers,
              const struct pool_settings *defaults)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->nodes = nodes;
    s->n_nodes = n_nodes;
    s->n_workers = n_workers;
    s->workers = calloc((size_t) n_workers, sizeof(*s->workers));
    s->defaults = *defaults;
    s->queries = calloc(1, sizeof(*s->queries));
    atomic_init(&s->next_conn_id, 1);
    if (!s->workers || !s->queries ||
        !(s->queries[0] = strdup(defaults->reset_query ? defaults->reset_query : ""))) {
        free(s->workers);
        free(s->queries);
        return -1;
    }
    s->n_queries = 1;
    s->defaults.reset_query = s->queries[0];
    return 0;
}

/* The set's copy of q, made once per distinct text: readers hold borrowed pointers with no
 * reference, so a string stays until pool_set_fini. Under s->mu. */
static const char *
query_intern(struct pool_set *s, const char *q)
{
    for (int i = 0; i < s->n_queries; i++) {
        if (strcmp(s->queries[i], q) == 0) {
            return s->queries[i];
        }
    }
    char **nq = realloc(s->queries, (size_t) (s->n_queries + 1) * sizeof(*nq));
    if (!nq) {
        return NULL;
    }
    s->queries = nq;
    char *copy = strdup(q);
    if (!copy) {
        return NULL;
    }
    s->queries[s->n_queries++] = copy;
    return copy;
}

static void post_serve(struct pool_worker *from, struct pool *p, int hops);
static void post_serve_from_outside(struct pool_set *s, struct pool *p);

/* Field by field: each store is atomic, a struct assignment would not be. */
static void
settings_store(struct pool_settings *dst, const struct pool_settings *src, const char *query)
{
    atomic_store(&dst->max_open, atomic_load(&src->max_open));
    atomic_store(&dst->max_idle, atomic_load(&src->max_idle));
    atomic_store(&dst->min_idle, atomic_load(&src->min_idle));
    atomic_store(&dst->max_lifetime_us, atomic_load(&src->max_lifetime_us));
    atomic_store(&dst->max_idle_time_us, atomic_load(&src->max_idle_time_us));
    atomic_store(&dst->connect_timeout_us, atomic_load(&src->connect_timeout_us));
    atomic_store(&dst->login_retry_us, atomic_load(&src->login_retry_us));
    atomic_store(&dst->reset_query, query);
    atomic_store(&dst->max_db, atomic_load(&src->max_db));
    atomic_store(&dst->max_user, atomic_load(&src->max_user));
}

/* What cap c allows: its name's own limit, else the set's default. Under s->mu. */
static int
cap_max_for(const struct pool_set *s, const struct pool_cap *c)
{
    for (int i = 0; i < s->n_limits; i++) {
        if (s->limits[i].is_user == c->is_user && strcmp(s->limits[i].name, c->name) == 0) {
            return s->limits[i].max;
        }
    }
    return atomic_load(c->is_user ? &s->defaults.max_user : &s->defaults.max_db);
}

static void
limits_free(struct pool_cap_limit *v, int n)
{
    for (int i = 0; i < n; i++) {
        free(v[i].name);
    }
    free(v);
}

enum status
pool_set_cap_limits(struct pool_set *s, const struct pool_cap_limit *v, int n)
{
    struct pool_cap_limit *copy = n > 0 ? calloc((size_t) n, sizeof(*copy)) : NULL;
    if (n > 0 && !copy) {
        return ST_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        copy[i] = v[i];
        if (!(copy[i].name = strdup(v[i].name))) {
            limits_free(copy, i);
            return ST_ENOMEM;
        }
    }
    pthread_mutex_lock(&s->mu);
    limits_free(s->limits, s->n_limits);
    s->limits = copy;
    s->n_limits = n;
    for (int i = 0; i < s->n_caps; i++) {
        atomic_store(&s->caps[i]->max, cap_max_for(s, s->caps[i]));
    }
    pthread_mutex_unlock(&s->mu);
    return ST_OK;
}

/* The cap of (node, database) or (node, user), made on first use. Under s->mu. */
static struct pool_cap *
cap_get(struct pool_set *s, int node_idx, bool is_user, const char *name)
{
    for (int i = 0; i < s->n_caps; i++) {
        struct pool_cap *c = s->caps[i];
        if (c->node_idx == node_idx && c->is_user == is_user && strcmp(c->name, name) == 0) {
            return c;
        }
    }
    if (s->n_caps == s->cap_caps) {
        int ncap = s->cap_caps ? s->cap_caps * 2 : 16;
        struct pool_cap **nc = realloc(s->caps, (size_t) ncap * sizeof(*nc));
        if (!nc) {
            return NULL;
        }
        s->caps = nc;
        s->cap_caps = ncap;
    }
    struct pool_cap *c = calloc(1, sizeof(*c));
    if (!c || !(c->name = strdup(name))) {
        free(c);
        return NULL;
    }
    c->node_idx = node_idx;
    c->is_user = is_user;
    atomic_init(&c->max, cap_max_for(s, c));
    s->caps[s->n_caps++] = c;
    return c;
}

bool
pool_caps_take(struct pool *p)
{
    for (int i = 0; i < 2; i++) {
        struct pool_cap *c = p->caps[i];
        int max = atomic_load(&c->max);
        if (atomic_fetch_add(&c->n_open, 1) >= max && max > 0) {
            atomic_fetch_sub(&c->n_open, 1);
            if (i == 1) {
                atomic_fetch_sub(&p->caps[0]->n_open, 1);
            }
            return false;
        }
    }
    return true;
}

void
pool_caps_untake(struct pool *p)
{
    atomic_fetch_sub(&p->caps[0]->n_open, 1);
    atomic_fetch_sub(&p->caps[1]->n_open, 1);
}

bool
pool_caps_wanted(struct pool *p, int64_t now_us)
{
    for (int i = 0; i < 2; i++) {
        struct pool_cap *c = p->caps[i];
        if (atomic_load(&c->max) > 0 && now_us - atomic_load(&c->want_room_us) < 600000) {
            return true;
        }
    }
    return false;
}

/* A slot of p's caps is free again: a pool sharing a cap that was full may be waiting for it.
 * Not under p->mu (takes the set's lock). */
static void
caps_give(struct pool_worker *w, struct pool *p)
{
    struct pool_set *s = w->set;
    bool was_full = false;
    for (int i = 0; i < 2; i++) {
        struct pool_cap *c = p->caps[i];
        int max = atomic_load(&c->max);
        was_full |= atomic_fetch_sub(&c->n_open, 1) >= max && max > 0;
    }
    if (!was_full) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    struct pool *next = NULL;
    for (int i = 0; i < s->n_pools && !next; i++) {
        struct pool *q = s->pools[i];
        if ((q->caps[0] == p->caps[0] || q->caps[1] == p->caps[1]) &&
            atomic_load(&q->n_waiting) > 0) {
            next = q;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (next) {
        post_serve(w, next, 0);
    }
}

enum status
pool_set_apply(struct pool_set *s, const struct pool_settings *ps)
{
    pthread_mutex_lock(&s->mu);
    const char *q = query_intern(s, ps->reset_query ? ps->reset_query : "");
    if (!q) {
        pthread_mutex_unlock(&s->mu);
        return ST_ENOMEM;
    }
    settings_store(&s->defaults, ps, q);
    for (int i = 0; i < s->n_caps; i++) {
        atomic_store(&s->caps[i]->max, cap_max_for(s, s->caps[i]));
    }
    for (int i = 0; i < s->n_pools; i++) {
        struct pool *p = s->pools[i];
        pthread_mutex_lock(&p->mu);
        settings_store(&p->set, ps, q);
        /* A raised max_open_conns serves the queue now: nobody else would until a connection
         * is released. */
        bool kick = !ilist_empty(&p->waiters) && p->n_open < atomic_load(&p->set.max_open);
        pthread_mutex_unlock(&p->mu);
        if (kick) {
            post_serve_from_outside(s, p);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return ST_OK;
}

enum status
pool_set_secret(struct pool *p, const struct pool_secret *secret)
{
    char *pw = NULL;
    if (secret->password && !(pw = strdup(secret->password))) {
        return ST_ENOMEM;
    }
    pthread_mutex_lock(&p->mu);
    if (p->secret.password) {
        OPENSSL_cleanse(p->secret.password, strlen(p->secret.password));
        free(p->secret.password);
    }
    OPENSSL_cleanse(&p->secret, sizeof(p->secret));
    p->secret.password = pw;
    memcpy(p->secret.md5, secret->md5, sizeof(p->secret.md5));
    p->secret_gen++;
    pthread_mutex_unlock(&p->mu);
    return ST_OK;
}

int
pool_open_excess(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    int excess = p->n_open - atomic_load(&p->set.max_open);
    pthread_mutex_unlock(&p->mu);
    return excess > 0 ? excess : 0;
}

void
pool_set_may_overtake(struct pool *p, bool may_overtake)
{
    pthread_mutex_lock(&p->mu);
    p->may_overtake = may_overtake;
    pthread_mutex_unlock(&p->mu);
}

static void
secret_wipe(struct pool_secret *sec)
{
    if (sec->password) {
        OPENSSL_cleanse(sec->password, strlen(sec->password));
        free(sec->password);
    }
    OPENSSL_cleanse(sec, sizeof(*sec));
}

void
pool_set_fini(struct pool_set *s)
{
    for (int i = 0; i < s->n_pools; i++) {
        struct pool *p = s->pools[i];
        secret_wipe(&p->secret);
        free(p->database);
        free(p->user);
        free(p->local);
        pool_params_clear(&p->welcome);
        free(p->welcome_msgs);
        free(p->welcome_ends);
        pthread_mutex_destroy(&p->mu);
        free(p);
    }
    free(s->pools);
    for (int i = 0; i < s->n_caps; i++) {
        free(s->caps[i]->name);
        free(s->caps[i]);
    }
    free(s->caps);
    limits_free(s->limits, s->n_limits);
    free(s->workers);
    for (int i = 0; i < s->n_queries; i++) {
        free(s->queries[i]);
    }
    free(s->queries);
    pthread_mutex_destroy(&s->mu);
}

struct pool *
pool_get(struct pool_set *s, int node_idx, const char *database, const char *user,
         const struct pool_secret *secret_init, bool may_overtake)
{
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_pools; i++) {
        struct pool *p = s->pools[i];
        if (p->node_idx == node_idx && strcmp(p->database, database) == 0 &&
            strcmp(p->user, user) == 0) {
            pthread_mutex_unlock(&s->mu);
            return p;
        }
    }
    if (s->n_pools == s->cap_pools) {
        int ncap = s->cap_pools ? s->cap_pools * 2 : 16;
        struct pool **np = realloc(s->pools, (size_t) ncap * sizeof(*np));
        if (!np) {
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        s->pools = np;
        s->cap_pools = ncap;
    }
    struct pool *p = calloc(1, sizeof(*p));
    if (!p) {
        pthread_mutex_unlock(&s->mu);
        return NULL;
    }
    p->id = (uint32_t) s->n_pools + 1;
    p->node_idx = node_idx;
    p->node = &s->nodes[node_idx];
    p->database = strdup(database);
    p->user = strdup(user);
    p->set = s->defaults; /* p is not published yet: a plain copy is enough */
    p->local = calloc((size_t) s->n_workers, sizeof(*p->local));
    p->caps[0] = cap_get(s, node_idx, false, database);
    p->caps[1] = cap_get(s, node_idx, true, user);
    if (secret_init) {
        p->secret = *secret_init;
        p->secret.password = dup_or_null(secret_init->password);
    }
    if (!p->database || !p->user || !p->local || !p->caps[0] || !p->caps[1] ||
        (secret_init && secret_init->password && !p->secret.password)) {
        free(p->database);
        free(p->user);
        free(p->local);
        secret_wipe(&p->secret);
        free(p);
        pthread_mutex_unlock(&s->mu);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    ilist_init(&p->waiters);
    for (int i = 0; i < s->n_workers; i++) {
        ilist_init(&p->local[i].idle);
        ilist_init(&p->local[i].busy);
    }
    p->home_worker = (int) (p->id % (uint32_t) s->n_workers);
    p->may_overtake = may_overtake;
    s->pools[s->n_pools++] = p;
    pthread_mutex_unlock(&s->mu);
    return p;
}

struct pool *
pool_sibling(struct pool_set *s, struct pool *p, int node_idx)
{
    if (node_idx < 0 || node_idx >= POOL_MAX_NODES) {
        return NULL;
    }
    struct pool *q = atomic_load_explicit(&p->siblings[node_idx], memory_order_acquire);
    if (q) {
        return q;
    }
    if (node_idx == p->node_idx) {
        q = p;
    } else {
        /* Copied under p's lock, used under the set's: the two are never held together. */
        struct pool_secret sec;
        pthread_mutex_lock(&p->mu);
        sec = p->secret;
        sec.password = dup_or_null(p->secret.password);
        bool oom = p->secret.password && !sec.password;
        pthread_mutex_unlock(&p->mu);
        q = oom ? NULL : pool_get(s, node_idx, p->database, p->user, &sec, p->may_overtake);
        if (q && sec.has_scram_keys) {
            /* The pool may have existed without them (made before any SCRAM login). */
            pool_learn_scram_keys(q, sec.client_key, sec.server_key);
        }
        secret_wipe(&sec);
        if (!q) {
            return NULL;
        }
    }
    atomic_store_explicit(&p->siblings[node_idx], q, memory_order_release);
    return q;
}

void
pool_update_secret(struct pool *p, const struct pool_secret *secret)
{
    char *pw = secret->password ? strdup(secret->password) : NULL;
    if (secret->password && !pw) {
        return; /* keep the old one: a failed server login says more than a lost secret */
    }
    pthread_mutex_lock(&p->mu);
    bool same_pw = (!pw && !p->secret.password) ||
                   (pw && p->secret.password && strcmp(pw, p->secret.password) == 0);
    if (same_pw && strcmp(p->secret.md5, secret->md5) == 0) {
        pthread_mutex_unlock(&p->mu);
        if (pw) {
            OPENSSL_cleanse(pw, strlen(pw));
            free(pw);
        }
        return;
    }
    if (p->secret.password) {
        OPENSSL_cleanse(p->secret.password, strlen(p->secret.password));
        free(p->secret.password);
    }
    p->secret.password = pw;
    p->secret.has_salted = false;
    memcpy(p->secret.md5, secret->md5, sizeof(p->secret.md5));
    pthread_mutex_unlock(&p->mu);
}

void
pool_learn_scram_keys(struct pool *p, const uint8_t client_key[PROTO_SCRAM_KEY_LEN],
                      const uint8_t server_key[PROTO_SCRAM_KEY_LEN])
{
    pthread_mutex_lock(&p->mu);
    memcpy(p->secret.client_key, client_key, PROTO_SCRAM_KEY_LEN);
    memcpy(p->secret.server_key, server_key, PROTO_SCRAM_KEY_LEN);
    p->secret.has_scram_keys = true;
    pthread_mutex_unlock(&p->mu);
}

bool
pool_can_login(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    bool ok = p->secret.password || p->secret.md5[0] || p->secret.has_scram_keys;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* ---- worker context and inbox ---- */

static void
inbox_cb(EV_P_ ev_async *a, int revents)
{
    (void) loop;
    (void) revents;
    pool_worker_drain(a->data);
}

void
pool_worker_run_local(struct pool_worker *w)
{
    while (w->local_head) {
        struct pool_msg *m = w->local_head;
        w->local_head = NULL;
        w->local_tail = NULL;
        while (m) {
            struct pool_msg *next = m->next;
            m->fn(w, m);
            m = next;
        }
    }
    /* Watched only while messages wait: an idle prepare watcher still costs libev a queue
     * and a dispatch on every loop iteration (about 90 instructions, twice per transaction). */
    ev_prepare_stop(w->loop, &w->local_run);
}

static void
local_run_cb(EV_P_ ev_prepare *pr, int revents)
{
    (void) loop;
    (void) revents;
    pool_worker_run_local(pr->data);
}

void
pool_worker_init(struct pool_worker *w, int idx, struct ev_loop *loop, struct pool_set *set,
                 void *owner)
{
    memset(w, 0, sizeof(*w));
    w->idx = idx;
    w->loop = loop;
    w->set = set;
    w->owner = owner;
    /* 16 KiB buffers: big enough that a result row stream moves in few syscalls, small enough
     * that only connections with bytes in flight pay for one. */
    buf_pool_init(&w->bufs, 16384, 1024);
    pthread_mutex_init(&w->inbox_mu, NULL);
    ilist_init(&w->to_free);
    ev_async_init(&w->inbox_wake, inbox_cb);
    w->inbox_wake.data = w;
    ev_async_start(loop, &w->inbox_wake);
    ev_prepare_init(&w->local_run, local_run_cb); /* started by pool_worker_send */
    w->local_run.data = w;
    set->workers[idx] = w;
}

void
pool_worker_fini(struct pool_worker *w)
{
    pool_worker_drain(w);
    local_run_cb(w->loop, &w->local_run, 0);
    pool_worker_reap(w);
    ev_async_stop(w->loop, &w->inbox_wake);
    ev_prepare_stop(w->loop, &w->local_run);
    buf_pool_fini(&w->bufs);
    pthread_mutex_destroy(&w->inbox_mu);
}

void
pool_worker_post(struct pool_worker *w, struct pool_msg *m)
{
    m->next = NULL;
    pthread_mutex_lock(&w->inbox_mu);
    if (w->inbox_tail) {
        w->inbox_tail->next = m;
    } else {
        w->inbox_head = m;
    }
    w->inbox_tail = m;
    pthread_mutex_unlock(&w->inbox_mu);
    ev_async_send(w->loop, &w->inbox_wake);
}

void
pool_worker_send(struct pool_worker *from, struct pool_worker *to, struct pool_msg *m)
{
    if (from != to) {
        pool_worker_post(to, m);
        return;
    }
    m->next = NULL;
    if (from->local_tail) {
        from->local_tail->next = m;
    } else {
        from->local_head = m;
    }
    from->local_tail = m;
    ev_prepare_start(from->loop, &from->local_run);
}

void
pool_worker_drain(struct pool_worker *w)
{
    pthread_mutex_lock(&w->inbox_mu);
    struct pool_msg *m = w->inbox_head;
    w->inbox_head = w->inbox_tail = NULL;
    pthread_mutex_unlock(&w->inbox_mu);
    while (m) {
        struct pool_msg *next = m->next;
        m->fn(w, m);
        m = next;
    }
}

/* ---- hand-over ---- */

static void
grant_msg_run(struct pool_worker *w, struct pool_msg *m)
{
    struct pool_grant_msg *g = (struct pool_grant_msg *) m;
    struct pool *p = g->pool;
    uint64_t id = g->waiter_id;
    free(g);
    w->on_grant(w, p, NULL, id);
}

/* A connection handed over through its own embedded message. */
static void
grant_conn_run(struct pool_worker *w, struct pool_msg *m)
{
    struct pool_conn *sc = CONTAINER_OF(m, struct pool_conn, grant_msg);
    /* Adopt: the giver stopped its watchers; they start on this loop when attached. */
    sc->w = w;
    ilist_push_tail(&sc->pool->local[w->idx].busy, &sc->node);
    w->on_grant(w, sc->pool, sc, sc->grant_waiter);
}

void
pool_conn_detach_idle(struct pool_conn *sc)
{
    struct pool_local *loc = &sc->pool->local[sc->w->idx];
    ASSERT(sc->state == POOL_CONN_IDLE);
    ilist_remove(&loc->idle, &sc->node);
    atomic_fetch_sub(&loc->n_idle, 1);
    atomic_fetch_sub(&sc->pool->n_idle, 1);
    pool_sock_stop_read(sc->w->loop, &sc->sock);
    pool_sock_stop_write(sc->w->loop, &sc->sock);
    sc->state = POOL_CONN_ACTIVE;
}

/*
 * pool_conn_detach_idle for the worker that keeps the connection: a plaintext socket's read
 * watcher stays started (the idle callback until the new owner sets its own, before it returns
 * to the loop), which spares an ev_io_stop and an ev_io_start per transaction. A TLS socket is
 * stopped as before: starting it again is what feeds records OpenSSL already holds.
 */
static void
conn_take_idle(struct pool_conn *sc)
{
    if (sc->sock.ssl) {
        pool_conn_detach_idle(sc);
        return;
    }
    struct pool_local *loc = &sc->pool->local[sc->w->idx];
    ASSERT(sc->state == POOL_CONN_IDLE);
    ilist_remove(&loc->idle, &sc->node);
    atomic_fetch_sub(&loc->n_idle, 1);
    atomic_fetch_sub(&sc->pool->n_idle, 1);
    pool_sock_stop_write(sc->w->loop, &sc->sock);
    sc->state = POOL_CONN_ACTIVE;
}

bool
pool_serve_waiter_locked(struct pool_worker *w, struct pool *p, struct pool_conn *sc)
{
    struct ilist_node *n = ilist_first(&p->waiters);
    if (!n) {
        return false;
    }
    /* A waiter on this worker among the first POOL_OVERTAKE_WINDOW is served first: the
     * connection then stays on its loop (no hand-over, no epoll registration moving). Each
     * waiter it overtakes counts that; one overtaken POOL_OVERTAKE_MAX times is served next, so
     * nobody waits for ever. Both bounds are wide because the waiters a worker skips gather at
     * the head of the queue: with a narrow window or a low cap (8 and 4 were tried) a run of
     * them there forces a hand-over on most releases, and at pgbench -S -c 100 with two workers
     * a third of all grants moved a connection to the other worker. */
    if (p->may_overtake && CONTAINER_OF(n, struct pool_waiter, node)->worker != w->idx &&
        CONTAINER_OF(n, struct pool_waiter, node)->n_passed < POOL_OVERTAKE_MAX) {
        struct ilist_node *it = n->next;
        for (int k = 1; k < POOL_OVERTAKE_WINDOW && it != &p->waiters.head; k++, it = it->next) {
            if (CONTAINER_OF(it, struct pool_waiter, node)->worker == w->idx) {
                for (struct ilist_node *q = n; q != it; q = q->next) {
                    CONTAINER_OF(q, struct pool_waiter, node)->n_passed++;
                }
                n = it;
                break;
            }
        }
    }
    ilist_remove(&p->waiters, n);
    atomic_fetch_sub(&p->n_waiting, 1);
    struct pool_waiter *wt = CONTAINER_OF(n, struct pool_waiter, node);
    /* Even a waiter on this very worker is served through the inbox: the grant then runs at the
     * top of a loop iteration, never inside the callback chain that released the connection. */
    if (sc) {
        ilist_remove(&p->local[w->idx].busy, &sc->node);
        sc->w = NULL;
        sc->grant_msg.fn = grant_conn_run;
        sc->grant_waiter = wt->id;
        pool_worker_send(w, w->set->workers[wt->worker], &sc->grant_msg);
        return true;
    }
    struct pool_grant_msg *g = malloc(sizeof(*g));
    if (!g) {
        /* Cannot tell the waiter; put it back at the head, it will time out or be served by
         * the next release. */
        ilist_push_head(&p->waiters, n);
        atomic_fetch_add(&p->n_waiting, 1);
        return false;
    }
    g->msg.fn = grant_msg_run;
    g->pool = p;
    g->sc = NULL;
    g->waiter_id = wt->id;
    pool_worker_send(w, w->set->workers[wt->worker], &g->msg);
    return true;
}

/*
 * Serve the wait queue from this worker: with its idle connections first, then with free
 * slots. When neither is left but another worker still holds idle connections, pass the request
 * on (at most once around the workers), so a waiter is never left queued beside an idle
 * connection.
 */
static void
steal_msg_run(struct pool_worker *w, struct pool_msg *m)
{
    struct pool_steal_msg *sm = (struct pool_steal_msg *) m;
    struct pool *p = sm->pool;
    int hops = sm->hops;
    free(sm);
    struct pool_local *loc = &p->local[w->idx];
    while (atomic_load(&p->n_waiting) > 0) {
        pthread_mutex_lock(&p->mu);
        if (ilist_empty(&p->waiters)) {
            pthread_mutex_unlock(&p->mu);
            return;
        }
        if (!ilist_empty(&loc->idle)) {
            struct pool_conn *sc = CONTAINER_OF(ilist_last(&loc->idle), struct pool_conn, node);
            pool_conn_detach_idle(sc);
            ilist_push_tail(&loc->busy, &sc->node);
            if (!pool_serve_waiter_locked(w, p, sc)) {
                pthread_mutex_unlock(&p->mu);
                ilist_remove(&loc->busy, &sc->node);
                pool_conn_make_idle(sc);
                return;
            }
        } else if (atomic_load(&p->n_idle) == 0 && atomic_load(&p->n_resetting) == 0 &&
                   p->n_open < p->set.max_open && pool_caps_take(p)) {
            p->n_open++;
            if (!pool_serve_waiter_locked(w, p, NULL)) {
                p->n_open--;
                pool_caps_untake(p);
                pthread_mutex_unlock(&p->mu);
                return;
            }
        } else {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        pthread_mutex_unlock(&p->mu);
    }
    if (atomic_load(&p->n_waiting) > 0 && atomic_load(&p->n_idle) > 0 && hops < w->set->n_workers) {
        post_serve(w, p, hops + 1);
    }
}

/* Ask the worker most likely to serve the queue: one holding idle connections, else ourselves
 * (to hand out free slots in arrival order). */
static void
post_serve(struct pool_worker *from, struct pool *p, int hops)
{
    int target = from->idx;
    int n = from->set->n_workers;
    for (int k = 1; k <= n; k++) {
        int i = (from->idx + k) % n;
        if (atomic_load(&p->local[i].n_idle) > 0) {
            target = i;
            break;
        }
    }
    struct pool_steal_msg *sm = malloc(sizeof(*sm));
    if (!sm) {
        return; /* the next release or close serves the queue */
    }
    sm->msg.fn = steal_msg_run;
    sm->pool = p;
    sm->hops = hops;
    pool_worker_send(from, from->set->workers[target], &sm->msg);
}

/* The same from a thread that is no worker (reload on the main thread): through the inbox of
 * the pool's home worker. */
static void
post_serve_from_outside(struct pool_set *s, struct pool *p)
{
    struct pool_steal_msg *sm = malloc(sizeof(*sm));
    if (!sm) {
        return; /* the next release or close serves the queue */
    }
    sm->msg.fn = steal_msg_run;
    sm->pool = p;
    sm->hops = 0;
    pool_worker_post(s->workers[p->home_worker], &sm->msg);
}

enum pool_acquire
pool_acquire(struct pool_worker *w, struct pool *p, struct pool_waiter *wt, struct pool_conn **out)
{
    struct pool_local *loc = &p->local[w->idx];
    /* Newest idle first: it is the warmest, and the oldest ones age out by conn_max_idle_time. */
    struct ilist_node *n = ilist_last(&loc->idle);
    if (n) {
        struct pool_conn *sc = CONTAINER_OF(n, struct pool_conn, node);
        conn_take_idle(sc);
        ilist_push_tail(&loc->busy, &sc->node);
        *out = sc;
        return POOL_GOT_CONN;
    }
    pthread_mutex_lock(&p->mu);
    /* Open a new connection only when nobody is ahead of us and no worker holds an idle one:
     * a hop through another worker's inbox costs microseconds, a new server connection
     * milliseconds and a backend. */
    if (p->n_open < p->set.max_open && ilist_empty(&p->waiters) && atomic_load(&p->n_idle) == 0 &&
        atomic_load(&p->n_resetting) == 0 && pool_caps_take(p)) {
        p->n_open++;
        pthread_mutex_unlock(&p->mu);
        return POOL_MUST_CONNECT;
    }
    bool has_room = p->n_open < p->set.max_open;
    wt->worker = w->idx;
    wt->n_passed = 0;
    ilist_push_tail(&p->waiters, &wt->node);
    atomic_fetch_add(&p->n_waiting, 1);
    pthread_mutex_unlock(&p->mu);

    /* Pairs with pool_conn_make_idle, which publishes n_idle and then looks at n_waiting. */
    if (atomic_load(&p->n_idle) > 0 || has_room) {
        post_serve(w, p, 0);
    }
    return POOL_QUEUED;
}

bool
pool_waiter_cancel(struct pool *p, struct pool_waiter *wt)
{
    bool was_queued = false;
    pthread_mutex_lock(&p->mu);
    if (ilist_node_linked(&wt->node)) {
        ilist_remove(&p->waiters, &wt->node);
        atomic_fetch_sub(&p->n_waiting, 1);
        was_queued = true;
    }
    pthread_mutex_unlock(&p->mu);
    return was_queued;
}

/* A reload lowered a cap below what its pools hold: a slot given back is not handed on. */
static bool
caps_over(struct pool *p)
{
    for (int i = 0; i < 2; i++) {
        int max = atomic_load(&p->caps[i]->max);
        if (max > 0 && atomic_load(&p->caps[i]->n_open) > max) {
            return true;
        }
    }
    return false;
}

void
pool_slot_release(struct pool_worker *w, struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    /* The slot goes straight to the oldest waiter, who opens a connection in it, unless a
     * reload lowered max_open_conns below what is open, or a cap is over its limit. */
    bool freed = false;
    if (p->n_open > atomic_load(&p->set.max_open) || caps_over(p) ||
        !pool_serve_waiter_locked(w, p, NULL)) {
        ASSERT(p->n_open > 0);
        p->n_open--;
        freed = true;
    }
    pthread_mutex_unlock(&p->mu);
    if (freed) {
        caps_give(w, p);
    }
}

void
pool_grant_orphan(struct pool_worker *w, struct pool *p, struct pool_conn *sc)
{
    if (sc) {
        pool_conn_make_idle(sc);
    } else {
        pool_slot_release(w, p);
    }
}

/*
 * A pool with clients queued, on its home worker's tick. Behind a full cap it asks the pools
 * sharing it for room (their ticks close an idle connection each: pool_caps_wanted), since
 * their idle connections would otherwise hold the cap until conn_max_idle_time. With room, it
 * serves its queue: a slot given back while its waiter was on its way into the queue found
 * nobody to wake.
 */
static void
caps_tick(struct pool_worker *w, struct pool *p, int64_t now_us)
{
    bool full = false;
    for (int i = 0; i < 2; i++) {
        struct pool_cap *c = p->caps[i];
        int max = atomic_load(&c->max);
        if (max > 0 && atomic_load(&c->n_open) >= max) {
            atomic_store(&c->want_room_us, now_us);
            full = true;
        }
    }
    pthread_mutex_lock(&p->mu);
    bool room = !full && p->n_open < atomic_load(&p->set.max_open) && !ilist_empty(&p->waiters);
    pthread_mutex_unlock(&p->mu);
    if (room) {
        post_serve(w, p, 0);
    }
}

void
pool_worker_tick(struct pool_worker *w, int64_t now_us)
{
    struct pool_set *s = w->set;
    pthread_mutex_lock(&s->mu);
    int n = s->n_pools;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&s->mu);
        struct pool *p = s->pools[i];
        pthread_mutex_unlock(&s->mu);
        pool_local_tick(w, p, now_us);
        if (w->idx == p->home_worker && atomic_load(&p->n_waiting) > 0) {
            caps_tick(w, p, now_us);
        }
    }
}
