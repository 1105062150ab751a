/* ids: random identifiers encoded as base64url. */
#include "ids.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/random.h>

int id_random(char *buf, size_t size, size_t nbytes)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t raw[64];
    size_t need = (nbytes * 8 + 5) / 6 + 1;
    size_t got = 0;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;

    if (nbytes > sizeof raw || size < need)
        return -ENOSPC;
    while (got < nbytes) {
        ssize_t r = getrandom(raw + got, nbytes - got, 0);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            abort(); /* no entropy source: nothing safe to hand out */
        }
        got += (size_t)r;
    }
    for (size_t i = 0; i < nbytes; i++) {
        acc = (acc << 8) | raw[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            buf[o++] = alphabet[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        buf[o++] = alphabet[(acc << (6 - bits)) & 63];
    buf[o] = '\0';
    return 0;
}
