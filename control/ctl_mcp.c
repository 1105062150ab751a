/* ctl_mcp: MCP requests of client sessions: one dispatch table, the running requests and
 * their Gateway streams, and the standalone stream of each session. Loop thread only. */
#include "ctl_mcp.h"

#include "agg.h"
#include "log.h"
#include "mcphub/v1/gateway.pb-c.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MCP_PAGE_SIZE 500 /* items per page of a list */

const char *const ctl_mcp_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05",
                                        NULL};

/* JSON-RPC error codes. */
enum {
    JR_INVALID_REQUEST = -32600,
    JR_METHOD_NOT_FOUND = -32601,
    JR_INVALID_PARAMS = -32602,
    JR_INTERNAL = -32603,
};

/* A client request being answered. */
typedef struct mcp_rq mcp_rq;
struct mcp_rq {
    ctl *c;
    char session_id[SESS_ID_MAX];
    rpc_call *call;   /* the Gateway Request stream; NULL for legacy SSE */
    uint64_t serial;  /* rpc_call_data of call */
    json_t *id;       /* the client's id (owned reference) */
    char *stream_id;
    mcp_rq *next;
};


/* ---- sending -------------------------------------------------------------------------- */

int ctl_mcp_push(ctl *c, sess *s, json_t *msg)
{
    char *text;
    const char *event_id;
    int rc;

    if (!s->stream_edge)
        return -ENOTCONN;
    if (!(text = json_dumps(msg, JSON_COMPACT)))
        abort();
    event_id = sess_event_add(s, s->stream_id, text);
    rc = ctl_edge_send_message(c, s->stream_edge, s->id, s->stream_id, event_id, text);
    free(text);
    return rc;
}

static void mcp_rq_free(mcp_rq *rq)
{
    for (mcp_rq **pp = &rq->c->running; *pp; pp = &(*pp)->next) {
        if (*pp == rq) {
            *pp = rq->next;
            break;
        }
    }
    json_decref(rq->id);
    free(rq->stream_id);
    free(rq);
}

/* Sends msg (borrowed) as part of rq's answer; final ends it and frees rq. */
static void mcp_send(mcp_rq *rq, json_t *msg, bool final)
{
    sess *s = sess_find(rq->c->sessions, rq->session_id);
    Mcphub__V1__StreamMessage sm = MCPHUB__V1__STREAM_MESSAGE__INIT;
    char *text;

    if (!rq->call) {
        if (s)
            ctl_mcp_push(rq->c, s, msg);
    } else {
        if (!(text = json_dumps(msg, JSON_COMPACT)))
            abort();
        sm.session_id = rq->session_id;
        sm.stream_id = rq->stream_id;
        sm.event_id = s ? (char *)sess_event_add(s, rq->stream_id, text) : (char *)"";
        sm.message_json = text;
        sm.final = final;
        rpc_call_send(rq->call, &sm.base);
        free(text);
        if (final)
            rpc_call_finish(rq->call, GRPC_STATUS_OK, NULL);
    }
    if (final) {
        if (s && s->running > 0)
            s->running--;
        mcp_rq_free(rq);
    }
}

/* Answers rq with result (stolen). */
static void mcp_result(mcp_rq *rq, json_t *result)
{
    json_t *msg = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", rq->id, "result", result);

    mcp_send(rq, msg, true);
    json_decref(msg);
}

/* Answers rq with a JSON-RPC error. */
static void mcp_error(mcp_rq *rq, int code, const char *message)
{
    json_t *msg = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", rq->id, "error",
                            "code", code, "message", message);

    mcp_send(rq, msg, true);
    json_decref(msg);
}

/* ---- lists ----------------------------------------------------------------------------- */

/* The last known list of kind for server i (borrowed), or NULL. Filled by the upstream
 * instances as they come up and report list changes. */
static json_t *const *mcp_lists(ctl *c, agg_kind kind)
{
    return c->lists[kind];
}

/* Answers a list request with one page of items (new reference `all`, consumed). */
static void mcp_page(mcp_rq *rq, json_t *params, const char *key, json_t *all)
{
    json_t *cursor = json_object_get(params, "cursor");
    json_t *page;
    json_t *result;
    size_t offset = 0;
    size_t total = json_array_size(all);
    char next[32];

    if (cursor) {
        const char *cur = json_string_value(cursor);
        char *end;
        unsigned long long v;

        if (!cur || strncmp(cur, "o:", 2) != 0 || !cur[2] ||
            (v = strtoull(cur + 2, &end, 10), *end) || v > total) {
            json_decref(all);
            mcp_error(rq, JR_INVALID_PARAMS, "Invalid cursor");
            return;
        }
        offset = (size_t)v;
    }
    page = json_array();
    for (size_t i = offset; i < total && i < offset + MCP_PAGE_SIZE; i++)
        json_array_append(page, json_array_get(all, i));
    result = json_pack("{s:o}", key, page);
    if (offset + MCP_PAGE_SIZE < total) {
        snprintf(next, sizeof next, "o:%zu", offset + MCP_PAGE_SIZE);
        json_object_set_new(result, "nextCursor", json_string(next));
    }
    json_decref(all);
    mcp_result(rq, result);
}

