/* ids: random identifiers encoded as base64url. */
#include "ids.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static const char id_b64_url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char id_b64_std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t id_b64url(const unsigned char *p, size_t n, char *out)
{
    const char *alphabet = id_b64_url;
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

int id_b64_decode(const char *s, size_t n, unsigned flags, unsigned char *out, size_t cap,
                  size_t *len)
{
    const char *alphabet = flags & ID_B64_URL ? id_b64_url : id_b64_std;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;

    while ((flags & ID_B64_PADDING) && n > 0 && s[n - 1] == '=')
        n--;
    if ((flags & ID_B64_STRICT) && n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *at = s[i] ? memchr(alphabet, s[i], 64) : NULL;

        if (!at)
            return -1;
        acc = (acc << 6) | (uint32_t)(at - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if ((flags & ID_B64_STRICT) && bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    *len = o;
    return 0;
}

void id_fill_random(void *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom((uint8_t *)buf + got, n - got, 0);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            abort(); /* no entropy source: nothing safe to hand out */
        }
        got += (size_t)r;
    }
}

int id_random(char *buf, size_t size, size_t nbytes)
{
    uint8_t raw[64];

    if (nbytes > sizeof raw || size < ID_B64URL_LEN(nbytes))
        return -ENOSPC;
    id_fill_random(raw, nbytes);
    id_b64url(raw, nbytes, buf);
    return 0;
}
