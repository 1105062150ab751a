/* ctl_metrics: control's counters (loop thread), their exposition rendered on the loop, and
 * the --metrics-listen HTTP server (see ctl_metrics.h).
 *
 * A scrape runs on libmicrohttpd's one internal thread: it bumps the wanted snapshot
 * generation, wakes the loop through an async handle and waits on a condition variable; the
 * loop renders everything it owns into text and publishes it with the generation it served.
 * Process metrics are read on the HTTP thread. Stopping sets `closing` (no more wake-ups, a
 * waiting scrape gets 503), joins the HTTP thread, then closes the async handle. */
#include "ctl_metrics.h"

#include "ctl_up.h"
#include "log.h"
#include "mcphub/v1/gateway.pb-c.h"
#include "prom.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CM_MAX_CONNECTIONS 64u
#define CM_CONNECTION_TIMEOUT_S 10u
#define CM_LISTEN_BACKLOG 64
#define CM_HOST_MAX 256
#define CM_REASONS 16 /* EndReason values kept apart; larger ones count as unspecified */

/* Broadcast lag buckets, seconds: 10 µs to 1 s. */
static const double cm_lag_bounds[] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                       0.001,   0.0025,   0.005,   0.01,   0.025,   0.05,
                                       0.1,     0.25,     0.5,     1};
#define CM_LAG_BOUNDS (sizeof cm_lag_bounds / sizeof cm_lag_bounds[0])

typedef enum {
    CM_ASYNC_NONE = 0, /* never initialized */
    CM_ASYNC_OPEN,
    CM_ASYNC_CLOSING,  /* uv_close called, callback pending */
    CM_ASYNC_CLOSED,
} cm_async_state;

struct ctl_metrics {
    ctl *c;
    int fd;   /* our listening socket, -1 when off; closed by us after MHD_stop_daemon */
    int port;
    int family;
    struct MHD_Daemon *mhd;
    uv_async_t async;
    cm_async_state async_state;
    bool free_on_close; /* ctl_metrics_free ran while the close was pending */

    pthread_mutex_t mu; /* guards the fields below */
    pthread_cond_t cv;  /* CLOCK_MONOTONIC; a snapshot was published, or closing */
    uint64_t asked;     /* latest generation a scrape wants */
    uint64_t served;    /* generation of `text` */
    bool posted;        /* the loop was woken and has not taken the request yet */
    bool closing;
    char *text;         /* owned: the latest snapshot */
    size_t len;

    /* Loop thread only. */
    uint64_t opened[3]; /* [sess_era] */
    uint64_t ended[CM_REASONS];
    uint64_t lag[CM_LAG_BOUNDS + 1];
    uint64_t lag_ns;
    int64_t lag_bounds_ns[CM_LAG_BOUNDS];
};

/* ---- counters (loop thread) ---------------------------------------------------------- */

int64_t ctl_metrics_clock(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void ctl_metrics_session_opened(ctl *c, int era)
{
    if (c->metrics)
        c->metrics->opened[era >= 0 && era < 3 ? era : 0]++;
}

void ctl_metrics_session_ended(ctl *c, int reason, int64_t since)
{
    ctl_metrics *m = c->metrics;
    int64_t ns = ctl_metrics_clock() - since;
    size_t b = 0;

    if (!m)
        return;
    m->ended[reason >= 0 && reason < CM_REASONS ? reason : 0]++;
    if (ns < 0)
        ns = 0;
    while (b < CM_LAG_BOUNDS && ns > m->lag_bounds_ns[b])
        b++;
    m->lag[b]++;
    m->lag_ns += (uint64_t)ns;
}

/* ---- the snapshot (loop thread) ------------------------------------------------------ */

/* Instances counted by (server, kind, state) while visiting them. */
typedef struct {
    char *server;
    const char *kind;
    char *state;
    uint64_t n;
} cm_inst_row;

typedef struct {
    cm_inst_row *rows;
    size_t n, cap;
} cm_inst_acc;

static void cm_inst_one(void *ud, const ctl_up_info *info)
{
    cm_inst_acc *a = ud;
    const char *kind = info->template_instance ? "template"
                       : info->warm            ? "warm"
                       : info->session_id[0]   ? "session"
                                               : "shared";
    cm_inst_row *row;

    for (size_t i = 0; i < a->n; i++) {
        row = &a->rows[i];
        if (row->kind == kind && strcmp(row->server, info->server) == 0 &&
            strcmp(row->state, info->state) == 0) {
            row->n++;
            return;
        }
    }
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 16;
        if (!(a->rows = realloc(a->rows, a->cap * sizeof *a->rows)))
            abort();
    }
    row = &a->rows[a->n++];
    /* the visit's strings live only during the call */
    if (!(row->server = strdup(info->server)) || !(row->state = strdup(info->state)))
        abort();
    row->kind = kind;
    row->n = 1;
}

