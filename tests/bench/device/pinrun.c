/* pinrun: run a program pinned to a set of CPUs and/or as another user.
 *
 *   pinrun [-c CPULIST] [-u USER] [--] PROGRAM [ARG...]
 *
 * CPULIST is taskset's list form ("0-7,12"). The bench bundle carries this instead of relying
 * on taskset, setpriv, runuser or su being on the machine that runs it: a bare image may have
 * none of them, and PostgreSQL and PgBouncer refuse to run as root. The affinity is inherited
 * across fork and exec, so pinning pg_ctl pins the postmaster and every backend it starts. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int
parse_cpus(const char *s, cpu_set_t *set)
{
    CPU_ZERO(set);
    while (*s) {
        char *end;
        long lo = strtol(s, &end, 10);
        long hi = lo;
        if (end == s || lo < 0 || lo >= CPU_SETSIZE)
            return -1;
        s = end;
        if (*s == '-') {
            hi = strtol(s + 1, &end, 10);
            if (end == s + 1 || hi < lo || hi >= CPU_SETSIZE)
                return -1;
            s = end;
        }
        for (long c = lo; c <= hi; c++)
            CPU_SET((int) c, set);
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return CPU_COUNT(set) ? 0 : -1;
}

static void
usage(void)
{
    fprintf(stderr, "usage: pinrun [-c CPULIST] [-u USER] [--] PROGRAM [ARG...]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    const char *cpus = NULL, *user = NULL;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            cpus = argv[++i];
        else if (strcmp(argv[i], "-u") == 0 && i + 1 < argc)
            user = argv[++i];
        else if (argv[i][0] == '-')
            usage();
        else
            break;
    }
    if (i >= argc)
        usage();
    if (cpus && *cpus) {
        cpu_set_t set;
        if (parse_cpus(cpus, &set) != 0) {
            fprintf(stderr, "pinrun: bad CPU list: %s\n", cpus);
            return 2;
        }
        if (sched_setaffinity(0, sizeof(set), &set) != 0) {
            fprintf(stderr, "pinrun: sched_setaffinity(%s): %s\n", cpus, strerror(errno));
            return 1;
        }
    }
    if (user && *user) {
        struct passwd *pw = getpwnam(user);
        if (!pw) {
            fprintf(stderr, "pinrun: no user %s in the password database\n", user);
            return 1;
        }
        if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
            fprintf(stderr, "pinrun: cannot become %s: %s\n", user, strerror(errno));
            return 1;
        }
    }
    execvp(argv[i], argv + i);
    fprintf(stderr, "pinrun: %s: %s\n", argv[i], strerror(errno));
    return 127;
}
