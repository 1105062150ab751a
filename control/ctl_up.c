/* ctl_up: shared upstream instances and their lists (see ctl_up.h). Each server's entry is
 * a small supervisor: it starts the instance (at once, or on first use with startOnDemand),
 * restarts it with doubling backoff when it fails, pings it when keep-alive is on, stops it
 * when an on-demand server has been idle, and respects hub.maxInstances. */
#include "ctl_up.h"

#include "agg.h"
#include "ctl_mcp.h"
#include "jr.h"
#include "ids.h"
#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UP_BACKOFF_MIN_MS 500
#define UP_BACKOFF_MAX_MS 30000
#define UP_STABLE_MS 60000      /* ready this long: the backoff starts over */
#define UP_CRASH_LOOP 5         /* consecutive failures that make a crash loop (logged once) */
#define UP_PING_TIMEOUT_MAX_MS 10000
#define UP_TICK_MIN_MS 100
#define UP_MAP_RESTART ((size_t)1 << (sizeof(size_t) * 8 - 2)) /* reload: in map while begin runs */

/* The list requests, in the order they are fetched after READY. */
static const struct {
    const char *method;
    const char *key;      /* the array in the result */
    const char *capability;
    int slot;             /* 0..2 = c->lists[kind], 3 = c->templates */
} up_fetches[] = {
    {"tools/list", "tools", "tools", AGG_TOOLS},
    {"prompts/list", "prompts", "prompts", AGG_PROMPTS},
    {"resources/list", "resources", "resources", AGG_RESOURCES},
    {"resources/templates/list", "resourceTemplates", "resources", 3},
};
#define UP_FETCHES (sizeof up_fetches / sizeof up_fetches[0])

typedef struct ctl_up ctl_up;
struct ctl_up {
    ctl *c;
    size_t server;
    inst *in;
    uv_timer_t timer; /* restart backoff */
    uv_timer_t tick;  /* keep-alive pings and the idle check, when either is on */
    unsigned restarts;
    unsigned failures;       /* consecutive failures without a stable run */
    int64_t backoff_ms;
    int64_t retry_at_ms;     /* when the backoff timer fires; 0 when not backing off */
    int64_t ready_since_ms;
    int64_t last_use_ms;     /* a client request was routed here */
    int64_t last_ping_ms;
    uint64_t ping_gen;       /* a ping answer of an older instance is ignored */
    bool ping_out;
    bool stopping;  /* control drains or a reload retired it: never restarted */
    bool idle;      /* startOnDemand: not running until a request needs it */
    bool limited;   /* not started: hub.maxInstances reached */
    bool closing;   /* handles closing: memory goes in the last close callback */
    int open_handles;
    bool retired;         /* a reload removed or changed its server: stopping, then freed */
    ctl_up *next_retired; /* on c->retired */
    /* perSession servers: the shared entry only learns the lists (a template instance that
     * stops once they are fetched); each session that uses the server owns an entry. */
    bool probe;           /* the shared entry of a perSession server */
    bool probe_stop;      /* lists fetched: stop the template instance (from the timer) */
    bool restart_now;     /* Admin asked: the next restart has no backoff and no failure */
    sess *owner;          /* the session this instance serves, NULL when shared */
    ctl_up *next_owned;   /* on owner->instances, or on c->warm_pool */
    bool warm;            /* started ahead of demand (hub.warmPerSession) for a session */
    char scope[SESS_ID_MAX]; /* a warm instance's own ${MCPHUB_SESSION_ID} */
    int64_t started_ms;   /* the current instance was created */
    /* list fetching: one fetch chain at a time; a change during it restarts it */
    int fetch_step;     /* index into up_fetches, -1 when idle */
    bool refetch;       /* a list_changed arrived while fetching */
    json_t *acc;        /* items gathered across pages */
    uint64_t fetch_gen; /* responses of an older chain are ignored */
    bool lists_loaded;
    bool subscribe;     /* at the last fetch, the server offered resources.subscribe */
    bool announce[3];   /* upstream said this list changed: tell clients after the refetch */
};

typedef struct {
    ctl_up *up;
    uint64_t gen;
} up_fetch_ctx;

static void up_start(ctl_up *up);
static void up_retire(ctl *c, ctl_up *up, const char *why);
static void up_on_timer_cb(uv_timer_t *t);
static void up_fetch_next(ctl_up *up, const char *cursor);

static json_t **up_slot(ctl *c, int slot, size_t server)
{
    return slot == 3 ? &c->templates[server] : &c->lists[slot][server];
}

/* ---- lists ---------------------------------------------------------------------------- */

static void up_fetch_done(ctl_up *up)
{
    up->fetch_step = -1;
    json_decref(up->acc);
    up->acc = NULL;
    up->lists_loaded = true;
    up->subscribe = json_is_true(
        json_object_get(json_object_get(inst_server_capabilities(up->in), "resources"), "subscribe"));
    ctl_mcp_upstream_settled(up->c, up->server);
    if (up->probe && !up->stopping) {
        /* Not from inside the instance's own callback: the timer runs it next turn. */
        up->probe_stop = true;
        uv_timer_start(&up->timer, up_on_timer_cb, 0, 0);
    }
    if (up->refetch) {
        up->refetch = false;
        up->fetch_step = 0;
        up->acc = json_array();
        up_fetch_next(up, NULL);
    }
}

