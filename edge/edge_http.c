/* edge_http: libmicrohttpd daemon, route table dispatch, JSON responses and the registry of
 * parked connections (see edge_http.h). We bind the listening socket ourselves so that bind
 * errors come back as precise errno values and the bound port is known. */
#include "edge_http.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HTTP_DEFAULT_MAX_CONNECTIONS 4096u
#define HTTP_CONNECTION_MEMORY (16u * 1024u) /* request line + headers + buffered body chunk;
                                             * held by every open stream */
#define HTTP_LISTEN_BACKLOG 511
#define HTTP_LOG_BURST 10 /* libmicrohttpd lines per second before we start dropping */

struct edge_http {
    struct MHD_Daemon *mhd;
    int fd;        /* our listening socket; closed by us after MHD_stop_daemon */
    bool quiesced; /* libmicrohttpd gave the socket back: it will not close it */
    int port;
    const edge_http_route *routes;
    size_t nroutes;
    void *ud;

    pthread_mutex_t mu; /* guards the fields below */
    edge_http_parked *parked;
    size_t nparked;
    bool stopping;

    pthread_mutex_t log_mu; /* rate limit of libmicrohttpd's own messages */
    int64_t log_window_ms;
    int log_lines;
    int log_dropped;
};

static const struct {
    const char *name;
    unsigned bit;
} http_methods[] = {
    {"GET", EDGE_HTTP_GET},         {"HEAD", EDGE_HTTP_HEAD},       {"POST", EDGE_HTTP_POST},
    {"PUT", EDGE_HTTP_PUT},         {"DELETE", EDGE_HTTP_DELETE},   {"OPTIONS", EDGE_HTTP_OPTIONS},
    {"PATCH", EDGE_HTTP_PATCH},
};

static int64_t http_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static unsigned http_method_bit(const char *method)
{
    for (size_t i = 0; i < sizeof http_methods / sizeof http_methods[0]; i++)
        if (strcmp(method, http_methods[i].name) == 0)
            return http_methods[i].bit;
    return 0;
}

/* Writes "GET, HEAD" style text for a methods mask. */
static void http_allow_text(unsigned methods, char *buf, size_t size)
{
    size_t n = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < sizeof http_methods / sizeof http_methods[0]; i++) {
        int w;

        if (!(methods & http_methods[i].bit))
            continue;
        w = snprintf(buf + n, size - n, "%s%s", n ? ", " : "", http_methods[i].name);
        if (w < 0 || (size_t)w >= size - n)
            return;
        n += (size_t)w;
    }
}

int edge_http_parse_addr(const char *text, struct sockaddr_in *out)
{
    char host[INET_ADDRSTRLEN + 16];
    const char *colon;
    char *end;
    unsigned long port;
    size_t hlen;

    memset(out, 0, sizeof *out);
    if (!text || !(colon = strrchr(text, ':')))
        return -EINVAL;
    hlen = (size_t)(colon - text);
    if (hlen == 0 || hlen >= sizeof host)
        return -EINVAL;
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    if (colon[1] < '0' || colon[1] > '9')
        return -EINVAL;
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno || *end != '\0' || port > 65535)
        return -EINVAL;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1) {
        memset(out, 0, sizeof *out);
        return -EINVAL;
    }
    return 0;
}

/* ---- libmicrohttpd callbacks ---------------------------------------------------------- */

static void http_release_nothing(edge_http_state *st)
{
}

/* Marks a request without a body whose headers were seen: it is answered on libmicrohttpd's
 * next (final) call. Answering on the first call would make libmicrohttpd drop keep-alive. */
static edge_http_state http_waiting = {http_release_nothing};

/* Whether the client announced a request body. */
static bool http_has_body(struct MHD_Connection *conn)
{
    const char *len = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_CONTENT_LENGTH);

    if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return true;
    return len && strcmp(len, "0") != 0;
}

