/* test_proc: child processes on a libuv loop: output, exit status, spawn errors, stdin,
 * TERM-then-KILL of a whole process group, the environment children get. Each test runs
 * its own loop, is bounded in time, and ends by checking that no child of ours is left
 * (zombies included) and no descriptor leaked. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proccheck.h"
#include "uvloop.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "proc.h"
#include "rpc.h"

#define WAIT_MS 5000

/* ---------------------------------------------------------------- helpers */

typedef struct {
    char out[65536];
    size_t out_len;
    int out_chunks;
    char err[65536];
    size_t err_len;
    int out_eof, err_eof;
    int exits;
    int64_t status;
    int signal;
    int eof_before_exit; /* both streams had ended when on_exit ran */
    int64_t exit_ms;
} capture;

typedef struct {
    uv_loop_t loop;
    uv_timer_t tick;
    int fds_before;
    capture cap;
} fixture;

static void append(char *buf, size_t *len, size_t cap, const char *data, size_t n)
{
    if (n > cap - *len)
        n = cap - *len;
    memcpy(buf + *len, data, n);
    *len += n;
}

static void on_out(void *ud, const char *buf, size_t len)
{
    capture *c = ud;

    if (!buf) {
        c->out_eof++;
        return;
    }
    c->out_chunks++;
    append(c->out, &c->out_len, sizeof c->out - 1, buf, len);
}

static void on_err(void *ud, const char *buf, size_t len)
{
    capture *c = ud;

    if (!buf) {
        c->err_eof++;
        return;
    }
    append(c->err, &c->err_len, sizeof c->err - 1, buf, len);
}

static void on_exit_cb(void *ud, int64_t status, int sig)
{
    capture *c = ud;

    c->exits++;
    c->status = status;
    c->signal = sig;
    c->eof_before_exit = c->out_eof == 1 && c->err_eof == 1;
    c->exit_ms = rpc_now_ms();
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    f->fds_before = count_fds();
    assert_int_equal(uv_loop_init(&f->loop), 0);
    /* The tick keeps uv_run(ONCE) returning so that waits can check their deadline. */
    uv_timer_init(&f->loop, &f->tick);
    uv_timer_start(&f->tick, loop_tick_cb, 10, 10);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    int64_t deadline = rpc_now_ms() + WAIT_MS;
    int left;

    uv_close((uv_handle_t *)&f->tick, loop_noop_close);
    /* Everything the test freed must close by itself: a kill and a reap at most. */
    while (uv_loop_alive(&f->loop) && rpc_now_ms() < deadline) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_false(uv_loop_alive(&f->loop));
    assert_int_equal(uv_loop_close(&f->loop), 0);
    if ((left = count_procs(0, false)) != 0) {
        count_procs(0, true);
        fail_msg("%d child processes left behind", left);
    }
    assert_int_equal(count_fds(), f->fds_before);
    free(f);
    return 0;
}

static proc *spawn_ok(fixture *f, const char *file, const char *const *args, size_t n_args)
{
    proc_opts o;
    proc *p = NULL;

    memset(&o, 0, sizeof o);
    o.file = file;
    o.args = args;
    o.n_args = n_args;
    o.on_stdout = on_out;
    o.on_stderr = on_err;
    o.on_exit = on_exit_cb;
    o.ud = &f->cap;
    assert_int_equal(proc_spawn(&f->loop, &o, &p), 0);
    assert_non_null(p);
    assert_true(proc_pid(p) > 0);
    return p;
}

/* ---------------------------------------------------------------- tests */

static void test_echo(void **state)
{
    fixture *f = *state;
    const char *args[] = {"hi"};
    proc *p = spawn_ok(f, "/bin/echo", args, 1);

    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    assert_int_equal(f->cap.status, 0);
    assert_int_equal(f->cap.signal, 0);
    assert_int_equal(f->cap.out_len, 3);
    assert_memory_equal(f->cap.out, "hi\n", 3);
    assert_int_equal(f->cap.err_len, 0);
    assert_true(f->cap.eof_before_exit);
    assert_true(proc_exited(p));
    assert_int_equal(proc_pid(p), 0);
    assert_int_equal(proc_write(p, "x", 1), -EPIPE);
    assert_int_equal(proc_stop(p, 100), -ESRCH);
    proc_free(p);
    loop_run_for(&f->loop, 50);
    assert_int_equal(f->cap.exits, 1);
}

