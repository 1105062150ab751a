/* test_cfg: the settings loader. Valid files load with the values MCPHub would give them;
 * each tests/unit/cfg_cases/invalid/NAME.json fails with exactly NAME.expect. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "cfg_internal.h"

#ifndef MCPHUB_SOURCE_DIR
#error "MCPHUB_SOURCE_DIR must name the repository root"
#endif

#define CASES MCPHUB_SOURCE_DIR "/tests/unit/cfg_cases"
#define SHARED_EXAMPLE MCPHUB_SOURCE_DIR "/../shared/examples/mcphub-settings-full.json"

/* ---------------------------------------------------------------- helpers */

static char *read_text(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f) {
        fail_msg("cannot open %s", path);
        abort();
    }
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len_out)
        *len_out = (size_t)n;
    return buf;
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static cfg *load_ok(const char *path)
{
    cfg *c = NULL;
    cfg_error err;
    char msg[2048];
    int rc = cfg_load_file(path, &c, &err);

    if (rc != 0 || !c) {
        cfg_error_format(&err, msg, sizeof msg);
        fail_msg("%s did not load: %s", path, msg);
        abort();
    }
    return c;
}

static cfg *parse_ok(const char *text)
{
    cfg *c = NULL;
    cfg_error err;
    char msg[2048];
    int rc = cfg_parse(text, strlen(text), "inline.json", &c, &err);

    if (rc != 0 || !c) {
        cfg_error_format(&err, msg, sizeof msg);
        fail_msg("inline text did not load: %s", msg);
        abort();
    }
    return c;
}

/* Parses len bytes of text ((size_t)-1: all of it; origin "t.json") and checks the
 * formatted error. */
static void parse_fails(const char *text, size_t len, int code, const char *expected)
{
    cfg *c = (cfg *)1;
    cfg_error err;
    char msg[2048];
    int rc = cfg_parse(text, len == (size_t)-1 ? strlen(text) : len, "t.json", &c, &err);

    assert_int_equal(rc, code);
    assert_int_equal(err.code, code);
    assert_null(c);
    cfg_error_format(&err, msg, sizeof msg);
    assert_string_equal(msg, expected);
}

/* The lookups below fail the test instead of returning NULL (cmocka's failures are not
 * marked noreturn, hence the abort() that is never reached: it keeps -Wnull-dereference
 * quiet at -O2). */
static const cfg_server *server(const cfg *c, const char *name)
{
    const cfg_server *s = cfg_find_server(c, name);

    if (!s) {
        fail_msg("no server %s", name);
        abort();
    }
    return s;
}

static const char *kv(const cfg_kv *kvs, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(kvs[i].key, key) == 0)
            return kvs[i].value;
    fail_msg("no key %s", key);
    abort();
}

static const cfg_override *override(const cfg_override *o, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(o[i].name, name) == 0)
            return &o[i];
    fail_msg("no override %s", name);
    abort();
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted names of the files in dir ending in suffix; free each and the array. */
static char **list_dir(const char *dir, const char *suffix, size_t *n_out)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, sl = strlen(suffix);

    assert_non_null(d);
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);

        if (l <= sl || strcmp(e->d_name + l - sl, suffix) != 0)
            continue;
        names = realloc(names, (n + 1) * sizeof *names);
        assert_non_null(names);
        names[n] = strdup(e->d_name);
        assert_non_null(names[n]);
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    *n_out = n;
    return names;
}

