/*
 * messages.c - builders and readers for the few messages pgmux writes or must understand.
 * See messages.h.
 *
 * Does not: frame messages (wire.c), parse startup packets (startup.c), do SCRAM or md5 math,
 * or choose SQLSTATEs (proxy/ does, from protocol/sqlstate.h). Builders append to a
 * proto_builder whose sticky failure the caller checks once; readers take a message body and
 * their string results borrow from it (they point into the body, whose NULs terminate them).
 *
 * Thread: pure; any thread.
 *
 * Reference: PostgreSQL 15 documentation, 55.7 "Message Formats" (cited per message below) and
 * 55.8 "Error and Notice Message Fields".
 */
#include "protocol/messages.h"

#include <string.h>

#include "protocol/startup.h"

/* ---- builders ---- */

/* ErrorResponse ('E') / NoticeResponse ('N'), 55.7; fields per 55.8. V is the never-localized
 * severity that PostgreSQL 9.6+ sends beside S; clients prefer it when present. */
void
proto_build_error(struct proto_builder *b, uint8_t type, const char *severity, const char *sqlstate,
                  const char *message, const char *detail, const char *hint)
{
    proto_builder_begin(b, type);
    proto_builder_u8(b, 'S');
    proto_builder_cstr(b, severity);
    proto_builder_u8(b, 'V');
    proto_builder_cstr(b, severity);
    proto_builder_u8(b, 'C');
    proto_builder_cstr(b, sqlstate);
    proto_builder_u8(b, 'M');
    proto_builder_cstr(b, message);
    if (detail) {
        proto_builder_u8(b, 'D');
        proto_builder_cstr(b, detail);
    }
    if (hint) {
        proto_builder_u8(b, 'H');
        proto_builder_cstr(b, hint);
    }
    proto_builder_u8(b, 0);
    proto_builder_end(b);
}

/* AuthenticationOk / CleartextPassword: 'R', Int32 code, 55.7. */
static void
build_auth_code(struct proto_builder *b, uint32_t code)
{
    proto_builder_begin(b, 'R');
    proto_builder_u32(b, code);
    proto_builder_end(b);
}

void
proto_build_auth_ok(struct proto_builder *b)
{
    build_auth_code(b, PROTO_AUTH_OK);
}

void
proto_build_auth_cleartext(struct proto_builder *b)
{
    build_auth_code(b, PROTO_AUTH_CLEARTEXT);
}

/* AuthenticationMD5Password: 'R', Int32 5, Byte4 salt, 55.7. */
void
proto_build_auth_md5(struct proto_builder *b, const uint8_t salt[4])
{
    proto_builder_begin(b, 'R');
    proto_builder_u32(b, PROTO_AUTH_MD5);
    proto_builder_bytes(b, salt, 4);
    proto_builder_end(b);
}

/* AuthenticationSASL: 'R', Int32 10, mechanism Strings ended by an empty one, 55.7; the
 * channel-binding variant first, as PostgreSQL lists them over TLS (55.3 "SASL
 * Authentication"). */
void
proto_build_auth_sasl(struct proto_builder *b, bool plus)
{
    proto_builder_begin(b, 'R');
    proto_builder_u32(b, PROTO_AUTH_SASL);
    if (plus) {
        proto_builder_cstr(b, "SCRAM-SHA-256-PLUS");
    }
    proto_builder_cstr(b, "SCRAM-SHA-256");
    proto_builder_u8(b, 0);
    proto_builder_end(b);
}

/* AuthenticationSASLContinue / AuthenticationSASLFinal: 'R', Int32 11 or 12, Byten data. */
static void
build_auth_data(struct proto_builder *b, uint32_t code, const void *data, size_t len)
{
    proto_builder_begin(b, 'R');
    proto_builder_u32(b, code);
    proto_builder_bytes(b, data, len);
    proto_builder_end(b);
}

