/* edge_sse: SSE event framing and the bounded output buffer (see edge_sse.h). */
#include "edge_sse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sse_buf_init(sse_buf *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max ? max : SSE_DEFAULT_MAX;
}

void sse_buf_cleanup(sse_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

size_t sse_buf_pending(const sse_buf *b)
{
    return b->len - b->off;
}

/* Makes room for need more bytes, compacting first. */
static void sse_reserve(sse_buf *b, size_t need)
{
    size_t pending = b->len - b->off;
    size_t cap;

    if (b->off > 0 && (b->cap - b->len < need || b->off >= b->cap / 2)) {
        memmove(b->data, b->data + b->off, pending);
        b->off = 0;
        b->len = pending;
    }
    if (b->cap - b->len >= need)
        return;
    cap = b->cap ? b->cap : 1024;
    while (cap - b->len < need)
        cap *= 2;
    if (!(b->data = realloc(b->data, cap)))
        abort();
    b->cap = cap;
}

static void sse_put(sse_buf *b, const char *s, size_t n)
{
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void sse_puts(sse_buf *b, const char *s)
{
    sse_put(b, s, strlen(s));
}

/* Bytes the data lines of data take: "data: " + line + "\n" per line. */
static size_t sse_data_size(const char *data, size_t len, size_t *lines)
{
    size_t n = 1;

    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\r' || data[i] == '\n') {
            if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n')
                i++;
            if (i + 1 < len)
                n++;
        }
    }
    *lines = n;
    return len + n * 7;
}

static bool sse_id_ok(const char *id)
{
    return id && id[0] && !strpbrk(id, "\r\n");
}

int sse_buf_event(sse_buf *b, const char *event, const char *id, int retry_ms,
                  const char *data, size_t len)
{
    char retry[32] = "";
    size_t lines;
    size_t need = sse_data_size(data, len, &lines) + 1;
    size_t start = 0;

    if (event)
        need += 8 + strlen(event);
    if (sse_id_ok(id))
        need += 5 + strlen(id);
    if (retry_ms > 0)
        need += (size_t)snprintf(retry, sizeof retry, "retry: %d\n", retry_ms);
    if (sse_buf_pending(b) > 0 && sse_buf_pending(b) + need > b->max)
        return -ENOBUFS;
    sse_reserve(b, need);
    if (event) {
        sse_puts(b, "event: ");
        sse_puts(b, event);
        sse_puts(b, "\n");
    }
    if (sse_id_ok(id)) {
        sse_puts(b, "id: ");
        sse_puts(b, id);
        sse_puts(b, "\n");
    }
    sse_puts(b, retry);
    for (size_t i = 0; i <= len; i++) {
        if (i < len && data[i] != '\r' && data[i] != '\n')
            continue;
        sse_puts(b, "data: ");
        sse_put(b, data + start, i - start);
        sse_puts(b, "\n");
        if (i < len && data[i] == '\r' && i + 1 < len && data[i + 1] == '\n')
            i++;
        start = i + 1;
        if (start >= len)
            break;
    }
    sse_puts(b, "\n");
    return 0;
}

int sse_buf_comment(sse_buf *b, const char *text)
{
    size_t need = strlen(text) + 4;

    if (strpbrk(text, "\r\n"))
        return -EINVAL;
    if (sse_buf_pending(b) > 0 && sse_buf_pending(b) + need > b->max)
        return -ENOBUFS;
    sse_reserve(b, need);
    sse_puts(b, ": ");
    sse_puts(b, text);
    sse_puts(b, "\n\n");
    return 0;
}

void sse_buf_prepend(sse_buf *b, sse_buf *front)
{
    size_t fn = sse_buf_pending(front);
    size_t bn = sse_buf_pending(b);

    if (fn == 0)
        return;
    if (bn > 0) {
        sse_reserve(front, bn);
        memcpy(front->data + front->len, b->data + b->off, bn);
        front->len += bn;
    }
    free(b->data);
    b->data = front->data;
    b->off = front->off;
    b->len = front->len;
    b->cap = front->cap;
    front->data = NULL;
    front->off = front->len = front->cap = 0;
}

size_t sse_buf_read(sse_buf *b, char *out, size_t max)
{
    size_t n = sse_buf_pending(b);

    if (n > max)
        n = max;
    if (n == 0)
        return 0;
    memcpy(out, b->data + b->off, n);
    b->off += n;
    if (b->off == b->len) {
        /* Drained: a stream mostly sits idle, so its buffer goes until the next event. */
        sse_buf_cleanup(b);
    }
    return n;
}
