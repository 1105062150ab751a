/* test_rmt: rmt, the client of MCP's HTTP transports, driven against a scripted fake MCP
 * server (libmicrohttpd on an ephemeral loopback port, one thread per connection). Each test
 * runs its own loop, is bounded in time, and ends with every rmt handle closed (the loop
 * closes cleanly), the server stopped, and no descriptor left open. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "capture.h"
#include "ports.h"
#include "proccheck.h"
#include "uvloop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "rmt.h"
#include "rpc.h"

#define WAIT_MS 5000
#define MAX_RECS 64
#define MAX_UPLOAD (1024 * 1024)

/* For code the server's threads run: cmocka's asserts must stay on the test's thread. */
#define CHECK(x)                                                                     \
    do {                                                                             \
        if (!(x)) {                                                                  \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);    \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* ---------------------------------------------------------------- the fake server */

/* One request as the server saw it. */
typedef struct rec {
    char method[16];
    char path[128];
    char sid_arg[64];     /* the ?sessionId= query argument (legacy POSTs) */
    bool has_session;
    char session[300];    /* Mcp-Session-Id */
    bool has_version;
    char version[64];     /* MCP-Protocol-Version */
    char accept[128];
    char ctype[128];
    bool has_last_id;
    char last_id[64];     /* Last-Event-ID */
    char x_test[64];      /* the X-Test header the tests configure */
    char traceparent[64]; /* W3C trace context headers */
    char tracestate[64];
    bool smuggled;        /* X-Bad or X-Injected arrived: a header that must not */
    json_t *body;         /* POST: its JSON (the server's reference), or NULL */
    char rpc[64];         /* POST: the JSON-RPC method, "" for none */
    int nth;              /* index among the requests with this HTTP method */
    bool init_answered;   /* when it arrived, an initialize had been answered */
    int64_t at_ms;
} rec;

/* What the GET /mcp stream does (Streamable HTTP). */
typedef enum get_mode {
    GET_405 = 0,
    GET_EVENTS, /* two streams with ids that end, then one that stays open */
    GET_RETRY,  /* the same, the first setting retry: */
    GET_GONE,   /* 404: the session is unknown */
} get_mode;

typedef struct chan chan;
typedef struct srv srv;

/* An SSE answer: bytes the connection's thread sends as they come (chunked). */
struct chan {
    srv *s;
    char *buf;
    size_t len, off;
    bool ended;
};

struct srv {
    struct MHD_Daemon *d;
    uint16_t port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* The script: set before srv_start, read-only afterwards. */
    int init_delay_ms;    /* initialize is answered this late */
    int note_delay_ms;    /* notifications are answered (202) this late */
    const char *session;  /* the Mcp-Session-Id the initialize answer carries, or NULL */
    get_mode get;
    int retry_ms;         /* GET_RETRY: the retry the first stream sets */
    const char *legacy_first; /* legacy GET: what the stream starts with */
    size_t big;           /* "big" and "bigsse" answers: padding bytes */
    /* State, under mu. */
    rec recs[MAX_RECS];
    int n_recs;
    int n_get, n_post, n_delete;
    bool init_answered;
    bool stopping;
    chan *cur;            /* the open stream srv_push writes to */
};

typedef struct upload {
    char *buf;
    size_t len;
    bool too_big;
} upload;

typedef struct answer {
    unsigned status;
    const char *ctype;
    char *body;          /* malloc'd, or NULL */
    const char *session; /* an Mcp-Session-Id to send */
    int delay_ms;
    bool stream;         /* sent through a chan, chunked */
    bool keep_open;      /* the chan stays open for srv_push until srv_end (or stop) */
    bool is_init;
} answer;

static char *xstrdup(const char *s)
{
    char *d = strdup(s);

    CHECK(d);
    return d;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    CHECK(n >= 0);
    return s;
}

/* Serializes v and drops it. */
static char *dump_steal(json_t *v)
{
    char *s;

    CHECK(v);
    s = json_dumps(v, JSON_COMPACT);
    CHECK(s);
    json_decref(v);
    return s;
}

static char *pad(size_t n)
{
    char *p = malloc(n + 1);

    CHECK(p);
    memset(p, 'x', n);
    p[n] = '\0';
    return p;
}

static void chan_append(chan *c, const char *text)
{
    size_t n = strlen(text);
    char *b = realloc(c->buf, c->len + n + 1);

    CHECK(b);
    memcpy(b + c->len, text, n + 1);
    c->buf = b;
    c->len += n;
}

static ssize_t chan_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    chan *c = cls;
    srv *s = c->s;
    ssize_t n;

    (void)pos;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (c->off < c->len) {
            size_t k = c->len - c->off < max ? c->len - c->off : max;

            memcpy(buf, c->buf + c->off, k);
            c->off += k;
            n = (ssize_t)k;
            break;
        }
        if (c->ended || s->stopping) {
            n = MHD_CONTENT_READER_END_OF_STREAM;
            break;
        }
        /* Bounded, so a stream whose client went away notices the server stopping. */
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void chan_free(void *cls)
{
    chan *c = cls;
    srv *s = c->s;

    pthread_mutex_lock(&s->mu);
    if (s->cur == c)
        s->cur = NULL;
    pthread_mutex_unlock(&s->mu);
    free(c->buf);
    free(c);
}

/* Appends text to the open stream; false when there is none. Any thread. */
static bool srv_push(srv *s, const char *text)
{
    bool ok;

    pthread_mutex_lock(&s->mu);
    ok = s->cur != NULL;
    if (ok)
        chan_append(s->cur, text);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static bool srv_has_stream(srv *s)
{
    bool ok;

    pthread_mutex_lock(&s->mu);
    ok = s->cur != NULL;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* Ends the open stream once what was pushed has gone out. */
static void srv_end(srv *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->cur)
        s->cur->ended = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int srv_count(srv *s, const char *method)
{
    int n;

    pthread_mutex_lock(&s->mu);
    n = strcmp(method, "GET") == 0      ? s->n_get
        : strcmp(method, "POST") == 0   ? s->n_post
        : strcmp(method, "DELETE") == 0 ? s->n_delete
                                        : -1;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* A copy of the nth request with this HTTP method (its body borrowed from the server). */
static rec srv_rec(srv *s, const char *method, int nth)
{
    rec r;
    bool found = false;

    memset(&r, 0, sizeof r);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_recs && !found; i++) {
        if (strcmp(s->recs[i].method, method) == 0 && s->recs[i].nth == nth) {
            r = s->recs[i];
            found = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (!found)
        fail_msg("no %s #%d at the server", method, nth);
    return r;
}

/* The POST that carried JSON-RPC method rpc (the first one), or fails. */
static rec srv_post_of(srv *s, const char *rpc)
{
    rec r;
    bool found = false;

    memset(&r, 0, sizeof r);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_recs && !found; i++) {
        if (strcmp(s->recs[i].method, "POST") == 0 && strcmp(s->recs[i].rpc, rpc) == 0) {
            r = s->recs[i];
            found = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (!found)
        fail_msg("no POST of %s at the server", rpc);
    return r;
}

static void copy_header(struct MHD_Connection *c, const char *name, char *dst, size_t size,
                        bool *has)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);

    if (has)
        *has = v != NULL;
    snprintf(dst, size, "%s", v ? v : "");
}

static bool ends_with(const char *s, const char *tail)
{
    size_t a = strlen(s), b = strlen(tail);

    return a >= b && strcmp(s + a - b, tail) == 0;
}

static char *notification_text(const char *method, int n)
{
    return dump_steal(json_pack("{s:s, s:s, s:{s:i}}", "jsonrpc", "2.0", "method", method,
                                "params", "n", n));
}

/* The answer to a request with this id: a result echoing params. */
static char *result_text(json_t *id, json_t *params)
{
    return dump_steal(json_pack("{s:s, s:O, s:{s:O?}}", "jsonrpc", "2.0", "id", id, "result",
                                "echo", params));
}

/* Streamable HTTP POSTs: what each JSON-RPC method of the tests gets. */
static void answer_post(srv *s, const rec *r, answer *a)
{
    json_t *id = json_object_get(r->body, "id");
    json_t *params = json_object_get(r->body, "params");

    if (!r->rpc[0] || !id) { /* a response or a notification */
        a->status = MHD_HTTP_ACCEPTED;
        a->delay_ms = r->rpc[0] ? s->note_delay_ms : 0;
        return;
    }
    a->status = MHD_HTTP_OK;
    a->ctype = "application/json";
    if (strcmp(r->rpc, "initialize") == 0) {
        a->is_init = true;
        a->delay_ms = s->init_delay_ms;
        a->session = s->session;
        a->body = dump_steal(json_pack("{s:s, s:O, s:{s:s, s:{}, s:{s:s, s:s}}}", "jsonrpc",
                                       "2.0", "id", id, "result", "protocolVersion",
                                       "2025-06-18", "capabilities", "serverInfo", "name",
                                       "fake", "version", "1"));
    } else if (strcmp(r->rpc, "sse") == 0) {
        char *note = notification_text("notifications/progress", 1);
        char *res = result_text(id, params);

        /* A priming event (an id, empty data) first, as 2025-11-25 servers send. */
        a->ctype = "text/event-stream";
        a->stream = true;
        a->body = xasprintf("id: p0\ndata:\n\nevent: message\ndata: %s\n\ndata: %s\n\n", note,
                            res);
        free(note);
        free(res);
    } else if (strcmp(r->rpc, "batch") == 0) {
        char *note = notification_text("notifications/message", 1);
        char *res = result_text(id, params);

        a->body = xasprintf("[%s, %s]", note, res);
        free(note);
        free(res);
    } else if (strcmp(r->rpc, "fail") == 0) {
        a->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        a->ctype = "text/plain";
        a->body = xstrdup("boom");
    } else if (strcmp(r->rpc, "gone") == 0) {
        a->status = MHD_HTTP_NOT_FOUND;
        a->ctype = "text/plain";
        a->body = xstrdup("no such session");
    } else if (strcmp(r->rpc, "big") == 0) {
        char *p = pad(s->big);

        a->body = dump_steal(json_pack("{s:s, s:O, s:{s:s}}", "jsonrpc", "2.0", "id", id,
                                       "result", "pad", p));
        free(p);
    } else if (strcmp(r->rpc, "bigsse") == 0) {
        char *p = pad(s->big);

        a->ctype = "text/event-stream";
        a->stream = true;
        a->body = xasprintf("data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/pad\","
                            "\"params\":{\"pad\":\"%s\"}}\n\n",
                            p);
        free(p);
    } else {
        a->body = result_text(id, params);
    }
}

/* GET /mcp: the Streamable HTTP stream, per s->get. */
static void answer_get(srv *s, const rec *r, answer *a)
{
    if (s->get == GET_405 || s->get == GET_GONE) {
        a->status = s->get == GET_405 ? MHD_HTTP_METHOD_NOT_ALLOWED : MHD_HTTP_NOT_FOUND;
        return;
    }
    a->status = MHD_HTTP_OK;
    a->ctype = "text/event-stream";
    a->stream = true;
    if (r->nth == 0) {
        char *n1 = notification_text("notifications/message", 1);
        char *n2 = notification_text("notifications/message", 2);
        char retry[32] = "";

        if (s->get == GET_RETRY)
            snprintf(retry, sizeof retry, "retry: %d\n", s->retry_ms);
        a->body = xasprintf("%sid: e1\ndata: %s\n\nid: e2\ndata: %s\n\n", retry, n1, n2);
        free(n1);
        free(n2);
    } else if (r->nth == 1) {
        char *n3 = notification_text("notifications/message", 3);

        a->body = xasprintf("id: e3\ndata: %s\n\n", n3);
        free(n3);
    } else {
        a->body = xstrdup(": quiet\n\n");
        a->keep_open = true;
    }
}

/* Legacy HTTP+SSE: GET .../sse opens the stream; POST .../messages is accepted, and a
 * request's answer goes out on the stream. */
static void answer_legacy(srv *s, const rec *r, answer *a)
{
    json_t *id = json_object_get(r->body, "id");

    if (strcmp(r->method, "GET") == 0 && ends_with(r->path, "/json/sse")) {
        a->status = MHD_HTTP_OK; /* not an event stream */
        a->ctype = "application/json";
        a->body = xstrdup("{}");
        return;
    }
    if (strcmp(r->method, "GET") == 0 && ends_with(r->path, "/e500/sse")) {
        a->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }
    if (strcmp(r->method, "GET") == 0) {
        a->status = MHD_HTTP_OK;
        a->ctype = "text/event-stream";
        a->stream = true;
        a->keep_open = true;
        a->body = xstrdup(s->legacy_first ? s->legacy_first : "");
        return;
    }
    if (r->rpc[0] && id && strcmp(r->rpc, "fail") == 0) {
        a->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        return;
    }
    a->status = MHD_HTTP_ACCEPTED;
    a->ctype = "text/plain";
    a->body = xstrdup("Accepted");
    if (r->rpc[0] && id) {
        char *res = result_text(id, json_object_get(r->body, "params"));
        char *ev = xasprintf("event: message\ndata: %s\n\n", res);

        srv_push(s, ev);
        free(ev);
        free(res);
    }
}

static enum MHD_Result on_http(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *data_size, void **con_cls)
{
    srv *s = cls;
    upload *u = *con_cls;
    answer a;
    rec r;
    struct MHD_Response *resp;
    const char *arg;
    enum MHD_Result ret;

    (void)version;
    if (!u) {
        u = calloc(1, sizeof *u);
        CHECK(u);
        *con_cls = u;
        return MHD_YES;
    }
    if (*data_size) {
        if (u->len + *data_size > MAX_UPLOAD) {
            u->too_big = true;
        } else {
            char *b = realloc(u->buf, u->len + *data_size + 1);

            CHECK(b);
            memcpy(b + u->len, data, *data_size);
            u->buf = b;
            u->len += *data_size;
            u->buf[u->len] = '\0';
        }
        *data_size = 0;
        return MHD_YES;
    }

    memset(&r, 0, sizeof r);
    snprintf(r.method, sizeof r.method, "%s", method);
    snprintf(r.path, sizeof r.path, "%s", url);
    arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "sessionId");
    snprintf(r.sid_arg, sizeof r.sid_arg, "%s", arg ? arg : "");
    copy_header(c, "Mcp-Session-Id", r.session, sizeof r.session, &r.has_session);
    copy_header(c, "MCP-Protocol-Version", r.version, sizeof r.version, &r.has_version);
    copy_header(c, "Accept", r.accept, sizeof r.accept, NULL);
    copy_header(c, "Content-Type", r.ctype, sizeof r.ctype, NULL);
    copy_header(c, "Last-Event-ID", r.last_id, sizeof r.last_id, &r.has_last_id);
    copy_header(c, "X-Test", r.x_test, sizeof r.x_test, NULL);
    copy_header(c, "traceparent", r.traceparent, sizeof r.traceparent, NULL);
    copy_header(c, "tracestate", r.tracestate, sizeof r.tracestate, NULL);
    r.smuggled = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Bad") ||
                 MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Injected");
    if (u->len && !u->too_big)
        r.body = json_loadb(u->buf, u->len, 0, NULL);
    if (json_is_string(json_object_get(r.body, "method")))
        snprintf(r.rpc, sizeof r.rpc, "%s",
                 json_string_value(json_object_get(r.body, "method")));
    r.at_ms = rpc_now_ms();

    pthread_mutex_lock(&s->mu);
    r.init_answered = s->init_answered;
    if (strcmp(method, "GET") == 0)
        r.nth = s->n_get++;
    else if (strcmp(method, "POST") == 0)
        r.nth = s->n_post++;
    else if (strcmp(method, "DELETE") == 0)
        r.nth = s->n_delete++;
    if (s->n_recs < MAX_RECS)
        s->recs[s->n_recs++] = r; /* the server keeps the body's reference */
    else
        json_decref(r.body);
    pthread_mutex_unlock(&s->mu);

    memset(&a, 0, sizeof a);
    if (ends_with(r.path, "/sse") || ends_with(r.path, "/messages"))
        answer_legacy(s, &r, &a);
    else if (strcmp(method, "POST") == 0)
        answer_post(s, &r, &a);
    else if (strcmp(method, "GET") == 0)
        answer_get(s, &r, &a);
    else
        a.status = MHD_HTTP_OK; /* DELETE */

    if (a.delay_ms)
        usleep((useconds_t)a.delay_ms * 1000);
    if (a.is_init) {
        /* Before the answer goes out: whatever arrives after it sees the flag. */
        pthread_mutex_lock(&s->mu);
        s->init_answered = true;
        pthread_mutex_unlock(&s->mu);
    }
    if (a.stream) {
        chan *ch = calloc(1, sizeof *ch);

        CHECK(ch);
        ch->s = s;
        ch->ended = !a.keep_open;
        chan_append(ch, a.body ? a.body : "");
        free(a.body);
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, chan_read, ch,
                                                 chan_free);
        if (a.keep_open) {
            pthread_mutex_lock(&s->mu);
            s->cur = ch;
            pthread_mutex_unlock(&s->mu);
        }
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
    } else if (a.body) {
        resp = MHD_create_response_from_buffer(strlen(a.body), a.body, MHD_RESPMEM_MUST_FREE);
    } else {
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    CHECK(resp);
    if (a.ctype)
        MHD_add_response_header(resp, "Content-Type", a.ctype);
    if (a.session)
        MHD_add_response_header(resp, "Mcp-Session-Id", a.session);
    ret = MHD_queue_response(c, a.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void on_http_done(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    upload *u = *con_cls;

    (void)cls, (void)c, (void)toe;
    if (u) {
        free(u->buf);
        free(u);
        *con_cls = NULL;
    }
}

static void srv_init(srv *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->retry_ms = 800;
    s->big = 4096;
}

/* Starts the daemon on 127.0.0.1 with a port the kernel picks. */
static void srv_start(srv *s)
{
    struct sockaddr_in sin;
    const union MHD_DaemonInfo *info;

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                            NULL, NULL, on_http, s, MHD_OPTION_SOCK_ADDR, &sin,
                            MHD_OPTION_NOTIFY_COMPLETED, on_http_done, s, MHD_OPTION_END);
    assert_non_null(s->d);
    info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    s->port = info->port;
    assert_true(s->port > 0);
}

static void srv_stop(srv *s)
{
    if (s->d) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        MHD_stop_daemon(s->d);
        s->d = NULL;
    }
    for (int i = 0; i < s->n_recs; i++)
        json_decref(s->recs[i].body);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

/* ---------------------------------------------------------------- the owner */

typedef struct fx {
    uv_loop_t loop;
    uv_timer_t tick;
    int fds_before;
    srv s;
    rmt *t;
    char url[160];
    json_t *msgs;          /* every message on_message got, in order */
    int n_msgs;
    int closed;
    rmt_close_reason reason;
    char why[256];
    int64_t closed_ms;
    int msgs_at_close;
    rmt_stats st_at_close;
    bool freed;            /* rmt_free was called: no callback may come after */
    int late_calls;        /* callbacks after rmt_free or after on_closed */
    int free_at_msg;       /* > 0: rmt_free inside the n-th on_message */
    bool probe_in_msg;     /* rmt_send (a ping, id 99) inside the next on_message, the
                              result in send_rc_msg */
    int send_rc_msg;
    int send_rc_closed;    /* rmt_send inside on_closed */
} fx;

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, 0, &err);

    if (!v)
        fail_msg("bad JSON in a test: %s", err.text);
    return v;
}

static void on_message(void *ud, json_t *msg)
{
    fx *f = ud;

    if (f->freed || f->closed) {
        f->late_calls++;
        return;
    }
    assert_true(json_is_object(msg));
    json_array_append(f->msgs, msg);
    f->n_msgs++;
    if (f->probe_in_msg) {
        json_t *ping = parse("{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"ping\"}");

        f->probe_in_msg = false;
        f->send_rc_msg = rmt_send(f->t, ping);
        json_decref(ping);
    }
    if (f->free_at_msg == f->n_msgs) {
        rmt_free(f->t);
        f->t = NULL;
        f->freed = true;
    }
}

static void on_closed(void *ud, rmt_close_reason reason, const char *why)
{
    fx *f = ud;
    json_t *ping = parse("{\"jsonrpc\":\"2.0\",\"id\":98,\"method\":\"ping\"}");

    if (f->freed || f->closed) {
        f->late_calls++;
        json_decref(ping);
        return;
    }
    f->closed++;
    f->reason = reason;
    snprintf(f->why, sizeof f->why, "%s", why ? why : "");
    f->closed_ms = rpc_now_ms();
    f->msgs_at_close = f->n_msgs;
    rmt_get_stats(f->t, &f->st_at_close);
    f->send_rc_closed = rmt_send(f->t, ping);
    json_decref(ping);
    rmt_free(f->t); /* allowed; a no-op: rmt releases itself after this callback */
    f->t = NULL;
}

static const rmt_callbacks callbacks = {on_message, on_closed};

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);

    assert_non_null(f);
    f->fds_before = count_fds();
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    uv_timer_start(&f->tick, loop_tick_cb, 10, 10);
    srv_init(&f->s);
    f->msgs = json_array();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    int64_t deadline = rpc_now_ms() + WAIT_MS;

    rmt_free(f->t);
    f->t = NULL;
    if (!f->closed)
        f->freed = true;
    uv_close((uv_handle_t *)&f->tick, loop_noop_close);
    while (uv_loop_alive(&f->loop) && rpc_now_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_false(uv_loop_alive(&f->loop));
    assert_int_equal(uv_loop_close(&f->loop), 0);
    srv_stop(&f->s);
    assert_int_equal(f->late_calls, 0);
    json_decref(f->msgs);
    assert_int_equal(count_fds(), f->fds_before);
    free(f);
    return 0;
}

#define WAIT_FOR(f, cond)                                                    \
    do {                                                                     \
        int64_t dl_ = rpc_now_ms() + WAIT_MS;                                \
        while (!(cond) && rpc_now_ms() < dl_)                                \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                 \
        if (!(cond))                                                         \
            fail_msg("timed out waiting for %s", #cond);                     \
    } while (0)

static void open_with(fx *f, const rmt_opts *o0, rmt_kind kind, uint16_t port, const char *path)
{
    rmt_opts o = *o0;

    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%u%s", (unsigned)port, path);
    o.kind = kind;
    o.url = f->url;
    o.name = "fake";
    assert_int_equal(rmt_new(&f->loop, &o, &callbacks, f, &f->t), 0);
    assert_non_null(f->t);
}

static void open_rmt(fx *f, rmt_kind kind, const char *path)
{
    rmt_opts o;

    memset(&o, 0, sizeof o);
    open_with(f, &o, kind, f->s.port, path);
}

static int send_text(fx *f, const char *text)
{
    json_t *m = parse(text);
    int rc = rmt_send(f->t, m);

    json_decref(m);
    return rc;
}

static json_t *msg_at(fx *f, int i)
{
    json_t *m = json_array_get(f->msgs, (size_t)i);

    assert_non_null(m);
    return m;
}

static json_int_t msg_id(fx *f, int i)
{
    json_t *id = json_object_get(msg_at(f, i), "id");

    assert_true(json_is_integer(id));
    return json_integer_value(id);
}

static const char *msg_method(fx *f, int i)
{
    json_t *m = json_object_get(msg_at(f, i), "method");

    return m ? json_string_value(m) : "";
}

static json_int_t msg_param_n(fx *f, int i)
{
    return json_integer_value(json_object_get(json_object_get(msg_at(f, i), "params"), "n"));
}

static int msg_error_code(fx *f, int i)
{
    json_t *e = json_object_get(msg_at(f, i), "error");

    assert_true(json_is_object(e));
    return (int)json_integer_value(json_object_get(e, "code"));
}

static const char *msg_error_text(fx *f, int i)
{
    json_t *e = json_object_get(msg_at(f, i), "error");

    assert_true(json_is_object(e));
    return json_string_value(json_object_get(e, "message"));
}

static rmt_stats stats(fx *f)
{
    rmt_stats st;

    rmt_get_stats(f->t, &st);
    return st;
}

static const char init_msg[] =
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
    "{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},"
    "\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}}";
static const char initialized_msg[] =
    "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}";

/* initialize, answered; the protocol version set as inst does it. */
static void handshake(fx *f)
{
    int before = f->n_msgs;

    assert_int_equal(send_text(f, init_msg), 0);
    WAIT_FOR(f, f->n_msgs == before + 1);
    assert_int_equal(msg_id(f, before), 1);
    assert_non_null(json_object_get(msg_at(f, before), "result"));
    rmt_set_protocol_version(f->t, "2025-06-18");
}

/* ---------------------------------------------------------------- Streamable HTTP */

static void test_streamable_session(void **state)
{
    fx *f = *state;
    rec r;
    rmt_stats st;

    f->s.session = "sess-1";
    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    assert_true(rmt_ready(f->t));
    assert_null(rmt_session_id(f->t));
    loop_run_for(&f->loop, 50);
    assert_int_equal(srv_count(&f->s, "POST"), 0); /* no I/O before the first send */

    handshake(f);
    assert_non_null(rmt_session_id(f->t));
    assert_string_equal(rmt_session_id(f->t), "sess-1");
    assert_int_equal(send_text(f, initialized_msg), 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\","
                                  "\"params\":{\"a\":1}}"),
                     0);
    WAIT_FOR(f, f->n_msgs == 2);
    assert_int_equal(msg_id(f, 1), 2);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(msg_at(f, 1), "result"), "echo"), "a")),
                     1);
    WAIT_FOR(f, stats(f).posts == 3);

    r = srv_post_of(&f->s, "initialize");
    assert_false(r.has_session);
    assert_false(r.has_version);
    assert_string_equal(r.path, "/mcp");
    assert_non_null(strstr(r.accept, "application/json"));
    assert_non_null(strstr(r.accept, "text/event-stream"));
    assert_non_null(strstr(r.ctype, "application/json"));
    assert_int_equal(json_integer_value(json_object_get(r.body, "id")), 1);
    r = srv_post_of(&f->s, "notifications/initialized");
    assert_true(r.has_session);
    assert_string_equal(r.session, "sess-1");
    assert_true(r.has_version);
    assert_string_equal(r.version, "2025-06-18");
    r = srv_post_of(&f->s, "echo");
    assert_string_equal(r.session, "sess-1");
    assert_string_equal(r.version, "2025-06-18");

    st = stats(f);
    assert_int_equal(st.posts, 3);
    assert_int_equal(st.http_errors, 0);
    assert_int_equal(st.messages_in, 2);
    assert_int_equal(st.streams, 0);
    assert_int_equal(f->n_msgs, 2); /* the 202 of the notification delivered nothing */
    assert_int_equal(f->closed, 0);

    /* A version that would break the header line is refused; the last good one stays. And
     * the owner may send from inside on_message. */
    rmt_set_protocol_version(f->t, "bad\r\nX-Injected: 1");
    rmt_set_protocol_version(f->t, "2025 06 18");
    f->probe_in_msg = true;
    f->send_rc_msg = 1;
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 4);
    assert_int_equal(f->send_rc_msg, 0);
    assert_int_equal(msg_id(f, 2), 3);
    assert_int_equal(msg_id(f, 3), 99);
    r = srv_post_of(&f->s, "ping");
    assert_string_equal(r.version, "2025-06-18");
    assert_false(r.smuggled);
    assert_string_equal(r.session, "sess-1");
}

