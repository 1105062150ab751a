/* ctl_admin_edit: the Admin calls that change the configuration (servers, groups, bearer
 * keys) or act on instances. A change is made to a copy of the settings file's JSON, checked
 * by the same parser that loads the file, written atomically over the file, and applied by
 * the reload path, so it behaves exactly like an edit made by hand. Loop thread. */
#include "ctl_internal.h"
#include "ctl_up.h"

#include "ids.h"
#include "log.h"
#include "mcphub/v1/admin.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EDIT_TOKEN_BYTES 32

/* Writes text over path: a new file in the same directory, synced, renamed over it, and the
 * directory synced, so a crash leaves either the old file or the new one. */
static int edit_write_atomic(const char *path, const char *text)
{
    size_t len = strlen(text), off = 0;
    char *tmp = NULL, *dcopy = NULL;
    int fd = -1, dfd = -1, rc = 0;

    if (asprintf(&tmp, "%s.mcphub-%ld.tmp", path, (long)getpid()) < 0)
        abort();
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        rc = -errno;
        goto out;
    }
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        off += (size_t)n;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        rc = -errno;
        fd = -1;
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        rc = -errno;
        goto out;
    }
    if (!(dcopy = strdup(path)))
        abort();
    if ((dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
out:
    if (fd >= 0)
        close(fd);
    if (rc < 0)
        unlink(tmp);
    free(tmp);
    free(dcopy);
    return rc;
}

/* Checks root (stolen) as a settings file, writes it and applies it. On failure the call is
 * failed with the reason and nothing changed; returns 0 or -1. */
static int edit_commit(ctl *c, rpc_call *call, json_t *root, const char *what)
{
    char *text = NULL, msg[1200];
    cfg *probe = NULL;
    cfg_error err;
    int rc = -1, e;

    if (!c->config_path) {
        rpc_call_fail(call, GRPC_STATUS_FAILED_PRECONDITION,
                      "control runs on its embedded default configuration: start it with "
                      "--config FILE to change it");
        goto out;
    }
    if (!(text = json_dumps(root, JSON_INDENT(2))))
        abort();
    if (cfg_parse(text, strlen(text), c->config_path, &probe, &err) < 0) {
        cfg_error_format(&err, msg, sizeof msg);
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        goto out;
    }
    cfg_free(probe);
    {
        size_t n = strlen(text);
        char *t = realloc(text, n + 2);

        if (!t)
            abort();
        text = t;
        text[n] = '\n';
        text[n + 1] = '\0';
    }
    if ((e = edit_write_atomic(c->config_path, text)) < 0) {
        snprintf(msg, sizeof msg, "cannot write %s: %s", c->config_path, strerror(-e));
        log_error("admin change not saved", "path=%s error=\"%s\"", c->config_path,
                  strerror(-e));
        rpc_call_fail(call, GRPC_STATUS_INTERNAL, msg);
        goto out;
    }
    log_info("configuration changed by admin", "change=\"%s\"", what);
    if ((e = ctl_reload_now(c, "admin")) < 0) {
        rpc_call_fail(call, e == -ECANCELED ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_INTERNAL,
                      e == -ECANCELED ? "control is shutting down" : "the saved file did not load");
        goto out;
    }
    rc = 0;
out:
    free(text);
    json_decref(root);
    return rc;
}

/* A copy of the file's JSON with its object member key (created when absent). */
static json_t *edit_root(ctl *c, const char *key, json_t **member, bool array)
{
    json_t *root = json_deep_copy(c->cfg->root);
    json_t *m;

    if (!root)
        abort();
    m = json_object_get(root, key);
    if (array ? !json_is_array(m) : !json_is_object(m)) {
        m = array ? json_array() : json_object();
        json_object_set_new(root, key, m);
    }
    *member = m;
    return root;
}

static json_t *edit_parse_object(rpc_call *call, const char *text, const char *what)
{
    json_error_t jerr;
    json_t *v = json_loads(text ? text : "", JSON_REJECT_DUPLICATES, &jerr);
    char msg[300];

    if (!json_is_object(v)) {
        snprintf(msg, sizeof msg, "%s must be a JSON object%s%s", what, v ? "" : ": ",
                 v ? "" : jerr.text);
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        json_decref(v);
        return NULL;
    }
    return v;
}

static size_t edit_server_index(ctl *c, rpc_call *call, const char *name)
{
    const cfg_server *s = name && name[0] ? cfg_find_server(c->cfg, name) : NULL;
    char msg[300];

    if (!s) {
        snprintf(msg, sizeof msg, "no server named '%.200s'", name ? name : "");
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, msg);
        return SIZE_MAX;
    }
    return (size_t)(s - c->cfg->servers);
}

