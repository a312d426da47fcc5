/*
 * config.c - load proxy.ini (with inih) and the auth_file it names into an immutable, reference
 * counted struct cfg.
 *
 * What it does: reads the whole ini file, hands it to inih one physical line at a time through
 * ini_parse_stream, checks every key against a table, then checks the rules that span keys
 * (pool limits, one primary, auth_file needed), then reads the auth_file (PgBouncer's
 * userlist.txt format). [node.NAME], [database.NAME] and [user.NAME] sections have their own
 * small setters; cfg_pool_mode_for applies the [user.NAME] > [database.NAME] > [pool] order. Every
 * problem is collected, one line each, "FILE:LINE: key: reason"; nothing stops at the first error,
 * so a user fixes a file in one pass.
 *
 * What it deliberately does not do: resolve host names (that would block, and DNS belongs to
 * the monitor thread, CONVENTIONS 6.9: a node's host is stored as written), open sockets, or
 * keep any global state. Only this file includes <ini.h> (CONVENTIONS 1.6).
 *
 * Thread: cfg_load runs on the main thread (it reads files); the rest is any thread.
 *
 * Why a line-feeding reader instead of ini_parse(): Debian's inih 55 is built without
 * INI_HANDLER_LINENO (the handler gets no line number) and without
 * INI_CALL_HANDLER_ON_NEW_SECTION (an empty section is invisible to the handler). Feeding
 * inih exactly one physical line per reader call means the reader's counter is the line the
 * handler is being called for, and the reader sees section headers itself. It also lets us
 * fix what Debian's build would otherwise do behind the user's back, all checked against
 * libinih1 55-1 on bookworm:
 *   - inline comments: the build strips them (INI_ALLOW_INLINE_COMMENTS=1) but only for ';'
 *     preceded by whitespace, even inside double quotes, and never for '#'. We strip both
 *     " ;" and " #" outside double quotes here, and refuse a " ;" inside quotes (inih would
 *     cut the value there) rather than silently changing the value.
 *   - multi-line values (INI_ALLOW_MULTILINE=1): an indented line would continue the previous
 *     key and look like a duplicate. We strip leading whitespace, so indentation is only
 *     cosmetic and a stray indented word is a syntax error, not a hidden continuation.
 *   - line length: lines are read into a 200-byte stack buffer (INI_MAX_LINE, INI_USE_STACK),
 *     and longer lines are split and misparsed. We refuse them with an error instead.
 *   - syntax errors: inih reports only the first bad line; we report each one.
 * Rejected alternative: setting Debian's runtime knobs (ini_allow_inline_comments, ...). They
 * are library globals that upstream inih does not have, so the code would not link elsewhere.
 */
#include "proxy/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "common/cpus.h"
#include "common/macros.h"
#include "protocol/md5.h"
#include "protocol/scram.h"
#include "proxy/topology.h"
#include "router/scan.h"

#define CFG_INI_MAX_BYTES       (1024 * 1024)      /* a proxy.ini bigger than this is a mistake */
#define CFG_AUTH_MAX_BYTES      (64 * 1024 * 1024) /* room for about a million users */
#define CFG_ERR_LINE_MAX        512                /* one formatted error line */
#define CFG_NODE_NAME_MAX       63
#define CFG_PG_NAME_MAX         63 /* PostgreSQL's NAMEDATALEN - 1: longest database/user name */
#define CFG_DURATION_MAX_MS     (366LL * 24 * 3600 * 1000) /* a year: catches unit mistakes */
#define CFG_MSG_SIZE_MIN        1024
#define CFG_MSG_SIZE_MAX        1073741823 /* PostgreSQL's MaxAllocSize - 1: 1 GB - 1 */
#define CFG_MD5_SECRET_LEN      35         /* "md5" + 32 hex digits */
#define CFG_SCRAM_SECRET_PREFIX "SCRAM-SHA-256$"
/* PgBouncer's default: needs a superuser, or a SECURITY DEFINER function in its place. */
#define CFG_AUTH_QUERY_DEFAULT "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"

/* ---------------------------------------------------------------------------------------- */
/* Names                                                                                     */

static const char *const pool_mode_names[] = { "session", "transaction", "statement" };
static const char *const auth_names[] = { "trust", "md5", "scram-sha-256" };
static const char *const role_names[] = { "auto", "primary", "replica" };
static const char *const client_tls_names[] = { "disable", "allow", "prefer", "require" };
static const char *const server_tls_names[] = { "disable", "prefer", "require", "verify-ca",
                                                "verify-full" };
static const char *const log_dest_names[] = { "stderr", "syslog" };
/* syslog facility names and their codes (RFC 5424 table 1); the security and time facilities
 * have no business here. */
static const char *const facility_names[] = { "user",   "daemon", "local0", "local1", "local2",
                                              "local3", "local4", "local5", "local6", "local7" };
static const int facility_codes[] = { 1, 3, 16, 17, 18, 19, 20, 21, 22, 23 };
static const char *const balance_names[] = { "least_conn", "round_robin", "random", "hash" };
static const char *const ryw_names[] = { "lsn", "window", "off" };
static const char *const bool_true_names[] = { "on", "true", "yes", "1" };
static const char *const bool_false_names[] = { "off", "false", "no", "0" };

/*
 * Parameters always followed through ParameterStatus and replayed in transaction and statement
 * mode: the ones drivers set at startup or with SET and that the server reports (GUC_REPORT).
 * track_parameters adds to this list; it cannot remove from it.
 */
static const char *const tracked_params_builtin[] = {
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
    "search_path",
    "extra_float_digits",
};

const char *
cfg_pool_mode_name(enum cfg_pool_mode m)
{
    return (unsigned) m < ARRAY_LEN(pool_mode_names) ? pool_mode_names[m] : "?";
}

const char *
cfg_auth_name(enum cfg_auth a)
{
    return (unsigned) a < ARRAY_LEN(auth_names) ? auth_names[a] : "?";
}

const char *
cfg_balance_name(enum cfg_balance b)
{
    return (unsigned) b < ARRAY_LEN(balance_names) ? balance_names[b] : "?";
}

const char *
cfg_ryw_name(enum cfg_ryw r)
{
    return (unsigned) r < ARRAY_LEN(ryw_names) ? ryw_names[r] : "?";
}

const char *
cfg_role_name(enum cfg_role r)
{
    return (unsigned) r < ARRAY_LEN(role_names) ? role_names[r] : "?";
}

const char *
cfg_client_tls_name(enum cfg_client_tls m)
{
    return (unsigned) m < ARRAY_LEN(client_tls_names) ? client_tls_names[m] : "?";
}

const char *
cfg_server_tls_name(enum cfg_server_tls m)
{
    return (unsigned) m < ARRAY_LEN(server_tls_names) ? server_tls_names[m] : "?";
}

const char *
cfg_log_dest_name(enum cfg_log_dest d)
{
    return (unsigned) d < ARRAY_LEN(log_dest_names) ? log_dest_names[d] : "?";
}

const char *
cfg_syslog_facility_name(int code)
{
    for (size_t i = 0; i < ARRAY_LEN(facility_codes); i++) {
        if (facility_codes[i] == code) {
            return facility_names[i];
        }
    }
    return "?";
}

/* ---------------------------------------------------------------------------------------- */
/* Key table for [pgmux] and [pool]                                                         */

enum sect_kind {
    SECT_NONE,   /* before the first header */
    SECT_IGNORE, /* unknown or duplicate section: reported once, its keys skipped */
    SECT_PGMUX,
    SECT_POOL,
    SECT_NODE,
    SECT_DATABASE, /* [database.NAME] */
    SECT_USER,     /* [user.NAME] */
};

enum key_type {
    KT_STR,      /* non-empty string */
    KT_STR_OPT,  /* string, "" allowed */
    KT_INT,      /* integer in [min, max] */
    KT_DURATION, /* cfg_parse_duration_ms, in [min, max] ms */
    KT_SIZE,     /* bytes with optional kB/MB/GB, in [min, max] */
    KT_LIST,     /* comma-separated names */
    KT_BOOL,     /* on/off, true/false, yes/no, 1/0 (any case) into a bool */
    KT_SPECIAL,  /* enums and warm_pools: handled by key id */
};

enum key_id {
    K_LISTEN_ADDR,
    K_LISTEN_PORT,
    K_WORKERS,
    K_WORKER_BALANCE,
    K_WORKER_BUSY_PERCENT,
    K_MAX_CLIENT_CONN,
    K_AUTH_TYPE,
    K_AUTH_FILE,
    K_ADMIN_USERS,
    K_STATS_USERS,
    K_SERVER_RESET_QUERY,
    K_CLIENT_IDLE_TIMEOUT,
    K_IDLE_TRANSACTION_TIMEOUT,
    K_CLIENT_LOGIN_TIMEOUT,
    K_QUERY_WAIT_TIMEOUT,
    K_SERVER_CONNECT_TIMEOUT,
    K_SERVER_LOGIN_RETRY,
    K_HEALTH_CHECK_PERIOD,
    K_HEALTH_CHECK_TIMEOUT,
    K_HEALTH_CHECK_USER,
    K_HEALTH_CHECK_PASSWORD,
    K_HEALTH_CHECK_DATABASE,
    K_DNS_TTL,
    K_SHUTDOWN_TIMEOUT,
    K_LOG_LEVEL,
    K_LOG_MIN_DURATION,
    K_LOG_DESTINATION,
    K_SYSLOG_IDENT,
    K_SYSLOG_FACILITY,
    K_SYSLOG_SOCKET,
    K_METRICS_ADDR,
    K_METRICS_PORT,
    K_MAX_MESSAGE_SIZE,
    K_CLIENT_TLS_MODE,
    K_CLIENT_TLS_CERT_FILE,
    K_CLIENT_TLS_KEY_FILE,
    K_CLIENT_TLS_CA_FILE,
    K_CLIENT_TLS_PROTOCOLS,
    K_CLIENT_TLS_CIPHERS,
    K_CLIENT_TLS_CIPHERSUITES,
    K_SERVER_TLS_MODE,
    K_SERVER_TLS_CA_FILE,
    K_SERVER_TLS_CERT_FILE,
    K_SERVER_TLS_KEY_FILE,
    K_PRIMARY_FUNCTIONS,
    K_MAX_CLIENT_CONN_PER_ADDR,
    K_HBA_FILE,
    K_AUTH_USER,
    K_AUTH_QUERY,
    K_AUTH_DBNAME,
    K_AUTH_CACHE_TTL,
    K_READ_WRITE_SPLIT,
    K_REPLICA_BALANCE,
    K_PRIMARY_READS_WEIGHT,
    K_MAX_REPLICA_LAG,
    K_MAX_REPLICA_LAG_BYTES,
    K_READ_YOUR_WRITES,
    K_READ_YOUR_WRITES_WINDOW,
    K_POOL_MODE,
    K_MAX_OPEN_CONNS,
    K_MAX_IDLE_CONNS,
    K_MIN_IDLE_CONNS,
    K_MAX_DB_CONNECTIONS,
    K_MAX_USER_CONNECTIONS,
    K_CONN_MAX_LIFETIME,
    K_CONN_MAX_IDLE_TIME,
    K_WARM_POOLS,
    K_MAX_PREPARED_STATEMENTS,
    K_TRACK_PARAMETERS,
    K_PIN_SESSION_STATE,
    K_UNIX_SOCKET_DIR,
    K_UNIX_SOCKET_MODE,
    K_IO_ENGINE,
    K__COUNT,
};

struct key_def {
    const char *name;
    enum sect_kind sect;
    enum key_type type;
    size_t off;   /* field in struct cfg (int, int64_t, uint32_t, bool or char * by type) */
    size_t n_off; /* KT_LIST: the count field */
    int64_t min;
    int64_t max;
};

#define F(field) offsetof(struct cfg, field)

