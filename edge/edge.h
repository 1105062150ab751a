/* edge: mcphub-edge as a library. Owns the HTTP server (edge_http), the gRPC client to
 * control, the Subscribe link (edge_link) and the MCP transports (edge_mcp), and holds the
 * route table. main.c only parses flags and signals; tests drive this API directly. */
#ifndef MCPHUB_EDGE_H
#define MCPHUB_EDGE_H

#include <stddef.h>

#define EDGE_DEFAULT_LISTEN "127.0.0.1:3000"
#define EDGE_DEFAULT_CONTROL "127.0.0.1:50051"
#define EDGE_ID_MAX 128 /* bytes, without the NUL */
#define EDGE_DEFAULT_TIMEOUT_S 30u /* idle HTTP connections */
#define EDGE_DEFAULT_MAX_STREAMS 1024u
#define EDGE_SPARE_CONNECTIONS 1024u /* default connections beyond max streams: calls, probes */
#define EDGE_DEFAULT_STREAM_BUFFER (1u << 20)
#define EDGE_DEFAULT_HEARTBEAT_MS 15000u

typedef struct edge edge;

typedef struct {
    const char *listen;            /* IPv4 "HOST:PORT", port 0 picks one; NULL = default */
    const char *control;           /* control's Gateway gRPC target; NULL = default */
    const char *edge_id;           /* NULL = "edge-<hostname>-<pid>" */
    unsigned max_connections;      /* HTTP connection limit; 0 = max_streams + 1024, so that
                                    * the streams' 429 comes before connections run out */
    unsigned connection_timeout_s; /* idle HTTP connections close after this; 0 = 30 */
    unsigned max_streams;          /* open GET /mcp and /sse streams; 0 = 1024 */
    size_t stream_buffer;          /* bytes pending per SSE stream before the client is
                                    * disconnected; 0 = 1 MiB */
    unsigned heartbeat_ms;         /* ": ping" on idle SSE streams; 0 = 15000 */
    unsigned sse_retry_ms;         /* retry: field of priming events; 0 = none */
    const char *allowed_hosts;     /* comma-separated Host values accepted besides loopback
                                    * names when listening on loopback; NULL = none */
} edge_opts;

/* Checks opts without side effects. Returns 0, or -EINVAL with a one-line reason in err
 * (err may be NULL). Any thread. */
int edge_opts_check(const edge_opts *opts, char *err, size_t errsize);

/* Writes the default edge id "edge-<hostname>-<pid>" into buf. */
void edge_default_id(char *buf, size_t size);

/* Creates a stopped edge; every string of opts is copied. Returns NULL when opts fail
 * edge_opts_check (the reason is logged). OOM aborts. */
edge *edge_new(const edge_opts *opts);

/* Binds the HTTP listener, starts the daemon, the gRPC client and the Subscribe link, and
 * logs "edge listening" with the bound addr=HOST:PORT. Returns 0, or a negative errno
 * (-EADDRINUSE, -EACCES, -EADDRNOTAVAIL from bind, -EIO when the daemon fails, -EALREADY
 * while already running); on error nothing is left running. Not thread-safe with edge_stop. */
int edge_start(edge *e);

/* The HTTP port actually bound (useful with port 0), or 0 before edge_start. Any thread. */
int edge_port(const edge *e);

/* Open GET /mcp and /sse streams (0 before edge_start). Any thread. */
unsigned edge_streams(const edge *e);

/* Drains before a stop (SIGTERM): /readyz answers 503 so load balancers stop sending work,
 * new MCP requests get 503 "edge stopping" with Retry-After, the standalone streams (GET,
 * legacy /sse) close at once so their clients reconnect through another edge (and resume
 * with Last-Event-ID), and the calls in flight (POSTs and their SSE answers) get up to
 * wait_ms to finish. Returns how many were still running when the time ran out. Not from
 * an HTTP handler or an rpc callback. */
size_t edge_drain(edge *e, int wait_ms);

/* Stops cleanly: stops accepting HTTP connections, cancels the Subscribe stream and waits
 * for it, stops the gRPC client, resumes parked requests, stops the HTTP daemon. Idempotent.
 * Not from an HTTP handler or an rpc callback. */
void edge_stop(edge *e);

/* Stops if needed and frees. edge_free(NULL) does nothing. */
void edge_free(edge *e);

#endif
