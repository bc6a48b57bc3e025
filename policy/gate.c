/*
 * gate.c — the glue between a policy request and pbs_policy_decide(). Postfix asks only
 * after permit_mynetworks, permit_sasl_authenticated and permit_auth_destination, so every
 * question is about a relay recipient; the answer is OK for an entitled client and DUNNO
 * for every other, so that Postfix's own reject_unauth_destination stays the barrier and
 * refuses with its native reply. Only a lease store in trouble gets a reply of our own,
 * the 451 the milter gives (or what milter.on_store_error says).
 *
 * Decisions are counted as the milter counts them (usage.h): a relay allowed for a
 * message once, with the lease's user; every refusal and deferral. Requests from Exim's
 * acl_popbsmtp (popbsmtp_gate=exim) are counted as the gate "exim", others as "policy". Postfix itself
 * decides trusted, authenticated and local recipients before it asks, so those are
 * the milter's counts only. With usage.trace_header on, the same gate asked again at
 * DATA (smtpd_data_restrictions) prepends the X-PopBeforeSMTP header to a message it
 * let through on a lease: PREPEND is not final, so it cannot be the RCPT answer.
 *
 * milter.trusted is not consulted: on this path Postfix's mynetworks is the list of
 * trusted clients, checked before the policy is asked; a second list here could only
 * widen relay beyond what Postfix itself was told.
 */
#include "gate.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "popbsmtp/addr.h"
#include "popbsmtp/lease.h"
#include "popbsmtp/log.h"
#include "popbsmtp/policy.h"
#include "popbsmtp/store.h"
#include "popbsmtp/usage.h"

#define ACTION_OK "action=OK\n\n"
#define ACTION_OK_COUNTED "action=OK counted\n\n"
#define ACTION_DUNNO "action=DUNNO\n\n"
#define ACTION_DEFER \
	"action=451 4.3.0 Relay authorization temporarily unavailable, try again later\n\n"

#define INSTANCE_SIZE sizeof(((struct pbs_request *)0)->instance)

struct pbs_gate {
	const pbs_config *cfg;
	pbs_store *store;
	pbs_usage *usage;      /* gate "policy": Postfix */
	/* gate "exim": requests from acl_popbsmtp (popbsmtp_gate=exim); made at the first, so
	 * that a gate serving only Postfix reports no "exim" gate */
	pbs_usage *usage_exim;
};

/* What one policy connection remembers between its requests: the same in both modes. */
struct pbs_gate_session {
	/* The lease answer for the message last asked about: its instance and subject. */
	char instance[INSTANCE_SIZE];
	char subject[PBS_ADDR_STRLEN];
	enum pbs_lease_state lease;
	pbs_lease found; /* when a lease was found (LIVE, SUSPENDED, OVER_LIMIT) */
	char lease_user[PBS_LOG_SAFE_MAX];
	char reply[sizeof "action=550 5.7.1 \n\n" + 128]; /* popbsmtp's own refusal */
	char counted[INSTANCE_SIZE]; /* the message whose allowed relay was counted */
	char leased[INSTANCE_SIZE];  /* the message last let through on the lease */
	char prepend[sizeof "action=PREPEND " PBS_USAGE_TRACE_HEADER ": \n\n" + 64 + 1 +
		     PBS_USAGE_TRACE_MAX];
};

struct pbs_gate *pbs_gate_new(const pbs_config *cfg)
{
	struct pbs_gate *g = calloc(1, sizeof *g);

	if (g == NULL)
		return NULL;
	g->cfg = cfg;
	if ((g->store = pbs_store_new(&cfg->redis)) == NULL ||
	    (g->usage = pbs_usage_new("policy", PBS_USAGE_MAX_USERS)) == NULL) {
		pbs_store_free(g->store);
		free(g);
		return NULL;
	}
	return g;
}

struct pbs_gate_session *pbs_gate_session_new(void)
{
	return calloc(1, sizeof(struct pbs_gate_session));
}

void pbs_gate_session_free(struct pbs_gate_session *s)
{
	free(s);
}

void pbs_gate_idle(struct pbs_gate *g)
{
	pbs_usage_maybe_flush(g->usage, g->store, &g->cfg->usage, time(NULL));
	if (g->usage_exim != NULL)
		pbs_usage_maybe_flush(g->usage_exim, g->store, &g->cfg->usage, time(NULL));
}

