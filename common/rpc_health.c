/* rpc_health: grpc.health.v1.Health Check and Watch over rpc_server. The status table and
 * the watcher list are guarded by one mutex; lock order is health, then call. */
#include "rpc_health.h"

#include "grpc/health/v1/health.pb-c.h"
#include "log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define HEALTH_MAX_SERVICES 32
#define HEALTH_MAX_WATCHERS 256

typedef struct {
    char *name;
    int status;
} health_entry;

typedef struct health_watcher health_watcher;
struct health_watcher {
    rpc_health *h;
    rpc_call *call;
    char *service;
    health_watcher *next;
};

struct rpc_health {
    pthread_mutex_t mu;
    health_entry entries[HEALTH_MAX_SERVICES];
    size_t nentries;
    health_watcher *watchers;
    size_t nwatchers;
};

/* Status of service, or -1 when unknown to us. Caller holds h->mu. */
static int health_lookup(const rpc_health *h, const char *service)
{
    for (size_t i = 0; i < h->nentries; i++)
        if (strcmp(h->entries[i].name, service) == 0)
            return h->entries[i].status;
    return -1;
}

static void health_send(rpc_call *call, int status)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    rpc_call_send(call, &resp.base);
}

static void health_check(rpc_call *call, void *ud)
{
    rpc_health *h = ud;
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)rpc_call_request(call);
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    int st;

    pthread_mutex_lock(&h->mu);
    st = health_lookup(h, req->service ? req->service : "");
    pthread_mutex_unlock(&h->mu);
    if (st < 0) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "unknown service");
        return;
    }
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
    rpc_call_reply(call, &resp.base);
}

/* Removes w from the list if still there; returns true when it was. Caller holds h->mu. */
static bool health_unlink(rpc_health *h, health_watcher *w)
{
    for (health_watcher **pp = &h->watchers; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            h->nwatchers--;
            return true;
        }
    }
    return false;
}

static void health_watch_cancelled(rpc_call *call, void *ud)
{
    health_watcher *w = ud;
    rpc_health *h = w->h;
    bool mine;

    pthread_mutex_lock(&h->mu);
    mine = health_unlink(h, w);
    pthread_mutex_unlock(&h->mu);
    if (!mine)
        return;
    rpc_call_finish(call, GRPC_STATUS_CANCELLED, NULL);
    free(w->service);
    free(w);
}

static void health_watch(rpc_call *call, void *ud)
{
    rpc_health *h = ud;
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)rpc_call_request(call);
    health_watcher *w;
    int st;

    pthread_mutex_lock(&h->mu);
    if (h->nwatchers >= HEALTH_MAX_WATCHERS) {
        pthread_mutex_unlock(&h->mu);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many health watchers");
        return;
    }
    w = calloc(1, sizeof *w);
    if (!w || !(w->service = strdup(req->service ? req->service : "")))
        abort();
    w->h = h;
    w->call = call;
    st = health_lookup(h, w->service);
    /* Watch reports SERVICE_UNKNOWN for a service it does not know, and keeps watching. */
    health_send(call, st < 0 ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN
                             : st);
    w->next = h->watchers;
    h->watchers = w;
    h->nwatchers++;
    pthread_mutex_unlock(&h->mu);
    if (rpc_call_on_cancel(call, health_watch_cancelled, w) < 0)
        health_watch_cancelled(call, w);
}

rpc_health *rpc_health_new(void)
{
    rpc_health *h = calloc(1, sizeof *h);

    if (!h)
        abort();
    pthread_mutex_init(&h->mu, NULL);
    rpc_health_set(h, "", RPC_HEALTH_NOT_SERVING);
    return h;
}

int rpc_health_register(rpc_health *h, rpc_server *srv)
{
    int rc;

    if ((rc = rpc_server_add_method(srv, &grpc__health__v1__health__descriptor, "Check",
                                    RPC_UNARY, health_check, h)) < 0)
        return rc;
    return rpc_server_add_method(srv, &grpc__health__v1__health__descriptor, "Watch",
                                 RPC_SERVER_STREAM, health_watch, h);
}

void rpc_health_set(rpc_health *h, const char *service, int status)
{
    size_t i;
    bool fresh = false;

    pthread_mutex_lock(&h->mu);
    for (i = 0; i < h->nentries; i++)
        if (strcmp(h->entries[i].name, service) == 0)
            break;
    if (i == h->nentries) {
        if (h->nentries == HEALTH_MAX_SERVICES) {
            pthread_mutex_unlock(&h->mu);
            log_error("health: too many services", "service=%s", service);
            return;
        }
        if (!(h->entries[i].name = strdup(service)))
            abort();
        h->nentries++;
        fresh = true;
    }
    if (fresh || h->entries[i].status != status) {
        h->entries[i].status = status;
        for (health_watcher *w = h->watchers; w; w = w->next)
            if (strcmp(w->service, service) == 0)
                health_send(w->call, status);
    }
    pthread_mutex_unlock(&h->mu);
}

void rpc_health_free(rpc_health *h)
{
    if (!h)
        return;
    /* The server's shutdown cancelled every Watch, and each cancel freed its watcher. */
    for (size_t i = 0; i < h->nentries; i++)
        free(h->entries[i].name);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
