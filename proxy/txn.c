/*
 * txn.c - what transaction and statement pooling change on the byte path.
 *
 * A client's server connection changes between transactions, so whatever the client created
 * on "its" server must be recreated on the next one, and whatever it cannot be must pin it:
 *
 * - Named prepared statements (protocol level) are kept per client. On the server each gets
 *   pgmux's own name, derived from the statement's text and parameter types, so clients that
 *   prepare the same statement share it. Before a Bind or Describe on a server connection that
 *   lacks it, pgmux sends the Parse itself. Each server connection keeps at most
 *   max_prepared_statements, evicting the least recently used with a real Close. A client's
 *   Close and a Parse of a statement the server already has are answered by pgmux.
 * - Every request sent to the server is recorded with the answer it will get (pool_reqs), so
 *   answers to pgmux's own messages are dropped, answers pgmux owes are written at the right
 *   place, and the skip-until-Sync rule after an error keeps everything in step.
 * - Statements that leave session state behind (see router/scan.h) pin the client to its
 *   server connection, or are refused when pin_session_state is off; in statement pooling
 *   BEGIN is refused. A refusal replaces the statement with one that raises the error on the
 *   server, so the client sees an ordinary ErrorResponse and the server's transaction state
 *   stays what the client thinks it is.
 *
 * Runs on the session's worker. Handlers return enum relay_action (relay_int.h) and must not
 * change any state before returning RELAY_PAUSE or RELAY_WAIT: the relay calls them again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "common/log.h"
#include "pool/pool.h"
#include "protocol/messages.h"
#include "proxy/client.h"
#include "proxy/config.h"
#include "proxy/relay_int.h"
#include "proxy/routing.h"
#include "proxy/worker.h"
#include "router/scan.h"

/* ---- the client's statements ---- */

static uint32_t
stmt_hash_at(const void *ctx, uint32_t pos)
{
    return ((const struct client_stmts *) ctx)->v[pos].name_hash;
}

struct client_stmt *
txn_stmt_find(struct client *c, const char *name)
{
    struct client_stmts *v = c->stmts;
    if (!v || !v->idx.slot) {
        return NULL;
    }
    uint32_t h = hidx_hash_str(name);
    for (uint32_t i = hidx_first(&v->idx, h); v->idx.slot[i]; i = hidx_next(&v->idx, i)) {
        struct client_stmt *s = &v->v[v->idx.slot[i] - 1];
        if (s->name_hash == h && strcmp(s->name, name) == 0) {
            return s;
        }
    }
    return NULL;
}

static void
stmt_free(struct client_stmt *s)
{
    free(s->name);
    free(s->tail);
}

static void
stmt_remove(struct client *c, struct client_stmt *s)
{
    struct client_stmts *v = c->stmts;
    uint32_t pos = (uint32_t) (s - v->v), last = (uint32_t) v->n - 1;
    hidx_remove_swap(&v->idx, pos, last, stmt_hash_at, v);
    stmt_free(s);
    *s = v->v[last];
    v->n--;
}

void
txn_stmts_clear(struct client *c)
{
    struct client_stmts *v = c->stmts;
    for (int i = 0; v && i < v->n; i++) {
        stmt_free(&v->v[i]);
    }
    if (v) {
        hidx_fini(&v->idx);
    }
    free(v);
    c->stmts = NULL;
}

static void
stmt_hash(const uint8_t *tail, size_t len, uint64_t *h1, uint64_t *h2)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_Digest(tail, len, md, &md_len, EVP_sha256(), NULL);
    uint64_t a = 0, b = 0;
    for (int i = 0; i < 8; i++) {
        a = (a << 8) | md[i];
        b = (b << 8) | md[8 + i];
    }
    *h1 = a;
    *h2 = b;
}

