/* cfg_expand: ${VAR} and $VAR expansion of settings values, following MCPHub's
 * expandEnvVars (src/config/index.ts) so that a file behaves the same under both hubs. */
#include "cfg_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A growable string that refuses to grow past max (and then only remembers it overflowed). */
typedef struct cfg_buf {
    char *p;
    size_t len;
    size_t cap;
    size_t max;
    bool over;
} cfg_buf;

static void buf_append(cfg_buf *b, const char *s, size_t n)
{
    if (b->over)
        return;
    if (n > b->max - b->len) {
        b->over = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *p;

        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->p, cap);
        if (!p)
            abort();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_append_var(cfg_buf *b, cfg_lookup_fn lookup, void *ud, const char *name,
                           size_t n)
{
    char *key = malloc(n + 1);
    const char *v;

    if (!key)
        abort();
    memcpy(key, name, n);
    key[n] = '\0';
    v = lookup(ud, key);
    if (v)
        buf_append(b, v, strlen(v));
    free(key);
}

static bool is_upper_word_start(char c)
{
    return (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_upper_word(char c)
{
    return is_upper_word_start(c) || (c >= '0' && c <= '9');
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int cfg_expand(const char *in, cfg_lookup_fn lookup, void *ud, size_t max, char **out,
               size_t *out_len)
{
    /* The intermediate result may be longer than the final one only by trimmed spaces,
     * which cannot be many more than max in any sane input; allow twice max. */
    size_t work_max = max > ((size_t)-1) / 4 ? max : max * 2 + 64;
    cfg_buf first = {.max = work_max};
    cfg_buf second = {.max = work_max};
    size_t i = 0, start, end;
    int rc = 0;

    *out = NULL;
    if (out_len)
        *out_len = 0;
    buf_append(&first, "", 0);
    buf_append(&second, "", 0);

    /* Pass 1: ${NAME}, NAME being everything up to the next '}' (MCPHub's linear scan). */
    while (in[i]) {
        if (in[i] == '$' && in[i + 1] == '{') {
            const char *close = strchr(in + i + 2, '}');

            if (close && close > in + i + 2) {
                buf_append_var(&first, lookup, ud, in + i + 2, (size_t)(close - (in + i + 2)));
                i = (size_t)(close - in) + 1;
                continue;
            }
        }
        buf_append(&first, in + i, 1);
        i++;
    }
    if (first.over) {
        rc = -E2BIG;
        goto out;
    }

    /* Pass 2: $NAME over the result of pass 1, as MCPHub's second replace does. */
    for (i = 0; i < first.len;) {
        if (first.p[i] == '$' && i + 1 < first.len && is_upper_word_start(first.p[i + 1])) {
            size_t j = i + 1;

            while (j < first.len && is_upper_word(first.p[j]))
                j++;
            buf_append_var(&second, lookup, ud, first.p + i + 1, j - i - 1);
            i = j;
            continue;
        }
        buf_append(&second, first.p + i, 1);
        i++;
    }
    if (second.over) {
        rc = -E2BIG;
        goto out;
    }

    start = 0;
    end = second.len;
    while (start < end && is_space(second.p[start]))
        start++;
    while (end > start && is_space(second.p[end - 1]))
        end--;
    if (end - start > max) {
        rc = -E2BIG;
        goto out;
    }
    memmove(second.p, second.p + start, end - start);
    second.p[end - start] = '\0';
    *out = second.p;
    second.p = NULL;
    if (out_len)
        *out_len = end - start;
out:
    free(first.p);
    free(second.p);
    return rc;
}
