/* hub_scale: the hub at scale and its cleanup paths, as figures (never pass/fail).
 *   --cycles S      initialize, initialized, DELETE on one keep-alive connection, then on 8
 *                   at once, S seconds each: sessions opened and ended per second.
 *   --idle N        opens N sessions (initialize + initialized, 8 connections) and holds them
 *                   idle: control's and the edge's VmRSS (/proc/PID/status) before and after;
 *                   DELETEs them all at the end.
 *   --streams       then one GET /mcp stream per idle session on the first edge (one epoll
 *                   loop, never a thread per stream): how many open, the memory they take.
 *                   --hold S keeps them open S seconds for a look at the daemons (smaps).
 *   --fanout-alt F  then replaces the settings file (--settings) with F's text, so that every
 *                   session's tools list changes and each stream gets
 *                   notifications/tools/list_changed: trigger -> each stream's event, through
 *                   control's file watch; then the first text back and SIGHUP to control.
 *   --end-streams N N sessions one after another, each with its GET stream on one edge and
 *                   its DELETE sent through the next one (--http given 2+ times): DELETE ->
 *                   the stream's end.
 *   --end-process N N sessions of a perSession server (--path), each starting its process
 *                   with a tools/call: DELETE -> that process's exit (pidfd_open + poll).
 *   --no-memory     leaves out the VmRSS lines (a run after another one: freed memory that
 *                   the daemons keep would make them meaningless).
 * HTTP/1.1 over loopback with hand-written requests, like hub_bench. Sessions speak
 * 2025-11-25, whose GET streams start with a priming event: a stream counts as open once
 * that arrived (control has attached it by then).
 *
 *   hub_scale --http HOST:PORT --path /mcp/fixture --control-pid P --edge-pid P [--cycles S]
 *             [--idle N [--streams [--hold S] [--settings FILE --fanout-alt FILE]]]
 *   hub_scale --http A --http B [--http C] --path /mcp/fixture --end-streams N
 *   hub_scale --http HOST:PORT --path /mcp/ps --control-pid P --end-process N */
#include "bench.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_EDGES 8
#define SID_MAX 64            /* session id bytes we keep (control's are 22) */
#define WORKERS 8             /* connections that open and end sessions */
#define STREAM_BUF 1024       /* per stream: response headers, then one SSE event */
#define STREAM_CONNECTING 256 /* streams being opened at once (the edge's backlog is 511) */
#define STREAM_OPEN_MS 60000  /* for all streams to open */
#define STREAM_STALL_MS 5000  /* without one more stream opened or refused: give up */
#define FANOUT_WAIT_MS 20000  /* for every stream to see the notification */
#define END_WAIT_MS 10000     /* for one stream to end, one process to exit */
#define READY_WAIT_MS 15000   /* for an edge to reconnect to control */
#define SETTLE_MS 1000        /* before reading VmRSS: let the daemons finish their work */

static const char *const initialize_json =
    "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":"
    "{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},"
    "\"clientInfo\":{\"name\":\"hub_scale\",\"version\":\"1\"}}}";
static const char *const initialized_json =
    "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}";
static const char *const call_json =
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":"
    "{\"name\":\"echo\",\"arguments\":{\"message\":\"bench\"}}}";

typedef struct {
    struct sockaddr_in sa;
    char text[64];
} edge_addr;

static edge_addr opt_edges[MAX_EDGES];
static int opt_nedges;
static const char *opt_path = "/mcp/fixture";
static pid_t opt_control_pid, opt_edge_pid;
static double opt_cycles;
static int opt_idle;
static bool opt_streams;
static const char *opt_settings, *opt_alt;
static int opt_end_streams, opt_end_process;
static int opt_hold;
static bool opt_no_memory;

static double ms(int64_t ns)
{
    return (double)ns / 1e6;
}

