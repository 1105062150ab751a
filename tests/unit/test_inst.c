/* test_inst: MCP client sessions with real upstream processes: the C fixture server (the
 * handshake, tools, concurrent calls, progress, timeouts with cancellation, sampling, a
 * crash), and misbehaving "servers" made of shell commands (silence, echo, garbage floods,
 * stderr floods). Each test runs its own loop, is bounded in time, and ends by checking
 * that no child process (zombies included) and no descriptor is left behind. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "capture.h"
#include "proccheck.h"
#include "uvloop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "inst.h"
#include "rpc.h"

#ifndef MCPHUB_BIN_DIR
#error "MCPHUB_BIN_DIR must name the folder where mcphub-fixture is built"
#endif

#define FIXTURE MCPHUB_BIN_DIR "/mcphub-fixture"
#define WAIT_MS 5000

/* ---------------------------------------------------------------- process checks */

static int count_substr(const char *text, const char *needle)
{
    int n = 0;

    for (const char *s = text; (s = strstr(s, needle)); s += strlen(needle))
        n++;
    return n;
}

/* ---------------------------------------------------------------- the test fixture */

#define MAX_SEEN 32

typedef struct fixture fixture;

typedef struct {
    fixture *f;
    int done;
    json_t *result;   /* new reference */
    int code;
    char message[256];
    int64_t done_ms;
    int progress;
    json_t *last_progress;
    int order;        /* completion order among replies of the fixture */
} reply;

struct fixture {
    uv_loop_t loop;
    uv_timer_t tick;
    int fds_before;
    inst *in;
    inst_state_t seen[MAX_SEEN];
    int n_seen;
    int ready, failed, stopped;
    int notes;
    char last_note[128];
    int requests;
    char last_request[128];
    json_t *request_id;     /* new reference */
    const char *sample_answer; /* answer sampling/createMessage from inside on_request */
    int completions;
};

static void on_state(void *ud, inst *in, inst_state_t from, inst_state_t to)
{
    fixture *f = ud;

    assert_ptr_equal(in, f->in);
    assert_int_not_equal(from, to);
    assert_int_equal(inst_state(in), to);
    if (f->n_seen < MAX_SEEN)
        f->seen[f->n_seen++] = to;
    f->ready += to == INST_READY;
    f->failed += to == INST_FAILED;
    f->stopped += to == INST_STOPPED;
}

static void on_notification(void *ud, inst *in, const char *method, json_t *params)
{
    fixture *f = ud;

    (void)in, (void)params;
    f->notes++;
    snprintf(f->last_note, sizeof f->last_note, "%s", method);
}

static void on_request(void *ud, inst *in, json_t *id, const char *method, json_t *params)
{
    fixture *f = ud;
    json_t *text = json_object_get(json_object_get(json_array_get(
                                       json_object_get(params, "messages"), 0), "content"),
                                   "text");

    f->requests++;
    snprintf(f->last_request, sizeof f->last_request, "%s", method);
    json_decref(f->request_id);
    f->request_id = json_incref(id);
    if (f->sample_answer && strcmp(method, "sampling/createMessage") == 0) {
        char answer[256];

        /* Answer from inside the callback, echoing the prompt to prove we saw it. */
        assert_non_null(text);
        snprintf(answer, sizeof answer, "%s (prompt: %s)", f->sample_answer,
                 json_string_value(text));
        assert_int_equal(inst_respond(in, id, json_pack("{s:s, s:{s:s, s:s}, s:s}", "role",
                                                        "assistant", "content", "type", "text",
                                                        "text", answer, "model", "test-model"),
                                      NULL),
                         0);
        /* Exactly once: a second answer is refused. */
        assert_int_equal(inst_respond(in, id, json_object(), NULL), -ENOENT);
    }
}

static const inst_callbacks callbacks = {on_state, on_notification, on_request};

