/* ctl_up: the shared upstream instance of each enabled stdio server: started with control,
 * restarted with spaced backoff when it fails, its tools/prompts/resources lists fetched
 * when it becomes ready and again when it says they changed, stopped (TERM, then KILL)
 * when control drains. Loop thread only. */
#ifndef MCPHUB_CTL_UP_H
#define MCPHUB_CTL_UP_H

#include "ctl_internal.h"
#include "inst.h"

/* Creates the upstream table and starts every enabled, supported stdio server. */
void ctl_up_start_all(ctl *c);

/* Stops every instance (drain). */
void ctl_up_stop_all(ctl *c);

/* True once every instance's process is gone. */
bool ctl_up_all_stopped(ctl *c);

/* Frees the table (instances stopped or not: their processes are killed and reaped). */
void ctl_up_free_all(ctl *c);

/* The instance of server i when it is READY, else NULL. */
inst *ctl_up_ready(ctl *c, size_t server);

/* The instance of server i when it is ready or on its way there (requests sent to a
 * starting instance wait inside it for the handshake), else NULL. */
inst *ctl_up_usable(ctl *c, size_t server);

/* True when server i is settled: ready with its lists fetched, or not running (failed,
 * disabled, unsupported). Requests that need its lists wait while it is not. */
bool ctl_up_settled(ctl *c, size_t server);

/* "ready", "initializing", "failed", "backing off", "configured" ... for Admin. */
const char *ctl_up_state_name(ctl *c, size_t server);

/* Process id of server i's instance, 0 when none. */
int ctl_up_pid(ctl *c, size_t server);

/* Restarts of server i's instance since control started. */
unsigned ctl_up_restarts(ctl *c, size_t server);

#endif
