/* ctl_reload: live configuration. Watches the settings file (through its directory, so that
 * an editor's write-to-temp-and-rename is seen as well as an in-place write), reloads on a
 * change or SIGHUP, and moves the running hub to the new configuration without a restart:
 * servers added start, removed or disabled ones stop, changed ones restart, untouched ones
 * keep running; sessions whose lists changed hear list_changed; sessions whose key was
 * revoked end; edges get the new settings. An invalid file changes nothing. */
#include "ctl_internal.h"

#include "ctl_mcp.h"
#include "ctl_up.h"
#include "log.h"

#include <errno.h>
#include <malloc.h>
#include <libgen.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RELOAD_DEBOUNCE_MS 150 /* editors write in several steps: wait for the last one */

/* Moves the per-server lists to the new indexes (kept by name, a gone server's dropped). */
static void reload_move_lists(ctl *c, const cfg *next, const size_t *map, size_t n_old)
{
    json_t **lists[3], **templates;

    for (int k = 0; k < 3; k++)
        if (!(lists[k] = calloc(next->n_servers + 1, sizeof *lists[k])))
            abort();
    if (!(templates = calloc(next->n_servers + 1, sizeof *templates)))
        abort();
    for (size_t i = 0; i < n_old; i++) {
        bool kept = map[i] != SIZE_MAX;

        for (int k = 0; k < 3; k++) {
            if (kept)
                lists[k][map[i]] = c->lists[k][i];
            else
                json_decref(c->lists[k][i]);
        }
        if (kept)
            templates[map[i]] = c->templates[i];
        else
            json_decref(c->templates[i]);
    }
    for (int k = 0; k < 3; k++) {
        free(c->lists[k]);
        c->lists[k] = lists[k];
    }
    free(c->templates);
    c->templates = templates;
}

static void reload_log_restart_only(const cfg *old, const cfg *next)
{
    if (strcmp(old->hub.listen, next->hub.listen) != 0 ||
        strcmp(old->hub.admin_listen, next->hub.admin_listen) != 0)
        log_warn("listen addresses change only with a restart", "origin=%s", next->origin);
}

int ctl_reload_now(ctl *c, const char *why)
{
    cfg *next = NULL, *old = c->cfg;
    cfg_error err;
    size_t n_old = old->n_servers;
    size_t *map;
    json_t *before;
    char msg[1024];
    int rc;

    if (!c->config_path)
        return -ENOENT;
    if (c->state != CTL_RUNNING)
        return -ECANCELED;
    if ((rc = cfg_load_file(c->config_path, &next, &err)) < 0) {
        cfg_error_format(&err, msg, sizeof msg);
        log_error("configuration rejected: the last good one stays in force", "error=\"%s\"",
                  msg);
        c->reload_failures++;
        return rc;
    }
    if (json_equal(old->root, next->root)) {
        /* Same text (environment variables aside): nothing to move. */
        log_debug("configuration unchanged", "trigger=%s", why);
        cfg_free(next);
        return 0;
    }
    reload_log_restart_only(old, next);
    for (size_t i = 0; i < next->n_servers; i++)
        if (!next->servers[i].supported)
            log_warn("server skipped", "server=%s reason=\"%s\"", next->servers[i].name,
                     next->servers[i].unsupported_reason);
    if (!(map = calloc(n_old + 1, sizeof *map)))
        abort();
    before = ctl_mcp_visible(c);
    /* Under the old configuration: instances that must go are stopped, failing their calls. */
    ctl_up_reload_begin(c, next, map);
    ctl_mcp_remap(c, map, n_old);
    reload_move_lists(c, next, map, n_old);
    c->cfg = next;
    c->config_version++;
    ctl_up_reload_finish(c, n_old, map);
    ctl_mcp_announce_changes(c, before);
    ctl_gateway_end_revoked(c);
    ctl_gateway_config_changed(c);
    c->reloads++;
    log_info("configuration reloaded",
             "trigger=%s origin=%s version=%llu servers=%zu groups=%zu keys=%zu", why,
             next->origin, (unsigned long long)c->config_version, next->n_servers,
             next->n_groups, next->n_keys);
    json_decref(before);
    free(map);
    cfg_free(old);
    /* A reload churns through the lists of every route: give the freed pages back rather
     * than keep the peak for the life of the process. */
    malloc_trim(0);
    return 0;
}

static void reload_on_timer(uv_timer_t *t)
{
    (void)ctl_reload_now(t->data, "file");
}

static void reload_on_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    ctl *c = h->data;
    char *copy;
    const char *base;
    bool ours;

    (void)events;
    if (status < 0) {
        log_warn("settings file watch failed", "error=\"%s\"", uv_strerror(status));
        return;
    }
    if (!(copy = strdup(c->config_path)))
        abort();
    base = basename(copy);
    /* A Kubernetes ConfigMap volume changes by swapping its `..data` symlink: the file's
     * own name never shows up in the events then. Unchanged content is skipped anyway. */
    ours = !filename || strcmp(filename, base) == 0 || strcmp(filename, "..data") == 0;
    free(copy);
    if (ours)
        uv_timer_start(&c->reload_timer, reload_on_timer, RELOAD_DEBOUNCE_MS, 0);
}

static void reload_on_sighup(uv_signal_t *h, int sig)
{
    (void)sig;
    (void)ctl_reload_now(h->data, "SIGHUP");
}

int ctl_reload_start(ctl *c)
{
    char *copy;
    int rc;

    if (!c->config_path || c->reload_on)
        return 0;
    uv_fs_event_init(&c->loop, &c->watch);
    uv_timer_init(&c->loop, &c->reload_timer);
    uv_signal_init(&c->loop, &c->sighup);
    c->watch.data = c->reload_timer.data = c->sighup.data = c;
    c->reload_on = true;
    uv_signal_start(&c->sighup, reload_on_sighup, SIGHUP);
    if (!(copy = strdup(c->config_path)))
        abort();
    rc = uv_fs_event_start(&c->watch, reload_on_event, dirname(copy), 0);
    if (rc < 0)
        log_warn("settings file not watched: reload with SIGHUP", "path=%s error=\"%s\"",
                 c->config_path, uv_strerror(rc));
    else
        log_info("watching the settings file", "path=%s", c->config_path);
    free(copy);
    return 0;
}

static void reload_closed(uv_handle_t *h)
{
    (void)h;
}

void ctl_reload_stop(ctl *c)
{
    if (!c->reload_on)
        return;
    c->reload_on = false;
    uv_close((uv_handle_t *)&c->watch, reload_closed);
    uv_close((uv_handle_t *)&c->reload_timer, reload_closed);
    uv_close((uv_handle_t *)&c->sighup, reload_closed);
}
