/*
 * runtime.c - configuration reload on the main thread (CONVENTIONS 6.6).
 *
 * A reload builds a new snapshot with cfg_load, carries over the keys that cannot change while
 * running (each difference is logged as needing a restart), applies what lives outside the
 * snapshot (pool settings and secrets, the log level, new warm pools), then publishes the
 * snapshot: rt->cfg under cfg_mu, and one inbox message per worker, which swaps its w->cfg
 * between events. Nothing is closed: a session keeps its server connection and its pool mode,
 * and reads timeouts and limits from its worker's current snapshot.
 *
 * Rejected: an atomic pointer that workers poll at every event. The inbox already wakes them,
 * costs nothing when there is no reload, and gives each worker one well-defined point where the
 * snapshot changes, so no callback sees two snapshots.
 *
 * [node.NAME] sections travel with the snapshot to the monitor thread, which resolves new hosts
 * (never here: the main loop must not block on DNS) and appends or removes nodes (monitor.c).
 *
 * What it does not do: re-open listeners or start and stop workers (listen_addr, listen_port,
 * workers need a restart, README "Zero-downtime restart"), or change the parameters that
 * transaction pooling tracks (sessions in flight read them back by position in the list).
 */
#include "proxy/runtime.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/strbuf.h"
#include "pool/pool.h"
#include "protocol/md5.h"
#include "proxy/admin.h"
#include "proxy/tls.h"

static void
reload_cb(EV_P_ ev_async *a, int revents)
{
    (void) loop;
    (void) revents;
    struct runtime *rt = a->data;
    (void) runtime_reload(rt);
}

void
runtime_reload_init(struct runtime *rt)
{
    pthread_mutex_init(&rt->cfg_mu, NULL);
    ev_async_init(&rt->reload_async, reload_cb);
    rt->reload_async.data = rt;
    ev_async_start(rt->main_loop, &rt->reload_async);
}

void
runtime_reload_fini(struct runtime *rt)
{
    ev_async_stop(rt->main_loop, &rt->reload_async);
    pthread_mutex_destroy(&rt->cfg_mu);
}

void
runtime_request_reload(struct runtime *rt)
{
    ev_async_send(rt->main_loop, &rt->reload_async);
}

struct cfg *
runtime_cfg_get(struct runtime *rt)
{
    pthread_mutex_lock(&rt->cfg_mu);
    struct cfg *c = cfg_ref(rt->cfg);
    pthread_mutex_unlock(&rt->cfg_mu);
    return c;
}

/* ---- keys that need a restart ---- */

static bool
str_eq(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool
lists_eq(char **a, int na, char **b, int nb)
{
    if (na != nb) {
        return false;
    }
    for (int i = 0; i < na; i++) {
        if (strcmp(a[i], b[i]) != 0) {
            return false;
        }
    }
    return true;
}

static int
copy_list(char **src, int n, char ***out)
{
    *out = NULL;
    if (n == 0) {
        return 0;
    }
    char **v = calloc((size_t) n, sizeof(*v));
    if (!v) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (!(v[i] = strdup(src[i]))) {
            for (int j = 0; j < i; j++) {
                free(v[j]);
            }
            free(v);
            return -1;
        }
    }
    *out = v;
    return 0;
}