static void edit_reply_changed(rpc_call *call, bool changed)
{
    Mcphub__V1__ChangeReply reply = MCPHUB__V1__CHANGE_REPLY__INIT;

    reply.changed = changed;
    rpc_call_reply(call, &reply.base);
}

/* ---- servers -------------------------------------------------------------------------- */

static void edit_get_server(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__GetServerRequest *req =
        (const Mcphub__V1__GetServerRequest *)rpc_call_request(call);
    Mcphub__V1__GetServerReply reply = MCPHUB__V1__GET_SERVER_REPLY__INIT;
    Mcphub__V1__ServerInfo info;
    size_t i = edit_server_index(c, call, req->name);
    char *text;

    (void)arg;
    if (i == SIZE_MAX)
        return;
    ctl_admin_server_info(c, i, &info);
    if (!(text = json_dumps(c->cfg->servers[i].json, JSON_COMPACT)))
        abort();
    reply.server = &info;
    reply.settings_json = text;
    rpc_call_reply(call, &reply.base);
    free(text);
}

static void edit_put_server(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__PutServerRequest *req =
        (const Mcphub__V1__PutServerRequest *)rpc_call_request(call);
    Mcphub__V1__PutServerReply reply = MCPHUB__V1__PUT_SERVER_REPLY__INIT;
    json_t *entry, *servers, *root;
    char what[300];

    (void)arg;
    if (!req->name[0]) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "a server needs a name");
        return;
    }
    if (!(entry = edit_parse_object(call, req->settings_json, "settings_json")))
        return;
    root = edit_root(c, "mcpServers", &servers, false);
    reply.created = json_object_get(servers, req->name) == NULL;
    json_object_set_new(servers, req->name, entry);
    snprintf(what, sizeof what, "%s server %.200s", reply.created ? "add" : "replace",
             req->name);
    if (edit_commit(c, call, root, what) == 0)
        rpc_call_reply(call, &reply.base);
}

/* Drops name from every group's server list (so removing a server never strands a group). */
static void edit_unlink_from_groups(json_t *root, const char *name)
{
    json_t *groups = json_object_get(root, "groups"), *g;
    size_t i;

    json_array_foreach(groups, i, g) {
        json_t *servers = json_object_get(g, "servers");

        for (size_t k = json_array_size(servers); k-- > 0;) {
            json_t *m = json_array_get(servers, k);
            const char *n = json_is_string(m) ? json_string_value(m)
                                              : json_string_value(json_object_get(m, "name"));

            if (n && strcmp(n, name) == 0)
                json_array_remove(servers, k);
        }
    }
}

static void edit_remove_server(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__ServerNameRequest *req =
        (const Mcphub__V1__ServerNameRequest *)rpc_call_request(call);
    json_t *servers, *root;
    char what[300];

    (void)arg;
    if (edit_server_index(c, call, req->name) == SIZE_MAX)
        return;
    root = edit_root(c, "mcpServers", &servers, false);
    json_object_del(servers, req->name);
    edit_unlink_from_groups(root, req->name);
    snprintf(what, sizeof what, "remove server %.200s", req->name);
    if (edit_commit(c, call, root, what) == 0)
        edit_reply_changed(call, true);
}