static void sleep_ms(int n)
{
    struct timespec ts = {n / 1000, (long)(n % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* The q-quantile (0 <= q <= 1) of sorted v; 0 when empty. */
static int64_t quantile(const int64_t *v, size_t n, double q)
{
    size_t i;

    if (n == 0)
        return 0;
    i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* VmRSS of pid in KB, or -1. */
static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static int parse_addr(const char *text, edge_addr *out)
{
    const char *colon = strrchr(text, ':');
    char host[64];

    memset(out, 0, sizeof *out);
    if (!colon || (size_t)(colon - text) >= sizeof host)
        return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    out->sa.sin_family = AF_INET;
    out->sa.sin_port = htons((uint16_t)atoi(colon + 1));
    snprintf(out->text, sizeof out->text, "%s", text);
    return inet_pton(AF_INET, host, &out->sa.sin_addr) == 1 ? 0 : -1;
}

/* ---- blocking HTTP/1.1 over one keep-alive connection --------------------------------- */

typedef struct {
    int fd;
    const edge_addr *to;
    char buf[65536];
    size_t len;
} hconn;

static int hconn_open(hconn *c, const edge_addr *to)
{
    int one = 1;

    c->to = to;
    c->len = 0;
    if ((c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    if (connect(c->fd, (const struct sockaddr *)&to->sa, sizeof to->sa) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

static void hconn_close(hconn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Writes a POST of json (or a DELETE when json is NULL) for session (NULL or "" before
 * initialize). 0, or -1 when the connection failed. */
static int hconn_request(hconn *c, const char *session, const char *json)
{
    char req[4096];
    bool has_sid = session && session[0];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "Accept: application/json, text/event-stream\r\n%s%s%s%s"
                     "Content-Length: %zu\r\n\r\n%s",
                     json ? "POST" : "DELETE", opt_path, c->to->text,
                     has_sid ? "Mcp-Session-Id: " : "", has_sid ? session : "",
                     has_sid ? "\r\n" : "", has_sid ? "MCP-Protocol-Version: 2025-11-25\r\n" : "",
                     json ? strlen(json) : 0, json ? json : "");

    if (c->fd < 0 || n <= 0 || (size_t)n >= sizeof req)
        return -1;
    return write_all(c->fd, req, (size_t)n);
}

/* Reads one whole answer. Returns the HTTP status, or -1 when the connection failed (the
 * caller reopens it). A new session's id goes to sid_out (may be NULL). */
static int hconn_response(hconn *c, char *sid_out)
{
    char *end = NULL;
    long clen = -1;
    int status;

    c->len = 0;
    for (;;) {
        ssize_t r;

        c->buf[c->len] = '\0';
        if (!end && (end = strstr(c->buf, "\r\n\r\n")) != NULL) {
            char *h = strcasestr(c->buf, "\r\ncontent-length:");
            char *te = strcasestr(c->buf, "\r\ntransfer-encoding: chunked");

            if (h && h < end)
                clen = strtol(h + 17, NULL, 10);
            else if (!(te && te < end))
                clen = 0; /* libmicrohttpd sends a length whenever it knows one */
        }
        if (end && clen >= 0 && c->len >= (size_t)(end + 4 - c->buf) + (size_t)clen)
            break;
        /* chunked (an SSE answer): its last chunk */
        if (end && clen < 0 && strstr(end + 2, "\r\n0\r\n\r\n"))
            break;
        if (c->len >= sizeof c->buf - 1)
            return -1;
        r = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
    }
    status = atoi(c->buf + 9);
    if (sid_out) {
        char *sid = strcasestr(c->buf, "\r\nmcp-session-id:");

        sid_out[0] = '\0';
        if (sid && sid < end)
            sscanf(sid + 17, " %63[!-~]", sid_out);
    }
    return status;
}

/* hconn_request, then hconn_response. */
static int hconn_send(hconn *c, const char *session, const char *json, char *sid_out)
{
    if (hconn_request(c, session, json) < 0)
        return -1;
    return hconn_response(c, sid_out);
}

/* initialize + notifications/initialized; reopens the connection once if it was closed.
 * Returns 0 with the id in sid, or -1. */
static int session_open(hconn *c, char *sid)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int st;

        if (c->fd < 0 && hconn_open(c, c->to) < 0)
            return -1;
        st = hconn_send(c, NULL, initialize_json, sid);
        if (st < 0) {
            hconn_close(c);
            continue;
        }
        if (st != 200 || !sid[0])
            return -1;
        return hconn_send(c, sid, initialized_json, NULL) == 202 ? 0 : -1;
    }
    return -1;
}

/* DELETE; 0 when the edge answered 2xx. */
static int session_delete(hconn *c, const char *sid)
{
    int st;

    if (c->fd < 0 && hconn_open(c, c->to) < 0)
        return -1;
    st = hconn_send(c, sid, NULL, NULL);
    if (st < 0)
        hconn_close(c);
    return st >= 200 && st < 300 ? 0 : -1;
}

/* Waits up to ms for the edge's GET /readyz to answer 200 (it is connected to control);
 * true when it did. */
static bool edge_ready(const edge_addr *to, int wait_ms)
{
    int64_t until = now_ns() + (int64_t)wait_ms * 1000000;
    char req[256];
    int n = snprintf(req, sizeof req,
                     "GET /readyz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", to->text);

    do {
        hconn c;
        char head[16] = "";
        size_t got = 0;
        ssize_t r = 0;

        if (hconn_open(&c, to) == 0) {
            if (write_all(c.fd, req, (size_t)n) == 0)
                while (got < 12 && (r = read(c.fd, head + got, 12 - got)) > 0)
                    got += (size_t)r;
            hconn_close(&c);
            if (got == 12 && strncmp(head + 9, "200", 3) == 0)
                return true;
        }
        sleep_ms(50);
    } while (now_ns() < until);
    return false;
}

/* ---- sessions: cycles, and idle sessions held open ------------------------------------ */

typedef struct {
    pthread_t th;
    const edge_addr *to;
    int64_t deadline;         /* cycles */
    int64_t *lat;             /* cycles: one per cycle */
    size_t n, cap;
    long errors;
    char (*sids)[SID_MAX];    /* idle: this worker's share of the ids */
    size_t first, count;      /* idle: the share */
    bool del;                 /* idle: DELETE them instead of opening */
} sworker;

static void *cycle_worker(void *arg)
{
    sworker *w = arg;
    hconn *c = malloc(sizeof *c);
    char sid[SID_MAX];

    c->fd = -1;
    c->to = w->to;
    while (now_ns() < w->deadline) {
        int64_t t0 = now_ns();

        if (session_open(c, sid) < 0 || session_delete(c, sid) < 0) {
            w->errors++;
            hconn_close(c);
            continue;
        }
        if (w->n < w->cap)
            w->lat[w->n++] = now_ns() - t0;
    }
    hconn_close(c);
    free(c);
    return NULL;
}

static void run_cycles(int conns)
{
    sworker *ws = calloc((size_t)conns, sizeof *ws);
    int64_t t0 = now_ns(), t1, *all;
    size_t total = 0, k = 0;
    long errors = 0;

    for (int i = 0; i < conns; i++) {
        ws[i].to = &opt_edges[0];
        ws[i].deadline = t0 + (int64_t)(opt_cycles * 1e9);
        ws[i].cap = 1000000;
        ws[i].lat = malloc(ws[i].cap * sizeof *ws[i].lat);
        pthread_create(&ws[i].th, NULL, cycle_worker, &ws[i]);
    }
    for (int i = 0; i < conns; i++) {
        pthread_join(ws[i].th, NULL);
        total += ws[i].n;
        errors += ws[i].errors;
    }
    t1 = now_ns();
    all = malloc((total + 1) * sizeof *all);
    for (int i = 0; i < conns; i++) {
        memcpy(all + k, ws[i].lat, ws[i].n * sizeof *all);
        k += ws[i].n;
        free(ws[i].lat);
    }
    qsort(all, total, sizeof *all, cmp_i64);
    printf("cycles   initialize+initialized+DELETE  %d conn%s  %7.0f sessions/s  p50 %6.2f ms  "
           "p99 %6.2f ms  errors %ld\n",
           conns, conns == 1 ? " " : "s", (double)total / ((double)(t1 - t0) / 1e9),
           ms(quantile(all, total, 0.5)), ms(quantile(all, total, 0.99)), errors);
    fflush(stdout);
    free(all);
    free(ws);
}

static void *idle_worker(void *arg)
{
    sworker *w = arg;
    hconn *c = malloc(sizeof *c);

    c->fd = -1;
    c->to = w->to;
    for (size_t i = w->first; i < w->first + w->count; i++) {
        if (w->del && !w->sids[i][0])
            continue; /* it never opened */
        if (w->del ? session_delete(c, w->sids[i]) < 0 : session_open(c, w->sids[i]) < 0) {
            w->errors++;
            w->sids[i][0] = '\0';
            hconn_close(c);
        }
    }
    hconn_close(c);
    free(c);
    return NULL;
}

/* Opens (or DELETEs, del) n sessions over WORKERS connections; returns the errors. */
static long sessions_batch(char (*sids)[SID_MAX], size_t n, bool del)
{
    sworker ws[WORKERS];
    long errors = 0;

    memset(ws, 0, sizeof ws);
    for (size_t i = 0; i < WORKERS; i++) {
        ws[i].to = &opt_edges[0];
        ws[i].sids = sids;
        ws[i].first = n * i / WORKERS;
        ws[i].count = n * (i + 1) / WORKERS - ws[i].first;
        ws[i].del = del;
        pthread_create(&ws[i].th, NULL, idle_worker, &ws[i]);
    }
    for (size_t i = 0; i < WORKERS; i++) {
        pthread_join(ws[i].th, NULL);
        errors += ws[i].errors;
    }
    return errors;
}

typedef struct {
    long control, edge;
} rss_pair;

static rss_pair rss_now(void)
{
    rss_pair p = {rss_kb(opt_control_pid), rss_kb(opt_edge_pid)};

    return p;
}

static void print_memory(const char *what, size_t n, const char *unit, rss_pair a, rss_pair b)
{
    double dc = (double)(b.control - a.control), de = (double)(b.edge - a.edge);

    if (opt_no_memory)
        return;
    if (n == 0 || a.control < 0 || a.edge < 0 || b.control < 0 || b.edge < 0) {
        printf("memory   %s: VmRSS not readable\n", what);
        return;
    }
    printf("memory   %-34s control %+8.1f MB %6.2f KB/%s   edge %+8.1f MB %6.2f KB/%s   "
           "total %6.2f KB/%s   (VmRSS control %.1f -> %.1f MB, edge %.1f -> %.1f MB)\n",
           what, dc / 1024, dc / (double)n, unit, de / 1024, de / (double)n, unit,
           (dc + de) / (double)n, unit, (double)a.control / 1024, (double)b.control / 1024,
           (double)a.edge / 1024, (double)b.edge / 1024);
    fflush(stdout);
}

/* ---- SSE streams: an incremental reader for an HTTP/1.1 chunked text/event-stream ------ */

enum { S_IDLE, S_CONNECTING, S_HEADERS, S_BODY, S_CLOSED };
enum { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_END, CH_END };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t ch;          /* chunk decoder state */
    bool opened;         /* its first event (2025-11-25's priming event) arrived */
    bool tried;          /* opened in the current round (open_streams) */
    int status;
    int events;          /* events that matched the marker */
    uint32_t chunk_left;
    uint16_t len;        /* bytes in buf */
    int64_t t_msg;       /* first marker event */
    int64_t t_closed;
    char sid[SID_MAX];
    char buf[STREAM_BUF];
} sstream;

static const char *marker = "list_changed";

/* One complete SSE event (or comment) of s. */
static void stream_event(sstream *s, const char *ev, size_t n, int64_t now)
{
    if (ev[0] == ':')
        return; /* ": ping" */
    if (!s->opened) {
        s->opened = true;
        return;
    }
    if (memmem(ev, n, marker, strlen(marker))) {
        if (s->events++ == 0)
            s->t_msg = now;
    }
}

/* Decoded body bytes: split into events at the blank line. */
static void stream_text(sstream *s, const char *p, size_t n, int64_t now)
{
    while (n > 0) {
        size_t take = sizeof s->buf - s->len;
        char *end;

        if (take > n)
            take = n;
        memcpy(s->buf + s->len, p, take);
        s->len = (uint16_t)(s->len + take);
        p += take;
        n -= take;
        while ((end = memmem(s->buf, s->len, "\n\n", 2)) != NULL) {
            size_t evlen = (size_t)(end - s->buf) + 2;

            stream_event(s, s->buf, evlen, now);
            memmove(s->buf, s->buf + evlen, s->len - evlen);
            s->len = (uint16_t)(s->len - evlen);
        }
        if (s->len == sizeof s->buf)
            s->len = 0; /* an event larger than we keep: not one we look for */
    }
}

static void stream_closed(sstream *s, int64_t now)
{
    if (s->state == S_CLOSED)
        return;
    s->state = S_CLOSED;
    s->t_closed = now;
}

/* Chunked transfer decoding of body bytes. */
static void stream_body(sstream *s, const char *p, size_t n, int64_t now)
{
    while (n > 0 && s->state == S_BODY) {
        char c = *p;

        switch (s->ch) {
        case CH_SIZE:
            if (isxdigit((unsigned char)c)) {
                int lc = tolower((unsigned char)c);
                int digit = isdigit(lc) ? lc - '0' : lc - 'a' + 10;

                s->chunk_left = s->chunk_left * 16 + (uint32_t)digit;
            } else {
                s->ch = c == '\r' ? CH_SIZE_LF : CH_EXT;
            }
            p++, n--;
            break;
        case CH_EXT:
            if (c == '\r')
                s->ch = CH_SIZE_LF;
            p++, n--;
            break;
        case CH_SIZE_LF:
            if (c == '\n')
                s->ch = s->chunk_left == 0 ? CH_END : CH_DATA;
            p++, n--;
            if (s->ch == CH_END)
                stream_closed(s, now); /* the last chunk: the server ended the stream */
            break;
        case CH_DATA: {
            size_t take = n < s->chunk_left ? n : s->chunk_left;

            stream_text(s, p, take, now);
            p += take;
            n -= take;
            s->chunk_left -= (uint32_t)take;
            if (s->chunk_left == 0)
                s->ch = CH_DATA_END;
            break;
        }
        case CH_DATA_END: /* the CRLF after a chunk's data */
            if (c == '\n') {
                s->ch = CH_SIZE;
                s->chunk_left = 0;
            }
            p++, n--;
            break;
        default:
            return;
        }
    }
}

/* Bytes from the socket. */
static void stream_feed(sstream *s, const char *p, size_t n, int64_t now)
{
    if (s->state == S_HEADERS) {
        size_t take = sizeof s->buf - 1 - s->len;
        char *end;
        size_t hlen;

        if (take > n)
            take = n;
        memcpy(s->buf + s->len, p, take);
        s->len = (uint16_t)(s->len + take);
        s->buf[s->len] = '\0';
        if (!(end = strstr(s->buf, "\r\n\r\n"))) {
            if (s->len == sizeof s->buf - 1)
                stream_closed(s, now);
            return;
        }
        hlen = (size_t)(end + 4 - s->buf);
        s->status = atoi(s->buf + 9);
        if (s->status != 200 || !strcasestr(s->buf, "\r\ntransfer-encoding: chunked")) {
            stream_closed(s, now);
            return;
        }
        /* the body bytes that came with the headers: from p, past what the headers took */
        p += take - (s->len - hlen);
        n -= take - (s->len - hlen);
        s->len = 0;
        s->state = S_BODY;
        s->ch = CH_SIZE;
        s->chunk_left = 0;
    }
    if (s->state == S_BODY)
        stream_body(s, p, n, now);
}

/* Reads what is there; false once the stream is closed. */
static bool stream_read(sstream *s, int64_t now)
{
    static char scratch[65536];

    for (;;) {
        ssize_t r = read(s->fd, scratch, sizeof scratch);

        if (r > 0) {
            stream_feed(s, scratch, (size_t)r, now);
            if (s->state == S_CLOSED)
                return false;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        stream_closed(s, now); /* EOF or reset */
        return false;
    }
}

static int stream_request(sstream *s, const edge_addr *to)
{
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
                     "Mcp-Session-Id: %s\r\nMCP-Protocol-Version: 2025-11-25\r\n\r\n",
                     opt_path, to->text, s->sid);

    s->state = S_HEADERS;
    s->len = 0;
    return write_all(s->fd, req, (size_t)n);
}

/* Starts a non-blocking connect for s. 0, or -1 (s is closed). */
static int stream_connect(sstream *s, const edge_addr *to, int ep, uint32_t index)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = index};

    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        stream_closed(s, now_ns());
        return -1;
    }
    s->state = S_CONNECTING;
    if (connect(s->fd, (const struct sockaddr *)&to->sa, sizeof to->sa) < 0 &&
        errno != EINPROGRESS) {
        stream_closed(s, now_ns());
        return -1;
    }
    epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    return 0;
}

/* One epoll event for s: finishes the connect and sends the GET, or reads. */
static void stream_ready(sstream *s, uint32_t events, const edge_addr *to, int ep, uint32_t index)
{
    int64_t now = now_ns();

    if (s->state == S_CONNECTING) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = index};
        int err = 0;
        socklen_t len = sizeof err;

        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || stream_request(s, to) < 0) {
            stream_closed(s, now);
            return;
        }
        epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
        return;
    }
    if (s->state != S_CLOSED)
        stream_read(s, now);
}

