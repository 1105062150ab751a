/* ctl_mcp: MCP requests of client sessions: one dispatch table, the running requests and
 * their Gateway streams, routing to upstream instances (names mapped back, progress and
 * cancellation both ways, server->client requests to the client whose call caused them),
 * and delivery to each session's standalone stream. Loop thread only. */
#include "ctl_mcp.h"

#include "agg.h"
#include "ctl_up.h"
#include "inst.h"
#include "jr.h"
#include "log.h"
#include "mcp26.h"
#include "mcphub/v1/gateway.pb-c.h"
#include "seal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MCP_PAGE_SIZE 500 /* items per page of a list */

const char *const ctl_mcp_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05",
                                        NULL};


typedef struct mcp_rq mcp_rq;
typedef void (*mcp_method_fn)(mcp_rq *rq, sess *s, json_t *params);

/* A client request being answered. */
struct mcp_rq {
    ctl *c;
    char session_id[SESS_ID_MAX];
    rpc_call *call;    /* the Gateway Request stream; NULL for legacy SSE */
    uint64_t serial;   /* rpc_call_data of call */
    json_t *id;        /* the client's id (owned reference) */
    char *stream_id;
    /* upstream request in flight, if any */
    inst *up_in;
    size_t up_server;
    uint64_t up_handle;
    unsigned sent;     /* messages written on the call so far */
    bool silent;       /* the client cancelled: end without a response */
    bool session_gone; /* the session ended: end the call with NOT_FOUND */
    /* waiting for upstream lists */
    mcp_method_fn held;
    json_t *held_params;
    int64_t started_ms;

    /* The stateless revision (2026-07-28). */
    bool stateless;
    char method[32];    /* what it asked, for the shape of its result */
    json_t *caps;       /* the request's client capabilities (owned) */
    int log_level;      /* mcp26_log_level rank; -1: no notifications/message at all */
    /* subscriptions/listen: 1 << kind of the list_changed notifications it asked for, and
     * MCP_LISTEN_RESOURCES when it holds resource subscriptions (on c->subs). Not 0 means a
     * listen stream, open until the client leaves: a listen that asks for nothing the hub
     * can deliver is answered at once. */
    unsigned listen_mask;
    /* Parked for the client's input: an upstream asked for sampling, elicitation or roots;
     * the client's call ended with input_required, the upstream call goes on, and the
     * client's retry (any edge) delivers the answers and takes the final result. */
    bool parked;
    uint64_t park_id;
    int64_t parked_ms;
    json_t *inputs;     /* hub id -> {method, params} still unanswered (owned) */
    json_t *early;      /* the final answer, when it came while parked (owned) */
    /* Not NULL: the upstream call was cancelled because the client lacks a capability it
     * needed; the answer is MCP26_E_MISSING_CAPABILITY with this data (owned). */
    json_t *fail_data;
    mcp_rq *next;
};

#define MCP_LISTEN_RESOURCES (1u << 3)
#define MCP_PARK_TTL_MS 300000 /* a parked request waits this long for the client's retry */
#define MCP_LIST_TTL_MS 5000   /* ttlMs of lists and discover: list_changed says sooner */
#define MCP_STATE_PURPOSE "mcphub requestState v1"


/* An upstream's request forwarded to a client, waiting for the client's answer. */
typedef struct mcp_pending mcp_pending;
struct mcp_pending {
    char hub_id[32];     /* the id the client saw */
    char session_id[SESS_ID_MAX];
    size_t server;
    inst *in;            /* compared with the server's live instance before use */
    json_t *upstream_id; /* owned */
    mcp_pending *next;
};

/* A resource subscription: a session's (resources/subscribe), or a 2026 listen stream's
 * (resourceSubscriptions), which ends with the stream. */
typedef struct mcp_sub mcp_sub;
struct mcp_sub {
    char session_id[SESS_ID_MAX];
    size_t server;
    char *uri;
    mcp_rq *listen; /* the listen stream that holds it; NULL: the session's */
    mcp_sub *next;
};

/* The hub's serverInfo (a new object): one program, so the name and version it gives
 * upstreams as their client. */
static json_t *mcp_server_info(void)
{
    return json_pack("{s:s, s:s}", "name", INST_CLIENT_NAME, "version", INST_CLIENT_VERSION);
}

/* ---- upstream requests waiting for a client ------------------------------------------- */

/* An upstream's request asked of a stateless client is gone (withdrawn, or its server
 * removed): it leaves the inputs of the request that asked it. False when no request had it
 * (it was asked on a session-era stream). */
static bool mcp_input_withdraw(ctl *c, const char *hub_id)
{
    for (mcp_rq *rq = c->running; rq; rq = rq->next)
        if (json_object_del(rq->inputs, hub_id) == 0)
            return true;
    return false;
}

/* Where the pending request the client of session session_id knows as hub_id is linked,
 * or NULL. */
static mcp_pending **mcp_pending_find(ctl *c, const char *hub_id, const char *session_id)
{
    for (mcp_pending **pp = &c->pending; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->hub_id, hub_id) == 0 && strcmp((*pp)->session_id, session_id) == 0)
            return pp;
    return NULL;
}

/* Unlinks the pending request at *pp and frees it; a stateless client is not asked it
 * again. Returns whether a stateless request had it among its inputs. */
static bool mcp_pending_forget(ctl *c, mcp_pending **pp)
{
    mcp_pending *p = *pp;
    bool asked_stateless;

    *pp = p->next;
    asked_stateless = mcp_input_withdraw(c, p->hub_id);
    json_decref(p->upstream_id);
    free(p);
    return asked_stateless;
}

/* Settles the pending request linked at *pp: answers its upstream with result or error
 * (exactly one not NULL, both stolen, as inst_respond takes them), then forgets it. */
static void mcp_pending_settle(ctl *c, mcp_pending **pp, json_t *result, json_t *error)
{
    mcp_pending *p = *pp;

    /* Only the instance that asked may be answered (it may have been restarted). */
    if (ctl_up_is_live(c, p->in)) {
        inst_respond(p->in, p->upstream_id, result, error);
    } else {
        json_decref(result);
        json_decref(error);
    }
    mcp_pending_forget(c, pp);
}

/* ---- sending -------------------------------------------------------------------------- */

int ctl_mcp_push(ctl *c, sess *s, json_t *msg)
{
    char *text;
    const char *event_id;
    int rc;

    if (!s->stream_id)
        return -ENOTCONN;
    if (!(text = json_dumps(msg, JSON_COMPACT)))
        abort();
    event_id = sess_event_add(s, s->stream_id, text);
    /* A stream whose edge went away keeps its events in the ring for the client's resume. */
    rc = s->stream_edge ? ctl_edge_send_message(c, s->stream_edge, s->id, s->stream_id,
                                                event_id, text)
                        : 0;
    free(text);
    return rc;
}

static void mcp_ignore_answer(void *ud, json_t *result, const inst_error *err)
{
}

/* Links a new subscription of session session_id to uri of server; listen: the listen
 * stream that holds it, or NULL for the session's own. */
static void mcp_sub_add(ctl *c, const char *session_id, size_t server, const char *uri,
                        mcp_rq *listen)
{
    mcp_sub *sub = calloc(1, sizeof *sub);

    if (!sub || !(sub->uri = strdup(uri)))
        abort();
    snprintf(sub->session_id, sizeof sub->session_id, "%s", session_id);
    sub->server = server;
    sub->listen = listen;
    sub->next = c->subs;
    c->subs = sub;
}

/* Whether a subscription other than sub needs sub's resource of sub's instance (for a
 * perSession server, the instance of sub's session). */
static bool mcp_sub_needed_elsewhere(ctl *c, const mcp_sub *sub)
{
    bool shared = !c->cfg->servers[sub->server].per_session;

    for (const mcp_sub *o = c->subs; o; o = o->next)
        if (o != sub && o->server == sub->server && strcmp(o->uri, sub->uri) == 0 &&
            (shared || strcmp(o->session_id, sub->session_id) == 0))
            return true;
    return false;
}

/* Unlinks and frees the subscription at *pp. A listen stream's also ends upstream, unless
 * another subscription still needs that resource of that instance. */