static void mcp_list(mcp_rq *rq, sess *s, json_t *params, agg_kind kind, const char *key)
{
    agg_route r;

    if (agg_route_resolve(rq->c->cfg, s->route, &r) < 0) {
        mcp_error(rq, JR_INTERNAL, "the session's route no longer exists");
        return;
    }
    mcp_page(rq, params, key, agg_list(rq->c->cfg, &r, kind, mcp_lists(rq->c, kind)));
    agg_route_cleanup(&r);
}

/* ---- methods --------------------------------------------------------------------------- */

typedef void (*mcp_method_fn)(mcp_rq *rq, sess *s, json_t *params);

static void m_ping(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_result(rq, json_object());
}

static void m_tools_list(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_list(rq, s, params, AGG_TOOLS, "tools");
}

static void m_prompts_list(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_list(rq, s, params, AGG_PROMPTS, "prompts");
}

static void m_resources_list(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_list(rq, s, params, AGG_RESOURCES, "resources");
}

static void m_templates_list(mcp_rq *rq, sess *s, json_t *params)
{
    /* Templates are aggregated like resources (URIs unchanged). */
    agg_route r;

    if (agg_route_resolve(rq->c->cfg, s->route, &r) < 0) {
        mcp_error(rq, JR_INTERNAL, "the session's route no longer exists");
        return;
    }
    mcp_page(rq, params, "resourceTemplates",
             agg_list(rq->c->cfg, &r, AGG_RESOURCES, rq->c->templates));
    agg_route_cleanup(&r);
}

static void m_tools_call(mcp_rq *rq, sess *s, json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    const agg_member *m;
    const char *upstream;
    agg_route r;
    char msg[300];

    if (!name) {
        mcp_error(rq, JR_INVALID_PARAMS, "params.name must be a string");
        return;
    }
    if (agg_route_resolve(rq->c->cfg, s->route, &r) < 0 ||
        agg_resolve(rq->c->cfg, &r, AGG_TOOLS, name, &m, &upstream) < 0) {
        agg_route_cleanup(&r);
        snprintf(msg, sizeof msg, "Unknown tool: %.200s", name);
        mcp_error(rq, JR_INVALID_PARAMS, msg);
        return;
    }
    agg_route_cleanup(&r);
    snprintf(msg, sizeof msg, "Server %.200s is not running", rq->c->cfg->servers[m->server].name);
    mcp_error(rq, JR_INTERNAL, msg);
}

static void m_prompts_get(mcp_rq *rq, sess *s, json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    char msg[300];

    if (!name) {
        mcp_error(rq, JR_INVALID_PARAMS, "params.name must be a string");
        return;
    }
    snprintf(msg, sizeof msg, "Unknown prompt: %.200s", name);
    mcp_error(rq, JR_INVALID_PARAMS, msg);
}

static void m_resources_read(mcp_rq *rq, sess *s, json_t *params)
{
    const char *uri = json_string_value(json_object_get(params, "uri"));
    json_t *err;

    if (!uri) {
        mcp_error(rq, JR_INVALID_PARAMS, "params.uri must be a string");
        return;
    }
    err = json_pack("{s:s, s:O, s:{s:i, s:s, s:{s:s}}}", "jsonrpc", "2.0", "id", rq->id, "error",
                    "code", -32002, "message", "Resource not found", "data", "uri", uri);
    mcp_send(rq, err, true);
    json_decref(err);
}

static void m_logging_set_level(mcp_rq *rq, sess *s, json_t *params)
{
    if (!json_is_string(json_object_get(params, "level"))) {
        mcp_error(rq, JR_INVALID_PARAMS, "params.level must be a string");
        return;
    }
    mcp_result(rq, json_object());
}

static void m_initialize(mcp_rq *rq, sess *s, json_t *params)
{
    json_t *resp;

    if (s->protocol_version) {
        mcp_error(rq, JR_INVALID_REQUEST, "the session is already initialized");
        return;
    }
    if (!json_is_string(json_object_get(params, "protocolVersion"))) {
        mcp_error(rq, JR_INVALID_PARAMS, "params.protocolVersion must be a string");
        return;
    }
    resp = ctl_mcp_initialize(rq->c, s, rq->id, params);
    mcp_send(rq, resp, true);
    json_decref(resp);
}

/* The methods a client may call, in one table. */
static const struct {
    const char *method;
    mcp_method_fn fn;
} mcp_methods[] = {
    {"ping", m_ping},
    {"initialize", m_initialize},
    {"tools/list", m_tools_list},
    {"tools/call", m_tools_call},
    {"prompts/list", m_prompts_list},
    {"prompts/get", m_prompts_get},
    {"resources/list", m_resources_list},
    {"resources/templates/list", m_templates_list},
    {"resources/read", m_resources_read},
    {"logging/setLevel", m_logging_set_level},
};

