/* cfg: reads and validates the settings file (MCPHub's mcp_settings.json plus mcphub's
 * `hub` section) into the typed structs of cfg.h. MCPHub's rules are followed where they
 * are known (type inference, ${VAR} expansion, defaults); see docs/configuration.md. */
#include "cfg.h"
#include "cfg_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* State of one parse: the text for positions, the cfg being built, the error to fill and
 * the path of the value being read (for messages and positions). */
typedef struct cfg_ctx {
    const char *text;
    size_t len;
    cfg *c;
    cfg_error *err;
    cfg_path_item path[CFG_PATH_MAX];
    size_t depth;
    /* While a server's fields are expanded, its own env block is looked up first, as MCPHub
     * does ({...process.env, ...server.env}). */
    const cfg_kv *env;
    size_t n_env;
} cfg_ctx;

/* A short, printable rendering of a value for messages. */
typedef struct cfg_quoted {
    char s[96];
} cfg_quoted;

#define ARENA(x) (&(x)->c->arena)

static void *arena_array(cfg_ctx *x, size_t n, size_t size)
{
    return cfg_arena_alloc(ARENA(x), n * size);
}

static const char *arena_str(cfg_ctx *x, const char *s)
{
    return cfg_arena_strndup(ARENA(x), s, strlen(s));
}

/* ---------------------------------------------------------------- paths and errors */

static void push_key(cfg_ctx *x, const char *key)
{
    assert(x->depth < CFG_PATH_MAX);
    x->path[x->depth].key = key;
    x->path[x->depth].index = 0;
    x->depth++;
}

static void push_index(cfg_ctx *x, size_t index)
{
    assert(x->depth < CFG_PATH_MAX);
    x->path[x->depth].key = NULL;
    x->path[x->depth].index = index;
    x->depth++;
}

static void pop(cfg_ctx *x)
{
    assert(x->depth > 0);
    x->depth--;
}

static const char *quote(cfg_quoted *q, const char *s)
{
    size_t n = 0, i;

    q->s[n++] = '"';
    for (i = 0; s[i] && n < 64; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch < 0x20) {
            n += (size_t)snprintf(q->s + n, sizeof q->s - n, "\\u%04x", ch);
        } else if (ch == '"' || ch == '\\') {
            q->s[n++] = '\\';
            q->s[n++] = (char)ch;
        } else {
            q->s[n++] = (char)ch;
        }
    }
    if (s[i]) {
        memcpy(q->s + n, "...", 3);
        n += 3;
    }
    q->s[n++] = '"';
    q->s[n] = '\0';
    return q->s;
}

/* What a value is, for "expected X, got Y": short values are shown, others named. */
static const char *got(cfg_quoted *q, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return quote(q, json_string_value(v));
    case JSON_INTEGER:
        snprintf(q->s, sizeof q->s, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return q->s;
    case JSON_REAL:
        snprintf(q->s, sizeof q->s, "%g", json_real_value(v));
        return q->s;
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        break;
    }
    return "null";
}

/* Fills the error for the value at the current path; returns -EINVAL. */
static int fail(cfg_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(cfg_ctx *x, const char *fmt, ...)
{
    cfg_error *e = x->err;
    size_t off = cfg_pos_find(x->text, x->len, x->path, x->depth);
    va_list ap;

    e->code = -EINVAL;
    cfg_pos_line_col(x->text, x->len, off, &e->line, &e->column);
    cfg_path_render(x->path, x->depth, e->field, sizeof e->field);
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* Line of the value at an absolute path (for "first at line N"). */
static int line_at(cfg_ctx *x, const cfg_path_item *path, size_t depth)
{
    int line, col;

    cfg_pos_line_col(x->text, x->len, cfg_pos_find(x->text, x->len, path, depth), &line, &col);
    return line;
}

/* ---------------------------------------------------------------- typed readers */

/* Objects are read in two steps: json_unpack_ex(v, &jerr, 0, "{s?o s?o ...}") picks the
 * members we know as borrowed references (flags 0, not JSON_STRICT: unknown keys are
 * allowed and stay in the tree), then each member is checked by one of the readers below,
 * so that an error names its own field and points at its own value. */

/* JSON null counts as absent everywhere, as `??` and `||` make it in MCPHub. */
static bool present(const json_t *v)
{
    return v && !json_is_null(v);
}

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* The value at the current path must be a string of at most max bytes; *out is borrowed
 * from the JSON tree. */
static int check_string(cfg_ctx *x, const json_t *v, size_t max, const char **out)
{
    cfg_quoted q;

    if (!json_is_string(v))
        return fail(x, "expected a string, got %s", got(&q, v));
    if (json_string_length(v) > max)
        return fail(x, "is longer than %zu bytes", max);
    *out = json_string_value(v);
    return 0;
}

static int want_string(cfg_ctx *x, const char *key, const json_t *v, size_t max,
                       const char **out)
{
    int rc;

    if (!present(v))
        return 0;
    push_key(x, key);
    if ((rc = check_string(x, v, max, out)) < 0)
        return rc;
    pop(x);
    return 0;
}

static int want_bool(cfg_ctx *x, const char *key, const json_t *v, bool *out)
{
    cfg_quoted q;

    if (!present(v))
        return 0;
    push_key(x, key);
    if (!json_is_boolean(v))
        return fail(x, "expected true or false, got %s", got(&q, v));
    pop(x);
    *out = json_is_true(v);
    return 0;
}

/* Milliseconds from a JSON number at the current path: not negative, clamped to
 * CFG_DURATION_MAX_MS (Node's timers treat larger values as 1 ms). */
static int check_ms(cfg_ctx *x, const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);

        if (n < 0)
            return fail(x, "must not be negative, got %" JSON_INTEGER_FORMAT, n);
        *out = n > CFG_DURATION_MAX_MS ? CFG_DURATION_MAX_MS : (int64_t)n;
    } else {
        double d = json_real_value(v);

        if (d < 0)
            return fail(x, "must not be negative, got %g", d);
        *out = d > CFG_DURATION_MAX_MS ? CFG_DURATION_MAX_MS : (int64_t)d;
    }
    return 0;
}

static int want_ms(cfg_ctx *x, const char *key, const json_t *v, int64_t *out)
{
    cfg_quoted q;
    int rc;

    if (!present(v))
        return 0;
    push_key(x, key);
    if (!json_is_number(v))
        return fail(x, "expected a number of milliseconds, got %s", got(&q, v));
    if ((rc = check_ms(x, v, out)) < 0)
        return rc;
    pop(x);
    return 0;
}

/* "1500", "90s", "30m", "1h30m", "2d", "250ms": digits with an optional fraction, each
 * followed by a unit; a bare number means milliseconds. */
static bool parse_duration(const char *s, int64_t *out)
{
    double total = 0;
    bool any = false;

    while (*s == ' ' || *s == '\t')
        s++;
    while (*s && *s != ' ' && *s != '\t') {
        double v = 0, scale = 1, unit;

        if (*s < '0' || *s > '9')
            return false;
        while (*s >= '0' && *s <= '9')
            v = v * 10 + (*s++ - '0');
        if (*s == '.') {
            s++;
            if (*s < '0' || *s > '9')
                return false;
            while (*s >= '0' && *s <= '9')
                v += (*s++ - '0') * (scale /= 10);
        }
        if (strncmp(s, "ms", 2) == 0) {
            unit = 1;
            s += 2;
        } else if (*s == 's') {
            unit = 1000;
            s++;
        } else if (*s == 'm') {
            unit = 60000;
            s++;
        } else if (*s == 'h') {
            unit = 3600000;
            s++;
        } else if (*s == 'd') {
            unit = 86400000;
            s++;
        } else if (!any && (*s == '\0' || *s == ' ' || *s == '\t')) {
            unit = 1;
        } else {
            return false;
        }
        total += v * unit;
        any = true;
        if (total > CFG_DURATION_MAX_MS)
            total = CFG_DURATION_MAX_MS;
    }
    while (*s == ' ' || *s == '\t')
        s++;
    if (!any || *s)
        return false;
    *out = (int64_t)total;
    return true;
}

