/* rpc_server: gRPC server over the core C API. Methods come from protoc-c service
 * descriptors; each call is a refcounted object whose completion-queue events are
 * serialized by its own mutex, so any thread may reply, send or finish. */
#include "log.h"
#include "ring.h"
#include "rpc_internal.h"

#include <assert.h>
#include <errno.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rpc_method {
    rpc_server *srv;
    const ProtobufCMethodDescriptor *md;
    char *path;
    rpc_kind kind;
    rpc_handler_fn fn;
    void *ud;
    void *handle; /* from grpc_server_register_method */
    _Atomic uint64_t completed[RPC_STATUS_CODES]; /* calls completed, by status */
} rpc_method;

/* One outstanding grpc_server_request_registered_call. */
typedef struct rpc_incoming {
    rpc_tag tag;
    rpc_method *m;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
} rpc_incoming;

struct rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t *threads;
    int nthreads;
    rpc_method *methods;
    size_t nmethods;
    rpc_server_opts opts;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t live_calls;       /* rpc_call objects not yet freed */
    size_t pending_requests; /* rpc_incoming slots outstanding */
    bool started;
    bool shutting_down;
    bool shutdown_notified;
    rpc_tag shutdown_tag;
};

struct rpc_call {
    rpc_server *srv;
    rpc_method *m;
    grpc_call *call;
    ProtobufCMessage *req;
    int64_t deadline_ms;
    grpc_metadata_array md;
    _Atomic uintptr_t data;

    pthread_mutex_t mu;
    int refs; /* the application's, the close tag's, one per batch in flight */

    rpc_tag close_tag;
    int close_cancelled; /* written by gRPC for RECV_CLOSE_ON_SERVER */
    bool ended;          /* the call is over on the wire side (close tag came back) */
    bool cancelled;      /* it ended before the application completed it */
    rpc_cancel_fn on_cancel;
    void *cancel_ud;

    bool completed; /* the application replied, failed or finished */
    bool initial_md_sent;
    bool overflowed;

    /* stream writes: at most one SEND_MESSAGE in flight, the rest queued (bounded) */
    rpc_tag write_tag;
    bool write_in_flight;
    grpc_byte_buffer *write_buf;
    grpc_byte_buffer **queue;
    size_t qhead, qlen, qcap;
    size_t qbytes; /* bytes of the queued messages */

    /* the final status, sent once the queue drained */
    rpc_tag status_tag;
    bool finish_pending;
    bool status_started;
    grpc_status_code fin_status;
    grpc_slice fin_details;
    grpc_byte_buffer *unary_buf;

    /* bidi streams: one RECV_MESSAGE at a time */
    rpc_tag read_tag;
    grpc_byte_buffer *read_buf;
};

static void server_request_one(rpc_server *srv, rpc_method *m);
static void server_request_unknown(rpc_server *srv);

/* A call for a method nobody registered: answered UNIMPLEMENTED (gRPC core leaves that to
 * the application; without it such calls would wait for their deadline). */
typedef struct rpc_unknown {
    rpc_tag tag;
    rpc_server *srv;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    int cancelled;
    bool answering;
    grpc_slice status_text;
} rpc_unknown;

/* ---- call lifetime ------------------------------------------------------------------ */

/* Drops the messages queued behind the write in flight (under c->mu, or when nobody else
 * can hold the call). */
static void call_drop_queue_locked(rpc_call *c)
{
    for (size_t i = 0; i < c->qlen; i++)
        grpc_byte_buffer_destroy(c->queue[(c->qhead + i) % c->qcap]);
    c->qlen = 0;
    c->qbytes = 0;
}

static void call_free(rpc_call *c)
{
    rpc_server *srv = c->srv;

    call_drop_queue_locked(c);
    free(c->queue);
    if (c->write_buf)
        grpc_byte_buffer_destroy(c->write_buf);
    if (c->unary_buf)
        grpc_byte_buffer_destroy(c->unary_buf);
    grpc_slice_unref(c->fin_details);
    grpc_metadata_array_destroy(&c->md);
    if (c->req)
        protobuf_c_message_free_unpacked(c->req, NULL);
    grpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    free(c);

    pthread_mutex_lock(&srv->mu);
    srv->live_calls--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

/* Drops one reference; the caller must not hold c->mu. */
static void call_unref(rpc_call *c)
{
    int left;

    pthread_mutex_lock(&c->mu);
    left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0)
        call_free(c);
}