static void mcp_sub_drop(ctl *c, mcp_sub **pp)
{
    mcp_sub *sub = *pp;
    inst *in;

    *pp = sub->next;
    if (sub->listen && !mcp_sub_needed_elsewhere(c, sub) &&
        (in = ctl_up_ready_for(c, sess_find(c->sessions, sub->session_id), sub->server)))
        inst_request(in, "resources/unsubscribe", json_pack("{s:s}", "uri", sub->uri), NULL,
                     mcp_ignore_answer, NULL, NULL);
    free(sub->uri);
    free(sub);
}

static void mcp_rq_free(mcp_rq *rq)
{
    /* With the edge's line of the same stream id, one call can be followed across both. */
    log_debug("request ended", "session=%s stream=%s server=%s ms=%lld", rq->session_id,
              rq->stream_id,
              rq->up_server < rq->c->cfg->n_servers && rq->up_handle
                  ? rq->c->cfg->servers[rq->up_server].name
                  : "-",
              (long long)(rpc_now_ms() - rq->started_ms));
    for (mcp_rq **pp = &rq->c->running; *pp; pp = &(*pp)->next) {
        if (*pp == rq) {
            *pp = rq->next;
            break;
        }
    }
    /* Upstream requests still waiting for this client's input: nobody will answer now. */
    for (mcp_pending **pp = &rq->c->pending; rq->inputs && *pp;) {
        if (!json_object_get(rq->inputs, (*pp)->hub_id)) {
            pp = &(*pp)->next;
            continue;
        }
        mcp_pending_settle(rq->c, pp, NULL,
                           json_pack("{s:i, s:s}", "code", JR_INTERNAL_ERROR, "message",
                                     "the client did not provide the input"));
    }
    for (mcp_sub **pp = &rq->c->subs; (rq->listen_mask & MCP_LISTEN_RESOURCES) && *pp;) {
        if ((*pp)->listen == rq)
            mcp_sub_drop(rq->c, pp);
        else
            pp = &(*pp)->next;
    }
    json_decref(rq->inputs);
    json_decref(rq->early);
    json_decref(rq->caps);
    json_decref(rq->fail_data);
    json_decref(rq->id);
    json_decref(rq->held_params);
    free(rq->stream_id);
    free(rq);
}

/* Writes msg on rq's Gateway stream; a final message and the call's end go together. */
static void mcp_stream_send(mcp_rq *rq, sess *s, json_t *msg, bool final)
{
    Mcphub__V1__StreamMessage sm = MCPHUB__V1__STREAM_MESSAGE__INIT;
    char *text = json_dumps(msg, JSON_COMPACT);

    if (!text)
        abort();
    sm.session_id = rq->session_id;
    sm.stream_id = rq->stream_id;
    /* An answer that comes first goes out as plain JSON: no event id, nothing to resume,
     * so it is not kept for replay. */
    sm.event_id = s && !rq->stateless && !(final && rq->sent == 0)
                      ? (char *)sess_event_add(s, rq->stream_id, text)
                      : (char *)""; /* the stateless revision resumes nothing */
    rq->sent++;
    sm.message_json = text;
    sm.final = final;
    if (final)
        sm.error_code = (int32_t)json_integer_value(json_object_get(json_object_get(msg, "error"),
                                                                    "code"));
    if (final)
        rpc_call_finish_with(rq->call, &sm.base);
    else
        rpc_call_send(rq->call, &sm.base);
    free(text);
}

/* Sends msg (borrowed, may be NULL for a silent end) as part of rq's answer; final ends it
 * and frees rq. */
static void mcp_send(mcp_rq *rq, json_t *msg, bool final)
{
    sess *s = sess_find(rq->c->sessions, rq->session_id);
    bool deliver = msg && !rq->silent && !rq->session_gone;

    if (rq->parked && deliver) {
        /* No client is connected: the final answer waits for the retry; the rest (progress,
         * logging) has nobody to go to. */
        if (final && !rq->early)
            rq->early = json_incref(msg);
        return;
    }
    if (deliver && !rq->call) {
        if (s)
            ctl_mcp_push(rq->c, s, msg); /* legacy SSE: the session's /sse stream */
    } else if (deliver) {
        mcp_stream_send(rq, s, msg, final);
    } else if (final && rq->call) {
        if (rq->session_gone)
            rpc_call_finish(rq->call, GRPC_STATUS_NOT_FOUND, "session ended");
        else
            rpc_call_finish(rq->call, GRPC_STATUS_OK, NULL);
    }
    if (!final)
        return;
    if (s) {
        if (s->running > 0)
            s->running--;
        s->last_activity_ms = rpc_now_ms(); /* idle counts from the end of the last call */
    }
    mcp_rq_free(rq);
}

static void mcp_error_data(mcp_rq *rq, int code, const char *message, json_t *data);
static json_t *mcp_stateless_result(mcp_rq *rq, json_t *result);
static void mcp_resume(mcp_rq *rq, mcp_rq *p, sess *s, json_t *params);

/* Answers rq with result (stolen). */
static void mcp_result(mcp_rq *rq, json_t *result)
{
    json_t *msg;

    if (rq->stateless && !(result = mcp_stateless_result(rq, result)))
        return; /* answered with an error instead */
    msg = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", rq->id, "result", result);

    mcp_send(rq, msg, true);
    json_decref(msg);
}

/* Answers rq with a JSON-RPC error; data (stolen) may be NULL. */
static void mcp_error_data(mcp_rq *rq, int code, const char *message, json_t *data)
{
    json_t *err = json_pack("{s:i, s:s}", "code", code, "message", message);
    json_t *msg;

    if (data)
        json_object_set_new(err, "data", data);
    msg = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", rq->id, "error", err);
    mcp_send(rq, msg, true);
    json_decref(msg);
}

static void mcp_error(mcp_rq *rq, int code, const char *message)
{
    mcp_error_data(rq, code, message, NULL);
}

/* ---- the stateless revision: result shapes and requestState ------------------------------- */

/* Whether every member of the session's route gives every client the same answers: no
 * per-key view (bearer auth) and no per-session instance behind it. */
static bool mcp_public(ctl *c, sess *s)
{
    agg_route r;
    bool pub = !c->cfg->routing.enable_bearer_auth;

    if (!pub || !s || agg_route_resolve(c->cfg, s->route, &r) < 0)
        return false;
    for (size_t i = 0; i < r.n_members && pub; i++)
        pub = !c->cfg->servers[r.members[i].server].per_session;
    agg_route_cleanup(&r);
    return pub;
}

/* Seals the state a stateless client carries to its retry: kind 'B' (a request parked in
 * this control, by id) or 'P' (an upstream's own requestState, passed through), bound to
 * the scope session so no other client can use it. New malloc'd token. */
static char *mcp_state_seal(ctl *c, char kind, const char *session_id, const char *body,
                            size_t len)
{
    size_t sid = strlen(session_id);
    char *plain = malloc(2 + sid + len);
    char *token;

    if (!plain)
        abort();
    plain[0] = kind;
    memcpy(plain + 1, session_id, sid);
    plain[1 + sid] = '\n';
    memcpy(plain + 2 + sid, body, len);
    token = seal_box(&c->seal, MCP_STATE_PURPOSE, plain, 2 + sid + len);
    free(plain);
    return token;
}

/* Opens a requestState of session session_id: its kind, and its body into a new malloc'd
 * NUL-terminated string. Returns 0 or -EINVAL (forged, altered, another session's, or
 * from an earlier control process). */
static int mcp_state_open(ctl *c, const char *token, const char *session_id, char *kind,
                          char **body)
{
    size_t sid = strlen(session_id), n = 0;
    char *plain = malloc(SEAL_MAX_PLAIN + 1);
    int rc = -EINVAL;

    *body = NULL;
    if (!plain)
        abort();
    if (seal_open(&c->seal, MCP_STATE_PURPOSE, token, plain, SEAL_MAX_PLAIN, &n) < 0 ||
        n < 2 + sid || memcmp(plain + 1, session_id, sid) != 0 || plain[1 + sid] != '\n')
        goto out;
    *kind = plain[0];
    if (!(*body = strndup(plain + 2 + sid, n - 2 - sid)))
        abort();
    rc = 0;
out:
    free(plain);
    return rc;
}

