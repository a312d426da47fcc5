/*
 * digest.h - the two digests logins use (MD5 for md5 passwords, SHA-256 for SCRAM and the
 * derived-key cache), fetched from OpenSSL once per process, each with one hashing context
 * per thread that is reused from call to call.
 *
 * Why: OpenSSL 3 looks EVP_md5()/EVP_sha256() up in its provider tables at every
 * EVP_DigestInit, which for the few dozen bytes a login hashes was most of the cost; reusing
 * the EVP_MD_CTX saves its allocation too. OpenSSL 3.0 (Debian 12) still rebuilds the
 * provider's own context at each EVP_DigestInit_ex2, about 2,000 instructions against about
 * 600 for hashing one block (README "A new connection per transaction").
 *
 * Thread: any; each thread has its own contexts, freed when it exits.
 */
#ifndef PGMUX_PROTOCOL_DIGEST_H
#define PGMUX_PROTOCOL_DIGEST_H

#include <openssl/evp.h>

enum proto_digest {
    PROTO_DIGEST_MD5,
    PROTO_DIGEST_SHA256,
    PROTO_DIGEST_N
};

/** The digest, fetched once; NULL when this OpenSSL cannot provide it (FIPS-only and MD5). */
const EVP_MD *proto_digest_md(enum proto_digest d);

/**
 * This thread's context for d, initialized and ready for EVP_DigestUpdate; NULL on failure.
 * It stays the thread's: do not free it, and finish with it (EVP_DigestFinal_ex) before
 * anything else asks for the same digest's context.
 */
EVP_MD_CTX *proto_digest_begin(enum proto_digest d);

#endif
