/* ctl: the control daemon's loop, its work queue from gRPC threads, startup and the drain
 * that SIGTERM starts. */
#include "ctl_internal.h"
#include "ctl_mcp.h"
#include "ctl_metrics.h"
#include "ctl_up.h"

#include "ids.h"
#include "rpc_reflection.h"
#include "log.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CTL_DRAIN_TICK_MS 10

void ctl_post(ctl *c, ctl_work_fn fn, rpc_call *call, void *arg)
{
    ctl_work *w = malloc(sizeof *w);

    if (!w)
        abort();
    w->fn = fn;
    w->call = call;
    w->arg = arg;
    w->next = NULL;
    pthread_mutex_lock(&c->work_mu);
    if (c->work_tail)
        c->work_tail->next = w;
    else
        c->work_head = w;
    c->work_tail = w;
    pthread_mutex_unlock(&c->work_mu);
    uv_async_send(&c->wake);
}

static void ctl_begin_drain(ctl *c);
static void ctl_free_lists(ctl *c);

static void ctl_on_wake(uv_async_t *h)
{
    ctl *c = h->data;
    ctl_work *w;
    bool stop;

    pthread_mutex_lock(&c->work_mu);
    w = c->work_head;
    c->work_head = c->work_tail = NULL;
    stop = c->stop_requested;
    pthread_mutex_unlock(&c->work_mu);
    while (w) {
        ctl_work *next = w->next;

        c->rpc_calls++;
        w->fn(c, w->call, w->arg);
        free(w);
        w = next;
    }
    if (stop && c->state == CTL_RUNNING)
        ctl_begin_drain(c);
}

void ctl_stop(ctl *c)
{
    pthread_mutex_lock(&c->work_mu);
    c->stop_requested = true;
    pthread_mutex_unlock(&c->work_mu);
    uv_async_send(&c->wake);
}

static void ctl_on_signal(uv_signal_t *h, int signum)
{
    ctl *c = h->data;

    log_info("signal received: draining", "signal=%d", signum);
    if (c->state == CTL_RUNNING)
        ctl_begin_drain(c);
}

static size_t ctl_live_calls(ctl *c)
{
    return rpc_server_live_calls(c->gateway) + rpc_server_live_calls(c->admin);
}

static void ctl_close_cb(uv_handle_t *h)
{
}

/* The shutdown sequence, one step per state, checked every CTL_DRAIN_TICK_MS. */
static void ctl_on_drain_tick(uv_timer_t *t)
{
    ctl *c = t->data;
    int64_t now = rpc_now_ms();

    switch (c->state) {
    case CTL_RUNNING:
        break;
    case CTL_DRAINING:
        /* Calls in flight finish (their sampling answers and cancels still come in). */
        if (c->running && now < c->drain_deadline_ms)
            break;
        if (c->running)
            log_warn("drain period over: cancelling calls", "drain_ms=%lld", (long long)c->drain_ms);
        c->state = CTL_CLOSING;
        c->close_deadline_ms = now + 2000;
        ctl_reload_stop(c);
        ctl_gateway_drain(c);
        /* Upstreams: stdin closed, TERM, KILL after their grace period. */
        ctl_up_stop_all(c);
        break;
    case CTL_CLOSING:
        /* Edges read their last events (the session ends) before the servers go. */
        if (ctl_live_calls(c) > 0 && now < c->close_deadline_ms)
            break;
        c->state = CTL_STOPPING;
        rpc_server_shutdown(c->gateway);
        rpc_server_shutdown(c->admin);
        break;
    case CTL_STOPPING:
        if (!rpc_server_stopped(c->gateway) || !rpc_server_stopped(c->admin) ||
            !ctl_up_all_stopped(c))
            break;
        uv_timer_stop(&c->drain_timer);
        ctl_up_free_all(c);
        uv_close((uv_handle_t *)&c->idle_timer, ctl_close_cb);
        uv_close((uv_handle_t *)&c->drain_timer, ctl_close_cb);
        ctl_metrics_stop(c);
        uv_close((uv_handle_t *)&c->wake, ctl_close_cb);
        uv_close((uv_handle_t *)&c->sigterm, ctl_close_cb);
        uv_close((uv_handle_t *)&c->sigint, ctl_close_cb);
        break;
    }
}

static void ctl_on_idle_tick(uv_timer_t *t)
{
    ctl_gateway_expire_idle(t->data);
    ctl_mcp_expire_parked(t->data);
}

static void ctl_begin_drain(ctl *c)
{
    c->state = CTL_DRAINING;
    uv_timer_stop(&c->idle_timer);
    c->drain_deadline_ms = rpc_now_ms() + c->drain_ms;
    rpc_health_set(c->health, "", RPC_HEALTH_NOT_SERVING);
    uv_timer_start(&c->drain_timer, ctl_on_drain_tick, 0, CTL_DRAIN_TICK_MS);
}

