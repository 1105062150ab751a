/* rpc_internal: pieces shared by the rpc server and client (not part of the public API). */
#ifndef MCPHUB_RPC_INTERNAL_H
#define MCPHUB_RPC_INTERNAL_H

#include "rpc.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>
#include <stddef.h>

/* Every completion-queue tag starts with this; the polling thread calls fn(tag, ok). */
typedef struct rpc_tag rpc_tag;
struct rpc_tag {
    void (*fn)(rpc_tag *tag, bool ok);
};

/* The struct that contains member `member` at ptr (tags are embedded in their owners). */
#define RPC_CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* gRPC core is not built with ThreadSanitizer, so TSan cannot see that handing a tag to a
 * batch and getting it back from the completion queue orders the two threads. Say so. */
#if defined(__SANITIZE_THREAD__)
#define RPC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RPC_TSAN 1
#endif
#endif
#ifdef RPC_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define RPC_TAG_RELEASE(tag) __tsan_release(tag)
#define RPC_TAG_ACQUIRE(tag) __tsan_acquire(tag)
#else
#define RPC_TAG_RELEASE(tag) ((void)(tag))
#define RPC_TAG_ACQUIRE(tag) ((void)(tag))
#endif

/* grpc_call_start_batch with the tag published to the completion-queue thread. */
static inline grpc_call_error rpc_start_batch(grpc_call *call, const grpc_op *ops, size_t n,
                                              rpc_tag *tag)
{
    RPC_TAG_RELEASE(tag);
    return grpc_call_start_batch(call, ops, n, tag, NULL);
}

/* Serializes msg into a new byte buffer (caller owns it). */
grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg);

/* Unpacks buf as desc; returns a new message (free with protobuf_c_message_free_unpacked)
 * or NULL when the bytes are not a valid message. buf stays owned by the caller. */
ProtobufCMessage *rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *buf);

/* "/" + svc->name + "/" + method, in a new string; NULL when svc has no such method. */
char *rpc_method_path(const ProtobufCServiceDescriptor *svc, const char *method,
                      const ProtobufCMethodDescriptor **md_out);

/* Waits for the queue's next event and dispatches its rpc_tag callback; false once the queue
 * is shut down. */
bool rpc_cq_step(grpc_completion_queue *cq);

/* Runs the completion queue until it is shut down, dispatching rpc_tag callbacks. */
void rpc_cq_run(grpc_completion_queue *cq);

gpr_timespec rpc_deadline_from_timeout(int64_t timeout_ms);

#endif
