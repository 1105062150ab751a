/* mcp_rules: MCP HTTP transport rules (see mcp_rules.h). The order of the checks is part of
 * the contract, because a request can break several rules at once: path, method, Host,
 * Origin, credentials, route, then per operation the media types, size, session and
 * protocol version, then the body. It follows the official TypeScript SDK's server where
 * the specification leaves the choice open. */
#include "mcp_rules.h"

#include "ids.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Revisions this edge serves, newest first, and what each allows. */
static const struct {
    const char *name;
    unsigned flags;
} mcp_versions[] = {
    {"2025-11-25", MCP_V_PRIMING},
    {"2025-06-18", 0},
    {"2025-03-26", MCP_V_BATCH},
    {"2024-11-05", MCP_V_BATCH},
};

/* Endpoints: a path prefix, whether it takes a /{route} segment, and its methods. */
static const struct {
    const char *path;
    bool routed;
    mcp_endpoint ep;
    const char *allow;
} mcp_endpoints[] = {
    {"/mcp", true, MCP_EP_MCP, "GET, POST, DELETE"},
    {"/sse", true, MCP_EP_SSE, "GET"},
    {"/messages", false, MCP_EP_MESSAGES, "POST"},
};

const char *mcp_rules_version(const char *name, unsigned *flags)
{
    for (size_t i = 0; name && i < sizeof mcp_versions / sizeof mcp_versions[0]; i++) {
        if (strcmp(name, mcp_versions[i].name) == 0) {
            if (flags)
                *flags = mcp_versions[i].flags;
            return mcp_versions[i].name;
        }
    }
    return NULL;
}

__attribute__((format(printf, 4, 5))) static void verdict_fail(mcp_verdict *v, int status,
                                                                int code, const char *fmt, ...)
{
    va_list ap;

    v->status = status;
    v->code = code;
    va_start(ap, fmt);
    vsnprintf(v->message, sizeof v->message, fmt, ap);
    va_end(ap);
}

void mcp_verdict_cleanup(mcp_verdict *v)
{
    json_decref(v->id);
    json_decref(v->data);
    v->id = NULL;
    v->data = NULL;
}

/* ---- header grammar ------------------------------------------------------------------- */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Case-insensitive comparison of [s, s+len) with the NUL-terminated word. */
static bool span_ieq(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

/* A q parameter of value zero ("q=0", "q=0.0", "q=0.000"): the type is refused. */
static bool params_q_zero(const char *p, const char *end)
{
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi ? semi : end;

        while (p < stop && is_ows(*p))
            p++;
        if (stop - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
            const char *q = p + 2;

            if (q < stop && *q == '0') {
                q++;
                if (q < stop && *q == '.')
                    for (q++; q < stop && *q == '0'; q++)
                        ;
                while (q < stop && is_ows(*q))
                    q++;
                if (q == stop)
                    return true;
            }
        }
        p = semi ? semi + 1 : end;
    }
    return false;
}

bool mcp_rules_accepts(const char *accept, const char *type)
{
    const char *p = accept;

    if (!accept)
        return false;
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *end = p + len;
        const char *comma = *end ? end : NULL;
        const char *semi, *tend;

        while (p < end && is_ows(*p)) {
            p++;
            len--;
        }
        /* len, not end - p: gcc's -O2 cannot tell the difference is never negative. */
        semi = memchr(p, ';', len);
        tend = semi ? semi : end;
        while (tend > p && is_ows(tend[-1]))
            tend--;
        if (span_ieq(p, (size_t)(tend - p), type) && !(semi && params_q_zero(semi + 1, end)))
            return true;
        p = comma ? comma + 1 : end;
    }
    return false;
}

/* Content-Type application/json, with at most a utf-8 charset among its parameters. */
static bool content_type_json(const char *ct)
{
    const char *semi, *tend, *p;

    if (!ct)
        return false;
    while (is_ows(*ct))
        ct++;
    semi = strchr(ct, ';');
    tend = semi ? semi : ct + strlen(ct);
    while (tend > ct && is_ows(tend[-1]))
        tend--;
    if (!span_ieq(ct, (size_t)(tend - ct), "application/json"))
        return false;
    for (p = semi; p; p = strchr(p + 1, ';')) {
        const char *v = p + 1;
        const char *vend;

        while (is_ows(*v))
            v++;
        if (strncasecmp(v, "charset=", 8) != 0)
            continue;
        v += 8;
        vend = strchr(v, ';');
        if (!vend)
            vend = v + strlen(v);
        if (*v == '"')
            v++;
        while (vend > v && (is_ows(vend[-1]) || vend[-1] == '"'))
            vend--;
        if (!span_ieq(v, (size_t)(vend - v), "utf-8") && !span_ieq(v, (size_t)(vend - v), "utf8"))
            return false;
    }
    return true;
}

