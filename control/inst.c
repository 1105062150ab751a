/* inst: an MCP client session with one upstream server, stdio (proc + ndjson) or remote
 * (rmt) (see inst.h). One state machine (inst_next + inst_fire) decides what happens on
 * start, handshake, exit or disconnect, garbage and stop; requests live in one list with one
 * timer armed for the earliest deadline. */
#include "inst.h"

#include "log.h"
#include "ndjson.h"
#include "proc.h"
#include "rmt.h"
#include "rpc.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define INST_LOG_INTERVAL_MS 1000
#define INST_GARBAGE_SAMPLE 64      /* bytes of a garbage line shown in the log */
#define INST_LOG_VALUE_MAX 1400     /* escaped stderr text per log line (log lines are 2 KiB) */
#define INST_MAX_INCOMING 1024      /* upstream requests waiting for inst_respond */

/* Protocol revisions we accept in the initialize result. */
static const char *const inst_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26",
                                            "2024-11-05"};

typedef struct inst_req inst_req;
struct inst_req {
    uint64_t id;             /* our JSON-RPC id, also the handle and our progress token */
    json_t *msg;             /* owned while held (not written yet); NULL once sent */
    inst_response_fn cb;
    inst_progress_fn on_progress;
    void *ud;
    json_t *client_token;    /* owned: the caller's progress token; NULL without one */
    bool sent;
    bool internal;           /* initialize: never cancelled upstream, dropped silently */
    bool reset_on_progress;
    int64_t timeout_ms;
    int64_t last_ms;         /* start, or the last progress when resetting */
    int64_t hard_deadline_ms; /* INT64_MAX: none */
    inst_req *prev, *next;
};

typedef struct inst_incoming inst_incoming;
struct inst_incoming {
    json_t *id; /* owned */
    inst_incoming *next;
};

typedef enum inst_event {
    INST_EV_START = 0,
    INST_EV_SPAWNED,
    INST_EV_SPAWN_FAILED,
    INST_EV_INIT_OK,
    INST_EV_INIT_FAILED,
    INST_EV_EXITED,
    INST_EV_STOP,
    INST_EV_BROKEN, /* too much garbage on stdout */
    INST_EV_COUNT
} inst_event;

struct inst {
    uv_loop_t *loop;
    inst_callbacks cbs;
    void *ud;
    inst_state_t state;
    bool quiet;             /* inside inst_start: its transitions are not reported */
    bool freeing;           /* inst_free ran: no callbacks but request ones; memory goes in
                               the timer's close callback */
    /* the server entry, copied */
    char *name;
    char *command;
    char *cwd;
    cfg_transport transport; /* STDIO, SSE or STREAMABLE_HTTP */
    char *url;               /* remote servers */
    cfg_kv *headers;         /* remote servers: owned copies */
    size_t n_headers;
    char **args;
    size_t n_args;
    proc_env *env;
    size_t n_env;
    int64_t srv_timeout_ms;
    bool srv_reset_on_progress;
    int64_t srv_max_total_ms;

    inst_opts opts;
    int64_t stop_grace_ms;
    proc *p;
    rmt *r;                 /* remote servers: the transport, NULL once closed */
    pid_t pid;              /* for logs, kept after the exit */
    ndjson *fr;
    uv_timer_t timer;       /* earliest request deadline */
    int64_t timer_due;      /* rpc_now_ms() deadline it is armed for; 0: not armed */
    uint64_t next_id;
    inst_req *head, *tail;
    size_t n_pending;
    inst_incoming *incoming;
    size_t n_incoming;

    json_t *caps;           /* owned, from the initialize result */
    json_t *info;
    char *version;
    char *instructions;

    int garbage_run;        /* consecutive garbage lines */
    int64_t garbage_log_ms;
    uint64_t garbage_suppressed;
    char errline[INST_STDERR_LINE_MAX];
    size_t errlen;
    bool errtrunc;
    int64_t err_window_ms;
    int err_in_window;
    int err_dropped_window;
    inst_stats st;
};

/* ------------------------------------------------------------------ small helpers */

static char *inst_strdup(const char *s)
{
    char *d = strdup(s ? s : "");

    if (!d)
        abort();
    return d;
}

static json_t *inst_must(json_t *j)
{
    if (!j)
        abort(); /* constant formats: NULL means out of memory */
    return j;
}

/* Writes src as the inside of a double-quoted log value. Returns true when it was cut. */
static bool inst_escape(char *dst, size_t size, const char *src, size_t len)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        char tmp[8];
        size_t n;

        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            n = 2;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            tmp[0] = '\\';
            tmp[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\x%02x", c);
            n = 4;
        } else {
            tmp[0] = (char)c;
            n = 1;
        }
        if (o + n >= size) {
            dst[o] = '\0';
            return true;
        }
        memcpy(dst + o, tmp, n);
        o += n;
    }
    dst[o] = '\0';
    return false;
}

const char *inst_state_name(inst_state_t s)
{
    static const char *const names[INST_STATE_COUNT] = {
        "new", "starting", "initializing", "ready", "stopping", "stopped", "failed"};

    return (unsigned)s < INST_STATE_COUNT ? names[s] : "unknown";
}

static bool inst_running(const inst *in)
{
    return !in->freeing && (in->state == INST_INITIALIZING || in->state == INST_READY);
}

/* ------------------------------------------------------------------ options */

void inst_opts_init(inst_opts *o, const cfg_hub *hub)
{
    memset(o, 0, sizeof *o);
    o->init_timeout_ms = hub ? hub->init_timeout_ms : CFG_DEFAULT_INIT_TIMEOUT_MS;
    o->request_timeout_ms = hub ? hub->request_timeout_ms : CFG_DEFAULT_REQUEST_TIMEOUT_MS;
    o->kill_grace_ms = hub ? hub->kill_grace_ms : CFG_DEFAULT_KILL_GRACE_MS;
    o->max_line = INST_DEFAULT_MAX_LINE;
    o->max_write_queue = INST_DEFAULT_MAX_WRITE_QUEUE;
    o->max_pending = INST_DEFAULT_MAX_PENDING;
    o->max_garbage = INST_DEFAULT_MAX_GARBAGE;
}

