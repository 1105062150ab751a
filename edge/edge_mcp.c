/* edge_mcp: the MCP HTTP transports (see edge_mcp.h).
 *
 * One client HTTP request is one mcp_req. libmicrohttpd's thread (the daemon thread) runs
 * the handler: it checks the request with mcp_rules, accumulates the body, starts the
 * Gateway calls and parks the connection. The rpc client's polling thread runs the calls'
 * callbacks: they record what arrived in the mcp_req (under its lock) and unpark it; the
 * handler then runs again and answers, or for SSE the content reader drains the request's
 * bounded output buffer and parks itself when it is empty. Nothing here waits on the
 * network. Streams of a session (GET /mcp, /sse, and POST answers) sit in a registry keyed
 * by session id, so that Subscribe events find them and a heartbeat thread keeps them alive.
 *
 * Lifetime: an mcp_req is reference counted: one reference for libmicrohttpd (dropped in the
 * release callback), one per Gateway call in flight (dropped when its callback returns), one
 * for an SSE response (dropped when libmicrohttpd frees it), and short ones taken under the
 * registry lock. Lock order: edge_mcp.mu, then mcp_req.mu, then edge_mcp.cli_mu and the
 * HTTP server's own lock. */
#include "edge_mcp.h"

#include "edge_sse.h"
#include "ids.h"
#include "jr.h"
#include "log.h"
#include "mcp_rules.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MCP_TRACEPARENT_LEN 55 /* "00-<32 hex>-<16 hex>-<2 hex>" */
#define MCP_TRACESTATE_MAX 512
#define MCP_BUCKETS 1024            /* registry hash buckets */
#define MCP_STREAM_ID_BYTES 12      /* random bytes of a stream id (16 base64url chars) */
#define MCP_STREAM_ID_MAX 40
#define MCP_SSE_BLOCK 4096          /* content reader block size (held per open stream) */
#define MCP_RETRY_AFTER "1"         /* seconds, on 503 and 429 */
#define MCP_OPEN_TIMEOUT_MS 120000  /* OpenSession may start per-session upstream servers */
#define MCP_UNARY_TIMEOUT_MS 30000  /* Post, EndSession */
#define MCP_ATTACH_TIMEOUT_MS 10000
#define MCP_DETACH_TIMEOUT_MS 5000
#define MCP_ERROR_TEXT 200          /* bytes of an error message we answer */
#define MCP_BODY_DISCARD (1u << 20) /* bytes of an oversized body read only to answer 413 */

/* ---- settings ----------------------------------------------------------------------- */

/* An immutable snapshot of control's EdgeSettings, shared by reference. */
typedef struct {
    int refs;         /* atomic */
    mcp_rules_cfg cfg; /* points into the arrays below */
    char **origins;
    size_t n_origins;
    char **hosts;
    size_t n_hosts;
    char **routes;
    size_t n_routes;
    char *auth_header; /* header carrying the bearer token */
} mcp_settings;

/* ---- requests ----------------------------------------------------------------------- */

typedef struct mcp_req mcp_req;

/* One Gateway call of a request. */
typedef struct {
    mcp_req *r;
    size_t index;       /* the message it carries (REQUESTS, MESSAGES) */
    bool stream;        /* a Request stream; else unary */
    bool request;       /* counts toward the answer (a client request) */
    rpc_stream *st;     /* stream: valid until closed */
    bool closed;        /* its callback (or on_close) ran */
    bool final;         /* its answer arrived (or an error answer was written for it) */
    char *final_json;   /* owned: the answer, kept while JSON or SSE is undecided */
    int final_code;     /* that answer's JSON-RPC error code, 0 for a result */
    char *final_event;  /* owned: that answer's event id */
    char *msg_json;     /* owned: the message text sent (batch elements) */
    char stream_id[MCP_STREAM_ID_MAX];
} mcp_call;

typedef enum {
    RQ_BODY,      /* reading a POST body */
    RQ_CALLING,   /* Gateway calls running, connection parked */
    RQ_STREAMING, /* SSE response queued, content reader draining `out` */
    RQ_ANSWERED,  /* a complete response was queued */
} rq_phase;

typedef enum {
    ANS_NONE,  /* not known yet */
    ANS_ERROR, /* status + JSON-RPC error body */
    ANS_JSON,  /* 200 + json */
    ANS_EMPTY, /* status without a body (202, 200) */
    ANS_SSE,   /* 200 + text/event-stream from `out` */
} rq_answer;

struct mcp_req {
    edge_http_state base; /* first: libmicrohttpd's per-request state */
    edge_http_parked parked;
    edge_mcp *m;
    edge_http *http;
    struct MHD_Connection *conn;
    int refs; /* atomic */
    pthread_mutex_t mu;

    /* Set on the daemon thread before any call starts; read-only afterwards. */
    mcp_op op;
    mcp_settings *set; /* reference */
    char route[MCP_ROUTE_MAX + 1];
    char version[16];
    unsigned vflags;
    bool stateless;    /* a 2026-07-28 request: no session */
    bool listen;       /* its subscriptions/listen: a standalone stream in all but name */
    char scope[MCP_SCOPE_MAX + 1]; /* its scope, "" for none */
    char *token;       /* owned: the bearer token, when bearer auth is on */
    char *last_event_id;
    char stream_id[MCP_STREAM_ID_MAX];
    char traceparent[MCP_TRACEPARENT_LEN + 1]; /* W3C trace context, "" when absent or bad */
    char tracestate[MCP_TRACESTATE_MAX + 1];
    char *body;        /* owned, NUL-terminated */
    size_t body_len, body_cap;
    bool body_over;    /* past the limit: the rest is counted and dropped */
    jr_body *jb;       /* owned: the parsed body */
    json_t *err_id;    /* owned: the id for error answers (single request), or NULL */
    mcp_call *calls;   /* owned, ncalls entries, never reallocated */
    size_t ncalls;
    size_t nrequests;  /* calls with request set */
    bool counted;      /* counts in m->nstreams */
    rq_phase phase;    /* daemon thread only */

    /* Metrics; daemon thread only. */
    int64_t mx_t0;             /* edge_metrics_now_ns() at the first handler call */
    unsigned mx_method;        /* EM_METHOD_* label */
    em_transport mx_transport;
    bool mx_counted;           /* its answer was counted */
    em_stream mx_stream;       /* the event stream its answer opened, if any */

    /* Guarded by mu. */
    char session[MCP_SESSION_ID_MAX + 1]; /* SSE_OPEN: set by the OpenSession callback */
    rq_answer ans;
    int status;
    int code;
    char msg[MCP_ERROR_TEXT];
    char *json;        /* owned: ANS_JSON body */
    size_t nfinal;     /* request calls answered */
    size_t nopen;      /* calls whose callback has not run */
    sse_buf out;
    bool streaming;    /* the SSE response is queued */
    bool done;         /* end the SSE stream once out is drained */
    bool abort;        /* end it now, with an error (slow client, overflow) */
    bool hung_up;      /* the client closed its connection while the stream waited */
    bool ping_due;
    int64_t last_write_ms;
    bool attached;       /* AttachStream succeeded: DetachStream owed on release */
    bool session_ended;  /* control ended the session: no DetachStream */
    bool lost;           /* control went away: no DetachStream */
    bool shutdown;       /* ended by edge_mcp_shutdown (metrics: why a stream closed) */
    bool released;       /* libmicrohttpd is done with the request */

    /* Guarded by edge_mcp.mu. */
    bool registered;
    mcp_req *hnext;
};

struct edge_mcp {
    char *edge_id;
    edge_link *link;
    bool loopback;
    char **flag_hosts;
    size_t n_flag_hosts;
    unsigned max_streams;
    size_t stream_buffer;
    int heartbeat_ms;
    int retry_ms;
    edge_metrics *metrics;

    pthread_mutex_t cli_mu;
    rpc_client *cli; /* NULL once dropped */

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* CLOCK_MONOTONIC; registry and detach changes (drain waiters) */
    pthread_cond_t ticker_cv; /* CLOCK_MONOTONIC; only ticker_stop: no wake-up per request */
    mcp_settings *set;
    mcp_req *buckets[MCP_BUCKETS];
    size_t nregistered;
    unsigned nstreams;
    unsigned ndetach;
    int64_t limit_warned_ms;
    bool stopping;
    bool ticker_stop;
    pthread_t ticker;
    bool ticker_started;
    size_t trim_peak; /* ticker only: most requests registered since memory was trimmed */
};

/* A fire-and-forget call (DetachStream, EndSession after a failed attach). */
typedef struct {
    edge_mcp *m;
    bool detach;
    char session[MCP_SESSION_ID_MAX + 1];
} mcp_bg;

static int64_t mcp_now_ms(void)
{
    return rpc_now_ms();
}

/* ---- settings ----------------------------------------------------------------------- */

static char **strv_copy(char *const *v, size_t n)
{
    char **out = calloc(n + 1, sizeof *out);

    if (!out)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!(out[i] = strdup(v[i] ? v[i] : "")))
            abort();
    return out;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* The host[:port] of an origin "scheme://host[:port]", or NULL. New string. */
static char *origin_host(const char *origin)
{
    const char *p = strstr(origin, "://");
    size_t n;
    char *h;

    if (!p || !p[3])
        return NULL;
    p += 3;
    n = strcspn(p, "/");
    if (!(h = strndup(p, n)))
        abort();
    return h;
}

