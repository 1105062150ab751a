/* cfg: loads MCPHub's mcp_settings.json (plus mcphub's own `hub` section) into typed,
 * read-only structs. Unknown keys are kept in `root` and ignored; every error names the
 * file, line, column and field ("settings.json:12:17: mcpServers.fetch.args: ..."). */
#ifndef MCPHUB_CFG_H
#define MCPHUB_CFG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits on what a settings file may hold. Every count and length a file controls is
 * checked against one of these before anything is allocated for it. */
#define CFG_MAX_FILE_BYTES (16u * 1024u * 1024u) /* whole file */
#define CFG_NAME_MAX 256u       /* bytes: server, group, key, env and header names, ids */
#define CFG_STRING_MAX 131072u  /* bytes: any other string, also after ${VAR} expansion */
#define CFG_ITEMS_MAX 65536u    /* entries in any one array or object */

/* Defaults (documented in docs/configuration.md). */
#define CFG_DEFAULT_NAME_SEPARATOR "-"
#define CFG_DEFAULT_BEARER_HEADER "Authorization"
#define CFG_DEFAULT_JSON_BODY_LIMIT (1024 * 1024)      /* MCPHub's "1mb" */
#define CFG_DEFAULT_REQUEST_TIMEOUT_MS 60000            /* MCPHub's DEFAULT_REQUEST_TIMEOUT */
#define CFG_DEFAULT_INIT_TIMEOUT_MS 300000              /* MCPHub's INIT_TIMEOUT */
#define CFG_DEFAULT_KEEPALIVE_INTERVAL_MS 60000
#define CFG_DEFAULT_IDLE_TIMEOUT_MS 300000              /* startOnDemand idle shutdown */
#define CFG_DEFAULT_SESSION_IDLE_TIMEOUT_MS 1800000     /* 30 minutes */
#define CFG_DEFAULT_MAX_SESSIONS 10000
#define CFG_DEFAULT_MAX_INSTANCES 256
#define CFG_DEFAULT_KILL_GRACE_MS 2000                  /* SIGTERM, then SIGKILL after this */
#define CFG_DEFAULT_LISTEN "127.0.0.1:50051"
#define CFG_DEFAULT_ADMIN_LISTEN "127.0.0.1:50052"
#define CFG_DURATION_MAX_MS 2147483647                  /* larger durations are clamped */

/* How mcphub reaches a server, resolved the way MCPHub's createTransportFromConfig does
 * (see docs/configuration.md, "How the type is resolved"). */
typedef enum cfg_transport {
    CFG_TRANSPORT_STDIO = 0,
    CFG_TRANSPORT_SSE,
    CFG_TRANSPORT_STREAMABLE_HTTP,
    CFG_TRANSPORT_OPENAPI, /* loads, never supported: MCPHub turns OpenAPI specs into tools */
    CFG_TRANSPORT_OTHER,   /* a `type` nobody knows: loads, never supported */
} cfg_transport;

typedef enum cfg_access {
    CFG_ACCESS_ALL = 0,
    CFG_ACCESS_GROUPS,
    CFG_ACCESS_SERVERS,
    CFG_ACCESS_CUSTOM, /* allowedGroups and allowedServers together */
} cfg_access;

/* One key/value pair (env, headers). */
typedef struct cfg_kv {
    const char *key;
    const char *value; /* after ${VAR} expansion */
} cfg_kv;

/* An entry of a server's `tools`, `prompts` or `resources` override map. MCPHub stores the
 * key either bare ("fetch") or prefixed ("server-fetch"); match both. */
typedef struct cfg_override {
    const char *name;
    bool enabled;            /* default true */
    const char *description; /* NULL: keep the upstream description */
} cfg_override;

/* A group member's tools/prompts/resources selection: "all" or a list of names. */
typedef struct cfg_selection {
    bool all;
    const char *const *names;
    size_t n_names;
} cfg_selection;

