/* prom: Prometheus text exposition 0.0.4 into a bounded buffer (see prom.h). */
#include "prom.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define PROM_PROC_READ_MAX 4096 /* bytes read of /proc/self/stat and /proc/stat lines */

void prom_buf_init(prom_buf *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max ? max : PROM_DEFAULT_MAX;
}

void prom_buf_cleanup(prom_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* Makes room for n more bytes plus the NUL. False (and b->over) past the maximum. */
static bool buf_reserve(prom_buf *b, size_t n)
{
    size_t cap;

    if (b->over)
        return false;
    if (n > b->max || b->len + n > b->max) {
        b->over = true;
        return false;
    }
    if (b->len + n + 1 <= b->cap)
        return true;
    cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
        cap *= 2;
    if (!(b->data = realloc(b->data, cap)))
        abort();
    b->cap = cap;
    return true;
}

void prom_append(prom_buf *b, const char *text, size_t len)
{
    if (!buf_reserve(b, len))
        return;
    memcpy(b->data + b->len, text, len);
    b->len += len;
    b->data[b->len] = '\0';
}

static void buf_putc(prom_buf *b, char ch)
{
    prom_append(b, &ch, 1);
}

static void buf_puts(prom_buf *b, const char *s)
{
    prom_append(b, s, strlen(s));
}

void prom_printf(prom_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Escapes s: backslash and newline always, the double quote in label values only. */
static void buf_escaped(prom_buf *b, const char *s, bool quote)
{
    size_t run = 0;

    for (; s && s[run];) {
        const char *esc = NULL;
        char ch = s[run];

        if (ch == '\\')
            esc = "\\\\";
        else if (ch == '\n')
            esc = "\\n";
        else if (ch == '"' && quote)
            esc = "\\\"";
        if (!esc) {
            run++;
            continue;
        }
        prom_append(b, s, run);
        buf_puts(b, esc);
        s += run + 1;
        run = 0;
    }
    if (s)
        prom_append(b, s, run);
}

char *prom_format_double(double v, char *buf, size_t size)
{
    if (isnan(v)) {
        snprintf(buf, size, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
    } else {
        /* the shortest of %.15g .. %.17g that reads back as the same double */
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, size, "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                break;
        }
    }
    return buf;
}

void prom_family(prom_buf *b, const char *name, const char *type, const char *help)
{
    buf_puts(b, "# HELP ");
    buf_puts(b, name);
    buf_putc(b, ' ');
    buf_escaped(b, help, false);
    buf_puts(b, "\n# TYPE ");
    buf_puts(b, name);
    buf_putc(b, ' ');
    buf_puts(b, type);
    buf_putc(b, '\n');
}

/* Writes name, suffix and the label set (plus le when not NULL), then a space. */
static void sample_head(prom_buf *b, const char *name, const char *suffix,
                        const char *const *labels, const char *le)
{
    bool any = false;

    buf_puts(b, name);
    if (suffix)
        buf_puts(b, suffix);
    for (; labels && labels[0]; labels += 2) {
        buf_putc(b, any ? ',' : '{');
        any = true;
        buf_puts(b, labels[0]);
        buf_puts(b, "=\"");
        buf_escaped(b, labels[1] ? labels[1] : "", true);
        buf_putc(b, '"');
    }
    if (le) {
        buf_putc(b, any ? ',' : '{');
        any = true;
        buf_puts(b, "le=\"");
        buf_puts(b, le);
        buf_putc(b, '"');
    }
    if (any)
        buf_putc(b, '}');
    buf_putc(b, ' ');
}

void prom_sample(prom_buf *b, const char *name, const char *const *labels, double value)
{
    char num[40];

    sample_head(b, name, NULL, labels, NULL);
    buf_puts(b, prom_format_double(value, num, sizeof num));
    buf_putc(b, '\n');
}

void prom_sample_u64(prom_buf *b, const char *name, const char *const *labels, uint64_t value)
{
    sample_head(b, name, NULL, labels, NULL);
    prom_printf(b, "%" PRIu64 "\n", value);
}

void prom_sample_i64(prom_buf *b, const char *name, const char *const *labels, int64_t value)
{
    sample_head(b, name, NULL, labels, NULL);
    prom_printf(b, "%" PRId64 "\n", value);
}

void prom_histogram(prom_buf *b, const char *name, const char *const *labels,
                    const double *bounds, const uint64_t *counts, size_t n, double sum)
{
    char le[40];
    char num[40];
    uint64_t cum = 0;

    for (size_t i = 0; i <= n; i++) {
        cum += counts[i];
        sample_head(b, name, "_bucket", labels,
                    i < n ? prom_format_double(bounds[i], le, sizeof le) : "+Inf");
        prom_printf(b, "%" PRIu64 "\n", cum);
    }
    sample_head(b, name, "_sum", labels, NULL);
    buf_puts(b, prom_format_double(sum, num, sizeof num));
    buf_putc(b, '\n');
    sample_head(b, name, "_count", labels, NULL);
    prom_printf(b, "%" PRIu64 "\n", cum);
}

char *prom_enum_label(const ProtobufCEnumDescriptor *desc, int value, const char *prefix,
                      char *buf, size_t size)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(desc, value);
    const char *name;
    size_t n = 0;

    if (!ev) {
        snprintf(buf, size, "%d", value);
        return buf;
    }
    name = ev->name;
    if (prefix && strncmp(name, prefix, strlen(prefix)) == 0)
        name += strlen(prefix);
    for (; name[n] && n + 1 < size; n++)
        buf[n] = (name[n] >= 'A' && name[n] <= 'Z') ? (char)(name[n] - 'A' + 'a') : name[n];
    buf[n] = '\0';
    return buf;
}

/* ---- process metrics ------------------------------------------------------------------ */

/* Reads at most size - 1 bytes of path into buf. Returns the length or -errno. */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -errno;
    do
        n = read(fd, buf, size - 1);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        n = -errno;
    close(fd);
    if (n >= 0)
        buf[n] = '\0';
    return n;
}