static void
free_list(char **v, int n)
{
    for (int i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

/*
 * Give next the running values of the keys that cannot change while pgmux runs, logging each
 * difference. Returns 0, or -1 when out of memory (next is then unusable).
 */
static int
keep_restart_keys(struct cfg *next, const struct cfg *cur)
{
    const char *file = next->path;
    if (!str_eq(next->listen_addr, cur->listen_addr)) {
        log_warning("%s: listen_addr: changed from \"%s\" to \"%s\"; takes effect after a restart, "
                    "still listening on \"%s\"",
                    file, cur->listen_addr, next->listen_addr, cur->listen_addr);
        char *v = strdup(cur->listen_addr);
        if (!v) {
            return -1;
        }
        free(next->listen_addr);
        next->listen_addr = v;
    }
    if (next->listen_port != cur->listen_port) {
        log_warning("%s: listen_port: changed from %d to %d; takes effect after a restart, still "
                    "listening on %d",
                    file, cur->listen_port, next->listen_port, cur->listen_port);
        next->listen_port = cur->listen_port;
    }
    if (!str_eq(next->unix_socket_dir, cur->unix_socket_dir) ||
        next->unix_socket_mode != cur->unix_socket_mode) {
        log_warning("%s: unix_socket_dir, unix_socket_mode: changed to \"%s\" %03o; takes effect "
                    "after a restart",
                    file, next->unix_socket_dir ? next->unix_socket_dir : "",
                    (unsigned) next->unix_socket_mode);
        char *v = cur->unix_socket_dir ? strdup(cur->unix_socket_dir) : NULL;
        if (cur->unix_socket_dir && !v) {
            return -1;
        }
        free(next->unix_socket_dir);
        next->unix_socket_dir = v;
        next->unix_socket_mode = cur->unix_socket_mode;
    }
    if (next->io_engine != cur->io_engine) {
        log_warning("%s: io_engine: changed; takes effect after a restart", file);
        next->io_engine = cur->io_engine;
    }
    if (next->workers != cur->workers) {
        log_warning("%s: workers: changed from %d to %d; takes effect after a restart, still "
                    "running %d",
                    file, cur->workers, next->workers, cur->workers);
        next->workers = cur->workers;
    }
    /* The HTTP listener and the log destination are set up once at start. */
    if (!str_eq(next->metrics_addr, cur->metrics_addr) || next->metrics_port != cur->metrics_port) {
        log_warning("%s: metrics_addr, metrics_port: changed to %s:%d; takes effect after a "
                    "restart, still serving %s:%d",
                    file, next->metrics_addr, next->metrics_port, cur->metrics_addr,
                    cur->metrics_port);
        char *v = strdup(cur->metrics_addr);
        if (!v) {
            return -1;
        }
        free(next->metrics_addr);
        next->metrics_addr = v;
        next->metrics_port = cur->metrics_port;
    }
    if (next->log_destination != cur->log_destination ||
        next->syslog_facility != cur->syslog_facility ||
        !str_eq(next->syslog_ident, cur->syslog_ident) ||
        !str_eq(next->syslog_socket, cur->syslog_socket)) {
        log_warning("%s: log_destination, syslog_*: changed; takes effect after a restart, "
                    "still logging to %s",
                    file, cfg_log_dest_name(cur->log_destination));
        char *ident = strdup(cur->syslog_ident);
        char *sock = strdup(cur->syslog_socket);
        if (!ident || !sock) {
            free(ident);
            free(sock);
            return -1;
        }
        free(next->syslog_ident);
        free(next->syslog_socket);
        next->syslog_ident = ident;
        next->syslog_socket = sock;
        next->log_destination = cur->log_destination;
        next->syslog_facility = cur->syslog_facility;
    }
    if (!lists_eq(next->track_parameters, next->n_track_parameters, cur->track_parameters,
                  cur->n_track_parameters)) {
        log_warning("%s: track_parameters: changed; takes effect after a restart (sessions in "
                    "transaction pooling follow the running list)",
                    file);
        char **v;
        if (copy_list(cur->track_parameters, cur->n_track_parameters, &v) != 0) {
            return -1;
        }
        free_list(next->track_parameters, next->n_track_parameters);
        next->track_parameters = v;
        next->n_track_parameters = cur->n_track_parameters;
    }
    return 0;
}

/* ---- what lives outside the snapshot ---- */

/* How pools log in as a user with this auth_file secret (borrowed from cu). */
static void
secret_from_user(const struct cfg_user *cu, struct pool_secret *ps)
{
    memset(ps, 0, sizeof(*ps));
    if (!cu) {
        return;
    }
    if (proto_md5_is_secret(cu->secret)) {
        snprintf(ps->md5, sizeof(ps->md5), "%s", cu->secret);
    } else if (strncmp(cu->secret, "SCRAM-SHA-256$", 14) != 0) {
        ps->password = (char *) (uintptr_t) cu->secret; /* copied by pool_set_secret */
    }
}

static struct pool *
pool_at(struct pool_set *s, int i, int *n)
{
    pthread_mutex_lock(&s->mu);
    *n = s->n_pools;
    struct pool *p = i < s->n_pools ? s->pools[i] : NULL;
    pthread_mutex_unlock(&s->mu);
    return p;
}

/* Existing pools: a changed secret for the next server login, the pool mode's queue order. */
static int
apply_to_pools(struct runtime *rt, const struct cfg *next, const struct cfg *cur)
{
    int n = 0;
    int changed = 0;
    (void) pool_at(&rt->pools, 0, &n);
    for (int i = 0; i < n; i++) {
        struct pool *p = pool_at(&rt->pools, i, &n);
        const struct cfg_user *was = cfg_user_find(cur, p->user);
        const struct cfg_user *now = cfg_user_find(next, p->user);
        /* A user no longer in auth_file cannot log in to pgmux any more, but its sessions
         * still open go on, in transaction pooling with new server connections too: the pool
         * keeps the secret it has. */
        if (now && !str_eq(was ? was->secret : NULL, now->secret)) {
            struct pool_secret ps;
            secret_from_user(now, &ps);
            if (pool_set_secret(p, &ps) != ST_OK) {
                log_error("reload: out of memory updating the secret of pool %s@%s", p->user,
                          p->database);
            } else {
                changed++;
            }
        }
        pool_set_may_overtake(p, cfg_pool_mode_for(next, p->database, p->user) != CFG_POOL_SESSION);
    }
    return changed;
}

static void
ensure_warm_pools(struct runtime *rt, const struct cfg *next)
{
    for (int i = 0; i < next->n_warm_pools; i++) {
        const struct cfg_warm_pool *wp = &next->warm_pools[i];
        struct pool_secret ps;
        secret_from_user(cfg_user_find(next, wp->user), &ps);
        enum cfg_pool_mode mode = cfg_pool_mode_for(next, wp->database, wp->user);
        /* Created if new; its home worker fills it to min_idle_conns at the next tick. */
        if (!pool_get(&rt->pools, rt->primary_node, wp->database, wp->user, &ps,
                      mode != CFG_POOL_SESSION)) {
            log_error("reload: out of memory creating warm pool %s@%s", wp->user, wp->database);
        }
    }
}

/* Names of the [pgmux] and [pool] keys whose value differs, for the log line. */
/* Whether two lists of [database.NAME] or [user.NAME] sections say the same, in order. */
static bool
overrides_eq(const struct cfg_override *a, int na, const struct cfg_override *b, int nb)
{
    if (na != nb) {
        return false;
    }
    for (int i = 0; i < na; i++) {
        if (strcmp(a[i].name, b[i].name) != 0 || a[i].has_pool_mode != b[i].has_pool_mode ||
            (a[i].has_pool_mode && a[i].pool_mode != b[i].pool_mode) ||
            a[i].max_conns != b[i].max_conns) {
            return false;
        }
    }
    return true;
}

static void
describe_changes(struct strbuf *b, const struct cfg *n, const struct cfg *o)
{
#define CHG(cond, name)                                          \
    do {                                                         \
        if (cond) {                                              \
            strbuf_appendf(b, "%s%s", b->len ? ", " : "", name); \
        }                                                        \
    } while (0)
    CHG(n->max_client_conn != o->max_client_conn, "max_client_conn");
    CHG(n->worker_balance != o->worker_balance, "worker_balance");
    CHG(n->worker_busy_percent != o->worker_busy_percent, "worker_busy_percent");
    CHG(n->auth_type != o->auth_type, "auth_type");
    CHG(!str_eq(n->auth_file, o->auth_file), "auth_file");
    CHG(!lists_eq(n->admin_users, n->n_admin_users, o->admin_users, o->n_admin_users),
        "admin_users");
    CHG(!lists_eq(n->stats_users, n->n_stats_users, o->stats_users, o->n_stats_users),
        "stats_users");
    CHG(!str_eq(n->server_reset_query, o->server_reset_query), "server_reset_query");
    CHG(n->client_idle_timeout_ms != o->client_idle_timeout_ms, "client_idle_timeout");
    CHG(n->idle_transaction_timeout_ms != o->idle_transaction_timeout_ms,
        "idle_transaction_timeout");
    CHG(n->client_login_timeout_ms != o->client_login_timeout_ms, "client_login_timeout");
    CHG(n->query_wait_timeout_ms != o->query_wait_timeout_ms, "query_wait_timeout");
    CHG(n->server_connect_timeout_ms != o->server_connect_timeout_ms, "server_connect_timeout");
    CHG(n->server_login_retry_ms != o->server_login_retry_ms, "server_login_retry");
    CHG(n->shutdown_timeout_ms != o->shutdown_timeout_ms, "shutdown_timeout");
    CHG(n->log_level != o->log_level, "log_level");
    CHG(n->max_message_size != o->max_message_size, "max_message_size");
    CHG(n->pool_mode != o->pool_mode, "pool_mode");
    CHG(n->max_open_conns != o->max_open_conns, "max_open_conns");
    CHG(n->max_db_connections != o->max_db_connections, "max_db_connections");
    CHG(n->max_user_connections != o->max_user_connections, "max_user_connections");
    CHG(n->max_idle_conns != o->max_idle_conns, "max_idle_conns");
    CHG(n->min_idle_conns != o->min_idle_conns, "min_idle_conns");
    CHG(n->conn_max_lifetime_ms != o->conn_max_lifetime_ms, "conn_max_lifetime");
    CHG(n->conn_max_idle_time_ms != o->conn_max_idle_time_ms, "conn_max_idle_time");
    CHG(n->n_warm_pools != o->n_warm_pools, "warm_pools");
    CHG(n->max_prepared_statements != o->max_prepared_statements, "max_prepared_statements");
    CHG(n->pin_session_state != o->pin_session_state, "pin_session_state");
    CHG(!overrides_eq(n->db_overrides, n->n_db_overrides, o->db_overrides, o->n_db_overrides) ||
            !overrides_eq(n->user_overrides, n->n_user_overrides, o->user_overrides,
                          o->n_user_overrides),
        "[database.NAME]/[user.NAME] sections");
#undef CHG
}

/*
 * [node.NAME] sections added, removed, or with a new host, port or role (the monitor thread
 * resolves and applies them: nothing here may block on DNS), or a new weight.
 */
static void
count_node_changes(const struct cfg *n, const struct cfg *o, int *added, int *removed,
                   int *replaced, int *reweighted)
{
    *added = *removed = *replaced = *reweighted = 0;
    for (int i = 0; i < n->n_nodes; i++) {
        const struct cfg_node *x = &n->nodes[i], *was = NULL;
        for (int j = 0; j < o->n_nodes && !was; j++) {
            was = strcmp(o->nodes[j].name, x->name) == 0 ? &o->nodes[j] : NULL;
        }
        if (!was) {
            (*added)++;
        } else if (strcmp(was->host, x->host) != 0 || was->port != x->port ||
                   was->role != x->role) {
            (*replaced)++;
        } else if (was->weight != x->weight) {
            (*reweighted)++;
        }
    }
    for (int j = 0; j < o->n_nodes; j++) {
        bool found = false;
        for (int i = 0; i < n->n_nodes && !found; i++) {
            found = strcmp(o->nodes[j].name, n->nodes[i].name) == 0;
        }
        *removed += !found;
    }
}

/* Users added, removed, or with a new secret. */
static void
count_user_changes(const struct cfg *n, const struct cfg *o, int *added, int *removed, int *changed)
{
    *added = *removed = *changed = 0;
    for (int i = 0; i < n->n_users; i++) {
        const struct cfg_user *was = cfg_user_find(o, n->users[i].name);
        if (!was) {
            (*added)++;
        } else if (strcmp(was->secret, n->users[i].secret) != 0) {
            (*changed)++;
        }
    }
    for (int i = 0; i < o->n_users; i++) {
        if (!cfg_user_find(n, o->users[i].name)) {
            (*removed)++;
        }
    }
}

/* Problems come as lines joined with '\n': one log line each, as at start. */
static void
log_lines(char *err)
{
    for (char *line = err, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) {
            *nl = '\0';
        }
        log_error("%s", line);
    }
}

enum status
runtime_cap_limits(struct pool_set *s, const struct cfg *c)
{
    int n = 0;
    struct pool_cap_limit *v =
        calloc((size_t) (c->n_db_overrides + c->n_user_overrides) + 1, sizeof(*v));
    if (!v) {
        return ST_ENOMEM;
    }
    for (int i = 0; i < c->n_db_overrides; i++) {
        if (c->db_overrides[i].max_conns >= 0) {
            v[n++] = (struct pool_cap_limit){ false, c->db_overrides[i].name,
                                              c->db_overrides[i].max_conns };
        }
    }
    for (int i = 0; i < c->n_user_overrides; i++) {
        if (c->user_overrides[i].max_conns >= 0) {
            v[n++] = (struct pool_cap_limit){ true, c->user_overrides[i].name,
                                              c->user_overrides[i].max_conns };
        }
    }
    enum status st = pool_set_cap_limits(s, v, n); /* copies the names */
    free(v);
    return st;
}

int
runtime_reload(struct runtime *rt)
{
    struct cfg *cur = rt->cfg;
    if (rt->is_stopping) {
        /* Counted as refused, so that a console RELOAD waiting for the outcome gets one. */
        log_info("reload request ignored: shutting down");
        atomic_fetch_add(&rt->n_reload_failures, 1);
        return -1;
    }
    log_info("reloading the configuration from %s", cur->path);
    char err[8192];
    struct cfg *next = NULL;
    if (cfg_load(cur->path, &next, err, sizeof(err)) != 0) {
        log_lines(err);
        log_error("configuration reload refused: %s is invalid; the running configuration stays",
                  cur->path);
        atomic_fetch_add(&rt->n_reload_failures, 1);
        return -1;
    }
    /* As at start: some node must be able to take writes. */
    bool can_write = false;
    for (int i = 0; i < next->n_nodes; i++) {
        can_write |= next->nodes[i].role != CFG_ROLE_REPLICA;
    }
    if (!can_write) {
        log_error("%s:0: node: no node can serve writes (every node is role = replica)", cur->path);
        log_error("configuration reload refused: %s is invalid; the running configuration stays",
                  cur->path);
        cfg_unref(next);
        atomic_fetch_add(&rt->n_reload_failures, 1);
        return -1;
    }
    if (keep_restart_keys(next, cur) != 0) {
        log_error("configuration reload failed: out of memory; the running configuration stays");
        cfg_unref(next);
        atomic_fetch_add(&rt->n_reload_failures, 1);
        return -1;
    }
    /* Certificates and keys are read first: a file that does not load refuses the whole reload,
     * like a bad key. On success new TLS connections use them; existing ones keep theirs. */
    if (tls_reload(rt, next, err, sizeof(err)) != 0) {
        log_lines(err);
        log_error("configuration reload refused: TLS files do not load; the running "
                  "configuration stays");
        cfg_unref(next);
        atomic_fetch_add(&rt->n_reload_failures, 1);
        return -1;
    }

    struct pool_settings ps = {
        .max_open = next->max_open_conns,
        .max_idle = next->max_idle_conns,
        .min_idle = next->min_idle_conns,
        .max_db = next->max_db_connections,
        .max_user = next->max_user_connections,
        .max_lifetime_us = next->conn_max_lifetime_ms * 1000,
        .max_idle_time_us = next->conn_max_idle_time_ms * 1000,
        .connect_timeout_us = next->server_connect_timeout_ms * 1000,
        .login_retry_us = next->server_login_retry_ms * 1000,
        .reset_query = next->server_reset_query,
    };
    if (runtime_cap_limits(&rt->pools, next) != ST_OK || pool_set_apply(&rt->pools, &ps) != ST_OK) {
        log_error("configuration reload failed: out of memory; the running configuration stays");
        cfg_unref(next);
        atomic_fetch_add(&rt->n_reload_failures, 1);
        return -1;
    }
    int secrets = apply_to_pools(rt, next, cur);
    ensure_warm_pools(rt, next);
    log_set_level(next->log_level);

    struct strbuf changes = { 0 };
    describe_changes(&changes, next, cur);
    int added, removed, changed;
    count_user_changes(next, cur, &added, &removed, &changed);
    int n_added, n_removed, n_replaced, n_reweighted;
    count_node_changes(next, cur, &n_added, &n_removed, &n_replaced, &n_reweighted);

    /* Publish: other threads asking runtime_cfg_get see it now, workers at their next event. */
    pthread_mutex_lock(&rt->cfg_mu);
    rt->cfg = next;
    pthread_mutex_unlock(&rt->cfg_mu);
    for (int i = 0; i < rt->n_workers; i++) {
        worker_set_cfg(&rt->workers[i], cfg_ref(next));
    }
    /* The file wins over the admin console's SET values (they belong to the old snapshot). */
    admin_tunables_forget(&rt->admin);
    atomic_fetch_add(&rt->n_reloads, 1);
    log_info("configuration reloaded from %s; changed: %s; users: %d added, %d removed, %d with "
             "a new secret (%d pools will log in with it); nodes: %d added, %d removed, %d "
             "replaced (new host, port or role), %d with a new weight",
             next->path, changes.s && !changes.failed ? changes.s : "no [pgmux]/[pool] key", added,
             removed, changed, secrets, n_added, n_removed, n_replaced, n_reweighted);
    strbuf_fini(&changes);
    cfg_unref(cur);
    return 0;
}
