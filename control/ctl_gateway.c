/* ctl_gateway: the Gateway service that edges call: sessions (open, end) and the Subscribe
 * stream per edge that carries the session-ended broadcast. gRPC threads only post work;
 * everything below the handlers runs on the loop thread. */
#include "ctl_internal.h"

#include "agg.h"
#include "auth.h"
#include "ctl_mcp.h"
#include "ctl_metrics.h"
#include "ctl_up.h"
#include "jr.h"

#include "log.h"
#include "mcp26.h"
#include "mcphub/v1/gateway.pb-c.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static uint64_t gw_edge_serial;

/* ---- edges ------------------------------------------------------------------------- */

static ctl_edge *gw_edge_by_serial(ctl *c, uintptr_t serial)
{
    for (ctl_edge *e = c->edges; e; e = e->next)
        if ((uintptr_t)rpc_call_data(e->call) == serial)
            return e;
    return NULL;
}

static void gw_session_end(ctl *c, sess *s, Mcphub__V1__EndReason reason);

static void gw_end_where(ctl *c, bool (*pick)(ctl *c, sess *s, const void *arg), const void *arg,
                        Mcphub__V1__EndReason reason);

/* A legacy SSE session whose /sse stream was held by edge `arg`. */
static bool gw_legacy_on_edge(ctl *c, sess *s, const void *arg)
{
    return s->era == SESS_LEGACY_SSE && s->stream_edge && strcmp(s->stream_edge, arg) == 0;
}

/* The streams an edge held are gone with its Subscribe stream (an edge that loses control
 * closes them): end the legacy SSE sessions among them, and forget the others' streams. */
static void gw_edge_forget_streams(ctl *c, const char *edge_id)
{
    sess *s;
    size_t pos = 0;

    gw_end_where(c, gw_legacy_on_edge, edge_id, MCPHUB__V1__END_REASON__END_REASON_STREAM_CLOSED);
    while (sess_next(c->sessions, &pos, &s)) {
        if (s->stream_edge && strcmp(s->stream_edge, edge_id) == 0) {
            sess_detach_stream(s);
            s->last_activity_ms = rpc_now_ms();
        }
    }
}

/* Unlinks e, completes its stream with status, frees it. */
static void gw_edge_drop(ctl *c, ctl_edge *e, grpc_status_code status, const char *why)
{
    for (ctl_edge **pp = &c->edges; *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            c->n_edges--;
            break;
        }
    }
    log_info("edge disconnected", "edge=%s why=\"%s\" edges=%zu", e->id, why, c->n_edges);
    rpc_call_finish(e->call, status, status == GRPC_STATUS_OK ? NULL : why);
    if (c->state == CTL_RUNNING)
        gw_edge_forget_streams(c, e->id);
    free(e);
}

/* Posted by gw_edge_send: drops the edge whose stream failed, on a turn of its own. */
static void gw_on_edge_failed(ctl *c, rpc_call *call, void *arg)
{
    ctl_edge *e = gw_edge_by_serial(c, (uintptr_t)arg);

    /* Not found: dropped meanwhile (its cancel, a newer stream of this edge, the drain). */
    if (e)
        gw_edge_drop(c, e, GRPC_STATUS_RESOURCE_EXHAUSTED, "its event stream failed");
}

/* Sends ev (its seq is set here) to e. An edge that cannot take it is dropped on a later
 * turn of the loop, not here: dropping ends the legacy sessions it held, which broadcasts,
 * and inside a broadcast or an end of several sessions that would free the edge or the
 * session the caller's loop holds next. */
static void gw_edge_send(ctl *c, ctl_edge *e, Mcphub__V1__EdgeEvent *ev)
{
    int rc;

    if (e->gone)
        return;
    ev->seq = ++e->seq;
    rc = rpc_call_send(e->call, &ev->base);
    if (rc < 0) {
        e->gone = true;
        log_warn("edge event stream failed", "edge=%s why=\"%s\"", e->id,
                 rc == -ENOBUFS ? "edge too slow to read its events" : "edge stream ended");
        ctl_post(c, gw_on_edge_failed, NULL, (void *)rpc_call_data(e->call));
    }
}

