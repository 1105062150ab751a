/* test_sse: the text/event-stream parser for remote servers' streams. Every input is fed
 * whole, byte by byte, cut at each offset and (when short) at each pair of offsets, and must
 * give the same events and final state every time. Covers line ends, BOM, comments, fields,
 * id and retry rules, over-long events, bounded memory and stopping from a callback. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
#define HAVE_MALLINFO2 1
#endif

#include "sse.h"

/* Inputs up to this long are also cut at every pair of offsets. */
#define PAIR_CUTS_MAX 96

/* A transcript of what the callbacks saw: "[type|data|id|retry]" per event ("-" for no id,
 * "\0" for a NUL in data), "[E]" per over-long event; run() appends "=last,retry,dropped". */
typedef struct {
    char *s;
    size_t len;
    size_t cap;
    sse *p;
    int events;
    int errors;
    int stop_after; /* nonzero: on_event returns 7 from this event on */
    int error_rc;   /* what on_error returns */
} rec;

static void rec_add(rec *r, const char *s, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        r->cap = (r->len + n + 1) * 2;
        r->s = realloc(r->s, r->cap);
        assert_non_null(r->s);
    }
    memcpy(r->s + r->len, s, n);
    r->len += n;
    r->s[r->len] = '\0';
}

static void rec_str(rec *r, const char *s)
{
    rec_add(r, s, strlen(s));
}

static void rec_clear(rec *r)
{
    free(r->s);
    memset(r, 0, sizeof *r);
}

static int on_event(void *ud, const sse_event *ev)
{
    rec *r = ud;
    char num[32];

    assert_non_null(ev->event);
    assert_non_null(ev->data);
    assert_null(strpbrk(ev->event, "\r\n"));
    assert_int_equal(ev->data[ev->data_len], '\0');
    assert_null(memchr(ev->data, '\r', ev->data_len));
    if (!memchr(ev->data, '\0', ev->data_len))
        assert_int_equal(strlen(ev->data), ev->data_len);
    if (r->p) {
        /* The event's id is the parser's last id at that point. */
        assert_true(ev->id == sse_last_id(r->p));
        assert_int_equal(ev->retry_ms, sse_retry_ms(r->p));
    }
    if (ev->id)
        assert_true(ev->id[0] != '\0');
    rec_str(r, "[");
    rec_str(r, ev->event);
    rec_str(r, "|");
    for (size_t i = 0; i < ev->data_len; i++) {
        if (ev->data[i] == '\0')
            rec_str(r, "\\0");
        else
            rec_add(r, ev->data + i, 1);
    }
    rec_str(r, "|");
    rec_str(r, ev->id ? ev->id : "-");
    snprintf(num, sizeof num, "|%lld]", (long long)ev->retry_ms);
    rec_str(r, num);
    r->events++;
    return r->stop_after && r->events >= r->stop_after ? 7 : 0;
}

static int on_error(void *ud, sse_error err)
{
    rec *r = ud;

    assert_int_equal(err, SSE_E_TOO_LONG);
    rec_str(r, "[E]");
    r->errors++;
    return r->error_rc;
}

static sse *parser(size_t max)
{
    sse *p = sse_new(max);

    assert_non_null(p);
    sse_set_error_fn(p, on_error);
    return p;
}

/* Feeds in[0..len) in pieces ending at the ascending offsets cuts[] (then the rest) and
 * returns the transcript with the final state; the caller frees it. */
static char *run(const char *in, size_t len, size_t max, const size_t *cuts, size_t ncuts)
{
    sse *p = parser(max);
    rec r = {0};
    size_t from = 0;
    char tail[256];
    const char *last;

    r.p = p;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;

        assert_true(to >= from && to <= len);
        assert_int_equal(sse_feed(p, in + from, to - from, on_event, &r), 0);
        from = to;
    }
    assert_int_equal(sse_dropped(p), r.errors);
    last = sse_last_id(p);
    snprintf(tail, sizeof tail, "=%s,%lld,%llu", last ? last : "-",
             (long long)sse_retry_ms(p), (unsigned long long)sse_dropped(p));
    rec_str(&r, tail);
    sse_free(p);
    return r.s;
}