/* An optional ":digits" port (1-5 digits) ending the string. */
static bool port_suffix_ok(const char *s)
{
    size_t n;

    if (*s == '\0')
        return true;
    if (*s != ':')
        return false;
    n = strspn(s + 1, "0123456789");
    return n >= 1 && n <= 5 && s[1 + n] == '\0';
}

static const char *const loopback_names[] = {"localhost", "127.0.0.1", "[::1]"};

/* host[:port] naming loopback. */
static bool loopback_authority(const char *s)
{
    for (size_t i = 0; i < sizeof loopback_names / sizeof loopback_names[0]; i++) {
        size_t n = strlen(loopback_names[i]);

        if (strncasecmp(s, loopback_names[i], n) == 0 && port_suffix_ok(s + n))
            return true;
    }
    return false;
}

bool mcp_rules_loopback_host(const char *host)
{
    return host && loopback_authority(host);
}

bool mcp_rules_loopback_origin(const char *origin)
{
    if (!origin)
        return false;
    if (strncasecmp(origin, "http://", 7) == 0)
        return loopback_authority(origin + 7);
    if (strncasecmp(origin, "https://", 8) == 0)
        return loopback_authority(origin + 8);
    return false;
}

/* Whether s is 1..max visible ASCII bytes (NULL is not). Stops at the first byte past max,
 * so an over-long value is not measured whole. */
static bool visible_ascii_ok(const char *s, size_t max)
{
    size_t n = 0;

    if (!s)
        return false;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x21 || (unsigned char)s[n] > 0x7e || n >= max)
            return false;
    return n > 0;
}

bool mcp_rules_session_id_ok(const char *id)
{
    return visible_ascii_ok(id, MCP_SESSION_ID_MAX);
}

/* "[v6]:port" or "name:port". */
static bool authority_has_port(const char *a)
{
    const char *close = a[0] == '[' ? strchr(a, ']') : NULL;

    return strchr(close ? close : a, ':') != NULL;
}

static bool host_allowed(const mcp_rules_cfg *cfg, const char *host)
{
    if (!cfg->loopback || !host)
        return true; /* only a loopback edge is a DNS-rebinding target; no Host: no browser */
    if (mcp_rules_loopback_host(host))
        return true;
    for (size_t i = 0; i < cfg->n_allowed_hosts; i++) {
        const char *a = cfg->allowed_hosts[i];
        size_t n = strlen(a);

        if (!a[0])
            continue;
        if (strcasecmp(host, a) == 0)
            return true;
        /* "name" without a port allows every port of that name */
        if (!authority_has_port(a) && strncasecmp(host, a, n) == 0 && port_suffix_ok(host + n))
            return true;
    }
    return false;
}

static bool origin_allowed(const mcp_rules_cfg *cfg, const mcp_rules_in *in)
{
    const char *o = in->origin;
    size_t olen;

    if (!o)
        return true;
    olen = strlen(o);
    if (olen > 0 && o[olen - 1] == '/')
        olen--;
    for (size_t i = 0; i < cfg->n_allowed_origins; i++) {
        const char *a = cfg->allowed_origins[i];
        size_t alen = strlen(a);

        if (strcmp(a, "*") == 0)
            return true;
        if (alen > 0 && a[alen - 1] == '/')
            alen--;
        if (alen == olen && alen > 0 && strncasecmp(a, o, alen) == 0)
            return true;
    }
    /* A page served from loopback may talk to a loopback edge through a loopback name. */
    if (mcp_rules_loopback_origin(o) &&
        (in->host ? mcp_rules_loopback_host(in->host) : cfg->loopback))
        return true;
    return false;
}

