/* ctl_up: shared upstream instances and their lists (see ctl_up.h). */
#include "ctl_up.h"

#include "agg.h"
#include "ctl_mcp.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define UP_BACKOFF_MIN_MS 500
#define UP_BACKOFF_MAX_MS 30000
#define UP_STABLE_MS 60000 /* ready this long: the backoff starts over */

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
    unsigned restarts;
    int64_t backoff_ms;
    int64_t ready_since_ms;
    bool stopping;
    /* list fetching: one fetch chain at a time; a change during it restarts it */
    int fetch_step;     /* index into up_fetches, -1 when idle */
    bool refetch;       /* a list_changed arrived while fetching */
    json_t *acc;        /* items gathered across pages */
    uint64_t fetch_gen; /* responses of an older chain are ignored */
    bool lists_loaded;
    bool announce[3];   /* upstream said this list changed: tell clients after the refetch */
};

typedef struct {
    ctl_up *up;
    uint64_t gen;
} up_fetch_ctx;

static void up_start(ctl_up *up);
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
    ctl_mcp_upstream_settled(up->c, up->server);
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
            ctl_mcp_list_changed(up->c, up->server, k);
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

/* ---- instance callbacks ------------------------------------------------------------------ */

static void up_on_timer(uv_timer_t *t)
{
    ctl_up *up = t->data;

    if (!up->stopping)
        up_start(up);
}

static void up_on_state(void *ud, inst *in, inst_state_t from, inst_state_t to)
{
    ctl_up *up = ud;
    const char *name = up->c->cfg->servers[up->server].name;

    log_info("upstream state", "server=%s from=%s to=%s pid=%d", name, inst_state_name(from),
             inst_state_name(to), (int)inst_pid(in));
    if (to == INST_READY) {
        up->ready_since_ms = rpc_now_ms();
        up_fetch_all(up);
        return;
    }
    if (to != INST_FAILED)
        return;
    up->fetch_step = -1;
    up->fetch_gen++;
    ctl_mcp_upstream_gone(up->c, up->server);
    if (up->stopping)
        return;
    /* Restart, spaced: a server that keeps crashing is retried less and less often. */
    if (up->ready_since_ms && rpc_now_ms() - up->ready_since_ms > UP_STABLE_MS)
        up->backoff_ms = 0;
    up->backoff_ms = up->backoff_ms ? up->backoff_ms * 2 : UP_BACKOFF_MIN_MS;
    if (up->backoff_ms > UP_BACKOFF_MAX_MS)
        up->backoff_ms = UP_BACKOFF_MAX_MS;
    log_warn("upstream failed: restarting", "server=%s in_ms=%lld", name,
             (long long)up->backoff_ms);
    uv_timer_start(&up->timer, up_on_timer, (uint64_t)up->backoff_ms, 0);
}

static void up_on_notification(void *ud, inst *in, const char *method, json_t *params)
{
    ctl_up *up = ud;

    static const char *const changed[] = {"notifications/tools/list_changed",
                                          "notifications/prompts/list_changed",
                                          "notifications/resources/list_changed"};

    for (int k = 0; k < 3; k++) {
        if (strcmp(method, changed[k]) == 0) {
            up->announce[k] = true;
            up_fetch_all(up);
            return;
        }
    }
    ctl_mcp_upstream_notification(up->c, up->server, method, params);
}

static void up_on_request(void *ud, inst *in, json_t *id, const char *method, json_t *params)
{
    ctl_up *up = ud;

    ctl_mcp_upstream_request(up->c, up->server, in, id, method, params);
}

static const inst_callbacks up_callbacks = {
    .on_state = up_on_state,
    .on_notification = up_on_notification,
    .on_request = up_on_request,
};