static mcp_settings *settings_new(const edge_mcp *m, const Mcphub__V1__EdgeSettings *es)
{
    static char *const global_only[] = {(char *)""};
    mcp_settings *s = calloc(1, sizeof *s);
    uint64_t limit;

    if (!s)
        abort();
    s->refs = 1;
    if (es) {
        s->origins = strv_copy(es->allowed_origins, es->n_allowed_origins);
        s->n_origins = es->n_allowed_origins;
        s->routes = strv_copy(es->routes, es->n_routes);
        s->n_routes = es->n_routes;
    } else {
        s->origins = strv_copy(NULL, 0);
        s->routes = strv_copy(global_only, 1);
        s->n_routes = 1;
    }
    /* Hosts: the operator's flag, plus the host of every allowed origin (a page served there
     * reaches a loopback edge through a proxy that keeps its Host). */
    if (!(s->hosts = calloc(m->n_flag_hosts + s->n_origins + 1, sizeof *s->hosts)))
        abort();
    for (size_t i = 0; i < m->n_flag_hosts; i++)
        if (!(s->hosts[s->n_hosts++] = strdup(m->flag_hosts[i])))
            abort();
    for (size_t i = 0; i < s->n_origins; i++) {
        char *h = strcmp(s->origins[i], "*") ? origin_host(s->origins[i]) : NULL;

        if (h)
            s->hosts[s->n_hosts++] = h;
    }
    limit = es && es->json_body_limit ? es->json_body_limit : EDGE_MCP_DEFAULT_BODY_LIMIT;
    if (limit > EDGE_MCP_MAX_BODY_LIMIT)
        limit = EDGE_MCP_MAX_BODY_LIMIT;
    if (!(s->auth_header = strdup(es && es->bearer_auth_header && es->bearer_auth_header[0]
                                      ? es->bearer_auth_header
                                      : "Authorization")))
        abort();
    s->cfg.loopback = m->loopback;
    s->cfg.allowed_origins = (const char *const *)s->origins;
    s->cfg.n_allowed_origins = s->n_origins;
    s->cfg.allowed_hosts = (const char *const *)s->hosts;
    s->cfg.n_allowed_hosts = s->n_hosts;
    s->cfg.body_limit = limit;
    s->cfg.bearer_auth = es && es->bearer_auth;
    s->cfg.auth_custom_header = strcasecmp(s->auth_header, "Authorization") != 0;
    s->cfg.routes = (const char *const *)s->routes;
    s->cfg.n_routes = s->n_routes;
    return s;
}

static void settings_unref(mcp_settings *s)
{
    if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    strv_free(s->origins, s->n_origins);
    strv_free(s->hosts, s->n_hosts);
    strv_free(s->routes, s->n_routes);
    free(s->auth_header);
    free(s);
}

void edge_mcp_settings(edge_mcp *m, const Mcphub__V1__EdgeSettings *es)
{
    mcp_settings *s = settings_new(m, es), *old;

    pthread_mutex_lock(&m->mu);
    old = m->set;
    m->set = s;
    pthread_mutex_unlock(&m->mu);
    settings_unref(old);
    log_debug("edge settings", "routes=%zu origins=%zu body_limit=%" PRIu64 " bearer_auth=%d",
              s->n_routes, s->n_origins, s->cfg.body_limit, (int)s->cfg.bearer_auth);
}

bool edge_mcp_has_settings(edge_mcp *m)
{
    bool has;

    pthread_mutex_lock(&m->mu);
    has = m->set != NULL;
    pthread_mutex_unlock(&m->mu);
    return has;
}

/* ---- calls to control (any thread) -------------------------------------------------- */

static int mcp_unary(edge_mcp *m, const char *method, const ProtobufCMessage *req,
                     int64_t timeout_ms, rpc_unary_cb cb, void *ud)
{
    int rc = -ECANCELED;

    pthread_mutex_lock(&m->cli_mu);
    if (m->cli)
        rc = rpc_client_unary(m->cli, &mcphub__v1__gateway__descriptor, method, req, timeout_ms,
                              cb, ud);
    pthread_mutex_unlock(&m->cli_mu);
    return rc;
}

static rpc_stream *mcp_stream(edge_mcp *m, const char *method, const ProtobufCMessage *req,
                              rpc_stream_msg_cb on_msg, rpc_stream_close_cb on_close, void *ud)
{
    rpc_stream *st = NULL;

    pthread_mutex_lock(&m->cli_mu);
    if (m->cli)
        st = rpc_client_stream(m->cli, &mcphub__v1__gateway__descriptor, method, req, 0, false,
                               on_msg, on_close, ud);
    pthread_mutex_unlock(&m->cli_mu);
    return st;
}

void edge_mcp_drop_client(edge_mcp *m)
{
    pthread_mutex_lock(&m->cli_mu);
    m->cli = NULL;
    pthread_mutex_unlock(&m->cli_mu);
}

static void bg_done(void *ud, grpc_status_code status, const char *message,
                    const ProtobufCMessage *resp)
{
    mcp_bg *bg = ud;
    edge_mcp *m = bg->m;
    char sid[64];

    edge_metrics_rpc(m->metrics, bg->detach ? EM_RPC_DETACH_STREAM : EM_RPC_END_SESSION, status);
    edge_link_clean(sid, sizeof sid, bg->session);
    if (status != GRPC_STATUS_OK)
        log_debug(bg->detach ? "detach stream failed" : "end session failed",
                  "session=%s status=%s", sid, rpc_status_name(status));
    if (bg->detach) {
        pthread_mutex_lock(&m->mu);
        m->ndetach--;
        pthread_cond_broadcast(&m->cv);
        pthread_mutex_unlock(&m->mu);
    }
    free(bg);
}

/* Tells control that this edge no longer holds stream_id of session (any thread). */
static void mcp_detach(edge_mcp *m, const char *session, const char *stream_id)
{
    Mcphub__V1__DetachStreamRequest req = MCPHUB__V1__DETACH_STREAM_REQUEST__INIT;
    mcp_bg *bg = calloc(1, sizeof *bg);

    if (!bg)
        abort();
    bg->m = m;
    bg->detach = true;
    snprintf(bg->session, sizeof bg->session, "%s", session);
    req.edge_id = m->edge_id;
    req.session_id = (char *)session;
    req.stream_id = (char *)stream_id;
    pthread_mutex_lock(&m->mu);
    m->ndetach++;
    pthread_mutex_unlock(&m->mu);
    if (mcp_unary(m, "DetachStream", &req.base, MCP_DETACH_TIMEOUT_MS, bg_done, bg) < 0)
        bg_done(bg, GRPC_STATUS_CANCELLED, "edge stopping", NULL);
}

/* Ends a session control opened for a client that is gone (legacy /sse). */
static void mcp_end_session(edge_mcp *m, const char *session, const char *token)
{
    Mcphub__V1__EndSessionRequest req = MCPHUB__V1__END_SESSION_REQUEST__INIT;
    Mcphub__V1__Principal p = MCPHUB__V1__PRINCIPAL__INIT;
    mcp_bg *bg = calloc(1, sizeof *bg);

    if (!bg)
        abort();
    bg->m = m;
    snprintf(bg->session, sizeof bg->session, "%s", session);
    req.edge_id = m->edge_id;
    req.session_id = (char *)session;
    if (token)
        p.bearer_token = (char *)token;
    req.principal = &p;
    if (mcp_unary(m, "EndSession", &req.base, MCP_UNARY_TIMEOUT_MS, bg_done, bg) < 0)
        bg_done(bg, GRPC_STATUS_CANCELLED, "edge stopping", NULL);
}

/* ---- mcp_req lifetime ---------------------------------------------------------------- */

static void rq_ref(mcp_req *r)
{
    __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
}

static void rq_unref(mcp_req *r)
{
    if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < r->ncalls; i++) {
        free(r->calls[i].final_json);
        free(r->calls[i].final_event);
        free(r->calls[i].msg_json);
    }
    free(r->calls);
    jr_body_free(r->jb);
    json_decref(r->err_id);
    free(r->body);
    free(r->token);
    free(r->last_event_id);
    free(r->json);
    sse_buf_cleanup(&r->out);
    settings_unref(r->set);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Resumes the request's handler or content reader. r->mu held. */
static void rq_wake(mcp_req *r)
{
    edge_http_unpark(r->http, &r->parked);
}

/* Cancels every Request stream still running whose answer has not arrived (one that
 * delivered its answer ends by itself: cancelling it would tell control that the client
 * gave up on a request it got). r->mu held, which keeps on_close (it takes the lock) from
 * having freed a stream we still see open. */
static void rq_cancel_calls(mcp_req *r)
{
    for (size_t i = 0; i < r->ncalls; i++) {
        mcp_call *c = &r->calls[i];

        if (c->stream && !c->closed && !c->final && c->st)
            rpc_stream_cancel(c->st);
    }
}

/* Records an error answer unless an answer is already known. r->mu held. */
static void rq_fail(mcp_req *r, int status, int code, const char *msg)
{
    if (r->ans != ANS_NONE)
        return;
    r->ans = ANS_ERROR;
    r->status = status;
    r->code = code;
    snprintf(r->msg, sizeof r->msg, "%s", msg);
}

