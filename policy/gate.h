/*
 * gate.h — one policy request in, one Postfix action out. The facts come from the
 * request and the config, the decision from pbs_policy_decide(), the lease from one GET
 * per message (Postfix sends every recipient of a message with the same instance).
 */
#ifndef POPBSMTP_POLICY_GATE_H
#define POPBSMTP_POLICY_GATE_H

#include <stdio.h>

#include "popbsmtp/config.h"
#include "request.h"

struct pbs_gate;         /* the configuration, Redis and the counts: one per process */
struct pbs_gate_session; /* one policy connection's memory of its current message */

/* A gate deciding with CFG (borrowed, must outlive the gate); Redis is connected at
 * the first lookup. NULL when out of memory. */
struct pbs_gate *pbs_gate_new(const pbs_config *cfg);

/* Flush the decision counts and, first, whatever is still counted (usage.h). */
void pbs_gate_free(struct pbs_gate *gate);

/* A session for a new policy connection; NULL when out of memory. */
struct pbs_gate_session *pbs_gate_session_new(void);
void pbs_gate_session_free(struct pbs_gate_session *s);

/* Between requests: write the counts when usage.flush_interval has passed. */
void pbs_gate_idle(struct pbs_gate *gate);

/* Print to OUT the Postfix header_checks lines (a regexp table) that keep the trace header
 * this gate adds, its secret taken out, and delete every other X-PopBeforeSMTP. -1 when
 * CFG has no usage.trace_secret. */
int pbs_gate_header_checks(const pbs_config *cfg, FILE *out);

/* The reply to REQ on the connection of SESSION, "action=...\n\n", with one log line for
 * each relay decision. The one decision path of both modes (spawn(8) and --listen). The
 * reply lives in SESSION until its next request. */
const char *pbs_gate_answer(struct pbs_gate *gate, struct pbs_gate_session *session,
			    const struct pbs_request *req);

#endif