static void stream_drop(sstream *s, int ep)
{
    if (s->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
    }
    s->fd = -1;
}

/* Makes s ready to be opened again (same session). */
static void stream_reset(sstream *s, int ep)
{
    char sid[SID_MAX];

    stream_drop(s, ep);
    memcpy(sid, s->sid, sizeof sid);
    memset(s, 0, sizeof *s);
    memcpy(s->sid, sid, sizeof sid);
    s->fd = -1;
    s->state = S_IDLE;
}

/* ---- many streams on one edge ---------------------------------------------------------- */

typedef struct {
    sstream *v;
    size_t n;
    int ep;
    size_t next, settled; /* streams_opened's progress */
    int64_t progress_ns;
} stream_set;

/* Handles stream events until done(set) says so or until (CLOCK_MONOTONIC ns). */
static void streams_poll(stream_set *set, int64_t until, bool (*done)(stream_set *))
{
    struct epoll_event evs[512];

    while (!done(set) && now_ns() < until) {
        int n = epoll_wait(set->ep, evs, 512, 50);

        for (int i = 0; i < n; i++) {
            uint32_t k = evs[i].data.u32;
            sstream *s = &set->v[k];

            stream_ready(s, evs[i].events, &opt_edges[0], set->ep, k);
            if (s->state == S_CLOSED)
                stream_drop(s, set->ep);
        }
    }
}

