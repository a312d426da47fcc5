/*
 * monitor.c - the topology monitor thread (monitor.h, topology.h).
 *
 * Every health_check_period one round checks every node at once: each node keeps one libpq
 * connection between rounds, so a round costs one round trip per node; a connection that fails
 * is reopened in the same round, so a restarted server is not reported down for a period. The
 * round runs the connections in parallel with poll() and gives up on what has not answered by
 * health_check_timeout (libpq's own connect_timeout counts whole seconds, too coarse for a 1 s
 * period), so one hanging node delays nobody else's verdict. The server also gets a
 * statement_timeout of the same length.
 *
 * One query per node and round answers everything (health_check_sql): recovery state, timeline,
 * WAL position, replay delay, and on a node not in recovery the user-defined VOLATILE functions.
 * The timeline of a primary comes from its current WAL file name, not pg_control_checkpoint():
 * after pg_ctl promote the control file keeps the old timeline until the next checkpoint, and
 * the split-brain guard needs the new one at once.
 *
 * After the round the monitor derives the next snapshot (roles, the primary, fencing, lag),
 * publishes it when anything but check times changed, and tells every worker through its inbox
 * which nodes lost their idle connections' reason to live (died, changed role, fenced, removed).
 *
 * Every dns_ttl each [node.NAME] host is resolved again (getaddrinfo, here and never on a
 * worker): an address not seen before becomes a node appended to rt->nodes, one that vanished
 * is marked is_removed; a failed lookup changes nothing.
 *
 * A reload's [node.NAME] sections reach this thread with the configuration snapshot (runtime.c
 * resolves nothing on the main thread): a new section is resolved and appended here, one that
 * is gone marks its nodes is_removed, one whose host, port or role changed is both. Nothing in
 * rt->nodes is ever freed or moved while the process runs: an entry is written in full before
 * the snapshot that counts it is published, and the names and hosts this thread allocates live
 * until monitor_free, after the workers have stopped.
 */
#include "proxy/monitor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "common/log.h"
#include "common/mono.h"
#include "pool/pool.h"
#include "proxy/client.h"
#include "proxy/config.h"
#include "proxy/runtime.h"
#include "proxy/topology.h"
#include "proxy/worker.h"

#define MON_APP_NAME "pgmux-monitor" /* tests and operators filter pg_stat_activity on it */
#define MON_ERR_LEN  256

/*
 * The first statement always answers one row; the second only on a node not in recovery
 * (its one-time filter spares replicas the catalog scan). COALESCE: a replica that has not
 * replayed anything yet has no replay position.
 */
static const char health_check_sql[] =
    "SELECT r,"
    " CASE WHEN r THEN (SELECT timeline_id FROM pg_control_checkpoint())::int8"
    " ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END,"
    " (CASE WHEN r THEN COALESCE(pg_last_wal_replay_lsn(), '0/0') ELSE pg_current_wal_lsn() END"
    " - '0/0'::pg_lsn)::int8,"
    " CASE WHEN r THEN COALESCE((extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
    " * 1000)::int8, 0) ELSE 0 END"
    " FROM pg_is_in_recovery() AS r;"
    "SELECT lower(n.nspname), lower(p.proname) FROM pg_proc p"
    " JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE p.provolatile = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND NOT pg_is_in_recovery()";

enum mon_state {
    MON_IDLE,       /* nothing in flight */
    MON_CONNECTING, /* PQconnectPoll until PGRES_POLLING_OK */
    MON_QUERYING,   /* results of health_check_sql until PQgetResult returns NULL */
};

struct mon_node {
    int origin; /* index of its [node.NAME] in m->cfg->nodes; -1 once that section is gone */
    bool is_removed;
    char *section;    /* the NAME of its [node.NAME] (owned: the section may leave a reload) */
    int cfg_role;     /* enum cfg_role of that section */
    int weight;       /* and its weight, followed by reloads */
    char *owned_name; /* name of a node appended at run time ("NAME" or "NAME@ADDRESS") */
    char *owned_host; /* its host (rt->nodes[i].host points here); NULL for start-up nodes */
    char addr_text[INET6_ADDRSTRLEN];
    char port_text[8];

    PGconn *conn; /* kept between rounds */
    enum mon_state state;
    bool is_polling_write; /* libpq waits for the socket to be writable */
    bool is_reused;        /* this round started on an existing connection */
    int n_results;         /* PGresults of this round so far */

    /* this round's verdict */
    bool is_ok;
    bool is_in_recovery;
    uint32_t timeline;
    uint64_t lsn;
    int64_t replay_age_ms;
    char **funcs; /* "schema.name" and "name", unsorted, from the second statement */
    int n_funcs;
    int cap_funcs;
    bool has_funcs; /* the second statement answered (not in recovery) */
    char err[MON_ERR_LEN];
    char last_logged_err[MON_ERR_LEN]; /* so a node that stays down is logged once */
};

struct monitor {
    struct runtime *rt;
    struct cfg *cfg; /* reference held for the thread's life */
    pthread_t thread;
    bool has_thread;
    bool is_checking; /* health_check_period > 0 and credentials known */

    pthread_mutex_t mu;
    pthread_cond_t cv;            /* CLOCK_MONOTONIC */
    bool is_stopping;             /* under mu */
    bool is_first_done;           /* under mu: the first round has published */
    atomic_bool is_workers_ready; /* rt->workers may take messages (release/acquire) */

