/* ring: growing a circular buffer (a queue kept in an array of cap slots, its oldest element
 * at head, len elements in use, the next one at (head + len) % cap). */
#ifndef MCPHUB_RING_H
#define MCPHUB_RING_H

#include <stdlib.h>
#include <string.h>

/* Returns a zeroed array of ncap elements of elem bytes holding buf's len elements, oldest
 * first from index 0 (so the caller's head becomes 0), and frees buf. buf may be NULL when
 * cap is 0. Aborts on out of memory, as the daemons do for every allocation. */
static inline void *ring_grow(void *buf, size_t elem, size_t cap, size_t head, size_t len,
                              size_t ncap)
{
    char *grown = calloc(ncap, elem);
    size_t first = len < cap - head ? len : cap - head; /* from head to the array's end */

    if (!grown)
        abort();
    if (len) {
        memcpy(grown, (char *)buf + head * elem, first * elem);
        memcpy(grown + first * elem, buf, (len - first) * elem);
    }
    free(buf);
    return grown;
}

#endif
