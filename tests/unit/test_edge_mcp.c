/* test_edge_mcp: the MCP HTTP transports of mcphub-edge. First the transport rules as a
 * table (pure functions), then the real HTTP server against an in-process fake control. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "edge.h"
#include "edge_sse.h"
#include "jr.h"
#include "mcp_rules.h"
#include "mcphub/v1/gateway.pb-c.h"
#include "rpc.h"
#include "waiter.h"

/* ---- mcp_rules: table-driven ------------------------------------------------------------ */

#define ACC_BOTH "application/json, text/event-stream"
#define CT_JSON "application/json"
#define B_INIT "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{}}"
#define B_LIST "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}"
#define B_NOTE "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}"
#define B_RESULT "{\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"result\":{}}"
#define B_BATCH "[" B_LIST "," B_NOTE "]"
#define B_BATCH_NOTES "[" B_NOTE "," B_RESULT "]"
#define B_BATCH_INIT "[" B_INIT "]"

/* The stateless revision: the envelope, and requests built on it. */
#define META26(caps)                                                                           \
    "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","                    \
    "\"io.modelcontextprotocol/clientCapabilities\":" caps "}"
#define B26(method, params) "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"" method "\",\"params\":{" params "}}"
#define B26_LIST B26("tools/list", META26("{}"))
#define B26_CALL B26("tools/call", "\"name\":\"say hi\"," META26("{}"))

enum { R_AUTH = 1, R_CUSTOM = 2, R_OPEN = 4 };

typedef struct {
    const char *name;
    unsigned cfg;          /* R_* variations of the base settings */
    mcp_rules_in in;
    const char *body;      /* POST: run mcp_rules_body too */
    int status;            /* 0 = accepted */
    mcp_op op;             /* accepted: the operation */
    int code;              /* rejected: the JSON-RPC code */
    const char *route;     /* accepted: the route */
    const char *id;        /* rejected: the id in the error, NULL = null */
} rule_case;

#define POST_MCP(...)                                                                          \
    {.method = "POST", .path = "/mcp", .accept = ACC_BOTH, .content_type = CT_JSON, __VA_ARGS__}
#define POST26(method, ...)                                                                    \
    POST_MCP(.protocol_version = "2026-07-28", .mcp_method = method, __VA_ARGS__)
#define GET_MCP(...)                                                                           \
    {.method = "GET", .path = "/mcp", .accept = "text/event-stream", .session_id = "S1",         \
     __VA_ARGS__}

