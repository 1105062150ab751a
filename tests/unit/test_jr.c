/* test_jr: JSON-RPC 2.0 validation, table-driven: each row is an input and what jr_parse
 * must make of it (kinds of the messages, or the error code and the id it read). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jr.h"

#define OK 0

typedef struct {
    const char *name;
    const char *text;
    bool batch_ok;      /* lim.allow_batch */
    int code;           /* 0 = valid; else the JSON-RPC code expected */
    const char *id;     /* error: id read (jr_id_text), or NULL for none */
    const char *kinds;  /* valid: one letter per message: R(equest) N(otification) S(result) E(rror) */
    const char *reason; /* error: a fragment of the message */
} jr_case;

static const jr_case cases[] = {
    /* valid single messages */
    {"request int id", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", false, OK, NULL, "R", NULL},
    {"request string id", "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"tools/list\",\"params\":{}}",
     false, OK, NULL, "R", NULL},
    {"request empty string id", "{\"jsonrpc\":\"2.0\",\"id\":\"\",\"method\":\"x\"}", false, OK, NULL, "R", NULL},
    {"request negative id", "{\"jsonrpc\":\"2.0\",\"id\":-5,\"method\":\"x\"}", false, OK, NULL, "R", NULL},
    {"request params array", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":[1]}", false,
     OK, NULL, "R", NULL},
    {"notification", "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", false, OK,
     NULL, "N", NULL},
    {"result", "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}", false, OK, NULL, "S", NULL},
    {"result null", "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":null}", false, OK, NULL, "S", NULL},
    {"error", "{\"jsonrpc\":\"2.0\",\"id\":\"q\",\"error\":{\"code\":-1,\"message\":\"no\"}}", false,
     OK, NULL, "E", NULL},
    {"error null id", "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-1,\"message\":\"no\"}}",
     false, OK, NULL, "E", NULL},
    {"error without id", "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"\",\"data\":[]}}",
     false, OK, NULL, "E", NULL},
    {"extra members kept", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"x-extra\":true}", false,
     OK, NULL, "R", NULL},
    {"whitespace around", " \r\n\t{\"jsonrpc\":\"2.0\",\"method\":\"x\"} \n", false, OK, NULL, "N", NULL},
    {"unicode method", "{\"jsonrpc\":\"2.0\",\"method\":\"caf\xc3\xa9\"}", false, OK, NULL, "N", NULL},

    /* batches */
    {"batch", "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"},{\"jsonrpc\":\"2.0\",\"method\":\"b\"},"
              "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":1}]",
     true, OK, NULL, "RNS", NULL},
    {"batch of one", "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"}]", true, OK, NULL, "R", NULL},
    {"batch refused", "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"}]", false, JR_INVALID_REQUEST,
     NULL, NULL, "batch"},
    {"empty batch", "[]", true, JR_INVALID_REQUEST, NULL, NULL, "empty batch"},
    {"batch with a bad element", "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"},1]", true,
     JR_INVALID_REQUEST, NULL, NULL, "not an object"},
    {"batch bad element keeps its id", "[{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":3}]", true,
     JR_INVALID_REQUEST, "9", NULL, "method"},

    /* parse errors */
    {"empty", "", false, JR_PARSE_ERROR, NULL, NULL, "end of input"},
    {"garbage", "hello", false, JR_PARSE_ERROR, NULL, NULL, "Parse error"},
    {"truncated", "{\"jsonrpc\":\"2.0\",\"id\":1,", false, JR_PARSE_ERROR, NULL, NULL,
     "Parse error"},
    {"trailing", "{\"jsonrpc\":\"2.0\",\"method\":\"x\"} {}", false, JR_PARSE_ERROR, NULL, NULL,
     "trailing"},
    {"bad utf8", "{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}", false, JR_PARSE_ERROR, NULL, NULL,
     "UTF-8"},
    {"overlong utf8", "{\"jsonrpc\":\"2.0\",\"method\":\"\xc0\xaf\"}", false, JR_PARSE_ERROR, NULL,
     NULL, "UTF-8"},
    {"nul escape", "{\"jsonrpc\":\"2.0\",\"method\":\"a\\u0000b\"}", false, JR_PARSE_ERROR, NULL,
     NULL, "NUL"},
    {"duplicate key", "{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"x\"}", false,
     JR_PARSE_ERROR, NULL, NULL, "duplicate"},
    {"huge integer id", "{\"jsonrpc\":\"2.0\",\"id\":123456789012345678901234567890,\"method\":\"x\"}",
     false, JR_PARSE_ERROR, NULL, NULL, "range"},

    /* invalid requests */
    {"scalar", "42", false, JR_INVALID_REQUEST, NULL, NULL, "not an object"},
    {"string", "\"x\"", false, JR_INVALID_REQUEST, NULL, NULL, "not an object"},
    {"null", "null", false, JR_INVALID_REQUEST, NULL, NULL, "not an object"},
    {"no jsonrpc", "{\"id\":1,\"method\":\"x\"}", false, JR_INVALID_REQUEST, "1", NULL, "jsonrpc"},
    {"jsonrpc 1.0", "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"x\"}", false, JR_INVALID_REQUEST, "1",
     NULL, "jsonrpc"},
    {"jsonrpc number", "{\"jsonrpc\":2.0,\"id\":\"k\",\"method\":\"x\"}", false, JR_INVALID_REQUEST,
     "k", NULL, "jsonrpc"},
    {"null id request", "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"x\"}", false,
     JR_INVALID_REQUEST, NULL, NULL, "id must be"},
    {"real id", "{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"x\"}", false, JR_INVALID_REQUEST, NULL,
     NULL, "id must be"},
    {"real id 1.0", "{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"x\"}", false, JR_INVALID_REQUEST,
     NULL, NULL, "id must be"},
    {"bool id", "{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"x\"}", false, JR_INVALID_REQUEST, NULL,
     NULL, "id must be"},
    {"object id", "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"x\"}", false, JR_INVALID_REQUEST, NULL,
     NULL, "id must be"},
    {"method number", "{\"jsonrpc\":\"2.0\",\"id\":\"m\",\"method\":1}", false, JR_INVALID_REQUEST,
     "m", NULL, "method"},
    {"method empty", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\"}", false, JR_INVALID_REQUEST, "1",
     NULL, "method"},
    {"params string", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":\"p\"}", false,
     JR_INVALID_REQUEST, "1", NULL, "params"},
    {"params null", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":null}", false,
     JR_INVALID_REQUEST, "1", NULL, "params"},
    {"request with result", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"result\":{}}", false,
     JR_INVALID_REQUEST, "1", NULL, "no result"},
    {"nothing", "{\"jsonrpc\":\"2.0\",\"id\":1}", false, JR_INVALID_REQUEST, "1", NULL,
     "exactly one"},
    {"result and error",
     "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{},\"error\":{\"code\":1,\"message\":\"m\"}}", false,
     JR_INVALID_REQUEST, "1", NULL, "exactly one"},
    {"result without id", "{\"jsonrpc\":\"2.0\",\"result\":{}}", false, JR_INVALID_REQUEST, NULL,
     NULL, "id must be"},
    {"result null id", "{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":{}}", false, JR_INVALID_REQUEST,
     NULL, NULL, "id must be"},
    {"error not object", "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":\"bad\"}", false,
     JR_INVALID_REQUEST, "1", NULL, "integer code"},
    {"error code real", "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1.5,\"message\":\"m\"}}",
     false, JR_INVALID_REQUEST, "1", NULL, "integer code"},
    {"error no message", "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1}}", false,
     JR_INVALID_REQUEST, "1", NULL, "integer code"},
    {"error bool id", "{\"jsonrpc\":\"2.0\",\"id\":false,\"error\":{\"code\":1,\"message\":\"m\"}}",
     false, JR_INVALID_REQUEST, NULL, NULL, "id must be"},
};