/* Keeps STREAM_CONNECTING streams being opened until every stream is open or refused, or
 * nothing changed for STREAM_STALL_MS (connections a full edge leaves unanswered). */
static bool streams_opened(stream_set *set)
{
    size_t settled = 0, connecting = 0;
    int64_t now = now_ns();

    for (size_t i = 0; i < set->n; i++) {
        const sstream *s = &set->v[i];

        if (s->opened || s->state == S_CLOSED)
            settled++;
        else if (s->state != S_IDLE)
            connecting++;
    }
    while (set->next < set->n && connecting < STREAM_CONNECTING) {
        if (set->v[set->next].state == S_IDLE) {
            if (stream_connect(&set->v[set->next], &opt_edges[0], set->ep,
                               (uint32_t)set->next) < 0)
                settled++;
            else
                connecting++;
        }
        set->next++;
    }
    if (settled > set->settled || set->progress_ns == 0) {
        set->settled = settled;
        set->progress_ns = now;
    }
    return settled == set->n || now - set->progress_ns > (int64_t)STREAM_STALL_MS * 1000000;
}

static bool streams_all_got(stream_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->v[i].opened && set->v[i].state != S_CLOSED && set->v[i].events == 0)
            return false;
    return true;
}

static bool streams_never(stream_set *set)
{
    return false;
}

