/*
 * worker.c - a worker thread: its loop, its SO_REUSEPORT listener, a 250 ms housekeeping tick,
 * the end-of-iteration reaper that frees what was closed (CONVENTIONS 3.1.5), and orderly
 * shutdown through the inbox.
 *
 * Each worker listens on its own SO_REUSEPORT socket, so the kernel deals new connections
 * without a hand-off thread; with worker_balance, a BPF program that worker 0 attaches deals
 * them to the active workers only (steer.h). The alternative (one acceptor dealing sockets
 * through inboxes) costs an extra wake-up per connection.
 */
#include "proxy/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/cpus.h"
#include "common/log.h"
#include "common/mono.h"
#include "proxy/balance.h"
#include "proxy/client.h"
#include "proxy/iobatch.h"
#include "proxy/steer.h"
#include "proxy/topology.h"

#define WORKER_TICKS_PER_S 4
#define WORKER_TICK_S      (1.0 / WORKER_TICKS_PER_S)
/* The idle buffers a trim leaves (256 KiB), so a steady load that dips does not free and malloc
 * them each time. */
#define WORKER_BUFS_KEPT 16

/* Accept up to max queued connections from fd (watched by io); false once the queue is empty
 * or accept failed. */
static bool
accept_some(struct worker *w, int fd_listen, ev_io *io, int max)
{
    for (int i = 0; i < max; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(fd_listen, (struct sockaddr *) &ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ECONNABORTED) {
                return false;
            }
            log_error("accept failed: %s", strerror(e));
            if ((e == EMFILE || e == ENFILE) && ev_is_active(io)) {
                /* Stop listening for a tick rather than spin on a full descriptor table. */
                ev_io_stop(w->loop, io);
            }
            return false;
        }
        /* accept4 made it non-blocking and close-on-exec; TCP_NODELAY and keepalive come
         * from the listening socket (main.c): no further system call per client. */
        client_accept(w, fd, (struct sockaddr *) &ss, len);
    }
    return true;
}

/* How many connections to accept now. One per wake-up spares the accept that finds the queue
 * empty, the common case when logins arrive one at a time; a listener reported again in the
 * very next loop iteration means they queue faster than that, and then a burst is taken
 * (bounded, so that a flood of connections cannot starve established sessions). */
static int
accept_budget(struct worker *w)
{
    unsigned int it = ev_iteration(w->loop);
    bool is_busy = it - w->accept_iter <= 1;
    w->accept_iter = it;
    return is_busy ? 64 : 1;
}

static void
listen_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct worker *w = io->data;
    (void) accept_some(w, w->listen_fd, io, accept_budget(w));
}

static void
unix_listen_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct worker *w = io->data;
    /* Collect the event so the private set re-arms it (level-triggered: it reports the listener
     * again while connections stay queued). Another worker may have taken them: accept then
     * just finds the queue empty. */
    struct epoll_event ev;
    (void) epoll_wait(w->unix_epfd, &ev, 1, 0);
    (void) accept_some(w, w->unix_fd, io, accept_budget(w));
}

/* Stop accepting on the shared Unix listener; what is queued is taken first (see drain). */
static void
unix_listen_close(struct worker *w, bool take_queued)
{
    if (w->unix_epfd < 0) {
        return;
    }
    if (ev_is_active(&w->unix_io)) {
        ev_io_stop(w->loop, &w->unix_io);
    }
    for (int i = 0; take_queued && i < 64 && accept_some(w, w->unix_fd, &w->unix_io, 64); i++) {
    }
    close(w->unix_epfd);
    w->unix_epfd = -1;
    w->unix_fd = -1;
}

/* A parked worker leaves the shared Unix listener to the active ones, as the steering does the
 * TCP ones (steer.h), where the sessions it would log in could move. */
static bool
skips_unix(const struct worker *w, int n_active)
{
    return w->cfg->worker_balance && w->idx >= n_active && !cfg_may_pool_session(w->cfg);
}

int
worker_listen_unix(struct worker *w, int fd)
{
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        log_error("epoll_create1: %s", strerror(errno));
        return -1;
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        log_error("epoll_ctl(EPOLLEXCLUSIVE): %s", strerror(errno));
        close(epfd);
        return -1;
    }
    w->unix_fd = fd;
    w->unix_epfd = epfd;
    ev_io_init(&w->unix_io, unix_listen_cb, epfd, EV_READ);
    w->unix_io.data = w;
    w->skips_unix = skips_unix(w, atomic_load(&w->rt->n_active));
    if (!w->skips_unix) {
        ev_io_start(w->loop, &w->unix_io);
    }
    return 0;
}

static void worker_drain_check(struct worker *w, int64_t now);

/* ---- lingering close ---- */

#define WORKER_LINGER_US 1000000