static void up_on_list(void *ud, json_t *result, const inst_error *err)
{
    up_fetch_ctx *fc = ud;
    ctl_up *up = fc->up;
    bool current = fc->gen == up->fetch_gen && up->fetch_step >= 0;
    const char *next;
    json_t **slot;
    json_t *old;
    bool changed;

    free(fc);
    if (!current)
        return;
    if (err) {
        log_warn("upstream list failed", "server=%s method=%s code=%d error=\"%s\"",
                 up->c->cfg->servers[up->server].name, up_fetches[up->fetch_step].method,
                 err->code, err->message);
    } else {
        json_array_extend(up->acc, json_object_get(result, up_fetches[up->fetch_step].key));
        next = json_string_value(json_object_get(result, "nextCursor"));
        if (next && *next && json_array_size(up->acc) < 100000) {
            up_fetch_next(up, next);
            return;
        }
    }
    slot = up_slot(up->c, up_fetches[up->fetch_step].slot, up->server);
    old = *slot;
    changed = !old || !json_equal(old, up->acc);
    *slot = up->acc;
    up->acc = json_array();
    {
        int k = up_fetches[up->fetch_step].slot;

        /* Clients hear of a change the upstream announced, or one we saw ourselves. */
        if (k != 3 && ((changed && old) || up->announce[k])) {
            up->announce[k] = false;
            ctl_mcp_list_changed(up->c, up->server, up->owner, k);
        }
    }
    json_decref(old);
    up->fetch_step++;
    up_fetch_next(up, NULL);
}

/* Sends the current step's request (skipping lists the server does not offer). */
static void up_fetch_next(ctl_up *up, const char *cursor)
{
    json_t *caps = inst_server_capabilities(up->in);
    up_fetch_ctx *fc;
    json_t *params;

    while (up->fetch_step < (int)UP_FETCHES &&
           !json_object_get(caps, up_fetches[up->fetch_step].capability))
        up->fetch_step++;
    if (up->fetch_step >= (int)UP_FETCHES) {
        up_fetch_done(up);
        return;
    }
    fc = malloc(sizeof *fc);
    if (!fc)
        abort();
    fc->up = up;
    fc->gen = up->fetch_gen;
    params = cursor ? json_pack("{s:s}", "cursor", cursor) : json_object();
    if (inst_request(up->in, up_fetches[up->fetch_step].method, params, NULL, up_on_list, fc,
                     NULL) < 0) {
        free(fc);
        up->fetch_step++;
        up_fetch_next(up, NULL);
    }
}

static void up_fetch_all(ctl_up *up)
{
    if (up->fetch_step >= 0) {
        up->refetch = true;
        return;
    }
    up->fetch_gen++;
    up->fetch_step = 0;
    json_decref(up->acc);
    up->acc = json_array();
    up_fetch_next(up, NULL);
}

/* ---- supervision ---------------------------------------------------------------------- */

/* The server's name. A retired entry's index means nothing in the new cfg: its instance
 * keeps its own copy. */
static const char *up_name(const ctl_up *up)
{
    return up->retired && up->in ? inst_name(up->in) : up->c->cfg->servers[up->server].name;
}

/* Whether up's instance holds a process or a remote session right now. */
static bool up_live(const ctl_up *up)
{
    inst_state_t st;

    if (!up->in)
        return false;
    st = inst_state(up->in);
    return inst_pid(up->in) != 0 || st == INST_STARTING || st == INST_INITIALIZING ||
           st == INST_READY;
}

/* Adds up to the live counts: one of every server, and one of server when it is up's. */
static void up_tally(const ctl_up *up, size_t server, size_t *of_server, size_t *all)
{
    if (!up_live(up))
        return;
    (*all)++;
    *of_server += up->server == server;
}

/* Live instances of server (*of_server; SIZE_MAX for none) and of every server (*all), in
 * one walk over the shared instances, every session's own and the warm pool. */
static void up_count(ctl *c, size_t server, size_t *of_server, size_t *all)
{
    size_t pos = 0;
    sess *s;

    *of_server = *all = 0;
    for (size_t i = 0; c->ups && i < c->cfg->n_servers; i++)
        if (c->ups[i])
            up_tally(c->ups[i], server, of_server, all);
    while (c->sessions && sess_next(c->sessions, &pos, &s))
        for (ctl_up *up = s->instances; up; up = up->next_owned)
            up_tally(up, server, of_server, all);
    for (ctl_up *up = c->warm_pool; up; up = up->next_owned)
        up_tally(up, server, of_server, all);
}

size_t ctl_up_live_count(ctl *c)
{
    size_t of_server, all;

    up_count(c, SIZE_MAX, &of_server, &all);
    return all;
}

static void up_schedule_restart(ctl_up *up)
{
    const char *name = up_name(up);

    if (up->restart_now) {
        up->restart_now = false;
        up->retry_at_ms = rpc_now_ms();
        uv_timer_start(&up->timer, up_on_timer_cb, 0, 0);
        return;
    }
    if (up->ready_since_ms && rpc_now_ms() - up->ready_since_ms > UP_STABLE_MS) {
        up->backoff_ms = 0;
        up->failures = 0;
    }
    up->failures++;
    up->backoff_ms = up->backoff_ms ? up->backoff_ms * 2 : UP_BACKOFF_MIN_MS;
    if (up->backoff_ms > UP_BACKOFF_MAX_MS)
        up->backoff_ms = UP_BACKOFF_MAX_MS;
    if (up->failures == UP_CRASH_LOOP)
        log_error("upstream is crash-looping: restarts spaced up to the maximum",
                  "server=%s failures=%u max_backoff_ms=%d", name, up->failures,
                  UP_BACKOFF_MAX_MS);
    log_warn("upstream failed: restarting", "server=%s in_ms=%lld failures=%u", name,
             (long long)up->backoff_ms, up->failures);
    up->retry_at_ms = rpc_now_ms() + up->backoff_ms;
    uv_timer_start(&up->timer, up_on_timer_cb, (uint64_t)up->backoff_ms, 0);
}