void
proto_build_auth_sasl_continue(struct proto_builder *b, const void *data, size_t len)
{
    build_auth_data(b, PROTO_AUTH_SASL_CONTINUE, data, len);
}

void
proto_build_auth_sasl_final(struct proto_builder *b, const void *data, size_t len)
{
    build_auth_data(b, PROTO_AUTH_SASL_FINAL, data, len);
}

/* ParameterStatus: 'S', String name, String value, 55.7. */
void
proto_build_parameter_status(struct proto_builder *b, const char *name, const char *value)
{
    proto_builder_begin(b, 'S');
    proto_builder_cstr(b, name);
    proto_builder_cstr(b, value);
    proto_builder_end(b);
}

/* BackendKeyData: 'K', Int32 process ID, Int32 secret key, 55.7. */
void
proto_build_backend_key(struct proto_builder *b, uint32_t pid, uint32_t key)
{
    proto_builder_begin(b, 'K');
    proto_builder_u32(b, pid);
    proto_builder_u32(b, key);
    proto_builder_end(b);
}

/* ReadyForQuery: 'Z', Byte1 transaction status, 55.7. */
void
proto_build_ready(struct proto_builder *b, uint8_t txn_status)
{
    proto_builder_begin(b, 'Z');
    proto_builder_u8(b, txn_status);
    proto_builder_end(b);
}

/* NegotiateProtocolVersion: 'v', Int32 newest minor, Int32 count, String option names, 55.7. */
void
proto_build_negotiate_version(struct proto_builder *b, uint32_t newest_minor,
                              const char *const *unknown, int n_unknown)
{
    if (n_unknown < 0) {
        b->failed = true;
        return;
    }
    proto_builder_begin(b, 'v');
    proto_builder_u32(b, newest_minor);
    proto_builder_u32(b, (uint32_t) n_unknown);
    for (int i = 0; i < n_unknown; i++) {
        proto_builder_cstr(b, unknown[i]);
    }
    proto_builder_end(b);
}

/* StartupMessage: untyped, Int32 length, Int32 196608, (String, String)* pairs, Byte1 0, 55.7. */
void
proto_build_startup(struct proto_builder *b, const char *const *names, const char *const *values,
                    int n)
{
    proto_builder_begin(b, 0);
    proto_builder_u32(b, PROTO_V3);
    for (int i = 0; i < n; i++) {
        proto_builder_cstr(b, names[i]);
        proto_builder_cstr(b, values[i]);
    }
    proto_builder_u8(b, 0);
    proto_builder_end(b);
}

/* CancelRequest: untyped, Int32 16, Int32 80877102, Int32 process ID, Int32 secret key, 55.7. */
void
proto_build_cancel_request(struct proto_builder *b, uint32_t pid, uint32_t key)
{
    proto_builder_begin(b, 0);
    proto_builder_u32(b, PROTO_CANCEL_CODE);
    proto_builder_u32(b, pid);
    proto_builder_u32(b, key);
    proto_builder_end(b);
}

/* PasswordMessage: 'p', String password (cleartext or md5-hashed), 55.7. */
void
proto_build_password(struct proto_builder *b, const char *password)
{
    proto_builder_begin(b, 'p');
    proto_builder_cstr(b, password);
    proto_builder_end(b);
}

/* SASLInitialResponse: 'p', String mechanism, Int32 length of the initial response (-1 for
 * none), Byten response, 55.7. data NULL means no initial response. */
void
proto_build_sasl_initial(struct proto_builder *b, const char *mechanism, const void *data,
                         size_t len)
{
    if (data && len > (size_t) INT32_MAX) {
        b->failed = true;
        return;
    }
    proto_builder_begin(b, 'p');
    proto_builder_cstr(b, mechanism);
    if (data) {
        proto_builder_u32(b, (uint32_t) len);
        proto_builder_bytes(b, data, len);
    } else {
        proto_builder_u32(b, UINT32_MAX); /* Int32 -1 */
    }
    proto_builder_end(b);
}

