/* test_agg: what each route exposes (agg) and who may use it (auth), on settings files
 * written the way MCPHub users write them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "agg.h"
#include "auth.h"
#include "cfg.h"

static const char settings[] =
    "{\n"
    " \"mcpServers\": {\n"
    "  \"fs\": {\"command\": \"fs-server\", \"tools\": {\"delete\": {\"enabled\": false},\n"
    "          \"fs-read\": {\"description\": \"Read a file (overridden)\"}}},\n"
    "  \"web\": {\"command\": \"web-server\"},\n"
    "  \"web-extra\": {\"command\": \"web-extra-server\"},\n"
    "  \"off\": {\"command\": \"off-server\", \"enabled\": false}\n"
    " },\n"
    " \"groups\": [\n"
    "  {\"id\": \"g-1\", \"name\": \"dev\", \"servers\": [\"fs\", {\"name\": \"web\", \"tools\": [\"fetch\"]}]},\n"
    "  {\"name\": \"aliased\", \"servers\": [{\"name\": \"web\", \"alias\": \"w\"}, \"off\"]}\n"
    " ],\n"
    " \"bearerKeys\": [\n"
    "  {\"name\": \"admin\", \"token\": \"tok-all\", \"accessType\": \"all\"},\n"
    "  {\"name\": \"devs\", \"token\": \"tok-groups\", \"accessType\": \"groups\", \"allowedGroups\": [\"g-1\"]},\n"
    "  {\"name\": \"one\", \"token\": \"tok-servers\", \"accessType\": \"servers\", \"allowedServers\": [\"web-extra\"]},\n"
    "  {\"name\": \"gone\", \"token\": \"tok-disabled\", \"enabled\": false}\n"
    " ],\n"
    " \"systemConfig\": {\"routing\": {\"enableBearerAuth\": true}}\n"
    "}\n";

static cfg *load(void)
{
    cfg *c = NULL;
    cfg_error err;

    assert_int_equal(cfg_parse(settings, sizeof settings - 1, "t.json", &c, &err), 0);
    return c;
}

/* Per-server lists indexed like cfg.servers. */
static json_t *lists[4];

static void set_lists(const cfg *c)
{
    for (size_t i = 0; i < c->n_servers; i++) {
        const char *n = c->servers[i].name;

        if (strcmp(n, "fs") == 0)
            lists[i] = json_pack("[{s:s,s:s},{s:s},{s:s}]", "name", "read", "description", "Read",
                                 "name", "write", "name", "delete");
        else if (strcmp(n, "web") == 0)
            lists[i] = json_pack("[{s:s},{s:s}]", "name", "fetch", "name", "extra-search");
        else if (strcmp(n, "web-extra") == 0)
            lists[i] = json_pack("[{s:s}]", "name", "search");
        else
            lists[i] = json_pack("[{s:s}]", "name", "hidden");
    }
}

static void free_lists(const cfg *c)
{
    for (size_t i = 0; i < c->n_servers; i++)
        json_decref(lists[i]);
}

/* The names of list, joined by spaces, into buf. */
static const char *names(json_t *list, char *buf, size_t size)
{
    size_t i;
    json_t *it;

    buf[0] = '\0';
    json_array_foreach(list, i, it) {
        if (i)
            strncat(buf, " ", size - strlen(buf) - 1);
        strncat(buf, json_string_value(json_object_get(it, "name")), size - strlen(buf) - 1);
    }
    return buf;
}

static void test_global_route_prefixes_and_overrides(void **state)
{
    cfg *c = load();
    agg_route r;
    json_t *tools;
    char buf[512];

    set_lists(c);
    assert_int_equal(agg_route_resolve(c, "", &r), 0);
    assert_int_equal(r.n_members, 3); /* "off" is disabled */
    tools = agg_list(c, &r, AGG_TOOLS, lists);
    assert_string_equal(names(tools, buf, sizeof buf),
                        "fs-read fs-write web-fetch web-extra-search web-extra-search");
    /* the description override keyed "fs-read" applies to upstream "read" */
    assert_string_equal(json_string_value(json_object_get(json_array_get(tools, 0), "description")),
                        "Read a file (overridden)");
    json_decref(tools);
    agg_route_cleanup(&r);
    free_lists(c);
    cfg_free(c);
}

static void test_resolve_longest_prefix(void **state)
{
    cfg *c = load();
    agg_route r;
    const agg_member *m;
    const char *up;

    assert_int_equal(agg_route_resolve(c, "", &r), 0);
    /* "web-extra-search" exists twice: web's "extra-search" and web-extra's "search"; the
     * longest exposed prefix (web-extra) wins. */
    assert_int_equal(agg_resolve(c, &r, AGG_TOOLS, "web-extra-search", &m, &up), 0);
    assert_string_equal(c->servers[m->server].name, "web-extra");
    assert_string_equal(up, "search");
    assert_int_equal(agg_resolve(c, &r, AGG_TOOLS, "fs-read", &m, &up), 0);
    assert_string_equal(up, "read");
    assert_int_equal(agg_resolve(c, &r, AGG_TOOLS, "fs-delete", &m, &up), -ENOENT);
    assert_int_equal(agg_resolve(c, &r, AGG_TOOLS, "nope-read", &m, &up), -ENOENT);
    assert_int_equal(agg_resolve(c, &r, AGG_TOOLS, "fs-", &m, &up), -ENOENT);
    assert_int_equal(agg_resolve(c, &r, AGG_TOOLS, "off-hidden", &m, &up), -ENOENT);
    agg_route_cleanup(&r);
    cfg_free(c);
}

