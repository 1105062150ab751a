/* test_sess: the session table and Last-Event-ID replay: what a reconnecting client gets
 * back, and what it can no longer get once the ring moved on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sess.h"

typedef struct {
    char seen[64][64];
    int n;
} replayed;

static void collect(void *ud, const sess_event *ev)
{
    replayed *r = ud;

    if (r->n < 64)
        snprintf(r->seen[r->n], sizeof r->seen[0], "%s=%s", ev->event_id, ev->json);
    r->n++;
}

static void test_table(void **state)
{
    sess_table *t = sess_table_new();
    sess *a = sess_create(t, SESS_STREAMABLE, "", "");
    sess *b = sess_create(t, SESS_LEGACY_SSE, "fs", "key1");

    assert_int_equal(strlen(a->id), 22);
    assert_string_not_equal(a->id, b->id);
    assert_ptr_equal(sess_find(t, a->id), a);
    assert_ptr_equal(sess_find(t, b->id), b);
    assert_null(sess_find(t, "nope"));
    assert_null(sess_find(t, ""));
    assert_null(sess_find(t, NULL));
    assert_int_equal(sess_count(t), 2);
    sess_destroy(t, a);
    assert_null(sess_find(t, a->id == NULL ? "" : "x"));
    assert_ptr_equal(sess_find(t, b->id), b);
    assert_int_equal(sess_count(t), 1);
    sess_table_free(t);
    sess_table_free(NULL);
}

static void test_replay(void **state)
{
    sess_table *t = sess_table_new();
    sess *s = sess_create(t, SESS_STREAMABLE, "", "");
    replayed r = {0};

    assert_null(s->ring); /* an idle session holds no ring */
    assert_string_equal(sess_event_add(s, "get1", "{\"a\":1}"), "get1/1");
    assert_string_equal(sess_event_add(s, "post9", "{\"b\":2}"), "post9/2");
    assert_string_equal(sess_event_add(s, "get1", "{\"c\":3}"), "get1/3");

    /* only the named stream, only after the id */
    assert_int_equal(sess_replay(s, "get1/1", collect, &r), 1);
    assert_string_equal(r.seen[0], "get1/3={\"c\":3}");
    r.n = 0;
    assert_int_equal(sess_replay(s, "post9/0", collect, &r), 1); /* a priming id */
    assert_string_equal(r.seen[0], "post9/2={\"b\":2}");
    r.n = 0;
    assert_int_equal(sess_replay(s, "get1/3", collect, &r), 0);
    assert_int_equal(sess_replay(s, "garbage", collect, &r), -ENOENT);
    assert_int_equal(sess_replay(s, "get1/", collect, &r), -ENOENT);
    assert_int_equal(sess_replay(s, "get1/x", collect, &r), -ENOENT);
    assert_int_equal(sess_replay(s, "nostream/5", collect, &r), -ENOENT);

    /* the ring is bounded: old events fall out; a client behind the ring gets what is left */
    for (int i = 0; i < SESS_RING_EVENTS + 10; i++)
        sess_event_add(s, "get1", "{}");
    assert_int_equal(s->ring_len, SESS_RING_EVENTS);
    assert_int_equal(s->ring_cap, SESS_RING_EVENTS); /* grown to its bound, not past it */
    r.n = 0;
    assert_int_equal(sess_replay(s, "get1/3", collect, &r), SESS_RING_EVENTS);
    assert_string_equal(r.seen[0], "get1/14={}");
    assert_int_equal(sess_replay(s, "post9/2", collect, &r), -ENOENT); /* fell out entirely */
    sess_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_replay),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
