/*
 * metrics.c - see metrics.h. A deliberately small HTTP/1.1 server: one request per connection
 * (every answer carries Connection: close), GET and HEAD only, the request line and headers
 * capped at METRICS_REQ_MAX bytes, METRICS_TIMEOUT_S from accept to the last byte sent, at most
 * METRICS_MAX_CONNS connections at once (more are closed at accept). That is all a Prometheus
 * scraper, a load balancer's health check or a Kubernetes probe needs, and every limit keeps a
 * misbehaving peer from costing the main loop more than a few kilobytes.
 *
 * /readyz is 200 when pgmux accepts connections (not draining after SIGTERM, workers running)
 * and the primary is reachable: per the topology snapshot once the monitor has checked it, and
 * until then by a non-blocking TCP connect to it (at most METRICS_PROBE_TIMEOUT_S), so a pgmux
 * pointed at a dead primary never claims to be ready.
 *
 * What it does not do: keep-alive, chunked encoding, TLS, authentication. Bind it to a
 * loopback or private address (the default is 127.0.0.1).
 *
 * Thread: main only.
 */
#include "proxy/metrics.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include "common/list.h"
#include "common/log.h"
#include "common/mono.h"
#include "pool/pool.h"
#include "pool/sock.h"
#include "proxy/config.h"
#include "proxy/stats.h"
#include "proxy/topology.h"
#include "proxy/worker.h"

#define METRICS_REQ_MAX         4096
#define METRICS_MAX_CONNS       64
#define METRICS_TIMEOUT_S       5.0
#define METRICS_PROBE_TIMEOUT_S 2.0
#define METRICS_LINGER_S        1.0

struct metrics_server;

struct metrics_conn {
    struct ilist_node node; /* in srv->conns */
    struct metrics_server *srv;
    int fd;
    ev_io io;          /* read, then write */
    ev_timer timer;    /* whole-connection deadline */
    bool is_head;      /* HEAD: headers only */
    bool is_lingering; /* answered; reading what the peer still sends until it closes */
    int probe_fd;      /* /readyz's connect to the primary, -1 when none */
    ev_io probe_io;
    ev_timer probe_timer;
    size_t req_len;
    char req[METRICS_REQ_MAX];
    char *resp; /* owned: the whole response */
    size_t resp_len;
    size_t resp_sent;
};

struct metrics_server {
    struct ev_loop *loop;
    struct runtime *rt;
    int fd;
    ev_io accept_io;
    struct ilist conns;
};

/* ---- Prometheus text format ---- */

/* A label value: backslash, double quote and newline escaped (exposition format 0.0.4). */
static void
put_label(struct strbuf *b, const char *s)
{
    for (const char *p = s ? s : ""; *p; p++) {
        if (*p == '\\') {
            strbuf_appendf(b, "\\\\");
        } else if (*p == '"') {
            strbuf_appendf(b, "\\\"");
        } else if (*p == '\n') {
            strbuf_appendf(b, "\\n");
        } else {
            strbuf_appendf(b, "%c", *p);
        }
    }
}

static void
family(struct strbuf *b, const char *name, const char *type, const char *help)
{
    strbuf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Labels of one pool, escaped once per scrape: database="..",user="..",node="..". */
static char *
pool_labels(const struct pool *p)
{
    struct strbuf b = { 0 };
    strbuf_appendf(&b, "database=\"");
    put_label(&b, p->database);
    strbuf_appendf(&b, "\",user=\"");
    put_label(&b, p->user);
    strbuf_appendf(&b, "\",node=\"");
    put_label(&b, p->node->name);
    strbuf_appendf(&b, "\"");
    return strbuf_take(&b);
}

static void
hist_samples(struct strbuf *b, const char *name, const char *labels, const struct stats_hist_sum *h)
{
    uint64_t cum = 0;
    for (int i = 0; i < STATS_HIST_FINITE; i++) {
        cum += h->bucket[i];
        strbuf_appendf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels,
                       (double) stats_hist_bounds_us[i] / 1e6, (unsigned long long) cum);
    }
    strbuf_appendf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels,
                   (unsigned long long) h->count);
    strbuf_appendf(b, "%s_sum{%s} %.6f\n", name, labels, (double) h->sum_us / 1e6);
    strbuf_appendf(b, "%s_count{%s} %llu\n", name, labels, (unsigned long long) h->count);
}

struct pool_view {
    struct pool *p;
    char *labels;
    int n_open;
    int max_open;
    int n_idle;
    int n_resetting;
    struct stats_pool_sum s;
};

static const char *const role_label[] = { "unknown", "primary", "replica" };

/* The shared caps (max_db_connections, max_user_connections): what each database and user
 * holds on each node, over its pools, and its cap. Caps live until pool_set_fini, so pointers
 * taken under the registry lock stay valid, and the formatting holds no lock a worker takes. */