static void test_exit_status(void **state)
{
    fixture *f = *state;
    const char *args[] = {"-c", "exit 3"};
    proc *p = spawn_ok(f, "/bin/sh", args, 2);

    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    assert_int_equal(f->cap.status, 3);
    assert_int_equal(f->cap.signal, 0);
    proc_free(p);
}

static void test_killed_by_signal(void **state)
{
    fixture *f = *state;
    const char *args[] = {"-c", "kill -SEGV $$"};
    proc *p = spawn_ok(f, "/bin/sh", args, 2);

    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    assert_int_equal(f->cap.status, 0);
    assert_int_equal(f->cap.signal, SIGSEGV);
    proc_free(p);
}

static void spawn_fails(fixture *f, const char *file, const char *cwd, int want)
{
    proc_opts o;
    proc *p = (proc *)1;

    memset(&o, 0, sizeof o);
    o.file = file;
    o.cwd = cwd;
    o.on_stdout = on_out;
    o.on_stderr = on_err;
    o.on_exit = on_exit_cb;
    o.ud = &f->cap;
    assert_int_equal(proc_spawn(&f->loop, &o, &p), want);
    assert_null(p);
}

static void test_spawn_errors(void **state)
{
    fixture *f = *state;

    spawn_fails(f, "mcphub-no-such-command", NULL, -ENOENT);   /* PATH lookup, in the parent */
    spawn_fails(f, "/nonexistent/mcphub-cmd", NULL, -ENOENT);  /* execve, reported by the child */
    spawn_fails(f, "/etc/passwd", NULL, -EACCES);              /* not executable */
    spawn_fails(f, "/bin/true", "/nonexistent-dir", -ENOENT);  /* chdir in the child */
    spawn_fails(f, "", NULL, -ENOENT);
    /* A failed spawn never calls back. */
    loop_run_for(&f->loop, 100);
    assert_int_equal(f->cap.exits, 0);
    assert_int_equal(f->cap.out_eof + f->cap.err_eof, 0);
}

static void test_stderr(void **state)
{
    fixture *f = *state;
    const char *args[] = {"-c", "echo out; echo oops >&2; exit 0"};
    proc *p = spawn_ok(f, "/bin/sh", args, 2);

    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    f->cap.out[f->cap.out_len] = '\0';
    f->cap.err[f->cap.err_len] = '\0';
    assert_string_equal(f->cap.out, "out\n");
    assert_string_equal(f->cap.err, "oops\n");
    proc_free(p);
}

static void test_cat_roundtrip(void **state)
{
    fixture *f = *state;
    proc_opts o;
    proc *p = NULL;

    memset(&o, 0, sizeof o);
    o.file = "cat"; /* found through the child's PATH */
    o.on_stdout = on_out;
    o.on_stderr = on_err;
    o.on_exit = on_exit_cb;
    o.ud = &f->cap;
    o.max_write_queue = 64;
    assert_int_equal(proc_spawn(&f->loop, &o, &p), 0);
    assert_int_equal(proc_write(p, "hello\n", 6), 0);
    assert_int_equal(proc_write(p, "world\n", 6), 0);
    /* Over the queue limit: refused whole, nothing queued. */
    {
        char big[65];

        memset(big, 'x', sizeof big);
        assert_int_equal(proc_write(p, big, sizeof big), -ENOBUFS);
    }
    loop_run_for(&f->loop, 100);
    assert_int_equal(proc_write_queued(p), 0);
    f->cap.out[f->cap.out_len] = '\0';
    assert_string_equal(f->cap.out, "hello\nworld\n");
    assert_int_equal(f->cap.exits, 0);
    assert_int_equal(proc_write(p, "bye\n", 4), 0);
    proc_close_stdin(p);
    assert_int_equal(proc_write(p, "late\n", 5), -EPIPE);
    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    f->cap.out[f->cap.out_len] = '\0';
    assert_string_equal(f->cap.out, "hello\nworld\nbye\n");
    assert_int_equal(f->cap.status, 0);
    proc_free(p);
}

