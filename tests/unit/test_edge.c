/* test_edge: the edge library against an in-process fake control (a Gateway server whose
 * Subscribe sends Hello and holds the stream): health and readiness over real HTTP, readiness
 * following control going away and coming back on the same port, routing errors, options,
 * and the HTTP server's parked requests. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "edge.h"
#include "edge_http.h"
#include "edge_link.h"
#include "mcphub/v1/gateway.pb-c.h"
#include "ports.h"
#include "rpc.h"
#include "waiter.h"

/* ---- fake control ------------------------------------------------------------------------ */

typedef struct {
    rpc_server *srv;
    int port;
    char control_id[32];
    char edge_id[64];  /* the last Subscribe's edge_id (under subscribed.mu) */
    bool bad_first;    /* misbehave: send an event before Hello */
    waiter subscribed; /* Subscribe calls that got their Hello */
} fake_control;

static void fake_on_cancel(rpc_call *call, void *ud)
{
    rpc_call_finish(call, GRPC_STATUS_CANCELLED, "cancelled");
}

/* Sends Hello (or, when bad_first, another event first), then a session_ended and a
 * config_changed, and holds the stream until the edge cancels or the server shuts down; the
 * cancel callback completes the call, so every call is completed exactly once. */
static void fake_subscribe(rpc_call *call, void *ud)
{
    fake_control *fc = ud;
    Mcphub__V1__EdgeEvent ev = MCPHUB__V1__EDGE_EVENT__INIT;
    Mcphub__V1__Hello hello = MCPHUB__V1__HELLO__INIT;
    Mcphub__V1__SessionEnded ended = MCPHUB__V1__SESSION_ENDED__INIT;
    Mcphub__V1__ConfigChanged changed = MCPHUB__V1__CONFIG_CHANGED__INIT;
    const Mcphub__V1__SubscribeRequest *req =
        (const Mcphub__V1__SubscribeRequest *)rpc_call_request(call);

    /* No cmocka assert here: this runs on a gRPC thread. The test checks what we record. */
    pthread_mutex_lock(&fc->subscribed.mu);
    snprintf(fc->edge_id, sizeof fc->edge_id, "%s", req->edge_id);
    pthread_mutex_unlock(&fc->subscribed.mu);
    hello.control_id = fc->control_id;
    hello.config_version = 7;
    ended.session_id = (char *)"s-1 \"quoted\"";
    ended.reason = MCPHUB__V1__END_REASON__END_REASON_ADMIN;
    changed.config_version = 8;
    if (!fc->bad_first) {
        ev.seq = 1;
        ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_HELLO;
        ev.hello = &hello;
        rpc_call_send(call, &ev.base);
    }
    ev.seq = 2;
    ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_SESSION_ENDED;
    ev.session_ended = &ended;
    rpc_call_send(call, &ev.base);
    ev.seq = 3;
    ev.event_case = MCPHUB__V1__EDGE_EVENT__EVENT_CONFIG_CHANGED;
    ev.config_changed = &changed;
    rpc_call_send(call, &ev.base);
    if (rpc_call_on_cancel(call, fake_on_cancel, fc) < 0)
        fake_on_cancel(call, fc);
    waiter_bump(&fc->subscribed);
}

/* Copies the edge_id of the last Subscribe into buf. */
static const char *fake_edge_id(fake_control *fc, char *buf, size_t size)
{
    pthread_mutex_lock(&fc->subscribed.mu);
    snprintf(buf, size, "%s", fc->edge_id);
    pthread_mutex_unlock(&fc->subscribed.mu);
    return buf;
}

static void fake_free(fake_control *fc)
{
    if (!fc)
        return;
    rpc_server_free(fc->srv);
    waiter_destroy(&fc->subscribed);
    free(fc);
}

