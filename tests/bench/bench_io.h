/* bench_io: what the benchmark programs share of plain socket I/O. */
#ifndef MCPHUB_BENCH_IO_H
#define MCPHUB_BENCH_IO_H

#include <errno.h>
#include <stddef.h>
#include <unistd.h>

/* Writes all n bytes of p to fd (retrying short writes and EINTR). 0, or -1 on error. */
static inline int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

#endif