/* Shapes a result for a stateless client (result stolen; a new reference is returned):
 * resultType on every result, ttlMs and cacheScope on the cacheable ones (an upstream's own
 * values kept, but never more public than the hub can vouch for), the hub in
 * _meta.serverInfo, and an upstream's requestState sealed. NULL after answering an error. */
static json_t *mcp_stateless_result(mcp_rq *rq, json_t *result)
{
    static const char *const cacheable[] = {"tools/list", "prompts/list", "resources/list",
                                            "resources/templates/list", "resources/read",
                                            "server/discover"};
    json_t *out = json_is_object(result) ? json_copy(result) : json_object();
    json_t *meta = json_object_get(out, "_meta");
    const char *type = json_string_value(json_object_get(out, "resultType"));
    sess *s = sess_find(rq->c->sessions, rq->session_id);

    json_decref(result);
    meta = json_is_object(meta) ? json_copy(meta) : json_object();
    if (!json_object_get(meta, MCP26_META_SERVER_INFO))
        json_object_set_new(meta, MCP26_META_SERVER_INFO, mcp_server_info());
    json_object_set_new(out, "_meta", meta);
    if (!type)
        json_object_set_new(out, "resultType", json_string("complete"));
    if (type && strcmp(type, "input_required") == 0) {
        const char *state = json_string_value(json_object_get(out, "requestState"));

        if (state && s) {
            char *token = mcp_state_seal(rq->c, 'P', s->id, state, strlen(state));

            if (!token) {
                json_decref(out);
                mcp_error_data(rq, JR_INTERNAL_ERROR, "the server's requestState is too large",
                               NULL);
                return NULL;
            }
            json_object_set_new(out, "requestState", json_string(token));
            free(token);
        }
        return out;
    }
    for (size_t i = 0; i < sizeof cacheable / sizeof cacheable[0]; i++) {
        json_t *ttl, *scope;
        bool pub;

        if (strcmp(rq->method, cacheable[i]) != 0)
            continue;
        ttl = json_object_get(out, "ttlMs");
        scope = json_object_get(out, "cacheScope");
        pub = mcp_public(rq->c, s) &&
              (!scope || strcmp(json_string_value(scope) ? json_string_value(scope) : "",
                                "public") == 0);
        if (!json_is_integer(ttl) || json_integer_value(ttl) < 0)
            json_object_set_new(out, "ttlMs",
                                json_integer(strcmp(rq->method, "resources/read") == 0
                                                 ? 0
                                                 : MCP_LIST_TTL_MS));
        json_object_set_new(out, "cacheScope", json_string(pub ? "public" : "private"));
    }
    return out;
}

/* ---- routes and holding ------------------------------------------------------------------ */

/* Resolves the session's route; answers rq with an error and returns -1 when it is gone. */
static int mcp_route(mcp_rq *rq, sess *s, agg_route *r)
{
    if (agg_route_resolve(rq->c->cfg, s->route, r) < 0) {
        mcp_error(rq, JR_INTERNAL_ERROR, "the session's route no longer exists");
        return -1;
    }
    return 0;
}

/* True when every member of r is settled; else rq is parked until they are, to run fn. */
static bool mcp_settled_or_hold(mcp_rq *rq, const agg_route *r, mcp_method_fn fn, json_t *params)
{
    for (size_t i = 0; i < r->n_members; i++) {
        if (!ctl_up_settled(rq->c, r->members[i].server)) {
            rq->held = fn;
            json_decref(rq->held_params);
            rq->held_params = json_incref(params);
            return false;
        }
    }
    return true;
}

/* Whether server i is a member of the route of session s. */
static bool mcp_route_has(ctl *c, sess *s, size_t server)
{
    agg_route r;
    bool has = false;

    if (agg_route_resolve(c->cfg, s->route, &r) < 0)
        return false;
    for (size_t i = 0; i < r.n_members && !has; i++)
        has = r.members[i].server == server;
    agg_route_cleanup(&r);
    return has;
}

void ctl_mcp_upstream_settled(ctl *c, size_t server)
{
    mcp_rq **held = NULL;
    size_t n = 0, cap = 0;

    /* Collect first: resuming a request may complete and free it (only it). */
    for (mcp_rq *rq = c->running; rq; rq = rq->next) {
        if (!rq->held)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            if (!(held = realloc(held, cap * sizeof *held)))
                abort();
        }
        held[n++] = rq;
    }
    for (size_t i = 0; i < n; i++) {
        mcp_rq *rq = held[i];
        sess *s = sess_find(c->sessions, rq->session_id);
        mcp_method_fn fn = rq->held;
        json_t *params = rq->held_params;
        agg_route r;
        bool settled = true;

        if (s && agg_route_resolve(c->cfg, s->route, &r) == 0) {
            for (size_t k = 0; k < r.n_members && settled; k++)
                settled = ctl_up_settled(c, r.members[k].server);
            agg_route_cleanup(&r);
        }
        if (!settled)
            continue; /* still waiting for another member */
        rq->held = NULL;
        rq->held_params = NULL;
        if (s)
            fn(rq, s, params);
        else
            mcp_send(rq, NULL, true);
        json_decref(params);
    }
    free(held);
}

/* ---- lists ------------------------------------------------------------------------------ */

/* Answers a list request with one page of all (consumed). */
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

static void mcp_list(mcp_rq *rq, sess *s, json_t *params, mcp_method_fn self, agg_kind kind,
                     json_t *const *lists, const char *key)
{
    agg_route r;

    if (mcp_route(rq, s, &r) < 0)
        return;
    if (mcp_settled_or_hold(rq, &r, self, params))
        mcp_page(rq, params, key, agg_list(rq->c->cfg, &r, kind, lists));
    agg_route_cleanup(&r);
}

static void m_tools_list(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_list(rq, s, params, m_tools_list, AGG_TOOLS, rq->c->lists[AGG_TOOLS], "tools");
}

static void m_prompts_list(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_list(rq, s, params, m_prompts_list, AGG_PROMPTS, rq->c->lists[AGG_PROMPTS], "prompts");
}

static void m_resources_list(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_list(rq, s, params, m_resources_list, AGG_RESOURCES, rq->c->lists[AGG_RESOURCES],
             "resources");
}

static void m_templates_list(mcp_rq *rq, sess *s, json_t *params)
{
    /* Templates are aggregated like resources: URIs unchanged. */
    mcp_list(rq, s, params, m_templates_list, AGG_RESOURCES, rq->c->templates,
             "resourceTemplates");
}

/* ---- calls to upstreams -------------------------------------------------------------------- */

static void mcp_on_progress(void *ud, json_t *params)
{
    mcp_rq *rq = ud;
    json_t *msg = json_pack("{s:s, s:s, s:O}", "jsonrpc", "2.0", "method",
                            "notifications/progress", "params", params);

    mcp_send(rq, msg, false);
    json_decref(msg);
}

static void mcp_on_upstream_answer(void *ud, json_t *result, const inst_error *err)
{
    mcp_rq *rq = ud;

    rq->up_in = NULL;
    if (rq->fail_data) {
        /* Cancelled by the hub, which knows the better answer (a missing capability). */
        json_t *data = rq->fail_data;

        rq->fail_data = NULL;
        mcp_error_data(rq, MCP26_E_MISSING_CAPABILITY, "Missing required client capability",
                       data);
        return;
    }
    if (err) {
        if (err->code == INST_E_CANCELLED && rq->silent) {
            mcp_send(rq, NULL, true);
            return;
        }
        mcp_error_data(rq, err->code, err->message, err->data ? json_incref(err->data) : NULL);
        return;
    }
    mcp_result(rq, json_incref(result));
}