/* Maps a Gateway status to the HTTP answer, as gateway.proto specifies. r->mu held. */
static void rq_fail_grpc(mcp_req *r, grpc_status_code st, const char *detail)
{
    static const struct {
        grpc_status_code st;
        int http;
        int code;
        const char *text; /* used when control gave no text, or always when !pass */
        bool pass;        /* control's text is the message */
    } map[] = {
        {GRPC_STATUS_INVALID_ARGUMENT, 400, JR_INVALID_REQUEST, "Bad Request", true},
        {GRPC_STATUS_UNAUTHENTICATED, 401, JR_SERVER_ERROR, "Unauthorized", true},
        {GRPC_STATUS_PERMISSION_DENIED, 403, JR_SERVER_ERROR, "Forbidden", true},
        {GRPC_STATUS_NOT_FOUND, 404, JR_SESSION_NOT_FOUND, "Session not found", true},
        {GRPC_STATUS_ALREADY_EXISTS, 409, JR_SERVER_ERROR,
         "Conflict: Only one SSE stream is allowed per session", true},
        {GRPC_STATUS_RESOURCE_EXHAUSTED, 429, JR_SERVER_ERROR, "Too Many Requests", true},
        {GRPC_STATUS_UNAVAILABLE, 503, JR_SERVER_ERROR,
         "Service Unavailable: control unreachable", false},
        {GRPC_STATUS_CANCELLED, 503, JR_SERVER_ERROR, "Service Unavailable: cancelled", false},
        {GRPC_STATUS_DEADLINE_EXCEEDED, 504, JR_SERVER_ERROR,
         "Gateway Timeout: control did not answer in time", false},
    };
    int http = 502, code = JR_SERVER_ERROR;
    const char *text = "Bad Gateway: control failed";
    bool pass = false;

    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (map[i].st == st) {
            http = map[i].http;
            code = map[i].code;
            text = map[i].text;
            pass = map[i].pass;
            break;
        }
    }
    rq_fail(r, http, code, pass && detail && detail[0] ? detail : text);
    if (http >= 500 && st != GRPC_STATUS_CANCELLED) { /* cancelled: we are stopping */
        char clean[96];

        edge_link_clean(clean, sizeof clean, detail);
        log_warn("control call failed", "status=%s detail=%s http=%d", rpc_status_name(st),
                 clean, http);
    }
}

/* ---- registry (edge_mcp.mu) -------------------------------------------------------- */

