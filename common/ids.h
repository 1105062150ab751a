/* ids: random identifiers (session ids, control ids) from the kernel's CSPRNG. */
#ifndef MCPHUB_IDS_H
#define MCPHUB_IDS_H

#include <stddef.h>

/* Fills n bytes of buf from the kernel's CSPRNG (aborts when there is none: nothing safe
 * could be handed out). Any thread. */
void id_fill_random(void *buf, size_t n);

/* Writes nbytes random bytes as unpadded base64url (URL-safe, visible ASCII) plus a NUL into
 * buf. Returns 0, or -ENOSPC when buf is too small. Any thread. */
int id_random(char *buf, size_t size, size_t nbytes);

/* Writes n bytes of p as unpadded base64url plus a NUL into out, which must hold
 * ID_B64URL_LEN(n) bytes. Returns the characters written (without the NUL). Any thread. */
#define ID_B64URL_LEN(n) (((n) * 4 + 2) / 3 + 1)
size_t id_b64url(const unsigned char *p, size_t n, char *out);

/* Decoding flags: the URL-safe alphabet (else the standard one with + and /); trailing '='
 * padding accepted; strict: a length no encoder makes and non-zero spare bits are errors, so
 * the same bytes have one spelling only. */
enum { ID_B64_URL = 1, ID_B64_PADDING = 2, ID_B64_STRICT = 4 };

/* Decodes n characters of s as base64 under flags into out (cap bytes), *len bytes. Returns
 * 0, or -1 for a character outside the alphabet (NUL included), output over cap, or what
 * ID_B64_STRICT refuses. Any thread. */
int id_b64_decode(const char *s, size_t n, unsigned flags, unsigned char *out, size_t cap,
                  size_t *len);

#endif