static void
render_caps(struct runtime *rt, struct strbuf *b)
{
    static const char *const kind[] = { "database", "user" };
    pthread_mutex_lock(&rt->pools.mu);
    int n = rt->pools.n_caps;
    const struct pool_cap **caps = n ? calloc((size_t) n, sizeof(*caps)) : NULL;
    for (int i = 0; i < n && caps; i++) {
        caps[i] = rt->pools.caps[i];
    }
    pthread_mutex_unlock(&rt->pools.mu);
    if (n && !caps) {
        b->failed = true;
        return;
    }
    for (int k = 0; k < 2; k++) {
        for (int m = 0; m < 2; m++) {
            char name[64];
            snprintf(name, sizeof(name), "pgmux_%s_server_connections%s", kind[k], m ? "_max" : "");
            family(b, name, "gauge",
                   m ? (k ? "max_user_connections of the user on the node; 0 = no cap."
                          : "max_db_connections of the database on the node; 0 = no cap.")
                     : (k ? "Server connections of the user on the node, over its databases."
                          : "Server connections of the database on the node, over its users."));
            for (int i = 0; i < n; i++) {
                const struct pool_cap *c = caps[i];
                if (c->is_user != (k == 1)) {
                    continue;
                }
                strbuf_appendf(b, "%s{%s=\"", name, kind[k]);
                put_label(b, c->name);
                strbuf_appendf(b, "\",node=\"");
                put_label(b, rt->pools.nodes[c->node_idx].name);
                strbuf_appendf(b, "\"} %d\n", m ? atomic_load(&c->max) : atomic_load(&c->n_open));
            }
        }
    }
    free(caps);
}