static size_t reg_bucket(const char *session)
{
    uint32_t h = 2166136261u;

    for (const unsigned char *p = (const unsigned char *)session; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % MCP_BUCKETS;
}

/* Adds r under its session, unless libmicrohttpd already released it. Returns 0 or
 * -ECANCELED. */
static int reg_add(edge_mcp *m, mcp_req *r)
{
    int rc = 0;

    pthread_mutex_lock(&m->mu);
    pthread_mutex_lock(&r->mu);
    if (r->released) {
        rc = -ECANCELED;
    } else {
        size_t b = reg_bucket(r->session);

        r->hnext = m->buckets[b];
        m->buckets[b] = r;
        r->registered = true;
        m->nregistered++;
    }
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static void reg_remove(edge_mcp *m, mcp_req *r)
{
    pthread_mutex_lock(&m->mu);
    if (r->registered) {
        for (mcp_req **pp = &m->buckets[reg_bucket(r->session)]; *pp; pp = &(*pp)->hnext) {
            if (*pp == r) {
                *pp = r->hnext;
                break;
            }
        }
        r->registered = false;
        r->hnext = NULL;
        m->nregistered--;
        pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
}

/* Collects references to the registered requests accepted by keep(); the caller unrefs them
 * and frees the array. session NULL = every bucket. */
static mcp_req **reg_collect(edge_mcp *m, const char *session,
                             bool (*keep)(const mcp_req *, const void *), const void *arg,
                             size_t *n)
{
    mcp_req **v = NULL;
    size_t cap = 0;

    *n = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t b = session ? reg_bucket(session) : 0; b < MCP_BUCKETS; b++) {
        for (mcp_req *r = m->buckets[b]; r; r = r->hnext) {
            if (!keep(r, arg))
                continue;
            if (*n == cap) {
                cap = cap ? cap * 2 : 8;
                if (!(v = realloc(v, cap * sizeof *v)))
                    abort();
            }
            rq_ref(r);
            v[(*n)++] = r;
        }
        if (session)
            break;
    }
    pthread_mutex_unlock(&m->mu);
    return v;
}

static void reg_release(mcp_req **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rq_unref(v[i]);
    free(v);
}

static bool is_attached_kind(const mcp_req *r)
{
    return r->op == MCP_OP_GET || r->op == MCP_OP_SSE_OPEN;
}

/* session is only read from registered requests, whose session no longer changes. */
static bool keep_session(const mcp_req *r, const void *arg)
{
    return strcmp(r->session, (const char *)arg) == 0;
}

static bool keep_all(const mcp_req *r, const void *arg)
{
    return true;
}

/* ---- SSE output (r->mu held) -------------------------------------------------------- */

/* Writes one server message as an event; a full buffer aborts the stream. */
static void rq_emit(mcp_req *r, const char *event_id, const char *json)
{
    if (r->abort || r->done)
        return;
    if (sse_buf_event(&r->out, "message", event_id, 0, json, strlen(json)) < 0) {
        char sid[64];

        edge_link_clean(sid, sizeof sid, r->session);
        log_warn("slow client disconnected", "session=%s pending=%zu", sid,
                 sse_buf_pending(&r->out));
        r->abort = true;
        rq_cancel_calls(r);
        if (!r->released) /* else conn, and its descriptor number, may be another's now */
            edge_http_disconnect(r->conn); /* its writes may be stuck: the reader would not run */
    }
}

/* Switches a POST answer to SSE: the priming event (2025-11-25), then the answers that
 * arrived while it was undecided, in order. */
static void rq_start_sse(mcp_req *r)
{
    r->ans = ANS_SSE;
    if (r->vflags & MCP_V_PRIMING) {
        char id[MCP_STREAM_ID_MAX + 4];

        /* (revisions with priming have no batches: one request, one stream) */
        snprintf(id, sizeof id, "%s/0", r->stream_id);
        sse_buf_event(&r->out, NULL, id, r->m->retry_ms, "", 0);
    }
    for (size_t i = 0; i < r->ncalls; i++) {
        mcp_call *c = &r->calls[i];

        if (c->final_json) {
            rq_emit(r, c->final_event, c->final_json);
            free(c->final_json);
            free(c->final_event);
            c->final_json = c->final_event = NULL;
        }
    }
}

/* The HTTP status of a stateless request's JSON answer with JSON-RPC error code (0: a
 * result): the 2026 revision gives some errors their own (404 for an unknown method, 400 for
 * header, capability and version errors); everything else is 200. */
static int stateless_status(int code)
{
    if (code == JR_METHOD_NOT_FOUND)
        return MHD_HTTP_NOT_FOUND;
    if (code == MCP26_E_HEADER_MISMATCH || code == MCP26_E_MISSING_CAPABILITY ||
        code == MCP26_E_UNSUPPORTED_VERSION)
        return MHD_HTTP_BAD_REQUEST;
    return MHD_HTTP_OK;
}

/* Builds the JSON answer once every request was answered first time: the one object, or the
 * batch's array in request order. */
static void rq_json_answer(mcp_req *r)
{
    size_t len = 3;
    char *s;

    if (!r->jb->batch) {
        int code = 0;

        for (size_t i = 0; i < r->ncalls; i++) {
            if (r->calls[i].request) {
                r->json = r->calls[i].final_json;
                r->calls[i].final_json = NULL;
                code = r->calls[i].final_code;
                break;
            }
        }
        r->ans = ANS_JSON;
        r->status = r->stateless && r->json ? stateless_status(code) : MHD_HTTP_OK;
        return;
    }
    for (size_t i = 0; i < r->ncalls; i++)
        if (r->calls[i].final_json)
            len += strlen(r->calls[i].final_json) + 1;
    if (!(s = malloc(len)))
        abort();
    len = 0;
    s[len++] = '[';
    for (size_t i = 0; i < r->ncalls; i++) {
        size_t n;

        if (!r->calls[i].final_json)
            continue;
        if (len > 1)
            s[len++] = ',';
        n = strlen(r->calls[i].final_json);
        memcpy(s + len, r->calls[i].final_json, n);
        len += n;
    }
    s[len++] = ']';
    s[len] = '\0';
    r->json = s;
    r->ans = ANS_JSON;
    r->status = MHD_HTTP_OK;
}

/* ---- Gateway callbacks (polling thread) ---------------------------------------------- */

/* A call of r, of Gateway method rpc, came back with status: counts it, takes r->mu and
 * marks the call closed. Returns r, locked. */
static mcp_req *call_done_lock(mcp_call *c, em_rpc rpc, grpc_status_code status)
{
    mcp_req *r = c->r;

    edge_metrics_rpc(r->m->metrics, rpc, status);
    pthread_mutex_lock(&r->mu);
    c->closed = true;
    r->nopen--;
    return r;
}

/* A message on a Request stream: related messages, then the answer (final). */
static void on_request_msg(void *ud, const ProtobufCMessage *msg)
{
    mcp_call *c = ud;
    mcp_req *r = c->r;
    const Mcphub__V1__StreamMessage *sm = (const Mcphub__V1__StreamMessage *)msg;

    pthread_mutex_lock(&r->mu);
    if (c->final || r->released || r->abort || r->ans == ANS_ERROR || r->ans == ANS_JSON)
        goto out;
    if (r->ans == ANS_NONE) {
        if (sm->final) {
            c->final = true;
            if (!(c->final_json = strdup(sm->message_json)) ||
                !(c->final_event = strdup(sm->event_id)))
                abort();
            c->final_code = sm->error_code;
            if (++r->nfinal == r->nrequests)
                rq_json_answer(r);
            rq_wake(r);
            goto out;
        }
        rq_start_sse(r);
    }
    rq_emit(r, sm->event_id, sm->message_json);
    if (sm->final) {
        c->final = true;
        if (++r->nfinal == r->nrequests)
            r->done = true;
    }
    rq_wake(r);
out:
    pthread_mutex_unlock(&r->mu);
}

static void on_request_close(void *ud, grpc_status_code status, const char *message)
{
    mcp_call *c = ud;
    mcp_req *r = call_done_lock(c, EM_RPC_REQUEST, status);

    c->st = NULL;
    if (!c->final && !r->released) {
        if (r->ans == ANS_NONE) {
            if (r->session_ended)
                rq_fail(r, 404, JR_SESSION_NOT_FOUND, "Session not found");
            else if (status == GRPC_STATUS_OK)
                rq_fail(r, 502, JR_SERVER_ERROR, "Bad Gateway: control sent no response");
            else
                rq_fail_grpc(r, status, message);
            rq_cancel_calls(r);
        } else if (r->ans == ANS_SSE) {
            /* The stream already started: answer this request in it. */
            const json_t *id = r->jb->msgs[c->index].id;
            char text[96];
            char *err;

            snprintf(text, sizeof text, "Internal error: control %s", rpc_status_name(status));
            err = jr_error_response(JR_INTERNAL_ERROR, text, id, NULL);
            rq_emit(r, NULL, err);
            free(err);
            c->final = true;
            if (++r->nfinal == r->nrequests)
                r->done = true;
        }
    }
    rq_wake(r);
    pthread_mutex_unlock(&r->mu);
    rq_unref(r);
}

/* Post (client notifications and responses) done. */
static void on_post_done(void *ud, grpc_status_code status, const char *message,
                         const ProtobufCMessage *resp)
{
    mcp_call *c = ud;
    mcp_req *r;

    r = call_done_lock(c, EM_RPC_POST, status);
    if (status != GRPC_STATUS_OK) {
        if (r->op == MCP_OP_REQUESTS) {
            char clean[96];

            /* Part of a batch whose requests decide the answer: only logged. */
            edge_link_clean(clean, sizeof clean, message);
            log_info("client message rejected", "status=%s detail=%s", rpc_status_name(status),
                     clean);
        } else {
            rq_fail_grpc(r, status, message);
        }
    }
    if (r->nopen == 0 && r->op != MCP_OP_REQUESTS && r->ans == ANS_NONE) {
        r->ans = ANS_EMPTY;
        r->status = MHD_HTTP_ACCEPTED;
    }
    rq_wake(r);
    pthread_mutex_unlock(&r->mu);
    rq_unref(r);
}

static void on_end_done(void *ud, grpc_status_code status, const char *message,
                        const ProtobufCMessage *resp)
{
    mcp_call *c = ud;
    mcp_req *r;
    const Mcphub__V1__EndSessionReply *rep = (const Mcphub__V1__EndSessionReply *)resp;

    r = call_done_lock(c, EM_RPC_END_SESSION, status);
    if (status != GRPC_STATUS_OK) {
        rq_fail_grpc(r, status, message);
    } else if (!rep->existed) {
        rq_fail(r, 404, JR_SESSION_NOT_FOUND, "Session not found");
    } else {
        r->ans = ANS_EMPTY;
        r->status = MHD_HTTP_OK;
    }
    rq_wake(r);
    pthread_mutex_unlock(&r->mu);
    rq_unref(r);
}

/* OpenSession for initialize (Streamable HTTP). */
static void on_open_done(void *ud, grpc_status_code status, const char *message,
                         const ProtobufCMessage *resp)
{
    mcp_call *c = ud;
    mcp_req *r;
    const Mcphub__V1__OpenSessionReply *rep = (const Mcphub__V1__OpenSessionReply *)resp;

    r = call_done_lock(c, EM_RPC_OPEN_SESSION, status);
    if (status != GRPC_STATUS_OK) {
        rq_fail_grpc(r, status, message);
    } else if (!mcp_rules_session_id_ok(rep->session_id) || !rep->response_json[0]) {
        rq_fail(r, 502, JR_SERVER_ERROR, "Bad Gateway: control sent an invalid session");
    } else {
        snprintf(r->session, sizeof r->session, "%s", rep->session_id);
        if (!(r->json = strdup(rep->response_json)))
            abort();
        r->ans = ANS_JSON;
        r->status = MHD_HTTP_OK;
    }
    rq_wake(r);
    pthread_mutex_unlock(&r->mu);
    rq_unref(r);
}

/* Writes the replayed messages of an AttachStream answer before whatever arrived since,
 * after the stream's first events (legacy endpoint, or the priming event). r->mu held. */
static void rq_attach_front(mcp_req *r, const Mcphub__V1__AttachStreamReply *rep)
{
    sse_buf front;

    sse_buf_init(&front, 0);
    if (r->op == MCP_OP_SSE_OPEN) {
        static const char hex[] = "0123456789ABCDEF";
        char uri[32 + 3 * MCP_SESSION_ID_MAX];
        size_t n = (size_t)snprintf(uri, sizeof uri, "/messages?sessionId=");

        /* percent-encode everything but unreserved characters: the id is opaque */
        for (const char *p = r->session; *p; p++) {
            unsigned char ch = (unsigned char)*p;

            if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                strchr("-._~", ch)) {
                uri[n++] = (char)ch;
            } else {
                uri[n++] = '%';
                uri[n++] = hex[ch >> 4];
                uri[n++] = hex[ch & 15];
            }
        }
        uri[n] = '\0';
        sse_buf_event(&front, "endpoint", NULL, 0, uri, n);
    } else if (r->vflags & MCP_V_PRIMING) {
        char id[MCP_STREAM_ID_MAX + 4];

        snprintf(id, sizeof id, "%s/0", r->stream_id);
        sse_buf_event(&front, NULL, id, r->m->retry_ms, "", 0);
    }
    for (size_t i = 0; rep && i < rep->n_replay; i++) {
        const Mcphub__V1__StreamMessage *sm = rep->replay[i];

        if (sm)
            sse_buf_event(&front, "message", sm->event_id, 0, sm->message_json,
                          strlen(sm->message_json));
    }
    sse_buf_prepend(&r->out, &front);
    sse_buf_cleanup(&front);
}

static void on_attach_done(void *ud, grpc_status_code status, const char *message,
                           const ProtobufCMessage *resp)
{
    mcp_call *c = ud;
    mcp_req *r;
    edge_mcp *m = c->r->m;
    bool detach = false, end = false;
    char session[MCP_SESSION_ID_MAX + 1];
    char stream_id[MCP_STREAM_ID_MAX];

    r = call_done_lock(c, EM_RPC_ATTACH_STREAM, status);
    snprintf(session, sizeof session, "%s", r->session);
    snprintf(stream_id, sizeof stream_id, "%s", r->stream_id);
    if (status != GRPC_STATUS_OK) {
        rq_fail_grpc(r, status, message);
        end = r->op == MCP_OP_SSE_OPEN; /* the legacy session has no stream: end it */
    } else if (r->released || r->ans != ANS_NONE) {
        /* The client left, or the request was already answered (session ended, control
         * lost, edge stopping) while we attached: nobody will read this stream. */
        detach = !r->session_ended && !r->lost;
    } else {
        r->attached = true;
        rq_attach_front(r, (const Mcphub__V1__AttachStreamReply *)resp);
        r->ans = ANS_SSE;
        if (r->session_ended || r->lost)
            r->done = true;
    }
    rq_wake(r);
    pthread_mutex_unlock(&r->mu);
    if (detach)
        mcp_detach(m, session, stream_id);
    if (end)
        mcp_end_session(m, session, r->token);
    rq_unref(r);
}

static void rq_principal(const mcp_req *r, Mcphub__V1__Principal *p)
{
    mcphub__v1__principal__init(p);
    if (r->token)
        p->bearer_token = r->token;
}

/* Starts AttachStream for r (its session and stream id set, registered). r->mu held. */
static int rq_start_attach(mcp_req *r, mcp_call *c)
{
    Mcphub__V1__AttachStreamRequest req = MCPHUB__V1__ATTACH_STREAM_REQUEST__INIT;
    Mcphub__V1__Principal p;

    rq_principal(r, &p);
    req.edge_id = r->m->edge_id;
    req.session_id = r->session;
    req.stream_id = r->stream_id;
    if (r->last_event_id)
        req.last_event_id = r->last_event_id;
    req.principal = &p;
    rq_ref(r);
    r->nopen++;
    if (mcp_unary(r->m, "AttachStream", &req.base, MCP_ATTACH_TIMEOUT_MS, on_attach_done, c) < 0) {
        r->nopen--;
        __atomic_sub_fetch(&r->refs, 1, __ATOMIC_RELAXED); /* the caller still holds one */
        return -ECANCELED;
    }
    return 0;
}

/* OpenSession for GET /sse: then register the stream and attach it. */
static void on_legacy_open_done(void *ud, grpc_status_code status, const char *message,
                                const ProtobufCMessage *resp)
{
    mcp_call *c = ud;
    mcp_req *r;
    edge_mcp *m = c->r->m;
    const Mcphub__V1__OpenSessionReply *rep = (const Mcphub__V1__OpenSessionReply *)resp;
    bool attach = false, end = false;
    char session[MCP_SESSION_ID_MAX + 1] = "";

    r = call_done_lock(c, EM_RPC_OPEN_SESSION, status);
    if (status != GRPC_STATUS_OK) {
        rq_fail_grpc(r, status, message);
    } else if (!mcp_rules_session_id_ok(rep->session_id)) {
        rq_fail(r, 502, JR_SERVER_ERROR, "Bad Gateway: control sent an invalid session");
    } else {
        snprintf(r->session, sizeof r->session, "%s", rep->session_id);
        snprintf(session, sizeof session, "%s", rep->session_id);
        attach = true;
    }
    rq_wake(r);
    pthread_mutex_unlock(&r->mu);

    if (attach) {
        /* Registered before attaching: messages control pushes right after its answer find
         * the stream. The lock order puts the registry first. */
        if (reg_add(m, r) < 0) {
            end = true; /* the client already left */
        } else {
            pthread_mutex_lock(&r->mu);
            if (rq_start_attach(r, &r->calls[1]) < 0) {
                rq_fail(r, 503, JR_SERVER_ERROR, "Service Unavailable: edge stopping");
                end = true;
            }
            rq_wake(r);
            pthread_mutex_unlock(&r->mu);
        }
    }
    if (end)
        mcp_end_session(m, session, r->token);
    rq_unref(r);
}

/* ---- starting the calls (daemon thread) ---------------------------------------------- */

static void rq_calls_alloc(mcp_req *r, size_t n)
{
    if (!(r->calls = calloc(n, sizeof *r->calls)))
        abort();
    r->ncalls = n;
    for (size_t i = 0; i < n; i++)
        r->calls[i].r = r;
}

/* A unary call of r; r->mu held. Returns 0 or -ECANCELED (nothing started). */
static int rq_unary(mcp_req *r, mcp_call *c, const char *method, const ProtobufCMessage *req,
                    int64_t timeout_ms, rpc_unary_cb cb)
{
    rq_ref(r);
    r->nopen++;
    if (mcp_unary(r->m, method, req, timeout_ms, cb, c) < 0) {
        r->nopen--;
        __atomic_sub_fetch(&r->refs, 1, __ATOMIC_RELAXED);
        c->closed = true;
        return -ECANCELED;
    }
    return 0;
}

static int rq_start_post(mcp_req *r, mcp_call *c, const char *json)
{
    Mcphub__V1__ClientMessage req = MCPHUB__V1__CLIENT_MESSAGE__INIT;
    Mcphub__V1__Principal p;

    rq_principal(r, &p);
    req.edge_id = r->m->edge_id;
    req.session_id = r->session;
    req.route = r->route;
    req.principal = &p;
    req.message_json = (char *)json;
    return rq_unary(r, c, "Post", &req.base, MCP_UNARY_TIMEOUT_MS, on_post_done);
}

static int rq_start_request(mcp_req *r, mcp_call *c, const char *json)
{
    Mcphub__V1__ClientRequest req = MCPHUB__V1__CLIENT_REQUEST__INIT;
    Mcphub__V1__Principal p;

    rq_principal(r, &p);
    req.edge_id = r->m->edge_id;
    req.session_id = r->session;
    req.route = r->route;
    req.principal = &p;
    req.protocol_version = r->version;
    req.message_json = (char *)json;
    req.stream_id = c->stream_id;
    req.traceparent = r->traceparent;
    req.tracestate = r->tracestate;
    req.scope = r->scope;
    c->stream = true;
    rq_ref(r);
    r->nopen++;
    c->st = mcp_stream(r->m, "Request", &req.base, on_request_msg, on_request_close, c);
    if (!c->st) {
        r->nopen--;
        __atomic_sub_fetch(&r->refs, 1, __ATOMIC_RELAXED);
        c->closed = true;
        return -ECANCELED;
    }
    return 0;
}

/* Starts what r's operation needs. Daemon thread; takes r->mu. On failure records 503. */
static void rq_start(mcp_req *r)
{
    Mcphub__V1__Principal p;
    int rc = 0;

    /* Registered first: session_ended and Subscribe messages must find it. (It cannot fail
     * here: libmicrohttpd releases nothing while its handler runs.) */
    if ((r->op == MCP_OP_REQUESTS || r->op == MCP_OP_GET) && reg_add(r->m, r) < 0)
        rc = -ECANCELED;
    pthread_mutex_lock(&r->mu);
    rq_principal(r, &p);
    switch (rc < 0 ? MCP_OP_NONE : r->op) {
    case MCP_OP_INITIALIZE:
    case MCP_OP_SSE_OPEN: {
        Mcphub__V1__OpenSessionRequest req = MCPHUB__V1__OPEN_SESSION_REQUEST__INIT;

        rq_calls_alloc(r, r->op == MCP_OP_SSE_OPEN ? 2 : 1);
        req.edge_id = r->m->edge_id;
        req.route = r->route;
        req.principal = &p;
        if (r->op == MCP_OP_INITIALIZE) {
            req.era = MCPHUB__V1__PROTOCOL_ERA__PROTOCOL_ERA_STREAMABLE;
            req.initialize_json = r->body;
            rc = rq_unary(r, &r->calls[0], "OpenSession", &req.base, MCP_OPEN_TIMEOUT_MS,
                          on_open_done);
        } else {
            req.era = MCPHUB__V1__PROTOCOL_ERA__PROTOCOL_ERA_LEGACY_SSE;
            rc = rq_unary(r, &r->calls[0], "OpenSession", &req.base, MCP_OPEN_TIMEOUT_MS,
                          on_legacy_open_done);
        }
        break;
    }
    case MCP_OP_DELETE: {
        Mcphub__V1__EndSessionRequest req = MCPHUB__V1__END_SESSION_REQUEST__INIT;

        rq_calls_alloc(r, 1);
        req.edge_id = r->m->edge_id;
        req.session_id = r->session;
        req.principal = &p;
        rc = rq_unary(r, &r->calls[0], "EndSession", &req.base, MCP_UNARY_TIMEOUT_MS,
                      on_end_done);
        break;
    }
    case MCP_OP_GET:
        rq_calls_alloc(r, 1);
        rc = rq_start_attach(r, &r->calls[0]);
        break;
    case MCP_OP_SSE_POST:
        rq_calls_alloc(r, 1);
        rc = rq_start_post(r, &r->calls[0], r->body);
        break;
    case MCP_OP_IGNORE:
        r->ans = ANS_EMPTY;
        r->status = MHD_HTTP_ACCEPTED;
        break;
    case MCP_OP_MESSAGES:
    case MCP_OP_REQUESTS:
        rq_calls_alloc(r, r->jb->n);
        for (size_t i = 0; i < r->jb->n && rc == 0; i++) {
            mcp_call *c = &r->calls[i];
            const jr_msg *msg = &r->jb->msgs[i];
            const char *json = r->body;

            c->index = i;
            if (r->jb->batch) {
                c->msg_json = jr_dump(msg->msg);
                json = c->msg_json;
            }
            if (msg->kind == JR_REQUEST) {
                c->request = true;
                r->nrequests++;
                if (r->jb->batch)
                    snprintf(c->stream_id, sizeof c->stream_id, "%.20s.%u", r->stream_id,
                             (unsigned)i);
                else
                    snprintf(c->stream_id, sizeof c->stream_id, "%s", r->stream_id);
                rc = rq_start_request(r, c, json);
            } else {
                rc = rq_start_post(r, c, json);
            }
        }
        break;
    default:
        rc = -ECANCELED;
        break;
    }
    if (rc < 0) {
        rq_fail(r, 503, JR_SERVER_ERROR, "Service Unavailable: edge stopping");
        rq_cancel_calls(r);
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---- metrics (daemon thread) --------------------------------------------------------- */

static em_transport mx_transport_of(const char *path)
{
    return strncmp(path, "/mcp", 4) == 0 ? EM_TRANSPORT_STREAMABLE : EM_TRANSPORT_SSE;
}

/* The method label of an operation known from the head alone. */
static unsigned mx_method_of_op(mcp_op op)
{
    switch (op) {
    case MCP_OP_GET:
    case MCP_OP_SSE_OPEN:
        return EM_METHOD_STREAM;
    case MCP_OP_DELETE:
        return EM_METHOD_DELETE;
    default:
        return EM_METHOD_UNKNOWN;
    }
}

/* The method label of a parsed body. */
static unsigned mx_method_of_body(const jr_body *jb)
{
    if (jb->batch)
        return EM_METHOD_BATCH;
    if (jb->msgs[0].kind == JR_RESULT || jb->msgs[0].kind == JR_ERROR)
        return EM_METHOD_RESPONSE;
    return edge_metrics_method(jb->msgs[0].method);
}

/* Counts a request refused on its head (no state was made for it) with status. */
static void mx_refused(edge_mcp *m, const edge_http_req *req, const mcp_verdict *v, int status,
                       int64_t t0)
{
    unsigned method = mx_method_of_op(v->op);

    edge_metrics_request(m->metrics, method, mx_transport_of(req->path), status);
    if (method != EM_METHOD_STREAM)
        edge_metrics_latency(m->metrics, method, edge_metrics_now_ns() - t0);
}

/* Counts r's answer, queued now with status. Counted before libmicrohttpd sends it, so a
 * client that got its answer finds it in /metrics. A stream's latency waits for its end. */
static void mx_answered(mcp_req *r, int status, bool stream)
{
    /* Control logs the same stream id with the session: one call, followed across both. */
    log_debug("request answered", "method=%s status=%d stream=%s sse=%d ms=%.3f",
              edge_metrics_method_name(r->mx_method), status, r->stream_id, (int)stream,
              (double)(edge_metrics_now_ns() - r->mx_t0) / 1e6);
    r->mx_counted = true;
    edge_metrics_request(r->m->metrics, r->mx_method, r->mx_transport, status);
    if (!stream && r->mx_method != EM_METHOD_STREAM)
        edge_metrics_latency(r->m->metrics, r->mx_method, edge_metrics_now_ns() - r->mx_t0);
}

/* ---- answering (daemon thread) ------------------------------------------------------- */

/* Queues a JSON-RPC error answer (with data as the error's data member, when not NULL)
 * with the headers its status needs. */
static enum MHD_Result reply_error(struct MHD_Connection *conn, int status, int code,
                                   const char *message, const json_t *id, const json_t *data,
                                   const char *allow)
{
    const char *headers[5] = {NULL};
    char *body = jr_error_response(code, message, id, data);
    enum MHD_Result rc;

    switch (status) {
    case MHD_HTTP_UNAUTHORIZED:
        headers[0] = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
        headers[1] = "Bearer realm=\"mcphub\"";
        break;
    case MHD_HTTP_METHOD_NOT_ALLOWED:
        headers[0] = MHD_HTTP_HEADER_ALLOW;
        headers[1] = allow ? allow : "GET, POST, DELETE";
        break;
    case MHD_HTTP_SERVICE_UNAVAILABLE:
    case MHD_HTTP_TOO_MANY_REQUESTS:
        headers[0] = MHD_HTTP_HEADER_RETRY_AFTER;
        headers[1] = MCP_RETRY_AFTER;
        break;
    default:
        break;
    }
    rc = edge_http_reply_json(conn, (unsigned)status, body, headers);
    free(body);
    return rc;
}

static ssize_t rq_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    static const char ping[] = ": ping\n\n";
    mcp_req *r = cls;
    ssize_t n;

    pthread_mutex_lock(&r->mu);
    if (r->abort || r->hung_up) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (sse_buf_pending(&r->out) > 0) {
        n = (ssize_t)sse_buf_read(&r->out, buf, max);
        r->last_write_ms = mcp_now_ms();
    } else if (r->done) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else if (r->ping_due && max >= sizeof ping - 1) {
        memcpy(buf, ping, sizeof ping - 1);
        n = (ssize_t)(sizeof ping - 1);
        r->ping_due = false;
        r->last_write_ms = mcp_now_ms();
    } else if (edge_http_park(r->http, &r->parked, r->conn) == 0) {
        n = 0; /* resumed when something arrives, or for the heartbeat */
    } else {
        n = MHD_CONTENT_READER_END_OF_STREAM; /* the edge is stopping */
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void rq_reader_free(void *cls)
{
    rq_unref(cls);
}

static enum MHD_Result rq_reply_sse(mcp_req *r)
{
    static const char *const headers[] = {
        MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream",
        MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache, no-transform",
        "X-Accel-Buffering", "no",
        NULL};
    struct MHD_Response *resp;
    enum MHD_Result rc = MHD_NO;

    rq_ref(r); /* the response's, dropped by rq_reader_free */
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, MCP_SSE_BLOCK, rq_reader, r,
                                             rq_reader_free);
    if (!resp) {
        rq_unref(r);
        return MHD_NO;
    }
    for (const char *const *h = headers; *h; h += 2)
        if (MHD_add_response_header(resp, h[0], h[1]) != MHD_YES)
            goto out;
    rc = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
out:
    MHD_destroy_response(resp);
    return rc;
}

/* Parks until an answer is known, then queues it. */
static enum MHD_Result rq_answer_now(mcp_req *r)
{
    rq_answer ans;
    int status, code;
    char msg[MCP_ERROR_TEXT];
    char session[MCP_SESSION_ID_MAX + 1];
    char *json = NULL;
    enum MHD_Result rc;

    pthread_mutex_lock(&r->mu);
    if (r->ans == ANS_NONE) {
        if (edge_http_park(r->http, &r->parked, r->conn) == 0) {
            pthread_mutex_unlock(&r->mu);
            return MHD_YES;
        }
        rq_fail(r, 503, JR_SERVER_ERROR, "Service Unavailable: edge stopping");
        rq_cancel_calls(r);
    }
    ans = r->ans;
    status = r->status;
    code = r->code;
    snprintf(msg, sizeof msg, "%s", r->msg);
    snprintf(session, sizeof session, "%s", r->session);
    if (ans == ANS_JSON) {
        json = r->json;
        r->json = NULL;
    }
    if (ans == ANS_SSE) {
        r->streaming = true;
        r->last_write_ms = mcp_now_ms();
    }
    pthread_mutex_unlock(&r->mu);

    switch (ans) {
    case ANS_SSE:
        r->phase = RQ_STREAMING;
        if ((rc = rq_reply_sse(r)) == MHD_YES) {
            r->mx_stream = r->op == MCP_OP_GET       ? EM_STREAM_GET
                           : r->op == MCP_OP_SSE_OPEN ? EM_STREAM_LEGACY
                                                      : EM_STREAM_POST;
            edge_metrics_stream_open(r->m->metrics, r->mx_stream);
            mx_answered(r, MHD_HTTP_OK, true);
        }
        return rc;
    case ANS_JSON: {
        const char *headers[] = {"Mcp-Session-Id", session, NULL};

        r->phase = RQ_ANSWERED;
        mx_answered(r, status, false);
        rc = edge_http_reply_json(r->conn, (unsigned)status, json,
                                  r->op == MCP_OP_INITIALIZE ? headers : NULL);
        free(json);
        return rc;
    }
    case ANS_EMPTY:
        r->phase = RQ_ANSWERED;
        mx_answered(r, status, false);
        return edge_http_reply(r->conn, (unsigned)status, NULL, NULL, 0, NULL);
    default:
        r->phase = RQ_ANSWERED;
        mx_answered(r, status, false);
        return reply_error(r->conn, status, code, msg, r->err_id, NULL, NULL);
    }
}

/* ---- the handler (daemon thread) ----------------------------------------------------- */

static void rq_release(edge_http_state *st)
{
    mcp_req *r = (mcp_req *)st;
    edge_mcp *m = r->m;
    bool detach;
    char session[MCP_SESSION_ID_MAX + 1];
    em_close why;

    pthread_mutex_lock(&r->mu);
    r->released = true;
    rq_cancel_calls(r);
    why = r->abort            ? EM_CLOSE_SLOW_CLIENT
          : r->session_ended ? EM_CLOSE_SESSION_ENDED
          : r->lost          ? EM_CLOSE_CONTROL_LOST
          : r->shutdown      ? EM_CLOSE_SHUTDOWN
          : r->done          ? EM_CLOSE_COMPLETED
                             : EM_CLOSE_CLIENT;
    detach = r->attached && !r->session_ended && !r->lost;
    r->attached = false;
    snprintf(session, sizeof session, "%s", r->session);
    pthread_mutex_unlock(&r->mu);
    reg_remove(m, r);
    if (r->counted) {
        pthread_mutex_lock(&m->mu);
        m->nstreams--;
        pthread_mutex_unlock(&m->mu);
    }
    if (r->mx_stream != EM_STREAM_NONE) {
        edge_metrics_stream_closed(m->metrics, r->mx_stream, why);
        if (r->mx_method != EM_METHOD_STREAM)
            edge_metrics_latency(m->metrics, r->mx_method, edge_metrics_now_ns() - r->mx_t0);
    } else if (!r->mx_counted) {
        /* The client left before an answer was queued. */
        edge_metrics_request(m->metrics, r->mx_method, r->mx_transport, 0);
        if (r->mx_method != EM_METHOD_STREAM)
            edge_metrics_latency(m->metrics, r->mx_method, edge_metrics_now_ns() - r->mx_t0);
    }
    if (detach)
        mcp_detach(m, session, r->stream_id);
    rq_unref(r);
}

static const char *header(struct MHD_Connection *conn, const char *name)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

/* Copies the verdict's error into an answer (with its data member, when it has one). */
static enum MHD_Result reply_verdict(struct MHD_Connection *conn, const mcp_verdict *v)
{
    return reply_error(conn, v->status, v->code, v->message, v->id, v->data, v->allow);
}

/* Fills the rules' view of the request. */
static void rules_in(const edge_http_req *req, const char *auth_header, mcp_rules_in *in)
{
    const char *len = header(req->conn, MHD_HTTP_HEADER_CONTENT_LENGTH);

    memset(in, 0, sizeof *in);
    in->method = req->method;
    in->path = req->path;
    in->session_query = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND,
                                                    "sessionId");
    in->accept = header(req->conn, MHD_HTTP_HEADER_ACCEPT);
    in->content_type = header(req->conn, MHD_HTTP_HEADER_CONTENT_TYPE);
    in->origin = header(req->conn, "Origin");
    in->host = header(req->conn, MHD_HTTP_HEADER_HOST);
    in->session_id = header(req->conn, "Mcp-Session-Id");
    in->protocol_version = header(req->conn, "MCP-Protocol-Version");
    in->last_event_id = header(req->conn, "Last-Event-ID");
    in->auth = header(req->conn, auth_header);
    in->mcp_method = header(req->conn, "Mcp-Method");
    in->mcp_name = header(req->conn, "Mcp-Name");
    in->scope = header(req->conn, "Mcphub-Scope");
    if (len) {
        char *end;

        in->content_length = strtoull(len, &end, 10);
        in->has_length = *end == '\0' && len[0] >= '0' && len[0] <= '9';
    }
}

/* W3C trace context (traceparent version 00 layout: 2-32-16-2 lowercase hex, ids not all
 * zero, version not ff); kept only when valid, and tracestate only with it. */
static bool trace_hex(const char *p, size_t n, bool nonzero)
{
    bool any = false;

    for (size_t i = 0; i < n; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
        any |= p[i] != '0';
    }
    return !nonzero || any;
}

static void rq_trace(mcp_req *r, const char *tp, const char *ts)
{
    if (!tp || strlen(tp) < MCP_TRACEPARENT_LEN || !trace_hex(tp, 2, false) ||
        strncmp(tp, "ff", 2) == 0 || tp[2] != '-' || !trace_hex(tp + 3, 32, true) ||
        tp[35] != '-' || !trace_hex(tp + 36, 16, true) || tp[52] != '-' ||
        !trace_hex(tp + 53, 2, false) || (tp[55] && (tp[0] == '0' && tp[1] == '0')) ||
        (tp[55] && tp[55] != '-'))
        return;
    memcpy(r->traceparent, tp, MCP_TRACEPARENT_LEN);
    r->traceparent[MCP_TRACEPARENT_LEN] = '\0';
    if (ts && strlen(ts) <= MCP_TRACESTATE_MAX) {
        for (const char *p = ts; *p; p++)
            if (*p < 0x20 || *p > 0x7e)
                return;
        snprintf(r->tracestate, sizeof r->tracestate, "%s", ts);
    }
}

/* Keeps what the request needs from the verdict. */
static void rq_adopt(mcp_req *r, const mcp_verdict *v)
{
    r->op = v->op;
    snprintf(r->route, sizeof r->route, "%s", v->route);
    snprintf(r->version, sizeof r->version, "%s", v->version);
    r->vflags = v->vflags;
    r->stateless = v->stateless;
    snprintf(r->scope, sizeof r->scope, "%s", v->scope);
    if (v->session)
        snprintf(r->session, sizeof r->session, "%s", v->session);
    free(r->token);
    r->token = NULL;
    if (v->token && r->set->cfg.bearer_auth && !(r->token = strndup(v->token, v->token_len)))
        abort();
}

/* The first call for a request: head rules, then the state. */
static enum MHD_Result rq_begin(edge_mcp *m, edge_http_req *req, mcp_req **out)
{
    static const mcp_rules_cfg none = {0};
    mcp_settings *set = NULL;
    mcp_rules_in in;
    mcp_verdict v;
    mcp_req *r = NULL;
    bool ready, stopping, full = false;
    enum MHD_Result rc;
    int64_t t0 = edge_metrics_now_ns();

    *out = NULL;
    pthread_mutex_lock(&m->mu);
    stopping = m->stopping;
    if ((set = m->set))
        __atomic_add_fetch(&set->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&m->mu);
    ready = set && !stopping && edge_link_ready(m->link, NULL, 0);
    if (!ready) {
        /* The path and method rules hold without settings; the rest needs control. */
        rules_in(req, "Authorization", &in);
        mcp_rules_head(&none, &in, &v);
        if (v.status == 405 || v.ep == MCP_EP_NONE) {
            mx_refused(m, req, &v, v.status, t0);
            rc = reply_verdict(req->conn, &v);
        } else {
            mx_refused(m, req, &v, 503, t0);
            rc = reply_error(req->conn, 503, JR_SERVER_ERROR,
                             stopping ? "Service Unavailable: edge stopping"
                                      : "Service Unavailable: control unreachable",
                             NULL, NULL, NULL);
        }
        mcp_verdict_cleanup(&v);
        settings_unref(set);
        return rc;
    }
    rules_in(req, set->auth_header, &in);
    mcp_rules_head(&set->cfg, &in, &v);
    if (!v.status && (v.op == MCP_OP_GET || v.op == MCP_OP_SSE_OPEN)) {
        bool warn = false;

        pthread_mutex_lock(&m->mu);
        if (m->nstreams >= m->max_streams) {
            full = true;
            /* once a second at most: a full edge refuses many */
            if ((warn = mcp_now_ms() - m->limit_warned_ms >= 1000))
                m->limit_warned_ms = mcp_now_ms();
        } else {
            m->nstreams++;
        }
        pthread_mutex_unlock(&m->mu);
        if (full) {
            if (warn)
                log_warn("stream limit reached", "max_streams=%u", m->max_streams);
            v.status = 429;
            v.code = JR_SERVER_ERROR;
            snprintf(v.message, sizeof v.message, "Too Many Requests: stream limit reached");
        }
    }
    if (v.status) {
        mx_refused(m, req, &v, v.status, t0);
        rc = reply_verdict(req->conn, &v);
        mcp_verdict_cleanup(&v);
        settings_unref(set);
        return rc;
    }

    if (!(r = calloc(1, sizeof *r)))
        abort();
    r->mx_t0 = t0;
    r->mx_method = mx_method_of_op(v.op);
    r->mx_transport = mx_transport_of(req->path);
    r->base.release = rq_release;
    r->m = m;
    r->http = req->http;
    r->conn = req->conn;
    r->refs = 1;
    pthread_mutex_init(&r->mu, NULL);
    r->set = set;
    r->counted = v.op == MCP_OP_GET || v.op == MCP_OP_SSE_OPEN;
    sse_buf_init(&r->out, m->stream_buffer);
    id_random(r->stream_id, sizeof r->stream_id, MCP_STREAM_ID_BYTES);
    rq_adopt(r, &v);
    rq_trace(r, header(req->conn, "traceparent"), header(req->conn, "tracestate"));
    if (in.last_event_id && !(r->last_event_id = strdup(in.last_event_id)))
        abort();
    r->phase = strcmp(req->method, "POST") == 0 ? RQ_BODY : RQ_CALLING;
    *req->req_cls = r;
    *out = r;
    mcp_verdict_cleanup(&v);
    return MHD_YES;
}

/* Appends a body chunk, within the settings' limit. A body that grows past it (chunked,
 * no length announced) is read and dropped, so that the client still gets its 413 at the
 * end (libmicrohttpd cannot answer in the middle of an upload), up to MCP_BODY_DISCARD more
 * bytes; past that the connection is simply closed. */
static enum MHD_Result rq_body_chunk(mcp_req *r, edge_http_req *req)
{
    size_t n = *req->upload_data_size;
    uint64_t limit = r->set->cfg.body_limit;

    *req->upload_data_size = 0;
    if (r->body_over || r->body_len + n > limit) {
        if (!r->body_over) {
            r->body_over = true;
            free(r->body);
            r->body = NULL;
            r->body_cap = 0;
        }
        r->body_len += n;
        if (r->body_len > limit + MCP_BODY_DISCARD) {
            log_info("oversized body dropped", "bytes=%zu limit=%" PRIu64, r->body_len, limit);
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;

        while (cap < r->body_len + n + 1)
            cap *= 2;
        if (!(r->body = realloc(r->body, cap)))
            abort();
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, req->upload_data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return MHD_YES;
}

/* The body is complete: body rules, then the calls. */
static enum MHD_Result rq_body_done(mcp_req *r, edge_http_req *req)
{
    mcp_rules_in in;
    mcp_verdict v;
    enum MHD_Result rc;

    if (r->body_over) {
        char msg[96];

        snprintf(msg, sizeof msg, "Payload Too Large: body over %" PRIu64 " bytes",
                 r->set->cfg.body_limit);
        r->phase = RQ_ANSWERED;
        mx_answered(r, 413, false);
        return reply_error(r->conn, 413, JR_SERVER_ERROR, msg, NULL, NULL, NULL);
    }
    if (!r->body && !(r->body = strdup("")))
        abort();
    rules_in(req, r->set->auth_header, &in);
    mcp_rules_head(&r->set->cfg, &in, &v);
    mcp_rules_body(&r->set->cfg, &in, r->body, r->body_len, &v, &r->jb);
    if (v.status) {
        r->phase = RQ_ANSWERED;
        mx_answered(r, v.status, false);
        rc = reply_verdict(r->conn, &v);
        mcp_verdict_cleanup(&v);
        return rc;
    }
    rq_adopt(r, &v);
    r->listen = r->stateless && !r->jb->batch && r->jb->msgs[0].method &&
                strcmp(r->jb->msgs[0].method, "subscriptions/listen") == 0;
    r->mx_method = mx_method_of_body(r->jb);
    if (!r->jb->batch && r->jb->msgs[0].id)
        r->err_id = json_incref(r->jb->msgs[0].id);
    mcp_verdict_cleanup(&v);
    r->phase = RQ_CALLING;
    rq_start(r);
    return rq_answer_now(r);
}

enum MHD_Result edge_mcp_handle(void *ud, edge_http_req *req)
{
    edge_mcp *m = ud;
    mcp_req *r = *req->req_cls;
    enum MHD_Result rc;

    if (!r) {
        rc = rq_begin(m, req, &r);
        if (!r)
            return rc;
        if (r->phase == RQ_BODY && req->has_body)
            return MHD_YES; /* the body comes next */
        if (r->phase == RQ_CALLING) {
            rq_start(r);
            return rq_answer_now(r);
        }
    }
    switch (r->phase) {
    case RQ_BODY:
        if (*req->upload_data_size > 0)
            return rq_body_chunk(r, req);
        return rq_body_done(r, req);
    case RQ_CALLING:
        return rq_answer_now(r);
    case RQ_STREAMING:
    case RQ_ANSWERED:
    default:
        /* libmicrohttpd may still hand us the rest of a body we answered early */
        *req->upload_data_size = 0;
        return MHD_YES;
    }
}

/* ---- Subscribe events (polling thread) ------------------------------------------------ */

typedef struct {
    const char *session;
    const char *stream_id;
} stream_key;

static bool keep_stream(const mcp_req *r, const void *arg)
{
    const stream_key *k = arg;

    return is_attached_kind(r) && strcmp(r->session, k->session) == 0 &&
           strcmp(r->stream_id, k->stream_id) == 0;
}

void edge_mcp_stream_message(edge_mcp *m, const Mcphub__V1__StreamMessage *sm)
{
    stream_key k = {sm->session_id, sm->stream_id};
    mcp_req **v;
    size_t n;

    v = reg_collect(m, sm->session_id, keep_stream, &k, &n);
    if (n == 0) {
        char sid[64], stid[64];

        edge_link_clean(sid, sizeof sid, sm->session_id);
        edge_link_clean(stid, sizeof stid, sm->stream_id);
        log_debug("stream message for no stream here", "session=%s stream=%s", sid, stid);
    }
    for (size_t i = 0; i < n; i++) {
        mcp_req *r = v[i];

        pthread_mutex_lock(&r->mu);
        if (!r->released)
            rq_emit(r, sm->event_id, sm->message_json);
        rq_wake(r);
        pthread_mutex_unlock(&r->mu);
    }
    reg_release(v, n);
}

void edge_mcp_session_ended(edge_mcp *m, const char *session_id)
{
    mcp_req **v;
    size_t n;

    v = reg_collect(m, session_id, keep_session, session_id, &n);
    for (size_t i = 0; i < n; i++) {
        mcp_req *r = v[i];

        pthread_mutex_lock(&r->mu);
        r->session_ended = true;
        rq_fail(r, 404, JR_SESSION_NOT_FOUND, "Session not found");
        rq_cancel_calls(r);
        r->done = true;
        rq_wake(r);
        pthread_mutex_unlock(&r->mu);
    }
    reg_release(v, n);
}

static bool keep_attached(const mcp_req *r, const void *arg)
{
    return is_attached_kind(r);
}

/* What a draining edge closes at once: the standalone streams and 2026 listen streams, whose
 * clients reopen them elsewhere (the rest are calls that finish). */
static bool keep_standing(const mcp_req *r, const void *arg)
{
    return is_attached_kind(r) || r->listen;
}

void edge_mcp_control_lost(edge_mcp *m)
{
    mcp_req **v;
    size_t n;

    v = reg_collect(m, NULL, keep_attached, NULL, &n);
    if (n)
        log_info("closing streams: control lost", "streams=%zu", n);
    for (size_t i = 0; i < n; i++) {
        mcp_req *r = v[i];

        pthread_mutex_lock(&r->mu);
        r->lost = true;
        rq_fail(r, 503, JR_SERVER_ERROR, "Service Unavailable: control unreachable");
        r->done = true;
        rq_wake(r);
        pthread_mutex_unlock(&r->mu);
    }
    reg_release(v, n);
}

/* ---- heartbeat ----------------------------------------------------------------------- */

static bool keep_streaming(const mcp_req *r, const void *arg)
{
    return true; /* decided under the request's own lock below */
}

static void mcp_heartbeat(edge_mcp *m)
{
    int64_t now = mcp_now_ms();
    mcp_req **v;
    size_t n;

    v = reg_collect(m, NULL, keep_streaming, NULL, &n);
    /* Thousands of streams that closed leave their memory in the allocator's free lists:
     * hand it back once most of them are gone. */
    if (n > m->trim_peak)
        m->trim_peak = n;
    if (m->trim_peak >= 1024 && n < m->trim_peak / 4) {
        malloc_trim(0);
        m->trim_peak = n;
    }
    for (size_t i = 0; i < n; i++) {
        mcp_req *r = v[i];

        pthread_mutex_lock(&r->mu);
        if (r->streaming && !r->done && !r->released && !r->hung_up &&
            edge_http_peer_gone(r->conn)) {
            /* libmicrohttpd does not read a suspended connection, so it would learn that
             * the client left only when the next heartbeat fails to be written: end the
             * stream now (for a legacy /sse stream, its session with it). */
            log_debug("client closed its stream", "stream=%s", r->stream_id);
            r->hung_up = true;
            rq_wake(r);
        } else if (r->streaming && !r->done && now - r->last_write_ms >= m->heartbeat_ms) {
            r->ping_due = true;
            rq_wake(r);
        } else if (r->op == MCP_OP_REQUESTS && !r->streaming && r->ans == ANS_NONE &&
                   !r->released && edge_http_peer_gone(r->conn)) {
            /* A client that hangs up before its answer is decided (its connection is
             * suspended, so libmicrohttpd does not look at it) cancels its calls: for the
             * 2026 revision that is what cancellation is. */
            log_debug("client went away", "stream=%s", r->stream_id);
            rq_cancel_calls(r);
        }
        pthread_mutex_unlock(&r->mu);
    }
    reg_release(v, n);
}

static void *mcp_ticker(void *arg)
{
    edge_mcp *m = arg;
    int tick = m->heartbeat_ms / 4;

    if (tick < 20)
        tick = 20;
    if (tick > 1000)
        tick = 1000;
    pthread_mutex_lock(&m->mu);
    while (!m->ticker_stop) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += tick / 1000;
        ts.tv_nsec += (long)(tick % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        /* Only a stop signals ticker_cv; any other return before the tick is due is spurious:
         * sleep on until the same deadline. */
        while (!m->ticker_stop && pthread_cond_timedwait(&m->ticker_cv, &m->mu, &ts) != ETIMEDOUT)
            ;
        if (m->ticker_stop)
            break;
        pthread_mutex_unlock(&m->mu);
        mcp_heartbeat(m);
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static void parse_hosts(edge_mcp *m, const char *list)
{
    const char *p = list;

    while (p && *p) {
        size_t n = strcspn(p, ",");
        size_t s = 0;

        while (s < n && (p[s] == ' ' || p[s] == '\t'))
            s++;
        while (n > s && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n > s) {
            if (!(m->flag_hosts = realloc(m->flag_hosts,
                                          (m->n_flag_hosts + 1) * sizeof *m->flag_hosts)) ||
                !(m->flag_hosts[m->n_flag_hosts] = strndup(p + s, n - s)))
                abort();
            m->n_flag_hosts++;
        }
        p += strcspn(p, ",");
        if (*p == ',')
            p++;
    }
}

edge_mcp *edge_mcp_new(const edge_mcp_opts *opts)
{
    edge_mcp *m = calloc(1, sizeof *m);
    pthread_condattr_t attr;

    if (!m || !(m->edge_id = strdup(opts->edge_id ? opts->edge_id : "")))
        abort();
    m->cli = opts->cli;
    m->link = opts->link;
    m->loopback = opts->loopback;
    parse_hosts(m, opts->allowed_hosts);
    m->max_streams = opts->max_streams ? opts->max_streams : EDGE_MCP_DEFAULT_MAX_STREAMS;
    m->stream_buffer = opts->stream_buffer ? opts->stream_buffer : EDGE_MCP_DEFAULT_STREAM_BUFFER;
    m->heartbeat_ms = (int)(opts->heartbeat_ms ? opts->heartbeat_ms
                                               : EDGE_MCP_DEFAULT_HEARTBEAT_MS);
    m->retry_ms = (int)opts->sse_retry_ms;
    m->metrics = opts->metrics;
    pthread_mutex_init(&m->cli_mu, NULL);
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &attr);
    pthread_cond_init(&m->ticker_cv, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&m->ticker, NULL, mcp_ticker, m) != 0)
        abort();
    m->ticker_started = true;
    return m;
}

unsigned edge_mcp_streams(edge_mcp *m)
{
    unsigned n;

    pthread_mutex_lock(&m->mu);
    n = m->nstreams;
    pthread_mutex_unlock(&m->mu);
    return n;
}

static void mcp_stop_ticker(edge_mcp *m)
{
    pthread_mutex_lock(&m->mu);
    m->ticker_stop = true;
    pthread_cond_signal(&m->ticker_cv);
    pthread_mutex_unlock(&m->mu);
    if (m->ticker_started) {
        pthread_join(m->ticker, NULL);
        m->ticker_started = false;
    }
}

/* Waits (m->mu held) until no request is registered, and with detaches no detach is
 * pending either, or until the monotonic time until (ms). */
static void mcp_wait_until_idle(edge_mcp *m, int64_t until, bool detaches)
{
    while ((m->nregistered > 0 || (detaches && m->ndetach > 0)) && mcp_now_ms() < until) {
        struct timespec ts;
        int64_t left = until - mcp_now_ms();

        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)(left / 1000);
        ts.tv_nsec += (long)(left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
    }
}

/* Ends the registered requests keep selects, as the edge stops: 503 for those not answered
 * yet, their streams closed. Their calls to control are cancelled when cancel_all, else only
 * listen streams' (control then ends those subscriptions; other calls finish). Returns how
 * many. */
static size_t mcp_stop_where(edge_mcp *m, bool (*keep)(const mcp_req *, const void *),
                             bool cancel_all)
{
    mcp_req **v;
    size_t n;

    v = reg_collect(m, NULL, keep, NULL, &n);
    for (size_t i = 0; i < n; i++) {
        mcp_req *r = v[i];

        pthread_mutex_lock(&r->mu);
        rq_fail(r, 503, JR_SERVER_ERROR, "Service Unavailable: edge stopping");
        if (cancel_all || r->listen)
            rq_cancel_calls(r);
        r->done = true;
        r->shutdown = true;
        rq_wake(r);
        pthread_mutex_unlock(&r->mu);
    }
    reg_release(v, n);
    return n;
}

size_t edge_mcp_drain(edge_mcp *m, int wait_ms)
{
    int64_t until = mcp_now_ms() + wait_ms;
    size_t n, left;

    pthread_mutex_lock(&m->mu);
    m->stopping = true; /* new requests: 503 "edge stopping" */
    pthread_mutex_unlock(&m->mu);
    n = mcp_stop_where(m, keep_standing, false);
    log_info("draining: closing standalone streams", "streams=%zu", n);
    /* What is left are calls in flight: they finish on their own. */
    pthread_mutex_lock(&m->mu);
    mcp_wait_until_idle(m, until, false);
    left = m->nregistered;
    pthread_mutex_unlock(&m->mu);
    return left;
}

void edge_mcp_shutdown(edge_mcp *m, int wait_ms)
{
    int64_t until = mcp_now_ms() + wait_ms;

    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_mutex_unlock(&m->mu);
    mcp_stop_where(m, keep_all, true);

    pthread_mutex_lock(&m->mu);
    mcp_wait_until_idle(m, until, true);
    if (m->nregistered > 0 || m->ndetach > 0)
        log_warn("streams still open at shutdown", "streams=%zu detaches=%u", m->nregistered,
                 m->ndetach);
    pthread_mutex_unlock(&m->mu);
    mcp_stop_ticker(m);
}

void edge_mcp_free(edge_mcp *m)
{
    if (!m)
        return;
    mcp_stop_ticker(m);
    settings_unref(m->set);
    strv_free(m->flag_hosts, m->n_flag_hosts);
    pthread_cond_destroy(&m->ticker_cv);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->cli_mu);
    free(m->edge_id);
    free(m);
}