    struct mon_node nodes[TOPO_MAX_NODES];
    int n_nodes;                /* == entries of rt->nodes in use */
    bool is_full_logged;        /* TOPO_MAX_NODES reached, said once */
    struct topo_snapshot *last; /* what this thread published last (one reference) */
    uint32_t max_timeline_seen; /* split-brain guard: the newest timeline any node reported */
    bool has_functions;         /* a primary's function list was learned once */
    int64_t next_dns_us;
    bool is_dns_pending; /* a [node.NAME] section has no address yet: resolve at every wake */
};

/* ---- small helpers ---- */

static void
mon_err(struct mon_node *n, const char *what)
{
    snprintf(n->err, sizeof(n->err), "%s", what ? what : "unknown error");
    /* libpq messages end with a newline and may span lines: keep the log to one line */
    for (char *p = n->err; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = (p[1] == '\0') ? '\0' : ' ';
        }
    }
}

static void
funcs_clear(struct mon_node *n)
{
    for (int i = 0; i < n->n_funcs; i++) {
        free(n->funcs[i]);
    }
    n->n_funcs = 0;
}

static bool
funcs_add(struct mon_node *n, const char *s)
{
    if (n->n_funcs == n->cap_funcs) {
        int cap = n->cap_funcs ? n->cap_funcs * 2 : 32;
        char **nf = realloc(n->funcs, sizeof(*nf) * (size_t) cap);
        if (!nf) {
            return false;
        }
        n->funcs = nf;
        n->cap_funcs = cap;
    }
    n->funcs[n->n_funcs] = strdup(s);
    if (!n->funcs[n->n_funcs]) {
        return false;
    }
    n->n_funcs++;
    return true;
}

static int
str_ptr_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

static void
conn_drop(struct mon_node *n)
{
    if (n->conn) {
        PQfinish(n->conn);
        n->conn = NULL;
    }
    n->state = MON_IDLE;
}

/* ---- one node's check: a small state machine driven by poll() ---- */

static void
check_fail(struct mon_node *n, const char *why)
{
    mon_err(n, why);
    n->is_ok = false;
    conn_drop(n);
}

static bool
check_send(struct mon_node *n)
{
    n->n_results = 0;
    n->has_funcs = false;
    funcs_clear(n);
    if (!PQsendQuery(n->conn, health_check_sql)) {
        return false;
    }
    int f = PQflush(n->conn);
    if (f < 0) {
        return false;
    }
    n->is_polling_write = f == 1;
    n->state = MON_QUERYING;
    return true;
}

static void
check_connect(struct monitor *m, struct mon_node *n)
{
    const struct cfg *c = m->cfg;
    char opts[64], timeout_s[24];
    snprintf(opts, sizeof(opts), "-c statement_timeout=%lld",
             (long long) c->health_check_timeout_ms);
    /* only a fallback: the round's own deadline is what counts (libpq rounds this up to 2 s) */
    snprintf(timeout_s, sizeof(timeout_s), "%lld",
             (long long) (c->health_check_timeout_ms + 999) / 1000);
    const char *keys[20], *vals[20];
    int k = 0;
    /* hostaddr: the address this node stands for, so libpq does no DNS lookup of its own;
     * host only names it for verify-full */
    keys[k] = "hostaddr", vals[k++] = n->addr_text;
    keys[k] = "host", vals[k++] = m->rt->nodes[n - m->nodes].host;
    keys[k] = "port", vals[k++] = n->port_text;
    keys[k] = "user", vals[k++] = c->health_check_user;
    keys[k] = "dbname", vals[k++] = c->health_check_database;
    keys[k] = "application_name", vals[k++] = MON_APP_NAME;
    keys[k] = "options", vals[k++] = opts;
    keys[k] = "connect_timeout", vals[k++] = timeout_s;
    keys[k] = "gssencmode", vals[k++] = "disable";
    /* the monitor speaks to servers as the pools do (server_tls_*: libpq's own sslmode) */
    keys[k] = "sslmode", vals[k++] = cfg_server_tls_name(c->server_tls_mode);
    if (c->server_tls_ca_file) {
        keys[k] = "sslrootcert", vals[k++] = c->server_tls_ca_file;
    }
    if (c->server_tls_cert_file) {
        keys[k] = "sslcert", vals[k++] = c->server_tls_cert_file;
        keys[k] = "sslkey", vals[k++] = c->server_tls_key_file;
    }
    if (c->health_check_password) {
        keys[k] = "password", vals[k++] = c->health_check_password;
    }
    keys[k] = NULL, vals[k] = NULL;
    n->conn = PQconnectStartParams(keys, vals, 0);
    if (!n->conn) {
        check_fail(n, "out of memory");
        return;
    }
    if (PQstatus(n->conn) == CONNECTION_BAD) {
        check_fail(n, PQerrorMessage(n->conn));
        return;
    }
    n->state = MON_CONNECTING;
    n->is_polling_write = true; /* libpq: act as if PQconnectPoll had said PGRES_POLLING_WRITING */
}

static void
check_begin(struct monitor *m, struct mon_node *n)
{
    n->is_ok = false;
    n->err[0] = '\0';
    n->is_reused = n->conn != NULL;
    if (n->conn && PQstatus(n->conn) == CONNECTION_OK && check_send(n)) {
        return;
    }
    conn_drop(n);
    n->is_reused = false;
    check_connect(m, n);
}

/* A reused connection that failed gets one fresh try within the same round. */
static void
check_fail_or_retry(struct monitor *m, struct mon_node *n, const char *why)
{
    bool retry = n->is_reused;
    check_fail(n, why);
    if (retry) {
        n->is_reused = false;
        check_connect(m, n);
    }
}