static void call_batch_failed(const char *what, grpc_call_error err)
{
    /* Only a bug of ours (two batches of one kind at once) gets here. */
    log_error("grpc batch rejected", "op=%s error=%d", what, (int)err);
    abort();
}

/* Starts the batch that sends the final status. Caller holds c->mu. */
static void call_start_status_locked(rpc_call *c)
{
    grpc_op ops[3];
    size_t n = 0;
    grpc_call_error err;

    memset(ops, 0, sizeof ops);
    if (!c->initial_md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->initial_md_sent = true;
    }
    if (c->unary_buf) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->unary_buf;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->fin_status;
    ops[n].data.send_status_from_server.status_details =
        GRPC_SLICE_LENGTH(c->fin_details) ? &c->fin_details : NULL;
    n++;
    c->status_started = true;
    c->refs++;
    err = rpc_start_batch(c->call, ops, n, &c->status_tag);
    if (err != GRPC_CALL_OK)
        call_batch_failed("status", err);
}

/* Starts writing buf (owned by the call from now). Caller holds c->mu. */
static void call_start_write_locked(rpc_call *c, grpc_byte_buffer *buf)
{
    grpc_op ops[2];
    size_t n = 0;
    grpc_call_error err;

    memset(ops, 0, sizeof ops);
    if (!c->initial_md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->initial_md_sent = true;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = buf;
    n++;
    c->write_buf = buf;
    c->write_in_flight = true;
    c->refs++;
    err = rpc_start_batch(c->call, ops, n, &c->write_tag);
    if (err != GRPC_CALL_OK)
        call_batch_failed("write", err);
}

static void call_on_close(rpc_tag *tag, bool ok)
{
    rpc_call *c = RPC_CONTAINER_OF(tag, rpc_call, close_tag);
    rpc_cancel_fn fn = NULL;
    void *ud = NULL;

    pthread_mutex_lock(&c->mu);
    c->ended = true;
    if ((c->close_cancelled || !ok) && !c->completed) {
        c->cancelled = true;
        fn = c->on_cancel;
        ud = c->cancel_ud;
        c->on_cancel = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    /* Outside the lock: the callback may complete the call right here. */
    if (fn)
        fn(c, ud);
    call_unref(c);
}

static void call_on_write(rpc_tag *tag, bool ok)
{
    rpc_call *c = RPC_CONTAINER_OF(tag, rpc_call, write_tag);
    int left;

    pthread_mutex_lock(&c->mu);
    c->write_in_flight = false;
    grpc_byte_buffer_destroy(c->write_buf);
    c->write_buf = NULL;
    if (!ok)
        c->ended = true;
    if (ok && c->qlen > 0 && !c->overflowed) {
        grpc_byte_buffer *next = c->queue[c->qhead];

        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
        c->qbytes -= grpc_byte_buffer_length(next);
        call_start_write_locked(c, next);
    } else if (c->finish_pending && !c->status_started) {
        call_start_status_locked(c);
    }
    /* The close tag may have come back first, and the application may be done. */
    left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0)
        call_free(c);
}

static void call_on_status(rpc_tag *tag, bool ok)
{
    rpc_call *c = RPC_CONTAINER_OF(tag, rpc_call, status_tag);

    call_unref(c);
}

/* ---- the application's side of a call ------------------------------------------------ */

const ProtobufCMessage *rpc_call_request(const rpc_call *call)
{
    return call->req;
}

const char *rpc_call_method(const rpc_call *call)
{
    return call->m->path;
}

int64_t rpc_call_deadline_ms(const rpc_call *call)
{
    return call->deadline_ms;
}

int rpc_call_metadata(const rpc_call *call, const char *key, char *buf, size_t size)
{
    size_t klen = strlen(key);

    for (size_t i = 0; i < call->md.count; i++) {
        const grpc_metadata *e = &call->md.metadata[i];
        size_t vlen = GRPC_SLICE_LENGTH(e->value);

        if (GRPC_SLICE_LENGTH(e->key) != klen || memcmp(GRPC_SLICE_START_PTR(e->key), key, klen))
            continue;
        if (vlen + 1 > size)
            return -ENOSPC;
        memcpy(buf, GRPC_SLICE_START_PTR(e->value), vlen);
        buf[vlen] = '\0';
        return 0;
    }
    return -ENOENT;
}

void rpc_call_set_data(rpc_call *call, uintptr_t data)
{
    call->data = data;
}

uintptr_t rpc_call_data(const rpc_call *call)
{
    return call->data;
}

int rpc_call_on_cancel(rpc_call *call, rpc_cancel_fn fn, void *ud)
{
    int rc = 0;

    pthread_mutex_lock(&call->mu);
    if (call->cancelled || call->ended) {
        rc = -ECANCELED;
    } else {
        call->on_cancel = fn;
        call->cancel_ud = ud;
    }
    pthread_mutex_unlock(&call->mu);
    return rc;
}

bool rpc_call_cancelled(rpc_call *call)
{
    bool r;

    pthread_mutex_lock(&call->mu);
    r = call->cancelled || call->overflowed;
    pthread_mutex_unlock(&call->mu);
    return r;
}

/* Marks the call completed by the application and sends status (after queued writes, unless
 * drop_queue). unary_buf, if any, is the reply. Releases the application's reference. */
static int call_complete(rpc_call *c, grpc_status_code status, const char *message,
                         grpc_byte_buffer *unary_buf, bool drop_queue)
{
    int code = (int)status >= 0 && (int)status < RPC_STATUS_CODES ? (int)status
                                                                   : (int)GRPC_STATUS_UNKNOWN;
    int rc = 0;

    pthread_mutex_lock(&c->mu);
    if (c->completed) {
        pthread_mutex_unlock(&c->mu);
        log_error("rpc call completed twice", "method=%s", c->m->path);
        abort();
    }
    c->completed = true;
    atomic_fetch_add_explicit(&c->m->completed[code], 1, memory_order_relaxed);
    if (c->cancelled || c->ended)
        rc = -ECANCELED;
    if (drop_queue)
        call_drop_queue_locked(c);
    c->fin_status = status;
    grpc_slice_unref(c->fin_details);
    c->fin_details = message ? grpc_slice_from_copied_string(message) : grpc_empty_slice();
    c->unary_buf = unary_buf;
    c->finish_pending = true;
    if (!c->write_in_flight && !c->overflowed)
        call_start_status_locked(c);
    pthread_mutex_unlock(&c->mu);
    call_unref(c);
    return rc;
}

int rpc_call_reply(rpc_call *call, const ProtobufCMessage *resp)
{
    assert(call->m->kind == RPC_UNARY);
    return call_complete(call, GRPC_STATUS_OK, NULL, rpc_pack(resp), false);
}

int rpc_call_fail(rpc_call *call, grpc_status_code status, const char *message)
{
    return call_complete(call, status, message, NULL, true);
}

int rpc_call_finish_with(rpc_call *call, const ProtobufCMessage *last)
{
    assert(call->m->kind == RPC_SERVER_STREAM || call->m->kind == RPC_BIDI_STREAM);
    /* The status batch carries it: one completion instead of a write and then a status. */
    return call_complete(call, GRPC_STATUS_OK, NULL, rpc_pack(last), false);
}

int rpc_call_finish(rpc_call *call, grpc_status_code status, const char *message)
{
    return call_complete(call, status, message, NULL, status != GRPC_STATUS_OK);
}

int rpc_call_send(rpc_call *c, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *buf;
    int rc = 0;

    assert(c->m->kind == RPC_SERVER_STREAM || c->m->kind == RPC_BIDI_STREAM);
    pthread_mutex_lock(&c->mu);
    assert(!c->completed);
    if (c->cancelled || c->ended || c->overflowed) {
        rc = -ECANCELED;
        goto out;
    }
    buf = rpc_pack(msg);
    if (!c->write_in_flight) {
        call_start_write_locked(c, buf);
        goto out;
    }
    /* Bounded in bytes, and in messages far above what a burst of small ones takes (one
     * event per session when many end at once, a tool's progress): only a reader that stays
     * behind fills it, not a writer faster than one write in flight at a time. */
    if (c->qlen >= c->srv->opts.max_stream_queue ||
        c->qbytes + grpc_byte_buffer_length(buf) > c->srv->opts.max_stream_bytes) {
        size_t queued = c->qlen, queued_bytes = c->qbytes;

        /* The reader is too slow: end the stream with a status it can act on rather than
         * buffer without bound. The write in flight may never complete, so cancel. */
        grpc_byte_buffer_destroy(buf);
        call_drop_queue_locked(c);
        c->overflowed = true;
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "slow reader: stream send queue overflowed", NULL);
        log_warn("stream closed: slow reader", "method=%s queued=%zu bytes=%zu", c->m->path,
                 queued, queued_bytes);
        rc = -ENOBUFS;
        goto out;
    }
    if (c->qlen == c->qcap) {
        size_t ncap = c->qcap ? c->qcap * 2 : 16;

        c->queue = ring_grow(c->queue, sizeof *c->queue, c->qcap, c->qhead, c->qlen, ncap);
        c->qcap = ncap;
        c->qhead = 0;
    }
    c->queue[(c->qhead + c->qlen) % c->qcap] = buf;
    c->qlen++;
    c->qbytes += grpc_byte_buffer_length(buf);
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- incoming calls ------------------------------------------------------------------ */

static void call_on_read(rpc_tag *tag, bool ok);

/* Reads buf (destroyed here) as the call's request, replacing the previous one of a bidi
 * stream, and runs the method on it; a message that does not parse fails the call. */
static void call_deliver(rpc_call *c, grpc_byte_buffer *buf)
{
    if (c->req)
        protobuf_c_message_free_unpacked(c->req, NULL);
    c->req = rpc_unpack(c->m->md->input, buf);
    grpc_byte_buffer_destroy(buf);
    if (!c->req)
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "request is not a valid protobuf message");
    else
        c->m->fn(c, c->m->ud);
}

