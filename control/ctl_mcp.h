/* ctl_mcp: the MCP side of control: one dispatch table of the methods a client may call,
 * the requests running for sessions (with their Gateway streams), and delivery of messages
 * to a session's standalone stream. Loop thread only. */
#ifndef MCPHUB_CTL_MCP_H
#define MCPHUB_CTL_MCP_H

#include "ctl_internal.h"
#include "inst.h"
#include "mcp26.h"

#include <jansson.h>

/* Runs client request msg (borrowed; a JSON-RPC request) of session s. call is the Gateway
 * Request stream that carries the answer (completed by this module), or NULL for a legacy
 * SSE session, whose answers go to its standalone stream. stream_id names the POST's
 * stream for event ids. */
void ctl_mcp_request(ctl *c, sess *s, rpc_call *call, json_t *msg, const char *stream_id);

/* A client notification or response (msg borrowed). */
void ctl_mcp_client_message(ctl *c, sess *s, json_t *msg);

/* Builds the InitializeResult response (new reference) for request id (borrowed) and
 * records what the client declared. Used by OpenSession and by legacy SSE initialize. */
json_t *ctl_mcp_initialize(ctl *c, sess *s, json_t *id, json_t *params);

/* Sends msg (borrowed) on s's standalone stream and records it in the session's replay
 * ring. A stream whose edge is gone (sess_detach_stream) only records it, for the client's
 * resume. Returns 0, or -ENOTCONN when the session never had a standalone stream. */
int ctl_mcp_push(ctl *c, sess *s, json_t *msg);

/* Cancels and forgets everything running for s (the session is ending). */
void ctl_mcp_session_ended(ctl *c, sess *s);

/* Forgets every running request (control is stopping). */
void ctl_mcp_cleanup(ctl *c);

/* The running request whose Gateway call was cancelled (the client left). */
void ctl_mcp_call_cancelled(ctl *c, uintptr_t serial);

/* Upstream events (from ctl_up.c). */
/* Server i is settled (lists fetched, or not running): held requests go on. */
void ctl_mcp_upstream_settled(ctl *c, size_t server);
/* Server i's instance failed or stopped. */
void ctl_mcp_upstream_gone(ctl *c, size_t server);
/* Server i's list of kind (agg_kind) changed: sessions that see it are told; only session
 * owner when the change came from owner's own instance of a perSession server. */
void ctl_mcp_list_changed(ctl *c, size_t server, sess *owner, int kind);
/* A notification from instance in of server i (params borrowed, may be NULL); owner is the
 * session a per-session instance serves, NULL for a shared one. */
void ctl_mcp_upstream_notification(ctl *c, size_t server, inst *in, sess *owner,
                                   const char *method, json_t *params);
/* A request from server i's instance in (sampling, elicitation, roots): forwarded to the
 * client whose call caused it, or answered with an error. owner as above. */
void ctl_mcp_upstream_request(ctl *c, size_t server, inst *in, sess *owner, json_t *id,
                              const char *method, json_t *params);

/* Reload support (ctl_reload.c). ctl_mcp_visible: what the sessions with someone to tell (a
 * stream, or a stateless listen) see now, once per route, as a new JSON object (route ->
 * [tools, prompts, resources]). After the switch
 * to the new configuration, ctl_mcp_announce_changes sends list_changed to each session for
 * each list that differs from `before` (borrowed). ctl_mcp_remap re-indexes running
 * requests, forwarded upstream requests and subscriptions: map[old index] = new index, or
 * SIZE_MAX for a server that is gone (its entries are dropped). */
json_t *ctl_mcp_visible(ctl *c);
void ctl_mcp_announce_changes(ctl *c, json_t *before);
void ctl_mcp_remap(ctl *c, const size_t *map, size_t n_old);

/* Ends the requests parked for a stateless client's input (input_required) that were not
 * retried within their time (the idle timer calls it). */
void ctl_mcp_expire_parked(ctl *c);

/* Protocol revisions of the session era, newest first; NULL-terminated. */
extern const char *const ctl_mcp_versions[];

#endif