/* Rows override the defaults the two macros set: that is the point of them. */
#pragma GCC diagnostic push
#if defined(__clang__)
#pragma GCC diagnostic ignored "-Winitializer-overrides"
#else
#pragma GCC diagnostic ignored "-Woverride-init"
#endif
static const rule_case rule_cases[] = {
    /* accepted */
    {"initialize", 0, POST_MCP(.host = "localhost:3000"), B_INIT, 0, MCP_OP_INITIALIZE, 0, "",
     NULL},
    {"initialize ignores version header", 0, POST_MCP(.protocol_version = "bogus"), B_INIT, 0,
     MCP_OP_INITIALIZE, 0, "", NULL},
    {"request", 0, POST_MCP(.session_id = "S1"), B_LIST, 0, MCP_OP_REQUESTS, 0, "", NULL},
    {"request on a group", 0, POST_MCP(.path = "/mcp/grp", .session_id = "S1"), B_LIST, 0,
     MCP_OP_REQUESTS, 0, "grp", NULL},
    {"trailing slash is global", 0, POST_MCP(.path = "/mcp/", .session_id = "S1"), B_LIST, 0,
     MCP_OP_REQUESTS, 0, "", NULL},
    {"notification", 0, POST_MCP(.session_id = "S1", .protocol_version = "2025-06-18"), B_NOTE, 0,
     MCP_OP_MESSAGES, 0, "", NULL},
    {"response", 0, POST_MCP(.session_id = "S1", .protocol_version = "2025-11-25"), B_RESULT, 0,
     MCP_OP_MESSAGES, 0, "", NULL},
    {"batch 2025-03-26 (default)", 0, POST_MCP(.session_id = "S1"), B_BATCH, 0, MCP_OP_REQUESTS, 0,
     "", NULL},
    {"batch 2025-03-26 notes", 0, POST_MCP(.session_id = "S1", .protocol_version = "2025-03-26"),
     B_BATCH_NOTES, 0, MCP_OP_MESSAGES, 0, "", NULL},
    {"accept with params and case", 0,
     POST_MCP(.session_id = "S1", .accept = "Application/JSON;q=0.9 , TEXT/event-stream;q=0.5"),
     B_LIST, 0, MCP_OP_REQUESTS, 0, "", NULL},
    {"content type charset", 0,
     POST_MCP(.session_id = "S1", .content_type = "application/json; charset=UTF-8"), B_LIST, 0,
     MCP_OP_REQUESTS, 0, "", NULL},
    {"loopback origin on loopback host", 0,
     POST_MCP(.session_id = "S1", .host = "127.0.0.1:3000", .origin = "http://localhost:5173"),
     B_LIST, 0, MCP_OP_REQUESTS, 0, "", NULL},
    {"ipv6 loopback", 0,
     POST_MCP(.session_id = "S1", .host = "[::1]:3000", .origin = "https://[::1]"), B_LIST, 0, MCP_OP_REQUESTS, 0, "", NULL},
    {"allowed origin", 0,
     POST_MCP(.session_id = "S1", .host = "mcp.example.com", .origin = "https://APP.example.com/"),
     B_LIST, 0, MCP_OP_REQUESTS, 0, "", NULL},
    {"allowed host any port", 0, POST_MCP(.session_id = "S1", .host = "mcp.example.com:8080"),
     B_LIST, 0, MCP_OP_REQUESTS, 0, "", NULL},
    {"allowed host with port", 0, POST_MCP(.session_id = "S1", .host = "edge.local:8443"), B_LIST,
     0, MCP_OP_REQUESTS, 0, "", NULL},
    {"any host when not loopback", R_OPEN, POST_MCP(.session_id = "S1", .host = "evil.example.com"),
     B_LIST, 0, MCP_OP_REQUESTS, 0, "", NULL},
    {"bearer", R_AUTH, POST_MCP(.session_id = "S1", .auth = "Bearer abc.def"), B_LIST, 0,
     MCP_OP_REQUESTS, 0, "", NULL},
    {"bearer lower case", R_AUTH, POST_MCP(.session_id = "S1", .auth = "bearer   abc "), B_LIST, 0,
     MCP_OP_REQUESTS, 0, "", NULL},
    {"custom header raw token", R_AUTH | R_CUSTOM, POST_MCP(.session_id = "S1", .auth = "k-1"),
     B_LIST, 0, MCP_OP_REQUESTS, 0, "", NULL},
    {"length at the limit", 0, POST_MCP(.session_id = "S1", .has_length = true,
                                        .content_length = 1000),
     B_LIST, 0, MCP_OP_REQUESTS, 0, "", NULL},
    {"get", 0, GET_MCP(), NULL, 0, MCP_OP_GET, 0, "", NULL},
    {"get resume", 0, GET_MCP(.last_event_id = "abc/3", .protocol_version = "2025-11-25"), NULL, 0,
     MCP_OP_GET, 0, "", NULL},
    {"get on a server", 0, GET_MCP(.path = "/mcp/srv"), NULL, 0, MCP_OP_GET, 0, "srv", NULL},
    {"delete", 0, {.method = "DELETE", .path = "/mcp", .session_id = "S1"}, NULL, 0,
     MCP_OP_DELETE, 0, "", NULL},
    {"sse", 0, {.method = "GET", .path = "/sse"}, NULL, 0, MCP_OP_SSE_OPEN, 0, "", NULL},
    {"sse on a group", 0, {.method = "GET", .path = "/sse/grp", .accept = "*/*"}, NULL, 0,
     MCP_OP_SSE_OPEN, 0, "grp", NULL},
    {"messages", 0, {.method = "POST", .path = "/messages", .session_query = "S1",
                     .content_type = CT_JSON},
     B_INIT, 0, MCP_OP_SSE_POST, 0, "", NULL},

    /* 404 */
    {"unknown path", 0, {.method = "GET", .path = "/nope"}, NULL, 404, 0, JR_SERVER_ERROR, NULL,
     NULL},
    {"mcp prefix only", 0, {.method = "GET", .path = "/mcpx"}, NULL, 404, 0, JR_SERVER_ERROR, NULL,
     NULL},
    {"nested route", 0, POST_MCP(.path = "/mcp/a/b"), B_LIST, 404, 0, JR_SERVER_ERROR, NULL, NULL},
    {"unknown route", 0, POST_MCP(.path = "/mcp/nope", .session_id = "S1"), B_LIST, 404, 0,
     JR_SERVER_ERROR, NULL, NULL},
    {"unknown sse route", 0, {.method = "GET", .path = "/sse/nope"}, NULL, 404, 0, JR_SERVER_ERROR,
     NULL, NULL},
    {"messages take no route", 0, {.method = "POST", .path = "/messages/x"}, NULL, 404, 0,
     JR_SERVER_ERROR, NULL, NULL},
    {"no path", 0, {.method = "GET"}, NULL, 404, 0, JR_SERVER_ERROR, NULL, NULL},

    /* 405 */
    {"put", 0, {.method = "PUT", .path = "/mcp"}, NULL, 405, 0, JR_SERVER_ERROR, NULL, NULL},
    {"head", 0, {.method = "HEAD", .path = "/mcp"}, NULL, 405, 0, JR_SERVER_ERROR, NULL, NULL},
    {"post sse", 0, {.method = "POST", .path = "/sse"}, NULL, 405, 0, JR_SERVER_ERROR, NULL, NULL},
    {"get messages", 0, {.method = "GET", .path = "/messages"}, NULL, 405, 0, JR_SERVER_ERROR, NULL,
     NULL},
    {"no method", 0, {.path = "/mcp"}, NULL, 405, 0, JR_SERVER_ERROR, NULL, NULL},

    /* 403 */
    {"rebinding host", 0, POST_MCP(.host = "evil.example.com"), B_INIT, 403, 0, JR_SERVER_ERROR,
     NULL, NULL},
    {"rebinding host and origin", 0,
     POST_MCP(.host = "evil.example.com", .origin = "http://evil.example.com"), B_INIT, 403, 0,
     JR_SERVER_ERROR, NULL, NULL},
    {"host lookalike", 0, POST_MCP(.host = "localhost.evil.com"), B_INIT, 403, 0, JR_SERVER_ERROR,
     NULL, NULL},
    {"host bad port", 0, POST_MCP(.host = "localhost:99999x"), B_INIT, 403, 0, JR_SERVER_ERROR,
     NULL, NULL},
    {"allowed host name, other name", 0, POST_MCP(.host = "edge.local:9999"), B_INIT, 403, 0,
     JR_SERVER_ERROR, NULL, NULL},
    {"foreign origin", 0, POST_MCP(.host = "localhost", .origin = "https://evil.example.com"),
     B_INIT, 403, 0, JR_SERVER_ERROR, NULL, NULL},
    {"null origin", 0, POST_MCP(.origin = "null"), B_INIT, 403, 0, JR_SERVER_ERROR, NULL, NULL},
    {"loopback origin, other host", 0,
     POST_MCP(.host = "mcp.example.com", .origin = "http://localhost"), B_INIT, 403, 0,
     JR_SERVER_ERROR, NULL, NULL},
    {"loopback origin lookalike", 0, POST_MCP(.origin = "http://localhost.evil.com"), B_INIT, 403,
     0, JR_SERVER_ERROR, NULL, NULL},
    {"origin checked on get", 0, GET_MCP(.origin = "https://evil.example.com"), NULL, 403, 0,
     JR_SERVER_ERROR, NULL, NULL},
    {"origin checked on sse", 0, {.method = "GET", .path = "/sse", .origin = "http://x.y"}, NULL,
     403, 0, JR_SERVER_ERROR, NULL, NULL},
    {"origin checked when open", R_OPEN, POST_MCP(.host = "h", .origin = "http://x.y"), B_INIT, 403,
     0, JR_SERVER_ERROR, NULL, NULL},

    /* 401 */
    {"no token", R_AUTH, POST_MCP(), B_INIT, 401, 0, JR_SERVER_ERROR, NULL, NULL},
    {"basic auth", R_AUTH, POST_MCP(.auth = "Basic dXNlcg=="), B_INIT, 401, 0, JR_SERVER_ERROR, NULL,
     NULL},
    {"empty bearer", R_AUTH, POST_MCP(.auth = "Bearer "), B_INIT, 401, 0, JR_SERVER_ERROR, NULL,
     NULL},
    {"two tokens", R_AUTH, POST_MCP(.auth = "Bearer a b"), B_INIT, 401, 0, JR_SERVER_ERROR, NULL,
     NULL},
    {"raw token on Authorization", R_AUTH, POST_MCP(.auth = "abc"), B_INIT, 401, 0, JR_SERVER_ERROR,
     NULL, NULL},
    {"auth on get", R_AUTH, GET_MCP(), NULL, 401, 0, JR_SERVER_ERROR, NULL, NULL},
    {"auth on messages", R_AUTH, {.method = "POST", .path = "/messages", .session_query = "S1"},
     NULL, 401, 0, JR_SERVER_ERROR, NULL, NULL},
    {"auth before route", R_AUTH, POST_MCP(.path = "/mcp/nope"), B_INIT, 401, 0, JR_SERVER_ERROR,
     NULL, NULL},

    /* 406 */
    {"post accept json only", 0, POST_MCP(.accept = "application/json"), B_INIT, 406, 0,
     JR_SERVER_ERROR, NULL, NULL},
    {"post accept sse only", 0, POST_MCP(.accept = "text/event-stream"), B_INIT, 406, 0,
     JR_SERVER_ERROR, NULL, NULL},
    {"post accept wildcard", 0, POST_MCP(.accept = "*/*"), B_INIT, 406, 0, JR_SERVER_ERROR, NULL,
     NULL},
    {"post accept missing", 0, POST_MCP(.accept = NULL), B_INIT, 406, 0, JR_SERVER_ERROR, NULL, NULL},
    {"post accept lookalike", 0, POST_MCP(.accept = "application/jsonx, text/event-streams"), B_INIT,
     406, 0, JR_SERVER_ERROR, NULL, NULL},
    {"post accept q=0", 0, POST_MCP(.accept = "application/json, text/event-stream;q=0"), B_INIT,
     406, 0, JR_SERVER_ERROR, NULL, NULL},
    {"get accept json", 0, GET_MCP(.accept = "application/json"), NULL, 406, 0, JR_SERVER_ERROR,
     NULL, NULL},
    {"get accept missing", 0, GET_MCP(.accept = NULL), NULL, 406, 0, JR_SERVER_ERROR, NULL, NULL},

    /* 415 */
    {"text/plain", 0, POST_MCP(.content_type = "text/plain"), B_INIT, 415, 0, JR_SERVER_ERROR, NULL,
     NULL},
    {"no content type", 0, POST_MCP(.content_type = NULL), B_INIT, 415, 0, JR_SERVER_ERROR, NULL,
     NULL},
    {"json lookalike", 0, POST_MCP(.content_type = "application/jsonp"), B_INIT, 415, 0,
     JR_SERVER_ERROR, NULL, NULL},
    {"latin1 json", 0, POST_MCP(.content_type = "application/json; charset=iso-8859-1"), B_INIT,
     415, 0, JR_SERVER_ERROR, NULL, NULL},
    {"messages text", 0, {.method = "POST", .path = "/messages", .session_query = "S1",
                          .content_type = "text/plain"},
     B_INIT, 415, 0, JR_SERVER_ERROR, NULL, NULL},

    /* 413 */
    {"length over", 0, POST_MCP(.has_length = true, .content_length = 1001), B_INIT, 413, 0,
     JR_SERVER_ERROR, NULL, NULL},
    {"messages length over", 0, {.method = "POST", .path = "/messages", .session_query = "S1",
                                 .content_type = CT_JSON, .has_length = true,
                                 .content_length = 5000},
     B_INIT, 413, 0, JR_SERVER_ERROR, NULL, NULL},

    /* 400 */
    {"no session", 0, POST_MCP(), B_LIST, 400, 0, JR_SERVER_ERROR, NULL, "2"},
    {"no session notification", 0, POST_MCP(), B_NOTE, 400, 0, JR_SERVER_ERROR, NULL, NULL},
    {"malformed session", 0, POST_MCP(.session_id = "a b"), B_LIST, 400, 0, JR_SERVER_ERROR, NULL,
     NULL},
    {"bad version", 0, POST_MCP(.session_id = "S1", .protocol_version = "invalid-protocol-version"),
     B_LIST, 400, 0, JR_SERVER_ERROR, NULL, "2"},
    {"past version", 0, POST_MCP(.session_id = "S1", .protocol_version = "2000-01-01"), B_LIST, 400,
     0, JR_SERVER_ERROR, NULL, "2"},
    {"future version", 0, POST_MCP(.session_id = "S1", .protocol_version = "2099-01-01"), B_LIST, 400,
     0, JR_SERVER_ERROR, NULL, "2"},
    {"bad version pre-init", 0, POST_MCP(.protocol_version = "2099-01-01"), B_LIST, 400, 0,
     JR_SERVER_ERROR, NULL, "2"},
    {"parse error", 0, POST_MCP(.session_id = "S1"), "{\"jsonrpc\":", 400, 0, JR_PARSE_ERROR, NULL,
     NULL},
    {"empty body", 0, POST_MCP(.session_id = "S1"), "", 400, 0, JR_PARSE_ERROR, NULL, NULL},
    {"invalid request keeps id", 0, POST_MCP(.session_id = "S1"),
     "{\"jsonrpc\":\"1.0\",\"id\":\"x\",\"method\":\"m\"}", 400, 0, JR_INVALID_REQUEST, NULL, "x"},
    {"batch 2025-06-18", 0, POST_MCP(.session_id = "S1", .protocol_version = "2025-06-18"), B_BATCH,
     400, 0, JR_INVALID_REQUEST, NULL, NULL},
    {"batch 2025-11-25", 0, POST_MCP(.session_id = "S1", .protocol_version = "2025-11-25"), B_BATCH,
     400, 0, JR_INVALID_REQUEST, NULL, NULL},
    {"batch with initialize", 0, POST_MCP(), B_BATCH_INIT, 400, 0, JR_INVALID_REQUEST, NULL, NULL},
    {"empty batch", 0, POST_MCP(.session_id = "S1"), "[]", 400, 0, JR_INVALID_REQUEST, NULL, NULL},
    {"initialize with session", 0, POST_MCP(.session_id = "S1"), B_INIT, 400, 0, JR_INVALID_REQUEST,
     NULL, "1"},
    {"get no session", 0, GET_MCP(.session_id = NULL), NULL, 400, 0, JR_SERVER_ERROR, NULL, NULL},
    {"get bad version", 0, GET_MCP(.protocol_version = "1.0"), NULL, 400, 0, JR_SERVER_ERROR, NULL,
     NULL},
    {"get bad last event id", 0, GET_MCP(.last_event_id = "a\x01"), NULL, 400, 0, JR_SERVER_ERROR,
     NULL, NULL},
    {"delete no session", 0, {.method = "DELETE", .path = "/mcp"}, NULL, 400, 0, JR_SERVER_ERROR,
     NULL, NULL},
    {"delete bad version", 0, {.method = "DELETE", .path = "/mcp", .session_id = "S1",
                               .protocol_version = "2026-07-28"},
     NULL, 400, 0, JR_SERVER_ERROR, NULL, NULL},
    {"messages no session", 0, {.method = "POST", .path = "/messages", .content_type = CT_JSON},
     B_INIT, 400, 0, JR_SERVER_ERROR, NULL, NULL},
    {"messages batch", 0, {.method = "POST", .path = "/messages", .session_query = "S1",
                           .content_type = CT_JSON},
     B_BATCH, 400, 0, JR_INVALID_REQUEST, NULL, NULL},
    {"messages parse error", 0, {.method = "POST", .path = "/messages", .session_query = "S1",
                                 .content_type = CT_JSON},
     "nope", 400, 0, JR_PARSE_ERROR, NULL, NULL},
    /* the stateless revision (2026-07-28): era by body first, then its checks in order */
    {"2026 request", 0, POST26("tools/list"), B26_LIST, 0, MCP_OP_REQUESTS, 0, "", NULL},
    {"2026 ignores a session id", 0, POST26("tools/list", .session_id = "S1"), B26_LIST, 0,
     MCP_OP_REQUESTS, 0, "", NULL},
    {"2026 method header with spaces", 0, POST26(" tools/list "), B26_LIST, 0, MCP_OP_REQUESTS,
     0, "", NULL},
    {"2026 call with its name", 0, POST26("tools/call", .mcp_name = "say hi"), B26_CALL, 0,
     MCP_OP_REQUESTS, 0, "", NULL},
    {"2026 name in base64", 0, POST26("tools/call", .mcp_name = "=?base64?c2F5IGhp?="), B26_CALL,
     0, MCP_OP_REQUESTS, 0, "", NULL},
    {"2026 scope header", 0, POST26("tools/list", .scope = "tab-1"), B26_LIST, 0,
     MCP_OP_REQUESTS, 0, "", NULL},
    {"2026 notification", 0, POST26(NULL),
     "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":1}}", 0,
     MCP_OP_IGNORE, 0, "", NULL},
    {"2026 no envelope", 0, POST26("tools/list"), "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\",\"params\":{}}",
     400, 0, JR_INVALID_PARAMS, NULL, "7"},
    {"2026 no capabilities", 0, POST26("tools/list"),
     B26("tools/list", "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}"),
     400, 0, JR_INVALID_PARAMS, NULL, "7"},
    {"2026 bad log level", 0, POST26("tools/list"),
     B26("tools/list", "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","
                       "\"io.modelcontextprotocol/clientCapabilities\":{},"
                       "\"io.modelcontextprotocol/logLevel\":\"loud\"}"),
     400, 0, JR_INVALID_PARAMS, NULL, "7"},
    {"2026 version header differs", 0, POST26("tools/list", .protocol_version = "2025-11-25"),
     B26_LIST, 400, 0, MCP26_E_HEADER_MISMATCH, NULL, "7"},
    {"2026 version header missing", 0, POST26("tools/list", .protocol_version = NULL), B26_LIST,
     400, 0, MCP26_E_HEADER_MISMATCH, NULL, "7"},
    {"2026 method header differs", 0, POST26("tools/call"), B26_LIST, 400, 0,
     MCP26_E_HEADER_MISMATCH, NULL, "7"},
    {"2026 method header missing", 0, POST26(NULL), B26_LIST, 400, 0, MCP26_E_HEADER_MISMATCH,
     NULL, "7"},
    {"2026 method header case", 0, POST26("TOOLS/LIST"), B26_LIST, 400, 0,
     MCP26_E_HEADER_MISMATCH, NULL, "7"},
    {"2026 unsupported version", 0, POST26("tools/list", .protocol_version = "v999"),
     B26("tools/list", "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"v999\","
                       "\"io.modelcontextprotocol/clientCapabilities\":{}}"),
     400, 0, MCP26_E_UNSUPPORTED_VERSION, NULL, "7"},
    {"2026 name header missing", 0, POST26("tools/call"), B26_CALL, 400, 0,
     MCP26_E_HEADER_MISMATCH, NULL, "7"},
    {"2026 name header differs", 0, POST26("tools/call", .mcp_name = "say bye"), B26_CALL, 400,
     0, MCP26_E_HEADER_MISMATCH, NULL, "7"},
    {"2026 initialize is gone", 0, POST26("initialize"), B26("initialize", META26("{}")), 404, 0,
     JR_METHOD_NOT_FOUND, NULL, "7"},
    {"2026 ping is gone", 0, POST26("ping"), B26("ping", META26("{}")), 404, 0,
     JR_METHOD_NOT_FOUND, NULL, "7"},
    {"2026 bad scope", 0, POST26("tools/list", .scope = "a b"), B26_LIST, 400, 0,
     MCP26_E_HEADER_MISMATCH, NULL, "7"},
    {"2026 scope header and meta differ", 0, POST26("tools/list", .scope = "one"),
     B26("tools/list", "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","
                       "\"io.modelcontextprotocol/clientCapabilities\":{},"
                       "\"dev.mcphub/scope\":\"two\"}"),
     400, 0, MCP26_E_HEADER_MISMATCH, NULL, "7"},
    {"2026 batch", 0, POST26("tools/list"), "[" B26_LIST "]", 400, 0, JR_INVALID_REQUEST, NULL,
     NULL},
};
#pragma GCC diagnostic pop

