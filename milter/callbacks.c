/*
 * callbacks.c — libmilter events in, pbs_policy_decide() verdicts out. Nothing here
 * decides: it gathers the facts (client address, AUTH, the MTA's routing of the
 * recipient, the lease), asks the policy, and maps the verdict to SMFIS_* and a reply.
 *
 * The MTA waits for the milter at every step it is told about, so popbsmtp asks for as
 * few as it can: CONNECT and MAIL without a reply (nothing is refused there; MAIL starts
 * a message: its lease is asked afresh, its sender kept for lease.sender), RCPT, and
 * nothing else. SMFIS_ACCEPT ends filtering for the rest of the message, so it is answered only
 * when every later recipient would be allowed anyway (pbs_policy_covers_message); any
 * other allowed recipient gets SMFIS_CONTINUE — after a local first recipient, ACCEPT
 * would let a relay recipient through unchecked.
 *
 * Every decision is counted (usage.h: an atomic add, or a short mutex for a user's first
 * lease relay in a flush interval); the flush thread writes the counts.
 *
 * With usage.trace_header on, the milter also sees the headers and the end of every
 * message: it deletes every X-PopBeforeSMTP header the client wrote (an abuse desk must be
 * able to trust the one it finds) and adds its own to a message relayed by lease. ACCEPT
 * would end the message's filtering before its headers, so an allowed recipient that
 * covers the message gets CONTINUE instead and the later ones are let through as ACCEPT
 * would have; AUTH and trusted mail are stripped too. Off, nothing of this is asked for.
 */
#include "callbacks.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "popbsmtp/addr.h"
#include "popbsmtp/lease.h"
#include "popbsmtp/log.h"
#include "popbsmtp/policy.h"
#include "popbsmtp/usage.h"
#include "flush.h"
#include "runtime.h"

/* usage.trace_header as the milter started with it (the steps are registered once). */
static bool trace_header;

/* Per-connection state, kept through smfi_setpriv (callbacks of one connection may run
 * on different worker threads). */
struct session {
	struct pbs_runtime *rt;
	bool has_addr;
	pbs_addr addr;
	char addr_text[PBS_ADDR_STRLEN];
	bool trusted;
	bool never_lease;
	enum pbs_mta mta;
	/* The lease as last checked in this message (MAIL starts it afresh): asked once per
	 * message, or for every relay recipient when limits count them. */
	enum pbs_lease_state lease;
	bool lease_counted; /* this message's relay by lease is in the usage counts */
	char lease_user[PBS_LOG_SAFE_MAX];
	pbs_lease lease_found; /* when a lease was found (LIVE, SUSPENDED, OVER_LIMIT) */
	char subject[PBS_ADDR_STRLEN];
	char sender[PBS_SENDER_MAX]; /* this message's MAIL FROM as given; "" none */
	/* Per message, trace header on only; reset at its end or abort. */
	bool msg_covered;  /* a recipient covered the message: what ACCEPT would have done */
	bool msg_leased;   /* ... and it was the lease: the header is added at the end */
	unsigned incoming; /* X-PopBeforeSMTP headers the client wrote, deleted at the end */
};

/* Say once per process that the MTA was not recognised and safe defaults apply. */
static void note_unknown_mta(const char *v)
{
	static int said;
	char safe[PBS_LOG_SAFE_MAX];

	if (__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED) == 0)
		pbs_log(LOG_WARNING, "MTA version '%s' not recognised (is 'v' in the connect macros?);"
			" treating every mailer except 'local' as relay", pbs_log_safe(v, safe));
}

/* The client address: hostaddr if it is IP, else the {client_addr} macro if sent. */
static bool client_address(SMFICTX *ctx, const struct sockaddr *hostaddr, pbs_addr *out)
{
	if (pbs_addr_from_sockaddr(hostaddr, out) == 0)
		return true;
	return pbs_addr_parse(smfi_getsymval(ctx, "{client_addr}"), out) == 0;
}

