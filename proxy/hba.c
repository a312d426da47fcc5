/*
 * hba.c - parse and match hba_file rules (see hba.h).
 *
 * The syntax is PostgreSQL's pg_hba.conf, reduced to what a proxy can honour: connection types
 * local, host, hostssl and hostnossl; database and user columns with comma lists, double-quoted
 * names (never keywords) and the keywords all, sameuser and replication; the address as CIDR
 * (IPv4 or IPv6) or all; methods trust, reject, md5, scram-sha-256 and password. Anything else
 * PostgreSQL accepts (+group, @file, samehost, host names, a separate netmask column, options
 * after the method, include directives) is refused line by line, so a copied pg_hba.conf never
 * means something other than it says.
 *
 * Does not: read files (config.c does, on the main thread), log, or decide what the client is
 * told (client.c). Pure; any thread.
 */
#include "proxy/hba.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define HBA_MAX_FIELDS 8 /* type, database, user, address, method, then options (refused) */

static const char *const method_names[] = { "trust", "reject", "md5", "scram-sha-256", "password" };

const char *
hba_method_name(enum hba_method m)
{
    return (unsigned) m < ARRAY_LEN(method_names) ? method_names[m] : "?";
}

/* ---- tokens ---- */

struct hba_tok {
    char *s;     /* owned, unquoted text */
    bool quoted; /* some part was in double quotes: never a keyword */
    bool comma;  /* followed by a comma: the next token is in the same column */
};

struct hba_line {
    struct hba_tok *t;
    int n;
    int cap;
    int field_start[HBA_MAX_FIELDS + 1]; /* first token of each column */
    int field_len[HBA_MAX_FIELDS + 1];
    int n_fields;
};

struct hba_parser {
    struct hba_rules *out;
    hba_err_fn err;
    void *ctx;
    int problems;
    int line;
    bool oom;
};

static void report(struct hba_parser *p, const char *field, const char *fmt, ...) PRINTF_LIKE(3, 4);

static void
report(struct hba_parser *p, const char *field, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    p->err(p->ctx, p->line, field, buf);
    p->problems++;
}

static void
line_clear(struct hba_line *l)
{
    for (int i = 0; i < l->n; i++) {
        free(l->t[i].s);
    }
    l->n = 0;
    l->n_fields = 0;
}

/*
 * Split one line into tokens. Whitespace separates columns; a comma (outside quotes) joins the
 * next token to the same column, with optional whitespace after it, as PostgreSQL reads lists;
 * '#' outside quotes starts a comment; "" inside quotes is one quote. Returns false (reported)
 * on an unterminated quote or an empty list item.
 */
static bool
tokenize(struct hba_parser *p, struct hba_line *l, const char *s, size_t len)
{
    size_t i = 0;
    bool after_comma = false;
    for (;;) {
        while (i < len && (s[i] == ' ' || s[i] == '\t')) {
            i++;
        }
        if (i >= len || s[i] == '#') {
            if (after_comma) {
                report(p, "line", "a list ends with a comma");
                return false;
            }
            return true;
        }
        char *buf = malloc(len - i + 1);
        if (buf == NULL) {
            p->oom = true;
            return false;
        }
        size_t n = 0;
        bool in_quote = false, quoted = false, comma = false;
        while (i < len) {
            char ch = s[i];
            if (in_quote) {
                if (ch == '"') {
                    if (i + 1 < len && s[i + 1] == '"') {
                        buf[n++] = '"';
                        i += 2;
                        continue;
                    }
                    in_quote = false;
                    i++;
                    continue;
                }
                buf[n++] = ch;
                i++;
                continue;
            }
            if (ch == ' ' || ch == '\t' || ch == '#') {
                break;
            }
            if (ch == ',') {
                comma = true;
                i++;
                break;
            }
            if (ch == '"') {
                in_quote = quoted = true;
                i++;
                continue;
            }
            buf[n++] = ch;
            i++;
        }
        buf[n] = '\0';
        if (in_quote) {
            free(buf);
            report(p, "line", "unterminated double quote");
            return false;
        }
        if (n == 0 && !quoted) {
            free(buf);
            report(p, "line", "empty item in a comma-separated list");
            return false;
        }
        if (l->n == l->cap) {
            int cap = l->cap ? l->cap * 2 : 16;
            struct hba_tok *nt = realloc(l->t, sizeof *nt * (size_t) cap);
            if (nt == NULL) {
                free(buf);
                p->oom = true;
                return false;
            }
            l->t = nt;
            l->cap = cap;
        }
        if (!after_comma) {
            if (l->n_fields == HBA_MAX_FIELDS + 1) {
                free(buf);
                report(p, "line", "too many columns");
                return false;
            }
            l->field_start[l->n_fields] = l->n;
            l->field_len[l->n_fields] = 0;
            l->n_fields++;
        }
        l->t[l->n++] = (struct hba_tok){ .s = buf, .quoted = quoted, .comma = comma };
        l->field_len[l->n_fields - 1]++;
        after_comma = comma;
    }
}

