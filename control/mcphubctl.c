/* mcphubctl: the command line of control's Admin service. Every Admin call is a command;
 * replies print as tables (lists) or `field: value` lines, or as JSON with --json (proto3's
 * JSON mapping: lowerCamelCase names, 64-bit integers as strings, defaults included). Exit
 * codes scripts can trust: 0 done, 1 control refused (not found, invalid, ...), 2 usage,
 * 3 control unreachable or too slow, 4 authentication failed. */
#include "rpc.h"

#include "mcphub/v1/admin.pb-c.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3, EXIT_AUTH = 4 };

#define CTL_MAX_INPUT (1u << 20) /* a settings entry read from a file or stdin */

/* ---- one unary call, waited for ------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    grpc_status_code status;
    char message[512];
    uint8_t *packed; /* the reply, packed: the runtime frees its copy after the callback */
    size_t packed_len;
} waiter;

static void on_reply(void *ud, grpc_status_code status, const char *message,
                     const ProtobufCMessage *resp)
{
    waiter *w = ud;

    pthread_mutex_lock(&w->mu);
    w->status = status;
    snprintf(w->message, sizeof w->message, "%s", message ? message : "");
    if (status == GRPC_STATUS_OK && resp) {
        w->packed_len = protobuf_c_message_get_packed_size(resp);
        if (!(w->packed = malloc(w->packed_len ? w->packed_len : 1)))
            abort();
        protobuf_c_message_pack(resp, w->packed);
    }
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int exit_code_for(grpc_status_code st)
{
    switch (st) {
    case GRPC_STATUS_OK:
        return EXIT_OK;
    case GRPC_STATUS_UNAVAILABLE:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_CANCELLED:
        return EXIT_UNREACHABLE;
    case GRPC_STATUS_UNAUTHENTICATED:
    case GRPC_STATUS_PERMISSION_DENIED:
        return EXIT_AUTH;
    default:
        return EXIT_REFUSED;
    }
}

/* Calls method with req; on success *out is the reply (free with
 * protobuf_c_message_free_unpacked). Returns an exit code; errors are printed. */
static int call_admin(rpc_client *cli, const char *method, const ProtobufCMessage *req,
                      int64_t timeout_ms, ProtobufCMessage **out)
{
    const ProtobufCMethodDescriptor *md =
        protobuf_c_service_descriptor_get_method_by_name(&mcphub__v1__admin__descriptor, method);
    waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    int rc;

    *out = NULL;
    if (rpc_client_unary(cli, &mcphub__v1__admin__descriptor, method, req, timeout_ms, on_reply,
                         &w) < 0) {
        fprintf(stderr, "mcphubctl: cannot start %s\n", method);
        return EXIT_UNREACHABLE;
    }
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    rc = exit_code_for(w.status);
    if (rc != EXIT_OK) {
        fprintf(stderr, "mcphubctl: %s: %s%s%s\n", method, rpc_status_name(w.status),
                w.message[0] ? ": " : "", w.message);
    } else {
        *out = protobuf_c_message_unpack(md->output, NULL, w.packed_len, w.packed);
        if (!*out) {
            fprintf(stderr, "mcphubctl: %s: the reply does not parse\n", method);
            rc = EXIT_REFUSED;
        }
    }
    free(w.packed);
    return rc;
}

/* ---- printing -------------------------------------------------------------------------- */

/* proto3 JSON name: lower_snake to lowerCamel. */
static void json_name(const char *name, char *buf, size_t size)
{
    size_t n = 0;
    bool up = false;

    for (const char *p = name; *p && n + 1 < size; p++) {
        if (*p == '_') {
            up = true;
            continue;
        }
        buf[n++] = up ? (char)toupper((unsigned char)*p) : *p;
        up = false;
    }
    buf[n] = '\0';
}

static json_t *value_json(const ProtobufCFieldDescriptor *f, const void *p);

static json_t *message_json(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *o = json_object();

    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m + f->offset;
        char name[128];

        json_name(f->name, name, sizeof name);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            const char *arr = *(const char *const *)base;
            size_t elem = f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE
                              ? sizeof(void *)
                          : f->type == PROTOBUF_C_TYPE_BOOL     ? sizeof(protobuf_c_boolean)
                          : f->type == PROTOBUF_C_TYPE_INT64 || f->type == PROTOBUF_C_TYPE_UINT64 ||
                                  f->type == PROTOBUF_C_TYPE_DOUBLE
                              ? 8
                              : 4;
            json_t *a = json_array();

            for (size_t k = 0; k < n; k++)
                json_array_append_new(a, value_json(f, arr + k * elem));
            json_object_set_new(o, name, a);
        } else {
            json_object_set_new(o, name, value_json(f, base));
        }
    }
    return o;
}