/* Record (or replace) the client's statement name -> tail. */
static bool
stmt_store(struct client *c, const char *name, const uint8_t *tail, uint32_t tail_len, uint64_t h1,
           uint64_t h2, bool is_read, bool is_classified)
{
    struct client_stmt *s = txn_stmt_find(c, name);
    uint8_t *t = malloc(tail_len ? tail_len : 1);
    if (!t) {
        return false;
    }
    memcpy(t, tail, tail_len);
    if (s) {
        free(s->tail);
    } else {
        struct client_stmts *v = c->stmts;
        if (!v || v->n == v->cap) {
            int ncap = v ? v->cap * 2 : 8;
            struct client_stmts *nv = realloc(v, sizeof(*nv) + (size_t) ncap * sizeof(nv->v[0]));
            if (!nv) {
                free(t);
                return false;
            }
            if (!v) {
                nv->n = 0;
                nv->cap = 0;
                nv->idx = (struct hidx){ 0 };
            }
            c->stmts = v = nv;
            if (hidx_reserve(&v->idx, (uint32_t) ncap, (uint32_t) v->n, stmt_hash_at, v) != ST_OK) {
                free(t);
                return false;
            }
            v->cap = ncap;
        }
        s = &v->v[v->n];
        s->name = strdup(name);
        if (!s->name) {
            free(t);
            return false;
        }
        s->name_hash = hidx_hash_str(name);
        hidx_insert(&v->idx, s->name_hash, (uint32_t) v->n);
        v->n++;
    }
    s->tail = t;
    s->tail_len = tail_len;
    s->h1 = h1;
    s->h2 = h2;
    s->is_pending = true;
    s->is_read = is_read;
    s->is_classified = is_classified;
    return true;
}

/* The server answered (or skipped) the client's Parse of the statement hashed (h1, h2). */
static void
stmt_settle(struct client *c, uint64_t h1, uint64_t h2, bool created)
{
    for (int i = c->stmts ? c->stmts->n - 1 : -1; i >= 0; i--) {
        struct client_stmt *s = &c->stmts->v[i];
        if (s->is_pending && s->h1 == h1 && s->h2 == h2) {
            if (created) {
                s->is_pending = false;
            } else {
                stmt_remove(c, s);
            }
        }
    }
}

/* ---- writing messages of our own ---- */

static int
emit_builder(struct client *c, struct pool_sock *dst, struct proto_builder *pb)
{
    int r = proto_builder_failed(pb) ? -1 : relay_emit(c, dst, pb->data, (uint32_t) pb->len);
    proto_builder_fini(pb);
    return r;
}

/* Parse(server name, tail) to the server. */
static int
emit_parse(struct client *c, uint64_t h1, uint64_t h2, const uint8_t *tail, uint32_t tail_len)
{
    char name[POOL_STMT_NAME_LEN + 1];
    pool_stmt_name(h1, h2, name);
    struct proto_builder pb;
    proto_builder_init_dynamic(&pb);
    proto_builder_begin(&pb, 'P');
    proto_builder_cstr(&pb, name);
    proto_builder_bytes(&pb, tail, tail_len);
    proto_builder_end(&pb);
    return emit_builder(c, &c->sc->sock, &pb);
}

/* Close('S', server name) to the server. */
static int
emit_close(struct client *c, uint64_t h1, uint64_t h2)
{
    char name[POOL_STMT_NAME_LEN + 1];
    pool_stmt_name(h1, h2, name);
    struct proto_builder pb;
    proto_builder_init_dynamic(&pb);
    proto_builder_begin(&pb, 'C');
    proto_builder_u8(&pb, 'S');
    proto_builder_cstr(&pb, name);
    proto_builder_end(&pb);
    return emit_builder(c, &c->sc->sock, &pb);
}

/* Make room in the server's statement cache, closing the least recently used one. */
static int
evict_if_full(struct client *c)
{
    struct pool_conn *sc = c->sc;
    int max = c->w->cfg->max_prepared_statements;
    while (max > 0 && sc->stmts.n >= max) {
        int i = pool_stmts_lru(&sc->stmts);
        if (emit_close(c, sc->stmts.v[i].h1, sc->stmts.v[i].h2) != 0 ||
            !pool_reqs_push(&sc->reqs, POOL_REQ_CLOSE, POOL_REQ_INJECTED, 0, 0)) {
            return -1;
        }
        pool_stmts_remove(&sc->stmts, i);
    }
    return 0;
}

