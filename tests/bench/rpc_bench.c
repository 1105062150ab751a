/* rpc_bench: prints the rpc runtime's figures over loopback, server and client in separate
 * processes: unary calls/s with 1 and 8 in flight (with latency percentiles for 1), and
 * server-stream events/s. A benchmark: it prints numbers and never fails on them.
 * usage: rpc_bench [--seconds N] */
#include "bench.h"
#include "rpc.h"
#include "rpctest.pb-c.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- server process ------------------------------------------------------------------ */

static void srv_echo(rpc_call *call, void *ud)
{
    const Rpctest__EchoRequest *req = (const Rpctest__EchoRequest *)rpc_call_request(call);
    Rpctest__EchoReply reply = RPCTEST__ECHO_REPLY__INIT;

    reply.text = req->text;
    rpc_call_reply(call, &reply.base);
}

static void srv_count(rpc_call *call, void *ud)
{
    const Rpctest__CountRequest *req = (const Rpctest__CountRequest *)rpc_call_request(call);
    Rpctest__CountEvent ev = RPCTEST__COUNT_EVENT__INIT;
    int rc = 0;

    for (uint32_t i = 0; i < req->n && rc == 0; i++) {
        ev.i = i;
        rc = rpc_call_send(call, &ev.base);
    }
    rpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static int run_server(int port_fd, int quit_fd)
{
    rpc_server_opts opts = {.max_stream_queue = 1u << 20};
    rpc_server *srv;
    int port = 0;
    char b;

    rpc_global_init();
    srv = rpc_server_new(&opts);
    rpc_server_add_method(srv, &rpctest__rpc_test__descriptor, "Echo", RPC_UNARY, srv_echo, NULL);
    rpc_server_add_method(srv, &rpctest__rpc_test__descriptor, "Count", RPC_SERVER_STREAM,
                          srv_count, NULL);
    if (rpc_server_listen(srv, "127.0.0.1:0", &port) < 0 || rpc_server_start(srv) < 0)
        return 1;
    if (write(port_fd, &port, sizeof port) != sizeof port)
        return 1;
    while (read(quit_fd, &b, 1) < 0 && errno == EINTR)
        ; /* the parent closes its end when done */
    rpc_server_free(srv);
    rpc_global_shutdown();
    return 0;
}

/* ---- client -------------------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_client *cli;
    int in_flight;
    int64_t until_ms;
    long done;
    long errors;
    int64_t *lat_us; /* sequential run only */
    long lat_n, lat_cap;
} bench;

/* One in-flight call of a run: the callback reissues through the same slot. */
typedef struct {
    bench *b;
    int64_t t_start_us;
} slot;

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void issue(slot *sl);