/* ---- columns ---- */

static bool
is_kw(const struct hba_tok *t, const char *kw)
{
    return !t->quoted && strcmp(t->s, kw) == 0;
}

/* A column that must hold exactly one token. */
static const struct hba_tok *
single(struct hba_parser *p, const struct hba_line *l, int field, const char *name)
{
    if (l->field_len[field] != 1) {
        report(p, name, "expected one value, not a list");
        return NULL;
    }
    return &l->t[l->field_start[field]];
}

static bool
parse_names(struct hba_parser *p, const struct hba_line *l, int field, bool is_db,
            struct hba_name **out, int *out_n)
{
    const char *col = is_db ? "database" : "user";
    int n = l->field_len[field];
    struct hba_name *v = calloc((size_t) n, sizeof *v);
    if (v == NULL) {
        p->oom = true;
        return false;
    }
    *out = v;
    *out_n = 0;
    for (int i = 0; i < n; i++) {
        const struct hba_tok *t = &l->t[l->field_start[field] + i];
        struct hba_name *hn = &v[(*out_n)++];
        if (is_kw(t, "all")) {
            hn->keyword = HBA_KW_ALL;
            continue;
        }
        if (is_db && is_kw(t, "sameuser")) {
            hn->keyword = HBA_KW_SAMEUSER;
            continue;
        }
        if (is_db && is_kw(t, "replication")) {
            hn->keyword = HBA_KW_REPLICATION;
            continue;
        }
        if (!t->quoted && (strcmp(t->s, "samerole") == 0 || strcmp(t->s, "samegroup") == 0)) {
            report(p, col, "'%s' is not supported by pgmux (list the names instead)", t->s);
            return false;
        }
        if (!t->quoted && t->s[0] == '+') {
            report(p, col, "group membership ('%.64s') is not supported by pgmux", t->s);
            return false;
        }
        if (!t->quoted && t->s[0] == '@') {
            report(p, col, "file inclusion ('%.64s') is not supported by pgmux", t->s);
            return false;
        }
        if (t->s[0] == '\0' || strlen(t->s) > 63) {
            report(p, col, "a name must be 1..63 bytes");
            return false;
        }
        hn->name = strdup(t->s);
        if (hn->name == NULL) {
            p->oom = true;
            return false;
        }
    }
    return true;
}