/* A session id that is not visible ASCII is not taken (nor sent back). */
static void test_bad_session_id(void **state)
{
    fx *f = *state;

    f->s.session = "not valid";
    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    assert_null(rmt_session_id(f->t));
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 2);
    assert_false(srv_rec(&f->s, "POST", 1).has_session);
    rmt_free(f->t);
    f->t = NULL;
    f->freed = true;
    loop_run_for(&f->loop, 100);
    assert_int_equal(srv_count(&f->s, "DELETE"), 0);
}

/* Messages sent while initialize is in flight wait for its answer (and its session id). */
static void test_streamable_held(void **state)
{
    fx *f = *state;
    bool seen2 = false, seen3 = false;

    f->s.session = "sess-2";
    f->s.init_delay_ms = 500;
    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    assert_int_equal(send_text(f, init_msg), 0);
    assert_int_equal(send_text(f, initialized_msg), 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}"), 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, srv_count(&f->s, "POST") == 1);
    loop_run_for(&f->loop, 100);
    assert_int_equal(srv_count(&f->s, "POST"), 1);
    assert_int_equal(f->n_msgs, 0);

    WAIT_FOR(f, f->n_msgs == 3);
    assert_int_equal(msg_id(f, 0), 1);
    for (int i = 1; i < 3; i++) {
        seen2 = seen2 || msg_id(f, i) == 2;
        seen3 = seen3 || msg_id(f, i) == 3;
    }
    assert_true(seen2 && seen3);
    WAIT_FOR(f, stats(f).posts == 4);
    assert_int_equal(srv_count(&f->s, "POST"), 4);
    /* Every held message left after the answer, with the session id it brought; the
     * initialized notification before the requests held behind it. */
    for (int i = 1; i < 4; i++) {
        rec r = srv_rec(&f->s, "POST", i);

        assert_true(r.init_answered);
        assert_string_equal(r.session, "sess-2");
        assert_string_equal(r.rpc, i == 1 ? "notifications/initialized" : "echo");
    }
}

