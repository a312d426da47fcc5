/*
 * config.h - the configuration snapshot read from proxy.ini (inih) and its auth_file.
 *
 * A struct cfg is immutable once cfg_load returns and is shared by reference count between the
 * main thread and workers (CONVENTIONS 6.6): reload builds a new one, publishes it, and the old
 * one is freed when its last holder lets go. Nothing reads configuration from globals.
 *
 * cfg_load runs on the main thread (it reads files). The rest: any thread.
 */
#ifndef PGMUX_PROXY_CONFIG_H
#define PGMUX_PROXY_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/log.h"
#include "common/macros.h"
#include "proxy/hba.h"

enum cfg_role {
    CFG_ROLE_AUTO,
    CFG_ROLE_PRIMARY,
    CFG_ROLE_REPLICA,
};

enum cfg_auth {
    CFG_AUTH_TRUST,
    CFG_AUTH_MD5,
    CFG_AUTH_SCRAM,
};

enum cfg_log_dest {
    CFG_LOG_STDERR,
    CFG_LOG_SYSLOG,
};

/* How workers do socket I/O (io_engine). */
enum cfg_io_engine {
    CFG_IO_EPOLL, /* readiness from epoll, one recv per readable socket */
    CFG_IO_URING, /* receives of a loop iteration batched into one io_uring submission */
    CFG_IO_AUTO,  /* io_uring when the kernel allows it, else epoll */
};

enum cfg_pool_mode {
    CFG_POOL_SESSION,
    CFG_POOL_TRANSACTION,
    CFG_POOL_STATEMENT,
};

/* client_tls_mode: PgBouncer's client_tls_sslmode values that make sense without client
 * certificates being mandatory (client_tls_ca_file makes them mandatory). */
enum cfg_client_tls {
    CFG_CLIENT_TLS_DISABLE, /* SSLRequest answered 'N' */
    CFG_CLIENT_TLS_ALLOW,   /* TLS when the client asks for it */
    CFG_CLIENT_TLS_PREFER,  /* same as allow: the client decides */
    CFG_CLIENT_TLS_REQUIRE, /* plaintext clients refused (28000) */
};

/* server_tls_mode: libpq's sslmode values. */
enum cfg_server_tls {
    CFG_SERVER_TLS_DISABLE,
    CFG_SERVER_TLS_PREFER,      /* TLS when the server offers it, certificate not checked */
    CFG_SERVER_TLS_REQUIRE,     /* TLS or no connection, certificate not checked */
    CFG_SERVER_TLS_VERIFY_CA,   /* and the certificate chains to server_tls_ca_file */
    CFG_SERVER_TLS_VERIFY_FULL, /* and names the node's host (DNS name or IP address) */
};

/* Where each TLS key was set, so problems found when the files are loaded (proxy/tls.c) name
 * the line; 0 = not set. */
struct cfg_tls_lines {
    int client_mode;
    int client_cert;
    int client_key;
    int client_ca;
    int client_protocols;
    int client_ciphers;
    int client_ciphersuites;
    int server_mode;
    int server_ca;
    int server_cert;
    int server_key;
};

/* replica_balance: how reads are spread over the usable read nodes. */
enum cfg_balance {
    CFG_BALANCE_LEAST_CONN,
    CFG_BALANCE_ROUND_ROBIN,
    CFG_BALANCE_RANDOM,
    CFG_BALANCE_HASH,
};

/* read_your_writes: what keeps a client's reads after its own writes. */
enum cfg_ryw {
    CFG_RYW_LSN,    /* reads only where the commit's WAL position has been replayed */
    CFG_RYW_WINDOW, /* reads on the primary for read_your_writes_window after a write */
    CFG_RYW_OFF,
};

struct cfg_node {
    char *name; /* the NAME of [node.NAME] */
    char *host; /* host name or address as written; resolved by main before workers start */
    int port;
    enum cfg_role role;
    int weight; /* relative share of reads among replicas, >= 0 */
    int line;   /* line of the section header, for messages */
};

struct cfg_user {
    char *name;
    char *secret; /* plaintext, "md5..." or "SCRAM-SHA-256$..."; never logged */
};

struct cfg_warm_pool {
    char *user;
    char *database;
};