/* Make sure the server connection has the client's statement s, preparing it if not. */
static int
ensure_prepared(struct client *c, const struct client_stmt *s)
{
    struct pool_conn *sc = c->sc;
    if (pool_stmts_find(&sc->stmts, s->h1, s->h2) >= 0) {
        return 0;
    }
    /* Closing first makes the Parse succeed even if an earlier DEALLOCATE pgmux could not
     * follow left the statement there after all (closing a missing name is not an error). */
    if (evict_if_full(c) != 0 || emit_close(c, s->h1, s->h2) != 0 ||
        !pool_reqs_push(&sc->reqs, POOL_REQ_CLOSE, POOL_REQ_INJECTED, 0, 0) ||
        emit_parse(c, s->h1, s->h2, s->tail, s->tail_len) != 0 ||
        !pool_reqs_push(&sc->reqs, POOL_REQ_PARSE, POOL_REQ_INJECTED, s->h1, s->h2) ||
        pool_stmts_add(&sc->stmts, s->h1, s->h2) != ST_OK) {
        return -1;
    }
    return 0;
}

/* A statement the server executes to raise our error, so its transaction state follows. */
static char *
refusal_sql(const char *message, const char *hint)
{
#define REFUSAL_FMT                                                                          \
    "DO $pgmux$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = '%s', HINT = '%s'; " \
    "END$pgmux$"
    size_t n = sizeof(REFUSAL_FMT) + strlen(message) + strlen(hint);
    char *s = malloc(n);
    if (s) {
        snprintf(s, n, REFUSAL_FMT, message, hint);
    }
    return s;
#undef REFUSAL_FMT
}

/*
 * What a query text does to the session. Returns NULL when it may run, or the refusal SQL to
 * run instead (owned by the caller), with *err set on out-of-memory.
 */
static char *
judge_sql(struct client *c, const char *sql, size_t len, struct router_scan *sc_out, bool *err)
{
    const struct cfg *cfg = c->w->cfg;
    router_scan_sql(sql, len, cfg_scan_tracked, (void *) (uintptr_t) cfg, sc_out);
    *err = false;
    char *r = NULL;
    if (c->mode == CFG_POOL_STATEMENT && (sc_out->flags & ROUTER_F_BEGIN)) {
        r = refusal_sql("transaction blocks are not allowed in statement pooling mode",
                        "send each statement on its own, or use pool_mode = transaction");
    } else if (!c->is_pinned && (sc_out->flags & ROUTER_F_PINS) && !cfg->pin_session_state) {
        r = refusal_sql("this statement keeps session state, which transaction pooling cannot "
                        "carry to the next server connection",
                        "set pin_session_state = on to keep the server connection for the rest "
                        "of the session, or use pool_mode = session");
    } else if (!c->is_pinned && (sc_out->flags & ROUTER_F_PINS) && routing_on_replica(c)) {
        /* Pinned clients belong on the primary, where their writes can run; this transaction
         * started as a read on a replica and cannot move. */
        r = refusal_sql("this statement keeps session state, which pgmux keeps only on the "
                        "primary, but this transaction runs on a replica",
                        "run it outside the read-only transaction, or start that transaction "
                        "with a /* pgmux: primary */ comment");
    } else {
        return NULL;
    }
    *err = r == NULL;
    return r;
}

static void
pin(struct client *c, uint32_t flags)
{
    if (!c->is_pinned) {
        c->is_pinned = true;
        c->sc->is_session_dirty = true;
        log_debug("client %s user=%s db=%s pinned to server conn %llu (session state 0x%x)",
                  client_addr(c), client_user(c), client_database(c),
                  (unsigned long long) c->sc->id, flags);
    }
}

/* After the scan: bookkeeping that does not depend on rewriting. */
static void
note_scan(struct client *c, const struct router_scan *s)
{
    struct pool_conn *sc = c->sc;
    if ((s->flags & ROUTER_F_PINS) && c->w->cfg->pin_session_state) {
        pin(c, s->flags);
    }
    if (s->flags & (ROUTER_F_SET_TRACKED | ROUTER_F_DISCARD_ALL)) {
        c->needs_capture = true;
    }
    if (s->flags & (ROUTER_F_DISCARD_ALL | ROUTER_F_DEALLOCATE_ALL)) {
        /* The server forgets every prepared statement; so does the client. */
        txn_stmts_clear(c);
        sc->stmts.n = 0;
        if (s->flags & ROUTER_F_DISCARD_ALL) {
            pool_params_clear(&sc->applied);
            sc->synced_hash = 0;
        }
    }
}