/* notifications/initialized is a barrier: what is sent while its POST is in flight waits
 * for its answer, so no request overtakes it on another connection. */
static void test_initialized_barrier(void **state)
{
    fx *f = *state;
    rec note;

    f->s.note_delay_ms = 200;
    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    assert_int_equal(send_text(f, initialized_msg), 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}"), 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\"}"), 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 3);
    WAIT_FOR(f, stats(f).posts == 5);
    note = srv_rec(&f->s, "POST", 1);
    assert_string_equal(note.rpc, "notifications/initialized");
    for (int i = 2; i < 5; i++)
        assert_true(srv_rec(&f->s, "POST", i).at_ms - note.at_ms >= 180);
    /* Only that notification: others do not hold anything up. */
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/y\"}"), 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 4);
    assert_int_equal(msg_id(f, 3), 4);
    assert_int_equal(stats(f).posts, 6); /* notifications/y's 202 is still on its way */
    WAIT_FOR(f, stats(f).posts == 7);
}

/* An SSE answer (priming event, progress, then the response) and a JSON batch answer. */
static void test_streamable_sse_and_batch(void **state)
{
    fx *f = *state;
    capture cap;
    char *log;

    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    assert_null(rmt_session_id(f->t)); /* this server gives none */

    capture_begin(&cap);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"sse\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 3);
    WAIT_FOR(f, stats(f).posts == 2);
    log = capture_end(&cap);
    assert_string_equal(msg_method(f, 1), "notifications/progress");
    assert_int_equal(msg_id(f, 2), 7);
    assert_non_null(json_object_get(msg_at(f, 2), "result"));
    /* The priming event is no message, and no complaint either. */
    assert_null(strstr(log, "not JSON-RPC"));
    free(log);

    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"batch\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 5);
    assert_string_equal(msg_method(f, 3), "notifications/message");
    assert_int_equal(msg_id(f, 4), 8);
    WAIT_FOR(f, stats(f).posts == 3);
    loop_run_for(&f->loop, 50);
    assert_int_equal(f->n_msgs, 5); /* exactly one response per request */
    assert_int_equal(stats(f).messages_in, 5);
    assert_false(srv_rec(&f->s, "POST", 1).has_session);
}