static enum MHD_Result http_access(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version,
                                   const char *upload_data, size_t *upload_data_size,
                                   void **req_cls)
{
    edge_http *h = cls;
    const edge_http_route *route = NULL;
    const char *rest = "";
    unsigned bit = http_method_bit(method);
    edge_http_req req;

    if (*req_cls == &http_waiting) {
        *req_cls = NULL;
    } else if (!*req_cls && !http_has_body(conn)) {
        *req_cls = &http_waiting;
        return MHD_YES;
    }
    for (size_t i = 0; i < h->nroutes && !route; i++) {
        const edge_http_route *r = &h->routes[i];
        size_t len = strlen(r->path);

        if (strcmp(url, r->path) == 0) {
            route = r;
        } else if (r->prefix && strncmp(url, r->path, len) == 0 && url[len] == '/') {
            route = r;
            rest = url + len;
        }
    }
    /* With a body, errors are answered on the first call, before the body is read:
     * libmicrohttpd then closes the connection instead of reading an upload nobody wants. */
    if (!route)
        return edge_http_reply_error(conn, MHD_HTTP_NOT_FOUND, "not found", NULL);
    if (route->methods != EDGE_HTTP_ANY && !(bit & route->methods)) {
        char allow[64];
        const char *headers[] = {MHD_HTTP_HEADER_ALLOW, allow, NULL};

        http_allow_text(route->methods, allow, sizeof allow);
        return edge_http_reply_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed",
                                     headers);
    }
    req.http = h;
    req.conn = conn;
    req.method = method;
    req.method_bit = bit;
    req.has_body = http_has_body(conn);
    req.path = url;
    req.rest = rest;
    req.upload_data = upload_data;
    req.upload_data_size = upload_data_size;
    req.req_cls = req_cls;
    return route->fn(h->ud, &req);
}

static void http_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                           enum MHD_RequestTerminationCode toe)
{
    edge_http_state *st = *req_cls;

    if (!st)
        return;
    *req_cls = NULL;
    st->release(st);
}

/* libmicrohttpd's own error messages, one log line each, at most HTTP_LOG_BURST a second
 * (a flood of broken clients must not flood the log). */
__attribute__((format(printf, 2, 0))) static void http_mhd_log(void *cls, const char *fmt,
                                                                va_list ap)
{
    edge_http *h = cls;
    char text[256];
    int64_t now = http_now_ms();
    int dropped = 0;
    size_t n;

    if (strstr(fmt, "no longer available") || strstr(fmt, "Failed to send")) {
        /* A client that left (every SSE stream ends that way): not worth a warning. */
        if (log_current_level >= LOG_DEBUG) {
            vsnprintf(text, sizeof text, fmt, ap);
            for (n = 0; text[n]; n++)
                if (text[n] == '"' || text[n] == '\n' || text[n] == '\r')
                    text[n] = text[n] == '"' ? '\'' : ' ';
            log_debug("libmicrohttpd", "detail=\"%s\"", text);
        }
        return;
    }
    pthread_mutex_lock(&h->log_mu);
    if (now - h->log_window_ms >= 1000) {
        dropped = h->log_dropped;
        h->log_window_ms = now;
        h->log_lines = 0;
        h->log_dropped = 0;
    }
    if (h->log_lines >= HTTP_LOG_BURST) {
        h->log_dropped++;
        pthread_mutex_unlock(&h->log_mu);
        return;
    }
    h->log_lines++;
    pthread_mutex_unlock(&h->log_mu);

    vsnprintf(text, sizeof text, fmt, ap);
    for (n = 0; text[n]; n++)
        if (text[n] == '"' || text[n] == '\n' || text[n] == '\r')
            text[n] = text[n] == '"' ? '\'' : ' ';
    while (n > 0 && text[n - 1] == ' ')
        text[--n] = '\0';
    log_warn("libmicrohttpd", "detail=\"%s\" dropped_before=%d", text, dropped);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static int http_listen(const struct sockaddr_in *addr, int *fd_out, int *port_out)
{
    struct sockaddr_in bound;
    socklen_t len = sizeof bound;
    int one = 1;
    int fd;
    int rc = 0;

    *fd_out = -1;
    *port_out = 0;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (const struct sockaddr *)addr, sizeof *addr) < 0 ||
        listen(fd, HTTP_LISTEN_BACKLOG) < 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &len) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    *fd_out = fd;
    *port_out = ntohs(bound.sin_port);
    return 0;
}

int edge_http_new(const edge_http_opts *opts, edge_http **out)
{
    edge_http *h = calloc(1, sizeof *h);
    unsigned max_conn = opts->max_connections ? opts->max_connections
                                              : HTTP_DEFAULT_MAX_CONNECTIONS;
    unsigned timeout = opts->connection_timeout_s ? opts->connection_timeout_s
                                                  : EDGE_HTTP_DEFAULT_TIMEOUT_S;
    int rc;

    *out = NULL;
    if (!h)
        abort();
    h->fd = -1;
    h->routes = opts->routes;
    h->nroutes = opts->nroutes;
    h->ud = opts->ud;
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->log_mu, NULL);
    if ((rc = http_listen(&opts->addr, &h->fd, &h->port)) < 0)
        goto out;
    h->mhd = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL,
        NULL, http_access, h,
        /* first, so that libmicrohttpd never writes to stderr by itself */
        MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, h,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->fd,
        MHD_OPTION_CONNECTION_LIMIT, max_conn,
        MHD_OPTION_CONNECTION_TIMEOUT, timeout,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, http_completed, h,
        MHD_OPTION_END);
    if (!h->mhd) {
        rc = -EIO;
        goto out;
    }
    *out = h;
    h = NULL;