typedef struct cfg_server {
    const char *name;
    bool name_conforms;   /* matches [A-Za-z0-9._-]{1,128} without "..": else warn (MCPHub does) */
    const char *type;     /* `type` as written, NULL when absent */
    cfg_transport transport;
    bool supported;                 /* mcphub can run it */
    const char *unsupported_reason; /* NULL when supported; one sentence for logs and admin */
    const char *command;            /* NULL when absent; expanded (may then be empty) */
    const char *const *args;        /* expanded */
    size_t n_args;
    const cfg_kv *env; /* the server's own variables, expanded; the child gets these on top of
                          a minimal environment (HOME, LOGNAME, PATH, SHELL, TERM, USER) */
    size_t n_env;
    const char *cwd;   /* NULL: the control daemon's working directory */
    const char *url;   /* NULL when absent; expanded (may then be empty) */
    const cfg_kv *headers; /* expanded */
    size_t n_headers;
    bool enabled;          /* default true */
    bool per_session;      /* `perSession`, else MCPHub's `perSessionClient`; default false */
    const cfg_override *tools;
    size_t n_tools;
    const cfg_override *prompts;
    size_t n_prompts;
    const cfg_override *resources; /* keyed by URI */
    size_t n_resources;
    int64_t timeout_ms;            /* options.timeout, 0 or absent: hub.requestTimeout */
    bool reset_timeout_on_progress; /* options.resetTimeoutOnProgress, default true */
    int64_t max_total_timeout_ms;   /* options.maxTotalTimeout, 0: no limit */
    bool keep_alive;                /* enableKeepAlive, default false (remote servers only) */
    int64_t keep_alive_interval_ms; /* keepAliveInterval, 0 or absent: 60000 */
    bool start_on_demand;           /* stdio only: spawn on first call */
    int64_t idle_timeout_ms;        /* idleTimeoutMs for startOnDemand, default 300000 */
    const json_t *json;             /* borrowed: this server's object inside cfg.root */
} cfg_server;

typedef struct cfg_group_member {
    const char *server;   /* a name in mcpServers */
    size_t server_index;  /* index into cfg.servers */
    const char *alias;    /* NULL: exposed under the server's own name */
    cfg_selection tools;
    cfg_selection prompts;
    cfg_selection resources;
} cfg_group_member;

typedef struct cfg_group {
    const char *id; /* NULL when absent; routes match the id or (if enabled) the name */
    const char *name;
    const cfg_group_member *members;
    size_t n_members;
} cfg_group;

typedef struct cfg_bearer_key {
    const char *id;    /* NULL when absent */
    const char *name;  /* `name`, else `id`, else "bearerKeys[N]" */
    const char *token; /* after ${VAR} expansion (an mcphub extension) */
    bool enabled;      /* as written, default true */
    bool user_key;     /* kind "user" (MCPHub's per-user keys) */
    const char *owner; /* NULL when absent */
    cfg_access access; /* default all */
    const char *const *allowed_groups; /* group names or ids */
    size_t n_allowed_groups;
    const char *const *allowed_servers;
    size_t n_allowed_servers;
    bool migrated;  /* made from systemConfig.routing.bearerAuthKey (MCPHub's migration) */
    bool usable;    /* enabled, token not empty, not a user key: may authenticate */
    const char *unusable_reason; /* NULL when usable */
} cfg_bearer_key;

typedef struct cfg_routing {
    bool enable_global_route;      /* default true */
    bool enable_group_name_route;  /* default true */
    bool enable_bearer_auth;       /* default false */
    const char *bearer_auth_key;   /* legacy single key, "" when absent */
    const char *bearer_auth_header; /* bearerAuthHeaderName, default "Authorization" */
    int64_t json_body_limit;        /* jsonBodyLimit in bytes, default 1 MiB */
} cfg_routing;

typedef struct cfg_warm {
    const char *server;
    size_t server_index;
    int64_t count; /* per-session instances kept started ahead of demand */
} cfg_warm;

