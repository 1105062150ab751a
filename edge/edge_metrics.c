/* edge_metrics: the edge's counters as relaxed C11 atomics, and their exposition (see
 * edge_metrics.h). Every label set is a fixed index, so recording is one atomic add. */
#include "edge_metrics.h"

#include "mcphub/v1/gateway.pb-c.h"
#include "rpc.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* JSON-RPC methods a client sends that get their own label; the rest count as "other". */
static const char *const em_named[] = {
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "server/discover",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
};

static const char *const em_unnamed[EM_METHOD_FIRST_NAMED] = {
    "unknown", "stream", "delete", "batch", "response", "other",
};

#define EM_NAMED (sizeof em_named / sizeof em_named[0])
#define EM_METHODS (EM_METHOD_FIRST_NAMED + EM_NAMED)
#define EM_TRANSPORTS 2

/* HTTP statuses with their own slot; any other lands in the last slot, "other". 0 is the
 * request whose client left before an answer was queued. */
static const int em_statuses[] = {0,   200, 202, 204, 400, 401, 403, 404, 405, 406, 409,
                                  410, 413, 415, 422, 429, 500, 501, 502, 503, 504};
#define EM_STATUSES (sizeof em_statuses / sizeof em_statuses[0] + 1)

/* Request latency buckets, seconds: 100 µs to 30 s. */
static const double em_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                   0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                   1,      2.5,     5,      10,    30};
#define EM_BOUNDS (sizeof em_bounds / sizeof em_bounds[0])

static const char *const em_transport_names[EM_TRANSPORTS] = {"streamable", "sse"};
static const char *const em_stream_names[] = {"none", "get", "post", "legacy"};
#define EM_STREAM_KINDS (sizeof em_stream_names / sizeof em_stream_names[0])
static const char *const em_close_names[] = {
    "completed", "client_closed", "session_ended", "control_lost", "slow_client", "shutdown",
};
#define EM_CLOSE_REASONS (sizeof em_close_names / sizeof em_close_names[0])
static const char *const em_rpc_names[] = {
    "Subscribe", "OpenSession", "EndSession", "Request", "Post", "AttachStream", "DetachStream",
};
#define EM_RPCS (sizeof em_rpc_names / sizeof em_rpc_names[0])
#define EM_CODES 17 /* gRPC status codes OK (0) .. UNAUTHENTICATED (16) */
#define EM_REASONS 16 /* EndReason values kept apart; larger ones count as unspecified */

typedef _Atomic uint64_t em_counter;

struct edge_metrics {
    char *edge_id;
    em_counter requests[EM_METHODS][EM_TRANSPORTS][EM_STATUSES];
    em_counter latency[EM_METHODS][EM_BOUNDS + 1]; /* not cumulative; [EM_BOUNDS] = +Inf */
    em_counter latency_ns[EM_METHODS];
    _Atomic int64_t streams[EM_STREAM_KINDS];
    em_counter closed[EM_STREAM_KINDS][EM_CLOSE_REASONS];
    em_counter rpcs[EM_RPCS][EM_CODES];
    em_counter ended[EM_REASONS];
    em_counter control_lost;
    int64_t bounds_ns[EM_BOUNDS];
};

_Static_assert(sizeof em_close_names / sizeof em_close_names[0] == EM_CLOSE_SHUTDOWN + 1,
               "a name per close reason");
_Static_assert(sizeof em_rpc_names / sizeof em_rpc_names[0] == EM_RPC_DETACH_STREAM + 1,
               "a name per Gateway method");
_Static_assert(sizeof em_stream_names / sizeof em_stream_names[0] == EM_STREAM_LEGACY + 1,
               "a name per stream kind");