static bool
parse_address(struct hba_parser *p, const struct hba_tok *t, struct hba_rule *r)
{
    if (is_kw(t, "all")) {
        r->family = 0;
        return true;
    }
    if (!t->quoted && (strcmp(t->s, "samehost") == 0 || strcmp(t->s, "samenet") == 0)) {
        report(p, "address", "'%s' is not supported by pgmux (write the address/prefix)", t->s);
        return false;
    }
    const char *slash = strchr(t->s, '/');
    if (slash == NULL) {
        report(p, "address",
               "'%.64s': expected address/prefix (CIDR, e.g. 10.0.0.0/8 or ::1/128) or all; a "
               "separate netmask column and host names are not supported",
               t->s);
        return false;
    }
    char host[64];
    size_t hl = (size_t) (slash - t->s);
    if (hl == 0 || hl >= sizeof host) {
        report(p, "address", "'%.64s' is not an IP address/prefix", t->s);
        return false;
    }
    memcpy(host, t->s, hl);
    host[hl] = '\0';
    int max;
    if (inet_pton(AF_INET, host, r->addr) == 1) {
        r->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, r->addr) == 1) {
        r->family = AF_INET6;
        max = 128;
    } else {
        report(p, "address", "'%.64s' is not an IP address/prefix (host names are not supported)",
               t->s);
        return false;
    }
    const char *q = slash + 1;
    int prefix = 0;
    if (*q == '\0') {
        report(p, "address", "'%.64s': missing prefix length after '/'", t->s);
        return false;
    }
    for (; *q; q++) {
        if (*q < '0' || *q > '9' || prefix > max) {
            report(p, "address", "'%.64s': the prefix length must be a number", t->s);
            return false;
        }
        prefix = prefix * 10 + (*q - '0');
    }
    if (prefix > max) {
        char why[96];
        snprintf(why, sizeof why, "prefix length %d is more than %d", prefix, max);
        report(p, "address", "%s", why);
        return false;
    }
    r->prefix = (uint8_t) prefix;
    /* Keep only the network part, so matching compares whole bytes. */
    int bytes = max / 8;
    for (int i = 0; i < bytes; i++) {
        int bits = prefix - i * 8;
        uint8_t mask = bits >= 8 ? 0xff : bits <= 0 ? 0 : (uint8_t) (0xff << (8 - bits));
        r->addr[i] &= mask;
    }
    return true;
}

static void
rule_free(struct hba_rule *r)
{
    for (int i = 0; i < r->n_dbs; i++) {
        free(r->dbs[i].name);
    }
    free(r->dbs);
    for (int i = 0; i < r->n_users; i++) {
        free(r->users[i].name);
    }
    free(r->users);
    memset(r, 0, sizeof *r);
}

/* One tokenized, non-empty line into a rule; false (reported) when it is refused. */
static bool
parse_rule(struct hba_parser *p, const struct hba_line *l, struct hba_rule *r)
{
    memset(r, 0, sizeof *r);
    r->line = p->line;
    const struct hba_tok *t = single(p, l, 0, "type");
    if (t == NULL) {
        return false;
    }
    static const char *const types[] = { "local", "host", "hostssl", "hostnossl" };
    int type = -1;
    for (int i = 0; i < (int) ARRAY_LEN(types); i++) {
        if (is_kw(t, types[i])) {
            type = i;
        }
    }
    if (type < 0) {
        if (is_kw(t, "hostgssenc") || is_kw(t, "hostnogssenc")) {
            report(p, "type", "'%s' is not supported by pgmux (it offers no GSSAPI encryption)",
                   t->s);
        } else if (is_kw(t, "include") || is_kw(t, "include_if_exists") ||
                   is_kw(t, "include_dir")) {
            report(p, "type", "'%s' is not supported by pgmux", t->s);
        } else {
            report(p, "type",
                   "'%.64s' is not a connection type (expected local, host, hostssl or hostnossl)",
                   t->s);
        }
        return false;
    }
    r->type = (uint8_t) type;
    int want = type == HBA_LOCAL ? 4 : 5; /* columns up to and including the method */
    if (l->n_fields < want) {
        report(p, "line", "%s",
               type == HBA_LOCAL ? "expected: local DATABASE USER METHOD"
                                 : "expected: TYPE DATABASE USER ADDRESS METHOD");
        return false;
    }
    if (!parse_names(p, l, 1, true, &r->dbs, &r->n_dbs) ||
        !parse_names(p, l, 2, false, &r->users, &r->n_users)) {
        return false;
    }
    if (type != HBA_LOCAL) {
        t = single(p, l, 3, "address");
        if (t == NULL || !parse_address(p, t, r)) {
            return false;
        }
    }
    t = single(p, l, want - 1, "method");
    if (t == NULL) {
        return false;
    }
    int method = -1;
    for (int i = 0; i < (int) ARRAY_LEN(method_names); i++) {
        if (is_kw(t, method_names[i])) {
            method = i;
        }
    }
    if (method < 0) {
        report(p, "method",
               "'%.64s' is not supported by pgmux (expected trust, reject, md5, scram-sha-256 or "
               "password)",
               t->s);
        return false;
    }
    r->method = (uint8_t) method;
    if (l->n_fields > want) {
        report(p, "options", "'%.64s': authentication options are not supported by pgmux",
               l->t[l->field_start[want]].s);
        return false;
    }
    return true;
}