static void up_on_timer_cb(uv_timer_t *t)
{
    ctl_up *up = t->data;

    if (up->probe_stop) {
        up->probe_stop = false;
        if (up->in && inst_state(up->in) == INST_READY && !up->stopping) {
            log_info("per-session server's lists learned: template instance stopped",
                     "server=%s tools=%zu", up_name(up),
                     json_array_size(up->c->lists[AGG_TOOLS][up->server]));
            up->idle = true;
            inst_stop(up->in, up->c->cfg->hub.kill_grace_ms);
        }
        return;
    }
    up->retry_at_ms = 0;
    if (!up->stopping)
        up_start(up);
}

/* Starts servers that were refused for hub.maxInstances, now that one stopped. */
static void up_retry_limited(ctl *c)
{
    for (size_t i = 0; c->ups && i < c->cfg->n_servers; i++) {
        ctl_up *up = c->ups[i];

        if (up && up->limited && !up->stopping &&
            ctl_up_live_count(c) < (size_t)c->cfg->hub.max_instances)
            up_start(up);
    }
}

static void up_on_state(void *ud, inst *in, inst_state_t from, inst_state_t to)
{
    ctl_up *up = ud;

    log_info("upstream state", "server=%s session=%s from=%s to=%s pid=%d", up_name(up),
             up->owner ? up->owner->id : "-", inst_state_name(from), inst_state_name(to),
             (int)inst_pid(in));
    if (up->retired) {
        /* Nothing of it is visible any more; it only has to go. */
        if (to == INST_STOPPED || to == INST_FAILED)
            ctl_up_forget_retired(up->c, up);
        return;
    }
    if (to == INST_READY) {
        up->ready_since_ms = rpc_now_ms();
        up->last_ping_ms = up->ready_since_ms;
        up_fetch_all(up);
        return;
    }
    if (to == INST_STOPPED) {
        up_retry_limited(up->c);
        return;
    }
    if (to != INST_FAILED && to != INST_STOPPING)
        return;
    up->fetch_step = -1;
    up->fetch_gen++;
    up->ping_gen++;
    up->ping_out = false;
    ctl_mcp_upstream_gone(up->c, up->server);
    if (to == INST_FAILED && !up->stopping && !up->idle)
        up_schedule_restart(up);
}

static void up_on_notification(void *ud, inst *in, const char *method, json_t *params)
{
    ctl_up *up = ud;

    static const char *const changed[] = {"notifications/tools/list_changed",
                                          "notifications/prompts/list_changed",
                                          "notifications/resources/list_changed"};

    (void)in;
    if (up->retired)
        return;
    for (int k = 0; k < 3; k++) {
        if (strcmp(method, changed[k]) == 0) {
            up->announce[k] = true;
            up_fetch_all(up);
            return;
        }
    }
    ctl_mcp_upstream_notification(up->c, up->server, in, up->owner, method, params);
}

static void up_on_request(void *ud, inst *in, json_t *id, const char *method, json_t *params)
{
    ctl_up *up = ud;

    if (up->retired) {
        inst_respond(in, id, NULL,
                     json_pack("{s:i, s:s}", "code", JR_INVALID_REQUEST, "message",
                               "the hub is removing this server"));
        return;
    }
    ctl_mcp_upstream_request(up->c, up->server, in, up->owner, id, method, params);
}

static const inst_callbacks up_callbacks = {
    .on_state = up_on_state,
    .on_notification = up_on_notification,
    .on_request = up_on_request,
};

/* ---- keep-alive and idle ---------------------------------------------------------------- */

/* Pings are on with enableKeepAlive or an explicit keepAliveInterval (any transport). */
static bool up_pings(const cfg_server *s)
{
    return s->keep_alive || json_object_get(s->json, "keepAliveInterval") != NULL;
}

typedef struct {
    ctl_up *up;
    uint64_t gen;
} up_ping_ctx;

static void up_on_pong(void *ud, json_t *result, const inst_error *err)
{
    up_ping_ctx *pc = ud;
    ctl_up *up = pc->up;
    bool current = pc->gen == up->ping_gen;

    (void)result;
    free(pc);
    if (!current)
        return;
    up->ping_out = false;
    /* A server without ping still answers: it is alive. Closed: already being handled. */
    if (!err || err->code == JR_METHOD_NOT_FOUND || err->code == INST_E_CLOSED)
        return;
    log_warn("upstream missed a keep-alive ping", "server=%s code=%d error=\"%s\"", up_name(up),
             err->code, err->message);
    inst_fail(up->in, "upstream server stopped answering pings");
}