static void expect_run(const char *in, size_t len, size_t max, const size_t *cuts,
                       size_t ncuts, const char *want)
{
    char *got = run(in, len, max, cuts, ncuts);

    if (strcmp(got, want) != 0) {
        fprintf(stderr, "cut at:");
        for (size_t i = 0; i < ncuts; i++)
            fprintf(stderr, " %zu", cuts[i]);
        fprintf(stderr, " (of %zu)\n", len);
    }
    assert_string_equal(got, want);
    free(got);
}

/* The input must give `want` however it is cut into feeds. */
static void check(size_t max, const char *in, size_t len, const char *want)
{
    size_t *cuts = malloc((len + 2) * sizeof *cuts);

    assert_non_null(cuts);
    expect_run(in, len, max, NULL, 0, want);
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    expect_run(in, len, max, cuts, len, want); /* one byte per feed */
    for (size_t i = 0; i <= len; i++)
        expect_run(in, len, max, &i, 1, want);
    if (len <= PAIR_CUTS_MAX) {
        for (size_t i = 0; i <= len; i++) {
            for (size_t j = i; j <= len; j++) {
                cuts[0] = i;
                cuts[1] = j;
                expect_run(in, len, max, cuts, 2, want); /* i == j: an empty feed too */
            }
        }
    }
    free(cuts);
}

#define CHECK(max, in, want) check((max), (in), sizeof(in) - 1, (want))

static void test_basic(void **state)
{
    (void)state;
    CHECK(1024, "data: hello\n\n", "[message|hello|-|-1]=-,-1,0");
    CHECK(1024, "data: a\n\ndata: b\n\n", "[message|a|-|-1][message|b|-|-1]=-,-1,0");
    CHECK(1024, "", "=-,-1,0");
    /* Blank lines with nothing before them dispatch nothing. */
    CHECK(1024, "\n\n\r\n\r\r\n", "=-,-1,0");
}

static void test_multiline_data(void **state)
{
    (void)state;
    CHECK(1024, "data: a\ndata:b\ndata:  c\ndata\n\n", "[message|a\nb\n c\n|-|-1]=-,-1,0");
    CHECK(1024, "data: {\"a\":\ndata: 1}\n\n", "[message|{\"a\":\n1}|-|-1]=-,-1,0");
    /* Only the final '\n' goes: an empty last line keeps the one before it. */
    CHECK(1024, "data: x\ndata:\n\n", "[message|x\n|-|-1]=-,-1,0");
    CHECK(1024, "data\ndata\n\n", "[message|\n|-|-1]=-,-1,0");
}

static void test_line_ends(void **state)
{
    (void)state;
    CHECK(1024, "data: x\r\r", "[message|x|-|-1]=-,-1,0");
    CHECK(1024, "data: a\rdata: b\r\rdata: c\r\r",
          "[message|a\nb|-|-1][message|c|-|-1]=-,-1,0");
    CHECK(1024, "data: y\r\n\r\n", "[message|y|-|-1]=-,-1,0");
    CHECK(1024, "event: e\r\nid: 1\r\ndata: a\r\ndata: b\r\n\r\n", "[e|a\nb|1|-1]=1,-1,0");
    CHECK(1024, "data: z\rdata: w\n\r\n", "[message|z\nw|-|-1]=-,-1,0");
    /* "\n\r" is two line ends, not one. */
    CHECK(1024, "data: v\n\rdata: u\n\n", "[message|v|-|-1][message|u|-|-1]=-,-1,0");
    /* "\r\r\n": a line end, then a blank line. */
    CHECK(1024, "data: t\r\r\ndata: s\r\n\r\n", "[message|t|-|-1][message|s|-|-1]=-,-1,0");
    /* No blank line at the end: the unfinished event is not dispatched. */
    CHECK(1024, "data: a\n\ndata: b\n", "[message|a|-|-1]=-,-1,0");
    CHECK(1024, "data: a\n\ndata: b", "[message|a|-|-1]=-,-1,0");
}

