/* uvloop: running a test's libuv loop until something happened, bounded in time. Header
 * only: each unit test is its own program. */
#ifndef MCPHUB_TEST_UVLOOP_H
#define MCPHUB_TEST_UVLOOP_H

#include "rpc.h" /* rpc_now_ms */

#include <stdbool.h>
#include <uv.h>

/* A repeating timer with this callback keeps UV_RUN_ONCE from blocking for long. */
static inline void loop_tick_cb(uv_timer_t *t)
{
    (void)t;
}

static inline void loop_noop_close(uv_handle_t *h)
{
    (void)h;
}

/* Runs loop until *flag >= want or ms passed; returns whether it got there. */
static inline bool loop_run_until(uv_loop_t *loop, const int *flag, int want, int ms)
{
    int64_t deadline = rpc_now_ms() + ms;

    while (*flag < want && rpc_now_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    return *flag >= want;
}

/* Runs loop for ms. */
static inline void loop_run_for(uv_loop_t *loop, int ms)
{
    int64_t deadline = rpc_now_ms() + ms;

    while (rpc_now_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
}

#endif
