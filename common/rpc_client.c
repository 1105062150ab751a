/* rpc_client: gRPC client over the core C API. One thread per client always polls the
 * completion queue (a channel only makes progress while its queue is polled), so every
 * callback runs on that thread, one at a time. */
#include "log.h"
#include "rpc_internal.h"

#include <errno.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rpc_regmethod {
    char *path; /* gRPC keeps pointing at it: lives as long as the channel */
    void *handle;
    const ProtobufCMethodDescriptor *md;
} rpc_regmethod;

/* One client call, unary or streaming. */
typedef struct rpc_ccall rpc_ccall;
struct rpc_ccall {
    rpc_tag start_tag;  /* unary: the whole call; stream: send + initial metadata */
    rpc_tag status_tag; /* stream only */
    rpc_tag recv_tag;   /* stream only */
    rpc_client *cli;
    rpc_ccall *prev, *next;
    grpc_call *call;
    bool stream;
    int pending; /* tags outstanding */
    const ProtobufCMessageDescriptor *resp_desc;

    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    grpc_byte_buffer *send_buf;
    grpc_byte_buffer *recv_buf;
    grpc_status_code status;
    grpc_slice details;
    bool status_seen;

    rpc_unary_cb unary_cb;
    rpc_stream_msg_cb on_message;
    rpc_stream_close_cb on_close;
    void *ud;
};

struct rpc_client {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    pthread_t thread;
    char *target;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_ccall *calls; /* live calls, for cancel-all */
    size_t live;
    bool closing;
    rpc_regmethod *methods;
    size_t nmethods;
    grpc_metadata auth;   /* key and value slices owned; count 0 when auth_n == 0 */
    size_t auth_n;
};

/* The metadata every call of cli sends first. */
static void client_initial_md(rpc_client *cli, grpc_op *op)
{
    op->data.send_initial_metadata.count = cli->auth_n;
    op->data.send_initial_metadata.metadata = cli->auth_n ? &cli->auth : NULL;
}

static void *client_thread(void *arg)
{
    rpc_client *cli = arg;

    rpc_cq_run(cli->cq);
    return NULL;
}

rpc_client *rpc_client_new(const char *target, const rpc_client_opts *opts)
{
    rpc_client *cli = calloc(1, sizeof *cli);
    rpc_client_opts o = {0};
    grpc_channel_credentials *creds;
    grpc_arg args[10];
    grpc_channel_args chargs;
    size_t n = 0;

    if (!cli)
        abort();
    rpc_global_init();
    if (opts)
        o = *opts;
    if (o.initial_backoff_ms <= 0)
        o.initial_backoff_ms = 100;
    if (o.max_backoff_ms <= 0)
        o.max_backoff_ms = 1000;
    if (o.keepalive_ms == 0)
        o.keepalive_ms = 10000;
    if (o.max_message_bytes == 0)
        o.max_message_bytes = 16u << 20;
    if (!(cli->target = strdup(target)))
        abort();
    if (o.authorization) {
        cli->auth.key = grpc_slice_from_static_string("authorization");
        cli->auth.value = grpc_slice_from_copied_string(o.authorization);
        cli->auth_n = 1;
    }
    pthread_mutex_init(&cli->mu, NULL);
    pthread_cond_init(&cli->cv, NULL);

    /* Reconnect quickly after the server comes back: the edge's readiness depends on it.
     * GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is left alone: gRPC uses it as the connect timeout,
     * and a small one fails every handshake on a loaded machine. */
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[n++].value.integer = o.initial_backoff_ms;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[n++].value.integer = o.max_backoff_ms;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[n++].value.integer = (int)o.max_message_bytes;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[n++].value.integer = (int)o.max_message_bytes;
    if (o.keepalive_ms > 0) {
        /* A peer that vanished without a FIN (host down, partition) is noticed by pings. */
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = (char *)GRPC_ARG_KEEPALIVE_TIME_MS;
        args[n++].value.integer = o.keepalive_ms;
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS;
        args[n++].value.integer = o.keepalive_ms / 2 > 1000 ? o.keepalive_ms / 2 : 1000;
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = (char *)GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS;
        args[n++].value.integer = 1;
        /* A long-lived stream may carry no data for minutes; gRPC stops pinging after two
         * pings without data unless told otherwise, and then a vanished peer goes unseen. */
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = (char *)GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA;
        args[n++].value.integer = 0;
    }
    chargs.num_args = n;
    chargs.args = args;
    creds = grpc_insecure_credentials_create();
    cli->ch = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    cli->cq = grpc_completion_queue_create_for_next(NULL);
    if (pthread_create(&cli->thread, NULL, client_thread, cli) != 0)
        abort();
    return cli;
}

