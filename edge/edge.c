/* edge: wires the HTTP server, the gRPC client, the control link and the MCP transports
 * together, and holds the route table. */
#include "edge.h"

#include "edge_http.h"
#include "edge_link.h"
#include "edge_mcp.h"
#include "edge_metrics.h"
#include "log.h"
#include "prom.h"
#include "rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define EDGE_CONTROL_MAX 256 /* bytes of a control target */
#define EDGE_FD_RESERVE 256u /* descriptors besides client connections: gRPC, logs, epoll */

struct edge {
    char *control;
    char edge_id[EDGE_ID_MAX + 1];
    struct sockaddr_in addr;
    unsigned max_connections;
    unsigned connection_timeout_s;
    edge_mcp_opts mopts; /* strings owned by opts below */
    char *allowed_hosts;

    bool started;
    bool draining;    /* atomic: edge_drain ran; /readyz says so */
    rpc_client *cli;  /* owned; created by edge_start */
    edge_link *link;  /* owned; stopped before cli is freed, freed after http */
    edge_mcp *mcp;    /* owned; freed after http (its requests hold it) */
    edge_http *http;  /* owned; its handlers read link and mcp */
    edge_metrics *metrics; /* owned; outlives everything above (edge_free) */
};

#define EDGE_SHUTDOWN_WAIT_MS 1000 /* for streams to end and their detaches to be answered */

/* edge.h states the defaults for users of the library; the parts apply them. */
_Static_assert(EDGE_DEFAULT_TIMEOUT_S == EDGE_HTTP_DEFAULT_TIMEOUT_S, "timeout default");
_Static_assert(EDGE_DEFAULT_MAX_STREAMS == EDGE_MCP_DEFAULT_MAX_STREAMS, "streams default");
_Static_assert(EDGE_DEFAULT_STREAM_BUFFER == EDGE_MCP_DEFAULT_STREAM_BUFFER, "buffer default");
_Static_assert(EDGE_DEFAULT_HEARTBEAT_MS == EDGE_MCP_DEFAULT_HEARTBEAT_MS, "heartbeat default");

/* ---- routes --------------------------------------------------------------------------- */

static enum MHD_Result route_healthz(void *ud, edge_http_req *req)
{
    return edge_http_reply_json(req->conn, MHD_HTTP_OK, "{\"status\":\"ok\"}", NULL);
}

static enum MHD_Result route_readyz(void *ud, edge_http_req *req)
{
    static const char *const retry[] = {MHD_HTTP_HEADER_RETRY_AFTER, "1", NULL};
    edge *e = ud;
    char id[EDGE_ID_MAX];
    char body[EDGE_ID_MAX + 64];

    if (__atomic_load_n(&e->draining, __ATOMIC_RELAXED))
        return edge_http_reply_json(req->conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                                    "{\"status\":\"not ready\",\"reason\":\"draining\"}", retry);
    /* The link turns ready at control's Hello, and the settings in it reach the MCP side a
     * moment later: ready only once requests would not get 503 for the lack of them. */
    if (!edge_link_ready(e->link, id, sizeof id) || !edge_mcp_has_settings(e->mcp))
        return edge_http_reply_json(req->conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                                    "{\"status\":\"not ready\",\"reason\":\"control unreachable\"}",
                                    retry);
    /* The id went through edge_link_clean: no byte in it needs JSON escaping. */
    snprintf(body, sizeof body, "{\"status\":\"ready\",\"control\":\"%s\"}", id);
    return edge_http_reply_json(req->conn, MHD_HTTP_OK, body, NULL);
}

/* Prometheus metrics; like the probes, outside the MCP rules and bearer auth. */
static enum MHD_Result route_metrics(void *ud, edge_http_req *req)
{
    edge *e = ud;
    prom_buf b;
    enum MHD_Result rc;

    prom_buf_init(&b, 0);
    edge_metrics_render(e->metrics, &b, edge_link_ready(e->link, NULL, 0));
    prom_process(&b);
    if (b.over)
        rc = edge_http_reply_error(req->conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                   "metrics exposition too large", NULL);
    else
        rc = edge_http_reply(req->conn, MHD_HTTP_OK, PROM_CONTENT_TYPE, b.data, b.len, NULL);
    prom_buf_cleanup(&b);
    return rc;
}

