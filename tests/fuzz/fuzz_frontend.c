/*
 * fuzz_frontend.c - libFuzzer target for what a client sends after its startup packet:
 * proto_header_read, the frontend readers proto_read_password and proto_read_sasl_initial,
 * and the proto_reader_* cursor they are built on (protocol/wire.h, protocol/messages.h).
 *
 * Input layout: the first byte picks a mode.
 *   - even: a stream of frontend messages. The second byte picks the max_len given to
 *     proto_header_read (PROTO_MAX_MSG_LEN or a small limit, as a configured
 *     max_message_size would be); then messages are framed one at a time, as proxy/client.c
 *     does, and every 'p' body (and every other body too: the readers must refuse anything
 *     safely) goes to both readers in an exact-size heap copy.
 *   - odd: a reader program. The second byte n says how many opcodes follow; the rest is the
 *     data a proto_reader walks while the opcodes call its getters. After every call the
 *     cursor's promises are checked (position within bounds, sticky failure, borrowed results
 *     inside the data).
 *
 * Seeds: tests/fuzz/corpus/frontend/. Single-threaded.
 */
#include "tests/fuzz/fuzz_common.h"

#include "protocol/messages.h"
#include "protocol/wire.h"

static void
read_body(const uint8_t *body_in, size_t len)
{
    uint8_t *body = fuzz_dup(body_in, len);
    const char *password = NULL;
    enum status st = proto_read_password(body, len, &password);
    FUZZ_CHECK(st == ST_OK || st == ST_ECLIENT_PROTOCOL);
    if (st == ST_OK) {
        FUZZ_CHECK(fuzz_cstr_within(password, body, len));
        FUZZ_CHECK(strlen(password) + 1 == len);
    }

    const char *mech = NULL;
    const uint8_t *data = NULL;
    size_t data_len = 0;
    st = proto_read_sasl_initial(body, len, &mech, &data, &data_len);
    FUZZ_CHECK(st == ST_OK || st == ST_ECLIENT_PROTOCOL);
    if (st == ST_OK) {
        FUZZ_CHECK(fuzz_cstr_within(mech, body, len));
        if (data) {
            FUZZ_CHECK(fuzz_range_within(data, data_len, body, len));
            FUZZ_CHECK(data + data_len == body + len);
        } else {
            FUZZ_CHECK(data_len == 0);
        }
    }
    free(body);
}

static void
run_stream(const uint8_t *p, size_t n)
{
    static const uint32_t limits[] = { PROTO_MAX_MSG_LEN, 1024, 8192, 4, 5, 0 };
    if (n < 1) {
        return;
    }
    uint32_t max_len = limits[p[0] % (sizeof(limits) / sizeof(limits[0]))];
    p++;
    n--;
    while (n > 0) {
        struct proto_header h;
        uint8_t *head = fuzz_dup(p, n < PROTO_HEADER_LEN ? n : PROTO_HEADER_LEN);
        enum status st =
            proto_header_read(head, n < PROTO_HEADER_LEN ? n : PROTO_HEADER_LEN, max_len, &h);
        free(head);
        if (st == ST_INCOMPLETE) {
            FUZZ_CHECK(n < PROTO_HEADER_LEN);
            /* whatever is left is still a body the readers must survive */
            read_body(p, n);
            return;
        }
        if (st != ST_OK) {
            FUZZ_CHECK(st == ST_ECLIENT_PROTOCOL);
            read_body(p + 1, n - 1);
            return;
        }
        FUZZ_CHECK(h.len >= 4 && h.len <= max_len && h.type == p[0]);
        uint64_t total = proto_header_total(&h);
        FUZZ_CHECK(total == (uint64_t) h.len + 1 && total >= PROTO_HEADER_LEN);
        (void) proto_frontend_type_valid(h.type);
        (void) proto_backend_type_valid(h.type);
        if (total > n) {
            /* truncated message: the body so far */
            read_body(p + PROTO_HEADER_LEN, n - PROTO_HEADER_LEN);
            return;
        }
        read_body(p + PROTO_HEADER_LEN, (size_t) total - PROTO_HEADER_LEN);
        p += total;
        n -= (size_t) total;
    }
}

static void
run_reader(const uint8_t *p, size_t n)
{
    if (n < 1) {
        return;
    }
    size_t n_ops = p[0];
    p++;
    n--;
    if (n_ops > n) {
        n_ops = n;
    }
    const uint8_t *ops = p;
    size_t len = n - n_ops;
    uint8_t *buf = fuzz_dup(p + n_ops, len);
    struct proto_reader r;
    proto_reader_init(&r, buf, len);
    FUZZ_CHECK(proto_reader_left(&r) == len);

    for (size_t i = 0; i < n_ops; i++) {
        size_t pos = r.pos;
        bool was_failed = r.failed;
        enum status st = ST_OK;
        size_t want = 0;
        switch (ops[i] % 8) {
        case 0: {
            uint8_t v;
            st = proto_reader_u8(&r, &v);
            want = 1;
            break;
        }
        case 1: {
            uint16_t v;
            st = proto_reader_u16(&r, &v);
            want = 2;
            break;
        }
        case 2: {
            uint32_t v;
            st = proto_reader_u32(&r, &v);
            want = 4;
            break;
        }
        case 3: {
            int32_t v;
            uint32_t u = 0;
            st = proto_reader_i32(&r, &v);
            want = 4;
            if (st == ST_OK) {
                const uint8_t *q = buf + pos;
                u = ((uint32_t) q[0] << 24) | ((uint32_t) q[1] << 16) | ((uint32_t) q[2] << 8) |
                    q[3];
                FUZZ_CHECK((uint32_t) v == u);
            }
            break;
        }
        case 4:
        case 5: {
            /* a byte count from the opcode itself: small, exact, or huge */
            const uint8_t *out = NULL;
            size_t left = len - pos;
            size_t k = ops[i] >> 3;
            if (k == 31) {
                k = SIZE_MAX;
            } else if (k == 30) {
                k = left;
            } else if (k == 29) {
                k = left + 1;
            }
            st = proto_reader_bytes(&r, k, &out);
            if (st == ST_OK) {
                FUZZ_CHECK(out == buf + pos && fuzz_range_within(out, k, buf, len));
            }
            want = k;
            break;
        }
        case 6: {
            const char *s = NULL;
            size_t slen = 0;
            st = proto_reader_cstr(&r, &s, (ops[i] & 8) ? NULL : &slen);
            if (st == ST_OK) {
                FUZZ_CHECK((const uint8_t *) s == buf + pos && fuzz_cstr_within(s, buf, len));
                if (!(ops[i] & 8)) {
                    FUZZ_CHECK(slen == strlen(s));
                }
                want = strlen(s) + 1;
            }
            break;
        }
        default: {
            enum status end = proto_reader_end(&r);
            FUZZ_CHECK(end == ((!r.failed && r.pos == r.len) ? ST_OK : ST_DECLINED));
            continue;
        }
        }
        FUZZ_CHECK(st == ST_OK || st == ST_INCOMPLETE);
        if (st == ST_OK) {
            FUZZ_CHECK(!was_failed && r.pos == pos + want);
        } else {
            /* sticky failure, cursor untouched */
            FUZZ_CHECK(r.failed && r.pos == pos);
        }
        FUZZ_CHECK(r.pos <= r.len && proto_reader_left(&r) == r.len - r.pos);
    }
    free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    if ((data[0] & 1) == 0) {
        run_stream(data + 1, size - 1);
    } else {
        run_reader(data + 1, size - 1);
    }
    return 0;
}
