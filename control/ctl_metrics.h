/* ctl_metrics: mcphub-control's Prometheus metrics. The loop keeps the counters; an optional
 * HTTP listener (--metrics-listen: libmicrohttpd on its own thread) serves GET /metrics and
 * /healthz. The HTTP thread never reads loop state: it asks the loop (an async handle) for a
 * rendered snapshot and waits for it on a condition variable, with a timeout. */
#ifndef MCPHUB_CTL_METRICS_H
#define MCPHUB_CTL_METRICS_H

#include "ctl_internal.h"

#include <stdbool.h>
#include <stdint.h>

#define CTL_METRICS_SNAPSHOT_TIMEOUT_MS 3000 /* a scrape gets 503 when the loop is this late */

typedef struct ctl_metrics ctl_metrics;

/* Creates c->metrics. When listen is neither NULL nor "" ("HOST:PORT", IPv4, localhost or
 * [IPv6]; port 0 picks a free port) it binds it and logs `listening service=metrics
 * addr=HOST:PORT`.
 * Returns 0, -EINVAL for an address it cannot read, or -EADDRNOTAVAIL when it cannot bind
 * (both logged). Loop thread, from ctl_new. */
int ctl_metrics_new(ctl *c, const char *listen);

/* Starts serving: the loop's async handle and the HTTP thread. Loop thread, from ctl_run. */
void ctl_metrics_start(ctl *c);

/* Stops serving: waiting scrapes get 503, the HTTP thread is joined and the async handle
 * closed. Idempotent. Loop thread, before the loop's last handles close. */
void ctl_metrics_stop(ctl *c);

/* Stops if needed and frees c->metrics (at once, or in its async handle's close callback
 * while the loop still runs one). From ctl_free or ctl_new's error path. */
void ctl_metrics_free(ctl *c);

/* The bound metrics port, 0 when off. */
int ctl_metrics_port(const ctl *c);

/* Counters the loop bumps; all do nothing when c->metrics is NULL. Loop thread. */

/* Monotonic nanoseconds: the start of a session's end (ctl_metrics_session_ended). */
int64_t ctl_metrics_clock(void);

/* A session was opened; era is its sess_era (a scope of stateless clients counts too). */
void ctl_metrics_session_opened(ctl *c, int era);

/* A session ended for reason (an EndReason of gateway.proto) and its end was queued to every
 * connected edge; since is ctl_metrics_clock() when its end began. */
void ctl_metrics_session_ended(ctl *c, int reason, int64_t since);

#endif