static void test_crlf_split_across_feeds(void **state)
{
    sse *p = parser(1024);
    rec r = {0};

    (void)state;
    /* The '\n' of a "\r\n" split over two feeds is not a second (blank) line. */
    assert_int_equal(sse_feed(p, "data: a\r", 8, on_event, &r), 0);
    assert_int_equal(sse_feed(p, "\ndata: b\r", 9, on_event, &r), 0);
    assert_int_equal(r.events, 0);
    assert_int_equal(sse_feed(p, "\n", 1, on_event, &r), 0);
    assert_int_equal(r.events, 0);
    /* A blank line ending in '\r' dispatches at once, before its '\n' (if any) arrives. */
    assert_int_equal(sse_feed(p, "\r", 1, on_event, &r), 0);
    assert_int_equal(r.events, 1);
    assert_string_equal(r.s, "[message|a\nb|-|-1]");
    assert_int_equal(sse_feed(p, "\n", 1, on_event, &r), 0);
    assert_int_equal(sse_feed(p, "data: c\r\r", 9, on_event, &r), 0);
    assert_int_equal(r.events, 2);
    assert_string_equal(r.s, "[message|a\nb|-|-1][message|c|-|-1]");
    sse_free(p);
    rec_clear(&r);
}

static void test_bom(void **state)
{
    (void)state;
    CHECK(1024, "\xEF\xBB\xBF" "data: x\n\n", "[message|x|-|-1]=-,-1,0");
    CHECK(1024, "\xEF\xBB\xBF" "\n" "data: x\n\n", "[message|x|-|-1]=-,-1,0");
    /* Only one BOM, and only at the very start; elsewhere it is part of a field name. */
    CHECK(1024, "\xEF\xBB\xBF\xEF\xBB\xBF" "data: x\n\n", "=-,-1,0");
    CHECK(1024, "data: 1\n\n\xEF\xBB\xBF" "data: 2\n\n", "[message|1|-|-1]=-,-1,0");
    /* In a value it is data like any other bytes. */
    CHECK(1024, "data: \xEF\xBB\xBF\n\n", "[message|\xEF\xBB\xBF|-|-1]=-,-1,0");
    /* Bytes that begin like a BOM but are not one stay in the stream. */
    CHECK(1024, "\xEF\xBB" "data: x\n\n", "=-,-1,0");
    CHECK(1024, "\xEF\xBB\n" "data: x\n\n", "[message|x|-|-1]=-,-1,0");
    CHECK(1024, "\xEF" "\xEF\xBB\xBF" "\n" "data: x\n\n", "[message|x|-|-1]=-,-1,0");
    CHECK(1024, "\xEF\xBB\xBF", "=-,-1,0");
    CHECK(1024, "\xEF\xBB", "=-,-1,0");
}

static void test_comments(void **state)
{
    (void)state;
    CHECK(1024, ": hi\ndata: x\n: mid\ndata: y\n:\n\n", "[message|x\ny|-|-1]=-,-1,0");
    CHECK(1024, ":\n\n: keepalive\n\n", "=-,-1,0");
    CHECK(1024, ":data: x\n\n", "=-,-1,0");
}

static void test_fields(void **state)
{
    (void)state;
    /* One leading space goes, no more; none needed. */
    CHECK(1024, "data:no space\n\n", "[message|no space|-|-1]=-,-1,0");
    CHECK(1024, "data:  two\n\n", "[message| two|-|-1]=-,-1,0");
    CHECK(1024, "data:\tx \n\n", "[message|\tx |-|-1]=-,-1,0");
    /* The value runs from the first colon on. */
    CHECK(1024, "data: a:b: c\n\n", "[message|a:b: c|-|-1]=-,-1,0");
    /* A line with no colon is a field with an empty value. */
    CHECK(1024, "data\n\n", "[message||-|-1]=-,-1,0");
    CHECK(1024, "data:\n\n", "[message||-|-1]=-,-1,0");
    CHECK(1024, "data: \n\n", "[message||-|-1]=-,-1,0");
    /* Unknown fields, names compared exactly. */
    CHECK(1024, "foo: bar\ndata: x\nbar\n\n", "[message|x|-|-1]=-,-1,0");
    CHECK(1024, "DATA: x\nData: y\ndata : z\n datax: w\n\n", "=-,-1,0");
}