static void up_ping(ctl_up *up, int64_t now)
{
    const cfg_server *s = &up->c->cfg->servers[up->server];
    inst_req_opts ro;
    up_ping_ctx *pc;

    if (up->ping_out || now - up->last_ping_ms < s->keep_alive_interval_ms)
        return;
    if (!(pc = malloc(sizeof *pc)))
        abort();
    pc->up = up;
    pc->gen = up->ping_gen;
    inst_req_opts_default(up->in, &ro);
    ro.timeout_ms = s->keep_alive_interval_ms < UP_PING_TIMEOUT_MAX_MS ? s->keep_alive_interval_ms
                                                                       : UP_PING_TIMEOUT_MAX_MS;
    ro.reset_on_progress = false;
    ro.max_total_ms = 0;
    up->last_ping_ms = now;
    if (inst_request(up->in, "ping", NULL, &ro, up_on_pong, pc, NULL) < 0) {
        free(pc);
        return;
    }
    up->ping_out = true;
}

static void up_on_tick(uv_timer_t *t)
{
    ctl_up *up = t->data;
    const cfg_server *s = &up->c->cfg->servers[up->server];
    int64_t now = rpc_now_ms();
    inst_stats st;

    if (up->stopping || !up->in || inst_state(up->in) != INST_READY)
        return;
    if (up_pings(s))
        up_ping(up, now);
    if (!s->start_on_demand || up->owner)
        return; /* a per-session instance lives as long as its session */
    inst_get_stats(up->in, &st);
    /* Never while a call (or our own list fetch or ping) is running. */
    if (st.pending > 0 || now - up->last_use_ms < s->idle_timeout_ms)
        return;
    log_info("upstream idle: stopping", "server=%s idle_ms=%lld", s->name,
             (long long)(now - up->last_use_ms));
    up->idle = true;
    inst_stop(up->in, up->c->cfg->hub.kill_grace_ms);
}

static void up_arm_tick(ctl_up *up)
{
    const cfg_server *s = &up->c->cfg->servers[up->server];
    int64_t every = INT64_MAX;

    if (up_pings(s))
        every = s->keep_alive_interval_ms / 2;
    if (s->start_on_demand && !up->owner && s->idle_timeout_ms / 4 < every)
        every = s->idle_timeout_ms / 4;
    if (every == INT64_MAX)
        return;
    if (every < UP_TICK_MIN_MS)
        every = UP_TICK_MIN_MS;
    uv_timer_start(&up->tick, up_on_tick, (uint64_t)every, (uint64_t)every);
}

/* ---- starting -------------------------------------------------------------------------- */

static void up_start(ctl_up *up)
{
    ctl *c = up->c;
    const cfg_server *s = &c->cfg->servers[up->server];
    inst_opts opts;
    int rc;

    if (up->in) {
        inst_free(up->in);
        up->in = NULL;
        up->restarts++;
    }
    up->idle = false;
    if (ctl_up_live_count(c) >= (size_t)c->cfg->hub.max_instances) {
        if (!up->limited)
            log_warn("upstream not started: instance limit reached", "server=%s maxInstances=%" PRId64,
                     s->name, c->cfg->hub.max_instances);
        up->limited = true;
        ctl_mcp_upstream_gone(c, up->server);
        return;
    }
    up->limited = false;
    up->in = inst_new_scoped(&c->loop, s,
                             up->owner ? up->owner->id : up->warm ? up->scope : NULL,
                             &up_callbacks, up);
    if (!up->in)
        return;
    up->started_ms = rpc_now_ms();
    up->lists_loaded = false;
    up->ready_since_ms = 0;
    up->last_use_ms = rpc_now_ms();
    inst_opts_init(&opts, &c->cfg->hub);
    if ((rc = inst_start(up->in, &opts)) < 0) {
        log_error("upstream could not start", "server=%s error=%d", s->name, rc);
        ctl_mcp_upstream_gone(c, up->server);
        up_schedule_restart(up);
    }
}

/* An on-demand server that is not running gets started for the request asking for it. */
static void up_wake(ctl_up *up)
{
    up->last_use_ms = rpc_now_ms();
    if (up->stopping || up->retry_at_ms)
        return;
    if (up->idle || (up->limited && ctl_up_live_count(up->c) < (size_t)up->c->cfg->hub.max_instances)) {
        log_info("upstream started on demand", "server=%s", up_name(up));
        up_start(up);
    }
}

/* ---- the table ---------------------------------------------------------------------------- */

static bool up_wanted(const cfg_server *s)
{
    return s->enabled && s->supported &&
           (s->transport == CFG_TRANSPORT_STDIO || s->transport == CFG_TRANSPORT_SSE ||
            s->transport == CFG_TRANSPORT_STREAMABLE_HTTP);
}

static void up_closed(uv_handle_t *h)
{
    ctl_up *up = h->data;

    if (--up->open_handles == 0) {
        json_decref(up->acc);
        free(up);
    }
}

/* Releases up: its instance is killed (if still running) and reaped in the background. */
static void up_free(ctl_up *up)
{
    if (!up || up->closing)
        return;
    up->closing = true;
    up->stopping = true;
    inst_free(up->in);
    up->in = NULL;
    up->open_handles = 2;
    uv_close((uv_handle_t *)&up->timer, up_closed);
    uv_close((uv_handle_t *)&up->tick, up_closed);
}

