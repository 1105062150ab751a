/* test_rpc: the gRPC runtime (common/rpc*) end to end over loopback: unary calls, streams,
 * client cancel, deadlines, an unreachable server, slow-reader overflow, shutdown with live
 * streams, two servers on one completion queue, and the health service. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc.h"
#include "waiter.h"
#include "rpc_health.h"
#include "rpctest.pb-c.h"

/* ---- the test server ----------------------------------------------------------------- */

typedef struct {
    rpc_server *srv;
    rpc_health *health;
    int port;
    waiter cancels;      /* server-side cancel callbacks seen */
    waiter held;         /* held streams that reached their hold point */
    int flood_rc;        /* what rpc_call_send returned when the flood stopped */
    int flood_sent;
    int send_errors;     /* sends that failed in handle_count */
    waiter flood_done;
} test_server;

static void on_server_cancel(rpc_call *call, void *ud)
{
    test_server *ts = ud;

    waiter_bump(&ts->cancels);
    rpc_call_finish(call, GRPC_STATUS_CANCELLED, "cancelled");
}

typedef struct {
    rpc_call *call;
    uint32_t delay_ms;
    char *text;
} delayed_reply;

static void *delayed_reply_thread(void *arg)
{
    delayed_reply *d = arg;
    Rpctest__EchoReply reply = RPCTEST__ECHO_REPLY__INIT;

    usleep(d->delay_ms * 1000u);
    reply.text = d->text;
    rpc_call_reply(d->call, &reply.base);
    free(d->text);
    free(d);
    return NULL;
}

static void handle_echo(rpc_call *call, void *ud)
{
    test_server *ts = ud;
    const Rpctest__EchoRequest *req = (const Rpctest__EchoRequest *)rpc_call_request(call);
    Rpctest__EchoReply reply = RPCTEST__ECHO_REPLY__INIT;

    if (req->delay_ms > 0) {
        delayed_reply *d = calloc(1, sizeof *d);
        pthread_t t;

        d->call = call;
        d->delay_ms = req->delay_ms;
        d->text = strdup(req->text);
        (void)ts;
        pthread_create(&t, NULL, delayed_reply_thread, d);
        pthread_detach(t);
        return;
    }
    reply.text = req->text;
    rpc_call_reply(call, &reply.base);
}

typedef struct {
    test_server *ts;
    rpc_call *call;
    uint32_t pad;
} flood_arg;

static void *flood_thread(void *arg)
{
    flood_arg *fa = arg;
    Rpctest__CountEvent ev = RPCTEST__COUNT_EVENT__INIT;
    uint8_t *pad = calloc(1, fa->pad);
    int rc = 0;
    int i;

    ev.pad.data = pad;
    ev.pad.len = fa->pad;
    for (i = 0; i < 1000000 && rc == 0; i++) {
        ev.i = (uint32_t)i;
        rc = rpc_call_send(fa->call, &ev.base);
    }
    fa->ts->flood_rc = rc;
    fa->ts->flood_sent = i;
    rpc_call_finish(fa->call, GRPC_STATUS_OK, NULL);
    free(pad);
    waiter_bump(&fa->ts->flood_done);
    free(fa);
    return NULL;
}