struct worker_linger {
    struct ilist_node node; /* in w->lingering */
    ev_io io;
    int64_t deadline_us;
    struct worker *w;
};

static void
linger_end(struct worker_linger *l)
{
    ev_io_stop(l->w->loop, &l->io);
    close(l->io.fd);
    ilist_remove(&l->w->lingering, &l->node);
    free(l);
}

static void
linger_read_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct worker_linger *l = io->data;
    char scratch[4096];
    for (;;) {
        ssize_t n = recv(io->fd, scratch, sizeof(scratch), 0);
        if (n > 0) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            return;
        }
        linger_end(l); /* the client closed its end (or the socket failed) */
        return;
    }
}

void
worker_linger(struct worker *w, int fd)
{
    struct worker_linger *l = malloc(sizeof(*l));
    if (!l || shutdown(fd, SHUT_WR) != 0) {
        free(l);
        close(fd);
        return;
    }
    l->w = w;
    l->deadline_us = mono_now_us() + WORKER_LINGER_US;
    ev_io_init(&l->io, linger_read_cb, fd, EV_READ);
    l->io.data = l;
    ev_io_start(w->loop, &l->io);
    ilist_node_init(&l->node);
    ilist_push_tail(&w->lingering, &l->node);
}

static void
linger_tick(struct worker *w, int64_t now, bool all)
{
    struct ilist_node *it, *tmp;
    ILIST_FOREACH_SAFE(&w->lingering, it, tmp)
    {
        struct worker_linger *l = CONTAINER_OF(it, struct worker_linger, node);
        if (all || now >= l->deadline_us) {
            linger_end(l);
        }
    }
}

/* ---- worker_balance ---- */

/* A parked worker's idle sessions go to the active workers, in turn. */
static void
balance_send_leavers(struct worker *w, int n_active)
{
    int64_t born_before = worker_now_us(w) - BALANCE_MIN_AGE_US;
    struct ilist_node *it, *tmp;
    ILIST_FOREACH_SAFE(&w->clients_idle, it, tmp)
    {
        struct client *c = CONTAINER_OF(it, struct client, node);
        if (c->connected_us < born_before && client_can_move(c)) {
            int to = (int) (w->next_target++ % (unsigned int) n_active);
            client_move(c, &w->rt->workers[to]);
        }
    }
}

/* Up to n idle sessions to worker to; how many went. */
static int
balance_give_to(struct worker *w, struct worker *to, int n)
{
    int moved = 0;
    struct ilist_node *it, *tmp;
    ILIST_FOREACH_SAFE(&w->clients_idle, it, tmp)
    {
        if (moved >= n) {
            break;
        }
        struct client *c = CONTAINER_OF(it, struct client, node);
        if (client_can_move(c)) {
            client_move(c, to);
            moved++;
        }
    }
    return moved;
}

/* Worker 0: the share of a CPU quota its cgroup used since the previous tick (permille), or
 * own_pm, what pgmux's workers used, where the cgroup's CPU time cannot be read. A cgroup that
 * pgmux shares (an application started in its container) spends the quota too. */
static uint32_t
balance_quota_used(struct cpu_sampler *cs, int64_t now_us, uint32_t own_pm)
{
    char text[1024];
    ssize_t n = cs->quota_fd >= 0 ? pread(cs->quota_fd, text, sizeof(text) - 1, 0) : -1;
    int64_t us = -1;
    if (n > 0) {
        text[n] = '\0';
        us = cpus_usage_us(text, cs->quota_v2);
    }
    uint32_t pm = own_pm;
    if (us >= 0 && cs->usage_us >= 0 && us >= cs->usage_us && now_us > cs->usage_at_us) {
        int64_t v = (us - cs->usage_us) * 1000 / (now_us - cs->usage_at_us);
        pm = v > UINT32_MAX ? UINT32_MAX : (uint32_t) v;
    }
    cs->usage_us = us;
    cs->usage_at_us = now_us;
    return pm;
}

/* Worker 0: the idle CPU this process could still use over the last tick (balance_spare_pm),
 * from /proc/stat and the CPU quota; own_pm is what its workers used. 0 where /proc/stat cannot
 * be read, which keeps worker_balance from spreading. A pread or two of kept descriptors a
 * tick. */