static void on_reply(void *ud, json_t *result, const inst_error *err)
{
    reply *r = ud;

    assert_int_equal(r->done, 0); /* exactly once */
    assert_true((result != NULL) != (err != NULL));
    r->done++;
    r->done_ms = rpc_now_ms();
    r->order = ++r->f->completions;
    if (result) {
        r->result = json_incref(result);
    } else {
        r->code = err->code;
        snprintf(r->message, sizeof r->message, "%s", err->message);
    }
}

static void on_progress(void *ud, json_t *params)
{
    reply *r = ud;

    r->progress++;
    json_decref(r->last_progress);
    r->last_progress = json_incref(params);
}

static void reply_init(fixture *f, reply *r)
{
    memset(r, 0, sizeof *r);
    r->f = f;
}

static void reply_clear(reply *r)
{
    json_decref(r->result);
    json_decref(r->last_progress);
    r->result = r->last_progress = NULL;
}

/* The text of the first content block of a tools/call result. */
static const char *result_text(const reply *r)
{
    json_t *t = json_object_get(json_array_get(json_object_get(r->result, "content"), 0), "text");

    assert_non_null(t);
    return json_string_value(t);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    f->fds_before = count_fds();
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    uv_timer_start(&f->tick, loop_tick_cb, 10, 10);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    int64_t deadline = rpc_now_ms() + WAIT_MS;
    int left;

    inst_free(f->in);
    f->in = NULL;
    json_decref(f->request_id);
    uv_close((uv_handle_t *)&f->tick, loop_noop_close);
    while (uv_loop_alive(&f->loop) && rpc_now_ms() < deadline) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_false(uv_loop_alive(&f->loop));
    assert_int_equal(uv_loop_close(&f->loop), 0);
    if ((left = count_procs(0, false)) != 0) {
        count_procs(0, true);
        fail_msg("%d child processes left behind", left);
    }
    assert_int_equal(count_fds(), f->fds_before);
    free(f);
    return 0;
}

static cfg_server server_entry(const char *name, const char *command, const char *const *args,
                               size_t n_args)
{
    static const char *const no_args[] = {NULL};
    cfg_server s;

    memset(&s, 0, sizeof s);
    s.name = name;
    s.transport = CFG_TRANSPORT_STDIO;
    s.supported = true;
    s.command = command;
    s.args = n_args ? args : no_args;
    s.n_args = n_args;
    s.enabled = true;
    s.reset_timeout_on_progress = true;
    return s;
}

static void start(fixture *f, const cfg_server *s, const inst_opts *o)
{
    f->in = inst_new(&f->loop, s, &callbacks, f);
    assert_non_null(f->in);
    assert_int_equal(inst_state(f->in), INST_NEW);
    assert_int_equal(inst_start(f->in, o), 0);
    assert_int_equal(inst_state(f->in), INST_INITIALIZING);
    assert_true(inst_pid(f->in) > 0);
}

static void start_fixture(fixture *f)
{
    cfg_server s = server_entry("fx", FIXTURE, NULL, 0);

    start(f, &s, NULL);
    assert_true(loop_run_until(&f->loop, &f->ready, 1, WAIT_MS));
}

/* tools/call name with arguments (a JSON text). */
static uint64_t call_tool(fixture *f, const char *name, const char *args, const inst_req_opts *o,
                          reply *r)
{
    json_error_t jerr;
    json_t *a = json_loads(args, 0, &jerr);
    uint64_t h = 0;

    assert_non_null(a);
    assert_int_equal(inst_request(f->in, "tools/call",
                                  json_pack("{s:s, s:o}", "name", name, "arguments", a), o,
                                  on_reply, r, &h),
                     0);
    assert_true(h > 0);
    return h;
}