/* Starts a fake control on 127.0.0.1:port (0 = any free port); NULL when the port is taken. */
static fake_control *fake_try_start(int port, const char *control_id, bool bad_first)
{
    fake_control *fc = calloc(1, sizeof *fc);
    char addr[64];

    assert_non_null(fc);
    waiter_init(&fc->subscribed);
    snprintf(fc->control_id, sizeof fc->control_id, "%s", control_id);
    fc->bad_first = bad_first;
    fc->srv = rpc_server_new(NULL);
    assert_int_equal(rpc_server_add_method(fc->srv, &mcphub__v1__gateway__descriptor, "Subscribe",
                                           RPC_SERVER_STREAM, fake_subscribe, fc),
                     0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    if (rpc_server_listen(fc->srv, addr, &fc->port) < 0) {
        fake_free(fc);
        return NULL;
    }
    assert_true(fc->port > 0);
    assert_int_equal(rpc_server_start(fc->srv), 0);
    return fc;
}

static fake_control *fake_start_mode(int port, const char *control_id, bool bad_first)
{
    fake_control *fc = fake_try_start(port, control_id, bad_first);

    assert_non_null(fc);
    return fc;
}

static fake_control *fake_start(int port, const char *control_id)
{
    return fake_start_mode(port, control_id, false);
}

/* Starts a fake control that the test will stop and start again on the same port: on a
 * random free port below the kernel's ephemeral range, which no port 0 listener and no
 * outgoing connection of a test running beside this one can take while the fake is down. */
static fake_control *fake_start_restartable(const char *control_id)
{
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    unsigned seed = (unsigned)getpid() ^ (unsigned)rpc_now_ms();
    int low = 32768, floor;

    if (f) {
        if (fscanf(f, "%d", &low) != 1)
            low = 32768;
        fclose(f);
    }
    floor = low - 10000 > 1024 ? low - 10000 : 1024;
    assert_true(low > floor);
    for (int i = 0; i < 100; i++) {
        fake_control *fc = fake_try_start(floor + rand_r(&seed) % (low - floor), control_id, false);

        if (fc)
            return fc;
    }
    fail_msg("no free port in %d..%d", floor, low - 1);
    abort(); /* not reached: cmocka's failure jumps out of the test */
}

/* ---- a small blocking HTTP/1.1 client --------------------------------------------------- */

typedef struct {
    int status;
    char head[4096]; /* status line and headers */
    char body[4096];
} http_resp;

/* Sends one request with Connection: close and reads the whole answer (2 s per socket
 * operation). Returns the status code, or -1 when no HTTP answer came. */
static int http_do(int port, const char *method, const char *path, const char *body,
                   http_resp *r)
{
    struct sockaddr_in a;
    struct timeval tv = {2, 0};
    char req[512];
    char buf[4096];
    size_t n = 0, len;
    ssize_t w;
    char *sep;
    int fd;

    memset(r, 0, sizeof *r);
    r->status = -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (const struct sockaddr *)&a, sizeof a) < 0)
        goto out;
    if (body)
        snprintf(req, sizeof req,
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 method, path, strlen(body), body);
    else
        snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 method, path);
    len = strlen(req);
    for (size_t off = 0; off < len; off += (size_t)w)
        if ((w = write(fd, req + off, len - off)) <= 0)
            goto out;
    while (n < sizeof buf - 1 && (w = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)w;
    buf[n] = '\0';
    if (sscanf(buf, "HTTP/1.1 %d", &r->status) != 1)
        r->status = -1;
    if ((sep = strstr(buf, "\r\n\r\n"))) {
        *sep = '\0';
        snprintf(r->body, sizeof r->body, "%s", sep + 4);
    }
    snprintf(r->head, sizeof r->head, "%s", buf);
out:
    close(fd);
    return r->status;
}

static int http_get(int port, const char *path, http_resp *r)
{
    return http_do(port, "GET", path, NULL, r);
}

/* Polls GET path every 50 ms until it answers want; returns the last status seen. */
static int http_wait_status(int port, const char *path, int want, int timeout_ms,
                            http_resp *r)
{
    int64_t until = rpc_now_ms() + timeout_ms;
    int st;

    while ((st = http_get(port, path, r)) != want && rpc_now_ms() < until)
        usleep(50 * 1000);
    return st;
}

static bool has_header(const http_resp *r, const char *line)
{
    return strcasestr(r->head, line) != NULL;
}

/* ---- helpers ---------------------------------------------------------------------------- */