/* ---- entry points ---------------------------------------------------------------------- */

static void mcp_on_call_cancelled(ctl *c, rpc_call *call, void *arg)
{
    ctl_mcp_call_cancelled(c, (uintptr_t)arg);
}

/* Completion-queue thread: the client of a running request went away. */
static void mcp_call_cancel_cb(rpc_call *call, void *ud)
{
    ctl_post(ud, mcp_on_call_cancelled, NULL, (void *)rpc_call_data(call));
}

void ctl_mcp_request(ctl *c, sess *s, rpc_call *call, json_t *msg, const char *stream_id)
{
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *params = json_object_get(msg, "params");
    mcp_rq *rq = calloc(1, sizeof *rq);

    if (!rq || !(rq->stream_id = strdup(stream_id ? stream_id : "")))
        abort();
    rq->c = c;
    snprintf(rq->session_id, sizeof rq->session_id, "%s", s->id);
    rq->call = call;
    rq->id = json_incref(json_object_get(msg, "id"));
    rq->next = c->running;
    c->running = rq;
    s->running++;
    if (call) {
        rq->serial = ++c->rq_serial;
        rpc_call_set_data(call, (uintptr_t)rq->serial);
        if (rpc_call_on_cancel(call, mcp_call_cancel_cb, c) < 0) {
            ctl_mcp_call_cancelled(c, rq->serial);
            return;
        }
    }
    if (params && !json_is_object(params)) {
        mcp_error(rq, JR_INVALID_PARAMS, "params must be an object");
        return;
    }
    if (!s->protocol_version && strcmp(method, "initialize") != 0 && strcmp(method, "ping") != 0) {
        mcp_error(rq, JR_INVALID_REQUEST, "the session is not initialized");
        return;
    }
    for (size_t i = 0; i < sizeof mcp_methods / sizeof mcp_methods[0]; i++) {
        if (strcmp(mcp_methods[i].method, method) == 0) {
            mcp_methods[i].fn(rq, s, params);
            return;
        }
    }
    mcp_error(rq, JR_METHOD_NOT_FOUND, "Method not found");
}

void ctl_mcp_client_message(ctl *c, sess *s, json_t *msg)
{
    const char *method = json_string_value(json_object_get(msg, "method"));

    if (!method)
        return; /* a response to a server->client request: none are issued yet */
    if (strcmp(method, "notifications/initialized") == 0)
        s->initialized = true;
    /* notifications/cancelled and roots/list_changed reach upstreams once requests do. */
}

json_t *ctl_mcp_initialize(ctl *c, sess *s, json_t *id, json_t *params)
{
    const char *requested = json_string_value(json_object_get(params, "protocolVersion"));
    const char *version = ctl_mcp_versions[0];
    json_t *caps = json_object_get(params, "capabilities");

    for (size_t i = 0; requested && ctl_mcp_versions[i]; i++)
        if (strcmp(requested, ctl_mcp_versions[i]) == 0)
            version = ctl_mcp_versions[i];
    free(s->protocol_version);
    if (!(s->protocol_version = strdup(version)))
        abort();
    json_decref(s->client_caps);
    s->client_caps = json_is_object(caps) ? json_incref(caps) : json_object();
    json_decref(s->client_info);
    s->client_info = json_incref(json_object_get(params, "clientInfo"));
    return json_pack("{s:s, s:O, s:{s:s, s:{s:{s:b}, s:{s:b}, s:{s:b, s:b}, s:{}, s:{}}, "
                     "s:{s:s, s:s}}}",
                     "jsonrpc", "2.0", "id", id, "result", "protocolVersion", version,
                     "capabilities", "tools", "listChanged", 1, "prompts", "listChanged", 1,
                     "resources", "subscribe", 1, "listChanged", 1, "logging", "completions",
                     "serverInfo", "name", "mcphub", "version", "0.1.0");
}

void ctl_mcp_session_ended(ctl *c, sess *s)
{
    mcp_rq *next;

    for (mcp_rq *rq = c->running; rq; rq = next) {
        next = rq->next;
        if (strcmp(rq->session_id, s->id) != 0)
            continue;
        if (rq->call)
            rpc_call_finish(rq->call, GRPC_STATUS_NOT_FOUND, "session ended");
        mcp_rq_free(rq);
    }
}

void ctl_mcp_cleanup(ctl *c)
{
    while (c->running) {
        if (c->running->call)
            rpc_call_finish(c->running->call, GRPC_STATUS_UNAVAILABLE, "control stopped");
        mcp_rq_free(c->running);
    }
}

void ctl_mcp_call_cancelled(ctl *c, uintptr_t serial)
{
    sess *s;

    for (mcp_rq *rq = c->running; rq; rq = rq->next) {
        if (!rq->call || rq->serial != serial)
            continue;
        if ((s = sess_find(c->sessions, rq->session_id)) && s->running > 0)
            s->running--;
        rpc_call_finish(rq->call, GRPC_STATUS_CANCELLED, "client went away");
        mcp_rq_free(rq);
        return;
    }
}