static ctl_up *up_new_for(ctl *c, size_t server, sess *owner, bool warm)
{
    const cfg_server *s = &c->cfg->servers[server];
    ctl_up *up = calloc(1, sizeof *up);

    if (!up)
        abort();
    up->c = c;
    up->server = server;
    up->owner = owner;
    up->warm = warm;
    up->probe = !owner && !warm && s->per_session;
    if (warm && id_random(up->scope, sizeof up->scope, SESS_ID_BYTES) < 0)
        abort();
    up->fetch_step = -1;
    uv_timer_init(&c->loop, &up->timer);
    uv_timer_init(&c->loop, &up->tick);
    up->timer.data = up;
    up->tick.data = up;
    if (owner) {
        up->next_owned = owner->instances;
        owner->instances = up;
    } else if (warm) {
        up->next_owned = c->warm_pool;
        c->warm_pool = up;
    }
    up_arm_tick(up);
    /* An on-demand server waits for its first use; everything else starts now (a
     * session's own instance is made when the session first needs it). */
    if (s->start_on_demand && !owner && !warm)
        up->idle = true;
    else
        up_start(up);
    return up;
}

static ctl_up *up_new(ctl *c, size_t server)
{
    return up_new_for(c, server, NULL, false);
}

static const char *up_refusal(ctl *c, size_t server, char *buf, size_t size);

/* Tops up hub.warmPerSession: instances of perSession servers started ahead of demand,
 * within the limits, that a session takes over at its first use of the server. */
static void up_fill_warm(ctl *c)
{
    char why[256];

    if (c->state != CTL_RUNNING)
        return;
    for (size_t w = 0; w < c->cfg->hub.n_warm; w++) {
        const cfg_warm *cw = &c->cfg->hub.warm[w];
        size_t have = 0;

        if (!up_wanted(&c->cfg->servers[cw->server_index]) ||
            !c->cfg->servers[cw->server_index].per_session)
            continue;
        for (ctl_up *up = c->warm_pool; up; up = up->next_owned)
            have += up->server == cw->server_index;
        while (have < (size_t)cw->count && !up_refusal(c, cw->server_index, why, sizeof why)) {
            up_new_for(c, cw->server_index, NULL, true);
            have++;
        }
    }
}

void ctl_up_start_all(ctl *c)
{
    c->ups = calloc(c->cfg->n_servers + 1, sizeof *c->ups);
    if (!c->ups)
        abort();
    for (size_t i = 0; i < c->cfg->n_servers; i++)
        if (up_wanted(&c->cfg->servers[i]))
            c->ups[i] = up_new(c, i);
    up_fill_warm(c);
}

static void up_stop(ctl_up *up)
{
    up->stopping = true;
    uv_timer_stop(&up->timer);
    uv_timer_stop(&up->tick);
    up->retry_at_ms = 0;
    if (up->in)
        inst_stop(up->in, up->c->cfg->hub.kill_grace_ms);
}

/* Calls fn for every entry: shared, per-session, retired. fn must not unlink entries. */
static void up_each(ctl *c, void (*fn)(ctl_up *up, void *arg), void *arg)
{
    size_t pos = 0;
    sess *s;

    for (size_t i = 0; c->ups && i < c->cfg->n_servers; i++)
        if (c->ups[i])
            fn(c->ups[i], arg);
    while (c->sessions && sess_next(c->sessions, &pos, &s))
        for (ctl_up *up = s->instances; up; up = up->next_owned)
            fn(up, arg);
    for (ctl_up *up = c->warm_pool; up; up = up->next_owned)
        fn(up, arg);
    for (ctl_up *up = c->retired; up; up = up->next_retired)
        fn(up, arg);
}

static void up_stop_cb(ctl_up *up, void *arg)
{
    (void)arg;
    up_stop(up);
}

void ctl_up_stop_all(ctl *c)
{
    up_each(c, up_stop_cb, NULL);
}

static void up_count_pids(ctl_up *up, void *arg)
{
    *(size_t *)arg += up->in && inst_pid(up->in) != 0;
}

bool ctl_up_all_stopped(ctl *c)
{
    size_t n = 0;

    up_each(c, up_count_pids, &n);
    return n == 0;
}

void ctl_up_free_all(ctl *c)
{
    size_t pos = 0;
    sess *s;

    for (size_t i = 0; c->ups && i < c->cfg->n_servers; i++)
        up_free(c->ups[i]);
    free(c->ups);
    c->ups = NULL;
    while (c->sessions && sess_next(c->sessions, &pos, &s)) {
        while (s->instances) {
            ctl_up *up = s->instances;

            s->instances = up->next_owned;
            up_free(up);
        }
    }
    while (c->warm_pool) {
        ctl_up *up = c->warm_pool;

        c->warm_pool = up->next_owned;
        up_free(up);
    }
    while (c->retired) {
        ctl_up *up = c->retired;

        c->retired = up->next_retired;
        up_free(up);
    }
}

inst *ctl_up_ready(ctl *c, size_t server)
{
    ctl_up *up = c->ups ? c->ups[server] : NULL;

    return up && up->in && inst_state(up->in) == INST_READY ? up->in : NULL;
}

inst *ctl_up_usable(ctl *c, size_t server)
{
    ctl_up *up = c->ups ? c->ups[server] : NULL;
    inst_state_t st;

    if (!up)
        return NULL;
    up_wake(up);
    if (!up->in)
        return NULL;
    st = inst_state(up->in);
    return st == INST_STARTING || st == INST_INITIALIZING || st == INST_READY ? up->in : NULL;
}