/* Stops the instance and waits until the process is reaped. */
static void stop_and_wait(fixture *f)
{
    int64_t deadline = rpc_now_ms() + WAIT_MS;

    assert_int_equal(inst_stop(f->in, 2000), 0);
    while ((inst_state(f->in) == INST_STOPPING || inst_pid(f->in) != 0) &&
           rpc_now_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(inst_pid(f->in), 0);
}

/* ---------------------------------------------------------------- tests with the fixture */

static void test_handshake_and_tools(void **state)
{
    fixture *f = *state;
    reply list, echo;
    json_t *tools;
    bool has_echo = false;
    size_t i;
    json_t *t;
    inst_stats st;

    start_fixture(f);
    assert_int_equal(f->n_seen, 1);
    assert_int_equal(f->seen[0], INST_READY);
    assert_string_equal(json_string_value(json_object_get(inst_server_info(f->in), "name")),
                        "mcphub-fixture");
    assert_string_equal(inst_protocol_version(f->in), "2025-11-25");
    assert_true(json_is_object(json_object_get(inst_server_capabilities(f->in), "tools")));
    assert_string_equal(inst_name(f->in), "fx");

    reply_init(f, &list);
    assert_int_equal(inst_request(f->in, "tools/list", NULL, NULL, on_reply, &list, NULL), 0);
    assert_true(loop_run_until(&f->loop, &list.done, 1, WAIT_MS));
    tools = json_object_get(list.result, "tools");
    assert_true(json_is_array(tools));
    json_array_foreach(tools, i, t)
        has_echo = has_echo || strcmp(json_string_value(json_object_get(t, "name")), "echo") == 0;
    assert_true(has_echo);

    reply_init(f, &echo);
    call_tool(f, "echo", "{\"message\": \"hello \\\"world\\\"\\n\"}", NULL, &echo);
    assert_true(loop_run_until(&f->loop, &echo.done, 1, WAIT_MS));
    assert_string_equal(result_text(&echo), "hello \"world\"\n");

    inst_get_stats(f->in, &st);
    assert_int_equal(st.requests, 3); /* initialize, tools/list, tools/call */
    assert_int_equal(st.responses, 3);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.garbage_lines, 0);

    stop_and_wait(f);
    assert_int_equal(inst_state(f->in), INST_STOPPED);
    assert_int_equal(f->n_seen, 3);
    assert_int_equal(f->seen[1], INST_STOPPING);
    assert_int_equal(f->seen[2], INST_STOPPED);
    inst_get_stats(f->in, &st);
    assert_true(st.exited);
    assert_int_equal(st.exit_status, 0); /* the fixture exits by itself when stdin closes */
    assert_int_equal(st.term_signal, 0);
    /* Nothing goes out once stopped. */
    assert_int_equal(inst_request(f->in, "ping", NULL, NULL, on_reply, &echo, NULL), -ENOTCONN);
    reply_clear(&list);
    reply_clear(&echo);
}

static void test_concurrent_calls(void **state)
{
    fixture *f = *state;
    reply a, b, c;

    start_fixture(f);
    reply_init(f, &a);
    reply_init(f, &b);
    reply_init(f, &c);
    /* Sent a, b, c; answered c, b, a. */
    call_tool(f, "slow", "{\"steps\": 3, \"delayMs\": 100}", NULL, &a);
    call_tool(f, "slow", "{\"steps\": 1, \"delayMs\": 100}", NULL, &b);
    call_tool(f, "echo", "{\"message\": \"c\"}", NULL, &c);
    assert_true(loop_run_until(&f->loop, &a.done, 1, WAIT_MS));
    assert_true(b.done && c.done);
    assert_string_equal(result_text(&a), "done after 3 steps");
    assert_string_equal(result_text(&b), "done after 1 steps");
    assert_string_equal(result_text(&c), "c");
    assert_int_equal(c.order, 1);
    assert_int_equal(b.order, 2);
    assert_int_equal(a.order, 3);
    reply_clear(&a);
    reply_clear(&b);
    reply_clear(&c);
}

