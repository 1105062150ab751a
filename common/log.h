/* log: one line per event on stderr, `ts=… level=… proc=… msg="…" key=value…`.
 * The level is tested before anything is formatted; safe to call from any thread. */
#ifndef MCPHUB_LOG_H
#define MCPHUB_LOG_H

#include <stdarg.h>

typedef enum {
    LOG_ERROR = 0,
    LOG_WARN = 1,
    LOG_INFO = 2,
    LOG_DEBUG = 3,
} log_level;

extern volatile int log_current_level;

/* Sets the process name written on every line and the level (from MCPHUB_LOG_LEVEL when
 * set: error|warn|info|debug). Call once from main before other threads start. */
void log_init(const char *proc);

/* Parses "error"/"warn"/"info"/"debug"; returns the level or -1. */
int log_level_parse(const char *name);

void log_set_level(log_level level);

/* Writes one line: msg is a short fixed text (quoted), kv_fmt the key=value part. Use the
 * macros below, which skip the call when the level is off. */
void log_write(log_level level, const char *msg, const char *kv_fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_at(lvl, msg, ...)                                   \
    do {                                                        \
        if ((int)(lvl) <= log_current_level)                    \
            log_write((lvl), (msg), __VA_ARGS__);               \
    } while (0)

#define log_error(msg, ...) log_at(LOG_ERROR, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_at(LOG_WARN, msg, __VA_ARGS__)
#define log_info(msg, ...) log_at(LOG_INFO, msg, __VA_ARGS__)
#define log_debug(msg, ...) log_at(LOG_DEBUG, msg, __VA_ARGS__)

#endif
