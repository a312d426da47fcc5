/*
 * startup.h - the untyped first packet a client sends: StartupMessage (v3.0), SSLRequest,
 * GSSENCRequest, CancelRequest. Pure; any thread.
 *
 * Reference: PostgreSQL documentation, "Message Formats" (StartupMessage, SSLRequest,
 * GSSENCRequest, CancelRequest) and "Start-up" in "Message Flow".
 */
#ifndef PGMUX_PROTOCOL_STARTUP_H
#define PGMUX_PROTOCOL_STARTUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macros.h"
#include "common/status.h"
#include "protocol/wire.h"

#define PROTO_V3          196608u /* 3 << 16 */
#define PROTO_CANCEL_CODE 80877102u
#define PROTO_SSL_CODE    80877103u
#define PROTO_GSSENC_CODE 80877104u
/* PostgreSQL's MAX_STARTUP_PACKET_LENGTH. */
#define PROTO_STARTUP_MAX_LEN    10000u
#define PROTO_STARTUP_MAX_PARAMS 64

enum proto_startup_kind {
    PROTO_STARTUP_V3,
    PROTO_STARTUP_SSL,
    PROTO_STARTUP_GSSENC,
    PROTO_STARTUP_CANCEL,
};

struct proto_param {
    const char *name; /* borrowed from the packet */
    const char *value;
};

struct proto_startup {
    enum proto_startup_kind kind;
    uint32_t version;     /* protocol version or request code */
    uint32_t cancel_pid;  /* CancelRequest only */
    uint32_t cancel_key;  /* CancelRequest only */
    const char *user;     /* V3: the "user" parameter, borrowed; never NULL after ST_OK */
    const char *database; /* V3: "database", or user when absent (as PostgreSQL does) */
    struct proto_param params[PROTO_STARTUP_MAX_PARAMS]; /* every pair, user/database included */
    int n_params;
};

/**
 * Read the length word of a startup packet from p[0..avail).
 * Returns ST_OK with *len (the whole packet, length word included), ST_INCOMPLETE when fewer
 * than 4 bytes are there, or ST_ECLIENT_PROTOCOL when the length is below 8 or above
 * PROTO_STARTUP_MAX_LEN.
 */
enum status proto_startup_len(const uint8_t *p, size_t avail, uint32_t *len) MUST_CHECK;

/**
 * Parse a whole startup packet p[0..len) (length word included). Results borrow from p.
 * Returns ST_OK; ST_ECLIENT_UNSUPPORTED for a protocol major version other than 3 (which
 * includes unknown request codes); ST_ECLIENT_PROTOCOL for anything
 * malformed: missing "user", a parameter list not ending in an empty name, strings that run past
 * the end, a CancelRequest or SSLRequest of the wrong length, too many parameters. err says why.
 * Note: a minor version above 0 is accepted (kind V3, version kept) so the caller can answer
 * NegotiateProtocolVersion as PostgreSQL does.
 */
enum status proto_startup_parse(const uint8_t *p, size_t len, struct proto_startup *out,
                                struct proto_err *err) MUST_CHECK;

/** Value of a startup parameter, or NULL. */
const char *proto_startup_param(const struct proto_startup *s, const char *name);

/**
 * Walk the parameters of a V3 startup packet p[0..len) that proto_startup_parse accepted, in
 * the order of its params[], without checking again: *off starts at 0 and is advanced. Returns
 * false after the last pair. For a copy of the packet kept past the parse, where keeping the
 * parse (1 KiB of pointers) or repeating it would cost more than the walk.
 */
bool proto_startup_next(const uint8_t *p, size_t len, size_t *off, const char **name,
                        const char **value);

/**
 * Settings in a startup packet's "options" value, read as PostgreSQL reads them (its
 * pg_split_opts and its -c switch): words separated by white space, a backslash taking the
 * next character literally; each setting one of "-c name=value", "-cname=value" or
 * "--name=value", with '-' in a name read as '_'. Other server switches are not settings
 * pgmux can carry to a pooled connection.
 * out (at least strlen(opts) + 1 bytes) receives the settings as "name\0value\0" pairs, *n
 * their number. Returns ST_OK; ST_ECLIENT_UNSUPPORTED for another switch; ST_ECLIENT_PROTOCOL
 * for a word that is no switch or a setting without a name or '=' (PostgreSQL's "-c %s
 * requires a value"). err says why.
 */
enum status proto_options_split(const char *opts, char *out, int *n,
                                struct proto_err *err) MUST_CHECK;

#endif