static void cm_render_instances(ctl *c, prom_buf *b)
{
    cm_inst_acc a = {0};

    prom_family(b, "mcphub_control_instances", "gauge",
                "Upstream instances that exist, by server, kind (shared, session, template, "
                "warm) and state.");
    ctl_up_visit(c, cm_inst_one, &a);
    for (size_t i = 0; i < a.n; i++) {
        const char *labels[] = {"server", a.rows[i].server, "kind", a.rows[i].kind,
                                "state", a.rows[i].state, NULL};

        prom_sample_u64(b, "mcphub_control_instances", labels, a.rows[i].n);
        free(a.rows[i].server);
        free(a.rows[i].state);
    }
    free(a.rows);

    prom_family(b, "mcphub_control_instance_restarts_total", "counter",
                "Restarts of each configured server's shared instance since control started "
                "(starts again from 0 when a reload replaces the server).");
    for (size_t i = 0; i < c->cfg->n_servers; i++) {
        const char *labels[] = {"server", c->cfg->servers[i].name, NULL};

        prom_sample_u64(b, "mcphub_control_instance_restarts_total", labels,
                        ctl_up_restarts(c, i));
    }
}

typedef struct {
    prom_buf *b;
    const char *listener;
} cm_rpc_ctx;

static void cm_rpc_one(void *ud, const char *path, const uint64_t counts[RPC_STATUS_CODES])
{
    cm_rpc_ctx *x = ud;
    char service[128];
    const char *slash = strrchr(path, '/');
    const char *method = slash ? slash + 1 : path;

    /* "/package.Service/Method" */
    snprintf(service, sizeof service, "%.*s", slash && slash > path ? (int)(slash - path - 1) : 0,
             path + 1);
    for (int k = 0; k < RPC_STATUS_CODES; k++) {
        const char *labels[] = {"listener", x->listener, "grpc_service", service,
                                "grpc_method", method, "grpc_code",
                                rpc_status_name((grpc_status_code)k), NULL};

        if (counts[k])
            prom_sample_u64(x->b, "mcphub_control_rpc_handled_total", labels, counts[k]);
    }
}

static void cm_render_sessions(ctl *c, ctl_metrics *m, prom_buf *b)
{
    const ProtobufCEnumDescriptor *reasons = &mcphub__v1__end_reason__descriptor;
    size_t pos = 0, running = 0;
    char reason[64];
    sess *s;

    while (sess_next(c->sessions, &pos, &s))
        running += s->running;
    prom_family(b, "mcphub_control_sessions", "gauge", "Client sessions open now.");
    prom_sample_u64(b, "mcphub_control_sessions", NULL, sess_count(c->sessions));
    prom_family(b, "mcphub_control_requests_in_flight", "gauge",
                "Client requests of sessions that have not been answered yet.");
    prom_sample_u64(b, "mcphub_control_requests_in_flight", NULL, running);
    prom_family(b, "mcphub_control_sessions_opened_total", "counter",
                "Client sessions opened, by era (streamable: Streamable HTTP; legacy_sse: "
                "2024-11-05 HTTP+SSE; stateless: scopes of 2026-07-28 clients).");
    for (int era = 0; era < 3; era++) {
        static const char *const names[] = {"streamable", "legacy_sse", "stateless"};
        const char *labels[] = {"era", names[era], NULL};

        prom_sample_u64(b, "mcphub_control_sessions_opened_total", labels, m->opened[era]);
    }
    prom_family(b, "mcphub_control_sessions_ended_total", "counter",
                "Client sessions ended, by reason (gateway.proto's EndReason).");
    for (int r = 0; r < CM_REASONS; r++) {
        const char *labels[] = {"reason", reason, NULL};

        if (!m->ended[r] && !protobuf_c_enum_descriptor_get_value(reasons, r))
            continue;
        prom_enum_label(reasons, r, "END_REASON_", reason, sizeof reason);
        prom_sample_u64(b, "mcphub_control_sessions_ended_total", labels, m->ended[r]);
    }
    prom_family(b, "mcphub_control_edges", "gauge", "Edges connected (open Subscribe streams).");
    prom_sample_u64(b, "mcphub_control_edges", NULL, c->n_edges);
    prom_family(b, "mcphub_control_broadcasts_total", "counter",
                "SessionEnded broadcasts sent (one per ended session, to every connected edge).");
    prom_sample_u64(b, "mcphub_control_broadcasts_total", NULL, c->broadcasts);
    prom_family(b, "mcphub_control_broadcast_lag_seconds", "histogram",
                "Time from control deciding that a session ends to its SessionEnded event being "
                "queued on every connected edge's stream (its requests are cancelled and its "
                "instances signalled in between).");
    prom_histogram(b, "mcphub_control_broadcast_lag_seconds", NULL, cm_lag_bounds, m->lag,
                   CM_LAG_BOUNDS, (double)m->lag_ns / 1e9);
}