void pbs_gate_free(struct pbs_gate *g)
{
	if (g == NULL)
		return;
	pbs_usage_flush(g->usage, g->store, &g->cfg->usage, time(NULL));
	if (g->usage_exim != NULL)
		pbs_usage_flush(g->usage_exim, g->store, &g->cfg->usage, time(NULL));
	pbs_usage_free(g->usage);
	pbs_usage_free(g->usage_exim);
	pbs_store_free(g->store);
	free(g);
}

/* Say that a relay refusal by a limit just suspended the lease's user. */
static void note_suspended(struct pbs_gate *g, const struct pbs_gate_session *s,
			   const struct pbs_relay_check *check, const char *client)
{
	pbs_log_suspended(s->lease_user, check->limit, g->cfg->limits.suspend_after,
			  g->cfg->limits.suspend_for, client, s->subject);
	pbs_usage_count(g->usage, PBS_EV_SUSPENDED_RATE_LIMIT);
}

/* The lease state for SUBJECT: with limits on, checked and counted for every relay
 * recipient; else the cached one if this is the same message (INSTANCE) of the same
 * client, or one GET. A store error is cached too: a message with many recipients then
 * waits for a dead Redis once, not once per recipient. */
static enum pbs_lease_state lease_for(struct pbs_gate *g, struct pbs_gate_session *s,
				      const struct pbs_request *req, const char *subject,
				      const char *client)
{
	const char *instance = req->instance;
	struct pbs_relay_check check;
	bool counted = pbs_config_limits_on(&g->cfg->limits);
	char owner[PBS_SENDER_MAX];
	struct pbs_relay_sender sender = {(enum pbs_sender_rule)g->cfg->lease.sender, owner};

	if ((!counted || s->lease == PBS_LEASE_STORE_ERROR) && instance[0] != '\0' &&
	    strcmp(instance, s->instance) == 0 && strcmp(subject, s->subject) == 0)
		return s->lease;
	s->lease_user[0] = '\0';
	strcpy(s->instance, instance);
	strcpy(s->subject, subject);
	pbs_policy_sender_owner(sender.rule, pbs_request_has(req, "sender") ? req->sender : NULL,
				owner);
	s->lease = pbs_store_relay(g->store, subject, &g->cfg->limits, &sender, &check);
	switch (s->lease) {
	case PBS_LEASE_NONE:
		if (pbs_store_error(g->store)[0] != '\0')
			pbs_log(LOG_WARNING, "lease lookup for %s: ignored, treated as no lease: %s",
				client, pbs_store_error(g->store));
		break;
	case PBS_LEASE_STORE_ERROR:
		pbs_log(LOG_ERR, "lease lookup for %s failed: %s", client,
			pbs_store_error(g->store));
		break;
	default: /* a lease: LIVE, SUSPENDED or OVER_LIMIT */
		s->found = check.lease;
		pbs_log_safe(check.lease.user, s->lease_user);
		if (check.suspended_now)
			note_suspended(g, s, &check, client);
		break;
	}
	return s->lease;
}

/* Count the decision for REQ's message: an allowed relay once per message (as the milter,
 * which accepts the rest of a message at its first allowed relay), every refusal and
 * deferral. A relay on the lease also counts as one message of the lease's user. */
static void count_decision(struct pbs_gate *g, struct pbs_gate_session *s,
			   const struct pbs_request *req, enum pbs_verdict verdict,
			   const char *reason, const char *client)
{
	int event = pbs_usagekey_decision(verdict, reason);
	pbs_usage *usage = g->usage;

	if (event < 0)
		return;
	if (strcmp(req->popbsmtp_gate, "exim") == 0) {
		if (g->usage_exim == NULL)
			g->usage_exim = pbs_usage_new("exim", PBS_USAGE_MAX_USERS);
		if (g->usage_exim != NULL) /* else (out of memory) counted as "policy" */
			usage = g->usage_exim;
	}
	if (verdict == PBS_VERDICT_ALLOW && req->instance[0] != '\0') {
		if (strcmp(req->instance, s->counted) == 0)
			return;
		strcpy(s->counted, req->instance);
	}
	pbs_usage_count(usage, (enum pbs_usage_event)event);
	if (event == PBS_EV_ALLOWED_LEASE) {
		pbs_usage_relay(usage, s->found.user, client, time(NULL));
		strcpy(s->leased, req->instance);
	}
}

