/* test_ring: ring_grow keeps a circular buffer's elements in order whatever its head, from
 * empty, through wrapping, to several doublings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ring.h"

typedef struct {
    int *buf;
    size_t cap, head, len;
} q;

static void push(q *r, int v)
{
    if (r->len == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 4;

        r->buf = ring_grow(r->buf, sizeof *r->buf, r->cap, r->head, r->len, ncap);
        r->cap = ncap;
        r->head = 0;
    }
    r->buf[(r->head + r->len++) % r->cap] = v;
}

static int pop(q *r)
{
    int v = r->buf[r->head];

    r->head = (r->head + 1) % r->cap;
    r->len--;
    return v;
}

static void test_order_kept_through_wraps_and_growth(void **state)
{
    q r = {0};
    int next_in = 0, next_out = 0;

    (void)state;
    /* Push two, pop one, over and over: the head walks round the array while it grows. */
    for (int round = 0; round < 100; round++) {
        push(&r, next_in++);
        push(&r, next_in++);
        assert_int_equal(pop(&r), next_out++);
    }
    assert_int_equal(r.len, 100);
    assert_int_equal(r.cap, 128);
    while (r.len)
        assert_int_equal(pop(&r), next_out++);
    assert_int_equal(next_out, next_in);
    free(r.buf);
}

static void test_grow_of_a_wrapped_ring(void **state)
{
    int *buf = calloc(4, sizeof *buf);
    int *grown;

    (void)state;
    assert_non_null(buf);
    /* Head at 3: elements 10, 11, 12, 13 stand at 3, 0, 1, 2. */
    buf[3] = 10;
    buf[0] = 11;
    buf[1] = 12;
    buf[2] = 13;
    grown = ring_grow(buf, sizeof *buf, 4, 3, 4, 8);
    for (int i = 0; i < 4; i++)
        assert_int_equal(grown[i], 10 + i);
    for (int i = 4; i < 8; i++)
        assert_int_equal(grown[i], 0);
    free(grown);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_kept_through_wraps_and_growth),
        cmocka_unit_test(test_grow_of_a_wrapped_ring),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
