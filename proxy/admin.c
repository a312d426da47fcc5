/*
 * admin.c - the admin console (virtual database "pgmux"): authorization, the simple and the
 * extended query protocol as far as a console needs them, the command parser, the commands,
 * and the state they share with the rest of the proxy (paused databases, SET values).
 *
 * What it does not do: parameters ($1), COPY, function calls, cursors that return part of a
 * result (Execute's row limit is ignored; every result is small and sent whole). Statements
 * prepared on the console are kept per session.
 *
 * Answers are ordinary result sets: RowDescription with real type OIDs (int8 for counters,
 * int4 for ports and worker numbers, bool, timestamptz, text), DataRows in text or binary as
 * Bind asked, CommandComplete tags as PgBouncer's console sends them ("SHOW", "PAUSE", ...).
 *
 * Commands that look at other workers' sessions or server connections (SHOW CLIENTS, SERVERS,
 * POOLS; the waits of PAUSE; KILL) post one message to every worker's inbox; each worker
 * writes its own rows or counts into its part, and the last one to finish posts the gather
 * back to the console session's worker. The gather is reference counted (one reference per
 * part, one for the session, one for the message back), so a console session that leaves
 * while workers are still answering, or a shutdown that finalizes workers one by one, frees
 * it exactly once.
 *
 * Threads: sessions on their worker; parts on each worker; admin_shared any thread.
 */
#include "proxy/admin.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "common/log.h"
#include "common/mono.h"
#include "pool/pool.h"
#include "protocol/messages.h"
#include "protocol/sqlstate.h"
#include "protocol/startup.h"
#include "protocol/wire.h"
#include "proxy/admin_cmd.h"
#include "proxy/client.h"
#include "proxy/config.h"
#include "proxy/runtime.h"
#include "proxy/stats.h"
#include "proxy/topology.h"
#include "proxy/version.h"
#include "proxy/worker.h"

#define ADMIN_MSG_MAX      (1024 * 1024) /* largest message a console client may send */
#define ADMIN_OUT_HIGH     (1024 * 1024) /* stop reading while this much output is unsent */
#define ADMIN_OUT_KEEP     (64 * 1024)   /* output memory kept between answers */
#define ADMIN_MAX_STMTS    64            /* prepared statements per console session */
#define ADMIN_MAX_PORTALS  16
#define ADMIN_MAX_COLS     16
#define ADMIN_PAUSE_POLL_S 0.02
#define ADMIN_PG_EPOCH_US  946684800000000LL /* 2000-01-01 00:00:00 UTC in Unix microseconds */

/* Type OIDs from PostgreSQL's pg_type.dat. */
#define OID_BOOL        16
#define OID_INT8        20
#define OID_INT4        23
#define OID_TEXT        25
#define OID_TIMESTAMPTZ 1184

/* ---------------------------------------------------------------------------------------- */
/* Shared state: paused databases, SET values                                                */

int
admin_shared_init(struct admin_shared *a)
{
    memset(a, 0, sizeof(*a));
    if (pthread_mutex_init(&a->pause_mu, NULL) != 0) {
        return -1;
    }
    if (pthread_mutex_init(&a->tun_mu, NULL) != 0) {
        pthread_mutex_destroy(&a->pause_mu);
        return -1;
    }
    atomic_init(&a->n_paused, 0);
    atomic_init(&a->tun_base, NULL);
    atomic_init(&a->tun_mask, 0);
    for (int i = 0; i < ADMIN_TUN__COUNT; i++) {
        atomic_init(&a->tun_value[i], 0);
    }
    return 0;
}

void
admin_shared_fini(struct admin_shared *a)
{
    for (int i = 0; i < a->n_paused_dbs; i++) {
        free(a->paused_dbs[i]);
    }
    free(a->paused_dbs);
    a->paused_dbs = NULL;
    a->n_paused_dbs = 0;
    cfg_unref(atomic_load(&a->tun_base));
    atomic_store(&a->tun_base, NULL);
    pthread_mutex_destroy(&a->pause_mu);
    pthread_mutex_destroy(&a->tun_mu);
}

int64_t
admin_tunable(struct admin_shared *a, const struct cfg *cfg, enum admin_tun k, int64_t file_value)
{
    unsigned mask = atomic_load_explicit(&a->tun_mask, memory_order_acquire);
    if (LIKELY(!(mask & (1u << k)))) {
        return file_value;
    }
    /* Right after a SET made against a newer snapshot a reader may, for one look, pair the old
     * mask with the new base; a tunable off by one SET for an instant is harmless. */
    if (atomic_load_explicit(&a->tun_base, memory_order_acquire) != cfg) {
        return file_value;
    }
    return atomic_load_explicit(&a->tun_value[k], memory_order_relaxed);
}

void
admin_tunables_forget(struct admin_shared *a)
{
    pthread_mutex_lock(&a->tun_mu);
    struct cfg *base = atomic_load(&a->tun_base);
    atomic_store(&a->tun_mask, 0);
    atomic_store(&a->tun_base, NULL);
    pthread_mutex_unlock(&a->tun_mu);
    cfg_unref(base);
}

/* Record a SET made by a thread running with snapshot cfg. */
static void
tun_set(struct admin_shared *a, struct cfg *cfg, enum admin_tun k, int64_t v)
{
    pthread_mutex_lock(&a->tun_mu);
    struct cfg *base = atomic_load(&a->tun_base);
    if (base != cfg) {
        /* Values SET against an older snapshot were undone by the reload that replaced it. */
        atomic_store(&a->tun_mask, 0);
        atomic_store(&a->tun_base, cfg_ref(cfg));
        cfg_unref(base);
    }
    atomic_store_explicit(&a->tun_value[k], v, memory_order_relaxed);
    atomic_fetch_or_explicit(&a->tun_mask, 1u << k, memory_order_release);
    pthread_mutex_unlock(&a->tun_mu);
}

static int
pause_find_locked(const struct admin_shared *a, const char *db)
{
    for (int i = 0; i < a->n_paused_dbs; i++) {
        if (strcmp(a->paused_dbs[i], db) == 0) {
            return i;
        }
    }
    return -1;
}

bool
admin_is_paused(struct admin_shared *a, const char *database)
{
    if (LIKELY(atomic_load_explicit(&a->n_paused, memory_order_relaxed) == 0)) {
        return false;
    }
    pthread_mutex_lock(&a->pause_mu);
    bool paused = a->is_all_paused || (database && pause_find_locked(a, database) >= 0);
    pthread_mutex_unlock(&a->pause_mu);
    return paused;
}

enum pause_result {
    PAUSE_DONE,
    PAUSE_ALREADY, /* nothing changed: it already was (or was not) paused */
    PAUSE_NOMEM,
};

/* Pause db, or everything when db is NULL. */
static enum pause_result
pause_add(struct admin_shared *a, const char *db)
{
    enum pause_result r = PAUSE_DONE;
    pthread_mutex_lock(&a->pause_mu);
    if (!db) {
        if (a->is_all_paused) {
            r = PAUSE_ALREADY;
        } else {
            a->is_all_paused = true;
        }
    } else if (pause_find_locked(a, db) >= 0) {
        r = PAUSE_ALREADY;
    } else {
        if (a->n_paused_dbs == a->cap_paused_dbs) {
            int ncap = a->cap_paused_dbs ? a->cap_paused_dbs * 2 : 8;
            char **nv = realloc(a->paused_dbs, (size_t) ncap * sizeof(*nv));
            if (!nv) {
                r = PAUSE_NOMEM;
                goto out;
            }
            a->paused_dbs = nv;
            a->cap_paused_dbs = ncap;
        }
        char *copy = strdup(db);
        if (!copy) {
            r = PAUSE_NOMEM;
            goto out;
        }
        a->paused_dbs[a->n_paused_dbs++] = copy;
    }
out:
    atomic_store_explicit(&a->n_paused, (a->is_all_paused ? 1 : 0) + a->n_paused_dbs,
                          memory_order_relaxed);
    pthread_mutex_unlock(&a->pause_mu);
    return r;
}

/* Resume db, or everything (every database too) when db is NULL. */
static enum pause_result
pause_remove(struct admin_shared *a, const char *db)
{
    enum pause_result r = PAUSE_DONE;
    pthread_mutex_lock(&a->pause_mu);
    if (!db) {
        if (!a->is_all_paused && a->n_paused_dbs == 0) {
            r = PAUSE_ALREADY;
        }
        a->is_all_paused = false;
        for (int i = 0; i < a->n_paused_dbs; i++) {
            free(a->paused_dbs[i]);
        }
        a->n_paused_dbs = 0;
    } else {
        int i = pause_find_locked(a, db);
        if (i < 0) {
            r = PAUSE_ALREADY;
        } else {
            free(a->paused_dbs[i]);
            a->paused_dbs[i] = a->paused_dbs[--a->n_paused_dbs];
        }
    }
    atomic_store_explicit(&a->n_paused, (a->is_all_paused ? 1 : 0) + a->n_paused_dbs,
                          memory_order_relaxed);
    pthread_mutex_unlock(&a->pause_mu);
    return r;
}

static bool
pause_is_all(struct admin_shared *a)
{
    pthread_mutex_lock(&a->pause_mu);
    bool all = a->is_all_paused;
    pthread_mutex_unlock(&a->pause_mu);
    return all;
}

