/* jr: JSON-RPC 2.0 message validation shared by edge and control. Parses a bounded body
 * (one message or a batch array), rejects what JSON-RPC and MCP forbid, and classifies each
 * message. Errors carry the JSON-RPC code, a fixed message and the id when one was read. */
#ifndef MCPHUB_JR_H
#define MCPHUB_JR_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* JSON-RPC 2.0 error codes. */
#define JR_PARSE_ERROR (-32700)
#define JR_INVALID_REQUEST (-32600)
#define JR_METHOD_NOT_FOUND (-32601)
#define JR_INVALID_PARAMS (-32602)
#define JR_INTERNAL_ERROR (-32603)
/* Implementation-defined server errors, as the MCP SDKs use them at the transport. */
#define JR_SERVER_ERROR (-32000)
#define JR_SESSION_NOT_FOUND (-32001)
#define JR_RESOURCE_NOT_FOUND (-32002) /* MCP: resources/read of an unknown URI */

#define JR_DEFAULT_MAX_DEPTH 64
#define JR_DEFAULT_MAX_BATCH 64
#define JR_METHOD_MAX 256 /* bytes of a method name */

typedef enum {
    JR_REQUEST = 0,      /* method + id */
    JR_NOTIFICATION = 1, /* method, no id */
    JR_RESULT = 2,       /* id + result */
    JR_ERROR = 3,        /* error (+ id, which may be null or absent) */
} jr_kind;

/* One validated message. Every pointer is borrowed from the jr_body that holds it. */
typedef struct {
    jr_kind kind;
    json_t *msg;        /* the message object */
    json_t *id;         /* string or integer; NULL for notifications (and id-less errors) */
    const char *method; /* requests and notifications; NULL otherwise */
} jr_msg;

/* A parsed body: one message, or a batch of them (batch true even for a 1-element array). */
typedef struct {
    json_t *root; /* owned: the parsed document */
    bool batch;
    size_t n;     /* >= 1 */
    jr_msg *msgs; /* owned: n entries */
} jr_body;

typedef struct {
    size_t max_bytes; /* larger input is an error (JR_INVALID_REQUEST); 0 = no limit */
    int max_depth;    /* nesting of arrays and objects; 0 = JR_DEFAULT_MAX_DEPTH */
    size_t max_batch; /* messages in a batch array; 0 = JR_DEFAULT_MAX_BATCH */
    bool allow_batch; /* false: an array is JR_INVALID_REQUEST */
} jr_limits;

typedef struct {
    int code;         /* JR_PARSE_ERROR or JR_INVALID_REQUEST */
    char message[96]; /* fixed text naming the rule (no input bytes in it) */
    json_t *id;       /* new reference to the offending message's id, or NULL */
    size_t index;     /* position in a batch (0 for a single message) */
} jr_error;

/* Parses and validates len bytes of text (need not be NUL-terminated). On success returns 0
 * and *out owns a new body. On failure returns a negative code (-EINVAL, or -E2BIG when the
 * input exceeds lim->max_bytes or the depth/batch limits), leaves *out NULL and fills err
 * (release it with jr_error_cleanup). lim may be NULL (defaults, batches allowed). Any thread. */
int jr_parse(const char *text, size_t len, const jr_limits *lim, jr_body **out, jr_error *err);

/* Frees a body. jr_body_free(NULL) does nothing. */
void jr_body_free(jr_body *b);

/* Drops err's id reference; err may be reused afterwards. */
void jr_error_cleanup(jr_error *err);

/* Nesting depth of a JSON text (arrays and objects, strings skipped), stopping early once
 * limit is exceeded (then returns limit + 1). Garbage in gives some number; never reads past
 * len. */
int jr_depth(const char *text, size_t len, int limit);

/* True when b holds a request whose method is "initialize". */
bool jr_body_has_initialize(const jr_body *b);

/* Counts b's messages of one kind. */
size_t jr_body_count(const jr_body *b, jr_kind kind);

/* Builds the text of a JSON-RPC error response {"jsonrpc":"2.0","id":ID,"error":{"code":C,
 * "message":M}} with id NULL written as null (id is borrowed; message is copied and escaped).
 * data, when not NULL, becomes the error's "data" member (borrowed); NULL leaves it out.
 * Returns a new malloc'd string (caller frees). OOM aborts. Any thread. */
char *jr_error_response(int code, const char *message, const json_t *id, const json_t *data);

/* Serializes msg compactly (new malloc'd string, caller frees). OOM aborts. */
char *jr_dump(const json_t *msg);

/* Copies a printable form of an id into buf for logs: digits, or the string with every byte
 * outside [A-Za-z0-9._:@/+=-] replaced by '_', or "null". */
void jr_id_text(const json_t *id, char *buf, size_t size);

#endif
