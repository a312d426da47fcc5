/*
 * messages.h - builders and readers for the messages pgmux itself must write or understand.
 * Everything else crosses the proxy untouched. Pure; any thread.
 *
 * Builders append one whole message to a proto_builder (sticky failure, check once).
 * Readers take a message body (the bytes after the 5-byte header) and borrow from it.
 *
 * Reference: PostgreSQL documentation, "Message Formats" and "Error and Notice Message Fields".
 */
#ifndef PGMUX_PROTOCOL_MESSAGES_H
#define PGMUX_PROTOCOL_MESSAGES_H

#include <stddef.h>
#include <stdint.h>

#include "common/macros.h"
#include "common/status.h"
#include "protocol/wire.h"

/* Authentication request codes (the Int32 after 'R'). */
#define PROTO_AUTH_OK            0
#define PROTO_AUTH_CLEARTEXT     3
#define PROTO_AUTH_MD5           5
#define PROTO_AUTH_SASL          10
#define PROTO_AUTH_SASL_CONTINUE 11
#define PROTO_AUTH_SASL_FINAL    12

/* ---- builders ---- */

/**
 * ErrorResponse ('E'), or NoticeResponse ('N') when type is 'N'. Writes S and V with
 * severity, C, M, and D/H when not NULL.
 */
void proto_build_error(struct proto_builder *b, uint8_t type, const char *severity,
                       const char *sqlstate, const char *message, const char *detail,
                       const char *hint);
void proto_build_auth_ok(struct proto_builder *b);
void proto_build_auth_cleartext(struct proto_builder *b);
void proto_build_auth_md5(struct proto_builder *b, const uint8_t salt[4]);
/** AuthenticationSASL listing "SCRAM-SHA-256", after "SCRAM-SHA-256-PLUS" when plus. */
void proto_build_auth_sasl(struct proto_builder *b, bool plus);
void proto_build_auth_sasl_continue(struct proto_builder *b, const void *data, size_t len);
void proto_build_auth_sasl_final(struct proto_builder *b, const void *data, size_t len);
void proto_build_parameter_status(struct proto_builder *b, const char *name, const char *value);
void proto_build_backend_key(struct proto_builder *b, uint32_t pid, uint32_t key);
void proto_build_ready(struct proto_builder *b, uint8_t txn_status);
/** NegotiateProtocolVersion ('v'): newest minor supported plus the unrecognised options. */
void proto_build_negotiate_version(struct proto_builder *b, uint32_t newest_minor,
                                   const char *const *unknown, int n_unknown);

/** StartupMessage v3.0 with n (name, value) pairs, for logging in to a server. */
void proto_build_startup(struct proto_builder *b, const char *const *names,
                         const char *const *values, int n);
void proto_build_cancel_request(struct proto_builder *b, uint32_t pid, uint32_t key);
void proto_build_password(struct proto_builder *b, const char *password);
void proto_build_sasl_initial(struct proto_builder *b, const char *mechanism, const void *data,
                              size_t len);
void proto_build_sasl_response(struct proto_builder *b, const void *data, size_t len);
void proto_build_query(struct proto_builder *b, const char *sql);
void proto_build_terminate(struct proto_builder *b);

/* ---- readers (body = message without its 5-byte header) ---- */

struct proto_error_fields {
    const char *severity; /* V if present, else S; borrowed; NULL when absent */
    const char *code;     /* C */
    const char *message;  /* M */
    const char *detail;   /* D */
};

/** ErrorResponse/NoticeResponse body. ST_OK or ST_ESERVER_PROTOCOL. */
enum status proto_read_error(const uint8_t *body, size_t len,
                             struct proto_error_fields *out) MUST_CHECK;

/**
 * Authentication ('R') body: *code is the request code, *rest and *rest_len what follows it
 * (md5 salt, SASL mechanism list or data), borrowed. ST_OK or ST_ESERVER_PROTOCOL.
 */
enum status proto_read_auth(const uint8_t *body, size_t len, uint32_t *code, const uint8_t **rest,
                            size_t *rest_len) MUST_CHECK;

/** Whether a SASL mechanism list (as in AuthenticationSASL) names mech. */
bool proto_sasl_list_has(const uint8_t *list, size_t len, const char *mech);

/** ParameterStatus ('S') body. ST_OK or ST_ESERVER_PROTOCOL. */
enum status proto_read_parameter_status(const uint8_t *body, size_t len, const char **name,
                                        const char **value) MUST_CHECK;

/** BackendKeyData ('K') body. ST_OK or ST_ESERVER_PROTOCOL. */
enum status proto_read_backend_key(const uint8_t *body, size_t len, uint32_t *pid,
                                   uint32_t *key) MUST_CHECK;

/** ReadyForQuery ('Z') body; status is 'I', 'T' or 'E'. ST_OK or ST_ESERVER_PROTOCOL. */
enum status proto_read_ready(const uint8_t *body, size_t len, uint8_t *status) MUST_CHECK;

/** PasswordMessage ('p') body holding a cleartext or md5 password. ST_OK or ST_ECLIENT_PROTOCOL. */
enum status proto_read_password(const uint8_t *body, size_t len, const char **password) MUST_CHECK;

/**
 * SASLInitialResponse ('p') body: mechanism name and the initial response (length -1 means
 * none, reported as *data NULL). ST_OK or ST_ECLIENT_PROTOCOL.
 */
enum status proto_read_sasl_initial(const uint8_t *body, size_t len, const char **mechanism,
                                    const uint8_t **data, size_t *data_len) MUST_CHECK;

#endif