grpc_connectivity_state rpc_client_state(rpc_client *cli, bool try_to_connect)
{
    return grpc_channel_check_connectivity_state(cli->ch, try_to_connect);
}

/* Finds or registers svc's method; copies its handle and descriptor out (the table may
 * move). Returns 0 or -ENOENT when svc has no such method. Any thread. */
static int client_method(rpc_client *cli, const ProtobufCServiceDescriptor *svc,
                         const char *method, void **handle, const ProtobufCMethodDescriptor **md)
{
    const ProtobufCMethodDescriptor *want = NULL;
    rpc_regmethod *nm;
    char *path;

    for (unsigned i = 0; i < svc->n_methods && !want; i++)
        if (strcmp(svc->methods[i].name, method) == 0)
            want = &svc->methods[i];
    if (!want)
        return -ENOENT;
    *md = want;
    pthread_mutex_lock(&cli->mu);
    for (size_t i = 0; i < cli->nmethods; i++) {
        if (cli->methods[i].md == want) {
            *handle = cli->methods[i].handle;
            pthread_mutex_unlock(&cli->mu);
            return 0;
        }
    }
    path = rpc_method_path(svc, method, NULL);
    nm = realloc(cli->methods, (cli->nmethods + 1) * sizeof *nm);
    if (!nm || !path)
        abort();
    cli->methods = nm;
    nm[cli->nmethods].path = path;
    nm[cli->nmethods].md = want;
    nm[cli->nmethods].handle = *handle = grpc_channel_register_call(cli->ch, path, NULL, NULL);
    cli->nmethods++;
    pthread_mutex_unlock(&cli->mu);
    return 0;
}

static rpc_ccall *ccall_new(rpc_client *cli, void *handle, int64_t timeout_ms)
{
    rpc_ccall *cc = calloc(1, sizeof *cc);

    if (!cc)
        abort();
    cc->cli = cli;
    cc->details = grpc_empty_slice();
    grpc_metadata_array_init(&cc->initial_md);
    grpc_metadata_array_init(&cc->trailing_md);
    cc->call = grpc_channel_create_registered_call(cli->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cli->cq,
                                                   handle, rpc_deadline_from_timeout(timeout_ms),
                                                   NULL);
    return cc;
}

/* Links cc into the live list; fails with -ECANCELED while the client is closing. */
static int ccall_link(rpc_ccall *cc)
{
    rpc_client *cli = cc->cli;
    int rc = 0;

    pthread_mutex_lock(&cli->mu);
    if (cli->closing) {
        rc = -ECANCELED;
    } else {
        cc->next = cli->calls;
        if (cli->calls)
            cli->calls->prev = cc;
        cli->calls = cc;
        cli->live++;
    }
    pthread_mutex_unlock(&cli->mu);
    return rc;
}

static void ccall_free(rpc_ccall *cc, bool linked)
{
    rpc_client *cli = cc->cli;

    if (linked) {
        pthread_mutex_lock(&cli->mu);
        if (cc->prev)
            cc->prev->next = cc->next;
        else
            cli->calls = cc->next;
        if (cc->next)
            cc->next->prev = cc->prev;
        cli->live--;
        pthread_cond_broadcast(&cli->cv);
        pthread_mutex_unlock(&cli->mu);
    }
    if (cc->send_buf)
        grpc_byte_buffer_destroy(cc->send_buf);
    if (cc->recv_buf)
        grpc_byte_buffer_destroy(cc->recv_buf);
    grpc_metadata_array_destroy(&cc->initial_md);
    grpc_metadata_array_destroy(&cc->trailing_md);
    grpc_slice_unref(cc->details);
    if (cc->call)
        grpc_call_unref(cc->call);
    free(cc);
}

