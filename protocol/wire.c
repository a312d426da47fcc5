/*
 * wire.c - PostgreSQL v3 message framing: header reading, type-byte validity, a bounds-checked
 * reader and a length-patching builder. See wire.h.
 *
 * Does not: do I/O, log, read errno or know what any message body means (messages.c and
 * startup.c do). The reader never calls strlen on wire data (CONVENTIONS 3.3.1); the builder
 * never needs a hand-computed length (3.3.3).
 *
 * Thread: pure; any thread, on objects the caller owns.
 *
 * Reference: PostgreSQL 15 documentation, 55.6 "Message Data Types" (Int8/Int16/Int32 in
 * network byte order, String NUL-terminated) and 55.7 "Message Formats" (type byte, then an
 * Int32 length that counts itself but not the type byte).
 */
#include "protocol/wire.h"

#include <stdlib.h>
#include <string.h>

/* Marks a builder with no message open. */
#define BUILDER_NO_MSG ((size_t) -1)

/* Smallest allocation a dynamic builder makes; most messages pgmux writes fit in it. */
#define BUILDER_MIN_CAP 256

enum status
proto_header_read(const uint8_t *p, size_t avail, uint32_t max_len, struct proto_header *h)
{
    if (avail < PROTO_HEADER_LEN) {
        return ST_INCOMPLETE;
    }
    uint32_t len = ((uint32_t) p[1] << 24) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 8) |
                   (uint32_t) p[4];
    /* The length counts itself, so anything below 4 cannot be; checked before any allocation
     * (CONVENTIONS 3.2.5). */
    if (len < 4 || len > max_len) {
        return ST_ECLIENT_PROTOCOL;
    }
    h->type = p[0];
    h->len = len;
    return ST_OK;
}

/* 55.7 "Message Formats": every message marked (F) that may follow the startup phase.
 * PasswordMessage, SASLInitialResponse, SASLResponse and GSSResponse share 'p'. */
bool
proto_frontend_type_valid(uint8_t type)
{
    switch (type) {
    case 'B': /* Bind */
    case 'C': /* Close */
    case 'd': /* CopyData */
    case 'c': /* CopyDone */
    case 'f': /* CopyFail */
    case 'D': /* Describe */
    case 'E': /* Execute */
    case 'H': /* Flush */
    case 'F': /* FunctionCall */
    case 'P': /* Parse */
    case 'p': /* PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse */
    case 'Q': /* Query */
    case 'S': /* Sync */
    case 'X': /* Terminate */
        return true;
    default:
        return false;
    }
}

/* 55.7 "Message Formats": every message marked (B). */
bool
proto_backend_type_valid(uint8_t type)
{
    switch (type) {
    case 'R': /* Authentication* */
    case 'K': /* BackendKeyData */
    case '2': /* BindComplete */
    case '3': /* CloseComplete */
    case 'C': /* CommandComplete */
    case 'd': /* CopyData */
    case 'c': /* CopyDone */
    case 'G': /* CopyInResponse */
    case 'H': /* CopyOutResponse */
    case 'W': /* CopyBothResponse */
    case 'D': /* DataRow */
    case 'I': /* EmptyQueryResponse */
    case 'E': /* ErrorResponse */
    case 'V': /* FunctionCallResponse */
    case 'v': /* NegotiateProtocolVersion */
    case 'n': /* NoData */
    case 'N': /* NoticeResponse */
    case 'A': /* NotificationResponse */
    case 't': /* ParameterDescription */
    case 'S': /* ParameterStatus */
    case '1': /* ParseComplete */
    case 's': /* PortalSuspended */
    case 'Z': /* ReadyForQuery */
    case 'T': /* RowDescription */
        return true;
    default:
        return false;
    }
}

/* ---- reader ---- */

void
proto_reader_init(struct proto_reader *r, const void *data, size_t len)
{
    r->data = data;
    r->len = len;
    r->pos = 0;
    r->failed = false;
}

/*
 * Whether n more bytes can be read. Once a get has failed every later get fails too, so a
 * caller that reads several fields and checks only proto_reader_end cannot act on fields that
 * were read from the wrong offset.
 */
static bool
reader_take(struct proto_reader *r, size_t n)
{
    if (r->failed || n > r->len - r->pos) {
        r->failed = true;
        return false;
    }
    return true;
}

enum status
proto_reader_u8(struct proto_reader *r, uint8_t *out)
{
    if (!reader_take(r, 1)) {
        return ST_INCOMPLETE;
    }
    *out = r->data[r->pos];
    r->pos += 1;
    return ST_OK;
}

enum status
proto_reader_u16(struct proto_reader *r, uint16_t *out)
{
    if (!reader_take(r, 2)) {
        return ST_INCOMPLETE;
    }
    const uint8_t *p = r->data + r->pos;
    *out = (uint16_t) (((unsigned) p[0] << 8) | (unsigned) p[1]);
    r->pos += 2;
    return ST_OK;
}

enum status
proto_reader_u32(struct proto_reader *r, uint32_t *out)
{
    if (!reader_take(r, 4)) {
        return ST_INCOMPLETE;
    }
    const uint8_t *p = r->data + r->pos;
    *out = ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) |
           (uint32_t) p[3];
    r->pos += 4;
    return ST_OK;
}

