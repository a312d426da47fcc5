/*
 * fuzz_hba.c - libFuzzer target for hba_parse and hba_match (proxy/hba.h).
 *
 * Input layout: the hba_file text, as is. After parsing, a fixed set of connections (IPv4,
 * IPv6, IPv4-mapped IPv6, a Unix socket, with and without TLS, names that are keywords) is
 * matched against the rules. Checked beyond crashes: every problem is reported with a line
 * number inside the text and a non-empty reason; a match is one of the parsed rules; the rules
 * are in file order with the fields hba.h promises.
 *
 * Seeds: tests/fuzz/corpus/hba/. Single-threaded.
 */
#include "tests/fuzz/fuzz_common.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include "proxy/hba.h"

static int max_line;

static void
on_err(void *ctx, int line, const char *field, const char *reason)
{
    int *n = ctx;
    FUZZ_CHECK(line >= 0 && line <= max_line);
    FUZZ_CHECK(field != NULL && field[0] != '\0');
    FUZZ_CHECK(reason != NULL && reason[0] != '\0');
    (*n)++;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = (char *) fuzz_dup(data, size);
    max_line = 1;
    for (size_t i = 0; i < size; i++) {
        max_line += text[i] == '\n';
    }
    struct hba_rules r = { 0 };
    int seen = 0;
    int problems = hba_parse(text, size, &r, on_err, &seen);
    FUZZ_CHECK(problems == seen);
    int last = 0;
    for (int i = 0; i < r.n; i++) {
        const struct hba_rule *h = &r.v[i];
        FUZZ_CHECK(h->line > last && h->line <= max_line);
        last = h->line;
        FUZZ_CHECK(h->type <= HBA_HOSTNOSSL && h->method <= HBA_PASSWORD);
        FUZZ_CHECK(h->n_dbs > 0 && h->n_users > 0);
        FUZZ_CHECK(h->family == 0 || h->family == AF_INET || h->family == AF_INET6);
        FUZZ_CHECK(h->prefix <= (h->family == AF_INET ? 32 : 128));
    }
    static const char *const addrs[] = { "127.0.0.1", "10.1.2.3", "::1", "::ffff:10.1.2.3",
                                         "fd00::5" };
    static const char *const names[] = { "all", "app", "sameuser", "" };
    for (size_t a = 0; a < ARRAY_LEN(addrs); a++) {
        uint8_t bin[16];
        int family = strchr(addrs[a], ':') ? AF_INET6 : AF_INET;
        FUZZ_CHECK(inet_pton(family, addrs[a], bin) == 1);
        for (size_t n = 0; n < ARRAY_LEN(names); n++) {
            for (int flags = 0; flags < 4; flags++) {
                struct hba_conn c = {
                    .is_local = flags & 1,
                    .is_tls = (flags & 2) != 0,
                    .family = family,
                    .addr = bin,
                    .database = names[n],
                    .user = names[(n + a) % ARRAY_LEN(names)],
                };
                const struct hba_rule *m = hba_match(&r, &c);
                FUZZ_CHECK(m == NULL || (m >= r.v && m < r.v + r.n));
            }
        }
    }
    hba_rules_free(&r);
    FUZZ_CHECK(r.n == 0 && r.v == NULL);
    free(text);
    return 0;
}