static void
check_result(struct mon_node *n, PGresult *res)
{
    int i = n->n_results++;
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK) {
        mon_err(n, PQresultErrorMessage(res));
        n->is_ok = false;
        n->n_results = 100; /* poisoned: the round fails even if more results follow */
        return;
    }
    if (i == 0) {
        if (PQntuples(res) != 1 || PQnfields(res) != 4) {
            mon_err(n, "unexpected health check answer");
            n->n_results = 100;
            return;
        }
        n->is_in_recovery = PQgetvalue(res, 0, 0)[0] == 't';
        n->timeline = (uint32_t) strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        n->lsn = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
        n->replay_age_ms = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    } else if (i == 1) {
        n->has_funcs = !n->is_in_recovery;
        char buf[2 * 64 + 2];
        for (int r = 0; r < PQntuples(res); r++) {
            const char *schema = PQgetvalue(res, r, 0), *name = PQgetvalue(res, r, 1);
            snprintf(buf, sizeof(buf), "%s.%s", schema, name);
            if (!funcs_add(n, buf) || !funcs_add(n, name)) {
                mon_err(n, "out of memory");
                n->n_results = 100;
                return;
            }
        }
    }
}

/* Advance one node whose socket is ready (or may be: called once after each poll). */
static void
check_step(struct monitor *m, struct mon_node *n, short revents)
{
    if (n->state == MON_CONNECTING) {
        switch (PQconnectPoll(n->conn)) {
        case PGRES_POLLING_OK:
            if (PQsetnonblocking(n->conn, 1) != 0 || !check_send(n)) {
                check_fail(n, PQerrorMessage(n->conn));
            }
            return;
        case PGRES_POLLING_READING:
            n->is_polling_write = false;
            return;
        case PGRES_POLLING_WRITING:
            n->is_polling_write = true;
            return;
        default:
            check_fail(n, PQerrorMessage(n->conn));
            return;
        }
    }
    if (n->state != MON_QUERYING) {
        return;
    }
    if (revents & POLLOUT) {
        int f = PQflush(n->conn);
        if (f < 0) {
            check_fail_or_retry(m, n, PQerrorMessage(n->conn));
            return;
        }
        n->is_polling_write = f == 1;
    }
    if (!(revents & (POLLIN | POLLERR | POLLHUP))) {
        return;
    }
    if (!PQconsumeInput(n->conn)) {
        check_fail_or_retry(m, n, PQerrorMessage(n->conn));
        return;
    }
    while (!PQisBusy(n->conn)) {
        PGresult *res = PQgetResult(n->conn);
        if (!res) {
            /* every result is in: the round's verdict for this node */
            n->state = MON_IDLE;
            n->is_ok = n->n_results == 2;
            if (!n->is_ok && n->err[0] == '\0') {
                mon_err(n, "incomplete health check answer");
            }
            if (PQstatus(n->conn) != CONNECTION_OK) {
                conn_drop(n);
            }
            return;
        }
        check_result(n, res);
        PQclear(res);
    }
    if (PQstatus(n->conn) == CONNECTION_BAD) {
        check_fail_or_retry(m, n, PQerrorMessage(n->conn));
    }
}

static void
round_run(struct monitor *m)
{
    int64_t deadline = mono_now_us() + m->cfg->health_check_timeout_ms * 1000;
    for (int i = 0; i < m->n_nodes; i++) {
        struct mon_node *n = &m->nodes[i];
        if (n->is_removed) {
            conn_drop(n);
            continue;
        }
        check_begin(m, n);
    }
    struct pollfd pfd[TOPO_MAX_NODES];
    int who[TOPO_MAX_NODES];
    for (;;) {
        int np = 0;
        for (int i = 0; i < m->n_nodes; i++) {
            struct mon_node *n = &m->nodes[i];
            if (n->state == MON_IDLE) {
                continue;
            }
            int fd = PQsocket(n->conn);
            if (fd < 0) {
                check_fail(n, "connection has no socket");
                continue;
            }
            pfd[np].fd = fd;
            pfd[np].events = (short) (POLLIN | (n->is_polling_write ? POLLOUT : 0));
            pfd[np].revents = 0;
            who[np++] = i;
        }
        if (np == 0) {
            break;
        }
        int64_t left_us = deadline - mono_now_us();
        if (left_us <= 0) {
            for (int j = 0; j < np; j++) {
                check_fail(&m->nodes[who[j]], "no answer within health_check_timeout");
            }
            break;
        }
        int rc = poll(pfd, (nfds_t) np, (int) ((left_us + 999) / 1000));
        if (rc < 0 && errno != EINTR) {
            for (int j = 0; j < np; j++) {
                check_fail(&m->nodes[who[j]], strerror(errno));
            }
            break;
        }
        for (int j = 0; j < np && rc > 0; j++) {
            if (pfd[j].revents) {
                check_step(m, &m->nodes[who[j]], pfd[j].revents);
            }
        }
    }
}

/* ---- DNS ---- */

static int
pool_role_of(enum cfg_role r)
{
    return r == CFG_ROLE_REPLICA   ? POOL_ROLE_REPLICA
           : r == CFG_ROLE_PRIMARY ? POOL_ROLE_PRIMARY
                                   : POOL_ROLE_UNKNOWN;
}


static bool
addr_equal(const struct sockaddr_storage *a, const struct sockaddr *b, socklen_t blen)
{
    if (a->ss_family != b->sa_family) {
        return false;
    }
    if (b->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *) a, *y = (const void *) b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (b->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *) a, *y = (const void *) b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return memcmp(a, b, blen) == 0;
}