/* CONNECT gets no reply (SMFIP_NR_CONN): record the facts, decide at RCPT. */
static sfsistat on_connect(SMFICTX *ctx, char *hostname, struct sockaddr *hostaddr)
{
	struct session *s = calloc(1, sizeof *s);
	const pbs_config *cfg;
	const char *v;

	(void)hostname;
	if (s == NULL) {
		/* Without a session every recipient gets 451 (see on_envrcpt). */
		pbs_log(LOG_ERR, "out of memory at connect");
		return SMFIS_NOREPLY;
	}
	pbs_runtime_session_begin();
	s->rt = pbs_runtime_acquire();
	cfg = s->rt->cfg;
	smfi_setpriv(ctx, s);
	v = smfi_getsymval(ctx, "v");
	s->mta = pbs_policy_mta(v);
	if (s->mta == PBS_MTA_UNKNOWN)
		note_unknown_mta(v);
	s->has_addr = client_address(ctx, hostaddr, &s->addr);
	if (!s->has_addr) {
		strcpy(s->addr_text, "(no IP address)");
		return SMFIS_NOREPLY;
	}
	pbs_addr_format(&s->addr, s->addr_text);
	s->trusted = pbs_cidr_list_contains(&cfg->milter.trusted, &s->addr);
	s->never_lease = pbs_cidr_list_contains(&cfg->lease.never, &s->addr);
	return SMFIS_NOREPLY;
}

/* True when MAIL's {auth_authen} is set. The MTA sends MAIL's macros with MAIL, and each
 * MAIL replaces them: a transaction after AUTH sees it. */
static bool authenticated(SMFICTX *ctx)
{
	const char *authen = smfi_getsymval(ctx, "{auth_authen}");

	return authen != NULL && authen[0] != '\0';
}

/* Say that a relay refusal by a limit just suspended the lease's user. */
static void note_suspended(const struct session *s, const struct pbs_relay_check *check)
{
	pbs_log_suspended(s->lease_user, check->limit, s->rt->cfg->limits.suspend_after,
			  s->rt->cfg->limits.suspend_for, s->addr_text, s->subject);
	pbs_usage_count(pbs_flush_usage(), PBS_EV_SUSPENDED_RATE_LIMIT);
}

/* The lease state for a relay recipient: with limits on, checked and counted for every
 * one; else asked once per message (on_envfrom starts each afresh), so that a revoke or a
 * suspension takes effect at the connection's next message. */
static void look_up_lease(struct session *s)
{
	const pbs_config *cfg = s->rt->cfg;
	struct pbs_relay_check check;
	char why[512], owner[PBS_SENDER_MAX];
	struct pbs_relay_sender sender = {(enum pbs_sender_rule)cfg->lease.sender, owner};

	if (!pbs_config_limits_on(&cfg->limits) && s->lease != PBS_LEASE_UNKNOWN)
		return;
	if (!s->has_addr) {
		s->lease = PBS_LEASE_NONE;
		return;
	}
	pbs_lease_subject(&s->addr, (unsigned)cfg->lease.ipv4_prefix,
			  (unsigned)cfg->lease.ipv6_prefix, s->subject);
	pbs_policy_sender_owner(sender.rule, s->sender[0] != '\0' ? s->sender : NULL, owner);
	s->lease = pbs_pool_relay(s->rt->pool, s->subject, &cfg->limits, &sender, &check, why,
				  sizeof why);
	switch (s->lease) {
	case PBS_LEASE_NONE:
		if (why[0] != '\0')
			pbs_log(LOG_WARNING, "lease lookup for %s: ignored, treated as no lease: %s",
				s->addr_text, why);
		break;
	case PBS_LEASE_STORE_ERROR:
		pbs_log(LOG_ERR, "lease lookup for %s failed: %s", s->addr_text, why);
		break;
	default: /* a lease: LIVE, SUSPENDED or OVER_LIMIT */
		s->lease_found = check.lease;
		pbs_log_safe(check.lease.user, s->lease_user);
		if (check.suspended_now)
			note_suspended(s, &check);
		break;
	}
}

/* Append SRC to OUT at *O for smfi_setreply: printable ASCII only ('?' for the rest),
 * '%' doubled (libmilter's reply is a format), at most MAX source bytes. */
static void reply_append(char *out, size_t *o, size_t outlen, const char *src, size_t max)
{
	size_t shown;

	for (shown = 0; src != NULL && src[shown] != '\0' && shown < max; shown++) {
		unsigned char c = (unsigned char)src[shown];
		if (*o + 3 >= outlen)
			break;
		if (c < 0x20 || c >= 0x7f)
			c = '?';
		if (c == '%')
			out[(*o)++] = '%';
		out[(*o)++] = (char)c;
	}
	out[*o] = '\0';
}