/* A duration in mcphub's own section: milliseconds or a string such as "30m". */
static int want_duration(cfg_ctx *x, const char *key, const json_t *v, int64_t min,
                         int64_t *out)
{
    cfg_quoted q;
    int64_t ms = 0;
    int rc;

    if (!present(v))
        return 0;
    push_key(x, key);
    if (json_is_number(v)) {
        if ((rc = check_ms(x, v, &ms)) < 0)
            return rc;
    } else if (!json_is_string(v) || !parse_duration(json_string_value(v), &ms)) {
        return fail(x, "expected milliseconds or a duration like \"30m\", got %s", got(&q, v));
    }
    if (ms < min)
        return fail(x, "must be at least %lld ms, got %s", (long long)min, got(&q, v));
    pop(x);
    *out = ms;
    return 0;
}

static int want_count(cfg_ctx *x, const char *key, const json_t *v, int64_t lo, int64_t hi,
                      int64_t *out)
{
    cfg_quoted q;
    double d;

    if (!present(v))
        return 0;
    push_key(x, key);
    if (json_is_integer(v)) {
        d = (double)json_integer_value(v);
    } else if (json_is_real(v)) {
        /* 2.0 is fine; a real too large to convert fails the range check below. */
        d = json_real_value(v);
        if (d > -1e18 && d < 1e18 && d != (double)(int64_t)d)
            return fail(x, "expected a whole number, got %s", got(&q, v));
    } else {
        return fail(x, "expected a whole number, got %s", got(&q, v));
    }
    if (d < (double)lo || d > (double)hi)
        return fail(x, "must be between %lld and %lld, got %s", (long long)lo, (long long)hi,
                    got(&q, v));
    pop(x);
    *out = (int64_t)d;
    return 0;
}

/* The object or array at the current path may hold at most CFG_ITEMS_MAX entries. */
static int check_count(cfg_ctx *x, size_t n)
{
    if (n > CFG_ITEMS_MAX)
        return fail(x, "has more than %u entries", CFG_ITEMS_MAX);
    return 0;
}

/* ---------------------------------------------------------------- ${VAR} expansion */

static const char *lookup_var(void *ud, const char *name)
{
    cfg_ctx *x = ud;

    /* Filled in per session when a perSession instance starts (inst_new_scoped). */
    if (strcmp(name, "MCPHUB_SESSION_ID") == 0)
        return "${MCPHUB_SESSION_ID}";
    for (size_t i = x->n_env; i-- > 0;)
        if (strcmp(x->env[i].key, name) == 0)
            return x->env[i].value;
    return getenv(name);
}

/* Expands s (the value at the current path) into the arena. */
static int expand(cfg_ctx *x, const char *s, const char **out)
{
    char *tmp = NULL;
    size_t n = 0;

    if (cfg_expand(s, lookup_var, x, CFG_STRING_MAX, &tmp, &n) < 0)
        return fail(x, "is longer than %u bytes after expanding environment variables",
                    CFG_STRING_MAX);
    *out = cfg_arena_strndup(ARENA(x), tmp, n);
    free(tmp);
    return 0;
}

static int want_expanded(cfg_ctx *x, const char *key, const json_t *v, const char **out)
{
    const char *raw = NULL;
    int rc;

    if (!present(v))
        return 0;
    push_key(x, key);
    if ((rc = check_string(x, v, CFG_STRING_MAX, &raw)) < 0 || (rc = expand(x, raw, out)) < 0)
        return rc;
    pop(x);
    return 0;
}

/* ---------------------------------------------------------------- composite readers */

/* An array of strings (each expanded when asked) at key. */
static int want_strings(cfg_ctx *x, const char *key, const json_t *v, size_t max, bool expanded,
                        const char *const **out, size_t *n_out)
{
    const char **items;
    cfg_quoted q;
    size_t i, n;
    json_t *item;
    int rc;

    if (!present(v))
        return 0;
    push_key(x, key);
    if (!json_is_array(v))
        return fail(x, "expected an array of strings, got %s", got(&q, v));
    n = json_array_size(v);
    if ((rc = check_count(x, n)) < 0)
        return rc;
    items = arena_array(x, n, sizeof *items);
    json_array_foreach(v, i, item) {
        const char *s = NULL;

        push_index(x, i);
        if ((rc = check_string(x, item, max, &s)) < 0)
            return rc;
        if (expanded) {
            if ((rc = expand(x, s, &items[i])) < 0)
                return rc;
        } else {
            items[i] = arena_str(x, s);
        }
        pop(x);
    }
    pop(x);
    *out = items;
    *n_out = n;
    return 0;
}

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool is_header_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

typedef enum { KV_ENV, KV_HEADERS } kv_kind;

/* `env` (values: strings, or numbers and booleans which Node turns into strings) or
 * `headers` (string values, names that are HTTP tokens). Values are expanded. */
static int want_kv(cfg_ctx *x, const char *key, const json_t *v, kv_kind kind,
                   const cfg_kv **out, size_t *n_out)
{
    const char *what = kind == KV_ENV ? "environment variable" : "header";
    cfg_kv *kvs;
    cfg_quoted q;
    const char *k;
    json_t *val;
    size_t i = 0;
    int rc;

    if (!present(v))
        return 0;
    push_key(x, key);
    if (!json_is_object(v))
        return fail(x, "expected an object of %s names to %s, got %s", what,
                    kind == KV_ENV ? "values" : "string values", got(&q, v));
    if ((rc = check_count(x, json_object_size(v))) < 0)
        return rc;
    kvs = arena_array(x, json_object_size(v), sizeof *kvs);
    json_object_foreach((json_t *)v, k, val) {
        const char *raw = NULL;
        char num[64];

        push_key(x, k);
        if (strlen(k) > CFG_NAME_MAX)
            return fail(x, "%s names are limited to %u bytes", what, CFG_NAME_MAX);
        if (kind == KV_ENV && (!*k || strchr(k, '=')))
            return fail(x, "environment variable names must not be empty or contain '='");
        if (kind == KV_HEADERS && !is_header_name(k))
            return fail(x, "%s is not a valid HTTP header name", quote(&q, k));
        if (kind == KV_ENV && json_is_integer(val)) {
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(val));
            raw = num;
        } else if (kind == KV_ENV && json_is_boolean(val)) {
            raw = json_is_true(val) ? "true" : "false";
        } else if (!json_is_string(val)) {
            return fail(x, "expected a string, got %s", got(&q, val));
        } else if ((rc = check_string(x, val, CFG_STRING_MAX, &raw)) < 0) {
            return rc;
        }
        kvs[i].key = arena_str(x, k);
        if ((rc = expand(x, raw, &kvs[i].value)) < 0)
            return rc;
        if (kind == KV_HEADERS && strpbrk(kvs[i].value, "\r\n"))
            return fail(x, "header values must not contain line breaks");
        pop(x);
        i++;
    }
    pop(x);
    *out = kvs;
    *n_out = i;
    return 0;
}