static uint32_t
balance_spare(struct worker *w, int64_t now_us, uint32_t own_pm)
{
    struct cpu_sampler *cs = &w->cpu;
    if (cs->has_failed) {
        return 0;
    }
    if (cs->fd < 0) {
        if (sched_getaffinity(0, sizeof(cs->mask), &cs->mask) != 0) {
            CPU_ZERO(&cs->mask);
            for (int i = 0; i < CPU_SETSIZE; i++) {
                CPU_SET(i, &cs->mask);
            }
        }
        /* The per-CPU lines come first and take under 100 bytes each; the rest is not read. */
        long conf = sysconf(_SC_NPROCESSORS_CONF);
        cs->size = 4096 + 128 * (size_t) (conf > 0 && conf < CPU_SETSIZE ? conf : CPU_SETSIZE);
        struct cpus_quota q;
        cs->quota_fd = -1;
        cs->usage_us = -1;
        if (cpus_quota_self(&q)) {
            cs->quota_pm = (uint32_t) q.permille;
            cs->quota_v2 = q.is_v2;
            cs->quota_fd = q.usage_path[0] ? open(q.usage_path, O_RDONLY | O_CLOEXEC) : -1;
        }
        cs->buf = malloc(cs->size);
        cs->fd = cs->buf ? open("/proc/stat", O_RDONLY | O_CLOEXEC) : -1;
        if (cs->fd < 0) {
            log_info("event=spread state=unavailable reason=\"cannot read /proc/stat: %s\"",
                     cs->buf == NULL ? "out of memory" : strerror(errno));
            cs->has_failed = true;
            return 0;
        }
    }
    ssize_t n = pread(cs->fd, cs->buf, cs->size, 0);
    uint64_t idle = 0, total = 0;
    int n_cpus = n > 0 ? cpus_stat_idle(cs->buf, (size_t) n, &cs->mask, &idle, &total) : 0;
    if (n_cpus == 0) {
        cs->has_prev = false;
        return 0;
    }
    /* Without a quota, the CPUs counted are the limit (what cpus_usable would say). */
    uint32_t quota_pm = cs->quota_pm ? cs->quota_pm : (uint32_t) n_cpus * 1000;
    uint32_t used_pm = cs->quota_pm ? balance_quota_used(cs, now_us, own_pm) : own_pm;
    uint32_t pm = 0;
    if (cs->has_prev && n_cpus == cs->n_cpus && idle >= cs->idle && total > cs->total) {
        pm = balance_spare_pm(idle - cs->idle, total - cs->total, n_cpus, quota_pm, used_pm);
    }
    cs->idle = idle;
    cs->total = total;
    cs->n_cpus = n_cpus;
    cs->has_prev = true;
    return pm;
}

/* Which listeners the kernel should hand new TCP connections to (steer.h): the active
 * workers', while some are parked and every session can move; else all of them. */
static int
steer_wanted(const struct runtime *rt, const struct cfg *cfg, int n_active)
{
    return cfg->worker_balance && n_active < rt->n_workers && !cfg_may_pool_session(cfg) ? n_active
                                                                                         : 0;
}

/* Under rt->steer_mu. */
static void
steer_apply(struct runtime *rt, int fd, int want)
{
    if (want == rt->steer_n || !rt->may_steer || fd < 0) {
        return;
    }
    /* Another process's listener (a new pgmux starting beside this one) would get no connection
     * while we steer: let the hash share them until it is gone. */
    if (want > 0 && steer_listeners(fd) != rt->n_workers) {
        want = 0;
    }
    if (want == rt->steer_n) {
        return;
    }
    if ((want > 0 ? steer_attach(fd, want) : steer_detach(fd)) == 0) {
        log_debug("new connections go to %d workers' listeners (0: all, by hash)", want);
        atomic_store(&rt->steer_n, want);
        return;
    }
    log_warning("cannot steer new connections to the active workers (%s): the kernel spreads "
                "them over all workers",
                strerror(errno));
    (void) steer_detach(fd);
    atomic_store(&rt->steer_n, 0);
    rt->may_steer = false;
}

/* Worker 0, each tick, after it set the active count. */
static void
steer_update(struct worker *w, int n_active)
{
    struct runtime *rt = w->rt;
    pthread_mutex_lock(&rt->steer_mu);
    /* Once a second while steering, count the port's listeners again: another process that
     * joined (a pgmux without steering, or any program started on the port) would otherwise
     * get no connection while ours stays attached; one that detached ours would leave
     * steer_n saying what is no longer so. A netlink dump, tens of microseconds. */
    if (w->ticks % WORKER_TICKS_PER_S == 0) {
        if (rt->steer_n > 0 && rt->may_steer && w->listen_fd >= 0 &&
            steer_listeners(w->listen_fd) != rt->n_workers) {
            log_info("another process listens on the same port: new connections are spread by "
                     "the kernel's hash while it does");
            (void) steer_detach(w->listen_fd);
            atomic_store(&rt->steer_n, 0);
        }
    }
    steer_apply(rt, w->listen_fd, steer_wanted(rt, w->cfg, n_active));
    pthread_mutex_unlock(&rt->steer_mu);
}