/* "<rcpt>: TEXT" (or TEXT alone when RCPT is NULL), safe to hand to smfi_setreply. */
static void reply_text(const char *rcpt, const char *text, char *out, size_t outlen)
{
	size_t o = 0;

	out[0] = '\0';
	if (rcpt != NULL) {
		reply_append(out, &o, outlen, rcpt, 200);
		reply_append(out, &o, outlen, ": ", 2);
	}
	reply_append(out, &o, outlen, text, 400);
}

/* One log line per relay decision, with what an administrator needs to follow it. */
static void log_decision(SMFICTX *ctx, const struct session *s, const char *what,
			 const char *rcpt, const char *reason)
{
	pbs_log_relay(what, s->addr_text, rcpt, reason,
		      pbs_policy_lease_found(s->lease) ? s->lease_user : NULL, s->subject,
		      smfi_getsymval(ctx, "i"));
}

/* The address the MTA resolved the recipient to ({rcpt_addr}), which milter.local_domains
 * is checked against. Both MTAs send it by default; say once if this one does not, as the
 * domain list then cannot apply and those recipients count as relay. */
static const char *resolved_rcpt(SMFICTX *ctx, const pbs_config *cfg)
{
	static int said;
	const char *addr = smfi_getsymval(ctx, "{rcpt_addr}");

	if (addr == NULL && cfg->milter.local_domains.count > 0 &&
	    __atomic_exchange_n(&said, 1, __ATOMIC_RELAXED) == 0)
		pbs_log(LOG_WARNING, "the MTA sends no {rcpt_addr} at RCPT: milter.local_domains "
				     "cannot apply (add {rcpt_addr} to its RCPT macros)");
	return addr;
}

/* Count the decision; a relay by lease also counts as one message of the lease's user.
 * With the limits on every relay recipient by lease is decided here, but the message
 * counts once, as when ACCEPT spares the rest of it. */
static void count_decision(struct session *s, enum pbs_verdict verdict, const char *reason)
{
	int event = pbs_usagekey_decision(verdict, reason);

	if (event < 0)
		return;
	if (event == PBS_EV_ALLOWED_LEASE) {
		if (s->lease_counted)
			return;
		s->lease_counted = true;
	}
	pbs_usage_count(pbs_flush_usage(), (enum pbs_usage_event)event);
	if (event == PBS_EV_ALLOWED_LEASE)
		pbs_usage_relay(pbs_flush_usage(), s->lease_found.user, s->addr_text, time(NULL));
}

/* ACCEPT when the verdict covers the rest of the message, else CONTINUE. With the trace
 * header on, CONTINUE even then: after ACCEPT the MTA shows the milter neither the headers
 * nor the end of the message, so a forged header could not be deleted (from AUTH and
 * trusted clients too) nor the lease's header added. */
static sfsistat allow_answer(struct session *s, const struct pbs_policy_facts *facts,
			     enum pbs_verdict verdict, const char *reason)
{
	if (!pbs_policy_covers_message(facts, verdict))
		return SMFIS_CONTINUE;
	if (!trace_header)
		return SMFIS_ACCEPT;
	s->msg_covered = true;
	s->msg_leased = strcmp(reason, "lease") == 0;
	return SMFIS_CONTINUE;
}

/* Refuse the recipient RCPT for REASON: with popbsmtp's own reply for it (a relay limit,
 * a suspension, lease.sender), else CODE ("451 4.3.0") and TEXT. */
static sfsistat refuse(SMFICTX *ctx, const struct session *s, const char *rcpt,
		       const char *reason, const char *code, const char *text)
{
	char reply[512], rcode[4], xcode[16];
	bool sendmail_names;

	pbs_policy_own_reply(reason, &code, &text);
	/* "NNN X.Y.Z": the two parts smfi_setreply takes. */
	snprintf(rcode, sizeof rcode, "%.3s", code);
	snprintf(xcode, sizeof xcode, "%s", code + 4);
	/* Sendmail itself puts "<rcpt>... " in front of a reply at RCPT coded 450 or 550
	 * (seen on 8.17; not 451): the recipient is named once. */
	sendmail_names = s->mta == PBS_MTA_SENDMAIL &&
			 (strncmp(code, "450", 3) == 0 || strncmp(code, "550", 3) == 0);
	reply_text(sendmail_names ? NULL : rcpt, text, reply, sizeof reply);
	smfi_setreply(ctx, rcode, xcode, reply);
	return code[0] == '4' ? SMFIS_TEMPFAIL : SMFIS_REJECT;
}

