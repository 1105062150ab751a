/* hmap: open-addressing string map with backward-shift deletion (no tombstones). */
#include "hmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

typedef struct {
    char *key; /* NULL = empty slot */
    void *value;
    uint64_t hash;
} hmap_slot;

struct hmap {
    hmap_slot *slots;
    size_t cap; /* power of two */
    size_t size;
    uint64_t seed;
};

/* FNV-1a over the key, mixed with a per-map random seed so that keys chosen by a peer
 * cannot be aimed at one bucket. */
static uint64_t hmap_hash(const hmap *m, const char *key)
{
    uint64_t h = 1469598103934665603ULL ^ m->seed;

    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h;
}

hmap *hmap_new(void)
{
    hmap *m = calloc(1, sizeof *m);

    if (!m)
        abort();
    m->cap = 16;
    m->slots = calloc(m->cap, sizeof *m->slots);
    if (!m->slots)
        abort();
    if (getrandom(&m->seed, sizeof m->seed, GRND_NONBLOCK) != sizeof m->seed)
        m->seed = (uint64_t)(uintptr_t)m;
    return m;
}

void hmap_free(hmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    free(m);
}

static size_t hmap_find(const hmap *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)h & mask;

    while (m->slots[i].key) {
        if (m->slots[i].hash == h && strcmp(m->slots[i].key, key) == 0)
            return i;
        i = (i + 1) & mask;
    }
    return i; /* the empty slot where key would go */
}

static void hmap_grow(hmap *m)
{
    hmap_slot *old = m->slots;
    size_t old_cap = m->cap;

    m->cap *= 2;
    m->slots = calloc(m->cap, sizeof *m->slots);
    if (!m->slots)
        abort();
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].key) {
            size_t j = (size_t)old[i].hash & (m->cap - 1);

            while (m->slots[j].key)
                j = (j + 1) & (m->cap - 1);
            m->slots[j] = old[i];
        }
    }
    free(old);
}

void *hmap_put(hmap *m, const char *key, void *value)
{
    uint64_t h = hmap_hash(m, key);
    size_t i;
    void *prev;

    if ((m->size + 1) * 4 > m->cap * 3)
        hmap_grow(m);
    i = hmap_find(m, key, h);
    if (m->slots[i].key) {
        prev = m->slots[i].value;
        m->slots[i].value = value;
        return prev;
    }
    if (!(m->slots[i].key = strdup(key)))
        abort();
    m->slots[i].value = value;
    m->slots[i].hash = h;
    m->size++;
    return NULL;
}

void *hmap_get(const hmap *m, const char *key)
{
    size_t i = hmap_find(m, key, hmap_hash(m, key));

    return m->slots[i].key ? m->slots[i].value : NULL;
}

void *hmap_del(hmap *m, const char *key)
{
    size_t mask = m->cap - 1;
    size_t i = hmap_find(m, key, hmap_hash(m, key));
    size_t j;
    void *value;

    if (!m->slots[i].key)
        return NULL;
    value = m->slots[i].value;
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->size--;
    /* Backward shift: move later members of the probe run into the hole when their home
     * slot is not between the hole and their current slot. */
    j = i;
    for (;;) {
        size_t home;

        j = (j + 1) & mask;
        if (!m->slots[j].key)
            break;
        home = (size_t)m->slots[j].hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            m->slots[j].key = NULL;
            i = j;
        }
    }
    return value;
}

size_t hmap_size(const hmap *m)
{
    return m->size;
}

bool hmap_next(const hmap *m, size_t *pos, const char **key, void **value)
{
    while (*pos < m->cap) {
        size_t i = (*pos)++;

        if (m->slots[i].key) {
            *key = m->slots[i].key;
            *value = m->slots[i].value;
            return true;
        }
    }
    return false;
}
