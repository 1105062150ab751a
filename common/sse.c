/* sse: text/event-stream parsing (see sse.h). Lines are never buffered whole: each arrives as
 * segments that go straight into the field they set, so the bytes held are the current event's
 * data, type and id plus the last event id, and one event's field lines are at most max_event. */
#include "sse.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* A buffer that grew past this for one large event is released after it, so an idle stream
 * does not keep megabytes because of one big event long ago. */
#define SSE_KEEP_BYTES (64u * 1024u)
#define SSE_FIRST_BYTES 256u

/* Where the parser is inside the current line. */
typedef enum sse_line {
    SSE_LINE_START = 0, /* nothing of the line seen yet */
    SSE_LINE_NAME,      /* reading the field name, up to ':' */
    SSE_LINE_COLON,     /* just past ':'; one ' ' here is not part of the value */
    SSE_LINE_VALUE,     /* reading the value */
    SSE_LINE_SKIP,      /* a comment, or a line of a dropped event: ignored up to its end */
} sse_line;

typedef enum sse_field {
    SSE_F_OTHER = 0,
    SSE_F_DATA,
    SSE_F_EVENT,
    SSE_F_ID,
    SSE_F_RETRY,
} sse_field;

typedef struct sse_buf {
    char *p;
    size_t len;
    size_t cap; /* <= max_event + 1 (the +1 for the NUL an event hands out) */
} sse_buf;

struct sse {
    size_t max_event;
    size_t event_bytes; /* bytes of the current event's field lines so far, <= max_event */
    sse_line line;
    sse_field field;    /* of the current line, once its name is complete */
    char name[8];       /* the field name's first bytes; longer names are no field we know */
    size_t name_len;    /* saturates at sizeof name */
    int after_cr;       /* the last line ended in '\r': a '\n' next is part of that line end */
    int skipping;       /* the current event passed max_event: drop up to the blank line */
    int bom_done;       /* past the stream's first bytes, where a BOM may stand */
    size_t bom_seen;    /* bytes of a BOM matched so far */
    sse_buf data;       /* data lines, each followed by '\n' */
    sse_buf type;       /* event type buffer; empty means "message" */
    sse_buf id_line;    /* value of the id line being read */
    int id_nul;         /* ... and it holds a NUL, so it will be ignored */
    sse_buf id_pend;    /* last event id buffer, when this event's id lines changed it */
    int id_pend_set;
    sse_buf id_last;    /* last event id string: id_pend as of the last blank line */
    int has_last;
    int retry_ok;       /* the retry line being read has only digits so far */
    int64_t retry_val;
    size_t retry_digits;
    int64_t retry_ms;
    uint64_t dropped;
    sse_error_fn on_error;
};

sse *sse_new(size_t max_event)
{
    sse *p = calloc(1, sizeof *p);

    if (!p)
        abort();
    if (max_event == 0)
        max_event = 1;
    if (max_event > SIZE_MAX / 2)
        max_event = SIZE_MAX / 2; /* keeps max_event + 1 and doubling free of overflow */
    p->max_event = max_event;
    p->retry_ms = -1;
    return p;
}

void sse_free(sse *p)
{
    if (!p)
        return;
    free(p->data.p);
    free(p->type.p);
    free(p->id_line.p);
    free(p->id_pend.p);
    free(p->id_last.p);
    free(p);
}

void sse_set_error_fn(sse *p, sse_error_fn on_error)
{
    p->on_error = on_error;
}

const char *sse_last_id(const sse *p)
{
    return p->has_last ? p->id_last.p : NULL;
}

int64_t sse_retry_ms(const sse *p)
{
    return p->retry_ms;
}

uint64_t sse_dropped(const sse *p)
{
    return p->dropped;
}

/* Appends n bytes, keeping room for a NUL after them. The caller's accounting of event bytes
 * guarantees the total stays within max_event. */