/* mcphub's own settings (top-level `hub`; MCPHub ignores the key). */
typedef struct cfg_hub {
    int64_t session_idle_timeout_ms; /* sessionIdleTimeout, default 30 min */
    int64_t max_sessions;            /* maxSessions, default 10000 */
    int64_t max_instances;           /* maxInstances, default 256 */
    int64_t max_instances_per_server; /* maxInstancesPerServer, default maxInstances */
    int64_t request_timeout_ms;      /* requestTimeout, default 60000 */
    int64_t init_timeout_ms;         /* initTimeout, default 300000 */
    int64_t kill_grace_ms;           /* killGracePeriod, default 2000 */
    const char *listen;              /* default CFG_DEFAULT_LISTEN */
    bool listen_set;                 /* true when the file sets it (flags still win) */
    const char *admin_listen;        /* default CFG_DEFAULT_ADMIN_LISTEN */
    bool admin_listen_set;
    const char *const *allowed_origins; /* extra Origin values the edge accepts */
    size_t n_allowed_origins;
    const cfg_warm *warm; /* warmPerSession, only perSession servers */
    size_t n_warm;
} cfg_hub;

struct cfg_arena;

/* A loaded configuration: immutable once returned; a reload builds a new one. All strings
 * and arrays live as long as the cfg (one arena, freed by cfg_free). An array member may
 * be NULL when its count is 0, except cfg_server.args, which is never NULL. */
typedef struct cfg {
    json_t *root;       /* owned (one reference, released by cfg_free): the file as parsed,
                           unknown keys included, for writing back */
    const char *origin; /* file name used in messages */
    const cfg_server *servers; /* in file order */
    size_t n_servers;
    const cfg_group *groups;
    size_t n_groups;
    const cfg_bearer_key *keys;
    size_t n_keys;
    cfg_routing routing;
    const char *name_separator; /* systemConfig.nameSeparator, default "-" */
    cfg_hub hub;
    /* private */
    json_t *by_name;    /* owned: server name -> index */
    struct cfg_arena *arena;
} cfg;

/* Where and why loading failed. Caller-provided storage; filled on every failure. */
typedef struct cfg_error {
    int code;          /* the negative errno the call returned */
    int line;          /* 1-based; 0 when the error has no position (e.g. missing file) */
    int column;        /* 1-based, in characters */
    char file[512];    /* the origin as given */
    char field[512];   /* e.g. "mcpServers.fetch.args[2]"; empty for the whole file */
    char message[512]; /* one sentence */
} cfg_error;

/* Reads and validates the settings file at path. On success returns 0 and *out owns a new
 * cfg (release with cfg_free). On failure returns a negative errno (-ENOENT, -EACCES,
 * -EISDIR, -EFBIG for a file over CFG_MAX_FILE_BYTES, -EINVAL for invalid content), sets
 * *out to NULL and fills *err (err may be NULL). ${VAR} references are expanded from the
 * process environment at this moment. Loop thread (it reads the environment). */
int cfg_load_file(const char *path, cfg **out, cfg_error *err);

/* Same as cfg_load_file for text already in memory (len bytes, NUL not needed; more than
 * CFG_MAX_FILE_BYTES gives -EFBIG); origin is the file name used in messages (copied; NULL
 * gives "<settings>"). Any thread, as long as no other thread changes the environment. */
int cfg_parse(const char *text, size_t len, const char *origin, cfg **out, cfg_error *err);

/* Loads cfg_default_json() with origin "<default>"; set MCPHUB_BIN_DIR first. */
int cfg_load_default(cfg **out, cfg_error *err);

/* Releases everything the cfg owns. cfg_free(NULL) does nothing. */
void cfg_free(cfg *c);

/* Returns the server called name (borrowed from c), or NULL. Any thread. */
const cfg_server *cfg_find_server(const cfg *c, const char *name);

/* Returns the group whose id or name is key, the id first (borrowed), or NULL. Whether a
 * name may be used in routes is routing.enable_group_name_route's business. */
const cfg_group *cfg_find_group(const cfg *c, const char *key);

/* The embedded default configuration (static text): one stdio server "fixture" running
 * ${MCPHUB_BIN_DIR}/mcphub-fixture, in a group "default", no bearer auth. */
const char *cfg_default_json(void);

/* "stdio", "sse", "streamable-http", "openapi", "other". */
const char *cfg_transport_name(cfg_transport t);

/* "all", "groups", "servers", "custom". */
const char *cfg_access_name(cfg_access a);

/* Writes "FILE:LINE:COL: FIELD: message" (parts without a value are left out) into buf
 * like snprintf: returns the length it needed, or -EINVAL when err is NULL. */
int cfg_error_format(const cfg_error *err, char *buf, size_t size);

#endif