/* Cancel callback (completion-queue thread): the edge's stream ended on its side. */
static void gw_on_edge_gone(ctl *c, rpc_call *call, void *arg)
{
    ctl_edge *e = gw_edge_by_serial(c, (uintptr_t)arg);

    /* Not found: the loop completed the stream already (replaced, dropped, drained). */
    if (e)
        gw_edge_drop(c, e, GRPC_STATUS_CANCELLED, "stream cancelled");
}

static void gw_edge_cancel_cb(rpc_call *call, void *ud)
{
    ctl_post(ud, gw_on_edge_gone, NULL, (void *)rpc_call_data(call));
}

int ctl_edge_send_message(ctl *c, const char *edge_id, const char *session_id,
                          const char *stream_id, const char *event_id, const char *json)
{
    Mcphub__V1__EdgeEvent ev = MCPHUB__V1__EDGE_EVENT__INIT;
    Mcphub__V1__StreamMessage sm = MCPHUB__V1__STREAM_MESSAGE__INIT;

    for (ctl_edge *e = c->edges; e; e = e->next) {
        if (strcmp(e->id, edge_id) != 0 || e->gone)
            continue;
        sm.session_id = (char *)session_id;
        sm.stream_id = (char *)stream_id;
        sm.event_id = (char *)(event_id ? event_id : "");
        sm.message_json = (char *)json;
        ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_STREAM_MESSAGE;
        ev.stream_message = &sm;
        gw_edge_send(c, e, &ev);
        return 0;
    }
    return -ENOTCONN;
}

bool ctl_edge_connected(ctl *c, const char *edge_id)
{
    for (ctl_edge *e = c->edges; e; e = e->next)
        if (strcmp(e->id, edge_id) == 0 && !e->gone)
            return true;
    return false;
}

/* Fills st from the configuration; the arrays point into c->cfg and *routes_buf (freed by
 * the caller with free()). */
static void gw_edge_settings(ctl *c, Mcphub__V1__EdgeSettings *st, char ***routes_buf)
{
    const cfg *cf = c->cfg;
    size_t n = 0;
    char **routes = calloc(cf->n_servers + 2 * cf->n_groups + 1, sizeof *routes);

    if (!routes)
        abort();
    if (cf->routing.enable_global_route)
        routes[n++] = (char *)"";
    for (size_t i = 0; i < cf->n_servers; i++)
        routes[n++] = (char *)cf->servers[i].name;
    for (size_t i = 0; i < cf->n_groups; i++) {
        if (cf->groups[i].id)
            routes[n++] = (char *)cf->groups[i].id;
        if (cf->routing.enable_group_name_route || !cf->groups[i].id)
            routes[n++] = (char *)cf->groups[i].name;
    }
    st->n_allowed_origins = cf->hub.n_allowed_origins;
    st->allowed_origins = (char **)cf->hub.allowed_origins;
    st->json_body_limit = (uint64_t)cf->routing.json_body_limit;
    st->bearer_auth = cf->routing.enable_bearer_auth;
    st->bearer_auth_header = (char *)cf->routing.bearer_auth_header;
    st->n_routes = n;
    st->routes = routes;
    *routes_buf = routes;
}