/* A server's `tools`, `prompts` or `resources`: {"name": {"enabled": bool, "description": s}}. */
static int want_overrides(cfg_ctx *x, const char *key, const json_t *v, const cfg_override **out,
                          size_t *n_out)
{
    cfg_override *ovs;
    cfg_quoted q;
    const char *k;
    json_t *val;
    size_t i = 0;
    int rc;

    if (!present(v))
        return 0;
    push_key(x, key);
    if (!json_is_object(v))
        return fail(x, "expected an object like {\"name\": {\"enabled\": false}}, got %s",
                    got(&q, v));
    if ((rc = check_count(x, json_object_size(v))) < 0)
        return rc;
    ovs = arena_array(x, json_object_size(v), sizeof *ovs);
    json_object_foreach((json_t *)v, k, val) {
        json_t *enabled = NULL, *description = NULL;
        const char *desc = NULL;
        json_error_t jerr;

        push_key(x, k);
        if (strlen(k) > CFG_STRING_MAX)
            return fail(x, "names are limited to %u bytes", CFG_STRING_MAX);
        if (!json_is_object(val))
            return fail(x, "expected an object like {\"enabled\": false}, got %s", got(&q, val));
        if (json_unpack_ex(val, &jerr, 0, "{s?o s?o}", "enabled", &enabled, "description",
                           &description) < 0)
            return fail(x, "%s", jerr.text);
        ovs[i].name = arena_str(x, k);
        ovs[i].enabled = true;
        if ((rc = want_bool(x, "enabled", enabled, &ovs[i].enabled)) < 0 ||
            (rc = want_string(x, "description", description, CFG_STRING_MAX, &desc)) < 0)
            return rc;
        ovs[i].description = desc ? arena_str(x, desc) : NULL;
        pop(x);
        i++;
    }
    pop(x);
    *out = ovs;
    *n_out = i;
    return 0;
}

/* A group member's `tools` (etc.): "all" or an array of names; absent means "all". */
static int want_selection(cfg_ctx *x, const char *key, const json_t *v, cfg_selection *sel)
{
    cfg_quoted q;

    sel->all = true;
    if (!present(v))
        return 0;
    if (json_is_array(v)) {
        sel->all = false;
        return want_strings(x, key, v, CFG_STRING_MAX, false, &sel->names, &sel->n_names);
    }
    if (json_is_string(v) && strcmp(json_string_value(v), "all") == 0)
        return 0;
    push_key(x, key);
    return fail(x, "expected \"all\" or an array of names, got %s", got(&q, v));
}

/* ---------------------------------------------------------------- servers */

/* MCPHub's SERVER_NAME_PATTERN (src/utils/serverNameValidation.ts); names outside it load,
 * with a warning, since tool names built from them may be refused by strict clients. */
static bool name_conforms(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 128 || strstr(s, ".."))
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static bool is_http_url(const char *u)
{
    return strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0;
}

static void unsupported(cfg_ctx *x, cfg_server *s, const char *reason)
{
    if (s->supported) {
        s->supported = false;
        s->unsupported_reason = arena_str(x, reason);
    }
}

