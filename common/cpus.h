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

#include <sched.h>
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

/**
 * Idle and total time summed over the per-CPU lines ("cpuN ...") of /proc/stat's text, for the
 * CPUs in mask (NULL: all), in the file's clock ticks. Idle counts iowait (a CPU waiting for
 * I/O could run a thread); total leaves out guest time, which user time already holds. Only
 * whole lines count: text cut short loses its last, partial line. Returns the CPUs counted.
 */
int cpus_stat_idle(const char *text, size_t len, const cpu_set_t *mask, uint64_t *idle,
                   uint64_t *total);

#endif
