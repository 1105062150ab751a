/* rpc_reflection: answers reflection requests from the descriptors proto/ embeds. Both
 * protocol versions share one wire format, so a v1 request is re-read as its v1alpha twin
 * and every answer is built as v1alpha (its bytes are the v1 answer too). Runs on
 * completion-queue threads; its data is read-only after rpc_reflection_new. */
#include "rpc_reflection.h"

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "mcphub_descriptors.h"
#include "rpc_internal.h"

#include <stdlib.h>
#include <string.h>

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest refl_req;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse refl_resp;

struct rpc_reflection {
    char **services;
    size_t n;
};

rpc_reflection *rpc_reflection_new(const char *const *services, size_t n)
{
    static const char *const self[] = {"grpc.reflection.v1.ServerReflection",
                                       "grpc.reflection.v1alpha.ServerReflection"};
    rpc_reflection *r = calloc(1, sizeof *r);

    if (!r || !(r->services = calloc(n + 2, sizeof *r->services)))
        abort();
    for (size_t i = 0; i < n + 2; i++)
        if (!(r->services[i] = strdup(i < n ? services[i] : self[i - n])))
            abort();
    r->n = n + 2;
    return r;
}

void rpc_reflection_free(rpc_reflection *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->services[i]);
    free(r->services);
    free(r);
}

/* The FileDescriptorProto inside a one-file FileDescriptorSet (field 1, length-delimited). */
static ProtobufCBinaryData file_proto(const mcphub_proto_file *f)
{
    ProtobufCBinaryData out = {0, NULL};
    size_t len = 0, i = 1;
    unsigned shift = 0;

    if (f->set_len < 2 || f->set[0] != 0x0a)
        return out;
    while (i < f->set_len && shift < 35) {
        len |= (size_t)(f->set[i] & 0x7f) << shift;
        shift += 7;
        if (!(f->set[i++] & 0x80))
            break;
    }
    if (len > f->set_len - i)
        return out;
    out.data = (uint8_t *)(uintptr_t)(f->set + i);
    out.len = len;
    return out;
}

static const mcphub_proto_file *by_name(const char *name)
{
    for (size_t i = 0; i < mcphub_proto_n_files; i++)
        if (strcmp(mcphub_proto_files[i].name, name) == 0)
            return &mcphub_proto_files[i];
    return NULL;
}

/* The file that declares symbol: a top-level type or service, or something inside one (a
 * nested type, a field, a method: "mcphub.v1.Admin.ListServers"). */
static const mcphub_proto_file *by_symbol(const char *symbol)
{
    for (size_t i = 0; i < mcphub_proto_n_files; i++) {
        for (const char *const *s = mcphub_proto_files[i].symbols; *s; s++) {
            size_t n = strlen(*s);

            if (strncmp(symbol, *s, n) == 0 && (symbol[n] == '\0' || symbol[n] == '.'))
                return &mcphub_proto_files[i];
        }
    }
    return NULL;
}

static void refl_handle(rpc_call *call, void *ud)
{
    rpc_reflection *r = ud;
    const ProtobufCMessage *in = rpc_call_request(call);
    bool alpha = strstr(rpc_call_method(call), "v1alpha") != NULL;
    refl_req *q = alpha ? (refl_req *)in : NULL;
    refl_resp resp = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__FileDescriptorResponse files =
        GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ListServiceResponse list =
        GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ErrorResponse error = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ServiceResponse *svcs = NULL, **svc_ptrs = NULL;
    ProtobufCBinaryData one;
    const mcphub_proto_file *f = NULL;

    if (!alpha) {
        grpc_byte_buffer *bytes = rpc_pack(in);

        q = (refl_req *)rpc_unpack(&grpc__reflection__v1alpha__server_reflection_request__descriptor,
                                   bytes);
        grpc_byte_buffer_destroy(bytes);
    }
    if (!q) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "not a ServerReflectionRequest");
        return;
    }
    resp.valid_host = q->host;
    resp.original_request = q;
    switch (q->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        f = by_name(q->file_by_filename);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        f = by_symbol(q->file_containing_symbol);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        if (!(svcs = calloc(r->n, sizeof *svcs)) || !(svc_ptrs = calloc(r->n, sizeof *svc_ptrs)))
            abort();
        for (size_t i = 0; i < r->n; i++) {
            grpc__reflection__v1alpha__service_response__init(&svcs[i]);
            svcs[i].name = r->services[i];
            svc_ptrs[i] = &svcs[i];
        }
        list.n_service = r->n;
        list.service = svc_ptrs;
        resp.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp.list_services_response = &list;
        break;
    default:
        break;
    }
    if (f && (one = file_proto(f)).data) {
        /* No file here imports another, so each answer is complete on its own. */
        files.n_file_descriptor_proto = 1;
        files.file_descriptor_proto = &one;
        resp.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        resp.file_descriptor_response = &files;
    } else if (resp.message_response_case ==
               GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE__NOT_SET) {
        bool lookup =
            q->message_request_case ==
                GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME ||
            q->message_request_case ==
                GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
        bool empty = q->message_request_case ==
                     GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST__NOT_SET;

        error.error_code = empty ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_NOT_FOUND;
        error.error_message = (char *)(lookup  ? "not found"
                                       : empty ? "empty request"
                                               : "this server defines no extensions");
        resp.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp.error_response = &error;
    }
    /* Sent as bytes: the v1alpha answer is the v1 answer too. */
    rpc_call_send(call, &resp.base);
    free(svc_ptrs);
    free(svcs);
    if (!alpha)
        grpc__reflection__v1alpha__server_reflection_request__free_unpacked(q, NULL);
}

int rpc_reflection_register(rpc_reflection *r, rpc_server *srv)
{
    int rc;

    if ((rc = rpc_server_add_method(srv, &grpc__reflection__v1alpha__server_reflection__descriptor,
                                    "ServerReflectionInfo", RPC_BIDI_STREAM, refl_handle, r)) < 0)
        return rc;
    return rpc_server_add_method(srv, &grpc__reflection__v1__server_reflection__descriptor,
                                 "ServerReflectionInfo", RPC_BIDI_STREAM, refl_handle, r);
}