static void free_list(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* ---------------------------------------------------------------- valid files */

static void test_valid_folder(void **state)
{
    size_t n;
    char **names = list_dir(CASES "/valid", ".json", &n);
    char path[1024];

    (void)state;
    assert_true(n >= 6);
    for (size_t i = 0; i < n; i++) {
        cfg *c;

        snprintf(path, sizeof path, "%s/%s", CASES "/valid", names[i]);
        c = load_ok(path);
        assert_non_null(c->root);
        assert_string_equal(c->origin, path);
        cfg_free(c);
    }
    free_list(names, n);
}

static void test_minimal_defaults(void **state)
{
    cfg *c = load_ok(CASES "/valid/minimal.json");
    const cfg_server *s;

    (void)state;
    assert_int_equal(c->n_servers, 1);
    s = server(c, "echo");
    assert_ptr_equal(s, &c->servers[0]);
    assert_null(cfg_find_server(c, "nope"));
    assert_string_equal(s->name, "echo");
    assert_true(s->name_conforms);
    assert_null(s->type);
    assert_int_equal(s->transport, CFG_TRANSPORT_STDIO);
    assert_true(s->supported);
    assert_null(s->unsupported_reason);
    assert_string_equal(s->command, "echo");
    assert_non_null(s->args);
    assert_int_equal(s->n_args, 0);
    assert_int_equal(s->n_env, 0);
    assert_int_equal(s->n_headers, 0);
    assert_null(s->cwd);
    assert_null(s->url);
    assert_true(s->enabled);
    assert_false(s->per_session);
    assert_int_equal(s->n_tools + s->n_prompts + s->n_resources, 0);
    assert_int_equal(s->timeout_ms, 60000);
    assert_true(s->reset_timeout_on_progress);
    assert_int_equal(s->max_total_timeout_ms, 0);
    assert_false(s->keep_alive);
    assert_int_equal(s->keep_alive_interval_ms, 60000);
    assert_false(s->start_on_demand);
    assert_int_equal(s->idle_timeout_ms, 300000);
    assert_ptr_equal(s->json, json_object_get(json_object_get(c->root, "mcpServers"), "echo"));

    assert_int_equal(c->n_groups, 0);
    assert_int_equal(c->n_keys, 0);
    assert_true(c->routing.enable_global_route);
    assert_true(c->routing.enable_group_name_route);
    assert_false(c->routing.enable_bearer_auth);
    assert_string_equal(c->routing.bearer_auth_key, "");
    assert_string_equal(c->routing.bearer_auth_header, "Authorization");
    assert_int_equal(c->routing.json_body_limit, 1048576);
    assert_string_equal(c->name_separator, "-");

    assert_int_equal(c->hub.session_idle_timeout_ms, 1800000);
    assert_int_equal(c->hub.max_sessions, 10000);
    assert_int_equal(c->hub.max_instances, 256);
    assert_int_equal(c->hub.max_instances_per_server, 256);
    assert_int_equal(c->hub.request_timeout_ms, 60000);
    assert_int_equal(c->hub.init_timeout_ms, 300000);
    assert_int_equal(c->hub.kill_grace_ms, 2000);
    assert_string_equal(c->hub.listen, "127.0.0.1:50051");
    assert_false(c->hub.listen_set);
    assert_string_equal(c->hub.admin_listen, "127.0.0.1:50052");
    assert_false(c->hub.admin_listen_set);
    assert_int_equal(c->hub.n_allowed_origins, 0);
    assert_int_equal(c->hub.n_warm, 0);
    cfg_free(c);
}

/* The full example: every feature the DESIGN names, with MCPHub's rules applied. */
static void check_full_example(const cfg *c)
{
    const cfg_server *s;
    const cfg_override *o;
    const cfg_group *g;
    const cfg_bearer_key *k;

    assert_int_equal(c->n_servers, 7);
    /* File order is kept. */
    assert_string_equal(c->servers[0].name, "fetch");
    assert_string_equal(c->servers[6].name, "weather-api");

    s = server(c, "fetch");
    assert_null(s->type);
    assert_int_equal(s->transport, CFG_TRANSPORT_STDIO); /* inferred from command */
    assert_true(s->supported);
    assert_string_equal(s->command, "uvx");
    assert_int_equal(s->n_args, 1);
    assert_string_equal(s->args[0], "mcp-server-fetch");
    assert_int_equal(s->n_env, 2);
    assert_string_equal(kv(s->env, s->n_env, "HTTP_PROXY"), ""); /* unset variable */
    assert_string_equal(kv(s->env, s->n_env, "LOG_LEVEL"), "info");
    assert_true(s->enabled);
    assert_int_equal(s->timeout_ms, 60000);
    assert_true(s->reset_timeout_on_progress);
    assert_int_equal(s->max_total_timeout_ms, 600000);
    assert_int_equal(s->n_tools, 1);
    o = override(s->tools, s->n_tools, "fetch");
    assert_true(o->enabled);
    assert_string_equal(o->description, "Fetch a URL and return its text");

    s = server(c, "playwright");
    assert_int_equal(s->transport, CFG_TRANSPORT_STDIO);
    assert_true(s->per_session);
    assert_int_equal(s->n_args, 3);
    assert_string_equal(s->args[2], "--isolated");
    assert_string_equal(kv(s->env, s->n_env, "PLAYWRIGHT_BROWSERS_PATH"),
                        "/home/tester/.cache/ms-playwright");

    s = server(c, "memory");
    assert_string_equal(s->type, "stdio");
    assert_int_equal(s->transport, CFG_TRANSPORT_STDIO);
    assert_true(s->per_session); /* perSessionClient alias */
    assert_string_equal(s->cwd, "/var/lib/mcphub");
    assert_int_equal(s->n_prompts, 1);
    o = override(s->prompts, s->n_prompts, "summarize");
    assert_false(o->enabled);
    assert_null(o->description);

    s = server(c, "filesystem");
    assert_true(s->start_on_demand);
    assert_int_equal(s->idle_timeout_ms, 300000);
    assert_int_equal(s->n_args, 3);
    assert_string_equal(s->args[2], "/srv/shared");

    s = server(c, "remote-docs");
    assert_string_equal(s->type, "streamable-http");
    assert_int_equal(s->transport, CFG_TRANSPORT_STREAMABLE_HTTP);
    assert_true(s->supported);
    assert_string_equal(s->url, "https://mcp.example.com/mcp");
    assert_int_equal(s->n_headers, 1);
    assert_string_equal(kv(s->headers, s->n_headers, "Authorization"), "Bearer docs-secret");
    assert_true(s->keep_alive);
    assert_int_equal(s->keep_alive_interval_ms, 30000);
    assert_null(s->command);

    s = server(c, "legacy-sse");
    assert_null(s->type);
    assert_int_equal(s->transport, CFG_TRANSPORT_SSE); /* a url without a type means SSE */
    assert_true(s->supported);
    assert_false(s->enabled);
    assert_false(s->keep_alive);
    assert_int_equal(s->keep_alive_interval_ms, 60000);

    s = server(c, "weather-api");
    assert_int_equal(s->transport, CFG_TRANSPORT_OPENAPI);
    assert_false(s->supported);
    assert_string_equal(s->unsupported_reason, "OpenAPI servers are not supported by mcphub");
    assert_string_equal(cfg_transport_name(s->transport), "openapi");

    assert_int_equal(c->n_groups, 2);
    g = &c->groups[0];
    assert_string_equal(g->id, "3f1e0a4c-0000-4000-8000-000000000001");
    assert_string_equal(g->name, "research");
    assert_int_equal(g->n_members, 2);
    assert_string_equal(g->members[0].server, "fetch");
    assert_int_equal(g->members[0].server_index, 0);
    assert_true(g->members[0].tools.all);
    assert_true(g->members[0].prompts.all);
    assert_null(g->members[0].alias);
    assert_string_equal(g->members[1].server, "remote-docs");
    assert_ptr_equal(&c->servers[g->members[1].server_index], server(c, "remote-docs"));
    assert_false(g->members[1].tools.all);
    assert_int_equal(g->members[1].tools.n_names, 2);
    assert_string_equal(g->members[1].tools.names[0], "search");
    assert_string_equal(g->members[1].tools.names[1], "read");
    assert_true(g->members[1].resources.all);
    assert_ptr_equal(cfg_find_group(c, "browser"), &c->groups[1]);
    assert_ptr_equal(cfg_find_group(c, "3f1e0a4c-0000-4000-8000-000000000001"), &c->groups[0]);
    assert_null(cfg_find_group(c, "nope"));
    assert_int_equal(c->groups[1].n_members, 2);
    assert_string_equal(c->groups[1].members[1].server, "memory");

    assert_int_equal(c->n_keys, 3);
    k = &c->keys[0];
    assert_string_equal(k->id, "k1");
    assert_string_equal(k->name, "ci");
    assert_string_equal(k->token, "ci-secret"); /* ${MCPHUB_CI_TOKEN} */
    assert_true(k->enabled);
    assert_true(k->usable);
    assert_null(k->unusable_reason);
    assert_int_equal(k->access, CFG_ACCESS_ALL);
    assert_false(k->migrated);
    k = &c->keys[1];
    assert_int_equal(k->access, CFG_ACCESS_GROUPS);
    assert_int_equal(k->n_allowed_groups, 1);
    assert_string_equal(k->allowed_groups[0], "research");
    assert_int_equal(k->n_allowed_servers, 0);
    assert_string_equal(k->token, "rt-0b7e2d1c9a");
    k = &c->keys[2];
    assert_false(k->enabled);
    assert_false(k->usable);
    assert_string_equal(k->unusable_reason, "the key is disabled");
    assert_int_equal(k->access, CFG_ACCESS_SERVERS);
    assert_string_equal(k->allowed_servers[0], "fetch");

    assert_true(c->routing.enable_global_route);
    assert_true(c->routing.enable_group_name_route);
    assert_true(c->routing.enable_bearer_auth);
    assert_string_equal(c->routing.bearer_auth_key, "");
    assert_string_equal(c->routing.bearer_auth_header, "Authorization");
    assert_int_equal(c->routing.json_body_limit, 1048576);
    assert_string_equal(c->name_separator, "-");

    assert_int_equal(c->hub.session_idle_timeout_ms, 1800000); /* "30m" */
    assert_int_equal(c->hub.max_sessions, 100000);
    assert_int_equal(c->hub.max_instances, 512);
    assert_int_equal(c->hub.max_instances_per_server, 512);
    assert_int_equal(c->hub.n_warm, 1);
    assert_string_equal(c->hub.warm[0].server, "playwright");
    assert_int_equal(c->hub.warm[0].count, 2);

    /* Unknown keys stay in the tree for writing back. */
    assert_non_null(json_object_get(c->root, "users"));
    assert_non_null(json_object_get(json_object_get(c->root, "systemConfig"), "smartRouting"));
    assert_non_null(json_object_get(server(c, "fetch")->json, "owner"));
}

static void set_example_env(void)
{
    setenv("HOME", "/home/tester", 1);
    setenv("DOCS_TOKEN", "docs-secret", 1);
    setenv("MCPHUB_CI_TOKEN", "ci-secret", 1);
    unsetenv("HTTP_PROXY");
}

static void test_full_example(void **state)
{
    cfg *c;

    (void)state;
    set_example_env();
    c = load_ok(CASES "/valid/mcphub-settings-full.json");
    check_full_example(c);
    cfg_free(c);

    /* The copy must not drift from the example in shared/, when that is present. */
    if (access(SHARED_EXAMPLE, R_OK) == 0) {
        c = load_ok(SHARED_EXAMPLE);
        check_full_example(c);
        cfg_free(c);
    }
}

static void test_unknown_keys_ignored(void **state)
{
    cfg *c = load_ok(CASES "/valid/unknown-keys.json");
    const cfg_server *s;
    const cfg_group_member *m;

    (void)state;
    s = server(c, "time");
    assert_int_equal(s->transport, CFG_TRANSPORT_STDIO);
    assert_true(s->supported);
    assert_string_equal(s->args[0], "mcp-server-time");
    assert_int_equal(c->n_groups, 1);
    assert_string_equal(c->groups[0].id, "g1");
    m = &c->groups[0].members[0];
    assert_string_equal(m->alias, "clock");
    assert_true(m->tools.all);
    assert_false(m->prompts.all);
    assert_int_equal(m->prompts.n_names, 1);
    assert_false(m->resources.all); /* [] selects nothing, as in MCPHub */
    assert_int_equal(m->resources.n_names, 0);
    assert_int_equal(c->n_keys, 0);
    assert_false(c->routing.enable_global_route);
    assert_int_equal(c->routing.json_body_limit, 512 * 1024);
    assert_string_equal(c->name_separator, "__");
    assert_int_equal(c->hub.max_instances, 8);
    assert_int_equal(c->hub.max_instances_per_server, 8);
    assert_non_null(json_object_get(c->root, "userConfigs"));
    assert_int_equal(json_integer_value(json_object_get(c->root, "version")), 3);
    cfg_free(c);
}

/* Type inference corners, nulls as absent, legacy bearerAuthKey migration. */
static void test_inference_and_legacy(void **state)
{
    cfg *c;
    const cfg_server *s;
    const cfg_bearer_key *k;

    (void)state;
    unsetenv("MCPHUB_TEST_UNSET_URL");
    c = load_ok(CASES "/valid/nulls-and-legacy.json");

    s = server(c, "a");
    assert_int_equal(s->transport, CFG_TRANSPORT_STDIO);
    assert_true(s->enabled);
    assert_null(s->type);
    assert_int_equal(s->n_args, 0);

    s = server(c, "b"); /* "sse" without a url runs the command, as MCPHub does */
    assert_string_equal(s->type, "sse");
    assert_int_equal(s->transport, CFG_TRANSPORT_STDIO);

    s = server(c, "c"); /* explicit stdio with a command stays stdio */
    assert_int_equal(s->transport, CFG_TRANSPORT_STDIO);
    assert_true(s->supported);

    s = server(c, "d");
    assert_int_equal(s->transport, CFG_TRANSPORT_OTHER);
    assert_false(s->supported);
    assert_string_equal(s->unsupported_reason, "type \"websocket\" is not supported");

    s = server(c, "e");
    assert_int_equal(s->transport, CFG_TRANSPORT_OPENAPI);
    assert_false(s->supported);

    s = server(c, "f"); /* the url came from an unset variable */
    assert_int_equal(s->transport, CFG_TRANSPORT_SSE);
    assert_false(s->supported);
    assert_string_equal(s->url, "");
    assert_string_equal(s->unsupported_reason,
                        "\"url\" is empty after expanding environment variables");

    s = server(c, "g");
    assert_int_equal(s->transport, CFG_TRANSPORT_STDIO);
    assert_false(s->supported);
    assert_non_null(strstr(s->unsupported_reason, "credentialTemplate"));

    s = server(c, "weird name/with spaces");
    assert_int_equal(s->transport, CFG_TRANSPORT_STREAMABLE_HTTP);
    assert_true(s->supported);
    assert_false(s->name_conforms);

    assert_int_equal(c->n_groups, 0);
    assert_string_equal(c->routing.bearer_auth_header, "X-Api-Key");
    assert_string_equal(c->name_separator, "-");
    assert_int_equal(c->n_keys, 1);
    k = &c->keys[0];
    assert_true(k->migrated);
    assert_string_equal(k->name, "default");
    assert_string_equal(k->token, "legacy-key");
    assert_true(k->enabled);
    assert_true(k->usable);
    assert_int_equal(k->access, CFG_ACCESS_ALL);
    assert_int_equal(k->n_allowed_groups, 0);
    cfg_free(c);

    /* An existing bearerKeys array, even empty, means the migration already happened. */
    c = parse_ok("{\"bearerKeys\": [], \"systemConfig\": {\"routing\": "
                 "{\"bearerAuthKey\": \"k\", \"enableBearerAuth\": true}}}");
    assert_int_equal(c->n_keys, 0);
    cfg_free(c);

    /* A legacy key with bearer auth off migrates disabled. */
    c = parse_ok("{\"systemConfig\": {\"routing\": {\"bearerAuthKey\": \"k\"}}}");
    assert_int_equal(c->n_keys, 1);
    assert_false(c->keys[0].enabled);
    assert_false(c->keys[0].usable);
    cfg_free(c);
}

static void test_bom_and_crlf(void **state)
{
    cfg *c = load_ok(CASES "/valid/bom-crlf.json");

    (void)state;
    assert_string_equal(server(c, "echo")->args[0], "hi");
    cfg_free(c);
    /* Positions after a BOM and CRLF line ends. */
    parse_fails("\xEF\xBB\xBF{\r\n  \"hub\": 5\r\n}\r\n", (size_t)-1, -EINVAL,
                "t.json:2:10: hub: expected an object, got 5");
}

static void test_default_config(void **state)
{
    cfg *c = NULL, *d = NULL;
    const cfg_server *s;
    const char *text = cfg_default_json();
    cfg_error err;

    (void)state;
    setenv("MCPHUB_BIN_DIR", "/opt/mcphub/bin", 1);
    assert_int_equal(cfg_load_default(&c, &err), 0);
    assert_string_equal(c->origin, "<default>");
    assert_int_equal(cfg_parse(text, strlen(text), "default.json", &d, &err), 0);
    assert_int_equal(d->n_servers, 1);
    cfg_free(d);

    assert_int_equal(c->n_servers, 1);
    s = server(c, "fixture");
    assert_string_equal(s->type, "stdio");
    assert_int_equal(s->transport, CFG_TRANSPORT_STDIO);
    assert_true(s->supported);
    assert_true(s->enabled);
    assert_string_equal(s->command, "/opt/mcphub/bin/mcphub-fixture");
    assert_int_equal(c->n_groups, 1);
    assert_string_equal(c->groups[0].name, "default");
    assert_int_equal(c->groups[0].n_members, 1);
    assert_string_equal(c->groups[0].members[0].server, "fixture");
    assert_true(c->groups[0].members[0].tools.all);
    assert_int_equal(c->n_keys, 0);
    assert_true(c->routing.enable_global_route);
    assert_true(c->routing.enable_group_name_route);
    assert_false(c->routing.enable_bearer_auth);
    assert_string_equal(c->name_separator, "-");
    assert_int_equal(c->hub.session_idle_timeout_ms, 1800000);
    cfg_free(c);
}

/* ---------------------------------------------------------------- ${VAR} expansion */

static void test_env_expansion(void **state)
{
    cfg *c;
    const cfg_server *s;
    static const char *const want[] = {
        "alpha",          /* ${T_A} */
        "${}",            /* empty name: literal */
        "${T_A",          /* unclosed: literal */
        "alpha",          /* $T_A, MCPHub's second form */
        "$t_a",           /* lowercase is not a $NAME */
        "pad",            /* results are trimmed */
        "",               /* unset */
        "ab",             /* unset in the middle */
        "from-env-block", /* $LOCAL: the server's own env comes first */
        "from-env-block", /* ${LOCAL} */
        "$alpha",         /* $$T_A */
        "z",              /* empty variable */
        "alphaalpha",
        "x-alpha-y",
    };

    (void)state;
    setenv("T_A", "alpha", 1);
    setenv("T_CMD", "/bin/echo", 1);
    setenv("T_EMPTY", "", 1);
    setenv("T_DIR", "/tmp", 1);
    setenv("LOCAL", "from-process", 1);
    unsetenv("T_UNSET");
    c = parse_ok("{\"mcpServers\": {\"s\": {"
                 "\"type\": \"streamable-http\", \"command\": \"${T_CMD}\","
                 "\"env\": {\"LOCAL\": \"from-env-block\", \"REF\": \"${T_A}-x\","
                 "          \"SELF\": \"${LOCAL}\", \"PORT\": 8080, \"DEBUG\": false},"
                 "\"args\": [\"${T_A}\", \"${}\", \"${T_A\", \"$T_A\", \"$t_a\", \"  pad \\t\","
                 "           \"${T_UNSET}\", \"a${T_UNSET}b\", \"$LOCAL\", \"${LOCAL}\","
                 "           \"$$T_A\", \"${T_EMPTY}z\", \"${T_A}${T_A}\", \"x-$T_A-y\"],"
                 "\"url\": \"http://h/${T_A}\","
                 "\"headers\": {\"X-Key\": \"Bearer ${T_A}\"},"
                 "\"cwd\": \"${T_DIR}\"}}}");
    s = server(c, "s");
    assert_int_equal(s->n_args, sizeof want / sizeof *want);
    for (size_t i = 0; i < s->n_args; i++)
        assert_string_equal(s->args[i], want[i]);
    assert_string_equal(s->command, "/bin/echo");
    assert_string_equal(kv(s->env, s->n_env, "REF"), "alpha-x");
    /* env values see the process environment only, not their siblings */
    assert_string_equal(kv(s->env, s->n_env, "SELF"), "from-process");
    assert_string_equal(kv(s->env, s->n_env, "PORT"), "8080");
    assert_string_equal(kv(s->env, s->n_env, "DEBUG"), "false");
    assert_string_equal(s->url, "http://h/alpha");
    assert_string_equal(kv(s->headers, s->n_headers, "X-Key"), "Bearer alpha");
    assert_string_equal(s->cwd, "/tmp");
    cfg_free(c);
}

static void test_limits(void **state)
{
    size_t big = CFG_STRING_MAX + 1, n;
    char *text, *value = malloc(100001);
    char expected[256];

    (void)state;
    assert_non_null(value);
    memset(value, 'x', 100000);
    value[100000] = '\0';
    setenv("T_BIG", value, 1);
    free(value);
    parse_fails("{\"mcpServers\": {\"s\": {\"command\": \"c\", \"args\": [\"${T_BIG}${T_BIG}\"]}}}",
                (size_t)-1, -EINVAL,
                "t.json:1:48: mcpServers.s.args[0]: is longer than 131072 bytes after "
                "expanding environment variables");
    unsetenv("T_BIG");

    /* A string over the limit in the file itself. */
    text = malloc(big + 64);
    assert_non_null(text);
    n = (size_t)sprintf(text, "{\"mcpServers\": {\"s\": {\"command\": \"");
    memset(text + n, 'c', big);
    n += big;
    n += (size_t)sprintf(text + n, "\"}}}");
    parse_fails(text, n, -EINVAL, "t.json:1:34: mcpServers.s.command: is longer than 131072 bytes");
    free(text);

    /* An array over the entry limit. */
    text = malloc((CFG_ITEMS_MAX + 1) * 4 + 128);
    assert_non_null(text);
    n = (size_t)sprintf(text, "{\"mcpServers\": {\"s\": {\"command\": \"c\", \"args\": [");
    for (size_t i = 0; i <= CFG_ITEMS_MAX; i++)
        n += (size_t)sprintf(text + n, "%s\"a\"", i ? "," : "");
    n += (size_t)sprintf(text + n, "]}}}");
    snprintf(expected, sizeof expected, "t.json:1:47: mcpServers.s.args: has more than %u entries",
             CFG_ITEMS_MAX);
    parse_fails(text, n, -EINVAL, expected);
    free(text);

    /* Durations beyond Node's timer range are clamped, not refused. */
    {
        cfg *c = parse_ok("{\"mcpServers\": {\"s\": {\"command\": \"c\","
                          "\"options\": {\"timeout\": 1e12, \"maxTotalTimeout\": 99999999999}}},"
                          "\"hub\": {\"sessionIdleTimeout\": \"30d\"}}");

        assert_int_equal(server(c, "s")->timeout_ms, CFG_DURATION_MAX_MS);
        assert_int_equal(server(c, "s")->max_total_timeout_ms, CFG_DURATION_MAX_MS);
        assert_int_equal(c->hub.session_idle_timeout_ms, CFG_DURATION_MAX_MS);
        cfg_free(c);
    }
}

/* ---------------------------------------------------------------- hub section */

static void test_hub_settings(void **state)
{
    cfg *c;

    (void)state;
    c = parse_ok("{\"mcpServers\": {"
                 "  \"p\": {\"command\": \"p\", \"perSession\": true},"
                 "  \"q\": {\"command\": \"q\"},"
                 "  \"r\": {\"command\": \"r\", \"perSessionClient\": true},"
                 "  \"t\": {\"command\": \"t\", \"options\": {\"timeout\": 0}},"
                 "  \"u\": {\"command\": \"u\", \"options\": {\"timeout\": 5000,"
                 "         \"resetTimeoutOnProgress\": false}}},"
                 "\"hub\": {\"sessionIdleTimeout\": \"1h30m\", \"maxSessions\": 5,"
                 "  \"maxInstances\": 40, \"maxInstancesPerServer\": 4,"
                 "  \"requestTimeout\": \"2m\", \"initTimeout\": \"1.5s\","
                 "  \"killGracePeriod\": 0, \"listen\": \"0.0.0.0:6000\","
                 "  \"adminListen\": \"127.0.0.1:0\", \"allowedOrigins\": [\"https://a\", \"*\"],"
                 "  \"warmPerSession\": {\"p\": 2, \"q\": 3, \"r\": 0}}}");
    assert_int_equal(c->hub.session_idle_timeout_ms, 5400000);
    assert_int_equal(c->hub.max_sessions, 5);
    assert_int_equal(c->hub.max_instances, 40);
    assert_int_equal(c->hub.max_instances_per_server, 4);
    assert_int_equal(c->hub.request_timeout_ms, 120000);
    assert_int_equal(c->hub.init_timeout_ms, 1500);
    assert_int_equal(c->hub.kill_grace_ms, 0);
    assert_string_equal(c->hub.listen, "0.0.0.0:6000");
    assert_true(c->hub.listen_set);
    assert_string_equal(c->hub.admin_listen, "127.0.0.1:0");
    assert_true(c->hub.admin_listen_set);
    assert_int_equal(c->hub.n_allowed_origins, 2);
    assert_string_equal(c->hub.allowed_origins[1], "*");
    /* q is not perSession and r asks for none: only p is warmed */
    assert_int_equal(c->hub.n_warm, 1);
    assert_string_equal(c->hub.warm[0].server, "p");
    assert_int_equal(c->hub.warm[0].server_index, 0);
    assert_int_equal(c->hub.warm[0].count, 2);
    /* hub.requestTimeout is the default of every server's timeout; 0 means the default */
    assert_int_equal(server(c, "q")->timeout_ms, 120000);
    assert_int_equal(server(c, "t")->timeout_ms, 120000);
    assert_int_equal(server(c, "u")->timeout_ms, 5000);
    assert_false(server(c, "u")->reset_timeout_on_progress);
    assert_true(server(c, "r")->per_session);
    cfg_free(c);

    c = parse_ok("{\"hub\": {\"sessionIdleTimeout\": 90000, \"requestTimeout\": \"250ms\"}}");
    assert_int_equal(c->hub.session_idle_timeout_ms, 90000);
    assert_int_equal(c->hub.request_timeout_ms, 250);
    cfg_free(c);

    c = parse_ok("{\"systemConfig\": {\"routing\": {\"jsonBodyLimit\": \"2.5MB\"}}}");
    assert_int_equal(c->routing.json_body_limit, 2621440);
    cfg_free(c);
    c = parse_ok("{\"systemConfig\": {\"routing\": {\"jsonBodyLimit\": 4096}}}");
    assert_int_equal(c->routing.json_body_limit, 4096);
    cfg_free(c);
    c = parse_ok("{\"systemConfig\": {\"routing\": {\"jsonBodyLimit\": \"lots\"}}}");
    assert_int_equal(c->routing.json_body_limit, 1048576);
    cfg_free(c);
}

static void test_bearer_keys(void **state)
{
    cfg *c;

    (void)state;
    unsetenv("T_UNSET_TOKEN");
    c = parse_ok("{\"bearerKeys\": ["
                 " {\"token\": \"a\"},"
                 " {\"id\": \"k2\", \"token\": \"${T_UNSET_TOKEN}\"},"
                 " {\"name\": \"u\", \"token\": \"b\", \"kind\": \"user\", \"owner\": \"bob\"},"
                 " {\"name\": \"c\", \"token\": \"c\", \"accessType\": \"custom\","
                 "  \"allowedGroups\": [\"g\"], \"allowedServers\": [\"s1\", \"s2\"]}]}");
    assert_int_equal(c->n_keys, 4);
    assert_string_equal(c->keys[0].name, "bearerKeys[0]");
    assert_true(c->keys[0].enabled);
    assert_true(c->keys[0].usable);
    assert_int_equal(c->keys[0].access, CFG_ACCESS_ALL);
    assert_string_equal(c->keys[1].name, "k2");
    assert_true(c->keys[1].enabled);
    assert_false(c->keys[1].usable); /* an empty token never authenticates */
    assert_non_null(strstr(c->keys[1].unusable_reason, "empty"));
    assert_true(c->keys[2].user_key);
    assert_string_equal(c->keys[2].owner, "bob");
    assert_false(c->keys[2].usable);
    assert_int_equal(c->keys[3].access, CFG_ACCESS_CUSTOM);
    assert_string_equal(cfg_access_name(c->keys[3].access), "custom");
    assert_int_equal(c->keys[3].n_allowed_servers, 2);
    assert_string_equal(c->keys[3].allowed_servers[1], "s2");
    cfg_free(c);
}

/* ---------------------------------------------------------------- invalid files */

static void test_invalid_folder(void **state)
{
    size_t n, failures = 0;
    char **names = list_dir(CASES "/invalid", ".json", &n);

    (void)state;
    assert_true(n >= 50);
    for (size_t i = 0; i < n; i++) {
        char path[1024], expect_path[1024], expected[4096], got_file[4096], got_mem[4096];
        size_t base = strlen(names[i]) - strlen(".json"), text_len, elen;
        char *expect, *text;
        cfg_error err;
        cfg *c = (cfg *)1;
        int rc;

        snprintf(path, sizeof path, "%s/%s", CASES "/invalid", names[i]);
        snprintf(expect_path, sizeof expect_path, "%s/%.*s.expect", CASES "/invalid", (int)base,
                 names[i]);
        if (access(expect_path, R_OK) != 0)
            fail_msg("%s has no .expect file", path);
        expect = read_text(expect_path, &elen);
        while (elen && (expect[elen - 1] == '\n' || expect[elen - 1] == '\r'))
            expect[--elen] = '\0';

        /* From the file: messages carry the path as given. */
        rc = cfg_load_file(path, &c, &err);
        snprintf(expected, sizeof expected, "%s/%s", CASES "/invalid", expect);
        cfg_error_format(&err, got_file, sizeof got_file);
        if (rc != -EINVAL || c != NULL || strcmp(got_file, expected) != 0) {
            print_error("%s:\n  expected: %s\n  got (%d): %s\n", names[i], expected, rc,
                        got_file);
            failures++;
        }

        /* From memory with the bare name as origin: the .expect text exactly. */
        text = read_text(path, &text_len);
        rc = cfg_parse(text, text_len, names[i], &c, &err);
        cfg_error_format(&err, got_mem, sizeof got_mem);
        if (rc != -EINVAL || c != NULL || strcmp(got_mem, expect) != 0) {
            print_error("%s (parse):\n  expected: %s\n  got (%d): %s\n", names[i], expect, rc,
                        got_mem);
            failures++;
        }
        free(text);
        free(expect);
    }
    free_list(names, n);
    assert_int_equal(failures, 0);
}

static char tmp_dir[256];

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/test_cfg.XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    char path[512];
    static const char *const files[] = {"big.json", "limit.json"};

    (void)state;
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp_dir, files[i]);
        unlink(path);
    }
    return rmdir(tmp_dir);
}