out:
    if (h) {
        if (h->fd >= 0)
            close(h->fd);
        pthread_mutex_destroy(&h->log_mu);
        pthread_mutex_destroy(&h->mu);
        free(h);
    }
    return rc;
}

int edge_http_port(const edge_http *h)
{
    return h->port;
}

void edge_http_quiesce(edge_http *h)
{
    pthread_mutex_lock(&h->mu);
    if (!h->quiesced) {
        /* libmicrohttpd hands the socket back and will no longer close it itself. */
        if (MHD_quiesce_daemon(h->mhd) != MHD_INVALID_SOCKET)
            h->quiesced = true;
        else
            log_warn("http quiesce failed", "port=%d", h->port);
    }
    pthread_mutex_unlock(&h->mu);
}

static void http_unlink(edge_http *h, edge_http_parked *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        h->parked = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    p->linked = false;
    h->nparked--;
}

void edge_http_free(edge_http *h)
{
    size_t resumed = 0;

    if (!h)
        return;
    edge_http_quiesce(h);
    /* libmicrohttpd forbids stopping with suspended connections. */
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    while (h->parked) {
        edge_http_parked *p = h->parked;

        http_unlink(h, p);
        MHD_resume_connection(p->conn);
        resumed++;
    }
    pthread_mutex_unlock(&h->mu);
    if (resumed)
        log_debug("http resumed parked requests", "count=%zu", resumed);
    MHD_stop_daemon(h->mhd);
    if (h->quiesced)
        close(h->fd);
    pthread_mutex_destroy(&h->log_mu);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* ---- parking -------------------------------------------------------------------------- */

int edge_http_park(edge_http *h, edge_http_parked *p, struct MHD_Connection *conn)
{
    int rc = 0;

    pthread_mutex_lock(&h->mu);
    if (h->stopping) {
        rc = -ECANCELED;
    } else {
        MHD_suspend_connection(conn);
        p->conn = conn;
        p->prev = NULL;
        p->next = h->parked;
        if (h->parked)
            h->parked->prev = p;
        h->parked = p;
        p->linked = true;
        h->nparked++;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void edge_http_unpark(edge_http *h, edge_http_parked *p)
{
    pthread_mutex_lock(&h->mu);
    if (p->linked) {
        http_unlink(h, p);
        MHD_resume_connection(p->conn);
    }
    pthread_mutex_unlock(&h->mu);
}

/* conn's socket, or -1. */
static int conn_fd(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

    return ci ? ci->connect_fd : -1;
}

void edge_http_disconnect(struct MHD_Connection *conn)
{
    int fd = conn_fd(conn);

    /* The socket stays open (libmicrohttpd closes it): the daemon's next poll sees it hung
     * up and drops the connection, even one stuck writing to a client that reads nothing. */
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

bool edge_http_peer_gone(struct MHD_Connection *conn)
{
    struct pollfd p = {.fd = conn_fd(conn), .events = POLLRDHUP};

    return p.fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* ---- responses ------------------------------------------------------------------------ */

/* Adds a NULL-terminated list of name, value pairs (NULL adds none). 0 or -ENOMEM. */
static int http_add_headers(struct MHD_Response *resp, const char *const *headers)
{
    for (; headers && headers[0] && headers[1]; headers += 2)
        if (MHD_add_response_header(resp, headers[0], headers[1]) != MHD_YES)
            return -ENOMEM;
    return 0;
}

enum MHD_Result edge_http_reply(struct MHD_Connection *conn, unsigned status,
                                const char *content_type, const char *body, size_t len,
                                const char *const *headers)
{
    const char *const base[] = {MHD_HTTP_HEADER_CACHE_CONTROL, "no-store",
                                MHD_HTTP_HEADER_CONTENT_TYPE, content_type, NULL};
    struct MHD_Response *resp;
    enum MHD_Result rc = MHD_NO;

    resp = MHD_create_response_from_buffer(len, (void *)(len ? body : ""),
                                           MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (http_add_headers(resp, base) < 0 || http_add_headers(resp, headers) < 0)
        goto out;
    rc = MHD_queue_response(conn, status, resp);
out:
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result edge_http_reply_json(struct MHD_Connection *conn, unsigned status,
                                     const char *json, const char *const *headers)
{
    return edge_http_reply(conn, status, "application/json", json, strlen(json), headers);
}

enum MHD_Result edge_http_reply_error(struct MHD_Connection *conn, unsigned status,
                                      const char *message, const char *const *headers)
{
    char body[256];

    snprintf(body, sizeof body, "{\"error\":\"%s\"}", message);
    return edge_http_reply_json(conn, status, body, headers);
}