/* ---- client -> server ---- */

static int
client_query(struct client *c, struct relay_msg *m)
{
    struct pool_conn *sc = c->sc;
    if (!m->has_full) {
        return RELAY_WAIT;
    }
    size_t len = m->h.len - 4;
    if (len == 0 || m->body[len - 1] != '\0') {
        return RELAY_EPROTOCOL;
    }
    const char *sql = (const char *) m->body;
    struct router_scan s;
    bool err;
    char *refusal = judge_sql(c, sql, len - 1, &s, &err);
    if (err) {
        return RELAY_ENOMEM;
    }
    /* DEALLOCATE of a statement the client made at the protocol level: its server name
     * differs, so the text is rewritten (and the statement prepared first if this server
     * connection lacks it, so the command succeeds as the client expects). */
    struct client_stmt *ds = NULL;
    if (!refusal && (s.flags & ROUTER_F_DEALLOCATE) && s.n_statements == 1 &&
        !s.is_truncated_name) {
        ds = txn_stmt_find(c, s.deallocate_name);
    }
    if ((refusal || ds) && m->pending) {
        free(refusal);
        return RELAY_PAUSE;
    }
    if (!refusal) {
        note_scan(c, &s);
    }
    char text[64];
    const char *q = refusal;
    if (ds) {
        /* The statement must exist for the DEALLOCATE to succeed as the client expects. */
        char name[POOL_STMT_NAME_LEN + 1];
        pool_stmt_name(ds->h1, ds->h2, name);
        if (ensure_prepared(c, ds) != 0) {
            return RELAY_ENOMEM;
        }
        int i = pool_stmts_find(&sc->stmts, ds->h1, ds->h2);
        if (i >= 0) {
            pool_stmts_remove(&sc->stmts, i);
        }
        snprintf(text, sizeof(text), "DEALLOCATE %s", name);
        q = text;
        stmt_remove(c, ds);
    }
    if (!pool_reqs_push(&sc->reqs, POOL_REQ_QUERY, 0, 0, 0)) {
        free(refusal);
        return RELAY_ENOMEM;
    }
    sc->expect_ready++;
    if (!q) {
        return RELAY_OK;
    }
    struct proto_builder pb;
    proto_builder_init_dynamic(&pb);
    proto_build_query(&pb, q);
    free(refusal);
    return emit_builder(c, &sc->sock, &pb) == 0 ? RELAY_DROP : RELAY_ENOMEM;
}

/* Parse(name, tail) to the server, any name. */
static int
emit_parse_named(struct client *c, const char *name, const uint8_t *tail, uint32_t tail_len)
{
    struct proto_builder pb;
    proto_builder_init_dynamic(&pb);
    proto_builder_begin(&pb, 'P');
    proto_builder_cstr(&pb, name);
    proto_builder_bytes(&pb, tail, tail_len);
    proto_builder_end(&pb);
    return emit_builder(c, &c->sc->sock, &pb);
}

/* A Parse body tail (query, no parameter types) for replacement text. */
static uint8_t *
make_tail(const char *sql, uint32_t *len)
{
    size_t n = strlen(sql);
    uint8_t *t = malloc(n + 3);
    if (t) {
        memcpy(t, sql, n + 1);
        t[n + 1] = 0;
        t[n + 2] = 0;
        *len = (uint32_t) n + 3;
    }
    return t;
}

