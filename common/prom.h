/* prom: Prometheus text exposition format 0.0.4 written into a bounded buffer: HELP and
 * TYPE lines, samples with escaped label values, cumulative histograms, and the standard
 * process_* metrics read from /proc/self. Both daemons' /metrics use it. */
#ifndef MCPHUB_PROM_H
#define MCPHUB_PROM_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define PROM_DEFAULT_MAX (8u << 20) /* bytes of one exposition */

/* A growable text buffer with a maximum. Not thread-safe: one writer. */
typedef struct {
    char *data; /* NUL-terminated; NULL until something is written */
    size_t len;
    size_t cap;
    size_t max;
    bool over; /* a write would have passed max: it and every later one were dropped */
} prom_buf;

/* Prepares an empty buffer of at most max bytes (0 = PROM_DEFAULT_MAX). */
void prom_buf_init(prom_buf *b, size_t max);

/* Frees the storage; the buffer may be initialized again. */
void prom_buf_cleanup(prom_buf *b);

/* Appends formatted text as is (no escaping). OOM aborts; past max, sets b->over. */
void prom_printf(prom_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends the raw bytes of another exposition (e.g. one rendered on another thread). */
void prom_append(prom_buf *b, const char *text, size_t len);

/* Writes "# HELP name help" (help escaped: backslash and newline) and "# TYPE name type".
 * type is "counter", "gauge", "histogram" or "untyped"; name must be a valid metric name
 * (our own constant, never peer input). */
void prom_family(prom_buf *b, const char *name, const char *type, const char *help);

/* Writes one sample line "name{l1="v1",...} value". labels is NULL or a NULL-terminated
 * list of label name, label value pairs; values are escaped (backslash, double quote,
 * newline), a NULL value is written as "". */
void prom_sample(prom_buf *b, const char *name, const char *const *labels, double value);
void prom_sample_u64(prom_buf *b, const char *name, const char *const *labels, uint64_t value);
void prom_sample_i64(prom_buf *b, const char *name, const char *const *labels, int64_t value);

/* Writes the samples of one histogram series (its family line is written separately):
 * name_bucket for each of the n upper bounds (ascending, in the unit of the metric) and for
 * +Inf, cumulative, then name_sum and name_count. counts has n + 1 entries: counts[i] the
 * observations in (bounds[i-1], bounds[i]], counts[n] those above every bound; they are not
 * cumulative. _count is their total, so the +Inf bucket always equals it. */
void prom_histogram(prom_buf *b, const char *name, const char *const *labels,
                    const double *bounds, const uint64_t *counts, size_t n, double sum);

/* Formats v as Prometheus reads it: shortest text that reads back exactly, "+Inf", "-Inf"
 * or "NaN". Returns buf. size >= 32. */
char *prom_format_double(double v, char *buf, size_t size);

/* Writes the label value of a protobuf enum value into buf: its name without prefix, in
 * lower case ("END_REASON_CLIENT_DELETE" with prefix "END_REASON_" is "client_delete"), or
 * the number when desc does not know it. Returns buf. */
char *prom_enum_label(const ProtobufCEnumDescriptor *desc, int value, const char *prefix,
                      char *buf, size_t size);

/* Writes the process_* families of the calling process from /proc/self: cpu seconds,
 * resident and virtual memory, open and maximum descriptors, start time. A value that
 * cannot be read is left out with its family. Any thread; a few small /proc reads. */
void prom_process(prom_buf *b);

#endif
