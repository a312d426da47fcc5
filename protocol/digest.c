/*
 * digest.c - see digest.h.
 */
#include "protocol/digest.h"

#include <pthread.h>
#include <stdlib.h>

static EVP_MD *mds[PROTO_DIGEST_N]; /* never freed: one per process */
static pthread_once_t mds_once = PTHREAD_ONCE_INIT;
static pthread_key_t ctx_key; /* -> EVP_MD_CTX *[PROTO_DIGEST_N], freed at thread exit */
static int ctx_key_err;

static void
thread_ctxs_free(void *p)
{
    EVP_MD_CTX **ctxs = p;
    for (int i = 0; i < PROTO_DIGEST_N; i++) {
        EVP_MD_CTX_free(ctxs[i]);
    }
    free(ctxs);
}

static void
digest_init(void)
{
    mds[PROTO_DIGEST_MD5] = EVP_MD_fetch(NULL, "MD5", NULL);
    mds[PROTO_DIGEST_SHA256] = EVP_MD_fetch(NULL, "SHA256", NULL);
    ctx_key_err = pthread_key_create(&ctx_key, thread_ctxs_free);
}

const EVP_MD *
proto_digest_md(enum proto_digest d)
{
    (void) pthread_once(&mds_once, digest_init);
    return mds[d];
}

EVP_MD_CTX *
proto_digest_begin(enum proto_digest d)
{
    const EVP_MD *md = proto_digest_md(d);
    if (!md || ctx_key_err != 0) {
        return NULL;
    }
    EVP_MD_CTX **ctxs = pthread_getspecific(ctx_key);
    if (!ctxs) {
        ctxs = calloc(PROTO_DIGEST_N, sizeof(*ctxs));
        if (!ctxs || pthread_setspecific(ctx_key, ctxs) != 0) {
            free(ctxs);
            return NULL;
        }
    }
    if (!ctxs[d]) {
        ctxs[d] = EVP_MD_CTX_new();
        if (!ctxs[d]) {
            return NULL;
        }
    }
    return EVP_DigestInit_ex2(ctxs[d], md, NULL) == 1 ? ctxs[d] : NULL;
}
