/*
 * policy.c — the relay decision, pure: facts in, verdict and reason out. When in doubt
 * (unknown mailer, store trouble) the answer never lets an unleased relay through,
 * unless the administrator chose on_store_error = accept.
 */
#include "popbsmtp/policy.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static bool sender_allowed(const struct pbs_policy_facts *f);

/* Ordered as the documentation lists the rules; the first that applies decides. */
enum pbs_verdict pbs_policy_decide(const struct pbs_policy_facts *f, const char **reason)
{
	if (f->trusted) {
		*reason = "trusted";
		return PBS_VERDICT_ALLOW;
	}
	if (f->authenticated) {
		*reason = "auth";
		return PBS_VERDICT_ALLOW;
	}
	if (!f->relay) {
		*reason = "local";
		return PBS_VERDICT_ALLOW;
	}
	if (f->never_lease) {
		*reason = "never-lease";
		return PBS_VERDICT_REJECT;
	}
	switch (f->lease) {
	case PBS_LEASE_UNKNOWN:
		*reason = "lookup-needed";
		return PBS_VERDICT_NEED_LEASE;
	case PBS_LEASE_LIVE:
		if (!sender_allowed(f)) {
			*reason = f->sender_rule == PBS_SENDER_ADDRESS ? "sender-address"
								       : "sender-domain";
			return PBS_VERDICT_REJECT;
		}
		*reason = "lease";
		return PBS_VERDICT_ALLOW;
	case PBS_LEASE_NONE:
		*reason = "no-lease";
		return PBS_VERDICT_REJECT;
	case PBS_LEASE_SUSPENDED:
		*reason = "user-suspended";
		return PBS_VERDICT_REJECT;
	case PBS_LEASE_OVER_LIMIT:
		/* Temporary: a legitimate burst is delayed, not lost. */
		*reason = "rate-limit";
		return PBS_VERDICT_TEMPFAIL;
	case PBS_LEASE_STORE_ERROR:
		break;
	}
	*reason = "store-error";
	switch (f->on_store_error) {
	case PBS_ON_ERROR_ACCEPT:
		return PBS_VERDICT_ALLOW;
	case PBS_ON_ERROR_REJECT:
		return PBS_VERDICT_REJECT;
	default:
		return PBS_VERDICT_TEMPFAIL;
	}
}

bool pbs_policy_lease_found(enum pbs_lease_state lease)
{
	return lease == PBS_LEASE_LIVE || lease == PBS_LEASE_SUSPENDED ||
	       lease == PBS_LEASE_OVER_LIMIT;
}

bool pbs_policy_covers_message(const struct pbs_policy_facts *f, enum pbs_verdict verdict)
{
	if (verdict != PBS_VERDICT_ALLOW)
		return false;
	if (f->trusted)
		return true;
	/* AUTH cannot be undone, and the lease is looked up once per message, so either
	 * covers the message's recipients still to come; not a lease whose every relay
	 * recipient must be counted. */
	return f->relay &&
	       (f->authenticated || (f->lease == PBS_LEASE_LIVE && !f->counted));
}

/* The replies popbsmtp gives itself, whichever the gate: code, enhanced code, words. */
static const char *const own_replies[][3] = {
	{"rate-limit", "450 4.7.1", "Relay limit reached for this login, try again later"},
	{"user-suspended", "550 5.7.1", "Relay suspended for this login"},
	{"sender-address", "550 5.7.1", "Sender must be the address this client logged in as"},
	{"sender-domain", "550 5.7.1",
	 "Sender must be in the domain of the address this client logged in as"},
};

bool pbs_policy_own_reply(const char *reason, const char **code, const char **text)
{
	size_t i;

	for (i = 0; i < sizeof own_replies / sizeof own_replies[0]; i++) {
		if (strcmp(reason, own_replies[i][0]) == 0) {
			*code = own_replies[i][1];
			*text = own_replies[i][2];
			return true;
		}
	}
	return false;
}

const char *pbs_policy_reply(enum pbs_policy_gate gate, enum pbs_verdict verdict,
			     const char *reason)
{
	const char *code, *text;

	if (verdict != PBS_VERDICT_ALLOW && pbs_policy_own_reply(reason, &code, &text))
		return code;
	switch (verdict) {
	case PBS_VERDICT_ALLOW:
		return NULL;
	case PBS_VERDICT_TEMPFAIL:
		return "451 4.3.0";
	default:
		/* Postfix 3.7's reject_unauth_destination: 554 (relay_domains_reject_code). */
		return gate == PBS_POLICY_GATE_POLICY ? "554 5.7.1 Relay access denied"
						      : "550 5.7.1";
	}
}