/* Finds the bearer token in the auth header's value; false when there is none. */
static bool bearer_token(const mcp_rules_cfg *cfg, const char *value, const char **tok,
                         size_t *len)
{
    const char *t = value;
    size_t n;

    if (!value)
        return false;
    while (is_ows(*t))
        t++;
    if (strncasecmp(t, "Bearer", 6) == 0 && is_ows(t[6])) {
        t += 6;
        while (is_ows(*t))
            t++;
    } else if (!cfg->auth_custom_header) {
        return false;
    }
    for (n = 0; t[n] && !is_ows(t[n]); n++)
        if ((unsigned char)t[n] < 0x21 || (unsigned char)t[n] > 0x7e)
            return false;
    if (n == 0 || n > MCP_TOKEN_MAX || t[n + strspn(t + n, " \t")] != '\0')
        return false;
    *tok = t;
    *len = n;
    return true;
}

/* Splits path into endpoint and route. Returns the endpoint's row or -1. */
static int split_path(const char *path, char *route, size_t size)
{
    route[0] = '\0';
    if (!path)
        return -1;
    for (size_t i = 0; i < sizeof mcp_endpoints / sizeof mcp_endpoints[0]; i++) {
        size_t n = strlen(mcp_endpoints[i].path);
        const char *rest = path + n;

        if (strncmp(path, mcp_endpoints[i].path, n) != 0)
            continue;
        if (*rest == '\0')
            return (int)i;
        if (*rest != '/' || !mcp_endpoints[i].routed)
            continue;
        rest++;
        if (strchr(rest, '/') || strlen(rest) >= size)
            return -1;
        snprintf(route, size, "%s", rest); /* "/mcp/" is the global route too */
        return (int)i;
    }
    return -1;
}

static bool route_known(const mcp_rules_cfg *cfg, const char *route)
{
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (cfg->routes[i] && strcmp(cfg->routes[i], route) == 0)
            return true;
    return false;
}

/* The MCP-Protocol-Version rule; 0 or sets the 400. */
static int check_version(const mcp_rules_in *in, mcp_verdict *v)
{
    const char *want = in->protocol_version ? in->protocol_version : MCP_VERSION_DEFAULT;
    const char *name = mcp_rules_version(want, &v->vflags);

    if (!name) {
        verdict_fail(v, 400, JR_SERVER_ERROR,
                     "Bad Request: Unsupported protocol version (supported versions: "
                     "2025-11-25, 2025-06-18, 2025-03-26, 2024-11-05)");
        return -1;
    }
    v->version = name;
    return 0;
}

/* Mcp-Session-Id required and well formed; 0 or sets the 400. */
static int check_session(const char *sid, const char *what, mcp_verdict *v)
{
    if (!sid || !sid[0]) {
        verdict_fail(v, 400, JR_SERVER_ERROR, "Bad Request: %s is required", what);
        return -1;
    }
    if (!mcp_rules_session_id_ok(sid)) {
        verdict_fail(v, 400, JR_SERVER_ERROR, "Bad Request: %s is malformed", what);
        return -1;
    }
    v->session = sid;
    return 0;
}

/* ---- the rules ------------------------------------------------------------------------ */