/* Counts open descriptors; with show, lists them on stderr. */
static int count_fds(bool show)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    char path[300], target[256];
    ssize_t len;
    int n = 0;

    if (!d)
        return -1;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        n++;
        if (!show)
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", de->d_name);
        len = readlink(path, target, sizeof target - 1);
        target[len > 0 ? len : 0] = '\0';
        fprintf(stderr, "  fd %s -> %s\n", de->d_name, target);
    }
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static edge *edge_for(int control_port)
{
    char control[64];
    edge_opts opts = {0};
    edge *e;

    snprintf(control, sizeof control, "127.0.0.1:%d", control_port);
    opts.listen = "127.0.0.1:0";
    opts.control = control;
    opts.edge_id = "edge-test";
    e = edge_new(&opts);
    assert_non_null(e);
    assert_int_equal(edge_start(e), 0);
    assert_true(edge_port(e) > 0);
    return e;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_readiness_follows_control(void **state)
{
    fake_control *fc = fake_start_restartable("fake-1");
    int control_port = fc->port;
    edge *e = edge_for(control_port);
    int port = edge_port(e);
    http_resp r;
    char id[64];
    int64_t t0;

    assert_int_equal(http_get(port, "/healthz", &r), 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    assert_true(has_header(&r, "Content-Type: application/json"));
    assert_true(has_header(&r, "Cache-Control: no-store"));

    assert_int_equal(http_wait_status(port, "/readyz", 200, 2000, &r), 200);
    assert_string_equal(r.body, "{\"status\":\"ready\",\"control\":\"fake-1\"}");
    assert_true(has_header(&r, "Content-Type: application/json"));
    assert_true(has_header(&r, "Cache-Control: no-store"));
    assert_int_equal(waiter_wait(&fc->subscribed, 1, 1000), 1);
    assert_string_equal(fake_edge_id(fc, id, sizeof id), "edge-test");

    /* Control goes away: not ready within 2 s, still healthy. */
    fake_free(fc);
    t0 = rpc_now_ms();
    assert_int_equal(http_wait_status(port, "/readyz", 503, 2000, &r), 503);
    assert_true(rpc_now_ms() - t0 <= 2000);
    assert_string_equal(r.body, "{\"status\":\"not ready\",\"reason\":\"control unreachable\"}");
    assert_true(has_header(&r, "Retry-After: 1"));
    assert_true(has_header(&r, "Cache-Control: no-store"));
    assert_int_equal(http_get(port, "/healthz", &r), 200);

    /* Stay down long enough for a few failed re-subscribes, then come back on the same port
     * as a new control: ready again within 3 s, with the new id, and no edge restart. */
    usleep(700 * 1000);
    assert_int_equal(http_get(port, "/readyz", &r), 503);
    fc = fake_start(control_port, "fake-2");
    t0 = rpc_now_ms();
    assert_int_equal(http_wait_status(port, "/readyz", 200, 3000, &r), 200);
    assert_true(rpc_now_ms() - t0 <= 3000);
    assert_string_equal(r.body, "{\"status\":\"ready\",\"control\":\"fake-2\"}");
    assert_int_equal(waiter_wait(&fc->subscribed, 1, 1000), 1);

    edge_free(e);
    /* The edge cancelled its stream on the way out: the fake has no call left. */
    for (int i = 0; i < 200 && rpc_server_live_calls(fc->srv) > 0; i++)
        usleep(10 * 1000);
    assert_int_equal(rpc_server_live_calls(fc->srv), 0);
    fake_free(fc);
}

/* A control that does not greet first is not trusted: the edge stays unready, cancels,
 * and re-subscribes with a growing delay (100, 200, 400, 800 ms ...), never in a tight loop. */
static void test_event_before_hello(void **state)
{
    fake_control *fc = fake_start_mode(0, "bad", true);
    edge *e = edge_for(fc->port);
    http_resp r;
    int n;

    assert_int_equal(waiter_wait(&fc->subscribed, 3, 3000), 3);
    assert_int_equal(http_get(edge_port(e), "/readyz", &r), 503);
    usleep(500 * 1000);
    n = waiter_wait(&fc->subscribed, 100, 0);
    assert_true(n >= 3 && n <= 6);
    assert_int_equal(http_get(edge_port(e), "/readyz", &r), 503);
    edge_free(e);
    fake_free(fc);
}

static void test_routes(void **state)
{
    int refused_fd;
    edge *e = edge_for(refused_port(&refused_fd)); /* nobody listens there: never ready */
    int port = edge_port(e);
    http_resp r;

    assert_int_equal(http_get(port, "/nope", &r), 404);
    assert_string_equal(r.body, "{\"error\":\"not found\"}");
    assert_true(has_header(&r, "Content-Type: application/json"));
    assert_int_equal(http_get(port, "/healthz/", &r), 404);
    assert_int_equal(http_get(port, "/", &r), 404);

    assert_int_equal(http_do(port, "POST", "/healthz", NULL, &r), 405);
    assert_string_equal(r.body, "{\"error\":\"method not allowed\"}");
    assert_true(has_header(&r, "Allow: GET, HEAD"));
    assert_int_equal(http_do(port, "POST", "/healthz", "{\"a\":1}", &r), 405);
    assert_true(has_header(&r, "Allow: GET, HEAD"));
    assert_int_equal(http_do(port, "DELETE", "/readyz", NULL, &r), 405);
    assert_int_equal(http_do(port, "BREW", "/readyz", NULL, &r), 405);

    assert_int_equal(http_do(port, "HEAD", "/healthz", NULL, &r), 200);
    assert_string_equal(r.body, "");
    assert_int_equal(http_get(port, "/healthz?verbose=1", &r), 200);
    assert_int_equal(http_get(port, "/readyz", &r), 503);
    assert_true(has_header(&r, "Retry-After: 1"));
    edge_free(e);
    close(refused_fd);
}

static void test_options(void **state)
{
    edge_opts opts = {0};
    char err[256];
    char id[EDGE_ID_MAX + 1];
    edge *e, *e2;

    edge_free(NULL);
    edge_link_free(NULL);
    edge_http_free(NULL);

    assert_int_equal(edge_opts_check(&opts, err, sizeof err), 0); /* all defaults */
    opts.listen = "127.0.0.1";
    assert_int_equal(edge_opts_check(&opts, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "listen"));
    opts.listen = "127.0.0.1:70000";
    assert_int_equal(edge_opts_check(&opts, err, sizeof err), -EINVAL);
    opts.listen = "::1:3000";
    assert_int_equal(edge_opts_check(&opts, err, sizeof err), -EINVAL);
    opts.listen = ":3000";
    assert_int_equal(edge_opts_check(&opts, err, sizeof err), -EINVAL);
    opts.listen = "localhost:0";
    assert_int_equal(edge_opts_check(&opts, err, sizeof err), 0);
    opts.control = "";
    assert_int_equal(edge_opts_check(&opts, err, sizeof err), -EINVAL);
    opts.control = NULL;
    opts.edge_id = "has space";
    assert_int_equal(edge_opts_check(&opts, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "edge id"));
    opts.edge_id = "";
    assert_null(edge_new(&opts));
    opts.edge_id = NULL;

    edge_default_id(id, sizeof id);
    assert_int_equal(strncmp(id, "edge-", 5), 0);

    /* A port in use is a clean error, with nothing left running. */
    opts.listen = "127.0.0.1:0";
    opts.control = "127.0.0.1:1";
    e = edge_new(&opts);
    assert_non_null(e);
    assert_int_equal(edge_start(e), 0);
    assert_int_equal(edge_start(e), -EALREADY);
    {
        char busy[64];

        snprintf(busy, sizeof busy, "127.0.0.1:%d", edge_port(e));
        opts.listen = busy;
        e2 = edge_new(&opts);
        assert_non_null(e2);
        assert_int_equal(edge_start(e2), -EADDRINUSE);
        assert_int_equal(edge_port(e2), 0);
        edge_free(e2);
    }
    edge_stop(e);
    edge_stop(e);
    edge_free(e);
}

/* ---- edge_http: parked requests ---------------------------------------------------------- */

typedef struct {
    edge_http_state base;
    edge_http_parked parked;
    int calls;
    bool done; /* set by the unparking thread before it unparks */
} park_req;

typedef struct {
    edge_http *http;
    waiter parked;
    waiter released;
    pthread_mutex_t mu;
    park_req *last;
} park_server;

static park_server *park_current; /* the release callback has no user data of its own */

static void park_release(edge_http_state *st)
{
    free(st);
    waiter_bump(&park_current->released);
}

/* GET /park: parks on the first call; answers 200 once the test marked it done, 503 when
 * it was resumed by the server's stop. */
static enum MHD_Result route_park(void *ud, edge_http_req *req)
{
    park_server *ps = ud;
    park_req *pr = *req->req_cls;

    if (!pr) {
        pr = calloc(1, sizeof *pr);
        assert_non_null(pr);
        pr->base.release = park_release;
        *req->req_cls = pr;
    }
    pr->calls++;
    pthread_mutex_lock(&ps->mu);
    if (pr->done) {
        pthread_mutex_unlock(&ps->mu);
        return edge_http_reply_json(req->conn, MHD_HTTP_OK, "{\"parked\":\"done\"}", NULL);
    }
    if (pr->calls == 1 && edge_http_park(req->http, &pr->parked, req->conn) == 0) {
        ps->last = pr;
        pthread_mutex_unlock(&ps->mu);
        waiter_bump(&ps->parked);
        return MHD_YES;
    }
    pthread_mutex_unlock(&ps->mu);
    return edge_http_reply_error(req->conn, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down", NULL);
}

static const edge_http_route park_routes[] = {
    {"/park", true, EDGE_HTTP_GET, route_park},
};

typedef struct {
    int port;
    http_resp r;
    int status;
} client_arg;

static void *client_thread(void *arg)
{
    client_arg *ca = arg;

    ca->status = http_get(ca->port, "/park", &ca->r);
    return NULL;
}

static void test_http_park(void **state)
{
    park_server ps;
    edge_http_opts opts = {0};
    client_arg ca1 = {0}, ca2 = {0};
    pthread_t t1, t2;
    int64_t t0;
    http_resp r;

    memset(&ps, 0, sizeof ps);
    waiter_init(&ps.parked);
    waiter_init(&ps.released);
    pthread_mutex_init(&ps.mu, NULL);
    park_current = &ps;
    assert_int_equal(edge_http_parse_addr("127.0.0.1:0", &opts.addr), 0);
    opts.routes = park_routes;
    opts.nroutes = 1;
    opts.ud = &ps;
    assert_int_equal(edge_http_new(&opts, &ps.http), 0);
    ca1.port = ca2.port = edge_http_port(ps.http);
    {
        edge_http_parked never = {0};

        edge_http_unpark(ps.http, &never); /* not parked: nothing happens */
    }
    assert_int_equal(http_get(ca1.port, "/other", &r), 404);
    assert_int_equal(http_get(ca1.port, "/parking", &r), 404); /* prefix needs a '/' */

    /* Parked, then unparked by another thread: answered 200. */
    pthread_create(&t1, NULL, client_thread, &ca1);
    assert_int_equal(waiter_wait(&ps.parked, 1, 2000), 1);
    pthread_mutex_lock(&ps.mu);
    ps.last->done = true;
    pthread_mutex_unlock(&ps.mu);
    /* From here the request may be answered and released at any moment: no second look. */
    edge_http_unpark(ps.http, &ps.last->parked);
    pthread_join(t1, NULL);
    assert_int_equal(ca1.status, 200);
    assert_string_equal(ca1.r.body, "{\"parked\":\"done\"}");
    assert_int_equal(waiter_wait(&ps.released, 1, 2000), 1);

    /* Parked while the server stops: resumed, answered or closed, released; no hang. */
    pthread_create(&t2, NULL, client_thread, &ca2);
    assert_int_equal(waiter_wait(&ps.parked, 2, 2000), 2);
    t0 = rpc_now_ms();
    edge_http_free(ps.http);
    assert_true(rpc_now_ms() - t0 < 2000);
    pthread_join(t2, NULL);
    assert_true(ca2.status == 503 || ca2.status == -1);
    assert_int_equal(waiter_wait(&ps.released, 2, 2000), 2);

    park_current = NULL;
    pthread_mutex_destroy(&ps.mu);
    waiter_destroy(&ps.parked);
    waiter_destroy(&ps.released);
}

static void test_clean_text(void **state)
{
    char buf[8];

    edge_link_clean(buf, sizeof buf, "ab\"c\\d\n");
    assert_string_equal(buf, "ab_c_d_");
    edge_link_clean(buf, sizeof buf, "0123456789");
    assert_string_equal(buf, "0123456");
    edge_link_clean(buf, sizeof buf, NULL);
    assert_string_equal(buf, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_text),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_http_park),
        cmocka_unit_test(test_readiness_follows_control),
        cmocka_unit_test(test_event_before_hello),
    };
    int fds, rc;

    rpc_global_init();
    /* gRPC creates a process-wide poller (an epoll and an eventfd) at init and keeps it after
     * shutdown, so the baseline is taken with gRPC up. */
    fds = count_fds(false);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    rpc_global_shutdown();
    /* Nothing the tests started may leave a descriptor behind. Channels close their sockets
     * on gRPC's own threads, so give them a moment. */
    for (int i = 0; i < 100 && count_fds(false) != fds; i++)
        usleep(20 * 1000);
    if (count_fds(false) != fds) {
        fprintf(stderr, "descriptors leaked: %d before, %d after:\n", fds, count_fds(true));
        rc = rc ? rc : 1;
    }
    return rc;
}