/* SASLResponse: 'p', Byten data, 55.7. */
void
proto_build_sasl_response(struct proto_builder *b, const void *data, size_t len)
{
    proto_builder_begin(b, 'p');
    proto_builder_bytes(b, data, len);
    proto_builder_end(b);
}

/* Query: 'Q', String query, 55.7. */
void
proto_build_query(struct proto_builder *b, const char *sql)
{
    proto_builder_begin(b, 'Q');
    proto_builder_cstr(b, sql);
    proto_builder_end(b);
}

/* Terminate: 'X', Int32 4, 55.7. */
void
proto_build_terminate(struct proto_builder *b)
{
    proto_builder_begin(b, 'X');
    proto_builder_end(b);
}

/* ---- readers ---- */

/* ErrorResponse / NoticeResponse body, 55.7: (Byte1 field code, String value)* then Byte1 0.
 * Field codes we do not use are skipped, as 55.8 tells frontends to do with unknown ones. */
enum status
proto_read_error(const uint8_t *body, size_t len, struct proto_error_fields *out)
{
    struct proto_reader r;
    const char *sev_s = NULL;
    const char *sev_v = NULL;
    memset(out, 0, sizeof(*out));
    proto_reader_init(&r, body, len);
    for (;;) {
        uint8_t code;
        const char *value;
        if (proto_reader_u8(&r, &code) != ST_OK) {
            return ST_ESERVER_PROTOCOL;
        }
        if (code == 0) {
            break;
        }
        if (proto_reader_cstr(&r, &value, NULL) != ST_OK) {
            return ST_ESERVER_PROTOCOL;
        }
        switch (code) {
        case 'S':
            sev_s = value;
            break;
        case 'V':
            sev_v = value;
            break;
        case 'C':
            out->code = value;
            break;
        case 'M':
            out->message = value;
            break;
        case 'D':
            out->detail = value;
            break;
        default:
            break;
        }
    }
    if (proto_reader_end(&r) != ST_OK) {
        return ST_ESERVER_PROTOCOL;
    }
    out->severity = sev_v ? sev_v : sev_s;
    return ST_OK;
}

/* Whether a mechanism list (Strings ended by an empty String) is well formed and exactly
 * fills len bytes; *found tells whether mech is in it. */
static bool
sasl_list_scan(const uint8_t *list, size_t len, const char *mech, bool *found)
{
    struct proto_reader r;
    *found = false;
    proto_reader_init(&r, list, len);
    for (;;) {
        const char *name;
        size_t name_len;
        if (proto_reader_cstr(&r, &name, &name_len) != ST_OK) {
            return false;
        }
        if (name_len == 0) {
            break;
        }
        if (mech && strcmp(name, mech) == 0) {
            *found = true;
        }
    }
    return proto_reader_end(&r) == ST_OK;
}

/* Authentication* ('R') body, 55.7: Int32 request code, then what that code carries. The
 * codes pgmux acts on have their shape checked; others (GSS, SSPI) pass with their data. */
enum status
proto_read_auth(const uint8_t *body, size_t len, uint32_t *code, const uint8_t **rest,
                size_t *rest_len)
{
    struct proto_reader r;
    uint32_t c;
    proto_reader_init(&r, body, len);
    if (proto_reader_u32(&r, &c) != ST_OK) {
        return ST_ESERVER_PROTOCOL;
    }
    size_t n = proto_reader_left(&r);
    const uint8_t *p = body + r.pos;
    bool found;
    switch (c) {
    case PROTO_AUTH_OK:
    case PROTO_AUTH_CLEARTEXT:
        if (n != 0) {
            return ST_ESERVER_PROTOCOL;
        }
        break;
    case PROTO_AUTH_MD5:
        if (n != 4) {
            return ST_ESERVER_PROTOCOL;
        }
        break;
    case PROTO_AUTH_SASL:
        if (!sasl_list_scan(p, n, NULL, &found)) {
            return ST_ESERVER_PROTOCOL;
        }
        break;
    default:
        break;
    }
    *code = c;
    *rest = p;
    *rest_len = n;
    return ST_OK;
}