static const struct key_def key_defs[K__COUNT] = {
    [K_LISTEN_ADDR] = { "listen_addr", SECT_PGMUX, KT_STR, F(listen_addr), 0, 0, 0 },
    [K_LISTEN_PORT] = { "listen_port", SECT_PGMUX, KT_INT, F(listen_port), 0, 1, 65535 },
    [K_WORKERS] = { "workers", SECT_PGMUX, KT_INT, F(workers), 0, 0, 256 },
    [K_WORKER_BALANCE] = { "worker_balance", SECT_PGMUX, KT_BOOL, F(worker_balance), 0, 0, 0 },
    [K_WORKER_BUSY_PERCENT] = { "worker_busy_percent", SECT_PGMUX, KT_INT, F(worker_busy_percent),
                                0, 1, 100 },
    [K_MAX_CLIENT_CONN] = { "max_client_conn", SECT_PGMUX, KT_INT, F(max_client_conn), 0, 1,
                            1000000 },
    [K_AUTH_TYPE] = { "auth_type", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_AUTH_FILE] = { "auth_file", SECT_PGMUX, KT_STR, F(auth_file), 0, 0, 0 },
    [K_ADMIN_USERS] = { "admin_users", SECT_PGMUX, KT_LIST, F(admin_users), F(n_admin_users), 0,
                        0 },
    [K_STATS_USERS] = { "stats_users", SECT_PGMUX, KT_LIST, F(stats_users), F(n_stats_users), 0,
                        0 },
    [K_SERVER_RESET_QUERY] = { "server_reset_query", SECT_PGMUX, KT_STR_OPT, F(server_reset_query),
                               0, 0, 0 },
    [K_CLIENT_IDLE_TIMEOUT] = { "client_idle_timeout", SECT_PGMUX, KT_DURATION,
                                F(client_idle_timeout_ms), 0, 0, CFG_DURATION_MAX_MS },
    [K_IDLE_TRANSACTION_TIMEOUT] = { "idle_transaction_timeout", SECT_PGMUX, KT_DURATION,
                                     F(idle_transaction_timeout_ms), 0, 0, CFG_DURATION_MAX_MS },
    [K_CLIENT_LOGIN_TIMEOUT] = { "client_login_timeout", SECT_PGMUX, KT_DURATION,
                                 F(client_login_timeout_ms), 0, 1, CFG_DURATION_MAX_MS },
    [K_QUERY_WAIT_TIMEOUT] = { "query_wait_timeout", SECT_PGMUX, KT_DURATION,
                               F(query_wait_timeout_ms), 0, 0, CFG_DURATION_MAX_MS },
    [K_SERVER_CONNECT_TIMEOUT] = { "server_connect_timeout", SECT_PGMUX, KT_DURATION,
                                   F(server_connect_timeout_ms), 0, 1, CFG_DURATION_MAX_MS },
    [K_SERVER_LOGIN_RETRY] = { "server_login_retry", SECT_PGMUX, KT_DURATION,
                               F(server_login_retry_ms), 0, 0, CFG_DURATION_MAX_MS },
    [K_HEALTH_CHECK_PERIOD] = { "health_check_period", SECT_PGMUX, KT_DURATION,
                                F(health_check_period_ms), 0, 0, CFG_DURATION_MAX_MS },
    [K_HEALTH_CHECK_TIMEOUT] = { "health_check_timeout", SECT_PGMUX, KT_DURATION,
                                 F(health_check_timeout_ms), 0, 1, CFG_DURATION_MAX_MS },
    [K_HEALTH_CHECK_USER] = { "health_check_user", SECT_PGMUX, KT_STR, F(health_check_user), 0, 0,
                              0 },
    [K_HEALTH_CHECK_PASSWORD] = { "health_check_password", SECT_PGMUX, KT_STR,
                                  F(health_check_password), 0, 0, 0 },
    [K_HEALTH_CHECK_DATABASE] = { "health_check_database", SECT_PGMUX, KT_STR,
                                  F(health_check_database), 0, 0, 0 },
    [K_DNS_TTL] = { "dns_ttl", SECT_PGMUX, KT_DURATION, F(dns_ttl_ms), 0, 0, CFG_DURATION_MAX_MS },
    [K_SHUTDOWN_TIMEOUT] = { "shutdown_timeout", SECT_PGMUX, KT_DURATION, F(shutdown_timeout_ms), 0,
                             0, CFG_DURATION_MAX_MS },
    [K_LOG_LEVEL] = { "log_level", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_LOG_MIN_DURATION] = { "log_min_duration", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_LOG_DESTINATION] = { "log_destination", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_SYSLOG_IDENT] = { "syslog_ident", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_SYSLOG_FACILITY] = { "syslog_facility", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_SYSLOG_SOCKET] = { "syslog_socket", SECT_PGMUX, KT_STR, F(syslog_socket), 0, 0, 0 },
    [K_METRICS_ADDR] = { "metrics_addr", SECT_PGMUX, KT_STR, F(metrics_addr), 0, 0, 0 },
    [K_UNIX_SOCKET_DIR] = { "unix_socket_dir", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_UNIX_SOCKET_MODE] = { "unix_socket_mode", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_IO_ENGINE] = { "io_engine", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_METRICS_PORT] = { "metrics_port", SECT_PGMUX, KT_INT, F(metrics_port), 0, 0, 65535 },
    [K_MAX_MESSAGE_SIZE] = { "max_message_size", SECT_PGMUX, KT_SIZE, F(max_message_size), 0,
                             CFG_MSG_SIZE_MIN, CFG_MSG_SIZE_MAX },
    [K_CLIENT_TLS_MODE] = { "client_tls_mode", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_CLIENT_TLS_CERT_FILE] = { "client_tls_cert_file", SECT_PGMUX, KT_STR,
                                 F(client_tls_cert_file), 0, 0, 0 },
    [K_CLIENT_TLS_KEY_FILE] = { "client_tls_key_file", SECT_PGMUX, KT_STR, F(client_tls_key_file),
                                0, 0, 0 },
    [K_CLIENT_TLS_CA_FILE] = { "client_tls_ca_file", SECT_PGMUX, KT_STR, F(client_tls_ca_file), 0,
                               0, 0 },
    [K_CLIENT_TLS_PROTOCOLS] = { "client_tls_protocols", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_CLIENT_TLS_CIPHERS] = { "client_tls_ciphers", SECT_PGMUX, KT_STR, F(client_tls_ciphers), 0,
                               0, 0 },
    [K_CLIENT_TLS_CIPHERSUITES] = { "client_tls_ciphersuites", SECT_PGMUX, KT_STR,
                                    F(client_tls_ciphersuites), 0, 0, 0 },
    [K_SERVER_TLS_MODE] = { "server_tls_mode", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_SERVER_TLS_CA_FILE] = { "server_tls_ca_file", SECT_PGMUX, KT_STR, F(server_tls_ca_file), 0,
                               0, 0 },
    [K_SERVER_TLS_CERT_FILE] = { "server_tls_cert_file", SECT_PGMUX, KT_STR,
                                 F(server_tls_cert_file), 0, 0, 0 },
    [K_SERVER_TLS_KEY_FILE] = { "server_tls_key_file", SECT_PGMUX, KT_STR, F(server_tls_key_file),
                                0, 0, 0 },
    [K_PRIMARY_FUNCTIONS] = { "primary_functions", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_MAX_CLIENT_CONN_PER_ADDR] = { "max_client_conn_per_addr", SECT_PGMUX, KT_INT,
                                     F(max_client_conn_per_addr), 0, 0, 1000000 },
    [K_HBA_FILE] = { "hba_file", SECT_PGMUX, KT_STR, F(hba_file), 0, 0, 0 },
    [K_AUTH_USER] = { "auth_user", SECT_PGMUX, KT_STR, F(auth_user), 0, 0, 0 },
    [K_AUTH_QUERY] = { "auth_query", SECT_PGMUX, KT_STR, F(auth_query), 0, 0, 0 },
    [K_AUTH_DBNAME] = { "auth_dbname", SECT_PGMUX, KT_STR, F(auth_dbname), 0, 0, 0 },
    [K_AUTH_CACHE_TTL] = { "auth_cache_ttl", SECT_PGMUX, KT_DURATION, F(auth_cache_ttl_ms), 0, 0,
                           CFG_DURATION_MAX_MS },
    [K_READ_WRITE_SPLIT] = { "read_write_split", SECT_PGMUX, KT_BOOL, F(read_write_split), 0, 0,
                             0 },
    [K_REPLICA_BALANCE] = { "replica_balance", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_PRIMARY_READS_WEIGHT] = { "primary_reads_weight", SECT_PGMUX, KT_INT,
                                 F(primary_reads_weight), 0, 0, 1000 },
    [K_MAX_REPLICA_LAG] = { "max_replica_lag", SECT_PGMUX, KT_DURATION, F(max_replica_lag_ms), 0, 0,
                            CFG_DURATION_MAX_MS },
    [K_MAX_REPLICA_LAG_BYTES] = { "max_replica_lag_bytes", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_READ_YOUR_WRITES] = { "read_your_writes", SECT_PGMUX, KT_SPECIAL, 0, 0, 0, 0 },
    [K_READ_YOUR_WRITES_WINDOW] = { "read_your_writes_window", SECT_PGMUX, KT_DURATION,
                                    F(read_your_writes_window_ms), 0, 0, CFG_DURATION_MAX_MS },
    [K_POOL_MODE] = { "pool_mode", SECT_POOL, KT_SPECIAL, 0, 0, 0, 0 },
    [K_MAX_OPEN_CONNS] = { "max_open_conns", SECT_POOL, KT_INT, F(max_open_conns), 0, 1, 100000 },
    [K_MAX_IDLE_CONNS] = { "max_idle_conns", SECT_POOL, KT_INT, F(max_idle_conns), 0, 0, 100000 },
    [K_MIN_IDLE_CONNS] = { "min_idle_conns", SECT_POOL, KT_INT, F(min_idle_conns), 0, 0, 100000 },
    [K_MAX_DB_CONNECTIONS] = { "max_db_connections", SECT_POOL, KT_INT, F(max_db_connections), 0, 0,
                               100000 },
    [K_MAX_USER_CONNECTIONS] = { "max_user_connections", SECT_POOL, KT_INT, F(max_user_connections),
                                 0, 0, 100000 },
    [K_CONN_MAX_LIFETIME] = { "conn_max_lifetime", SECT_POOL, KT_DURATION, F(conn_max_lifetime_ms),
                              0, 0, CFG_DURATION_MAX_MS },
    [K_CONN_MAX_IDLE_TIME] = { "conn_max_idle_time", SECT_POOL, KT_DURATION,
                               F(conn_max_idle_time_ms), 0, 0, CFG_DURATION_MAX_MS },
    [K_WARM_POOLS] = { "warm_pools", SECT_POOL, KT_SPECIAL, 0, 0, 0, 0 },
    [K_MAX_PREPARED_STATEMENTS] = { "max_prepared_statements", SECT_POOL, KT_INT,
                                    F(max_prepared_statements), 0, 0, 100000 },
    [K_TRACK_PARAMETERS] = { "track_parameters", SECT_POOL, KT_SPECIAL, 0, 0, 0, 0 },
    [K_PIN_SESSION_STATE] = { "pin_session_state", SECT_POOL, KT_BOOL, F(pin_session_state), 0, 0,
                              0 },
};

#undef F

enum node_key {
    NK_HOST,
    NK_PORT,
    NK_ROLE,
    NK_WEIGHT,
    NK__COUNT,
};

static const char *const node_key_names[NK__COUNT] = { "host", "port", "role", "weight" };

/* ---------------------------------------------------------------------------------------- */
/* Parse state                                                                               */

struct node_seen {
    int line[NK__COUNT]; /* line where each node key was set, 0 = not set */
};

struct auth_entry {
    char *name;
    char *secret;
    int line;
};

/*
 * Parse-side view of one kind of override section ([database.NAME] or [user.NAME]): the
 * array lives in struct cfg, the capacity and the line each section set pool_mode on here.
 */
struct override_list {
    const char *kind; /* "database" or "user", for messages */
    int cap;
    int *pool_mode_line; /* parallel to the cfg array; 0 = pool_mode not set yet */
    int *max_line;       /* the same for max_db_connections / max_user_connections */
};

struct cfg_parse {
    struct cfg *c;
    const char *path; /* the ini file, for messages */

    /* the ini text, fed to inih one line at a time */
    const char *text;
    size_t text_len;
    size_t pos;
    int lineno; /* the line inih is handling now */

    enum sect_kind sect;
    int node_idx;   /* SECT_NODE: index into c->nodes */
    int pgmux_line; /* line of [pgmux], 0 = absent */
    int pool_line;
    int seen[K__COUNT];      /* line where each key was set, 0 = not set */
    bool bad[K__COUNT];      /* the key's value was refused: skip rules that depend on it */
    struct node_seen *nseen; /* parallel to c->nodes */
    int nodes_cap;
    int ovr_idx;                /* SECT_DATABASE, SECT_USER: index into that override array */
    struct override_list dbs;   /* [database.NAME] */
    struct override_list users; /* [user.NAME] */

    /* collected errors */
    char *errs;
    size_t errs_len;
    size_t errs_cap;
    int n_errs;
    bool oom;
};

static void
err_append(struct cfg_parse *p, const char *line)
{
    size_t n = strlen(line);
    if (p->errs_len + n + 2 > p->errs_cap) {
        size_t cap = p->errs_cap ? p->errs_cap * 2 : 1024;
        while (cap < p->errs_len + n + 2) {
            cap *= 2;
        }
        char *nb = realloc(p->errs, cap);
        if (nb == NULL) {
            p->oom = true;
            return;
        }
        p->errs = nb;
        p->errs_cap = cap;
    }
    if (p->errs_len > 0) {
        p->errs[p->errs_len++] = '\n';
    }
    memcpy(p->errs + p->errs_len, line, n + 1);
    p->errs_len += n;
}

/* One error line: "file:line: key: reason", or "file:line: reason" when key is NULL. */
static void err_at(struct cfg_parse *p, const char *file, int line, const char *key,
                   const char *fmt, ...) PRINTF_LIKE(5, 6);

