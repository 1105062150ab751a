/* ctl_admin: the Admin service operators call (servers, instances, sessions, stats). Handlers post to
 * the loop, which owns the configuration and the counters. */
#include "ctl_internal.h"
#include "ctl_up.h"

#include "mcphub/v1/admin.pb-c.h"
#include "mcphub/v1/gateway.pb-c.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static Mcphub__V1__ServerTransport adm_transport(cfg_transport t)
{
    switch (t) {
    case CFG_TRANSPORT_STDIO:
        return MCPHUB__V1__SERVER_TRANSPORT__SERVER_TRANSPORT_STDIO;
    case CFG_TRANSPORT_SSE:
        return MCPHUB__V1__SERVER_TRANSPORT__SERVER_TRANSPORT_SSE;
    case CFG_TRANSPORT_STREAMABLE_HTTP:
        return MCPHUB__V1__SERVER_TRANSPORT__SERVER_TRANSPORT_STREAMABLE_HTTP;
    case CFG_TRANSPORT_OPENAPI:
    case CFG_TRANSPORT_OTHER:
        break;
    }
    return MCPHUB__V1__SERVER_TRANSPORT__SERVER_TRANSPORT_UNSUPPORTED;
}

/* The shared instance's state, or what the configuration makes the server. */
static const char *adm_state(ctl *c, size_t i)
{
    const cfg_server *s = &c->cfg->servers[i];
    const char *st;

    if (!s->supported)
        return "unsupported";
    if (!s->enabled)
        return "disabled";
    st = ctl_up_state_name(c, i);
    return st ? st : "configured";
}

void ctl_admin_server_info(ctl *c, size_t i, Mcphub__V1__ServerInfo *info)
{
    const cfg_server *s = &c->cfg->servers[i];

    mcphub__v1__server_info__init(info);
    info->name = (char *)s->name;
    info->transport = adm_transport(s->transport);
    info->type = (char *)(s->type ? s->type : cfg_transport_name(s->transport));
    info->enabled = s->enabled;
    info->per_session = s->per_session;
    info->state = (char *)adm_state(c, i);
    info->tool_count = (uint32_t)json_array_size(c->lists[0][i]);
    info->command = (char *)(s->command ? s->command : s->url ? s->url : "");
    info->skip_reason = (char *)(s->unsupported_reason ? s->unsupported_reason : "");
}

static void adm_list_servers(ctl *c, rpc_call *call, void *arg)
{
    Mcphub__V1__ListServersReply reply = MCPHUB__V1__LIST_SERVERS_REPLY__INIT;
    size_t n = c->cfg->n_servers;
    Mcphub__V1__ServerInfo *infos = calloc(n ? n : 1, sizeof *infos);
    Mcphub__V1__ServerInfo **ptrs = calloc(n ? n : 1, sizeof *ptrs);

    if (!infos || !ptrs)
        abort();
    (void)arg;
    for (size_t i = 0; i < n; i++) {
        ctl_admin_server_info(c, i, &infos[i]);
        ptrs[i] = &infos[i];
    }
    reply.n_servers = n;
    reply.servers = ptrs;
    rpc_call_reply(call, &reply.base);
    free(ptrs);
    free(infos);
}

static void adm_get_stats(ctl *c, rpc_call *call, void *arg)
{
    Mcphub__V1__Stats st = MCPHUB__V1__STATS__INIT;

    st.uptime_ms = (uint64_t)(rpc_now_ms() - c->started_ms);
    st.sessions = (uint32_t)sess_count(c->sessions);
    st.edges = (uint32_t)c->n_edges;
    st.servers = (uint32_t)c->cfg->n_servers;
    for (size_t i = 0; i < c->cfg->n_servers; i++)
        st.servers_enabled += c->cfg->servers[i].enabled && c->cfg->servers[i].supported;
    st.config_version = c->config_version;
    st.rpc_calls = c->rpc_calls;
    st.broadcasts = c->broadcasts;
    st.control_id = c->control_id;
    st.config_path = c->config_path ? c->config_path : (char *)"";
    rpc_call_reply(call, &st.base);
}

typedef struct {
    const Mcphub__V1__ListInstancesRequest *req;
    Mcphub__V1__InstanceInfo *infos;
    Mcphub__V1__InstanceInfo **ptrs;
    size_t n, cap;
} adm_inst_acc;

/* The info's strings outlive the visit: nothing changes on the loop until the reply. */
static void adm_inst_one(void *ud, const ctl_up_info *info)
{
    adm_inst_acc *a = ud;
    Mcphub__V1__InstanceInfo *ii;

    if ((a->req->server[0] && strcmp(a->req->server, info->server) != 0) ||
        (a->req->session_id[0] && strcmp(a->req->session_id, info->session_id) != 0))
        return;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 16;
        if (!(a->infos = realloc(a->infos, a->cap * sizeof *a->infos)))
            abort();
    }
    ii = &a->infos[a->n++];
    mcphub__v1__instance_info__init(ii);
    ii->server = (char *)info->server;
    ii->session_id = (char *)info->session_id;
    ii->state = (char *)info->state;
    ii->pid = info->pid;
    ii->restarts = info->restarts;
    ii->uptime_ms = info->uptime_ms > 0 ? (uint64_t)info->uptime_ms : 0;
    ii->template_instance = info->template_instance;
    ii->warm = info->warm;
}