static void test_missing_and_oversized(void **state)
{
    char path[512], expected[1024], msg[1024];
    cfg *c = (cfg *)1;
    cfg_error err;
    char *data;

    (void)state;
    snprintf(path, sizeof path, "%s/missing.json", tmp_dir);
    assert_int_equal(cfg_load_file(path, &c, &err), -ENOENT);
    assert_null(c);
    assert_int_equal(err.line, 0);
    cfg_error_format(&err, msg, sizeof msg);
    snprintf(expected, sizeof expected,
             "%s: cannot open the settings file: No such file or directory", path);
    assert_string_equal(msg, expected);
    /* err is optional */
    assert_int_equal(cfg_load_file(path, &c, NULL), -ENOENT);

    assert_int_equal(cfg_load_file(tmp_dir, &c, &err), -EISDIR);
    cfg_error_format(&err, msg, sizeof msg);
    snprintf(expected, sizeof expected, "%s: is a directory, not a settings file", tmp_dir);
    assert_string_equal(msg, expected);

    /* One byte over the limit... */
    data = malloc(CFG_MAX_FILE_BYTES + 1);
    assert_non_null(data);
    memset(data, ' ', CFG_MAX_FILE_BYTES + 1);
    data[0] = '{';
    data[CFG_MAX_FILE_BYTES] = '}';
    snprintf(path, sizeof path, "%s/big.json", tmp_dir);
    write_file(path, data, CFG_MAX_FILE_BYTES + 1);
    assert_int_equal(cfg_load_file(path, &c, &err), -EFBIG);
    assert_null(c);
    cfg_error_format(&err, msg, sizeof msg);
    snprintf(expected, sizeof expected, "%s: the file is larger than 16777216 bytes (16 MiB)",
             path);
    assert_string_equal(msg, expected);
    assert_int_equal(cfg_parse(data, CFG_MAX_FILE_BYTES + 1, "mem.json", &c, &err), -EFBIG);

    /* ...and exactly at it loads. */
    data[CFG_MAX_FILE_BYTES - 1] = '}';
    snprintf(path, sizeof path, "%s/limit.json", tmp_dir);
    write_file(path, data, CFG_MAX_FILE_BYTES);
    c = load_ok(path);
    assert_int_equal(c->n_servers, 0);
    cfg_free(c);
    free(data);
}