/* Renders every family the loop owns into b. */
static void cm_render(ctl *c, ctl_metrics *m, prom_buf *b)
{
    const char *info[] = {"control_id", c->control_id, NULL};
    cm_rpc_ctx x = {b, "gateway"};

    prom_family(b, "mcphub_control_info", "gauge", "Always 1; control's id as a label.");
    prom_sample_u64(b, "mcphub_control_info", info, 1);
    cm_render_sessions(c, m, b);
    cm_render_instances(c, b);
    prom_family(b, "mcphub_control_rpc_handled_total", "counter",
                "gRPC calls control completed, by listener, service, method and status code "
                "(errors are every code but OK).");
    rpc_server_counts(c->gateway, cm_rpc_one, &x);
    x.listener = "admin";
    rpc_server_counts(c->admin, cm_rpc_one, &x);
    prom_family(b, "mcphub_control_config_version", "gauge",
                "Version of the configuration in force (1 at start, +1 per applied reload).");
    prom_sample_u64(b, "mcphub_control_config_version", NULL, c->config_version);
    prom_family(b, "mcphub_control_config_reloads_total", "counter",
                "Configuration reloads applied.");
    prom_sample_u64(b, "mcphub_control_config_reloads_total", NULL, c->reloads);
    prom_family(b, "mcphub_control_config_reload_failures_total", "counter",
                "Configuration reloads refused (the last good configuration stayed).");
    prom_sample_u64(b, "mcphub_control_config_reload_failures_total", NULL, c->reload_failures);
}

