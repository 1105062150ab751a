/* ctl_up: the shared upstream instance of each enabled server (stdio, Streamable HTTP,
 * legacy SSE): started with control (or on first use with startOnDemand, and stopped again
 * after idleTimeoutMs without calls), restarted with doubling backoff when it fails or
 * misses keep-alive pings, never more than hub.maxInstances at once; its tools/prompts/
 * resources lists fetched when it becomes ready and again when it says they changed;
 * stopped (TERM, then KILL) when control drains. Loop thread only. */
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
 * starting instance wait inside it for the handshake), else NULL. Counts as a use: an
 * on-demand server that is not running is started here. */
inst *ctl_up_usable(ctl *c, size_t server);

/* True when server i is settled: ready with its lists fetched, or not running (failed,
 * disabled, unsupported). Requests that need its lists wait while it is not. */
bool ctl_up_settled(ctl *c, size_t server);

/* True when server i, at its last lists fetch, said it takes resources/subscribe (for a
 * perSession server: its template instance said so). */
bool ctl_up_can_subscribe(ctl *c, size_t server);

/* "ready", "initializing", "failed", "backing off", "configured" ... for Admin. */
const char *ctl_up_state_name(ctl *c, size_t server);

/* Writes why server i cannot take a request into buf (like snprintf): the message a client
 * gets with the JSON-RPC error. */
int ctl_up_why(ctl *c, size_t server, char *buf, size_t size);

/* Instances that hold a process or a remote session now (hub.maxInstances counts these). */
size_t ctl_up_live_count(ctl *c);

/* Reload, in two steps around the switch of c->cfg (ctl_reload.c). Begin, with c->cfg still
 * the old configuration: fills map[old index] with the server's index in next (SIZE_MAX when
 * it is gone) and stops the instances of servers removed, disabled or changed in how they
 * are started (their callbacks run now, under the old indexes). Finish, with c->cfg the new
 * configuration: re-indexes the kept instances and starts the servers that are new or
 * changed; n_old is the old server count. */
void ctl_up_reload_begin(ctl *c, const cfg *next, size_t *map);
void ctl_up_reload_finish(ctl *c, size_t n_old, const size_t *map);

/* Frees a retired entry once its instance is gone (internal to ctl_up.c's callbacks). */
void ctl_up_forget_retired(ctl *c, struct ctl_up *gone);

/* perSession servers. A session gets its own instance of such a server when it first needs
 * it, within hub.maxInstancesPerServer and hub.maxInstances; the instance lives until the
 * session ends (restarted with backoff if it fails meanwhile). The shared entry of such a
 * server only learns its lists: a template instance started with control (or on first
 * listing with startOnDemand) that stops once they are fetched. */

/* The instance that serves server i for session s: s's own for a perSession server
 * (created here on first use; NULL when a limit refuses it), else the shared one as
 * ctl_up_usable. A perSession server without a session gets NULL. */
inst *ctl_up_usable_for(ctl *c, sess *s, size_t server);

/* Like ctl_up_ready, for session s (never creates an instance). */
inst *ctl_up_ready_for(ctl *c, sess *s, size_t server);

/* Like ctl_up_why, for the instance ctl_up_usable_for(c, s, server) could not give. */
int ctl_up_why_for(ctl *c, sess *s, size_t server, char *buf, size_t size);

/* True when in is a READY instance still in service (shared or per-session): an answer to
 * its request may be delivered. */
bool ctl_up_is_live(ctl *c, const inst *in);

/* Session s ends: each of its instances stops (stdin closed, TERM to its process group,
 * KILL after hub.killGracePeriod, reaped) and is freed once gone. */
void ctl_up_session_ended(ctl *c, sess *s);

/* Restarts instances of server i now (their calls get an error, the process TERM then KILL,
 * a new one starts at once, without backoff): session_id NULL restarts every running
 * instance of the server, "" the shared one, else that session's. Template instances of
 * perSession servers are left alone. Returns how many were restarted. */
int ctl_up_restart(ctl *c, size_t server, const char *session_id);

/* How many instances session s owns. */
size_t ctl_up_session_instances(const sess *s);

/* One instance, for Admin. Strings are borrowed from the instance and the cfg: valid until
 * the loop moves on (the caller's reply is built before that). */
typedef struct ctl_up_info {
    const char *server;
    const char *session_id; /* "" for a shared instance */
    int pid;                /* 0 for a remote server or when not running */
    const char *state;
    unsigned restarts;
    int64_t uptime_ms;      /* since the current instance was created */
    bool retired;           /* stopping for good (session ended, server removed) */
    bool template_instance; /* a perSession server's list-learning instance */
    bool warm;              /* in the hub.warmPerSession pool */
} ctl_up_info;

typedef void (*ctl_up_visit_fn)(void *ud, const ctl_up_info *info);

/* Calls fn for every instance that exists (shared, per-session, stopping). */
void ctl_up_visit(ctl *c, ctl_up_visit_fn fn, void *ud);

/* Process id of server i's instance, 0 when none. */
int ctl_up_pid(ctl *c, size_t server);

/* Restarts of server i's instance since control started. */
unsigned ctl_up_restarts(ctl *c, size_t server);

#endif
