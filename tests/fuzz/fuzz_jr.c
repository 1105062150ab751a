/* fuzz_jr: libFuzzer target for JSON-RPC validation (jr_parse), which reads bodies MCP
 * clients POST and lines upstream servers write. Any input must validate or fail cleanly,
 * and what validates must hold the invariants callers rely on. */
#include "jr.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jr_limits lim = {0};
    jr_body *b = NULL;
    jr_error err;
    char id[64];

    /* The first byte picks the limits, so both batch modes and small limits get explored. */
    if (size > 0) {
        lim.allow_batch = data[0] & 1;
        lim.max_depth = (data[0] & 2) ? 8 : 0;
        lim.max_batch = (data[0] & 4) ? 2 : 0;
        lim.max_bytes = (data[0] & 8) ? 64 : 0;
        data++;
        size--;
    }
    if (jr_parse((const char *)data, size, &lim, &b, &err) != 0) {
        if (b || (err.code != JR_PARSE_ERROR && err.code != JR_INVALID_REQUEST) ||
            !memchr(err.message, '\0', sizeof err.message))
            abort();
        jr_id_text(err.id, id, sizeof id);
        free(jr_error_response(err.code, err.message, err.id, NULL));
        jr_error_cleanup(&err);
        return 0;
    }
    if (!b || b->n == 0 || (b->batch && !lim.allow_batch))
        abort();
    for (size_t i = 0; i < b->n; i++) {
        const jr_msg *m = &b->msgs[i];
        char *s;

        if (!json_is_object(m->msg))
            abort();
        if ((m->kind == JR_REQUEST || m->kind == JR_NOTIFICATION) != (m->method != NULL))
            abort();
        if ((m->kind == JR_REQUEST || m->kind == JR_RESULT) && !m->id)
            abort();
        if (m->id && !json_is_string(m->id) && !json_is_integer(m->id))
            abort();
        jr_id_text(m->id, id, sizeof id);
        s = jr_dump(m->msg);
        free(s);
    }
    (void)jr_body_has_initialize(b);
    jr_body_free(b);
    return 0;
}