void
metrics_render(struct runtime *rt, struct strbuf *b)
{
    /* Pools live until pool_set_fini, so pointers taken under the registry lock stay valid. */
    pthread_mutex_lock(&rt->pools.mu);
    int n = rt->pools.n_pools;
    struct pool_view *pv = n ? calloc((size_t) n, sizeof(*pv)) : NULL;
    if (n && !pv) {
        pthread_mutex_unlock(&rt->pools.mu);
        b->failed = true;
        return;
    }
    for (int i = 0; i < n; i++) {
        pv[i].p = rt->pools.pools[i];
    }
    pthread_mutex_unlock(&rt->pools.mu);

    for (int i = 0; i < n; i++) {
        struct pool *p = pv[i].p;
        pthread_mutex_lock(&p->mu);
        pv[i].n_open = p->n_open;
        pv[i].max_open = p->set.max_open;
        pthread_mutex_unlock(&p->mu);
        pv[i].n_idle = atomic_load_explicit(&p->n_idle, memory_order_relaxed);
        pv[i].n_resetting = atomic_load_explicit(&p->n_resetting, memory_order_relaxed);
        pv[i].labels = pool_labels(p);
        if (!pv[i].labels) {
            b->failed = true;
        }
        stats_pool_sum(rt->stats, rt->n_workers, p->id, &pv[i].s);
    }
    struct stats_global_sum g;
    stats_global_sum(rt->stats, rt->n_workers, &g);
    if (b->failed) {
        goto out;
    }

    /* ---- process ---- */
    family(b, "pgmux_client_connections", "gauge",
           "Client connections open, in every state (max_client_conn counts these).");
    strbuf_appendf(b, "pgmux_client_connections %d\n",
                   atomic_load_explicit(&rt->n_clients, memory_order_relaxed));
    family(b, "pgmux_clients_accepted_total", "counter", "Client connections accepted.");
    strbuf_appendf(b, "pgmux_clients_accepted_total %llu\n",
                   (unsigned long long) g.clients_accepted);
    family(b, "pgmux_logins_total", "counter", "Client logins by result.");
    strbuf_appendf(b, "pgmux_logins_total{result=\"ok\"} %llu\n", (unsigned long long) g.logins_ok);
    strbuf_appendf(b, "pgmux_logins_total{result=\"failed\"} %llu\n",
                   (unsigned long long) g.logins_failed);
    family(b, "pgmux_auth_key_derivations_total", "counter",
           "PBKDF2 key derivations made for client logins; cached per worker, so this stays "
           "near users times workers however many logins there are.");
    strbuf_appendf(b, "pgmux_auth_key_derivations_total %llu\n",
                   (unsigned long long) g.auth_derivations);
    family(b, "pgmux_unpooled_errors_total", "counter",
           "Errors pgmux sent to sessions before they had a pool (refused at login), by "
           "SQLSTATE class.");
    for (int k = 0; k < STATS_SQLSTATE_CLASSES; k++) {
        if (g.errors_nopool[k]) {
            strbuf_appendf(b, "pgmux_unpooled_errors_total{class=\"%s\"} %llu\n",
                           stats_sqlstate_class_name(k), (unsigned long long) g.errors_nopool[k]);
        }
    }
    family(b, "pgmux_slow_queries_total", "counter",
           "Requests that took at least log_min_duration (0 while it is off).");
    strbuf_appendf(b, "pgmux_slow_queries_total %llu\n", (unsigned long long) g.slow_queries);
    family(b, "pgmux_log_lines_dropped_total", "counter",
           "Log lines dropped because the logger's queue was full.");
    strbuf_appendf(b, "pgmux_log_lines_dropped_total %llu\n", (unsigned long long) log_dropped());
    family(b, "pgmux_config_reloads_total", "counter",
           "Configuration reloads (SIGHUP, RELOAD) by result: applied, or refused (an invalid "
           "file, or a request during shutdown).");
    strbuf_appendf(b, "pgmux_config_reloads_total{result=\"applied\"} %u\n",
                   atomic_load(&rt->n_reloads));
    strbuf_appendf(b, "pgmux_config_reloads_total{result=\"refused\"} %u\n",
                   atomic_load(&rt->n_reload_failures));
    family(b, "pgmux_workers_running", "gauge", "Worker threads whose event loop runs.");
    strbuf_appendf(b, "pgmux_workers_running %d\n",
                   atomic_load_explicit(&rt->n_running, memory_order_relaxed));
    family(b, "pgmux_workers_active", "gauge",
           "Workers that keep sessions (worker_balance: the others hand theirs over between "
           "transactions; without it, every worker).");
    strbuf_appendf(b, "pgmux_workers_active %d\n",
                   atomic_load_explicit(&rt->n_active, memory_order_relaxed));
    family(b, "pgmux_spare_cpus", "gauge",
           "Idle CPU this process could still use at the last balance tick, in CPUs: idle time of "
           "the CPUs it may run on, at most what is left of its CPU quota (worker_balance).");
    strbuf_appendf(b, "pgmux_spare_cpus %.3f\n",
                   atomic_load_explicit(&rt->spare_pm, memory_order_relaxed) / 1000.0);
    family(b, "pgmux_workers_spread", "gauge",
           "1 while worker_balance spreads the load (a worker counts as busy at half "
           "worker_busy_percent because idle CPUs are spare), else 0.");
    strbuf_appendf(b, "pgmux_workers_spread %d\n",
                   atomic_load_explicit(&rt->is_spread, memory_order_relaxed) ? 1 : 0);
    family(b, "pgmux_workers_steered", "gauge",
           "Workers whose listeners get new TCP connections (worker_balance steers them to the "
           "active ones); 0 while the kernel spreads them over all by its hash.");
    strbuf_appendf(b, "pgmux_workers_steered %d\n",
                   atomic_load_explicit(&rt->steer_n, memory_order_relaxed));
    family(b, "pgmux_worker_busy_ratio", "gauge",
           "CPU time of the worker's thread over its last 250 ms tick, as a fraction of one CPU.");
    for (int i = 0; i < rt->n_workers; i++) {
        strbuf_appendf(b, "pgmux_worker_busy_ratio{worker=\"%d\"} %.3f\n", i,
                       atomic_load_explicit(&rt->workers[i].load_pm, memory_order_relaxed) /
                           1000.0);
    }
    family(b, "pgmux_worker_client_connections", "gauge",
           "Client connections on the worker, in every state.");
    for (int i = 0; i < rt->n_workers; i++) {
        strbuf_appendf(b, "pgmux_worker_client_connections{worker=\"%d\"} %lld\n", i,
                       rt->stats[i] ? (long long) atomic_load_explicit(&rt->stats[i]->g.sessions,
                                                                       memory_order_relaxed)
                                    : 0LL);
    }
    family(b, "pgmux_client_moves_total", "counter",
           "Sessions handed from one worker to another between transactions (worker_balance).");
    strbuf_appendf(b, "pgmux_client_moves_total %llu\n", (unsigned long long) g.sessions_moved);

    /* ---- pools ---- */
    family(b, "pgmux_pool_client_connections", "gauge",
           "Logged-in clients of the pool: active (holding a server connection), waiting (for "
           "one), idle (transaction pooling, between transactions).");
    for (int i = 0; i < n; i++) {
        const struct stats_pool_sum *s = &pv[i].s;
        strbuf_appendf(b, "pgmux_pool_client_connections{%s,state=\"active\"} %lld\n", pv[i].labels,
                       (long long) (s->cl_active + s->cl_setting));
        strbuf_appendf(b, "pgmux_pool_client_connections{%s,state=\"waiting\"} %lld\n",
                       pv[i].labels, (long long) s->cl_waiting);
        strbuf_appendf(b, "pgmux_pool_client_connections{%s,state=\"idle\"} %lld\n", pv[i].labels,
                       (long long) s->cl_idle);
    }
    family(b, "pgmux_pool_server_connections", "gauge",
           "Server connections of the pool by state: in_use (attached to a client), idle, "
           "resetting (running server_reset_query), opening (connecting or logging in, or "
           "held back after a cancel until the server has acted on it).");
    for (int i = 0; i < n; i++) {
        long long in_use = (long long) (pv[i].s.cl_active + pv[i].s.cl_setting);
        /* Read at slightly different moments: clamp so no state goes negative. */
        long long opening = (long long) pv[i].n_open - in_use - pv[i].n_idle - pv[i].n_resetting;
        strbuf_appendf(b, "pgmux_pool_server_connections{%s,state=\"in_use\"} %lld\n", pv[i].labels,
                       in_use);
        strbuf_appendf(b, "pgmux_pool_server_connections{%s,state=\"idle\"} %d\n", pv[i].labels,
                       pv[i].n_idle);
        strbuf_appendf(b, "pgmux_pool_server_connections{%s,state=\"resetting\"} %d\n",
                       pv[i].labels, pv[i].n_resetting);
        strbuf_appendf(b, "pgmux_pool_server_connections{%s,state=\"opening\"} %lld\n",
                       pv[i].labels, opening > 0 ? opening : 0);
    }
    family(b, "pgmux_pool_server_connections_open", "gauge",
           "Server connections of the pool in any state (never above max_open_conns).");
    for (int i = 0; i < n; i++) {
        strbuf_appendf(b, "pgmux_pool_server_connections_open{%s} %d\n", pv[i].labels,
                       pv[i].n_open);
    }
    family(b, "pgmux_pool_server_connections_max", "gauge", "max_open_conns of the pool.");
    for (int i = 0; i < n; i++) {
        strbuf_appendf(b, "pgmux_pool_server_connections_max{%s} %d\n", pv[i].labels,
                       pv[i].max_open);
    }
    render_caps(rt, b);

    struct {
        const char *name;
        const char *help;
        size_t off;
        bool is_us; /* microseconds, exported as seconds */
    } counters[] = {
        { "pgmux_pool_transactions_total",
          "Transactions finished (a ReadyForQuery with status idle after client requests).",
          offsetof(struct stats_pool_sum, xact_count), false },
        { "pgmux_pool_queries_total", "Query, Execute and FunctionCall messages relayed.",
          offsetof(struct stats_pool_sum, query_count), false },
        { "pgmux_pool_client_bytes_received_total", "Bytes received from the pool's clients.",
          offsetof(struct stats_pool_sum, bytes_in), false },
        { "pgmux_pool_client_bytes_sent_total",
          "Bytes from the server relayed to the pool's clients.",
          offsetof(struct stats_pool_sum, bytes_out), false },
        { "pgmux_pool_transaction_seconds_total",
          "Time spent in transactions, first message to the closing ReadyForQuery.",
          offsetof(struct stats_pool_sum, xact_time_us), true },
    };
    for (size_t k = 0; k < ARRAY_LEN(counters); k++) {
        family(b, counters[k].name, "counter", counters[k].help);
        for (int i = 0; i < n; i++) {
            uint64_t v =
                *(const uint64_t *) (const void *) ((const char *) &pv[i].s + counters[k].off);
            if (counters[k].is_us) {
                strbuf_appendf(b, "%s{%s} %.6f\n", counters[k].name, pv[i].labels,
                               (double) v / 1e6);
            } else {
                strbuf_appendf(b, "%s{%s} %llu\n", counters[k].name, pv[i].labels,
                               (unsigned long long) v);
            }
        }
    }
    family(b, "pgmux_pool_errors_total", "counter",
           "ErrorResponses clients of the pool received, by SQLSTATE class (first two "
           "characters) and source: server (PostgreSQL's, relayed) or pgmux (its own).");
    for (int i = 0; i < n; i++) {
        for (int src = 0; src < STATS_ERR_SOURCES; src++) {
            for (int k = 0; k < STATS_SQLSTATE_CLASSES; k++) {
                uint64_t v = pv[i].s.errors[src][k];
                if (v) {
                    strbuf_appendf(
                        b, "pgmux_pool_errors_total{%s,class=\"%s\",source=\"%s\"} %llu\n",
                        pv[i].labels, stats_sqlstate_class_name(k),
                        src == STATS_ERR_SERVER ? "server" : "pgmux", (unsigned long long) v);
                }
            }
        }
    }
    family(b, "pgmux_pool_query_duration_seconds", "histogram",
           "Request latency: a client's first message of a request to the server's "
           "ReadyForQuery.");
    for (int i = 0; i < n; i++) {
        hist_samples(b, "pgmux_pool_query_duration_seconds", pv[i].labels, &pv[i].s.query_latency);
    }
    family(b, "pgmux_pool_wait_duration_seconds", "histogram",
           "Time clients waited for a server connection (including opening one).");
    for (int i = 0; i < n; i++) {
        hist_samples(b, "pgmux_pool_wait_duration_seconds", pv[i].labels, &pv[i].s.wait);
    }

    /* ---- nodes ---- */
    struct topo_snapshot *ts = topo_get(&rt->topology);
    int n_nodes = ts ? ts->n_nodes : rt->n_nodes;
    if (n_nodes > STATS_MAX_NODES) {
        n_nodes = STATS_MAX_NODES;
    }
    char **nl = n_nodes ? calloc((size_t) n_nodes, sizeof(*nl)) : NULL;
    if (n_nodes && !nl) {
        b->failed = true;
        topo_put(ts);
        goto out;
    }
    for (int i = 0; i < n_nodes; i++) {
        struct strbuf lb = { 0 };
        strbuf_appendf(&lb, "node=\"");
        put_label(&lb, rt->nodes[i].name);
        strbuf_appendf(&lb, "\"");
        nl[i] = strbuf_take(&lb);
        if (!nl[i]) {
            b->failed = true;
        }
    }
    /* A [node.NAME] section replaced by a reload leaves its old node removed under the same
     * name: one series per name, the newest node's. */
    bool shadowed[STATS_MAX_NODES] = { false };
    for (int i = 0; i < n_nodes; i++) {
        for (int j = i + 1; j < n_nodes && !shadowed[i]; j++) {
            shadowed[i] = strcmp(rt->nodes[i].name, rt->nodes[j].name) == 0;
        }
    }
    if (!b->failed) {
        family(b, "pgmux_node_up", "gauge",
               "1 when the node answered its last health check and the last connection attempt "
               "to it succeeded.");
        for (int i = 0; i < n_nodes; i++) {
            if (shadowed[i]) {
                continue;
            }
            bool healthy = !ts || ts->nodes[i].is_healthy;
            bool up = atomic_load_explicit(&rt->nodes[i].is_up, memory_order_relaxed) != 0;
            strbuf_appendf(b, "pgmux_node_up{%s} %d\n", nl[i], healthy && up);
        }
        family(b, "pgmux_node_role", "gauge",
               "1 for the node's current role (primary, replica or unknown), 0 for the others.");
        for (int i = 0; i < n_nodes; i++) {
            if (shadowed[i]) {
                continue;
            }
            int role = ts ? ts->nodes[i].role
                          : atomic_load_explicit(&rt->nodes[i].role, memory_order_relaxed);
            for (int r = 0; r < 3; r++) {
                strbuf_appendf(b, "pgmux_node_role{%s,role=\"%s\"} %d\n", nl[i], role_label[r],
                               role == r);
            }
        }
        family(b, "pgmux_node_is_write_target", "gauge", "1 for the node writes currently go to.");
        for (int i = 0; i < n_nodes; i++) {
            if (shadowed[i]) {
                continue;
            }
            strbuf_appendf(b, "pgmux_node_is_write_target{%s} %d\n", nl[i],
                           ts ? ts->primary == i : rt->primary_node == i);
        }
        family(b, "pgmux_node_replication_lag_bytes", "gauge",
               "Replica: WAL bytes between the primary's position and this node's replay; 0 on "
               "a primary or when unknown.");
        for (int i = 0; i < n_nodes; i++) {
            if (shadowed[i]) {
                continue;
            }
            strbuf_appendf(b, "pgmux_node_replication_lag_bytes{%s} %llu\n", nl[i],
                           (unsigned long long) (ts ? ts->nodes[i].lag_bytes : 0));
        }
        family(b, "pgmux_node_replication_lag_seconds", "gauge",
               "Replica: replay delay while behind the primary; 0 when caught up or unknown.");
        for (int i = 0; i < n_nodes; i++) {
            if (shadowed[i]) {
                continue;
            }
            strbuf_appendf(b, "pgmux_node_replication_lag_seconds{%s} %.3f\n", nl[i],
                           ts ? (double) ts->nodes[i].lag_ms / 1000.0 : 0.0);
        }
        family(b, "pgmux_node_server_connections", "gauge",
               "Server connections open to the node, all pools.");
        for (int i = 0; i < n_nodes; i++) {
            if (shadowed[i]) {
                continue;
            }
            long long sum = 0;
            for (int k = 0; k < n; k++) {
                if (pv[k].p->node_idx == i) {
                    sum += pv[k].n_open;
                }
            }
            strbuf_appendf(b, "pgmux_node_server_connections{%s} %lld\n", nl[i], sum);
        }
        family(b, "pgmux_node_routed_total", "counter",
               "Routing decisions that picked the node, by the role the router asked for.");
        for (int i = 0; i < n_nodes; i++) {
            if (shadowed[i]) {
                continue;
            }
            strbuf_appendf(b, "pgmux_node_routed_total{%s,target=\"primary\"} %llu\n", nl[i],
                           (unsigned long long) g.routed[i][STATS_ROUTE_PRIMARY]);
            strbuf_appendf(b, "pgmux_node_routed_total{%s,target=\"replica\"} %llu\n", nl[i],
                           (unsigned long long) g.routed[i][STATS_ROUTE_REPLICA]);
        }
    }
    for (int i = 0; i < n_nodes; i++) {
        free(nl[i]);
    }
    free(nl);
    topo_put(ts);

out:
    for (int i = 0; i < n; i++) {
        free(pv[i].labels);
    }
    free(pv);
}

