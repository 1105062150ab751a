/* inst: one MCP client session with one upstream server: spawns a stdio server (proc) and
 * frames its stdout (ndjson), or connects to a remote one over Streamable HTTP or legacy
 * HTTP+SSE (rmt); runs the initialize handshake, numbers our requests itself so ids
 * never collide whatever the hub's clients used, and answers every request exactly once
 * (response, timeout, cancel, or the process going away). Loop thread only. */
#ifndef MCPHUB_INST_H
#define MCPHUB_INST_H

#include "cfg.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

typedef struct inst inst;

/* What we announce in initialize. */
#define INST_PROTOCOL_VERSION "2025-11-25"
#define INST_CLIENT_NAME "mcphub"
#define INST_CLIENT_VERSION "0.1.0"

/* JSON-RPC errors the instance produces itself (the MCP SDK's codes where it has one). */
#define INST_E_CLOSED (-32000)    /* "upstream server exited" / "... stopping" / "... failed" */
#define INST_E_TIMEOUT (-32001)   /* "Request timed out" */
#define INST_E_CANCELLED (-32800) /* "Request cancelled" (inst_cancel) */
#define INST_E_INTERNAL (-32603)  /* a held request could not be written */

/* Defaults for inst_opts. */
#define INST_DEFAULT_MAX_LINE (16u * 1024u * 1024u)
#define INST_DEFAULT_MAX_WRITE_QUEUE (32u * 1024u * 1024u)
#define INST_DEFAULT_MAX_PENDING 10000u
#define INST_DEFAULT_MAX_GARBAGE 100
#define INST_STDERR_LINE_MAX 1024    /* bytes of one stderr line that are logged */
#define INST_STDERR_LINES_PER_SEC 100 /* more are counted and summarized once a second */

/* Explicit states. STARTING lasts only inside inst_start (spawning is synchronous).
 *   NEW -> STARTING -> INITIALIZING -> READY
 *   INITIALIZING|READY -> FAILED   (initialize refused or timed out, process exited by
 *                                   itself, too much garbage on stdout)
 *   INITIALIZING|READY -> STOPPING -> STOPPED   (inst_stop; STOPPED once reaped)
 *   NEW -> STOPPED (inst_stop before start). FAILED and STOPPED are final. */
typedef enum inst_state_t {
    INST_NEW = 0,
    INST_STARTING,
    INST_INITIALIZING,
    INST_READY,
    INST_STOPPING,
    INST_STOPPED,
    INST_FAILED,
} inst_state_t;

#define INST_STATE_COUNT 7

/* Instance-wide callbacks, all on the loop thread; any may be NULL. JSON handed to them is
 * borrowed (json_incref to keep it). They may call any inst_* function, inst_free included. */
typedef struct inst_callbacks {
    /* A state change (not those made inside inst_start, whose return value tells). */
    void (*on_state)(void *ud, inst *in, inst_state_t from, inst_state_t to);
    /* A notification from upstream other than progress for our requests (those go to the
     * request's on_progress) and ping. params may be NULL. */
    void (*on_notification)(void *ud, inst *in, const char *method, json_t *params);
    /* A request from upstream (sampling/createMessage, elicitation/create, roots/list, ...;
     * ping is answered here). Answer once with inst_respond(in, id, ...). NULL callback:
     * answered with -32601. params may be NULL. */
    void (*on_request)(void *ud, inst *in, json_t *id, const char *method, json_t *params);
} inst_callbacks;

/* Settings that come from the hub, not the server entry. */
typedef struct inst_opts {
    int64_t init_timeout_ms;    /* hub.initTimeout */
    int64_t request_timeout_ms; /* hub.requestTimeout: per request when the server sets none */
    int64_t kill_grace_ms;      /* hub.killGracePeriod: default grace of inst_stop, and TERM
                                   to KILL for a failed instance */
    size_t max_line;            /* longest stdout line (one message) */
    size_t max_write_queue;     /* bytes queued to stdin */
    size_t max_pending;         /* our requests in flight (held ones included) */
    int max_garbage;            /* consecutive garbage stdout lines that fail the instance */
    bool inherit_all_env;       /* MCPHub passes our whole environment; default: the SDK's list */
} inst_opts;

