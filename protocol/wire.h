/*
 * wire.h - PostgreSQL v3 message framing, a bounds-checked reader and a length-patching
 * builder. Pure: no I/O, no logging, no globals; any thread.
 *
 * Reference: PostgreSQL documentation, "Frontend/Backend Protocol", sections "Message Data
 * Types" and "Message Formats" (protocol-message-types.html, protocol-message-formats.html).
 */
#ifndef PGMUX_PROTOCOL_WIRE_H
#define PGMUX_PROTOCOL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macros.h"
#include "common/status.h"

/* Type byte plus the 4-byte length that counts itself but not the type byte. */
#define PROTO_HEADER_LEN 5

/* PostgreSQL's own limit for non-startup messages is 1 GB (PQ_LARGE_MESSAGE_LIMIT - 1). */
#define PROTO_MAX_MSG_LEN (0x3fffffffu)

/* Detail for a refusal, filled by pure code for the caller to log or send (CONVENTIONS 4.1.5). */
struct proto_err {
    char text[160];
};

struct proto_header {
    uint8_t type; /* message type byte */
    uint32_t len; /* length field as on the wire: body length + 4 */
};

/**
 * Read a message header from p[0..avail).
 * Returns ST_OK, ST_INCOMPLETE when fewer than PROTO_HEADER_LEN bytes are available, or
 * ST_ECLIENT_PROTOCOL when the length is below 4 or above max_len (callers reading a server
 * translate that to ST_ESERVER_PROTOCOL).
 */
enum status proto_header_read(const uint8_t *p, size_t avail, uint32_t max_len,
                              struct proto_header *h) MUST_CHECK;

/** Total bytes of the message on the wire, header included. */
static inline uint64_t
proto_header_total(const struct proto_header *h)
{
    return (uint64_t) h->len + 1;
}

/** Whether a frontend (client-to-server) type byte names a v3 message after startup. */
bool proto_frontend_type_valid(uint8_t type);

/** Whether a backend (server-to-client) type byte names a v3 message. */
bool proto_backend_type_valid(uint8_t type);

/* ---- reader: a cursor over (pointer, length); every get checks the remaining length ---- */

struct proto_reader {
    const uint8_t *data;
    size_t len;
    size_t pos;
    bool failed; /* sticky: set by the first get that ran out of bytes */
};

void proto_reader_init(struct proto_reader *r, const void *data, size_t len);

/* Each getter returns ST_OK or ST_INCOMPLETE (and sets failed); on failure *out is untouched. */
enum status proto_reader_u8(struct proto_reader *r, uint8_t *out) MUST_CHECK;
enum status proto_reader_u16(struct proto_reader *r, uint16_t *out) MUST_CHECK;
enum status proto_reader_u32(struct proto_reader *r, uint32_t *out) MUST_CHECK;
enum status proto_reader_i32(struct proto_reader *r, int32_t *out) MUST_CHECK;

/** n raw bytes; *out borrows from the reader's input. */
enum status proto_reader_bytes(struct proto_reader *r, size_t n, const uint8_t **out) MUST_CHECK;

/**
 * A NUL-terminated string found with a bounded search; *out borrows from the input (the NUL is
 * in the input, so *out is a valid C string), *len excludes the NUL (len may be NULL).
 */
enum status proto_reader_cstr(struct proto_reader *r, const char **out, size_t *len) MUST_CHECK;

/** Remaining bytes. */
static inline size_t
proto_reader_left(const struct proto_reader *r)
{
    return r->len - r->pos;
}

/** ST_OK when no getter failed and every byte was consumed, else ST_DECLINED. */
enum status proto_reader_end(const struct proto_reader *r) MUST_CHECK;

/* ---- builder: begin with the type, append, end patches the length (sticky failure) ---- */

struct proto_builder {
    uint8_t *data;
    size_t len;       /* bytes written */
    size_t cap;       /* bytes available */
    size_t msg_start; /* offset of the current message's length field */
    bool failed;      /* sticky: set when a put did not fit or memory ran out */
    bool owns;        /* data is malloc'd by the builder and grows */
};

/** Build into caller memory of cap bytes; never allocates. */
void proto_builder_init_fixed(struct proto_builder *b, void *mem, size_t cap);

/** Build into memory the builder allocates and grows; release with proto_builder_fini. */
void proto_builder_init_dynamic(struct proto_builder *b);

/** Release memory owned by the builder (not caller memory). Accepts a fixed builder. */
void proto_builder_fini(struct proto_builder *b);

/** Forget the bytes written; keep the memory. */
void proto_builder_reset(struct proto_builder *b);

/** Start a message; type 0 starts an untyped one (startup packet, SSLRequest, cancel). */
void proto_builder_begin(struct proto_builder *b, uint8_t type);
void proto_builder_u8(struct proto_builder *b, uint8_t v);
void proto_builder_u16(struct proto_builder *b, uint16_t v);
void proto_builder_u32(struct proto_builder *b, uint32_t v);
void proto_builder_bytes(struct proto_builder *b, const void *p, size_t n);
/** Appends s and its terminating NUL. */
void proto_builder_cstr(struct proto_builder *b, const char *s);
/** Patch the length of the message begun last. */
void proto_builder_end(struct proto_builder *b);

static inline bool
proto_builder_failed(const struct proto_builder *b)
{
    return b->failed;
}

#endif