/* HTTP errors for requests become made-up JSON-RPC errors; a 202 delivers nothing. */
static void test_http_error_and_202(void **state)
{
    fx *f = *state;
    rmt_stats st;

    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"fail\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 2);
    assert_int_equal(msg_id(f, 1), 9);
    assert_int_equal(msg_error_code(f, 1), -32000);
    assert_string_equal(msg_error_text(f, 1), "upstream answered HTTP 500");
    assert_string_equal(json_string_value(json_object_get(msg_at(f, 1), "jsonrpc")), "2.0");

    /* A string id comes back as it went. */
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"method\":\"fail\"}"),
                     0);
    WAIT_FOR(f, f->n_msgs == 3);
    assert_string_equal(json_string_value(json_object_get(msg_at(f, 2), "id")), "abc");
    assert_int_equal(msg_error_code(f, 2), -32000);

    /* A notification and a response (to a server request) get 202 and nothing comes back. */
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\"}"), 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{}}"), 0);
    WAIT_FOR(f, stats(f).posts == 5);
    loop_run_for(&f->loop, 50);
    assert_int_equal(f->n_msgs, 3);
    st = stats(f);
    assert_int_equal(st.http_errors, 2);
    assert_int_equal(st.messages_in, 3);
    assert_int_equal(f->closed, 0);

    /* Still usable. */
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 4);
    assert_int_equal(msg_id(f, 3), 10);
}