void
worker_steer_init(struct runtime *rt, const struct cfg *cfg)
{
    pthread_mutex_lock(&rt->steer_mu);
    atomic_store(&rt->steer_n, 0);
    int fd = rt->n_workers > 0 ? rt->workers[0].listen_fd : -1;
    int n = fd >= 0 ? steer_listeners(fd) : -1;
    rt->may_steer = n == rt->n_workers;
    if (fd >= 0 && n > rt->n_workers) {
        /* Positions in the group are not our worker indexes now, nor once the other process
         * closes its listeners; and a program it attached would steer ours by its count. */
        (void) steer_detach(fd);
        log_info("another process listens on the same port: new connections are spread by the "
                 "kernel's hash, not steered to the active workers");
    } else if (fd >= 0 && n < 0) {
        log_info("cannot count the port's listeners (sock_diag): new connections are spread by "
                 "the kernel's hash, not steered to the active workers");
    }
    steer_apply(rt, fd, steer_wanted(rt, cfg, atomic_load(&rt->n_active)));
    pthread_mutex_unlock(&rt->steer_mu);
}

void
worker_steer_stop(struct runtime *rt)
{
    pthread_mutex_lock(&rt->steer_mu);
    if (rt->steer_n > 0 && rt->workers[0].listen_fd >= 0) {
        /* Before any listener closes: a close reorders the group, and a program left attached
         * would go on steering a successor's listeners by our count. */
        (void) steer_detach(rt->workers[0].listen_fd);
    }
    atomic_store(&rt->steer_n, 0);
    rt->may_steer = false;
    pthread_mutex_unlock(&rt->steer_mu);
}

static void
balance_tick(struct worker *w, int64_t now_us)
{
    struct runtime *rt = w->rt;
    const struct cfg *cfg = w->cfg;
    /* CPU time, not time spent outside epoll_wait: the kernel's share of a send (the
     * loopback receive runs in it) is most of a relay's cost. One clock read a tick. */
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return;
    }
    int64_t cpu_ns = (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
    if (w->load_at_us > 0 && now_us > w->load_at_us) {
        /* nanoseconds of CPU per microsecond of clock: permille */
        int64_t pm = (cpu_ns - w->load_cpu_ns) / (now_us - w->load_at_us);
        atomic_store_explicit(&w->load_pm,
                              (uint32_t) (pm < 0      ? 0
                                          : pm > 1000 ? 1000
                                                      : pm),
                              memory_order_relaxed);
    }
    w->load_cpu_ns = cpu_ns;
    w->load_at_us = now_us;

    uint32_t busy_pm = (uint32_t) cfg->worker_busy_percent * 10;
    if (w->idx == 0) {
        int n = atomic_load(&rt->n_active);
        int next = n;
        if (!cfg->worker_balance) {
            next = rt->n_workers;
            w->spread = (struct balance_spread){ 0 };
            atomic_store_explicit(&rt->is_spread, false, memory_order_relaxed);
        } else {
            uint32_t loads[WORKER_MAX];
            uint32_t own_pm = 0;
            for (int i = 0; i < rt->n_workers; i++) {
                loads[i] = atomic_load_explicit(&rt->workers[i].load_pm, memory_order_relaxed);
                own_pm += loads[i];
            }
            uint32_t spare_pm = balance_spare(w, now_us, own_pm);
            bool was_spread = w->spread.is_on;
            bool is_spread = balance_spread_step(&w->spread, spare_pm);
            atomic_store_explicit(&rt->spare_pm, spare_pm, memory_order_relaxed);
            atomic_store_explicit(&rt->is_spread, is_spread, memory_order_relaxed);
            if (is_spread != was_spread) {
                log_info("event=spread state=%s spare_cpus=%.2f", is_spread ? "on" : "off",
                         spare_pm / 1000.0);
            }
            if (w->active_hold > 0) {
                w->active_hold--;
            } else {
                /* Growth spreads only while the CPU is spare now, so a load that starts on a
                 * busy machine (the spread ends ticks later) adds no worker; shrinking keeps
                 * the spread's threshold until it ends, so a dip does not gather the load. */
                uint32_t half = busy_pm / 2;
                next =
                    balance_active(loads, rt->n_workers, n,
                                   is_spread && spare_pm >= BALANCE_SPARE_OFF_PM ? half : busy_pm,
                                   is_spread ? half : busy_pm);
            }
        }
        if (next != n) {
            atomic_store(&rt->n_active, next);
            w->active_hold = next > n ? BALANCE_GROW_HOLD_TICKS : BALANCE_HOLD_TICKS;
            log_debug("worker_balance: %d of %d workers active", next, rt->n_workers);
        }
    }
    int n_active = atomic_load(&rt->n_active);
    w->is_parked = cfg->worker_balance && w->idx >= n_active;
    if (w->idx == 0) {
        steer_update(w, n_active);
    }
    bool skips = skips_unix(w, n_active);
    if (w->unix_epfd >= 0 && skips != w->skips_unix) {
        w->skips_unix = skips;
        if (skips && ev_is_active(&w->unix_io)) {
            ev_io_stop(w->loop, &w->unix_io);
        } else if (!skips && !ev_is_active(&w->unix_io)) {
            ev_io_start(w->loop, &w->unix_io);
        }
    }
    if (!cfg->worker_balance || w->is_draining || w->is_stopping || rt->n_workers < 2) {
        return;
    }
    if (w->is_parked) {
        balance_send_leavers(w, n_active);
        return;
    }
    if (w->give_hold > 0) {
        w->give_hold--;
        return;
    }
    if (atomic_load_explicit(&rt->is_spread, memory_order_relaxed)) {
        busy_pm /= 2;
    }
    uint32_t my_pm = atomic_load_explicit(&w->load_pm, memory_order_relaxed);
    int least = -1;
    uint32_t least_pm = UINT32_MAX;
    /* From the next worker on, so busy workers that see the same idle ones (just activated,
     * all at 0) pick different ones. */
    for (int j = 1; j < n_active; j++) {
        int i = (w->idx + j) % n_active;
        uint32_t l = atomic_load_explicit(&rt->workers[i].load_pm, memory_order_relaxed);
        if (l < least_pm) {
            least = i;
            least_pm = l;
        }
    }
    if (least < 0) {
        return;
    }
    int n_sessions = (int) atomic_load_explicit(&w->stats->g.sessions, memory_order_relaxed);
    int k = balance_give(my_pm, least_pm, n_sessions, busy_pm);
    /* Both loads are a tick old: wait until the next ones show the move before another. */
    if (k > 0 && balance_give_to(w, &rt->workers[least], k) > 0) {
        w->give_hold = 2;
    }
}

