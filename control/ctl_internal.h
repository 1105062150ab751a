/* ctl_internal: the control daemon's state, shared by its modules (ctl.c, ctl_gateway.c,
 * ctl_admin.c). Everything here belongs to the loop thread unless a comment says otherwise. */
#ifndef MCPHUB_CTL_INTERNAL_H
#define MCPHUB_CTL_INTERNAL_H

#include "cfg.h"
#include "ctl.h"
#include "rpc.h"
#include "rpc_health.h"
#include "seal.h"
#include "sess.h"

#include <pthread.h>
#include <stdbool.h>
#include <uv.h>

#define CTL_ID_MAX 32            /* control ids */
#define CTL_MAX_EDGES 1024
#define CTL_EDGE_ID_MAX 128

typedef struct ctl_edge ctl_edge;
struct ctl_edge {
    ctl *c;
    char id[CTL_EDGE_ID_MAX];
    rpc_call *call;          /* its Subscribe stream; NULL once completed */
    uint64_t seq;            /* last event sequence number sent */
    int64_t connected_ms;
    bool gone;               /* its stream failed: nothing more is sent; dropped on a later turn */
    ctl_edge *next;
};

/* Work a gRPC handler hands to the loop. */
typedef struct ctl_work ctl_work;
typedef void (*ctl_work_fn)(ctl *c, rpc_call *call, void *arg);
struct ctl_work {
    ctl_work_fn fn;
    rpc_call *call;
    void *arg;
    ctl_work *next;
};

typedef enum {
    CTL_RUNNING = 0,
    CTL_DRAINING,  /* no new sessions or requests; running calls finish (drain_ms at most) */
    CTL_CLOSING,   /* sessions ended and broadcast, edge streams closed, upstreams stopping */
    CTL_STOPPING,  /* servers shut down; waiting for the last calls and upstreams */
} ctl_state;

struct ctl {
    uv_loop_t loop;
    uv_async_t wake;        /* posted by gRPC threads (work) and ctl_stop */
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    uv_timer_t idle_timer;  /* ends sessions idle past hub.sessionIdleTimeout */

    pthread_mutex_t work_mu; /* guards work_head/work_tail/stop_requested */
    ctl_work *work_head, *work_tail;
    bool stop_requested;

    ctl_state state;
    int64_t drain_deadline_ms;
    int64_t close_deadline_ms;
    int64_t drain_ms;
    int64_t started_ms;
    char control_id[CTL_ID_MAX];
    char *config_path;      /* NULL: embedded default */
    char admin_token[256];  /* "" when Admin needs no token (read once at start; any thread) */
    struct ctl_admin_route {
        ctl *c;
        ctl_work_fn fn;
    } admin_routes[32];     /* what each Admin method runs (ctl_admin.c) */
    size_t n_admin_routes;
    cfg *cfg;
    uint64_t config_version;

    rpc_server *gateway;
    rpc_server *admin;
    rpc_health *health;
    struct rpc_reflection *refl_gateway, *refl_admin; /* server reflection, per listener */
    int gateway_port, admin_port;

    sess_table *sessions;
    seal_key seal;               /* seals requestState tokens (ctl_mcp.c); new per process */
    uint64_t park_serial;        /* ids of requests parked for the client's input */
    ctl_edge *edges;
    size_t n_edges;

    /* MCP (ctl_mcp.c): running client requests, and each server's last known lists,
     * indexed like cfg->servers (NULL = unknown): [0] tools, [1] prompts, [2] resources. */
    struct mcp_rq *running;
    uint64_t rq_serial;
    struct mcp_pending *pending; /* upstream requests forwarded to clients */
    uint64_t pending_serial;
    struct mcp_sub *subs;        /* resource subscriptions of sessions */
    struct ctl_up **ups;         /* shared instances, indexed like cfg->servers (ctl_up.c) */
    struct ctl_up *retired;      /* instances a reload removed, until they have stopped */
    struct ctl_up *warm_pool;    /* hub.warmPerSession instances no session took yet */
    json_t **lists[3];
    json_t **templates;

    /* live configuration (ctl_reload.c) */
    uv_fs_event_t watch;      /* the settings file's directory: editors replace files */
    uv_timer_t reload_timer;  /* one reload per burst of file events */
    uv_signal_t sighup;
    bool reload_on;           /* the three handles above are initialized */
    uint64_t reloads, reload_failures;

    /* counters read by Admin.GetStats (loop thread) */
    uint64_t rpc_calls;
    uint64_t broadcasts;

    struct ctl_metrics *metrics; /* Prometheus counters and --metrics-listen (ctl_metrics.c) */
};

/* Hands fn(c, call, arg) to the loop thread. Any thread (gRPC handlers). */
void ctl_post(ctl *c, ctl_work_fn fn, rpc_call *call, void *arg);

/* Registers the Gateway methods on c->gateway. */
int ctl_gateway_register(ctl *c);
/* Registers the Admin methods on c->admin. */
int ctl_admin_register(ctl *c);

/* Registers Admin method `method` (unary): the call is checked against the admin token on
 * its gRPC thread, then fn runs on the loop. */
int ctl_admin_add(ctl *c, const char *method, ctl_work_fn fn);

/* The Admin calls that edit the configuration (ctl_admin_edit.c). */
int ctl_admin_edit_register(ctl *c);

/* Fills info (strings borrowed from the cfg) for server i. */
struct Mcphub__V1__ServerInfo;
void ctl_admin_server_info(ctl *c, size_t i, struct Mcphub__V1__ServerInfo *info);

/* Loop thread: sends a stream_message event to the edge called edge_id. Returns 0 or
 * -ENOTCONN when that edge is not connected. */
int ctl_edge_send_message(ctl *c, const char *edge_id, const char *session_id,
                          const char *stream_id, const char *event_id, const char *json);
bool ctl_edge_connected(ctl *c, const char *edge_id);

/* Loop thread: ends every session (broadcasting each end) and closes every edge stream. */
void ctl_gateway_drain(ctl *c);
/* Loop thread: ends the sessions idle for hub.sessionIdleTimeout: no call running, no
 * stream open, no request for that long. */
void ctl_gateway_expire_idle(ctl *c);

/* Loop thread, after a reload: ends the sessions whose bearer key was revoked, disabled or
 * lost the right to their route; tells every edge the new settings (ConfigChanged). */
void ctl_gateway_end_revoked(ctl *c);

/* Loop thread: ends session id (an EndReason of gateway.proto says why) as a client DELETE
 * would. Returns false when there is no such session. */
bool ctl_gateway_end_session(ctl *c, const char *id, int reason);
void ctl_gateway_config_changed(ctl *c);

/* Loop thread: watches the settings file and reloads it on change or SIGHUP (ctl_reload.c).
 * ctl_reload_start does nothing for the embedded default configuration. ctl_reload_now
 * returns 0, -ECANCELED while draining, or the load error (the last good configuration stays
 * in force). */
int ctl_reload_start(ctl *c);
void ctl_reload_stop(ctl *c);
int ctl_reload_now(ctl *c, const char *why);

/* Loop thread: frees what the gateway module still holds (after the servers are freed). */
void ctl_gateway_cleanup(ctl *c);

#endif
