/* sess: client sessions owned by control: the table (by id), what each session is (route,
 * key, revision, client capabilities), the stream an edge holds for it, and a bounded ring
 * of the events sent on its streams for Last-Event-ID replay. Loop thread only. */
#ifndef MCPHUB_SESS_H
#define MCPHUB_SESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SESS_ID_BYTES 16     /* 128 random bits */
#define SESS_ID_MAX 32       /* base64url of 16 bytes plus NUL fits */
#define SESS_RING_EVENTS 256 /* events kept for replay per session */
#define SESS_RING_BYTES (1u << 20)

typedef enum {
    SESS_STREAMABLE = 0, /* 2025-03-26 .. 2025-11-25 */
    SESS_LEGACY_SSE,     /* 2024-11-05 HTTP+SSE */
    SESS_STATELESS,      /* 2026-07-28: a scope session, one per (route, key, scope) */
} sess_era;

typedef struct sess_event {
    char *stream_id;
    uint64_t n;
    char *event_id; /* "<stream_id>/<n>" */
    char *json;
} sess_event;

typedef struct sess {
    char id[SESS_ID_MAX];
    char *route;
    char *key_name;         /* "" without bearer auth */
    char *scope;            /* SESS_STATELESS: the client's scope, "" for the key's own */
    char *protocol_version; /* NULL until initialized (legacy SSE sessions start without) */
    json_t *client_caps;    /* owned; {} until initialized */
    json_t *client_info;    /* owned; may be NULL */
    sess_era era;
    bool initialized;       /* notifications/initialized arrived */
    int64_t created_ms;
    int64_t last_activity_ms;
    size_t running;         /* requests in flight */

    /* Its own instances of perSession servers (ctl_up.c owns them). */
    struct ctl_up *instances;

    /* The standalone stream (GET, or legacy /sse) an edge holds, if any. */
    char *stream_edge;
    char *stream_id;

    /* Replay ring of events sent on this session's streams: allocated at the first event
     * and doubled up to SESS_RING_EVENTS, so an idle session costs no ring at all. */
    sess_event *ring;
    size_t ring_cap, ring_head, ring_len, ring_bytes;
    uint64_t next_n;
} sess;

typedef struct sess_table sess_table;

sess_table *sess_table_new(void);
/* Frees every session. NULL does nothing. */
void sess_table_free(sess_table *t);

/* Creates a session with a fresh random id. The strings are copied. Returns it (owned by
 * the table). */
sess *sess_create(sess_table *t, sess_era era, const char *route, const char *key_name);

sess *sess_find(sess_table *t, const char *id);

/* Stateless era: the scope session of (route, key_name, scope), or NULL. */
sess *sess_scope_find(sess_table *t, const char *route, const char *key_name, const char *scope);

/* Creates the scope session of (route, key_name, scope) (none may exist yet): a
 * SESS_STATELESS session with a fresh id, found by sess_find and sess_scope_find until
 * destroyed. */
sess *sess_scope_create(sess_table *t, const char *route, const char *key_name,
                        const char *scope);

/* Unlinks and frees s. */
void sess_destroy(sess_table *t, sess *s);

size_t sess_count(const sess_table *t);

/* Iterates: start with *pos = 0; false at the end. No create/destroy while iterating. */
bool sess_next(sess_table *t, size_t *pos, sess **s);

/* Records json as the next event of stream stream_id (dropping the oldest events beyond the
 * ring's bounds) and returns its event id (borrowed; valid until it leaves the ring). */
const char *sess_event_add(sess *s, const char *stream_id, const char *json);

/* Calls fn for each recorded event of the stream last_event_id names that came after it,
 * oldest first (events that fell out of the ring are lost). Returns the number replayed, or
 * -ENOENT when last_event_id is malformed or names a stream the ring does not hold. */
int sess_replay(const sess *s, const char *last_event_id,
                void (*fn)(void *ud, const sess_event *ev), void *ud);

/* Sets or clears (edge NULL) the standalone stream. */
void sess_set_stream(sess *s, const char *edge, const char *stream_id);

/* The edge holding the standalone stream is gone (or the client closed it): stream_edge is
 * cleared but stream_id stays, so messages meant for the stream are still recorded in the
 * ring for a client that resumes it with Last-Event-ID (on any edge). */
void sess_detach_stream(sess *s);

#endif