/*
 * A burst (many sessions with bytes in flight at once) leaves up to max_free 16 KiB buffers on
 * the free list, 16 MiB a worker, kept for good unless given back. Each second, half of those
 * that stayed idle all second (beyond WORKER_BUFS_KEPT) go; malloc_trim then returns their
 * pages, since a freed chunk in the middle of an arena stays resident otherwise.
 */
static void
trim_tick(struct worker *w)
{
    if (w->ticks % WORKER_TICKS_PER_S == 0 && buf_pool_trim(&w->pw.bufs, WORKER_BUFS_KEPT) > 0) {
        (void) malloc_trim(0);
    }
}

static void
tick_cb(EV_P_ ev_timer *t, int revents)
{
    (void) loop;
    (void) revents;
    struct worker *w = t->data;
    w->ticks++;
    int64_t now = mono_now_us();
    w->mono_minus_loop_us = now - (int64_t) (ev_now(w->loop) * 1e6);
    linger_tick(w, now, false);
    worker_drain_check(w, now);
    if (w->is_stopping) {
        return;
    }
    (void) topo_refresh(&w->rt->topology, &w->topo);
    client_tick(w, now);
    pool_worker_tick(&w->pw, now);
    cancel_tick(w, now);
    balance_tick(w, now);
    trim_tick(w);
    if (!w->is_stopping && !w->is_draining && w->listen_fd >= 0 && !ev_is_active(&w->listen_io)) {
        ev_io_start(w->loop, &w->listen_io);
    }
    if (!w->is_stopping && !w->is_draining && w->unix_epfd >= 0 && !w->skips_unix &&
        !ev_is_active(&w->unix_io)) {
        ev_io_start(w->loop, &w->unix_io);
    }
}

static void
reap_cb(EV_P_ ev_check *chk, int revents)
{
    (void) loop;
    (void) revents;
    struct worker *w = chk->data;
    if (w->has_leavers) {
        /* Parked: sessions that became idle in this iteration go now, not at the next tick. */
        w->has_leavers = false;
        int n_active = atomic_load_explicit(&w->rt->n_active, memory_order_relaxed);
        if (w->is_parked && !w->is_draining && !w->is_stopping && w->idx >= n_active) {
            balance_send_leavers(w, n_active);
        }
    }
    client_reap(w);
    pool_worker_reap(&w->pw);
    if (!w->has_leavers) {
        ev_check_stop(w->loop, chk);
    }
}

struct stop_msg {
    struct pool_msg msg;
};

static void
worker_finish(struct worker *w)
{
    w->is_stopping = true;
    if (ev_is_active(&w->listen_io)) {
        ev_io_stop(w->loop, &w->listen_io);
    }
    unix_listen_close(w, false);
    struct ilist *lists[] = { &w->clients_active, &w->clients_waiting, &w->clients_idle,
                              &w->clients_login, &w->clients_admin };
    for (size_t i = 0; i < ARRAY_LEN(lists); i++) {
        struct ilist_node *it;
        while ((it = ilist_first(lists[i])) != NULL) {
            client_fail(CONTAINER_OF(it, struct client, node), ST_ESHUTDOWN, NULL);
        }
    }
    pool_worker_close_all(&w->pw);
    cancel_close_all(w);
    linger_tick(w, 0, true);
    ev_timer_stop(w->loop, &w->tick);
    ev_break(w->loop, EVBREAK_ALL);
}

