/* proc: child processes on a libuv loop (see proc.h). fork/exec is done by hand because
 * uv_spawn cannot set PR_SET_PDEATHSIG; everything the child needs (argv, envp, the resolved
 * path) is built before fork so that the child only makes async-signal-safe calls. Exit is
 * noticed through a uv_signal_t on SIGCHLD and waitid on our own pid only: other code's
 * children are never reaped here. */
#include "proc.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define PROC_READ_BYTES 65536
#define PROC_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"
#define PROC_PATH_MAX 4096
#define PROC_FD_SCAN_MAX 65536 /* fallback close-on-exec sweep when close_range is missing */

enum { PROC_IN = 0, PROC_OUT = 1, PROC_ERR = 2 };

/* What the child reports when it cannot exec: which step failed and its errno. */
enum { PROC_STAGE_SETUP = 1, PROC_STAGE_CHDIR = 2, PROC_STAGE_EXEC = 3 };
typedef struct proc_report {
    int stage;
    int err;
} proc_report;

struct proc {
    uv_loop_t *loop;
    pid_t pid;              /* kept after reaping for logs; `reaped` says if it is still ours */
    bool reaped;            /* waitpid collected it: the pid (and group id) may be reused */
    bool exit_reported;
    bool freed;             /* proc_free ran: no more callbacks; free after the last close */
    bool term_sent, kill_sent;
    bool stdin_closing;     /* close stdin once the queue drains */
    bool drain_expired;
    bool pipe_open[3];      /* pipe handle initialized and uv_close not yet called */
    uv_pipe_t pipes[3];
    uv_signal_t sigchld;
    uv_timer_t kill_timer;
    uv_timer_t drain_timer;
    int open_handles;       /* initialized handles whose close callback has not run */
    uint64_t term_due;      /* uv_now() when SIGTERM goes to the group; 0: not planned */
    uint64_t kill_due;      /* the same for SIGKILL */
    size_t queued;
    size_t max_queue;
    int64_t exit_status;
    int term_signal;
    proc_read_fn on_stdout;
    proc_read_fn on_stderr;
    proc_exit_fn on_exit;
    void *ud;
    char rbuf[PROC_READ_BYTES]; /* reads are synchronous: one buffer serves both streams */
};

typedef struct proc_wreq {
    uv_write_t req;
    proc *p;
    size_t len;
    char data[];
} proc_wreq;

/* Everything the child uses, prepared in the parent. */
typedef struct proc_child_args {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int fd_in, fd_out, fd_err;
    int report_fd;
    pid_t parent;
    int fd_scan_max;
} proc_child_args;

/* ------------------------------------------------------------------ child side */

static void proc_child_report(int fd, int stage, int err)
{
    proc_report rep = {stage, err};
    const char *p = (const char *)&rep;
    size_t left = sizeof rep;

    while (left > 0) {
        ssize_t n = write(fd, p, left);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        p += n;
        left -= (size_t)n;
    }
    _exit(127);
}

/* Runs between fork and exec: async-signal-safe calls only, no malloc, no locks. */
__attribute__((noreturn)) static void proc_child(const proc_child_args *a)
{
    struct sigaction sa;
    sigset_t none;

    /* Own process group, so that the whole tree of a server can be signalled at once. */
    if (setpgid(0, 0) < 0)
        proc_child_report(a->report_fd, PROC_STAGE_SETUP, errno);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        proc_child_report(a->report_fd, PROC_STAGE_SETUP, errno);
    /* The parent may have died before the prctl took effect: then nobody would kill us. */
    if (getppid() != a->parent)
        _exit(127);
    if (dup2(a->fd_in, 0) < 0 || dup2(a->fd_out, 1) < 0 || dup2(a->fd_err, 2) < 0)
        proc_child_report(a->report_fd, PROC_STAGE_SETUP, errno);
    /* Descriptors other code opened without O_CLOEXEC must not leak into the server. */
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
        for (int fd = 3; fd < a->fd_scan_max; fd++) {
            int flags = fcntl(fd, F_GETFD);

            if (flags >= 0 && !(flags & FD_CLOEXEC))
                (void)fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
        }
    }
    /* Dispositions the daemon changed (SIGPIPE ignored, libuv's handlers) go back to the
     * defaults; ignored signals would otherwise survive exec. The parent blocked every
     * signal around fork, so no handler of the daemon can run in here. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)sigaction(sig, &sa, NULL);
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);
    if (a->cwd && chdir(a->cwd) < 0)
        proc_child_report(a->report_fd, PROC_STAGE_CHDIR, errno);
    execve(a->path, a->argv, a->envp);
    proc_child_report(a->report_fd, PROC_STAGE_EXEC, errno);
    _exit(127); /* not reached */
}