/* Asks for the next client message of a bidi stream (one read in flight at a time). Also
 * when the call already ended on the wire: that read comes back at once without a message,
 * and call_on_read's half-close path is what completes a call the application left open. */
static void call_start_read(rpc_call *c)
{
    grpc_op op;
    grpc_call_error err;

    pthread_mutex_lock(&c->mu);
    if (c->completed) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->refs++;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->read_buf;
    err = rpc_start_batch(c->call, &op, 1, &c->read_tag);
    pthread_mutex_unlock(&c->mu);
    if (err != GRPC_CALL_OK)
        call_batch_failed("recv_message", err);
}

/* A client message of a bidi stream arrived (or the client half-closed: no buffer). */
static void call_on_read(rpc_tag *tag, bool ok)
{
    rpc_call *c = RPC_CONTAINER_OF(tag, rpc_call, read_tag);
    grpc_byte_buffer *buf;
    bool done;

    pthread_mutex_lock(&c->mu);
    buf = c->read_buf;
    c->read_buf = NULL;
    done = c->completed;
    pthread_mutex_unlock(&c->mu);
    if (!ok || !buf) {
        /* Half-close (or the call broke): what was sent is flushed, then OK. */
        if (buf)
            grpc_byte_buffer_destroy(buf);
        if (!done)
            rpc_call_finish(c, GRPC_STATUS_OK, NULL);
        call_unref(c);
        return;
    }
    if (done)
        grpc_byte_buffer_destroy(buf);
    else
        call_deliver(c, buf);
    call_start_read(c);
    call_unref(c);
}

