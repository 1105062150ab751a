/* edge_http: the edge's HTTP server. One libmicrohttpd daemon (epoll internal thread,
 * suspend/resume) on one IPv4 address, a route table, JSON responses, and the registry of
 * connections parked (suspended) while an RPC runs, so that stopping resumes them all. */
#ifndef MCPHUB_EDGE_HTTP_H
#define MCPHUB_EDGE_HTTP_H

#include <microhttpd.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct edge_http edge_http;

#define EDGE_HTTP_DEFAULT_TIMEOUT_S 30u /* idle connections are closed after this */

/* Request methods, as bits of a route's `methods` mask. */
enum {
    EDGE_HTTP_GET = 1u << 0,
    EDGE_HTTP_HEAD = 1u << 1,
    EDGE_HTTP_POST = 1u << 2,
    EDGE_HTTP_PUT = 1u << 3,
    EDGE_HTTP_DELETE = 1u << 4,
    EDGE_HTTP_OPTIONS = 1u << 5,
    EDGE_HTTP_PATCH = 1u << 6,
    /* A route whose handler takes every method, unknown ones included (method_bit 0), and
     * answers 405 itself. */
    EDGE_HTTP_ANY = ~0u,
};

/* What a route handler sees. Every field is borrowed for the duration of the call. */
typedef struct {
    edge_http *http;
    struct MHD_Connection *conn;
    const char *method;       /* as the client sent it */
    unsigned method_bit;      /* one EDGE_HTTP_* bit (0 only for EDGE_HTTP_ANY routes) */
    const char *path;         /* URL path, query removed */
    const char *rest;         /* prefix routes: "" or "/..." after the prefix; else "" */
    bool has_body;            /* the client announced a body (Content-Length > 0 or chunked) */
    const char *upload_data;  /* libmicrohttpd's body chunk (see MHD_AccessHandlerCallback) */
    size_t *upload_data_size;
    void **req_cls;           /* the handler's per-request state; see edge_http_state */
} edge_http_req;

/* Runs on the daemon's thread. A request without a body reaches its handler once, when it
 * has fully arrived; one with a body first right after its headers (*upload_data_size 0),
 * then once per chunk, then a last time with *upload_data_size 0. A parked request's
 * handler runs again after it is unparked. Must not block. Returns MHD_YES after queuing a
 * response, parking the request or consuming input; MHD_NO makes libmicrohttpd close the
 * connection. */
typedef enum MHD_Result (*edge_http_handler)(void *ud, edge_http_req *req);

/* One row of the route table: `path` exactly, or with `prefix` also `path/anything`. The
 * first matching row wins; a path no row matches gets 404, a method the row does not list
 * gets 405 with an Allow header built from `methods`. */
typedef struct {
    const char *path;
    bool prefix;
    unsigned methods;
    edge_http_handler fn;
} edge_http_route;

/* A handler that keeps per-request state stores it in *req->req_cls; the state must start
 * with this struct. release runs exactly once on the daemon's thread when libmicrohttpd is
 * done with the request (answered, client gone, timed out, or daemon stopped). */
typedef struct edge_http_state edge_http_state;
struct edge_http_state {
    void (*release)(edge_http_state *st);
};

/* Registry entry of a parked request; lives inside the request's state. */
typedef struct edge_http_parked edge_http_parked;
struct edge_http_parked {
    struct MHD_Connection *conn;
    edge_http_parked *prev, *next;
    bool linked;
};

typedef struct {
    struct sockaddr_in addr;          /* where to listen; port 0 picks a free port */
    const edge_http_route *routes;    /* borrowed: must outlive the server */
    size_t nroutes;
    void *ud;                         /* passed to every handler */
    unsigned max_connections;         /* 0 = 4096 */
    unsigned connection_timeout_s;    /* idle connections are closed after this; 0 = 30 */
} edge_http_opts;

/* Parses an IPv4 listen address "A.B.C.D:PORT" (or "localhost:PORT", meaning 127.0.0.1)
 * into *out. Returns 0 or -EINVAL. */
int edge_http_parse_addr(const char *text, struct sockaddr_in *out);

/* Binds, listens and starts the daemon. On success *out owns a new server. Errors:
 * -EADDRINUSE, -EACCES, -EADDRNOTAVAIL (from bind), -EIO when libmicrohttpd fails to start.
 * Any thread; not from a handler. */
int edge_http_new(const edge_http_opts *opts, edge_http **out);

/* The port actually bound. Any thread. */
int edge_http_port(const edge_http *h);

/* Stops accepting new connections; live requests go on. Idempotent, any thread but a
 * handler's. */
void edge_http_quiesce(edge_http *h);

/* Resumes every parked request (their handlers run again and must answer without
 * parking: edge_http_park fails from then on), stops the daemon, closes the socket and frees.
 * Whatever may still call edge_http_unpark (RPC callbacks) must have been stopped first.
 * Not from a handler. edge_http_free(NULL) does nothing. */
void edge_http_free(edge_http *h);

/* Suspends req's connection and records it in the registry. From a handler (or a content
 * reader) on the daemon's thread only. p must stay valid until unparked or until the
 * request's state is released. Returns 0, or -ECANCELED when the server is stopping (then
 * answer at once instead). */
int edge_http_park(edge_http *h, edge_http_parked *p, struct MHD_Connection *conn);

/* Resumes a parked connection; its handler then runs again on the daemon's thread. Does
 * nothing when p is not parked (already resumed, e.g. by edge_http_free). Any thread. */
void edge_http_unpark(edge_http *h, edge_http_parked *p);

/* Makes libmicrohttpd close conn soon, even while it waits to write to a client that stopped
 * reading (then only its idle timeout would): shuts the socket down, and the daemon drops
 * the connection on its next poll and releases the request. Any thread, as long as the
 * request has not been released. */
void edge_http_disconnect(struct MHD_Connection *conn);

/* Whether the client of conn hung up (or its socket failed), checked without reading: a
 * pipelined request waiting in the socket is not a hang-up. For a suspended connection,
 * which libmicrohttpd does not watch. Any thread, as long as the request has not been
 * released. */
bool edge_http_peer_gone(struct MHD_Connection *conn);

/* Queues a response with len bytes of body (copied; len 0 for none), the Content-Type
 * header when content_type is not NULL, and Cache-Control no-store. headers is NULL or a
 * NULL-terminated list of name, value pairs. From a handler only. Returns what
 * MHD_queue_response returned. */
enum MHD_Result edge_http_reply(struct MHD_Connection *conn, unsigned status,
                                const char *content_type, const char *body, size_t len,
                                const char *const *headers);

/* Queues a response with body `json` (copied), Content-Type application/json and
 * Cache-Control no-store. headers is NULL or a NULL-terminated list of name, value pairs.
 * From a handler only. Returns what MHD_queue_response returned. */
enum MHD_Result edge_http_reply_json(struct MHD_Connection *conn, unsigned status,
                                     const char *json, const char *const *headers);

/* Queues {"error":"<message>"} with status (message must be plain ASCII without quotes or
 * backslashes: it is one of our fixed texts, never peer input). From a handler only. */
enum MHD_Result edge_http_reply_error(struct MHD_Connection *conn, unsigned status,
                                      const char *message, const char *const *headers);

#endif