static json_t *value_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    char num[32];

    switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(num, sizeof num, "%lld", (long long)*(const int64_t *)p);
        return json_string(num);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(num, sizeof num, "%llu", (unsigned long long)*(const uint64_t *)p);
        return json_string(num);
    case PROTOBUF_C_TYPE_FLOAT:
        return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);

        return v ? json_string(v->name) : json_integer(*(const int *)p);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;

        return json_string(s ? s : "");
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(const ProtobufCMessage *const *)p;

        return m ? message_json(m) : json_null();
    }
    default:
        return json_null();
    }
}

/* One cell: scalars as text, arrays of scalars joined with ",". */
static char *cell_text(json_t *v)
{
    char *s = NULL;

    if (json_is_string(v)) {
        s = strdup(json_string_value(v));
    } else if (json_is_array(v)) {
        size_t len = 1, i;
        json_t *e;

        json_array_foreach(v, i, e) len += (json_is_string(e) ? strlen(json_string_value(e)) : 24) + 1;
        if (!(s = calloc(1, len)))
            abort();
        json_array_foreach(v, i, e) {
            char *t = cell_text(e);

            if (i)
                strcat(s, ",");
            strncat(s, t, len - strlen(s) - 1);
            free(t);
        }
        return s;
    } else if (json_is_object(v)) {
        s = json_dumps(v, JSON_COMPACT);
    } else {
        s = json_dumps(v, JSON_ENCODE_ANY);
    }
    if (!s)
        abort();
    return s;
}

/* A column header: lowerCamel as UPPER_SNAKE. */
static void header_of(const char *key, char *buf, size_t size)
{
    size_t n = 0;

    for (const char *p = key; *p && n + 2 < size; p++) {
        if (isupper((unsigned char)*p) && p != key)
            buf[n++] = '_';
        buf[n++] = (char)toupper((unsigned char)*p);
    }
    buf[n] = '\0';
}

/* A list of objects as a table: one column per key. */
static void print_table(json_t *rows)
{
    json_t *first = json_array_get(rows, 0), *row, *v;
    size_t ncol = json_object_size(first), i, c;
    const char **keys;
    size_t *width;
    const char *k;

    if (!json_array_size(rows)) {
        puts("(none)");
        return;
    }
    keys = calloc(ncol, sizeof *keys);
    width = calloc(ncol, sizeof *width);
    if (!keys || !width)
        abort();
    c = 0;
    json_object_foreach(first, k, v) {
        char h[128];

        header_of(k, h, sizeof h);
        keys[c] = k;
        width[c++] = strlen(h);
    }
    json_array_foreach(rows, i, row) {
        for (c = 0; c < ncol; c++) {
            char *t = cell_text(json_object_get(row, keys[c]));

            if (strlen(t) > width[c])
                width[c] = strlen(t);
            free(t);
        }
    }
    for (c = 0; c < ncol; c++) {
        char h[128];

        header_of(keys[c], h, sizeof h);
        if (c + 1 < ncol)
            printf("%s%*s", h, (int)(width[c] - strlen(h) + 2), "");
        else
            fputs(h, stdout);
    }
    putchar('\n');
    json_array_foreach(rows, i, row) {
        for (c = 0; c < ncol; c++) {
            char *t = cell_text(json_object_get(row, keys[c]));

            if (c + 1 < ncol)
                printf("%s%*s", t, (int)(width[c] - strlen(t) + 2), "");
            else
                fputs(t, stdout);
            free(t);
        }
        putchar('\n');
    }
    free(keys);
    free(width);
}