int
hba_parse(const char *text, size_t len, struct hba_rules *out, hba_err_fn err, void *ctx)
{
    struct hba_parser p = { .out = out, .err = err, .ctx = ctx };
    struct hba_line l = { 0 };
    int cap = 0;
    size_t pos = 0;
    while (pos < len && !p.oom) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t) (nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        p.line++;
        if (n > 0 && s[n - 1] == '\r') {
            n--;
        }
        if (memchr(s, '\0', n) != NULL) {
            report(&p, "line", "line contains a NUL byte");
            continue;
        }
        line_clear(&l);
        if (!tokenize(&p, &l, s, n) || l.n_fields == 0) {
            continue;
        }
        if (out->n == cap) {
            int ncap = cap ? cap * 2 : 16;
            struct hba_rule *nv = realloc(out->v, sizeof *nv * (size_t) ncap);
            if (nv == NULL) {
                p.oom = true;
                break;
            }
            out->v = nv;
            cap = ncap;
        }
        struct hba_rule *r = &out->v[out->n];
        if (parse_rule(&p, &l, r)) {
            out->n++;
        } else {
            rule_free(r);
        }
    }
    line_clear(&l);
    free(l.t);
    if (p.oom) {
        p.line = 0;
        report(&p, "file", "out of memory");
    }
    return p.problems;
}

void
hba_rules_free(struct hba_rules *r)
{
    for (int i = 0; i < r->n; i++) {
        rule_free(&r->v[i]);
    }
    free(r->v);
    r->v = NULL;
    r->n = 0;
}

/* ---- matching ---- */

static bool
names_match(const struct hba_name *v, int n, const char *name, const char *user)
{
    for (int i = 0; i < n; i++) {
        switch (v[i].keyword) {
        case HBA_KW_ALL:
            return true;
        case HBA_KW_SAMEUSER:
            if (strcmp(name, user) == 0) {
                return true;
            }
            break;
        case HBA_KW_REPLICATION:
            break;
        default:
            if (strcmp(v[i].name, name) == 0) {
                return true;
            }
        }
    }
    return false;
}

static bool
addr_match(const struct hba_rule *r, int family, const uint8_t *addr)
{
    if (r->family == 0) {
        return true;
    }
    if (r->family != family) {
        return false;
    }
    int full = r->prefix / 8, rest = r->prefix % 8;
    if (memcmp(r->addr, addr, (size_t) full) != 0) {
        return false;
    }
    if (rest == 0) {
        return true;
    }
    uint8_t mask = (uint8_t) (0xff << (8 - rest));
    return (addr[full] & mask) == r->addr[full];
}

const struct hba_rule *
hba_match(const struct hba_rules *r, const struct hba_conn *conn)
{
    int family = conn->family;
    const uint8_t *addr = conn->addr;
    static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (!conn->is_local && family == AF_INET6 && memcmp(addr, v4mapped, 12) == 0) {
        family = AF_INET;
        addr += 12;
    }
    for (int i = 0; i < r->n; i++) {
        const struct hba_rule *h = &r->v[i];
        switch (h->type) {
        case HBA_LOCAL:
            if (!conn->is_local) {
                continue;
            }
            break;
        case HBA_HOST:
            if (conn->is_local) {
                continue;
            }
            break;
        case HBA_HOSTSSL:
            if (conn->is_local || !conn->is_tls) {
                continue;
            }
            break;
        case HBA_HOSTNOSSL:
            if (conn->is_local || conn->is_tls) {
                continue;
            }
            break;
        }
        if (!names_match(h->dbs, h->n_dbs, conn->database, conn->user) ||
            !names_match(h->users, h->n_users, conn->user, conn->user)) {
            continue;
        }
        if (!conn->is_local && !addr_match(h, family, addr)) {
            continue;
        }
        return h;
    }
    return NULL;
}
