/* hub_bench: tools/call latency and throughput through the hub's Streamable HTTP endpoint,
 * and the same call made directly to an upstream over stdio, so the hub's own cost shows.
 * A benchmark: prints figures, never fails on them.
 *
 *   hub_bench --http 127.0.0.1:PORT --path /mcp/fixture --sessions N --seconds S
 *   hub_bench --stdio /path/to/mcphub-fixture --seconds S
 *
 * Each session is one thread with one keep-alive connection that initializes, then calls
 * the `echo` tool back to back. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
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

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

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

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Sends a POST and reads the answer; returns the status, body in *body (into c->buf). */
static int http_post(conn *c, const char *json, const char **body, size_t *body_len)
{
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                     "Accept: application/json, text/event-stream\r\n%s%s%s%s"
                     "Content-Length: %zu\r\n\r\n%s",
                     opt_path, opt_port, c->session[0] ? "Mcp-Session-Id: " : "", c->session,
                     c->session[0] ? "\r\n" : "",
                     c->session[0] ? "MCP-Protocol-Version: 2025-11-25\r\n" : "", strlen(json), json);
    char *end;
    size_t need;
    long clen = -1;
    int status;

    if (n <= 0 || (size_t)n >= sizeof req || write_all(c->fd, req, (size_t)n) < 0)
        return -1;
    c->len = 0;
    for (;;) {
        ssize_t r;

        c->buf[c->len] = '\0';
        if ((end = strstr(c->buf, "\r\n\r\n")) != NULL) {
            char *h = strcasestr(c->buf, "\r\ncontent-length:");

            if (h && h < end)
                clen = strtol(h + 17, NULL, 10);
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
        http_post(&c, "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":"
                      "{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},"
                      "\"clientInfo\":{\"name\":\"hub_bench\",\"version\":\"1\"}}}",
                  &body, &blen) != 200 ||
        !c.session[0] ||
        http_post(&c, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", &body,
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
        st = http_post(&c, call, &body, &blen);
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

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

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
        } else {
            fprintf(stderr, "usage: hub_bench (--http HOST:PORT [--path P] [--sessions N] | "
                            "--stdio FIXTURE) [--seconds S]\n");
            return 2;
        }
    }
    if (opt_stdio)
        opt_sessions = 1;
    if ((!opt_port && !opt_stdio) || opt_sessions < 1 || opt_sessions > 1024)
        return 2;
    signal(SIGPIPE, SIG_IGN);
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