static void inst_opts_fix(inst_opts *o)
{
    inst_opts d;

    inst_opts_init(&d, NULL);
    if (o->init_timeout_ms <= 0)
        o->init_timeout_ms = d.init_timeout_ms;
    if (o->request_timeout_ms <= 0)
        o->request_timeout_ms = d.request_timeout_ms;
    if (o->kill_grace_ms < 0)
        o->kill_grace_ms = d.kill_grace_ms;
    if (o->max_line == 0)
        o->max_line = d.max_line;
    if (o->max_write_queue == 0)
        o->max_write_queue = d.max_write_queue;
    if (o->max_pending == 0)
        o->max_pending = d.max_pending;
    if (o->max_garbage <= 0)
        o->max_garbage = d.max_garbage;
}

void inst_req_opts_default(const inst *in, inst_req_opts *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_ms = in->srv_timeout_ms > 0 ? in->srv_timeout_ms : in->opts.request_timeout_ms;
    o->reset_on_progress = in->srv_reset_on_progress;
    o->max_total_ms = in->srv_max_total_ms;
}

/* ------------------------------------------------------------------ pending requests */

static void inst_link(inst *in, inst_req *r)
{
    r->prev = in->tail;
    r->next = NULL;
    if (in->tail)
        in->tail->next = r;
    else
        in->head = r;
    in->tail = r;
    in->n_pending++;
}

static void inst_unlink(inst *in, inst_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        in->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        in->tail = r->prev;
    r->prev = r->next = NULL;
    in->n_pending--;
}

