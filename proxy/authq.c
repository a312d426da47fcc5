/*
 * authq.c - the auth_query lookup thread and its cache (see authq.h).
 *
 * One thread, one libpq connection kept open between lookups (closed after AUTHQ_IDLE_CLOSE_US
 * without work, or when the server, database or credentials to use change), requests served in
 * arrival order. Before querying, the thread looks at the cache again: a burst of logins for
 * one new user costs one query. Blocking libpq is fine here because nothing else runs on this
 * thread; the connect timeout and a statement_timeout bound each lookup, and the client's own
 * client_login_timeout bounds its wait.
 *
 * Rejected alternative: non-blocking libpq (PQconnectStart/PQsendQuery) on each worker's loop.
 * It would need a connection per worker and a state machine per lookup for a path that runs
 * once per user per auth_cache_ttl.
 *
 * Does not: log a secret, a query result or a password (only user names and libpq's error
 * text, which holds neither), or decide what the client is told (client.c).
 *
 * Threads: the cache under cache_mu (workers and the lookup thread), the queue under mu; the
 * connection and its parameters belong to the lookup thread.
 */
#include "proxy/authq.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "common/log.h"
#include "common/mono.h"
#include "proxy/config.h"

#define AUTHQ_BUCKETS       256
#define AUTHQ_MAX_CACHED    10000 /* entries; beyond, new answers are not cached */
#define AUTHQ_MAX_QUEUED    10000 /* requests waiting; beyond, logins are refused at once */
#define AUTHQ_IDLE_CLOSE_US (30LL * 1000 * 1000)

struct authq_entry {
    struct authq_entry *next;
    char *user;
    char *secret; /* NULL: no such user */
    int64_t expires_us;
};

struct authq_req {
    struct authq_req *next;
    struct cfg *cfg; /* a reference: the snapshot the asking worker ran with */
    struct pool_worker *pw;
    uint64_t client_id;
    char *user;
    char *database;
    char *host;
    int port;
};

struct authq {
    pthread_t thread;
    void (*on_reply)(struct pool_worker *, struct pool_msg *);

    pthread_mutex_t mu; /* the queue and stop */
    pthread_cond_t cond;
    struct authq_req *head;
    struct authq_req *tail;
    int n_queued;
    bool stop;

    pthread_mutex_t cache_mu;
    struct authq_entry *buckets[AUTHQ_BUCKETS];
    int n_cached;

    /* lookup thread only */
    PGconn *conn;
    char *conn_key; /* host, port, database, user, password: reconnect when it changes */
    size_t conn_key_len;
    int64_t last_used_us;
};

static void
wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void
authq_secret_free(char *secret)
{
    wipe_free(secret);
}

void
authq_reply_free(struct authq_reply *r)
{
    wipe_free(r->secret);
    free(r);
}

/* ---- cache ---- */

static uint32_t
bucket_of(const char *user)
{
    uint32_t h = 2166136261u;
    for (const char *p = user; *p; p++) {
        h = (h ^ (uint8_t) *p) * 16777619u;
    }
    return h % AUTHQ_BUCKETS;
}

static void
entry_free(struct authq_entry *e)
{
    free(e->user);
    wipe_free(e->secret);
    free(e);
}

/* Drop expired entries. Under cache_mu. */
static void
cache_purge(struct authq *q, int64_t now)
{
    for (int b = 0; b < AUTHQ_BUCKETS; b++) {
        struct authq_entry **pp = &q->buckets[b];
        while (*pp) {
            struct authq_entry *e = *pp;
            if (e->expires_us <= now) {
                *pp = e->next;
                entry_free(e);
                q->n_cached--;
            } else {
                pp = &e->next;
            }
        }
    }
}

