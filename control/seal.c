/* seal: AES-256-GCM tokens, base64url text: nonce (12 bytes) | ciphertext | tag (16 bytes). */
#include "seal.h"

#include "ids.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define SEAL_NONCE 12
#define SEAL_TAG 16
#define SEAL_RAW_MAX (SEAL_NONCE + SEAL_MAX_PLAIN + SEAL_TAG)

void seal_key_init(seal_key *k)
{
    id_fill_random(k->key, sizeof k->key);
}

static char *b64u_encode(const uint8_t *p, size_t n)
{
    char *out = malloc(ID_B64URL_LEN(n));

    if (!out)
        abort();
    id_b64url(p, n, out);
    return out;
}

/* One AES-256-GCM pass; enc picks the direction. tag is written (enc) or checked. */
static bool seal_gcm(const seal_key *k, bool enc, const char *purpose, const uint8_t *nonce,
                     const uint8_t *in, size_t n, uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0;
    bool ok = false;

    if (!ctx)
        abort();
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, k->key, nonce, enc) != 1 ||
        EVP_CipherUpdate(ctx, NULL, &len, (const uint8_t *)purpose, (int)strlen(purpose)) != 1 ||
        (n > 0 && EVP_CipherUpdate(ctx, out, &len, in, (int)n) != 1))
        goto out;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG, tag) != 1)
        goto out;
    if (EVP_CipherFinal_ex(ctx, out + n, &len) != 1)
        goto out; /* decryption: the tag did not match */
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG, tag) != 1)
        goto out;
    ok = true;
out:
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

char *seal_box(const seal_key *k, const char *purpose, const void *plain, size_t n)
{
    uint8_t *raw;
    char *out;

    if (n > SEAL_MAX_PLAIN)
        return NULL;
    if (!(raw = malloc(SEAL_NONCE + n + SEAL_TAG + 16)))
        abort();
    /* Random 96-bit nonces: far below the 2^32 tokens per key where reuse starts to matter. */
    id_fill_random(raw, SEAL_NONCE);
    if (!seal_gcm(k, true, purpose, raw, plain, n, raw + SEAL_NONCE, raw + SEAL_NONCE + n))
        abort(); /* encryption with valid arguments does not fail */
    out = b64u_encode(raw, SEAL_NONCE + n + SEAL_TAG);
    free(raw);
    return out;
}

int seal_open(const seal_key *k, const char *purpose, const char *token, void *out, size_t cap,
              size_t *n)
{
    size_t tlen = token ? strlen(token) : 0, len = 0, body;
    uint8_t *raw;
    int rc = -EINVAL;

    *n = 0;
    if (!token || tlen > (SEAL_RAW_MAX * 4 + 2) / 3)
        return -EINVAL;
    /* Sized from the token: four characters carry three bytes. */
    if (!(raw = malloc(tlen / 4 * 3 + 3)))
        abort();
    if (id_b64_decode(token, tlen, ID_B64_URL | ID_B64_STRICT, raw, tlen / 4 * 3 + 3, &len) < 0 ||
        len < SEAL_NONCE + SEAL_TAG)
        goto out;
    body = len - SEAL_NONCE - SEAL_TAG;
    if (body > cap)
        goto out;
    if (!seal_gcm(k, false, purpose, raw, raw + SEAL_NONCE, body, out, raw + SEAL_NONCE + body)) {
        memset(out, 0, body); /* what failed authentication is not handed out */
        goto out;
    }
    *n = body;
    rc = 0;
out:
    free(raw);
    return rc;
}