static sfsistat on_envrcpt(SMFICTX *ctx, char **argv)
{
	struct session *s = smfi_getpriv(ctx);
	const pbs_config *cfg;
	struct pbs_policy_facts facts;
	const char *rcpt = argv != NULL ? argv[0] : NULL, *reason;
	enum pbs_verdict verdict;

	if (s == NULL)
		return SMFIS_TEMPFAIL;
	/* Trace header on: what ACCEPT would have done for the rest of a covered message. */
	if (s->msg_covered)
		return SMFIS_CONTINUE;
	cfg = s->rt->cfg;
	facts.trusted = s->trusted;
	facts.authenticated = authenticated(ctx);
	facts.relay = pbs_policy_is_relay(s->mta, smfi_getsymval(ctx, "{rcpt_mailer}"), rcpt,
					  resolved_rcpt(ctx, cfg), &cfg->milter);
	facts.never_lease = s->never_lease;
	facts.lease = PBS_LEASE_UNKNOWN;
	facts.on_store_error = (enum pbs_on_store_error)cfg->milter.on_store_error;
	facts.counted = pbs_config_limits_on(&cfg->limits);
	facts.sender_rule = (enum pbs_sender_rule)cfg->lease.sender;
	facts.lease_user = NULL;
	facts.sender = s->sender[0] != '\0' ? s->sender : NULL;
	verdict = pbs_policy_decide(&facts, &reason);
	if (verdict == PBS_VERDICT_NEED_LEASE) {
		look_up_lease(s);
		facts.lease = s->lease;
		facts.lease_user = s->lease_found.user;
		verdict = pbs_policy_decide(&facts, &reason);
	}
	count_decision(s, verdict, reason);
	switch (verdict) {
	case PBS_VERDICT_ALLOW:
		if (facts.relay && !facts.trusted)
			log_decision(ctx, s, "allowed", rcpt, reason);
		/* The rest of the message needs no decision: spare the MTA its remaining
		 * RCPTs, the end of the message and, in Postfix, the hand-over to cleanup. */
		return allow_answer(s, &facts, verdict, reason);
	case PBS_VERDICT_TEMPFAIL:
		log_decision(ctx, s, "deferred", rcpt, reason);
		return refuse(ctx, s, rcpt, reason, "451 4.3.0",
			      "Relay authorization temporarily unavailable, try again later");
	default:
		log_decision(ctx, s, "denied", rcpt, reason);
		return refuse(ctx, s, rcpt, reason, "550 5.7.1", cfg->milter.reject_text);
	}
}

/* The message state back to its start (end of message, RSET, a failed DATA, and
 * every MAIL: nothing of a message outlives it, whatever the MTA told us before). */
static void message_reset(struct session *s)
{
	s->msg_covered = false;
	s->msg_leased = false;
	s->incoming = 0;
}

/* MAIL, with no reply: a message begins. Its lease is asked afresh (a revoke or a
 * suspension since the last one counts), and its address is kept as the client gave it
 * (lease.sender). */
static sfsistat on_envfrom(SMFICTX *ctx, char **argv)
{
	struct session *s = smfi_getpriv(ctx);

	if (s == NULL)
		return SMFIS_NOREPLY;
	message_reset(s);
	s->lease = PBS_LEASE_UNKNOWN;
	s->lease_counted = false;
	snprintf(s->sender, sizeof s->sender, "%s",
		 argv != NULL && argv[0] != NULL ? argv[0] : "");
	return SMFIS_NOREPLY;
}

/* Trace header on: count the X-PopBeforeSMTP headers the client wrote. The MTA names
 * them as written; header names are case-insensitive (RFC 5322), and the MTA finds them
 * again for smfi_chgheader the same way. No reply (SMFIP_NR_HDR; libmilter answers
 * CONTINUE itself to an MTA that needs one). */
static sfsistat on_header(SMFICTX *ctx, char *name, char *value)
{
	struct session *s = smfi_getpriv(ctx);

	(void)value;
	if (s != NULL && name != NULL && strcasecmp(name, PBS_USAGE_TRACE_HEADER) == 0)
		s->incoming++;
	return SMFIS_NOREPLY;
}

