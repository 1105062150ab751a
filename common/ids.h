/* ids: random identifiers (session ids, control ids) from the kernel's CSPRNG. */
#ifndef MCPHUB_IDS_H
#define MCPHUB_IDS_H

#include <stddef.h>

/* Writes nbytes random bytes as unpadded base64url (URL-safe, visible ASCII) plus a NUL into
 * buf. Returns 0, or -ENOSPC when buf is too small. Any thread. */
int id_random(char *buf, size_t size, size_t nbytes);

/* Writes n bytes of p as unpadded base64url plus a NUL into out, which must hold
 * ID_B64URL_LEN(n) bytes. Returns the characters written (without the NUL). Any thread. */
#define ID_B64URL_LEN(n) (((n) * 4 + 2) / 3 + 1)
size_t id_b64url(const unsigned char *p, size_t n, char *out);

#endif
