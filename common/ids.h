/* ids: random identifiers (session ids, control ids) from the kernel's CSPRNG. */
#ifndef MCPHUB_IDS_H
#define MCPHUB_IDS_H

#include <stddef.h>

/* Writes nbytes random bytes as unpadded base64url (URL-safe, visible ASCII) plus a NUL into
 * buf. Returns 0, or -ENOSPC when buf is too small. Any thread. */
int id_random(char *buf, size_t size, size_t nbytes);

#endif
