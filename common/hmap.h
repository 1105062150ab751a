/* hmap: a string-keyed hash map (open addressing, linear probing) for tables the loop
 * owns: sessions by id, edges by id. Keys are copied; values are borrowed pointers. Not
 * thread-safe: one owner thread. */
#ifndef MCPHUB_HMAP_H
#define MCPHUB_HMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct hmap hmap;

/* Creates an empty map. Never NULL (OOM aborts). */
hmap *hmap_new(void);

/* Frees the map and its key copies (not the values). NULL does nothing. */
void hmap_free(hmap *m);

/* Sets key to value (replacing any previous value). Returns the previous value or NULL. */
void *hmap_put(hmap *m, const char *key, void *value);

/* Returns the value of key, or NULL. */
void *hmap_get(const hmap *m, const char *key);

/* Removes key; returns its value or NULL when absent. */
void *hmap_del(hmap *m, const char *key);

size_t hmap_size(const hmap *m);

/* Iteration: start with *pos = 0; returns false at the end. Do not put or delete while
 * iterating (collect first). */
bool hmap_next(const hmap *m, size_t *pos, const char **key, void **value);

#endif
