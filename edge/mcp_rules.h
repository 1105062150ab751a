/* mcp_rules: the transport rules of MCP's HTTP transports as pure functions. Given the head
 * of a request (method, path, headers) and the edge's settings, then its body, they decide
 * which operation it is, or the exact HTTP status and JSON-RPC error to answer. No I/O, no
 * globals: the edge calls them on its HTTP thread, the tests and the fuzzer directly. */
#ifndef MCPHUB_MCP_RULES_H
#define MCPHUB_MCP_RULES_H

#include "jr.h"
#include "mcp26.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MCP_ROUTE_MAX 128      /* bytes of a route (group or server) name */
#define MCP_SESSION_ID_MAX 256 /* bytes of an Mcp-Session-Id */
#define MCP_EVENT_ID_MAX 256   /* bytes of a Last-Event-ID */
#define MCP_TOKEN_MAX 4096     /* bytes of a bearer token */
#define MCP_VERSION_DEFAULT "2025-03-26" /* MCP-Protocol-Version when the header is absent */
#define MCP_SCOPE_MAX 128      /* bytes of a client-chosen scope (Mcphub-Scope, _meta) */
#define MCP_NAME_MAX 1024      /* bytes of a decoded Mcp-Name */

typedef enum {
    MCP_EP_NONE = 0,
    MCP_EP_MCP,      /* /mcp[/{route}]: Streamable HTTP */
    MCP_EP_SSE,      /* /sse[/{route}]: legacy HTTP+SSE stream */
    MCP_EP_MESSAGES, /* /messages?sessionId=: legacy HTTP+SSE posts */
} mcp_endpoint;

typedef enum {
    MCP_OP_NONE = 0,
    MCP_OP_INITIALIZE, /* POST /mcp of initialize: OpenSession */
    MCP_OP_REQUESTS,   /* POST /mcp with at least one request: Request per request */
    MCP_OP_MESSAGES,   /* POST /mcp of notifications/responses only: Post each, 202 */
    MCP_OP_GET,        /* GET /mcp: AttachStream + SSE */
    MCP_OP_DELETE,     /* DELETE /mcp: EndSession */
    MCP_OP_SSE_OPEN,   /* GET /sse: OpenSession (legacy) + AttachStream + SSE */
    MCP_OP_SSE_POST,   /* POST /messages: Post, 202 */
    MCP_OP_IGNORE,     /* POST /mcp of 2026 notifications: 202, nothing to do (a stateless
                        * request is cancelled by closing its stream, not by a message) */
} mcp_op;

/* Flags of a protocol revision. */
enum {
    MCP_V_BATCH = 1u << 0,   /* JSON-RPC batch arrays allowed in a POST body */
    MCP_V_PRIMING = 1u << 1, /* SSE streams start with a priming event (id, empty data) */
};

/* What the rules need of the settings. Every pointer is borrowed. */
typedef struct {
    bool loopback;                       /* the edge listens on a loopback address */
    const char *const *allowed_origins;  /* exact origins ("*" = any), besides loopback ones */
    size_t n_allowed_origins;
    const char *const *allowed_hosts;    /* Host values accepted besides loopback names when
                                          * loopback; "name" matches any port */
    size_t n_allowed_hosts;
    uint64_t body_limit;                 /* bytes; 0 = no limit */
    bool bearer_auth;                    /* a bearer token is required */
    bool auth_custom_header;             /* token header is not Authorization: "Bearer " optional */
    const char *const *routes;           /* valid route names; "" = the global route */
    size_t n_routes;
} mcp_rules_cfg;