static void
addr_format(const struct sockaddr_storage *ss, char *out, size_t len)
{
    const void *a = ss->ss_family == AF_INET6
                        ? (const void *) &((const struct sockaddr_in6 *) ss)->sin6_addr
                        : (const void *) &((const struct sockaddr_in *) ss)->sin_addr;
    if (!inet_ntop(ss->ss_family, a, out, (socklen_t) len)) {
        snprintf(out, len, "?");
    }
}

static bool
mon_node_setup(struct monitor *m, int idx, int origin, const struct cfg_node *cn)
{
    struct mon_node *n = &m->nodes[idx];
    struct pool_node *pn = &m->rt->nodes[idx];
    n->origin = origin;
    n->cfg_role = cn->role;
    n->weight = cn->weight;
    n->section = strdup(cn->name);
    addr_format(&pn->addr, n->addr_text, sizeof(n->addr_text));
    snprintf(n->port_text, sizeof(n->port_text), "%d", pn->port);
    return n->section != NULL;
}

/* Workers read is_removed from snapshots; the pool layer reads it from the node when a
 * connection comes back. */
static void
mon_node_set_removed(struct monitor *m, int idx, bool removed)
{
    m->nodes[idx].is_removed = removed;
    atomic_store_explicit(&m->rt->nodes[idx].is_removed, removed, memory_order_relaxed);
}

/*
 * Append a node for address ai of section cn (index o in m->cfg->nodes) at the end of
 * rt->nodes; existing indexes never move. The first node of a section is named after it, a
 * further address of its host "NAME@ADDRESS". It becomes visible to workers with the next
 * snapshot published (topo_publish's lock orders these writes before any worker's read).
 */
static bool
mon_node_append(struct monitor *m, const struct cfg_node *cn, int o, const struct addrinfo *ai,
                bool is_first)
{
    int idx = m->n_nodes;
    struct pool_node *pn = &m->rt->nodes[idx];
    struct mon_node *n = &m->nodes[idx];
    char text[INET6_ADDRSTRLEN];
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    addr_format(&ss, text, sizeof(text));
    size_t nl = strlen(cn->name) + 1 + strlen(text) + 1;
    char *name = malloc(nl);
    char *host = strdup(cn->host);
    if (!name || !host) {
        free(name);
        free(host);
        return false;
    }
    if (is_first) {
        snprintf(name, nl, "%s", cn->name);
    } else {
        snprintf(name, nl, "%s@%s", cn->name, text);
    }
    memset(pn, 0, sizeof(*pn));
    memcpy(&pn->addr, &ss, sizeof(ss));
    pn->addr_len = ai->ai_addrlen;
    pn->host = host;
    pn->port = cn->port;
    pn->name = name;
    atomic_init(&pn->role, pool_role_of(cn->role));
    atomic_init(&pn->is_up, 1);
    atomic_init(&pn->down_until_us, 0);
    atomic_init(&pn->is_removed, 0);
    memset(n, 0, sizeof(*n));
    n->owned_name = name;
    n->owned_host = host;
    if (!mon_node_setup(m, idx, o, cn)) {
        free(name);
        free(host);
        memset(n, 0, sizeof(*n));
        return false;
    }
    m->n_nodes++;
    return true;
}

/* Resolve every configured host again; true when a node was added, removed or came back.
 * is_retry: only for a section still without an address (its failure was logged already). */
static bool
dns_refresh(struct monitor *m, bool is_retry)
{
    const struct cfg *c = m->cfg;
    bool changed = false;
    m->is_dns_pending = false;
    for (int o = 0; o < c->n_nodes; o++) {
        const struct cfg_node *cn = &c->nodes[o];
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        char port[16];
        snprintf(port, sizeof(port), "%d", cn->port);
        bool has_node = false;
        for (int i = 0; i < m->n_nodes && !has_node; i++) {
            has_node = m->nodes[i].origin == o;
        }
        if (is_retry && has_node) {
            continue; /* resolved again at its dns_ttl */
        }
        int rc = getaddrinfo(cn->host, port, &hints, &res);
        if (rc != 0 || !res) {
            if (!has_node) {
                /* a section added by a reload: tried again at every wake, about once a second */
                m->is_dns_pending = true;
            }
            if (is_retry) {
                log_debug("node %s: still cannot resolve \"%s\": %s", cn->name, cn->host,
                          gai_strerror(rc));
            } else {
                log_warning("node %s: cannot resolve \"%s\": %s; keeping its %s", cn->name,
                            cn->host, gai_strerror(rc),
                            has_node ? "known addresses" : "place empty, trying again");
            }
            continue;
        }
        bool seen[TOPO_MAX_NODES] = { false };
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) {
                continue;
            }
            int found = -1;
            for (int i = 0; i < m->n_nodes; i++) {
                if (m->nodes[i].origin == o &&
                    addr_equal(&m->rt->nodes[i].addr, ai->ai_addr, ai->ai_addrlen)) {
                    found = i;
                    break;
                }
            }
            if (found >= 0) {
                seen[found] = true;
                if (m->nodes[found].is_removed) {
                    mon_node_set_removed(m, found, false);
                    log_info("node %s: address %s is back in DNS", m->rt->nodes[found].name,
                             m->nodes[found].addr_text);
                    changed = true;
                }
                continue;
            }
            if (m->n_nodes == TOPO_MAX_NODES) {
                if (!m->is_full_logged) {
                    log_warning("node %s: %d nodes known already (the most pgmux tracks); "
                                "ignoring further addresses",
                                cn->name, TOPO_MAX_NODES);
                    m->is_full_logged = true;
                }
                continue;
            }
            int idx = m->n_nodes;
            if (!mon_node_append(m, cn, o, ai, !has_node)) {
                log_error("node %s: out of memory adding address %s", cn->name, "of its host");
                continue;
            }
            seen[idx] = true;
            changed = true;
            if (has_node) {
                log_info("node %s: \"%s\" also resolves to %s: added as node %s (index %d)",
                         cn->name, cn->host, m->nodes[idx].addr_text, m->rt->nodes[idx].name, idx);
            } else {
                log_info("node %s: added (%s:%d, %s, role %s, weight %d) as node index %d",
                         cn->name, m->nodes[idx].addr_text, cn->port, cn->host,
                         cfg_role_name(cn->role), cn->weight, idx);
            }
            has_node = true;
        }
        freeaddrinfo(res);
        for (int i = 0; i < m->n_nodes; i++) {
            if (m->nodes[i].origin == o && !seen[i] && !m->nodes[i].is_removed) {
                mon_node_set_removed(m, i, true);
                changed = true;
                log_info("node %s: address %s no longer in DNS for \"%s\": removed",
                         m->rt->nodes[i].name, m->nodes[i].addr_text, cn->host);
            }
        }
    }
    return changed;
}

