/* rmt: MCP's HTTP transports toward one remote server (see rmt.h), on libcurl's multi
 * interface driven by libuv: one uv_poll per socket curl asks us to watch, one timer for
 * curl's timeouts. Messages parsed inside curl's callbacks are queued and handed to the
 * owner only after curl returns, so the owner may send or free from its callbacks. */
#include "rmt.h"

#include "log.h"
#include "sse.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RMT_DELETE_TIMEOUT_MS 2000   /* the goodbye DELETE of a session */
#define RMT_BACKOFF_MIN_MS 250       /* GET stream reconnects */
#define RMT_BACKOFF_MAX_MS 30000
#define RMT_IGNORED_BODY_MAX 65536   /* error pages and other bodies we do not read */
#define RMT_SESSION_ID_MAX 256
#define RMT_WHY_MAX 256
#define RMT_USER_AGENT "mcphub/0.1"

typedef enum xkind {
    X_POST = 0,  /* one message */
    X_STREAM,    /* Streamable HTTP: the GET stream */
    X_LEGACY,    /* legacy HTTP+SSE: the GET stream that carries everything */
    X_DELETE,    /* Streamable HTTP: ending our session */
} xkind;

typedef enum xbody {
    XB_UNKNOWN = 0, /* no body byte seen yet */
    XB_JSON,
    XB_SSE,
    XB_IGNORE,      /* an error status or a content type we do not read */
} xbody;

typedef struct xfer xfer;
struct xfer {
    xfer *prev, *next;        /* rmt.xfers */
    rmt *t;
    CURL *easy;
    xkind kind;
    struct curl_slist *hdrs;
    char *body;               /* POST: the serialized message (owned) */
    size_t body_len;
    json_t *req_id;           /* POST of a request: its id (new reference) */
    bool is_init;             /* the first POST, or notifications/initialized: later ones
                                 wait for it */
    bool answered;            /* the response to req_id arrived */
    bool too_big;             /* aborted: a body or event over max_message */
    bool had_session;         /* sent with an Mcp-Session-Id */
    bool got_events;
    xbody bk;
    char *buf;                /* XB_JSON: the body so far (bounded by max_message) */
    size_t len, cap;
    size_t ignored;           /* XB_IGNORE: bytes skipped */
    sse *sse;                 /* XB_SSE */
};

typedef struct held held;
struct held {
    held *next;
    char *body;
    size_t len;
    json_t *req_id;
    bool barrier;             /* notifications/initialized: later ones wait for it too */
    struct curl_slist *extra; /* this message's own headers (trace context) */
};

typedef struct delivery delivery;
struct delivery {
    delivery *next;
    json_t *msg;
};

typedef struct rsock rsock;
struct rsock {
    uv_poll_t poll;
    rmt *t;
    curl_socket_t fd;
    rsock *prev, *next;       /* rmt.socks */
};

struct rmt {
    uv_loop_t *loop;
    rmt_kind kind;
    char *url;
    char *name;
    struct curl_slist *user_hdrs; /* "Key: value", from the cfg */
    char *session_id;
    char *version_hdr;            /* "MCP-Protocol-Version: ..." */
    char *endpoint;               /* legacy: where POSTs go */
    char *last_id;                /* GET stream: last event id seen */
    int64_t retry_ms;             /* GET stream: the server's retry, or -1 */
    int64_t backoff_ms;
    int64_t connect_timeout_ms;
    size_t max_message;
    size_t max_queue;
    size_t queued;                /* bytes held or being POSTed */
    rmt_callbacks cbs;
    void *ud;

    CURLM *multi;
    uv_timer_t curl_timer;        /* curl's own timeouts */
    uv_timer_t wait_timer;        /* GET reconnect delay; legacy endpoint deadline */
    int open_handles;             /* uv handles not closed yet (timers, polls) */
    rsock *socks;
    xfer *xfers;
    xfer *stream;                 /* the X_STREAM or X_LEGACY transfer, if open */
    held *held_head, **held_tail;
    delivery *dq_head, **dq_tail;