static void
stop_msg_run(struct pool_worker *pw, struct pool_msg *m)
{
    free(m);
    if (!((struct worker *) pw->owner)->is_stopping) {
        worker_finish(pw->owner);
    }
}

/* A session may go once its server (if any) is between transactions: nothing sent to it is
 * waiting for an answer, so no acknowledged write can be cut. */
static bool
session_at_rest(const struct client *c)
{
    const struct pool_conn *sc = c->sc;
    return !sc || (sc->txn_status == 'I' && sc->expect_ready == 0 && sc->reqs.n == 0 &&
                   !sc->is_unsynced && c->sock.remain == 0);
}

static void
worker_drain_check(struct worker *w, int64_t now)
{
    if (!w->is_draining || w->is_stopping) {
        return;
    }
    if (now >= w->drain_deadline_us) {
        log_info("worker %d: shutdown_timeout reached, closing the remaining sessions", w->idx);
        worker_finish(w);
        return;
    }
    /* Sessions waiting for a server (their statement has not run) go now; sessions between
     * transactions when they send their next statement (worker_drain_close from their read
     * callback) or after a quiet WORKER_DRAIN_REST_US; the others as their transaction ends. */
    struct ilist *lists[] = { &w->clients_login, &w->clients_waiting, &w->clients_idle,
                              &w->clients_active, &w->clients_admin };
    for (size_t i = 0; i < ARRAY_LEN(lists); i++) {
        struct ilist_node *it, *tmp;
        ILIST_FOREACH_SAFE(lists[i], it, tmp)
        {
            (void) worker_drain_close(CONTAINER_OF(it, struct client, node), false);
        }
    }
    /* Done once every session has gone and every client has read its FATAL (or a lingering
     * socket's second has passed). */
    if (ilist_empty(&w->clients_active) && ilist_empty(&w->clients_login) &&
        ilist_empty(&w->clients_waiting) && ilist_empty(&w->clients_idle) &&
        ilist_empty(&w->clients_admin) && ilist_empty(&w->lingering)) {
        worker_finish(w);
    }
}

bool
worker_drain_close(struct client *c, bool has_input)
{
    struct worker *w = c->w;
    /* A client still logging in finishes first (client_login_timeout bounds it): closing it
     * would fail a connection attempt. Output still queued (the end of the last result) is
     * delivered first. */
    if (!w->is_draining || w->is_stopping || c->state == CLIENT_CLOSED ||
        (!c->is_welcomed && c->state != CLIENT_ADMIN) ||
        (c->sock.out && !buf_is_empty(c->sock.out)) ||
        (c->state == CLIENT_ACTIVE && !session_at_rest(c))) {
        if (c->aux) {
            c->aux->drain_rest_us = 0;
        }
        return false;
    }
    /*
     * Why not close every session the moment its transaction ends: the 57P01 would then often
     * reach the client in the same read as the ReadyForQuery before it, and libpq hands an
     * error that arrives outside a query to the notice processor; the next query then only
     * sees "server closed the connection unexpectedly" (or, right after a login, nothing at
     * all). Answered to the client's next statement, the 57P01 is that statement's error.
     * A session that sends nothing goes after a quiet second, long after its last answer.
     */
    if (!has_input && c->state != CLIENT_WAITING) {
        int64_t now = mono_now_us();
        struct client_aux *x = client_aux(c);
        if (x && x->drain_rest_us == 0) {
            x->drain_rest_us = now;
        }
        if (x && now - x->drain_rest_us < WORKER_DRAIN_REST_US) {
            return false;
        }
    }
    c->wants_linger = true;
    client_fail(c, ST_ESHUTDOWN, NULL);
    return true;
}

struct drain_msg {
    struct pool_msg msg;
    int64_t timeout_us;
};

static void
drain_msg_run(struct pool_worker *pw, struct pool_msg *m)
{
    struct worker *w = pw->owner;
    int64_t timeout = ((struct drain_msg *) m)->timeout_us;
    free(m);
    if (w->is_stopping || w->is_draining) {
        return;
    }
    w->is_draining = true;
    w->drain_deadline_us = mono_now_us() + timeout;
    /* No more connections here: with SO_REUSEPORT the kernel sends them to whoever still
     * listens on the port (a new pgmux taking over). Closing a listener resets the connections
     * still in its accept queue (unless net.ipv4.tcp_migrate_req = 1 moves them to another
     * listener of the port), so take what is queued first: those clients log in here and are
     * closed between transactions like the others. What arrives between the last accept and
     * the close is only safe with tcp_migrate_req (README "Zero-downtime restart"). */
    if (w->listen_fd >= 0) {
        if (ev_is_active(&w->listen_io)) {
            ev_io_stop(w->loop, &w->listen_io);
        }
        for (int i = 0; i < 64 && accept_some(w, w->listen_fd, &w->listen_io, 64); i++) {
        }
        close(w->listen_fd);
        w->listen_fd = -1;
    }
    unix_listen_close(w, true);
    worker_drain_check(w, mono_now_us());
}