enum status
proto_reader_i32(struct proto_reader *r, int32_t *out)
{
    uint32_t u;
    enum status st = proto_reader_u32(r, &u);
    if (st != ST_OK) {
        return st;
    }
    /* Two's complement without relying on the implementation-defined unsigned-to-signed
     * conversion. */
    *out = u <= (uint32_t) INT32_MAX ? (int32_t) u : -(int32_t) (~u) - 1;
    return ST_OK;
}

enum status
proto_reader_bytes(struct proto_reader *r, size_t n, const uint8_t **out)
{
    if (!reader_take(r, n)) {
        return ST_INCOMPLETE;
    }
    *out = r->data + r->pos;
    r->pos += n;
    return ST_OK;
}

enum status
proto_reader_cstr(struct proto_reader *r, const char **out, size_t *len)
{
    if (r->failed || r->pos == r->len) {
        r->failed = true;
        return ST_INCOMPLETE;
    }
    const uint8_t *start = r->data + r->pos;
    const uint8_t *nul = memchr(start, '\0', r->len - r->pos);
    if (!nul) {
        r->failed = true;
        return ST_INCOMPLETE;
    }
    size_t n = (size_t) (nul - start);
    *out = (const char *) start;
    if (len) {
        *len = n;
    }
    r->pos += n + 1;
    return ST_OK;
}

enum status
proto_reader_end(const struct proto_reader *r)
{
    return (!r->failed && r->pos == r->len) ? ST_OK : ST_DECLINED;
}

/* ---- builder ---- */

void
proto_builder_init_fixed(struct proto_builder *b, void *mem, size_t cap)
{
    b->data = mem;
    b->len = 0;
    b->cap = cap;
    b->msg_start = BUILDER_NO_MSG;
    b->failed = false;
    b->owns = false;
}

void
proto_builder_init_dynamic(struct proto_builder *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->msg_start = BUILDER_NO_MSG;
    b->failed = false;
    b->owns = true;
}

void
proto_builder_fini(struct proto_builder *b)
{
    if (!b) {
        return;
    }
    if (b->owns) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
    b->len = 0;
    b->msg_start = BUILDER_NO_MSG;
}

void
proto_builder_reset(struct proto_builder *b)
{
    b->len = 0;
    b->msg_start = BUILDER_NO_MSG;
    b->failed = false;
}

/* Make room for n more bytes, growing a dynamic builder geometrically; sets failed otherwise. */
static bool
builder_room(struct proto_builder *b, size_t n)
{
    if (b->failed) {
        return false;
    }
    if (n <= b->cap - b->len) {
        return true;
    }
    if (!b->owns || n > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return false;
    }
    size_t need = b->len + n;
    size_t cap = b->cap ? b->cap : BUILDER_MIN_CAP;
    while (cap < need) {
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void
proto_builder_begin(struct proto_builder *b, uint8_t type)
{
    if (type != 0) {
        proto_builder_u8(b, type);
    }
    if (b->failed) {
        return;
    }
    b->msg_start = b->len;
    proto_builder_u32(b, 0); /* patched by proto_builder_end */
}

void
proto_builder_u8(struct proto_builder *b, uint8_t v)
{
    if (!builder_room(b, 1)) {
        return;
    }
    b->data[b->len++] = v;
}

void
proto_builder_u16(struct proto_builder *b, uint16_t v)
{
    if (!builder_room(b, 2)) {
        return;
    }
    b->data[b->len++] = (uint8_t) (v >> 8);
    b->data[b->len++] = (uint8_t) v;
}

static void
put_u32_at(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) (v >> 24);
    p[1] = (uint8_t) (v >> 16);
    p[2] = (uint8_t) (v >> 8);
    p[3] = (uint8_t) v;
}

void
proto_builder_u32(struct proto_builder *b, uint32_t v)
{
    if (!builder_room(b, 4)) {
        return;
    }
    put_u32_at(b->data + b->len, v);
    b->len += 4;
}

void
proto_builder_bytes(struct proto_builder *b, const void *p, size_t n)
{
    if (n == 0 || !builder_room(b, n)) {
        return;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void
proto_builder_cstr(struct proto_builder *b, const char *s)
{
    /* strlen is fine here: s is our own string, not wire data. */
    size_t n = strlen(s) + 1;
    if (!builder_room(b, n)) {
        return;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

void
proto_builder_end(struct proto_builder *b)
{
    if (b->failed) {
        b->msg_start = BUILDER_NO_MSG;
        return;
    }
    ASSERT(b->msg_start != BUILDER_NO_MSG && b->msg_start + 4 <= b->len);
    size_t len = b->len - b->msg_start;
    /* A message PostgreSQL would refuse is a failure here rather than a surprise there. */
    if (len > PROTO_MAX_MSG_LEN) {
        b->failed = true;
    } else {
        put_u32_at(b->data + b->msg_start, (uint32_t) len);
    }
    b->msg_start = BUILDER_NO_MSG;
}