/*
 * One [database.NAME] or [user.NAME] section: settings that replace [pool]'s for clients
 * connecting to that database or as that user. Precedence: user, then database, then [pool]
 * (cfg_pool_mode_for).
 */
struct cfg_override {
    char *name;                   /* the database or user name, exact (case-sensitive) */
    enum cfg_pool_mode pool_mode; /* meaningful only when has_pool_mode */
    bool has_pool_mode;           /* the section set pool_mode */
    int max_conns;                /* max_db_connections ([database.NAME]) or
                                     max_user_connections ([user.NAME]); -1 = [pool]'s */
    int line;                     /* line of the section header, for messages */
};

struct cfg {
    atomic_int refs;
    char *path; /* the ini file as given */

    /* [pgmux] */
    char *listen_addr;            /* "127.0.0.1"; "*" means every IPv4 and IPv6 address */
    int listen_port;              /* 6432 */
    char *unix_socket_dir;        /* directory of the .s.PGSQL.<listen_port> socket; NULL = none */
    int unix_socket_mode;         /* 0777: permission bits of that socket file */
    enum cfg_io_engine io_engine; /* epoll */
    int workers;                  /* threads; 0 in the file means the CPU count, resolved at load */
    bool worker_balance;          /* on: sessions gather on as few workers as the load keeps busy
                                     (balance.h); off: a session stays where it was accepted */
    int worker_busy_percent;      /* 70: a worker this busy (% of one CPU) calls for more */
    int max_client_conn;          /* 1000 */
    enum cfg_auth auth_type;      /* scram-sha-256 */
    char *auth_file;    /* path, relative names resolved against the ini file's directory */
    char **admin_users; /* comma-separated list */
    int n_admin_users;
    char **stats_users;
    int n_stats_users;
    char *server_reset_query;            /* "DISCARD ALL"; "" means none */
    int64_t client_idle_timeout_ms;      /* 0 = never */
    int64_t idle_transaction_timeout_ms; /* 0 = never */
    int64_t client_login_timeout_ms;     /* 60 s */
    int64_t query_wait_timeout_ms;       /* 120 s; 0 = wait forever */
    int64_t server_connect_timeout_ms;   /* 15 s */
    int64_t server_login_retry_ms;       /* 1 s: after a failed connect, fail waiters this long */
    int64_t shutdown_timeout_ms;         /* 30 s: SIGTERM lets running transactions finish this
                                            long; 0 = close at once */

    /* [pgmux] topology monitor (proxy/monitor.c) */
    int64_t health_check_period_ms;  /* 1 s; 0 = no health checks (declared roles only) */
    int64_t health_check_timeout_ms; /* 1 s: connect + query of one check round */
    char *health_check_user;         /* as set, else derived at load from warm_pools and the
                                        auth_file (cfg_load); NULL = no usable credentials */
    char *health_check_password;     /* as set, else that user's plaintext auth_file secret;
                                        NULL = none (trust or .pgpass); never logged */
    char *health_check_database;     /* "postgres" */
    int64_t dns_ttl_ms;          /* 30 s: host names re-resolved this often; 0 = at start only */
    enum log_level log_level;    /* info */
    int64_t log_min_duration_ms; /* requests slower than this are logged; -1 = off */
    enum cfg_log_dest log_destination; /* stderr */
    char *syslog_ident;                /* "pgmux" */
    int syslog_facility;               /* syslog facility code (LOG_DAEMON >> 3 = 3) */
    char *syslog_socket;               /* "/dev/log": the local syslog daemon's socket */
    char *metrics_addr;                /* "127.0.0.1"; "*" means every IPv4 and IPv6 address */
    int metrics_port;                  /* 0 = no HTTP listener (the default) */
    uint32_t max_message_size;         /* bytes accepted in one client message; 1 GB - 1 */
    /* primary_functions: functions whose call makes a statement a write, beyond the
     * classifier's built-in list; lower case, "name" or "schema.name" plus the bare name of each
     * qualified one, sorted (strcmp), no repeats, as struct router_functions.primary wants */
    char **primary_functions;
    int n_primary_functions;
    uint64_t primary_functions_hash; /* of the list's contents: a router_functions generation
                                        that a reload keeping the list keeps too */
    int max_client_conn_per_addr;    /* client connections from one address; 0 = no cap */
    char *hba_file;                  /* path (resolved like auth_file), or NULL */
    struct hba_rules hba;            /* hba_file's rules, checked after the startup packet;
                                        meaningful only when has_hba */
    bool has_hba;
    char *auth_user;           /* look up users missing from auth_file as this user; NULL = off */
    char *auth_query;          /* SQL with $1 = the user name, returning (name, secret) */
    char *auth_dbname;         /* database auth_query runs in; NULL = the client's database */
    int64_t auth_cache_ttl_ms; /* how long a found secret is reused; 0 = not at all */