/* ---- the next snapshot ---- */

static const char *
role_name(int role)
{
    return role == POOL_ROLE_PRIMARY   ? "primary"
           : role == POOL_ROLE_REPLICA ? "replica"
                                       : "unknown";
}

/* The learned function list of the primary, sorted and without repeats, into s when it differs
 * from what s holds. */
static void
functions_update(struct monitor *m, struct topo_snapshot *s, struct mon_node *n)
{
    if (n->n_funcs > 1) {
        qsort(n->funcs, (size_t) n->n_funcs, sizeof(char *), str_ptr_cmp);
    }
    int k = 0;
    for (int i = 0; i < n->n_funcs; i++) {
        if (k > 0 && strcmp(n->funcs[k - 1], n->funcs[i]) == 0) {
            free(n->funcs[i]);
            continue;
        }
        n->funcs[k++] = n->funcs[i];
    }
    n->n_funcs = k;
    bool same = k == s->n_volatile_functions;
    for (int i = 0; same && i < k; i++) {
        same = strcmp(n->funcs[i], s->volatile_functions[i]) == 0;
    }
    if (same && m->has_functions) {
        return;
    }
    char **list = k ? calloc((size_t) k, sizeof(char *)) : NULL;
    if (k && !list) {
        return; /* keep the old list; the next round tries again */
    }
    for (int i = 0; i < s->n_volatile_functions; i++) {
        free(s->volatile_functions[i]);
    }
    free(s->volatile_functions);
    /* the strings move from the node to the snapshot */
    if (k) {
        memcpy(list, n->funcs, sizeof(char *) * (size_t) k);
    }
    n->n_funcs = 0;
    s->volatile_functions = list;
    s->n_volatile_functions = k;
    s->functions_generation++;
    m->has_functions = true;
    log_info("learned %d user-defined VOLATILE function names from the primary", k);
}

static int
primary_choose(struct monitor *m, const struct topo_snapshot *s, int previous)
{
    /* A declared primary is the primary whenever it answers; roles are not second-guessed. */
    for (int i = 0; i < s->n_nodes; i++) {
        if (m->nodes[i].cfg_role == CFG_ROLE_PRIMARY) {
            const struct topo_node *tn = &s->nodes[i];
            if (tn->is_healthy && !tn->is_removed) {
                return i;
            }
        }
    }
    for (int i = 0; i < s->n_nodes; i++) {
        if (m->nodes[i].cfg_role == CFG_ROLE_PRIMARY && !s->nodes[i].is_removed) {
            return -1; /* declared, and down */
        }
    }
    int best = -1;
    for (int i = 0; i < s->n_nodes; i++) {
        const struct topo_node *tn = &s->nodes[i];
        if (tn->role != POOL_ROLE_PRIMARY || !tn->is_healthy || tn->is_removed || tn->is_fenced) {
            continue;
        }
        if (i == previous) {
            return i; /* stay put while it is usable */
        }
        if (best < 0 || tn->timeline > s->nodes[best].timeline) {
            best = i;
        }
    }
    return best;
}

static bool
node_differs(const struct topo_node *a, const struct topo_node *b)
{
    return a->role != b->role || a->is_healthy != b->is_healthy || a->is_removed != b->is_removed ||
           a->is_fenced != b->is_fenced || a->timeline != b->timeline || a->lsn != b->lsn ||
           a->lag_bytes != b->lag_bytes || a->lag_ms != b->lag_ms || a->weight != b->weight;
}

struct purge_msg {
    struct pool_msg msg;
    uint64_t nodes; /* bit i: close idle connections to node i */
};

static void
purge_msg_run(struct pool_worker *pw, struct pool_msg *m)
{
    struct worker *w = pw->owner;
    uint64_t nodes = ((struct purge_msg *) m)->nodes;
    free(m);
    (void) topo_refresh(&w->rt->topology, &w->topo);
    for (int i = 0; i < TOPO_MAX_NODES; i++) {
        if (nodes & (UINT64_C(1) << i)) {
            int n = pool_worker_close_idle_node(pw, i, "node died, changed role or was removed");
            if (n > 0) {
                log_debug("worker %d: closed %d idle connections to node %d", w->idx, n, i);
            }
        }
    }
    client_topology_changed(w);
}

static void
workers_tell(struct monitor *m, uint64_t purge)
{
    /* Before the workers exist there is nobody to tell: they take the snapshot at init. */
    if (!atomic_load_explicit(&m->is_workers_ready, memory_order_acquire)) {
        return;
    }
    for (int i = 0; i < m->rt->n_workers; i++) {
        struct purge_msg *pm = malloc(sizeof(*pm));
        if (!pm) {
            continue; /* the worker sees the snapshot at its next tick anyway */
        }
        pm->msg.fn = purge_msg_run;
        pm->nodes = purge;
        pool_worker_post(&m->rt->workers[i].pw, &pm->msg);
    }
}