static void test_fields_unknown_names(void **state)
{
    (void)state;
    CHECK(1024, "dat: x\ndataa: y\nd: z\nretryy: 5\nidd: 9\nevents: e\ndata: ok\n\n",
          "[message|ok|-|-1]=-,-1,0");
    /* A field name longer than any we know, across feeds. */
    CHECK(1024, "dataaaaaaaaaaaaaaaaaaaaa: x\nevent-type: y\ndata: ok\n\n",
          "[message|ok|-|-1]=-,-1,0");
}

static void test_event_type(void **state)
{
    (void)state;
    CHECK(1024, "event: add\ndata: 1\n\ndata: 2\n\n", "[add|1|-|-1][message|2|-|-1]=-,-1,0");
    CHECK(1024, "event: a\nevent: bc\ndata: x\n\n", "[bc|x|-|-1]=-,-1,0");
    CHECK(1024, "event: long-name\nevent: b\ndata: x\n\n", "[b|x|-|-1]=-,-1,0");
    /* An empty type is "message"; so is a field "event" with no colon. */
    CHECK(1024, "event:\ndata: x\n\n", "[message|x|-|-1]=-,-1,0");
    CHECK(1024, "event: a\nevent\ndata: x\n\n", "[message|x|-|-1]=-,-1,0");
    /* A type with no data is not dispatched, and does not carry over. */
    CHECK(1024, "event: x\n\ndata: y\n\n", "[message|y|-|-1]=-,-1,0");
    CHECK(1024, "data: y\nevent: late\n\n", "[late|y|-|-1]=-,-1,0");
    /* The type is handed out as a C string, so one with a NUL ends there ("" included). */
    CHECK(1024, "event: \0x\ndata: d\n\n", "[|d|-|-1]=-,-1,0");
    CHECK(1024, "event: up\0date\ndata: d\n\n", "[up|d|-|-1]=-,-1,0");
}

static void test_id(void **state)
{
    (void)state;
    /* The id persists across events. */
    CHECK(1024, "id: 1\ndata: a\n\ndata: b\n\n", "[message|a|1|-1][message|b|1|-1]=1,-1,0");
    CHECK(1024, "data: a\nid: 1\n\nid: 2\ndata: b\n\n", "[message|a|1|-1][message|b|2|-1]=2,-1,0");
    /* An empty id resets it to none. */
    CHECK(1024, "id: 1\ndata: a\n\nid\ndata: b\n\n", "[message|a|1|-1][message|b|-|-1]=-,-1,0");
    CHECK(1024, "id: 1\ndata: a\n\nid:\ndata: b\n\n", "[message|a|1|-1][message|b|-|-1]=-,-1,0");
    CHECK(1024, "id: 1\ndata: a\n\nid: \ndata: b\n\n", "[message|a|1|-1][message|b|-|-1]=-,-1,0");
    /* An id without data is not dispatched but still becomes the last id at the blank line. */
    CHECK(1024, "id: 7\n\n", "=7,-1,0");
    CHECK(1024, "id: 7\n\ndata: x\n\n", "[message|x|7|-1]=7,-1,0");
    /* An event cut before its blank line does not set the last id. */
    CHECK(1024, "id: 1\n\nid: 2\ndata: x\n", "=1,-1,0");
    /* The last id line of an event wins; ids are values like others. */
    CHECK(1024, "id: 1\nid:  2 \ndata: x\n\n", "[message|x| 2 |-1]= 2 ,-1,0");
    CHECK(1024, "id: 0-1:abc\ndata: x\n\n", "[message|x|0-1:abc|-1]=0-1:abc,-1,0");
}

static void test_id_with_nul_ignored(void **state)
{
    (void)state;
    CHECK(1024, "id: 2\n\nid: x\0y\ndata: d\n\n", "[message|d|2|-1]=2,-1,0");
    CHECK(1024, "id: \0\ndata: d\n\n", "[message|d|-|-1]=-,-1,0");
    /* Within one event: the earlier id stands. */
    CHECK(1024, "id: 1\nid: 2\0\ndata: x\n\n", "[message|x|1|-1]=1,-1,0");
    CHECK(1024, "id: 1\nid: \0\ndata: x\n\nid: 3\n\n", "[message|x|1|-1]=3,-1,0");
    /* NUL elsewhere is data. */
    CHECK(1024, "data: a\0b\n\n", "[message|a\\0b|-|-1]=-,-1,0");
}

