/* edge_link: the Subscribe stream to control and its supervisor (see edge_link.h).
 * The rpc client's callbacks run on its polling thread and never sleep: they only record
 * what happened and wake the supervisor, whose timed wait spaces the re-subscribes. All
 * state changes go through link_event(), one switch over (state, event). */
#include "edge_link.h"

#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LINK_DEFAULT_INITIAL_BACKOFF_MS 100
#define LINK_DEFAULT_MAX_BACKOFF_MS 2000
#define LINK_DEFAULT_UNREACHABLE_WARN_MS 3000
#define LINK_ID_MAX 128

typedef enum {
    LINK_IDLE,        /* created, supervisor not started */
    LINK_WAITING,     /* no stream; re-subscribe at due_ms */
    LINK_SUBSCRIBING, /* stream open (or waiting for a connection), no Hello yet */
    LINK_READY,       /* stream open and Hello arrived */
    LINK_STOPPED,     /* stop requested; no stream will be opened again */
} link_state;

typedef enum {
    LINK_EV_START,  /* supervisor started */
    LINK_EV_DUE,    /* due_ms passed (supervisor) */
    LINK_EV_HELLO,  /* Hello on the stream (polling thread) */
    LINK_EV_CLOSED, /* the stream's on_close (polling thread) */
    LINK_EV_STOP,   /* edge_link_stop */
} link_ev;

struct edge_link {
    rpc_client *cli;
    char *edge_id;
    int initial_backoff_ms;
    int max_backoff_ms;
    int unreachable_warn_ms;
    edge_link_event_fn on_event;
    edge_link_lost_fn on_lost;
    void *ud;
    edge_metrics *metrics;

    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* CLOCK_MONOTONIC; signalled on every state change */
    link_state state;
    rpc_stream *st;     /* open Subscribe call, NULL once its on_close ran */
    int backoff_ms;     /* delay before the next re-subscribe */
    int64_t due_ms;     /* next supervisor deadline, INT64_MAX for none */
    bool outage_logged; /* this loss of control (or first wait) was already logged */
    char control_id[LINK_ID_MAX];
};

