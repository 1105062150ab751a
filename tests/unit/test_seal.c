/* seal: tokens open with the key and purpose that made them, and with nothing else; any
 * altered, truncated or foreign token is refused. */
#include "seal.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void round_trip(void **state)
{
    seal_key k;
    static char out[SEAL_MAX_PLAIN];
    size_t n = 99;
    char *t;

    (void)state;
    seal_key_init(&k);
    t = seal_box(&k, "rs", "hello", 5);
    assert_non_null(t);
    assert_int_equal(strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     strlen(t));
    assert_int_equal(seal_open(&k, "rs", t, out, sizeof out, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "hello", 5);
    free(t);

    /* The empty payload and the largest one. */
    t = seal_box(&k, "rs", "", 0);
    assert_int_equal(seal_open(&k, "rs", t, out, sizeof out, &n), 0);
    assert_int_equal(n, 0);
    free(t);
    memset(out, 'x', sizeof out);
    t = seal_box(&k, "rs", out, SEAL_MAX_PLAIN);
    assert_non_null(t);
    assert_int_equal(seal_open(&k, "rs", t, out, sizeof out, &n), 0);
    assert_int_equal(n, SEAL_MAX_PLAIN);
    free(t);
    assert_null(seal_box(&k, "rs", out, SEAL_MAX_PLAIN + 1));
}

static void same_payload_differs(void **state)
{
    seal_key k;
    char *a, *b;

    (void)state;
    seal_key_init(&k);
    a = seal_box(&k, "rs", "same", 4);
    b = seal_box(&k, "rs", "same", 4);
    assert_string_not_equal(a, b); /* fresh nonce each time: nothing to correlate */
    assert_null(strstr(a, "same"));
    free(a);
    free(b);
}

static void refuses_what_it_did_not_make(void **state)
{
    seal_key k, other;
    char out[64];
    size_t n = 7;
    char *t;

    (void)state;
    seal_key_init(&k);
    seal_key_init(&other);
    t = seal_box(&k, "rs", "payload-123", 11);
    assert_int_equal(seal_open(&other, "rs", t, out, sizeof out, &n), -EINVAL);
    assert_int_equal(n, 0);
    assert_int_equal(seal_open(&k, "other purpose", t, out, sizeof out, &n), -EINVAL);
    assert_int_equal(seal_open(&k, "rs", t, out, 4, &n), -EINVAL); /* larger than cap */

    /* Every single-character change is refused. */
    for (size_t i = 0; t[i]; i++) {
        char saved = t[i];

        t[i] = saved == 'A' ? 'B' : 'A';
        assert_int_equal(seal_open(&k, "rs", t, out, sizeof out, &n), -EINVAL);
        t[i] = saved;
    }
    /* Truncations, extensions and garbage. */
    for (size_t cut = 0; cut < strlen(t); cut++) {
        char *c = strndup(t, cut);

        assert_int_equal(seal_open(&k, "rs", c, out, sizeof out, &n), -EINVAL);
        free(c);
    }
    {
        size_t len = strlen(t);
        char *longer = malloc(len + 3);

        memcpy(longer, t, len);
        memcpy(longer + len, "AA", 3);
        assert_int_equal(seal_open(&k, "rs", longer, out, sizeof out, &n), -EINVAL);
        free(longer);
    }
    assert_int_equal(seal_open(&k, "rs", "", out, sizeof out, &n), -EINVAL);
    assert_int_equal(seal_open(&k, "rs", NULL, out, sizeof out, &n), -EINVAL);
    assert_int_equal(seal_open(&k, "rs", "not base64!", out, sizeof out, &n), -EINVAL);
    assert_int_equal(seal_open(&k, "rs", "AAAA====", out, sizeof out, &n), -EINVAL);
    assert_int_equal(seal_open(&k, "rs", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                               out, sizeof out, &n),
                     -EINVAL);
    assert_int_equal(seal_open(&k, "rs", t, out, sizeof out, &n), 0);
    assert_memory_equal(out, "payload-123", 11);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(same_payload_differs),
        cmocka_unit_test(refuses_what_it_did_not_make),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
