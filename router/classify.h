/*
 * classify.h - statement classification for read/write routing: does a SQL text need the
 * primary (WRITE) or may it run on a replica (READ), what does it do to the transaction, and does
 * it carry a routing hint.
 *
 * The authority is PostgreSQL 15's own grammar through libpg_query. In front of it a lexer
 * settles the plainly obvious texts (a SELECT with no function call, lock clause, INTO or CTE;
 * INSERT/UPDATE/DELETE/MERGE; bare BEGIN/COMMIT/ROLLBACK) without the parser, and a bounded
 * per-worker cache remembers the parser's answers for repeated texts (prepared statements,
 * parameterized queries). The rules are in README.md ("Read/write routing").
 *
 * Does not: decide where a statement goes (router/route.h does, with session facts and node
 * health), track session state that pins a client (router/scan.h), do I/O, log, or lock.
 *
 * Use from a worker (proxy/ glues configuration and topology together, router/ sees neither):
 *
 *     struct router_functions f = {
 *         .primary = (const char *const *) cfg->primary_functions,
 *         .n_primary = cfg->n_primary_functions,
 *         .volatile_fns = (const char *const *) snap->volatile_functions,
 *         .n_volatile = snap->n_volatile_functions,
 *         .primary_generation = cfg->primary_functions_hash,
 *         .volatile_generation = snap->functions_generation,
 *     };
 *     st = router_classify(w->classifier, text, text_len, &f, &c);
 *
 * Threads: a struct router_classifier belongs to one thread (one per worker) and is used only
 * there; it learns that thread's stack bounds on its first parse. libpg_query keeps a memory
 * context per thread and frees it from its own thread-exit destructor, so a worker needs no cleanup
 * call. Nothing may call pg_query_exit() on a thread that then exits: libpg_query 15-4.0.0 leaves
 * the destructor's pointer set and the context is freed twice.
 */
#ifndef PGMUX_ROUTER_CLASSIFY_H
#define PGMUX_ROUTER_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macros.h"
#include "common/status.h"

enum router_class {
    ROUTER_CLASS_READ,  /* may run on a replica */
    ROUTER_CLASS_WRITE, /* needs the primary: writes, may write, unknown or unparsable */
};

enum router_hint {
    ROUTER_HINT_NONE,
    ROUTER_HINT_PRIMARY, /* leading comment: pgmux: primary */
    ROUTER_HINT_REPLICA, /* leading comment: pgmux: replica */
};

enum router_path {
    ROUTER_PATH_FAST,   /* settled by the lexer */
    ROUTER_PATH_PARSER, /* parsed by libpg_query */
    ROUTER_PATH_CACHE,  /* a parser result found in the cache */
};

/*
 * Transaction control seen in the text, over all its statements (router_classification.txn).
 * READ_ONLY: this transaction declared READ ONLY (BEGIN/START ... READ ONLY, SET TRANSACTION
 * READ ONLY, SET transaction_read_only = on); READ_WRITE: declared READ WRITE explicitly.
 * SESSION_RO: SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY or SET
 * default_transaction_read_only = on; SESSION_RW: the same set to READ WRITE/off, RESET of it,
 * RESET ALL or DISCARD ALL. CHAIN: COMMIT/ROLLBACK AND CHAIN, a new transaction with the same
 * characteristics starts at once. PREPARE: PREPARE TRANSACTION, which ends the session's
 * transaction. SERIALIZABLE: BEGIN/START/SET TRANSACTION ISOLATION LEVEL SERIALIZABLE (or SET
 * transaction_isolation), which a hot standby refuses, READ ONLY or not: the transaction needs
 * the primary.
 */
#define ROUTER_TXN_BEGIN        (1u << 0)  /* BEGIN / START TRANSACTION, any options */
#define ROUTER_TXN_READ_ONLY    (1u << 1)  /* see above */
#define ROUTER_TXN_READ_WRITE   (1u << 2)  /* see above */
#define ROUTER_TXN_SESSION_RO   (1u << 3)  /* see above */
#define ROUTER_TXN_SESSION_RW   (1u << 4)  /* see above */
#define ROUTER_TXN_COMMIT       (1u << 5)  /* COMMIT / END */
#define ROUTER_TXN_ROLLBACK     (1u << 6)  /* ROLLBACK / ABORT (not ROLLBACK TO SAVEPOINT) */
#define ROUTER_TXN_CHAIN        (1u << 7)  /* with COMMIT or ROLLBACK: AND CHAIN */
#define ROUTER_TXN_PREPARE      (1u << 8)  /* PREPARE TRANSACTION */
#define ROUTER_TXN_PREPARED     (1u << 9)  /* COMMIT PREPARED / ROLLBACK PREPARED */
#define ROUTER_TXN_SAVEPOINT    (1u << 10) /* SAVEPOINT, RELEASE, ROLLBACK TO */
#define ROUTER_TXN_SERIALIZABLE (1u << 11) /* see above */