static void em_add(em_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t em_get(em_counter *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

edge_metrics *edge_metrics_new(const char *edge_id)
{
    edge_metrics *em = calloc(1, sizeof *em);

    if (!em || !(em->edge_id = strdup(edge_id ? edge_id : "")))
        abort();
    for (size_t i = 0; i < EM_BOUNDS; i++)
        em->bounds_ns[i] = (int64_t)(em_bounds[i] * 1e9 + 0.5);
    return em;
}

void edge_metrics_free(edge_metrics *em)
{
    if (!em)
        return;
    free(em->edge_id);
    free(em);
}

unsigned edge_metrics_method(const char *name)
{
    for (size_t i = 0; name && i < EM_NAMED; i++)
        if (strcmp(name, em_named[i]) == 0)
            return (unsigned)(EM_METHOD_FIRST_NAMED + i);
    return EM_METHOD_OTHER;
}

const char *edge_metrics_method_name(unsigned method)
{
    if (method < EM_METHOD_FIRST_NAMED)
        return em_unnamed[method];
    if (method < EM_METHODS)
        return em_named[method - EM_METHOD_FIRST_NAMED];
    return "other";
}

int64_t edge_metrics_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static size_t em_status_slot(int status)
{
    for (size_t i = 0; i < EM_STATUSES - 1; i++)
        if (em_statuses[i] == status)
            return i;
    return EM_STATUSES - 1;
}

void edge_metrics_request(edge_metrics *em, unsigned method, em_transport transport,
                          int status)
{
    if (!em)
        return;
    if (method >= EM_METHODS)
        method = EM_METHOD_OTHER;
    em_add(&em->requests[method][transport == EM_TRANSPORT_SSE][em_status_slot(status)], 1);
}

void edge_metrics_latency(edge_metrics *em, unsigned method, int64_t ns)
{
    size_t b = 0;

    if (!em)
        return;
    if (method >= EM_METHODS)
        method = EM_METHOD_OTHER;
    if (ns < 0)
        ns = 0;
    while (b < EM_BOUNDS && ns > em->bounds_ns[b])
        b++;
    em_add(&em->latency[method][b], 1);
    em_add(&em->latency_ns[method], (uint64_t)ns);
}

void edge_metrics_stream_open(edge_metrics *em, em_stream kind)
{
    if (!em || kind == EM_STREAM_NONE || (size_t)kind >= EM_STREAM_KINDS)
        return;
    atomic_fetch_add_explicit(&em->streams[kind], 1, memory_order_relaxed);
}

void edge_metrics_stream_closed(edge_metrics *em, em_stream kind, em_close reason)
{
    if (!em || kind == EM_STREAM_NONE || (size_t)kind >= EM_STREAM_KINDS ||
        (size_t)reason >= EM_CLOSE_REASONS)
        return;
    atomic_fetch_sub_explicit(&em->streams[kind], 1, memory_order_relaxed);
    em_add(&em->closed[kind][reason], 1);
}

void edge_metrics_rpc(edge_metrics *em, em_rpc method, grpc_status_code status)
{
    if (!em || (size_t)method >= EM_RPCS)
        return;
    if ((int)status < 0 || (int)status >= EM_CODES)
        status = GRPC_STATUS_UNKNOWN;
    em_add(&em->rpcs[method][status], 1);
}

void edge_metrics_session_ended(edge_metrics *em, int reason)
{
    if (!em)
        return;
    em_add(&em->ended[reason >= 0 && reason < EM_REASONS ? reason : 0], 1);
}

void edge_metrics_control_lost(edge_metrics *em)
{
    if (em)
        em_add(&em->control_lost, 1);
}

/* ---- exposition ------------------------------------------------------------------------ */

static void em_render_requests(edge_metrics *em, prom_buf *b)
{
    char status[16];

    prom_family(b, "mcphub_edge_requests_total", "counter",
                "HTTP requests to the MCP endpoints answered, by JSON-RPC method, transport "
                "and HTTP status (none: the client left before an answer).");
    for (size_t m = 0; m < EM_METHODS; m++) {
        for (size_t t = 0; t < EM_TRANSPORTS; t++) {
            for (size_t s = 0; s < EM_STATUSES; s++) {
                uint64_t n = em_get(&em->requests[m][t][s]);
                const char *labels[] = {"method", edge_metrics_method_name((unsigned)m),
                                        "transport", em_transport_names[t],
                                        "status", status, NULL};

                if (!n)
                    continue;
                if (s == EM_STATUSES - 1)
                    snprintf(status, sizeof status, "other");
                else if (em_statuses[s] == 0)
                    snprintf(status, sizeof status, "none");
                else
                    snprintf(status, sizeof status, "%d", em_statuses[s]);
                prom_sample_u64(b, "mcphub_edge_requests_total", labels, n);
            }
        }
    }

    prom_family(b, "mcphub_edge_request_duration_seconds", "histogram",
                "Time from a request's arrival to its answer being queued, or for an answer "
                "sent as an event stream to that stream's end; standalone streams excluded.");
    for (size_t m = 0; m < EM_METHODS; m++) {
        uint64_t counts[EM_BOUNDS + 1];
        uint64_t total = 0;
        const char *labels[] = {"method", edge_metrics_method_name((unsigned)m), NULL};

        for (size_t i = 0; i <= EM_BOUNDS; i++) {
            counts[i] = em_get(&em->latency[m][i]);
            total += counts[i];
        }
        if (!total)
            continue;
        prom_histogram(b, "mcphub_edge_request_duration_seconds", labels, em_bounds, counts,
                       EM_BOUNDS, (double)em_get(&em->latency_ns[m]) / 1e9);
    }
}

static void em_render_streams(edge_metrics *em, prom_buf *b)
{
    prom_family(b, "mcphub_edge_sse_streams", "gauge",
                "Open event streams by kind: get (GET /mcp), post (a POST answered as a "
                "stream), legacy (GET /sse).");
    for (size_t k = EM_STREAM_GET; k < EM_STREAM_KINDS; k++) {
        const char *labels[] = {"kind", em_stream_names[k], NULL};

        prom_sample_i64(b, "mcphub_edge_sse_streams", labels,
                        atomic_load_explicit(&em->streams[k], memory_order_relaxed));
    }
    prom_family(b, "mcphub_edge_sse_streams_closed_total", "counter",
                "Event streams closed, by kind and reason.");
    for (size_t k = EM_STREAM_GET; k < EM_STREAM_KINDS; k++) {
        for (size_t r = 0; r < EM_CLOSE_REASONS; r++) {
            uint64_t n = em_get(&em->closed[k][r]);
            const char *labels[] = {"kind", em_stream_names[k], "reason", em_close_names[r],
                                    NULL};

            if (n)
                prom_sample_u64(b, "mcphub_edge_sse_streams_closed_total", labels, n);
        }
    }
}

static void em_render_control(edge_metrics *em, prom_buf *b, bool connected)
{
    char reason[64];

    prom_family(b, "mcphub_edge_control_connected", "gauge",
                "1 while the Subscribe stream to control is up (the edge is ready), else 0.");
    prom_sample_u64(b, "mcphub_edge_control_connected", NULL, connected ? 1 : 0);
    prom_family(b, "mcphub_edge_control_lost_total", "counter",
                "Times a ready Subscribe stream to control was lost.");
    prom_sample_u64(b, "mcphub_edge_control_lost_total", NULL, em_get(&em->control_lost));
    prom_family(b, "mcphub_edge_control_calls_total", "counter",
                "Gateway calls to control that finished, by method and gRPC status code "
                "(errors are every code but OK).");
    for (size_t m = 0; m < EM_RPCS; m++) {
        for (size_t c = 0; c < EM_CODES; c++) {
            uint64_t n = em_get(&em->rpcs[m][c]);
            const char *labels[] = {"method", em_rpc_names[m], "code",
                                    rpc_status_name((grpc_status_code)c), NULL};

            if (n)
                prom_sample_u64(b, "mcphub_edge_control_calls_total", labels, n);
        }
    }
    prom_family(b, "mcphub_edge_sessions_ended_total", "counter",
                "SessionEnded broadcasts received from control, by end reason.");
    for (int r = 0; r < EM_REASONS; r++) {
        uint64_t n = em_get(&em->ended[r]);
        const char *labels[] = {"reason", reason, NULL};

        /* every reason control may send, zeros included; unknown ones once seen */
        if (!n && !protobuf_c_enum_descriptor_get_value(&mcphub__v1__end_reason__descriptor, r))
            continue;
        prom_enum_label(&mcphub__v1__end_reason__descriptor, r, "END_REASON_", reason,
                        sizeof reason);
        prom_sample_u64(b, "mcphub_edge_sessions_ended_total", labels, n);
    }
}

void edge_metrics_render(edge_metrics *em, prom_buf *b, bool connected)
{
    const char *info[] = {"edge_id", em->edge_id, NULL};

    prom_family(b, "mcphub_edge_info", "gauge", "Always 1; the edge's id as a label.");
    prom_sample_u64(b, "mcphub_edge_info", info, 1);
    em_render_requests(em, b);
    em_render_streams(em, b);
    em_render_control(em, b, connected);
}
