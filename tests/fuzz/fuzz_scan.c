/*
 * fuzz_scan.c - libFuzzer target for the SQL lexer router_scan_sql (router/scan.h), which reads
 * every query a client sends once transaction pooling is on.
 *
 * Input layout: one byte choosing the tracked-parameter callback (bit 0: none, i.e. NULL;
 * bit 1: everything tracked; otherwise a fixed list, as a session tracks client_encoding,
 * DateStyle, TimeZone, ...), then the SQL text, handed over in an exact-size heap copy with no
 * NUL terminator, so a read past the end is an ASan report. The callback reads every byte of
 * the name it is given. The result must use only known flags and hold a terminated name.
 *
 * Seeds: tests/fuzz/corpus/scan/. Single-threaded.
 */
#include "tests/fuzz/fuzz_common.h"

#include <strings.h>

#include "router/scan.h"

#define KNOWN_FLAGS ((ROUTER_F_UNLISTEN << 1) - 1)

static volatile unsigned char sink;

static bool
tracked_list(const char *name, size_t len, void *arg)
{
    static const char *const names[] = { "client_encoding",    "datestyle",
                                         "timezone",           "application_name",
                                         "search_path",        "intervalstyle",
                                         "extra_float_digits", "standard_conforming_strings" };
    FUZZ_CHECK(arg == (void *) tracked_list);
    FUZZ_CHECK(name != NULL && len < 4096); /* "" (SET "") gives len 0 */
    for (size_t i = 0; i < len; i++) {
        sink = (unsigned char) name[i]; /* every byte must be readable */
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0) {
            return true;
        }
    }
    return false;
}

static bool
tracked_all(const char *name, size_t len, void *arg)
{
    (void) tracked_list(name, len, arg);
    return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    router_tracked_fn fn = (data[0] & 1) ? NULL : (data[0] & 2) ? tracked_all : tracked_list;
    char *sql = (char *) fuzz_dup(data + 1, size - 1);
    struct router_scan out;
    memset(&out, 0x5a, sizeof(out));
    router_scan_sql(sql, size - 1, fn, (void *) tracked_list, &out);
    FUZZ_CHECK((out.flags & ~(uint32_t) KNOWN_FLAGS) == 0);
    FUZZ_CHECK(out.n_statements >= 0 && (size_t) out.n_statements <= size);
    FUZZ_CHECK(memchr(out.deallocate_name, '\0', sizeof(out.deallocate_name)) != NULL);
    FUZZ_CHECK(out.deallocate_name[0] == '\0' ||
               (out.flags & (ROUTER_F_DEALLOCATE | ROUTER_F_DEALLOCATE_ALL)) != 0);
    free(sql);
    return 0;
}
