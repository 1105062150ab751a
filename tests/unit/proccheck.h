/* proccheck: what tests check at their end: open descriptors, and processes left behind
 * (children of the test, or members of a process group), read from /proc. Header only:
 * each unit test is its own program; include after cmocka.h. */
#ifndef MCPHUB_TEST_PROCCHECK_H
#define MCPHUB_TEST_PROCCHECK_H

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static inline int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Reads /proc/PID/stat: state, ppid and pgrp. Returns 0 or -1 (process gone). */
static inline int proc_stat(const char *pid, char *state, long *ppid, long *pgrp)
{
    char path[300], buf[1024];
    FILE *f;
    const char *rp;
    size_t n;

    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    if (!(f = fopen(path, "r")))
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields start after the last ')'. */
    if (!(rp = strrchr(buf, ')')) || sscanf(rp + 1, " %c %ld %ld", state, ppid, pgrp) != 3)
        return -1;
    return 0;
}

/* pgid 0: processes whose parent is us, zombies included (unreaped children count).
 * pgid > 0: live members of that process group (orphans are reaped by init, not by us). */
static inline int count_procs(long pgid, bool show)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    long me = (long)getpid(), ppid, pgrp;
    char state;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d))) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9' ||
            proc_stat(de->d_name, &state, &ppid, &pgrp) != 0)
            continue;
        if (pgid > 0 ? pgrp == pgid && state != 'Z' : ppid == me) {
            if (show)
                fprintf(stderr, "  process left: pid %s state %c\n", de->d_name, state);
            n++;
        }
    }
    closedir(d);
    return n;
}

#endif