static void test_progress(void **state)
{
    fixture *f = *state;
    inst_req_opts o;
    reply a, b;
    json_t *token = json_string("client-token-1");
    json_t *params;

    start_fixture(f);
    /* Token given in the options. */
    reply_init(f, &a);
    inst_req_opts_default(f->in, &o);
    o.progress_token = token;
    o.on_progress = on_progress;
    call_tool(f, "slow", "{\"steps\": 3, \"delayMs\": 30}", &o, &a);
    assert_true(loop_run_until(&f->loop, &a.done, 1, WAIT_MS));
    assert_string_equal(result_text(&a), "done after 3 steps");
    assert_int_equal(a.progress, 3);
    assert_string_equal(json_string_value(json_object_get(a.last_progress, "progressToken")),
                        "client-token-1");
    assert_int_equal(json_integer_value(json_object_get(a.last_progress, "progress")), 3);
    assert_int_equal(json_integer_value(json_object_get(a.last_progress, "total")), 3);

    /* Token inside the client's params: reported under it; the caller's params untouched. */
    reply_init(f, &b);
    inst_req_opts_default(f->in, &o);
    o.on_progress = on_progress;
    params = json_pack("{s:s, s:{s:i, s:i}, s:{s:i}}", "name", "slow", "arguments", "steps", 2,
                       "delayMs", 30, "_meta", "progressToken", 42);
    json_incref(params);
    assert_int_equal(inst_request(f->in, "tools/call", params, &o, on_reply, &b, NULL), 0);
    assert_true(loop_run_until(&f->loop, &b.done, 1, WAIT_MS));
    assert_int_equal(b.progress, 2);
    assert_int_equal(json_integer_value(json_object_get(b.last_progress, "progressToken")), 42);
    assert_int_equal(json_integer_value(
                         json_object_get(json_object_get(params, "_meta"), "progressToken")),
                     42);
    json_decref(params);
    json_decref(token);
    reply_clear(&a);
    reply_clear(&b);
}

static void test_timeout_cancels_upstream(void **state)
{
    fixture *f = *state;
    inst_req_opts o;
    reply a, b;
    inst_stats st;
    json_t *token = json_integer(7);
    int64_t t0;

    start_fixture(f);
    reply_init(f, &a);
    inst_req_opts_default(f->in, &o);
    o.timeout_ms = 300;
    o.reset_on_progress = false;
    o.progress_token = token; /* progress flows, but must not extend the timeout */
    t0 = rpc_now_ms();
    call_tool(f, "slow", "{\"steps\": 10, \"delayMs\": 100}", &o, &a);
    assert_true(loop_run_until(&f->loop, &a.done, 1, WAIT_MS));
    assert_int_equal(a.code, INST_E_TIMEOUT);
    assert_string_equal(a.message, "Request timed out");
    assert_true(a.done_ms - t0 >= 290);
    assert_true(a.done_ms - t0 < 900);
    /* The fixture saw notifications/cancelled: the remaining steps send no progress and the
     * call sends no result (one progress may have crossed the cancel on the pipe). */
    loop_run_for(&f->loop, 800);
    inst_get_stats(f->in, &st);
    assert_true(st.dropped_progress <= 1);
    assert_int_equal(st.late_responses, 0);
    assert_int_equal(st.timeouts, 1);
    /* ...and keeps answering. */
    reply_init(f, &b);
    call_tool(f, "echo", "{\"message\": \"still here\"}", NULL, &b);
    assert_true(loop_run_until(&f->loop, &b.done, 1, WAIT_MS));
    assert_string_equal(result_text(&b), "still here");
    json_decref(token);
    reply_clear(&a);
    reply_clear(&b);
}

static void test_timeout_reset_and_max_total(void **state)
{
    fixture *f = *state;
    inst_req_opts o;
    reply a, b;
    json_t *token = json_string("t");
    int64_t t0;

    start_fixture(f);
    /* 6 steps of 100 ms with a 350 ms timeout: progress keeps it alive. */
    reply_init(f, &a);
    inst_req_opts_default(f->in, &o);
    o.timeout_ms = 350;
    o.reset_on_progress = true;
    o.progress_token = token;
    call_tool(f, "slow", "{\"steps\": 6, \"delayMs\": 100}", &o, &a);
    assert_true(loop_run_until(&f->loop, &a.done, 1, WAIT_MS));
    assert_non_null(a.result);
    assert_string_equal(result_text(&a), "done after 6 steps");
    /* The same with a 300 ms total limit: ends at the limit despite the progress. */
    reply_init(f, &b);
    o.max_total_ms = 300;
    t0 = rpc_now_ms();
    call_tool(f, "slow", "{\"steps\": 10, \"delayMs\": 100}", &o, &b);
    assert_true(loop_run_until(&f->loop, &b.done, 1, WAIT_MS));
    assert_int_equal(b.code, INST_E_TIMEOUT);
    assert_true(b.done_ms - t0 >= 290 && b.done_ms - t0 < 900);
    json_decref(token);
    reply_clear(&a);
    reply_clear(&b);
}