/* Whether the text leaves an explicit transaction open, judging by its last transaction-control
 * statement (the server's ReadyForQuery status remains the truth). */
enum router_txn_end {
    ROUTER_TXN_END_UNCHANGED, /* no BEGIN/COMMIT/ROLLBACK/PREPARE TRANSACTION in the text */
    ROUTER_TXN_END_OPEN,      /* last was BEGIN/START, or COMMIT/ROLLBACK AND CHAIN */
    ROUTER_TXN_END_CLOSED,    /* last was COMMIT/END/ROLLBACK/ABORT/PREPARE TRANSACTION */
};

struct router_classification {
    enum router_class cls;        /* the answer, the hint applied */
    enum router_class parsed_cls; /* the answer the statements alone give (hint ignored) */
    enum router_hint hint;
    enum router_path path;
    uint32_t txn; /* ROUTER_TXN_* over all statements */
    enum router_txn_end txn_end;
    bool is_begin_read_only; /* the text's first BEGIN/START opens a READ ONLY transaction
                                (its own options, or a SET TRANSACTION READ ONLY that
                                follows it in the same text) */
    bool is_parse_error;     /* libpg_query refused the text (cls is WRITE) */
    int n_statements;        /* non-empty statements; 0 for "", ";" or only comments */
    const char *reason;      /* static string naming the rule that decided, for logs */
};

/*
 * The functions that make a read a write, beyond the built-in defaults (nextval, setval,
 * currval, lastval, every advisory lock function, pg_notify, txid_current,
 * txid_current_if_assigned, pg_current_xact_id, pg_current_wal_lsn, the large-object writers).
 * Each list holds lower-case names, "name" or "schema.name", sorted by strcmp for bsearch; a bare
 * name matches a call in any schema, a qualified one only that schema's or an unqualified call.
 * Borrowed for the duration of one call.
 */
struct router_functions {
    const char *const *primary; /* proxy.ini primary_functions */
    int n_primary;
    const char *const *volatile_fns; /* user-defined VOLATILE functions from the topology monitor
                                        (topo_snapshot.volatile_functions) */
    int n_volatile;
    uint64_t primary_generation;  /* changes whenever primary changes (configuration reload) */
    uint64_t volatile_generation; /* changes whenever volatile_fns changes
                                     (topo_snapshot.functions_generation) */
};

#define ROUTER_CLASSIFY_CACHE_DEFAULT 4096

struct router_classifier;

/**
 * Create a classifier with a cache of cache_entries parser results (rounded up to a power of
 * two; 0 disables the cache). The cache is allocated here, once: a hit allocates nothing.
 * Returns ST_OK with *out set, or ST_ENOMEM. Any thread; the object then belongs to the thread
 * that classifies with it.
 */
enum status router_classifier_create(size_t cache_entries,
                                     struct router_classifier **out) MUST_CHECK;

/** Free a classifier. Accepts NULL. The owning thread. */
void router_classifier_destroy(struct router_classifier *cl);

/**
 * Classify sql[0..len) (need not be NUL-terminated): a simple-protocol Query, possibly several
 * statements, or one Parse message's text. fns may be NULL (built-in defaults only). Fills *out;
 * out->reason is static. Never fails: anything it cannot settle is a WRITE, including texts
 * nested too deeply to parse on the calling thread's stack (libpg_query recurses over the tree;
 * about 16000 operators and nesting levels fit in a default 8 MiB thread stack). Returns ST_OK, or
 * ST_ENOMEM when a scratch copy of the text could not be made (out then says WRITE). cl may be
 * NULL: no cache. The owning thread of cl.
 */
enum status router_classify(struct router_classifier *cl, const char *sql, size_t len,
                            const struct router_functions *fns,
                            struct router_classification *out) MUST_CHECK;

/** Whether name ("name" or "schema.name", lower case) is on the built-in primary list. */
bool router_function_is_default_primary(const char *name);

/** Cache statistics since creation, for SHOW and the benchmark. */
struct router_classify_stats {
    uint64_t fast;       /* texts settled by the lexer */
    uint64_t parsed;     /* texts given to libpg_query */
    uint64_t cache_hits; /* parser results found in the cache */
};

void router_classifier_stats(const struct router_classifier *cl, struct router_classify_stats *out);

#endif
