/*
 * main.c - pgmux's entry point: arguments, configuration, resolving nodes, listening sockets,
 * starting workers, signals, and an orderly exit. The main thread runs libev's default loop for
 * signals only; all client and server traffic lives on the workers (CONVENTIONS 6.1).
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "pool/pool.h"
#include "proxy/admin.h"
#include "proxy/authq.h"
#include "proxy/client.h"
#include "proxy/config.h"
#include "proxy/iobatch.h"
#include "proxy/metrics.h"
#include "proxy/tls.h"
#include "proxy/runtime.h"
#include "proxy/monitor.h"
#include "proxy/topology.h"
#include "proxy/version.h"
#include "proxy/worker.h"

static struct runtime rt;

/* Seconds the kernel may hold a silent new connection before accepting it (TCP_DEFER_ACCEPT). */
#define MAIN_DEFER_ACCEPT_S 10

static void
usage(FILE *f)
{
    fprintf(f, "usage: pgmux [-c FILE] [--check]\n"
               "  -c, --config FILE  configuration file (default: proxy.ini)\n"
               "      --check        validate the configuration and exit (status 2 if invalid)\n"
               "  -V, --version      print the version and exit\n"
               "  -h, --help         this text\n");
}

static int
resolve_node(struct pool_node *n, const struct cfg_node *cn, const char *path)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof(port), "%d", cn->port);
    int rc = getaddrinfo(cn->host, port, &hints, &res);
    if (rc != 0 || !res) {
        fprintf(stderr, "%s:%d: host: cannot resolve \"%s\": %s\n", path, cn->line, cn->host,
                gai_strerror(rc));
        return -1;
    }
    /* TODO: every address of a name becomes a node, re-resolved every dns_ttl (#4). */
    memcpy(&n->addr, res->ai_addr, res->ai_addrlen);
    n->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    n->name = cn->name;
    n->host = cn->host;
    n->port = cn->port;
    atomic_init(&n->role, cn->role == CFG_ROLE_REPLICA   ? POOL_ROLE_REPLICA
                          : cn->role == CFG_ROLE_PRIMARY ? POOL_ROLE_PRIMARY
                                                         : POOL_ROLE_UNKNOWN);
    atomic_init(&n->is_up, 1);
    atomic_init(&n->down_until_us, 0);
    atomic_init(&n->is_removed, 0);
    return 0;
}

/* The first snapshot, before any worker or the monitor runs: declared roles, `auto` nodes
 * unknown, every node presumed healthy until checked. */
static int
publish_initial_topology(struct runtime *r)
{
    topo_init(&r->topology);
    struct topo_snapshot *s = topo_snapshot_new();
    if (!s) {
        return -1;
    }
    s->n_nodes = r->n_nodes;
    s->primary = r->primary_node;
    for (int i = 0; i < r->n_nodes; i++) {
        struct topo_node *tn = &s->nodes[i];
        tn->idx = i;
        tn->role = atomic_load(&r->nodes[i].role);
        tn->is_healthy = true;
        tn->weight = r->cfg->nodes[i].weight;
    }
    topo_publish(&r->topology, s);
    return 0;
}