static void test_cancel(void **state)
{
    fixture *f = *state;
    reply a, b;
    inst_stats st;
    uint64_t h;

    start_fixture(f);
    reply_init(f, &a);
    h = call_tool(f, "slow", "{\"steps\": 5, \"delayMs\": 100}", NULL, &a);
    loop_run_for(&f->loop, 50);
    assert_int_equal(inst_cancel(f->in, h, "client cancelled"), 0);
    assert_int_equal(a.done, 1); /* from inside inst_cancel */
    assert_int_equal(a.code, INST_E_CANCELLED);
    assert_int_equal(inst_cancel(f->in, h, NULL), -ENOENT);
    loop_run_for(&f->loop, 600);
    inst_get_stats(f->in, &st);
    assert_int_equal(st.late_responses, 0); /* the fixture dropped the call */
    assert_int_equal(st.cancels, 1);
    reply_init(f, &b);
    call_tool(f, "echo", "{\"message\": \"after cancel\"}", NULL, &b);
    assert_true(loop_run_until(&f->loop, &b.done, 1, WAIT_MS));
    assert_string_equal(result_text(&b), "after cancel");
    reply_clear(&a);
    reply_clear(&b);
}

static void test_sampling(void **state)
{
    fixture *f = *state;
    reply a;

    start_fixture(f);
    f->sample_answer = "from the test";
    reply_init(f, &a);
    call_tool(f, "sample", "{\"prompt\": \"say hi\"}", NULL, &a);
    assert_true(loop_run_until(&f->loop, &a.done, 1, WAIT_MS));
    assert_int_equal(f->requests, 1);
    assert_string_equal(f->last_request, "sampling/createMessage");
    assert_string_equal(result_text(&a), "sampled: from the test (prompt: say hi)");
    reply_clear(&a);
}

static void test_crash(void **state)
{
    fixture *f = *state;
    reply a, b;
    inst_stats st;
    int64_t t0;

    start_fixture(f);
    reply_init(f, &a);
    reply_init(f, &b);
    call_tool(f, "slow", "{\"steps\": 100, \"delayMs\": 100}", NULL, &a);
    t0 = rpc_now_ms();
    call_tool(f, "crash", "{}", NULL, &b);
    assert_true(loop_run_until(&f->loop, &a.done, 1, WAIT_MS));
    assert_true(b.done);
    assert_int_equal(a.code, INST_E_CLOSED);
    assert_string_equal(a.message, "upstream server exited");
    assert_int_equal(b.code, INST_E_CLOSED);
    assert_true(a.done_ms - t0 < 1000);
    assert_int_equal(inst_state(f->in), INST_FAILED);
    assert_int_equal(f->failed, 1);
    assert_int_equal(inst_pid(f->in), 0); /* reaped before on_exit */
    inst_get_stats(f->in, &st);
    assert_true(st.exited);
    assert_int_equal(st.term_signal, SIGABRT);
    assert_int_equal(inst_request(f->in, "ping", NULL, NULL, on_reply, &a, NULL), -ENOTCONN);
    /* Stopping a failed instance is harmless. */
    assert_int_equal(inst_stop(f->in, 100), 0);
    assert_int_equal(inst_state(f->in), INST_FAILED);
    reply_clear(&a);
    reply_clear(&b);
}

