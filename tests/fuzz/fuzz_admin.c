/*
 * fuzz_admin.c - libFuzzer target for the admin console's command language
 * (proxy/admin_cmd.h), which reads every query an admin_users or stats_users member sends.
 *
 * Input layout: the query text, handed over in an exact-size heap copy with no NUL terminator,
 * so a read past the end is an ASan report. It is split into statements as a simple Query is,
 * and each is parsed. Checked: every statement end lies within the text and splitting always
 * advances; a parsed command has a known kind and NUL-terminated arg and value; a refusal has
 * SQLSTATE 42601 and a NUL-terminated message.
 *
 * Seeds: tests/fuzz/corpus/admin/. Single-threaded.
 */
#include "tests/fuzz/fuzz_common.h"

#include "protocol/sqlstate.h"
#include "proxy/admin_cmd.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = (char *) fuzz_dup(data, size);
    const char *end = text + size;
    const char *p = text;
    int n = 0;
    while (p < end) {
        const char *e = admin_cmd_statement_end(p, end);
        FUZZ_CHECK(e >= p && e <= end);
        FUZZ_CHECK(e == end || *e == ';');
        struct admin_cmd cmd;
        struct admin_parse_err err;
        memset(&err, 0, sizeof(err));
        if (admin_cmd_parse(p, e, &cmd, &err) == 0) {
            FUZZ_CHECK(cmd.kind >= AK_EMPTY && cmd.kind <= AK_ROLLBACK);
            FUZZ_CHECK(memchr(cmd.arg, '\0', sizeof(cmd.arg)) != NULL);
            FUZZ_CHECK(memchr(cmd.value, '\0', sizeof(cmd.value)) != NULL);
            FUZZ_CHECK(!cmd.has_arg || cmd.arg[0] != '\0' || cmd.kind == AK_KILL ||
                       cmd.kind == AK_PAUSE || cmd.kind == AK_RESUME);
            FUZZ_CHECK(cmd.kind != AK_EMPTY || admin_cmd_is_empty(p, e));
            (void) admin_cmd_is_read_only(cmd.kind);
        } else {
            FUZZ_CHECK(err.sqlstate != NULL && strcmp(err.sqlstate, SQLSTATE_SYNTAX_ERROR) == 0);
            FUZZ_CHECK(memchr(err.message, '\0', sizeof(err.message)) != NULL);
            FUZZ_CHECK(err.message[0] != '\0');
        }
        p = e < end ? e + 1 : end;
        FUZZ_CHECK(++n <= (int) size + 1);
    }
    /* The whole text as one statement, as a Parse message holds it. */
    struct admin_cmd cmd;
    struct admin_parse_err err;
    (void) admin_cmd_parse(text, end, &cmd, &err);
    free(text);
    return 0;
}