static void test_stop_term_ignored(void **state)
{
    fixture *f = *state;
    const char *args[] = {"-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"};
    proc *p = spawn_ok(f, "/bin/sh", args, 2);
    pid_t pgid = proc_pid(p);
    int64_t t0;

    /* Wait until the trap is set (the shell said so) and a sleep runs in the group. */
    assert_true(loop_run_until(&f->loop, &f->cap.out_chunks, 1, WAIT_MS));
    loop_run_for(&f->loop, 150);
    assert_true(count_procs(pgid, false) >= 2);
    t0 = rpc_now_ms();
    assert_int_equal(proc_stop(p, 300), 0);
    assert_int_equal(proc_write(p, "x", 1), -EPIPE);
    loop_run_for(&f->loop, 150);
    assert_int_equal(f->cap.exits, 0); /* TERM was ignored */
    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    assert_true(f->cap.exit_ms - t0 >= 280);
    assert_true(f->cap.exit_ms - t0 < 2000);
    assert_int_equal(f->cap.signal, SIGKILL);
    /* The sleeps were in the group: KILLed with it. */
    for (int i = 0; i < 100 && count_procs(pgid, false) > 0; i++)
        usleep(10000);
    assert_int_equal(count_procs(pgid, false), 0);
    proc_free(p);
}

static void test_stop_graceful(void **state)
{
    fixture *f = *state;
    const char *args[] = {"100"};
    proc *p = spawn_ok(f, "/bin/sleep", args, 1);
    int64_t t0 = rpc_now_ms();

    assert_int_equal(proc_stop(p, 5000), 0);
    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    assert_true(rpc_now_ms() - t0 < 1000);
    assert_int_equal(f->cap.signal, SIGTERM);
    proc_free(p);
}

static void test_shutdown_by_stdin(void **state)
{
    fixture *f = *state;
    proc *p = spawn_ok(f, "/bin/cat", NULL, 0);
    int64_t t0 = rpc_now_ms();

    /* The MCP way: stdin closes, the child leaves by itself before any signal is due. */
    assert_int_equal(proc_write(p, "dropped?\n", 9), 0);
    assert_int_equal(proc_shutdown(p, 1000, 2000), 0);
    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    assert_true(rpc_now_ms() - t0 < 900);
    assert_int_equal(f->cap.status, 0);
    assert_int_equal(f->cap.signal, 0);
    proc_free(p);
}

static void test_leader_exit_kills_group(void **state)
{
    fixture *f = *state;
    /* The background sleep inherits stdout; the group kill at the leader's exit ends it, so
     * on_exit comes at once instead of after the drain period. */
    const char *args[] = {"-c", "sleep 100 & exit 5"};
    proc *p = spawn_ok(f, "/bin/sh", args, 2);
    pid_t pgid = proc_pid(p);
    int64_t t0 = rpc_now_ms();

    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    assert_int_equal(f->cap.status, 5);
    assert_true(rpc_now_ms() - t0 < PROC_DRAIN_MS);
    assert_true(f->cap.eof_before_exit);
    for (int i = 0; i < 100 && count_procs(pgid, false) > 0; i++)
        usleep(10000);
    assert_int_equal(count_procs(pgid, false), 0);
    proc_free(p);
}

static void test_escaped_holder(void **state)
{
    fixture *f = *state;
    /* A grandchild in another session keeps stdout open after the leader exits: on_exit
     * still comes, PROC_DRAIN_MS later, after both streams were ended for the reader. */
    const char *args[] = {"-c", "setsid sleep 1 & sleep 0.3; exit 4"};
    proc *p = spawn_ok(f, "/bin/sh", args, 2);
    int64_t t0 = rpc_now_ms();

    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    assert_int_equal(f->cap.status, 4);
    assert_true(f->cap.eof_before_exit);
    assert_true(rpc_now_ms() - t0 >= 300 + PROC_DRAIN_MS - 50);
    assert_true(rpc_now_ms() - t0 < 2500);
    proc_free(p);
}

static void test_free_running(void **state)
{
    fixture *f = *state;
    const char *args[] = {"100"};
    proc *p = spawn_ok(f, "/bin/sleep", args, 1);

    /* Freed while running: killed and reaped in the background, no callback. */
    proc_free(p);
    loop_run_for(&f->loop, 200);
    assert_int_equal(f->cap.exits, 0);
    assert_int_equal(f->cap.out_eof, 0);
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *s = text; s && *s; s = strchr(s, '\n'), s = s ? s + 1 : NULL)
        if (strncmp(s, line, n) == 0 && (s[n] == '\n' || s[n] == '\0'))
            return true;
    return false;
}

