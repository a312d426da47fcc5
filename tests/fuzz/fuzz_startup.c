/*
 * fuzz_startup.c - libFuzzer target for the first packet a client sends: proto_startup_len and
 * proto_startup_parse (protocol/startup.h).
 *
 * The input is read twice: once as proxy/client.c reads it (length word first, then exactly
 * that many bytes parsed when they are all there), and once handed to the parser whole, so
 * length words that disagree with the bytes given are tried too. An accepted V3 packet is also
 * walked with proto_startup_next, which must yield the parse's parameters, and its "options"
 * value split into settings (proto_options_split). Each parse gets an
 * exact-size heap copy, so reading past the packet is an ASan report. On ST_OK the results are
 * checked against what startup.h promises.
 *
 * Seeds: tests/fuzz/corpus/startup/. Single-threaded.
 */
#include "tests/fuzz/fuzz_common.h"

#include "protocol/startup.h"

/* An "options" value split into exactly the room startup.h promises: writing past it is an
 * ASan report; each setting must have a name and come out of that room whole. */
static void
check_options(const char *opts)
{
    if (!opts) {
        return;
    }
    size_t cap = strlen(opts) + 1;
    char *out = malloc(cap);
    FUZZ_CHECK(out != NULL);
    int n = -1;
    struct proto_err err;
    err.text[0] = '\0';
    enum status st = proto_options_split(opts, out, &n, &err);
    FUZZ_CHECK(st == ST_OK || st == ST_ECLIENT_PROTOCOL || st == ST_ECLIENT_UNSUPPORTED);
    if (st != ST_OK) {
        FUZZ_CHECK_ERR(&err);
    } else {
        const char *p = out;
        for (int i = 0; i < n; i++) {
            FUZZ_CHECK(p < out + cap && p[0] != '\0');
            const char *value = p + strlen(p) + 1;
            FUZZ_CHECK(value < out + cap && !strchr(p, '-'));
            p = value + strlen(value) + 1;
            FUZZ_CHECK(p <= out + cap);
        }
    }
    free(out);
}

static void
check_parse(const uint8_t *data, size_t len)
{
    uint8_t *buf = fuzz_dup(data, len);
    struct proto_startup s;
    struct proto_err err;
    err.text[0] = '\0';
    enum status st = proto_startup_parse(buf, len, &s, &err);
    FUZZ_CHECK(st == ST_OK || st == ST_ECLIENT_PROTOCOL || st == ST_ECLIENT_UNSUPPORTED);
    FUZZ_CHECK_ERR(&err);
    if (st == ST_OK) {
        FUZZ_CHECK(len >= 8 && len <= PROTO_STARTUP_MAX_LEN);
        switch (s.kind) {
        case PROTO_STARTUP_CANCEL:
            FUZZ_CHECK(len == 16 && s.version == PROTO_CANCEL_CODE);
            break;
        case PROTO_STARTUP_SSL:
            FUZZ_CHECK(len == 8 && s.version == PROTO_SSL_CODE);
            break;
        case PROTO_STARTUP_GSSENC:
            FUZZ_CHECK(len == 8 && s.version == PROTO_GSSENC_CODE);
            break;
        case PROTO_STARTUP_V3:
            FUZZ_CHECK((s.version >> 16) == 3);
            FUZZ_CHECK(s.user && s.user[0] != '\0' && fuzz_cstr_within(s.user, buf, len));
            FUZZ_CHECK(s.database && fuzz_cstr_within(s.database, buf, len));
            FUZZ_CHECK(s.n_params >= 1 && s.n_params <= PROTO_STARTUP_MAX_PARAMS);
            for (int i = 0; i < s.n_params; i++) {
                FUZZ_CHECK(fuzz_cstr_within(s.params[i].name, buf, len));
                FUZZ_CHECK(fuzz_cstr_within(s.params[i].value, buf, len));
                FUZZ_CHECK(s.params[i].name[0] != '\0');
                /* the last value of a name is what lookup returns */
                const char *v = proto_startup_param(&s, s.params[i].name);
                FUZZ_CHECK(v != NULL);
            }
            /* the walk over an accepted packet (client.c's second look) yields params[] */
            size_t off = 0;
            const char *name, *value;
            int k = 0;
            while (proto_startup_next(buf, len, &off, &name, &value)) {
                FUZZ_CHECK(k < s.n_params && name == s.params[k].name &&
                           value == s.params[k].value);
                k++;
            }
            FUZZ_CHECK(k == s.n_params);
            FUZZ_CHECK(proto_startup_param(&s, "user") == s.user);
            const char *db = proto_startup_param(&s, "database");
            FUZZ_CHECK(db == s.database || ((db == NULL || db[0] == '\0') && s.database == s.user));
            check_options(proto_startup_param(&s, "options"));
            break;
        default:
            FUZZ_CHECK(!"unknown startup kind");
        }
    }
    free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* As the client session reads it: the length word, then the packet once complete. */
    uint8_t *head = fuzz_dup(data, size < 4 ? size : 4);
    uint32_t len = 0;
    enum status st = proto_startup_len(head, size < 4 ? size : 4, &len);
    free(head);
    FUZZ_CHECK(st == ST_OK || st == ST_INCOMPLETE || st == ST_ECLIENT_PROTOCOL);
    FUZZ_CHECK(st != ST_INCOMPLETE || size < 4);
    if (st == ST_OK) {
        FUZZ_CHECK(len >= 8 && len <= PROTO_STARTUP_MAX_LEN);
        if (len <= size) {
            check_parse(data, len);
        }
    }
    /* Whole input, whatever its length word says. */
    check_parse(data, size);
    return 0;
}