/* ---- HTTP ---- */

static void conn_io_cb(EV_P_ ev_io *io, int revents);

static void
conn_close(struct metrics_conn *mc)
{
    struct ev_loop *loop = mc->srv->loop;
    ev_io_stop(loop, &mc->io);
    ev_timer_stop(loop, &mc->timer);
    if (mc->probe_fd >= 0) {
        ev_io_stop(loop, &mc->probe_io);
        ev_timer_stop(loop, &mc->probe_timer);
        close(mc->probe_fd);
    }
    close(mc->fd);
    ilist_remove(&mc->srv->conns, &mc->node);
    free(mc->resp);
    free(mc);
}

static void
conn_write(struct metrics_conn *mc)
{
    while (mc->resp_sent < mc->resp_len) {
        ssize_t w =
            send(mc->fd, mc->resp + mc->resp_sent, mc->resp_len - mc->resp_sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return; /* the write watcher calls again */
        }
        if (w <= 0) {
            break;
        }
        mc->resp_sent += (size_t) w;
    }
    if (mc->resp_sent < mc->resp_len) {
        conn_close(mc); /* the peer is gone */
        return;
    }
    /* Closing with unread request bytes (an oversized request, a body) would send a reset
     * that can destroy the answer before the peer reads it. Half-close instead, and read
     * until the peer closes too, for at most METRICS_LINGER_S. */
    shutdown(mc->fd, SHUT_WR);
    mc->is_lingering = true;
    struct ev_loop *loop = mc->srv->loop;
    ev_io_stop(loop, &mc->io);
    ev_io_set(&mc->io, mc->fd, EV_READ);
    ev_io_start(loop, &mc->io);
    ev_timer_stop(loop, &mc->timer);
    ev_timer_set(&mc->timer, METRICS_LINGER_S, 0.);
    ev_timer_start(loop, &mc->timer);
}