static int
client_parse(struct client *c, struct relay_msg *m)
{
    struct pool_conn *sc = c->sc;
    if (!m->has_full) {
        return RELAY_WAIT;
    }
    struct proto_reader r;
    proto_reader_init(&r, m->body, m->h.len - 4);
    const char *name, *sql;
    size_t sql_len;
    if (proto_reader_cstr(&r, &name, NULL) != ST_OK ||
        proto_reader_cstr(&r, &sql, &sql_len) != ST_OK) {
        return RELAY_EPROTOCOL;
    }
    const uint8_t *tail = (const uint8_t *) sql;
    uint32_t tail_len = (uint32_t) (m->h.len - 4 - (size_t) (tail - m->body));
    bool named = name[0] != '\0';
    int max = c->w->cfg->max_prepared_statements;

    struct router_scan scan;
    bool err;
    char *refusal = judge_sql(c, sql, sql_len, &scan, &err);
    if (err) {
        return RELAY_ENOMEM;
    }
    if (named && max == 0 && !c->is_pinned && !refusal && !c->w->cfg->pin_session_state) {
        refusal = refusal_sql("named prepared statements are disabled "
                              "(max_prepared_statements = 0)",
                              "use unnamed statements, or set max_prepared_statements");
        if (!refusal) {
            return RELAY_ENOMEM;
        }
    }
    /* DEALLOCATE of a protocol-level statement, sent through the extended protocol. */
    struct client_stmt *ds = NULL;
    if (!refusal && (scan.flags & ROUTER_F_DEALLOCATE) && scan.n_statements == 1 &&
        !scan.is_truncated_name) {
        ds = txn_stmt_find(c, scan.deallocate_name);
    }
    struct client_stmt *dup = named && max > 0 ? txn_stmt_find(c, name) : NULL;
    uint8_t *own_tail = NULL;
    if (refusal || ds) {
        char text[64];
        if (ds) {
            char sname[POOL_STMT_NAME_LEN + 1];
            pool_stmt_name(ds->h1, ds->h2, sname);
            snprintf(text, sizeof(text), "DEALLOCATE %s", sname);
        }
        own_tail = make_tail(refusal ? refusal : text, &tail_len);
        free(refusal);
        if (!own_tail) {
            return RELAY_ENOMEM;
        }
        tail = own_tail;
    }

    uint64_t h1 = 0, h2 = 0;
    bool cacheable = named && max > 0;
    if (cacheable) {
        stmt_hash(tail, tail_len, &h1, &h2);
    }
    bool on_server = cacheable && !dup && pool_stmts_find(&sc->stmts, h1, h2) >= 0;
    bool rewrite = own_tail || cacheable;
    if (rewrite && !on_server && m->pending) {
        free(own_tail);
        return RELAY_PAUSE;
    }
    /* From here on the message is handled: no more RELAY_PAUSE. A Bind of the statement in a
     * later transaction routes by the class its text has now. */
    bool is_read = false;
    bool is_classified = true;
    if (cacheable && !dup && !own_tail && c->w->cfg->read_write_split) {
        /* With no replica to read from, the class is worked out when a Bind first needs it */
        is_classified = routing_has_read_node(c);
        is_read = is_classified && routing_text_is_read(c, sql, sql_len);
    }
    if (!own_tail) {
        note_scan(c, &scan);
        if (named && !cacheable) {
            pin(c, 0); /* no statement cache: the statement lives on this connection only */
        }
    }
    sc->is_unsynced = true;
    int action = RELAY_DROP;
    uint8_t flags = 0;
    if (dup) {
        /* PostgreSQL refuses a second Parse of a name (42P05): so does the server here, about
         * the existing statement's server name; the client keeps its first statement. */
        char sname[POOL_STMT_NAME_LEN + 1];
        pool_stmt_name(dup->h1, dup->h2, sname);
        if (ensure_prepared(c, dup) != 0 || emit_parse_named(c, sname, tail, tail_len) != 0) {
            action = RELAY_ENOMEM;
        }
        h1 = h2 = 0;
    } else if (on_server) {
        /* Already there under its server name: pgmux answers ParseComplete itself. */
        if (!stmt_store(c, name, tail, tail_len, h1, h2, is_read, is_classified)) {
            action = RELAY_ENOMEM;
        }
        flags = POOL_REQ_FAKE;
    } else if (cacheable) {
        char sname[POOL_STMT_NAME_LEN + 1];
        pool_stmt_name(h1, h2, sname);
        if (!stmt_store(c, name, tail, tail_len, h1, h2, is_read, is_classified) ||
            evict_if_full(c) != 0 || emit_close(c, h1, h2) != 0 ||
            !pool_reqs_push(&sc->reqs, POOL_REQ_CLOSE, POOL_REQ_INJECTED, 0, 0) ||
            emit_parse_named(c, sname, tail, tail_len) != 0 ||
            pool_stmts_add(&sc->stmts, h1, h2) != ST_OK) {
            action = RELAY_ENOMEM;
        }
    } else if (own_tail) {
        /* Unnamed (or uncached) statement with replaced text. */
        if (ds && (ensure_prepared(c, ds) != 0)) {
            action = RELAY_ENOMEM;
        } else if (emit_parse_named(c, name, tail, tail_len) != 0) {
            action = RELAY_ENOMEM;
        }
        if (ds && action != RELAY_ENOMEM) {
            int i = pool_stmts_find(&sc->stmts, ds->h1, ds->h2);
            if (i >= 0) {
                pool_stmts_remove(&sc->stmts, i);
            }
            stmt_remove(c, ds);
        }
    } else {
        action = RELAY_OK; /* unnamed, untouched */
    }
    free(own_tail);
    if (action == RELAY_ENOMEM || !pool_reqs_push(&sc->reqs, POOL_REQ_PARSE, flags, h1, h2)) {
        return RELAY_ENOMEM;
    }
    return action;
}

