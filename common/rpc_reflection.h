/* rpc_reflection: gRPC server reflection (grpc.reflection.v1 and v1alpha, from Debian's
 * grpc-proto package) on an rpc_server, so generic gRPC clients and UIs can list its
 * services and fetch their .proto descriptors without the files. The descriptors are the
 * ones proto/ embeds at build time. */
#ifndef MCPHUB_RPC_REFLECTION_H
#define MCPHUB_RPC_REFLECTION_H

#include "rpc.h"

#include <stddef.h>

typedef struct rpc_reflection rpc_reflection;

/* A reflection service listing services (fully qualified names, e.g. "mcphub.v1.Admin";
 * copied; the reflection services themselves are added). Never NULL. */
rpc_reflection *rpc_reflection_new(const char *const *services, size_t n);

/* Registers ServerReflectionInfo of both versions on srv (before rpc_server_start).
 * Returns 0 or the rpc_server_add_method error. */
int rpc_reflection_register(rpc_reflection *r, rpc_server *srv);

/* Frees; the server must already be freed. NULL does nothing. */
void rpc_reflection_free(rpc_reflection *r);

#endif