void
worker_drain(struct worker *w, int64_t timeout_us)
{
    struct drain_msg *m = malloc(sizeof(*m));
    if (!m) {
        worker_stop(w);
        return;
    }
    m->msg.fn = drain_msg_run;
    m->timeout_us = timeout_us;
    pool_worker_post(&w->pw, &m->msg);
}

struct cfg_msg {
    struct pool_msg msg;
    struct cfg *cfg; /* one reference, handed to the worker */
};

/* The SCRAM cache is by user index, which the new snapshot may have reordered, and a password
 * may have changed: start it afresh. */
static void
scram_cache_reset(struct worker *w, int n_users)
{
    /* Tagged by content, these would only miss; but a user or secret the reload removed
     * should not stay in memory. */
    OPENSSL_cleanse(w->derived, sizeof(w->derived));
    if (w->scram_cache) {
        OPENSSL_cleanse(w->scram_cache, (size_t) w->n_scram_cache * sizeof(*w->scram_cache));
    }
    free(w->scram_cache);
    free(w->scram_cached);
    w->scram_cache = NULL;
    w->scram_cached = NULL;
    w->n_scram_cache = 0;
    if (n_users > 0) {
        w->scram_cache = calloc((size_t) n_users, sizeof(*w->scram_cache));
        w->scram_cached = calloc((size_t) n_users, sizeof(*w->scram_cached));
        if (!w->scram_cache || !w->scram_cached) {
            /* Without a cache, logins only pay PBKDF2 each time. */
            free(w->scram_cache);
            free(w->scram_cached);
            w->scram_cache = NULL;
            w->scram_cached = NULL;
            return;
        }
        w->n_scram_cache = n_users;
    }
}

/* A reload may follow a change of a user's defaults (ALTER ROLE ... SET DateStyle), which
 * the server's spelling of a value may depend on: learned again from the next replay. */
static void
spellings_forget(struct worker *w)
{
    for (int i = 0; i < WORKER_SPELLING_N; i++) {
        free(w->spellings[i].s);
        w->spellings[i].s = NULL;
    }
    w->n_spellings = 0;
}

static void
cfg_msg_run(struct pool_worker *pw, struct pool_msg *m)
{
    struct worker *w = pw->owner;
    struct cfg *next = ((struct cfg_msg *) m)->cfg;
    free(m);
    /* Clients in the middle of an exchange hold their own reference (client_auth.cfg), so the
     * old snapshot may go now if nobody else holds it. */
    struct cfg *old = w->cfg;
    w->cfg = next;
    scram_cache_reset(w, next->n_users);
    spellings_forget(w);
    cfg_unref(old);
}

void
worker_set_cfg(struct worker *w, struct cfg *cfg)
{
    struct cfg_msg *m = malloc(sizeof(*m));
    if (!m) {
        /* The worker keeps the previous snapshot; the reload is reported as partial. */
        log_error("worker %d: out of memory adopting the new configuration", w->idx);
        cfg_unref(cfg);
        return;
    }
    m->msg.fn = cfg_msg_run;
    m->cfg = cfg;
    pool_worker_post(&w->pw, &m->msg);
}

void
worker_random(struct worker *w, void *out, size_t n)
{
    uint8_t *o = out;
    while (n > 0) {
        if (w->rand_left == 0) {
            if (RAND_bytes(w->rand_pool, sizeof(w->rand_pool)) != 1) {
                /* Only cancel keys and salts come from here; a failing RNG must not make them
                 * predictable, so this is fatal. */
                log_fatal("random number generator failed");
                abort();
            }
            w->rand_left = sizeof(w->rand_pool);
        }
        size_t take = n < w->rand_left ? n : w->rand_left;
        memcpy(o, w->rand_pool + sizeof(w->rand_pool) - w->rand_left, take);
        OPENSSL_cleanse(w->rand_pool + sizeof(w->rand_pool) - w->rand_left, take);
        w->rand_left -= take;
        o += take;
        n -= take;
    }
}