/* Say once per process that without usage.trace_secret Postfix's header_checks cannot
 * delete the client's forged headers and keep ours: the two look the same. */
static void note_no_secret(void)
{
	static bool said;

	if (said)
		return;
	said = true;
	pbs_log(LOG_WARNING, "usage.trace_secret is not set: Postfix cannot tell the %s header "
		"popbsmtp-policy adds from one the client wrote (see docs/postfix.md)",
		PBS_USAGE_TRACE_HEADER);
}

/* At DATA, with usage.trace_header on: the header naming the lease's user for a message
 * let through on it, else nothing. The lease is the one the RCPT answer was based on.
 * The PREPEND passes through cleanup's header_checks like every header the client wrote
 * (seen on Postfix 3.7), so the secret goes first in the value: the header_checks lines
 * of pbs_gate_header_checks() take it out again and delete every one without it. */
static const char *trace_answer(struct pbs_gate *g, struct pbs_gate_session *s,
				const struct pbs_request *req)
{
	const char *secret = g->cfg->usage.trace_secret;
	char value[PBS_USAGE_TRACE_MAX];

	if (req->instance[0] == '\0' || strcmp(req->instance, s->leased) != 0)
		return ACTION_DUNNO;
	if (secret[0] == '\0')
		note_no_secret();
	pbs_usage_trace_value(&s->found, s->subject, value);
	snprintf(s->prepend, sizeof s->prepend, "action=PREPEND %s: %s%s%s\n\n",
		 PBS_USAGE_TRACE_HEADER, secret, secret[0] != '\0' ? " " : "", value);
	return s->prepend;
}

int pbs_gate_header_checks(const pbs_config *cfg, FILE *out)
{
	const char *secret = cfg->usage.trace_secret;

	if (secret == NULL || secret[0] == '\0')
		return -1;
	/* Letters and digits only (config.c): nothing in it is special to a regexp. Postfix's
	 * regexp tables ignore case, as header names do; the first match decides, and the
	 * REPLACEd header is not looked at again. */
	fprintf(out, "# Written by popbsmtp-policy -H (docs/postfix.md): keep the %s header\n"
		"# popbsmtp-policy adds, without its secret; delete every other one.\n"
		"/^%s: %s (.*)$/ REPLACE %s: $1\n"
		"/^%s[[:space:]]*:/ IGNORE\n",
		PBS_USAGE_TRACE_HEADER, PBS_USAGE_TRACE_HEADER, secret, PBS_USAGE_TRACE_HEADER,
		PBS_USAGE_TRACE_HEADER);
	return 0;
}

/* Say once per process that requests from a stage other than RCPT reach us: the
 * restriction is in the wrong list, and those requests are not decided. */
static void note_wrong_stage(const struct pbs_request *req)
{
	static bool said;
	char safe_req[PBS_LOG_SAFE_MAX], safe_state[PBS_LOG_SAFE_MAX];

	if (said)
		return;
	said = true;
	pbs_log(LOG_WARNING, "request=%s protocol_state=%s answered DUNNO: popbsmtp-policy decides "
		"only smtpd_access_policy at RCPT (use it in smtpd_relay_restrictions)",
		pbs_log_safe(req->request, safe_req), pbs_log_safe(req->protocol_state, safe_state));
}

/* The client of REQ into ADDR; false (logged) when it has none or it is not IP. */
static bool client_of(const struct pbs_request *req, pbs_addr *addr)
{
	char safe[PBS_LOG_SAFE_MAX];

	if (!pbs_request_has(req, "client_address")) {
		pbs_log(LOG_WARNING, "bad policy request: no client_address (queue=%s); "
			"answered DUNNO", pbs_log_safe(req->queue_id, safe));
		return false;
	}
	if (pbs_addr_parse(req->client_address, addr) != 0) {
		pbs_log(LOG_WARNING, "bad policy request: client_address '%s' is not an IP "
			"address; answered DUNNO", pbs_log_safe(req->client_address, safe));
		return false;
	}
	return true;
}