/* Reads the server called name; the path is at mcpServers.<name>. */
static int parse_server(cfg_ctx *x, const char *name, json_t *obj, cfg_server *s)
{
    json_t *type = NULL, *command = NULL, *args = NULL, *env = NULL, *cwd = NULL, *url = NULL,
           *headers = NULL, *enabled = NULL, *per_session = NULL, *per_session_client = NULL,
           *tools = NULL, *prompts = NULL, *resources = NULL, *options = NULL,
           *keep_alive = NULL, *keep_alive_interval = NULL, *start_on_demand = NULL,
           *idle_timeout = NULL, *openapi = NULL, *cred = NULL;
    const char *raw_command = NULL, *raw_url = NULL, *type_s = NULL;
    bool has_command, has_url, has_openapi;
    json_error_t jerr;
    cfg_quoted q;
    char reason[160];
    int rc;

    s->json = obj;
    s->name = arena_str(x, name);
    s->name_conforms = name_conforms(name);
    s->supported = true;
    s->enabled = true;
    s->reset_timeout_on_progress = true;
    s->timeout_ms = x->c->hub.request_timeout_ms;
    s->keep_alive_interval_ms = CFG_DEFAULT_KEEPALIVE_INTERVAL_MS;
    s->idle_timeout_ms = CFG_DEFAULT_IDLE_TIMEOUT_MS;

    if (!*name)
        return fail(x, "server names must not be empty");
    if (strlen(name) > CFG_NAME_MAX)
        return fail(x, "server names are limited to %u bytes", CFG_NAME_MAX);
    if (has_control(name))
        return fail(x, "server names must not contain control characters");
    if (!json_is_object(obj))
        return fail(x, "expected an object describing the server, got %s", got(&q, obj));
    if (json_unpack_ex(obj, &jerr, 0,
                       "{s?o s?o s?o s?o s?o s?o s?o s?o s?o s?o s?o s?o s?o s?o s?o s?o s?o"
                       " s?o s?o s?o}",
                       "type", &type, "command", &command, "args", &args, "env", &env, "cwd",
                       &cwd, "url", &url, "headers", &headers, "enabled", &enabled,
                       "perSession", &per_session, "perSessionClient", &per_session_client,
                       "tools", &tools, "prompts", &prompts, "resources", &resources,
                       "options", &options, "enableKeepAlive", &keep_alive,
                       "keepAliveInterval", &keep_alive_interval, "startOnDemand",
                       &start_on_demand, "idleTimeoutMs", &idle_timeout, "openapi", &openapi,
                       "credentialTemplate", &cred) < 0)
        return fail(x, "%s", jerr.text);

    if ((rc = want_string(x, "type", type, CFG_NAME_MAX, &type_s)) < 0 ||
        (rc = want_string(x, "command", command, CFG_STRING_MAX, &raw_command)) < 0 ||
        (rc = want_string(x, "url", url, CFG_STRING_MAX, &raw_url)) < 0 ||
        (rc = want_bool(x, "enabled", enabled, &s->enabled)) < 0 ||
        (rc = want_bool(x, "perSessionClient", per_session_client, &s->per_session)) < 0 ||
        (rc = want_bool(x, "perSession", per_session, &s->per_session)) < 0 ||
        (rc = want_overrides(x, "tools", tools, &s->tools, &s->n_tools)) < 0 ||
        (rc = want_overrides(x, "prompts", prompts, &s->prompts, &s->n_prompts)) < 0 ||
        (rc = want_overrides(x, "resources", resources, &s->resources, &s->n_resources)) < 0 ||
        (rc = want_bool(x, "enableKeepAlive", keep_alive, &s->keep_alive)) < 0 ||
        (rc = want_ms(x, "keepAliveInterval", keep_alive_interval,
                      &s->keep_alive_interval_ms)) < 0 ||
        (rc = want_bool(x, "startOnDemand", start_on_demand, &s->start_on_demand)) < 0 ||
        (rc = want_ms(x, "idleTimeoutMs", idle_timeout, &s->idle_timeout_ms)) < 0)
        return rc;
    /* MCPHub: `keepAliveInterval || 60000`. */
    if (s->keep_alive_interval_ms == 0)
        s->keep_alive_interval_ms = CFG_DEFAULT_KEEPALIVE_INTERVAL_MS;

    if (present(options)) {
        json_t *timeout = NULL, *reset = NULL, *max_total = NULL;
        int64_t t = 0;

        push_key(x, "options");
        if (!json_is_object(options))
            return fail(x, "expected an object, got %s", got(&q, options));
        if (json_unpack_ex(options, &jerr, 0, "{s?o s?o s?o}", "timeout", &timeout,
                           "resetTimeoutOnProgress", &reset, "maxTotalTimeout", &max_total) < 0)
            return fail(x, "%s", jerr.text);
        if ((rc = want_ms(x, "timeout", timeout, &t)) < 0 ||
            (rc = want_bool(x, "resetTimeoutOnProgress", reset,
                            &s->reset_timeout_on_progress)) < 0 ||
            (rc = want_ms(x, "maxTotalTimeout", max_total, &s->max_total_timeout_ms)) < 0)
            return rc;
        /* MCPHub: `options.timeout || DEFAULT_REQUEST_TIMEOUT`. */
        if (t > 0)
            s->timeout_ms = t;
        pop(x);
    }

    /* The env block first: other fields may refer to its variables. */
    if ((rc = want_kv(x, "env", env, KV_ENV, &s->env, &s->n_env)) < 0)
        return rc;
    x->env = s->env;
    x->n_env = s->n_env;
    if ((rc = want_expanded(x, "command", command, &s->command)) < 0 ||
        (rc = want_strings(x, "args", args, CFG_STRING_MAX, true, &s->args, &s->n_args)) < 0 ||
        (rc = want_expanded(x, "cwd", cwd, &s->cwd)) < 0 ||
        (rc = want_expanded(x, "url", url, &s->url)) < 0 ||
        (rc = want_kv(x, "headers", headers, KV_HEADERS, &s->headers, &s->n_headers)) < 0)
        return rc;
    x->env = NULL;
    x->n_env = 0;
    if (!s->args)
        s->args = arena_array(x, 0, sizeof *s->args);
    if (s->cwd && !*s->cwd)
        s->cwd = NULL;

    /* Resolve the transport from what is written (an unset variable must not turn a
     * server into another kind), as MCPHub's createTransportFromConfig does: an explicit
     * streamable-http needs a url; otherwise a url means SSE and a command means stdio.
     * Unlike MCPHub, an explicit "stdio" with a command stays stdio even if a url is set. */
    s->type = type_s ? arena_str(x, type_s) : NULL;
    has_command = raw_command && *raw_command;
    has_url = raw_url && *raw_url;
    has_openapi = json_is_object(openapi) &&
                  (present(json_object_get(openapi, "url")) ||
                   present(json_object_get(openapi, "schema")));
    if (type_s && strcmp(type_s, "openapi") == 0) {
        s->transport = CFG_TRANSPORT_OPENAPI;
    } else if (type_s && strcmp(type_s, "streamable-http") == 0) {
        if (!has_url)
            return fail(x, "type \"streamable-http\" needs a \"url\"");
        s->transport = CFG_TRANSPORT_STREAMABLE_HTTP;
    } else if (type_s && strcmp(type_s, "stdio") != 0 && strcmp(type_s, "sse") != 0) {
        s->transport = CFG_TRANSPORT_OTHER;
    } else if (type_s && strcmp(type_s, "stdio") == 0 && has_command) {
        s->transport = CFG_TRANSPORT_STDIO;
    } else if (has_url) {
        s->transport = CFG_TRANSPORT_SSE;
    } else if (has_command) {
        s->transport = CFG_TRANSPORT_STDIO;
    } else if (!type_s && has_openapi) {
        s->transport = CFG_TRANSPORT_OPENAPI;
    } else {
        return fail(x, "needs a \"command\" (stdio) or a \"url\" (sse, streamable-http)");
    }

    switch (s->transport) {
    case CFG_TRANSPORT_OPENAPI:
        unsupported(x, s, "OpenAPI servers are not supported by mcphub");
        break;
    case CFG_TRANSPORT_OTHER:
        snprintf(reason, sizeof reason, "type %s is not supported", quote(&q, type_s));
        unsupported(x, s, reason);
        break;
    case CFG_TRANSPORT_STDIO:
        if (!s->command || !*s->command)
            unsupported(x, s, "\"command\" is empty after expanding environment variables");
        break;
    case CFG_TRANSPORT_SSE:
    case CFG_TRANSPORT_STREAMABLE_HTTP:
        if (!s->url || !*s->url)
            unsupported(x, s, "\"url\" is empty after expanding environment variables");
        else if (!is_http_url(s->url))
            unsupported(x, s, "\"url\" must start with http:// or https://");
        break;
    }
    if (json_is_array(cred) && json_array_size(cred) > 0)
        unsupported(x, s, "per-user credential templates (credentialTemplate) are not supported");
    return 0;
}

static int parse_servers(cfg_ctx *x, json_t *v)
{
    cfg_server *servers;
    const char *name;
    json_t *obj;
    cfg_quoted q;
    size_t i = 0;
    int rc;

    if (!present(v))
        return 0;
    push_key(x, "mcpServers");
    if (!json_is_object(v))
        return fail(x, "expected an object of server names to server settings, got %s",
                    got(&q, v));
    if ((rc = check_count(x, json_object_size(v))) < 0)
        return rc;
    servers = arena_array(x, json_object_size(v), sizeof *servers);
    x->c->servers = servers;
    json_object_foreach(v, name, obj) {
        push_key(x, name);
        if ((rc = parse_server(x, name, obj, &servers[i])) < 0)
            return rc;
        /* by_name steals the new integer reference. */
        json_object_set_new(x->c->by_name, name, json_integer((json_int_t)i));
        pop(x);
        x->c->n_servers = ++i;
    }
    pop(x);
    return 0;
}

/* Index of the server called name, or -1. */
static long server_index(const cfg *c, const char *name)
{
    json_t *i = json_object_get(c->by_name, name); /* borrowed reference */

    return i ? (long)json_integer_value(i) : -1;
}

/* ---------------------------------------------------------------- groups */

