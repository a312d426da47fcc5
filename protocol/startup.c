/*
 * startup.c - parse the untyped first packet of a client connection: StartupMessage,
 * SSLRequest, GSSENCRequest and CancelRequest. See startup.h.
 *
 * Does not: decide what to answer (the proxy sends 'S'/'N' to SSLRequest, forwards cancels,
 * answers NegotiateProtocolVersion), copy anything (results borrow from the packet), or accept
 * protocol 2.0, which PostgreSQL 14 dropped too.
 *
 * Thread: pure; any thread.
 *
 * Reference: PostgreSQL 15 documentation, 55.7 "Message Formats" (StartupMessage, SSLRequest,
 * GSSENCRequest, CancelRequest) and 55.2.1 "Start-up"; the checks follow
 * ProcessStartupPacket in src/backend/postmaster/postmaster.c.
 */
#include "protocol/startup.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static enum status startup_fail(struct proto_err *err, enum status st, const char *fmt, ...)
    PRINTF_LIKE(3, 4);

/* Fill err (when given) and return st, so refusals read as one statement. */
static enum status
startup_fail(struct proto_err *err, enum status st, const char *fmt, ...)
{
    va_list ap;
    if (!err) {
        return st;
    }
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
    return st;
}

static uint32_t
get_u32(const uint8_t *p)
{
    return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) |
           (uint32_t) p[3];
}

enum status
proto_startup_len(const uint8_t *p, size_t avail, uint32_t *len)
{
    if (avail < 4) {
        return ST_INCOMPLETE;
    }
    uint32_t n = get_u32(p);
    /* Length word plus the 4-byte version or request code is the least any of them has. */
    if (n < 8 || n > PROTO_STARTUP_MAX_LEN) {
        return ST_ECLIENT_PROTOCOL;
    }
    *len = n;
    return ST_OK;
}

/*
 * StartupMessage body after the version: (name, value) String pairs ended by one empty name,
 * which must be the packet's last byte. Unknown names are kept, not refused: PostgreSQL treats
 * them as run-time parameters (and "_pq_." ones as protocol options), so the caller decides.
 * A name given twice keeps every occurrence in params[]; user and database take the last one,
 * as PostgreSQL's loop does.
 */
static enum status
parse_params(struct proto_reader *r, struct proto_startup *out, struct proto_err *err)
{
    for (;;) {
        const char *name;
        size_t name_len;
        if (proto_reader_cstr(r, &name, &name_len) != ST_OK) {
            return startup_fail(err, ST_ECLIENT_PROTOCOL,
                                "invalid startup packet layout: expected terminator as last byte");
        }
        if (name_len == 0) {
            break;
        }
        const char *value;
        if (proto_reader_cstr(r, &value, NULL) != ST_OK) {
            return startup_fail(err, ST_ECLIENT_PROTOCOL,
                                "invalid startup packet layout: parameter without a value");
        }
        if (out->n_params >= PROTO_STARTUP_MAX_PARAMS) {
            return startup_fail(err, ST_ECLIENT_PROTOCOL,
                                "too many startup parameters (at most %d)",
                                PROTO_STARTUP_MAX_PARAMS);
        }
        out->params[out->n_params].name = name;
        out->params[out->n_params].value = value;
        out->n_params++;
        if (strcmp(name, "user") == 0) {
            out->user = value;
        } else if (strcmp(name, "database") == 0) {
            out->database = value;
        }
    }
    if (proto_reader_end(r) != ST_OK) {
        return startup_fail(err, ST_ECLIENT_PROTOCOL,
                            "invalid startup packet layout: expected terminator as last byte");
    }
    if (!out->user || out->user[0] == '\0') {
        return startup_fail(err, ST_ECLIENT_PROTOCOL,
                            "no PostgreSQL user name specified in startup packet");
    }
    if (!out->database || out->database[0] == '\0') {
        out->database = out->user;
    }
    return ST_OK;
}