static void print_fields(json_t *o, const char *prefix)
{
    const char *k;
    json_t *v;

    json_object_foreach(o, k, v) {
        if (json_is_object(v)) {
            char p[256];

            snprintf(p, sizeof p, "%s%s.", prefix, k);
            print_fields(v, p);
        } else {
            char *t = cell_text(v);

            printf("%s%s: %s\n", prefix, k, t);
            free(t);
        }
    }
}

/* A reply whose only field is a list prints as a table; anything else as fields. */
static void print_reply(const ProtobufCMessage *m, bool as_json)
{
    json_t *o = message_json(m);
    char *text;

    if (as_json) {
        if (!(text = json_dumps(o, JSON_INDENT(2))))
            abort();
        puts(text);
        free(text);
    } else if (json_object_size(o) == 1 && json_is_array(json_object_iter_value(json_object_iter(o))) &&
               m->descriptor->fields[0].type == PROTOBUF_C_TYPE_MESSAGE) {
        print_table(json_object_iter_value(json_object_iter(o)));
    } else {
        print_fields(o, "");
    }
    json_decref(o);
}

/* ---- commands ------------------------------------------------------------------------- */

typedef struct cmd_ctx {
    int argc;     /* the command's own arguments */
    char **argv;
    char *input;  /* owned text read for @FILE or - */
} cmd_ctx;

typedef struct command {
    const char *group, *verb; /* "servers", "list" (verb NULL: one-word command) */
    const char *method;
    const char *usage;        /* arguments */
    const char *help;
    int min_args, max_args;
    /* Builds the request into *req (a message of the method's input type, initialized). */
    int (*build)(cmd_ctx *x, ProtobufCMessage *req);
} command;

/* JSON text from an argument: literal, @FILE, or - for standard input. */
static const char *json_arg(cmd_ctx *x, const char *arg)
{
    FILE *f;
    size_t n;

    if (strcmp(arg, "-") != 0 && arg[0] != '@')
        return arg;
    f = strcmp(arg, "-") == 0 ? stdin : fopen(arg + 1, "re");
    if (!f) {
        fprintf(stderr, "mcphubctl: %s: %s\n", arg + 1, strerror(errno));
        return NULL;
    }
    if (!(x->input = calloc(1, CTL_MAX_INPUT + 1)))
        abort();
    n = fread(x->input, 1, CTL_MAX_INPUT + 1, f);
    if (f != stdin)
        fclose(f);
    if (n > CTL_MAX_INPUT) {
        fprintf(stderr, "mcphubctl: %s: larger than %u bytes\n", arg, CTL_MAX_INPUT);
        return NULL;
    }
    return x->input;
}

static int b_none(cmd_ctx *x, ProtobufCMessage *req)
{
    (void)x;
    (void)req;
    return 0;
}