static inst_req *inst_find(const inst *in, uint64_t id)
{
    for (inst_req *r = in->head; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

static void inst_req_free(inst_req *r)
{
    json_decref(r->msg);
    json_decref(r->client_token);
    free(r);
}

static int64_t inst_deadline(const inst_req *r)
{
    int64_t d = r->last_ms + r->timeout_ms;

    return r->hard_deadline_ms < d ? r->hard_deadline_ms : d;
}

static void inst_on_timer(uv_timer_t *t);

static void inst_arm(inst *in, int64_t deadline)
{
    int64_t now = rpc_now_ms();

    if (in->freeing || (in->timer_due != 0 && in->timer_due <= deadline))
        return;
    in->timer_due = deadline;
    uv_timer_start(&in->timer, inst_on_timer, deadline > now ? (uint64_t)(deadline - now) : 0,
                   0);
}

static void inst_rearm(inst *in)
{
    int64_t min = INT64_MAX;

    uv_timer_stop(&in->timer);
    in->timer_due = 0;
    for (inst_req *r = in->head; r; r = r->next) {
        int64_t d = inst_deadline(r);

        if (d < min)
            min = d;
    }
    if (min != INT64_MAX)
        inst_arm(in, min);
}

/* Ends every pending request with the same error. Internal ones (initialize) just go. */
static void inst_fail_all(inst *in, int code, const char *message)
{
    inst_error e = {code, message, NULL};
    inst_req *r;

    while ((r = in->head)) {
        inst_unlink(in, r);
        if (!r->internal)
            r->cb(r->ud, NULL, &e);
        inst_req_free(r);
    }
    uv_timer_stop(&in->timer);
    in->timer_due = 0;
}

static void inst_clear_incoming(inst *in)
{
    while (in->incoming) {
        inst_incoming *x = in->incoming;

        in->incoming = x->next;
        json_decref(x->id);
        free(x);
    }
    in->n_incoming = 0;
}

/* ------------------------------------------------------------------ writing */

/* Writes one message (borrowed) as one line. 0, -ENOBUFS, -EPIPE, -EINVAL. */
static int inst_send(inst *in, json_t *msg)
{
    struct iovec iov[2];
    char *text;
    int rc;

    if (in->transport != CFG_TRANSPORT_STDIO) {
        if (!in->r)
            return -EPIPE;
        rc = rmt_send(in->r, msg);
        return rc == -ENOTCONN ? -EPIPE : rc;
    }
    if (!in->p)
        return -EPIPE;
    /* jansson escapes control characters inside strings, so the text has no raw newline. */
    if (!(text = json_dumps(msg, JSON_COMPACT)))
        return -EINVAL;
    iov[0].iov_base = text;
    iov[0].iov_len = strlen(text);
    iov[1].iov_base = (void *)(uintptr_t)"\n";
    iov[1].iov_len = 1;
    rc = proc_writev(in->p, iov, 2);
    free(text);
    return rc;
}

/* Sends a notification; params (object or NULL) is stolen. */
static int inst_send_notification(inst *in, const char *method, json_t *params)
{
    json_t *msg = inst_must(json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", method));
    int rc;

    if (params)
        json_object_set_new(msg, "params", params);
    rc = inst_send(in, msg);
    json_decref(msg);
    if (rc < 0)
        log_debug("upstream notification not sent", "server=%s method=%s error=\"%s\"",
                  in->name, method, strerror(-rc));
    return rc;
}

static void inst_send_cancelled(inst *in, uint64_t id, const char *reason)
{
    json_t *params = inst_must(json_pack("{s:I}", "requestId", (json_int_t)id));

    if (reason)
        json_object_set_new(params, "reason", inst_must(json_string(reason)));
    (void)inst_send_notification(in, "notifications/cancelled", params);
}

/* Answers an upstream request; id borrowed, payload stolen (under key "result" or "error"). */
static int inst_send_reply(inst *in, json_t *id, const char *key, json_t *payload)
{
    json_t *msg = inst_must(json_object());
    int rc;

    json_object_set_new(msg, "jsonrpc", inst_must(json_string("2.0")));
    json_object_set(msg, "id", id);
    json_object_set_new(msg, key, payload);
    rc = inst_send(in, msg);
    json_decref(msg);
    return rc;
}

static void inst_send_error(inst *in, json_t *id, int code, const char *message)
{
    (void)inst_send_reply(in, id, "error",
                          inst_must(json_pack("{s:i, s:s}", "code", code, "message", message)));
}

/* ------------------------------------------------------------------ the state machine */

/* Next state for each state and event; X: the event means nothing in that state.
 * Columns: START, SPAWNED, SPAWN_FAILED, INIT_OK, INIT_FAILED, EXITED, STOP, BROKEN. */
#define X (-1)
static const signed char inst_next[INST_STATE_COUNT][INST_EV_COUNT] = {
    [INST_NEW] = {INST_STARTING, X, X, X, X, X, INST_STOPPED, X},
    [INST_STARTING] = {X, INST_INITIALIZING, INST_FAILED, X, X, INST_FAILED, INST_STOPPING,
                       INST_FAILED},
    [INST_INITIALIZING] = {X, X, X, INST_READY, INST_FAILED, INST_FAILED, INST_STOPPING,
                           INST_FAILED},
    [INST_READY] = {X, X, X, X, X, INST_FAILED, INST_STOPPING, INST_FAILED},
    [INST_STOPPING] = {X, X, X, X, X, INST_STOPPED, INST_STOPPING, X},
    [INST_STOPPED] = {X, X, X, X, X, X, X, X},
    [INST_FAILED] = {X, X, X, X, X, X, INST_FAILED, X},
};
#undef X

static void inst_flush_held(inst *in);

/* Applies ev: the new state's entry actions, then on_state. why is the message pending
 * requests get when the instance leaves service. */
static void inst_fire(inst *in, inst_event ev, const char *why)
{
    inst_state_t from = in->state;
    int to = inst_next[from][ev];

    if (to < 0 || in->freeing)
        return;
    in->state = (inst_state_t)to;
    if (to == (int)from) {
        /* STOP again while stopping or failed: only hurries the process along. */
        if (in->p)
            (void)proc_shutdown(in->p, to == INST_FAILED ? 0 : in->stop_grace_ms,
                                to == INST_FAILED ? in->stop_grace_ms : 2 * in->stop_grace_ms);
        return;
    }
    switch ((inst_state_t)to) {
    case INST_READY:
        (void)inst_send_notification(in, "notifications/initialized", NULL);
        if (in->r) {
            /* Later requests carry the negotiated revision; the server's own messages come
             * on the GET stream from now on. */
            rmt_set_protocol_version(in->r, in->version);
            rmt_listen(in->r);
        }
        inst_flush_held(in);
        break;
    case INST_FAILED:
    case INST_STOPPING:
        inst_fail_all(in, INST_E_CLOSED, why);
        inst_clear_incoming(in);
        /* A failed server gets TERM at once, KILL a grace period later. One asked to stop
         * gets the MCP stdio shutdown (as the SDK's stdio client does it): stdin closes now,
         * TERM after one grace period, KILL after another. */
        if (!in->freeing && in->p && to == INST_FAILED)
            (void)proc_stop(in->p, in->opts.kill_grace_ms);
        else if (!in->freeing && in->p)
            (void)proc_shutdown(in->p, in->stop_grace_ms, 2 * in->stop_grace_ms);
        /* A remote session ends with its transport (a DELETE goes out in the background):
         * nothing is left to wait for. */
        rmt_free(in->r);
        in->r = NULL;
        break;
    default:
        break;
    }
    if (!in->freeing && !in->quiet && in->state == (inst_state_t)to && in->cbs.on_state)
        in->cbs.on_state(in->ud, in, from, (inst_state_t)to);
    if (to == INST_STOPPING && in->transport != CFG_TRANSPORT_STDIO && in->state == INST_STOPPING)
        inst_fire(in, INST_EV_EXITED, why);
}

/* ------------------------------------------------------------------ requests */

/* The common path of inst_request and initialize. params stolen. */
static int inst_request_do(inst *in, const char *method, json_t *params, int64_t timeout_ms,
                           bool reset_on_progress, int64_t max_total_ms, json_t *client_token,
                           inst_progress_fn on_progress, inst_response_fn cb, void *ud,
                           bool internal, uint64_t *handle)
{
    inst_req *r = NULL;
    json_t *msg = NULL, *token = NULL; /* owned */
    uint64_t id;
    int64_t now = rpc_now_ms();
    int rc = 0;

    if (in->n_pending >= in->opts.max_pending) {
        rc = -EBUSY;
        goto out;
    }
    id = ++in->next_id;
    if (!client_token) {
        /* The caller passed the client's params as they came: take the token from there. */
        json_t *tok = json_object_get(json_object_get(params, "_meta"), "progressToken");

        if (json_is_string(tok) || json_is_integer(tok))
            client_token = tok;
    }
    if (client_token) {
        /* Upstream sees our token (the request id); copies keep the caller's objects intact.
         * The reference is taken first: the token may live inside params. */
        json_t *np = params ? inst_must(json_copy(params)) : inst_must(json_object());
        json_t *meta = json_object_get(np, "_meta");
        json_t *nm = json_is_object(meta) ? inst_must(json_copy(meta)) : inst_must(json_object());

        token = json_incref(client_token);
        json_object_set_new(nm, "progressToken", inst_must(json_integer((json_int_t)id)));
        json_object_set_new(np, "_meta", nm);
        json_decref(params);
        params = np;
    }
    msg = inst_must(json_pack("{s:s, s:I, s:s}", "jsonrpc", "2.0", "id", (json_int_t)id,
                              "method", method));
    if (params) {
        json_object_set_new(msg, "params", params);
        params = NULL;
    }
    r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->id = id;
    r->cb = cb;
    r->ud = ud;
    r->on_progress = on_progress;
    r->client_token = token;
    token = NULL;
    r->internal = internal;
    r->reset_on_progress = reset_on_progress;
    r->timeout_ms = timeout_ms;
    r->last_ms = now;
    r->hard_deadline_ms = max_total_ms > 0 && max_total_ms < INT64_MAX - now
                              ? now + max_total_ms : INT64_MAX;
    if (internal || in->state == INST_READY) {
        if ((rc = inst_send(in, msg)) < 0)
            goto out;
        r->sent = true;
        in->st.requests++;
    } else {
        r->msg = msg; /* held until READY */
        msg = NULL;
    }
    inst_link(in, r);
    inst_arm(in, inst_deadline(r));
    if (handle)
        *handle = id;
    r = NULL;
out:
    if (r)
        inst_req_free(r);
    json_decref(token);
    json_decref(msg);
    json_decref(params);
    return rc;
}

int inst_request(inst *in, const char *method, json_t *params, const inst_req_opts *opts,
                 inst_response_fn cb, void *ud, uint64_t *handle)
{
    inst_req_opts d;

    if (handle)
        *handle = 0;
    if (!method || !method[0] || !cb || (params && !json_is_object(params))) {
        json_decref(params);
        return -EINVAL;
    }
    if (in->freeing || (in->state != INST_STARTING && in->state != INST_INITIALIZING &&
                        in->state != INST_READY)) {
        json_decref(params);
        return -ENOTCONN;
    }
    inst_req_opts_default(in, &d);
    if (opts) {
        if (opts->timeout_ms > 0)
            d.timeout_ms = opts->timeout_ms;
        d.reset_on_progress = opts->reset_on_progress;
        d.max_total_ms = opts->max_total_ms;
        d.progress_token = opts->progress_token;
        d.on_progress = opts->on_progress;
    }
    if (d.progress_token && !json_is_string(d.progress_token) &&
        !json_is_integer(d.progress_token)) {
        json_decref(params);
        return -EINVAL;
    }
    return inst_request_do(in, method, params, d.timeout_ms, d.reset_on_progress,
                           d.max_total_ms, d.progress_token, d.on_progress, cb, ud, false,
                           handle);
}

/* Writes the requests held while initializing, in order. */
static void inst_flush_held(inst *in)
{
    while (inst_running(in)) {
        inst_req *r = in->head;
        inst_error e;
        int rc;

        while (r && r->sent)
            r = r->next;
        if (!r)
            return;
        rc = inst_send(in, r->msg);
        json_decref(r->msg);
        r->msg = NULL;
        if (rc == 0) {
            r->sent = true;
            in->st.requests++;
            continue;
        }
        inst_unlink(in, r);
        e.code = INST_E_INTERNAL;
        e.message = rc == -ENOBUFS ? "upstream write queue full" : "upstream write failed";
        e.data = NULL;
        r->cb(r->ud, NULL, &e);
        inst_req_free(r);
    }
}

int inst_cancel(inst *in, uint64_t handle, const char *reason)
{
    inst_req *r = handle ? inst_find(in, handle) : NULL;
    inst_error e = {INST_E_CANCELLED, "Request cancelled", NULL};

    if (!r || r->internal)
        return -ENOENT;
    inst_unlink(in, r);
    in->st.cancels++;
    if (r->sent && inst_running(in))
        inst_send_cancelled(in, r->id, reason);
    r->cb(r->ud, NULL, &e);
    inst_req_free(r);
    return 0;
}

int inst_notify(inst *in, const char *method, json_t *params)
{
    if (!method || !method[0] || (params && !json_is_object(params))) {
        json_decref(params);
        return -EINVAL;
    }
    if (in->freeing || in->state != INST_READY) {
        json_decref(params);
        return -ENOTCONN;
    }
    return inst_send_notification(in, method, params);
}

int inst_respond(inst *in, json_t *id, json_t *result, json_t *error)
{
    inst_incoming **link = &in->incoming, *x = NULL;
    int rc;

    if (!id || (result == NULL) == (error == NULL) || (error && !json_is_object(error))) {
        rc = -EINVAL;
        goto out;
    }
    for (; *link; link = &(*link)->next)
        if (json_equal((*link)->id, id))
            break;
    if (!*link || !inst_running(in)) {
        rc = -ENOENT;
        goto out;
    }
    rc = result ? inst_send_reply(in, id, "result", result)
                : inst_send_reply(in, id, "error", error);
    result = error = NULL;
    if (rc == 0) {
        x = *link;
        *link = x->next;
        in->n_incoming--;
        json_decref(x->id);
        free(x);
    }
out:
    json_decref(result);
    json_decref(error);
    return rc;
}

/* ------------------------------------------------------------------ timeouts */

static void inst_on_timer(uv_timer_t *t)
{
    inst *in = t->data;
    inst_error e = {INST_E_TIMEOUT, "Request timed out", NULL};

    in->timer_due = 0;
    while (!in->freeing) {
        int64_t now = rpc_now_ms();
        inst_req *r = in->head;

        while (r && inst_deadline(r) > now)
            r = r->next;
        if (!r)
            break;
        inst_unlink(in, r);
        in->st.timeouts++;
        log_debug("upstream request timed out", "server=%s id=%" PRIu64, in->name, r->id);
        /* The MCP spec forbids cancelling initialize; everything else is withdrawn. */
        if (r->sent && !r->internal && inst_running(in))
            inst_send_cancelled(in, r->id, e.message);
        r->cb(r->ud, NULL, &e);
        inst_req_free(r);
    }
    if (!in->freeing)
        inst_rearm(in);
}

/* ------------------------------------------------------------------ initialize */

static void inst_on_init_reply(void *ud, json_t *result, const inst_error *err)
{
    inst *in = ud;
    json_error_t jerr;
    const char *ver = NULL, *instr = NULL;
    json_t *caps = NULL, *info = NULL;
    bool known = false;

    if (err) {
        char esc[256];

        inst_escape(esc, sizeof esc, err->message, strlen(err->message));
        log_warn("upstream initialize failed", "server=%s code=%d message=\"%s\"", in->name,
                 err->code, esc);
        inst_fire(in, INST_EV_INIT_FAILED, "upstream server failed to initialize");
        return;
    }
    if (json_unpack_ex(result, &jerr, 0, "{s:s, s?o, s?o, s?s}", "protocolVersion", &ver,
                       "capabilities", &caps, "serverInfo", &info, "instructions", &instr) < 0 ||
        (caps && !json_is_object(caps)) || (info && !json_is_object(info))) {
        log_warn("upstream initialize result invalid", "server=%s", in->name);
        inst_fire(in, INST_EV_INIT_FAILED, "upstream server failed to initialize");
        return;
    }
    for (size_t i = 0; i < sizeof inst_versions / sizeof inst_versions[0]; i++)
        known = known || strcmp(ver, inst_versions[i]) == 0;
    if (!known) {
        char esc[64];

        inst_escape(esc, sizeof esc, ver, strlen(ver));
        log_warn("upstream protocol version not supported", "server=%s version=\"%s\"",
                 in->name, esc);
        inst_fire(in, INST_EV_INIT_FAILED, "upstream server failed to initialize");
        return;
    }
    in->version = inst_strdup(ver);
    in->instructions = instr ? inst_strdup(instr) : NULL;
    in->caps = caps ? json_incref(caps) : inst_must(json_object());
    in->info = info ? json_incref(info) : inst_must(json_object());
    log_info("upstream ready", "server=%s pid=%d protocol=%s", in->name, (int)in->pid,
             in->version);
    inst_fire(in, INST_EV_INIT_OK, NULL);
}

/* ------------------------------------------------------------------ reading stdout */

/* Counts a line that is not JSON-RPC; logs at most once a second. Returns nonzero (stop
 * framing) when the instance failed because of it. */
static int inst_garbage(inst *in, const char *why, const char *line, size_t len)
{
    int64_t now = rpc_now_ms();

    in->st.garbage_lines++;
    in->garbage_run++;
    if (now - in->garbage_log_ms >= INST_LOG_INTERVAL_MS) {
        char sample[INST_GARBAGE_SAMPLE * 4 + 1];

        inst_escape(sample, sizeof sample, line ? line : "",
                    len > INST_GARBAGE_SAMPLE ? INST_GARBAGE_SAMPLE : len);
        log_warn("upstream stdout line is not JSON-RPC",
                 "server=%s reason=\"%s\" bytes=%zu sample=\"%s\" suppressed=%" PRIu64,
                 in->name, why, len, sample, in->garbage_suppressed);
        in->garbage_log_ms = now;
        in->garbage_suppressed = 0;
    } else {
        in->garbage_suppressed++;
    }
    if (in->garbage_run < in->opts.max_garbage)
        return 0;
    log_error("upstream failed: too many garbage lines on stdout", "server=%s lines=%d",
              in->name, in->garbage_run);
    inst_fire(in, INST_EV_BROKEN, "upstream server wrote garbage on stdout");
    return 1;
}

static void inst_on_response(inst *in, json_t *id, json_t *result, json_t *error)
{
    inst_req *r = NULL;
    inst_error e;
    json_t *code, *message;

    if (json_is_integer(id) && json_integer_value(id) > 0)
        r = inst_find(in, (uint64_t)json_integer_value(id));
    if (!r || !r->sent) {
        /* A request that timed out or was cancelled, or an id we never used. */
        in->st.late_responses++;
        log_debug("upstream response matches no request", "server=%s", in->name);
        return;
    }
    inst_unlink(in, r);
    in->st.responses++;
    if (!error) {
        r->cb(r->ud, result, NULL);
        inst_req_free(r);
        return;
    }
    code = json_object_get(error, "code");
    message = json_object_get(error, "message");
    if (json_is_integer(code) && json_is_string(message) && json_integer_value(code) >= INT_MIN &&
        json_integer_value(code) <= INT_MAX) {
        e.code = (int)json_integer_value(code);
        e.message = json_string_value(message);
        e.data = json_object_get(error, "data");
    } else {
        e.code = INST_E_INTERNAL;
        e.message = "upstream sent an invalid error object";
        e.data = NULL;
    }
    r->cb(r->ud, NULL, &e);
    inst_req_free(r);
}

static void inst_on_progress(inst *in, json_t *params)
{
    json_t *tok = json_object_get(params, "progressToken"), *copy;
    inst_req *r = NULL;

    if (json_is_integer(tok) && json_integer_value(tok) > 0)
        r = inst_find(in, (uint64_t)json_integer_value(tok));
    if (!r || !r->client_token) {
        in->st.dropped_progress++;
        return;
    }
    if (r->reset_on_progress)
        r->last_ms = rpc_now_ms(); /* the timer fires early and re-arms: no rescan here */
    if (!r->on_progress)
        return;
    copy = inst_must(json_copy(params));
    json_object_set(copy, "progressToken", r->client_token);
    r->on_progress(r->ud, copy);
    json_decref(copy);
}

static void inst_on_notification(inst *in, const char *method, json_t *params)
{
    in->st.notifications++;
    if (strcmp(method, "notifications/progress") == 0) {
        inst_on_progress(in, params);
        return;
    }
    if (strcmp(method, "notifications/cancelled") == 0) {
        /* Upstream withdrew one of its requests: it wants no answer any more. */
        json_t *rid = json_object_get(params, "requestId");

        for (inst_incoming **link = &in->incoming; rid && *link; link = &(*link)->next) {
            if (json_equal((*link)->id, rid)) {
                inst_incoming *x = *link;

                *link = x->next;
                in->n_incoming--;
                json_decref(x->id);
                free(x);
                break;
            }
        }
    }
    if (in->cbs.on_notification)
        in->cbs.on_notification(in->ud, in, method, params);
}

static void inst_on_upstream_request(inst *in, json_t *id, const char *method, json_t *params)
{
    inst_incoming *x;

    in->st.upstream_requests++;
    if (strcmp(method, "ping") == 0) {
        (void)inst_send_reply(in, id, "result", inst_must(json_object()));
        return;
    }
    if (!in->cbs.on_request) {
        inst_send_error(in, id, -32601, "Method not found");
        return;
    }
    if (in->n_incoming >= INST_MAX_INCOMING) {
        inst_send_error(in, id, INST_E_INTERNAL, "Too many requests in flight");
        return;
    }
    x = malloc(sizeof *x);
    if (!x)
        abort();
    x->id = json_incref(id);
    x->next = in->incoming;
    in->incoming = x;
    in->n_incoming++;
    in->cbs.on_request(in->ud, in, id, method, params);
}

/* Classifies one parsed line; all envelope checks happen here. msg is borrowed. */
static int inst_dispatch(inst *in, json_t *msg, const char *line, size_t len)
{
    json_t *ver, *id, *method, *params, *result, *error;

    if (!json_is_object(msg))
        return inst_garbage(in, "not a JSON object", line, len);
    ver = json_object_get(msg, "jsonrpc");
    if (!json_is_string(ver) || strcmp(json_string_value(ver), "2.0") != 0)
        return inst_garbage(in, "not JSON-RPC 2.0", line, len);
    id = json_object_get(msg, "id");
    method = json_object_get(msg, "method");
    params = json_object_get(msg, "params");
    result = json_object_get(msg, "result");
    error = json_object_get(msg, "error");
    if (params && !json_is_object(params))
        return inst_garbage(in, "params is not an object", line, len);
    if (method) {
        if (!json_is_string(method))
            return inst_garbage(in, "method is not a string", line, len);
        if (id && !json_is_string(id) && !json_is_integer(id))
            return inst_garbage(in, "bad request id", line, len);
        in->garbage_run = 0;
        if (id)
            inst_on_upstream_request(in, id, json_string_value(method), params);
        else
            inst_on_notification(in, json_string_value(method), params);
        return 0;
    }
    if (id && (result == NULL) != (error == NULL)) {
        in->garbage_run = 0;
        inst_on_response(in, id, result, error);
        return 0;
    }
    return inst_garbage(in, "neither request, notification nor response", line, len);
}

static int inst_on_line(void *ud, const char *line, size_t len)
{
    inst *in = ud;
    json_error_t jerr;
    json_t *msg;
    int rc;

    if (!inst_running(in))
        return 1;
    if (!(msg = json_loadb(line, len, 0, &jerr)))
        return inst_garbage(in, "not JSON", line, len);
    rc = inst_dispatch(in, msg, line, len);
    json_decref(msg);
    return rc || !inst_running(in) ? 1 : 0;
}

static int inst_on_too_long(void *ud, ndjson_error err)
{
    inst *in = ud;

    (void)err;
    return inst_garbage(in, "line too long", NULL, 0);
}

static void inst_on_stdout(void *ud, const char *buf, size_t len)
{
    inst *in = ud;

    if (!buf) {
        /* Nothing more can be answered. The process normally exits right away (its exit
         * fails what is pending); one that lingers is stopped. */
        if (inst_running(in) && in->p) {
            log_debug("upstream closed stdout", "server=%s", in->name);
            (void)proc_stop(in->p, in->opts.kill_grace_ms);
        }
        return;
    }
    if (inst_running(in))
        (void)ndjson_feed(in->fr, buf, len, inst_on_line, in);
}

/* ------------------------------------------------------------------ stderr */

static void inst_stderr_line(inst *in)
{
    char esc[INST_LOG_VALUE_MAX];
    size_t n = in->errlen;
    bool cut = in->errtrunc;
    int64_t now = rpc_now_ms();

    in->errlen = 0;
    in->errtrunc = false;
    if (n > 0 && in->errline[n - 1] == '\r' && !cut)
        n--;
    if (n == 0 && !cut)
        return;
    in->st.stderr_lines++;
    if (now - in->err_window_ms >= INST_LOG_INTERVAL_MS) {
        if (in->err_dropped_window)
            log_warn("upstream stderr lines not logged", "server=%s count=%d", in->name,
                     in->err_dropped_window);
        in->err_window_ms = now;
        in->err_in_window = 0;
        in->err_dropped_window = 0;
    }
    if (in->err_in_window >= INST_STDERR_LINES_PER_SEC) {
        in->st.stderr_dropped++;
        in->err_dropped_window++;
        return;
    }
    in->err_in_window++;
    cut = inst_escape(esc, sizeof esc, in->errline, n) || cut;
    log_info("upstream stderr", "server=%s line=\"%s\"%s", in->name, esc,
             cut ? " truncated=true" : "");
}

static void inst_on_stderr(void *ud, const char *buf, size_t len)
{
    inst *in = ud;

    if (!buf) {
        inst_stderr_line(in);
        if (in->err_dropped_window)
            log_warn("upstream stderr lines not logged", "server=%s count=%d", in->name,
                     in->err_dropped_window);
        in->err_dropped_window = 0;
        return;
    }
    while (len > 0) {
        const char *nl = memchr(buf, '\n', len);
        size_t seg = nl ? (size_t)(nl - buf) : len;
        size_t room = sizeof in->errline - in->errlen;
        size_t take = seg < room ? seg : room;

        memcpy(in->errline + in->errlen, buf, take);
        in->errlen += take;
        if (take < seg)
            in->errtrunc = true;
        if (nl) {
            inst_stderr_line(in);
            seg++;
        }
        buf += seg;
        len -= seg;
    }
}

/* ------------------------------------------------------------------ exit */

static void inst_on_exit(void *ud, int64_t status, int sig)
{
    inst *in = ud;

    in->st.exited = true;
    in->st.exit_status = status;
    in->st.term_signal = sig;
    if (in->state == INST_STOPPING || in->state == INST_FAILED)
        log_info("upstream process ended", "server=%s pid=%d status=%" PRId64 " signal=%d",
                 in->name, (int)in->pid, status, sig);
    else
        log_warn("upstream exited", "server=%s pid=%d status=%" PRId64 " signal=%d", in->name,
                 (int)in->pid, status, sig);
    inst_fire(in, INST_EV_EXITED, "upstream server exited");
}

/* ------------------------------------------------------------------ remote transport */

static void inst_on_rmt_message(void *ud, json_t *msg)
{
    inst *in = ud;

    if (inst_running(in))
        (void)inst_dispatch(in, msg, NULL, 0);
}

static void inst_on_rmt_closed(void *ud, rmt_close_reason reason, const char *why)
{
    inst *in = ud;

    in->r = NULL; /* rmt frees itself after this callback */
    in->st.exited = true;
    log_warn("upstream connection lost", "server=%s reason=%d error=\"%s\"", in->name,
             (int)reason, why);
    inst_fire(in, INST_EV_BROKEN,
              reason == RMT_CLOSED_SESSION_LOST ? "upstream session expired"
                                                : "upstream server unreachable");
}

static const rmt_callbacks inst_rmt_callbacks = {
    .on_message = inst_on_rmt_message,
    .on_closed = inst_on_rmt_closed,
};

/* Opens the remote transport: the counterpart of proc_spawn for stdio servers. */
static int inst_connect(inst *in)
{
    rmt_opts ro;
    int rc;

    memset(&ro, 0, sizeof ro);
    ro.kind = in->transport == CFG_TRANSPORT_SSE ? RMT_SSE : RMT_STREAMABLE_HTTP;
    ro.url = in->url;
    ro.headers = in->headers;
    ro.n_headers = in->n_headers;
    ro.name = in->name;
    ro.max_message = in->opts.max_line;
    ro.max_queue = in->opts.max_write_queue;
    if ((rc = rmt_new(in->loop, &ro, &inst_rmt_callbacks, in, &in->r)) < 0)
        log_warn("upstream failed to connect", "server=%s error=\"%s\"", in->name,
                 strerror(-rc));
    else
        log_info("upstream connecting", "server=%s transport=%s", in->name,
                 cfg_transport_name(in->transport));
    return rc;
}

/* ------------------------------------------------------------------ lifecycle */

/* A copy of s with every INST_SCOPE_VAR replaced by scope (s itself without a scope). */
static char *inst_scoped(const char *s, const char *scope)
{
    static const char var[] = INST_SCOPE_VAR;
    size_t vl = sizeof var - 1, sl, n = 0, len;
    const char *p;
    char *out, *o;

    if (!scope)
        return inst_strdup(s);
    sl = strlen(scope);
    for (p = s; (p = strstr(p, var)); p += vl)
        n++;
    len = strlen(s) + n * sl - n * vl;
    if (!(out = malloc(len + 1)))
        abort();
    for (o = out, p = s;;) {
        const char *hit = strstr(p, var);
        size_t k = hit ? (size_t)(hit - p) : strlen(p);

        memcpy(o, p, k);
        o += k;
        if (!hit)
            break;
        memcpy(o, scope, sl);
        o += sl;
        p = hit + vl;
    }
    *o = '\0';
    return out;
}

inst *inst_new(uv_loop_t *loop, const cfg_server *srv, const inst_callbacks *cbs, void *ud)
{
    return inst_new_scoped(loop, srv, NULL, cbs, ud);
}

inst *inst_new_scoped(uv_loop_t *loop, const cfg_server *srv, const char *scope,
                      const inst_callbacks *cbs, void *ud)
{
    inst *in;

    bool stdio = srv && srv->transport == CFG_TRANSPORT_STDIO;
    bool remote = srv && (srv->transport == CFG_TRANSPORT_SSE ||
                          srv->transport == CFG_TRANSPORT_STREAMABLE_HTTP);

    if (!loop || (!stdio && !remote) || (stdio && (!srv->command || !srv->command[0])) ||
        (remote && (!srv->url || !srv->url[0])))
        return NULL;
    in = calloc(1, sizeof *in);
    if (!in)
        abort();
    in->loop = loop;
    if (cbs)
        in->cbs = *cbs;
    in->ud = ud;
    in->state = INST_NEW;
    in->name = inst_strdup(srv->name);
    in->transport = srv->transport;
    in->command = inst_scoped(stdio ? srv->command : "", scope);
    in->url = remote ? inst_scoped(srv->url, scope) : NULL;
    if (remote && srv->n_headers) {
        in->headers = calloc(srv->n_headers, sizeof *in->headers);
        if (!in->headers)
            abort();
        for (size_t i = 0; i < srv->n_headers; i++) {
            in->headers[i].key = inst_strdup(srv->headers[i].key);
            in->headers[i].value = inst_scoped(srv->headers[i].value, scope);
        }
        in->n_headers = srv->n_headers;
    }
    in->cwd = srv->cwd ? inst_scoped(srv->cwd, scope) : NULL;
    in->n_args = srv->n_args;
    in->args = calloc(srv->n_args + 1, sizeof *in->args);
    in->n_env = srv->n_env;
    in->env = calloc(srv->n_env + 2, sizeof *in->env);
    if (!in->args || !in->env)
        abort();
    for (size_t i = 0; i < srv->n_args; i++)
        in->args[i] = inst_scoped(srv->args[i], scope);
    for (size_t i = 0; i < srv->n_env; i++) {
        in->env[i].name = inst_strdup(srv->env[i].key);
        in->env[i].value = inst_scoped(srv->env[i].value, scope);
    }
    /* A per-session child also learns its session from its environment. */
    if (scope && stdio) {
        in->env[in->n_env].name = inst_strdup(INST_SCOPE_ENV);
        in->env[in->n_env].value = inst_strdup(scope);
        in->n_env++;
    }
    in->srv_timeout_ms = srv->timeout_ms;
    in->srv_reset_on_progress = srv->reset_timeout_on_progress;
    in->srv_max_total_ms = srv->max_total_timeout_ms;
    inst_opts_init(&in->opts, NULL);
    in->stop_grace_ms = in->opts.kill_grace_ms;
    uv_timer_init(loop, &in->timer);
    in->timer.data = in;
    return in;
}

int inst_start(inst *in, const inst_opts *opts)
{
    proc_opts po;
    json_t *params;
    int rc;

    if (in->state != INST_NEW || in->freeing)
        return -EALREADY;
    if (opts)
        in->opts = *opts;
    inst_opts_fix(&in->opts);
    in->stop_grace_ms = in->opts.kill_grace_ms;
    in->fr = ndjson_new(in->opts.max_line);
    ndjson_set_error_fn(in->fr, inst_on_too_long);
    in->quiet = true;
    inst_fire(in, INST_EV_START, NULL);

    if (in->transport != CFG_TRANSPORT_STDIO) {
        if ((rc = inst_connect(in)) < 0) {
            inst_fire(in, INST_EV_SPAWN_FAILED, "upstream server failed to start");
            in->quiet = false;
            return rc;
        }
        in->st.started_ms = rpc_now_ms();
        inst_fire(in, INST_EV_SPAWNED, NULL);
        goto handshake;
    }
    memset(&po, 0, sizeof po);
    po.file = in->command;
    po.args = (const char *const *)in->args;
    po.n_args = in->n_args;
    po.env = in->env;
    po.n_env = in->n_env;
    po.inherit_all_env = in->opts.inherit_all_env;
    po.cwd = in->cwd;
    po.max_write_queue = in->opts.max_write_queue;
    po.on_stdout = inst_on_stdout;
    po.on_stderr = inst_on_stderr;
    po.on_exit = inst_on_exit;
    po.ud = in;
    if ((rc = proc_spawn(in->loop, &po, &in->p)) < 0) {
        char esc[512];

        inst_escape(esc, sizeof esc, in->command, strlen(in->command));
        log_warn("upstream failed to start", "server=%s command=\"%s\" error=\"%s\"",
                 in->name, esc, strerror(-rc));
        inst_fire(in, INST_EV_SPAWN_FAILED, "upstream server failed to start");
        in->quiet = false;
        return rc;
    }
    in->pid = proc_pid(in->p);
    in->st.started_ms = rpc_now_ms();
    log_info("upstream started", "server=%s pid=%d", in->name, (int)in->pid);
    inst_fire(in, INST_EV_SPAWNED, NULL);

handshake:
    params = inst_must(json_pack("{s:s, s:{s:{}, s:{s:{}}, s:{s:b}}, s:{s:s, s:s}}",
                                 "protocolVersion", INST_PROTOCOL_VERSION, "capabilities",
                                 "sampling", "elicitation", "form", "roots", "listChanged", 1,
                                 "clientInfo", "name", INST_CLIENT_NAME, "version",
                                 INST_CLIENT_VERSION));
    rc = inst_request_do(in, "initialize", params, in->opts.init_timeout_ms, false, 0, NULL,
                         NULL, inst_on_init_reply, in, true, NULL);
    if (rc < 0)
        /* Could not even write to a process just started: give it up (it is stopped). */
        inst_fire(in, INST_EV_INIT_FAILED, "upstream server failed to start");
    in->quiet = false;
    return rc;
}

int inst_stop(inst *in, int64_t grace_ms)
{
    in->stop_grace_ms = grace_ms >= 0 ? grace_ms : in->opts.kill_grace_ms;
    inst_fire(in, INST_EV_STOP, "upstream server stopping");
    return 0;
}

static void inst_on_close(uv_handle_t *h)
{
    inst *in = h->data;

    ndjson_free(in->fr);
    for (size_t i = 0; i < in->n_args; i++)
        free(in->args[i]);
    for (size_t i = 0; i < in->n_env; i++) {
        free((char *)(uintptr_t)in->env[i].name);
        free((char *)(uintptr_t)in->env[i].value);
    }
    free(in->args);
    free(in->env);
    free(in->name);
    free(in->command);
    free(in->cwd);
    free(in->url);
    for (size_t i = 0; i < in->n_headers; i++) {
        free((char *)(uintptr_t)in->headers[i].key);
        free((char *)(uintptr_t)in->headers[i].value);
    }
    free(in->headers);
    json_decref(in->caps);
    json_decref(in->info);
    free(in->version);
    free(in->instructions);
    free(in);
}

void inst_free(inst *in)
{
    if (!in || in->freeing)
        return;
    in->freeing = true;
    inst_fail_all(in, INST_E_CLOSED, "upstream instance closed");
    inst_clear_incoming(in);
    proc_free(in->p); /* kills and reaps in the background if still running */
    in->p = NULL;
    rmt_free(in->r);
    in->r = NULL;
    uv_timer_stop(&in->timer);
    uv_close((uv_handle_t *)&in->timer, inst_on_close);
}

void inst_fail(inst *in, const char *why)
{
    if (!inst_running(in))
        return;
    log_warn("upstream taken out of service", "server=%s reason=\"%s\"", in->name, why);
    inst_fire(in, INST_EV_BROKEN, why);
}

/* ------------------------------------------------------------------ accessors */

cfg_transport inst_transport(const inst *in)
{
    return in->transport;
}

inst_state_t inst_state(const inst *in)
{
    return in->state;
}

const char *inst_name(const inst *in)
{
    return in->name;
}

pid_t inst_pid(const inst *in)
{
    return in->p ? proc_pid(in->p) : 0;
}

json_t *inst_server_capabilities(const inst *in)
{
    return in->caps;
}

json_t *inst_server_info(const inst *in)
{
    return in->info;
}

const char *inst_protocol_version(const inst *in)
{
    return in->version;
}

const char *inst_instructions(const inst *in)
{
    return in->instructions;
}

void inst_get_stats(const inst *in, inst_stats *out)
{
    *out = in->st;
    out->pending = in->n_pending;
}
