/*
 * cpus.c - see cpus.h.
 */
#include "common/cpus.h"

#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The whole of a small file (a cgroup attribute, /proc/self/cgroup) into buf, NUL-terminated. */
static bool
read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    size_t len = 0;
    ssize_t n;
    while (len + 1 < size && (n = read(fd, buf + len, size - 1 - len)) > 0) {
        len += (size_t) n;
    }
    close(fd);
    buf[len] = '\0';
    return len > 0;
}

static int
ceil_div(long long a, long long b)
{
    long long n = (a + b - 1) / b;
    return n > INT_MAX ? INT_MAX : (int) n;
}

/* A cgroup v2 cpu.max text in permille of one CPU; 0 when it sets no limit or is nonsense. */
static long long
cpu_max_pm(const char *text)
{
    char quota[32];
    long long period = 0;
    if (sscanf(text, "%31s %lld", quota, &period) != 2 || period <= 0) {
        return 0;
    }
    char *end;
    long long q = strtoll(quota, &end, 10);
    if (end == quota || *end != '\0' || q <= 0) {
        return 0; /* "max", or nonsense */
    }
    long long pm = q / period * 1000 + q % period * 1000 / period;
    return pm > 0 ? pm : 1;
}

int
cpus_from_cpu_max(const char *text)
{
    return ceil_div(cpu_max_pm(text), 1000);
}

/* The quota set in one cgroup directory, in permille of one CPU; 0 when none. */
static long long
dir_quota_pm(const char *dir, bool is_v2)
{
    char path[PATH_MAX], text[128];
    long long q, p;
    if (is_v2) {
        if (snprintf(path, sizeof(path), "%s/cpu.max", dir) >= (int) sizeof(path) ||
            !read_small(path, text, sizeof(text))) {
            return 0;
        }
        return cpu_max_pm(text);
    }
    if (snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", dir) >= (int) sizeof(path) ||
        !read_small(path, text, sizeof(text)) || sscanf(text, "%lld", &q) != 1 || q <= 0) {
        return 0; /* -1: no quota */
    }
    if (snprintf(path, sizeof(path), "%s/cpu.cfs_period_us", dir) >= (int) sizeof(path) ||
        !read_small(path, text, sizeof(text)) || sscanf(text, "%lld", &p) != 1 || p <= 0) {
        return 0;
    }
    long long pm = q / p * 1000 + q % p * 1000 / p;
    return pm > 0 ? pm : 1;
}

/*
 * The tightest quota from mount + path up to mount itself: a limit on a parent binds its
 * children too. Inside a container the path often does not exist under the mount (the
 * container's own cgroup is mounted as the root); walking up reaches that root anyway.
 * Returns it in permille (0: none) and, in best_dir, the directory that sets it.
 */
static long long
walk_quota(const char *mount, const char *path, bool is_v2, char best_dir[PATH_MAX])
{
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof(dir), "%s%s", mount, path[0] == '/' ? path : "/") >=
        (int) sizeof(dir)) {
        return 0;
    }
    size_t root_len = strlen(mount);
    long long best = 0;
    for (;;) {
        size_t len = strlen(dir);
        while (len > root_len && dir[len - 1] == '/') {
            dir[--len] = '\0';
        }
        long long q = dir_quota_pm(dir, is_v2);
        if (q > 0 && (best == 0 || q < best)) {
            best = q;
            memcpy(best_dir, dir, len + 1);
        }
        if (len <= root_len) {
            break;
        }
        char *slash = strrchr(dir + root_len, '/');
        if (!slash) {
            dir[root_len] = '\0';
        } else {
            *slash = '\0';
        }
    }
    return best;
}

/* Whether the comma-separated controller list names "cpu" itself. */
static bool
has_cpu_controller(const char *list, size_t len)
{
    const char *p = list, *end = list + len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t) (end - p));
        size_t n = comma ? (size_t) (comma - p) : (size_t) (end - p);
        if (n == 3 && memcmp(p, "cpu", 3) == 0) {
            return true;
        }
        p += n + 1;
    }
    return false;
}

