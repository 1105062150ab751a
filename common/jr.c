/* jr: JSON-RPC 2.0 validation (see jr.h). jansson does the parsing and rejects invalid
 * UTF-8, NUL characters and duplicate keys; a pre-scan bounds the nesting depth, which
 * jansson only caps at 2048. Each message is checked by one table-free function per shape. */
#include "jr.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int jr_depth(const char *text, size_t len, int limit)
{
    int depth = 0, max = 0;
    bool in_string = false;

    for (size_t i = 0; i < len; i++) {
        char c = text[i];

        if (in_string) {
            if (c == '\\')
                i++; /* the escaped byte cannot end the string */
            else if (c == '"')
                in_string = false;
            continue;
        }
        switch (c) {
        case '"':
            in_string = true;
            break;
        case '[':
        case '{':
            if (++depth > max) {
                max = depth;
                if (max > limit)
                    return limit + 1;
            }
            break;
        case ']':
        case '}':
            if (depth > 0)
                depth--;
            break;
        default:
            break;
        }
    }
    return max;
}

__attribute__((format(printf, 4, 5))) static int jr_fail(jr_error *err, int code,
                                                          const json_t *id,
                                                          const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    if (id && (json_is_string(id) || json_is_integer(id)))
        err->id = json_incref((json_t *)id);
    return -EINVAL;
}

/* MCP ids: a string or an integer, never null, never a fraction. */
static bool jr_valid_id(const json_t *id)
{
    return id && (json_is_string(id) || json_is_integer(id));
}

/* Checks one message object; fills m. Returns 0 or a negative code with err filled. */
static int jr_check_msg(json_t *msg, jr_msg *m, jr_error *err)
{
    json_t *version, *method, *id, *params, *result, *error;

    if (!json_is_object(msg))
        return jr_fail(err, JR_INVALID_REQUEST, NULL, "Invalid Request: not an object");
    id = json_object_get(msg, "id");
    version = json_object_get(msg, "jsonrpc");
    if (!json_is_string(version) || strcmp(json_string_value(version), "2.0") != 0)
        return jr_fail(err, JR_INVALID_REQUEST, id, "Invalid Request: jsonrpc must be \"2.0\"");
    method = json_object_get(msg, "method");
    result = json_object_get(msg, "result");
    error = json_object_get(msg, "error");
    m->msg = msg;
    m->id = NULL;
    m->method = NULL;

    if (method) {
        if (!json_is_string(method) || json_string_length(method) == 0 ||
            json_string_length(method) > JR_METHOD_MAX)
            return jr_fail(err, JR_INVALID_REQUEST, id,
                           "Invalid Request: method must be a non-empty string");
        if (result || error)
            return jr_fail(err, JR_INVALID_REQUEST, id,
                           "Invalid Request: a request has no result or error");
        params = json_object_get(msg, "params");
        if (params && !json_is_object(params) && !json_is_array(params))
            return jr_fail(err, JR_INVALID_REQUEST, id,
                           "Invalid Request: params must be an object or an array");
        m->method = json_string_value(method);
        if (!id) {
            m->kind = JR_NOTIFICATION;
            return 0;
        }
        if (!jr_valid_id(id))
            return jr_fail(err, JR_INVALID_REQUEST, NULL,
                           "Invalid Request: id must be a string or an integer");
        m->kind = JR_REQUEST;
        m->id = id;
        return 0;
    }

    if (!result == !error)
        return jr_fail(err, JR_INVALID_REQUEST, id,
                       "Invalid Request: need a method, or exactly one of result and error");
    if (result) {
        if (!jr_valid_id(id))
            return jr_fail(err, JR_INVALID_REQUEST, NULL,
                           "Invalid Request: id must be a string or an integer");
        m->kind = JR_RESULT;
        m->id = id;
        return 0;
    }
    /* An error answer may lack an id (or carry null) when the request's id was unreadable. */
    if (id && !json_is_null(id) && !jr_valid_id(id))
        return jr_fail(err, JR_INVALID_REQUEST, NULL,
                       "Invalid Request: id must be a string, an integer or null");
    if (!json_is_object(error) || !json_is_integer(json_object_get(error, "code")) ||
        !json_is_string(json_object_get(error, "message")))
        return jr_fail(err, JR_INVALID_REQUEST, id,
                       "Invalid Request: error needs an integer code and a string message");
    m->kind = JR_ERROR;
    m->id = jr_valid_id(id) ? id : NULL;
    return 0;
}