bool
proto_sasl_list_has(const uint8_t *list, size_t len, const char *mech)
{
    bool found;
    return sasl_list_scan(list, len, mech, &found) && found;
}

/* ParameterStatus ('S') body, 55.7: String name, String value. */
enum status
proto_read_parameter_status(const uint8_t *body, size_t len, const char **name, const char **value)
{
    struct proto_reader r;
    const char *n, *v;
    proto_reader_init(&r, body, len);
    if (proto_reader_cstr(&r, &n, NULL) != ST_OK || proto_reader_cstr(&r, &v, NULL) != ST_OK ||
        proto_reader_end(&r) != ST_OK) {
        return ST_ESERVER_PROTOCOL;
    }
    *name = n;
    *value = v;
    return ST_OK;
}

/* BackendKeyData ('K') body, 55.7: Int32 process ID, Int32 secret key. */
enum status
proto_read_backend_key(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key)
{
    struct proto_reader r;
    uint32_t p, k;
    proto_reader_init(&r, body, len);
    if (proto_reader_u32(&r, &p) != ST_OK || proto_reader_u32(&r, &k) != ST_OK ||
        proto_reader_end(&r) != ST_OK) {
        return ST_ESERVER_PROTOCOL;
    }
    *pid = p;
    *key = k;
    return ST_OK;
}

/* ReadyForQuery ('Z') body, 55.7: Byte1 'I' idle, 'T' in a transaction, 'E' failed one. */
enum status
proto_read_ready(const uint8_t *body, size_t len, uint8_t *status)
{
    struct proto_reader r;
    uint8_t s;
    proto_reader_init(&r, body, len);
    if (proto_reader_u8(&r, &s) != ST_OK || proto_reader_end(&r) != ST_OK) {
        return ST_ESERVER_PROTOCOL;
    }
    if (s != 'I' && s != 'T' && s != 'E') {
        return ST_ESERVER_PROTOCOL;
    }
    *status = s;
    return ST_OK;
}

/* PasswordMessage ('p') body, 55.7: String password. */
enum status
proto_read_password(const uint8_t *body, size_t len, const char **password)
{
    struct proto_reader r;
    const char *p;
    proto_reader_init(&r, body, len);
    if (proto_reader_cstr(&r, &p, NULL) != ST_OK || proto_reader_end(&r) != ST_OK) {
        return ST_ECLIENT_PROTOCOL;
    }
    *password = p;
    return ST_OK;
}

/* SASLInitialResponse ('p') body, 55.7: String mechanism, Int32 length (-1: no initial
 * response), Byten response. */
enum status
proto_read_sasl_initial(const uint8_t *body, size_t len, const char **mechanism,
                        const uint8_t **data, size_t *data_len)
{
    struct proto_reader r;
    const char *mech;
    int32_t n;
    const uint8_t *d = NULL;
    proto_reader_init(&r, body, len);
    if (proto_reader_cstr(&r, &mech, NULL) != ST_OK || proto_reader_i32(&r, &n) != ST_OK) {
        return ST_ECLIENT_PROTOCOL;
    }
    if (n < -1) {
        return ST_ECLIENT_PROTOCOL;
    }
    if (n >= 0 && proto_reader_bytes(&r, (size_t) n, &d) != ST_OK) {
        return ST_ECLIENT_PROTOCOL;
    }
    if (proto_reader_end(&r) != ST_OK) {
        return ST_ECLIENT_PROTOCOL;
    }
    *mechanism = mech;
    *data = d;
    *data_len = n >= 0 ? (size_t) n : 0;
    return ST_OK;
}
