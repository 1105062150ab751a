/* fuzz_seal: libFuzzer target for requestState tokens (control/seal), which 2026 clients send
 * back: any text must be refused without touching memory it should not, unless it is a token
 * this key made; and every payload must come back from its own token unchanged. */
#include "seal.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static seal_key key;
    static int ready;
    static uint8_t out[SEAL_MAX_PLAIN];
    char *text, *token;
    size_t n = 1;

    if (!ready) {
        memset(key.key, 0x5a, sizeof key.key); /* fixed: the same input does the same */
        ready = 1;
    }
    if (size > 4 * SEAL_MAX_PLAIN)
        return 0;
    /* As a token from a client: refused (a forgery the fuzzer finds would be a finding). */
    if (!(text = malloc(size + 1)))
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    if (seal_open(&key, "fuzz", text, out, sizeof out, &n) != -EINVAL || n != 0)
        abort();
    free(text);
    /* As a payload: sealed, then opened to the same bytes; refused for another purpose. */
    if (size <= SEAL_MAX_PLAIN) {
        token = seal_box(&key, "fuzz", data, size);
        if (!token || seal_open(&key, "fuzz", token, out, sizeof out, &n) != 0 || n != size ||
            (size && memcmp(out, data, size) != 0) ||
            seal_open(&key, "other", token, out, sizeof out, &n) != -EINVAL)
            abort();
        free(token);
    }
    return 0;
}