int jr_parse(const char *text, size_t len, const jr_limits *lim, jr_body **out, jr_error *err)
{
    jr_limits l = {0, 0, 0, true};
    json_error_t jerr;
    json_t *root = NULL;
    jr_body *b = NULL;
    size_t n;
    int rc = 0;

    *out = NULL;
    memset(err, 0, sizeof *err);
    if (lim)
        l = *lim;
    if (l.max_depth <= 0)
        l.max_depth = JR_DEFAULT_MAX_DEPTH;
    if (l.max_batch == 0)
        l.max_batch = JR_DEFAULT_MAX_BATCH;
    if (l.max_bytes && len > l.max_bytes) {
        jr_fail(err, JR_INVALID_REQUEST, NULL, "Invalid Request: message too large");
        return -E2BIG;
    }
    if (jr_depth(text, len, l.max_depth) > l.max_depth) {
        jr_fail(err, JR_PARSE_ERROR, NULL, "Parse error: nested deeper than %d", l.max_depth);
        return -E2BIG;
    }
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        /* jansson's text may quote input bytes: keep only its category. */
        const char *why;

        switch (json_error_code(&jerr)) {
        case json_error_invalid_utf8:
            why = "invalid UTF-8";
            break;
        case json_error_duplicate_key:
            why = "duplicate object key";
            break;
        case json_error_null_character:
        case json_error_null_byte_in_key:
            why = "NUL character";
            break;
        case json_error_premature_end_of_input:
            why = "unexpected end of input";
            break;
        case json_error_end_of_input_expected:
            why = "trailing data";
            break;
        case json_error_numeric_overflow:
            why = "number out of range";
            break;
        default:
            why = "invalid JSON";
            break;
        }
        return jr_fail(err, JR_PARSE_ERROR, NULL, "Parse error: %s", why);
    }

    if (!(b = calloc(1, sizeof *b)))
        abort();
    b->root = root;
    root = NULL;
    if (json_is_array(b->root)) {
        n = json_array_size(b->root);
        if (!l.allow_batch) {
            rc = jr_fail(err, JR_INVALID_REQUEST, NULL,
                         "Invalid Request: batch arrays are not supported");
            goto out;
        }
        if (n == 0) {
            rc = jr_fail(err, JR_INVALID_REQUEST, NULL, "Invalid Request: empty batch");
            goto out;
        }
        if (n > l.max_batch) {
            jr_fail(err, JR_INVALID_REQUEST, NULL, "Invalid Request: batch of more than %zu",
                    l.max_batch);
            rc = -E2BIG;
            goto out;
        }
        b->batch = true;
    } else {
        n = 1;
    }
    if (!(b->msgs = calloc(n, sizeof *b->msgs)))
        abort();
    b->n = n;
    for (size_t i = 0; i < n; i++) {
        json_t *msg = b->batch ? json_array_get(b->root, i) : b->root;

        if ((rc = jr_check_msg(msg, &b->msgs[i], err)) < 0) {
            err->index = i;
            goto out;
        }
    }
    *out = b;
    b = NULL;
out:
    jr_body_free(b);
    return rc;
}

void jr_body_free(jr_body *b)
{
    if (!b)
        return;
    json_decref(b->root);
    free(b->msgs);
    free(b);
}

void jr_error_cleanup(jr_error *err)
{
    json_decref(err->id);
    err->id = NULL;
}

bool jr_body_has_initialize(const jr_body *b)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->msgs[i].kind == JR_REQUEST && strcmp(b->msgs[i].method, "initialize") == 0)
            return true;
    return false;
}

size_t jr_body_count(const jr_body *b, jr_kind kind)
{
    size_t n = 0;

    for (size_t i = 0; i < b->n; i++)
        n += b->msgs[i].kind == kind;
    return n;
}

char *jr_dump(const json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);

    if (!s)
        abort();
    return s;
}

char *jr_error_response(int code, const char *message, const json_t *id, const json_t *data)
{
    json_t *o = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
                          id ? (json_t *)id : json_null(), "error", "code", code, "message",
                          message ? message : "");
    char *s;

    if (!o) {
        /* Only a message that is not valid UTF-8 gets here: answer without it. */
        o = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
                      id ? (json_t *)id : json_null(), "error", "code", code, "message",
                      "error");
        if (!o)
            abort();
    }
    /* Set after packing so the two packs above stay one shape, and data comes last. */
    if (data && json_object_set(json_object_get(o, "error"), "data", (json_t *)data) != 0)
        abort();
    s = jr_dump(o);
    json_decref(o);
    return s;
}

void jr_id_text(const json_t *id, char *buf, size_t size)
{
    const char *s;
    size_t n = 0;

    if (size == 0)
        return;
    if (json_is_integer(id)) {
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
        return;
    }
    if (!json_is_string(id)) {
        snprintf(buf, size, "null");
        return;
    }
    s = json_string_value(id);
    for (; s[n] && n < size - 1; n++) {
        char c = s[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("._:@/+=-", c) != NULL;

        buf[n] = ok ? c : '_';
    }
    buf[n] = '\0';
}
