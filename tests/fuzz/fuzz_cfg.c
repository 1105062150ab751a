/* fuzz_cfg: libFuzzer target for the settings-file loader (cfg_parse), which reads bytes
 * an operator or a config management tool wrote. Any input must load or fail cleanly. */
#include "cfg.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cfg *c = NULL;
    cfg_error err;
    char msg[1024];

    if (cfg_parse((const char *)data, size, "fuzz.json", &c, &err) == 0) {
        /* Walk what loaded: lookups must agree with the arrays. */
        for (size_t i = 0; i < c->n_servers; i++)
            if (cfg_find_server(c, c->servers[i].name) == NULL)
                abort();
        cfg_free(c);
    } else {
        if (c != NULL)
            abort();
        cfg_error_format(&err, msg, sizeof msg);
    }
    return 0;
}