/* Sends method with params (stolen) to server `server` for rq; answers errors itself. */
static void mcp_forward(mcp_rq *rq, size_t server, const char *method, json_t *params)
{
    ctl *c = rq->c;
    sess *s = sess_find(c->sessions, rq->session_id);
    /* An instance still starting holds the request until its handshake is done; a
     * perSession server's is the session's own. */
    inst *in = ctl_up_usable_for(c, s, server);
    inst_req_opts opts;
    char msg[300];
    int rc;

    if (!in) {
        json_decref(params);
        ctl_up_why_for(c, s, server, msg, sizeof msg);
        mcp_error(rq, JR_INTERNAL_ERROR, msg);
        return;
    }
    inst_req_opts_default(in, &opts);
    opts.on_progress = mcp_on_progress;
    rq->up_in = in;
    rq->up_server = server;
    rc = inst_request(in, method, params, &opts, mcp_on_upstream_answer, rq, &rq->up_handle);
    if (rc < 0) {
        rq->up_in = NULL;
        snprintf(msg, sizeof msg, "Server %.200s cannot take the request (%s)",
                 c->cfg->servers[server].name,
                 rc == -EBUSY ? "too many requests in flight" : "not running");
        mcp_error(rq, JR_INTERNAL_ERROR, msg);
    }
}

/* Maps an exposed tool or prompt name back to its server and upstream name, writes that
 * name as "name" into holder (an object inside fwd) and forwards method with fwd (stolen).
 * Unknown names are -32602 "Unknown WHAT" (": NAME" appended when show_name). */
static void mcp_forward_named(mcp_rq *rq, sess *s, agg_kind kind, const char *name,
                              const char *what, bool show_name, const char *method, json_t *fwd,
                              json_t *holder)
{
    const agg_member *m;
    const char *upstream;
    agg_route r;
    char msg[300];

    if (mcp_route(rq, s, &r) < 0) {
        json_decref(fwd);
        return;
    }
    if (agg_resolve(rq->c->cfg, &r, kind, name, &m, &upstream) < 0) {
        agg_route_cleanup(&r);
        json_decref(fwd);
        if (show_name)
            snprintf(msg, sizeof msg, "Unknown %s: %.200s", what, name);
        else
            snprintf(msg, sizeof msg, "Unknown %s", what);
        mcp_error(rq, JR_INVALID_PARAMS, msg);
        return;
    }
    json_object_set_new(holder, "name", json_string(upstream));
    mcp_forward(rq, m->server, method, fwd);
    agg_route_cleanup(&r);
}

/* tools/call and prompts/get. */
static void mcp_named(mcp_rq *rq, sess *s, json_t *params, agg_kind kind, const char *method,
                      const char *what)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    json_t *fwd;

    if (!name) {
        mcp_error(rq, JR_INVALID_PARAMS, "params.name must be a string");
        return;
    }
    fwd = json_deep_copy(params);
    mcp_forward_named(rq, s, kind, name, what, true, method, fwd, fwd);
}

static void m_tools_call(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_named(rq, s, params, AGG_TOOLS, "tools/call", "tool");
}

static void m_prompts_get(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_named(rq, s, params, AGG_PROMPTS, "prompts/get", "prompt");
}

/* Whether uri matches template (RFC 6570 level 1: literal parts in order). */
static bool mcp_template_matches(const char *tmpl, const char *uri)
{
    while (*tmpl) {
        const char *open = strchr(tmpl, '{');
        size_t lit = open ? (size_t)(open - tmpl) : strlen(tmpl);
        const char *close;

        if (strncmp(uri, tmpl, lit) != 0)
            return false;
        uri += lit;
        if (!open)
            return *uri == '\0';
        if (!(close = strchr(open, '}')))
            return false;
        tmpl = close + 1;
        /* The variable takes everything up to the next literal character. */
        if (!*tmpl) {
            return *uri != '\0';
        } else {
            const char *at = strchr(uri, *tmpl);

            if (!at || at == uri)
                return false;
            uri = at;
        }
    }
    return *uri == '\0';
}

/* The route member serving uri: a listed resource first, then a template. */
static const agg_member *mcp_resource_owner(ctl *c, const agg_route *r, const char *uri)
{
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < r->n_members; i++) {
            const agg_member *m = &r->members[i];
            json_t *list = pass == 0 ? c->lists[AGG_RESOURCES][m->server] : c->templates[m->server];
            json_t *it;
            size_t k;

            json_array_foreach(list, k, it) {
                const char *u = json_string_value(
                    json_object_get(it, pass == 0 ? "uri" : "uriTemplate"));

                if (u && (pass == 0 ? strcmp(u, uri) == 0 : mcp_template_matches(u, uri)) &&
                    agg_visible(c->cfg, r, m, AGG_RESOURCES, u))
                    return m;
            }
        }
    }
    return NULL;
}

/* resources/read, subscribe, unsubscribe: routed by URI. */
static void mcp_by_uri(mcp_rq *rq, sess *s, json_t *params, mcp_method_fn self, const char *method)
{
    const char *uri = json_string_value(json_object_get(params, "uri"));
    const agg_member *m;
    agg_route r;

    if (!uri) {
        mcp_error(rq, JR_INVALID_PARAMS, "params.uri must be a string");
        return;
    }
    if (mcp_route(rq, s, &r) < 0)
        return;
    if (!mcp_settled_or_hold(rq, &r, self, params)) {
        agg_route_cleanup(&r);
        return;
    }
    m = mcp_resource_owner(rq->c, &r, uri);
    if (!m) {
        agg_route_cleanup(&r);
        /* 2026 (SEP-2164) standardized -32602 for it; the session era keeps -32002. */
        mcp_error_data(rq, rq->stateless ? JR_INVALID_PARAMS : JR_RESOURCE_NOT_FOUND,
                       "Resource not found", json_pack("{s:s}", "uri", uri));
        return;
    }
    if (strcmp(method, "resources/subscribe") == 0) {
        mcp_sub_add(rq->c, s->id, m->server, uri, NULL);
    } else if (strcmp(method, "resources/unsubscribe") == 0) {
        for (mcp_sub **pp = &rq->c->subs; *pp; pp = &(*pp)->next) {
            if (strcmp((*pp)->session_id, s->id) == 0 && strcmp((*pp)->uri, uri) == 0) {
                mcp_sub *dead = *pp;

                *pp = dead->next;
                free(dead->uri);
                free(dead);
                break;
            }
        }
    }
    mcp_forward(rq, m->server, method, json_deep_copy(params));
    agg_route_cleanup(&r);
}

static void m_resources_read(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_by_uri(rq, s, params, m_resources_read, "resources/read");
}

static void m_resources_subscribe(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_by_uri(rq, s, params, m_resources_subscribe, "resources/subscribe");
}

static void m_resources_unsubscribe(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_by_uri(rq, s, params, m_resources_unsubscribe, "resources/unsubscribe");
}

static void m_completion_complete(mcp_rq *rq, sess *s, json_t *params)
{
    json_t *ref = json_object_get(params, "ref");
    const char *type = json_string_value(json_object_get(ref, "type"));
    json_t *fwd;

    if (type && strcmp(type, "ref/prompt") == 0) {
        const char *name = json_string_value(json_object_get(ref, "name"));

        if (!name) {
            mcp_error(rq, JR_INVALID_PARAMS, "params.ref.name must be a string");
            return;
        }
        fwd = json_deep_copy(params);
        mcp_forward_named(rq, s, AGG_PROMPTS, name, "prompt", false, "completion/complete", fwd,
                          json_object_get(fwd, "ref"));
        return;
    }
    if (type && strcmp(type, "ref/resource") == 0) {
        const char *uri = json_string_value(json_object_get(ref, "uri"));
        const agg_member *m;
        agg_route r;

        if (!uri) {
            mcp_error(rq, JR_INVALID_PARAMS, "params.ref.uri must be a string");
            return;
        }
        if (mcp_route(rq, s, &r) < 0)
            return;
        if (!mcp_settled_or_hold(rq, &r, m_completion_complete, params)) {
            agg_route_cleanup(&r);
            return;
        }
        /* A template's own URI is its name here. */
        m = NULL;
        for (size_t i = 0; i < r.n_members && !m; i++) {
            json_t *it;
            size_t k;

            json_array_foreach(rq->c->templates[r.members[i].server], k, it) {
                const char *u = json_string_value(json_object_get(it, "uriTemplate"));

                if (u && strcmp(u, uri) == 0) {
                    m = &r.members[i];
                    break;
                }
            }
        }
        if (!m)
            m = mcp_resource_owner(rq->c, &r, uri);
        if (!m) {
            agg_route_cleanup(&r);
            mcp_error(rq, JR_INVALID_PARAMS, "Unknown resource");
            return;
        }
        mcp_forward(rq, m->server, "completion/complete", json_deep_copy(params));
        agg_route_cleanup(&r);
        return;
    }
    mcp_error(rq, JR_INVALID_PARAMS, "params.ref must be a ref/prompt or ref/resource");
}