void edge_link_clean(char *buf, size_t size, const char *text)
{
    size_t n = 0;

    if (size == 0)
        return;
    for (; text && text[n] && n < size - 1; n++) {
        char c = text[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("._:@/+=-", c) != NULL;

        buf[n] = ok ? c : '_';
    }
    buf[n] = '\0';
}

/* gRPC's status text, made safe to quote in a log line. */
static void link_detail(char *buf, size_t size, const char *text)
{
    size_t n = 0;

    for (; text && text[n] && n < size - 1; n++)
        buf[n] = (text[n] == '"' || text[n] == '\\' || (unsigned char)text[n] < 0x20)
                     ? '\''
                     : text[n];
    buf[n] = '\0';
}

static void link_on_message(void *ud, const ProtobufCMessage *msg);
static void link_on_close(void *ud, grpc_status_code status, const char *message);

static void link_grow_backoff(edge_link *l)
{
    l->backoff_ms = l->backoff_ms > l->max_backoff_ms / 2 ? l->max_backoff_ms
                                                          : l->backoff_ms * 2;
}

/* Opens the Subscribe stream. Lock held. The stream's callbacks need the lock too, so they
 * cannot run before l->st is set. */
static void link_subscribe(edge_link *l, int64_t now)
{
    Mcphub__V1__SubscribeRequest req = MCPHUB__V1__SUBSCRIBE_REQUEST__INIT;

    req.edge_id = l->edge_id;
    /* wait_for_ready: while control is down the call waits for the channel, which
     * reconnects on its own backoff, so readiness returns as soon as control listens. */
    l->st = rpc_client_stream(l->cli, &mcphub__v1__gateway__descriptor, "Subscribe", &req.base,
                              0, true, link_on_message, link_on_close, l);
    if (!l->st) {
        /* Only when the client is closing; try again later rather than spin. */
        log_error("subscribe could not start", "retry_ms=%d", l->backoff_ms);
        l->state = LINK_WAITING;
        l->due_ms = now + l->backoff_ms;
        link_grow_backoff(l);
        return;
    }
    l->state = LINK_SUBSCRIBING;
    l->due_ms = l->outage_logged ? INT64_MAX : now + l->unreachable_warn_ms;
    log_debug("subscribing to control", "edge_id=%s", l->edge_id);
}

/* The state machine. Lock held. hello/status/message describe LINK_EV_HELLO and
 * LINK_EV_CLOSED. */
static void link_event(edge_link *l, link_ev ev, const Mcphub__V1__Hello *hello,
                       grpc_status_code status, const char *message)
{
    int64_t now = rpc_now_ms();
    link_state was = l->state;
    char detail[256];
    char id[LINK_ID_MAX];

    switch (ev) {
    case LINK_EV_START:
        if (was == LINK_IDLE)
            link_subscribe(l, now);
        break;

    case LINK_EV_DUE:
        if (was == LINK_WAITING) {
            link_subscribe(l, now);
        } else if (was == LINK_SUBSCRIBING) {
            if (!l->outage_logged)
                log_warn("control unreachable", "waited_ms=%d", l->unreachable_warn_ms);
            l->outage_logged = true;
            l->due_ms = INT64_MAX;
        } else {
            l->due_ms = INT64_MAX;
        }
        break;

    case LINK_EV_HELLO:
        edge_link_clean(id, sizeof id, hello->control_id);
        /* A Hello naming another control on an open stream means a fresh connection too. */
        if (was == LINK_SUBSCRIBING || (was == LINK_READY && strcmp(id, l->control_id) != 0)) {
            l->state = LINK_READY;
            memcpy(l->control_id, id, sizeof id);
            l->backoff_ms = l->initial_backoff_ms;
            l->outage_logged = false;
            l->due_ms = INT64_MAX;
            log_info("control connected", "control_id=%s config_version=%" PRIu64,
                     l->control_id, hello->config_version);
        }
        break;

    case LINK_EV_CLOSED:
        l->st = NULL;
        if (was == LINK_STOPPED)
            break;
        link_detail(detail, sizeof detail, message);
        if (was == LINK_READY) {
            log_warn("control lost", "control_id=%s status=%s detail=\"%s\" retry_ms=%d",
                     l->control_id, rpc_status_name(status), detail, l->backoff_ms);
            l->outage_logged = true;
        } else if (!l->outage_logged) {
            log_warn("subscribe failed", "status=%s detail=\"%s\" retry_ms=%d",
                     rpc_status_name(status), detail, l->backoff_ms);
            l->outage_logged = true;
        } else {
            log_debug("subscribe failed", "status=%s detail=\"%s\" retry_ms=%d",
                      rpc_status_name(status), detail, l->backoff_ms);
        }
        l->control_id[0] = '\0';
        l->state = LINK_WAITING;
        l->due_ms = now + l->backoff_ms;
        link_grow_backoff(l);
        break;

    case LINK_EV_STOP:
        l->state = LINK_STOPPED;
        l->due_ms = INT64_MAX;
        l->control_id[0] = '\0';
        if (l->st)
            rpc_stream_cancel(l->st); /* on_close has not run: it would have cleared st */
        break;
    }
    pthread_cond_broadcast(&l->cv);
}

/* ---- rpc client callbacks (polling thread) --------------------------------------------- */

static void link_on_message(void *ud, const ProtobufCMessage *msg)
{
    edge_link *l = ud;
    const Mcphub__V1__EdgeEvent *ev = (const Mcphub__V1__EdgeEvent *)msg;
    bool deliver = false;

    pthread_mutex_lock(&l->mu);
    if (ev->event_case == MCPHUB__V1__EDGE_EVENT__EVENT_HELLO && ev->hello) {
        link_event(l, LINK_EV_HELLO, ev->hello, GRPC_STATUS_OK, NULL);
        deliver = l->state == LINK_READY; /* its settings matter to the edge */
    } else if (l->state == LINK_READY) {
        deliver = true;
    } else if (l->state == LINK_SUBSCRIBING && l->st) {
        /* Control must greet first; anything else is a peer we do not understand. */
        if (!l->outage_logged)
            log_warn("control sent an event before hello", "event=%d", (int)ev->event_case);
        else
            log_debug("control sent an event before hello", "event=%d", (int)ev->event_case);
        rpc_stream_cancel(l->st);
    }
    pthread_mutex_unlock(&l->mu);
    if (deliver && l->on_event)
        l->on_event(l->ud, ev);
}

static void link_on_close(void *ud, grpc_status_code status, const char *message)
{
    edge_link *l = ud;
    bool lost;

    edge_metrics_rpc(l->metrics, EM_RPC_SUBSCRIBE, status);
    pthread_mutex_lock(&l->mu);
    lost = l->state == LINK_READY;
    link_event(l, LINK_EV_CLOSED, NULL, status, message);
    pthread_mutex_unlock(&l->mu);
    if (lost && l->on_lost)
        l->on_lost(l->ud);
}

/* ---- supervisor ----------------------------------------------------------------------- */

static void link_wait(edge_link *l)
{
    struct timespec ts;
    int64_t wait_ms;

    if (l->due_ms == INT64_MAX) {
        pthread_cond_wait(&l->cv, &l->mu);
        return;
    }
    wait_ms = l->due_ms - rpc_now_ms();
    if (wait_ms <= 0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(wait_ms / 1000);
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&l->cv, &l->mu, &ts);
}

static void *link_main(void *arg)
{
    edge_link *l = arg;

    pthread_mutex_lock(&l->mu);
    link_event(l, LINK_EV_START, NULL, GRPC_STATUS_OK, NULL);
    while (l->state != LINK_STOPPED) {
        if (rpc_now_ms() >= l->due_ms)
            link_event(l, LINK_EV_DUE, NULL, GRPC_STATUS_OK, NULL);
        else
            link_wait(l);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- public --------------------------------------------------------------------------- */

edge_link *edge_link_new(const edge_link_opts *opts)
{
    edge_link *l = calloc(1, sizeof *l);
    pthread_condattr_t attr;

    if (!l || !(l->edge_id = strdup(opts->edge_id ? opts->edge_id : "")))
        abort();
    l->cli = opts->cli;
    l->initial_backoff_ms = opts->initial_backoff_ms > 0 ? opts->initial_backoff_ms
                                                         : LINK_DEFAULT_INITIAL_BACKOFF_MS;
    l->max_backoff_ms = opts->max_backoff_ms > 0 ? opts->max_backoff_ms
                                                 : LINK_DEFAULT_MAX_BACKOFF_MS;
    if (l->max_backoff_ms < l->initial_backoff_ms)
        l->max_backoff_ms = l->initial_backoff_ms;
    l->unreachable_warn_ms = opts->unreachable_warn_ms > 0 ? opts->unreachable_warn_ms
                                                           : LINK_DEFAULT_UNREACHABLE_WARN_MS;
    l->on_event = opts->on_event;
    l->on_lost = opts->on_lost;
    l->ud = opts->ud;
    l->metrics = opts->metrics;
    l->state = LINK_IDLE;
    l->backoff_ms = l->initial_backoff_ms;
    l->due_ms = INT64_MAX;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &attr);
    pthread_condattr_destroy(&attr);
    return l;
}

int edge_link_start(edge_link *l)
{
    int rc;

    if (l->thread_started)
        return -EALREADY;
    if ((rc = pthread_create(&l->thread, NULL, link_main, l)) != 0)
        return -rc;
    l->thread_started = true;
    return 0;
}

bool edge_link_ready(edge_link *l, char *buf, size_t size)
{
    bool ready;

    pthread_mutex_lock(&l->mu);
    ready = l->state == LINK_READY;
    if (ready && buf && size > 0)
        snprintf(buf, size, "%s", l->control_id);
    pthread_mutex_unlock(&l->mu);
    return ready;
}

void edge_link_stop(edge_link *l)
{
    pthread_mutex_lock(&l->mu);
    if (l->state != LINK_STOPPED)
        link_event(l, LINK_EV_STOP, NULL, GRPC_STATUS_OK, NULL);
    while (l->st)
        pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
    if (l->thread_started) {
        pthread_join(l->thread, NULL);
        l->thread_started = false;
    }
}

void edge_link_free(edge_link *l)
{
    if (!l)
        return;
    edge_link_stop(l);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l->edge_id);
    free(l);
}
