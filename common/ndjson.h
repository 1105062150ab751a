/* ndjson: splits a byte stream into newline-delimited lines (one JSON-RPC message each)
 * with a hard limit on the line length, so a peer can never make us buffer more than that.
 * Used for upstream stdio servers' stdout; knows nothing about JSON itself. */
#ifndef MCPHUB_NDJSON_H
#define MCPHUB_NDJSON_H

#include <stddef.h>
#include <stdint.h>

typedef struct ndjson ndjson;

/* Errors reported through ndjson_error_fn. */
typedef enum ndjson_error {
    /* A line grew past max_line; its bytes up to the next '\n' are dropped. */
    NDJSON_E_TOO_LONG = 1,
} ndjson_error;

/* Called once per complete, non-empty line. `line` excludes the '\n' and a trailing '\r', is
 * NOT NUL-terminated, and is borrowed: it may point into the caller's buffer or into the
 * framer's own, valid only during the call. Return 0 to go on; a nonzero value stops
 * ndjson_feed at once, which returns it (the rest of that buffer is not looked at, so the
 * framer's place in the stream is lost: stop feeding it). */
typedef int (*ndjson_line_fn)(void *ud, const char *line, size_t len);

/* Called once per over-long line, as soon as it passes max_line (before its end arrived),
 * with the same ud as ndjson_feed. The line is then skipped up to and including its '\n'.
 * Return 0 to go on, nonzero to stop like ndjson_line_fn. */
typedef int (*ndjson_error_fn)(void *ud, ndjson_error err);

/* Returns a new framer for lines of at most max_line bytes (counted before the '\n', a '\r'
 * included; max_line >= 1). Memory held is at most max_line bytes plus the struct, and
 * drops back once a large line has been delivered. Aborts on out of memory (never NULL). */
ndjson *ndjson_new(size_t max_line);

/* Frees the framer and any buffered partial line. ndjson_free(NULL) does nothing. */
void ndjson_free(ndjson *f);

/* Sets the callback for over-long lines (NULL: they are dropped silently, still counted). */
void ndjson_set_error_fn(ndjson *f, ndjson_error_fn on_error);

/* Consumes len bytes of buf (any split of the stream is fine: a line may arrive across any
 * number of calls; many lines may arrive in one) and runs on_line for every line they
 * complete. Blank lines ("\n", "\r\n") are skipped. Returns 0, or the nonzero value a
 * callback returned to stop. A trailing partial line stays buffered for the next call.
 * Not thread-safe: one framer, one thread at a time. */
int ndjson_feed(ndjson *f, const char *buf, size_t len, ndjson_line_fn on_line, void *ud);

/* Bytes of the current partial line held in the framer (0 while skipping an over-long line). */
size_t ndjson_buffered(const ndjson *f);

/* Over-long lines seen so far. */
uint64_t ndjson_dropped(const ndjson *f);

#endif