/* Fills o with the defaults, taking timeouts from hub when not NULL. */
void inst_opts_init(inst_opts *o, const cfg_hub *hub);

/* An error delivered to a response callback. message is borrowed; data may be NULL. */
typedef struct inst_error {
    int code;
    const char *message;
    json_t *data;
} inst_error;

/* Runs exactly once per accepted request: result (borrowed) on success, else error. */
typedef void (*inst_response_fn)(void *ud, json_t *result, const inst_error *error);

/* A notifications/progress for the request; params is borrowed and carries the caller's own
 * progress token (the one upstream saw was ours). */
typedef void (*inst_progress_fn)(void *ud, json_t *params);

typedef struct inst_req_opts {
    int64_t timeout_ms;      /* <= 0: the server's options.timeout, else hub.requestTimeout */
    bool reset_on_progress;  /* each progress restarts timeout_ms */
    int64_t max_total_ms;    /* hard limit even with progress; <= 0: none */
    json_t *progress_token;  /* borrowed: the client's token. NULL: params._meta.progressToken
                                if present. With a token, upstream gets one of ours instead */
    inst_progress_fn on_progress; /* NULL: progress only resets the timeout */
} inst_req_opts;

/* Fills o from the server entry (options.timeout, resetTimeoutOnProgress, maxTotalTimeout). */
void inst_req_opts_default(const inst *in, inst_req_opts *o);

/* Creates an instance for a stdio server (command) or a remote one (type sse or
 * streamable-http, url, headers). Everything needed from srv is copied: the cfg may be freed
 * (reloaded) afterwards. Returns NULL when srv is neither a stdio server with a command nor
 * a remote server with a url. For a remote server "spawn" below means opening the transport
 * and "the process exits" means the transport closed for good (unreachable, session expired,
 * legacy stream ended): the instance then FAILS like a crashed child; it has no pid.
 * The loop must outlive the instance. Loop thread. */
inst *inst_new(uv_loop_t *loop, const cfg_server *srv, const inst_callbacks *cbs, void *ud);

/* The settings-file placeholder for the session a per-session instance serves, and the
 * environment variable a per-session stdio child gets with the same value. */
#define INST_SCOPE_VAR "${MCPHUB_SESSION_ID}"
#define INST_SCOPE_ENV "MCPHUB_SESSION_ID"

/* inst_new for an instance that serves one scope (a client session): every INST_SCOPE_VAR
 * in the command, args, env values, cwd, url and header values is replaced by scope (a
 * URL-safe id, copied), and a stdio child gets INST_SCOPE_ENV=scope too. scope NULL is
 * inst_new. */
inst *inst_new_scoped(uv_loop_t *loop, const cfg_server *srv, const char *scope,
                      const inst_callbacks *cbs, void *ud);

/* Spawns the server and sends initialize (protocolVersion INST_PROTOCOL_VERSION, client
 * capabilities sampling, elicitation.form, roots.listChanged); the answer, or
 * opts->init_timeout_ms without one, moves the instance to READY or FAILED (on_state).
 * opts NULL: inst_opts_init(NULL). Returns 0 (state INITIALIZING), -EALREADY when not NEW,
 * or the spawn error (-ENOENT, -EACCES, ...; state FAILED, no callback). */
int inst_start(inst *in, const inst_opts *opts);

/* Sends a request. params (object or NULL) is stolen, even on failure. Accepted in STARTING/
 * INITIALIZING (held, in order, until READY) and READY. On 0, cb runs exactly once: with the
 * result; with INST_E_TIMEOUT when the timeout passed (notifications/cancelled goes
 * upstream); with INST_E_CANCELLED from inside inst_cancel; with INST_E_CLOSED at once when
 * the process exits, the instance fails or stops, or from inside inst_free. *handle (may be
 * NULL) gets the request's handle (also its upstream JSON-RPC id; never 0, never reused).
 * Errors (cb never runs): -EINVAL, -ENOTCONN (not running), -EBUSY (max_pending),
 * -ENOBUFS (stdin queue full), -EPIPE (stdin closed). opts NULL: inst_req_opts_default. */