enum authq_outcome
authq_cached(struct authq *q, const char *user, char **secret)
{
    enum authq_outcome out = AUTHQ_MISS;
    int64_t now = mono_now_us();
    *secret = NULL;
    pthread_mutex_lock(&q->cache_mu);
    for (struct authq_entry *e = q->buckets[bucket_of(user)]; e; e = e->next) {
        if (strcmp(e->user, user) == 0 && e->expires_us > now) {
            if (!e->secret) {
                out = AUTHQ_NOT_FOUND;
            } else if ((*secret = strdup(e->secret)) != NULL) {
                out = AUTHQ_FOUND;
            }
            break;
        }
    }
    pthread_mutex_unlock(&q->cache_mu);
    return out;
}

/* Remember an answer (secret NULL: no such user) for ttl_ms. */
static void
cache_put(struct authq *q, const char *user, const char *secret, int64_t ttl_ms)
{
    if (ttl_ms <= 0) {
        return;
    }
    int64_t now = mono_now_us();
    struct authq_entry *e = calloc(1, sizeof(*e));
    if (!e || !(e->user = strdup(user)) || (secret && !(e->secret = strdup(secret)))) {
        if (e) {
            entry_free(e);
        }
        return;
    }
    e->expires_us = now + ttl_ms * 1000;
    uint32_t b = bucket_of(user);
    pthread_mutex_lock(&q->cache_mu);
    struct authq_entry **pp = &q->buckets[b];
    while (*pp && strcmp((*pp)->user, user) != 0) {
        pp = &(*pp)->next;
    }
    if (*pp) {
        struct authq_entry *old = *pp;
        *pp = old->next;
        entry_free(old);
        q->n_cached--;
    }
    if (q->n_cached >= AUTHQ_MAX_CACHED) {
        cache_purge(q, now);
    }
    if (q->n_cached < AUTHQ_MAX_CACHED) {
        e->next = q->buckets[b];
        q->buckets[b] = e;
        q->n_cached++;
        e = NULL;
    }
    pthread_mutex_unlock(&q->cache_mu);
    if (e) {
        entry_free(e);
    }
}

/* ---- the lookup thread ---- */

static void
req_free(struct authq_req *r)
{
    cfg_unref(r->cfg);
    free(r->user);
    free(r->database);
    free(r->host);
    free(r);
}

static void
conn_close(struct authq *q)
{
    if (q->conn) {
        PQfinish(q->conn);
        q->conn = NULL;
    }
    if (q->conn_key) {
        OPENSSL_cleanse(q->conn_key, q->conn_key_len);
        free(q->conn_key);
        q->conn_key = NULL;
    }
}

/* A connection for r, reusing the open one when it was made with the same parameters. NULL on
 * failure, logged. */