static void rules_cfg_for(unsigned flags, mcp_rules_cfg *cfg)
{
    static const char *const origins[] = {"https://app.example.com"};
    static const char *const hosts[] = {"mcp.example.com", "edge.local:8443"};
    static const char *const routes[] = {"", "grp", "srv"};

    memset(cfg, 0, sizeof *cfg);
    cfg->loopback = !(flags & R_OPEN);
    cfg->allowed_origins = origins;
    cfg->n_allowed_origins = 1;
    cfg->allowed_hosts = hosts;
    cfg->n_allowed_hosts = 2;
    cfg->body_limit = 1000;
    cfg->bearer_auth = flags & R_AUTH;
    cfg->auth_custom_header = flags & R_CUSTOM;
    cfg->routes = routes;
    cfg->n_routes = 3;
}

static void test_rules_table(void **state)
{
    for (size_t i = 0; i < sizeof rule_cases / sizeof rule_cases[0]; i++) {
        const rule_case *c = &rule_cases[i];
        mcp_rules_cfg cfg;
        mcp_verdict v;
        jr_body *b = NULL;
        char id[64];

        rules_cfg_for(c->cfg, &cfg);
        mcp_rules_head(&cfg, &c->in, &v);
        if (!v.status && c->body)
            mcp_rules_body(&cfg, &c->in, c->body, strlen(c->body), &v, &b);
        if (v.status != c->status)
            fail_msg("rule '%s': status %d (%s), want %d", c->name, v.status, v.message,
                     c->status);
        if (c->status == 0) {
            if (v.op != c->op)
                fail_msg("rule '%s': op %d, want %d", c->name, (int)v.op, (int)c->op);
            if (strcmp(v.route, c->route) != 0)
                fail_msg("rule '%s': route '%s', want '%s'", c->name, v.route, c->route);
            assert_true((b != NULL) == (c->body != NULL));
            assert_non_null(v.version);
            if (c->cfg & R_AUTH)
                assert_true(v.token && v.token_len > 0);
            assert_int_equal(v.stateless, c->in.protocol_version &&
                                              !strcmp(c->in.protocol_version, "2026-07-28"));
            if (c->in.scope)
                assert_string_equal(v.scope, c->in.scope);
        } else {
            assert_null(b);
            if (v.code != c->code)
                fail_msg("rule '%s': code %d, want %d (%s)", c->name, v.code, c->code, v.message);
            assert_true(v.message[0] != '\0');
            jr_id_text(v.id, id, sizeof id);
            if (strcmp(id, c->id ? c->id : "null") != 0)
                fail_msg("rule '%s': id %s, want %s", c->name, id, c->id ? c->id : "null");
            assert_int_equal(v.auth_challenge, c->status == 401);
            if (c->code == MCP26_E_UNSUPPORTED_VERSION) {
                assert_string_equal(json_string_value(json_array_get(
                                        json_object_get(v.data, "supported"), 0)),
                                    "2026-07-28");
                assert_string_equal(json_string_value(json_object_get(v.data, "requested")),
                                    "v999");
            }
            if (c->status == 405)
                assert_non_null(v.allow);
        }
        jr_body_free(b);
        mcp_verdict_cleanup(&v);
    }
}

static void test_rules_helpers(void **state)
{
    unsigned f = 0;
    mcp_rules_cfg cfg;
    mcp_rules_in in = {.method = "POST", .path = "/mcp", .accept = ACC_BOTH,
                       .content_type = CT_JSON, .session_id = "S1", .auth = "Bearer tok-1"};
    mcp_verdict v;

    assert_true(mcp_rules_accepts("text/event-stream", "text/event-stream"));
    assert_true(mcp_rules_accepts("a/b,text/event-stream;q=0.1", "text/event-stream"));
    assert_false(mcp_rules_accepts("text/event-stream;q=0.000", "text/event-stream"));
    assert_false(mcp_rules_accepts("text/*", "text/event-stream"));
    assert_false(mcp_rules_accepts("", "text/event-stream"));
    assert_false(mcp_rules_accepts(NULL, "text/event-stream"));
    assert_true(mcp_rules_loopback_host("LOCALHOST"));
    assert_true(mcp_rules_loopback_host("127.0.0.1:1"));
    assert_false(mcp_rules_loopback_host("127.0.0.1:"));
    assert_false(mcp_rules_loopback_host("127.0.0.2"));
    assert_false(mcp_rules_loopback_host("[::1"));
    assert_false(mcp_rules_loopback_host(NULL));
    assert_true(mcp_rules_loopback_origin("http://[::1]:8080"));
    assert_false(mcp_rules_loopback_origin("ftp://localhost"));
    assert_false(mcp_rules_loopback_origin("http://localhost/"));
    assert_string_equal(mcp_rules_version("2025-11-25", &f), "2025-11-25");
    assert_true(f & MCP_V_PRIMING);
    assert_null(mcp_rules_version("2026-07-28", NULL));
    assert_null(mcp_rules_version(NULL, NULL));
    assert_true(mcp_rules_session_id_ok("!~"));
    assert_false(mcp_rules_session_id_ok(""));
    assert_false(mcp_rules_session_id_ok("\x7f"));

    /* the token is handed back, borrowed from the header */
    rules_cfg_for(R_AUTH, &cfg);
    mcp_rules_head(&cfg, &in, &v);
    assert_int_equal(v.status, 0);
    assert_int_equal(v.token_len, 5);
    assert_memory_equal(v.token, "tok-1", 5);
    /* an overlong session id is malformed, not unknown */
    {
        char sid[MCP_SESSION_ID_MAX + 2];

        memset(sid, 'a', sizeof sid - 1);
        sid[sizeof sid - 1] = '\0';
        assert_false(mcp_rules_session_id_ok(sid));
        sid[MCP_SESSION_ID_MAX] = '\0';
        assert_true(mcp_rules_session_id_ok(sid));
    }
    mcp_verdict_cleanup(&v);
}


/* ---- edge_sse ------------------------------------------------------------------------- */

static void test_sse_buf(void **state)
{
    sse_buf b;
    char out[256];
    size_t n;

    sse_buf_init(&b, 64);
    assert_int_equal(sse_buf_event(&b, "message", "s/1", 0, "{\"a\":1}", 7), 0);
    n = sse_buf_read(&b, out, sizeof out - 1);
    out[n] = '\0';
    assert_string_equal(out, "event: message\nid: s/1\ndata: {\"a\":1}\n\n");
    assert_int_equal(sse_buf_event(&b, NULL, "s/0", 3000, "", 0), 0);
    n = sse_buf_read(&b, out, sizeof out - 1);
    out[n] = '\0';
    assert_string_equal(out, "id: s/0\nretry: 3000\ndata: \n\n");
    /* multi-line data, every line ending; an id that would break framing is left out */
    assert_int_equal(sse_buf_event(&b, NULL, "a\nb", 0, "x\r\ny\rz\n", 7), 0);
    n = sse_buf_read(&b, out, sizeof out - 1);
    out[n] = '\0';
    assert_string_equal(out, "data: x\ndata: y\ndata: z\n\n");
    assert_int_equal(sse_buf_comment(&b, "ping"), 0);
    n = sse_buf_read(&b, out, 3);
    assert_int_equal(n, 3);
    assert_int_equal(sse_buf_pending(&b), 5);
    n = sse_buf_read(&b, out, sizeof out);
    assert_int_equal(n, 5);
    assert_int_equal(sse_buf_comment(&b, "a\nb"), -EINVAL);

    /* bounded: an empty buffer takes one big event, then nothing until drained */
    {
        char big[100];

        memset(big, 'x', sizeof big);
        assert_int_equal(sse_buf_event(&b, NULL, NULL, 0, big, sizeof big), 0);
        assert_int_equal(sse_buf_comment(&b, "p"), -ENOBUFS);
        assert_int_equal(sse_buf_event(&b, NULL, NULL, 0, "{}", 2), -ENOBUFS);
        n = sse_buf_read(&b, out, sizeof out);
        assert_int_equal(n, 108);
        assert_int_equal(sse_buf_event(&b, NULL, NULL, 0, "{}", 2), 0);
    }
    /* prepend keeps order: front first */
    {
        sse_buf front;

        sse_buf_init(&front, 0);
        assert_int_equal(sse_buf_comment(&front, "first"), 0);
        sse_buf_prepend(&b, &front);
        assert_int_equal(sse_buf_pending(&front), 0);
        n = sse_buf_read(&b, out, sizeof out - 1);
        out[n] = '\0';
        assert_string_equal(out, ": first\n\ndata: {}\n\n");
        sse_buf_prepend(&b, &front); /* empty front: nothing changes */
        assert_int_equal(sse_buf_pending(&b), 0);
        sse_buf_cleanup(&front);
    }
    sse_buf_cleanup(&b);
}

/* ---- fake control ------------------------------------------------------------------------ */

#define FAKE_MAX 32

typedef struct {
    char id[64];
    bool legacy;
    bool live;
    char stream[64]; /* attached GET or /sse stream, "" for none */
} fake_session;

typedef struct {
    rpc_call *call;
    char stream_id[64];
    char id[64]; /* JSON text of the request's id */
} fake_held;

typedef struct {
    rpc_server *srv;
    int port;
    pthread_mutex_t mu;
    waiter events; /* bumped on every call the fake sees */
    rpc_call *sub; /* the Subscribe stream, while open */
    uint64_t seq;

    /* settings sent in Hello and ConfigChanged */
    bool bearer;
    uint64_t body_limit;

    fake_session sessions[FAKE_MAX];
    int nsessions;
    fake_held held[FAKE_MAX];
    int nheld;

    /* what the edge sent (last of each) and counts */
    int n_open, n_end, n_request, n_post, n_attach, n_detach, n_cancel, n_sub;
    int last_era;
    char last_init[1024];
    char last_route[64];
    char last_token[64];
    char last_req_session[64], last_req_msg[1024], last_req_stream[64], last_req_version[32];
    char last_post_msg[1024];
    char last_attach_stream[64], last_attach_last_id[64];
    char last_detach_stream[64], last_detach_session[64];
    char last_edge_id[64];
} fake_control;

static fake_control *g_fake; /* for the cancel callbacks */

static fake_session *fake_find(fake_control *fc, const char *id)
{
    for (int i = 0; i < fc->nsessions; i++)
        if (fc->sessions[i].live && strcmp(fc->sessions[i].id, id) == 0)
            return &fc->sessions[i];
    return NULL;
}

