/* test_hmap: the string map against a plain array model, through many random puts and
 * deletes (deletion's backward shift is where such maps break). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"

#define KEYS 2000

static void test_model(void **state)
{
    static void *model[KEYS];
    hmap *m = hmap_new();
    char key[32];
    unsigned seed = 12345;
    size_t live = 0;

    for (int op = 0; op < 200000; op++) {
        int k = (int)(rand_r(&seed) % KEYS);
        void *want = model[k];

        snprintf(key, sizeof key, "key-%d", k);
        assert_ptr_equal(hmap_get(m, key), want);
        if (rand_r(&seed) % 3 == 0) {
            assert_ptr_equal(hmap_del(m, key), want);
            live -= want != NULL;
            model[k] = NULL;
        } else {
            void *v = (void *)(uintptr_t)(op + 1);

            assert_ptr_equal(hmap_put(m, key, v), want);
            live += want == NULL;
            model[k] = v;
        }
        assert_int_equal(hmap_size(m), live);
    }
    /* iteration visits exactly the live keys */
    {
        size_t pos = 0, seen = 0;
        const char *kk;
        void *v;

        while (hmap_next(m, &pos, &kk, &v)) {
            int k = atoi(kk + 4);

            assert_ptr_equal(model[k], v);
            seen++;
        }
        assert_int_equal(seen, live);
    }
    hmap_free(m);
    hmap_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
