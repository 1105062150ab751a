/* edge_mcp: MCP's HTTP transports in the edge: Streamable HTTP on /mcp[/{route}] (POST,
 * GET, DELETE) and the legacy HTTP+SSE transport on /sse[/{route}] and /messages. Each
 * client request becomes Gateway calls to control; answers go back as JSON or as SSE
 * streams. The only state kept is the streams this edge holds open. */
#ifndef MCPHUB_EDGE_MCP_H
#define MCPHUB_EDGE_MCP_H

#include "edge_http.h"
#include "edge_link.h"
#include "edge_metrics.h"
#include "mcphub/v1/gateway.pb-c.h"
#include "rpc.h"

#include <stdbool.h>
#include <stddef.h>

#define EDGE_MCP_DEFAULT_MAX_STREAMS 1024u
#define EDGE_MCP_DEFAULT_STREAM_BUFFER (1u << 20) /* bytes pending per SSE stream */
#define EDGE_MCP_DEFAULT_HEARTBEAT_MS 15000u
#define EDGE_MCP_DEFAULT_BODY_LIMIT (4u << 20)    /* when control sets none */
#define EDGE_MCP_MAX_BODY_LIMIT (15u << 20)       /* a gRPC message carries at most 16 MiB */

typedef struct edge_mcp edge_mcp;

typedef struct {
    rpc_client *cli;           /* borrowed until edge_mcp_drop_client */
    edge_link *link;           /* borrowed: readiness; must outlive the transports */
    const char *edge_id;       /* copied */
    bool loopback;             /* the HTTP listener is on a loopback address */
    const char *allowed_hosts; /* comma-separated extra Host values (NULL = none); copied */
    unsigned max_streams;      /* open GET /mcp and /sse streams; 0 = default */
    size_t stream_buffer;      /* pending bytes per SSE stream; 0 = default */
    unsigned heartbeat_ms;     /* ": ping" on idle SSE streams; 0 = default */
    unsigned sse_retry_ms;     /* retry: field of priming events; 0 = none */
    edge_metrics *metrics;     /* NULL, or where requests and streams are counted; borrowed:
                                * must outlive the transports */
} edge_mcp_opts;

/* Creates the transports and starts their heartbeat thread. Never NULL (OOM aborts). */
edge_mcp *edge_mcp_new(const edge_mcp_opts *opts);

/* Route handler for /mcp, /sse and /messages (an edge_http_handler whose ud is the
 * edge_mcp). Daemon thread. */
enum MHD_Result edge_mcp_handle(void *ud, edge_http_req *req);

/* Applies control's settings (from Hello or ConfigChanged; NULL settings in a Hello mean the
 * defaults: no extra origin, default body limit, no auth, the global route only). Requests
 * are refused with 503 until the first call. Any thread. */
void edge_mcp_settings(edge_mcp *m, const Mcphub__V1__EdgeSettings *settings);

/* Whether control's settings arrived, so that requests can be served. Any thread. */
bool edge_mcp_has_settings(edge_mcp *m);

/* Subscribe events: a message for a GET /mcp or /sse stream this edge holds, and the end of
 * a session (every stream of it closes). Unknown streams and sessions are ignored. Any
 * thread; never blocks on the network. */
void edge_mcp_stream_message(edge_mcp *m, const Mcphub__V1__StreamMessage *sm);
void edge_mcp_session_ended(edge_mcp *m, const char *session_id);

/* The Subscribe stream was lost: messages for the streams may have been lost with it, so
 * every GET /mcp and /sse stream is closed (clients reconnect, resuming by Last-Event-ID). */
void edge_mcp_control_lost(edge_mcp *m);

/* Stopping, first step: new requests get 503; every stream ends (DetachStream goes to
 * control for GET and /sse streams) and every running Request is cancelled. Waits up to
 * wait_ms for the streams to be released and the detaches to be answered. Not from a
 * handler or an rpc callback. */
void edge_mcp_shutdown(edge_mcp *m, int wait_ms);

/* See edge_drain: refuses new requests, closes the standalone streams, waits up to wait_ms
 * for the other requests to end. Returns how many are still registered. Any thread but
 * the daemon's. */
size_t edge_mcp_drain(edge_mcp *m, int wait_ms);

/* Stopping, second step: no Gateway call starts from now on (they fail as 503), so the rpc
 * client can be freed. Any thread but the rpc client's. */
void edge_mcp_drop_client(edge_mcp *m);

/* Open GET /mcp and /sse streams. Any thread. */
unsigned edge_mcp_streams(edge_mcp *m);

/* Stops the heartbeat thread and frees. The HTTP server must have been freed first (every
 * request released). edge_mcp_free(NULL) does nothing. */
void edge_mcp_free(edge_mcp *m);

#endif