static int
open_listener(const struct cfg *cfg)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    const char *host = strcmp(cfg->listen_addr, "*") == 0 ? NULL : cfg->listen_addr;
    if (!host) {
        hints.ai_family = AF_INET6; /* dual-stack socket takes IPv4 too */
    }
    char port[16];
    snprintf(port, sizeof(port), "%d", cfg->listen_port);
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res) {
        log_fatal("cannot resolve listen_addr \"%s\": %s", cfg->listen_addr, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_fatal("socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1, zero = 0;
    (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* One listener per worker on the same port; also lets a new pgmux start beside a draining
     * old one. */
    (void) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (res->ai_family == AF_INET6 && !host) {
        (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    /* Linux copies these to every accepted socket, so a login costs no setsockopt of its own:
     * Nagle would only delay messages that are each complete, and keepalive finds clients that
     * vanished without a FIN. */
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    (void) setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
#ifdef TCP_DEFER_ACCEPT
    /* A PostgreSQL client always speaks first (SSLRequest or startup packet), so the kernel
     * may hold a connection until its first bytes are there: the worker then wakes once per
     * login for accept and the first read together, and a port probe that sends nothing is
     * never accepted at all. A client still silent after this long is accepted anyway, and
     * client_login_timeout takes over. */
    int defer_s = MAIN_DEFER_ACCEPT_S;
    (void) setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_s, sizeof(defer_s));
#endif
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        log_fatal("cannot listen on %s:%d: %s", cfg->listen_addr, cfg->listen_port,
                  strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

/*
 * The Unix-domain listener (unix_socket_dir): one socket that every worker accepts from. A path
 * can be bound only once, so AF_UNIX has no SO_REUSEPORT-style listener per worker; each worker
 * watches the shared socket through a private epoll set with EPOLLEXCLUSIVE (worker.c), so a
 * new connection wakes one worker instead of all of them.
 */
static struct {
    int fd;
    char path[sizeof(((struct sockaddr_un *) NULL)->sun_path)];
    dev_t dev; /* of the socket file we bound: removed at exit only while it is still ours */
    ino_t ino;
} unix_listener = { .fd = -1 };

/* Whether something accepts on the socket file at path (a stale file from a crash does not). */
static bool
unix_path_is_live(const struct sockaddr_un *sun)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return true; /* cannot tell: do not remove it */
    }
    int rc = connect(fd, (const struct sockaddr *) sun, sizeof(*sun));
    int e = errno;
    close(fd);
    /* EAGAIN: a listener whose backlog is full is alive too. */
    return rc == 0 || (e != ECONNREFUSED && e != ENOENT);
}

static int
open_unix_listener(const struct cfg *cfg)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    /* cfg.c checked that the directory plus ".s.PGSQL.65535" fits. */
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%d", cfg->unix_socket_dir,
             cfg->listen_port);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_fatal("socket(AF_UNIX): %s", strerror(errno));
        return -1;
    }
    int rc = bind(fd, (struct sockaddr *) &sun, sizeof(sun));
    if (rc < 0 && errno == EADDRINUSE) {
        /* A file left by a pgmux that crashed is replaced; one that another process still
         * accepts on, or that is no socket at all, is left alone. */
        struct stat st;
        if (lstat(sun.sun_path, &st) == 0 && S_ISSOCK(st.st_mode) && !unix_path_is_live(&sun)) {
            log_warning("removing stale Unix socket %s (nothing listens on it)", sun.sun_path);
            (void) unlink(sun.sun_path);
            rc = bind(fd, (struct sockaddr *) &sun, sizeof(sun));
        } else {
            errno = EADDRINUSE;
        }
    }
    if (rc < 0) {
        log_fatal("cannot listen on Unix socket %s: %s", sun.sun_path, strerror(errno));
        close(fd);
        return -1;
    }
    struct stat st;
    if (chmod(sun.sun_path, (mode_t) cfg->unix_socket_mode) < 0 || listen(fd, 4096) < 0 ||
        stat(sun.sun_path, &st) < 0) {
        log_fatal("cannot listen on Unix socket %s: %s", sun.sun_path, strerror(errno));
        (void) unlink(sun.sun_path);
        close(fd);
        return -1;
    }
    unix_listener.fd = fd;
    unix_listener.dev = st.st_dev;
    unix_listener.ino = st.st_ino;
    memcpy(unix_listener.path, sun.sun_path, sizeof(unix_listener.path));
    return fd;
}

/* Remove our socket file, so that no new client finds it and a successor may bind the name. */
static void
unlink_unix_listener(void)
{
    struct stat st;
    if (unix_listener.path[0] != '\0' && lstat(unix_listener.path, &st) == 0 &&
        st.st_dev == unix_listener.dev && st.st_ino == unix_listener.ino) {
        (void) unlink(unix_listener.path);
    }
    unix_listener.path[0] = '\0';
}

/* SIGINT: close everything now. */
static void
stop_cb(EV_P_ ev_signal *s, int revents)
{
    (void) loop;
    (void) revents;
    log_info("received signal %d, shutting down now", s->signum);
    rt.is_stopping = true;
    worker_steer_stop(&rt);
    for (int i = 0; i < rt.n_workers; i++) {
        worker_stop(&rt.workers[i]);
    }
}

/*
 * Whether closing our listeners may reset connections still queued in them: the kernel moves
 * them to another SO_REUSEPORT listener of the port only with net.ipv4.tcp_migrate_req = 1
 * (Linux 5.14 and later). A file read on the main thread, once per SIGTERM.
 */
static void
warn_unless_migrate_req(void)
{
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_migrate_req", "r");
    int v = -1;
    if (f) {
        if (fscanf(f, "%d", &v) != 1) {
            v = -1;
        }
        fclose(f);
    }
    if (v != 1) {
        log_warning("net.ipv4.tcp_migrate_req is %s: connections queued on the listening socket "
                    "when it closes may be reset instead of going to a new pgmux on the same "
                    "port (see README, \"Zero-downtime restart\")",
                    v == 0 ? "0" : "not available");
    }
}

/* SIGTERM: stop accepting, let running transactions finish up to shutdown_timeout. */
static void
drain_cb(EV_P_ ev_signal *s, int revents)
{
    (void) loop;
    (void) revents;
    int64_t timeout_ms =
        admin_tunable(&rt.admin, rt.cfg, ADMIN_TUN_SHUTDOWN_TIMEOUT, rt.cfg->shutdown_timeout_ms);
    log_info("received signal %d, shutting down once running transactions finish (at most %lld "
             "ms)",
             s->signum, (long long) timeout_ms);
    if (!rt.is_stopping) {
        warn_unless_migrate_req();
    }
    rt.is_stopping = true;
    /* The name goes at once, so a new pgmux can take it over while this one drains; the
     * workers accept what is already queued before they stop watching the socket. */
    unlink_unix_listener();
    worker_steer_stop(&rt);
    for (int i = 0; i < rt.n_workers; i++) {
        worker_drain(&rt.workers[i], timeout_ms * 1000);
    }
}

static void
workers_done_cb(EV_P_ ev_async *a, int revents)
{
    (void) a;
    (void) revents;
    if (atomic_load(&rt.n_running) == 0) {
        ev_break(EV_A, EVBREAK_ALL);
    }
}

/* SIGHUP: the same path as the console's RELOAD. */
static void
hup_cb(EV_P_ ev_signal *s, int revents)
{
    (void) loop;
    (void) s;
    (void) revents;
    runtime_request_reload(&rt);
}

int
main(int argc, char **argv)
{
    const char *path = "proxy.ini";
    bool check_only = false;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "check", no_argument, NULL, 'k' },
        { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            check_only = true;
            break;
        case 'V':
            printf("pgmux %s\n", PGMUX_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }

    char err[8192];
    struct cfg *cfg = NULL;
    if (cfg_load(path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    memset(&rt, 0, sizeof(rt));
    /* rt.cfg is the current snapshot and changes with reloads; cfg stays referenced until exit
     * because rt.nodes borrows its node names and hosts. */
    rt.cfg = cfg_ref(cfg);
    rt.n_nodes = cfg->n_nodes;
    /* Fixed capacity: the monitor appends the extra addresses of a name here, and pools keep
     * pointers into it, so it is never reallocated. */
    rt.nodes = calloc(TOPO_MAX_NODES, sizeof(*rt.nodes));
    if (!rt.nodes) {
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < cfg->n_nodes; i++) {
        bad |= resolve_node(&rt.nodes[i], &cfg->nodes[i], path) != 0;
    }
    if (bad) {
        return 2;
    }
    /* Certificates and keys are read now, so --check catches a bad one too. */
    if (tls_init(&rt.tls) != 0) {
        fprintf(stderr, "cannot initialize TLS\n");
        return 1;
    }
    if (tls_load(&rt.tls, cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (check_only) {
        printf("%s: configuration is valid\n", path);
        tls_fini(&rt.tls);
        cfg_unref(rt.cfg);
        cfg_unref(cfg);
        free(rt.nodes);
        return 0;
    }

    log_set_level(cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    /* The watchers go in before any thread starts or any socket listens: whoever sees the port
     * accept may send SIGHUP or SIGTERM at once, and a signal without a handler would end the
     * process. libev holds a signal that comes early until the loop runs. */
    struct ev_loop *loop = ev_default_loop(0);
    ev_signal sigint, sigterm, sighup;
    ev_signal_init(&sigint, stop_cb, SIGINT);
    ev_signal_init(&sigterm, drain_cb, SIGTERM);
    ev_signal_init(&sighup, hup_cb, SIGHUP);
    ev_signal_start(loop, &sigint);
    ev_signal_start(loop, &sigterm);
    ev_signal_start(loop, &sighup);

    /* Until roles are discovered at run time (#4), sessions go to the node declared primary,
     * else to the first node that is not declared a replica. */
    rt.primary_node = -1;
    for (int i = 0; i < cfg->n_nodes && rt.primary_node < 0; i++) {
        if (cfg->nodes[i].role == CFG_ROLE_PRIMARY) {
            rt.primary_node = i;
        }
    }
    for (int i = 0; i < cfg->n_nodes && rt.primary_node < 0; i++) {
        if (cfg->nodes[i].role == CFG_ROLE_AUTO) {
            rt.primary_node = i;
        }
    }
    if (rt.primary_node < 0) {
        fprintf(stderr, "%s:0: node: no node can serve writes (every node is role = replica)\n",
                path);
        return 2;
    }
    if (admin_shared_init(&rt.admin) != 0) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    if (peers_init(&rt.peers) != 0 || publish_initial_topology(&rt) != 0) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    if (RAND_bytes(rt.mock_key, sizeof(rt.mock_key)) != 1) {
        fprintf(stderr, "random number generator failed\n");
        return 1;
    }

    rt.n_workers = cfg->workers > WORKER_MAX ? WORKER_MAX : cfg->workers;
    /* worker_balance starts on one worker: the load adds the others (balance.h). */
    atomic_init(&rt.n_active, cfg->worker_balance ? 1 : rt.n_workers);
    struct pool_settings ps = {
        .max_open = cfg->max_open_conns,
        .max_idle = cfg->max_idle_conns,
        .min_idle = cfg->min_idle_conns,
        .max_db = cfg->max_db_connections,
        .max_user = cfg->max_user_connections,
        .max_lifetime_us = cfg->conn_max_lifetime_ms * 1000,
        .max_idle_time_us = cfg->conn_max_idle_time_ms * 1000,
        .connect_timeout_us = cfg->server_connect_timeout_ms * 1000,
        .login_retry_us = cfg->server_login_retry_ms * 1000,
        .reset_query = cfg->server_reset_query,
    };
    if (pool_set_init(&rt.pools, rt.nodes, rt.n_nodes, rt.n_workers, &ps) != 0) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    if (runtime_cap_limits(&rt.pools, cfg) != ST_OK) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    rt.pools.tls_get = tls_server_ctx;
    rt.pools.tls_arg = &rt.tls;
    if (cfg->log_destination == CFG_LOG_SYSLOG &&
        log_use_syslog(cfg->syslog_ident, cfg->syslog_facility, cfg->syslog_socket) != 0) {
        fprintf(stderr, "%s:0: syslog_socket: path too long\n", path);
        return 2;
    }
    if (log_start() != 0) {
        fprintf(stderr, "cannot start the logger thread\n");
        return 1;
    }
    /* Started whatever the configuration says, so a reload that sets auth_user finds it. */
    if (authq_start(&rt.authq, client_on_authq) != 0) {
        log_fatal("cannot start the auth_query thread");
        log_stop();
        return 1;
    }

    /* Before the listeners open: the first round of checks decides where the first clients go
     * (a client whose connection the kernel accepts early waits for it in the backlog). */
    struct monitor *mon = NULL;
    if (monitor_start(&rt, &mon) != 0) {
        log_fatal("cannot start the topology monitor");
        log_stop();
        return 1;
    }

    rt.workers = calloc((size_t) rt.n_workers, sizeof(*rt.workers));
    rt.stats = calloc((size_t) rt.n_workers, sizeof(*rt.stats));
    if (!rt.workers || !rt.stats) {
        return 1;
    }
    /* The monitoring endpoint listens before the client port does, so whoever sees pgmux
     * accept clients can also scrape it (and a port conflict stops pgmux before it serves). */
    struct metrics_server *metrics = NULL;
    if (cfg->metrics_port != 0) {
        metrics = metrics_start(loop, &rt, cfg->metrics_addr, cfg->metrics_port);
        if (!metrics) {
            log_stop();
            return 1;
        }
    }
    if (cfg->unix_socket_dir && open_unix_listener(cfg) < 0) {
        log_stop();
        return 1;
    }
    pthread_mutex_init(&rt.steer_mu, NULL);
    for (int i = 0; i < rt.n_workers; i++) {
        int fd = open_listener(cfg);
        if (fd < 0 || worker_init(&rt.workers[i], i, &rt, fd) != 0 ||
            (unix_listener.fd >= 0 && worker_listen_unix(&rt.workers[i], unix_listener.fd) != 0)) {
            log_fatal("cannot start worker %d", i);
            unlink_unix_listener();
            log_stop();
            return 1;
        }
    }
    worker_steer_init(&rt, cfg);
    /* Chosen once at start: every worker runs the same engine, or all fall back to epoll. */
    const char *engine = "epoll";
    if (cfg->io_engine != CFG_IO_EPOLL) {
        const char *why = NULL;
        bool batched = true;
        for (int i = 0; i < rt.n_workers && batched; i++) {
            batched = iobatch_init(&rt.workers[i], cfg->io_engine, &why);
        }
        if (batched) {
            engine = "io_uring";
        } else {
            for (int i = 0; i < rt.n_workers; i++) {
                iobatch_fini(&rt.workers[i]);
            }
            log_warning("io_engine %s: io_uring is not available (%s); using epoll",
                        cfg->io_engine == CFG_IO_AUTO ? "auto" : "io_uring", why ? why : "?");
        }
    }


    /* Warm pools exist from the start so their home workers fill them to min_idle_conns. */
    for (int i = 0; i < cfg->n_warm_pools; i++) {
        const struct cfg_user *cu = cfg_user_find(cfg, cfg->warm_pools[i].user);
        struct pool_secret sec;
        memset(&sec, 0, sizeof(sec));
        if (cu && strncmp(cu->secret, "md5", 3) == 0 && strlen(cu->secret) == 35) {
            snprintf(sec.md5, sizeof(sec.md5), "%s", cu->secret);
        } else if (cu && strncmp(cu->secret, "SCRAM-SHA-256$", 14) != 0) {
            sec.password = cu->secret;
        }
        enum cfg_pool_mode mode =
            cfg_pool_mode_for(cfg, cfg->warm_pools[i].database, cfg->warm_pools[i].user);
        struct topo_snapshot *first = topo_get(&rt.topology);
        int warm_node = first->primary >= 0 ? first->primary : rt.primary_node;
        topo_put(first);
        if (!pool_get(&rt.pools, warm_node, cfg->warm_pools[i].database, cfg->warm_pools[i].user,
                      cu ? &sec : NULL, mode != CFG_POOL_SESSION)) {
            log_fatal("out of memory");
            return 1;
        }
    }

    rt.main_loop = loop;
    ev_async_init(&rt.workers_done, workers_done_cb);
    ev_async_start(loop, &rt.workers_done);
    runtime_reload_init(&rt);
    monitor_workers_ready(mon); /* after rt.cfg_mu exists: the monitor follows reloads */
    atomic_store(&rt.n_running, rt.n_workers);
    for (int i = 0; i < rt.n_workers; i++) {
        if (worker_start(&rt.workers[i]) != 0) {
            log_fatal("cannot start worker thread %d", i);
            return 1;
        }
    }
    log_info("pgmux %s listening on %s:%d%s%s with %d worker%s, %d node%s, pool_mode %s, "
             "io_engine %s",
             PGMUX_VERSION, cfg->listen_addr, cfg->listen_port,
             unix_listener.fd >= 0 ? " and " : "", unix_listener.fd >= 0 ? unix_listener.path : "",
             rt.n_workers, rt.n_workers == 1 ? "" : "s", rt.n_nodes, rt.n_nodes == 1 ? "" : "s",
             cfg_pool_mode_name(cfg->pool_mode), engine);

    ev_run(loop, 0); /* until every worker has finished (SIGINT or SIGTERM) */
    ev_async_stop(loop, &rt.workers_done);
    metrics_stop(metrics);

    /* Before worker_fini: the monitor posts to the workers' inboxes. */
    monitor_stop(mon);
    runtime_reload_fini(&rt); /* after the monitor, which takes rt.cfg_mu */
    for (int i = 0; i < rt.n_workers; i++) {
        pthread_join(rt.workers[i].thread, NULL);
    }
    /* Closed only now: a worker may accept on it until its thread ends. */
    unlink_unix_listener();
    if (unix_listener.fd >= 0) {
        close(unix_listener.fd);
        unix_listener.fd = -1;
    }
    /* Before worker_fini: its last inbox drain frees the answers still on their way. */
    authq_stop(rt.authq);
    /* worker_fini runs what is left in each inbox; those messages must not post to a worker
     * already finalized. */
    atomic_store(&rt.is_finishing, true);
    for (int i = 0; i < rt.n_workers; i++) {
        worker_fini(&rt.workers[i]);
    }
    pthread_mutex_destroy(&rt.steer_mu);
    pool_set_fini(&rt.pools);
    tls_fini(&rt.tls);
    peers_fini(&rt.peers);
    admin_shared_fini(&rt.admin);
    monitor_free(mon);
    free(rt.workers);
    topo_fini(&rt.topology);
    free(rt.stats);
    free(rt.nodes);
    log_info("pgmux stopped");
    log_stop();
    cfg_unref(rt.cfg);
    cfg_unref(cfg);
    ev_loop_destroy(loop);
    return 0;
}