/* Trace header on: delete every X-PopBeforeSMTP the client wrote, then name the lease's
 * user in a message it let through. Deleted from the last one back, so no deletion moves
 * the index of one still to come, whether the MTA counts deleted headers or not; ours is
 * added after them, so it is never one of those counted. A forged header that cannot be
 * deleted would mislead whoever reads it: the message is deferred instead. */
static sfsistat on_eom(SMFICTX *ctx)
{
	struct session *s = smfi_getpriv(ctx);
	char value[PBS_USAGE_TRACE_MAX];
	unsigned i;

	if (s == NULL)
		return SMFIS_CONTINUE;
	for (i = s->incoming; i > 0; i--) {
		if (smfi_chgheader(ctx, PBS_USAGE_TRACE_HEADER, (int)i, NULL) == MI_SUCCESS)
			continue;
		pbs_log(LOG_ERR, "client %s: a %s header it wrote could not be deleted; "
			"message deferred", s->addr_text, PBS_USAGE_TRACE_HEADER);
		message_reset(s);
		smfi_setreply(ctx, "451", "4.3.0", "Message could not be checked, try again later");
		return SMFIS_TEMPFAIL;
	}
	if (s->msg_leased) {
		pbs_usage_trace_value(&s->lease_found, s->subject, value);
		if (smfi_addheader(ctx, PBS_USAGE_TRACE_HEADER, value) != MI_SUCCESS)
			pbs_log(LOG_WARNING, "client %s: the %s header could not be added",
				s->addr_text, PBS_USAGE_TRACE_HEADER);
	}
	message_reset(s);
	return SMFIS_CONTINUE;
}

/* The message ended without its end (RSET, a failed DATA): the next one starts afresh. */
static sfsistat on_abort(SMFICTX *ctx)
{
	struct session *s = smfi_getpriv(ctx);

	if (s != NULL)
		message_reset(s);
	return SMFIS_CONTINUE;
}

static sfsistat on_close(SMFICTX *ctx)
{
	struct session *s = smfi_getpriv(ctx);

	if (s == NULL)
		return SMFIS_CONTINUE;
	smfi_setpriv(ctx, NULL);
	pbs_runtime_release(s->rt);
	free(s);
	pbs_runtime_session_end();
	return SMFIS_CONTINUE;
}

/* Every step but CONNECT, MAIL and RCPT is skipped, and CONNECT and MAIL need no reply;
 * with the trace header on, the headers are seen too, also without a reply. Never
 * SMFIP_NR_RCPT: libmilter would then drop a REJECT. Where the MTA cannot skip the
 * CONNECT or MAIL reply, libmilter sends CONTINUE for it. */
static sfsistat on_negotiate(SMFICTX *ctx, unsigned long mta_actions, unsigned long mta_steps,
			     unsigned long mta_f2, unsigned long mta_f3, unsigned long *actions,
			     unsigned long *steps, unsigned long *f2, unsigned long *f3)
{
	(void)ctx;
	(void)mta_actions;
	(void)mta_steps;
	(void)mta_f2;
	(void)mta_f3;
	/* A relay gate changes nothing in the message, unless it is the trace header. */
	*actions = trace_header ? SMFIF_ADDHDRS | SMFIF_CHGHDRS : 0;
	*steps = SMFIP_NR_CONN | SMFIP_NOHELO | SMFIP_NR_MAIL | SMFIP_NODATA | SMFIP_NOEOH |
		 SMFIP_NOBODY | SMFIP_NOUNKNOWN;
	*steps |= trace_header ? SMFIP_NR_HDR : SMFIP_NOHDRS;
	*f2 = 0;
	*f3 = 0;
	return SMFIS_CONTINUE;
}

struct smfiDesc pbs_callbacks_desc(const pbs_config *cfg)
{
	struct smfiDesc desc = {
		.xxfi_name = "popbsmtp",
		.xxfi_version = SMFI_VERSION,
		.xxfi_flags = 0,
		.xxfi_connect = on_connect,
		.xxfi_envrcpt = on_envrcpt,
		.xxfi_close = on_close,
		.xxfi_negotiate = on_negotiate,
		.xxfi_envfrom = on_envfrom,
		/* helo, eoh, body, unknown, data: NULL, never called. */
	};

	trace_header = cfg->usage.trace_header != 0;
	if (trace_header) {
		desc.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS;
		desc.xxfi_header = on_header;
		desc.xxfi_eom = on_eom;
		desc.xxfi_abort = on_abort;
	}
	return desc;
}
