/* cfg_pos: finds where a value starts in the settings text (jansson keeps no positions
 * for values) with a minimal JSON tokenizer, and renders field paths for messages. */
#include "cfg_internal.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The text was accepted by jansson, so the scanner only needs to be safe (never read past
 * len, never loop forever), not to diagnose anything. */

static size_t skip_ws(const char *t, size_t len, size_t i)
{
    while (i < len && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
        i++;
    return i;
}

/* i is at the opening quote; returns the index just past the closing quote. */
static size_t skip_string(const char *t, size_t len, size_t i)
{
    i++;
    while (i < len && t[i] != '"')
        i += t[i] == '\\' ? 2 : 1;
    return i < len ? i + 1 : len;
}

/* Skips one value of any kind, nested ones without recursion. */
static size_t skip_value(const char *t, size_t len, size_t i)
{
    size_t depth = 0;

    if (i >= len)
        return len;
    if (t[i] == '"')
        return skip_string(t, len, i);
    if (t[i] != '{' && t[i] != '[') {
        while (i < len && !strchr(",]} \t\r\n", t[i]))
            i++;
        return i;
    }
    while (i < len) {
        char ch = t[i];

        if (ch == '"') {
            i = skip_string(t, len, i);
            continue;
        }
        if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (--depth == 0)
                return i + 1;
        }
        i++;
    }
    return len;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool read_hex4(const char *t, size_t len, size_t i, unsigned *out)
{
    unsigned v = 0;

    if (i + 4 > len)
        return false;
    for (size_t k = 0; k < 4; k++) {
        int h = hex_value(t[i + k]);

        if (h < 0)
            return false;
        v = v * 16 + (unsigned)h;
    }
    *out = v;
    return true;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the JSON string at t[i] (its opening quote) and tells whether it equals key.
 * A decoded string is never longer than its escaped form, so one buffer of that size
 * is enough. */
static bool string_equals(const char *t, size_t len, size_t i, const char *key)
{
    size_t end = skip_string(t, len, i);
    size_t n = 0, klen = strlen(key);
    char *buf;
    bool eq;

    if (end - i < 2)
        return false;
    buf = malloc(end - i);
    if (!buf)
        abort();
    for (i++; i < end - 1;) {
        unsigned cp, lo;

        if (t[i] != '\\') {
            buf[n++] = t[i++];
            continue;
        }
        switch (t[i + 1]) {
        case 'b': buf[n++] = '\b'; i += 2; continue;
        case 'f': buf[n++] = '\f'; i += 2; continue;
        case 'n': buf[n++] = '\n'; i += 2; continue;
        case 'r': buf[n++] = '\r'; i += 2; continue;
        case 't': buf[n++] = '\t'; i += 2; continue;
        case 'u': break;
        default: buf[n++] = t[i + 1]; i += 2; continue;
        }
        if (!read_hex4(t, len, i + 2, &cp)) {
            n = (size_t)-1;
            break;
        }
        i += 6;
        if (cp >= 0xD800 && cp < 0xDC00 && i + 1 < len && t[i] == '\\' && t[i + 1] == 'u' &&
            read_hex4(t, len, i + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
        }
        n += put_utf8(buf + n, cp);
    }
    eq = n == klen && memcmp(buf, key, klen) == 0;
    free(buf);
    return eq;
}

/* From the object at i, returns the start of the value of key (the last one), or len. */
static size_t find_member(const char *t, size_t len, size_t i, const char *key)
{
    size_t found = len;

    if (i >= len || t[i] != '{')
        return len;
    i = skip_ws(t, len, i + 1);
    while (i < len && t[i] == '"') {
        bool match = string_equals(t, len, i, key);

        i = skip_ws(t, len, skip_string(t, len, i));
        if (i >= len || t[i] != ':')
            return found;
        i = skip_ws(t, len, i + 1);
        if (match)
            found = i;
        i = skip_ws(t, len, skip_value(t, len, i));
        if (i >= len || t[i] != ',')
            break;
        i = skip_ws(t, len, i + 1);
    }
    return found;
}

/* From the array at i, returns the start of element index, or len. */
static size_t find_element(const char *t, size_t len, size_t i, size_t index)
{
    if (i >= len || t[i] != '[')
        return len;
    i = skip_ws(t, len, i + 1);
    if (i < len && t[i] == ']')
        return len;
    for (size_t k = 0; i < len; k++) {
        if (k == index)
            return i;
        i = skip_ws(t, len, skip_value(t, len, i));
        if (i >= len || t[i] != ',')
            return len;
        i = skip_ws(t, len, i + 1);
    }
    return len;
}

size_t cfg_pos_find(const char *text, size_t len, const cfg_path_item *path, size_t depth)
{
    size_t at = skip_ws(text, len, 0);

    for (size_t d = 0; d < depth && at < len; d++) {
        size_t next = path[d].key ? find_member(text, len, at, path[d].key)
                                  : find_element(text, len, at, path[d].index);

        if (next >= len)
            break;
        at = next;
    }
    return at < len ? at : len;
}

void cfg_pos_line_col(const char *text, size_t len, size_t off, int *line, int *col)
{
    int l = 1, c = 1;

    if (off > len)
        off = len;
    for (size_t i = 0; i < off; i++) {
        unsigned char ch = (unsigned char)text[i];

        if (ch == '\n') {
            l++;
            c = 1;
        } else if ((ch & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

static bool is_word(const char *k)
{
    if (!*k)
        return false;
    for (; *k; k++) {
        unsigned char ch = (unsigned char)*k;

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* Appends to buf[*n..size) and keeps it NUL-terminated; stops silently when full. */
static void put(char *buf, size_t size, size_t *n, const char *s, size_t len)
{
    if (*n + 1 >= size)
        return;
    if (len > size - 1 - *n)
        len = size - 1 - *n;
    memcpy(buf + *n, s, len);
    *n += len;
    buf[*n] = '\0';
}

void cfg_path_render(const cfg_path_item *path, size_t depth, char *buf, size_t size)
{
    size_t n = 0;

    if (!size)
        return;
    buf[0] = '\0';
    for (size_t d = 0; d < depth; d++) {
        const char *k = path[d].key;
        char tmp[32];

        if (!k) {
            int len = snprintf(tmp, sizeof tmp, "[%zu]", path[d].index);

            put(buf, size, &n, tmp, (size_t)len);
        } else if (is_word(k)) {
            if (d > 0)
                put(buf, size, &n, ".", 1);
            put(buf, size, &n, k, strlen(k));
        } else {
            put(buf, size, &n, "[\"", 2);
            for (; *k; k++) {
                unsigned char ch = (unsigned char)*k;

                if (ch == '"' || ch == '\\') {
                    tmp[0] = '\\';
                    tmp[1] = (char)ch;
                    put(buf, size, &n, tmp, 2);
                } else if (ch < 0x20) {
                    int len = snprintf(tmp, sizeof tmp, "\\u%04x", ch);

                    put(buf, size, &n, tmp, (size_t)len);
                } else {
                    put(buf, size, &n, (const char *)k, 1);
                }
            }
            put(buf, size, &n, "\"]", 2);
        }
    }
}