static void edit_set_enabled(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__SetServerEnabledRequest *req =
        (const Mcphub__V1__SetServerEnabledRequest *)rpc_call_request(call);
    size_t i = edit_server_index(c, call, req->name);
    json_t *servers, *root;
    char what[300];

    (void)arg;
    if (i == SIZE_MAX)
        return;
    if (c->cfg->servers[i].enabled == (bool)req->enabled) {
        edit_reply_changed(call, false);
        return;
    }
    root = edit_root(c, "mcpServers", &servers, false);
    json_object_set_new(json_object_get(servers, req->name), "enabled",
                        json_boolean(req->enabled));
    snprintf(what, sizeof what, "%s server %.200s", req->enabled ? "enable" : "disable",
             req->name);
    if (edit_commit(c, call, root, what) == 0)
        edit_reply_changed(call, true);
}

static void edit_restart_server(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__ServerNameRequest *req =
        (const Mcphub__V1__ServerNameRequest *)rpc_call_request(call);
    size_t i = edit_server_index(c, call, req->name);

    (void)arg;
    if (i != SIZE_MAX)
        edit_reply_changed(call, ctl_up_restart(c, i, NULL) > 0);
}

static void edit_restart_instance(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__RestartInstanceRequest *req =
        (const Mcphub__V1__RestartInstanceRequest *)rpc_call_request(call);
    size_t i = edit_server_index(c, call, req->server);
    int n;

    (void)arg;
    if (i == SIZE_MAX)
        return;
    n = ctl_up_restart(c, i, req->session_id[0] ? req->session_id : "");
    if (n == 0) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, req->session_id[0]
                                                       ? "that session has no running instance of the server"
                                                       : "the server has no running shared instance");
        return;
    }
    edit_reply_changed(call, true);
}

/* ---- groups --------------------------------------------------------------------------- */

static void edit_list_groups(ctl *c, rpc_call *call, void *arg)
{
    Mcphub__V1__ListGroupsReply reply = MCPHUB__V1__LIST_GROUPS_REPLY__INIT;
    size_t n = c->cfg->n_groups, total = 0;
    Mcphub__V1__GroupInfo *infos = calloc(n ? n : 1, sizeof *infos);
    Mcphub__V1__GroupInfo **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    char **names;
    json_t *jgroups = json_object_get(c->cfg->root, "groups");

    (void)arg;
    for (size_t i = 0; i < n; i++)
        total += c->cfg->groups[i].n_members;
    names = calloc(total ? total : 1, sizeof *names);
    if (!infos || !ptrs || !names)
        abort();
    total = 0;
    for (size_t i = 0; i < n; i++) {
        const cfg_group *g = &c->cfg->groups[i];
        json_t *jg = json_array_size(jgroups) == n ? json_array_get(jgroups, i) : NULL;
        const char *desc = json_string_value(json_object_get(jg, "description"));

        mcphub__v1__group_info__init(&infos[i]);
        infos[i].name = (char *)(g->name ? g->name : "");
        infos[i].id = (char *)(g->id ? g->id : "");
        infos[i].description = (char *)(desc ? desc : "");
        infos[i].servers = &names[total];
        for (size_t k = 0; k < g->n_members; k++)
            names[total++] = (char *)g->members[k].server;
        infos[i].n_servers = g->n_members;
        ptrs[i] = &infos[i];
    }
    reply.n_groups = n;
    reply.groups = ptrs;
    rpc_call_reply(call, &reply.base);
    free(names);
    free(ptrs);
    free(infos);
}

/* Index in the file's groups array of the group called name (by name or id), or -1. */
static long edit_group_at(json_t *groups, const char *name)
{
    json_t *g;
    size_t i;

    json_array_foreach(groups, i, g) {
        const char *n = json_string_value(json_object_get(g, "name"));
        const char *id = json_string_value(json_object_get(g, "id"));

        if ((n && strcmp(n, name) == 0) || (id && strcmp(id, name) == 0))
            return (long)i;
    }
    return -1;
}