/* Build the snapshot that follows m->last from this round's verdicts; publish it if it says
 * something new. */
static void
snapshot_update(struct monitor *m, bool checked, bool force)
{
    struct topo_snapshot *s = topo_snapshot_copy(m->last);
    if (!s) {
        log_error("monitor: out of memory building a topology snapshot");
        return;
    }
    int64_t now = mono_now_us();
    s->n_nodes = m->n_nodes;
    for (int i = 0; i < m->n_nodes; i++) {
        struct mon_node *n = &m->nodes[i];
        struct topo_node *tn = &s->nodes[i];
        if (i >= m->last->n_nodes) {
            memset(tn, 0, sizeof(*tn));
            tn->role = pool_role_of(n->cfg_role);
            /* a node found by DNS between checks is unknown until its first check */
            tn->is_healthy = !m->is_checking;
        }
        tn->idx = i;
        tn->weight = n->weight;
        tn->is_removed = n->is_removed;
        if (!checked || n->is_removed) {
            continue;
        }
        tn->checked_at_us = now;
        tn->is_healthy = n->is_ok;
        if (!n->is_ok) {
            continue; /* role, timeline and position stay as last seen */
        }
        int seen_role = n->is_in_recovery ? POOL_ROLE_REPLICA : POOL_ROLE_PRIMARY;
        tn->role = n->cfg_role == CFG_ROLE_AUTO ? seen_role : pool_role_of(n->cfg_role);
        tn->timeline = n->timeline;
        tn->lsn = n->lsn;
        if (n->timeline > m->max_timeline_seen) {
            m->max_timeline_seen = n->timeline;
        }
    }
    if (checked) {
        /* Split-brain guard: a node out of recovery on an older timeline than any node has
         * shown is a former primary that came back after a failover; it takes no writes. */
        for (int i = 0; i < m->n_nodes; i++) {
            struct mon_node *n = &m->nodes[i];
            struct topo_node *tn = &s->nodes[i];
            if (!n->is_ok || n->is_removed) {
                continue;
            }
            tn->is_fenced = n->cfg_role == CFG_ROLE_AUTO && !n->is_in_recovery &&
                            n->timeline < m->max_timeline_seen;
        }
        s->primary = primary_choose(m, s, m->last->primary);
        uint64_t primary_lsn = s->primary >= 0 ? s->nodes[s->primary].lsn : 0;
        for (int i = 0; i < m->n_nodes; i++) {
            struct mon_node *n = &m->nodes[i];
            struct topo_node *tn = &s->nodes[i];
            if (!n->is_ok || n->is_removed) {
                continue;
            }
            if (!n->is_in_recovery) {
                tn->lag_bytes = 0;
                tn->lag_ms = 0;
                continue;
            }
            tn->lag_bytes = primary_lsn > n->lsn ? primary_lsn - n->lsn : 0;
            /* the last replayed commit's age says nothing while caught up on an idle primary */
            tn->lag_ms = tn->lag_bytes > 0 && n->replay_age_ms > 0 ? n->replay_age_ms : 0;
        }
        if (s->primary >= 0 && m->nodes[s->primary].has_funcs) {
            functions_update(m, s, &m->nodes[s->primary]);
        }
    } else if (s->primary < 0 || s->nodes[s->primary].is_removed) {
        /* Without checks (health_check_period = 0) this is the only place a primary declared
         * by a reload is taken up. */
        s->primary = primary_choose(m, s, -1);
    }

    /* What changed, for the log and for the workers' idle connections. */
    bool changed = force || s->n_nodes != m->last->n_nodes || s->primary != m->last->primary ||
                   s->functions_generation != m->last->functions_generation;
    uint64_t purge = 0;
    bool is_shift = s->primary != m->last->primary; /* worth waking the workers for */
    for (int i = 0; i < s->n_nodes; i++) {
        const struct topo_node *a = i < m->last->n_nodes ? &m->last->nodes[i] : NULL;
        const struct topo_node *b = &s->nodes[i];
        const char *name = m->rt->nodes[i].name;
        if (!a) {
            changed = true;
            if (checked && !b->is_removed) {
                struct mon_node *n = &m->nodes[i];
                if (b->is_healthy) {
                    log_info("node %s (%s:%s) is up: %s, timeline %u", name, n->addr_text,
                             n->port_text, role_name(b->role), b->timeline);
                } else {
                    log_warning("node %s (%s:%s) is down: %s", name, n->addr_text, n->port_text,
                                n->err);
                    memcpy(n->last_logged_err, n->err, MON_ERR_LEN);
                }
            }
            continue;
        }
        if (!node_differs(a, b)) {
            continue;
        }
        changed = true;
        if (a->is_healthy != b->is_healthy || a->role != b->role) {
            is_shift = true;
        }
        if (a->is_healthy && !b->is_healthy) {
            log_warning("node %s (%s:%s) is down: %s", name, m->nodes[i].addr_text,
                        m->nodes[i].port_text, m->nodes[i].err);
            memcpy(m->nodes[i].last_logged_err, m->nodes[i].err, MON_ERR_LEN);
            purge |= UINT64_C(1) << i;
        } else if (!a->is_healthy && b->is_healthy) {
            log_info("node %s (%s:%s) is up: %s, timeline %u", name, m->nodes[i].addr_text,
                     m->nodes[i].port_text, role_name(b->role), b->timeline);
            m->nodes[i].last_logged_err[0] = '\0';
            atomic_store(&m->rt->nodes[i].down_until_us, 0);
        }
        if (a->role != b->role) {
            log_info("node %s: role %s -> %s (timeline %u)", name, role_name(a->role),
                     role_name(b->role), b->timeline);
            atomic_store(&m->rt->nodes[i].role, b->role);
            if (a->role != POOL_ROLE_UNKNOWN) {
                purge |= UINT64_C(1) << i;
            }
        }
        if (a->is_fenced != b->is_fenced) {
            if (b->is_fenced) {
                log_warning("node %s is out of recovery on timeline %u, older than timeline %u "
                            "seen on another node: fenced (no writes, no reads) to avoid a "
                            "split brain",
                            name, b->timeline, m->max_timeline_seen);
                purge |= UINT64_C(1) << i;
            } else {
                log_info("node %s is no longer fenced", name);
            }
        }
        if (!a->is_removed && b->is_removed) {
            purge |= UINT64_C(1) << i;
        }
    }
    if (checked) {
        for (int i = 0; i < m->n_nodes; i++) {
            struct mon_node *n = &m->nodes[i];
            /* still down, but for a new reason: worth one line */
            if (!n->is_ok && !n->is_removed && i < m->last->n_nodes &&
                !m->last->nodes[i].is_healthy && strcmp(n->err, n->last_logged_err) != 0) {
                log_warning("node %s (%s:%s) is still down: %s", m->rt->nodes[i].name, n->addr_text,
                            n->port_text, n->err);
                memcpy(n->last_logged_err, n->err, MON_ERR_LEN);
            }
        }
    }
    if (s->primary != m->last->primary) {
        if (s->primary >= 0) {
            log_info("primary is now node %s (timeline %u)", m->rt->nodes[s->primary].name,
                     s->nodes[s->primary].timeline);
        } else {
            log_warning("no usable primary: writes fail until one is back or promoted");
        }
    }
    if (!changed) {
        topo_put(s);
        return;
    }
    atomic_fetch_add(&s->refs, 1); /* one for the topology, one kept in m->last */
    topo_publish(&m->rt->topology, s);
    topo_put(m->last);
    m->last = s;
    if (purge || is_shift) {
        workers_tell(m, purge);
    }
}