static void raise_nofile(size_t want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int write_file(const char *path, const char *text)
{
    char tmp[4096];
    FILE *f;

    snprintf(tmp, sizeof tmp, "%s.hub_scale", path);
    if (!(f = fopen(tmp, "w")))
        return -1;
    fputs(text, f);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path); /* one event for the watcher, never a half-written file */
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char *text;
    long n;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    text = calloc(1, (size_t)n + 1);
    if (fread(text, 1, (size_t)n, f) != (size_t)n) {
        free(text);
        text = NULL;
    }
    fclose(f);
    return text;
}

/* Rewrites the settings (file watch) or rewrites and SIGHUPs control, then times each
 * open stream's list_changed. */
static void fanout(stream_set *set, const char *text, bool sighup)
{
    size_t open = 0, got = 0, closed = 0, extra = 0;
    int64_t *lat = malloc((set->n + 1) * sizeof *lat);
    int64_t t0, closed_first = INT64_MAX, closed_last = 0;
    long rss0 = rss_kb(opt_control_pid), rss1;

    for (size_t i = 0; i < set->n; i++) {
        set->v[i].events = 0;
        open += set->v[i].opened && set->v[i].state != S_CLOSED;
    }
    t0 = now_ns();
    if (write_file(opt_settings, text) < 0) {
        printf("fanout   cannot write %s: %s\n", opt_settings, strerror(errno));
        free(lat);
        return;
    }
    if (sighup)
        kill(opt_control_pid, SIGHUP);
    streams_poll(set, t0 + (int64_t)FANOUT_WAIT_MS * 1000000, streams_all_got);
    /* a little longer: a second notification per stream would show here */
    streams_poll(set, now_ns() + 300 * 1000000LL, streams_never);
    rss1 = rss_kb(opt_control_pid);
    for (size_t i = 0; i < set->n; i++) {
        sstream *s = &set->v[i];

        if (!s->opened)
            continue;
        if (s->events > 0) {
            lat[got++] = s->t_msg - t0;
        } else if (s->state == S_CLOSED && s->t_closed >= t0) {
            closed++;
            if (s->t_closed - t0 < closed_first)
                closed_first = s->t_closed - t0;
            if (s->t_closed - t0 > closed_last)
                closed_last = s->t_closed - t0;
        }
        if (s->events > 1)
            extra++;
    }
    qsort(lat, got, sizeof *lat, cmp_i64);
    printf("fanout   %-19s streams %5zu  received %5zu  first %8.2f ms  p50 %8.2f ms  "
           "p99 %8.2f ms  last %8.2f ms  twice %zu  lost %zu  (control VmRSS %.1f -> %.1f MB)\n",
           sighup ? "SIGHUP reload" : "settings file watch", open, got,
           ms(quantile(lat, got, 0)), ms(quantile(lat, got, 0.5)),
           ms(quantile(lat, got, 0.99)), ms(quantile(lat, got, 1)), extra, open - got,
           (double)rss0 / 1024, (double)rss1 / 1024);
    if (closed > 0)
        printf("fanout   %-19s %zu streams closed by the edge instead, %.2f .. %.2f ms after "
               "the trigger\n",
               "", closed, ms(closed_first), ms(closed_last));
    fflush(stdout);
    free(lat);
}