/* 404 for our session id: the made-up error, then the session is lost; nothing can be sent
 * from then on, and no DELETE goes out for a session the server forgot. */
static void test_session_lost(void **state)
{
    fx *f = *state;

    f->s.session = "sess-3";
    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    f->probe_in_msg = true;
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"gone\"}"), 0);
    WAIT_FOR(f, f->closed == 1);
    assert_int_equal(f->reason, RMT_CLOSED_SESSION_LOST);
    assert_int_equal(f->msgs_at_close, 2); /* the error came first */
    assert_int_equal(msg_id(f, 1), 2);
    assert_int_equal(msg_error_code(f, 1), -32000);
    assert_string_equal(msg_error_text(f, 1), "upstream answered HTTP 404");
    assert_int_equal(f->send_rc_msg, -ENOTCONN);
    assert_int_equal(f->send_rc_closed, -ENOTCONN);
    assert_int_equal(f->st_at_close.http_errors, 1);
    assert_non_null(strstr(f->why, "sess-3"));
    assert_true(srv_rec(&f->s, "POST", 1).has_session);
    loop_run_for(&f->loop, 100);
    assert_int_equal(srv_count(&f->s, "DELETE"), 0);
}

static void test_unreachable(void **state)
{
    fx *f = *state;
    rmt_opts o;
    int dead;

    memset(&o, 0, sizeof o);
    open_with(f, &o, RMT_STREAMABLE_HTTP, refused_port(&dead), "/mcp");
    assert_int_equal(send_text(f, init_msg), 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->closed == 1);
    assert_int_equal(f->reason, RMT_CLOSED_UNREACHABLE);
    assert_int_equal(f->msgs_at_close, 1); /* the held message never left */
    assert_int_equal(msg_id(f, 0), 1);
    assert_int_equal(msg_error_code(f, 0), -32000);
    assert_non_null(strstr(msg_error_text(f, 0), "upstream server unreachable: "));
    assert_int_equal(f->st_at_close.posts, 1);
    assert_int_equal(f->send_rc_closed, -ENOTCONN);
    close(dead);
}

