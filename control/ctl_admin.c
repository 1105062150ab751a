/* ctl_admin: the Admin service operators call (ListServers, GetStats). Handlers post to
 * the loop, which owns the configuration and the counters. */
#include "ctl_internal.h"
#include "ctl_up.h"

#include "mcphub/v1/admin.pb-c.h"

#include <stdlib.h>

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

static void adm_list_servers(ctl *c, rpc_call *call, void *arg)
{
    Mcphub__V1__ListServersReply reply = MCPHUB__V1__LIST_SERVERS_REPLY__INIT;
    size_t n = c->cfg->n_servers;
    Mcphub__V1__ServerInfo *infos = calloc(n ? n : 1, sizeof *infos);
    Mcphub__V1__ServerInfo **ptrs = calloc(n ? n : 1, sizeof *ptrs);

    if (!infos || !ptrs)
        abort();
    for (size_t i = 0; i < n; i++) {
        const cfg_server *s = &c->cfg->servers[i];
        Mcphub__V1__ServerInfo *info = &infos[i];

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
        ptrs[i] = info;
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

static void adm_post_list(rpc_call *call, void *ud)
{
    ctl_post(ud, adm_list_servers, call, NULL);
}

static void adm_post_stats(rpc_call *call, void *ud)
{
    ctl_post(ud, adm_get_stats, call, NULL);
}

int ctl_admin_register(ctl *c)
{
    const ProtobufCServiceDescriptor *svc = &mcphub__v1__admin__descriptor;
    int rc;

    if ((rc = rpc_server_add_method(c->admin, svc, "ListServers", RPC_UNARY, adm_post_list, c)) < 0)
        return rc;
    return rpc_server_add_method(c->admin, svc, "GetStats", RPC_UNARY, adm_post_stats, c);
}