static void
conn_linger(struct metrics_conn *mc)
{
    char sink[4096];
    /* Bounded per wake-up: a peer that keeps sending must not hold the main loop. */
    for (int i = 0; i < 16; i++) {
        ssize_t r = recv(mc->fd, sink, sizeof(sink), 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (r <= 0) {
            conn_close(mc);
            return;
        }
    }
}

/* Queue the whole response and start writing. body may be NULL (HEAD, or no body). */
static void
conn_respond(struct metrics_conn *mc, int code, const char *reason, const char *ctype,
             const char *extra_headers, const char *body, size_t body_len)
{
    struct strbuf b = { 0 };
    strbuf_appendf(&b,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                   code, reason, ctype, body_len, extra_headers ? extra_headers : "");
    size_t head_len = b.len;
    char *resp = strbuf_take(&b);
    if (!resp) {
        conn_close(mc);
        return;
    }
    if (body && body_len && !mc->is_head) {
        char *nr = realloc(resp, head_len + body_len);
        if (!nr) {
            free(resp);
            conn_close(mc);
            return;
        }
        resp = nr;
        memcpy(resp + head_len, body, body_len);
        mc->resp_len = head_len + body_len;
    } else {
        mc->resp_len = head_len;
    }
    mc->resp = resp;
    mc->resp_sent = 0;
    ev_io_stop(mc->srv->loop, &mc->io);
    ev_io_set(&mc->io, mc->fd, EV_WRITE);
    ev_io_start(mc->srv->loop, &mc->io);
    conn_write(mc);
}

static void
conn_text(struct metrics_conn *mc, int code, const char *reason, const char *text)
{
    conn_respond(mc, code, reason, "text/plain; charset=utf-8", NULL, text, strlen(text));
}

static void
respond_ready(struct metrics_conn *mc, bool ready, const char *why)
{
    char body[200];
    snprintf(body, sizeof(body), "%s\n", why);
    conn_text(mc, ready ? 200 : 503, ready ? "OK" : "Service Unavailable", body);
}

static void
probe_finish(struct metrics_conn *mc, bool ok)
{
    struct ev_loop *loop = mc->srv->loop;
    ev_io_stop(loop, &mc->probe_io);
    ev_timer_stop(loop, &mc->probe_timer);
    close(mc->probe_fd);
    mc->probe_fd = -1;
    respond_ready(mc, ok, ok ? "ready" : "not ready: the primary does not accept connections");
}

static void
probe_io_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct metrics_conn *mc = io->data;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(mc->probe_fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
    }
    probe_finish(mc, err == 0);
}