/* One entry of a group's `servers`; seen (borrowed) collects the names exposed so far. */
static int parse_member(cfg_ctx *x, const json_t *v, cfg_group_member *m, json_t *seen)
{
    json_t *name = NULL, *alias = NULL, *tools = NULL, *prompts = NULL, *resources = NULL;
    const char *server = NULL, *alias_s = NULL, *exposed;
    bool object = json_is_object(v);
    json_error_t jerr;
    cfg_quoted q;
    long idx;
    int rc;

    m->tools.all = m->prompts.all = m->resources.all = true;
    if (json_is_string(v)) {
        if ((rc = check_string(x, v, CFG_NAME_MAX, &server)) < 0)
            return rc;
    } else if (object) {
        if (json_unpack_ex((json_t *)v, &jerr, 0, "{s?o s?o s?o s?o s?o}", "name", &name,
                           "alias", &alias, "tools", &tools, "prompts", &prompts, "resources",
                           &resources) < 0)
            return fail(x, "%s", jerr.text);
        if (!present(name))
            return fail(x, "a group member needs a \"name\"");
        if ((rc = want_string(x, "name", name, CFG_NAME_MAX, &server)) < 0 ||
            (rc = want_string(x, "alias", alias, CFG_NAME_MAX, &alias_s)) < 0 ||
            (rc = want_selection(x, "tools", tools, &m->tools)) < 0 ||
            (rc = want_selection(x, "prompts", prompts, &m->prompts)) < 0 ||
            (rc = want_selection(x, "resources", resources, &m->resources)) < 0)
            return rc;
    } else {
        return fail(x, "expected a server name or an object like {\"name\": \"server\"}, got %s",
                    got(&q, v));
    }

    if (object)
        push_key(x, "name");
    if ((idx = server_index(x->c, server)) < 0)
        return fail(x, "unknown server %s", quote(&q, server));
    if (object)
        pop(x);
    m->server = x->c->servers[idx].name;
    m->server_index = (size_t)idx;
    if (alias_s) {
        /* MCPHub trims the alias and ignores an empty one. */
        size_t a = 0, b = strlen(alias_s);

        while (alias_s[a] == ' ' || alias_s[a] == '\t')
            a++;
        while (b > a && (alias_s[b - 1] == ' ' || alias_s[b - 1] == '\t'))
            b--;
        m->alias = b > a ? cfg_arena_strndup(ARENA(x), alias_s + a, b - a) : NULL;
    }
    exposed = m->alias ? m->alias : m->server;
    if (json_object_get(seen, exposed)) {
        if (object)
            push_key(x, m->alias ? "alias" : "name");
        return fail(x, "%s appears twice in this group", quote(&q, exposed));
    }
    json_object_set_new(seen, exposed, json_true()); /* steals the new reference */
    return 0;
}

/* One group; names and ids (borrowed) map the names and ids seen so far to their index. */
static int parse_group(cfg_ctx *x, json_t *v, cfg_group *g, json_t *names, json_t *ids)
{
    json_t *id = NULL, *name = NULL, *servers = NULL, *member, *seen = NULL, *first;
    const char *id_s = NULL, *name_s = NULL;
    cfg_group_member *members;
    json_error_t jerr;
    cfg_quoted q;
    size_t i, n;
    int rc;

    if (!json_is_object(v))
        return fail(x, "expected an object like {\"name\": \"group\", \"servers\": []}, got %s",
                    got(&q, v));
    if (json_unpack_ex(v, &jerr, 0, "{s?o s?o s?o}", "id", &id, "name", &name, "servers",
                       &servers) < 0)
        return fail(x, "%s", jerr.text);
    if (!present(name))
        return fail(x, "a group needs a \"name\"");
    if ((rc = want_string(x, "id", id, CFG_NAME_MAX, &id_s)) < 0 ||
        (rc = want_string(x, "name", name, CFG_NAME_MAX, &name_s)) < 0)
        return rc;
    push_key(x, "name");
    if (!*name_s)
        return fail(x, "group names must not be empty");
    if (has_control(name_s))
        return fail(x, "group names must not contain control characters");
    if ((first = json_object_get(names, name_s))) {
        cfg_path_item p[3] = {{"groups", 0}, {NULL, (size_t)json_integer_value(first)},
                              {"name", 0}};

        return fail(x, "duplicate group name %s (first at line %d)", quote(&q, name_s),
                    line_at(x, p, 3));
    }
    pop(x);
    if (id_s && json_object_get(ids, id_s)) {
        push_key(x, "id");
        return fail(x, "duplicate group id %s", quote(&q, id_s));
    }
    g->name = arena_str(x, name_s);
    g->id = id_s ? arena_str(x, id_s) : NULL;
    json_object_set_new(names, name_s, json_integer((json_int_t)(g - x->c->groups)));
    if (id_s)
        json_object_set_new(ids, id_s, json_true());

    if (!present(servers))
        return 0;
    push_key(x, "servers");
    if (!json_is_array(servers))
        return fail(x, "expected an array of server names, got %s", got(&q, servers));
    n = json_array_size(servers);
    if ((rc = check_count(x, n)) < 0)
        return rc;
    members = arena_array(x, n, sizeof *members);
    g->members = members;
    seen = json_object(); /* new reference, released at out */
    if (!seen)
        abort();
    json_array_foreach(servers, i, member) {
        push_index(x, i);
        if ((rc = parse_member(x, member, &members[i], seen)) < 0)
            goto out;
        pop(x);
        g->n_members = i + 1;
    }
    pop(x);
    rc = 0;
out:
    json_decref(seen);
    return rc;
}

static int parse_groups(cfg_ctx *x, json_t *v)
{
    json_t *names = NULL, *ids = NULL, *item;
    cfg_group *groups;
    cfg_quoted q;
    size_t i, n;
    int rc;

    if (!present(v))
        return 0;
    push_key(x, "groups");
    if (!json_is_array(v))
        return fail(x, "expected an array of groups, got %s", got(&q, v));
    n = json_array_size(v);
    if ((rc = check_count(x, n)) < 0)
        return rc;
    groups = arena_array(x, n, sizeof *groups);
    x->c->groups = groups;
    names = json_object(); /* new references, released at out */
    ids = json_object();
    if (!names || !ids)
        abort();
    json_array_foreach(v, i, item) {
        push_index(x, i);
        if ((rc = parse_group(x, item, &groups[i], names, ids)) < 0)
            goto out;
        pop(x);
        x->c->n_groups = i + 1;
    }
    pop(x);
    rc = 0;
out:
    json_decref(names);
    json_decref(ids);
    return rc;
}

/* ---------------------------------------------------------------- bearer keys */

static void key_finish(cfg_ctx *x, cfg_bearer_key *k)
{
    const char *why = NULL;

    if (!k->enabled)
        why = "the key is disabled";
    else if (!*k->token)
        why = "the token is empty (after expanding environment variables)";
    else if (k->user_key)
        why = "user-level keys (kind \"user\") are not supported";
    k->usable = !why;
    k->unusable_reason = why ? arena_str(x, why) : NULL;
    if (!k->allowed_groups)
        k->allowed_groups = arena_array(x, 0, sizeof *k->allowed_groups);
    if (!k->allowed_servers)
        k->allowed_servers = arena_array(x, 0, sizeof *k->allowed_servers);
}