static void adm_list_instances(ctl *c, rpc_call *call, void *arg)
{
    Mcphub__V1__ListInstancesReply reply = MCPHUB__V1__LIST_INSTANCES_REPLY__INIT;
    adm_inst_acc a = {0};

    (void)arg;
    a.req = (const Mcphub__V1__ListInstancesRequest *)rpc_call_request(call);
    ctl_up_visit(c, adm_inst_one, &a);
    a.ptrs = calloc(a.n ? a.n : 1, sizeof *a.ptrs);
    if (!a.ptrs)
        abort();
    for (size_t i = 0; i < a.n; i++)
        a.ptrs[i] = &a.infos[i];
    reply.n_instances = a.n;
    reply.instances = a.ptrs;
    rpc_call_reply(call, &reply.base);
    free(a.ptrs);
    free(a.infos);
}

static void adm_list_sessions(ctl *c, rpc_call *call, void *arg)
{
    Mcphub__V1__ListSessionsReply reply = MCPHUB__V1__LIST_SESSIONS_REPLY__INIT;
    size_t n = sess_count(c->sessions), pos = 0, i = 0;
    Mcphub__V1__SessionInfo *infos = calloc(n ? n : 1, sizeof *infos);
    Mcphub__V1__SessionInfo **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    int64_t now = rpc_now_ms();
    sess *s;

    (void)arg;
    if (!infos || !ptrs)
        abort();
    while (i < n && sess_next(c->sessions, &pos, &s)) {
        Mcphub__V1__SessionInfo *si = &infos[i];

        mcphub__v1__session_info__init(si);
        si->session_id = s->id;
        si->route = s->route;
        si->key_name = s->key_name;
        si->protocol_version = s->protocol_version ? s->protocol_version : (char *)"";
        si->stateless = s->era == SESS_STATELESS;
        si->scope = s->scope ? s->scope : (char *)"";
        si->age_ms = (uint64_t)(now - s->created_ms);
        si->idle_ms = (uint64_t)(now - s->last_activity_ms);
        si->stream_edge = s->stream_edge ? s->stream_edge : (char *)"";
        si->running = (uint32_t)s->running;
        si->instances = (uint32_t)ctl_up_session_instances(s);
        ptrs[i++] = si;
    }
    reply.n_sessions = i;
    reply.sessions = ptrs;
    rpc_call_reply(call, &reply.base);
    free(ptrs);
    free(infos);
}

static void adm_end_session(ctl *c, rpc_call *call, void *arg)
{
    const Mcphub__V1__AdminEndSessionRequest *req =
        (const Mcphub__V1__AdminEndSessionRequest *)rpc_call_request(call);
    Mcphub__V1__AdminEndSessionReply reply = MCPHUB__V1__ADMIN_END_SESSION_REPLY__INIT;

    (void)arg;
    reply.existed = ctl_gateway_end_session(c, req->session_id,
                                           MCPHUB__V1__END_REASON__END_REASON_ADMIN);
    rpc_call_reply(call, &reply.base);
}

/* Admin calls carry "authorization: Bearer TOKEN" when control has an admin token. Runs
 * on a gRPC thread: the token is written once before the servers start. */
static bool adm_authorized(ctl *c, rpc_call *call)
{
    char got[300], want[300];
    size_t n;
    unsigned char diff = 0;

    if (!c->admin_token[0])
        return true;
    if (rpc_call_metadata(call, "authorization", got, sizeof got) < 0)
        return false;
    snprintf(want, sizeof want, "Bearer %s", c->admin_token);
    n = strlen(want);
    if (strlen(got) != n)
        return false;
    for (size_t i = 0; i < n; i++) /* the same time whatever matches */
        diff |= (unsigned char)(got[i] ^ want[i]);
    return diff == 0;
}

static void adm_post(rpc_call *call, void *ud)
{
    struct ctl_admin_route *r = ud;

    if (!adm_authorized(r->c, call)) {
        rpc_call_fail(call, GRPC_STATUS_UNAUTHENTICATED, "admin token required");
        return;
    }
    ctl_post(r->c, r->fn, call, NULL);
}

int ctl_admin_add(ctl *c, const char *method, ctl_work_fn fn)
{
    struct ctl_admin_route *r;

    if (c->n_admin_routes == sizeof c->admin_routes / sizeof c->admin_routes[0])
        return -ENOSPC;
    r = &c->admin_routes[c->n_admin_routes++];
    r->c = c;
    r->fn = fn;
    return rpc_server_add_method(c->admin, &mcphub__v1__admin__descriptor, method, RPC_UNARY,
                                 adm_post, r);
}

int ctl_admin_register(ctl *c)
{
    static const struct {
        const char *method;
        ctl_work_fn fn;
    } methods[] = {
        {"ListServers", adm_list_servers},     {"GetStats", adm_get_stats},
        {"ListInstances", adm_list_instances}, {"ListSessions", adm_list_sessions},
        {"EndSession", adm_end_session},
    };
    int rc;

    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if ((rc = ctl_admin_add(c, methods[i].method, methods[i].fn)) < 0)
            return rc;
    return ctl_admin_edit_register(c);
}