/* ------------------------------------------------------------------ preparation */

static void proc_strv_free(char **v)
{
    if (!v)
        return;
    for (char **s = v; *s; s++)
        free(*s);
    free(v);
}

static char *proc_strdup(const char *s)
{
    char *d = strdup(s);

    if (!d)
        abort();
    return d;
}

static char *proc_kv(const char *name, size_t name_len, const char *value)
{
    size_t vlen = strlen(value);
    char *s = malloc(name_len + vlen + 2);

    if (!s)
        abort();
    memcpy(s, name, name_len);
    s[name_len] = '=';
    memcpy(s + name_len + 1, value, vlen + 1);
    return s;
}

static bool proc_env_overridden(const proc_opts *o, const char *name, size_t len)
{
    for (size_t i = 0; i < o->n_env; i++)
        if (strlen(o->env[i].name) == len && memcmp(o->env[i].name, name, len) == 0)
            return true;
    return false;
}

/* Builds the child's environment (new array of new strings, NULL-terminated). */
static int proc_env_build(const proc_opts *o, char ***out)
{
    static const char *const inherited[] = PROC_INHERITED_ENV;
    size_t n_inherited = sizeof inherited / sizeof inherited[0];
    size_t cap = n_inherited + o->n_env + 1, n = 0;
    char **envp;

    *out = NULL;
    for (size_t i = 0; i < o->n_env; i++) {
        const char *name = o->env[i].name;

        if (!name || !name[0] || strchr(name, '=') || !o->env[i].value)
            return -EINVAL;
    }
    if (o->inherit_all_env)
        for (char **e = environ; e && *e; e++)
            cap++;
    envp = calloc(cap, sizeof *envp);
    if (!envp)
        abort();
    if (o->inherit_all_env) {
        for (char **e = environ; e && *e; e++) {
            const char *eq = strchr(*e, '=');

            if (!eq || eq == *e || proc_env_overridden(o, *e, (size_t)(eq - *e)))
                continue;
            envp[n++] = proc_strdup(*e);
        }
    } else {
        for (size_t i = 0; i < n_inherited; i++) {
            const char *value = getenv(inherited[i]);
            size_t len = strlen(inherited[i]);

            /* Shell functions exported as "() { ... }" are a known injection path. */
            if (!value || strncmp(value, "()", 2) == 0 ||
                proc_env_overridden(o, inherited[i], len))
                continue;
            envp[n++] = proc_kv(inherited[i], len, value);
        }
    }
    for (size_t i = 0; i < o->n_env; i++)
        envp[n++] = proc_kv(o->env[i].name, strlen(o->env[i].name), o->env[i].value);
    envp[n] = NULL;
    *out = envp;
    return 0;
}

static const char *proc_env_get(char *const *envp, const char *name)
{
    size_t len = strlen(name);

    for (; *envp; envp++)
        if (strncmp(*envp, name, len) == 0 && (*envp)[len] == '=')
            return *envp + len + 1;
    return NULL;
}

