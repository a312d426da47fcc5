/*
 * md5.h - PostgreSQL's md5 password scheme. Pure; any thread.
 *
 * Reference: PostgreSQL documentation, "Password Authentication" (md5) and
 * AuthenticationMD5Password in "Message Formats".
 */
#ifndef PGMUX_PROTOCOL_MD5_H
#define PGMUX_PROTOCOL_MD5_H

#include <stdbool.h>
#include <stdint.h>

/* "md5" followed by 32 lowercase hex digits. */
#define PROTO_MD5_LEN 35

/** out = "md5" + hex(md5(password || user)), NUL-terminated (36 bytes). */
void proto_md5_hash_password(const char *password, const char *user, char out[PROTO_MD5_LEN + 1]);

/**
 * out = "md5" + hex(md5(hex_part_of(stored) || salt)): what a client sends in answer to
 * AuthenticationMD5Password, given stored = proto_md5_hash_password(...). NUL-terminated.
 */
void proto_md5_salt(const char *stored, const uint8_t salt[4], char out[PROTO_MD5_LEN + 1]);

/** Whether s has the shape of a stored md5 secret ("md5" + 32 hex digits). */
bool proto_md5_is_secret(const char *s);

#endif
