/* cfg_internal: pieces of the settings loader shared between its files (arena, ${VAR}
 * expansion, position finder). Not for use outside control/cfg*.c and their tests. */
#ifndef MCPHUB_CFG_INTERNAL_H
#define MCPHUB_CFG_INTERNAL_H

#include <stddef.h>

/* ---- arena (cfg_arena.c): everything a cfg points to, freed in one go ---- */

struct cfg_arena;

/* Returns n zeroed bytes aligned for any type, owned by *arena (created on first use).
 * Aborts when memory runs out. */
void *cfg_arena_alloc(struct cfg_arena **arena, size_t n);

/* Copies n bytes of s plus a NUL into the arena. */
char *cfg_arena_strndup(struct cfg_arena **arena, const char *s, size_t n);

/* Frees every chunk. cfg_arena_free(NULL) does nothing. */
void cfg_arena_free(struct cfg_arena *arena);

/* ---- ${VAR} expansion (cfg_expand.c) ---- */

/* Returns the value of variable name (NUL-terminated), or NULL when unset. */
typedef const char *(*cfg_lookup_fn)(void *ud, const char *name);

/* Expands the way MCPHub's expandEnvVars does: `${NAME}` (any text up to the next `}`,
 * not empty), then `$NAME` (NAME matching [A-Z_][A-Z0-9_]*); an unset or empty variable
 * becomes ""; then leading and trailing ASCII whitespace is trimmed. On success returns 0
 * and *out is a new malloc'd string (caller frees) of *out_len bytes. Returns -E2BIG when
 * the result would exceed max bytes (*out is NULL). */
int cfg_expand(const char *in, cfg_lookup_fn lookup, void *ud, size_t max, char **out,
               size_t *out_len);

/* ---- positions and field paths (cfg_pos.c) ---- */

#define CFG_PATH_MAX 12

/* One step of a path into the JSON document: an object key or an array index. */
typedef struct cfg_path_item {
    const char *key; /* borrowed; NULL for an array index */
    size_t index;
} cfg_path_item;

/* Returns the byte offset at which the value at path starts in text (already known to be
 * valid JSON). When the path cannot be followed to its end, returns the offset of the
 * deepest value reached. When a key occurs twice in one object the last one counts, as
 * in jansson and JSON.parse. */
size_t cfg_pos_find(const char *text, size_t len, const cfg_path_item *path, size_t depth);

/* Converts a byte offset into a 1-based line and column (columns count characters, as
 * jansson's do). */
void cfg_pos_line_col(const char *text, size_t len, size_t off, int *line, int *col);

/* Writes the path as "mcpServers.fetch.args[2]" (keys that are not plain words are
 * written ["like this"]); truncates to size. */
void cfg_path_render(const cfg_path_item *path, size_t depth, char *buf, size_t size);

#endif