/* Copies src, cut to fit (a truncating copy on purpose). */
static void copy(char *dst, size_t size, const char *src)
{
    size_t n = src ? strnlen(src, size - 1) : 0;

    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

/* Bearer check as control would do it: "good" passes, "limited" is refused, others unknown.
 * fc->mu held. Returns OK or the status to fail with. */
static grpc_status_code fake_auth(fake_control *fc, const Mcphub__V1__Principal *p)
{
    const char *tok = p ? p->bearer_token : "";

    copy(fc->last_token, sizeof fc->last_token, tok);
    if (!fc->bearer)
        return GRPC_STATUS_OK;
    if (strcmp(tok, "good") == 0)
        return GRPC_STATUS_OK;
    if (strcmp(tok, "limited") == 0)
        return GRPC_STATUS_PERMISSION_DENIED;
    return GRPC_STATUS_UNAUTHENTICATED;
}

static void fake_settings(fake_control *fc, Mcphub__V1__EdgeSettings *s)
{
    static char *routes[] = {(char *)"", (char *)"grp"};
    static char *origins[] = {(char *)"https://app.example.com"};

    mcphub__v1__edge_settings__init(s);
    s->routes = routes;
    s->n_routes = 2;
    s->allowed_origins = origins;
    s->n_allowed_origins = 1;
    s->json_body_limit = fc->body_limit;
    s->bearer_auth = fc->bearer;
}

/* Sends an event on the Subscribe stream. fc->mu held. */
static void fake_push(fake_control *fc, Mcphub__V1__EdgeEvent *ev)
{
    ev->seq = ++fc->seq;
    if (fc->sub)
        rpc_call_send(fc->sub, &ev->base);
}

static void fake_push_message(fake_control *fc, const char *session, const char *stream,
                              const char *event_id, const char *json)
{
    Mcphub__V1__EdgeEvent ev = MCPHUB__V1__EDGE_EVENT__INIT;
    Mcphub__V1__StreamMessage sm = MCPHUB__V1__STREAM_MESSAGE__INIT;

    sm.session_id = (char *)session;
    sm.stream_id = (char *)stream;
    sm.event_id = (char *)event_id;
    sm.message_json = (char *)json;
    ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_STREAM_MESSAGE;
    ev.stream_message = &sm;
    fake_push(fc, &ev);
}

/* Ends a session and tells the edge. fc->mu held. */
static void fake_end(fake_control *fc, fake_session *s, Mcphub__V1__EndReason why)
{
    Mcphub__V1__EdgeEvent ev = MCPHUB__V1__EDGE_EVENT__INIT;
    Mcphub__V1__SessionEnded se = MCPHUB__V1__SESSION_ENDED__INIT;

    s->live = false;
    se.session_id = s->id;
    se.reason = why;
    ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_SESSION_ENDED;
    ev.session_ended = &se;
    fake_push(fc, &ev);
}

static void fake_sub_cancel(rpc_call *call, void *ud)
{
    fake_control *fc = ud;

    pthread_mutex_lock(&fc->mu);
    if (fc->sub == call)
        fc->sub = NULL;
    pthread_mutex_unlock(&fc->mu);
    rpc_call_finish(call, GRPC_STATUS_CANCELLED, "cancelled");
}

static void fake_subscribe(rpc_call *call, void *ud)
{
    fake_control *fc = ud;
    const Mcphub__V1__SubscribeRequest *req =
        (const Mcphub__V1__SubscribeRequest *)rpc_call_request(call);
    Mcphub__V1__EdgeEvent ev = MCPHUB__V1__EDGE_EVENT__INIT;
    Mcphub__V1__Hello hello = MCPHUB__V1__HELLO__INIT;
    Mcphub__V1__EdgeSettings s;

    pthread_mutex_lock(&fc->mu);
    copy(fc->last_edge_id, sizeof fc->last_edge_id, req->edge_id);
    fake_settings(fc, &s);
    hello.control_id = (char *)"fake";
    hello.settings = &s;
    ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_HELLO;
    ev.hello = &hello;
    fc->sub = call;
    fc->n_sub++;
    fake_push(fc, &ev);
    pthread_mutex_unlock(&fc->mu);
    if (rpc_call_on_cancel(call, fake_sub_cancel, fc) < 0)
        fake_sub_cancel(call, fc);
    waiter_bump(&fc->events);
}

/* Changes the settings and sends them in a ConfigChanged. */
static void fake_push_settings(fake_control *fc, bool bearer, uint64_t body_limit)
{
    Mcphub__V1__EdgeEvent ev = MCPHUB__V1__EDGE_EVENT__INIT;
    Mcphub__V1__ConfigChanged cc = MCPHUB__V1__CONFIG_CHANGED__INIT;
    Mcphub__V1__EdgeSettings s;

    pthread_mutex_lock(&fc->mu);
    fc->bearer = bearer;
    fc->body_limit = body_limit;
    fake_settings(fc, &s);
    cc.config_version = fc->seq + 100;
    cc.settings = &s;
    ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_CONFIG_CHANGED;
    ev.config_changed = &cc;
    fake_push(fc, &ev);
    pthread_mutex_unlock(&fc->mu);
}

/* The JSON text of a message's id ("null" when none) and its method. */
static void msg_parts(const char *json, char *id, size_t idsize, char *method, size_t msize)
{
    json_t *m = json_loads(json, 0, NULL);
    json_t *i = m ? json_object_get(m, "id") : NULL;
    char *s = i ? json_dumps(i, JSON_ENCODE_ANY) : NULL;

    copy(id, idsize, s ? s : "null");
    copy(method, msize, m ? json_string_value(json_object_get(m, "method")) : "");
    free(s);
    json_decref(m);
}

static void fake_open(rpc_call *call, void *ud)
{
    fake_control *fc = ud;
    const Mcphub__V1__OpenSessionRequest *req =
        (const Mcphub__V1__OpenSessionRequest *)rpc_call_request(call);
    Mcphub__V1__OpenSessionReply rep = MCPHUB__V1__OPEN_SESSION_REPLY__INIT;
    grpc_status_code st;
    fake_session *s;
    char id[64], method[64], resp[512];

    pthread_mutex_lock(&fc->mu);
    fc->n_open++;
    fc->last_era = (int)req->era;
    copy(fc->last_init, sizeof fc->last_init, req->initialize_json);
    copy(fc->last_route, sizeof fc->last_route, req->route);
    if ((st = fake_auth(fc, req->principal)) != GRPC_STATUS_OK) {
        pthread_mutex_unlock(&fc->mu);
        rpc_call_fail(call, st, st == GRPC_STATUS_PERMISSION_DENIED ? "key may not use this route"
                                                                   : "unknown key");
        waiter_bump(&fc->events);
        return;
    }
    s = &fc->sessions[fc->nsessions % FAKE_MAX];
    memset(s, 0, sizeof *s);
    snprintf(s->id, sizeof s->id, "%s-%d",
             req->era == MCPHUB__V1__PROTOCOL_ERA__PROTOCOL_ERA_LEGACY_SSE ? "legacy" : "sess",
             ++fc->nsessions);
    s->legacy = req->era == MCPHUB__V1__PROTOCOL_ERA__PROTOCOL_ERA_LEGACY_SSE;
    s->live = true;
    rep.session_id = s->id;
    rep.protocol_version = (char *)"2025-11-25";
    if (!s->legacy) {
        msg_parts(req->initialize_json, id, sizeof id, method, sizeof method);
        snprintf(resp, sizeof resp,
                 "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"protocolVersion\":\"2025-11-25\","
                 "\"capabilities\":{\"tools\":{}},\"serverInfo\":{\"name\":\"fake\",\"version\":\"1\"}}}",
                 id);
        rep.response_json = resp;
    }
    pthread_mutex_unlock(&fc->mu);
    rpc_call_reply(call, &rep.base);
    waiter_bump(&fc->events);
}

static void fake_end_session(rpc_call *call, void *ud)
{
    fake_control *fc = ud;
    const Mcphub__V1__EndSessionRequest *req =
        (const Mcphub__V1__EndSessionRequest *)rpc_call_request(call);
    Mcphub__V1__EndSessionReply rep = MCPHUB__V1__END_SESSION_REPLY__INIT;
    fake_session *s;

    pthread_mutex_lock(&fc->mu);
    fc->n_end++;
    if ((s = fake_find(fc, req->session_id))) {
        rep.existed = true;
        fake_end(fc, s, MCPHUB__V1__END_REASON__END_REASON_CLIENT_DELETE);
    }
    pthread_mutex_unlock(&fc->mu);
    rpc_call_reply(call, &rep.base);
    waiter_bump(&fc->events);
}

static void fake_held_cancel(rpc_call *call, void *ud)
{
    fake_control *fc = ud;
    bool mine = false;

    pthread_mutex_lock(&fc->mu);
    for (int i = 0; i < fc->nheld; i++) {
        if (fc->held[i].call == call) {
            fc->held[i] = fc->held[--fc->nheld];
            mine = true;
            fc->n_cancel++;
            break;
        }
    }
    pthread_mutex_unlock(&fc->mu);
    if (mine)
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, "cancelled");
    waiter_bump(&fc->events);
}

static void send_msg(rpc_call *call, const char *session, const char *stream, int n,
                     const char *json, bool final)
{
    Mcphub__V1__StreamMessage sm = MCPHUB__V1__STREAM_MESSAGE__INIT;
    char eid[96];

    snprintf(eid, sizeof eid, "%s/%d", stream, n);
    sm.session_id = (char *)session;
    sm.stream_id = (char *)stream;
    sm.event_id = eid;
    sm.message_json = (char *)json;
    sm.final = final;
    rpc_call_send(call, &sm.base);
}

#define PROGRESS_JSON                                                                          \
    "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,"  \
    "\"progress\":1}}"

/* Request: tools/list answers at once; progress sends a notification first; slow sends one
 * and waits for fake_release; hang waits; fail fails; noanswer ends without an answer. */
static void fake_request(rpc_call *call, void *ud)
{
    fake_control *fc = ud;
    const Mcphub__V1__ClientRequest *req =
        (const Mcphub__V1__ClientRequest *)rpc_call_request(call);
    grpc_status_code st;
    char id[64], method[64], result[256];

    pthread_mutex_lock(&fc->mu);
    fc->n_request++;
    copy(fc->last_req_session, sizeof fc->last_req_session, req->session_id);
    copy(fc->last_req_msg, sizeof fc->last_req_msg, req->message_json);
    copy(fc->last_req_stream, sizeof fc->last_req_stream, req->stream_id);
    copy(fc->last_req_version, sizeof fc->last_req_version, req->protocol_version);
    copy(fc->last_route, sizeof fc->last_route, req->route);
    msg_parts(req->message_json, id, sizeof id, method, sizeof method);
    snprintf(result, sizeof result, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"tools\":[]}}", id);
    if ((st = fake_auth(fc, req->principal)) != GRPC_STATUS_OK) {
        pthread_mutex_unlock(&fc->mu);
        rpc_call_finish(call, st, "denied");
    } else if (!fake_find(fc, req->session_id)) {
        pthread_mutex_unlock(&fc->mu);
        rpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "Session not found");
    } else if (!strcmp(method, "fail")) {
        pthread_mutex_unlock(&fc->mu);
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "bad thing");
    } else if (!strcmp(method, "noanswer")) {
        pthread_mutex_unlock(&fc->mu);
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    } else if (!strcmp(method, "slow") || !strcmp(method, "hang")) {
        fake_held *h = &fc->held[fc->nheld++];

        h->call = call;
        copy(h->stream_id, sizeof h->stream_id, req->stream_id);
        copy(h->id, sizeof h->id, id);
        if (!strcmp(method, "slow"))
            send_msg(call, req->session_id, req->stream_id, 1, PROGRESS_JSON, false);
        pthread_mutex_unlock(&fc->mu);
        if (rpc_call_on_cancel(call, fake_held_cancel, fc) < 0)
            fake_held_cancel(call, fc);
    } else {
        int n = 1;

        if (!strcmp(method, "progress"))
            send_msg(call, req->session_id, req->stream_id, n++, PROGRESS_JSON, false);
        send_msg(call, req->session_id, req->stream_id, n, result, true);
        pthread_mutex_unlock(&fc->mu);
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    }
    waiter_bump(&fc->events);
}

/* Answers every held "slow" request. */
static void fake_release(fake_control *fc)
{
    fake_held h[FAKE_MAX];
    int n;

    pthread_mutex_lock(&fc->mu);
    n = fc->nheld;
    memcpy(h, fc->held, sizeof h);
    fc->nheld = 0;
    pthread_mutex_unlock(&fc->mu);
    for (int i = 0; i < n; i++) {
        char result[256];

        snprintf(result, sizeof result, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{}}", h[i].id);
        send_msg(h[i].call, "", h[i].stream_id, 2, result, true);
        rpc_call_finish(h[i].call, GRPC_STATUS_OK, NULL);
    }
}

static void fake_post(rpc_call *call, void *ud)
{
    fake_control *fc = ud;
    const Mcphub__V1__ClientMessage *req =
        (const Mcphub__V1__ClientMessage *)rpc_call_request(call);
    Mcphub__V1__ClientMessageReply rep = MCPHUB__V1__CLIENT_MESSAGE_REPLY__INIT;
    grpc_status_code st;
    fake_session *s;
    char id[64], method[64], result[256];

    pthread_mutex_lock(&fc->mu);
    fc->n_post++;
    copy(fc->last_post_msg, sizeof fc->last_post_msg, req->message_json);
    if ((st = fake_auth(fc, req->principal)) != GRPC_STATUS_OK) {
        pthread_mutex_unlock(&fc->mu);
        rpc_call_fail(call, st, "denied");
    } else if (!(s = fake_find(fc, req->session_id))) {
        pthread_mutex_unlock(&fc->mu);
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "Session not found");
    } else {
        /* legacy: a request's answer goes to the /sse stream */
        msg_parts(req->message_json, id, sizeof id, method, sizeof method);
        if (s->legacy && method[0] && strcmp(id, "null") != 0 && s->stream[0]) {
            snprintf(result, sizeof result, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{}}", id);
            fake_push_message(fc, s->id, s->stream, "", result);
        }
        pthread_mutex_unlock(&fc->mu);
        rpc_call_reply(call, &rep.base);
    }
    waiter_bump(&fc->events);
}

