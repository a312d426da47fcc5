/*
 * fuzz_backend.c - libFuzzer target for the server messages pgmux reads itself:
 * proto_read_error, proto_read_auth with proto_sasl_list_has, proto_read_parameter_status,
 * proto_read_backend_key and proto_read_ready (protocol/messages.h).
 *
 * Input layout: a stream of backend messages, framed with proto_header_read as pool/ does.
 * Each body goes, in an exact-size heap copy, to the reader its type byte selects, and then
 * to every other reader as well: a reader must refuse any bytes safely, and trying them all
 * lets the fuzzer reach each one without first finding the right type byte. A truncated last
 * message is read as far as it goes. Results are checked against what messages.h promises.
 *
 * Seeds: tests/fuzz/corpus/backend/. Single-threaded.
 */
#include "tests/fuzz/fuzz_common.h"

#include "protocol/messages.h"
#include "protocol/wire.h"

static void
read_error(const uint8_t *body, size_t len)
{
    struct proto_error_fields f;
    enum status st = proto_read_error(body, len, &f);
    FUZZ_CHECK(st == ST_OK || st == ST_ESERVER_PROTOCOL);
    if (st == ST_OK) {
        const char *fields[] = { f.severity, f.code, f.message, f.detail };
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
            FUZZ_CHECK(fields[i] == NULL || fuzz_cstr_within(fields[i], body, len));
        }
        FUZZ_CHECK(len >= 1 && body[len - 1] == '\0');
    }
}

static void
read_auth(const uint8_t *body, size_t len)
{
    uint32_t code = 0;
    const uint8_t *rest = NULL;
    size_t rest_len = 0;
    enum status st = proto_read_auth(body, len, &code, &rest, &rest_len);
    FUZZ_CHECK(st == ST_OK || st == ST_ESERVER_PROTOCOL);
    if (st != ST_OK) {
        return;
    }
    FUZZ_CHECK(len >= 4 && rest == body + 4 && rest_len == len - 4);
    switch (code) {
    case PROTO_AUTH_OK:
    case PROTO_AUTH_CLEARTEXT:
        FUZZ_CHECK(rest_len == 0);
        break;
    case PROTO_AUTH_MD5:
        FUZZ_CHECK(rest_len == 4);
        break;
    case PROTO_AUTH_SASL:
        FUZZ_CHECK(rest_len >= 1 && rest[rest_len - 1] == '\0');
        (void) proto_sasl_list_has(rest, rest_len, "SCRAM-SHA-256");
        (void) proto_sasl_list_has(rest, rest_len, "SCRAM-SHA-256-PLUS");
        (void) proto_sasl_list_has(rest, rest_len, "");
        break;
    default:
        break;
    }
}

static void
read_all(uint8_t type, const uint8_t *body_in, size_t len)
{
    uint8_t *body = fuzz_dup(body_in, len);

    switch (type) {
    case 'E':
    case 'N':
        read_error(body, len);
        break;
    case 'R':
        read_auth(body, len);
        break;
    default:
        break;
    }

    /* every reader, whatever the type */
    read_error(body, len);
    read_auth(body, len);

    /* a mechanism list on its own, as after AuthenticationSASL */
    bool has = proto_sasl_list_has(body, len, "SCRAM-SHA-256");
    FUZZ_CHECK(!has || (len >= 15 && body[len - 1] == '\0'));

    const char *name = NULL, *value = NULL;
    enum status st = proto_read_parameter_status(body, len, &name, &value);
    FUZZ_CHECK(st == ST_OK || st == ST_ESERVER_PROTOCOL);
    if (st == ST_OK) {
        FUZZ_CHECK(fuzz_cstr_within(name, body, len) && fuzz_cstr_within(value, body, len));
        FUZZ_CHECK(strlen(name) + strlen(value) + 2 == len);
    }

    uint32_t pid = 0, key = 0;
    st = proto_read_backend_key(body, len, &pid, &key);
    FUZZ_CHECK(st == ST_OK || st == ST_ESERVER_PROTOCOL);
    FUZZ_CHECK(st != ST_OK || len == 8);

    uint8_t txn = 0;
    st = proto_read_ready(body, len, &txn);
    FUZZ_CHECK(st == ST_OK || st == ST_ESERVER_PROTOCOL);
    FUZZ_CHECK(st != ST_OK || (len == 1 && (txn == 'I' || txn == 'T' || txn == 'E')));

    free(body);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data;
    size_t n = size;
    while (n > 0) {
        struct proto_header h;
        enum status st = proto_header_read(p, n, PROTO_MAX_MSG_LEN, &h);
        if (st == ST_INCOMPLETE) {
            read_all(0, p, n);
            break;
        }
        if (st != ST_OK) {
            FUZZ_CHECK(st == ST_ECLIENT_PROTOCOL);
            read_all(0, p + 1, n - 1);
            break;
        }
        (void) proto_backend_type_valid(h.type);
        uint64_t total = proto_header_total(&h);
        if (total > n) {
            read_all(h.type, p + PROTO_HEADER_LEN, n - PROTO_HEADER_LEN);
            break;
        }
        read_all(h.type, p + PROTO_HEADER_LEN, (size_t) total - PROTO_HEADER_LEN);
        p += total;
        n -= (size_t) total;
    }
    return 0;
}