/* Resolves file the way execvp would, but in the parent and with the child's PATH. A
 * relative PATH entry is taken from the child's cwd, where the exec will happen. */
static int proc_resolve(const char *file, const char *path_env, const char *cwd, char **out)
{
    char cand[PROC_PATH_MAX], check[PROC_PATH_MAX];
    const char *dir = path_env ? path_env : PROC_DEFAULT_PATH;
    bool denied = false;

    *out = NULL;
    if (!file[0])
        return -ENOENT;
    if (strchr(file, '/')) {
        *out = proc_strdup(file);
        return 0;
    }
    for (;;) {
        const char *end = strchr(dir, ':');
        size_t dlen = end ? (size_t)(end - dir) : strlen(dir);
        struct stat st;
        int w;

        /* An empty entry means the current directory (POSIX's legacy rule). */
        w = dlen ? snprintf(cand, sizeof cand, "%.*s/%s", (int)dlen, dir, file)
                 : snprintf(cand, sizeof cand, "./%s", file);
        if (w > 0 && (size_t)w < sizeof cand) {
            if (cand[0] != '/' && cwd)
                w = snprintf(check, sizeof check, "%s/%s", cwd, cand);
            else
                w = snprintf(check, sizeof check, "%s", cand);
            if (w > 0 && (size_t)w < sizeof check && stat(check, &st) == 0 &&
                S_ISREG(st.st_mode)) {
                if (access(check, X_OK) == 0) {
                    *out = proc_strdup(cand);
                    return 0;
                }
                denied = true;
            }
        }
        if (!end)
            break;
        dir = end + 1;
    }
    return denied ? -EACCES : -ENOENT;
}

static char **proc_argv_build(const proc_opts *o)
{
    char **argv = calloc(o->n_args + 2, sizeof *argv);

    if (!argv)
        abort();
    argv[0] = proc_strdup(o->file);
    for (size_t i = 0; i < o->n_args; i++)
        argv[i + 1] = proc_strdup(o->args[i] ? o->args[i] : "");
    return argv;
}

/* Moves a descriptor the child will dup2 onto 0..2 above 2, so that one dup2 never
 * overwrites another's source (only happens when the daemon runs with 0..2 closed). */
static int proc_fd_above_2(int *fd)
{
    int nfd;

    if (*fd > 2)
        return 0;
    if ((nfd = fcntl(*fd, F_DUPFD_CLOEXEC, 3)) < 0)
        return -errno;
    close(*fd);
    *fd = nfd;
    return 0;
}

static int proc_fd_scan_max(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > PROC_FD_SCAN_MAX)
        return PROC_FD_SCAN_MAX;
    return (int)rl.rlim_cur;
}

static void proc_ignore_sigpipe_once(void)
{
    static bool done;
    struct sigaction sa;

    if (done)
        return;
    done = true;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
        !(sa.sa_flags & SA_SIGINFO))
        signal(SIGPIPE, SIG_IGN);
}

/* ------------------------------------------------------------------ handles and closing */

static void proc_on_close(uv_handle_t *h)
{
    proc *p = h->data;

    if (--p->open_handles == 0 && p->freed)
        free(p);
}

static void proc_close_handle(proc *p, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, proc_on_close);
}

static void proc_close_pipe(proc *p, int which)
{
    if (!p->pipe_open[which])
        return;
    p->pipe_open[which] = false;
    proc_close_handle(p, (uv_handle_t *)&p->pipes[which]);
}

static void proc_close_all(proc *p)
{
    for (int i = 0; i < 3; i++)
        proc_close_pipe(p, i);
    proc_close_handle(p, (uv_handle_t *)&p->sigchld);
    proc_close_handle(p, (uv_handle_t *)&p->kill_timer);
    proc_close_handle(p, (uv_handle_t *)&p->drain_timer);
}

/* ------------------------------------------------------------------ exit */

static void proc_on_drain_timer(uv_timer_t *t);