int
worker_init(struct worker *w, int idx, struct runtime *rt, int listen_fd)
{
    memset(w, 0, sizeof(*w));
    w->idx = idx;
    w->rt = rt;
    w->free_slot = WORKER_NO_SLOT;
    w->cpu.fd = -1;
    w->cpu.quota_fd = -1;
    w->cfg = cfg_ref(rt->cfg);
    w->topo = topo_get(&rt->topology);
    uint64_t seed;
    worker_random(w, &seed, sizeof(seed));
    worker_random(w, w->derived_key, sizeof(w->derived_key));
    routing_worker_init(&w->routing, seed);
    if (router_classifier_create(ROUTER_CLASSIFY_CACHE_DEFAULT, &w->classifier) != ST_OK) {
        return -1;
    }
    w->listen_fd = listen_fd;
    w->unix_fd = -1;
    w->unix_epfd = -1;
    w->loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
    if (!w->loop) {
        w->loop = ev_loop_new(EVFLAG_AUTO);
    }
    if (!w->loop) {
        return -1;
    }
    w->mono_minus_loop_us = mono_now_us() - (int64_t) (ev_now(w->loop) * 1e6);
    ilist_init(&w->clients_login);
    ilist_init(&w->clients_idle);
    ilist_init(&w->clients_waiting);
    ilist_init(&w->clients_active);
    ilist_init(&w->clients_admin);
    ilist_init(&w->to_free);
    ilist_init(&w->cancels);
    ilist_init(&w->lingering);
    pool_worker_init(&w->pw, idx, w->loop, &rt->pools, w);
    w->pw.on_grant = client_on_grant;
    w->pw.on_ready = client_on_ready;
    w->pw.on_failed = client_on_failed;
    w->pw.on_answer = client_on_answer;
    w->stats = stats_worker_new();
    if (!w->stats) {
        return -1;
    }
    if (rt->stats) {
        rt->stats[idx] = w->stats;
    }
    scram_cache_reset(w, w->cfg->n_users);
    if (w->cfg->n_users > 0 && w->n_scram_cache == 0) {
        return -1;
    }
    if (listen_fd >= 0) {
        ev_io_init(&w->listen_io, listen_cb, listen_fd, EV_READ);
        w->listen_io.data = w;
        ev_io_start(w->loop, &w->listen_io);
    }
    ev_timer_init(&w->tick, tick_cb, WORKER_TICK_S, WORKER_TICK_S);
    w->tick.data = w;
    ev_timer_start(w->loop, &w->tick);
    ev_check_init(&w->reap, reap_cb); /* started by worker_reap_soon */
    w->reap.data = w;
    w->pw.reap = &w->reap;
    return 0;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    /* Signals belong to the main thread's loop. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    (void) iobatch_thread_start(w);
    ev_run(w->loop, 0);
    iobatch_thread_stop(w);
    atomic_fetch_sub(&w->rt->n_running, 1);
    ev_async_send(w->rt->main_loop, &w->rt->workers_done);
    return NULL;
}

int
worker_start(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void
worker_stop(struct worker *w)
{
    struct stop_msg *m = malloc(sizeof(*m));
    if (!m) {
        return;
    }
    m->msg.fn = stop_msg_run;
    pool_worker_post(&w->pw, &m->msg);
}

void
worker_fini(struct worker *w)
{
    if (!w->loop) {
        return;
    }
    client_reap(w);
    pool_worker_fini(&w->pw);
    client_reap(w); /* sessions its last inbox messages handed over, closed at once */
    ev_check_stop(w->loop, &w->reap);
    iobatch_fini(w);
    if (w->cpu.fd >= 0) {
        close(w->cpu.fd);
        w->cpu.fd = -1;
    }
    if (w->cpu.quota_fd >= 0) {
        close(w->cpu.quota_fd);
        w->cpu.quota_fd = -1;
    }
    free(w->cpu.buf);
    w->cpu.buf = NULL;
    for (int i = 0; i < WORKER_WANT_CACHE_N; i++) {
        pool_params_block_put(w->want_cache[i]);
        w->want_cache[i] = NULL;
    }
    spellings_forget(w);
    if (w->listen_fd >= 0) {
        close(w->listen_fd);
        w->listen_fd = -1;
    }
    if (w->unix_epfd >= 0) {
        close(w->unix_epfd);
        w->unix_epfd = -1;
    }
    if (w->scram_cache) {
        OPENSSL_cleanse(w->scram_cache, (size_t) w->n_scram_cache * sizeof(*w->scram_cache));
    }
    free(w->scram_cache);
    free(w->scram_cached);
    OPENSSL_cleanse(w->derived, sizeof(w->derived));
    free(w->slots);
    ev_loop_destroy(w->loop);
    w->loop = NULL;
    routing_worker_log(&w->routing, w->stats, w->idx, w->rt->nodes, w->topo ? w->topo->n_nodes : 0);
    router_classifier_destroy(w->classifier);
    w->classifier = NULL;
    topo_put(w->topo);
    w->topo = NULL;
    cfg_unref(w->cfg);
    if (w->rt->stats) {
        w->rt->stats[w->idx] = NULL;
    }
    stats_worker_free(w->stats);
    w->stats = NULL;
}
