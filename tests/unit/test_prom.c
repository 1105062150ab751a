/* test_prom: the Prometheus text exposition writer (label and HELP escaping, number
 * formatting, cumulative histograms, the bounded buffer, process metrics) and the edge's
 * metrics on top of it (method labels, atomic counters rendered exactly). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge_metrics.h"
#include "mcphub/v1/gateway.pb-c.h"
#include "prom.h"

static void test_family_and_help_escaping(void **state)
{
    prom_buf b;

    prom_buf_init(&b, 0);
    prom_family(&b, "x_total", "counter", "a \\ b\nc \"q\"");
    assert_string_equal(b.data, "# HELP x_total a \\\\ b\\nc \"q\"\n# TYPE x_total counter\n");
    prom_buf_cleanup(&b);
}

static void test_sample_labels_escaped(void **state)
{
    const char *labels[] = {"a", "x\"y", "b", "p\\q\nr", "c", NULL, NULL};
    prom_buf b;

    prom_buf_init(&b, 0);
    prom_sample_u64(&b, "m", labels, 7);
    prom_sample_u64(&b, "n", NULL, 18446744073709551615ull);
    prom_sample_i64(&b, "g", NULL, -3);
    assert_string_equal(b.data, "m{a=\"x\\\"y\",b=\"p\\\\q\\nr\",c=\"\"} 7\n"
                                "n 18446744073709551615\n"
                                "g -3\n");
    prom_buf_cleanup(&b);
}

static void test_format_double(void **state)
{
    char buf[40];

    assert_string_equal(prom_format_double(0.1, buf, sizeof buf), "0.1");
    assert_string_equal(prom_format_double(2.5, buf, sizeof buf), "2.5");
    assert_string_equal(prom_format_double(30, buf, sizeof buf), "30");
    assert_string_equal(prom_format_double(0.00025, buf, sizeof buf), "0.00025");
    assert_string_equal(prom_format_double(INFINITY, buf, sizeof buf), "+Inf");
    assert_string_equal(prom_format_double(-INFINITY, buf, sizeof buf), "-Inf");
    assert_string_equal(prom_format_double(NAN, buf, sizeof buf), "NaN");
    /* a value that needs 17 digits reads back exactly */
    prom_format_double(0.1 + 0.2, buf, sizeof buf);
    assert_true(strtod(buf, NULL) == 0.1 + 0.2);
}

static void test_histogram_cumulative(void **state)
{
    static const double bounds[] = {0.001, 0.01, 1};
    const uint64_t counts[] = {2, 0, 3, 1}; /* last: above every bound */
    const char *labels[] = {"method", "tools/call", NULL};
    prom_buf b;

    prom_buf_init(&b, 0);
    prom_histogram(&b, "h_seconds", labels, bounds, counts, 3, 1.5);
    assert_string_equal(b.data,
                        "h_seconds_bucket{method=\"tools/call\",le=\"0.001\"} 2\n"
                        "h_seconds_bucket{method=\"tools/call\",le=\"0.01\"} 2\n"
                        "h_seconds_bucket{method=\"tools/call\",le=\"1\"} 5\n"
                        "h_seconds_bucket{method=\"tools/call\",le=\"+Inf\"} 6\n"
                        "h_seconds_sum{method=\"tools/call\"} 1.5\n"
                        "h_seconds_count{method=\"tools/call\"} 6\n");
    prom_buf_cleanup(&b);

    prom_buf_init(&b, 0);
    prom_histogram(&b, "u", NULL, bounds, counts, 0, 0); /* no bounds, no labels */
    assert_string_equal(b.data, "u_bucket{le=\"+Inf\"} 2\nu_sum 0\nu_count 2\n");
    prom_buf_cleanup(&b);
}

static void test_buffer_bounded(void **state)
{
    prom_buf b;

    prom_buf_init(&b, 16);
    prom_printf(&b, "%s", "0123456789");
    assert_false(b.over);
    prom_printf(&b, "%s", "0123456789"); /* would pass 16: dropped */
    assert_true(b.over);
    prom_append(&b, "x", 1); /* and so is everything after */
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    prom_buf_cleanup(&b);
}

static void test_enum_label(void **state)
{
    const ProtobufCEnumDescriptor *d = &mcphub__v1__end_reason__descriptor;
    char buf[32];

    assert_string_equal(prom_enum_label(d, MCPHUB__V1__END_REASON__END_REASON_CLIENT_DELETE,
                                        "END_REASON_", buf, sizeof buf),
                        "client_delete");
    assert_string_equal(prom_enum_label(d, 999, "END_REASON_", buf, sizeof buf), "999");
    assert_string_equal(prom_enum_label(d, 0, NULL, buf, 8), "end_rea"); /* truncated */
}