bool ctl_up_can_subscribe(ctl *c, size_t server)
{
    ctl_up *up = c->ups ? c->ups[server] : NULL;

    return up && up->lists_loaded && up->subscribe;
}

bool ctl_up_settled(ctl *c, size_t server)
{
    ctl_up *up = c->ups ? c->ups[server] : NULL;
    inst_state_t st;

    if (!up)
        return true;
    /* An on-demand server whose lists were never seen is started to learn them. */
    if (up->idle && !up->lists_loaded)
        up_wake(up);
    if (!up->in)
        return true;
    st = inst_state(up->in);
    if (st == INST_READY)
        return up->lists_loaded;
    if (up->idle)
        return true;
    return st != INST_NEW && st != INST_STARTING && st != INST_INITIALIZING;
}

const char *ctl_up_state_name(ctl *c, size_t server)
{
    ctl_up *up = c->ups ? c->ups[server] : NULL;

    if (!up)
        return NULL;
    if (up->limited)
        return "limit reached";
    if (up->retry_at_ms)
        return "backing off";
    if (up->idle && (!up->in || !up_live(up)))
        return "idle";
    if (!up->in)
        return "configured";
    return inst_state_name(inst_state(up->in));
}

static int up_why(ctl *c, ctl_up *up, size_t server, char *buf, size_t size)
{
    const char *name = c->cfg->servers[server].name;

    if (!up)
        return snprintf(buf, size, "Server %.200s is not running", name);
    if (up->limited)
        return snprintf(buf, size,
                        "Server %.200s is not available: instance limit reached (hub.maxInstances "
                        "= %" PRId64 ")",
                        name, c->cfg->hub.max_instances);
    if (up->retry_at_ms) {
        int64_t in_ms = up->retry_at_ms - rpc_now_ms();

        return snprintf(buf, size,
                        "Server %.200s is not available: it failed and restarts in %lld ms", name,
                        (long long)(in_ms > 0 ? in_ms : 0));
    }
    return snprintf(buf, size, "Server %.200s is not available", name);
}

int ctl_up_why(ctl *c, size_t server, char *buf, size_t size)
{
    return up_why(c, c->ups ? c->ups[server] : NULL, server, buf, size);
}

/* ---- per-session instances --------------------------------------------------------------- */

static ctl_up *up_owned(sess *s, size_t server)
{
    for (ctl_up *up = s->instances; up; up = up->next_owned)
        if (up->server == server)
            return up;
    return NULL;
}

/* Why a session may not get its own instance of server now, or NULL when it may. */
static const char *up_refusal(ctl *c, size_t server, char *buf, size_t size)
{
    const cfg_hub *h = &c->cfg->hub;
    const char *name = c->cfg->servers[server].name;
    size_t of_server, all;

    if (c->state != CTL_RUNNING) {
        snprintf(buf, size, "Server %.200s is not available: the hub is shutting down", name);
        return buf;
    }
    up_count(c, server, &of_server, &all);
    if (of_server >= (size_t)h->max_instances_per_server) {
        snprintf(buf, size,
                 "Server %.200s is not available: per-server instance limit reached "
                 "(hub.maxInstancesPerServer = %" PRId64 ")",
                 name, h->max_instances_per_server);
        return buf;
    }
    if (all >= (size_t)h->max_instances) {
        snprintf(buf, size,
                 "Server %.200s is not available: instance limit reached (hub.maxInstances = "
                 "%" PRId64 ")",
                 name, h->max_instances);
        return buf;
    }
    return NULL;
}

/* Unlinks and returns a warm instance of server, a ready one if any; NULL when none. */
static ctl_up *up_take_warm(ctl *c, size_t server)
{
    ctl_up **best = NULL;

    for (ctl_up **pp = &c->warm_pool; *pp; pp = &(*pp)->next_owned) {
        ctl_up *up = *pp;

        if (up->server != server || !up->in || !up_live(up))
            continue;
        if (!best || inst_state(up->in) == INST_READY)
            best = pp;
        if (inst_state(up->in) == INST_READY)
            break;
    }
    if (!best)
        return NULL;
    ctl_up *up = *best;
    *best = up->next_owned;
    up->next_owned = NULL;
    up->warm = false;
    return up;
}

static bool up_is_per_session(ctl *c, sess *s, size_t server)
{
    return s && c->cfg->servers[server].per_session && up_wanted(&c->cfg->servers[server]);
}

inst *ctl_up_usable_for(ctl *c, sess *s, size_t server)
{
    ctl_up *up;
    char why[256];
    inst_state_t st;

    if (!up_is_per_session(c, s, server))
        return c->cfg->servers[server].per_session ? NULL : ctl_up_usable(c, server);
    if (!(up = up_owned(s, server)) && (up = up_take_warm(c, server))) {
        log_info("per-session instance taken from the warm pool", "server=%s session=%s pid=%d",
                 c->cfg->servers[server].name, s->id, (int)inst_pid(up->in));
        up->owner = s;
        up->next_owned = s->instances;
        s->instances = up;
        up_fill_warm(c);
    }
    if (!up) {
        if (up_refusal(c, server, why, sizeof why)) {
            log_warn("per-session instance refused", "server=%s session=%s why=\"%s\"",
                     c->cfg->servers[server].name, s->id, why);
            return NULL;
        }
        log_info("per-session instance starting", "server=%s session=%s",
                 c->cfg->servers[server].name, s->id);
        up = up_new_for(c, server, s, false);
    }
    up->last_use_ms = rpc_now_ms();
    if (!up->in)
        return NULL;
    st = inst_state(up->in);
    return st == INST_STARTING || st == INST_INITIALIZING || st == INST_READY ? up->in : NULL;
}

