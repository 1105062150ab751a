/* seal: opaque tokens that clients carry back to the hub (the 2026 revision's requestState).
 * A token is AES-256-GCM over a small payload with a key only this control process knows, so
 * a client can neither read what it names nor forge or alter one; the purpose string is bound
 * in as associated data so a token made for one use is refused by another. */
#ifndef MCPHUB_SEAL_H
#define MCPHUB_SEAL_H

#include <stddef.h>
#include <stdint.h>

#define SEAL_KEY_BYTES 32
#define SEAL_MAX_PLAIN 65536 /* bytes of a payload */

typedef struct {
    uint8_t key[SEAL_KEY_BYTES];
} seal_key;

/* Fills k with fresh random bytes (the kernel's CSPRNG). Tokens sealed with an earlier key
 * (a previous control process) no longer open. Any thread. */
void seal_key_init(seal_key *k);

/* Seals n bytes (at most SEAL_MAX_PLAIN) for purpose. Returns a new malloc'd NUL-terminated
 * base64url string (caller frees), or NULL when n is too large. Any thread. */
char *seal_box(const seal_key *k, const char *purpose, const void *plain, size_t n);

/* Opens a token made by seal_box with the same key and purpose: writes the payload to out
 * (cap bytes) and its length to *n. Returns 0, or -EINVAL for anything else: malformed,
 * altered, made with another key or purpose, or larger than cap. Any thread. */
int seal_open(const seal_key *k, const char *purpose, const char *token, void *out, size_t cap,
              size_t *n);

#endif
