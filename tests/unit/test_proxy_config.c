/*
 * test_proxy_config.c - proxy/config.c: proxy.ini and auth_file loading, every error's
 * "FILE:LINE: key: reason" prefix, defaults, durations. Files are written with mkstemp under
 * /tmp and removed at the end of each test. Single-threaded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "common/cpus.h"
#include "proxy/config.h"

#define SCRAM_SECRET                                                                            \
    "SCRAM-SHA-256$4096:cGdtdXgtdGVzdC1zYWx0IQ==$yKcO3dpZLLiC5VSPjKRnwUtsiCt78iN3+jGTW1Rkeeg=:" \
    "YCv721DLZqBzDH+NSKI/lw8zdu43zHdsUjuCqCLK9eY="
#define MD5_SECRET "md5ee69efad287c7423caf0b3229d71f567"

/* Files made by the current test, removed by teardown. */
static char made[16][64];
static int n_made;
static char ini_path[64];   /* the last ini written */
static char users_path[64]; /* the last auth_file written */
static char err[8192];

static const char *
write_tmp(const char *text, char *path_out)
{
    char path[64] = "/tmp/pgmux_cfg_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t) len);
    assert_int_equal(close(fd), 0);
    assert_true(n_made < 16);
    strcpy(made[n_made++], path);
    strcpy(path_out, path);
    return path_out;
}

static int
teardown(void **state)
{
    (void) state;
    for (int i = 0; i < n_made; i++) {
        unlink(made[i]);
    }
    n_made = 0;
    return 0;
}

/* Write a userlist; its base name (the ini resolves it against /tmp) goes into users_path. */
static const char *
write_users(const char *text)
{
    write_tmp(text, users_path);
    return users_path + strlen("/tmp/");
}

/* Load an ini. "@USERS@" in text becomes the last userlist's base name (a relative path). */
static int
load_text(const char *text, struct cfg **out)
{
    char buf[8192];
    const char *at = strstr(text, "@USERS@");
    if (at != NULL) {
        snprintf(buf, sizeof buf, "%.*s%s%s", (int) (at - text), text, users_path + strlen("/tmp/"),
                 at + strlen("@USERS@"));
        text = buf;
    }
    write_tmp(text, ini_path);
    memset(err, 'x', sizeof err); /* must be overwritten with a terminated string */
    return cfg_load(ini_path, out, err, sizeof err);
}

static int
count_lines(const char *s)
{
    if (*s == '\0') {
        return 0;
    }
    int n = 1;
    for (; *s; s++) {
        n += *s == '\n';
    }
    return n;
}

/* Assert that one line of err starts with "FILE:LINE: rest". */
static void
expect_line(const char *file, int line, const char *rest)
{
    char want[512];
    snprintf(want, sizeof want, "%s:%d: %s", file, line, rest);
    size_t wl = strlen(want);
    for (const char *s = err; s != NULL && *s;) {
        if (strncmp(s, want, wl) == 0) {
            return;
        }
        s = strchr(s, '\n');
        s = s ? s + 1 : NULL;
    }
    fail_msg("no error line starting with\n  %s\nin\n%s", want, err);
}

/* Load text, expect failure with exactly n_lines error lines. */
static void
expect_fail(const char *text, int n_lines)
{
    struct cfg *c = (struct cfg *) 1;
    assert_int_equal(load_text(text, &c), -1);
    assert_null(c);
    if (n_lines >= 0 && count_lines(err) != n_lines) {
        fail_msg("expected %d error lines, got:\n%s", n_lines, err);
    }
}

#define NODE_A "[node.a]\nhost = db1\n"

/* ---------------------------------------------------------------------------------------- */

