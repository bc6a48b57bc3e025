/*
 * policy.h — the relay decision as a pure function, and the classification of a
 * recipient from the MTA's own routing ({rcpt_mailer}). No I/O: the milter gathers
 * the facts, asks pbs_policy_decide(), and maps the verdict to SMFIS_* and a reply.
 */
#ifndef POPBSMTP_POLICY_H
#define POPBSMTP_POLICY_H

#include <stdbool.h>

#include "popbsmtp/config.h"

enum pbs_verdict {
	PBS_VERDICT_ALLOW,
	PBS_VERDICT_REJECT,
	PBS_VERDICT_TEMPFAIL,
	PBS_VERDICT_NEED_LEASE /* ask the store, set facts.lease, decide again */
};

enum pbs_lease_state {
	PBS_LEASE_UNKNOWN, /* not looked up yet */
	PBS_LEASE_LIVE,
	PBS_LEASE_NONE,
	PBS_LEASE_STORE_ERROR,
	PBS_LEASE_SUSPENDED,  /* a lease, but its user is suspended (limits on: checked) */
	PBS_LEASE_OVER_LIMIT  /* a lease, but a relay limit is reached (limits.*) */
};

/* Room for MAIL FROM as lease.sender compares it: longer than any address it accepts
 * (320 bytes, brackets aside), so one cut to fit is still too long, and refused. */
#define PBS_SENDER_MAX 330

enum pbs_mta { PBS_MTA_UNKNOWN, PBS_MTA_POSTFIX, PBS_MTA_SENDMAIL };

struct pbs_policy_facts {
	bool trusted;       /* client in milter.trusted */
	bool authenticated; /* {auth_authen} set */
	bool relay;         /* the recipient leaves this site */
	bool never_lease;   /* client in lease.never */
	enum pbs_lease_state lease;
	enum pbs_on_store_error on_store_error;
	bool counted;       /* relay by lease is counted per recipient (limits on) */
	/* lease.sender: with a rule other than any, the lease's user (LIVE) and MAIL FROM as
	 * the client gave it ("<a@b>" or bare; NULL unknown) must agree. */
	enum pbs_sender_rule sender_rule;
	const char *lease_user;
	const char *sender;
};

/* The verdict for one recipient, and its reason as one log-friendly token: trusted, auth,
 * local, never-lease, lookup-needed, lease, no-lease, store-error, user-suspended,
 * rate-limit, sender-address, sender-domain. */
enum pbs_verdict pbs_policy_decide(const struct pbs_policy_facts *facts, const char **reason);

/* True when VERDICT for this recipient holds for every later recipient of the message
 * too, so the milter may answer ACCEPT and the MTA skips the rest of the message's milter
 * steps: the client may relay anything (trusted network, or SMTP AUTH or a live lease
 * shown on this relay recipient). Never for a local recipient of any other client, nor
 * for a relay let through by on_store_error = accept: ACCEPT there would open the relay. */
bool pbs_policy_covers_message(const struct pbs_policy_facts *facts, enum pbs_verdict verdict);

/* What a lease's user must be for MAIL FROM SENDER to pass RULE (lease.sender), as the
 * relay script compares it, into OWNER (PBS_SENDER_MAX bytes): the address (rule address)
 * or its domain (rule domain), in lower case; "" when SENDER is no plain address (no
 * user passes) or RULE is any. The script leaves a recipient this refuses uncounted;
 * pbs_policy_decide still decides. */
void pbs_policy_sender_owner(enum pbs_sender_rule rule, const char *sender,
			     char owner[PBS_SENDER_MAX]);

/* True when LEASE says a lease was found, whether it may relay or not (LIVE, SUSPENDED,
 * OVER_LIMIT): the lease's user belongs in the decision's log line. */
bool pbs_policy_lease_found(enum pbs_lease_state lease);

/* NULL when USER may hold a lease that relays under RULE (lease.sender), else why not:
 * "domain" and "address" need a user name that is itself a plain address. */
const char *pbs_policy_sender_problem(enum pbs_sender_rule rule, const char *user);

/* Which MTA is talking, from the "v" macro (NULL or unrecognised: unknown). */
enum pbs_mta pbs_policy_mta(const char *v_macro);

/* The relay gate that answers the SMTP client: popbsmtp-milter, or popbsmtp-policy
 * under Postfix. */
enum pbs_policy_gate { PBS_POLICY_GATE_MILTER, PBS_POLICY_GATE_POLICY };

/* What the client is told for VERDICT and REASON through GATE ("550 5.7.1"), NULL for an
 * allowed relay. The policy gate answers DUNNO for a refusal without a reason of its own
 * (no lease) and leaves it to Postfix's reject_unauth_destination, whose reply this is
 * then. */
const char *pbs_policy_reply(enum pbs_policy_gate gate, enum pbs_verdict verdict,
			     const char *reason);

/* The code and the words the client is told when REASON is one popbsmtp answers itself
 * whatever the gate ("450 4.7.1", "relay limit reached, try again later"): a relay
 * limit, a suspension, lease.sender. False for the others. */
bool pbs_policy_own_reply(const char *reason, const char **code, const char **text);

/* A reason token of pbs_policy_decide() in words, for people ("no lease"). */
const char *pbs_policy_reason_text(const char *reason);

/* True when a recipient leaves this site. The MTA's routing decides: MAILER ({rcpt_mailer})
 * is looked up in milter.relay_mailers / local_mailers (or the MTA's defaults), and an
 * unknown or missing mailer counts as relay, so doubt fails closed. milter.local_domains
 * can only turn a relay into local, and only when RCPT (the address the client gave) and
 * RESOLVED (the MTA's {rcpt_addr}) are both plain "local@domain" addresses in the same
 * listed domain: '%', '!', quotes, several '@', source routes, address literals or a
 * trailing dot in either one, or no RESOLVED at all, leave the decision to the mailer. */
bool pbs_policy_is_relay(enum pbs_mta mta, const char *mailer, const char *rcpt,
			 const char *resolved, const struct pbs_milter_config *cfg);

/* True when DOMAIN is a host name as milter.local_domains must list them: dot-separated
 * labels of letters, digits and '-', no empty label, no trailing dot. */
bool pbs_policy_plain_domain(const char *domain);

#endif
