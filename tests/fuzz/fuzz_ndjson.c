/* fuzz_ndjson: libFuzzer target for the NDJSON framer that reads upstream servers' stdout.
 * The first two bytes choose the line limit and how the rest is cut into feeds; the events
 * the framer produces must equal those of a plain whole-input reference splitter. */
#include "ndjson.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One event: a line (its bytes, or an over-long line marker). */
typedef struct {
    const uint8_t *text; /* NULL: NDJSON_E_TOO_LONG */
    size_t len;
} fz_event;

typedef struct {
    fz_event *want;
    size_t n_want;
    size_t next; /* index of the next expected event */
    size_t max_line;
} fz_check;

static int fz_on_line(void *ud, const char *line, size_t len)
{
    fz_check *c = ud;
    const fz_event *e;

    if (len == 0 || len > c->max_line || memchr(line, '\n', len))
        abort();
    if (c->next >= c->n_want)
        abort();
    e = &c->want[c->next++];
    if (!e->text || e->len != len || memcmp(e->text, line, len) != 0)
        abort();
    return 0;
}

static int fz_on_error(void *ud, ndjson_error err)
{
    fz_check *c = ud;

    if (err != NDJSON_E_TOO_LONG || c->next >= c->n_want || c->want[c->next].text)
        abort();
    c->next++;
    return 0;
}

/* The reference: split the whole input at '\n'; a segment over the limit (terminated or
 * not: the framer reports it as soon as it passes the limit) is an error; a terminated
 * segment within it is a line minus one trailing '\r', skipped when empty. */
static size_t fz_reference(const uint8_t *p, size_t n, size_t max_line, fz_event *out)
{
    size_t count = 0;

    while (n > 0) {
        const uint8_t *nl = memchr(p, '\n', n);
        size_t seg = nl ? (size_t)(nl - p) : n;

        if (seg > max_line) {
            out[count].text = NULL;
            out[count++].len = 0;
        } else if (nl) {
            size_t k = seg;

            if (k > 0 && p[k - 1] == '\r')
                k--;
            if (k > 0) {
                out[count].text = p;
                out[count++].len = k;
            }
        }
        if (!nl)
            break;
        p += seg + 1;
        n -= seg + 1;
    }
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t limits[8] = {1, 2, 3, 7, 16, 64, 4096, 70000};
    fz_check c;
    ndjson *f;
    size_t max_line, off = 0;
    unsigned seed;

    if (size < 2)
        return 0;
    max_line = limits[data[0] & 7];
    seed = data[1];
    data += 2;
    size -= 2;

    memset(&c, 0, sizeof c);
    c.max_line = max_line;
    c.want = malloc((size + 1) * sizeof *c.want);
    if (!c.want)
        abort();
    c.n_want = fz_reference(data, size, max_line, c.want);

    f = ndjson_new(max_line);
    ndjson_set_error_fn(f, fz_on_error);
    while (off < size) {
        /* Chunk sizes from a tiny LCG seeded by the input: 1 byte up to everything. */
        size_t chunk;

        seed = seed * 1103515245u + 12345u;
        chunk = (seed >> 16) % 5 == 0 ? size - off : 1 + (seed >> 8) % 97;
        if (chunk > size - off)
            chunk = size - off;
        if (ndjson_feed(f, (const char *)data + off, chunk, fz_on_line, &c) != 0)
            abort();
        if (ndjson_buffered(f) > max_line)
            abort();
        off += chunk;
    }
    if (c.next != c.n_want)
        abort();
    ndjson_free(f);
    free(c.want);
    return 0;
}