/* The request's first field (a name or an id: a string) is the one argument. */
static int b_first(cmd_ctx *x, ProtobufCMessage *req)
{
    const ProtobufCFieldDescriptor *f = &req->descriptor->fields[0];

    if (f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        abort(); /* a command table entry that does not fit its request */
    *(const char **)(void *)((char *)req + f->offset) = x->argv[0];
    return 0;
}

static int b_put_server(cmd_ctx *x, ProtobufCMessage *req)
{
    Mcphub__V1__PutServerRequest *r = (Mcphub__V1__PutServerRequest *)req;
    const char *json = json_arg(x, x->argv[1]);

    if (!json)
        return -1;
    r->name = x->argv[0];
    r->settings_json = (char *)json;
    return 0;
}

static int b_enable(cmd_ctx *x, ProtobufCMessage *req)
{
    Mcphub__V1__SetServerEnabledRequest *r = (Mcphub__V1__SetServerEnabledRequest *)req;

    r->name = x->argv[0];
    r->enabled = 1;
    return 0;
}

static int b_disable(cmd_ctx *x, ProtobufCMessage *req)
{
    Mcphub__V1__SetServerEnabledRequest *r = (Mcphub__V1__SetServerEnabledRequest *)req;

    r->name = x->argv[0];
    r->enabled = 0;
    return 0;
}

static int b_put_group(cmd_ctx *x, ProtobufCMessage *req)
{
    const char *json = json_arg(x, x->argv[0]);

    if (!json)
        return -1;
    ((Mcphub__V1__PutGroupRequest *)req)->settings_json = (char *)json;
    return 0;
}

/* "a,b,c" into a list of its parts (the text is cut in place). */
static size_t split_list(char *s, char ***out)
{
    size_t n = 1, i = 0;
    char **v;

    for (const char *p = s; *p; p++)
        n += *p == ',';
    if (!(v = calloc(n, sizeof *v)))
        abort();
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ","))
        v[i++] = tok;
    *out = v;
    return i;
}

static int b_add_key(cmd_ctx *x, ProtobufCMessage *req)
{
    Mcphub__V1__AddKeyRequest *r = (Mcphub__V1__AddKeyRequest *)req;

    r->name = x->argv[0];
    for (int i = 1; i < x->argc; i++) {
        const char *opt = x->argv[i];
        char *val = i + 1 < x->argc ? x->argv[i + 1] : NULL;

        if (!val) {
            fprintf(stderr, "mcphubctl: %s needs a value\n", opt);
            return -1;
        }
        if (strcmp(opt, "--token") == 0)
            r->token = val;
        else if (strcmp(opt, "--access") == 0)
            r->access_type = val;
        else if (strcmp(opt, "--groups") == 0)
            r->n_allowed_groups = split_list(val, &r->allowed_groups);
        else if (strcmp(opt, "--servers") == 0)
            r->n_allowed_servers = split_list(val, &r->allowed_servers);
        else {
            fprintf(stderr, "mcphubctl: unknown option %s\n", opt);
            return -1;
        }
        i++;
    }
    return 0;
}

static int b_list_instances(cmd_ctx *x, ProtobufCMessage *req)
{
    Mcphub__V1__ListInstancesRequest *r = (Mcphub__V1__ListInstancesRequest *)req;

    for (int i = 0; i < x->argc; i += 2) {
        if (i + 1 >= x->argc) {
            fprintf(stderr, "mcphubctl: %s needs a value\n", x->argv[i]);
            return -1;
        }
        if (strcmp(x->argv[i], "--server") == 0)
            r->server = x->argv[i + 1];
        else if (strcmp(x->argv[i], "--session") == 0)
            r->session_id = x->argv[i + 1];
        else {
            fprintf(stderr, "mcphubctl: unknown option %s\n", x->argv[i]);
            return -1;
        }
    }
    return 0;
}

static int b_restart_instance(cmd_ctx *x, ProtobufCMessage *req)
{
    Mcphub__V1__RestartInstanceRequest *r = (Mcphub__V1__RestartInstanceRequest *)req;

    r->server = x->argv[0];
    if (x->argc > 1)
        r->session_id = x->argv[1];
    return 0;
}