static void m_ping(mcp_rq *rq, sess *s, json_t *params)
{
    mcp_result(rq, json_object());
}

static void m_logging_set_level(mcp_rq *rq, sess *s, json_t *params)
{
    agg_route r;

    if (!json_is_string(json_object_get(params, "level"))) {
        mcp_error(rq, JR_INVALID_PARAMS, "params.level must be a string");
        return;
    }
    /* Every member that logs gets the level; the answer does not wait for them. */
    if (agg_route_resolve(rq->c->cfg, s->route, &r) == 0) {
        for (size_t i = 0; i < r.n_members; i++) {
            inst *in = ctl_up_ready_for(rq->c, s, r.members[i].server);

            if (in && json_object_get(inst_server_capabilities(in), "logging"))
                inst_request(in, "logging/setLevel", json_deep_copy(params), NULL,
                             mcp_ignore_answer, NULL, NULL);
        }
        agg_route_cleanup(&r);
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

/* 2026: what the hub is, as one result (the stateless replacement of initialize). */
static void m_server_discover(mcp_rq *rq, sess *s, json_t *params)
{
    if (!rq->stateless) {
        mcp_error(rq, JR_METHOD_NOT_FOUND, "Method not found");
        return;
    }
    mcp_result(rq, json_pack("{s:[s], s:{s:{s:b}, s:{s:b}, s:{s:b, s:b}, s:{}, s:{}}}",
                             "supportedVersions", MCP26_VERSION, "capabilities", "tools",
                             "listChanged", 1, "prompts", "listChanged", 1, "resources",
                             "subscribe", 1, "listChanged", 1, "logging", "completions"));
}

/* The notifications a listen stream may ask for, by agg_kind. */
static const char *const mcp_listen_keys[] = {"toolsListChanged", "promptsListChanged",
                                              "resourcesListChanged"};

/* listen's resourceSubscriptions: subscribes rq to the resources of uris (an array of
 * strings) whose server takes subscriptions, on the instance that serves rq's scope, and
 * returns those URIs (the rest are left out of the acknowledgement). */
static json_t *mcp_listen_resources(mcp_rq *rq, sess *s, const agg_route *r, json_t *uris)
{
    ctl *c = rq->c;
    json_t *honored = json_array();
    size_t i;
    json_t *v;

    json_array_foreach(uris, i, v) {
        const char *uri = json_string_value(v);
        const agg_member *m = mcp_resource_owner(c, r, uri);
        inst *in;
        bool again = false;

        for (size_t k = 0; k < json_array_size(honored) && !again; k++)
            again = strcmp(json_string_value(json_array_get(honored, k)), uri) == 0;
        if (again || !m || !ctl_up_can_subscribe(c, m->server) ||
            !(in = ctl_up_usable_for(c, s, m->server)))
            continue;
        mcp_sub_add(c, s->id, m->server, uri, rq);
        /* Upstream may already have it from another subscriber: subscribing twice is
         * harmless, and the last one gone unsubscribes (mcp_sub_drop). */
        inst_request(in, "resources/subscribe", json_pack("{s:s}", "uri", uri), NULL,
                     mcp_ignore_answer, NULL, NULL);
        json_array_append(honored, v);
    }
    return honored;
}

/* 2026: a stream of list_changed notifications (what the GET stream was) and resource
 * updates (what resources/subscribe gave), open until the client closes it. The first
 * message acknowledges what it will carry. */
static void m_subscriptions_listen(mcp_rq *rq, sess *s, json_t *params)
{
    json_t *want = json_object_get(params, "notifications");
    json_t *uris = json_object_get(want, "resourceSubscriptions");
    json_t *honored, *ack;
    agg_route r;
    size_t i;
    json_t *v;
    bool bad;

    if (!rq->stateless) {
        mcp_error(rq, JR_METHOD_NOT_FOUND, "Method not found");
        return;
    }
    if (!json_is_object(want)) {
        mcp_error(rq, JR_INVALID_PARAMS, "params.notifications must be an object");
        return;
    }
    bad = uris && !json_is_array(uris);
    json_array_foreach(uris, i, v)
        bad = bad || !json_is_string(v);
    if (bad) {
        mcp_error(rq, JR_INVALID_PARAMS,
                  "params.notifications.resourceSubscriptions must be an array of strings");
        return;
    }
    honored = json_object();
    if (json_array_size(uris) > 0) {
        /* Which member owns each URI comes from the lists: wait until they are known. */
        if (mcp_route(rq, s, &r) < 0) {
            json_decref(honored);
            return;
        }
        if (!mcp_settled_or_hold(rq, &r, m_subscriptions_listen, params)) {
            agg_route_cleanup(&r);
            json_decref(honored);
            return;
        }
        json_object_set_new(honored, "resourceSubscriptions",
                            mcp_listen_resources(rq, s, &r, uris));
        agg_route_cleanup(&r);
        if (json_array_size(json_object_get(honored, "resourceSubscriptions")) > 0)
            rq->listen_mask |= MCP_LISTEN_RESOURCES;
        else
            json_object_del(honored, "resourceSubscriptions");
    }
    for (int k = 0; k < 3; k++) {
        if (json_is_true(json_object_get(want, mcp_listen_keys[k]))) {
            rq->listen_mask |= 1u << k;
            json_object_set_new(honored, mcp_listen_keys[k], json_true());
        }
    }
    ack = json_pack("{s:s, s:s, s:{s:o, s:{s:O}}}", "jsonrpc", "2.0", "method",
                    "notifications/subscriptions/acknowledged", "params", "notifications",
                    honored, "_meta", MCP26_META_SUBSCRIPTION, rq->id);
    mcp_send(rq, ack, false);
    json_decref(ack);
    if (!rq->listen_mask) {
        mcp_result(rq, json_pack("{s:{s:O}}", "_meta", MCP26_META_SUBSCRIPTION,
                                 rq->id));
        return;
    }
    log_debug("listening", "session=%s mask=%u", s->id, rq->listen_mask);
}

/* The list_changed notification of each agg_kind. */
static const char *const mcp_changed[] = {"notifications/tools/list_changed",
                                          "notifications/prompts/list_changed",
                                          "notifications/resources/list_changed"};

/* Sends list_changed of kind to every listen stream that asked for it and whose session
 * pick(c, s, arg) accepts: one pass over the running requests, whatever the sessions. */
static void mcp_notify_listeners(ctl *c, int kind, bool (*pick)(ctl *c, sess *s, void *arg),
                                 void *arg)
{
    for (mcp_rq *rq = c->running; rq; rq = rq->next) {
        sess *s;
        json_t *msg;

        if (!(rq->listen_mask & (1u << kind)) ||
            !(s = sess_find(c->sessions, rq->session_id)) || !pick(c, s, arg))
            continue;
        msg = json_pack("{s:s, s:s, s:{s:{s:O}}}", "jsonrpc", "2.0", "method", mcp_changed[kind],
                        "params", "_meta", MCP26_META_SUBSCRIPTION, rq->id);
        mcp_send(rq, msg, false); /* not final: rq stays in the list */
        json_decref(msg);
    }
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
    {"resources/subscribe", m_resources_subscribe},
    {"resources/unsubscribe", m_resources_unsubscribe},
    {"completion/complete", m_completion_complete},
    {"logging/setLevel", m_logging_set_level},
    {"server/discover", m_server_discover},
    {"subscriptions/listen", m_subscriptions_listen},
};

/* ---- entry points ------------------------------------------------------------------------ */

static void mcp_on_call_cancelled(ctl *c, rpc_call *call, void *arg)
{
    ctl_mcp_call_cancelled(c, (uintptr_t)arg);
}

/* Completion-queue thread: the client of a running request went away. */
static void mcp_call_cancel_cb(rpc_call *call, void *ud)
{
    ctl_post(ud, mcp_on_call_cancelled, NULL, (void *)rpc_call_data(call));
}

/* The park id a 'B' requestState body names: the digits mcp_park wrote (no sign, space or
 * leading zero, within 64 bits). Returns false for anything else, which names no request. */
static bool mcp_park_id_parse(const char *body, uint64_t *id)
{
    unsigned long long v;
    char *end;

    if (body[0] < '1' || body[0] > '9')
        return false;
    for (const char *d = body; *d; d++)
        if (*d < '0' || *d > '9')
            return false;
    errno = 0;
    v = strtoull(body, &end, 10);
    if (errno == ERANGE || *end)
        return false;
    *id = (uint64_t)v;
    return true;
}

/* A stateless request: what its _meta declares, the revision's methods, and a requestState
 * (a parked request to resume, or an upstream's own state to unwrap into params, borrowed
 * and changed in place). Returns 0 to go on, or -1 when rq was answered or handed over. */
static int mcp_stateless_begin(mcp_rq *rq, sess *s, const char *method, json_t *params)
{
    json_t *meta = json_object_get(params, "_meta");
    json_t *caps = json_object_get(meta, MCP26_META_CAPS);
    json_t *state = json_object_get(params, "requestState");
    char kind = 0;
    char *body = NULL;
    uint64_t park_id;
    bool named;

    rq->stateless = true;
    rq->caps = json_is_object(caps) ? json_incref(caps) : json_object();
    rq->log_level =
        mcp26_log_level(json_string_value(json_object_get(meta, MCP26_META_LOG_LEVEL)));
    if (!mcp26_method_known(method)) {
        mcp_error(rq, JR_METHOD_NOT_FOUND, "Method not found");
        return -1;
    }
    if (!state || (strcmp(method, "tools/call") != 0 && strcmp(method, "prompts/get") != 0 &&
                   strcmp(method, "resources/read") != 0))
        return 0;
    if (!json_is_string(state) ||
        mcp_state_open(rq->c, json_string_value(state), s->id, &kind, &body) < 0) {
        mcp_error(rq, JR_INVALID_PARAMS,
                  "Invalid params: requestState was not issued by this hub to this client");
        return -1;
    }
    if (kind == 'P') {
        json_object_set_new(params, "requestState", json_string(body));
        free(body);
        return 0;
    }
    named = mcp_park_id_parse(body, &park_id);
    free(body);
    for (mcp_rq *p = rq->c->running; p && named; p = p->next) {
        if (p->parked && p->park_id == park_id && strcmp(p->session_id, s->id) == 0 &&
            strcmp(p->method, method) == 0) {
            mcp_resume(rq, p, s, params);
            return -1;
        }
    }
    mcp_error(rq, JR_INVALID_PARAMS,
              "Invalid params: the request this requestState continues is gone (finished, "
              "expired, or control restarted)");
    return -1;
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
    rq->started_ms = rpc_now_ms();
    log_debug("request", "session=%s stream=%s method=%s", s->id, rq->stream_id,
              method ? method : "?");
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
    snprintf(rq->method, sizeof rq->method, "%s", method);
    rq->log_level = -1;
    if (params && !json_is_object(params)) {
        mcp_error(rq, JR_INVALID_PARAMS, "params must be an object");
        return;
    }
    if (s->era == SESS_STATELESS && mcp_stateless_begin(rq, s, method, params) < 0)
        return;
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

/* Ends rq on the client's behalf: cancels its upstream request, answers nothing. */
static void mcp_rq_abandon(mcp_rq *rq, const char *reason)
{
    rq->silent = true;
    if (rq->up_in) {
        /* The upstream answer callback runs inside and ends rq. */
        inst_cancel(rq->up_in, rq->up_handle, reason);
        return;
    }
    mcp_send(rq, NULL, true);
}

static void mcp_client_response(ctl *c, sess *s, json_t *msg)
{
    const char *hub_id = json_string_value(json_object_get(msg, "id"));
    json_t *result = json_object_get(msg, "result");
    json_t *error = json_object_get(msg, "error");
    mcp_pending **pp;

    if (!hub_id || !(pp = mcp_pending_find(c, hub_id, s->id)))
        return;
    /* A response with neither result nor error answers with an empty error object. */
    mcp_pending_settle(c, pp, result ? json_incref(result) : NULL,
                       result ? NULL : error ? json_incref(error) : json_object());
}

void ctl_mcp_client_message(ctl *c, sess *s, json_t *msg)
{
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *params = json_object_get(msg, "params");

    if (!method) {
        mcp_client_response(c, s, msg);
        return;
    }
    if (strcmp(method, "notifications/initialized") == 0) {
        s->initialized = true;
    } else if (strcmp(method, "notifications/cancelled") == 0) {
        json_t *target = json_object_get(params, "requestId");
        const char *reason = json_string_value(json_object_get(params, "reason"));

        for (mcp_rq *rq = c->running; rq; rq = rq->next) {
            if (strcmp(rq->session_id, s->id) == 0 && json_equal(rq->id, target)) {
                mcp_rq_abandon(rq, reason ? reason : "cancelled by the client");
                break;
            }
        }
    }
    /* roots/list_changed concerns per-session instances, which come later. */
}

/* perSession servers on the session's route written with "startOnDemand": false start
 * their instance for the session now, not at its first use. */
static void mcp_start_eager(ctl *c, sess *s)
{
    agg_route r;

    if (agg_route_resolve(c->cfg, s->route, &r) < 0)
        return;
    for (size_t i = 0; i < r.n_members; i++) {
        const cfg_server *srv = &c->cfg->servers[r.members[i].server];
        json_t *sod = json_object_get(srv->json, "startOnDemand");

        if (srv->per_session && json_is_false(sod))
            (void)ctl_up_usable_for(c, s, r.members[i].server);
    }
    agg_route_cleanup(&r);
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
    mcp_start_eager(c, s);
    return json_pack("{s:s, s:O, s:{s:s, s:{s:{s:b}, s:{s:b}, s:{s:b, s:b}, s:{}, s:{}}, "
                     "s:o}}",
                     "jsonrpc", "2.0", "id", id, "result", "protocolVersion", version,
                     "capabilities", "tools", "listChanged", 1, "prompts", "listChanged", 1,
                     "resources", "subscribe", 1, "listChanged", 1, "logging", "completions",
                     "serverInfo", mcp_server_info());
}

void ctl_mcp_session_ended(ctl *c, sess *s)
{
    mcp_rq *next;

    for (mcp_rq *rq = c->running; rq; rq = next) {
        next = rq->next;
        if (strcmp(rq->session_id, s->id) != 0)
            continue;
        rq->session_gone = true;
        mcp_rq_abandon(rq, "session ended");
        next = c->running; /* the list changed under us: start over */
    }
    for (mcp_pending **pp = &c->pending; *pp;) {
        if (strcmp((*pp)->session_id, s->id) != 0) {
            pp = &(*pp)->next;
            continue;
        }
        mcp_pending_settle(c, pp, NULL,
                           json_pack("{s:i, s:s}", "code", JR_INTERNAL_ERROR, "message",
                                     "session ended"));
    }
    for (mcp_sub **pp = &c->subs; *pp;) {
        if (strcmp((*pp)->session_id, s->id) == 0)
            mcp_sub_drop(c, pp);
        else
            pp = &(*pp)->next;
    }
}

void ctl_mcp_cleanup(ctl *c)
{
    while (c->running) {
        if (c->running->call)
            rpc_call_finish(c->running->call, GRPC_STATUS_UNAVAILABLE, "control stopped");
        mcp_rq_free(c->running);
    }
    while (c->pending)
        mcp_pending_forget(c, &c->pending);
    while (c->subs) {
        mcp_sub *sub = c->subs;

        c->subs = sub->next;
        free(sub->uri);
        free(sub);
    }
}

void ctl_mcp_call_cancelled(ctl *c, uintptr_t serial)
{
    for (mcp_rq *rq = c->running; rq; rq = rq->next) {
        if (rq->call && rq->serial == serial) {
            mcp_rq_abandon(rq, "the client went away");
            return;
        }
    }
}

/* ---- upstream events ------------------------------------------------------------------- */

void ctl_mcp_upstream_gone(ctl *c, size_t server)
{
    /* Requests waiting for its lists go on without them. */
    ctl_mcp_upstream_settled(c, server);
}

/* Which sessions an upstream's list change concerns: owner's only, when a per-session
 * instance changed; else those whose route has the server (decided once per route). */
typedef struct {
    sess *owner;
    size_t server;
    json_t *has; /* route -> whether server is one of its members */
} mcp_change_scope;

static bool mcp_change_concerns(ctl *c, sess *s, void *arg)
{
    mcp_change_scope *cs = arg;
    json_t *known;

    if (cs->owner && s != cs->owner)
        return false;
    if (!(known = json_object_get(cs->has, s->route))) {
        known = json_boolean(mcp_route_has(c, s, cs->server));
        json_object_set_new(cs->has, s->route, known);
    }
    return json_is_true(known);
}

void ctl_mcp_list_changed(ctl *c, size_t server, sess *owner, int kind)
{
    json_t *msg = json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", mcp_changed[kind]);
    mcp_change_scope cs = {owner, server, json_object()};
    size_t pos = 0;
    sess *s;

    while (sess_next(c->sessions, &pos, &s))
        if (s->stream_id && mcp_change_concerns(c, s, &cs))
            ctl_mcp_push(c, s, msg);
    mcp_notify_listeners(c, kind, mcp_change_concerns, &cs);
    json_decref(cs.has);
    json_decref(msg);
}

/* The most recent running request that is waiting on instance in. */
static mcp_rq *mcp_caller(ctl *c, const inst *in)
{
    mcp_rq *best = NULL;

    for (mcp_rq *rq = c->running; rq; rq = rq->next)
        if (rq->up_in == in && (!best || rq->started_ms >= best->started_ms))
            best = rq;
    return best;
}

void ctl_mcp_upstream_notification(ctl *c, size_t server, inst *in, sess *owner,
                                   const char *method, json_t *params)
{
    json_t *msg = json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", method);
    mcp_rq *rq;

    /* A copy: the request id inside may be rewritten, and params belong to the instance. */
    if (params)
        json_object_set_new(msg, "params", json_deep_copy(params));
    if (strcmp(method, "notifications/resources/updated") == 0) {
        const char *uri = json_string_value(json_object_get(params, "uri"));

        for (mcp_sub *sub = c->subs; sub && uri; sub = sub->next) {
            sess *s;

            /* A per-session instance's updates are for its own session only. */
            if (sub->server != server || strcmp(sub->uri, uri) != 0 ||
                (owner && strcmp(sub->session_id, owner->id) != 0))
                continue;
            if (sub->listen) {
                /* On the listen stream, under its subscription id. */
                json_t *one = json_deep_copy(msg);

                json_object_set_new(json_object_get(one, "params"), "_meta",
                                    json_pack("{s:O}", MCP26_META_SUBSCRIPTION, sub->listen->id));
                mcp_send(sub->listen, one, false);
                json_decref(one);
            } else if ((s = sess_find(c->sessions, sub->session_id))) {
                ctl_mcp_push(c, s, msg);
            }
        }
    } else if ((rq = mcp_caller(c, in)) != NULL) {
        /* Logging and other notifications during a call belong to the caller's stream; a
         * shared instance cannot say which caller, so the newest call gets them. */
        if (strcmp(method, "notifications/cancelled") == 0) {
            /* upstream withdrew one of its own requests: tell the client under our id */
            json_t *up_id = json_object_get(params, "requestId");

            for (mcp_pending **pp = &c->pending; *pp; pp = &(*pp)->next) {
                mcp_pending *p = *pp;

                if (p->server == server && json_equal(p->upstream_id, up_id)) {
                    json_object_set_new(json_object_get(msg, "params"), "requestId",
                                        json_string(p->hub_id));
                    /* A stateless client was asked in an input_required, not on a stream:
                     * the question only leaves what its next round is asked. */
                    if (!mcp_pending_forget(c, pp))
                        mcp_send(rq, msg, false);
                    break;
                }
            }
        } else if (rq->stateless && strcmp(method, "notifications/message") == 0) {
            /* 2026: log messages only when the request asked, at or above its level. */
            int level = mcp26_log_level(json_string_value(json_object_get(params, "level")));

            if (rq->log_level >= 0 && level >= rq->log_level)
                mcp_send(rq, msg, false);
        } else {
            mcp_send(rq, msg, false);
        }
    } else if (owner && owner->stream_id) {
        /* Outside any call a per-session instance still knows its session: its stream. */
        ctl_mcp_push(c, owner, msg);
    } else {
        log_debug("upstream notification dropped", "server=%s method=%s",
                  c->cfg->servers[server].name, method);
    }
    json_decref(msg);
}

/* Records that upstream request id (borrowed) of instance in waits for session s's client,
 * under a new hub id; the list owns it. */
static mcp_pending *mcp_pending_new(ctl *c, sess *s, size_t server, inst *in, json_t *id)
{
    mcp_pending *p = calloc(1, sizeof *p);

    if (!p)
        abort();
    snprintf(p->hub_id, sizeof p->hub_id, "hub-%" PRIu64, ++c->pending_serial);
    snprintf(p->session_id, sizeof p->session_id, "%s", s->id);
    p->server = server;
    p->in = in;
    p->upstream_id = json_incref(id);
    p->next = c->pending;
    c->pending = p;
    return p;
}

/* Ends rq's Gateway call with input_required: what its upstream asked that the client has
 * not answered yet, and a sealed requestState naming rq. rq stays, parked, its upstream
 * call still running, until the client's retry (or MCP_PARK_TTL_MS). */
static void mcp_park(mcp_rq *rq, sess *s)
{
    char id[24];
    char *token;
    json_t *result, *msg;

    if (!rq->park_id)
        rq->park_id = ++rq->c->park_serial;
    snprintf(id, sizeof id, "%" PRIu64, rq->park_id);
    token = mcp_state_seal(rq->c, 'B', s->id, id, strlen(id));
    result = json_pack("{s:s, s:O, s:s, s:{s:o}}", "resultType", "input_required",
                       "inputRequests", rq->inputs, "requestState", token, "_meta",
                       MCP26_META_SERVER_INFO, mcp_server_info());
    free(token);
    msg = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", rq->id, "result", result);
    mcp_stream_send(rq, s, msg, true); /* ends the call */
    json_decref(msg);
    rq->call = NULL;
    rq->serial = 0;
    rq->parked = true;
    rq->parked_ms = rpc_now_ms();
    log_debug("request parked for input", "session=%s park=%s inputs=%zu", s->id, id,
              json_object_size(rq->inputs));
}

/* An upstream's sampling, elicitation or roots request during the call of a stateless
 * client that declared the capability: there is no stream to ask on, so the request joins
 * rq's inputs and the call ends with input_required (unless it is parked already: then the
 * next round has it). */
static void mcp_input_required(ctl *c, mcp_rq *rq, sess *s, size_t server, inst *in,
                               json_t *id, const char *method, json_t *params)
{
    mcp_pending *p;
    json_t *req;

    p = mcp_pending_new(c, s, server, in, id);
    req = json_pack("{s:s}", "method", method);
    json_object_set_new(req, "params", params ? json_incref(params) : json_object());
    if (!rq->inputs)
        rq->inputs = json_object();
    json_object_set_new(rq->inputs, p->hub_id, req);
    if (!rq->parked && rq->call)
        mcp_park(rq, s);
}

/* A stateless retry whose requestState names parked request p: the retry's call, id and
 * stream become p's (rq, the retry's own request, is dropped without an answer), the
 * client's inputResponses go to the upstream requests they answer, and p goes on: its
 * final answer if it came meanwhile, input_required again if inputs are still missing,
 * else it waits for its upstream. */
static void mcp_resume(mcp_rq *rq, mcp_rq *p, sess *s, json_t *params)
{
    json_t *responses = json_object_get(params, "inputResponses");
    const char *key;
    json_t *value;
    void *tmp;

    p->call = rq->call;
    p->serial = rq->serial;
    json_decref(p->id);
    p->id = json_incref(rq->id);
    free(p->stream_id);
    if (!(p->stream_id = strdup(rq->stream_id)))
        abort();
    json_decref(p->caps);
    p->caps = json_incref(rq->caps);
    p->log_level = rq->log_level;
    p->sent = 0;
    p->parked = false;
    rq->call = NULL;
    if (s->running > 0)
        s->running--; /* the retry was counted; p still is */
    mcp_rq_free(rq);
    json_object_foreach_safe(p->inputs, tmp, key, value) {
        json_t *answer = json_object_get(responses, key);
        mcp_pending **pp;

        if (!json_is_object(answer))
            continue; /* still missing: asked again below */
        /* Every input has its pending request (forgetting one takes it out of the inputs),
         * recorded for p's own session; settling it takes key out of p->inputs, and key
         * then points at freed memory. */
        if ((pp = mcp_pending_find(p->c, key, p->session_id)))
            mcp_pending_settle(p->c, pp, json_incref(answer), NULL);
    }
    if (p->early) {
        json_t *msg = p->early;

        p->early = NULL;
        json_object_set(msg, "id", p->id);
        mcp_send(p, msg, true);
        json_decref(msg);
    } else if (json_object_size(p->inputs) > 0) {
        mcp_park(p, s);
    }
}

void ctl_mcp_expire_parked(ctl *c)
{
    int64_t now = rpc_now_ms();
    mcp_rq *rq;

again:
    for (rq = c->running; rq; rq = rq->next) {
        if (!rq->parked || now - rq->parked_ms < MCP_PARK_TTL_MS)
            continue;
        log_info("parked request expired", "session=%s", rq->session_id);
        rq->parked = false;
        mcp_rq_abandon(rq, "the client did not retry in time");
        goto again; /* the list changed under us */
    }
}

void ctl_mcp_upstream_request(ctl *c, size_t server, inst *in, sess *owner, json_t *id,
                              const char *method, json_t *params)
{
    mcp_rq *rq = mcp_caller(c, in);
    /* The call that caused it names the session (for a per-session instance, its owner). */
    sess *s = rq ? sess_find(c->sessions, rq->session_id) : NULL;
    const char *need = strcmp(method, "sampling/createMessage") == 0 ? "sampling"
                       : strcmp(method, "elicitation/create") == 0 ? "elicitation"
                       : strcmp(method, "roots/list") == 0        ? "roots"
                                                                  : NULL;
    mcp_pending *p;
    json_t *msg;

    (void)owner;
    if (!need) {
        inst_respond(in, id, NULL,
                     json_pack("{s:i, s:s}", "code", JR_METHOD_NOT_FOUND, "message", "Method not found"));
        return;
    }
    /* A stateless client declares its capabilities with each request. */
    if (!rq || !s || !json_object_get(rq->stateless ? rq->caps : s->client_caps, need)) {
        inst_respond(in, id, NULL,
                     json_pack("{s:i, s:s}", "code", JR_INVALID_REQUEST, "message",
                               rq ? "the client does not support this request"
                                  : "no client call is waiting on this server"));
        /* 2026: the client's call ends with -32021 naming what it lacks. */
        if (rq && s && rq->stateless && !rq->parked && rq->up_in) {
            rq->fail_data = json_pack("{s:{s:{}}}", "requiredCapabilities", need);
            inst_cancel(rq->up_in, rq->up_handle, "the client lacks a required capability");
        }
        return;
    }
    if (rq->stateless) {
        mcp_input_required(c, rq, s, server, in, id, method, params);
        return;
    }
    p = mcp_pending_new(c, s, server, in, id);
    msg = json_pack("{s:s, s:s, s:s}", "jsonrpc", "2.0", "id", p->hub_id, "method", method);
    if (params)
        json_object_set(msg, "params", params);
    mcp_send(rq, msg, false);
    json_decref(msg);
}

/* ---- reload ------------------------------------------------------------------------------ */

/* Session ids with a listen stream open for list changes, as a set (a new JSON object). */
static json_t *mcp_listening(ctl *c)
{
    json_t *set = json_object();

    for (mcp_rq *rq = c->running; rq; rq = rq->next)
        if (rq->listen_mask & ~MCP_LISTEN_RESOURCES)
            json_object_set_new(set, rq->session_id, json_true());
    return set;
}

json_t *ctl_mcp_visible(ctl *c)
{
    json_t *routes = json_object();
    json_t *listening = mcp_listening(c);
    size_t pos = 0;
    sess *s;

    /* The lists once per route, however many sessions share it: a reload with thousands of
     * sessions must not copy every list for each of them. */
    while (sess_next(c->sessions, &pos, &s)) {
        json_t *lists;
        agg_route r;

        if (!s->stream_id && !json_object_get(listening, s->id))
            continue; /* nobody to tell, now or on a resume */
        if (json_object_get(routes, s->route))
            continue;
        lists = json_array();
        if (agg_route_resolve(c->cfg, s->route, &r) == 0) {
            for (int k = 0; k < 3; k++)
                json_array_append_new(lists, agg_list(c->cfg, &r, (agg_kind)k, c->lists[k]));
            agg_route_cleanup(&r);
        }
        json_object_set_new(routes, s->route, lists);
    }
    json_decref(listening);
    return routes;
}

/* A reload's changes: masks maps a route to the bits (1 << kind) of its lists that changed. */
typedef struct {
    json_t *masks;
    int kind;
} mcp_reload_change;

static bool mcp_reload_changed(ctl *c, sess *s, void *arg)
{
    const mcp_reload_change *rc = arg;

    (void)c;
    return json_integer_value(json_object_get(rc->masks, s->route)) & (1 << rc->kind);
}

void ctl_mcp_announce_changes(ctl *c, json_t *before)
{
    json_t *after = ctl_mcp_visible(c);
    json_t *masks = json_object();
    const char *route;
    json_t *now, *msgs[3];
    size_t pos = 0;
    sess *s;

    /* Which lists changed, once per route. */
    json_object_foreach(after, route, now) {
        json_t *then = json_object_get(before, route);
        int mask = 0;

        for (int k = 0; k < 3; k++)
            if (!json_equal(json_array_get(then, (size_t)k), json_array_get(now, (size_t)k)))
                mask |= 1 << k;
        json_object_set_new(masks, route, json_integer(mask));
    }
    for (int k = 0; k < 3; k++)
        msgs[k] = json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", mcp_changed[k]);
    /* Sessions with a stream, in one walk: each changed list of its route, in kind order. */
    while (sess_next(c->sessions, &pos, &s)) {
        int mask = s->stream_id ? (int)json_integer_value(json_object_get(masks, s->route)) : 0;

        for (int k = 0; k < 3; k++)
            if (mask & (1 << k))
                ctl_mcp_push(c, s, msgs[k]);
    }
    /* Stateless listeners: each kind's notification names the listen it belongs to. */
    for (int k = 0; k < 3; k++) {
        mcp_reload_change rc = {masks, k};

        mcp_notify_listeners(c, k, mcp_reload_changed, &rc);
        json_decref(msgs[k]);
    }
    json_decref(masks);
    json_decref(after);
}

void ctl_mcp_remap(ctl *c, const size_t *map, size_t n_old)
{
    for (mcp_rq *rq = c->running; rq; rq = rq->next) {
        if (!rq->up_in)
            continue;
        if (rq->up_server >= n_old || map[rq->up_server] == SIZE_MAX)
            rq->up_in = NULL; /* cannot happen: the instance was stopped, failing the call */
        else
            rq->up_server = map[rq->up_server];
    }
    for (mcp_pending **pp = &c->pending; *pp;) {
        mcp_pending *p = *pp;

        if (p->server < n_old && map[p->server] != SIZE_MAX) {
            p->server = map[p->server];
            pp = &p->next;
            continue;
        }
        mcp_pending_forget(c, pp);
    }
    for (mcp_sub **pp = &c->subs; *pp;) {
        mcp_sub *sub = *pp;

        if (sub->server < n_old && map[sub->server] != SIZE_MAX) {
            sub->server = map[sub->server];
            pp = &sub->next;
            continue;
        }
        *pp = sub->next;
        free(sub->uri);
        free(sub);
    }
}
