/*
 * balance.c - the decisions of worker_balance (balance.h).
 */
#include "proxy/balance.h"

int
balance_active(const uint32_t *load_pm, int n_workers, int n_active, uint32_t grow_pm,
               uint32_t shrink_pm)
{
    if (n_workers <= 1) {
        return 1;
    }
    if (n_active < 1) {
        n_active = 1;
    }
    if (n_active > n_workers) {
        n_active = n_workers;
    }
    uint64_t sum = 0;
    for (int i = 0; i < n_active; i++) {
        sum += load_pm[i];
    }
    /* A saturated worker reads as 1000 whatever its real demand, so growth doubles rather than
     * sizing itself from the sum: 1, 2, 4, 8 in three decisions. */
    if (sum >= (uint64_t) grow_pm * (uint64_t) n_active) {
        return n_active * 2 < n_workers ? n_active * 2 : n_workers;
    }
    /* Shrinking needs the load to fit one worker fewer well below busy (two thirds), so a
     * shrink cannot be followed by a growth at the same load. */
    if (n_active > 1 && sum * 3 <= (uint64_t) shrink_pm * 2 * (uint64_t) (n_active - 1)) {
        return n_active - 1;
    }
    return n_active;
}

int
balance_give(uint32_t my_pm, uint32_t least_pm, int n_sessions, uint32_t busy_pm)
{
    if (n_sessions <= 0 || my_pm * 2 < busy_pm || my_pm < least_pm + BALANCE_GAP_PM) {
        return 0;
    }
    /* Sessions are assumed to cost alike: moving k of n shifts k/n of my load, and half the
     * gap evens the two. */
    int k = (int) ((uint64_t) n_sessions * (my_pm - least_pm) / (2u * my_pm));
    return k > 0 ? k : 1;
}

uint32_t
balance_spare_pm(uint64_t idle_d, uint64_t total_d, int n_cpus, uint32_t quota_pm, uint32_t used_pm)
{
    if (total_d == 0 || n_cpus <= 0 || quota_pm == 0) {
        return 0;
    }
    uint64_t idle_pm = idle_d * (uint64_t) n_cpus * 1000 / total_d;
    uint64_t left_pm = quota_pm > used_pm ? quota_pm - used_pm : 0;
    uint64_t pm = idle_pm < left_pm ? idle_pm : left_pm;
    return pm > UINT32_MAX ? UINT32_MAX : (uint32_t) pm;
}

bool
balance_spread_step(struct balance_spread *s, uint32_t spare_pm)
{
    bool toward = s->is_on ? spare_pm < BALANCE_SPARE_OFF_PM : spare_pm >= BALANCE_SPARE_ON_PM;
    if (!toward) {
        s->ticks = 0;
        return s->is_on;
    }
    if (++s->ticks >= (s->is_on ? BALANCE_SPREAD_OFF_TICKS : BALANCE_SPREAD_ON_TICKS)) {
        s->is_on = !s->is_on;
        s->ticks = 0;
    }
    return s->is_on;
}