/* Bind or Describe('S') naming a client statement: rewrite to the server name. */
static int
client_bind(struct client *c, struct relay_msg *m)
{
    struct pool_conn *sc = c->sc;
    if (!m->has_full) {
        return RELAY_WAIT;
    }
    struct proto_reader r;
    proto_reader_init(&r, m->body, m->h.len - 4);
    const char *portal, *name;
    size_t portal_len;
    if (proto_reader_cstr(&r, &portal, &portal_len) != ST_OK ||
        proto_reader_cstr(&r, &name, NULL) != ST_OK) {
        return RELAY_EPROTOCOL;
    }
    struct client_stmt *s = name[0] ? txn_stmt_find(c, name) : NULL;
    if (!s) {
        sc->is_unsynced = true;
        return pool_reqs_push(&sc->reqs, POOL_REQ_BIND, 0, 0, 0) ? RELAY_OK : RELAY_ENOMEM;
    }
    if (m->pending) {
        return RELAY_PAUSE;
    }
    if (ensure_prepared(c, s) != 0) {
        return RELAY_ENOMEM;
    }
    char sname[POOL_STMT_NAME_LEN + 1];
    pool_stmt_name(s->h1, s->h2, sname);
    const uint8_t *rest = m->body + r.pos;
    size_t rest_len = proto_reader_left(&r);
    struct proto_builder pb;
    proto_builder_init_dynamic(&pb);
    proto_builder_begin(&pb, 'B');
    proto_builder_bytes(&pb, portal, portal_len + 1);
    proto_builder_cstr(&pb, sname);
    proto_builder_bytes(&pb, rest, rest_len);
    proto_builder_end(&pb);
    if (emit_builder(c, &sc->sock, &pb) != 0 ||
        !pool_reqs_push(&sc->reqs, POOL_REQ_BIND, 0, 0, 0)) {
        return RELAY_ENOMEM;
    }
    sc->is_unsynced = true;
    return RELAY_DROP;
}