static void fake_attach(rpc_call *call, void *ud)
{
    fake_control *fc = ud;
    const Mcphub__V1__AttachStreamRequest *req =
        (const Mcphub__V1__AttachStreamRequest *)rpc_call_request(call);
    Mcphub__V1__AttachStreamReply rep = MCPHUB__V1__ATTACH_STREAM_REPLY__INIT;
    Mcphub__V1__StreamMessage m1 = MCPHUB__V1__STREAM_MESSAGE__INIT;
    Mcphub__V1__StreamMessage m2 = MCPHUB__V1__STREAM_MESSAGE__INIT;
    Mcphub__V1__StreamMessage *replay[2] = {&m1, &m2};
    grpc_status_code st;
    fake_session *s;

    pthread_mutex_lock(&fc->mu);
    fc->n_attach++;
    copy(fc->last_attach_stream, sizeof fc->last_attach_stream, req->stream_id);
    copy(fc->last_attach_last_id, sizeof fc->last_attach_last_id, req->last_event_id);
    if ((st = fake_auth(fc, req->principal)) != GRPC_STATUS_OK) {
        pthread_mutex_unlock(&fc->mu);
        rpc_call_fail(call, st, "denied");
    } else if (!(s = fake_find(fc, req->session_id))) {
        pthread_mutex_unlock(&fc->mu);
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "Session not found");
    } else if (s->stream[0]) {
        pthread_mutex_unlock(&fc->mu);
        rpc_call_fail(call, GRPC_STATUS_ALREADY_EXISTS,
                      "Conflict: Only one SSE stream is allowed per session");
    } else {
        copy(s->stream, sizeof s->stream, req->stream_id);
        if (req->last_event_id[0]) {
            m1.event_id = (char *)"old/2";
            m1.message_json = (char *)"{\"jsonrpc\":\"2.0\",\"method\":\"replayed\",\"params\":{\"n\":2}}";
            m2.event_id = (char *)"old/3";
            m2.message_json = (char *)"{\"jsonrpc\":\"2.0\",\"method\":\"replayed\",\"params\":{\"n\":3}}";
            rep.replay = replay;
            rep.n_replay = 2;
        }
        pthread_mutex_unlock(&fc->mu);
        rpc_call_reply(call, &rep.base);
    }
    waiter_bump(&fc->events);
}

static void fake_detach(rpc_call *call, void *ud)
{
    fake_control *fc = ud;
    const Mcphub__V1__DetachStreamRequest *req =
        (const Mcphub__V1__DetachStreamRequest *)rpc_call_request(call);
    Mcphub__V1__DetachStreamReply rep = MCPHUB__V1__DETACH_STREAM_REPLY__INIT;
    fake_session *s;

    pthread_mutex_lock(&fc->mu);
    fc->n_detach++;
    copy(fc->last_detach_stream, sizeof fc->last_detach_stream, req->stream_id);
    copy(fc->last_detach_session, sizeof fc->last_detach_session, req->session_id);
    if ((s = fake_find(fc, req->session_id)) && strcmp(s->stream, req->stream_id) == 0) {
        s->stream[0] = '\0';
        if (s->legacy)
            fake_end(fc, s, MCPHUB__V1__END_REASON__END_REASON_STREAM_CLOSED);
    }
    pthread_mutex_unlock(&fc->mu);
    rpc_call_reply(call, &rep.base);
    waiter_bump(&fc->events);
}

static fake_control *fake_start(int port)
{
    static const struct {
        const char *name;
        rpc_kind kind;
        rpc_handler_fn fn;
    } methods[] = {
        {"Subscribe", RPC_SERVER_STREAM, fake_subscribe},
        {"OpenSession", RPC_UNARY, fake_open},
        {"EndSession", RPC_UNARY, fake_end_session},
        {"Request", RPC_SERVER_STREAM, fake_request},
        {"Post", RPC_UNARY, fake_post},
        {"AttachStream", RPC_UNARY, fake_attach},
        {"DetachStream", RPC_UNARY, fake_detach},
    };
    fake_control *fc = calloc(1, sizeof *fc);
    char addr[64];

    assert_non_null(fc);
    pthread_mutex_init(&fc->mu, NULL);
    waiter_init(&fc->events);
    fc->srv = rpc_server_new(NULL);
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        assert_int_equal(rpc_server_add_method(fc->srv, &mcphub__v1__gateway__descriptor,
                                               methods[i].name, methods[i].kind, methods[i].fn, fc),
                         0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    assert_int_equal(rpc_server_listen(fc->srv, addr, &fc->port), 0);
    assert_int_equal(rpc_server_start(fc->srv), 0);
    g_fake = fc;
    return fc;
}

static void fake_free(fake_control *fc)
{
    if (!fc)
        return;
    rpc_server_free(fc->srv);
    waiter_destroy(&fc->events);
    pthread_mutex_destroy(&fc->mu);
    if (g_fake == fc)
        g_fake = NULL;
    free(fc);
}

/* Reads a counter of the fake under its lock. */
static int fake_count(fake_control *fc, const int *field)
{
    int n;

    pthread_mutex_lock(&fc->mu);
    n = *field;
    pthread_mutex_unlock(&fc->mu);
    return n;
}

/* Waits until *field reaches want (2 s at most); returns what it saw. */
static int fake_wait(fake_control *fc, const int *field, int want)
{
    int64_t until = rpc_now_ms() + 2000;
    int n;

    while ((n = fake_count(fc, field)) < want && rpc_now_ms() < until)
        usleep(5 * 1000);
    return n;
}

static void fake_copy(fake_control *fc, const char *field, char *out, size_t size)
{
    pthread_mutex_lock(&fc->mu);
    copy(out, size, field);
    pthread_mutex_unlock(&fc->mu);
}

/* ---- a raw HTTP/1.1 client that reads SSE incrementally ------------------------------- */

typedef struct {
    int fd;
    int status;
    char head[8192];
    char raw[1 << 16]; /* received, not yet decoded */
    size_t rlen;
    char *body;        /* decoded body */
    size_t blen, bcap, bpos; /* bpos: consumed by hc_event */
    bool chunked;
    long clen;         /* Content-Length, or -1 */
    bool complete;     /* the whole body arrived */
    bool eof;
    size_t chunk_left; /* bytes left in the current chunk */
} hc;

typedef struct {
    char event[64];
    char id[128];
    char data[8192];
    char comment[64];
    int retry;
    bool has_data;
} sse_event;

static int hc_connect(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (const struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void hc_write(int fd, const char *data, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, data + off, len - off);

        if (w <= 0)
            return; /* the server may have answered early and closed */
        off += (size_t)w;
    }
}

/* Reads what is available within timeout_ms. Returns bytes read, 0 at EOF, -1 on timeout. */
static int hc_fill(hc *c, int timeout_ms)
{
    struct pollfd p = {c->fd, POLLIN, 0};
    ssize_t n;

    if (c->eof)
        return 0;
    if (c->rlen == sizeof c->raw)
        return -1;
    if (poll(&p, 1, timeout_ms) <= 0)
        return -1;
    n = read(c->fd, c->raw + c->rlen, sizeof c->raw - c->rlen);
    if (n <= 0) {
        c->eof = true;
        return 0;
    }
    c->rlen += (size_t)n;
    return (int)n;
}

static void hc_body_put(hc *c, const char *p, size_t n)
{
    if (c->blen + n + 1 > c->bcap) {
        c->bcap = (c->blen + n + 1) * 2;
        c->body = realloc(c->body, c->bcap);
        assert_non_null(c->body);
    }
    memcpy(c->body + c->blen, p, n);
    c->blen += n;
    c->body[c->blen] = '\0';
}

/* Moves decoded body bytes from raw into body. */
static void hc_decode(hc *c)
{
    size_t pos = 0;

    while (pos < c->rlen && !c->complete) {
        if (!c->chunked) {
            size_t n = c->rlen - pos;

            if (c->clen >= 0 && (long)(c->blen + n) > c->clen)
                n = (size_t)c->clen - c->blen;
            hc_body_put(c, c->raw + pos, n);
            pos += n;
            if (c->clen >= 0 && (long)c->blen >= c->clen)
                c->complete = true;
            continue;
        }
        if (c->chunk_left > 0) {
            size_t n = c->rlen - pos;

            if (n > c->chunk_left)
                n = c->chunk_left;
            hc_body_put(c, c->raw + pos, n);
            pos += n;
            c->chunk_left -= n;
            continue;
        }
        {
            /* at a chunk boundary: [CRLF] size CRLF */
            char *crlf;
            size_t size;

            if (c->rlen - pos >= 2 && c->raw[pos] == '\r' && c->raw[pos + 1] == '\n' &&
                c->blen > 0)
                pos += 2;
            crlf = memmem(c->raw + pos, c->rlen - pos, "\r\n", 2);
            if (!crlf)
                break;
            size = strtoul(c->raw + pos, NULL, 16);
            pos = (size_t)(crlf - c->raw) + 2;
            if (size == 0) {
                c->complete = true;
                break;
            }
            c->chunk_left = size;
        }
    }
    memmove(c->raw, c->raw + pos, c->rlen - pos);
    c->rlen -= pos;
}

static const char *hc_header(const hc *c, const char *name, char *buf, size_t size)
{
    char key[128];
    const char *p;

    snprintf(key, sizeof key, "\r\n%s:", name);
    if (!(p = strcasestr(c->head, key)))
        return NULL;
    p += strlen(key);
    while (*p == ' ')
        p++;
    snprintf(buf, size, "%.*s", (int)strcspn(p, "\r\n"), p);
    return buf;
}

/* Sends a request on a new connection and reads the status line and headers. extra is
 * CRLF-separated header lines ("" for none). Returns the status, or -1. */
static int hc_start(hc *c, int port, const char *method, const char *path, const char *extra,
                    const char *body)
{
    char req[8192];
    char val[64];
    char *sep;
    int64_t until = rpc_now_ms() + 3000;
    int n;

    memset(c, 0, sizeof *c);
    c->clen = -1;
    c->status = -1;
    c->fd = hc_connect(port);
    n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s", method, path, extra);
    if (body)
        n += snprintf(req + n, sizeof req - (size_t)n, "Content-Length: %zu\r\n", strlen(body));
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n");
    hc_write(c->fd, req, (size_t)n);
    if (body)
        hc_write(c->fd, body, strlen(body));
    while (!(sep = memmem(c->raw, c->rlen, "\r\n\r\n", 4))) {
        if (rpc_now_ms() > until || hc_fill(c, 100) == 0) {
            if (c->eof || rpc_now_ms() > until)
                return -1;
        }
    }
    snprintf(c->head, sizeof c->head, "%.*s", (int)(sep - c->raw), c->raw);
    memmove(c->raw, sep + 4, c->rlen - (size_t)(sep + 4 - c->raw));
    c->rlen -= (size_t)(sep + 4 - c->raw);
    if (sscanf(c->head, "HTTP/1.%*d %d", &c->status) != 1)
        return -1;
    if (hc_header(c, "Content-Length", val, sizeof val))
        c->clen = atol(val);
    c->chunked = hc_header(c, "Transfer-Encoding", val, sizeof val) && strcasestr(val, "chunked");
    if (!c->chunked && c->clen < 0 && (c->status == 204 || c->status == 304))
        c->clen = 0;
    hc_body_put(c, "", 0);
    hc_decode(c);
    return c->status;
}

/* Reads until the body is complete (or EOF), 3 s at most. */
static void hc_finish(hc *c)
{
    int64_t until = rpc_now_ms() + 3000;

    hc_decode(c);
    while (!c->complete && !c->eof && rpc_now_ms() < until) {
        hc_fill(c, 50);
        hc_decode(c);
    }
    if (c->eof && !c->chunked && c->clen < 0)
        c->complete = true;
}

static void hc_close(hc *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->body);
    c->body = NULL;
}

/* Next SSE event (comments count as events) within timeout_ms. Returns 1, 0 when the stream
 * ended, -1 on timeout. */