static void edit_put_group(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__PutGroupRequest *req =
        (const Mcphub__V1__PutGroupRequest *)rpc_call_request(call);
    Mcphub__V1__PutServerReply reply = MCPHUB__V1__PUT_SERVER_REPLY__INIT;
    json_t *entry, *groups, *root;
    const char *name;
    char what[300];
    long at;

    (void)arg;
    if (!(entry = edit_parse_object(call, req->settings_json, "settings_json")))
        return;
    if (!(name = json_string_value(json_object_get(entry, "name"))) || !name[0]) {
        json_decref(entry);
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "a group needs a \"name\"");
        return;
    }
    root = edit_root(c, "groups", &groups, true);
    at = edit_group_at(groups, name);
    reply.created = at < 0;
    snprintf(what, sizeof what, "%s group %.200s", at < 0 ? "add" : "replace", name);
    if (at < 0)
        json_array_append_new(groups, entry);
    else
        json_array_set_new(groups, (size_t)at, entry);
    if (edit_commit(c, call, root, what) == 0)
        rpc_call_reply(call, &reply.base);
}

static void edit_remove_group(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__ServerNameRequest *req =
        (const Mcphub__V1__ServerNameRequest *)rpc_call_request(call);
    json_t *groups, *root = edit_root(c, "groups", &groups, true);
    long at = edit_group_at(groups, req->name);
    char what[300];

    (void)arg;
    if (at < 0) {
        json_decref(root);
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "no such group");
        return;
    }
    json_array_remove(groups, (size_t)at);
    snprintf(what, sizeof what, "remove group %.200s", req->name);
    if (edit_commit(c, call, root, what) == 0)
        edit_reply_changed(call, true);
}

/* ---- bearer keys ---------------------------------------------------------------------- */

static void edit_list_keys(ctl *c, rpc_call *call, void *arg)
{
    Mcphub__V1__ListKeysReply reply = MCPHUB__V1__LIST_KEYS_REPLY__INIT;
    size_t n = c->cfg->n_keys;
    Mcphub__V1__KeyInfo *infos = calloc(n ? n : 1, sizeof *infos);
    Mcphub__V1__KeyInfo **ptrs = calloc(n ? n : 1, sizeof *ptrs);

    (void)arg;
    if (!infos || !ptrs)
        abort();
    for (size_t i = 0; i < n; i++) {
        const cfg_bearer_key *k = &c->cfg->keys[i];

        mcphub__v1__key_info__init(&infos[i]);
        infos[i].name = (char *)k->name;
        infos[i].enabled = k->enabled;
        infos[i].access_type = (char *)cfg_access_name(k->access);
        infos[i].allowed_groups = (char **)k->allowed_groups;
        infos[i].n_allowed_groups = k->n_allowed_groups;
        infos[i].allowed_servers = (char **)k->allowed_servers;
        infos[i].n_allowed_servers = k->n_allowed_servers;
        ptrs[i] = &infos[i];
    }
    reply.n_keys = n;
    reply.keys = ptrs;
    rpc_call_reply(call, &reply.base);
    free(ptrs);
    free(infos);
}

static long edit_key_at(json_t *keys, const char *name)
{
    json_t *k;
    size_t i;

    json_array_foreach(keys, i, k) {
        const char *n = json_string_value(json_object_get(k, "name"));
        const char *id = json_string_value(json_object_get(k, "id"));

        if ((n && strcmp(n, name) == 0) || (id && strcmp(id, name) == 0))
            return (long)i;
    }
    return -1;
}

static json_t *edit_string_array(char **v, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static void edit_add_key(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__AddKeyRequest *req =
        (const Mcphub__V1__AddKeyRequest *)rpc_call_request(call);
    Mcphub__V1__AddKeyReply reply = MCPHUB__V1__ADD_KEY_REPLY__INIT;
    char token[64], id[32], what[300];
    json_t *keys, *root, *entry;

    (void)arg;
    if (!req->name[0]) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "a key needs a name");
        return;
    }
    root = edit_root(c, "bearerKeys", &keys, true);
    if (edit_key_at(keys, req->name) >= 0) {
        json_decref(root);
        rpc_call_fail(call, GRPC_STATUS_ALREADY_EXISTS, "a key with that name exists");
        return;
    }
    if (req->token[0])
        snprintf(token, sizeof token, "%s", req->token);
    else if (id_random(token, sizeof token, EDIT_TOKEN_BYTES) < 0)
        abort();
    if (req->token[0] && strlen(req->token) >= sizeof token) {
        json_decref(root);
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "the token is longer than 63 bytes");
        return;
    }
    id_random(id, sizeof id, 16);
    entry = json_pack("{s:s, s:s, s:s, s:b, s:s, s:o, s:o}", "id", id, "name", req->name,
                      "token", token, "enabled", 1, "accessType",
                      req->access_type[0] ? req->access_type : "all", "allowedGroups",
                      edit_string_array(req->allowed_groups, req->n_allowed_groups),
                      "allowedServers",
                      edit_string_array(req->allowed_servers, req->n_allowed_servers));
    if (!entry)
        abort();
    json_array_append_new(keys, entry);
    snprintf(what, sizeof what, "add key %.200s", req->name);
    if (edit_commit(c, call, root, what) == 0) {
        reply.token = token;
        rpc_call_reply(call, &reply.base);
    }
}

