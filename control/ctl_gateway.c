/* ctl_gateway: the Gateway service that edges call: sessions (open, end) and the Subscribe
 * stream per edge that carries the session-ended broadcast. gRPC threads only post work;
 * everything below the handlers runs on the loop thread. */
#include "ctl_internal.h"

#include "agg.h"
#include "auth.h"

#include "log.h"
#include "mcphub/v1/gateway.pb-c.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Protocol revisions of the session era, newest first. */
static const char *const gw_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"};

static uint64_t gw_edge_serial;

/* ---- edges ------------------------------------------------------------------------- */

static ctl_edge *gw_edge_by_serial(ctl *c, uintptr_t serial)
{
    for (ctl_edge *e = c->edges; e; e = e->next)
        if ((uintptr_t)rpc_call_data(e->call) == serial)
            return e;
    return NULL;
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
    free(e);
}

/* Sends ev (its seq is set here) to e; an edge that cannot take it is dropped. */
static void gw_edge_send(ctl *c, ctl_edge *e, Mcphub__V1__EdgeEvent *ev)
{
    int rc;

    ev->seq = ++e->seq;
    rc = rpc_call_send(e->call, &ev->base);
    if (rc < 0)
        gw_edge_drop(c, e, GRPC_STATUS_RESOURCE_EXHAUSTED,
                     rc == -ENOBUFS ? "edge too slow to read its events" : "edge stream ended");
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
    ctl_edge *next;

    ended.session_id = (char *)id;
    ended.reason = reason;
    ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_SESSION_ENDED;
    ev.session_ended = &ended;
    for (ctl_edge *e = c->edges; e; e = next) {
        next = e->next; /* gw_edge_send may drop e */
        gw_edge_send(c, e, &ev);
    }
    c->broadcasts++;
}

/* Ends session s: broadcasts the end to every edge, then frees it. */
static void gw_session_end(ctl *c, sess *s, Mcphub__V1__EndReason reason)
{
    log_info("session ended", "session=%s reason=%d sessions=%zu", s->id, (int)reason,
             sess_count(c->sessions) - 1);
    gw_broadcast_end(c, s->id, reason);
    sess_destroy(c->sessions, s);
}

static const char *gw_negotiate(const char *requested)
{
    for (size_t i = 0; i < sizeof gw_versions / sizeof gw_versions[0]; i++)
        if (strcmp(requested, gw_versions[i]) == 0)
            return gw_versions[i];
    return gw_versions[0];
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

static void gw_open_session(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__OpenSessionRequest *req =
        (const Mcphub__V1__OpenSessionRequest *)rpc_call_request(call);
    Mcphub__V1__OpenSessionReply reply = MCPHUB__V1__OPEN_SESSION_REPLY__INIT;
    json_error_t jerr;
    json_t *msg = NULL;
    json_t *id = NULL;
    json_t *client_info = NULL;
    json_t *caps = NULL;
    json_t *resp = NULL;
    const char *method = NULL;
    const char *jsonrpc = NULL;
    const char *requested = NULL;
    const char *version;
    const char *key_name;
    char *resp_text = NULL;
    sess *s;

    if (c->state != CTL_RUNNING) {
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "control is shutting down");
        goto out;
    }
    msg = json_loads(req->initialize_json, JSON_REJECT_DUPLICATES, &jerr);
    if (!msg || json_unpack_ex(msg, &jerr, 0, "{s:s, s:s, s:o, s:{s:s, s?o, s?o}}", "jsonrpc",
                               &jsonrpc, "method", &method, "id", &id, "params",
                               "protocolVersion", &requested, "clientInfo", &client_info,
                               "capabilities", &caps) < 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "initialize_json is not an initialize request with params.protocolVersion");
        goto out;
    }
    if (strcmp(jsonrpc, "2.0") != 0 || strcmp(method, "initialize") != 0 ||
        !(json_is_string(id) || json_is_integer(id))) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "initialize_json must be a JSON-RPC 2.0 initialize request with an id");
        goto out;
    }
    if (!gw_admit(c, call, req->principal, req->route, &key_name))
        goto out;
    if (sess_count(c->sessions) >= (size_t)c->cfg->hub.max_sessions) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "session limit reached");
        goto out;
    }
    version = gw_negotiate(requested);
    s = sess_create(c->sessions, SESS_STREAMABLE, req->route, key_name);
    if (!(s->protocol_version = strdup(version)))
        abort();
    json_decref(s->client_caps);
    s->client_caps = json_incref(caps ? caps : json_object());
    s->client_info = json_incref(client_info);

    resp = json_pack("{s:s, s:O, s:{s:s, s:{s:{s:b}, s:{s:b}, s:{s:b, s:b}, s:{}}, s:{s:s, s:s}}}",
                     "jsonrpc", "2.0", "id", id, "result", "protocolVersion", version,
                     "capabilities", "tools", "listChanged", 1, "prompts", "listChanged", 1,
                     "resources", "subscribe", 1, "listChanged", 1, "logging", "serverInfo",
                     "name", "mcphub", "version", "0.1.0");
    if (!resp || !(resp_text = json_dumps(resp, JSON_COMPACT)))
        abort();
    reply.session_id = s->id;
    reply.protocol_version = s->protocol_version;
    reply.response_json = resp_text;
    log_info("session opened", "session=%s route=%s version=%s sessions=%zu", s->id,
             s->route[0] ? s->route : "/", version, sess_count(c->sessions));
    rpc_call_reply(call, &reply.base);
out:
    free(resp_text);
    json_decref(resp);
    json_decref(msg);
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

int ctl_gateway_register(ctl *c)
{
    const ProtobufCServiceDescriptor *svc = &mcphub__v1__gateway__descriptor;
    int rc;

    if ((rc = rpc_server_add_method(c->gateway, svc, "Subscribe", RPC_SERVER_STREAM,
                                    gw_post_subscribe, c)) < 0 ||
        (rc = rpc_server_add_method(c->gateway, svc, "OpenSession", RPC_UNARY, gw_post_open, c)) < 0 ||
        (rc = rpc_server_add_method(c->gateway, svc, "EndSession", RPC_UNARY, gw_post_end, c)) < 0)
        return rc;
    /* Request, Post, AttachStream and DetachStream are not registered yet: gRPC answers
     * them with UNIMPLEMENTED until the MCP routing lands. */
    return 0;
}

void ctl_gateway_drain(ctl *c)
{
    sess *s;
    size_t pos = 0;

    /* Ending a session changes the table: always take the first one anew. */
    while ((pos = 0, sess_next(c->sessions, &pos, &s)))
        gw_session_end(c, s, MCPHUB__V1__END_REASON__END_REASON_SHUTDOWN);
    /* A normal end after the queued events are written; edges reconnect elsewhere. */
    while (c->edges)
        gw_edge_drop(c, c->edges, GRPC_STATUS_OK, "control shutting down");
}

void ctl_gateway_cleanup(ctl *c)
{
    sess_table_free(c->sessions);
    c->sessions = NULL;
}