static void cm_on_async(uv_async_t *h)
{
    ctl_metrics *m = h->data;
    prom_buf b;
    uint64_t gen;

    pthread_mutex_lock(&m->mu);
    gen = m->asked;
    m->posted = false; /* a scrape arriving from now on wakes the loop again */
    pthread_mutex_unlock(&m->mu);

    prom_buf_init(&b, 0);
    cm_render(m->c, m, &b);
    if (b.over) {
        log_warn("metrics exposition too large", "max=%zu", b.max);
        prom_buf_cleanup(&b);
        prom_buf_init(&b, 0);
    }

    pthread_mutex_lock(&m->mu);
    free(m->text);
    m->text = b.data; /* steals the buffer */
    m->len = b.len;
    m->served = gen;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* ---- HTTP (libmicrohttpd's thread) ----------------------------------------------------- */

/* Asks the loop for a snapshot and waits for it. On success *out owns a copy of its text.
 * Returns 0, -ETIMEDOUT, or -ECANCELED while stopping. */
static int cm_snapshot(ctl_metrics *m, char **out, size_t *len)
{
    struct timespec until;
    uint64_t want;
    int rc = 0;

    *out = NULL;
    *len = 0;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += CTL_METRICS_SNAPSHOT_TIMEOUT_MS / 1000;
    until.tv_nsec += (long)(CTL_METRICS_SNAPSHOT_TIMEOUT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&m->mu);
    want = ++m->asked;
    while (m->served < want && !m->closing && rc == 0) {
        if (!m->posted) {
            m->posted = true;
            uv_async_send(&m->async);
        }
        rc = pthread_cond_timedwait(&m->cv, &m->mu, &until);
    }
    if (m->served >= want) {
        rc = 0;
        if (!(*out = malloc(m->len + 1)))
            abort();
        if (m->len)
            memcpy(*out, m->text, m->len);
        (*out)[m->len] = '\0';
        *len = m->len;
    } else {
        rc = m->closing ? -ECANCELED : -ETIMEDOUT;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static enum MHD_Result cm_reply(struct MHD_Connection *conn, unsigned status,
                                const char *content_type, const char *body, size_t len,
                                const char *allow)
{
    struct MHD_Response *resp;
    enum MHD_Result rc = MHD_NO;

    resp = MHD_create_response_from_buffer(len, (void *)(len ? body : ""),
                                           MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES ||
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
        (allow && MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES))
        goto out;
    rc = MHD_queue_response(conn, status, resp);
out:
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result cm_reply_json(struct MHD_Connection *conn, unsigned status,
                                     const char *json, const char *allow)
{
    return cm_reply(conn, status, "application/json", json, strlen(json), allow);
}

static enum MHD_Result cm_metrics(ctl_metrics *m, struct MHD_Connection *conn)
{
    prom_buf b;
    char *text;
    size_t len;
    enum MHD_Result rc;
    int err = cm_snapshot(m, &text, &len);

    if (err < 0)
        return cm_reply_json(conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                             err == -ECANCELED ? "{\"error\":\"control stopping\"}"
                                               : "{\"error\":\"control loop did not answer\"}",
                             NULL);
    prom_buf_init(&b, 0);
    prom_append(&b, text, len);
    prom_process(&b);
    free(text);
    if (b.over)
        rc = cm_reply_json(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
                           "{\"error\":\"metrics exposition too large\"}", NULL);
    else
        rc = cm_reply(conn, MHD_HTTP_OK, PROM_CONTENT_TYPE, b.data, b.len, NULL);
    prom_buf_cleanup(&b);
    return rc;
}

static int cm_marker; /* *req_cls of a request whose head was seen */

static enum MHD_Result cm_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **req_cls)
{
    ctl_metrics *m = cls;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool known = strcmp(url, "/metrics") == 0 || strcmp(url, "/healthz") == 0;

    (void)version;
    (void)upload_data;
    if (!known)
        return cm_reply_json(conn, MHD_HTTP_NOT_FOUND, "{\"error\":\"not found\"}", NULL);
    if (!get)
        return cm_reply_json(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                             "{\"error\":\"method not allowed\"}", "GET, HEAD");
    /* Answer on the last call: answering on the first one makes libmicrohttpd drop
     * keep-alive; a body sent with a GET is read and ignored. */
    if (!*req_cls) {
        *req_cls = &cm_marker;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/healthz") == 0)
        return cm_reply_json(conn, MHD_HTTP_OK, "{\"status\":\"ok\"}", NULL);
    return cm_metrics(m, conn);
}

__attribute__((format(printf, 2, 0))) static void cm_mhd_log(void *cls, const char *fmt,
                                                              va_list ap)
{
    char text[256];

    (void)cls;
    if (log_current_level < LOG_DEBUG)
        return;
    vsnprintf(text, sizeof text, fmt, ap);
    for (size_t n = 0; text[n]; n++)
        if (text[n] == '"' || text[n] == '\n' || text[n] == '\r')
            text[n] = text[n] == '"' ? '\'' : ' ';
    log_debug("metrics http", "detail=\"%s\"", text);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

/* Binds "HOST:PORT" (HOST may be [IPv6]). Fills *fd, *port, *family and host (for the log).
 * Returns 0, -EINVAL or -EADDRNOTAVAIL. */
static int cm_bind(const char *addr, int *fd, int *port, int *family, char *host, size_t size)
{
    struct addrinfo hints = {0}, *res = NULL, *ai;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    const char *colon = strrchr(addr, ':');
    char name[CM_HOST_MAX];
    size_t hlen;
    int one = 1, rc = -EADDRNOTAVAIL, s = -1;

    *fd = -1;
    if (!colon || colon == addr || !colon[1] || (size_t)(colon - addr) >= sizeof name)
        return -EINVAL;
    hlen = (size_t)(colon - addr);
    snprintf(host, size, "%.*s", (int)hlen, addr);
    if (addr[0] == '[' && hlen >= 2 && addr[hlen - 1] == ']')
        snprintf(name, sizeof name, "%.*s", (int)hlen - 2, addr + 1);
    else
        snprintf(name, sizeof name, "%.*s", (int)hlen, addr);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (getaddrinfo(name, colon + 1, &hints, &res) != 0)
        return -EINVAL;
    for (ai = res; ai; ai = ai->ai_next) {
        s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s < 0)
            continue;
        if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            bind(s, ai->ai_addr, ai->ai_addrlen) == 0 && listen(s, CM_LISTEN_BACKLOG) == 0 &&
            getsockname(s, (struct sockaddr *)&bound, &blen) == 0) {
            *family = ai->ai_family;
            *port = ntohs(ai->ai_family == AF_INET6
                              ? ((struct sockaddr_in6 *)&bound)->sin6_port
                              : ((struct sockaddr_in *)&bound)->sin_port);
            *fd = s;
            rc = 0;
            break;
        }
        close(s);
        s = -1;
    }
    freeaddrinfo(res);
    return rc;
}

int ctl_metrics_new(ctl *c, const char *listen)
{
    ctl_metrics *m = calloc(1, sizeof *m);
    pthread_condattr_t attr;
    char host[CM_HOST_MAX];
    int rc;

    if (!m)
        abort();
    m->c = c;
    m->fd = -1;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &attr);
    pthread_condattr_destroy(&attr);
    for (size_t i = 0; i < CM_LAG_BOUNDS; i++)
        m->lag_bounds_ns[i] = (int64_t)(cm_lag_bounds[i] * 1e9 + 0.5);
    c->metrics = m;
    if (!listen || !listen[0])
        return 0;
    if ((rc = cm_bind(listen, &m->fd, &m->port, &m->family, host, sizeof host)) < 0) {
        log_error("cannot listen", "service=metrics addr=%s error=\"%s\"", listen,
                  rc == -EINVAL ? "not HOST:PORT" : "cannot bind");
        return rc;
    }
    log_info("listening", "service=metrics addr=%s:%d", host, m->port);
    return 0;
}

int ctl_metrics_port(const ctl *c)
{
    return c->metrics ? c->metrics->port : 0;
}

void ctl_metrics_start(ctl *c)
{
    ctl_metrics *m = c->metrics;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG;

    if (!m || m->fd < 0 || m->mhd)
        return;
    uv_async_init(&c->loop, &m->async, cm_on_async);
    m->async.data = m;
    m->async_state = CM_ASYNC_OPEN;
    if (m->family == AF_INET6)
        flags |= MHD_USE_IPv6;
    m->mhd = MHD_start_daemon(flags, 0, NULL, NULL, cm_access, m,
                              MHD_OPTION_EXTERNAL_LOGGER, cm_mhd_log, m,
                              MHD_OPTION_LISTEN_SOCKET, (MHD_socket)m->fd,
                              MHD_OPTION_CONNECTION_LIMIT, CM_MAX_CONNECTIONS,
                              MHD_OPTION_CONNECTION_TIMEOUT, CM_CONNECTION_TIMEOUT_S,
                              MHD_OPTION_END);
    if (!m->mhd)
        log_error("metrics listener failed to start", "port=%d", m->port);
}

static void cm_free_now(ctl_metrics *m)
{
    if (m->fd >= 0)
        close(m->fd);
    free(m->text);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static void cm_on_closed(uv_handle_t *h)
{
    ctl_metrics *m = h->data;

    m->async_state = CM_ASYNC_CLOSED;
    if (m->free_on_close)
        cm_free_now(m);
}

void ctl_metrics_stop(ctl *c)
{
    ctl_metrics *m = c->metrics;

    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->closing = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (m->mhd) {
        /* libmicrohttpd closes the listening socket it was given. */
        MHD_stop_daemon(m->mhd);
        m->mhd = NULL;
        m->fd = -1;
    }
    if (m->async_state == CM_ASYNC_OPEN) {
        m->async_state = CM_ASYNC_CLOSING;
        uv_close((uv_handle_t *)&m->async, cm_on_closed);
    }
}

void ctl_metrics_free(ctl *c)
{
    ctl_metrics *m = c->metrics;

    if (!m)
        return;
    ctl_metrics_stop(c);
    c->metrics = NULL;
    if (m->async_state == CM_ASYNC_CLOSING)
        m->free_on_close = true; /* the loop's next run calls cm_on_closed */
    else
        cm_free_now(m);
}