static const command commands[] = {
    {"stats", NULL, "GetStats", "", "uptime, sessions, edges, servers, config version", 0, 0, b_none},
    {"reload", NULL, "Reload", "", "re-read the settings file now", 0, 0, b_none},
    {"servers", "list", "ListServers", "", "every server with its state and tool count", 0, 0, b_none},
    {"servers", "get", "GetServer", "NAME", "one server and its settings entry", 1, 1, b_first},
    {"servers", "add", "PutServer", "NAME JSON|@FILE|-",
     "add or replace a server entry (MCPHub's format), saved to the settings file", 2, 2, b_put_server},
    {"servers", "remove", "RemoveServer", "NAME", "remove a server (its processes stop)", 1, 1, b_first},
    {"servers", "enable", "SetServerEnabled", "NAME", "enable a server", 1, 1, b_enable},
    {"servers", "disable", "SetServerEnabled", "NAME", "disable a server (its processes stop)", 1, 1, b_disable},
    {"servers", "restart", "RestartServer", "NAME", "restart every running instance of a server", 1, 1, b_first},
    {"groups", "list", "ListGroups", "", "every group and its servers", 0, 0, b_none},
    {"groups", "add", "PutGroup", "JSON|@FILE|-", "add or replace a group entry ({\"name\":...,\"servers\":[...]})", 1, 1, b_put_group},
    {"groups", "remove", "RemoveGroup", "NAME", "remove a group", 1, 1, b_first},
    {"keys", "list", "ListKeys", "", "bearer keys (never their tokens)", 0, 0, b_none},
    {"keys", "add", "AddKey", "NAME [--token T] [--access all|groups|servers] [--groups A,B] [--servers A,B]",
     "add a bearer key; prints its token (generated unless --token)", 1, 9, b_add_key},
    {"keys", "revoke", "RevokeKey", "NAME", "remove a bearer key: its sessions end", 1, 1, b_first},
    {"sessions", "list", "ListSessions", "", "open sessions: route, key, age, stream edge, instances", 0, 0, b_none},
    {"sessions", "end", "EndSession", "ID", "end a session as a client DELETE would", 1, 1, b_first},
    {"instances", "list", "ListInstances", "[--server NAME] [--session ID]",
     "upstream instances with pid, state, restarts, uptime", 0, 4, b_list_instances},
    {"instances", "restart", "RestartInstance", "SERVER [SESSION]",
     "restart the shared instance of SERVER, or SESSION's own", 1, 2, b_restart_instance},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fputs("usage: mcphubctl [--control ADDR] [--token T | --token-file F] [--json] [--timeout MS]\n"
          "                 COMMAND [ARGS]\n"
          "\n"
          "Administers mcphub-control through its Admin gRPC service.\n"
          "\n"
          "  --control ADDR     Admin address (env MCPHUB_ADMIN_ADDR; 127.0.0.1:50052)\n"
          "  --token T          admin token (env MCPHUB_ADMIN_TOKEN)\n"
          "  --token-file F     file whose first line is the token (env MCPHUB_ADMIN_TOKEN_FILE)\n"
          "  --json             print replies as JSON\n"
          "  --timeout MS       how long to wait for control (10000)\n"
          "  --help             this text; `mcphubctl COMMAND --help` for one command\n"
          "\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char head[64];

        snprintf(head, sizeof head, "%s%s%s", commands[i].group, commands[i].verb ? " " : "",
                 commands[i].verb ? commands[i].verb : "");
        fprintf(out, "  %-20s %s\n", head, commands[i].help);
    }
    fputs("\nExit status: 0 done, 1 control refused the request, 2 usage error,\n"
          "3 control unreachable or too slow, 4 authentication failed.\n",
          out);
}

static void command_usage(FILE *out, const command *c)
{
    fprintf(out, "usage: mcphubctl [options] %s%s%s%s%s\n\n%s.\n", c->group, c->verb ? " " : "",
            c->verb ? c->verb : "", c->usage[0] ? " " : "", c->usage, c->help);
}