    bool init_inflight;           /* the first POST (Streamable HTTP) or the POST of
                                     notifications/initialized has not completed */
    bool init_done;
    bool listening;
    bool flush_pending;           /* legacy: the endpoint arrived, send what was held */
    bool closed;                  /* transport unusable: on_closed is queued or ran */
    bool close_pending;
    rmt_close_reason close_reason;
    char close_why[RMT_WHY_MAX];
    bool freed;                   /* the owner is gone: no callback any more */
    bool draining;                /* only the goodbye DELETE is left */
    bool destroyed;               /* curl is gone; waiting for uv handles to close */
    int depth;                    /* inside rmt_pump */
    rmt_stats st;
};

static void rmt_pump(rmt *t);
static void rmt_teardown(rmt *t);

/* ------------------------------------------------------------------ helpers */

static char *xstrdup(const char *s)
{
    char *d = strdup(s);

    if (!d)
        abort();
    return d;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);

    if (!p)
        abort();
    return p;
}

static struct curl_slist *slist_add(struct curl_slist *l, const char *line)
{
    struct curl_slist *n = curl_slist_append(l, line);

    if (!n)
        abort();
    return n;
}

static struct curl_slist *slist_addf(struct curl_slist *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static struct curl_slist *slist_addf(struct curl_slist *l, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line)
        return l; /* longer than any header we build from validated parts */
    return slist_add(l, line);
}

static struct curl_slist *slist_copy(struct curl_slist *l, const struct curl_slist *from)
{
    for (; from; from = from->next)
        l = slist_add(l, from->data);
    return l;
}

static bool is_token_char(char c)
{
    return c > 0x20 && c < 0x7f && !strchr("()<>@,;:\\\"/[]?={}", c);
}