static bool gw_valid_edge_id(const char *id)
{
    size_t n = strlen(id);

    if (n == 0 || n >= CTL_EDGE_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (id[i] < 0x21 || id[i] > 0x7e)
            return false;
    return true;
}

static void gw_subscribe(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__SubscribeRequest *req =
        (const Mcphub__V1__SubscribeRequest *)rpc_call_request(call);
    Mcphub__V1__EdgeEvent ev = MCPHUB__V1__EDGE_EVENT__INIT;
    Mcphub__V1__Hello hello = MCPHUB__V1__HELLO__INIT;
    Mcphub__V1__EdgeSettings settings = MCPHUB__V1__EDGE_SETTINGS__INIT;
    char **routes = NULL;
    ctl_edge *e;

    if (c->state != CTL_RUNNING) {
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "control is shutting down");
        return;
    }
    if (!gw_valid_edge_id(req->edge_id)) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "edge_id must be 1-127 visible ASCII characters");
        return;
    }
    /* A reconnecting edge may arrive before its old stream's end is noticed: the newer
     * stream wins. */
    for (e = c->edges; e; e = e->next) {
        if (strcmp(e->id, req->edge_id) == 0) {
            gw_edge_drop(c, e, GRPC_STATUS_ABORTED, "replaced by a newer stream of this edge");
            break;
        }
    }
    if (c->n_edges >= CTL_MAX_EDGES) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many edges");
        return;
    }
    e = calloc(1, sizeof *e);
    if (!e)
        abort();
    e->c = c;
    e->call = call;
    snprintf(e->id, sizeof e->id, "%s", req->edge_id);
    e->connected_ms = rpc_now_ms();
    rpc_call_set_data(call, (uintptr_t)++gw_edge_serial);
    e->next = c->edges;
    c->edges = e;
    c->n_edges++;
    log_info("edge connected", "edge=%s edges=%zu", e->id, c->n_edges);
    if (rpc_call_on_cancel(call, gw_edge_cancel_cb, c) < 0) {
        gw_edge_drop(c, e, GRPC_STATUS_CANCELLED, "stream ended before it was set up");
        return;
    }
    hello.control_id = c->control_id;
    hello.config_version = c->config_version;
    gw_edge_settings(c, &settings, &routes);
    hello.settings = &settings;
    ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_HELLO;
    ev.hello = &hello;
    gw_edge_send(c, e, &ev);
    free(routes);
}

/* ---- sessions ------------------------------------------------------------------------ */

/* Tells every edge that session id ended. */
static void gw_broadcast_end(ctl *c, const char *id, Mcphub__V1__EndReason reason)
{
    Mcphub__V1__EdgeEvent ev = MCPHUB__V1__EDGE_EVENT__INIT;
    Mcphub__V1__SessionEnded ended = MCPHUB__V1__SESSION_ENDED__INIT;

    ended.session_id = (char *)id;
    ended.reason = reason;
    ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_SESSION_ENDED;
    ev.session_ended = &ended;
    for (ctl_edge *e = c->edges; e; e = e->next)
        gw_edge_send(c, e, &ev);
    c->broadcasts++;
}

/* Ends session s: cancels its work, broadcasts the end to every edge, then frees it. */
static void gw_session_end(ctl *c, sess *s, Mcphub__V1__EndReason reason)
{
    int64_t since = ctl_metrics_clock();

    ctl_mcp_session_ended(c, s);
    ctl_up_session_ended(c, s);
    log_info("session ended", "session=%s reason=%d sessions=%zu", s->id, (int)reason,
             sess_count(c->sessions) - 1);
    gw_broadcast_end(c, s->id, reason);
    ctl_metrics_session_ended(c, (int)reason, since);
    sess_destroy(c->sessions, s);
}

/* Authenticates the principal for route and checks the route exists. Returns true, or
 * false after failing the call with the status the edge turns into 401, 403 or 404.
 * *key_name gets the key's name ("" with auth off; borrowed from the cfg). */
static bool gw_admit(ctl *c, rpc_call *call, const Mcphub__V1__Principal *p, const char *route,
                     const char **key_name)
{
    const cfg_bearer_key *key = NULL;
    agg_route r;
    int rc;

    *key_name = "";
    rc = auth_check(c->cfg, p ? p->bearer_token : NULL, route, &key);
    if (rc == -EACCES) {
        rpc_call_fail(call, GRPC_STATUS_UNAUTHENTICATED, "a valid bearer token is required");
        return false;
    }
    if (rc == -EPERM) {
        rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED, "this key may not use this route");
        return false;
    }
    if (agg_route_resolve(c->cfg, route, &r) < 0) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "no such route");
        return false;
    }
    agg_route_cleanup(&r);
    if (key)
        *key_name = key->name;
    return true;
}