static PGconn *
conn_get(struct authq *q, const struct authq_req *r)
{
    const struct cfg *cfg = r->cfg;
    const struct cfg_user *u = cfg_user_find(cfg, cfg->auth_user);
    if (!u) {
        log_error("auth_query: auth_user \"%s\" is not in auth_file", cfg->auth_user);
        return NULL;
    }
    const char *dbname = cfg->auth_dbname ? cfg->auth_dbname : r->database;
    char port[24], timeout[24], options[64];
    snprintf(port, sizeof(port), "%d", r->port);
    /* libpq's connect_timeout has whole seconds and treats 1 as 2 */
    int64_t to_s = (cfg->server_connect_timeout_ms + 999) / 1000;
    snprintf(timeout, sizeof(timeout), "%lld", (long long) (to_s < 2 ? 2 : to_s));
    snprintf(options, sizeof(options), "-c statement_timeout=%lld",
             (long long) cfg->server_connect_timeout_ms);
    /* The lookup connection follows server_tls_mode like pgmux's own server connections;
     * libpq 15 has no "system roots" choice, so verify-* without server_tls_ca_file uses
     * libpq's default root file (~/.postgresql/root.crt). */
    const char *keys[16] = { "host",     "port",
                             "dbname",   "user",
                             "password", "connect_timeout",
                             "options",  "application_name",
                             "sslmode" };
    const char *vals[16] = { r->host,
                             port,
                             dbname,
                             cfg->auth_user,
                             u->secret,
                             timeout,
                             options,
                             "pgmux-auth_query",
                             cfg_server_tls_name(cfg->server_tls_mode) };
    int n = 9;
    if (cfg->server_tls_ca_file) {
        keys[n] = "sslrootcert";
        vals[n++] = cfg->server_tls_ca_file;
    }
    if (cfg->server_tls_cert_file && cfg->server_tls_key_file) {
        keys[n] = "sslcert";
        vals[n++] = cfg->server_tls_cert_file;
        keys[n] = "sslkey";
        vals[n++] = cfg->server_tls_key_file;
    }
    keys[n] = NULL;
    vals[n] = NULL;
    /* Every parameter, NUL-separated: the open connection is reused only if all are equal. */
    size_t klen = 0;
    for (int i = 0; i < n; i++) {
        klen += strlen(vals[i]) + 1;
    }
    char *key = malloc(klen);
    if (!key) {
        return NULL;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(vals[i]) + 1;
        memcpy(key + off, vals[i], l);
        off += l;
    }
    if (q->conn && q->conn_key && q->conn_key_len == klen && memcmp(q->conn_key, key, klen) == 0 &&
        PQstatus(q->conn) == CONNECTION_OK) {
        OPENSSL_cleanse(key, klen);
        free(key);
        return q->conn;
    }
    conn_close(q);
    PGconn *c = PQconnectdbParams(keys, vals, 0);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        /* libpq's message names the server and the reason, never the password */
        log_warning("auth_query: cannot connect to %s:%d database \"%s\" as \"%s\": %s", r->host,
                    r->port, dbname, cfg->auth_user, c ? PQerrorMessage(c) : "out of memory");
        if (c) {
            PQfinish(c);
        }
        OPENSSL_cleanse(key, klen);
        free(key);
        return NULL;
    }
    q->conn = c;
    q->conn_key = key;
    q->conn_key_len = klen;
    return c;
}

/* Run auth_query for r.user. Fills *secret on AUTHQ_FOUND. */
static enum authq_outcome
lookup(struct authq *q, const struct authq_req *r, char **secret)
{
    *secret = NULL;
    PGconn *c = conn_get(q, r);
    if (!c) {
        return AUTHQ_FAILED;
    }
    const char *params[1] = { r->user };
    PGresult *res = PQexecParams(c, r->cfg->auth_query, 1, NULL, params, NULL, NULL, 0);
    enum authq_outcome out = AUTHQ_FAILED;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQnfields(res) >= 2) {
        out = AUTHQ_NOT_FOUND;
        if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 1)) {
            char *v = PQgetvalue(res, 0, 1);
            if (v[0] != '\0') {
                *secret = strdup(v);
                out = *secret ? AUTHQ_FOUND : AUTHQ_FAILED;
            }
        }
        /* libpq's copy of the answer goes back to the heap; leave nothing readable there */
        for (int i = 0; i < PQntuples(res); i++) {
            for (int j = 0; j < PQnfields(res); j++) {
                char *v = PQgetvalue(res, i, j);
                OPENSSL_cleanse(v, strlen(v));
            }
        }
    } else if (res && PQresultStatus(res) == PGRES_TUPLES_OK) {
        log_error("auth_query must return two columns (user name, secret); it returned %d",
                  PQnfields(res));
    } else {
        log_warning("auth_query for user \"%s\" failed: %s", r->user,
                    res ? PQresultErrorMessage(res) : PQerrorMessage(c));
    }
    if (out == AUTHQ_FAILED) {
        /* the next lookup starts from a fresh connection (the failure may be the connection) */
        PQclear(res);
        conn_close(q);
        return out;
    }
    PQclear(res);
    return out;
}

