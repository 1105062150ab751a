/* auth: bearer-key authentication and route access (see auth.h). */
#include "auth.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

/* Compares without an early exit, so timing does not tell how much of a token matched. */
static bool auth_token_equal(const char *a, const char *b)
{
    size_t la = strlen(a);
    size_t lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);

    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return diff == 0 && lb > 0;
}

static bool auth_in(const char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

/* Whether group g is one of the key's allowed groups (listed by name or id). */
static bool auth_group_allowed(const cfg_bearer_key *k, const cfg_group *g)
{
    return auth_in(k->allowed_groups, k->n_allowed_groups, g->name) ||
           (g->id && auth_in(k->allowed_groups, k->n_allowed_groups, g->id));
}

static bool auth_route_allowed(const cfg *c, const cfg_bearer_key *k, const char *route)
{
    bool groups = k->access == CFG_ACCESS_GROUPS || k->access == CFG_ACCESS_CUSTOM;
    bool servers = k->access == CFG_ACCESS_SERVERS || k->access == CFG_ACCESS_CUSTOM;
    const cfg_group *g;

    if (k->access == CFG_ACCESS_ALL)
        return true;
    if (route[0] == '\0')
        return false; /* the global route reaches every server */
    g = cfg_find_group(c, route);
    if (g)
        return groups && auth_group_allowed(k, g);
    if (!cfg_find_server(c, route))
        return false;
    if (servers && auth_in(k->allowed_servers, k->n_allowed_servers, route))
        return true;
    /* A server route is open to a key allowed a group that contains the server. */
    for (size_t i = 0; groups && i < c->n_groups; i++) {
        if (!auth_group_allowed(k, &c->groups[i]))
            continue;
        for (size_t j = 0; j < c->groups[i].n_members; j++)
            if (strcmp(c->groups[i].members[j].server, route) == 0)
                return true;
    }
    return false;
}

int auth_check(const cfg *c, const char *token, const char *route, const cfg_bearer_key **key)
{
    *key = NULL;
    if (!c->routing.enable_bearer_auth)
        return 0;
    if (!token || !*token)
        return -EACCES;
    for (size_t i = 0; i < c->n_keys; i++) {
        const cfg_bearer_key *k = &c->keys[i];

        if (!k->usable || !auth_token_equal(token, k->token))
            continue;
        if (!auth_route_allowed(c, k, route))
            return -EPERM;
        *key = k;
        return 0;
    }
    return -EACCES;
}
