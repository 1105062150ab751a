/* edge_link: the edge's link to control: one Gateway.Subscribe stream, kept open by a small
 * supervisor thread that re-subscribes with spaced backoff whenever the stream ends. The
 * edge is ready while the stream is open and control's Hello has arrived. */
#ifndef MCPHUB_EDGE_LINK_H
#define MCPHUB_EDGE_LINK_H

#include "edge_metrics.h"
#include "mcphub/v1/gateway.pb-c.h"
#include "rpc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct edge_link edge_link;

/* Every event of a ready stream, on the rpc client's polling thread: the Hello that made it
 * ready (it carries the settings), then everything after it. ev is borrowed for the call.
 * Must not block and must not call edge_link_stop or edge_link_free. */
typedef void (*edge_link_event_fn)(void *ud, const Mcphub__V1__EdgeEvent *ev);

/* A ready stream ended (control lost or restarting): whatever control pushed through it may
 * have been lost. On the polling thread, after the link left the ready state; same rules. */
typedef void (*edge_link_lost_fn)(void *ud);

typedef struct {
    rpc_client *cli;               /* borrowed: must outlive the link */
    const char *edge_id;           /* copied */
    int initial_backoff_ms;        /* first re-subscribe delay; 0 = 100 */
    int max_backoff_ms;            /* cap of the doubling delay; 0 = 2000 */
    int unreachable_warn_ms;       /* warn once when no Hello came this long; 0 = 3000 */
    edge_link_event_fn on_event;   /* may be NULL */
    edge_link_lost_fn on_lost;     /* may be NULL */
    void *ud;
    edge_metrics *metrics;         /* NULL, or where Subscribe ends are counted; borrowed:
                                    * must outlive the link */
} edge_link_opts;

/* Creates a stopped link. Never NULL (OOM aborts). */
edge_link *edge_link_new(const edge_link_opts *opts);

/* Starts the supervisor, which subscribes at once. Returns 0 or a negative errno. Once. */
int edge_link_start(edge_link *l);

/* True while the Subscribe stream is open and its Hello arrived; then copies control's id
 * (cleaned, see edge_link_clean) into buf when buf is not NULL. Never blocks on the network:
 * safe on HTTP threads. Any thread. */
bool edge_link_ready(edge_link *l, char *buf, size_t size);

/* Cancels the stream, waits until its close callback has run, stops the supervisor. Not
 * from the rpc client's polling thread (it would wait for itself). Idempotent. */
void edge_link_stop(edge_link *l);

/* Stops if needed and frees. edge_link_free(NULL) does nothing. */
void edge_link_free(edge_link *l);

/* Copies text sent by a peer into buf for logs and JSON: at most size - 1 bytes, every byte
 * outside [A-Za-z0-9._:@/+=-] replaced by '_'. */
void edge_link_clean(char *buf, size_t size, const char *text);

#endif