static enum MHD_Result route_mcp(void *ud, edge_http_req *req)
{
    edge *e = ud;

    return edge_mcp_handle(e->mcp, req);
}

/* The MCP rows take every method: the transport rules answer 405 with a JSON-RPC body. */
static const edge_http_route edge_routes[] = {
    {"/healthz", false, EDGE_HTTP_GET | EDGE_HTTP_HEAD, route_healthz},
    {"/readyz", false, EDGE_HTTP_GET | EDGE_HTTP_HEAD, route_readyz},
    {"/metrics", false, EDGE_HTTP_GET | EDGE_HTTP_HEAD, route_metrics},
    {"/mcp", true, EDGE_HTTP_ANY, route_mcp},
    {"/sse", true, EDGE_HTTP_ANY, route_mcp},
    {"/messages", false, EDGE_HTTP_ANY, route_mcp},
};

/* ---- control events (rpc client's polling thread) ------------------------------------- */

static void edge_on_event(void *ud, const Mcphub__V1__EdgeEvent *ev)
{
    edge *e = ud;
    char sid[128];

    switch (ev->event_case) {
    case MCPHUB__V1__EDGE_EVENT__EVENT_HELLO:
        edge_mcp_settings(e->mcp, ev->hello->settings);
        break;
    case MCPHUB__V1__EDGE_EVENT__EVENT_SESSION_ENDED:
        if (!ev->session_ended)
            break;
        edge_link_clean(sid, sizeof sid, ev->session_ended->session_id);
        log_debug("session ended", "session=%s reason=%d seq=%" PRIu64, sid,
                  (int)ev->session_ended->reason, ev->seq);
        edge_metrics_session_ended(e->metrics, (int)ev->session_ended->reason);
        edge_mcp_session_ended(e->mcp, ev->session_ended->session_id);
        break;
    case MCPHUB__V1__EDGE_EVENT__EVENT_STREAM_MESSAGE:
        if (ev->stream_message)
            edge_mcp_stream_message(e->mcp, ev->stream_message);
        break;
    case MCPHUB__V1__EDGE_EVENT__EVENT_CONFIG_CHANGED:
        log_debug("config changed", "config_version=%" PRIu64 " seq=%" PRIu64,
                  ev->config_changed ? ev->config_changed->config_version : 0, ev->seq);
        if (ev->config_changed && ev->config_changed->settings)
            edge_mcp_settings(e->mcp, ev->config_changed->settings);
        break;
    default:
        log_debug("unknown control event", "event=%d seq=%" PRIu64, (int)ev->event_case,
                  ev->seq);
        break;
    }
}

static void edge_on_lost(void *ud)
{
    edge *e = ud;

    edge_metrics_control_lost(e->metrics);
    edge_mcp_control_lost(e->mcp);
}

/* ---- options -------------------------------------------------------------------------- */

void edge_default_id(char *buf, size_t size)
{
    char host[128];
    char clean[128];

    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    edge_link_clean(clean, sizeof clean, host);
    snprintf(buf, size, "edge-%s-%ld", clean, (long)getpid());
}

__attribute__((format(printf, 3, 4))) static void edge_err(char *err, size_t errsize,
                                                            const char *fmt, ...)
{
    va_list ap;

    if (!err || !errsize)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errsize, fmt, ap);
    va_end(ap);
}