/* The head of one HTTP request. Every pointer is borrowed; NULL = header absent. */
typedef struct {
    const char *method;           /* "GET", "POST", ... */
    const char *path;             /* decoded path, without the query */
    const char *session_query;    /* value of the sessionId query argument */
    const char *accept;
    const char *content_type;
    const char *origin;
    const char *host;
    const char *session_id;       /* Mcp-Session-Id */
    const char *protocol_version; /* MCP-Protocol-Version */
    const char *last_event_id;    /* Last-Event-ID */
    const char *auth;             /* the bearer auth header's value */
    const char *mcp_method;       /* Mcp-Method (2026) */
    const char *mcp_name;         /* Mcp-Name (2026) */
    const char *scope;            /* Mcphub-Scope: a stateless client's per-session scope */
    bool has_length;              /* Content-Length was sent */
    uint64_t content_length;
} mcp_rules_in;

/* The decision. status 0 means go on; otherwise answer status with a JSON-RPC error body
 * {code, message, id}. */
typedef struct {
    int status;
    int code;
    char message[128];
    json_t *id;            /* owned: the id read from a rejected body, or NULL */
    json_t *data;          /* owned: the error's data member, or NULL */
    const char *allow;     /* 405: the Allow header's value (static) */
    bool auth_challenge;   /* 401: send WWW-Authenticate */

    mcp_endpoint ep;
    mcp_op op;
    char route[MCP_ROUTE_MAX + 1];
    const char *version;   /* static canonical revision in effect (header or default) */
    unsigned vflags;       /* MCP_V_* of that revision */
    const char *session;   /* borrowed from in: the session id (header or query), or NULL */
    const char *token;     /* borrowed from in->auth: the bearer token, token_len bytes */
    size_t token_len;
    bool stateless;        /* a 2026-07-28 request: no session, the envelope in _meta */
    char scope[MCP_SCOPE_MAX + 1]; /* stateless: the client's scope ("" = none chosen) */
} mcp_verdict;

/* Decides what the head of a request allows: the endpoint, the route and, for requests
 * without a body, the operation; or an error status (404, 405, 403, 401, 406, 415, 413,
 * 400). For POSTs v->op stays MCP_OP_NONE until mcp_rules_body. v is cleared first. */
void mcp_rules_head(const mcp_rules_cfg *cfg, const mcp_rules_in *in, mcp_verdict *v);

/* For a POST whose head passed: parses and validates the body (len bytes), applies the
 * batch, session and version rules, and sets v->op; or sets an error status (400 with
 * -32700 or -32600 and the id read, 413). On success *out owns the parsed body (NULL on
 * error).
 *
 * The era is decided per request, body first: a message whose params._meta names a
 * protocol version is a 2026-07-28 request (even an `initialize`), and gets that revision's
 * checks in its order: envelope (400 -32602), MCP-Protocol-Version equal to _meta's and
 * Mcp-Method equal to the method (400 -32020), a served version (400 -32022 with
 * data {supported, requested}), Mcp-Name (400 -32020), a method of that revision (404
 * -32601). A request without the envelope but with the 2026 header is 400 -32602. */
void mcp_rules_body(const mcp_rules_cfg *cfg, const mcp_rules_in *in, const char *body,
                    size_t len, mcp_verdict *v, jr_body **out);

/* Releases what v owns (the id). v may be reused afterwards. */
void mcp_verdict_cleanup(mcp_verdict *v);

/* True when an Accept header value lists `type` (e.g. "text/event-stream") explicitly with
 * a non-zero q; wildcards do not count (as the official SDK's server). NULL accepts none. */
bool mcp_rules_accepts(const char *accept, const char *type);

/* True for a Host value naming loopback: localhost, 127.0.0.1 or [::1], optional :port. */
bool mcp_rules_loopback_host(const char *host);

/* True for an Origin http(s)://localhost|127.0.0.1|[::1] with an optional :port. */
bool mcp_rules_loopback_origin(const char *origin);

/* Looks a revision up: returns its canonical static name and *flags, or NULL when this edge
 * does not serve it. */
const char *mcp_rules_version(const char *name, unsigned *flags);

/* True for a session id we could have issued: 1..MCP_SESSION_ID_MAX visible ASCII bytes. */
bool mcp_rules_session_id_ok(const char *id);

#endif
