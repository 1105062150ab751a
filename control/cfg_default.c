/* cfg_default: the configuration mcphub-control uses when started without --config (the
 * quick start): the C fixture server from the daemon's own directory, in group "default". */
#include "cfg.h"

/* mcphub-control sets MCPHUB_BIN_DIR to the directory of its own executable before it
 * loads this text, so the fixture built next to it is found wherever the build put it. */
static const char cfg_default_text[] =
    "{\n"
    "  \"mcpServers\": {\n"
    "    \"fixture\": {\n"
    "      \"type\": \"stdio\",\n"
    "      \"command\": \"${MCPHUB_BIN_DIR}/mcphub-fixture\",\n"
    "      \"args\": [],\n"
    "      \"enabled\": true\n"
    "    }\n"
    "  },\n"
    "  \"groups\": [\n"
    "    { \"name\": \"default\", \"servers\": [\"fixture\"] }\n"
    "  ],\n"
    "  \"bearerKeys\": [],\n"
    "  \"systemConfig\": {\n"
    "    \"routing\": {\n"
    "      \"enableGlobalRoute\": true,\n"
    "      \"enableGroupNameRoute\": true,\n"
    "      \"enableBearerAuth\": false,\n"
    "      \"bearerAuthKey\": \"\"\n"
    "    },\n"
    "    \"nameSeparator\": \"-\"\n"
    "  },\n"
    "  \"hub\": {\n"
    "    \"sessionIdleTimeout\": \"30m\"\n"
    "  }\n"
    "}\n";

const char *cfg_default_json(void)
{
    return cfg_default_text;
}