static void
err_at(struct cfg_parse *p, const char *file, int line, const char *key, const char *fmt, ...)
{
    char buf[CFG_ERR_LINE_MAX];
    int n;
    if (key != NULL) {
        n = snprintf(buf, sizeof buf, "%s:%d: %s: ", file, line, key);
    } else {
        n = snprintf(buf, sizeof buf, "%s:%d: ", file, line);
    }
    if (n < 0 || (size_t) n >= sizeof buf) {
        n = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - (size_t) n, fmt, ap);
    va_end(ap);
    p->n_errs++;
    err_append(p, buf);
}

#define ERR(p, line, key, ...) err_at((p), (p)->path, (line), (key), __VA_ARGS__)

static char *
dup_str(struct cfg_parse *p, const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d == NULL) {
        p->oom = true;
        return NULL;
    }
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

static void
wipe_free(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/*
 * Read a whole regular file into a NUL-terminated heap buffer. Returns 0, or an errno value.
 * A file over max bytes is EFBIG.
 */
static int
file_read_all(const char *path, size_t max, char **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return errno;
    }
    int rc = 0;
    struct stat st;
    char *buf = NULL;
    size_t cap = 4096, len = 0;
    if (fstat(fileno(f), &st) != 0) {
        rc = errno;
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = EISDIR;
        goto done;
    }
    buf = malloc(cap);
    if (buf == NULL) {
        rc = ENOMEM;
        goto done;
    }
    for (;;) {
        if (len + 1 >= cap) {
            if (cap > max) {
                rc = EFBIG;
                goto done;
            }
            char *nb = malloc(cap * 2);
            if (nb == NULL) {
                rc = ENOMEM;
                goto done;
            }
            /* copy and wipe rather than realloc: an auth_file holds secrets */
            memcpy(nb, buf, len);
            OPENSSL_cleanse(buf, cap);
            free(buf);
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - 1 - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                rc = EIO;
                goto done;
            }
            break;
        }
    }
    if (len > max) {
        rc = EFBIG;
        goto done;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    buf = NULL;
done:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, cap);
        free(buf);
    }
    fclose(f);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Value parsers                                                                             */

static bool
parse_u64_prefix(const char **sp, uint64_t limit, uint64_t *out)
{
    const char *s = *sp;
    if (!isdigit((unsigned char) *s)) {
        return false;
    }
    uint64_t v = 0;
    while (isdigit((unsigned char) *s)) {
        unsigned d = (unsigned) (*s - '0');
        if (v > (limit - d) / 10) {
            return false;
        }
        v = v * 10 + d;
        s++;
    }
    *sp = s;
    *out = v;
    return true;
}

int64_t
cfg_parse_duration_ms(const char *s)
{
    /* PostgreSQL's units ("min" for minutes) plus Go's "m", which the brief and users expect */
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {
        { "ms", 1 },    { "s", 1000 },    { "", 1000 },
        { "m", 60000 }, { "min", 60000 }, { "h", 3600000 },
    };
    if (s == NULL) {
        return -1;
    }
    uint64_t v;
    if (!parse_u64_prefix(&s, (uint64_t) INT64_MAX, &v)) {
        return -1;
    }
    while (*s == ' ') {
        s++;
    }
    for (size_t i = 0; i < ARRAY_LEN(units); i++) {
        if (strcmp(s, units[i].unit) == 0) {
            if (v > (uint64_t) (INT64_MAX / units[i].ms)) {
                return -1;
            }
            return (int64_t) v * units[i].ms;
        }
    }
    return -1;
}

/* Bytes with an optional kB, MB or GB suffix (1024 multiples, PostgreSQL's spelling). */
static int64_t
parse_size(const char *s)
{
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {
        { "", 1 }, { "B", 1 }, { "kB", 1024 }, { "MB", 1024 * 1024 }, { "GB", 1024 * 1024 * 1024 },
    };
    uint64_t v;
    if (!parse_u64_prefix(&s, (uint64_t) INT64_MAX, &v)) {
        return -1;
    }
    while (*s == ' ') {
        s++;
    }
    for (size_t i = 0; i < ARRAY_LEN(units); i++) {
        if (strcmp(s, units[i].unit) == 0) {
            if (v > (uint64_t) (INT64_MAX / units[i].mult)) {
                return -1;
            }
            return (int64_t) v * units[i].mult;
        }
    }
    return -1;
}

static bool
parse_int64(const char *s, int64_t *out)
{
    const char *q = s;
    if (*q == '-' || *q == '+') {
        q++;
    }
    if (!isdigit((unsigned char) *q)) {
        return false;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

/* value as an integer in lo..hi into *out; else one "FILE:LINE: key: reason" line and false. */
static bool
parse_int_in(struct cfg_parse *p, const char *key, const char *value, int64_t lo, int64_t hi,
             int *out)
{
    int64_t v;
    if (!parse_int64(value, &v)) {
        ERR(p, p->lineno, key, "'%s' is not an integer", value);
        return false;
    }
    if (v < lo || v > hi) {
        ERR(p, p->lineno, key, "%lld is out of range %lld..%lld", (long long) v, (long long) lo,
            (long long) hi);
        return false;
    }
    *out = (int) v;
    return true;
}

static void
format_duration(int64_t ms, char *buf, size_t len)
{
    if (ms % 3600000 == 0 && ms > 0) {
        snprintf(buf, len, "%lldh", (long long) (ms / 3600000));
    } else if (ms % 1000 == 0) {
        snprintf(buf, len, "%llds", (long long) (ms / 1000));
    } else {
        snprintf(buf, len, "%lldms", (long long) ms);
    }
}

/* Find value in names[0..n); -1 when absent. Case-sensitive, like PgBouncer's enums. */
static int
enum_lookup(const char *value, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(value, names[i]) == 0) {
            return (int) i;
        }
    }
    return -1;
}

/* Booleans follow PostgreSQL, which accepts them in any case. */
static int
enum_lookup_nocase(const char *value, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(value, names[i]) == 0) {
            return (int) i;
        }
    }
    return -1;
}

static void
err_bad_enum(struct cfg_parse *p, const char *key, const char *value, const char *const *names,
             size_t n)
{
    char allowed[160] = "";
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(allowed + used, sizeof allowed - used, "%s%s", i ? ", " : "", names[i]);
        if (w < 0 || (size_t) w >= sizeof allowed - used) {
            break;
        }
        used += (size_t) w;
    }
    ERR(p, p->lineno, key, "'%s' is not one of: %s", value, allowed);
}

static void
free_list(char **items, int n)
{
    for (int i = 0; i < n; i++) {
        free(items[i]);
    }
    free(items);
}