static void test_retry(void **state)
{
    sse *p = parser(1024);
    rec r = {0};

    (void)state;
    CHECK(1024, "retry: 3000\ndata: x\n\n", "[message|x|-|3000]=-,3000,0");
    CHECK(1024, "retry:0\n", "=-,0,0");
    CHECK(1024, "retry: 5\nretry: 6\n\nretry: 7\n", "=-,7,0");
    /* Anything but ASCII digits is ignored, keeping the earlier value. */
    CHECK(1024, "retry: 10\nretry: 30a0\nretry: -5\nretry:\nretry\nretry: 1 \nretry:  5\n"
                "retry: +5\nretry: 1.5\nretry: \xD9\xA3\ndata: x\n\n",
          "[message|x|-|10]=-,10,0");
    CHECK(1024, "retry: 00042\n", "=-,42,0");
    /* Too large for int64: saturates. */
    CHECK(1024, "retry: 99999999999999999999999999\n", "=-,9223372036854775807,0");
    CHECK(1024, "retry: 9223372036854775807\n", "=-,9223372036854775807,0");
    CHECK(1024, "retry: 9223372036854775806\n", "=-,9223372036854775806,0");
    /* It takes effect at its line end, without a blank line. */
    assert_int_equal(sse_retry_ms(p), -1);
    assert_int_equal(sse_feed(p, "retry: 250", 10, on_event, &r), 0);
    assert_int_equal(sse_retry_ms(p), -1);
    assert_int_equal(sse_feed(p, "\n", 1, on_event, &r), 0);
    assert_int_equal(sse_retry_ms(p), 250);
    sse_free(p);
    rec_clear(&r);
}

static void test_no_data_not_dispatched(void **state)
{
    (void)state;
    CHECK(1024, "event: x\nid: 3\n\n: c\n\n\n\nretry: 1\n\n", "=3,1,0");
    CHECK(1024, "foo\n\nevent: e\n\n", "=-,-1,0");
}

static void test_too_long(void **state)
{
    (void)state;
    /* "data: 0123456789" is 16 bytes: exactly the limit is fine, one more is not. */
    CHECK(16, "data: 0123456789\n\n", "[message|0123456789|-|-1]=-,-1,0");
    CHECK(16, "data: 01234567890\n\ndata: ok\n\n", "[E][message|ok|-|-1]=-,-1,1");
    /* The sum over the event's lines counts, line ends not included. */
    CHECK(16, "data: 12\ndata: 12\n\n", "[message|12\n12|-|-1]=-,-1,0");
    CHECK(16, "data: 12\ndata: 123\n\ndata: ok\r\n\r\n", "[E][message|ok|-|-1]=-,-1,1");
    CHECK(16, "event: e\ndata: 12\n\n", "[e|12|-|-1]=-,-1,0");
    CHECK(16, "event: ee\ndata: 12\n\n", "[E]=-,-1,1");
    /* Comments and blank lines do not count; the count starts over with each event. */
    CHECK(16, ": a rather long comment line\ndata: 0123456789\n\ndata: 0123456789\n\n",
          "[message|0123456789|-|-1][message|0123456789|-|-1]=-,-1,0");
    /* Reported once; the rest of the event is dropped, its id and retry lines included. */
    CHECK(16, "data: 0123456789\ndata: x\nid: 9\nretry: 5\ndata: y\n\ndata: after\n\n",
          "[E][message|after|-|-1]=-,-1,1");
    /* Its id is forgotten even when it came before the limit was passed... */
    CHECK(16, "id: 1\n\nid: 5\ndata: 0123456789\n\ndata: x\n\n",
          "[E][message|x|1|-1]=1,-1,1");
    /* ... while a retry line already took effect, as retry lines do at once. */
    CHECK(16, "retry: 5\ndata: 0123456789\n\ndata: x\n\n", "[E][message|x|-|5]=-,5,1");
    /* Comments inside the dropped event are dropped too; then the next one is fine. */
    CHECK(16, "data: 0123456789abc\n: c\ndata: y\n\nevent: ok\ndata: 1\n\n",
          "[E][ok|1|-|-1]=-,-1,1");
    /* Two over-long events in a row. */
    CHECK(4, "data: x\n\nid: 12345\n\ndata\n\n", "[E][E][message||-|-1]=-,-1,2");
    /* Limit 1: nothing but blank lines and comments. */
    CHECK(1, "d\n\n:comment\n\nx\n\n", "=-,-1,0");
    CHECK(1, "data\n\n", "[E]=-,-1,1");
    /* The line with no end yet is reported as soon as it passes the limit. */
    CHECK(16, "data: 01234567890123", "[E]=-,-1,1");
}