/* Seconds since the epoch at which the system booted ("btime" of /proc/stat), or -1. */
static long long boot_time(void)
{
    char line[256];
    long long btime = -1;
    FILE *f = fopen("/proc/stat", "re");

    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %lld", &btime) == 1)
            break;
    fclose(f);
    return btime;
}

/* Open descriptors of this process, the directory's own one not counted; -1 on error. */
static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    long n = 0;
    int self;

    if (!d)
        return -1;
    self = dirfd(d);
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || atoi(de->d_name) == self)
            continue;
        n++;
    }
    closedir(d);
    return n;
}

void prom_process(prom_buf *b)
{
    char stat[PROM_PROC_READ_MAX];
    unsigned long long utime, stime, starttime, vsize;
    long long rss;
    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    long long btime;
    struct rlimit rl;
    const char *p;
    long fds;

    /* Fields 14 utime, 15 stime, 22 starttime, 23 vsize, 24 rss of proc(5); the command
     * name (field 2) may hold spaces and parentheses, so counting starts after its ')'. */
    if (read_small("/proc/self/stat", stat, sizeof stat) > 0 && (p = strrchr(stat, ')')) &&
        ticks > 0 && page > 0 &&
        sscanf(p + 1,
               " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d"
               " %llu %llu %lld",
               &utime, &stime, &starttime, &vsize, &rss) == 5) {
        prom_family(b, "process_cpu_seconds_total", "counter",
                    "Total user and system CPU time spent in seconds.");
        prom_sample(b, "process_cpu_seconds_total", NULL, (double)(utime + stime) / (double)ticks);
        prom_family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        prom_sample_i64(b, "process_resident_memory_bytes", NULL, (int64_t)rss * page);
        prom_family(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        prom_sample_u64(b, "process_virtual_memory_bytes", NULL, vsize);
        if ((btime = boot_time()) >= 0) {
            prom_family(b, "process_start_time_seconds", "gauge",
                        "Start time of the process since unix epoch in seconds.");
            prom_sample(b, "process_start_time_seconds", NULL,
                        (double)btime + (double)starttime / (double)ticks);
        }
    }
    if ((fds = open_fds()) >= 0) {
        prom_family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
        prom_sample_i64(b, "process_open_fds", NULL, fds);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        prom_family(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        prom_sample_u64(b, "process_max_fds", NULL, (uint64_t)rl.rlim_cur);
    }
}
