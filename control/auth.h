/* auth: MCPHub's bearer keys. Checks a presented token against the configuration's keys and
 * whether that key may use a route. Pure functions over a cfg; any thread. */
#ifndef MCPHUB_AUTH_H
#define MCPHUB_AUTH_H

#include "cfg.h"

/* Authenticates token for route ("" = global). With bearer auth off every request passes and
 * *key is NULL. Returns 0 (and *key, borrowed from c, when auth is on), -EACCES when the token
 * is missing or matches no usable key (HTTP 401), or -EPERM when the key may not use the
 * route (HTTP 403). */
int auth_check(const cfg *c, const char *token, const char *route, const cfg_bearer_key **key);

#endif