enum status
proto_startup_parse(const uint8_t *p, size_t len, struct proto_startup *out, struct proto_err *err)
{
    /* Not the whole struct: zeroing params[] (1 KiB) cost about 200 instructions a login, and
     * only the first n_params entries are ever read. */
    out->kind = PROTO_STARTUP_V3;
    out->version = 0;
    out->cancel_pid = 0;
    out->cancel_key = 0;
    out->user = NULL;
    out->database = NULL;
    out->n_params = 0;
    if (len < 8 || len > PROTO_STARTUP_MAX_LEN) {
        return startup_fail(err, ST_ECLIENT_PROTOCOL, "invalid length of startup packet");
    }
    struct proto_reader r;
    proto_reader_init(&r, p, len);
    uint32_t word, code;
    if (proto_reader_u32(&r, &word) != ST_OK || proto_reader_u32(&r, &code) != ST_OK) {
        return startup_fail(err, ST_ECLIENT_PROTOCOL, "invalid length of startup packet");
    }
    if (word != len) {
        return startup_fail(err, ST_ECLIENT_PROTOCOL,
                            "startup packet length %u does not match the %zu bytes given", word,
                            len);
    }
    out->version = code;

    switch (code) {
    case PROTO_CANCEL_CODE:
        /* Int32 length 16, Int32 code, Int32 process ID, Int32 secret key. */
        out->kind = PROTO_STARTUP_CANCEL;
        if (proto_reader_u32(&r, &out->cancel_pid) != ST_OK ||
            proto_reader_u32(&r, &out->cancel_key) != ST_OK || proto_reader_end(&r) != ST_OK) {
            return startup_fail(err, ST_ECLIENT_PROTOCOL, "invalid length of cancel request");
        }
        return ST_OK;
    case PROTO_SSL_CODE:
    case PROTO_GSSENC_CODE:
        /* Int32 length 8 and the request code, nothing else. */
        out->kind = code == PROTO_SSL_CODE ? PROTO_STARTUP_SSL : PROTO_STARTUP_GSSENC;
        if (proto_reader_end(&r) != ST_OK) {
            return startup_fail(err, ST_ECLIENT_PROTOCOL, "invalid length of %s request",
                                code == PROTO_SSL_CODE ? "SSL" : "GSSENC");
        }
        return ST_OK;
    default:
        break;
    }

    /* StartupMessage: the version's high 16 bits are the major number, the low 16 the minor.
     * Only 3 is spoken. A newer minor is accepted with its version kept, so the caller can
     * answer NegotiateProtocolVersion with the minor we support, as PostgreSQL does; refusing
     * it would break clients that try 3.x first. */
    if ((code >> 16) != 3) {
        return startup_fail(err, ST_ECLIENT_UNSUPPORTED,
                            "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
                            code >> 16, code & 0xffffu);
    }
    out->kind = PROTO_STARTUP_V3;
    return parse_params(&r, out, err);
}

const char *
proto_startup_param(const struct proto_startup *s, const char *name)
{
    /* Last occurrence, so the answer agrees with s->user and s->database. */
    for (int i = s->n_params - 1; i >= 0; i--) {
        if (strcmp(s->params[i].name, name) == 0) {
            return s->params[i].value;
        }
    }
    return NULL;
}

bool
proto_startup_next(const uint8_t *p, size_t len, size_t *off, const char **name, const char **value)
{
    /* Past the length word and the version; the parse proved every string terminated and the
     * list closed by an empty name before len. */
    size_t o = *off < 8 ? 8 : *off;
    if (o >= len || p[o] == '\0') {
        return false;
    }
    *name = (const char *) p + o;
    o += strlen(*name) + 1;
    *value = (const char *) p + o;
    o += strlen(*value) + 1;
    *off = o;
    return true;
}

/* The next word of opts from *pos, unescaped into dst as pg_split_opts does: its length, or -1
 * when only white space is left. */
static long
options_word(const char *opts, size_t *pos, char *dst)
{
    size_t i = *pos, k = 0;
    while (opts[i] && isspace((unsigned char) opts[i])) {
        i++;
    }
    if (!opts[i]) {
        *pos = i;
        return -1;
    }
    bool escaped = false;
    for (; opts[i]; i++) {
        char ch = opts[i];
        if (!escaped && isspace((unsigned char) ch)) {
            break;
        }
        if (!escaped && ch == '\\') {
            escaped = true;
            continue;
        }
        escaped = false;
        dst[k++] = ch;
    }
    *pos = i;
    return (long) k;
}

enum status
proto_options_split(const char *opts, char *out, int *n, struct proto_err *err)
{
    /* Each word is unescaped in place at out + o, then its setting moved to o and split: a
     * setting takes no more room than its word and the separator before the next, so out
     * never outgrows strlen(opts) + 1. */
    size_t pos = 0, o = 0;
    long len;
    *n = 0;
    while ((len = options_word(opts, &pos, out + o)) >= 0) {
        char *w = out + o;
        int shown = len > 64 ? 64 : (int) len;
        size_t skip = 2;
        bool is_long = len >= 2 && w[0] == '-' && w[1] == '-';
        if (!is_long && len >= 2 && w[0] == '-' && w[1] == 'c') {
            if (len == 2) {
                len = options_word(opts, &pos, w);
                if (len < 0) {
                    return startup_fail(err, ST_ECLIENT_PROTOCOL,
                                        "option requires an argument -- 'c' in \"options\"");
                }
                skip = 0;
            }
        } else if (!is_long && len > 0 && w[0] == '-') { /* a lone "\\" is an empty word */
            return startup_fail(err, ST_ECLIENT_UNSUPPORTED,
                                "server switch \"%.*s\" in \"options\" is not supported by "
                                "pgmux (only -c name=value and --name=value)",
                                shown, w);
        } else if (!is_long) {
            return startup_fail(err, ST_ECLIENT_PROTOCOL,
                                "invalid command-line argument for server process: %.*s", shown, w);
        }
        size_t sl = (size_t) len - skip;
        memmove(w, w + skip, sl);
        char *eq = memchr(w, '=', sl);
        shown = sl > 64 ? 64 : (int) sl;
        if (!eq) {
            return startup_fail(err, ST_ECLIENT_PROTOCOL, "%s%.*s requires a value",
                                is_long ? "--" : "-c ", shown, w);
        }
        if (eq == w) {
            return startup_fail(err, ST_ECLIENT_PROTOCOL,
                                "setting \"%.*s\" in \"options\" has no name", shown, w);
        }
        *eq = '\0';
        for (char *p = w; p < eq; p++) {
            if (*p == '-') {
                *p = '_';
            }
        }
        w[sl] = '\0';
        o += sl + 1;
        (*n)++;
    }
    return ST_OK;
}