static void
test_full_valid(void **state)
{
    (void) state;
    write_users("; comment\n"
                "# another comment\n"
                "\n"
                "\"alice\" \"" MD5_SECRET "\"\n"
                "\"bob\" \"" SCRAM_SECRET "\" extra fields ignored\n"
                "  \"car\"\"ol\"   \"pass \"\"word\"\"\"\r\n"
                "\"dave\" \"plain\"\n"
                "\"app@azure\" \"pw\"");
    const char *ini = "; proxy.ini with every key\n"
                      "[pgmux]\n"
                      "listen_addr = \"0.0.0.0\"\n"
                      "listen_port = 7432 ; inline comment\n"
                      "workers = 4 # hash comment\n"
                      "max_client_conn = 500\n"
                      "auth_type = md5\n"
                      "auth_file = @USERS@\n"
                      "admin_users = alice, bob\n"
                      "stats_users = dave\n"
                      "server_reset_query = \"RESET ALL; SELECT 1 # not a comment\"\n"
                      "client_idle_timeout = 5m\n"
                      "idle_transaction_timeout = 30s\n"
                      "client_login_timeout = 250ms\n"
                      "query_wait_timeout = 0\n"
                      "server_connect_timeout = 3s\n"
                      "server_login_retry = 2\n"
                      "log_level = debug\n"
                      "max_message_size = 64kB\n"
                      "\n"
                      "[pool]\n"
                      "    pool_mode = session\n"
                      "    max_open_conns = 10\n"
                      "    max_idle_conns = 8\n"
                      "    min_idle_conns = 2\n"
                      "    max_db_connections = 30\n"
                      "    max_user_connections = 40\n"
                      "    conn_max_lifetime = 1h\n"
                      "    conn_max_idle_time = 0\n"
                      "    warm_pools = alice@app, app@azure@y\n"
                      "    max_prepared_statements = 250\n"
                      "    track_parameters = statement_timeout, myapp.tenant\n"
                      "    pin_session_state = off\n"
                      "\n"
                      "[node.primary-1]\n"
                      "host = 10.0.0.1\n"
                      "port = 5433\n"
                      "role = primary\n"
                      "weight = 0\n"
                      "[node.r_2]\n"
                      "host: db2.example\n"
                      "role = replica\n"
                      "weight = 1000\n";
    struct cfg *c = NULL;
    int rc = load_text(ini, &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_non_null(c);
    assert_string_equal(c->path, ini_path);
    assert_string_equal(c->listen_addr, "0.0.0.0");
    assert_int_equal(c->listen_port, 7432);
    assert_int_equal(c->workers, 4);
    assert_int_equal(c->max_client_conn, 500);
    assert_int_equal(c->auth_type, CFG_AUTH_MD5);
    assert_string_equal(c->auth_file, users_path); /* resolved against the ini's directory */
    assert_int_equal(c->n_admin_users, 2);
    assert_string_equal(c->admin_users[0], "alice");
    assert_string_equal(c->admin_users[1], "bob");
    assert_int_equal(c->n_stats_users, 1);
    assert_string_equal(c->stats_users[0], "dave");
    assert_string_equal(c->server_reset_query, "RESET ALL; SELECT 1 # not a comment");
    assert_int_equal(c->client_idle_timeout_ms, 300000);
    assert_int_equal(c->idle_transaction_timeout_ms, 30000);
    assert_int_equal(c->client_login_timeout_ms, 250);
    assert_int_equal(c->query_wait_timeout_ms, 0);
    assert_int_equal(c->server_connect_timeout_ms, 3000);
    assert_int_equal(c->server_login_retry_ms, 2000);
    assert_int_equal(c->log_level, LOG_DEBUG);
    assert_int_equal(c->max_message_size, 65536);
    assert_int_equal(c->pool_mode, CFG_POOL_SESSION);
    assert_int_equal(c->max_open_conns, 10);
    assert_int_equal(c->max_idle_conns, 8);
    assert_int_equal(c->min_idle_conns, 2);
    assert_int_equal(c->max_db_connections, 30);
    assert_int_equal(c->max_user_connections, 40);
    assert_int_equal(c->conn_max_lifetime_ms, 3600000);
    assert_int_equal(c->conn_max_idle_time_ms, 0);
    assert_int_equal(c->n_warm_pools, 2);
    assert_string_equal(c->warm_pools[0].user, "alice");
    assert_string_equal(c->warm_pools[0].database, "app");
    assert_string_equal(c->warm_pools[1].user, "app@azure");
    assert_string_equal(c->warm_pools[1].database, "y");
    assert_int_equal(c->max_prepared_statements, 250);
    assert_int_equal(c->n_track_parameters, 2);
    assert_string_equal(c->track_parameters[0], "statement_timeout");
    assert_string_equal(c->track_parameters[1], "myapp.tenant");
    assert_false(c->pin_session_state);
    assert_int_equal(c->n_db_overrides, 0);
    assert_int_equal(c->n_user_overrides, 0);

    assert_int_equal(c->n_nodes, 2);
    assert_string_equal(c->nodes[0].name, "primary-1");
    assert_string_equal(c->nodes[0].host, "10.0.0.1");
    assert_int_equal(c->nodes[0].port, 5433);
    assert_int_equal(c->nodes[0].role, CFG_ROLE_PRIMARY);
    assert_int_equal(c->nodes[0].weight, 0);
    assert_int_equal(c->nodes[0].line, 35);
    assert_string_equal(c->nodes[1].name, "r_2");
    assert_string_equal(c->nodes[1].host, "db2.example");
    assert_int_equal(c->nodes[1].port, 5432);
    assert_int_equal(c->nodes[1].role, CFG_ROLE_REPLICA);
    assert_int_equal(c->nodes[1].weight, 1000);
    assert_int_equal(c->nodes[1].line, 40);

    assert_int_equal(c->n_users, 5);
    assert_string_equal(cfg_user_find(c, "app@azure")->secret, "pw");
    assert_string_equal(cfg_user_find(c, "alice")->secret, MD5_SECRET);
    assert_string_equal(cfg_user_find(c, "bob")->secret, SCRAM_SECRET);
    assert_string_equal(cfg_user_find(c, "car\"ol")->secret, "pass \"word\"");
    assert_string_equal(cfg_user_find(c, "dave")->secret, "plain");
    assert_null(cfg_user_find(c, "eve"));
    assert_null(cfg_user_find(c, "alic"));

    struct cfg *r = cfg_ref(c);
    assert_ptr_equal(r, c);
    cfg_unref(c);
    assert_string_equal(r->listen_addr, "0.0.0.0"); /* still alive */
    cfg_unref(r);
    cfg_unref(NULL);
}

static void
test_defaults(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    int rc = load_text("[pgmux]\nauth_type = trust\n" NODE_A, &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_string_equal(c->listen_addr, "127.0.0.1");
    assert_int_equal(c->listen_port, 6432);
    /* workers = 0: the CPUs this process may use (common/cpus.c, tested on its own) */
    int ncpu = cpus_usable();
    assert_int_equal(c->workers, ncpu > 256 ? 256 : ncpu);
    assert_int_equal(c->max_client_conn, 1000);
    assert_int_equal(c->auth_type, CFG_AUTH_TRUST);
    assert_null(c->auth_file);
    assert_int_equal(c->n_admin_users, 0);
    assert_null(c->admin_users);
    assert_int_equal(c->n_stats_users, 0);
    assert_string_equal(c->server_reset_query, "DISCARD ALL");
    assert_int_equal(c->client_idle_timeout_ms, 0);
    assert_int_equal(c->idle_transaction_timeout_ms, 0);
    assert_int_equal(c->client_login_timeout_ms, 60000);
    assert_int_equal(c->query_wait_timeout_ms, 120000);
    assert_int_equal(c->server_connect_timeout_ms, 15000);
    assert_int_equal(c->server_login_retry_ms, 1000);
    assert_int_equal(c->log_level, LOG_INFO);
    assert_int_equal(c->max_message_size, 1073741823);
    assert_int_equal(c->pool_mode, CFG_POOL_SESSION);
    assert_int_equal(c->max_open_conns, 20);
    assert_int_equal(c->max_idle_conns, 20);
    assert_int_equal(c->min_idle_conns, 0);
    assert_int_equal(c->max_db_connections, 0);
    assert_int_equal(c->max_user_connections, 0);
    assert_int_equal(c->conn_max_lifetime_ms, 3600000);
    assert_int_equal(c->conn_max_idle_time_ms, 600000);
    assert_int_equal(c->n_warm_pools, 0);
    assert_int_equal(c->max_prepared_statements, 100);
    assert_int_equal(c->n_track_parameters, 0);
    assert_null(c->track_parameters);
    assert_true(c->pin_session_state);
    assert_int_equal(c->n_db_overrides, 0);
    assert_null(c->db_overrides);
    assert_int_equal(c->n_user_overrides, 0);
    assert_null(c->user_overrides);
    assert_int_equal(cfg_pool_mode_for(c, "db", "u"), CFG_POOL_SESSION);
    assert_int_equal(c->n_nodes, 1);
    assert_string_equal(c->nodes[0].name, "a");
    assert_int_equal(c->nodes[0].port, 5432);
    assert_int_equal(c->nodes[0].role, CFG_ROLE_AUTO);
    assert_int_equal(c->nodes[0].weight, 1);
    assert_int_equal(c->nodes[0].line, 3);
    assert_int_equal(c->n_users, 0);
    assert_null(cfg_user_find(c, "alice"));
    cfg_unref(c);
}

static void
test_max_idle_follows_max_open(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    int rc = load_text("[pgmux]\nauth_type = trust\n[pool]\nmax_open_conns = 5\n" NODE_A, &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->max_open_conns, 5);
    assert_int_equal(c->max_idle_conns, 5);
    assert_int_equal(c->workers > 0, 1);
    cfg_unref(c);
}

static void
test_empty_admin_list_and_reset_query(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    int rc = load_text("[pgmux]\nauth_type = trust\nadmin_users = \" , ,\"\n"
                       "server_reset_query = \"\"\n" NODE_A,
                       &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->n_admin_users, 0);
    assert_string_equal(c->server_reset_query, "");
    cfg_unref(c);
}

static void
test_unknown_key(void **state)
{
    (void) state;
    expect_fail("[pgmux]\nauth_type = trust\nlisten_prot = 1\n" NODE_A "hostname = x\n"
                "[pool]\nmax_conns = 3\n",
                3);
    expect_line(ini_path, 3, "listen_prot: unknown key");
    expect_line(ini_path, 6, "hostname: unknown key");
    expect_line(ini_path, 8, "max_conns: unknown key");
}

static void
test_unknown_section(void **state)
{
    (void) state;
    /* one error for the section; its keys are not reported again */
    expect_fail("[pgmux]\nauth_type = trust\n[databases]\nfoo = bar\nbaz = 1\n[empty]\n" NODE_A, 2);
    expect_line(ini_path, 3, "[databases]: unknown section");
    expect_line(ini_path, 6, "[empty]: unknown section");
}

static void
test_bad_section_names(void **state)
{
    (void) state;
    expect_fail("[pgmux]\nauth_type = trust\n[node.bad name]\nhost = x\n[node.]\n"
                "[node.a]\nhost = h\n[node.a]\nhost = h2\n[pgmux]\n[pool\n",
                5);
    expect_line(ini_path, 3, "[node.bad name]: node name must be");
    expect_line(ini_path, 5, "[node.]: node name must be");
    expect_line(ini_path, 8, "[node.a]: duplicate section (first on line 6)");
    expect_line(ini_path, 10, "[pgmux]: duplicate section (first on line 1)");
    expect_line(ini_path, 11, "section: section header without a closing ']'");
}

static void
test_bad_int(void **state)
{
    (void) state;
    expect_fail("[pgmux]\nauth_type = trust\nlisten_port = abc\nworkers = 4x\n"
                "[pool]\nmax_open_conns = 1.5\n[node.a]\nhost = h\nport = \n",
                4);
    expect_line(ini_path, 3, "listen_port: 'abc' is not an integer");
    expect_line(ini_path, 4, "workers: '4x' is not an integer");
    expect_line(ini_path, 6, "max_open_conns: '1.5' is not an integer");
    expect_line(ini_path, 9, "port: '' is not an integer");
}

static void
test_out_of_range(void **state)
{
    (void) state;
    expect_fail("[pgmux]\n"
                "auth_type = trust\n"
                "listen_port = 70000\n"
                "workers = 257\n"
                "max_client_conn = 0\n"
                "max_message_size = 1000\n"
                "[pool]\n"
                "max_open_conns = 0\n"
                "min_idle_conns = -1\n"
                "[node.a]\n"
                "host = h\n"
                "port = 0\n"
                "weight = 1001\n"
                "[node.b]\n"
                "host = h\n"
                "weight = -1\n"
                "port = 99999999999999999999\n",
                10);
    expect_line(ini_path, 3, "listen_port: 70000 is out of range 1..65535");
    expect_line(ini_path, 4, "workers: 257 is out of range 0..256");
    expect_line(ini_path, 5, "max_client_conn: 0 is out of range 1..1000000");
    expect_line(ini_path, 6, "max_message_size: '1000' is out of range 1024..1073741823");
    expect_line(ini_path, 8, "max_open_conns: 0 is out of range 1..");
    expect_line(ini_path, 9, "min_idle_conns: -1 is out of range 0..");
    expect_line(ini_path, 12, "port: 0 is out of range 1..65535");
    expect_line(ini_path, 13, "weight: 1001 is out of range 0..1000");
    expect_line(ini_path, 16, "weight: -1 is out of range 0..1000");
    /* too big for int64: not an integer at all */
    assert_non_null(strstr(err, "17: port: '99999999999999999999' is not an integer"));
}

static void
test_max_message_size(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    assert_int_equal(load_text("[pgmux]\nauth_type = trust\nmax_message_size = 16MB\n" NODE_A, &c),
                     0);
    assert_int_equal(c->max_message_size, 16 * 1024 * 1024);
    cfg_unref(c);
    assert_int_equal(
        load_text("[pgmux]\nauth_type = trust\nmax_message_size = 1073741823\n" NODE_A, &c), 0);
    assert_int_equal(c->max_message_size, 1073741823);
    cfg_unref(c);
    expect_fail("[pgmux]\nauth_type = trust\nmax_message_size = 1GB\n" NODE_A, 1);
    expect_line(ini_path, 3, "max_message_size: '1GB' is out of range 1024..1073741823 bytes");
    expect_fail("[pgmux]\nauth_type = trust\nmax_message_size = 2TB\n" NODE_A, 1);
    expect_line(ini_path, 3, "max_message_size: '2TB' is not a size");
}

static void
test_access_keys(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    /* defaults */
    assert_int_equal(load_text("[pgmux]\nauth_type = trust\n" NODE_A, &c), 0);
    assert_int_equal(c->max_client_conn_per_addr, 0);
    assert_false(c->has_hba);
    assert_null(c->auth_user);
    assert_string_equal(c->auth_query, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1");
    assert_null(c->auth_dbname);
    assert_int_equal(c->auth_cache_ttl_ms, 60000);
    cfg_unref(c);

    char hba[64], ini[512];
    write_tmp("host all all 10.0.0.0/8 md5\nlocal all all trust\n", hba);
    write_users("\"lookup\" \"pw\"\n\"hashed\" \"" MD5_SECRET "\"\n");
    snprintf(ini, sizeof ini,
             "[pgmux]\nauth_file = @USERS@\nhba_file = %s\nmax_client_conn_per_addr = 5\n"
             "auth_user = lookup\nauth_dbname = postgres\nauth_cache_ttl = 0\n"
             "auth_query = SELECT u, p FROM f($1)\n" NODE_A,
             hba);
    assert_int_equal(load_text(ini, &c), 0);
    assert_true(c->has_hba);
    assert_int_equal(c->hba.n, 2);
    assert_int_equal(c->max_client_conn_per_addr, 5);
    assert_string_equal(c->auth_user, "lookup");
    assert_string_equal(c->auth_dbname, "postgres");
    assert_string_equal(c->auth_query, "SELECT u, p FROM f($1)");
    assert_int_equal(c->auth_cache_ttl_ms, 0);
    cfg_unref(c);

    expect_fail("[pgmux]\nauth_type = trust\nmax_client_conn_per_addr = -1\n" NODE_A, 1);
    expect_line(ini_path, 3, "max_client_conn_per_addr: -1 is out of range 0..1000000");
    /* every bad hba line, in the hba file's own name */
    write_tmp("host all all 10.0.0.0/8 md5\nhost all all 10.0.0.0/8 ldap\nbogus\n", hba);
    snprintf(ini, sizeof ini, "[pgmux]\nauth_type = trust\nhba_file = %s\n" NODE_A, hba);
    expect_fail(ini, 2);
    expect_line(hba, 2, "method: 'ldap' is not supported by pgmux");
    expect_line(hba, 3, "type: 'bogus' is not a connection type");
    expect_fail("[pgmux]\nauth_file = @USERS@\nauth_user = hashed\n" NODE_A, 1);
    expect_line(ini_path, 3, "auth_user: user 'hashed' needs a plaintext password in auth_file");
    expect_fail("[pgmux]\nauth_type = trust\nauth_user = lookup\n" NODE_A, 1);
    expect_line(ini_path, 3, "auth_user: needs auth_file");
    expect_fail("[pgmux]\nauth_type = trust\nauth_dbname = x\n" NODE_A, 1);
    expect_line(ini_path, 3, "auth_dbname: needs auth_user");
}

static void
test_bad_duration(void **state)
{
    (void) state;
    expect_fail("[pgmux]\nauth_type = trust\nclient_idle_timeout = 5x\n"
                "query_wait_timeout = -1s\nserver_connect_timeout = 0\n"
                "client_login_timeout = 0ms\n[pool]\nconn_max_lifetime = 1.5h\n"
                "conn_max_idle_time = 9000h\n" NODE_A,
                6);
    expect_line(ini_path, 3, "client_idle_timeout: '5x' is not a duration");
    expect_line(ini_path, 4, "query_wait_timeout: '-1s' is not a duration");
    expect_line(ini_path, 5, "server_connect_timeout: '0' is out of range 1ms..");
    expect_line(ini_path, 6, "client_login_timeout: '0ms' is out of range 1ms..");
    expect_line(ini_path, 8, "conn_max_lifetime: '1.5h' is not a duration");
    expect_line(ini_path, 9, "conn_max_idle_time: '9000h' is out of range 0s..8784h");
}

static void
test_bad_enum(void **state)
{
    (void) state;
    expect_fail("[pgmux]\nauth_type = password\nlog_level = verbose\n[pool]\npool_mode = txn\n"
                "[node.a]\nhost = h\nrole = leader\n",
                4);
    expect_line(ini_path, 2, "auth_type: 'password' is not one of: trust, md5, scram-sha-256");
    expect_line(ini_path, 3,
                "log_level: 'verbose' is not one of: fatal, error, warning, info, debug, trace");
    expect_line(ini_path, 5, "pool_mode: 'txn' is not one of: session, transaction, statement");
    expect_line(ini_path, 8, "role: 'leader' is not one of: auto, primary, replica");
}

static void
test_duplicate_key(void **state)
{
    (void) state;
    expect_fail("[pgmux]\nauth_type = trust\nlisten_port = 1\nlisten_port = 2\n"
                "[node.a]\nhost = h\nhost = h2\n",
                2);
    expect_line(ini_path, 4, "listen_port: duplicate key (first set on line 3)");
    expect_line(ini_path, 7, "host: duplicate key (first set on line 6)");
}

static void
test_no_node(void **state)
{
    (void) state;
    expect_fail("[pgmux]\nauth_type = trust\n", 1);
    expect_line(ini_path, 0, "node: no [node.NAME] section");
}

static void
test_node_without_host(void **state)
{
    (void) state;
    expect_fail("[pgmux]\nauth_type = trust\n[node.a]\nport = 5433\n[node.b]\nhost =\n", 2);
    expect_line(ini_path, 3, "host: missing in [node.a]");
    expect_line(ini_path, 6, "host: must not be empty");
}

static void
test_two_primaries(void **state)
{
    (void) state;
    expect_fail("[pgmux]\nauth_type = trust\n"
                "[node.a]\nhost = h\nrole = primary\n"
                "[node.b]\nhost = h\nrole = replica\n"
                "[node.c]\nhost = h\nrole = primary\n",
                1);
    expect_line(ini_path, 11, "role: more than one node with role = primary ([node.a] on line 5");
}

static void
test_auth_file_missing(void **state)
{
    (void) state;
    /* absent: reported on the auth_type line, or the [pgmux] line when auth_type is default */
    expect_fail("[pgmux]\nauth_type = md5\n" NODE_A, 1);
    expect_line(ini_path, 2, "auth_file: required when auth_type is md5");
    expect_fail("\n[pgmux]\nlisten_port = 6000\n" NODE_A, 1);
    expect_line(ini_path, 2, "auth_file: required when auth_type is scram-sha-256");
    expect_fail(NODE_A, 1);
    expect_line(ini_path, 0, "auth_file: required when auth_type is scram-sha-256");
    /* named but not there */
    expect_fail("[pgmux]\nauth_file = /nonexistent/pgmux/users.txt\n" NODE_A, 1);
    expect_line(ini_path, 2,
                "auth_file: cannot read '/nonexistent/pgmux/users.txt': No such file or directory");
    /* trust needs none */
    struct cfg *c = NULL;
    assert_int_equal(load_text("[pgmux]\nauth_type = trust\n" NODE_A, &c), 0);
    cfg_unref(c);
}

static void
test_malformed_userlist(void **state)
{
    (void) state;
    write_users("\"alice\" \"" MD5_SECRET "\"\n"
                "bob \"secret1\"\n"
                "\"carol \"secret2\"\n"
                "\"dave\"\n"
                "\"erin\" \"secret3\n"
                "\"\" \"secret4\"\n"
                "\"frank\" \"SCRAM-SHA-256$4096:bad$secret5\"\n"
                "\"gina\" \"md5ZZZZefad287c7423caf0b3229d71f567\"\n"
                "\"hank\" \"\"\n"
                "\"ivan\" \"md5isnotahash\"\n");
    expect_fail("[pgmux]\nauth_type = scram-sha-256\nauth_file = @USERS@\n" NODE_A, 8);
    expect_line(users_path, 2, "expected a double-quoted user name");
    expect_line(users_path, 3, "user 'carol ': expected a double-quoted secret");
    expect_line(users_path, 4, "user 'dave': expected a double-quoted secret");
    expect_line(users_path, 5, "user 'erin': unterminated double-quoted secret");
    expect_line(users_path, 6, "empty user name");
    expect_line(users_path, 7, "user 'frank': malformed SCRAM-SHA-256 secret");
    expect_line(users_path, 8, "user 'gina': malformed md5 secret");
    expect_line(users_path, 9, "user 'hank': empty secret");
    /* secrets never appear in messages */
    assert_null(strstr(err, "secret1"));
    assert_null(strstr(err, "secret2"));
    assert_null(strstr(err, "secret3"));
    assert_null(strstr(err, "secret4"));
    assert_null(strstr(err, "secret5"));
    assert_null(strstr(err, "ZZZZ"));
    assert_null(strstr(err, MD5_SECRET));
}

static void
test_duplicate_user(void **state)
{
    (void) state;
    write_users("\"alice\" \"a\"\n\"bob\" \"b\"\n\"alice\" \"c\"\n\"alice\" \"d\"\n");
    expect_fail("[pgmux]\nauth_file = @USERS@\n" NODE_A, 2);
    expect_line(users_path, 3, "duplicate user 'alice' (first on line 1)");
    expect_line(users_path, 4, "duplicate user 'alice' (first on line 1)");
}

static void
test_pool_limits(void **state)
{
    (void) state;
    expect_fail(
        "[pgmux]\nauth_type = trust\n[pool]\nmax_open_conns = 4\nmax_idle_conns = 5\n" NODE_A, 1);
    expect_line(ini_path, 5, "max_idle_conns: 5 is more than max_open_conns (4)");
    expect_fail(
        "[pgmux]\nauth_type = trust\n[pool]\nmax_idle_conns = 2\nmin_idle_conns = 3\n" NODE_A, 1);
    expect_line(ini_path, 5, "min_idle_conns: 3 is more than max_idle_conns (2)");
    /* min_idle against the default max_idle (= max_open) */
    expect_fail(
        "[pgmux]\nauth_type = trust\n[pool]\nmax_open_conns = 2\nmin_idle_conns = 3\n" NODE_A, 1);
    expect_line(ini_path, 5, "min_idle_conns: 3 is more than max_idle_conns (2)");
}

static void
test_no_cascading_errors(void **state)
{
    (void) state;
    /* a refused value keeps its default; rules comparing against it stay quiet */
    expect_fail("[pgmux]\nauth_type = bogus\n[pool]\nmax_open_conns = 0\nmax_idle_conns = 50\n"
                "min_idle_conns = 40\n" NODE_A,
                2);
    expect_line(ini_path, 2, "auth_type: 'bogus' is not one of");
    expect_line(ini_path, 4, "max_open_conns: 0 is out of range");
}

static void
test_crlf_bom_and_comments(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    int rc = load_text("\xEF\xBB\xBF[pgmux] ; the main section\r\n"
                       "auth_type = trust\t# tab before the comment\r\n"
                       "listen_addr = \"::1\"   ; quoted\r\n"
                       "\t; indented comment\r\n"
                       "[node.a]\r\nhost = h\r\n"
                       "port = 6000",
                       &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->auth_type, CFG_AUTH_TRUST);
    assert_string_equal(c->listen_addr, "::1");
    assert_string_equal(c->nodes[0].host, "h");
    assert_int_equal(c->nodes[0].port, 6000); /* last line without a newline */
    assert_int_equal(c->nodes[0].line, 5);
    cfg_unref(c);
}

static void
test_pool_mode_values(void **state)
{
    (void) state;
    static const struct {
        const char *text;
        enum cfg_pool_mode mode;
    } cases[] = {
        { "session", CFG_POOL_SESSION },
        { "transaction", CFG_POOL_TRANSACTION },
        { "statement", CFG_POOL_STATEMENT },
        { "\"transaction\"", CFG_POOL_TRANSACTION },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "[pgmux]\nauth_type = trust\n[pool]\npool_mode = %s\n" NODE_A,
                 cases[i].text);
        struct cfg *c = NULL;
        if (load_text(text, &c) != 0) {
            fail_msg("%s: %s", cases[i].text, err);
        }
        assert_int_equal(c->pool_mode, cases[i].mode);
        assert_int_equal(cfg_pool_mode_for(c, "any", "one"), cases[i].mode);
        cfg_unref(c);
        teardown(NULL);
    }
    /* enum values are case-sensitive, like the other enums */
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\npool_mode = Transaction\n" NODE_A, 1);
    expect_line(ini_path, 4,
                "pool_mode: 'Transaction' is not one of: session, transaction, statement");
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\npool_mode =\n" NODE_A, 1);
    expect_line(ini_path, 4, "pool_mode: '' is not one of");
}

static void
test_max_prepared_statements(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    assert_int_equal(
        load_text("[pgmux]\nauth_type = trust\n[pool]\nmax_prepared_statements = 0\n" NODE_A, &c),
        0);
    assert_int_equal(c->max_prepared_statements, 0);
    cfg_unref(c);
    assert_int_equal(
        load_text("[pgmux]\nauth_type = trust\n[pool]\nmax_prepared_statements = 100000\n" NODE_A,
                  &c),
        0);
    assert_int_equal(c->max_prepared_statements, 100000);
    cfg_unref(c);
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\nmax_prepared_statements = 100001\n" NODE_A, 1);
    expect_line(ini_path, 4, "max_prepared_statements: 100001 is out of range 0..100000");
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\nmax_prepared_statements = -1\n" NODE_A, 1);
    expect_line(ini_path, 4, "max_prepared_statements: -1 is out of range 0..100000");
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\nmax_prepared_statements = lots\n" NODE_A, 1);
    expect_line(ini_path, 4, "max_prepared_statements: 'lots' is not an integer");
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\nmax_prepared_statements = 1\n"
                "max_prepared_statements = 2\n" NODE_A,
                1);
    expect_line(ini_path, 5, "max_prepared_statements: duplicate key (first set on line 4)");
    /* a [pool] key, not a [pgmux] one */
    expect_fail("[pgmux]\nauth_type = trust\nmax_prepared_statements = 5\n" NODE_A, 1);
    expect_line(ini_path, 3, "max_prepared_statements: unknown key in [pgmux]");
}

static void
test_primary_functions(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    /* folded to lower case; a qualified name adds its bare one; sorted; repeats dropped */
    int rc = load_text(
        "[pgmux]\nauth_type = trust\n"
        "primary_functions = Audit.Log_Event, bump, next_id$, audit.log_event, BUMP\n" NODE_A,
        &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->n_primary_functions, 4);
    assert_string_equal(c->primary_functions[0], "audit.log_event");
    assert_string_equal(c->primary_functions[1], "bump");
    assert_string_equal(c->primary_functions[2], "log_event");
    assert_string_equal(c->primary_functions[3], "next_id$");
    uint64_t h = c->primary_functions_hash;
    cfg_unref(c);

    /* the same list written differently: the same hash; none: an empty list */
    rc = load_text("[pgmux]\nauth_type = trust\n"
                   "primary_functions = next_id$,bump,audit.log_event\n" NODE_A,
                   &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_true(c->primary_functions_hash == h);
    cfg_unref(c);
    rc = load_text("[pgmux]\nauth_type = trust\n" NODE_A, &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->n_primary_functions, 0);
    assert_null(c->primary_functions);
    assert_true(c->primary_functions_hash != h);
    cfg_unref(c);

    expect_fail("[pgmux]\nauth_type = trust\n"
                "primary_functions = ok, 1st, a.b.c, \"Quoted\"x, .f, s., with space, "
                "f(), x123456789012345678901234567890123456789012345678901234567890123\n" NODE_A,
                8);
    expect_line(ini_path, 3, "primary_functions: '1st' is not a function name");
    expect_line(ini_path, 3, "primary_functions: 'a.b.c' is not a function name");
    expect_line(ini_path, 3, "primary_functions: '\"Quoted\"x' is not a function name");
    expect_line(ini_path, 3, "primary_functions: '.f' is not a function name");
    expect_line(ini_path, 3, "primary_functions: 's.' is not a function name");
    expect_line(ini_path, 3, "primary_functions: 'with space' is not a function name");
    expect_line(ini_path, 3, "primary_functions: 'f()' is not a function name");
    expect_line(ini_path, 3, "primary_functions: 'x12345678901234567890");
    /* a [pgmux] key */
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\nprimary_functions = f\n" NODE_A, 1);
    expect_line(ini_path, 4, "primary_functions: unknown key in [pool]");
}

static void
test_routing_keys(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    int rc = load_text("[pgmux]\nauth_type = trust\n" NODE_A, &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    /* defaults */
    assert_true(c->read_write_split);
    assert_int_equal(c->replica_balance, CFG_BALANCE_LEAST_CONN);
    assert_int_equal(c->primary_reads_weight, 0);
    assert_int_equal(c->max_replica_lag_ms, 0);
    assert_int_equal(c->max_replica_lag_bytes, 0);
    assert_int_equal(c->read_your_writes, CFG_RYW_LSN);
    assert_int_equal(c->read_your_writes_window_ms, 1000);
    cfg_unref(c);

    rc = load_text("[pgmux]\nauth_type = trust\nread_write_split = off\nreplica_balance = hash\n"
                   "primary_reads_weight = 3\nmax_replica_lag = 250ms\n"
                   "max_replica_lag_bytes = 16GB\nread_your_writes = window\n"
                   "read_your_writes_window = 2s\n" NODE_A,
                   &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_false(c->read_write_split);
    assert_int_equal(c->replica_balance, CFG_BALANCE_HASH);
    assert_string_equal(cfg_balance_name(c->replica_balance), "hash");
    assert_int_equal(c->primary_reads_weight, 3);
    assert_int_equal(c->max_replica_lag_ms, 250);
    assert_true(c->max_replica_lag_bytes == 16LL * 1024 * 1024 * 1024);
    assert_int_equal(c->read_your_writes, CFG_RYW_WINDOW);
    assert_string_equal(cfg_ryw_name(c->read_your_writes), "window");
    assert_int_equal(c->read_your_writes_window_ms, 2000);
    cfg_unref(c);

    expect_fail("[pgmux]\nauth_type = trust\nreplica_balance = fastest\n"
                "read_your_writes = sometimes\nprimary_reads_weight = 1001\n"
                "max_replica_lag = soon\nmax_replica_lag_bytes = 1TB\n"
                "read_write_split = maybe\nread_your_writes_window = -1s\n" NODE_A,
                7);
    expect_line(ini_path, 3, "replica_balance: 'fastest'");
    expect_line(ini_path, 4, "read_your_writes: 'sometimes'");
    expect_line(ini_path, 5, "primary_reads_weight: 1001 is out of range 0..1000");
    expect_line(ini_path, 6, "max_replica_lag: 'soon' is not a duration");
    expect_line(ini_path, 7, "max_replica_lag_bytes: '1TB' is not a size");
    expect_line(ini_path, 8, "read_write_split: 'maybe' is not a boolean");
    expect_line(ini_path, 9, "read_your_writes_window: '-1s' is not a duration");
    /* [pgmux] keys, not [pool] ones */
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\nread_write_split = on\n" NODE_A, 1);
    expect_line(ini_path, 4, "read_write_split: unknown key in [pool]");
}

static void
test_track_parameters(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    /* built-in names and repeats (any case) are dropped: tracking twice changes nothing */
    int rc = load_text("[pgmux]\nauth_type = trust\n[pool]\n"
                       "track_parameters = statement_timeout , myapp.tenant_id,_x9, search_path,"
                       " DATESTYLE, Statement_Timeout, ,lock_timeout\n" NODE_A,
                       &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->n_track_parameters, 4);
    assert_string_equal(c->track_parameters[0], "statement_timeout");
    assert_string_equal(c->track_parameters[1], "myapp.tenant_id");
    assert_string_equal(c->track_parameters[2], "_x9");
    assert_string_equal(c->track_parameters[3], "lock_timeout");
    assert_true(cfg_param_tracked(c, "statement_timeout"));
    assert_true(cfg_param_tracked(c, "STATEMENT_TIMEOUT"));
    assert_true(cfg_param_tracked(c, "myapp.tenant_id"));
    assert_true(cfg_param_tracked(c, "lock_timeout"));
    assert_true(cfg_param_tracked(c, "DateStyle"));
    assert_false(cfg_param_tracked(c, "work_mem"));
    assert_false(cfg_param_tracked(c, "myapp"));
    cfg_unref(c);

    /* only built-ins, or empty: nothing extra stored */
    rc = load_text("[pgmux]\nauth_type = trust\n[pool]\ntrack_parameters = TimeZone\n" NODE_A, &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->n_track_parameters, 0);
    assert_null(c->track_parameters);
    cfg_unref(c);
    rc = load_text("[pgmux]\nauth_type = trust\n[pool]\ntrack_parameters = \"\"\n" NODE_A, &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->n_track_parameters, 0);
    /* the built-in list is tracked with no track_parameters at all */
    static const char *const builtin[] = {
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "IntervalStyle",
        "standard_conforming_strings",
        "application_name",
        "search_path",
        "datestyle",
        "timezone",
    };
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
        assert_true(cfg_param_tracked(c, builtin[i]));
    }
    assert_false(cfg_param_tracked(c, "statement_timeout"));
    assert_false(cfg_param_tracked(c, ""));
    cfg_unref(c);

    /* every bad name reported, each on the key's line */
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\n"
                "track_parameters = ok_one, 9lives, .dot, a-b, two words, x;y, \"q\"\n" NODE_A,
                6);
    expect_line(ini_path, 4, "track_parameters: '9lives' is not a parameter name");
    expect_line(ini_path, 4, "track_parameters: '.dot' is not a parameter name");
    expect_line(ini_path, 4, "track_parameters: 'a-b' is not a parameter name");
    expect_line(ini_path, 4, "track_parameters: 'two words' is not a parameter name");
    expect_line(ini_path, 4, "track_parameters: 'x;y' is not a parameter name");
    expect_line(ini_path, 4, "track_parameters: '\"q\"' is not a parameter name");
}

static void
test_pin_session_state(void **state)
{
    (void) state;
    static const struct {
        const char *text;
        bool value;
    } cases[] = {
        { "on", true },  { "off", false }, { "true", true },    { "false", false },
        { "yes", true }, { "no", false },  { "1", true },       { "0", false },
        { "ON", true },  { "Off", false }, { "\"no\"", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text,
                 "[pgmux]\nauth_type = trust\n[pool]\npin_session_state = %s\n" NODE_A,
                 cases[i].text);
        struct cfg *c = NULL;
        if (load_text(text, &c) != 0) {
            fail_msg("%s: %s", cases[i].text, err);
        }
        if (c->pin_session_state != cases[i].value) {
            fail_msg("pin_session_state = %s read as %d", cases[i].text, c->pin_session_state);
        }
        cfg_unref(c);
        teardown(NULL); /* at most 8 files per test */
    }
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\npin_session_state = maybe\n" NODE_A, 1);
    expect_line(
        ini_path, 4,
        "pin_session_state: 'maybe' is not a boolean (on, off, true, false, yes, no, 1, 0)");
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\npin_session_state =\n" NODE_A, 1);
    expect_line(ini_path, 4, "pin_session_state: '' is not a boolean");
    expect_fail("[pgmux]\nauth_type = trust\n[pool]\npin_session_state = 2\n" NODE_A, 1);
    expect_line(ini_path, 4, "pin_session_state: '2' is not a boolean");
}

static void
test_tls_keys(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    /* defaults */
    if (load_text("[pgmux]\nauth_type = trust\n" NODE_A, &c) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->client_tls_mode, CFG_CLIENT_TLS_DISABLE);
    assert_int_equal(c->server_tls_mode, CFG_SERVER_TLS_DISABLE);
    assert_int_equal(c->client_tls_min_version, TLS1_2_VERSION);
    assert_int_equal(c->client_tls_max_version, TLS1_3_VERSION);
    assert_string_equal(c->client_tls_ciphers, "HIGH:!aNULL:!MD5");
    assert_null(c->client_tls_ciphersuites);
    cfg_unref(c);
    teardown(NULL);

    /* every key; relative file names resolve against the ini file's directory (/tmp) */
    if (load_text("[pgmux]\nauth_type = trust\nclient_tls_mode = require\n"
                  "client_tls_cert_file = c.crt\nclient_tls_key_file = /k/c.key\n"
                  "client_tls_ca_file = ca.crt\nclient_tls_protocols = TLSv1.3\n"
                  "client_tls_ciphers = ECDHE+AESGCM\n"
                  "client_tls_ciphersuites = TLS_AES_256_GCM_SHA384\n"
                  "server_tls_mode = verify-full\nserver_tls_ca_file = sca.crt\n"
                  "server_tls_cert_file = s.crt\nserver_tls_key_file = s.key\n" NODE_A,
                  &c) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->client_tls_mode, CFG_CLIENT_TLS_REQUIRE);
    assert_string_equal(c->client_tls_cert_file, "/tmp/c.crt");
    assert_string_equal(c->client_tls_key_file, "/k/c.key");
    assert_string_equal(c->client_tls_ca_file, "/tmp/ca.crt");
    assert_int_equal(c->client_tls_min_version, TLS1_3_VERSION);
    assert_int_equal(c->client_tls_max_version, TLS1_3_VERSION);
    assert_string_equal(c->client_tls_ciphers, "ECDHE+AESGCM");
    assert_string_equal(c->client_tls_ciphersuites, "TLS_AES_256_GCM_SHA384");
    assert_int_equal(c->server_tls_mode, CFG_SERVER_TLS_VERIFY_FULL);
    assert_string_equal(c->server_tls_ca_file, "/tmp/sca.crt");
    assert_string_equal(c->server_tls_cert_file, "/tmp/s.crt");
    assert_string_equal(c->server_tls_key_file, "/tmp/s.key");
    assert_int_equal(c->tls_lines.client_cert, 4);
    assert_int_equal(c->tls_lines.server_key, 13);
    cfg_unref(c);
    teardown(NULL);

    if (load_text("[pgmux]\nauth_type = trust\nclient_tls_protocols = tlsv1.2\n" NODE_A, &c) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->client_tls_min_version, TLS1_2_VERSION);
    assert_int_equal(c->client_tls_max_version, TLS1_2_VERSION);
    cfg_unref(c);
    teardown(NULL);

    expect_fail("[pgmux]\nauth_type = trust\nclient_tls_mode = on\n" NODE_A, 1);
    expect_line(ini_path, 3,
                "client_tls_mode: 'on' is not one of: disable, allow, prefer, require");
    expect_fail("[pgmux]\nauth_type = trust\nserver_tls_mode = verify\n" NODE_A, 1);
    expect_line(ini_path, 3,
                "server_tls_mode: 'verify' is not one of: disable, prefer, require, "
                "verify-ca, verify-full");
    expect_fail("[pgmux]\nauth_type = trust\nclient_tls_protocols = tlsv1.1,tlsv1.2\n" NODE_A, 1);
    expect_line(ini_path, 3, "client_tls_protocols: 'tlsv1.1' is not supported");
    expect_fail("[pgmux]\nauth_type = trust\nclient_tls_protocols = sslv3\n" NODE_A, 1);
    expect_line(ini_path, 3, "client_tls_protocols: unknown protocol 'sslv3'");
    expect_fail("[pgmux]\nauth_type = trust\nclient_tls_protocols = ,\n" NODE_A, 1);
    expect_line(ini_path, 3, "client_tls_protocols: must name at least one protocol");
    teardown(NULL);
    expect_fail("[pgmux]\nauth_type = trust\nclient_tls_mode = allow\n" NODE_A, 2);
    expect_line(ini_path, 3, "client_tls_cert_file: required when client_tls_mode is allow");
    expect_line(ini_path, 3, "client_tls_key_file: required when client_tls_mode is allow");
    expect_fail("[pgmux]\nauth_type = trust\nserver_tls_cert_file = a.crt\n" NODE_A, 1);
    expect_line(ini_path, 3,
                "server_tls_key_file: server_tls_cert_file and server_tls_key_file go together");
    expect_fail("[pgmux]\nauth_type = trust\nclient_tls_cert_file =\n" NODE_A, 1);
    expect_line(ini_path, 3, "client_tls_cert_file: must not be empty");
}

static void
test_health_check_keys(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    /* defaults; with trust and no auth_file nobody is known to log in as */
    assert_int_equal(load_text("[pgmux]\nauth_type = trust\n" NODE_A, &c), 0);
    assert_int_equal(c->health_check_period_ms, 1000);
    assert_int_equal(c->health_check_timeout_ms, 1000);
    assert_int_equal(c->dns_ttl_ms, 30000);
    assert_string_equal(c->health_check_database, "postgres");
    assert_null(c->health_check_user);
    assert_null(c->health_check_password);
    cfg_unref(c);

    /* derived: the first warm pool's user with a plaintext secret, else the first user by name
     * with one that is not a console user */
    write_users("\"alice\" \"" MD5_SECRET "\"\n\"bob\" \"bob-pw\"\n\"carol\" \"carol-pw\"\n"
                "\"dave\" \"" SCRAM_SECRET "\"\n");
    assert_int_equal(load_text("[pgmux]\nauth_file = @USERS@\n[pool]\n"
                               "warm_pools = alice@db, dave@db, carol@db\n" NODE_A,
                               &c),
                     0);
    assert_string_equal(c->health_check_user, "carol");
    assert_string_equal(c->health_check_password, "carol-pw");
    cfg_unref(c);
    assert_int_equal(load_text("[pgmux]\nauth_file = @USERS@\nadmin_users = bob\n" NODE_A, &c), 0);
    assert_string_equal(c->health_check_user, "carol");
    cfg_unref(c);
    assert_int_equal(load_text("[pgmux]\nauth_file = @USERS@\n" NODE_A, &c), 0);
    assert_string_equal(c->health_check_user, "bob");
    assert_string_equal(c->health_check_password, "bob-pw");
    cfg_unref(c);

    /* set: the user's password still comes from the auth_file unless given */
    assert_int_equal(load_text("[pgmux]\nauth_file = @USERS@\nhealth_check_user = carol\n"
                               "health_check_period = 250ms\nhealth_check_timeout = 2s\n"
                               "dns_ttl = 0\nhealth_check_database = appdb\n" NODE_A,
                               &c),
                     0);
    assert_string_equal(c->health_check_user, "carol");
    assert_string_equal(c->health_check_password, "carol-pw");
    assert_int_equal(c->health_check_period_ms, 250);
    assert_int_equal(c->health_check_timeout_ms, 2000);
    assert_int_equal(c->dns_ttl_ms, 0);
    assert_string_equal(c->health_check_database, "appdb");
    cfg_unref(c);
    teardown(NULL);
    write_users("\"alice\" \"" MD5_SECRET "\"\n");
    assert_int_equal(load_text("[pgmux]\nauth_file = @USERS@\nhealth_check_user = mon\n"
                               "health_check_password = \"s3cret\"\n" NODE_A,
                               &c),
                     0);
    assert_string_equal(c->health_check_user, "mon");
    assert_string_equal(c->health_check_password, "s3cret");
    cfg_unref(c);
    /* only hashed secrets: no credentials, and no error either */
    assert_int_equal(load_text("[pgmux]\nauth_file = @USERS@\n" NODE_A, &c), 0);
    assert_null(c->health_check_user);
    cfg_unref(c);
    teardown(NULL);

    expect_fail("[pgmux]\nauth_type = trust\nhealth_check_period = soon\n"
                "health_check_timeout = 0\ndns_ttl = -1\nhealth_check_user =\n" NODE_A,
                4);
    expect_line(ini_path, 3, "health_check_period: 'soon' is not a duration");
    expect_line(ini_path, 4, "health_check_timeout: '0' is out of range 1ms..");
    expect_line(ini_path, 5, "dns_ttl: '-1' is not a duration");
    expect_line(ini_path, 6, "health_check_user: must not be empty");
}

static void
test_too_many_nodes(void **state)
{
    (void) state;
    char text[8192] = "[pgmux]\nauth_type = trust\n";
    for (int i = 0; i <= 64; i++) {
        char sect[64];
        snprintf(sect, sizeof sect, "[node.n%d]\nhost = db%d\n", i, i);
        strcat(text, sect);
    }
    expect_fail(text, 1);
    expect_line(ini_path, 0, "node: 65 [node.NAME] sections; at most 64");
}

static void
test_overrides(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    int rc = load_text("[pgmux]\nauth_type = trust\n"
                       "[pool]\npool_mode = transaction\n"
                       "[database.reports]\npool_mode = session\n"
                       "[user.batch]\npool_mode = statement\n"
                       "[database.my-app.v2_db]\n"
                       "[user.Admin.1]\npool_mode = session ; comment\n"
                       "[database.x]\npool_mode = statement\n" NODE_A,
                       &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->pool_mode, CFG_POOL_TRANSACTION);
    assert_int_equal(c->n_db_overrides, 3);
    assert_string_equal(c->db_overrides[0].name, "reports");
    assert_true(c->db_overrides[0].has_pool_mode);
    assert_int_equal(c->db_overrides[0].pool_mode, CFG_POOL_SESSION);
    assert_int_equal(c->db_overrides[0].line, 5);
    assert_string_equal(c->db_overrides[1].name, "my-app.v2_db");
    assert_false(c->db_overrides[1].has_pool_mode);
    assert_int_equal(c->db_overrides[1].line, 9);
    assert_string_equal(c->db_overrides[2].name, "x");
    assert_int_equal(c->db_overrides[2].pool_mode, CFG_POOL_STATEMENT);
    assert_int_equal(c->db_overrides[2].line, 12);
    assert_int_equal(c->n_user_overrides, 2);
    assert_string_equal(c->user_overrides[0].name, "batch");
    assert_true(c->user_overrides[0].has_pool_mode);
    assert_int_equal(c->user_overrides[0].pool_mode, CFG_POOL_STATEMENT);
    assert_int_equal(c->user_overrides[0].line, 7);
    assert_string_equal(c->user_overrides[1].name, "Admin.1");
    assert_int_equal(c->user_overrides[1].pool_mode, CFG_POOL_SESSION);
    assert_int_equal(c->user_overrides[1].line, 10);
    assert_int_equal(c->n_nodes, 1);
    cfg_unref(c);
}

static void
test_pool_mode_for_precedence(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    int rc = load_text("[pgmux]\nauth_type = trust\n"
                       "[pool]\npool_mode = transaction\n"
                       "[database.reports]\npool_mode = session\n"
                       "[database.fast]\npool_mode = statement\n"
                       "[database.plain]\n"
                       "[user.batch]\npool_mode = statement\n"
                       "[user.admin]\npool_mode = session\n"
                       "[user.nobody]\n" NODE_A,
                       &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    /* neither section: [pool] */
    assert_int_equal(cfg_pool_mode_for(c, "app", "alice"), CFG_POOL_TRANSACTION);
    /* database section only */
    assert_int_equal(cfg_pool_mode_for(c, "reports", "alice"), CFG_POOL_SESSION);
    assert_int_equal(cfg_pool_mode_for(c, "fast", "alice"), CFG_POOL_STATEMENT);
    /* user section only */
    assert_int_equal(cfg_pool_mode_for(c, "app", "batch"), CFG_POOL_STATEMENT);
    assert_int_equal(cfg_pool_mode_for(c, "app", "admin"), CFG_POOL_SESSION);
    /* both: the user section wins */
    assert_int_equal(cfg_pool_mode_for(c, "reports", "batch"), CFG_POOL_STATEMENT);
    assert_int_equal(cfg_pool_mode_for(c, "fast", "admin"), CFG_POOL_SESSION);
    /* a section without pool_mode passes the decision on */
    assert_int_equal(cfg_pool_mode_for(c, "plain", "alice"), CFG_POOL_TRANSACTION);
    assert_int_equal(cfg_pool_mode_for(c, "reports", "nobody"), CFG_POOL_SESSION);
    assert_int_equal(cfg_pool_mode_for(c, "plain", "nobody"), CFG_POOL_TRANSACTION);
    /* names are exact: case-sensitive, no prefixes, database and user names kept apart */
    assert_int_equal(cfg_pool_mode_for(c, "Reports", "Batch"), CFG_POOL_TRANSACTION);
    assert_int_equal(cfg_pool_mode_for(c, "report", "batc"), CFG_POOL_TRANSACTION);
    assert_int_equal(cfg_pool_mode_for(c, "batch", "reports"), CFG_POOL_TRANSACTION);
    /* NULL matches no section */
    assert_int_equal(cfg_pool_mode_for(c, NULL, NULL), CFG_POOL_TRANSACTION);
    assert_int_equal(cfg_pool_mode_for(c, "reports", NULL), CFG_POOL_SESSION);
    assert_int_equal(cfg_pool_mode_for(c, NULL, "batch"), CFG_POOL_STATEMENT);
    cfg_unref(c);

    /* with [pool] left at its default */
    rc = load_text("[pgmux]\nauth_type = trust\n[user.t]\npool_mode = transaction\n" NODE_A, &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(cfg_pool_mode_for(c, "db", "t"), CFG_POOL_TRANSACTION);
    assert_int_equal(cfg_pool_mode_for(c, "db", "u"), CFG_POOL_SESSION);
    cfg_unref(c);
}

static void
test_override_errors(void **state)
{
    (void) state;
    char longname[128];
    memset(longname, 'n', 64);
    longname[64] = '\0';
    char text[2048];
    snprintf(text, sizeof text,
             "[pgmux]\nauth_type = trust\n" NODE_A /* lines 1-4 */
             "[database.app]\n"                    /* 5 */
             "pool_mode = transaction\n"           /* 6 */
             "pool_mode = session\n"               /* 7: duplicate key */
             "max_open_conns = 3\n"                /* 8: unknown key */
             "[user.bob]\n"                        /* 9 */
             "pool_mode = txn\n"                   /* 10: bad value */
             "pool_mode = session\n"               /* 11: duplicate even after a bad value */
             "[database.app]\n"                    /* 12: duplicate section */
             "pool_mode = session\n"               /* 13: skipped */
             "[user.bob]\n"                        /* 14: duplicate section */
             "[user.app]\n"                        /* 15: fine, users and databases apart */
             "[database.bad name]\n"               /* 16 */
             "[user.]\n"                           /* 17 */
             "[database.a@b]\n"                    /* 18 */
             "[user.%s]\n"                         /* 19: 64 characters */
             "[database.\"quoted\"]\n"             /* 20 */
             "[databases.x]\n",                    /* 21 */
             longname);
    expect_fail(text, 12);
    expect_line(ini_path, 7, "pool_mode: duplicate key (first set on line 6)");
    expect_line(ini_path, 8,
                "max_open_conns: unknown key in [database.app] (expected pool_mode or "
                "max_db_connections)");
    expect_line(ini_path, 10, "pool_mode: 'txn' is not one of: session, transaction, statement");
    expect_line(ini_path, 11, "pool_mode: duplicate key (first set on line 10)");
    expect_line(ini_path, 12, "[database.app]: duplicate section (first on line 5)");
    expect_line(ini_path, 14, "[user.bob]: duplicate section (first on line 9)");
    expect_line(ini_path, 16, "[database.bad name]: database name must be 1..63 letters");
    expect_line(ini_path, 17, "[user.]: user name must be 1..63 letters");
    expect_line(ini_path, 18, "[database.a@b]: database name must be");
    expect_line(ini_path, 19, "[user.nnnn");
    expect_line(ini_path, 20, "[database.\"quoted\"]: database name must be");
    expect_line(ini_path, 21,
                "[databases.x]: unknown section (expected [pgmux], [pool], "
                "[node.NAME], [database.NAME] or [user.NAME])");
}

/* The caps' own sections: [database.NAME] max_db_connections, [user.NAME]
 * max_user_connections, each only in its own kind of section. */
static void
test_override_caps(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    int rc = load_text("[pgmux]\nauth_type = trust\n"
                       "[pool]\nmax_db_connections = 10\n"
                       "[database.reports]\nmax_db_connections = 2\npool_mode = session\n"
                       "[database.free]\nmax_db_connections = 0\n"
                       "[database.plain]\n"
                       "[user.batch]\nmax_user_connections = 3\n" NODE_A,
                       &c);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->max_db_connections, 10);
    assert_int_equal(c->db_overrides[0].max_conns, 2);
    assert_true(c->db_overrides[0].has_pool_mode);
    assert_int_equal(c->db_overrides[1].max_conns, 0);
    assert_int_equal(c->db_overrides[2].max_conns, -1);
    assert_int_equal(c->user_overrides[0].max_conns, 3);
    cfg_unref(c);

    expect_fail("[pgmux]\nauth_type = trust\n" NODE_A /* lines 1-4 */
                "[database.app]\n"                    /* 5 */
                "max_db_connections = 2\n"            /* 6 */
                "max_db_connections = 3\n"            /* 7: duplicate */
                "max_user_connections = 1\n"          /* 8: not in a database section */
                "[user.bob]\n"                        /* 9 */
                "max_user_connections = -1\n"         /* 10 */
                "max_db_connections = 1\n"            /* 11 */
                "[user.eve]\n"                        /* 12 */
                "max_user_connections = many\n",      /* 13 */
                5);
    expect_line(ini_path, 7, "max_db_connections: duplicate key (first set on line 6)");
    expect_line(ini_path, 8,
                "max_user_connections: unknown key in [database.app] (expected pool_mode or "
                "max_db_connections)");
    expect_line(ini_path, 10, "max_user_connections: -1 is out of range 0..100000");
    expect_line(ini_path, 11,
                "max_db_connections: unknown key in [user.bob] (expected pool_mode or "
                "max_user_connections)");
    expect_line(ini_path, 13, "max_user_connections: 'many' is not an integer");
}

static void
test_override_max_name(void **state)
{
    (void) state;
    char name[64];
    memset(name, 'd', 63);
    name[63] = '\0';
    char text[512];
    snprintf(text, sizeof text,
             "[pgmux]\nauth_type = trust\n[database.%s]\npool_mode = statement\n" NODE_A, name);
    struct cfg *c = NULL;
    if (load_text(text, &c) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->n_db_overrides, 1);
    assert_string_equal(c->db_overrides[0].name, name);
    assert_int_equal(cfg_pool_mode_for(c, name, "u"), CFG_POOL_STATEMENT);
    cfg_unref(c);
}

static void
test_warm_pools(void **state)
{
    (void) state;
    write_users("\"alice\" \"a\"\n");
    expect_fail(
        "[pgmux]\nauth_file = @USERS@\n[pool]\nwarm_pools = alice@db, bob@db, nodb, @x, y@\n"
        "" NODE_A,
        4);
    expect_line(ini_path, 4, "warm_pools: 'nodb' is not user@database");
    expect_line(ini_path, 4, "warm_pools: '@x' is not user@database");
    expect_line(ini_path, 4, "warm_pools: 'y@' is not user@database");
    expect_line(ini_path, 4, "warm_pools: user 'bob' is not in auth_file");
}

static void
test_syntax(void **state)
{
    (void) state;
    char long_line[400];
    snprintf(long_line, sizeof long_line, "server_reset_query = %0300d\n", 0);
    char text[1024];
    snprintf(text, sizeof text,
             "orphan = 1\n"
             "[pgmux]\n"
             "auth_type = trust\n"
             "justaword\n"
             "= value\n"
             "%s"
             "server_reset_query = \"a ; b\"\n"
             "listen_addr = \"unterminated\n" NODE_A,
             long_line);
    expect_fail(text, 6);
    expect_line(ini_path, 1, "orphan: key outside any section");
    expect_line(ini_path, 4, "justaword: expected 'key = value'");
    expect_line(ini_path, 5, "line: expected 'key = value', the key is missing");
    expect_line(ini_path, 6, "server_reset_query: line is longer than 198 characters");
    expect_line(ini_path, 7, "server_reset_query: a ';' after a space inside a quoted value");
    expect_line(ini_path, 8, "listen_addr: unterminated double quote");
}

static void
test_all_errors_collected(void **state)
{
    (void) state;
    /* five problems in five places, one pass */
    expect_fail("[pgmux]\n"
                "auth_type = trust\n"
                "listen_port = x\n"
                "bogus = 1\n"
                "[pool]\n"
                "pool_mode = txn\n"
                "[node.a]\n"
                "host = h\n"
                "role = primary\n"
                "[node.b]\n"
                "host = h\n"
                "role = primary\n"
                "[nope]\n",
                5);
    expect_line(ini_path, 3, "listen_port: ");
    expect_line(ini_path, 4, "bogus: ");
    expect_line(ini_path, 6, "pool_mode: ");
    expect_line(ini_path, 12, "role: ");
    expect_line(ini_path, 13, "[nope]: ");
}

static void
test_err_truncated(void **state)
{
    (void) state;
    char text[4096] = "[pgmux]\nauth_type = trust\n" NODE_A;
    for (int i = 0; i < 40; i++) {
        strcat(text, "[node.a]\n");
    }
    write_tmp(text, ini_path);
    char small[200];
    struct cfg *c = NULL;
    assert_int_equal(cfg_load(ini_path, &c, small, sizeof small), -1);
    assert_null(c);
    assert_true(strlen(small) < sizeof small);
    assert_non_null(strstr(small, "(more errors not shown)"));
    assert_int_equal(strncmp(small, ini_path, strlen(ini_path)), 0);
    /* no buffer at all is allowed */
    assert_int_equal(cfg_load(ini_path, &c, NULL, 0), -1);
}

static void
test_missing_ini(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    assert_int_equal(cfg_load("/nonexistent/pgmux.ini", &c, err, sizeof err), -1);
    assert_null(c);
    assert_string_equal(err,
                        "/nonexistent/pgmux.ini:0: file: cannot read: No such file or directory");
}

/* The example proxy.ini at the repository root must load (tests run from tests/unit). */
static void
test_example_config(void **state)
{
    (void) state;
    const char *path = access("../../proxy.ini", R_OK) == 0 ? "../../proxy.ini" : "proxy.ini";
    struct cfg *c = NULL;
    int rc = cfg_load(path, &c, err, sizeof err);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_string_equal(c->listen_addr, "127.0.0.1");
    assert_int_equal(c->listen_port, 6432);
    assert_int_equal(c->auth_type, CFG_AUTH_SCRAM);
    assert_int_equal(c->pool_mode, CFG_POOL_SESSION);
    assert_int_equal(c->n_nodes, 2);
    assert_string_equal(c->nodes[0].name, "primary");
    assert_int_equal(c->nodes[0].port, 15432);
    assert_int_equal(c->nodes[0].role, CFG_ROLE_AUTO);
    assert_string_equal(c->nodes[1].name, "replica");
    assert_int_equal(c->nodes[1].port, 15433);
    assert_non_null(cfg_user_find(c, "demo"));
    assert_string_equal(cfg_user_find(c, "demo")->secret, "demo");
    cfg_unref(c);
}

static void
test_duration_parse(void **state)
{
    (void) state;
    assert_int_equal(cfg_parse_duration_ms("0"), 0);
    assert_int_equal(cfg_parse_duration_ms("30"), 30000);
    assert_int_equal(cfg_parse_duration_ms("250ms"), 250);
    assert_int_equal(cfg_parse_duration_ms("30s"), 30000);
    assert_int_equal(cfg_parse_duration_ms("30 s"), 30000);
    assert_int_equal(cfg_parse_duration_ms("5m"), 300000);
    assert_int_equal(cfg_parse_duration_ms("5min"), 300000);
    assert_int_equal(cfg_parse_duration_ms("1h"), 3600000);
    assert_int_equal(cfg_parse_duration_ms("0ms"), 0);
    assert_int_equal(cfg_parse_duration_ms("9223372036854775807ms"), INT64_MAX);
    assert_int_equal(cfg_parse_duration_ms("9223372036854775807s"), -1);
    assert_int_equal(cfg_parse_duration_ms("99999999999999999999"), -1);
    assert_int_equal(cfg_parse_duration_ms(""), -1);
    assert_int_equal(cfg_parse_duration_ms("s"), -1);
    assert_int_equal(cfg_parse_duration_ms("-1"), -1);
    assert_int_equal(cfg_parse_duration_ms("+1"), -1);
    assert_int_equal(cfg_parse_duration_ms("1.5s"), -1);
    assert_int_equal(cfg_parse_duration_ms("1d"), -1);
    assert_int_equal(cfg_parse_duration_ms("1S"), -1);
    assert_int_equal(cfg_parse_duration_ms("1s "), -1);
    assert_int_equal(cfg_parse_duration_ms(" 1s"), -1);
    assert_int_equal(cfg_parse_duration_ms("1ms5"), -1);
    assert_int_equal(cfg_parse_duration_ms(NULL), -1);
}

static void
test_names(void **state)
{
    (void) state;
    assert_string_equal(cfg_pool_mode_name(CFG_POOL_SESSION), "session");
    assert_string_equal(cfg_pool_mode_name(CFG_POOL_TRANSACTION), "transaction");
    assert_string_equal(cfg_pool_mode_name(CFG_POOL_STATEMENT), "statement");
    assert_string_equal(cfg_auth_name(CFG_AUTH_TRUST), "trust");
    assert_string_equal(cfg_auth_name(CFG_AUTH_MD5), "md5");
    assert_string_equal(cfg_auth_name(CFG_AUTH_SCRAM), "scram-sha-256");
    assert_string_equal(cfg_role_name(CFG_ROLE_AUTO), "auto");
    assert_string_equal(cfg_role_name(CFG_ROLE_PRIMARY), "primary");
    assert_string_equal(cfg_role_name(CFG_ROLE_REPLICA), "replica");
}

/* The key table as the admin console sees it: SHOW CONFIG formats, SET parses. */
static void
test_key_table(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    assert_int_equal(load_text("[pgmux]\nauth_type = trust\nquery_wait_timeout = 1500ms\n"
                               "admin_users = a, b\nlog_level = debug\n[pool]\n"
                               "pin_session_state = off\nwarm_pools = u@d\n" NODE_A,
                               &c),
                     0);
    char buf[256];
    int k = cfg_key_find("QUERY_WAIT_TIMEOUT");
    assert_true(k >= 0);
    assert_string_equal(cfg_key_name(k), "query_wait_timeout");
    cfg_key_format(c, k, buf, sizeof buf);
    assert_string_equal(buf, "1500ms");
    cfg_key_format(c, cfg_key_find("admin_users"), buf, sizeof buf);
    assert_string_equal(buf, "a, b");
    cfg_key_format(c, cfg_key_find("log_level"), buf, sizeof buf);
    assert_string_equal(buf, "debug");
    cfg_key_format(c, cfg_key_find("pin_session_state"), buf, sizeof buf);
    assert_string_equal(buf, "off");
    cfg_key_format(c, cfg_key_find("warm_pools"), buf, sizeof buf);
    assert_string_equal(buf, "u@d");
    cfg_key_format(c, cfg_key_find("auth_type"), buf, sizeof buf);
    assert_string_equal(buf, "trust");
    char small[4];
    cfg_key_format(c, cfg_key_find("admin_users"), small, sizeof small);
    assert_string_equal(small, "a, ");
    assert_int_equal(cfg_key_find("no_such_key"), -1);
    assert_null(cfg_key_name(-1));
    for (int i = 0; i < cfg_key_count(); i++) {
        assert_non_null(cfg_key_name(i));
        cfg_key_format(c, i, buf, sizeof buf); /* every key formats */
    }
    cfg_unref(c);

    struct cfg *d = cfg_defaults();
    assert_non_null(d);
    cfg_key_format(d, cfg_key_find("query_wait_timeout"), buf, sizeof buf);
    assert_string_equal(buf, "120s");
    cfg_key_format(d, cfg_key_find("conn_max_lifetime"), buf, sizeof buf);
    assert_string_equal(buf, "1h");
    cfg_unref(d);

    int64_t v;
    char why[200];
    assert_int_equal(cfg_key_parse(cfg_key_find("query_wait_timeout"), "2m", &v, why, sizeof why),
                     0);
    assert_int_equal(v, 120000);
    assert_int_equal(cfg_key_parse(cfg_key_find("max_client_conn"), "0", &v, why, sizeof why), -1);
    assert_string_equal(why, "0 is out of range 1..1000000");
    assert_int_equal(
        cfg_key_parse(cfg_key_find("client_login_timeout"), "soon", &v, why, sizeof why), -1);
    assert_non_null(strstr(why, "is not a duration"));
    assert_int_equal(cfg_key_parse(cfg_key_find("log_level"), "WARNING", &v, why, sizeof why), 0);
    assert_int_equal(v, LOG_WARNING);
    assert_int_equal(cfg_key_parse(cfg_key_find("pin_session_state"), "yes", &v, why, sizeof why),
                     0);
    assert_int_equal(v, 1);
    assert_int_equal(cfg_key_parse(cfg_key_find("listen_addr"), "x", &v, why, sizeof why), -1);
    assert_int_equal(cfg_key_parse(-1, "x", &v, why, sizeof why), -1);
}

/* Monitoring and logging keys: defaults, good values, and a refusal for each bad one. */
static void
test_metrics_and_logging_keys(void **state)
{
    (void) state;
    struct cfg *c = NULL;
    if (load_text("[pgmux]\nauth_type = trust\n" NODE_A, &c) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->metrics_port, 0);
    assert_string_equal(c->metrics_addr, "127.0.0.1");
    assert_int_equal(c->log_destination, CFG_LOG_STDERR);
    assert_string_equal(c->syslog_ident, "pgmux");
    assert_string_equal(cfg_syslog_facility_name(c->syslog_facility), "daemon");
    assert_string_equal(c->syslog_socket, "/dev/log");
    assert_int_equal(c->log_min_duration_ms, -1);
    cfg_unref(c);

    c = NULL;
    if (load_text("[pgmux]\nauth_type = trust\nmetrics_addr = *\nmetrics_port = 9930\n"
                  "log_destination = syslog\nsyslog_ident = pgmux-7\nsyslog_facility = local5\n"
                  "syslog_socket = /run/log.sock\nlog_min_duration = 250ms\n" NODE_A,
                  &c) != 0) {
        fail_msg("%s", err);
    }
    assert_string_equal(c->metrics_addr, "*");
    assert_int_equal(c->metrics_port, 9930);
    assert_int_equal(c->log_destination, CFG_LOG_SYSLOG);
    assert_string_equal(cfg_log_dest_name(c->log_destination), "syslog");
    assert_string_equal(c->syslog_ident, "pgmux-7");
    assert_int_equal(c->syslog_facility, 21);
    assert_string_equal(c->syslog_socket, "/run/log.sock");
    assert_int_equal(c->log_min_duration_ms, 250);
    cfg_unref(c);

    c = NULL;
    if (load_text("[pgmux]\nauth_type = trust\nlog_min_duration = 0\n" NODE_A, &c) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->log_min_duration_ms, 0); /* every request */
    cfg_unref(c);

    expect_fail("[pgmux]\nauth_type = trust\nmetrics_port = 70000\n" NODE_A, 1);
    expect_line(ini_path, 3, "metrics_port: 70000 is out of range 0..65535");
    expect_fail("[pgmux]\nauth_type = trust\nmetrics_port = 6432\n" NODE_A, 1);
    expect_line(ini_path, 3, "metrics_port: 6432 is also listen_port");
    expect_fail("[pgmux]\nauth_type = trust\nlog_destination = file\n" NODE_A, 1);
    expect_line(ini_path, 3, "log_destination:");
    expect_fail("[pgmux]\nauth_type = trust\nsyslog_facility = kern\n" NODE_A, 1);
    expect_line(ini_path, 3, "syslog_facility:");
    expect_fail("[pgmux]\nauth_type = trust\nsyslog_ident = \"a:b\"\n" NODE_A, 1);
    expect_line(ini_path, 3, "syslog_ident:");
    expect_fail("[pgmux]\nauth_type = trust\nsyslog_socket = log.sock\n" NODE_A, 1);
    expect_line(ini_path, 3, "syslog_socket: 'log.sock' is not an absolute path");
    expect_fail("[pgmux]\nauth_type = trust\nlog_min_duration = fast\n" NODE_A, 1);
    expect_line(ini_path, 3, "log_min_duration: 'fast' is not a duration");
    expect_fail("[pgmux]\nauth_type = trust\nlog_min_duration = -5\n" NODE_A, 1);
    expect_line(ini_path, 3, "log_min_duration:");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_full_valid, teardown),
        cmocka_unit_test_teardown(test_defaults, teardown),
        cmocka_unit_test_teardown(test_max_idle_follows_max_open, teardown),
        cmocka_unit_test_teardown(test_empty_admin_list_and_reset_query, teardown),
        cmocka_unit_test_teardown(test_unknown_key, teardown),
        cmocka_unit_test_teardown(test_unknown_section, teardown),
        cmocka_unit_test_teardown(test_bad_section_names, teardown),
        cmocka_unit_test_teardown(test_bad_int, teardown),
        cmocka_unit_test_teardown(test_out_of_range, teardown),
        cmocka_unit_test_teardown(test_max_message_size, teardown),
        cmocka_unit_test_teardown(test_bad_duration, teardown),
        cmocka_unit_test_teardown(test_bad_enum, teardown),
        cmocka_unit_test_teardown(test_duplicate_key, teardown),
        cmocka_unit_test_teardown(test_no_node, teardown),
        cmocka_unit_test_teardown(test_node_without_host, teardown),
        cmocka_unit_test_teardown(test_two_primaries, teardown),
        cmocka_unit_test_teardown(test_auth_file_missing, teardown),
        cmocka_unit_test_teardown(test_malformed_userlist, teardown),
        cmocka_unit_test_teardown(test_duplicate_user, teardown),
        cmocka_unit_test_teardown(test_pool_limits, teardown),
        cmocka_unit_test_teardown(test_no_cascading_errors, teardown),
        cmocka_unit_test_teardown(test_crlf_bom_and_comments, teardown),
        cmocka_unit_test_teardown(test_pool_mode_values, teardown),
        cmocka_unit_test_teardown(test_max_prepared_statements, teardown),
        cmocka_unit_test_teardown(test_track_parameters, teardown),
        cmocka_unit_test_teardown(test_primary_functions, teardown),
        cmocka_unit_test_teardown(test_pin_session_state, teardown),
        cmocka_unit_test_teardown(test_tls_keys, teardown),
        cmocka_unit_test_teardown(test_health_check_keys, teardown),
        cmocka_unit_test_teardown(test_too_many_nodes, teardown),
        cmocka_unit_test_teardown(test_overrides, teardown),
        cmocka_unit_test_teardown(test_pool_mode_for_precedence, teardown),
        cmocka_unit_test_teardown(test_override_errors, teardown),
        cmocka_unit_test_teardown(test_override_caps, teardown),
        cmocka_unit_test_teardown(test_override_max_name, teardown),
        cmocka_unit_test_teardown(test_warm_pools, teardown),
        cmocka_unit_test_teardown(test_syntax, teardown),
        cmocka_unit_test_teardown(test_all_errors_collected, teardown),
        cmocka_unit_test_teardown(test_err_truncated, teardown),
        cmocka_unit_test_teardown(test_missing_ini, teardown),
        cmocka_unit_test_teardown(test_example_config, teardown),
        cmocka_unit_test_teardown(test_access_keys, teardown),
        cmocka_unit_test(test_duration_parse),
        cmocka_unit_test(test_names),
        cmocka_unit_test_teardown(test_key_table, teardown),
        cmocka_unit_test_teardown(test_routing_keys, teardown),
        cmocka_unit_test_teardown(test_metrics_and_logging_keys, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