static void up_start(ctl_up *up)
{
    const cfg_server *s = &up->c->cfg->servers[up->server];
    inst_opts opts;
    int rc;

    if (up->in) {
        inst_free(up->in);
        up->in = NULL;
        up->restarts++;
    }
    up->in = inst_new(&up->c->loop, s, &up_callbacks, up);
    if (!up->in)
        return;
    up->lists_loaded = false;
    up->ready_since_ms = 0;
    inst_opts_init(&opts, &up->c->cfg->hub);
    if ((rc = inst_start(up->in, &opts)) < 0) {
        log_error("upstream could not start", "server=%s error=%d", s->name, rc);
        ctl_mcp_upstream_gone(up->c, up->server);
        up->backoff_ms = up->backoff_ms ? up->backoff_ms * 2 : UP_BACKOFF_MIN_MS;
        if (up->backoff_ms > UP_BACKOFF_MAX_MS)
            up->backoff_ms = UP_BACKOFF_MAX_MS;
        uv_timer_start(&up->timer, up_on_timer, (uint64_t)up->backoff_ms, 0);
    }
}

/* ---- the table ---------------------------------------------------------------------------- */

void ctl_up_start_all(ctl *c)
{
    c->ups = calloc(c->cfg->n_servers + 1, sizeof *c->ups);
    if (!c->ups)
        abort();
    for (size_t i = 0; i < c->cfg->n_servers; i++) {
        const cfg_server *s = &c->cfg->servers[i];
        ctl_up *up;

        if (!s->enabled || !s->supported || s->transport != CFG_TRANSPORT_STDIO)
            continue;
        up = calloc(1, sizeof *up);
        if (!up)
            abort();
        up->c = c;
        up->server = i;
        up->fetch_step = -1;
        uv_timer_init(&c->loop, &up->timer);
        up->timer.data = up;
        c->ups[i] = up;
        up_start(up);
    }
}

void ctl_up_stop_all(ctl *c)
{
    for (size_t i = 0; c->ups && i < c->cfg->n_servers; i++) {
        ctl_up *up = c->ups[i];

        if (!up)
            continue;
        up->stopping = true;
        uv_timer_stop(&up->timer);
        if (up->in)
            inst_stop(up->in, c->cfg->hub.kill_grace_ms);
    }
}

bool ctl_up_all_stopped(ctl *c)
{
    for (size_t i = 0; c->ups && i < c->cfg->n_servers; i++)
        if (c->ups[i] && c->ups[i]->in && inst_pid(c->ups[i]->in) != 0)
            return false;
    return true;
}

static void up_closed(uv_handle_t *h)
{
    free(h->data);
}

void ctl_up_free_all(ctl *c)
{
    for (size_t i = 0; c->ups && i < c->cfg->n_servers; i++) {
        ctl_up *up = c->ups[i];

        if (!up)
            continue;
        up->stopping = true;
        inst_free(up->in);
        json_decref(up->acc);
        uv_close((uv_handle_t *)&up->timer, up_closed);
    }
    free(c->ups);
    c->ups = NULL;
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

    if (!up || !up->in)
        return NULL;
    st = inst_state(up->in);
    return st == INST_STARTING || st == INST_INITIALIZING || st == INST_READY ? up->in : NULL;
}

bool ctl_up_settled(ctl *c, size_t server)
{
    ctl_up *up = c->ups ? c->ups[server] : NULL;
    inst_state_t st;

    if (!up || !up->in)
        return true;
    st = inst_state(up->in);
    if (st == INST_READY)
        return up->lists_loaded;
    return st != INST_NEW && st != INST_STARTING && st != INST_INITIALIZING;
}

const char *ctl_up_state_name(ctl *c, size_t server)
{
    ctl_up *up = c->ups ? c->ups[server] : NULL;

    if (!up)
        return NULL;
    if (!up->in)
        return "backing off";
    if (inst_state(up->in) == INST_FAILED && uv_is_active((uv_handle_t *)&up->timer))
        return "backing off";
    return inst_state_name(inst_state(up->in));
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