/* Opens the streams of set: every one, or (again) only those that were open and have been
 * closed since; prints what happened. Streams left unanswered are given up (closed). Returns
 * how many are open. */
static size_t open_streams(stream_set *set, bool again)
{
    size_t tried = 0, open = 0, closed = 0, waiting = 0, by_class[6] = {0};
    int64_t t0 = now_ns(), t1;

    for (size_t i = 0; i < set->n; i++) {
        sstream *s = &set->v[i];

        bool retry = !again || (s->opened && s->state == S_CLOSED);

        if (retry)
            stream_reset(s, set->ep);
        s->tried = retry;
    }
    set->next = set->settled = 0;
    set->progress_ns = 0;
    streams_poll(set, t0 + (int64_t)STREAM_OPEN_MS * 1000000, streams_opened);
    t1 = now_ns();
    for (size_t i = 0; i < set->n; i++) {
        sstream *s = &set->v[i];

        if (!s->tried)
            continue;
        tried++;
        if (s->opened && s->state != S_CLOSED)
            open++;
        else if (s->state == S_CLOSED && s->status >= 100 && s->status < 600)
            by_class[s->status / 100]++;
        else if (s->state == S_CLOSED)
            closed++;
        else
            waiting++;
        if (!s->opened) {
            stream_drop(s, set->ep);
            s->state = S_CLOSED;
        }
    }
    printf("streams  %zu GET /mcp streams on one edge%s: %zu open in %.2f s; refused: %zu closed "
           "before an answer, %zu unanswered after %d s, %zu 4xx, %zu 5xx\n",
           tried, again ? ", reopened after the fan-out closed them" : "", open,
           (double)(t1 - t0) / 1e9, closed, waiting, STREAM_STALL_MS / 1000, by_class[4],
           by_class[5]);
    fflush(stdout);
    return open;
}

static void run_idle(void)
{
    char (*sids)[SID_MAX] = calloc((size_t)opt_idle, sizeof *sids);
    size_t n = (size_t)opt_idle, ok = 0;
    rss_pair before, idle, streaming, after;
    stream_set set = {0};
    int64_t t0, t1;
    long errors;

    sleep_ms(SETTLE_MS);
    before = rss_now();
    t0 = now_ns();
    errors = sessions_batch(sids, n, false);
    t1 = now_ns();
    printf("sessions %d idle sessions (initialize+initialized, %d connections) opened in %.2f s "
           "(%.0f/s), errors %ld\n",
           opt_idle, WORKERS, (double)(t1 - t0) / 1e9, (double)n / ((double)(t1 - t0) / 1e9),
           errors);
    fflush(stdout);
    sleep_ms(SETTLE_MS);
    idle = rss_now();
    print_memory("idle sessions", n - (size_t)errors, "session", before, idle);

    if (opt_streams) {
        size_t open;

        raise_nofile(n + 256);
        set.v = calloc(n, sizeof *set.v);
        set.ep = epoll_create1(EPOLL_CLOEXEC);
        for (size_t i = 0; i < n; i++) {
            if (sids[i][0]) {
                memcpy(set.v[set.n].sid, sids[i], SID_MAX);
                set.n++;
            }
        }
        open = open_streams(&set, false);
        sleep_ms(SETTLE_MS);
        streaming = rss_now();
        print_memory("+ one GET stream each", open, "stream", idle, streaming);
        if (opt_hold > 0) {
            printf("holding the streams open for %d s (pids: control %d, edge %d)\n", opt_hold,
                   (int)opt_control_pid, (int)opt_edge_pid);
            fflush(stdout);
            streams_poll(&set, now_ns() + (int64_t)opt_hold * 1000000000, streams_never);
        }
        if (opt_settings && opt_alt && open > 0) {
            char *a = read_file(opt_settings), *b = read_file(opt_alt);

            if (!a || !b) {
                printf("fanout   cannot read %s or %s\n", opt_settings, opt_alt);
            } else {
                size_t gone = 0;

                fanout(&set, b, false);
                for (size_t i = 0; i < set.n; i++)
                    gone += set.v[i].opened && set.v[i].state == S_CLOSED;
                if (gone > 0 && !edge_ready(&opt_edges[0], READY_WAIT_MS))
                    printf("streams  the edge is not ready again after %d s\n",
                           READY_WAIT_MS / 1000);
                if (gone == 0 || open_streams(&set, true) > 0)
                    fanout(&set, a, true);
            }
            free(a);
            free(b);
        }
        for (size_t i = 0; i < set.n; i++)
            stream_drop(&set.v[i], set.ep);
        close(set.ep);
        free(set.v);
    }

    if (!edge_ready(&opt_edges[0], READY_WAIT_MS))
        printf("sessions the edge is not ready after %d s\n", READY_WAIT_MS / 1000);
    t0 = now_ns();
    errors = sessions_batch(sids, n, true);
    t1 = now_ns();
    sleep_ms(SETTLE_MS);
    after = rss_now();
    for (size_t i = 0; i < n; i++)
        ok += sids[i][0] != '\0';
    printf("sessions %zu DELETEd in %.2f s (%.0f/s), errors %ld\n", ok, (double)(t1 - t0) / 1e9,
           (double)ok / ((double)(t1 - t0) / 1e9), errors);
    if (!opt_no_memory)
        printf("memory   after the DELETEs: VmRSS control %.1f MB, edge %.1f MB\n",
               (double)after.control / 1024, (double)after.edge / 1024);
    fflush(stdout);
    free(sids);
}