/* The tightest quota over every cgroup line (permille; 0: none), with where it is set. */
static long long
find_quota(const char *cgroup_root, const char *proc_cgroup, char best_dir[PATH_MAX], bool *best_v2)
{
    long long quota = 0;
    for (const char *line = proc_cgroup; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t) (eol - line) : strlen(line);
        /* "ID:CONTROLLERS:PATH"; v2 is "0::PATH" */
        const char *c1 = memchr(line, ':', len);
        const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t) (c1 + 1 - line)) : NULL;
        char path[PATH_MAX], dir[PATH_MAX];
        size_t plen = c2 ? len - (size_t) (c2 + 1 - line) : 0;
        if (c2 && plen < sizeof(path)) {
            memcpy(path, c2 + 1, plen);
            path[plen] = '\0';
            long long q = 0;
            bool is_v2 = c2 == c1 + 1;
            if (is_v2) {
                q = walk_quota(cgroup_root, path, true, dir);
            } else if (has_cpu_controller(c1 + 1, (size_t) (c2 - c1 - 1))) {
                /* v1: mounted as "cpu,cpuacct" (the list as written) or "cpu" */
                char mount[PATH_MAX];
                int m = snprintf(mount, sizeof(mount), "%s/%.*s", cgroup_root, (int) (c2 - c1 - 1),
                                 c1 + 1);
                if (m > 0 && m < (int) sizeof(mount)) {
                    q = walk_quota(mount, path, false, dir);
                }
                if (q == 0 &&
                    snprintf(mount, sizeof(mount), "%s/cpu", cgroup_root) < (int) sizeof(mount)) {
                    q = walk_quota(mount, path, false, dir);
                }
            }
            if (q > 0 && (quota == 0 || q < quota)) {
                quota = q;
                memcpy(best_dir, dir, strlen(dir) + 1);
                *best_v2 = is_v2;
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    return quota;
}

int
cpus_usable_from(const char *cgroup_root, const char *proc_cgroup, int affinity)
{
    int n = affinity;
    if (n <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online < 1 ? 1 : online > INT_MAX ? INT_MAX : (int) online;
    }
    char dir[PATH_MAX];
    bool is_v2 = false;
    int quota = ceil_div(find_quota(cgroup_root, proc_cgroup, dir, &is_v2), 1000);
    return quota > 0 && quota < n ? quota : n;
}

bool
cpus_quota_find(const char *cgroup_root, const char *proc_cgroup, struct cpus_quota *q)
{
    char dir[PATH_MAX];
    bool is_v2 = false;
    long long pm = find_quota(cgroup_root, proc_cgroup, dir, &is_v2);
    q->permille = pm > INT_MAX ? INT_MAX : (int) pm;
    q->is_v2 = is_v2;
    q->usage_path[0] = '\0';
    if (pm == 0) {
        return false;
    }
    /* v1 keeps the time in cpuacct: the same directory when mounted as "cpu,cpuacct", else
     * the same path under its own mount ("<root>/cpu/P" -> "<root>/cpuacct/P"). */
    int n = snprintf(q->usage_path, sizeof(q->usage_path), "%s/%s", dir,
                     is_v2 ? "cpu.stat" : "cpuacct.usage");
    if (n < 0 || n >= (int) sizeof(q->usage_path) || access(q->usage_path, R_OK) != 0) {
        q->usage_path[0] = '\0';
        size_t rl = strlen(cgroup_root);
        /* (v1 dirs are always "<root>/<mount>..."; a v2 quota may sit at the root itself) */
        const char *mount = !is_v2 && strlen(dir) > rl ? dir + rl + 1 : NULL;
        if (mount && strncmp(mount, "cpu", 3) == 0) {
            const char *rel = strchr(mount, '/');
            n = snprintf(q->usage_path, sizeof(q->usage_path), "%s/cpuacct%s/cpuacct.usage",
                         cgroup_root, rel ? rel : "");
            if (n < 0 || n >= (int) sizeof(q->usage_path) || access(q->usage_path, R_OK) != 0) {
                q->usage_path[0] = '\0';
            }
        }
    }
    return true;
}

int64_t
cpus_usage_us(const char *text, bool is_v2)
{
    if (!is_v2) {
        char *end;
        long long ns = strtoll(text, &end, 10);
        return end == text || ns < 0 ? -1 : ns / 1000;
    }
    for (const char *line = text; line && *line;) {
        if (strncmp(line, "usage_usec ", 11) == 0) {
            char *end;
            long long us = strtoll(line + 11, &end, 10);
            return end == line + 11 || us < 0 ? -1 : us;
        }
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return -1;
}

bool
cpus_quota_self(struct cpus_quota *q)
{
    char text[8192];
    return cpus_quota_find("/sys/fs/cgroup",
                           read_small("/proc/self/cgroup", text, sizeof(text)) ? text : NULL, q);
}

int
cpus_usable(void)
{
    int affinity = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        affinity = CPU_COUNT(&set);
    }
    char text[8192];
    return cpus_usable_from("/sys/fs/cgroup",
                            read_small("/proc/self/cgroup", text, sizeof(text)) ? text : NULL,
                            affinity);
}

int
cpus_stat_idle(const char *text, size_t len, const cpu_set_t *mask, uint64_t *idle, uint64_t *total)
{
    *idle = 0;
    *total = 0;
    int n = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t) (end - p));
        if (eol == NULL) {
            break;
        }
        /* "cpuN user nice system idle iowait irq softirq steal guest guest_nice" */
        if (eol - p > 4 && memcmp(p, "cpu", 3) == 0 && p[3] >= '0' && p[3] <= '9') {
            const char *q = p + 3;
            unsigned long cpu = 0;
            while (q < eol && *q >= '0' && *q <= '9' && cpu < (unsigned long) CPU_SETSIZE) {
                cpu = cpu * 10 + (unsigned long) (*q++ - '0');
            }
            uint64_t f[8] = { 0 };
            int nf = 0;
            while (nf < 8) {
                while (q < eol && *q == ' ') {
                    q++;
                }
                if (q >= eol || *q < '0' || *q > '9') {
                    break;
                }
                uint64_t v = 0;
                while (q < eol && *q >= '0' && *q <= '9') {
                    v = v * 10 + (uint64_t) (*q++ - '0');
                }
                f[nf++] = v;
            }
            /* Kernels since 2.6.33 write all eight; fewer is not a line this reads. */
            if (nf == 8 && cpu < (unsigned long) CPU_SETSIZE &&
                (mask == NULL || CPU_ISSET((int) cpu, mask))) {
                *idle += f[3] + f[4];
                *total += f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
                n++;
            }
        }
        p = eol + 1;
    }
    return n;
}