/* Parses text as one JSON-RPC 2.0 message (the edge validated it already; control does not
 * trust that). Returns a new reference to the message and its kind, or NULL. */
static json_t *gw_parse_message(const char *text, jr_kind *kind)
{
    jr_limits lim = {.max_bytes = 16u << 20};
    jr_body *body = NULL;
    jr_error err;
    json_t *msg = NULL;

    if (jr_parse(text, strlen(text), &lim, &body, &err) < 0) {
        jr_error_cleanup(&err);
        return NULL;
    }
    msg = json_incref(body->msgs[0].msg);
    *kind = body->msgs[0].kind;
    jr_body_free(body);
    return msg;
}

static void gw_open_session(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__OpenSessionRequest *req =
        (const Mcphub__V1__OpenSessionRequest *)rpc_call_request(call);
    Mcphub__V1__OpenSessionReply reply = MCPHUB__V1__OPEN_SESSION_REPLY__INIT;
    bool legacy = req->era == MCPHUB__V1__PROTOCOL_ERA__PROTOCOL_ERA_LEGACY_SSE;
    json_t *msg = NULL;
    json_t *params;
    json_t *resp = NULL;
    jr_kind kind;
    const char *key_name;
    char *resp_text = NULL;
    sess *s;

    if (c->state != CTL_RUNNING) {
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "control is shutting down");
        goto out;
    }
    /* Legacy SSE sessions open with the stream; their initialize comes later, via Post. */
    if (!legacy || req->initialize_json[0]) {
        msg = gw_parse_message(req->initialize_json, &kind);
        params = json_object_get(msg, "params");
        if (!msg || kind != JR_REQUEST ||
            strcmp(json_string_value(json_object_get(msg, "method")), "initialize") != 0 ||
            !json_is_string(json_object_get(params, "protocolVersion"))) {
            rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                          "initialize_json must be a JSON-RPC 2.0 initialize request with an id "
                          "and params.protocolVersion");
            goto out;
        }
    }
    if (!gw_admit(c, call, req->principal, req->route, &key_name))
        goto out;
    if (sess_count(c->sessions) >= (size_t)c->cfg->hub.max_sessions) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "session limit reached");
        goto out;
    }
    s = sess_create(c->sessions, legacy ? SESS_LEGACY_SSE : SESS_STREAMABLE, req->route, key_name);
    if (msg) {
        resp = ctl_mcp_initialize(c, s, json_object_get(msg, "id"), json_object_get(msg, "params"));
        if (!(resp_text = json_dumps(resp, JSON_COMPACT)))
            abort();
    }
    reply.session_id = s->id;
    reply.protocol_version = s->protocol_version ? s->protocol_version : (char *)"";
    reply.response_json = resp_text ? resp_text : (char *)"";
    ctl_metrics_session_opened(c, legacy ? SESS_LEGACY_SSE : SESS_STREAMABLE);
    log_info("session opened", "session=%s route=%s version=%s sessions=%zu", s->id,
             s->route[0] ? s->route : "/", reply.protocol_version, sess_count(c->sessions));
    rpc_call_reply(call, &reply.base);
out:
    free(resp_text);
    json_decref(resp);
    json_decref(msg);
}

/* Finds the session a call names and checks the caller's key is the one that opened it.
 * Returns the session, or NULL after failing the call (404, 401 or 403). */
