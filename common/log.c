/* log: structured one-line-per-event logging to stderr (see log.h). */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

volatile int log_current_level = LOG_INFO;
static char log_proc[32] = "mcphub";

static const char *const log_names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, log_names[i]) == 0)
            return i;
    return -1;
}

void log_set_level(log_level level)
{
    log_current_level = (int)level;
}

void log_init(const char *proc)
{
    const char *env = getenv("MCPHUB_LOG_LEVEL");
    int lvl;

    if (proc)
        snprintf(log_proc, sizeof log_proc, "%s", proc);
    if (env && (lvl = log_level_parse(env)) >= 0)
        log_current_level = lvl;
}

void log_write(log_level level, const char *msg, const char *kv_fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    int w;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    w = snprintf(line + n, sizeof line - n, ".%03ldZ level=%s proc=%s msg=\"%s\"",
                 ts.tv_nsec / 1000000, log_names[level], log_proc, msg);
    if (w > 0)
        n += (size_t)w < sizeof line - n ? (size_t)w : sizeof line - n - 1;
    if (kv_fmt && kv_fmt[0] && n < sizeof line - 2) {
        line[n++] = ' ';
        va_start(ap, kv_fmt);
        w = vsnprintf(line + n, sizeof line - n, kv_fmt, ap);
        va_end(ap);
        if (w > 0)
            n += (size_t)w < sizeof line - n ? (size_t)w : sizeof line - n - 1;
    }
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    /* One write per line so lines from several threads never interleave. */
    fwrite(line, 1, n, stderr);
}