static void sse_buf_add(sse *p, sse_buf *b, const char *s, size_t n)
{
    size_t limit = p->max_event + 1;
    size_t need = b->len + n + 1;

    assert(need <= limit);
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : SSE_FIRST_BYTES;

        while (cap < need && cap <= limit / 2)
            cap *= 2;
        if (cap < need || cap > limit)
            cap = limit;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sse_buf_trim(sse_buf *b)
{
    b->len = 0;
    if (b->cap > SSE_KEEP_BYTES) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

static void sse_buf_swap(sse_buf *a, sse_buf *b)
{
    sse_buf t = *a;

    *a = *b;
    *b = t;
}

/* The field name is complete: decide what the value will set. */
static void sse_value_begin(sse *p)
{
    static const struct {
        const char *name;
        size_t len;
        sse_field field;
    } known[] = {
        {"data", 4, SSE_F_DATA},
        {"event", 5, SSE_F_EVENT},
        {"id", 2, SSE_F_ID},
        {"retry", 5, SSE_F_RETRY},
    };

    p->field = SSE_F_OTHER;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (p->name_len == known[i].len && memcmp(p->name, known[i].name, known[i].len) == 0)
            p->field = known[i].field;
    switch (p->field) {
    case SSE_F_EVENT:
        p->type.len = 0; /* the field sets the type, it does not add to it */
        break;
    case SSE_F_ID:
        p->id_line.len = 0;
        p->id_nul = 0;
        break;
    case SSE_F_RETRY:
        p->retry_ok = 1;
        p->retry_val = 0;
        p->retry_digits = 0;
        break;
    default:
        break;
    }
    p->line = SSE_LINE_COLON;
}

static void sse_value_add(sse *p, const char *s, size_t n)
{
    switch (p->field) {
    case SSE_F_DATA:
        sse_buf_add(p, &p->data, s, n);
        break;
    case SSE_F_EVENT:
        sse_buf_add(p, &p->type, s, n);
        break;
    case SSE_F_ID:
        if (!p->id_nul && memchr(s, '\0', n))
            p->id_nul = 1;
        if (!p->id_nul)
            sse_buf_add(p, &p->id_line, s, n);
        break;
    case SSE_F_RETRY:
        for (size_t i = 0; i < n && p->retry_ok; i++) {
            int d = (unsigned char)s[i] - '0';

            if (d < 0 || d > 9) {
                p->retry_ok = 0;
            } else {
                /* Saturates: a longer wait than int64 ms holds is "never" all the same. */
                p->retry_val = p->retry_val > (INT64_MAX - d) / 10 ? INT64_MAX
                                                                   : p->retry_val * 10 + d;
                p->retry_digits++;
            }
        }
        break;
    default:
        break;
    }
}

static void sse_value_end(sse *p)
{
    switch (p->field) {
    case SSE_F_DATA:
        sse_buf_add(p, &p->data, "\n", 1);
        break;
    case SSE_F_ID:
        if (!p->id_nul) {
            sse_buf_swap(&p->id_pend, &p->id_line);
            p->id_pend_set = 1;
        }
        break;
    case SSE_F_RETRY:
        if (p->retry_ok && p->retry_digits > 0)
            p->retry_ms = p->retry_val;
        break;
    default:
        break;
    }
}

/* The current event passed max_event: forget what it set so far (its id included, so a
 * dropped event never becomes the id we resume after) and drop the rest of it. */
static int sse_too_long(sse *p, void *ud)
{
    p->skipping = 1;
    p->line = SSE_LINE_SKIP;
    p->dropped++;
    sse_buf_trim(&p->data);
    sse_buf_trim(&p->type);
    sse_buf_trim(&p->id_line);
    sse_buf_trim(&p->id_pend);
    p->id_pend_set = 0;
    if (p->on_error)
        return p->on_error(ud, SSE_E_TOO_LONG);
    return 0;
}

/* Takes a non-empty piece of the current line (no line-end bytes in it). */
static int sse_line_bytes(sse *p, const char *s, size_t n, void *ud)
{
    if (p->line == SSE_LINE_START) {
        if (p->skipping || s[0] == ':') {
            p->line = SSE_LINE_SKIP;
        } else {
            p->line = SSE_LINE_NAME;
            p->name_len = 0;
        }
    }
    if (p->line == SSE_LINE_SKIP)
        return 0;
    /* Counted before anything is stored, so no buffer ever holds more than the limit. */
    if (n > p->max_event - p->event_bytes)
        return sse_too_long(p, ud);
    p->event_bytes += n;
    if (p->line == SSE_LINE_NAME) {
        const char *colon = memchr(s, ':', n);
        size_t k = colon ? (size_t)(colon - s) : n;
        size_t room = sizeof p->name - p->name_len;

        memcpy(p->name + p->name_len, s, k < room ? k : room);
        p->name_len += k < room ? k : room;
        if (!colon)
            return 0;
        sse_value_begin(p);
        s += k + 1;
        n -= k + 1;
    }
    if (p->line == SSE_LINE_COLON && n > 0) {
        if (s[0] == ' ') {
            s++;
            n--;
        }
        p->line = SSE_LINE_VALUE;
    }
    if (n > 0)
        sse_value_add(p, s, n);
    return 0;
}

/* A blank line: the event is complete. */
static int sse_dispatch(sse *p, sse_event_fn on_event, void *ud)
{
    sse_event ev;
    int rc;

    p->event_bytes = 0;
    if (p->skipping) {
        p->skipping = 0; /* what it had set was forgotten when it passed the limit */
        return 0;
    }
    if (p->id_pend_set) {
        sse_buf_swap(&p->id_last, &p->id_pend);
        p->id_pend_set = 0;
        sse_buf_trim(&p->id_pend);
        p->has_last = p->id_last.len > 0; /* an empty id field resets it to none */
        if (p->has_last)
            p->id_last.p[p->id_last.len] = '\0';
    }
    if (p->data.len == 0) {
        p->type.len = 0;
        return 0;
    }
    p->data.p[--p->data.len] = '\0'; /* the '\n' the last data line added */
    /* A type with a NUL in it reaches the callback cut there, possibly as "": no C string
     * holds it whole, and no listener can be waiting for it. */
    if (p->type.len > 0)
        p->type.p[p->type.len] = '\0';
    ev.event = p->type.len > 0 ? p->type.p : "message";
    ev.data = p->data.p;
    ev.data_len = p->data.len;
    ev.id = sse_last_id(p);
    ev.retry_ms = p->retry_ms;
    rc = on_event(ud, &ev);
    sse_buf_trim(&p->data);
    sse_buf_trim(&p->type);
    return rc;
}

/* The current line ended (its end bytes already consumed). */
static int sse_line_end(sse *p, sse_event_fn on_event, void *ud)
{
    switch (p->line) {
    case SSE_LINE_START:
        return sse_dispatch(p, on_event, ud);
    case SSE_LINE_NAME:
        /* No colon: the whole line names the field, and the value is empty. */
        sse_value_begin(p);
        sse_value_end(p);
        break;
    case SSE_LINE_COLON:
    case SSE_LINE_VALUE:
        sse_value_end(p);
        break;
    case SSE_LINE_SKIP:
        break;
    }
    p->line = SSE_LINE_START;
    return 0;
}

/* Finds line ends in one buffer. The next '\r' and '\n' are remembered, so a buffer of many
 * lines is searched once for each, not once per line. */
typedef struct sse_scan {
    const char *buf;
    size_t len;
    size_t cr; /* offset of the next '\r' at or after the last search start, or len */
    size_t lf;
} sse_scan;

static size_t sse_scan_find(const sse_scan *sc, size_t from, char c)
{
    const char *hit = memchr(sc->buf + from, c, sc->len - from);

    return hit ? (size_t)(hit - sc->buf) : sc->len;
}

/* Offset of the first '\r' or '\n' at or after from (from < len), or len. */
static size_t sse_scan_eol(sse_scan *sc, size_t from)
{
    if (sc->cr < from)
        sc->cr = sse_scan_find(sc, from, '\r');
    if (sc->lf < from)
        sc->lf = sse_scan_find(sc, from, '\n');
    return sc->cr < sc->lf ? sc->cr : sc->lf;
}

static int sse_feed_bytes(sse *p, const char *buf, size_t len, sse_event_fn on_event, void *ud)
{
    sse_scan sc = {buf, len, 0, 0};
    size_t pos = 0;
    int rc;

    if (len == 0)
        return 0;
    sc.cr = sse_scan_find(&sc, 0, '\r');
    sc.lf = sse_scan_find(&sc, 0, '\n');
    while (pos < len) {
        size_t eol;

        if (p->after_cr) {
            p->after_cr = 0;
            if (buf[pos] == '\n') {
                pos++;
                continue;
            }
        }
        eol = sse_scan_eol(&sc, pos);
        if (eol > pos && (rc = sse_line_bytes(p, buf + pos, eol - pos, ud)) != 0)
            return rc;
        if (eol == len)
            break;
        /* A '\r' ends the line now (a blank line dispatches at once); the '\n' of a "\r\n"
         * may come in the next buffer, and is swallowed then. */
        p->after_cr = buf[eol] == '\r';
        pos = eol + 1;
        if ((rc = sse_line_end(p, on_event, ud)) != 0)
            return rc;
    }
    return 0;
}

int sse_feed(sse *p, const char *buf, size_t len, sse_event_fn on_event, void *ud)
{
    static const char bom[3] = {'\xEF', '\xBB', '\xBF'};
    int rc;

    /* The BOM may arrive split too; bytes that began like one but were not are stream bytes. */
    while (!p->bom_done && len > 0) {
        if (buf[0] == bom[p->bom_seen]) {
            buf++;
            len--;
            if (++p->bom_seen == sizeof bom)
                p->bom_done = 1;
            continue;
        }
        p->bom_done = 1;
        if (p->bom_seen > 0 && (rc = sse_feed_bytes(p, bom, p->bom_seen, on_event, ud)) != 0)
            return rc;
    }
    return sse_feed_bytes(p, buf, len, on_event, ud);
}