static void server_dispatch(rpc_server *srv, rpc_incoming *in)
{
    rpc_call *c = calloc(1, sizeof *c);
    grpc_op op;
    grpc_call_error err;

    if (!c)
        abort();
    c->srv = srv;
    c->m = in->m;
    c->call = in->call;
    c->md = in->md; /* moved */
    c->fin_details = grpc_empty_slice();
    c->close_tag.fn = call_on_close;
    c->write_tag.fn = call_on_write;
    c->status_tag.fn = call_on_status;
    c->read_tag.fn = call_on_read;
    pthread_mutex_init(&c->mu, NULL);
    c->refs = 2; /* the application and the close tag */
    if (gpr_time_cmp(in->deadline, gpr_inf_future(in->deadline.clock_type)) == 0) {
        c->deadline_ms = INT64_MAX;
    } else {
        gpr_timespec left = gpr_time_sub(gpr_convert_clock_type(in->deadline, GPR_CLOCK_MONOTONIC),
                                         gpr_now(GPR_CLOCK_MONOTONIC));
        c->deadline_ms = rpc_now_ms() + gpr_time_to_millis(left);
    }

    pthread_mutex_lock(&srv->mu);
    srv->live_calls++;
    pthread_mutex_unlock(&srv->mu);

    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    err = rpc_start_batch(c->call, &op, 1, &c->close_tag);
    if (err != GRPC_CALL_OK)
        call_batch_failed("recv_close", err);

    if (c->m->kind == RPC_BIDI_STREAM) {
        call_start_read(c);
        return;
    }
    call_deliver(c, in->payload);
    in->payload = NULL;
}