static char kind_letter(jr_kind k)
{
    switch (k) {
    case JR_REQUEST:
        return 'R';
    case JR_NOTIFICATION:
        return 'N';
    case JR_RESULT:
        return 'S';
    case JR_ERROR:
        return 'E';
    }
    return '?';
}

static void test_cases(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const jr_case *c = &cases[i];
        jr_limits lim = {0};
        jr_body *b = (jr_body *)1;
        jr_error err;
        char kinds[16] = {0};
        char id[64];
        int rc;

        lim.allow_batch = c->batch_ok;
        rc = jr_parse(c->text, strlen(c->text), &lim, &b, &err);
        if (c->code == OK) {
            if (rc != 0)
                fail_msg("case '%s': rc %d (%d %s)", c->name, rc, err.code, err.message);
            assert_non_null(b);
            for (size_t k = 0; k < b->n && k < sizeof kinds - 1; k++)
                kinds[k] = kind_letter(b->msgs[k].kind);
            if (strcmp(kinds, c->kinds) != 0)
                fail_msg("case '%s': kinds %s, want %s", c->name, kinds, c->kinds);
            assert_int_equal(b->batch, c->text[strspn(c->text, " \r\n\t")] == '[');
            for (size_t k = 0; k < b->n; k++) {
                const jr_msg *m = &b->msgs[k];

                assert_true(json_is_object(m->msg));
                if (m->kind == JR_REQUEST || m->kind == JR_NOTIFICATION)
                    assert_non_null(m->method);
                else
                    assert_null(m->method);
                if (m->kind == JR_REQUEST || m->kind == JR_RESULT)
                    assert_non_null(m->id);
                if (m->kind == JR_NOTIFICATION)
                    assert_null(m->id);
            }
            jr_body_free(b);
            continue;
        }
        if (rc == 0)
            fail_msg("case '%s': accepted", c->name);
        assert_null(b);
        if (err.code != c->code)
            fail_msg("case '%s': code %d, want %d (%s)", c->name, err.code, c->code, err.message);
        if (!strstr(err.message, c->reason))
            fail_msg("case '%s': message '%s' lacks '%s'", c->name, err.message, c->reason);
        jr_id_text(err.id, id, sizeof id);
        if (strcmp(id, c->id ? c->id : "null") != 0)
            fail_msg("case '%s': id %s, want %s", c->name, id, c->id ? c->id : "null");
        jr_error_cleanup(&err);
        jr_error_cleanup(&err); /* idempotent */
    }
}

