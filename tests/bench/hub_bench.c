/* hub_bench: tools/call latency and throughput through the hub's Streamable HTTP endpoint,
 * and the same call made directly to an upstream over stdio, so the hub's own cost shows.
 * A benchmark: prints figures, never fails on them.
 *
 *   hub_bench --http 127.0.0.1:PORT --path /mcp/fixture --sessions N --seconds S
 *   hub_bench --stdio /path/to/mcphub-fixture --seconds S
 *   hub_bench --http 127.0.0.1:PORT --path /mcp --spawn N [--label L]
 *
 * Each session is one thread with one keep-alive connection that initializes, then calls
 * the `echo` tool back to back. --spawn opens N sessions one after another and times each
 * from initialize to the first tools/call result (the cost of a per-session upstream's
 * start), then DELETEs it; it works against any Streamable HTTP server (JSON or SSE
 * answers), so a peer gateway can be measured the same way. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 4000000

static const char *opt_host = "127.0.0.1";
static int opt_port;
static const char *opt_path = "/mcp/fixture";
static const char *opt_stdio;
static int opt_sessions = 1;
static double opt_seconds = 3.0;
static int opt_spawn;
static const char *opt_label;

typedef struct {
    int64_t *lat_ns;
    long n, cap;
    long errors;
    int64_t deadline_ns;
} worker;

static void record(worker *w, int64_t ns)
{
    if (w->n < w->cap)
        w->lat_ns[w->n] = ns;
    w->n++;
}

/* ---- HTTP ----------------------------------------------------------------------------- */

typedef struct {
    int fd;
    char buf[65536];
    size_t len;
    char session[128];
} conn;