/* ---- the thread ---- */

static bool
str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

static void
checking_update(struct monitor *m)
{
    bool was = m->is_checking;
    m->is_checking = m->cfg->health_check_period_ms > 0 && m->cfg->health_check_user != NULL;
    if (m->cfg->health_check_period_ms > 0 && !m->is_checking) {
        log_warning("health checks are off: no health_check_user is set and no warm_pools or "
                    "auth_file user (console users aside) has a plaintext password; roles stay "
                    "as declared and failover is not followed");
    } else if (was && !m->is_checking) {
        log_info("health checks are off (health_check_period = 0)");
    }
}

static const struct cfg_node *
cfg_node_find(const struct cfg *c, const char *name, int *idx)
{
    for (int i = 0; i < c->n_nodes; i++) {
        if (strcmp(c->nodes[i].name, name) == 0) {
            *idx = i;
            return &c->nodes[i];
        }
    }
    *idx = -1;
    return NULL;
}

/*
 * Match the running nodes to the [node.NAME] sections of a reloaded configuration. A section
 * that is gone, or whose host, port or role changed, removes its nodes for good (origin -1: DNS
 * never brings them back); a changed section then comes back as a new node, appended by the
 * dns_refresh that follows, like a section that is new. A changed weight applies in place.
 * Returns true when the nodes need a dns_refresh and a new snapshot.
 */
static bool
nodes_follow(struct monitor *m, const struct cfg *c, const struct cfg *old)
{
    bool changed = false;
    for (int i = 0; i < m->n_nodes; i++) {
        struct mon_node *n = &m->nodes[i];
        if (n->origin < 0) {
            continue;
        }
        const struct cfg_node *was = &old->nodes[n->origin];
        int j;
        const struct cfg_node *now = cfg_node_find(c, n->section, &j);
        const char *why = NULL;
        if (!now) {
            why = "its section is gone from the configuration";
        } else if (strcmp(now->host, was->host) != 0 || now->port != was->port) {
            why = "its host or port changed (the section's new address becomes a new node)";
        } else if (now->role != was->role) {
            why = "its role changed (the section becomes a new node)";
        }
        if (why) {
            n->origin = -1;
            changed = true;
            if (!n->is_removed) {
                mon_node_set_removed(m, i, true);
                log_info("node %s (%s:%s) removed: %s; running transactions finish, sessions on "
                         "it go on until they end, nothing new goes there",
                         m->rt->nodes[i].name, n->addr_text, n->port_text, why);
            }
            continue;
        }
        n->origin = j;
        if (now->weight != n->weight) {
            log_info("node %s: weight %d -> %d", m->rt->nodes[i].name, n->weight, now->weight);
            n->weight = now->weight;
            changed = true;
        }
    }
    for (int j = 0; j < c->n_nodes; j++) {
        bool has_node = false;
        for (int i = 0; i < m->n_nodes && !has_node; i++) {
            has_node = m->nodes[i].origin == j;
        }
        changed |= !has_node;
    }
    return changed;
}

/*
 * A reload publishes a new configuration: the health_check_* keys and dns_ttl apply from the
 * next round, and connections made with other credentials or TLS settings are reopened; nodes
 * follow its [node.NAME] sections (nodes_follow). Returns true when the nodes changed. Only
 * once the main loop runs: before that rt->cfg_mu does not exist.
 */