/* ---- cleanup: DELETE through one edge -> the stream on another ends -------------------- */

/* Opens s (blocking connect, then non-blocking reads) on to and waits for its first event. */
static int stream_open_one(sstream *s, const edge_addr *to)
{
    int64_t until = now_ns() + (int64_t)END_WAIT_MS * 1000000;
    int fl;

    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0 || connect(s->fd, (const struct sockaddr *)&to->sa, sizeof to->sa) < 0 ||
        stream_request(s, to) < 0)
        return -1;
    fl = fcntl(s->fd, F_GETFL);
    fcntl(s->fd, F_SETFL, fl | O_NONBLOCK);
    while (!s->opened && s->state != S_CLOSED && now_ns() < until) {
        struct pollfd p = {s->fd, POLLIN, 0};

        if (poll(&p, 1, 100) > 0)
            stream_read(s, now_ns());
    }
    return s->opened && s->state != S_CLOSED ? 0 : -1;
}

static void print_dist(const char *what, int64_t *v, size_t n, long errors)
{
    qsort(v, n, sizeof *v, cmp_i64);
    printf("cleanup  %-44s n %3zu  p50 %7.2f ms  p90 %7.2f ms  max %7.2f ms  errors %ld\n", what,
           n, ms(quantile(v, n, 0.5)), ms(quantile(v, n, 0.9)),
           ms(quantile(v, n, 1)), errors);
}

/* Sends DELETE for sid on c and waits, up to END_WAIT_MS, both for its answer and for
 * ended(ud) to report (with a CLOCK_MONOTONIC time, 0 = not yet) that what fd watches has
 * ended, whichever comes first. Returns 0 with both durations from the DELETE's start. */
static int delete_and_watch(hconn *c, const char *sid, int fd, int64_t (*ended)(void *ud),
                            void *ud, int64_t *answer_ns, int64_t *end_ns)
{
    int64_t t0, until, t_end = 0;
    bool answered = false;

    if (c->fd < 0 && hconn_open(c, c->to) < 0)
        return -1;
    t0 = now_ns();
    until = t0 + (int64_t)END_WAIT_MS * 1000000;
    if (hconn_request(c, sid, NULL) < 0) {
        hconn_close(c);
        return -1;
    }
    while ((!answered || !t_end) && now_ns() < until) {
        struct pollfd p[2] = {{answered ? -1 : c->fd, POLLIN, 0}, {t_end ? -1 : fd, POLLIN, 0}};

        if (poll(p, 2, 100) <= 0)
            continue;
        if (p[0].revents) {
            int st = hconn_response(c, NULL);

            *answer_ns = now_ns() - t0;
            answered = true;
            if (st < 200 || st >= 300) {
                if (st < 0)
                    hconn_close(c);
                return -1;
            }
        }
        if (p[1].revents && (t_end = ended(ud)) != 0)
            *end_ns = t_end - t0;
    }
    return answered && t_end ? 0 : -1;
}

static int64_t stream_ended(void *ud)
{
    sstream *s = ud;

    stream_read(s, now_ns());
    return s->state == S_CLOSED ? s->t_closed : 0;
}

static void run_end_streams(void)
{
    size_t n = (size_t)opt_end_streams, got = 0;
    int64_t *lat = calloc(n + 1, sizeof *lat), *del = calloc(n + 1, sizeof *del);
    hconn *conns = calloc((size_t)opt_nedges, sizeof *conns);
    long errors = 0;

    for (int e = 0; e < opt_nedges; e++) {
        conns[e].fd = -1;
        conns[e].to = &opt_edges[e];
    }
    for (size_t i = 0; i < n; i++) {
        int a = (int)(i % (size_t)opt_nedges), b = (a + 1) % opt_nedges;
        sstream *s = calloc(1, sizeof *s);

        s->fd = -1;
        if (session_open(&conns[a], s->sid) < 0 || stream_open_one(s, &opt_edges[a]) < 0 ||
            delete_and_watch(&conns[b], s->sid, s->fd, stream_ended, s, &del[got], &lat[got]) < 0)
            errors++;
        else
            got++;
        if (s->fd >= 0)
            close(s->fd);
        free(s);
    }
    for (int e = 0; e < opt_nedges; e++)
        hconn_close(&conns[e]);
    print_dist("DELETE via edge B: its answer", del, got, 0);
    print_dist("DELETE via edge B -> GET stream on A ends", lat, got, errors);
    fflush(stdout);
    free(conns);
    free(lat);
    free(del);
}