static void
probe_timer_cb(EV_P_ ev_timer *t, int revents)
{
    (void) loop;
    (void) revents;
    probe_finish(t->data, false);
}

/* Is there a primary that takes connections? See the file comment. */
static void
serve_readyz(struct metrics_conn *mc)
{
    struct runtime *rt = mc->srv->rt;
    if (rt->is_stopping) {
        respond_ready(mc, false, "not ready: shutting down");
        return;
    }
    if (atomic_load(&rt->n_running) < rt->n_workers) {
        respond_ready(mc, false, "not ready: workers are not all running");
        return;
    }
    struct topo_snapshot *ts = topo_get(&rt->topology);
    int primary = ts ? ts->primary : rt->primary_node;
    bool checked = ts && primary >= 0 && ts->nodes[primary].checked_at_us != 0;
    bool healthy = ts && primary >= 0 && ts->nodes[primary].is_healthy &&
                   !ts->nodes[primary].is_removed && !ts->nodes[primary].is_fenced;
    topo_put(ts);
    if (primary < 0) {
        respond_ready(mc, false, "not ready: no primary is known");
        return;
    }
    if (checked) {
        respond_ready(mc, healthy,
                      healthy ? "ready" : "not ready: the primary failed its health check");
        return;
    }
    /* Not checked by the monitor yet: find out ourselves, without blocking the loop. */
    const struct pool_node *pn = &rt->nodes[primary];
    int fd = socket(pn->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        respond_ready(mc, false, "not ready: cannot create a socket");
        return;
    }
    if (connect(fd, (const struct sockaddr *) &pn->addr, pn->addr_len) == 0) {
        close(fd);
        respond_ready(mc, true, "ready");
        return;
    }
    if (errno != EINPROGRESS) {
        close(fd);
        respond_ready(mc, false, "not ready: the primary does not accept connections");
        return;
    }
    mc->probe_fd = fd;
    ev_io_stop(mc->srv->loop, &mc->io); /* nothing more is read from the HTTP client */
    ev_io_init(&mc->probe_io, probe_io_cb, fd, EV_WRITE);
    mc->probe_io.data = mc;
    ev_io_start(mc->srv->loop, &mc->probe_io);
    ev_timer_init(&mc->probe_timer, probe_timer_cb, METRICS_PROBE_TIMEOUT_S, 0.);
    mc->probe_timer.data = mc;
    ev_timer_start(mc->srv->loop, &mc->probe_timer);
}