static int hc_event(hc *c, sse_event *ev, int timeout_ms)
{
    int64_t until = rpc_now_ms() + timeout_ms;
    char *end, *line;

    memset(ev, 0, sizeof *ev);
    for (;;) {
        hc_decode(c);
        if (c->body && (end = strstr(c->body + c->bpos, "\n\n")))
            break;
        if (c->complete || c->eof)
            return 0;
        if (rpc_now_ms() >= until)
            return -1;
        hc_fill(c, 20);
    }
    *end = '\0';
    for (line = c->body + c->bpos; line && *line;) {
        char *nl = strchr(line, '\n');
        const char *v;

        if (nl)
            *nl = '\0';
        v = strchr(line, ':');
        v = v ? v + 1 + (v[1] == ' ') : "";
        if (line[0] == ':')
            copy(ev->comment, sizeof ev->comment, line + 1 + (line[1] == ' '));
        else if (!strncmp(line, "event:", 6))
            copy(ev->event, sizeof ev->event, v);
        else if (!strncmp(line, "id:", 3))
            copy(ev->id, sizeof ev->id, v);
        else if (!strncmp(line, "retry:", 6))
            ev->retry = atoi(v);
        else if (!strncmp(line, "data:", 5)) {
            size_t n = strlen(ev->data);

            snprintf(ev->data + n, sizeof ev->data - n, "%s%s", ev->has_data ? "\n" : "", v);
            ev->has_data = true;
        }
        line = nl ? nl + 1 : NULL;
    }
    c->bpos = (size_t)(end - c->body) + 2;
    return 1;
}

/* Next event that is not a heartbeat comment. */
static int hc_message(hc *c, sse_event *ev, int timeout_ms)
{
    int rc;

    while ((rc = hc_event(c, ev, timeout_ms)) == 1 && ev->comment[0])
        ;
    return rc;
}

/* A whole request on its own connection: status, headers in c->head, body in c->body. */
static int hc_do(hc *c, int port, const char *method, const char *path, const char *extra,
                 const char *body)
{
    char hdrs[4096];

    snprintf(hdrs, sizeof hdrs, "Connection: close\r\n%s", extra);
    if (hc_start(c, port, method, path, hdrs, body) < 0)
        return -1;
    hc_finish(c);
    return c->status;
}

static bool hc_has(const hc *c, const char *header_line)
{
    return strcasestr(c->head, header_line) != NULL;
}


/* Open GET /mcp and /sse streams of the edge, once it settled (releases run a moment after
 * the client saw the end). */
static unsigned open_streams(edge *e)
{
    int64_t until = rpc_now_ms() + 1000;
    unsigned n;

    while ((n = edge_streams(e)) > 0 && rpc_now_ms() < until)
        usleep(5 * 1000);
    return n;
}

/* ---- transport tests --------------------------------------------------------------------- */

#define H_POST "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
#define H_GET "Accept: text/event-stream\r\n"
#define INIT_BODY                                                                              \
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":"     \
    "\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}}"
#define LIST_BODY "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}"
#define CALL(method) "{\"jsonrpc\":\"2.0\",\"id\":\"r-" method "\",\"method\":\"" method "\"}"
#define NOTE_BODY "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}"

typedef struct {
    fake_control *fc;
    edge *e;
    int port;
} rig;

static edge *edge_on(int control_port, unsigned max_streams, size_t buffer, unsigned timeout_s)
{
    char control[64];
    edge_opts opts = {0};
    edge *e;

    snprintf(control, sizeof control, "127.0.0.1:%d", control_port);
    opts.listen = "127.0.0.1:0";
    opts.control = control;
    opts.edge_id = "edge-mcp-test";
    opts.heartbeat_ms = 150;
    opts.max_streams = max_streams;
    opts.stream_buffer = buffer;
    opts.connection_timeout_s = timeout_s;
    opts.allowed_hosts = "edge.example.com";
    e = edge_new(&opts);
    assert_non_null(e);
    assert_int_equal(edge_start(e), 0);
    return e;
}

static void wait_ready(int port)
{
    int64_t until = rpc_now_ms() + 3000;
    hc c;

    while (rpc_now_ms() < until) {
        int st = hc_do(&c, port, "GET", "/readyz", "", NULL);

        hc_close(&c);
        if (st == 200)
            return;
        usleep(20 * 1000);
    }
    fail_msg("edge never became ready");
}

static void rig_up(rig *g, unsigned max_streams, size_t buffer)
{
    g->fc = fake_start(0);
    /* a small buffer goes with a short timeout: the slow-client test waits for it */
    g->e = edge_on(g->fc->port, max_streams, buffer, buffer ? 1 : 0);
    g->port = edge_port(g->e);
    wait_ready(g->port);
}

static void rig_down(rig *g)
{
    edge_free(g->e);
    fake_free(g->fc);
}

/* initialize; returns the session id in sid. */
static void do_init(rig *g, char *sid, size_t size)
{
    hc c;

    assert_int_equal(hc_do(&c, g->port, "POST", "/mcp", H_POST, INIT_BODY), 200);
    assert_non_null(hc_header(&c, "Mcp-Session-Id", sid, size));
    hc_close(&c);
}

static int post_in(rig *g, const char *sid, const char *version, const char *body, hc *c)
{
    char hdrs[512];

    snprintf(hdrs, sizeof hdrs, H_POST "Mcp-Session-Id: %s\r\n%s%s%s", sid,
             version ? "MCP-Protocol-Version: " : "", version ? version : "",
             version ? "\r\n" : "");
    return hc_do(c, g->port, "POST", "/mcp", hdrs, body);
}

static void test_initialize_and_request(void **state)
{
    rig g;
    hc c;
    char sid[128], buf[256];

    rig_up(&g, 0, 0);
    assert_int_equal(hc_do(&c, g.port, "POST", "/mcp", H_POST, INIT_BODY), 200);
    assert_non_null(hc_header(&c, "Mcp-Session-Id", sid, sizeof sid));
    assert_string_equal(sid, "sess-1");
    assert_true(hc_has(&c, "Content-Type: application/json"));
    assert_non_null(strstr(c.body, "\"protocolVersion\":\"2025-11-25\""));
    assert_non_null(strstr(c.body, "\"id\":1"));
    hc_close(&c);
    assert_int_equal(fake_count(g.fc, &g.fc->last_era), MCPHUB__V1__PROTOCOL_ERA__PROTOCOL_ERA_STREAMABLE);
    fake_copy(g.fc, g.fc->last_init, buf, sizeof buf);
    assert_string_equal(buf, INIT_BODY);
    fake_copy(g.fc, g.fc->last_edge_id, buf, sizeof buf);
    assert_string_equal(buf, "edge-mcp-test");

    /* a request answered at once: application/json */
    assert_int_equal(post_in(&g, sid, "2025-11-25", LIST_BODY, &c), 200);
    assert_true(hc_has(&c, "Content-Type: application/json"));
    assert_string_equal(c.body, "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[]}}");
    hc_close(&c);
    fake_copy(g.fc, g.fc->last_req_session, buf, sizeof buf);
    assert_string_equal(buf, "sess-1");
    fake_copy(g.fc, g.fc->last_req_msg, buf, sizeof buf);
    assert_string_equal(buf, LIST_BODY);
    fake_copy(g.fc, g.fc->last_req_version, buf, sizeof buf);
    assert_string_equal(buf, "2025-11-25");
    fake_copy(g.fc, g.fc->last_req_stream, buf, sizeof buf);
    assert_int_equal(strlen(buf), 16);

    /* on a group route; no version header means 2025-03-26 */
    {
        char hdrs[512];

        snprintf(hdrs, sizeof hdrs, H_POST "Mcp-Session-Id: %s\r\n", sid);
        assert_int_equal(hc_do(&c, g.port, "POST", "/mcp/grp", hdrs, LIST_BODY), 200);
        hc_close(&c);
        fake_copy(g.fc, g.fc->last_route, buf, sizeof buf);
        assert_string_equal(buf, "grp");
        fake_copy(g.fc, g.fc->last_req_version, buf, sizeof buf);
        assert_string_equal(buf, "2025-03-26");
    }

    /* notification: 202 without a body */
    assert_int_equal(post_in(&g, sid, "2025-11-25", NOTE_BODY, &c), 202);
    assert_string_equal(c.body, "");
    hc_close(&c);
    fake_copy(g.fc, g.fc->last_post_msg, buf, sizeof buf);
    assert_string_equal(buf, NOTE_BODY);
    /* a response to the server: 202 too */
    assert_int_equal(post_in(&g, sid, "2025-06-18",
                             "{\"jsonrpc\":\"2.0\",\"id\":\"srv-1\",\"result\":{}}", &c), 202);
    hc_close(&c);

    /* control's INVALID_ARGUMENT: 400 with its text and the request's id */
    assert_int_equal(post_in(&g, sid, "2025-11-25", CALL("fail"), &c), 400);
    assert_non_null(strstr(c.body, "\"code\":-32600"));
    assert_non_null(strstr(c.body, "\"message\":\"bad thing\""));
    assert_non_null(strstr(c.body, "\"id\":\"r-fail\""));
    hc_close(&c);
    /* control ends a Request without an answer: 502 */
    assert_int_equal(post_in(&g, sid, "2025-11-25", CALL("noanswer"), &c), 502);
    hc_close(&c);
    /* unknown session: 404 from control, for requests and notifications */
    assert_int_equal(post_in(&g, "nope", "2025-11-25", LIST_BODY, &c), 404);
    assert_non_null(strstr(c.body, "-32001"));
    hc_close(&c);
    assert_int_equal(post_in(&g, "nope", "2025-11-25", NOTE_BODY, &c), 404);
    hc_close(&c);

    /* DELETE: 200, then the session is gone */
    {
        char hdrs[512];

        snprintf(hdrs, sizeof hdrs, "Mcp-Session-Id: %s\r\n", sid);
        assert_int_equal(hc_do(&c, g.port, "DELETE", "/mcp", hdrs, NULL), 200);
        assert_string_equal(c.body, "");
        hc_close(&c);
        assert_int_equal(hc_do(&c, g.port, "DELETE", "/mcp", hdrs, NULL), 404);
        hc_close(&c);
        assert_int_equal(post_in(&g, sid, "2025-11-25", LIST_BODY, &c), 404);
        hc_close(&c);
    }
    rig_down(&g);
}

static void test_post_sse(void **state)
{
    rig g;
    hc c;
    sse_event ev;
    char sid[128], stream[64], want[96], hdrs[512];

    rig_up(&g, 0, 0);
    do_init(&g, sid, sizeof sid);

    /* 2025-11-25: priming event, then the notification, then the answer, then the end */
    snprintf(hdrs, sizeof hdrs, H_POST "Mcp-Session-Id: %s\r\nMCP-Protocol-Version: 2025-11-25\r\n",
             sid);
    assert_int_equal(hc_start(&c, g.port, "POST", "/mcp", hdrs, CALL("progress")), 200);
    assert_true(hc_has(&c, "Content-Type: text/event-stream"));
    fake_copy(g.fc, g.fc->last_req_stream, stream, sizeof stream);
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    snprintf(want, sizeof want, "%s/0", stream);
    assert_string_equal(ev.id, want);
    assert_true(ev.has_data);
    assert_string_equal(ev.data, "");
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    snprintf(want, sizeof want, "%s/1", stream);
    assert_string_equal(ev.id, want);
    assert_string_equal(ev.event, "message");
    assert_string_equal(ev.data, PROGRESS_JSON);
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    snprintf(want, sizeof want, "%s/2", stream);
    assert_string_equal(ev.id, want);
    assert_non_null(strstr(ev.data, "\"id\":\"r-progress\""));
    assert_int_equal(hc_message(&c, &ev, 2000), 0); /* the stream ends after the answer */
    hc_close(&c);

    /* 2025-06-18: no priming event */
    snprintf(hdrs, sizeof hdrs, H_POST "Mcp-Session-Id: %s\r\nMCP-Protocol-Version: 2025-06-18\r\n",
             sid);
    assert_int_equal(hc_start(&c, g.port, "POST", "/mcp", hdrs, CALL("progress")), 200);
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    assert_string_equal(ev.data, PROGRESS_JSON);
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    assert_non_null(strstr(ev.data, "\"result\""));
    assert_int_equal(hc_message(&c, &ev, 2000), 0);
    hc_close(&c);

    /* a slow answer: heartbeats while waiting, then the answer */
    assert_int_equal(hc_start(&c, g.port, "POST", "/mcp", hdrs, CALL("slow")), 200);
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    assert_string_equal(ev.data, PROGRESS_JSON);
    assert_int_equal(hc_event(&c, &ev, 2000), 1);
    assert_string_equal(ev.comment, "ping");
    fake_release(g.fc);
    do {
        assert_int_equal(hc_message(&c, &ev, 2000), 1);
    } while (ev.comment[0]);
    assert_non_null(strstr(ev.data, "\"id\":\"r-slow\""));
    assert_int_equal(hc_message(&c, &ev, 2000), 0);
    hc_close(&c);

    /* the client leaves a streaming POST: the Request is cancelled */
    assert_int_equal(hc_start(&c, g.port, "POST", "/mcp", hdrs, CALL("slow")), 200);
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    hc_close(&c);
    assert_int_equal(fake_wait(g.fc, &g.fc->n_cancel, 1), 1);

    /* the session ends while a request streams: the stream closes */
    assert_int_equal(hc_start(&c, g.port, "POST", "/mcp", hdrs, CALL("slow")), 200);
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    {
        hc d;
        char dh[512];

        snprintf(dh, sizeof dh, "Mcp-Session-Id: %s\r\n", sid);
        assert_int_equal(hc_do(&d, g.port, "DELETE", "/mcp", dh, NULL), 200);
        hc_close(&d);
    }
    do {
        assert_true(hc_message(&c, &ev, 2000) >= 0);
    } while (ev.comment[0]);
    hc_close(&c);
    assert_int_equal(fake_wait(g.fc, &g.fc->n_cancel, 2), 2);
    rig_down(&g);
}

