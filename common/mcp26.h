/* mcp26: the vocabulary of the stateless MCP revision 2026-07-28 that edge and control both
 * speak: its version, the _meta keys of its per-request envelope, its error codes, the
 * methods a client may call and the log levels. */
#ifndef MCPHUB_MCP26_H
#define MCPHUB_MCP26_H

#include <stdbool.h>

#define MCP26_VERSION "2026-07-28"

/* _meta keys: the envelope every request carries, the ones results carry, and mcphub's own
 * scope key. */
#define MCP26_META_VERSION "io.modelcontextprotocol/protocolVersion"
#define MCP26_META_CAPS "io.modelcontextprotocol/clientCapabilities"
#define MCP26_META_INFO "io.modelcontextprotocol/clientInfo"
#define MCP26_META_LOG_LEVEL "io.modelcontextprotocol/logLevel"
#define MCP26_META_SERVER_INFO "io.modelcontextprotocol/serverInfo"
#define MCP26_META_SUBSCRIPTION "io.modelcontextprotocol/subscriptionId"
#define MCP26_META_SCOPE "dev.mcphub/scope"

/* JSON-RPC errors of the revision (each answered with HTTP 400). */
#define MCP26_E_HEADER_MISMATCH (-32020)
#define MCP26_E_MISSING_CAPABILITY (-32021)
#define MCP26_E_UNSUPPORTED_VERSION (-32022)

/* True for a method a 2026 client may call (initialize, ping, logging/setLevel and the
 * resource subscriptions are gone from the revision). NULL is false. Any thread. */
bool mcp26_method_known(const char *method);

/* The rank of a log level, debug 0 .. emergency 7, or -1 for NULL or an unknown name. Any
 * thread. */
int mcp26_log_level(const char *name);

#endif
