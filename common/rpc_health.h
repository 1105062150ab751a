/* rpc_health: gRPC's standard health service (grpc.health.v1.Health, from Debian's
 * grpc-proto package) on an rpc_server: Check and Watch. */
#ifndef MCPHUB_RPC_HEALTH_H
#define MCPHUB_RPC_HEALTH_H

#include "rpc.h"

typedef struct rpc_health rpc_health;

/* Health status values, as in health.proto. */
enum {
    RPC_HEALTH_UNKNOWN = 0,
    RPC_HEALTH_SERVING = 1,
    RPC_HEALTH_NOT_SERVING = 2,
};

/* Creates the status table; the overall service "" starts NOT_SERVING. Never NULL. */
rpc_health *rpc_health_new(void);

/* Registers Check and Watch on srv (before rpc_server_start); one table may serve several
 * servers. Returns 0 or the rpc_server_add_method error. */
int rpc_health_register(rpc_health *h, rpc_server *srv);

/* Sets the status of service (""  = the whole server); watchers get the change. Any thread. */
void rpc_health_set(rpc_health *h, const char *service, int status);

/* Frees; the servers must already be freed (their calls completed). NULL does nothing. */
void rpc_health_free(rpc_health *h);

#endif