static sess *gw_session_for(ctl *c, rpc_call *call, const char *session_id,
                            const Mcphub__V1__Principal *p, bool while_draining)
{
    sess *s = sess_find(c->sessions, session_id);
    const cfg_bearer_key *k = NULL;
    int rc;

    if (c->state != CTL_RUNNING && !(while_draining && c->state == CTL_DRAINING)) {
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "control is shutting down");
        return NULL;
    }
    if (!s) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "session not found");
        return NULL;
    }
    rc = auth_check(c->cfg, p ? p->bearer_token : NULL, s->route, &k);
    if (rc == -EACCES) {
        rpc_call_fail(call, GRPC_STATUS_UNAUTHENTICATED, "a valid bearer token is required");
        return NULL;
    }
    if (rc < 0 || strcmp(s->key_name, k ? k->name : "") != 0) {
        rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED, "session belongs to another key");
        return NULL;
    }
    s->last_activity_ms = rpc_now_ms();
    return s;
}

/* The HTTP request's W3C trace context (the edge validated it) goes to the upstream as
 * params._meta.traceparent / tracestate, unless the client put its own there. */
static void gw_trace_into(json_t *msg, const char *traceparent, const char *tracestate)
{
    json_t *params, *meta;

    if (!traceparent || !traceparent[0])
        return;
    params = json_object_get(msg, "params");
    if (!params) {
        params = json_object();
        json_object_set_new(msg, "params", params);
    }
    if (!json_is_object(params))
        return;
    meta = json_object_get(params, "_meta");
    if (!meta) {
        meta = json_object();
        json_object_set_new(params, "_meta", meta);
    }
    if (!json_is_object(meta) || json_object_get(meta, "traceparent"))
        return;
    json_object_set_new(meta, "traceparent", json_string(traceparent));
    if (tracestate && tracestate[0])
        json_object_set_new(meta, "tracestate", json_string(tracestate));
}

/* A stateless (2026-07-28) request names no session: it runs in the scope session of its
 * route, key and scope, made at the first request of that scope, ended like any session
 * (idle timeout, Admin, key revoked) with the same cleanup and broadcast. Returns it, or
 * NULL after failing the call. */
static sess *gw_scope_for(ctl *c, rpc_call *call, const Mcphub__V1__ClientRequest *req)
{
    const char *key_name;
    sess *s;

    if (c->state != CTL_RUNNING) {
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "control is shutting down");
        return NULL;
    }
    if (strcmp(req->protocol_version, MCP26_VERSION) != 0) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "session not found");
        return NULL;
    }
    if (!gw_admit(c, call, req->principal, req->route, &key_name))
        return NULL;
    if ((s = sess_scope_find(c->sessions, req->route, key_name, req->scope)) != NULL) {
        s->last_activity_ms = rpc_now_ms();
        return s;
    }
    if (sess_count(c->sessions) >= (size_t)c->cfg->hub.max_sessions) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "session limit reached");
        return NULL;
    }
    s = sess_scope_create(c->sessions, req->route, key_name, req->scope);
    if (!(s->protocol_version = strdup(MCP26_VERSION)))
        abort();
    s->initialized = true;
    ctl_metrics_session_opened(c, SESS_STATELESS);
    log_info("scope opened", "session=%s route=%s scope=%s sessions=%zu", s->id,
             s->route[0] ? s->route : "/", s->scope[0] ? "client" : "key",
             sess_count(c->sessions));
    return s;
}

static void gw_request(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__ClientRequest *req = (const Mcphub__V1__ClientRequest *)rpc_call_request(call);
    json_t *msg;
    jr_kind kind;
    sess *s;

    s = req->session_id[0] ? gw_session_for(c, call, req->session_id, req->principal, false)
                           : gw_scope_for(c, call, req);
    if (!s)
        return;
    msg = gw_parse_message(req->message_json, &kind);
    if (!msg || kind != JR_REQUEST) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "message_json is not a JSON-RPC request");
        json_decref(msg);
        return;
    }
    gw_trace_into(msg, req->traceparent, req->tracestate);
    ctl_mcp_request(c, s, call, msg, req->stream_id);
    json_decref(msg);
}

