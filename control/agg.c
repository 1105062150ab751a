/* agg: route resolution and list aggregation with MCPHub's naming rules (see agg.h). */
#include "agg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool agg_server_usable(const cfg_server *s)
{
    return s->enabled && s->supported;
}

static void agg_add(agg_route *r, size_t server, const char *exposed, const cfg_group_member *gm)
{
    agg_member *m = &r->members[r->n_members++];

    m->server = server;
    m->exposed = exposed;
    for (int k = 0; k < 3; k++)
        m->select[k] = NULL;
    if (gm) {
        m->select[AGG_TOOLS] = gm->tools.all ? NULL : &gm->tools;
        m->select[AGG_PROMPTS] = gm->prompts.all ? NULL : &gm->prompts;
        m->select[AGG_RESOURCES] = gm->resources.all ? NULL : &gm->resources;
    }
}

int agg_route_resolve(const cfg *c, const char *route, agg_route *out)
{
    const cfg_group *g;
    const cfg_server *s;

    memset(out, 0, sizeof *out);
    if (route[0] == '\0') {
        if (!c->routing.enable_global_route)
            return -ENOENT;
        out->members = calloc(c->n_servers ? c->n_servers : 1, sizeof *out->members);
        if (!out->members)
            abort();
        out->prefixed = true;
        for (size_t i = 0; i < c->n_servers; i++)
            if (agg_server_usable(&c->servers[i]))
                agg_add(out, i, c->servers[i].name, NULL);
        return 0;
    }
    g = cfg_find_group(c, route);
    if (g && !(g->id && strcmp(g->id, route) == 0) && !c->routing.enable_group_name_route)
        g = NULL;
    if (g) {
        out->members = calloc(g->n_members ? g->n_members : 1, sizeof *out->members);
        if (!out->members)
            abort();
        out->prefixed = true;
        out->group = g;
        for (size_t i = 0; i < g->n_members; i++) {
            const cfg_group_member *gm = &g->members[i];

            if (agg_server_usable(&c->servers[gm->server_index]))
                agg_add(out, gm->server_index, gm->alias ? gm->alias : gm->server, gm);
        }
        return 0;
    }
    s = cfg_find_server(c, route);
    if (!s || !agg_server_usable(s))
        return -ENOENT;
    out->members = calloc(1, sizeof *out->members);
    if (!out->members)
        abort();
    agg_add(out, (size_t)(s - c->servers), s->name, NULL);
    return 0;
}

void agg_route_cleanup(agg_route *r)
{
    free(r->members);
    memset(r, 0, sizeof *r);
}

/* True when key names item `name` of server s: bare, or prefixed with the server's name
 * (MCPHub stores both forms in overrides and selections). */
static bool agg_name_matches(const cfg *c, const cfg_server *s, const char *key, const char *name)
{
    size_t sl = strlen(s->name);
    size_t pl = strlen(c->name_separator);

    if (strcmp(key, name) == 0)
        return true;
    return strncmp(key, s->name, sl) == 0 && strncmp(key + sl, c->name_separator, pl) == 0 &&
           strcmp(key + sl + pl, name) == 0;
}

static const cfg_override *agg_override(const cfg *c, const cfg_server *s, agg_kind kind,
                                        const char *name)
{
    const cfg_override *ovs = kind == AGG_TOOLS     ? s->tools
                              : kind == AGG_PROMPTS ? s->prompts
                                                    : s->resources;
    size_t n = kind == AGG_TOOLS ? s->n_tools : kind == AGG_PROMPTS ? s->n_prompts : s->n_resources;

    for (size_t i = 0; i < n; i++)
        if (agg_name_matches(c, s, ovs[i].name, name))
            return &ovs[i];
    return NULL;
}

bool agg_visible(const cfg *c, const agg_route *r, const agg_member *m, agg_kind kind,
                 const char *name)
{
    const cfg_server *s = &c->servers[m->server];
    const cfg_override *ov = agg_override(c, s, kind, name);
    const cfg_selection *sel = m->select[kind];

    if (ov && !ov->enabled)
        return false;
    if (!sel)
        return true;
    for (size_t i = 0; i < sel->n_names; i++)
        if (agg_name_matches(c, s, sel->names[i], name))
            return true;
    return false;
}

json_t *agg_list(const cfg *c, const agg_route *r, agg_kind kind, json_t *const *per_server)
{
    const char *key = kind == AGG_RESOURCES ? "uri" : "name";
    json_t *out = json_array();
    char exposed[1024];

    for (size_t i = 0; i < r->n_members; i++) {
        const agg_member *m = &r->members[i];
        const cfg_server *s = &c->servers[m->server];
        json_t *list = per_server[m->server];
        json_t *item;
        size_t k;

        if (!json_is_array(list))
            continue;
        json_array_foreach(list, k, item) {
            const char *name = json_string_value(json_object_get(item, key));
            const cfg_override *ov;
            json_t *copy;

            if (!name || !agg_visible(c, r, m, kind, name))
                continue;
            copy = json_deep_copy(item);
            if (r->prefixed && kind != AGG_RESOURCES) {
                snprintf(exposed, sizeof exposed, "%s%s%s", m->exposed, c->name_separator, name);
                json_object_set_new(copy, "name", json_string(exposed));
            }
            ov = agg_override(c, s, kind, name);
            if (ov && ov->description)
                json_object_set_new(copy, "description", json_string(ov->description));
            json_array_append_new(out, copy);
        }
    }
    return out;
}

int agg_resolve(const cfg *c, const agg_route *r, agg_kind kind, const char *name,
                const agg_member **member, const char **upstream)
{
    const agg_member *best = NULL;
    size_t best_len = 0;
    size_t pl = strlen(c->name_separator);

    *member = NULL;
    *upstream = NULL;
    if (!r->prefixed) {
        if (r->n_members != 1 || !agg_visible(c, r, &r->members[0], kind, name))
            return -ENOENT;
        *member = &r->members[0];
        *upstream = name;
        return 0;
    }
    /* Separators may appear inside names: the longest exposed prefix wins. */
    for (size_t i = 0; i < r->n_members; i++) {
        const agg_member *m = &r->members[i];
        size_t el = strlen(m->exposed);

        if (el > best_len && strncmp(name, m->exposed, el) == 0 &&
            strncmp(name + el, c->name_separator, pl) == 0 && name[el + pl] != '\0') {
            best = m;
            best_len = el;
        }
    }
    if (!best || !agg_visible(c, r, best, kind, name + best_len + pl))
        return -ENOENT;
    *member = best;
    *upstream = name + best_len + pl;
    return 0;
}