/* The embedded default configuration runs the fixture server that sits next to this
 * executable; tell it where that is unless the environment already does. */
static void ctl_set_bin_dir(void)
{
    char exe[4096];
    ssize_t n;

    if (getenv("MCPHUB_BIN_DIR"))
        return;
    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    setenv("MCPHUB_BIN_DIR", dirname(exe), 1);
}

static int ctl_load_config(ctl *c)
{
    cfg_error err;
    char msg[2048];
    int rc;

    if (c->config_path) {
        rc = cfg_load_file(c->config_path, &c->cfg, &err);
    } else {
        ctl_set_bin_dir();
        rc = cfg_load_default(&c->cfg, &err);
    }
    if (rc < 0) {
        cfg_error_format(&err, msg, sizeof msg);
        log_error("invalid configuration", "error=\"%s\"", msg);
        return -EINVAL;
    }
    c->config_version = 1;
    for (size_t i = 0; i < c->cfg->n_servers; i++) {
        const cfg_server *s = &c->cfg->servers[i];

        if (!s->supported)
            log_warn("server skipped", "server=%s reason=\"%s\"", s->name, s->unsupported_reason);
    }
    log_info("configuration loaded", "origin=%s servers=%zu groups=%zu keys=%zu",
             c->cfg->origin, c->cfg->n_servers, c->cfg->n_groups, c->cfg->n_keys);
    return 0;
}

static int ctl_listen(rpc_server *srv, const char *what, const char *addr, int *port)
{
    char host[256];
    const char *colon = strrchr(addr, ':');

    if (rpc_server_listen(srv, addr, port) < 0) {
        log_error("cannot listen", "service=%s addr=%s", what, addr);
        return -EADDRNOTAVAIL;
    }
    snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - addr) : (int)strlen(addr), addr);
    log_info("listening", "service=%s addr=%s:%d", what, host, *port);
    return 0;
}

/* The admin token: the file's first line, without surrounding blanks. */
static int ctl_read_token(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    size_t n;
    char *p;

    if (!f) {
        log_error("cannot read the admin token file", "path=%s error=\"%s\"", path,
                  strerror(errno));
        return -EINVAL;
    }
    n = fgets(buf, (int)size, f) ? strlen(buf) : 0;
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
                     buf[n - 1] == '\t'))
        buf[--n] = '\0';
    for (p = buf; *p == ' ' || *p == '\t'; p++)
        ;
    memmove(buf, p, strlen(p) + 1);
    if (!buf[0] || strlen(buf) >= size - 1) {
        log_error("the admin token file holds no usable token", "path=%s", path);
        buf[0] = '\0';
        return -EINVAL;
    }
    log_info("admin calls need the token", "path=%s", path);
    return 0;
}