static void handle_count(rpc_call *call, void *ud)
{
    test_server *ts = ud;
    const Rpctest__CountRequest *req = (const Rpctest__CountRequest *)rpc_call_request(call);
    Rpctest__CountEvent ev = RPCTEST__COUNT_EVENT__INIT;

    if (req->flood) {
        flood_arg *fa = calloc(1, sizeof *fa);
        pthread_t t;

        fa->ts = ts;
        fa->call = call;
        fa->pad = req->pad_bytes;
        pthread_create(&t, NULL, flood_thread, fa);
        pthread_detach(t);
        return;
    }
    /* Runs on a completion-queue thread: record failures, never assert here. A stream that
     * is not held sends its last message with the status (rpc_call_finish_with). */
    for (uint32_t i = 0; i + (req->hold ? 0 : 1) < req->n; i++) {
        ev.i = i;
        if (rpc_call_send(call, &ev.base) != 0)
            ts->send_errors++;
    }
    if (!req->hold && req->n > 0) {
        ev.i = req->n - 1;
        rpc_call_finish_with(call, &ev.base);
        return;
    }
    if (req->hold) {
        if (rpc_call_on_cancel(call, on_server_cancel, ts) < 0)
            on_server_cancel(call, ts);
        waiter_bump(&ts->held);
        return;
    }
    rpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static test_server *server_start(const rpc_server_opts *opts)
{
    test_server *ts = calloc(1, sizeof *ts);

    waiter_init(&ts->cancels);
    waiter_init(&ts->held);
    waiter_init(&ts->flood_done);
    ts->srv = rpc_server_new(opts);
    ts->health = rpc_health_new();
    assert_int_equal(rpc_server_add_method(ts->srv, &rpctest__rpc_test__descriptor, "Echo",
                                           RPC_UNARY, handle_echo, ts), 0);
    assert_int_equal(rpc_server_add_method(ts->srv, &rpctest__rpc_test__descriptor, "Count",
                                           RPC_SERVER_STREAM, handle_count, ts), 0);
    assert_int_equal(rpc_server_add_method(ts->srv, &rpctest__rpc_test__descriptor, "Nope",
                                           RPC_UNARY, handle_echo, ts), -ENOENT);
    assert_int_equal(rpc_health_register(ts->health, ts->srv), 0);
    assert_int_equal(rpc_server_listen(ts->srv, "127.0.0.1:0", &ts->port), 0);
    assert_true(ts->port > 0);
    assert_int_equal(rpc_server_start(ts->srv), 0);
    return ts;
}

static void server_stop(test_server *ts)
{
    rpc_server_free(ts->srv);
    rpc_health_free(ts->health);
    free(ts);
}

static rpc_client *client_for(const test_server *ts)
{
    char target[64];

    snprintf(target, sizeof target, "127.0.0.1:%d", ts->port);
    return rpc_client_new(target, NULL);
}

/* ---- client-side recorders ------------------------------------------------------------ */

typedef struct {
    waiter done;
    grpc_status_code status;
    char message[256];
    char text[256];
    int64_t at_ms;
} unary_result;

static void on_unary(void *ud, grpc_status_code status, const char *message,
                     const ProtobufCMessage *resp)
{
    unary_result *r = ud;

    r->status = status;
    snprintf(r->message, sizeof r->message, "%s", message);
    if (resp)
        snprintf(r->text, sizeof r->text, "%s", ((const Rpctest__EchoReply *)resp)->text);
    r->at_ms = rpc_now_ms();
    waiter_bump(&r->done);
}

typedef struct {
    waiter msgs;
    waiter closed;
    int order_ok;
    uint32_t next;
    int sleep_first_ms;  /* a slow reader: block the polling thread on the first message */
    grpc_status_code status;
    char message[256];
    rpc_stream *st;
    int cancel_after;    /* cancel from the callback after this many messages (0 = never) */
} stream_result;

static void on_stream_msg(void *ud, const ProtobufCMessage *msg)
{
    stream_result *r = ud;
    const Rpctest__CountEvent *ev = (const Rpctest__CountEvent *)msg;

    if (ev->i != r->next)
        r->order_ok = 0;
    r->next = ev->i + 1;
    if (r->sleep_first_ms && ev->i == 0)
        usleep((useconds_t)r->sleep_first_ms * 1000u);
    waiter_bump(&r->msgs);
    if (r->cancel_after && r->msgs.count == r->cancel_after) {
        /* The stream pointer is stored by the main thread after the call started. */
        pthread_mutex_lock(&r->msgs.mu);
        while (!r->st)
            pthread_cond_wait(&r->msgs.cv, &r->msgs.mu);
        pthread_mutex_unlock(&r->msgs.mu);
        rpc_stream_cancel(r->st);
    }
}

static void on_stream_close(void *ud, grpc_status_code status, const char *message)
{
    stream_result *r = ud;

    r->status = status;
    snprintf(r->message, sizeof r->message, "%s", message);
    waiter_bump(&r->closed);
}

static void stream_result_init(stream_result *r)
{
    memset(r, 0, sizeof *r);
    waiter_init(&r->msgs);
    waiter_init(&r->closed);
    r->order_ok = 1;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_unary(void **state)
{
    test_server *ts = server_start(NULL);
    rpc_client *cli = client_for(ts);
    unary_result r[64];
    Rpctest__EchoRequest req = RPCTEST__ECHO_REQUEST__INIT;
    char text[32];

    for (int i = 0; i < 64; i++) {
        memset(&r[i], 0, sizeof r[i]);
        waiter_init(&r[i].done);
        snprintf(text, sizeof text, "hello %d", i);
        req.text = text;
        assert_int_equal(rpc_client_unary(cli, &rpctest__rpc_test__descriptor, "Echo", &req.base,
                                          5000, on_unary, &r[i]), 0);
    }
    for (int i = 0; i < 64; i++) {
        assert_int_equal(waiter_wait(&r[i].done, 1, 5000), 1);
        if (r[i].status != GRPC_STATUS_OK)
            fail_msg("call %d: %s: %s", i, rpc_status_name(r[i].status), r[i].message);
        snprintf(text, sizeof text, "hello %d", i);
        assert_string_equal(r[i].text, text);
    }
    assert_int_equal(rpc_client_unary(cli, &rpctest__rpc_test__descriptor, "Missing", &req.base,
                                      5000, on_unary, &r[0]), -ENOENT);
    rpc_client_free(cli);
    server_stop(ts);
}

static void test_stream(void **state)
{
    test_server *ts = server_start(NULL);
    rpc_client *cli = client_for(ts);
    Rpctest__CountRequest req = RPCTEST__COUNT_REQUEST__INIT;
    stream_result r;

    stream_result_init(&r);
    req.n = 200; /* below the default queue bound of 256: sent at once, read later */
    r.st = rpc_client_stream(cli, &rpctest__rpc_test__descriptor, "Count", &req.base, 5000,
                             false, on_stream_msg, on_stream_close, &r);
    assert_non_null(r.st);
    assert_int_equal(waiter_wait(&r.closed, 1, 5000), 1);
    assert_int_equal(r.msgs.count, 200);
    assert_int_equal(ts->send_errors, 0);
    assert_true(r.order_ok);
    assert_int_equal(r.status, GRPC_STATUS_OK);
    rpc_client_free(cli);
    server_stop(ts);
}

static void test_client_cancel(void **state)
{
    test_server *ts = server_start(NULL);
    rpc_client *cli = client_for(ts);
    Rpctest__CountRequest req = RPCTEST__COUNT_REQUEST__INIT;
    rpc_stream *st;
    stream_result r;

    stream_result_init(&r);
    req.n = 3;
    req.hold = 1;
    r.cancel_after = 3;
    st = rpc_client_stream(cli, &rpctest__rpc_test__descriptor, "Count", &req.base, 0, false,
                           on_stream_msg, on_stream_close, &r);
    assert_non_null(st);
    pthread_mutex_lock(&r.msgs.mu);
    r.st = st;
    pthread_cond_broadcast(&r.msgs.cv);
    pthread_mutex_unlock(&r.msgs.mu);
    assert_int_equal(waiter_wait(&r.closed, 1, 5000), 1);
    assert_int_equal(r.status, GRPC_STATUS_CANCELLED);
    assert_int_equal(r.msgs.count, 3);
    /* The server learned of the cancel and released the call. */
    assert_int_equal(waiter_wait(&ts->cancels, 1, 5000), 1);
    for (int i = 0; i < 500 && rpc_server_live_calls(ts->srv) > 0; i++)
        usleep(10000);
    assert_int_equal(rpc_server_live_calls(ts->srv), 0);
    rpc_client_free(cli);
    server_stop(ts);
}

static void test_deadline(void **state)
{
    test_server *ts = server_start(NULL);
    rpc_client *cli = client_for(ts);
    Rpctest__EchoRequest req = RPCTEST__ECHO_REQUEST__INIT;
    unary_result r;
    int64_t t0;

    memset(&r, 0, sizeof r);
    waiter_init(&r.done);
    req.text = (char *)"late";
    req.delay_ms = 1500;
    t0 = rpc_now_ms();
    assert_int_equal(rpc_client_unary(cli, &rpctest__rpc_test__descriptor, "Echo", &req.base, 200,
                                      on_unary, &r), 0);
    assert_int_equal(waiter_wait(&r.done, 1, 5000), 1);
    assert_int_equal(r.status, GRPC_STATUS_DEADLINE_EXCEEDED);
    /* The answer came at the deadline, not when the server finally replied. */
    assert_true(r.at_ms - t0 < 1400);
    /* The late reply finds the call ended and is dropped; wait for it before freeing. */
    for (int i = 0; i < 300 && rpc_server_live_calls(ts->srv) > 0; i++)
        usleep(10000);
    assert_int_equal(rpc_server_live_calls(ts->srv), 0);
    rpc_client_free(cli);
    server_stop(ts);
}

static void test_unreachable(void **state)
{
    test_server *ts = server_start(NULL);
    char target[64];
    rpc_client *cli;
    Rpctest__EchoRequest req = RPCTEST__ECHO_REQUEST__INIT;
    Rpctest__CountRequest creq = RPCTEST__COUNT_REQUEST__INIT;
    unary_result r;
    stream_result s;

    /* A port that was just free: take one from a server, then stop it. */
    snprintf(target, sizeof target, "127.0.0.1:%d", ts->port);
    server_stop(ts);
    cli = rpc_client_new(target, NULL);
    memset(&r, 0, sizeof r);
    waiter_init(&r.done);
    req.text = (char *)"anyone?";
    assert_int_equal(rpc_client_unary(cli, &rpctest__rpc_test__descriptor, "Echo", &req.base, 3000,
                                      on_unary, &r), 0);
    assert_int_equal(waiter_wait(&r.done, 1, 5000), 1);
    assert_int_equal(r.status, GRPC_STATUS_UNAVAILABLE);

    stream_result_init(&s);
    s.st = rpc_client_stream(cli, &rpctest__rpc_test__descriptor, "Count", &creq.base, 0, false,
                             on_stream_msg, on_stream_close, &s);
    assert_non_null(s.st);
    assert_int_equal(waiter_wait(&s.closed, 1, 5000), 1);
    assert_int_equal(s.status, GRPC_STATUS_UNAVAILABLE);
    rpc_client_free(cli);
}

static void test_slow_reader_overflow(void **state)
{
    rpc_server_opts opts = {.max_stream_queue = 64};
    test_server *ts = server_start(&opts);
    rpc_client *cli = client_for(ts);
    Rpctest__CountRequest req = RPCTEST__COUNT_REQUEST__INIT;
    stream_result r;

    stream_result_init(&r);
    req.flood = 1;
    req.pad_bytes = 4096;
    r.sleep_first_ms = 1500; /* the reader stalls while the server keeps sending */
    r.st = rpc_client_stream(cli, &rpctest__rpc_test__descriptor, "Count", &req.base, 0, false,
                             on_stream_msg, on_stream_close, &r);
    assert_non_null(r.st);
    assert_int_equal(waiter_wait(&ts->flood_done, 1, 10000), 1);
    assert_int_equal(ts->flood_rc, -ENOBUFS);
    assert_int_equal(waiter_wait(&r.closed, 1, 10000), 1);
    assert_int_equal(r.status, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(r.message, "slow reader"));
    /* Bounded: the reader got far fewer messages than the server tried to send. */
    assert_true(r.msgs.count < ts->flood_sent);
    rpc_client_free(cli);
    server_stop(ts);
}

static void test_shutdown_with_live_streams(void **state)
{
    test_server *ts = server_start(NULL);
    rpc_client *cli = client_for(ts);
    Rpctest__CountRequest req = RPCTEST__COUNT_REQUEST__INIT;
    stream_result r[3];
    int64_t t0;

    req.n = 1;
    req.hold = 1;
    for (int i = 0; i < 3; i++) {
        stream_result_init(&r[i]);
        r[i].st = rpc_client_stream(cli, &rpctest__rpc_test__descriptor, "Count", &req.base, 0,
                                    false, on_stream_msg, on_stream_close, &r[i]);
        assert_non_null(r[i].st);
    }
    assert_int_equal(waiter_wait(&ts->held, 3, 5000), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(waiter_wait(&r[i].msgs, 1, 5000), 1);
    t0 = rpc_now_ms();
    rpc_server_free(ts->srv); /* cancels the held streams; their handlers finish them */
    ts->srv = NULL;
    assert_true(rpc_now_ms() - t0 < 3000);
    assert_int_equal(ts->cancels.count, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(waiter_wait(&r[i].closed, 1, 5000), 1);
        assert_int_not_equal(r[i].status, GRPC_STATUS_OK);
    }
    rpc_client_free(cli);
    server_stop(ts);
}

typedef struct {
    waiter done;
    int status;
    grpc_status_code code;
} health_result;

static void on_health(void *ud, grpc_status_code status, const char *message,
                      const ProtobufCMessage *resp)
{
    health_result *h = ud;

    h->code = status;
    h->status = resp ? (int)((const Grpc__Health__V1__HealthCheckResponse *)resp)->status : -1;
    waiter_bump(&h->done);
}

static void test_unknown_method(void **state)
{
    /* A server that only knows Echo answers Count with UNIMPLEMENTED at once. */
    rpc_server *srv = rpc_server_new(NULL);
    Rpctest__CountRequest req = RPCTEST__COUNT_REQUEST__INIT;
    char target[64];
    rpc_client *cli;
    stream_result r;
    int port = 0;

    assert_int_equal(rpc_server_add_method(srv, &rpctest__rpc_test__descriptor, "Echo", RPC_UNARY,
                                           handle_echo, NULL), 0);
    assert_int_equal(rpc_server_listen(srv, "127.0.0.1:0", &port), 0);
    assert_int_equal(rpc_server_start(srv), 0);
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    cli = rpc_client_new(target, NULL);
    stream_result_init(&r);
    r.st = rpc_client_stream(cli, &rpctest__rpc_test__descriptor, "Count", &req.base, 5000, false,
                             on_stream_msg, on_stream_close, &r);
    assert_non_null(r.st);
    assert_int_equal(waiter_wait(&r.closed, 1, 3000), 1);
    assert_int_equal(r.status, GRPC_STATUS_UNIMPLEMENTED);
    assert_non_null(strstr(r.message, "/rpctest.RpcTest/Count"));
    rpc_client_free(cli);
    rpc_server_free(srv);
}

/* ---- two servers on one completion queue ---------------------------------------------- */

typedef struct {
    const char *name;
    pthread_t thread; /* the thread its handler last ran on */
    waiter calls;     /* bumped after thread is set: waiting on it makes thread safe to read */
} named_server;

static void handle_named_echo(rpc_call *call, void *ud)
{
    named_server *ns = ud;
    const Rpctest__EchoRequest *req = (const Rpctest__EchoRequest *)rpc_call_request(call);
    Rpctest__EchoReply reply = RPCTEST__ECHO_REPLY__INIT;
    char text[256];

    ns->thread = pthread_self();
    waiter_bump(&ns->calls);
    snprintf(text, sizeof text, "%s: %s", ns->name, req->text);
    reply.text = text;
    rpc_call_reply(call, &reply.base);
}

static rpc_server *named_server_new(named_server *ns, const rpc_server_opts *opts, int *port)
{
    rpc_server *srv = rpc_server_new(opts);

    assert_int_equal(rpc_server_add_method(srv, &rpctest__rpc_test__descriptor, "Echo", RPC_UNARY,
                                           handle_named_echo, ns), 0);
    if (port)
        assert_int_equal(rpc_server_listen(srv, "127.0.0.1:0", port), 0);
    return srv;
}

/* Echo at port; the answer's text, or the status name when the call failed. */
static void echo_at(int port, const char *text, char *out, size_t size)
{
    Rpctest__EchoRequest req = RPCTEST__ECHO_REQUEST__INIT;
    char target[64];
    rpc_client *cli;
    unary_result r;

    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    cli = rpc_client_new(target, NULL);
    memset(&r, 0, sizeof r);
    waiter_init(&r.done);
    req.text = (char *)text;
    assert_int_equal(rpc_client_unary(cli, &rpctest__rpc_test__descriptor, "Echo", &req.base, 5000,
                                      on_unary, &r), 0);
    assert_int_equal(waiter_wait(&r.done, 1, 5000), 1);
    snprintf(out, size, "%s", r.status == GRPC_STATUS_OK ? r.text : rpc_status_name(r.status));
    rpc_client_free(cli);
}

static void test_shared_queue(void **state)
{
    /* Each server answers only on its own port with its own methods, and the sharer's calls
     * run on the owner's queue thread. */
    named_server a = {.name = "gateway"}, b = {.name = "admin"};
    int port_a = 0, port_b = 0, port_c = 0;
    rpc_server *owner = named_server_new(&a, NULL, &port_a);
    rpc_server *sharer = named_server_new(&b, &(rpc_server_opts){.share_cq = owner}, &port_b);
    rpc_server *empty = rpc_server_new(&(rpc_server_opts){.share_cq = owner});
    char text[256];

    waiter_init(&a.calls);
    waiter_init(&b.calls);
    assert_int_equal(rpc_server_listen(empty, "127.0.0.1:0", &port_c), 0);
    assert_int_equal(rpc_server_start(owner), 0);
    assert_int_equal(rpc_server_start(sharer), 0);
    assert_int_equal(rpc_server_start(empty), 0);
    echo_at(port_a, "one", text, sizeof text);
    assert_string_equal(text, "gateway: one");
    echo_at(port_b, "two", text, sizeof text);
    assert_string_equal(text, "admin: two");
    assert_int_equal(waiter_wait(&a.calls, 1, 0) + waiter_wait(&b.calls, 1, 0), 2);
    assert_true(pthread_equal(a.thread, b.thread));
    assert_false(pthread_equal(a.thread, pthread_self()));
    /* A method the owner has is not served on a sharer's port that lacks it. */
    echo_at(port_c, "three", text, sizeof text);
    assert_string_equal(text, "UNIMPLEMENTED");
    rpc_server_free(empty);
    rpc_server_free(sharer);
    /* The owner serves on after its sharers are gone. */
    echo_at(port_a, "four", text, sizeof text);
    assert_string_equal(text, "gateway: four");
    rpc_server_free(owner);

    /* Never started (control's failed start-up): a sharer freed before its owner, with and
     * without a thread on the owner's queue, returns and leaks nothing (ASan). */
    owner = named_server_new(&a, NULL, &port_a);
    sharer = named_server_new(&b, &(rpc_server_opts){.share_cq = owner}, &port_b);
    rpc_server_free(sharer);
    rpc_server_free(owner);
    owner = named_server_new(&a, NULL, NULL);
    sharer = named_server_new(&b, &(rpc_server_opts){.share_cq = owner}, &port_b);
    assert_int_equal(rpc_server_start(owner), 0);
    rpc_server_free(sharer);
    rpc_server_free(owner);
}

static void test_health(void **state)
{
    test_server *ts = server_start(NULL);
    rpc_client *cli = client_for(ts);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    health_result h[3];

    for (int i = 0; i < 3; i++) {
        memset(&h[i], 0, sizeof h[i]);
        waiter_init(&h[i].done);
    }
    req.service = (char *)"";
    rpc_client_unary(cli, &grpc__health__v1__health__descriptor, "Check", &req.base, 2000,
                     on_health, &h[0]);
    assert_int_equal(waiter_wait(&h[0].done, 1, 5000), 1);
    assert_int_equal(h[0].status, RPC_HEALTH_NOT_SERVING);
    rpc_health_set(ts->health, "", RPC_HEALTH_SERVING);
    rpc_client_unary(cli, &grpc__health__v1__health__descriptor, "Check", &req.base, 2000,
                     on_health, &h[1]);
    assert_int_equal(waiter_wait(&h[1].done, 1, 5000), 1);
    assert_int_equal(h[1].status, RPC_HEALTH_SERVING);
    req.service = (char *)"no.such.Service";
    rpc_client_unary(cli, &grpc__health__v1__health__descriptor, "Check", &req.base, 2000,
                     on_health, &h[2]);
    assert_int_equal(waiter_wait(&h[2].done, 1, 5000), 1);
    assert_int_equal(h[2].code, GRPC_STATUS_NOT_FOUND);
    rpc_client_free(cli);
    server_stop(ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_client_cancel),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_slow_reader_overflow),
        cmocka_unit_test(test_shutdown_with_live_streams),
        cmocka_unit_test(test_unknown_method),
        cmocka_unit_test(test_shared_queue),
        cmocka_unit_test(test_health),
    };
    int rc;

    rpc_global_init();
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    rpc_global_shutdown();
    return rc;
}
