/* agg: what a route exposes. Resolves a route (global, group, single server) to its member
 * servers, builds the aggregated tools/prompts/resources lists with MCPHub's naming
 * (`server<sep>name`, unprefixed on a single-server route, overrides and group selections
 * applied), and maps an exposed name back to its server and upstream name. Pure functions
 * over a cfg and the servers' last known lists: no I/O, any thread. */
#ifndef MCPHUB_AGG_H
#define MCPHUB_AGG_H

#include "cfg.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    AGG_TOOLS = 0,
    AGG_PROMPTS,
    AGG_RESOURCES,
} agg_kind;

typedef struct agg_member {
    size_t server;        /* index into cfg.servers */
    const char *exposed;  /* the prefix this route shows it under (alias or server name) */
    const cfg_selection *select[3]; /* per agg_kind; NULL = everything */
} agg_member;

typedef struct agg_route {
    agg_member *members; /* owned */
    size_t n_members;
    bool prefixed;       /* false on a single-server route */
    const cfg_group *group; /* NULL unless the route is a group */
} agg_route;

/* Resolves route ("" = the global route) against c: a group (by id, or by name when
 * enable_group_name_route), else a server. Disabled and unsupported servers are left out.
 * On success fills *out (release with agg_route_cleanup) and returns 0; -ENOENT when the
 * route does not exist (or the global route is disabled). */
int agg_route_resolve(const cfg *c, const char *route, agg_route *out);

void agg_route_cleanup(agg_route *r);

/* Builds the list a route exposes. per_server[i] is server i's last known list (a borrowed
 * JSON array of tool, prompt or resource objects) or NULL when unknown. Returns a new
 * array: items copied, names rewritten (tools, prompts) and descriptions overridden;
 * items an override disables or a group's selection leaves out are dropped. */
json_t *agg_list(const cfg *c, const agg_route *r, agg_kind kind, json_t *const *per_server);

/* Maps an exposed tool or prompt name back: *member gets the route member, *upstream the
 * upstream's own name (a pointer into name). Returns 0, or -ENOENT when no member exposes
 * that name or an override or selection hides it. */
int agg_resolve(const cfg *c, const agg_route *r, agg_kind kind, const char *name,
                const agg_member **member, const char **upstream);

/* Whether the override/selection rules let the route show upstream item `name` of m. */
bool agg_visible(const cfg *c, const agg_route *r, const agg_member *m, agg_kind kind,
                 const char *name);

#endif