int ctl_new(const ctl_opts *opts, ctl **out)
{
    ctl *c = calloc(1, sizeof *c);
    const char *listen;
    const char *admin_listen;
    int rc;

    *out = NULL;
    if (!c)
        abort();
    pthread_mutex_init(&c->work_mu, NULL);
    c->started_ms = rpc_now_ms();
    c->drain_ms = opts->drain_ms > 0 ? opts->drain_ms : 5000;
    id_random(c->control_id, sizeof c->control_id, 8);
    if (opts->config_path && !(c->config_path = strdup(opts->config_path)))
        abort();
    if (opts->admin_token_file &&
        (rc = ctl_read_token(opts->admin_token_file, c->admin_token, sizeof c->admin_token)) < 0)
        goto fail;
    if ((rc = ctl_load_config(c)) < 0)
        goto fail;
    c->sessions = sess_table_new();
    seal_key_init(&c->seal);
    for (int k = 0; k < 3; k++)
        if (!(c->lists[k] = calloc(c->cfg->n_servers + 1, sizeof *c->lists[k])))
            abort();
    if (!(c->templates = calloc(c->cfg->n_servers + 1, sizeof *c->templates)))
        abort();

    listen = opts->listen ? opts->listen : c->cfg->hub.listen;
    admin_listen = opts->admin_listen ? opts->admin_listen : c->cfg->hub.admin_listen;
    c->gateway = rpc_server_new(NULL);
    c->admin = rpc_server_new(&(rpc_server_opts){.share_cq = c->gateway});
    c->health = rpc_health_new();
    {
        static const char *const gw[] = {"mcphub.v1.Gateway", "grpc.health.v1.Health"};
        static const char *const adm[] = {"mcphub.v1.Admin", "grpc.health.v1.Health"};

        c->refl_gateway = rpc_reflection_new(gw, 2);
        c->refl_admin = rpc_reflection_new(adm, 2);
    }
    if ((rc = rpc_health_register(c->health, c->gateway)) < 0 ||
        (rc = rpc_health_register(c->health, c->admin)) < 0 ||
        (rc = rpc_reflection_register(c->refl_gateway, c->gateway)) < 0 ||
        (rc = rpc_reflection_register(c->refl_admin, c->admin)) < 0 ||
        (rc = ctl_gateway_register(c)) < 0 || (rc = ctl_admin_register(c)) < 0)
        goto fail;
    if ((rc = ctl_listen(c->gateway, "gateway", listen, &c->gateway_port)) < 0 ||
        (rc = ctl_listen(c->admin, "admin", admin_listen, &c->admin_port)) < 0 ||
        (rc = ctl_metrics_new(c, opts->metrics_listen)) < 0)
        goto fail;

    uv_loop_init(&c->loop);
    uv_async_init(&c->loop, &c->wake, ctl_on_wake);
    c->wake.data = c;
    uv_signal_init(&c->loop, &c->sigterm);
    uv_signal_init(&c->loop, &c->sigint);
    c->sigterm.data = c->sigint.data = c;
    uv_timer_init(&c->loop, &c->drain_timer);
    c->drain_timer.data = c;
    uv_timer_init(&c->loop, &c->idle_timer);
    c->idle_timer.data = c;
    *out = c;
    return 0;
fail:
    /* The loop was never initialized: free the pieces by hand. */
    ctl_metrics_free(c);
    rpc_server_free(c->admin); /* first: it serves on the gateway's queue */
    rpc_server_free(c->gateway);
    rpc_health_free(c->health);
    rpc_reflection_free(c->refl_gateway);
    rpc_reflection_free(c->refl_admin);
    sess_table_free(c->sessions);
    ctl_free_lists(c);
    cfg_free(c->cfg);
    free(c->config_path);
    pthread_mutex_destroy(&c->work_mu);
    free(c);
    return rc;
}

int ctl_gateway_port(const ctl *c)
{
    return c->gateway_port;
}

int ctl_admin_port(const ctl *c)
{
    return c->admin_port;
}

int ctl_run(ctl *c)
{
    rpc_server_start(c->gateway);
    rpc_server_start(c->admin);
    uv_signal_start(&c->sigterm, ctl_on_signal, SIGTERM);
    uv_signal_start(&c->sigint, ctl_on_signal, SIGINT);
    rpc_health_set(c->health, "", RPC_HEALTH_SERVING);
    rpc_health_set(c->health, "mcphub.v1.Gateway", RPC_HEALTH_SERVING);
    rpc_health_set(c->health, "mcphub.v1.Admin", RPC_HEALTH_SERVING);
    ctl_up_start_all(c);
    ctl_reload_start(c);
    ctl_metrics_start(c);
    {
        /* Sweep often enough that a session ends within a tenth of its idle timeout. */
        int64_t every = c->cfg->hub.session_idle_timeout_ms / 10;

        every = every < 100 ? 100 : every > 30000 ? 30000 : every;
        uv_timer_start(&c->idle_timer, ctl_on_idle_tick, (uint64_t)every, (uint64_t)every);
    }
    log_info("control ready", "control_id=%s", c->control_id);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    log_info("control stopped", "sessions=%zu edges=%zu", sess_count(c->sessions), c->n_edges);
    return 0;
}

static void ctl_free_lists(ctl *c)
{
    size_t n = c->cfg ? c->cfg->n_servers : 0;

    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; c->lists[k] && i < n; i++)
            json_decref(c->lists[k][i]);
        free(c->lists[k]);
        c->lists[k] = NULL;
    }
    for (size_t i = 0; c->templates && i < n; i++)
        json_decref(c->templates[i]);
    free(c->templates);
    c->templates = NULL;
}

static void ctl_close_any(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, ctl_close_cb);
}

void ctl_free(ctl *c)
{
    ctl_work *w;

    if (!c)
        return;
    ctl_metrics_free(c);
    rpc_server_free(c->admin); /* first: it serves on the gateway's queue */
    rpc_server_free(c->gateway);
    /* Work posted after the loop stopped has only completed calls' leftovers; none is
     * possible once both servers are freed, but be tidy. */
    for (w = c->work_head; w;) {
        ctl_work *next = w->next;
        free(w);
        w = next;
    }
    ctl_gateway_cleanup(c);
    ctl_up_free_all(c);
    rpc_health_free(c->health);
    rpc_reflection_free(c->refl_gateway);
    rpc_reflection_free(c->refl_admin);
    uv_walk(&c->loop, ctl_close_any, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
    ctl_free_lists(c);
    cfg_free(c->cfg);
    free(c->config_path);
    pthread_mutex_destroy(&c->work_mu);
    free(c);
}
