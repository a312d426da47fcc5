/*
 * cpus.h - how many CPUs this process may actually use, for `workers = 0`.
 *
 * The count of online CPUs is the wrong answer in the places a sidecar runs. A container
 * limited to 2 CPUs on a 64-core host (a cgroup CPU quota, as Kubernetes sets from a CPU
 * limit) would otherwise start 64 workers. Each worker costs a thread, its wake-ups, and a
 * per-descriptor table that every idle client pays for in every loop. The same holds for a
 * process confined by `taskset` or a cpuset. The answer is the smaller of:
 *   - the affinity mask (sched_getaffinity: taskset, cpusets);
 *   - the CPU quota of the process's cgroup and of every cgroup above it, rounded up:
 *     cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
 *
 * Thread: any (reads files; call it at start or reload, not per message).
 */
#ifndef PGMUX_COMMON_CPUS_H
#define PGMUX_COMMON_CPUS_H

#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** CPUs this process may use, at least 1; online CPUs when nothing narrower is known. */
int cpus_usable(void);

/**
 * The same from given sources, for tests. cgroup_root stands for /sys/fs/cgroup, and
 * proc_cgroup for the text of /proc/self/cgroup (NULL: none). affinity is the affinity
 * mask's count (0: unknown).
 */
int cpus_usable_from(const char *cgroup_root, const char *proc_cgroup, int affinity);

/** CPUs allowed by a cgroup v2 `cpu.max` text ("max 100000", "150000 100000"), rounded up;
 *  0 when it sets no limit or cannot be read. */
int cpus_from_cpu_max(const char *text);

/* The tightest CPU quota over this process, and where its cgroup's CPU time can be read. */
struct cpus_quota {
    int permille;              /* the quota, permille of one CPU (exact, not rounded) */
    bool is_v2;                /* cgroup v2: usage_usec in cpu.stat; v1: cpuacct.usage (ns) */
    char usage_path[PATH_MAX]; /* that file in the cgroup that sets the quota; "" if unreadable */
};

/**
 * Find the tightest quota as cpus_usable_from does (cgroup_root and proc_cgroup the same).
 * false when none is set.
 */
bool cpus_quota_find(const char *cgroup_root, const char *proc_cgroup, struct cpus_quota *q);

/** The CPU time, in µs, in the text of a cgroup's usage file (cpus_quota); -1 if none. */
int64_t cpus_usage_us(const char *text, bool is_v2);

/** cpus_quota_find for this process (/sys/fs/cgroup, /proc/self/cgroup). */
bool cpus_quota_self(struct cpus_quota *q);

/**
 * Idle and total time summed over the per-CPU lines ("cpuN ...") of /proc/stat's text, for the
 * CPUs in mask (NULL: all), in the file's clock ticks. Idle counts iowait (a CPU waiting for
 * I/O could run a thread); total leaves out guest time, which user time already holds. Only
 * whole lines count: text cut short loses its last, partial line. Returns the CPUs counted.
 */
int cpus_stat_idle(const char *text, size_t len, const cpu_set_t *mask, uint64_t *idle,
                   uint64_t *total);

#endif