static void
serve_metrics(struct metrics_conn *mc)
{
    struct strbuf b = { 0 };
    metrics_render(mc->srv->rt, &b);
    if (b.failed) {
        strbuf_fini(&b);
        conn_text(mc, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    conn_respond(mc, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL, b.s, b.len);
    strbuf_fini(&b);
}

/* The request line and headers are in mc->req[0..req_len); end is where the headers end. */
static void
conn_dispatch(struct metrics_conn *mc)
{
    char *eol = memchr(mc->req, '\n', mc->req_len);
    if (!eol) {
        conn_text(mc, 400, "Bad Request", "bad request\n");
        return;
    }
    *eol = '\0';
    if (eol > mc->req && eol[-1] == '\r') {
        eol[-1] = '\0';
    }
    /* METHOD SP request-target SP HTTP-version, exactly (RFC 9112 section 3). */
    char *method = mc->req;
    char *sp1 = strchr(method, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || sp1 == method || sp2 == sp1 + 1) {
        conn_text(mc, 400, "Bad Request", "bad request line\n");
        return;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    char *target = sp1 + 1;
    const char *version = sp2 + 1;
    if (strcmp(version, "HTTP/1.1") != 0 && strcmp(version, "HTTP/1.0") != 0) {
        conn_text(mc, 505, "HTTP Version Not Supported", "only HTTP/1.0 and HTTP/1.1\n");
        return;
    }
    mc->is_head = strcmp(method, "HEAD") == 0;
    if (!mc->is_head && strcmp(method, "GET") != 0) {
        static const char body[] = "only GET and HEAD\n";
        conn_respond(mc, 405, "Method Not Allowed", "text/plain; charset=utf-8",
                     "Allow: GET, HEAD\r\n", body, sizeof(body) - 1);
        return;
    }
    char *q = strchr(target, '?');
    if (q) {
        *q = '\0';
    }
    if (strcmp(target, "/metrics") == 0) {
        serve_metrics(mc);
    } else if (strcmp(target, "/healthz") == 0) {
        conn_text(mc, 200, "OK", "ok\n");
    } else if (strcmp(target, "/readyz") == 0) {
        serve_readyz(mc);
    } else {
        conn_text(mc, 404, "Not Found", "not found: try /metrics, /healthz or /readyz\n");
    }
}

static bool
headers_complete(const char *p, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (p[i] == '\n' &&
            (p[i + 1] == '\n' || (p[i + 1] == '\r' && i + 2 < len && p[i + 2] == '\n'))) {
            return true;
        }
    }
    return false;
}

static void
conn_read(struct metrics_conn *mc)
{
    for (;;) {
        size_t room = sizeof(mc->req) - mc->req_len;
        if (room == 0) {
            conn_text(mc, 431, "Request Header Fields Too Large", "request too large\n");
            return;
        }
        ssize_t r = recv(mc->fd, mc->req + mc->req_len, room, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (r <= 0) {
            conn_close(mc);
            return;
        }
        mc->req_len += (size_t) r;
        if (headers_complete(mc->req, mc->req_len)) {
            conn_dispatch(mc);
            return;
        }
    }
}

static void
conn_io_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    struct metrics_conn *mc = io->data;
    if (mc->is_lingering) {
        conn_linger(mc);
        return;
    }
    if (mc->resp) {
        if (revents & EV_WRITE) {
            conn_write(mc);
        }
        return;
    }
    conn_read(mc);
}

static void
conn_timer_cb(EV_P_ ev_timer *t, int revents)
{
    (void) loop;
    (void) revents;
    conn_close(t->data); /* too slow to ask, or to read the answer */
}

static void
accept_cb(EV_P_ ev_io *io, int revents)
{
    (void) revents;
    struct metrics_server *srv = io->data;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR && e != ECONNABORTED) {
                log_warning("metrics: accept failed: %s", strerror(e));
            }
            return;
        }
        if (srv->conns.n >= METRICS_MAX_CONNS) {
            close(fd);
            continue;
        }
        struct metrics_conn *mc = calloc(1, sizeof(*mc));
        if (!mc) {
            close(fd);
            continue;
        }
        mc->srv = srv;
        mc->fd = fd;
        mc->probe_fd = -1;
        ilist_node_init(&mc->node);
        ilist_push_tail(&srv->conns, &mc->node);
        ev_io_init(&mc->io, conn_io_cb, fd, EV_READ);
        mc->io.data = mc;
        ev_io_start(EV_A, &mc->io);
        ev_timer_init(&mc->timer, conn_timer_cb, METRICS_TIMEOUT_S, 0.);
        mc->timer.data = mc;
        ev_timer_start(EV_A, &mc->timer);
    }
}