static void gw_post(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__ClientMessage *req = (const Mcphub__V1__ClientMessage *)rpc_call_request(call);
    Mcphub__V1__ClientMessageReply reply = MCPHUB__V1__CLIENT_MESSAGE_REPLY__INIT;
    json_t *msg;
    jr_kind kind;
    sess *s;

    /* Answers to sampling/elicitation and cancels let running calls finish a drain. */
    if (!(s = gw_session_for(c, call, req->session_id, req->principal, true)))
        return;
    msg = gw_parse_message(req->message_json, &kind);
    if (!msg) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "message_json is not a JSON-RPC message");
        return;
    }
    if (kind == JR_REQUEST) {
        if (c->state != CTL_RUNNING) {
            json_decref(msg);
            rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "control is shutting down");
            return;
        }
        if (s->era != SESS_LEGACY_SSE) {
            json_decref(msg);
            rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                          "requests of Streamable HTTP sessions go through Request");
            return;
        }
        /* Legacy SSE: accepted now (202), answered on the /sse stream. */
        rpc_call_reply(call, &reply.base);
        ctl_mcp_request(c, s, NULL, msg, s->stream_id ? s->stream_id : "");
    } else {
        rpc_call_reply(call, &reply.base);
        ctl_mcp_client_message(c, s, msg);
    }
    json_decref(msg);
}

typedef struct {
    Mcphub__V1__StreamMessage *items;
    size_t n, cap;
    const char *session_id;
} gw_replay_acc;

static void gw_replay_one(void *ud, const sess_event *ev)
{
    gw_replay_acc *acc = ud;
    Mcphub__V1__StreamMessage *m;

    if (acc->n == acc->cap) {
        acc->cap = acc->cap ? acc->cap * 2 : 16;
        acc->items = realloc(acc->items, acc->cap * sizeof *acc->items);
        if (!acc->items)
            abort();
    }
    m = &acc->items[acc->n++];
    mcphub__v1__stream_message__init(m);
    m->session_id = (char *)acc->session_id;
    m->stream_id = ev->stream_id;
    m->event_id = ev->event_id;
    m->message_json = ev->json;
}

static void gw_attach(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__AttachStreamRequest *req =
        (const Mcphub__V1__AttachStreamRequest *)rpc_call_request(call);
    Mcphub__V1__AttachStreamReply reply = MCPHUB__V1__ATTACH_STREAM_REPLY__INIT;
    gw_replay_acc acc = {0};
    Mcphub__V1__StreamMessage **ptrs = NULL;
    bool resuming = req->last_event_id && req->last_event_id[0];
    sess *s;

    if (!(s = gw_session_for(c, call, req->session_id, req->principal, false)))
        return;
    if (!req->stream_id[0] || !req->edge_id[0]) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "edge_id and stream_id are required");
        return;
    }
    /* One standalone stream per session. A client resuming with Last-Event-ID, or one whose
     * edge is gone, takes it over; a second plain GET is refused. */
    if (s->stream_edge && !resuming && ctl_edge_connected(c, s->stream_edge)) {
        rpc_call_fail(call, GRPC_STATUS_ALREADY_EXISTS, "the session already has a stream");
        return;
    }
    sess_set_stream(s, req->edge_id, req->stream_id);
    log_info("session stream attached", "session=%s edge=%s resumed=%s", s->id, req->edge_id,
             resuming ? "true" : "false");
    if (resuming) {
        acc.session_id = s->id;
        sess_replay(s, req->last_event_id, gw_replay_one, &acc);
        ptrs = calloc(acc.n ? acc.n : 1, sizeof *ptrs);
        if (!ptrs)
            abort();
        for (size_t i = 0; i < acc.n; i++)
            ptrs[i] = &acc.items[i];
        reply.n_replay = acc.n;
        reply.replay = ptrs;
    }
    rpc_call_reply(call, &reply.base);
    free(ptrs);
    free(acc.items);
}

