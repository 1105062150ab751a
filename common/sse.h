/* sse: parses a text/event-stream (the WHATWG "server-sent events" format) from any split of
 * its bytes into events, with a hard limit on one event's size. Used for the streams remote
 * MCP servers send (Streamable HTTP answers and GET streams, legacy HTTP+SSE). */
#ifndef MCPHUB_SSE_H
#define MCPHUB_SSE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sse sse;

/* One dispatched event. All strings are NUL-terminated and borrowed (valid only during the
 * callback). `event` is the event type ("message" when the stream gave none); `data` is the
 * data lines joined by '\n' (the final '\n' removed); `id` is the stream's last event id
 * after this event (the id field persists across events, per the spec), NULL when none is
 * set (an empty `id:` clears it). `retry_ms` is -1, or the reconnection time the stream set
 * most recently. An event type containing a NUL byte reads as its part before the NUL. */
typedef struct sse_event {
    const char *event;
    const char *data;
    size_t data_len;
    const char *id;
    int64_t retry_ms;
} sse_event;

typedef enum sse_error {
    /* An event's fields grew past max_event; its lines are dropped up to the blank line that
     * ends it, and it is not dispatched. */
    SSE_E_TOO_LONG = 1,
} sse_error;

/* Called once per event with a non-empty data buffer (events with no data field are not
 * dispatched, per the spec). Return 0 to go on; nonzero stops sse_feed at once, which
 * returns it (stop feeding this parser then). */
typedef int (*sse_event_fn)(void *ud, const sse_event *ev);

/* Called once per over-long event, with the ud given to sse_feed. Return as sse_event_fn. */
typedef int (*sse_error_fn)(void *ud, sse_error err);

/* A new parser for events of at most max_event bytes (the sum of its field lines' lengths;
 * max_event >= 1). Memory held stays under about twice max_event. Aborts on out of memory. */
sse *sse_new(size_t max_event);

/* Frees the parser. sse_free(NULL) does nothing. */
void sse_free(sse *p);

/* Sets the callback for over-long events (NULL: dropped silently, still counted). */
void sse_set_error_fn(sse *p, sse_error_fn on_error);

/* Consumes len bytes. Lines end in "\r\n", "\n" or "\r" (a "\r\n" split across two calls
 * counts once); a UTF-8 BOM at the very start of the stream is skipped; lines starting with
 * ':' are comments; unknown fields are ignored; an id containing NUL is ignored; retry takes
 * ASCII digits only. Returns 0 or the nonzero value a callback returned. Callbacks must not
 * call sse_feed or sse_free on the same parser. One parser, one thread at a time. */
int sse_feed(sse *p, const char *buf, size_t len, sse_event_fn on_event, void *ud);

/* The last event id of a dispatched (complete) event (borrowed, NUL-terminated), or NULL.
 * This is what a client sends as Last-Event-ID when it reconnects: an id in an event cut off
 * before its blank line does not count. */
const char *sse_last_id(const sse *p);

/* The reconnection time the stream set (ms), or -1. */
int64_t sse_retry_ms(const sse *p);

/* Over-long events seen so far. */
uint64_t sse_dropped(const sse *p);

#endif