static void incoming_on_ready(rpc_tag *tag, bool ok)
{
    rpc_incoming *in = (rpc_incoming *)tag;
    rpc_server *srv = in->m->srv;
    bool again;

    pthread_mutex_lock(&srv->mu);
    again = ok && !srv->shutting_down;
    pthread_mutex_unlock(&srv->mu);
    if (ok) {
        /* Keep the method's backlog of requested calls full before running the handler. */
        if (again)
            server_request_one(srv, in->m);
        server_dispatch(srv, in);
    }
    if (in->payload)
        grpc_byte_buffer_destroy(in->payload);
    if (!ok)
        grpc_metadata_array_destroy(&in->md);
    free(in);

    pthread_mutex_lock(&srv->mu);
    srv->pending_requests--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static void server_request_one(rpc_server *srv, rpc_method *m)
{
    rpc_incoming *in = calloc(1, sizeof *in);
    grpc_call_error err;

    if (!in)
        abort();
    in->tag.fn = incoming_on_ready;
    in->m = m;
    grpc_metadata_array_init(&in->md);
    pthread_mutex_lock(&srv->mu);
    srv->pending_requests++;
    pthread_mutex_unlock(&srv->mu);
    RPC_TAG_RELEASE(&in->tag);
    /* gRPC wants no payload slot for methods registered without one (bidi streams). */
    err = grpc_server_request_registered_call(srv->server, m->handle, &in->call, &in->deadline,
                                              &in->md,
                                              m->kind == RPC_BIDI_STREAM ? NULL : &in->payload,
                                              srv->cq, srv->cq, &in->tag);
    if (err != GRPC_CALL_OK) {
        /* Only after shutdown began; the slot is simply dropped. */
        grpc_metadata_array_destroy(&in->md);
        free(in);
        pthread_mutex_lock(&srv->mu);
        srv->pending_requests--;
        pthread_cond_broadcast(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
    }
}

static void unknown_done(rpc_server *srv, rpc_unknown *u)
{
    grpc_call_details_destroy(&u->details);
    grpc_metadata_array_destroy(&u->md);
    grpc_slice_unref(u->status_text);
    if (u->call)
        grpc_call_unref(u->call);
    free(u);
    pthread_mutex_lock(&srv->mu);
    srv->pending_requests--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static void unknown_on_event(rpc_tag *tag, bool ok)
{
    rpc_unknown *u = (rpc_unknown *)tag;
    rpc_server *srv = u->srv;
    grpc_op ops[3];
    char text[300];
    bool again;
    grpc_call_error err;

    if (u->answering || !ok) {
        unknown_done(srv, u);
        return;
    }
    pthread_mutex_lock(&srv->mu);
    again = !srv->shutting_down;
    pthread_mutex_unlock(&srv->mu);
    if (again)
        server_request_unknown(srv);
    snprintf(text, sizeof text, "unknown method %.*s", (int)GRPC_SLICE_LENGTH(u->details.method),
             (const char *)GRPC_SLICE_START_PTR(u->details.method));
    u->status_text = grpc_slice_from_copied_string(text);
    u->answering = true;
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    ops[1].data.send_status_from_server.status_details = &u->status_text;
    ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[2].data.recv_close_on_server.cancelled = &u->cancelled;
    err = rpc_start_batch(u->call, ops, 3, &u->tag);
    if (err != GRPC_CALL_OK)
        call_batch_failed("unimplemented", err);
}

static void server_request_unknown(rpc_server *srv)
{
    rpc_unknown *u = calloc(1, sizeof *u);
    grpc_call_error err;

    if (!u)
        abort();
    u->tag.fn = unknown_on_event;
    u->srv = srv;
    u->status_text = grpc_empty_slice();
    grpc_call_details_init(&u->details);
    grpc_metadata_array_init(&u->md);
    pthread_mutex_lock(&srv->mu);
    srv->pending_requests++;
    pthread_mutex_unlock(&srv->mu);
    RPC_TAG_RELEASE(&u->tag);
    err = grpc_server_request_call(srv->server, &u->call, &u->details, &u->md, srv->cq, srv->cq,
                                   &u->tag);
    if (err != GRPC_CALL_OK)
        unknown_done(srv, u);
}

/* ---- the server ---------------------------------------------------------------------- */

static void server_on_shutdown(rpc_tag *tag, bool ok)
{
    rpc_server *srv = RPC_CONTAINER_OF(tag, rpc_server, shutdown_tag);

    pthread_mutex_lock(&srv->mu);
    srv->shutdown_notified = true;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static void *server_thread(void *arg)
{
    rpc_server *srv = arg;

    rpc_cq_run(srv->cq);
    return NULL;
}

rpc_server *rpc_server_new(const rpc_server_opts *opts)
{
    rpc_server *srv = calloc(1, sizeof *srv);
    grpc_arg args[4];
    grpc_channel_args chargs;

    if (!srv)
        abort();
    rpc_global_init();
    if (opts)
        srv->opts = *opts;
    if (srv->opts.cq_threads <= 0)
        srv->opts.cq_threads = 1;
    if (srv->opts.max_stream_queue == 0)
        srv->opts.max_stream_queue = 16384;
    if (srv->opts.max_stream_bytes == 0)
        srv->opts.max_stream_bytes = 8u << 20;
    if (srv->opts.max_message_bytes == 0)
        srv->opts.max_message_bytes = 16u << 20;
    if (srv->opts.requests_per_method <= 0)
        srv->opts.requests_per_method = 8;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    srv->shutdown_tag.fn = server_on_shutdown;

    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)srv->opts.max_message_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)srv->opts.max_message_bytes;
    /* Accept the clients' keepalive pings on idle streams (rpc_client pings every 10 s);
     * gRPC's default would answer them with GOAWAY "too_many_pings". */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS;
    args[2].value.integer = 1;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = (char *)GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
    args[3].value.integer = 4000;
    chargs.num_args = 4;
    chargs.args = args;
    srv->server = grpc_server_create(&chargs, NULL);
    srv->cq = srv->opts.share_cq ? srv->opts.share_cq->cq
                                 : grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    return srv;
}

int rpc_server_add_method(rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                          const char *method, rpc_kind kind, rpc_handler_fn fn, void *ud)
{
    const ProtobufCMethodDescriptor *md = NULL;
    char *path;
    rpc_method *m;
    rpc_method *nm;

    if (srv->started || !fn)
        return -EINVAL;
    if (!(path = rpc_method_path(svc, method, &md)))
        return -ENOENT;
    nm = realloc(srv->methods, (srv->nmethods + 1) * sizeof *nm);
    if (!nm)
        abort();
    srv->methods = nm;
    m = &srv->methods[srv->nmethods++];
    memset(m, 0, sizeof *m);
    m->srv = srv;
    m->md = md;
    m->path = path;
    m->kind = kind;
    m->fn = fn;
    m->ud = ud;
    /* The path string lives as long as the server: gRPC keeps pointing at it. */
    m->handle = grpc_server_register_method(srv->server, path, NULL,
                                            kind == RPC_BIDI_STREAM
                                                ? GRPC_SRM_PAYLOAD_NONE
                                                : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                            0);
    return m->handle ? 0 : -EINVAL;
}

void rpc_server_counts(rpc_server *srv, rpc_server_count_fn fn, void *ud)
{
    uint64_t counts[RPC_STATUS_CODES];

    /* The method table no longer moves once the server started; before, nothing counts. */
    for (size_t i = 0; i < srv->nmethods; i++) {
        for (int k = 0; k < RPC_STATUS_CODES; k++)
            counts[k] = atomic_load_explicit(&srv->methods[i].completed[k], memory_order_relaxed);
        fn(ud, srv->methods[i].path, counts);
    }
}

int rpc_server_listen(rpc_server *srv, const char *addr, int *bound_port)
{
    grpc_server_credentials *creds;
    int port;

    if (bound_port)
        *bound_port = 0;
    if (srv->started)
        return -EINVAL;
    creds = grpc_insecure_server_credentials_create();
    port = grpc_server_add_http2_port(srv->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0)
        return -EADDRNOTAVAIL;
    if (bound_port)
        *bound_port = port;
    return 0;
}

int rpc_server_start(rpc_server *srv)
{
    if (srv->started)
        return -EINVAL;
    /* rpc_method entries must not move once gRPC holds pointers to them. */
    srv->started = true;
    grpc_server_start(srv->server);
    srv->threads = calloc((size_t)srv->opts.cq_threads, sizeof *srv->threads);
    if (!srv->threads)
        abort();
    for (int i = 0; i < srv->opts.cq_threads && !srv->opts.share_cq; i++) {
        if (pthread_create(&srv->threads[i], NULL, server_thread, srv) != 0)
            abort();
        srv->nthreads++;
    }
    for (size_t i = 0; i < srv->nmethods; i++)
        for (int k = 0; k < srv->opts.requests_per_method; k++)
            server_request_one(srv, &srv->methods[i]);
    server_request_unknown(srv);
    return 0;
}

void rpc_server_shutdown(rpc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    if (srv->shutting_down || !srv->started) {
        srv->shutting_down = true;
        pthread_mutex_unlock(&srv->mu);
        return;
    }
    srv->shutting_down = true;
    pthread_mutex_unlock(&srv->mu);
    RPC_TAG_RELEASE(&srv->shutdown_tag);
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
    /* Long-lived streams would hold shutdown forever: end them now. */
    grpc_server_cancel_all_calls(srv->server);
}

size_t rpc_server_live_calls(rpc_server *srv)
{
    size_t n;

    pthread_mutex_lock(&srv->mu);
    n = srv->live_calls;
    pthread_mutex_unlock(&srv->mu);
    return n;
}

bool rpc_server_stopped(rpc_server *srv)
{
    bool r;

    pthread_mutex_lock(&srv->mu);
    r = srv->shutting_down && (srv->shutdown_notified || !srv->started) && srv->live_calls == 0 &&
        srv->pending_requests == 0;
    pthread_mutex_unlock(&srv->mu);
    return r;
}

/* Waits, on a queue thread's signal, until the shutdown tag came back and no call or
 * request slot of srv is left. */
static void server_wait_done(rpc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    while (!srv->shutdown_notified || srv->live_calls > 0 || srv->pending_requests > 0)
        pthread_cond_wait(&srv->cv, &srv->mu);
    pthread_mutex_unlock(&srv->mu);
}

void rpc_server_free(rpc_server *srv)
{
    if (!srv)
        return;
    if (srv->started) {
        rpc_server_shutdown(srv);
        server_wait_done(srv);
    } else {
        /* Never started, maybe with a listener added: gRPC wants the shutdown called before
         * it destroys such a server. Its tag is drained with the queue below. */
        RPC_TAG_RELEASE(&srv->shutdown_tag);
        grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
    }
    grpc_server_destroy(srv->server);
    if (!srv->opts.share_cq) {
        grpc_completion_queue_shutdown(srv->cq);
        if (srv->nthreads == 0)
            rpc_cq_run(srv->cq); /* never started: drain here */
        for (int i = 0; i < srv->nthreads; i++)
            pthread_join(srv->threads[i], NULL);
        grpc_completion_queue_destroy(srv->cq);
    } else if (!srv->started && srv->opts.share_cq->nthreads > 0) {
        server_wait_done(srv); /* the shutdown tag comes back on the owner's thread */
    } else if (!srv->started) {
        /* Nobody runs the shared queue yet: run it here until the tag came back. */
        while (!srv->shutdown_notified && rpc_cq_step(srv->cq))
            ;
    }
    for (size_t i = 0; i < srv->nmethods; i++)
        free(srv->methods[i].path);
    free(srv->methods);
    free(srv->threads);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
    rpc_global_shutdown();
}
