/* rpc: a small runtime over gRPC core's C API and protobuf-c.
 * Server: methods registered from protoc-c service descriptors, unary and server-streaming
 * handlers, bounded per-stream send queues, clean shutdown with live streams.
 * Client: asynchronous unary calls and stream readers whose callbacks run on one thread
 * that always polls the client's completion queue; the channel reconnects by itself. */
#ifndef MCPHUB_RPC_H
#define MCPHUB_RPC_H

#include <grpc/grpc.h>
#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Initializes gRPC once per process (reference counted); pairs with rpc_global_shutdown. */
void rpc_global_init(void);
/* Drops the reference; the last one waits for gRPC's own threads (leak checks need that). */
void rpc_global_shutdown(void);

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t rpc_now_ms(void);

/* ------------------------------------------------------------------------------------ */
/* Server                                                                                 */

typedef struct rpc_server rpc_server;
typedef struct rpc_call rpc_call;

typedef enum {
    RPC_UNARY = 0,
    RPC_SERVER_STREAM = 1,
    /* Client and server streams. The handler runs once per client message, on a completion
     * queue thread, never two at once for one call; rpc_call_request is the current message.
     * It may rpc_call_send answers, and must not complete the call itself unless it ends the
     * stream early (rpc_call_fail / rpc_call_finish): when the client half-closes, the
     * runtime finishes the call with OK once every answer is written. */
    RPC_BIDI_STREAM = 2,
} rpc_kind;

/* Runs on a server completion-queue thread when a call arrives. The handler, or any thread
 * it hands the call to, must complete the call exactly once: rpc_call_reply or rpc_call_fail
 * for unary calls, rpc_call_finish (or rpc_call_fail) for streams. The call pointer stays
 * valid until then. The request is owned by the call (read it with rpc_call_request). */
typedef void (*rpc_handler_fn)(rpc_call *call, void *ud);

/* Runs at most once, on a completion-queue thread, when a call ends before the application
 * completed it: client cancel, deadline passed, connection lost, or server shutdown. The
 * application must still complete the call (sends then fail with -ECANCELED). */
typedef void (*rpc_cancel_fn)(rpc_call *call, void *ud);

typedef struct {
    int cq_threads;            /* completion-queue threads; default 1 */
    /* Serve on this other server's completion queue and threads instead of its own
     * (cq_threads then ignored): calls are served once that server is started too. gRPC's
     * pollers share one epoll set per process, so a second queue thread reads the first
     * queue's sockets half the time and has to wake it, one more thread hand-off per
     * message. Free this server before the one it shares with. */
    rpc_server *share_cq;
    size_t max_stream_queue;   /* per-stream queued messages before overflow; default 16384 */
    size_t max_stream_bytes;   /* per-stream queued bytes before overflow; default 8 MiB */
    size_t max_message_bytes;  /* largest message received or sent; default 16 MiB */
    int requests_per_method;   /* calls kept requested per method; default 8 */
} rpc_server_opts;

/* Creates a server (not yet listening). opts may be NULL. Never NULL (OOM aborts). */
rpc_server *rpc_server_new(const rpc_server_opts *opts);

/* Registers method `method` of service `svc` (protoc-c descriptor; must outlive the server).
 * Before rpc_server_start only. Returns 0, -ENOENT (no such method) or -EINVAL. */
int rpc_server_add_method(rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                          const char *method, rpc_kind kind, rpc_handler_fn fn, void *ud);

/* Adds an insecure listener on addr ("127.0.0.1:0" picks a free port). *bound_port (may
 * be NULL) receives the port. Returns 0 or -EADDRNOTAVAIL. Before rpc_server_start only. */
int rpc_server_listen(rpc_server *srv, const char *addr, int *bound_port);

/* Starts serving. Returns 0 or a negative error. */
int rpc_server_start(rpc_server *srv);

/* Begins shutdown: stops accepting, cancels every live call (their cancel callbacks run) so
 * that long-lived streams do not hold shutdown forever. Non-blocking, any thread, idempotent. */
void rpc_server_shutdown(rpc_server *srv);

/* Shuts down if needed, waits until every call has been completed by the application and
 * every completion-queue thread has exited, then frees. Must not be called from a
 * completion-queue thread, nor while another thread still has to complete calls and
 * waits on this one. rpc_server_free(NULL) does nothing. */
void rpc_server_free(rpc_server *srv);

/* Number of calls currently alive (arrived and not yet released). Any thread. */
size_t rpc_server_live_calls(rpc_server *srv);

/* True once shutdown completed: no call alive, none arriving, gRPC acknowledged. After that
 * no handler or cancel callback will run again. Any thread. */
bool rpc_server_stopped(rpc_server *srv);

#define RPC_STATUS_CODES 17 /* gRPC status codes OK (0) .. UNAUTHENTICATED (16) */

/* Calls of one registered method that the application completed, by the status it completed
 * them with (OK for replies and normal stream ends). path is "/package.Service/Method". */
typedef void (*rpc_server_count_fn)(void *ud, const char *path,
                                    const uint64_t counts[RPC_STATUS_CODES]);

/* Calls fn once per registered method, in registration order. The counters are relaxed
 * atomics bumped when a call is completed, so a call completed concurrently may or may not
 * be seen. Any thread, while the server exists. */
void rpc_server_counts(rpc_server *srv, rpc_server_count_fn fn, void *ud);