/* ---------------------------------------------------------------- the GET stream */

static void test_listen_resume(void **state)
{
    fx *f = *state;
    rec g0, g1, g2;
    rmt_stats st;

    f->s.session = "sess-4";
    f->s.get = GET_EVENTS;
    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    assert_int_equal(send_text(f, initialized_msg), 0);
    rmt_listen(f->t);
    WAIT_FOR(f, f->n_msgs == 4);
    WAIT_FOR(f, srv_count(&f->s, "GET") == 3);
    for (int i = 1; i <= 3; i++) {
        assert_string_equal(msg_method(f, i), "notifications/message");
        assert_int_equal(msg_param_n(f, i), i);
    }
    g0 = srv_rec(&f->s, "GET", 0);
    g1 = srv_rec(&f->s, "GET", 1);
    g2 = srv_rec(&f->s, "GET", 2);
    assert_string_equal(g0.accept, "text/event-stream");
    assert_string_equal(g0.path, "/mcp");
    assert_string_equal(g0.session, "sess-4");
    assert_string_equal(g0.version, "2025-06-18");
    assert_false(g0.has_last_id);
    assert_true(g1.has_last_id);
    assert_string_equal(g1.last_id, "e2");
    assert_string_equal(g1.session, "sess-4");
    assert_true(g2.has_last_id);
    assert_string_equal(g2.last_id, "e3");
    /* No retry: given: the first reconnect after 250 ms, not the seconds of a real backoff. */
    assert_true(g1.at_ms - g0.at_ms >= 200);
    assert_true(g1.at_ms - g0.at_ms < 1500);

    rmt_listen(f->t); /* already listening */
    loop_run_for(&f->loop, 100);
    st = stats(f);
    assert_int_equal(st.streams, 3);
    assert_int_equal(st.resumes, 2);
    assert_int_equal(srv_count(&f->s, "GET"), 3);
    assert_int_equal(f->n_msgs, 4);
}

/* retry: sets the reconnection time, and it stays set for streams that do not repeat it. */
static void test_listen_retry(void **state)
{
    fx *f = *state;
    rec g0, g1, g2;

    f->s.get = GET_RETRY;
    f->s.retry_ms = 700;
    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    rmt_listen(f->t);
    WAIT_FOR(f, srv_count(&f->s, "GET") == 3);
    WAIT_FOR(f, f->n_msgs == 4);
    g0 = srv_rec(&f->s, "GET", 0);
    g1 = srv_rec(&f->s, "GET", 1);
    g2 = srv_rec(&f->s, "GET", 2);
    assert_true(g1.at_ms - g0.at_ms >= 650);
    assert_true(g2.at_ms - g1.at_ms >= 650);
    assert_false(g0.has_session); /* this server gives no session */
    assert_int_equal(stats(f).resumes, 2);
}

static void test_listen_405(void **state)
{
    fx *f = *state;

    f->s.session = "sess-5";
    f->s.get = GET_405;
    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    rmt_listen(f->t);
    WAIT_FOR(f, srv_count(&f->s, "GET") == 1);
    loop_run_for(&f->loop, 1000); /* reconnects would come after 250 and 500 ms */
    assert_int_equal(srv_count(&f->s, "GET"), 1);
    assert_int_equal(stats(f).streams, 1);
    assert_int_equal(f->closed, 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 2);
}

/* 404 on the GET stream for our session: the session is lost too. */
static void test_listen_session_lost(void **state)
{
    fx *f = *state;

    f->s.session = "sess-9";
    f->s.get = GET_GONE;
    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    rmt_listen(f->t);
    WAIT_FOR(f, f->closed == 1);
    assert_int_equal(f->reason, RMT_CLOSED_SESSION_LOST);
    assert_int_equal(f->st_at_close.streams, 1);
    assert_string_equal(srv_rec(&f->s, "GET", 0).session, "sess-9");
    loop_run_for(&f->loop, 100);
    assert_int_equal(srv_count(&f->s, "DELETE"), 0);
    assert_int_equal(srv_count(&f->s, "GET"), 1);
}

/* ---------------------------------------------------------------- releasing */

static void test_free_sends_delete(void **state)
{
    fx *f = *state;
    rec d;

    f->s.session = "sess-6";
    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    rmt_free(f->t);
    f->t = NULL;
    f->freed = true;
    WAIT_FOR(f, srv_count(&f->s, "DELETE") == 1);
    d = srv_rec(&f->s, "DELETE", 0);
    assert_string_equal(d.path, "/mcp");
    assert_string_equal(d.session, "sess-6");
    assert_string_equal(d.version, "2025-06-18");
    rmt_free(NULL);
}

static void test_free_without_session(void **state)
{
    fx *f = *state;
    rmt_opts o;

    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    rmt_free(f->t);
    f->t = NULL;
    f->freed = true;
    loop_run_for(&f->loop, 100);
    assert_int_equal(srv_count(&f->s, "DELETE"), 0);

    /* Freed before any I/O, and with a send in flight. */
    memset(&o, 0, sizeof o);
    open_with(f, &o, RMT_STREAMABLE_HTTP, f->s.port, "/mcp");
    rmt_free(f->t);
    open_with(f, &o, RMT_STREAMABLE_HTTP, f->s.port, "/mcp");
    assert_int_equal(send_text(f, init_msg), 0);
    rmt_free(f->t);
    f->t = NULL;
}

/* rmt_free from inside on_message: the rest of the batch is not delivered, nothing else is
 * called, the session still gets its DELETE, and every handle closes. */
static void test_free_in_on_message(void **state)
{
    fx *f = *state;

    f->s.session = "sess-7";
    f->s.get = GET_EVENTS;
    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    rmt_listen(f->t);
    WAIT_FOR(f, f->n_msgs == 4 && srv_count(&f->s, "GET") == 3);
    f->free_at_msg = 5;
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"batch\"}"), 0);
    WAIT_FOR(f, f->freed);
    assert_int_equal(f->n_msgs, 5);
    assert_string_equal(msg_method(f, 4), "notifications/message");
    WAIT_FOR(f, srv_count(&f->s, "DELETE") == 1);
    assert_string_equal(srv_rec(&f->s, "DELETE", 0).session, "sess-7");
    loop_run_for(&f->loop, 100);
    assert_int_equal(f->n_msgs, 5);
    assert_int_equal(f->closed, 0);
}

/* ---------------------------------------------------------------- limits and misuse */