static void edit_revoke_key(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__ServerNameRequest *req =
        (const Mcphub__V1__ServerNameRequest *)rpc_call_request(call);
    json_t *keys, *root = edit_root(c, "bearerKeys", &keys, true);
    long at = edit_key_at(keys, req->name);
    char what[300];

    (void)arg;
    if (at < 0) {
        bool migrated = false;

        for (size_t i = 0; i < c->cfg->n_keys; i++)
            migrated |= c->cfg->keys[i].migrated && strcmp(c->cfg->keys[i].name, req->name) == 0;
        json_decref(root);
        rpc_call_fail(call, migrated ? GRPC_STATUS_FAILED_PRECONDITION : GRPC_STATUS_NOT_FOUND,
                      migrated ? "that key is systemConfig.routing.bearerAuthKey: change it there"
                               : "no such key");
        return;
    }
    json_array_remove(keys, (size_t)at);
    snprintf(what, sizeof what, "revoke key %.200s", req->name);
    if (edit_commit(c, call, root, what) == 0)
        edit_reply_changed(call, true);
}

/* ---- reload --------------------------------------------------------------------------- */

static void edit_reload(ctl *c, rpc_call *call, void *arg)
{
    Mcphub__V1__ReloadReply reply = MCPHUB__V1__RELOAD_REPLY__INIT;
    uint64_t before = c->config_version;
    char msg[300];
    int rc;

    (void)arg;
    if (!c->config_path) {
        rpc_call_fail(call, GRPC_STATUS_FAILED_PRECONDITION,
                      "control runs on its embedded default configuration");
        return;
    }
    if ((rc = ctl_reload_now(c, "admin")) < 0) {
        snprintf(msg, sizeof msg, "the settings file was rejected (%s); the last good one "
                                  "stays in force: see control's log",
                 strerror(-rc));
        rpc_call_fail(call, rc == -ECANCELED ? GRPC_STATUS_UNAVAILABLE
                                             : GRPC_STATUS_INVALID_ARGUMENT,
                      msg);
        return;
    }
    reply.config_version = c->config_version;
    reply.changed = c->config_version != before;
    rpc_call_reply(call, &reply.base);
}

/* ---- registration ----------------------------------------------------------------------- */

static const struct {
    const char *method;
    ctl_work_fn fn;
} edit_methods[] = {
    {"GetServer", edit_get_server},           {"PutServer", edit_put_server},
    {"RemoveServer", edit_remove_server},     {"SetServerEnabled", edit_set_enabled},
    {"RestartServer", edit_restart_server},   {"RestartInstance", edit_restart_instance},
    {"ListGroups", edit_list_groups},         {"PutGroup", edit_put_group},
    {"RemoveGroup", edit_remove_group},       {"ListKeys", edit_list_keys},
    {"AddKey", edit_add_key},                 {"RevokeKey", edit_revoke_key},
    {"Reload", edit_reload},
};

int ctl_admin_edit_register(ctl *c)
{
    int rc;

    for (size_t i = 0; i < sizeof edit_methods / sizeof edit_methods[0]; i++)
        if ((rc = ctl_admin_add(c, edit_methods[i].method, edit_methods[i].fn)) < 0)
            return rc;
    return 0;
}
