/* test_ndjson: the newline framer for upstream stdout: lines split across feeds, many lines
 * per feed, CRLF, blank lines, over-long lines (reported once, skipped, followed by good
 * ones), lines exactly at the limit, bounded memory, and stopping from a callback. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ndjson.h"

#define MAX_EVENTS 64

/* Events recorded by the callbacks: "L:<text>" for a line, "E" for an over-long one. */
typedef struct {
    char *ev[MAX_EVENTS];
    int n;
    int stop_after; /* return nonzero from the line callback after this many lines; 0: never */
    int lines;
} rec;

static void rec_push(rec *r, const char *prefix, const char *s, size_t len)
{
    size_t p = strlen(prefix);
    char *e = malloc(p + len + 1);

    assert_non_null(e);
    assert_true(r->n < MAX_EVENTS);
    memcpy(e, prefix, p);
    memcpy(e + p, s, len);
    e[p + len] = '\0';
    r->ev[r->n++] = e;
}

static void rec_clear(rec *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->ev[i]);
    memset(r, 0, sizeof *r);
}

static int on_line(void *ud, const char *line, size_t len)
{
    rec *r = ud;

    assert_true(len > 0);
    assert_null(memchr(line, '\n', len));
    rec_push(r, "L:", line, len);
    r->lines++;
    return r->stop_after && r->lines >= r->stop_after ? 7 : 0;
}

static int on_error(void *ud, ndjson_error err)
{
    rec *r = ud;

    assert_int_equal(err, NDJSON_E_TOO_LONG);
    rec_push(r, "E", "", 0);
    return 0;
}

static ndjson *framer(size_t max)
{
    ndjson *f = ndjson_new(max);

    assert_non_null(f);
    ndjson_set_error_fn(f, on_error);
    return f;
}

static void feed(ndjson *f, rec *r, const char *s)
{
    assert_int_equal(ndjson_feed(f, s, strlen(s), on_line, r), 0);
}

static void test_split_across_feeds(void **state)
{
    const char *msg = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n";
    ndjson *f = framer(1024);
    rec r = {0};

    (void)state;
    /* One byte at a time. */
    for (size_t i = 0; i < strlen(msg); i++) {
        assert_int_equal(ndjson_feed(f, msg + i, 1, on_line, &r), 0);
        assert_int_equal(r.n, i + 1 < strlen(msg) ? 0 : 1);
    }
    assert_string_equal(r.ev[0], "L:{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}");
    assert_int_equal(ndjson_buffered(f), 0);
    /* A line started in one feed, ended in the next along with another whole one. */
    feed(f, &r, "{\"a\":");
    assert_int_equal(ndjson_buffered(f), 5);
    feed(f, &r, "1}\n{\"b\":2}\n{\"c\"");
    assert_int_equal(r.n, 3);
    assert_string_equal(r.ev[1], "L:{\"a\":1}");
    assert_string_equal(r.ev[2], "L:{\"b\":2}");
    assert_int_equal(ndjson_buffered(f), 4);
    ndjson_free(f);
    rec_clear(&r);
}

static void test_many_lines_one_feed(void **state)
{
    ndjson *f = framer(64);
    rec r = {0};

    (void)state;
    feed(f, &r, "a\nbb\nccc\ndddd\neeeee\n");
    assert_int_equal(r.n, 5);
    assert_string_equal(r.ev[0], "L:a");
    assert_string_equal(r.ev[4], "L:eeeee");
    ndjson_free(f);
    rec_clear(&r);
}

static void test_crlf_and_blank(void **state)
{
    ndjson *f = framer(64);
    rec r = {0};

    (void)state;
    feed(f, &r, "one\r\n\n\r\n\ntwo\r");
    feed(f, &r, "\n\r\r\nthree\n");
    assert_int_equal(r.n, 4);
    assert_string_equal(r.ev[0], "L:one");
    assert_string_equal(r.ev[1], "L:two");
    assert_string_equal(r.ev[2], "L:\r"); /* only one trailing \r is a line ending */
    assert_string_equal(r.ev[3], "L:three");
    ndjson_free(f);
    rec_clear(&r);
}

