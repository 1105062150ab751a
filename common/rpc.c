/* rpc: process-wide gRPC setup and the helpers the server and client share. */
#include "rpc_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t rpc_global_mu = PTHREAD_MUTEX_INITIALIZER;
static int rpc_global_refs;

void rpc_global_init(void)
{
    pthread_mutex_lock(&rpc_global_mu);
    if (rpc_global_refs++ == 0)
        grpc_init();
    pthread_mutex_unlock(&rpc_global_mu);
}

void rpc_global_shutdown(void)
{
    pthread_mutex_lock(&rpc_global_mu);
    /* grpc_shutdown() returns before gRPC's own threads are gone; the blocking variant
     * makes exit (and leak checkers) see a quiet process. */
    if (rpc_global_refs > 0 && --rpc_global_refs == 0)
        grpc_shutdown_blocking();
    pthread_mutex_unlock(&rpc_global_mu);
}

int64_t rpc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

gpr_timespec rpc_deadline_from_timeout(int64_t timeout_ms)
{
    if (timeout_ms <= 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(len);
    grpc_byte_buffer *bb;

    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

ProtobufCMessage *rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *buf)
{
    grpc_byte_buffer_reader reader;
    grpc_slice all;
    ProtobufCMessage *msg;

    if (!buf || !grpc_byte_buffer_reader_init(&reader, buf))
        return NULL;
    all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return msg;
}

char *rpc_method_path(const ProtobufCServiceDescriptor *svc, const char *method,
                      const ProtobufCMethodDescriptor **md_out)
{
    char *path;

    for (unsigned i = 0; i < svc->n_methods; i++) {
        if (strcmp(svc->methods[i].name, method) != 0)
            continue;
        if (asprintf(&path, "/%s/%s", svc->name, method) < 0)
            abort();
        if (md_out)
            *md_out = &svc->methods[i];
        return path;
    }
    return NULL;
}

bool rpc_cq_step(grpc_completion_queue *cq)
{
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

    if (ev.type == GRPC_QUEUE_SHUTDOWN)
        return false;
    if (ev.type == GRPC_OP_COMPLETE) {
        rpc_tag *tag = ev.tag;

        RPC_TAG_ACQUIRE(tag);
        tag->fn(tag, ev.success != 0);
    }
    return true;
}

void rpc_cq_run(grpc_completion_queue *cq)
{
    while (rpc_cq_step(cq))
        ;
}

const char *rpc_status_name(grpc_status_code status)
{
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED"};

    if ((int)status >= 0 && (size_t)status < sizeof names / sizeof names[0])
        return names[status];
    return "UNKNOWN";
}