static bool
cfg_follow(struct monitor *m)
{
    if (!atomic_load_explicit(&m->is_workers_ready, memory_order_acquire)) {
        return false;
    }
    struct cfg *c = runtime_cfg_get(m->rt);
    struct cfg *old = m->cfg;
    if (c == old) {
        cfg_unref(c);
        return false;
    }
    bool relogin = str_differs(c->health_check_user, old->health_check_user) ||
                   str_differs(c->health_check_password, old->health_check_password) ||
                   str_differs(c->health_check_database, old->health_check_database) ||
                   c->health_check_timeout_ms != old->health_check_timeout_ms ||
                   c->server_tls_mode != old->server_tls_mode ||
                   str_differs(c->server_tls_ca_file, old->server_tls_ca_file) ||
                   str_differs(c->server_tls_cert_file, old->server_tls_cert_file) ||
                   str_differs(c->server_tls_key_file, old->server_tls_key_file);
    bool nodes_changed = nodes_follow(m, c, old);
    m->cfg = c;
    if (relogin) {
        for (int i = 0; i < m->n_nodes; i++) {
            conn_drop(&m->nodes[i]);
        }
    }
    checking_update(m);
    cfg_unref(old);
    return nodes_changed;
}

static void *
monitor_main(void *arg)
{
    struct monitor *m = arg;
    bool first = true;
    int64_t next_round = mono_now_us();
    for (;;) {
        bool nodes_changed = cfg_follow(m);
        int64_t period_us = m->cfg->health_check_period_ms * 1000;
        int64_t ttl_us = m->cfg->dns_ttl_ms * 1000;
        int64_t now = mono_now_us();
        if (next_round > now + period_us) {
            next_round = now + period_us; /* the period was shortened */
        }
        bool dns_changed = nodes_changed;
        bool dns_due = first || nodes_changed || (ttl_us > 0 && now >= m->next_dns_us);
        if (dns_due || m->is_dns_pending) {
            dns_changed |= dns_refresh(m, !dns_due);
            if (dns_due) {
                m->next_dns_us = now + ttl_us;
            }
        }
        if (dns_changed && m->is_checking) {
            next_round = now; /* a node added by a reload is checked at once */
        }
        bool do_check = m->is_checking && now >= next_round;
        if (do_check) {
            round_run(m);
            next_round += period_us;
            if (next_round < mono_now_us()) {
                next_round = mono_now_us(); /* a slow round: start the next one now, no burst */
            }
        }
        if (do_check || dns_changed) {
            snapshot_update(m, do_check, false);
        }
        pthread_mutex_lock(&m->mu);
        if (first) {
            m->is_first_done = true;
            pthread_cond_broadcast(&m->cv);
            first = false;
        }
        /* at least once a second, to see a reload that turns checks or DNS on */
        int64_t wake = mono_now_us() + 1000000;
        if (m->is_checking && next_round < wake) {
            wake = next_round;
        }
        if (ttl_us > 0 && m->next_dns_us < wake) {
            wake = m->next_dns_us;
        }
        while (!m->is_stopping) {
            int64_t left = wake - mono_now_us();
            if (left <= 0) {
                break;
            }
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t ns = ts.tv_nsec + (left % 1000000) * 1000;
            ts.tv_sec += (time_t) (left / 1000000 + ns / 1000000000);
            ts.tv_nsec = (long) (ns % 1000000000);
            (void) pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        }
        bool stop = m->is_stopping;
        pthread_mutex_unlock(&m->mu);
        if (stop) {
            break;
        }
    }
    for (int i = 0; i < m->n_nodes; i++) {
        conn_drop(&m->nodes[i]);
    }
    return NULL;
}

int
monitor_start(struct runtime *rt, struct monitor **out)
{
    *out = NULL;
    struct monitor *m = calloc(1, sizeof(*m));
    if (!m) {
        return -1;
    }
    m->rt = rt;
    m->cfg = cfg_ref(rt->cfg);
    atomic_init(&m->is_workers_ready, false);
    m->last = topo_get(&rt->topology);
    checking_update(m);
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    m->n_nodes = rt->n_nodes;
    for (int i = 0; i < rt->n_nodes; i++) {
        if (!mon_node_setup(m, i, i, &m->cfg->nodes[i])) {
            monitor_free(m);
            return -1;
        }
    }
    if (pthread_create(&m->thread, NULL, monitor_main, m) != 0) {
        monitor_stop(m);
        monitor_free(m);
        return -1;
    }
    m->has_thread = true;
    /* The first round is bounded by health_check_timeout; wait for it so the first clients
     * already see discovered roles. */
    pthread_mutex_lock(&m->mu);
    while (!m->is_first_done) {
        pthread_cond_wait(&m->cv, &m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    *out = m;
    return 0;
}

void
monitor_workers_ready(struct monitor *m)
{
    atomic_store_explicit(&m->is_workers_ready, true, memory_order_release);
}

void
monitor_stop(struct monitor *m)
{
    if (!m) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    m->is_stopping = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (m->has_thread) {
        pthread_join(m->thread, NULL);
        m->has_thread = false;
    }
}

void
monitor_free(struct monitor *m)
{
    if (!m) {
        return;
    }
    for (int i = 0; i < m->n_nodes; i++) {
        conn_drop(&m->nodes[i]);
        funcs_clear(&m->nodes[i]);
        free(m->nodes[i].funcs);
        free(m->nodes[i].owned_name);
        free(m->nodes[i].owned_host);
        free(m->nodes[i].section);
    }
    topo_put(m->last);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    cfg_unref(m->cfg);
    OPENSSL_cleanse(m, sizeof(*m));
    free(m);
}