static void test_environment(void **state)
{
    fixture *f = *state;
    static const char *const allowed[] = {"HOME=", "LOGNAME=", "PATH=", "SHELL=", "TERM=",
                                          "USER=", "FOO="};
    proc_env env[] = {{"FOO", "bar baz"}, {"HOME", "/tmp/mcphub-home"}};
    char *saved_term = getenv("TERM") ? strdup(getenv("TERM")) : NULL;
    proc_opts o;
    proc *p = NULL;

    setenv("MCPHUB_TEST_SECRET", "do-not-pass", 1);
    setenv("USER", "mcphub-user", 1);
    setenv("TERM", "() { :; }; echo pwned", 1); /* a shell function: never passed */
    memset(&o, 0, sizeof o);
    o.file = "/usr/bin/env";
    o.env = env;
    o.n_env = 2;
    o.on_stdout = on_out;
    o.on_stderr = on_err;
    o.on_exit = on_exit_cb;
    o.ud = &f->cap;
    assert_int_equal(proc_spawn(&f->loop, &o, &p), 0);
    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    f->cap.out[f->cap.out_len] = '\0';
    assert_true(has_line(f->cap.out, "FOO=bar baz"));
    assert_true(has_line(f->cap.out, "HOME=/tmp/mcphub-home")); /* configured wins */
    assert_true(has_line(f->cap.out, "USER=mcphub-user"));
    assert_null(strstr(f->cap.out, "MCPHUB_TEST_SECRET"));
    assert_null(strstr(f->cap.out, "TERM="));
    assert_non_null(strstr(f->cap.out, "PATH="));
    for (const char *s = f->cap.out; *s;) {
        const char *nl = strchr(s, '\n');
        bool ok = false;

        for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
            ok = ok || strncmp(s, allowed[i], strlen(allowed[i])) == 0;
        if (!ok)
            fail_msg("unexpected variable passed: %.*s", nl ? (int)(nl - s) : (int)strlen(s), s);
        if (!nl)
            break;
        s = nl + 1;
    }
    proc_free(p);
    unsetenv("MCPHUB_TEST_SECRET");
    if (saved_term)
        setenv("TERM", saved_term, 1);
    else
        unsetenv("TERM");
    free(saved_term);
}

static void test_path_from_child_env(void **state)
{
    fixture *f = *state;
    proc_env env[] = {{"PATH", "/nonexistent-bin"}};
    proc_env bad[] = {{"A=B", "x"}};
    proc_opts o;
    proc *p = NULL;

    memset(&o, 0, sizeof o);
    o.file = "sh";
    o.env = env;
    o.n_env = 1;
    assert_int_equal(proc_spawn(&f->loop, &o, &p), -ENOENT);
    o.env = bad;
    assert_int_equal(proc_spawn(&f->loop, &o, &p), -EINVAL);
    assert_null(p);
}

static void test_signals_reset(void **state)
{
    fixture *f = *state;
    /* SIGPIPE is ignored here (proc_spawn made sure); the child must get the default back:
     * `yes` dies of SIGPIPE quietly when head has read enough (ignored, it would complain
     * about EPIPE on stderr). Signal mask: SigBlk must be 0. */
    const char *args[] = {"-c", "yes | head -n 1; grep -E '^(SigBlk|SigIgn)' /proc/self/status"};
    proc *p;
    struct sigaction sa;

    p = spawn_ok(f, "/bin/sh", args, 2);
    assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
    assert_true(sa.sa_handler == SIG_IGN);
    assert_true(loop_run_until(&f->loop, &f->cap.exits, 1, WAIT_MS));
    f->cap.out[f->cap.out_len] = '\0';
    assert_non_null(strstr(f->cap.out, "y\n"));
    assert_non_null(strstr(f->cap.out, "SigBlk:\t0000000000000000"));
    assert_int_equal(f->cap.err_len, 0);
    assert_int_equal(f->cap.status, 0);
    proc_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_by_signal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spawn_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stderr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cat_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_term_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_graceful, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_by_stdin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leader_exit_kills_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaped_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_from_child_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signals_reset, setup, teardown),
    };

    uv_loop_t warm;

    alarm(120); /* the whole program is bounded even if a wait above is wrong */
    /* libuv opens its process-wide signal pipe with the first loop and keeps it: open it
     * before the tests count descriptors. */
    uv_loop_init(&warm);
    uv_loop_close(&warm);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