int edge_opts_check(const edge_opts *opts, char *err, size_t errsize)
{
    struct sockaddr_in addr;
    const char *listen = opts->listen ? opts->listen : EDGE_DEFAULT_LISTEN;
    const char *control = opts->control ? opts->control : EDGE_DEFAULT_CONTROL;
    char clean[EDGE_ID_MAX + 2];
    unsigned long long timeout_ms;
    unsigned heartbeat_ms;

    if (edge_http_parse_addr(listen, &addr) < 0) {
        edge_err(err, errsize, "invalid listen address '%.64s' (want IPv4 HOST:PORT)", listen);
        return -EINVAL;
    }
    if (!control[0] || strlen(control) > EDGE_CONTROL_MAX || strpbrk(control, " \t\r\n")) {
        edge_err(err, errsize, "invalid control address '%.64s'", control);
        return -EINVAL;
    }
    timeout_ms = 1000ull * (opts->connection_timeout_s ? opts->connection_timeout_s
                                                       : EDGE_DEFAULT_TIMEOUT_S);
    heartbeat_ms = opts->heartbeat_ms ? opts->heartbeat_ms : EDGE_DEFAULT_HEARTBEAT_MS;
    if (heartbeat_ms >= timeout_ms) {
        edge_err(err, errsize,
                 "heartbeat of %u ms must be shorter than the %llu s idle connection timeout",
                 heartbeat_ms, timeout_ms / 1000);
        return -EINVAL;
    }
    if (opts->allowed_hosts && strpbrk(opts->allowed_hosts, "\r\n")) {
        edge_err(err, errsize, "invalid allowed hosts");
        return -EINVAL;
    }
    if (opts->edge_id) {
        edge_link_clean(clean, sizeof clean, opts->edge_id);
        if (!opts->edge_id[0] || strlen(opts->edge_id) > EDGE_ID_MAX ||
            strcmp(clean, opts->edge_id) != 0) {
            edge_err(err, errsize,
                     "invalid edge id '%.64s' (1-128 bytes of A-Z a-z 0-9 . _ : @ / + = -)",
                     opts->edge_id);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

edge *edge_new(const edge_opts *opts)
{
    char err[256];
    edge *e;

    if (edge_opts_check(opts, err, sizeof err) < 0) {
        log_error("invalid edge options", "reason=\"%s\"", err);
        return NULL;
    }
    if (!(e = calloc(1, sizeof *e)) ||
        !(e->control = strdup(opts->control ? opts->control : EDGE_DEFAULT_CONTROL)))
        abort();
    edge_http_parse_addr(opts->listen ? opts->listen : EDGE_DEFAULT_LISTEN, &e->addr);
    if (opts->edge_id)
        snprintf(e->edge_id, sizeof e->edge_id, "%s", opts->edge_id);
    else
        edge_default_id(e->edge_id, sizeof e->edge_id);
    e->max_connections = opts->max_connections
                             ? opts->max_connections
                             : (opts->max_streams ? opts->max_streams : EDGE_DEFAULT_MAX_STREAMS) +
                                   EDGE_SPARE_CONNECTIONS;
    e->connection_timeout_s = opts->connection_timeout_s;
    if (opts->allowed_hosts && !(e->allowed_hosts = strdup(opts->allowed_hosts)))
        abort();
    e->metrics = edge_metrics_new(e->edge_id);
    e->mopts.edge_id = e->edge_id;
    e->mopts.metrics = e->metrics;
    /* 127.0.0.0/8: a browser on this host can be made to reach it (DNS rebinding) */
    e->mopts.loopback = (ntohl(e->addr.sin_addr.s_addr) >> 24) == 127;
    e->mopts.allowed_hosts = e->allowed_hosts;
    e->mopts.max_streams = opts->max_streams;
    e->mopts.stream_buffer = opts->stream_buffer;
    e->mopts.heartbeat_ms = opts->heartbeat_ms;
    e->mopts.sse_retry_ms = opts->sse_retry_ms;
    return e;
}

/* Stops and frees whatever runs, in the order that keeps every callback's target alive:
 * no new connections; streams ended and detached while control is still reachable; no more
 * rpc callbacks (they may resume parked requests) and no new calls; then the daemon, whose
 * handlers read the (stopped) link and the transports; then the link and the transports. */
static void edge_teardown(edge *e)
{
    if (e->http)
        edge_http_quiesce(e->http);
    if (e->mcp)
        edge_mcp_shutdown(e->mcp, EDGE_SHUTDOWN_WAIT_MS);
    if (e->link)
        edge_link_stop(e->link);
    if (e->mcp)
        edge_mcp_drop_client(e->mcp);
    rpc_client_free(e->cli);
    e->cli = NULL;
    edge_http_free(e->http);
    e->http = NULL;
    edge_mcp_free(e->mcp);
    e->mcp = NULL;
    edge_link_free(e->link);
    e->link = NULL;
}

/* Each connection is a descriptor: raises the soft RLIMIT_NOFILE toward what max
 * connections need (up to the hard limit), and when the hard limit is lower, serves fewer
 * connections than asked rather than fail accepting them, saying so once. */
static unsigned edge_fd_budget(unsigned want)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)want + EDGE_FD_RESERVE;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return want;
    if (rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur >= need)
        return want;
    want = rl.rlim_cur > 2 * EDGE_FD_RESERVE ? (unsigned)(rl.rlim_cur - EDGE_FD_RESERVE) : 64;
    log_warn("descriptor limit below the connection limit",
             "max_connections=%u nofile=%llu serving=%u", (unsigned)(need - EDGE_FD_RESERVE),
             (unsigned long long)rl.rlim_cur, want);
    return want;
}

int edge_start(edge *e)
{
    edge_http_opts hopts = {0};
    edge_link_opts lopts = {0};
    rpc_client_opts copts = {0};
    char host[INET_ADDRSTRLEN];
    int rc;

    if (e->started || e->http)
        return -EALREADY;
    hopts.addr = e->addr;
    hopts.routes = edge_routes;
    hopts.nroutes = sizeof edge_routes / sizeof edge_routes[0];
    hopts.ud = e;
    hopts.max_connections = edge_fd_budget(e->max_connections);
    hopts.connection_timeout_s = e->connection_timeout_s;
    /* The link must exist before the first request can ask for readiness. */
    copts.initial_backoff_ms = 100;
    copts.max_backoff_ms = 1000;
    copts.keepalive_ms = 10000;
    e->cli = rpc_client_new(e->control, &copts);
    lopts.cli = e->cli;
    lopts.edge_id = e->edge_id;
    lopts.on_event = edge_on_event;
    lopts.on_lost = edge_on_lost;
    lopts.ud = e;
    lopts.metrics = e->metrics;
    e->link = edge_link_new(&lopts);
    e->mopts.cli = e->cli;
    e->mopts.link = e->link;
    e->mcp = edge_mcp_new(&e->mopts);
    inet_ntop(AF_INET, &e->addr.sin_addr, host, sizeof host);
    if ((rc = edge_http_new(&hopts, &e->http)) < 0) {
        log_error("cannot listen", "addr=%s:%d error=\"%s\"", host, ntohs(e->addr.sin_port),
                  strerror(-rc));
        goto out;
    }
    if ((rc = edge_link_start(e->link)) < 0) {
        log_error("cannot start control link", "error=\"%s\"", strerror(-rc));
        goto out;
    }
    e->started = true;
    log_info("edge listening", "addr=%s:%d edge_id=%s control=%s", host,
             edge_http_port(e->http), e->edge_id, e->control);
out:
    if (rc < 0)
        edge_teardown(e);
    return rc;
}

int edge_port(const edge *e)
{
    return e->http ? edge_http_port(e->http) : 0;
}

unsigned edge_streams(const edge *e)
{
    return e->mcp ? edge_mcp_streams(e->mcp) : 0;
}

size_t edge_drain(edge *e, int wait_ms)
{
    size_t left;

    if (!e->started || !e->mcp)
        return 0;
    __atomic_store_n(&e->draining, true, __ATOMIC_RELAXED);
    left = edge_mcp_drain(e->mcp, wait_ms);
    log_info("edge drained", "edge_id=%s calls_left=%zu", e->edge_id, left);
    return left;
}

void edge_stop(edge *e)
{
    if (!e->started)
        return;
    edge_teardown(e);
    e->started = false;
    log_info("edge stopped", "edge_id=%s", e->edge_id);
}

void edge_free(edge *e)
{
    if (!e)
        return;
    edge_stop(e);
    edge_metrics_free(e->metrics);
    free(e->allowed_hosts);
    free(e->control);
    free(e);
}