void mcp_rules_head(const mcp_rules_cfg *cfg, const mcp_rules_in *in, mcp_verdict *v)
{
    int row;
    const char *m = in->method ? in->method : "";

    memset(v, 0, sizeof *v);
    v->version = MCP_VERSION_DEFAULT;
    v->vflags = MCP_V_BATCH;
    if ((row = split_path(in->path, v->route, sizeof v->route)) < 0) {
        verdict_fail(v, 404, JR_SERVER_ERROR, "Not Found");
        return;
    }
    v->ep = mcp_endpoints[row].ep;
    v->allow = mcp_endpoints[row].allow;
    if (!((v->ep == MCP_EP_MCP &&
           (!strcmp(m, "GET") || !strcmp(m, "POST") || !strcmp(m, "DELETE"))) ||
          (v->ep == MCP_EP_SSE && !strcmp(m, "GET")) ||
          (v->ep == MCP_EP_MESSAGES && !strcmp(m, "POST")))) {
        verdict_fail(v, 405, JR_SERVER_ERROR, "Method not allowed.");
        return;
    }
    if (!host_allowed(cfg, in->host)) {
        verdict_fail(v, 403, JR_SERVER_ERROR, "Forbidden: invalid Host header");
        return;
    }
    if (!origin_allowed(cfg, in)) {
        verdict_fail(v, 403, JR_SERVER_ERROR, "Forbidden: invalid Origin header");
        return;
    }
    if (cfg->bearer_auth && !bearer_token(cfg, in->auth, &v->token, &v->token_len)) {
        verdict_fail(v, 401, JR_SERVER_ERROR, "Unauthorized: bearer token required");
        v->auth_challenge = true;
        return;
    }
    if (v->ep != MCP_EP_MESSAGES && !route_known(cfg, v->route)) {
        verdict_fail(v, 404, JR_SERVER_ERROR, "Not Found: unknown route");
        return;
    }

    if (!strcmp(m, "POST")) {
        if (v->ep == MCP_EP_MCP && (!mcp_rules_accepts(in->accept, "application/json") ||
                                    !mcp_rules_accepts(in->accept, "text/event-stream"))) {
            verdict_fail(v, 406, JR_SERVER_ERROR,
                         "Not Acceptable: Client must accept both application/json and "
                         "text/event-stream");
            return;
        }
        if (v->ep == MCP_EP_MESSAGES && check_session(in->session_query, "sessionId", v) < 0)
            return;
        if (!content_type_json(in->content_type)) {
            verdict_fail(v, 415, JR_SERVER_ERROR,
                         "Unsupported Media Type: Content-Type must be application/json");
            return;
        }
        if (in->has_length && cfg->body_limit && in->content_length > cfg->body_limit) {
            verdict_fail(v, 413, JR_SERVER_ERROR, "Payload Too Large: body over %llu bytes",
                         (unsigned long long)cfg->body_limit);
            return;
        }
        if (v->ep == MCP_EP_MCP && in->session_id && !mcp_rules_session_id_ok(in->session_id)) {
            verdict_fail(v, 400, JR_SERVER_ERROR, "Bad Request: Mcp-Session-Id is malformed");
            return;
        }
        return; /* the body decides the rest */
    }

    if (v->ep == MCP_EP_SSE) {
        v->op = MCP_OP_SSE_OPEN;
        v->version = "2024-11-05";
        v->vflags = MCP_V_BATCH;
        return;
    }
    if (!strcmp(m, "GET")) {
        if (!mcp_rules_accepts(in->accept, "text/event-stream")) {
            verdict_fail(v, 406, JR_SERVER_ERROR,
                         "Not Acceptable: Client must accept text/event-stream");
            return;
        }
        if (check_session(in->session_id, "Mcp-Session-Id header", v) < 0 ||
            check_version(in, v) < 0)
            return;
        if (in->last_event_id &&
            (!mcp_rules_session_id_ok(in->last_event_id) ||
             strlen(in->last_event_id) > MCP_EVENT_ID_MAX)) {
            verdict_fail(v, 400, JR_SERVER_ERROR, "Bad Request: Last-Event-ID is malformed");
            return;
        }
        v->op = MCP_OP_GET;
        return;
    }
    /* DELETE */
    if (check_session(in->session_id, "Mcp-Session-Id header", v) < 0 ||
        check_version(in, v) < 0)
        return;
    v->op = MCP_OP_DELETE;
}

/* ---- the stateless revision (2026-07-28) ------------------------------------------------ */

/* The _meta envelope of a message, when it claims a protocol version (borrowed). */
static json_t *modern_meta(const jr_msg *m)
{
    json_t *meta = json_object_get(json_object_get(m->msg, "params"), "_meta");

    return json_is_object(meta) && json_object_get(meta, MCP26_META_VERSION) ? meta : NULL;
}

/* A header value without the optional whitespace around it, as (p, n). */
static void trim_ows(const char *h, const char **p, size_t *n)
{
    size_t len = strlen(h);

    while (len > 0 && is_ows(*h)) {
        h++;
        len--;
    }
    while (len > 0 && is_ows(h[len - 1]))
        len--;
    *p = h;
    *n = len;
}

/* Whether an Mcp-Name header value names want: whitespace around it ignored, and the
 * =?base64?...?= form (for values a header cannot carry as they are) decoded first. */
static bool name_matches(const char *header, const char *want)
{
    char buf[MCP_NAME_MAX];
    const char *p;
    size_t n;

    if (!header || !want)
        return false;
    trim_ows(header, &p, &n);
    if (n >= 13 && strncmp(p, "=?base64?", 9) == 0 && strncmp(p + n - 2, "?=", 2) == 0) {
        if (id_b64_decode(p + 9, n - 11, ID_B64_PADDING, (unsigned char *)buf, sizeof buf, &n) < 0)
            return false;
        p = buf;
    }
    return strlen(want) == n && memcmp(p, want, n) == 0;
}