static void test_too_long_reported_early(void **state)
{
    sse *p = parser(16);
    rec r = {0};

    (void)state;
    assert_int_equal(sse_feed(p, "data: 0123", 10, on_event, &r), 0);
    assert_int_equal(r.errors, 0);
    assert_int_equal(sse_feed(p, "456789", 6, on_event, &r), 0);
    assert_int_equal(r.errors, 0);
    assert_int_equal(sse_feed(p, "X", 1, on_event, &r), 0);
    assert_int_equal(r.errors, 1);
    assert_int_equal(sse_feed(p, "more\ndata: more\n", 16, on_event, &r), 0);
    assert_int_equal(sse_feed(p, "\ndata: ok\n\n", 11, on_event, &r), 0);
    assert_int_equal(r.errors, 1);
    assert_string_equal(r.s, "[E][message|ok|-|-1]");
    assert_int_equal(sse_dropped(p), 1);
    sse_free(p);
    rec_clear(&r);
}

#ifdef HAVE_MALLINFO2
static size_t heap_in_use(void)
{
    return mallinfo2().uordblks;
}
#endif

static void test_bounded_memory(void **state)
{
    size_t big = 1024 * 1024, max = 64 * 1024, chunk = 16 * 1024;
    char *junk = malloc(big);
    sse *p = parser(max);
    rec r = {0};

    (void)state;
    assert_non_null(junk);
    memset(junk, 'x', big);
    rec_str(&r, ""); /* the transcript's buffer, allocated before measuring */
#ifdef HAVE_MALLINFO2
    size_t base = heap_in_use();
#endif
    /* One enormous line with no end: a field name, then a data value. */
    for (int i = 0; i < 8; i++)
        assert_int_equal(sse_feed(p, junk, big, on_event, &r), 0);
    assert_int_equal(sse_feed(p, "\n\ndata: ", 8, on_event, &r), 0);
    for (size_t done = 0; done < 8 * big; done += chunk) {
        assert_int_equal(sse_feed(p, junk, chunk, on_event, &r), 0);
#ifdef HAVE_MALLINFO2
        assert_true(heap_in_use() <= base + 2 * max + 4096);
#endif
    }
    assert_int_equal(r.errors, 2);
    assert_int_equal(sse_feed(p, "\n\ndata: ok\n\n", 12, on_event, &r), 0);
    assert_string_equal(r.s, "[E][E][message|ok|-|-1]");
    sse_free(p);
    free(junk);
    rec_clear(&r);
}

static void test_large_event_kept_whole(void **state)
{
    size_t n = 200 * 1024;
    char *in = malloc(n + 16);
    sse *p = parser(1024 * 1024);
    rec r = {0};
    size_t len;

    (void)state;
    assert_non_null(in);
    memcpy(in, "data: ", 6);
    for (size_t i = 0; i < n; i++)
        in[6 + i] = (char)('a' + i % 26);
    memcpy(in + 6 + n, "\n\n", 2);
    len = n + 8;
    assert_int_equal(sse_feed(p, in, 70000, on_event, &r), 0);
    assert_int_equal(sse_feed(p, in + 70000, 70000, on_event, &r), 0);
    assert_int_equal(sse_feed(p, in + 140000, len - 140000, on_event, &r), 0);
    assert_int_equal(r.events, 1);
    assert_int_equal(r.len, strlen("[message||-|-1]") + n);
    assert_memory_equal(r.s + strlen("[message|"), in + 6, n);
    assert_int_equal(sse_feed(p, "data: after\n\n", 13, on_event, &r), 0);
    assert_int_equal(r.events, 2);
    sse_free(p);
    free(in);
    rec_clear(&r);
}