struct metrics_server *
metrics_start(struct ev_loop *loop, struct runtime *rt, const char *addr, int port)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    const char *host = strcmp(addr, "*") == 0 ? NULL : addr;
    if (!host) {
        hints.ai_family = AF_INET6; /* dual-stack socket takes IPv4 too */
    }
    char ports[16];
    snprintf(ports, sizeof(ports), "%d", port);
    int rc = getaddrinfo(host, ports, &hints, &res);
    if (rc != 0 || !res) {
        log_fatal("cannot resolve metrics_addr \"%s\": %s", addr, gai_strerror(rc));
        return NULL;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_fatal("metrics: socket: %s", strerror(errno));
        freeaddrinfo(res);
        return NULL;
    }
    int one = 1, zero = 0;
    (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (res->ai_family == AF_INET6 && !host) {
        (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        log_fatal("cannot listen on metrics_addr %s port %d: %s", addr, port, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return NULL;
    }
    freeaddrinfo(res);
    struct metrics_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        close(fd);
        return NULL;
    }
    srv->loop = loop;
    srv->rt = rt;
    srv->fd = fd;
    ilist_init(&srv->conns);
    ev_io_init(&srv->accept_io, accept_cb, fd, EV_READ);
    srv->accept_io.data = srv;
    ev_io_start(loop, &srv->accept_io);
    log_info("metrics endpoint on http://%s:%d/metrics (also /healthz, /readyz)", addr, port);
    return srv;
}

void
metrics_stop(struct metrics_server *srv)
{
    if (!srv) {
        return;
    }
    ev_io_stop(srv->loop, &srv->accept_io);
    close(srv->fd);
    struct ilist_node *it;
    while ((it = ilist_first(&srv->conns)) != NULL) {
        conn_close(CONTAINER_OF(it, struct metrics_conn, node));
    }
    free(srv);
}