/* A header value from the cfg must not smuggle a line break (or any control byte). */
static bool header_ok(const cfg_kv *kv)
{
    if (!kv->key || !kv->key[0] || !kv->value)
        return false;
    for (const char *p = kv->key; *p; p++)
        if (!is_token_char(*p))
            return false;
    for (const unsigned char *p = (const unsigned char *)kv->value; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

static bool is_http_url(const char *url)
{
    return url && (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0);
}

static pthread_once_t rmt_curl_once = PTHREAD_ONCE_INIT;

static void rmt_curl_init(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        abort();
}

/* ------------------------------------------------------------------ delivery */

static void enqueue(rmt *t, json_t *msg /* steals */)
{
    delivery *d = xcalloc(1, sizeof *d);

    d->msg = msg;
    *t->dq_tail = d;
    t->dq_tail = &d->next;
}

/* A response in place of one the server did not give: every request gets exactly one. */
static void make_error(rmt *t, json_t *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void make_error(rmt *t, json_t *id, const char *fmt, ...)
{
    char text[RMT_WHY_MAX];
    va_list ap;
    json_t *msg;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    msg = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error", "code",
                    -32000, "message", text);
    if (!msg)
        abort();
    enqueue(t, msg);
}

static void rmt_close(rmt *t, rmt_close_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The transport is done for: the owner hears it (after messages already queued) once the
 * current pump ends, and everything is released after that. */
static void rmt_close(rmt *t, rmt_close_reason reason, const char *fmt, ...)
{
    va_list ap;

    if (t->closed)
        return;
    t->closed = true;
    t->close_pending = true;
    t->close_reason = reason;
    va_start(ap, fmt);
    vsnprintf(t->close_why, sizeof t->close_why, fmt, ap);
    va_end(ap);
    uv_timer_stop(&t->wait_timer);
}

/* One event's or body's JSON: an object, or a batch of objects. */
static void take_json(xfer *x, const char *text, size_t len)
{
    rmt *t = x->t;
    json_error_t err;
    json_t *v = json_loadb(text, len, 0, &err);
    size_t n = 1;

    if (!v || !(json_is_object(v) || json_is_array(v))) {
        log_warn("upstream sent a message that is not JSON-RPC", "server=%s error=\"%s\"",
                 t->name, v ? "not an object" : err.text);
        json_decref(v);
        return;
    }
    if (json_is_array(v))
        n = json_array_size(v);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_is_array(v) ? json_array_get(v, i) : v;
        json_t *id;

        if (!json_is_object(m))
            continue;
        id = json_object_get(m, "id");
        if (x->req_id && id && !json_object_get(m, "method") && json_equal(id, x->req_id))
            x->answered = true;
        enqueue(t, json_incref(m));
    }
    json_decref(v);
}

/* ------------------------------------------------------------------ transfers */

static void xfer_free(xfer *x)
{
    rmt *t;

    if (!x)
        return;
    t = x->t;
    if (x->easy) {
        curl_multi_remove_handle(t->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    if (x->prev)
        x->prev->next = x->next;
    else
        t->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    if (t->stream == x)
        t->stream = NULL;
    if (x->kind == X_POST)
        t->queued -= x->body_len;
    curl_slist_free_all(x->hdrs);
    json_decref(x->req_id);
    sse_free(x->sse);
    free(x->body);
    free(x->buf);
    free(x);
}

static bool status_ok(long status)
{
    return status >= 200 && status < 300;
}

static int on_sse_event(void *ud, const sse_event *ev)
{
    xfer *x = ud;
    rmt *t = x->t;

    x->got_events = true;
    if (x->kind == X_STREAM) {
        if (ev->id && (!t->last_id || strcmp(ev->id, t->last_id) != 0)) {
            free(t->last_id);
            t->last_id = ev->id[0] ? xstrdup(ev->id) : NULL;
        }
        /* Each stream has its own parser, whose retry_ms is -1 until that stream sets one;
         * the reconnection time is the EventSource's, so a stream that does not repeat
         * `retry:` keeps the one an earlier stream set. */
        if (ev->retry_ms >= 0)
            t->retry_ms = ev->retry_ms;
    }
    /* An event with empty data only primes the stream with an id to resume from. */
    if (ev->data_len > 0 && strcmp(ev->event, "message") == 0)
        take_json(x, ev->data, ev->data_len);
    return 0;
}

static void flush_held(rmt *t);

/* Legacy: the endpoint event names where to POST, relative to the stream's URL and on the
 * same origin (a server must not send us, with our headers, elsewhere). */
static int set_endpoint(rmt *t, const char *data)
{
    CURLU *base = curl_url(), *ep = NULL;
    char *b_scheme = NULL, *b_host = NULL, *b_port = NULL;
    char *e_scheme = NULL, *e_host = NULL, *e_port = NULL, *full = NULL;
    int rc = -EPROTO;

    if (!base)
        abort();
    if (curl_url_set(base, CURLUPART_URL, t->url, 0) != CURLUE_OK)
        goto out;
    if (!(ep = curl_url_dup(base)))
        abort();
    if (curl_url_set(ep, CURLUPART_URL, data, 0) != CURLUE_OK)
        goto out;
    if (curl_url_get(base, CURLUPART_SCHEME, &b_scheme, 0) != CURLUE_OK ||
        curl_url_get(base, CURLUPART_HOST, &b_host, 0) != CURLUE_OK ||
        curl_url_get(base, CURLUPART_PORT, &b_port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
        curl_url_get(ep, CURLUPART_SCHEME, &e_scheme, 0) != CURLUE_OK ||
        curl_url_get(ep, CURLUPART_HOST, &e_host, 0) != CURLUE_OK ||
        curl_url_get(ep, CURLUPART_PORT, &e_port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
        curl_url_get(ep, CURLUPART_URL, &full, 0) != CURLUE_OK)
        goto out;
    if (strcasecmp(b_scheme, e_scheme) != 0 || strcasecmp(b_host, e_host) != 0 ||
        strcmp(b_port, e_port) != 0)
        goto out;
    t->endpoint = xstrdup(full);
    rc = 0;
out:
    curl_free(b_scheme);
    curl_free(b_host);
    curl_free(b_port);
    curl_free(e_scheme);
    curl_free(e_host);
    curl_free(e_port);
    curl_free(full);
    curl_url_cleanup(ep);
    curl_url_cleanup(base);
    return rc;
}

static int on_legacy_event(void *ud, const sse_event *ev)
{
    xfer *x = ud;
    rmt *t = x->t;

    if (strcmp(ev->event, "endpoint") != 0)
        return on_sse_event(ud, ev);
    if (t->endpoint)
        return 0; /* one endpoint per stream; later ones mean nothing */
    if (set_endpoint(t, ev->data) < 0) {
        rmt_close(t, RMT_CLOSED_PROTOCOL, "the endpoint event names another origin or no URL");
        return -1;
    }
    uv_timer_stop(&t->wait_timer);
    log_debug("upstream endpoint", "server=%s endpoint=%s", t->name, t->endpoint);
    t->flush_pending = true; /* curl refuses new transfers from inside its callbacks */
    return 0;
}

static int on_sse_too_long(void *ud, sse_error err)
{
    xfer *x = ud;

    (void)err;
    log_warn("upstream event too large, dropped", "server=%s limit=%zu", x->t->name,
             x->t->max_message);
    return 0;
}

/* Decides, at the first body byte, how to read the body. */
static void pick_body(xfer *x)
{
    long status = 0;
    const char *ct = NULL;

    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &ct);
    x->bk = XB_IGNORE;
    if (!status_ok(status) || !ct)
        return;
    if (strncasecmp(ct, "text/event-stream", 17) == 0) {
        x->bk = XB_SSE;
        x->sse = sse_new(x->t->max_message);
        sse_set_error_fn(x->sse, on_sse_too_long);
    } else if (strncasecmp(ct, "application/json", 16) == 0 && x->kind == X_POST) {
        x->bk = XB_JSON;
    }
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    xfer *x = ud;
    rmt *t = x->t;
    size_t len = size * nmemb;

    if (t->closed || t->freed)
        return 0; /* aborts the transfer */
    if (x->bk == XB_UNKNOWN)
        pick_body(x);
    switch (x->bk) {
    case XB_JSON:
        if (len > t->max_message - x->len) {
            x->too_big = true;
            return 0;
        }
        if (x->len + len > x->cap) {
            size_t cap = x->cap ? x->cap : 4096;
            char *b;

            while (cap < x->len + len)
                cap *= 2;
            if (cap > t->max_message)
                cap = t->max_message;
            if (!(b = realloc(x->buf, cap)))
                abort();
            x->buf = b;
            x->cap = cap;
        }
        memcpy(x->buf + x->len, ptr, len);
        x->len += len;
        return len;
    case XB_SSE:
        if (sse_feed(x->sse, ptr, len, x->kind == X_LEGACY ? on_legacy_event : on_sse_event,
                     x) != 0)
            return 0;
        return len;
    default:
        x->ignored += len;
        return x->ignored > RMT_IGNORED_BODY_MAX ? 0 : len;
    }
}

static size_t on_header(char *buf, size_t size, size_t nmemb, void *ud)
{
    xfer *x = ud;
    rmt *t = x->t;
    size_t len = size * nmemb;
    static const char name[] = "mcp-session-id:";
    size_t nl = sizeof name - 1;

    if (t->kind != RMT_STREAMABLE_HTTP || t->session_id || len <= nl ||
        strncasecmp(buf, name, nl) != 0)
        return len;
    const char *v = buf + nl, *e = buf + len;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (e == v || (size_t)(e - v) > RMT_SESSION_ID_MAX)
        return len;
    for (const char *p = v; p < e; p++)
        if (*p < 0x21 || *p > 0x7e)
            return len; /* the spec allows visible ASCII only */
    t->session_id = strndup(v, (size_t)(e - v));
    if (!t->session_id)
        abort();
    return len;
}

static xfer *xfer_new(rmt *t, xkind kind, const char *url)
{
    xfer *x = xcalloc(1, sizeof *x);
    CURL *e = curl_easy_init();

    if (!e)
        abort();
    x->t = t;
    x->kind = kind;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)t->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, RMT_USER_AGENT);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    x->hdrs = slist_copy(NULL, t->user_hdrs);
    if (kind != X_LEGACY && t->session_id) {
        x->hdrs = slist_addf(x->hdrs, "Mcp-Session-Id: %s", t->session_id);
        x->had_session = true;
    }
    if (kind != X_LEGACY && t->version_hdr)
        x->hdrs = slist_add(x->hdrs, t->version_hdr);
    x->easy = e;
    x->next = t->xfers;
    if (t->xfers)
        t->xfers->prev = x;
    t->xfers = x;
    return x;
}

static void xfer_go(xfer *x)
{
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
    if (curl_multi_add_handle(x->t->multi, x->easy) != CURLM_OK)
        abort();
}

static void start_post(rmt *t, char *body /* steals */, size_t len, json_t *req_id /* steals */,
                       bool is_init, struct curl_slist *extra /* steals */)
{
    xfer *x = xfer_new(t, X_POST, t->kind == RMT_SSE ? t->endpoint : t->url);

    x->hdrs = slist_copy(x->hdrs, extra);
    curl_slist_free_all(extra);
    x->body = body;
    x->body_len = len;
    x->req_id = req_id;
    x->is_init = is_init;
    x->hdrs = slist_add(x->hdrs, "Content-Type: application/json");
    x->hdrs = slist_add(x->hdrs, "Accept: application/json, text/event-stream");
    curl_easy_setopt(x->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    xfer_go(x);
}

static void start_stream(rmt *t)
{
    xfer *x = xfer_new(t, t->kind == RMT_SSE ? X_LEGACY : X_STREAM, t->url);

    x->hdrs = slist_add(x->hdrs, "Accept: text/event-stream");
    if (x->kind == X_STREAM && t->last_id) {
        x->hdrs = slist_addf(x->hdrs, "Last-Event-ID: %s", t->last_id);
        t->st.resumes++;
    }
    t->st.streams++;
    t->stream = x;
    xfer_go(x);
}

static void start_delete(rmt *t)
{
    xfer *x = xfer_new(t, X_DELETE, t->url);

    curl_easy_setopt(x->easy, CURLOPT_CUSTOMREQUEST, "DELETE");
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long)RMT_DELETE_TIMEOUT_MS);
    xfer_go(x);
}

static void flush_held(rmt *t)
{
    while (t->held_head && !t->closed && !t->init_inflight) {
        held *h = t->held_head;

        t->held_head = h->next;
        if (!t->held_head)
            t->held_tail = &t->held_head;
        /* A held notifications/initialized goes alone; the rest follow once it completed
         * (post_done flushes again). */
        if (h->barrier)
            t->init_inflight = true;
        start_post(t, h->body, h->len, h->req_id, h->barrier, h->extra);
        free(h);
    }
}

static void post_done(xfer *x, CURLcode res, long status)
{
    rmt *t = x->t;

    t->st.posts++;
    if (x->is_init) {
        t->init_inflight = false;
        t->init_done = true;
    }
    if (res == CURLE_OK && x->bk == XB_JSON)
        take_json(x, x->buf, x->len);
    if (status != 0 && !status_ok(status))
        t->st.http_errors++;
    /* Legacy servers answer on the stream: a POST's 2xx says only "accepted". */
    bool on_stream = t->kind == RMT_SSE && res == CURLE_OK && status_ok(status);
    if (x->req_id && !x->answered && !on_stream) {
        if (x->too_big)
            make_error(t, x->req_id, "upstream's answer is larger than %zu bytes",
                       t->max_message);
        else if (status == 0)
            make_error(t, x->req_id, "upstream server unreachable: %s",
                       curl_easy_strerror(res));
        else if (!status_ok(status))
            make_error(t, x->req_id, "upstream answered HTTP %ld", status);
        else if (res != CURLE_OK)
            make_error(t, x->req_id, "upstream connection broke: %s", curl_easy_strerror(res));
        else
            make_error(t, x->req_id, "upstream answered HTTP %ld without a response", status);
    }
    if (status == 0 && res != CURLE_OK)
        rmt_close(t, RMT_CLOSED_UNREACHABLE, "%s", curl_easy_strerror(res));
    else if (status == 404 && x->had_session)
        rmt_close(t, RMT_CLOSED_SESSION_LOST, "the server no longer knows session %s",
                  t->session_id);
    else if (x->is_init)
        flush_held(t);
}

static void on_wait_timer(uv_timer_t *h)
{
    rmt *t = h->data;

    if (t->closed || t->freed)
        return;
    if (t->kind == RMT_SSE) {
        if (!t->endpoint)
            rmt_close(t, RMT_CLOSED_PROTOCOL, "no endpoint event within %" PRId64 " ms",
                      t->connect_timeout_ms);
        rmt_pump(t);
        return;
    }
    if (t->listening && !t->stream)
        start_stream(t);
}

static void stream_done(xfer *x, CURLcode res, long status)
{
    rmt *t = x->t;
    int64_t delay;

    if (x->kind == X_LEGACY) {
        if (status == 0)
            rmt_close(t, RMT_CLOSED_UNREACHABLE, "%s", curl_easy_strerror(res));
        else if (!status_ok(status))
            rmt_close(t, RMT_CLOSED_UNREACHABLE, "the SSE stream was answered HTTP %ld", status);
        else if (x->bk != XB_SSE)
            rmt_close(t, RMT_CLOSED_PROTOCOL, "the SSE stream is not text/event-stream");
        else
            rmt_close(t, RMT_CLOSED_STREAM_ENDED, "the SSE stream ended");
        return;
    }
    if (status == 405) {
        t->listening = false; /* the server offers no GET stream */
        return;
    }
    if (status == 404 && x->had_session) {
        rmt_close(t, RMT_CLOSED_SESSION_LOST, "the server no longer knows session %s",
                  t->session_id);
        return;
    }
    if (status == 0 && res != CURLE_OK) {
        rmt_close(t, RMT_CLOSED_UNREACHABLE, "%s", curl_easy_strerror(res));
        return;
    }
    if (status_ok(status) && x->got_events)
        t->backoff_ms = RMT_BACKOFF_MIN_MS;
    delay = t->retry_ms >= 0 ? t->retry_ms : t->backoff_ms;
    if (t->retry_ms < 0 || !status_ok(status)) {
        t->backoff_ms *= 2;
        if (t->backoff_ms > RMT_BACKOFF_MAX_MS)
            t->backoff_ms = RMT_BACKOFF_MAX_MS;
    }
    log_debug("upstream stream ended", "server=%s status=%ld reconnect_ms=%" PRId64, t->name,
              status, delay);
    uv_timer_start(&t->wait_timer, on_wait_timer, (uint64_t)delay, 0);
}

static void xfer_done(xfer *x, CURLcode res)
{
    rmt *t = x->t;
    long status = 0;

    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (x->bk == XB_UNKNOWN)
        x->bk = XB_IGNORE; /* no body at all */
    if (!t->closed && !t->freed) {
        if (x->kind == X_POST)
            post_done(x, res, status);
        else if (x->kind == X_STREAM || x->kind == X_LEGACY)
            stream_done(x, res, status);
    }
    if (x->kind == X_DELETE)
        log_debug("upstream session deleted", "server=%s status=%ld", t->name, status);
    xfer_free(x);
}

/* ------------------------------------------------------------------ curl <-> libuv */

static void on_handle_closed(uv_handle_t *h)
{
    rmt *t;

    if (h->type == UV_POLL) {
        rsock *s = h->data;

        t = s->t;
        free(s);
    } else {
        t = h->data;
    }
    if (--t->open_handles == 0 && t->destroyed)
        free(t);
}

static void sock_close(rmt *t, rsock *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        t->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    rsock *s = h->data;
    rmt *t = s->t;
    int flags = 0, running;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(t->multi, s->fd, flags, &running);
    rmt_pump(t);
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    rmt *t = userp;
    rsock *s = socketp;
    int events = 0;

    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            sock_close(t, s);
            if (!t->destroyed)
                curl_multi_assign(t->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof *s);
        s->t = t;
        s->fd = fd;
        if (uv_poll_init_socket(t->loop, &s->poll, fd) < 0)
            abort();
        s->poll.data = s;
        t->open_handles++;
        s->next = t->socks;
        if (t->socks)
            t->socks->prev = s;
        t->socks = s;
        curl_multi_assign(t->multi, fd, s);
    }
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static void on_curl_timer_fired(uv_timer_t *h)
{
    rmt *t = h->data;
    int running;

    curl_multi_socket_action(t->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    rmt_pump(t);
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    rmt *t = userp;

    (void)m;
    if (t->destroyed)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&t->curl_timer);
    else
        uv_timer_start(&t->curl_timer, on_curl_timer_fired, (uint64_t)timeout_ms, 0);
    return 0;
}

/* After curl ran: finished transfers, then the owner's callbacks, then freeing if the owner
 * let go meanwhile. */
static void rmt_pump(rmt *t)
{
    CURLMsg *m;
    int left;

    t->depth++;
    while ((m = curl_multi_info_read(t->multi, &left))) {
        if (m->msg == CURLMSG_DONE) {
            CURL *e = m->easy_handle;
            CURLcode res = m->data.result;
            void *x = NULL; /* what CURLOPT_PRIVATE was given: an xfer */

            curl_easy_getinfo(e, CURLINFO_PRIVATE, &x);
            if (x)
                xfer_done(x, res);
        }
    }
    if (t->flush_pending) {
        t->flush_pending = false;
        flush_held(t);
    }
    while (t->dq_head) {
        delivery *d = t->dq_head;

        t->dq_head = d->next;
        if (!t->dq_head)
            t->dq_tail = &t->dq_head;
        if (!t->freed) {
            t->st.messages_in++;
            t->cbs.on_message(t->ud, d->msg);
        }
        json_decref(d->msg);
        free(d);
    }
    if (t->close_pending && !t->freed) {
        t->close_pending = false;
        t->freed = true; /* the owner lets go of a closed transport in on_closed */
        t->cbs.on_closed(t->ud, t->close_reason, t->close_why);
    }
    t->depth--;
    if (t->depth == 0 && t->freed)
        rmt_teardown(t);
}

/* ------------------------------------------------------------------ lifecycle */

static void rmt_destroy(rmt *t)
{
    t->destroyed = true;
    curl_multi_cleanup(t->multi); /* may report sockets removed: closes their polls */
    t->multi = NULL;
    while (t->socks)
        sock_close(t, t->socks);
    uv_close((uv_handle_t *)&t->curl_timer, on_handle_closed);
    uv_close((uv_handle_t *)&t->wait_timer, on_handle_closed);
    curl_slist_free_all(t->user_hdrs);
    free(t->url);
    free(t->name);
    free(t->session_id);
    free(t->version_hdr);
    free(t->endpoint);
    free(t->last_id);
    /* t itself goes when its last handle has closed */
}

/* The owner is gone: stop every transfer, say goodbye to the server's session if it still
 * has one, and release everything once that ends. */
static void rmt_teardown(rmt *t)
{
    if (t->draining || t->destroyed) {
        if (t->draining && !t->xfers && !t->destroyed)
            rmt_destroy(t);
        return;
    }
    while (t->held_head) {
        held *h = t->held_head;

        t->held_head = h->next;
        free(h->body);
        json_decref(h->req_id);
        curl_slist_free_all(h->extra);
        free(h);
    }
    t->held_tail = &t->held_head;
    while (t->dq_head) {
        delivery *d = t->dq_head;

        t->dq_head = d->next;
        json_decref(d->msg);
        free(d);
    }
    t->dq_tail = &t->dq_head;
    while (t->xfers)
        xfer_free(t->xfers);
    uv_timer_stop(&t->wait_timer);
    t->draining = true;
    if (t->kind == RMT_STREAMABLE_HTTP && t->session_id && !t->closed) {
        start_delete(t);
        return; /* rmt_pump comes back here when it ends */
    }
    rmt_destroy(t);
}

int rmt_new(uv_loop_t *loop, const rmt_opts *o, const rmt_callbacks *cbs, void *ud,
            rmt **out)
{
    rmt *t;

    *out = NULL;
    if (!o || !is_http_url(o->url) || !cbs || !cbs->on_message || !cbs->on_closed)
        return -EINVAL;
    pthread_once(&rmt_curl_once, rmt_curl_init);
    t = xcalloc(1, sizeof *t);
    t->loop = loop;
    t->kind = o->kind;
    t->url = xstrdup(o->url);
    t->name = xstrdup(o->name ? o->name : "?");
    t->connect_timeout_ms =
        o->connect_timeout_ms > 0 ? o->connect_timeout_ms : RMT_DEFAULT_CONNECT_TIMEOUT_MS;
    t->max_message = o->max_message ? o->max_message : RMT_DEFAULT_MAX_MESSAGE;
    t->max_queue = o->max_queue ? o->max_queue : RMT_DEFAULT_MAX_QUEUE;
    t->retry_ms = -1;
    t->backoff_ms = RMT_BACKOFF_MIN_MS;
    t->cbs = *cbs;
    t->ud = ud;
    t->held_tail = &t->held_head;
    t->dq_tail = &t->dq_head;
    for (size_t i = 0; i < o->n_headers; i++) {
        if (!header_ok(&o->headers[i])) {
            const char *k = o->headers[i].key ? o->headers[i].key : "";
            int klen = 0;

            /* Only the key's leading token characters: a CR/LF in a bad key must not write
             * a forged line into the log. */
            while (k[klen] && klen < 64 && is_token_char(k[klen]))
                klen++;
            log_warn("upstream header skipped: not a valid HTTP header", "server=%s header=%.*s",
                     t->name, klen, k);
            continue;
        }
        t->user_hdrs =
            slist_addf(t->user_hdrs, "%s: %s", o->headers[i].key, o->headers[i].value);
    }
    if (!(t->multi = curl_multi_init()))
        abort();
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETDATA, t);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERDATA, t);
    uv_timer_init(loop, &t->curl_timer);
    uv_timer_init(loop, &t->wait_timer);
    t->curl_timer.data = t;
    t->wait_timer.data = t;
    t->open_handles = 2;
    if (t->kind == RMT_SSE) {
        start_stream(t);
        uv_timer_start(&t->wait_timer, on_wait_timer, (uint64_t)t->connect_timeout_ms, 0);
    }
    *out = t;
    return 0;
}