static int conn_open(conn *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt_port)};
    int one = 1;

    memset(c, 0, sizeof *c);
    inet_pton(AF_INET, opt_host, &sa.sin_addr);
    if ((c->fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return -1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

/* Sends a request (POST with json, or DELETE when json is NULL) and reads the answer;
 * returns the status, the body in *body (into c->buf; a chunked body stays chunked). */
static int http_send(conn *c, const char *json, const char **body, size_t *body_len)
{
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                     "Accept: application/json, text/event-stream\r\n%s%s%s%s"
                     "Content-Length: %zu\r\n\r\n%s",
                     json ? "POST" : "DELETE", opt_path, opt_port,
                     c->session[0] ? "Mcp-Session-Id: " : "", c->session,
                     c->session[0] ? "\r\n" : "",
                     c->session[0] ? "MCP-Protocol-Version: 2025-11-25\r\n" : "",
                     json ? strlen(json) : 0, json ? json : "");
    char *end;
    size_t need;
    long clen = -1;
    bool chunked = false;
    int status;

    if (n <= 0 || (size_t)n >= sizeof req || write_all(c->fd, req, (size_t)n) < 0)
        return -1;
    c->len = 0;
    for (;;) {
        ssize_t r;

        c->buf[c->len] = '\0';
        if ((end = strstr(c->buf, "\r\n\r\n")) != NULL) {
            char *h = strcasestr(c->buf, "\r\ncontent-length:");
            char *te = strcasestr(c->buf, "\r\ntransfer-encoding: chunked");

            if (h && h < end)
                clen = strtol(h + 17, NULL, 10);
            chunked = te && te < end;
            /* The last chunk; an empty body's comes right after the headers' CRLF CRLF. */
            if (chunked && strstr(end + 2, "\r\n0\r\n\r\n")) {
                clen = (long)(c->len - (size_t)(end + 4 - c->buf));
                break;
            }
            if (!chunked && clen < 0 && strncmp(c->buf + 9, "20", 2) != 0)
                clen = 0; /* an error without a length: nothing more to wait for */
            need = (size_t)(end + 4 - c->buf) + (size_t)(clen < 0 ? 0 : clen);
            if (clen >= 0 && c->len >= need)
                break;
        }
        if (c->len >= sizeof c->buf - 1)
            return -1;
        r = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
    }
    status = atoi(c->buf + 9);
    if (!c->session[0]) {
        char *sid = strcasestr(c->buf, "\r\nmcp-session-id:");

        if (sid && sid < end)
            sscanf(sid + 17, " %127[!-~]", c->session);
    }
    *body = end + 4;
    *body_len = (size_t)clen;
    return status;
}

static void *http_worker(void *arg)
{
    worker *w = arg;
    conn c;
    const char *body;
    size_t blen;
    char call[256];
    long id = 1;

    if (conn_open(&c) < 0 ||
        http_send(&c, "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":"
                      "{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},"
                      "\"clientInfo\":{\"name\":\"hub_bench\",\"version\":\"1\"}}}",
                  &body, &blen) != 200 ||
        !c.session[0] ||
        http_send(&c, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", &body,
                  &blen) != 202) {
        fprintf(stderr, "hub_bench: cannot open a session\n");
        w->errors++;
        return NULL;
    }
    while (now_ns() < w->deadline_ns) {
        int64_t t0 = now_ns();
        int st;

        snprintf(call, sizeof call,
                 "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"tools/call\",\"params\":"
                 "{\"name\":\"echo\",\"arguments\":{\"message\":\"bench\"}}}",
                 ++id);
        st = http_send(&c, call, &body, &blen);
        if (st != 200 || !memmem(body, blen, "\"text\":\"bench\"", 14)) {
            w->errors++;
            if (st < 0)
                break;
            continue;
        }
        record(w, now_ns() - t0);
    }
    close(c.fd);
    return NULL;
}

/* One fresh session after another: initialize, initialized, the first tools/call (which,
 * for a per-session server, starts its upstream), then DELETE. */
static void run_spawn(worker *w)
{
    const char *body;
    size_t blen;

    for (int i = 0; i < opt_spawn; i++) {
        conn c;
        int64_t t0;
        int st;

        if (conn_open(&c) < 0) {
            w->errors++;
            continue;
        }
        t0 = now_ns();
        st = http_send(&c, "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":"
                           "{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},"
                           "\"clientInfo\":{\"name\":\"hub_bench\",\"version\":\"1\"}}}",
                       &body, &blen);
        if (st != 200 || !c.session[0] ||
            http_send(&c, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", &body,
                      &blen) != 202 ||
            http_send(&c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":"
                          "{\"name\":\"echo\",\"arguments\":{\"message\":\"bench\"}}}",
                      &body, &blen) != 200 ||
            !memmem(body, blen, "bench", 5)) {
            w->errors++;
            close(c.fd);
            continue;
        }
        record(w, now_ns() - t0);
        (void)http_send(&c, NULL, &body, &blen);
        close(c.fd);
    }
}

/* ---- stdio, straight to the upstream --------------------------------------------------- */

static int read_line(int fd, char *buf, size_t size, size_t *have)
{
    for (;;) {
        char *nl = memchr(buf, '\n', *have);
        ssize_t r;

        if (nl) {
            size_t len = (size_t)(nl - buf) + 1;

            memmove(buf, buf + len, *have - len);
            *have -= len;
            return 0;
        }
        if (*have >= size)
            return -1;
        r = read(fd, buf + *have, size - *have);
        if (r <= 0)
            return -1;
        *have += (size_t)r;
    }
}

static void run_stdio(worker *w)
{
    int in[2], out[2];
    pid_t pid;
    char buf[65536];
    size_t have = 0;
    char call[256];
    long id = 1;
    static const char init[] =
        "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":"
        "\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"b\",\"version\":\"1\"}}}\n"
        "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n";

    if (pipe(in) < 0 || pipe(out) < 0 || (pid = fork()) < 0)
        exit(1);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);

        dup2(in[0], 0);
        dup2(out[1], 1);
        if (devnull >= 0)
            dup2(devnull, 2); /* its log lines are not figures */
        close(in[1]);
        close(out[0]);
        execl(opt_stdio, opt_stdio, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (write_all(in[1], init, sizeof init - 1) < 0 || read_line(out[0], buf, sizeof buf, &have) < 0)
        exit(1);
    while (now_ns() < w->deadline_ns) {
        int64_t t0 = now_ns();
        int n = snprintf(call, sizeof call,
                         "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"tools/call\",\"params\":"
                         "{\"name\":\"echo\",\"arguments\":{\"message\":\"bench\"}}}\n",
                         ++id);

        if (write_all(in[1], call, (size_t)n) < 0 || read_line(out[0], buf, sizeof buf, &have) < 0) {
            w->errors++;
            break;
        }
        record(w, now_ns() - t0);
    }
    close(in[1]);
    close(out[0]);
    waitpid(pid, NULL, 0);
}

/* ---- report ---------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    worker *ws;
    pthread_t *th;
    int64_t t0, t1, deadline;
    int64_t *all;
    long total = 0, kept = 0, errors = 0;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--http") && i + 1 < argc) {
            char *colon = strrchr(argv[++i], ':');

            if (!colon)
                return 2;
            *colon = '\0';
            opt_host = argv[i];
            opt_port = atoi(colon + 1);
        } else if (!strcmp(argv[i], "--path") && i + 1 < argc) {
            opt_path = argv[++i];
        } else if (!strcmp(argv[i], "--stdio") && i + 1 < argc) {
            opt_stdio = argv[++i];
        } else if (!strcmp(argv[i], "--sessions") && i + 1 < argc) {
            opt_sessions = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            opt_seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--spawn") && i + 1 < argc) {
            opt_spawn = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--label") && i + 1 < argc) {
            opt_label = argv[++i];
        } else {
            fprintf(stderr, "usage: hub_bench (--http HOST:PORT [--path P] [--sessions N] "
                            "[--spawn N [--label L]] | --stdio FIXTURE) [--seconds S]\n");
            return 2;
        }
    }
    if (opt_stdio)
        opt_sessions = 1;
    if ((!opt_port && !opt_stdio) || opt_sessions < 1 || opt_sessions > 1024)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    if (opt_spawn > 0) {
        worker w = {.cap = opt_spawn};

        w.lat_ns = malloc((size_t)opt_spawn * sizeof *w.lat_ns);
        t0 = now_ns();
        run_spawn(&w);
        t1 = now_ns();
        qsort(w.lat_ns, (size_t)(w.n < w.cap ? w.n : w.cap), sizeof *w.lat_ns, cmp_i64);
        printf("%-8s %-22s sessions %4d  errors %ld  initialize -> first result: p50 %7.2f ms  "
               "p90 %7.2f ms  max %7.2f ms  (%.1f sessions/s)\n",
               "spawn", opt_label ? opt_label : opt_path, opt_spawn, w.errors,
               w.n ? (double)w.lat_ns[w.n / 2] / 1e6 : 0.0,
               w.n ? (double)w.lat_ns[w.n * 9 / 10] / 1e6 : 0.0,
               w.n ? (double)w.lat_ns[w.n - 1] / 1e6 : 0.0, (double)opt_spawn / ((double)(t1 - t0) / 1e9));
        free(w.lat_ns);
        return 0;
    }
    ws = calloc((size_t)opt_sessions, sizeof *ws);
    th = calloc((size_t)opt_sessions, sizeof *th);
    t0 = now_ns();
    deadline = t0 + (int64_t)(opt_seconds * 1e9);
    for (int i = 0; i < opt_sessions; i++) {
        ws[i].cap = MAX_SAMPLES / opt_sessions;
        ws[i].lat_ns = malloc((size_t)ws[i].cap * sizeof *ws[i].lat_ns);
        ws[i].deadline_ns = deadline;
        if (opt_stdio)
            run_stdio(&ws[i]);
        else
            pthread_create(&th[i], NULL, http_worker, &ws[i]);
    }
    for (int i = 0; i < opt_sessions && !opt_stdio; i++)
        pthread_join(th[i], NULL);
    t1 = now_ns();
    for (int i = 0; i < opt_sessions; i++) {
        total += ws[i].n;
        errors += ws[i].errors;
    }
    all = malloc((size_t)(total ? total : 1) * sizeof *all);
    for (int i = 0; i < opt_sessions; i++)
        for (long k = 0; k < ws[i].n && k < ws[i].cap; k++)
            all[kept++] = ws[i].lat_ns[k];
    qsort(all, (size_t)kept, sizeof *all, cmp_i64);
    printf("%-8s %-22s sessions %4d  calls %8ld  errors %ld  %9.0f calls/s  p50 %7.1f us  p99 %7.1f us\n",
           opt_stdio ? "stdio" : "hub", opt_stdio ? "fixture direct" : opt_path, opt_sessions, total,
           errors, (double)total / ((double)(t1 - t0) / 1e9),
           kept ? (double)all[kept / 2] / 1e3 : 0.0, kept ? (double)all[kept * 99 / 100] / 1e3 : 0.0);
    for (int i = 0; i < opt_sessions; i++)
        free(ws[i].lat_ns);
    free(all);
    free(ws);
    free(th);
    return 0;
}