static int
client_describe_close(struct client *c, struct relay_msg *m)
{
    struct pool_conn *sc = c->sc;
    bool is_close = m->h.type == 'C';
    uint8_t kind = is_close ? POOL_REQ_CLOSE : POOL_REQ_DESCRIBE;
    if (!m->has_full) {
        return RELAY_WAIT;
    }
    struct proto_reader r;
    proto_reader_init(&r, m->body, m->h.len - 4);
    uint8_t what;
    const char *name;
    if (proto_reader_u8(&r, &what) != ST_OK || proto_reader_cstr(&r, &name, NULL) != ST_OK) {
        return RELAY_EPROTOCOL;
    }
    struct client_stmt *s = (what == 'S' && name[0]) ? txn_stmt_find(c, name) : NULL;
    sc->is_unsynced = true;
    if (!s) {
        return pool_reqs_push(&sc->reqs, kind, 0, 0, 0) ? RELAY_OK : RELAY_ENOMEM;
    }
    if (is_close) {
        /* The server statement may serve other clients: it stays; pgmux answers. */
        stmt_remove(c, s);
        return pool_reqs_push(&sc->reqs, POOL_REQ_CLOSE, POOL_REQ_FAKE, 0, 0) ? RELAY_DROP
                                                                              : RELAY_ENOMEM;
    }
    if (m->pending) {
        return RELAY_PAUSE;
    }
    if (ensure_prepared(c, s) != 0) {
        return RELAY_ENOMEM;
    }
    char sname[POOL_STMT_NAME_LEN + 1];
    pool_stmt_name(s->h1, s->h2, sname);
    struct proto_builder pb;
    proto_builder_init_dynamic(&pb);
    proto_builder_begin(&pb, 'D');
    proto_builder_u8(&pb, 'S');
    proto_builder_cstr(&pb, sname);
    proto_builder_end(&pb);
    if (emit_builder(c, &sc->sock, &pb) != 0 ||
        !pool_reqs_push(&sc->reqs, POOL_REQ_DESCRIBE, 0, 0, 0)) {
        return RELAY_ENOMEM;
    }
    return RELAY_DROP;
}

int
txn_client_msg(struct client *c, struct relay_msg *m)
{
    struct pool_conn *sc = c->sc;
    if (sc->is_skipping && m->h.type != 'S' && m->h.type != 'X') {
        /* The server ignores it and answers nothing: pass it on as it is, expect nothing. A
         * Parse or Close here creates or removes nothing, on the server or for the client. */
        return RELAY_OK;
    }
    switch (m->h.type) {
    case 'X':
        return RELAY_TERMINATE;
    case 'Q':
        return client_query(c, m);
    case 'P':
        return client_parse(c, m);
    case 'B':
        return client_bind(c, m);
    case 'D':
    case 'C':
        return client_describe_close(c, m);
    case 'E':
        sc->is_unsynced = true;
        return pool_reqs_push(&sc->reqs, POOL_REQ_EXECUTE, 0, 0, 0) ? RELAY_OK : RELAY_ENOMEM;
    case 'S':
        sc->is_unsynced = false;
        sc->is_skipping = false;
        sc->expect_ready++;
        return pool_reqs_push(&sc->reqs, POOL_REQ_SYNC, 0, 0, 0) ? RELAY_OK : RELAY_ENOMEM;
    case 'F':
        sc->expect_ready++;
        return pool_reqs_push(&sc->reqs, POOL_REQ_QUERY, 0, 0, 0) ? RELAY_OK : RELAY_ENOMEM;
    default: /* Flush, CopyData, CopyDone, CopyFail */
        return RELAY_OK;
    }
}

/* ---- server -> client ---- */

/* Answer requests pgmux did not send, when they reach the head of the queue. */
int
txn_emit_fakes(struct client *c)
{
    struct pool_conn *sc = c->sc;
    struct pool_req *q;
    while ((q = pool_reqs_head(&sc->reqs)) != NULL && (q->flags & POOL_REQ_FAKE)) {
        if (sc->sock.in && buf_pending(sc->sock.in)) {
            return RELAY_PAUSE;
        }
        uint8_t msg[5] = { q->kind == POOL_REQ_PARSE ? '1' : '3', 0, 0, 0, 4 };
        if (relay_emit(c, &c->sock, msg, sizeof(msg)) != 0) {
            return RELAY_ENOMEM;
        }
        if (q->kind == POOL_REQ_PARSE && (q->h1 || q->h2)) {
            stmt_settle(c, q->h1, q->h2, true);
        }
        pool_reqs_pop(&sc->reqs);
    }
    return RELAY_OK;
}

/* After an ErrorResponse in the extended protocol the server skips to the next Sync: the
 * requests in between get no answer, and statements they would have created do not exist. */