/* Split "a, b ,c" into trimmed, non-empty items. Returns false on OOM only. */
static bool
split_list(struct cfg_parse *p, const char *value, char ***out, int *out_n)
{
    char **items = NULL;
    int n = 0;
    const char *s = value;
    while (*s != '\0') {
        const char *comma = strchr(s, ',');
        const char *end = comma ? comma : s + strlen(s);
        const char *a = s, *b = end;
        while (a < b && isspace((unsigned char) *a)) {
            a++;
        }
        while (b > a && isspace((unsigned char) b[-1])) {
            b--;
        }
        if (b > a) {
            char **ni = realloc(items, sizeof *items * (size_t) (n + 1));
            char *d = ni ? dup_str(p, a, (size_t) (b - a)) : NULL;
            if (ni != NULL) {
                items = ni;
            }
            if (d == NULL) {
                p->oom = true;
                free_list(items, n);
                return false;
            }
            items[n++] = d;
        }
        s = comma ? comma + 1 : end;
    }
    *out = items;
    *out_n = n;
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* [pgmux] and [pool] keys                                                                   */

static void
set_warm_pools(struct cfg_parse *p, const char *key, const char *value)
{
    struct cfg *c = p->c;
    char **items;
    int n;
    if (!split_list(p, value, &items, &n)) {
        return;
    }
    struct cfg_warm_pool *wp = n ? calloc((size_t) n, sizeof *wp) : NULL;
    if (n && wp == NULL) {
        p->oom = true;
        free_list(items, n);
        return;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        /* the last '@': user names may contain one (Azure's "user@server"), database names
         * almost never do */
        char *at = strrchr(items[i], '@');
        if (at == NULL || at == items[i] || at[1] == '\0') {
            ERR(p, p->lineno, key, "'%s' is not user@database", items[i]);
            continue;
        }
        wp[k].user = dup_str(p, items[i], (size_t) (at - items[i]));
        wp[k].database = dup_str(p, at + 1, strlen(at + 1));
        k++;
    }
    free_list(items, n);
    for (int i = 0; i < c->n_warm_pools; i++) {
        free(c->warm_pools[i].user);
        free(c->warm_pools[i].database);
    }
    free(c->warm_pools);
    c->warm_pools = wp;
    c->n_warm_pools = k;
}

/*
 * A parameter name as PostgreSQL spells GUCs, custom ones ("myapp.tenant") included:
 * [A-Za-z_][A-Za-z0-9_.]*. Anything else could never arrive in a ParameterStatus, and would be
 * spliced into a SET when replayed, so it is refused here rather than quoted later.
 */
static bool
param_name_ok(const char *s)
{
    if (!isalpha((unsigned char) *s) && *s != '_') {
        return false;
    }
    for (s++; *s != '\0'; s++) {
        if (!isalnum((unsigned char) *s) && *s != '_' && *s != '.') {
            return false;
        }
    }
    return true;
}

static bool
param_builtin(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(tracked_params_builtin); i++) {
        if (strcasecmp(name, tracked_params_builtin[i]) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * track_parameters: every name checked; built-in names and repeats (compared case-insensitively,
 * as PostgreSQL does) are dropped, since tracking a parameter twice changes nothing.
 */
static void
set_track_parameters(struct cfg_parse *p, const char *key, const char *value)
{
    struct cfg *c = p->c;
    char **items;
    int n;
    if (!split_list(p, value, &items, &n)) {
        return;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        bool drop = false;
        if (!param_name_ok(items[i])) {
            ERR(p, p->lineno, key,
                "'%s' is not a parameter name (letters, digits, '_' and '.', starting with a "
                "letter or '_')",
                items[i]);
            drop = true;
        } else if (param_builtin(items[i])) {
            drop = true;
        } else {
            for (int j = 0; j < k; j++) {
                if (strcasecmp(items[j], items[i]) == 0) {
                    drop = true;
                    break;
                }
            }
        }
        if (drop) {
            free(items[i]);
        } else {
            items[k++] = items[i];
        }
    }
    free_list(c->track_parameters, c->n_track_parameters);
    c->track_parameters = k ? items : NULL;
    c->n_track_parameters = k;
    if (k == 0) {
        free(items);
    }
}

/*
 * client_tls_protocols: a comma- or space-separated list of tlsv1.2 and tlsv1.3, or "secure"
 * / "all" for both (PgBouncer's names). TLS 1.0 and 1.1 are refused by name: they are broken,
 * and PostgreSQL itself has required 1.2 by default since version 14. The versions must be
 * contiguous, as OpenSSL only takes a minimum and a maximum.
 */
static void
set_tls_protocols(struct cfg_parse *p, const char *key, const char *value)
{
    struct cfg *c = p->c;
    bool want12 = false, want13 = false;
    const char *s = value;
    while (*s) {
        while (*s == ',' || *s == ' ' || *s == '\t') {
            s++;
        }
        const char *e = s;
        while (*e && *e != ',' && *e != ' ' && *e != '\t') {
            e++;
        }
        size_t n = (size_t) (e - s);
        if (n == 0) {
            break;
        }
        if ((n == 7 && strncasecmp(s, "tlsv1.2", n) == 0)) {
            want12 = true;
        } else if (n == 7 && strncasecmp(s, "tlsv1.3", n) == 0) {
            want13 = true;
        } else if ((n == 6 && strncasecmp(s, "secure", n) == 0) ||
                   (n == 3 && strncasecmp(s, "all", n) == 0)) {
            want12 = want13 = true;
        } else if ((n == 7 &&
                    (strncasecmp(s, "tlsv1.0", n) == 0 || strncasecmp(s, "tlsv1.1", n) == 0)) ||
                   (n == 5 && strncasecmp(s, "tlsv1", n) == 0) ||
                   (n == 6 && strncasecmp(s, "legacy", n) == 0)) {
            ERR(p, p->lineno, key, "'%.*s' is not supported: the minimum is tlsv1.2", (int) n, s);
            return;
        } else {
            ERR(p, p->lineno, key,
                "unknown protocol '%.*s' (expected tlsv1.2, tlsv1.3, secure or all)", (int) n, s);
            return;
        }
        s = e;
    }
    if (!want12 && !want13) {
        ERR(p, p->lineno, key, "must name at least one protocol (tlsv1.2, tlsv1.3)");
        return;
    }
    c->client_tls_min_version = want12 ? TLS1_2_VERSION : TLS1_3_VERSION;
    c->client_tls_max_version = want13 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

/*
 * One part of a function name as it can be written unquoted: [A-Za-z_][A-Za-z0-9_$]*, at most
 * 63 bytes (PostgreSQL truncates longer identifiers, so a longer name could never match a call).
 * Quoted names are refused rather than half supported: the classifier compares names after
 * PostgreSQL's case folding, and a list entry is folded to lower case here.
 */
static bool
func_part_ok(const char *s, size_t n)
{
    if (n == 0 || n > 63 || (!isalpha((unsigned char) s[0]) && s[0] != '_')) {
        return false;
    }
    for (size_t i = 1; i < n; i++) {
        if (!isalnum((unsigned char) s[i]) && s[i] != '_' && s[i] != '$') {
            return false;
        }
    }
    return true;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * primary_functions: "name" or "schema.name" items, folded to lower case. A qualified item also
 * adds its bare name, because an unqualified call may reach the function through search_path;
 * the classifier then treats that name as primary-only in every schema, which errs towards the
 * primary. Stored sorted and without repeats, as the classifier's bsearch needs.
 */
static void
set_primary_functions(struct cfg_parse *p, const char *key, const char *value)
{
    struct cfg *c = p->c;
    char **items;
    int n;
    if (!split_list(p, value, &items, &n)) {
        return;
    }
    char **out = n ? calloc((size_t) n * 2, sizeof *out) : NULL;
    if (n && out == NULL) {
        p->oom = true;
        free_list(items, n);
        return;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        char *it = items[i];
        char *dot = strchr(it, '.');
        size_t len = strlen(it);
        bool ok = dot == NULL ? func_part_ok(it, len)
                              : func_part_ok(it, (size_t) (dot - it)) &&
                                    func_part_ok(dot + 1, len - (size_t) (dot - it) - 1);
        if (!ok) {
            ERR(p, p->lineno, key,
                "'%s' is not a function name (name or schema.name; letters, digits, '_' and "
                "'$', starting with a letter or '_', at most 63 bytes each, unquoted)",
                it);
            continue;
        }
        for (char *q = it; *q != '\0'; q++) {
            *q = (char) tolower((unsigned char) *q);
        }
        out[k] = dup_str(p, it, len);
        if (out[k] == NULL) {
            break;
        }
        k++;
        if (dot != NULL) {
            out[k] = dup_str(p, dot + 1, strlen(dot + 1));
            if (out[k] == NULL) {
                break;
            }
            k++;
        }
    }
    free_list(items, n);
    if (k > 1) {
        qsort(out, (size_t) k, sizeof *out, cmp_str);
    }
    int u = 0;
    for (int i = 0; i < k; i++) {
        if (u > 0 && strcmp(out[u - 1], out[i]) == 0) {
            free(out[i]);
        } else {
            out[u++] = out[i];
        }
    }
    free_list(c->primary_functions, c->n_primary_functions);
    c->primary_functions = u ? out : NULL;
    c->n_primary_functions = u;
    if (u == 0) {
        free(out);
    }
    /* FNV-1a over the list: the same list after a reload keeps classification caches warm */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < u; i++) {
        for (const char *q = out[i];; q++) {
            h = (h ^ (unsigned char) *q) * 0x100000001b3ULL;
            if (*q == '\0') {
                break;
            }
        }
    }
    c->primary_functions_hash = h;
}

static void
set_special(struct cfg_parse *p, enum key_id id, const char *key, const char *value)
{
    struct cfg *c = p->c;
    int v;
    switch (id) {
    case K_AUTH_TYPE:
        v = enum_lookup(value, auth_names, ARRAY_LEN(auth_names));
        if (v < 0) {
            err_bad_enum(p, key, value, auth_names, ARRAY_LEN(auth_names));
        } else {
            c->auth_type = (enum cfg_auth) v;
        }
        break;
    case K_UNIX_SOCKET_DIR: {
        /* The socket's path must fit in sun_path with the longest name we give it
         * (".s.PGSQL.65535"); a relative directory would depend on pgmux's working directory. */
        size_t len = strlen(value);
        if (len > 0 && value[0] != '/') {
            ERR(p, p->lineno, key, "'%s' is not an absolute path ('' turns the socket off)", value);
            break;
        }
        if (len + sizeof("/.s.PGSQL.65535") > sizeof(((struct sockaddr_un *) NULL)->sun_path)) {
            ERR(p, p->lineno, key, "'%s' is too long for a Unix socket path (at most %zu bytes)",
                value, sizeof(((struct sockaddr_un *) NULL)->sun_path) - sizeof("/.s.PGSQL.65535"));
            break;
        }
        free(c->unix_socket_dir);
        c->unix_socket_dir = NULL;
        if (len > 0) {
            c->unix_socket_dir = dup_str(p, value, len);
        }
        break;
    }
    case K_IO_ENGINE: {
        static const char *const engines[] = { "epoll", "io_uring", "auto" };
        v = enum_lookup(value, engines, ARRAY_LEN(engines));
        if (v < 0) {
            err_bad_enum(p, key, value, engines, ARRAY_LEN(engines));
        } else {
            c->io_engine = (enum cfg_io_engine) v;
        }
        break;
    }
    case K_UNIX_SOCKET_MODE: {
        /* Octal as in chmod and PgBouncer's unix_socket_mode; a leading 0 is optional. */
        char *end = NULL;
        errno = 0;
        long m = strtol(value, &end, 8);
        if (value[0] == '\0' || *end != '\0' || errno != 0 || m < 0 || m > 0777) {
            ERR(p, p->lineno, key, "'%s' is not an octal file mode 0..0777", value);
            break;
        }
        c->unix_socket_mode = (int) m;
        break;
    }
    case K_LOG_LEVEL: {
        static const char *const levels[] = {
            "fatal", "error", "warning", "info", "debug", "trace"
        };
        enum log_level lv;
        if (!log_level_parse(value, &lv)) {
            err_bad_enum(p, key, value, levels, ARRAY_LEN(levels));
        } else {
            c->log_level = lv;
        }
        break;
    }
    case K_LOG_MIN_DURATION: {
        /* "0" logs every request, as PostgreSQL's log_min_duration_statement does. */
        int64_t ms = -1;
        if (strcmp(value, "off") != 0 && strcmp(value, "-1") != 0) {
            ms = cfg_parse_duration_ms(value);
            if (ms < 0) {
                ERR(p, p->lineno, key,
                    "'%s' is not a duration (a number with ms, s, m or h; a bare number is "
                    "seconds) or off",
                    value);
                break;
            }
            if (ms > CFG_DURATION_MAX_MS) {
                ERR(p, p->lineno, key, "'%s' is out of range (at most %lld ms)", value,
                    (long long) CFG_DURATION_MAX_MS);
                break;
            }
        }
        c->log_min_duration_ms = ms;
        break;
    }
    case K_LOG_DESTINATION:
        v = enum_lookup(value, log_dest_names, ARRAY_LEN(log_dest_names));
        if (v < 0) {
            err_bad_enum(p, key, value, log_dest_names, ARRAY_LEN(log_dest_names));
        } else {
            c->log_destination = (enum cfg_log_dest) v;
        }
        break;
    case K_SYSLOG_FACILITY:
        v = enum_lookup(value, facility_names, ARRAY_LEN(facility_names));
        if (v < 0) {
            err_bad_enum(p, key, value, facility_names, ARRAY_LEN(facility_names));
        } else {
            c->syslog_facility = facility_codes[v];
        }
        break;
    case K_SYSLOG_IDENT: {
        /* It goes into every syslog message header: a tag of printable characters without
         * spaces, colons or brackets, as RFC 3164 expects. */
        size_t len = strlen(value);
        bool ok = len > 0 && len <= 32;
        for (size_t i = 0; ok && i < len; i++) {
            unsigned char ch = (unsigned char) value[i];
            ok = ch > 0x20 && ch < 0x7f && ch != ':' && ch != '[' && ch != ']';
        }
        if (!ok) {
            ERR(p, p->lineno, key,
                "'%s' must be 1 to 32 printable characters without spaces, ':', '[' or ']'", value);
            break;
        }
        char *dup = dup_str(p, value, len);
        if (dup) {
            free(c->syslog_ident);
            c->syslog_ident = dup;
        }
        break;
    }
    case K_POOL_MODE:
        v = enum_lookup(value, pool_mode_names, ARRAY_LEN(pool_mode_names));
        if (v < 0) {
            err_bad_enum(p, key, value, pool_mode_names, ARRAY_LEN(pool_mode_names));
        } else {
            c->pool_mode = (enum cfg_pool_mode) v;
        }
        break;
    case K_CLIENT_TLS_MODE:
        v = enum_lookup(value, client_tls_names, ARRAY_LEN(client_tls_names));
        if (v < 0) {
            err_bad_enum(p, key, value, client_tls_names, ARRAY_LEN(client_tls_names));
        } else {
            c->client_tls_mode = (enum cfg_client_tls) v;
        }
        break;
    case K_SERVER_TLS_MODE:
        v = enum_lookup(value, server_tls_names, ARRAY_LEN(server_tls_names));
        if (v < 0) {
            err_bad_enum(p, key, value, server_tls_names, ARRAY_LEN(server_tls_names));
        } else {
            c->server_tls_mode = (enum cfg_server_tls) v;
        }
        break;
    case K_CLIENT_TLS_PROTOCOLS:
        set_tls_protocols(p, key, value);
        break;
    case K_REPLICA_BALANCE:
        v = enum_lookup(value, balance_names, ARRAY_LEN(balance_names));
        if (v < 0) {
            err_bad_enum(p, key, value, balance_names, ARRAY_LEN(balance_names));
        } else {
            c->replica_balance = (enum cfg_balance) v;
        }
        break;
    case K_READ_YOUR_WRITES:
        v = enum_lookup(value, ryw_names, ARRAY_LEN(ryw_names));
        if (v < 0) {
            err_bad_enum(p, key, value, ryw_names, ARRAY_LEN(ryw_names));
        } else {
            c->read_your_writes = (enum cfg_ryw) v;
        }
        break;
    case K_MAX_REPLICA_LAG_BYTES: {
        /* Its own case: KT_SIZE stores 32 bits, and WAL distances outgrow 4 GB. */
        int64_t sz = parse_size(value);
        if (sz < 0) {
            ERR(p, p->lineno, key, "'%s' is not a size (bytes, or a number with kB, MB or GB)",
                value);
        } else {
            c->max_replica_lag_bytes = sz;
        }
        break;
    }
    case K_WARM_POOLS:
        set_warm_pools(p, key, value);
        break;
    case K_TRACK_PARAMETERS:
        set_track_parameters(p, key, value);
        break;
    case K_PRIMARY_FUNCTIONS:
        set_primary_functions(p, key, value);
        break;
    default:
        ASSERT(!"unhandled special key");
    }
}

static void
set_key(struct cfg_parse *p, enum key_id id, const char *key, const char *value)
{
    const struct key_def *d = &key_defs[id];
    char *base = (char *) p->c;
    int64_t v;
    switch (d->type) {
    case KT_STR:
    case KT_STR_OPT: {
        if (d->type == KT_STR && value[0] == '\0') {
            ERR(p, p->lineno, key, "must not be empty");
            return;
        }
        char **dst = (char **) (void *) (base + d->off);
        char *s = dup_str(p, value, strlen(value));
        if (s != NULL) {
            free(*dst);
            *dst = s;
        }
        return;
    }
    case KT_INT:
        (void) parse_int_in(p, key, value, d->min, d->max, (int *) (void *) (base + d->off));
        return;
    case KT_DURATION:
        v = cfg_parse_duration_ms(value);
        if (v < 0) {
            ERR(p, p->lineno, key,
                "'%s' is not a duration (a number with ms, s, m or h; a bare number is seconds)",
                value);
        } else if (v < d->min || v > d->max) {
            char lo[32], hi[32];
            format_duration(d->min, lo, sizeof lo);
            format_duration(d->max, hi, sizeof hi);
            ERR(p, p->lineno, key, "'%s' is out of range %s..%s", value, lo, hi);
        } else {
            *(int64_t *) (void *) (base + d->off) = v;
        }
        return;
    case KT_SIZE:
        v = parse_size(value);
        if (v < 0) {
            ERR(p, p->lineno, key, "'%s' is not a size (bytes, or a number with kB, MB or GB)",
                value);
        } else if (v < d->min || v > d->max) {
            ERR(p, p->lineno, key, "'%s' is out of range %lld..%lld bytes", value,
                (long long) d->min, (long long) d->max);
        } else {
            *(uint32_t *) (void *) (base + d->off) = (uint32_t) v;
        }
        return;
    case KT_LIST: {
        char ***dst = (char ***) (void *) (base + d->off);
        int *dst_n = (int *) (void *) (base + d->n_off);
        char **items;
        int n;
        if (split_list(p, value, &items, &n)) {
            free_list(*dst, *dst_n);
            *dst = items;
            *dst_n = n;
        }
        return;
    }
    case KT_BOOL:
        if (enum_lookup_nocase(value, bool_true_names, ARRAY_LEN(bool_true_names)) >= 0) {
            *(bool *) (void *) (base + d->off) = true;
        } else if (enum_lookup_nocase(value, bool_false_names, ARRAY_LEN(bool_false_names)) >= 0) {
            *(bool *) (void *) (base + d->off) = false;
        } else {
            ERR(p, p->lineno, key, "'%s' is not a boolean (on, off, true, false, yes, no, 1, 0)",
                value);
        }
        return;
    case KT_SPECIAL:
        set_special(p, id, key, value);
        return;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* [node.NAME] keys                                                                          */

static void
set_node_key(struct cfg_parse *p, const char *key, const char *value)
{
    struct cfg_node *n = &p->c->nodes[p->node_idx];
    struct node_seen *ns = &p->nseen[p->node_idx];
    int k = enum_lookup(key, node_key_names, NK__COUNT);
    if (k < 0) {
        ERR(p, p->lineno, key, "unknown key in [node.%s] (expected host, port, role or weight)",
            n->name);
        return;
    }
    if (ns->line[k] != 0) {
        ERR(p, p->lineno, key, "duplicate key (first set on line %d)", ns->line[k]);
        return;
    }
    ns->line[k] = p->lineno;
    int r;
    switch ((enum node_key) k) {
    case NK_HOST:
        if (value[0] == '\0') {
            ERR(p, p->lineno, key, "must not be empty");
            return;
        }
        free(n->host);
        n->host = dup_str(p, value, strlen(value));
        return;
    case NK_PORT:
    case NK_WEIGHT: {
        if (k == NK_PORT) {
            (void) parse_int_in(p, key, value, 1, 65535, &n->port);
        } else {
            (void) parse_int_in(p, key, value, 0, 1000, &n->weight);
        }
        return;
    }
    case NK_ROLE:
        r = enum_lookup(value, role_names, ARRAY_LEN(role_names));
        if (r < 0) {
            err_bad_enum(p, key, value, role_names, ARRAY_LEN(role_names));
        } else {
            n->role = (enum cfg_role) r;
        }
        return;
    case NK__COUNT:
        break;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* [database.NAME] and [user.NAME] keys                                                      */

static void
set_override_key(struct cfg_parse *p, const char *key, const char *value)
{
    bool is_db = p->sect == SECT_DATABASE;
    struct override_list *ol = is_db ? &p->dbs : &p->users;
    struct cfg_override *o =
        is_db ? &p->c->db_overrides[p->ovr_idx] : &p->c->user_overrides[p->ovr_idx];
    const char *max_key = is_db ? "max_db_connections" : "max_user_connections";
    if (strcmp(key, max_key) == 0) {
        int *seen_max = &ol->max_line[p->ovr_idx];
        if (*seen_max != 0) {
            ERR(p, p->lineno, key, "duplicate key (first set on line %d)", *seen_max);
            return;
        }
        *seen_max = p->lineno;
        /* the range of [pool]'s key of the same name */
        const struct key_def *d = &key_defs[is_db ? K_MAX_DB_CONNECTIONS : K_MAX_USER_CONNECTIONS];
        (void) parse_int_in(p, key, value, d->min, d->max, &o->max_conns);
        return;
    }
    if (strcmp(key, "pool_mode") != 0) {
        ERR(p, p->lineno, key, "unknown key in [%s.%s] (expected pool_mode or %s)", ol->kind,
            o->name, max_key);
        return;
    }
    int *seen = &ol->pool_mode_line[p->ovr_idx];
    if (*seen != 0) {
        ERR(p, p->lineno, key, "duplicate key (first set on line %d)", *seen);
        return;
    }
    *seen = p->lineno;
    int v = enum_lookup(value, pool_mode_names, ARRAY_LEN(pool_mode_names));
    if (v < 0) {
        err_bad_enum(p, key, value, pool_mode_names, ARRAY_LEN(pool_mode_names));
        return;
    }
    o->pool_mode = (enum cfg_pool_mode) v;
    o->has_pool_mode = true;
}

/* ---------------------------------------------------------------------------------------- */
/* Sections and the inih callbacks                                                           */

static bool
node_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > CFG_NODE_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char) name[i];
        if (!isalnum(ch) && ch != '_' && ch != '-') {
            return false;
        }
    }
    return true;
}

/* A PostgreSQL database or user name in a section header: 1..63 letters, digits, _ - . */
static bool
pg_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > CFG_PG_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char) name[i];
        if (!isalnum(ch) && ch != '_' && ch != '-' && ch != '.') {
            return false;
        }
    }
    return true;
}

/* Start a [database.NAME] (is_db) or [user.NAME] section. */
static void
override_begin(struct cfg_parse *p, bool is_db, const char *name, const char *label, int line)
{
    struct cfg *c = p->c;
    struct override_list *ol = is_db ? &p->dbs : &p->users;
    struct cfg_override **arr = is_db ? &c->db_overrides : &c->user_overrides;
    int *n = is_db ? &c->n_db_overrides : &c->n_user_overrides;
    if (!pg_name_ok(name)) {
        ERR(p, line, label, "%s name must be 1..%d letters, digits, '_', '-' or '.'", ol->kind,
            CFG_PG_NAME_MAX);
        return;
    }
    for (int i = 0; i < *n; i++) {
        if (strcmp((*arr)[i].name, name) == 0) {
            ERR(p, line, label, "duplicate section (first on line %d)", (*arr)[i].line);
            return;
        }
    }
    if (*n == ol->cap) {
        int cap = ol->cap ? ol->cap * 2 : 4;
        struct cfg_override *na = realloc(*arr, sizeof *na * (size_t) cap);
        if (na == NULL) {
            p->oom = true;
            return;
        }
        *arr = na;
        int *nl = realloc(ol->pool_mode_line, sizeof *nl * (size_t) cap);
        if (nl == NULL) {
            p->oom = true;
            return;
        }
        ol->pool_mode_line = nl;
        int *ml = realloc(ol->max_line, sizeof *ml * (size_t) cap);
        if (ml == NULL) {
            p->oom = true;
            return;
        }
        ol->max_line = ml;
        ol->cap = cap;
    }
    char *dn = dup_str(p, name, strlen(name));
    if (dn == NULL) {
        return;
    }
    (*arr)[*n] = (struct cfg_override){
        .name = dn,
        .pool_mode = CFG_POOL_SESSION,
        .has_pool_mode = false,
        .max_conns = -1,
        .line = line,
    };
    ol->pool_mode_line[*n] = 0;
    ol->max_line[*n] = 0;
    p->ovr_idx = (*n)++;
    p->sect = is_db ? SECT_DATABASE : SECT_USER;
}

static void
section_begin(struct cfg_parse *p, const char *name, int line)
{
    char label[96];
    snprintf(label, sizeof label, "[%.80s]", name);
    p->sect = SECT_IGNORE;
    if (strcmp(name, "pgmux") == 0 || strcmp(name, "pool") == 0) {
        bool is_pgmux = name[1] == 'g';
        int *first = is_pgmux ? &p->pgmux_line : &p->pool_line;
        if (*first != 0) {
            ERR(p, line, label, "duplicate section (first on line %d)", *first);
            return;
        }
        *first = line;
        p->sect = is_pgmux ? SECT_PGMUX : SECT_POOL;
        return;
    }
    if (strncmp(name, "database.", 9) == 0) {
        override_begin(p, true, name + 9, label, line);
        return;
    }
    if (strncmp(name, "user.", 5) == 0) {
        override_begin(p, false, name + 5, label, line);
        return;
    }
    if (strncmp(name, "node.", 5) != 0) {
        ERR(p, line, label,
            "unknown section (expected [pgmux], [pool], [node.NAME], [database.NAME] or "
            "[user.NAME])");
        return;
    }
    const char *nn = name + 5;
    if (!node_name_ok(nn)) {
        ERR(p, line, label, "node name must be 1..%d letters, digits, '_' or '-'",
            CFG_NODE_NAME_MAX);
        return;
    }
    struct cfg *c = p->c;
    for (int i = 0; i < c->n_nodes; i++) {
        if (strcmp(c->nodes[i].name, nn) == 0) {
            ERR(p, line, label, "duplicate section (first on line %d)", c->nodes[i].line);
            return;
        }
    }
    if (c->n_nodes == p->nodes_cap) {
        int cap = p->nodes_cap ? p->nodes_cap * 2 : 4;
        struct cfg_node *nn2 = realloc(c->nodes, sizeof *nn2 * (size_t) cap);
        if (nn2 == NULL) {
            p->oom = true;
            return;
        }
        c->nodes = nn2;
        struct node_seen *ns = realloc(p->nseen, sizeof *ns * (size_t) cap);
        if (ns == NULL) {
            p->oom = true;
            return;
        }
        p->nseen = ns;
        p->nodes_cap = cap;
    }
    char *dn = dup_str(p, nn, strlen(nn));
    if (dn == NULL) {
        return;
    }
    struct cfg_node *node = &c->nodes[c->n_nodes];
    *node = (struct cfg_node){
        .name = dn,
        .host = NULL,
        .port = 5432,
        .role = CFG_ROLE_AUTO,
        .weight = 1,
        .line = line,
    };
    memset(&p->nseen[c->n_nodes], 0, sizeof p->nseen[0]);
    p->node_idx = c->n_nodes++;
    p->sect = SECT_NODE;
}

/*
 * The key of a "key = value" line (as inih splits it: at the first '=' or ':'), for messages.
 * Returns false when there is no key before the separator.
 */
static bool
line_key(const char *s, size_t len, char *out, size_t cap)
{
    size_t k = 0;
    while (k < len && s[k] != '=' && s[k] != ':') {
        k++;
    }
    while (k > 0 && isspace((unsigned char) s[k - 1])) {
        k--;
    }
    snprintf(out, cap, "%.*s", (int) (k < 64 ? k : 64), s);
    return k > 0;
}

/*
 * Clean one physical line (see the file comment) into str (num bytes, fgets-style), or into
 * "\n" when the line is a comment, blank, or already reported as an error.
 */
static void
line_prepare(struct cfg_parse *p, const char *s, size_t len, char *str, int num)
{
    char key[72];
    strcpy(str, "\n");
    if (len > 0 && s[len - 1] == '\r') {
        len--;
    }
    if (p->lineno == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
        len -= 3;
    }
    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    if (len == 0 || *s == ';' || *s == '#') {
        return;
    }
    bool is_section = s[0] == '[';
    if (is_section) {
        snprintf(key, sizeof key, "section");
    } else if (!line_key(s, strnlen(s, len), key, sizeof key)) {
        snprintf(key, sizeof key, "line");
    }
    if (memchr(s, '\0', len) != NULL) {
        ERR(p, p->lineno, key, "line contains a NUL byte");
        p->sect = is_section ? SECT_IGNORE : p->sect;
        return;
    }
    /* inline comments: ';' or '#' after whitespace, outside double quotes */
    bool in_quote = false;
    for (size_t i = 0; i < len; i++) {
        bool after_space = i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t');
        if (s[i] == '"') {
            in_quote = !in_quote;
        } else if (after_space && !in_quote && (s[i] == ';' || s[i] == '#')) {
            len = i;
            break;
        } else if (after_space && in_quote && s[i] == ';') {
            ERR(p, p->lineno, key,
                "a ';' after a space inside a quoted value is not supported (inih would treat it "
                "as a comment)");
            p->sect = is_section ? SECT_IGNORE : p->sect;
            return;
        }
    }
    while (len > 0 && isspace((unsigned char) s[len - 1])) {
        len--;
    }
    if (num < 2 || len > (size_t) num - 2) {
        ERR(p, p->lineno, key, "line is longer than %d characters", num - 2);
        p->sect = is_section ? SECT_IGNORE : p->sect;
        return;
    }
    if (is_section) {
        if (s[len - 1] != ']' || len < 2) {
            ERR(p, p->lineno, key, "section header without a closing ']'");
            p->sect = SECT_IGNORE;
            return;
        }
        const char *a = s + 1, *b = s + len - 1;
        while (a < b && isspace((unsigned char) *a)) {
            a++;
        }
        while (b > a && isspace((unsigned char) b[-1])) {
            b--;
        }
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int) (b - a), a);
        section_begin(p, name, p->lineno);
    } else if (memchr(s, '=', len) == NULL && memchr(s, ':', len) == NULL) {
        ERR(p, p->lineno, key, "expected 'key = value'");
        return;
    } else if (strcmp(key, "line") == 0 && (s[0] == '=' || s[0] == ':')) {
        ERR(p, p->lineno, key, "expected 'key = value', the key is missing");
        return;
    }
    memcpy(str, s, len);
    str[len] = '\n';
    str[len + 1] = '\0';
}