bool
admin_is_console_db(const char *database)
{
    return database && strcmp(database, ADMIN_DB) == 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Commands and their result columns                                                         */

enum admin_type {
    AT_TEXT,
    AT_INT8,
    AT_INT4,
    AT_BOOL,
    AT_TIME, /* timestamptz, from wall-clock microseconds */
};

struct admin_col {
    const char *name;
    enum admin_type type;
};

static const struct admin_col cols_version[] = { { "version", AT_TEXT } };

static const struct admin_col cols_config[] = {
    { "key", AT_TEXT },
    { "value", AT_TEXT },
    { "default", AT_TEXT },
    { "changeable", AT_BOOL },
};

static const struct admin_col cols_nodes[] = {
    { "name", AT_TEXT },       { "host", AT_TEXT },        { "port", AT_INT4 },
    { "role", AT_TEXT },       { "healthy", AT_BOOL },     { "lsn", AT_TEXT },
    { "lag_bytes", AT_INT8 },  { "lag_ms", AT_INT8 },      { "fenced", AT_BOOL },
    { "weight", AT_INT4 },     { "connections", AT_INT8 }, { "removed", AT_BOOL },
    { "last_check", AT_TIME },
};

static const struct admin_col cols_stats[] = {
    { "database", AT_TEXT },          { "total_xact_count", AT_INT8 },
    { "total_query_count", AT_INT8 }, { "total_received", AT_INT8 },
    { "total_sent", AT_INT8 },        { "total_xact_time", AT_INT8 },
    { "total_query_time", AT_INT8 },  { "total_wait_time", AT_INT8 },
    { "total_wait_count", AT_INT8 },  { "avg_xact_time", AT_INT8 },
    { "avg_query_time", AT_INT8 },    { "avg_wait_time", AT_INT8 },
};

static const struct admin_col cols_pools[] = {
    { "database", AT_TEXT },  { "user", AT_TEXT },      { "node", AT_TEXT },
    { "mode", AT_TEXT },      { "cl_active", AT_INT8 }, { "cl_waiting", AT_INT8 },
    { "sv_active", AT_INT8 }, { "sv_idle", AT_INT8 },   { "sv_used", AT_INT8 },
    { "sv_login", AT_INT8 },  { "maxwait", AT_INT8 },   { "maxwait_us", AT_INT8 },
};

static const struct admin_col cols_clients[] = {
    { "type", AT_TEXT },
    { "user", AT_TEXT },
    { "database", AT_TEXT },
    { "state", AT_TEXT },
    { "addr", AT_TEXT },
    { "port", AT_INT4 },
    { "connect_time", AT_TIME },
    { "request_time", AT_TIME },
    { "wait", AT_INT8 },
    { "wait_us", AT_INT8 },
    { "worker", AT_INT4 },
    { "id", AT_TEXT },
    { "link", AT_INT8 },
    { "prepared_statements", AT_INT8 },
    { "application_name", AT_TEXT },
};

static const struct admin_col cols_servers[] = {
    { "type", AT_TEXT },         { "user", AT_TEXT },
    { "database", AT_TEXT },     { "node", AT_TEXT },
    { "state", AT_TEXT },        { "addr", AT_TEXT },
    { "port", AT_INT4 },         { "connect_time", AT_TIME },
    { "request_time", AT_TIME }, { "worker", AT_INT4 },
    { "id", AT_INT8 },           { "remote_pid", AT_INT4 },
    { "link", AT_TEXT },         { "prepared_statements", AT_INT8 },
};

/* The columns a command answers with; n = 0 for commands without rows. */
static const struct admin_col *
cmd_cols(enum admin_kind k, int *n)
{
#define COLS(a)            \
    do {                   \
        *n = ARRAY_LEN(a); \
        return a;          \
    } while (0)
    switch (k) {
    case AK_SHOW_VERSION:
        COLS(cols_version);
    case AK_SHOW_CONFIG:
        COLS(cols_config);
    case AK_SHOW_NODES:
        COLS(cols_nodes);
    case AK_SHOW_STATS:
        COLS(cols_stats);
    case AK_SHOW_POOLS:
        COLS(cols_pools);
    case AK_SHOW_CLIENTS:
        COLS(cols_clients);
    case AK_SHOW_SERVERS:
        COLS(cols_servers);
    default:
        *n = 0;
        return NULL;
    }
#undef COLS
}


/* ---------------------------------------------------------------------------------------- */
/* Rows: DataRow in text or binary, as the portal asked                                      */

struct admin_rows {
    struct proto_builder *pb;
    const struct admin_col *cols;
    int n_cols;
    const uint8_t *fmt; /* [n_cols]: 1 = binary */
    int col;            /* next column */
    int64_t n_rows;
};

static void
rows_init(struct admin_rows *r, struct proto_builder *pb, const struct admin_col *cols, int n,
          const uint8_t *fmt)
{
    r->pb = pb;
    r->cols = cols;
    r->n_cols = n;
    r->fmt = fmt;
    r->col = 0;
    r->n_rows = 0;
}

static void
row_begin(struct admin_rows *r)
{
    proto_builder_begin(r->pb, 'D');
    proto_builder_u16(r->pb, (uint16_t) r->n_cols);
    r->col = 0;
}

static void
row_end(struct admin_rows *r)
{
    ASSERT(r->col == r->n_cols);
    proto_builder_end(r->pb);
    r->n_rows++;
}

static void
put_null(struct admin_rows *r)
{
    proto_builder_u32(r->pb, 0xffffffffu);
    r->col++;
}

static void
put_text(struct admin_rows *r, const char *s)
{
    if (!s) {
        put_null(r);
        return;
    }
    size_t n = strlen(s);
    proto_builder_u32(r->pb, (uint32_t) n);
    proto_builder_bytes(r->pb, s, n);
    r->col++;
}

static void
put_u64_be(struct proto_builder *pb, uint64_t v)
{
    proto_builder_u32(pb, (uint32_t) (v >> 32));
    proto_builder_u32(pb, (uint32_t) v);
}

static void
put_int(struct admin_rows *r, int64_t v)
{
    ASSERT(r->cols[r->col].type == AT_INT8 || r->cols[r->col].type == AT_INT4);
    if (r->fmt[r->col]) {
        if (r->cols[r->col].type == AT_INT4) {
            proto_builder_u32(r->pb, 4);
            proto_builder_u32(r->pb, (uint32_t) (int32_t) v);
        } else {
            proto_builder_u32(r->pb, 8);
            put_u64_be(r->pb, (uint64_t) v);
        }
        r->col++;
        return;
    }
    char buf[24];
    snprintf(buf, sizeof(buf), "%lld", (long long) v);
    put_text(r, buf);
}

static void
put_bool(struct admin_rows *r, bool v)
{
    ASSERT(r->cols[r->col].type == AT_BOOL);
    if (r->fmt[r->col]) {
        proto_builder_u32(r->pb, 1);
        proto_builder_u8(r->pb, v ? 1 : 0);
        r->col++;
        return;
    }
    put_text(r, v ? "t" : "f");
}

/* wall_us: Unix time in microseconds, UTC. The text form is what PostgreSQL prints with
 * DateStyle ISO and TimeZone UTC, which the console reports at login. */
static void
put_time(struct admin_rows *r, int64_t wall_us)
{
    ASSERT(r->cols[r->col].type == AT_TIME);
    if (r->fmt[r->col]) {
        proto_builder_u32(r->pb, 8);
        put_u64_be(r->pb, (uint64_t) (wall_us - ADMIN_PG_EPOCH_US));
        r->col++;
        return;
    }
    time_t sec = (time_t) (wall_us / 1000000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char buf[48];
    snprintf(buf, sizeof(buf), "%04d-%02d-%02d %02d:%02d:%02d.%06d+00", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int) (wall_us % 1000000));
    put_text(r, buf);
}

static int64_t
wall_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A monotonic instant as wall-clock time, given both clocks read now. */
static int64_t
wall_of(int64_t mono_us, int64_t now_mono, int64_t now_wall)
{
    return now_wall - (now_mono - mono_us);
}

static void
build_row_description(struct proto_builder *pb, const struct admin_col *cols, int n,
                      const uint8_t *fmt)
{
    proto_builder_begin(pb, 'T');
    proto_builder_u16(pb, (uint16_t) n);
    for (int i = 0; i < n; i++) {
        uint32_t oid = OID_TEXT;
        int16_t len = -1;
        switch (cols[i].type) {
        case AT_TEXT:
            break;
        case AT_INT8:
            oid = OID_INT8;
            len = 8;
            break;
        case AT_INT4:
            oid = OID_INT4;
            len = 4;
            break;
        case AT_BOOL:
            oid = OID_BOOL;
            len = 1;
            break;
        case AT_TIME:
            oid = OID_TIMESTAMPTZ;
            len = 8;
            break;
        }
        proto_builder_cstr(pb, cols[i].name);
        proto_builder_u32(pb, 0); /* table OID */
        proto_builder_u16(pb, 0); /* column number */
        proto_builder_u32(pb, oid);
        proto_builder_u16(pb, (uint16_t) len);
        proto_builder_u32(pb, 0xffffffffu); /* type modifier -1 */
        proto_builder_u16(pb, fmt ? fmt[i] : 0);
    }
    proto_builder_end(pb);
}

/* ---------------------------------------------------------------------------------------- */
/* Sessions                                                                                  */

struct admin_stmt {
    char *name; /* "" for the unnamed statement */
    struct admin_cmd cmd;
};

struct admin_portal {
    char *name;
    struct admin_cmd cmd;
    uint8_t fmt[ADMIN_MAX_COLS];
};

struct admin_gather;

struct admin_session {
    struct client *c;
    bool is_admin;    /* admin_users: every command; otherwise stats_users: SHOW only */
    bool is_skipping; /* an error in the extended protocol: discard until Sync */
    bool is_busy;     /* a command waits for the workers: nothing else runs, nothing is read */
    bool has_sent_rows;
    uint8_t txn_status;       /* 'I', or 'T' after BEGIN (nothing is transactional here) */
    struct proto_builder out; /* answers; bytes before out_sent have been written */
    size_t out_sent;

    struct admin_stmt *stmts; /* [n_stmts] */
    int n_stmts;
    struct admin_portal *portals; /* [n_portals] */
    int n_portals;

    char *query;      /* simple query being run statement by statement (owned) */
    size_t query_len; /* bytes of query */
    size_t query_pos; /* start of the next statement */
    int n_run;        /* statements of it run so far */

    struct admin_cmd cur; /* the command in progress (is_busy) */
    uint8_t cur_fmt[ADMIN_MAX_COLS];
    bool cur_simple;             /* simple protocol: RowDescription goes before the rows */
    struct admin_gather *gather; /* workers are answering for cur (one reference) */
    ev_timer pause_timer;        /* PAUSE: look again for running transactions; RELOAD: look
                                    again for the reload's outcome */
    ev_tstamp busy_since;        /* when the command in progress started (ev_now) */
    unsigned reload_done;        /* RELOAD: rt->n_reloads + n_reload_failures before it */
    unsigned reload_failed;      /* RELOAD: rt->n_reload_failures before it */
};

static void admin_process(struct admin_session *s);
static void admin_read_cb(EV_P_ ev_io *io, int revents);
static void admin_write_cb(EV_P_ ev_io *io, int revents);
static void gather_cancel(struct admin_session *s);

static void
out_error(struct admin_session *s, const char *sqlstate, const char *message, const char *hint)
{
    /* The console's own session-level errors, like PostgreSQL's for a bad statement: not the
     * connection-ending refusals of errors.c's table. */
    proto_build_error(&s->out, 'E', "ERROR", sqlstate, message, NULL, hint);
}

static void
out_complete(struct admin_session *s, const char *tag)
{
    proto_builder_begin(&s->out, 'C');
    proto_builder_cstr(&s->out, tag);
    proto_builder_end(&s->out);
}

static void
out_simple(struct admin_session *s, uint8_t type)
{
    proto_builder_begin(&s->out, type);
    proto_builder_end(&s->out);
}

/* Write what is queued: first what the login left in c->sock.out, then our answers. */
static void
admin_flush(struct admin_session *s)
{
    struct client *c = s->c;
    struct worker *w = c->w;
    if (proto_builder_failed(&s->out)) {
        client_fail(c, ST_ENOMEM, NULL);
        return;
    }
    if (c->sock.out) {
        int r = pool_sock_flush_out(&c->sock, &w->pw.bufs);
        if (r < 0) {
            client_close(c, "could not write to the client");
            return;
        }
        if (r > 0) {
            pool_sock_start_write(w->loop, &c->sock);
            return;
        }
    }
    while (s->out_sent < s->out.len) {
        /* through pool_sock_write: a console session may be a TLS one */
        long n = pool_sock_write(&c->sock, (const char *) s->out.data + s->out_sent,
                                 s->out.len - s->out_sent);
        if (n < 0) {
            client_close(c, "could not write to the client");
            return;
        }
        if (n == 0) {
            pool_sock_start_write(w->loop, &c->sock);
            return;
        }
        s->out_sent += (size_t) n;
    }
    pool_sock_stop_write(w->loop, &c->sock);
    if (s->out.cap > ADMIN_OUT_KEEP) {
        proto_builder_fini(&s->out);
        proto_builder_init_dynamic(&s->out);
    } else {
        proto_builder_reset(&s->out);
    }
    s->out_sent = 0;
}

/* The console session of c, NULL when it has none (it lives in the session's rare state). */
static struct admin_session *
session_of(const struct client *c)
{
    return c->aux ? c->aux->admin : NULL;
}

static void
admin_write_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct client *c = io->data;
    struct admin_session *s = session_of(c);
    admin_flush(s);
    if (c->state == CLIENT_ADMIN && s->out_sent == 0 && s->out.len == 0) {
        admin_process(s); /* reading may have stopped for the backlog */
    }
}

/* One line per console command, in the key=value form of every other event line. */
static void
log_command(struct admin_session *s, const char *command, const char *detail)
{
    char u[96];
    log_info("event=admin_command client=" CLIENT_ID_FMT " addr=%s user=%s command=%s%s%s",
             CLIENT_ID(s->c), client_addr(s->c), log_value(client_user(s->c), u, sizeof(u)),
             command, detail ? " " : "", detail ? detail : "");
}

/* "db=NAME" (quoted as log lines quote values), or "db=*" for every database. */
static const char *
db_detail(const struct admin_cmd *cmd, char *out, size_t len)
{
    char v[96];
    snprintf(out, len, "db=%s", cmd->has_arg ? log_value(cmd->arg, v, sizeof(v)) : "*");
    return out;
}