static void test_max_message(void **state)
{
    fx *f = *state;
    rmt_opts o;

    f->s.big = 4096;
    srv_start(&f->s);
    memset(&o, 0, sizeof o);
    o.max_message = 1024;
    open_with(f, &o, RMT_STREAMABLE_HTTP, f->s.port, "/mcp");
    handshake(f);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"big\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 2);
    assert_int_equal(msg_id(f, 1), 2);
    assert_int_equal(msg_error_code(f, 1), -32000);
    assert_string_equal(msg_error_text(f, 1), "upstream's answer is larger than 1024 bytes");

    /* An SSE event over the limit is dropped; the request still gets its one answer. */
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"bigsse\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 3);
    assert_int_equal(msg_id(f, 2), 3);
    assert_int_equal(msg_error_code(f, 2), -32000);
    assert_string_equal(msg_error_text(f, 2), "upstream answered HTTP 200 without a response");

    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 4);
    assert_int_equal(msg_id(f, 3), 4);
    assert_non_null(json_object_get(msg_at(f, 3), "result"));
    assert_int_equal(f->closed, 0);
}

static void test_send_errors(void **state)
{
    fx *f = *state;
    rmt_opts o;
    rmt *t = (rmt *)&o; /* must come back NULL */
    rmt_callbacks half = {on_message, NULL};
    json_t *v;
    char big[160];

    /* rmt_new refuses what is not an HTTP URL, and missing callbacks. */
    memset(&o, 0, sizeof o);
    assert_int_equal(rmt_new(&f->loop, &o, &callbacks, f, &t), -EINVAL);
    assert_null(t);
    o.url = "ftp://127.0.0.1/x";
    t = (rmt *)&o;
    assert_int_equal(rmt_new(&f->loop, &o, &callbacks, f, &t), -EINVAL);
    assert_null(t);
    o.url = "http://127.0.0.1:1/x";
    t = (rmt *)&o;
    assert_int_equal(rmt_new(&f->loop, &o, &half, f, &t), -EINVAL);
    assert_null(t);
    assert_int_equal(rmt_new(&f->loop, NULL, &callbacks, f, &t), -EINVAL);

    f->s.init_delay_ms = 300;
    srv_start(&f->s);
    memset(&o, 0, sizeof o);
    o.max_queue = 300;
    open_with(f, &o, RMT_STREAMABLE_HTTP, f->s.port, "/mcp");
    v = json_array();
    assert_int_equal(rmt_send(f->t, v), -EINVAL);
    json_decref(v);
    v = json_string("{}");
    assert_int_equal(rmt_send(f->t, v), -EINVAL);
    json_decref(v);
    assert_int_equal(rmt_send(f->t, NULL), -EINVAL);

    /* initialize (about 150 bytes) in flight, then 2 x 110 bytes held: the second is over. */
    snprintf(big, sizeof big, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\",\"params\":"
                              "{\"p\":\"%070d\"}}",
             0);
    assert_int_equal(send_text(f, init_msg), 0);
    assert_int_equal(send_text(f, big), 0);
    assert_int_equal(send_text(f, big), -ENOBUFS);
    WAIT_FOR(f, f->n_msgs == 2);
    WAIT_FOR(f, stats(f).posts == 2);
    /* Sent and answered: the room is back. */
    assert_int_equal(send_text(f, big), 0);
    assert_int_equal(send_text(f, big), 0);
    WAIT_FOR(f, f->n_msgs == 4);
    assert_int_equal(srv_count(&f->s, "POST"), 4);
}

/* opts.headers go out with every request; a value with CR/LF is not sent at all. */
static void test_headers(void **state)
{
    fx *f = *state;
    const cfg_kv hdrs[] = {
        {"X-Test", "hello"},
        {"X-Bad", "evil\r\nX-Injected: 1"},
        {"X-Bad", "evil\nX-Injected: 1"},
        {"X-Injected: 1\r\nX-Bad", "v"},
    };
    rmt_opts o;
    rec r;

    f->s.session = "sess-8";
    f->s.get = GET_405;
    srv_start(&f->s);
    memset(&o, 0, sizeof o);
    o.headers = hdrs;
    o.n_headers = sizeof hdrs / sizeof hdrs[0];
    open_with(f, &o, RMT_STREAMABLE_HTTP, f->s.port, "/mcp");
    handshake(f);
    rmt_listen(f->t);
    WAIT_FOR(f, srv_count(&f->s, "GET") == 1);
    r = srv_rec(&f->s, "POST", 0);
    assert_string_equal(r.x_test, "hello");
    assert_false(r.smuggled);
    r = srv_rec(&f->s, "GET", 0);
    assert_string_equal(r.x_test, "hello");
    assert_false(r.smuggled);
    rmt_free(f->t);
    f->t = NULL;
    f->freed = true;
    WAIT_FOR(f, srv_count(&f->s, "DELETE") == 1);
    r = srv_rec(&f->s, "DELETE", 0);
    assert_string_equal(r.x_test, "hello");
    assert_false(r.smuggled);
}

/* A message's W3C trace context (params._meta) also goes as HTTP headers, on that POST
 * only; a value with a control byte goes nowhere. */
static void test_trace_headers(void **state)
{
    fx *f = *state;
    rec r;

    srv_start(&f->s);
    open_rmt(f, RMT_STREAMABLE_HTTP, "/mcp");
    handshake(f);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\","
                                  "\"params\":{\"name\":\"x\",\"_meta\":{\"traceparent\":"
                                  "\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\","
                                  "\"tracestate\":\"congo=t61rcWkgMzE\"}}}"),
                     0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/call\","
                                  "\"params\":{\"name\":\"x\",\"_meta\":{\"traceparent\":"
                                  "\"00-bad\\nX-Injected: 1\"}}}"),
                     0);
    WAIT_FOR(f, srv_count(&f->s, "POST") == 3);
    for (int i = 1; i < 3; i++) {
        r = srv_rec(&f->s, "POST", i);
        if (json_integer_value(json_object_get(r.body, "id")) == 7) {
            assert_string_equal(r.traceparent,
                                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
            assert_string_equal(r.tracestate, "congo=t61rcWkgMzE");
        } else {
            assert_string_equal(r.traceparent, "");
            assert_false(r.smuggled);
        }
    }
    r = srv_rec(&f->s, "POST", 0);
    assert_string_equal(r.traceparent, "");
}

/* ---------------------------------------------------------------- legacy HTTP+SSE */