/* The verdict for a message of the stateless revision: no session, no per-revision flags. */
static void verdict_stateless(mcp_verdict *v, mcp_op op)
{
    v->stateless = true;
    v->version = MCP26_VERSION;
    v->vflags = 0;
    v->session = NULL;
    v->op = op;
}

/* The 2026 checks of one message that claims the revision; 0, or the error is set. */
static int stateless_rules(const mcp_rules_in *in, const jr_msg *m, json_t *meta,
                           mcp_verdict *v)
{
    json_t *params = json_object_get(m->msg, "params");
    const char *version = json_string_value(json_object_get(meta, MCP26_META_VERSION));
    json_t *level = json_object_get(meta, MCP26_META_LOG_LEVEL);
    json_t *info = json_object_get(meta, MCP26_META_INFO);
    json_t *scope = json_object_get(meta, MCP26_META_SCOPE);
    const char *name_key;
    const char *mm;
    size_t mm_len;

    if (!version || !json_is_object(json_object_get(meta, MCP26_META_CAPS)) ||
        (info && !json_is_object(info))) {
        verdict_fail(v, 400, JR_INVALID_PARAMS,
                     "Invalid params: _meta must carry " MCP26_META_VERSION " (a string) and "
                     MCP26_META_CAPS " (an object)");
        return -1;
    }
    if (level && mcp26_log_level(json_string_value(level)) < 0) {
        verdict_fail(v, 400, JR_INVALID_PARAMS, "Invalid params: unknown " MCP26_META_LOG_LEVEL);
        return -1;
    }
    if (scope && (!json_is_string(scope) ||
                  !visible_ascii_ok(json_string_value(scope), MCP_SCOPE_MAX))) {
        verdict_fail(v, 400, JR_INVALID_PARAMS,
                     "Invalid params: " MCP26_META_SCOPE " must be 1 to %d visible ASCII bytes",
                     MCP_SCOPE_MAX);
        return -1;
    }
    if (!in->protocol_version || strcmp(in->protocol_version, version) != 0) {
        verdict_fail(v, 400, MCP26_E_HEADER_MISMATCH,
                     "Header mismatch: MCP-Protocol-Version must equal _meta's " MCP26_META_VERSION);
        return -1;
    }
    if (m->kind == JR_REQUEST) {
        if (!in->mcp_method) {
            verdict_fail(v, 400, MCP26_E_HEADER_MISMATCH, "Header mismatch: Mcp-Method is required");
            return -1;
        }
        trim_ows(in->mcp_method, &mm, &mm_len);
        if (strlen(m->method) != mm_len || memcmp(mm, m->method, mm_len) != 0) {
            verdict_fail(v, 400, MCP26_E_HEADER_MISMATCH,
                         "Header mismatch: Mcp-Method must equal the body's method");
            return -1;
        }
    }
    if (strcmp(version, MCP26_VERSION) != 0) {
        verdict_fail(v, 400, MCP26_E_UNSUPPORTED_VERSION, "Unsupported protocol version");
        v->data = json_pack("{s:[s], s:s}", "supported", MCP26_VERSION, "requested",
                            version);
        return -1;
    }
    if (m->kind == JR_REQUEST) {
        name_key = !strcmp(m->method, "tools/call") || !strcmp(m->method, "prompts/get") ? "name"
                   : !strcmp(m->method, "resources/read")                             ? "uri"
                                                                                       : NULL;
        if (name_key && !name_matches(in->mcp_name,
                                      json_string_value(json_object_get(params, name_key)))) {
            verdict_fail(v, 400, MCP26_E_HEADER_MISMATCH,
                         "Header mismatch: Mcp-Name must equal params.%s", name_key);
            return -1;
        }
        if (!mcp26_method_known(m->method)) {
            verdict_fail(v, 404, JR_METHOD_NOT_FOUND, "Method not found");
            return -1;
        }
    }
    /* The scope: the header and _meta may both name it, but not differently. */
    if (in->scope && (!visible_ascii_ok(in->scope, MCP_SCOPE_MAX) ||
                      (scope && strcmp(in->scope, json_string_value(scope)) != 0))) {
        verdict_fail(v, 400, MCP26_E_HEADER_MISMATCH,
                     "Header mismatch: Mcphub-Scope must be 1 to %d visible ASCII bytes and "
                     "equal _meta's " MCP26_META_SCOPE, MCP_SCOPE_MAX);
        return -1;
    }
    snprintf(v->scope, sizeof v->scope, "%s",
             in->scope ? in->scope : scope ? json_string_value(scope) : "");
    verdict_stateless(v, m->kind == JR_REQUEST ? MCP_OP_REQUESTS : MCP_OP_IGNORE);
    return 0;
}