static void on_echo(void *ud, grpc_status_code st, const char *msg, const ProtobufCMessage *resp)
{
    slot *sl = ud;
    bench *b = sl->b;
    int64_t t = now_us();

    pthread_mutex_lock(&b->mu);
    if (st != GRPC_STATUS_OK)
        b->errors++;
    b->done++;
    if (b->lat_us && b->lat_n < b->lat_cap)
        b->lat_us[b->lat_n++] = t - sl->t_start_us;
    if (rpc_now_ms() < b->until_ms) {
        pthread_mutex_unlock(&b->mu);
        issue(sl);
        return;
    }
    b->in_flight--;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void issue(slot *sl)
{
    Rpctest__EchoRequest req = RPCTEST__ECHO_REQUEST__INIT;

    req.text = (char *)"ping";
    sl->t_start_us = now_us();
    if (rpc_client_unary(sl->b->cli, &rpctest__rpc_test__descriptor, "Echo", &req.base, 5000,
                         on_echo, sl) < 0)
        abort();
}

static void run_unary(rpc_client *cli, int concurrency, double seconds, bool print)
{
    bench b;
    slot slots[64];
    int64_t t0;
    double secs;

    memset(&b, 0, sizeof b);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    b.cli = cli;
    if (concurrency == 1) {
        b.lat_cap = 2000000;
        b.lat_us = malloc((size_t)b.lat_cap * sizeof *b.lat_us);
    }
    t0 = rpc_now_ms();
    b.until_ms = t0 + (int64_t)(seconds * 1000);
    b.in_flight = concurrency;
    for (int i = 0; i < concurrency && i < 64; i++) {
        slots[i].b = &b;
        issue(&slots[i]);
    }
    pthread_mutex_lock(&b.mu);
    while (b.in_flight > 0)
        pthread_cond_wait(&b.cv, &b.mu);
    pthread_mutex_unlock(&b.mu);
    secs = (double)(rpc_now_ms() - t0) / 1000.0;
    if (!print) {
        free(b.lat_us);
        return;
    }
    printf("unary, %d in flight:   %9.0f calls/s   (%ld calls, %ld errors, %.1f s)\n", concurrency,
           (double)b.done / secs, b.done, b.errors, secs);
    if (b.lat_us && b.lat_n > 0) {
        qsort(b.lat_us, (size_t)b.lat_n, sizeof *b.lat_us, cmp_i64);
        printf("unary, 1 in flight:   p50 %lld us, p99 %lld us, max %lld us\n",
               (long long)b.lat_us[b.lat_n / 2], (long long)b.lat_us[b.lat_n * 99 / 100],
               (long long)b.lat_us[b.lat_n - 1]);
    }
    free(b.lat_us);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long events;
    bool closed;
    grpc_status_code status;
} stream_bench;

static void on_event(void *ud, const ProtobufCMessage *msg)
{
    ((stream_bench *)ud)->events++; /* only the polling thread touches it before close */
}

static void on_closed(void *ud, grpc_status_code st, const char *msg)
{
    stream_bench *s = ud;

    pthread_mutex_lock(&s->mu);
    s->closed = true;
    s->status = st;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void run_stream(rpc_client *cli, uint32_t n)
{
    Rpctest__CountRequest req = RPCTEST__COUNT_REQUEST__INIT;
    stream_bench s;
    int64_t t0 = now_us();
    double secs;

    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    req.n = n;
    if (!rpc_client_stream(cli, &rpctest__rpc_test__descriptor, "Count", &req.base, 0, true,
                           on_event, on_closed, &s))
        abort();
    pthread_mutex_lock(&s.mu);
    while (!s.closed)
        pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
    secs = (double)(now_us() - t0) / 1e6;
    printf("server stream:        %9.0f events/s (%ld events, status %s, %.2f s)\n",
           (double)s.events / secs, s.events, rpc_status_name(s.status), secs);
}

int main(int argc, char **argv)
{
    double seconds = 3.0;
    int port_pipe[2];
    int quit_pipe[2];
    int port = 0;
    pid_t pid;
    char target[64];
    rpc_client *cli;
    int status;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else {
            fprintf(stderr, "usage: rpc_bench [--seconds N]\n");
            return 2;
        }
    }
    /* Fork before gRPC starts any thread. */
    if (pipe(port_pipe) < 0 || pipe(quit_pipe) < 0)
        return 1;
    pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        close(port_pipe[0]);
        close(quit_pipe[1]);
        _exit(run_server(port_pipe[1], quit_pipe[0]));
    }
    close(port_pipe[1]);
    close(quit_pipe[0]);
    if (read(port_pipe[0], &port, sizeof port) != sizeof port) {
        fprintf(stderr, "rpc_bench: server did not start\n");
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return 1;
    }
    rpc_global_init();
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    cli = rpc_client_new(target, NULL);
    printf("rpc_bench: server pid %d on %s, client in pid %d, %.1f s per figure\n", (int)pid,
           target, (int)getpid(), seconds);
    run_unary(cli, 1, seconds / 3, false); /* warm-up and connection setup */
    run_unary(cli, 1, seconds, true);
    run_unary(cli, 8, seconds, true);
    run_stream(cli, 200000);
    run_stream(cli, 200000);
    rpc_client_free(cli);
    rpc_global_shutdown();
    close(quit_pipe[1]);
    waitpid(pid, &status, 0);
    return 0;
}