/* inih reader: exactly one physical line per call, so p->lineno is the handler's line. */
static char *
ini_line_reader(char *str, int num, void *stream)
{
    struct cfg_parse *p = stream;
    if (p->pos >= p->text_len) {
        return NULL;
    }
    const char *s = p->text + p->pos;
    size_t avail = p->text_len - p->pos;
    const char *nl = memchr(s, '\n', avail);
    size_t len = nl ? (size_t) (nl - s) : avail;
    p->pos += nl ? len + 1 : len;
    p->lineno++;
    line_prepare(p, s, len, str, num);
    return str;
}

static int
ini_key_handler(void *user, const char *section, const char *name, const char *value)
{
    struct cfg_parse *p = user;
    (void) section; /* the reader tracks sections, including empty ones */
    if (p->sect == SECT_IGNORE) {
        return 1;
    }
    if (p->sect == SECT_NONE) {
        ERR(p, p->lineno, name, "key outside any section (start the file with [pgmux])");
        return 1;
    }
    /* strip one pair of double quotes around the whole value */
    char buf[CFG_ERR_LINE_MAX];
    size_t vlen = strlen(value);
    if (value[0] == '"') {
        if (vlen < 2 || value[vlen - 1] != '"') {
            ERR(p, p->lineno, name, "unterminated double quote");
            return 1;
        }
        snprintf(buf, sizeof buf, "%.*s", (int) (vlen - 2), value + 1);
        value = buf;
    }
    if (p->sect == SECT_NODE) {
        set_node_key(p, name, value);
        return 1;
    }
    if (p->sect == SECT_DATABASE || p->sect == SECT_USER) {
        set_override_key(p, name, value);
        return 1;
    }
    for (int id = 0; id < K__COUNT; id++) {
        const struct key_def *d = &key_defs[id];
        if (d->sect == p->sect && strcmp(d->name, name) == 0) {
            if (p->seen[id] != 0) {
                ERR(p, p->lineno, name, "duplicate key (first set on line %d)", p->seen[id]);
                return 1;
            }
            p->seen[id] = p->lineno;
            int before = p->n_errs;
            set_key(p, (enum key_id) id, name, value);
            p->bad[id] = p->n_errs != before;
            return 1;
        }
    }
    ERR(p, p->lineno, name, "unknown key in [%s]", p->sect == SECT_PGMUX ? "pgmux" : "pool");
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* auth_file                                                                                 */

/*
 * Read a double-quoted token starting at *sp ("" inside means one "), into a heap string.
 * Returns the string, or NULL with *unterminated set when there is no closing quote (or on
 * OOM, with p->oom set).
 */
static char *
auth_quoted(struct cfg_parse *p, const char **sp, const char *end, bool *unterminated)
{
    const char *s = *sp + 1;
    char *out = malloc((size_t) (end - s) + 1);
    if (out == NULL) {
        p->oom = true;
        *unterminated = false;
        return NULL;
    }
    size_t n = 0;
    while (s < end) {
        if (*s == '"') {
            if (s + 1 < end && s[1] == '"') {
                out[n++] = '"';
                s += 2;
                continue;
            }
            out[n] = '\0';
            *sp = s + 1;
            return out;
        }
        out[n++] = *s++;
    }
    OPENSSL_cleanse(out, n);
    free(out);
    *unterminated = true;
    return NULL;
}

static bool
is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char) s[i]) && !(s[i] >= 'a' && s[i] <= 'f')) {
            return false;
        }
    }
    return true;
}