static int read_token_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    size_t n;

    if (!f) {
        fprintf(stderr, "mcphubctl: %s: %s\n", path, strerror(errno));
        return -1;
    }
    n = fgets(buf, (int)size, f) ? strlen(buf) : 0;
    fclose(f);
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        buf[--n] = '\0';
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"control", required_argument, NULL, 'c'},
        {"token", required_argument, NULL, 't'},
        {"token-file", required_argument, NULL, 'f'},
        {"json", no_argument, NULL, 'j'},
        {"timeout", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *addr = getenv("MCPHUB_ADMIN_ADDR");
    const char *token = getenv("MCPHUB_ADMIN_TOKEN");
    const char *token_file = getenv("MCPHUB_ADMIN_TOKEN_FILE");
    char token_buf[300], auth[320];
    int64_t timeout_ms = 10000;
    bool as_json = false;
    const command *cmd = NULL;
    ProtobufCMessage *req = NULL, *reply = NULL;
    const ProtobufCMethodDescriptor *md;
    rpc_client_opts co = {0};
    rpc_client *cli = NULL;
    cmd_ctx x = {0};
    int opt, rc, rest;

    if (!addr || !addr[0])
        addr = "127.0.0.1:50052";
    /* Options end at the command word. */
    while ((opt = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            addr = optarg;
            break;
        case 't':
            token = optarg;
            break;
        case 'f':
            token_file = optarg;
            break;
        case 'j':
            as_json = true;
            break;
        case 'T': {
            char *end;

            timeout_ms = strtoll(optarg, &end, 10);
            if (*end || timeout_ms <= 0) {
                fprintf(stderr, "mcphubctl: --timeout wants a positive number of ms\n");
                return EXIT_USAGE;
            }
            break;
        }
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    rest = argc - optind;
    if (rest < 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < N_COMMANDS && !cmd; i++) {
        if (strcmp(commands[i].group, argv[optind]) != 0)
            continue;
        if (!commands[i].verb)
            cmd = &commands[i];
        else if (rest >= 2 && strcmp(commands[i].verb, argv[optind + 1]) == 0)
            cmd = &commands[i];
    }
    if (!cmd) {
        if (strcmp(argv[optind], "help") == 0) {
            usage(stdout);
            return EXIT_OK;
        }
        fprintf(stderr, "mcphubctl: unknown command '%s%s%s'\n", argv[optind], rest >= 2 ? " " : "",
                rest >= 2 ? argv[optind + 1] : "");
        usage(stderr);
        return EXIT_USAGE;
    }
    x.argv = argv + optind + (cmd->verb ? 2 : 1);
    x.argc = rest - (cmd->verb ? 2 : 1);
    for (int i = 0; i < x.argc; i++) {
        if (strcmp(x.argv[i], "--help") == 0 || strcmp(x.argv[i], "-h") == 0) {
            command_usage(stdout, cmd);
            return EXIT_OK;
        }
    }
    if (x.argc < cmd->min_args || x.argc > cmd->max_args) {
        command_usage(stderr, cmd);
        return EXIT_USAGE;
    }
    md = protobuf_c_service_descriptor_get_method_by_name(&mcphub__v1__admin__descriptor,
                                                          cmd->method);
    if (!(req = calloc(1, md->input->sizeof_message)))
        abort();
    md->input->message_init(req);
    if (cmd->build(&x, req) < 0) {
        rc = EXIT_USAGE;
        goto out;
    }
    if (token_file && (!token || !token[0])) {
        if (read_token_file(token_file, token_buf, sizeof token_buf) < 0) {
            rc = EXIT_USAGE;
            goto out;
        }
        token = token_buf;
    }
    if (token && token[0]) {
        snprintf(auth, sizeof auth, "Bearer %s", token);
        co.authorization = auth;
    }
    co.max_backoff_ms = 1000;
    cli = rpc_client_new(addr, &co);
    rc = call_admin(cli, cmd->method, req, timeout_ms, &reply);
    if (rc == EXIT_OK) {
        print_reply(reply, as_json);
        protobuf_c_message_free_unpacked(reply, NULL);
    }
out:
    rpc_client_free(cli);
    /* The request's strings and lists point into argv or x.input: free only what we made. */
    if (cmd && strcmp(cmd->method, "AddKey") == 0) {
        free(((Mcphub__V1__AddKeyRequest *)req)->allowed_groups);
        free(((Mcphub__V1__AddKeyRequest *)req)->allowed_servers);
    }
    free(req);
    free(x.input);
    return rc;
}