static void test_process(void **state)
{
    prom_buf b;

    prom_buf_init(&b, 0);
    prom_process(&b);
    assert_non_null(strstr(b.data, "# TYPE process_resident_memory_bytes gauge\n"));
    assert_non_null(strstr(b.data, "\nprocess_open_fds "));
    assert_non_null(strstr(b.data, "\nprocess_start_time_seconds "));
    assert_non_null(strstr(b.data, "\nprocess_cpu_seconds_total "));
    assert_false(b.over);
    prom_buf_cleanup(&b);
}

static void test_edge_methods(void **state)
{
    assert_string_equal(edge_metrics_method_name(edge_metrics_method("tools/call")),
                        "tools/call");
    assert_string_equal(edge_metrics_method_name(edge_metrics_method("initialize")),
                        "initialize");
    assert_int_equal(edge_metrics_method("tools/cal"), EM_METHOD_OTHER);
    assert_int_equal(edge_metrics_method(NULL), EM_METHOD_OTHER);
    assert_string_equal(edge_metrics_method_name(EM_METHOD_UNKNOWN), "unknown");
    assert_string_equal(edge_metrics_method_name(EM_METHOD_STREAM), "stream");
    assert_string_equal(edge_metrics_method_name(9999), "other");
}

static void test_edge_render(void **state)
{
    edge_metrics *em = edge_metrics_new("e\"1");
    unsigned call = edge_metrics_method("tools/call");
    prom_buf b;

    edge_metrics_request(em, call, EM_TRANSPORT_STREAMABLE, 200);
    edge_metrics_request(em, call, EM_TRANSPORT_STREAMABLE, 200);
    edge_metrics_request(em, EM_METHOD_UNKNOWN, EM_TRANSPORT_SSE, 0);
    edge_metrics_request(em, EM_METHOD_UNKNOWN, EM_TRANSPORT_SSE, 299);
    edge_metrics_latency(em, call, 50000);        /* 50 µs: first bucket */
    edge_metrics_latency(em, call, 2000000000);   /* 2 s */
    edge_metrics_latency(em, call, 60000000000);  /* 60 s: only +Inf */
    edge_metrics_stream_open(em, EM_STREAM_GET);
    edge_metrics_stream_open(em, EM_STREAM_GET);
    edge_metrics_stream_closed(em, EM_STREAM_GET, EM_CLOSE_SESSION_ENDED);
    edge_metrics_rpc(em, EM_RPC_REQUEST, GRPC_STATUS_NOT_FOUND);
    edge_metrics_rpc(em, EM_RPC_REQUEST, (grpc_status_code)99);
    edge_metrics_session_ended(em, 1);
    edge_metrics_control_lost(em);
    edge_metrics_request(NULL, call, EM_TRANSPORT_SSE, 200); /* NULL metrics: nothing */

    prom_buf_init(&b, 0);
    edge_metrics_render(em, &b, true);
    assert_non_null(strstr(b.data, "mcphub_edge_info{edge_id=\"e\\\"1\"} 1\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_requests_total{method=\"tools/call\","
                                   "transport=\"streamable\",status=\"200\"} 2\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_requests_total{method=\"unknown\","
                                   "transport=\"sse\",status=\"none\"} 1\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_requests_total{method=\"unknown\","
                                   "transport=\"sse\",status=\"other\"} 1\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_request_duration_seconds_bucket{method=\"tools/"
                                   "call\",le=\"0.0001\"} 1\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_request_duration_seconds_bucket{method=\"tools/"
                                   "call\",le=\"2.5\"} 2\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_request_duration_seconds_bucket{method=\"tools/"
                                   "call\",le=\"30\"} 2\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_request_duration_seconds_bucket{method=\"tools/"
                                   "call\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_request_duration_seconds_sum{method=\"tools/"
                                   "call\"} 62.00005\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_sse_streams{kind=\"get\"} 1\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_sse_streams_closed_total{kind=\"get\","
                                   "reason=\"session_ended\"} 1\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_control_calls_total{method=\"Request\","
                                   "code=\"NOT_FOUND\"} 1\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_control_calls_total{method=\"Request\","
                                   "code=\"UNKNOWN\"} 1\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_sessions_ended_total{reason=\"client_delete\"}"
                                   " 1\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_sessions_ended_total{reason=\"idle_timeout\"}"
                                   " 0\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_control_connected 1\n"));
    assert_non_null(strstr(b.data, "mcphub_edge_control_lost_total 1\n"));
    /* the histogram of a method never observed is left out */
    assert_null(strstr(b.data, "method=\"initialize\""));
    prom_buf_cleanup(&b);
    edge_metrics_free(em);
    edge_metrics_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_and_help_escaping),
        cmocka_unit_test(test_sample_labels_escaped),
        cmocka_unit_test(test_format_double),
        cmocka_unit_test(test_histogram_cumulative),
        cmocka_unit_test(test_buffer_bounded),
        cmocka_unit_test(test_enum_label),
        cmocka_unit_test(test_process),
        cmocka_unit_test(test_edge_methods),
        cmocka_unit_test(test_edge_render),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