static int parse_key(cfg_ctx *x, json_t *v, size_t index, cfg_bearer_key *k)
{
    json_t *id = NULL, *name = NULL, *token = NULL, *enabled = NULL, *kind = NULL,
           *owner = NULL, *access = NULL, *groups = NULL, *servers = NULL;
    const char *id_s = NULL, *name_s = NULL, *kind_s = NULL, *owner_s = NULL, *access_s = NULL;
    json_error_t jerr;
    cfg_quoted q;
    char fallback[48];
    int rc;

    if (!json_is_object(v))
        return fail(x, "expected an object like {\"name\": ..., \"token\": ...}, got %s",
                    got(&q, v));
    if (json_unpack_ex(v, &jerr, 0, "{s?o s?o s?o s?o s?o s?o s?o s?o s?o}", "id", &id, "name",
                       &name, "token", &token, "enabled", &enabled, "kind", &kind, "owner",
                       &owner, "accessType", &access, "allowedGroups", &groups,
                       "allowedServers", &servers) < 0)
        return fail(x, "%s", jerr.text);
    if (!present(token))
        return fail(x, "a bearer key needs a \"token\"");
    k->enabled = true;
    if ((rc = want_string(x, "id", id, CFG_NAME_MAX, &id_s)) < 0 ||
        (rc = want_string(x, "name", name, CFG_NAME_MAX, &name_s)) < 0 ||
        (rc = want_expanded(x, "token", token, &k->token)) < 0 ||
        (rc = want_bool(x, "enabled", enabled, &k->enabled)) < 0 ||
        (rc = want_string(x, "kind", kind, CFG_NAME_MAX, &kind_s)) < 0 ||
        (rc = want_string(x, "owner", owner, CFG_NAME_MAX, &owner_s)) < 0 ||
        (rc = want_string(x, "accessType", access, CFG_NAME_MAX, &access_s)) < 0 ||
        (rc = want_strings(x, "allowedGroups", groups, CFG_NAME_MAX, false, &k->allowed_groups,
                           &k->n_allowed_groups)) < 0 ||
        (rc = want_strings(x, "allowedServers", servers, CFG_NAME_MAX, false,
                           &k->allowed_servers, &k->n_allowed_servers)) < 0)
        return rc;
    if (kind_s && strcmp(kind_s, "system") != 0 && strcmp(kind_s, "user") != 0) {
        push_key(x, "kind");
        return fail(x, "expected \"system\" or \"user\", got %s", quote(&q, kind_s));
    }
    k->user_key = kind_s && strcmp(kind_s, "user") == 0;
    if (!access_s || strcmp(access_s, "all") == 0) {
        k->access = CFG_ACCESS_ALL;
    } else if (strcmp(access_s, "groups") == 0) {
        k->access = CFG_ACCESS_GROUPS;
    } else if (strcmp(access_s, "servers") == 0) {
        k->access = CFG_ACCESS_SERVERS;
    } else if (strcmp(access_s, "custom") == 0) {
        k->access = CFG_ACCESS_CUSTOM;
    } else {
        push_key(x, "accessType");
        return fail(x, "expected \"all\", \"groups\", \"servers\" or \"custom\", got %s",
                    quote(&q, access_s));
    }
    snprintf(fallback, sizeof fallback, "bearerKeys[%zu]", index);
    k->id = id_s ? arena_str(x, id_s) : NULL;
    k->name = arena_str(x, name_s && *name_s ? name_s : id_s && *id_s ? id_s : fallback);
    k->owner = owner_s ? arena_str(x, owner_s) : NULL;
    key_finish(x, k);
    return 0;
}

/* bearerKeys, or MCPHub's one-time migration of the legacy routing.bearerAuthKey when the
 * file has no bearerKeys array yet (src/dao/BearerKeyDao.ts). */
static int parse_keys(cfg_ctx *x, json_t *v)
{
    cfg_bearer_key *keys;
    json_t *item;
    cfg_quoted q;
    size_t i, n;
    int rc;

    if (!json_is_array(v)) {
        const char *legacy = x->c->routing.bearer_auth_key;

        if (present(v)) {
            push_key(x, "bearerKeys");
            return fail(x, "expected an array of keys, got %s", got(&q, v));
        }
        if (!*legacy)
            return 0;
        keys = arena_array(x, 1, sizeof *keys);
        keys->name = arena_str(x, "default");
        keys->token = legacy;
        keys->enabled = x->c->routing.enable_bearer_auth;
        keys->access = CFG_ACCESS_ALL;
        keys->migrated = true;
        key_finish(x, keys);
        x->c->keys = keys;
        x->c->n_keys = 1;
        return 0;
    }
    push_key(x, "bearerKeys");
    n = json_array_size(v);
    if ((rc = check_count(x, n)) < 0)
        return rc;
    keys = arena_array(x, n, sizeof *keys);
    x->c->keys = keys;
    json_array_foreach(v, i, item) {
        push_index(x, i);
        if ((rc = parse_key(x, item, i, &keys[i])) < 0)
            return rc;
        pop(x);
        x->c->n_keys = i + 1;
    }
    pop(x);
    return 0;
}

/* ---------------------------------------------------------------- systemConfig */

/* Express's `bytes` parser as body-parser uses it: "1mb", "100kb", "512" (units of 1024);
 * anything it cannot read leaves the default (MCPHub would then run without a limit). */
static int64_t parse_body_limit(const json_t *v)
{
    static const char *const units[] = {"b", "kb", "mb", "gb", "tb", "pb"};
    double whole = 0, frac = 0, scale = 1;
    const char *s;

    if (json_is_number(v)) {
        double d = json_number_value(v);

        return d >= 0 && d < 1e15 ? (int64_t)d : CFG_DEFAULT_JSON_BODY_LIMIT;
    }
    if (!json_is_string(v))
        return CFG_DEFAULT_JSON_BODY_LIMIT;
    s = json_string_value(v);
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s < '0' || *s > '9')
        return CFG_DEFAULT_JSON_BODY_LIMIT;
    while (*s >= '0' && *s <= '9' && whole < 1e15)
        whole = whole * 10 + (*s++ - '0');
    if (*s == '.' && s[1] >= '0' && s[1] <= '9')
        for (s++; *s >= '0' && *s <= '9'; s++)
            frac += (*s - '0') * (scale /= 10);
    while (*s == ' ')
        s++;
    for (size_t u = 1; u < sizeof units / sizeof *units; u++) {
        if (strcasecmp(s, units[u]) == 0) {
            double d = whole + frac;

            while (u--)
                d *= 1024;
            return d < 1e15 ? (int64_t)d : CFG_DEFAULT_JSON_BODY_LIMIT;
        }
    }
    /* No unit: parseInt semantics, the whole part. */
    return whole < 1e15 ? (int64_t)whole : CFG_DEFAULT_JSON_BODY_LIMIT;
}

static int parse_system(cfg_ctx *x, json_t *v)
{
    json_t *routing = NULL, *separator = NULL;
    cfg_routing *r = &x->c->routing;
    const char *sep = NULL;
    json_error_t jerr;
    cfg_quoted q;
    int rc;

    r->enable_global_route = true;
    r->enable_group_name_route = true;
    r->bearer_auth_key = "";
    r->bearer_auth_header = CFG_DEFAULT_BEARER_HEADER;
    r->json_body_limit = CFG_DEFAULT_JSON_BODY_LIMIT;
    x->c->name_separator = CFG_DEFAULT_NAME_SEPARATOR;
    if (!present(v))
        return 0;
    push_key(x, "systemConfig");
    if (!json_is_object(v))
        return fail(x, "expected an object, got %s", got(&q, v));
    if (json_unpack_ex(v, &jerr, 0, "{s?o s?o}", "routing", &routing, "nameSeparator",
                       &separator) < 0)
        return fail(x, "%s", jerr.text);
    if ((rc = want_string(x, "nameSeparator", separator, 64, &sep)) < 0)
        return rc;
    /* MCPHub: `nameSeparator || '-'`. */
    if (sep && *sep)
        x->c->name_separator = arena_str(x, sep);

    if (present(routing)) {
        json_t *global = NULL, *by_name = NULL, *bearer = NULL, *key = NULL, *header = NULL,
               *limit = NULL;
        const char *header_s = NULL;

        push_key(x, "routing");
        if (!json_is_object(routing))
            return fail(x, "expected an object, got %s", got(&q, routing));
        if (json_unpack_ex(routing, &jerr, 0, "{s?o s?o s?o s?o s?o s?o}", "enableGlobalRoute",
                           &global, "enableGroupNameRoute", &by_name, "enableBearerAuth",
                           &bearer, "bearerAuthKey", &key, "bearerAuthHeaderName", &header,
                           "jsonBodyLimit", &limit) < 0)
            return fail(x, "%s", jerr.text);
        if ((rc = want_bool(x, "enableGlobalRoute", global, &r->enable_global_route)) < 0 ||
            (rc = want_bool(x, "enableGroupNameRoute", by_name, &r->enable_group_name_route)) <
                0 ||
            (rc = want_bool(x, "enableBearerAuth", bearer, &r->enable_bearer_auth)) < 0 ||
            (rc = want_expanded(x, "bearerAuthKey", key, &r->bearer_auth_key)) < 0 ||
            (rc = want_string(x, "bearerAuthHeaderName", header, CFG_NAME_MAX, &header_s)) < 0)
            return rc;
        if (header_s) {
            size_t a = 0, b = strlen(header_s);

            while (header_s[a] == ' ' || header_s[a] == '\t')
                a++;
            while (b > a && (header_s[b - 1] == ' ' || header_s[b - 1] == '\t'))
                b--;
            if (b > a) {
                char *h = cfg_arena_strndup(ARENA(x), header_s + a, b - a);

                if (!is_header_name(h)) {
                    push_key(x, "bearerAuthHeaderName");
                    return fail(x, "%s is not a valid HTTP header name", quote(&q, h));
                }
                r->bearer_auth_header = h;
            }
        }
        if (present(limit))
            r->json_body_limit = parse_body_limit(limit);
        pop(x);
    }
    pop(x);
    return 0;
}