inst *ctl_up_ready_for(ctl *c, sess *s, size_t server)
{
    ctl_up *up;

    if (!c->cfg->servers[server].per_session)
        return ctl_up_ready(c, server);
    up = s ? up_owned(s, server) : NULL;
    return up && up->in && inst_state(up->in) == INST_READY ? up->in : NULL;
}

int ctl_up_why_for(ctl *c, sess *s, size_t server, char *buf, size_t size)
{
    ctl_up *up;

    if (!up_is_per_session(c, s, server))
        return ctl_up_why(c, server, buf, size);
    if (!(up = up_owned(s, server))) {
        if (up_refusal(c, server, buf, size))
            return (int)strlen(buf);
        return snprintf(buf, size, "Server %.200s is not available",
                        c->cfg->servers[server].name);
    }
    return up_why(c, up, server, buf, size);
}

static int up_restart(ctl_up *up)
{
    inst_state_t st;

    if (!up || up->probe || up->stopping || !up->in)
        return 0;
    st = inst_state(up->in);
    if (st != INST_INITIALIZING && st != INST_READY)
        return 0;
    log_info("upstream restart requested by admin", "server=%s session=%s pid=%d", up_name(up),
             up->owner ? up->owner->id : "-", (int)inst_pid(up->in));
    up->restart_now = true;
    inst_fail(up->in, "the server is being restarted by an administrator");
    return 1;
}

int ctl_up_restart(ctl *c, size_t server, const char *session_id)
{
    size_t pos = 0;
    sess *s;
    int n = 0;

    if (!session_id || !session_id[0])
        n += up_restart(c->ups ? c->ups[server] : NULL);
    if (session_id && !session_id[0])
        return n;
    while (c->sessions && sess_next(c->sessions, &pos, &s))
        if (!session_id || strcmp(s->id, session_id) == 0)
            n += up_restart(up_owned(s, server));
    return n;
}

size_t ctl_up_session_instances(const sess *s)
{
    size_t n = 0;

    for (const ctl_up *up = s->instances; up; up = up->next_owned)
        n++;
    return n;
}

typedef struct {
    const inst *in;
    bool found;
} up_find_ctx;

static void up_find_cb(ctl_up *up, void *arg)
{
    up_find_ctx *f = arg;

    if (up->in == f->in && !up->retired && inst_state(up->in) == INST_READY)
        f->found = true;
}

bool ctl_up_is_live(ctl *c, const inst *in)
{
    up_find_ctx f = {in, false};

    if (in)
        up_each(c, up_find_cb, &f);
    return f.found;
}

void ctl_up_session_ended(ctl *c, sess *s)
{
    while (s->instances) {
        ctl_up *up = s->instances;

        s->instances = up->next_owned;
        up->next_owned = NULL;
        log_info("session ended: stopping its instance", "server=%s session=%s pid=%d",
                 up_name(up), s->id, up->in ? (int)inst_pid(up->in) : 0);
        up->owner = NULL;
        up_retire(c, up, NULL);
    }
    up_retry_limited(c);
    up_fill_warm(c);
}

typedef struct {
    ctl *c;
    ctl_up_visit_fn fn;
    void *ud;
} up_visit_ctx;

static void up_visit_cb(ctl_up *up, void *arg)
{
    up_visit_ctx *v = arg;
    ctl_up_info info;

    if (!up->in)
        return;
    memset(&info, 0, sizeof info);
    info.server = up_name(up);
    info.session_id = up->owner ? up->owner->id : "";
    info.pid = (int)inst_pid(up->in);
    info.state = up->retired ? "stopping" : inst_state_name(inst_state(up->in));
    info.restarts = up->restarts;
    info.uptime_ms = rpc_now_ms() - up->started_ms;
    info.retired = up->retired;
    info.template_instance = up->probe;
    info.warm = up->warm;
    v->fn(v->ud, &info);
}

void ctl_up_visit(ctl *c, ctl_up_visit_fn fn, void *ud)
{
    up_visit_ctx v = {c, fn, ud};

    up_each(c, up_visit_cb, &v);
}

int ctl_up_pid(ctl *c, size_t server)
{
    ctl_up *up = c->ups ? c->ups[server] : NULL;

    return up && up->in ? (int)inst_pid(up->in) : 0;
}

unsigned ctl_up_restarts(ctl *c, size_t server)
{
    ctl_up *up = c->ups ? c->ups[server] : NULL;

    return up ? up->restarts : 0;
}

/* ---- reload ------------------------------------------------------------------------------ */