const char *pbs_policy_reason_text(const char *reason)
{
	static const char *const words[][2] = {
		{"trusted", "trusted network"},
		{"auth", "SMTP AUTH"},
		{"local", "local recipient"},
		{"never-lease", "client in lease.never"},
		{"lookup-needed", "lease lookup needed"},
		{"lease", "lease"},
		{"no-lease", "no lease"},
		{"store-error", "lease store unavailable"},
		{"user-suspended", "the lease's user is suspended"},
		{"rate-limit", "relay limit reached"},
		{"sender-address", "sender is not the lease's user (lease.sender = address)"},
		{"sender-domain", "sender not in the lease's user's domain (lease.sender = domain)"},
	};
	size_t i;

	for (i = 0; i < sizeof words / sizeof words[0]; i++)
		if (strcmp(reason, words[i][0]) == 0)
			return words[i][1];
	return reason;
}

enum pbs_mta pbs_policy_mta(const char *v)
{
	if (v == NULL)
		return PBS_MTA_UNKNOWN;
	if (strncasecmp(v, "Postfix", 7) == 0)
		return PBS_MTA_POSTFIX;
	/* Sendmail's v is its bare version number, "8.17.1.9". */
	if (v[0] == '8' && v[1] == '.')
		return PBS_MTA_SENDMAIL;
	return PBS_MTA_UNKNOWN;
}

/* Mailer names that mean "leaves this site" and "stays here", per MTA. The same word
 * differs: Postfix's "relay" is inbound relay_domains, Sendmail's "relay" is the smart host. */
static const char *const postfix_relay[] = {"smtp", NULL};
static const char *const postfix_local[] = {"local", "virtual", "lmtp", "relay", "error", NULL};
static const char *const sendmail_relay[] = {"esmtp", "smtp", "smtp8", "dsmtp", "relay", NULL};
static const char *const sendmail_local[] = {"local", "prog", "error", NULL};
static const char *const unknown_relay[] = {"smtp", "esmtp", "smtp8", "dsmtp", "relay", NULL};
static const char *const unknown_local[] = {"local", NULL};

static bool in_words(const char *const *words, const char *w)
{
	for (; *words != NULL; words++)
		if (strcasecmp(*words, w) == 0)
			return true;
	return false;
}

static bool in_strlist(const pbs_strlist *list, const char *w)
{
	size_t i;

	for (i = 0; i < list->count; i++)
		if (strcasecmp(list->items[i], w) == 0)
			return true;
	return false;
}

/* W is in the configured LIST, or in DEFAULTS when the list is not configured. */
static bool in_mailers(const pbs_strlist *list, const char *const *defaults, const char *w)
{
	return list->count > 0 ? in_strlist(list, w) : in_words(defaults, w);
}

/* Characters of a local part that mean nothing to routing in any MTA: RFC 5321 atext
 * without '%' and '!' (sender routes), '/' and '^' (Sendmail operators), '|' and '`'. */
static bool plain_local_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("#$&'*+-=?_{}~", c) != NULL);
}

/* True when S[0..LEN) is dot-separated non-empty runs of characters OK accepts: no leading,
 * trailing or doubled dot. */
static bool dotted_run(const char *s, size_t len, bool (*ok)(unsigned char))
{
	size_t i;

	if (len == 0 || s[0] == '.' || s[len - 1] == '.')
		return false;
	for (i = 0; i < len; i++) {
		if (s[i] == '.' ? s[i + 1] == '.' : !ok((unsigned char)s[i]))
			return false;
	}
	return true;
}

static bool plain_domain_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-';
}

bool pbs_policy_plain_domain(const char *domain)
{
	return domain != NULL && dotted_run(domain, strlen(domain), plain_domain_char);
}

/* The domain of ADDR ("local@domain", or within angle brackets) when the address means the
 * same to every MTA: one '@', a local part of plain characters, a host name with no
 * trailing dot. NULL for anything an MTA could read as a route elsewhere ('%', '!', quotes,
 * a second '@', source routes, address literals) or that is not a single address. */
static const char *plain_address_domain(const char *addr)
{
	size_t len;
	const char *at;

	if (addr == NULL)
		return NULL;
	len = strlen(addr);
	if (len > 1 && addr[0] == '<') {
		if (addr[len - 1] != '>')
			return NULL;
		addr++;
		len -= 2;
	}
	at = memchr(addr, '@', len);
	if (at == NULL || len > 320 ||
	    !dotted_run(addr, (size_t)(at - addr), plain_local_char) ||
	    !dotted_run(at + 1, len - (size_t)(at - addr) - 1, plain_domain_char))
		return NULL;
	return at + 1;
}