/* ---------------------------------------------------------------- hub */

static int parse_hub(cfg_ctx *x, json_t *v)
{
    json_t *idle = NULL, *max_sessions = NULL, *max_instances = NULL, *per_server = NULL,
           *request = NULL, *init = NULL, *grace = NULL, *listen = NULL, *admin = NULL,
           *origins = NULL;
    const char *listen_s = NULL, *admin_s = NULL;
    cfg_hub *h = &x->c->hub;
    json_error_t jerr;
    cfg_quoted q;
    int64_t per = -1;
    int rc;

    h->session_idle_timeout_ms = CFG_DEFAULT_SESSION_IDLE_TIMEOUT_MS;
    h->max_sessions = CFG_DEFAULT_MAX_SESSIONS;
    h->max_instances = CFG_DEFAULT_MAX_INSTANCES;
    h->request_timeout_ms = CFG_DEFAULT_REQUEST_TIMEOUT_MS;
    h->init_timeout_ms = CFG_DEFAULT_INIT_TIMEOUT_MS;
    h->kill_grace_ms = CFG_DEFAULT_KILL_GRACE_MS;
    h->listen = CFG_DEFAULT_LISTEN;
    h->admin_listen = CFG_DEFAULT_ADMIN_LISTEN;
    h->allowed_origins = arena_array(x, 0, sizeof *h->allowed_origins);
    h->warm = arena_array(x, 0, sizeof *h->warm);
    if (present(v)) {
        push_key(x, "hub");
        if (!json_is_object(v))
            return fail(x, "expected an object, got %s", got(&q, v));
        if (json_unpack_ex(v, &jerr, 0, "{s?o s?o s?o s?o s?o s?o s?o s?o s?o s?o}",
                           "sessionIdleTimeout", &idle, "maxSessions", &max_sessions,
                           "maxInstances", &max_instances, "maxInstancesPerServer", &per_server,
                           "requestTimeout", &request, "initTimeout", &init, "killGracePeriod",
                           &grace, "listen", &listen, "adminListen", &admin, "allowedOrigins",
                           &origins) < 0)
            return fail(x, "%s", jerr.text);
        if ((rc = want_duration(x, "sessionIdleTimeout", idle, 1000,
                                &h->session_idle_timeout_ms)) < 0 ||
            (rc = want_count(x, "maxSessions", max_sessions, 1, 10000000, &h->max_sessions)) <
                0 ||
            (rc = want_count(x, "maxInstances", max_instances, 1, 100000, &h->max_instances)) <
                0 ||
            (rc = want_count(x, "maxInstancesPerServer", per_server, 1, h->max_instances,
                             &per)) < 0 ||
            (rc = want_duration(x, "requestTimeout", request, 1, &h->request_timeout_ms)) < 0 ||
            (rc = want_duration(x, "initTimeout", init, 1, &h->init_timeout_ms)) < 0 ||
            (rc = want_duration(x, "killGracePeriod", grace, 0, &h->kill_grace_ms)) < 0 ||
            (rc = want_string(x, "listen", listen, CFG_NAME_MAX, &listen_s)) < 0 ||
            (rc = want_string(x, "adminListen", admin, CFG_NAME_MAX, &admin_s)) < 0 ||
            (rc = want_strings(x, "allowedOrigins", origins, CFG_NAME_MAX, false,
                               &h->allowed_origins, &h->n_allowed_origins)) < 0)
            return rc;
        if (listen_s && *listen_s) {
            h->listen = arena_str(x, listen_s);
            h->listen_set = true;
        }
        if (admin_s && *admin_s) {
            h->admin_listen = arena_str(x, admin_s);
            h->admin_listen_set = true;
        }
        pop(x);
    }
    h->max_instances_per_server = per > 0 ? per : h->max_instances;
    return 0;
}

/* hub.warmPerSession, once the servers are known. */
static int parse_warm(cfg_ctx *x, json_t *hub)
{
    json_t *v = json_is_object(hub) ? json_object_get(hub, "warmPerSession") : NULL, *val;
    cfg_hub *h = &x->c->hub;
    const char *name;
    cfg_warm *warm;
    cfg_quoted q;
    size_t n = 0;
    int rc;

    if (!present(v))
        return 0;
    push_key(x, "hub");
    push_key(x, "warmPerSession");
    if (!json_is_object(v))
        return fail(x, "expected an object of server names to counts, got %s", got(&q, v));
    if ((rc = check_count(x, json_object_size(v))) < 0)
        return rc;
    warm = arena_array(x, json_object_size(v), sizeof *warm);
    json_object_foreach(v, name, val) {
        int64_t count = 0;
        long idx = server_index(x->c, name);

        if (idx < 0) {
            push_key(x, name);
            return fail(x, "unknown server %s", quote(&q, name));
        }
        if ((rc = want_count(x, name, val, 0, h->max_instances_per_server, &count)) < 0)
            return rc;
        /* Warming only means something for perSession servers; others are skipped. */
        if (count == 0 || !x->c->servers[idx].per_session)
            continue;
        warm[n].server = x->c->servers[idx].name;
        warm[n].server_index = (size_t)idx;
        warm[n].count = count;
        n++;
    }
    h->warm = warm;
    h->n_warm = n;
    pop(x);
    pop(x);
    return 0;
}

/* ---------------------------------------------------------------- entry points */