static void test_stop_from_callback(void **state)
{
    static const char in[] = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    sse *p = parser(64);
    rec r = {0};

    (void)state;
    r.stop_after = 2;
    assert_int_equal(sse_feed(p, in, sizeof in - 1, on_event, &r), 7);
    assert_int_equal(r.events, 2);
    assert_string_equal(r.s, "[message|1|-|-1][message|2|-|-1]");
    sse_free(p);
    rec_clear(&r);

    /* The error callback stops it the same way. */
    p = parser(8);
    r.error_rc = 9;
    assert_int_equal(sse_feed(p, "data: 1\n\ndata: 123456\n\ndata: 3\n\n", 33, on_event, &r), 9);
    assert_string_equal(r.s, "[message|1|-|-1][E]");
    sse_free(p);
    rec_clear(&r);
}

static void test_mcp_stream(void **state)
{
    (void)state;
    /* Streamable HTTP: a progress notification, a keepalive, then the answer. */
    CHECK(1 << 20,
          "id: 0-1\n"
          "event: message\n"
          "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\","
          "\"params\":{\"progressToken\":1,\"progress\":50}}\n"
          "\n"
          ": keepalive\n"
          "\n"
          "event: message\n"
          "id: 0-2\n"
          "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":"
          "[{\"type\":\"text\",\"text\":\"hi\"}]}}\n"
          "\n",
          "[message|{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\","
          "\"params\":{\"progressToken\":1,\"progress\":50}}|0-1|-1]"
          "[message|{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":"
          "[{\"type\":\"text\",\"text\":\"hi\"}]}}|0-2|-1]=0-2,-1,0");
    /* A priming event (id, empty data) and a retry hint, then a message, with CRLF. */
    CHECK(1 << 20,
          "id: 1a2b\r\nretry: 3000\r\ndata:\r\n\r\n"
          "event: message\r\nid: 1a2c\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"r-1\","
          "\"result\":{}}\r\n\r\n",
          "[message||1a2b|3000][message|{\"jsonrpc\":\"2.0\",\"id\":\"r-1\",\"result\":{}}"
          "|1a2c|3000]=1a2c,3000,0");
    /* Legacy HTTP+SSE: the endpoint event first. */
    CHECK(1 << 20,
          "event: endpoint\ndata: /messages?sessionId=5f0c\n\n"
          "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{}}\n\n",
          "[endpoint|/messages?sessionId=5f0c|-|-1]"
          "[message|{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{}}|-|-1]=-,-1,0");
}

static void test_no_error_fn_and_free_null(void **state)
{
    sse *p = sse_new(8);
    rec r = {0};

    (void)state;
    assert_null(sse_last_id(p));
    assert_int_equal(sse_retry_ms(p), -1);
    assert_int_equal(sse_feed(p, "data: 123456\n\ndata: ok\n\n", 24, on_event, &r), 0);
    assert_string_equal(r.s, "[message|ok|-|-1]");
    assert_int_equal(sse_dropped(p), 1);
    assert_int_equal(sse_feed(p, NULL, 0, on_event, &r), 0);
    sse_free(p);
    sse_free(NULL);
    rec_clear(&r);
    /* max_event 0 is taken as 1. */
    p = sse_new(0);
    assert_int_equal(sse_feed(p, "x\n\nxy\n\n", 7, on_event, &r), 0);
    assert_int_equal(sse_dropped(p), 1);
    sse_free(p);
    rec_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_multiline_data),
        cmocka_unit_test(test_line_ends),
        cmocka_unit_test(test_crlf_split_across_feeds),
        cmocka_unit_test(test_bom),
        cmocka_unit_test(test_comments),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_fields_unknown_names),
        cmocka_unit_test(test_event_type),
        cmocka_unit_test(test_id),
        cmocka_unit_test(test_id_with_nul_ignored),
        cmocka_unit_test(test_retry),
        cmocka_unit_test(test_no_data_not_dispatched),
        cmocka_unit_test(test_too_long),
        cmocka_unit_test(test_too_long_reported_early),
        cmocka_unit_test(test_bounded_memory),
        cmocka_unit_test(test_large_event_kept_whole),
        cmocka_unit_test(test_stop_from_callback),
        cmocka_unit_test(test_mcp_stream),
        cmocka_unit_test(test_no_error_fn_and_free_null),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
