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

/* Serializes msg into a new byte buffer (caller owns it). */
grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg);

/* Unpacks buf as desc; returns a new message (free with protobuf_c_message_free_unpacked)
 * or NULL when the bytes are not a valid message. buf stays owned by the caller. */
ProtobufCMessage *rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *buf);

/* "/" + svc->name + "/" + method, in a new string; NULL when svc has no such method. */
char *rpc_method_path(const ProtobufCServiceDescriptor *svc, const char *method,
                      const ProtobufCMethodDescriptor **md_out);

/* Runs the completion queue until it is shut down, dispatching rpc_tag callbacks. */
void rpc_cq_run(grpc_completion_queue *cq);

gpr_timespec rpc_deadline_from_timeout(int64_t timeout_ms);

#endif
