/*
 * test_common_cpus.c - usable CPUs from the affinity count and cgroup CPU quotas: cgroup v2
 * (cpu.max, walking up to the root), v1 (cpu.cfs_quota_us / cpu.cfs_period_us under a
 * "cpu,cpuacct" or "cpu" mount, a container's path missing under its mount), no limit, and
 * the tightest of several; where the tightest quota's CPU time is read and its text; and the
 * idle time of a CPU set from /proc/stat's text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/cpus.h"

static char root[64];

/* Write text to root/rel, creating its directories. */
static void
put(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int
setup(void **state)
{
    (void) state;
    snprintf(root, sizeof(root), "/tmp/pgmux-cpus-XXXXXX");
    assert_non_null(mkdtemp(root));
    return 0;
}

static int
teardown(void **state)
{
    (void) state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void
test_cpu_max_text(void **state)
{
    (void) state;
    assert_int_equal(cpus_from_cpu_max("max 100000\n"), 0);
    assert_int_equal(cpus_from_cpu_max("100000 100000\n"), 1);
    assert_int_equal(cpus_from_cpu_max("150000 100000\n"), 2); /* 1.5 CPUs: rounded up */
    assert_int_equal(cpus_from_cpu_max("50000 100000"), 1);
    assert_int_equal(cpus_from_cpu_max("800000 100000"), 8);
    assert_int_equal(cpus_from_cpu_max(""), 0);
    assert_int_equal(cpus_from_cpu_max("12x 100000"), 0);
    assert_int_equal(cpus_from_cpu_max("100000 0"), 0);
}

static void
test_v2_quota_and_its_parents(void **state)
{
    (void) state;
    put("cpu.max", "max 100000\n");
    put("kubepods/cpu.max", "max 100000\n");
    put("kubepods/pod1/cpu.max", "250000 100000\n");
    put("kubepods/pod1/ctr/cpu.max", "max 100000\n");
    /* the limit sits on the pod, two levels above the process */
    assert_int_equal(cpus_usable_from(root, "0::/kubepods/pod1/ctr\n", 16), 3);
    /* fewer CPUs in the affinity mask than the quota allows */
    assert_int_equal(cpus_usable_from(root, "0::/kubepods/pod1/ctr\n", 2), 2);
    /* a tighter parent wins over a looser child */
    put("a/cpu.max", "100000 100000\n");
    put("a/b/cpu.max", "400000 100000\n");
    assert_int_equal(cpus_usable_from(root, "0::/a/b\n", 8), 1);
    /* inside a container: "/" is its own cgroup */
    assert_int_equal(cpus_usable_from(root, "0::/\n", 8), 8);
    put("cpu.max", "200000 100000\n");
    assert_int_equal(cpus_usable_from(root, "0::/\n", 8), 2);
}

static void
test_v1_quota(void **state)
{
    (void) state;
    put("cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    put("cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    put("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "300000\n");
    put("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
    const char *cg = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/x\n";
    assert_int_equal(cpus_usable_from(root, cg, 32), 3);
    /* the container's own view: its path is missing under the mount, the root holds it */
    put("cpu/cpu.cfs_quota_us", "50000\n");
    put("cpu/cpu.cfs_period_us", "100000\n");
    assert_int_equal(cpus_usable_from(root, "5:cpu:/docker/zzz\n", 32), 1);
    /* "cpuacct" alone is not the cpu controller */
    assert_int_equal(cpus_usable_from(root, "6:cpuacct:/docker/abc\n", 32), 32);
}

static void
test_no_limits(void **state)
{
    (void) state;
    assert_int_equal(cpus_usable_from(root, NULL, 6), 6);
    assert_int_equal(cpus_usable_from(root, "0::/nowhere\n", 6), 6);
    assert_int_equal(cpus_usable_from(root, "garbage without colons", 6), 6);
    /* affinity unknown: online CPUs */
    assert_int_equal(cpus_usable_from(root, NULL, 0), (int) sysconf(_SC_NPROCESSORS_ONLN));
    /* this process, here: at least one, at most what is online */
    int n = cpus_usable();
    assert_true(n >= 1 && n <= (int) sysconf(_SC_NPROCESSORS_ONLN));
}

static void
test_quota_and_its_usage_file(void **state)
{
    (void) state;
    struct cpus_quota q;
    /* v2: the exact quota (1.5 CPUs, not rounded) and the cpu.stat of the cgroup that sets it */
    put("cpu.max", "max 100000\n");
    put("kubepods/pod1/cpu.max", "150000 100000\n");
    put("kubepods/pod1/cpu.stat", "usage_usec 123456789\nuser_usec 1\nsystem_usec 2\n");
    put("kubepods/pod1/ctr/cpu.max", "max 100000\n");
    assert_true(cpus_quota_find(root, "0::/kubepods/pod1/ctr\n", &q));
    assert_int_equal(q.permille, 1500);
    assert_true(q.is_v2);
    char want[600];
    snprintf(want, sizeof(want), "%s/kubepods/pod1/cpu.stat", root);
    assert_string_equal(q.usage_path, want);
    /* a quota whose cgroup has no readable usage file: the quota alone */
    put("a/cpu.max", "50000 100000\n");
    assert_true(cpus_quota_find(root, "0::/a\n", &q));
    assert_int_equal(q.permille, 500);
    assert_string_equal(q.usage_path, "");
    /* v1 "cpu,cpuacct": cpuacct.usage beside the quota */
    put("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n");
    put("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
    put("cpu,cpuacct/docker/abc/cpuacct.usage", "5000000\n");
    assert_true(cpus_quota_find(root, "4:cpu,cpuacct:/docker/abc\n", &q));
    assert_int_equal(q.permille, 2500);
    assert_false(q.is_v2);
    snprintf(want, sizeof(want), "%s/cpu,cpuacct/docker/abc/cpuacct.usage", root);
    assert_string_equal(q.usage_path, want);
    /* v1 with cpu and cpuacct mounted apart: the same path under cpuacct */
    put("cpu/svc/cpu.cfs_quota_us", "50000\n");
    put("cpu/svc/cpu.cfs_period_us", "100000\n");
    put("cpuacct/svc/cpuacct.usage", "7000\n");
    assert_true(cpus_quota_find(root, "2:cpuacct:/svc\n1:cpu:/svc\n", &q));
    assert_int_equal(q.permille, 500);
    snprintf(want, sizeof(want), "%s/cpuacct/svc/cpuacct.usage", root);
    assert_string_equal(q.usage_path, want);
    /* v2, the quota on the root itself (a container's own cgroup seen through its cgroup
     * namespace) without a readable cpu.stat: the quota alone */
    put("cpu.max", "200000 100000\n");
    assert_true(cpus_quota_find(root, "0::/\n", &q));
    assert_int_equal(q.permille, 2000);
    assert_string_equal(q.usage_path, "");
    put("cpu.max", "max 100000\n");
    /* none */
    assert_false(cpus_quota_find(root, "0::/kubepods\n", &q));
    assert_int_equal(q.permille, 0);
    /* the usage files' texts */
    assert_int_equal(cpus_usage_us("usage_usec 123456789\nuser_usec 1\n", true), 123456789);
    assert_int_equal(cpus_usage_us("nr_periods 3\nusage_usec 42\n", true), 42);
    assert_int_equal(cpus_usage_us("user_usec 1\n", true), -1);
    assert_int_equal(cpus_usage_us("5000000\n", false), 5000);
    assert_int_equal(cpus_usage_us("", false), -1);
}

static void
test_stat_idle(void **state)
{
    (void) state;
    /* fields: user nice system idle iowait irq softirq steal guest guest_nice */
    const char *text = "cpu  300 0 100 900 20 0 10 0 50 0\n"
                       "cpu0 100 0 50 400 10 0 5 0 50 0\n"
                       "cpu1 200 0 50 500 10 0 5 0 0 0\n"
                       "cpu12 1 2 3 4 5 6 7 8 9 10\n"
                       "intr 12345 1 2 3\n"
                       "cpu3 garbage\n";
    uint64_t idle, total;
    /* all CPUs: the aggregate "cpu" line is not one of them; guest time not counted twice */
    assert_int_equal(cpus_stat_idle(text, strlen(text), NULL, &idle, &total), 3);
    assert_int_equal(idle, 410 + 510 + 9);
    assert_int_equal(total, 565 + 765 + 36);
    cpu_set_t mask;
    CPU_ZERO(&mask);
    CPU_SET(1, &mask);
    CPU_SET(12, &mask);
    assert_int_equal(cpus_stat_idle(text, strlen(text), &mask, &idle, &total), 2);
    assert_int_equal(idle, 510 + 9);
    assert_int_equal(total, 765 + 36);
    /* text cut inside cpu1's line: only the whole lines count */
    size_t cut = (size_t) (strstr(text, "cpu1") - text) + 10;
    assert_int_equal(cpus_stat_idle(text, cut, NULL, &idle, &total), 1);
    assert_int_equal(idle, 410);
    assert_int_equal(cpus_stat_idle("", 0, NULL, &idle, &total), 0);
    assert_int_equal(total, 0);
    /* this machine's own file has a line for each CPU this process may use */
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        char buf[65536];
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        cpu_set_t own;
        assert_int_equal(sched_getaffinity(0, sizeof(own), &own), 0);
        assert_int_equal(cpus_stat_idle(buf, n, &own, &idle, &total), CPU_COUNT(&own));
        assert_true(total > 0 && idle <= total);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_max_text),
        cmocka_unit_test_setup_teardown(test_v2_quota_and_its_parents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v1_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quota_and_its_usage_file, setup, teardown),
        cmocka_unit_test(test_stat_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