static int parse_top(cfg_ctx *x)
{
    json_t *servers = NULL, *groups = NULL, *keys = NULL, *system = NULL, *hub = NULL;
    json_error_t jerr;
    cfg_quoted q;
    int rc;

    if (!json_is_object(x->c->root))
        return fail(x, "the top level must be a JSON object, got %s", got(&q, x->c->root));
    if (json_unpack_ex(x->c->root, &jerr, 0, "{s?o s?o s?o s?o s?o}", "mcpServers", &servers,
                       "groups", &groups, "bearerKeys", &keys, "systemConfig", &system, "hub",
                       &hub) < 0)
        return fail(x, "%s", jerr.text);
    if ((rc = parse_hub(x, hub)) < 0 || (rc = parse_system(x, system)) < 0 ||
        (rc = parse_servers(x, servers)) < 0 || (rc = parse_groups(x, groups)) < 0 ||
        (rc = parse_keys(x, keys)) < 0 || (rc = parse_warm(x, hub)) < 0)
        return rc;
    if (!x->c->servers)
        x->c->servers = arena_array(x, 0, sizeof *x->c->servers);
    if (!x->c->groups)
        x->c->groups = arena_array(x, 0, sizeof *x->c->groups);
    if (!x->c->keys)
        x->c->keys = arena_array(x, 0, sizeof *x->c->keys);
    return 0;
}

static bool all_space(const char *t, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (t[i] != ' ' && t[i] != '\t' && t[i] != '\n' && t[i] != '\r')
            return false;
    return true;
}

static void set_error(cfg_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(cfg_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

int cfg_parse(const char *text, size_t len, const char *origin, cfg **out, cfg_error *err)
{
    cfg_error local;
    cfg_ctx x = {0};
    json_error_t jerr;
    const char *nul;
    json_t *root;
    cfg *c = NULL;
    int rc;

    if (!err)
        err = &local;
    memset(err, 0, sizeof *err);
    if (!origin)
        origin = "<settings>";
    snprintf(err->file, sizeof err->file, "%s", origin);
    if (out)
        *out = NULL;
    if (!out || (!text && len)) {
        set_error(err, -EINVAL, "invalid arguments");
        return -EINVAL;
    }
    if (len > CFG_MAX_FILE_BYTES) {
        set_error(err, -EFBIG, "the file is larger than %u bytes (16 MiB)", CFG_MAX_FILE_BYTES);
        return -EFBIG;
    }
    /* A UTF-8 byte order mark is skipped (editors on Windows write one). */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        text += 3;
        len -= 3;
    }
    if (all_space(text, len)) {
        cfg_pos_line_col(text, len, len, &err->line, &err->column);
        set_error(err, -EINVAL, "the file is empty; expected a JSON object");
        return -EINVAL;
    }
    /* jansson would stop at a NUL byte and blame the end of the file. */
    if ((nul = memchr(text, '\0', len))) {
        cfg_pos_line_col(text, len, (size_t)(nul - text), &err->line, &err->column);
        set_error(err, -EINVAL, "invalid JSON: the file contains a NUL byte");
        return -EINVAL;
    }
    root = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
    if (!root) {
        /* jansson's column is that of the last character it read, 0 after a newline. */
        err->line = jerr.line;
        err->column = jerr.column;
        if (err->line <= 0 || err->column <= 0)
            cfg_pos_line_col(text, len, jerr.position > 0 ? (size_t)jerr.position : 0,
                             &err->line, &err->column);
        set_error(err, -EINVAL, "invalid JSON: %s", jerr.text);
        return -EINVAL;
    }

    c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->root = root; /* steals the new reference from json_loadb */
    c->by_name = json_object();
    if (!c->by_name)
        abort();
    c->origin = cfg_arena_strndup(&c->arena, origin, strlen(origin));
    x.text = text;
    x.len = len;
    x.c = c;
    x.err = err;
    if ((rc = parse_top(&x)) < 0)
        goto out;
    *out = c;
    c = NULL;
out:
    cfg_free(c);
    return rc;
}

int cfg_load_file(const char *path, cfg **out, cfg_error *err)
{
    cfg_error local;
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    int fd = -1, rc;

    if (!err)
        err = &local;
    memset(err, 0, sizeof *err);
    if (out)
        *out = NULL;
    snprintf(err->file, sizeof err->file, "%s", path ? path : "<settings>");
    if (!path || !out) {
        set_error(err, -EINVAL, "invalid arguments");
        return -EINVAL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        set_error(err, rc, "cannot open the settings file: %s", strerror(-rc));
        goto out;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        set_error(err, rc, "cannot read the settings file: %s", strerror(-rc));
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        set_error(err, rc, "is a directory, not a settings file");
        goto out;
    }
    if (S_ISREG(st.st_mode) && st.st_size > (off_t)CFG_MAX_FILE_BYTES) {
        rc = -EFBIG;
        set_error(err, rc, "the file is larger than %u bytes (16 MiB)", CFG_MAX_FILE_BYTES);
        goto out;
    }
    /* Read up to one byte past the limit: the file may grow, or not be a regular file. */
    text = malloc(CFG_MAX_FILE_BYTES + 1);
    if (!text)
        abort();
    while (len <= CFG_MAX_FILE_BYTES) {
        ssize_t r = read(fd, text + len, CFG_MAX_FILE_BYTES + 1 - len);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            set_error(err, rc, "cannot read the settings file: %s", strerror(-rc));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    rc = cfg_parse(text, len, path, out, err);
out:
    if (fd >= 0)
        close(fd);
    free(text);
    return rc;
}

int cfg_load_default(cfg **out, cfg_error *err)
{
    const char *text = cfg_default_json();

    return cfg_parse(text, strlen(text), "<default>", out, err);
}

void cfg_free(cfg *c)
{
    if (!c)
        return;
    json_decref(c->root);
    json_decref(c->by_name);
    cfg_arena_free(c->arena);
    free(c);
}

const cfg_server *cfg_find_server(const cfg *c, const char *name)
{
    long i;

    if (!c || !name)
        return NULL;
    i = server_index(c, name);
    return i < 0 ? NULL : &c->servers[i];
}

const cfg_group *cfg_find_group(const cfg *c, const char *key)
{
    if (!c || !key)
        return NULL;
    for (size_t i = 0; i < c->n_groups; i++)
        if (c->groups[i].id && strcmp(c->groups[i].id, key) == 0)
            return &c->groups[i];
    for (size_t i = 0; i < c->n_groups; i++)
        if (strcmp(c->groups[i].name, key) == 0)
            return &c->groups[i];
    return NULL;
}

const char *cfg_transport_name(cfg_transport t)
{
    switch (t) {
    case CFG_TRANSPORT_STDIO:
        return "stdio";
    case CFG_TRANSPORT_SSE:
        return "sse";
    case CFG_TRANSPORT_STREAMABLE_HTTP:
        return "streamable-http";
    case CFG_TRANSPORT_OPENAPI:
        return "openapi";
    case CFG_TRANSPORT_OTHER:
        break;
    }
    return "other";
}

const char *cfg_access_name(cfg_access a)
{
    switch (a) {
    case CFG_ACCESS_ALL:
        return "all";
    case CFG_ACCESS_GROUPS:
        return "groups";
    case CFG_ACCESS_SERVERS:
        return "servers";
    case CFG_ACCESS_CUSTOM:
        break;
    }
    return "custom";
}

int cfg_error_format(const cfg_error *err, char *buf, size_t size)
{
    int n;

    if (!err || (!buf && size))
        return -EINVAL;
    if (err->line > 0 && err->field[0])
        n = snprintf(buf, size, "%s:%d:%d: %s: %s", err->file, err->line, err->column,
                     err->field, err->message);
    else if (err->line > 0)
        n = snprintf(buf, size, "%s:%d:%d: %s", err->file, err->line, err->column,
                     err->message);
    else if (err->field[0])
        n = snprintf(buf, size, "%s: %s: %s", err->file, err->field, err->message);
    else
        n = snprintf(buf, size, "%s: %s", err->file, err->message);
    return n;
}
