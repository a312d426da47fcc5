/*
 * balance.h - how many workers serve sessions, and which sessions move (worker_balance).
 *
 * Every worker measures the CPU its thread used over the last housekeeping tick (permille of
 * one CPU). Worker 0 decides how many workers are active: the first n_active by index. Workers
 * beyond it are parked: they still accept and log clients in (SO_REUSEPORT deals connections
 * to every listener), then hand each session to an active worker as soon as it is between
 * transactions. An active worker much busier than the least busy active one hands it some of
 * its sessions. So a light load runs on one thread, which wakes once for many sockets instead
 * of two threads each waking for a few (README "Performance"), and a heavy load spreads over
 * as many workers as it keeps busy.
 *
 * Pure functions: the decisions, with no threads or clocks, so they are unit-tested alone.
 */
#ifndef PGMUX_PROXY_BALANCE_H
#define PGMUX_PROXY_BALANCE_H

#include <stdbool.h>
#include <stdint.h>

/* Ticks the active count stays put after it shrank, and after it grew, so the loads it is
 * judged by come from the sessions' new places. Growth waits less: a load that outgrew the
 * active workers queues behind them until it is met. */
#define BALANCE_HOLD_TICKS      4
#define BALANCE_GROW_HOLD_TICKS 2
/* A parked worker hands over only sessions at least this old (µs since accept): a move costs
 * the other worker a wake-up, more than a connection that lives for one transaction (a PHP
 * request, pgbench -C) would save. */
#define BALANCE_MIN_AGE_US 100000
/* An active worker at least this much (permille of a CPU) busier than the least busy one
 * gives sessions away... */
#define BALANCE_GAP_PM 150

/* Spreading: while the CPUs this process may use keep at least BALANCE_SPARE_ON_PM of idle time
 * (permille of one CPU: one whole CPU) for BALANCE_SPREAD_ON_TICKS ticks in a row, a worker
 * counts as busy at half of worker_busy_percent, so the load spreads over twice the workers.
 * Gathering saves CPU only where CPU is scarce: on a machine with idle CPUs, a worker thread
 * that holds many sessions delays all of them whenever the scheduler runs something else
 * before it, and closed-loop clients then wait instead of sending (README "Workers that follow
 * the load": 28% less throughput on 16 CPUs than with every worker keeping its sessions). It
 * ends after BALANCE_SPREAD_OFF_TICKS ticks in a row below BALANCE_SPARE_OFF_PM: the gap and
 * the longer wait keep the spread from flapping when spreading itself uses the idle CPU. */
#define BALANCE_SPARE_ON_PM      1000
#define BALANCE_SPARE_OFF_PM     500
#define BALANCE_SPREAD_ON_TICKS  2
#define BALANCE_SPREAD_OFF_TICKS 8

struct balance_spread {
    bool is_on;
    int ticks; /* ticks in a row on the side of the threshold that would switch is_on */
};

/**
 * Idle CPU the process could still use, in permille of one CPU: the smaller of the idle time of
 * the n_cpus CPUs it may run on (idle_d and total_d: /proc/stat ticks over the last tick,
 * cpus_stat_idle) and its CPU quota (quota_pm: the cgroup's, or the usable CPUs when none) less
 * what was used of it (used_pm: the cgroup's CPU time, or the process's own). 0 when nothing
 * was measured.
 */
uint32_t balance_spare_pm(uint64_t idle_d, uint64_t total_d, int n_cpus, uint32_t quota_pm,
                          uint32_t used_pm);

/** One tick of the spread decision with this tick's spare_pm; returns whether it is on. */
bool balance_spread_step(struct balance_spread *s, uint32_t spare_pm);

/**
 * The number of active workers after a tick: load_pm[i] is worker i's CPU over the last tick
 * in permille of one CPU (n_workers entries), n_active the current count. grow_pm and shrink_pm
 * are the load (permille) at which a worker counts as busy for growing and for shrinking
 * (worker_busy_percent * 10, halved while spreading; shrink_pm <= grow_pm). Doubles when the
 * active workers average grow_pm or more; drops by one when their load would fit on one worker
 * fewer at two thirds of shrink_pm each. Always 1..n_workers.
 */
int balance_active(const uint32_t *load_pm, int n_workers, int n_active, uint32_t grow_pm,
                   uint32_t shrink_pm);

/**
 * How many of its n_sessions an active worker at my_pm should hand to the least busy active
 * worker, at least_pm: none unless it is at least half busy (busy_pm / 2) and BALANCE_GAP_PM
 * above it; otherwise the share that would even the two out, at least one.
 */
int balance_give(uint32_t my_pm, uint32_t least_pm, int n_sessions, uint32_t busy_pm);

#endif
