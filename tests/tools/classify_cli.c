/*
 * classify_cli.c - router_classify (router/classify.h) from the command line, for the
 * integration test that checks its answers against a real hot standby
 * (tests/integration/test_classify_standby.py) and for people asking "where would this go?".
 *
 *   classify_cli [-v volatile,names] [-p primary,names] < statements
 *
 * stdin holds SQL texts separated by NUL bytes (a trailing one is allowed); for each text one
 * line is printed: "read" or "write", a tab, the reason. -v and -p give the learned VOLATILE
 * functions and primary_functions, each a comma-separated, sorted, lower-case list.
 *
 * Single-threaded; test tooling, not linked into pgmux.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/classify.h"

/* Split a comma-separated list in place; returns the count. */
static int
split(char *s, const char **out, int cap)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok != NULL && n < cap; tok = strtok(NULL, ",")) {
        out[n++] = tok;
    }
    return n;
}

int
main(int argc, char **argv)
{
    static const char *vol[64], *prim[64];
    struct router_functions fns = { .volatile_fns = vol, .primary = prim };
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-v") == 0) {
            fns.n_volatile = split(argv[i + 1], vol, 64);
        } else if (strcmp(argv[i], "-p") == 0) {
            fns.n_primary = split(argv[i + 1], prim, 64);
        } else {
            fprintf(stderr, "usage: classify_cli [-v volatile,names] [-p primary,names]\n");
            return 2;
        }
    }
    size_t cap = 1 << 16, len = 0;
    char *in = malloc(cap);
    size_t got;
    while (in != NULL && (got = fread(in + len, 1, cap - len, stdin)) > 0) {
        len += got;
        if (len == cap) {
            char *bigger = realloc(in, cap * 2);
            if (bigger == NULL) {
                free(in);
                in = NULL;
                break;
            }
            in = bigger;
            cap *= 2;
        }
    }
    struct router_classifier *cl;
    if (in == NULL || router_classifier_create(ROUTER_CLASSIFY_CACHE_DEFAULT, &cl) != ST_OK) {
        fprintf(stderr, "classify_cli: out of memory\n");
        return 1;
    }
    for (size_t start = 0; start < len;) {
        const char *end = memchr(in + start, '\0', len - start);
        size_t n = end ? (size_t) (end - (in + start)) : len - start;
        struct router_classification c;
        if (router_classify(cl, in + start, n, &fns, &c) != ST_OK) {
            fprintf(stderr, "classify_cli: out of memory\n");
            return 1;
        }
        printf("%s\t%s\n", c.cls == ROUTER_CLASS_READ ? "read" : "write", c.reason);
        start += n + 1;
    }
    router_classifier_destroy(cl);
    free(in);
    return 0;
}