static void test_free_with_pending(void **state)
{
    fixture *f = *state;
    reply a;

    start_fixture(f);
    reply_init(f, &a);
    call_tool(f, "slow", "{\"steps\": 100, \"delayMs\": 100}", NULL, &a);
    loop_run_for(&f->loop, 50);
    /* Freed while running: the call ends inside inst_free, the process is killed and reaped
     * in the background (teardown checks). */
    inst_free(f->in);
    f->in = NULL;
    assert_int_equal(a.done, 1);
    assert_int_equal(a.code, INST_E_CLOSED);
    reply_clear(&a);
}

/* ---------------------------------------------------------------- misbehaving servers */

static void test_spawn_failure(void **state)
{
    fixture *f = *state;
    cfg_server s = server_entry("missing", "mcphub-no-such-server", NULL, 0);
    reply a;
    capture cap;
    char *log;

    reply_init(f, &a);
    f->in = inst_new(&f->loop, &s, &callbacks, f);
    assert_non_null(f->in);
    capture_begin(&cap);
    assert_int_equal(inst_start(f->in, NULL), -ENOENT);
    log = capture_end(&cap);
    assert_non_null(strstr(log, "msg=\"upstream failed to start\" server=missing"));
    free(log);
    assert_int_equal(inst_state(f->in), INST_FAILED);
    assert_int_equal(f->n_seen, 0); /* a failed call reports nothing */
    assert_int_equal(inst_pid(f->in), 0);
    assert_int_equal(inst_request(f->in, "ping", NULL, NULL, on_reply, &a, NULL), -ENOTCONN);
    assert_int_equal(inst_start(f->in, NULL), -EALREADY);
    /* Not a stdio server: no instance. */
    s.transport = CFG_TRANSPORT_SSE;
    assert_null(inst_new(&f->loop, &s, &callbacks, f));
}

static void test_init_timeout(void **state)
{
    fixture *f = *state;
    const char *args[] = {"-c", "sleep 100"};
    cfg_server s = server_entry("silent", "/bin/sh", args, 2);
    inst_opts o;
    reply held;
    int64_t t0 = rpc_now_ms();
    pid_t pgid;

    inst_opts_init(&o, NULL);
    o.init_timeout_ms = 300;
    o.kill_grace_ms = 500;
    start(f, &s, &o);
    pgid = inst_pid(f->in);
    /* A request made while initializing is held, then fails with the instance. */
    reply_init(f, &held);
    assert_int_equal(inst_request(f->in, "tools/list", NULL, NULL, on_reply, &held, NULL), 0);
    assert_true(loop_run_until(&f->loop, &f->failed, 1, WAIT_MS));
    assert_true(rpc_now_ms() - t0 >= 290);
    assert_true(rpc_now_ms() - t0 < 1500);
    assert_int_equal(held.done, 1);
    assert_int_equal(held.code, INST_E_CLOSED);
    /* The process (and its sleep) is stopped and reaped. */
    for (int i = 0; i < 300 && inst_pid(f->in) != 0; i++)
        loop_run_for(&f->loop, 10);
    assert_int_equal(inst_pid(f->in), 0);
    for (int i = 0; i < 100 && count_procs(pgid, false) > 0; i++)
        usleep(10000);
    assert_int_equal(count_procs(pgid, false), 0);
    reply_clear(&held);
}

static void test_cat_server(void **state)
{
    fixture *f = *state;
    cfg_server s = server_entry("cat", "/bin/cat", NULL, 0);
    inst_callbacks no_requests = {on_state, on_notification, NULL};
    int64_t t0 = rpc_now_ms();

    /* cat echoes our initialize back: to us it is a request we do not serve (-32601); the
     * echo of that error answers our initialize, which therefore fails at once. */
    f->in = inst_new(&f->loop, &s, &no_requests, f);
    assert_int_equal(inst_start(f->in, NULL), 0);
    assert_true(loop_run_until(&f->loop, &f->failed, 1, WAIT_MS));
    assert_true(rpc_now_ms() - t0 < 1000);
    stop_and_wait(f);
}