static void
admin_session_free(struct admin_session *s)
{
    for (int i = 0; i < s->n_stmts; i++) {
        free(s->stmts[i].name);
    }
    free(s->stmts);
    for (int i = 0; i < s->n_portals; i++) {
        free(s->portals[i].name);
    }
    free(s->portals);
    free(s->query);
    proto_builder_fini(&s->out);
    free(s);
}

static bool
user_listed(char *const *list, int n, const char *user)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(list[i], user) == 0) {
            return true;
        }
    }
    return false;
}

void
admin_session_start(struct client *c)
{
    struct worker *w = c->w;
    bool is_admin = user_listed(w->cfg->admin_users, w->cfg->n_admin_users, client_user(c));
    bool is_stats = user_listed(w->cfg->stats_users, w->cfg->n_stats_users, client_user(c));
    if (!is_admin && !is_stats) {
        client_fail(c, ST_EADMIN_DENIED, NULL);
        return;
    }
    struct client_aux *x = client_aux(c);
    struct admin_session *s = x ? calloc(1, sizeof(*s)) : NULL;
    if (!s) {
        client_fail(c, ST_ENOMEM, NULL);
        return;
    }
    s->c = c;
    s->is_admin = is_admin;
    s->txn_status = 'I';
    proto_builder_init_dynamic(&s->out);
    ev_timer_init(&s->pause_timer, NULL, 0, 0);
    x->admin = s;
    client_set_state(c, CLIENT_ADMIN);

    /* The console keeps only application_name of the startup parameters, for SHOW CLIENTS and
     * to report it back as a server would. */
    const char *app = "";
    struct proto_startup su;
    struct proto_err perr;
    if (c->login && proto_startup_parse((const uint8_t *) c->login->startup, c->login->startup_len,
                                        &su, &perr) == ST_OK) {
        const char *v = proto_startup_param(&su, "application_name");
        if (v && pool_params_set(&c->want, "application_name", v) == ST_OK) {
            app = v;
        }
    }

    struct proto_builder *pb = &s->out;
    proto_build_auth_ok(pb);
    /* What a PostgreSQL 15 server reports, so drivers set themselves up as usual; the version
     * says who answers. */
    proto_build_parameter_status(pb, "server_version", "15.0 (pgmux " PGMUX_VERSION ")");
    proto_build_parameter_status(pb, "server_encoding", "UTF8");
    proto_build_parameter_status(pb, "client_encoding", "UTF8");
    proto_build_parameter_status(pb, "DateStyle", "ISO, MDY");
    proto_build_parameter_status(pb, "TimeZone", "UTC");
    proto_build_parameter_status(pb, "IntervalStyle", "postgres");
    proto_build_parameter_status(pb, "integer_datetimes", "on");
    proto_build_parameter_status(pb, "standard_conforming_strings", "on");
    proto_build_parameter_status(pb, "is_superuser", "off");
    proto_build_parameter_status(pb, "session_authorization", client_user(c));
    proto_build_parameter_status(pb, "application_name", app);
    proto_build_backend_key(pb, c->home_pid, c->cancel_key);
    proto_build_ready(pb, 'I');

    char u[96];
    log_info("event=admin_login client=" CLIENT_ID_FMT " addr=%s user=%s access=%s", CLIENT_ID(c),
             client_addr(c), log_value(client_user(c), u, sizeof(u)), is_admin ? "admin" : "stats");
    ev_set_cb(&c->sock.rio, admin_read_cb);
    ev_set_cb(&c->sock.wio, admin_write_cb);
    c->last_read_us = mono_now_us();
    admin_process(s); /* the client may have pipelined messages after its password */
}

void
admin_session_close(struct client *c)
{
    struct admin_session *s = session_of(c);
    if (!s) {
        return;
    }
    /* A PAUSE whose session leaves stays in effect, as in PgBouncer: RESUME undoes it. */
    if (ev_is_active(&s->pause_timer)) {
        ev_timer_stop(c->w->loop, &s->pause_timer);
    }
    gather_cancel(s);
    c->aux->admin = NULL;
    admin_session_free(s);
}

/* ---- statements and portals ---- */

static struct admin_stmt *
stmt_find(struct admin_session *s, const char *name)
{
    for (int i = 0; i < s->n_stmts; i++) {
        if (strcmp(s->stmts[i].name, name) == 0) {
            return &s->stmts[i];
        }
    }
    return NULL;
}

static struct admin_portal *
portal_find(struct admin_session *s, const char *name)
{
    for (int i = 0; i < s->n_portals; i++) {
        if (strcmp(s->portals[i].name, name) == 0) {
            return &s->portals[i];
        }
    }
    return NULL;
}

static void
stmt_remove(struct admin_session *s, struct admin_stmt *st)
{
    free(st->name);
    *st = s->stmts[--s->n_stmts];
}

static void
portal_remove(struct admin_session *s, struct admin_portal *pt)
{
    free(pt->name);
    *pt = s->portals[--s->n_portals];
}