/* The length of a domain returned by plain_address_domain(). */
static size_t domain_length(const char *domain)
{
	return strcspn(domain, ">");
}

/* True when the domain list may call this recipient local: the MTA resolved it (RESOLVED,
 * its {rcpt_addr}) to a plain address in a domain of the list, and the client asked for
 * (RCPT) a plain address in that same domain. Anything an MTA could parse differently from
 * us fails the test, and then the mailer decides. */
static bool in_local_domains(const char *rcpt, const char *resolved, const pbs_strlist *domains)
{
	const char *asked = plain_address_domain(rcpt), *routed = plain_address_domain(resolved);
	size_t len, i;

	if (asked == NULL || routed == NULL || (len = domain_length(routed)) != domain_length(asked) ||
	    strncasecmp(asked, routed, len) != 0)
		return false;
	for (i = 0; i < domains->count; i++)
		if (strlen(domains->items[i]) == len && strncasecmp(domains->items[i], routed, len) == 0)
			return true;
	return false;
}

bool pbs_policy_is_relay(enum pbs_mta mta, const char *mailer, const char *rcpt,
			 const char *resolved, const struct pbs_milter_config *cfg)
{
	const char *const *relay = unknown_relay, *const *local = unknown_local;
	bool leaves;

	if (mta == PBS_MTA_POSTFIX) {
		relay = postfix_relay;
		local = postfix_local;
	} else if (mta == PBS_MTA_SENDMAIL) {
		relay = sendmail_relay;
		local = sendmail_local;
	}
	if (mailer == NULL || mailer[0] == '\0' || in_mailers(&cfg->relay_mailers, relay, mailer))
		leaves = true;
	else /* A mailer in neither list counts as relay: doubt fails closed. */
		leaves = !in_mailers(&cfg->local_mailers, local, mailer);
	/* The domain list only turns the MTA's "out" into "ours" (Sendmail routes backup-MX
	 * domains through its relay mailer), never the other way round. */
	return leaves && !in_local_domains(rcpt, resolved, &cfg->local_domains);
}

/* The address inside angle brackets, or ADDR itself, as *LEN bytes from the returned start:
 * what plain_address_domain() accepted. */
static const char *bare_address(const char *addr, size_t *len)
{
	*len = strlen(addr);
	if (*len > 1 && addr[0] == '<') {
		*len -= 2;
		return addr + 1;
	}
	return addr;
}

void pbs_policy_sender_owner(enum pbs_sender_rule rule, const char *sender,
			     char owner[PBS_SENDER_MAX])
{
	const char *domain, *from;
	size_t len, i;

	owner[0] = '\0';
	if (rule == PBS_SENDER_ANY || sender == NULL ||
	    (domain = plain_address_domain(sender)) == NULL)
		return;
	if (rule == PBS_SENDER_DOMAIN) {
		from = domain;
		len = domain_length(domain);
	} else {
		from = bare_address(sender, &len);
	}
	/* plain_address_domain() took at most 320 bytes. */
	for (i = 0; i < len; i++)
		owner[i] = (char)tolower((unsigned char)from[i]);
	owner[len] = '\0';
}

const char *pbs_policy_sender_problem(enum pbs_sender_rule rule, const char *user)
{
	if (rule == PBS_SENDER_ANY || plain_address_domain(user) != NULL)
		return NULL;
	return rule == PBS_SENDER_ADDRESS
		       ? "lease.sender = address needs user names that are plain addresses"
		       : "lease.sender = domain needs user names that are plain addresses";
}

/* lease.sender: MAIL FROM agrees with the lease's user. Both must be plain addresses (the
 * recipient checks' rules: no '%', quotes, routes, literals), so that no MTA reads either
 * one as another address; anything else, the null sender "<>" included, fails closed.
 * Compared without regard to ASCII case, as user names and addresses are in practice. */
static bool sender_allowed(const struct pbs_policy_facts *f)
{
	const char *sender_domain, *user_domain, *sender;
	size_t sender_len, len;

	if (f->sender_rule == PBS_SENDER_ANY)
		return true;
	if (f->sender == NULL || f->lease_user == NULL ||
	    (sender_domain = plain_address_domain(f->sender)) == NULL ||
	    (user_domain = plain_address_domain(f->lease_user)) == NULL)
		return false;
	len = domain_length(sender_domain);
	if (f->sender_rule == PBS_SENDER_DOMAIN)
		return strlen(user_domain) == len && strncasecmp(sender_domain, user_domain, len) == 0;
	sender = bare_address(f->sender, &sender_len);
	return strlen(f->lease_user) == sender_len &&
	       strncasecmp(sender, f->lease_user, sender_len) == 0;
}