/* Check a secret's form. Returns NULL if fine, else the reason (never quoting the secret). */
static const char *
auth_secret_check(const char *secret)
{
    size_t n = strlen(secret);
    if (n == 0) {
        return "empty secret";
    }
    if (strncmp(secret, CFG_SCRAM_SECRET_PREFIX, strlen(CFG_SCRAM_SECRET_PREFIX)) == 0) {
        struct proto_scram_secret sec;
        bool ok = proto_scram_secret_parse(secret, &sec);
        OPENSSL_cleanse(&sec, sizeof sec);
        return ok ? NULL
                  : "malformed SCRAM-SHA-256 secret (expected "
                    "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)";
    }
    /* PostgreSQL reads "md5" + 32 hex as an md5 hash and anything else as plaintext; a
     * 35-character "md5..." that is not hex is almost surely a damaged hash, so refuse it
     * rather than treat it as a password */
    if (n == CFG_MD5_SECRET_LEN && strncmp(secret, "md5", 3) == 0 &&
        !is_lower_hex(secret + 3, 32)) {
        return "malformed md5 secret (expected 'md5' followed by 32 lowercase hex digits)";
    }
    return NULL;
}

static int
auth_entry_cmp(const void *a, const void *b)
{
    const struct auth_entry *x = a, *y = b;
    int r = strcmp(x->name, y->name);
    return r != 0 ? r : (x->line > y->line) - (x->line < y->line);
}

/*
 * Parse the auth_file text: PgBouncer's userlist.txt, one `"user" "secret"` per line; blank
 * lines and lines starting with ';' or '#' are skipped, fields after the secret ignored.
 * Fills c->users sorted by name (cfg_user_find uses bsearch).
 */
static void
auth_parse(struct cfg_parse *p, const char *apath, const char *text, size_t text_len)
{
    struct auth_entry *ents = NULL;
    int n = 0, cap = 0;
    int lineno = 0;
    size_t pos = 0;
    while (pos < text_len) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', text_len - pos);
        const char *end = nl ? nl : text + text_len;
        pos = (size_t) (end - text) + (nl ? 1 : 0);
        lineno++;
        if (end > s && end[-1] == '\r') {
            end--;
        }
        while (s < end && (*s == ' ' || *s == '\t')) {
            s++;
        }
        if (s == end || *s == ';' || *s == '#') {
            continue;
        }
        if (memchr(s, '\0', (size_t) (end - s)) != NULL) {
            err_at(p, apath, lineno, NULL, "line contains a NUL byte");
            continue;
        }
        if (*s != '"') {
            err_at(p, apath, lineno, NULL, "expected a double-quoted user name");
            continue;
        }
        bool unterminated = false;
        char *name = auth_quoted(p, &s, end, &unterminated);
        if (name == NULL) {
            if (unterminated) {
                err_at(p, apath, lineno, NULL, "unterminated double-quoted user name");
            }
            continue;
        }
        if (name[0] == '\0') {
            err_at(p, apath, lineno, NULL, "empty user name");
            free(name);
            continue;
        }
        while (s < end && (*s == ' ' || *s == '\t')) {
            s++;
        }
        if (s == end || *s != '"') {
            err_at(p, apath, lineno, NULL,
                   "user '%.64s': expected a double-quoted secret after the user name", name);
            free(name);
            continue;
        }
        char *secret = auth_quoted(p, &s, end, &unterminated);
        if (secret == NULL) {
            if (unterminated) {
                err_at(p, apath, lineno, NULL, "user '%.64s': unterminated double-quoted secret",
                       name);
            }
            free(name);
            continue;
        }
        const char *why = auth_secret_check(secret);
        if (why != NULL) {
            err_at(p, apath, lineno, NULL, "user '%.64s': %s", name, why);
            free(name);
            wipe_free(secret);
            continue;
        }
        if (n == cap) {
            int ncap = cap ? cap * 2 : 16;
            struct auth_entry *ne = realloc(ents, sizeof *ne * (size_t) ncap);
            if (ne == NULL) {
                p->oom = true;
                free(name);
                wipe_free(secret);
                break;
            }
            ents = ne;
            cap = ncap;
        }
        ents[n++] = (struct auth_entry){ .name = name, .secret = secret, .line = lineno };
    }

    /* sort by name, then line, so a duplicate is reported on its later line */
    if (n > 1) {
        qsort(ents, (size_t) n, sizeof *ents, auth_entry_cmp);
    }
    struct cfg *c = p->c;
    c->users = n ? calloc((size_t) n, sizeof *c->users) : NULL;
    if (n && c->users == NULL) {
        p->oom = true;
        for (int i = 0; i < n; i++) {
            free(ents[i].name);
            wipe_free(ents[i].secret);
        }
        free(ents);
        return;
    }
    int k = 0, run = 0;
    for (int i = 0; i < n; i++) {
        /* ents[run] is the first (kept, so never freed) entry with this name */
        if (i > 0 && strcmp(ents[i].name, ents[run].name) == 0) {
            int first = ents[run].line;
            err_at(p, apath, ents[i].line, NULL, "duplicate user '%.64s' (first on line %d)",
                   ents[i].name, first);
            free(ents[i].name);
            wipe_free(ents[i].secret);
            continue;
        }
        run = i;
        c->users[k].name = ents[i].name;
        c->users[k].secret = ents[i].secret;
        k++;
    }
    c->n_users = k;
    free(ents);
}

/* A relative file name in *pathp is taken as relative to the ini file's directory. */
static bool
resolve_path(struct cfg_parse *p, char **pathp)
{
    const char *raw = *pathp;
    if (raw[0] != '/') {
        const char *slash = strrchr(p->path, '/');
        if (slash != NULL) {
            size_t dl = (size_t) (slash - p->path) + 1;
            size_t rl = strlen(raw);
            char *full = malloc(dl + rl + 1);
            if (full == NULL) {
                p->oom = true;
                return false;
            }
            memcpy(full, p->path, dl);
            memcpy(full + dl, raw, rl + 1);
            free(*pathp);
            *pathp = full;
        }
    }
    return true;
}