/* W3C trace context in params._meta (the hub put it there from the client's headers, or
 * the client did) also travels as HTTP headers, where HTTP servers look for it. Values go
 * only when they are short visible ASCII. */
static struct curl_slist *trace_headers(json_t *msg)
{
    json_t *meta = json_object_get(json_object_get(msg, "params"), "_meta");
    static const char *const names[] = {"traceparent", "tracestate"};
    struct curl_slist *l = NULL;

    for (size_t i = 0; i < 2; i++) {
        const char *v = json_string_value(json_object_get(meta, names[i]));
        bool ok = v && v[0] && strlen(v) <= 512;

        for (const char *p = v; ok && *p; p++)
            ok = *p >= 0x20 && *p <= 0x7e;
        if (!ok) {
            if (i == 0)
                return NULL; /* no tracestate without a traceparent */
            continue;
        }
        l = slist_addf(l, "%s: %s", names[i], v);
    }
    return l;
}

int rmt_send(rmt *t, json_t *msg)
{
    char *body;
    size_t len;
    json_t *id, *method, *req_id = NULL;

    if (!json_is_object(msg))
        return -EINVAL;
    if (t->closed || t->freed)
        return -ENOTCONN;
    if (!(body = json_dumps(msg, JSON_COMPACT)))
        abort();
    len = strlen(body);
    if (len > t->max_queue - t->queued) {
        free(body);
        return -ENOBUFS;
    }
    t->queued += len;
    id = json_object_get(msg, "id");
    method = json_object_get(msg, "method");
    if (id && method)
        req_id = json_incref(id);
    /* Each POST travels on its own connection, so two in flight may reach the server in
     * either order. notifications/initialized must be there before any later request (some
     * servers refuse requests until it is), so like initialize it is a barrier: what is sent
     * while it is in flight waits for its answer. A non-empty queue keeps waiting too, so
     * nothing overtakes what is held. */
    struct curl_slist *extra = trace_headers(msg);
    bool barrier = !id && json_is_string(method) &&
                   strcmp(json_string_value(method), "notifications/initialized") == 0;
    if ((t->kind == RMT_SSE && !t->endpoint) || t->init_inflight || t->held_head) {
        held *h = xcalloc(1, sizeof *h);

        h->body = body;
        h->len = len;
        h->req_id = req_id;
        h->barrier = barrier;
        h->extra = extra;
        *t->held_tail = h;
        t->held_tail = &h->next;
        return 0;
    }
    bool first = (t->kind == RMT_STREAMABLE_HTTP && !t->init_done) || barrier;
    if (first)
        t->init_inflight = true;
    start_post(t, body, len, req_id, first, extra);
    return 0;
}

void rmt_set_protocol_version(rmt *t, const char *version)
{
    char line[128];

    if (t->kind != RMT_STREAMABLE_HTTP || !version)
        return;
    for (const char *p = version; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return;
    if (snprintf(line, sizeof line, "MCP-Protocol-Version: %s", version) >= (int)sizeof line)
        return;
    free(t->version_hdr);
    t->version_hdr = xstrdup(line);
}

void rmt_listen(rmt *t)
{
    if (t->kind != RMT_STREAMABLE_HTTP || t->listening || t->closed || t->freed)
        return;
    t->listening = true;
    start_stream(t);
}

bool rmt_ready(const rmt *t)
{
    return t->kind == RMT_STREAMABLE_HTTP || t->endpoint != NULL;
}

const char *rmt_session_id(const rmt *t)
{
    return t->session_id;
}

void rmt_free(rmt *t)
{
    if (!t || t->freed)
        return;
    t->freed = true;
    if (t->depth == 0)
        rmt_teardown(t);
}

void rmt_get_stats(const rmt *t, rmt_stats *out)
{
    *out = t->st;
}