static void test_limits(void **state)
{
    char deep[300];
    jr_limits lim = {0};
    jr_body *b;
    jr_error err;
    const char *ok = "{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":{\"a\":[[[1]]]}}";
    char batch[4096];
    size_t n = 0;

    /* depth: 64 nested arrays inside params pass the default, 65 do not */
    n = (size_t)snprintf(deep, sizeof deep, "{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":");
    for (int i = 0; i < 63; i++)
        deep[n++] = '[';
    for (int i = 0; i < 63; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    assert_int_equal(jr_depth(deep, n, 64), 64);
    assert_int_equal(jr_parse(deep, n, NULL, &b, &err), 0);
    jr_body_free(b);
    lim.max_depth = 10;
    assert_int_equal(jr_parse(deep, n, &lim, &b, &err), -E2BIG);
    assert_int_equal(err.code, JR_PARSE_ERROR);
    assert_non_null(strstr(err.message, "deeper than 10"));
    jr_error_cleanup(&err);

    /* brackets inside strings do not count, nor escaped quotes */
    assert_int_equal(jr_depth("{\"a\":\"[[[[\\\"[[\"}", 16, 64), 1);
    assert_int_equal(jr_depth("]]]]", 4, 64), 0);
    assert_int_equal(jr_depth("\"\\", 2, 64), 0); /* never reads past len */

    /* bytes */
    lim.max_depth = 0;
    lim.max_bytes = strlen(ok) - 1;
    assert_int_equal(jr_parse(ok, strlen(ok), &lim, &b, &err), -E2BIG);
    assert_int_equal(err.code, JR_INVALID_REQUEST);
    jr_error_cleanup(&err);
    lim.max_bytes = strlen(ok);
    assert_int_equal(jr_parse(ok, strlen(ok), &lim, &b, &err), 0);
    jr_body_free(b);

    /* batch size */
    lim.max_bytes = 0;
    lim.allow_batch = true;
    lim.max_batch = 3;
    n = 0;
    batch[n++] = '[';
    for (int i = 0; i < 4; i++)
        n += (size_t)snprintf(batch + n, sizeof batch - n, "%s{\"jsonrpc\":\"2.0\",\"method\":\"x\"}",
                              i ? "," : "");
    batch[n++] = ']';
    assert_int_equal(jr_parse(batch, n, &lim, &b, &err), -E2BIG);
    jr_error_cleanup(&err);
    lim.max_batch = 4;
    assert_int_equal(jr_parse(batch, n, &lim, &b, &err), 0);
    assert_int_equal(b->n, 4);
    assert_int_equal(jr_body_count(b, JR_NOTIFICATION), 4);
    assert_int_equal(jr_body_count(b, JR_REQUEST), 0);
    jr_body_free(b);

    /* the text need not be NUL-terminated: only len bytes are read */
    assert_int_equal(jr_parse("{\"jsonrpc\":\"2.0\",\"method\":\"x\"}GARBAGE", 30, NULL, &b, &err),
                     0);
    jr_body_free(b);
    jr_body_free(NULL);
}

static void test_helpers(void **state)
{
    const char *init = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{}}";
    const char *init_note = "{\"jsonrpc\":\"2.0\",\"method\":\"initialize\"}";
    jr_body *b;
    jr_error err;
    json_t *id;
    char *s;
    char buf[16];

    assert_int_equal(jr_parse(init, strlen(init), NULL, &b, &err), 0);
    assert_true(jr_body_has_initialize(b));
    s = jr_dump(b->msgs[0].msg);
    assert_string_equal(s, init);
    free(s);
    jr_body_free(b);
    assert_int_equal(jr_parse(init_note, strlen(init_note), NULL, &b, &err), 0);
    assert_false(jr_body_has_initialize(b)); /* a notification is not the handshake */
    jr_body_free(b);

    s = jr_error_response(JR_INVALID_REQUEST, "bad \"thing\"\n", NULL, NULL);
    assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,"
                           "\"message\":\"bad \\\"thing\\\"\\n\"}}");
    free(s);
    id = json_string("x-1");
    s = jr_error_response(JR_SERVER_ERROR, "m", id, NULL);
    assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"id\":\"x-1\",\"error\":{\"code\":-32000,"
                           "\"message\":\"m\"}}");
    free(s);
    s = jr_error_response(JR_SERVER_ERROR, "not utf8 \xff", id, NULL);
    assert_non_null(strstr(s, "\"message\":\"error\""));
    free(s);
    jr_id_text(id, buf, sizeof buf);
    assert_string_equal(buf, "x-1");
    json_decref(id);
    id = json_string("a b\"c\\d/e");
    jr_id_text(id, buf, sizeof buf);
    assert_string_equal(buf, "a_b_c_d/e");
    json_decref(id);
    id = json_integer(-42);
    jr_id_text(id, buf, sizeof buf);
    assert_string_equal(buf, "-42");
    json_decref(id);
    jr_id_text(NULL, buf, sizeof buf);
    assert_string_equal(buf, "null");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_helpers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