static void test_group_and_server_routes(void **state)
{
    cfg *c = load();
    agg_route r;
    json_t *tools;
    const agg_member *m;
    const char *up;
    char buf[512];

    set_lists(c);
    /* by name and by id; web limited to "fetch" by the group's selection */
    assert_int_equal(agg_route_resolve(c, "dev", &r), 0);
    tools = agg_list(c, &r, AGG_TOOLS, lists);
    assert_string_equal(names(tools, buf, sizeof buf), "fs-read fs-write web-fetch");
    assert_int_equal(agg_resolve(c, &r, AGG_TOOLS, "web-extra-search", &m, &up), -ENOENT);
    json_decref(tools);
    agg_route_cleanup(&r);
    assert_int_equal(agg_route_resolve(c, "g-1", &r), 0);
    assert_int_equal(r.n_members, 2);
    agg_route_cleanup(&r);

    /* an alias renames the prefix; disabled members are left out */
    assert_int_equal(agg_route_resolve(c, "aliased", &r), 0);
    tools = agg_list(c, &r, AGG_TOOLS, lists);
    assert_string_equal(names(tools, buf, sizeof buf), "w-fetch w-extra-search");
    assert_int_equal(agg_resolve(c, &r, AGG_TOOLS, "w-fetch", &m, &up), 0);
    assert_string_equal(c->servers[m->server].name, "web");
    json_decref(tools);
    agg_route_cleanup(&r);

    /* a single-server route does not prefix */
    assert_int_equal(agg_route_resolve(c, "fs", &r), 0);
    assert_false(r.prefixed);
    tools = agg_list(c, &r, AGG_TOOLS, lists);
    assert_string_equal(names(tools, buf, sizeof buf), "read write");
    assert_int_equal(agg_resolve(c, &r, AGG_TOOLS, "write", &m, &up), 0);
    assert_string_equal(up, "write");
    assert_int_equal(agg_resolve(c, &r, AGG_TOOLS, "delete", &m, &up), -ENOENT);
    json_decref(tools);
    agg_route_cleanup(&r);

    assert_int_equal(agg_route_resolve(c, "off", &r), -ENOENT);
    assert_int_equal(agg_route_resolve(c, "missing", &r), -ENOENT);
    free_lists(c);
    cfg_free(c);
}

static void test_bearer_keys(void **state)
{
    cfg *c = load();
    const cfg_bearer_key *k;

    assert_int_equal(auth_check(c, NULL, "", &k), -EACCES);
    assert_int_equal(auth_check(c, "", "", &k), -EACCES);
    assert_int_equal(auth_check(c, "tok-wrong", "", &k), -EACCES);
    assert_int_equal(auth_check(c, "tok-all", "", &k), 0);
    assert_string_equal(k->name, "admin");
    assert_int_equal(auth_check(c, "tok-disabled", "", &k), -EACCES);

    /* a group key: its group by id or name, servers in it, nothing else */
    assert_int_equal(auth_check(c, "tok-groups", "g-1", &k), 0);
    assert_int_equal(auth_check(c, "tok-groups", "dev", &k), 0);
    assert_int_equal(auth_check(c, "tok-groups", "fs", &k), 0);
    assert_int_equal(auth_check(c, "tok-groups", "web-extra", &k), -EPERM);
    assert_int_equal(auth_check(c, "tok-groups", "aliased", &k), -EPERM);
    assert_int_equal(auth_check(c, "tok-groups", "", &k), -EPERM);

    /* a server key */
    assert_int_equal(auth_check(c, "tok-servers", "web-extra", &k), 0);
    assert_int_equal(auth_check(c, "tok-servers", "web", &k), -EPERM);
    assert_int_equal(auth_check(c, "tok-servers", "dev", &k), -EPERM);
    /* a prefix of a token is not the token */
    assert_int_equal(auth_check(c, "tok-al", "", &k), -EACCES);
    assert_int_equal(auth_check(c, "tok-all-and-more", "", &k), -EACCES);
    cfg_free(c);
}

static void test_auth_off(void **state)
{
    static const char open[] = "{\"mcpServers\": {\"a\": {\"command\": \"x\"}}}";
    cfg *c = NULL;
    cfg_error err;
    static const cfg_bearer_key sentinel;
    const cfg_bearer_key *k = &sentinel; /* auth_check must clear it */

    assert_int_equal(cfg_parse(open, sizeof open - 1, "o.json", &c, &err), 0);
    assert_int_equal(auth_check(c, NULL, "a", &k), 0);
    assert_null(k);
    cfg_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_global_route_prefixes_and_overrides),
        cmocka_unit_test(test_resolve_longest_prefix),
        cmocka_unit_test(test_group_and_server_routes),
        cmocka_unit_test(test_bearer_keys),
        cmocka_unit_test(test_auth_off),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