/* Resolve auth_file against the ini file's directory and load it. False if it was unreadable. */
static bool
auth_load(struct cfg_parse *p)
{
    struct cfg *c = p->c;
    int key_line = p->seen[K_AUTH_FILE];
    if (!resolve_path(p, &c->auth_file)) {
        return false;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = file_read_all(c->auth_file, CFG_AUTH_MAX_BYTES, &text, &len);
    if (rc != 0) {
        ERR(p, key_line, "auth_file", "cannot read '%s': %s", c->auth_file,
            rc == EFBIG ? "file too large" : strerror(rc));
        return false;
    }
    auth_parse(p, c->auth_file, text, len);
    OPENSSL_cleanse(text, len);
    free(text);
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* hba_file                                                                                  */

struct hba_err_ctx {
    struct cfg_parse *p;
    const char *file;
};

static void
hba_err(void *ctx, int line, const char *field, const char *reason)
{
    struct hba_err_ctx *e = ctx;
    err_at(e->p, e->file, line, field, "%s", reason);
}

static void
hba_load(struct cfg_parse *p)
{
    struct cfg *c = p->c;
    if (!resolve_path(p, &c->hba_file)) {
        return;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = file_read_all(c->hba_file, CFG_INI_MAX_BYTES, &text, &len);
    if (rc != 0) {
        ERR(p, p->seen[K_HBA_FILE], "hba_file", "cannot read '%s': %s", c->hba_file,
            rc == EFBIG ? "file too large" : strerror(rc));
        return;
    }
    struct hba_err_ctx e = { .p = p, .file = c->hba_file };
    (void) hba_parse(text, len, &c->hba, hba_err, &e);
    c->has_hba = true;
    free(text);
}

/* auth_user, auth_query, auth_dbname, auth_cache_ttl. have_users: the auth_file was read. */
static void
check_auth_query(struct cfg_parse *p, bool have_users)
{
    struct cfg *c = p->c;
    if (c->auth_user == NULL) {
        static const enum key_id needs[] = { K_AUTH_QUERY, K_AUTH_DBNAME, K_AUTH_CACHE_TTL };
        for (size_t i = 0; i < ARRAY_LEN(needs); i++) {
            if (p->seen[needs[i]] != 0 && p->seen[K_AUTH_USER] == 0) {
                ERR(p, p->seen[needs[i]], key_defs[needs[i]].name, "needs auth_user");
            }
        }
        return;
    }
    if (!p->bad[K_AUTH_QUERY] && strstr(c->auth_query, "$1") == NULL) {
        int line = p->seen[K_AUTH_QUERY] ? p->seen[K_AUTH_QUERY] : p->seen[K_AUTH_USER];
        ERR(p, line, "auth_query", "must use $1 for the user name");
    }
    if (!pg_name_ok(c->auth_user)) {
        ERR(p, p->seen[K_AUTH_USER], "auth_user", "'%.64s' is not a valid user name", c->auth_user);
        return;
    }
    if (c->auth_file == NULL) {
        ERR(p, p->seen[K_AUTH_USER], "auth_user",
            "needs auth_file, which holds auth_user's password");
        return;
    }
    if (!have_users) {
        return;
    }
    const struct cfg_user *u = cfg_user_find(c, c->auth_user);
    if (u == NULL) {
        ERR(p, p->seen[K_AUTH_USER], "auth_user", "user '%s' is not in auth_file", c->auth_user);
    } else if (strncmp(u->secret, CFG_SCRAM_SECRET_PREFIX, strlen(CFG_SCRAM_SECRET_PREFIX)) == 0 ||
               proto_md5_is_secret(u->secret)) {
        /* libpq logs in with a password; a stored hash cannot be turned back into one */
        ERR(p, p->seen[K_AUTH_USER], "auth_user",
            "user '%s' needs a plaintext password in auth_file (auth_query logs in with libpq)",
            c->auth_user);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Whole-file rules                                                                          */

/*
 * TLS keys that depend on each other. The files are only named here; proxy/tls.c reads them
 * (at start, with --check, and on reload) and reports what is wrong with their contents.
 */
static void
check_tls(struct cfg_parse *p)
{
    struct cfg *c = p->c;
    struct cfg_tls_lines *tl = &c->tls_lines;
    tl->client_mode = p->seen[K_CLIENT_TLS_MODE];
    tl->client_cert = p->seen[K_CLIENT_TLS_CERT_FILE];
    tl->client_key = p->seen[K_CLIENT_TLS_KEY_FILE];
    tl->client_ca = p->seen[K_CLIENT_TLS_CA_FILE];
    tl->client_protocols = p->seen[K_CLIENT_TLS_PROTOCOLS];
    tl->client_ciphers = p->seen[K_CLIENT_TLS_CIPHERS];
    tl->client_ciphersuites = p->seen[K_CLIENT_TLS_CIPHERSUITES];
    tl->server_mode = p->seen[K_SERVER_TLS_MODE];
    tl->server_ca = p->seen[K_SERVER_TLS_CA_FILE];
    tl->server_cert = p->seen[K_SERVER_TLS_CERT_FILE];
    tl->server_key = p->seen[K_SERVER_TLS_KEY_FILE];

    char **files[] = {
        &c->client_tls_cert_file, &c->client_tls_key_file,  &c->client_tls_ca_file,
        &c->server_tls_ca_file,   &c->server_tls_cert_file, &c->server_tls_key_file
    };
    for (size_t i = 0; i < ARRAY_LEN(files); i++) {
        if (*files[i] != NULL && !resolve_path(p, files[i])) {
            return;
        }
    }
    if (c->client_tls_mode != CFG_CLIENT_TLS_DISABLE && !p->bad[K_CLIENT_TLS_MODE]) {
        if (c->client_tls_cert_file == NULL) {
            ERR(p, tl->client_mode, "client_tls_cert_file", "required when client_tls_mode is %s",
                cfg_client_tls_name(c->client_tls_mode));
        }
        if (c->client_tls_key_file == NULL) {
            ERR(p, tl->client_mode, "client_tls_key_file", "required when client_tls_mode is %s",
                cfg_client_tls_name(c->client_tls_mode));
        }
    }
    if ((c->client_tls_cert_file == NULL) != (c->client_tls_key_file == NULL) &&
        c->client_tls_mode == CFG_CLIENT_TLS_DISABLE) {
        int line = tl->client_cert ? tl->client_cert : tl->client_key;
        ERR(p, line, c->client_tls_cert_file ? "client_tls_key_file" : "client_tls_cert_file",
            "client_tls_cert_file and client_tls_key_file go together");
    }
    if ((c->server_tls_cert_file == NULL) != (c->server_tls_key_file == NULL)) {
        int line = tl->server_cert ? tl->server_cert : tl->server_key;
        ERR(p, line, c->server_tls_cert_file ? "server_tls_key_file" : "server_tls_cert_file",
            "server_tls_cert_file and server_tls_key_file go together");
    }
}

/* libpq can log in only with a plaintext password: md5 hashes and SCRAM verifiers are no use
 * to the monitor. */
static bool
secret_is_plaintext(const char *s)
{
    return strncmp(s, CFG_SCRAM_SECRET_PREFIX, strlen(CFG_SCRAM_SECRET_PREFIX)) != 0 &&
           !(strlen(s) == CFG_MD5_SECRET_LEN && strncmp(s, "md5", 3) == 0);
}

/* Console-only users are pgmux's, and may not exist on the servers. */
static bool
user_is_console_only(const struct cfg *c, const char *name)
{
    for (int i = 0; i < c->n_admin_users; i++) {
        if (strcmp(c->admin_users[i], name) == 0) {
            return true;
        }
    }
    for (int i = 0; i < c->n_stats_users; i++) {
        if (strcmp(c->stats_users[i], name) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * Who the monitor logs in as when the file does not say: a user that certainly exists on the
 * servers, the first warm_pools user with a plaintext secret in auth_file; else the first
 * auth_file user (in name order) with one that is not in admin_users or stats_users. The
 * password, when not set, is that user's plaintext secret. With nobody suitable the user stays
 * NULL and the monitor does not check (it says so in the log); this is not an error, since a
 * configuration with only hashed secrets worked before the monitor existed.
 */
static void
health_check_credentials(struct cfg_parse *p)
{
    struct cfg *c = p->c;
    if (c->health_check_user == NULL) {
        const char *pick = NULL;
        for (int i = 0; i < c->n_warm_pools && pick == NULL; i++) {
            const struct cfg_user *u = cfg_user_find(c, c->warm_pools[i].user);
            if (u != NULL && secret_is_plaintext(u->secret)) {
                pick = u->name;
            }
        }
        for (int i = 0; i < c->n_users && pick == NULL; i++) {
            if (secret_is_plaintext(c->users[i].secret) &&
                !user_is_console_only(c, c->users[i].name)) {
                pick = c->users[i].name;
            }
        }
        if (pick != NULL) {
            c->health_check_user = dup_str(p, pick, strlen(pick));
        }
    }
    if (c->health_check_user != NULL && c->health_check_password == NULL) {
        const struct cfg_user *u = cfg_user_find(c, c->health_check_user);
        if (u != NULL && secret_is_plaintext(u->secret)) {
            c->health_check_password = dup_str(p, u->secret, strlen(u->secret));
        }
    }
}

static void
check_rules(struct cfg_parse *p)
{
    struct cfg *c = p->c;

    check_tls(p);

    if (c->n_nodes == 0) {
        ERR(p, 0, "node", "no [node.NAME] section; at least one node is required");
    } else if (c->n_nodes > TOPO_MAX_NODES) {
        ERR(p, 0, "node", "%d [node.NAME] sections; at most %d", c->n_nodes, TOPO_MAX_NODES);
    }
    int primary = -1;
    for (int i = 0; i < c->n_nodes; i++) {
        struct cfg_node *n = &c->nodes[i];
        if (n->host == NULL && p->nseen[i].line[NK_HOST] == 0) {
            ERR(p, n->line, "host", "missing in [node.%s]", n->name);
        }
        if (n->role == CFG_ROLE_PRIMARY) {
            if (primary >= 0) {
                ERR(p, p->nseen[i].line[NK_ROLE], "role",
                    "more than one node with role = primary ([node.%s] on line %d is one)",
                    c->nodes[primary].name, p->nseen[primary].line[NK_ROLE]);
            } else {
                primary = i;
            }
        }
    }

    /* a refused value keeps its default; comparing against it would only confuse */
    bool limits_bad = p->bad[K_MAX_OPEN_CONNS] || p->bad[K_MAX_IDLE_CONNS];
    if (p->seen[K_MAX_IDLE_CONNS] == 0 || p->bad[K_MAX_IDLE_CONNS]) {
        c->max_idle_conns = c->max_open_conns;
    } else if (!limits_bad && c->max_idle_conns > c->max_open_conns) {
        ERR(p, p->seen[K_MAX_IDLE_CONNS], "max_idle_conns", "%d is more than max_open_conns (%d)",
            c->max_idle_conns, c->max_open_conns);
    }
    if (!limits_bad && !p->bad[K_MIN_IDLE_CONNS] && c->min_idle_conns > c->max_idle_conns) {
        ERR(p, p->seen[K_MIN_IDLE_CONNS], "min_idle_conns", "%d is more than max_idle_conns (%d)",
            c->min_idle_conns, c->max_idle_conns);
    }

    if (c->metrics_port != 0 && c->metrics_port == c->listen_port && !p->bad[K_METRICS_PORT] &&
        !p->bad[K_LISTEN_PORT]) {
        ERR(p, p->seen[K_METRICS_PORT], "metrics_port", "%d is also listen_port", c->metrics_port);
    }
    if (c->syslog_socket[0] != '/' && !p->bad[K_SYSLOG_SOCKET]) {
        ERR(p, p->seen[K_SYSLOG_SOCKET], "syslog_socket", "'%s' is not an absolute path",
            c->syslog_socket);
    } else if (strlen(c->syslog_socket) >= 108) {
        ERR(p, p->seen[K_SYSLOG_SOCKET], "syslog_socket",
            "longer than a unix socket path can be (107 bytes)");
    }

    if (c->workers == 0) {
        int ncpu = cpus_usable();
        c->workers = ncpu > 256 ? 256 : ncpu;
    }

    bool have_users = false;
    if (c->auth_file != NULL) {
        have_users = auth_load(p);
    } else if (c->auth_type != CFG_AUTH_TRUST && p->seen[K_AUTH_FILE] == 0 &&
               !p->bad[K_AUTH_TYPE]) {
        int line = p->seen[K_AUTH_TYPE] ? p->seen[K_AUTH_TYPE] : p->pgmux_line;
        ERR(p, line, "auth_file", "required when auth_type is %s", cfg_auth_name(c->auth_type));
    }

    check_auth_query(p, have_users);
    if (c->hba_file != NULL && !p->bad[K_HBA_FILE]) {
        hba_load(p);
    }
    health_check_credentials(p);

    /* a warm pool logs in as its user, so with a password-checking auth_type the user needs a
     * secret; checked only when the auth_file was read */
    if (c->auth_type != CFG_AUTH_TRUST && have_users) {
        for (int i = 0; i < c->n_warm_pools; i++) {
            if (cfg_user_find(c, c->warm_pools[i].user) == NULL) {
                ERR(p, p->seen[K_WARM_POOLS], "warm_pools", "user '%s' is not in auth_file",
                    c->warm_pools[i].user);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Public                                                                                    */

static void
cfg_free(struct cfg *c)
{
    if (c == NULL) {
        return;
    }
    free(c->path);
    free(c->listen_addr);
    free(c->unix_socket_dir);
    free(c->metrics_addr);
    free(c->syslog_ident);
    free(c->syslog_socket);
    free(c->auth_file);
    free(c->hba_file);
    hba_rules_free(&c->hba);
    free(c->auth_user);
    free(c->auth_query);
    free(c->auth_dbname);
    free_list(c->admin_users, c->n_admin_users);
    free_list(c->stats_users, c->n_stats_users);
    free(c->server_reset_query);
    free(c->client_tls_cert_file);
    free(c->client_tls_key_file);
    free(c->client_tls_ca_file);
    free(c->client_tls_ciphers);
    free(c->client_tls_ciphersuites);
    free(c->server_tls_ca_file);
    free(c->server_tls_cert_file);
    free(c->server_tls_key_file);
    free(c->health_check_user);
    wipe_free(c->health_check_password);
    free(c->health_check_database);
    for (int i = 0; i < c->n_warm_pools; i++) {
        free(c->warm_pools[i].user);
        free(c->warm_pools[i].database);
    }
    free(c->warm_pools);
    free_list(c->track_parameters, c->n_track_parameters);
    free_list(c->primary_functions, c->n_primary_functions);
    for (int i = 0; i < c->n_db_overrides; i++) {
        free(c->db_overrides[i].name);
    }
    free(c->db_overrides);
    for (int i = 0; i < c->n_user_overrides; i++) {
        free(c->user_overrides[i].name);
    }
    free(c->user_overrides);
    for (int i = 0; i < c->n_nodes; i++) {
        free(c->nodes[i].name);
        free(c->nodes[i].host);
    }
    free(c->nodes);
    for (int i = 0; i < c->n_users; i++) {
        free(c->users[i].name);
        wipe_free(c->users[i].secret);
    }
    free(c->users);
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

static struct cfg *
cfg_new_defaults(const char *path)
{
    struct cfg *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    atomic_init(&c->refs, 1);
    c->path = strdup(path);
    c->listen_addr = strdup("127.0.0.1");
    c->listen_port = 6432;
    c->unix_socket_mode = 0777;
    c->workers = 0;
    c->worker_balance = true;
    c->worker_busy_percent = 70;
    c->max_client_conn = 1000;
    c->auth_type = CFG_AUTH_SCRAM;
    c->server_reset_query = strdup("DISCARD ALL");
    c->client_idle_timeout_ms = 0;
    c->idle_transaction_timeout_ms = 0;
    c->client_login_timeout_ms = 60 * 1000;
    c->query_wait_timeout_ms = 120 * 1000;
    c->server_connect_timeout_ms = 15 * 1000;
    c->server_login_retry_ms = 1000;
    c->shutdown_timeout_ms = 30 * 1000;
    c->health_check_period_ms = 1000;
    c->health_check_timeout_ms = 1000;
    c->health_check_database = strdup("postgres");
    c->dns_ttl_ms = 30 * 1000;
    c->log_level = LOG_INFO;
    c->log_min_duration_ms = -1;
    c->log_destination = CFG_LOG_STDERR;
    c->syslog_ident = strdup("pgmux");
    c->syslog_facility = 3; /* daemon */
    c->syslog_socket = strdup("/dev/log");
    c->metrics_addr = strdup("127.0.0.1");
    c->metrics_port = 0;
    c->max_message_size = CFG_MSG_SIZE_MAX;
    c->max_client_conn_per_addr = 0;
    c->auth_query = strdup(CFG_AUTH_QUERY_DEFAULT);
    c->auth_cache_ttl_ms = 60 * 1000;
    c->pool_mode = CFG_POOL_SESSION;
    c->max_open_conns = 20;
    c->max_idle_conns = 20;
    c->min_idle_conns = 0;
    c->conn_max_lifetime_ms = 3600 * 1000;
    c->conn_max_idle_time_ms = 600 * 1000;
    c->max_prepared_statements = 100;
    c->pin_session_state = true;
    c->client_tls_mode = CFG_CLIENT_TLS_DISABLE;
    c->client_tls_min_version = TLS1_2_VERSION;
    c->client_tls_max_version = TLS1_3_VERSION;
    /* PostgreSQL's ssl_ciphers default without the 3DES and MEDIUM it keeps for old clients */
    c->client_tls_ciphers = strdup("HIGH:!aNULL:!MD5");
    c->server_tls_mode = CFG_SERVER_TLS_DISABLE;
    c->read_write_split = true;
    c->replica_balance = CFG_BALANCE_LEAST_CONN;
    c->primary_reads_weight = 0;
    c->max_replica_lag_ms = 0;
    c->max_replica_lag_bytes = 0;
    c->read_your_writes = CFG_RYW_LSN;
    c->read_your_writes_window_ms = 1000;
    if (c->path == NULL || c->listen_addr == NULL || c->server_reset_query == NULL ||
        c->client_tls_ciphers == NULL || c->syslog_ident == NULL || c->syslog_socket == NULL ||
        c->metrics_addr == NULL || c->auth_query == NULL || c->health_check_database == NULL) {
        cfg_free(c);
        return NULL;
    }
    return c;
}

/* Copy the collected errors into err, cutting at a line boundary if they do not fit. */
static void
err_export(const struct cfg_parse *p, char *err, size_t errlen)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    const char *src = p->errs ? p->errs : "";
    size_t n = p->errs_len;
    if (p->oom) {
        src = "out of memory while loading the configuration";
        n = strlen(src);
    }
    if (n < errlen) {
        memcpy(err, src, n + 1);
        return;
    }
    static const char more[] = "\n(more errors not shown)";
    size_t keep = errlen > sizeof more ? errlen - sizeof more : 0;
    while (keep > 0 && src[keep] != '\n') {
        keep--;
    }
    if (keep == 0) {
        snprintf(err, errlen, "%.*s", (int) (errlen - 1), src);
        return;
    }
    memcpy(err, src, keep);
    snprintf(err + keep, errlen - keep, "%s", more);
}

int
cfg_load(const char *path, struct cfg **out, char *err, size_t errlen)
{
    *out = NULL;
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    struct cfg_parse p = {
        .path = path,
        .dbs = { .kind = "database" },
        .users = { .kind = "user" },
    };
    char *text = NULL;
    size_t text_len = 0;
    p.c = cfg_new_defaults(path);
    if (p.c == NULL) {
        p.oom = true;
        goto done;
    }
    int rc = file_read_all(path, CFG_INI_MAX_BYTES, &text, &text_len);
    if (rc != 0) {
        ERR(&p, 0, "file", "cannot read: %s", rc == EFBIG ? "file too large" : strerror(rc));
        goto done;
    }
    p.text = text;
    p.text_len = text_len;
    int r = ini_parse_stream(ini_line_reader, &p, ini_key_handler, &p);
    if (r == -2) {
        p.oom = true;
    } else if (r > 0 && p.n_errs == 0) {
        /* the reader hands inih only lines it accepts, so this is a case we did not foresee */
        ERR(&p, r, "line", "syntax error");
    }
    if (!p.oom) {
        check_rules(&p);
    }
done:
    free(text);
    free(p.nseen);
    free(p.dbs.pool_mode_line);
    free(p.users.pool_mode_line);
    free(p.dbs.max_line);
    free(p.users.max_line);
    if (p.oom || p.n_errs > 0) {
        err_export(&p, err, errlen);
        free(p.errs);
        cfg_free(p.c);
        return -1;
    }
    free(p.errs);
    *out = p.c;
    return 0;
}

struct cfg *
cfg_ref(struct cfg *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void
cfg_unref(struct cfg *c)
{
    if (c == NULL) {
        return;
    }
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
        cfg_free(c);
    }
}

static int
user_key_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct cfg_user *) elem)->name);
}

const struct cfg_user *
cfg_user_find(const struct cfg *c, const char *name)
{
    if (c->n_users == 0) {
        return NULL;
    }
    return bsearch(name, c->users, (size_t) c->n_users, sizeof *c->users, user_key_cmp);
}

/* Linear: a handful of sections, looked up once per client login. NULL name matches none. */
static const struct cfg_override *
override_find(const struct cfg_override *arr, int n, const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(arr[i].name, name) == 0) {
            return &arr[i];
        }
    }
    return NULL;
}

enum cfg_pool_mode
cfg_pool_mode_for(const struct cfg *c, const char *database, const char *user)
{
    const struct cfg_override *o = override_find(c->user_overrides, c->n_user_overrides, user);
    if (o != NULL && o->has_pool_mode) {
        return o->pool_mode;
    }
    o = override_find(c->db_overrides, c->n_db_overrides, database);
    if (o != NULL && o->has_pool_mode) {
        return o->pool_mode;
    }
    return c->pool_mode;
}

bool
cfg_may_pool_session(const struct cfg *c)
{
    bool may = c->pool_mode == CFG_POOL_SESSION;
    for (int i = 0; i < c->n_db_overrides && !may; i++) {
        may = c->db_overrides[i].has_pool_mode && c->db_overrides[i].pool_mode == CFG_POOL_SESSION;
    }
    for (int i = 0; i < c->n_user_overrides && !may; i++) {
        may = c->user_overrides[i].has_pool_mode &&
              c->user_overrides[i].pool_mode == CFG_POOL_SESSION;
    }
    return may;
}

bool
cfg_param_tracked(const struct cfg *c, const char *name)
{
    if (param_builtin(name)) {
        return true;
    }
    for (int i = 0; i < c->n_track_parameters; i++) {
        if (strcasecmp(name, c->track_parameters[i]) == 0) {
            return true;
        }
    }
    return false;
}

bool
cfg_scan_tracked(const char *name, size_t len, void *arg)
{
    char buf[ROUTER_NAME_MAX * 2];
    if (len >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, name, len);
    buf[len] = '\0';
    return cfg_param_tracked(arg, buf);
}

int
cfg_tracked_count(const struct cfg *c)
{
    return (int) ARRAY_LEN(tracked_params_builtin) + c->n_track_parameters;
}

const char *
cfg_tracked_name(const struct cfg *c, int i)
{
    int nb = (int) ARRAY_LEN(tracked_params_builtin);
    return i < nb ? tracked_params_builtin[i] : c->track_parameters[i - nb];
}

/* ---------------------------------------------------------------------------------------- */
/* The key table seen from outside: SHOW CONFIG and SET on the admin console                 */

int
cfg_key_count(void)
{
    return K__COUNT;
}

const char *
cfg_key_name(int i)
{
    return i >= 0 && i < K__COUNT ? key_defs[i].name : NULL;
}

int
cfg_key_find(const char *name)
{
    for (int i = 0; i < K__COUNT; i++) {
        if (strcasecmp(name, key_defs[i].name) == 0) {
            return i;
        }
    }
    return -1;
}

/* Append s to out[*pos..len), keeping it NUL-terminated; cut when it does not fit. */
static void
fmt_append(char *out, size_t len, size_t *pos, const char *s)
{
    int n = snprintf(out + *pos, len - *pos, "%s", s);
    if (n > 0) {
        *pos += (size_t) n < len - *pos ? (size_t) n : len - *pos - 1;
    }
}

void
cfg_key_format(const struct cfg *c, int i, char *out, size_t len)
{
    if (len == 0) {
        return;
    }
    out[0] = '\0';
    if (i < 0 || i >= K__COUNT) {
        return;
    }
    const struct key_def *d = &key_defs[i];
    const char *base = (const char *) c;
    size_t pos = 0;
    switch (d->type) {
    case KT_STR:
    case KT_STR_OPT: {
        const char *s = *(char *const *) (const void *) (base + d->off);
        snprintf(out, len, "%s", s ? s : "");
        return;
    }
    case KT_INT:
        snprintf(out, len, "%d", *(const int *) (const void *) (base + d->off));
        return;
    case KT_DURATION:
        format_duration(*(const int64_t *) (const void *) (base + d->off), out, len);
        return;
    case KT_SIZE:
        snprintf(out, len, "%u", (unsigned) *(const uint32_t *) (const void *) (base + d->off));
        return;
    case KT_BOOL:
        snprintf(out, len, "%s", *(const bool *) (const void *) (base + d->off) ? "on" : "off");
        return;
    case KT_LIST: {
        char *const *items = *(char **const *) (const void *) (base + d->off);
        int n = *(const int *) (const void *) (base + d->n_off);
        for (int k = 0; k < n; k++) {
            fmt_append(out, len, &pos, k ? ", " : "");
            fmt_append(out, len, &pos, items[k]);
        }
        return;
    }
    case KT_SPECIAL:
        break;
    }
    switch ((enum key_id) i) {
    case K_AUTH_TYPE:
        snprintf(out, len, "%s", cfg_auth_name(c->auth_type));
        return;
    case K_LOG_LEVEL: {
        static const char *const levels[] = {
            "fatal", "error", "warning", "info", "debug", "trace"
        };
        unsigned lv = (unsigned) c->log_level;
        snprintf(out, len, "%s", lv < ARRAY_LEN(levels) ? levels[lv] : "?");
        return;
    }
    case K_POOL_MODE:
        snprintf(out, len, "%s", cfg_pool_mode_name(c->pool_mode));
        return;
    case K_WARM_POOLS:
        for (int k = 0; k < c->n_warm_pools; k++) {
            fmt_append(out, len, &pos, k ? ", " : "");
            fmt_append(out, len, &pos, c->warm_pools[k].user);
            fmt_append(out, len, &pos, "@");
            fmt_append(out, len, &pos, c->warm_pools[k].database);
        }
        return;
    case K_TRACK_PARAMETERS:
        for (int k = 0; k < c->n_track_parameters; k++) {
            fmt_append(out, len, &pos, k ? ", " : "");
            fmt_append(out, len, &pos, c->track_parameters[k]);
        }
        return;
    default:
        return;
    }
}

struct cfg *
cfg_defaults(void)
{
    return cfg_new_defaults("");
}

int
cfg_key_parse(int i, const char *value, int64_t *out, char *err, size_t errlen)
{
    if (i < 0 || i >= K__COUNT) {
        snprintf(err, errlen, "unknown key");
        return -1;
    }
    const struct key_def *d = &key_defs[i];
    int64_t v;
    char lo[32], hi[32];
    switch (d->type) {
    case KT_INT:
        if (!parse_int64(value, &v)) {
            snprintf(err, errlen, "'%s' is not an integer", value);
            return -1;
        }
        if (v < d->min || v > d->max) {
            snprintf(err, errlen, "%lld is out of range %lld..%lld", (long long) v,
                     (long long) d->min, (long long) d->max);
            return -1;
        }
        *out = v;
        return 0;
    case KT_DURATION:
        v = cfg_parse_duration_ms(value);
        if (v < 0) {
            snprintf(err, errlen,
                     "'%s' is not a duration (a number with ms, s, m or h; a bare number is "
                     "seconds)",
                     value);
            return -1;
        }
        if (v < d->min || v > d->max) {
            format_duration(d->min, lo, sizeof lo);
            format_duration(d->max, hi, sizeof hi);
            snprintf(err, errlen, "'%s' is out of range %s..%s", value, lo, hi);
            return -1;
        }
        *out = v;
        return 0;
    case KT_SIZE:
        v = parse_size(value);
        if (v < 0 || v < d->min || v > d->max) {
            snprintf(err, errlen, "'%s' is not a size in %lld..%lld bytes", value,
                     (long long) d->min, (long long) d->max);
            return -1;
        }
        *out = v;
        return 0;
    case KT_BOOL:
        if (enum_lookup_nocase(value, bool_true_names, ARRAY_LEN(bool_true_names)) >= 0) {
            *out = 1;
            return 0;
        }
        if (enum_lookup_nocase(value, bool_false_names, ARRAY_LEN(bool_false_names)) >= 0) {
            *out = 0;
            return 0;
        }
        snprintf(err, errlen, "'%s' is not a boolean (on, off, true, false, yes, no, 1, 0)", value);
        return -1;
    case KT_SPECIAL:
        if (i == K_LOG_LEVEL) {
            enum log_level lv;
            if (!log_level_parse(value, &lv)) {
                snprintf(err, errlen,
                         "'%s' is not one of fatal, error, warning, info, debug, trace", value);
                return -1;
            }
            *out = lv;
            return 0;
        }
        break;
    default:
        break;
    }
    snprintf(err, errlen, "not a single value");
    return -1;
}
