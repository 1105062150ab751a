/* ctl: the mcphub-control daemon: one libuv loop that owns the configuration, sessions and
 * connected edges, and the gRPC services (Gateway, Admin, Health) that feed it work. */
#ifndef MCPHUB_CTL_H
#define MCPHUB_CTL_H

#include <stdint.h>

typedef struct ctl ctl;

typedef struct ctl_opts {
    const char *config_path;  /* NULL: the embedded default configuration */
    const char *listen;       /* Gateway + Health; NULL: the file's hub.listen, else default */
    const char *admin_listen; /* Admin + Health; NULL: the file's hub.adminListen, else default */
    int64_t drain_ms;         /* how long SIGTERM waits for calls to finish; 0 = 5000 */
    const char *metrics_listen; /* HTTP GET /metrics and /healthz; NULL: no such listener */
    const char *admin_token_file; /* Admin calls need "authorization: Bearer <its first
                                     line>"; NULL: Admin is open (bind it to loopback) */
} ctl_opts;

/* Loads the configuration and binds both listeners (port 0 picks a free port; the bound
 * addresses are logged). On success *out owns a new ctl. Returns 0, -EINVAL for an invalid
 * configuration (the error, naming file, line and field, is logged), or -EADDRNOTAVAIL when
 * a listener cannot bind. Call from the thread that will run ctl_run. */
int ctl_new(const ctl_opts *opts, ctl **out);

/* Serves until SIGTERM or SIGINT (or ctl_stop), then drains: the Health service turns
 * NOT_SERVING and new work is refused, in-flight calls finish within drain_ms, then every
 * session ends with a broadcast to the edges, edges' streams are closed and upstreams are
 * stopped. Returns 0. */
int ctl_run(ctl *c);

/* Asks a running ctl to shut down as on SIGTERM. Any thread. */
void ctl_stop(ctl *c);

/* Bound ports (valid after ctl_new). */
int ctl_gateway_port(const ctl *c);
int ctl_admin_port(const ctl *c);

/* Frees everything; after ctl_run returned (or instead of it). NULL does nothing. */
void ctl_free(ctl *c);

#endif
