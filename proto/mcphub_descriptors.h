/* The .proto files control serves, as serialized descriptors, for gRPC server reflection
 * (common/rpc_reflection.c). Generated at build time from the files themselves. */
#ifndef MCPHUB_DESCRIPTORS_H
#define MCPHUB_DESCRIPTORS_H

#include <stddef.h>

typedef struct mcphub_proto_file {
    const char *name;              /* as imported: "mcphub/v1/admin.proto" */
    const unsigned char *set;      /* a FileDescriptorSet holding just this file */
    size_t set_len;
    const char *const *symbols;    /* top-level messages, enums, services; NULL-terminated */
} mcphub_proto_file;

extern const mcphub_proto_file mcphub_proto_files[];
extern const size_t mcphub_proto_n_files;

#endif
