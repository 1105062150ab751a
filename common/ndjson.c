/* ndjson: newline framing with a maximum line length (see ndjson.h). A line that arrives
 * whole inside one buffer is handed out in place; only partial lines are copied, and the
 * copy never grows past max_line. */
#include "ndjson.h"

#include <stdlib.h>
#include <string.h>

/* A buffer that grew past this for one large line is released after that line, so an idle
 * instance does not keep megabytes because of one big answer long ago. */
#define NDJSON_KEEP_BYTES (64u * 1024u)
#define NDJSON_FIRST_BYTES 4096u

struct ndjson {
    char *buf;       /* partial line; NULL until needed */
    size_t len;      /* bytes of it */
    size_t cap;      /* allocated, <= max_line */
    size_t max_line;
    int skipping;    /* inside an over-long line: drop until '\n' */
    uint64_t dropped;
    ndjson_error_fn on_error;
};

ndjson *ndjson_new(size_t max_line)
{
    ndjson *f = calloc(1, sizeof *f);

    if (!f)
        abort();
    f->max_line = max_line ? max_line : 1;
    return f;
}

void ndjson_free(ndjson *f)
{
    if (!f)
        return;
    free(f->buf);
    free(f);
}

void ndjson_set_error_fn(ndjson *f, ndjson_error_fn on_error)
{
    f->on_error = on_error;
}

size_t ndjson_buffered(const ndjson *f)
{
    return f->len;
}

uint64_t ndjson_dropped(const ndjson *f)
{
    return f->dropped;
}

/* Makes room for need bytes; need <= max_line is the caller's promise. */
static void ndjson_reserve(ndjson *f, size_t need)
{
    size_t cap = f->cap ? f->cap : NDJSON_FIRST_BYTES;

    if (need <= f->cap)
        return;
    while (cap < need && cap <= f->max_line / 2)
        cap *= 2;
    if (cap < need || cap > f->max_line)
        cap = f->max_line;
    f->buf = realloc(f->buf, cap);
    if (!f->buf)
        abort();
    f->cap = cap;
}

static void ndjson_release_big(ndjson *f)
{
    if (f->cap > NDJSON_KEEP_BYTES) {
        free(f->buf);
        f->buf = NULL;
        f->cap = 0;
    }
}

/* Hands one line (its '\n' already removed) to the callback, minus a trailing '\r'. */
static int ndjson_emit(const char *line, size_t n, ndjson_line_fn on_line, void *ud)
{
    if (n > 0 && line[n - 1] == '\r')
        n--;
    if (n == 0)
        return 0; /* blank lines carry no message */
    return on_line(ud, line, n);
}

int ndjson_feed(ndjson *f, const char *buf, size_t len, ndjson_line_fn on_line, void *ud)
{
    while (len > 0) {
        const char *nl = memchr(buf, '\n', len);
        size_t seg = nl ? (size_t)(nl - buf) : len;
        size_t used = nl ? seg + 1 : seg;
        int rc = 0;

        if (f->skipping) {
            if (nl)
                f->skipping = 0;
        } else if (seg > f->max_line - f->len) {
            /* Reported as soon as we know, not when (if ever) the line ends. */
            f->len = 0;
            ndjson_release_big(f);
            f->skipping = nl ? 0 : 1;
            f->dropped++;
            if (f->on_error)
                rc = f->on_error(ud, NDJSON_E_TOO_LONG);
        } else if (nl && f->len == 0) {
            rc = ndjson_emit(buf, seg, on_line, ud);
        } else {
            ndjson_reserve(f, f->len + seg);
            memcpy(f->buf + f->len, buf, seg);
            f->len += seg;
            if (nl) {
                size_t n = f->len;

                f->len = 0;
                rc = ndjson_emit(f->buf, n, on_line, ud);
                ndjson_release_big(f);
            }
        }
        buf += used;
        len -= used;
        if (rc)
            return rc;
    }
    return 0;
}