int inst_request(inst *in, const char *method, json_t *params, const inst_req_opts *opts,
                 inst_response_fn cb, void *ud, uint64_t *handle);

/* Cancels a pending request: sends notifications/cancelled {requestId, reason} upstream if it
 * was sent (reason may be NULL), then runs its callback with INST_E_CANCELLED before
 * returning. Returns 0, or -ENOENT when the request already completed. */
int inst_cancel(inst *in, uint64_t handle, const char *reason);

/* Sends a notification (params object or NULL, stolen). READY only: else -ENOTCONN. Also
 * -ENOBUFS, -EPIPE as inst_request. */
int inst_notify(inst *in, const char *method, json_t *params);

/* Answers an upstream request given to on_request: id borrowed, exactly one of result and
 * error (a JSON-RPC error object {code, message, data?}) not NULL; both stolen. Returns 0,
 * -ENOENT (no such request pending: answered, cancelled by upstream, or the process is gone),
 * -EINVAL, -ENOBUFS, -EPIPE. */
int inst_respond(inst *in, json_t *id, json_t *result, json_t *error);

/* Stops the instance the MCP stdio way: pending requests fail at once with INST_E_CLOSED and
 * stdin closes (a well-behaved server exits then); if the process is still there, SIGTERM
 * goes to its process group grace_ms later and SIGKILL another grace_ms after that
 * (grace_ms < 0: opts.kill_grace_ms). STOPPING until the process is reaped, then STOPPED.
 * On a FAILED instance whose process is still there it sends SIGTERM now and SIGKILL
 * grace_ms later. May run callbacks (requests, on_state) before it returns. Returns 0. */
int inst_stop(inst *in, int64_t grace_ms);

/* Releases the instance. Pending requests get INST_E_CLOSED from inside this call; no other
 * callback runs afterwards. A running process group is SIGKILLed and reaped in the
 * background (stop it first for a graceful end). Safe from inside the instance's own
 * callbacks: memory goes in a libuv close callback. inst_free(NULL) does nothing. */
void inst_free(inst *in);

/* Takes a running instance out of service as broken: the supervisor's verdict (missed
 * keep-alive pings, say). INITIALIZING or READY move to FAILED with the usual entry actions
 * (pending requests get INST_E_CLOSED with why, a process gets TERM then KILL); other states
 * are left alone. why is borrowed. */
void inst_fail(inst *in, const char *why);

/* The current state. */
inst_state_t inst_state(const inst *in);
/* "new", "starting", "initializing", "ready", "stopping", "stopped", "failed". */
const char *inst_state_name(inst_state_t s);
/* How the server is reached (copied from the cfg). */
cfg_transport inst_transport(const inst *in);
/* The server's name (copied from the cfg). */
const char *inst_name(const inst *in);
/* The process's pid (and process group id) while it runs or awaits reaping; else 0. */
pid_t inst_pid(const inst *in);
/* From the initialize result, once READY (else NULL). Borrowed, valid until inst_free. */
json_t *inst_server_capabilities(const inst *in);
json_t *inst_server_info(const inst *in);
const char *inst_protocol_version(const inst *in);
const char *inst_instructions(const inst *in); /* NULL when the server gave none */

typedef struct inst_stats {
    uint64_t requests;         /* sent upstream (initialize included) */
    uint64_t responses;        /* matched to a pending request */
    uint64_t timeouts;
    uint64_t cancels;
    uint64_t late_responses;   /* for requests that had timed out or been cancelled */
    uint64_t dropped_progress; /* progress whose token was no longer pending */
    uint64_t notifications;    /* from upstream */
    uint64_t upstream_requests;
    uint64_t garbage_lines;    /* stdout lines that were not JSON-RPC (over-long included) */
    uint64_t stderr_lines;
    uint64_t stderr_dropped;   /* over the per-second log limit */
    size_t pending;
    int64_t started_ms;        /* rpc_now_ms() at inst_start; 0 before */
    bool exited;
    int64_t exit_status;
    int term_signal;
} inst_stats;

void inst_get_stats(const inst *in, inst_stats *out);

#endif