static void gw_detach(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__DetachStreamRequest *req =
        (const Mcphub__V1__DetachStreamRequest *)rpc_call_request(call);
    Mcphub__V1__DetachStreamReply reply = MCPHUB__V1__DETACH_STREAM_REPLY__INIT;
    sess *s = sess_find(c->sessions, req->session_id);

    /* req belongs to the call: use it before the reply completes the call. */
    if (s && s->stream_edge && strcmp(s->stream_edge, req->edge_id) == 0 &&
        strcmp(s->stream_id, req->stream_id) == 0) {
        sess_detach_stream(s);
        s->last_activity_ms = rpc_now_ms();
        /* A legacy SSE session lives exactly as long as its /sse stream. */
        if (s->era == SESS_LEGACY_SSE)
            gw_session_end(c, s, MCPHUB__V1__END_REASON__END_REASON_STREAM_CLOSED);
    }
    rpc_call_reply(call, &reply.base);
}

static void gw_end_session(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__EndSessionRequest *req =
        (const Mcphub__V1__EndSessionRequest *)rpc_call_request(call);
    Mcphub__V1__EndSessionReply reply = MCPHUB__V1__END_SESSION_REPLY__INIT;
    sess *s = sess_find(c->sessions, req->session_id);
    const cfg_bearer_key *k = NULL;
    const char *key = "";

    if (auth_check(c->cfg, req->principal ? req->principal->bearer_token : NULL,
                   s ? s->route : "", &k) == -EACCES) {
        rpc_call_fail(call, GRPC_STATUS_UNAUTHENTICATED, "a valid bearer token is required");
        return;
    }
    if (k)
        key = k->name;
    if (s && strcmp(s->key_name, key) != 0) {
        /* A session is bound to the key that opened it. */
        rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED, "session belongs to another key");
        return;
    }
    if (s) {
        reply.existed = 1;
        gw_session_end(c, s, MCPHUB__V1__END_REASON__END_REASON_CLIENT_DELETE);
    }
    rpc_call_reply(call, &reply.base);
}

bool ctl_gateway_end_session(ctl *c, const char *id, int reason)
{
    sess *s = sess_find(c->sessions, id);

    if (!s)
        return false;
    gw_session_end(c, s, (Mcphub__V1__EndReason)reason);
    return true;
}

/* ---- registration and shutdown -------------------------------------------------------- */

static void gw_post_subscribe(rpc_call *call, void *ud)
{
    ctl_post(ud, gw_subscribe, call, NULL);
}

static void gw_post_open(rpc_call *call, void *ud)
{
    ctl_post(ud, gw_open_session, call, NULL);
}

static void gw_post_end(rpc_call *call, void *ud)
{
    ctl_post(ud, gw_end_session, call, NULL);
}

static void gw_post_request(rpc_call *call, void *ud)
{
    ctl_post(ud, gw_request, call, NULL);
}

static void gw_post_message(rpc_call *call, void *ud)
{
    ctl_post(ud, gw_post, call, NULL);
}

static void gw_post_attach(rpc_call *call, void *ud)
{
    ctl_post(ud, gw_attach, call, NULL);
}

static void gw_post_detach(rpc_call *call, void *ud)
{
    ctl_post(ud, gw_detach, call, NULL);
}

int ctl_gateway_register(ctl *c)
{
    const ProtobufCServiceDescriptor *svc = &mcphub__v1__gateway__descriptor;
    int rc;

    if ((rc = rpc_server_add_method(c->gateway, svc, "Subscribe", RPC_SERVER_STREAM,
                                    gw_post_subscribe, c)) < 0 ||
        (rc = rpc_server_add_method(c->gateway, svc, "OpenSession", RPC_UNARY, gw_post_open, c)) < 0 ||
        (rc = rpc_server_add_method(c->gateway, svc, "EndSession", RPC_UNARY, gw_post_end, c)) < 0 ||
        (rc = rpc_server_add_method(c->gateway, svc, "Request", RPC_SERVER_STREAM, gw_post_request,
                                    c)) < 0 ||
        (rc = rpc_server_add_method(c->gateway, svc, "Post", RPC_UNARY, gw_post_message, c)) < 0 ||
        (rc = rpc_server_add_method(c->gateway, svc, "AttachStream", RPC_UNARY, gw_post_attach, c)) < 0)
        return rc;
    return rpc_server_add_method(c->gateway, svc, "DetachStream", RPC_UNARY, gw_post_detach, c);
}