static void
skip_to_sync(struct client *c, struct pool_conn *sc)
{
    struct pool_req *q;
    while ((q = pool_reqs_head(&sc->reqs)) != NULL && q->kind != POOL_REQ_SYNC &&
           q->kind != POOL_REQ_QUERY) {
        if (q->kind == POOL_REQ_PARSE && (q->h1 || q->h2)) {
            if (!(q->flags & POOL_REQ_FAKE)) {
                int i = pool_stmts_find(&sc->stmts, q->h1, q->h2);
                if (i >= 0) {
                    pool_stmts_remove(&sc->stmts, i);
                }
            }
            if (!(q->flags & POOL_REQ_INJECTED)) {
                stmt_settle(c, q->h1, q->h2, false);
            }
        }
        pool_reqs_pop(&sc->reqs);
    }
}

int
txn_server_msg(struct client *c, struct relay_msg *m)
{
    struct pool_conn *sc = c->sc;
    if (pool_reqs_owes_fake(&sc->reqs)) {
        /* answers pgmux owes go out first */
        int a = txn_emit_fakes(c);
        if (a != RELAY_OK) {
            return a;
        }
    }
    struct pool_req *q = pool_reqs_head(&sc->reqs);
    uint8_t kind = q ? q->kind : 0xff;
    switch (m->h.type) {
    case 'S': {
        if (!m->has_full) {
            return RELAY_WAIT;
        }
        const char *name, *value;
        if (proto_read_parameter_status(m->body, m->h.len - 4, &name, &value) != ST_OK) {
            return RELAY_EPROTOCOL;
        }
        if (pool_params_set(&sc->params, name, value) != ST_OK) {
            return RELAY_ENOMEM;
        }
        /* The client changed a setting the server reports: it wants it on every server. */
        if (cfg_param_tracked(c->w->cfg, name)) {
            if (pool_params_set(&c->want, name, value) != ST_OK) {
                return RELAY_ENOMEM;
            }
            client_want_rehash(c);
            sc->synced_hash = c->want_hash;
        }
        return RELAY_OK;
    }
    case 'E':
        if (q && kind != POOL_REQ_QUERY && kind != POOL_REQ_SYNC) {
            skip_to_sync(c, sc);
            /* No Sync sent yet: what the client sends until its Sync is ignored too. */
            sc->is_skipping = pool_reqs_head(&sc->reqs) == NULL;
        }
        return RELAY_OK;
    case '1':
    case '3': {
        uint8_t want_kind = m->h.type == '1' ? POOL_REQ_PARSE : POOL_REQ_CLOSE;
        if (kind != want_kind) {
            return RELAY_EPROTOCOL;
        }
        if (q->flags & POOL_REQ_INJECTED) {
            if (!m->has_full) {
                return RELAY_WAIT;
            }
            pool_reqs_pop(&sc->reqs);
            return RELAY_DROP;
        }
        if (kind == POOL_REQ_PARSE && (q->h1 || q->h2)) {
            stmt_settle(c, q->h1, q->h2, true);
        }
        pool_reqs_pop(&sc->reqs);
        return RELAY_OK;
    }
    case '2':
        if (kind != POOL_REQ_BIND) {
            return RELAY_EPROTOCOL;
        }
        pool_reqs_pop(&sc->reqs);
        return RELAY_OK;
    case 'T':
    case 'n':
        if (kind == POOL_REQ_DESCRIBE) {
            pool_reqs_pop(&sc->reqs);
        }
        return RELAY_OK;
    case 'C':
    case 'I':
    case 's':
        if (kind == POOL_REQ_EXECUTE) {
            pool_reqs_pop(&sc->reqs);
        }
        return RELAY_OK;
    case 'Z':
        if (!m->has_full) {
            return RELAY_WAIT;
        }
        if (kind != POOL_REQ_SYNC && kind != POOL_REQ_QUERY) {
            return RELAY_EPROTOCOL;
        }
        if (proto_read_ready(m->body, m->h.len - 4, &sc->txn_status) != ST_OK) {
            return RELAY_EPROTOCOL;
        }
        pool_reqs_pop(&sc->reqs);
        if (sc->expect_ready > 0) {
            sc->expect_ready--;
        }
        return RELAY_OK;
    default:
        return RELAY_OK;
    }
}