void mcp_rules_body(const mcp_rules_cfg *cfg, const mcp_rules_in *in, const char *body,
                    size_t len, mcp_verdict *v, jr_body **out)
{
    json_t *meta;
    bool modern_header;
    jr_limits lim = {0};
    jr_error err;
    jr_body *b = NULL;
    bool init;

    *out = NULL;
    if (v->status || v->ep == MCP_EP_NONE)
        return;
    if (cfg->body_limit && len > cfg->body_limit) {
        verdict_fail(v, 413, JR_SERVER_ERROR, "Payload Too Large: body over %llu bytes",
                     (unsigned long long)cfg->body_limit);
        return;
    }
    lim.allow_batch = v->ep == MCP_EP_MCP; /* the batch rule below says why it is refused */
    if (jr_parse(body, len, &lim, &b, &err) < 0) {
        verdict_fail(v, 400, err.code, "%s", err.message);
        v->id = err.id; /* steals the reference */
        return;
    }

    if (v->ep == MCP_EP_MESSAGES) {
        v->op = MCP_OP_SSE_POST;
        v->version = "2024-11-05";
        goto ok;
    }
    /* The era, body first: the 2026 envelope, else the 2026 header without it. */
    modern_header = in->protocol_version && !strcmp(in->protocol_version, MCP26_VERSION);
    for (size_t i = 0; b->batch && i < b->n; i++) {
        if (modern_header || modern_meta(&b->msgs[i])) {
            verdict_fail(v, 400, JR_INVALID_REQUEST,
                         "Invalid Request: batch arrays are not supported in protocol "
                         MCP26_VERSION);
            goto fail;
        }
    }
    if (!b->batch && (meta = modern_meta(&b->msgs[0])) != NULL) {
        if (stateless_rules(in, &b->msgs[0], meta, v) < 0)
            goto fail;
        goto ok;
    }
    if (modern_header) {
        if (jr_body_count(b, JR_REQUEST) > 0) {
            verdict_fail(v, 400, JR_INVALID_PARAMS,
                         "Invalid params: a " MCP26_VERSION " request must carry "
                         "params._meta with " MCP26_META_VERSION " and " MCP26_META_CAPS);
            goto fail;
        }
        verdict_stateless(v, MCP_OP_IGNORE); /* a notification or response of that era */
        goto ok;
    }
    init = jr_body_has_initialize(b);
    if (init && b->batch) {
        verdict_fail(v, 400, JR_INVALID_REQUEST,
                     "Invalid Request: Only one initialization request is allowed");
        goto fail;
    }
    if (init) {
        if (in->session_id) {
            verdict_fail(v, 400, JR_INVALID_REQUEST,
                         "Invalid Request: initialize must not carry an Mcp-Session-Id");
            v->id = json_incref(b->msgs[0].id);
            goto fail;
        }
        /* The header is not sent before the version is negotiated: ignore it. */
        v->op = MCP_OP_INITIALIZE;
        goto ok;
    }
    if (check_session(in->session_id, "Mcp-Session-Id header", v) < 0 ||
        check_version(in, v) < 0)
        goto fail;
    if (b->batch && !(v->vflags & MCP_V_BATCH)) {
        verdict_fail(v, 400, JR_INVALID_REQUEST,
                     "Invalid Request: batch arrays are not supported in protocol %s",
                     v->version);
        goto fail;
    }
    v->op = jr_body_count(b, JR_REQUEST) > 0 ? MCP_OP_REQUESTS : MCP_OP_MESSAGES;
ok:
    *out = b;
    return;
fail:
    if (!v->id && !b->batch && b->msgs[0].id)
        v->id = json_incref(b->msgs[0].id);
    jr_body_free(b);
}