/* Same process or session settings: the running instance can serve the new entry as is. */
static bool up_same_launch(const cfg_server *a, const cfg_server *b)
{
    if (a->transport != b->transport || up_wanted(a) != up_wanted(b) ||
        a->start_on_demand != b->start_on_demand || a->per_session != b->per_session ||
        a->n_args != b->n_args || a->n_env != b->n_env || a->n_headers != b->n_headers)
        return false;
    if (strcmp(a->command ? a->command : "", b->command ? b->command : "") != 0 ||
        strcmp(a->cwd ? a->cwd : "", b->cwd ? b->cwd : "") != 0 ||
        strcmp(a->url ? a->url : "", b->url ? b->url : "") != 0)
        return false;
    for (size_t i = 0; i < a->n_args; i++)
        if (strcmp(a->args[i], b->args[i]) != 0)
            return false;
    for (size_t i = 0; i < a->n_env; i++)
        if (strcmp(a->env[i].key, b->env[i].key) != 0 ||
            strcmp(a->env[i].value, b->env[i].value) != 0)
            return false;
    for (size_t i = 0; i < a->n_headers; i++)
        if (strcmp(a->headers[i].key, b->headers[i].key) != 0 ||
            strcmp(a->headers[i].value, b->headers[i].value) != 0)
            return false;
    return true;
}

/* Takes up out of service for good: stopped, then freed once its instance is gone. why is
 * logged when not NULL (the caller may have said it better itself). */
static void up_retire(ctl *c, ctl_up *up, const char *why)
{
    up->retired = true;
    up->fetch_gen++; /* list answers of this instance no longer land anywhere */
    up->fetch_step = -1;
    up->ping_gen++;
    up->next_retired = c->retired;
    c->retired = up;
    if (why)
        log_info(why, "server=%s", up_name(up));
    up_stop(up);
    if (!up->closing && (!up->in || !up_live(up)))
        ctl_up_forget_retired(c, up);
}

/* Retires the entries of an owned or warm list whose server the reload removed or changed
 * (map as in ctl_up_reload_begin, while it runs). */
static void up_retire_list(ctl *c, ctl_up **list, const size_t *map)
{
    for (ctl_up **pp = list; *pp;) {
        ctl_up *up = *pp;

        if (map[up->server] != SIZE_MAX && !(map[up->server] & UP_MAP_RESTART)) {
            pp = &up->next_owned;
            continue;
        }
        *pp = up->next_owned;
        up->next_owned = NULL;
        up->owner = NULL;
        up->warm = false;
        up_retire(c, up, "upstream removed or changed: stopping");
    }
}

void ctl_up_reload_begin(ctl *c, const cfg *next, size_t *map)
{
    /* Entries of an earlier reload whose process has been reaped since. */
    for (ctl_up *up = c->retired, *nx; up; up = nx) {
        nx = up->next_retired;
        if (!up_live(up))
            ctl_up_forget_retired(c, up);
    }
    for (size_t i = 0; i < c->cfg->n_servers; i++) {
        const cfg_server *s = &c->cfg->servers[i];
        const cfg_server *ns = cfg_find_server(next, s->name);
        ctl_up *up = c->ups ? c->ups[i] : NULL;

        map[i] = ns ? (size_t)(ns - next->servers) : SIZE_MAX;
        if (!ns || !up_same_launch(s, ns)) {
            map[i] = ns ? map[i] | UP_MAP_RESTART : SIZE_MAX;
            if (up) {
                c->ups[i] = NULL;
                up_retire(c, up, "upstream removed or changed: stopping");
            }
        }
    }
    /* Sessions' own instances of those servers, and warm ones, go the same way. */
    size_t pos = 0;
    sess *se;

    while (c->sessions && sess_next(c->sessions, &pos, &se))
        up_retire_list(c, &se->instances, map);
    up_retire_list(c, &c->warm_pool, map);
    for (size_t i = 0; i < c->cfg->n_servers; i++)
        if (map[i] != SIZE_MAX)
            map[i] &= ~UP_MAP_RESTART;
}

/* Kept entries of an owned or warm list take their server's new index and settings. */
static void up_remap_list(ctl_up *list, const size_t *map)
{
    for (ctl_up *up = list; up; up = up->next_owned) {
        up->server = map[up->server];
        uv_timer_stop(&up->tick);
        up_arm_tick(up); /* keep-alive settings may have changed */
    }
}

void ctl_up_reload_finish(ctl *c, size_t n_old, const size_t *map)
{
    ctl_up **ups = calloc(c->cfg->n_servers + 1, sizeof *ups);

    if (!ups)
        abort();
    for (size_t i = 0; c->ups && i < n_old; i++) {
        if (!c->ups[i])
            continue;
        /* Kept as is: the same launch settings under the same name. */
        ups[map[i]] = c->ups[i];
        ups[map[i]]->server = map[i];
        uv_timer_stop(&ups[map[i]]->tick);
        up_arm_tick(ups[map[i]]); /* keep-alive and idle settings may have changed */
    }
    free(c->ups);
    c->ups = ups;
    size_t pos = 0;
    sess *se;

    while (c->sessions && sess_next(c->sessions, &pos, &se))
        up_remap_list(se->instances, map);
    up_remap_list(c->warm_pool, map);
    for (size_t i = 0; i < c->cfg->n_servers; i++) {
        if (ups[i] || !up_wanted(&c->cfg->servers[i]))
            continue;
        log_info("upstream added by reload", "server=%s", c->cfg->servers[i].name);
        ups[i] = up_new(c, i);
        /* Whatever it offers is news to the sessions that see it. */
        for (int k = 0; k < 3; k++)
            ups[i]->announce[k] = true;
    }
    up_fill_warm(c);
}

void ctl_up_forget_retired(ctl *c, struct ctl_up *gone)
{
    for (ctl_up **pp = &c->retired; *pp; pp = &(*pp)->next_retired) {
        if (*pp == gone) {
            *pp = gone->next_retired;
            up_free(gone);
            return;
        }
    }
}
