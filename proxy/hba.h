/*
 * hba.h - access rules in a subset of PostgreSQL's pg_hba.conf syntax (hba_file): which
 * connection type, database, user and client address may log in, and how it must
 * authenticate. The first matching line wins; no matching line means the client is refused.
 *
 * The rules are part of the configuration snapshot (struct cfg), so a reload that builds a new
 * snapshot re-reads them with everything else. Parsing and matching are pure: no I/O, no
 * logging, no globals. Any thread.
 *
 * Reference: PostgreSQL 15 documentation, 21.1 "The pg_hba.conf File".
 */
#ifndef PGMUX_PROXY_HBA_H
#define PGMUX_PROXY_HBA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macros.h"

enum hba_conn_type {
    HBA_LOCAL,     /* a Unix-domain socket */
    HBA_HOST,      /* TCP, with or without TLS */
    HBA_HOSTSSL,   /* TCP with TLS only */
    HBA_HOSTNOSSL, /* TCP without TLS only */
};

enum hba_method {
    HBA_TRUST,
    HBA_REJECT,
    HBA_MD5,
    HBA_SCRAM,
    HBA_PASSWORD, /* cleartext password, checked against any form of secret */
};

/* One name in a database or user column. */
struct hba_name {
    char *name;      /* owned; NULL for a keyword */
    uint8_t keyword; /* HBA_KW_* */
};

#define HBA_KW_NONE     0
#define HBA_KW_ALL      1 /* every database or user */
#define HBA_KW_SAMEUSER 2 /* database column: the database named like the user */
#define HBA_KW_REPLICATION                                             \
    3 /* database column: replication connections, which pgmux refuses \
         anyway, so it matches nothing */

struct hba_rule {
    int line;       /* in hba_file, for messages */
    uint8_t type;   /* enum hba_conn_type */
    uint8_t method; /* enum hba_method */
    uint8_t family; /* AF_INET or AF_INET6 for an address; 0 = all (or a local line) */
    uint8_t prefix; /* CIDR prefix length */
    uint8_t addr[16];
    struct hba_name *dbs; /* [n_dbs] */
    int n_dbs;
    struct hba_name *users; /* [n_users] */
    int n_users;
};

struct hba_rules {
    struct hba_rule *v; /* in file order */
    int n;
};

/* Called once per problem: line in the file, the column ("database", "address", ...) and why. */
typedef void (*hba_err_fn)(void *ctx, int line, const char *field, const char *reason);

/**
 * Parse hba_file text (text[0..len), need not be NUL-terminated) into out (zeroed by the
 * caller, or freshly freed). Every bad line is reported through err and skipped; returns the
 * number of problems (0 = valid). out owns what it holds even when problems were found: free it
 * with hba_rules_free. Memory exhaustion is reported as a problem on line 0.
 */
int hba_parse(const char *text, size_t len, struct hba_rules *out, hba_err_fn err, void *ctx);

/** Free what hba_parse stored; out becomes empty. Accepts an empty set. */
void hba_rules_free(struct hba_rules *r);

/* What is known about a connection when its startup packet has been read. */
struct hba_conn {
    bool is_local;       /* Unix-domain socket */
    bool is_tls;         /* the connection is encrypted with TLS */
    int family;          /* AF_INET or AF_INET6 (IPv4-mapped IPv6 addresses are read as IPv4) */
    const uint8_t *addr; /* 4 or 16 bytes, network order */
    const char *database;
    const char *user;
};

/** The first rule matching conn, or NULL when none does. Pure; any thread. */
const struct hba_rule *hba_match(const struct hba_rules *r, const struct hba_conn *conn);

/** "trust", "reject", "md5", "scram-sha-256", "password". */
const char *hba_method_name(enum hba_method m);

#endif