static void test_overlong_then_good(void **state)
{
    ndjson *f = framer(8);
    rec r = {0};

    (void)state;
    feed(f, &r, "123456789\nok\n");
    assert_int_equal(r.n, 2);
    assert_string_equal(r.ev[0], "E");
    assert_string_equal(r.ev[1], "L:ok");
    /* Across feeds: reported once, as soon as it passes the limit, before its end. */
    feed(f, &r, "12345");
    assert_int_equal(r.n, 2);
    feed(f, &r, "6789");
    assert_int_equal(r.n, 3);
    assert_string_equal(r.ev[2], "E");
    assert_int_equal(ndjson_buffered(f), 0);
    feed(f, &r, "more bytes of the same long line");
    feed(f, &r, "still\nfine\n");
    assert_int_equal(r.n, 4);
    assert_string_equal(r.ev[3], "L:fine");
    assert_int_equal(ndjson_dropped(f), 2);
    ndjson_free(f);
    rec_clear(&r);
}

static void test_exact_limit(void **state)
{
    ndjson *f = framer(8);
    rec r = {0};

    (void)state;
    feed(f, &r, "12345678\n");       /* exactly max_line: accepted */
    feed(f, &r, "1234");
    feed(f, &r, "5678\n");           /* also when split */
    feed(f, &r, "1234567\r\n");      /* 7 bytes plus \r: 8 before the \n */
    feed(f, &r, "12345678\r\n");     /* the \r counts: 9 bytes, too long */
    feed(f, &r, "123456789\n");      /* one over */
    assert_int_equal(r.n, 5);
    assert_string_equal(r.ev[0], "L:12345678");
    assert_string_equal(r.ev[1], "L:12345678");
    assert_string_equal(r.ev[2], "L:1234567");
    assert_string_equal(r.ev[3], "E");
    assert_string_equal(r.ev[4], "E");
    ndjson_free(f);
    rec_clear(&r);
}

static void test_bounded_memory(void **state)
{
    size_t big = 1024 * 1024;
    char *junk = malloc(big);
    ndjson *f = framer(1024);
    rec r = {0};

    (void)state;
    assert_non_null(junk);
    memset(junk, 'x', big);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(ndjson_feed(f, junk, big, on_line, &r), 0);
        assert_true(ndjson_buffered(f) <= 1024);
    }
    assert_int_equal(r.n, 1); /* one over-long line, reported once */
    feed(f, &r, "\n{}\n");
    assert_int_equal(r.n, 2);
    assert_string_equal(r.ev[1], "L:{}");
    ndjson_free(f);
    free(junk);
    rec_clear(&r);
}

static void test_large_line_kept_whole(void **state)
{
    size_t n = 200 * 1024;
    char *line = malloc(n + 1);
    ndjson *f = framer(1024 * 1024);
    rec r = {0};

    (void)state;
    assert_non_null(line);
    for (size_t i = 0; i < n; i++)
        line[i] = (char)('a' + i % 26);
    line[n] = '\n';
    assert_int_equal(ndjson_feed(f, line, 70000, on_line, &r), 0);
    assert_int_equal(ndjson_feed(f, line + 70000, 70000, on_line, &r), 0);
    assert_int_equal(ndjson_feed(f, line + 140000, n + 1 - 140000, on_line, &r), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(strlen(r.ev[0]), n + 2);
    assert_memory_equal(r.ev[0] + 2, line, n);
    assert_int_equal(ndjson_buffered(f), 0);
    feed(f, &r, "after\n");
    assert_string_equal(r.ev[1], "L:after");
    ndjson_free(f);
    free(line);
    rec_clear(&r);
}

static void test_stop_from_callback(void **state)
{
    ndjson *f = framer(64);
    rec r = {0};

    (void)state;
    r.stop_after = 2;
    assert_int_equal(ndjson_feed(f, "a\nb\nc\n", 6, on_line, &r), 7);
    assert_int_equal(r.n, 2);
    ndjson_free(f);
    rec_clear(&r);
}

static void test_no_error_fn_and_free_null(void **state)
{
    ndjson *f = ndjson_new(4);
    rec r = {0};

    (void)state;
    feed(f, &r, "toolong\nok\n");
    assert_int_equal(r.n, 1);
    assert_string_equal(r.ev[0], "L:ok");
    assert_int_equal(ndjson_dropped(f), 1);
    ndjson_free(f);
    ndjson_free(NULL);
    rec_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_across_feeds),
        cmocka_unit_test(test_many_lines_one_feed),
        cmocka_unit_test(test_crlf_and_blank),
        cmocka_unit_test(test_overlong_then_good),
        cmocka_unit_test(test_exact_limit),
        cmocka_unit_test(test_bounded_memory),
        cmocka_unit_test(test_large_line_kept_whole),
        cmocka_unit_test(test_stop_from_callback),
        cmocka_unit_test(test_no_error_fn_and_free_null),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