/* ---------------------------------------------------------------- API details */

static void test_api_edges(void **state)
{
    static const char minimal[] = "{\"mcpServers\": {\"x\": {\"command\": \"x\"}}}";
    cfg_error err;
    char small[16], full[256];
    cfg *c = NULL;
    char *copy;
    int n;

    (void)state;
    cfg_free(NULL);
    assert_null(cfg_find_server(NULL, "x"));
    assert_null(cfg_find_group(NULL, "x"));
    assert_string_equal(cfg_transport_name(CFG_TRANSPORT_STDIO), "stdio");
    assert_string_equal(cfg_transport_name(CFG_TRANSPORT_SSE), "sse");
    assert_string_equal(cfg_transport_name(CFG_TRANSPORT_STREAMABLE_HTTP), "streamable-http");
    assert_string_equal(cfg_transport_name(CFG_TRANSPORT_OTHER), "other");
    assert_string_equal(cfg_access_name(CFG_ACCESS_ALL), "all");
    assert_string_equal(cfg_access_name(CFG_ACCESS_GROUPS), "groups");
    assert_string_equal(cfg_access_name(CFG_ACCESS_SERVERS), "servers");

    /* The text needs no NUL terminator (ASan checks nothing past len is read). */
    copy = malloc(sizeof minimal - 1);
    assert_non_null(copy);
    memcpy(copy, minimal, sizeof minimal - 1);
    assert_int_equal(cfg_parse(copy, sizeof minimal - 1, "x.json", &c, &err), 0);
    assert_string_equal(server(c, "x")->command, "x");
    cfg_free(c);
    free(copy);

    assert_int_equal(cfg_parse(minimal, sizeof minimal - 1, "x.json", NULL, &err), -EINVAL);
    assert_int_equal(cfg_parse(minimal, sizeof minimal - 1, NULL, &c, NULL), 0);
    assert_string_equal(c->origin, "<settings>");
    cfg_free(c);

    /* cfg_error_format behaves like snprintf. */
    assert_int_equal(cfg_parse("[]", 2, "a.json", &c, &err), -EINVAL);
    n = cfg_error_format(&err, full, sizeof full);
    assert_string_equal(full, "a.json:1:1: the top level must be a JSON object, got an array");
    assert_int_equal(n, (int)strlen(full));
    assert_int_equal(cfg_error_format(&err, small, sizeof small), n);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_int_equal(cfg_error_format(&err, NULL, 0), n);
    assert_int_equal(cfg_error_format(NULL, full, sizeof full), -EINVAL);
    memset(&err, 0, sizeof err);
    strcpy(err.file, "f");
    strcpy(err.field, "a.b");
    strcpy(err.message, "m");
    cfg_error_format(&err, full, sizeof full);
    assert_string_equal(full, "f: a.b: m");
}