static void test_legacy_basic(void **state)
{
    fx *f = *state;
    rec r;
    rmt_opts o;
    const cfg_kv hdrs[] = {{"X-Test", "legacy"}};

    /* Relative to the stream's URL: /up/sse -> /up/messages. */
    f->s.legacy_first = ": hello\n\nevent: endpoint\ndata: messages?sessionId=L1\n\n";
    srv_start(&f->s);
    memset(&o, 0, sizeof o);
    o.headers = hdrs;
    o.n_headers = 1;
    open_with(f, &o, RMT_SSE, f->s.port, "/up/sse");
    assert_false(rmt_ready(f->t));
    WAIT_FOR(f, rmt_ready(f->t));
    r = srv_rec(&f->s, "GET", 0);
    assert_string_equal(r.path, "/up/sse");
    assert_string_equal(r.accept, "text/event-stream");
    assert_string_equal(r.x_test, "legacy");

    rmt_set_protocol_version(f->t, "2025-06-18"); /* no-ops for legacy SSE */
    rmt_listen(f->t);
    assert_int_equal(send_text(f, init_msg), 0);
    WAIT_FOR(f, f->n_msgs == 1);
    assert_int_equal(msg_id(f, 0), 1);
    assert_int_equal(send_text(f, initialized_msg), 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 2);
    assert_int_equal(msg_id(f, 1), 2);
    /* A request the endpoint refuses gets its made-up error. */
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"fail\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 3);
    assert_int_equal(msg_id(f, 2), 3);
    assert_string_equal(msg_error_text(f, 2), "upstream answered HTTP 500");
    WAIT_FOR(f, stats(f).posts == 4);
    loop_run_for(&f->loop, 50);
    assert_int_equal(f->n_msgs, 3); /* the 202s delivered nothing */

    for (int i = 0; i < 4; i++) {
        r = srv_rec(&f->s, "POST", i);
        assert_string_equal(r.path, "/up/messages");
        assert_string_equal(r.sid_arg, "L1");
        assert_false(r.has_session);
        assert_false(r.has_version);
        assert_string_equal(r.x_test, "legacy");
        assert_non_null(strstr(r.ctype, "application/json"));
    }
    assert_int_equal(srv_count(&f->s, "GET"), 1);
    assert_int_equal(stats(f).streams, 1);
    assert_int_equal(stats(f).http_errors, 1);
    assert_null(rmt_session_id(f->t));
    rmt_free(f->t);
    f->t = NULL;
    f->freed = true;
    loop_run_for(&f->loop, 100);
    assert_int_equal(srv_count(&f->s, "DELETE"), 0);
}

/* Messages sent before the endpoint event wait for it. */
static void test_legacy_held(void **state)
{
    fx *f = *state;
    bool seen1 = false, seen2 = false;

    srv_start(&f->s);
    open_rmt(f, RMT_SSE, "/sse");
    WAIT_FOR(f, srv_has_stream(&f->s));
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\"}"), 0);
    assert_int_equal(send_text(f, initialized_msg), 0);
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}"), 0);
    loop_run_for(&f->loop, 150);
    assert_int_equal(srv_count(&f->s, "POST"), 0);
    assert_false(rmt_ready(f->t));

    assert_true(srv_push(&f->s, "event: endpoint\ndata: /messages?sessionId=L2\n\n"));
    WAIT_FOR(f, f->n_msgs == 2);
    for (int i = 0; i < 2; i++) {
        seen1 = seen1 || msg_id(f, i) == 1;
        seen2 = seen2 || msg_id(f, i) == 2;
    }
    assert_true(seen1 && seen2);
    assert_true(rmt_ready(f->t));
    WAIT_FOR(f, stats(f).posts == 3);
    for (int i = 0; i < 3; i++) {
        rec r = srv_rec(&f->s, "POST", i);

        assert_string_equal(r.path, "/messages");
        assert_string_equal(r.sid_arg, "L2");
    }
    /* Request 1 and the notification left together; request 2 only after the latter. */
    for (int i = 0; i < 3; i++) {
        rec r = srv_rec(&f->s, "POST", i);

        if (json_integer_value(json_object_get(r.body, "id")) == 2)
            assert_true(r.nth > srv_post_of(&f->s, "notifications/initialized").nth);
    }
}

/* An endpoint on another origin: our headers must not go there. */
static void test_legacy_foreign_endpoint(void **state)
{
    fx *f = *state;

    f->s.legacy_first = "event: endpoint\ndata: http://127.0.0.2:1/messages?sessionId=X\n\n";
    srv_start(&f->s);
    open_rmt(f, RMT_SSE, "/sse");
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->closed == 1);
    assert_int_equal(f->reason, RMT_CLOSED_PROTOCOL);
    assert_int_equal(f->n_msgs, 0);
    assert_int_equal(srv_count(&f->s, "POST"), 0);
}

static void test_legacy_stream_ended(void **state)
{
    fx *f = *state;

    f->s.legacy_first = "event: endpoint\ndata: /messages?sessionId=L3\n\n";
    srv_start(&f->s);
    open_rmt(f, RMT_SSE, "/sse");
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->n_msgs == 1);
    srv_end(&f->s);
    WAIT_FOR(f, f->closed == 1);
    assert_int_equal(f->reason, RMT_CLOSED_STREAM_ENDED);
    assert_int_equal(f->send_rc_closed, -ENOTCONN);
    assert_int_equal(srv_count(&f->s, "GET"), 1);
}

static void test_legacy_no_endpoint(void **state)
{
    fx *f = *state;
    rmt_opts o;
    int64_t t0;

    f->s.legacy_first = ": nothing to see\n\n";
    srv_start(&f->s);
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = 300;
    uv_update_time(&f->loop); /* the timer counts from the loop's idea of now */
    t0 = rpc_now_ms();
    open_with(f, &o, RMT_SSE, f->s.port, "/sse");
    WAIT_FOR(f, f->closed == 1);
    assert_int_equal(f->reason, RMT_CLOSED_PROTOCOL);
    assert_true(f->closed_ms - t0 >= 280);
    assert_true(f->closed_ms - t0 < 3000);
}

/* A stream that is not text/event-stream breaks the protocol; one answered 500 never opened. */
static void test_legacy_bad_stream(void **state)
{
    fx *f = *state;

    srv_start(&f->s);
    open_rmt(f, RMT_SSE, "/json/sse");
    WAIT_FOR(f, f->closed == 1);
    assert_int_equal(f->reason, RMT_CLOSED_PROTOCOL);
    f->closed = 0;
    open_rmt(f, RMT_SSE, "/e500/sse");
    WAIT_FOR(f, f->closed == 1);
    assert_int_equal(f->reason, RMT_CLOSED_UNREACHABLE);
    assert_non_null(strstr(f->why, "500"));
}

static void test_legacy_unreachable(void **state)
{
    fx *f = *state;
    rmt_opts o;
    int dead;

    memset(&o, 0, sizeof o);
    open_with(f, &o, RMT_SSE, refused_port(&dead), "/sse");
    assert_int_equal(send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\"}"), 0);
    WAIT_FOR(f, f->closed == 1);
    assert_int_equal(f->reason, RMT_CLOSED_UNREACHABLE);
    assert_int_equal(f->n_msgs, 0);
    close(dead);
}

/* One-time process state (libuv's signal pipe, curl's global init, MHD's) is created before
 * the first test counts descriptors. */
static int group_setup(void **state)
{
    static const rmt_callbacks none = {on_message, on_closed};
    uv_loop_t loop;
    rmt_opts o;
    rmt *t = NULL;
    srv s;

    (void)state;
    srv_init(&s);
    srv_start(&s);
    assert_int_equal(uv_loop_init(&loop), 0);
    memset(&o, 0, sizeof o);
    o.url = "http://127.0.0.1:1/";
    assert_int_equal(rmt_new(&loop, &o, &none, NULL, &t), 0);
    rmt_free(t);
    while (uv_loop_alive(&loop))
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(uv_loop_close(&loop), 0);
    srv_stop(&s);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_streamable_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_session_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamable_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_initialized_barrier, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamable_sse_and_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_error_and_202, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen_405, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen_session_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_sends_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_without_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_on_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_basic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_foreign_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_stream_ended, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_no_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_bad_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_unreachable, setup, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
