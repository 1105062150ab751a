/* fuzz_sse: libFuzzer target for the text/event-stream parser that reads remote servers'
 * streams. The first two bytes choose the event limit, where a callback stops the parser, and
 * how the rest is cut into feeds; whole and cut feeds must give the events (and final state)
 * of a plain line-at-a-time reference written from the spec, and every event must be sane. */
#include "sse.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_STOP_RC 5

/* A transcript: 'V' type data id retry per event, 'X' per over-long event, 'F' last-id retry
 * dropped at the end; strings as a length then bytes, so any byte may be in them. */
typedef struct {
    uint8_t *p;
    size_t len;
    size_t cap;
} fz_buf;

typedef struct {
    fz_buf out;
    const sse *p;
    size_t max_event;
    size_t records;    /* events and errors so far */
    size_t stop_after; /* 0: never stop; else the callback returning makes this many */
} fz_run;

static void fz_add(fz_buf *b, const void *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;

        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void fz_add_str(fz_buf *b, const void *s, size_t n)
{
    uint64_t len = n;

    fz_add(b, &len, sizeof len);
    fz_add(b, s, n);
}

static void fz_add_id(fz_buf *b, const char *id)
{
    fz_add(b, id ? "1" : "0", 1);
    if (id)
        fz_add_str(b, id, strlen(id));
}

static void fz_add_event(fz_buf *b, const char *type, const char *d, size_t d_len,
                         const char *id, int64_t retry)
{
    fz_add(b, "V", 1);
    fz_add_str(b, type, strlen(type));
    fz_add_str(b, d, d_len);
    fz_add_id(b, id);
    fz_add(b, &retry, sizeof retry);
}

static void fz_add_final(fz_buf *b, const char *last, int64_t retry, uint64_t dropped)
{
    fz_add(b, "F", 1);
    fz_add_id(b, last);
    fz_add(b, &retry, sizeof retry);
    fz_add(b, &dropped, sizeof dropped);
}

static int fz_on_event(void *ud, const sse_event *ev)
{
    fz_run *r = ud;

    if (!ev->event || !ev->data || strpbrk(ev->event, "\r\n"))
        abort();
    if (ev->data[ev->data_len] != '\0' || ev->data_len >= r->max_event ||
        memchr(ev->data, '\r', ev->data_len))
        abort();
    if (!memchr(ev->data, '\0', ev->data_len) && strlen(ev->data) != ev->data_len)
        abort();
    if (ev->id != sse_last_id(r->p) || (ev->id && (ev->id[0] == '\0' || strpbrk(ev->id, "\r\n"))))
        abort();
    if (ev->retry_ms != sse_retry_ms(r->p) || ev->retry_ms < -1)
        abort();
    fz_add_event(&r->out, ev->event, ev->data, ev->data_len, ev->id, ev->retry_ms);
    r->records++;
    return r->stop_after && r->records >= r->stop_after ? FZ_STOP_RC : 0;
}

static int fz_on_error(void *ud, sse_error err)
{
    fz_run *r = ud;

    if (err != SSE_E_TOO_LONG)
        abort();
    fz_add(&r->out, "X", 1);
    r->records++;
    return r->stop_after && r->records >= r->stop_after ? FZ_STOP_RC : 0;
}

/* The reference: split the whole input into lines first, then apply the spec's steps to
 * each, with the limit checked per line (a line passing it, even one with no end yet, makes
 * the event over-long, and what the event had set is forgotten). */
typedef struct {
    fz_buf d, type, pend, last;
    int pend_set, has_last, skipping;
    int64_t retry;
    uint64_t dropped;
    size_t used, records;
} fz_ref;

static void fz_ref_line(fz_ref *s, const uint8_t *line, size_t n)
{
    const uint8_t *colon = memchr(line, ':', n);
    size_t name_len = colon ? (size_t)(colon - line) : n;
    const uint8_t *v = colon ? colon + 1 : line + n;
    size_t v_len = (size_t)(line + n - v);

    if (v_len > 0 && v[0] == ' ') {
        v++;
        v_len--;
    }
    if (name_len == 4 && memcmp(line, "data", 4) == 0) {
        fz_add(&s->d, v, v_len);
        fz_add(&s->d, "\n", 1);
    } else if (name_len == 5 && memcmp(line, "event", 5) == 0) {
        s->type.len = 0;
        fz_add(&s->type, v, v_len);
    } else if (name_len == 2 && memcmp(line, "id", 2) == 0) {
        if (!memchr(v, '\0', v_len)) {
            s->pend.len = 0;
            fz_add(&s->pend, v, v_len);
            s->pend_set = 1;
        }
    } else if (name_len == 5 && memcmp(line, "retry", 5) == 0) {
        int64_t val = 0;
        size_t i;

        for (i = 0; i < v_len && v[i] >= '0' && v[i] <= '9'; i++)
            val = val > (INT64_MAX - (v[i] - '0')) / 10 ? INT64_MAX : val * 10 + (v[i] - '0');
        if (v_len > 0 && i == v_len)
            s->retry = val;
    }
}

static void fz_ref_blank(fz_ref *s, fz_buf *out)
{
    char *type, *last = NULL;

    s->used = 0;
    if (s->skipping) {
        s->skipping = 0;
        return;
    }
    if (s->pend_set) {
        s->last.len = 0;
        fz_add(&s->last, s->pend.p, s->pend.len);
        fz_add(&s->last, "", 1);
        s->has_last = s->pend.len > 0;
        s->pend_set = 0;
    }
    if (s->has_last)
        last = (char *)s->last.p;
    if (s->d.len > 0) {
        /* A type is handed out as a C string: one with a NUL in it ends there. */
        fz_add(&s->type, "", 1);
        type = (char *)s->type.p;
        fz_add_event(out, s->type.len > 1 ? type : "message", (const char *)s->d.p, s->d.len - 1,
                     last, s->retry);
        s->records++;
    }
    s->d.len = 0;
    s->type.len = 0;
}

static void fz_reference(const uint8_t *in, size_t n, size_t max_event, fz_buf *out)
{
    static const uint8_t bom[3] = {0xEF, 0xBB, 0xBF};
    fz_ref s;
    size_t i = 0;

    memset(&s, 0, sizeof s);
    s.retry = -1;
    if (n >= 3 && memcmp(in, bom, 3) == 0)
        i = 3;
    else if (n < 3 && memcmp(in, bom, n) == 0)
        i = n; /* might yet have been a BOM: the parser waits for more */
    while (i < n) {
        size_t j = i;
        const uint8_t *line = in + i;

        while (j < n && in[j] != '\r' && in[j] != '\n')
            j++;
        if (j > i && line[0] != ':' && !s.skipping) {
            if (j - i > max_event - s.used) {
                fz_add(out, "X", 1);
                s.records++;
                s.dropped++;
                s.skipping = 1;
                s.d.len = 0;
                s.type.len = 0;
                s.pend_set = 0;
            } else {
                s.used += j - i;
            }
        }
        if (j == n)
            break; /* no line end: never complete */
        i = j + 1;
        if (in[j] == '\r' && i < n && in[i] == '\n')
            i++;
        if (line == in + j)
            fz_ref_blank(&s, out);
        else if (!s.skipping && line[0] != ':')
            fz_ref_line(&s, line, (size_t)(in + j - line));
    }
    fz_add_final(out, s.has_last ? (const char *)s.last.p : NULL, s.retry, s.dropped);
    free(s.d.p);
    free(s.type.p);
    free(s.pend.p);
    free(s.last.p);
}

/* Feeds the input to a new parser, in one piece when seed is 0, else in pieces from a tiny
 * LCG. Returns what the last sse_feed returned. */
static int fz_parse(const uint8_t *in, size_t n, unsigned seed, fz_run *r)
{
    sse *p = sse_new(r->max_event);
    size_t off = 0;
    int rc = 0;

    r->p = p;
    sse_set_error_fn(p, fz_on_error);
    while (off < n && rc == 0) {
        size_t chunk = n - off;

        if (seed) {
            seed = seed * 1103515245u + 12345u;
            chunk = (seed >> 16) % 7 == 0 ? 0 : 1 + (seed >> 8) % 67;
            if (chunk > n - off)
                chunk = n - off;
        }
        rc = sse_feed(p, (const char *)in + off, chunk, fz_on_event, r);
        off += chunk;
    }
    if (rc == 0) {
        if (sse_dropped(p) > r->records)
            abort();
        fz_add_final(&r->out, sse_last_id(p), sse_retry_ms(p), sse_dropped(p));
    }
    sse_free(p);
    return rc;
}

static void fz_same(const fz_buf *a, const fz_buf *b)
{
    if (a->len != b->len || (a->len > 0 && memcmp(a->p, b->p, a->len) != 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t limits[8] = {1, 2, 4, 8, 16, 64, 1024, 1u << 20};
    fz_buf want = {0};
    fz_run whole = {0}, cut = {0}, stop = {0};
    size_t max_event, stop_after;
    unsigned seed;
    int rc;

    if (size < 2)
        return 0;
    max_event = limits[data[0] & 7];
    stop_after = 1 + (data[0] >> 3);
    seed = data[1] | 0x100u; /* nonzero: cut into pieces */
    data += 2;
    size -= 2;

    fz_reference(data, size, max_event, &want);

    whole.max_event = cut.max_event = stop.max_event = max_event;
    if (fz_parse(data, size, 0, &whole) != 0)
        abort();
    fz_same(&whole.out, &want);
    if (fz_parse(data, size, seed, &cut) != 0)
        abort();
    fz_same(&cut.out, &want);

    /* Stopped by a callback: exactly stop_after records, the reference's first ones. */
    stop.stop_after = stop_after;
    rc = fz_parse(data, size, seed, &stop);
    if (rc != (stop.records == stop_after ? FZ_STOP_RC : 0) || stop.records > stop_after)
        abort();
    if (rc == 0)
        fz_same(&stop.out, &want);
    else if (stop.out.len > want.len || memcmp(stop.out.p, want.p, stop.out.len) != 0)
        abort();

    free(want.p);
    free(whole.out.p);
    free(cut.out.p);
    free(stop.out.p);
    return 0;
}