/* The position finder on its own: escapes, nesting, duplicates, characters vs bytes. */
static void test_positions(void **state)
{
    static const char text[] = "{\"a\\u0062\": [1, {\"x\\\"y\": \"\\u00e9}]\"}, "
                               "{\"k\": true}], \"a\": 0,\n"
                               "  \"\xc3\xa9t\xc3\xa9\": \"\xe2\x82\xac\", \"b\": [[], {\"c\": null}]}";
    cfg_path_item p1[] = {{"ab", 0}, {NULL, 2}, {"k", 0}};
    cfg_path_item p2[] = {{"ab", 0}, {NULL, 1}, {"x\"y", 0}};
    cfg_path_item p3[] = {{"b", 0}, {NULL, 1}, {"c", 0}};
    cfg_path_item p4[] = {{"ab", 0}, {NULL, 7}};
    cfg_path_item p5[] = {{"\xc3\xa9t\xc3\xa9", 0}};
    size_t len = sizeof text - 1, off;
    char buf[64];
    int line, col;

    (void)state;
    off = cfg_pos_find(text, len, p1, 3);
    assert_memory_equal(text + off, "true", 4);
    off = cfg_pos_find(text, len, p2, 3);
    assert_memory_equal(text + off, "\"\\u00e9}]\"", 10);
    off = cfg_pos_find(text, len, p3, 3);
    assert_memory_equal(text + off, "null", 4);
    /* A missing index stops at the deepest value found: the array. */
    off = cfg_pos_find(text, len, p4, 2);
    assert_memory_equal(text + off, "[1, {", 5);
    off = cfg_pos_find(text, len, p5, 1);
    assert_memory_equal(text + off, "\"\xe2\x82\xac\"", 5);
    cfg_pos_line_col(text, len, off, &line, &col);
    assert_int_equal(line, 2);
    assert_int_equal(col, 10); /* "été" is three characters, five bytes */

    cfg_path_render(p2, 3, buf, sizeof buf);
    assert_string_equal(buf, "ab[1][\"x\\\"y\"]");
    cfg_path_render(p1, 3, buf, 8);
    assert_string_equal(buf, "ab[2].k");
    cfg_path_render(p1, 3, buf, 4);
    assert_string_equal(buf, "ab[");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_folder),
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_full_example),
        cmocka_unit_test(test_unknown_keys_ignored),
        cmocka_unit_test(test_inference_and_legacy),
        cmocka_unit_test(test_bom_and_crlf),
        cmocka_unit_test(test_default_config),
        cmocka_unit_test(test_env_expansion),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_hub_settings),
        cmocka_unit_test(test_bearer_keys),
        cmocka_unit_test(test_invalid_folder),
        cmocka_unit_test_setup_teardown(test_missing_and_oversized, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_api_edges),
        cmocka_unit_test(test_positions),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
