/* capture: what a test's code logs to stderr, read back as text. Header only: each unit
 * test is its own program. Needs cmocka (included before this header). */
#ifndef MCPHUB_TEST_CAPTURE_H
#define MCPHUB_TEST_CAPTURE_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct capture {
    int saved;
    char path[64];
} capture;

/* Sends stderr to a file until capture_end. */
static inline void capture_begin(capture *c)
{
    int fd;

    snprintf(c->path, sizeof c->path, "/tmp/mcphub_test_log.%d", (int)getpid());
    fflush(stderr);
    c->saved = dup(2);
    assert_true(c->saved >= 0);
    fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    close(fd);
}

/* Restores stderr and returns what was logged (malloc'd, also echoed to the real stderr
 * when MCPHUB_TEST_VERBOSE is set). */
static inline char *capture_end(capture *c)
{
    struct stat st;
    char *text;
    FILE *f;
    size_t n;

    fflush(stderr);
    assert_int_equal(dup2(c->saved, 2), 2);
    close(c->saved);
    assert_int_equal(stat(c->path, &st), 0);
    text = malloc((size_t)st.st_size + 1);
    assert_non_null(text);
    f = fopen(c->path, "r");
    assert_non_null(f);
    n = fread(text, 1, (size_t)st.st_size, f);
    fclose(f);
    text[n] = '\0';
    unlink(c->path);
    if (getenv("MCPHUB_TEST_VERBOSE"))
        fputs(text, stderr);
    return text;
}

#endif