    /* TLS ([pgmux]); file names are resolved against the ini file's directory at load, the
     * files themselves are read by proxy/tls.c */
    enum cfg_client_tls client_tls_mode; /* disable */
    char *client_tls_cert_file;          /* required unless client_tls_mode = disable */
    char *client_tls_key_file;
    char *client_tls_ca_file;            /* set: clients must present a certificate it signed */
    int client_tls_min_version;          /* OpenSSL TLS1_2_VERSION or TLS1_3_VERSION */
    int client_tls_max_version;          /* >= min */
    char *client_tls_ciphers;            /* TLS 1.2 cipher list, OpenSSL syntax */
    char *client_tls_ciphersuites;       /* TLS 1.3 suites; NULL = OpenSSL's default */
    enum cfg_server_tls server_tls_mode; /* disable */
    char *server_tls_ca_file;            /* NULL: the system's trusted roots (verify-*) */
    char *server_tls_cert_file;          /* client certificate presented to servers */
    char *server_tls_key_file;
    struct cfg_tls_lines tls_lines;
    /* [pgmux] read/write routing (transaction and statement pooling per transaction; session
     * pooling once at login) */
    bool read_write_split;              /* on: reads may go to replicas; off: all to the primary */
    enum cfg_balance replica_balance;   /* least_conn */
    int primary_reads_weight;           /* 0: the primary's read share beside replica weights,
                                           0..1000; 0 = reads only when no replica is usable */
    int64_t max_replica_lag_ms;         /* 0 = no limit: a replica behind by more gets no reads */
    int64_t max_replica_lag_bytes;      /* 0 = no limit */
    enum cfg_ryw read_your_writes;      /* lsn */
    int64_t read_your_writes_window_ms; /* 1 s: window mode's time on the primary after a write */

    /* [pool] */
    enum cfg_pool_mode pool_mode;  /* session */
    int max_open_conns;            /* 20, per (node, database, user) pool, across workers */
    int max_idle_conns;            /* defaults to max_open_conns */
    int min_idle_conns;            /* 0 */
    int max_db_connections;        /* 0 = no cap; per (node, database), over every user */
    int max_user_connections;      /* 0 = no cap; per (node, user), over every database */
    int64_t conn_max_lifetime_ms;  /* 3600 s; 0 = forever */
    int64_t conn_max_idle_time_ms; /* 600 s; 0 = forever */
    struct cfg_warm_pool
        *warm_pools; /* "user@database, ..." pools kept at min_idle_conns from start */
    int n_warm_pools;
    int max_prepared_statements; /* 100; per server connection cache in transaction and
                                    statement mode, 0..100000; 0 = named statements refused */
    char **track_parameters;     /* extra parameters followed and replayed, beyond the built-in
                                    list (cfg_param_tracked); no repeats, no built-in names */
    int n_track_parameters;
    bool pin_session_state; /* on: session state (LISTEN, WITH HOLD, ...) pins the client to its
                               server connection; off: such statements are refused */

    /* [database.NAME] and [user.NAME] sections, each in file order, names unique */
    struct cfg_override *db_overrides;
    int n_db_overrides;
    struct cfg_override *user_overrides;
    int n_user_overrides;

    /* [node.NAME] sections, in file order */
    struct cfg_node *nodes;
    int n_nodes;

    /* auth_file contents */
    struct cfg_user *users;
    int n_users;
};

/**
 * Read path and the auth_file it names. Every bad value, unknown key or section, and missing
 * required item is reported as one line "FILE:LINE: key: reason" (LINE is 0 for whole-file
 * problems such as "no [node.*] section"), lines joined with '\n' into err (errlen bytes).
 * Returns 0 with *out holding one reference, or -1.
 */