/* The answer for VERDICT and REASON: OK ("OK counted" to Exim's acl_popbsmtp when the
 * recipient was counted, so that it asks again for the next one instead of accepting the
 * rest of the message); popbsmtp's own reply for a relay limit, a suspension or
 * lease.sender (in S, which keeps it until the next request); the 451 of a store in
 * trouble; DUNNO for every other refusal, which Postfix's reject_unauth_destination then
 * refuses with its native reply. */
static const char *answer_of(struct pbs_gate_session *s, const struct pbs_request *req,
			     const struct pbs_policy_facts *facts, enum pbs_verdict verdict,
			     const char *reason)
{
	const char *code, *text;

	if (verdict == PBS_VERDICT_ALLOW)
		return strcmp(req->popbsmtp_gate, "exim") == 0 &&
			       !pbs_policy_covers_message(facts, verdict)
			   ? ACTION_OK_COUNTED
			   : ACTION_OK;
	if (pbs_policy_own_reply(reason, &code, &text)) {
		snprintf(s->reply, sizeof s->reply, "action=%s %s\n\n", code, text);
		return s->reply;
	}
	return verdict == PBS_VERDICT_TEMPFAIL ? ACTION_DEFER : ACTION_DUNNO;
}

const char *pbs_gate_answer(struct pbs_gate *g, struct pbs_gate_session *s,
			    const struct pbs_request *req)
{
	struct pbs_policy_facts facts = {0};
	char client[PBS_ADDR_STRLEN], subject[PBS_ADDR_STRLEN], rcpt[PBS_LOG_SAFE_MAX + 2];
	const char *reason, *qid = req->queue_id[0] ? req->queue_id : NULL;
	enum pbs_verdict verdict;
	pbs_addr addr;

	if (req->problem[0] != '\0') {
		pbs_log(LOG_WARNING, "bad policy request: %s; answered DUNNO", req->problem);
		return ACTION_DUNNO;
	}
	if (g->cfg->usage.trace_header && strcmp(req->request, "smtpd_access_policy") == 0 &&
	    strcmp(req->protocol_state, "DATA") == 0)
		return trace_answer(g, s, req);
	if (strcmp(req->request, "smtpd_access_policy") != 0 ||
	    strcmp(req->protocol_state, "RCPT") != 0) {
		note_wrong_stage(req);
		return ACTION_DUNNO;
	}
	if (!client_of(req, &addr))
		return ACTION_DUNNO;
	pbs_addr_format(&addr, client);
	facts.authenticated = req->sasl_username[0] != '\0';
	facts.relay = true;
	facts.never_lease = pbs_cidr_list_contains(&g->cfg->lease.never, &addr);
	facts.lease = PBS_LEASE_UNKNOWN;
	facts.on_store_error = (enum pbs_on_store_error)g->cfg->milter.on_store_error;
	facts.counted = pbs_config_limits_on(&g->cfg->limits);
	facts.sender_rule = (enum pbs_sender_rule)g->cfg->lease.sender;
	/* Postfix and acl_popbsmtp send the sender bare, "" for the null sender. */
	facts.sender = pbs_request_has(req, "sender") ? req->sender : NULL;
	verdict = pbs_policy_decide(&facts, &reason);
	if (verdict == PBS_VERDICT_NEED_LEASE) {
		pbs_lease_subject(&addr, (unsigned)g->cfg->lease.ipv4_prefix,
				  (unsigned)g->cfg->lease.ipv6_prefix, subject);
		facts.lease = lease_for(g, s, req, subject, client);
		facts.lease_user = s->found.user;
		verdict = pbs_policy_decide(&facts, &reason);
	}
	count_decision(g, s, req, verdict, reason, client);
	/* In brackets, as the milter sees it: one vocabulary in the log. */
	snprintf(rcpt, sizeof rcpt, "<%s>", req->recipient);
	pbs_log_relay(verdict == PBS_VERDICT_ALLOW	    ? "allowed"
		      : verdict == PBS_VERDICT_TEMPFAIL ? "deferred"
							: "denied",
		      client, rcpt, reason,
		      pbs_policy_lease_found(facts.lease) ? s->lease_user : NULL, s->subject, qid);
	return answer_of(s, req, &facts, verdict, reason);
}