static void
portals_clear(struct admin_session *s)
{
    while (s->n_portals > 0) {
        portal_remove(s, &s->portals[s->n_portals - 1]);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Gathers: asking every worker                                                               */

enum gather_kind {
    G_POOLS,
    G_SERVERS,
    G_CLIENTS,
    G_BUSY, /* count sessions of a database that are in a transaction or about to be */
    G_KILL, /* drop a database's sessions and server connections */
};

struct pool_count {
    int64_t cl_active;
    int64_t cl_waiting;
    int64_t sv_active;
    int64_t sv_idle;
    int64_t sv_used;
    int64_t sv_login;
    int64_t maxwait_us;
};

struct admin_part {
    struct pool_msg msg;
    struct admin_gather *g;
    struct proto_builder rows; /* G_SERVERS, G_CLIENTS: DataRow messages */
    int64_t n_rows;
    struct pool_count *counts; /* G_POOLS: [g->n_pools] */
    int64_t n_busy;            /* G_BUSY */
};

struct admin_gather {
    atomic_int refs;       /* one per part not yet run, the session's, the message back's */
    atomic_int parts_left; /* parts not yet run */
    atomic_bool is_cancelled;
    enum gather_kind kind;
    bool has_db;
    char db[ADMIN_ARG_MAX]; /* G_BUSY, G_KILL: the database; !has_db = every database */
    uint8_t fmt[ADMIN_MAX_COLS];
    struct runtime *rt;
    int home;            /* the session's worker */
    uint64_t client_id;  /* the session */
    struct pool **pools; /* snapshot of the pool set (pools live until exit) */
    int n_pools;
    struct pool_msg done;
    int n_parts;
    struct admin_part parts[];
};

static void
gather_unref(struct admin_gather *g)
{
    if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    for (int i = 0; i < g->n_parts; i++) {
        proto_builder_fini(&g->parts[i].rows);
        free(g->parts[i].counts);
    }
    free(g->pools);
    free(g);
}

static void
gather_cancel(struct admin_session *s)
{
    struct admin_gather *g = s->gather;
    if (g) {
        atomic_store(&g->is_cancelled, true);
        s->gather = NULL;
        gather_unref(g);
    }
}

/* A setting the client asked for (startup packet or SET), or NULL. */
static const char *
want_value(const struct client *c, const char *name)
{
    for (int i = 0; i < c->want.n; i++) {
        if (strcasecmp(c->want.v[i].name, name) == 0) {
            return c->want.v[i].value;
        }
    }
    return NULL;
}

static const char *
client_state_name(const struct client *c)
{
    switch (c->state) {
    case CLIENT_STARTUP:
    case CLIENT_AUTH:
        return "login";
    case CLIENT_IDLE:
        return "idle";
    case CLIENT_WAITING:
        return c->is_held ? "paused" : "waiting";
    case CLIENT_SETTING:
    case CLIENT_ACTIVE:
        return "active";
    case CLIENT_ADMIN:
        return "admin";
    case CLIENT_CLOSED:
        break;
    }
    return "closed";
}

static const char *
conn_state_name(enum pool_conn_state st)
{
    switch (st) {
    case POOL_CONN_CONNECTING:
        return "connecting";
    case POOL_CONN_LOGIN:
        return "login";
    case POOL_CONN_RESET:
        return "reset";
    case POOL_CONN_IDLE:
        return "idle";
    case POOL_CONN_ACTIVE:
        return "active";
    case POOL_CONN_CLOSED:
        break;
    }
    return "closed";
}

static void
part_clients(struct worker *w, struct admin_part *part)
{
    struct admin_gather *g = part->g;
    struct admin_rows r;
    rows_init(&r, &part->rows, cols_clients, ARRAY_LEN(cols_clients), g->fmt);
    int64_t now = mono_now_us(), wall = wall_now_us();
    struct ilist *lists[] = { &w->clients_admin, &w->clients_active, &w->clients_waiting,
                              &w->clients_idle, &w->clients_login };
    for (size_t i = 0; i < ARRAY_LEN(lists); i++) {
        struct ilist_node *it, *tmp;
        ILIST_FOREACH_SAFE(lists[i], it, tmp)
        {
            const struct client *c = CONTAINER_OF(it, struct client, node);
            row_begin(&r);
            put_text(&r, "C");
            put_text(&r, client_user(c));
            put_text(&r, client_database(c));
            put_text(&r, client_state_name(c));
            if (c->peer_family == AF_INET || c->peer_family == AF_INET6) {
                char addr[64];
                snprintf(addr, sizeof(addr), "%s", client_addr(c));
                char *colon = strrchr(addr, ':');
                if (colon) {
                    *colon = '\0';
                }
                put_text(&r, addr);
                put_int(&r, c->peer_port);
            } else {
                put_text(&r, "unix");
                put_null(&r);
            }
            put_time(&r, wall_of(c->connected_us, now, wall));
            put_time(&r, wall_of(c->last_read_us, now, wall));
            int64_t waited = c->state == CLIENT_WAITING ? now - c->since_us : 0;
            put_int(&r, waited / 1000000);
            put_int(&r, waited % 1000000);
            put_int(&r, w->idx);
            char id[32];
            snprintf(id, sizeof(id), CLIENT_ID_FMT, CLIENT_ID(c));
            put_text(&r, id);
            if (c->sc) {
                put_int(&r, (int64_t) c->sc->id);
            } else {
                put_null(&r);
            }
            put_int(&r, c->stmts ? c->stmts->n : 0);
            put_text(&r, want_value(c, "application_name"));
            row_end(&r);
        }
    }
    part->n_rows = r.n_rows;
}

static void
part_servers(struct worker *w, struct admin_part *part)
{
    struct admin_gather *g = part->g;
    struct admin_rows r;
    rows_init(&r, &part->rows, cols_servers, ARRAY_LEN(cols_servers), g->fmt);
    int64_t now = mono_now_us(), wall = wall_now_us();
    for (int i = 0; i < g->n_pools; i++) {
        struct pool *p = g->pools[i];
        struct pool_local *loc = &p->local[w->idx];
        struct ilist *lists[] = { &loc->busy, &loc->idle };
        for (size_t k = 0; k < ARRAY_LEN(lists); k++) {
            struct ilist_node *it, *tmp;
            ILIST_FOREACH_SAFE(lists[k], it, tmp)
            {
                const struct pool_conn *sc = CONTAINER_OF(it, struct pool_conn, node);
                row_begin(&r);
                put_text(&r, "S");
                put_text(&r, p->user);
                put_text(&r, p->database);
                put_text(&r, p->node->name);
                put_text(&r, conn_state_name(sc->state));
                put_text(&r, p->node->host);
                put_int(&r, p->node->port);
                put_time(&r, wall_of(sc->created_us, now, wall));
                put_time(&r,
                         wall_of(sc->last_used_us ? sc->last_used_us : sc->created_us, now, wall));
                put_int(&r, w->idx);
                put_int(&r, (int64_t) sc->id);
                if (sc->be_pid) {
                    put_int(&r, sc->be_pid);
                } else {
                    put_null(&r);
                }
                const struct client *c = sc->state == POOL_CONN_ACTIVE ? sc->client : NULL;
                if (c) {
                    char id[32];
                    snprintf(id, sizeof(id), CLIENT_ID_FMT, CLIENT_ID(c));
                    put_text(&r, id);
                } else {
                    put_null(&r);
                }
                put_int(&r, sc->stmts.n);
                row_end(&r);
            }
        }
    }
    part->n_rows = r.n_rows;
}

static void
part_pools(struct worker *w, struct admin_part *part)
{
    struct admin_gather *g = part->g;
    if (g->n_pools == 0) {
        return;
    }
    part->counts = calloc((size_t) g->n_pools, sizeof(*part->counts));
    if (!part->counts) {
        return; /* counted as zero: a console answer short of memory is still an answer */
    }
    int64_t now = mono_now_us();
    struct ilist *lists[] = { &w->clients_active, &w->clients_waiting, &w->clients_idle };
    for (size_t i = 0; i < ARRAY_LEN(lists); i++) {
        struct ilist_node *it, *tmp;
        ILIST_FOREACH_SAFE(lists[i], it, tmp)
        {
            const struct client *c = CONTAINER_OF(it, struct client, node);
            if (!c->pool || c->pool->id == 0 || (int) c->pool->id > g->n_pools) {
                continue;
            }
            struct pool_count *pc = &part->counts[c->pool->id - 1];
            if (c->state == CLIENT_WAITING) {
                pc->cl_waiting++;
                if (now - c->since_us > pc->maxwait_us) {
                    pc->maxwait_us = now - c->since_us;
                }
            } else {
                pc->cl_active++;
            }
        }
    }
    for (int i = 0; i < g->n_pools; i++) {
        struct pool_local *loc = &g->pools[i]->local[w->idx];
        struct pool_count *pc = &part->counts[i];
        pc->sv_idle += (int64_t) loc->idle.n;
        struct ilist_node *it, *tmp;
        ILIST_FOREACH_SAFE(&loc->busy, it, tmp)
        {
            const struct pool_conn *sc = CONTAINER_OF(it, struct pool_conn, node);
            switch (sc->state) {
            case POOL_CONN_ACTIVE:
                pc->sv_active++;
                break;
            case POOL_CONN_RESET:
                pc->sv_used++;
                break;
            case POOL_CONN_CONNECTING:
            case POOL_CONN_LOGIN:
                pc->sv_login++;
                break;
            default:
                break;
            }
        }
    }
}

static bool
db_matches(const struct admin_gather *g, const char *database)
{
    return !g->has_db || (database && strcmp(database, g->db) == 0);
}

/* Sessions in a transaction, or about to start one: what PAUSE waits for. */
static void
part_busy(struct worker *w, struct admin_part *part)
{
    struct ilist *lists[] = { &w->clients_active, &w->clients_waiting };
    for (size_t i = 0; i < ARRAY_LEN(lists); i++) {
        struct ilist_node *it, *tmp;
        ILIST_FOREACH_SAFE(lists[i], it, tmp)
        {
            const struct client *c = CONTAINER_OF(it, struct client, node);
            if (!c->is_held && db_matches(part->g, client_database(c))) {
                part->n_busy++;
            }
        }
    }
}

static void
part_kill(struct worker *w, struct admin_part *part)
{
    struct admin_gather *g = part->g;
    struct ilist *lists[] = { &w->clients_active, &w->clients_waiting, &w->clients_idle,
                              &w->clients_login };
    for (size_t i = 0; i < ARRAY_LEN(lists); i++) {
        struct ilist_node *it, *tmp;
        ILIST_FOREACH_SAFE(lists[i], it, tmp)
        {
            struct client *c = CONTAINER_OF(it, struct client, node);
            /* A session still logging in to the database is held at its first transaction:
             * the database is paused before the workers are asked. */
            if (c->state != CLIENT_STARTUP && c->state != CLIENT_AUTH &&
                db_matches(g, client_database(c))) {
                client_fail(c, ST_EADMIN_KILL, NULL);
            }
        }
    }
    for (int i = 0; i < g->n_pools; i++) {
        struct pool *p = g->pools[i];
        if (!db_matches(g, p->database)) {
            continue;
        }
        struct pool_local *loc = &p->local[w->idx];
        struct ilist_node *it;
        while ((it = ilist_first(&loc->idle)) != NULL) {
            pool_conn_close(CONTAINER_OF(it, struct pool_conn, node), "KILL on the admin console");
        }
        while ((it = ilist_first(&loc->busy)) != NULL) {
            struct pool_conn *sc = CONTAINER_OF(it, struct pool_conn, node);
            sc->is_broken = true;
            pool_conn_close(sc, "KILL on the admin console");
        }
    }
}

static void
part_run(struct pool_worker *pw, struct pool_msg *m)
{
    struct admin_part *part = CONTAINER_OF(m, struct admin_part, msg);
    struct admin_gather *g = part->g;
    struct worker *w = pw->owner;
    if (!atomic_load(&g->is_cancelled)) {
        switch (g->kind) {
        case G_POOLS:
            part_pools(w, part);
            break;
        case G_SERVERS:
            part_servers(w, part);
            break;
        case G_CLIENTS:
            part_clients(w, part);
            break;
        case G_BUSY:
            part_busy(w, part);
            break;
        case G_KILL:
            part_kill(w, part);
            break;
        }
    }
    if (atomic_fetch_sub_explicit(&g->parts_left, 1, memory_order_acq_rel) == 1) {
        if (atomic_load(&g->rt->is_finishing)) {
            gather_unref(g); /* the message back would reach a worker already gone */
        } else {
            pool_worker_send(pw, &g->rt->workers[g->home].pw, &g->done);
        }
    }
    gather_unref(g);
}

static void gather_done(struct admin_session *s, struct admin_gather *g);

static void
gather_done_run(struct pool_worker *pw, struct pool_msg *m)
{
    struct admin_gather *g = CONTAINER_OF(m, struct admin_gather, done);
    struct worker *w = pw->owner;
    struct client *c = client_by_slot(w, (uint32_t) (g->client_id & 0xffffffffu));
    struct admin_session *s = c ? session_of(c) : NULL;
    if (c && client_id(c) == g->client_id && c->state == CLIENT_ADMIN && s && s->gather == g) {
        s->gather = NULL;
        gather_done(s, g);
        gather_unref(g); /* the session's */
    }
    gather_unref(g); /* this message's */
}

/* Ask every worker; the answer comes back through gather_done. false when out of memory. */
static bool
gather_start(struct admin_session *s, enum gather_kind kind, const char *db)
{
    struct client *c = s->c;
    struct worker *w = c->w;
    struct runtime *rt = w->rt;
    int n = rt->n_workers;
    struct admin_gather *g = calloc(1, sizeof(*g) + (size_t) n * sizeof(g->parts[0]));
    if (!g) {
        return false;
    }
    g->kind = kind;
    g->rt = rt;
    g->home = w->idx;
    g->client_id = client_id(c);
    g->n_parts = n;
    if (db) {
        g->has_db = true;
        snprintf(g->db, sizeof(g->db), "%s", db);
    }
    memcpy(g->fmt, s->cur_fmt, sizeof(g->fmt));
    if (kind == G_POOLS || kind == G_SERVERS || kind == G_KILL) {
        struct pool_set *ps = &rt->pools;
        pthread_mutex_lock(&ps->mu);
        g->n_pools = ps->n_pools;
        if (g->n_pools > 0) {
            g->pools = malloc((size_t) g->n_pools * sizeof(*g->pools));
            if (g->pools) {
                memcpy(g->pools, ps->pools, (size_t) g->n_pools * sizeof(*g->pools));
            }
        }
        pthread_mutex_unlock(&ps->mu);
        if (g->n_pools > 0 && !g->pools) {
            free(g);
            return false;
        }
    }
    atomic_init(&g->refs, n + 2);
    atomic_init(&g->parts_left, n);
    atomic_init(&g->is_cancelled, false);
    g->done.fn = gather_done_run;
    for (int i = 0; i < n; i++) {
        g->parts[i].g = g;
        g->parts[i].msg.fn = part_run;
        proto_builder_init_dynamic(&g->parts[i].rows);
    }
    s->gather = g;
    for (int i = 0; i < n; i++) {
        pool_worker_send(&w->pw, &rt->workers[i].pw, &g->parts[i].msg);
    }
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Running commands                                                                          */

enum exec_result {
    EXEC_DONE,  /* answered */
    EXEC_ERROR, /* answered with an error */
    EXEC_BUSY,  /* the workers are asked; admin_command_done follows */
};

static void
begin_rows(struct admin_session *s, const struct admin_col *cols, int n)
{
    if (s->cur_simple) {
        build_row_description(&s->out, cols, n, s->cur_fmt);
    }
}

/* The command in progress has finished (ok: without error). */
static void
admin_command_done(struct admin_session *s, bool ok)
{
    s->is_busy = false;
    if (!ok) {
        if (s->query) {
            /* The rest of a simple query is not run after an error. */
            s->query_pos = s->query_len;
        } else {
            s->is_skipping = true;
        }
    }
    admin_process(s);
}

static void
pause_timer_cb(EV_P_ ev_timer *t, int revents)
{
    (void) loop;
    (void) revents;
    struct admin_session *s = t->data;
    if (!gather_start(s, G_BUSY, s->cur.has_arg ? s->cur.arg : NULL)) {
        /* Try again later rather than answer too early. */
        ev_timer_set(t, ADMIN_PAUSE_POLL_S, 0);
        ev_timer_start(s->c->w->loop, t);
    }
}

static void
reload_timer_cb(EV_P_ ev_timer *t, int revents)
{
    (void) revents;
    struct admin_session *s = t->data;
    struct runtime *rt = s->c->w->rt;
    unsigned failed = atomic_load(&rt->n_reload_failures);
    if (atomic_load(&rt->n_reloads) + failed == s->reload_done) {
        ev_timer_set(t, ADMIN_PAUSE_POLL_S, 0);
        ev_timer_start(EV_A, t);
        return;
    }
    if (failed != s->reload_failed) {
        out_error(s, SQLSTATE_CONFIG_FILE_ERROR,
                  "configuration reload refused: the running configuration stays",
                  "pgmux's log lists every problem as FILE:LINE: key: reason");
        admin_command_done(s, false);
        return;
    }
    out_complete(s, "RELOAD");
    admin_command_done(s, true);
}

static void
gather_done(struct admin_session *s, struct admin_gather *g)
{
    int n_cols = 0;
    const struct admin_col *cols = NULL;
    switch (g->kind) {
    case G_CLIENTS:
    case G_SERVERS:
        cols = cmd_cols(s->cur.kind, &n_cols);
        begin_rows(s, cols, n_cols);
        for (int i = 0; i < g->n_parts; i++) {
            if (proto_builder_failed(&g->parts[i].rows)) {
                out_error(s, SQLSTATE_OUT_OF_MEMORY, "pgmux is out of memory", NULL);
                admin_command_done(s, false);
                return;
            }
            proto_builder_bytes(&s->out, g->parts[i].rows.data, g->parts[i].rows.len);
        }
        out_complete(s, "SHOW");
        break;
    case G_POOLS: {
        cols = cmd_cols(AK_SHOW_POOLS, &n_cols);
        begin_rows(s, cols, n_cols);
        struct admin_rows r;
        rows_init(&r, &s->out, cols, n_cols, s->cur_fmt);
        const struct cfg *cfg = s->c->w->cfg;
        for (int i = 0; i < g->n_pools; i++) {
            struct pool_count sum = { 0 };
            for (int k = 0; k < g->n_parts; k++) {
                const struct pool_count *pc = g->parts[k].counts;
                if (!pc) {
                    continue;
                }
                sum.cl_active += pc[i].cl_active;
                sum.cl_waiting += pc[i].cl_waiting;
                sum.sv_active += pc[i].sv_active;
                sum.sv_idle += pc[i].sv_idle;
                sum.sv_used += pc[i].sv_used;
                sum.sv_login += pc[i].sv_login;
                if (pc[i].maxwait_us > sum.maxwait_us) {
                    sum.maxwait_us = pc[i].maxwait_us;
                }
            }
            const struct pool *p = g->pools[i];
            row_begin(&r);
            put_text(&r, p->database);
            put_text(&r, p->user);
            put_text(&r, p->node->name);
            put_text(&r, cfg_pool_mode_name(cfg_pool_mode_for(cfg, p->database, p->user)));
            put_int(&r, sum.cl_active);
            put_int(&r, sum.cl_waiting);
            put_int(&r, sum.sv_active);
            put_int(&r, sum.sv_idle);
            put_int(&r, sum.sv_used);
            put_int(&r, sum.sv_login);
            put_int(&r, sum.maxwait_us / 1000000);
            put_int(&r, sum.maxwait_us % 1000000);
            row_end(&r);
        }
        out_complete(s, "SHOW");
        break;
    }
    case G_BUSY: {
        int64_t busy = 0;
        for (int i = 0; i < g->n_parts; i++) {
            busy += g->parts[i].n_busy;
        }
        if (busy > 0) {
            /* Every 20 ms at first, so a PAUSE between short transactions returns promptly;
             * every 200 ms once it has waited a second (session pooling may wait long). */
            struct ev_loop *loop = s->c->w->loop;
            double waited = ev_now(loop) - s->busy_since;
            ev_timer_set(&s->pause_timer, waited > 1.0 ? 0.2 : ADMIN_PAUSE_POLL_S, 0);
            ev_timer_start(loop, &s->pause_timer);
            return; /* still busy */
        }
        char d[128];
        log_info("event=admin_paused %s", db_detail(&s->cur, d, sizeof(d)));
        out_complete(s, "PAUSE");
        break;
    }
    case G_KILL:
        char d[128];
        log_info("event=admin_killed %s", db_detail(&s->cur, d, sizeof(d)));
        out_complete(s, "KILL");
        break;
    }
    admin_command_done(s, true);
}

/* How a SET key's value is spelled: a count, a duration, or a log level. */
enum tun_kind {
    TK_INT,
    TK_MS,
    TK_LEVEL,
};

/* The snapshot's own value of tunable k. */
static int64_t
tun_file_value(const struct cfg *cfg, enum admin_tun k)
{
    switch (k) {
    case ADMIN_TUN_MAX_CLIENT_CONN:
        return cfg->max_client_conn;
    case ADMIN_TUN_CLIENT_IDLE_TIMEOUT:
        return cfg->client_idle_timeout_ms;
    case ADMIN_TUN_IDLE_TXN_TIMEOUT:
        return cfg->idle_transaction_timeout_ms;
    case ADMIN_TUN_CLIENT_LOGIN_TIMEOUT:
        return cfg->client_login_timeout_ms;
    case ADMIN_TUN_QUERY_WAIT_TIMEOUT:
        return cfg->query_wait_timeout_ms;
    case ADMIN_TUN_SHUTDOWN_TIMEOUT:
        return cfg->shutdown_timeout_ms;
    case ADMIN_TUN_LOG_LEVEL:
        return cfg->log_level;
    case ADMIN_TUN__COUNT:
        break;
    }
    return 0;
}

/* A tunable's value spelled as the file would spell it. */
static void
tun_format(enum tun_kind kind, int64_t v, char *out, size_t len)
{
    static const char *const levels[] = { "fatal", "error", "warning", "info", "debug", "trace" };
    switch (kind) {
    case TK_INT:
        snprintf(out, len, "%lld", (long long) v);
        break;
    case TK_MS:
        if (v > 0 && v % 3600000 == 0) {
            snprintf(out, len, "%lldh", (long long) (v / 3600000));
        } else if (v % 1000 == 0) {
            snprintf(out, len, "%llds", (long long) (v / 1000));
        } else {
            snprintf(out, len, "%lldms", (long long) v);
        }
        break;
    case TK_LEVEL:
        snprintf(out, len, "%s", v >= 0 && v < (int64_t) ARRAY_LEN(levels) ? levels[v] : "?");
        break;
    }
}

/*
 * Pool limits SET may change: they live in the pool set's settings (every pool, and pools
 * created later), which a reload also rewrites from the file, so a SET of these lasts until the
 * next reload like the others.
 */
enum pool_key {
    PK_MAX_OPEN,
    PK_MAX_IDLE,
    PK_MIN_IDLE,
    PK_LIFETIME,
    PK_IDLE_TIME,
    PK_CONNECT_TIMEOUT,
    PK_LOGIN_RETRY,
    PK_MAX_DB,
    PK_MAX_USER,
    PK__COUNT,
};

/*
 * Every key SET may change, in one table: either a tunable (kept beside the configuration
 * snapshot, lasting until the next reload) or a pool limit (kept in the pool set's settings).
 */
struct set_key {
    const char *key;
    enum tun_kind kind;
    bool is_pool;
    int id; /* enum admin_tun, or enum pool_key when is_pool */
};

static const struct set_key set_keys[] = {
    { "max_client_conn", TK_INT, false, ADMIN_TUN_MAX_CLIENT_CONN },
    { "client_idle_timeout", TK_MS, false, ADMIN_TUN_CLIENT_IDLE_TIMEOUT },
    { "idle_transaction_timeout", TK_MS, false, ADMIN_TUN_IDLE_TXN_TIMEOUT },
    { "client_login_timeout", TK_MS, false, ADMIN_TUN_CLIENT_LOGIN_TIMEOUT },
    { "query_wait_timeout", TK_MS, false, ADMIN_TUN_QUERY_WAIT_TIMEOUT },
    { "shutdown_timeout", TK_MS, false, ADMIN_TUN_SHUTDOWN_TIMEOUT },
    { "log_level", TK_LEVEL, false, ADMIN_TUN_LOG_LEVEL },
    { "max_open_conns", TK_INT, true, PK_MAX_OPEN },
    { "max_idle_conns", TK_INT, true, PK_MAX_IDLE },
    { "min_idle_conns", TK_INT, true, PK_MIN_IDLE },
    { "conn_max_lifetime", TK_MS, true, PK_LIFETIME },
    { "conn_max_idle_time", TK_MS, true, PK_IDLE_TIME },
    { "server_connect_timeout", TK_MS, true, PK_CONNECT_TIMEOUT },
    { "server_login_retry", TK_MS, true, PK_LOGIN_RETRY },
    { "max_db_connections", TK_INT, true, PK_MAX_DB },
    { "max_user_connections", TK_INT, true, PK_MAX_USER },
};

static const struct set_key *
set_key_find(const char *key)
{
    for (size_t i = 0; i < ARRAY_LEN(set_keys); i++) {
        if (strcmp(set_keys[i].key, key) == 0) {
            return &set_keys[i];
        }
    }
    return NULL;
}

/* Current value of a pool key (ms for durations), from the pool set's settings. */
static int64_t
pool_key_get(struct pool_settings *d, enum pool_key pk)
{
    switch (pk) {
    case PK_MAX_OPEN:
        return atomic_load(&d->max_open);
    case PK_MAX_IDLE:
        return atomic_load(&d->max_idle);
    case PK_MIN_IDLE:
        return atomic_load(&d->min_idle);
    case PK_LIFETIME:
        return atomic_load(&d->max_lifetime_us) / 1000;
    case PK_IDLE_TIME:
        return atomic_load(&d->max_idle_time_us) / 1000;
    case PK_CONNECT_TIMEOUT:
        return atomic_load(&d->connect_timeout_us) / 1000;
    case PK_LOGIN_RETRY:
        return atomic_load(&d->login_retry_us) / 1000;
    case PK_MAX_DB:
        return atomic_load(&d->max_db);
    case PK_MAX_USER:
        return atomic_load(&d->max_user);
    case PK__COUNT:
        break;
    }
    return 0;
}

/* What a SET key is now: the SET value if one holds, else the file's. */
static int64_t
set_key_value(struct worker *w, const struct set_key *k)
{
    if (k->is_pool) {
        return pool_key_get(&w->rt->pools.defaults, (enum pool_key) k->id);
    }
    enum admin_tun t = (enum admin_tun) k->id;
    return admin_tunable(&w->rt->admin, w->cfg, t, tun_file_value(w->cfg, t));
}

/* SET of a pool key: the other settings stay as they are. NULL, or why v is refused. */
static const char *
pool_key_set(struct pool_set *set, enum pool_key pk, int64_t v, char *why, size_t whylen)
{
    struct pool_settings *d = &set->defaults;
    int64_t cur[PK__COUNT];
    for (int i = 0; i < PK__COUNT; i++) {
        cur[i] = pool_key_get(d, (enum pool_key) i);
    }
    cur[pk] = v;
    /* The rules the file follows between the three limits. */
    if (cur[PK_MAX_IDLE] > cur[PK_MAX_OPEN]) {
        snprintf(why, whylen, "max_idle_conns (%lld) would be more than max_open_conns (%lld)",
                 (long long) cur[PK_MAX_IDLE], (long long) cur[PK_MAX_OPEN]);
        return why;
    }
    if (cur[PK_MIN_IDLE] > cur[PK_MAX_IDLE]) {
        snprintf(why, whylen, "min_idle_conns (%lld) would be more than max_idle_conns (%lld)",
                 (long long) cur[PK_MIN_IDLE], (long long) cur[PK_MAX_IDLE]);
        return why;
    }
    struct pool_settings ps = {
        .max_open = (int) cur[PK_MAX_OPEN],
        .max_idle = (int) cur[PK_MAX_IDLE],
        .min_idle = (int) cur[PK_MIN_IDLE],
        .max_lifetime_us = cur[PK_LIFETIME] * 1000,
        .max_idle_time_us = cur[PK_IDLE_TIME] * 1000,
        .connect_timeout_us = cur[PK_CONNECT_TIMEOUT] * 1000,
        .login_retry_us = cur[PK_LOGIN_RETRY] * 1000,
        .max_db = (int) cur[PK_MAX_DB],
        .max_user = (int) cur[PK_MAX_USER],
        .reset_query = atomic_load(&d->reset_query),
    };
    if (pool_set_apply(set, &ps) != ST_OK) {
        snprintf(why, whylen, "out of memory");
        return why;
    }
    return NULL;
}

static enum exec_result
exec_show_config(struct admin_session *s)
{
    struct worker *w = s->c->w;
    struct cfg *defaults = cfg_defaults();
    if (!defaults) {
        out_error(s, SQLSTATE_OUT_OF_MEMORY, "pgmux is out of memory", NULL);
        return EXEC_ERROR;
    }
    begin_rows(s, cols_config, ARRAY_LEN(cols_config));
    struct admin_rows r;
    rows_init(&r, &s->out, cols_config, ARRAY_LEN(cols_config), s->cur_fmt);
    char value[512], dflt[512];
    for (int i = 0; i < cfg_key_count(); i++) {
        const char *key = cfg_key_name(i);
        const struct set_key *sk = set_key_find(key);
        if (sk) {
            tun_format(sk->kind, set_key_value(w, sk), value, sizeof(value));
        } else {
            cfg_key_format(w->cfg, i, value, sizeof(value));
        }
        cfg_key_format(defaults, i, dflt, sizeof(dflt));
        row_begin(&r);
        put_text(&r, key);
        put_text(&r, value);
        put_text(&r, dflt);
        put_bool(&r, sk != NULL);
        row_end(&r);
    }
    cfg_unref(defaults);
    out_complete(s, "SHOW");
    return EXEC_DONE;
}

static const char *
role_name(int role)
{
    switch (role) {
    case POOL_ROLE_PRIMARY:
        return "primary";
    case POOL_ROLE_REPLICA:
        return "replica";
    default:
        return "unknown";
    }
}

static void
put_lsn(struct admin_rows *r, uint64_t lsn)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%X/%X", (unsigned) (lsn >> 32), (unsigned) lsn);
    put_text(r, buf);
}

static enum exec_result
exec_show_nodes(struct admin_session *s)
{
    struct worker *w = s->c->w;
    struct runtime *rt = w->rt;
    const struct topo_snapshot *t = topo_refresh(&rt->topology, &w->topo);
    /* Server connections per node: every pool's n_open, under its lock (a console command is
     * rare; the pools' hot paths take these locks only to open or queue). */
    int64_t conns[TOPO_MAX_NODES] = { 0 };
    struct pool_set *ps = &rt->pools;
    pthread_mutex_lock(&ps->mu);
    int n_pools = ps->n_pools;
    pthread_mutex_unlock(&ps->mu);
    for (int i = 0; i < n_pools; i++) {
        pthread_mutex_lock(&ps->mu);
        struct pool *p = ps->pools[i];
        pthread_mutex_unlock(&ps->mu);
        pthread_mutex_lock(&p->mu);
        int open = p->n_open;
        pthread_mutex_unlock(&p->mu);
        if (p->node_idx >= 0 && p->node_idx < TOPO_MAX_NODES) {
            conns[p->node_idx] += open;
        }
    }
    begin_rows(s, cols_nodes, ARRAY_LEN(cols_nodes));
    struct admin_rows r;
    rows_init(&r, &s->out, cols_nodes, ARRAY_LEN(cols_nodes), s->cur_fmt);
    int64_t now = mono_now_us(), wall = wall_now_us();
    for (int i = 0; i < t->n_nodes; i++) {
        const struct topo_node *tn = &t->nodes[i];
        /* Appended before the snapshot that names it was published, never moved. */
        const struct pool_node *n = &rt->nodes[tn->idx];
        bool is_checked = tn->checked_at_us != 0;
        row_begin(&r);
        put_text(&r, n->name);
        put_text(&r, n->host);
        put_int(&r, n->port);
        put_text(&r, role_name(tn->role));
        /* Until the monitor has checked a node, what the pool saw of it. */
        put_bool(&r, is_checked ? tn->is_healthy
                                : atomic_load_explicit(&n->is_up, memory_order_relaxed) != 0);
        if (is_checked && tn->lsn) {
            put_lsn(&r, tn->lsn);
        } else {
            put_null(&r);
        }
        if (is_checked && tn->role == POOL_ROLE_REPLICA) {
            put_int(&r, (int64_t) tn->lag_bytes);
            put_int(&r, tn->lag_ms);
        } else if (is_checked) {
            put_int(&r, 0);
            put_int(&r, 0);
        } else {
            put_null(&r);
            put_null(&r);
        }
        put_bool(&r, tn->is_fenced);
        put_int(&r, tn->weight);
        put_int(&r, conns[tn->idx]);
        put_bool(&r, tn->is_removed);
        if (is_checked) {
            put_time(&r, wall_of(tn->checked_at_us, now, wall));
        } else {
            put_null(&r);
        }
        row_end(&r);
    }
    out_complete(s, "SHOW");
    return EXEC_DONE;
}

/* One row per database: the pools' counters (stats.h) summed over workers, users and nodes. */
static enum exec_result
exec_show_stats(struct admin_session *s)
{
    struct runtime *rt = s->c->w->rt;
    struct pool_set *ps = &rt->pools;
    pthread_mutex_lock(&ps->mu);
    int n = ps->n_pools;
    struct pool **pools = n > 0 ? malloc((size_t) n * sizeof(*pools)) : NULL;
    if (pools) {
        memcpy(pools, ps->pools, (size_t) n * sizeof(*pools));
    }
    pthread_mutex_unlock(&ps->mu);
    struct stats_pool_sum *sums = n > 0 ? calloc((size_t) n, sizeof(*sums)) : NULL;
    bool *done = n > 0 ? calloc((size_t) n, sizeof(*done)) : NULL;
    if (n > 0 && (!pools || !sums || !done)) {
        free(pools);
        free(sums);
        free(done);
        out_error(s, SQLSTATE_OUT_OF_MEMORY, "pgmux is out of memory", NULL);
        return EXEC_ERROR;
    }
    for (int i = 0; i < n; i++) {
        stats_pool_sum(rt->stats, rt->n_workers, pools[i]->id, &sums[i]);
    }
    begin_rows(s, cols_stats, ARRAY_LEN(cols_stats));
    struct admin_rows r;
    rows_init(&r, &s->out, cols_stats, ARRAY_LEN(cols_stats), s->cur_fmt);
    for (int i = 0; i < n; i++) {
        if (done[i]) {
            continue;
        }
        struct stats_pool_sum t = { 0 };
        for (int k = i; k < n; k++) {
            if (done[k] || strcmp(pools[k]->database, pools[i]->database) != 0) {
                continue;
            }
            done[k] = true;
            t.xact_count += sums[k].xact_count;
            t.query_count += sums[k].query_count;
            t.bytes_in += sums[k].bytes_in;
            t.bytes_out += sums[k].bytes_out;
            t.xact_time_us += sums[k].xact_time_us;
            t.query_time_us += sums[k].query_time_us;
            t.wait_time_us += sums[k].wait_time_us;
            t.wait_count += sums[k].wait_count;
        }
        row_begin(&r);
        put_text(&r, pools[i]->database);
        put_int(&r, (int64_t) t.xact_count);
        put_int(&r, (int64_t) t.query_count);
        put_int(&r, (int64_t) t.bytes_in);
        put_int(&r, (int64_t) t.bytes_out);
        put_int(&r, (int64_t) t.xact_time_us);
        put_int(&r, (int64_t) t.query_time_us);
        put_int(&r, (int64_t) t.wait_time_us);
        put_int(&r, (int64_t) t.wait_count);
        put_int(&r, t.xact_count ? (int64_t) (t.xact_time_us / t.xact_count) : 0);
        put_int(&r, t.query_count ? (int64_t) (t.query_time_us / t.query_count) : 0);
        put_int(&r, t.wait_count ? (int64_t) (t.wait_time_us / t.wait_count) : 0);
        row_end(&r);
    }
    free(pools);
    free(sums);
    free(done);
    out_complete(s, "SHOW");
    return EXEC_DONE;
}

/*
 * PostgreSQL settings that drivers SET on their own right after login (pgjdbc sends
 * extra_float_digits and application_name, others the date and time styles): accepted and
 * ignored, so those drivers can use the console. None names a pgmux key.
 */
static bool
is_driver_setting(const char *name)
{
    static const char *const names[] = {
        "application_name",  "extra_float_digits", "client_encoding", "datestyle",
        "timezone",          "intervalstyle",      "search_path",     "client_min_messages",
        "statement_timeout", "lock_timeout",       "bytea_output",    "standard_conforming_strings",
    };
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (strcasecmp(name, names[i]) == 0) {
            return true;
        }
    }
    return false;
}

static enum exec_result
exec_set(struct admin_session *s, const struct admin_cmd *cmd)
{
    struct worker *w = s->c->w;
    char msg[300];
    int key = cfg_key_find(cmd->arg);
    if (key < 0 && is_driver_setting(cmd->arg)) {
        out_complete(s, "SET");
        return EXEC_DONE;
    }
    if (key < 0) {
        snprintf(msg, sizeof(msg), "unrecognized configuration parameter \"%s\"", cmd->arg);
        out_error(s, SQLSTATE_UNDEFINED_OBJECT, msg, "SHOW CONFIG lists the keys");
        return EXEC_ERROR;
    }
    const struct set_key *sk = set_key_find(cfg_key_name(key));
    if (!sk) {
        snprintf(msg, sizeof(msg), "parameter \"%s\" cannot be changed while pgmux runs",
                 cfg_key_name(key));
        out_error(s, SQLSTATE_CANT_CHANGE_RUNTIME_PARAM, msg,
                  "change it in the configuration file and RELOAD; SHOW CONFIG says which keys "
                  "SET can change");
        return EXEC_ERROR;
    }
    int64_t v;
    char why[200];
    if (cfg_key_parse(key, cmd->value, &v, why, sizeof(why)) != 0) {
        snprintf(msg, sizeof(msg), "invalid value for parameter \"%s\": %s", cfg_key_name(key),
                 why);
        out_error(s, SQLSTATE_INVALID_PARAMETER_VALUE, msg, NULL);
        return EXEC_ERROR;
    }
    char shown[64];
    if (sk->is_pool) {
        const char *bad = pool_key_set(&w->rt->pools, (enum pool_key) sk->id, v, why, sizeof(why));
        if (bad) {
            snprintf(msg, sizeof(msg), "invalid value for parameter \"%s\": %s", cfg_key_name(key),
                     bad);
            out_error(s, SQLSTATE_INVALID_PARAMETER_VALUE, msg, NULL);
            return EXEC_ERROR;
        }
    } else {
        tun_set(&w->rt->admin, w->cfg, (enum admin_tun) sk->id, v);
        if (sk->id == ADMIN_TUN_LOG_LEVEL) {
            log_set_level((enum log_level) v);
        }
    }
    tun_format(sk->kind, v, shown, sizeof(shown));
    char detail[160];
    snprintf(detail, sizeof(detail), "key=%s value=%s", cfg_key_name(key), shown);
    log_command(s, "SET", detail);
    out_complete(s, "SET");
    return EXEC_DONE;
}

static void
resume_msg_run(struct pool_worker *pw, struct pool_msg *m)
{
    free(m);
    client_resume_held(pw->owner);
}

/* RESUME, and undoing a cancelled PAUSE: held clients on every worker ask for a server. Nobody
 * waits for this: a held client's transaction starts as soon as its worker reads the message. */
static void
resume_everywhere(struct worker *w)
{
    struct runtime *rt = w->rt;
    for (int i = 0; i < rt->n_workers; i++) {
        struct pool_msg *m = malloc(sizeof(*m));
        if (!m) {
            /* That worker's held clients wait for the next RESUME or their query_wait_timeout. */
            log_error("admin console: out of memory resuming worker %d", i);
            continue;
        }
        m->fn = resume_msg_run;
        pool_worker_send(&w->pw, &rt->workers[i].pw, m);
    }
}

static enum exec_result
admin_exec(struct admin_session *s)
{
    struct admin_cmd *cmd = &s->cur;
    struct worker *w = s->c->w;
    struct admin_shared *adm = &w->rt->admin;
    char msg[300];
    if (!s->is_admin && !admin_cmd_is_read_only(cmd->kind)) {
        out_error(s, SQLSTATE_INSUFFICIENT_PRIVILEGE,
                  "permission denied: only SHOW is allowed to stats_users",
                  "list the user in admin_users to run this command");
        return EXEC_ERROR;
    }
    switch (cmd->kind) {
    case AK_EMPTY:
        out_simple(s, 'I'); /* EmptyQueryResponse */
        return EXEC_DONE;
    case AK_SHOW_VERSION: {
        begin_rows(s, cols_version, ARRAY_LEN(cols_version));
        struct admin_rows r;
        rows_init(&r, &s->out, cols_version, ARRAY_LEN(cols_version), s->cur_fmt);
        row_begin(&r);
        put_text(&r, "pgmux " PGMUX_VERSION);
        row_end(&r);
        out_complete(s, "SHOW");
        return EXEC_DONE;
    }
    case AK_SHOW_CONFIG:
        return exec_show_config(s);
    case AK_SHOW_NODES:
        return exec_show_nodes(s);
    case AK_SHOW_STATS:
        return exec_show_stats(s);
    case AK_SHOW_POOLS:
    case AK_SHOW_SERVERS:
    case AK_SHOW_CLIENTS: {
        enum gather_kind gk = cmd->kind == AK_SHOW_POOLS     ? G_POOLS
                              : cmd->kind == AK_SHOW_SERVERS ? G_SERVERS
                                                             : G_CLIENTS;
        if (!gather_start(s, gk, NULL)) {
            out_error(s, SQLSTATE_OUT_OF_MEMORY, "pgmux is out of memory", NULL);
            return EXEC_ERROR;
        }
        return EXEC_BUSY;
    }
    case AK_PAUSE: {
        if (cmd->has_arg && admin_is_console_db(cmd->arg)) {
            out_error(s, SQLSTATE_OBJECT_NOT_IN_PREREQUISITE, "the admin console cannot be paused",
                      NULL);
            return EXEC_ERROR;
        }
        enum pause_result pr = pause_add(adm, cmd->has_arg ? cmd->arg : NULL);
        if (pr == PAUSE_NOMEM) {
            out_error(s, SQLSTATE_OUT_OF_MEMORY, "pgmux is out of memory", NULL);
            return EXEC_ERROR;
        }
        if (pr == PAUSE_ALREADY) {
            if (cmd->has_arg) {
                snprintf(msg, sizeof(msg), "database \"%s\" is already paused", cmd->arg);
            } else {
                snprintf(msg, sizeof(msg), "pgmux is already paused");
            }
            out_error(s, SQLSTATE_OBJECT_NOT_IN_PREREQUISITE, msg, "RESUME first");
            return EXEC_ERROR;
        }
        char d[128];
        log_command(s, "PAUSE", db_detail(cmd, d, sizeof(d)));
        s->pause_timer.data = s;
        ev_set_cb(&s->pause_timer, pause_timer_cb);
        if (!gather_start(s, G_BUSY, cmd->has_arg ? cmd->arg : NULL)) {
            ev_timer_set(&s->pause_timer, ADMIN_PAUSE_POLL_S, 0);
            ev_timer_start(w->loop, &s->pause_timer);
        }
        return EXEC_BUSY;
    }
    case AK_RESUME: {
        enum pause_result pr = pause_remove(adm, cmd->has_arg ? cmd->arg : NULL);
        if (pr == PAUSE_ALREADY) {
            if (cmd->has_arg && pause_is_all(adm)) {
                snprintf(msg, sizeof(msg),
                         "database \"%s\" is paused by a PAUSE of every "
                         "database",
                         cmd->arg);
                out_error(s, SQLSTATE_OBJECT_NOT_IN_PREREQUISITE, msg,
                          "RESUME without a database resumes everything");
            } else if (cmd->has_arg) {
                snprintf(msg, sizeof(msg), "database \"%s\" is not paused", cmd->arg);
                out_error(s, SQLSTATE_OBJECT_NOT_IN_PREREQUISITE, msg, NULL);
            } else {
                out_error(s, SQLSTATE_OBJECT_NOT_IN_PREREQUISITE, "pgmux is not paused", NULL);
            }
            return EXEC_ERROR;
        }
        char d[128];
        log_command(s, "RESUME", db_detail(cmd, d, sizeof(d)));
        resume_everywhere(w);
        out_complete(s, "RESUME");
        return EXEC_DONE;
    }
    case AK_KILL: {
        if (admin_is_console_db(cmd->arg)) {
            out_error(s, SQLSTATE_OBJECT_NOT_IN_PREREQUISITE,
                      "KILL cannot drop the admin console's own sessions", NULL);
            return EXEC_ERROR;
        }
        /* As in PgBouncer, a killed database stays paused until RESUME: a client that comes
         * back at once would otherwise race the drop, and the operator decides when. */
        if (pause_add(adm, cmd->arg) == PAUSE_NOMEM || !gather_start(s, G_KILL, cmd->arg)) {
            out_error(s, SQLSTATE_OUT_OF_MEMORY, "pgmux is out of memory", NULL);
            return EXEC_ERROR;
        }
        char d[128];
        log_command(s, "KILL", db_detail(cmd, d, sizeof(d)));
        return EXEC_BUSY;
    }
    case AK_RELOAD: {
        /* The very path SIGHUP takes: the main thread reads the file and applies it. The
         * command answers once the reload has happened, with its outcome. */
        struct runtime *rt = w->rt;
        s->reload_failed = atomic_load(&rt->n_reload_failures);
        s->reload_done = atomic_load(&rt->n_reloads) + s->reload_failed;
        log_command(s, "RELOAD", NULL);
        runtime_request_reload(rt);
        s->pause_timer.data = s;
        ev_set_cb(&s->pause_timer, reload_timer_cb);
        ev_timer_set(&s->pause_timer, ADMIN_PAUSE_POLL_S, 0);
        ev_timer_start(w->loop, &s->pause_timer);
        return EXEC_BUSY;
    }
    case AK_SHUTDOWN:
        log_command(s, "SHUTDOWN", NULL);
        out_complete(s, "SHUTDOWN");
        if (kill(getpid(), SIGTERM) != 0) {
            out_error(s, SQLSTATE_INTERNAL_ERROR, "could not signal the main thread", NULL);
            return EXEC_ERROR;
        }
        return EXEC_DONE;
    case AK_SET:
        return exec_set(s, cmd);
    case AK_BEGIN:
        s->txn_status = 'T';
        out_complete(s, "BEGIN");
        return EXEC_DONE;
    case AK_COMMIT:
        s->txn_status = 'I';
        out_complete(s, "COMMIT");
        return EXEC_DONE;
    case AK_ROLLBACK:
        s->txn_status = 'I';
        out_complete(s, "ROLLBACK");
        return EXEC_DONE;
    }
    return EXEC_DONE;
}

/* Run s->cur; on EXEC_BUSY the session waits. */
static void
admin_run_cur(struct admin_session *s, bool simple)
{
    s->cur_simple = simple;
    s->busy_since = ev_now(s->c->w->loop);
    enum exec_result r = admin_exec(s);
    if (r == EXEC_BUSY) {
        s->is_busy = true;
        return;
    }
    if (r == EXEC_ERROR) {
        if (s->query) {
            s->query_pos = s->query_len;
        } else {
            s->is_skipping = true;
        }
    }
}

void
admin_session_cancel(struct client *c)
{
    struct admin_session *s = session_of(c);
    if (!s || !s->is_busy || s->cur.kind != AK_PAUSE) {
        return;
    }
    if (ev_is_active(&s->pause_timer)) {
        ev_timer_stop(c->w->loop, &s->pause_timer);
    }
    gather_cancel(s);
    (void) pause_remove(&c->w->rt->admin, s->cur.has_arg ? s->cur.arg : NULL);
    log_command(s, "PAUSE", "canceled=1");
    resume_everywhere(c->w);
    out_error(s, SQLSTATE_QUERY_CANCELED, "canceling statement due to user request",
              "the PAUSE was undone");
    admin_command_done(s, false);
}

/* ---------------------------------------------------------------------------------------- */
/* Messages                                                                                   */

static bool
read_formats(struct proto_reader *rd, uint16_t *n, const uint8_t **codes)
{
    if (proto_reader_u16(rd, n) != ST_OK) {
        return false;
    }
    return proto_reader_bytes(rd, (size_t) *n * 2, codes) == ST_OK;
}

static uint16_t
be16(const uint8_t *p)
{
    return (uint16_t) ((p[0] << 8) | p[1]);
}

/* Parse ('P'). */
static void
msg_parse(struct admin_session *s, const uint8_t *body, size_t len)
{
    struct proto_reader rd;
    proto_reader_init(&rd, body, len);
    const char *name, *query;
    size_t qlen;
    uint16_t n_types;
    const uint8_t *types;
    if (proto_reader_cstr(&rd, &name, NULL) != ST_OK ||
        proto_reader_cstr(&rd, &query, &qlen) != ST_OK ||
        proto_reader_u16(&rd, &n_types) != ST_OK ||
        proto_reader_bytes(&rd, (size_t) n_types * 4, &types) != ST_OK ||
        proto_reader_end(&rd) != ST_OK) {
        client_fail(s->c, ST_ECLIENT_PROTOCOL, "malformed Parse message");
        return;
    }
    struct admin_cmd cmd;
    struct admin_parse_err e = { 0 };
    const char *end = query + qlen;
    const char *stmt_end = admin_cmd_statement_end(query, end);
    if (stmt_end < end) {
        if (!admin_cmd_is_empty(stmt_end, end)) {
            out_error(s, SQLSTATE_SYNTAX_ERROR,
                      "cannot insert multiple commands into a prepared statement", NULL);
            s->is_skipping = true;
            return;
        }
    }
    if (admin_cmd_parse(query, stmt_end, &cmd, &e) != 0) {
        out_error(s, e.sqlstate, e.message, e.hint);
        s->is_skipping = true;
        return;
    }
    struct admin_stmt *st = stmt_find(s, name);
    if (st && name[0]) {
        char msg[200];
        snprintf(msg, sizeof(msg), "prepared statement \"%.64s\" already exists", name);
        out_error(s, SQLSTATE_DUPLICATE_PSTATEMENT, msg, NULL);
        s->is_skipping = true;
        return;
    }
    if (!st) {
        if (s->n_stmts == ADMIN_MAX_STMTS) {
            out_error(s, SQLSTATE_INSUFFICIENT_RESOURCES,
                      "too many prepared statements on this admin console session",
                      "close some with Close or DEALLOCATE-like driver calls");
            s->is_skipping = true;
            return;
        }
        if (!s->stmts) {
            s->stmts = calloc(ADMIN_MAX_STMTS, sizeof(*s->stmts));
        }
        char *copy = strdup(name);
        if (!s->stmts || !copy) {
            free(copy);
            client_fail(s->c, ST_ENOMEM, NULL);
            return;
        }
        st = &s->stmts[s->n_stmts++];
        st->name = copy;
    }
    st->cmd = cmd;
    out_simple(s, '1'); /* ParseComplete */
}

/* Bind ('B'). */
static void
msg_bind(struct admin_session *s, const uint8_t *body, size_t len)
{
    struct proto_reader rd;
    proto_reader_init(&rd, body, len);
    const char *portal, *stmt;
    uint16_t n_pfmt, n_params, n_rfmt;
    const uint8_t *pfmt, *rfmt;
    if (proto_reader_cstr(&rd, &portal, NULL) != ST_OK ||
        proto_reader_cstr(&rd, &stmt, NULL) != ST_OK || !read_formats(&rd, &n_pfmt, &pfmt) ||
        proto_reader_u16(&rd, &n_params) != ST_OK) {
        client_fail(s->c, ST_ECLIENT_PROTOCOL, "malformed Bind message");
        return;
    }
    for (uint16_t i = 0; i < n_params; i++) {
        int32_t plen;
        const uint8_t *pv;
        if (proto_reader_i32(&rd, &plen) != ST_OK ||
            (plen > 0 && proto_reader_bytes(&rd, (size_t) plen, &pv) != ST_OK)) {
            client_fail(s->c, ST_ECLIENT_PROTOCOL, "malformed Bind message");
            return;
        }
    }
    if (!read_formats(&rd, &n_rfmt, &rfmt) || proto_reader_end(&rd) != ST_OK) {
        client_fail(s->c, ST_ECLIENT_PROTOCOL, "malformed Bind message");
        return;
    }
    char msg[200];
    struct admin_stmt *st = stmt_find(s, stmt);
    if (!st) {
        snprintf(msg, sizeof(msg), "prepared statement \"%.64s\" does not exist", stmt);
        out_error(s, SQLSTATE_INVALID_SQL_STATEMENT_NAME, msg, NULL);
        s->is_skipping = true;
        return;
    }
    if (n_params != 0) {
        snprintf(msg, sizeof(msg),
                 "bind message supplies %u parameters, but prepared statement \"%.64s\" requires 0",
                 (unsigned) n_params, stmt);
        out_error(s, SQLSTATE_PROTOCOL_VIOLATION, msg, "admin console commands take no parameters");
        s->is_skipping = true;
        return;
    }
    int n_cols;
    (void) cmd_cols(st->cmd.kind, &n_cols);
    if (n_rfmt > 1 && n_rfmt != n_cols) {
        snprintf(msg, sizeof(msg), "bind message has %u result formats but query has %d columns",
                 (unsigned) n_rfmt, n_cols);
        out_error(s, SQLSTATE_PROTOCOL_VIOLATION, msg, NULL);
        s->is_skipping = true;
        return;
    }
    uint8_t fmt[ADMIN_MAX_COLS] = { 0 };
    for (int i = 0; i < n_cols; i++) {
        uint16_t f = n_rfmt == 0 ? 0 : be16(rfmt + 2 * (n_rfmt == 1 ? 0 : i));
        if (f > 1) {
            snprintf(msg, sizeof(msg), "unsupported format code: %u", (unsigned) f);
            out_error(s, SQLSTATE_PROTOCOL_VIOLATION, msg, NULL);
            s->is_skipping = true;
            return;
        }
        fmt[i] = (uint8_t) f;
    }
    struct admin_portal *pt = portal_find(s, portal);
    if (pt && portal[0]) {
        snprintf(msg, sizeof(msg), "cursor \"%.64s\" already exists", portal);
        out_error(s, SQLSTATE_DUPLICATE_CURSOR, msg, NULL);
        s->is_skipping = true;
        return;
    }
    if (!pt) {
        if (s->n_portals == ADMIN_MAX_PORTALS) {
            out_error(s, SQLSTATE_INSUFFICIENT_RESOURCES,
                      "too many portals on this admin console session", NULL);
            s->is_skipping = true;
            return;
        }
        if (!s->portals) {
            s->portals = calloc(ADMIN_MAX_PORTALS, sizeof(*s->portals));
        }
        char *copy = strdup(portal);
        if (!s->portals || !copy) {
            free(copy);
            client_fail(s->c, ST_ENOMEM, NULL);
            return;
        }
        pt = &s->portals[s->n_portals++];
        pt->name = copy;
    }
    pt->cmd = st->cmd;
    memcpy(pt->fmt, fmt, sizeof(pt->fmt));
    out_simple(s, '2'); /* BindComplete */
}

/* Describe ('D'). */
static void
msg_describe(struct admin_session *s, const uint8_t *body, size_t len)
{
    struct proto_reader rd;
    proto_reader_init(&rd, body, len);
    uint8_t what;
    const char *name;
    if (proto_reader_u8(&rd, &what) != ST_OK || proto_reader_cstr(&rd, &name, NULL) != ST_OK ||
        proto_reader_end(&rd) != ST_OK || (what != 'S' && what != 'P')) {
        client_fail(s->c, ST_ECLIENT_PROTOCOL, "malformed Describe message");
        return;
    }
    char msg[200];
    const struct admin_cmd *cmd;
    const uint8_t *fmt = NULL;
    if (what == 'S') {
        struct admin_stmt *st = stmt_find(s, name);
        if (!st) {
            snprintf(msg, sizeof(msg), "prepared statement \"%.64s\" does not exist", name);
            out_error(s, SQLSTATE_INVALID_SQL_STATEMENT_NAME, msg, NULL);
            s->is_skipping = true;
            return;
        }
        cmd = &st->cmd;
        proto_builder_begin(&s->out, 't'); /* ParameterDescription: no parameters */
        proto_builder_u16(&s->out, 0);
        proto_builder_end(&s->out);
    } else {
        struct admin_portal *pt = portal_find(s, name);
        if (!pt) {
            snprintf(msg, sizeof(msg), "portal \"%.64s\" does not exist", name);
            out_error(s, SQLSTATE_INVALID_CURSOR_NAME, msg, NULL);
            s->is_skipping = true;
            return;
        }
        cmd = &pt->cmd;
        fmt = pt->fmt;
    }
    int n_cols;
    const struct admin_col *cols = cmd_cols(cmd->kind, &n_cols);
    if (n_cols > 0) {
        build_row_description(&s->out, cols, n_cols, fmt);
    } else {
        out_simple(s, 'n'); /* NoData */
    }
}

/* Execute ('E'). The row limit is ignored: results are small and sent whole. */
static void
msg_execute(struct admin_session *s, const uint8_t *body, size_t len)
{
    struct proto_reader rd;
    proto_reader_init(&rd, body, len);
    const char *name;
    uint32_t max_rows;
    if (proto_reader_cstr(&rd, &name, NULL) != ST_OK || proto_reader_u32(&rd, &max_rows) != ST_OK ||
        proto_reader_end(&rd) != ST_OK) {
        client_fail(s->c, ST_ECLIENT_PROTOCOL, "malformed Execute message");
        return;
    }
    struct admin_portal *pt = portal_find(s, name);
    if (!pt) {
        char msg[200];
        snprintf(msg, sizeof(msg), "portal \"%.64s\" does not exist", name);
        out_error(s, SQLSTATE_INVALID_CURSOR_NAME, msg, NULL);
        s->is_skipping = true;
        return;
    }
    s->cur = pt->cmd;
    memcpy(s->cur_fmt, pt->fmt, sizeof(s->cur_fmt));
    admin_run_cur(s, false);
}

/* Close ('C'). */
static void
msg_close(struct admin_session *s, const uint8_t *body, size_t len)
{
    struct proto_reader rd;
    proto_reader_init(&rd, body, len);
    uint8_t what;
    const char *name;
    if (proto_reader_u8(&rd, &what) != ST_OK || proto_reader_cstr(&rd, &name, NULL) != ST_OK ||
        proto_reader_end(&rd) != ST_OK || (what != 'S' && what != 'P')) {
        client_fail(s->c, ST_ECLIENT_PROTOCOL, "malformed Close message");
        return;
    }
    if (what == 'S') {
        struct admin_stmt *st = stmt_find(s, name);
        if (st) {
            stmt_remove(s, st);
        }
    } else {
        struct admin_portal *pt = portal_find(s, name);
        if (pt) {
            portal_remove(s, pt);
        }
    }
    out_simple(s, '3'); /* CloseComplete: closing what does not exist is not an error */
}

/* Run the next statement of the simple query in s->query, or end it with ReadyForQuery. */
static void
query_step(struct admin_session *s)
{
    const char *base = s->query;
    const char *end = base + s->query_len;
    while (s->query_pos < s->query_len) {
        const char *p = base + s->query_pos;
        const char *e = admin_cmd_statement_end(p, end);
        s->query_pos = (size_t) (e - base) + (e < end ? 1 : 0);
        if (admin_cmd_is_empty(p, e)) {
            continue;
        }
        struct admin_parse_err pe = { 0 };
        s->n_run++;
        if (admin_cmd_parse(p, e, &s->cur, &pe) != 0) {
            out_error(s, pe.sqlstate, pe.message, pe.hint);
            s->query_pos = s->query_len;
            break;
        }
        memset(s->cur_fmt, 0, sizeof(s->cur_fmt));
        admin_run_cur(s, true);
        return; /* one statement per step: a busy one holds the rest */
    }
    if (s->n_run == 0) {
        out_simple(s, 'I'); /* EmptyQueryResponse */
    }
    free(s->query);
    s->query = NULL;
    proto_build_ready(&s->out, s->txn_status);
}

/* One whole message from the client. */
static void
admin_message(struct admin_session *s, uint8_t type, const uint8_t *body, size_t len)
{
    struct client *c = s->c;
    if (s->is_skipping && type != 'S' && type != 'X') {
        return;
    }
    switch (type) {
    case 'Q': {
        struct proto_reader rd;
        proto_reader_init(&rd, body, len);
        const char *q;
        size_t qlen;
        if (proto_reader_cstr(&rd, &q, &qlen) != ST_OK || proto_reader_end(&rd) != ST_OK) {
            client_fail(c, ST_ECLIENT_PROTOCOL, "malformed Query message");
            return;
        }
        s->query = malloc(qlen + 1);
        if (!s->query) {
            client_fail(c, ST_ENOMEM, NULL);
            return;
        }
        memcpy(s->query, q, qlen + 1);
        s->query_len = qlen;
        s->query_pos = 0;
        s->n_run = 0;
        portals_clear(s);
        query_step(s);
        return;
    }
    case 'P':
        msg_parse(s, body, len);
        return;
    case 'B':
        msg_bind(s, body, len);
        return;
    case 'D':
        msg_describe(s, body, len);
        return;
    case 'E':
        msg_execute(s, body, len);
        return;
    case 'C':
        msg_close(s, body, len);
        return;
    case 'H': /* Flush: answers are written at the end of every read anyway */
        return;
    case 'S':
        s->is_skipping = false;
        if (s->txn_status == 'I') {
            portals_clear(s);
        }
        proto_build_ready(&s->out, s->txn_status);
        return;
    case 'X':
        client_close(c, "client sent Terminate");
        return;
    case 'F':
        out_error(s, SQLSTATE_FEATURE_NOT_SUPPORTED,
                  "function calls are not supported by the admin console", NULL);
        proto_build_ready(&s->out, s->txn_status);
        return;
    default:
        client_fail(c, ST_ECLIENT_PROTOCOL, "unexpected message type on the admin console");
        return;
    }
}

/* Handle what is buffered, as far as no command is waiting for the workers. */
static void
admin_process(struct admin_session *s)
{
    struct client *c = s->c;
    struct worker *w = c->w;
    while (c->state == CLIENT_ADMIN && !s->is_busy) {
        if (s->query) {
            query_step(s);
            continue;
        }
        if (s->out.len - s->out_sent > ADMIN_OUT_HIGH) {
            break; /* let the client read first */
        }
        struct buf *b = c->sock.in;
        if (!b || buf_unparsed(b) == 0) {
            break;
        }
        struct proto_header h;
        /* max_message_size holds here too, when it is the smaller limit */
        uint32_t max =
            w->cfg->max_message_size < ADMIN_MSG_MAX ? w->cfg->max_message_size : ADMIN_MSG_MAX;
        enum status st =
            proto_header_read((const uint8_t *) b->data + b->parsed, buf_unparsed(b), max, &h);
        if (st == ST_INCOMPLETE) {
            break;
        }
        if (st != ST_OK || !proto_frontend_type_valid(h.type)) {
            client_fail(c, ST_ECLIENT_PROTOCOL, "invalid message length or type");
            return;
        }
        uint64_t total = proto_header_total(&h);
        if (buf_unparsed(b) < total) {
            if (buf_reserve(&w->pw.bufs, &c->sock.in, (uint32_t) (total - buf_unparsed(b))) != 0) {
                client_fail(c, ST_ENOMEM, NULL);
                return;
            }
            break;
        }
        const uint8_t *body = (const uint8_t *) b->data + b->parsed + PROTO_HEADER_LEN;
        b->parsed += (uint32_t) total;
        b->sent = b->parsed;
        admin_message(s, h.type, body, h.len - 4);
    }
    if (c->state != CLIENT_ADMIN) {
        return;
    }
    if (c->sock.in && buf_is_empty(c->sock.in)) {
        buf_put(&w->pw.bufs, c->sock.in);
        c->sock.in = NULL;
    }
    admin_flush(s);
    if (c->state != CLIENT_ADMIN) {
        return;
    }
    /* Reading goes on while a command waits, so a client that hangs up during a long PAUSE
     * is noticed; what it sends meanwhile waits in the buffer (admin_read_cb stops when that is
     * full). */
    if (s->out.len - s->out_sent > ADMIN_OUT_HIGH) {
        pool_sock_stop_read(w->loop, &c->sock);
    } else {
        pool_sock_start_read(w->loop, &c->sock);
    }
}

static void
admin_read_cb(EV_P_ ev_io *io, int revents)
{
    (void) loop;
    (void) revents;
    struct client *c = io->data;
    struct worker *w = c->w;
    struct buf *b = c->sock.in;
    if (b && buf_space(b) == 0) {
        buf_compact(b);
        if (buf_space(b) == 0) {
            /* Only while a command waits: otherwise admin_process grows the buffer for the
             * message in it. Reading resumes when the command is done. */
            pool_sock_stop_read(w->loop, &c->sock);
            return;
        }
    }
    int n = pool_sock_recv(&c->sock, &w->pw.bufs);
    if (n == -2) {
        return;
    }
    if (n <= 0) {
        client_close(c, n == 0 ? "client disconnected" : "client connection error");
        return;
    }
    c->last_read_us = mono_now_us();
    admin_process(session_of(c));
}