/* Copies the status details into a NUL-terminated buffer. */
static void ccall_details(const rpc_ccall *cc, char *buf, size_t size)
{
    size_t len = GRPC_SLICE_LENGTH(cc->details);

    if (len >= size)
        len = size - 1;
    memcpy(buf, GRPC_SLICE_START_PTR(cc->details), len);
    buf[len] = '\0';
}

/* ---- unary ---------------------------------------------------------------------------- */

static void unary_on_done(rpc_tag *tag, bool ok)
{
    rpc_ccall *cc = (rpc_ccall *)tag;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st = cc->status;
    char msg[512];

    ccall_details(cc, msg, sizeof msg);
    if (!ok) {
        st = GRPC_STATUS_UNAVAILABLE;
        snprintf(msg, sizeof msg, "call failed before completion");
    } else if (st == GRPC_STATUS_OK) {
        resp = rpc_unpack(cc->resp_desc, cc->recv_buf);
        if (!resp) {
            st = GRPC_STATUS_INTERNAL;
            snprintf(msg, sizeof msg, "response is not a valid protobuf message");
        }
    }
    cc->unary_cb(cc->ud, st, msg, resp);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    ccall_free(cc, true);
}

int rpc_client_unary(rpc_client *cli, const ProtobufCServiceDescriptor *svc,
                     const char *method, const ProtobufCMessage *req, int64_t timeout_ms,
                     rpc_unary_cb cb, void *ud)
{
    const ProtobufCMethodDescriptor *md;
    void *handle;
    rpc_ccall *cc;
    grpc_op ops[6];
    grpc_call_error err;
    int rc;

    if ((rc = client_method(cli, svc, method, &handle, &md)) < 0)
        return rc;
    cc = ccall_new(cli, handle, timeout_ms);
    if ((rc = ccall_link(cc)) < 0) {
        ccall_free(cc, false);
        return rc;
    }
    cc->start_tag.fn = unary_on_done;
    cc->resp_desc = md->output;
    cc->unary_cb = cb;
    cc->ud = ud;
    cc->send_buf = rpc_pack(req);

    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    client_initial_md(cli, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = cc->send_buf;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &cc->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &cc->recv_buf;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &cc->trailing_md;
    ops[5].data.recv_status_on_client.status = &cc->status;
    ops[5].data.recv_status_on_client.status_details = &cc->details;
    err = rpc_start_batch(cc->call, ops, 6, &cc->start_tag);
    if (err != GRPC_CALL_OK) {
        log_error("grpc unary call rejected", "method=%s error=%d", md->name, (int)err);
        ccall_free(cc, true);
        return -EIO;
    }
    return 0;
}

/* ---- streams -------------------------------------------------------------------------- */

static void stream_recv_next(rpc_ccall *cc);

/* One of the stream's tags came back; the last one closes the stream. */
static void stream_tag_done(rpc_ccall *cc)
{
    char msg[512];

    if (--cc->pending > 0)
        return;
    ccall_details(cc, msg, sizeof msg);
    if (!cc->status_seen) {
        cc->status = GRPC_STATUS_UNAVAILABLE;
        snprintf(msg, sizeof msg, "stream failed before a status arrived");
    }
    cc->on_close(cc->ud, cc->status, msg);
    ccall_free(cc, true);
}

static void stream_on_start(rpc_tag *tag, bool ok)
{
    rpc_ccall *cc = RPC_CONTAINER_OF(tag, rpc_ccall, start_tag);

    stream_tag_done(cc);
}

static void stream_on_status(rpc_tag *tag, bool ok)
{
    rpc_ccall *cc = RPC_CONTAINER_OF(tag, rpc_ccall, status_tag);

    cc->status_seen = ok;
    stream_tag_done(cc);
}

static void stream_on_recv(rpc_tag *tag, bool ok)
{
    rpc_ccall *cc = RPC_CONTAINER_OF(tag, rpc_ccall, recv_tag);
    ProtobufCMessage *msg;

    if (!ok || !cc->recv_buf) {
        stream_tag_done(cc); /* end of stream (or the call failed) */
        return;
    }
    msg = rpc_unpack(cc->resp_desc, cc->recv_buf);
    grpc_byte_buffer_destroy(cc->recv_buf);
    cc->recv_buf = NULL;
    if (!msg) {
        grpc_call_cancel_with_status(cc->call, GRPC_STATUS_INTERNAL,
                                     "stream message is not a valid protobuf message", NULL);
    } else {
        cc->on_message(cc->ud, msg);
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    stream_recv_next(cc);
}

static void stream_recv_next(rpc_ccall *cc)
{
    grpc_op op;
    grpc_call_error err;

    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &cc->recv_buf;
    err = rpc_start_batch(cc->call, &op, 1, &cc->recv_tag);
    if (err != GRPC_CALL_OK) {
        log_error("grpc recv rejected", "error=%d", (int)err);
        abort();
    }
}

rpc_stream *rpc_client_stream(rpc_client *cli, const ProtobufCServiceDescriptor *svc,
                              const char *method, const ProtobufCMessage *req,
                              int64_t timeout_ms, bool wait_for_ready,
                              rpc_stream_msg_cb on_message, rpc_stream_close_cb on_close,
                              void *ud)
{
    const ProtobufCMethodDescriptor *md;
    void *handle;
    rpc_ccall *cc;
    grpc_op ops[4];
    grpc_call_error err;

    if (client_method(cli, svc, method, &handle, &md) < 0)
        return NULL;
    cc = ccall_new(cli, handle, timeout_ms);
    if (ccall_link(cc) < 0) {
        ccall_free(cc, false);
        return NULL;
    }
    cc->stream = true;
    cc->start_tag.fn = stream_on_start;
    cc->status_tag.fn = stream_on_status;
    cc->recv_tag.fn = stream_on_recv;
    cc->resp_desc = md->output;
    cc->on_message = on_message;
    cc->on_close = on_close;
    cc->ud = ud;
    cc->send_buf = rpc_pack(req);
    cc->pending = 3;

    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    client_initial_md(cli, &ops[0]);
    if (wait_for_ready)
        ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                       GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = cc->send_buf;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &cc->initial_md;
    err = rpc_start_batch(cc->call, ops, 4, &cc->start_tag);
    if (err != GRPC_CALL_OK) {
        log_error("grpc stream rejected", "method=%s error=%d", md->name, (int)err);
        ccall_free(cc, true);
        return NULL;
    }
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &cc->trailing_md;
    ops[0].data.recv_status_on_client.status = &cc->status;
    ops[0].data.recv_status_on_client.status_details = &cc->details;
    err = rpc_start_batch(cc->call, ops, 1, &cc->status_tag);
    if (err != GRPC_CALL_OK) {
        log_error("grpc stream status rejected", "error=%d", (int)err);
        abort();
    }
    stream_recv_next(cc);
    return (rpc_stream *)cc;
}

void rpc_stream_cancel(rpc_stream *st)
{
    rpc_ccall *cc = (rpc_ccall *)st;

    grpc_call_cancel(cc->call, NULL);
}

void rpc_client_free(rpc_client *cli)
{
    if (!cli)
        return;
    pthread_mutex_lock(&cli->mu);
    cli->closing = true;
    for (rpc_ccall *cc = cli->calls; cc; cc = cc->next)
        grpc_call_cancel(cc->call, NULL);
    while (cli->live > 0)
        pthread_cond_wait(&cli->cv, &cli->mu);
    pthread_mutex_unlock(&cli->mu);

    grpc_channel_destroy(cli->ch);
    grpc_completion_queue_shutdown(cli->cq);
    pthread_join(cli->thread, NULL);
    grpc_completion_queue_destroy(cli->cq);
    for (size_t i = 0; i < cli->nmethods; i++)
        free(cli->methods[i].path);
    free(cli->methods);
    free(cli->target);
    if (cli->auth_n)
        grpc_slice_unref(cli->auth.value);
    pthread_cond_destroy(&cli->cv);
    pthread_mutex_destroy(&cli->mu);
    free(cli);
    rpc_global_shutdown();
}