int cfg_load(const char *path, struct cfg **out, char *err, size_t errlen) MUST_CHECK;

/** Take another reference. Any thread. */
struct cfg *cfg_ref(struct cfg *c);

/** Drop a reference; the last one frees the snapshot, wiping secrets. Accepts NULL. */
void cfg_unref(struct cfg *c);

/** The auth_file entry for name, or NULL. */
const struct cfg_user *cfg_user_find(const struct cfg *c, const char *name);

/**
 * The pool mode for a client of database as user: the [user.NAME] section's pool_mode if it
 * sets one, else the [database.NAME] section's, else [pool]'s. database or user may be NULL
 * (no section matches it). Pure; any thread.
 */
enum cfg_pool_mode cfg_pool_mode_for(const struct cfg *c, const char *database, const char *user);

/** Whether some client may get session pooling ([pool] or any section's pool_mode): its
 * session can never move to another worker. Pure; any thread. */
bool cfg_may_pool_session(const struct cfg *c);

/**
 * Whether ParameterStatus for name is followed and replayed in transaction and statement mode:
 * true for the built-in list (client_encoding, DateStyle, TimeZone, IntervalStyle,
 * standard_conforming_strings, application_name, search_path) and for track_parameters.
 * Compared case-insensitively, as PostgreSQL compares parameter names. Pure; any thread.
 */
bool cfg_param_tracked(const struct cfg *c, const char *name);

/**
 * cfg_param_tracked for a name that is not NUL-terminated (len bytes), with the configuration
 * as arg (a const struct cfg *): the router_tracked_fn of router_scan_sql (router/scan.h).
 * Longer names are not tracked. Pure; any thread.
 */
bool cfg_scan_tracked(const char *name, size_t len, void *arg);

/** Number of tracked parameters: the built-in ones, then track_parameters. */
int cfg_tracked_count(const struct cfg *c);

/** The i-th tracked parameter name (0 <= i < cfg_tracked_count). */
const char *cfg_tracked_name(const struct cfg *c, int i);

/** Parse a duration: "250ms", "30s", "5m", "1h", or a bare number of seconds. -1 if invalid. */
int64_t cfg_parse_duration_ms(const char *s);

const char *cfg_pool_mode_name(enum cfg_pool_mode m);
const char *cfg_balance_name(enum cfg_balance b);
const char *cfg_ryw_name(enum cfg_ryw r);
const char *cfg_auth_name(enum cfg_auth a);
const char *cfg_role_name(enum cfg_role r);
const char *cfg_client_tls_name(enum cfg_client_tls m);
const char *cfg_server_tls_name(enum cfg_server_tls m);
const char *cfg_log_dest_name(enum cfg_log_dest d);

/** The syslog facility name ("daemon", "local0", ...) of a facility code. */
const char *cfg_syslog_facility_name(int code);

/* ---- the [pgmux] and [pool] keys seen from outside (the admin console's SHOW CONFIG, SET) ---- */

/** Number of [pgmux] and [pool] keys; they are numbered 0 .. cfg_key_count() - 1. Pure. */
int cfg_key_count(void);

/** Name of key i, or NULL when i is out of range. Pure. */
const char *cfg_key_name(int i);

/** Index of the key called name (case-insensitive), or -1. Pure. */
int cfg_key_find(const char *name);

/**
 * Key i's value in c as the file spells it ("30s", "on", "a, b"; "" for none) into out (len
 * bytes, cut to fit). No key of [pgmux] or [pool] holds a secret. Any thread.
 */
void cfg_key_format(const struct cfg *c, int i, char *out, size_t len);

/** A snapshot holding only the defaults (one reference), or NULL when out of memory. */
struct cfg *cfg_defaults(void);

/**
 * Check value for key i with the rules the file follows (integer ranges, durations, sizes,
 * booleans, log_level). 0 with *out = the integer, milliseconds, bytes, 0/1 or enum log_level;
 * -1 with the reason in err (errlen bytes), also for keys that are not one number or level.
 * Pure.
 */
int cfg_key_parse(int i, const char *value, int64_t *out, char *err, size_t errlen);

#endif