static void test_garbage_flood(void **state)
{
    fixture *f = *state;
    const char *args[] = {"-c", "yes garbage"};
    cfg_server s = server_entry("flood", "/bin/sh", args, 2);
    inst_stats st;
    capture cap;
    char *log;

    capture_begin(&cap);
    start(f, &s, NULL);
    assert_true(loop_run_until(&f->loop, &f->failed, 1, WAIT_MS));
    for (int i = 0; i < 300 && inst_pid(f->in) != 0; i++)
        loop_run_for(&f->loop, 10);
    log = capture_end(&cap);
    assert_int_equal(inst_pid(f->in), 0);
    inst_get_stats(f->in, &st);
    assert_int_equal(st.garbage_lines, INST_DEFAULT_MAX_GARBAGE);
    /* One sample line, one failure line: no spam. */
    assert_int_equal(count_substr(log, "msg=\"upstream stdout line is not JSON-RPC\""), 1);
    assert_int_equal(count_substr(log, "too many garbage lines"), 1);
    assert_non_null(strstr(log, "sample=\"garbage\""));
    free(log);
}

static void test_overlong_line(void **state)
{
    fixture *f = *state;
    /* 5 MB on one line against a 1 MiB limit: never buffered, fails on the first one. */
    const char *args[] = {"-c", "head -c 5000000 /dev/zero | tr '\\0' x; sleep 100"};
    cfg_server s = server_entry("long", "/bin/sh", args, 2);
    inst_opts o;
    inst_stats st;
    capture cap;
    char *log;

    inst_opts_init(&o, NULL);
    o.max_line = 1024 * 1024;
    o.max_garbage = 1;
    o.kill_grace_ms = 200;
    capture_begin(&cap);
    start(f, &s, &o);
    assert_true(loop_run_until(&f->loop, &f->failed, 1, WAIT_MS));
    for (int i = 0; i < 300 && inst_pid(f->in) != 0; i++)
        loop_run_for(&f->loop, 10);
    log = capture_end(&cap);
    assert_non_null(strstr(log, "reason=\"line too long\""));
    inst_get_stats(f->in, &st);
    assert_int_equal(st.garbage_lines, 1);
    free(log);
}

static void test_stderr_lines(void **state)
{
    fixture *f = *state;
    /* A quoted line, a tab, then a flood: each line logged, escaped, at most 100 a second. */
    const char *args[] = {"-c",
                          "printf 'say \"hi\"\\tnow\\\\\\n' >&2; yes spam | head -n 5000 >&2; "
                          "sleep 100"};
    cfg_server s = server_entry("noisy", "/bin/sh", args, 2);
    inst_opts o;
    inst_stats st;
    capture cap;
    char *log;
    int spam;

    inst_opts_init(&o, NULL);
    o.init_timeout_ms = 400;
    o.kill_grace_ms = 200;
    capture_begin(&cap);
    start(f, &s, &o);
    assert_true(loop_run_until(&f->loop, &f->failed, 1, WAIT_MS));
    for (int i = 0; i < 300 && inst_pid(f->in) != 0; i++)
        loop_run_for(&f->loop, 10);
    log = capture_end(&cap);
    assert_non_null(strstr(log, "level=info proc=mcphub msg=\"upstream stderr\" server=noisy "
                                "line=\"say \\\"hi\\\"\\tnow\\\\\""));
    spam = count_substr(log, "line=\"spam\"");
    assert_true(spam >= 50 && spam <= 2 * INST_STDERR_LINES_PER_SEC);
    assert_non_null(strstr(log, "msg=\"upstream stderr lines not logged\" server=noisy"));
    inst_get_stats(f->in, &st);
    assert_int_equal(st.stderr_lines, 5001);
    assert_int_equal(st.stderr_dropped + (uint64_t)spam + 1, 5001);
    free(log);
}

