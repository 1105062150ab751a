/* ids: random identifiers encoded as base64url. */
#include "ids.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/random.h>

size_t id_b64url(const unsigned char *p, size_t n, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;

    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = alphabet[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = alphabet[(acc << (6 - bits)) & 63];
    out[o] = '\0';
    return o;
}

int id_random(char *buf, size_t size, size_t nbytes)
{
    uint8_t raw[64];
    size_t got = 0;

    if (nbytes > sizeof raw || size < ID_B64URL_LEN(nbytes))
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
    id_b64url(raw, nbytes, buf);
    return 0;
}