static void
serve(struct authq *q, struct authq_req *r)
{
    struct authq_reply *rep = calloc(1, sizeof(*rep));
    if (!rep) {
        req_free(r);
        return; /* the client's login timeout ends its wait */
    }
    rep->client_id = r->client_id;
    rep->msg.fn = q->on_reply;
    char *cached = NULL;
    rep->outcome = authq_cached(q, r->user, &cached);
    if (rep->outcome != AUTHQ_MISS) {
        rep->secret = cached;
    } else {
        rep->outcome = lookup(q, r, &rep->secret);
        int64_t ttl = r->cfg->auth_cache_ttl_ms;
        if (rep->outcome == AUTHQ_FOUND) {
            cache_put(q, r->user, rep->secret, ttl);
        } else if (rep->outcome == AUTHQ_NOT_FOUND) {
            cache_put(q, r->user, NULL, ttl < AUTHQ_NEGATIVE_TTL_MS ? ttl : AUTHQ_NEGATIVE_TTL_MS);
        }
        log_debug("auth_query for user \"%s\": %s", r->user,
                  rep->outcome == AUTHQ_FOUND       ? "found"
                  : rep->outcome == AUTHQ_NOT_FOUND ? "no such user"
                                                    : "failed");
        q->last_used_us = mono_now_us();
    }
    pool_worker_post(r->pw, &rep->msg);
    req_free(r);
}

static void *
authq_main(void *arg)
{
    struct authq *q = arg;
    pthread_mutex_lock(&q->mu);
    while (!q->stop) {
        if (!q->head) {
            /* With a connection open, wake up now and then to close it when idle. */
            if (q->conn) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_sec += 1;
                pthread_cond_timedwait(&q->cond, &q->mu, &ts);
            } else {
                pthread_cond_wait(&q->cond, &q->mu);
            }
            if (!q->head && q->conn && mono_now_us() - q->last_used_us > AUTHQ_IDLE_CLOSE_US) {
                conn_close(q);
            }
            continue;
        }
        struct authq_req *r = q->head;
        q->head = r->next;
        if (!q->head) {
            q->tail = NULL;
        }
        q->n_queued--;
        pthread_mutex_unlock(&q->mu);
        serve(q, r);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    conn_close(q);
    return NULL;
}

int
authq_start(struct authq **out, void (*on_reply)(struct pool_worker *, struct pool_msg *))
{
    struct authq *q = calloc(1, sizeof(*q));
    if (!q) {
        return -1;
    }
    q->on_reply = on_reply;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&q->mu, NULL);
    pthread_mutex_init(&q->cache_mu, NULL);
    if (pthread_create(&q->thread, NULL, authq_main, q) != 0) {
        pthread_cond_destroy(&q->cond);
        pthread_mutex_destroy(&q->mu);
        pthread_mutex_destroy(&q->cache_mu);
        free(q);
        return -1;
    }
    *out = q;
    return 0;
}

void
authq_stop(struct authq *q)
{
    if (!q) {
        return;
    }
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    while (q->head) {
        struct authq_req *r = q->head;
        q->head = r->next;
        req_free(r);
    }
    for (int b = 0; b < AUTHQ_BUCKETS; b++) {
        while (q->buckets[b]) {
            struct authq_entry *e = q->buckets[b];
            q->buckets[b] = e->next;
            entry_free(e);
        }
    }
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->mu);
    pthread_mutex_destroy(&q->cache_mu);
    free(q);
}

enum status
authq_request(struct authq *q, struct cfg *cfg, struct pool_worker *pw, uint64_t client_id,
              const char *user, const char *database, const char *host, int port)
{
    struct authq_req *r = calloc(1, sizeof(*r));
    if (!r) {
        return ST_ENOMEM;
    }
    r->pw = pw;
    r->client_id = client_id;
    r->port = port;
    r->user = strdup(user);
    r->database = strdup(database);
    r->host = strdup(host);
    if (!r->user || !r->database || !r->host) {
        free(r->user);
        free(r->database);
        free(r->host);
        free(r);
        return ST_ENOMEM;
    }
    r->cfg = cfg_ref(cfg);
    pthread_mutex_lock(&q->mu);
    if (q->n_queued >= AUTHQ_MAX_QUEUED || q->stop) {
        pthread_mutex_unlock(&q->mu);
        req_free(r);
        return ST_EPOOL;
    }
    if (q->tail) {
        q->tail->next = r;
    } else {
        q->head = r;
    }
    q->tail = r;
    q->n_queued++;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->mu);
    return ST_OK;
}