static void test_stop_stubborn(void **state)
{
    fixture *f = *state;
    /* Ignores stdin closing and SIGTERM: KILLed two grace periods after inst_stop. */
    const char *args[] = {"-c", "trap '' TERM; while :; do sleep 0.05; done"};
    cfg_server s = server_entry("stubborn", "/bin/sh", args, 2);
    inst_stats st;
    int64_t t0;

    start(f, &s, NULL);
    loop_run_for(&f->loop, 100);
    t0 = rpc_now_ms();
    assert_int_equal(inst_stop(f->in, 200), 0);
    assert_int_equal(inst_state(f->in), INST_STOPPING);
    assert_true(loop_run_until(&f->loop, &f->stopped, 1, WAIT_MS));
    assert_true(rpc_now_ms() - t0 >= 380);
    assert_true(rpc_now_ms() - t0 < 1500);
    assert_int_equal(inst_pid(f->in), 0);
    inst_get_stats(f->in, &st);
    assert_int_equal(st.term_signal, SIGKILL);
}

/* A scripted server: garbage before the handshake, a ping of its own, a notification before
 * the initialize result, an older protocol revision, then one answer to a request that we
 * held while initializing (it must come after notifications/initialized). */
static void test_scripted_server(void **state)
{
    fixture *f = *state;
    const char *script =
        "read init\n"
        "echo 'Server running on stdio'\n"
        "printf '%s\\n' '{\"jsonrpc\":\"2.0\",\"id\":\"p1\",\"method\":\"ping\"}'\n"
        "read pong\n"
        "printf 'PONG %s\\n' \"$pong\" >&2\n"
        "printf '%s\\n' '{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}'\n"
        "printf '%s\\n' '{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":"
        "\"2025-06-18\",\"capabilities\":{\"tools\":{}},\"serverInfo\":{\"name\":\"sh\","
        "\"version\":\"1\"},\"instructions\":\"be nice\"}}'\n"
        "read initialized\n"
        "case \"$initialized\" in *notifications/initialized*) ;; *) echo ORDER-WRONG >&2;; esac\n"
        "read req\n"
        "case \"$req\" in *'\"id\":2'*) ;; *) echo ID-WRONG >&2;; esac\n"
        "printf '%s\\n' '{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[]}}'\n"
        "sleep 100\n";
    const char *args[] = {"-c", script};
    cfg_server s = server_entry("scripted", "/bin/sh", args, 2);
    reply held;
    inst_stats st;
    capture cap;
    char *log;

    capture_begin(&cap);
    start(f, &s, NULL);
    reply_init(f, &held);
    assert_int_equal(inst_request(f->in, "tools/list", NULL, NULL, on_reply, &held, NULL), 0);
    assert_true(loop_run_until(&f->loop, &held.done, 1, WAIT_MS));
    assert_int_equal(f->ready, 1);
    assert_true(json_is_array(json_object_get(held.result, "tools")));
    assert_string_equal(inst_protocol_version(f->in), "2025-06-18");
    assert_string_equal(inst_instructions(f->in), "be nice");
    assert_int_equal(f->notes, 1);
    assert_string_equal(f->last_note, "notifications/tools/list_changed");
    assert_int_equal(f->requests, 0); /* ping was answered by the instance */
    inst_get_stats(f->in, &st);
    assert_int_equal(st.upstream_requests, 1);
    assert_int_equal(st.garbage_lines, 1);
    stop_and_wait(f);
    log = capture_end(&cap);
    assert_non_null(strstr(log, "PONG {"));
    assert_non_null(strstr(log, "\\\"id\\\":\\\"p1\\\""));
    assert_non_null(strstr(log, "\\\"result\\\":{}"));
    assert_null(strstr(log, "ORDER-WRONG"));
    assert_null(strstr(log, "ID-WRONG"));
    assert_non_null(strstr(log, "sample=\"Server running on stdio\""));
    free(log);
    reply_clear(&held);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_handshake_and_tools, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_cancels_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_reset_and_max_total, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sampling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spawn_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cat_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_flood, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlong_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stderr_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_stubborn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scripted_server, setup, teardown),
    };
    uv_loop_t warm;

    alarm(120);
    /* libuv's process-wide signal pipe opens with the first loop: before fds are counted. */
    uv_loop_init(&warm);
    uv_loop_close(&warm);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