/* The unpacked request (borrowed; valid until the call is completed). */
const ProtobufCMessage *rpc_call_request(const rpc_call *call);
/* Full method path, e.g. "/mcphub.v1.Gateway/Subscribe" (borrowed). */
const char *rpc_call_method(const rpc_call *call);
/* Absolute deadline in rpc_now_ms() milliseconds, or INT64_MAX when the client set none. */
int64_t rpc_call_deadline_ms(const rpc_call *call);
/* Value of a request metadata key (lowercase), copied into buf; 0 or -ENOENT / -ENOSPC. */
int rpc_call_metadata(const rpc_call *call, const char *key, char *buf, size_t size);

/* One word of application data carried by the call (e.g. a serial number that the cancel
 * callback looks up). Any thread. */
void rpc_call_set_data(rpc_call *call, uintptr_t data);
uintptr_t rpc_call_data(const rpc_call *call);

/* Registers the cancel callback. Returns 0, or -ECANCELED when the call already ended (the
 * callback will then never run). Any thread. */
int rpc_call_on_cancel(rpc_call *call, rpc_cancel_fn fn, void *ud);
/* True once the call ended on the client's side (cancel, deadline, disconnect, shutdown). */
bool rpc_call_cancelled(rpc_call *call);

/* Unary: sends resp and status OK; completes the call. Returns 0, or -ECANCELED when the
 * call had already ended (the call is completed anyway). */
int rpc_call_reply(rpc_call *call, const ProtobufCMessage *resp);

/* Ends the call with a non-OK status and message; completes the call. Any kind. */
int rpc_call_fail(rpc_call *call, grpc_status_code status, const char *message);

/* Stream: queues one message. Returns 0; -ECANCELED once the call ended; -ENOBUFS when the
 * reader is too slow and the queue is full (max_stream_queue messages or max_stream_bytes
 * bytes behind the one being written): the stream is then ended with RESOURCE_EXHAUSTED
 * ("slow reader") and later sends fail with -ECANCELED. Any thread. */
int rpc_call_send(rpc_call *call, const ProtobufCMessage *msg);

/* Stream: sends last (after the queued messages) and ends the call with status OK, in one
 * batch when nothing is queued; completes the call. Any thread. */
int rpc_call_finish_with(rpc_call *call, const ProtobufCMessage *last);

/* Stream: ends the call with status (GRPC_STATUS_OK and NULL message for a normal end) after
 * the queued messages have been written; completes the call. Any thread. */
int rpc_call_finish(rpc_call *call, grpc_status_code status, const char *message);

/* ------------------------------------------------------------------------------------ */
/* Client                                                                                 */

typedef struct rpc_client rpc_client;
typedef struct rpc_stream rpc_stream;

typedef struct {
    int initial_backoff_ms;    /* first reconnect delay; default 100 */
    int max_backoff_ms;        /* reconnect delay cap; default 1000 */
    int keepalive_ms;          /* HTTP/2 ping interval; default 10000, 0 = gRPC default */
    size_t max_message_bytes;  /* default 16 MiB */
    const char *authorization; /* sent as `authorization` metadata on every call (copied);
                                  e.g. "Bearer TOKEN"; NULL: none */
} rpc_client_opts;

/* Creates a channel to target ("127.0.0.1:50051") and starts the thread that polls its
 * completion queue. opts may be NULL. Never NULL (OOM aborts); connecting is lazy. */
rpc_client *rpc_client_new(const char *target, const rpc_client_opts *opts);

/* Cancels every call still running (their callbacks run with CANCELLED), waits for them,
 * stops the polling thread and frees. Not from a client callback. NULL does nothing. */
void rpc_client_free(rpc_client *cli);

/* Called once on the polling thread. resp is the unpacked answer when status is OK (owned by
 * the runtime: freed when the callback returns), else NULL; message describes an error. */
typedef void (*rpc_unary_cb)(void *ud, grpc_status_code status, const char *message,
                             const ProtobufCMessage *resp);

/* Starts a unary call of `method` of service svc with req. timeout_ms <= 0 means none.
 * Returns 0 (cb will run exactly once) or a negative error (cb will never run). */
int rpc_client_unary(rpc_client *cli, const ProtobufCServiceDescriptor *svc,
                     const char *method, const ProtobufCMessage *req, int64_t timeout_ms,
                     rpc_unary_cb cb, void *ud);

/* Stream callbacks run on the polling thread: on_message for each message (msg freed when it
 * returns), then on_close exactly once with the final status. After on_close returns the
 * rpc_stream is freed. */
typedef void (*rpc_stream_msg_cb)(void *ud, const ProtobufCMessage *msg);
typedef void (*rpc_stream_close_cb)(void *ud, grpc_status_code status, const char *message);

/* Opens a server-streaming call. wait_for_ready: wait for a connection instead of failing
 * fast while the server is unreachable. Returns the stream (valid until on_close returns) or
 * NULL when the call could not start (callbacks will never run). */
rpc_stream *rpc_client_stream(rpc_client *cli, const ProtobufCServiceDescriptor *svc,
                              const char *method, const ProtobufCMessage *req,
                              int64_t timeout_ms, bool wait_for_ready,
                              rpc_stream_msg_cb on_message, rpc_stream_close_cb on_close,
                              void *ud);

/* Cancels the stream; on_close still runs (with CANCELLED unless it already ended). Only
 * before on_close has run: from the polling thread, or from another thread that knows
 * on_close has not run yet. */
void rpc_stream_cancel(rpc_stream *st);

/* Channel state, optionally starting a connection attempt. Any thread. */
grpc_connectivity_state rpc_client_state(rpc_client *cli, bool try_to_connect);

/* Human-readable name of a status code ("UNAVAILABLE"). */
const char *rpc_status_name(grpc_status_code status);

#endif
