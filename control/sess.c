/* sess: the session table and each session's replay ring (see sess.h). */
#include "sess.h"

#include "hmap.h"
#include "ids.h"
#include "ring.h"
#include "rpc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sess_table {
    hmap *by_id;
    hmap *by_scope; /* sess_scope_key(route, key, scope) -> the SESS_STATELESS session */
};

static char *sess_strdup(const char *s)
{
    char *d = strdup(s ? s : "");

    if (!d)
        abort();
    return d;
}

sess_table *sess_table_new(void)
{
    sess_table *t = calloc(1, sizeof *t);

    if (!t)
        abort();
    t->by_id = hmap_new();
    t->by_scope = hmap_new();
    return t;
}

static void sess_event_clear(sess_event *ev)
{
    free(ev->stream_id);
    free(ev->event_id);
    free(ev->json);
    memset(ev, 0, sizeof *ev);
}

static void sess_free(sess *s)
{
    for (size_t i = 0; i < s->ring_len; i++)
        sess_event_clear(&s->ring[(s->ring_head + i) % s->ring_cap]);
    free(s->ring);
    free(s->route);
    free(s->key_name);
    free(s->scope);
    free(s->protocol_version);
    json_decref(s->client_caps);
    json_decref(s->client_info);
    free(s->stream_edge);
    free(s->stream_id);
    free(s);
}

void sess_table_free(sess_table *t)
{
    size_t pos = 0;
    const char *key;
    void *v;

    if (!t)
        return;
    while (hmap_next(t->by_id, &pos, &key, &v))
        sess_free(v);
    hmap_free(t->by_id);
    hmap_free(t->by_scope);
    free(t);
}

sess *sess_create(sess_table *t, sess_era era, const char *route, const char *key_name)
{
    sess *s = calloc(1, sizeof *s);

    if (!s)
        abort();
    do
        id_random(s->id, sizeof s->id, SESS_ID_BYTES);
    while (hmap_get(t->by_id, s->id)); /* 128 bits never collide; be sure anyway */
    s->era = era;
    s->route = sess_strdup(route);
    s->key_name = sess_strdup(key_name);
    s->client_caps = json_object();
    s->created_ms = s->last_activity_ms = rpc_now_ms();
    s->next_n = 1;
    hmap_put(t->by_id, s->id, s);
    return s;
}

sess *sess_find(sess_table *t, const char *id)
{
    return id && *id ? hmap_get(t->by_id, id) : NULL;
}

/* route, key and scope joined by a byte none of them may hold (routes and keys are names,
 * scopes visible ASCII). */
static char *sess_scope_key(const char *route, const char *key_name, const char *scope)
{
    char *k;

    if (asprintf(&k, "%s\x1f%s\x1f%s", route ? route : "", key_name ? key_name : "",
                 scope ? scope : "") < 0)
        abort();
    return k;
}

sess *sess_scope_find(sess_table *t, const char *route, const char *key_name, const char *scope)
{
    char *k = sess_scope_key(route, key_name, scope);
    sess *s = hmap_get(t->by_scope, k);

    free(k);
    return s;
}

sess *sess_scope_create(sess_table *t, const char *route, const char *key_name,
                        const char *scope)
{
    sess *s = sess_create(t, SESS_STATELESS, route, key_name);
    char *k = sess_scope_key(route, key_name, scope);

    s->scope = sess_strdup(scope);
    hmap_put(t->by_scope, k, s); /* the map keeps its own copy of the key */
    free(k);
    return s;
}

void sess_destroy(sess_table *t, sess *s)
{
    if (s->era == SESS_STATELESS) {
        char *k = sess_scope_key(s->route, s->key_name, s->scope);

        hmap_del(t->by_scope, k);
        free(k);
    }
    hmap_del(t->by_id, s->id);
    sess_free(s);
}

size_t sess_count(const sess_table *t)
{
    return hmap_size(t->by_id);
}

bool sess_next(sess_table *t, size_t *pos, sess **s)
{
    const char *key;
    void *v;

    if (!hmap_next(t->by_id, pos, &key, &v))
        return false;
    *s = v;
    return true;
}

/* Doubles the ring (oldest event first in the new one). */
static void sess_ring_grow(sess *s)
{
    size_t cap = s->ring_cap ? s->ring_cap * 2 : 8;

    s->ring = ring_grow(s->ring, sizeof *s->ring, s->ring_cap, s->ring_head, s->ring_len, cap);
    s->ring_cap = cap;
    s->ring_head = 0;
}

const char *sess_event_add(sess *s, const char *stream_id, const char *json)
{
    size_t len = strlen(json);
    sess_event *ev;

    /* Bounded by count and by bytes: drop the oldest first. */
    while (s->ring_len > 0 &&
           (s->ring_len == SESS_RING_EVENTS || s->ring_bytes + len > SESS_RING_BYTES)) {
        sess_event *old = &s->ring[s->ring_head];

        s->ring_bytes -= strlen(old->json);
        sess_event_clear(old);
        s->ring_head = (s->ring_head + 1) % s->ring_cap;
        s->ring_len--;
    }
    if (s->ring_len == s->ring_cap)
        sess_ring_grow(s); /* below SESS_RING_EVENTS here: the loop above made room */
    ev = &s->ring[(s->ring_head + s->ring_len) % s->ring_cap];
    ev->stream_id = sess_strdup(stream_id);
    ev->n = s->next_n++;
    if (asprintf(&ev->event_id, "%s/%" PRIu64, stream_id, ev->n) < 0)
        abort();
    ev->json = sess_strdup(json);
    s->ring_len++;
    s->ring_bytes += len;
    return ev->event_id;
}

int sess_replay(const sess *s, const char *last_event_id,
                void (*fn)(void *ud, const sess_event *ev), void *ud)
{
    const char *slash = last_event_id ? strrchr(last_event_id, '/') : NULL;
    size_t sid_len;
    uint64_t after;
    char *end;
    bool known = false;
    int count = 0;

    if (!slash || slash == last_event_id || !slash[1])
        return -ENOENT;
    sid_len = (size_t)(slash - last_event_id);
    errno = 0;
    after = strtoull(slash + 1, &end, 10);
    if (*end || errno)
        return -ENOENT;
    for (size_t i = 0; i < s->ring_len; i++) {
        const sess_event *ev = &s->ring[(s->ring_head + i) % s->ring_cap];

        if (strlen(ev->stream_id) != sid_len || memcmp(ev->stream_id, last_event_id, sid_len))
            continue;
        known = true;
        if (ev->n <= after)
            continue;
        fn(ud, ev);
        count++;
    }
    /* Events older than the ring are gone: what is left is replayed (a gap cannot be
     * filled). A stream the ring never saw is unknown unless the id is a priming one. */
    return known || after == 0 ? count : -ENOENT;
}

void sess_detach_stream(sess *s)
{
    free(s->stream_edge);
    s->stream_edge = NULL;
}

void sess_set_stream(sess *s, const char *edge, const char *stream_id)
{
    free(s->stream_edge);
    free(s->stream_id);
    s->stream_edge = edge ? sess_strdup(edge) : NULL;
    s->stream_id = edge ? sess_strdup(stream_id) : NULL;
}
