/* fuzz_edge_rules: libFuzzer target for the edge's transport rules (mcp_rules), which read
 * request heads and bodies straight from MCP clients. The input is a small text request:
 *   METHOD PATH[?sessionId=ID]\n  Header: value\n ... \n  \n  body
 * plus an optional "X-Cfg: N" line whose bits vary the settings. Any input must give a
 * verdict whose fields agree with each other. */
#include "mcp_rules.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX 8192

static const char *const fuzz_headers[] = {
    "accept", "content-type", "origin", "host", "mcp-session-id", "mcp-protocol-version",
    "last-event-id", "authorization", "mcp-method", "mcp-name", "mcphub-scope",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const origins[] = {"https://app.example.com", "*"};
    static const char *const hosts[] = {"mcp.example.com", "[::2]:80"};
    static const char *const routes[] = {"", "grp"};
    char text[FUZZ_MAX + 1];
    char *line, *next, *body = NULL, *q;
    mcp_rules_in in = {0};
    mcp_rules_cfg cfg = {0};
    mcp_verdict v;
    jr_body *b = NULL;
    unsigned flags = 0;
    size_t body_len = 0;
    const char **slots[] = {&in.accept, &in.content_type, &in.origin, &in.host,
                            &in.session_id, &in.protocol_version, &in.last_event_id, &in.auth,
                            &in.mcp_method, &in.mcp_name, &in.scope};

    if (size > FUZZ_MAX)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    /* request line */
    line = text;
    next = strchr(line, '\n');
    if (next)
        *next++ = '\0';
    in.method = line;
    if ((q = strchr(line, ' '))) {
        *q++ = '\0';
        in.path = q;
        if ((q = strchr(q, '?'))) {
            *q++ = '\0';
            if (strncmp(q, "sessionId=", 10) == 0)
                in.session_query = q + 10;
        }
    }
    /* headers until an empty line; the rest (up to the end) is the body */
    while ((line = next)) {
        char *colon;

        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (line[0] == '\0') {
            body = next ? next : line;
            body_len = size - (size_t)(body - text);
            break;
        }
        if (!(colon = strchr(line, ':')))
            continue;
        *colon++ = '\0';
        while (*colon == ' ')
            colon++;
        if (strcasecmp(line, "x-cfg") == 0) {
            flags = (unsigned)strtoul(colon, NULL, 10);
        } else if (strcasecmp(line, "content-length") == 0) {
            in.has_length = true;
            in.content_length = strtoull(colon, NULL, 10);
        } else {
            for (size_t i = 0; i < sizeof fuzz_headers / sizeof fuzz_headers[0]; i++)
                if (strcasecmp(line, fuzz_headers[i]) == 0)
                    *slots[i] = colon;
        }
    }

    cfg.loopback = !(flags & 1);
    cfg.allowed_origins = origins;
    cfg.n_allowed_origins = (flags & 2) ? 2 : 1;
    cfg.allowed_hosts = hosts;
    cfg.n_allowed_hosts = 2;
    cfg.body_limit = (flags & 4) ? 64 : 4096;
    cfg.bearer_auth = flags & 8;
    cfg.auth_custom_header = flags & 16;
    cfg.routes = routes;
    cfg.n_routes = (flags & 32) ? 1 : 2;

    mcp_rules_head(&cfg, &in, &v);
    if (!v.status && body && in.method && strcmp(in.method, "POST") == 0)
        mcp_rules_body(&cfg, &in, body, body_len, &v, &b);

    if (v.status) {
        bool modern_code = v.code == JR_INVALID_PARAMS || v.code == JR_METHOD_NOT_FOUND ||
                           v.code == MCP26_E_HEADER_MISMATCH || v.code == MCP26_E_UNSUPPORTED_VERSION;

        if (b || v.status < 400 || v.status > 415 || v.message[0] == '\0' ||
            (v.code != JR_SERVER_ERROR && v.code != JR_PARSE_ERROR &&
             v.code != JR_INVALID_REQUEST && !modern_code) ||
            (modern_code && v.status != (v.code == JR_METHOD_NOT_FOUND ? 404 : 400)) ||
            (v.data != NULL) != (v.code == MCP26_E_UNSUPPORTED_VERSION) ||
            v.auth_challenge != (v.status == 401) || (v.status == 405 && !v.allow))
            abort();
        free(jr_error_response(v.code, v.message, v.id, NULL));
    } else if (v.stateless) {
        /* 2026: no session, that revision, one message; a scope of visible ASCII. */
        if (v.session || strcmp(v.version, MCP26_VERSION) != 0 || !b || b->batch ||
            (v.op != MCP_OP_REQUESTS && v.op != MCP_OP_IGNORE) || strlen(v.scope) > MCP_SCOPE_MAX ||
            (v.op == MCP_OP_REQUESTS) != (b->msgs[0].kind == JR_REQUEST))
            abort();
        for (const char *p = v.scope; *p; p++)
            if (*p < 0x21 || *p > 0x7e)
                abort();
    } else {
        if (v.ep == MCP_EP_NONE || !v.version || strlen(v.route) > MCP_ROUTE_MAX)
            abort();
        if (cfg.bearer_auth && (!v.token || v.token_len == 0 || v.token_len > MCP_TOKEN_MAX))
            abort();
        if (v.op != MCP_OP_NONE && v.op != MCP_OP_INITIALIZE && v.op != MCP_OP_SSE_OPEN &&
            !mcp_rules_session_id_ok(v.session))
            abort();
        if ((v.op == MCP_OP_INITIALIZE || v.op == MCP_OP_REQUESTS || v.op == MCP_OP_MESSAGES ||
             v.op == MCP_OP_SSE_POST) != (b != NULL))
            abort();
    }
    jr_body_free(b);
    mcp_verdict_cleanup(&v);
    return 0;
}
