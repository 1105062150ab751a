/* edge_sse: Server-Sent Events formatting into a bounded per-stream output buffer. The edge
 * writes events as they arrive from control and libmicrohttpd's content reader drains them;
 * a client that reads slower than control writes fills the buffer and is disconnected. */
#ifndef MCPHUB_EDGE_SSE_H
#define MCPHUB_EDGE_SSE_H

#include <stdbool.h>
#include <stddef.h>

#define SSE_DEFAULT_MAX (1u << 20) /* pending bytes per stream */

/* Not thread-safe: its owner's lock guards it. */
typedef struct {
    char *data;
    size_t off; /* first unread byte */
    size_t len; /* end of the unread bytes */
    size_t cap;
    size_t max; /* pending bytes allowed, except that an empty buffer takes any one event */
} sse_buf;

/* Prepares an empty buffer that holds at most max pending bytes (0 = SSE_DEFAULT_MAX). */
void sse_buf_init(sse_buf *b, size_t max);

/* Frees the storage; the buffer is empty and may be reused. */
void sse_buf_cleanup(sse_buf *b);

/* Bytes waiting to be read. */
size_t sse_buf_pending(const sse_buf *b);

/* Appends one event: "event: EVENT\n" when event is not NULL, "id: ID\n" when id is not NULL
 * or empty (an id holding CR, LF or NUL is left out: it would break the framing), "retry: N\n"
 * when retry_ms > 0, then data as one "data: " line per line of it (CR, LF and CRLF all end
 * a line; len 0 writes one empty "data:" line), then the blank line. Returns 0, or -ENOBUFS
 * when the buffer is not empty and the event would take it past its maximum (nothing is
 * written). OOM aborts. */
int sse_buf_event(sse_buf *b, const char *event, const char *id, int retry_ms,
                  const char *data, size_t len);

/* Appends a comment line ": TEXT\n\n" (a heartbeat). Same errors as sse_buf_event. */
int sse_buf_comment(sse_buf *b, const char *text);

/* Moves every pending byte of front before b's pending bytes (front ends empty). Ignores
 * the maximum: the caller already accepted those bytes. */
void sse_buf_prepend(sse_buf *b, sse_buf *front);

/* Copies up to max pending bytes into out and consumes them; returns how many. */
size_t sse_buf_read(sse_buf *b, char *out, size_t max);

#endif
