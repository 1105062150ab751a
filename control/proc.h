/* proc: child processes on a libuv loop, started with a hand-written fork/exec so that each
 * child gets its own process group, PR_SET_PDEATHSIG and a minimal environment, writes to
 * its stdin go through a bounded queue, and the child (and its process group) is always
 * killed and reaped. Everything here runs on the loop thread only. */
#ifndef MCPHUB_PROC_H
#define MCPHUB_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <uv.h>

typedef struct proc proc;

#define PROC_DEFAULT_WRITE_QUEUE (16u * 1024u * 1024u) /* bytes queued to stdin */
#define PROC_DRAIN_MS 500 /* after the child exited, how long its pipes may stay open */

/* The variables a child inherits from mcphub-control by default: the list the official MCP
 * SDK's stdio client passes (sudo's defaults). Values starting with "()" (shell functions)
 * are never passed, as in the SDK. */
#define PROC_INHERITED_ENV {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"}

/* Output of the child: len bytes (borrowed, valid during the call). buf == NULL and len == 0
 * means end of stream; it comes exactly once per stream, before on_exit. */
typedef void (*proc_read_fn)(void *ud, const char *buf, size_t len);

/* The child exited and was reaped: exit_status is its exit code (0 when it was killed by a
 * signal, -1 if somebody else reaped it), term_signal the signal that killed it (0 if none).
 * Runs once, after both output streams ended (or PROC_DRAIN_MS after the exit when some
 * other process still holds them open). No callback runs after it. */
typedef void (*proc_exit_fn)(void *ud, int64_t exit_status, int term_signal);

typedef struct proc_env {
    const char *name;
    const char *value;
} proc_env;

typedef struct proc_opts {
    const char *file;        /* required: a path, or a name looked up in the child's PATH */
    const char *const *args; /* argv[1..]: n_args strings; argv[0] is file as given */
    size_t n_args;
    const proc_env *env;     /* set on top of the inherited variables (replacing same names) */
    size_t n_env;
    bool inherit_all_env;    /* true: inherit our whole environment, not PROC_INHERITED_ENV */
    const char *cwd;         /* NULL: ours */
    size_t max_write_queue;  /* 0: PROC_DEFAULT_WRITE_QUEUE */
    proc_read_fn on_stdout;  /* NULL: read and dropped */
    proc_read_fn on_stderr;  /* NULL: read and dropped */
    proc_exit_fn on_exit;    /* may be NULL */
    void *ud;
} proc_opts;

/* Starts opts->file with pipes on its stdin, stdout and stderr (everything else it inherits
 * is closed on exec). The child runs in its own process group (pgid == pid) and is sent
 * SIGKILL by the kernel if the thread that forked it exits (PR_SET_PDEATHSIG; that is the
 * loop thread, which lives as long as the daemon). The PATH lookup uses the child's PATH
 * (after opts->env), else "/usr/local/bin:/usr/bin:/bin".
 *
 * Returns 0 with *out set (release with proc_free), or a negative errno and no callback will
 * ever run: -ENOENT (no such file, or cwd missing), -EACCES, -ENOEXEC, -EINVAL (bad opts),
 * -EMFILE, ... errors of chdir or execve in the child come back here through a close-on-exec
 * pipe, before this returns. The first successful call sets SIGPIPE to SIG_IGN if it was at
 * its default (a write to a dead child must not kill the daemon); children get it back at
 * its default, with every other signal disposition and an empty signal mask. Loop thread. */
int proc_spawn(uv_loop_t *loop, const proc_opts *opts, proc **out);

/* Queues len bytes (copied) for the child's stdin. Returns 0; -ENOBUFS when the queue would
 * exceed its limit (nothing queued: the caller decides whether that is fatal); -EPIPE once
 * stdin is closed (proc_close_stdin, proc_stop, a write error, the child exited). */
int proc_write(proc *p, const char *buf, size_t len);

/* Like proc_write for several pieces queued as one write: all or nothing. */
int proc_writev(proc *p, const struct iovec *iov, size_t n_iov);

/* Bytes queued for stdin and not yet written. */
size_t proc_write_queued(const proc *p);

/* Closes the child's stdin once the queued writes are done (the usual way to ask an MCP
 * stdio server to exit). Later writes fail with -EPIPE. Idempotent. */
void proc_close_stdin(proc *p);

/* Stops the child: closes stdin (queued writes are dropped), sends SIGTERM to its process
 * group, and SIGKILL to the group grace_ms later if the child is still there (at once when
 * grace_ms <= 0): proc_shutdown(p, 0, grace_ms). on_exit follows as usual. Returns 0, or
 * -ESRCH when the child was already reaped. A second call only brings the SIGKILL forward. */
int proc_stop(proc *p, int64_t grace_ms);

/* The graceful form: closes stdin (queued writes dropped) at once, sends SIGTERM to the
 * process group term_after_ms later and SIGKILL kill_after_ms later, each only if the child
 * has not been reaped by then (values <= 0: now; SIGKILL due first makes SIGTERM moot). This
 * is the MCP stdio shutdown: an MCP server is expected to exit when its stdin closes.
 * Returns 0 or -ESRCH. Later calls may only bring the signals forward. */
int proc_shutdown(proc *p, int64_t term_after_ms, int64_t kill_after_ms);

/* Sends sig to the child's process group. 0, or -ESRCH once reaped. */
int proc_kill(proc *p, int sig);

/* The child's pid (also its process group id), or 0 once it has been reaped. */
pid_t proc_pid(const proc *p);

/* True once the child exited and was reaped (on_exit may still be waiting for output). */
bool proc_exited(const proc *p);

/* Releases p; no callback runs after this returns. If the child is still running, its
 * process group is sent SIGKILL and reaping finishes in the background (the loop stays
 * alive until then). Memory goes away in libuv close callbacks, so calling this from one of
 * p's own callbacks is safe. proc_free(NULL) does nothing. */
void proc_free(proc *p);

#endif
