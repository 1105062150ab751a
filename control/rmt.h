/* rmt: the client side of MCP's HTTP transports toward one remote upstream server, on a
 * libuv loop through libcurl's multi interface: Streamable HTTP (POST per message, JSON or
 * SSE answers, a session id, the GET stream with Last-Event-ID) and legacy HTTP+SSE (one GET
 * stream, an `endpoint` event, POSTs to it). It moves JSON-RPC messages only; inst runs the
 * MCP session on top. Loop thread only. */
#ifndef MCPHUB_RMT_H
#define MCPHUB_RMT_H

#include "cfg.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct rmt rmt;

typedef enum rmt_kind {
    RMT_STREAMABLE_HTTP = 0,
    RMT_SSE,
} rmt_kind;

#define RMT_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define RMT_DEFAULT_MAX_MESSAGE (16u * 1024u * 1024u) /* one JSON body or one SSE event */
#define RMT_DEFAULT_MAX_QUEUE (32u * 1024u * 1024u)   /* bytes of messages not yet sent */

/* Why the transport closed (on_closed). */
typedef enum rmt_close_reason {
    RMT_CLOSED_UNREACHABLE = 1, /* connect/TLS/DNS failure, or the legacy stream could not open */
    RMT_CLOSED_SESSION_LOST,    /* 404 for our Mcp-Session-Id: start a new session */
    RMT_CLOSED_STREAM_ENDED,    /* legacy SSE: the GET stream ended (its session is gone) */
    RMT_CLOSED_PROTOCOL,        /* legacy SSE: no endpoint event in time, an endpoint on
                                   another origin, a stream that is not text/event-stream */
} rmt_close_reason;

/* Callbacks, loop thread; each may call rmt_free. */
typedef struct rmt_callbacks {
    /* One JSON-RPC message from the server: a JSON object (borrowed). Batches (JSON arrays)
     * are split into their members. Responses to a POST that failed at the HTTP level come
     * here too, made up by rmt: {"jsonrpc":"2.0","id":ID,"error":{"code":-32000,
     * "message":"upstream answered HTTP 500"}} (or "...unreachable: <curl error>"), so every
     * request sent gets exactly one response unless the transport closes first. An answer
     * over max_message is such a made-up error too; the transport stays usable. */
    void (*on_message)(void *ud, json_t *msg);
    /* The transport is unusable for good; no callback runs after this one, and rmt frees
     * itself once it returns: the owner must drop its pointer here and never call rmt_*
     * with it again (rmt_free included). why is one sentence for logs (borrowed). */
    void (*on_closed)(void *ud, rmt_close_reason reason, const char *why);
} rmt_callbacks;

typedef struct rmt_opts {
    rmt_kind kind;
    const char *url;           /* required, http:// or https:// (copied) */
    const cfg_kv *headers;     /* sent with every request (copied) */
    size_t n_headers;
    const char *name;          /* the server's name, for logs (copied) */
    int64_t connect_timeout_ms; /* <= 0: RMT_DEFAULT_CONNECT_TIMEOUT_MS */
    size_t max_message;        /* 0: RMT_DEFAULT_MAX_MESSAGE */
    size_t max_queue;          /* 0: RMT_DEFAULT_MAX_QUEUE */
} rmt_opts;

/* Creates the transport. Copies everything from o. Streamable HTTP does no I/O until the
 * first rmt_send; legacy SSE opens its GET stream at once (messages sent before the endpoint
 * event arrives wait, in order). TLS peers are verified (libcurl's defaults, the system CA
 * store). Returns 0 with *out set, or -EINVAL (no or non-HTTP url) and *out NULL. */
int rmt_new(uv_loop_t *loop, const rmt_opts *o, const rmt_callbacks *cbs, void *ud,
            rmt **out);

/* Sends one JSON-RPC message (borrowed; serialized before return). Streamable HTTP: one POST
 * with the session id and protocol version once known; the session id is taken from any
 * response that carries one (the initialize response). Legacy SSE: one POST to the endpoint.
 * Each POST has its own connection, so POSTs in flight together may arrive in any order,
 * except that what is sent while the first message (initialize) or notifications/initialized
 * is in flight waits for it, in order. Call only before on_closed.
 * Returns 0; -ENOTCONN once closed; -ENOBUFS over max_queue; -EINVAL for a non-object. */
int rmt_send(rmt *t, json_t *msg);

/* Streamable HTTP: the negotiated protocol version, sent as MCP-Protocol-Version on every
 * later request (copied). No-op for legacy SSE. */
void rmt_set_protocol_version(rmt *t, const char *version);

/* Streamable HTTP: opens the GET stream for server-initiated messages (call after the
 * initialized notification). 405 means the server offers none: fine, nothing more happens.
 * A stream that ends or breaks is reopened (after the server's `retry`, else with a doubling
 * delay from 250 ms to 30 s), with Last-Event-ID when it carried event ids. No-op for SSE. */
void rmt_listen(rmt *t);

/* True once a legacy SSE transport has its endpoint, and always for Streamable HTTP. */
bool rmt_ready(const rmt *t);

/* The Mcp-Session-Id the server gave (borrowed), or NULL. */
const char *rmt_session_id(const rmt *t);

/* Releases the transport: transfers stop at once, no callback runs after this returns.
 * Streamable HTTP with a session: a DELETE for the session is sent in the background
 * (bounded by a short timeout; the loop stays alive until it ends). Safe from inside
 * rmt's own callbacks. rmt_free(NULL) does nothing. */
void rmt_free(rmt *t);

typedef struct rmt_stats {
    uint64_t posts;        /* POSTs completed */
    uint64_t http_errors;  /* POSTs answered with a non-2xx status */
    uint64_t messages_in;  /* messages delivered to on_message (made-up errors included) */
    uint64_t streams;      /* GET streams opened (reconnects included) */
    uint64_t resumes;      /* GET streams opened with Last-Event-ID */
} rmt_stats;

void rmt_get_stats(const rmt *t, rmt_stats *out);

#endif