/* ---- cleanup: DELETE -> the session's own upstream process exits ------------------------ */

/* The children of control that run mcphub-fixture, into v (at most cap); returns how many. */
static size_t fixture_children(pid_t *v, size_t cap)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    size_t n = 0;

    if (!d)
        return 0;
    while ((de = readdir(d)) && n < cap) {
        char path[300], text[512], *rp;
        int ppid;
        FILE *f;

        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        if (!(f = fopen(path, "r")))
            continue;
        text[0] = '\0';
        if (!fgets(text, sizeof text, f))
            text[0] = '\0';
        fclose(f);
        /* "pid (comm) S ppid ...": comm may hold spaces and parentheses */
        if (!(rp = strrchr(text, ')')) || sscanf(rp + 1, " %*c %d", &ppid) != 1 ||
            ppid != opt_control_pid || !strstr(text, "(mcphub-fixture)"))
            continue;
        v[n++] = (pid_t)atoi(de->d_name);
    }
    closedir(d);
    return n;
}

static int64_t process_ended(void *ud)
{
    return now_ns(); /* its pidfd is readable: the process exited */
}

static void run_end_process(void)
{
    size_t n = (size_t)opt_end_process, got = 0;
    int64_t *lat = calloc(n + 1, sizeof *lat), *del = calloc(n + 1, sizeof *del);
    hconn *c = calloc(1, sizeof *c);
    long errors = 0, unknown = 0;

    c->fd = -1;
    c->to = &opt_edges[0];
    for (size_t i = 0; i < n; i++) {
        pid_t before[256], after[256], pid = 0;
        size_t nb, na, fresh = 0;
        char sid[SID_MAX];
        int pidfd;

        nb = fixture_children(before, 256);
        if (session_open(c, sid) < 0 || hconn_send(c, sid, call_json, NULL) != 200) {
            errors++;
            hconn_close(c);
            continue;
        }
        /* the process the call started: control's one new fixture child */
        na = fixture_children(after, 256);
        for (size_t k = 0; k < na; k++) {
            bool old = false;

            for (size_t j = 0; j < nb && !old; j++)
                old = after[k] == before[j];
            if (!old) {
                pid = after[k];
                fresh++;
            }
        }
        if (fresh != 1 || (pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) < 0) {
            unknown++;
            (void)session_delete(c, sid);
            continue;
        }
        if (delete_and_watch(c, sid, pidfd, process_ended, NULL, &del[got], &lat[got]) < 0)
            errors++;
        else
            got++;
        close(pidfd);
    }
    hconn_close(c);
    print_dist("DELETE: its answer", del, got, 0);
    print_dist("DELETE -> the session's process exits", lat, got, errors + unknown);
    if (unknown)
        printf("cleanup  (%ld sessions whose process could not be told apart)\n", unknown);
    fflush(stdout);
    free(c);
    free(lat);
    free(del);
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: hub_scale --http HOST:PORT [--http HOST:PORT ...] [--path P]\n"
            "         [--control-pid P] [--edge-pid P] [--cycles S]\n"
            "         [--idle N [--streams [--hold S] [--settings FILE --fanout-alt FILE]]]\n"
            "         [--no-memory] [--end-streams N] [--end-process N]\n");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (!strcmp(a, "--streams")) {
            opt_streams = true;
            continue;
        }
        if (!strcmp(a, "--no-memory")) {
            opt_no_memory = true;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--http")) {
            if (opt_nedges == MAX_EDGES || parse_addr(v, &opt_edges[opt_nedges]) < 0) {
                usage();
                return 2;
            }
            opt_nedges++;
        } else if (!strcmp(a, "--path")) {
            opt_path = v;
        } else if (!strcmp(a, "--control-pid")) {
            opt_control_pid = (pid_t)atoi(v);
        } else if (!strcmp(a, "--edge-pid")) {
            opt_edge_pid = (pid_t)atoi(v);
        } else if (!strcmp(a, "--cycles")) {
            opt_cycles = atof(v);
        } else if (!strcmp(a, "--idle")) {
            opt_idle = atoi(v);
        } else if (!strcmp(a, "--settings")) {
            opt_settings = v;
        } else if (!strcmp(a, "--fanout-alt")) {
            opt_alt = v;
        } else if (!strcmp(a, "--end-streams")) {
            opt_end_streams = atoi(v);
        } else if (!strcmp(a, "--hold")) {
            opt_hold = atoi(v);
        } else if (!strcmp(a, "--end-process")) {
            opt_end_process = atoi(v);
        } else {
            usage();
            return 2;
        }
    }
    /* (a pid of 0 would make kill() signal our own process group) */
    if (opt_nedges == 0 || opt_idle < 0 || opt_end_streams < 0 || opt_end_process < 0 ||
        (opt_end_streams > 0 && opt_nedges < 2) || opt_control_pid < 0 ||
        ((opt_end_process > 0 || opt_alt) && opt_control_pid == 0) || (opt_alt && !opt_settings)) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (opt_cycles > 0) {
        run_cycles(1);
        run_cycles(WORKERS);
    }
    if (opt_idle > 0)
        run_idle();
    if (opt_end_streams > 0)
        run_end_streams();
    if (opt_end_process > 0)
        run_end_process();
    return 0;
}