static void proc_maybe_finish(proc *p)
{
    proc_exit_fn fn;

    if (!p->reaped || p->exit_reported || p->freed)
        return;
    if ((p->pipe_open[PROC_OUT] || p->pipe_open[PROC_ERR]) && !p->drain_expired) {
        if (!uv_is_active((uv_handle_t *)&p->drain_timer))
            uv_timer_start(&p->drain_timer, proc_on_drain_timer, PROC_DRAIN_MS, 0);
        return;
    }
    p->exit_reported = true;
    uv_timer_stop(&p->drain_timer);
    fn = p->on_exit;
    if (fn)
        fn(p->ud, p->exit_status, p->term_signal);
}

/* Ends one output stream: closes it and tells the reader, once. */
static void proc_end_stream(proc *p, int which)
{
    proc_read_fn fn;

    if (!p->pipe_open[which])
        return;
    proc_close_pipe(p, which);
    fn = which == PROC_OUT ? p->on_stdout : p->on_stderr;
    if (fn && !p->freed)
        fn(p->ud, NULL, 0);
}

static void proc_on_drain_timer(uv_timer_t *t)
{
    proc *p = t->data;

    /* Some other process (an escaped grandchild) still holds the pipes: stop waiting. */
    p->drain_expired = true;
    proc_end_stream(p, PROC_OUT);
    proc_end_stream(p, PROC_ERR);
    proc_maybe_finish(p);
}

static void proc_check_exit(proc *p)
{
    siginfo_t si;
    int status = 0, rc;
    pid_t r;

    if (p->reaped)
        return;
    memset(&si, 0, sizeof si);
    do
        rc = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT);
    while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno != ECHILD)
        return;
    if (rc == 0 && si.si_pid == 0)
        return; /* still running */
    if (rc < 0) {
        log_warn("child reaped by someone else", "pid=%d", (int)p->pid);
        p->exit_status = -1;
        p->term_signal = 0;
    } else {
        /* The leader is a zombie: its pid, which is the group id, cannot be reused until we
         * reap it, so killing the group is safe now. What is left in the group are helpers
         * of a server that is gone. */
        (void)kill(-p->pid, SIGKILL);
        do
            r = waitpid(p->pid, &status, WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r == p->pid && WIFEXITED(status)) {
            p->exit_status = WEXITSTATUS(status);
            p->term_signal = 0;
        } else if (r == p->pid && WIFSIGNALED(status)) {
            p->exit_status = 0;
            p->term_signal = WTERMSIG(status);
        } else {
            p->exit_status = -1;
            p->term_signal = 0;
        }
    }
    p->reaped = true;
    uv_signal_stop(&p->sigchld);
    uv_timer_stop(&p->kill_timer);
    proc_close_pipe(p, PROC_IN);
    if (p->freed) {
        proc_close_all(p);
        return;
    }
    proc_maybe_finish(p);
}

static void proc_on_sigchld(uv_signal_t *h, int signum)
{
    (void)signum;
    proc_check_exit(h->data);
}

static void proc_on_stop_timer(uv_timer_t *t);

/* Sends the signals of a shutdown that are due and arms the timer for the next one. */
static void proc_stop_step(proc *p, bool from_timer)
{
    uint64_t now = uv_now(p->loop), next = 0;

    if (p->reaped)
        return;
    if (!p->kill_sent && p->kill_due && p->kill_due <= now) {
        if (from_timer)
            log_info("child did not stop in time: killing its process group", "pid=%d",
                     (int)p->pid);
        (void)kill(-p->pid, SIGKILL);
        p->kill_sent = true;
    }
    if (!p->term_sent && !p->kill_sent && p->term_due && p->term_due <= now) {
        (void)kill(-p->pid, SIGTERM);
        p->term_sent = true;
    }
    if (!p->term_sent && !p->kill_sent && p->term_due)
        next = p->term_due;
    if (!p->kill_sent && p->kill_due && (!next || p->kill_due < next))
        next = p->kill_due;
    if (next)
        uv_timer_start(&p->kill_timer, proc_on_stop_timer, next - now, 0);
    else
        uv_timer_stop(&p->kill_timer);
}