static void test_batch(void **state)
{
    rig g;
    hc c;
    char sid[128];

    rig_up(&g, 0, 0);
    do_init(&g, sid, sizeof sid);
    /* 2025-03-26 (no header): a batch of requests answered in one JSON array, in order */
    assert_int_equal(post_in(&g, sid, NULL, "[" CALL("a") "," NOTE_BODY "," CALL("b") "]", &c), 200);
    assert_string_equal(c.body, "[{\"jsonrpc\":\"2.0\",\"id\":\"r-a\",\"result\":{\"tools\":[]}},"
                                "{\"jsonrpc\":\"2.0\",\"id\":\"r-b\",\"result\":{\"tools\":[]}}]");
    hc_close(&c);
    assert_int_equal(fake_count(g.fc, &g.fc->n_post), 1);
    /* notifications only: 202 */
    assert_int_equal(post_in(&g, sid, "2025-03-26", "[" NOTE_BODY "," NOTE_BODY "]", &c), 202);
    hc_close(&c);
    assert_int_equal(fake_count(g.fc, &g.fc->n_post), 3);
    /* one request streams: the batch goes SSE */
    assert_int_equal(post_in(&g, sid, NULL, "[" CALL("progress") "," CALL("c") "]", &c), 200);
    assert_true(hc_has(&c, "Content-Type: text/event-stream"));
    assert_non_null(strstr(c.body, "r-progress"));
    assert_non_null(strstr(c.body, "r-c"));
    assert_non_null(strstr(c.body, "notifications/progress"));
    hc_close(&c);
    /* later revisions refuse arrays */
    assert_int_equal(post_in(&g, sid, "2025-06-18", "[" CALL("a") "]", &c), 400);
    assert_non_null(strstr(c.body, "-32600"));
    hc_close(&c);
    rig_down(&g);
}

static void test_get_stream(void **state)
{
    rig g;
    hc c, c2;
    sse_event ev;
    char sid[128], stream[64], want[96], hdrs[512];

    rig_up(&g, 0, 0);
    do_init(&g, sid, sizeof sid);
    snprintf(hdrs, sizeof hdrs, H_GET "Mcp-Session-Id: %s\r\nMCP-Protocol-Version: 2025-11-25\r\n",
             sid);
    assert_int_equal(hc_start(&c, g.port, "GET", "/mcp", hdrs, NULL), 200);
    assert_true(hc_has(&c, "Content-Type: text/event-stream"));
    fake_copy(g.fc, g.fc->last_attach_stream, stream, sizeof stream);
    assert_int_equal(strlen(stream), 16);
    assert_int_equal(hc_message(&c, &ev, 2000), 1); /* priming */
    snprintf(want, sizeof want, "%s/0", stream);
    assert_string_equal(ev.id, want);
    assert_int_equal(open_streams(g.e), 1);

    /* a message pushed through Subscribe arrives on the stream */
    pthread_mutex_lock(&g.fc->mu);
    fake_push_message(g.fc, sid, stream, "x/7",
                      "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}");
    fake_push_message(g.fc, sid, "other-stream", "x/8", "{\"jsonrpc\":\"2.0\",\"method\":\"lost\"}");
    fake_push_message(g.fc, sid, stream, "x/9", "{\"jsonrpc\":\"2.0\",\"method\":\"second\"}");
    pthread_mutex_unlock(&g.fc->mu);
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    assert_string_equal(ev.id, "x/7");
    assert_string_equal(ev.data, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}");
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    assert_string_equal(ev.id, "x/9");
    /* heartbeats while idle */
    assert_int_equal(hc_event(&c, &ev, 2000), 1);
    assert_string_equal(ev.comment, "ping");

    /* a second GET stream: control says 409 */
    assert_int_equal(hc_do(&c2, g.port, "GET", "/mcp", hdrs, NULL), 409);
    assert_non_null(strstr(c2.body, "Only one SSE stream"));
    hc_close(&c2);

    /* the session ends: the stream closes, no DetachStream */
    pthread_mutex_lock(&g.fc->mu);
    fake_end(g.fc, fake_find(g.fc, sid), MCPHUB__V1__END_REASON__END_REASON_ADMIN);
    pthread_mutex_unlock(&g.fc->mu);
    do {
        assert_true(hc_message(&c, &ev, 2000) >= 0);
    } while (ev.comment[0]);
    assert_true(c.complete);
    hc_close(&c);
    usleep(100 * 1000);
    assert_int_equal(fake_count(g.fc, &g.fc->n_detach), 0);
    assert_int_equal(open_streams(g.e), 0);
    rig_down(&g);
}

static void test_resume_and_detach(void **state)
{
    rig g;
    hc c;
    sse_event ev;
    char sid[128], stream[64], buf[128], hdrs[512];

    rig_up(&g, 0, 0);
    do_init(&g, sid, sizeof sid);
    /* 2025-06-18 with Last-Event-ID: the replay comes first, no priming */
    snprintf(hdrs, sizeof hdrs,
             H_GET "Mcp-Session-Id: %s\r\nMCP-Protocol-Version: 2025-06-18\r\nLast-Event-ID: old/1\r\n",
             sid);
    assert_int_equal(hc_start(&c, g.port, "GET", "/mcp", hdrs, NULL), 200);
    fake_copy(g.fc, g.fc->last_attach_last_id, buf, sizeof buf);
    assert_string_equal(buf, "old/1");
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    assert_string_equal(ev.id, "old/2");
    assert_non_null(strstr(ev.data, "\"n\":2"));
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    assert_string_equal(ev.id, "old/3");
    fake_copy(g.fc, g.fc->last_attach_stream, stream, sizeof stream);

    /* the client leaves: DetachStream with that stream, found by the heartbeat */
    hc_close(&c);
    assert_int_equal(fake_wait(g.fc, &g.fc->n_detach, 1), 1);
    fake_copy(g.fc, g.fc->last_detach_stream, buf, sizeof buf);
    assert_string_equal(buf, stream);
    fake_copy(g.fc, g.fc->last_detach_session, buf, sizeof buf);
    assert_string_equal(buf, sid);
    assert_int_equal(open_streams(g.e), 0);

    /* the stream can be opened again */
    assert_int_equal(hc_start(&c, g.port, "GET", "/mcp", H_GET "Mcp-Session-Id: sess-1\r\n", NULL),
                     200);
    hc_close(&c);
    assert_int_equal(fake_wait(g.fc, &g.fc->n_detach, 2), 2);
    rig_down(&g);
}

static void test_legacy_sse(void **state)
{
    rig g;
    hc c, p;
    sse_event ev;
    char sid[128], path[256], buf[256];

    rig_up(&g, 0, 0);
    assert_int_equal(hc_start(&c, g.port, "GET", "/sse", "Accept: text/event-stream\r\n", NULL), 200);
    assert_true(hc_has(&c, "Content-Type: text/event-stream"));
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    assert_string_equal(ev.event, "endpoint");
    assert_string_equal(ev.data, "/messages?sessionId=legacy-1");
    assert_int_equal(fake_count(g.fc, &g.fc->last_era),
                     MCPHUB__V1__PROTOCOL_ERA__PROTOCOL_ERA_LEGACY_SSE);
    fake_copy(g.fc, g.fc->last_init, buf, sizeof buf);
    assert_string_equal(buf, "");
    snprintf(sid, sizeof sid, "legacy-1");

    /* POST /messages: 202, and the answer comes on the /sse stream as event: message */
    snprintf(path, sizeof path, "/messages?sessionId=%s", sid);
    assert_int_equal(hc_do(&p, g.port, "POST", path, "Content-Type: application/json\r\n",
                           INIT_BODY), 202);
    assert_string_equal(p.body, "");
    hc_close(&p);
    fake_copy(g.fc, g.fc->last_post_msg, buf, sizeof buf);
    assert_string_equal(buf, INIT_BODY);
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    assert_string_equal(ev.event, "message");
    assert_string_equal(ev.data, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}");

    /* the errors of /messages */
    assert_int_equal(hc_do(&p, g.port, "POST", "/messages", "Content-Type: application/json\r\n",
                           INIT_BODY), 400);
    hc_close(&p);
    assert_int_equal(hc_do(&p, g.port, "POST", "/messages?sessionId=nope",
                           "Content-Type: application/json\r\n", INIT_BODY), 404);
    hc_close(&p);
    assert_int_equal(hc_do(&p, g.port, "POST", path, "Content-Type: text/plain\r\n", INIT_BODY),
                     415);
    hc_close(&p);
    assert_int_equal(hc_do(&p, g.port, "GET", path, "", NULL), 405);
    assert_true(hc_has(&p, "Allow: POST"));
    hc_close(&p);
    assert_int_equal(hc_do(&p, g.port, "POST", "/sse", "", NULL), 405);
    assert_true(hc_has(&p, "Allow: GET"));
    hc_close(&p);
    assert_int_equal(hc_do(&p, g.port, "GET", "/sse/nope", "", NULL), 404);
    hc_close(&p);

    /* the client closes the stream: DetachStream, and control ends the session */
    hc_close(&c);
    assert_int_equal(fake_wait(g.fc, &g.fc->n_detach, 1), 1);
    fake_copy(g.fc, g.fc->last_detach_session, buf, sizeof buf);
    assert_string_equal(buf, sid);
    assert_int_equal(hc_do(&p, g.port, "POST", path, "Content-Type: application/json\r\n",
                           INIT_BODY), 404);
    hc_close(&p);

    /* on a group route */
    assert_int_equal(hc_start(&c, g.port, "GET", "/sse/grp", "", NULL), 200);
    assert_int_equal(hc_message(&c, &ev, 2000), 1);
    assert_string_equal(ev.data, "/messages?sessionId=legacy-2");
    fake_copy(g.fc, g.fc->last_route, buf, sizeof buf);
    assert_string_equal(buf, "grp");
    hc_close(&c);
    rig_down(&g);
}

