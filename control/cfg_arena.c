/* cfg_arena: a bump allocator holding every string and array of one loaded cfg, so a
 * half-built cfg is released on any error path by freeing one list of chunks. */
#include "cfg_internal.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CFG_ARENA_CHUNK 16384u

struct cfg_arena {
    struct cfg_arena *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

void *cfg_arena_alloc(struct cfg_arena **arena, size_t n)
{
    const size_t align = alignof(max_align_t);
    struct cfg_arena *a = *arena;
    char *p;

    if (n > SIZE_MAX / 2)
        abort();
    n = n ? (n + align - 1) & ~(align - 1) : align;
    if (!a || a->cap - a->used < n) {
        size_t cap = n > CFG_ARENA_CHUNK ? n : CFG_ARENA_CHUNK;

        a = malloc(sizeof *a + cap);
        if (!a)
            abort();
        a->used = 0;
        a->cap = cap;
        /* A big block goes behind the current chunk so its free space stays in use. */
        if (*arena && cap > CFG_ARENA_CHUNK) {
            a->next = (*arena)->next;
            (*arena)->next = a;
            a->used = cap;
            p = (char *)a->data;
            memset(p, 0, n);
            return p;
        }
        a->next = *arena;
        *arena = a;
    }
    p = (char *)a->data + a->used;
    a->used += n;
    memset(p, 0, n);
    return p;
}

char *cfg_arena_strndup(struct cfg_arena **arena, const char *s, size_t n)
{
    char *p = cfg_arena_alloc(arena, n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void cfg_arena_free(struct cfg_arena *arena)
{
    while (arena) {
        struct cfg_arena *next = arena->next;

        free(arena);
        arena = next;
    }
}
