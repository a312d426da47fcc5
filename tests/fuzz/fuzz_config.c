/*
 * fuzz_config.c - libFuzzer target for cfg_load (proxy/config.h): proxy.ini through inih and
 * config.c's own line reader, and the auth_file it names.
 *
 * Input layout: the ini text, optionally followed by "\n%%auth%%\n" and the text of a second
 * auth file. Each process makes its own directory /tmp/pgmux-fuzz-config.<pid>/ holding
 *   proxy.ini  the ini text (rewritten for every input; cfg_load reads a path),
 *   users.txt  a fixed, small userlist (plaintext, md5 and SCRAM secrets),
 *   auth.txt   the fuzzer's auth text, empty when the input has no separator.
 * auth_file names are resolved against the ini's directory, so "auth_file = users.txt" and
 * "auth_file = auth.txt" reach both. The directory is removed at exit.
 *
 * On success the snapshot is looked up, referenced and released as workers do; the error text
 * must always be a C string within its buffer.
 *
 * Seeds: tests/fuzz/corpus/config/. Single-threaded.
 */
#include "tests/fuzz/fuzz_common.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/config.h"

#define AUTH_SEP "\n%%auth%%\n"

static char dir[64];
static char ini_path[96];
static char users_path[96];
static char auth_path[96];

static const char users_text[] =
    "; fixed auth_file for fuzz_config\n"
    "\"demo\" \"demo\"\n"
    "\"md5user\" \"md50123456789abcdef0123456789abcdef\"\n"
    "\"scram\" \"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\"\n"
    "\"with \"\"quote\"\"\" \"x\"\n";

static void
write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0);
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        FUZZ_CHECK(w > 0);
        c += w;
        n -= (size_t) w;
    }
    FUZZ_CHECK(close(fd) == 0);
}

static void
cleanup(void)
{
    unlink(ini_path);
    unlink(users_path);
    unlink(auth_path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    snprintf(dir, sizeof(dir), "/tmp/pgmux-fuzz-config.%ld", (long) getpid());
    snprintf(ini_path, sizeof(ini_path), "%s/proxy.ini", dir);
    snprintf(users_path, sizeof(users_path), "%s/users.txt", dir);
    snprintf(auth_path, sizeof(auth_path), "%s/auth.txt", dir);
    if (mkdir(dir, 0700) != 0) {
        /* left over from a killed run with a recycled pid */
        cleanup();
        FUZZ_CHECK(mkdir(dir, 0700) == 0);
    }
    write_file(users_path, users_text, sizeof(users_text) - 1);
    atexit(cleanup);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t ini_len = size;
    const uint8_t *auth = NULL;
    size_t auth_len = 0;
    const uint8_t *sep = memmem(data, size, AUTH_SEP, strlen(AUTH_SEP));
    if (sep) {
        ini_len = (size_t) (sep - data);
        auth = sep + strlen(AUTH_SEP);
        auth_len = size - ini_len - strlen(AUTH_SEP);
    }
    write_file(ini_path, data, ini_len);
    write_file(auth_path, auth ? (const void *) auth : "", auth_len);

    struct cfg *c = NULL;
    char err[4096];
    /* errlen smaller than the buffer sometimes, to exercise truncation of the joined lines */
    size_t errlen = (size & 1) ? 1 + size % 300 : sizeof(err);
    memset(err, 0x5a, sizeof(err));
    int rc = cfg_load(ini_path, &c, err, errlen);
    FUZZ_CHECK(rc == 0 || rc == -1);
    FUZZ_CHECK(memchr(err, '\0', errlen) != NULL);
    for (size_t i = errlen; i < sizeof(err); i++) {
        FUZZ_CHECK(err[i] == 0x5a); /* nothing written past errlen */
    }
    if (rc == 0) {
        FUZZ_CHECK(c != NULL);
        FUZZ_CHECK(c->n_nodes >= 1 && c->workers >= 1);
        FUZZ_CHECK(c->max_idle_conns >= c->min_idle_conns);
        FUZZ_CHECK(c->max_open_conns >= 1 && c->max_idle_conns <= c->max_open_conns);
        for (int i = 0; i < c->n_users; i++) {
            FUZZ_CHECK(cfg_user_find(c, c->users[i].name) != NULL);
        }
        (void) cfg_user_find(c, "demo");
        (void) cfg_user_find(c, "");
        for (int i = 0; i < c->n_nodes; i++) {
            FUZZ_CHECK(c->nodes[i].name && c->nodes[i].host);
            (void) cfg_role_name(c->nodes[i].role);
        }
        (void) cfg_pool_mode_name(c->pool_mode);
        (void) cfg_auth_name(c->auth_type);
        struct cfg *r = cfg_ref(c);
        FUZZ_CHECK(r == c);
        cfg_unref(r);
        cfg_unref(c);
    } else {
        FUZZ_CHECK(c == NULL);
    }
    return 0;
}