/* Ends every session pick() selects, with reason. Ending one session frees only that one,
 * so the selection is made first and ended after. */
static void gw_end_where(ctl *c, bool (*pick)(ctl *c, sess *s, const void *arg), const void *arg,
                        Mcphub__V1__EndReason reason)
{
    size_t n = 0, cap = 0, pos = 0;
    sess **victims = NULL;
    sess *s;

    while (sess_next(c->sessions, &pos, &s)) {
        if (!pick(c, s, arg))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            if (!(victims = realloc(victims, cap * sizeof *victims)))
                abort();
        }
        victims[n++] = s;
    }
    for (size_t i = 0; i < n; i++)
        gw_session_end(c, victims[i], reason);
    free(victims);
}

static bool gw_is_idle(ctl *c, sess *s, const void *arg)
{
    int64_t now = *(const int64_t *)arg;

    return s->running == 0 && !s->stream_edge &&
           now - s->last_activity_ms >= c->cfg->hub.session_idle_timeout_ms;
}

void ctl_gateway_expire_idle(ctl *c)
{
    int64_t now = rpc_now_ms();

    gw_end_where(c, gw_is_idle, &now, MCPHUB__V1__END_REASON__END_REASON_IDLE_TIMEOUT);
}

static bool gw_every(ctl *c, sess *s, const void *arg)
{
    return true;
}

void ctl_gateway_drain(ctl *c)
{
    gw_end_where(c, gw_every, NULL, MCPHUB__V1__END_REASON__END_REASON_SHUTDOWN);
    /* A normal end after the queued events are written; edges reconnect elsewhere. */
    while (c->edges)
        gw_edge_drop(c, c->edges, GRPC_STATUS_OK, "control shutting down");
}

void ctl_gateway_cleanup(ctl *c)
{
    size_t pos = 0;
    sess *s;

    ctl_mcp_cleanup(c);
    /* Sessions still here (control stopped without ending them) hand their instances over
     * to be killed and reaped with the rest. */
    while (c->sessions && sess_next(c->sessions, &pos, &s))
        ctl_up_session_ended(c, s);
    sess_table_free(c->sessions);
    c->sessions = NULL;
}

/* A session bound to a key the configuration no longer accepts for its route (or without a
 * key while bearer auth is now on). */
static bool gw_key_revoked(ctl *c, sess *s, const void *arg)
{
    const cfg_bearer_key *now = NULL, *key = NULL;

    (void)arg;
    if (!c->cfg->routing.enable_bearer_auth)
        return false;
    for (size_t i = 0; i < c->cfg->n_keys && s->key_name[0]; i++)
        if (strcmp(c->cfg->keys[i].name, s->key_name) == 0)
            key = &c->cfg->keys[i];
    if (!key || !key->usable)
        return true;
    return auth_check(c->cfg, key->token, s->route, &now) < 0 || now != key;
}

void ctl_gateway_end_revoked(ctl *c)
{
    gw_end_where(c, gw_key_revoked, NULL, MCPHUB__V1__END_REASON__END_REASON_KEY_REVOKED);
}

void ctl_gateway_config_changed(ctl *c)
{
    Mcphub__V1__EdgeEvent ev = MCPHUB__V1__EDGE_EVENT__INIT;
    Mcphub__V1__ConfigChanged cc = MCPHUB__V1__CONFIG_CHANGED__INIT;
    Mcphub__V1__EdgeSettings settings = MCPHUB__V1__EDGE_SETTINGS__INIT;
    char **routes = NULL;

    cc.config_version = c->config_version;
    gw_edge_settings(c, &settings, &routes);
    cc.settings = &settings;
    ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_CONFIG_CHANGED;
    ev.config_changed = &cc;
    for (ctl_edge *e = c->edges; e; e = e->next)
        gw_edge_send(c, e, &ev);
    free(routes);
}
