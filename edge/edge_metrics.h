/* edge_metrics: the edge's Prometheus metrics. Counters, gauges and histogram buckets are
 * C11 atomics updated with relaxed order from libmicrohttpd's thread and the rpc client's
 * polling thread, never under a lock; GET /metrics renders them (edge.c). */
#ifndef MCPHUB_EDGE_METRICS_H
#define MCPHUB_EDGE_METRICS_H

#include "prom.h"

#include <grpc/status.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct edge_metrics edge_metrics;

/* The method label of an HTTP request to an MCP endpoint: the JSON-RPC method of a single
 * message (EM_METHOD_OTHER when the edge does not list it), or one of these for requests
 * that carry none. */
enum {
    EM_METHOD_UNKNOWN = 0, /* answered before a JSON-RPC method was known (head refused, body
                            * unreadable or refused by the transport rules) */
    EM_METHOD_STREAM,      /* GET /mcp or GET /sse: a standalone stream */
    EM_METHOD_DELETE,      /* DELETE /mcp */
    EM_METHOD_BATCH,       /* a JSON-RPC batch array */
    EM_METHOD_RESPONSE,    /* a client's JSON-RPC response (to sampling, elicitation, roots) */
    EM_METHOD_OTHER,       /* a JSON-RPC method not in the edge's list */
    EM_METHOD_FIRST_NAMED, /* from here on: the named methods of edge_metrics.c's table */
};

typedef enum {
    EM_TRANSPORT_STREAMABLE = 0, /* /mcp */
    EM_TRANSPORT_SSE,            /* legacy /sse and /messages */
} em_transport;

typedef enum {
    EM_STREAM_NONE = 0,
    EM_STREAM_GET,    /* GET /mcp */
    EM_STREAM_POST,   /* a POST /mcp answered with text/event-stream */
    EM_STREAM_LEGACY, /* GET /sse */
} em_stream;

typedef enum {
    EM_CLOSE_COMPLETED = 0, /* every answer written (POST streams) */
    EM_CLOSE_CLIENT,        /* the client went away */
    EM_CLOSE_SESSION_ENDED, /* control ended the session */
    EM_CLOSE_CONTROL_LOST,  /* the Subscribe stream to control was lost */
    EM_CLOSE_SLOW_CLIENT,   /* its buffer overflowed: disconnected */
    EM_CLOSE_SHUTDOWN,      /* the edge is stopping */
} em_close;

/* Gateway methods the edge calls. */
typedef enum {
    EM_RPC_SUBSCRIBE = 0,
    EM_RPC_OPEN_SESSION,
    EM_RPC_END_SESSION,
    EM_RPC_REQUEST,
    EM_RPC_POST,
    EM_RPC_ATTACH_STREAM,
    EM_RPC_DETACH_STREAM,
} em_rpc;

/* Creates the metrics (all zero); edge_id is copied for mcphub_edge_info. Never NULL. */
edge_metrics *edge_metrics_new(const char *edge_id);

/* Frees. edge_metrics_free(NULL) does nothing. */
void edge_metrics_free(edge_metrics *em);

/* The method label index of a JSON-RPC method name (EM_METHOD_OTHER when not listed). */
unsigned edge_metrics_method(const char *name);

/* Name of a method label index ("tools/call", "other", ...). */
const char *edge_metrics_method_name(unsigned method);

/* Monotonic clock in nanoseconds, for the durations passed below. */
int64_t edge_metrics_now_ns(void);

/* Every function below accepts em NULL (does nothing) and may run on any thread. */

/* One HTTP request to an MCP endpoint was answered with status (0: the client left before
 * an answer was queued). */
void edge_metrics_request(edge_metrics *em, unsigned method, em_transport transport,
                          int status);

/* Its latency: from the first call of its handler to the answer queued, or for an answer
 * sent as a stream to the end of that stream. Not for EM_METHOD_STREAM requests. */
void edge_metrics_latency(edge_metrics *em, unsigned method, int64_t ns);

/* An SSE stream of kind was opened, or closed for reason. */
void edge_metrics_stream_open(edge_metrics *em, em_stream kind);
void edge_metrics_stream_closed(edge_metrics *em, em_stream kind, em_close reason);

/* A Gateway call to control finished with status (OK included). */
void edge_metrics_rpc(edge_metrics *em, em_rpc method, grpc_status_code status);

/* Control's SessionEnded broadcast arrived (reason: an EndReason of gateway.proto). */
void edge_metrics_session_ended(edge_metrics *em, int reason);

/* A ready Subscribe stream to control was lost. */
void edge_metrics_control_lost(edge_metrics *em);

/* Writes every edge family into b; connected is whether the edge is ready (connected to
 * control) now. Process metrics are not included (prom_process). Any thread. */
void edge_metrics_render(edge_metrics *em, prom_buf *b, bool connected);

#endif