/* Every status the rules produce, through the real server; each followed by a good request. */
static void test_statuses(void **state)
{
    rig g;
    hc c;
    char sid[128], hdrs[512];

    rig_up(&g, 2, 0);
    do_init(&g, sid, sizeof sid);
#define GOOD()                                                                                 \
    do {                                                                                       \
        hc gc;                                                                                 \
        assert_int_equal(post_in(&g, sid, "2025-11-25", LIST_BODY, &gc), 200);                 \
        hc_close(&gc);                                                                         \
    } while (0)
#define EXPECT(want_, method_, path_, extra_, body_)                                           \
    do {                                                                                       \
        if (hc_do(&c, g.port, method_, path_, extra_, body_) != (want_))                       \
            fail_msg("%s %s: got %d, want %d: %s", method_, path_, c.status, want_,            \
                     c.body ? c.body : "");                                                    \
        assert_true(hc_has(&c, "Content-Type: application/json"));                             \
        assert_non_null(strstr(c.body, "\"jsonrpc\":\"2.0\""));                                \
    } while (0)

    /* 400 */
    EXPECT(400, "POST", "/mcp", H_POST, LIST_BODY);
    assert_non_null(strstr(c.body, "Mcp-Session-Id header is required"));
    hc_close(&c);
    GOOD();
    snprintf(hdrs, sizeof hdrs, H_POST "Mcp-Session-Id: %s\r\nMCP-Protocol-Version: 2099-01-01\r\n",
             sid);
    EXPECT(400, "POST", "/mcp", hdrs, LIST_BODY);
    assert_non_null(strstr(c.body, "Unsupported protocol version"));
    hc_close(&c);
    GOOD();
    snprintf(hdrs, sizeof hdrs, H_POST "Mcp-Session-Id: %s\r\n", sid);
    EXPECT(400, "POST", "/mcp", hdrs, "{\"jsonrpc\":");
    assert_non_null(strstr(c.body, "-32700"));
    hc_close(&c);
    GOOD();
    EXPECT(400, "POST", "/mcp", hdrs, INIT_BODY); /* initialize inside a session */
    hc_close(&c);
    EXPECT(400, "GET", "/mcp", H_GET, NULL);
    hc_close(&c);
    EXPECT(400, "DELETE", "/mcp", "", NULL);
    hc_close(&c);
    GOOD();

    /* 403: DNS rebinding (bad Host, bad Origin) */
    EXPECT(403, "POST", "/mcp", H_POST "Host: evil.example.com\r\nOrigin: http://evil.example.com\r\n",
           INIT_BODY);
    hc_close(&c);
    GOOD();
    snprintf(hdrs, sizeof hdrs, H_POST "Mcp-Session-Id: %s\r\nOrigin: https://evil.example.com\r\n",
             sid);
    EXPECT(403, "POST", "/mcp", hdrs, LIST_BODY);
    hc_close(&c);
    GOOD();
    /* allowed: loopback origin, control's origin, the flag's host */
    snprintf(hdrs, sizeof hdrs, H_POST "Mcp-Session-Id: %s\r\nOrigin: http://localhost:5173\r\n", sid);
    assert_int_equal(hc_do(&c, g.port, "POST", "/mcp", hdrs, LIST_BODY), 200);
    hc_close(&c);
    snprintf(hdrs, sizeof hdrs, H_POST "Mcp-Session-Id: %s\r\nOrigin: https://app.example.com\r\n",
             sid);
    assert_int_equal(hc_do(&c, g.port, "POST", "/mcp", hdrs, LIST_BODY), 200);
    hc_close(&c);

    /* 404 */
    EXPECT(404, "POST", "/mcp/nope", H_POST, INIT_BODY);
    hc_close(&c);
    GOOD();
    /* 405 */
    EXPECT(405, "PUT", "/mcp", "", NULL);
    assert_true(hc_has(&c, "Allow: GET, POST, DELETE"));
    hc_close(&c);
    EXPECT(405, "BREW", "/mcp", "", NULL);
    hc_close(&c);
    GOOD();
    /* 406 */
    EXPECT(406, "POST", "/mcp", "Accept: application/json\r\nContent-Type: application/json\r\n",
           INIT_BODY);
    hc_close(&c);
    EXPECT(406, "POST", "/mcp", "Accept: */*\r\nContent-Type: application/json\r\n", INIT_BODY);
    hc_close(&c);
    snprintf(hdrs, sizeof hdrs, "Accept: application/json\r\nMcp-Session-Id: %s\r\n", sid);
    EXPECT(406, "GET", "/mcp", hdrs, NULL);
    hc_close(&c);
    GOOD();
    /* 415 */
    EXPECT(415, "POST", "/mcp",
           "Accept: application/json, text/event-stream\r\nContent-Type: text/plain\r\n", INIT_BODY);
    hc_close(&c);
    GOOD();
    /* 413: by Content-Length before reading, and while reading a chunked body */
    {
        char big[6000];

        memset(big, ' ', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        memcpy(big, "{\"a\":1}", 7);
        fake_push_settings(g.fc, false, 4096);
        usleep(100 * 1000);
        EXPECT(413, "POST", "/mcp", H_POST, big);
        hc_close(&c);
        GOOD();
        /* chunked: no length announced */
        {
            int fd = hc_connect(g.port);
            char req[512];
            int n = snprintf(req, sizeof req,
                             "POST /mcp HTTP/1.1\r\nHost: localhost\r\n" H_POST
                             "Mcp-Session-Id: %s\r\nTransfer-Encoding: chunked\r\n\r\n", sid);

            hc_write(fd, req, (size_t)n);
            for (int i = 0; i < 3; i++) {
                n = snprintf(req, sizeof req, "%x\r\n", 2000);
                hc_write(fd, req, (size_t)n);
                hc_write(fd, big, 2000);
                hc_write(fd, "\r\n", 2);
            }
            hc_write(fd, "0\r\n\r\n", 5);
            memset(&c, 0, sizeof c);
            c.fd = fd;
            {
                int64_t until = rpc_now_ms() + 2000;

                while (!memmem(c.raw, c.rlen, "\r\n\r\n", 4) && rpc_now_ms() < until &&
                       hc_fill(&c, 50) != 0)
                    ;
            }
            assert_int_equal(strncmp(c.raw, "HTTP/1.1 413", 12), 0);
            close(fd);
        }
        GOOD();
        fake_push_settings(g.fc, false, 0);
    }

    /* 409 and 429: a second stream of a session; more streams than --max-streams (2) */
    {
        hc s1, s2, s3;
        char sid2[128], sid3[128];

        do_init(&g, sid2, sizeof sid2);
        do_init(&g, sid3, sizeof sid3);
        snprintf(hdrs, sizeof hdrs, H_GET "Mcp-Session-Id: %s\r\n", sid);
        assert_int_equal(hc_start(&s1, g.port, "GET", "/mcp", hdrs, NULL), 200);
        EXPECT(409, "GET", "/mcp", hdrs, NULL);
        hc_close(&c);
        snprintf(hdrs, sizeof hdrs, H_GET "Mcp-Session-Id: %s\r\n", sid2);
        assert_int_equal(hc_start(&s2, g.port, "GET", "/mcp", hdrs, NULL), 200);
        snprintf(hdrs, sizeof hdrs, H_GET "Mcp-Session-Id: %s\r\n", sid3);
        assert_int_equal(hc_start(&s3, g.port, "GET", "/mcp", hdrs, NULL), 429);
        assert_true(hc_has(&s3, "Retry-After: 1"));
        hc_close(&s3);
        GOOD();
        hc_close(&s1);
        hc_close(&s2);
        assert_int_equal(fake_wait(g.fc, &g.fc->n_detach, 2), 2);
    }

    /* 401 and 403 with bearer auth on */
    fake_push_settings(g.fc, true, 0);
    usleep(100 * 1000);
    EXPECT(401, "POST", "/mcp", H_POST, INIT_BODY);
    assert_true(hc_has(&c, "WWW-Authenticate: Bearer"));
    hc_close(&c);
    EXPECT(401, "POST", "/mcp", H_POST "Authorization: Bearer wrong\r\n", INIT_BODY); /* control */
    assert_true(hc_has(&c, "WWW-Authenticate: Bearer"));
    hc_close(&c);
    {
        char buf[64];

        fake_copy(g.fc, g.fc->last_token, buf, sizeof buf);
        assert_string_equal(buf, "wrong");
    }
    EXPECT(403, "POST", "/mcp", H_POST "Authorization: Bearer limited\r\n", INIT_BODY);
    hc_close(&c);
    assert_int_equal(hc_do(&c, g.port, "POST", "/mcp", H_POST "Authorization: Bearer good\r\n",
                           INIT_BODY), 200);
    hc_close(&c);
    fake_push_settings(g.fc, false, 0);
    usleep(100 * 1000);
    GOOD();
#undef GOOD
#undef EXPECT
    rig_down(&g);
}

/* A client that does not read its stream: the edge buffers a bounded amount, then drops it
 * (as soon as libmicrohttpd gets to the connection again: at the latest its timeout) and
 * tells control. */
static void test_slow_client(void **state)
{
    rig g;
    hc c;
    sse_event ev;
    char sid[128], stream[64], hdrs[512], msg[8300];
    int64_t until;

    rig_up(&g, 0, 16384);
    do_init(&g, sid, sizeof sid);
    snprintf(hdrs, sizeof hdrs, H_GET "Mcp-Session-Id: %s\r\n", sid);
    assert_int_equal(hc_start(&c, g.port, "GET", "/mcp", hdrs, NULL), 200);
    fake_copy(g.fc, g.fc->last_attach_stream, stream, sizeof stream);
    snprintf(msg, sizeof msg, "{\"jsonrpc\":\"2.0\",\"method\":\"big\",\"params\":{\"x\":\"%8000d\"}}",
             1);
    until = rpc_now_ms() + 10000;
    for (int i = 0; i < 2000 && fake_count(g.fc, &g.fc->n_detach) == 0 && rpc_now_ms() < until;
         i++) {
        pthread_mutex_lock(&g.fc->mu);
        fake_push_message(g.fc, sid, stream, "", msg);
        pthread_mutex_unlock(&g.fc->mu);
        if (i % 20 == 19)
            usleep(10 * 1000);
    }
    assert_int_equal(fake_wait(g.fc, &g.fc->n_detach, 1), 1);
    assert_int_equal(open_streams(g.e), 0);
    /* what the client finally reads ends without the chunked terminator */
    while (hc_message(&c, &ev, 2000) == 1)
        ;
    assert_false(c.complete);
    hc_close(&c);
    /* the session still works */
    assert_int_equal(post_in(&g, sid, "2025-11-25", LIST_BODY, &c), 200);
    hc_close(&c);
    rig_down(&g);
}

static void test_control_down(void **state)
{
    rig g;
    hc c, s;
    sse_event ev;
    char sid[128], hdrs[512];

    rig_up(&g, 0, 0);
    do_init(&g, sid, sizeof sid);
    snprintf(hdrs, sizeof hdrs, H_GET "Mcp-Session-Id: %s\r\n", sid);
    assert_int_equal(hc_start(&s, g.port, "GET", "/mcp", hdrs, NULL), 200);
    fake_free(g.fc);
    g.fc = NULL;
    /* the stream closes when the Subscribe link goes */
    do {
        assert_true(hc_message(&s, &ev, 3000) >= 0);
    } while (ev.comment[0]);
    hc_close(&s);
    /* requests: 503 with Retry-After */
    {
        int64_t until = rpc_now_ms() + 3000;
        int st;

        while ((st = post_in(&g, sid, "2025-11-25", LIST_BODY, &c)) != 503 && rpc_now_ms() < until)
            hc_close(&c);
        assert_int_equal(st, 503);
        assert_true(hc_has(&c, "Retry-After: 1"));
        assert_non_null(strstr(c.body, "-32000"));
        hc_close(&c);
    }
    assert_int_equal(hc_do(&c, g.port, "POST", "/mcp", H_POST, INIT_BODY), 503);
    hc_close(&c);
    /* the path and method rules still hold */
    assert_int_equal(hc_do(&c, g.port, "PUT", "/mcp", "", NULL), 405);
    hc_close(&c);
    edge_free(g.e);
}

/* ---- main ------------------------------------------------------------------------------ */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    if (!d)
        return -1;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n - 1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules_table),
        cmocka_unit_test(test_rules_helpers),
        cmocka_unit_test(test_sse_buf),
        cmocka_unit_test(test_initialize_and_request),
        cmocka_unit_test(test_post_sse),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_get_stream),
        cmocka_unit_test(test_resume_and_detach),
        cmocka_unit_test(test_legacy_sse),
        cmocka_unit_test(test_statuses),
        cmocka_unit_test(test_slow_client),
        cmocka_unit_test(test_control_down),
    };
    int fds, rc;

    signal(SIGPIPE, SIG_IGN);
    rpc_global_init();
    fds = count_fds();
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    rpc_global_shutdown();
    for (int i = 0; i < 100 && count_fds() != fds; i++)
        usleep(20 * 1000);
    if (count_fds() != fds) {
        fprintf(stderr, "descriptors leaked: %d before, %d after\n", fds, count_fds());
        rc = rc ? rc : 1;
    }
    return rc;
}
