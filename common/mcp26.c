/* mcp26: the stateless revision's method list and log levels (see mcp26.h). */
#include "mcp26.h"

#include <stddef.h>
#include <string.h>

static const char *const mcp26_methods[] = {
    "server/discover", "tools/list",     "tools/call",         "prompts/list",
    "prompts/get",     "resources/list", "resources/read",     "resources/templates/list",
    "subscriptions/listen", "completion/complete",
};

static const char *const mcp26_levels[] = {"debug", "info",     "notice", "warning",
                                           "error", "critical", "alert",  "emergency"};

bool mcp26_method_known(const char *method)
{
    for (size_t i = 0; method && i < sizeof mcp26_methods / sizeof mcp26_methods[0]; i++)
        if (strcmp(method, mcp26_methods[i]) == 0)
            return true;
    return false;
}

int mcp26_log_level(const char *name)
{
    for (int i = 0; name && i < (int)(sizeof mcp26_levels / sizeof mcp26_levels[0]); i++)
        if (strcmp(name, mcp26_levels[i]) == 0)
            return i;
    return -1;
}