static void proc_on_stop_timer(uv_timer_t *t)
{
    proc_stop_step(t->data, true);
}

/* ------------------------------------------------------------------ reading */

static void proc_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    proc *p = h->data;

    (void)suggested;
    *buf = uv_buf_init(p->rbuf, sizeof p->rbuf);
}

static void proc_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    proc *p = s->data;
    int which = s == (uv_stream_t *)&p->pipes[PROC_OUT] ? PROC_OUT : PROC_ERR;
    proc_read_fn fn = which == PROC_OUT ? p->on_stdout : p->on_stderr;

    if (nread > 0) {
        if (fn && !p->freed)
            fn(p->ud, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return; /* EAGAIN */
    if (nread != UV_EOF)
        log_debug("child output read failed", "pid=%d error=\"%s\"", (int)p->pid,
                  uv_strerror((int)nread));
    proc_end_stream(p, which);
    proc_maybe_finish(p);
}

/* ------------------------------------------------------------------ writing */

static void proc_on_write(uv_write_t *req, int status)
{
    proc_wreq *wr = (proc_wreq *)req;
    proc *p = wr->p;

    p->queued -= wr->len;
    free(wr);
    if (status < 0 && status != UV_ECANCELED) {
        /* Usually EPIPE: the child closed its stdin or died. Its exit is reported apart. */
        log_debug("child stdin write failed", "pid=%d error=\"%s\"", (int)p->pid,
                  uv_strerror(status));
        proc_close_pipe(p, PROC_IN);
        return;
    }
    if (p->stdin_closing && p->queued == 0)
        proc_close_pipe(p, PROC_IN);
}

int proc_writev(proc *p, const struct iovec *iov, size_t n_iov)
{
    size_t total = 0, off = 0;
    proc_wreq *wr;
    uv_buf_t buf;
    int rc;

    if (p->freed || !p->pipe_open[PROC_IN] || p->stdin_closing)
        return -EPIPE;
    for (size_t i = 0; i < n_iov; i++) {
        if (iov[i].iov_len > p->max_queue - total)
            return -ENOBUFS;
        total += iov[i].iov_len;
    }
    if (total > p->max_queue - p->queued)
        return -ENOBUFS;
    if (total == 0)
        return 0;
    wr = malloc(sizeof *wr + total);
    if (!wr)
        abort();
    wr->p = p;
    wr->len = total;
    for (size_t i = 0; i < n_iov; i++) {
        memcpy(wr->data + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    buf = uv_buf_init(wr->data, (unsigned int)total);
    rc = uv_write(&wr->req, (uv_stream_t *)&p->pipes[PROC_IN], &buf, 1, proc_on_write);
    if (rc < 0) {
        free(wr);
        return rc;
    }
    p->queued += total;
    return 0;
}

int proc_write(proc *p, const char *buf, size_t len)
{
    struct iovec iov = {(void *)(uintptr_t)buf, len};

    return proc_writev(p, &iov, 1);
}

size_t proc_write_queued(const proc *p)
{
    return p->queued;
}

void proc_close_stdin(proc *p)
{
    if (!p->pipe_open[PROC_IN] || p->stdin_closing)
        return;
    p->stdin_closing = true;
    if (p->queued == 0)
        proc_close_pipe(p, PROC_IN);
}

/* ------------------------------------------------------------------ control */

int proc_kill(proc *p, int sig)
{
    if (p->reaped)
        return -ESRCH;
    if (kill(-p->pid, sig) < 0)
        return -errno;
    return 0;
}

int proc_shutdown(proc *p, int64_t term_after_ms, int64_t kill_after_ms)
{
    uint64_t now, term, kill_at;

    if (p->reaped)
        return -ESRCH;
    proc_close_pipe(p, PROC_IN);
    now = uv_now(p->loop);
    term = now + (uint64_t)(term_after_ms > 0 ? term_after_ms : 0);
    kill_at = now + (uint64_t)(kill_after_ms > 0 ? kill_after_ms : 0);
    /* A later call may only bring the signals forward. */
    if (!p->term_due || term < p->term_due)
        p->term_due = term;
    if (!p->kill_due || kill_at < p->kill_due)
        p->kill_due = kill_at;
    proc_stop_step(p, false);
    return 0;
}

int proc_stop(proc *p, int64_t grace_ms)
{
    return proc_shutdown(p, 0, grace_ms);
}

pid_t proc_pid(const proc *p)
{
    return p->reaped ? 0 : p->pid;
}

bool proc_exited(const proc *p)
{
    return p->reaped;
}

void proc_free(proc *p)
{
    if (!p || p->freed)
        return;
    p->freed = true;
    p->on_stdout = p->on_stderr = NULL;
    p->on_exit = NULL;
    if (p->reaped) {
        proc_close_all(p);
        return;
    }
    /* Still running: kill the group; the SIGCHLD watcher stays until it is reaped, then
     * proc_check_exit closes the rest. */
    (void)kill(-p->pid, SIGKILL);
    for (int i = 0; i < 3; i++)
        proc_close_pipe(p, i);
    uv_timer_stop(&p->kill_timer);
    uv_timer_stop(&p->drain_timer);
    proc_check_exit(p);
}

/* ------------------------------------------------------------------ spawn */

static void proc_init_handles(uv_loop_t *loop, proc *p)
{
    uv_signal_init(loop, &p->sigchld);
    uv_timer_init(loop, &p->kill_timer);
    uv_timer_init(loop, &p->drain_timer);
    p->sigchld.data = p;
    p->kill_timer.data = p;
    p->drain_timer.data = p;
    p->open_handles = 3;
}

static int proc_open_pipe(proc *p, int which, int fd)
{
    int rc;

    uv_pipe_init(p->loop, &p->pipes[which], 0);
    p->pipes[which].data = p;
    p->open_handles++;
    p->pipe_open[which] = true;
    if ((rc = uv_pipe_open(&p->pipes[which], fd)) < 0)
        return rc;
    if (which != PROC_IN &&
        (rc = uv_read_start((uv_stream_t *)&p->pipes[which], proc_on_alloc, proc_on_read)) < 0)
        return rc;
    return 0;
}

static const char *proc_stage_name(int stage)
{
    return stage == PROC_STAGE_CHDIR ? "chdir" : stage == PROC_STAGE_EXEC ? "exec" : "setup";
}

int proc_spawn(uv_loop_t *loop, const proc_opts *opts, proc **out)
{
    int fds[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
    int report[2] = {-1, -1};
    char **envp = NULL, **argv = NULL;
    char *path = NULL;
    proc *p = NULL;
    proc_child_args ca;
    proc_report rep;
    sigset_t all, old;
    size_t got = 0;
    pid_t pid;
    int rc;

    *out = NULL;
    if (!loop || !opts || !opts->file || (opts->n_args && !opts->args) ||
        (opts->n_env && !opts->env))
        return -EINVAL;
    if ((rc = proc_env_build(opts, &envp)) < 0)
        goto out;
    if ((rc = proc_resolve(opts->file, proc_env_get(envp, "PATH"), opts->cwd, &path)) < 0)
        goto out;
    argv = proc_argv_build(opts);
    for (int i = 0; i < 3; i++) {
        if (pipe2(fds[i], O_CLOEXEC) < 0) {
            rc = -errno;
            goto out;
        }
    }
    if (pipe2(report, O_CLOEXEC) < 0) {
        rc = -errno;
        goto out;
    }
    /* The child's ends: stdin reads fds[0][0], stdout/stderr write fds[1][1], fds[2][1]. */
    if ((rc = proc_fd_above_2(&fds[PROC_IN][0])) < 0 ||
        (rc = proc_fd_above_2(&fds[PROC_OUT][1])) < 0 ||
        (rc = proc_fd_above_2(&fds[PROC_ERR][1])) < 0)
        goto out;
    proc_ignore_sigpipe_once();

    p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->loop = loop;
    p->max_queue = opts->max_write_queue ? opts->max_write_queue : PROC_DEFAULT_WRITE_QUEUE;
    if (p->max_queue > UINT_MAX)
        p->max_queue = UINT_MAX; /* one uv_buf_t holds a whole write */
    p->on_stdout = opts->on_stdout;
    p->on_stderr = opts->on_stderr;
    p->on_exit = opts->on_exit;
    p->ud = opts->ud;
    proc_init_handles(loop, p);
    /* Watching before fork: a child that exits at once must not be missed. */
    if ((rc = uv_signal_start(&p->sigchld, proc_on_sigchld, SIGCHLD)) < 0)
        goto out;

    memset(&ca, 0, sizeof ca);
    ca.path = path;
    ca.argv = argv;
    ca.envp = envp;
    ca.cwd = opts->cwd;
    ca.fd_in = fds[PROC_IN][0];
    ca.fd_out = fds[PROC_OUT][1];
    ca.fd_err = fds[PROC_ERR][1];
    ca.report_fd = report[1];
    ca.parent = getpid();
    ca.fd_scan_max = proc_fd_scan_max();

    /* No handler of ours may run in the child before it resets the dispositions. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0)
        proc_child(&ca);
    rc = pid < 0 ? -errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0)
        goto out;
    p->pid = pid;

    close(fds[PROC_IN][0]);
    close(fds[PROC_OUT][1]);
    close(fds[PROC_ERR][1]);
    close(report[1]);
    fds[PROC_IN][0] = fds[PROC_OUT][1] = fds[PROC_ERR][1] = report[1] = -1;

    /* EOF: exec succeeded (the pipe was close-on-exec). A report: it failed. */
    while (got < sizeof rep) {
        ssize_t n = read(report[0], (char *)&rep + got, sizeof rep - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got > 0) {
        int status;

        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        p->reaped = true;
        rc = got == sizeof rep && rep.err > 0 ? -rep.err : -EIO;
        log_debug("spawn failed", "file=%s stage=%s error=\"%s\"", opts->file,
                  got == sizeof rep ? proc_stage_name(rep.stage) : "report", strerror(-rc));
        goto out;
    }

    /* The pipes now belong to libuv handles. */
    if ((rc = proc_open_pipe(p, PROC_IN, fds[PROC_IN][1])) < 0)
        goto fail_running;
    fds[PROC_IN][1] = -1;
    if ((rc = proc_open_pipe(p, PROC_OUT, fds[PROC_OUT][0])) < 0)
        goto fail_running;
    fds[PROC_OUT][0] = -1;
    if ((rc = proc_open_pipe(p, PROC_ERR, fds[PROC_ERR][0])) < 0)
        goto fail_running;
    fds[PROC_ERR][0] = -1;
    *out = p;
    p = NULL;
    goto out;

fail_running: {
        int status;

        /* Unlikely (libuv refused a pipe): do not leave the running child behind. */
        (void)kill(-pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        p->reaped = true;
    }
out:
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            if (fds[i][j] >= 0)
                close(fds[i][j]);
    if (report[0] >= 0)
        close(report[0]);
    if (report[1] >= 0)
        close(report[1]);
    if (p) {
        /* A failed spawn runs no callback; the handles close and free p later. */
        p->freed = true;
        proc_close_all(p);
    }
    free(path);
    proc_strv_free(argv);
    proc_strv_free(envp);
    return rc;
}
